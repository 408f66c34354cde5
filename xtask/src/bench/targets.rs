//! Issue #13's targets and the MET/MISSED verdicts: per close, from the summaries
//! of the rounds and statistics runs; for `--soak`, from its one run. Printed and
//! written to the report, never asserted.
use serde::Serialize;

use super::{
    Config,
    report::Summary,
    rounds::{Phase, Run},
};

/// `tcp-trace --json` and the default view: rate over untraced.
const RATIO_AGGREGATED: f64 = 0.95;
/// `tcp-trace --view events --json`: rate over untraced.
const RATIO_EVENTS: f64 = 0.85;
/// The busiest program on sock:inet_sock_set_state, ns per hit.
const SET_STATE_NS_PER_HIT: f64 = 250.0;
/// All the tracer's programs, µs of BPF time per connection.
const BPF_US_PER_CONN: f64 = 3.0;
/// The tracer's utime + stime per connection (aggregated views), µs.
const CPU_US_PER_CONN: f64 = 1.5;
/// Spawn to ready, median, s.
const READY_S: f64 = 0.1;
/// Peak RSS (VmHWM), MB.
const RSS_MB: f64 = 50.0;
/// Soak: samples (seconds) before the first one the flatness check uses.
const SOAK_WARMUP_SAMPLES: usize = 10;
/// Soak: "flat" is last <= first × this + SOAK_FLAT_SLACK_MB.
const SOAK_FLAT_FACTOR: f64 = 1.1;
const SOAK_FLAT_SLACK_MB: f64 = 5.0;

/// The figures, as the report's `params.targets`.
#[derive(Serialize)]
pub(super) struct Targets {
    ratio_json_default: f64,
    ratio_events: f64,
    set_state_ns_per_hit: f64,
    bpf_us_per_conn: f64,
    cpu_us_per_conn: f64,
    ready_s: f64,
    peak_rss_mb: f64,
    soak_warmup_s: usize,
    soak_flat_factor: f64,
    soak_flat_slack_mb: f64,
}

pub(super) const TARGETS: Targets = Targets {
    ratio_json_default: RATIO_AGGREGATED,
    ratio_events: RATIO_EVENTS,
    set_state_ns_per_hit: SET_STATE_NS_PER_HIT,
    bpf_us_per_conn: BPF_US_PER_CONN,
    cpu_us_per_conn: CPU_US_PER_CONN,
    ready_s: READY_S,
    peak_rss_mb: RSS_MB,
    soak_warmup_s: SOAK_WARMUP_SAMPLES,
    soak_flat_factor: SOAK_FLAT_FACTOR,
    soak_flat_slack_mb: SOAK_FLAT_SLACK_MB,
};

/// The rate a tcp-trace configuration must keep, as a fraction of untraced.
fn ratio_target(config: Config) -> Option<f64> {
    match config {
        Config::Json | Config::Default => Some(RATIO_AGGREGATED),
        Config::Events => Some(RATIO_EVENTS),
        _ => None,
    }
}

/// A target and how the runs did: MET, MISSED or unknown (`met: None`).
#[derive(Debug, Serialize)]
pub(super) struct Verdict {
    #[serde(rename = "target")]
    pub(super) what: String,
    pub(super) measured: String,
    pub(super) met: Option<bool>,
}

impl Verdict {
    fn new(what: String, measured: String, met: Option<bool>) -> Verdict {
        Verdict {
            what,
            measured,
            met,
        }
    }

