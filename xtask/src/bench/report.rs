//! The report: medians over rounds, the MET/MISSED verdicts against the targets
//! of issue #5, the table, and the JSON written to `target/bench/` (and with
//! `--json`, to stdout).
use std::{fs, path::Path, process::Command, thread, time::UNIX_EPOCH};

use serde::Serialize;

use super::{
    BenchArgs, Bins, Close, Config,
    rounds::{Run, TracerResult},
};
use crate::cmd::capture;

/// Target figures of issue #5.
const TARGET_RATIO: f64 = 0.95;
const TARGET_READY_S: f64 = 0.2;
const TARGET_RSS_MB: f64 = 50.0;

/// The JSON report, in this order.
#[derive(Serialize)]
pub(super) struct Report<'a> {
    pub(super) unix_time: u64,
    pub(super) source: SourceInfo,
    pub(super) machine: MachineInfo,
    pub(super) machine_after: MachineInfo,
    pub(super) params: Params<'a>,
    pub(super) summary: &'a [Summary],
    pub(super) targets: &'a [Verdict],
    pub(super) runs: &'a [Run],
}

#[derive(Serialize)]
pub(super) struct Params<'a> {
    pub(super) secs: f64,
    pub(super) rounds: u32,
    pub(super) threads: u32,
    pub(super) close: Close,
    pub(super) configs: &'a [Config],
    pub(super) bpftrace_script: &'a str,
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

/// One configuration over all rounds; serialised as the report's `summary`.
#[derive(Serialize)]
pub(super) struct Summary {
    config: Config,
    runs: usize,
    /// Runs during which other processes had tracing programs loaded.
    #[serde(rename = "disturbed_runs")]
    disturbed: usize,
    rate_median: f64,
    ratio_median: Option<f64>,
    ratio_min: Option<f64>,
    ratio_max: Option<f64>,
    /// Rate over the untraced rate of the same round, per round.
    ratios: Vec<f64>,
    connections: u64,
    lost_total: Option<u64>,
    events_per_conn: Option<f64>,
    #[serde(rename = "cpu_s_per_1k_conn")]
    cpu_s_per_1k: Option<f64>,
    #[serde(rename = "peak_rss_mb")]
    hwm_mb_max: Option<f64>,
    ready_s_median: Option<f64>,
    ready_s_max: Option<f64>,
    self_ready_ms_median: Option<f64>,
    /// Pooled run_time_ns of the programs on sock:inet_sock_set_state per hit.
    #[serde(rename = "set_state_ns_per_hit")]
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
    pub(super) fn of(config: Config, runs: &[Run]) -> Summary {
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
        let (ratio_min, ratio_max) = min_max(&ratios).unzip();
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
            ratio_min,
            ratio_max,
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
}

/// A target of issue #5 and how the runs did: MET, MISSED or unknown.
#[derive(Serialize)]
pub(super) struct Verdict {
    #[serde(rename = "target")]
    what: String,
    measured: String,
    met: Option<bool>,
}

pub(super) fn verdicts(summaries: &[Summary]) -> Vec<Verdict> {
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

pub(super) fn print_table(args: &BenchArgs, summaries: &[Summary], verdicts: &[Verdict]) {
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

    #[test]
    fn report_names_configs_as_the_command_line_does() {
        use clap::ValueEnum;
        for c in Config::value_variants() {
            let name = c.to_possible_value().unwrap().get_name().to_string();
            assert_eq!(serde_json::to_value(c).unwrap(), name);
        }
        for c in Close::value_variants() {
            let name = c.to_possible_value().unwrap().get_name().to_string();
            assert_eq!(serde_json::to_value(c).unwrap(), name);
            assert_eq!(c.key(), name);
        }
    }
}
