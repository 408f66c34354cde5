//! Correlator tests on synthetic event sequences.
use super::testutil::*;
use super::*;
use crate::decode::TcpState::*;

fn names(c: &Connection) -> Vec<&'static str> {
    c.states.iter().map(|e| e.state.name()).collect()
}

fn by_role(conns: &[Connection], role: Role) -> Vec<&Connection> {
    conns.iter().filter(|c| c.role == role).collect()
}

fn one(conns: &[Connection], role: Role) -> &Connection {
    let v = by_role(conns, role);
    assert_eq!(v.len(), 1, "{role:?}: {conns:#?}");
    v[0]
}

#[test]
fn blocking_connect_design_sequence() {
    let conns = run(&design_sequence());
    assert_eq!(conns.len(), 3);
    let c = one(&conns, Role::Client);
    let s = one(&conns, Role::Server);
    let l = one(&conns, Role::Listener);
    assert_eq!((l.id, c.id, s.id), (1, 2, 3));

    // Client: exact states and times.
    let t = T0 + 10 * MS;
    let want = vec![
        (Close, t),
        (SynSent, t),
        (Established, t + 41 * US),
        (FinWait1, T0 + 12 * MS),
        (FinWait2, T0 + 52 * MS + 15 * US),
        (Close, T0 + 52 * MS + 16 * US),
    ];
    let got: Vec<_> = c.states.iter().map(|e| (e.state, e.t_ns)).collect();
    assert_eq!(got, want);
    assert_eq!(c.pid, Some(4242));
    assert_eq!(c.comm.map(|c| c.to_string()).as_deref(), Some("curl"));
    assert_eq!(c.pid_source, PidSource::Syscall);
    assert_eq!(
        (c.saddr.unwrap().to_string(), c.sport, c.dport),
        ("127.0.0.1".into(), 51234, 8080)
    );
    let cr = c.connect.unwrap();
    assert_eq!((cr.ret, cr.errno, cr.t_ns), (0, None, t + 50 * US));
    assert_eq!(c.ret, Some(0));
    assert_eq!(c.connect_return_ns, Some(t + 50 * US));
    assert_eq!(c.handshake_ns, Some(41 * US));
    assert_eq!(c.connect_latency_ns, Some(50 * US));
    // C13: connect() returns after the client reached ESTABLISHED (2nd step).
    assert_eq!(c.connect_after_established_ns, Some(9_000));
    assert!(c.time_wait && c.active_close && c.established);
    assert_eq!(c.time_wait_t_ns, Some(T0 + 52 * MS + 16 * US));
    assert_eq!(c.fin_wait2_ns, Some(US));
    assert_eq!(c.close_wait_ns, None);
    assert_eq!(c.lifetime_ns, Some(42 * MS + 16 * US));
    assert_eq!(c.outcome, Outcome::Closed);
    assert!(!c.open && !c.open_before_start && !c.evicted);
    assert_eq!(c.peer, Some(s.id));
    assert_eq!(c.accept, None);

    // Server child.
    assert_eq!(
        names(s),
        [
            "LISTEN",
            "SYN_RECV",
            "ESTABLISHED",
            "CLOSE_WAIT",
            "LAST_ACK",
            "CLOSE"
        ]
    );
    assert_eq!(s.pid, Some(17));
    assert_eq!(s.pid_source, PidSource::Syscall);
    let ar = s.accept.unwrap();
    assert_eq!((ar.ret, ar.fd, ar.accept4), (5, 6, true));
    assert_eq!(s.ret, Some(5));
    assert_eq!(s.accept_return_ns, Some(t + 90 * US));
    assert_eq!(s.handshake_ns, Some(US));
    // C13: accept() returns only after the server's ESTABLISHED (3rd step).
    assert_eq!(s.accept_wait_ns, Some(45 * US as i64));
    assert_eq!(s.close_wait_ns, Some(40 * MS - 20 * US));
    assert!(!s.time_wait && !s.active_close);
    assert_eq!(s.outcome, Outcome::Closed);
    assert_eq!(s.listener_id, Some(l.id));
    assert_eq!(s.peer, Some(c.id));
    assert_eq!(s.connect, None);

    // Listener.
    let info = l.listener.as_ref().unwrap();
    assert_eq!((info.children, info.accepted), (1, 1));
    assert!(info.half_open_requests.is_empty());
    assert_eq!(names(l), ["CLOSE", "LISTEN", "CLOSE"]);
    assert_eq!(l.outcome, Outcome::Closed);
    assert_eq!(l.synack_retransmits, 0);
}

#[test]
fn non_blocking_connect_einprogress() {
    let t = T0;
    let mut ev = client_open(t, CLIENT, "127.0.0.1:40000", SV);
    ev.insert(
        1,
        Ev::connect(t + 5 * US, CLIENT, 3, -115)
            .owner(4242, "curl")
            .ev(),
    );
    let conns = run(&ev);
    let c = one(&conns, Role::Client);
    let r = c.connect.unwrap();
    assert_eq!((r.ret, r.errno), (-115, Some("EINPROGRESS")));
    // Non-blocking: the latency runs until ESTABLISHED, not to the syscall's return.
    assert!(c.connect_nonblocking);
    assert_eq!(c.connect_latency_ns, Some(41 * US));
    assert_eq!(c.connect_after_established_ns, Some(-36_000));
    assert!(c.open && c.established);
    assert_eq!(c.outcome, Outcome::Open);
    assert_eq!(c.lifetime_ns, None);
}

#[test]
fn a_return_reported_twice_counts_once() {
    // A book and the syscall's exit may both report one connect() return (the exit
    // could not tell whether a flush on another CPU had read it): one call, not two.
    // A second call (EALREADY) with its own time is still a call.
    let t = T0;
    let mut ev = client_open(t, CLIENT, "127.0.0.1:40000", SV);
    let ret = Ev::connect(t + 5 * US, CLIENT, 3, -115)
        .owner(4242, "curl")
        .ev();
    ev.insert(1, ret);
    ev.insert(2, ret);
    ev.insert(
        3,
        Ev::connect(t + 7 * US, CLIENT, 3, -114)
            .owner(4242, "curl")
            .ev(),
    );
    let conns = run(&ev);
    let c = one(&conns, Role::Client);
    let calls: Vec<_> = c.connect_calls.iter().map(|r| (r.t_ns, r.ret)).collect();
    assert_eq!(calls, [(t + 5 * US, -115), (t + 7 * US, -114)]);
}

#[test]
fn refused_connect() {
    let t = T0;
    let ev = [
        Ev::tr(t, CLIENT, Close, SynSent)
            .tuple("127.0.0.1:0", "127.0.0.1:9")
            .owner(5, "nc")
            .task()
            .ev(),
        Ev::rst_recv(t + 20 * US, CLIENT)
            .tuple("127.0.0.1:40000", "127.0.0.1:9")
            .ev(),
        Ev::tr(t + 21 * US, CLIENT, SynSent, Close)
            .tuple("127.0.0.1:40000", "127.0.0.1:9")
            .ev(),
        Ev::connect(t + 30 * US, CLIENT, 3, -111)
            .owner(5, "nc")
            .ev(),
    ];
    let conns = run(&ev);
    assert_eq!(conns.len(), 1);
    let c = &conns[0];
    assert_eq!(names(c), ["CLOSE", "SYN_SENT", "CLOSE"]);
    assert_eq!(c.resets_received, 1);
    assert_eq!(c.reset_received_ts_ns, [t + 20 * US]);
    assert_eq!(c.ret, Some(-111));
    assert_eq!(c.connect.unwrap().errno, Some("ECONNREFUSED"));
    assert_eq!(c.outcome, Outcome::Refused);
    assert!(!c.established && !c.open && !c.time_wait && !c.active_close);
    assert_eq!(c.handshake_ns, None);
    assert_eq!(c.connect_latency_ns, Some(30 * US));
    assert_eq!(c.lifetime_ns, Some(21 * US));
}

#[test]
fn closed_connection_is_emitted_after_linger_with_late_connect_return() {
    let t = T0;
    let mut corr = Correlator::new(Config::default());
    for e in [
        Ev::tr(t, CLIENT, Close, SynSent)
            .tuple("127.0.0.1:0", "127.0.0.1:9")
            .ev(),
        Ev::rst_recv(t + 20 * US, CLIENT).ev(),
        Ev::tr(t + 21 * US, CLIENT, SynSent, Close).ev(),
        Ev::connect(t + 2 * MS, CLIENT, 3, -111).ev(),
    ] {
        corr.push(e);
    }
    let mut out = Vec::new();
    corr.drain_finished(&mut out);
    assert!(out.is_empty());
    // Something unrelated, much later: the refused connection is due.
    corr.push(Ev::tr(t + 500 * MS, 0x99, Close, Listen).ev());
    corr.drain_finished(&mut out);
    assert_eq!(out.len(), 1, "{out:#?}");
    assert_eq!(out[0].ret, Some(-111));
    assert_eq!(out[0].outcome, Outcome::Refused);
    let rest = corr.flush();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].role, Role::Listener);
    assert!(rest[0].open);
}

