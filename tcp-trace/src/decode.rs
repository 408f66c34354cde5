//! Decoder: ring-buffer records ([`RawEvent`] bytes) → typed [`Event`]s.
//!
//! No allocation per event: addresses become `IpAddr`, the command name stays a
//! fixed `[u8; 16]` ([`Comm`]) and is escaped only when printed.
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use tcp_trace_common::{
    AF_INET, AF_INET6, BOOK_STEPS, CONN_RECORD_SIZE, ConnRecord, RAW_EVENT_SIZE, RawEvent,
    book_flags, flags, kind, return_flags, step_flags, tcp_state,
};

/// TCP states with the kernel's numbering (`include/net/tcp_states.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TcpState {
    Established,
    SynSent,
    SynRecv,
    FinWait1,
    FinWait2,
    TimeWait,
    Close,
    CloseWait,
    LastAck,
    Listen,
    Closing,
    NewSynRecv,
    /// A value this build does not know (a newer kernel): shown as `UNKNOWN(n)`.
    Unknown(u8),
}

impl TcpState {
    pub fn from_raw(v: u8) -> TcpState {
        use TcpState::*;
        match v {
            tcp_state::ESTABLISHED => Established,
            tcp_state::SYN_SENT => SynSent,
            tcp_state::SYN_RECV => SynRecv,
            tcp_state::FIN_WAIT1 => FinWait1,
            tcp_state::FIN_WAIT2 => FinWait2,
            tcp_state::TIME_WAIT => TimeWait,
            tcp_state::CLOSE => Close,
            tcp_state::CLOSE_WAIT => CloseWait,
            tcp_state::LAST_ACK => LastAck,
            tcp_state::LISTEN => Listen,
            tcp_state::CLOSING => Closing,
            tcp_state::NEW_SYN_RECV => NewSynRecv,
            n => Unknown(n),
        }
    }

    pub fn raw(self) -> u8 {
        use TcpState::*;
        match self {
            Established => tcp_state::ESTABLISHED,
            SynSent => tcp_state::SYN_SENT,
            SynRecv => tcp_state::SYN_RECV,
            FinWait1 => tcp_state::FIN_WAIT1,
            FinWait2 => tcp_state::FIN_WAIT2,
            TimeWait => tcp_state::TIME_WAIT,
            Close => tcp_state::CLOSE,
            CloseWait => tcp_state::CLOSE_WAIT,
            LastAck => tcp_state::LAST_ACK,
            Listen => tcp_state::LISTEN,
            Closing => tcp_state::CLOSING,
            NewSynRecv => tcp_state::NEW_SYN_RECV,
            Unknown(n) => n,
        }
    }

    /// The RFC 793 name, as `ss` prints it (`UNKNOWN` for unknown values; use
    /// `Display` to get the number too).
    pub fn name(self) -> &'static str {
        use TcpState::*;
        match self {
            Established => "ESTABLISHED",
            SynSent => "SYN_SENT",
            SynRecv => "SYN_RECV",
            FinWait1 => "FIN_WAIT1",
            FinWait2 => "FIN_WAIT2",
            TimeWait => "TIME_WAIT",
            Close => "CLOSE",
            CloseWait => "CLOSE_WAIT",
            LastAck => "LAST_ACK",
            Listen => "LISTEN",
            Closing => "CLOSING",
            NewSynRecv => "NEW_SYN_RECV",
            Unknown(_) => "UNKNOWN",
        }
    }
}

impl fmt::Display for TcpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TcpState::Unknown(n) => write!(f, "UNKNOWN({n})"),
            s => f.pad(s.name()),
        }
    }
}

/// Address family of a socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    Inet,
    Inet6,
    Unknown(u8),
}

impl Family {
    pub fn from_raw(v: u8) -> Family {
        match v {
            AF_INET => Family::Inet,
            AF_INET6 => Family::Inet6,
            n => Family::Unknown(n),
        }
    }
    pub fn raw(self) -> u8 {
        match self {
            Family::Inet => AF_INET,
            Family::Inet6 => AF_INET6,
            Family::Unknown(n) => n,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Family::Inet => "ipv4",
            Family::Inet6 => "ipv6",
            Family::Unknown(_) => "unknown",
        }
    }
}

/// A task's command name as the kernel keeps it: up to 16 bytes, NUL padded, not
/// necessarily UTF-8. `Display` escapes anything that is not printable ASCII.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Comm(pub [u8; 16]);

impl Comm {
    pub fn bytes(&self) -> &[u8] {
        let end = self.0.iter().position(|&b| b == 0).unwrap_or(16);
        &self.0[..end]
    }
    pub fn from_str_lossy(s: &str) -> Comm {
        let mut c = [0u8; 16];
        let b = s.as_bytes();
        let n = b.len().min(15);
        c[..n].copy_from_slice(&b[..n]);
        Comm(c)
    }
    pub fn is_empty(&self) -> bool {
        self.0[0] == 0
    }
}

