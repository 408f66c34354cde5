//! Running the tracer: live (`tcp-trace`, `tcp-trace record`) and from a file
//! (`tcp-trace replay`).
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Write};
use std::time::Duration;

use tcp_trace_common::{Filter, MAX_CGROUPS};

use crate::container::{CgroupResolver, cgroup_id_of_path};
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::{ExplainArgs, FilterArgs, RecordArgs, ReplayArgs, TraceArgs};
use crate::clock::{WallClock, monotonic_ns};
use crate::decode::{BookRead, ring_record, unfold_book};
use crate::loader::{self, Options};
use crate::pipeline::{Output, Renderer, RunStats, Select};
use crate::record;
use crate::source::{POLL_INTERVAL, Source};

/// A broken pipe (`| head`) ends the run quietly.
fn is_epipe(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::BrokenPipe
}

/// Adds the cgroup ids of `--cgroup` and `--container` to the in-kernel filter.
pub fn resolve_cgroup_filters(args: &FilterArgs, filter: &mut Filter) -> anyhow::Result<()> {
    if args.cgroup.is_empty() && args.container.is_empty() {
        return Ok(());
    }
    let mut resolver = CgroupResolver::new().map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut ids: Vec<u64> = Vec::new();
    for p in &args.cgroup {
        let full = if p.is_absolute() {
            p.clone()
        } else {
            resolver.mount_point().join(p)
        };
        let id = cgroup_id_of_path(&full)
            .map_err(|e| anyhow::anyhow!("--cgroup {}: {e}", full.display()))?;
        ids.push(id);
    }
    for prefix in &args.container {
        if prefix.len() < 3
            || !prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            anyhow::bail!("--container {prefix:?}: give at least 3 characters of the container id");
        }
        let found = resolver.lookup_container(prefix);
        if found.is_empty() {
            anyhow::bail!(
                "--container {prefix}: no running container's cgroup matches this id prefix"
            );
        }
        ids.extend(found.into_iter().map(|(id, _)| id));
    }
    ids.sort_unstable();
    ids.dedup();
    if ids.len() > MAX_CGROUPS {
        anyhow::bail!(
            "--cgroup/--container select {} cgroups; at most {MAX_CGROUPS} are supported",
            ids.len()
        );
    }
    filter.ncgroups = ids.len() as u32;
    filter.cgroups[..ids.len()].copy_from_slice(&ids);
    Ok(())
}

/// `tcp-trace [ARGS]`.
pub async fn run(args: &TraceArgs, mut filter: Filter) -> anyhow::Result<u8> {
    resolve_cgroup_filters(&args.filter, &mut filter)?;
    let t0 = monotonic_ns();
    let wall = WallClock::now();
    // Bound before the hooks load, so that a taken port fails fast (exit code 1).
    let metrics_listener = match args.metrics {
        Some(addr) => Some(crate::metrics::http::bind(addr).await?),
        None => None,
    };
    let stdout = BufWriter::with_capacity(64 * 1024, io::stdout().lock());
    let colour = args.style.colour(
        io::IsTerminal::is_terminal(&io::stdout()),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let mut renderer = Renderer::new(stdout, &args.output, wall, Some(t0), true)
        .with_select(Select::new(&args.select, &args.filter.port))
        .with_colour(colour)
        .with_svg(args.style.svg.clone());
    if let Some(listener) = metrics_listener {
        let m = crate::metrics::Metrics::new(crate::metrics::ExtraLabels::from_cli(
            &args.metrics_labels,
        ));
        if let Ok(a) = listener.local_addr() {
            eprintln!("tcp-trace: metrics at http://{a}/metrics");
        }
        crate::metrics::http::spawn(listener, m.registry());
        renderer = renderer.with_metrics(m);
    }
    let out = Output::Render(Box::new(renderer));
    live(filter, &args.filter, args.duration, args.count, t0, out).await
}

/// The local port range and `tcp_tw_reuse` of this host (for TIME_WAIT pressure).
pub fn port_range() -> Option<crate::explain::PortRange> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let reuse = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_tw_reuse").ok()?;
    crate::explain::PortRange::parse(&range, &reuse)
}

