//! Correlator: decoded [`Event`]s → [`Connection`]s.
//!
//! Pure and deterministic: no I/O, no clock (time comes only from the events), no
//! iteration over hash maps where order could leak into the output.
//!
//! - Sockets are keyed by `skaddr` with a generation: a start transition (CLOSE →
//!   SYN_SENT, CLOSE → LISTEN, LISTEN → SYN_RECV) on an address whose connection is
//!   closed (or lost its CLOSE) starts a new [`Connection`] with a new `id`.
//! - A reorder buffer holds each event until the newest timestamp seen is
//!   `reorder_window_ns` past it, so events from different CPUs are applied in
//!   timestamp order.
//! - A closed connection stays in the table for a short linger
//!   ([`DEFAULT_CLOSE_LINGER_NS`]) so that what the kernel reports after the CLOSE
//!   (the `connect()` return of a refused or timed-out connect, a reset sent by
//!   `close()` with unread data) still lands on it; then it is emitted.
//! - SYN-ACK retransmits (reported on the listener) wait per request 4-tuple and move
//!   into the child socket created with that tuple; those that never become a child
//!   are reported on the listener as half-open requests.
//! - A client and a server socket on this host with mirrored 4-tuples are linked
//!   through `peer`; [`conversations`] groups them for the ladder view.
//! - FIN_WAIT2 → CLOSE is a handover to a timewait socket, in TIME_WAIT only if the
//!   peer's FIN had come. With the peer linked, such a connection is held past its
//!   linger until the peer's record is complete (at most
//!   [`DEFAULT_FIN_WAIT2_HOLD_NS`], the longest a FIN_WAIT2 timewait socket lives)
//!   when the peer had not sent its FIN by then; `time_wait`, `time_wait_t_ns`,
//!   `fin_wait2_handover` and `time_wait_certain` are then set from the peer's FIN.
//! - A client without a peer gets the half-open request of a listener on this host
//!   that answered it (`peer_request`), for the ladder.
//! - Memory is bounded: at most `max_sockets` sockets and as many pending requests;
//!   beyond that the least recently updated socket is emitted with `evicted: true`.
mod connection;
mod conversation;
mod hash;
mod reorder;

#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod testutil;

use std::collections::VecDeque;
use std::net::IpAddr;

use serde::Serialize;

use connection::PeerView;
pub(crate) use connection::StackStr;
pub use connection::{AcceptQueue, Isn};
pub use connection::{
    Connection, EINPROGRESS, Endpoint, HalfOpenRequest, ListenerInfo, Outcome, PidSource, Role,
    StateEntry, SyscallReturn,
};
pub use conversation::{Conversation, ConversationJoiner, conversations};
use hash::{FastMap, fast_map};

use crate::decode::{Event, EventKind, Family, TcpState};

pub const DEFAULT_MAX_SOCKETS: usize = 65_536;
pub const DEFAULT_REORDER_WINDOW_NS: u64 = 20_000_000;
/// How long a closed connection waits for late events (syscall returns, resets sent
/// after the CLOSE) before it is emitted. Never less than the reorder window.
pub const DEFAULT_CLOSE_LINGER_NS: u64 = 100_000_000;
/// Longest a closed FIN_WAIT2 → CLOSE connection waits (from its CLOSE) for its peer's
/// record to show whether the CLOSE entered TIME_WAIT: a timewait socket that took
/// over in FIN_WAIT2 lives at most `TCP_TIMEWAIT_LEN` (60 s), so a later FIN cannot
/// put it in TIME_WAIT.
pub const DEFAULT_FIN_WAIT2_HOLD_NS: u64 = 60_000_000_000;
/// Longest a server child that closed (reset, or its peer's FIN and its own) while
/// still in its listener's accept queue waits, from its CLOSE, for the `accept()` that
/// takes it. The queue keeps the socket, so its address is not reused meanwhile.
pub const ACCEPT_HOLD_NS: u64 = 10_000_000_000;

/// A TCP socket that existed when the trace started, from the socket table
/// (sock_diag): what the trace cannot show of a connection opened before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seed {
    pub netns: u32,
    pub local: (IpAddr, u16),
    pub remote: (IpAddr, u16),
    pub state: TcpState,
    /// A process holding the socket's fd (pid, comm), where found.
    pub owner: Option<(u32, crate::decode::Comm)>,
    /// The trace's filter surely takes this socket's events: with no event since the
    /// start, it is still as the table saw it (see [`Correlator::seeded_in`]).
    pub selected: bool,
}

/// Correlator settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Most sockets tracked at once (and most pending half-open requests).
    pub max_sockets: usize,
    /// How long an event is held back to let earlier events from other CPUs arrive.
    pub reorder_window_ns: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            max_sockets: DEFAULT_MAX_SOCKETS,
            reorder_window_ns: DEFAULT_REORDER_WINDOW_NS,
        }
    }
}

/// Counters of the correlator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Events pushed.
    pub events: u64,
    /// Events applied (pushed minus still buffered).
    pub applied: u64,
    /// Events applied after a later one had been (they came later than the window).
    pub late_events: u64,
    /// Events that matched no socket: resets without a socket or known tuple, syscall
    /// returns for untracked sockets, accept returns whose tuple did not match.
    pub orphan_events: u64,
    /// `accept()` returns with an error (no socket to attach to).
    pub failed_accepts: u64,
    /// Connections started.
    pub connections: u64,
    /// Connections emitted.
    pub emitted: u64,
    /// Open connections emitted early to stay within `max_sockets`.
    pub evicted: u64,
    /// Connections whose socket started anew without a CLOSE seen (lost events).
    pub superseded: u64,
    /// SYN-ACK retransmits not tracked per request because the pending table was full.
    pub untracked_requests: u64,
    /// Sockets tracked now.
    pub tracked_sockets: usize,
    /// Half-open requests (with SYN-ACK retransmits) tracked now.
    pub pending_requests: usize,
    /// Events in the reorder buffer now.
    pub buffered_events: usize,
}

/// Local and remote (address, port), IPv4-mapped IPv6 addresses folded to IPv4.
type Tuple = (IpAddr, u16, IpAddr, u16);

/// Inode of a network namespace as the kernel side reports it (0 = unknown). Part of
/// every key that pairs or looks up: two namespaces may use the same addresses and
/// ports at the same time.
type Netns = u32;

/// An entry of the tuple index: (network namespace, slot, connection id).
type TupleRef = (Netns, usize, u64);

/// The live sockets with one 4-tuple: usually one; several when network namespaces
/// reuse the same addresses and ports (`more` does not allocate until then).
struct TupleEntries {
    first: TupleRef,
    more: Vec<TupleRef>,
}

impl TupleEntries {
    fn iter(&self) -> impl Iterator<Item = &TupleRef> {
        std::iter::once(&self.first).chain(self.more.iter())
    }

    /// The socket with this tuple in namespace `ns`.
    fn get(&self, ns: Netns) -> Option<(usize, u64)> {
        self.iter().find(|e| e.0 == ns).map(|&(_, i, id)| (i, id))
    }

    /// The one socket with this tuple, when there is exactly one (in any namespace).
    fn only(&self) -> Option<TupleRef> {
        self.more.is_empty().then_some(self.first)
    }
}

/// Tuple index operations over `FastMap<Tuple, TupleEntries>`.
trait TupleIndex {
    fn insert_ref(&mut self, key: Tuple, r: TupleRef);
    fn remove_ref(&mut self, key: &Tuple, r: TupleRef);
}

impl TupleIndex for FastMap<Tuple, TupleEntries> {
    fn insert_ref(&mut self, key: Tuple, r: TupleRef) {
        match self.get_mut(&key) {
            None => {
                self.insert(
                    key,
                    TupleEntries {
                        first: r,
                        more: Vec::new(),
                    },
                );
            }
            Some(e) => {
                // One socket per tuple and namespace: a newer one replaces the older.
                if e.first.0 == r.0 {
                    e.first = r;
                } else if let Some(m) = e.more.iter_mut().find(|m| m.0 == r.0) {
                    *m = r;
                } else {
                    e.more.push(r);
                }
            }
        }
    }

