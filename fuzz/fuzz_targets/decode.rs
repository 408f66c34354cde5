//! The record decoder: any bytes the ring buffer (or a recording) hands over, as an
//! event record or (at its size) a connection's book.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(ev) = tcp_trace::decode::decode(data) {
        // Formatting must not panic either (comm escapes, addresses, states).
        let _ = format!("{ev:?}");
    }
    let mut book = [0u8; tcp_trace_common::CONN_RECORD_SIZE];
    let n = data.len().min(book.len());
    book[..n].copy_from_slice(&data[..n]);
    let _ = tcp_trace::decode::ring_record(&book, |raw| {
        if let Ok(ev) = tcp_trace::decode::decode_raw(&raw) {
            let _ = format!("{ev:?}");
        }
    });
});
