//! Every cause from a synthetic connection, and the same connection without the
//! decisive fact: the diagnosis must change.
use super::*;
use crate::correlate::{AcceptQueue, StateEntry, SyscallReturn};
use crate::decode::{Comm, Family, TcpState::*};

const MS: u64 = 1_000_000;
const S: u64 = 1_000_000_000;
const T0: u64 = 100 * S;

fn cfg() -> Config {
    Config::default()
}

fn conn(role: Role, states: &[(TcpState, u64)]) -> Connection {
    let mut c = Connection::new(7, role, 0xffff_0000_0000_1000, Family::Inet, T0);
    let (l, r) = match role {
        Role::Server => (("10.0.0.2", 80), ("10.0.0.1", 40000)),
        _ => (("10.0.0.1", 40000), ("10.0.0.2", 80)),
    };
    c.saddr = Some(l.0.parse().unwrap());
    c.sport = l.1;
    c.daddr = Some(r.0.parse().unwrap());
    c.dport = r.1;
    c.pid = Some(4242);
    let mut comm = [0u8; 16];
    comm[..4].copy_from_slice(b"curl");
    c.comm = Some(Comm(comm));
    c.states = states
        .iter()
        .map(|&(state, t)| StateEntry {
            state,
            t_ns: T0 + t,
        })
        .collect();
    c.last_ts_ns = c.states.last().map(|e| e.t_ns).unwrap_or(T0);
    c
}

fn done(mut c: Connection) -> Connection {
    c.finish(true, false);
    c
}

fn syscall(t: u64, ret: i64) -> SyscallReturn {
    SyscallReturn {
        ret,
        errno: Connection::errno_name(ret),
        t_ns: T0 + t,
        fd: 3,
        accept4: false,
    }
}

/// A client: SYN at 0, ESTABLISHED at `est`, connect() returns then, closes fast
/// (active close, TIME_WAIT).
fn client(est: u64) -> Connection {
    let mut c = conn(
        Role::Client,
        &[
            (Close, 0),
            (SynSent, 0),
            (Established, est),
            (FinWait1, est + 5 * MS),
            (FinWait2, est + 6 * MS),
            (Close, est + 7 * MS),
        ],
    );
    c.connect = Some(syscall(est + 10_000, 0));
    c
}

/// A server child: SYN_RECV at `est - 0.1 ms`, accept() `wait` after ESTABLISHED,
/// passive close.
fn server(est: u64, wait: u64) -> Connection {
    let mut c = conn(
        Role::Server,
        &[
            (Listen, est - 100_000),
            (SynRecv, est - 100_000),
            (Established, est),
            (CloseWait, est + wait + 5 * MS),
            (LastAck, est + wait + 6 * MS),
            (Close, est + wait + 7 * MS),
        ],
    );
    c.accept = Some(syscall(est + wait, 5));
    c
}

fn cause(c: &Connection) -> Option<Cause> {
    diagnose(c, &cfg()).map(|d| d.cause)
}

#[test]
fn quick_connection_is_not_diagnosed() {
    assert_eq!(cause(&done(client(MS))), None);
    assert_eq!(cause(&done(server(MS, MS))), None);
}

#[test]
fn lost_syn_and_without_the_retransmit() {
    let mut c = client(1020 * MS);
    c.syn_retransmits = 1;
    c.syn_retransmit_ts_ns = vec![T0 + 1000 * MS];
    let d = diagnose(&done(c.clone()), &cfg()).unwrap();
    assert_eq!(d.cause, Cause::LostSyn);
    assert_eq!(d.phase, Phase::Connect);
    assert_eq!(d.retransmits, 1);
    assert_eq!(d.duration_ns, Some(1020 * MS + 10_000));
    assert_eq!(
        crate::render::explain::sentence(&d),
        "connect to 10.0.0.2:80 took 1.02 s because the first SYN was lost (1 SYN retransmit after 1.00 s)"
    );
    // Without the retransmit the same delay is a slow answer, not a loss.
    c.syn_retransmits = 0;
    c.syn_retransmit_ts_ns.clear();
    assert_eq!(cause(&done(c)), Some(Cause::SlowHandshake));
}