    fn remove_ref(&mut self, key: &Tuple, r: TupleRef) {
        let Some(e) = self.get_mut(key) else {
            return;
        };
        if e.first == r {
            match e.more.pop() {
                Some(m) => e.first = m,
                None => {
                    self.remove(key);
                }
            }
        } else {
            e.more.retain(|m| *m != r);
        }
    }
}

/// The front (slot, id) of a deadline queue when its deadline is before `now`, taken
/// off the queue. The queues (`expiry`, `awaiting`, `held`) are in deadline order.
fn pop_due(q: &mut VecDeque<(u64, usize, u64)>, now: u64) -> Option<(usize, u64)> {
    match q.front() {
        Some(&(deadline, i, id)) if deadline < now => {
            q.pop_front();
            Some((i, id))
        }
        _ => None,
    }
}

/// Entries a deadline queue keeps for nothing beyond which it is pruned: at most
/// `live` of its entries can still be valid (one per live slot).
const QUEUE_SLACK: usize = 1024;

/// Drops the entries of a deadline queue that no longer stand for a waiting slot
/// (`valid(slot, id)` false: emitted before its deadline, the common case — a held
/// connection goes out as soon as its peer's record does), once they outnumber the
/// live slots by `QUEUE_SLACK`. They would otherwise stay until their deadline: the
/// FIN_WAIT2 hold is 60 s: under a FIN storm (the bench's soak) the queue held
/// 200 000–240 000 entries, a minute of held connections, with 1 400–2 600 slots
/// live (6 MB, growing with the connection rate). Amortised O(1) per push: after a prune at
/// most `live` entries remain, and the next comes `QUEUE_SLACK` pushes later at
/// least. Order, hence deadline order, is kept.
fn prune_queue(
    q: &mut VecDeque<(u64, usize, u64)>,
    live: usize,
    valid: impl Fn(usize, u64) -> bool,
) {
    if q.len() <= live.saturating_mul(2).saturating_add(QUEUE_SLACK) {
        return;
    }
    q.retain(|&(_, j, jid)| valid(j, jid));
    // Give back what a burst made it grow to.
    if q.capacity() > 4 * q.len().max(QUEUE_SLACK) {
        q.shrink_to(2 * q.len().max(QUEUE_SLACK));
    }
}

/// The accept queue an event saw (`plus`: entries to add, 1 for the child being
/// queued at its birth).
fn queue_of(ev: &Event, plus: u32) -> Option<AcceptQueue> {
    ev.accept_queue.map(|(len, max)| AcceptQueue {
        len: len.saturating_add(plus),
        max,
    })
}

/// The fuller of two observations of one listener's accept queue.
fn fuller(a: Option<AcceptQueue>, b: Option<AcceptQueue>) -> Option<AcceptQueue> {
    match (a, b) {
        (Some(x), Some(y)) => Some(if y.len > x.len { y } else { x }),
        (x, y) => x.or(y),
    }
}

/// Addresses that never leave their network namespace (loopback): a socket on them
/// can only be paired with one in the same namespace.
fn ns_local(a: IpAddr) -> bool {
    norm(a).is_loopback()
}

const NIL: usize = usize::MAX;

fn norm(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(a, IpAddr::V4),
        a => a,
    }
}

fn event_tuple(ev: &Event) -> Option<Tuple> {
    let (la, lp) = ev.local?;
    let (ra, rp) = ev.remote?;
    Some((norm(la), lp, norm(ra), rp))
}

struct Slot {
    live: bool,
    conn: Connection,
    closed_at: Option<u64>,
    /// Network namespace of the socket (0 until an event names it).
    netns: Netns,
    /// Key under which this socket is in `by_tuple` (with `netns` at that time).
    tuple_key: Option<(Netns, Tuple)>,
    /// Namespace and port under which this listener is in `listeners`.
    listen_port: Option<(Netns, u16)>,
    /// Child socket whose request (SYN-ACK retransmits) is not taken yet: before
    /// 6.15 the child's LISTEN → SYN_RECV carries the listener's addresses, so the
    /// request is found once a later event gives the child's own tuple.
    request_open: bool,
    /// Inside the child's LISTEN → SYN_RECV, before `attach_child`.
    attaching: bool,
    /// The kernel named the listener this child was cloned from (socket storage):
    /// never moved to another one of an SO_REUSEPORT group.
    listener_exact: bool,
    /// Child: its listener (slot, id).
    listener: Option<(usize, u64)>,
    /// The peer socket on this host (slot, id).
    peer: Option<(usize, u64)>,
    /// What the peer showed when its record was emitted first.
    peer_view: Option<PeerView>,
    /// Closed, linger over, waiting for the peer (see `hold`).
    held: bool,
    /// Closed in the accept queue, linger over, waiting for its accept() (see
    /// `await_accept`).
    awaiting_accept: bool,
}

impl Slot {
    /// Still the held connection `id` (what a `held` queue entry stands for).
    fn held_as(&self, id: u64) -> bool {
        self.live && self.conn.id == id && self.held
    }

    /// Still the child `id` waiting for its accept() (an `awaiting` entry).
    fn awaits_accept_as(&self, id: u64) -> bool {
        self.live && self.conn.id == id && self.awaiting_accept
    }

    fn empty() -> Slot {
        Slot {
            live: false,
            conn: blank(),
            closed_at: None,
            netns: 0,
            tuple_key: None,
            listen_port: None,
            request_open: false,
            attaching: false,
            listener_exact: false,
            listener: None,
            peer: None,
            peer_view: None,
            held: false,
            awaiting_accept: false,
        }
    }
}

#[derive(Clone, Copy)]
struct Link {
    prev: usize,
    next: usize,
}

impl Link {
    const NONE: Link = Link {
        prev: NIL,
        next: NIL,
    };
}

fn blank() -> Connection {
    Connection::new(0, Role::Unknown, 0, Family::Unknown(0), 0)
}

/// SYN-ACK retransmits of one request sock, waiting for its child.
struct PendingReq {
    listener_slot: usize,
    listener_id: u64,
    req: u64,
    local: (IpAddr, u16),
    remote: (IpAddr, u16),
    ts: Vec<u64>,
    /// The listener's accept queue at the fullest of these retransmits.
    queue: Option<AcceptQueue>,
}

impl PendingReq {
    fn into_half_open(self) -> HalfOpenRequest {
        HalfOpenRequest {
            req: self.req,
            saddr: self.local.0,
            sport: self.local.1,
            daddr: self.remote.0,
            dport: self.remote.1,
            synack_retransmits: self.ts.len() as u32,
            synack_retransmit_ts_ns: self.ts,
        }
    }
}

/// The correlator. See the module documentation.
pub struct Correlator {
    cfg: Config,
    linger_ns: u64,
    /// The reorder buffer: events not yet applied, taken out by timestamp, equal
    /// timestamps in push order (see `reorder`).
    queue: reorder::Reorder,
    max_ts: u64,
    last_applied: u64,
    slots: Vec<Slot>,
    /// LRU list of the slots (head = most recently updated), apart from the slots so
    /// that moving one to the front touches a few bytes, not three records.
    lru: Vec<Link>,
    free: Vec<usize>,
    live: usize,
    head: usize,
    tail: usize,
    by_sk: FastMap<u64, usize>,
    by_tuple: FastMap<Tuple, TupleEntries>,
    listeners: FastMap<(Netns, u16), Vec<(usize, u64)>>,
    pending: FastMap<(Netns, Tuple), PendingReq>,
    /// Sockets open at start not seen by an event yet (see [`Correlator::seed`]).
    seeds: FastMap<(Netns, Tuple), Seed>,
    /// Namespaces and ports listened on at start, with the processes that listened
    /// there (their listeners have no record until an event of theirs).
    seed_listen: FastMap<(Netns, u16), Vec<u32>>,
    /// (deadline, slot, id) of closed connections, in close order.
    expiry: VecDeque<(u64, usize, u64)>,
    /// (deadline, slot, id) of held connections (see `hold`), in hold order.
    held: VecDeque<(u64, usize, u64)>,
    /// (deadline, slot, id) of closed children waiting for their accept(), by deadline.
    awaiting: VecDeque<(u64, usize, u64)>,
    hold_ns: u64,
    /// In `flush`: the end of input, every record is as complete as it will be.
    flushing: bool,
    finished: Vec<Connection>,
    next_id: u64,
    stats: Stats,
}

