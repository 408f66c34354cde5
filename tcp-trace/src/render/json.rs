//! JSON lines for events and loss reports. Every line has `"type"`.
//!
//! Written by hand, without `core::fmt` and without allocating: each event line is
//! put together in a buffer on the stack and handed to the writer in one `write_all`.
//! The small formatters (integers, hex, addresses, `comm`, states) are in
//! [`crate::text`]; they print exactly what `Display` prints.
use std::io::{self, Write};
use std::net::IpAddr;

use crate::clock::WallClock;
use crate::correlate::{Connection, HalfOpenRequest, PidSource, Role, SyscallReturn};
use crate::decode::{Event, EventKind, errno_name};

/// Version of the JSON lines contract (docs/json-schema.md), in every `stats` line.
/// 2: `--json` without `--view` prints connection and summary lines only; event
/// lines need `--view events` or `--view all` (1 printed events by default too).
pub const SCHEMA: u32 = 2;
use crate::text::{
    DIGITS2, Sink, StackStr, put_comm, put_hex, put_i64, put_i128, put_ip, put_json_str, put_state,
    put_u64,
};

/// A line put together in a buffer on the stack, handed to the writer when full and
/// at the end.
struct Line<'a, W: Write> {
    w: &'a mut W,
    buf: &'a mut [u8; LINE],
    len: usize,
    err: Option<io::Error>,
}

const LINE: usize = 640;

impl<'a, W: Write> Line<'a, W> {
    fn new(w: &'a mut W, buf: &'a mut [u8; LINE]) -> Self {
        Line {
            w,
            buf,
            len: 0,
            err: None,
        }
    }

    /// Hands what the buffer holds to the writer (errors are kept for `finish`).
    #[cold]
    fn drain(&mut self) {
        if self.err.is_none() {
            self.err = self.w.write_all(&self.buf[..self.len]).err();
        }
        self.len = 0;
    }

    fn finish(mut self) -> io::Result<()> {
        match self.err.take() {
            Some(e) => Err(e),
            None => self.w.write_all(&self.buf[..self.len]),
        }
    }
}

impl<W: Write> Sink for Line<'_, W> {
    #[inline]
    fn put(&mut self, b: &[u8]) {
        if self.len + b.len() > LINE {
            self.drain();
            if b.len() > LINE {
                if self.err.is_none() {
                    self.err = self.w.write_all(b).err();
                }
                return;
            }
        }
        self.buf[self.len..self.len + b.len()].copy_from_slice(b);
        self.len += b.len();
    }

    #[inline]
    fn put_with(&mut self, n: usize, f: impl FnOnce(&mut [u8])) {
        if self.len + n > LINE {
            self.drain();
        }
        f(&mut self.buf[self.len..self.len + n]);
        self.len += n;
    }
}

/// Writes `s` as a JSON string literal.
pub fn write_str(w: &mut impl Write, s: &str) -> io::Result<()> {
    let mut buf = [0u8; LINE];
    let mut line = Line::new(w, &mut buf);
    put_json_str(&mut line, s);
    line.finish()
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

fn put_ret(s: &mut impl Sink, ret: i64) {
    s.put(b",\"ret\":");
    put_i64(s, ret);
    match (ret < 0).then(|| errno_name(-ret)).flatten() {
        Some(n) => {
            s.put(b",\"errno\":\"");
            s.put(n.as_bytes());
            s.put(b"\"");
        }
        None => s.put(b",\"errno\":null"),
    }
}

fn put_bool(s: &mut impl Sink, v: bool) {
    s.put(if v { b"true" } else { b"false" });
}

/// Days since 1970-01-01 → (year, month 1..=12, day 1..=31), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    // Eras of 400 years (146097 days) starting on March 1st, year 0.
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn put_2(s: &mut impl Sink, v: u32) {
    let i = (v % 100) as usize * 2;
    s.put(&DIGITS2[i..i + 2]);
}

/// UNIX-epoch nanoseconds as RFC 3339 UTC with nanoseconds:
/// `2026-11-30T10:22:52.123456789Z` (years 0..=9999; outside, clamped).
pub(crate) fn put_rfc3339(s: &mut impl Sink, epoch_ns: i128) {
    const MIN: i128 = -62_167_219_200 * 1_000_000_000; // 0000-01-01T00:00:00Z
    const MAX: i128 = 253_402_300_799_999_999_999; // 9999-12-31T23:59:59.999999999Z
    let e = epoch_ns.clamp(MIN, MAX);
    let secs = e.div_euclid(1_000_000_000) as i64;
    let nanos = e.rem_euclid(1_000_000_000) as u32;
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400) as u32;
    let y = y as u32;
    put_2(s, y / 100);
    put_2(s, y % 100);
    s.put(b"-");
    put_2(s, mo);
    s.put(b"-");
    put_2(s, d);
    s.put(b"T");
    put_2(s, sod / 3600);
    s.put(b":");
    put_2(s, sod / 60 % 60);
    s.put(b":");
    put_2(s, sod % 60);
    s.put(b".");
    put_2(s, nanos / 10_000_000);
    put_2(s, nanos / 100_000 % 100);
    put_2(s, nanos / 1000 % 100);
    put_2(s, nanos / 10 % 100);
    s.put(&DIGITS2[(nanos % 10) as usize * 2 + 1..][..1]);
    s.put(b"Z");
}

/// `epoch_ns` as RFC 3339 UTC (see [`put_rfc3339`]).
pub fn rfc3339(epoch_ns: i128) -> String {
    let mut t = StackStr::<40>::new();
    put_rfc3339(&mut t, epoch_ns);
    t.as_str().to_string()
}

/// `,"time":"…"`: the wall-clock time of `mono_ns`.
fn put_time_field(s: &mut impl Sink, clock: &WallClock, mono_ns: u64) {
    s.put(b",\"time\":\"");
    put_rfc3339(s, clock.epoch_ns(mono_ns));
    s.put(b"\"");
}

