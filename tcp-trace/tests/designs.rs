//! The two kernel designs report the same connections: one tracer keeps a book per
//! socket in the kernel and gets one record per flush (the default on the tp_btf and
//! raw paths), the other gets one record per event (`--per-event`); both run at
//! once on the same traffic, and their connection records must agree in everything
//! but ids and times. Privileged (real BPF): `TCP_TRACE_PRIVILEGED_TESTS=1`.
mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

/// A connection record without what differs between two tracers of the same traffic:
/// ids (each tracer numbers its own), times (each program reads the clock itself) and
/// the peer/listener links (ids again).
fn comparable(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| {
                    !(k.ends_with("_ns")
                        || matches!(k.as_str(), "time" | "id" | "peer" | "listener_id"))
                })
                .map(|(k, v)| (k.clone(), comparable(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(comparable).collect()),
        other => other.clone(),
    }
}

fn connections(lines: &[Value]) -> Vec<Value> {
    let mut v: Vec<Value> = lines
        .iter()
        .filter(|l| l["type"] == "connection")
        .map(comparable)
        .collect();
    v.sort_by_key(|c| c.to_string());
    v
}

#[test]
fn per_connection_and_per_event_designs_report_the_same_connections() {
    if !require_root("per_connection_and_per_event_designs_report_the_same_connections") {
        return;
    }
    let ns = Netns::new("designs");
    let port = free_port();
    let port6 = free_port();
    let closed = free_port();
    // The first SYN to `port` is dropped once: a SYN retransmit, folded into the
    // client's book in one design and an event of its own in the other.
    ns.drop_input(port, "tcp flags & (syn|ack) == syn quota until 100 bytes");
    let ports = format!("{port},{port6},{closed}");
    let args = ["--json", "--view", "conns", "-P", &ports];
    let books = Tracer::start(&args);
    let mut per_event_args = args.to_vec();
    per_event_args.push("--per-event");
    let per_event = Tracer::start(&per_event_args);
    let design = |t: &Tracer| t.startup.last().cloned().unwrap_or_default();
    assert!(
        design(&per_event).contains("one record per event"),
        "{}",
        design(&per_event)
    );
    // Every kernel line has BTF and tp_btf: the default attach keeps books.
    assert!(
        design(&books).contains("one record per connection"),
        "{}",
        design(&books)
    );

    // Wildcard servers (the pre-6.15 child tuple), v4 and v6.
    let server = start_server(Some(&ns), "0.0.0.0", port, &["--accepts", "3"]);
    let server6 = start_server(Some(&ns), "::", port6, &["--accepts", "2", "--v6only"]);
    for extra in [&[][..], &["--nonblock"][..], &["--send", "100"][..]] {
        run_client(Some(&ns), "127.0.0.1", port, extra);
    }
    for extra in [&["--send", "10"][..], &["--nonblock"][..]] {
        run_client(Some(&ns), "::1", port6, extra);
    }
    // Refused: nothing listens there.
    run_refused_client(Some(&ns), "127.0.0.1", closed, 1);
    all_exit_ok([server, server6]);
    // Let the closes finish (the servers' LAST_ACK → CLOSE) before stopping.
    std::thread::sleep(Duration::from_millis(300));

    let (a, code_a) = books.stop();
    let (b, code_b) = per_event.stop();
    assert_eq!((code_a, code_b), (0, 0));
    // With events lost or hook runs skipped (other tests' storms on the same CPUs),
    // the two records cannot be the same; the loss must then be reported.
    let unexact: Vec<String> = [("books", &a), ("per-event", &b)]
        .into_iter()
        .filter_map(|(design, lines)| reported_loss(lines).map(|l| format!("{design}: {l}")))
        .collect();
    if !unexact.is_empty() {
        eprintln!(
            "NOT EXACT-CHECKED (designs compared): {}",
            unexact.join("; ")
        );
        return;
    }
    let (ca, cb) = (connections(&a), connections(&b));
    // 5 clients + 5 server children + 2 listeners + the refused client.
    assert!(ca.len() >= 13, "{} connections: {ca:#?}", ca.len());
    assert!(
        ca.iter()
            .any(|c| c["role"] == "client" && c["syn_retransmits"] == 1),
        "no client with the dropped SYN retransmitted: {ca:#?}"
    );
    assert!(
        ca.iter().any(|c| c["outcome"] == "refused"),
        "no refused connect: {ca:#?}"
    );
    if ca != cb {
        let only_a: Vec<_> = ca.iter().filter(|c| !cb.contains(c)).collect();
        let only_b: Vec<_> = cb.iter().filter(|c| !ca.contains(c)).collect();
        let raced = only_a.len() == only_b.len()
            && only_a
                .iter()
                .all(|x| only_b.iter().any(|y| same_but_fin_race(x, y, &a, &b)));
        assert!(
            raced,
            "the designs disagree\nper-connection only: {only_a:#?}\nper-event only: {only_b:#?}"
        );
    }
}

