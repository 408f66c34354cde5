//! Decoder: ring-buffer records ([`RawEvent`] bytes) → typed [`Event`]s.
//!
//! No allocation per event: addresses become `IpAddr`, the command name stays a
//! fixed `[u8; 16]` ([`Comm`]) and is escaped only when printed.
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use tcp_trace_common::{AF_INET, AF_INET6, RAW_EVENT_SIZE, RawEvent, flags, kind};

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
            1 => Established,
            2 => SynSent,
            3 => SynRecv,
            4 => FinWait1,
            5 => FinWait2,
            6 => TimeWait,
            7 => Close,
            8 => CloseWait,
            9 => LastAck,
            10 => Listen,
            11 => Closing,
            12 => NewSynRecv,
            n => Unknown(n),
        }
    }

    pub fn raw(self) -> u8 {
        use TcpState::*;
        match self {
            Established => 1,
            SynSent => 2,
            SynRecv => 3,
            FinWait1 => 4,
            FinWait2 => 5,
            TimeWait => 6,
            Close => 7,
            CloseWait => 8,
            LastAck => 9,
            Listen => 10,
            Closing => 11,
            NewSynRecv => 12,
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
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes is shorter than an event (120 or {RAW_EVENT_SIZE} bytes)")]
    Short(usize),
    #[error("unknown event kind {0}")]
    UnknownKind(u8),
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
        4 => "EINTR",
        9 => "EBADF",
        11 => "EAGAIN",
        12 => "ENOMEM",
        13 => "EACCES",
        22 => "EINVAL",
        23 => "ENFILE",
        24 => "EMFILE",
        97 => "EAFNOSUPPORT",
        98 => "EADDRINUSE",
        99 => "EADDRNOTAVAIL",
        101 => "ENETUNREACH",
        103 => "ECONNABORTED",
        104 => "ECONNRESET",
        105 => "ENOBUFS",
        106 => "EISCONN",
        110 => "ETIMEDOUT",
        111 => "ECONNREFUSED",
        113 => "EHOSTUNREACH",
        114 => "EALREADY",
        115 => "EINPROGRESS",
        _ => return None,
    })
}
