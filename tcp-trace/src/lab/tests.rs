//! Verdict functions on synthetic captures: each holds on the full sequence and fails
//! once the decisive events are removed.
use std::net::{IpAddr, SocketAddr};

use super::capture::{Capture, TimeWaitEntry};
use super::verdict::{self, Verdict};
use crate::decode::{Comm, Event, EventKind, Family, Owner, TcpState};

const MS: u64 = 1_000_000;
const LISTENER: u64 = 0x1000;
const CLIENT: u64 = 0x2000;
const CHILD: u64 = 0x3000;
const CLIENT2: u64 = 0x4000;
const CHILD2: u64 = 0x5000;
const CLIENT3: u64 = 0x6000;
const CHILD3: u64 = 0x7000;
const PID: u32 = 4242;

const C: &str = "10.64.1.1:40000";
const C2: &str = "10.64.1.1:40001";
const S: &str = "10.64.1.2:47101";

fn ep(s: &str) -> (IpAddr, u16) {
    let a: SocketAddr = s.parse().unwrap();
    (a.ip(), a.port())
}

fn ev(ts: u64, sk: u64, kind: EventKind, local: &str, remote: &str) -> Event {
    let task = matches!(
        kind,
        EventKind::ConnectReturn { .. } | EventKind::AcceptReturn { .. }
    );
    Event {
        ts_ns: ts,
        skaddr: sk,
        kind,
        family: Family::Inet,
        local: Some(ep(local)),
        remote: Some(ep(remote)),
        ctx_pid: PID,
        ctx_tid: PID,
        task_ctx: task,
        owner: Some(Owner {
            pid: PID,
            tid: PID,
            comm: Comm::from_str_lossy("lab"),
            from_listener: false,
        }),
        cgroup_id: 0,
        ns_pid: 0,
        netns: 0,
        listener: 0,
        listener_exact: false,
        accept_queue: None,
        isn: None,
    }
}

fn tr(ts: u64, sk: u64, old: TcpState, new: TcpState, l: &str, r: &str) -> Event {
    ev(ts, sk, EventKind::Transition { old, new }, l, r)
}

use TcpState::*;

/// Listener, client connects at t, child created at `child_at` (after SYN-ACK
/// retransmits at `synacks`), client closes first `close_after` later.
fn connection(
    t: u64,
    client: u64,
    child: u64,
    cl: &str,
    child_at: u64,
    synacks: &[u64],
    client_first: bool,
) -> Vec<Event> {
    let mut v = vec![
        tr(t, client, Close, SynSent, cl, S),
        tr(t + MS / 10, client, SynSent, Established, cl, S),
        ev(
            t + MS / 5,
            client,
            EventKind::ConnectReturn { fd: 3, ret: 0 },
            cl,
            S,
        ),
    ];
    for &s in synacks {
        v.push(ev(
            s,
            LISTENER,
            EventKind::SynAckRetransmit { req: 0x9000 },
            S,
            cl,
        ));
    }
    v.push(tr(child_at, child, Listen, SynRecv, S, cl));
    v.push(tr(child_at + 10_000, child, SynRecv, Established, S, cl));
    v.push(ev(
        child_at + 50_000,
        child,
        EventKind::AcceptReturn {
            listen_fd: 3,
            ret: 4,
            accept4: true,
        },
        S,
        cl,
    ));
    let e = child_at + 10 * MS;
    let (a, ask, al, ar, p, psk, pl, pr) = if client_first {
        (client, client, cl, S, child, child, S, cl)
    } else {
        (child, child, S, cl, client, client, cl, S)
    };
    let _ = (a, p);
    v.extend([
        tr(e, ask, Established, FinWait1, al, ar),
        tr(e + 10_000, psk, Established, CloseWait, pl, pr),
        tr(e + 20 * MS, psk, CloseWait, LastAck, pl, pr),
        tr(e + 20 * MS + 10_000, ask, FinWait1, FinWait2, al, ar),
        tr(e + 20 * MS + 20_000, ask, FinWait2, Close, al, ar),
        tr(e + 20 * MS + 30_000, psk, LastAck, Close, pl, pr),
    ]);
    v
}

fn listener_open() -> Event {
    tr(0, LISTENER, Close, Listen, S, "0.0.0.0:0")
}

fn build(events: Vec<Event>) -> Capture {
    let mut events = events;
    events.sort_by_key(|e| e.ts_ns);
    Capture::from_events(events)
}

/// connect-vs-accept: connect at 10 ms, SYN-ACK retransmit at 1010 ms, send at 1510 ms.
fn cva_events() -> Vec<Event> {
    let mut v = vec![listener_open()];
    v.extend(connection(
        10 * MS,
        CLIENT,
        CHILD,
        C,
        1510 * MS,
        &[1010 * MS],
        true,
    ));
    v
}

fn cva(events: Vec<Event>) -> Capture {
    let mut cap = build(events);
    cap.marks
        .insert("client_send_start".into(), 1510 * MS - 30_000);
    cap.marks
        .insert("client_send_end".into(), 1510 * MS + 80_000);
    cap
}

fn holds(v: Verdict) -> bool {
    if !v.holds {
        eprintln!("{} fails: {} {}", v.id, v.text, v.evidence);
    }
    v.holds
}

fn without(v: Vec<Event>, pred: impl Fn(&Event) -> bool) -> Vec<Event> {
    v.into_iter().filter(|e| !pred(e)).collect()
}