/// `tcp-trace explain [FILTERS]`.
pub async fn explain(args: &ExplainArgs, mut filter: Filter) -> anyhow::Result<u8> {
    resolve_cgroup_filters(&args.filter, &mut filter)?;
    let t0 = monotonic_ns();
    let wall = WallClock::now();
    let stdout = BufWriter::with_capacity(64 * 1024, io::stdout().lock());
    let cfg = args.opts.config();
    eprintln!(
        "tcp-trace: explaining connections with a phase of at least {} ms, failures, CLOSE_WAIT sockets older than {} s, and {}+ TIME_WAIT sockets per remote end",
        args.opts.slow, args.opts.close_wait_secs, args.opts.time_wait_min
    );
    let r =
        Renderer::new(stdout, &args.output(), wall, Some(t0), true).with_explain(cfg, port_range());
    live(
        filter,
        &args.filter,
        args.duration,
        args.count,
        t0,
        Output::Render(Box::new(r)),
    )
    .await
}

/// `tcp-trace record -o FILE`.
pub async fn record(args: &RecordArgs, mut filter: Filter) -> anyhow::Result<u8> {
    resolve_cgroup_filters(&args.filter, &mut filter)?;
    let t0 = monotonic_ns();
    let wall = WallClock::now();
    let file = File::create(&args.output)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", args.output.display()))?;
    let header = record::Header {
        wall_offset_ns: wall.offset_ns() as i64,
        meta: serde_json::json!({
            "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
            "tool": concat!("tcp-trace ", env!("CARGO_PKG_VERSION")),
            "args": std::env::args().skip(1).collect::<Vec<_>>(),
        }),
    };
    let w = record::Writer::new(BufWriter::with_capacity(256 * 1024, file), &header)?;
    live(
        filter,
        &args.filter,
        args.duration,
        args.count,
        t0,
        Output::Record(w),
    )
    .await
}

/// Losses and skipped runs already reported, so that each report says what is new.
#[derive(Default)]
struct Reported {
    lost: u64,
    skipped: u64,
}

impl Reported {
    fn report<W: Write>(&mut self, c: &loader::Counters, out: &mut Output<W>) -> io::Result<()> {
        if c.lost > self.lost {
            out.lost(c.lost - self.lost, c.lost)?;
            self.lost = c.lost;
        }
        if c.skipped > self.skipped {
            out.skipped(c.skipped - self.skipped, c.skipped)?;
            self.skipped = c.skipped;
        }
        Ok(())
    }
}

/// Raises the reader's priority once it falls behind (`--renice`).
struct Renice {
    to: i32,
    /// Bytes read in one drain (the kernel kept the ring from emptying meanwhile)
    /// that count as falling behind: a quarter of the ring.
    behind_bytes: usize,
    done: bool,
}

impl Renice {
    fn new(to: i32, ring_bytes: u32) -> Renice {
        Renice {
            to,
            behind_bytes: ring_bytes as usize / 4,
            done: to == 0,
        }
    }

    /// Why the reader counts as behind after a drain that read `drained` bytes with
    /// `lost` events lost so far; `None` when it is not (or already acted on).
    fn behind(&self, drained: usize, lost: u64) -> Option<String> {
        if self.done {
            None
        } else if lost > 0 {
            Some(format!("{lost} events lost"))
        } else if drained >= self.behind_bytes {
            Some(format!(
                "{} KiB read from the ring without a pause",
                drained / 1024
            ))
        } else {
            None
        }
    }

