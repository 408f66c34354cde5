//! `cargo xtask bench`: paired, alternating throughput/overhead benchmark
//! (issue #5, docs/performance.md, DESIGN.md §6).
//!
//! Each round runs every configuration once, in the same order (untraced,
//! `tcp-trace --json > /dev/null`, `tcp-trace > /dev/null`, bpftrace), each time
//! under the same loopback connection storm (`tcp-trace-storm`). Rates are compared
//! within a round (paired) and summarised by medians over rounds, which cancels
//! most of the noise of a shared machine. For each traced run it also measures the
//! tracer's CPU seconds (from `/proc/PID/stat`, from "ready" to exit), its peak
//! RSS (`VmHWM`, read until the process is a zombie), the time from spawn to ready,
//! lost events, and the in-kernel cost per program hit from `kernel.bpf_stats_enabled`
//! (restored afterwards) and `bpftool prog show --json`.
use std::{
    collections::BTreeSet,
    fs,
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, anyhow, bail};

use crate::cmd::{self, capture, workspace_root};

use self::json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Config {
    /// The storm alone.
    Untraced,
    /// `tcp-trace --json > /dev/null`.
    Json,
    /// `tcp-trace > /dev/null` (the default ladder view).
    Default,
    /// bpftrace, one printf line per `sock:inet_sock_set_state` hit.
    Bpftrace,
}

impl Config {
    fn key(self) -> &'static str {
        match self {
            Config::Untraced => "untraced",
            Config::Json => "json",
            Config::Default => "default",
            Config::Bpftrace => "bpftrace",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Config::Untraced => "untraced",
            Config::Json => "tcp-trace --json",
            Config::Default => "tcp-trace (ladder)",
            Config::Bpftrace => "bpftrace printf",
        }
    }

    fn is_ours(self) -> bool {
        matches!(self, Config::Json | Config::Default)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Close {
    /// The client closes with a FIN.
    Fin,
    /// The client closes with a reset (SO_LINGER 0).
    Rst,
}

impl Close {
    fn key(self) -> &'static str {
        match self {
            Close::Fin => "fin",
            Close::Rst => "rst",
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Seconds of storm per run.
    #[arg(long, default_value_t = 5.0)]
    secs: f64,
    /// Rounds; each round runs every configuration once, in order.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000))]
    rounds: u32,
    /// Print the result as JSON on stdout instead of the table.
    #[arg(long)]
    json: bool,
    /// Client threads of the storm (as many server threads accept).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=256))]
    threads: u32,
    /// How the storm's clients close their connections.
    #[arg(long, value_enum, default_value_t = Close::Fin)]
    close: Close,
    /// Configurations to run, in this order each round.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "untraced,json,default,bpftrace"
    )]
    configs: Vec<Config>,
    /// Do not run setup and `cargo build --release` first.
    #[arg(long)]
    no_build: bool,
    /// Before each run, wait up to this many seconds for tracing programs of other
    /// processes (another tracer, someone's tests) to go away; runs that still saw
    /// some are flagged.
    #[arg(long, default_value_t = 30.0)]
    quiet_wait: f64,
}

/// Target figures of issue #5.
const TARGET_RATIO: f64 = 0.95;
const TARGET_READY_S: f64 = 0.2;
const TARGET_RSS_MB: f64 = 50.0;

/// The bpftrace side of the comparison: the same tracepoint, one line per event
/// with what our events carry (time, pid, comm, both ends, both states).
const BPFTRACE_SCRIPT: &str = r#"tracepoint:sock:inet_sock_set_state /args->protocol == 6/ { printf("%llu %d %s %s:%d %s:%d %d %d\n", nsecs, pid, comm, ntop(args->saddr), args->sport, ntop(args->daddr), args->dport, args->oldstate, args->newstate); }"#;

const BPF_STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