/// `None` when the run lost no event, the kernel skipped no hook run and no event was
/// applied out of order; otherwise what was, after checking that the `lost`/`skipped`
/// lines add up to the stats' counts (reported, not silent).
fn reported_loss(lines: &[Value]) -> Option<String> {
    let st = stats(lines);
    let lost = st["lost"].as_u64().expect("stats.lost");
    let skipped = st["skipped"].as_u64().expect("stats.skipped");
    // Applied out of order, said in the stats: a book's steps wait in the kernel until
    // its next flush. In a slow guest (5.10 under TCG beside a loaded host: 891 ms to
    // attach) the books run had 11 events later than the reorder window, the per-event
    // run none, and one client's FIN_WAIT2 → CLOSE read differently in the two.
    let late = st["late_events"].as_u64().expect("stats.late_events");
    if lost == 0 && skipped == 0 {
        return (late > 0).then(|| format!("{late} events applied later than the reorder window"));
    }
    let reported = |ty: &str| -> u64 {
        lines
            .iter()
            .filter(|l| l["type"] == ty)
            .map(|l| l["count"].as_u64().unwrap_or(0))
            .sum()
    };
    assert_eq!(reported("lost"), lost, "lost lines vs stats {st}");
    assert_eq!(reported("skipped"), skipped, "skipped lines vs stats {st}");
    Some(format!(
        "{lost} events lost, {skipped} hook runs skipped, all reported"
    ))
}

/// The fields a FIN_WAIT2 → CLOSE's reading takes from the order of two ends' times.
const FIN_ORDER_FIELDS: [&str; 3] = ["time_wait", "time_wait_certain", "fin_wait2_handover"];

/// `x` (per-connection design) and `y` (per-event design) are one client that differs
/// only in how its FIN_WAIT2 → CLOSE reads, and in both traces its server sent its FIN
/// within 100 µs of that CLOSE: a race between the two ends on two CPUs, which each
/// tracer stamps at a different point of its own program run (they run one after the
/// other on every hook; under QEMU a run takes microseconds), so the two can order
/// them differently and both be right. Seen on 6.1, 6.12-rt and 7.2 guests.
fn same_but_fin_race(x: &Value, y: &Value, a: &[Value], b: &[Value]) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.as_object_mut() {
            for k in FIN_ORDER_FIELDS {
                m.remove(k);
            }
        }
        v
    };
    if x["role"] != "client" || strip(x) != strip(y) {
        return false;
    }
    let gap = |lines: &[Value]| -> Option<i64> {
        let conns: Vec<&Value> = lines.iter().filter(|l| l["type"] == "connection").collect();
        let client = conns.iter().find(|c| {
            c["role"] == "client" && c["sport"] == x["sport"] && c["dport"] == x["dport"]
        })?;
        let server = conns.iter().find(|c| {
            c["role"] == "server"
                && c["sport"] == x["dport"]
                && c["dport"] == x["sport"]
                && c["family"] == x["family"]
        })?;
        let t = |c: &Value, names: &[&str]| -> Option<i64> {
            c["states"]
                .as_array()?
                .iter()
                .rev()
                .find(|s| names.iter().any(|n| s["state"] == *n))?["t_ns"]
                .as_i64()
        };
        let tc = t(client, &["CLOSE"])?;
        let tf = t(server, &["LAST_ACK", "FIN_WAIT1"])?;
        Some(tf - tc)
    };
    match (gap(a), gap(b)) {
        (Some(ga), Some(gb)) if ga.abs() <= 100_000 && gb.abs() <= 100_000 => {
            eprintln!(
                "designs: client :{} FIN_WAIT2 -> CLOSE read differently; its server's FIN came {ga} ns (per-connection) / {gb} ns (per-event) from that CLOSE: a race between the two ends, accepted",
                x["sport"]
            );
            true
        }
        _ => false,
    }
}

