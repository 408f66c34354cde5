//! `tcp-trace explain`: the cause of a slow or failed connection, named from its
//! captured timeline.
//!
//! Pure: no I/O and no clock. [`diagnose`] looks at one finished [`Connection`];
//! [`Aggregator`] is fed finished connections and, with a time argument, the
//! correlator's open connections, and reports CLOSE_WAIT leaks and TIME_WAIT
//! pressure. The sentences are written by `render::explain`; the rules are in
//! `docs/explain.md`.
use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::net::IpAddr;

use serde::Serialize;

use crate::correlate::{AcceptQueue, Connection, Endpoint, Outcome, Role};
use crate::decode::TcpState;

/// How long a timewait socket lives (`TCP_TIMEWAIT_LEN`).
pub const TIME_WAIT_LEN_NS: u64 = 60_000_000_000;
/// The kernel's initial retransmission timeout (`TCP_TIMEOUT_INIT`), the SYN-ACK's
/// first timer.
pub const TIMEOUT_INIT_NS: u64 = 1_000_000_000;

/// Thresholds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Config {
    /// A phase at least this long is slow (`--slow MS`).
    pub slow_ns: u64,
    /// A CLOSE_WAIT socket at least this old counts as leaked (`--close-wait-secs`).
    pub close_wait_ns: u64,
    /// TIME_WAIT sockets towards one remote end worth a report (`--time-wait-min`).
    pub time_wait_min: u32,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            slow_ns: 200_000_000,
            close_wait_ns: 10_000_000_000,
            time_wait_min: 100,
        }
    }
}

/// The local port range and TIME_WAIT reuse setting (`net.ipv4.ip_local_port_range`,
/// `net.ipv4.tcp_tw_reuse`), read by the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct PortRange {
    pub low: u16,
    pub high: u16,
    /// 0 off, 1 on, 2 loopback only (the kernel's default).
    pub tw_reuse: u8,
}

impl PortRange {
    pub fn ports(&self) -> u32 {
        u32::from(self.high.saturating_sub(self.low)) + 1
    }

    /// Parses the two files' contents.
    pub fn parse(range: &str, tw_reuse: &str) -> Option<PortRange> {
        let mut it = range.split_whitespace().map(str::parse::<u16>);
        let low = it.next()?.ok()?;
        let high = it.next()?.ok()?;
        let tw_reuse = tw_reuse.trim().parse().ok()?;
        Some(PortRange {
            low,
            high,
            tw_reuse,
        })
    }
}

/// What made a connection slow or end badly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// The SYN was retransmitted: the first SYN (or its SYN-ACK) was lost.
    LostSyn,
    /// Slow handshake with no retransmit: the answer was slow to come.
    SlowHandshake,
    /// The server's SYN-ACK was retransmitted: the SYN-ACK or the third ACK was lost.
    #[serde(rename = "lost_synack")]
    LostSynAck,
    /// The listener's accept queue was full when the child was queued.
    AcceptQueueFull,
    /// The child waited in the accept queue: `accept()` came late.
    SlowAccept,
    /// `connect()` returned long after the connection was established.
    SlowConnectReturn,
    /// A reset answered the SYN (`ECONNREFUSED`).
    Refused,
    /// The SYN was never answered (`ETIMEDOUT`).
    TimedOut,
    /// A reset ended the connection.
    Reset,
    /// FIN retransmitted while closing.
    LostFin,
    /// CLOSE_WAIT held by the application (it closed late).
    SlowCloseWait,
    /// FIN_WAIT2: waiting for the peer's FIN.
    SlowFinWait2,
    /// The close was slow and none of the above shows why.
    SlowClose,
    /// Open CLOSE_WAIT sockets older than the threshold (aggregate).
    CloseWaitLeak,
    /// TIME_WAIT sockets towards one remote end (aggregate).
    TimeWaitPressure,
}

