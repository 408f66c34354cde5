//! ANSI colour for the text views (ladder, events): plain SGR codes, used only when
//! the caller decided to colour (`--color`, a terminal, `NO_COLOR`).
//!
//! What is coloured: the handshake's SYN / SYN-ACK / ACK arrows cyan, FINs blue,
//! retransmits yellow, resets red, ESTABLISHED green, `connect()` / `accept()`
//! returns bold (bold red when they fail). Only text already escaped by the renderers
//! is wrapped; no untrusted byte reaches the terminal unescaped.

pub const RESET: &str = "\x1b[0m";
pub const BOLD: &str = "\x1b[1m";
pub const BOLD_RED: &str = "\x1b[1;31m";
pub const RED: &str = "\x1b[31m";
pub const GREEN: &str = "\x1b[32m";
pub const YELLOW: &str = "\x1b[33m";
pub const BLUE: &str = "\x1b[34m";
pub const CYAN: &str = "\x1b[36m";

/// Appends `text` to `out`, wrapped in `style` when there is one and the text is
/// not empty.
pub fn paint(out: &mut String, style: Option<&str>, text: &str) {
    match style {
        Some(s) if !text.is_empty() => {
            out.push_str(s);
            out.push_str(text);
            out.push_str(RESET);
        }
        _ => out.push_str(text),
    }
}

/// The style of an arrow with this label.
pub fn arrow_style(label: &str) -> Option<&'static str> {
    if label.contains("RST") {
        Some(RED)
    } else if label.contains("retransmit") {
        Some(YELLOW)
    } else if matches!(label, "SYN" | "SYN-ACK" | "ACK") {
        Some(CYAN)
    } else if label.starts_with("FIN") || label == "ACK of FIN" {
        Some(BLUE)
    } else {
        None
    }
}

/// The style of a state / syscall cell of the ladder, or of an event's description.
pub fn text_style(text: &str) -> Option<&'static str> {
    let syscall = text.starts_with("connect(") || text.starts_with("accept");
    if syscall {
        // `= -111 ECONNREFUSED` (ladder) or `= -ECONNREFUSED` (events).
        if text.contains("= -") && !text.contains("EINPROGRESS") {
            Some(BOLD_RED)
        } else {
            Some(BOLD)
        }
    } else if text.contains("RST") {
        Some(RED)
    } else if text.contains("retransmit") {
        Some(YELLOW)
    } else if text.ends_with("ESTABLISHED") {
        Some(GREEN)
    } else if text.ends_with("SYN_SENT") || text.ends_with("SYN_RECV") || text.contains("(child)") {
        Some(CYAN)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn styles() {
        assert_eq!(arrow_style("SYN"), Some(CYAN));
        assert_eq!(arrow_style("SYN-ACK retransmit #1"), Some(YELLOW));
        assert_eq!(arrow_style("RST"), Some(RED));
        assert_eq!(text_style("connect() = 0"), Some(BOLD));
        assert_eq!(text_style("connect() = -111 ECONNREFUSED"), Some(BOLD_RED));
        assert_eq!(text_style("CLOSE_WAIT"), None);
        let mut s = String::new();
        paint(&mut s, Some(RED), "");
        paint(&mut s, None, "x");
        paint(&mut s, Some(RED), "y");
        assert_eq!(s, "x\x1b[31my\x1b[0m");
    }
}
