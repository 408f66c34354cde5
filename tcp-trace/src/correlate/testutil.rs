//! Synthetic events for the correlator and renderer tests.
use std::net::{IpAddr, SocketAddr};

use super::{Config, Connection, Correlator};
use crate::decode::TcpState::*;
use crate::decode::{Comm, Event, EventKind, Family, Owner, TcpState};

pub(crate) fn ep(s: &str) -> (IpAddr, u16) {
    let a: SocketAddr = s.parse().expect("socket address");
    (a.ip(), a.port())
}

/// Chainable builder of one [`Event`].
#[derive(Clone, Copy)]
pub(crate) struct Ev(pub Event);

impl Ev {
    fn base(ts_ns: u64, skaddr: u64, kind: EventKind) -> Ev {
        Ev(Event {
            ts_ns,
            skaddr,
            kind,
            family: Family::Inet,
            local: None,
            remote: None,
            ctx_pid: 0,
            ctx_tid: 0,
            task_ctx: false,
            owner: None,
            cgroup_id: 0,
            ns_pid: 0,
            netns: 0,
            listener: 0,
            listener_exact: false,
            accept_queue: None,
            isn: None,
        })
    }
    pub fn tr(ts_ns: u64, skaddr: u64, old: TcpState, new: TcpState) -> Ev {
        Ev::base(ts_ns, skaddr, EventKind::Transition { old, new })
    }
    pub fn synack(ts_ns: u64, listener: u64, req: u64) -> Ev {
        Ev::base(ts_ns, listener, EventKind::SynAckRetransmit { req })
    }
    pub fn retx(ts_ns: u64, skaddr: u64, state: TcpState) -> Ev {
        Ev::base(ts_ns, skaddr, EventKind::Retransmit { state })
    }
    pub fn rst_sent(ts_ns: u64, skaddr: u64) -> Ev {
        Ev::base(
            ts_ns,
            skaddr,
            EventKind::ResetSent {
                state: None,
                reason: None,
            },
        )
    }
    pub fn rst_recv(ts_ns: u64, skaddr: u64) -> Ev {
        Ev::base(ts_ns, skaddr, EventKind::ResetReceived)
    }
    pub fn connect(ts_ns: u64, skaddr: u64, fd: i32, ret: i64) -> Ev {
        Ev::base(ts_ns, skaddr, EventKind::ConnectReturn { fd, ret }).task()
    }
    pub fn accept(ts_ns: u64, child: u64, listen_fd: i32, ret: i64) -> Ev {
        Ev::base(
            ts_ns,
            child,
            EventKind::AcceptReturn {
                listen_fd,
                ret,
                accept4: true,
            },
        )
        .task()
    }
    /// Local and remote end ("127.0.0.1:80", "[::1]:80").
    pub fn tuple(mut self, local: &str, remote: &str) -> Ev {
        let (l, r) = (ep(local), ep(remote));
        self.0.family = if l.0.is_ipv4() {
            Family::Inet
        } else {
            Family::Inet6
        };
        self.0.local = Some(l);
        self.0.remote = Some(r);
        self
    }
    /// Inode of the socket's network namespace.
    pub fn netns(mut self, ns: u32) -> Ev {
        self.0.netns = ns;
        self
    }
    pub fn owner(mut self, pid: u32, comm: &str) -> Ev {
        self.0.owner = Some(Owner {
            pid,
            tid: pid,
            comm: Comm::from_str_lossy(comm),
            from_listener: false,
        });
        self
    }
    pub fn listener_owner(mut self, pid: u32, comm: &str) -> Ev {
        self = self.owner(pid, comm);
        if let Some(o) = self.0.owner.as_mut() {
            o.from_listener = true;
        }
        self
    }
    /// Process context, run by `ctx_pid` (defaults to the owner's pid).
    pub fn task(mut self) -> Ev {
        self.0.task_ctx = true;
        if let Some(o) = self.0.owner {
            self.0.ctx_pid = o.pid;
            self.0.ctx_tid = o.tid;
        }
        self
    }
    /// Softirq context; `ctx_pid` is whoever happened to run (never to be used).
    pub fn softirq(mut self, ctx_pid: u32) -> Ev {
        self.0.task_ctx = false;
        self.0.ctx_pid = ctx_pid;
        self.0.ctx_tid = ctx_pid;
        self
    }
    pub fn ev(self) -> Event {
        self.0
    }
}

pub(crate) const MS: u64 = 1_000_000;
pub(crate) const US: u64 = 1_000;

pub(crate) const LISTENER: u64 = 0xffff_8880_0000_1000;
pub(crate) const CLIENT: u64 = 0xffff_8880_0000_2000;
pub(crate) const CHILD: u64 = 0xffff_8880_0000_3000;