#[test]
fn c13_holds_and_needs_the_late_child_and_the_synack_retransmit() {
    assert!(holds(verdict::c13(&cva(cva_events()))));
    // Without the SYN-ACK retransmit nothing shows the third step was missing.
    let v = without(cva_events(), |e| {
        matches!(e.kind, EventKind::SynAckRetransmit { .. })
    });
    assert!(!verdict::c13(&cva(v)).holds);
    // The child created before connect() returned: connect did not return first.
    let mut v = cva_events();
    for e in v.iter_mut().filter(|e| e.skaddr == CHILD) {
        if let EventKind::Transition {
            new: SynRecv | Established,
            ..
        } = e.kind
        {
            e.ts_ns = 10 * MS
                + MS / 10
                + 1000
                + u64::from(matches!(
                    e.kind,
                    EventKind::Transition {
                        new: Established,
                        ..
                    }
                )) * 1000;
        }
    }
    assert!(!verdict::c13(&cva(v)).holds);
    // Without the accept() return.
    let v = without(cva_events(), |e| {
        matches!(e.kind, EventKind::AcceptReturn { .. })
    });
    assert!(!verdict::c13(&cva(v)).holds);
    // Without the child's transitions.
    let v = without(cva_events(), |e| e.skaddr == CHILD);
    assert!(!verdict::c13(&cva(v)).holds);
}

#[test]
fn c1_holds_and_needs_child_at_send() {
    assert!(holds(verdict::c1(&cva(cva_events()))));
    let v = without(cva_events(), |e| {
        matches!(e.kind, EventKind::SynAckRetransmit { .. })
    });
    assert!(!verdict::c1(&cva(v)).holds);
    // Child created long before the send: the pure ACK did it.
    let mut cap = cva(cva_events());
    cap.marks.insert("client_send_start".into(), 3000 * MS);
    cap.marks.insert("client_send_end".into(), 3001 * MS);
    assert!(!verdict::c1(&cap).holds);
    let v = without(cva_events(), |e| e.skaddr == CHILD);
    assert!(!verdict::c1(&cva(v)).holds);
}

fn plain() -> Vec<Event> {
    let mut v = vec![listener_open()];
    v.extend(connection(
        10 * MS,
        CLIENT,
        CHILD,
        C,
        10 * MS + MS / 10 + 5000,
        &[],
        true,
    ));
    v
}

#[test]
fn c2_holds_and_needs_both_established() {
    assert!(holds(verdict::c2(&build(plain()))));
    let v = without(plain(), |e| {
        e.skaddr == CHILD
            && matches!(
                e.kind,
                EventKind::Transition {
                    new: Established,
                    ..
                }
            )
    });
    assert!(!verdict::c2(&build(v)).holds);
    let v = without(plain(), |e| {
        e.skaddr == CLIENT
            && matches!(
                e.kind,
                EventKind::Transition {
                    new: Established,
                    ..
                }
            )
    });
    assert!(!verdict::c2(&build(v)).holds);
    assert!(!verdict::c2(&build(vec![listener_open()])).holds);
}

fn two_orders() -> Vec<Event> {
    let mut v = vec![listener_open()];
    v.extend(connection(10 * MS, CLIENT, CHILD, C, 11 * MS, &[], true));
    v.extend(connection(
        200 * MS,
        CLIENT2,
        CHILD2,
        C2,
        201 * MS,
        &[],
        false,
    ));
    v
}

fn tw_entries() -> Vec<TimeWaitEntry> {
    vec![
        TimeWaitEntry {
            netns: "c".into(),
            local: C.parse().unwrap(),
            remote: S.parse().unwrap(),
            timer_s: 59,
            t_ns: 100 * MS,
        },
        TimeWaitEntry {
            netns: "s".into(),
            local: S.parse().unwrap(),
            remote: C2.parse().unwrap(),
            timer_s: 59,
            t_ns: 300 * MS,
        },
    ]
}

fn tw(events: Vec<Event>) -> Capture {
    let mut cap = build(events);
    cap.time_wait = tw_entries();
    cap
}

#[test]
fn c9_holds_and_needs_time_wait_only_on_the_active_side() {
    assert!(holds(verdict::c9(&tw(two_orders()))));
    // sock_diag did not list the second active closer in TIME_WAIT.
    let mut cap = tw(two_orders());
    cap.time_wait.truncate(1);
    assert!(!verdict::c9(&cap).holds);
    // Without the active closer's FIN_WAIT2 → CLOSE (no TIME_WAIT entry).
    let v = without(two_orders(), |e| {
        e.skaddr == CLIENT && matches!(e.kind, EventKind::Transition { old: FinWait2, .. })
    });
    assert!(!verdict::c9(&tw(v)).holds);
    // Without the passive closer's LAST_ACK.
    let v = without(two_orders(), |e| {
        e.skaddr == CLIENT2 && matches!(e.kind, EventKind::Transition { new: LastAck, .. })
    });
    assert!(!verdict::c9(&tw(v)).holds);
    // Only one close order.
    let v = without(two_orders(), |e| e.skaddr == CLIENT2 || e.skaddr == CHILD2);
    assert!(!verdict::c9(&tw(v)).holds);
}

#[test]
fn c11_holds_and_needs_the_sock_diag_timer() {
    let mut cap = build(two_orders());
    cap.time_wait = tw_entries();
    assert!(holds(verdict::c11(&cap)));
    // No sock_diag entry for the second active closer.
    let mut cap = build(two_orders());
    cap.time_wait = tw_entries()[..1].to_vec();
    assert!(!verdict::c11(&cap).holds);
    // A timer far from 60 s.
    let mut cap = build(two_orders());
    cap.time_wait = tw_entries();
    cap.time_wait[0].timer_s = 5;
    assert!(!verdict::c11(&cap).holds);
    // The passive closer listed in TIME_WAIT.
    let mut cap = build(two_orders());
    cap.time_wait = tw_entries();
    cap.time_wait.push(TimeWaitEntry {
        netns: "s".into(),
        local: S.parse().unwrap(),
        remote: C.parse().unwrap(),
        timer_s: 59,
        t_ns: 100 * MS,
    });
    assert!(!verdict::c11(&cap).holds);
    // The active closer's FIN_WAIT2 → CLOSE missing.
    let v = without(two_orders(), |e| {
        e.skaddr == CHILD2 && matches!(e.kind, EventKind::Transition { old: FinWait2, .. })
    });
    let mut cap = build(v);
    cap.time_wait = tw_entries();
    assert!(!verdict::c11(&cap).holds);
}

