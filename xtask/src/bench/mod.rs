//! `cargo xtask bench`: paired, alternating throughput/overhead benchmark
//! (issues #5 and #13, docs/performance.md; docs/kernel-facts.md, "A ring-buffer
//! wakeup costs more than the event").
//!
//! For each close (`--close fin|rst|both`), each round runs every configuration once,
//! in the same order (untraced, `tcp-trace --json`, `tcp-trace`, `tcp-trace --view
//! events --json`, all `> /dev/null`, bpftrace printf, bpftrace-life), each time under
//! the same loopback connection storm (`tcp-trace-storm`), with
//! `kernel.bpf_stats_enabled=0`. Rates are compared within a round (paired) and
//! summarised by medians over rounds, which cancels most of the noise of a shared
//! machine. For each traced run it also measures the tracer's CPU seconds (from
//! `/proc/PID/stat`, from "ready" to exit), its peak RSS (`VmHWM`, read until the
//! process is a zombie), the time from spawn to ready and lost events. After the
//! rounds, one short run per traced configuration with `kernel.bpf_stats_enabled=1`
//! gives the programs' run_time_ns and run_cnt (`bpftool prog show --json`): ns per
//! hit of the busiest program on `sock:inet_sock_set_state`, BPF time per
//! connection. `--soak SECS` runs one tracer for SECS instead, its RSS sampled every
//! second.
//!
//! The module is split by job: this file holds the arguments and runs the phases in
//! order; `rounds` runs one untraced or traced storm; `stats` samples `/proc` and
//! the bpf statistics; `report` summarises, writes the JSON report and prints the
//! tables; `targets` holds issue #13's figures and the MET/MISSED verdicts.
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
    report::Report,
    rounds::{Phase, Run},
    stats::BpfStats,
};

mod report;
mod rounds;
mod stats;
mod targets;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Config {
    /// The storm alone.
    Untraced,
    /// `tcp-trace --json > /dev/null`: connections and the summary (JSON schema 2).
    Json,
    /// `tcp-trace --json --view all > /dev/null`: every event line too (what `--json`
    /// printed before JSON schema 2), for a before/after beside `json`.
    JsonAll,
    /// `tcp-trace > /dev/null` (the default ladder view).
    Default,
    /// `tcp-trace --json --per-event > /dev/null`: the per-event kernel design (the
    /// one before issue #13, and the one of 5.10 and the raw/classic attach paths),
    /// for a before/after beside `json`.
    JsonPerEvent,
    /// `tcp-trace --view events --json > /dev/null`: one line per event.
    Events,
    /// bpftrace, one printf line per `sock:inet_sock_set_state` hit.
    Bpftrace,
    /// bpftrace in the style of bcc's tcplife: one line per connection at close.
    BpftraceLife,
}

impl Config {
    fn label(self) -> &'static str {
        match self {
            Config::Untraced => "untraced",
            Config::Json => "tcp-trace --json",
            Config::JsonAll => "--json --view all",
            Config::Default => "tcp-trace (ladder)",
            Config::JsonPerEvent => "--json --per-event",
            Config::Events => "tcp-trace events",
            Config::Bpftrace => "bpftrace printf",
            Config::BpftraceLife => "bpftrace-life",
        }
    }

    fn is_ours(self) -> bool {
        matches!(
            self,
            Config::Json
                | Config::JsonAll
                | Config::Default
                | Config::Events
                | Config::JsonPerEvent
        )
    }

    fn is_bpftrace(self) -> bool {
        matches!(self, Config::Bpftrace | Config::BpftraceLife)
    }

    /// The views that aggregate (a line per connection or per conversation, not per
    /// event): issue #13's CPU target and bpftrace-life as the peer apply to them.
    fn is_aggregated(self) -> bool {
        matches!(self, Config::Json | Config::Default)
    }
}

/// The close a storm uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
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

/// `--close`: one of the two, or both one after the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CloseArg {
    /// The client closes with a FIN.
    Fin,
    /// The client closes with a reset (SO_LINGER 0).
    Rst,
    /// The whole bench with FIN closes, then again with resets; each reported.
    Both,
}

impl BenchArgs {
    /// The closes to run, in order: `--close`, else both (one for a soak: fin).
    fn closes(&self) -> Vec<Close> {
        let default = if self.soak.is_some() {
            CloseArg::Fin
        } else {
            CloseArg::Both
        };
        self.close.unwrap_or(default).closes()
    }
}

