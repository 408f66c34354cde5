//! Verdicts: pure functions of a [`Capture`]. Each reads only what the tracer (and
//! the kernel's sock_diag / sysctls) reported, never what a scenario meant to do.
use std::net::{IpAddr, SocketAddr};

use serde_json::{Value, json};

use super::capture::Capture;
use crate::correlate::{Connection, Role};
use crate::decode::{EventKind, TcpState};

/// One claim's verdict.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    pub id: &'static str,
    pub holds: bool,
    pub evidence: Value,
    pub text: String,
}

pub type VerdictFn = fn(&Capture) -> Verdict;

fn fail(id: &'static str, text: impl Into<String>, evidence: Value) -> Verdict {
    Verdict {
        id,
        holds: false,
        evidence,
        text: text.into(),
    }
}

fn ms(ns: i128) -> f64 {
    ns as f64 / 1e6
}

fn d(a: u64, b: u64) -> i128 {
    b as i128 - a as i128
}

/// Client sockets that went CLOSE → SYN_SENT.
fn clients(cap: &Capture) -> impl Iterator<Item = &Connection> {
    cap.connections
        .iter()
        .filter(|c| c.role == Role::Client && c.state_ts(TcpState::SynSent).is_some())
}

/// The server child of `client`'s connection (mirrored 4-tuple).
fn server_of<'a>(cap: &'a Capture, client: &Connection) -> Option<&'a Connection> {
    cap.connections.iter().find(|s| {
        s.role == Role::Server
            && s.sport == client.dport
            && s.dport == client.sport
            && s.saddr == client.daddr
            && s.daddr == client.saddr
    })
}

/// Timestamps of the SYN-ACK retransmits the listener made for `client`'s request
/// (`tcp:tcp_retransmit_synack`, matched by 4-tuple).
fn synack_retransmits(cap: &Capture, client: &Connection) -> Vec<u64> {
    let (Some(ca), Some(sa)) = (client.saddr, client.daddr) else {
        return Vec::new();
    };
    let mut v: Vec<u64> = cap
        .events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::SynAckRetransmit { .. }))
        .filter(|e| e.local == Some((sa, client.dport)) && e.remote == Some((ca, client.sport)))
        .filter(|e| e.ts_ns >= client.first_ts_ns)
        .map(|e| e.ts_ns)
        .collect();
    v.sort_unstable();
    v
}

fn tuple(c: &Connection) -> String {
    format!("{} → {}", c.local(), c.remote())
}

fn transitions(c: &Connection) -> Vec<String> {
    c.states
        .iter()
        .map(|s| s.state.name().to_string())
        .collect()
}

/// The transition into `to` came from `from`.
fn entered_from(c: &Connection, from: TcpState, to: TcpState) -> Option<u64> {
    c.states
        .windows(2)
        .find(|w| w[0].state == from && w[1].state == to)
        .map(|w| w[1].t_ns)
}

/// C13: connect() returns at the second handshake step, accept() only after the third.
pub fn c13(cap: &Capture) -> Verdict {
    const ID: &str = "C13";
    let Some(c) = clients(cap).find(|c| c.connect.is_some_and(|r| r.ret == 0)) else {
        return fail(
            ID,
            "no client connection whose connect() returned 0 was captured",
            json!({}),
        );
    };
    let conn = c.connect.expect("checked");
    let syn_sent = c.state_ts(TcpState::SynSent).unwrap_or(c.first_ts_ns);
    let Some(s) = server_of(cap, c) else {
        return fail(
            ID,
            format!("no server child for {}", tuple(c)),
            json!({"client": tuple(c)}),
        );
    };
    let child = entered_from(s, TcpState::Listen, TcpState::SynRecv);
    let est = entered_from(s, TcpState::SynRecv, TcpState::Established);
    let acc = s.accept.filter(|a| a.ret >= 0);
    let synacks: Vec<u64> = synack_retransmits(cap, c)
        .into_iter()
        .filter(|&t| t >= conn.t_ns && child.is_none_or(|ch| t < ch))
        .collect();
    let evidence = json!({
        "client": tuple(c),
        "client_syn_sent_ns": syn_sent,
        "connect_return_ns": conn.t_ns,
        "connect_ret": conn.ret,
        "child_syn_recv_ns": child,
        "child_established_ns": est,
        "accept_return_ns": acc.map(|a| a.t_ns),
        "accept_ret": acc.map(|a| a.ret),
        "synack_retransmits_between_ns": synacks,
    });
    let (Some(child), Some(est), Some(acc)) = (child, est, acc) else {
        return fail(
            ID,
            "the server child's LISTEN→SYN_RECV→ESTABLISHED or its accept() return is missing",
            evidence,
        );
    };
    let before_child = conn.t_ns < child;
    let holds = before_child && !synacks.is_empty() && acc.t_ns > est;
    let text = if holds {
        format!(
            "connect() returned at +{:.2} ms, {:.2} s before the server's child was created (LISTEN→SYN_RECV), with {} SYN-ACK retransmit(s) in between; accept() returned {:.2} ms after the child was ESTABLISHED",
            ms(d(syn_sent, conn.t_ns)),
            ms(d(conn.t_ns, child)) / 1e3,
            synacks.len(),
            ms(d(est, acc.t_ns)),
        )
    } else if !before_child {
        format!(
            "connect() returned {:.2} ms after the server's child existed",
            ms(d(child, conn.t_ns))
        )
    } else if synacks.is_empty() {
        "no SYN-ACK retransmit between connect() and the child's creation: the third step was not shown to be missing".to_string()
    } else {
        format!(
            "accept() returned {:.2} ms before the child was ESTABLISHED",
            ms(d(acc.t_ns, est))
        )
    };
    Verdict {
        id: ID,
        holds,
        evidence,
        text,
    }
}

/// Largest gap allowed between the end of the client's send() and the child's creation.
const SEND_TO_CHILD_MAX_NS: u64 = 200_000_000;

/// C1 (the part transitions can show): the third segment may carry data — here the
/// segment that completed the handshake was the client's first data.
pub fn c1(cap: &Capture) -> Verdict {
    const ID: &str = "C1";
    let not_shown = "not shown: that SYN and SYN-ACK carry no data (segment payloads are not visible to these tracepoints)";
    let Some(c) = clients(cap).find(|c| c.connect.is_some_and(|r| r.ret == 0)) else {
        return fail(
            ID,
            "no client connection whose connect() returned 0 was captured",
            json!({}),
        );
    };
    let conn = c.connect.expect("checked").t_ns;
    let child =
        server_of(cap, c).and_then(|s| entered_from(s, TcpState::Listen, TcpState::SynRecv));
    let (send_start, send_end) = (
        cap.marks.get("client_send_start").copied(),
        cap.marks.get("client_send_end").copied(),
    );
    let synacks: Vec<u64> = synack_retransmits(cap, c)
        .into_iter()
        .filter(|&t| t >= conn && child.is_none_or(|ch| t < ch))
        .collect();
    let evidence = json!({
        "client": tuple(c),
        "connect_return_ns": conn,
        "child_syn_recv_ns": child,
        "client_send_start_ns": send_start,
        "client_send_end_ns": send_end,
        "synack_retransmits_before_child_ns": synacks,
        "not_shown": "SYN/SYN-ACK payload sizes",
    });
    let (Some(child), Some(ss), Some(se)) = (child, send_start, send_end) else {
        return fail(
            ID,
            "the child's creation or the client's send() timestamps are missing",
            evidence,
        );
    };
    let holds = !synacks.is_empty()
        && conn < ss
        && child >= ss
        && child <= se.saturating_add(SEND_TO_CHILD_MAX_NS);
    let text = if holds {
        format!(
            "the server's child was created {:.2} ms after the client's first send() began, {:.2} s after connect() returned; the {} SYN-ACK retransmit(s) before it show the pure ACK never arrived, so the data segment was the third step; {not_shown}",
            ms(d(ss, child)),
            ms(d(conn, child)) / 1e3,
            synacks.len()
        )
    } else if synacks.is_empty() {
        format!(
            "no SYN-ACK retransmit before the child appeared: the pure ACK may have completed the handshake; {not_shown}"
        )
    } else {
        format!(
            "the child was created {:.2} ms from the client's send() start, not by the data segment; {not_shown}",
            ms(d(ss, child))
        )
    };
    Verdict {
        id: ID,
        holds,
        evidence,
        text,
    }
}