pub fn run(args: &BenchArgs) -> Result<()> {
    if !(args.secs.is_finite() && args.secs > 0.0 && args.secs <= 3600.0) {
        bail!("--secs must be in (0, 3600]");
    }
    if args.configs.is_empty() {
        bail!("--configs is empty");
    }
    if !cmd::is_root()? {
        bail!(
            "`cargo xtask bench` loads eBPF programs and sets kernel.bpf_stats_enabled: run it as root"
        );
    }
    let root = workspace_root()?;
    if !args.no_build {
        crate::setup::setup(true)?;
        crate::build_only(false)?;
    }
    let bin_dir = crate::target_dir(&root).join("release");
    let bins = Bins {
        tracer: bin_dir.join("tcp-trace"),
        storm: bin_dir.join("tcp-trace-storm"),
        bpftrace: cmd::which("bpftrace"),
        bpftool: cmd::which("bpftool"),
        clk_tck: capture(Command::new("getconf").arg("CLK_TCK"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0),
    };
    for b in [&bins.tracer, &bins.storm] {
        if !b.is_file() {
            bail!(
                "{} does not exist: build with `cargo build --release -p tcp-trace`",
                b.display()
            );
        }
    }
    if args.configs.contains(&Config::Bpftrace) && bins.bpftrace.is_none() {
        bail!("bpftrace is not installed: run `cargo xtask setup`");
    }
    if bins.bpftool.is_none() {
        eprintln!("bench: warning: bpftool is missing, no per-hit kernel cost");
    }
    let out_dir = crate::target_dir(&root).join("bench");
    fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let machine = machine_info(true);
    let stats = BpfStats::new()?;

    // Warm up (page cache, TIME_WAIT population) with a short untraced storm.
    let warm = args.secs.min(2.0);
    eprintln!("bench: warm-up, {warm} s untraced");
    storm(&bins, args, warm)?;

    let mut runs: Vec<Run> = Vec::new();
    for round in 1..=args.rounds {
        for &config in &args.configs {
            let run = run_one(&bins, args, config, round, &stats)?;
            eprintln!("bench: round {round}/{} {}", args.rounds, run.progress());
            runs.push(run);
        }
    }
    drop(stats);

    let summaries: Vec<Summary> = args
        .configs
        .iter()
        .map(|&c| Summary::of(c, &runs))
        .collect();
    let verdicts = verdicts(&summaries);
    let report = Value::obj(vec![
        ("unix_time", Value::from(started)),
        ("source", source_info(&root, &bins)),
        ("machine", machine),
        ("machine_after", machine_info(false)),
        (
            "params",
            Value::obj(vec![
                ("secs", Value::from(args.secs)),
                ("rounds", Value::from(args.rounds as u64)),
                ("threads", Value::from(args.threads as u64)),
                ("close", Value::from(args.close.key())),
                (
                    "configs",
                    Value::Arr(args.configs.iter().map(|c| Value::from(c.key())).collect()),
                ),
                ("bpftrace_script", Value::from(BPFTRACE_SCRIPT)),
            ]),
        ),
        (
            "summary",
            Value::Arr(summaries.iter().map(Summary::to_json).collect()),
        ),
        (
            "targets",
            Value::Arr(verdicts.iter().map(Verdict::to_json).collect()),
        ),
        ("runs", Value::Arr(runs.iter().map(Run::to_json).collect())),
    ]);
    let path = out_dir.join(format!("bench-{started}.json"));
    fs::write(&path, format!("{}\n", report.pretty()))
        .with_context(|| format!("writing {}", path.display()))?;
    if args.json {
        println!("{report}");
    } else {
        print_table(args, &summaries, &verdicts);
    }
    eprintln!("bench: wrote {}", path.display());
    Ok(())
}

struct Bins {
    tracer: PathBuf,
    storm: PathBuf,
    bpftrace: Option<PathBuf>,
    bpftool: Option<PathBuf>,
    clk_tck: f64,
}

// ---------------------------------------------------------------------------
// One run.

#[derive(Clone, Debug, Default)]
struct StormResult {
    connections: u64,
    secs: f64,
    rate: f64,
    errors: u64,
}

#[derive(Clone, Debug, Default)]
struct ProgStat {
    id: u64,
    name: String,
    run_time_ns: u64,
    run_cnt: u64,
}

#[derive(Clone, Debug, Default)]
struct TracerResult {
    /// Spawn → ready line (tcp-trace) or "Attaching" line (bpftrace).
    ready_s: f64,
    /// What tcp-trace itself printed: "hooks attached in X ms".
    self_ready_ms: Option<f64>,
    /// CPU seconds from ready to exit, and in total.
    cpu_s: f64,
    cpu_total_s: f64,
    /// VmHWM, kB.
    hwm_kb: u64,
    events: Option<u64>,
    lost: Option<u64>,
    progs: Vec<ProgStat>,
    exit_code: Option<i32>,
    /// Other processes' tracing programs loaded at the end of the storm.
    foreign_progs: usize,
}

struct Run {
    round: u32,
    config: Config,
    storm: StormResult,
    tracer: Option<TracerResult>,
    /// Most tracing programs of other processes seen before or after the storm.
    foreign_progs: usize,
}

impl Run {
    fn progress(&self) -> String {
        let mut s = format!(
            "{:<20} {:>9.0} conn/s",
            self.config.label(),
            self.storm.rate
        );
        if self.foreign_progs > 0 {
            s += &format!(" [{} foreign tracing programs]", self.foreign_progs);
        }
        if let Some(t) = &self.tracer {
            s += &format!(
                ", lost {}, cpu {:.2} s, rss {:.1} MB, ready {:.3} s",
                t.lost.map_or("?".to_string(), |l| l.to_string()),
                t.cpu_s,
                t.hwm_kb as f64 / 1024.0,
                t.ready_s
            );
        }
        s
    }

    fn to_json(&self) -> Value {
        let mut fields = vec![
            ("round", Value::from(self.round as u64)),
            ("config", Value::from(self.config.key())),
            ("connections", Value::from(self.storm.connections)),
            ("storm_secs", Value::from(self.storm.secs)),
            ("rate", Value::from(self.storm.rate)),
            ("connect_errors", Value::from(self.storm.errors)),
            ("foreign_progs", Value::from(self.foreign_progs as u64)),
        ];
        if let Some(t) = &self.tracer {
            fields.extend([
                ("ready_s", Value::from(t.ready_s)),
                ("self_ready_ms", Value::opt(t.self_ready_ms)),
                ("cpu_s", Value::from(t.cpu_s)),
                ("cpu_total_s", Value::from(t.cpu_total_s)),
                ("vm_hwm_kb", Value::from(t.hwm_kb)),
                ("events", Value::opt(t.events)),
                ("lost", Value::opt(t.lost)),
                ("exit_code", Value::opt(t.exit_code.map(|c| c as f64))),
                (
                    "bpf_progs",
                    Value::Arr(
                        t.progs
                            .iter()
                            .map(|p| {
                                Value::obj(vec![
                                    ("id", Value::from(p.id)),
                                    ("name", Value::from(p.name.as_str())),
                                    ("run_time_ns", Value::from(p.run_time_ns)),
                                    ("run_cnt", Value::from(p.run_cnt)),
                                ])
                            })
                            .collect(),
                    ),
                ),
            ]);
        }
        Value::obj(fields)
    }
}

fn storm(bins: &Bins, args: &BenchArgs, secs: f64) -> Result<StormResult> {
    let mut c = Command::new(&bins.storm);
    c.args([
        "--threads",
        &args.threads.to_string(),
        "--secs",
        &secs.to_string(),
        "--close",
        args.close.key(),
    ]);
    let out = capture(&mut c)?;
    let v = json::parse(out.trim()).map_err(|e| anyhow!("storm printed {out:?}: {e}"))?;
    let num = |k: &str| {
        v.get(k)
            .and_then(Value::as_f64)
            .ok_or_else(|| anyhow!("storm output {out:?} has no {k}"))
    };
    Ok(StormResult {
        connections: num("connections")? as u64,
        secs: num("secs")?,
        rate: num("rate")?,
        errors: num("connect_errors")? as u64,
    })
}

fn run_one(
    bins: &Bins,
    args: &BenchArgs,
    config: Config,
    round: u32,
    stats: &BpfStats,
) -> Result<Run> {
    let before = wait_quiet(bins, args);
    if config == Config::Untraced {
        let storm = storm(bins, args, args.secs)?;
        return Ok(Run {
            round,
            config,
            storm,
            tracer: None,
            foreign_progs: before.max(foreign_progs(bins)),
        });
    }
    stats.set(true)?;
    let res = traced(bins, args, config);
    stats.set(false)?;
    let (storm, tracer) = res?;
    Ok(Run {
        round,
        config,
        storm,
        foreign_progs: before.max(tracer.foreign_progs),
        tracer: Some(tracer),
    })
}

/// Where bpftrace writes its lines: tmpfs when there is one, so that the file costs
/// no disk I/O (we need the file, not /dev/null, to count its "Lost N events").
fn bpftrace_output() -> PathBuf {
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    dir.join(format!(
        "tcp-trace-bench-bpftrace-{}.out",
        std::process::id()
    ))
}

struct Tracer {
    child: Child,
    lines: mpsc::Receiver<(Instant, String)>,
    reader: Option<thread::JoinHandle<()>>,
    spawned: Instant,
    /// bpftrace's output file.
    output: Option<PathBuf>,
}

impl Drop for Tracer {
    fn drop(&mut self) {
        // Only reached with the child still running on an error path.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if let Some(p) = &self.output {
            let _ = fs::remove_file(p);
        }
    }
}

