//! One run: the storm alone, or the storm under a tracer (tcp-trace or bpftrace)
//! with the tracer's start-up time, CPU, peak RSS, events and losses.
use std::{
    fs,
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};

use super::{
    BPFTRACE_LIFE_SCRIPT, BPFTRACE_MAP_KEYS_MAX, BPFTRACE_SCRIPT, BenchArgs, Bins, Close, Config,
    RunSpec,
    stats::{self, BpfStats, ProgStat},
};
use crate::cmd::{self, capture};

/// The storm's JSON line (`tcp-trace-storm`); the report names two fields
/// differently.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub(super) struct StormResult {
    pub(super) connections: u64,
    #[serde(rename(serialize = "storm_secs"))]
    pub(super) secs: f64,
    pub(super) rate: f64,
    #[serde(rename = "connect_errors")]
    pub(super) errors: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub(super) struct TracerResult {
    /// Spawn → ready line (tcp-trace) or "Attaching" line (bpftrace).
    pub(super) ready_s: f64,
    /// What tcp-trace itself printed: "hooks attached in X ms".
    pub(super) self_ready_ms: Option<f64>,
    /// CPU seconds from ready to exit, and in total.
    pub(super) cpu_s: f64,
    pub(super) cpu_total_s: f64,
    /// VmHWM, kB.
    #[serde(rename = "vm_hwm_kb")]
    pub(super) hwm_kb: u64,
    pub(super) events: Option<u64>,
    pub(super) lost: Option<u64>,
    pub(super) exit_code: Option<i32>,
    #[serde(rename = "bpf_progs")]
    pub(super) progs: Vec<ProgStat>,
    /// VmRSS (kB) once a second from the start of the storm (soak runs only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) rss_samples_kb: Vec<u64>,
    /// Other processes' tracing programs loaded at the end of the storm.
    #[serde(skip)]
    pub(super) foreign_progs: usize,
}

/// Why a run was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Phase {
    /// A round's run, `kernel.bpf_stats_enabled=0`: rate, ratio, lost, CPU, RSS.
    Ratio,
    /// The short run after the rounds with `kernel.bpf_stats_enabled=1`: the
    /// programs' run_time_ns and run_cnt.
    Stats,
    /// `--soak`: one long run, RSS sampled every second.
    Soak,
}

/// One run as the report lists it: the storm's fields, then the tracer's, flat.
#[derive(Serialize)]
pub(super) struct Run {
    pub(super) round: u32,
    pub(super) close: Close,
    pub(super) phase: Phase,
    pub(super) config: Config,
    #[serde(flatten)]
    pub(super) storm: StormResult,
    /// Most tracing programs of other processes seen before or after the storm.
    pub(super) foreign_progs: usize,
    /// `kernel.bpf_stats_enabled` read at the end of the storm (someone else may
    /// have changed it); `None` without the sysctl.
    pub(super) bpf_stats_enabled: Option<bool>,
    #[serde(flatten)]
    pub(super) tracer: Option<TracerResult>,
}