/// `{"type":"event",…}` — the schema is documented in docs/json-schema.md.
/// `clock`: turns `ts_ns` into the `"time"` field (RFC 3339 UTC); `local`: also
/// `"local_time"` (`HH:MM:SS.uuuuuu`, local) and `"epoch_ns"` (`-T`).
/// `container`: (id, runtime) of the owner's cgroup, when resolved; `pod`: its
/// Kubernetes pod, when the cgroup is a pod's.
pub fn event(
    w: &mut impl Write,
    ev: &Event,
    clock: &WallClock,
    local: bool,
    container: Option<(&str, &str)>,
    pod: PodFields<'_>,
) -> io::Result<()> {
    let mut buf = [0u8; LINE];
    let mut s = Line::new(w, &mut buf);
    s.put(b"{\"type\":\"event\",\"ts_ns\":");
    put_u64(&mut s, ev.ts_ns);
    put_time_field(&mut s, clock, ev.ts_ns);
    if local {
        let mut t = StackStr::<64>::new();
        let _ = clock.format(ev.ts_ns, &mut t);
        s.put(b",\"local_time\":\"");
        s.put(t.as_str().as_bytes());
        s.put(b"\",\"epoch_ns\":");
        put_i128(&mut s, clock.epoch_ns(ev.ts_ns));
    }
    s.put(b",\"kind\":\"");
    s.put(kind_name(&ev.kind).as_bytes());
    s.put(b"\"");
    match ev.kind {
        EventKind::Transition { old, new } => {
            s.put(b",\"old\":\"");
            put_state(&mut s, old);
            s.put(b"\",\"new\":\"");
            put_state(&mut s, new);
            s.put(b"\"");
        }
        EventKind::SynAckRetransmit { req } => {
            s.put(b",\"req\":\"");
            put_hex(&mut s, req);
            s.put(b"\"");
        }
        EventKind::Retransmit { state } => {
            s.put(b",\"state\":\"");
            put_state(&mut s, state);
            s.put(b"\"");
        }
        EventKind::ResetSent { state, reason } => {
            match state {
                Some(st) => {
                    s.put(b",\"state\":\"");
                    put_state(&mut s, st);
                    s.put(b"\"");
                }
                None => s.put(b",\"state\":null"),
            }
            match reason {
                Some(r) => {
                    s.put(b",\"reason\":");
                    put_u64(&mut s, r as u64);
                }
                None => s.put(b",\"reason\":null"),
            }
        }
        EventKind::ResetReceived => {}
        EventKind::ConnectReturn { fd, ret } => {
            s.put(b",\"call\":\"connect\",\"fd\":");
            put_i64(&mut s, fd as i64);
            put_ret(&mut s, ret);
        }
        EventKind::AcceptReturn {
            listen_fd,
            ret,
            accept4,
        } => {
            s.put(if accept4 {
                b",\"call\":\"accept4\",\"listen_fd\":"
            } else {
                b",\"call\":\"accept\",\"listen_fd\":"
            });
            put_i64(&mut s, listen_fd as i64);
            put_ret(&mut s, ret);
        }
    }
    match ev.pid() {
        Some(p) => {
            s.put(b",\"pid\":");
            put_u64(&mut s, p as u64);
        }
        None => s.put(b",\"pid\":null"),
    }
    match ev.owner {
        Some(o) => {
            s.put(b",\"tid\":");
            put_u64(&mut s, o.tid as u64);
            s.put(b",\"comm\":\"");
            put_comm(&mut s, &o.comm, true);
            s.put(b"\",\"owner_from_listener\":");
            put_bool(&mut s, o.from_listener);
        }
        None => s.put(b",\"tid\":null,\"comm\":null,\"owner_from_listener\":false"),
    }
    s.put(b",\"task_ctx\":");
    put_bool(&mut s, ev.task_ctx);
    s.put(b",\"ctx_pid\":");
    put_u64(&mut s, ev.ctx_pid as u64);
    s.put(b",\"family\":\"");
    s.put(ev.family.name().as_bytes());
    s.put(b"\"");
    match (ev.local, ev.remote) {
        (Some((sa, sp)), Some((da, dp))) => {
            s.put(b",\"saddr\":\"");
            put_ip(&mut s, sa);
            s.put(b"\",\"sport\":");
            put_u64(&mut s, sp as u64);
            s.put(b",\"daddr\":\"");
            put_ip(&mut s, da);
            s.put(b"\",\"dport\":");
            put_u64(&mut s, dp as u64);
        }
        _ => s.put(b",\"saddr\":null,\"sport\":null,\"daddr\":null,\"dport\":null"),
    }
    s.put(b",\"skaddr\":\"");
    put_hex(&mut s, ev.skaddr);
    s.put(b"\",\"cgroup_id\":");
    put_u64(&mut s, ev.cgroup_id);
    match ev.netns {
        0 => s.put(b",\"netns\":null"),
        n => {
            s.put(b",\"netns\":");
            put_u64(&mut s, n as u64);
        }
    }
    match ev.ns_pid {
        0 => s.put(b",\"ns_pid\":null"),
        n => {
            s.put(b",\"ns_pid\":");
            put_u64(&mut s, n as u64);
        }
    }
    match container {
        Some((id, rt)) => {
            s.put(b",\"container_id\":");
            put_json_str(&mut s, id);
            s.put(b",\"container_runtime\":");
            put_json_str(&mut s, rt);
        }
        None => s.put(b",\"container_id\":null,\"container_runtime\":null"),
    }
    put_pod(&mut s, pod);
    s.put(b"}\n");
    s.finish()
}

/// The Kubernetes pod of a line's owner (`pod_namespace`, `pod_name`, `pod_uid`;
/// each null when unknown).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PodFields<'a> {
    pub namespace: Option<&'a str>,
    pub name: Option<&'a str>,
    pub uid: Option<&'a str>,
}

