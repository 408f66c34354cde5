//! The userspace pipeline after the source: decode → correlate → render, shared by
//! the live tracer and `replay`, plus the raw `record` writer.
use std::io::{self, Write};

use tcp_trace_common::RawEvent;

use crate::cli::{OutputArgs, SelectArgs, View};
use crate::clock::{WallClock, monotonic_ns};
use crate::container::{ContainerInfo, PodsLogDir};
use crate::correlate::{Config, Connection, Conversation, ConversationJoiner, Correlator, Outcome};
use crate::decode::{self, Event};
use crate::record;
use crate::render::{
    self,
    events::TimeColumn,
    ladder::LadderOptions,
    summary::{Summary, Unplaced},
};

/// Counters a run reports at the end.
#[derive(Clone, Copy, Debug)]
pub struct RunStats {
    pub events: u64,
    pub decode_errors: u64,
    /// Events the kernel could not queue (ring buffer full).
    pub lost: u64,
    /// Events dropped by the in-kernel filters, on purpose.
    pub filtered: u64,
    /// accept()/connect() returns whose socket the kernel side could not find.
    pub fd_walk_failed: u64,
    /// Events the kernel side queued (live runs): every one must reach `events`.
    pub submitted: u64,
    /// Hook runs the kernel skipped (the program already running on that CPU):
    /// at most one event each, never queued.
    pub skipped: u64,
    /// Runs of the state-transition program the kernel skipped that its `_nested`
    /// twin reported instead.
    pub caught_nested: u64,
    /// Runs of the state-transition program the kernel skipped, caught or not
    /// (where skips are counted, what `caught_nested` has beyond it was reported
    /// twice).
    pub state_skips: u64,
    /// Sockets the kernel side reported event by event, its book map full.
    pub books_full: u64,
    /// Transitions whose states, read through the tracefs layout, were no TCP
    /// states (the layout was read wrong; `-v` shows the kernel side's log).
    pub layout_suspect: u64,
    /// connect()/accept() calls not followed (the kernel side's call map was full):
    /// their returns are missing.
    pub calls_full: u64,
    /// Events the correlator could not place (filled at the end of a run).
    pub unplaced: Unplaced,
    /// The kernel counts the hook runs it skips (false before 5.12: `skipped` is
    /// then unknown, not zero). True for replays, which report what was recorded.
    pub skips_counted: bool,
}

impl Default for RunStats {
    fn default() -> RunStats {
        RunStats {
            events: 0,
            decode_errors: 0,
            lost: 0,
            filtered: 0,
            fd_walk_failed: 0,
            submitted: 0,
            skipped: 0,
            caught_nested: 0,
            state_skips: 0,
            books_full: 0,
            layout_suspect: 0,
            calls_full: 0,
            unplaced: Unplaced::default(),
            skips_counted: true,
        }
    }
}

pub fn summary_line(s: &RunStats, evicted: u64) -> String {
    let skipped = if s.skipped > 0 {
        format!(
            ", {} hook runs skipped by the kernel (nested on one CPU: up to that many events missing)",
            s.skipped
        )
    } else {
        String::new()
    };
    let u = s.unplaced;
    let unplaced = if u.not_placed() > 0 {
        format!(
            ", {} unplaced ({} matched no connection, {} cut short by socket reuse, {} SYN-ACK retransmits untracked)",
            u.not_placed(),
            u.orphan_events,
            u.superseded,
            u.untracked_requests
        )
    } else {
        String::new()
    };
    let late = if u.late_events > 0 {
        format!(", {}", crate::render::summary::late_text(u.late_events))
    } else {
        String::new()
    };
    // The kernel side's rare paths, named only when they happened.
    let kernel: String = [
        (s.books_full, "sockets reported event by event (book map full)"),
        (
            s.layout_suspect,
            "transitions with states that are no TCP states (tracepoint layout read wrong; -v shows the kernel's log)",
        ),
        (
            s.calls_full,
            "connect/accept calls not followed (call map full: their returns are missing)",
        ),
    ]
    .iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, what)| format!(", {n} {what}"))
    .collect();
    format!(
        "tcp-trace: {} events, {} lost, {} filtered in the kernel, {} undecodable, {} evicted connections, {} accept/connect returns without socket{skipped}{unplaced}{late}{kernel}",
        s.events, s.lost, s.filtered, s.decode_errors, evicted, s.fd_walk_failed
    )
}

/// Says what the run's first undecodable record was (later ones are only counted, in
/// the summary's "undecodable" and the stats' `decode_errors`): a count alone would
/// leave a bug in the kernel side unnamed.
/// `what` is only called for that first one.
pub fn first_undecodable(stats: &RunStats, what: impl FnOnce() -> String) {
    if stats.decode_errors == 0 {
        eprintln!(
            "tcp-trace: warning: undecodable record ({}); skipped and counted, as any further ones",
            what()
        );
    }
}

/// Where events go.
pub enum Output<W: Write> {
    Render(Box<Renderer<W>>),
    Record(record::Writer<W>),
}