/// The loopback connection of docs/kernel-facts.md ("One loopback connection"): listener on 0.0.0.0:8080 (nginx 17), client
/// curl 4242 from 127.0.0.1:51234; client closes first, server 40 ms later. Times start
/// at 1 s. Connect and accept returns included, the listener closes at the end.
pub(crate) fn design_sequence() -> Vec<Event> {
    use TcpState::*;
    let t0 = 1_000 * MS;
    let cl = "127.0.0.1:51234";
    let sv = "127.0.0.1:8080";
    vec![
        Ev::tr(t0, LISTENER, Close, Listen)
            .tuple("0.0.0.0:8080", "0.0.0.0:0")
            .owner(17, "nginx")
            .task()
            .ev(),
        Ev::tr(t0 + 10 * MS, CLIENT, Close, SynSent)
            .tuple("127.0.0.1:0", sv)
            .owner(4242, "curl")
            .task()
            .ev(),
        Ev::tr(t0 + 10 * MS + 41 * US, CLIENT, SynSent, Established)
            .tuple(cl, sv)
            .owner(4242, "curl")
            .softirq(4242)
            .ev(),
        Ev::tr(t0 + 10 * MS + 44 * US, CHILD, Listen, SynRecv)
            .tuple(sv, cl)
            .listener_owner(17, "nginx")
            .softirq(4242)
            .ev(),
        Ev::tr(t0 + 10 * MS + 45 * US, CHILD, SynRecv, Established)
            .tuple(sv, cl)
            .listener_owner(17, "nginx")
            .softirq(4242)
            .ev(),
        Ev::connect(t0 + 10 * MS + 50 * US, CLIENT, 3, 0)
            .tuple(cl, sv)
            .owner(4242, "curl")
            .task()
            .ev(),
        Ev::accept(t0 + 10 * MS + 90 * US, CHILD, 6, 5)
            .tuple(sv, cl)
            .owner(17, "nginx")
            .task()
            .ev(),
        Ev::tr(t0 + 12 * MS, CLIENT, Established, FinWait1)
            .tuple(cl, sv)
            .owner(4242, "curl")
            .task()
            .ev(),
        Ev::tr(t0 + 12 * MS + 20 * US, CHILD, Established, CloseWait)
            .tuple(sv, cl)
            .owner(17, "nginx")
            .softirq(4242)
            .ev(),
        Ev::tr(t0 + 52 * MS, CHILD, CloseWait, LastAck)
            .tuple(sv, cl)
            .owner(17, "nginx")
            .task()
            .ev(),
        Ev::tr(t0 + 52 * MS + 15 * US, CLIENT, FinWait1, FinWait2)
            .tuple(cl, sv)
            .owner(4242, "curl")
            .softirq(17)
            .ev(),
        Ev::tr(t0 + 52 * MS + 16 * US, CLIENT, FinWait2, Close)
            .tuple(cl, sv)
            .owner(4242, "curl")
            .softirq(17)
            .ev(),
        Ev::tr(t0 + 52 * MS + 30 * US, CHILD, LastAck, Close)
            .tuple(sv, cl)
            .owner(17, "nginx")
            .softirq(17)
            .ev(),
        Ev::tr(t0 + 900 * MS, LISTENER, Listen, Close)
            .tuple("0.0.0.0:8080", "0.0.0.0:0")
            .owner(17, "nginx")
            .task()
            .ev(),
    ]
}

/// [`design_sequence`] as kernels before 6.15 report it (Debian 11's 5.10, 12's 6.1
/// and 6.12): the child's LISTEN → SYN_RECV fires while the child still carries its
/// wildcard listener's addresses (local 0.0.0.0, no remote end); only the local port
/// is already the child's. SYN_RECV → ESTABLISHED has the real tuple.
pub(crate) fn pre615_sequence() -> Vec<Event> {
    let mut ev = design_sequence();
    let child_open = ev
        .iter_mut()
        .find(|e| {
            e.skaddr == CHILD
                && matches!(
                    e.kind,
                    EventKind::Transition {
                        old: Listen,
                        new: SynRecv
                    }
                )
        })
        .expect("LISTEN -> SYN_RECV");
    child_open.local = Some(ep("0.0.0.0:8080"));
    child_open.remote = Some(ep("0.0.0.0:0"));
    ev
}

pub(crate) const T0: u64 = 1_000 * MS;
pub(crate) const SV: &str = "127.0.0.1:8080";

/// Client CLOSE→SYN_SENT (port 0) at `t`, ESTABLISHED at `t + 41 µs` from `local`.
pub(crate) fn client_open(t: u64, sk: u64, local: &str, remote: &str) -> Vec<Event> {
    vec![
        Ev::tr(t, sk, Close, SynSent)
            .tuple(&zero_port(local), remote)
            .owner(4242, "curl")
            .task()
            .ev(),
        Ev::tr(t + 41 * US, sk, SynSent, Established)
            .tuple(local, remote)
            .owner(4242, "curl")
            .softirq(1)
            .ev(),
    ]
}

pub(crate) fn zero_port(ep_str: &str) -> String {
    let (a, _) = ep(ep_str);
    std::net::SocketAddr::new(a, 0).to_string()
}

