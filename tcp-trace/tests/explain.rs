//! `tcp-trace explain` on real traffic (privileged: made here, in a network namespace
//! per test, with nftables dropping what each cause needs), and `replay --explain` on
//! a recording made the same way (no privilege).
//!
//! Each test asserts the cause and its numbers, never only that a line came out.
mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

fn diagnoses(lines: &[Value]) -> Vec<&Value> {
    lines.iter().filter(|l| l["type"] == "diagnosis").collect()
}

/// `server_and_client` in `ns` on 127.0.0.1:PORT under `tcp-trace explain --json -P
/// PORT` (exit 0); returns its diagnosis lines and the traffic.
fn explained(
    ns: &Netns,
    port: u16,
    server_extra: &[&str],
    client_extra: &[&str],
) -> (Vec<Value>, Exchange) {
    traced(port, &["explain", "--json"], |_| {
        server_and_client(Some(ns), "127.0.0.1", port, server_extra, client_extra)
    })
}

fn one<'a>(ds: &[&'a Value], cause: &str) -> &'a Value {
    let found: Vec<&Value> = ds.iter().copied().filter(|d| d["cause"] == cause).collect();
    assert_eq!(found.len(), 1, "one {cause} diagnosis expected: {ds:#?}");
    found[0]
}

fn ns_in(d: &Value, k: &str, lo_ms: u64, hi_ms: u64) -> u64 {
    let v = d[k].as_u64().unwrap_or_else(|| panic!("{k} missing: {d}"));
    assert!(
        (lo_ms * 1_000_000..hi_ms * 1_000_000).contains(&v),
        "{k} = {v} ns, expected {lo_ms}..{hi_ms} ms: {d}"
    );
    v
}

/// The first SYN dropped (nft quota of one packet): connect() takes about 1 s and the
/// cause is the lost SYN, with one retransmit about 1 s after the SYN.
#[test]
fn explain_lost_first_syn() {
    if !require_root("explain_lost_first_syn") {
        return;
    }
    let ns = Netns::new("xsyn");
    let port = free_port();
    ns.drop_input(port, "tcp flags & (syn|ack) == syn quota until 100 bytes");
    let (lines, x) = explained(&ns, port, &["--close-delay-ms", "0"], &[]);
    let (cport, cpid) = (x.cport, x.client_pid);
    let ds = diagnoses(&lines);
    let d = one(&ds, "lost_syn");
    assert_eq!(d["role"], "client", "{d}");
    assert_eq!(d["phase"], "connect", "{d}");
    assert_eq!(d["pid"], cpid, "{d}");
    assert_eq!(d["local"], format!("127.0.0.1:{cport}"), "{d}");
    assert_eq!(d["remote"], format!("127.0.0.1:{port}"), "{d}");
    assert_eq!(d["retransmits"], 1, "{d}");
    ns_in(d, "duration_ns", 900, 3500);
    let start = d["start_ns"].as_u64().unwrap();
    let rtx = d["retransmit_ts_ns"][0].as_u64().unwrap();
    assert!(
        (900_000_000..3_000_000_000).contains(&(rtx - start)),
        "retransmit {} ns after the SYN: {d}",
        rtx - start
    );
    let msg = d["message"].as_str().unwrap();
    assert!(
        msg.starts_with(&format!("connect to 127.0.0.1:{port} took "))
            && msg.contains(" because the first SYN was lost (1 SYN retransmit after "),
        "{msg}"
    );
    // Nothing else was slow or failed.
    assert_eq!(ds.len(), 1, "{ds:#?}");
}