fn synack_events() -> Vec<Event> {
    let t = 10 * MS;
    vec![
        listener_open(),
        tr(t, CLIENT, Close, SynSent, C, S),
        tr(t + MS / 10, CLIENT, SynSent, Established, C, S),
        ev(
            t + MS / 5,
            CLIENT,
            EventKind::ConnectReturn { fd: 3, ret: 0 },
            C,
            S,
        ),
        ev(
            1010 * MS,
            LISTENER,
            EventKind::SynAckRetransmit { req: 0x9000 },
            S,
            C,
        ),
        ev(
            3010 * MS,
            LISTENER,
            EventKind::SynAckRetransmit { req: 0x9000 },
            S,
            C,
        ),
        ev(8010 * MS, CLIENT, EventKind::ResetReceived, C, S),
        tr(8010 * MS + 1000, CLIENT, Established, Close, C, S),
    ]
}

fn synack(events: Vec<Event>) -> Capture {
    let mut cap = build(events);
    cap.sysctls
        .insert("server:net.ipv4.tcp_synack_retries".into(), "2".into());
    cap
}

#[test]
fn c3_holds_and_needs_exact_retransmits_and_the_reset() {
    assert!(holds(verdict::c3(&synack(synack_events()))));
    // One retransmit fewer than the sysctl.
    let v = without(synack_events(), |e| {
        matches!(e.kind, EventKind::SynAckRetransmit { .. }) && e.ts_ns == 3010 * MS
    });
    assert!(!verdict::c3(&synack(v)).holds);
    // No reset: removal of the request not shown.
    let v = without(synack_events(), |e| e.kind == EventKind::ResetReceived);
    assert!(!verdict::c3(&synack(v)).holds);
    // Gaps not growing.
    let mut v = synack_events();
    for e in v.iter_mut() {
        if matches!(e.kind, EventKind::SynAckRetransmit { .. }) && e.ts_ns == 3010 * MS {
            e.ts_ns = 1500 * MS;
        }
    }
    assert!(!verdict::c3(&synack(v)).holds);
    // A child was created.
    let mut v = synack_events();
    v.push(tr(5000 * MS, CHILD, Listen, SynRecv, S, C));
    v.push(tr(5000 * MS + 100, CHILD, SynRecv, Established, S, C));
    assert!(!verdict::c3(&synack(v)).holds);
    // Sysctl unknown.
    assert!(!verdict::c3(&build(synack_events())).holds);
    // No reset for the client; a later socket at its freed address got one.
    let mut v = without(synack_events(), |e| e.kind == EventKind::ResetReceived);
    v.push(tr(9000 * MS, CLIENT, Close, SynSent, C2, S));
    v.push(ev(9100 * MS, CLIENT, EventKind::ResetReceived, C2, S));
    v.push(tr(9100 * MS + 1000, CLIENT, SynSent, Close, C2, S));
    assert!(!verdict::c3(&synack(v)).holds);
}

/// half-close: client FIN at 20 ms, server ACK, reply read at 20.1 ms, server FIN at 50 ms.
fn half_close_events() -> Vec<Event> {
    let mut v = vec![listener_open()];
    let t = 10 * MS;
    v.extend([
        tr(t, CLIENT, Close, SynSent, C, S),
        tr(t + 100_000, CLIENT, SynSent, Established, C, S),
        ev(
            t + 200_000,
            CLIENT,
            EventKind::ConnectReturn { fd: 3, ret: 0 },
            C,
            S,
        ),
        tr(t + 150_000, CHILD, Listen, SynRecv, S, C),
        tr(t + 160_000, CHILD, SynRecv, Established, S, C),
        tr(20 * MS, CLIENT, Established, FinWait1, C, S),
        tr(20 * MS + 10_000, CHILD, Established, CloseWait, S, C),
        tr(20 * MS + 30_000, CLIENT, FinWait1, FinWait2, C, S),
        tr(50 * MS, CHILD, CloseWait, LastAck, S, C),
        tr(50 * MS + 50_000, CLIENT, FinWait2, Close, C, S),
        tr(50 * MS + 80_000, CHILD, LastAck, Close, S, C),
    ]);
    v
}

fn hc(events: Vec<Event>) -> Capture {
    let mut cap = build(events);
    cap.marks
        .insert("client_recv_after_fin".into(), 20 * MS + 100_000);
    cap.marks.insert("client_recv_after_fin_bytes".into(), 1000);
    cap
}

#[test]
fn c10_holds_and_needs_receive_while_half_closed() {
    assert!(holds(verdict::c10(&hc(half_close_events()))));
    // The read came after the server's FIN: nothing shown about half-close.
    let mut cap = hc(half_close_events());
    cap.marks
        .insert("client_recv_after_fin".into(), 50 * MS + 60_000);
    assert!(!verdict::c10(&cap).holds);
    // No bytes read.
    let mut cap = hc(half_close_events());
    cap.marks.insert("client_recv_after_fin_bytes".into(), 0);
    assert!(!verdict::c10(&cap).holds);
    // Without the server's CLOSE_WAIT (it never got the FIN).
    let v = without(half_close_events(), |e| {
        matches!(e.kind, EventKind::Transition { new: CloseWait, .. })
    });
    assert!(!verdict::c10(&hc(v)).holds);
    // Without the server's LAST_ACK.
    let v = without(half_close_events(), |e| {
        matches!(e.kind, EventKind::Transition { new: LastAck, .. })
    });
    assert!(!verdict::c10(&hc(v)).holds);
}

