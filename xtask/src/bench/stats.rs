//! What the bench samples besides the storm: a process's CPU time and peak RSS
//! from `/proc`, the programs a tracer holds with their run statistics (bpftool),
//! other processes' tracing programs, and `kernel.bpf_stats_enabled`.
use std::{
    collections::BTreeSet,
    fs,
    path::Path,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow};
use serde::{Deserialize, Serialize};

use super::{BenchArgs, Bins};
use crate::cmd::capture;

const BPF_STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

pub(super) struct ProcStat {
    pub(super) state: char,
    pub(super) cpu_s: f64,
}

/// State and utime+stime of a process (all its threads).
pub(super) fn proc_stat(pid: u32, clk_tck: f64) -> Option<ProcStat> {
    parse_stat(
        &fs::read_to_string(format!("/proc/{pid}/stat")).ok()?,
        clk_tck,
    )
}

/// `/proc/PID/stat`: "pid (comm) state ppid ... utime(14) stime(15)"; comm may hold
/// spaces and ')'.
fn parse_stat(s: &str, clk_tck: f64) -> Option<ProcStat> {
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
pub(super) fn vm_hwm_kb(pid: u32) -> Option<u64> {
    status_kb(
        &fs::read_to_string(format!("/proc/{pid}/status")).ok()?,
        "VmHWM:",
    )
}

/// Resident set size now (kB).
pub(super) fn vm_rss_kb(pid: u32) -> Option<u64> {
    status_kb(
        &fs::read_to_string(format!("/proc/{pid}/status")).ok()?,
        "VmRSS:",
    )
}

/// A "Key:   1234 kB" line of `/proc/PID/status`.
fn status_kb(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// `kernel.bpf_stats_enabled` now (`None` without the sysctl).
pub(super) fn bpf_stats_enabled() -> Option<bool> {
    fs::read_to_string(BPF_STATS_SYSCTL)
        .ok()
        .map(|s| s.trim() != "0")
}

/// A program the tracer holds, with its run statistics (bpf_stats on).
#[derive(Clone, Debug, Default, Serialize)]
pub(super) struct ProgStat {
    pub(super) id: u64,
    pub(super) name: String,
    pub(super) run_time_ns: u64,
    pub(super) run_cnt: u64,
}

/// The program on sock:inet_sock_set_state. bpftool shows the kernel's name (15
/// characters: `inet_sock_set_s`, bpftrace's too) or, with BTF, the function's
/// (`inet_sock_set_state`, `btf_inet_sock_set_state_sk`, `…_nested`).
pub(super) fn is_set_state_prog(name: &str) -> bool {
    name.contains("inet_sock_set_s")
}

/// What the programs on sock:inet_sock_set_state cost, pooled by program name over
/// the runs given (bpf_stats on).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(super) struct SetStateCost {
    /// The busiest program on the tracepoint: the most run_time_ns.
    pub(super) prog: String,
    pub(super) run_cnt: u64,
    pub(super) run_time_ns: u64,
    /// Its run_time_ns / run_cnt: what issue #13's 250 ns is about.
    pub(super) ns_per_hit: f64,
    /// All programs on the tracepoint (tcp-trace's main program and its `_nested`
    /// twin both run on every hit) per hit: the sum of their run_time_ns over the
    /// largest run_cnt among them.
    pub(super) all_ns_per_hit: f64,
}

pub(super) fn set_state_cost<'a>(
    progs: impl IntoIterator<Item = &'a ProgStat>,
) -> Option<SetStateCost> {
    let mut by_name: Vec<(&str, u64, u64)> = Vec::new();
    for p in progs.into_iter().filter(|p| is_set_state_prog(&p.name)) {
        match by_name.iter_mut().find(|(n, _, _)| *n == p.name) {
            Some(e) => {
                e.1 += p.run_time_ns;
                e.2 += p.run_cnt;
            }
            None => by_name.push((&p.name, p.run_time_ns, p.run_cnt)),
        }
    }
    let hits = by_name.iter().map(|e| e.2).max()?;
    let all_ns: u64 = by_name.iter().map(|e| e.1).sum();
    let &(name, ns, cnt) = by_name.iter().max_by_key(|e| e.1)?;
    (cnt > 0).then(|| SetStateCost {
        prog: name.to_string(),
        run_cnt: cnt,
        run_time_ns: ns,
        ns_per_hit: ns as f64 / cnt as f64,
        all_ns_per_hit: all_ns as f64 / hits as f64,
    })
}

/// What we read of one program in `bpftool prog show --json`; what is missing
/// (no name, statistics off) reads as empty or 0.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct BpftoolProg {
    id: u64,
    #[serde(rename = "type")]
    ty: String,
    name: String,
    run_time_ns: u64,
    run_cnt: u64,
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
pub(super) fn bpf_snapshot(bpftool: &Path, pid: Option<u32>) -> Result<(Vec<ProgStat>, usize)> {
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
    let all: Vec<BpftoolProg> =
        serde_json::from_str(&out).map_err(|e| anyhow!("bpftool prog show --json: {e}"))?;
    let mut progs = Vec::new();
    let mut foreign = 0;
    for p in all {
        if !ids.contains(&p.id) {
            if TRACING_TYPES.contains(&p.ty.as_str()) {
                foreign += 1;
            }
            continue;
        }
        progs.push(ProgStat {
            id: p.id,
            name: p.name,
            run_time_ns: p.run_time_ns,
            run_cnt: p.run_cnt,
        });
    }
    Ok((progs, foreign))
}

