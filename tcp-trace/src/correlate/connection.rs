//! The correlator's output: one [`Connection`] per socket generation, written as the
//! `{"type":"connection"}` JSON line (documented in `docs/json-schema.md`) by
//! `connection` in render/json.rs, the one production encoder. The serde derive below
//! exists in tests only: it is the reference that encoder is checked against.
use std::net::IpAddr;

#[cfg(test)]
use serde::{Serialize, Serializer};

use crate::decode::{Comm, Family, TcpState};
#[cfg(test)]
use crate::text;
// `correlate/mod.rs` still re-exports `connection::StackStr` (that file is being
// reworked on another branch): kept here, and used through it below, until it drops
// the line; then `Endpoint` can use `crate::text::StackStr` directly.
pub(crate) use crate::text::StackStr;

/// Which end of a connection this socket is.
// Serialize in production too: the diagnosis lines of `explain` name the role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// `connect()`ed socket (first state SYN_SENT).
    Client,
    /// Child socket created by a listener (first state SYN_RECV).
    Server,
    /// Listening socket (CLOSE → LISTEN … LISTEN → CLOSE).
    Listener,
    /// First seen mid-life, no listener known on its local port.
    Unknown,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Server => "server",
            Role::Listener => "listener",
            Role::Unknown => "unknown",
        }
    }
}

/// How a connection ended (or did not).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(test, derive(Serialize))]
#[cfg_attr(test, serde(rename_all = "snake_case"))]
pub enum Outcome {
    /// Orderly teardown (FIN_WAIT2/CLOSING/LAST_ACK → CLOSE, or a listener closed).
    Closed,
    /// Ended by a reset sent or received after reaching ESTABLISHED.
    Reset,
    /// Never established: reset received in SYN_SENT, or `connect()` = -ECONNREFUSED.
    Refused,
    /// Never established: `connect()` = -ETIMEDOUT, or SYN retransmits and then CLOSE.
    TimedOut,
    /// Closed on another path without a reset (e.g. `close()` during SYN_SENT, a data
    /// retransmission timeout: ESTABLISHED → CLOSE).
    Aborted,
    /// No CLOSE seen before the end of input (or the socket was reused without one).
    Open,
    /// Dropped from the correlator's table to bound memory before it closed.
    Evicted,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Closed => "closed",
            Outcome::Reset => "reset",
            Outcome::Refused => "refused",
            Outcome::TimedOut => "timed_out",
            Outcome::Aborted => "aborted",
            Outcome::Open => "open",
            Outcome::Evicted => "evicted",
        }
    }
}

/// Where `pid`/`comm` came from, best first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(test, derive(Serialize))]
#[cfg_attr(test, serde(rename_all = "snake_case"))]
pub enum PidSource {
    /// Not known.
    None,
    /// The listener's owner (child socket before `accept()` returned).
    Listener,
    /// The socket table at start (sock_diag): a process holding the socket's fd.
    Snapshot,
    /// The task that ran a hook in process context, without owner information.
    Context,
    /// The socket owner learned in process context by the kernel side.
    Owner,
    /// The caller of `connect()` / `accept()`.
    Syscall,
}

/// One entry of [`Connection::states`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(test, derive(Serialize))]
pub struct StateEntry {
    #[cfg_attr(test, serde(serialize_with = "ser_state"))]
    pub state: TcpState,
    pub t_ns: u64,
}

/// A `connect()` / `accept()` return.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(test, derive(Serialize))]
pub struct SyscallReturn {
    /// The return value: 0 / the new fd, or `-errno`.
    pub ret: i64,
    /// Errno name for negative returns (`"ECONNREFUSED"`, `"EINPROGRESS"` …), else null.
    pub errno: Option<&'static str>,
    pub t_ns: u64,
    /// `connect()`: the socket fd; `accept()`: the listener fd.
    pub fd: i32,
    /// `accept4()` rather than `accept()` (always false for `connect()`).
    pub accept4: bool,
}