impl fmt::Display for Comm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print untrusted bytes raw: a comm is set by the process itself.
        let mut buf = String::with_capacity(16);
        for &b in self.bytes() {
            if (0x20..0x7f).contains(&b) && b != b'\\' {
                buf.push(b as char);
            } else {
                buf.push_str(&format!("\\x{b:02x}"));
            }
        }
        f.pad(&buf)
    }
}

impl fmt::Debug for Comm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Comm({self})")
    }
}

/// The process a socket belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    /// Process id (tgid).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    pub comm: Comm,
    /// Learned from the listener on the same port (child socket before accept()).
    pub from_listener: bool,
}

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// `sock:inet_sock_set_state`.
    Transition { old: TcpState, new: TcpState },
    /// `tcp:tcp_retransmit_synack`: `skaddr` is the listener, `req` the request sock.
    SynAckRetransmit { req: u64 },
    /// `tcp:tcp_retransmit_skb`; `state` SYN_SENT means a SYN retransmit.
    Retransmit { state: TcpState },
    /// `tcp:tcp_send_reset`; `reason` is the kernel's `sk_rst_reason` where reported.
    ResetSent {
        state: Option<TcpState>,
        reason: Option<u32>,
    },
    /// `tcp:tcp_receive_reset`.
    ResetReceived,
    /// `connect()` returned (`ret` 0, or `-errno`).
    ConnectReturn { fd: i32, ret: i64 },
    /// `accept()`/`accept4()` returned `ret` (the new fd, or `-errno`) on listener `fd`.
    AcceptReturn {
        listen_fd: i32,
        ret: i64,
        accept4: bool,
    },
}

/// One decoded event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// CLOCK_MONOTONIC nanoseconds.
    pub ts_ns: u64,
    /// Kernel address of the socket (0 when unknown, e.g. a reset to a closed port).
    pub skaddr: u64,
    pub kind: EventKind,
    pub family: Family,
    /// Local end (address, port), when the hook knew it.
    pub local: Option<(IpAddr, u16)>,
    /// Remote end.
    pub remote: Option<(IpAddr, u16)>,
    /// Process and thread that ran the hook: only meaningful when `task_ctx`.
    pub ctx_pid: u32,
    pub ctx_tid: u32,
    /// The hook ran in process context (not softirq).
    pub task_ctx: bool,
    /// The socket's owner as learned in process context.
    pub owner: Option<Owner>,
    pub cgroup_id: u64,
    /// The owner's pid in tcp-trace's own pid namespace (0 = outside it / not asked).
    pub ns_pid: u32,
    /// Inode of the socket's network namespace (0 = unknown).
    pub netns: u32,
    /// A child's LISTEN → SYN_RECV: the kernel address of its listener (0 = unknown),
    /// and whether the kernel named the very listener it was cloned from (socket
    /// storage) rather than the one on its namespace and port.
    pub listener: u64,
    pub listener_exact: bool,
    /// A child's LISTEN → SYN_RECV or a SYN-ACK retransmit: the listener's accept
    /// queue (length, limit) at that moment.
    pub accept_queue: Option<(u32, u32)>,
    /// A transition to ESTABLISHED: the socket's own initial sequence number and its
    /// peer's, read from the kernel's `tcp_sock` (None when not read).
    pub isn: Option<(u32, u32)>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes is shorter than an event (120 or {RAW_EVENT_SIZE} bytes)")]
    Short(usize),
    #[error("unknown event kind {0}")]
    UnknownKind(u8),
    #[error("connection record with {0} steps (at most {BOOK_STEPS})")]
    BookSteps(u8),
}

fn addr(family: u8, raw: &[u8; 16]) -> IpAddr {
    if family == AF_INET {
        IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(*raw))
    }
}

/// Reads a [`RawEvent`] from record bytes (any alignment). A record of the first
/// version (120 bytes, before `ns_pid`/`netns`) reads with those fields zero.
pub fn raw_from_bytes(bytes: &[u8]) -> Result<RawEvent, DecodeError> {
    if bytes.len() < RAW_EVENT_SIZE {
        if bytes.len() < tcp_trace_common::RAW_EVENT_SIZE_V1 {
            return Err(DecodeError::Short(bytes.len()));
        }
        let mut full = [0u8; RAW_EVENT_SIZE];
        full[..bytes.len()].copy_from_slice(bytes);
        // SAFETY: as below, on a full-size buffer.
        return Ok(unsafe { std::ptr::read_unaligned(full.as_ptr().cast::<RawEvent>()) });
    }
    // SAFETY: RawEvent is repr(C), plain old data (every bit pattern is valid), and
    // the slice holds at least size_of::<RawEvent>() bytes; read_unaligned copes
    // with any alignment.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<RawEvent>()) })
}