impl Cause {
    pub fn name(self) -> &'static str {
        match self {
            Cause::LostSyn => "lost_syn",
            Cause::SlowHandshake => "slow_handshake",
            Cause::LostSynAck => "lost_synack",
            Cause::AcceptQueueFull => "accept_queue_full",
            Cause::SlowAccept => "slow_accept",
            Cause::SlowConnectReturn => "slow_connect_return",
            Cause::Refused => "refused",
            Cause::TimedOut => "timed_out",
            Cause::Reset => "reset",
            Cause::LostFin => "lost_fin",
            Cause::SlowCloseWait => "slow_close_wait",
            Cause::SlowFinWait2 => "slow_fin_wait2",
            Cause::SlowClose => "slow_close",
            Cause::CloseWaitLeak => "close_wait_leak",
            Cause::TimeWaitPressure => "time_wait_pressure",
        }
    }
}

/// The phase the cause concerns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Handshake,
    Connect,
    Accept,
    Lifetime,
    Close,
    /// Aggregates over open sockets / timewait sockets.
    Open,
}

/// Which end did something (sent the reset, closed late).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum End {
    Local,
    Remote,
}

/// One diagnosis: the cause and the numbers behind it. The `{"type":"diagnosis"}`
/// JSON line (`docs/json-schema.md`) is this plus the sentence.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Diagnosis {
    pub cause: Cause,
    pub phase: Phase,
    /// The connection's `id` (null for aggregates).
    pub id: Option<u64>,
    pub role: Option<Role>,
    pub pid: Option<u32>,
    pub comm: Option<String>,
    /// `addr:port` of this socket's end (null for aggregates over several).
    pub local: Option<String>,
    /// `addr:port` of the remote end.
    pub remote: Option<String>,
    /// When the phase began (CLOCK_MONOTONIC ns; for aggregates the time of the report).
    pub start_ns: u64,
    /// How long the phase took (for a server's handshake with SYN-ACK retransmits: from
    /// the first retransmit to ESTABLISHED, the SYN's arrival not being traced).
    pub duration_ns: Option<u64>,
    /// The retransmits that decide the cause (SYN, SYN-ACK or FIN): count and times.
    pub retransmits: u32,
    pub retransmit_ts_ns: Vec<u64>,
    /// Who reset / refused.
    pub by: Option<End>,
    /// `connect()`/`accept()` error, if any.
    pub errno: Option<&'static str>,
    /// The listener's accept queue when the child was queued (server).
    pub accept_queue: Option<AcceptQueue>,
    /// Aggregates: how many sockets.
    pub count: Option<u32>,
    /// CLOSE_WAIT leak: age of the oldest socket (at least that old when `at_start`
    /// counts some).
    pub oldest_ns: Option<u64>,
    /// CLOSE_WAIT leak: how many of the sockets were already in CLOSE_WAIT when the
    /// trace started (from the socket table; their age counts from then, a lower
    /// bound). Null when none.
    pub at_start: Option<u32>,
    /// TIME_WAIT pressure: the local port range and `tcp_tw_reuse`.
    pub port_range: Option<PortRange>,
    /// TIME_WAIT pressure: `low`, `moderate` or `high` (see `docs/explain.md`).
    pub risk: Option<&'static str>,
}

impl Diagnosis {
    fn of(c: &Connection, cause: Cause, phase: Phase, start_ns: u64) -> Diagnosis {
        Diagnosis {
            cause,
            phase,
            id: Some(c.id),
            role: Some(c.role),
            pid: c.pid,
            comm: c.comm.map(|m| m.to_string()),
            local: Some(c.local().to_string()),
            remote: Some(c.remote().to_string()),
            start_ns,
            duration_ns: None,
            retransmits: 0,
            retransmit_ts_ns: Vec::new(),
            by: None,
            errno: None,
            accept_queue: c.accept_queue,
            count: None,
            oldest_ns: None,
            at_start: None,
            port_range: None,
            risk: None,
        }
    }

