//! Sockets open before the start: the TCP sockets that exist right now, in every
//! network namespace of the host, learned through sock_diag (`NETLINK_SOCK_DIAG`,
//! an inet_diag dump of `AF_INET` and `AF_INET6`, all states).
//!
//! The tracer sees a connection only from its first event after the hooks are
//! attached; a connection opened earlier shows up as a nameless fragment. A
//! [`snapshot`] taken at start gives those connections their tuple, state and owner.
//!
//! How: a netlink socket dumps the namespace it was created in. The caller's own
//! namespace is dumped from the caller's thread (no `setns`). Every other namespace
//! reachable through `/proc/*/ns/net` (and the named ones in `/run/netns/`, which may
//! have no process in them) is opened once per namespace inode, and one short-lived
//! dedicated thread `setns`es into each in turn, creates a netlink socket there and
//! dumps it; the thread then exits, so the caller's threads never change namespace.
//! Owners come from one scan of `/proc/*/fd` (`socket:[INODE]` links), looking only
//! for the inodes the dumps returned.
//!
//! Limits: a namespace held only by a thread (`/proc/PID/task/TID/ns/net` differing
//! from its process's) or only by an open file descriptor / bind mount outside
//! `/run/netns` is not found. Request sockets (`SYN_RECV`) and `TIME_WAIT` sockets
//! have no inode and therefore no owner. A socket shared by several processes is
//! attributed to the lowest pid holding it.
use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_sock_diag::{
    SockDiagMessage,
    constants::{AF_INET, AF_INET6, IPPROTO_TCP},
    inet::{ExtensionFlags, InetRequest, InetResponseHeader, SocketId, StateFlags},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_SOCK_DIAG};

use crate::decode::{Comm, Family, TcpState};

/// A dump that receives nothing for this long fails (its namespace is named in
/// [`Snapshot::errors`]) instead of hanging the start.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(5);
/// At most this many sockets are kept in a snapshot; beyond, the rest are dropped
/// and the truncation is named in [`Snapshot::errors`].
pub const MAX_SOCKETS: usize = 2_000_000;
/// The owner scan reads at most this many `/proc/PID/fd/*` links.
pub const MAX_FD_LINKS: usize = 4_000_000;
/// Receive buffer: the kernel fills dump datagrams up to 32 KiB.
const RECV_BUF: usize = 64 * 1024;
/// Netlink header size (`struct nlmsghdr`).
const NLMSG_HDRLEN: usize = 16;

/// A TCP socket that existed when the [`snapshot`] was taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExistingSocket {
    /// Inode of the network namespace (as `/proc/PID/ns/net`'s `st_ino`).
    pub netns: u64,
    pub family: crate::decode::Family,
    pub local: (IpAddr, u16),
    pub remote: (IpAddr, u16),
    /// Kernel numbering ([`TcpState::from_raw`]). Request sockets report `SYN_RECV`.
    pub state: crate::decode::TcpState,
    /// Socket inode (0 for `TIME_WAIT` and `SYN_RECV` request socks).
    pub inode: u64,
    pub uid: u32,
    /// `idiag_cookie`, both words combined (`sock_gen_cookie`'s value).
    pub cookie: u64,
    /// (pid (tgid), comm) of a process holding the socket in `/proc/PID/fd`, where found.
    pub owner: Option<(u32, crate::decode::Comm)>,
    /// `idiag_expires`: ms left on the socket's timer (a TIME_WAIT socket: until it
    /// goes); 0 when none.
    pub expires_ms: u32,
}

/// The result of [`snapshot`].
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub sockets: Vec<ExistingSocket>,
    /// Network namespaces whose dump succeeded (the caller's own included).
    pub namespaces: usize,
    /// One line per namespace that could not be entered or dumped, and per other
    /// shortfall (unreadable `/proc` entries are summed up in one line).
    pub errors: Vec<String>,
}

