//! Metric names, labels and the HTTP responder (no privilege needed).
use std::cell::Cell;
use std::net::{IpAddr, Ipv4Addr};

use super::http::{CONTENT_TYPE, respond};
use super::*;
use crate::correlate::{Connection, Outcome, Role};
use crate::decode::{Comm, Family};

fn conn(role: Role, outcome: Outcome) -> Connection {
    let mut c = Connection::new(1, role, 0xffff_8881_0000_0000, Family::Inet, 1_000);
    c.outcome = outcome;
    c.saddr = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
    c.daddr = Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)));
    c.comm = Some(Comm::from_str_lossy("curl"));
    match role {
        Role::Client => {
            c.sport = 40000;
            c.dport = 8080;
        }
        _ => {
            c.sport = 8080;
            c.dport = 40000;
        }
    }
    c
}

fn line_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
}

#[test]
fn names_types_units_and_default_labels() {
    let mut m = Metrics::new(ExtraLabels::default());
    let mut ok = conn(Role::Client, Outcome::Closed);
    ok.handshake_ns = Some(80_000);
    ok.connect_latency_ns = Some(120_000);
    ok.time_wait = true;
    m.connection(&ok);
    m.connection(&ok);
    let mut refused = conn(Role::Client, Outcome::Refused);
    refused.syn_retransmits = 2;
    refused.resets_received = 1;
    m.connection(&refused);
    let mut srv = conn(Role::Server, Outcome::Reset);
    srv.handshake_ns = Some(10_000);
    srv.accept_wait_ns = Some(3_000_000);
    srv.synack_retransmits = 1;
    srv.retransmits = 3;
    srv.resets_sent = 1;
    srv.container_id = Some("0123456789ab".into());
    m.connection(&srv);
    let mut unknown = conn(Role::Unknown, Outcome::Open);
    unknown.sport = 5555;
    m.connection(&unknown);
    let t = m.encode();

    for (name, ty) in [
        ("tcp_trace_connections", "counter"),
        ("tcp_trace_handshake_duration_seconds", "histogram"),
        ("tcp_trace_connect_duration_seconds", "histogram"),
        ("tcp_trace_accept_queue_wait_seconds", "histogram"),
        ("tcp_trace_retransmits", "counter"),
        ("tcp_trace_resets", "counter"),
        ("tcp_trace_time_wait_entries", "counter"),
        ("tcp_trace_lost_events", "counter"),
        ("tcp_trace_skipped_hook_runs", "counter"),
        ("tcp_trace_unplaced_events", "counter"),
    ] {
        assert!(t.contains(&format!("# TYPE {name} {ty}\n")), "{name}:\n{t}");
        assert!(t.contains(&format!("# HELP {name} ")), "{name}");
    }
    assert!(t.contains("# UNIT tcp_trace_handshake_duration_seconds seconds\n"));
    assert!(t.ends_with("# EOF\n"));

    let v = |s: &str| line_value(&t, s).unwrap_or_else(|| panic!("no {s} in\n{t}"));
    assert_eq!(
        v(
            r#"tcp_trace_connections_total{role="client",outcome="closed",port="8080",container_id=""}"#
        ),
        2.0
    );
    assert_eq!(
        v(
            r#"tcp_trace_connections_total{role="client",outcome="refused",port="8080",container_id=""}"#
        ),
        1.0
    );
    assert_eq!(
        v(
            r#"tcp_trace_connections_total{role="server",outcome="reset",port="8080",container_id="0123456789ab"}"#
        ),
        1.0
    );
    // Unknown role: no listening port known.
    assert_eq!(
        v(r#"tcp_trace_connections_total{role="unknown",outcome="open",port="",container_id=""}"#),
        1.0
    );
    assert_eq!(
        v(r#"tcp_trace_retransmits_total{role="client",kind="syn",port="8080",container_id=""}"#),
        2.0
    );
    assert_eq!(
        v(
            r#"tcp_trace_retransmits_total{role="server",kind="synack",port="8080",container_id="0123456789ab"}"#
        ),
        1.0
    );
    assert_eq!(
        v(
            r#"tcp_trace_retransmits_total{role="server",kind="data",port="8080",container_id="0123456789ab"}"#
        ),
        3.0
    );
    assert_eq!(
        v(
            r#"tcp_trace_resets_total{role="client",direction="received",port="8080",container_id=""}"#
        ),
        1.0
    );
    assert_eq!(
        v(
            r#"tcp_trace_resets_total{role="server",direction="sent",port="8080",container_id="0123456789ab"}"#
        ),
        1.0
    );
    assert_eq!(
        v(r#"tcp_trace_time_wait_entries_total{role="client",port="8080",container_id=""}"#),
        2.0
    );
    // Histograms in seconds: count, sum, and the 50 µs × 2^k buckets.
    let hs = r#"{role="client",port="8080",container_id=""}"#;
    assert_eq!(
        v(&format!("tcp_trace_handshake_duration_seconds_count{hs}")),
        2.0
    );
    assert!((v(&format!("tcp_trace_handshake_duration_seconds_sum{hs}")) - 160e-6).abs() < 1e-12);
    assert_eq!(
        v(
            r#"tcp_trace_handshake_duration_seconds_bucket{le="0.00005",role="client",port="8080",container_id=""}"#
        ),
        0.0
    );
    assert_eq!(
        v(
            r#"tcp_trace_handshake_duration_seconds_bucket{le="0.0001",role="client",port="8080",container_id=""}"#
        ),
        2.0
    );
    assert_eq!(
        v(&format!("tcp_trace_connect_duration_seconds_count{hs}")),
        2.0
    );
    assert_eq!(
        v(
            r#"tcp_trace_accept_queue_wait_seconds_sum{role="server",port="8080",container_id="0123456789ab"}"#
        ),
        0.003
    );
    let buckets = t
        .lines()
        .filter(|l| {
            l.starts_with("tcp_trace_connect_duration_seconds_bucket{")
                && l.contains(hs[1..].trim_end_matches('}'))
        })
        .count();
    assert_eq!(
        buckets,
        BUCKET_COUNT as usize + 1,
        "20 bounds and +Inf:\n{t}"
    );
    assert!(
        t.contains(r#"le="26.2144""#),
        "last finite bound 50 µs × 2^19:\n{t}"
    );
    // No remote address, no comm by default.
    assert!(!t.contains("remote=") && !t.contains("comm="), "{t}");
    // Nothing for what did not happen.
    assert!(!t.contains(r#"kind="syn",port="8080",container_id="0123456789ab""#));
}

#[test]
fn extra_labels_on_request() {
    let mut m = Metrics::new(ExtraLabels::from_cli(&[
        crate::cli::MetricsLabel::Remote,
        crate::cli::MetricsLabel::Comm,
    ]));
    let mut c = conn(Role::Client, Outcome::Closed);
    c.comm = Some(Comm::from_str_lossy("we\"ird"));
    m.connection(&c);
    let mut c2 = conn(Role::Client, Outcome::Closed);
    c2.daddr = None;
    c2.comm = None;
    m.connection(&c2);
    let t = m.encode();
    assert!(
        t.contains(r#"tcp_trace_connections_total{role="client",outcome="closed",port="8080",container_id="",remote="10.0.0.2",comm="we\"ird"} 1"#),
        "{t}"
    );
    assert!(
        t.contains(r#"tcp_trace_connections_total{role="client",outcome="closed",port="8080",container_id="",remote="",comm=""} 1"#),
        "{t}"
    );
}

#[test]
fn run_counters_are_deltas() {
    let mut m = Metrics::new(ExtraLabels::default());
    m.lost(3);
    m.lost(2);
    m.skipped(7);
    m.unplaced(Unplaced {
        orphan_events: 4,
        ..Unplaced::default()
    });
    m.unplaced(Unplaced {
        orphan_events: 6,
        late_events: 1,
        ..Unplaced::default()
    });
    // The same totals again add nothing.
    m.unplaced(Unplaced {
        orphan_events: 6,
        late_events: 1,
        ..Unplaced::default()
    });
    let t = m.encode();
    assert!(t.contains("\ntcp_trace_lost_events_total 5\n"), "{t}");
    assert!(t.contains("\ntcp_trace_skipped_hook_runs_total 7\n"), "{t}");
    assert!(
        t.contains("tcp_trace_unplaced_events_total{reason=\"orphan\"} 6\n"),
        "{t}"
    );
    assert!(
        t.contains("tcp_trace_unplaced_events_total{reason=\"late\"} 1\n"),
        "{t}"
    );
    assert!(
        t.contains("tcp_trace_unplaced_events_total{reason=\"superseded\"} 0\n"),
        "{t}"
    );
    assert!(
        t.contains("tcp_trace_unplaced_events_total{reason=\"untracked_request\"} 0\n"),
        "{t}"
    );
}

fn split(resp: &[u8]) -> (String, String) {
    let s = String::from_utf8(resp.to_vec()).unwrap();
    let (h, b) = s.split_once("\r\n\r\n").expect("head and body");
    (h.to_string(), b.to_string())
}

#[test]
fn responder_status_codes() {
    let m = Metrics::new(ExtraLabels::default());
    m.lost(1);
    let r = m.registry();
    let (h, b) = split(&respond(
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n",
        &r,
    ));
    assert!(h.starts_with("HTTP/1.1 200 OK\r\n"), "{h}");
    assert!(
        h.contains(&format!("\r\nContent-Type: {CONTENT_TYPE}")),
        "{h}"
    );
    assert!(
        h.contains(&format!("\r\nContent-Length: {}", b.len())),
        "{h}"
    );
    assert!(b.contains("tcp_trace_lost_events_total 1\n") && b.ends_with("# EOF\n"));
    // A query string is ignored; HTTP/1.0 is fine.
    let (h, _) = split(&respond(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n", &r));
    assert!(h.starts_with("HTTP/1.1 200 OK"), "{h}");
    // HEAD: the headers of the GET, no body.
    let (h, b) = split(&respond(b"HEAD /metrics HTTP/1.1\r\n\r\n", &r));
    assert!(h.starts_with("HTTP/1.1 200 OK") && h.contains("Content-Length: ") && b.is_empty());
    let (h, _) = split(&respond(b"GET / HTTP/1.1\r\n\r\n", &r));
    assert!(h.starts_with("HTTP/1.1 404 Not Found"), "{h}");
    let (h, _) = split(&respond(b"GET /metricsx HTTP/1.1\r\n\r\n", &r));
    assert!(h.starts_with("HTTP/1.1 404 "), "{h}");
    for m in ["POST", "PUT", "DELETE", "OPTIONS"] {
        let (h, _) = split(&respond(
            format!("{m} /metrics HTTP/1.1\r\n\r\n").as_bytes(),
            &r,
        ));
        assert!(h.starts_with("HTTP/1.1 405 Method Not Allowed"), "{m}: {h}");
        assert!(h.contains("\r\nAllow: GET, HEAD"), "{h}");
    }
    for bad in [
        &b"garbage\r\n\r\n"[..],
        b"GET /metrics\r\n\r\n",
        b"GET metrics HTTP/1.1\r\n\r\n",
        b"GET /metrics SPDY/3\r\n\r\n",
        b"\xff\xfe /metrics HTTP/1.1\r\n\r\n",
    ] {
        let (h, _) = split(&respond(bad, &r));
        assert!(h.starts_with("HTTP/1.1 400 Bad Request"), "{bad:?}: {h}");
    }
}

/// The responder on a real socket of a tokio runtime like the tracer's.
#[test]
fn serves_over_tcp_and_reports_bind_errors() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let m = Metrics::new(ExtraLabels::default());
        m.skipped(2);
        let l = http::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = l.local_addr().unwrap();
        // The same address again: a clear error naming the flag.
        let e = http::bind(addr).await.unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("--metrics {addr}: cannot listen: ")),
            "{e}"
        );
        http::spawn(l, m.registry());
        let get = |req: &'static str| async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(req.as_bytes()).await.unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        // A head that arrives in pieces.
        let r = {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET /metr").await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            s.write_all(b"ics HTTP/1.1\r\nHost: a\r\n\r\n")
                .await
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.contains("tcp_trace_skipped_hook_runs_total 2\n"), "{r}");
        assert!(
            get("GET /nope HTTP/1.1\r\n\r\n")
                .await
                .starts_with("HTTP/1.1 404")
        );
        assert!(
            get("POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
                .await
                .starts_with("HTTP/1.1 405")
        );
        // A head that never ends is cut off.
        let long = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n", "a".repeat(20_000));
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let _ = s.write_all(long.as_bytes()).await;
        let mut out = String::new();
        let _ = s.read_to_string(&mut out).await;
        assert!(out.starts_with("HTTP/1.1 431 "), "{out}");
    });
}

#[test]
fn cli_flags() {
    use crate::cli::{Cli, MetricsLabel, View};
    use clap::Parser;
    let p = |a: &[&str]| Cli::try_parse_from(std::iter::once("tcp-trace").chain(a.iter().copied()));
    let c = p(&["--metrics", "127.0.0.1:9464", "--view", "none"]).unwrap();
    assert_eq!(c.trace.metrics, Some("127.0.0.1:9464".parse().unwrap()));
    assert_eq!(c.trace.output.view, Some(View::None));
    assert!(c.trace.metrics_labels.is_empty());
    let c = p(&["--metrics", "[::1]:9464", "--metrics-labels", "remote,comm"]).unwrap();
    assert_eq!(
        c.trace.metrics_labels,
        vec![MetricsLabel::Remote, MetricsLabel::Comm]
    );
    for bad in [
        &["--metrics", "9464"][..],
        &["--metrics", "localhost:9464"],
        &["--metrics-labels", "remote"],
        &["--metrics", "127.0.0.1:9464", "--metrics-labels", "pid"],
    ] {
        assert_eq!(p(bad).unwrap_err().exit_code(), 2, "{bad:?}");
    }
}

// ---- allocations on the hot path ----

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; only counts.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: std::alloc::Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|a| a.set(a.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { std::alloc::System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: std::alloc::Layout) {
        // SAFETY: same contract as ours.
        unsafe { std::alloc::System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: std::alloc::Layout, n: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|a| a.set(a.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { std::alloc::System.realloc(p, l, n) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

fn allocs() -> u64 {
    ALLOCS.with(Cell::get)
}

/// Once a label set has been seen, a finished connection costs no allocation (all
/// labels on, a container id, every histogram and counter touched).
#[test]
fn connection_update_does_not_allocate_once_labels_are_known() {
    let mut m = Metrics::new(ExtraLabels {
        remote: true,
        comm: true,
    });
    let mut c = conn(Role::Server, Outcome::Reset);
    c.container_id = Some("0123456789ab".into());
    c.handshake_ns = Some(10_000);
    c.accept_wait_ns = Some(20_000);
    c.synack_retransmits = 1;
    c.retransmits = 1;
    c.resets_sent = 1;
    c.resets_received = 1;
    c.time_wait = true;
    let mut cl = conn(Role::Client, Outcome::Refused);
    cl.connect_latency_ns = Some(5_000);
    cl.syn_retransmits = 1;
    m.connection(&c);
    m.connection(&cl);
    let before = allocs();
    for _ in 0..1000 {
        m.connection(&c);
        m.connection(&cl);
    }
    assert_eq!(
        allocs() - before,
        0,
        "allocations for 2000 known connections"
    );
    // A new label set allocates (the family's key), once.
    let mut other = cl.clone();
    other.dport = 9999;
    let before = allocs();
    m.connection(&other);
    assert!(allocs() > before);
}

// ---- the renderer's feed (a real recording, no privilege) ----

/// A writer whose bytes the test can read after the renderer is done with it.
#[derive(Clone, Default)]
struct Shared(std::rc::Rc<std::cell::RefCell<Vec<u8>>>);

impl std::io::Write for Shared {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Replays a recording of one loopback connection (client, server, listener) into a
/// renderer with `--view none` (± `--json`) and metrics; returns (stdout, metrics text).
fn replay_view_none(json: bool, lost: u64) -> (String, String) {
    use crate::pipeline::{Output, Renderer, RunStats};
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/recordings/loopback-v4-6.18.ttr"
    );
    let mut reader =
        crate::record::Reader::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()))
            .unwrap();
    let args = crate::cli::OutputArgs {
        view: Some(crate::cli::View::None),
        json,
        timestamp: false,
        max_sockets: 65536,
    };
    let buf = Shared::default();
    let m = Metrics::new(ExtraLabels::default());
    let registry = m.registry();
    let r = Renderer::new(
        buf.clone(),
        &args,
        crate::clock::WallClock::with_offset(0),
        None,
        false,
    )
    .with_metrics(m);
    let mut out = Output::Render(Box::new(r));
    let mut stats = RunStats::default();
    while let Some(item) = reader.next_item().unwrap() {
        if let crate::record::Item::Event(raw) = item {
            out.raw(&raw, &mut stats).unwrap();
        }
    }
    if lost > 0 {
        out.lost(lost, lost).unwrap();
    }
    out.finish(&stats).unwrap();
    let stdout = String::from_utf8(buf.0.borrow().clone()).unwrap();
    (stdout, encode(&registry))
}

#[test]
fn view_none_prints_nothing_per_connection_and_feeds_the_metrics() {
    let (stdout, t) = replay_view_none(false, 0);
    assert_eq!(stdout, "", "--view none: nothing on stdout");
    for role in ["client", "server", "listener"] {
        assert!(
            t.contains(&format!(
                "tcp_trace_connections_total{{role=\"{role}\",outcome=\"closed\",port=\"8123\",container_id=\"\"}} 1\n"
            )),
            "{role}:\n{t}"
        );
    }
    assert!(t.contains("tcp_trace_handshake_duration_seconds_count{role=\"client\",port=\"8123\",container_id=\"\"} 1\n"), "{t}");
    assert!(t.contains("tcp_trace_accept_queue_wait_seconds_count{role=\"server\",port=\"8123\",container_id=\"\"} 1\n"), "{t}");
    assert!(
        t.contains(
            "tcp_trace_time_wait_entries_total{role=\"client\",port=\"8123\",container_id=\"\"} 1\n"
        ),
        "{t}"
    );

    // With --json: the run-level lines only (and a loss report reaches the metrics).
    let (stdout, t) = replay_view_none(true, 4);
    let types: Vec<String> = stdout
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["type"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(types, ["lost", "summary", "stats"], "{stdout}");
    assert!(stdout.contains("\"connections\":3"), "{stdout}");
    assert!(t.contains("\ntcp_trace_lost_events_total 4\n"), "{t}");
}

/// Rough cost of one finished connection's update (all families touched, labels
/// known): `cargo test --release -p tcp-trace --lib metrics::tests::update_cost -- --ignored --nocapture`.
#[test]
#[ignore = "a timing, not a check"]
fn update_cost() {
    let mut m = Metrics::new(ExtraLabels::default());
    let mut c = conn(Role::Server, Outcome::Closed);
    c.handshake_ns = Some(10_000);
    c.accept_wait_ns = Some(20_000);
    c.time_wait = true;
    c.container_id = Some("0123456789ab".into());
    m.connection(&c);
    let n = 1_000_000;
    let t = std::time::Instant::now();
    for _ in 0..n {
        m.connection(std::hint::black_box(&c));
    }
    let per = t.elapsed().as_nanos() as f64 / n as f64;
    eprintln!("metrics update: {per:.0} ns per finished connection");
}