/// The inode of this process's network namespace.
fn own_netns() -> u64 {
    std::fs::read_link("/proc/self/ns/net")
        .ok()
        .and_then(|l| {
            let s = l.to_string_lossy().into_owned();
            s.strip_prefix("net:[")?
                .strip_suffix(']')?
                .parse::<u64>()
                .ok()
        })
        .expect("this process's netns inode")
}

/// What `tcp-trace-storm` printed: its connections (completed connects) and errors.
fn storm(port: u16, close: &str) -> (u64, u64) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tcp-trace-storm"))
        .args(["--threads", "2", "--secs", "2", "--close", close])
        .args(["--port", &port.to_string()])
        .output()
        .expect("tcp-trace-storm runs");
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).expect("storm's JSON line");
    (
        v["connections"].as_u64().expect("connections"),
        v["connect_errors"].as_u64().expect("connect_errors"),
    )
}

/// A ring for each of two tracers under a storm: large, so that what the storm test
/// checks is the bookkeeping rather than the ring (128 MiB, less in a small guest).
fn storm_ring_kib() -> u64 {
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(1 << 20);
    // A power of two, at most a sixteenth of the memory each.
    let mut kib = 131_072;
    while kib > 4096 && kib > mem_kib / 16 {
        kib /= 2;
    }
    kib
}