/// A half-open request (request sock) of a listener that never became a child socket
/// while the listener was traced (e.g. dropped after `tcp_synack_retries`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(test, derive(Serialize))]
pub struct HalfOpenRequest {
    /// Kernel address of the request sock (hex).
    #[cfg_attr(test, serde(serialize_with = "ser_hex"))]
    pub req: u64,
    /// Listener side of the request.
    #[cfg_attr(test, serde(serialize_with = "ser_ip"))]
    pub saddr: IpAddr,
    pub sport: u16,
    /// Client side.
    #[cfg_attr(test, serde(serialize_with = "ser_ip"))]
    pub daddr: IpAddr,
    pub dport: u16,
    pub synack_retransmits: u32,
    pub synack_retransmit_ts_ns: Vec<u64>,
}

/// The listener's accept queue when a child socket was queued on it (server
/// connections): `sk_ack_backlog` and `sk_max_ack_backlog` of the listening socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct AcceptQueue {
    /// Connections waiting in the accept queue (this child included).
    pub len: u32,
    /// The queue's limit (the `listen()` backlog, capped by `net.core.somaxconn`).
    pub max: u32,
}

/// The two initial sequence numbers of a connection, as this end's `tcp_sock` held
/// them when it became ESTABLISHED.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Isn {
    /// This end's ISN (its SYN or SYN-ACK carried it).
    pub local: u32,
    /// The peer's ISN, which this end's ACKs covered (acknowledged as `remote + 1`).
    pub remote: u32,
}

impl AcceptQueue {
    /// The queue was at or past its limit.
    pub fn full(&self) -> bool {
        self.len >= self.max
    }
}

/// Listener-only part of a connection record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(test, derive(Serialize))]
pub struct ListenerInfo {
    /// Child sockets created from this listener (LISTEN → SYN_RECV) while traced.
    pub children: u32,
    /// Children whose `accept()` return was seen.
    pub accepted: u32,
    /// Requests that had SYN-ACK retransmits but never became a child.
    pub half_open_requests: Vec<HalfOpenRequest>,
}

/// What the other end of a connection shows about its FIN, for
/// [`Connection::resolve_time_wait`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PeerView {
    /// When the peer sent its FIN (its first FIN_WAIT1 or LAST_ACK entry); 0 when it
    /// had sent it before the trace started.
    pub fin_ts: Option<u64>,
    /// The peer received a reset after sending its FIN.
    pub reset_after_fin: bool,
    /// Nothing more can be learnt: the peer's record is complete (closed, or open at
    /// the end of the run), or our timewait socket's lifetime has passed.
    pub settled: bool,
    /// The peer's history is known up to this time.
    pub known_until: u64,
}

impl PeerView {
    /// The view of `peer` (finished or still being built). An evicted record is known
    /// only up to its last event.
    pub(crate) fn of(peer: &Connection, settled: bool) -> PeerView {
        use TcpState::*;
        let fin_ts = peer
            .states
            .iter()
            .skip(1)
            .find(|e| matches!(e.state, FinWait1 | LastAck))
            .map(|e| e.t_ns)
            .or_else(|| {
                let first = peer.states.first()?.state;
                let past_fin = matches!(first, FinWait1 | FinWait2 | Closing | LastAck | TimeWait);
                (peer.open_before_start && past_fin).then_some(0)
            });
        PeerView {
            fin_ts,
            reset_after_fin: fin_ts
                .is_some_and(|f| peer.reset_received_ts_ns.iter().any(|&t| t >= f)),
            settled: settled && !peer.evicted,
            known_until: if peer.evicted {
                peer.last_ts_ns
            } else {
                u64::MAX
            },
        }
    }
}

/// `connect()` on a non-blocking socket returns `-EINPROGRESS` right after the SYN.
pub const EINPROGRESS: i64 = 115;