/// C2: after the handshake both ends are ESTABLISHED (before either closes).
pub fn c2(cap: &Capture) -> Verdict {
    const ID: &str = "C2";
    let mut pairs = Vec::new();
    let mut ok = true;
    let mut text = String::new();
    for c in clients(cap) {
        let Some(s) = server_of(cap, c) else { continue };
        let c_est = entered_from(c, TcpState::SynSent, TcpState::Established);
        let s_est = entered_from(s, TcpState::SynRecv, TcpState::Established);
        let first_close = [c, s]
            .iter()
            .flat_map(|x| x.states.iter().skip(1))
            .filter(|e| {
                matches!(
                    e.state,
                    TcpState::FinWait1 | TcpState::CloseWait | TcpState::Close | TcpState::LastAck
                )
            })
            .map(|e| e.t_ns)
            .min();
        let pair_ok = match (c_est, s_est) {
            (Some(a), Some(b)) => first_close.is_none_or(|fc| a.max(b) < fc),
            _ => false,
        };
        if pair_ok && text.is_empty() {
            let both = c_est.unwrap_or(0).max(s_est.unwrap_or(0));
            text = format!(
                "client SYN_SENT→ESTABLISHED at +{:.3} ms, server child SYN_RECV→ESTABLISHED at +{:.3} ms; first close {}",
                ms(d(c.first_ts_ns, c_est.unwrap_or(0))),
                ms(d(c.first_ts_ns, s_est.unwrap_or(0))),
                match first_close {
                    Some(fc) => format!("{:.2} ms after both were ESTABLISHED", ms(d(both, fc))),
                    None => "not seen".to_string(),
                }
            );
        }
        ok &= pair_ok;
        pairs.push(json!({
            "client": tuple(c),
            "client_states": transitions(c),
            "server_states": transitions(s),
            "client_established_ns": c_est,
            "server_established_ns": s_est,
            "first_close_ns": first_close,
        }));
    }
    let holds = ok && !pairs.is_empty();
    if !holds {
        text = if pairs.is_empty() {
            "no client/server pair captured".to_string()
        } else {
            "an end was not ESTABLISHED (SYN_SENT→ESTABLISHED / SYN_RECV→ESTABLISHED) before the first close".to_string()
        };
    }
    Verdict {
        id: ID,
        holds,
        evidence: json!({ "connections": pairs }),
        text,
    }
}

/// One end's teardown as the transitions show it.
fn active_tw(c: &Connection) -> Option<u64> {
    c.state_ts(TcpState::FinWait1)?;
    entered_from(c, TcpState::FinWait2, TcpState::Close)
        .or_else(|| entered_from(c, TcpState::Closing, TcpState::Close))
}

fn passive_ok(c: &Connection) -> bool {
    c.state_ts(TcpState::FinWait1).is_none()
        && entered_from(c, TcpState::Established, TcpState::CloseWait).is_some()
        && entered_from(c, TcpState::CloseWait, TcpState::LastAck).is_some()
        && entered_from(c, TcpState::LastAck, TcpState::Close).is_some()
}

/// The (client, server) pairs that both closed, with the active closer first.
fn closed_pairs(cap: &Capture) -> Vec<(&Connection, &Connection)> {
    let mut v = Vec::new();
    for c in clients(cap) {
        let Some(s) = server_of(cap, c) else { continue };
        match (
            c.state_ts(TcpState::FinWait1),
            s.state_ts(TcpState::FinWait1),
        ) {
            (Some(a), Some(b)) if b < a => v.push((s, c)),
            (Some(_), _) => v.push((c, s)),
            (None, Some(_)) => v.push((s, c)),
            (None, None) => {}
        }
    }
    v
}

/// C9: only the active closer goes through TIME_WAIT.
pub fn c9(cap: &Capture) -> Verdict {
    const ID: &str = "C9";
    let pairs = closed_pairs(cap);
    let mut ev = Vec::new();
    let (mut client_active, mut server_active, mut ok) = (0, 0, true);
    for (a, p) in &pairs {
        let tw = active_tw(a);
        let pok = passive_ok(p) && active_tw(p).is_none();
        // FIN_WAIT2 → CLOSE alone is also what an orphaned FIN_WAIT2 socket does when
        // it hands over to a FIN_WAIT2 timewait sock, so TIME_WAIT proper is taken
        // from sock_diag: the active closer's 4-tuple listed in state time-wait after
        // the close, the passive closer's never.
        let listed = tw.is_some_and(|t| diag_entry(cap, a, t).is_some());
        let passive_listed = diag_listed(cap, p);
        ok &= tw.is_some() && pok && listed && !passive_listed;
        if tw.is_some() && pok && listed && !passive_listed {
            match a.role {
                Role::Client => client_active += 1,
                _ => server_active += 1,
            }
        }
        ev.push(json!({
            "active": a.role.name(),
            "active_tuple": tuple(a),
            "active_states": transitions(a),
            "active_time_wait_ns": tw,
            "active_in_sock_diag_time_wait": listed,
            "passive_states": transitions(p),
            "passive_last_ack_close": pok,
            "passive_in_sock_diag_time_wait": passive_listed,
        }));
    }
    let holds = ok && client_active > 0 && server_active > 0;
    let text = if holds {
        format!(
            "in {} teardowns ({client_active} client-first, {server_active} server-first) the end that sent the first FIN went FIN_WAIT1→…→CLOSE and sock_diag then listed its 4-tuple in TIME_WAIT; the other went CLOSE_WAIT→LAST_ACK→CLOSE and was never listed",
            pairs.len()
        )
    } else if !ok {
        "a teardown did not follow active→TIME_WAIT (transitions and sock_diag) / passive→LAST_ACK→CLOSE, never in TIME_WAIT".to_string()
    } else {
        format!(
            "need teardowns with both close orders; saw {client_active} client-first and {server_active} server-first"
        )
    };
    Verdict {
        id: ID,
        holds,
        evidence: json!({ "teardowns": ev }),
        text,
    }
}

fn sock(a: Option<IpAddr>, p: u16) -> Option<SocketAddr> {
    a.map(|a| SocketAddr::new(a, p))
}

/// The sock_diag TIME_WAIT entry of `c`'s 4-tuple queried after `after_ns`.
fn diag_entry<'a>(
    cap: &'a Capture,
    c: &Connection,
    after_ns: u64,
) -> Option<&'a super::capture::TimeWaitEntry> {
    let (l, r) = (sock(c.saddr, c.sport), sock(c.daddr, c.dport));
    cap.time_wait
        .iter()
        .find(|e| Some(e.local) == l && Some(e.remote) == r && e.t_ns >= after_ns)
}

/// `c`'s 4-tuple was ever listed in TIME_WAIT by sock_diag.
fn diag_listed(cap: &Capture, c: &Connection) -> bool {
    diag_entry(cap, c, 0).is_some()
}

/// Bounds of the TIME_WAIT timer sock_diag must report right after the close.
const TW_MIN_S: u64 = 50;
const TW_MAX_S: u64 = 60;

/// C11: TIME_WAIT lasts 2 MSL (60 s on Linux): sock_diag shows the active closer's
/// 4-tuple in TIME_WAIT with 50–60 s left right after the close, and not the passive's.
pub fn c11(cap: &Capture) -> Verdict {
    const ID: &str = "C11";
    let mut ev = Vec::new();
    let mut ok = true;
    let mut timers = Vec::new();
    let pairs = closed_pairs(cap);
    for (a, p) in &pairs {
        let Some(tw_t) = active_tw(a) else {
            ok = false;
            continue;
        };
        let entry = diag_entry(cap, a, tw_t);
        let passive_listed = diag_listed(cap, p);
        let good =
            entry.is_some_and(|e| (TW_MIN_S..=TW_MAX_S).contains(&e.timer_s)) && !passive_listed;
        ok &= good;
        if let Some(e) = entry {
            timers.push((e.timer_s, ms(d(tw_t, e.t_ns))));
        }
        ev.push(json!({
            "active": a.role.name(),
            "active_tuple": tuple(a),
            "entered_time_wait_ns": tw_t,
            "sock_diag": entry,
            "passive_in_time_wait": passive_listed,
        }));
    }
    let holds = ok && !pairs.is_empty();
    let text = if holds {
        format!(
            "sock_diag listed each active closer's 4-tuple in TIME_WAIT with {} left (queried {} ms after it entered), the passive closer's never",
            timers
                .iter()
                .map(|t| format!("{} s", t.0))
                .collect::<Vec<_>>()
                .join(", "),
            timers
                .iter()
                .map(|t| format!("{:.0}", t.1))
                .collect::<Vec<_>>()
                .join(", "),
        )
    } else if pairs.is_empty() {
        "no closed connection captured".to_string()
    } else {
        format!(
            "an active closer was not in TIME_WAIT with {TW_MIN_S}–{TW_MAX_S} s left (or the passive closer was)"
        )
    };
    Verdict {
        id: ID,
        holds,
        evidence: json!({ "teardowns": ev, "time_wait_sockets": cap.time_wait }),
        text,
    }
}

