//! The event stream: one aligned line per event.
use std::io::{self, Write};

use crate::clock::WallClock;
use crate::decode::{Event, EventKind, TcpState, errno_name};

/// How the time column is printed.
#[derive(Clone, Copy, Debug)]
pub enum TimeColumn {
    /// Seconds since `t0_ns` (monotonic).
    Relative { t0_ns: u64 },
    /// Wall clock (`-T`).
    Wall(WallClock),
}

pub fn header(w: &mut impl Write, time: &TimeColumn) -> io::Result<()> {
    let t = match time {
        TimeColumn::Relative { .. } => "TIME(s)",
        TimeColumn::Wall(_) => "TIME",
    };
    writeln!(
        w,
        "{t:<15} {:>7} {:<16} {:>21}    {:<21} EVENT",
        "PID", "COMM", "LOCAL", "REMOTE"
    )
}

struct Endpoint(Option<(std::net::IpAddr, u16)>);

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            None => f.pad("-"),
            Some((std::net::IpAddr::V4(a), p)) => f.pad(&format!("{a}:{p}")),
            Some((std::net::IpAddr::V6(a), p)) => f.pad(&format!("[{a}]:{p}")),
        }
    }
}

/// What happened, in words (`CLOSE -> SYN_SENT`, `connect() = 0`, …).
pub fn describe(ev: &Event, out: &mut impl std::fmt::Write) -> std::fmt::Result {
    match ev.kind {
        EventKind::Transition { old, new } => write!(out, "{old} -> {new}"),
        EventKind::ConnectReturn { ret, .. } => write_ret(out, "connect()", ret),
        EventKind::AcceptReturn { ret, accept4, .. } => {
            write_ret(out, if accept4 { "accept4()" } else { "accept()" }, ret)
        }
        EventKind::SynAckRetransmit { .. } => out.write_str("SYN-ACK retransmit"),
        EventKind::Retransmit {
            state: TcpState::SynSent,
        } => out.write_str("SYN retransmit"),
        EventKind::Retransmit { state } => write!(out, "retransmit ({state})"),
        EventKind::ResetSent { state, .. } => match state {
            Some(s) => write!(out, "RST sent ({s})"),
            None => out.write_str("RST sent"),
        },
        EventKind::ResetReceived => out.write_str("RST received"),
    }
}

fn write_ret(out: &mut impl std::fmt::Write, call: &str, ret: i64) -> std::fmt::Result {
    if ret < 0 {
        match errno_name(-ret) {
            Some(n) => write!(out, "{call} = -{n}"),
            None => write!(out, "{call} = {ret}"),
        }
    } else {
        write!(out, "{call} = {ret}")
    }
}

pub fn line(w: &mut impl Write, ev: &Event, time: &TimeColumn) -> io::Result<()> {
    line_styled(w, ev, time, false)
}

/// One line; with `colour`, the event's description in ANSI colour
/// (see [`super::colour`]).
pub fn line_styled(
    w: &mut impl Write,
    ev: &Event,
    time: &TimeColumn,
    colour: bool,
) -> io::Result<()> {
    let mut t = String::with_capacity(16);
    let mut what = String::with_capacity(32);
    let _ = match time {
        TimeColumn::Relative { t0_ns } => {
            let d = ev.ts_ns.saturating_sub(*t0_ns);
            std::fmt::Write::write_fmt(
                &mut t,
                format_args!("{}.{:06}", d / 1_000_000_000, (d % 1_000_000_000) / 1000),
            )
        }
        TimeColumn::Wall(c) => c.format(ev.ts_ns, &mut t),
    };
    let _ = describe(ev, &mut what);
    if colour {
        let mut painted = String::with_capacity(what.len() + 12);
        super::colour::paint(&mut painted, super::colour::text_style(&what), &what);
        what = painted;
    }
    let (pid, comm) = match (ev.owner, ev.task_ctx) {
        (Some(o), _) => (o.pid.to_string(), o.comm.to_string()),
        (None, true) => (ev.ctx_pid.to_string(), "?".to_string()),
        (None, false) => ("-".to_string(), "-".to_string()),
    };
    writeln!(
        w,
        "{t:<15} {pid:>7} {comm:<16} {:>21} -> {:<21} {what}",
        Endpoint(ev.local),
        Endpoint(ev.remote)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{Event, EventKind, Family};

    fn ev(kind: EventKind) -> Event {
        Event {
            ts_ns: 1_500_000,
            kind,
            owner: None,
            task_ctx: false,
            ctx_pid: 0,
            ctx_tid: 0,
            family: Family::Inet,
            local: Some(("127.0.0.1".parse().unwrap(), 40000)),
            remote: Some(("127.0.0.1".parse().unwrap(), 80)),
            skaddr: 1,
            cgroup_id: 0,
            netns: 0,
            ns_pid: 0,
            listener: 0,
            listener_exact: false,
            accept_queue: None,
            isn: None,
        }
    }

    #[test]
    fn colour_only_when_asked_and_exact() {
        let t = TimeColumn::Relative { t0_ns: 0 };
        let e = ev(EventKind::ResetReceived);
        let mut plain = Vec::new();
        line(&mut plain, &e, &t).unwrap();
        let plain = String::from_utf8(plain).unwrap();
        assert!(!plain.contains('\x1b'), "{plain:?}");
        let mut col = Vec::new();
        line_styled(&mut col, &e, &t, true).unwrap();
        let col = String::from_utf8(col).unwrap();
        assert_eq!(
            col,
            plain.replace("RST received", "\x1b[31mRST received\x1b[0m")
        );
    }
}
