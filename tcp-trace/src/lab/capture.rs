//! What the lab observed: the tracer's events (and the connections the correlator
//! builds from them), plus the few independent kernel observations a claim needs
//! (sock_diag TIME_WAIT timers, sysctls read back, timestamps of the lab's own
//! system calls). Verdicts are computed from this alone.
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use tcp_trace_common::{Filter, MAX_PORTS};

use crate::clock::monotonic_ns;
use crate::correlate::{Config, Connection, Correlator};
use crate::decode::{self, Event};
use crate::loader::{self, AttachMode, Loaded, Options};

/// A TIME_WAIT socket as sock_diag (`ss -tano state time-wait`) reported it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TimeWaitEntry {
    /// Namespace the query ran in.
    pub netns: String,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// Remaining time of the timewait timer, in seconds.
    pub timer_s: u64,
    /// When the query ran (CLOCK_MONOTONIC).
    pub t_ns: u64,
}

/// Everything a verdict may look at.
#[derive(Clone, Debug, Default)]
pub struct Capture {
    pub events: Vec<Event>,
    pub connections: Vec<Connection>,
    /// Events the kernel could not queue (ring buffer full) during the capture.
    pub lost: u64,
    pub time_wait: Vec<TimeWaitEntry>,
    /// Sysctls read back from the namespaces, "netns-role:key" → value.
    pub sysctls: BTreeMap<String, String>,
    /// CLOCK_MONOTONIC timestamps taken by the lab around its own system calls
    /// (e.g. "client_send_start"), comparable with the event timestamps.
    pub marks: BTreeMap<String, u64>,
}

impl Capture {
    /// Builds the connections from `events` with the project's correlator.
    pub fn from_events(events: Vec<Event>) -> Capture {
        let mut c = Correlator::new(Config::default());
        for e in &events {
            c.push(*e);
        }
        let mut connections = Vec::new();
        c.drain_finished(&mut connections);
        connections.extend(c.flush());
        connections.sort_by_key(|c| c.id);
        Capture {
            events,
            connections,
            ..Capture::default()
        }
    }
}

/// The real tracer, loaded in this process and filtered to one port.
pub struct Tracer {
    loaded: Loaded,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<Vec<Event>>>,
}

impl Tracer {
    pub fn start(port: u16, attach: AttachMode) -> anyhow::Result<Tracer> {
        let mut ports = [0u16; MAX_PORTS];
        ports[0] = port;
        let filter = Filter {
            nports: 1,
            ports,
            ..Filter::default()
        };
        let (loaded, ring) = loader::load(&Options {
            books: false,
            filter,
            attach,
            ..Default::default()
        })?;
        for w in &loaded.warnings {
            eprintln!("tcp-trace lab: warning: {w}");
        }
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let reader = std::thread::spawn(move || read_ring(ring, &s));
        Ok(Tracer {
            loaded,
            stop,
            reader: Some(reader),
        })
    }

    /// Waits 100 ms for the last events, stops reading and returns the events, the
    /// number lost and the hook runs the kernel skipped (anywhere on the host).
    pub fn stop(mut self) -> anyhow::Result<(Vec<Event>, u64, u64)> {
        std::thread::sleep(Duration::from_millis(100));
        self.stop.store(true, Ordering::Relaxed);
        let events = self
            .reader
            .take()
            .map(|h| h.join())
            .transpose()
            .map_err(|_| anyhow::anyhow!("ring reader panicked"))?
            .unwrap_or_default();
        // The kernel side's log records of the capture (aya-log; shown with -v).
        self.loaded.flush_log();
        let c = self.loaded.counters();
        Ok((events, c.lost, c.skipped))
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.reader.take() {
            let _ = h.join();
        }
    }
}

fn read_ring(mut ring: RingBuf<MapData>, stop: &AtomicBool) -> Vec<Event> {
    let mut out = Vec::new();
    loop {
        let last = stop.load(Ordering::Relaxed);
        while let Some(item) = ring.next() {
            if let Ok(e) = decode::decode(&item) {
                out.push(e);
            }
        }
        if last {
            return out;
        }
        std::thread::sleep(crate::source::POLL_INTERVAL);
    }
}