/// C3: unanswered SYN-ACKs are retransmitted with growing gaps, up to
/// `tcp_synack_retries`; then the request is gone (the client's data gets a RST and
/// no child socket was ever created).
pub fn c3(cap: &Capture) -> Verdict {
    const ID: &str = "C3";
    let max: Option<u32> = cap
        .sysctls
        .get("server:net.ipv4.tcp_synack_retries")
        .and_then(|v| v.parse().ok());
    let Some(c) = clients(cap).find(|c| c.connect.is_some_and(|r| r.ret == 0)) else {
        return fail(
            ID,
            "no client connection whose connect() returned 0 was captured",
            json!({}),
        );
    };
    let est = entered_from(c, TcpState::SynSent, TcpState::Established).unwrap_or(c.first_ts_ns);
    let rtx = synack_retransmits(cap, c);
    let mut gaps = Vec::new();
    let mut prev = est;
    for &t in &rtx {
        gaps.push(d(prev, t));
        prev = t;
    }
    let growing = gaps.windows(2).all(|w| w[1] > w[0]);
    let child = server_of(cap, c).and_then(|s| s.state_ts(TcpState::SynRecv));
    let last = rtx.last().copied();
    let reset = cap
        .events
        .iter()
        // Within the connection's life: the kernel reuses a freed socket's address.
        .filter(|e| {
            e.kind == EventKind::ResetReceived
                && e.skaddr == c.skaddr
                && e.ts_ns >= c.first_ts_ns
                && e.ts_ns <= c.last_ts_ns
        })
        .map(|e| e.ts_ns)
        .find(|&t| last.is_some_and(|l| t > l));
    let evidence = json!({
        "client": tuple(c),
        "tcp_synack_retries": max,
        "synack_retransmits_ns": rtx,
        "gaps_ms": gaps.iter().map(|&g| ms(g)).collect::<Vec<_>>(),
        "child_created_ns": child,
        "client_reset_received_ns": reset,
    });
    let Some(max) = max else {
        return fail(
            ID,
            "tcp_synack_retries of the server namespace unknown",
            evidence,
        );
    };
    let holds = rtx.len() == max as usize && growing && child.is_none() && reset.is_some();
    let text = if holds {
        format!(
            "{} SYN-ACK retransmits (= net.ipv4.tcp_synack_retries) at gaps of {} ms; no child socket was ever created, and the client's later data got a RST {:.2} s after the last retransmit: the request was gone",
            rtx.len(),
            gaps.iter()
                .map(|&g| format!("{:.0}", ms(g)))
                .collect::<Vec<_>>()
                .join(", "),
            ms(d(last.unwrap_or(0), reset.unwrap_or(0))) / 1e3
        )
    } else if rtx.len() != max as usize {
        format!(
            "{} SYN-ACK retransmits, tcp_synack_retries is {max}",
            rtx.len()
        )
    } else if !growing {
        "SYN-ACK retransmit gaps did not grow".to_string()
    } else if child.is_some() {
        "a child socket was created: the request completed".to_string()
    } else {
        "the client got no RST after the last SYN-ACK retransmit: removal of the request not shown"
            .to_string()
    };
    Verdict {
        id: ID,
        holds,
        evidence,
        text,
    }
}

/// Smallest gap accepted between a SYN and its retransmit (the initial RTO is 1 s).
const SYN_GAP_MIN_NS: i128 = 800_000_000;
/// Jitter allowed when checking that the SYN retransmit gaps do not shrink.
const SYN_GAP_SLACK_NS: i128 = 50_000_000;
/// `-ETIMEDOUT`.
const ETIMEDOUT_RET: i64 = -110;

/// S1 (a lab check, not a CLAIMS.md claim): unanswered SYNs are retransmitted
/// `tcp_syn_retries` times with non-shrinking gaps (backoff), then the client socket
/// goes SYN_SENT→CLOSE and the blocking `connect()` returns -ETIMEDOUT; no server child
/// socket was ever created.
pub fn s1(cap: &Capture) -> Verdict {
    const ID: &str = "S1";
    let max: Option<usize> = cap
        .sysctls
        .get("client:net.ipv4.tcp_syn_retries")
        .and_then(|v| v.parse().ok());
    let linear = cap
        .sysctls
        .get("client:net.ipv4.tcp_syn_linear_timeouts")
        .cloned();
    let Some(c) = clients(cap)
        .find(|c| c.connect.is_some())
        .or_else(|| clients(cap).next())
    else {
        return fail(
            ID,
            "no client socket entering SYN_SENT was captured",
            json!({}),
        );
    };
    let syn_sent = c.state_ts(TcpState::SynSent).unwrap_or(c.first_ts_ns);
    let mut rtx: Vec<u64> = cap
        .events
        .iter()
        .filter(|e| e.skaddr == c.skaddr && e.ts_ns >= syn_sent && e.ts_ns <= c.last_ts_ns)
        .filter(|e| {
            e.kind
                == EventKind::Retransmit {
                    state: TcpState::SynSent,
                }
        })
        .map(|e| e.ts_ns)
        .collect();
    rtx.sort_unstable();
    let mut gaps = Vec::new();
    let mut prev = syn_sent;
    for &t in &rtx {
        gaps.push(d(prev, t));
        prev = t;
    }
    let close = entered_from(c, TcpState::SynSent, TcpState::Close);
    let conn = c.connect;
    let children: Vec<String> = cap
        .connections
        .iter()
        .filter(|s| s.role == Role::Server)
        .map(tuple)
        .collect();
    let evidence = json!({
        "client": tuple(c),
        "client_states": transitions(c),
        "tcp_syn_retries": max,
        "tcp_syn_linear_timeouts": linear,
        "syn_sent_ns": syn_sent,
        "syn_retransmits_ns": rtx,
        "gaps_ms": gaps.iter().map(|&g| ms(g)).collect::<Vec<_>>(),
        "syn_sent_close_ns": close,
        "connect_return_ns": conn.map(|r| r.t_ns),
        "connect_ret": conn.map(|r| r.ret),
        "server_children": children,
        "lab_connect_start_ns": cap.marks.get("client_connect_start"),
        "lab_connect_end_ns": cap.marks.get("client_connect_end"),
        "lab_connect_errno": cap.marks.get("client_connect_errno"),
    });
    let Some(max) = max else {
        return fail(
            ID,
            "tcp_syn_retries of the client namespace unknown",
            evidence,
        );
    };
    let gaps_ok = gaps.iter().all(|&g| g >= SYN_GAP_MIN_NS);
    let non_decreasing = gaps.windows(2).all(|w| w[1] + SYN_GAP_SLACK_NS >= w[0]);
    let last = rtx.last().copied().unwrap_or(syn_sent);
    let close_ok = close.is_some_and(|cl| cl > last);
    let conn_ok = match (conn, close) {
        (Some(r), Some(cl)) => r.ret == ETIMEDOUT_RET && r.t_ns >= cl,
        _ => false,
    };
    let holds =
        rtx.len() == max && gaps_ok && non_decreasing && close_ok && conn_ok && children.is_empty();
    let gap_list = gaps
        .iter()
        .map(|&g| format!("{:.0}", ms(g)))
        .collect::<Vec<_>>()
        .join(", ");
    let text = if holds {
        let (cl, r) = (close.unwrap_or(0), conn.map_or(0, |r| r.t_ns));
        format!(
            "{} SYN retransmits (= net.ipv4.tcp_syn_retries) at gaps of {gap_list} ms from the first SYN{}; the client went SYN_SENT→CLOSE {:.2} s after the last one ({:.2} s after the first SYN) and connect() returned -110 (ETIMEDOUT) {:.3} ms after that CLOSE; the server never created a child socket",
            rtx.len(),
            linear
                .as_deref()
                .map(|l| format!(" (tcp_syn_linear_timeouts={l})"))
                .unwrap_or_default(),
            ms(d(last, cl)) / 1e3,
            ms(d(syn_sent, cl)) / 1e3,
            ms(d(cl, r)),
        )
    } else if rtx.len() != max {
        format!(
            "{} SYN retransmits (Retransmit in SYN_SENT on the client socket), tcp_syn_retries is {max}{}",
            rtx.len(),
            linear
                .as_deref()
                .filter(|l| *l != "0")
                .map(|l| format!(
                    " (tcp_syn_linear_timeouts={l} adds up to {l} linear-timeout retransmits)"
                ))
                .unwrap_or_default()
        )
    } else if !gaps_ok {
        format!(
            "a SYN retransmit came less than {} ms after the previous SYN (gaps {gap_list} ms)",
            SYN_GAP_MIN_NS / 1_000_000
        )
    } else if !non_decreasing {
        format!("the SYN retransmit gaps shrank ({gap_list} ms)")
    } else if !close_ok {
        "no SYN_SENT→CLOSE of the client socket after its last SYN retransmit".to_string()
    } else if !conn_ok {
        match conn {
            None => "no connect() return captured for the client socket".to_string(),
            Some(r) if r.ret != ETIMEDOUT_RET => format!(
                "connect() returned {} ({}), not -110 (ETIMEDOUT)",
                r.ret,
                r.errno.unwrap_or("-")
            ),
            Some(_) => "connect() returned before the client socket's SYN_SENT→CLOSE".to_string(),
        }
    } else {
        format!(
            "the server created a child socket ({}): a SYN got through",
            children.join("; ")
        )
    };
    Verdict {
        id: ID,
        holds,
        evidence,
        text,
    }
}