impl<W: Write> Output<W> {
    pub fn raw(&mut self, raw: &RawEvent, stats: &mut RunStats) -> io::Result<()> {
        match self {
            Output::Record(w) => {
                stats.events += 1;
                w.event(raw)
            }
            Output::Render(r) => match decode::decode_raw(raw) {
                Ok(ev) => {
                    stats.events += 1;
                    r.event(&ev)
                }
                Err(e) => {
                    first_undecodable(stats, || {
                        format!(
                            "{e}: ts_ns {}, skaddr {:#x}, states {}->{}, flags {:#x}, ret {}, fd {}, aux {}",
                            raw.ts_ns,
                            raw.skaddr,
                            raw.oldstate,
                            raw.newstate,
                            raw.flags,
                            raw.ret,
                            raw.fd,
                            raw.aux
                        )
                    });
                    stats.decode_errors += 1;
                    Ok(())
                }
            },
        }
    }

    pub fn lost(&mut self, count: u64, total: u64) -> io::Result<()> {
        eprintln!("tcp-trace: lost {count} events (ring buffer full)");
        match self {
            Output::Record(w) => w.lost(count),
            Output::Render(r) => r.lost(count, total),
        }
    }

    /// `count` more hook runs skipped by the kernel (`total` since start): events
    /// that were never queued, reported like losses.
    pub fn skipped(&mut self, count: u64, total: u64) -> io::Result<()> {
        eprintln!(
            "tcp-trace: the kernel skipped {count} hook runs (the same program already running on that CPU): up to {count} events missing"
        );
        match self {
            // A recording marks them as lost events at this point.
            Output::Record(w) => w.lost(count),
            Output::Render(r) => r.skipped(count, total),
        }
    }

    /// Sockets open before the start (see `Correlator::seed`), from the socket table
    /// read by `at_ns` (CLOCK_MONOTONIC).
    pub fn seed(&mut self, seeds: Vec<crate::correlate::Seed>, at_ns: u64) {
        if let Output::Render(r) = self
            && let Some(c) = r.correlator.as_mut()
        {
            c.seed(seeds);
            if let Some(e) = r.explain.as_mut() {
                e.seeded_at_ns = Some(at_ns);
            }
        }
    }

    /// `explain` counts TIME_WAIT sockets: it wants the ones there at start too.
    pub fn wants_time_wait_table(&self) -> bool {
        matches!(self, Output::Render(r) if r.explain.is_some())
    }

    /// Client TIME_WAIT sockets of the socket table read by `at_ns`: (ms left on their
    /// timer, remote address, remote port, local port); see
    /// `Aggregator::time_wait_at_start`.
    pub fn time_wait_at_start(
        &mut self,
        at_ns: u64,
        sockets: Vec<(u32, std::net::IpAddr, u16, u16)>,
    ) {
        if let Output::Render(r) = self
            && let Some(e) = r.explain.as_mut()
        {
            e.agg.time_wait_at_start(at_ns, sockets);
        }
    }

    /// The clock reached `now_ns` (CLOCK_MONOTONIC, read before the ring was last
    /// drained): connections complete by then are rendered without waiting for
    /// another event.
    pub fn advance(&mut self, now_ns: u64) -> io::Result<()> {
        match self {
            Output::Record(_) => Ok(()),
            Output::Render(r) => r.advance(now_ns),
        }
    }

    pub fn flush(&mut self) -> io::Result<()> {
        match self {
            Output::Record(w) => w.flush(),
            Output::Render(r) => r.out.flush(),
        }
    }

    pub fn finish(&mut self, stats: &RunStats) -> io::Result<()> {
        match self {
            Output::Record(w) => {
                w.flush()?;
                eprintln!("{}", summary_line(stats, 0));
                Ok(())
            }
            Output::Render(r) => r.finish(stats),
        }
    }
}

fn unplaced_of(cs: &crate::correlate::Stats) -> Unplaced {
    Unplaced {
        orphan_events: cs.orphan_events,
        late_events: cs.late_events,
        superseded: cs.superseded,
        untracked_requests: cs.untracked_requests,
    }
}

/// The userspace selections (-L, -D, --netns, --failed, --min-ms; DESIGN: after
/// correlation, before rendering). `either`: the -P ports, checked again here only
/// when -L/-D widened the kernel's either-end filter.
#[derive(Clone, Debug, Default)]
pub struct Select {
    either: Vec<u16>,
    local: Vec<u16>,
    remote: Vec<u16>,
    netns: Option<u32>,
    failed: bool,
    min_ns: Option<u64>,
    /// `--pod`: a pod name or UID (lower case).
    pod: Option<String>,
    /// `--namespace`.
    namespace: Option<String>,
    /// `--pods-log-dir`.
    pods_log_dir: std::path::PathBuf,
}

impl Select {
    /// `either`: the ports of -P (empty for `replay`, which has no kernel filter).
    pub fn new(args: &SelectArgs, either: &[u16]) -> Select {
        Select {
            either: either.to_vec(),
            local: args.localport.clone(),
            remote: args.remoteport.clone(),
            netns: args.netns,
            failed: args.failed,
            min_ns: args.min_ms.map(|ms| (ms * 1e6).round() as u64),
            pod: args.pod.as_ref().map(|p| p.to_ascii_lowercase()),
            namespace: args.namespace.clone(),
            pods_log_dir: args.pods_log_dir.clone(),
        }
    }