    pub(super) fn mark(&self) -> &'static str {
        match self.met {
            Some(true) => "MET   ",
            Some(false) => "MISSED",
            None => "?     ",
        }
    }
}

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// The verdicts of one close's rounds and statistics runs.
pub(super) fn verdicts(summaries: &[Summary]) -> Vec<Verdict> {
    let mut v = Vec::new();
    let untraced = summaries
        .iter()
        .find(|s| s.config == Config::Untraced)
        .map(|s| s.rate_median);
    let ours: Vec<&Summary> = summaries.iter().filter(|s| s.config.is_ours()).collect();
    for s in &ours {
        let label = s.config.label();
        if let Some(target) = ratio_target(s.config) {
            let (measured, met) = match (s.ratio_median, untraced) {
                (Some(r), Some(u)) => (
                    format!(
                        "{r:.3} ({:.0} conn/s; untraced {u:.0} conn/s)",
                        s.rate_median
                    ),
                    Some(r >= target),
                ),
                _ => ("no untraced run to pair with".into(), None),
            };
            v.push(Verdict::new(
                format!("{label} rate >= {target} of untraced (median of pairs)"),
                measured,
                met,
            ));
        }
        v.push(Verdict::new(
            format!("{label} loses no event"),
            s.lost_total
                .map_or("unknown".into(), |l| format!("{l} lost")),
            s.lost_total.map(|l| l == 0),
        ));
        v.push(match &s.set_state {
            Some(c) => Verdict::new(
                format!(
                    "{label} busiest program on inet_sock_set_state <= {SET_STATE_NS_PER_HIT} ns per hit"
                ),
                format!(
                    "{:.0} ns ({}; all its programs there {:.0} ns)",
                    c.ns_per_hit, c.prog, c.all_ns_per_hit
                ),
                Some(c.ns_per_hit <= SET_STATE_NS_PER_HIT),
            ),
            None => Verdict::new(
                format!(
                    "{label} busiest program on inet_sock_set_state <= {SET_STATE_NS_PER_HIT} ns per hit"
                ),
                "no bpf_stats run".into(),
                None,
            ),
        });
        let bpf_us = s.bpf_ns_per_conn.map(|n| n / 1000.0);
        v.push(Verdict::new(
            format!("{label} BPF time <= {BPF_US_PER_CONN} µs per connection (all its programs)"),
            bpf_us.map_or("no bpf_stats run".into(), |u| format!("{u:.2} µs")),
            bpf_us.map(|u| u <= BPF_US_PER_CONN),
        ));
        if s.config.is_aggregated() {
            v.push(Verdict::new(
                format!("{label} tracer CPU <= {CPU_US_PER_CONN} µs per connection"),
                s.cpu_us_per_conn
                    .map_or("unknown".into(), |u| format!("{u:.2} µs (utime+stime)")),
                s.cpu_us_per_conn.map(|u| u <= CPU_US_PER_CONN),
            ));
        }
    }
    if !ours.is_empty() {
        v.push(ready_verdict(
            "",
            median_of(ours.iter().filter_map(|s| s.ready_s_median)),
            ours.iter().filter_map(|s| s.ready_s_max).reduce(f64::max),
        ));
        let rss = ours.iter().filter_map(|s| s.hwm_mb_max).reduce(f64::max);
        v.push(Verdict::new(
            format!("peak RSS <= {RSS_MB} MB"),
            rss.map_or("unknown".into(), |r| format!("{r:.1} MB")),
            rss.map(|r| r <= RSS_MB),
        ));
    }
    v
}

fn median_of(it: impl Iterator<Item = f64>) -> Option<f64> {
    super::report::median(it.collect())
}

fn ready_verdict(prefix: &str, median: Option<f64>, max: Option<f64>) -> Verdict {
    Verdict::new(
        format!("{prefix}start-to-ready <= {READY_S} s (median)"),
        match (median, max) {
            (Some(m), Some(x)) => format!("median {m:.3} s, max {x:.3} s"),
            _ => "unknown".into(),
        },
        median.map(|r| r <= READY_S),
    )
}

/// The soak's RSS: the sample after the warm-up, the last, the largest, and
/// whether it stayed flat (last <= first × 1.1 + 5 MB).
#[derive(Debug, PartialEq, Serialize)]
pub(super) struct RssTrend {
    pub(super) samples: usize,
    pub(super) first_kb: u64,
    pub(super) last_kb: u64,
    pub(super) max_kb: u64,
    pub(super) flat: bool,
}