/// C10: half-close — after the client's FIN it still receives; the connection is
/// fully closed only after both FINs.
pub fn c10(cap: &Capture) -> Verdict {
    const ID: &str = "C10";
    let recv_t = cap.marks.get("client_recv_after_fin").copied();
    let recv_bytes = cap
        .marks
        .get("client_recv_after_fin_bytes")
        .copied()
        .unwrap_or(0);
    let Some(c) = clients(cap).find(|c| c.state_ts(TcpState::FinWait1).is_some()) else {
        return fail(ID, "no client that sent a FIN was captured", json!({}));
    };
    let Some(s) = server_of(cap, c) else {
        return fail(ID, format!("no server child for {}", tuple(c)), json!({}));
    };
    let c_fin = entered_from(c, TcpState::Established, TcpState::FinWait1);
    let c_fw2 = entered_from(c, TcpState::FinWait1, TcpState::FinWait2);
    let s_cw = entered_from(s, TcpState::Established, TcpState::CloseWait);
    let s_la = entered_from(s, TcpState::CloseWait, TcpState::LastAck);
    let c_close = entered_from(c, TcpState::FinWait2, TcpState::Close);
    let s_close = entered_from(s, TcpState::LastAck, TcpState::Close);
    let state_at_recv = recv_t.and_then(|t| c.state_at(t));
    let server_at_recv = recv_t.and_then(|t| s.state_at(t));
    let evidence = json!({
        "client": tuple(c),
        "client_states": transitions(c),
        "server_states": transitions(s),
        "client_fin_wait1_ns": c_fin,
        "server_close_wait_ns": s_cw,
        "client_recv_after_fin_ns": recv_t,
        "client_recv_after_fin_bytes": recv_bytes,
        "client_state_at_recv": state_at_recv.map(|x| x.name()),
        "server_state_at_recv": server_at_recv.map(|x| x.name()),
        "server_last_ack_ns": s_la,
        "client_close_ns": c_close,
        "server_close_ns": s_close,
    });
    let (Some(fin), Some(_), Some(cw), Some(la), Some(cc), Some(sc), Some(rt)) =
        (c_fin, c_fw2, s_cw, s_la, c_close, s_close, recv_t)
    else {
        return fail(
            ID,
            "a step is missing (client FIN_WAIT1→FIN_WAIT2→CLOSE, server CLOSE_WAIT→LAST_ACK→CLOSE, or the client's read after its FIN)",
            evidence,
        );
    };
    let holds = recv_bytes > 0
        && rt > fin
        && matches!(state_at_recv, Some(TcpState::FinWait1 | TcpState::FinWait2))
        && server_at_recv == Some(TcpState::CloseWait)
        && cc > la
        && sc > la;
    let text = if holds {
        format!(
            "after its FIN (FIN_WAIT1 at +0 ms) the client read {recv_bytes} bytes at +{:.2} ms while in {} (server in CLOSE_WAIT since +{:.2} ms); it closed only after the server's FIN (LAST_ACK at +{:.2} ms), both ends CLOSE at +{:.2} / +{:.2} ms",
            ms(d(fin, rt)),
            state_at_recv.map_or("?", |x| x.name()),
            ms(d(fin, cw)),
            ms(d(fin, la)),
            ms(d(fin, cc)),
            ms(d(fin, sc)),
        )
    } else {
        "the client did not receive data while half-closed, or closed before the server's FIN"
            .to_string()
    };
    Verdict {
        id: ID,
        holds,
        evidence,
        text,
    }
}

/// FIN retransmits (in LAST_ACK) and resets received of a passive closer.
fn last_ack_story(cap: &Capture, s: &Connection) -> (Vec<u64>, Vec<u64>) {
    let la = s.state_ts(TcpState::LastAck).unwrap_or(u64::MAX);
    let fin_rtx = cap
        .events
        .iter()
        .filter(|e| e.skaddr == s.skaddr && e.ts_ns >= la && e.ts_ns <= s.last_ts_ns)
        .filter(|e| {
            e.kind
                == EventKind::Retransmit {
                    state: TcpState::LastAck,
                }
        })
        .map(|e| e.ts_ns)
        .collect();
    let resets = cap
        .events
        .iter()
        .filter(|e| e.skaddr == s.skaddr && e.ts_ns >= la && e.ts_ns <= s.last_ts_ns)
        .filter(|e| e.kind == EventKind::ResetReceived)
        .map(|e| e.ts_ns)
        .collect();
    (fin_rtx, resets)
}

/// C12: TIME_WAIT lets the passive closer close properly. With the last ACK lost, the
/// passive closer retransmits its FIN; if the active closer kept no TIME_WAIT it gets a
/// RST back, if it did, its FIN is acknowledged and it closes without one.
pub fn c12(cap: &Capture) -> Verdict {
    const ID: &str = "C12";
    let mut rounds = Vec::new();
    let (mut reset_case, mut clean_case) = (None, None);
    for (a, p) in closed_pairs(cap) {
        if p.role != Role::Server {
            continue;
        }
        let (fin_rtx, resets) = last_ack_story(cap, p);
        let la_close = entered_from(p, TcpState::LastAck, TcpState::Close);
        let in_tw = diag_listed(cap, a);
        let first_rtx = fin_rtx.first().copied();
        let reset_after_rtx = resets
            .iter()
            .copied()
            .find(|&r| first_rtx.is_some_and(|f| r > f));
        if first_rtx.is_some() && la_close.is_some() {
            if !in_tw && reset_after_rtx.is_some() && reset_case.is_none() {
                reset_case = Some((
                    fin_rtx.len(),
                    ms(d(first_rtx.unwrap_or(0), reset_after_rtx.unwrap_or(0))),
                ));
            }
            if in_tw && resets.is_empty() && clean_case.is_none() {
                clean_case = Some(fin_rtx.len());
            }
        }
        rounds.push(json!({
            "active": tuple(a),
            "active_in_sock_diag_time_wait": in_tw,
            "passive_states": transitions(p),
            "passive_fin_retransmits_ns": fin_rtx,
            "passive_resets_received_ns": resets,
            "passive_last_ack_close_ns": la_close,
        }));
    }
    let holds = reset_case.is_some() && clean_case.is_some();
    let text = match (reset_case, clean_case) {
        (Some((n1, rst_ms)), Some(n2)) => format!(
            "last ACK dropped: with no TIME_WAIT at the active closer the passive closer retransmitted its FIN ({n1}×) and got a RST {rst_ms:.2} ms after the first retransmit (LAST_ACK→CLOSE by reset — an error had its application still been waiting); with the active closer in TIME_WAIT its FIN retransmit ({n2}×) was acknowledged and LAST_ACK→CLOSE came without a reset"
        ),
        (None, _) => "no round where a passive closer's FIN retransmit in LAST_ACK got a RST from an active closer without TIME_WAIT".to_string(),
        (_, None) => "no round where the active closer was in TIME_WAIT and the passive closer's retransmitted FIN was acknowledged without a reset".to_string(),
    };
    Verdict {
        id: ID,
        holds,
        evidence: json!({ "rounds": rounds, "sysctls": cap.sysctls }),
        text,
    }
}

