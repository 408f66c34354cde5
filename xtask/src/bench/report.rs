//! The report: medians over rounds per close, the statistics runs' costs, the
//! MET/MISSED verdicts (`targets`), the table, and the JSON written to
//! `target/bench/` (and with `--json`, to stdout).
use std::{fs, path::Path, process::Command, thread, time::UNIX_EPOCH};

use serde::Serialize;

use super::{
    BenchArgs, Bins, Close, Config,
    rounds::{Phase, Run, TracerResult},
    stats::{self, SetStateCost},
    targets::{self, RssTrend, Targets, Verdict},
};
use crate::cmd::capture;

/// The JSON report, in this order.
#[derive(Serialize)]
pub(super) struct Report<'a> {
    pub(super) unix_time: u64,
    pub(super) source: SourceInfo,
    pub(super) machine: MachineInfo,
    pub(super) machine_after: MachineInfo,
    pub(super) params: Params<'a>,
    /// Per close: summaries, verdicts, peers.
    pub(super) closes: &'a [CloseReport],
    pub(super) runs: &'a [Run],
}

#[derive(Serialize)]
pub(super) struct Params<'a> {
    pub(super) secs: f64,
    pub(super) rounds: u32,
    pub(super) stats_secs: f64,
    pub(super) threads: u32,
    pub(super) closes: Vec<Close>,
    pub(super) configs: &'a [Config],
    pub(super) soak_secs: Option<f64>,
    pub(super) soak_config: Option<Config>,
    pub(super) bpftrace_script: &'a str,
    pub(super) bpftrace_life_script: &'a str,
    pub(super) bpftrace_map_keys_max: &'a str,
    pub(super) targets: Targets,
}

/// Which code was measured: the commit, whether the tree was dirty, when the
/// tracer binary was built.
#[derive(Serialize)]
pub(super) struct SourceInfo {
    commit: String,
    dirty_files: usize,
    tracer_built_unix: u64,
}

pub(super) fn source_info(root: &Path, bins: &Bins) -> SourceInfo {
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
    SourceInfo {
        commit: git(&["rev-parse", "HEAD"]),
        dirty_files: git(&["status", "--porcelain"])
            .lines()
            .filter(|l| !l.trim().is_empty())
            .count(),
        tracer_built_unix: built,
    }
}

/// The load before and after; the rest only before (`with_static`).
#[derive(Serialize)]
pub(super) struct MachineInfo {
    loadavg: String,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    fixed: Option<MachineStatic>,
}

#[derive(Serialize)]
struct MachineStatic {
    kernel: String,
    cpu_model: String,
    cpus: usize,
    mem_total_kb: u64,
    tcp_tw_reuse: String,
}

pub(super) fn machine_info(with_static: bool) -> MachineInfo {
    let read = |p: &str| fs::read_to_string(p).unwrap_or_default().trim().to_string();
    let fixed = with_static.then(|| {
        let cpuinfo = read("/proc/cpuinfo");
        let model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            .unwrap_or_default();
        let cpus = thread::available_parallelism().map_or(0, |n| n.get());
        let mem_kb = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        MachineStatic {
            kernel: read("/proc/sys/kernel/osrelease"),
            cpu_model: model,
            cpus,
            mem_total_kb: mem_kb,
            tcp_tw_reuse: read("/proc/sys/net/ipv4/tcp_tw_reuse"),
        }
    });
    MachineInfo {
        loadavg: read("/proc/loadavg"),
        fixed,
    }
}

// ---------------------------------------------------------------------------
// Summaries.