    /// After a drain that read `drained` bytes, with `lost` events lost so far.
    fn check(&mut self, drained: usize, lost: u64) {
        let Some(why) = self.behind(drained, lost) else {
            return;
        };
        self.done = true;
        // Never lower a priority the user already raised further.
        // SAFETY: plain syscalls on the calling thread; errno is cleared first because
        // -1 is also a valid nice value.
        let now = unsafe {
            *libc::__errno_location() = 0;
            let n = libc::getpriority(libc::PRIO_PROCESS, 0);
            (n != -1 || *libc::__errno_location() == 0).then_some(n)
        };
        if now.is_some_and(|n| n <= self.to) {
            return;
        }
        // Linux keeps a nice value per thread: PRIO_PROCESS with 0 is this thread,
        // the one that drains the ring.
        // SAFETY: plain syscall on the calling thread.
        let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, self.to) };
        if rc == 0 {
            eprintln!(
                "tcp-trace: falling behind the kernel ({why}): reader's nice value set to {} (--renice 0 keeps it)",
                self.to
            );
        } else {
            eprintln!(
                "tcp-trace: falling behind the kernel ({why}); could not raise the reader's priority to nice {}: {} (needs CAP_SYS_NICE)",
                self.to,
                io::Error::last_os_error()
            );
        }
    }
}