impl CloseArg {
    fn closes(self) -> Vec<Close> {
        match self {
            CloseArg::Fin => vec![Close::Fin],
            CloseArg::Rst => vec![Close::Rst],
            CloseArg::Both => vec![Close::Fin, Close::Rst],
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Seconds of storm per run.
    #[arg(long, default_value_t = 5.0)]
    secs: f64,
    /// Rounds; each round runs every configuration once, in order
    /// (`kernel.bpf_stats_enabled=0`).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000))]
    rounds: u32,
    /// Seconds of storm of the statistics run that follows the rounds, one per traced
    /// configuration, with `kernel.bpf_stats_enabled=1` (ns per hit, BPF time per
    /// connection); 0: none.
    #[arg(long, default_value_t = 2.0)]
    stats_secs: f64,
    /// Print the result as JSON on stdout instead of the table.
    #[arg(long)]
    json: bool,
    /// Client threads of the storm (as many server threads accept).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=256))]
    threads: u32,
    /// How the storm's clients close their connections; `both`: the bench once per
    /// close, each reported. Default: both; with --soak, fin.
    #[arg(long, value_enum)]
    close: Option<CloseArg>,
    /// Configurations to run, in this order each round.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "untraced,json,default,events,bpftrace,bpftrace-life"
    )]
    configs: Vec<Config>,
    /// Instead of the rounds: one tracer (`--soak-config`, default ring) under the
    /// storm for SECS seconds (600: issue #13's ten minutes), its RSS sampled every
    /// second; checks 0 lost, flat RSS after a 10 s warm-up, peak RSS and ready.
    #[arg(long, value_name = "SECS")]
    soak: Option<f64>,
    /// The tracer of `--soak`.
    #[arg(long, value_enum, default_value_t = Config::Json)]
    soak_config: Config,
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

/// The aggregated peer, in the style of bcc's tcplife (tracepoint version): birth
/// time on every state below FIN_WAIT1 (ESTABLISHED 1, SYN_SENT 2, SYN_RECV 3), pid
/// and comm on SYN_SENT and LAST_ACK (9), and at TCP_CLOSE (7) one line per socket
/// (pid, comm, both ends, lifetime in µs; the current task when none was kept),
/// after which the socket's entries are deleted. `END` empties the maps so that
/// bpftrace does not print them at exit.
const BPFTRACE_LIFE_SCRIPT: &str = r#"tracepoint:sock:inet_sock_set_state /args->protocol == 6/ {
  $sk = args->skaddr;
  if (args->newstate < 4) { @birth[$sk] = nsecs; }
  if (args->newstate == 2 || args->newstate == 9) { @pid[$sk] = pid; @comm[$sk] = comm; }
  if (args->newstate == 7) {
    $b = @birth[$sk];
    if ($b != 0) {
      $p = @pid[$sk];
      if ($p == 0) {
        printf("%d %s %s %d %s %d %d\n", pid, comm, ntop(args->saddr), args->sport, ntop(args->daddr), args->dport, (nsecs - $b) / 1000);
      } else {
        printf("%d %s %s %d %s %d %d\n", $p, @comm[$sk], ntop(args->saddr), args->sport, ntop(args->daddr), args->dport, (nsecs - $b) / 1000);
      }
    }
    delete(@birth[$sk]); delete(@pid[$sk]); delete(@comm[$sk]);
  }
}
END { clear(@birth); clear(@pid); clear(@comm); }
"#;

/// Room in bpftrace-life's maps (bpftrace's default is 4096 keys): the sockets
/// open at a time under the storm stay far below it.
const BPFTRACE_MAP_KEYS_MAX: &str = "65536";