/// The server drops the client's pure third ACK (and the duplicate ACK that answers
/// the retransmitted SYN-ACK: the first two pure ACKs, 52 bytes each, by quota): the
/// client's connect() returns at once, the server retransmits its SYN-ACK after 1 s
/// and its child is born when the client's data (1.5 s after the SYN) acknowledges it.
#[test]
fn explain_dropped_third_ack() {
    if !require_root("explain_dropped_third_ack") {
        return;
    }
    // The kernel must play the scenario before the tracer can be judged on it: its own
    // count of SYN-ACK retransmits in the namespace says whether it did (a CI run once
    // saw no diagnosis and one event fewer, unexplained: this tells the two cases
    // apart). A run where the kernel retransmitted nothing is played again, at most
    // three times in all, and said so; one where it did is asserted.
    let mut attempt = 0;
    let (lines, x, synack_rtx) = loop {
        attempt += 1;
        let ns = Netns::new(&format!("xack{attempt}"));
        let port = free_port();
        ns.drop_input(
            port,
            "tcp flags & (fin|syn|rst|psh|ack) == ack quota until 110 bytes",
        );
        let (lines, x) = explained(
            &ns,
            port,
            &["--close-delay-ms", "0"],
            &["--delay-before-send-ms", "1500"],
        );
        let rtx = ns.tcp_ext("TCPSynRetrans");
        if rtx > 0 {
            break (lines, x, rtx);
        }
        assert!(
            attempt < 3,
            "the kernel retransmitted no SYN-ACK in {attempt} runs: the dropped third \
             ACK was never played (tracer output: {lines:#?})"
        );
        eprintln!(
            "run {attempt}: the kernel counted no SYN-ACK retransmit (TcpExt \
             TCPSynRetrans 0): the scenario did not happen, played again"
        );
    };
    let (cport, spid) = (x.cport, x.server_pid);
    let ds = diagnoses(&lines);
    let d = one(&ds, "lost_synack");
    assert_eq!(d["role"], "server", "{d}");
    assert_eq!(d["phase"], "handshake", "{d}");
    assert_eq!(d["pid"], spid, "{d}");
    assert_eq!(d["remote"], format!("127.0.0.1:{cport}"), "{d}");
    // As many as the kernel counted (the client's SYN is never retransmitted here).
    assert_eq!(d["retransmits"], synack_rtx, "{d}");
    assert_eq!(synack_rtx, 1, "{d}");
    // SYN-ACK retransmitted after 1 s, the data 1.5 s after the SYN: 0.5 s between.
    ns_in(d, "duration_ns", 200, 1200);
    // The kernel read the listener's accept queue when the child was queued: far from
    // full, so loss is named, not overflow.
    let (len, max) = (
        d["accept_queue"]["len"]
            .as_u64()
            .expect("accept queue length"),
        d["accept_queue"]["max"]
            .as_u64()
            .expect("accept queue limit"),
    );
    assert!(len >= 1 && len < max, "{d}");
    let msg = d["message"].as_str().unwrap();
    assert!(
        msg.contains("because the SYN-ACK or the client's third ACK was lost"),
        "{msg}"
    );
    // The client saw nothing slow in its handshake.
    assert!(
        !ds.iter()
            .any(|d| d["role"] == "client" && d["phase"] == "connect"),
        "{ds:#?}"
    );
}

/// accept() 600 ms after the connection came: the child waited in the accept queue.
/// The queue was not read as full (the field stays null until the kernel side fills
/// it), so the cause is a late accept, never a full queue.
#[test]
fn explain_late_accept() {
    if !require_root("explain_late_accept") {
        return;
    }
    let ns = Netns::new("xacc");
    let port = free_port();
    let (lines, x) = explained(
        &ns,
        port,
        &["--accept-delay-ms", "600", "--close-delay-ms", "0"],
        &["--send", "0"],
    );
    let (cport, spid) = (x.cport, x.server_pid);
    let ds = diagnoses(&lines);
    let d = one(&ds, "slow_accept");
    assert_eq!(d["role"], "server", "{d}");
    assert_eq!(d["phase"], "accept", "{d}");
    assert_eq!(d["pid"], spid, "{d}");
    assert_eq!(d["remote"], format!("127.0.0.1:{cport}"), "{d}");
    // The server sleeps 600 ms from its `listening` line, the connection waits from
    // the client's connect: 600 ms less the client's start, which a slow guest makes
    // long (a 6.12 guest: 440 ms, below a fixed bound of 450), less 50 ms for the
    // server's line to reach the test.
    let lo = 600u64.saturating_sub(x.client_took.as_millis() as u64 + 50);
    ns_in(d, "duration_ns", lo, 2000);
    assert!(
        !ds.iter().any(|d| d["cause"] == "accept_queue_full"),
        "{ds:#?}"
    );
    let msg = d["message"].as_str().unwrap();
    assert!(
        msg.contains(&format!(
            "in the accept queue: process {spid} (tcp-trace-peer) called accept() late"
        )),
        "{msg}"
    );
}

