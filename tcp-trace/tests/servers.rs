//! Privileged: servers as users run them. Wildcard listeners (`0.0.0.0`, dual-stack
//! `[::]`, v6-only `[::]`), SO_REUSEPORT groups, identical traffic in two network
//! namespaces at once, non-blocking connects over a lossy path, and an idle host
//! where a finished connection must be printed while the tracer runs.
//!
//! Before 6.15 the child's LISTEN → SYN_RECV carries its listener's addresses
//! (`docs/kernel-facts.md`): these tests are what shows the tuple, the accept()
//! return and the peer are still right there (they run in the 5.10, 6.1 and 6.12
//! guests of `cargo xtask vm-test`).
mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const N: usize = 20;

/// Runs a server on `listen` (+ `extra` options) and `N` clients to `connect`, all in
/// a fresh network namespace; returns the tracer's JSON lines and the server pid.
fn serve(listen: &str, connect: &str, extra: &[&str], tag: &str) -> (Vec<Value>, u64, u16) {
    let ns = Netns::new(tag);
    let port = free_port();
    let n = N.to_string();
    let mut server_args = vec!["--accepts", &n, "--close-delay-ms", "0", "--null-accept"];
    server_args.extend_from_slice(extra);
    let (lines, x) = traced(port, &["--json", "--view", "conns"], |_| {
        server_and_client_to(
            Some(&ns),
            listen,
            connect,
            port,
            &server_args,
            &["--count", &n, "--send", "1"],
        )
    });
    (lines, x.server_pid, port)
}

/// Every server end carries its own local address (never the wildcard), its
/// accept() return, the server's pid and its peer; the listener counts N children
/// and N accepted.
fn assert_wildcard(lines: &[Value], spid: u64, port: u16, local: &str, listen: &str) {
    let all = conns(lines);
    let ids = by_id(&all);
    let servers = established_servers(&all);
    assert_eq!(servers.len(), N, "established server connections: {all:#?}");
    for c in &servers {
        assert_eq!(c["saddr"], local, "server local address: {c}");
        assert_eq!(c["sport"], port, "{c}");
        assert!(accepted(c), "accept return: {c}");
        assert_eq!(c["pid"], spid, "{c}");
        let p = client_peer_of(&ids, c);
        assert_eq!(p["dport"], port, "{p}");
    }
    let listeners = listeners_on(&all, port);
    assert_eq!(listeners.len(), 1, "{listeners:#?}");
    let l = listeners[0];
    assert_eq!(l["saddr"], listen, "{l}");
    assert_eq!(l["listener"]["children"], N as u64, "{l}");
    assert_eq!(l["listener"]["accepted"], N as u64, "{l}");
    for c in &servers {
        assert_eq!(c["listener_id"], l["id"], "{c}");
    }
}

/// `serve` then `assert_wildcard`, tried again when the kernel skipped hook runs.
fn wildcard_case(
    listen: &str,
    connect: &str,
    extra: &[&str],
    tag: &str,
    local: &str,
    listen_shown: &str,
) {
    retry_on_kernel_skips(tag, |last| {
        let (lines, spid, port) = serve(listen, connect, extra, tag);
        if !last && skipped_of(&lines) > 0 {
            return Some(skipped_of(&lines));
        }
        assert_wildcard(&lines, spid, port, local, listen_shown);
        None
    });
}

#[test]
fn wildcard_ipv4_listener() {
    if !require_root("wildcard_ipv4_listener") {
        return;
    }
    wildcard_case("0.0.0.0", "127.0.0.1", &[], "wc4", "127.0.0.1", "0.0.0.0");
}

#[test]
fn dual_stack_listener_ipv4_clients() {
    if !require_root("dual_stack_listener_ipv4_clients") {
        return;
    }
    // An IPv4 client of a dual-stack listener is an AF_INET6 child with v4-mapped
    // addresses.
    wildcard_case("::", "127.0.0.1", &[], "ds4", "::ffff:127.0.0.1", "::");
}

#[test]
fn dual_stack_listener_ipv6_clients() {
    if !require_root("dual_stack_listener_ipv6_clients") {
        return;
    }
    wildcard_case("::", "::1", &[], "ds6", "::1", "::");
}

#[test]
fn v6only_listener_ipv6_clients() {
    if !require_root("v6only_listener_ipv6_clients") {
        return;
    }
    wildcard_case("::", "::1", &["--v6only"], "v6o", "::1", "::");
}