/// Child created from `listener`'s request, established 1 µs later.
pub(crate) fn child_open(t: u64, sk: u64, local: &str, remote: &str) -> Vec<Event> {
    vec![
        Ev::tr(t, sk, Listen, SynRecv)
            .tuple(local, remote)
            .listener_owner(17, "nginx")
            .softirq(4242)
            .ev(),
        Ev::tr(t + US, sk, SynRecv, Established)
            .tuple(local, remote)
            .listener_owner(17, "nginx")
            .softirq(4242)
            .ev(),
    ]
}

pub(crate) fn listen(t: u64, sk: u64, local: &str) -> Event {
    Ev::tr(t, sk, Close, Listen)
        .tuple(local, "0.0.0.0:0")
        .owner(17, "nginx")
        .task()
        .ev()
}

/// Server-closes-first teardown where the server socket is an orphan: its FIN is ACKed
/// by a pure ACK, the kernel hands it to a FIN_WAIT2 timewait socket at once
/// (FIN_WAIT1 → FIN_WAIT2 → CLOSE back to back); the client closes `client_close_after`
/// later (None: never, while traced). Returns (events, server CLOSE time).
pub(crate) fn server_first_orphan(client_close_after: Option<u64>) -> (Vec<Event>, u64) {
    let cl = "127.0.0.1:40100";
    let mut ev = vec![listen(T0, LISTENER, "0.0.0.0:8080")];
    ev.extend(client_open(T0 + MS, CLIENT, cl, SV));
    ev.extend(child_open(T0 + MS + 50 * US, CHILD, SV, cl));
    let t = T0 + 10 * MS;
    ev.extend([
        Ev::tr(t, CHILD, Established, FinWait1)
            .tuple(SV, cl)
            .owner(17, "nginx")
            .task()
            .ev(),
        Ev::tr(t + 20 * US, CLIENT, Established, CloseWait)
            .tuple(cl, SV)
            .softirq(17)
            .ev(),
        Ev::tr(t + 30 * US, CHILD, FinWait1, FinWait2)
            .tuple(SV, cl)
            .softirq(17)
            .ev(),
        Ev::tr(t + 31 * US, CHILD, FinWait2, Close)
            .tuple(SV, cl)
            .softirq(17)
            .ev(),
    ]);
    if let Some(after) = client_close_after {
        let tf = t + 31 * US + after;
        ev.extend([
            Ev::tr(tf, CLIENT, CloseWait, LastAck)
                .tuple(cl, SV)
                .owner(4242, "curl")
                .task()
                .ev(),
            Ev::tr(tf + 15 * US, CLIENT, LastAck, Close)
                .tuple(cl, SV)
                .softirq(4242)
                .ev(),
        ]);
    }
    (ev, t + 31 * US)
}

/// A client whose final ACK never reaches the server: the server's request sock keeps
/// retransmitting SYN-ACKs and never becomes a child; the client gives up on its data.
pub(crate) fn half_open_client() -> Vec<Event> {
    let cl = "127.0.0.1:40300";
    let mut ev = vec![listen(T0, LISTENER, "0.0.0.0:8080")];
    ev.extend(client_open(T0 + MS, CLIENT, cl, SV));
    ev.push(
        Ev::connect(T0 + MS + 50 * US, CLIENT, 3, 0)
            .owner(4242, "curl")
            .ev(),
    );
    for (k, d) in [1_000u64, 3_000].into_iter().enumerate() {
        ev.push(
            Ev::synack(T0 + MS + d * MS, LISTENER, 0xc0)
                .tuple(SV, cl)
                .softirq(k as u32)
                .ev(),
        );
    }
    ev.push(
        Ev::retx(T0 + 200 * MS, CLIENT, Established)
            .tuple(cl, SV)
            .ev(),
    );
    ev.push(Ev::rst_recv(T0 + 5_000 * MS, CLIENT).tuple(cl, SV).ev());
    ev.push(
        Ev::tr(T0 + 5_000 * MS + US, CLIENT, Established, Close)
            .tuple(cl, SV)
            .ev(),
    );
    ev.push(
        Ev::tr(T0 + 9_000 * MS, LISTENER, Listen, Close)
            .tuple("0.0.0.0:8080", "0.0.0.0:0")
            .owner(17, "nginx")
            .task()
            .ev(),
    );
    ev
}

/// Runs events through a default correlator and returns everything, sorted by id.
pub(crate) fn run(events: &[Event]) -> Vec<Connection> {
    run_with(Config::default(), events)
}

pub(crate) fn run_with(cfg: Config, events: &[Event]) -> Vec<Connection> {
    let mut c = Correlator::new(cfg);
    let mut out = Vec::new();
    for e in events {
        c.push(*e);
        c.drain_finished(&mut out);
    }
    out.extend(c.flush());
    out.sort_by_key(|c| c.id);
    out
}
