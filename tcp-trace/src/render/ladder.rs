//! Ladder (sequence) diagram of one conversation: the client on the left, the server
//! on the right, one row per observed step, in time order.
//!
//! Segments are derived from state transitions, each drawn once: at the end whose
//! transition proves it was sent when that end is visible, else at the end that
//! received it. SYN-ACKs come from the request sock (never on the state tracepoint),
//! so they are drawn where the client receives them; the ACK of a FIN causes no
//! transition at its sender, so it is drawn where it is received. With one end
//! invisible its column is headed `(remote)` and shows nothing, except the SYN-ACK
//! retransmits of a half-open request on this host that answered the client
//! (`peer_request`, column headed `(request sock)`).
//!
//! TIME_WAIT is drawn where it was entered: at the FIN_WAIT2/CLOSING → CLOSE that
//! entered it, or, after a handover in FIN_WAIT2 (`fin_wait2_handover`), as
//! `FIN_WAIT2 (timewait sock)` at the CLOSE and `TIME_WAIT` when the peer's FIN came.
//! `TIME_WAIT?` (with `FIN?`) marks a FIN_WAIT2 → CLOSE whose TIME_WAIT is assumed
//! (`time_wait_certain` false: without the peer it may as well be a handover in
//! FIN_WAIT2).
use std::borrow::Cow;
use std::io::{self, Write};

use std::net::IpAddr;

use super::colour;
use crate::correlate::{Connection, Conversation, Role};
use crate::decode::TcpState;
use crate::text::{self, Sink};

/// Rendering options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LadderOptions {
    /// Box-drawing arrows (`──▶`) instead of ASCII (`-->`).
    pub unicode: bool,
    /// Width of the arrow column in characters.
    pub arrow_width: usize,
    /// Time origin; default the conversation's first timestamp.
    pub t0_ns: Option<u64>,
    /// ANSI colour (see [`super::colour`]); the layout is the same.
    pub colour: bool,
}