type Ep = (IpAddr, u16);

/// What the lab recorded of its own actions and observations under `keys` (evidence
/// only: no verdict below decides on these unless it says so).
fn lab_marks(cap: &Capture, keys: &[&str]) -> Value {
    Value::Object(
        keys.iter()
            .filter_map(|k| cap.marks.get(*k).map(|v| ((*k).to_string(), json!(v))))
            .collect(),
    )
}

fn ep_str(e: Ep) -> String {
    SocketAddr::new(e.0, e.1).to_string()
}

/// The listening socket's (address, port), from its CLOSE → LISTEN.
fn listener(cap: &Capture) -> Option<Ep> {
    cap.connections
        .iter()
        .find(|c| c.role == Role::Listener)
        .and_then(|c| Some((c.saddr?, c.sport)))
}

/// What the server side did for requests from `peer`: its children (LISTEN →
/// SYN_RECV, socket and time), successful accept() returns, SYN-ACK retransmits.
#[derive(Debug, Default)]
struct PeerStory {
    children: Vec<(u64, u64)>,
    accepts: Vec<u64>,
    synack_rtx: Vec<u64>,
}

fn peer_story(cap: &Capture, server: Ep, peer: Ep) -> PeerStory {
    let mut st = PeerStory::default();
    // The sockets of this 4-tuple: before 6.15 a child's LISTEN → SYN_RECV carries
    // its listener's addresses (the remote end unset), so a child belongs to the peer
    // when any of its events names it.
    let mut sockets: Vec<u64> = Vec::new();
    for e in &cap.events {
        if e.skaddr != 0
            && e.local == Some(server)
            && e.remote == Some(peer)
            && matches!(e.kind, EventKind::Transition { .. })
            && !sockets.contains(&e.skaddr)
        {
            sockets.push(e.skaddr);
        }
    }
    for e in &cap.events {
        match e.kind {
            EventKind::Transition {
                old: TcpState::Listen,
                new: TcpState::SynRecv,
            } if sockets.contains(&e.skaddr)
                || (e.local == Some(server) && e.remote == Some(peer)) =>
            {
                st.children.push((e.skaddr, e.ts_ns))
            }
            EventKind::SynAckRetransmit { .. }
                if e.local == Some(server) && e.remote == Some(peer) =>
            {
                st.synack_rtx.push(e.ts_ns)
            }
            _ => {}
        }
    }
    // An accept() return names the new socket; its tuple may be missing on some
    // paths, so the child's socket address counts too.
    for e in &cap.events {
        if let EventKind::AcceptReturn { ret, .. } = e.kind {
            let on_child = st.children.iter().any(|&(sk, _)| sk == e.skaddr && sk != 0);
            let on_tuple = e.local == Some(server) && e.remote == Some(peer);
            if ret >= 0 && (on_child || on_tuple) {
                st.accepts.push(e.ts_ns);
            }
        }
    }
    st.synack_rtx.sort_unstable();
    st
}

/// `SK_RST_REASON_NO_SOCKET`, the reason 6.12+ kernels report for a reset sent
/// because no socket matched the segment.
const RST_REASON_NO_SOCKET: u32 = 1;

/// How long after the stale request's reset the capture must go on (its SYN-ACK
/// would be retransmitted ~1 s after it was sent, which was before the reset).
const STALE_WINDOW_NS: u64 = 1_500_000_000;

/// C4: a delayed old SYN makes no connection with three steps. The listener answers
/// a SYN from a client port with no socket behind it; the client's kernel resets the
/// SYN-ACK (a reset sent with no socket); the listener makes no child for it, accept()
/// never returns it, and its request is not retransmitted afterwards (it was
/// dropped) — while a control request whose SYN-ACK went unanswered is retransmitted,
/// and a real connection in the same capture shows children and accept() are seen.
pub fn c4(cap: &Capture) -> Verdict {
    const ID: &str = "C4";
    let not_shown = "not shown: the SYN-ACK itself (no tracepoint sees it sent; the client's reset is the answer to it) and the removal of the request (not traced; shown by the missing retransmits)";
    let Some(srv) = listener(cap) else {
        return fail(ID, "no listening socket was captured", json!({}));
    };
    let last_ts = cap.events.iter().map(|e| e.ts_ns).max().unwrap_or(0);
    // Resets sent with no socket towards the listener: a client's kernel answering
    // a segment for a port it has no socket on.
    let stale: Vec<(Ep, u64, Option<u32>)> = cap
        .events
        .iter()
        .filter_map(|e| match e.kind {
            // The reason, where the kernel reports one, must be "no socket".
            EventKind::ResetSent { reason, .. }
                if e.skaddr == 0
                    && e.remote == Some(srv)
                    && reason.is_none_or(|r| r == RST_REASON_NO_SOCKET) =>
            {
                Some((e.local?, e.ts_ns, reason))
            }
            _ => None,
        })
        .collect();
    let mut stale_ev = Vec::new();
    let mut stale_ok = None;
    let mut all_clean = true;
    for &(peer, t, reason) in &stale {
        let st = peer_story(cap, srv, peer);
        let ok = st.children.is_empty()
            && st.accepts.is_empty()
            && st.synack_rtx.is_empty()
            && last_ts >= t.saturating_add(STALE_WINDOW_NS);
        stale_ev.push(json!({
            "peer": ep_str(peer),
            "reset_sent_ns": t,
            "reset_reason": reason,
            "children": st.children.len(),
            "accepts": st.accepts.len(),
            "synack_retransmits_ns": st.synack_rtx,
            "capture_after_reset_ms": ms(d(t, last_ts)),
        }));
        all_clean &= ok;
        if ok && stale_ok.is_none() {
            stale_ok = Some((peer, t));
        }
    }
    // Every stale request must have come to nothing, not just one of them.
    let stale_ok = stale_ok.filter(|_| all_clean);
    // The control: requests whose SYN-ACK was retransmitted (never answered) and that
    // never became a child.
    let mut controls: Vec<(Ep, Vec<u64>)> = Vec::new();
    for e in &cap.events {
        if let (EventKind::SynAckRetransmit { .. }, Some(peer)) = (e.kind, e.remote)
            && e.local == Some(srv)
            && !controls.iter().any(|c| c.0 == peer)
        {
            let st = peer_story(cap, srv, peer);
            if st.children.is_empty() && !stale.iter().any(|s| s.0 == peer) {
                controls.push((peer, st.synack_rtx));
            }
        }
    }
    // The real connection: a child that accept() returned.
    let real = cap
        .connections
        .iter()
        .find(|c| {
            c.role == Role::Server
                && c.accept.is_some_and(|a| a.ret >= 0)
                && entered_from(c, TcpState::Listen, TcpState::SynRecv).is_some()
        })
        .map(tuple);
    let evidence = json!({
        "listener": ep_str(srv),
        "stale": stale_ev,
        "controls": controls.iter().map(|(p, r)| json!({"peer": ep_str(*p), "synack_retransmits_ns": r})).collect::<Vec<_>>(),
        "accepted_connection": real,
        "lab": lab_marks(cap, &["raw_stale_isn", "raw_stale_syn_sent", "raw_control_syn_sent"]),
        "not_shown": "the SYN-ACK to the stale SYN; the request's removal",
    });
    let control = controls.first();
    let holds = stale_ok.is_some() && control.is_some() && real.is_some();
    let text = match (stale_ok, control, &real) {
        (Some((peer, t)), Some((cpeer, crtx)), Some(real)) => format!(
            "the client's kernel answered the listener's SYN-ACK to the stale SYN from {} with a reset sent with no socket (tcp_send_reset, no sk); the listener made no child for it (no LISTEN→SYN_RECV), accept() never returned it, and its SYN-ACK was never retransmitted in the {:.2} s the capture goes on — while the control request from {} (its SYN-ACK unanswered) was retransmitted {}× and the real connection {} was a child accept() returned: the old SYN cost a request sock and one SYN-ACK, no connection; {not_shown}",
            ep_str(peer),
            ms(d(t, last_ts)) / 1e3,
            ep_str(*cpeer),
            crtx.len(),
            real
        ),
        (None, _, _) if stale.is_empty() => format!(
            "no reset sent with no socket towards the listener {}: the client's kernel was not seen answering a SYN-ACK for a port it has no socket on",
            ep_str(srv)
        ),
        (None, _, _) => format!(
            "the stale request made a child, was accept()ed, was retransmitted after the reset, or the capture ended less than {:.1} s after the reset",
            STALE_WINDOW_NS as f64 / 1e9
        ),
        (_, None, _) => "no control request with a SYN-ACK retransmit: nothing shows an unanswered request would have been retransmitted".to_string(),
        (_, _, None) => "no child socket returned by accept() in the capture: nothing shows children and accept() returns would have been seen".to_string(),
    };
    Verdict {
        id: ID,
        holds,
        evidence,
        text,
    }
}