#[test]
fn syn_timeout() {
    let t = T0;
    let remote = "10.9.9.9:80";
    let ev = [
        Ev::tr(t, CLIENT, Close, SynSent)
            .tuple("10.0.0.1:0", remote)
            .owner(5, "curl")
            .task()
            .ev(),
        Ev::retx(t + 1_000 * MS, CLIENT, SynSent)
            .tuple("10.0.0.1:40000", remote)
            .ev(),
        Ev::retx(t + 3_000 * MS, CLIENT, SynSent)
            .tuple("10.0.0.1:40000", remote)
            .ev(),
        Ev::tr(t + 7_000 * MS, CLIENT, SynSent, Close)
            .tuple("10.0.0.1:40000", remote)
            .ev(),
        Ev::connect(t + 7_000 * MS + 10 * US, CLIENT, 3, -110)
            .owner(5, "curl")
            .ev(),
    ];
    let conns = run(&ev);
    assert_eq!(conns.len(), 1);
    let c = &conns[0];
    assert_eq!(c.syn_retransmits, 2);
    assert_eq!(c.syn_retransmit_ts_ns, [t + 1_000 * MS, t + 3_000 * MS]);
    assert_eq!(c.retransmits, 0);
    assert_eq!(c.ret, Some(-110));
    assert_eq!(c.connect.unwrap().errno, Some("ETIMEDOUT"));
    assert_eq!(c.outcome, Outcome::TimedOut);
    assert_eq!(c.sport, 40000);

    // Without the connect() return (non-blocking connect), still a timeout.
    let conns = run(&ev[..4]);
    assert_eq!(conns[0].outcome, Outcome::TimedOut);
    assert_eq!(conns[0].ret, None);
}

#[test]
fn server_child_accept4_and_accept_wait() {
    let cl = "127.0.0.1:40000";
    let mut ev = vec![listen(T0, LISTENER, "0.0.0.0:8080")];
    ev.extend(child_open(T0 + MS, CHILD, SV, cl));
    // accept(fd, NULL, NULL): the kernel side found the socket by walking the fd table.
    ev.push(
        Ev::accept(T0 + 3 * MS, CHILD, 6, 9)
            .tuple(SV, cl)
            .owner(17, "nginx")
            .ev(),
    );
    let conns = run(&ev);
    let s = one(&conns, Role::Server);
    assert_eq!(s.accept_wait_ns, Some((2 * MS - US) as i64));
    assert_eq!(s.accept.unwrap().ret, 9);
    assert_eq!(s.pid_source, PidSource::Syscall);
    assert!(s.open);
    let l = one(&conns, Role::Listener);
    assert_eq!(l.listener.as_ref().unwrap().accepted, 1);
    assert_eq!(s.listener_id, Some(l.id));
}

#[test]
fn softirq_context_pid_never_used() {
    let cl = "127.0.0.1:40000";
    let mut ev = vec![listen(T0, LISTENER, "0.0.0.0:8080")];
    ev.push(
        Ev::tr(T0 + MS, CHILD, Listen, SynRecv)
            .tuple(SV, cl)
            .softirq(999)
            .ev(),
    );
    ev.push(
        Ev::tr(T0 + MS + 1, CHILD, SynRecv, Established)
            .tuple(SV, cl)
            .softirq(999)
            .ev(),
    );
    let conns = run(&ev);
    let s = one(&conns, Role::Server);
    // Learned from the listener, never from the softirq's context.
    assert_eq!(s.pid, Some(17));
    assert_eq!(s.pid_source, PidSource::Listener);

    // No listener known: no pid at all.
    let conns = run(&ev[1..]);
    assert_eq!(conns[0].pid, None);
    assert_eq!(conns[0].pid_source, PidSource::None);
}

#[test]
fn synack_retransmits_move_to_the_right_child() {
    let a = "127.0.0.1:40001";
    let b = "127.0.0.1:40002";
    let child_b = CHILD + 0x100;
    let mut ev = vec![listen(T0, LISTENER, "0.0.0.0:8080")];
    ev.push(
        Ev::synack(T0 + 1_000 * MS, LISTENER, 0xa1)
            .tuple(SV, a)
            .ev(),
    );
    ev.push(
        Ev::synack(T0 + 3_000 * MS, LISTENER, 0xa1)
            .tuple(SV, a)
            .ev(),
    );
    ev.extend(child_open(T0 + 3_000 * MS + 30 * US, CHILD, SV, a));
    ev.extend(child_open(T0 + 3_500 * MS, child_b, SV, b));
    ev.push(
        Ev::tr(T0 + 9_000 * MS, LISTENER, Listen, Close)
            .tuple("0.0.0.0:8080", "0.0.0.0:0")
            .ev(),
    );
    let conns = run(&ev);
    let servers = by_role(&conns, Role::Server);
    assert_eq!(servers.len(), 2);
    let sa = servers.iter().find(|c| c.skaddr == CHILD).unwrap();
    let sb = servers.iter().find(|c| c.skaddr == child_b).unwrap();
    assert_eq!(sa.synack_retransmits, 2);
    assert_eq!(
        sa.synack_retransmit_ts_ns,
        [T0 + 1_000 * MS, T0 + 3_000 * MS]
    );
    assert_eq!(sb.synack_retransmits, 0);
    let l = one(&conns, Role::Listener);
    assert_eq!(l.synack_retransmits, 0);
    let info = l.listener.as_ref().unwrap();
    assert_eq!(info.children, 2);
    assert!(info.half_open_requests.is_empty());
    assert_eq!(l.outcome, Outcome::Closed);
}

#[test]
fn half_open_request_stays_on_listener() {
    let c = "127.0.0.1:40003";
    let mut ev = vec![listen(T0, LISTENER, "0.0.0.0:8080")];
    for k in 0..3u64 {
        ev.push(
            Ev::synack(T0 + (1 + 2 * k) * 1_000 * MS, LISTENER, 0xb0)
                .tuple(SV, c)
                .softirq(3)
                .ev(),
        );
    }
    // Another request that did complete.
    ev.push(
        Ev::synack(T0 + 1_500 * MS, LISTENER, 0xb1)
            .tuple(SV, "127.0.0.1:40004")
            .ev(),
    );
    ev.extend(child_open(T0 + 1_600 * MS, CHILD, SV, "127.0.0.1:40004"));
    ev.push(
        Ev::tr(T0 + 20_000 * MS, LISTENER, Listen, Close)
            .tuple("0.0.0.0:8080", "0.0.0.0:0")
            .owner(17, "nginx")
            .task()
            .ev(),
    );
    let conns = run(&ev);
    let l = one(&conns, Role::Listener);
    assert_eq!(l.synack_retransmits, 3);
    let info = l.listener.as_ref().unwrap();
    assert_eq!(info.children, 1);
    assert_eq!(info.half_open_requests.len(), 1);
    let r = &info.half_open_requests[0];
    assert_eq!((r.req, r.sport, r.dport), (0xb0, 8080, 40003));
    assert_eq!(r.synack_retransmits, 3);
    assert_eq!(r.synack_retransmit_ts_ns.len(), 3);
    let s = one(&conns, Role::Server);
    assert_eq!(s.synack_retransmits, 1);

    // Listener started before the tracer: created from the SYN-ACK retransmit.
    let conns = run(&ev[1..4]);
    assert_eq!(conns.len(), 1);
    let l = &conns[0];
    assert_eq!(l.role, Role::Listener);
    assert!(l.open_before_start && l.open);
    assert_eq!(l.listener.as_ref().unwrap().half_open_requests.len(), 1);
    assert_eq!(l.synack_retransmits, 3);
}

#[test]
fn simultaneous_close_via_closing() {
    let cl = "127.0.0.1:40000";
    let mut ev = vec![listen(T0, LISTENER, "0.0.0.0:8080")];
    ev.extend(client_open(T0 + MS, CLIENT, cl, SV));
    ev.extend(child_open(T0 + MS + 50 * US, CHILD, SV, cl));
    let t = T0 + 10 * MS;
    ev.extend([
        Ev::tr(t, CLIENT, Established, FinWait1)
            .tuple(cl, SV)
            .task()
            .ev(),
        Ev::tr(t + 2 * US, CHILD, Established, FinWait1)
            .tuple(SV, cl)
            .owner(17, "nginx")
            .task()
            .ev(),
        Ev::tr(t + 5 * US, CLIENT, FinWait1, Closing)
            .tuple(cl, SV)
            .ev(),
        Ev::tr(t + 6 * US, CHILD, FinWait1, Closing)
            .tuple(SV, cl)
            .ev(),
        Ev::tr(t + 9 * US, CLIENT, Closing, Close)
            .tuple(cl, SV)
            .ev(),
        Ev::tr(t + 10 * US, CHILD, Closing, Close)
            .tuple(SV, cl)
            .ev(),
    ]);
    let conns = run(&ev);
    let c = one(&conns, Role::Client);
    let s = one(&conns, Role::Server);
    for x in [c, s] {
        assert!(x.time_wait, "{x:#?}");
        assert!(x.active_close);
        assert_eq!(x.outcome, Outcome::Closed);
        assert_eq!(x.fin_wait2_ns, None);
    }
    assert_eq!(c.time_wait_t_ns, Some(t + 9 * US));
    assert_eq!(s.time_wait_t_ns, Some(t + 10 * US));
    assert_eq!(c.peer, Some(s.id));
}

#[test]
fn rst_close() {
    let cl = "127.0.0.1:40000";
    let mut ev = vec![listen(T0, LISTENER, "0.0.0.0:8080")];
    ev.extend(client_open(T0 + MS, CLIENT, cl, SV));
    ev.extend(child_open(T0 + MS + 50 * US, CHILD, SV, cl));
    let t = T0 + 10 * MS;
    ev.extend([
        // close() with SO_LINGER 0: CLOSE first, then the reset.
        Ev::tr(t, CLIENT, Established, Close)
            .tuple(cl, SV)
            .owner(4242, "curl")
            .task()
            .ev(),
        Ev::rst_sent(t + US, CLIENT).tuple(cl, SV).ev(),
        Ev::rst_recv(t + 10 * US, CHILD).tuple(SV, cl).ev(),
        Ev::tr(t + 11 * US, CHILD, Established, Close)
            .tuple(SV, cl)
            .ev(),
    ]);
    let conns = run(&ev);
    let c = one(&conns, Role::Client);
    let s = one(&conns, Role::Server);
    assert_eq!((c.resets_sent, c.resets_received), (1, 0));
    assert_eq!((s.resets_sent, s.resets_received), (0, 1));
    for x in [c, s] {
        assert_eq!(x.outcome, Outcome::Reset);
        assert!(!x.time_wait && !x.active_close && !x.open);
        assert_eq!(names(x).last(), Some(&"CLOSE"));
    }
}