impl Default for LadderOptions {
    fn default() -> LadderOptions {
        LadderOptions {
            unicode: false,
            arrow_width: 34,
            t0_ns: None,
            colour: false,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Side {
    Left,
    Right,
}

impl Side {
    /// Direction of a segment sent by this side.
    fn send(self) -> Dir {
        match self {
            Side::Left => Dir::Right,
            Side::Right => Dir::Left,
        }
    }
    /// Direction of a segment received by this side.
    fn recv(self) -> Dir {
        match self {
            Side::Left => Dir::Left,
            Side::Right => Dir::Right,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Dir {
    /// Client → server.
    Right,
    /// Server → client.
    Left,
}

/// A cell's text: nearly always a literal, so rows allocate only for the few
/// texts made on the spot (syscall returns, numbered retransmits).
type Text = Cow<'static, str>;

/// An arrow with its label.
/// A handshake arrow's label with the sequence number it carries, when the kernel
/// side read the ISNs: `SYN seq=…` (without them, the label's first word).
fn isn_label(prefix: &str, n: Option<u32>) -> String {
    match n {
        Some(n) => format!("{prefix}{n}"),
        None => prefix.split(' ').next().unwrap_or(prefix).to_string(),
    }
}

fn arw(d: Dir, label: impl Into<Text>) -> Option<(Dir, Text)> {
    Some((d, label.into()))
}

struct Row {
    t: u64,
    /// Drawn after the other rows at the same time (a reaction to the peer's segment).
    after: bool,
    seq: usize,
    left: Text,
    arrow: Option<(Dir, Text)>,
    right: Text,
}

struct Rows {
    rows: Vec<Row>,
}

impl Rows {
    fn add(&mut self, t: u64, side: Side, text: impl Into<Text>, arrow: Option<(Dir, Text)>) {
        self.add_both(t, side, text, "", arrow);
    }

    /// Like `add`, sorted after the other rows at the same time.
    fn add_after(&mut self, t: u64, side: Side, text: impl Into<Text>, arrow: Option<(Dir, Text)>) {
        self.add(t, side, text, arrow);
        if let Some(r) = self.rows.last_mut() {
            r.after = true;
        }
    }

    /// `text` on `side`, `other` on the opposite column.
    fn add_both(
        &mut self,
        t: u64,
        side: Side,
        text: impl Into<Text>,
        other: &'static str,
        arrow: Option<(Dir, Text)>,
    ) {
        let (text, other) = (text.into(), Text::Borrowed(other));
        let (left, right) = match side {
            Side::Left => (text, other),
            Side::Right => (other, text),
        };
        let seq = self.rows.len();
        self.rows.push(Row {
            t,
            after: false,
            seq,
            left,
            arrow,
            right,
        });
    }
}

/// One step of a ladder (a row), for other renderers (the SVG picture).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub t_ns: u64,
    /// The client's (left) cell: a state, a syscall return, or empty.
    pub left: String,
    /// A segment: (`true` client → server, label).
    pub arrow: Option<(bool, String)>,
    /// The server's (right) cell.
    pub right: String,
}

/// The rows of the ladder of `conv`, in drawing order, with the column heads.
#[derive(Clone, Debug)]
pub struct Steps {
    pub left_head: String,
    pub right_head: String,
    pub t0_ns: u64,
    pub steps: Vec<Step>,
}

/// The ladder of `conv` as data: exactly the rows [`render`] prints.
pub fn steps(conv: &Conversation) -> Steps {
    let rows = build(conv);
    let (mut left, mut right) = (String::new(), String::new());
    left_head(&mut left, conv);
    right_head(&mut right, conv);
    Steps {
        left_head: left,
        right_head: right,
        t0_ns: conv.first_ts_ns(),
        steps: rows
            .into_iter()
            .map(|r| Step {
                t_ns: r.t,
                left: r.left.into_owned(),
                arrow: r.arrow.map(|(d, l)| (d == Dir::Right, l.into_owned())),
                right: r.right.into_owned(),
            })
            .collect(),
    }
}

/// Renders the ladder of `conv`.
pub fn render(w: &mut impl Write, conv: &Conversation, opts: &LadderOptions) -> io::Result<()> {
    let rows = Rows { rows: build(conv) };
    let t0 = opts.t0_ns.unwrap_or_else(|| conv.first_ts_ns());
    let lw = rows
        .rows
        .iter()
        .map(|r| cols(&r.left))
        .max()
        .unwrap_or(0)
        .max(11);
    let aw = opts.arrow_width.max(12);

    let left_col = lw + 1 + aw + 2;
    // The whole ladder is put together in one buffer and written at once.
    let mut out = String::with_capacity(160 + rows.rows.len() * (lw + aw * 3 + 48));
    out.push_str("  time(ms)  ");
    let start = out.len();
    left_head(&mut out, conv);
    let pad = left_col.saturating_sub(cols(&out[start..])).max(1);
    repeat(&mut out, ' ', pad);
    right_head(&mut out, conv);
    out.push('\n');

    for r in &rows.rows {
        let start = out.len();
        push_ms(&mut out, r.t.saturating_sub(t0));
        out.push_str("  ");
        // The styles are looked up only when colouring (each is a few text searches).
        let text_style = |t: &str| {
            if opts.colour {
                colour::text_style(t)
            } else {
                None
            }
        };
        colour::paint(&mut out, text_style(&r.left), &r.left);
        let used = cols(&r.left);
        repeat(&mut out, ' ', lw - used.min(lw) + 1);
        match &r.arrow {
            Some((d, label)) => match opts.colour.then(|| colour::arrow_style(label)).flatten() {
                Some(st) => {
                    let mut a = String::with_capacity(aw * 3);
                    push_arrow(&mut a, *d, label, aw, opts.unicode);
                    colour::paint(&mut out, Some(st), &a);
                }
                None => push_arrow(&mut out, *d, label, aw, opts.unicode),
            },
            None => repeat(&mut out, ' ', aw),
        }
        out.push_str("  ");
        colour::paint(&mut out, text_style(&r.right), &r.right);
        // Trailing blanks of the row: the padding is ASCII spaces (a byte no UTF-8
        // sequence contains), found byte by byte rather than by `trim_end`'s Unicode
        // whitespace test (2.8 % of a replayed storm's instructions).
        let kept = out.as_bytes()[start..]
            .iter()
            .rposition(|&b| b != b' ')
            .map_or(0, |i| i + 1);
        out.truncate(start + kept);
        out.push('\n');
    }
    w.write_all(out.as_bytes())
}

/// The rows of `conv`'s ladder, sorted.
fn build(conv: &Conversation) -> Vec<Row> {
    let mut rows = Rows {
        rows: Vec::with_capacity(24),
    };
    let client = conv.client.as_ref();
    let server = conv.server.as_ref();
    if let Some(c) = client {
        side_rows(&mut rows, c, Side::Left, server);
    }
    if let Some(s) = server {
        side_rows(&mut rows, s, Side::Right, client);
    }
    let request = match (client, server) {
        (Some(c), None) => c.peer_request.as_ref(),
        _ => None,
    };
    if let Some(r) = request {
        for (k, &t) in r.synack_retransmit_ts_ns.iter().enumerate() {
            let label = format!("SYN-ACK retransmit #{}", k + 1);
            rows.add(t, Side::Right, "(request sock)", arw(Dir::Left, label));
        }
    }
    rows.rows.sort_by_key(|r| (r.t, r.after, r.seq));

    rows.rows
}

/// Appends the head of the client's (left) column to `out`.
fn left_head(out: &mut String, conv: &Conversation) {
    match (&conv.client, &conv.server) {
        (Some(c), _) => side_label(out, c),
        (None, Some(s)) => {
            out.push_str("(remote) ");
            endpoint(out, s.daddr, s.dport);
        }
        (None, None) => out.push_str("(remote)"),
    }
}

/// Appends the head of the server's (right) column to `out`.
fn right_head(out: &mut String, conv: &Conversation) {
    match (&conv.server, &conv.client) {
        (Some(s), _) => side_label(out, s),
        (None, Some(c)) => {
            out.push_str(if c.peer_request.is_some() {
                "(request sock) "
            } else {
                "(remote) "
            });
            endpoint(out, c.daddr, c.dport);
        }
        (None, None) => out.push_str("(remote)"),
    }
}

/// Columns `s` takes (one per character): its length when ASCII, as nearly every
/// cell is.
fn cols(s: &str) -> usize {
    if s.is_ascii() {
        s.len()
    } else {
        s.chars().count()
    }
}

/// Appends `n` times `c`: whole slices for the two characters that fill most
/// of a ladder (space and `-`), char by char otherwise.
fn repeat(out: &mut String, c: char, mut n: usize) {
    const SPACES: &str = "                                                                ";
    const DASHES: &str = "----------------------------------------------------------------";
    let run = match c {
        ' ' => SPACES,
        '-' => DASHES,
        _ => {
            out.extend(std::iter::repeat_n(c, n));
            return;
        }
    };
    while n > 0 {
        let k = n.min(run.len());
        out.push_str(&run[..k]);
        n -= k;
    }
}

/// Milliseconds with three decimals, right-aligned in 10 columns, as
/// `{:>10.3}` prints `ns as f64 / 1e6` (rounded to the nearest microsecond).
fn push_ms(out: &mut String, ns: u64) {
    let us = ns / 1000 + u64::from(ns % 1000 >= 500);
    let mut buf = [0u8; 32];
    let mut i = buf.len();
    let mut frac = us % 1000;
    for _ in 0..3 {
        i -= 1;
        buf[i] = b'0' + (frac % 10) as u8;
        frac /= 10;
    }
    i -= 1;
    buf[i] = b'.';
    let mut int = us / 1000;
    loop {
        i -= 1;
        buf[i] = b'0' + (int % 10) as u8;
        int /= 10;
        if int == 0 {
            break;
        }
    }
    let digits = &buf[i..];
    repeat(out, ' ', 10usize.saturating_sub(digits.len()));
    push_ascii(out, digits);
}

/// Appends to a `String` for the `text` formatters (which write ASCII only).
struct Out<'a>(&'a mut String);

impl Sink for Out<'_> {
    fn put(&mut self, b: &[u8]) {
        push_ascii(self.0, b);
    }
}

/// Appends `b` if it is ASCII, as the formatters write (escaped where needed):
/// anything else is a bug and is dropped rather than risk a broken string. An ASCII
/// test rather than `from_utf8`, whose per-call cost was 5.4 % of a replayed storm's
/// instructions in the ladder.
fn push_ascii(out: &mut String, b: &[u8]) {
    if b.is_ascii() {
        // SAFETY: ASCII bytes are valid UTF-8, one character each.
        out.push_str(unsafe { std::str::from_utf8_unchecked(b) });
    }
}

/// An end as `Endpoint` prints it: `addr:port`, `[v6]:port`, `*:port`.
fn endpoint(out: &mut String, addr: Option<IpAddr>, port: u16) {
    let mut o = Out(out);
    match addr {
        Some(a @ IpAddr::V6(_)) => {
            o.put(b"[");
            text::put_ip(&mut o, a);
            o.put(b"]:");
        }
        Some(a) => {
            text::put_ip(&mut o, a);
            o.put(b":");
        }
        None => o.put(b"*:"),
    }
    text::put_u64(&mut o, u64::from(port));
}

/// `client 127.0.0.1:51234 (curl 4242)`.
fn side_label(out: &mut String, c: &Connection) {
    let role = match c.role {
        Role::Client | Role::Server | Role::Listener => c.role.name(),
        Role::Unknown => "socket",
    };
    out.push_str(role);
    out.push(' ');
    endpoint(out, c.saddr, c.sport);
    let mut o = Out(out);
    match (c.pid, c.comm) {
        (Some(p), Some(comm)) => {
            o.put(b" (");
            text::put_comm(&mut o, &comm, false);
            o.put(b" ");
            text::put_u64(&mut o, u64::from(p));
            o.put(b")");
        }
        (Some(p), None) => {
            o.put(b" (pid ");
            text::put_u64(&mut o, u64::from(p));
            o.put(b")");
        }
        _ => {}
    }
}

/// Appends an arrow `width` columns wide with its label to `out`.
fn push_arrow(out: &mut String, d: Dir, label: &str, width: usize, unicode: bool) {
    let (line, right_head, left_head) = if unicode {
        ('─', '▶', '◀')
    } else {
        ('-', '>', '<')
    };
    let label_cols = cols(label);
    match d {
        Dir::Right => {
            out.extend([line, line, ' ']);
            out.push_str(label);
            out.push(' ');
            let used = 3 + label_cols + 1 + 1;
            repeat(out, line, width.saturating_sub(used).max(1));
            out.push(right_head);
        }
        Dir::Left => {
            out.extend([left_head, line, line, ' ']);
            out.push_str(label);
            out.push(' ');
            let used = 4 + label_cols + 1;
            repeat(out, line, width.saturating_sub(used).max(1));
        }
    }
}

fn syscall_text(name: &str, ret: i64, errno: Option<&str>) -> String {
    match errno {
        Some(e) => format!("{name}() = {ret} {e}"),
        None => format!("{name}() = {ret}"),
    }
}

/// Rows contributed by one end.
fn side_rows(rows: &mut Rows, c: &Connection, side: Side, other: Option<&Connection>) {
    use TcpState::*;
    let other_visible = other.is_some();
    let send = side.send();
    let recv = side.recv();

    // The CLOSE that handed over to a timewait socket, and whether TIME_WAIT began
    // there.
    let tw_close = c.timewait_close().map(|(_, t)| t);
    let handover = c.fin_wait2_handover;
    let (tw_label, fin_label) = if c.time_wait_certain {
        ("TIME_WAIT", "FIN")
    } else {
        ("TIME_WAIT?", "FIN?")
    };
    for pair in c.states.windows(2) {
        let (old, new, t) = (pair[0].state, pair[1].state, pair[1].t_ns);
        let at_close = new == Close && tw_close == Some(t);
        let tw = at_close && c.time_wait && !handover && c.time_wait_t_ns == Some(t);
        match (old, new) {
            (Close, SynSent) => rows.add(
                t,
                side,
                "SYN_SENT",
                arw(send, isn_label("SYN seq=", c.isn.map(|n| n.local))),
            ),
            (SynSent, Established) => {
                let note = if other_visible { "(request sock)" } else { "" };
                let synack = isn_label("SYN-ACK seq=", c.isn.map(|n| n.remote));
                rows.add_both(t, side, "ESTABLISHED", note, arw(recv, synack));
                if !other_visible {
                    let ack = isn_label("ACK ack=", c.isn.map(|n| n.remote.wrapping_add(1)));
                    rows.add(t, side, "", arw(send, ack));
                }
            }
            (Listen, SynRecv) => {
                // The third segment acknowledges this end's ISN (read at ESTABLISHED).
                let ack = isn_label("ACK ack=", c.isn.map(|n| n.local.wrapping_add(1)));
                rows.add(t, side, "SYN_RECV (child)", arw(recv, ack))
            }
            (SynRecv, Established) => match c.accept_queue {
                // The child joins the listener's accept queue as it is established.
                Some(q) => rows.add(
                    t,
                    side,
                    format!("ESTABLISHED queued {}/{}", q.len, q.max),
                    None,
                ),
                None => rows.add(t, side, "ESTABLISHED", None),
            },
            (Established | SynRecv, FinWait1) => rows.add(t, side, "FIN_WAIT1", arw(send, "FIN")),
            (Established, CloseWait) => {
                let a = (!other_visible).then(|| (recv, Text::from("FIN")));
                rows.add(t, side, "CLOSE_WAIT", a);
            }
            (CloseWait, LastAck) => rows.add(t, side, "LAST_ACK", arw(send, "FIN")),
            (FinWait1, FinWait2) => rows.add(t, side, "FIN_WAIT2", arw(recv, "ACK of FIN")),
            (FinWait2, Close) if at_close && handover => {
                rows.add(t, side, "FIN_WAIT2 (timewait sock)", None);
                if let (true, Some(tf)) = (c.time_wait, c.time_wait_t_ns) {
                    if !other_visible {
                        rows.add_after(tf, side, "", arw(recv, fin_label));
                    }
                    rows.add_after(tf, side, tw_label, arw(send, "ACK"));
                }
            }
            (FinWait2, Close) if tw => {
                if !other_visible {
                    rows.add(t, side, "", arw(recv, fin_label));
                }
                rows.add(t, side, tw_label, arw(send, "ACK"));
            }
            (FinWait1, Closing) => {
                if !other_visible {
                    rows.add(t, side, "", arw(recv, "FIN"));
                }
                rows.add(t, side, "CLOSING", arw(send, "ACK"));
            }
            (Closing, Close) if tw => {
                let a = (!other_visible).then(|| (recv, Text::from("ACK of FIN")));
                rows.add(t, side, tw_label, a);
            }
            (LastAck, Close) => {
                let a = (!other_visible).then(|| (recv, Text::from("ACK")));
                rows.add(t, side, "CLOSE", a);
            }
            (_, TimeWait) => rows.add(t, side, "TIME_WAIT", None),
            (_, Unknown(n)) => rows.add(t, side, format!("UNKNOWN({n})"), None),
            (_, s) => rows.add(t, side, s.name(), None),
        }
    }

    for r in &c.connect_calls {
        let mut text = syscall_text("connect", r.ret, r.errno);
        if r.ret == -crate::correlate::EINPROGRESS {
            // The handshake goes on after the call: say so where it returned.
            text.push_str(" (non-blocking)");
        }
        rows.add(r.t_ns, side, text, None);
    }
    if let Some(a) = c.accept {
        let name = if a.accept4 { "accept4" } else { "accept" };
        rows.add(a.t_ns, side, syscall_text(name, a.ret, a.errno), None);
    }
    for (k, &t) in c.syn_retransmit_ts_ns.iter().enumerate() {
        let label = format!("SYN retransmit #{}", k + 1);
        rows.add(t, side, "", arw(send, label));
    }
    if c.role == Role::Server {
        for (k, &t) in c.synack_retransmit_ts_ns.iter().enumerate() {
            let label = format!("SYN-ACK retransmit #{}", k + 1);
            rows.add(t, side, "(request sock)", arw(send, label));
        }
    }
    let mut data = 0;
    for &t in &c.retransmit_ts_ns {
        let label = match c.state_at(t) {
            Some(FinWait1 | Closing | LastAck) => Text::Borrowed("FIN retransmit"),
            _ => {
                data += 1;
                Text::Owned(format!("retransmit #{data}"))
            }
        };
        rows.add(t, side, "", arw(send, label));
    }
    for &t in &c.reset_sent_ts_ns {
        rows.add(t, side, "", arw(send, "RST"));
    }
    let peer_sent_rst = other.is_some_and(|o| o.resets_sent > 0);
    for &t in &c.reset_received_ts_ns {
        if peer_sent_rst {
            rows.add(t, side, "RST received", None);
        } else {
            rows.add(t, side, "", arw(recv, "RST"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::correlate::testutil::{
        CHILD, CLIENT, Ev, LISTENER, MS, US, design_sequence, half_open_client, run,
        server_first_orphan,
    };
    use crate::correlate::{Conversation, conversations};
    use crate::decode::TcpState::*;

    fn draw(conv: &Conversation, opts: &LadderOptions) -> String {
        let mut out = Vec::new();
        render(&mut out, conv, opts).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// The time column as `{:>10.3}` prints it, except exactly on a half
    /// microsecond (where the float's binary value decides; we round up).
    #[test]
    fn time_column_matches_float_formatting() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut checked = 0;
        for i in 0..200_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let ns = match i % 4 {
                0 => x % 10_000,
                1 => x % 1_000_000_000,
                2 => x % 100_000_000_000_000,
                _ => i * 1000 + 499 + (i % 3),
            };
            if ns % 1000 == 500 {
                continue;
            }
            let mut got = String::new();
            push_ms(&mut got, ns);
            assert_eq!(got, format!("{:>10.3}", ns as f64 / 1e6), "{ns} ns");
            checked += 1;
        }
        assert!(checked > 180_000);
        let mut got = String::new();
        push_ms(&mut got, 2_500);
        assert_eq!(got, "     0.003");
    }

    fn check(got: &str, want: &str) {
        assert_eq!(got, want, "\n--- got ---\n{got}--- want ---\n{want}");
    }

    #[test]
    fn golden_design_both_ends() {
        let convs = conversations(run(&design_sequence()));
        assert_eq!(convs.len(), 1);
        let got = draw(&convs[0], &LadderOptions::default());
        check(
            &got,
            include_str!("../../tests/fixtures/synthetic/design_ladder.txt"),
        );
    }

    /// Colour changes no visible character, and marks what it should.
    #[test]
    fn colour_is_exact_and_removable() {
        let convs = conversations(run(&design_sequence()));
        let plain = draw(&convs[0], &LadderOptions::default());
        let opts = LadderOptions {
            colour: true,
            ..LadderOptions::default()
        };
        let col = draw(&convs[0], &opts);
        assert!(!plain.contains('\x1b'));
        let mut stripped = String::new();
        let mut it = col.chars();
        while let Some(c) = it.next() {
            if c == '\x1b' {
                for c in it.by_ref() {
                    if c == 'm' {
                        break;
                    }
                }
            } else {
                stripped.push(c);
            }
        }
        assert_eq!(stripped, plain);
        assert!(
            col.contains("\x1b[36m-- SYN ----"),
            "SYN arrow cyan:\n{col}"
        );
        assert!(col.contains("\x1b[1mconnect() = 0\x1b[0m"), "{col}");
        assert!(col.contains("\x1b[32mESTABLISHED\x1b[0m"), "{col}");
    }

    #[test]
    fn golden_design_unicode() {
        let convs = conversations(run(&design_sequence()));
        let opts = LadderOptions {
            unicode: true,
            ..LadderOptions::default()
        };
        let got = draw(&convs[0], &opts);
        check(
            &got,
            include_str!("../../tests/fixtures/synthetic/design_ladder_unicode.txt"),
        );
    }

    #[test]
    fn golden_design_client_only() {
        let events: Vec<_> = design_sequence()
            .into_iter()
            .filter(|e| e.skaddr == CLIENT)
            .collect();
        let convs = conversations(run(&events));
        assert_eq!(convs.len(), 1);
        assert!(convs[0].server.is_none());
        let got = draw(&convs[0], &LadderOptions::default());
        check(
            &got,
            include_str!("../../tests/fixtures/synthetic/design_ladder_client_only.txt"),
        );
    }

    #[test]
    fn server_only_with_synack_retransmits() {
        let sv = "127.0.0.1:8080";
        let cl = "127.0.0.1:40001";
        let events = [
            Ev::tr(0, LISTENER, Close, Listen)
                .tuple("0.0.0.0:8080", "0.0.0.0:0")
                .owner(17, "nginx")
                .task()
                .ev(),
            Ev::synack(1_000 * MS, LISTENER, 0x77).tuple(sv, cl).ev(),
            Ev::synack(3_000 * MS, LISTENER, 0x77).tuple(sv, cl).ev(),
            Ev::tr(3_000 * MS + 50 * US, CHILD, Listen, SynRecv)
                .tuple(sv, cl)
                .ev(),
            Ev::tr(3_000 * MS + 51 * US, CHILD, SynRecv, Established)
                .tuple(sv, cl)
                .ev(),
        ];
        let convs = conversations(run(&events));
        assert_eq!(convs.len(), 1);
        let got = draw(&convs[0], &LadderOptions::default());
        assert!(
            got.starts_with("  time(ms)  (remote) 127.0.0.1:40001"),
            "{got}"
        );
        assert!(got.contains("<-- SYN-ACK retransmit #1 "), "{got}");
        assert!(got.contains("<-- SYN-ACK retransmit #2 "), "{got}");
        assert!(got.contains("--> "), "{got}");
        assert!(got.contains("SYN_RECV (child)"), "{got}");
        assert!(!got.contains("queued"), "{got}");

        // With the accept queue read by the kernel side, the server says how full it was.
        let mut conns = run(&events);
        for c in &mut conns {
            if c.role == crate::correlate::Role::Server {
                c.accept_queue = Some(crate::correlate::AcceptQueue { len: 128, max: 128 });
            }
        }
        let got = draw(&conversations(conns)[0], &LadderOptions::default());
        assert!(got.contains("ESTABLISHED queued 128/128"), "{got}");
    }

    #[test]
    fn golden_orphan_handover_then_time_wait() {
        // Server closes first as an orphan: its FIN's ACK hands it to a FIN_WAIT2
        // timewait sock; TIME_WAIT only when the client's FIN comes 500 ms later.
        let (ev, _) = server_first_orphan(Some(500 * MS));
        let convs = conversations(run(&ev));
        assert_eq!(convs.len(), 1);
        let got = draw(&convs[0], &LadderOptions::default());
        check(
            &got,
            include_str!("../../tests/fixtures/synthetic/orphan_handover_ladder.txt"),
        );
        // The client never closes: no TIME_WAIT drawn.
        let (ev, _) = server_first_orphan(None);
        let convs = conversations(run(&ev));
        let got = draw(&convs[0], &LadderOptions::default());
        assert!(got.contains("FIN_WAIT2 (timewait sock)"), "{got}");
        assert!(!got.contains("TIME_WAIT"), "{got}");
    }

    #[test]
    fn golden_half_open_request_in_client_only_ladder() {
        let convs = conversations(run(&half_open_client()));
        assert_eq!(convs.len(), 1);
        assert!(convs[0].server.is_none());
        let got = draw(&convs[0], &LadderOptions::default());
        check(
            &got,
            include_str!("../../tests/fixtures/synthetic/half_open_client_ladder.txt"),
        );
    }

    #[test]
    fn refused_and_rst() {
        let sv = "127.0.0.1:9";
        let conns = run(&[
            Ev::tr(0, 1, Close, SynSent)
                .tuple("127.0.0.1:0", sv)
                .owner(7, "cl")
                .task()
                .ev(),
            Ev::retx(1_000 * MS, 1, SynSent)
                .tuple("127.0.0.1:40000", sv)
                .ev(),
            Ev::rst_recv(1_000 * MS + 20 * US, 1)
                .tuple("127.0.0.1:40000", sv)
                .ev(),
            Ev::tr(1_000 * MS + 21 * US, 1, SynSent, Close)
                .tuple("127.0.0.1:40000", sv)
                .ev(),
            Ev::connect(1_000 * MS + 30 * US, 1, 3, -111)
                .owner(7, "cl")
                .task()
                .ev(),
        ]);
        let convs = conversations(conns);
        let got = draw(&convs[0], &LadderOptions::default());
        let want = "  time(ms)  client 127.0.0.1:40000 (cl 7)                                     (remote) 127.0.0.1:9
     0.000  SYN_SENT                      -- SYN -------------------------->
  1000.000                                -- SYN retransmit #1 ------------>
  1000.020                                <-- RST --------------------------
  1000.021  CLOSE
  1000.030  connect() = -111 ECONNREFUSED
";
        check(&got, want);
    }

    /// The heads are written without `format!`: they read as `Endpoint` and `Comm`
    /// print them, for IPv6, unknown addresses, escaped comms and a pid without comm.
    #[test]
    fn side_labels_print_as_display_does() {
        use crate::decode::{Comm, Family};
        let mut c = Connection::new(1, Role::Client, 0x10, Family::Inet6, 0);
        let ends: [(Option<IpAddr>, u16); 5] = [
            (Some("2001:db8::1".parse().unwrap()), 443),
            (Some("::ffff:10.0.0.1".parse().unwrap()), 80),
            (Some("10.1.2.3".parse().unwrap()), 65535),
            (Some("::".parse().unwrap()), 0),
            (None, 7),
        ];
        let owners = [
            (Some(42), Some(Comm(*b"a\\b\x1b\"q\xff\0\0\0\0\0\0\0\0\0"))),
            (Some(4_294_967_295), None),
            (None, Some(Comm::from_str_lossy("curl"))),
            (None, None),
        ];
        for (addr, port) in ends {
            for (role, (pid, comm)) in [Role::Client, Role::Unknown, Role::Listener]
                .into_iter()
                .zip(owners.iter().cycle())
            {
                (c.saddr, c.sport, c.role, c.pid, c.comm) = (addr, port, role, *pid, *comm);
                let name = if role == Role::Unknown {
                    "socket"
                } else {
                    role.name()
                };
                let want = match (c.pid, c.comm) {
                    (Some(p), Some(comm)) => format!("{name} {} ({comm} {p})", c.local()),
                    (Some(p), None) => format!("{name} {} (pid {p})", c.local()),
                    _ => format!("{name} {}", c.local()),
                };
                let mut got = String::new();
                side_label(&mut got, &c);
                assert_eq!(got, want);
                let mut got = String::new();
                endpoint(&mut got, addr, port);
                assert_eq!(got, c.local().to_string());
            }
        }
    }
}