pub(super) fn median(mut v: Vec<f64>) -> Option<f64> {
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

/// One configuration of one close: rate, ratio, lost, CPU, RSS and ready over the
/// rounds (bpf_stats off), the programs' costs from its statistics run (bpf_stats
/// on); serialised in the report's `closes[].summary`.
#[derive(Debug, Serialize)]
pub(super) struct Summary {
    pub(super) config: Config,
    pub(super) close: Close,
    pub(super) runs: usize,
    pub(super) stats_runs: usize,
    /// Runs during which other processes had tracing programs loaded.
    #[serde(rename = "disturbed_runs")]
    pub(super) disturbed: usize,
    pub(super) rate_median: f64,
    pub(super) ratio_median: Option<f64>,
    pub(super) ratio_min: Option<f64>,
    pub(super) ratio_max: Option<f64>,
    /// Rate over the untraced rate of the same round, per round.
    pub(super) ratios: Vec<f64>,
    pub(super) connections: u64,
    pub(super) lost_total: Option<u64>,
    pub(super) events_per_conn: Option<f64>,
    /// The tracer's utime + stime from ready to exit, per connection (median over
    /// rounds), in µs and (as earlier reports had it) s per 1000 connections.
    pub(super) cpu_us_per_conn: Option<f64>,
    #[serde(rename = "cpu_s_per_1k_conn")]
    pub(super) cpu_s_per_1k: Option<f64>,
    /// VmHWM, the largest over all its runs.
    #[serde(rename = "peak_rss_mb")]
    pub(super) hwm_mb_max: Option<f64>,
    pub(super) ready_s_median: Option<f64>,
    pub(super) ready_s_max: Option<f64>,
    pub(super) self_ready_ms_median: Option<f64>,
    /// The programs on sock:inet_sock_set_state, from the statistics run.
    pub(super) set_state: Option<SetStateCost>,
    /// All the tracer's programs' run_time_ns per connection, statistics run.
    pub(super) bpf_ns_per_conn: Option<f64>,
    /// Lost events in the statistics run (not in `lost_total`).
    pub(super) stats_lost: Option<u64>,
}

impl Summary {
    /// `runs` are one close's.
    pub(super) fn of(config: Config, close: Close, runs: &[Run]) -> Summary {
        let of_phase = |phase: Phase| -> Vec<&Run> {
            runs.iter()
                .filter(|r| r.config == config && r.close == close && r.phase == phase)
                .collect()
        };
        let mine = of_phase(Phase::Ratio);
        let stats_runs = of_phase(Phase::Stats);
        let disturbed = mine
            .iter()
            .chain(&stats_runs)
            .filter(|r| r.foreign_progs > 0)
            .count();
        let ratios: Vec<f64> = mine
            .iter()
            .filter_map(|r| {
                let base = runs.iter().find(|b| {
                    b.round == r.round
                        && b.close == close
                        && b.phase == Phase::Ratio
                        && b.config == Config::Untraced
                })?;
                (base.storm.rate > 0.0).then(|| r.storm.rate / base.storm.rate)
            })
            .collect();
        let (ratio_min, ratio_max) = min_max(&ratios).unzip();
        let traced: Vec<&TracerResult> = mine.iter().filter_map(|r| r.tracer.as_ref()).collect();
        let all_traced: Vec<&TracerResult> = mine
            .iter()
            .chain(&stats_runs)
            .filter_map(|r| r.tracer.as_ref())
            .collect();
        let connections: u64 = mine.iter().map(|r| r.storm.connections).sum();
        let some = |v: Vec<f64>| if traced.is_empty() { None } else { median(v) };
        let sum_of = |ts: &[&TracerResult], f: fn(&TracerResult) -> Option<u64>| {
            (!ts.is_empty())
                .then(|| ts.iter().map(|t| f(t)).sum::<Option<u64>>())
                .flatten()
        };
        let lost_total = sum_of(&traced, |t| t.lost);
        let events = sum_of(&traced, |t| t.events);
        let cpu_us: Vec<f64> = mine
            .iter()
            .filter_map(|r| {
                let t = r.tracer.as_ref()?;
                (r.storm.connections > 0).then(|| t.cpu_s * 1e6 / r.storm.connections as f64)
            })
            .collect();
        let cpu_us_per_conn = some(cpu_us);
        let stats_traced: Vec<&TracerResult> = stats_runs
            .iter()
            .filter_map(|r| r.tracer.as_ref())
            .collect();
        let stats_conns: u64 = stats_runs.iter().map(|r| r.storm.connections).sum();
        let stats_ns: u64 = stats_traced
            .iter()
            .flat_map(|t| &t.progs)
            .map(|p| p.run_time_ns)
            .sum();
        Summary {
            config,
            close,
            runs: mine.len(),
            stats_runs: stats_runs.len(),
            disturbed,
            rate_median: median(mine.iter().map(|r| r.storm.rate).collect()).unwrap_or(0.0),
            ratio_median: median(ratios.clone()),
            ratio_min,
            ratio_max,
            ratios,
            connections,
            lost_total,
            events_per_conn: events
                .filter(|_| connections > 0)
                .map(|e| e as f64 / connections as f64),
            cpu_us_per_conn,
            cpu_s_per_1k: cpu_us_per_conn.map(|u| u / 1000.0),
            hwm_mb_max: all_traced
                .iter()
                .map(|t| t.hwm_kb as f64 / 1024.0)
                .reduce(f64::max),
            ready_s_median: some(traced.iter().map(|t| t.ready_s).collect()),
            ready_s_max: traced.iter().map(|t| t.ready_s).reduce(f64::max),
            self_ready_ms_median: median(traced.iter().filter_map(|t| t.self_ready_ms).collect()),
            set_state: stats::set_state_cost(stats_traced.iter().flat_map(|t| &t.progs)),
            bpf_ns_per_conn: (stats_ns > 0 && stats_conns > 0)
                .then(|| stats_ns as f64 / stats_conns as f64),
            stats_lost: sum_of(&stats_traced, |t| t.lost),
        }
    }
}

/// The soak's run in short, with its RSS trend.
#[derive(Serialize)]
pub(super) struct SoakSummary {
    config: Config,
    secs: f64,
    connections: u64,
    rate: f64,
    events: Option<u64>,
    lost: Option<u64>,
    cpu_us_per_conn: Option<f64>,
    ready_s: f64,
    peak_rss_mb: f64,
    rss: Option<RssTrend>,
}

impl SoakSummary {
    fn of(run: &Run) -> Option<SoakSummary> {
        let t = run.tracer.as_ref().filter(|_| run.phase == Phase::Soak)?;
        Some(SoakSummary {
            config: run.config,
            secs: run.storm.secs,
            connections: run.storm.connections,
            rate: run.storm.rate,
            events: t.events,
            lost: t.lost,
            cpu_us_per_conn: (run.storm.connections > 0)
                .then(|| t.cpu_s * 1e6 / run.storm.connections as f64),
            ready_s: t.ready_s,
            peak_rss_mb: t.hwm_kb as f64 / 1024.0,
            rss: targets::rss_trend(&t.rss_samples_kb),
        })
    }
}

/// One close: the summaries and verdicts of its rounds, or its soak.
#[derive(Serialize)]
pub(super) struct CloseReport {
    pub(super) close: Close,
    pub(super) summary: Vec<Summary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) soak: Option<SoakSummary>,
    pub(super) targets: Vec<Verdict>,
    pub(super) peers: Vec<String>,
}