#[test]
fn reset_in_fin_wait2_is_not_time_wait() {
    let cl = "127.0.0.1:40000";
    let mut ev = client_open(T0, CLIENT, cl, SV);
    ev.extend([
        Ev::tr(T0 + MS, CLIENT, Established, FinWait1).ev(),
        Ev::tr(T0 + 2 * MS, CLIENT, FinWait1, FinWait2).ev(),
        Ev::rst_recv(T0 + 3 * MS, CLIENT).ev(),
        Ev::tr(T0 + 3 * MS + 1, CLIENT, FinWait2, Close).ev(),
    ]);
    let conns = run(&ev);
    assert!(!conns[0].time_wait);
    assert_eq!(conns[0].outcome, Outcome::Reset);
}

#[test]
fn passive_close_close_wait() {
    let cl = "127.0.0.1:40000";
    let mut ev = child_open(T0, CHILD, SV, cl);
    ev.extend([
        Ev::tr(T0 + MS, CHILD, Established, CloseWait).ev(),
        Ev::tr(T0 + 41 * MS, CHILD, CloseWait, LastAck)
            .owner(17, "nginx")
            .task()
            .ev(),
        Ev::tr(T0 + 41 * MS + 30 * US, CHILD, LastAck, Close).ev(),
    ]);
    let conns = run(&ev);
    let s = &conns[0];
    assert_eq!(s.role, Role::Server);
    assert_eq!(s.close_wait_ns, Some(40 * MS));
    assert!(!s.active_close && !s.time_wait);
    assert_eq!(s.outcome, Outcome::Closed);
    assert_eq!(s.lifetime_ns, Some(41 * MS + 30 * US));
    assert_eq!(s.pid, Some(17));
    assert_eq!(s.pid_source, PidSource::Owner);
}

#[test]
fn ipv6_pairing() {
    let cl = "[::1]:40000";
    let sv = "[::1]:8080";
    let mut ev = vec![listen(T0, LISTENER, "[::]:8080")];
    ev.extend(client_open(T0 + MS, CLIENT, cl, sv));
    ev.extend(child_open(T0 + MS + 50 * US, CHILD, sv, cl));
    let conns = run(&ev);
    let c = one(&conns, Role::Client);
    let s = one(&conns, Role::Server);
    assert_eq!(c.family, Family::Inet6);
    assert_eq!(c.peer, Some(s.id));
    assert_eq!(s.listener_id, Some(1));
    let j = serde_json::to_value(c).unwrap();
    assert_eq!(j["family"], "ipv6");
    assert_eq!(j["saddr"], "::1");
    assert_eq!(j["daddr"], "::1");
    assert_eq!(j["sport"], 40000);
}

#[test]
fn v4_mapped_child_pairs_with_v4_client() {
    let cl = "127.0.0.1:40000";
    let mut ev = vec![listen(T0, LISTENER, "[::]:8080")];
    ev.extend(client_open(T0 + MS, CLIENT, cl, SV));
    ev.extend(child_open(
        T0 + MS + 50 * US,
        CHILD,
        "[::ffff:127.0.0.1]:8080",
        "[::ffff:127.0.0.1]:40000",
    ));
    let conns = run(&ev);
    let c = one(&conns, Role::Client);
    let s = one(&conns, Role::Server);
    assert_eq!(c.peer, Some(s.id));
    assert_eq!(s.listener_id, Some(1));
}

#[test]
fn address_reuse_two_connections() {
    let cl = "127.0.0.1:40000";
    let mut ev = client_open(T0, CLIENT, cl, SV);
    ev.extend([
        Ev::tr(T0 + MS, CLIENT, Established, FinWait1).ev(),
        Ev::tr(T0 + 2 * MS, CLIENT, FinWait1, FinWait2).ev(),
        Ev::tr(T0 + 2 * MS + 5, CLIENT, FinWait2, Close).ev(),
    ]);
    // Same kernel address, a new socket 1 ms later.
    ev.extend(client_open(T0 + 3 * MS, CLIENT, "127.0.0.1:40001", SV));
    ev.push(
        Ev::connect(T0 + 3 * MS + 50 * US, CLIENT, 4, 0)
            .owner(4242, "curl")
            .ev(),
    );
    let conns = run(&ev);
    assert_eq!(conns.len(), 2);
    let (a, b) = (&conns[0], &conns[1]);
    assert_ne!(a.id, b.id);
    assert_eq!(a.skaddr, b.skaddr);
    assert_eq!(a.sport, 40000);
    assert_eq!(b.sport, 40001);
    assert!(!a.open && a.time_wait);
    assert!(b.open);
    assert_eq!(a.connect, None);
    assert_eq!(b.connect.unwrap().ret, 0);
    assert_eq!(names(b), ["CLOSE", "SYN_SENT", "ESTABLISHED"]);
}

#[test]
fn reuse_without_close_is_superseded() {
    let mut ev = client_open(T0, CLIENT, "127.0.0.1:40000", SV);
    ev.extend(client_open(T0 + MS, CLIENT, "127.0.0.1:40001", SV));
    let mut corr = Correlator::new(Config::default());
    for e in ev {
        corr.push(e);
    }
    let conns = corr.flush();
    assert_eq!(conns.len(), 2);
    assert!(conns[0].open);
    assert_eq!(corr.stats().superseded, 1);
}

#[test]
fn eviction_under_a_cap_of_two() {
    let cfg = Config {
        max_sockets: 2,
        reorder_window_ns: 0,
    };
    let mut corr = Correlator::new(cfg);
    let mut out = Vec::new();
    for k in 0..3u64 {
        corr.push(
            Ev::tr(T0 + k * MS, 0x100 + k, Close, SynSent)
                .tuple("127.0.0.1:0", SV)
                .ev(),
        );
    }
    // Touch the second so the first stays least recently updated.
    corr.drain_finished(&mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].skaddr, 0x100);
    assert!(out[0].evicted && out[0].open);
    assert_eq!(out[0].outcome, Outcome::Evicted);
    assert_eq!(corr.evicted(), 1);
    assert_eq!(corr.stats().tracked_sockets, 2);

    // LRU, not FIFO: update 0x101, then a new socket evicts 0x102.
    corr.push(Ev::retx(T0 + 10 * MS, 0x101, SynSent).ev());
    corr.push(
        Ev::tr(T0 + 11 * MS, 0x200, Close, SynSent)
            .tuple("127.0.0.1:0", SV)
            .ev(),
    );
    out.clear();
    corr.drain_finished(&mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].skaddr, 0x102);
    assert_eq!(corr.evicted(), 2);
    let rest = corr.flush();
    assert_eq!(
        rest.iter().map(|c| c.skaddr).collect::<Vec<_>>(),
        [0x101, 0x200]
    );
    assert!(rest.iter().all(|c| c.open && !c.evicted));
}

#[test]
fn out_of_order_within_window() {
    let ordered = design_sequence();
    // Neighbours a few µs apart swapped (as from two CPUs); the accept return and the
    // server's CLOSE_WAIT arrive ~2 ms before the client's FIN_WAIT1.
    let order = [0, 1, 3, 2, 5, 4, 8, 6, 7, 9, 12, 11, 10, 13];
    let shuffled: Vec<Event> = order.iter().map(|&i| ordered[i]).collect();
    assert_ne!(shuffled, ordered);

    let a = run(&ordered);
    let mut corr = Correlator::new(Config::default());
    for e in &shuffled {
        corr.push(*e);
    }
    let mut b = corr.flush();
    b.sort_by_key(|c| c.id);
    assert_eq!(a, b);
    assert_eq!(corr.stats().late_events, 0);
    assert_eq!(corr.stats().events, 14);
    assert_eq!(corr.stats().applied, 14);
}

#[test]
fn late_beyond_window_is_counted() {
    let cfg = Config {
        max_sockets: 16,
        reorder_window_ns: MS,
    };
    let mut corr = Correlator::new(cfg);
    corr.push(Ev::tr(T0 + 10 * MS, 1, Close, SynSent).ev());
    corr.push(Ev::tr(T0 + 20 * MS, 2, Close, SynSent).ev());
    corr.push(Ev::tr(T0, 3, Close, SynSent).ev());
    assert_eq!(corr.stats().late_events, 1);
    assert_eq!(corr.stats().buffered_events, 1);
    assert_eq!(corr.flush().len(), 3);
}

#[test]
fn both_ends_pairing_and_conversations() {
    let conns = run(&design_sequence());
    let c = one(&conns, Role::Client);
    let s = one(&conns, Role::Server);
    assert_eq!((c.peer, s.peer), (Some(s.id), Some(c.id)));
    let convs = conversations(conns.clone());
    assert_eq!(convs.len(), 1);
    assert_eq!(convs[0].client.as_ref().unwrap().id, c.id);
    assert_eq!(convs[0].server.as_ref().unwrap().id, s.id);

    // Streaming: the client is emitted first and waits for its peer.
    let mut j = ConversationJoiner::default();
    assert!(j.push(conns[0].clone()).is_none()); // listener
    assert!(j.push(c.clone()).is_none());
    assert_eq!(j.len(), 1);
    let conv = j.push(s.clone()).unwrap();
    assert_eq!(conv.client.unwrap().id, c.id);
    assert!(j.is_empty());

    // Unrelated connections on the same ports but not mirrored are not linked.
    let mut ev = client_open(T0, CLIENT, "127.0.0.1:40000", SV);
    ev.extend(child_open(T0 + MS, CHILD, SV, "127.0.0.1:40001"));
    let conns = run(&ev);
    assert!(conns.iter().all(|c| c.peer.is_none()));
    assert_eq!(conversations(conns).len(), 2);
}