/// "learned 12 TCP sockets open before start in 3 network namespaces", with the
/// number of errors appended when there are some.
pub fn summary_line(s: &Snapshot) -> String {
    let n = s.sockets.len();
    let m = s.namespaces;
    let mut line = format!(
        "learned {n} TCP socket{} open before start in {m} network namespace{}",
        if n == 1 { "" } else { "s" },
        if m == 1 { "" } else { "s" },
    );
    match s.errors.len() {
        0 => {}
        1 => line.push_str(" (1 error)"),
        k => line.push_str(&format!(" ({k} errors)")),
    }
    line
}

/// Dumps every TCP socket in every network namespace reachable through
/// `/proc/*/ns/net` (deduplicated by inode; setns from a short-lived dedicated
/// thread, never the caller's thread), plus the caller's own namespace. Never
/// panics; a namespace that cannot be entered is named in `errors`.
pub fn snapshot() -> Snapshot {
    snapshot_states(ALL_STATES)
}

/// Every TCP state, as `ss -a` asks (the kernel ignores bits it has no state for, and
/// the SYN_RECV bit also selects the NEW_SYN_RECV request socks).
pub const ALL_STATES: u32 = u32::MAX;
/// Every state but TIME_WAIT: what the tracer learns at start. A timewait socket has
/// no owner and no further transition to name; a busy host holds tens of thousands
/// (a connection storm left 120 k here, whose dump and seeding took long enough for
/// the ring to overflow meanwhile).
pub const NOT_TIME_WAIT: u32 = !(1 << 6);
/// TIME_WAIT only: what `explain` reads after the rest, for its TIME_WAIT count.
pub const TIME_WAIT_ONLY: u32 = 1 << 6;

/// Like [`snapshot`], of the sockets in `states` only (a bit per kernel TCP state
/// number, `1 << TCP_ESTABLISHED` …).
pub fn snapshot_states(states: u32) -> Snapshot {
    let mut snap = Snapshot::default();
    match catch_unwind(AssertUnwindSafe(|| fill(&mut snap, states))) {
        Ok(()) => {}
        Err(_) => snap
            .errors
            .push("sock_diag snapshot: internal panic; the snapshot is partial".to_string()),
    }
    snap
}

fn fill(snap: &mut Snapshot, states: u32) {
    // The caller's own namespace, from the caller's thread: no setns needed.
    let own = match fs::metadata("/proc/thread-self/ns/net") {
        Ok(m) => Some(m.ino()),
        Err(e) => {
            snap.errors.push(format!(
                "own network namespace: /proc/thread-self/ns/net: {e}"
            ));
            None
        }
    };
    let own_ino = own.unwrap_or(0);
    match dump_current_netns(own_ino, &mut snap.sockets, states) {
        Ok(warn) => {
            snap.namespaces += 1;
            snap.errors.extend(warn);
        }
        Err(e) => snap
            .errors
            .push(format!("netns {own_ino} (own): sock_diag dump: {e}")),
    }

    // Every other namespace, from one dedicated thread.
    let others = discover_namespaces(own, &mut snap.errors);
    if !others.is_empty() {
        let spawned = std::thread::Builder::new()
            .name("tt-sockdiag".into())
            .spawn(move || dump_foreign(others, states));
        match spawned {
            Ok(handle) => match handle.join() {
                Ok(r) => {
                    snap.namespaces += r.namespaces;
                    snap.sockets.extend(r.sockets);
                    snap.errors.extend(r.errors);
                }
                Err(_) => snap
                    .errors
                    .push("sock_diag worker thread panicked; other namespaces skipped".into()),
            },
            Err(e) => snap.errors.push(format!(
                "sock_diag worker thread could not start ({e}); other namespaces skipped"
            )),
        }
    }
    if snap.sockets.len() >= MAX_SOCKETS {
        snap.errors.push(format!(
            "more than {MAX_SOCKETS} TCP sockets: the snapshot keeps the first {MAX_SOCKETS}"
        ));
    }

    // Owners.
    let wanted: HashSet<u64> = snap
        .sockets
        .iter()
        .map(|s| s.inode)
        .filter(|&i| i != 0)
        .collect();
    if !wanted.is_empty() {
        let owners = find_owners(&wanted);
        for s in &mut snap.sockets {
            if s.inode != 0 {
                s.owner = owners.get(&s.inode).copied();
            }
        }
    }
}

