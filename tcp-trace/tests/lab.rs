//! `tcp-trace lab`: every scenario, IPv4 and IPv6, through the binary; every claim
//! line it prints must hold. Privileged: real namespaces, nftables and eBPF.
mod common;

use std::process::Command;

use common::{TRACER, require_root, send_reset_without_socket};

use serde_json::Value;

/// What `tcp-trace lab SCENARIO --json [-6]` printed: the JSON lines, stdout, stderr
/// and the exit code.
struct Run {
    lines: Vec<Value>,
    stdout: String,
    stderr: String,
    code: Option<i32>,
}

fn run_lab(scenario: &str, ipv6: bool) -> Run {
    let mut cmd = Command::new(TRACER);
    cmd.args(["lab", scenario, "--json"]);
    if ipv6 {
        cmd.arg("-6");
    }
    let out = cmd.output().expect("run tcp-trace lab");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<Value> = stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect();
    Run {
        lines,
        stdout: stdout.into_owned(),
        stderr: stderr.into_owned(),
        code: out.status.code(),
    }
}

/// Runs `tcp-trace lab SCENARIO --json [-6]`, asserts exit 0, every expected claim
/// present and every claim line holding. A run in which a claim did not hold is run
/// once more, loudly: the scenarios time real traffic, and a loaded machine or a
/// QEMU guest under TCG (tens of times slower) has missed their windows once in a
/// while (reorder-dup on 6.1, syn-retries on a busy host); the second run must pass
/// whole, and the first one's failure is printed.
fn lab(scenario: &str, ipv6: bool, claims: &[&str]) {
    let mut run = run_lab(scenario, ipv6);
    if let Some(c) = run
        .lines
        .iter()
        .find(|l| l["type"] == "claim" && l["holds"] != true)
    {
        eprintln!(
            "RETRY {scenario} (ipv6={ipv6}): claim {} did not hold on the first run: {}\n{c:#}",
            c["id"], c["text"]
        );
        run = run_lab(scenario, ipv6);
    }
    let Run {
        lines,
        stdout,
        stderr,
        code,
    } = run;
    let claim_lines: Vec<&Value> = lines.iter().filter(|l| l["type"] == "claim").collect();
    for c in &claim_lines {
        assert_eq!(
            c["holds"], true,
            "{scenario} (ipv6={ipv6}): claim {} does not hold: {}\n{c:#}\nstderr:\n{stderr}",
            c["id"], c["text"]
        );
        assert_eq!(c["evidence"]["lost_events"], 0, "{c}");
    }
    for id in claims {
        assert!(
            claim_lines.iter().any(|c| c["id"] == *id),
            "{scenario} (ipv6={ipv6}): no verdict for {id}\nstdout:\n{stdout}\nstderr:\n{stderr}"
        );
    }
    assert!(
        lines.iter().any(|l| l["type"] == "connection"),
        "{scenario}: no connection lines"
    );
    assert_eq!(
        code,
        Some(0),
        "{scenario} (ipv6={ipv6}) exit code\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
}

macro_rules! lab_test {
    ($v4:ident, $v6:ident, $scenario:literal, [$($claim:literal),*]) => {
        #[test]
        fn $v4() {
            if require_root(stringify!($v4)) {
                lab($scenario, false, &[$($claim),*]);
            }
        }
        #[test]
        fn $v6() {
            if require_root(stringify!($v6)) {
                lab($scenario, true, &[$($claim),*]);
            }
        }
    };
}

lab_test!(
    connect_vs_accept_v4,
    connect_vs_accept_v6,
    "connect-vs-accept",
    ["C13", "C1"]
);
lab_test!(handshake_v4, handshake_v6, "handshake", ["C2", "C5"]);
lab_test!(time_wait_v4, time_wait_v6, "time-wait", ["C9", "C11"]);
lab_test!(half_close_v4, half_close_v6, "half-close", ["C10"]);
lab_test!(lost_last_ack_v4, lost_last_ack_v6, "lost-last-ack", ["C12"]);
lab_test!(
    synack_retries_v4,
    synack_retries_v6,
    "synack-retries",
    ["C3"]
);
lab_test!(syn_retries_v4, syn_retries_v6, "syn-retries", ["S1"]);

/// stale-syn: C4 rests on the client's socket-less reset. Where the kernel does not
/// trace such a reset, C4 must fail and say that no such reset was seen.
fn stale_syn(ipv6: bool) {
    // The lab run mounts tracefs if needed (the scenario attaches classic tracepoints).
    let run = run_lab("stale-syn", ipv6);
    if send_reset_without_socket() == Some(false) {
        let c4 = run
            .lines
            .iter()
            .find(|l| l["type"] == "claim" && l["id"] == "C4")
            .unwrap_or_else(|| {
                panic!(
                    "no C4 verdict\nstdout:\n{}\nstderr:\n{}",
                    run.stdout, run.stderr
                )
            });
        assert_eq!(c4["holds"], false, "{c4}");
        assert!(
            c4["text"]
                .as_str()
                .is_some_and(|t| t.contains("no reset sent with no socket")),
            "{c4}"
        );
        eprintln!(
            "KNOWN LIMIT stale-syn: this kernel does not trace a reset sent with no socket; C4 fails saying so"
        );
        return;
    }
    lab("stale-syn", ipv6, &["C4"]);
}

#[test]
fn stale_syn_v4() {
    if require_root("stale_syn_v4") {
        stale_syn(false);
    }
}

#[test]
fn stale_syn_v6() {
    if require_root("stale_syn_v6") {
        stale_syn(true);
    }
}
lab_test!(duplicate_syn_v4, duplicate_syn_v6, "duplicate-syn", ["C8"]);
lab_test!(reorder_dup_v4, reorder_dup_v6, "reorder-dup", ["C6"]);
lab_test!(isn_reuse_v4, isn_reuse_v6, "isn-reuse", ["C7", "C5"]);

#[test]
fn list_and_unknown_scenario() {
    let out = Command::new(TRACER).args(["lab", "list"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let s = String::from_utf8_lossy(&out.stdout);
    for name in [
        "connect-vs-accept",
        "handshake",
        "time-wait",
        "half-close",
        "lost-last-ack",
        "synack-retries",
        "syn-retries",
        "stale-syn",
        "duplicate-syn",
        "reorder-dup",
        "isn-reuse",
    ] {
        assert!(s.contains(name), "{s}");
    }
    let out = Command::new(TRACER)
        .args(["lab", "no-such"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("connect-vs-accept"));
}