async fn live<W: Write>(
    filter: Filter,
    kernel: &crate::cli::FilterArgs,
    duration: Option<f64>,
    count: Option<u64>,
    t0: u64,
    mut out: Output<W>,
) -> anyhow::Result<u8> {
    let (mut loaded, ring) = loader::load(&Options {
        filter,
        attach: kernel.attach,
        ring_bytes: kernel.ring_kib * 1024,
        book_entries: kernel.book_entries,
        // One record per connection flush wherever nothing needs each event as it
        // happens: not for `--view events` nor for a recording.
        books: !kernel.per_event
            && match &out {
                Output::Render(r) => !r.event_stream(),
                Output::Record(_) => false,
            },
    })?;
    for w in &loaded.warnings {
        eprintln!("tcp-trace: warning: {w}");
    }
    let ready_ms = (monotonic_ns() - t0) as f64 / 1e6;
    let paths: Vec<String> = loaded
        .attached
        .iter()
        .map(|(hook, path)| format!("{hook}={}", path.name()))
        .collect();
    let design = if loaded.books {
        "one record per connection"
    } else {
        "one record per event"
    };
    eprintln!(
        "tcp-trace: {} hooks attached in {ready_ms:.0} ms ({}; {design}); Ctrl-C to stop",
        loaded.attached.len(),
        paths.join(" ")
    );
    let mut source = Source::new(ring)?;
    // The socket table now that the hooks run: what opened before is named from it,
    // what opens from here on is seen by the hooks. Read on a blocking thread while
    // this one keeps draining the ring (a busy host's table takes a while to dump),
    // holding the events until the table is in the correlator.
    let mut table =
        matches!(out, Output::Render(_)).then(|| tokio::task::spawn_blocking(read_open_sockets));
    if table.is_none() {
        // A recording has no socket table; its connect() calls in progress are still
        // followed (a walk of ~10 µs per thread here; the ring holds meanwhile).
        let calls = read_calls();
        let followed = seed_calls(&mut loaded, &calls);
        report_calls(followed, &calls);
    }
    let mut held: Vec<tcp_trace_common::RawEvent> = Vec::new();
    let mut tw_table: Option<tokio::task::JoinHandle<crate::sockdiag::Snapshot>> = None;

    let mut stats = RunStats::default();
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let far = Duration::from_secs(86400 * 365 * 30);
    let sleep = tokio::time::sleep(duration.map(Duration::from_secs_f64).unwrap_or(far));
    tokio::pin!(sleep);
    // Reported so far (our programs were loaded by this process: every miss they
    // show is this run's).
    let mut reported = Reported::default();
    let mut last_check = tokio::time::Instant::now();
    let limit = count.unwrap_or(u64::MAX);
    let mut renice = Renice::new(kernel.renice, kernel.ring_kib * 1024);
    // What bursts leave in the heap goes back every few seconds (see `heap`).
    let mut trimmer = crate::heap::Trimmer::new(std::time::Instant::now());

    let result: io::Result<()> = async {
        loop {
            let mut stop = false;
            let mut learned = None;
            tokio::select! {
                r = source.readable() => r?,
                t = async { table.as_mut().expect("guarded").await }, if table.is_some() => {
                    table = None;
                    learned = Some(t);
                }
                t = async { tw_table.as_mut().expect("guarded").await }, if tw_table.is_some() => {
                    tw_table = None;
                    match t {
                        Ok(tw) => apply_time_wait(tw, &filter, &mut out, monotonic_ns()),
                        Err(e) => eprintln!("tcp-trace: note: TIME_WAIT sockets at start: not read ({e})"),
                    }
                }
                _ = tick.tick() => {}
                _ = sigint.recv() => stop = true,
                _ = sigterm.recv() => stop = true,
                _ = &mut sleep => stop = true,
            }
            // The clock first: every event stamped before it is in the ring by the
            // time the drain below ends (less the reorder window, which covers
            // programs still running on another CPU).
            let now = monotonic_ns();
            let mut err = None;
            if stop && let Some(t) = table.take() {
                learned = Some(t.await);
            }
            // Still holding when the table has just arrived: what this drain reads is
            // newer than what is held and goes in after it. (Pushed first, a batch
            // spanning more than the reorder window applied children before the
            // held LISTEN of their listener: a CI run lost every child's listener.)
            let holding = table.is_some() || learned.is_some();
            let mut drained = 0usize;
            source.drain(|bytes| {
                // With the ring's 8-byte record header.
                drained += bytes.len() + 8;
                // While draining: a drain goes on as long as the kernel keeps the
                // ring filled, and the reader that never got back to the loop fell
                // behind there (a FIN storm: 41 MiB read in one drain before it was
                // reniced, 8 907 events lost meanwhile).
                renice.check(drained, 0);
                if err.is_some() || stats.events >= limit {
                    return;
                }
                let r = ring_record(bytes, |raw| {
                    if holding {
                        held.push(raw);
                    } else if err.is_none()
                        && stats.events < limit
                        && let Err(e) = out.raw(&raw, &mut stats)
                    {
                        err = Some(e);
                    }
                });
                if let Err(e) = r {
                    crate::pipeline::first_undecodable(&stats, || {
                        format!("{e}, {} bytes", bytes.len())
                    });
                    stats.decode_errors += 1;
                }
            });
            if let Some(e) = err {
                return Err(e);
            }
            if let Some(t) = learned {
                match t {
                    Ok(open) => apply_open_sockets(open, &mut loaded, &mut out, &filter, now),
                    Err(e) => eprintln!("tcp-trace: note: socket table: not read ({e})"),
                }
                // Then, for `explain` only, the TIME_WAIT sockets (left out above: a busy
                // host holds 100 k of them), on a blocking thread while events flow.
                if out.wants_time_wait_table() {
                    tw_table = Some(tokio::task::spawn_blocking(|| {
                        crate::sockdiag::snapshot_states(crate::sockdiag::TIME_WAIT_ONLY)
                    }));
                }
                for raw in held.drain(..) {
                    if stats.events >= limit {
                        break;
                    }
                    out.raw(&raw, &mut stats)?;
                }
                held.shrink_to_fit();
                // Start-up is over: what loading and the socket table freed goes back
                // (see `heap`).
                crate::heap::give_back();
            }
            if table.is_some() {
                // Time must not pass the held events.
                continue;
            }
            loaded.flush_log();
            let done = stats.events >= limit;
            if !stop && !done {
                out.advance(now)?;
            }
            if stop || done || last_check.elapsed() >= Duration::from_secs(1) {
                last_check = tokio::time::Instant::now();
                trimmer.tick(std::time::Instant::now());
                let c = loaded.counters();
                renice.check(0, c.lost);
                reported.report(&c, &mut out)?;
            }
            out.flush()?;
            if stop || done {
                return Ok(());
            }
        }
    }
    .await;
    match result {
        Ok(()) => {}
        Err(e) if is_epipe(&e) => return Ok(0),
        Err(e) => return Err(e.into()),
    }
    // The programs' skip counts need the programs: read before they go. Never below
    // what was already reported: a skip is counted by the kernel before the twin
    // that catches it counts the catch, so a report read between the two counted it
    // as missing, and a report cannot be taken back (7.2: 14 reported, 13 at the
    // end); the figure is an upper bound ("up to that many events missing").
    let before = loaded.counters();
    let skipped = before.skipped.max(reported.skipped);
    // The end of a run: the programs go, what they queued since the last drain is
    // read, then the steps still in the kernel's books (sockets open at the end:
    // a FIN_WAIT1 or a retransmit since their last record would otherwise be lost).
    loaded.detach_all();
    let mut tail_err = None;
    let mut undecodable = 0;
    let mut first_tail: Option<String> = None;
    {
        let mut feed = |raw: tcp_trace_common::RawEvent| {
            if tail_err.is_none()
                && stats.events < limit
                && let Err(e) = out.raw(&raw, &mut stats)
            {
                tail_err = Some(e);
            }
        };
        source.drain(|bytes| {
            if let Err(e) = ring_record(bytes, &mut feed) {
                first_tail.get_or_insert_with(|| format!("{e}, {} bytes", bytes.len()));
                undecodable += 1;
            }
        });
        // An entry that cannot be read counts as undecodable, as a bad record would.
        let (books, unread) = loaded.pending_books();
        if unread > 0 {
            first_tail.get_or_insert_with(|| format!("{unread} books unreadable in the map"));
        }
        undecodable += unread;
        for book in books {
            if let Err(e) = unfold_book(&book, BookRead::AtRest, &mut feed) {
                first_tail.get_or_insert_with(|| format!("{e}, a book left at the end"));
                undecodable += 1;
            }
        }
    }
    if let Some(e) = first_tail {
        crate::pipeline::first_undecodable(&stats, || e);
    }
    stats.decode_errors += undecodable;
    // The kernel side's last log records, written before its programs went.
    loaded.flush_log();
    match tail_err {
        Some(e) if is_epipe(&e) => return Ok(0),
        Some(e) => return Err(e.into()),
        None => {}
    }
    let c = crate::loader::Counters {
        skipped,
        state_skips: before.state_skips,
        ..loaded.counters()
    };
    let _ = reported.report(&c, &mut out);
    stats.skipped = c.skipped;
    stats.skips_counted = loaded.skips_counted;
    stats.caught_nested = c.caught_nested;
    stats.state_skips = c.state_skips;
    stats.books_full = c.books_full;
    stats.layout_suspect = c.layout_suspect;
    stats.calls_full = c.calls_full;
    stats.lost = c.lost;
    stats.filtered = c.filtered;
    stats.fd_walk_failed = c.fd_walk_failed;
    stats.submitted = c.submitted;
    match out.finish(&stats) {
        Err(e) if is_epipe(&e) => Ok(0),
        r => r.map(|()| 0).map_err(Into::into),
    }
}