#[test]
fn lost_syns_show_the_backoff() {
    let mut c = client(3020 * MS);
    c.syn_retransmits = 2;
    c.syn_retransmit_ts_ns = vec![T0 + 1000 * MS, T0 + 3000 * MS];
    let d = diagnose(&done(c), &cfg()).unwrap();
    let s = crate::render::explain::sentence(&d);
    assert!(
        s.contains(
            "the first 2 SYNs were lost (2 SYN retransmits after 1.00 s, 3.00 s; backoff x2.0)"
        ),
        "{s}"
    );
}

#[test]
fn threshold_applies() {
    let mut c = client(300 * MS);
    c.syn_retransmits = 1;
    c.syn_retransmit_ts_ns = vec![T0 + 200 * MS];
    let c = done(c);
    assert_eq!(cause(&c), Some(Cause::LostSyn));
    let slow = Config {
        slow_ns: 500 * MS,
        ..cfg()
    };
    assert_eq!(diagnose(&c, &slow), None);
}

#[test]
fn lost_synack_and_without_the_retransmit() {
    // Third ACK dropped: SYN-ACK retransmitted at 1 s, the ACK (with data) came at 1.5 s.
    let mut c = server(1500 * MS, MS);
    c.synack_retransmits = 1;
    c.synack_retransmit_ts_ns = vec![T0 + 1000 * MS];
    let d = diagnose(&done(c.clone()), &cfg()).unwrap();
    assert_eq!(d.cause, Cause::LostSynAck);
    assert_eq!(d.duration_ns, Some(500 * MS));
    assert_eq!(d.retransmits, 1);
    // Without it the server's handshake (SYN_RECV → ESTABLISHED) was quick.
    c.synack_retransmits = 0;
    c.synack_retransmit_ts_ns.clear();
    assert_eq!(cause(&done(c)), None);
}

#[test]
fn full_accept_queue_and_without_the_queue_fact() {
    let mut c = server(1500 * MS, MS);
    c.synack_retransmits = 1;
    c.synack_retransmit_ts_ns = vec![T0 + 1000 * MS];
    c.accept_queue = Some(AcceptQueue { len: 4, max: 4 });
    let d = diagnose(&done(c.clone()), &cfg()).unwrap();
    assert_eq!(d.cause, Cause::AcceptQueueFull);
    assert!(
        crate::render::explain::sentence(&d).contains("accept queue was full (4/4 when queued)")
    );
    // A queue with room: the same retransmit is a loss.
    c.accept_queue = Some(AcceptQueue { len: 1, max: 4 });
    assert_eq!(cause(&done(c.clone())), Some(Cause::LostSynAck));
    // Not read at all (the kernel side did not fill it): never claimed.
    c.accept_queue = None;
    assert_eq!(cause(&done(c)), Some(Cause::LostSynAck));
}

#[test]
fn full_accept_queue_with_a_late_child() {
    let mut c = server(MS, 300 * MS);
    c.accept_queue = Some(AcceptQueue { len: 128, max: 128 });
    let d = diagnose(&done(c.clone()), &cfg()).unwrap();
    assert_eq!((d.cause, d.phase), (Cause::AcceptQueueFull, Phase::Accept));
    c.accept_queue = Some(AcceptQueue { len: 3, max: 128 });
    let d = diagnose(&done(c), &cfg()).unwrap();
    assert_eq!(d.cause, Cause::SlowAccept);
    assert!(crate::render::explain::sentence(&d).contains("queue 3/128"));
}

#[test]
fn slow_accept_and_without_the_wait() {
    let d = diagnose(&done(server(MS, 500 * MS)), &cfg()).unwrap();
    assert_eq!(d.cause, Cause::SlowAccept);
    assert_eq!(d.duration_ns, Some(500 * MS));
    let s = crate::render::explain::sentence(&d);
    assert!(
        s.contains("waited 500 ms in the accept queue: process 4242 (curl) called accept() late"),
        "{s}"
    );
    assert_eq!(cause(&done(server(MS, 5 * MS))), None);
}