/// lost-last-ack: round 1 (CLIENT/CHILD, no TIME_WAIT, RST after the FIN retransmit),
/// round 2 (CLIENT2/CHILD2, TIME_WAIT, FIN retransmit acknowledged).
fn lost_last_ack_events() -> Vec<Event> {
    let mut v = vec![listener_open()];
    v.extend(connection(10 * MS, CLIENT, CHILD, C, 11 * MS, &[], true));
    v.extend(connection(
        2000 * MS,
        CLIENT2,
        CHILD2,
        C2,
        2001 * MS,
        &[],
        true,
    ));
    // connection(): child LAST_ACK at child_at + 30 ms, LAST_ACK → CLOSE 30 µs later;
    // stretch both closes to after the FIN retransmits.
    for e in v.iter_mut() {
        if let EventKind::Transition {
            old: LastAck,
            new: Close,
        } = e.kind
        {
            e.ts_ns += 300 * MS;
        }
    }
    v.extend([
        ev(
            11 * MS + 30 * MS + 200 * MS,
            CHILD,
            EventKind::Retransmit { state: LastAck },
            S,
            C,
        ),
        ev(
            11 * MS + 30 * MS + 201 * MS,
            CHILD,
            EventKind::ResetReceived,
            S,
            C,
        ),
        ev(
            2001 * MS + 30 * MS + 200 * MS,
            CHILD2,
            EventKind::Retransmit { state: LastAck },
            S,
            C2,
        ),
    ]);
    v
}

fn lla(events: Vec<Event>) -> Capture {
    let mut cap = build(events);
    cap.time_wait = vec![TimeWaitEntry {
        netns: "c".into(),
        local: C2.parse().unwrap(),
        remote: S.parse().unwrap(),
        timer_s: 59,
        t_ns: 3000 * MS,
    }];
    cap
}

#[test]
fn c12_holds_and_needs_the_reset_and_the_clean_control() {
    assert!(holds(verdict::c12(&lla(lost_last_ack_events()))));
    // No RST in the no-TIME_WAIT round.
    let v = without(lost_last_ack_events(), |e| {
        e.kind == EventKind::ResetReceived
    });
    assert!(!verdict::c12(&lla(v)).holds);
    // No FIN retransmit at all: the last ACK was not shown lost.
    let v = without(lost_last_ack_events(), |e| {
        matches!(e.kind, EventKind::Retransmit { .. })
    });
    assert!(!verdict::c12(&lla(v)).holds);
    // The control round's active closer not seen in TIME_WAIT.
    let mut cap = lla(lost_last_ack_events());
    cap.time_wait.clear();
    assert!(!verdict::c12(&cap).holds);
}

/// syn-retries as 6.18 shows it with tcp_syn_linear_timeouts=0: SYN at 10 ms, SYN
/// retransmits 1 s and 3 s later, SYN_SENT→CLOSE 7 s after the SYN, connect() = -110.
fn syn_retries_events() -> Vec<Event> {
    let t = 10 * MS;
    let rtx = |ts| ev(ts, CLIENT, EventKind::Retransmit { state: SynSent }, C, S);
    vec![
        listener_open(),
        tr(t, CLIENT, Close, SynSent, C, S),
        rtx(t + 1000 * MS),
        rtx(t + 3000 * MS),
        tr(t + 7000 * MS, CLIENT, SynSent, Close, C, S),
        ev(
            t + 7000 * MS + 20_000,
            CLIENT,
            EventKind::ConnectReturn { fd: 3, ret: -110 },
            C,
            S,
        ),
    ]
}

fn syn_cap(events: Vec<Event>) -> Capture {
    let mut cap = build(events);
    cap.sysctls
        .insert("client:net.ipv4.tcp_syn_retries".into(), "2".into());
    cap
}

fn is_syn_rtx(e: &Event) -> bool {
    e.kind == EventKind::Retransmit { state: SynSent }
}

fn set_connect_ret(v: &mut [Event], ret: i64) {
    for e in v.iter_mut() {
        if let EventKind::ConnectReturn { fd, .. } = e.kind {
            e.kind = EventKind::ConnectReturn { fd, ret };
        }
    }
}

/// Moves the SYN retransmit at `from` (ms after the SYN) to `to`.
fn move_rtx(v: &mut [Event], from: u64, to: u64) {
    for e in v.iter_mut() {
        if is_syn_rtx(e) && e.ts_ns == 10 * MS + from * MS {
            e.ts_ns = 10 * MS + to * MS;
        }
    }
}

fn s1_fails(cap: Capture, why: &str) {
    let v = verdict::s1(&cap);
    assert!(!v.holds, "S1 held: {}", v.text);
    assert!(
        v.text.contains(why),
        "S1 failed for another reason: {}",
        v.text
    );
}

#[test]
fn s1_holds_and_needs_the_retransmits_close_and_etimedout() {
    assert!(holds(verdict::s1(&syn_cap(syn_retries_events()))));
    // Equal gaps (1 s, 1 s: linear timeouts) hold too; backoff is not asserted strictly.
    let mut v = syn_retries_events();
    move_rtx(&mut v, 3000, 2000);
    assert!(holds(verdict::s1(&syn_cap(v))));
    // No retransmits.
    let v = without(syn_retries_events(), is_syn_rtx);
    s1_fails(syn_cap(v), "0 SYN retransmits");
    // Wrong count: one fewer, one more, or a different sysctl.
    let v = without(syn_retries_events(), |e| {
        is_syn_rtx(e) && e.ts_ns == 10 * MS + 3000 * MS
    });
    s1_fails(syn_cap(v), "1 SYN retransmits");
    let mut v = syn_retries_events();
    v.push(ev(
        10 * MS + 6000 * MS,
        CLIENT,
        EventKind::Retransmit { state: SynSent },
        C,
        S,
    ));
    s1_fails(syn_cap(v), "3 SYN retransmits");
    let mut cap = syn_cap(syn_retries_events());
    cap.sysctls
        .insert("client:net.ipv4.tcp_syn_retries".into(), "3".into());
    s1_fails(cap, "tcp_syn_retries is 3");
    // A retransmit too early (0.5 s after the SYN).
    let mut v = syn_retries_events();
    move_rtx(&mut v, 1000, 500);
    s1_fails(syn_cap(v), "less than 800 ms");
    // Gaps shrinking (1.5 s, then 0.9 s).
    let mut v = syn_retries_events();
    move_rtx(&mut v, 1000, 1500);
    move_rtx(&mut v, 3000, 2400);
    s1_fails(syn_cap(v), "shrank");
    // connect() return missing.
    let v = without(syn_retries_events(), |e| {
        matches!(e.kind, EventKind::ConnectReturn { .. })
    });
    s1_fails(syn_cap(v), "no connect() return");
    // connect() returned something else than -ETIMEDOUT.
    for ret in [0, -111, -4] {
        let mut v = syn_retries_events();
        set_connect_ret(&mut v, ret);
        s1_fails(syn_cap(v), "not -110");
    }
    // No SYN_SENT→CLOSE.
    let v = without(syn_retries_events(), |e| {
        matches!(
            e.kind,
            EventKind::Transition {
                old: SynSent,
                new: Close
            }
        )
    });
    s1_fails(syn_cap(v), "no SYN_SENT→CLOSE");
    // A server child was created.
    let mut v = syn_retries_events();
    v.push(tr(1500 * MS, CHILD, Listen, SynRecv, S, C));
    s1_fails(syn_cap(v), "created a child socket");
    // Sysctl unknown.
    s1_fails(build(syn_retries_events()), "unknown");
    // connect() returned before the SYN_SENT→CLOSE.
    let mut v = syn_retries_events();
    for e in v.iter_mut() {
        if matches!(e.kind, EventKind::ConnectReturn { .. }) {
            e.ts_ns = 10 * MS + 6000 * MS;
        }
    }
    s1_fails(syn_cap(v), "returned before");
}

