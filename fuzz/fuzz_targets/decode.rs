//! The record decoder: any bytes the ring buffer (or a recording) hands over.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(ev) = tcp_trace::decode::decode(data) {
        // Formatting must not panic either (comm escapes, addresses, states).
        let _ = format!("{ev:?}");
    }
});