/// `None` when no sample came after the warm-up.
pub(super) fn rss_trend(samples_kb: &[u64]) -> Option<RssTrend> {
    let first_kb = *samples_kb.get(SOAK_WARMUP_SAMPLES)?;
    let last_kb = *samples_kb.last()?;
    let max_kb = samples_kb.iter().copied().max()?;
    Some(RssTrend {
        samples: samples_kb.len(),
        first_kb,
        last_kb,
        max_kb,
        flat: mb(last_kb) <= mb(first_kb) * SOAK_FLAT_FACTOR + SOAK_FLAT_SLACK_MB,
    })
}

/// The soak's verdicts (one run).
pub(super) fn soak_verdicts(run: &Run) -> Vec<Verdict> {
    let Some(t) = run.tracer.as_ref().filter(|_| run.phase == Phase::Soak) else {
        return Vec::new();
    };
    let label = run.config.label();
    let mut v = vec![Verdict::new(
        format!("soak: {label} loses no event"),
        t.lost.map_or("unknown".into(), |l| {
            format!(
                "{l} lost of {} events",
                t.events.map_or("?".into(), |e| e.to_string())
            )
        }),
        t.lost.map(|l| l == 0),
    )];
    let trend = rss_trend(&t.rss_samples_kb);
    v.push(Verdict::new(
        format!(
            "soak: RSS flat after {SOAK_WARMUP_SAMPLES} s (last <= first x {SOAK_FLAT_FACTOR} + {SOAK_FLAT_SLACK_MB} MB)"
        ),
        trend.as_ref().map_or_else(
            || {
                format!(
                    "{} samples: none after the warm-up",
                    t.rss_samples_kb.len()
                )
            },
            |r| {
                format!(
                    "first {:.1} MB, last {:.1} MB, max {:.1} MB ({} samples)",
                    mb(r.first_kb),
                    mb(r.last_kb),
                    mb(r.max_kb),
                    r.samples
                )
            },
        ),
        trend.as_ref().map(|r| r.flat),
    ));
    let peak = mb(t.hwm_kb);
    v.push(Verdict::new(
        format!("soak: peak RSS (VmHWM) <= {RSS_MB} MB"),
        format!("{peak:.1} MB"),
        (t.hwm_kb > 0).then_some(peak <= RSS_MB),
    ));
    v.push(ready_verdict("soak: ", Some(t.ready_s), Some(t.ready_s)));
    v
}