fn spawn_tracer(bins: &Bins, config: Config) -> Result<Tracer> {
    let (mut c, output) = match config {
        Config::Json | Config::Default => {
            let mut c = Command::new(&bins.tracer);
            if config == Config::Json {
                c.arg("--json");
            }
            c.stdout(Stdio::null());
            (c, None)
        }
        Config::Bpftrace => {
            let bt = bins
                .bpftrace
                .as_ref()
                .ok_or_else(|| anyhow!("bpftrace missing"))?;
            let out = bpftrace_output();
            let file =
                fs::File::create(&out).with_context(|| format!("creating {}", out.display()))?;
            let mut c = Command::new(bt);
            c.args(["-e", BPFTRACE_SCRIPT]).stdout(file);
            (c, Some(out))
        }
        Config::Untraced => unreachable!("untraced has no tracer"),
    };
    c.stdin(Stdio::null()).stderr(Stdio::piped());
    let spawned = Instant::now();
    let mut child = c
        .spawn()
        .with_context(|| format!("starting `{}`", cmd::display(&c)))?;
    let stderr = child.stderr.take().context("tracer stderr")?;
    let (tx, lines) = mpsc::channel();
    let reader = thread::spawn(move || {
        let mut r = BufReader::new(stderr);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                    if tx.send((Instant::now(), line)).is_err() {
                        break;
                    }
                }
            }
        }
    });
    Ok(Tracer {
        child,
        lines,
        reader: Some(reader),
        spawned,
        output,
    })
}

const READY_TIMEOUT: Duration = Duration::from_secs(60);
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// Waits for the tracer to say it is attached; returns (seconds since spawn, the
/// tracer's own figure in ms, stderr lines seen so far).
fn wait_ready(t: &mut Tracer, config: Config) -> Result<(f64, Option<f64>, Vec<String>)> {
    let mut seen = Vec::new();
    loop {
        if t.spawned.elapsed() > READY_TIMEOUT {
            bail!(
                "{} not ready after {READY_TIMEOUT:?}; stderr:\n{}",
                config.label(),
                seen.join("\n")
            );
        }
        if let Some(status) = t.child.try_wait()? {
            while let Ok((_, l)) = t.lines.recv_timeout(Duration::from_millis(100)) {
                seen.push(l);
            }
            bail!(
                "{} exited ({status}) before it was ready; stderr:\n{}",
                config.label(),
                seen.join("\n")
            );
        }
        match config {
            Config::Bpftrace => {
                while let Ok((_, l)) = t.lines.try_recv() {
                    seen.push(l);
                }
                // bpftrace prints "Attaching N probes..." on stdout, just before it
                // attaches; its first event can only follow.
                let out = t.output.as_ref().context("bpftrace output")?;
                let mut head = String::new();
                if let Ok(f) = fs::File::open(out) {
                    let _ = f.take(256).read_to_string(&mut head);
                }
                if head.contains("Attaching") {
                    return Ok((t.spawned.elapsed().as_secs_f64(), None, seen));
                }
                thread::sleep(Duration::from_millis(2));
            }
            _ => match t.lines.recv_timeout(Duration::from_millis(50)) {
                Ok((at, line)) => {
                    // "tcp-trace: 11 hooks attached in 57 ms; Ctrl-C to stop"
                    let own = line
                        .split_once("hooks attached in ")
                        .and_then(|(_, r)| r.split_whitespace().next())
                        .and_then(|ms| ms.parse::<f64>().ok());
                    let ready = line.contains("hooks attached in");
                    seen.push(line);
                    if ready {
                        return Ok(((at - t.spawned).as_secs_f64(), own, seen));
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    thread::sleep(Duration::from_millis(10))
                }
            },
        }
    }
}

fn traced(bins: &Bins, args: &BenchArgs, config: Config) -> Result<(StormResult, TracerResult)> {
    let mut t = spawn_tracer(bins, config)?;
    let pid = t.child.id();
    let (ready_s, self_ready_ms, mut lines) = wait_ready(&mut t, config)?;
    if config == Config::Bpftrace {
        // "Attaching" comes just before the attach itself.
        thread::sleep(Duration::from_millis(200));
    }
    let cpu_ready = proc_stat(pid, bins.clk_tck).map(|s| s.cpu_s).unwrap_or(0.0);
    let storm_res = storm(bins, args, args.secs);
    // While the tracer still holds its programs: their statistics.
    let (progs, foreign) = bins
        .bpftool
        .as_deref()
        .map(|b| bpf_snapshot(b, Some(pid)))
        .transpose()
        .unwrap_or_else(|e| {
            eprintln!("bench: warning: bpf program statistics: {e:#}");
            None
        })
        .unwrap_or_default();
    let mut hwm_kb = vm_hwm_kb(pid).unwrap_or(0);
    capture(Command::new("kill").args(["-INT", &pid.to_string()]))?;
    // Until the tracer is a zombie: then its CPU times are final and not yet reaped.
    let deadline = Instant::now() + EXIT_TIMEOUT;
    let mut cpu_total_s = cpu_ready;
    loop {
        if let Some(kb) = vm_hwm_kb(pid) {
            hwm_kb = hwm_kb.max(kb);
        }
        match proc_stat(pid, bins.clk_tck) {
            Some(s) => {
                cpu_total_s = s.cpu_s;
                if s.state == 'Z' {
                    break;
                }
            }
            None => break,
        }
        if Instant::now() > deadline {
            eprintln!(
                "bench: {} did not exit within {EXIT_TIMEOUT:?} of SIGINT; killing it",
                config.label()
            );
            let _ = t.child.kill();
            break;
        }
        thread::sleep(Duration::from_millis(2));
    }
    let status = t.child.wait()?;
    if let Some(r) = t.reader.take() {
        let _ = r.join();
    }
    lines.extend(t.lines.try_iter().map(|(_, l)| l));
    let storm = storm_res?;

    let (events, lost) = match config {
        Config::Bpftrace => {
            let out = t.output.as_ref().context("bpftrace output")?;
            let (events, lost) = count_bpftrace(out)?;
            (Some(events), Some(lost))
        }
        _ => {
            // "tcp-trace: N events, M lost, K filtered in the kernel, ..."
            let summary = lines
                .iter()
                .rev()
                .find(|l| l.starts_with("tcp-trace: ") && l.contains(" events, "));
            let field = |what: &str| {
                summary.and_then(|l| {
                    l.trim_start_matches("tcp-trace: ")
                        .split(", ")
                        .find_map(|p| p.strip_suffix(what))
                        .and_then(|n| n.trim().parse::<u64>().ok())
                })
            };
            (field(" events"), field(" lost"))
        }
    };
    if !status.success() {
        eprintln!(
            "bench: warning: {} exited with {status}; stderr:\n{}",
            config.label(),
            lines.join("\n")
        );
    }
    Ok((
        storm,
        TracerResult {
            ready_s,
            self_ready_ms,
            cpu_s: (cpu_total_s - cpu_ready).max(0.0),
            cpu_total_s,
            hwm_kb,
            events,
            lost,
            progs,
            exit_code: status.code(),
            foreign_progs: foreign,
        },
    ))
}

/// Lines of bpftrace's output (events) and the sum of its "Lost N events" lines.
fn count_bpftrace(path: &Path) -> Result<(u64, u64)> {
    let f = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut events = 0;
    let mut lost = 0;
    let mut r = BufReader::with_capacity(1 << 20, f);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        if r.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        if let Some(rest) = buf.strip_prefix(b"Lost ") {
            lost += String::from_utf8_lossy(rest)
                .split_whitespace()
                .next()
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
        } else if !buf.starts_with(b"Attaching ") {
            events += 1;
        }
    }
    Ok((events, lost))
}

