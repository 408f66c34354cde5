//! Userspace throughput on one core: decode + correlate (issue #5 target: at least
//! 1M events/s), plus the same with each renderer behind it, for comparison.
//!
//! Input: the real recordings in tests/fixtures/recordings, replicated to about a
//! million events the way a loopback storm produces them. Every replica of the
//! loopback-v4 connection pair (12 events: both ends' transitions, connect() and
//! accept4() returns) gets its own socket addresses and client port and starts
//! `STEP_NS` after the previous one, so about a thousand connections are open at a
//! time under one listener (the recording's, kept once); every fourth replica also
//! adds a copy of the refused-v6 connect (5 events: SYN_SENT, reset sent and received,
//! CLOSE, connect() = -ECONNREFUSED). The result is sorted by timestamp, as the ring
//! buffer delivers a mostly ordered stream.
//!
//! Run: `cargo bench -p tcp-trace --bench decode_correlate`.
use std::fs::File;
use std::hint::black_box;
use std::io::{self, BufReader};
use std::path::Path;
use std::time::Duration;

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use tcp_trace::cli::OutputArgs;
use tcp_trace::clock::WallClock;
use tcp_trace::correlate::{Config, Correlator};
use tcp_trace::decode::decode_raw;
use tcp_trace::pipeline::Renderer;
use tcp_trace::record::{Item, Reader};
use tcp_trace_common::{RawEvent, kind};

const TARGET_EVENTS: usize = 1_000_000;
/// Time between replicas: 25 000 connections/s, the untraced storm rate
/// (docs/kernel-facts.md, "A ring-buffer wakeup costs more than the event").
const STEP_NS: u64 = 40_000;
const CLIENT_PORT_BASE: u16 = 32768;
const CLIENT_PORTS: u64 = 28_000;

fn load(name: &str) -> Vec<RawEvent> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/recordings")
        .join(name);
    let file = File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut r = Reader::new(BufReader::new(file)).expect("a recording");
    let mut out = Vec::new();
    while let Some(item) = r.next_item().expect("a readable recording") {
        if let Item::Event(raw) = item {
            out.push(raw);
        }
    }
    out
}

/// The client's local port in a recording: the source port of its connect() return.
fn client_port(events: &[RawEvent]) -> u16 {
    events
        .iter()
        .find(|e| e.kind == kind::CONNECT_RETURN)
        .map(|e| e.sport)
        .expect("a connect() return")
}

/// A copy of `ev` for replica `i`: its own sockets, client port and time.
fn shift(ev: &RawEvent, i: u64, keep_sk: u64, old_port: u16, t0: u64, base: u64) -> RawEvent {
    let mut e = *ev;
    if e.skaddr != 0 && e.skaddr != keep_sk {
        // Kernel addresses differ in their low 32 bits; this keeps them unique.
        e.skaddr = e.skaddr.wrapping_add((i + 1) << 32);
    }
    if e.kind == kind::SYNACK_RETRANSMIT {
        e.aux = e.aux.wrapping_add((i + 1) << 32);
    }
    let port = CLIENT_PORT_BASE + (i % CLIENT_PORTS) as u16;
    if e.sport == old_port {
        e.sport = port;
    }
    if e.dport == old_port {
        e.dport = port;
    }
    e.ts_ns = base + i * STEP_NS + (ev.ts_ns - t0);
    e
}

fn storm_trace() -> Vec<RawEvent> {
    let lo = load("loopback-v4-6.18.ttr");
    let refused = load("refused-v6-6.18.ttr");
    // The loopback recording: a listener opens, one connection pair, the listener
    // closes. Replicate the pair, keep one listener around all of them.
    let listen = lo
        .iter()
        .position(|e| e.kind == kind::STATE && e.newstate == 10)
        .expect("CLOSE -> LISTEN");
    let listener_sk = lo[listen].skaddr;
    let unlisten = lo
        .iter()
        .rposition(|e| e.skaddr == listener_sk && e.kind == kind::STATE && e.newstate == 7)
        .expect("LISTEN -> CLOSE");
    let pair: Vec<RawEvent> = lo
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != listen && i != unlisten)
        .map(|(_, e)| *e)
        .collect();
    let pair_t0 = pair.iter().map(|e| e.ts_ns).min().unwrap_or(0);
    let pair_port = client_port(&pair);
    let ref_t0 = refused.iter().map(|e| e.ts_ns).min().unwrap_or(0);
    let ref_port = client_port(&refused);

    let base = 1_000_000_000u64;
    let mut out = Vec::with_capacity(TARGET_EVENTS + 64);
    let mut first = lo[listen];
    first.ts_ns = base - 1_000_000;
    out.push(first);
    let mut i = 0u64;
    while out.len() < TARGET_EVENTS {
        out.extend(
            pair.iter()
                .map(|e| shift(e, i, listener_sk, pair_port, pair_t0, base)),
        );
        if i.is_multiple_of(4) {
            out.extend(
                refused
                    .iter()
                    .map(|e| shift(e, i, 0, ref_port, ref_t0, base + STEP_NS / 2)),
            );
        }
        i += 1;
    }
    let mut last = lo[unlisten];
    last.ts_ns = out.iter().map(|e| e.ts_ns).max().unwrap_or(base) + 1_000_000;
    out.push(last);
    out.sort_by_key(|e| e.ts_ns);
    out
}

fn correlate_all(events: &[RawEvent]) -> (usize, Correlator) {
    let mut c = Correlator::new(Config::default());
    let mut finished = Vec::new();
    let mut n = 0;
    for raw in events {
        if let Ok(ev) = decode_raw(raw) {
            c.push(ev);
            c.drain_finished(&mut finished);
            n += finished.len();
            finished.clear();
        }
    }
    n += c.flush().len();
    (n, c)
}

fn render_all(events: &[RawEvent], json: bool) {
    let args = OutputArgs {
        view: None,
        json,
        timestamp: false,
        max_sockets: 65_536,
    };
    let mut r = Renderer::new(io::sink(), &args, WallClock::with_offset(0), None, false);
    for raw in events {
        if let Ok(ev) = decode_raw(raw) {
            r.event(&ev).expect("writing to a sink");
        }
    }
    // (finish() would print the summary on stderr at every iteration.)
    black_box(&r);
}

fn bench(c: &mut Criterion) {
    let events = storm_trace();
    let (conns, corr) = correlate_all(&events);
    let st = corr.stats();
    eprintln!(
        "decode_correlate: {} events, {} connections, {} orphan events, {} late events, {} evicted",
        events.len(),
        conns,
        st.orphan_events,
        st.late_events,
        st.evicted
    );

    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(events.len() as u64));
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(2));
    g.measurement_time(Duration::from_secs(10));
    g.bench_function("decode", |b| {
        b.iter(|| {
            let mut n = 0u64;
            for raw in &events {
                if let Ok(ev) = decode_raw(black_box(raw)) {
                    n = n.wrapping_add(ev.ts_ns);
                }
            }
            black_box(n)
        })
    });
    g.bench_function("decode+correlate", |b| {
        b.iter(|| black_box(correlate_all(black_box(&events)).0))
    });
    g.bench_function("decode+correlate+json", |b| {
        b.iter(|| render_all(black_box(&events), true))
    });
    g.bench_function("decode+correlate+ladder", |b| {
        b.iter(|| render_all(black_box(&events), false))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