/// Where the peers stand beside tcp-trace (not a target): bpftrace-life beside
/// the aggregated views, bpftrace printf beside the events view.
pub(super) fn peer_lines(summaries: &[Summary]) -> Vec<String> {
    let find = |c: Config| summaries.iter().find(|s| s.config == c);
    let opt = |v: Option<f64>, prec: usize| v.map_or("-".to_string(), |x| format!("{x:.prec$}"));
    let mut lines = Vec::new();
    for (ours, peer) in [
        (Config::Json, Config::BpftraceLife),
        (Config::Default, Config::BpftraceLife),
        (Config::Events, Config::Bpftrace),
    ] {
        let (Some(a), Some(b)) = (find(ours), find(peer)) else {
            continue;
        };
        lines.push(format!(
            "{} vs {}: ratio {} vs {}, lost {} vs {}, cpu µs/conn {} vs {}, bpf µs/conn {} vs {}",
            ours.label(),
            peer.label(),
            opt(a.ratio_median, 3),
            opt(b.ratio_median, 3),
            a.lost_total.map_or("-".into(), |l| l.to_string()),
            b.lost_total.map_or("-".into(), |l| l.to_string()),
            opt(a.cpu_us_per_conn, 2),
            opt(b.cpu_us_per_conn, 2),
            opt(a.bpf_ns_per_conn.map(|n| n / 1000.0), 2),
            opt(b.bpf_ns_per_conn.map(|n| n / 1000.0), 2),
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::{
        Close,
        report::Summary,
        rounds::{StormResult, TracerResult},
        stats::ProgStat,
    };

    fn storm(connections: u64, rate: f64) -> StormResult {
        StormResult {
            connections,
            secs: connections as f64 / rate,
            rate,
            errors: 0,
        }
    }

    fn tracer(cpu_s: f64, lost: u64, progs: Vec<ProgStat>) -> TracerResult {
        TracerResult {
            ready_s: 0.08,
            self_ready_ms: Some(60.0),
            cpu_s,
            cpu_total_s: cpu_s + 0.1,
            hwm_kb: 40 * 1024,
            events: Some(10_000),
            lost: Some(lost),
            exit_code: Some(0),
            progs,
            rss_samples_kb: Vec::new(),
            foreign_progs: 0,
        }
    }

    fn run(
        round: u32,
        phase: Phase,
        config: Config,
        s: StormResult,
        t: Option<TracerResult>,
    ) -> Run {
        Run {
            round,
            close: Close::Fin,
            phase,
            config,
            storm: s,
            foreign_progs: 0,
            bpf_stats_enabled: Some(phase == Phase::Stats),
            tracer: t,
        }
    }

    fn prog(name: &str, run_time_ns: u64, run_cnt: u64) -> ProgStat {
        ProgStat {
            id: 1,
            name: name.into(),
            run_time_ns,
            run_cnt,
        }
    }

    fn find<'a>(v: &'a [Verdict], what: &str) -> &'a Verdict {
        v.iter()
            .find(|v| v.what.starts_with(what))
            .unwrap_or_else(|| panic!("no verdict {what:?} in {v:?}"))
    }

    /// Three rounds of untraced/json/events and a statistics run each: ratios
    /// paired per round, costs from the statistics runs only.
    #[test]
    fn verdicts_of_rounds_and_stats_runs() {
        let mut runs = Vec::new();
        for (round, base, json, events) in [
            (1, 10_000.0, 9_700.0, 8_000.0),
            (2, 20_000.0, 18_000.0, 17_600.0),
            (3, 10_000.0, 9_600.0, 9_000.0),
        ] {
            runs.push(run(
                round,
                Phase::Ratio,
                Config::Untraced,
                storm(50_000, base),
                None,
            ));
            // 10 000 connections, 0.01 s of CPU: 1 µs per connection.
            runs.push(run(
                round,
                Phase::Ratio,
                Config::Json,
                storm(10_000, json),
                Some(tracer(0.01, 0, Vec::new())),
            ));
            runs.push(run(
                round,
                Phase::Ratio,
                Config::Events,
                storm(10_000, events),
                Some(tracer(0.05, 5, Vec::new())),
            ));
        }
        // 1000 connections: 2 µs of BPF time each for json, 4 µs for events.
        runs.push(run(
            1,
            Phase::Stats,
            Config::Json,
            storm(1000, 9000.0),
            Some(tracer(
                1.0,
                9,
                vec![
                    prog("btf_inet_sock_set_state_sk", 1_000_000, 10_000),
                    prog("btf_inet_sock_set_state_sk_nested", 200_000, 10_000),
                    prog("sys_exit_accept4", 800_000, 1000),
                ],
            )),
        ));
        runs.push(run(
            1,
            Phase::Stats,
            Config::Events,
            storm(1000, 9000.0),
            Some(tracer(
                1.0,
                0,
                vec![prog("btf_inet_sock_set_state_sk", 4_000_000, 10_000)],
            )),
        ));
        let s: Vec<Summary> = [Config::Untraced, Config::Json, Config::Events]
            .map(|c| Summary::of(c, Close::Fin, &runs))
            .into();
        assert_eq!(s[1].ratios, vec![0.97, 0.9, 0.96]);
        assert_eq!(s[1].ratio_median, Some(0.96));
        assert_eq!(s[1].lost_total, Some(0));
        assert_eq!(s[1].stats_lost, Some(9));
        assert!((s[1].cpu_us_per_conn.unwrap() - 1.0).abs() < 1e-9);
        assert_eq!(s[1].bpf_ns_per_conn, Some(2000.0));
        assert_eq!(s[1].set_state.as_ref().unwrap().ns_per_hit, 100.0);
        assert_eq!(s[0].rate_median, 10_000.0);

        let v = verdicts(&s);
        let json_ratio = find(&v, "tcp-trace --json rate >= 0.95");
        assert_eq!(json_ratio.met, Some(true));
        assert!(json_ratio.measured.contains("untraced 10000 conn/s"));
        assert_eq!(find(&v, "tcp-trace --json loses").met, Some(true));
        assert_eq!(find(&v, "tcp-trace --json busiest").met, Some(true));
        assert_eq!(find(&v, "tcp-trace --json BPF time").met, Some(true));
        assert_eq!(find(&v, "tcp-trace --json tracer CPU").met, Some(true));
        // events: ratios 0.8, 0.88, 0.9 → 0.88 >= 0.85; 15 lost; 400 ns per hit;
        // no CPU target (not an aggregated view).
        assert_eq!(find(&v, "tcp-trace events rate >= 0.85").met, Some(true));
        assert_eq!(find(&v, "tcp-trace events loses").met, Some(false));
        assert_eq!(find(&v, "tcp-trace events busiest").met, Some(false));
        assert_eq!(find(&v, "tcp-trace events BPF time").met, Some(false));
        assert!(
            !v.iter()
                .any(|v| v.what.starts_with("tcp-trace events tracer CPU"))
        );
        assert_eq!(find(&v, "start-to-ready").met, Some(true));
        assert_eq!(find(&v, "peak RSS").met, Some(true));
        assert!(!v.iter().any(|v| v.what.starts_with("untraced")));
    }

    /// Without an untraced run or a statistics run the verdicts are unknown, not
    /// MET or MISSED.
    #[test]
    fn unknown_without_pairs_or_statistics() {
        let runs = [run(
            1,
            Phase::Ratio,
            Config::Default,
            storm(10_000, 9_000.0),
            Some(tracer(0.5, 0, Vec::new())),
        )];
        let s = [Summary::of(Config::Default, Close::Fin, &runs)];
        let v = verdicts(&s);
        assert_eq!(find(&v, "tcp-trace (ladder) rate").met, None);
        assert_eq!(find(&v, "tcp-trace (ladder) busiest").met, None);
        assert_eq!(find(&v, "tcp-trace (ladder) BPF time").met, None);
        // 50 µs per connection.
        assert_eq!(find(&v, "tcp-trace (ladder) tracer CPU").met, Some(false));
    }

    #[test]
    fn rss_flatness() {
        // Fewer than 11 samples: no sample after the 10 s warm-up.
        assert_eq!(rss_trend(&[30_000; 10]), None);
        // The start-up peak does not count; first = the sample at 10 s.
        let mut samples = vec![45_000, 30_000, 30_000, 30_000, 30_000, 30_000];
        samples.extend([30_000; 5]);
        samples.extend([31_000, 33_000, 32_000]);
        let t = rss_trend(&samples).unwrap();
        assert_eq!((t.first_kb, t.last_kb, t.max_kb), (30_000, 32_000, 45_000));
        assert!(t.flat);
        // 30 MB × 1.1 + 5 MB = 38 MB: 38 MB is flat, 38 MB + 1 kB is not.
        let at = |last_kb: u64| {
            let mut s = vec![30 * 1024; 11];
            s.push(last_kb);
            rss_trend(&s).unwrap().flat
        };
        assert!(at(38 * 1024));
        assert!(!at(38 * 1024 + 1));
    }

    #[test]
    fn soak_verdicts_of_a_run() {
        let mut t = tracer(10.0, 0, Vec::new());
        t.rss_samples_kb = vec![30 * 1024; 15];
        let r = run(
            1,
            Phase::Soak,
            Config::Json,
            storm(100_000, 10_000.0),
            Some(t),
        );
        let v = soak_verdicts(&r);
        assert_eq!(v.len(), 4);
        assert!(v.iter().all(|v| v.met == Some(true)), "{v:?}");
        let mut t = tracer(10.0, 2, Vec::new());
        t.hwm_kb = 60 * 1024;
        t.ready_s = 0.2;
        t.rss_samples_kb = vec![30 * 1024; 5];
        let r = run(
            1,
            Phase::Soak,
            Config::Json,
            storm(100_000, 10_000.0),
            Some(t),
        );
        let met: Vec<Option<bool>> = soak_verdicts(&r).iter().map(|v| v.met).collect();
        assert_eq!(met, [Some(false), None, Some(false), Some(false)]);
    }
}