#[test]
fn reset_without_socket_matched_by_tuple_or_orphan() {
    let cl = "127.0.0.1:40000";
    let mut ev = client_open(T0, CLIENT, cl, SV);
    ev.push(Ev::rst_recv(T0 + MS, 0).tuple(cl, SV).ev());
    ev.push(Ev::rst_sent(T0 + 2 * MS, 0).tuple("127.0.0.1:9", cl).ev());
    let mut corr = Correlator::new(Config::default());
    for e in ev {
        corr.push(e);
    }
    let conns = corr.flush();
    assert_eq!(conns.len(), 1);
    assert_eq!(conns[0].resets_received, 1);
    assert_eq!(conns[0].resets_sent, 0);
    assert_eq!(corr.stats().orphan_events, 1);
}

#[test]
fn first_seen_mid_life() {
    let ev = [
        Ev::retx(T0, CLIENT, Established)
            .tuple("127.0.0.1:40000", "127.0.0.1:22")
            .ev(),
        Ev::tr(T0 + MS, CLIENT, Established, FinWait1)
            .owner(8, "ssh")
            .task()
            .ev(),
        Ev::tr(T0 + 2 * MS, CLIENT, FinWait1, FinWait2).ev(),
        Ev::tr(T0 + 3 * MS, CLIENT, FinWait2, Close).ev(),
    ];
    let conns = run(&ev);
    let c = &conns[0];
    assert!(c.open_before_start && !c.open);
    assert_eq!(c.role, Role::Unknown);
    assert_eq!(c.lifetime_ns, None);
    assert_eq!(c.retransmits, 1);
    assert!(c.time_wait && c.active_close);
    assert_eq!(names(c), ["ESTABLISHED", "FIN_WAIT1", "FIN_WAIT2", "CLOSE"]);
    assert_eq!(c.pid, Some(8));
}

#[test]
fn fin_retransmits_and_failed_accept() {
    let cl = "127.0.0.1:40000";
    let mut ev = client_open(T0, CLIENT, cl, SV);
    ev.extend([
        Ev::retx(T0 + MS, CLIENT, Established).ev(),
        Ev::tr(T0 + 2 * MS, CLIENT, Established, FinWait1).ev(),
        Ev::retx(T0 + 300 * MS, CLIENT, FinWait1).ev(),
        Ev::accept(T0 + 301 * MS, 0, 3, -11).ev(),
    ]);
    let mut corr = Correlator::new(Config::default());
    for e in ev {
        corr.push(e);
    }
    let conns = corr.flush();
    assert_eq!(conns[0].retransmits, 2);
    assert_eq!(conns[0].fin_retransmits, 1);
    assert_eq!(corr.stats().failed_accepts, 1);
    assert_eq!(corr.stats().orphan_events, 0);
}

#[test]
fn json_field_names() {
    let conns = run(&design_sequence());
    let c = one(&conns, Role::Client);
    let j = serde_json::to_value(c).unwrap();
    for k in [
        "type",
        "role",
        "pid",
        "comm",
        "family",
        "saddr",
        "sport",
        "daddr",
        "dport",
        "states",
        "connect",
        "connect_return_ns",
        "accept",
        "accept_return_ns",
        "ret",
        "syn_retransmits",
        "synack_retransmits",
        "retransmits",
        "resets_sent",
        "resets_received",
        "time_wait",
        "active_close",
        "open",
        "open_before_start",
        "evicted",
        "handshake_ns",
        "connect_after_established_ns",
        "accept_wait_ns",
        "lifetime_ns",
        "fin_wait2_ns",
        "close_wait_ns",
        "first_ts_ns",
        "last_ts_ns",
        "skaddr",
        "peer",
        "id",
        "cgroup_id",
        "netns",
        "container_id",
        "container_runtime",
        "ns_pid",
    ] {
        assert!(j.get(k).is_some(), "missing {k}");
    }
    assert_eq!(j["type"], "connection");
    assert_eq!(j["role"], "client");
    assert_eq!(j["comm"], "curl");
    assert_eq!(j["family"], "ipv4");
    assert_eq!(j["saddr"], "127.0.0.1");
    assert_eq!(j["skaddr"], "0xffff888000002000");
    assert_eq!(j["states"][0]["state"], "CLOSE");
    assert_eq!(j["states"][1]["state"], "SYN_SENT");
    assert_eq!(j["states"][1]["t_ns"], 1_010_000_000u64);
    assert_eq!(j["connect"]["ret"], 0);
    assert!(j["connect"]["errno"].is_null());
    assert_eq!(j["outcome"], "closed");
    assert_eq!(j["time_wait"], true);
    assert!(j["accept"].is_null());
    assert!(j["listener"].is_null());
    assert_eq!(j["peer"], 3);
    assert_eq!(j["pid_source"], "syscall");

    let l = one(&conns, Role::Listener);
    let j = serde_json::to_value(l).unwrap();
    assert_eq!(j["role"], "listener");
    assert_eq!(j["listener"]["children"], 1);
    assert!(j["listener"]["half_open_requests"].is_array());

    // A comm with control bytes is escaped.
    let ev = [Ev::tr(T0, 7, Close, SynSent)
        .tuple("127.0.0.1:0", SV)
        .owner(1, "a\"b\x07")
        .task()
        .ev()];
    let j = serde_json::to_value(&run(&ev)[0]).unwrap();
    assert_eq!(j["comm"], "a\"b\\x07");
}

#[test]
fn errno_names() {
    assert_eq!(Connection::errno_name(-111), Some("ECONNREFUSED"));
    assert_eq!(Connection::errno_name(-115), Some("EINPROGRESS"));
    assert_eq!(Connection::errno_name(-110), Some("ETIMEDOUT"));
    assert_eq!(Connection::errno_name(-11), Some("EAGAIN"));
    assert_eq!(Connection::errno_name(-512), Some("ERESTARTSYS"));
    assert_eq!(Connection::errno_name(0), None);
    assert_eq!(Connection::errno_name(5), None);
    assert_eq!(Connection::errno_name(-4095), None);
}

#[test]
fn deterministic_output() {
    let mut ev = design_sequence();
    for k in 0..50u64 {
        ev.extend(client_open(
            T0 + 2_000 * MS + k * MS,
            0x5000 + k,
            &format!("127.0.0.1:{}", 41000 + k),
            SV,
        ));
    }
    ev.sort_by_key(|e| e.ts_ns);
    let a = serde_json::to_string(&run(&ev)).unwrap();
    let b = serde_json::to_string(&run(&ev)).unwrap();
    assert_eq!(a, b);
}

// ---- TIME_WAIT vs. a handover in FIN_WAIT2 ----

#[test]
fn tw_a_client_first_peer_visible_enters_time_wait_at_the_close() {
    let conns = run(&design_sequence());
    let c = one(&conns, Role::Client);
    assert!(c.time_wait && c.time_wait_certain && !c.fin_wait2_handover);
    assert_eq!(c.time_wait_t_ns, Some(T0 + 52 * MS + 16 * US));
    let s = one(&conns, Role::Server);
    assert!(!s.time_wait && s.time_wait_certain && !s.fin_wait2_handover);
    // No hold: the server's FIN (LAST_ACK at 52 ms) came before the client's CLOSE, so
    // the client is emitted at the end of its linger, before the server.
    let mut corr = Correlator::default();
    let mut order = Vec::new();
    for e in design_sequence() {
        corr.push(e);
        order.extend(corr.finished().map(|c| c.role));
    }
    order.extend(corr.flush().into_iter().map(|c| c.role));
    assert_eq!(order, [Role::Client, Role::Server, Role::Listener]);
}

#[test]
fn tw_b_orphan_handover_then_time_wait_at_the_peers_fin() {
    // The client closes 500 ms later, well past the 100 ms linger: the server's
    // record waits for the client's.
    let (ev, tc) = server_first_orphan(Some(500 * MS));
    let tf = tc + 500 * MS;
    let mut corr = Correlator::default();
    let mut streamed = Vec::new();
    for e in &ev {
        corr.push(*e);
        streamed.extend(corr.finished());
    }
    // Time moves on past the client's linger.
    corr.push(
        Ev::tr(tf + 1_000 * MS, 0x99, Close, SynSent)
            .tuple("127.0.0.1:0", SV)
            .ev(),
    );
    streamed.extend(corr.finished());
    let roles: Vec<Role> = streamed.iter().map(|c| c.role).collect();
    assert_eq!(roles, [Role::Client, Role::Server], "held until the client");
    assert_eq!(corr.stats().tracked_sockets, 1, "only the listener is left");
    streamed.extend(corr.flush().into_iter().filter(|c| c.skaddr != 0x99));
    let s = one(&streamed, Role::Server);
    assert!(s.fin_wait2_handover && s.time_wait && s.time_wait_certain);
    assert_eq!(s.time_wait_t_ns, Some(tf));
    assert_eq!(s.outcome, Outcome::Closed);
    assert_eq!(
        s.fin_wait2_ns,
        Some(US),
        "of the full socket, until the handover"
    );
    let c = one(&streamed, Role::Client);
    assert!(!c.time_wait && !c.fin_wait2_handover && c.time_wait_certain);

    // What a summary counts for the server role (counted here: the correlator's
    // tests do not reach into the renderers).
    let servers = by_role(&streamed, Role::Server);
    let count = |f: &dyn Fn(&Connection) -> bool| servers.iter().filter(|c| f(c)).count();
    assert_eq!(
        (
            count(&|c| c.time_wait),
            count(&|c| c.fin_wait2_handover),
            count(&|c| c.time_wait && !c.time_wait_certain)
        ),
        (1, 1, 0)
    );

    // Same result in one batch.
    let conns = run(&ev);
    assert_eq!(one(&conns, Role::Server), s);
}