#[test]
fn refused_by_the_remote_end() {
    let mut c = conn(Role::Client, &[(Close, 0), (SynSent, 0), (Close, MS / 10)]);
    c.resets_received = 1;
    c.reset_received_ts_ns = vec![T0 + MS / 10];
    c.connect = Some(syscall(MS / 5, -111));
    let d = diagnose(&done(c.clone()), &cfg()).unwrap();
    assert_eq!(d.cause, Cause::Refused);
    assert_eq!(d.by, Some(End::Remote));
    assert_eq!(d.errno, Some("ECONNREFUSED"));
    assert_eq!(
        crate::render::explain::sentence(&d),
        "connect to 10.0.0.2:80 was refused after 0.10 ms: reset by the remote end (ECONNREFUSED)"
    );
    // Without the reset and the error, a close in SYN_SENT is an abort: nothing slow.
    c.resets_received = 0;
    c.reset_received_ts_ns.clear();
    c.connect = Some(syscall(MS / 5, 0));
    assert_eq!(cause(&done(c)), None);
}

#[test]
fn timed_out_and_without_the_retransmits() {
    let mut c = conn(Role::Client, &[(Close, 0), (SynSent, 0), (Close, 7 * S)]);
    c.syn_retransmits = 2;
    c.syn_retransmit_ts_ns = vec![T0 + S, T0 + 3 * S];
    c.connect = Some(syscall(7 * S, -110));
    let d = diagnose(&done(c.clone()), &cfg()).unwrap();
    assert_eq!(d.cause, Cause::TimedOut);
    assert_eq!(d.duration_ns, Some(7 * S));
    assert!(crate::render::explain::sentence(&d).contains("no answer to 3 SYNs"));
    // The kernel giving up is told by the retransmits and the CLOSE from SYN_SENT:
    // without them and the error it is an abort, and a slow one.
    c.syn_retransmits = 0;
    c.syn_retransmit_ts_ns.clear();
    c.connect = Some(syscall(7 * S, 0));
    assert_ne!(cause(&done(c)), Some(Cause::TimedOut));
}

#[test]
fn reset_by_either_end() {
    let mut c = client(MS);
    c.states.truncate(3);
    c.states.push(StateEntry {
        state: Close,
        t_ns: T0 + 50 * MS,
    });
    c.resets_received = 1;
    c.reset_received_ts_ns = vec![T0 + 50 * MS];
    let d = diagnose(&done(c.clone()), &cfg()).unwrap();
    assert_eq!((d.cause, d.by), (Cause::Reset, Some(End::Remote)));
    c.resets_received = 0;
    c.reset_received_ts_ns.clear();
    c.resets_sent = 1;
    c.reset_sent_ts_ns = vec![T0 + 50 * MS];
    let d = diagnose(&done(c.clone()), &cfg()).unwrap();
    assert_eq!((d.cause, d.by), (Cause::Reset, Some(End::Local)));
    c.resets_sent = 0;
    c.reset_sent_ts_ns.clear();
    assert_eq!(cause(&done(c)), None);
}

#[test]
fn close_wait_held_by_the_application() {
    let c = conn(
        Role::Server,
        &[
            (Listen, 0),
            (SynRecv, 0),
            (Established, MS),
            (CloseWait, 10 * MS),
            (LastAck, 2010 * MS),
            (Close, 2011 * MS),
        ],
    );
    let d = diagnose(&done(c.clone()), &cfg()).unwrap();
    assert_eq!(d.cause, Cause::SlowCloseWait);
    assert_eq!(d.duration_ns, Some(2000 * MS));
    // The same close time spent elsewhere (LAST_ACK waiting for the ACK of the FIN).
    let c = conn(
        Role::Server,
        &[
            (Listen, 0),
            (SynRecv, 0),
            (Established, MS),
            (CloseWait, 10 * MS),
            (LastAck, 11 * MS),
            (Close, 2011 * MS),
        ],
    );
    assert_eq!(cause(&done(c)), Some(Cause::SlowClose));
}

#[test]
fn fin_wait2_waiting_for_the_peer() {
    let mut c = client(MS);
    c.states[4].t_ns = T0 + 7 * MS;
    c.states[5].t_ns = T0 + 3007 * MS;
    let d = diagnose(&done(c.clone()), &cfg()).unwrap();
    assert_eq!((d.cause, d.by), (Cause::SlowFinWait2, Some(End::Remote)));
    assert_eq!(d.duration_ns, Some(3000 * MS));
    // The time spent in FIN_WAIT1 instead, with FIN retransmits there.
    c.states[4].t_ns = T0 + 3006 * MS;
    c.retransmits = 2;
    c.fin_retransmits = 2;
    c.retransmit_ts_ns = vec![T0 + 206 * MS, T0 + 606 * MS];
    let d = diagnose(&done(c.clone()), &cfg()).unwrap();
    assert_eq!(d.cause, Cause::LostFin);
    assert_eq!(d.retransmits, 2);
    // Without the retransmits: slow, cause not shown.
    c.retransmits = 0;
    c.fin_retransmits = 0;
    c.retransmit_ts_ns.clear();
    assert_eq!(cause(&done(c)), Some(Cause::SlowClose));
}