/// One connection (one generation of one kernel socket), as emitted by the correlator.
///
/// Field names are a stable contract (docs/json-schema.md): add fields, never rename.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(test, derive(Serialize))]
pub struct Connection {
    /// Always `"connection"`.
    #[cfg_attr(test, serde(rename = "type"))]
    pub record_type: &'static str,
    /// Stable id, assigned by the correlator in creation order (starts at 1).
    pub id: u64,
    pub role: Role,
    pub pid: Option<u32>,
    #[cfg_attr(test, serde(serialize_with = "ser_comm"))]
    pub comm: Option<Comm>,
    pub pid_source: PidSource,
    #[cfg_attr(test, serde(serialize_with = "ser_family"))]
    pub family: Family,
    /// This socket's local end.
    #[cfg_attr(test, serde(serialize_with = "ser_opt_ip"))]
    pub saddr: Option<IpAddr>,
    pub sport: u16,
    /// This socket's remote end.
    #[cfg_attr(test, serde(serialize_with = "ser_opt_ip"))]
    pub daddr: Option<IpAddr>,
    pub dport: u16,
    /// Kernel address of the socket (hex string).
    #[cfg_attr(test, serde(serialize_with = "ser_hex"))]
    pub skaddr: u64,
    /// State history in order; the first entry is the state the socket was in before
    /// its first observed transition (CLOSE for a client, LISTEN for a child).
    pub states: Vec<StateEntry>,
    /// First `connect()` return on this socket (client), else null.
    pub connect: Option<SyscallReturn>,
    /// Every `connect()` return (a non-blocking connect may be called again).
    pub connect_calls: Vec<SyscallReturn>,
    pub connect_return_ns: Option<u64>,
    /// `accept()`/`accept4()` return that produced this socket (server), else null.
    pub accept: Option<SyscallReturn>,
    pub accept_return_ns: Option<u64>,
    /// `connect()` return (client) or `accept()` return (server), else null.
    pub ret: Option<i64>,
    pub syn_retransmits: u32,
    pub syn_retransmit_ts_ns: Vec<u64>,
    /// SYN-ACK retransmits of the request this socket was created from (server), or of
    /// the half-open requests that never became children (listener).
    pub synack_retransmits: u32,
    pub synack_retransmit_ts_ns: Vec<u64>,
    /// Retransmits in any state but SYN_SENT (data and FIN).
    pub retransmits: u32,
    pub retransmit_ts_ns: Vec<u64>,
    /// The part of `retransmits` in FIN_WAIT1, CLOSING or LAST_ACK.
    pub fin_retransmits: u32,
    pub resets_sent: u32,
    pub reset_sent_ts_ns: Vec<u64>,
    pub resets_received: u32,
    pub reset_received_ts_ns: Vec<u64>,
    /// Entered TIME_WAIT (see `docs/json-schema.md` for the rules). FIN_WAIT2/CLOSING →
    /// CLOSE without a reset hands the socket over to a timewait socket; with the peer on
    /// this host the peer's FIN decides whether that was TIME_WAIT or FIN_WAIT2 (see
    /// `fin_wait2_handover`); without it, FIN_WAIT2 → CLOSE counts as TIME_WAIT and
    /// `time_wait_certain` is false. No tracepoint here shows a kernel that had no
    /// timewait bucket (`tcp_max_tw_buckets`).
    pub time_wait: bool,
    /// t_ns of the TIME_WAIT entry: the CLOSE, or after a FIN_WAIT2 handover the time
    /// the peer sent its FIN (its FIN_WAIT1/LAST_ACK entry; arrival is a one-way delay
    /// later).
    pub time_wait_t_ns: Option<u64>,
    /// The FIN_WAIT2 → CLOSE came before the peer's FIN: the full socket was replaced by
    /// a timewait socket still in FIN_WAIT2 (an orphan whose FIN was ACKed, `close()` in
    /// FIN_WAIT2, the FIN_WAIT2 timer). Only known with the peer visible.
    pub fin_wait2_handover: bool,
    /// `time_wait` / `fin_wait2_handover` were established from what the trace shows
    /// (the peer's FIN or its absence, a CLOSING) rather than assumed. False for
    /// FIN_WAIT2 → CLOSE without the peer: TIME_WAIT (its FIN came, e.g. with the ACK
    /// of ours) and a FIN_WAIT2 handover look the same there.
    pub time_wait_certain: bool,
    /// Sent the first FIN (entered FIN_WAIT1).
    pub active_close: bool,
    /// Reached ESTABLISHED.
    pub established: bool,
    pub outcome: Outcome,
    /// No CLOSE seen (end of input, eviction, or reuse without a CLOSE).
    pub open: bool,
    /// First seen mid-life (no CLOSE → SYN_SENT / LISTEN → SYN_RECV / CLOSE → LISTEN).
    pub open_before_start: bool,
    /// Open before the start and found in the socket table read then (sock_diag):
    /// tuple, state and owner come from there until the trace shows more.
    pub seen_at_start: bool,
    /// Emitted early to bound memory.
    pub evicted: bool,
    /// Client: SYN_SENT → ESTABLISHED. Server: SYN_RECV → ESTABLISHED.
    pub handshake_ns: Option<u64>,
    /// Client: how long connecting took. Blocking `connect()`: its return − SYN_SENT.
    /// Non-blocking (`connect_nonblocking`): the syscall returned at once with
    /// EINPROGRESS, so this is ESTABLISHED (or the CLOSE of a failed attempt) − SYN_SENT.
    pub connect_latency_ns: Option<u64>,
    /// Client: the first `connect()` returned -EINPROGRESS (a non-blocking socket): the
    /// handshake went on after the call returned.
    pub connect_nonblocking: bool,
    /// Client: connect() return − ESTABLISHED (negative: returned before, e.g. EINPROGRESS).
    pub connect_after_established_ns: Option<i64>,
    /// Server: accept() return − ESTABLISHED (time in the accept queue).
    pub accept_wait_ns: Option<i64>,
    /// First state → CLOSE (null when open or first seen mid-life).
    pub lifetime_ns: Option<u64>,
    /// Time spent in FIN_WAIT2.
    pub fin_wait2_ns: Option<u64>,
    /// Time spent in CLOSE_WAIT (between the peer's FIN and this end's close()).
    pub close_wait_ns: Option<u64>,
    pub first_ts_ns: u64,
    pub last_ts_ns: u64,
    /// `id` of the other end of the same connection when it is on this host too.
    pub peer: Option<u64>,
    /// Server: `id` of the listener it came from.
    pub listener_id: Option<u64>,
    /// Listener only.
    pub listener: Option<ListenerInfo>,
    /// Client without a peer: the half-open request of a listener on this host that
    /// answered it (mirrored 4-tuple) and never became a child socket, with its SYN-ACK
    /// retransmits (also counted on the listener, not here).
    pub peer_request: Option<HalfOpenRequest>,
    /// Server: the listener's accept-queue length and limit when this child was
    /// queued; null when the kernel side did not read them.
    pub accept_queue: Option<AcceptQueue>,
    /// Both initial sequence numbers, read at ESTABLISHED (null when not read).
    pub isn: Option<Isn>,
    /// cgroup v2 id of the owner (from process-context events).
    pub cgroup_id: Option<u64>,
    /// Filled by the container enrichment stage (null on the host / until then).
    pub netns: Option<u64>,
    pub container_id: Option<String>,
    pub container_runtime: Option<String>,
    pub ns_pid: Option<u32>,
}