    /// Whether it selects by Kubernetes pod (`--pod`, `--namespace`).
    pub fn by_pod(&self) -> bool {
        self.pod.is_some() || self.namespace.is_some()
    }

    /// `--pod`/`--namespace` against the owner's resolved cgroup (`None`: unresolved,
    /// which no pod selection lets through). `--pod` matches the pod's name or UID.
    pub fn pod_ok(&self, info: Option<&ContainerInfo>) -> bool {
        if !self.by_pod() {
            return true;
        }
        let Some(i) = info else {
            return false;
        };
        if let Some(p) = &self.pod
            && i.pod_name.as_deref() != Some(p.as_str())
            && i.pod_uid.as_deref() != Some(p.as_str())
        {
            return false;
        }
        if let Some(ns) = &self.namespace
            && i.pod_namespace.as_deref() != Some(ns.as_str())
        {
            return false;
        }
        true
    }

    /// Whether it selects on what only a whole connection tells (outcome, latency).
    pub fn on_connections_only(&self) -> bool {
        self.failed || self.min_ns.is_some()
    }

    fn ports_ok(&self, local: u16, remote: u16) -> bool {
        let widened = !self.local.is_empty() || !self.remote.is_empty();
        (!widened
            || self.either.is_empty()
            || self.either.contains(&local)
            || self.either.contains(&remote))
            && (self.local.is_empty() || self.local.contains(&local))
            && (self.remote.is_empty() || self.remote.contains(&remote))
    }

    /// A connection, once correlated.
    pub fn connection(&self, c: &Connection) -> bool {
        if !self.ports_ok(c.sport, c.dport) {
            return false;
        }
        if let Some(ns) = self.netns
            && c.netns != Some(u64::from(ns))
        {
            return false;
        }
        if self.failed
            && !matches!(
                c.outcome,
                Outcome::Refused | Outcome::TimedOut | Outcome::Reset
            )
        {
            return false;
        }
        if let Some(min) = self.min_ns {
            let slowest = c.handshake_ns.into_iter().chain(c.connect_latency_ns).max();
            if slowest.is_none_or(|ns| ns < min) {
                return false;
            }
        }
        true
    }

    /// A conversation is drawn when either end is selected.
    pub fn conversation(&self, conv: &Conversation) -> bool {
        conv.sides().any(|c| self.connection(c))
    }

    /// One event of `--view events` (ports and namespace; an event without a
    /// 4-tuple passes the port test; with `--netns`, an event without a namespace
    /// — a recording made before it was recorded — does not pass).
    pub fn event(&self, ev: &Event) -> bool {
        if let (Some((_, lp)), Some((_, rp))) = (ev.local, ev.remote)
            && !self.ports_ok(lp, rp)
        {
            return false;
        }
        match self.netns {
            Some(ns) => ev.netns == ns,
            None => true,
        }
    }
}

/// Most conversations drawn in one `--svg` picture.
const SVG_MAX_CONVERSATIONS: usize = 200;

/// Conversations kept for `--svg`, written at the end.
struct SvgOut {
    path: std::path::PathBuf,
    joiner: ConversationJoiner,
    convs: Vec<Conversation>,
    dropped: u64,
}

impl SvgOut {
    fn push(&mut self, conv: Conversation) {
        if self.convs.len() < SVG_MAX_CONVERSATIONS {
            self.convs.push(conv);
        } else {
            self.dropped += 1;
        }
    }
}

/// Decoded events → text or JSON.
pub struct Renderer<W: Write> {
    out: W,
    view: View,
    /// `--json`.
    json: bool,
    json_events: bool,
    json_conns: bool,
    time: TimeColumn,
    wall: Option<WallClock>,
    /// Every JSON line's `"time"`.
    clock: WallClock,
    /// The latest event time seen: the `"time"` of replayed loss/summary lines.
    latest_ns: u64,
    live: bool,
    max_sockets: usize,
    select: Select,
    colour: bool,
    svg: Option<SvgOut>,
    correlator: Option<Correlator>,
    joiner: ConversationJoiner,
    summary: Summary,
    finished: Vec<Connection>,
    header_done: bool,
    t0_ns: Option<u64>,
    containers: Containers,
    explain: Option<Explainer>,
    /// `--metrics`: updated per finished connection and per loss report.
    metrics: Option<crate::metrics::Metrics>,
}

/// `explain` mode: diagnoses instead of the view.
struct Explainer {
    cfg: crate::explain::Config,
    agg: crate::explain::Aggregator,
    range: Option<crate::explain::PortRange>,
    json: bool,
    /// The latest time known (event or clock), for the aggregates.
    now_ns: u64,
    /// When the socket table was read (its CLOSE_WAIT sockets count from then).
    seeded_at_ns: Option<u64>,
    last_report_ns: u64,
}

/// How often the live aggregates (CLOSE_WAIT leaks, TIME_WAIT) are looked at.
const EXPLAIN_REPORT_NS: u64 = 1_000_000_000;