#[test]
fn tw_c_handover_without_the_peers_fin_is_not_time_wait() {
    // The client never closes while traced: at the end of the run the server's end is
    // still in FIN_WAIT2, held by a timewait socket.
    let (ev, _) = server_first_orphan(None);
    let conns = run(&ev);
    let s = one(&conns, Role::Server);
    assert!(s.fin_wait2_handover && !s.time_wait && s.time_wait_certain);
    assert_eq!(s.time_wait_t_ns, None);
    assert_eq!(s.outcome, Outcome::Closed);
    let c = one(&conns, Role::Client);
    assert!(c.open && !c.time_wait);

    // Streaming: the wait is bounded by the timewait socket's lifetime (here 1 s):
    // after it the FIN can no longer make it TIME_WAIT.
    let mut corr = Correlator::default().with_fin_wait2_hold_ns(1_000 * MS);
    let mut out = Vec::new();
    for e in &ev {
        corr.push(*e);
    }
    corr.push(
        Ev::tr(T0 + 3_000 * MS, 0x99, Close, SynSent)
            .tuple("127.0.0.1:0", SV)
            .ev(),
    );
    out.extend(corr.finished());
    assert_eq!(out.len(), 1, "{out:#?}");
    assert!(out[0].fin_wait2_handover && !out[0].time_wait && out[0].time_wait_certain);

    // The client's FIN answered by a reset: no socket took it, no TIME_WAIT.
    let (mut ev, tc) = server_first_orphan(Some(30 * MS));
    let last = ev.pop().unwrap();
    ev.push(
        Ev::rst_recv(tc + 30 * MS + 10 * US, CLIENT)
            .tuple("127.0.0.1:40100", SV)
            .ev(),
    );
    ev.push(last);
    let conns = run(&ev);
    let s = one(&conns, Role::Server);
    assert!(s.fin_wait2_handover && !s.time_wait && s.time_wait_certain);
    assert_eq!(s.time_wait_t_ns, None);

    // Memory pressure forces the record out before the peer tells: handover known, no
    // TIME_WAIT claimed, and marked uncertain.
    let (mut ev, _) = server_first_orphan(None);
    ev.retain(|e| e.skaddr != LISTENER);
    // The client is touched after the server closed: the held server is the LRU tail.
    ev.push(
        Ev::retx(T0 + 60 * MS, CLIENT, CloseWait)
            .tuple("127.0.0.1:40100", SV)
            .ev(),
    );
    let cfg = Config {
        max_sockets: 2,
        ..Config::default()
    };
    let mut corr = Correlator::new(cfg);
    for e in &ev {
        corr.push(*e);
    }
    corr.push(
        Ev::tr(T0 + 400 * MS, 0x99, Close, SynSent)
            .tuple("127.0.0.1:0", SV)
            .ev(),
    );
    corr.push(
        Ev::tr(T0 + 500 * MS, 0x98, Close, SynSent)
            .tuple("127.0.0.1:0", SV)
            .ev(),
    );
    let out: Vec<Connection> = corr.finished().collect();
    let s = one(&out, Role::Server);
    assert!(s.fin_wait2_handover && !s.time_wait && !s.time_wait_certain);
    assert!(!s.evicted, "it had closed");
}

#[test]
fn tw_d_three_segment_close_without_the_peer_is_assumed() {
    // docs/kernel-facts.md (the loopback connection, steps 9/10) seen from the client alone: FIN_WAIT1 → FIN_WAIT2 → CLOSE 1 µs
    // apart. The peer's FIN riding with the ACK of ours (TIME_WAIT) and an orphan's
    // pure ACK (handover in FIN_WAIT2) both look like this: TIME_WAIT is kept but not
    // certain, and no handover is claimed.
    let events: Vec<_> = design_sequence()
        .into_iter()
        .filter(|e| e.skaddr == CLIENT)
        .collect();
    let conns = run(&events);
    let c = &conns[0];
    assert!(c.time_wait && !c.time_wait_certain && !c.fin_wait2_handover);
    assert_eq!(c.time_wait_t_ns, Some(T0 + 52 * MS + 16 * US));
    // The orphan handover of (b), server alone, is indistinguishable: same answer.
    let (ev, tc) = server_first_orphan(None);
    let ev: Vec<_> = ev.into_iter().filter(|e| e.skaddr == CHILD).collect();
    let conns = run(&ev);
    let s = one(&conns, Role::Server);
    assert!(s.time_wait && !s.time_wait_certain && !s.fin_wait2_handover);
    assert_eq!(s.time_wait_t_ns, Some(tc));
    // CLOSING → CLOSE needs no peer: its FIN had come.
    let cl = "127.0.0.1:40200";
    let mut ev = client_open(T0, CLIENT, cl, SV);
    ev.extend([
        Ev::tr(T0 + MS, CLIENT, Established, FinWait1)
            .tuple(cl, SV)
            .task()
            .ev(),
        Ev::tr(T0 + MS + 5 * US, CLIENT, FinWait1, Closing)
            .tuple(cl, SV)
            .ev(),
        Ev::tr(T0 + MS + 9 * US, CLIENT, Closing, Close)
            .tuple(cl, SV)
            .ev(),
    ]);
    let c = &run(&ev)[0];
    assert!(c.time_wait && c.time_wait_certain && !c.fin_wait2_handover);
    let j = serde_json::to_value(c).unwrap();
    assert_eq!(j["fin_wait2_handover"], false);
    assert_eq!(j["time_wait_certain"], true);
    assert!(j["peer_request"].is_null());
}

#[test]
fn e_half_open_request_attached_to_the_client() {
    let conns = run(&half_open_client());
    let c = one(&conns, Role::Client);
    assert_eq!(c.peer, None);
    let r = c.peer_request.as_ref().expect("peer_request");
    assert_eq!((r.req, r.sport, r.dport), (0xc0, 8080, 40300));
    assert_eq!(
        r.synack_retransmit_ts_ns,
        [T0 + 1_001 * MS, T0 + 3_001 * MS]
    );
    assert_eq!(c.synack_retransmits, 0, "counted on the listener");
    let l = one(&conns, Role::Listener);
    assert_eq!(l.listener.as_ref().unwrap().half_open_requests.len(), 1);
    assert_eq!(l.synack_retransmits, 2);

    // Batch fallback: conversations() finds it on the listener.
    let mut bare = conns.clone();
    for c in &mut bare {
        c.peer_request = None;
    }
    let convs = conversations(bare);
    assert_eq!(convs.len(), 1);
    assert_eq!(
        convs[0].client.as_ref().unwrap().peer_request.as_ref(),
        Some(r)
    );

    // Not for a client whose tuple differs, nor outside its lifetime.
    let mut other = conns.clone();
    for c in &mut other {
        c.peer_request = None;
        if c.role == Role::Client {
            c.sport = 40301;
        }
    }
    assert!(
        conversations(other)[0]
            .client
            .as_ref()
            .unwrap()
            .peer_request
            .is_none()
    );
}

#[test]
fn connection_json_fields_print_as_display() {
    // saddr/daddr, skaddr and comm are written without core::fmt: same strings as
    // their Display (what serde's own IpAddr impl and `{:#x}` printed).
    use crate::decode::Comm;
    let addrs = [
        "127.0.0.1",
        "0.0.0.0",
        "255.255.255.255",
        "::",
        "::1",
        "::ffff:10.1.2.3",
        "fe80::1:0:0:0",
        "2001:db8:0:0:1:0:0:1",
        "2001:db8::ff00:42:8329",
    ];
    for (k, a) in addrs.iter().enumerate() {
        let ip: IpAddr = a.parse().unwrap();
        let mut c = Connection::new(
            k as u64,
            Role::Client,
            0xffff_8880_0000_2000 + k as u64,
            Family::Inet6,
            1,
        );
        c.saddr = Some(ip);
        c.daddr = (k % 2 == 0).then_some(ip);
        c.comm = Some(Comm(*b"a\"b\\c\x01\x7f\xff\xe9zzzzzz\0"));
        c.peer_request = Some(HalfOpenRequest {
            req: k as u64,
            saddr: ip,
            sport: 1,
            daddr: ip,
            dport: 2,
            synack_retransmits: 0,
            synack_retransmit_ts_ns: Vec::new(),
        });
        let j: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(j["saddr"], ip.to_string());
        assert_eq!(
            j["daddr"],
            if k % 2 == 0 {
                serde_json::json!(ip.to_string())
            } else {
                serde_json::Value::Null
            }
        );
        assert_eq!(j["skaddr"], format!("{:#x}", c.skaddr));
        assert_eq!(j["comm"], c.comm.unwrap().to_string());
        assert_eq!(j["peer_request"]["saddr"], ip.to_string());
        assert_eq!(j["peer_request"]["req"], format!("{k:#x}"));
        c.comm = None;
        c.saddr = None;
        let j = serde_json::to_value(&c).unwrap();
        assert!(j["comm"].is_null() && j["saddr"].is_null());
    }
}

/// The reorder buffer's contents, as the tags (`ctx_pid`) of the buffered events.
fn buffered_tags(corr: &Correlator) -> Vec<u32> {
    corr.queue.in_order().iter().map(|e| e.ctx_pid).collect()
}

/// An event that matches nothing (an orphan reset), tagged.
fn tagged(ts: u64, tag: u32) -> Event {
    Ev::rst_recv(ts, 0).softirq(tag).ev()
}