    fn aggregate(cause: Cause, now_ns: u64) -> Diagnosis {
        Diagnosis {
            cause,
            phase: Phase::Open,
            id: None,
            role: None,
            pid: None,
            comm: None,
            local: None,
            remote: None,
            start_ns: now_ns,
            duration_ns: None,
            retransmits: 0,
            retransmit_ts_ns: Vec::new(),
            by: None,
            errno: None,
            accept_queue: None,
            count: None,
            oldest_ns: None,
            at_start: None,
            port_range: None,
            risk: None,
        }
    }

    fn took(mut self, ns: u64) -> Diagnosis {
        self.duration_ns = Some(ns);
        self
    }

    fn retx(mut self, ts: &[u64]) -> Diagnosis {
        self.retransmits = ts.len() as u32;
        self.retransmit_ts_ns = ts.to_vec();
        self
    }
}

/// The first SYN_SENT entry (client) or the first entry at all.
fn start_of(c: &Connection) -> u64 {
    c.state_ts(TcpState::SynSent)
        .or_else(|| c.states.first().map(|e| e.t_ns))
        .unwrap_or(c.first_ts_ns)
}

/// The cause of the first slow or failed phase of the finished connection `c`, or
/// None when every phase was quicker than `cfg.slow_ns` and it ended normally.
/// Failures (refused, timed out, reset) are always reported.
pub fn diagnose(c: &Connection, cfg: &Config) -> Option<Diagnosis> {
    if c.role == Role::Listener || c.open || c.evicted {
        return None;
    }
    failure(c)
        .or_else(|| handshake(c, cfg))
        .or_else(|| after_handshake(c, cfg))
        .or_else(|| close(c, cfg))
}

fn failure(c: &Connection) -> Option<Diagnosis> {
    let errno = c.ret.and_then(Connection::errno_name);
    let start = start_of(c);
    let close_t = c.state_ts(TcpState::Close).unwrap_or(c.last_ts_ns);
    match c.outcome {
        Outcome::Refused => {
            let mut d = Diagnosis::of(c, Cause::Refused, Phase::Handshake, start)
                .took(close_t.saturating_sub(start))
                .retx(&c.syn_retransmit_ts_ns);
            d.by = Some(if c.resets_received > 0 {
                End::Remote
            } else {
                End::Local
            });
            d.errno = errno;
            Some(d)
        }
        Outcome::TimedOut => {
            let mut d = Diagnosis::of(c, Cause::TimedOut, Phase::Handshake, start)
                .took(close_t.saturating_sub(start))
                .retx(&c.syn_retransmit_ts_ns);
            d.errno = errno;
            Some(d)
        }
        Outcome::Reset => {
            // The first reset, sent or received.
            let sent = c.reset_sent_ts_ns.first().copied();
            let recv = c.reset_received_ts_ns.first().copied();
            let (by, t) = match (sent, recv) {
                (Some(s), Some(r)) if r < s => (End::Remote, r),
                (Some(s), _) => (End::Local, s),
                (None, Some(r)) => (End::Remote, r),
                (None, None) => (End::Local, c.last_ts_ns),
            };
            let phase = if c.established {
                Phase::Lifetime
            } else {
                Phase::Handshake
            };
            let begin = c.states.first().map(|e| e.t_ns).unwrap_or(c.first_ts_ns);
            let mut d = Diagnosis::of(c, Cause::Reset, phase, begin).took(t.saturating_sub(begin));
            d.by = Some(by);
            d.errno = errno;
            Some(d)
        }
        _ => None,
    }
}

