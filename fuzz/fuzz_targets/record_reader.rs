//! The recording reader (`tcp-trace replay FILE`): a header, JSON metadata, records.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tcp_trace::record::{Item, Reader};

fuzz_target!(|data: &[u8]| {
    let Ok(mut r) = Reader::new(data) else {
        return;
    };
    // Bounded: every record consumes at least RAW_EVENT_SIZE_V1 bytes, so this ends.
    while let Ok(Some(item)) = r.next_item() {
        if let Item::Event(raw) = item {
            let _ = tcp_trace::decode::decode_raw(&raw);
        }
    }
});