/// A network namespace to enter: kept open from discovery on, so it cannot vanish.
struct Namespace {
    inode: u64,
    file: File,
    /// The path it was opened through (for error lines).
    via: String,
}

/// Opens each distinct network namespace of `/proc/*/ns/net` and `/run/netns/*`,
/// except `own`.
fn discover_namespaces(own: Option<u64>, errors: &mut Vec<String>) -> Vec<Namespace> {
    let mut seen: HashSet<u64> = own.into_iter().collect();
    let mut out = Vec::new();
    let mut denied = 0usize;
    let mut first_denied = None;
    let mut consider = |path: String, out: &mut Vec<Namespace>| match File::open(&path) {
        Ok(file) => match file.metadata() {
            Ok(m) if seen.insert(m.ino()) => out.push(Namespace {
                inode: m.ino(),
                file,
                via: path,
            }),
            Ok(_) => {}
            Err(e) => {
                denied += 1;
                first_denied.get_or_insert_with(|| format!("{path}: {e}"));
            }
        },
        // The process exited meanwhile: nothing to learn.
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            denied += 1;
            first_denied.get_or_insert_with(|| format!("{path}: {e}"));
        }
    };
    match fs::read_dir("/proc") {
        Ok(dir) => {
            for entry in dir.flatten() {
                let Some(pid) = parse_pid(entry.file_name().as_bytes()) else {
                    continue;
                };
                consider(format!("/proc/{pid}/ns/net"), &mut out);
            }
        }
        Err(e) => errors.push(format!(
            "/proc: {e}; only the own network namespace is dumped"
        )),
    }
    if let Ok(dir) = fs::read_dir("/run/netns") {
        for entry in dir.flatten() {
            let p = entry.path();
            consider(p.to_string_lossy().into_owned(), &mut out);
        }
    }
    if denied > 0 {
        errors.push(format!(
            "{denied} network namespace links could not be opened (first: {}); their \
             namespaces are not dumped",
            first_denied.unwrap_or_default()
        ));
    }
    out
}

struct ForeignDump {
    sockets: Vec<ExistingSocket>,
    namespaces: usize,
    errors: Vec<String>,
}

/// Runs on the dedicated thread: setns into each namespace, dump it. The thread's
/// namespace is left wherever the last setns put it; the thread exits right after.
fn dump_foreign(namespaces: Vec<Namespace>, states: u32) -> ForeignDump {
    let mut r = ForeignDump {
        sockets: Vec::new(),
        namespaces: 0,
        errors: Vec::new(),
    };
    for ns in namespaces {
        // SAFETY: plain syscall on a file descriptor we own (kept open by `ns.file`
        // for the call's duration); it changes only this dedicated thread's network
        // namespace, which no other code runs on.
        let rc = unsafe { libc::setns(ns.file.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            let e = io::Error::last_os_error();
            r.errors
                .push(format!("netns {} ({}): setns: {e}", ns.inode, ns.via));
            continue;
        }
        match dump_current_netns(ns.inode, &mut r.sockets, states) {
            Ok(warn) => {
                r.namespaces += 1;
                r.errors.extend(warn);
            }
            Err(e) => r.errors.push(format!(
                "netns {} ({}): sock_diag dump: {e}",
                ns.inode, ns.via
            )),
        }
    }
    r
}

/// Dumps the TCP sockets (both families, all states) of the calling thread's
/// network namespace into `out`, tagged `netns`. `Ok` carries warnings (an
/// interrupted dump, unparsable messages).
fn dump_current_netns(
    netns: u64,
    out: &mut Vec<ExistingSocket>,
    states: u32,
) -> Result<Vec<String>, String> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG).map_err(|e| format!("socket: {e}"))?;
    socket.bind_auto().map_err(|e| format!("bind: {e}"))?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .map_err(|e| format!("connect: {e}"))?;
    set_recv_timeout(&socket, RECV_TIMEOUT).map_err(|e| format!("SO_RCVTIMEO: {e}"))?;

    let mut warnings = Vec::new();
    let mut buf = vec![0u8; RECV_BUF];
    for (seq, family) in [(1u32, AF_INET), (2, AF_INET6)] {
        let req = dump_request(family, seq, states);
        socket.send(&req, 0).map_err(|e| format!("send: {e}"))?;
        let mut stats = ChunkStats::default();
        loop {
            let n = loop {
                match socket.recv(&mut &mut buf[..], libc::MSG_TRUNC) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        return Err(format!("no answer within {RECV_TIMEOUT:?}"));
                    }
                    Err(e) => return Err(format!("recv: {e}")),
                }
            };
            if n > buf.len() {
                return Err(format!(
                    "a {n}-byte datagram exceeds the {RECV_BUF}-byte buffer"
                ));
            }
            let step = parse_dump_datagram(&buf[..n], netns, out, &mut stats)?;
            if step == DumpStep::Done {
                break;
            }
        }
        let fam = if family == AF_INET { "ipv4" } else { "ipv6" };
        if stats.interrupted {
            warnings.push(format!(
                "netns {netns}: the {fam} dump was interrupted by a change (NLM_F_DUMP_INTR); \
                 some sockets may be missing or repeated"
            ));
        }
        if stats.skipped > 0 {
            warnings.push(format!(
                "netns {netns}: {} {fam} sock_diag messages could not be parsed (first: {})",
                stats.skipped,
                stats.first_error.unwrap_or_default()
            ));
        }
        if stats.truncated {
            warnings.push(format!(
                "netns {netns}: more than {MAX_SOCKETS} sockets; the rest are dropped"
            ));
        }
    }
    Ok(warnings)
}