/// A server in `ns` on `port` that keeps the three connections its client closed: three
/// sockets in CLOSE_WAIT. Returns the server and its pid.
fn three_close_wait_sockets(ns: &Netns, port: u16) -> (Peer, u32) {
    let mut server = start_server(
        Some(ns),
        "127.0.0.1",
        port,
        &["--accepts", "3", "--never-close"],
    );
    let spid = server.pid;
    let mut client = start_client(Some(ns), "127.0.0.1", port, &["--count", "3"]);
    for _ in 0..3 {
        client.connect_ok();
    }
    client.exits_ok();
    for _ in 0..3 {
        assert!(server.line().starts_with("kept "));
    }
    (server, spid)
}

/// A server that never closes what its clients closed: three sockets in CLOSE_WAIT,
/// reported while the tracer runs once older than `--close-wait-secs 1`.
#[test]
fn explain_close_wait_leak() {
    if !require_root("explain_close_wait_leak") {
        return;
    }
    let ns = Netns::new("xcw");
    let port = free_port();
    let mut t = Tracer::on_port(port, &["explain", "--json", "--close-wait-secs", "1"]);
    let rx = t.stream_stdout();
    let (server, spid) = three_close_wait_sockets(&ns, port);
    // Reported live (before the end of the run), once all three are a second old.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let leak = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let l = rx
            .recv_timeout(left)
            .expect("a close_wait_leak line while the tracer runs");
        let v: Value = serde_json::from_str(&l).unwrap();
        if v["type"] == "diagnosis" && v["cause"] == "close_wait_leak" && v["count"] == 3 {
            break v;
        }
    };
    assert_eq!(leak["pid"], spid, "{leak}");
    assert_eq!(leak["comm"], "tcp-trace-peer", "{leak}");
    assert_eq!(leak["role"], "server", "{leak}");
    assert_eq!(leak["local"], format!("127.0.0.1:{port}"), "{leak}");
    assert_eq!(leak["remote"], "127.0.0.1", "{leak}");
    ns_in(&leak, "oldest_ns", 1000, 10_000);
    let msg = leak["message"].as_str().unwrap();
    assert!(
        msg.starts_with(&format!(
            "process {spid} (tcp-trace-peer) holds 3 CLOSE_WAIT sockets accepted on 127.0.0.1:{port} from 127.0.0.1"
        )),
        "{msg}"
    );
    drop(server);
    drop(t);
}

/// The diagnoses of `cause` a tracer (`ARGS -P PORT`) prints in its first 3 s.
fn diagnoses_for(port: u16, args: &[&str], cause: &str) -> Vec<Value> {
    let mut t = Tracer::on_port(port, args);
    let rx = t.stream_stdout();
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let mut got = Vec::new();
    while let Ok(l) = rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
    {
        let v: Value = serde_json::from_str(&l).unwrap();
        if v["cause"] == cause {
            got.push(v);
        }
    }
    drop(t);
    got
}

