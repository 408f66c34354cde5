//! One aligned text line per finished connection (tcplife-like).
//!
//! ```text
//!     TIME(s)     PID COMM             ROLE     LOCAL                 REMOTE                   HS_ms CONN/ACC_ms    LIFE_ms RETX   RST OUTCOME   PATH
//!    0.010000    4242 curl             client   127.0.0.1:51234       127.0.0.1:8080           0.041       0.050     42.016    0   0/0 closed    SYN_SENT>EST>FIN_WAIT1>FIN_WAIT2>TIME_WAIT
//! ```
//! TIME is the connection's first timestamp relative to `t0_ns`; HS is the handshake,
//! CONN/ACC the `connect()` latency (client, since SYN_SENT) or the accept-queue wait
//! (server, since ESTABLISHED); RETX counts SYN, SYN-ACK and data/FIN retransmits;
//! RST is `sent/received`. PATH is the state path after the initial state, with
//! ESTABLISHED shortened to EST and the CLOSE that enters TIME_WAIT shown as
//! TIME_WAIT (`TIME_WAIT?` when assumed, `time_wait_certain` false); after a handover
//! in FIN_WAIT2 the CLOSE shows as `(timewait sock)`, followed by `>TIME_WAIT` when
//! the peer's FIN came. A failed `connect()`/`accept()` adds its errno in brackets.
use std::fmt;
use std::io::{self, Write};

use crate::correlate::{Connection, Role};
use crate::decode::TcpState;

/// Writes the column header.
pub fn header(w: &mut impl Write) -> io::Result<()> {
    writeln!(
        w,
        "{:>11} {:>7} {:<16} {:<8} {:<21} {:<21} {:>8} {:>11} {:>10} {:>4} {:>5} {:<9} PATH",
        "TIME(s)",
        "PID",
        "COMM",
        "ROLE",
        "LOCAL",
        "REMOTE",
        "HS_ms",
        "CONN/ACC_ms",
        "LIFE_ms",
        "RETX",
        "RST",
        "OUTCOME",
    )
}

/// Writes one line for `c`; times are relative to `t0_ns`.
pub fn line(w: &mut impl Write, c: &Connection, t0_ns: u64) -> io::Result<()> {
    let secs = c.first_ts_ns.saturating_sub(t0_ns) as f64 / 1e9;
    let conn_acc = match c.role {
        Role::Server => c.accept_wait_ns,
        _ => c.connect_latency_ns.map(|v| v as i64),
    };
    let remote = if c.role == Role::Listener && c.dport == 0 {
        Col::Dash
    } else {
        Col::Endpoint(c)
    };
    let retx = c.syn_retransmits + c.synack_retransmits + c.retransmits;
    write!(
        w,
        "{:>11.6} {:>7} {:<16} {:<8} {:<21} {:<21} {:>8} {:>11} {:>10} {:>4} {:>5} {:<9} ",
        secs,
        Col::Pid(c.pid),
        Col::Comm(c),
        c.role.name(),
        Col::Local(c),
        remote,
        Col::Ms(c.handshake_ns.map(|v| v as i64)),
        Col::Ms(conn_acc),
        Col::Ms(c.lifetime_ns.map(|v| v as i64)),
        retx,
        Col::Rst(c.resets_sent, c.resets_received),
        c.outcome.name(),
    )?;
    write_path(w, c)?;
    let failed = match c.role {
        Role::Server => c.accept.filter(|a| a.ret < 0),
        _ => c.connect.filter(|r| r.ret < 0),
    };
    if let Some(r) = failed {
        match r.errno {
            Some(e) => write!(w, " [{e}]")?,
            None => write!(w, " [ret {}]", r.ret)?,
        }
    }
    if let Some(info) = &c.listener {
        write!(
            w,
            " children={} accepted={} half_open={}",
            info.children,
            info.accepted,
            info.half_open_requests.len()
        )?;
    }
    if let (Some(id), Some(rt)) = (&c.container_id, &c.container_runtime)
        && rt != "systemd"
    {
        let short: String = id.chars().take(12).collect();
        write!(w, " container={rt}:{short}")?;
    }
    writeln!(w)
}

/// The state path, e.g. `SYN_SENT>EST>FIN_WAIT1>FIN_WAIT2>TIME_WAIT`.
pub fn write_path(w: &mut impl Write, c: &Connection) -> io::Result<()> {
    let skip = usize::from(!c.open_before_start && c.states.len() > 1);
    let tw_close = c.timewait_close().map(|(_, t)| t);
    let mut first = true;
    if c.open_before_start {
        write!(w, "...")?;
        first = false;
    }
    for e in c.states.iter().skip(skip) {
        if !first {
            write!(w, ">")?;
        }
        first = false;
        let name = match e.state {
            TcpState::Established => "EST",
            TcpState::Close if tw_close == Some(e.t_ns) && c.fin_wait2_handover => {
                w.write_all(b"(timewait sock)")?;
                if c.time_wait {
                    w.write_all(b">TIME_WAIT")?;
                }
                continue;
            }
            TcpState::Close if c.time_wait && c.time_wait_t_ns == Some(e.t_ns) => {
                if c.time_wait_certain {
                    "TIME_WAIT"
                } else {
                    "TIME_WAIT?"
                }
            }
            TcpState::Unknown(n) => {
                write!(w, "UNKNOWN({n})")?;
                continue;
            }
            s => s.name(),
        };
        w.write_all(name.as_bytes())?;
    }
    if first {
        write!(w, "-")?;
    }
    Ok(())
}

