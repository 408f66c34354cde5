//! `tcp-trace explain`: one sentence per [`Diagnosis`], as a text line or as a
//! `{"type":"diagnosis"}` JSON line (`docs/json-schema.md`).
//!
//! ```text
//!      1.020  connect to 10.0.0.2:80 took 1.02 s because the first SYN was lost (1 SYN retransmit after 1.00 s) [pid 4242 curl]
//! ```
use std::fmt::Write as _;
use std::io::{self, Write};

use serde::Serialize;

use crate::explain::{Cause, Diagnosis, End};

/// `1.02 s`, `350 ms`, `2.5 ms`, `0.08 ms`.
pub fn dur(ns: u64) -> String {
    let ms = ns as f64 / 1e6;
    if ms >= 1000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else if ms >= 10.0 {
        format!("{ms:.0} ms")
    } else if ms >= 1.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.2} ms")
    }
}

fn plural(n: u32, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// " after 1.00 s, 3.00 s" (times since `start`), with the backoff factor between the
/// last two gaps when there are two or more.
fn after(d: &Diagnosis) -> String {
    let mut s = String::new();
    if d.retransmit_ts_ns.is_empty() {
        return s;
    }
    s.push_str(" after ");
    for (i, t) in d.retransmit_ts_ns.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(&dur(t.saturating_sub(d.start_ns)));
    }
    let mut prev = d.start_ns;
    let gaps: Vec<u64> = d
        .retransmit_ts_ns
        .iter()
        .map(|&t| {
            let g = t.saturating_sub(prev);
            prev = t;
            g
        })
        .collect();
    if let [.., a, b] = gaps[..]
        && a > 0
    {
        let _ = write!(s, "; backoff x{:.1}", b as f64 / a as f64);
    }
    s
}

fn by(e: Option<End>) -> &'static str {
    match e {
        Some(End::Remote) => "the remote end",
        _ => "this end",
    }
}

fn owner(d: &Diagnosis) -> String {
    match (d.pid, &d.comm) {
        (Some(p), Some(c)) => format!("process {p} ({c})"),
        (Some(p), None) => format!("process {p}"),
        (None, Some(c)) => format!("({c})"),
        (None, None) => "an unknown process".to_string(),
    }
}