const STALE: &str = "10.64.1.1:31001";
const CONTROL: &str = "10.64.1.1:31002";
const RAW: &str = "10.64.1.1:31003";

fn no_socket_reset(ts: u64, reason: Option<u32>) -> Event {
    let mut e = ev(
        ts,
        0,
        EventKind::ResetSent {
            state: None,
            reason,
        },
        STALE,
        S,
    );
    e.owner = None;
    e
}

/// stale-syn: the client's socket-less reset at 10 ms, the control request's SYN-ACK
/// retransmit at 1010 ms, a real connection at 2000 ms.
fn stale_events() -> Vec<Event> {
    let mut v = vec![
        listener_open(),
        no_socket_reset(10 * MS, Some(1)),
        ev(
            1010 * MS,
            LISTENER,
            EventKind::SynAckRetransmit { req: 0x9100 },
            S,
            CONTROL,
        ),
    ];
    v.extend(connection(
        2000 * MS,
        CLIENT,
        CHILD,
        C,
        2000 * MS + MS / 10 + 5000,
        &[],
        true,
    ));
    v
}

/// The verdict does not hold, for the reason `why` names (its text says it).
fn fails(v: Verdict, why: &str) {
    assert!(!v.holds, "{} held: {}", v.id, v.text);
    assert!(
        v.text.contains(why),
        "{} failed for another reason: {}",
        v.id,
        v.text
    );
}

fn c4_fails(events: Vec<Event>, why: &str) {
    let v = verdict::c4(&build(events));
    assert!(!v.holds, "C4 held: {}", v.text);
    assert!(
        v.text.contains(why),
        "C4 failed for another reason: {}",
        v.text
    );
}

#[test]
fn c4_holds_and_needs_the_reset_no_child_and_the_controls() {
    assert!(holds(verdict::c4(&build(stale_events()))));
    // Older kernels report no reason: still a socket-less reset.
    let mut v = stale_events();
    v[1] = no_socket_reset(10 * MS, None);
    assert!(holds(verdict::c4(&build(v))));
    // No reset from the client: nothing shows the SYN-ACK met no socket.
    let v = without(stale_events(), |e| {
        matches!(e.kind, EventKind::ResetSent { .. })
    });
    c4_fails(v, "no reset sent with no socket");
    // A reset from a socket, or for another reason, is not the answer of a port
    // without one.
    let mut v = stale_events();
    v[1].skaddr = CLIENT2;
    c4_fails(v, "no reset sent with no socket");
    let mut v = stale_events();
    v[1] = no_socket_reset(10 * MS, Some(2));
    c4_fails(v, "no reset sent with no socket");
    // The stale SYN made a child, was accepted, or its request was retransmitted.
    let mut v = stale_events();
    v.push(tr(20 * MS, CHILD2, Listen, SynRecv, S, STALE));
    c4_fails(v, "the stale request made a child");
    let mut v = stale_events();
    v.push(ev(
        30 * MS,
        CHILD2,
        EventKind::AcceptReturn {
            listen_fd: 3,
            ret: 5,
            accept4: true,
        },
        S,
        STALE,
    ));
    c4_fails(v, "the stale request made a child");
    let mut v = stale_events();
    v.push(ev(
        1005 * MS,
        LISTENER,
        EventKind::SynAckRetransmit { req: 0x9200 },
        S,
        STALE,
    ));
    c4_fails(v, "the stale request made a child");
    // A second stale SYN (another port) that did make a child: one clean is not enough.
    let mut v = stale_events();
    let mut other = no_socket_reset(12 * MS, Some(1));
    other.local = Some(ep("10.64.1.1:31009"));
    v.push(other);
    v.push(tr(20 * MS, CHILD2, Listen, SynRecv, S, "10.64.1.1:31009"));
    c4_fails(v, "the stale request made a child");
    // The capture ended too soon after the reset for a retransmit to be due.
    let v: Vec<Event> = stale_events()
        .into_iter()
        .map(|mut e| {
            if e.ts_ns >= 2000 * MS {
                e.ts_ns -= 1000 * MS;
            }
            e
        })
        .collect();
    c4_fails(v, "capture ended less than");
    // No control retransmit: nothing shows a request would have been retransmitted.
    let v = without(stale_events(), |e| {
        matches!(e.kind, EventKind::SynAckRetransmit { .. })
    });
    c4_fails(v, "no control request");
    // No accepted child anywhere: nothing shows one would have been seen.
    let v = without(stale_events(), |e| {
        matches!(e.kind, EventKind::AcceptReturn { .. })
    });
    c4_fails(v, "no child socket returned by accept()");
    // No listener.
    let v = without(stale_events(), |e| e.skaddr == LISTENER);
    c4_fails(v, "no listening socket");
}