/// One ring record: a [`RawEvent`] (per-event design), or a socket's book
/// ([`ConnRecord`], per-connection design: told apart by its size) unfolded into the
/// events the per-event design would have written for its steps, in order. Returns
/// how many events `f` got.
pub fn ring_record(bytes: &[u8], mut f: impl FnMut(RawEvent)) -> Result<usize, DecodeError> {
    if bytes.len() != CONN_RECORD_SIZE {
        f(raw_from_bytes(bytes)?);
        return Ok(1);
    }
    // SAFETY: ConnRecord is repr(C) plain old data (every bit pattern is valid) and the
    // slice holds exactly its size; read_unaligned copes with any alignment.
    let book = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<ConnRecord>()) };
    unfold_book(&book, BookRead::Sent, f)
}

/// Where a book was read, which says when its return slot is whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BookRead {
    /// A record a flush sent: the slot counts only if that flush saw it written
    /// ([`book_flags::RETURN_SEEN`]); a copy made while the exit wrote it may be torn.
    Sent,
    /// The map read at the end of a run, the programs gone: nothing writes any more.
    AtRest,
}

/// The events of a book's steps (see [`ring_record`]).
pub fn unfold_book(
    b: &ConnRecord,
    read: BookRead,
    mut f: impl FnMut(RawEvent),
) -> Result<usize, DecodeError> {
    let n = b.nsteps as usize;
    if n > BOOK_STEPS {
        return Err(DecodeError::BookSteps(b.nsteps));
    }
    let has = |bit| b.flags & bit != 0;
    let mut base = RawEvent {
        skaddr: b.skaddr,
        family: b.family,
        sport: b.sport,
        dport: b.dport,
        saddr: b.saddr,
        daddr: b.daddr,
        netns: b.owner.netns,
        ..RawEvent::default()
    };
    if has(book_flags::HAS_TUPLE) {
        base.flags |= flags::HAS_TUPLE;
    }
    if has(book_flags::OWNER_KNOWN) {
        with_owner(&mut base, &b.owner);
    }
    // The connect()/accept() return waiting in the book, in its place among the steps
    // by time. A slot written for another socket is a copy of a return that socket
    // reported on its own (see `BookReturn::sk`): not this one's. A slot the flush did
    // not see written is left for the record that takes it (see `BookRead`).
    let r = &b.ret;
    let whole = match read {
        BookRead::Sent => has(book_flags::RETURN_SEEN),
        BookRead::AtRest => true,
    };
    let mut ret_ev = (whole && r.ts_ns != 0 && r.sk == b.skaddr).then(|| {
        let mut ev = base;
        ev.ts_ns = r.ts_ns;
        ev.kind = r.kind;
        ev.ret = i64::from(r.ret);
        ev.fd = r.fd;
        with_owner(&mut ev, &r.owner);
        ev.ctx_pid_tgid = (u64::from(r.owner.tgid) << 32) | u64::from(r.owner.pid);
        ev.flags |= flags::TASK_CTX;
        if r.flags & return_flags::ACCEPT4 != 0 {
            ev.flags |= flags::ACCEPT4;
        }
        ev
    });
    let mut count = n;
    for (i, st) in b.steps[..n].iter().enumerate() {
        if let Some(r) = ret_ev.take_if(|r| r.ts_ns < st.ts_ns) {
            f(r);
            count += 1;
        }
        let mut ev = base;
        // As the per-event design writes it: the event that found the listener's
        // owner (the book's first) says so; the later ones carry that owner as the
        // socket's, from the owner map.
        if has(book_flags::OWNER_KNOWN)
            && has(book_flags::OWNER_FROM_LISTENER)
            && b.seq == 0
            && i == 0
        {
            ev.flags |= flags::OWNER_FROM_LISTENER;
        }
        ev.ts_ns = st.ts_ns;
        ev.kind = st.kind;
        ev.oldstate = st.old;
        ev.newstate = st.new;
        if st.flags & step_flags::NO_LOCAL_PORT != 0 {
            // The port the book names came later (see the flag).
            ev.sport = 0;
        }
        if st.flags & step_flags::TASK_CTX != 0 {
            ev.flags |= flags::TASK_CTX;
            ev.ctx_pid_tgid = (u64::from(st.aux) << 32) | u64::from(st.aux);
        }
        match st.kind {
            kind::RESET_SENT => {
                ev.aux = if st.aux == u32::MAX {
                    u64::MAX
                } else {
                    u64::from(st.aux)
                }
            }
            kind::STATE if st.old == tcp_state::LISTEN && st.new == tcp_state::SYN_RECV => {
                // The child's birth (LISTEN → SYN_RECV): its listener and queue.
                ev.aux = b.listener;
                if has(book_flags::LISTENER_EXACT) {
                    ev.flags |= flags::LISTENER_EXACT;
                }
                if has(book_flags::ACCEPT_QUEUE) {
                    ev.flags |= flags::ACCEPT_QUEUE;
                    ev.fd = b.aq_len as i32;
                    ev.ret = i64::from(b.aq_max);
                }
            }
            kind::STATE
                if st.new == tcp_state::ESTABLISHED
                    && (st.old == tcp_state::SYN_SENT || st.old == tcp_state::SYN_RECV)
                    && has(book_flags::ISN) =>
            {
                ev.flags |= flags::ISN;
                ev.ret = ((u64::from(b.isn_remote) << 32) | u64::from(b.isn_local)) as i64;
            }
            _ => {}
        }
        f(ev);
    }
    if let Some(r) = ret_ev {
        f(r);
        count += 1;
    }
    Ok(count)
}

