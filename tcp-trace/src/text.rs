//! Text without `core::fmt` and without allocating: a fixed-capacity string on the
//! stack ([`StackStr`]), the [`Sink`] the formatters append to, and formatters for
//! integers, hex, addresses, `comm`, TCP states and JSON string literals that print
//! exactly what `Display` (or serde_json) prints.
//!
//! A leaf module: the correlator (`Endpoint`'s `Display`) and the renderers use it; it
//! depends on nothing of theirs (only on `decode`'s value types).
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::decode::{Comm, TcpState};

/// Small fixed-capacity string used to format without allocating.
pub(crate) struct StackStr<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> StackStr<N> {
    pub(crate) fn new() -> Self {
        StackStr {
            buf: [0; N],
            len: 0,
        }
    }
    /// Appends ASCII bytes (anything else, or what does not fit, is dropped).
    pub(crate) fn push_ascii(&mut self, b: &[u8]) {
        if b.is_ascii() && self.len + b.len() <= N {
            self.buf[self.len..self.len + b.len()].copy_from_slice(b);
            self.len += b.len();
        }
    }
    pub(crate) fn as_str(&self) -> &str {
        // Only whole `&str`s are ever appended (see write_str), so this is UTF-8.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl<const N: usize> std::fmt::Write for StackStr<N> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let b = s.as_bytes();
        if self.len + b.len() > N {
            return Err(std::fmt::Error);
        }
        self.buf[self.len..self.len + b.len()].copy_from_slice(b);
        self.len += b.len();
        Ok(())
    }
}

/// Something the formatters below append bytes to.
pub(crate) trait Sink {
    fn put(&mut self, b: &[u8]);
    /// Appends `n` bytes written by `f` (into a scratch buffer of at least `n`, at
    /// most 40 bytes, unless the sink has room for them in place).
    fn put_with(&mut self, n: usize, f: impl FnOnce(&mut [u8])) {
        let mut b = [0u8; 40];
        f(&mut b[..n]);
        self.put(&b[..n]);
    }
}

impl<const N: usize> Sink for StackStr<N> {
    fn put(&mut self, b: &[u8]) {
        self.push_ascii(b);
    }
}

pub(crate) const DIGITS2: &[u8; 200] = b"0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// `v` in decimal, like `{v}`, through `itoa`. The hand-written two-digits-per-
/// division version before was 22.5 % of the instructions of a replayed storm's
/// `--json` (connection lines carry ~25 numbers each); with `itoa` the whole replay
/// took 4.8 % fewer (callgrind, 998.5 M -> 950.5 M, same output). A hand-written
/// four-digits-per-division one writing in place saved 0.5 %.
pub(crate) fn put_u64(s: &mut impl Sink, v: u64) {
    let mut b = itoa::Buffer::new();
    s.put(b.format(v).as_bytes());
}

/// `v` in decimal, like `{v}`.
pub(crate) fn put_i64(s: &mut impl Sink, v: i64) {
    if v < 0 {
        s.put(b"-");
    }
    put_u64(s, v.unsigned_abs());
}

/// `v` in decimal, like `{v}`.
pub(crate) fn put_i128(s: &mut impl Sink, v: i128) {
    match i64::try_from(v) {
        Ok(v) => put_i64(s, v),
        Err(_) => {
            use std::fmt::Write as _;
            let mut b = StackStr::<48>::new();
            let _ = write!(b, "{v}");
            s.put(b.as_str().as_bytes());
        }
    }
}

/// `v` in lowercase hex without `0x` or leading zeros, like `{v:x}`.
pub(crate) fn put_hex_digits(s: &mut impl Sink, v: u64) {
    let n = (v | 1).ilog2() as usize / 4 + 1;
    s.put_with(n, |out| {
        let mut v = v;
        for d in out.iter_mut().rev() {
            *d = b"0123456789abcdef"[(v & 0xf) as usize];
            v >>= 4;
        }
    });
}

/// `v` like `{v:#x}` (`0x1f`, `0x0`).
pub(crate) fn put_hex(s: &mut impl Sink, v: u64) {
    s.put(b"0x");
    put_hex_digits(s, v);
}