/// cgroup id → container (and Kubernetes pod), resolved from the cgroup2 tree (live
/// runs only: a recording may come from another host).
struct Containers {
    live: bool,
    /// Created at the first lookup, so that nothing is printed before the tracer
    /// has loaded (a failed load says one line only).
    resolver: Option<Option<crate::container::CgroupResolver>>,
    /// Pod UID → namespace and name (`--pods-log-dir`).
    pods: PodsLogDir,
    /// Only cgroups of a container or pod are kept (`None` for the others).
    cache: std::collections::HashMap<u64, Option<ContainerInfo>>,
}

impl Containers {
    fn new(live: bool) -> Containers {
        Containers {
            live,
            resolver: None,
            pods: PodsLogDir::new(crate::cli::DEFAULT_PODS_LOG_DIR),
            cache: std::collections::HashMap::new(),
        }
    }

    /// `pid`: the owner, whose /proc/PID/cgroup names a cgroup created after the last
    /// scan of the tree (a container that has just started) without waiting for a rescan.
    fn lookup(&mut self, cgroup_id: u64, pid: Option<u32>) -> Option<&ContainerInfo> {
        if !self.live || cgroup_id == 0 {
            return None;
        }
        let r = self
            .resolver
            .get_or_insert_with(|| match crate::container::CgroupResolver::new() {
                Ok(r) => Some(r),
                Err(e) => {
                    eprintln!("tcp-trace: note: {e}");
                    None
                }
            })
            .as_mut()?;
        if self.cache.len() > 65536 {
            self.cache.clear();
        }
        let entry = match self.cache.entry(cgroup_id) {
            std::collections::hash_map::Entry::Occupied(e) => {
                let e = e.into_mut();
                // A pod whose log directory had not been seen yet: asked again (the
                // directory is reread at most every 200 ms).
                if let Some(info) = e.as_mut()
                    && info.pod_uid.is_some()
                    && info.pod_name.is_none()
                {
                    self.pods.fill(info);
                }
                e
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                // An id not found yet (a cgroup created after the last scan) is not
                // remembered: the resolver rescans, at most every 200 ms. Meanwhile the
                // owner's /proc/PID/cgroup names it, checked against the id (inode).
                let mut info = match r.resolve(cgroup_id) {
                    Some(info) => info,
                    None => {
                        let (path, id) = crate::container::cgroup2_of_pid(r.mount_point(), pid?)?;
                        if id != cgroup_id {
                            return None;
                        }
                        crate::container::parse_cgroup_path(&path)
                    }
                };
                self.pods.fill(&mut info);
                let keep = info.container_id.is_some() || info.pod_uid.is_some();
                v.insert(keep.then_some(info))
            }
        };
        entry.as_ref()
    }
}

/// The JSON pod fields of an owned (namespace, name, uid).
fn pod_fields(p: &Option<[Option<String>; 3]>) -> render::json::PodFields<'_> {
    match p {
        Some([ns, name, uid]) => render::json::PodFields {
            namespace: ns.as_deref(),
            name: name.as_deref(),
            uid: uid.as_deref(),
        },
        None => render::json::PodFields::default(),
    }
}

/// Whether a conversation is selected: either end passes the selections, its pod
/// included.
fn conversation_selected(
    select: &Select,
    containers: &mut Containers,
    conv: &Conversation,
) -> bool {
    if !select.by_pod() {
        return select.conversation(conv);
    }
    conv.sides().any(|c| {
        select.connection(c) && select.pod_ok(c.cgroup_id.and_then(|g| containers.lookup(g, c.pid)))
    })
}

impl<W: Write> Renderer<W> {
    /// The view prints each event as it happens (`--view events`): the kernel side
    /// must then write one record per event.
    pub fn event_stream(&self) -> bool {
        self.view == View::Events
    }
}

impl<W: Write> Renderer<W> {
    /// `t0_ns`: start of the relative time column (None = first event). `live`: the
    /// events come from this host now, so cgroup ids can be resolved to containers.
    pub fn new(
        out: W,
        args: &OutputArgs,
        wall: WallClock,
        t0_ns: Option<u64>,
        live: bool,
    ) -> Renderer<W> {
        let view = args.view.unwrap_or(View::Ladder);
        let (json_events, json_conns) = match (args.json, args.view) {
            (false, _) => (false, false),
            // JSON schema 2: connections and summary unless asked for events.
            (true, Some(View::All)) => (true, true),
            (true, Some(View::Events)) => (true, false),
            (true, Some(View::None)) => (false, false),
            (true, _) => (false, true),
        };
        // `--view none` still correlates: the summary at exit counts connections.
        let need_conns = if args.json {
            json_conns || view == View::None
        } else {
            view != View::Events
        };
        let time = if args.timestamp {
            TimeColumn::Wall(wall)
        } else {
            TimeColumn::Relative {
                t0_ns: t0_ns.unwrap_or(0),
            }
        };
        Renderer {
            out,
            view,
            json: args.json,
            json_events: args.json && json_events,
            json_conns: args.json && json_conns,
            time,
            wall: args.timestamp.then_some(wall),
            clock: wall,
            latest_ns: 0,
            live,
            max_sockets: args.max_sockets as usize,
            select: Select::default(),
            colour: false,
            svg: None,
            correlator: need_conns.then(|| {
                Correlator::new(Config {
                    max_sockets: args.max_sockets as usize,
                    ..Config::default()
                })
            }),
            joiner: ConversationJoiner::default(),
            summary: Summary::default(),
            finished: Vec::new(),
            header_done: false,
            t0_ns,
            containers: Containers::new(live),
            explain: None,
            metrics: None,
        }
    }