/// Column values that format without allocating (padding applies to the whole).
enum Col<'a> {
    Dash,
    Pid(Option<u32>),
    Comm(&'a Connection),
    Local(&'a Connection),
    Endpoint(&'a Connection),
    Ms(Option<i64>),
    Rst(u32, u32),
}

impl fmt::Display for Col<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write as _;
        let mut buf = crate::text::StackStr::<64>::new();
        let _ = match self {
            Col::Dash | Col::Pid(None) | Col::Ms(None) => buf.write_str("-"),
            Col::Pid(Some(p)) => write!(buf, "{p}"),
            Col::Comm(c) => match c.comm {
                // Comm's Display escapes non-printable bytes and pads itself.
                Some(comm) => return fmt::Display::fmt(&comm, f),
                None => buf.write_str("-"),
            },
            Col::Local(c) => write!(buf, "{}", c.local()),
            Col::Endpoint(c) => write!(buf, "{}", c.remote()),
            Col::Ms(Some(ns)) => write!(buf, "{:.3}", *ns as f64 / 1e6),
            Col::Rst(s, r) => write!(buf, "{s}/{r}"),
        };
        f.pad(buf.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::correlate::testutil::{Ev, MS, design_sequence, run};
    use crate::decode::TcpState::*;

    fn render(conns: &[Connection], t0: u64) -> String {
        let mut out = Vec::new();
        header(&mut out).unwrap();
        for c in conns {
            line(&mut out, c, t0).unwrap();
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn golden_design_sequence() {
        let conns = run(&design_sequence());
        let got = render(&conns, 1_000 * MS);
        let want = include_str!("../../tests/fixtures/synthetic/design_conns.txt");
        assert_eq!(got, want, "\n--- got ---\n{got}--- want ---\n{want}");
    }

    #[test]
    fn refused_shows_errno_and_escaped_comm() {
        let sv = "127.0.0.1:9";
        let conns = run(&[
            Ev::tr(0, 1, Close, SynSent)
                .tuple("127.0.0.1:0", sv)
                .owner(7, "bad\x1bname")
                .task()
                .ev(),
            Ev::rst_recv(20_000, 1).tuple("127.0.0.1:40000", sv).ev(),
            Ev::tr(21_000, 1, SynSent, Close)
                .tuple("127.0.0.1:40000", sv)
                .ev(),
            Ev::connect(30_000, 1, 3, -111)
                .owner(7, "bad\x1bname")
                .task()
                .ev(),
        ]);
        let s = render(&conns, 0);
        let l = s.lines().nth(1).unwrap();
        assert!(l.contains("bad\\x1bname"), "{l}");
        assert!(l.contains(" refused "), "{l}");
        assert!(l.ends_with("SYN_SENT>CLOSE [ECONNREFUSED]"), "{l}");
        assert!(l.contains("  0/1 "), "{l}");
    }

    #[test]
    fn time_wait_paths() {
        use crate::correlate::testutil::{CHILD, server_first_orphan};
        let path = |c: &Connection| {
            let mut out = Vec::new();
            write_path(&mut out, c).unwrap();
            String::from_utf8(out).unwrap()
        };
        let (ev, _) = server_first_orphan(Some(500 * MS));
        let conns = run(&ev);
        let s = conns.iter().find(|c| c.role == Role::Server).unwrap();
        assert_eq!(
            path(s),
            "SYN_RECV>EST>FIN_WAIT1>FIN_WAIT2>(timewait sock)>TIME_WAIT"
        );
        let (ev, _) = server_first_orphan(None);
        let conns = run(&ev);
        let s = conns.iter().find(|c| c.role == Role::Server).unwrap();
        assert_eq!(path(s), "SYN_RECV>EST>FIN_WAIT1>FIN_WAIT2>(timewait sock)");
        let ev: Vec<_> = ev.into_iter().filter(|e| e.skaddr == CHILD).collect();
        let conns = run(&ev);
        assert_eq!(
            path(&conns[0]),
            "SYN_RECV>EST>FIN_WAIT1>FIN_WAIT2>TIME_WAIT?"
        );
    }

    #[test]
    fn ipv6_and_unknown_owner() {
        let conns = run(&[Ev::tr(5, 2, Established, FinWait1)
            .tuple("[::1]:8080", "[::1]:50000")
            .softirq(99)
            .ev()]);
        let s = render(&conns, 0);
        let l = s.lines().nth(1).unwrap();
        assert!(l.contains("[::1]:8080"), "{l}");
        assert!(l.contains(" open "), "{l}");
        assert!(l.ends_with("...>EST>FIN_WAIT1"), "{l}");
        assert!(!l.contains("99"), "softirq pid leaked: {l}");
    }
}