/// The leak began before the tracer: three sockets already in CLOSE_WAIT when it
/// starts, with no event since. They are named from the socket table and reported
/// once the trace is `--close-wait-secs` old, their age said to be a lower bound; with
/// a port filter that does not take them, nothing is reported.
#[test]
fn explain_close_wait_leak_from_before_the_start() {
    if !require_root("explain_close_wait_leak_from_before_the_start") {
        return;
    }
    let ns = Netns::new("xcwb");
    let port = free_port();
    let (server, spid) = three_close_wait_sockets(&ns, port);
    let leak_lines = |filter_port: u16| {
        diagnoses_for(
            filter_port,
            &["explain", "--json", "--close-wait-secs", "1"],
            "close_wait_leak",
        )
    };
    let got = leak_lines(port);
    assert_eq!(got.len(), 1, "{got:#?}");
    let leak = &got[0];
    assert_eq!(leak["count"], 3, "{leak}");
    assert_eq!(leak["at_start"], 3, "{leak}");
    assert_eq!(leak["pid"], spid, "{leak}");
    assert_eq!(leak["role"], "server", "{leak}");
    assert_eq!(leak["local"], format!("127.0.0.1:{port}"), "{leak}");
    ns_in(leak, "oldest_ns", 1000, 3000);
    let msg = leak["message"].as_str().unwrap();
    assert!(
        msg.contains("or more (3 of them already in CLOSE_WAIT when tcp-trace started)"),
        "{msg}"
    );
    // Another port: the kernel side would report none of their events, so their
    // state is not known to stay: not reported.
    let other = free_port();
    assert!(leak_lines(other).is_empty());
    drop(server);
}

/// 120 client TIME_WAIT sockets towards one server, made before the tracer starts:
/// `explain` counts them from the socket table (they hold their local ports for the
/// rest of their minute) and reports the pressure at once; a port filter that does
/// not take them leaves them out.
#[test]
fn explain_time_wait_pressure_from_before_the_start() {
    if !require_root("explain_time_wait_pressure_from_before_the_start") {
        return;
    }
    let ns = Netns::new("xtwb");
    let port = free_port();
    let server = start_server(
        Some(&ns),
        "127.0.0.1",
        port,
        &["--accepts", "120", "--close-delay-ms", "0"],
    );
    run_client(Some(&ns), "127.0.0.1", port, &["--count", "120"]);
    all_exit_ok([server]);
    let pressure = |filter_port: u16| {
        diagnoses_for(
            filter_port,
            &["explain", "--json", "--time-wait-min", "100"],
            "time_wait_pressure",
        )
    };
    let got = pressure(port);
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0]["count"], 120, "{}", got[0]);
    assert_eq!(got[0]["remote"], format!("127.0.0.1:{port}"), "{}", got[0]);
    assert!(pressure(free_port()).is_empty());
}

/// The server closes 600 ms after the client's FIN: the server's socket is held in
/// CLOSE_WAIT by the application, the client's (handed to a timewait socket when the
/// ACK of its FIN came) waits in FIN_WAIT2 for the server's FIN.
#[test]
fn explain_slow_close() {
    if !require_root("explain_slow_close") {
        return;
    }
    let ns = Netns::new("xclose");
    let port = free_port();
    let (lines, x) = explained(&ns, port, &["--close-delay-ms", "600"], &[]);
    let (cport, spid) = (x.cport, x.server_pid);
    let ds = diagnoses(&lines);
    let d = one(&ds, "slow_close_wait");
    assert_eq!(d["role"], "server", "{d}");
    assert_eq!(d["pid"], spid, "{d}");
    assert_eq!(d["by"], "local", "{d}");
    assert_eq!(d["remote"], format!("127.0.0.1:{cport}"), "{d}");
    ns_in(d, "duration_ns", 550, 2000);
    let d = one(&ds, "slow_fin_wait2");
    assert_eq!(d["role"], "client", "{d}");
    assert_eq!(d["by"], "remote", "{d}");
    assert_eq!(d["local"], format!("127.0.0.1:{cport}"), "{d}");
    ns_in(d, "duration_ns", 550, 2000);
    assert_eq!(ds.len(), 2, "{ds:#?}");
}