impl Connection {
    /// An empty record (used by the correlator; public for tests and tools).
    pub fn new(id: u64, role: Role, skaddr: u64, family: Family, ts_ns: u64) -> Connection {
        Connection {
            record_type: "connection",
            id,
            role,
            pid: None,
            comm: None,
            pid_source: PidSource::None,
            family,
            saddr: None,
            sport: 0,
            daddr: None,
            dport: 0,
            skaddr,
            states: Vec::new(),
            connect: None,
            connect_calls: Vec::new(),
            connect_return_ns: None,
            accept: None,
            accept_return_ns: None,
            ret: None,
            syn_retransmits: 0,
            syn_retransmit_ts_ns: Vec::new(),
            synack_retransmits: 0,
            synack_retransmit_ts_ns: Vec::new(),
            retransmits: 0,
            retransmit_ts_ns: Vec::new(),
            fin_retransmits: 0,
            resets_sent: 0,
            reset_sent_ts_ns: Vec::new(),
            resets_received: 0,
            reset_received_ts_ns: Vec::new(),
            time_wait: false,
            time_wait_t_ns: None,
            fin_wait2_handover: false,
            time_wait_certain: true,
            active_close: false,
            established: false,
            outcome: Outcome::Open,
            open: true,
            open_before_start: false,
            seen_at_start: false,
            evicted: false,
            handshake_ns: None,
            connect_latency_ns: None,
            connect_nonblocking: false,
            connect_after_established_ns: None,
            accept_wait_ns: None,
            lifetime_ns: None,
            fin_wait2_ns: None,
            close_wait_ns: None,
            first_ts_ns: ts_ns,
            last_ts_ns: ts_ns,
            peer: None,
            listener_id: None,
            listener: (role == Role::Listener).then(ListenerInfo::default),
            peer_request: None,
            accept_queue: None,
            isn: None,
            cgroup_id: None,
            netns: None,
            container_id: None,
            container_runtime: None,
            ns_pid: None,
        }
    }