/// duplicate-syn: the duplicate's SYN-ACK retransmit at 10 ms, the child at 210 ms,
/// accept() at 210.05 ms, the peer's RST.
fn dup_events() -> Vec<Event> {
    let t = 210 * MS;
    vec![
        listener_open(),
        ev(
            10 * MS,
            LISTENER,
            EventKind::SynAckRetransmit { req: 0x9300 },
            S,
            RAW,
        ),
        tr(t, CHILD, Listen, SynRecv, S, RAW),
        tr(t + 10_000, CHILD, SynRecv, Established, S, RAW),
        ev(
            t + 50_000,
            CHILD,
            EventKind::AcceptReturn {
                listen_fd: 3,
                ret: 5,
                accept4: true,
            },
            S,
            RAW,
        ),
        ev(t + 70_000, CHILD, EventKind::ResetReceived, S, RAW),
        tr(t + 71_000, CHILD, Established, Close, S, RAW),
    ]
}

fn dup_cap(events: Vec<Event>) -> Capture {
    let mut cap = build(events);
    cap.sysctls
        .insert("server:net.ipv4.tcp_synack_retries".into(), "0".into());
    cap
}

fn c8_fails(cap: Capture, why: &str) {
    fails(verdict::c8(&cap), why);
}

/// Before 6.15 a child's LISTEN → SYN_RECV carries its listener's addresses (the
/// remote end unset, as the 6.1 and 6.12 guests record it): the child is still the
/// peer's, by its socket's later events.
#[test]
fn c8_holds_with_a_pre_6_15_child_birth() {
    let mut v = dup_events();
    v[2].remote = Some(("0.0.0.0".parse().unwrap(), 0));
    assert!(holds(verdict::c8(&dup_cap(v.clone()))));
    // Without any later event naming the peer, the child is nobody's.
    let v: Vec<Event> = v
        .into_iter()
        .filter(|e| {
            !(e.skaddr == CHILD
                && matches!(
                    e.kind,
                    EventKind::Transition {
                        old: TcpState::SynRecv,
                        ..
                    }
                ))
        })
        .collect();
    c8_fails(dup_cap(v), "no 4-tuple");
}

#[test]
fn c8_holds_and_needs_the_duplicate_and_one_child() {
    assert!(holds(verdict::c8(&dup_cap(dup_events()))));
    // The timer may retransmit: the retransmit no longer shows a duplicate SYN.
    let mut cap = dup_cap(dup_events());
    cap.sysctls
        .insert("server:net.ipv4.tcp_synack_retries".into(), "2".into());
    c8_fails(cap, "not 0");
    c8_fails(build(dup_events()), "unknown");
    // No duplicate reached the request.
    let v = without(dup_events(), |e| {
        matches!(e.kind, EventKind::SynAckRetransmit { .. })
    });
    c8_fails(dup_cap(v), "no 4-tuple");
    // A retransmit only after the child: not a duplicate meeting the request.
    let mut v = dup_events();
    v[1].ts_ns = 300 * MS;
    c8_fails(dup_cap(v), "no 4-tuple");
    // A second child for the same 4-tuple.
    let mut v = dup_events();
    v.push(tr(250 * MS, CHILD2, Listen, SynRecv, S, RAW));
    v.push(tr(250 * MS + 10_000, CHILD2, SynRecv, Established, S, RAW));
    c8_fails(dup_cap(v), "no 4-tuple");
    // A second accept() of it.
    let mut v = dup_events();
    v.push(ev(
        260 * MS,
        CHILD,
        EventKind::AcceptReturn {
            listen_fd: 3,
            ret: 6,
            accept4: true,
        },
        S,
        RAW,
    ));
    c8_fails(dup_cap(v), "no 4-tuple");
    // Never accepted, or never ESTABLISHED.
    let v = without(dup_events(), |e| {
        matches!(e.kind, EventKind::AcceptReturn { .. })
    });
    c8_fails(dup_cap(v), "no 4-tuple");
    let v = without(dup_events(), |e| {
        matches!(
            e.kind,
            EventKind::Transition {
                new: Established,
                ..
            }
        )
    });
    c8_fails(dup_cap(v), "no 4-tuple");
    // Another 4-tuple with two children makes it fail even with a good one.
    let mut v = dup_events();
    v.push(tr(400 * MS, CLIENT, Listen, SynRecv, S, C));
    v.push(tr(401 * MS, CLIENT2, Listen, SynRecv, S, C));
    c8_fails(dup_cap(v), "got 2 children");
}

const R2: &str = "10.64.1.1:31004";
const R3: &str = "10.64.1.1:40002";

/// reorder-dup: round 1 a plain kernel connection (CLIENT/CHILD); round 2 a child
/// (CHILD2) of a hand-made peer: FIN sent at 500.5 ms, the missing half at 800 ms,
/// CLOSE_WAIT at 800.05 ms, duplicates from 820 ms.
fn reorder_events() -> Vec<Event> {
    let mut v = vec![listener_open()];
    v.extend(connection(
        10 * MS,
        CLIENT,
        CHILD,
        C,
        10 * MS + MS / 10 + 5000,
        &[],
        true,
    ));
    v.extend([
        tr(500 * MS, CHILD2, Listen, SynRecv, S, R2),
        tr(500 * MS + 10_000, CHILD2, SynRecv, Established, S, R2),
        ev(
            500 * MS + 50_000,
            CHILD2,
            EventKind::AcceptReturn {
                listen_fd: 3,
                ret: 6,
                accept4: true,
            },
            S,
            R2,
        ),
        tr(800 * MS + 50_000, CHILD2, Established, CloseWait, S, R2),
        tr(800 * MS + 200_000, CHILD2, CloseWait, LastAck, S, R2),
        tr(800 * MS + 300_000, CHILD2, LastAck, Close, S, R2),
    ]);
    // Round 3 at 1000 ms: one retransmit of the dropped segment.
    v.extend(connection(
        1000 * MS,
        CLIENT3,
        CHILD3,
        R3,
        1000 * MS + MS / 10 + 5000,
        &[],
        true,
    ));
    v.push(ev(
        1005 * MS,
        CLIENT3,
        EventKind::Retransmit { state: Established },
        R3,
        S,
    ));
    v
}