fn handshake(c: &Connection, cfg: &Config) -> Option<Diagnosis> {
    match c.role {
        Role::Client => {
            let start = c.state_ts(TcpState::SynSent)?;
            // How long connecting took: the blocking call's return, else ESTABLISHED.
            let took = c.connect_latency_ns.or(c.handshake_ns)?;
            if took < cfg.slow_ns {
                return None;
            }
            let cause = if c.syn_retransmits > 0 {
                Cause::LostSyn
            } else {
                Cause::SlowHandshake
            };
            let mut d = Diagnosis::of(c, cause, Phase::Connect, start)
                .took(took)
                .retx(&c.syn_retransmit_ts_ns);
            d.errno = c.connect.and_then(|r| r.errno);
            Some(d)
        }
        Role::Server => {
            let est = c.state_ts(TcpState::Established)?;
            let first = c.synack_retransmit_ts_ns.first().copied();
            // The SYN's arrival is not traced: with a retransmit the handshake lasted at
            // least the first SYN-ACK timer plus what followed the retransmit.
            let known = first.map(|f| est.saturating_sub(f));
            let lower = known.map(|k| k + TIMEOUT_INIT_NS).or(c.handshake_ns)?;
            if lower < cfg.slow_ns {
                return None;
            }
            let queue_full = c.accept_queue.is_some_and(|q| q.full());
            let cause = if queue_full && first.is_some() {
                Cause::AcceptQueueFull
            } else if first.is_some() {
                Cause::LostSynAck
            } else {
                Cause::SlowHandshake
            };
            let start = first.unwrap_or_else(|| c.state_ts(TcpState::SynRecv).unwrap_or(est));
            Some(
                Diagnosis::of(c, cause, Phase::Handshake, start)
                    .took(known.or(c.handshake_ns).unwrap_or(0))
                    .retx(&c.synack_retransmit_ts_ns),
            )
        }
        _ => None,
    }
}

fn after_handshake(c: &Connection, cfg: &Config) -> Option<Diagnosis> {
    let est = c.state_ts(TcpState::Established)?;
    match c.role {
        Role::Server => {
            let wait = u64::try_from(c.accept_wait_ns?).ok()?;
            if wait < cfg.slow_ns {
                return None;
            }
            let cause = if c.accept_queue.is_some_and(|q| q.full()) {
                Cause::AcceptQueueFull
            } else {
                Cause::SlowAccept
            };
            Some(Diagnosis::of(c, cause, Phase::Accept, est).took(wait))
        }
        Role::Client if !c.connect_nonblocking => {
            let late = u64::try_from(c.connect_after_established_ns?).ok()?;
            if late < cfg.slow_ns {
                return None;
            }
            Some(Diagnosis::of(c, Cause::SlowConnectReturn, Phase::Connect, est).took(late))
        }
        _ => None,
    }
}

fn close(c: &Connection, cfg: &Config) -> Option<Diagnosis> {
    use TcpState::*;
    // From the first FIN (sent or received) to the CLOSE / TIME_WAIT.
    let begin = c
        .states
        .iter()
        .skip(1)
        .find(|e| matches!(e.state, FinWait1 | CloseWait))?;
    let closed = c
        .states
        .iter()
        .skip(1)
        .rev()
        .find(|e| matches!(e.state, Close | TimeWait))?
        .t_ns;
    // After a handover in FIN_WAIT2 (the application had closed: a timewait socket
    // took over, still in FIN_WAIT2) the wait for the peer's FIN went on until
    // TIME_WAIT began, when the peer on this host shows it.
    let handover_tw = if c.fin_wait2_handover {
        c.time_wait_t_ns.filter(|&t| t > closed)
    } else {
        None
    };
    let end = handover_tw.unwrap_or(closed);
    let took = end.saturating_sub(begin.t_ns);
    if took < cfg.slow_ns {
        return None;
    }
    let d = Diagnosis::of(c, Cause::SlowClose, Phase::Close, begin.t_ns).took(took);
    // FIN retransmits: retransmits while in FIN_WAIT1, CLOSING or LAST_ACK.
    let fin_ts: Vec<u64> = c
        .retransmit_ts_ns
        .iter()
        .copied()
        .filter(|&t| t >= begin.t_ns && matches!(c.state_at(t), Some(FinWait1 | Closing | LastAck)))
        .collect();
    if c.fin_retransmits > 0 && !fin_ts.is_empty() {
        return Some(Diagnosis {
            cause: Cause::LostFin,
            ..d.retx(&fin_ts)
        });
    }
    let cw = c.close_wait_ns.unwrap_or(0);
    let fw2 = match (handover_tw, c.state_ts(FinWait2)) {
        (Some(t), Some(f)) => t.saturating_sub(f),
        _ => c.fin_wait2_ns.unwrap_or(0),
    };
    if cw >= cfg.slow_ns && cw >= fw2 {
        let start = c.state_ts(CloseWait).unwrap_or(begin.t_ns);
        let mut d = Diagnosis {
            cause: Cause::SlowCloseWait,
            start_ns: start,
            ..d
        }
        .took(cw);
        d.by = Some(End::Local);
        return Some(d);
    }
    if fw2 >= cfg.slow_ns {
        let start = c.state_ts(FinWait2).unwrap_or(begin.t_ns);
        let mut d = Diagnosis {
            cause: Cause::SlowFinWait2,
            start_ns: start,
            ..d
        }
        .took(fw2);
        d.by = Some(End::Remote);
        return Some(d);
    }
    Some(d)
}

