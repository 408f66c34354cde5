//! The tracefs `format` parser and the layout checks run on what it returns.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tcp_trace::layout::{self, Tracepoint, format::Format};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(f) = Format::parse(text) else {
        return;
    };
    for tp in Tracepoint::ALL {
        let _ = layout::tp_layout(tp, &f);
    }
});