/// A book's owner (or its return's caller) as the event's, as the per-event design
/// writes it (the namespace stays the socket's).
fn with_owner(ev: &mut RawEvent, o: &tcp_trace_common::Owner) {
    ev.owner_tgid = o.tgid;
    ev.owner_pid = o.pid;
    ev.comm = o.comm;
    ev.cgroup_id = o.cgroup_id;
    ev.ns_pid = o.ns_tgid;
    ev.flags |= flags::OWNER_KNOWN;
}

/// The bytes of a [`RawEvent`], as the kernel wrote them (used by `record`).
pub fn raw_to_bytes(raw: &RawEvent) -> [u8; RAW_EVENT_SIZE] {
    let mut out = [0u8; RAW_EVENT_SIZE];
    // SAFETY: RawEvent is repr(C) POD of exactly RAW_EVENT_SIZE bytes with explicit padding.
    unsafe {
        std::ptr::copy_nonoverlapping(
            (raw as *const RawEvent).cast::<u8>(),
            out.as_mut_ptr(),
            RAW_EVENT_SIZE,
        )
    };
    out
}

pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    decode_raw(&raw_from_bytes(bytes)?)
}

pub fn decode_raw(r: &RawEvent) -> Result<Event, DecodeError> {
    let kind = match r.kind {
        kind::STATE => EventKind::Transition {
            old: TcpState::from_raw(r.oldstate),
            new: TcpState::from_raw(r.newstate),
        },
        kind::SYNACK_RETRANSMIT => EventKind::SynAckRetransmit { req: r.aux },
        kind::RETRANSMIT => EventKind::Retransmit {
            state: TcpState::from_raw(r.newstate),
        },
        kind::RESET_SENT => EventKind::ResetSent {
            state: (r.newstate != 0).then(|| TcpState::from_raw(r.newstate)),
            reason: (r.aux != u64::MAX).then_some(r.aux as u32),
        },
        kind::RESET_RECEIVED => EventKind::ResetReceived,
        kind::CONNECT_RETURN => EventKind::ConnectReturn {
            fd: r.fd,
            ret: r.ret,
        },
        kind::ACCEPT_RETURN => EventKind::AcceptReturn {
            listen_fd: r.fd,
            ret: r.ret,
            accept4: r.flags & flags::ACCEPT4 != 0,
        },
        k => return Err(DecodeError::UnknownKind(k)),
    };
    let has_tuple = r.flags & flags::HAS_TUPLE != 0;
    let (local, remote) = if has_tuple {
        (
            Some((addr(r.family, &r.saddr), r.sport)),
            Some((addr(r.family, &r.daddr), r.dport)),
        )
    } else {
        (None, None)
    };
    let owner = (r.flags & flags::OWNER_KNOWN != 0).then_some(Owner {
        pid: r.owner_tgid,
        tid: r.owner_pid,
        comm: Comm(r.comm),
        from_listener: r.flags & flags::OWNER_FROM_LISTENER != 0,
    });
    Ok(Event {
        ts_ns: r.ts_ns,
        skaddr: r.skaddr,
        kind,
        family: Family::from_raw(r.family),
        local,
        remote,
        ctx_pid: (r.ctx_pid_tgid >> 32) as u32,
        ctx_tid: r.ctx_pid_tgid as u32,
        task_ctx: r.flags & flags::TASK_CTX != 0,
        owner,
        cgroup_id: r.cgroup_id,
        ns_pid: r.ns_pid,
        netns: r.netns,
        listener: if r.kind == kind::STATE { r.aux } else { 0 },
        listener_exact: r.flags & flags::LISTENER_EXACT != 0,
        accept_queue: (r.flags & flags::ACCEPT_QUEUE != 0).then_some((r.fd as u32, r.ret as u32)),
        isn: (r.flags & flags::ISN != 0 && r.kind == kind::STATE)
            .then_some((r.ret as u64 as u32, (r.ret as u64 >> 32) as u32)),
    })
}

impl Event {
    /// The process this event belongs to: the socket owner learned in process context,
    /// else the task that ran the hook when that was process context. Never the
    /// context pid of a softirq.
    pub fn pid(&self) -> Option<u32> {
        match (&self.owner, self.task_ctx) {
            (Some(o), _) => Some(o.pid),
            (None, true) => Some(self.ctx_pid),
            (None, false) => None,
        }
    }
}