impl<'a> PodFields<'a> {
    /// The pod fields of a resolved cgroup.
    pub fn of(info: Option<&'a crate::container::ContainerInfo>) -> PodFields<'a> {
        match info {
            Some(i) => PodFields {
                namespace: i.pod_namespace.as_deref(),
                name: i.pod_name.as_deref(),
                uid: i.pod_uid.as_deref(),
            },
            None => PodFields::default(),
        }
    }
}

fn put_pod<S: Sink>(s: &mut S, pod: PodFields<'_>) {
    s.put(b",\"pod_namespace\":");
    put_opt(s, pod.namespace, put_json_str);
    s.put(b",\"pod_name\":");
    put_opt(s, pod.name, put_json_str);
    s.put(b",\"pod_uid\":");
    put_opt(s, pod.uid, put_json_str);
}

/// `{"type":"lost","time":…,"count":N,"total":T,…}`: events the kernel could not
/// queue. `epoch_ns`: when it was noticed.
pub fn lost(w: &mut impl Write, epoch_ns: i128, count: u64, total: u64) -> io::Result<()> {
    loss_line(w, "lost", epoch_ns, count, total, "ring buffer full")
}

/// `{"type":TYPE,"time":…,"count":…,"total":…,"reason":REASON}`.
fn loss_line(
    w: &mut impl Write,
    ty: &str,
    epoch_ns: i128,
    count: u64,
    total: u64,
    reason: &str,
) -> io::Result<()> {
    writeln!(
        w,
        "{{\"type\":\"{ty}\",\"time\":\"{}\",\"count\":{count},\"total\":{total},\"reason\":\"{reason}\"}}",
        rfc3339(epoch_ns)
    )
}

/// `{"type":"skipped",…}`: hook runs the kernel skipped (docs/json-schema.md).
pub fn skipped(w: &mut impl Write, epoch_ns: i128, count: u64, total: u64) -> io::Result<()> {
    loss_line(
        w,
        "skipped",
        epoch_ns,
        count,
        total,
        "program already running on that CPU",
    )
}

/// A line serialised elsewhere (`{"type":…,…}`) with `,"time":"…"` inserted after
/// the `"type"` member, as every line has it.
pub fn with_time(line: &[u8], epoch_ns: i128) -> Vec<u8> {
    let mut t = StackStr::<40>::new();
    put_rfc3339(&mut t, epoch_ns);
    // `{"type":"x"` ends at the first `",` after the key (type names hold no quote).
    let at = line
        .strip_prefix(b"{\"type\":\"")
        .and_then(|rest| rest.iter().position(|&b| b == b'"'))
        .map(|p| 9 + p + 1);
    let mut out = Vec::with_capacity(line.len() + 48);
    match at {
        Some(i) => {
            out.extend_from_slice(&line[..i]);
            out.extend_from_slice(b",\"time\":\"");
            out.extend_from_slice(t.as_str().as_bytes());
            out.push(b'"');
            out.extend_from_slice(&line[i..]);
        }
        None => out.extend_from_slice(line),
    }
    out
}

// ---------------------------------------------------------------------------
// {"type":"connection",…}: the same bytes serde_json writes for `Connection`'s
// derived `Serialize` (which the tests keep as the reference), without serde's
// per-field calls: a connection line was a third of `--json`'s CPU under a storm.

/// `v` written by `put`, or `null`.
fn put_opt<S: Sink, T>(s: &mut S, v: Option<T>, put: impl FnOnce(&mut S, T)) {
    match v {
        Some(v) => put(s, v),
        None => s.put(b"null"),
    }
}

fn put_u64_list(s: &mut impl Sink, v: &[u64]) {
    s.put(b"[");
    for (i, &x) in v.iter().enumerate() {
        if i > 0 {
            s.put(b",");
        }
        put_u64(s, x);
    }
    s.put(b"]");
}

fn put_ip_str(s: &mut impl Sink, a: IpAddr) {
    s.put(b"\"");
    put_ip(s, a);
    s.put(b"\"");
}

fn put_hex_str(s: &mut impl Sink, v: u64) {
    s.put(b"\"");
    put_hex(s, v);
    s.put(b"\"");
}

fn put_syscall(s: &mut impl Sink, r: &SyscallReturn) {
    s.put(b"{\"ret\":");
    put_i64(s, r.ret);
    s.put(b",\"errno\":");
    put_opt(s, r.errno, put_json_str);
    s.put(b",\"t_ns\":");
    put_u64(s, r.t_ns);
    s.put(b",\"fd\":");
    put_i64(s, r.fd as i64);
    s.put(b",\"accept4\":");
    put_bool(s, r.accept4);
    s.put(b"}");
}

fn put_half_open(s: &mut impl Sink, r: &HalfOpenRequest) {
    s.put(b"{\"req\":");
    put_hex_str(s, r.req);
    s.put(b",\"saddr\":");
    put_ip_str(s, r.saddr);
    s.put(b",\"sport\":");
    put_u64(s, r.sport as u64);
    s.put(b",\"daddr\":");
    put_ip_str(s, r.daddr);
    s.put(b",\"dport\":");
    put_u64(s, r.dport as u64);
    s.put(b",\"synack_retransmits\":");
    put_u64(s, r.synack_retransmits as u64);
    s.put(b",\"synack_retransmit_ts_ns\":");
    put_u64_list(s, &r.synack_retransmit_ts_ns);
    s.put(b"}");
}

fn role_name(r: Role) -> &'static [u8] {
    r.name().as_bytes()
}

fn pid_source_name(p: PidSource) -> &'static [u8] {
    match p {
        PidSource::None => b"none",
        PidSource::Listener => b"listener",
        PidSource::Snapshot => b"snapshot",
        PidSource::Context => b"context",
        PidSource::Owner => b"owner",
        PidSource::Syscall => b"syscall",
    }
}