#[test]
fn slow_connect_return() {
    let mut c = client(MS);
    c.connect = Some(syscall(MS + 400 * MS, 0));
    let c = done(c);
    // The connect latency includes the late return: it is that, not a slow handshake.
    let d = diagnose(&c, &cfg()).unwrap();
    assert_eq!(d.cause, Cause::SlowHandshake);
    let mut c2 = client(MS);
    c2.connect = Some(syscall(MS + 10_000, 0));
    assert_eq!(cause(&done(c2)), None);
}

#[test]
fn close_wait_leak_aggregate() {
    let mut agg = Aggregator::new(Config {
        close_wait_ns: 10 * S,
        ..cfg()
    });
    let open: Vec<Connection> = (0..3)
        .map(|i| {
            let mut c = conn(
                Role::Client,
                &[
                    (Listen, 0),
                    (SynRecv, 0),
                    (Established, MS),
                    (CloseWait, i * S),
                ],
            );
            c.daddr = Some("10.0.0.5".parse().unwrap());
            c.dport = 5432;
            c
        })
        .collect();
    // At 11 s two are older than 10 s.
    let d = agg.close_wait_leaks(&open, [], T0 + 11 * S, false);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].count, Some(2));
    assert_eq!(d[0].oldest_ns, Some(11 * S));
    assert_eq!(
        crate::render::explain::sentence(&d[0]),
        "process 4242 (curl) holds 2 CLOSE_WAIT sockets to 10.0.0.5:5432 (the peer closed, the application did not), oldest 11.00 s"
    );
    // Unchanged: not reported again, unless asked for all.
    assert!(
        agg.close_wait_leaks(&open, [], T0 + 11 * S, false)
            .is_empty()
    );
    assert_eq!(agg.close_wait_leaks(&open, [], T0 + 11 * S, true).len(), 1);
    assert_eq!(
        agg.close_wait_leaks(&open, [], T0 + 13 * S, false)[0].count,
        Some(3)
    );
    // A server's sockets from clients on different ports are one group.
    let accepted: Vec<Connection> = (0..3u16)
        .map(|i| {
            let mut c = conn(
                Role::Server,
                &[(Listen, 0), (SynRecv, 0), (Established, MS), (CloseWait, 0)],
            );
            c.dport = 40000 + i;
            c
        })
        .collect();
    let d = agg.close_wait_leaks(&accepted, [], T0 + 11 * S, false);
    assert_eq!(d.len(), 1);
    assert_eq!(
        crate::render::explain::sentence(&d[0]),
        "process 4242 (curl) holds 3 CLOSE_WAIT sockets accepted on 10.0.0.2:80 from 10.0.0.1 (the peer closed, the application did not), oldest 11.00 s"
    );
    // Without the CLOSE_WAIT (the application closed: LAST_ACK), no leak.
    let mut closed = open.clone();
    for c in &mut closed {
        c.states.push(StateEntry {
            state: LastAck,
            t_ns: T0 + 5 * S,
        });
    }
    assert!(
        agg.close_wait_leaks(&closed, [], T0 + 13 * S, true)
            .is_empty()
    );
}

