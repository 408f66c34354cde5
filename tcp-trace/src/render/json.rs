//! JSON lines for events and loss reports. Every line has `"type"`.
//! Written by hand (no allocation per event beyond the output buffer).
use std::io::{self, Write};

use crate::clock::WallClock;
use crate::decode::{Event, EventKind, errno_name};

/// Writes `s` as a JSON string literal.
pub fn write_str(w: &mut impl Write, s: &str) -> io::Result<()> {
    w.write_all(b"\"")?;
    for c in s.chars() {
        match c {
            '"' => w.write_all(b"\\\"")?,
            '\\' => w.write_all(b"\\\\")?,
            c if (c as u32) < 0x20 => write!(w, "\\u{:04x}", c as u32)?,
            c => write!(w, "{c}")?,
        }
    }
    w.write_all(b"\"")
}

fn kind_name(k: &EventKind) -> &'static str {
    match k {
        EventKind::Transition { .. } => "transition",
        EventKind::SynAckRetransmit { .. } => "synack_retransmit",
        EventKind::Retransmit { .. } => "retransmit",
        EventKind::ResetSent { .. } => "reset_sent",
        EventKind::ResetReceived => "reset_received",
        EventKind::ConnectReturn { .. } => "connect_return",
        EventKind::AcceptReturn { .. } => "accept_return",
    }
}

fn write_ret(w: &mut impl Write, ret: i64) -> io::Result<()> {
    write!(w, ",\"ret\":{ret}")?;
    match (ret < 0).then(|| errno_name(-ret)).flatten() {
        Some(n) => write!(w, ",\"errno\":\"{n}\""),
        None => w.write_all(b",\"errno\":null"),
    }
}

/// `{"type":"event",…}` — the schema is documented in docs/json-schema.md.
/// `container`: (id, runtime) of the owner's cgroup, when resolved.
pub fn event(
    w: &mut impl Write,
    ev: &Event,
    wall: Option<&WallClock>,
    container: Option<(&str, &str)>,
) -> io::Result<()> {
    write!(w, "{{\"type\":\"event\",\"ts_ns\":{}", ev.ts_ns)?;
    if let Some(c) = wall {
        let mut t = String::new();
        let _ = c.format(ev.ts_ns, &mut t);
        write!(w, ",\"time\":\"{t}\",\"epoch_ns\":{}", c.epoch_ns(ev.ts_ns))?;
    }
    write!(w, ",\"kind\":\"{}\"", kind_name(&ev.kind))?;
    match ev.kind {
        EventKind::Transition { old, new } => {
            write!(w, ",\"old\":\"{old}\",\"new\":\"{new}\"")?;
        }
        EventKind::SynAckRetransmit { req } => write!(w, ",\"req\":\"{req:#x}\"")?,
        EventKind::Retransmit { state } => write!(w, ",\"state\":\"{state}\"")?,
        EventKind::ResetSent { state, reason } => {
            match state {
                Some(s) => write!(w, ",\"state\":\"{s}\"")?,
                None => w.write_all(b",\"state\":null")?,
            }
            match reason {
                Some(r) => write!(w, ",\"reason\":{r}")?,
                None => w.write_all(b",\"reason\":null")?,
            }
        }
        EventKind::ResetReceived => {}
        EventKind::ConnectReturn { fd, ret } => {
            write!(w, ",\"call\":\"connect\",\"fd\":{fd}")?;
            write_ret(w, ret)?;
        }
        EventKind::AcceptReturn {
            listen_fd,
            ret,
            accept4,
        } => {
            let call = if accept4 { "accept4" } else { "accept" };
            write!(w, ",\"call\":\"{call}\",\"listen_fd\":{listen_fd}")?;
            write_ret(w, ret)?;
        }
    }
    match ev.pid() {
        Some(p) => write!(w, ",\"pid\":{p}")?,
        None => w.write_all(b",\"pid\":null")?,
    }
    match ev.owner {
        Some(o) => {
            write!(w, ",\"tid\":{},\"comm\":", o.tid)?;
            write_str(w, &o.comm.to_string())?;
            write!(w, ",\"owner_from_listener\":{}", o.from_listener)?;
        }
        None => w.write_all(b",\"tid\":null,\"comm\":null,\"owner_from_listener\":false")?,
    }
    write!(
        w,
        ",\"task_ctx\":{},\"ctx_pid\":{},\"family\":\"{}\"",
        ev.task_ctx,
        ev.ctx_pid,
        ev.family.name()
    )?;
    match (ev.local, ev.remote) {
        (Some((sa, sp)), Some((da, dp))) => write!(
            w,
            ",\"saddr\":\"{sa}\",\"sport\":{sp},\"daddr\":\"{da}\",\"dport\":{dp}"
        )?,
        _ => w.write_all(b",\"saddr\":null,\"sport\":null,\"daddr\":null,\"dport\":null")?,
    }
    write!(
        w,
        ",\"skaddr\":\"{:#x}\",\"cgroup_id\":{}",
        ev.skaddr, ev.cgroup_id
    )?;
    match ev.netns {
        0 => w.write_all(b",\"netns\":null")?,
        n => write!(w, ",\"netns\":{n}")?,
    }
    match ev.ns_pid {
        0 => w.write_all(b",\"ns_pid\":null")?,
        n => write!(w, ",\"ns_pid\":{n}")?,
    }
    match container {
        Some((id, rt)) => {
            w.write_all(b",\"container_id\":")?;
            write_str(w, id)?;
            w.write_all(b",\"container_runtime\":")?;
            write_str(w, rt)?;
        }
        None => w.write_all(b",\"container_id\":null,\"container_runtime\":null")?,
    }
    w.write_all(b"}\n")
}

/// `{"type":"lost","count":N,"total":T}`: events the kernel could not queue.
pub fn lost(w: &mut impl Write, count: u64, total: u64) -> io::Result<()> {
    writeln!(
        w,
        "{{\"type\":\"lost\",\"count\":{count},\"total\":{total},\"reason\":\"ring buffer full\"}}"
    )
}