/// C8: duplicated SYNs build one connection. With `tcp_synack_retries=0` read back
/// (the listener's timer retransmits no SYN-ACK), a SYN-ACK retransmit before the
/// child exists can only answer a second copy of the SYN that reached the same
/// request; that 4-tuple must then have exactly one child and one accept() return,
/// and no 4-tuple more than one child.
pub fn c8(cap: &Capture) -> Verdict {
    const ID: &str = "C8";
    let retries = cap
        .sysctls
        .get("server:net.ipv4.tcp_synack_retries")
        .cloned();
    let Some(srv) = listener(cap) else {
        return fail(ID, "no listening socket was captured", json!({}));
    };
    let mut peers: Vec<Ep> = Vec::new();
    for e in &cap.events {
        if e.local != Some(srv) {
            continue;
        }
        let relevant = matches!(
            e.kind,
            EventKind::SynAckRetransmit { .. }
                | EventKind::Transition {
                    old: TcpState::Listen,
                    new: TcpState::SynRecv
                }
        );
        // A remote end without a port is a pre-6.15 child's birth (see peer_story).
        if let (true, Some(p)) = (relevant, e.remote)
            && p.1 != 0
            && !peers.contains(&p)
        {
            peers.push(p);
        }
    }
    let mut ev = Vec::new();
    let mut dup_case = None;
    let mut max_children = 0;
    for &p in &peers {
        let st = peer_story(cap, srv, p);
        let first_child = st.children.iter().map(|c| c.1).min();
        let dup_rtx: Vec<u64> = st
            .synack_rtx
            .iter()
            .copied()
            .filter(|&t| first_child.is_some_and(|c| t < c))
            .collect();
        let established = cap.connections.iter().any(|c| {
            // The address and the LISTEN → SYN_RECV time: a freed child's address
            // may be another connection's later.
            st.children
                .iter()
                .any(|ch| ch.0 == c.skaddr && c.state_ts(TcpState::SynRecv) == Some(ch.1))
                && entered_from(c, TcpState::SynRecv, TcpState::Established).is_some()
        });
        max_children = max_children.max(st.children.len());
        if !dup_rtx.is_empty()
            && st.children.len() == 1
            && st.accepts.len() == 1
            && established
            && dup_case.is_none()
        {
            dup_case = Some((p, dup_rtx.len(), st.children[0].1, st.accepts[0]));
        }
        ev.push(json!({
            "peer": ep_str(p),
            "synack_retransmits_ns": st.synack_rtx,
            "synack_retransmits_before_child": dup_rtx.len(),
            "children": st.children.iter().map(|c| c.1).collect::<Vec<_>>(),
            "child_established": established,
            "accepts_ns": st.accepts,
        }));
    }
    let evidence = json!({
        "listener": ep_str(srv),
        "tcp_synack_retries": retries,
        "peers": ev,
        "lab": lab_marks(cap, &["raw_isn", "raw_syn_1_sent", "raw_syn_2_sent", "raw_synacks_seen", "raw_ack_sent"]),
    });
    if retries.as_deref() != Some("0") {
        return fail(
            ID,
            format!(
                "tcp_synack_retries of the server namespace is {}, not 0: a SYN-ACK retransmit could be the timer's, not the answer to a duplicate SYN",
                retries.as_deref().unwrap_or("unknown")
            ),
            evidence,
        );
    }
    let holds = dup_case.is_some() && max_children <= 1;
    let text = match dup_case {
        Some((p, n, child, acc)) if holds => format!(
            "the listener answered a second copy of the SYN from {} with a SYN-ACK retransmit ({n}× before the child existed; tcp_synack_retries=0, so not its timer): the copies met the same request; one child was created ({:.2} ms after the first retransmit) and accept() returned once ({:.2} ms after it) — no second connection",
            ep_str(p),
            ms(d(
                cap.events
                    .iter()
                    .filter(|e| matches!(e.kind, EventKind::SynAckRetransmit { .. })
                        && e.remote == Some(p))
                    .map(|e| e.ts_ns)
                    .min()
                    .unwrap_or(child),
                child
            )),
            ms(d(child, acc)),
        ),
        Some(_) => format!("a 4-tuple got {max_children} children"),
        None => "no 4-tuple whose duplicate SYN (a SYN-ACK retransmit before its child) was followed by exactly one child that was ESTABLISHED and accept()ed once".to_string(),
    };
    Verdict {
        id: ID,
        holds,
        evidence,
        text,
    }
}

/// Smallest time the reordered FIN must have waited for the missing bytes.
const FIN_HELD_MIN_NS: i128 = 100_000_000;

fn no_resets(c: &Connection) -> bool {
    c.resets_sent == 0 && c.resets_received == 0
}