/// Other processes' tracing programs now (0 without bpftool).
pub(super) fn foreign_progs(bins: &Bins) -> usize {
    bins.bpftool
        .as_deref()
        .and_then(|b| bpf_snapshot(b, None).ok())
        .map_or(0, |(_, n)| n)
}

/// Waits (up to `--quiet-wait`) until no other tracing program is loaded; returns
/// how many there still are. (The kernel frees the programs of a tracer that just
/// exited a little later, hence the silent first second.)
pub(super) fn wait_quiet(bins: &Bins, args: &BenchArgs) -> usize {
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
pub(super) struct BpfStats {
    original: Option<String>,
}

impl BpfStats {
    pub(super) fn new() -> Result<BpfStats> {
        let original = fs::read_to_string(BPF_STATS_SYSCTL)
            .ok()
            .map(|s| s.trim().to_string());
        if original.is_none() {
            eprintln!("bench: warning: {BPF_STATS_SYSCTL} is missing, no per-hit kernel cost");
        }
        Ok(BpfStats { original })
    }

    /// On for the statistics runs, off (whatever it was before) for the ratio runs:
    /// bpf_stats adds two clock reads to every program run.
    pub(super) fn set(&self, on: bool) -> Result<()> {
        if self.original.is_none() {
            return Ok(());
        }
        let value = if on { "1" } else { "0" };
        fs::write(BPF_STATS_SYSCTL, value)
            .with_context(|| format!("writing {value} to {BPF_STATS_SYSCTL}"))
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        if let Some(orig) = &self.original {
            let _ = fs::write(BPF_STATS_SYSCTL, orig);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn parse(s: &str) -> serde_json::Result<Value> {
        serde_json::from_str(s)
    }

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
        assert_eq!(
            parse(&serde_json::to_string_pretty(&v).unwrap()).unwrap(),
            v
        );
        // What bpf_snapshot reads of it: the rest is ignored, the missing is 0.
        let progs: Vec<BpftoolProg> = serde_json::from_str(text).unwrap();
        assert_eq!(progs[0].id, 12);
        assert_eq!(progs[0].name, "inet_sock_set_s");
        assert_eq!(progs[0].run_time_ns, 123456789012);
        assert_eq!(progs[0].run_cnt, 0);
        assert_eq!(progs[0].ty, "");
    }

    fn prog(name: &str, run_time_ns: u64, run_cnt: u64) -> ProgStat {
        ProgStat {
            id: 1,
            name: name.into(),
            run_time_ns,
            run_cnt,
        }
    }

    #[test]
    fn set_state_program_names() {
        assert!(is_set_state_prog("inet_sock_set_s"));
        assert!(is_set_state_prog("btf_inet_sock_set_state_sk"));
        assert!(is_set_state_prog("btf_inet_sock_set_state_sk_nested"));
        assert!(!is_set_state_prog("sys_exit_accept4"));
    }

    /// The busiest program on the tracepoint, pooled over two runs; the others'
    /// time only in the sum.
    #[test]
    fn busiest_set_state_program() {
        let runs = [
            vec![
                prog("btf_inet_sock_set_state_sk", 200_000, 1000),
                prog("btf_inet_sock_set_state_sk_nested", 30_000, 1000),
                prog("sys_exit_accept4", 900_000, 100),
            ],
            vec![
                prog("btf_inet_sock_set_state_sk", 100_000, 1000),
                prog("btf_inet_sock_set_state_sk_nested", 30_000, 1000),
            ],
        ];
        let c = set_state_cost(runs.iter().flatten()).unwrap();
        assert_eq!(c.prog, "btf_inet_sock_set_state_sk");
        assert_eq!((c.run_time_ns, c.run_cnt), (300_000, 2000));
        assert_eq!(c.ns_per_hit, 150.0);
        assert_eq!(c.all_ns_per_hit, 180.0);
        // bpftrace: one program, the kernel's 15-character name.
        let bt = [prog("inet_sock_set_s", 5_000_000, 2000)];
        assert_eq!(set_state_cost(&bt).unwrap().ns_per_hit, 2500.0);
        // No program on the tracepoint, or statistics off.
        assert_eq!(set_state_cost(&[prog("sys_exit_connect", 10, 1)]), None);
        assert_eq!(set_state_cost(&[prog("inet_sock_set_s", 0, 0)]), None);
    }

    #[test]
    fn proc_stat_fields() {
        // comm with a space and a ')'; utime 250, stime 50 ticks.
        let line =
            "4242 (tcp (x) y) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 50 0 0 20 0 3 0 123 456 789";
        let s = parse_stat(line, 100.0).unwrap();
        assert_eq!(s.state, 'S');
        assert!((s.cpu_s - 3.0).abs() < 1e-9);
        assert!(parse_stat("4242 (x) Z 1", 100.0).is_none());
    }

    #[test]
    fn status_lines() {
        let status = "Name:\ttcp-trace\nVmHWM:\t   39560 kB\nVmRSS:\t   28608 kB\n";
        assert_eq!(status_kb(status, "VmHWM:"), Some(39560));
        assert_eq!(status_kb(status, "VmRSS:"), Some(28608));
        assert_eq!(status_kb(status, "VmSwap:"), None);
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse("{").is_err());
        assert!(parse("[1,]").is_err());
        assert!(parse("{\"a\" 1}").is_err());
        assert!(parse("1 2").is_err());
    }
}