impl Run {
    pub(super) fn progress(&self) -> String {
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
}

pub(super) fn storm(bins: &Bins, threads: u32, close: Close, secs: f64) -> Result<StormResult> {
    let mut c = Command::new(&bins.storm);
    c.args([
        "--threads",
        &threads.to_string(),
        "--secs",
        &secs.to_string(),
        "--close",
        close.key(),
        // A namespace of its own per run: the rate is then the CPU's, not set by the
        // TIME_WAIT sockets and ports earlier runs left (see tcp-trace-storm's doc).
        "--netns",
    ]);
    let out = capture(&mut c)?;
    serde_json::from_str(out.trim()).map_err(|e| anyhow!("storm printed {out:?}: {e}"))
}

/// One run; bpf_stats is on only for the statistics runs (and off again after).
pub(super) fn run_one(
    bins: &Bins,
    args: &BenchArgs,
    spec: &RunSpec,
    stats: &BpfStats,
) -> Result<Run> {
    let before = stats::wait_quiet(bins, args);
    let RunSpec {
        round,
        close,
        phase,
        config,
        secs,
    } = *spec;
    if config == Config::Untraced {
        let storm = storm(bins, args.threads, close, secs)?;
        return Ok(Run {
            round,
            close,
            phase,
            config,
            storm,
            tracer: None,
            foreign_progs: before.max(stats::foreign_progs(bins)),
            bpf_stats_enabled: stats::bpf_stats_enabled(),
        });
    }
    let on = phase == Phase::Stats;
    if on {
        stats.set(true)?;
    }
    let res = traced(bins, args.threads, spec);
    if on {
        stats.set(false)?;
    }
    let (storm, tracer, bpf_stats_enabled) = res?;
    Ok(Run {
        round,
        close,
        phase,
        config,
        storm,
        foreign_progs: before.max(tracer.foreign_progs),
        bpf_stats_enabled,
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
        Config::Json
        | Config::JsonAll
        | Config::Default
        | Config::Events
        | Config::JsonPerEvent => {
            let mut c = Command::new(&bins.tracer);
            match config {
                Config::Json => {
                    c.arg("--json");
                }
                Config::JsonPerEvent => {
                    c.args(["--json", "--per-event"]);
                }
                Config::JsonAll => {
                    c.args(["--json", "--view", "all"]);
                }
                Config::Events => {
                    c.args(["--view", "events", "--json"]);
                }
                _ => {}
            }
            c.stdout(Stdio::null());
            (c, None)
        }
        Config::Bpftrace | Config::BpftraceLife => {
            let bt = bins
                .bpftrace
                .as_ref()
                .ok_or_else(|| anyhow!("bpftrace missing"))?;
            let out = bpftrace_output();
            let file =
                fs::File::create(&out).with_context(|| format!("creating {}", out.display()))?;
            let mut c = Command::new(bt);
            let script = if config == Config::Bpftrace {
                BPFTRACE_SCRIPT
            } else {
                c.env("BPFTRACE_MAP_KEYS_MAX", BPFTRACE_MAP_KEYS_MAX);
                BPFTRACE_LIFE_SCRIPT
            };
            c.args(["-e", script]).stdout(file);
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
            Config::Bpftrace | Config::BpftraceLife => {
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

/// VmRSS of `pid` once a second (the first at once) until `stop`.
fn sample_rss(pid: u32, stop: Arc<AtomicBool>) -> thread::JoinHandle<Vec<u64>> {
    thread::spawn(move || {
        let start = Instant::now();
        let mut samples = Vec::new();
        for n in 1u32.. {
            if let Some(kb) = stats::vm_rss_kb(pid) {
                samples.push(kb);
            }
            let next = start + Duration::from_secs(n.into());
            while Instant::now() < next {
                if stop.load(Ordering::Relaxed) {
                    return samples;
                }
                thread::sleep(Duration::from_millis(20).min(next - Instant::now()));
            }
        }
        samples
    })
}

/// The storm under a tracer; also returns bpf_stats_enabled as read at the end of
/// the storm.
fn traced(
    bins: &Bins,
    threads: u32,
    spec: &RunSpec,
) -> Result<(StormResult, TracerResult, Option<bool>)> {
    let config = spec.config;
    let mut t = spawn_tracer(bins, config)?;
    let pid = t.child.id();
    let (ready_s, self_ready_ms, mut lines) = wait_ready(&mut t, config)?;
    if config.is_bpftrace() {
        // "Attaching" comes just before the attach itself.
        thread::sleep(Duration::from_millis(200));
    }
    let cpu_ready = stats::proc_stat(pid, bins.clk_tck)
        .map(|s| s.cpu_s)
        .unwrap_or(0.0);
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = (spec.phase == Phase::Soak).then(|| sample_rss(pid, stop.clone()));
    let storm_res = storm(bins, threads, spec.close, spec.secs);
    stop.store(true, Ordering::Relaxed);
    let rss_samples_kb = sampler
        .map(|h| h.join().unwrap_or_default())
        .unwrap_or_default();
    let bpf_stats_enabled = stats::bpf_stats_enabled();
    // While the tracer still holds its programs: their statistics.
    let (progs, foreign) = bins
        .bpftool
        .as_deref()
        .map(|b| stats::bpf_snapshot(b, Some(pid)))
        .transpose()
        .unwrap_or_else(|e| {
            eprintln!("bench: warning: bpf program statistics: {e:#}");
            None
        })
        .unwrap_or_default();
    let mut hwm_kb = stats::vm_hwm_kb(pid).unwrap_or(0);
    capture(Command::new("kill").args(["-INT", &pid.to_string()]))?;
    // Until the tracer is a zombie: then its CPU times are final and not yet reaped.
    let deadline = Instant::now() + EXIT_TIMEOUT;
    let mut cpu_total_s = cpu_ready;
    loop {
        if let Some(kb) = stats::vm_hwm_kb(pid) {
            hwm_kb = hwm_kb.max(kb);
        }
        match stats::proc_stat(pid, bins.clk_tck) {
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

    let (events, lost) = if config.is_bpftrace() {
        let out = t.output.as_ref().context("bpftrace output")?;
        let (events, lost) = count_bpftrace(out)?;
        (Some(events), Some(lost))
    } else {
        tracer_counts(&lines)
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
            rss_samples_kb,
            foreign_progs: foreign,
        },
        bpf_stats_enabled,
    ))
}

/// Events and lost events from tcp-trace's summary line on stderr:
/// "tcp-trace: N events, M lost, K filtered in the kernel, ..." (the last one).
fn tracer_counts(lines: &[String]) -> (Option<u64>, Option<u64>) {
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
        } else if !buf.starts_with(b"Attaching ") && !buf.trim_ascii().is_empty() {
            events += 1;
        }
    }
    Ok((events, lost))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storm_line() {
        let line = r#"{"close":"fin","threads":2,"secs":5.000213,"connections":71234,"rate":14245.8,"connect_errors":0,"accepted":71234}"#;
        let s: StormResult = serde_json::from_str(line).unwrap();
        assert_eq!(s.connections, 71234);
        assert_eq!(s.secs, 5.000213);
        assert_eq!(s.rate, 14245.8);
        assert_eq!(s.errors, 0);
        let j = serde_json::to_value(&s).unwrap();
        assert_eq!(j["storm_secs"], 5.000213);
        assert_eq!(j["connect_errors"], 0);
        assert!(serde_json::from_str::<StormResult>(r#"{"secs":1}"#).is_err());
    }

    /// The report's run: the storm's fields, then the tracer's, in this order.
    #[test]
    fn run_layout() {
        let run = Run {
            round: 1,
            close: Close::Rst,
            phase: Phase::Ratio,
            config: Config::Json,
            storm: StormResult {
                connections: 1000,
                secs: 5.0,
                rate: 200.5,
                errors: 1,
            },
            foreign_progs: 2,
            tracer: Some(TracerResult {
                ready_s: 0.05,
                self_ready_ms: None,
                cpu_s: 0.5,
                cpu_total_s: 0.75,
                hwm_kb: 20480,
                events: Some(5000),
                lost: Some(0),
                exit_code: Some(0),
                progs: vec![ProgStat {
                    id: 7,
                    name: "inet_sock_set_s".into(),
                    run_time_ns: 100000,
                    run_cnt: 400,
                }],
                rss_samples_kb: Vec::new(),
                foreign_progs: 2,
            }),
            bpf_stats_enabled: Some(false),
        };
        assert_eq!(
            serde_json::to_string(&run).unwrap(),
            r#"{"round":1,"close":"rst","phase":"ratio","config":"json","connections":1000,"storm_secs":5.0,"rate":200.5,"connect_errors":1,"foreign_progs":2,"bpf_stats_enabled":false,"ready_s":0.05,"self_ready_ms":null,"cpu_s":0.5,"cpu_total_s":0.75,"vm_hwm_kb":20480,"events":5000,"lost":0,"exit_code":0,"bpf_progs":[{"id":7,"name":"inet_sock_set_s","run_time_ns":100000,"run_cnt":400}]}"#
        );
        let untraced = Run {
            tracer: None,
            config: Config::Untraced,
            ..run
        };
        assert_eq!(
            serde_json::to_string(&untraced).unwrap(),
            r#"{"round":1,"close":"rst","phase":"ratio","config":"untraced","connections":1000,"storm_secs":5.0,"rate":200.5,"connect_errors":1,"foreign_progs":2,"bpf_stats_enabled":false}"#
        );
    }

    #[test]
    fn tracer_summary_line() {
        let lines: Vec<String> = [
            "tcp-trace: 11 hooks attached in 57 ms; Ctrl-C to stop",
            "tcp-trace: 120 events, 3 lost, 0 filtered in the kernel, 0 skipped",
            "tcp-trace: 123456 events, 0 lost, 7 filtered in the kernel, 0 skipped",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(tracer_counts(&lines), (Some(123456), Some(0)));
        assert_eq!(tracer_counts(&lines[..1]), (None, None));
    }

    #[test]
    fn bpftrace_output_counts() {
        let path =
            std::env::temp_dir().join(format!("xtask-bench-test-{}.out", std::process::id()));
        fs::write(
            &path,
            "Attaching 2 probes...\n1 a 127.0.0.1 1 127.0.0.1 2 10\nLost 17 events\n\
             2 b 127.0.0.1 2 127.0.0.1 1 12\nLost 3 events\n\n\n",
        )
        .unwrap();
        let counts = count_bpftrace(&path);
        fs::remove_file(&path).unwrap();
        assert_eq!(counts.unwrap(), (2, 20));
    }
}