fn reorder_cap(events: Vec<Event>) -> Capture {
    let mut cap = build(events);
    for (k, v) in [
        ("round1_dup_packets", 14),
        ("round1_sent_bytes", 64),
        ("round1_read_bytes", 64),
        ("round1_read_exact", 1),
        ("raw_fin_sent", 500 * MS + 500_000),
        ("raw_gap_fill_sent", 800 * MS),
        ("raw_duplicates_sent", 820 * MS),
        ("round2_sent_bytes", 16),
        ("round2_read_bytes", 16),
        ("round2_read_exact", 1),
        ("round3_dropped_packets", 1),
        ("round3_sent_bytes", 64),
        ("round3_read_bytes", 64),
        ("round3_read_exact", 1),
    ] {
        cap.marks.insert(k.into(), v);
    }
    cap
}

fn move_close_wait(v: &mut [Event], to: u64) {
    for e in v.iter_mut() {
        if e.skaddr == CHILD2 && matches!(e.kind, EventKind::Transition { new: CloseWait, .. }) {
            e.ts_ns = to;
        }
    }
}

fn c6_fails(cap: Capture, why: &str) {
    fails(verdict::c6(&cap), why);
}

#[test]
fn c6_holds_and_needs_the_held_fin_and_the_orderly_rounds() {
    assert!(holds(verdict::c6(&reorder_cap(reorder_events()))));
    // The FIN taken on arrival (CLOSE_WAIT right after it was sent): not held.
    let mut v = reorder_events();
    move_close_wait(&mut v, 500 * MS + 600_000);
    c6_fails(reorder_cap(v), "round 2");
    // CLOSE_WAIT only after the duplicates: the first copy of the FIN may have been lost.
    let mut v = reorder_events();
    move_close_wait(&mut v, 820 * MS + 50_000);
    c6_fails(reorder_cap(v), "round 2");
    // A reset on the round-2 child.
    let mut v = reorder_events();
    v.push(ev(
        800 * MS + 100_000,
        CHILD2,
        EventKind::ResetReceived,
        S,
        R2,
    ));
    c6_fails(reorder_cap(v), "round 2");
    // The application did not read exactly what was sent.
    let mut cap = reorder_cap(reorder_events());
    cap.marks.insert("round2_read_exact".into(), 0);
    c6_fails(cap, "round 2");
    let mut cap = reorder_cap(reorder_events());
    cap.marks.insert("round1_read_exact".into(), 0);
    c6_fails(cap, "round 1");
    // No duplicate made by nftables in round 1.
    let mut cap = reorder_cap(reorder_events());
    cap.marks.insert("round1_dup_packets".into(), 0);
    c6_fails(cap, "round 1");
    // The round-1 sender's FIN never acknowledged (no FIN_WAIT1 → FIN_WAIT2).
    let v = without(reorder_events(), |e| {
        e.skaddr == CLIENT && matches!(e.kind, EventKind::Transition { new: FinWait2, .. })
    });
    c6_fails(reorder_cap(v), "round 1");
    // No round 2 child at all.
    let v = without(reorder_events(), |e| e.skaddr == CHILD2);
    c6_fails(reorder_cap(v), "round 2");
    // Round 2's child at the address of round 1's child (freed, reused by the kernel):
    // still the round-2 child.
    let mut v = reorder_events();
    for e in v.iter_mut().filter(|e| e.skaddr == CHILD2) {
        e.skaddr = CHILD;
    }
    assert!(holds(verdict::c6(&reorder_cap(v))));
    // Round 3: no retransmit of the dropped segment, or more than were dropped.
    let v = without(reorder_events(), |e| {
        matches!(e.kind, EventKind::Retransmit { .. })
    });
    c6_fails(reorder_cap(v), "round 3");
    let mut v = reorder_events();
    v.push(ev(
        1006 * MS,
        CLIENT3,
        EventKind::Retransmit { state: Established },
        R3,
        S,
    ));
    c6_fails(reorder_cap(v), "round 3");
    // Nothing dropped (counter 0), or the bytes read not those sent.
    let mut cap = reorder_cap(reorder_events());
    cap.marks.insert("round3_dropped_packets".into(), 0);
    c6_fails(cap, "round 3");
    let mut cap = reorder_cap(reorder_events());
    cap.marks.insert("round3_read_exact".into(), 0);
    c6_fails(cap, "round 3");
    // No round 3 at all.
    let v = without(reorder_events(), |e| {
        e.skaddr == CLIENT3 || e.skaddr == CHILD3
    });
    c6_fails(reorder_cap(v), "round 3");
}

/// Sets the ISNs carried by `sk`'s transition to ESTABLISHED.
fn set_isn(v: &mut [Event], sk: u64, isn: Option<(u32, u32)>) {
    for e in v.iter_mut() {
        if e.skaddr == sk
            && matches!(
                e.kind,
                EventKind::Transition {
                    new: Established,
                    ..
                }
            )
        {
            e.isn = isn;
        }
    }
}

fn isn_plain() -> Vec<Event> {
    let mut v = plain();
    set_isn(&mut v, CLIENT, Some((1000, 7000)));
    set_isn(&mut v, CHILD, Some((7000, 1000)));
    v
}

fn c5_fails(events: Vec<Event>, why: &str) {
    let v = verdict::c5(&build(events));
    assert!(!v.holds, "C5 held: {}", v.text);
    assert!(
        v.text.contains(why),
        "C5 failed for another reason: {}",
        v.text
    );
}