impl Default for Correlator {
    fn default() -> Correlator {
        Correlator::new(Config::default())
    }
}

impl Correlator {
    pub fn new(cfg: Config) -> Correlator {
        Correlator {
            cfg: Config {
                max_sockets: cfg.max_sockets.max(1),
                ..cfg
            },
            linger_ns: DEFAULT_CLOSE_LINGER_NS.max(cfg.reorder_window_ns),
            queue: reorder::Reorder::default(),
            max_ts: 0,
            last_applied: 0,
            slots: Vec::new(),
            lru: Vec::new(),
            free: Vec::new(),
            live: 0,
            head: NIL,
            tail: NIL,
            by_sk: fast_map(),
            by_tuple: fast_map(),
            listeners: fast_map(),
            pending: fast_map(),
            seeds: fast_map(),
            seed_listen: fast_map(),
            expiry: VecDeque::new(),
            held: VecDeque::new(),
            awaiting: VecDeque::new(),
            hold_ns: DEFAULT_FIN_WAIT2_HOLD_NS,
            flushing: false,
            finished: Vec::new(),
            next_id: 1,
            stats: Stats::default(),
        }
    }

    /// Sets how long a closed connection waits for late events (at least the reorder
    /// window).
    pub fn with_close_linger_ns(mut self, ns: u64) -> Correlator {
        self.linger_ns = ns.max(self.cfg.reorder_window_ns);
        self
    }

    /// Sets how long a FIN_WAIT2 → CLOSE connection may wait for its peer (from its
    /// CLOSE; 0: not at all, decide at the end of the linger).
    pub fn with_fin_wait2_hold_ns(mut self, ns: u64) -> Correlator {
        self.hold_ns = ns;
        self
    }

    pub fn config(&self) -> Config {
        self.cfg
    }

    /// Feeds one event. It is applied once the newest timestamp seen is
    /// `reorder_window_ns` past it (or at [`Correlator::flush`]).
    pub fn push(&mut self, ev: Event) {
        self.push_ref(&ev);
    }

    /// [`Correlator::push`] from a reference: the event is copied once, into the
    /// reorder buffer (or not at all when it is applied at once).
    pub fn push_ref(&mut self, ev: &Event) {
        self.stats.events += 1;
        self.max_ts = self.max_ts.max(ev.ts_ns);
        let window = self.cfg.reorder_window_ns;
        let ready = |ts: u64, max_ts: u64| ts.saturating_add(window) <= max_ts;
        if ready(ev.ts_ns, self.max_ts) && self.queue.front_ts().is_none_or(|f| f > ev.ts_ns) {
            // Later than the window and before everything buffered: it is next in
            // order. Apply it without buffering.
            self.apply(ev);
        } else {
            self.queue.push(ev);
        }
        self.catch_up();
    }

    /// Sockets that existed before the first event (the socket table at start): the
    /// first event of one of them fills its tuple, state, role and owner instead of
    /// leaving a nameless fragment. Memory: one entry per socket, dropped when used.
    pub fn seed(&mut self, seeds: impl IntoIterator<Item = Seed>) {
        for s in seeds {
            if s.state == TcpState::Listen {
                let pids = self.seed_listen.entry((s.netns, s.local.1)).or_default();
                if let Some((pid, _)) = s.owner
                    && !pids.contains(&pid)
                {
                    pids.push(pid);
                }
            }
            let key = (norm(s.local.0), s.local.1, norm(s.remote.0), s.remote.1);
            self.seeds.insert((s.netns, key), s);
        }
    }

