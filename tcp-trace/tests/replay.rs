//! Replay of real recordings (made on 6.18, and in the 5.10, 6.1 and 6.12 guests): no
//! privilege needed.
//! The correlator and the views run on exactly what the kernel emitted.
mod common;

use common::*;
use serde_json::Value;

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
    let lines = replay(LOOPBACK_V4, &["--json", "--view", "conns"])
        .ok()
        .json();
    let conns = conns(&lines);
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
    let Replay {
        stdout: out,
        stderr: err,
        ..
    } = replay(LOOPBACK_V4, &["--view", "ladder"]).ok();
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
    let lines = replay(REFUSED_V6, &["--json"]).ok().json();
    let conns = conns(&lines);
    assert_eq!(conns.len(), 1);
    let c = conns[0];
    assert_eq!(c["family"], "ipv6");
    assert_eq!(states(c), ["CLOSE", "SYN_SENT", "CLOSE"]);
    assert_eq!(c["connect"]["errno"], "ECONNREFUSED");
    assert_eq!(c["resets_received"], 1);
    assert_eq!(c["outcome"], "refused");
}

#[test]
fn replay_rejects_bad_files() {
    let dir = fresh_dir("replay");
    let bad = dir.join("bad.ttr");
    std::fs::write(&bad, b"this is not a recording").unwrap();
    let out = replay_file(&bad, &[]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("not a tcp-trace recording"));
    let out = replay_file(&dir.join("missing.ttr"), &[]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("cannot open"));
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
        if !recording(name).exists() {
            panic!("missing fixture {name}");
        }
        seen += 1;
        let events = replay(name, &["--json", "--view", "events"]).ok().json();
        let wildcard_births = events
            .iter()
            .filter(|e| e["old"] == "LISTEN" && e["new"] == "SYN_RECV")
            .filter(|e| e["saddr"] == "0.0.0.0" || e["saddr"] == "::")
            .count();
        assert_eq!(wildcard_births > 0, pre_6_15, "{name}: {wildcard_births}");

        let lines = replay(name, &["--json", "--view", "conns"]).ok().json();
        assert_recorded_wildcard(&lines, None, name);
    }
    assert_eq!(seen, recordings.len());
}

/// A record the decoder cannot read is skipped, counted, and the first one named on
/// stderr (a count alone leaves a kernel-side bug unnamed): two events of the loopback
/// recording given an unknown kind.
#[test]
fn undecodable_records_are_counted_and_the_first_is_named() {
    let mut bytes = std::fs::read(recording(LOOPBACK_V4)).expect("read the recording");
    let u32_at = |b: &[u8], i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap()) as usize;
    let (rec_size, meta_len) = (u32_at(&bytes, 12), u32_at(&bytes, 24));
    let first = 28 + meta_len;
    let kind_at = std::mem::offset_of!(tcp_trace_common::RawEvent, kind);
    for n in [2, 5] {
        bytes[first + n * rec_size + kind_at] = 99;
    }
    let dir = TempDir::new("undecodable");
    let file = dir.0.join("bad.ttr");
    std::fs::write(&file, &bytes).expect("write the altered recording");
    let r = replay_file(&file, &["--json"]).ok();
    let said: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.contains("undecodable record"))
        .collect();
    assert_eq!(said.len(), 1, "{}", r.stderr);
    assert!(
        said[0]
            .starts_with("tcp-trace: warning: undecodable record (unknown event kind 99: ts_ns ")
            && said[0].ends_with("); skipped and counted, as any further ones"),
        "{}",
        r.stderr
    );
    let lines = r.json();
    let stats = lines.iter().find(|l| l["type"] == "stats").expect("stats");
    assert_eq!(stats["decode_errors"], 2, "{stats}");
    assert_eq!(stats["events"], 12, "14 events less the two: {stats}");
}