/// Writes `c` as one `{"type":"connection",…}` line (with its newline); the schema
/// is documented in docs/json-schema.md. `clock`: adds `"time"` (RFC 3339 UTC of
/// `first_ts_ns`, when the connection began) after `"type"`; without it the line is
/// exactly serde's, with the pod fields (null here; see [`connection_in_pod`]) before
/// `"ns_pid"`.
pub fn connection(w: &mut impl Write, c: &Connection, clock: Option<&WallClock>) -> io::Result<()> {
    connection_in_pod(w, c, clock, PodFields::default())
}

/// [`connection`] with the owner's Kubernetes pod (`pod_namespace`, `pod_name`,
/// `pod_uid` after `"container_runtime"`).
pub fn connection_in_pod(
    w: &mut impl Write,
    c: &Connection,
    clock: Option<&WallClock>,
    pod: PodFields<'_>,
) -> io::Result<()> {
    let mut buf = [0u8; LINE];
    let mut line = Line::new(w, &mut buf);
    let s = &mut line;
    s.put(b"{\"type\":");
    put_json_str(s, c.record_type);
    if let Some(clock) = clock {
        put_time_field(s, clock, c.first_ts_ns);
    }
    s.put(b",\"id\":");
    put_u64(s, c.id);
    s.put(b",\"role\":\"");
    s.put(role_name(c.role));
    s.put(b"\",\"pid\":");
    put_opt(s, c.pid.map(u64::from), put_u64);
    s.put(b",\"comm\":");
    match &c.comm {
        Some(comm) => {
            s.put(b"\"");
            put_comm(s, comm, true);
            s.put(b"\"");
        }
        None => s.put(b"null"),
    }
    s.put(b",\"pid_source\":\"");
    s.put(pid_source_name(c.pid_source));
    s.put(b"\",\"family\":\"");
    s.put(c.family.name().as_bytes());
    s.put(b"\",\"saddr\":");
    put_opt(s, c.saddr, put_ip_str);
    s.put(b",\"sport\":");
    put_u64(s, c.sport as u64);
    s.put(b",\"daddr\":");
    put_opt(s, c.daddr, put_ip_str);
    s.put(b",\"dport\":");
    put_u64(s, c.dport as u64);
    s.put(b",\"skaddr\":");
    put_hex_str(s, c.skaddr);
    s.put(b",\"states\":[");
    for (i, e) in c.states.iter().enumerate() {
        s.put(if i > 0 {
            b",{\"state\":\""
        } else {
            b"{\"state\":\""
        });
        put_state(s, e.state);
        s.put(b"\",\"t_ns\":");
        put_u64(s, e.t_ns);
        s.put(b"}");
    }
    s.put(b"],\"connect\":");
    put_opt(s, c.connect.as_ref(), put_syscall);
    s.put(b",\"connect_calls\":[");
    for (i, r) in c.connect_calls.iter().enumerate() {
        if i > 0 {
            s.put(b",");
        }
        put_syscall(s, r);
    }
    s.put(b"],\"connect_return_ns\":");
    put_opt(s, c.connect_return_ns, put_u64);
    s.put(b",\"accept\":");
    put_opt(s, c.accept.as_ref(), put_syscall);
    s.put(b",\"accept_return_ns\":");
    put_opt(s, c.accept_return_ns, put_u64);
    s.put(b",\"ret\":");
    put_opt(s, c.ret, put_i64);
    s.put(b",\"syn_retransmits\":");
    put_u64(s, c.syn_retransmits as u64);
    s.put(b",\"syn_retransmit_ts_ns\":");
    put_u64_list(s, &c.syn_retransmit_ts_ns);
    s.put(b",\"synack_retransmits\":");
    put_u64(s, c.synack_retransmits as u64);
    s.put(b",\"synack_retransmit_ts_ns\":");
    put_u64_list(s, &c.synack_retransmit_ts_ns);
    s.put(b",\"retransmits\":");
    put_u64(s, c.retransmits as u64);
    s.put(b",\"retransmit_ts_ns\":");
    put_u64_list(s, &c.retransmit_ts_ns);
    s.put(b",\"fin_retransmits\":");
    put_u64(s, c.fin_retransmits as u64);
    s.put(b",\"resets_sent\":");
    put_u64(s, c.resets_sent as u64);
    s.put(b",\"reset_sent_ts_ns\":");
    put_u64_list(s, &c.reset_sent_ts_ns);
    s.put(b",\"resets_received\":");
    put_u64(s, c.resets_received as u64);
    s.put(b",\"reset_received_ts_ns\":");
    put_u64_list(s, &c.reset_received_ts_ns);
    s.put(b",\"time_wait\":");
    put_bool(s, c.time_wait);
    s.put(b",\"time_wait_t_ns\":");
    put_opt(s, c.time_wait_t_ns, put_u64);
    s.put(b",\"fin_wait2_handover\":");
    put_bool(s, c.fin_wait2_handover);
    s.put(b",\"time_wait_certain\":");
    put_bool(s, c.time_wait_certain);
    s.put(b",\"active_close\":");
    put_bool(s, c.active_close);
    s.put(b",\"established\":");
    put_bool(s, c.established);
    s.put(b",\"outcome\":\"");
    s.put(c.outcome.name().as_bytes());
    s.put(b"\",\"open\":");
    put_bool(s, c.open);
    s.put(b",\"open_before_start\":");
    put_bool(s, c.open_before_start);
    s.put(b",\"seen_at_start\":");
    put_bool(s, c.seen_at_start);
    s.put(b",\"evicted\":");
    put_bool(s, c.evicted);
    s.put(b",\"handshake_ns\":");
    put_opt(s, c.handshake_ns, put_u64);
    s.put(b",\"connect_latency_ns\":");
    put_opt(s, c.connect_latency_ns, put_u64);
    s.put(b",\"connect_nonblocking\":");
    put_bool(s, c.connect_nonblocking);
    s.put(b",\"connect_after_established_ns\":");
    put_opt(s, c.connect_after_established_ns, put_i64);
    s.put(b",\"accept_wait_ns\":");
    put_opt(s, c.accept_wait_ns, put_i64);
    s.put(b",\"lifetime_ns\":");
    put_opt(s, c.lifetime_ns, put_u64);
    s.put(b",\"fin_wait2_ns\":");
    put_opt(s, c.fin_wait2_ns, put_u64);
    s.put(b",\"close_wait_ns\":");
    put_opt(s, c.close_wait_ns, put_u64);
    s.put(b",\"first_ts_ns\":");
    put_u64(s, c.first_ts_ns);
    s.put(b",\"last_ts_ns\":");
    put_u64(s, c.last_ts_ns);
    s.put(b",\"peer\":");
    put_opt(s, c.peer, put_u64);
    s.put(b",\"listener_id\":");
    put_opt(s, c.listener_id, put_u64);
    s.put(b",\"listener\":");
    match &c.listener {
        Some(l) => {
            s.put(b"{\"children\":");
            put_u64(s, l.children as u64);
            s.put(b",\"accepted\":");
            put_u64(s, l.accepted as u64);
            s.put(b",\"half_open_requests\":[");
            for (i, r) in l.half_open_requests.iter().enumerate() {
                if i > 0 {
                    s.put(b",");
                }
                put_half_open(s, r);
            }
            s.put(b"]}");
        }
        None => s.put(b"null"),
    }
    s.put(b",\"peer_request\":");
    match &c.peer_request {
        Some(r) => put_half_open(s, r),
        None => s.put(b"null"),
    }
    s.put(b",\"accept_queue\":");
    match &c.accept_queue {
        Some(q) => {
            s.put(b"{\"len\":");
            put_u64(s, u64::from(q.len));
            s.put(b",\"max\":");
            put_u64(s, u64::from(q.max));
            s.put(b"}");
        }
        None => s.put(b"null"),
    }
    s.put(b",\"isn\":");
    match &c.isn {
        Some(n) => {
            s.put(b"{\"local\":");
            put_u64(s, u64::from(n.local));
            s.put(b",\"remote\":");
            put_u64(s, u64::from(n.remote));
            s.put(b"}");
        }
        None => s.put(b"null"),
    }
    s.put(b",\"cgroup_id\":");
    put_opt(s, c.cgroup_id, put_u64);
    s.put(b",\"netns\":");
    put_opt(s, c.netns, put_u64);
    s.put(b",\"container_id\":");
    put_opt(s, c.container_id.as_deref(), put_json_str);
    s.put(b",\"container_runtime\":");
    put_opt(s, c.container_runtime.as_deref(), put_json_str);
    put_pod(s, pod);
    s.put(b",\"ns_pid\":");
    put_opt(s, c.ns_pid.map(u64::from), put_u64);
    s.put(b"}\n");
    line.finish()
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::correlate::{AcceptQueue, Isn};
    use crate::decode::{Comm, Family, Owner, TcpState};

    /// The formatting this module had before it was written without `core::fmt`: the
    /// reference the fast path must match byte for byte.
    mod reference {
        use std::io::{self, Write};

        use crate::clock::WallClock;
        use crate::decode::{Event, EventKind, errno_name};

        /// Writes `s` as a JSON string literal.
        pub(super) fn write_str(w: &mut impl Write, s: &str) -> io::Result<()> {
            w.write_all(b"\"")?;
            for c in s.chars() {
                match c {
                    '"' => w.write_all(b"\\\"")?,
                    '\\' => w.write_all(b"\\\\")?,
                    '\u{8}' => w.write_all(b"\\b")?,
                    '\u{c}' => w.write_all(b"\\f")?,
                    '\n' => w.write_all(b"\\n")?,
                    '\r' => w.write_all(b"\\r")?,
                    '\t' => w.write_all(b"\\t")?,
                    c if (c as u32) < 0x20 => write!(w, "\\u{:04x}", c as u32)?,
                    c => write!(w, "{c}")?,
                }
            }
            w.write_all(b"\"")
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
        pub(super) fn event(
            w: &mut impl Write,
            ev: &Event,
            clock: &WallClock,
            local: bool,
            container: Option<(&str, &str)>,
            pod: [Option<&str>; 3],
        ) -> io::Result<()> {
            write!(w, "{{\"type\":\"event\",\"ts_ns\":{}", ev.ts_ns)?;
            let time = super::super::rfc3339(clock.epoch_ns(ev.ts_ns));
            write!(w, ",\"time\":\"{time}\"")?;
            if local {
                let mut t = String::new();
                let _ = clock.format(ev.ts_ns, &mut t);
                write!(
                    w,
                    ",\"local_time\":\"{t}\",\"epoch_ns\":{}",
                    clock.epoch_ns(ev.ts_ns)
                )?;
            }
            write!(w, ",\"kind\":\"{}\"", super::super::kind_name(&ev.kind))?;
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
                None => {
                    w.write_all(b",\"tid\":null,\"comm\":null,\"owner_from_listener\":false")?
                }
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
                _ => {
                    w.write_all(b",\"saddr\":null,\"sport\":null,\"daddr\":null,\"dport\":null")?
                }
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
            for (key, v) in ["pod_namespace", "pod_name", "pod_uid"].iter().zip(pod) {
                write!(w, ",\"{key}\":")?;
                match v {
                    Some(v) => write_str(w, v)?,
                    None => w.write_all(b"null")?,
                }
            }
            w.write_all(b"}\n")
        }
    }

    /// xorshift64*: deterministic pseudo-random values.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn pick<T: Copy>(&mut self, v: &[T]) -> T {
            v[(self.next() % v.len() as u64) as usize]
        }
        /// Mostly small values and zeros, sometimes anything.
        fn num(&mut self) -> u64 {
            match self.next() % 4 {
                0 => 0,
                1 => self.next() % 10,
                2 => self.next() % 100_000,
                _ => self.next(),
            }
        }
    }

    fn ip(r: &mut Rng) -> IpAddr {
        match r.next() % 6 {
            0 => IpAddr::V4(Ipv4Addr::from(r.next() as u32)),
            1 => IpAddr::V4(Ipv4Addr::new(
                127,
                0,
                0,
                r.pick(&[0, 1, 9, 10, 99, 100, 255]),
            )),
            2 => IpAddr::V6(Ipv6Addr::from(
                ((r.next() as u128) << 64) | r.next() as u128,
            )),
            3 => IpAddr::V6(Ipv4Addr::from(r.next() as u32).to_ipv6_mapped()),
            _ => {
                // Groups that are often zero: every run-length case of RFC 5952.
                let mut g = [0u16; 8];
                for x in &mut g {
                    *x = match r.next() % 3 {
                        0 => 0,
                        1 => r.next() as u16 & 0xff,
                        _ => r.next() as u16,
                    };
                }
                IpAddr::V6(Ipv6Addr::from(g))
            }
        }
    }

    fn state(r: &mut Rng) -> TcpState {
        TcpState::from_raw(r.pick(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 200, 255]))
    }

    fn comm(r: &mut Rng) -> Comm {
        let mut c = [0u8; 16];
        let n = (r.next() % 17) as usize;
        for b in &mut c[..n] {
            *b = match r.next() % 4 {
                0 => r.pick(b"\\\"\n\x7f\x01 "),
                1 => r.next() as u8,
                _ => b'a' + (r.next() % 26) as u8,
            };
        }
        Comm(c)
    }

    fn opt<T>(r: &mut Rng, f: impl FnOnce(&mut Rng) -> T) -> Option<T> {
        (!r.next().is_multiple_of(3)).then(|| f(r))
    }

    fn list(r: &mut Rng) -> Vec<u64> {
        (0..r.next() % 4).map(|_| r.num()).collect()
    }

    fn syscall(r: &mut Rng) -> SyscallReturn {
        SyscallReturn {
            ret: r.num() as i64 * r.pick(&[1, -1]),
            errno: r.pick(&[None, Some("ECONNREFUSED"), Some("EINPROGRESS")]),
            t_ns: r.num(),
            fd: r.num() as i32,
            accept4: r.next().is_multiple_of(2),
        }
    }

    fn half_open(r: &mut Rng) -> HalfOpenRequest {
        HalfOpenRequest {
            req: r.num(),
            saddr: ip(r),
            sport: r.num() as u16,
            daddr: ip(r),
            dport: r.num() as u16,
            synack_retransmits: r.num() as u32,
            synack_retransmit_ts_ns: list(r),
        }
    }

    fn connection_of(r: &mut Rng) -> Connection {
        use crate::correlate::{ListenerInfo, Outcome, StateEntry};
        let role = r.pick(&[Role::Client, Role::Server, Role::Listener, Role::Unknown]);
        let family = Family::from_raw(r.pick(&[2, 10, 0, 44]));
        let mut c = Connection::new(r.num(), role, r.num(), family, r.num());
        c.pid = opt(r, |r| r.num() as u32);
        c.comm = opt(r, comm);
        c.pid_source = r.pick(&[
            PidSource::None,
            PidSource::Listener,
            PidSource::Snapshot,
            PidSource::Context,
            PidSource::Owner,
            PidSource::Syscall,
        ]);
        c.saddr = opt(r, ip);
        c.sport = r.num() as u16;
        c.daddr = opt(r, ip);
        c.dport = r.num() as u16;
        c.states = (0..r.next() % 9)
            .map(|_| StateEntry {
                state: state(r),
                t_ns: r.num(),
            })
            .collect();
        c.connect = opt(r, syscall);
        c.connect_calls = (0..r.next() % 3).map(|_| syscall(r)).collect();
        c.connect_return_ns = opt(r, Rng::num);
        c.accept = opt(r, syscall);
        c.accept_return_ns = opt(r, Rng::num);
        c.ret = opt(r, |r| r.num() as i64);
        c.syn_retransmits = r.num() as u32;
        c.syn_retransmit_ts_ns = list(r);
        c.synack_retransmits = r.num() as u32;
        c.synack_retransmit_ts_ns = list(r);
        c.retransmits = r.num() as u32;
        c.retransmit_ts_ns = list(r);
        c.fin_retransmits = r.num() as u32;
        c.resets_sent = r.num() as u32;
        c.reset_sent_ts_ns = list(r);
        c.resets_received = r.num() as u32;
        c.reset_received_ts_ns = list(r);
        c.time_wait = r.next().is_multiple_of(2);
        c.time_wait_t_ns = opt(r, Rng::num);
        c.fin_wait2_handover = r.next().is_multiple_of(2);
        c.time_wait_certain = r.next().is_multiple_of(2);
        c.active_close = r.next().is_multiple_of(2);
        c.established = r.next().is_multiple_of(2);
        c.outcome = r.pick(&[
            Outcome::Closed,
            Outcome::Reset,
            Outcome::Refused,
            Outcome::TimedOut,
            Outcome::Aborted,
            Outcome::Open,
            Outcome::Evicted,
        ]);
        c.open = r.next().is_multiple_of(2);
        c.open_before_start = r.next().is_multiple_of(2);
        c.seen_at_start = r.next().is_multiple_of(2);
        c.evicted = r.next().is_multiple_of(2);
        c.handshake_ns = opt(r, Rng::num);
        c.connect_latency_ns = opt(r, Rng::num);
        c.connect_nonblocking = r.next().is_multiple_of(2);
        c.connect_after_established_ns = opt(r, |r| r.num() as i64);
        c.accept_wait_ns = opt(r, |r| r.num() as i64);
        c.lifetime_ns = opt(r, Rng::num);
        c.fin_wait2_ns = opt(r, Rng::num);
        c.close_wait_ns = opt(r, Rng::num);
        c.first_ts_ns = r.num();
        c.last_ts_ns = r.num();
        c.peer = opt(r, Rng::num);
        c.listener_id = opt(r, Rng::num);
        c.listener = opt(r, |r| ListenerInfo {
            children: r.num() as u32,
            accepted: r.num() as u32,
            half_open_requests: (0..r.next() % 3).map(|_| half_open(r)).collect(),
        });
        c.peer_request = opt(r, half_open);
        c.accept_queue = opt(r, |r| AcceptQueue {
            len: r.num() as u32,
            max: r.num() as u32,
        });
        c.isn = opt(r, |r| Isn {
            local: r.num() as u32,
            remote: r.num() as u32,
        });
        c.cgroup_id = opt(r, Rng::num);
        c.netns = opt(r, Rng::num);
        c.container_id = opt(r, |r| {
            String::from_utf8_lossy(&comm(r).0)
                .trim_end_matches('\0')
                .to_string()
        });
        c.container_runtime = opt(r, |r| r.pick(&["podman", "docker", "a\"b\\c\u{1}"]).into());
        c.ns_pid = opt(r, |r| r.num() as u32);
        c
    }

    /// serde's line for `c` with the three pod fields (serde's own encoding of the
    /// values) inserted before "ns_pid", where the encoder writes them.
    fn serde_line_in_pod(c: &Connection, pod: PodFields<'_>) -> Vec<u8> {
        let serde_line = serde_json::to_string(c).unwrap();
        let fields = format!(
            ",\"pod_namespace\":{},\"pod_name\":{},\"pod_uid\":{}",
            serde_json::to_string(&pod.namespace).unwrap(),
            serde_json::to_string(&pod.name).unwrap(),
            serde_json::to_string(&pod.uid).unwrap()
        );
        let at = serde_line
            .rfind(",\"ns_pid\":")
            .expect("ns_pid in serde's line");
        format!("{}{fields}{}\n", &serde_line[..at], &serde_line[at..]).into_bytes()
    }

    /// The hand-written connection line is byte for byte what serde_json writes for
    /// the derived `Serialize` (field order, nulls, escapes, addresses, hex), plus the
    /// pod fields.
    #[test]
    fn connection_line_matches_serde() {
        let mut r = Rng(0x1234_5678_9abc_def1);
        let mut got = Vec::new();
        for i in 0..20_000 {
            let c = connection_of(&mut r);
            got.clear();
            connection(&mut got, &c, None).unwrap();
            let want = serde_line_in_pod(&c, PodFields::default());
            assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(&want),
                "connection {i}"
            );
            // With the wall clock: serde's line with "time" after "type".
            let clock = WallClock::with_offset(1_764_000_000_000_000_000 + i as i128);
            got.clear();
            connection(&mut got, &c, Some(&clock)).unwrap();
            let want = with_time(&want, clock.epoch_ns(c.first_ts_ns));
            assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(&want),
                "connection {i} with time"
            );
            let v: serde_json::Value = serde_json::from_slice(&got).unwrap();
            assert!(v["time"].as_str().unwrap().ends_with('Z'));
            assert!(v["pod_uid"].is_null());
            // In a pod.
            let pod = match i % 3 {
                0 => PodFields {
                    uid: Some("5e9b7c1d-3f2a-4b8e-9c0d-1a2b3c4d5e6f"),
                    ..PodFields::default()
                },
                1 => PodFields {
                    namespace: Some("kube-system"),
                    name: Some("coredns-5d78c9869d-abcde"),
                    uid: Some("8a2f0e4b5c6d7e8f9a0b1c2d3e4f5a6b"),
                },
                _ => PodFields {
                    namespace: Some("n"),
                    name: Some("we\"ird\\pod\u{1}é"),
                    uid: Some(""),
                },
            };
            got.clear();
            connection_in_pod(&mut got, &c, None, pod).unwrap();
            assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(&serde_line_in_pod(&c, pod)),
                "connection {i} in a pod"
            );
        }
    }

    /// RFC 3339 against known instants and against libc's `gmtime_r`.
    #[test]
    fn rfc3339_matches_gmtime() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999999999Z");
        assert_eq!(
            rfc3339(1_796_034_172_123_456_789),
            "2026-11-30T10:22:52.123456789Z"
        );
        assert_eq!(
            rfc3339(951_782_400_000_000_007),
            "2000-02-29T00:00:00.000000007Z"
        );
        assert_eq!(rfc3339(i128::MAX), "9999-12-31T23:59:59.999999999Z");
        let mut r = Rng(42);
        for _ in 0..100_000 {
            let secs = (r.next() % 253_402_300_800) as i64 - 62_167_219_200 / 2;
            let nanos = (r.next() % 1_000_000_000) as i128;
            let e = secs as i128 * 1_000_000_000 + nanos;
            let t = secs as libc::time_t;
            // SAFETY: zeroed tm is a valid out-value; pointers valid for the call.
            let mut tm: libc::tm = unsafe { std::mem::zeroed() };
            unsafe { libc::gmtime_r(&t, &mut tm) };
            let want = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
                tm.tm_year + 1900,
                tm.tm_mon + 1,
                tm.tm_mday,
                tm.tm_hour,
                tm.tm_min,
                tm.tm_sec,
                nanos
            );
            assert_eq!(rfc3339(e), want, "{e}");
        }
    }

    #[test]
    fn with_time_inserts_after_type() {
        let got = with_time(br#"{"type":"summary","a":1}"#, 0);
        assert_eq!(
            String::from_utf8(got).unwrap(),
            r#"{"type":"summary","time":"1970-01-01T00:00:00.000000000Z","a":1}"#
        );
        let mut v = Vec::new();
        lost(&mut v, 1_000_000_000, 3, 7).unwrap();
        let j: serde_json::Value = serde_json::from_slice(&v).unwrap();
        assert_eq!(j["time"], "1970-01-01T00:00:01.000000000Z");
        assert_eq!(j["count"], 3);
    }

    fn event_of(r: &mut Rng) -> Event {
        let kind = match r.next() % 7 {
            0 => EventKind::Transition {
                old: state(r),
                new: state(r),
            },
            1 => EventKind::SynAckRetransmit { req: r.num() },
            2 => EventKind::Retransmit { state: state(r) },
            3 => EventKind::ResetSent {
                state: r.next().is_multiple_of(2).then(|| state(r)),
                reason: r.next().is_multiple_of(2).then(|| r.num() as u32),
            },
            4 => EventKind::ResetReceived,
            5 => EventKind::ConnectReturn {
                fd: r.num() as i32,
                ret: r.pick(&[0, -111, -115, -110, -4, -1000, i64::MIN + 1, i64::MAX, 7]),
            },
            _ => EventKind::AcceptReturn {
                listen_fd: r.num() as i32,
                ret: r.num() as i64 * r.pick(&[1, -1]),
                accept4: r.next().is_multiple_of(2),
            },
        };
        let ends = !r.next().is_multiple_of(4);
        Event {
            ts_ns: r.num(),
            skaddr: r.num(),
            kind,
            family: Family::from_raw(r.pick(&[2, 10, 0, 44])),
            local: ends.then(|| (ip(r), r.num() as u16)),
            remote: ends.then(|| (ip(r), r.num() as u16)),
            ctx_pid: r.num() as u32,
            ctx_tid: r.num() as u32,
            task_ctx: r.next().is_multiple_of(2),
            owner: (!r.next().is_multiple_of(3)).then(|| Owner {
                pid: r.num() as u32,
                tid: r.num() as u32,
                comm: comm(r),
                from_listener: r.next().is_multiple_of(2),
            }),
            cgroup_id: r.num(),
            ns_pid: r.num() as u32,
            netns: r.num() as u32,
            listener: 0,
            listener_exact: false,
            accept_queue: None,
            isn: None,
        }
    }

    #[test]
    fn event_lines_match_the_fmt_reference() {
        let mut r = Rng(0x9e37_79b9_7f4a_7c15);
        let wall = WallClock::with_offset(1_764_000_000_000_000_000);
        let long = "x\"y\\z\u{1}\u{1f}é€😀".repeat(40);
        let containers = [
            None,
            Some((
                "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                "docker",
            )),
            Some((long.as_str(), "cri-o\n")),
        ];
        let pods = [
            [None, None, None],
            [None, None, Some("5e9b7c1d-3f2a-4b8e-9c0d-1a2b3c4d5e6f")],
            [
                Some("kube-system"),
                Some("coredns-5d78c9869d-abcde"),
                Some("5e9b7c1d-3f2a-4b8e-9c0d-1a2b3c4d5e6f"),
            ],
            [Some(long.as_str()), Some("a\"b\n"), Some("")],
        ];
        for n in 0..50_000 {
            let ev = event_of(&mut r);
            let local = n % 5 == 0;
            let ctr = containers[n % 3];
            let p = pods[(n / 3) % 4];
            let pod = PodFields {
                namespace: p[0],
                name: p[1],
                uid: p[2],
            };
            let (mut new, mut old) = (Vec::new(), Vec::new());
            event(&mut new, &ev, &wall, local, ctr, pod).unwrap();
            reference::event(&mut old, &ev, &wall, local, ctr, p).unwrap();
            assert_eq!(
                String::from_utf8_lossy(&new),
                String::from_utf8_lossy(&old),
                "{ev:?}"
            );
            let v: serde_json::Value = serde_json::from_slice(&new).expect("valid JSON");
            assert_eq!(v["type"], "event");
        }
    }

    #[test]
    fn formatters_match_display() {
        let mut r = Rng(7);
        let check = |f: &dyn Fn(&mut StackStr<64>), want: String| {
            let mut b = StackStr::<64>::new();
            f(&mut b);
            assert_eq!(b.as_str(), want);
        };
        for v in [
            0u64,
            1,
            9,
            10,
            99,
            100,
            101,
            999,
            1000,
            u32::MAX as u64,
            u64::MAX,
        ] {
            check(&|b| put_u64(b, v), v.to_string());
            check(&|b| put_hex(b, v), format!("{v:#x}"));
            check(&|b| put_i64(b, v as i64), (v as i64).to_string());
        }
        for v in [i64::MIN, -1, i128::MIN as i64] {
            check(&|b| put_i64(b, v), v.to_string());
        }
        for v in [i128::MIN, i128::MAX, i64::MIN as i128 - 1, -5, 1 << 70] {
            check(&|b| put_i128(b, v), v.to_string());
        }
        for _ in 0..100_000 {
            let v = r.next() >> (r.next() % 64);
            check(&|b| put_u64(b, v), v.to_string());
            check(&|b| put_hex(b, v), format!("{v:#x}"));
            let a = ip(&mut r);
            check(&|b| put_ip(b, a), a.to_string());
            let c = comm(&mut r);
            check(&|b| put_comm(b, &c, false), c.to_string());
            let s = state(&mut r);
            check(&|b| put_state(b, s), s.to_string());
        }
        for a in [
            "::",
            "::1",
            "1::",
            "1:0:0:2:0:0:0:3",
            "1:0:0:2:0:0:3:4",
            "0:0:1::",
            "::ffff:1.2.3.4",
            "::1.2.3.4",
            "64:ff9b::1.2.3.4",
            "fe80::1:0:0:0",
        ] {
            let a: IpAddr = a.parse().unwrap();
            check(&|b| put_ip(b, a), a.to_string());
        }
    }

    #[test]
    fn write_str_escapes() {
        let mut out = Vec::new();
        let text = "a\"b\\c\u{0}\n\u{7f}é\t\r\u{8}\u{c}\u{1f}";
        write_str(&mut out, text).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert_eq!(out, "\"a\\\"b\\\\c\\u0000\\n\u{7f}é\\t\\r\\b\\f\\u001f\"");
        assert_eq!(out, serde_json::to_string(text).unwrap());
    }
}