    /// Sockets of the socket table in `state` that the trace's filter surely takes and
    /// that no event has touched since the start (so still in `state`, as far as the
    /// trace can tell: a lost event is reported), each with its role: server when
    /// something listened on its local port at start, else client.
    pub fn seeded_in(&self, state: TcpState) -> impl Iterator<Item = (&Seed, Role)> + '_ {
        self.seeds
            .values()
            .filter(move |s| s.selected && s.state == state)
            // Not one the trace follows: the table is read a little after the hooks
            // are attached, and may see a socket born in between.
            .filter(|s| {
                let key = (norm(s.local.0), s.local.1, norm(s.remote.0), s.remote.1);
                self.by_tuple
                    .get(&key)
                    .is_none_or(|e| e.get(s.netns).is_none())
            })
            .map(|s| {
                let role = if self.seed_listen.contains_key(&(s.netns, s.local.1)) {
                    Role::Server
                } else {
                    Role::Client
                };
                (s, role)
            })
    }

    /// Fills a socket first seen mid-life from its seed, if it has one.
    fn apply_seed(&mut self, i: usize, ev: &Event) {
        let Some(key) = event_tuple(ev) else {
            return;
        };
        // A listener's seed stays: the listeners of an SO_REUSEPORT group share its
        // tuple (nginx's master opens one per worker), and each of them is named from it
        // at its first event (the others' records had no owner). A socket born in the
        // trace never looks here.
        let seed = match self.seeds.get(&(ev.netns, key)) {
            Some(s) if s.state == TcpState::Listen => *s,
            Some(_) => match self.seeds.remove(&(ev.netns, key)) {
                Some(s) => s,
                None => return,
            },
            None => return,
        };
        let listening = self.seed_listen.contains_key(&(seed.netns, seed.local.1));
        let c = &mut self.slots[i].conn;
        c.seen_at_start = true;
        if c.role == Role::Unknown {
            c.role = match seed.state {
                TcpState::Listen => Role::Listener,
                _ if listening => Role::Server,
                _ => Role::Client,
            };
            if c.role == Role::Listener && c.listener.is_none() {
                c.listener = Some(ListenerInfo::default());
            }
        }
        if let Some((pid, comm)) = seed.owner
            && c.pid_source < PidSource::Snapshot
        {
            c.pid = Some(pid);
            c.comm = Some(comm);
            c.pid_source = PidSource::Snapshot;
        }
    }

    /// Time passes without events: `now_ns` is a CLOCK_MONOTONIC time (the clock of
    /// the events) such that every event stamped up to `now_ns − reorder window` has
    /// been pushed — a live source reads the clock, then drains its ring, then calls
    /// this. Buffered events that old are applied and closed connections whose wait
    /// ended are emitted, as a newer event would have done: on an idle host a finished
    /// connection comes out with the clock, not with the next event. Still pure: the
    /// time is an argument.
    pub fn advance(&mut self, now_ns: u64) {
        if now_ns <= self.max_ts {
            return;
        }
        self.max_ts = now_ns;
        self.catch_up();
    }

    /// Applies the buffered events the newest time seen (`max_ts`) is a reorder window
    /// past; then closed connections whose linger ended before that are complete.
    fn catch_up(&mut self) {
        let window = self.cfg.reorder_window_ns;
        if let Some(until) = self.max_ts.checked_sub(window) {
            self.apply_buffered(until);
        }
        self.expire(self.max_ts.saturating_sub(window));
    }

    /// Applies the buffered events stamped at or before `until`, in order. The buffer
    /// is moved out so that each event is applied in place, not copied out first.
    fn apply_buffered(&mut self, until: u64) {
        let mut queue = std::mem::take(&mut self.queue);
        queue.apply_until(until, |ev| self.apply(ev));
        self.queue = queue;
    }

    /// Moves the connections finished so far into `out` (in the order they finished).
    pub fn drain_finished(&mut self, out: &mut Vec<Connection>) {
        out.append(&mut self.finished);
    }

    /// The connections finished so far, as an iterator that takes them.
    pub fn finished(&mut self) -> std::vec::Drain<'_, Connection> {
        self.finished.drain(..)
    }

    /// End of input: applies everything buffered and emits every connection, those
    /// without a CLOSE marked `open: true`. The correlator is empty afterwards.
    pub fn flush(&mut self) -> Vec<Connection> {
        self.apply_buffered(u64::MAX);
        self.flushing = true;
        let mut live: Vec<(u64, usize)> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.live)
            .map(|(i, s)| (s.conn.id, i))
            .collect();
        live.sort_unstable();
        for (id, i) in live {
            // Finalizing a peer may already have emitted a held connection.
            if self.slots[i].live && self.slots[i].conn.id == id {
                self.finalize(i, false);
            }
        }
        self.flushing = false;
        self.expiry.clear();
        self.held.clear();
        self.awaiting.clear();
        self.pending.clear();
        std::mem::take(&mut self.finished)
    }

    /// The connections not closed yet (no CLOSE applied), as built so far: the
    /// derived fields (`outcome`, durations) are not filled until they finish; the
    /// state history is current up to the reorder window. Read-only; table order.
    pub fn open_connections(&self) -> impl Iterator<Item = &Connection> {
        self.slots
            .iter()
            .filter(|s| s.live && s.closed_at.is_none())
            .map(|s| &s.conn)
    }

    /// Open connections emitted early because of `max_sockets`.
    pub fn evicted(&self) -> u64 {
        self.stats.evicted
    }

    pub fn stats(&self) -> Stats {
        Stats {
            tracked_sockets: self.live,
            pending_requests: self.pending.len(),
            buffered_events: self.queue.len(),
            ..self.stats
        }
    }

    // ---- applying events ----

    fn apply(&mut self, ev: &Event) {
        self.stats.applied += 1;
        if ev.ts_ns < self.last_applied {
            self.stats.late_events += 1;
        } else {
            self.last_applied = ev.ts_ns;
        }
        self.expire(self.last_applied);
        match ev.kind {
            EventKind::Transition { old, new } => self.on_transition(ev, old, new),
            EventKind::SynAckRetransmit { req } => self.on_synack_retransmit(ev, req),
            EventKind::Retransmit { state } => self.on_retransmit(ev, state),
            EventKind::ResetSent { .. } => self.on_reset(ev, true),
            EventKind::ResetReceived => self.on_reset(ev, false),
            EventKind::ConnectReturn { fd, ret } => self.on_connect_return(ev, fd, ret),
            EventKind::AcceptReturn {
                listen_fd,
                ret,
                accept4,
            } => self.on_accept_return(ev, listen_fd, ret, accept4),
        }
    }

    fn expire(&mut self, now: u64) {
        while let Some((i, id)) = pop_due(&mut self.expiry, now) {
            let s = &self.slots[i];
            if s.live && s.conn.id == id && s.closed_at.is_some() && !s.held && !s.awaiting_accept {
                if let Some(until) = self.hold_until(i) {
                    self.hold(i, until);
                } else if let Some(until) = self.accept_hold_until(i) {
                    self.await_accept(i, until);
                } else {
                    self.finalize(i, false);
                }
            }
        }
        while let Some((i, id)) = pop_due(&mut self.awaiting, now) {
            if self.slots[i].awaits_accept_as(id) {
                self.finalize(i, false);
            }
        }
        while let Some((i, id)) = pop_due(&mut self.held, now) {
            if self.slots[i].held_as(id) {
                // A timewait socket in FIN_WAIT2 is gone by now: the peer's FIN can no
                // longer make it TIME_WAIT.
                self.finalize_with(i, false, true);
            }
        }
    }

    /// A closed connection whose FIN_WAIT2 → CLOSE needs its peer to tell TIME_WAIT
    /// from a handover in FIN_WAIT2: until when to wait, or None when the peer already
    /// tells (its FIN came first, its record is out) or is not on this host.
    fn hold_until(&self, i: usize) -> Option<u64> {
        let s = &self.slots[i];
        if self.hold_ns == 0 || s.peer_view.is_some() {
            return None;
        }
        let (TcpState::FinWait2, tc) = s.conn.timewait_close()? else {
            return None;
        };
        let (j, jid) = s.peer?;
        let p = &self.slots[j];
        if !p.live || p.conn.id != jid {
            return None;
        }
        match PeerView::of(&p.conn, false).fin_ts {
            Some(tf) if tf <= tc => None,
            _ => Some(tc.saturating_add(self.hold_ns)),
        }
    }

    /// A closed server child that no accept() has taken yet while its listener still
    /// listens: it is still in the accept queue (a reset or the peer's FIN does not
    /// take it out), and an application that accepts late gets it then. Until when to
    /// wait for that accept() (`explain`'s late accept()), or None.
    fn accept_hold_until(&self, i: usize) -> Option<u64> {
        let s = &self.slots[i];
        if s.conn.role != Role::Server || s.conn.accept.is_some() {
            return None;
        }
        // Only an established child is queued.
        if !s
            .conn
            .states
            .iter()
            .any(|st| st.state == TcpState::Established)
        {
            return None;
        }
        let (l, lid) = s.listener?;
        let ls = &self.slots[l];
        if !ls.live || ls.conn.id != lid || ls.closed_at.is_some() {
            return None;
        }
        Some(s.closed_at?.saturating_add(ACCEPT_HOLD_NS))
    }

    /// Keeps a closed child indexed by its address (the accept queue holds the socket,
    /// so the address is not reused) but not by its tuple (a new connection may reuse
    /// that), until its accept() returns, its listener closes, or `until`.
    fn await_accept(&mut self, i: usize, until: u64) {
        let id = self.slots[i].conn.id;
        if let Some((ns, k)) = self.slots[i].tuple_key.take() {
            self.by_tuple.remove_ref(&k, (ns, i, id));
        }
        self.slots[i].awaiting_accept = true;
        self.awaiting.push_back((until, i, id));
        let slots = &self.slots;
        prune_queue(&mut self.awaiting, self.live, |j, jid| {
            slots[j].awaits_accept_as(jid)
        });
    }

    /// A listener closed: the children still in its queue are freed with it, and no
    /// accept() can take them any more.
    fn release_awaiting_children(&mut self, l: usize) {
        let lid = self.slots[l].conn.id;
        let waiting: Vec<usize> = self
            .awaiting
            .iter()
            .filter(|&&(_, i, id)| {
                let s = &self.slots[i];
                s.awaits_accept_as(id) && s.listener == Some((l, lid))
            })
            .map(|&(_, i, _)| i)
            .collect();
        for i in waiting {
            self.finalize(i, false);
        }
    }

    /// Keeps a closed connection out of the socket indexes (its address may be
    /// reused) until its peer's record is emitted, `until`, or memory runs short.
    fn hold(&mut self, i: usize, until: u64) {
        let id = self.slots[i].conn.id;
        let sk = self.slots[i].conn.skaddr;
        if self.by_sk.get(&sk) == Some(&i) {
            self.by_sk.remove(&sk);
        }
        if let Some((ns, k)) = self.slots[i].tuple_key.take() {
            self.by_tuple.remove_ref(&k, (ns, i, id));
        }
        self.slots[i].held = true;
        self.held.push_back((until, i, id));
        let slots = &self.slots;
        prune_queue(&mut self.held, self.live, |j, jid| slots[j].held_as(jid));
    }

    fn on_transition(&mut self, ev: &Event, old: TcpState, new: TcpState) {
        use TcpState::*;
        if old == CloseWait
            && !self.seeds.is_empty()
            && let Some(k) = event_tuple(ev)
        {
            // Out of CLOSE_WAIT: the table's view of it is over (a socket born after
            // the start that the table, read a little later, saw in CLOSE_WAIT too).
            self.seeds.remove(&(ev.netns, k));
        }
        let start = matches!(
            (old, new),
            (Close, SynSent) | (Close, Listen) | (Listen, SynRecv)
        );
        let i = match self.by_sk.get(&ev.skaddr).copied() {
            Some(i) if start => {
                if self.slots[i].closed_at.is_none() {
                    self.stats.superseded += 1;
                }
                self.finalize(i, false);
                let role = self.role_for(old, new, ev);
                self.create(ev, role, false)
            }
            Some(i) => i,
            None => {
                let role = self.role_for(old, new, ev);
                self.create(ev, role, !start)
            }
        };
        self.touch(i, ev);
        {
            let c = &mut self.slots[i].conn;
            if c.states.is_empty() {
                // Most sockets go through 5–8 states: allocate once.
                c.states.reserve_exact(8);
                c.states.push(StateEntry {
                    state: old,
                    t_ns: ev.ts_ns,
                });
            }
            c.states.push(StateEntry {
                state: new,
                t_ns: ev.ts_ns,
            });
            if let Some((local, remote)) = ev.isn
                && new == Established
            {
                c.isn = Some(Isn { local, remote });
            }
            if c.role == Role::Unknown {
                if matches!(new, SynSent) {
                    c.role = Role::Client;
                } else if matches!(new, SynRecv) {
                    c.role = Role::Server;
                }
            }
        }
        self.attribute(i, ev, false);
        if (old, new) == (Listen, SynRecv) {
            self.slots[i].request_open = true;
            self.slots[i].attaching = true;
        }
        self.update_tuple(i, ev);
        if (old, new) == (Listen, SynRecv) {
            self.slots[i].attaching = false;
            self.attach_child(i, ev);
        }
        if new == Listen {
            self.index_listener(i);
        }
        if (old, new) == (SynRecv, Close) {
            self.release_discarded_child(i);
        }
        if matches!(new, Close | TimeWait) && self.slots[i].closed_at.is_none() {
            self.slots[i].closed_at = Some(ev.ts_ns);
            let id = self.slots[i].conn.id;
            self.expiry
                .push_back((ev.ts_ns.saturating_add(self.linger_ns), i, id));
            self.unindex_listener(i);
            if old == Listen && !self.awaiting.is_empty() {
                self.release_awaiting_children(i);
            }
        }
    }

    fn on_synack_retransmit(&mut self, ev: &Event, req: u64) {
        let i = match self.by_sk.get(&ev.skaddr).copied() {
            Some(i) => i,
            None => self.create(ev, Role::Listener, true),
        };
        self.touch(i, ev);
        self.attribute(i, ev, false);
        let lid = {
            let c = &mut self.slots[i].conn;
            if c.role == Role::Unknown {
                c.role = Role::Listener;
            }
            if c.role == Role::Listener && c.listener.is_none() {
                c.listener = Some(ListenerInfo::default());
            }
            if c.sport == 0
                && let Some((a, p)) = ev.local
            {
                c.saddr.get_or_insert(a);
                c.sport = p;
            }
            c.id
        };
        if self.slots[i].listen_port.is_none() && self.slots[i].closed_at.is_none() {
            self.index_listener(i);
        }
        let (Some(tuple), Some(local), Some(remote)) = (event_tuple(ev), ev.local, ev.remote)
        else {
            let c = &mut self.slots[i].conn;
            c.synack_retransmits += 1;
            c.synack_retransmit_ts_ns.push(ev.ts_ns);
            return;
        };
        let key = (self.slots[i].netns, tuple);
        if let Some(p) = self.pending.get_mut(&key) {
            if p.listener_id == lid && p.req == req {
                p.ts.push(ev.ts_ns);
                p.queue = fuller(p.queue, queue_of(ev, 0));
                return;
            }
            // Another request with the same tuple: the earlier one never completed.
            if let Some(old) = self.pending.remove(&key) {
                self.drop_request(old);
            }
        }
        if self.pending.len() >= self.cfg.max_sockets {
            self.stats.untracked_requests += 1;
            let c = &mut self.slots[i].conn;
            c.synack_retransmits += 1;
            c.synack_retransmit_ts_ns.push(ev.ts_ns);
            return;
        }
        let mut ts = Vec::with_capacity(4);
        ts.push(ev.ts_ns);
        self.pending.insert(
            key,
            PendingReq {
                listener_slot: i,
                listener_id: lid,
                req,
                local,
                remote,
                ts,
                queue: queue_of(ev, 0),
            },
        );
    }

    /// Records a request that will never become a child on its listener.
    fn drop_request(&mut self, p: PendingReq) {
        let l = &mut self.slots[p.listener_slot];
        if l.live
            && l.conn.id == p.listener_id
            && let Some(info) = l.conn.listener.as_mut()
        {
            info.half_open_requests.push(p.into_half_open());
        }
    }

    fn on_retransmit(&mut self, ev: &Event, state: TcpState) {
        let i = match self.by_sk.get(&ev.skaddr).copied() {
            Some(i) => i,
            None => {
                let role = if state == TcpState::SynSent {
                    Role::Client
                } else {
                    self.role_from_port(ev)
                };
                let i = self.create(ev, role, true);
                self.slots[i].conn.states.push(StateEntry {
                    state,
                    t_ns: ev.ts_ns,
                });
                i
            }
        };
        self.touch(i, ev);
        self.attribute(i, ev, false);
        self.update_tuple(i, ev);
        let c = &mut self.slots[i].conn;
        match state {
            TcpState::SynSent => {
                c.syn_retransmits += 1;
                c.syn_retransmit_ts_ns.push(ev.ts_ns);
            }
            s => {
                c.retransmits += 1;
                c.retransmit_ts_ns.push(ev.ts_ns);
                if matches!(
                    s,
                    TcpState::FinWait1 | TcpState::Closing | TcpState::LastAck
                ) {
                    c.fin_retransmits += 1;
                }
            }
        }
    }

    fn on_reset(&mut self, ev: &Event, sent: bool) {
        let i = if ev.skaddr != 0 {
            match self.by_sk.get(&ev.skaddr).copied() {
                Some(i) => i,
                None => {
                    let role = self.role_from_port(ev);
                    self.create(ev, role, true)
                }
            }
        } else {
            match event_tuple(ev).and_then(|k| self.tuple_lookup(&k, ev.netns)) {
                Some((i, id)) if self.slots[i].live && self.slots[i].conn.id == id => i,
                _ => {
                    self.stats.orphan_events += 1;
                    return;
                }
            }
        };
        self.touch(i, ev);
        if ev.skaddr != 0 {
            self.attribute(i, ev, false);
            self.update_tuple(i, ev);
        }
        let c = &mut self.slots[i].conn;
        if sent {
            c.resets_sent += 1;
            c.reset_sent_ts_ns.push(ev.ts_ns);
        } else {
            c.resets_received += 1;
            c.reset_received_ts_ns.push(ev.ts_ns);
        }
    }

    fn on_connect_return(&mut self, ev: &Event, fd: i32, ret: i64) {
        let Some(i) = self.by_sk.get(&ev.skaddr).copied() else {
            self.stats.orphan_events += 1;
            return;
        };
        // The same return twice: a book reported it and so did the syscall's exit,
        // which could not tell whether a flush on another CPU had read it.
        if self.slots[i]
            .conn
            .connect_calls
            .iter()
            .any(|r| r.t_ns == ev.ts_ns && r.ret == ret && r.fd == fd)
        {
            return;
        }
        self.touch(i, ev);
        self.attribute(i, ev, true);
        let c = &mut self.slots[i].conn;
        if c.role == Role::Unknown {
            c.role = Role::Client;
        }
        let r = SyscallReturn {
            ret,
            errno: Connection::errno_name(ret),
            t_ns: ev.ts_ns,
            fd,
            accept4: false,
        };
        c.connect_calls.push(r);
        c.connect.get_or_insert(r);
    }

    fn on_accept_return(&mut self, ev: &Event, listen_fd: i32, ret: i64, accept4: bool) {
        if ret < 0 {
            self.stats.failed_accepts += 1;
            return;
        }
        let Some(i) = self.by_sk.get(&ev.skaddr).copied() else {
            self.stats.orphan_events += 1;
            return;
        };
        // The socket address may have been reused: the tuple must agree when known.
        if let (Some(k), Some((_, own))) = (event_tuple(ev), self.slots[i].tuple_key)
            && k.1 != 0
            && k.3 != 0
            && !k.0.is_unspecified()
            && k != own
        {
            self.stats.orphan_events += 1;
            return;
        }
        let awaited = self.slots[i].awaiting_accept;
        self.touch(i, ev);
        self.attribute(i, ev, true);
        if !awaited {
            self.update_tuple(i, ev);
        }
        let first = {
            let c = &mut self.slots[i].conn;
            if c.role == Role::Unknown {
                c.role = Role::Server;
            }
            let first = c.accept.is_none();
            if first {
                c.accept = Some(SyscallReturn {
                    ret,
                    errno: Connection::errno_name(ret),
                    t_ns: ev.ts_ns,
                    fd: listen_fd,
                    accept4,
                });
            }
            first
        };
        if first {
            if let Some(pid) = ev
                .owner
                .map(|o| o.pid)
                .or(ev.task_ctx.then_some(ev.ctx_pid))
            {
                self.relink_to_acceptor(i, pid);
            }
            if let Some((l, lid)) = self.slots[i].listener
                && self.slots[l].live
                && self.slots[l].conn.id == lid
                && let Some(info) = self.slots[l].conn.listener.as_mut()
            {
                info.accepted += 1;
            }
        }
        if awaited {
            // The accept() it waited for: complete now.
            self.finalize(i, false);
        }
    }

    /// SO_REUSEPORT: several listening sockets share one address and port, each
    /// usually in its own process, and the kernel queues each child on one of them.
    /// Before accept() only the address and port tell, so the child may have been
    /// linked to the wrong member of the group; accept() by process `pid` shows the
    /// queue it was on when `pid` owns exactly one listener of the group.
    fn relink_to_acceptor(&mut self, i: usize, pid: u32) {
        let Some((l, lid)) = self.slots[i].listener else {
            return;
        };
        if self.slots[i].listener_exact {
            return;
        }
        if self.slots[l].conn.pid == Some(pid) {
            return;
        }
        let Some(key) = self.slots[l].listen_port else {
            return;
        };
        let addr = self.slots[l].conn.saddr.map(norm);
        let Some(list) = self.listeners.get(&key) else {
            return;
        };
        let mut own = list.iter().copied().filter(|&(m, mid)| {
            let s = &self.slots[m];
            s.live && s.conn.id == mid && s.conn.pid == Some(pid) && s.conn.saddr.map(norm) == addr
        });
        let (first, second) = (own.next(), own.next());
        let (Some(found), None) = (first, second) else {
            if first.is_none() && self.seed_listen.get(&key).is_some_and(|p| p.contains(&pid)) {
                // Accepted by a process that listened here before the start: the
                // child was queued on that listener, which has no record, not on the
                // one it was linked to (an SO_REUSEPORT group where a member started
                // after the trace; its children count stays its own).
                if self.slots[l].conn.id == lid
                    && let Some(info) = self.slots[l].conn.listener.as_mut()
                {
                    info.children = info.children.saturating_sub(1);
                }
                self.slots[i].listener = None;
                self.slots[i].conn.listener_id = None;
            }
            return;
        };
        if self.slots[l].conn.id == lid
            && let Some(info) = self.slots[l].conn.listener.as_mut()
        {
            info.children = info.children.saturating_sub(1);
        }
        self.slots[i].listener = None;
        self.link_listener(i, found);
    }

    // ---- helpers ----

    fn role_for(&self, old: TcpState, new: TcpState, ev: &Event) -> Role {
        use TcpState::*;
        if old == SynRecv || new == SynRecv {
            Role::Server
        } else if old == SynSent || new == SynSent {
            Role::Client
        } else if new == Listen || old == Listen {
            Role::Listener
        } else {
            self.role_from_port(ev)
        }
    }

    /// Server if a live listener owns the local port, else unknown.
    fn role_from_port(&self, ev: &Event) -> Role {
        match ev.local {
            Some((a, p))
                if p != 0
                    && (self.find_listener(ev.netns, a, p).is_some()
                        || self.seed_listen.contains_key(&(ev.netns, p))) =>
            {
                Role::Server
            }
            _ => Role::Unknown,
        }
    }

    /// The live listener in namespace `ns` that takes connections to `addr:port`: one
    /// bound to that address, else one bound to the wildcard address.
    fn find_listener(&self, ns: Netns, addr: IpAddr, port: u16) -> Option<(usize, u64)> {
        let list = self.listeners.get(&(ns, port))?;
        let addr = norm(addr);
        let mut wildcard = None;
        for &(l, lid) in list {
            let s = &self.slots[l];
            if !s.live || s.conn.id != lid || s.closed_at.is_some() {
                continue;
            }
            match s.conn.saddr.map(norm) {
                Some(a) if a == addr => return Some((l, lid)),
                Some(a) if !a.is_unspecified() => {}
                _ => wildcard = wildcard.or(Some((l, lid))),
            }
        }
        wildcard
    }

    fn index_listener(&mut self, i: usize) {
        let s = &mut self.slots[i];
        if s.listen_port.is_some() || s.conn.sport == 0 {
            return;
        }
        let key = (s.netns, s.conn.sport);
        s.listen_port = Some(key);
        let id = s.conn.id;
        self.listeners.entry(key).or_default().push((i, id));
    }

    fn unindex_listener(&mut self, i: usize) {
        let Some(key) = self.slots[i].listen_port.take() else {
            return;
        };
        let id = self.slots[i].conn.id;
        if let Some(v) = self.listeners.get_mut(&key) {
            v.retain(|&e| e != (i, id));
            if v.is_empty() {
                self.listeners.remove(&key);
            }
        }
    }

    /// A child socket appeared (LISTEN → SYN_RECV): find its listener, and its request
    /// when the child's tuple is already known (from 6.15 on; before, the transition
    /// carries the listener's addresses and `take_request` runs once a later event
    /// gives the child's own).
    fn attach_child(&mut self, i: usize, ev: &Event) {
        // Queued now: the queue holds what was there plus this child.
        let c = &mut self.slots[i].conn;
        c.accept_queue = fuller(c.accept_queue, queue_of(ev, 1));
        // The kernel side names the listener it cloned the child from (exact), or the
        // one it found by namespace and port.
        let named = (ev.listener != 0)
            .then(|| self.by_sk.get(&ev.listener).copied())
            .flatten()
            .filter(|&l| self.slots[l].live && self.slots[l].conn.role == Role::Listener)
            .map(|l| (l, self.slots[l].conn.id));
        if ev.listener_exact
            && let Some(l) = named
        {
            self.slots[i].listener_exact = true;
            self.take_request(i);
            self.link_listener(i, l);
            return;
        }
        let listener = self.take_request(i).or(named).or_else(|| {
            let port = self.slots[i].conn.sport;
            let addr = self.slots[i].conn.saddr?;
            self.find_listener(self.slots[i].netns, addr, port)
        });
        if let Some(l) = listener {
            self.link_listener(i, l);
        }
    }

    /// Moves the SYN-ACK retransmits of the child's request (same namespace, same
    /// tuple) onto the child; returns the request's listener if it is still live.
    fn take_request(&mut self, i: usize) -> Option<(usize, u64)> {
        if !self.slots[i].request_open {
            return None;
        }
        let tuple = self.conn_tuple(i)?;
        self.slots[i].request_open = false;
        let p = self.pending.remove(&(self.slots[i].netns, tuple))?;
        let l = &self.slots[p.listener_slot];
        let listener =
            (l.live && l.conn.id == p.listener_id).then_some((p.listener_slot, p.listener_id));
        let c = &mut self.slots[i].conn;
        c.accept_queue = fuller(c.accept_queue, p.queue);
        c.synack_retransmits += p.ts.len() as u32;
        if c.synack_retransmit_ts_ns.is_empty() {
            c.synack_retransmit_ts_ns = p.ts;
        } else {
            c.synack_retransmit_ts_ns.extend_from_slice(&p.ts);
            c.synack_retransmit_ts_ns.sort_unstable();
        }
        listener
    }

    /// Makes `l` the listener of child `i` (once): counts the child there and lends
    /// the child the listener's owner until a better source names one.
    fn link_listener(&mut self, i: usize, (l, lid): (usize, u64)) {
        if self.slots[i].listener.is_some() {
            return;
        }
        self.slots[i].listener = Some((l, lid));
        self.slots[i].conn.listener_id = Some(lid);
        let (lpid, lcomm) = {
            let lc = &mut self.slots[l].conn;
            if let Some(info) = lc.listener.as_mut() {
                info.children += 1;
            }
            (lc.pid, lc.comm)
        };
        let c = &mut self.slots[i].conn;
        if c.pid_source == PidSource::None && lpid.is_some() {
            c.pid = lpid;
            c.comm = lcomm;
            c.pid_source = PidSource::Listener;
        }
    }

    /// The socket's 4-tuple once both ends are known. A connected socket never has
    /// an unspecified local address: one seen here is the listener's, copied into a
    /// child before its own (kernels before 6.15).
    fn conn_tuple(&self, i: usize) -> Option<Tuple> {
        let c = &self.slots[i].conn;
        match (c.saddr, c.daddr) {
            (Some(s), Some(d))
                if c.sport != 0 && c.dport != 0 && !s.is_unspecified() && !d.is_unspecified() =>
            {
                Some((norm(s), c.sport, norm(d), c.dport))
            }
            _ => None,
        }
    }

    /// The live socket with tuple `k` in namespace `ns`; with the namespace unknown
    /// (or no socket there), the only socket with that tuple in any namespace.
    fn tuple_lookup(&self, k: &Tuple, ns: Netns) -> Option<(usize, u64)> {
        let e = self.by_tuple.get(k)?;
        e.get(ns).or_else(|| e.only().map(|(_, i, id)| (i, id)))
    }

    /// Learns the socket's 4-tuple from an event (ports may be 0 early on or at the
    /// CLOSE; a child's first transition may carry its listener's wildcard address
    /// and no remote end), indexes it and links the peer socket on this host.
    fn update_tuple(&mut self, i: usize, ev: &Event) {
        {
            // Indexed already, in the namespace it has now: the key was made from two
            // strong ends, which nothing replaces (only weak ones are), so the tuple
            // is the same and there is nothing to learn but a family. Most events.
            let s = &mut self.slots[i];
            if let Some((ns, _)) = s.tuple_key
                && ns == s.netns
            {
                if matches!(s.conn.family, Family::Unknown(_)) {
                    s.conn.family = ev.family;
                }
                return;
            }
        }
        // An end is weak while its port is 0 or its address unspecified: a later event
        // with a real one replaces it.
        let weak = |a: Option<IpAddr>, p: u16| a.is_none_or(|a| a.is_unspecified()) || p == 0;
        {
            let c = &mut self.slots[i].conn;
            if let Some((a, p)) = ev.local
                && weak(c.saddr, c.sport)
                && (c.saddr.is_none() || !weak(Some(a), p) || (c.sport == 0 && p != 0))
            {
                c.saddr = Some(a);
                c.sport = p;
            }
            if let Some((a, p)) = ev.remote
                && weak(c.daddr, c.dport)
                && (c.daddr.is_none() || !weak(Some(a), p) || (c.dport == 0 && p != 0))
            {
                c.daddr = Some(a);
                c.dport = p;
            }
            if matches!(c.family, Family::Unknown(_)) {
                c.family = ev.family;
            }
            if c.role == Role::Listener {
                return;
            }
        }
        let Some(tuple) = self.conn_tuple(i) else {
            return;
        };
        let ns = self.slots[i].netns;
        let key = (ns, tuple);
        if self.slots[i].tuple_key == Some(key) {
            return;
        }
        let id = self.slots[i].conn.id;
        if let Some((ons, old)) = self.slots[i].tuple_key.replace(key) {
            self.by_tuple.remove_ref(&old, (ons, i, id));
        }
        self.by_tuple.insert_ref(tuple, (ns, i, id));
        // During the child's LISTEN → SYN_RECV `attach_child` links, with what the
        // kernel named; afterwards a tuple completed late does it here.
        if self.slots[i].attaching {
            self.link_peer(i, ns, tuple);
            return;
        }
        if self.slots[i].request_open
            && let Some(l) = self.take_request(i)
        {
            self.link_listener(i, l);
        }
        if self.slots[i].conn.role == Role::Server && self.slots[i].listener.is_none() {
            // The child's own local address (after a pre-6.15 LISTEN → SYN_RECV that
            // carried the wildcard): its listener can be found now.
            let (a, p) = (tuple.0, tuple.1);
            if let Some(l) = self.find_listener(ns, a, p) {
                self.link_listener(i, l);
            }
        }
        self.link_peer(i, ns, tuple);
    }

    /// Links socket `i` with the socket of the mirrored tuple: in the same namespace;
    /// in another namespace (veth, a container) only when that socket is the only one
    /// with the mirrored tuple and the addresses can leave a namespace (not loopback).
    fn link_peer(&mut self, i: usize, ns: Netns, tuple: Tuple) {
        let mirror = (tuple.2, tuple.3, tuple.0, tuple.1);
        let Some(e) = self.by_tuple.get(&mirror) else {
            return;
        };
        let (j, jid) = match e.get(ns) {
            Some(found) => found,
            None => match e.only() {
                Some((_, j, jid)) if !ns_local(tuple.0) && !ns_local(tuple.2) => (j, jid),
                _ => return,
            },
        };
        if j == i || !self.slots[j].live || self.slots[j].conn.id != jid {
            return;
        }
        let id = self.slots[i].conn.id;
        let (a, b) = (&self.slots[i].conn, &self.slots[j].conn);
        let same_side = a.role == b.role && a.role != Role::Unknown;
        if a.peer.is_some() || b.peer.is_some() || same_side {
            return;
        }
        self.slots[i].conn.peer = Some(jid);
        self.slots[j].conn.peer = Some(id);
        self.slots[i].peer = Some((j, jid));
        self.slots[j].peer = Some((i, id));
    }

    /// A child closed straight from SYN_RECV, never established: when two CPUs take
    /// segments of one request at once (the third ACK and the first data), each
    /// clones a child and the kernel discards the one that loses the race. If the
    /// loser was linked to the client, the client's peer is the other child with the
    /// same tuple (the newer one in the tuple index); the loser keeps no peer.
    fn release_discarded_child(&mut self, i: usize) {
        let established = self.slots[i]
            .conn
            .states
            .iter()
            .any(|s| s.state == TcpState::Established);
        if established || self.slots[i].conn.role != Role::Server {
            return;
        }
        let Some((j, jid)) = self.slots[i].peer else {
            return;
        };
        let Some(tuple) = self.conn_tuple(i) else {
            return;
        };
        let ns = self.slots[i].netns;
        let other = self
            .by_tuple
            .get(&tuple)
            .and_then(|e| e.get(ns))
            .filter(|&(k, kid)| k != i && self.slots[k].live && self.slots[k].conn.id == kid);
        let Some((k, _)) = other else {
            return;
        };
        if self.slots[k].peer.is_some() || !self.slots[j].live || self.slots[j].conn.id != jid {
            return;
        }
        self.slots[i].peer = None;
        self.slots[i].conn.peer = None;
        self.slots[j].peer = None;
        self.slots[j].conn.peer = None;
        self.link_peer(k, ns, tuple);
    }

    /// Learns pid/comm: the caller of connect()/accept() beats the owner the kernel
    /// side learned, which beats the task context, which beats the listener's owner.
    /// The context pid of a softirq is never used.
    fn attribute(&mut self, i: usize, ev: &Event, syscall: bool) {
        let (src, pid, comm) = match (ev.owner, syscall) {
            (Some(o), true) => (PidSource::Syscall, o.pid, Some(o.comm)),
            (None, true) if ev.task_ctx => (PidSource::Syscall, ev.ctx_pid, None),
            (Some(o), false) if !o.from_listener => (PidSource::Owner, o.pid, Some(o.comm)),
            (_, false) if ev.task_ctx => (PidSource::Context, ev.ctx_pid, None),
            (Some(o), false) => (PidSource::Listener, o.pid, Some(o.comm)),
            _ => return,
        };
        let c = &mut self.slots[i].conn;
        if src <= c.pid_source {
            return;
        }
        let comm = comm.filter(|c| !c.is_empty());
        if comm.is_some() || c.pid != Some(pid) {
            c.comm = comm;
        }
        c.pid = Some(pid);
        c.pid_source = src;
        if ev.cgroup_id != 0 && src != PidSource::Listener {
            c.cgroup_id = Some(ev.cgroup_id);
            c.ns_pid = (ev.ns_pid != 0).then_some(ev.ns_pid);
        }
    }

    fn create(&mut self, ev: &Event, role: Role, open_before_start: bool) -> usize {
        if self.live >= self.cfg.max_sockets && self.tail != NIL {
            let t = self.tail;
            let closed = self.slots[t].closed_at.is_some();
            if !closed {
                self.stats.evicted += 1;
            }
            self.finalize(t, !closed);
        }
        let id = self.next_id;
        self.next_id += 1;
        self.stats.connections += 1;
        let mut conn = Connection::new(id, role, ev.skaddr, ev.family, ev.ts_ns);
        conn.open_before_start = open_before_start;
        conn.netns = (ev.netns != 0).then_some(ev.netns as u64);
        let i = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot::empty());
                self.lru.push(Link::NONE);
                self.slots.len() - 1
            }
        };
        let s = &mut self.slots[i];
        s.live = true;
        s.conn = conn;
        s.closed_at = None;
        s.netns = ev.netns;
        s.tuple_key = None;
        s.listen_port = None;
        s.request_open = false;
        s.attaching = false;
        s.listener_exact = false;
        s.listener = None;
        s.peer = None;
        s.peer_view = None;
        s.held = false;
        s.awaiting_accept = false;
        self.by_sk.insert(ev.skaddr, i);
        self.live += 1;
        self.link_front(i);
        if open_before_start && !self.seeds.is_empty() {
            self.apply_seed(i, ev);
        }
        i
    }

    fn touch(&mut self, i: usize, ev: &Event) {
        let ts = ev.ts_ns;
        let s = &mut self.slots[i];
        // A socket never changes namespace: the first one named sticks.
        if s.netns == 0 && ev.netns != 0 {
            s.netns = ev.netns;
            s.conn.netns = Some(ev.netns as u64);
        }
        let c = &mut s.conn;
        c.last_ts_ns = c.last_ts_ns.max(ts);
        c.first_ts_ns = c.first_ts_ns.min(ts);
        if self.head != i {
            self.unlink(i);
            self.link_front(i);
        }
    }

    fn link_front(&mut self, i: usize) {
        self.lru[i] = Link {
            prev: NIL,
            next: self.head,
        };
        if self.head != NIL {
            self.lru[self.head].prev = i;
        }
        self.head = i;
        if self.tail == NIL {
            self.tail = i;
        }
    }

    fn unlink(&mut self, i: usize) {
        let Link { prev: p, next: n } = self.lru[i];
        if p != NIL {
            self.lru[p].next = n;
        } else {
            self.head = n;
        }
        if n != NIL {
            self.lru[n].prev = p;
        } else {
            self.tail = p;
        }
        self.lru[i] = Link::NONE;
    }

    /// Emits slot `i` and frees it.
    fn finalize(&mut self, i: usize, evicted: bool) {
        self.finalize_with(i, evicted, self.flushing);
    }

    /// The client's tuple mirrored: the key of the server side's request.
    fn request_for(&self, i: usize) -> Option<HalfOpenRequest> {
        let s = &self.slots[i];
        let c = &s.conn;
        if c.role != Role::Client || c.peer.is_some() {
            return None;
        }
        let (ls, lp, rs, rp) = self.conn_tuple(i)?;
        let from = c.states.first().map_or(c.first_ts_ns, |e| e.t_ns);
        let to = s.closed_at.unwrap_or(c.last_ts_ns).max(c.last_ts_ns);
        let within = |ts: &[u64]| ts.first().is_some_and(|&t| t >= from && t <= to);
        let server_side = (rs, rp, ls, lp);
        // The server is in the client's namespace, or (not over loopback) in another
        // one: then only a request nobody else could have made counts.
        let cross_ns = !ns_local(ls) && !ns_local(rs);
        let pending = self.pending.get(&(s.netns, server_side)).or_else(|| {
            if !cross_ns {
                return None;
            }
            let mut found = self.pending.iter().filter(|(k, _)| k.1 == server_side);
            match (found.next(), found.next()) {
                (Some((_, p)), None) => Some(p),
                _ => None,
            }
        });
        if let Some(p) = pending
            && within(&p.ts)
        {
            return Some(HalfOpenRequest {
                req: p.req,
                saddr: p.local.0,
                sport: p.local.1,
                daddr: p.remote.0,
                dport: p.remote.1,
                synack_retransmits: p.ts.len() as u32,
                synack_retransmit_ts_ns: p.ts.clone(),
            });
        }
        // Dropped already (another request on the tuple): on the live listener.
        let (l, _) = self.find_listener(s.netns, rs, rp).or_else(|| {
            if !cross_ns {
                return None;
            }
            let mut found = self
                .listeners
                .keys()
                .filter(|k| k.1 == rp)
                .filter_map(|&(ns, _)| self.find_listener(ns, rs, rp));
            match (found.next(), found.next()) {
                (Some(l), None) => Some(l),
                _ => None,
            }
        })?;
        let info = self.slots[l].conn.listener.as_ref()?;
        info.half_open_requests
            .iter()
            .rev()
            .find(|r| {
                (norm(r.saddr), r.sport, norm(r.daddr), r.dport) == (rs, rp, ls, lp)
                    && within(&r.synack_retransmit_ts_ns)
            })
            .cloned()
    }

    /// Emits slot `i` and frees it; `settled`: a live peer's record is as complete as
    /// it will get for this connection's TIME_WAIT question.
    fn finalize_with(&mut self, i: usize, evicted: bool, settled: bool) {
        let peer_request = self.request_for(i);
        let peer_link = self.slots[i].peer.take();
        let mut peer_view = self.slots[i].peer_view.take();
        if peer_view.is_none()
            && let Some((j, jid)) = peer_link
            && self.slots[j].live
            && self.slots[j].conn.id == jid
        {
            peer_view = Some(PeerView::of(&self.slots[j].conn, settled));
        }
        self.slots[i].held = false;
        self.slots[i].awaiting_accept = false;
        self.unlink(i);
        self.unindex_listener(i);
        let s = &mut self.slots[i];
        s.live = false;
        self.live -= 1;
        let id = s.conn.id;
        let sk = s.conn.skaddr;
        let closed = s.closed_at.take().is_some();
        s.listener = None;
        if let Some((ns, k)) = s.tuple_key.take() {
            self.by_tuple.remove_ref(&k, (ns, i, id));
        }
        if self.by_sk.get(&sk) == Some(&i) {
            self.by_sk.remove(&sk);
        }
        // Moved straight into `finished` and completed there: a record is large, each
        // move a copy.
        self.finished
            .push(std::mem::replace(&mut self.slots[i].conn, blank()));
        let conn = self.finished.last_mut().expect("just pushed");
        if conn.role == Role::Listener {
            let mut reqs: Vec<HalfOpenRequest> = self
                .pending
                .extract_if(|_, p| p.listener_id == id)
                .map(|(_, p)| p.into_half_open())
                .collect();
            let info = conn.listener.get_or_insert_with(ListenerInfo::default);
            info.half_open_requests.append(&mut reqs);
            info.half_open_requests.sort_by(|a, b| {
                (a.synack_retransmit_ts_ns.first(), a.req, a.dport).cmp(&(
                    b.synack_retransmit_ts_ns.first(),
                    b.req,
                    b.dport,
                ))
            });
            for r in &info.half_open_requests {
                conn.synack_retransmits += r.synack_retransmits;
                conn.synack_retransmit_ts_ns
                    .extend_from_slice(&r.synack_retransmit_ts_ns);
            }
            conn.synack_retransmit_ts_ns.sort_unstable();
        }
        conn.finish(closed, evicted);
        conn.resolve_time_wait(peer_view);
        conn.peer_request = peer_request;
        // Tell the peer what this end showed; a peer held for it is complete now.
        let waiter =
            peer_link.filter(|&(j, jid)| self.slots[j].live && self.slots[j].conn.id == jid);
        if let Some((j, _)) = waiter {
            self.slots[j].peer_view = Some(PeerView::of(conn, true));
        }
        self.free.push(i);
        self.stats.emitted += 1;
        if let Some((j, _)) = waiter
            && self.slots[j].held
        {
            self.finalize(j, false);
        }
    }
}