/// Issue #13: under a storm at this machine's full connection rate (both closes),
/// each design reports every connection the kernel opened, once: one established
/// client per completed connect and one established server child each, every client
/// paired with its server, one listener, no SYN-ACK retransmit untracked. The ring is made large
/// so that what is checked is the bookkeeping, not the ring's size; if the tracer
/// still fell behind (a loaded machine) or the kernel skipped hook runs (7.2), that
/// must be reported, and the exact counts cannot be checked.
#[test]
fn storm_connection_counts_are_exact_in_both_designs() {
    if !require_root("storm_connection_counts_are_exact_in_both_designs") {
        return;
    }
    for close in ["fin", "rst"] {
        let port = free_port();
        let ring = storm_ring_kib().to_string();
        // This namespace only: the bench-storm test beside this one runs a storm in a
        // namespace of its own whose clients take ephemeral ports from 1024 up, this
        // port among them (the port filter matches either end, in every namespace:
        // seen once in CI as one connection more than the storm made).
        let ns = own_netns().to_string();
        let args = ["--json", "--ring-kib", &ring, "--netns", &ns];
        let books = Tracer::on_port(port, &args);
        let mut per_event_args = args.to_vec();
        per_event_args.push("--per-event");
        let per_event = Tracer::on_port(port, &per_event_args);
        let (completed, errors) = storm(port, close);
        assert!(completed > 100, "the storm ran: {completed} connections");
        // The servers' last closes (FIN: LAST_ACK → CLOSE) follow the storm's exit.
        std::thread::sleep(Duration::from_millis(500));
        for (design, t) in [("books", books), ("per-event", per_event)] {
            let (lines, code) = t.stop();
            assert_eq!(code, 0, "{design}");
            let st = stats(&lines).clone();
            let what = format!(
                "{close} storm, {design}: {completed} connects, {errors} errors; stats {st}"
            );
            let conns: Vec<&Value> = lines.iter().filter(|l| l["type"] == "connection").collect();
            let role = |r: &str| {
                conns
                    .iter()
                    .filter(|c| c["role"] == r)
                    .copied()
                    .collect::<Vec<_>>()
            };
            let (clients, servers, listeners) = (role("client"), role("server"), role("listener"));
            let est = |v: &[&Value]| v.iter().filter(|c| c["established"] == true).count() as u64;
            // On a mismatch, what the records were: role, established, outcome, states.
            let mut kinds = std::collections::BTreeMap::<String, usize>::new();
            for c in &conns {
                let states: Vec<&str> = c["states"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|s| s["state"].as_str()).collect())
                    .unwrap_or_default();
                let k = format!(
                    "{} est={} {} {}",
                    c["role"],
                    c["established"],
                    c["outcome"],
                    states.join(">")
                );
                *kinds.entry(k).or_default() += 1;
            }
            let what = format!("{what}\nrecords: {kinds:#?}");
            // Events lost, or hook runs the kernel skipped (7.2 skips the next run of a
            // program that was preempted on its CPU): reported, then not exact.
            if let Some(l) = reported_loss(&lines) {
                assert!(
                    est(&clients) <= completed && est(&servers) <= completed,
                    "{what}"
                );
                eprintln!("NOT EXACT-CHECKED ({close}, {design}): {l} (ring {ring} KiB)");
                continue;
            }
            // Not `late_events`: under CPU contention a book's steps can leave the
            // kernel more than the reorder window after they happened (its next
            // flush point waits for the peer); they are applied and counted.
            assert_eq!(st["untracked_requests"], 0, "{what}");
            // Each catch of the state program's twin answers one skip of the main
            // program; catches beyond the skips are transitions reported twice (a
            // softirq with more transitions than the twin's stack holds came as it
            // started: seen once or twice in some 2 s storms here, 194 in one CI
            // run of the build before, whose stack wrapped). The per-event design
            // shows a twice-reported `CLOSE → SYN_SENT` as one client more, which the
            // counts below catch; here only that the field is there and that the
            // twin did not report everything twice.
            if st["skips_counted"] == true {
                let (caught, skips) = (
                    st["caught_nested"].as_u64().expect("caught_nested"),
                    st["state_skips"].as_u64().expect("state_skips"),
                );
                assert!(
                    caught <= skips + skips / 10 + 10,
                    "catches far beyond skips: {what}"
                );
            }
            // Events that match no connection are not checked here: an accept() that
            // returns after its child was reset and reported (the close linger, 100 ms)
            // and a reset answering a segment after its socket closed (no socket) are
            // such events; the counts below are what must hold.
            assert_eq!(listeners.len(), 1, "{what}");
            // Where counts differ, the clients whose peer is no server record here, each
            // with the server records on its tuple: what a failure in a guest (whose
            // saved traces go with it) needs to be read afterwards. Seen on 5.10, RST
            // storm, books design, once in ~10 runs under load: one child missing while
            // every event of the storm had arrived (10 per connection).
            let what = if est(&servers) != completed || est(&clients) != completed {
                let server_ids: std::collections::HashSet<u64> =
                    servers.iter().filter_map(|c| c["id"].as_u64()).collect();
                let mut peers = std::collections::HashMap::<u64, usize>::new();
                for p in clients.iter().filter_map(|c| c["peer"].as_u64()) {
                    *peers.entry(p).or_default() += 1;
                }
                let mut more = String::new();
                for c in clients
                    .iter()
                    .filter(|c| match c["peer"].as_u64() {
                        Some(p) => !server_ids.contains(&p) || peers[&p] > 1,
                        None => true,
                    })
                    .take(4)
                {
                    more.push_str(&format!("\nclient without a server record of its own: {c}"));
                    for s in servers
                        .iter()
                        .filter(|s| s["sport"] == c["dport"] && s["dport"] == c["sport"])
                    {
                        more.push_str(&format!("\n  server on its tuple: {s}"));
                    }
                }
                format!("{what}{more}")
            } else {
                what
            };
            assert_eq!(est(&clients), completed, "established clients: {what}");
            assert_eq!(
                est(&servers),
                completed,
                "established server children: {what}"
            );
            // A connect that failed before SYN_SENT leaves no socket to report.
            assert!(
                clients.len() as u64 <= completed + errors,
                "{} client records: {what}",
                clients.len()
            );
            let unpaired = clients.iter().filter(|c| c["peer"].is_null()).count();
            assert_eq!(unpaired, 0, "clients without their server: {what}");
            let summary = lines
                .iter()
                .find(|l| l["type"] == "summary")
                .expect("summary line");
            assert_eq!(
                summary["by_role"]["client"]["established"], completed,
                "{what}"
            );
        }
    }
}

