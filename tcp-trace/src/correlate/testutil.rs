//! Synthetic events for the correlator and renderer tests.
use std::net::{IpAddr, SocketAddr};

use super::{Config, Connection, Correlator};
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

/// The loopback connection of DESIGN §1: listener on 0.0.0.0:8080 (nginx 17), client
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
