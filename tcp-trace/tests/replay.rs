//! Replay of real recordings made on this kernel (6.18): no privilege needed.
//! The correlator and the views run on exactly what the kernel emitted.
use std::process::Command;

use serde_json::Value;

const TRACER: &str = env!("CARGO_BIN_EXE_tcp-trace");

fn fixture(name: &str) -> String {
    format!(
        "{}/tests/fixtures/recordings/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn replay(name: &str, args: &[&str]) -> (String, String, i32) {
    let out = Command::new(TRACER)
        .arg("replay")
        .arg(fixture(name))
        .args(args)
        .output()
        .unwrap();
    (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
        out.status.code().unwrap_or(-1),
    )
}

fn connections(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["type"] == "connection")
        .collect()
}

fn states(c: &Value) -> Vec<String> {
    c["states"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["state"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn loopback_recording_gives_three_connections() {
    let (out, err, code) = replay("loopback-v4-6.18.ttr", &["--json", "--view", "conns"]);
    assert_eq!(code, 0, "{err}");
    let conns = connections(&out);
    assert_eq!(conns.len(), 3);
    let client = conns.iter().find(|c| c["role"] == "client").unwrap();
    let server = conns.iter().find(|c| c["role"] == "server").unwrap();
    let listener = conns.iter().find(|c| c["role"] == "listener").unwrap();
    assert_eq!(
        states(client),
        [
            "CLOSE",
            "SYN_SENT",
            "ESTABLISHED",
            "FIN_WAIT1",
            "FIN_WAIT2",
            "CLOSE"
        ]
    );
    assert_eq!(
        states(server),
        [
            "LISTEN",
            "SYN_RECV",
            "ESTABLISHED",
            "CLOSE_WAIT",
            "LAST_ACK",
            "CLOSE"
        ]
    );
    assert_eq!(states(listener), ["CLOSE", "LISTEN", "CLOSE"]);
    assert_eq!(client["connect"]["ret"], 0);
    assert!(client["connect_after_established_ns"].as_i64().unwrap() > 0);
    assert!(server["accept"]["ret"].as_i64().unwrap() >= 0);
    assert!(server["accept_wait_ns"].as_i64().unwrap() > 0);
    assert_eq!(client["time_wait"], true);
    assert_eq!(client["active_close"], true);
    assert_eq!(server["time_wait"], false);
    assert!(
        server["close_wait_ns"].as_u64().unwrap() > 30_000_000,
        "server closed 40 ms after the FIN"
    );
    assert_eq!(client["peer"], server["id"]);
    assert_eq!(server["peer"], client["id"]);
}

#[test]
fn loopback_recording_ladder() {
    let (out, err, code) = replay("loopback-v4-6.18.ttr", &["--view", "ladder"]);
    assert_eq!(code, 0, "{err}");
    let order = [
        "-- SYN --",
        "<-- SYN-ACK --",
        "-- ACK --",
        "connect() = 0",
        "accept4() = ",
        "-- FIN --",
        "CLOSE_WAIT",
        "<-- FIN --",
        "TIME_WAIT",
    ];
    let mut at = 0;
    for needle in order {
        let pos = out[at..]
            .find(needle)
            .unwrap_or_else(|| panic!("{needle:?} missing after offset {at} in\n{out}"));
        at += pos + needle.len();
    }
    assert!(err.contains("0 lost"), "{err}");
}

#[test]
fn refused_ipv6_recording() {
    let (out, _, code) = replay("refused-v6-6.18.ttr", &["--json"]);
    assert_eq!(code, 0);
    let conns = connections(&out);
    assert_eq!(conns.len(), 1);
    let c = &conns[0];
    assert_eq!(c["family"], "ipv6");
    assert_eq!(states(c), ["CLOSE", "SYN_SENT", "CLOSE"]);
    assert_eq!(c["connect"]["errno"], "ECONNREFUSED");
    assert_eq!(c["resets_received"], 1);
    assert_eq!(c["outcome"], "refused");
}

#[test]
fn replay_rejects_bad_files() {
    let dir = std::env::temp_dir().join(format!("tt-replay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.ttr");
    std::fs::write(&bad, b"this is not a recording").unwrap();
    let out = Command::new(TRACER)
        .arg("replay")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a tcp-trace recording"));
    let out = Command::new(TRACER)
        .arg("replay")
        .arg(dir.join("missing.ttr"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot open"));
    let _ = std::fs::remove_dir_all(&dir);
}