    /// The name of `-ret` for the errnos `connect()`/`accept()` commonly return
    /// (`Connection::errno_name(-111) == Some("ECONNREFUSED")`); `None` for
    /// non-negative values and errnos not in the table.
    pub fn errno_name(ret: i64) -> Option<&'static str> {
        if ret >= 0 {
            return None;
        }
        crate::decode::errno_name(-ret)
    }

    /// Time of the first entry into `state`.
    pub fn state_ts(&self, state: TcpState) -> Option<u64> {
        self.states
            .iter()
            .skip(1)
            .find(|e| e.state == state)
            .map(|e| e.t_ns)
    }

    /// The state the socket was in at `t_ns` (last entry at or before it).
    pub fn state_at(&self, t_ns: u64) -> Option<TcpState> {
        self.states
            .iter()
            .take_while(|e| e.t_ns <= t_ns)
            .last()
            .map(|e| e.state)
    }

    /// Local end as `addr:port` (`[v6]:port`).
    pub fn local(&self) -> Endpoint {
        Endpoint(self.saddr, self.sport)
    }

    /// Remote end as `addr:port` (`[v6]:port`).
    pub fn remote(&self) -> Endpoint {
        Endpoint(self.daddr, self.dport)
    }

    /// Fills the fields derived from the history; called once when emitted.
    pub(crate) fn finish(&mut self, closed: bool, evicted: bool) {
        self.open = !closed;
        self.evicted = evicted;
        let est = self.state_ts(TcpState::Established);
        self.established = est.is_some();
        self.active_close = self.state_ts(TcpState::FinWait1).is_some();

        // TIME_WAIT as far as this socket alone shows: FIN_WAIT2/CLOSING → CLOSE not
        // caused by a reset, or a TIME_WAIT state. FIN_WAIT2 → CLOSE alone may also be a
        // handover in FIN_WAIT2: uncertain until `resolve_time_wait` sees the peer.
        self.fin_wait2_handover = false;
        match self.timewait_close() {
            Some((prev, t)) => {
                self.time_wait = true;
                self.time_wait_t_ns = Some(t);
                self.time_wait_certain = prev != TcpState::FinWait2;
            }
            None => {
                self.time_wait = false;
                self.time_wait_t_ns = None;
                self.time_wait_certain = true;
            }
        }

        let syn_sent = self.state_ts(TcpState::SynSent);
        let syn_recv = self.state_ts(TcpState::SynRecv);
        let start = match self.role {
            Role::Client => syn_sent,
            Role::Server => syn_recv,
            _ => None,
        };
        self.handshake_ns = match (start, est) {
            (Some(s), Some(e)) => Some(e.saturating_sub(s)),
            _ => None,
        };
        let conn_t = self.connect.map(|c| c.t_ns);
        self.connect_return_ns = conn_t;
        self.connect_nonblocking = self.connect.is_some_and(|c| c.ret == -EINPROGRESS);
        self.connect_latency_ns = if self.connect_nonblocking {
            // Until the socket was connected, or the attempt ended (refused, timed out).
            let failed = || {
                self.states
                    .iter()
                    .skip(1)
                    .find(|e| e.state == TcpState::Close)
                    .map(|e| e.t_ns)
            };
            match (est.or_else(failed), syn_sent) {
                (Some(e), Some(s)) => Some(e.saturating_sub(s)),
                _ => None,
            }
        } else {
            match (conn_t, syn_sent) {
                (Some(c), Some(s)) => Some(c.saturating_sub(s)),
                _ => None,
            }
        };
        self.connect_after_established_ns = match (conn_t, est) {
            (Some(c), Some(e)) => Some(c as i64 - e as i64),
            _ => None,
        };
        let acc_t = self.accept.map(|a| a.t_ns);
        self.accept_return_ns = acc_t;
        self.accept_wait_ns = match (acc_t, est) {
            (Some(a), Some(e)) => Some(a as i64 - e as i64),
            _ => None,
        };
        self.ret = match self.role {
            Role::Server => self.accept.map(|a| a.ret),
            Role::Client => self.connect.map(|c| c.ret),
            _ => self.connect.or(self.accept).map(|c| c.ret),
        };

        let close_t = if closed {
            self.states
                .iter()
                .skip(1)
                .rev()
                .find(|e| matches!(e.state, TcpState::Close | TcpState::TimeWait))
                .map(|e| e.t_ns)
        } else {
            None
        };
        self.lifetime_ns = match (self.open_before_start, self.states.first(), close_t) {
            (false, Some(first), Some(c)) => Some(c.saturating_sub(first.t_ns)),
            _ => None,
        };
        self.fin_wait2_ns = self.time_in(TcpState::FinWait2);
        self.close_wait_ns = self.time_in(TcpState::CloseWait);

        self.outcome = self.classify(closed, evicted);
    }

    /// The transition that handed the socket to a timewait socket: (state before, t_ns)
    /// of the first FIN_WAIT2/CLOSING → CLOSE without a reset between, or of a
    /// TIME_WAIT entry (then the state before is TIME_WAIT).
    pub fn timewait_close(&self) -> Option<(TcpState, u64)> {
        self.states.windows(2).find_map(|pair| {
            let (prev, next) = (pair[0], pair[1]);
            let tw = match (prev.state, next.state) {
                (_, TcpState::TimeWait) => return Some((TcpState::TimeWait, next.t_ns)),
                (TcpState::FinWait2 | TcpState::Closing, TcpState::Close) => !self
                    .reset_received_ts_ns
                    .iter()
                    .chain(&self.reset_sent_ts_ns)
                    .any(|&t| t >= prev.t_ns && t <= next.t_ns),
                _ => false,
            };
            tw.then_some((prev.state, next.t_ns))
        })
    }

    /// Corrects `time_wait`, `time_wait_t_ns`, `fin_wait2_handover` and
    /// `time_wait_certain` of a FIN_WAIT2 → CLOSE with what the peer on this host shows
    /// (call after [`Connection::finish`]). Without a usable peer view nothing changes.
    ///
    /// - The peer sent its FIN (FIN_WAIT1/LAST_ACK entry) at or before our CLOSE: the
    ///   FIN made the CLOSE, which entered TIME_WAIT.
    /// - It sent it later: the CLOSE was a handover in FIN_WAIT2 and TIME_WAIT began
    ///   when the FIN arrived (its send time is recorded), unless a reset answered that
    ///   FIN (no socket took it: no timewait socket, no TIME_WAIT).
    /// - It never sent one while its history is known past our CLOSE: handover, no
    ///   TIME_WAIT (certain only once the peer's record is complete).
    pub(crate) fn resolve_time_wait(&mut self, peer: Option<PeerView>) {
        let Some((TcpState::FinWait2, tc)) = self.timewait_close() else {
            return;
        };
        let Some(v) = peer else {
            return;
        };
        match v.fin_ts {
            Some(tf) if tf <= tc => {
                self.time_wait = true;
                self.time_wait_t_ns = Some(tc);
                self.fin_wait2_handover = false;
                self.time_wait_certain = true;
            }
            Some(tf) => {
                self.fin_wait2_handover = true;
                self.time_wait = !v.reset_after_fin;
                self.time_wait_t_ns = self.time_wait.then_some(tf);
                self.time_wait_certain = v.settled || v.reset_after_fin;
            }
            None if v.known_until >= tc => {
                self.fin_wait2_handover = true;
                self.time_wait = false;
                self.time_wait_t_ns = None;
                self.time_wait_certain = v.settled;
            }
            // The peer's history ends before our CLOSE (evicted): as without it.
            None => {}
        }
    }

    /// Time between entering `state` and the next transition.
    fn time_in(&self, state: TcpState) -> Option<u64> {
        let i = self.states.iter().skip(1).position(|e| e.state == state)? + 1;
        let next = self.states.get(i + 1)?;
        Some(next.t_ns.saturating_sub(self.states[i].t_ns))
    }

    fn classify(&self, closed: bool, evicted: bool) -> Outcome {
        if evicted && !closed {
            return Outcome::Evicted;
        }
        if !closed {
            return Outcome::Open;
        }
        if self.role == Role::Listener {
            return Outcome::Closed;
        }
        let resets = self.resets_received + self.resets_sent > 0;
        let ret = self.connect.map(|c| c.ret);
        if !self.established {
            let connecting = matches!(self.role, Role::Client | Role::Unknown);
            if connecting && (ret == Some(-111) || self.resets_received > 0) {
                return Outcome::Refused;
            }
            if ret == Some(-110) {
                return Outcome::TimedOut;
            }
            // SYN retransmitted, then closed without any reset and while no connect()
            // returned another error: the kernel gave up.
            let last = self.states.last().map(|e| e.state);
            let prev = self
                .states
                .len()
                .checked_sub(2)
                .map(|i| self.states[i].state);
            if self.syn_retransmits > 0
                && prev == Some(TcpState::SynSent)
                && last == Some(TcpState::Close)
                && ret.is_none_or(|r| r >= 0 || r == -115)
            {
                return Outcome::TimedOut;
            }
            return if resets {
                Outcome::Reset
            } else {
                Outcome::Aborted
            };
        }
        if resets {
            return Outcome::Reset;
        }
        if self.time_wait {
            return Outcome::Closed;
        }
        // The transition into CLOSE: orderly from LAST_ACK (passive closer).
        let last_close = self
            .states
            .windows(2)
            .rev()
            .find(|p| p[1].state == TcpState::Close)
            .map(|p| p[0].state);
        match last_close {
            Some(TcpState::LastAck | TcpState::FinWait2 | TcpState::Closing) => Outcome::Closed,
            _ => Outcome::Aborted,
        }
    }
}