/// The TCP sockets open at start in every network namespace (sock_diag, TIME_WAIT
/// left out), and the listeners among them with their owners.
struct OpenSockets {
    snap: crate::sockdiag::Snapshot,
    listeners: Vec<(u32, u16, tcp_trace_common::Owner)>,
    /// Threads inside `connect()` (see `inflight`).
    calls: crate::inflight::Calls,
}

/// Reads [`OpenSockets`] (blocking: netlink dumps, /proc walks).
fn read_open_sockets() -> OpenSockets {
    // First: a call found here that returns before it is seeded leaves an entry its
    // thread's next connect() replaces; the sooner, the fewer.
    let calls = read_calls();
    let snap = crate::sockdiag::snapshot_states(crate::sockdiag::NOT_TIME_WAIT);
    // Only where the cgroup2 tree is mounted: a resolver would scan the whole tree.
    let cgroup_mount = std::fs::read_to_string("/proc/self/mountinfo")
        .ok()
        .and_then(|m| crate::container::find_cgroup2_mount(&m))
        .map(|m| m.mount_point);
    let listeners: Vec<(u32, u16, tcp_trace_common::Owner)> = snap
        .sockets
        .iter()
        .filter(|s| s.state == crate::decode::TcpState::Listen)
        .filter_map(|s| {
            let (pid, comm) = s.owner?;
            let cgroup_id = cgroup_mount
                .as_deref()
                .and_then(|m| crate::container::cgroup2_of_pid(m, pid))
                .map(|(_, id)| id)
                .unwrap_or(0);
            Some((
                s.netns as u32,
                s.local.1,
                tcp_trace_common::Owner {
                    tgid: pid,
                    pid,
                    comm: comm.0,
                    cgroup_id,
                    ns_tgid: 0,
                    netns: s.netns as u32,
                },
            ))
        })
        .collect();
    OpenSockets {
        snap,
        listeners,
        calls,
    }
}

