//! placeholder
use crate::correlate::Conversation;
pub fn render(_convs: &[Conversation], _dropped: u64) -> String {
    String::new()
}