/// Keeps the events of this lab run: those whose tuple has one of `addrs`, and
/// tuple-less ones raised by this process.
pub fn keep_lab_events(events: Vec<Event>, addrs: &[IpAddr]) -> Vec<Event> {
    let me = std::process::id();
    events
        .into_iter()
        .filter(|e| match (e.local, e.remote) {
            (Some(l), Some(r)) => addrs.contains(&l.0) || addrs.contains(&r.0),
            _ => e.pid() == Some(me),
        })
        .collect()
}

/// Queries sock_diag in `ns` for TIME_WAIT sockets.
pub fn query_time_wait(ns: &str) -> anyhow::Result<Vec<TimeWaitEntry>> {
    let out = super::env::sh(
        "ip",
        &["netns", "exec", ns, "ss", "-tanoH", "state", "time-wait"],
    )?;
    let t = monotonic_ns();
    Ok(parse_ss_time_wait(&out, ns, t))
}

/// Parses `ss -tanoH state time-wait` lines:
/// `0 0 10.1.1.1:4000 10.1.1.2:80 timer:(timewait,59sec,0)` (the state column may
/// or may not be there; v6 addresses come in brackets).
pub fn parse_ss_time_wait(out: &str, ns: &str, t_ns: u64) -> Vec<TimeWaitEntry> {
    let mut v = Vec::new();
    for line in out.lines() {
        let addrs: Vec<SocketAddr> = line
            .split_whitespace()
            .filter_map(|tok| {
                let (a, p) = tok.rsplit_once(':')?;
                let a = a.trim_start_matches('[').trim_end_matches(']');
                let a = a.split('%').next()?;
                Some(SocketAddr::new(a.parse().ok()?, p.parse().ok()?))
            })
            .collect();
        let timer = line.split_whitespace().find_map(|tok| {
            let rest = tok.strip_prefix("timer:(timewait,")?;
            let val = rest.split(',').next()?;
            parse_ss_duration(val)
        });
        if let (2, Some(timer_s)) = (addrs.len(), timer) {
            v.push(TimeWaitEntry {
                netns: ns.to_string(),
                local: addrs[0],
                remote: addrs[1],
                timer_s,
                t_ns,
            });
        }
    }
    v
}

/// `59sec`, `1min`, `1min59sec`, `900ms` → whole seconds.
fn parse_ss_duration(s: &str) -> Option<u64> {
    let mut total_ms = 0u64;
    let mut num = String::new();
    let mut unit = String::new();
    let mut flush = |num: &mut String, unit: &mut String| -> Option<()> {
        if num.is_empty() {
            return Some(());
        }
        let n: u64 = num.parse().ok()?;
        total_ms += match unit.as_str() {
            "ms" => n,
            "sec" => n * 1000,
            "min" => n * 60_000,
            _ => return None,
        };
        num.clear();
        unit.clear();
        Some(())
    };
    for ch in s.chars() {
        if ch.is_ascii_digit() {
            if !unit.is_empty() {
                flush(&mut num, &mut unit)?;
            }
            num.push(ch);
        } else {
            unit.push(ch);
        }
    }
    flush(&mut num, &mut unit)?;
    Some(total_ms / 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ss_time_wait() {
        let out = "0      0      10.64.1.1:40000    10.64.1.2:47001 timer:(timewait,59sec,0)\n\
                   TIME-WAIT 0 0 [fd00:203:40:1::2]:47001 [fd00:203:40:1::1]:51000 timer:(timewait,1min,0)\n\
                   garbage\n";
        let v = parse_ss_time_wait(out, "ns", 7);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].local, "10.64.1.1:40000".parse().unwrap());
        assert_eq!(v[0].remote.port(), 47001);
        assert_eq!(v[0].timer_s, 59);
        assert_eq!(v[1].local, "[fd00:203:40:1::2]:47001".parse().unwrap());
        assert_eq!(v[1].timer_s, 60);
        assert_eq!(parse_ss_duration("1min59sec"), Some(119));
        assert_eq!(parse_ss_duration("900ms"), Some(0));
    }
}