impl CloseReport {
    /// `runs` are this close's.
    pub(super) fn of(close: Close, args: &BenchArgs, runs: &[Run]) -> CloseReport {
        if let Some(run) = runs.iter().find(|r| r.phase == Phase::Soak) {
            return CloseReport {
                close,
                summary: Vec::new(),
                soak: SoakSummary::of(run),
                targets: targets::soak_verdicts(run),
                peers: Vec::new(),
            };
        }
        let summary: Vec<Summary> = args
            .configs
            .iter()
            .map(|&c| Summary::of(c, close, runs))
            .collect();
        CloseReport {
            close,
            targets: targets::verdicts(&summary),
            peers: targets::peer_lines(&summary),
            soak: None,
            summary,
        }
    }
}

pub(super) fn print_close(args: &BenchArgs, c: &CloseReport, runs: &[Run]) {
    if let Some(s) = &c.soak {
        let storm = runs
            .iter()
            .find(|r| r.phase == Phase::Soak && r.close == c.close);
        println!(
            "soak: {}, default ring, {} client threads, close {}, {:.0} s: {} connections ({:.0} conn/s), {} events, cpu {} µs/conn, ready {:.3} s, VmHWM {:.1} MB",
            s.config.label(),
            args.threads,
            c.close.key(),
            s.secs,
            s.connections,
            s.rate,
            s.events.map_or("?".into(), |e| e.to_string()),
            s.cpu_us_per_conn.map_or("?".into(), |u| format!("{u:.2}")),
            s.ready_s,
            s.peak_rss_mb,
        );
        if let Some(t) = storm.and_then(|r| r.tracer.as_ref()) {
            let mb: Vec<String> = t
                .rss_samples_kb
                .iter()
                .map(|kb| format!("{:.1}", *kb as f64 / 1024.0))
                .collect();
            println!("soak: VmRSS MB, one a second: {}", mb.join(" "));
        }
        if let Some(n) = storm.map(|r| r.foreign_progs).filter(|&n| n > 0) {
            println!("warning: other processes had {n} tracing programs loaded during the soak");
        }
        print_verdicts(&c.targets);
        return;
    }
    let untraced = c
        .summary
        .iter()
        .find(|s| s.config == Config::Untraced)
        .map(|s| s.rate_median);
    println!(
        "storm: {} client threads, close {}, {} s per run, {} rounds, bpf_stats off (medians over rounds; ratio = paired with the untraced run of the same round{})",
        args.threads,
        c.close.key(),
        args.secs,
        args.rounds,
        untraced.map_or(String::new(), |u| format!(": untraced {u:.0} conn/s"))
    );
    println!(
        "{:<19} {:>8} {:>21} {:>8} {:>7} {:>9} {:>7} {:>13} {:>7} {:>8}",
        "config",
        "conn/s",
        "ratio (min-max)",
        "lost",
        "ev/conn",
        "cpu µs/c",
        "RSS MB",
        "ready s (max)",
        "ns/hit",
        "bpf µs/c"
    );
    let opt = |v: Option<f64>, prec: usize| v.map_or("-".to_string(), |x| format!("{x:.prec$}"));
    for s in &c.summary {
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
            opt(s.cpu_us_per_conn, 2),
            opt(s.hwm_mb_max, 1),
            ready,
            opt(s.set_state.as_ref().map(|c| c.ns_per_hit), 0),
            opt(s.bpf_ns_per_conn.map(|n| n / 1000.0), 2),
        );
    }
    println!(
        "ns/hit: run_time_ns / run_cnt of the busiest program on sock:inet_sock_set_state; \
         bpf µs/c: all the tracer's programs per connection (both from a {} s run with bpf_stats on)",
        args.stats_secs
    );
    for s in c.summary.iter().filter(|s| s.disturbed > 0) {
        println!(
            "warning: {} of {} {} runs had other processes' tracing programs loaded",
            s.disturbed,
            s.runs + s.stats_runs,
            s.config.label()
        );
    }
    let stats_on = runs
        .iter()
        .filter(|r| r.close == c.close && r.phase == Phase::Ratio)
        .filter(|r| r.bpf_stats_enabled == Some(true))
        .count();
    if stats_on > 0 {
        println!(
            "warning: {stats_on} ratio runs ended with kernel.bpf_stats_enabled=1 (set by another process?)"
        );
    }
    for p in &c.peers {
        println!("peer: {p}");
    }
    print_verdicts(&c.targets);
}

fn print_verdicts(verdicts: &[Verdict]) {
    for v in verdicts {
        println!("{} {}: {}", v.mark(), v.what, v.measured);
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
    fn report_names_configs_as_the_command_line_does() {
        use clap::ValueEnum;
        for c in Config::value_variants() {
            let name = c.to_possible_value().unwrap().get_name().to_string();
            assert_eq!(serde_json::to_value(c).unwrap(), name);
        }
        for c in super::super::CloseArg::value_variants() {
            let name = c.to_possible_value().unwrap().get_name().to_string();
            for close in c.closes() {
                assert_eq!(serde_json::to_value(close).unwrap(), close.key());
            }
            if let [one] = c.closes()[..] {
                assert_eq!(one.key(), name);
            }
        }
    }
}