    /// Feeds `metrics` with every finished connection and loss report (the
    /// connections are correlated whatever the view).
    pub fn with_metrics(mut self, metrics: crate::metrics::Metrics) -> Renderer<W> {
        if self.correlator.is_none() {
            self.correlator = Some(Correlator::new(Config {
                max_sockets: self.max_sockets,
                ..Config::default()
            }));
        }
        self.metrics = Some(metrics);
        self
    }

    /// Diagnoses (`tcp-trace explain`, `replay --explain`) instead of the view:
    /// one line per slow or failed connection, and the aggregates over open and
    /// TIME_WAIT sockets. `range`: the local port range and `tcp_tw_reuse`.
    pub fn with_explain(
        mut self,
        cfg: crate::explain::Config,
        range: Option<crate::explain::PortRange>,
    ) -> Renderer<W> {
        let json = self.json();
        self.json_events = false;
        self.json_conns = false;
        self.view = View::Conns;
        if self.correlator.is_none() {
            self.correlator = Some(Correlator::new(Config::default()));
        }
        self.explain = Some(Explainer {
            cfg,
            agg: crate::explain::Aggregator::new(cfg),
            range,
            json,
            now_ns: 0,
            seeded_at_ns: None,
            last_report_ns: 0,
        });
        self
    }

    fn write_diagnosis(&mut self, d: &crate::explain::Diagnosis) -> io::Result<()> {
        let json = self.explain.as_ref().is_some_and(|e| e.json);
        if json {
            let t = if d.start_ns != 0 {
                self.clock.epoch_ns(d.start_ns)
            } else {
                self.now_epoch_ns()
            };
            render::explain::json(&mut self.out, d, Some(t))
        } else {
            render::explain::line(&mut self.out, d, self.t0_ns.unwrap_or(0))
        }
    }

    /// The aggregates at `now_ns` (only what changed unless `all`).
    fn explain_aggregates(&mut self, now_ns: u64, all: bool) -> io::Result<()> {
        let (Some(e), Some(c)) = (self.explain.as_mut(), self.correlator.as_ref()) else {
            return Ok(());
        };
        e.now_ns = e.now_ns.max(now_ns);
        e.last_report_ns = now_ns;
        // Sockets already in CLOSE_WAIT when the socket table was read, untouched
        // since: a leak that began before the trace (what an SRE starts it for).
        let at_start = e.seeded_at_ns.into_iter().flat_map(|since_ns| {
            c.seeded_in(crate::decode::TcpState::CloseWait)
                .map(move |(s, role)| crate::explain::OpenAtStart {
                    pid: s.owner.map(|o| o.0),
                    comm: s.owner.map(|o| o.1.to_string()),
                    role,
                    local: s.local,
                    remote: s.remote,
                    since_ns,
                })
        });
        let mut ds = e
            .agg
            .close_wait_leaks(c.open_connections(), at_start, now_ns, all);
        ds.extend(e.agg.time_wait_pressure(e.range, now_ns, all));
        for d in &ds {
            self.write_diagnosis(d)?;
        }
        Ok(())
    }

    /// The userspace selections. `--failed`/`--min-ms` judge whole connections: the
    /// command line refuses them with the views that print events.
    pub fn with_select(mut self, select: Select) -> Self {
        self.containers.pods = PodsLogDir::new(&select.pods_log_dir);
        self.select = select;
        self
    }

    /// Colour on the text views (ladder, events).
    pub fn with_colour(mut self, colour: bool) -> Self {
        self.colour = colour;
        self
    }

    /// Also draw the conversations into an SVG file at the end.
    pub fn with_svg(mut self, path: Option<std::path::PathBuf>) -> Self {
        if let Some(path) = path {
            let max_sockets = self.max_sockets;
            self.correlator.get_or_insert_with(|| {
                Correlator::new(Config {
                    max_sockets,
                    ..Config::default()
                })
            });
            self.svg = Some(SvgOut {
                path,
                joiner: ConversationJoiner::default(),
                convs: Vec::new(),
                dropped: 0,
            });
        }
        self
    }

    fn json(&self) -> bool {
        self.json || self.explain.as_ref().is_some_and(|e| e.json)
    }

    /// The wall-clock time of a line that is not about one event: now when live,
    /// else the latest event's.
    fn now_epoch_ns(&self) -> i128 {
        let mono = if self.live {
            monotonic_ns()
        } else {
            self.latest_ns
        };
        self.clock.epoch_ns(mono)
    }

    fn ladder_options(&self) -> LadderOptions {
        LadderOptions {
            colour: self.colour,
            ..LadderOptions::default()
        }
    }