/// A wildcard server drops the client's pure third-step ACK: the SYN-ACK
/// retransmit lands on the server connection (the request became that child), not
/// on the listener.
#[test]
fn wildcard_synack_retransmit_lands_on_the_child() {
    if !require_root("wildcard_synack_retransmit_lands_on_the_child") {
        return;
    }
    let ns = Netns::new("wcsyn");
    let port = free_port();
    ns.drop_input(port, "tcp flags & (fin|syn|rst|psh|ack) == ack");
    let (lines, x) = traced(port, &["--json", "--view", "conns"], |_| {
        // The dropped ACKs leave the child in LAST_ACK.
        exchange_unsettled(
            Some(&ns),
            "0.0.0.0",
            "127.0.0.1",
            port,
            &["--close-delay-ms", "0"],
            &["--delay-before-send-ms", "1500"],
        )
    });
    let cport = x.cport;
    let all = conns(&lines);
    let child = all
        .iter()
        .find(|c| c["role"] == "server" && c["dport"] == cport)
        .unwrap_or_else(|| panic!("no server connection for client port {cport}: {all:#?}"));
    assert_eq!(child["saddr"], "127.0.0.1", "{child}");
    assert!(
        child["synack_retransmits"].as_u64().is_some_and(|n| n >= 1),
        "SYN-ACK retransmits on the server connection: {child}"
    );
    assert!(accepted(child), "{child}");
    let listener = all
        .iter()
        .find(|c| c["role"] == "listener" && c["sport"] == port)
        .expect("listener");
    assert_eq!(listener["synack_retransmits"], 0, "{listener}");
    assert_eq!(
        listener["listener"]["half_open_requests"],
        Value::Array(vec![])
    );
}

/// Two network namespaces run the same traffic at the same time, with the same
/// addresses and ports: every connection is paired within its own namespace, and
/// each side's owner is the process of its namespace.
#[test]
fn two_namespaces_identical_tuples_never_cross_pair() {
    if !require_root("two_namespaces_identical_tuples_never_cross_pair") {
        return;
    }
    let port = free_port();
    let n = N.to_string();
    let (a, b) = (Netns::new("twa"), Netns::new("twb"));
    let (lines, pids) = traced(port, &["--json", "--view", "conns"], |_| {
        let servers: Vec<Peer> = [&a, &b]
            .iter()
            .map(|ns| {
                let accepts = ["--accepts", &n, "--close-delay-ms", "0"];
                start_server(Some(ns), "127.0.0.1", port, &accepts)
            })
            .collect();
        // The clients in both namespaces connect in lockstep: the same client ports
        // are likely in both (each namespace has its own port allocator), which is the
        // case that cross-pairs when the namespace is not part of the key.
        let clients: Vec<Peer> = [&a, &b]
            .iter()
            .map(|ns| start_client(Some(ns), "127.0.0.1", port, &["--count", &n, "--send", "1"]))
            .collect();
        let pids: Vec<(u64, u64)> = clients
            .iter()
            .zip(&servers)
            .map(|(c, s)| (c.pid as u64, s.pid as u64))
            .collect();
        all_exit_ok(clients);
        all_exit_ok(servers);
        pids
    });
    let all = conns(&lines);
    let ids = by_id(&all);
    let mut netns_seen = std::collections::BTreeSet::new();
    let mut pairs = 0;
    for c in all.iter().filter(|c| c["role"] == "client") {
        let ns = c["netns"].as_u64().expect("client netns");
        netns_seen.insert(ns);
        let peer = ids[&c["peer"].as_u64().unwrap_or_else(|| panic!("no peer: {c}"))];
        assert_eq!(peer["netns"], ns, "cross-namespace pair: {c}\n{peer}");
        // Client and server pids of one namespace belong together.
        let (cp, sp) = (c["pid"].as_u64().unwrap(), peer["pid"].as_u64().unwrap());
        assert!(
            pids.contains(&(cp, sp)),
            "client pid {cp} paired with server pid {sp}"
        );
        pairs += 1;
    }
    assert_eq!(pairs, 2 * N, "client connections with a peer");
    assert_eq!(netns_seen.len(), 2, "two namespaces");
}