fn set_recv_timeout(socket: &Socket, t: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        // `as _`: naming libc::time_t / suseconds_t warns on musl (see clock.rs).
        tv_sec: t.as_secs() as _,
        tv_usec: t.subsec_micros() as _,
    };
    // SAFETY: `tv` is a valid timeval that outlives the call, and its exact size is
    // passed; the fd is the open netlink socket owned by `socket`.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const libc::timeval as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The bytes of an inet_diag dump request: TCP, `family`, the states in `states`.
fn dump_request(family: u8, seq: u32, states: u32) -> Vec<u8> {
    let mut hdr = NetlinkHeader::default();
    hdr.flags = NLM_F_REQUEST | NLM_F_DUMP;
    hdr.sequence_number = seq;
    let socket_id = if family == AF_INET {
        SocketId::new_v4()
    } else {
        SocketId::new_v6()
    };
    let mut msg = NetlinkMessage::new(
        hdr,
        SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::empty(),
            states: StateFlags::from_bits_retain(states),
            socket_id,
        })
        .into(),
    );
    msg.finalize();
    let mut buf = vec![0u8; msg.buffer_len()];
    msg.serialize(&mut buf);
    buf
}

#[derive(Debug, Default)]
struct ChunkStats {
    skipped: usize,
    first_error: Option<String>,
    interrupted: bool,
    truncated: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum DumpStep {
    More,
    Done,
}

/// Parses one received datagram of a dump: every inet_diag response becomes an
/// [`ExistingSocket`] in `out`. `Done` at `NLMSG_DONE`; `Err` for a netlink error
/// or a malformed datagram. A message that does not parse is counted in `stats`
/// and skipped.
fn parse_dump_datagram(
    buf: &[u8],
    netns: u64,
    out: &mut Vec<ExistingSocket>,
    stats: &mut ChunkStats,
) -> Result<DumpStep, String> {
    let mut off = 0usize;
    while buf.len().saturating_sub(off) >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes([buf[off], buf[off + 1], buf[off + 2], buf[off + 3]]) as usize;
        if len < NLMSG_HDRLEN || len > buf.len() - off {
            return Err(format!(
                "malformed netlink message: length {len} at offset {off} of {}",
                buf.len()
            ));
        }
        let bytes = &buf[off..off + len];
        match NetlinkMessage::<SockDiagMessage>::deserialize(bytes) {
            Ok(msg) => {
                if msg.header.flags & NLM_F_DUMP_INTR != 0 {
                    stats.interrupted = true;
                }
                match msg.payload {
                    NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => {
                        if out.len() < MAX_SOCKETS {
                            let mut sock = socket_from_header(netns, &r.header);
                            // The parser keeps no TIME_WAIT timer value: read from the
                            // message (`struct inet_diag_msg`'s `idiag_expires`).
                            sock.expires_ms = bytes
                                .get(EXPIRES_AT..EXPIRES_AT + 4)
                                .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                                .unwrap_or(0);
                            out.push(sock);
                        } else {
                            stats.truncated = true;
                        }
                    }
                    NetlinkPayload::Done(_) => return Ok(DumpStep::Done),
                    NetlinkPayload::Error(e) => {
                        if let Some(code) = e.code {
                            return Err(format!(
                                "netlink error: {}",
                                io::Error::from_raw_os_error(-code.get())
                            ));
                        }
                    }
                    _ => {}
                }
            }
            Err(e) => {
                stats.skipped += 1;
                stats.first_error.get_or_insert_with(|| e.to_string());
            }
        }
        off += (len + 3) & !3;
    }
    Ok(DumpStep::More)
}