/// C6: duplicates are dropped, data is delivered in order, the sender learns what was
/// received. What the tracepoints show: (round 1, the kernel on both ends, every
/// segment after the SYN duplicated by nftables — its counter read back) the sender
/// went FIN_WAIT1→FIN_WAIT2, i.e. a cumulative ACK covered all its data and its FIN,
/// the receiver reached CLOSE_WAIT (its FIN in sequence), no resets; (round 2, a
/// hand-made sender whose FIN and second half came first) the receiver went
/// ESTABLISHED→CLOSE_WAIT only after the missing first half was sent and before any
/// duplicate was, the FIN having been sent ≥ 100 ms earlier: the kernel took the FIN
/// (held out of order) only once the bytes before it were in; (round 3, the kernel
/// on both ends, the first of four data segments dropped once at the receiver — the
/// counter read back) the sender retransmitted exactly as many segments as were
/// dropped, not the ones after it that the ACKs reported received. That each byte
/// reached the application once and in order is the lab's own read().
pub fn c6(cap: &Capture) -> Verdict {
    const ID: &str = "C6";
    let not_shown = "not shown by any tracepoint: sequence and ACK numbers, the duplicates being discarded and the bytes reaching the application once and in order (that is the lab's own read())";
    let mark = |k: &str| cap.marks.get(k).copied();
    // Rounds 1 and 3: kernel clients and their server children, in order.
    let mut kernel: Vec<(&Connection, &Connection)> = clients(cap)
        .filter_map(|c| server_of(cap, c).map(|s| (c, s)))
        .collect();
    kernel.sort_by_key(|(c, _)| c.first_ts_ns);
    let r1 = kernel.first().copied();
    let r3 = kernel.get(1).copied();
    let dup_packets = mark("round1_dup_packets").unwrap_or(0);
    let r1_ev = r1.map(|(c, s)| {
        json!({
            "client": tuple(c),
            "client_states": transitions(c),
            "server_states": transitions(s),
            "client_retransmits": c.retransmits,
            "server_retransmits": s.retransmits,
            "resets": c.resets_sent + c.resets_received + s.resets_sent + s.resets_received,
        })
    });
    let orderly = |(c, s): (&Connection, &Connection)| {
        entered_from(c, TcpState::Established, TcpState::FinWait1).is_some()
            && entered_from(c, TcpState::FinWait1, TcpState::FinWait2).is_some()
            && entered_from(s, TcpState::Established, TcpState::CloseWait).is_some()
            && entered_from(s, TcpState::LastAck, TcpState::Close).is_some()
            && no_resets(c)
            && no_resets(s)
    };
    let r1_ok = r1.is_some_and(orderly) && dup_packets > 0 && mark("round1_read_exact") == Some(1);
    // Round 3: one data segment dropped at the receiver; the sender must have
    // retransmitted exactly as many segments as were dropped, not those after them.
    let drops = mark("round3_dropped_packets").unwrap_or(0);
    let r3_ev = r3.map(|(c, s)| {
        json!({
            "client": tuple(c),
            "client_states": transitions(c),
            "server_states": transitions(s),
            "client_retransmits": c.retransmits,
            "client_retransmits_ns": c.retransmit_ts_ns,
            "resets": c.resets_sent + c.resets_received + s.resets_sent + s.resets_received,
        })
    });
    let r3_ok = r3.is_some_and(|p| orderly(p) && u64::from(p.0.retransmits) == drops)
        && drops > 0
        && mark("round3_read_exact") == Some(1);
    // Round 2: a child whose peer is no captured client socket. By connection id, not
    // socket address: the kernel may give round 2's child the memory of round 1's.
    let r2 = cap.connections.iter().find(|s| {
        s.role == Role::Server
            && !clients(cap).any(|c| server_of(cap, c).is_some_and(|x| x.id == s.id))
    });
    let (fin_sent, gap, dups) = (
        mark("raw_fin_sent"),
        mark("raw_gap_fill_sent"),
        mark("raw_duplicates_sent"),
    );
    let cw = r2.and_then(|s| entered_from(s, TcpState::Established, TcpState::CloseWait));
    let before_gap = r2
        .zip(gap)
        .and_then(|(s, g)| s.state_at(g.saturating_sub(1)));
    let r2_ev = json!({
        "server": r2.map(tuple),
        "server_states": r2.map(transitions),
        "fin_sent_ns": fin_sent,
        "gap_fill_sent_ns": gap,
        "duplicates_sent_ns": dups,
        "close_wait_ns": cw,
        "state_before_gap_filled": before_gap.map(|s| s.name()),
        "resets": r2.map(|s| s.resets_sent + s.resets_received),
    });
    let r2_ok = match (r2, fin_sent, gap, dups, cw) {
        (Some(s), Some(f), Some(g), Some(dp), Some(cw)) => {
            cw >= g
                && cw < dp
                && d(f, g) >= FIN_HELD_MIN_NS
                && before_gap == Some(TcpState::Established)
                && entered_from(s, TcpState::LastAck, TcpState::Close).is_some()
                && no_resets(s)
                && mark("round2_read_exact") == Some(1)
        }
        _ => false,
    };
    let evidence = json!({
        "round1": r1_ev,
        "round1_dup_packets_nft_counter": dup_packets,
        "round1_read": {"sent": mark("round1_sent_bytes"), "read": mark("round1_read_bytes"), "exact": mark("round1_read_exact")},
        "round2": r2_ev,
        "round2_read": {"sent": mark("round2_sent_bytes"), "read": mark("round2_read_bytes"), "exact": mark("round2_read_exact")},
        "round3": r3_ev,
        "round3_dropped_packets_nft_counter": drops,
        "round3_read": {"sent": mark("round3_sent_bytes"), "read": mark("round3_read_bytes"), "exact": mark("round3_read_exact")},
        "not_shown": "sequence/ACK numbers; duplicates discarded; bytes delivered once in order (lab read() only)",
    });
    let holds = r1_ok && r2_ok && r3_ok;
    let text = if holds {
        let (f, g, cw) = (fin_sent.unwrap_or(0), gap.unwrap_or(0), cw.unwrap_or(0));
        format!(
            "round 1 ({dup_packets} segments duplicated by nftables, counter read back): the sender retransmitted {}× and went FIN_WAIT1→FIN_WAIT2 (an ACK number covered all its data and its FIN), the receiver CLOSE_WAIT→LAST_ACK→CLOSE, no reset; round 2 (FIN and second half sent first, the first half {:.0} ms later, then everything again): the receiver stayed ESTABLISHED while it held the FIN and entered CLOSE_WAIT {:.3} ms after the first half was sent, before any duplicate was: the FIN was taken only once the bytes before it were in; no reset; round 3 ({drops} of 4 data segments dropped once at the receiver, counter read back): the sender retransmitted {}× — not the segments after the lost one, which the receiver's ACKs reported received — and its FIN was acknowledged, no reset; the server application read {}, {} and {} bytes, equal to what was sent, in order (lab read()); {not_shown}",
            r1.map_or(0, |(c, _)| c.retransmits),
            ms(d(f, g)),
            ms(d(g, cw)),
            r3.map_or(0, |(c, _)| c.retransmits),
            mark("round1_read_bytes").unwrap_or(0),
            mark("round2_read_bytes").unwrap_or(0),
            mark("round3_read_bytes").unwrap_or(0),
        )
    } else if !r1_ok {
        format!(
            "round 1 (duplicated segments, kernel sender) not shown: need the nftables dup counter > 0 (it is {dup_packets}), the sender's FIN_WAIT1→FIN_WAIT2, the receiver's CLOSE_WAIT…LAST_ACK→CLOSE, no reset and the exact bytes read; {not_shown}"
        )
    } else if !r3_ok {
        format!(
            "round 3 (one segment dropped, kernel sender) not shown: need the nftables drop counter > 0 (it is {drops}), the sender's retransmits equal to it (they are {}), its FIN_WAIT1→FIN_WAIT2, the receiver's CLOSE_WAIT…LAST_ACK→CLOSE, no reset and the exact bytes read; {not_shown}",
            r3.map_or(0, |(c, _)| c.retransmits)
        )
    } else {
        format!(
            "round 2 (reordered by hand) not shown: need the receiver ESTABLISHED until the first half was sent and CLOSE_WAIT after it but before the duplicates, the FIN sent ≥ {} ms before, LAST_ACK→CLOSE, no reset and the exact bytes read; {not_shown}",
            FIN_HELD_MIN_NS / 1_000_000
        )
    };
    Verdict {
        id: ID,
        holds,
        evidence,
        text,
    }
}

/// The server child of `client`'s connection that existed during it (several
/// children may share the 4-tuple when a scenario reuses it).
fn child_during<'a>(cap: &'a Capture, client: &Connection) -> Option<&'a Connection> {
    let from = client
        .state_ts(TcpState::SynSent)
        .unwrap_or(client.first_ts_ns);
    cap.connections.iter().find(|s| {
        s.role == Role::Server
            && s.sport == client.dport
            && s.dport == client.sport
            && s.saddr == client.daddr
            && s.daddr == client.saddr
            && s.state_ts(TcpState::SynRecv)
                .is_some_and(|t| t >= from && t <= client.last_ts_ns)
    })
}

/// C5: three steps synchronise both ISNs. Each end's `tcp_sock` at its transition to
/// ESTABLISHED (read by the tracer: `snd_una - 1`, `rcv_nxt - 1`) holds its own ISN
/// and the peer's: the client's remote ISN must be the server's local one and the
/// other way round, and the client (whose ISN the SYN-ACK acknowledged) becomes
/// ESTABLISHED before the server (whose ISN only the third segment acknowledges).
pub fn c5(cap: &Capture) -> Verdict {
    const ID: &str = "C5";
    let not_shown = "not shown: the sequence and ACK numbers on the wire (the tracer reads the two ISNs from each end's tcp_sock when it becomes ESTABLISHED, not from segments)";
    let mut pairs = Vec::new();
    let mut ok = true;
    let mut first = None;
    for c in clients(cap) {
        let Some(s) = child_during(cap, c) else {
            continue;
        };
        let c_est = entered_from(c, TcpState::SynSent, TcpState::Established);
        let s_est = entered_from(s, TcpState::SynRecv, TcpState::Established);
        let pair_ok = match (c.isn, s.isn, c_est, s_est) {
            (Some(ci), Some(si), Some(ce), Some(se)) => {
                ci.remote == si.local && si.remote == ci.local && ce <= se
            }
            _ => false,
        };
        ok &= pair_ok;
        if pair_ok && first.is_none() {
            first = Some((c, s, c_est.unwrap_or(0), s_est.unwrap_or(0)));
        }
        pairs.push(json!({
            "client": tuple(c),
            "client_isn": c.isn,
            "server_isn": s.isn,
            "client_established_ns": c_est,
            "server_established_ns": s_est,
            "mirrored": pair_ok,
        }));
    }
    let holds = ok && !pairs.is_empty();
    let text = match first {
        Some((c, s, ce, se)) if holds => {
            let (ci, si) = (
                c.isn.unwrap_or_else(zero_isn),
                s.isn.unwrap_or_else(zero_isn),
            );
            format!(
                "in {} connection(s) each end's remote ISN was the other's local ISN (e.g. client ISN {} = server's remote ISN, server ISN {} = client's remote ISN): the client became ESTABLISHED when the SYN-ACK acknowledged its ISN, the server {:.3} ms later, only when the third segment acknowledged its own — with two steps the server's ISN would never have been confirmed; {not_shown}",
                pairs.len(),
                ci.local,
                si.local,
                ms(d(ce, se)),
            )
        }
        _ if pairs.is_empty() => {
            format!("no client/server pair with both ends captured; {not_shown}")
        }
        _ => format!(
            "a pair's ISNs did not mirror (client remote ≠ server local or server remote ≠ client local), an ISN was not read, or the server became ESTABLISHED before the client; {not_shown}"
        ),
    };
    Verdict {
        id: ID,
        holds,
        evidence: json!({ "connections": pairs }),
        text,
    }
}