/// A non-blocking connect over a path that drops the first SYN: connect() returns
/// EINPROGRESS at once, the SYN is retransmitted after ~1 s, and the connect latency
/// is the time until ESTABLISHED, not the syscall's few microseconds.
#[test]
fn nonblocking_connect_with_lost_first_syn() {
    if !require_root("nonblocking_connect_with_lost_first_syn") {
        return;
    }
    let ns = Netns::new("nbsyn");
    let port = free_port();
    // Drop the first SYN to this port only (a quota of one packet).
    ns.drop_input(port, "tcp flags & (syn|ack) == syn quota until 100 bytes");
    let (lines, x) = traced(port, &["--json", "--view", "conns"], |_| {
        server_and_client(
            Some(&ns),
            "127.0.0.1",
            port,
            &["--close-delay-ms", "0"],
            &["--nonblock"],
        )
    });
    let cport = x.cport;
    let all = conns(&lines);
    let c = all
        .iter()
        .find(|c| c["role"] == "client" && c["sport"] == cport)
        .unwrap_or_else(|| panic!("no client connection: {all:#?}"));
    assert_eq!(c["connect"]["ret"], -115, "{c}");
    assert_eq!(c["connect"]["errno"], "EINPROGRESS", "{c}");
    assert_eq!(c["connect_nonblocking"], true, "{c}");
    assert_eq!(c["syn_retransmits"], 1, "{c}");
    let lat = c["connect_latency_ns"].as_u64().expect("connect latency");
    assert!(
        (900_000_000..3_500_000_000).contains(&lat),
        "connect latency {lat} ns, expected about 1 s: {c}"
    );
    // The syscall itself returned long before.
    let after = c["connect_after_established_ns"].as_i64().expect("after");
    assert!(
        after < -500_000_000,
        "connect() returned {after} ns after ESTABLISHED"
    );
    let summary = lines
        .iter()
        .find(|l| l["type"] == "summary")
        .expect("summary");
    assert_eq!(
        summary["connect_latency_nonblocking_ns"]["count"], 1,
        "{summary}"
    );
    assert_eq!(summary["connect_latency_ns"]["count"], 0, "{summary}");
}

/// The same with curl, the program users run (host only: the guests have no curl or
/// python). curl connects non-blocking; python's http.server answers on `0.0.0.0`.
#[test]
fn curl_nonblocking_connect_with_lost_first_syn() {
    if !require_root("curl_nonblocking_connect_with_lost_first_syn") {
        return;
    }
    let (Some(_), Some(_)) = (which("curl"), which("python3")) else {
        eprintln!("SKIPPED curl_nonblocking_connect_with_lost_first_syn: no curl or python3");
        return;
    };
    let ns = Netns::new("curl");
    let port = free_port();
    let ps = port.to_string();
    ns.drop_input(port, "tcp flags & (syn|ack) == syn quota until 100 bytes");
    let _http = Daemon::start(
        &ns,
        port,
        &std::env::temp_dir(),
        &["python3", "-m", "http.server", &ps, "--bind", "0.0.0.0"],
    );
    let url = format!("http://127.0.0.1:{port}/");
    let (lines, _) = traced(port, &["--json", "--view", "conns"], |_| {
        let curl = ["-s", "-o", "/dev/null", "--max-time", "10", &url];
        let st = in_netns(Some(&ns), "curl", &curl).status().expect("curl");
        assert!(st.success(), "curl: {st}");
    });
    let all = conns(&lines);
    // A dozen lines: all of them with a failure (CI keeps no files).
    let trace: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    let trace = trace.join("\n");
    let c = all
        .iter()
        .find(|c| c["role"] == "client" && c["comm"] == "curl")
        .unwrap_or_else(|| panic!("no curl connection: {trace}"));
    assert_eq!(c["connect"]["errno"], "EINPROGRESS", "{trace}");
    assert_eq!(c["connect_nonblocking"], true, "{trace}");
    assert_eq!(c["syn_retransmits"], 1, "{trace}");
    let lat = c["connect_latency_ns"].as_u64().expect("connect latency");
    assert!(
        (900_000_000..3_500_000_000).contains(&lat),
        "{lat}: {trace}"
    );
    let server = &by_id(&all)[&c["peer"].as_u64().expect("peer")];
    assert_eq!(server["comm"], "python3", "{trace}");
    assert_eq!(server["saddr"], "127.0.0.1", "{trace}");
    assert!(accepted(server), "{trace}");
}