#[test]
fn equal_timestamps_keep_push_order() {
    let mut corr = Correlator::new(Config::default());
    for (ts, tag) in [(5, 1), (10, 2), (5, 3), (5, 4), (10, 5), (1, 6), (5, 7)] {
        corr.push(tagged(T0 + ts * US, tag));
    }
    assert_eq!(buffered_tags(&corr), [6, 1, 3, 4, 7, 2, 5]);
    // Applied in that order: one socket's transitions at the same time.
    let sk = 0x77;
    let evs = [
        Ev::tr(T0, sk, Close, SynSent).task().ev(),
        Ev::tr(T0, sk, SynSent, Established).ev(),
        Ev::tr(T0, sk, Established, FinWait1).ev(),
        Ev::tr(T0, sk, FinWait1, FinWait2).ev(),
        Ev::tr(T0, sk, FinWait2, Close).ev(),
    ];
    let c = &run(&evs)[0];
    let states: Vec<TcpState> = c.states.iter().map(|e| e.state).collect();
    assert_eq!(
        states,
        [Close, SynSent, Established, FinWait1, FinWait2, Close]
    );
}

#[test]
fn reorder_buffer_matches_a_heap_ordered_by_time_then_arrival() {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    // Pseudo-random arrival: mostly in order, some a little early or late (within the
    // window), some later than the window, many equal timestamps.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    for window in [0, MS, 20 * MS] {
        let mut corr = Correlator::new(Config {
            max_sockets: 16,
            reorder_window_ns: window,
        });
        // The correlator before the VecDeque: a min-heap of (ts, arrival).
        let mut heap = BinaryHeap::new();
        let (mut max_ts, mut last, mut late) = (0u64, 0u64, 0u64);
        let mut base = T0;
        let mut prev = T0;
        for tag in 0..20_000u32 {
            base += rnd(20 * US);
            let ts = match rnd(20) {
                0..=11 => base,
                12..=14 => prev,
                15..=17 => base.saturating_sub(rnd(window.max(1))),
                _ => base.saturating_sub(window + rnd(3 * window + 1)),
            };
            prev = ts;
            corr.push(tagged(ts, tag));
            max_ts = max_ts.max(ts);
            heap.push(Reverse((ts, tag)));
            while let Some(&Reverse((t, _))) = heap.peek() {
                if t.saturating_add(window) > max_ts {
                    break;
                }
                heap.pop();
                if t < last {
                    late += 1;
                } else {
                    last = t;
                }
            }
            let mut want: Vec<(u64, u32)> = heap.iter().map(|r| r.0).collect();
            want.sort_unstable();
            let want: Vec<u32> = want.iter().map(|w| w.1).collect();
            assert_eq!(buffered_tags(&corr), want, "window {window}, after {tag}");
            assert_eq!(
                corr.stats().late_events,
                late,
                "window {window}, after {tag}"
            );
        }
        assert!(late > 0 || window == 0);
        assert_eq!(
            corr.stats().applied + corr.stats().buffered_events as u64,
            20_000
        );
    }
}

// ---- servers as users run them (issue: wildcard, reuseport, namespaces) ----

/// Before 6.15 the child's first transition carries the wildcard listener's
/// addresses: the child still gets its own tuple, accept() return and peer.
#[test]
fn pre615_wildcard_child_gets_tuple_accept_and_peer() {
    let conns = run(&pre615_sequence());
    assert_eq!(conns.len(), 3, "{conns:#?}");
    let c = one(&conns, Role::Client);
    let s = one(&conns, Role::Server);
    let l = one(&conns, Role::Listener);
    assert_eq!(s.saddr.unwrap().to_string(), "127.0.0.1");
    assert_eq!((s.sport, s.dport), (8080, 51234));
    assert_eq!(s.accept.map(|a| a.ret), Some(5));
    assert_eq!(s.peer, Some(c.id));
    assert_eq!(c.peer, Some(s.id));
    assert_eq!(s.listener_id, Some(l.id));
    let info = l.listener.as_ref().unwrap();
    assert_eq!((info.children, info.accepted), (1, 1));
    assert_eq!(run(&pre615_sequence()), run(&design_sequence()));
}

/// Without the fix the child kept 0.0.0.0 and the accept return was an orphan.
#[test]
fn pre615_accept_is_not_orphaned() {
    let mut c = Correlator::default();
    for e in pre615_sequence() {
        c.push(e);
    }
    c.flush();
    assert_eq!(c.stats().orphan_events, 0);
}

/// A wildcard listener retransmits its SYN-ACK (the third ACK was lost): before 6.15
/// the child's request is found once SYN_RECV → ESTABLISHED gives the child's tuple.
#[test]
fn pre615_synack_retransmit_lands_on_the_child() {
    let cl = "127.0.0.1:40500";
    let mut ev = vec![listen(T0, LISTENER, "0.0.0.0:8080")];
    ev.extend(client_open(T0 + MS, CLIENT, cl, SV));
    ev.push(
        Ev::synack(T0 + 1_001 * MS, LISTENER, 0xc0)
            .tuple(SV, cl)
            .softirq(0)
            .ev(),
    );
    let mut child = child_open(T0 + 1_500 * MS, CHILD, SV, cl);
    child[0].local = Some(ep("0.0.0.0:8080"));
    child[0].remote = Some(ep("0.0.0.0:0"));
    ev.extend(child);
    let conns = run(&ev);
    let s = one(&conns, Role::Server);
    let l = one(&conns, Role::Listener);
    assert_eq!(s.synack_retransmits, 1, "{s:#?}");
    assert_eq!(s.saddr.unwrap().to_string(), "127.0.0.1");
    assert_eq!(l.synack_retransmits, 0);
    assert!(l.listener.as_ref().unwrap().half_open_requests.is_empty());
    assert_eq!(l.listener.as_ref().unwrap().children, 1);
}

/// The design sequence with every socket address shifted and a namespace set.
fn in_netns(ns: u32, shift: u64, dt: u64, pid_shift: u32) -> Vec<Event> {
    design_sequence()
        .into_iter()
        .map(|mut e| {
            e.netns = ns;
            e.skaddr += shift;
            e.ts_ns += dt;
            if let Some(o) = e.owner.as_mut() {
                o.pid += pid_shift;
                o.tid += pid_shift;
            }
            if e.task_ctx {
                e.ctx_pid += pid_shift;
            }
            e
        })
        .collect()
}

/// Two namespaces run the same connection (same addresses and ports) interleaved:
/// each end is paired with the end of its own namespace and never the other's.
#[test]
fn identical_tuples_in_two_namespaces_never_cross_pair() {
    let mut ev = in_netns(111, 0, 0, 0);
    ev.extend(in_netns(222, 0x100_0000, 1_000, 1_000));
    ev.sort_by_key(|e| e.ts_ns);
    let conns = run(&ev);
    assert_eq!(conns.len(), 6, "{conns:#?}");
    let ns_of = |id: u64| conns.iter().find(|c| c.id == id).unwrap().netns;
    for c in conns.iter().filter(|c| c.role != Role::Listener) {
        let peer = c.peer.unwrap_or_else(|| panic!("no peer: {c:#?}"));
        assert_eq!(ns_of(peer), c.netns, "cross-namespace pair: {c:#?}");
    }
    for c in conns.iter().filter(|c| c.role == Role::Server) {
        let l = conns.iter().find(|l| Some(l.id) == c.listener_id).unwrap();
        assert_eq!(l.netns, c.netns);
        assert_eq!(l.listener.as_ref().unwrap().children, 1);
    }
}

/// Ends in two namespaces joined by veth (not loopback) are paired when the mirrored
/// tuple is unique; over loopback they never are (loopback cannot leave a namespace).
#[test]
fn cross_namespace_pairs_only_off_loopback() {
    let build = |cl: &str, sv: &str| {
        let mut ev = client_open(T0, CLIENT, cl, sv);
        ev.extend(child_open(T0 + 20 * US, CHILD, sv, cl));
        for e in &mut ev {
            e.netns = if e.skaddr == CLIENT { 1 } else { 2 };
        }
        run(&ev)
    };
    let veth = build("10.0.0.1:40000", "10.0.0.2:80");
    assert!(veth.iter().all(|c| c.peer.is_some()), "{veth:#?}");
    let lo = build("127.0.0.1:40000", "127.0.0.1:80");
    assert!(lo.iter().all(|c| c.peer.is_none()), "{lo:#?}");
}

/// On an idle host the clock, not a next event, completes a closed connection.
#[test]
fn advance_emits_closed_connections_without_new_events() {
    let ev: Vec<Event> = design_sequence()
        .into_iter()
        .filter(|e| e.skaddr != LISTENER || e.ts_ns < T0 + 100 * MS)
        .collect();
    let last = ev.iter().map(|e| e.ts_ns).max().unwrap();
    let mut c = Correlator::default();
    let mut out = Vec::new();
    for e in &ev {
        c.push(*e);
        c.drain_finished(&mut out);
    }
    assert!(out.is_empty(), "nothing can be complete yet: {out:#?}");
    // Still inside the linger for late events: nothing yet.
    c.advance(last + 50 * MS);
    c.drain_finished(&mut out);
    assert!(out.is_empty());
    // Past the linger (100 ms) and the reorder window (20 ms).
    c.advance(last + 200 * MS);
    c.drain_finished(&mut out);
    let roles: Vec<Role> = out.iter().map(|c| c.role).collect();
    assert_eq!(roles.len(), 2, "{out:#?}");
    assert!(roles.contains(&Role::Client) && roles.contains(&Role::Server));
    // The clock going back changes nothing.
    c.advance(last);
    assert_eq!(c.stats().emitted, 2);
}