// ---------------------------------------------------------------------------
// /proc and bpf statistics.

struct ProcStat {
    state: char,
    cpu_s: f64,
}

/// State and utime+stime of a process (all its threads).
fn proc_stat(pid: u32, clk_tck: f64) -> Option<ProcStat> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ... utime(14) stime(15)": comm may hold spaces and ')'.
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let state = f.first()?.chars().next()?;
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some(ProcStat {
        state,
        cpu_s: (utime + stime) / clk_tck,
    })
}

/// Peak resident set size (kB); gone once the process has exited.
fn vm_hwm_kb(pid: u32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Program types that trace (and so may slow the storm down).
const TRACING_TYPES: &[&str] = &[
    "tracepoint",
    "tracing",
    "raw_tracepoint",
    "raw_tracepoint_writable",
    "kprobe",
    "perf_event",
];

/// The programs `pid` holds (its fds' `prog_id`), with their run statistics from
/// `bpftool prog show --json`, and how many other tracing programs are loaded.
/// (This bpftool lists no owner pids, hence fdinfo.)
fn bpf_snapshot(bpftool: &Path, pid: Option<u32>) -> Result<(Vec<ProgStat>, usize)> {
    let mut ids = BTreeSet::new();
    if let Some(pid) = pid {
        let dir = format!("/proc/{pid}/fdinfo");
        for e in fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
            let Ok(e) = e else { continue };
            let Ok(info) = fs::read_to_string(e.path()) else {
                continue;
            };
            if let Some(id) = info
                .lines()
                .find_map(|l| l.strip_prefix("prog_id:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
            {
                ids.insert(id);
            }
        }
    }
    let out = capture(Command::new(bpftool).args(["prog", "show", "--json"]))?;
    let v = json::parse(&out).map_err(|e| anyhow!("bpftool prog show --json: {e}"))?;
    let mut progs = Vec::new();
    let mut foreign = 0;
    for p in v.as_array().unwrap_or(&[]) {
        let id = p.get("id").and_then(Value::as_f64).unwrap_or(-1.0) as u64;
        if !ids.contains(&id) {
            let ty = p.get("type").and_then(Value::as_str).unwrap_or("");
            if TRACING_TYPES.contains(&ty) {
                foreign += 1;
            }
            continue;
        }
        let num = |k: &str| p.get(k).and_then(Value::as_f64).unwrap_or(0.0) as u64;
        progs.push(ProgStat {
            id,
            name: p
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            run_time_ns: num("run_time_ns"),
            run_cnt: num("run_cnt"),
        });
    }
    Ok((progs, foreign))
}

/// Other processes' tracing programs now (0 without bpftool).
fn foreign_progs(bins: &Bins) -> usize {
    bins.bpftool
        .as_deref()
        .and_then(|b| bpf_snapshot(b, None).ok())
        .map_or(0, |(_, n)| n)
}

/// Waits (up to `--quiet-wait`) until no other tracing program is loaded; returns
/// how many there still are. (The kernel frees the programs of a tracer that just
/// exited a little later, hence the silent first second.)
fn wait_quiet(bins: &Bins, args: &BenchArgs) -> usize {
    let start = Instant::now();
    let mut said = false;
    loop {
        let n = foreign_progs(bins);
        if n == 0 || start.elapsed().as_secs_f64() >= args.quiet_wait {
            if said {
                eprintln!(
                    "bench: waited {:.1} s; {n} foreign tracing programs now",
                    start.elapsed().as_secs_f64()
                );
            }
            return n;
        }
        if !said && start.elapsed() >= Duration::from_secs(1) {
            eprintln!(
                "bench: {n} tracing programs of other processes are loaded; waiting up to {} s",
                args.quiet_wait
            );
            said = true;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// `kernel.bpf_stats_enabled`, restored to what it was when dropped.
struct BpfStats {
    original: Option<String>,
}

impl BpfStats {
    fn new() -> Result<BpfStats> {
        let original = fs::read_to_string(BPF_STATS_SYSCTL)
            .ok()
            .map(|s| s.trim().to_string());
        if original.is_none() {
            eprintln!("bench: warning: {BPF_STATS_SYSCTL} is missing, no per-hit kernel cost");
        }
        Ok(BpfStats { original })
    }

    fn set(&self, on: bool) -> Result<()> {
        let Some(orig) = &self.original else {
            return Ok(());
        };
        let value = if on { "1" } else { orig.as_str() };
        fs::write(BPF_STATS_SYSCTL, value)
            .with_context(|| format!("writing {value} to {BPF_STATS_SYSCTL}"))
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = self.set(false);
    }
}

/// Which code was measured: the commit, whether the tree was dirty, when the
/// tracer binary was built.
fn source_info(root: &Path, bins: &Bins) -> Value {
    let git = |args: &[&str]| {
        capture(Command::new("git").arg("-C").arg(root).args(args))
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    let built = fs::metadata(&bins.tracer)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    Value::obj(vec![
        ("commit", Value::from(git(&["rev-parse", "HEAD"]).as_str())),
        (
            "dirty_files",
            Value::from(
                git(&["status", "--porcelain"])
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .count() as u64,
            ),
        ),
        ("tracer_built_unix", Value::from(built)),
    ])
}

fn machine_info(with_static: bool) -> Value {
    let read = |p: &str| fs::read_to_string(p).unwrap_or_default().trim().to_string();
    let mut fields = vec![("loadavg", Value::from(read("/proc/loadavg").as_str()))];
    if with_static {
        let cpuinfo = read("/proc/cpuinfo");
        let model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            .unwrap_or_default();
        let cpus = thread::available_parallelism().map_or(0, |n| n.get() as u64);
        let mem_kb = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        fields.extend([
            (
                "kernel",
                Value::from(read("/proc/sys/kernel/osrelease").as_str()),
            ),
            ("cpu_model", Value::from(model.as_str())),
            ("cpus", Value::from(cpus)),
            ("mem_total_kb", Value::from(mem_kb)),
            (
                "tcp_tw_reuse",
                Value::from(read("/proc/sys/net/ipv4/tcp_tw_reuse").as_str()),
            ),
        ]);
    }
    Value::obj(fields)
}

// ---------------------------------------------------------------------------
// Summaries.

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

fn min_max(v: &[f64]) -> Option<(f64, f64)> {
    let lo = v.iter().copied().reduce(f64::min)?;
    let hi = v.iter().copied().reduce(f64::max)?;
    Some((lo, hi))
}

struct Summary {
    config: Config,
    runs: usize,
    /// Runs during which other processes had tracing programs loaded.
    disturbed: usize,
    rate_median: f64,
    /// Rate over the untraced rate of the same round, per round.
    ratios: Vec<f64>,
    ratio_median: Option<f64>,
    connections: u64,
    lost_total: Option<u64>,
    events_per_conn: Option<f64>,
    cpu_s_per_1k: Option<f64>,
    hwm_mb_max: Option<f64>,
    ready_s_median: Option<f64>,
    ready_s_max: Option<f64>,
    self_ready_ms_median: Option<f64>,
    /// Pooled run_time_ns of the programs on sock:inet_sock_set_state per hit.
    ns_per_hit: Option<f64>,
    /// Pooled run_time_ns of all the tracer's programs per connection.
    bpf_ns_per_conn: Option<f64>,
}

/// The program on sock:inet_sock_set_state. bpftool shows the kernel's name (15
/// characters: `inet_sock_set_s`, bpftrace's too) or, with BTF, the function's
/// (`inet_sock_set_state`, `btf_inet_sock_set_state`, ...).
fn is_set_state_prog(name: &str) -> bool {
    name.contains("inet_sock_set_s")
}

impl Summary {
    fn of(config: Config, runs: &[Run]) -> Summary {
        let mine: Vec<&Run> = runs.iter().filter(|r| r.config == config).collect();
        let disturbed = mine.iter().filter(|r| r.foreign_progs > 0).count();
        let ratios: Vec<f64> = mine
            .iter()
            .filter_map(|r| {
                let base = runs
                    .iter()
                    .find(|b| b.round == r.round && b.config == Config::Untraced)?;
                (base.storm.rate > 0.0).then(|| r.storm.rate / base.storm.rate)
            })
            .collect();
        let traced: Vec<&TracerResult> = mine.iter().filter_map(|r| r.tracer.as_ref()).collect();
        let connections: u64 = mine.iter().map(|r| r.storm.connections).sum();
        let some = |v: Vec<f64>| if traced.is_empty() { None } else { median(v) };
        let lost_total = (!traced.is_empty())
            .then(|| traced.iter().map(|t| t.lost).sum::<Option<u64>>())
            .flatten();
        let events: Option<u64> = (!traced.is_empty())
            .then(|| traced.iter().map(|t| t.events).sum::<Option<u64>>())
            .flatten();
        let cpu_per_1k: Vec<f64> = mine
            .iter()
            .filter_map(|r| {
                let t = r.tracer.as_ref()?;
                (r.storm.connections > 0).then(|| t.cpu_s * 1000.0 / r.storm.connections as f64)
            })
            .collect();
        let (mut hit_ns, mut hit_cnt, mut all_ns) = (0u64, 0u64, 0u64);
        for t in &traced {
            for p in &t.progs {
                all_ns += p.run_time_ns;
                if is_set_state_prog(&p.name) {
                    // Every hit runs tcp-trace's main program and its `_nested`
                    // twin: the cost of a hit is both, the hits are the main one's.
                    hit_ns += p.run_time_ns;
                    if !p.name.ends_with("_nested") {
                        hit_cnt += p.run_cnt;
                    }
                }
            }
        }
        Summary {
            config,
            runs: mine.len(),
            disturbed,
            rate_median: median(mine.iter().map(|r| r.storm.rate).collect()).unwrap_or(0.0),
            ratio_median: median(ratios.clone()),
            ratios,
            connections,
            lost_total,
            events_per_conn: events
                .filter(|_| connections > 0)
                .map(|e| e as f64 / connections as f64),
            cpu_s_per_1k: some(cpu_per_1k),
            hwm_mb_max: traced
                .iter()
                .map(|t| t.hwm_kb as f64 / 1024.0)
                .reduce(f64::max),
            ready_s_median: some(traced.iter().map(|t| t.ready_s).collect()),
            ready_s_max: traced.iter().map(|t| t.ready_s).reduce(f64::max),
            self_ready_ms_median: median(traced.iter().filter_map(|t| t.self_ready_ms).collect()),
            ns_per_hit: (hit_cnt > 0).then(|| hit_ns as f64 / hit_cnt as f64),
            bpf_ns_per_conn: (all_ns > 0 && connections > 0)
                .then(|| all_ns as f64 / connections as f64),
        }
    }

    fn to_json(&self) -> Value {
        let (rmin, rmax) = min_max(&self.ratios).unzip();
        Value::obj(vec![
            ("config", Value::from(self.config.key())),
            ("runs", Value::from(self.runs as u64)),
            ("disturbed_runs", Value::from(self.disturbed as u64)),
            ("rate_median", Value::from(self.rate_median)),
            ("ratio_median", Value::opt(self.ratio_median)),
            ("ratio_min", Value::opt(rmin)),
            ("ratio_max", Value::opt(rmax)),
            (
                "ratios",
                Value::Arr(self.ratios.iter().map(|&r| Value::from(r)).collect()),
            ),
            ("connections", Value::from(self.connections)),
            ("lost_total", Value::opt(self.lost_total)),
            ("events_per_conn", Value::opt(self.events_per_conn)),
            ("cpu_s_per_1k_conn", Value::opt(self.cpu_s_per_1k)),
            ("peak_rss_mb", Value::opt(self.hwm_mb_max)),
            ("ready_s_median", Value::opt(self.ready_s_median)),
            ("ready_s_max", Value::opt(self.ready_s_max)),
            (
                "self_ready_ms_median",
                Value::opt(self.self_ready_ms_median),
            ),
            ("set_state_ns_per_hit", Value::opt(self.ns_per_hit)),
            ("bpf_ns_per_conn", Value::opt(self.bpf_ns_per_conn)),
        ])
    }
}

struct Verdict {
    what: String,
    measured: String,
    met: Option<bool>,
}

impl Verdict {
    fn to_json(&self) -> Value {
        Value::obj(vec![
            ("target", Value::from(self.what.as_str())),
            ("measured", Value::from(self.measured.as_str())),
            (
                "met",
                match self.met {
                    Some(b) => Value::Bool(b),
                    None => Value::Null,
                },
            ),
        ])
    }
}

fn verdicts(summaries: &[Summary]) -> Vec<Verdict> {
    let mut v = Vec::new();
    if let Some(j) = summaries.iter().find(|s| s.config == Config::Json) {
        v.push(Verdict {
            what: format!("tcp-trace --json rate >= {TARGET_RATIO} of untraced (median of pairs)"),
            measured: j
                .ratio_median
                .map_or("no untraced pairs".into(), |r| format!("{r:.3}")),
            met: j.ratio_median.map(|r| r >= TARGET_RATIO),
        });
        v.push(Verdict {
            what: "tcp-trace --json loses no event".into(),
            measured: j
                .lost_total
                .map_or("unknown".into(), |l| format!("{l} lost")),
            met: j.lost_total.map(|l| l == 0),
        });
    }
    let ours: Vec<&Summary> = summaries.iter().filter(|s| s.config.is_ours()).collect();
    if !ours.is_empty() {
        let ready = median(
            ours.iter()
                .filter_map(|s| s.ready_s_median)
                .collect::<Vec<_>>(),
        );
        let ready_max = ours.iter().filter_map(|s| s.ready_s_max).reduce(f64::max);
        v.push(Verdict {
            what: format!("start-to-ready <= {TARGET_READY_S} s (median)"),
            measured: match (ready, ready_max) {
                (Some(m), Some(x)) => format!("median {m:.3} s, max {x:.3} s"),
                _ => "unknown".into(),
            },
            met: ready.map(|r| r <= TARGET_READY_S),
        });
        let rss = ours.iter().filter_map(|s| s.hwm_mb_max).reduce(f64::max);
        v.push(Verdict {
            what: format!("peak RSS <= {TARGET_RSS_MB} MB"),
            measured: rss.map_or("unknown".into(), |r| format!("{r:.1} MB")),
            met: rss.map(|r| r <= TARGET_RSS_MB),
        });
    }
    v
}

fn print_table(args: &BenchArgs, summaries: &[Summary], verdicts: &[Verdict]) {
    println!(
        "storm: {} client threads, close {}, {} s per run, {} rounds (medians over rounds; ratio = paired with the untraced run of the same round)",
        args.threads,
        args.close.key(),
        args.secs,
        args.rounds
    );
    println!(
        "{:<19} {:>8} {:>21} {:>8} {:>7} {:>9} {:>7} {:>13} {:>7} {:>8}",
        "config",
        "conn/s",
        "ratio (min-max)",
        "lost",
        "ev/conn",
        "cpu s/1k",
        "RSS MB",
        "ready s (max)",
        "ns/hit",
        "bpf µs/c"
    );
    let opt = |v: Option<f64>, prec: usize| v.map_or("-".to_string(), |x| format!("{x:.prec$}"));
    for s in summaries {
        let ratio = match (s.ratio_median, min_max(&s.ratios)) {
            (Some(m), Some((lo, hi))) if s.config != Config::Untraced => {
                format!("{m:.3} ({lo:.2}-{hi:.2})")
            }
            (Some(m), _) => format!("{m:.3}"),
            _ => "-".into(),
        };
        let ready = match (s.ready_s_median, s.ready_s_max) {
            (Some(m), Some(x)) => format!("{m:.3} ({x:.3})"),
            _ => "-".into(),
        };
        println!(
            "{:<19} {:>8.0} {:>21} {:>8} {:>7} {:>9} {:>7} {:>13} {:>7} {:>8}",
            s.config.label(),
            s.rate_median,
            ratio,
            s.lost_total.map_or("-".to_string(), |l| l.to_string()),
            opt(s.events_per_conn, 2),
            opt(s.cpu_s_per_1k, 4),
            opt(s.hwm_mb_max, 1),
            ready,
            opt(s.ns_per_hit, 0),
            opt(s.bpf_ns_per_conn.map(|n| n / 1000.0), 2),
        );
    }
    println!(
        "ns/hit: run_time_ns of the programs on sock:inet_sock_set_state per hit (bpf_stats on); \
         bpf µs/c: all the tracer's programs, per connection"
    );
    for s in summaries.iter().filter(|s| s.disturbed > 0) {
        println!(
            "warning: {} of {} {} runs had other processes' tracing programs loaded",
            s.disturbed,
            s.runs,
            s.config.label()
        );
    }
    for v in verdicts {
        let mark = match v.met {
            Some(true) => "MET   ",
            Some(false) => "MISSED",
            None => "?     ",
        };
        println!("{mark} {}: {}", v.what, v.measured);
    }
}

// ---------------------------------------------------------------------------
// A small JSON value: enough to read the storm's line and bpftool's output and to
// write the report (xtask keeps to anyhow + clap).

mod json {
    use std::fmt::{self, Write};

    #[derive(Clone, Debug, PartialEq)]
    pub enum Value {
        Null,
        Bool(bool),
        Num(f64),
        Str(String),
        Arr(Vec<Value>),
        Obj(Vec<(String, Value)>),
    }

    impl From<f64> for Value {
        fn from(v: f64) -> Value {
            Value::Num(v)
        }
    }
    impl From<u64> for Value {
        fn from(v: u64) -> Value {
            Value::Num(v as f64)
        }
    }
    impl From<&str> for Value {
        fn from(v: &str) -> Value {
            Value::Str(v.to_string())
        }
    }

    impl Value {
        pub fn obj(fields: Vec<(&str, Value)>) -> Value {
            Value::Obj(
                fields
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
            )
        }

        pub fn opt<T: Into<Value>>(v: Option<T>) -> Value {
            v.map_or(Value::Null, Into::into)
        }

        pub fn get(&self, key: &str) -> Option<&Value> {
            match self {
                Value::Obj(f) => f.iter().find(|(k, _)| k == key).map(|(_, v)| v),
                _ => None,
            }
        }

        pub fn as_f64(&self) -> Option<f64> {
            match self {
                Value::Num(n) => Some(*n),
                _ => None,
            }
        }

        pub fn as_str(&self) -> Option<&str> {
            match self {
                Value::Str(s) => Some(s),
                _ => None,
            }
        }

        pub fn as_array(&self) -> Option<&[Value]> {
            match self {
                Value::Arr(a) => Some(a),
                _ => None,
            }
        }

        /// Indented, two spaces a level.
        pub fn pretty(&self) -> String {
            let mut s = String::new();
            self.write(&mut s, Some(0)).expect("writing to a String");
            s
        }

        fn write(&self, out: &mut String, indent: Option<usize>) -> fmt::Result {
            let nl = |out: &mut String, level: usize| -> fmt::Result {
                if indent.is_some() {
                    out.push('\n');
                    for _ in 0..level {
                        out.push_str("  ");
                    }
                }
                Ok(())
            };
            let level = indent.unwrap_or(0);
            let inner = indent.map(|l| l + 1);
            match self {
                Value::Null => out.push_str("null"),
                Value::Bool(b) => write!(out, "{b}")?,
                Value::Num(n) if !n.is_finite() => out.push_str("null"),
                Value::Num(n) if n.fract() == 0.0 && n.abs() < 9.0e15 => {
                    write!(out, "{}", *n as i64)?
                }
                Value::Num(n) => write!(out, "{n}")?,
                Value::Str(s) => write_str(out, s)?,
                Value::Arr(a) if a.is_empty() => out.push_str("[]"),
                Value::Arr(a) => {
                    // Arrays of numbers stay on one line.
                    let flat = a.iter().all(|v| matches!(v, Value::Num(_)));
                    out.push('[');
                    for (i, v) in a.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        if !flat {
                            nl(out, level + 1)?;
                        }
                        v.write(out, inner)?;
                    }
                    if !flat {
                        nl(out, level)?;
                    }
                    out.push(']');
                }
                Value::Obj(f) if f.is_empty() => out.push_str("{}"),
                Value::Obj(f) => {
                    out.push('{');
                    for (i, (k, v)) in f.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        nl(out, level + 1)?;
                        write_str(out, k)?;
                        out.push(':');
                        if indent.is_some() {
                            out.push(' ');
                        }
                        v.write(out, inner)?;
                    }
                    nl(out, level)?;
                    out.push('}');
                }
            }
            Ok(())
        }
    }

    impl fmt::Display for Value {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            let mut s = String::new();
            self.write(&mut s, None)?;
            f.write_str(&s)
        }
    }

    fn write_str(out: &mut String, s: &str) -> fmt::Result {
        out.push('"');
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if (c as u32) < 0x20 => write!(out, "\\u{:04x}", c as u32)?,
                c => out.push(c),
            }
        }
        out.push('"');
        Ok(())
    }

    pub fn parse(s: &str) -> Result<Value, String> {
        let mut p = Parser {
            b: s.as_bytes(),
            i: 0,
        };
        let v = p.value(0)?;
        p.ws();
        if p.i != p.b.len() {
            return Err(format!("trailing data at byte {}", p.i));
        }
        Ok(v)
    }

    struct Parser<'a> {
        b: &'a [u8],
        i: usize,
    }

    impl Parser<'_> {
        fn ws(&mut self) {
            while self.i < self.b.len() && self.b[self.i].is_ascii_whitespace() {
                self.i += 1;
            }
        }

        fn err<T>(&self, what: &str) -> Result<T, String> {
            Err(format!("{what} at byte {}", self.i))
        }

        fn eat(&mut self, lit: &str) -> Result<(), String> {
            if self.b[self.i..].starts_with(lit.as_bytes()) {
                self.i += lit.len();
                Ok(())
            } else {
                self.err(&format!("expected {lit}"))
            }
        }

        fn value(&mut self, depth: usize) -> Result<Value, String> {
            if depth > 64 {
                return self.err("nested too deep");
            }
            self.ws();
            match self.b.get(self.i) {
                None => self.err("unexpected end"),
                Some(b'n') => self.eat("null").map(|()| Value::Null),
                Some(b't') => self.eat("true").map(|()| Value::Bool(true)),
                Some(b'f') => self.eat("false").map(|()| Value::Bool(false)),
                Some(b'"') => self.string().map(Value::Str),
                Some(b'[') => {
                    self.i += 1;
                    let mut a = Vec::new();
                    self.ws();
                    if self.b.get(self.i) == Some(&b']') {
                        self.i += 1;
                        return Ok(Value::Arr(a));
                    }
                    loop {
                        a.push(self.value(depth + 1)?);
                        self.ws();
                        match self.b.get(self.i) {
                            Some(b',') => self.i += 1,
                            Some(b']') => {
                                self.i += 1;
                                return Ok(Value::Arr(a));
                            }
                            _ => return self.err("expected , or ]"),
                        }
                    }
                }
                Some(b'{') => {
                    self.i += 1;
                    let mut f = Vec::new();
                    self.ws();
                    if self.b.get(self.i) == Some(&b'}') {
                        self.i += 1;
                        return Ok(Value::Obj(f));
                    }
                    loop {
                        self.ws();
                        if self.b.get(self.i) != Some(&b'"') {
                            return self.err("expected a key");
                        }
                        let k = self.string()?;
                        self.ws();
                        self.eat(":")?;
                        f.push((k, self.value(depth + 1)?));
                        self.ws();
                        match self.b.get(self.i) {
                            Some(b',') => self.i += 1,
                            Some(b'}') => {
                                self.i += 1;
                                return Ok(Value::Obj(f));
                            }
                            _ => return self.err("expected , or }"),
                        }
                    }
                }
                Some(_) => self.number(),
            }
        }

        fn number(&mut self) -> Result<Value, String> {
            let start = self.i;
            while self.i < self.b.len()
                && matches!(
                    self.b[self.i],
                    b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'
                )
            {
                self.i += 1;
            }
            std::str::from_utf8(&self.b[start..self.i])
                .ok()
                .and_then(|s| s.parse::<f64>().ok())
                .map(Value::Num)
                .ok_or_else(|| format!("bad number at byte {start}"))
        }

        fn hex4(&mut self) -> Result<u32, String> {
            let h = self
                .b
                .get(self.i..self.i + 4)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u32::from_str_radix(h, 16).ok());
            match h {
                Some(v) => {
                    self.i += 4;
                    Ok(v)
                }
                None => self.err("bad \\u escape"),
            }
        }

        fn string(&mut self) -> Result<String, String> {
            self.i += 1; // the opening quote
            let mut s = Vec::new();
            loop {
                let Some(&c) = self.b.get(self.i) else {
                    return self.err("unterminated string");
                };
                self.i += 1;
                match c {
                    b'"' => break,
                    b'\\' => {
                        let Some(&e) = self.b.get(self.i) else {
                            return self.err("unterminated escape");
                        };
                        self.i += 1;
                        let ch = match e {
                            b'"' => '"',
                            b'\\' => '\\',
                            b'/' => '/',
                            b'b' => '\u{8}',
                            b'f' => '\u{c}',
                            b'n' => '\n',
                            b'r' => '\r',
                            b't' => '\t',
                            b'u' => {
                                let hi = self.hex4()?;
                                let code = if (0xD800..0xDC00).contains(&hi)
                                    && self.b[self.i..].starts_with(b"\\u")
                                {
                                    self.i += 2;
                                    let lo = self.hex4()?;
                                    0x10000
                                        + ((hi - 0xD800) << 10)
                                        + (lo.wrapping_sub(0xDC00) & 0x3FF)
                                } else {
                                    hi
                                };
                                char::from_u32(code).unwrap_or('\u{FFFD}')
                            }
                            _ => return self.err("bad escape"),
                        };
                        let mut buf = [0u8; 4];
                        s.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                    }
                    c => s.push(c),
                }
            }
            String::from_utf8(s).map_err(|_| "invalid UTF-8 in a string".to_string())
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn round_trip() {
            let text = r#"[{"id":12,"name":"inet_sock_set_s","run_time_ns":123456789012,"gpl_compatible":true,"x":null,"f":-1.5e3,"s":"a\"b\\c\u00e9\n","e":[],"o":{}}]"#;
            let v = parse(text).unwrap();
            let p = &v.as_array().unwrap()[0];
            assert_eq!(p.get("id").and_then(Value::as_f64), Some(12.0));
            assert_eq!(
                p.get("run_time_ns").and_then(Value::as_f64),
                Some(123456789012.0)
            );
            assert_eq!(p.get("f").and_then(Value::as_f64), Some(-1500.0));
            assert_eq!(p.get("s").and_then(Value::as_str), Some("a\"b\\cé\n"));
            assert_eq!(parse(&v.to_string()).unwrap(), v);
            assert_eq!(parse(&v.pretty()).unwrap(), v);
        }

        #[test]
        fn rejects_garbage() {
            assert!(parse("{").is_err());
            assert!(parse("[1,]").is_err());
            assert!(parse("{\"a\" 1}").is_err());
            assert!(parse("1 2").is_err());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
    }

    #[test]
    fn set_state_program_names() {
        assert!(is_set_state_prog("inet_sock_set_s"));
        assert!(is_set_state_prog("btf_inet_sock_set_state"));
        assert!(!is_set_state_prog("sys_exit_accept4"));
    }
}