/// On an idle host with a port filter, one finished connection is printed while the
/// tracer runs (within 0.5 s of its record being complete), not only at exit.
#[test]
fn idle_host_prints_a_finished_connection_while_running() {
    if !require_root("idle_host_prints_a_finished_connection_while_running") {
        return;
    }
    let port = free_port();
    let mut t = Tracer::on_port(port, &["--json", "--view", "conns"]);
    let rx = t.stream_stdout();
    server_and_client(None, "127.0.0.1", port, &["--close-delay-ms", "0"], &[]);
    let closed = Instant::now();
    // Both ends are closed: after the linger for late events (100 ms) nothing is left
    // to wait for. Allow the 0.5 s of the promise plus scheduling slack in a guest.
    let mut got = Vec::new();
    while got.len() < 2 {
        let left = Duration::from_millis(1500).saturating_sub(closed.elapsed());
        match rx.recv_timeout(left) {
            Ok(l) => {
                let v: Value = serde_json::from_str(&l).expect("JSON line");
                if v["type"] == "connection" && v["role"] != "listener" {
                    got.push(v);
                }
            }
            Err(_) => panic!(
                "{} connection(s) printed {:?} after both ends closed, expected 2 while running",
                got.len(),
                closed.elapsed()
            ),
        }
    }
    eprintln!(
        "both connections printed {:?} after the close",
        closed.elapsed()
    );
    assert!(got.iter().any(|c| c["role"] == "client"));
    assert!(got.iter().any(|c| c["role"] == "server"));
    t.finish();
}

/// SO_REUSEPORT: two server processes each listen on the same port; the kernel
/// queues each child on one of the two listeners. Every server connection ends up
/// with the process that accepted it and with that process's listener.
#[test]
fn reuseport_group_children_go_to_their_acceptor() {
    if !require_root("reuseport_group_children_go_to_their_acceptor") {
        return;
    }
    retry_on_kernel_skips("reuseport", |last| reuseport_once(last, false));
}

/// The same group with one member listening before the tracer starts: its children
/// take their owner from the socket table's entry, the later member's from the
/// storage it gets because the port is taken (the first listener of a port gets none:
/// its children would pay the kernel's copy of it).
#[test]
fn reuseport_group_with_a_listener_from_before_the_start() {
    if !require_root("reuseport_group_with_a_listener_from_before_the_start") {
        return;
    }
    retry_on_kernel_skips("reuseport-before", |last| reuseport_once(last, true));
}

fn reuseport_once(last: bool, one_before: bool) -> Option<u64> {
    let ns = Netns::new(if one_before { "rport-pre" } else { "rport" });
    let port = free_port();
    let reuse = [
        "--accepts",
        "1000000",
        "--close-delay-ms",
        "0",
        "--reuseport",
    ];
    let mut servers: Vec<Peer> = Vec::new();
    if one_before {
        servers.push(start_server(Some(&ns), "0.0.0.0", port, &reuse));
    }
    let (lines, (exact, spids)) = traced(port, &["--json", "--view", "all"], |t| {
        // With socket storage (tp_btf, 5.11+) the kernel names the very listener each
        // child was queued on, at its birth.
        let exact = !t.startup.iter().any(|l| l.contains("socket local storage"));
        if one_before {
            // The socket table is in (and its listener with it) before the second
            // member listens.
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match t.stderr_lines.recv_timeout(left) {
                    Ok(l) if l.contains("open before start") => break,
                    Ok(_) => {}
                    Err(_) => panic!("no 'open before start' line within 20 s"),
                }
            }
        }
        while servers.len() < 2 {
            servers.push(start_server(Some(&ns), "0.0.0.0", port, &reuse));
        }
        let spids: Vec<u64> = servers.iter().map(|s| s.pid as u64).collect();
        run_client(
            Some(&ns),
            "127.0.0.1",
            port,
            &["--count", "40", "--send", "1"],
        );
        std::thread::sleep(Duration::from_millis(300));
        // Close the listeners (the servers end): their records come out too.
        drop(servers);
        (exact, spids)
    });
    if !last && skipped_of(&lines) > 0 {
        return Some(skipped_of(&lines));
    }
    let all = conns(&lines);
    let ids = by_id(&all);
    let srv = established_servers(&all);
    assert_eq!(srv.len(), 40, "{all:#?}");
    let mut per_pid: HashMap<u64, usize> = HashMap::new();
    for c in &srv {
        let pid = c["pid"].as_u64().expect("pid");
        assert!(spids.contains(&pid), "{c}");
        assert!(accepted(c), "{c}");
        assert_eq!(c["saddr"], "127.0.0.1", "{c}");
        *per_pid.entry(pid).or_default() += 1;
        if one_before && pid == spids[0] {
            // Queued on the listener from before the start, which has no record while
            // it listens: linked to none, not to the other member of the group.
            assert!(c["listener_id"].is_null(), "{c}");
            continue;
        }
        let l = ids[&c["listener_id"]
            .as_u64()
            .unwrap_or_else(|| panic!("no listener: {c}"))];
        assert_eq!(l["pid"], pid, "child of pid {pid} linked to listener {l}");
    }
    if one_before {
        // Both members took children (40 connections hashed over two listeners).
        assert_eq!(per_pid.len(), 2, "{per_pid:?}");
    }
    if exact {
        // Before accept(): each child's first event already carries the process of
        // the listener it was queued on, which is the process that accepted it.
        let evs = events(&lines);
        for c in &srv {
            let sk = c["skaddr"].as_str().unwrap();
            // Socket addresses are reused: the birth of this generation is the event
            // at the connection's first timestamp.
            let born = evs
                .iter()
                .find(|e| {
                    s(e, "skaddr") == sk
                        && e["old"] == "LISTEN"
                        && e["new"] == "SYN_RECV"
                        && e["ts_ns"] == c["first_ts_ns"]
                })
                .unwrap_or_else(|| panic!("no LISTEN>SYN_RECV for {c}"));
            assert_eq!(
                born["pid"], c["pid"],
                "child born as {born}, accepted by {c}"
            );
        }
    }
    let listeners = listeners_on(&all, port);
    // The listener from before the start has a record from its close on (its
    // LISTEN → CLOSE), with none of its children linked.
    assert_eq!(listeners.len(), 2, "{listeners:#?}");
    for l in listeners {
        let pid = l["pid"].as_u64().unwrap();
        let n = if one_before && pid == spids[0] {
            0
        } else {
            per_pid.get(&pid).copied().unwrap_or(0) as u64
        };
        assert_eq!(l["listener"]["children"], n, "{l}");
        assert_eq!(l["listener"]["accepted"], n, "{l}");
    }
    None
}