/// An `addr:port` pair for display (`[v6]:port`; `*` for an unknown address).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint(pub Option<IpAddr>, pub u16);

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::fmt::Write as _;
        // Format into a stack buffer so that width/alignment apply to the whole.
        let mut buf = super::StackStr::<64>::new();
        let _ = match self.0 {
            Some(IpAddr::V6(a)) => write!(buf, "[{a}]:{}", self.1),
            Some(a) => write!(buf, "{a}:{}", self.1),
            None => write!(buf, "*:{}", self.1),
        };
        f.pad(buf.as_str())
    }
}

#[cfg(test)]
fn ser_state<S: Serializer>(s: &TcpState, ser: S) -> Result<S::Ok, S::Error> {
    match s {
        TcpState::Unknown(n) => ser.collect_str(&format_args!("UNKNOWN({n})")),
        s => ser.serialize_str(s.name()),
    }
}

#[cfg(test)]
fn ser_family<S: Serializer>(f: &Family, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(f.name())
}

#[cfg(test)]
fn ser_comm<S: Serializer>(c: &Option<Comm>, ser: S) -> Result<S::Ok, S::Error> {
    match c {
        Some(c) => {
            // As `Display` prints it (at most 4 bytes per byte), without allocating.
            let mut b = StackStr::<64>::new();
            text::put_comm(&mut b, c, false);
            ser.serialize_str(b.as_str())
        }
        None => ser.serialize_none(),
    }
}

#[cfg(test)]
fn ser_hex<S: Serializer>(v: &u64, ser: S) -> Result<S::Ok, S::Error> {
    let mut b = StackStr::<24>::new();
    text::put_hex(&mut b, *v);
    ser.serialize_str(b.as_str())
}

/// As serde does it (the `Display` string for human-readable formats), without
/// `core::fmt`.
#[cfg(test)]
fn ser_ip<S: Serializer>(a: &IpAddr, ser: S) -> Result<S::Ok, S::Error> {
    if !ser.is_human_readable() {
        return a.serialize(ser);
    }
    let mut b = StackStr::<48>::new();
    text::put_ip(&mut b, *a);
    ser.serialize_str(b.as_str())
}

#[cfg(test)]
struct IpStr(IpAddr);

#[cfg(test)]
impl Serialize for IpStr {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        ser_ip(&self.0, ser)
    }
}

#[cfg(test)]
fn ser_opt_ip<S: Serializer>(a: &Option<IpAddr>, ser: S) -> Result<S::Ok, S::Error> {
    match a {
        Some(a) => ser.serialize_some(&IpStr(*a)),
        None => ser.serialize_none(),
    }
}