/// Name of an errno value (positive), for the ones a TCP connect/accept returns.
pub fn errno_name(errno: i64) -> Option<&'static str> {
    Some(match errno {
        1 => "EPERM",
        2 => "ENOENT",
        4 => "EINTR",
        9 => "EBADF",
        11 => "EAGAIN",
        12 => "ENOMEM",
        13 => "EACCES",
        14 => "EFAULT",
        22 => "EINVAL",
        23 => "ENFILE",
        24 => "EMFILE",
        32 => "EPIPE",
        71 => "EPROTO",
        88 => "ENOTSOCK",
        91 => "EPROTOTYPE",
        93 => "EPROTONOSUPPORT",
        95 => "EOPNOTSUPP",
        97 => "EAFNOSUPPORT",
        98 => "EADDRINUSE",
        99 => "EADDRNOTAVAIL",
        100 => "ENETDOWN",
        101 => "ENETUNREACH",
        103 => "ECONNABORTED",
        104 => "ECONNRESET",
        105 => "ENOBUFS",
        106 => "EISCONN",
        107 => "ENOTCONN",
        110 => "ETIMEDOUT",
        111 => "ECONNREFUSED",
        112 => "EHOSTDOWN",
        113 => "EHOSTUNREACH",
        114 => "EALREADY",
        115 => "EINPROGRESS",
        512 => "ERESTARTSYS",
        513 => "ERESTARTNOINTR",
        514 => "ERESTARTNOHAND",
        516 => "ERESTART_RESTARTBLOCK",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tcp_trace_common::{RAW_EVENT_SIZE_V1, flags, kind};

    fn raw(k: u8) -> RawEvent {
        RawEvent {
            ts_ns: 42,
            skaddr: 0xffff_8881_0000_1000,
            ctx_pid_tgid: (7u64 << 32) | 8,
            kind: k,
            family: AF_INET,
            oldstate: 7,
            newstate: 2,
            sport: 40000,
            dport: 80,
            flags: flags::HAS_TUPLE | flags::OWNER_KNOWN | flags::TASK_CTX,
            owner_tgid: 100,
            owner_pid: 101,
            saddr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            daddr: [10, 1, 2, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            comm: *b"curl\0\0\0\0\0\0\0\0\0\0\0\0",
            cgroup_id: 5,
            ns_pid: 3,
            netns: 4026531833,
            ..RawEvent::default()
        }
    }

    #[test]
    fn transition_round_trip_through_bytes() {
        let r = raw(kind::STATE);
        let ev = decode(&raw_to_bytes(&r)).unwrap();
        assert_eq!(
            ev.kind,
            EventKind::Transition {
                old: TcpState::Close,
                new: TcpState::SynSent
            }
        );
        assert_eq!(ev.local, Some(("127.0.0.1".parse().unwrap(), 40000)));
        assert_eq!(ev.remote, Some(("10.1.2.3".parse().unwrap(), 80)));
        assert_eq!((ev.ctx_pid, ev.ctx_tid), (7, 8));
        let o = ev.owner.unwrap();
        assert_eq!(
            (o.pid, o.tid, o.comm.to_string()),
            (100, 101, "curl".into())
        );
        assert!(!o.from_listener);
        assert_eq!((ev.cgroup_id, ev.ns_pid, ev.netns), (5, 3, 4026531833));
        assert_eq!(ev.pid(), Some(100));
    }

    /// A child's book as the kernel flushes it at ESTABLISHED: birth and
    /// establishment, each as the per-event design would have written it.
    fn child_book() -> ConnRecord {
        use tcp_trace_common::{Owner, Step};
        let mut b = ConnRecord {
            seq: 0,
            nsteps: 2,
            family: AF_INET,
            flags: book_flags::HAS_TUPLE
                | book_flags::OWNER_KNOWN
                | book_flags::OWNER_FROM_LISTENER
                | book_flags::LISTENER_EXACT
                | book_flags::ACCEPT_QUEUE
                | book_flags::ISN,
            skaddr: 0xffff_0000_1234,
            listener: 0xffff_0000_9999,
            owner: Owner {
                tgid: 17,
                pid: 18,
                comm: *b"nginx\0\0\0\0\0\0\0\0\0\0\0",
                cgroup_id: 5,
                ns_tgid: 0,
                netns: 4026531840,
            },
            sport: 8080,
            dport: 51234,
            aq_len: 3,
            aq_max: 128,
            isn_local: 7,
            isn_remote: 9,
            ..ConnRecord::default()
        };
        b.saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        b.daddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        b.steps[0] = Step {
            ts_ns: 100,
            kind: kind::STATE,
            old: tcp_state::LISTEN,
            new: tcp_state::SYN_RECV,
            flags: 0,
            aux: 0,
        };
        b.steps[1] = Step {
            ts_ns: 110,
            kind: kind::STATE,
            old: tcp_state::SYN_RECV,
            new: tcp_state::ESTABLISHED,
            flags: 0,
            aux: 0,
        };
        b
    }

    fn book_bytes(b: &ConnRecord) -> Vec<u8> {
        // SAFETY: ConnRecord is repr(C) POD with explicit padding.
        unsafe {
            std::slice::from_raw_parts((b as *const ConnRecord).cast::<u8>(), CONN_RECORD_SIZE)
        }
        .to_vec()
    }

    #[test]
    fn a_book_unfolds_into_the_events_of_its_steps() {
        let mut evs = Vec::new();
        assert_eq!(
            ring_record(&book_bytes(&child_book()), |r| evs.push(r)),
            Ok(2)
        );
        let evs: Vec<Event> = evs.iter().map(|r| decode_raw(r).unwrap()).collect();
        assert_eq!(evs[0].ts_ns, 100);
        assert_eq!(
            evs[0].kind,
            EventKind::Transition {
                old: TcpState::Listen,
                new: TcpState::SynRecv
            }
        );
        assert_eq!(evs[0].listener, 0xffff_0000_9999);
        assert!(evs[0].listener_exact);
        assert_eq!(evs[0].accept_queue, Some((3, 128)));
        assert_eq!(evs[0].isn, None);
        assert_eq!(evs[1].isn, Some((7, 9)));
        assert_eq!(evs[1].accept_queue, None);
        assert_eq!(evs[1].listener, 0);
        // Only the first event says the owner came from the listener (as the
        // per-event design, whose later events take it from the owner map).
        assert!(evs[0].owner.unwrap().from_listener);
        assert!(!evs[1].owner.unwrap().from_listener);
        for e in &evs {
            assert_eq!(e.local, Some(("127.0.0.1".parse().unwrap(), 8080)));
            assert_eq!(e.remote, Some(("127.0.0.1".parse().unwrap(), 51234)));
            let o = e.owner.unwrap();
            assert_eq!((o.pid, o.tid), (17, 18));
            assert_eq!(e.netns, 4026531840);
            assert_eq!(e.cgroup_id, 5);
            assert!(!e.task_ctx);
        }
    }

    #[test]
    fn a_return_in_the_book_comes_out_in_its_place_by_time() {
        use tcp_trace_common::{BookReturn, Owner};
        let mut b = child_book();
        b.ret = BookReturn {
            ts_ns: 105,
            sk: b.skaddr,
            ret: 9,
            fd: 4,
            kind: kind::ACCEPT_RETURN,
            flags: return_flags::ACCEPT4,
            owner: Owner {
                tgid: 31,
                pid: 32,
                comm: *b"worker\0\0\0\0\0\0\0\0\0\0",
                cgroup_id: 6,
                ns_tgid: 0,
                netns: 4026531840,
            },
            ..BookReturn::default()
        };
        b.flags |= book_flags::RETURN_SEEN;
        let mut evs = Vec::new();
        assert_eq!(
            ring_record(&book_bytes(&b), |r| evs.push(decode_raw(&r).unwrap())),
            Ok(3)
        );
        let ts: Vec<u64> = evs.iter().map(|e| e.ts_ns).collect();
        assert_eq!(ts, [100, 105, 110]);
        let r = &evs[1];
        assert_eq!(
            r.kind,
            EventKind::AcceptReturn {
                listen_fd: 4,
                ret: 9,
                accept4: true
            }
        );
        // The caller's owner, not the book's (the listener's process).
        let o = r.owner.unwrap();
        assert_eq!((o.pid, o.tid), (31, 32));
        assert_eq!(o.comm.bytes(), b"worker");
        assert_eq!(r.cgroup_id, 6);
        assert!(r.task_ctx);
        assert_eq!(r.ctx_pid, 31);
        assert_eq!(r.local, Some(("127.0.0.1".parse().unwrap(), 8080)));

        // After every step; and a slot written for another socket is not this one's.
        b.ret.ts_ns = 500;
        b.ret.kind = kind::CONNECT_RETURN;
        b.ret.ret = -115;
        let mut evs = Vec::new();
        unfold_book(&b, BookRead::Sent, |r| evs.push(decode_raw(&r).unwrap())).unwrap();
        assert_eq!(evs.len(), 3);
        assert_eq!(evs[2].kind, EventKind::ConnectReturn { fd: 4, ret: -115 });
        b.ret.sk = 0xffff_0000_5678;
        assert_eq!(unfold_book(&b, BookRead::Sent, |_| {}), Ok(2));
        // An empty slot is nothing.
        b.ret.sk = b.skaddr;
        b.ret.ts_ns = 0;
        assert_eq!(unfold_book(&b, BookRead::Sent, |_| {}), Ok(2));
    }

    /// A record whose flush did not see the slot written carries no return, even with
    /// a time in it: a copy torn by the exit writing meanwhile (a FIN storm showed slots
    /// with the time and nothing else: kind 0, undecodable). The return comes whole in
    /// the book's next record. A book read from the map at the end (nothing writes any
    /// more) takes its slot as it is.
    #[test]
    fn a_slot_the_flush_did_not_see_written_is_left_for_the_next_record() {
        let mut b = child_book();
        b.ret.ts_ns = 105;
        b.ret.sk = b.skaddr;
        b.flags &= !book_flags::RETURN_SEEN;
        // Torn: the time and nothing else.
        let mut evs = Vec::new();
        assert_eq!(
            ring_record(&book_bytes(&b), |r| evs.push(decode_raw(&r).unwrap())),
            Ok(2)
        );
        assert!(
            evs.iter()
                .all(|e| matches!(e.kind, EventKind::Transition { .. }))
        );
        // Whole, in the next record (the flush saw it).
        b.ret.kind = kind::ACCEPT_RETURN;
        b.ret.ret = 7;
        b.ret.fd = 3;
        b.flags |= book_flags::RETURN_SEEN;
        let mut evs = Vec::new();
        unfold_book(&b, BookRead::Sent, |r| evs.push(decode_raw(&r).unwrap())).unwrap();
        assert_eq!(
            evs[1].kind,
            EventKind::AcceptReturn {
                listen_fd: 3,
                ret: 7,
                accept4: false
            }
        );
        // At rest, the flag does not matter.
        b.flags &= !book_flags::RETURN_SEEN;
        assert_eq!(unfold_book(&b, BookRead::AtRest, |_| {}), Ok(3));
    }

    #[test]
    fn a_step_before_the_local_port_was_picked_has_none() {
        // A client's SYN_SENT: connect() picks the port after it; the book's tuple is
        // read later and must not be dated back to that step.
        let mut b = child_book();
        b.steps[0].old = tcp_state::CLOSE;
        b.steps[0].new = tcp_state::SYN_SENT;
        b.steps[0].flags = step_flags::TASK_CTX | step_flags::NO_LOCAL_PORT;
        b.steps[1].old = tcp_state::SYN_SENT;
        let mut evs = Vec::new();
        unfold_book(&b, BookRead::Sent, |r| evs.push(decode_raw(&r).unwrap())).unwrap();
        assert_eq!(evs[0].local.map(|l| l.1), Some(0));
        assert!(evs[0].task_ctx);
        assert_eq!(evs[0].remote, Some(("127.0.0.1".parse().unwrap(), 51234)));
        assert_eq!(evs[1].local, Some(("127.0.0.1".parse().unwrap(), 8080)));
    }

    #[test]
    fn book_steps_keep_their_context_kind_and_reason() {
        let mut b = child_book();
        b.flags &= !(book_flags::OWNER_KNOWN | book_flags::ISN | book_flags::ACCEPT_QUEUE);
        b.nsteps = 3;
        b.steps[0].flags = step_flags::TASK_CTX;
        b.steps[0].aux = 4242;
        b.steps[1].old = tcp_state::ESTABLISHED;
        b.steps[1].new = tcp_state::FIN_WAIT1;
        b.steps[2] = tcp_trace_common::Step {
            ts_ns: 120,
            kind: kind::RESET_SENT,
            old: 0,
            new: tcp_state::FIN_WAIT1,
            flags: 0,
            aux: u32::MAX,
        };
        let mut evs = Vec::new();
        unfold_book(&b, BookRead::Sent, |r| evs.push(decode_raw(&r).unwrap())).unwrap();
        assert!(evs[0].task_ctx);
        assert_eq!(evs[0].ctx_pid, 4242);
        assert_eq!(evs[0].accept_queue, None);
        assert!(evs.iter().all(|e| e.owner.is_none()));
        assert_eq!(
            evs[2].kind,
            EventKind::ResetSent {
                state: Some(TcpState::FinWait1),
                reason: None
            }
        );
        b.steps[2].aux = 3;
        let mut last = None;
        unfold_book(&b, BookRead::Sent, |r| last = Some(decode_raw(&r).unwrap())).unwrap();
        assert!(matches!(
            last.unwrap().kind,
            EventKind::ResetSent {
                reason: Some(3),
                ..
            }
        ));
    }

    #[test]
    fn a_book_with_too_many_steps_is_an_error_not_a_panic() {
        let mut b = child_book();
        b.nsteps = BOOK_STEPS as u8 + 1;
        let mut n = 0;
        assert_eq!(
            ring_record(&book_bytes(&b), |_| n += 1),
            Err(DecodeError::BookSteps(BOOK_STEPS as u8 + 1))
        );
        assert_eq!(n, 0);
        // Any other size is an event record (or too short for one).
        assert_eq!(
            ring_record(&[0u8; 10], |_| n += 1),
            Err(DecodeError::Short(10))
        );
        assert_eq!(
            ring_record(&raw_to_bytes(&raw(kind::STATE)), |_| n += 1),
            Ok(1)
        );
    }

    #[test]
    fn isns_are_split_from_ret_only_with_the_flag() {
        let mut r = raw(kind::STATE);
        r.ret = ((0xdead_beef_u64 << 32) | 0x1234_5678) as i64;
        assert_eq!(decode_raw(&r).unwrap().isn, None);
        r.flags |= flags::ISN;
        assert_eq!(
            decode_raw(&r).unwrap().isn,
            Some((0x1234_5678, 0xdead_beef))
        );
        // `ret` of a syscall return is its return value, never ISNs.
        let mut c = raw(kind::CONNECT_RETURN);
        c.flags |= flags::ISN;
        assert_eq!(decode_raw(&c).unwrap().isn, None);
    }

    #[test]
    fn every_kind_decodes() {
        let mut r = raw(kind::SYNACK_RETRANSMIT);
        r.aux = 0xabc;
        assert_eq!(
            decode_raw(&r).unwrap().kind,
            EventKind::SynAckRetransmit { req: 0xabc }
        );
        let r = raw(kind::RETRANSMIT);
        assert_eq!(
            decode_raw(&r).unwrap().kind,
            EventKind::Retransmit {
                state: TcpState::SynSent
            }
        );
        let mut r = raw(kind::RESET_SENT);
        r.aux = u64::MAX;
        r.newstate = 0;
        assert_eq!(
            decode_raw(&r).unwrap().kind,
            EventKind::ResetSent {
                state: None,
                reason: None
            }
        );
        r.aux = 2;
        r.newstate = 1;
        assert_eq!(
            decode_raw(&r).unwrap().kind,
            EventKind::ResetSent {
                state: Some(TcpState::Established),
                reason: Some(2)
            }
        );
        assert_eq!(
            decode_raw(&raw(kind::RESET_RECEIVED)).unwrap().kind,
            EventKind::ResetReceived
        );
        let mut r = raw(kind::CONNECT_RETURN);
        r.ret = -111;
        r.fd = 3;
        assert_eq!(
            decode_raw(&r).unwrap().kind,
            EventKind::ConnectReturn { fd: 3, ret: -111 }
        );
        let mut r = raw(kind::ACCEPT_RETURN);
        r.ret = 5;
        r.fd = 3;
        r.flags |= flags::ACCEPT4;
        assert_eq!(
            decode_raw(&r).unwrap().kind,
            EventKind::AcceptReturn {
                listen_fd: 3,
                ret: 5,
                accept4: true
            }
        );
    }

    #[test]
    fn unknown_values_are_reported_not_trusted() {
        assert_eq!(decode_raw(&raw(99)), Err(DecodeError::UnknownKind(99)));
        let mut r = raw(kind::STATE);
        r.newstate = 13;
        let ev = decode_raw(&r).unwrap();
        let EventKind::Transition { new, .. } = ev.kind else {
            panic!()
        };
        assert_eq!(new, TcpState::Unknown(13));
        assert_eq!(new.to_string(), "UNKNOWN(13)");
        assert_eq!(TcpState::from_raw(13).raw(), 13);
        assert_eq!(Family::from_raw(3), Family::Unknown(3));
    }

    #[test]
    fn short_and_old_records() {
        assert_eq!(decode(&[0u8; 10]), Err(DecodeError::Short(10)));
        let bytes = raw_to_bytes(&raw(kind::STATE));
        // A first-version record (120 bytes) reads with ns_pid/netns zero.
        let ev = decode(&bytes[..RAW_EVENT_SIZE_V1]).unwrap();
        assert_eq!((ev.ns_pid, ev.netns, ev.cgroup_id), (0, 0, 5));
        assert_eq!(
            decode(&bytes[..RAW_EVENT_SIZE_V1 - 1]),
            Err(DecodeError::Short(119))
        );
    }

    #[test]
    fn ipv6_and_missing_tuple() {
        let mut r = raw(kind::STATE);
        r.family = AF_INET6;
        r.saddr = "::1".parse::<Ipv6Addr>().unwrap().octets();
        let ev = decode_raw(&r).unwrap();
        assert_eq!(ev.family, Family::Inet6);
        assert_eq!(ev.local, Some(("::1".parse().unwrap(), 40000)));
        r.flags &= !flags::HAS_TUPLE;
        assert_eq!(decode_raw(&r).unwrap().local, None);
    }

    #[test]
    fn softirq_event_without_owner_has_no_pid() {
        let mut r = raw(kind::STATE);
        r.flags = flags::HAS_TUPLE;
        let ev = decode_raw(&r).unwrap();
        assert_eq!(ev.pid(), None, "the context pid of a softirq is never used");
        r.flags |= flags::TASK_CTX;
        assert_eq!(decode_raw(&r).unwrap().pid(), Some(7));
    }

    #[test]
    fn comm_is_escaped() {
        let c = Comm(*b"ev\x1b[31mil\\\xff\0\0\0\0\0");
        assert_eq!(c.to_string(), "ev\\x1b[31mil\\x5c\\xff");
        assert_eq!(
            Comm::from_str_lossy("a-very-long-command-name")
                .bytes()
                .len(),
            15
        );
        assert_eq!(errno_name(111), Some("ECONNREFUSED"));
        assert_eq!(errno_name(4242), None);
    }
}