/// Second listener of an SO_REUSEPORT pair (pid 18; the first is `LISTENER`, pid 17).
const L2: u64 = LISTENER + 0x80;

/// `L2`'s listen() on 0.0.0.0:8080 by pid 18 (nginx).
fn l2_listens() -> Event {
    Ev::tr(T0 + US, L2, Close, Listen)
        .tuple("0.0.0.0:8080", "0.0.0.0:0")
        .owner(18, "nginx")
        .task()
        .ev()
}

/// Two processes listening on 0.0.0.0:8080 (SO_REUSEPORT) and a client from `cl`.
fn reuseport_pair_and_client(cl: &str) -> Vec<Event> {
    let mut ev = vec![listen(T0, LISTENER, "0.0.0.0:8080"), l2_listens()];
    ev.extend(client_open(T0 + MS, CLIENT, cl, SV));
    ev
}

/// SO_REUSEPORT: two processes listen on the same address and port. The child was
/// linked to the first listener by address and port; accept() by the second process
/// moves it to that process's listener.
#[test]
fn reuseport_child_moves_to_the_acceptors_listener() {
    let cl = "127.0.0.1:40600";
    let mut ev = reuseport_pair_and_client(cl);
    ev.extend(child_open(T0 + MS + 50 * US, CHILD, SV, cl));
    ev.push(
        Ev::accept(T0 + 2 * MS, CHILD, 6, 9)
            .tuple(SV, cl)
            .owner(18, "nginx")
            .ev(),
    );
    let conns = run(&ev);
    let s = one(&conns, Role::Server);
    assert_eq!(s.pid, Some(18));
    let ls = by_role(&conns, Role::Listener);
    let l18 = ls.iter().find(|l| l.pid == Some(18)).unwrap();
    let l17 = ls.iter().find(|l| l.pid == Some(17)).unwrap();
    assert_eq!(s.listener_id, Some(l18.id));
    let counts = |l: &Connection| {
        let i = l.listener.as_ref().unwrap();
        (i.children, i.accepted)
    };
    assert_eq!(counts(l18), (1, 1));
    assert_eq!(counts(l17), (0, 0));
}

/// SO_REUSEPORT with one member listening since before the start (pid 19, in the
/// socket table, no record while it listens) and one after (pid 18): a child that pid
/// 19 accepted was queued on pid 19's listener, not on pid 18's it was linked to by
/// port, and leaves it (its children and accepted counts stay its own).
#[test]
fn a_child_accepted_by_a_listener_from_before_the_start_leaves_the_other_member() {
    use crate::decode::Comm;
    let cl = "127.0.0.1:40650";
    let mut ev = vec![l2_listens()];
    ev.extend(client_open(T0 + MS, CLIENT, cl, SV));
    ev.extend(child_open(T0 + MS + 50 * US, CHILD, SV, cl));
    ev.push(
        Ev::accept(T0 + 2 * MS, CHILD, 6, 9)
            .tuple(SV, cl)
            .owner(19, "nginx")
            .ev(),
    );
    let seed = |pid: u32| Seed {
        netns: 0,
        local: ("0.0.0.0".parse().unwrap(), 8080),
        remote: ("0.0.0.0".parse().unwrap(), 0),
        state: TcpState::Listen,
        owner: Some((pid, Comm::from_str_lossy("nginx"))),
        selected: true,
    };
    let run_seeded = |pid: u32| {
        let mut c = Correlator::new(Config::default());
        c.seed([seed(pid)]);
        let mut out = Vec::new();
        for e in &ev {
            c.push(*e);
            c.drain_finished(&mut out);
        }
        out.extend(c.flush());
        out
    };
    let conns = run_seeded(19);
    let s = one(&conns, Role::Server);
    assert_eq!(s.pid, Some(19));
    assert_eq!(s.listener_id, None, "{s:#?}");
    let l18 = one(&conns, Role::Listener);
    let i = l18.listener.as_ref().unwrap();
    assert_eq!((i.children, i.accepted), (0, 0), "{l18:#?}");
    // Accepted by a process the socket table did not name as listening here: the
    // child stays where it was linked.
    let conns = run_seeded(20);
    let s = one(&conns, Role::Server);
    let l18 = one(&conns, Role::Listener);
    assert_eq!(s.listener_id, Some(l18.id), "{s:#?}");
}

/// Two listeners from before the start on one tuple (an SO_REUSEPORT group: nginx's
/// master opens one per worker) and one seed for the tuple: both are named from it at
/// their first event (the seed of an ordinary connection is used once).
#[test]
fn listeners_sharing_a_tuple_are_all_named_from_the_socket_table() {
    use crate::decode::Comm;
    let close = |t: u64, sk: u64| {
        Ev::tr(t, sk, Listen, Close)
            .tuple("0.0.0.0:8080", "0.0.0.0:0")
            .ev()
    };
    let ev = [close(T0, LISTENER), close(T0 + MS, L2)];
    let mut c = Correlator::new(Config::default());
    c.seed([Seed {
        netns: 0,
        local: ("0.0.0.0".parse().unwrap(), 8080),
        remote: ("0.0.0.0".parse().unwrap(), 0),
        state: TcpState::Listen,
        owner: Some((31, Comm::from_str_lossy("nginx"))),
        selected: true,
    }]);
    let mut out = Vec::new();
    for e in &ev {
        c.push(*e);
        c.drain_finished(&mut out);
    }
    out.extend(c.flush());
    let ls = by_role(&out, Role::Listener);
    assert_eq!(ls.len(), 2, "{out:#?}");
    for l in ls {
        assert_eq!(
            (l.pid, l.pid_source),
            (Some(31), PidSource::Snapshot),
            "{l:#?}"
        );
    }
}

/// The socket table is read a little after the hooks are attached: it may see in
/// CLOSE_WAIT a socket born in between, which the trace follows. That one is not a
/// CLOSE_WAIT socket "from before the start"; nor is one that left CLOSE_WAIT since.
#[test]
fn a_socket_the_trace_follows_is_not_counted_from_the_socket_table() {
    use crate::decode::Comm;
    let cl = "127.0.0.1:40660";
    let seed = |remote_port: u16| Seed {
        netns: 0,
        local: ("127.0.0.1".parse().unwrap(), 8080),
        remote: ("127.0.0.1".parse().unwrap(), remote_port),
        state: TcpState::CloseWait,
        owner: Some((17, Comm::from_str_lossy("server"))),
        selected: true,
    };
    let mut c = Correlator::new(Config::default());
    c.seed([seed(40660), seed(40661)]);
    let mut ev = child_open(T0, CHILD, SV, cl);
    ev.push(
        Ev::tr(T0 + MS, CHILD, Established, CloseWait)
            .tuple(SV, cl)
            .ev(),
    );
    for e in &ev {
        c.push(*e);
    }
    c.advance(T0 + 200 * MS);
    let ports = |c: &Correlator| {
        let mut p: Vec<u16> = c
            .seeded_in(TcpState::CloseWait)
            .map(|(s, _)| s.remote.1)
            .collect();
        p.sort();
        p
    };
    // The child in CLOSE_WAIT is the trace's; the other one is from before the start.
    assert_eq!(ports(&c), vec![40661]);
    // Its close takes it out of the table's view for good.
    c.push(
        Ev::tr(T0 + 300 * MS, CHILD, CloseWait, LastAck)
            .tuple(SV, cl)
            .ev(),
    );
    c.push(
        Ev::tr(T0 + 301 * MS, CHILD, LastAck, Close)
            .tuple(SV, cl)
            .ev(),
    );
    c.advance(T0 + 2000 * MS);
    let mut out = Vec::new();
    c.drain_finished(&mut out);
    assert!(!out.is_empty(), "the child is out");
    assert_eq!(ports(&c), vec![40661]);
}

/// A listener in another namespace on the same port is never taken for this one.
#[test]
fn listener_lookup_is_per_namespace() {
    let cl = "127.0.0.1:40700";
    let mut ev = vec![Ev(listen(T0, LISTENER, "0.0.0.0:8080")).netns(7).ev()];
    ev.extend(client_open(T0 + MS, CLIENT, cl, SV));
    ev.extend(child_open(T0 + MS + 50 * US, CHILD, SV, cl));
    for e in ev.iter_mut().skip(1) {
        e.netns = 8;
    }
    let conns = run(&ev);
    let s = one(&conns, Role::Server);
    assert_eq!(s.listener_id, None, "{s:#?}");
    let l = one(&conns, Role::Listener);
    assert_eq!(l.listener.as_ref().unwrap().children, 0);
}

/// With socket storage the kernel names the very listener a child was cloned from:
/// the child is linked to it at birth, before any accept().
#[test]
fn exact_listener_links_the_child_at_birth() {
    let cl = "127.0.0.1:40800";
    let mut ev = reuseport_pair_and_client(cl);
    let mut child = child_open(T0 + MS + 50 * US, CHILD, SV, cl);
    child[0].listener = L2;
    child[0].listener_exact = true;
    child[0].accept_queue = Some((3, 128));
    ev.extend(child);
    let conns = run(&ev);
    let s = one(&conns, Role::Server);
    let ls = by_role(&conns, Role::Listener);
    let l18 = ls.iter().find(|l| l.pid == Some(18)).unwrap();
    assert_eq!(s.listener_id, Some(l18.id), "{s:#?}");
    assert_eq!(l18.listener.as_ref().unwrap().children, 1);
    // Without the kernel's word, the first listener on the port is taken.
    let mut guess = ev.clone();
    for e in &mut guess {
        e.listener = 0;
        e.listener_exact = false;
    }
    let conns = run(&guess);
    let s = one(&conns, Role::Server);
    let l17 = by_role(&conns, Role::Listener)
        .into_iter()
        .find(|l| l.pid == Some(17))
        .unwrap();
    assert_eq!(s.listener_id, Some(l17.id));
}

