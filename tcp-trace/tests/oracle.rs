//! Privileged: tcp-trace and bpftrace (an independent tracer) watch the same traffic
//! and must report the same transitions, on every attach path.
mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// (skaddr, old, new, sport, dport) as bpftrace prints them.
type Row = (String, String, String, u64, u64);

const STATES: [&str; 13] = [
    "?",
    "ESTABLISHED",
    "SYN_SENT",
    "SYN_RECV",
    "FIN_WAIT1",
    "FIN_WAIT2",
    "TIME_WAIT",
    "CLOSE",
    "CLOSE_WAIT",
    "LAST_ACK",
    "LISTEN",
    "CLOSING",
    "NEW_SYN_RECV",
];

/// Runs `traffic` under bpftrace and returns the transitions it printed, waiting (up
/// to 10 s) for `expect` rows: bpftrace's perf-buffer output can lag under load.
fn bpftrace_rows(port: u16, expect: usize, traffic: impl FnOnce()) -> Vec<Row> {
    let script = format!(
        "BEGIN {{ printf(\"READY\\n\"); }} tracepoint:sock:inet_sock_set_state /args->protocol == 6 && (args->sport == {port} || args->dport == {port})/ \
         {{ printf(\"T %llx %d %d %d %d\\n\", args->skaddr, args->oldstate, args->newstate, args->sport, args->dport); }}"
    );
    let mut bt = Command::new("bpftrace")
        // Unbuffered: the lines must arrive while it runs, not at exit.
        .args(["-B", "none", "-e", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("bpftrace (installed by cargo xtask setup)");
    let out = BufReader::new(bt.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for l in out.lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let l = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("bpftrace did not attach");
        // BEGIN runs once every probe is attached ("Attaching …" comes before).
        if l.contains("READY") {
            break;
        }
    }
    traffic();
    let mut rows = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while rows.len() < expect {
        let Ok(l) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) else {
            break;
        };
        assert!(!l.contains("Lost"), "bpftrace lost events: {l}");
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() == 6 && f[0] == "T" {
            let st = |s: &str| STATES.get(s.parse::<usize>().unwrap()).unwrap().to_string();
            rows.push((
                format!("0x{}", f[1]),
                st(f[2]),
                st(f[3]),
                f[4].parse().unwrap(),
                f[5].parse().unwrap(),
            ));
        }
    }
    // bpftrace can miss a SIGINT (seen on a loaded host: it went on waiting for events
    // until a later connection on the port woke it, minutes later): sent again every
    // second until it has exited.
    loop {
        unsafe { libc::kill(bt.id() as i32, libc::SIGINT) };
        let exited = (0..50).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            bt.try_wait().expect("wait for bpftrace").is_some()
        });
        if exited {
            break;
        }
        eprintln!("bpftrace still runs 1 s after SIGINT: sending it again");
    }
    let _ = bt.wait();
    rows
}

#[test]
fn same_transitions_as_bpftrace() {
    if !require_root("same_transitions_as_bpftrace") {
        return;
    }
    for attach in ["tracepoint", "btf", "raw"] {
        let port = free_port();
        let args = ["--json", "--view", "events", "--attach", attach];
        let (lines, expected) = traced(port, &args, |_| {
            bpftrace_rows(port, 2 + 3 * 10, || {
                server_and_client(
                    None,
                    "127.0.0.1",
                    port,
                    &["--accepts", "3", "--close-delay-ms", "5"],
                    &["--count", "3"],
                );
            })
        });
        let got: Vec<Row> = events(&lines)
            .iter()
            .filter(|e| e["kind"] == "transition")
            .map(|e| {
                (
                    s(e, "skaddr").to_string(),
                    s(e, "old").to_string(),
                    s(e, "new").to_string(),
                    e["sport"].as_u64().unwrap(),
                    e["dport"].as_u64().unwrap(),
                )
            })
            .collect();
        // 3 connections: listener 2, and per connection client 5 + child 5.
        assert_eq!(
            expected.len(),
            2 + 3 * 10,
            "bpftrace saw {expected:#?}\ntcp-trace saw {got:#?}"
        );
        let mut a = expected.clone();
        let mut b = got.clone();
        a.sort();
        b.sort();
        assert_eq!(a, b, "{attach}: tcp-trace and bpftrace disagree");
    }
}