/// connect() to a port nobody listens on: refused, by the remote end's reset.
#[test]
fn explain_refused_connect() {
    if !require_root("explain_refused_connect") {
        return;
    }
    let ns = Netns::new("xref");
    let port = free_port();
    let (lines, cpid) = traced(port, &["explain", "--json"], |_| {
        run_refused_client(Some(&ns), "127.0.0.1", port, 1)
    });
    let ds = diagnoses(&lines);
    let d = one(&ds, "refused");
    assert_eq!(d["role"], "client", "{d}");
    assert_eq!(d["pid"], cpid, "{d}");
    assert_eq!(d["by"], "remote", "{d}");
    assert_eq!(d["errno"], "ECONNREFUSED", "{d}");
    assert_eq!(d["retransmits"], 0, "{d}");
    ns_in(d, "duration_ns", 0, 100);
    let msg = d["message"].as_str().unwrap();
    assert!(
        msg.starts_with(&format!("connect to 127.0.0.1:{port} was refused after "))
            && msg.ends_with("reset by the remote end (ECONNREFUSED)"),
        "{msg}"
    );
}

const RECORDING: &str = "explain-v4-6.18.ttr";

fn replay_explain(args: &[&str]) -> Vec<Value> {
    let mut all = vec!["--explain", "--json"];
    all.extend_from_slice(args);
    replay(RECORDING, &all).ok().json()
}

/// A recording (made with `tcp-trace record` on 6.18, see `docs/explain.md`) of a connect
/// whose first SYN was dropped, a late accept() and a refused connect: the same
/// causes, with their numbers, from the file and without privilege.
#[test]
fn replay_explain_names_the_causes() {
    let lines = replay_explain(&[]);
    let ds = diagnoses(&lines);
    let d = one(&ds, "lost_syn");
    assert_eq!(d["retransmits"], 1, "{d}");
    ns_in(d, "duration_ns", 900, 3500);
    // The server slept 600 ms before accept() from its start, the client came 0.3 s
    // after that start: 333 ms in the queue.
    let d = one(&ds, "slow_accept");
    ns_in(d, "duration_ns", 300, 400);
    // Its client had closed first: it waited in FIN_WAIT2 for the server's FIN.
    let d = one(&ds, "slow_fin_wait2");
    assert_eq!(d["role"], "client", "{d}");
    ns_in(d, "duration_ns", 300, 400);
    let d = one(&ds, "refused");
    assert_eq!(d["by"], "remote", "{d}");
    assert_eq!(d["errno"], "ECONNREFUSED", "{d}");
    assert!(lines.last().unwrap()["type"] == "stats");
    // A threshold above the accept wait and the lost SYN's second: only the failure.
    let lines = replay_explain(&["--slow", "5000"]);
    let causes: Vec<&str> = diagnoses(&lines)
        .iter()
        .map(|d| d["cause"].as_str().unwrap())
        .collect();
    assert_eq!(causes, ["refused"]);
}

/// A server with an accept queue of one that accepts late while four clients connect
/// at once: the kernel drops the third ACKs it has no room for and retransmits those
/// SYN-ACKs while the queue is full. Named as overflow (with the queue the kernel
/// read from the listener), not as loss.
#[test]
fn explain_full_accept_queue() {
    if !require_root("explain_full_accept_queue") {
        return;
    }
    let ns = Netns::new("xfull");
    let port = free_port();
    let (lines, _) = traced(port, &["explain", "--json"], |_| {
        let server = start_server(
            Some(&ns),
            "127.0.0.1",
            port,
            &[
                "--backlog",
                "1",
                "--accepts",
                "4",
                "--accept-delay-ms",
                "2500",
                "--close-delay-ms",
                "0",
            ],
        );
        let clients: Vec<Peer> = (0..4)
            .map(|_| start_client(Some(&ns), "127.0.0.1", port, &["--send", "1"]))
            .collect();
        all_exit_ok(clients);
        server.exits_ok();
    });
    let ds = diagnoses(&lines);
    let full: Vec<&&Value> = ds
        .iter()
        .filter(|d| d["cause"] == "accept_queue_full")
        .collect();
    assert!(!full.is_empty(), "no full accept queue named: {ds:#?}");
    for d in &full {
        assert_eq!(d["role"], "server", "{d}");
        let (len, max) = (
            d["accept_queue"]["len"].as_u64().unwrap(),
            d["accept_queue"]["max"].as_u64().unwrap(),
        );
        assert_eq!(max, 1, "{d}");
        assert!(len >= max, "{d}");
    }
}