/// The `connect()` calls in progress now (see `inflight`). None from inside a pid
/// namespace (a container): /proc's ids there are not the kernel side's, and an entry
/// under a wrong id could be taken by another thread's exit. Their returns are lost
/// there, as before (docs/kernel-facts.md).
fn read_calls() -> crate::inflight::Calls {
    if loader::in_initial_pid_namespace() {
        crate::inflight::connects_in_progress()
    } else {
        crate::inflight::Calls::default()
    }
}

/// The `connect()` calls in progress at start into the kernel's table (see
/// `inflight`); returns how many went in.
fn seed_calls(loaded: &mut loader::Loaded, calls: &crate::inflight::Calls) -> usize {
    let connects: Vec<(u64, i32)> = calls.connects.iter().map(|c| (c.pid_tgid, c.fd)).collect();
    loaded.seed_connects(&connects)
}

/// Says what [`seed_calls`] did, when there is something to say: calls followed, and
/// threads that could not be read.
fn report_calls(followed: usize, calls: &crate::inflight::Calls) {
    if followed > 0 {
        eprintln!(
            "tcp-trace: {followed} connect() call(s) in progress at start followed to their return"
        );
    }
    if let Some(e) = &calls.first_error {
        eprintln!(
            "tcp-trace: note: the system call of {} thread(s) could not be read (first: {e}): a connect() one of them had in progress at start loses its return",
            calls.unreadable
        );
    }
}

/// Whether the kernel side's filter `f` takes the events of socket `s` of the socket
/// table: `None` where that depends on what the table does not give (the owner's
/// cgroup, its pid in tcp-trace's namespace) or the owner is not known under a pid
/// filter.
fn seed_selected(f: &Filter, s: &crate::sockdiag::ExistingSocket) -> Option<bool> {
    if f.ncgroups != 0 || f.this_container != 0 {
        return None;
    }
    if f.family != 0 && f.family != s.family.raw() {
        return Some(false);
    }
    if f.tgid != 0 {
        match s.owner {
            Some((pid, _)) if pid == f.tgid => {}
            Some(_) => return Some(false),
            None => return None,
        }
    }
    Some(loader::ports_take(f, s.local.1, s.remote.1))
}

/// The TIME_WAIT sockets of the socket table that the filter surely takes, to
/// `explain`'s count (`now`: they were read before it).
fn apply_time_wait<W: Write>(
    tw: crate::sockdiag::Snapshot,
    filter: &Filter,
    out: &mut Output<W>,
    now: u64,
) {
    let sockets: Vec<(u32, std::net::IpAddr, u16, u16)> = tw
        .sockets
        .iter()
        .filter(|s| s.state == crate::decode::TcpState::TimeWait)
        .filter(|s| seed_selected(filter, s) == Some(true))
        .map(|s| (s.expires_ms, s.remote.0, s.remote.1, s.local.1))
        .collect();
    out.time_wait_at_start(now, sockets);
}