/// A socket in the socket table read at start, in CLOSE_WAIT then, with no event
/// since (see [`Aggregator::close_wait_leaks`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenAtStart {
    pub pid: Option<u32>,
    pub comm: Option<String>,
    /// Server when something listened on its local port at start, else client.
    pub role: Role,
    pub local: (IpAddr, u16),
    pub remote: (IpAddr, u16),
    /// When the socket table was read (CLOCK_MONOTONIC ns): it was in CLOSE_WAIT then.
    pub since_ns: u64,
}

/// CLOSE_WAIT leaks and TIME_WAIT pressure over time.
#[derive(Debug, Default)]
pub struct Aggregator {
    cfg: Config,
    /// Client TIME_WAIT entries: (time, remote address, remote port, local port),
    /// oldest first.
    time_wait: VecDeque<(u64, IpAddr, u16, u16)>,
    /// (remote address, remote port, local port) of the entries from the socket table
    /// (see [`Aggregator::time_wait_at_start`]), until `tw_at_start_until`: a traced
    /// connection with one of them is already counted.
    tw_at_start: std::collections::HashSet<(IpAddr, u16, u16)>,
    tw_at_start_until: u64,
    /// What was reported last per key, so that only changes are reported again.
    reported_leaks: BTreeMap<LeakKey, u32>,
    reported_tw: BTreeMap<(IpAddr, u16), u32>,
}

/// A CLOSE_WAIT leak's group: owner and remote end. A client's remote end is the
/// server's `addr:port`; sockets accepted by a server are grouped by the local port
/// and the clients' address (their ports differ).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct LeakKey {
    pid: Option<u32>,
    comm: Option<String>,
    role: Role,
    local: Option<String>,
    remote: String,
}

impl LeakKey {
    /// A socket's group: a server's by its local end and the client's address (its
    /// port differs per socket; the whole end when the address is not known), anyone
    /// else's by the remote end.
    fn of(
        pid: Option<u32>,
        comm: Option<String>,
        role: Role,
        local: Endpoint,
        remote: Endpoint,
    ) -> LeakKey {
        let server = role == Role::Server;
        LeakKey {
            pid,
            comm,
            role,
            local: server.then(|| local.to_string()),
            remote: match (server, remote.0) {
                (true, Some(a)) => a.to_string(),
                _ => remote.to_string(),
            },
        }
    }
}

impl Aggregator {
    pub fn new(cfg: Config) -> Aggregator {
        Aggregator {
            cfg,
            ..Aggregator::default()
        }
    }