#[test]
fn c5_holds_and_needs_mirrored_isns_and_the_order() {
    assert!(holds(verdict::c5(&build(isn_plain()))));
    // The server's remote ISN is not the client's local one (or the reverse).
    let mut v = isn_plain();
    set_isn(&mut v, CHILD, Some((7000, 1001)));
    c5_fails(v, "did not mirror");
    let mut v = isn_plain();
    set_isn(&mut v, CLIENT, Some((1000, 7001)));
    c5_fails(v, "did not mirror");
    // An ISN not read.
    let mut v = isn_plain();
    set_isn(&mut v, CHILD, None);
    c5_fails(v, "did not mirror");
    // The server ESTABLISHED before the client: not the three-step order.
    let mut v = isn_plain();
    for e in v.iter_mut() {
        if e.skaddr == CHILD
            && matches!(
                e.kind,
                EventKind::Transition {
                    new: Established,
                    ..
                }
            )
        {
            e.ts_ns = 10 * MS + 1000;
        }
    }
    c5_fails(v, "did not mirror");
    // No server child.
    let v = without(isn_plain(), |e| e.skaddr == CHILD);
    c5_fails(v, "no client/server pair");
}

/// isn-reuse: two connections from C, at 10 ms and 200 ms, with different ISNs; the
/// old RST (first connection's ISN + 4) at 205 ms, the current one at 207 ms, which
/// resets the second child.
fn reuse_events() -> Vec<Event> {
    let mut v = vec![listener_open()];
    v.extend(connection(
        10 * MS,
        CLIENT,
        CHILD,
        C,
        10 * MS + MS / 5,
        &[],
        true,
    ));
    v.extend(connection(
        200 * MS,
        CLIENT2,
        CHILD2,
        C,
        200 * MS + MS / 5,
        &[],
        true,
    ));
    set_isn(&mut v, CLIENT, Some((1000, 7000)));
    set_isn(&mut v, CHILD, Some((7000, 1000)));
    set_isn(&mut v, CLIENT2, Some((4_000_000, 9_000_000)));
    set_isn(&mut v, CHILD2, Some((9_000_000, 4_000_000)));
    v.push(ev(
        207 * MS + 70_000,
        CHILD2,
        EventKind::ResetReceived,
        S,
        C,
    ));
    v
}

fn reuse(events: Vec<Event>) -> Capture {
    let mut cap = build(events);
    for (k, v) in [
        ("round1_syn_seq_at_server", 1000),
        ("round2_syn_seq_at_server", 4_000_000),
        ("old_rst_sent", 205 * MS),
        ("old_rst_seq_at_server", 1004),
        ("current_rst_sent", 207 * MS),
        ("current_rst_seq_at_server", 4_000_004),
    ] {
        cap.marks.insert(k.into(), v);
    }
    cap
}

fn c7_fails(cap: Capture, why: &str) {
    fails(verdict::c7(&cap), why);
}

#[test]
fn c7_holds_and_needs_two_isns_on_one_tuple_and_the_old_rst_ignored() {
    assert!(holds(verdict::c7(&reuse(reuse_events()))));
    assert!(holds(verdict::c5(&reuse(reuse_events()))));
    // The same client ISN twice, or the same server ISN twice.
    let mut v = reuse_events();
    set_isn(&mut v, CLIENT2, Some((1000, 9_000_000)));
    c7_fails(reuse(v), "ISN repeated");
    let mut v = reuse_events();
    set_isn(&mut v, CHILD2, Some((7000, 4_000_000)));
    c7_fails(reuse(v), "ISN repeated");
    // An ISN not read.
    let mut v = reuse_events();
    set_isn(&mut v, CHILD2, None);
    c7_fails(reuse(v), "ISN not read");
    // The second connection began before the first closed.
    let mut v = without(reuse_events(), |e| {
        e.skaddr == CLIENT2 || e.skaddr == CHILD2
    });
    let mut second = connection(30 * MS, CLIENT2, CHILD2, C, 30 * MS + MS / 5, &[], true);
    set_isn(&mut second, CLIENT2, Some((4_000_000, 9_000_000)));
    set_isn(&mut second, CHILD2, Some((9_000_000, 4_000_000)));
    v.extend(second);
    c7_fails(reuse(v), "not one after the other");
    // Another client port: not the same 4-tuple.
    let mut v = without(reuse_events(), |e| {
        e.skaddr == CLIENT2 || e.skaddr == CHILD2
    });
    let mut second = connection(200 * MS, CLIENT2, CHILD2, C2, 200 * MS + MS / 5, &[], true);
    set_isn(&mut second, CLIENT2, Some((4_000_000, 9_000_000)));
    set_isn(&mut second, CHILD2, Some((9_000_000, 4_000_000)));
    v.extend(second);
    c7_fails(reuse(v), "no two client connections");
    // The old RST reset the second connection.
    let mut v = reuse_events();
    v.push(ev(
        205 * MS + 70_000,
        CHILD2,
        EventKind::ResetReceived,
        S,
        C,
    ));
    c7_fails(reuse(v), "the old RST");
    // The current RST did not: nothing shows a reset would have been seen.
    let v = without(reuse_events(), |e| e.kind == EventKind::ResetReceived);
    c7_fails(reuse(v), "was not seen resetting it");
    // The SYNs at the server were not the traced ISNs.
    let mut cap = reuse(reuse_events());
    cap.marks
        .insert("round2_syn_seq_at_server".into(), 4_000_001);
    c7_fails(cap, "not the ISNs the tracer read");
    // The "old" RST was in the second connection's sequence space.
    let mut cap = reuse(reuse_events());
    cap.marks.insert("old_rst_seq_at_server".into(), 4_000_002);
    c7_fails(cap, "not at the first");
    // Not recorded at all.
    c7_fails(build(reuse_events()), "were not recorded");
}