    pub fn event(&mut self, ev: &Event) -> io::Result<()> {
        let t0 = *self.t0_ns.get_or_insert(ev.ts_ns);
        self.latest_ns = self.latest_ns.max(ev.ts_ns);
        if let TimeColumn::Relative { t0_ns } = &mut self.time {
            *t0_ns = t0;
        }
        if let Some(e) = self.explain.as_mut() {
            e.now_ns = e.now_ns.max(ev.ts_ns);
        }
        if self.json_events {
            if self.select.event(ev) {
                let info = self.containers.lookup(ev.cgroup_id, ev.pid());
                if self.select.pod_ok(info) {
                    let ctr = info.and_then(|i| Some((i.container_id.as_deref()?, i.runtime?)));
                    let pod = render::json::PodFields::of(info);
                    let local = self.wall.is_some();
                    render::json::event(&mut self.out, ev, &self.clock, local, ctr, pod)?;
                }
            }
        } else if !self.json()
            && self.view == View::Events
            && self.select.event(ev)
            && (!self.select.by_pod()
                || self
                    .select
                    .pod_ok(self.containers.lookup(ev.cgroup_id, ev.pid())))
        {
            if !self.header_done {
                render::events::header(&mut self.out, &self.time)?;
                self.header_done = true;
            }
            render::events::line_styled(&mut self.out, ev, &self.time, self.colour)?;
        }
        if let Some(c) = self.correlator.as_mut() {
            c.push_ref(ev);
            c.drain_finished(&mut self.finished);
            self.emit_finished()?;
        }
        Ok(())
    }

    pub fn advance(&mut self, now_ns: u64) -> io::Result<()> {
        if let Some(c) = self.correlator.as_mut() {
            c.advance(now_ns);
            c.drain_finished(&mut self.finished);
            if let Some(m) = self.metrics.as_mut() {
                m.unplaced(unplaced_of(&c.stats()));
            }
            self.emit_finished()?;
        }
        if let Some(e) = self.explain.as_ref()
            && now_ns >= e.last_report_ns + EXPLAIN_REPORT_NS
        {
            self.explain_aggregates(now_ns, false)?;
        }
        Ok(())
    }

    fn emit_finished(&mut self) -> io::Result<()> {
        if self.finished.is_empty() {
            return Ok(());
        }
        // Taken for the loop and put back empty: its buffer serves the next batch.
        let mut finished = std::mem::take(&mut self.finished);
        for c in finished.drain(..) {
            self.connection(c)?;
        }
        self.finished = finished;
        Ok(())
    }

    fn connection(&mut self, mut c: Connection) -> io::Result<()> {
        let info = c.cgroup_id.and_then(|g| self.containers.lookup(g, c.pid));
        if let Some(i) = info
            && let (Some(id), Some(rt)) = (&i.container_id, i.runtime)
        {
            c.container_id = Some(id.clone());
            c.container_runtime = Some(rt.to_string());
        }
        let keep = self.select.connection(&c) && self.select.pod_ok(info);
        // Owned: the lookup borrows the cache, which the rest needs again.
        let pod = info.filter(|i| i.pod_uid.is_some()).map(|i| {
            [
                i.pod_namespace.clone(),
                i.pod_name.clone(),
                i.pod_uid.clone(),
            ]
        });
        if let Some(m) = self.metrics.as_mut() {
            let p = pod_fields(&pod);
            m.connection_in_pod(&c, p.namespace, p.name.or(p.uid));
        }
        if keep {
            self.summary.add(&c);
        }
        if let Some(e) = self.explain.as_mut() {
            e.agg.push(&c);
            if keep && let Some(d) = crate::explain::diagnose(&c, &e.cfg) {
                self.write_diagnosis(&d)?;
            }
            return Ok(());
        }
        // The picture joins the two ends like the ladder and keeps a conversation
        // when either end is selected.
        if let Some(svg) = self.svg.as_mut()
            && let Some(conv) = svg.joiner.push(c.clone())
            && conversation_selected(&self.select, &mut self.containers, &conv)
        {
            svg.push(conv);
        }
        let t0 = self.t0_ns.unwrap_or(0);
        if self.json_conns {
            if !keep {
                return Ok(());
            }
            return render::json::connection_in_pod(
                &mut self.out,
                &c,
                Some(&self.clock),
                pod_fields(&pod),
            );
        }
        if self.json() {
            return Ok(());
        }
        match self.view {
            View::Events | View::None | View::All => Ok(()),
            View::Conns => {
                if !keep {
                    return Ok(());
                }
                if !self.header_done {
                    render::conns::header(&mut self.out)?;
                    self.header_done = true;
                }
                render::conns::line(&mut self.out, &c, t0)
            }
            View::Ladder => {
                if let Some(conv) = self.joiner.push(c)
                    && conversation_selected(&self.select, &mut self.containers, &conv)
                {
                    let opts = self.ladder_options();
                    render::ladder::render(&mut self.out, &conv, &opts)?;
                }
                Ok(())
            }
        }
    }