    /// A finished connection: a client that entered TIME_WAIT holds its local port
    /// (towards that remote end) for [`TIME_WAIT_LEN_NS`].
    pub fn push(&mut self, c: &Connection) {
        if c.role != Role::Client || !c.time_wait {
            return;
        }
        let (Some(t), Some(addr)) = (c.time_wait_t_ns, c.daddr) else {
            return;
        };
        // Kept in time order (connections finish nearly in order).
        // The socket table, read a little after the start, may have counted it already.
        if !self.tw_at_start.is_empty() && self.tw_at_start.remove(&(addr, c.dport, c.sport)) {
            return;
        }
        let at = self.time_wait.partition_point(|e| e.0 <= t);
        self.time_wait.insert(at, (t, addr, c.dport, c.sport));
    }

    /// Client TIME_WAIT sockets that were there when the trace started (the socket
    /// table's, read at `at_ns`): each `(ms left on its timer, remote address, remote
    /// port, local port)` holds its local port until `at_ns` + that, as a traced one
    /// does for [`TIME_WAIT_LEN_NS`] from its entry. The table is read a little after
    /// the hooks are attached: one the trace has counted already is left out, and a
    /// traced one that comes later with the same ends is not counted again.
    pub fn time_wait_at_start(
        &mut self,
        at_ns: u64,
        sockets: impl IntoIterator<Item = (u32, IpAddr, u16, u16)>,
    ) {
        let before = self.time_wait.len();
        let traced: std::collections::HashSet<(IpAddr, u16, u16)> =
            self.time_wait.iter().map(|e| (e.1, e.2, e.3)).collect();
        for (left_ms, addr, port, lport) in sockets {
            if traced.contains(&(addr, port, lport)) {
                continue;
            }
            let left = u64::from(left_ms)
                .saturating_mul(1_000_000)
                .min(TIME_WAIT_LEN_NS);
            // The entry time that makes it go when its timer does.
            let t = (at_ns + left).saturating_sub(TIME_WAIT_LEN_NS);
            self.time_wait.push_back((t, addr, port, lport));
            self.tw_at_start.insert((addr, port, lport));
        }
        self.tw_at_start_until = at_ns + TIME_WAIT_LEN_NS;
        if self.time_wait.len() > before {
            // Kept in time order (one sort, not one insertion per socket: a busy host
            // holds 100 k of them).
            self.time_wait.make_contiguous().sort_by_key(|e| e.0);
        }
    }

