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
pub(super) fn vm_hwm_kb(pid: u32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// A program the tracer holds, with its run statistics (bpf_stats on).
#[derive(Clone, Debug, Default, Serialize)]
pub(super) struct ProgStat {
    pub(super) id: u64,
    pub(super) name: String,
    pub(super) run_time_ns: u64,
    pub(super) run_cnt: u64,
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

    pub(super) fn set(&self, on: bool) -> Result<()> {
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

    #[test]
    fn rejects_garbage() {
        assert!(parse("{").is_err());
        assert!(parse("[1,]").is_err());
        assert!(parse("{\"a\" 1}").is_err());
        assert!(parse("1 2").is_err());
    }
}