/// Sockets already in CLOSE_WAIT when the socket table was read (at `T0`) join the
/// group of a traced one; their age counts from the table (a lower bound, said so),
/// and they are not reported before the threshold.
#[test]
fn close_wait_leak_from_before_the_start() {
    let mut agg = Aggregator::new(Config {
        close_wait_ns: 10 * S,
        ..cfg()
    });
    let at_start = |n: u16| {
        (0..n).map(|i| OpenAtStart {
            pid: Some(4242),
            comm: Some("curl".to_string()),
            role: Role::Server,
            local: ("10.0.0.2".parse().unwrap(), 80),
            remote: ("10.0.0.1".parse().unwrap(), 41000 + i),
            since_ns: T0,
        })
    };
    let none: Vec<Connection> = Vec::new();
    // Younger than the threshold as far as the trace knows: not yet.
    assert!(
        agg.close_wait_leaks(&none, at_start(2), T0 + 9 * S, true)
            .is_empty()
    );
    let mut traced = conn(
        Role::Server,
        &[(Listen, 0), (SynRecv, 0), (Established, MS), (CloseWait, S)],
    );
    traced.dport = 40000;
    let d = agg.close_wait_leaks([&traced], at_start(2), T0 + 12 * S, false);
    assert_eq!(d.len(), 1, "{d:#?}");
    assert_eq!((d[0].count, d[0].at_start), (Some(3), Some(2)));
    assert_eq!(d[0].oldest_ns, Some(12 * S));
    assert_eq!(
        crate::render::explain::sentence(&d[0]),
        "process 4242 (curl) holds 3 CLOSE_WAIT sockets accepted on 10.0.0.2:80 from 10.0.0.1 (the peer closed, the application did not), oldest 12.00 s or more (2 of them already in CLOSE_WAIT when tcp-trace started)"
    );
    // Only traced ones: no lower bound to speak of.
    let d = agg.close_wait_leaks([&traced], at_start(0), T0 + 12 * S, true);
    assert_eq!(d[0].at_start, None);
}

/// TIME_WAIT sockets from the socket table count as traced ones do, each until its
/// own timer runs out, in time order with the traced ones.
#[test]
fn time_wait_sockets_from_before_the_start_count_until_their_timer_ends() {
    let mut agg = Aggregator::new(Config {
        time_wait_min: 100,
        ..cfg()
    });
    let range = PortRange::parse("32768\t60999\n", "0\n").unwrap();
    let remote: IpAddr = "10.0.0.2".parse().unwrap();
    // 80 with 10 s left, 40 with 50 s left, read at T0; then 30 traced at T0 + 1 s.
    let table = (0..120u32).map(|i| {
        let left = if i < 80 { 10_000 } else { 50_000 };
        (left, remote, 80, 50000 + i as u16)
    });
    agg.time_wait_at_start(T0, table);
    for i in 0..30u16 {
        let mut c = done(client(MS));
        c.sport = 40000 + i;
        c.time_wait_t_ns = Some(T0 + S);
        agg.push(&c);
    }
    let count = |agg: &mut Aggregator, t: u64| {
        agg.time_wait_pressure(Some(range), t, true)
            .first()
            .and_then(|d| d.count)
    };
    assert_eq!(count(&mut agg, T0 + 2 * S), Some(150));
    // The 80 go at T0 + 10 s: 70 left, under the threshold.
    assert_eq!(count(&mut agg, T0 + 11 * S), None);
    let mut agg2 = Aggregator::new(Config {
        time_wait_min: 60,
        ..cfg()
    });
    agg2.time_wait_at_start(
        T0,
        (0..120u32).map(|i| {
            (
                if i < 80 { 10_000 } else { 50_000 },
                remote,
                80,
                50000 + i as u16,
            )
        }),
    );
    assert_eq!(count(&mut agg2, T0 + 9 * S), Some(120));
    assert_eq!(count(&mut agg2, T0 + 11 * S), None, "40 left");
}

/// The table is read a little after the start: a TIME_WAIT socket the trace also saw
/// enter TIME_WAIT, before or after the table came, counts once.
#[test]
fn a_time_wait_socket_in_the_table_and_the_trace_counts_once() {
    let mut agg = Aggregator::new(Config {
        time_wait_min: 1,
        ..cfg()
    });
    let range = PortRange::parse("32768\t60999\n", "0\n").unwrap();
    let remote: IpAddr = "10.0.0.2".parse().unwrap();
    let traced = |sport: u16| {
        let mut c = done(client(MS));
        c.sport = sport;
        c.time_wait_t_ns = Some(T0 + MS);
        c
    };
    // Traced before the table came, and in it.
    agg.push(&traced(40001));
    agg.time_wait_at_start(
        T0 + 2 * MS,
        [(59_000, remote, 80, 40001), (59_000, remote, 80, 40002)],
    );
    // Traced (its connection finished) after the table came, and in it.
    agg.push(&traced(40002));
    // Only traced.
    agg.push(&traced(40003));
    let d = agg.time_wait_pressure(Some(range), T0 + S, true);
    assert_eq!(d[0].count, Some(3), "{d:#?}");
}