/// The race rule on made-up records (no root): accepted within 100 µs, refused past it
/// and when anything else differs.
#[test]
fn fin_race_rule_accepts_only_a_near_tie() {
    use serde_json::json;
    let client = |handover: bool, close: i64| {
        json!({"type": "connection", "role": "client", "family": "ipv4", "sport": 40700,
               "dport": 30810, "time_wait": true, "time_wait_certain": !handover,
               "fin_wait2_handover": handover,
               "states": [{"state": "CLOSE", "t_ns": 0}, {"state": "FIN_WAIT2", "t_ns": close - 5},
                          {"state": "CLOSE", "t_ns": close}]})
    };
    let server = |fin: i64| {
        json!({"type": "connection", "role": "server", "family": "ipv4", "sport": 30810,
               "dport": 40700, "states": [{"state": "CLOSE_WAIT", "t_ns": 10},
                                          {"state": "LAST_ACK", "t_ns": fin}]})
    };
    let (x, y) = (client(true, 1_000_000), client(false, 1_000_000));
    let near = [x.clone(), server(1_000_400)];
    let near_b = [y.clone(), server(999_700)];
    assert!(same_but_fin_race(
        &comparable(&x),
        &comparable(&y),
        &near,
        &near_b
    ));
    let far = [x.clone(), server(1_500_000)];
    assert!(!same_but_fin_race(
        &comparable(&x),
        &comparable(&y),
        &far,
        &near_b
    ));
    let mut z = y.clone();
    z["outcome"] = json!("reset");
    assert!(!same_but_fin_race(
        &comparable(&x),
        &comparable(&z),
        &near,
        &near_b
    ));
}

/// The bench's storm (`tcp-trace-storm --netns`) runs in a namespace of its own, made
/// for it, over four loopback addresses; the tracer, in the host's namespace, sees
/// every connection of it: as many established clients as connects, each on one of
/// the four addresses, none in the tracer's own namespace.
#[test]
fn the_bench_storm_runs_in_a_namespace_of_its_own_and_is_traced() {
    if !require_root("the_bench_storm_runs_in_a_namespace_of_its_own_and_is_traced") {
        return;
    }
    let port = free_port();
    let ring = storm_ring_kib().to_string();
    let tracer = Tracer::on_port(port, &["--json", "--ring-kib", &ring]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tcp-trace-storm"))
        .args([
            "--threads",
            "2",
            "--secs",
            "0.5",
            "--close",
            "fin",
            "--netns",
        ])
        .args(["--port", &port.to_string()])
        .output()
        .expect("tcp-trace-storm runs");
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).expect("storm's JSON line");
    let completed = v["connections"].as_u64().expect("connections");
    assert!(completed > 100, "the storm ran: {v}");
    assert_eq!(v["connect_errors"], 0, "{v}");
    std::thread::sleep(Duration::from_millis(500));
    let (lines, code) = tracer.stop();
    assert_eq!(code, 0);
    if let Some(l) = reported_loss(&lines) {
        eprintln!("NOT EXACT-CHECKED (storm in its own namespace): {l}");
        return;
    }
    // Not this namespace's: the storm test beside this one runs in it, and a client
    // of its storm may get this port as its ephemeral port (the port filter matches
    // either end, in every namespace).
    let own_netns = own_netns();
    let clients: Vec<&Value> = lines
        .iter()
        .filter(|l| {
            l["type"] == "connection"
                && l["role"] == "client"
                && l["established"] == true
                && l["netns"].as_u64() != Some(own_netns)
        })
        .collect();
    assert_eq!(clients.len() as u64, completed, "{:#?}", stats(&lines));
    let mut dests = std::collections::BTreeSet::new();
    for c in &clients {
        dests.insert(c["daddr"].as_str().unwrap_or_default().to_string());
    }
    let want: std::collections::BTreeSet<String> =
        (1..=4).map(|i| format!("127.0.0.{i}")).collect();
    assert_eq!(dests, want);
}