fn put_v4(s: &mut impl Sink, a: Ipv4Addr) {
    let [a, b, c, d] = a.octets();
    put_u64(s, a as u64);
    s.put(b".");
    put_u64(s, b as u64);
    s.put(b".");
    put_u64(s, c as u64);
    s.put(b".");
    put_u64(s, d as u64);
}

/// Like `Ipv6Addr`'s `Display` (RFC 5952: the longest run of two or more zero
/// groups, the first of equal ones, becomes `::`; IPv4-mapped as `::ffff:a.b.c.d`).
fn put_v6(s: &mut impl Sink, a: Ipv6Addr) {
    if let Some(v4) = a.to_ipv4_mapped() {
        s.put(b"::ffff:");
        return put_v4(s, v4);
    }
    let seg = a.segments();
    let (mut best, mut best_len, mut cur, mut cur_len) = (0, 0, 0, 0);
    for (i, &g) in seg.iter().enumerate() {
        if g == 0 {
            if cur_len == 0 {
                cur = i;
            }
            cur_len += 1;
            if cur_len > best_len {
                (best, best_len) = (cur, cur_len);
            }
        } else {
            cur_len = 0;
        }
    }
    let groups = |s: &mut _, part: &[u16]| {
        for (k, &g) in part.iter().enumerate() {
            if k > 0 {
                Sink::put(s, b":");
            }
            put_hex_digits(s, g as u64);
        }
    };
    if best_len > 1 {
        groups(s, &seg[..best]);
        s.put(b"::");
        groups(s, &seg[best + best_len..]);
    } else {
        groups(s, &seg);
    }
}

/// Like `IpAddr`'s `Display`.
pub(crate) fn put_ip(s: &mut impl Sink, a: IpAddr) {
    match a {
        IpAddr::V4(a) => put_v4(s, a),
        IpAddr::V6(a) => put_v6(s, a),
    }
}

/// Like `Comm`'s `Display`: printable ASCII but `\` as is, anything else `\xNN`.
/// Only `"` then needs JSON escaping, and `\` (of `\xNN`) when `json`.
pub(crate) fn put_comm(s: &mut impl Sink, c: &Comm, json: bool) {
    let bytes = c.bytes();
    if bytes
        .iter()
        .all(|&b| (0x20..0x7f).contains(&b) && b != b'\\' && b != b'"')
    {
        return s.put(bytes);
    }
    for &b in bytes {
        if (0x20..0x7f).contains(&b) && b != b'\\' {
            if json && b == b'"' {
                s.put(b"\\\"");
            } else {
                s.put(&[b]);
            }
        } else {
            s.put(if json { b"\\\\x" } else { b"\\x" });
            let hex = b"0123456789abcdef";
            s.put(&[hex[(b >> 4) as usize], hex[(b & 0xf) as usize]]);
        }
    }
}

/// Like `TcpState`'s `Display` (`UNKNOWN(n)` for values this build does not know).
pub(crate) fn put_state(s: &mut impl Sink, st: TcpState) {
    match st {
        TcpState::Unknown(n) => {
            s.put(b"UNKNOWN(");
            put_u64(s, n as u64);
            s.put(b")");
        }
        st => s.put(st.name().as_bytes()),
    }
}

/// `s` as a JSON string literal (`"`, `\` and control characters escaped).
pub(crate) fn put_json_str(out: &mut impl Sink, s: &str) {
    out.put(b"\"");
    let b = s.as_bytes();
    let mut start = 0;
    for (i, &c) in b.iter().enumerate() {
        let esc: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            // The short escapes, as serde_json writes them.
            0x08 => b"\\b",
            0x0c => b"\\f",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"\\u00",
            _ => continue,
        };
        out.put(&b[start..i]);
        out.put(esc);
        if esc == b"\\u00" {
            let hex = b"0123456789abcdef";
            out.put(&[hex[(c >> 4) as usize], hex[(c & 0xf) as usize]]);
        }
        start = i + 1;
    }
    out.put(&b[start..]);
    out.put(b"\"");
}