#[test]
fn time_wait_pressure_aggregate() {
    let mut agg = Aggregator::new(Config {
        time_wait_min: 100,
        ..cfg()
    });
    let range = PortRange::parse("32768\t60999\n", "0\n").unwrap();
    assert_eq!(range.ports(), 28232);
    for i in 0..15_000u64 {
        let mut c = done(client(MS));
        c.sport = (32768 + i % 28000) as u16;
        assert!(c.time_wait);
        c.time_wait_t_ns = Some(T0 + i * 1000);
        agg.push(&c);
    }
    let d = agg.time_wait_pressure(Some(range), T0 + S, false);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].count, Some(15_000));
    assert_eq!(d[0].risk, Some("high"));
    let s = crate::render::explain::sentence(&d[0]);
    assert!(
        s.starts_with("15000 TIME_WAIT sockets to 10.0.0.2:80 hold 15000 of the 28232 local ports (32768-60999, 53.1%), tcp_tw_reuse=0: high risk"),
        "{s}"
    );
    // tcp_tw_reuse on: the ports are taken over, low risk.
    let reuse = PortRange {
        tw_reuse: 1,
        ..range
    };
    assert_eq!(
        agg.time_wait_pressure(Some(reuse), T0 + S, true)[0].risk,
        Some("low")
    );
    // 60 s later they are gone.
    assert!(
        agg.time_wait_pressure(Some(range), T0 + 62 * S, true)
            .is_empty()
    );
    // Loopback with the default tw_reuse=2 is low too.
    assert_eq!(
        time_wait_risk(
            20_000,
            Some(PortRange {
                tw_reuse: 2,
                ..range
            }),
            "127.0.0.1".parse().unwrap()
        ),
        "low"
    );
}

#[test]
fn json_line_has_type_and_message() {
    let mut c = client(1020 * MS);
    c.syn_retransmits = 1;
    c.syn_retransmit_ts_ns = vec![T0 + 1000 * MS];
    let d = diagnose(&done(c), &cfg()).unwrap();
    let mut out = Vec::new();
    crate::render::explain::json(&mut out, &d, Some(1_000_000_000_123)).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["type"], "diagnosis");
    assert_eq!(v["time"], "1970-01-01T00:16:40.000000123Z");
    assert_eq!(v["cause"], "lost_syn");
    assert_eq!(v["phase"], "connect");
    assert_eq!(v["retransmits"], 1);
    assert_eq!(v["remote"], "10.0.0.2:80");
    assert_eq!(v["pid"], 4242);
    assert!(v["message"].as_str().unwrap().starts_with("connect to"));
}

#[test]
fn json_cause_names_are_the_names() {
    use Cause::*;
    for c in [
        LostSyn,
        SlowHandshake,
        LostSynAck,
        AcceptQueueFull,
        SlowAccept,
        SlowConnectReturn,
        Refused,
        TimedOut,
        Reset,
        LostFin,
        SlowCloseWait,
        SlowFinWait2,
        SlowClose,
        CloseWaitLeak,
        TimeWaitPressure,
    ] {
        assert_eq!(serde_json::to_value(c).unwrap(), c.name());
    }
}

#[test]
fn fin_wait2_after_a_handover_lasts_until_the_peers_fin() {
    // The application closed; the ACK of its FIN came and a timewait socket in
    // FIN_WAIT2 took over at once (FIN_WAIT2 -> CLOSE); the peer sent its FIN 500 ms
    // later (known from the peer on this host).
    let mut c = client(MS);
    let c = {
        c.finish(true, false);
        c.fin_wait2_handover = true;
        c.time_wait = true;
        c.time_wait_t_ns = Some(T0 + MS + 507 * MS);
        c
    };
    let d = diagnose(&c, &cfg()).unwrap();
    assert_eq!((d.cause, d.by), (Cause::SlowFinWait2, Some(End::Remote)));
    assert_eq!(d.duration_ns, Some(501 * MS));
    // Without the handover (the CLOSE was the TIME_WAIT entry) the close was quick.
    let mut quick = c.clone();
    quick.fin_wait2_handover = false;
    assert_eq!(cause(&quick), None);
}
