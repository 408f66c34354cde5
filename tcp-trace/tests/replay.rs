//! Replay of real recordings (made on 6.18, and in the 5.10, 6.1 and 6.12 guests): no
//! privilege needed.
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

/// Wildcard and dual-stack servers recorded in the guests of `cargo xtask vm-test`
/// (test `servers::record_wildcard_traffic_for_replay`: 0.0.0.0 with three IPv4
/// clients, then [::] with an IPv4 and an IPv6 client). Before 6.15 the child's
/// LISTEN → SYN_RECV carries the listener's wildcard address and no remote end (the
/// recordings show it); every server end must still get its own local address, its
/// accept() return and its peer.
#[test]
fn wildcard_recordings_of_other_kernels() {
    let recordings = [
        ("wildcard-5.10.0-46-cloud-amd64.ttr", true),
        ("wildcard-6.1.0-57-cloud-amd64.ttr", true),
        ("wildcard-6.12.117+deb12-cloud-amd64.ttr", true),
    ];
    let mut seen = 0;
    for (name, pre_6_15) in recordings {
        if !std::path::Path::new(&fixture(name)).exists() {
            panic!("missing fixture {name}");
        }
        seen += 1;
        let (out, err, code) = replay(name, &["--json", "--view", "events"]);
        assert_eq!(code, 0, "{name}: {err}");
        let wildcard_births = out
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|e| e["old"] == "LISTEN" && e["new"] == "SYN_RECV")
            .filter(|e| e["saddr"] == "0.0.0.0" || e["saddr"] == "::")
            .count();
        assert_eq!(wildcard_births > 0, pre_6_15, "{name}: {wildcard_births}");

        let (out, err, code) = replay(name, &["--json", "--view", "conns"]);
        assert_eq!(code, 0, "{name}: {err}");
        let conns = connections(&out);
        let by_id: std::collections::HashMap<u64, &Value> = conns
            .iter()
            .map(|c| (c["id"].as_u64().unwrap(), c))
            .collect();
        let servers: Vec<&Value> = conns
            .iter()
            .filter(|c| c["role"] == "server" && c["established"] == true)
            .collect();
        assert_eq!(servers.len(), 5, "{name}: {conns:#?}");
        for c in &servers {
            let local = c["saddr"].as_str().unwrap();
            assert!(
                ["127.0.0.1", "::ffff:127.0.0.1", "::1"].contains(&local),
                "{name}: server local address {local}"
            );
            assert!(
                c["accept"]["ret"].as_i64().is_some_and(|r| r >= 0),
                "{name}: {c}"
            );
            let p = by_id[&c["peer"]
                .as_u64()
                .unwrap_or_else(|| panic!("{name}: no peer: {c}"))];
            assert_eq!(p["role"], "client");
            assert_eq!(p["sport"], c["dport"]);
        }
        let mut accepted: Vec<u64> = conns
            .iter()
            .filter(|c| c["role"] == "listener")
            .map(|l| l["listener"]["accepted"].as_u64().unwrap())
            .collect();
        accepted.sort();
        assert_eq!(accepted, [2, 3], "{name}");
    }
    assert_eq!(seen, recordings.len());
}