/// A `connect()` blocked when the tracer starts (its SYNs dropped) and returning after
/// the start: its return is reported and placed on its connection, although its entry
/// was never seen (the call is learned from /proc/PID/task/TID/syscall at start). An
/// SRE starts the tracer because a connect is slow: that is the connect to show.
#[test]
fn connect_in_progress_at_start_has_its_return() {
    if !require_root("connect_in_progress_at_start_has_its_return") {
        return;
    }
    let ns = Netns::new("cstart");
    let port = free_port();
    let server = start_server(Some(&ns), "127.0.0.1", port, &["--close-delay-ms", "0"]);
    ns.drop_input(port, "tcp flags & (syn|ack) == syn");
    let mut client = start_client(Some(&ns), "127.0.0.1", port, &[]);
    let cpid = client.pid as u64;
    // In connect(), its first SYN dropped.
    let deadline = Instant::now() + Duration::from_secs(10);
    let filter = format!("( dport = :{port} )");
    loop {
        let out = in_netns(Some(&ns), "ss", &["-Htan", "state", "syn-sent", &filter])
            .output()
            .expect("ss");
        if !out.stdout.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "the client never sent its SYN");
        std::thread::sleep(Duration::from_millis(20));
    }
    let t = Tracer::on_port_learned(port, &["--json", "--view", "all"]);
    // The next SYN retransmit gets through; connect() returns 0.
    ns.nft("delete table inet tt\n");
    let cport = client.connect_ok();
    all_exit_ok([client, server]);
    settle(Some(&ns), port);
    let lines = t.finish();
    let evs = events(&lines);
    let ret = evs
        .iter()
        .find(|e| e["kind"] == "connect_return")
        .unwrap_or_else(|| panic!("no connect() return: {evs:#?}"));
    assert_eq!(ret["ret"], 0, "{ret}");
    assert_eq!(ret["pid"], cpid, "{ret}");
    assert_eq!(ret["sport"], cport, "{ret}");
    let all = conns(&lines);
    let c = all
        .iter()
        .find(|c| c["role"] == "client" && c["sport"] == cport)
        .unwrap_or_else(|| panic!("no record of the client: {all:#?}"));
    assert_eq!(c["seen_at_start"], true, "{c}");
    assert_eq!(c["connect"]["ret"], 0, "{c}");
    assert_eq!(c["connect"]["fd"], ret["fd"], "{c}");
    assert_eq!(c["pid"], cpid, "{c}");
    assert!(c["syn_retransmits"].as_u64() >= Some(1), "{c}");
}