fn zero_isn() -> crate::correlate::Isn {
    crate::correlate::Isn {
        local: 0,
        remote: 0,
    }
}

/// How soon after the current RST was sent the reset must be seen.
const RST_SEEN_MAX_NS: u64 = 100_000_000;

/// Sequence numbers from `base` to `base + 65535` (a connection's first window).
fn near(seq: u32, base: u32) -> bool {
    (1..=65535).contains(&seq.wrapping_sub(base))
}

/// C7: each connection starts from a different ISN, so old segments are not accepted
/// by a new connection on the same 4-tuple. Two client connections on one 4-tuple,
/// the second begun after the first closed: both ends' ISNs (read by the tracer at
/// ESTABLISHED, and equal to the SYN sequence numbers the server's interface saw)
/// differ between them; a RST at the first connection's next sequence number (an old
/// segment), seen arriving at the server, does not reset the second connection (no
/// `tcp_receive_reset` on its child), while a RST at the second's own next sequence
/// number does.
pub fn c7(cap: &Capture) -> Verdict {
    const ID: &str = "C7";
    let not_shown = "not shown: other old segments (data, ACKs) being dropped — that leaves no tracepoint; the RST is the old segment whose acceptance a tracepoint shows";
    let mark = |k: &str| cap.marks.get(k).copied();
    let cl: Vec<&Connection> = clients(cap).collect();
    let mut found = None;
    let mut ev = Vec::new();
    for (i, a) in cl.iter().enumerate() {
        for b in &cl[i + 1..] {
            let same = a.saddr == b.saddr
                && a.sport == b.sport
                && a.daddr == b.daddr
                && a.dport == b.dport;
            if !same {
                continue;
            }
            let (a, b) = if a.first_ts_ns <= b.first_ts_ns {
                (*a, *b)
            } else {
                (*b, *a)
            };
            let a_closed = a.states.last().filter(|s| s.state == TcpState::Close);
            let b_start = b.state_ts(TcpState::SynSent);
            let consecutive = matches!((a_closed, b_start), (Some(x), Some(y)) if x.t_ns < y);
            let (sa, sb) = (child_during(cap, a), child_during(cap, b));
            let isns = (a.isn, b.isn, sa.and_then(|s| s.isn), sb.and_then(|s| s.isn));
            let differ = match isns {
                (Some(ca), Some(cb), Some(xa), Some(xb)) => {
                    ca.local != cb.local && xa.local != xb.local
                }
                _ => false,
            };
            ev.push(json!({
                "tuple": tuple(a),
                "first_client_states": transitions(a),
                "second_client_states": transitions(b),
                "first_closed_before_second_syn": consecutive,
                "client_isns": [isns.0.map(|i| i.local), isns.1.map(|i| i.local)],
                "server_isns": [isns.2.map(|i| i.local), isns.3.map(|i| i.local)],
            }));
            if consecutive && differ && found.is_none() {
                found = Some((a, b, sb, isns));
            }
        }
    }
    // The old and the current RST, against the second connection's child.
    let (old_t, cur_t) = (mark("old_rst_sent"), mark("current_rst_sent"));
    let (old_seq, cur_seq) = (
        mark("old_rst_seq_at_server").map(|v| v as u32),
        mark("current_rst_seq_at_server").map(|v| v as u32),
    );
    let syn_seqs = (
        mark("round1_syn_seq_at_server").map(|v| v as u32),
        mark("round2_syn_seq_at_server").map(|v| v as u32),
    );
    let resets: Vec<u64> = found
        .and_then(|f| f.2)
        .map(|sb| {
            cap.events
                .iter()
                .filter(|e| {
                    e.kind == EventKind::ResetReceived
                        && e.skaddr == sb.skaddr
                        && e.ts_ns >= sb.first_ts_ns
                        && e.ts_ns <= sb.last_ts_ns
                })
                .map(|e| e.ts_ns)
                .collect()
        })
        .unwrap_or_default();
    let mut checks = json!({});
    let mut rst_ok = false;
    let mut rst_text = String::new();
    if let (
        Some((_, _, Some(_), (Some(ca), Some(cb), _, _))),
        Some(ot),
        Some(ct),
        Some(os),
        Some(cs),
    ) = (found, old_t, cur_t, old_seq, cur_seq)
    {
        let wire = syn_seqs == (Some(ca.local), Some(cb.local));
        let old_is_first = near(os, ca.local) && !near(os, cb.local);
        let cur_is_second = near(cs, cb.local);
        let ignored = !resets.iter().any(|&t| t >= ot && t < ct);
        let reset_at = resets
            .iter()
            .copied()
            .find(|&t| t >= ct && t <= ct.saturating_add(RST_SEEN_MAX_NS));
        checks = json!({
            "syn_seqs_at_server": [syn_seqs.0, syn_seqs.1],
            "syn_seqs_equal_traced_isns": wire,
            "old_rst_seq": os,
            "old_rst_from_first_isn": os.wrapping_sub(ca.local),
            "old_rst_from_second_isn": os.wrapping_sub(cb.local) as i32,
            "current_rst_seq": cs,
            "current_rst_from_second_isn": cs.wrapping_sub(cb.local),
            "old_rst_sent_ns": ot,
            "current_rst_sent_ns": ct,
            "second_child_resets_received_ns": resets,
        });
        rst_ok = wire && old_is_first && cur_is_second && ignored && reset_at.is_some();
        rst_text = if rst_ok {
            format!(
                "a RST at the first connection's next sequence number (its ISN + {}, seen arriving at the server; {} from the second's ISN) did not reset the second connection (no tcp_receive_reset on its child in the {:.0} ms that followed), while a RST at the second's own next sequence number did, {:.3} ms after it was sent",
                os.wrapping_sub(ca.local),
                os.wrapping_sub(cb.local) as i32,
                ms(d(ot, ct)),
                ms(d(ct, reset_at.unwrap_or(ct))),
            )
        } else if !wire {
            "the SYN sequence numbers seen at the server's interface are not the ISNs the tracer read".to_string()
        } else if !(old_is_first && cur_is_second) {
            "the injected RSTs were not at the first / the second connection's sequence numbers"
                .to_string()
        } else if !ignored {
            "the old RST (the first connection's sequence number) reset the second connection"
                .to_string()
        } else {
            "the RST at the second connection's own sequence number was not seen resetting it: nothing shows a RST would have been seen".to_string()
        };
    }
    let holds = found.is_some() && rst_ok;
    let text = match found {
        Some((a, _, _, (Some(ca), Some(cb), Some(xa), Some(xb)))) if holds => format!(
            "two connections on {} one after the other (the first CLOSE before the second SYN_SENT): the client's ISN went {} → {} (Δ {}), the server's {} → {} (Δ {}), each read from the tcp_sock at ESTABLISHED and equal to the SYNs seen at the server; {rst_text}; {not_shown}",
            tuple(a),
            ca.local,
            cb.local,
            cb.local.wrapping_sub(ca.local),
            xa.local,
            xb.local,
            xb.local.wrapping_sub(xa.local),
        ),
        Some(_) if rst_text.is_empty() => format!(
            "two connections with different ISNs, but the old and current RSTs (their times and sequence numbers as seen at the server) were not recorded; {not_shown}"
        ),
        Some(_) => format!("two connections with different ISNs, but {rst_text}; {not_shown}"),
        None if ev.is_empty() => {
            format!("no two client connections on the same 4-tuple were captured; {not_shown}")
        }
        None => format!(
            "two connections on one 4-tuple, but not one after the other, an ISN not read, or an ISN repeated; {not_shown}"
        ),
    };
    Verdict {
        id: ID,
        holds,
        evidence: json!({ "pairs": ev, "old_segment": checks }),
        text,
    }
}