/// Offset of `idiag_expires` in a netlink message carrying a `struct inet_diag_msg`:
/// the header, then family, state, timer, retrans (4 bytes) and the socket id (48).
const EXPIRES_AT: usize = NLMSG_HDRLEN + 4 + 48;

/// One inet_diag response header → an [`ExistingSocket`] without owner.
fn socket_from_header(netns: u64, h: &InetResponseHeader) -> ExistingSocket {
    let id = &h.socket_id;
    ExistingSocket {
        netns,
        family: Family::from_raw(h.family),
        local: (id.source_address, id.source_port),
        remote: (id.destination_address, id.destination_port),
        state: TcpState::from_raw(h.state),
        inode: u64::from(h.inode),
        uid: h.uid,
        cookie: cookie_from_words(id.cookie),
        owner: None,
        expires_ms: 0,
    }
}

/// `idiag_cookie` is `__u32[2]` in host order, low word first
/// (`sock_diag_save_cookie`): combined into the 64-bit socket cookie.
pub fn cookie_from_words(raw: [u8; 8]) -> u64 {
    let lo = u32::from_ne_bytes([raw[0], raw[1], raw[2], raw[3]]);
    let hi = u32::from_ne_bytes([raw[4], raw[5], raw[6], raw[7]]);
    (u64::from(hi) << 32) | u64::from(lo)
}

/// A `/proc` directory name that is a pid.
fn parse_pid(name: &[u8]) -> Option<u32> {
    if name.is_empty() || name.len() > 10 || !name.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(name).ok()?.parse().ok()
}