/// Listeners' owners go to the kernel side, every socket the filter may take to the
/// correlator (`now`: the socket table was read before it).
fn apply_open_sockets<W: Write>(
    open: OpenSockets,
    loaded: &mut loader::Loaded,
    out: &mut Output<W>,
    filter: &Filter,
    now: u64,
) {
    let OpenSockets {
        snap,
        listeners,
        calls,
    } = open;
    loaded.seed_listeners(&listeners);
    let followed = seed_calls(loaded, &calls);
    // Said once everything learned is in place (a test waits for this line).
    eprintln!("tcp-trace: {}", crate::sockdiag::summary_line(&snap));
    for e in &snap.errors {
        eprintln!("tcp-trace: note: socket table: {e}");
    }
    report_calls(followed, &calls);
    out.seed(
        snap.sockets
            .iter()
            .filter_map(|s| {
                let selected = seed_selected(filter, s);
                // One the kernel side never reports: no event will ask for it.
                (selected != Some(false)).then(|| crate::correlate::Seed {
                    netns: s.netns as u32,
                    local: s.local,
                    remote: s.remote,
                    state: s.state,
                    owner: s.owner,
                    selected: selected == Some(true),
                })
            })
            .collect(),
        now,
    );
}

/// `tcp-trace replay FILE`: no privilege needed.
pub fn replay(args: &ReplayArgs) -> anyhow::Result<u8> {
    let file = File::open(&args.file)
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", args.file.display()))?;
    let mut reader = record::Reader::new(BufReader::new(file))
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.file.display()))?;
    let wall = WallClock::with_offset(reader.header.wall_offset_ns as i128);
    let stdout = BufWriter::with_capacity(64 * 1024, io::stdout().lock());
    let colour = args.style.colour(
        io::IsTerminal::is_terminal(&io::stdout()),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let mut r = Renderer::new(stdout, &args.output, wall, None, false)
        .with_select(Select::new(&args.select, &[]))
        .with_colour(colour)
        .with_svg(args.style.svg.clone());
    if args.explain {
        // The port range is this host's: the recording's is not in the file.
        r = r.with_explain(args.explain_opts.config(), port_range());
    }
    let mut out = Output::Render(Box::new(r));
    let res = replay_into(&mut reader, &mut out);
    match res {
        Err(e) if e.downcast_ref::<io::Error>().is_some_and(is_epipe) => Ok(0),
        r => r,
    }
}

fn replay_into<R: io::Read, W: Write>(
    reader: &mut record::Reader<R>,
    out: &mut Output<W>,
) -> anyhow::Result<u8> {
    let mut stats = RunStats::default();
    loop {
        match reader.next_item() {
            Ok(Some(record::Item::Event(raw))) => out.raw(&raw, &mut stats)?,
            Ok(Some(record::Item::Lost(n))) => {
                stats.lost += n;
                out.lost(n, stats.lost)?;
            }
            Ok(None) => break,
            Err(e) => {
                out.finish(&stats)?;
                return Err(anyhow::anyhow!("{e}"));
            }
        }
    }
    out.finish(&stats)?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::Renice;

    #[test]
    fn the_reader_is_behind_at_a_quarter_of_the_ring_or_a_loss_and_only_once() {
        let r = Renice::new(-5, 8 << 20);
        assert_eq!(r.behind((2 << 20) - 1, 0), None);
        assert_eq!(
            r.behind(2 << 20, 0).as_deref(),
            Some("2048 KiB read from the ring without a pause")
        );
        assert_eq!(r.behind(0, 3).as_deref(), Some("3 events lost"));
        let done = Renice { done: true, ..r };
        assert_eq!(done.behind(8 << 20, 9), None);
        // `--renice 0`: never.
        assert_eq!(Renice::new(0, 8 << 20).behind(8 << 20, 9), None);
    }
}