/// The sentence naming the cause, with its numbers.
pub fn sentence(d: &Diagnosis) -> String {
    let local = d.local.as_deref().unwrap_or("*");
    let remote = d.remote.as_deref().unwrap_or("*");
    let took = d.duration_ns.map(dur).unwrap_or_default();
    let errno = d.errno.map(|e| format!(" ({e})")).unwrap_or_default();
    let queue = d
        .accept_queue
        .map(|q| format!("{}/{}", q.len, q.max))
        .unwrap_or_default();
    match d.cause {
        Cause::LostSyn => {
            let first = if d.retransmits == 1 {
                "the first SYN was".to_string()
            } else {
                format!("the first {} SYNs were", d.retransmits)
            };
            format!(
                "connect to {remote} took {took} because {first} lost ({}{})",
                plural(d.retransmits, "SYN retransmit", "SYN retransmits"),
                after(d)
            )
        }
        Cause::SlowHandshake => match d.role {
            Some(crate::correlate::Role::Server) => format!(
                "handshake from {remote} to {local} took {took} with no SYN-ACK retransmitted: the third ACK was slow to come"
            ),
            _ => format!(
                "connect to {remote} took {took} with no SYN retransmitted: the SYN-ACK was slow to come (network delay or a busy peer)"
            ),
        },
        Cause::LostSynAck => format!(
            "connection from {remote} to {local} was established {took} after the server's first SYN-ACK retransmit (itself about 1 s after the SYN) because the SYN-ACK or the client's third ACK was lost ({})",
            plural(d.retransmits, "SYN-ACK retransmit", "SYN-ACK retransmits"),
        ),
        Cause::AcceptQueueFull => match d.phase {
            crate::explain::Phase::Accept => format!(
                "connection from {remote} waited {took} in the full accept queue of {local} ({queue} when queued) before accept()"
            ),
            _ => format!(
                "connection from {remote} to {local} was established {took} after the server's first SYN-ACK retransmit because the accept queue was full ({queue} when queued): the listener dropped the third ACK ({})",
                plural(d.retransmits, "SYN-ACK retransmit", "SYN-ACK retransmits"),
            ),
        },
        Cause::SlowAccept => {
            let q = if queue.is_empty() {
                String::new()
            } else {
                format!(", queue {queue} when queued")
            };
            format!(
                "connection from {remote} to {local} waited {took} in the accept queue: {} called accept() late{q}",
                owner(d)
            )
        }
        Cause::SlowConnectReturn => format!(
            "connect to {remote} returned {took} after the handshake had completed (the caller was not running)"
        ),
        Cause::Refused => format!(
            "connect to {remote} was refused after {took}: reset by {}{errno}",
            by(d.by)
        ),
        Cause::TimedOut => format!(
            "connect to {remote} timed out after {took}: no answer to {} SYNs ({}{}){errno}",
            d.retransmits + 1,
            plural(d.retransmits, "SYN retransmit", "SYN retransmits"),
            after(d)
        ),
        Cause::Reset => {
            let when = match d.phase {
                crate::explain::Phase::Handshake => "during the handshake",
                _ => "after",
            };
            format!(
                "connection {local} -> {remote} was reset by {} {when} {took}{errno}",
                by(d.by)
            )
        }
        Cause::LostFin => format!(
            "close of {local} -> {remote} took {took} because the FIN was lost ({}{})",
            plural(d.retransmits, "FIN retransmit", "FIN retransmits"),
            after(d)
        ),
        Cause::SlowCloseWait => format!(
            "close of {local} -> {remote} took {took} because {} held it in CLOSE_WAIT: the peer had closed and close() came {took} later",
            owner(d)
        ),
        Cause::SlowFinWait2 => format!(
            "close of {local} -> {remote} took {took} in FIN_WAIT2, waiting for the peer's FIN"
        ),
        Cause::SlowClose => format!(
            "close of {local} -> {remote} took {took}; no FIN retransmit, CLOSE_WAIT or FIN_WAIT2 explains it"
        ),
        Cause::CloseWaitLeak => {
            let n = d.count.unwrap_or(0);
            let to = match &d.local {
                // A server's sockets: accepted on `local`, from clients at `remote`.
                Some(l) => format!("accepted on {l} from {remote}"),
                None => format!("to {remote}"),
            };
            let oldest = d.oldest_ns.map(dur).unwrap_or_default();
            let oldest = match d.at_start {
                // Their age counts from the start: a lower bound.
                Some(k) => format!(
                    "oldest {oldest} or more ({k} of them already in CLOSE_WAIT when tcp-trace started)"
                ),
                None => format!("oldest {oldest}"),
            };
            format!(
                "{} holds {} {to} (the peer closed, the application did not), {oldest}",
                owner(d),
                plural(n, "CLOSE_WAIT socket", "CLOSE_WAIT sockets"),
            )
        }
        Cause::TimeWaitPressure => {
            let n = d.count.unwrap_or(0);
            let risk = d.risk.unwrap_or("unknown");
            match d.port_range {
                Some(r) => format!(
                    "{} to {remote} hold {n} of the {} local ports ({}-{}, {:.1}%), tcp_tw_reuse={}: {risk} risk of running out of ports for it (EADDRNOTAVAIL)",
                    plural(n, "TIME_WAIT socket", "TIME_WAIT sockets"),
                    r.ports(),
                    r.low,
                    r.high,
                    100.0 * f64::from(n) / f64::from(r.ports()),
                    r.tw_reuse
                ),
                None => format!(
                    "{} to {remote} (local port range unknown)",
                    plural(n, "TIME_WAIT socket", "TIME_WAIT sockets")
                ),
            }
        }
    }
}

/// One text line: time since `t0_ns`, the sentence, and the owner.
pub fn line(w: &mut impl Write, d: &Diagnosis, t0_ns: u64) -> io::Result<()> {
    let secs = d.start_ns.saturating_sub(t0_ns) as f64 / 1e9;
    let who = match (d.id, d.pid, &d.comm) {
        (Some(_), Some(p), Some(c)) => format!(" [pid {p} {c}]"),
        (Some(_), Some(p), None) => format!(" [pid {p}]"),
        _ => String::new(),
    };
    writeln!(w, "{secs:>11.3}  {}{who}", sentence(d))
}

#[derive(Serialize)]
struct JsonLine<'a> {
    #[serde(rename = "type")]
    record_type: &'static str,
    #[serde(flatten)]
    d: &'a Diagnosis,
    message: String,
}

/// One `{"type":"diagnosis",…}` line.
pub fn json(w: &mut impl Write, d: &Diagnosis, epoch_ns: Option<i128>) -> io::Result<()> {
    let line = JsonLine {
        record_type: "diagnosis",
        d,
        message: sentence(d),
    };
    let bytes = serde_json::to_vec(&line)?;
    match epoch_ns {
        // The wall-clock `time` every JSON line carries: when the diagnosed phase began.
        Some(t) => w.write_all(&crate::render::json::with_time(&bytes, t))?,
        None => w.write_all(&bytes)?,
    }
    w.write_all(b"\n")
}