    /// CLOSE_WAIT sockets among `open`, and among the sockets `at_start` that were in
    /// CLOSE_WAIT when the trace started and have had no event since (their age counts
    /// from their `since_ns`, the time the socket table was read: a lower bound), older
    /// than the threshold at `now_ns`, per owner and remote end: one diagnosis per group
    /// whose count changed since the last call (all of them when `all`).
    pub fn close_wait_leaks<'a>(
        &mut self,
        open: impl IntoIterator<Item = &'a Connection>,
        at_start: impl IntoIterator<Item = OpenAtStart>,
        now_ns: u64,
        all: bool,
    ) -> Vec<Diagnosis> {
        // Each socket in CLOSE_WAIT: its group, its age, whether it is from the table.
        let traced = open.into_iter().filter_map(|c| {
            let last = c.states.last().filter(|l| l.state == TcpState::CloseWait)?;
            let key = LeakKey::of(
                c.pid,
                c.comm.map(|m| m.to_string()),
                c.role,
                c.local(),
                c.remote(),
            );
            Some((key, now_ns.saturating_sub(last.t_ns), false))
        });
        let earlier = at_start.into_iter().map(|s| {
            let (local, remote) = (
                Endpoint(Some(s.local.0), s.local.1),
                Endpoint(Some(s.remote.0), s.remote.1),
            );
            let key = LeakKey::of(s.pid, s.comm, s.role, local, remote);
            (key, now_ns.saturating_sub(s.since_ns), true)
        });
        // Per group: count, oldest age, how many from the start.
        let mut groups: BTreeMap<LeakKey, (u32, u64, u32)> = BTreeMap::new();
        for (key, age, from_start) in earlier.chain(traced) {
            if age < self.cfg.close_wait_ns {
                continue;
            }
            let g = groups.entry(key).or_insert((0, 0, 0));
            g.0 += 1;
            g.1 = g.1.max(age);
            g.2 += u32::from(from_start);
        }
        let mut out = Vec::new();
        for (key, (count, oldest, from_start)) in &groups {
            if !all && self.reported_leaks.get(key) == Some(count) {
                continue;
            }
            let mut d = Diagnosis::aggregate(Cause::CloseWaitLeak, now_ns);
            d.pid = key.pid;
            d.comm = key.comm.clone();
            d.role = Some(key.role);
            d.local = key.local.clone();
            d.remote = Some(key.remote.clone());
            d.count = Some(*count);
            d.oldest_ns = Some(*oldest);
            d.at_start = (*from_start > 0).then_some(*from_start);
            d.by = Some(End::Local);
            out.push(d);
        }
        self.reported_leaks = groups.into_iter().map(|(k, (n, _, _))| (k, n)).collect();
        out
    }

    /// Client TIME_WAIT sockets still alive at `now_ns`, per remote end, where at least
    /// `time_wait_min`: reported when new or doubled since the last report (all of
    /// them when `all`).
    pub fn time_wait_pressure(
        &mut self,
        range: Option<PortRange>,
        now_ns: u64,
        all: bool,
    ) -> Vec<Diagnosis> {
        while self
            .time_wait
            .front()
            .is_some_and(|e| e.0 + TIME_WAIT_LEN_NS <= now_ns)
        {
            self.time_wait.pop_front();
        }
        let mut groups: BTreeMap<(IpAddr, u16), u32> = BTreeMap::new();
        if now_ns >= self.tw_at_start_until && !self.tw_at_start.is_empty() {
            // All of the table's have gone: nothing left to be counted twice.
            self.tw_at_start = Default::default();
        }
        for &(t, a, p, _) in &self.time_wait {
            if t <= now_ns {
                *groups.entry((a, p)).or_insert(0) += 1;
            }
        }
        let mut out = Vec::new();
        for (&(addr, port), &count) in &groups {
            if count < self.cfg.time_wait_min {
                continue;
            }
            let last = self.reported_tw.get(&(addr, port)).copied();
            if !all && last.is_some_and(|l| count < l.saturating_mul(2)) {
                continue;
            }
            self.reported_tw.insert((addr, port), count);
            let mut d = Diagnosis::aggregate(Cause::TimeWaitPressure, now_ns);
            d.remote = Some(Endpoint(Some(addr), port).to_string());
            d.count = Some(count);
            d.port_range = range;
            d.risk = Some(time_wait_risk(count, range, addr));
            out.push(d);
        }
        self.reported_tw.retain(|k, _| groups.contains_key(k));
        out
    }
}

/// How close `count` TIME_WAIT sockets towards one remote end bring `connect()` to
/// running out of local ports (EADDRNOTAVAIL): each holds one port of the range for
/// that remote end unless `tcp_tw_reuse` lets a new connection take it over.
pub fn time_wait_risk(count: u32, range: Option<PortRange>, remote: IpAddr) -> &'static str {
    let Some(r) = range else {
        return "unknown";
    };
    let reuse = match r.tw_reuse {
        1 => true,
        2 => remote.is_loopback(),
        _ => false,
    };
    let share = f64::from(count) / f64::from(r.ports());
    if reuse {
        // Ports in TIME_WAIT are reused for new connects (with TCP timestamps).
        return "low";
    }
    if share >= 0.5 {
        "high"
    } else if share >= 0.1 {
        "moderate"
    } else {
        "low"
    }
}

#[cfg(test)]
mod tests;