/// The ISNs read at ESTABLISHED land on each end; an ISN on any other transition is
/// not taken (only ESTABLISHED reads them), and without them the field stays null.
#[test]
fn isns_are_carried_from_established_and_mirror_between_ends() {
    use TcpState::*;
    let mut evs = design_sequence();
    for e in evs.iter_mut() {
        match (e.skaddr, &e.kind) {
            (
                CLIENT,
                EventKind::Transition {
                    new: Established, ..
                },
            ) => e.isn = Some((1000, 7_000_000)),
            (
                CHILD,
                EventKind::Transition {
                    new: Established, ..
                },
            ) => e.isn = Some((7_000_000, 1000)),
            (CHILD, EventKind::Transition { new: CloseWait, .. }) => e.isn = Some((1, 2)),
            _ => {}
        }
    }
    let conns = run(&evs);
    let client = conns.iter().find(|c| c.role == Role::Client).unwrap();
    let server = conns.iter().find(|c| c.role == Role::Server).unwrap();
    let ci = client.isn.expect("client isn");
    let si = server.isn.expect("server isn");
    assert_eq!((ci.local, ci.remote), (1000, 7_000_000));
    assert_eq!((ci.local, ci.remote), (si.remote, si.local));
    let plain = run(&design_sequence());
    assert!(plain.iter().all(|c| c.isn.is_none()));
}

/// Two CPUs took the third ACK and the first data segment of one request at once:
/// each cloned a child, and the kernel discarded the one born first (LISTEN →
/// SYN_RECV → CLOSE, never established; seen with curl against python's
/// http.server). The client's peer is the child that lived, on both sides.
#[test]
fn discarded_duplicate_child_is_not_the_clients_peer() {
    let cl = "127.0.0.1:40600";
    let loser = CHILD + 0x100;
    let mut ev = vec![listen(T0, LISTENER, "0.0.0.0:8080")];
    ev.extend(client_open(T0 + MS, CLIENT, cl, SV));
    let born = T0 + MS + 50 * US;
    ev.push(
        Ev::tr(born, loser, Listen, SynRecv)
            .tuple(SV, cl)
            .listener_owner(17, "nginx")
            .softirq(0)
            .ev(),
    );
    let winner = child_open(born + 20 * US, CHILD, SV, cl);
    ev.extend(winner);
    ev.push(
        Ev::tr(born + 40 * US, loser, SynRecv, Close)
            .tuple(SV, cl)
            .softirq(0)
            .ev(),
    );
    let conns = run(&ev);
    let c = one(&conns, Role::Client);
    let servers: Vec<&Connection> = conns.iter().filter(|x| x.role == Role::Server).collect();
    assert_eq!(servers.len(), 2, "{conns:#?}");
    let live = servers.iter().find(|s| s.skaddr == CHILD).unwrap();
    let gone = servers.iter().find(|s| s.skaddr == loser).unwrap();
    assert_eq!(c.peer, Some(live.id), "{conns:#?}");
    assert_eq!(live.peer, Some(c.id));
    assert_eq!(gone.peer, None);
    assert!(!gone.established);
}

/// A child reset while still in the accept queue, accepted `after` its CLOSE.
fn reset_in_queue_then_accept(after: Option<u64>, listener_close: Option<u64>) -> Vec<Event> {
    let cl = "127.0.0.1:40500";
    let mut ev = vec![listen(T0, LISTENER, "0.0.0.0:8080")];
    ev.extend(client_open(T0 + MS, CLIENT, cl, SV));
    ev.extend(child_open(T0 + MS + 50 * US, CHILD, SV, cl));
    let t = T0 + 2 * MS;
    ev.extend([
        Ev::rst_sent(t, CLIENT).tuple(cl, SV).ev(),
        Ev::tr(t + US, CLIENT, Established, Close)
            .tuple(cl, SV)
            .ev(),
        Ev::rst_recv(t + 10 * US, CHILD)
            .tuple(SV, cl)
            .softirq(1)
            .ev(),
        Ev::tr(t + 11 * US, CHILD, Established, Close)
            .tuple(SV, cl)
            .softirq(1)
            .ev(),
    ]);
    if let Some(a) = after {
        ev.push(
            Ev::accept(t + 11 * US + a, CHILD, 3, 5)
                .tuple(SV, cl)
                .owner(17, "nginx")
                .ev(),
        );
    }
    // Time goes on (another socket), past the linger and what follows.
    ev.push(Ev::tr(t + 2_000 * MS, 0x77, Close, SynSent).ev());
    if let Some(lc) = listener_close {
        ev.push(
            Ev::tr(t + lc, LISTENER, Listen, Close)
                .tuple("0.0.0.0:8080", "0.0.0.0:0")
                .owner(17, "nginx")
                .task()
                .ev(),
        );
    }
    ev
}

#[test]
fn an_accept_long_after_the_child_was_reset_in_the_queue_is_placed_on_it() {
    // 500 ms after the CLOSE: far past the 100 ms linger.
    let mut corr = Correlator::new(Config::default());
    let mut out = Vec::new();
    for e in reset_in_queue_then_accept(Some(500 * MS), None) {
        corr.push(e);
        corr.drain_finished(&mut out);
    }
    assert_eq!(corr.stats().orphan_events, 0);
    let child = out
        .iter()
        .find(|c| c.role == Role::Server)
        .expect("the child is out once its accept() came, before the end");
    let a = child.accept.expect("its accept() return");
    assert_eq!(a.ret, 5);
    assert_eq!(
        child.accept_wait_ns,
        Some(a.t_ns as i64 - (T0 + MS + 50 * US + US) as i64)
    );
    assert!(child.accept_wait_ns.unwrap() > 500 * MS as i64);
    assert_eq!(child.outcome, Outcome::Reset);
}

#[test]
fn a_child_reset_in_the_queue_waits_for_accept_only_while_its_listener_listens() {
    // Never accepted; the listener closes 3 s after: the child comes out then, without
    // an accept, and not before.
    let mut corr = Correlator::new(Config::default());
    let mut out = Vec::new();
    let events = reset_in_queue_then_accept(None, Some(3_000 * MS));
    let (before, close) = events.split_at(events.len() - 1);
    for e in before {
        corr.push(*e);
        corr.drain_finished(&mut out);
    }
    assert!(
        !out.iter().any(|c| c.role == Role::Server),
        "held for its accept(): {out:#?}"
    );
    corr.push(close[0]);
    corr.advance(close[0].ts_ns + DEFAULT_REORDER_WINDOW_NS + 1);
    corr.drain_finished(&mut out);
    let child = out
        .iter()
        .find(|c| c.role == Role::Server)
        .expect("released");
    assert!(child.last_ts_ns < close[0].ts_ns);
    assert_eq!(child.accept, None);
    // And with the listener open for ever: out at the hold's end (10 s), not later.
    let mut corr = Correlator::new(Config::default());
    let mut out = Vec::new();
    for e in reset_in_queue_then_accept(None, None) {
        corr.push(e);
    }
    corr.advance(T0 + 2 * MS + ACCEPT_HOLD_NS);
    corr.drain_finished(&mut out);
    assert!(!out.iter().any(|c| c.role == Role::Server));
    corr.advance(T0 + 3 * MS + ACCEPT_HOLD_NS + DEFAULT_REORDER_WINDOW_NS);
    corr.drain_finished(&mut out);
    assert!(
        out.iter()
            .any(|c| c.role == Role::Server && c.accept.is_none())
    );
}

/// Held connections mostly leave before their deadline (their peer's record comes
/// first), and their entries must not pile up in the hold queue for its 60 s: 10 000
/// server-first orphan handovers, one per millisecond, each client closing 200 ms
/// later (past the linger: the server is held until it). Without pruning the queue
/// ends with one entry per connection; with it, never more than the live slots allow.
#[test]
fn the_hold_queue_keeps_no_entries_of_connections_already_out() {
    let (one, _) = server_first_orphan(Some(200 * MS));
    let n: u64 = 10_000;
    let mut ev = Vec::new();
    for k in 0..n {
        for e in &one {
            if e.skaddr == LISTENER && k > 0 {
                continue;
            }
            let mut e = *e;
            e.ts_ns += k * MS;
            if e.skaddr != LISTENER {
                // Addresses and the client port of connection k.
                e.skaddr += 0x10_0000 * (k + 1);
                let port = 10_000 + k as u16;
                for end in [&mut e.local, &mut e.remote] {
                    if let Some((_, p)) = end.as_mut()
                        && *p == 40100
                    {
                        *p = port;
                    }
                }
            }
            ev.push(e);
        }
    }
    ev.sort_by_key(|e| e.ts_ns);
    let mut corr = Correlator::default();
    let mut out = Vec::new();
    let (mut most, mut most_live) = (0, 0);
    for e in &ev {
        corr.push(*e);
        out.extend(corr.finished());
        most = most.max(corr.held.len());
        most_live = most_live.max(corr.live);
        // Pruned when a push takes it past twice the live slots (and the slack).
        assert!(
            corr.held.len() <= 2 * most_live + QUEUE_SLACK + 1,
            "held queue {} with at most {most_live} live slots",
            corr.held.len()
        );
    }
    // The servers were held (the hold was exercised) and all went out paired.
    let servers = out.iter().filter(|c| c.role == Role::Server).count() as u64;
    assert!(servers >= n - 250, "{servers} servers out while streaming");
    assert!(
        out.iter()
            .filter(|c| c.role == Role::Server)
            .all(|c| c.fin_wait2_handover && c.time_wait)
    );
    assert!(most > QUEUE_SLACK / 2, "the hold queue was used: {most}");
    assert!((most as u64) < n / 3, "the hold queue stayed small: {most}");
}