    pub fn lost(&mut self, count: u64, total: u64) -> io::Result<()> {
        if let Some(m) = &self.metrics {
            m.lost(count);
        }
        if self.json() {
            let now = self.now_epoch_ns();
            render::json::lost(&mut self.out, now, count, total)?;
        }
        Ok(())
    }

    pub fn skipped(&mut self, count: u64, total: u64) -> io::Result<()> {
        if let Some(m) = &self.metrics {
            m.skipped(count);
        }
        if self.json() {
            let now = self.now_epoch_ns();
            render::json::skipped(&mut self.out, now, count, total)?;
        }
        Ok(())
    }

    /// Writes the `--svg` picture (the conversations still waiting for their other
    /// end included).
    fn write_svg(&mut self) -> io::Result<()> {
        let Some(mut svg) = self.svg.take() else {
            return Ok(());
        };
        for conv in svg.joiner.flush() {
            if conversation_selected(&self.select, &mut self.containers, &conv) {
                svg.push(conv);
            }
        }
        let text = render::svg::render(&svg.convs, svg.dropped);
        std::fs::write(&svg.path, text).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot write {}: {e}", svg.path.display()),
            )
        })?;
        eprintln!(
            "tcp-trace: wrote {} conversation(s) to {}{}",
            svg.convs.len(),
            svg.path.display(),
            if svg.dropped > 0 {
                format!(" ({} more not drawn)", svg.dropped)
            } else {
                String::new()
            }
        );
        Ok(())
    }

    pub fn finish(&mut self, stats: &RunStats) -> io::Result<()> {
        let mut evicted = 0;
        let mut stats = *stats;
        if let Some(now) = self.explain.as_ref().map(|e| e.now_ns) {
            // What is still open (CLOSE_WAIT leaks) before the flush closes the books;
            // what the last periodic report said already is not repeated.
            self.explain_aggregates(now, false)?;
        }
        if let Some(mut c) = self.correlator.take() {
            let rest = c.flush();
            evicted = c.evicted();
            stats.unplaced = unplaced_of(&c.stats());
            if let Some(m) = self.metrics.as_mut() {
                m.unplaced(stats.unplaced);
            }
            self.summary.set_unplaced(stats.unplaced);
            for conn in rest {
                self.connection(conn)?;
            }
            if self.view == View::Ladder && !self.json() {
                let opts = self.ladder_options();
                for conv in self.joiner.flush() {
                    if conversation_selected(&self.select, &mut self.containers, &conv) {
                        render::ladder::render(&mut self.out, &conv, &opts)?;
                    }
                }
            }
            self.write_svg()?;
            self.summary.set_lost_events(stats.lost);
            self.summary.set_skipped_runs(stats.skipped);
            self.summary.set_evicted(evicted);
            if self.json_conns || (self.json && self.view == View::None) {
                let line = serde_json::to_vec(&self.summary)?;
                let line = render::json::with_time(&line, self.now_epoch_ns());
                self.out.write_all(&line)?;
                self.out.write_all(b"\n")?;
            } else if !self.json() {
                self.out.flush()?;
                // The summary is a report for the person at the terminal.
                let mut err = io::stderr().lock();
                self.summary.write_text(&mut err)?;
            }
        }
        if self.json() {
            let time = render::json::rfc3339(self.now_epoch_ns());
            writeln!(
                self.out,
                "{{\"type\":\"stats\",\"time\":\"{time}\",\"schema\":{},\"events\":{},\"submitted\":{},\"lost\":{},\"filtered\":{},\"decode_errors\":{},\"evicted\":{evicted},\"fd_walk_failed\":{},\"skipped\":{},\"skips_counted\":{},\"caught_nested\":{},\"state_skips\":{},\"books_full\":{},\"layout_suspect\":{},\"calls_full\":{},\"orphan_events\":{},\"late_events\":{},\"superseded\":{},\"untracked_requests\":{}}}",
                render::json::SCHEMA,
                stats.events,
                stats.submitted,
                stats.lost,
                stats.filtered,
                stats.decode_errors,
                stats.fd_walk_failed,
                stats.skipped,
                stats.skips_counted,
                stats.caught_nested,
                stats.state_skips,
                stats.books_full,
                stats.layout_suspect,
                stats.calls_full,
                stats.unplaced.orphan_events,
                stats.unplaced.late_events,
                stats.unplaced.superseded,
                stats.unplaced.untracked_requests
            )?;
        }
        self.out.flush()?;
        eprintln!("{}", summary_line(&stats, evicted));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::correlate::testutil::{CLIENT, Ev, MS, US, design_sequence, run};
    use crate::decode::TcpState::*;

    fn select(args: &[&str], either: &[u16]) -> Select {
        use clap::Parser;
        let cli = crate::cli::Cli::try_parse_from(
            std::iter::once("tcp-trace").chain(args.iter().copied()),
        )
        .unwrap();
        Select::new(&cli.trace.select, either)
    }

    /// Late events were placed (out of order): they are not counted among the unplaced.
    #[test]
    fn summary_line_names_late_events_apart_from_unplaced_ones() {
        let mut s = RunStats {
            events: 14,
            ..RunStats::default()
        };
        s.unplaced.late_events = 2;
        let line = summary_line(&s, 0);
        assert!(!line.contains("unplaced"), "{line}");
        assert!(
            line.ends_with(
                "without socket, 2 applied out of order (came later than the reorder window)"
            ),
            "{line}"
        );
        s.unplaced.orphan_events = 3;
        let line = summary_line(&s, 0);
        assert!(
            line.contains(
                ", 3 unplaced (3 matched no connection, 0 cut short by socket reuse, 0 SYN-ACK retransmits untracked), 2 applied out of order"
            ),
            "{line}"
        );
    }

    #[test]
    fn select_ports_netns_failed_latency() {
        let conns = run(&design_sequence());
        let client = conns.iter().find(|c| c.skaddr == CLIENT).unwrap();
        let (lp, rp) = (client.sport, client.dport);
        assert!(select(&[], &[]).connection(client));
        assert!(select(&["-D", &rp.to_string()], &[]).connection(client));
        assert!(!select(&["-L", &rp.to_string()], &[]).connection(client));
        assert!(select(&["-L", &lp.to_string()], &[]).connection(client));
        // -P together with -L/-D: the kernel let through a superset; -P rechecked.
        assert!(!select(&["-D", &rp.to_string()], &[1]).connection(client));
        assert!(select(&["-D", &rp.to_string()], &[rp]).connection(client));
        assert!(!select(&["--failed"], &[]).connection(client));
        let hs = client
            .handshake_ns
            .unwrap()
            .max(client.connect_latency_ns.unwrap());
        let at = format!("{}", hs as f64 / 1e6);
        let above = format!("{}", (hs + 1000) as f64 / 1e6);
        assert!(select(&["--min-ms", &at], &[]).connection(client));
        assert!(!select(&["--min-ms", &above], &[]).connection(client));
        // Namespaces.
        let ev: Vec<_> = [
            Ev::tr(0, 1, Close, SynSent)
                .tuple("127.0.0.1:0", "127.0.0.1:9")
                .netns(4026531840)
                .owner(7, "cl")
                .task()
                .ev(),
            Ev::rst_recv(MS, 1)
                .tuple("127.0.0.1:40000", "127.0.0.1:9")
                .netns(4026531840)
                .ev(),
            Ev::tr(MS + US, 1, SynSent, Close)
                .tuple("127.0.0.1:40000", "127.0.0.1:9")
                .netns(4026531840)
                .ev(),
        ]
        .into();
        let refused = run(&ev);
        let c = &refused[0];
        assert_eq!(c.outcome, Outcome::Refused);
        assert!(select(&["--netns", "4026531840", "--failed"], &[]).connection(c));
        assert!(!select(&["--netns", "4026531841"], &[]).connection(c));
        assert!(!select(&["--netns", "4026531840"], &[]).connection(client));
    }

    #[test]
    fn select_pod_and_namespace() {
        use clap::Parser;
        const UID: &str = "5e9b7c1d-3f2a-4b8e-9c0d-1a2b3c4d5e6f";
        let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let mut info =
            crate::container::parse_cgroup_path(&format!("/kubepods/besteffort/pod{UID}/{id}"));
        let uid_only = info.clone();
        info.pod_namespace = Some("shop".into());
        info.pod_name = Some("web-0".into());
        let host = crate::container::parse_cgroup_path("/system.slice/sshd.service");
        let none: &[&str] = &[];
        assert!(select(none, &[]).pod_ok(None));
        assert!(select(none, &[]).pod_ok(Some(&host)));
        let by_name = select(&["--pod", "web-0"], &[]);
        assert!(by_name.pod_ok(Some(&info)));
        assert!(!by_name.pod_ok(Some(&uid_only)));
        assert!(!by_name.pod_ok(Some(&host)));
        assert!(!by_name.pod_ok(None));
        let upper = UID.to_uppercase();
        let by_uid = select(&["--pod", upper.as_str()], &[]);
        assert!(by_uid.pod_ok(Some(&info)));
        assert!(by_uid.pod_ok(Some(&uid_only)));
        let ns = select(&["--namespace", "shop"], &[]);
        assert!(ns.pod_ok(Some(&info)));
        assert!(!ns.pod_ok(Some(&uid_only)));
        assert!(!select(&["--namespace", "shop", "--pod", "web-1"], &[]).pod_ok(Some(&info)));
        // Bad values: clap's usage error (exit code 2).
        for bad in [
            &["--pod", "Web_0"][..],
            &["--pod", ""],
            &["--pod=-web"],
            &["--namespace", "Shop"],
            &["--namespace", "a.b"],
            &["--namespace", &"n".repeat(64)],
        ] {
            let e = crate::cli::Cli::try_parse_from(
                std::iter::once("tcp-trace").chain(bad.iter().copied()),
            )
            .unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad:?}");
            assert!(
                e.to_string().contains("Kubernetes namespace")
                    || e.to_string().contains("pod name"),
                "{e}"
            );
        }
        assert!(
            crate::cli::Cli::try_parse_from([
                "tcp-trace",
                "--pod",
                "web-0.v1",
                "--pods-log-dir",
                "/tmp"
            ])
            .is_ok()
        );
    }
}
