//! `cargo xtask bench`: paired, alternating throughput/overhead benchmark
//! (issue #5, docs/performance.md; docs/kernel-facts.md, "A ring-buffer wakeup costs more
//! than the event").
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
//!
//! The module is split by job: this file holds the arguments and runs the rounds in
//! order; `rounds` runs one untraced or traced storm; `stats` samples `/proc` and
//! the bpf statistics; `report` summarises, writes the JSON report and prints the
//! table with the MET/MISSED verdicts.
use std::{
    fs,
    path::PathBuf,
    process::Command,
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::cmd::{self, capture, workspace_root};

use self::{
    report::{Report, Summary},
    rounds::Run,
    stats::BpfStats,
};

mod report;
mod rounds;
mod stats;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
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

/// The bpftrace side of the comparison: the same tracepoint, one line per event
/// with what our events carry (time, pid, comm, both ends, both states).
const BPFTRACE_SCRIPT: &str = r#"tracepoint:sock:inet_sock_set_state /args->protocol == 6/ { printf("%llu %d %s %s:%d %s:%d %d %d\n", nsecs, pid, comm, ntop(args->saddr), args->sport, ntop(args->daddr), args->dport, args->oldstate, args->newstate); }"#;

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
    let machine = report::machine_info(true);
    let stats = BpfStats::new()?;

    // Warm up (page cache, TIME_WAIT population) with a short untraced storm.
    let warm = args.secs.min(2.0);
    eprintln!("bench: warm-up, {warm} s untraced");
    rounds::storm(&bins, args, warm)?;

    let mut runs: Vec<Run> = Vec::new();
    for round in 1..=args.rounds {
        for &config in &args.configs {
            let run = rounds::run_one(&bins, args, config, round, &stats)?;
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
    let verdicts = report::verdicts(&summaries);
    let report = Report {
        unix_time: started,
        source: report::source_info(&root, &bins),
        machine,
        machine_after: report::machine_info(false),
        params: report::Params {
            secs: args.secs,
            rounds: args.rounds,
            threads: args.threads,
            close: args.close,
            configs: &args.configs,
            bpftrace_script: BPFTRACE_SCRIPT,
        },
        summary: &summaries,
        targets: &verdicts,
        runs: &runs,
    };
    let path = out_dir.join(format!("bench-{started}.json"));
    let pretty = serde_json::to_string_pretty(&report).context("encoding the report")?;
    fs::write(&path, format!("{pretty}\n"))
        .with_context(|| format!("writing {}", path.display()))?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&report).context("encoding the report")?
        );
    } else {
        report::print_table(args, &summaries, &verdicts);
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