/// A connection established before the tracer started is named from the socket
/// table read at start (tuple, role, owner), not left a nameless fragment; and a
/// listener that existed before the start lends its owner to children born after it
/// (in the kernel, at LISTEN → SYN_RECV), before accept() returns.
#[test]
fn connections_open_before_start_are_named() {
    if !require_root("connections_open_before_start_are_named") {
        return;
    }
    let port = free_port();
    let server = start_server(
        None,
        "0.0.0.0",
        port,
        &["--accepts", "2", "--close-delay-ms", "0"],
    );
    // Connected now; it sends and closes only once the tracer runs (a guest may take
    // seconds to attach).
    let mut early = start_client(None, "127.0.0.1", port, &["--send-on-stdin"]);
    let early_port = early.connect_ok();
    // The socket table is read right after the hooks are attached.
    let t = Tracer::on_port_learned(port, &["--json", "--view", "all"]);
    early.write_stdin("go\n");
    let late = start_client(None, "127.0.0.1", port, &[]);
    let (spid, epid, lpid) = (server.pid as u64, early.pid as u64, late.pid as u64);
    all_exit_ok([late, early, server]);
    let lines = t.finish();
    let all = conns(&lines);
    let client = all
        .iter()
        .find(|c| c["sport"] == early_port)
        .unwrap_or_else(|| panic!("no record of the early client: {all:#?}"));
    assert_eq!(client["role"], "client", "{client}");
    assert_eq!(client["seen_at_start"], true, "{client}");
    assert_eq!(client["open_before_start"], true, "{client}");
    assert_eq!(client["pid"], epid, "{client}");
    assert_eq!(client["daddr"], "127.0.0.1", "{client}");
    let child = all
        .iter()
        .find(|c| c["dport"] == early_port && c["sport"] == port)
        .unwrap_or_else(|| panic!("no record of the early server end: {all:#?}"));
    assert_eq!(child["role"], "server", "{child}");
    assert_eq!(child["seen_at_start"], true, "{child}");
    assert_eq!(child["pid"], spid, "{child}");
    // The late connection's child: owned by the pre-existing listener's process from
    // its first event on.
    let evs = events(&lines);
    let born = evs
        .iter()
        .find(|e| {
            e["kind"] == "transition"
                && e["old"] == "LISTEN"
                && e["new"] == "SYN_RECV"
                && e["sport"] == port
        })
        .unwrap_or_else(|| panic!("no child born after the start: {evs:#?}"));
    assert_eq!(born["pid"], spid, "{born}");
    assert_eq!(born["owner_from_listener"], true, "{born}");
    let late_client = all
        .iter()
        .find(|c| c["role"] == "client" && c["pid"] == lpid)
        .expect("late client");
    assert_eq!(late_client["seen_at_start"], false);
}

/// Records wildcard and dual-stack traffic with `tcp-trace record` and checks its
/// replay: the replay fixtures of other kernels come from here (in a guest of
/// `cargo xtask vm-test` the recording is left in `$TCP_TRACE_VM_OUT`, which the host
/// saves as target/vm/<release>/out/wildcard-<release>.ttr; copied into
/// tests/fixtures/recordings/ it becomes a replay test that needs no root).
#[test]
fn record_wildcard_traffic_for_replay() {
    if !require_root("record_wildcard_traffic_for_replay") {
        return;
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let dir = std::env::var_os("TCP_TRACE_VM_OUT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let file = dir.join(format!("wildcard-{}.ttr", release.trim()));
    let ns = Netns::new("rec");
    let port = free_port();
    let ps = port.to_string();
    let mut record = std::process::Command::new(TRACER);
    record.args(["record", "-o"]).arg(&file).args(["-P", &ps]);
    traced_cmd(&mut record, |_| {
        // 0.0.0.0 with three IPv4 clients, then [::] with an IPv4 and an IPv6 client.
        for (listen, clients) in [
            ("0.0.0.0", &["127.0.0.1"; 3][..]),
            ("::", &["127.0.0.1", "::1"][..]),
        ] {
            let n = clients.len().to_string();
            let accepts = ["--accepts", &n, "--close-delay-ms", "0"];
            let server = start_server(Some(&ns), listen, port, &accepts);
            for c in clients {
                run_client(Some(&ns), c, port, &[]);
            }
            server.exits_ok();
        }
    });
    let lines = replay_file(&file, &["--json", "--view", "conns"])
        .ok()
        .json();
    assert_recorded_wildcard(&lines, Some(port), "recorded here");
    if std::env::var_os("TCP_TRACE_VM_OUT").is_none() {
        let _ = std::fs::remove_file(&file);
    }
}