/// The inode of a `/proc/PID/fd/N` link target `socket:[INODE]`.
pub fn parse_socket_link(target: &[u8]) -> Option<u64> {
    let digits = target.strip_prefix(b"socket:[")?.strip_suffix(b"]")?;
    if digits.is_empty() || digits.len() > 20 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// The contents of `/proc/PID/comm` (name and a newline) → [`Comm`], bytes kept as
/// they are (a comm need not be UTF-8), at most 15.
pub fn comm_from_proc(contents: &[u8]) -> Comm {
    let b = contents.strip_suffix(b"\n").unwrap_or(contents);
    let b = &b[..b.iter().position(|&c| c == 0).unwrap_or(b.len())];
    let mut c = [0u8; 16];
    let n = b.len().min(15);
    c[..n].copy_from_slice(&b[..n]);
    Comm(c)
}

/// One scan of `/proc/*/fd`: inode → (pid, comm) for the `wanted` inodes only. A
/// process whose fd directory cannot be read is skipped; the scan stops once every
/// inode is found or after [`MAX_FD_LINKS`] links.
fn find_owners(wanted: &HashSet<u64>) -> HashMap<u64, (u32, Comm)> {
    let mut found: HashMap<u64, (u32, Comm)> = HashMap::new();
    let Ok(proc_dir) = fs::read_dir("/proc") else {
        return found;
    };
    let mut pids: Vec<u32> = proc_dir
        .flatten()
        .filter_map(|e| parse_pid(e.file_name().as_bytes()))
        .collect();
    // Lowest pid first: a socket inherited over fork goes to the parent.
    pids.sort_unstable();
    let mut links = 0usize;
    'procs: for pid in pids {
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        let mut comm: Option<Comm> = None;
        for fd in fds.flatten() {
            links += 1;
            if links > MAX_FD_LINKS {
                break 'procs;
            }
            let Ok(target) = fs::read_link(fd.path()) else {
                continue;
            };
            let Some(ino) = parse_socket_link(target.as_os_str().as_bytes()) else {
                continue;
            };
            if !wanted.contains(&ino) || found.contains_key(&ino) {
                continue;
            }
            let c = *comm.get_or_insert_with(|| {
                fs::read(format!("/proc/{pid}/comm"))
                    .map(|b| comm_from_proc(&b))
                    .unwrap_or_default()
            });
            found.insert(ino, (pid, c));
            if found.len() == wanted.len() {
                break 'procs;
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_sock_diag::inet::{InetResponse, Timer};
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn cookie_combines_low_word_first() {
        let mut raw = [0u8; 8];
        raw[..4].copy_from_slice(&0x1122_3344u32.to_ne_bytes());
        raw[4..].copy_from_slice(&0x0000_0005u32.to_ne_bytes());
        assert_eq!(cookie_from_words(raw), 0x0000_0005_1122_3344);
        assert_eq!(cookie_from_words([0xff; 8]), u64::MAX);
        assert_eq!(cookie_from_words([0; 8]), 0);
    }

    #[test]
    fn socket_links() {
        assert_eq!(parse_socket_link(b"socket:[12345]"), Some(12345));
        assert_eq!(parse_socket_link(b"socket:[0]"), Some(0));
        assert_eq!(parse_socket_link(b"socket:[]"), None);
        assert_eq!(parse_socket_link(b"socket:[12a]"), None);
        assert_eq!(parse_socket_link(b"pipe:[12345]"), None);
        assert_eq!(parse_socket_link(b"/dev/null"), None);
        assert_eq!(parse_socket_link(b"socket:[99999999999999999999999]"), None);
        assert_eq!(parse_socket_link(b"anon_inode:[eventfd]"), None);
    }

    #[test]
    fn pids() {
        assert_eq!(parse_pid(b"1"), Some(1));
        assert_eq!(parse_pid(b"4194304"), Some(4_194_304));
        assert_eq!(parse_pid(b"self"), None);
        assert_eq!(parse_pid(b""), None);
        assert_eq!(parse_pid(b"12x"), None);
        assert_eq!(parse_pid(b"99999999999"), None);
    }

    #[test]
    fn comm_contents() {
        assert_eq!(comm_from_proc(b"sshd\n").bytes(), b"sshd");
        assert_eq!(comm_from_proc(b"sshd").bytes(), b"sshd");
        assert_eq!(
            comm_from_proc(b"a-very-long-command-name\n").bytes(),
            b"a-very-long-com"
        );
        assert_eq!(comm_from_proc(b"\xffx\n").bytes(), b"\xffx");
        assert!(comm_from_proc(b"\n").is_empty());
    }

    #[test]
    fn summary() {
        let mut s = Snapshot {
            sockets: Vec::new(),
            namespaces: 1,
            errors: Vec::new(),
        };
        assert_eq!(
            summary_line(&s),
            "learned 0 TCP sockets open before start in 1 network namespace"
        );
        s.namespaces = 3;
        s.sockets = vec![sample(1); 12];
        assert_eq!(
            summary_line(&s),
            "learned 12 TCP sockets open before start in 3 network namespaces"
        );
        s.sockets.truncate(1);
        s.errors = vec!["x".into(), "y".into()];
        assert_eq!(
            summary_line(&s),
            "learned 1 TCP socket open before start in 3 network namespaces (2 errors)"
        );
    }

    fn sample(netns: u64) -> ExistingSocket {
        ExistingSocket {
            netns,
            family: Family::Inet,
            local: (IpAddr::V4(Ipv4Addr::LOCALHOST), 80),
            remote: (IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
            state: TcpState::Listen,
            inode: 7,
            uid: 0,
            cookie: 1,
            owner: None,
            expires_ms: 0,
        }
    }

    fn response_header(family: u8, state: u8, inode: u32) -> InetResponseHeader {
        let (src, dst) = if family == AF_INET {
            (
                IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
                IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
            )
        } else {
            (
                IpAddr::V6(Ipv6Addr::LOCALHOST),
                IpAddr::V6("2001:db8::2".parse().unwrap()),
            )
        };
        let mut cookie = [0u8; 8];
        cookie[..4].copy_from_slice(&7u32.to_ne_bytes());
        cookie[4..].copy_from_slice(&1u32.to_ne_bytes());
        InetResponseHeader {
            family,
            state,
            timer: if state == 6 {
                Some(Timer::TimeWait)
            } else {
                None
            },
            socket_id: SocketId {
                source_port: 43210,
                destination_port: 443,
                source_address: src,
                destination_address: dst,
                interface_id: 0,
                cookie,
            },
            recv_queue: 0,
            send_queue: 0,
            uid: 1000,
            inode,
        }
    }

    fn serialize(payload: NetlinkPayload<SockDiagMessage>, flags: u16) -> Vec<u8> {
        let mut hdr = NetlinkHeader::default();
        hdr.flags = flags;
        let mut msg = NetlinkMessage::new(hdr, payload);
        msg.finalize();
        let mut buf = vec![0u8; msg.buffer_len()];
        msg.serialize(&mut buf);
        buf
    }

    fn response(h: InetResponseHeader) -> Vec<u8> {
        serialize(
            NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(Box::new(InetResponse {
                header: h,
                nlas: Default::default(),
            }))),
            0x2, // NLM_F_MULTI
        )
    }

    fn done() -> Vec<u8> {
        serialize(
            NetlinkPayload::Done(netlink_packet_core::DoneMessage::default()),
            0x2,
        )
    }

    #[test]
    fn header_converts() {
        let s = socket_from_header(42, &response_header(AF_INET, 1, 999));
        assert_eq!(s.netns, 42);
        assert_eq!(s.family, Family::Inet);
        assert_eq!(s.local, (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 43210));
        assert_eq!(s.remote, (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)), 443));
        assert_eq!(s.state, TcpState::Established);
        assert_eq!(s.inode, 999);
        assert_eq!(s.uid, 1000);
        assert_eq!(s.cookie, (1 << 32) | 7);
        assert_eq!(s.owner, None);
    }

    #[test]
    fn datagram_of_responses_then_done() {
        let mut dgram = response(response_header(AF_INET, 10, 5));
        // A TIME_WAIT socket with 41.5 s left (the crate writes no TIME_WAIT timer).
        let mut tw = response(response_header(AF_INET6, 6, 0));
        tw[EXPIRES_AT..EXPIRES_AT + 4].copy_from_slice(&41_500u32.to_ne_bytes());
        dgram.extend(tw);
        let mut out = Vec::new();
        let mut stats = ChunkStats::default();
        let step = parse_dump_datagram(&dgram, 9, &mut out, &mut stats).unwrap();
        assert_eq!(step, DumpStep::More);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].state, TcpState::Listen);
        assert_eq!(out[0].inode, 5);
        assert_eq!(out[1].family, Family::Inet6);
        assert_eq!(out[1].state, TcpState::TimeWait);
        assert_eq!(out[1].inode, 0);
        assert_eq!((out[0].expires_ms, out[1].expires_ms), (0, 41_500));
        assert_eq!(out[1].local.0, IpAddr::V6(Ipv6Addr::LOCALHOST));
        assert!(out.iter().all(|s| s.netns == 9));
        assert_eq!(stats.skipped, 0);
        assert!(!stats.interrupted);

        let mut tail = response(response_header(AF_INET, 1, 6));
        tail.extend(done());
        let step = parse_dump_datagram(&tail, 9, &mut out, &mut stats).unwrap();
        assert_eq!(step, DumpStep::Done);
        assert_eq!(out.len(), 3);
    }

    #[test]
    fn interrupted_dump_is_flagged() {
        let mut dgram = serialize(
            NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(Box::new(InetResponse {
                header: response_header(AF_INET, 1, 3),
                nlas: Default::default(),
            }))),
            0x2 | NLM_F_DUMP_INTR,
        );
        dgram.extend(done());
        let mut out = Vec::new();
        let mut stats = ChunkStats::default();
        assert_eq!(
            parse_dump_datagram(&dgram, 1, &mut out, &mut stats).unwrap(),
            DumpStep::Done
        );
        assert!(stats.interrupted);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn netlink_error_is_an_error() {
        let mut msg = netlink_packet_core::ErrorMessage::default();
        msg.code = std::num::NonZeroI32::new(-libc::EPERM);
        msg.header = vec![0u8; 16];
        let err = serialize(NetlinkPayload::Error(msg), 0);
        let mut out = Vec::new();
        let e = parse_dump_datagram(&err, 1, &mut out, &mut ChunkStats::default()).unwrap_err();
        assert!(e.contains("netlink error"), "{e}");
        assert!(out.is_empty());
    }

    #[test]
    fn malformed_lengths_are_errors_not_panics() {
        let mut dgram = response(response_header(AF_INET, 1, 3));
        // A length beyond the datagram.
        let bad = (dgram.len() as u32 + 100).to_ne_bytes();
        dgram[..4].copy_from_slice(&bad);
        let mut out = Vec::new();
        assert!(parse_dump_datagram(&dgram, 1, &mut out, &mut ChunkStats::default()).is_err());
        // A length below the header size.
        dgram[..4].copy_from_slice(&4u32.to_ne_bytes());
        assert!(parse_dump_datagram(&dgram, 1, &mut out, &mut ChunkStats::default()).is_err());
        // A trailing fragment shorter than a header is ignored.
        assert_eq!(
            parse_dump_datagram(&[0u8; 8], 1, &mut out, &mut ChunkStats::default()).unwrap(),
            DumpStep::More
        );
        assert!(out.is_empty());
    }

    #[test]
    fn unparsable_response_is_skipped_and_counted() {
        // A response whose family is neither AF_INET nor AF_INET6 does not parse.
        let mut dgram = response(response_header(AF_INET, 1, 3));
        dgram[NLMSG_HDRLEN] = 99;
        dgram.extend(response(response_header(AF_INET, 1, 4)));
        let mut out = Vec::new();
        let mut stats = ChunkStats::default();
        parse_dump_datagram(&dgram, 1, &mut out, &mut stats).unwrap();
        assert_eq!(stats.skipped, 1);
        assert!(stats.first_error.is_some());
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].inode, 4);
    }

    #[test]
    fn dump_request_bytes() {
        let req = dump_request(AF_INET6, 7, ALL_STATES);
        // nlmsghdr (16) + inet_diag_req_v2 (56).
        assert_eq!(req.len(), 72);
        assert_eq!(u32::from_ne_bytes(req[0..4].try_into().unwrap()), 72);
        assert_eq!(u16::from_ne_bytes(req[4..6].try_into().unwrap()), 20); // SOCK_DIAG_BY_FAMILY
        assert_eq!(
            u16::from_ne_bytes(req[6..8].try_into().unwrap()),
            NLM_F_REQUEST | NLM_F_DUMP
        );
        assert_eq!(u32::from_ne_bytes(req[8..12].try_into().unwrap()), 7);
        assert_eq!(req[16], AF_INET6);
        assert_eq!(req[17], IPPROTO_TCP);
        assert_eq!(
            u32::from_ne_bytes(req[20..24].try_into().unwrap()),
            u32::MAX
        );
        let req = dump_request(AF_INET, 8, NOT_TIME_WAIT);
        let mask = u32::from_ne_bytes(req[20..24].try_into().unwrap());
        assert_eq!(mask & (1 << 6), 0, "TIME_WAIT is left out");
        assert_eq!(
            mask & (1 << 1 | 1 << 10 | 1 << 8),
            1 << 1 | 1 << 10 | 1 << 8
        );
    }
}