pub fn run(args: &BenchArgs) -> Result<()> {
    if !(args.secs.is_finite() && args.secs > 0.0 && args.secs <= 3600.0) {
        bail!("--secs must be in (0, 3600]");
    }
    if !(args.stats_secs.is_finite() && (0.0..=3600.0).contains(&args.stats_secs)) {
        bail!("--stats-secs must be in [0, 3600]");
    }
    if let Some(s) = args.soak
        && !(s.is_finite() && s > 0.0 && s <= 86400.0)
    {
        bail!("--soak must be in (0, 86400]");
    }
    if args.soak.is_some() && !args.soak_config.is_ours() {
        bail!("--soak-config must be a tcp-trace configuration (json, default, events)");
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
    if args.soak.is_none()
        && args.configs.iter().any(|c| c.is_bpftrace())
        && bins.bpftrace.is_none()
    {
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
    // Off for the ratio rounds and the soak, whatever it was; restored when dropped.
    stats.set(false)?;

    let mut runs: Vec<Run> = Vec::new();
    let mut closes: Vec<report::CloseReport> = Vec::new();
    for close in args.closes() {
        // Warm up (page cache, TIME_WAIT population) with a short untraced storm.
        let warm = args.secs.min(2.0);
        eprintln!("bench: close {}: warm-up, {warm} s untraced", close.key());
        rounds::storm(&bins, args.threads, close, warm)?;
        let first = runs.len();
        if let Some(secs) = args.soak {
            let spec = RunSpec {
                round: 1,
                close,
                phase: Phase::Soak,
                config: args.soak_config,
                secs,
            };
            eprintln!(
                "bench: soak, {} for {secs} s, RSS every second",
                args.soak_config.label()
            );
            let run = rounds::run_one(&bins, args, &spec, &stats)?;
            eprintln!("bench: soak {}", run.progress());
            runs.push(run);
        } else {
            for round in 1..=args.rounds {
                for &config in &args.configs {
                    let spec = RunSpec {
                        round,
                        close,
                        phase: Phase::Ratio,
                        config,
                        secs: args.secs,
                    };
                    let run = rounds::run_one(&bins, args, &spec, &stats)?;
                    eprintln!(
                        "bench: close {} round {round}/{} {}",
                        close.key(),
                        args.rounds,
                        run.progress()
                    );
                    runs.push(run);
                }
            }
            if args.stats_secs > 0.0 {
                for &config in args.configs.iter().filter(|&&c| c != Config::Untraced) {
                    let spec = RunSpec {
                        round: 1,
                        close,
                        phase: Phase::Stats,
                        config,
                        secs: args.stats_secs,
                    };
                    let run = rounds::run_one(&bins, args, &spec, &stats)?;
                    eprintln!("bench: close {} bpf_stats {}", close.key(), run.progress());
                    runs.push(run);
                }
            }
        }
        closes.push(report::CloseReport::of(close, args, &runs[first..]));
    }
    drop(stats);

    let report = Report {
        unix_time: started,
        source: report::source_info(&root, &bins),
        machine,
        machine_after: report::machine_info(false),
        params: report::Params {
            secs: args.secs,
            rounds: args.rounds,
            stats_secs: args.stats_secs,
            threads: args.threads,
            closes: args.closes(),
            configs: &args.configs,
            soak_secs: args.soak,
            soak_config: args.soak.map(|_| args.soak_config),
            bpftrace_script: BPFTRACE_SCRIPT,
            bpftrace_life_script: BPFTRACE_LIFE_SCRIPT,
            bpftrace_map_keys_max: BPFTRACE_MAP_KEYS_MAX,
            targets: targets::TARGETS,
        },
        closes: &closes,
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
        for c in &closes {
            report::print_close(args, c, &runs);
        }
    }
    eprintln!("bench: wrote {}", path.display());
    Ok(())
}

/// What one run is: which close, phase and configuration, and for how long.
struct RunSpec {
    round: u32,
    close: Close,
    phase: Phase,
    config: Config,
    secs: f64,
}

struct Bins {
    tracer: PathBuf,
    storm: PathBuf,
    bpftrace: Option<PathBuf>,
    bpftool: Option<PathBuf>,
    clk_tck: f64,
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn closes(args: &[&str]) -> Vec<Close> {
        let argv = std::iter::once("bench").chain(args.iter().copied());
        Cli::try_parse_from(argv).unwrap().bench.closes()
    }

    /// Both closes by default; one (FIN) for a soak unless --close says otherwise.
    #[test]
    fn default_closes() {
        assert_eq!(closes(&[]), [Close::Fin, Close::Rst]);
        assert_eq!(closes(&["--close", "rst"]), [Close::Rst]);
        assert_eq!(closes(&["--soak", "600"]), [Close::Fin]);
        assert_eq!(
            closes(&["--soak", "600", "--close", "both"]),
            [Close::Fin, Close::Rst]
        );
        let cli = Cli::try_parse_from(["bench", "--configs", "untraced,events,bpftrace-life"]);
        assert_eq!(
            cli.unwrap().bench.configs,
            [Config::Untraced, Config::Events, Config::BpftraceLife]
        );
    }
}
