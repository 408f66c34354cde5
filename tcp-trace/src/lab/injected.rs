//! The scenarios with a hand-made peer ([`super::raw`]): SYNs with an ISN no socket
//! of the client knows (stale-syn, C4), the same SYN twice (duplicate-syn, C8), and
//! data duplicated by nftables and reordered by hand (reorder-dup, C6); and two
//! connections from one fixed client port (isn-reuse, C7). Like the others they only
//! make traffic and record what they observed; the verdicts read the capture.
use std::io::Read;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::capture::Capture;
use super::env::{LabNet, join};
use super::raw::{ACK, FIN, Injector, PSH, RST, SYN, Segment, Sniffer, sockaddr_of};
use crate::clock::monotonic_ns;

/// Client ports of the hand-made segments: below the ephemeral range (32768–60999),
/// so no socket of the client namespace ever has them.
pub const STALE_PORT: u16 = 31001;
pub const CONTROL_PORT: u16 = 31002;
pub const DUP_PORT: u16 = 31003;
pub const REORDER_PORT: u16 = 31004;
pub const REUSE_PORT: u16 = 31005;

const WAIT: Duration = Duration::from_secs(3);

/// What the server read on one accepted connection.
#[derive(Debug)]
struct Accepted {
    bytes: Vec<u8>,
}

struct Server {
    handle: std::thread::JoinHandle<anyhow::Result<Vec<Accepted>>>,
    accepted: mpsc::Receiver<SocketAddr>,
    stop: mpsc::Sender<()>,
}

impl Server {
    fn finish(self) -> anyhow::Result<Vec<Accepted>> {
        let _ = self.stop.send(());
        join(self.handle, "server")
    }
}

/// A server in the server namespace that accepts until told to stop (accept() with a
/// 200 ms SO_RCVTIMEO, so it can notice), says which peer it accepted, reads each
/// connection to EOF, a reset or 3 s of silence, and closes it.
fn server(net: &LabNet, port: u16) -> anyhow::Result<Server> {
    let addr = SocketAddr::new(net.server_addr, port);
    let (ready_tx, ready_rx) = mpsc::channel();
    let (acc_tx, acc_rx) = mpsc::channel();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let handle = net.spawn_in(&net.server_ns, move || {
        let l = TcpListener::bind(addr).with_context(|| format!("bind {addr}"))?;
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 200_000,
        };
        // SAFETY: valid fd and a timeval of the size given.
        let r = unsafe {
            libc::setsockopt(
                l.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if r != 0 {
            bail!("SO_RCVTIMEO: {}", std::io::Error::last_os_error());
        }
        let _ = ready_tx.send(());
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut out = Vec::new();
        while Instant::now() < deadline {
            match l.accept() {
                Ok((mut s, peer)) => {
                    let _ = acc_tx.send(peer);
                    s.set_read_timeout(Some(WAIT))?;
                    let mut bytes = Vec::new();
                    let mut buf = [0u8; 4096];
                    loop {
                        match s.read(&mut buf) {
                            Ok(0) => break,
                            Ok(n) => bytes.extend_from_slice(&buf[..n]),
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    std::io::ErrorKind::ConnectionReset
                                        | std::io::ErrorKind::WouldBlock
                                        | std::io::ErrorKind::TimedOut
                                ) =>
                            {
                                break;
                            }
                            Err(e) => return Err(e.into()),
                        }
                    }
                    out.push(Accepted { bytes });
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    if stop_rx.try_recv().is_ok() {
                        break;
                    }
                }
                Err(e) => return Err(e).context("accept"),
            }
        }
        Ok(out)
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .context("server did not start listening")?;
    Ok(Server {
        handle,
        accepted: acc_rx,
        stop: stop_tx,
    })
}

/// nftables in the client namespace: segments from the server's `port` to the
/// given client ports are dropped on input, so the client's kernel (which has no
/// socket there) does not answer them with a reset; the packet socket still sees
/// them.
fn client_rules(net: &LabNet, port: u16, quiet_ports: &[u16]) -> anyhow::Result<()> {
    let ports = quiet_ports
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    net.nft(
        &net.client_ns,
        &format!(
            "table inet ttlab {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n    tcp sport {port} tcp dport {{ {ports} }} drop\n  }}\n}}\n"
        ),
    )
}

/// The family of the table holding the `dup` rule (`dup to` is not supported in an
/// `inet` table).
fn dup_family(net: &LabNet) -> &'static str {
    if net.ipv6 { "ip6" } else { "ip" }
}

/// An ISN for a hand-made SYN: any value is as "old" to the server as another.
fn isn() -> u32 {
    (monotonic_ns() as u32).rotate_left(13) ^ 0x5eed_0000
}

/// The raw side of a connection from `me` to `srv`: its own segments and the ones
/// the packet socket saw back.
struct RawPeer {
    inj: Injector,
    sniff: Sniffer,
    me: SocketAddr,
    srv: SocketAddr,
}

impl RawPeer {
    /// Opens the raw peer's sockets in the client namespace (from a thread that
    /// joined it; the sockets stay in that namespace).
    fn open_in(net: &LabNet, me: SocketAddr, srv: SocketAddr) -> anyhow::Result<RawPeer> {
        let ipv6 = net.ipv6;
        let path = net.client_ns.clone();
        let (sniff, inj) = join(
            net.spawn_in(&path, move || {
                Ok((
                    Sniffer::open("lab0", ipv6).context("packet socket on lab0")?,
                    Injector::open(me.ip()).context("raw TCP socket")?,
                ))
            }),
            "raw sockets",
        )?;
        Ok(RawPeer {
            inj,
            sniff,
            me,
            srv,
        })
    }

    /// Sends one segment; returns the time just before the send (over a veth the
    /// receiver may have processed it before sendto() returns).
    fn send(&self, seq: u32, ack: u32, flags: u8, payload: &[u8]) -> anyhow::Result<u64> {
        let t = monotonic_ns();
        self.inj
            .send(&Segment {
                src: self.me,
                dst: self.srv,
                seq,
                ack,
                flags,
                payload: payload.to_vec(),
            })
            .with_context(|| format!("raw send {} → {}", self.me, self.srv))?;
        Ok(t)
    }

    /// The next segment from the server to us matching `want`.
    fn recv(
        &self,
        timeout: Duration,
        want: impl Fn(&Segment) -> bool,
    ) -> anyhow::Result<Option<Segment>> {
        let (me, srv) = (self.me, self.srv);
        Ok(self
            .sniff
            .next(timeout, |s| s.src == srv && s.dst == me && want(s))?)
    }

    /// SYN (`copies` times, same ISN), the SYN-ACK, our ACK. Returns the server's
    /// ISN and how many SYN-ACKs acknowledging our SYN the packet socket saw.
    fn handshake(
        &self,
        isn: u32,
        copies: usize,
        cap: &mut Vec<(String, u64)>,
    ) -> anyhow::Result<(u32, u64)> {
        for i in 0..copies {
            let t = self.send(isn, 0, SYN, &[])?;
            cap.push((format!("raw_syn_{}_sent", i + 1), t));
        }
        let is_synack =
            |s: &Segment| s.flags & (SYN | ACK) == (SYN | ACK) && s.ack == isn.wrapping_add(1);
        let first = self
            .recv(WAIT, is_synack)?
            .context("no SYN-ACK to the hand-made SYN")?;
        let mut synacks = 1;
        if copies > 1 {
            while self.recv(Duration::from_millis(200), is_synack)?.is_some() {
                synacks += 1;
            }
        }
        let t = self.send(isn.wrapping_add(1), first.seq.wrapping_add(1), ACK, &[])?;
        cap.push(("raw_ack_sent".into(), t));
        Ok((first.seq, synacks))
    }
}

fn sock(a: IpAddr, p: u16) -> SocketAddr {
    SocketAddr::new(a, p)
}

/// stale-syn (C4): a SYN from a client port with no socket behind it (a delayed SYN
/// of a connection its client no longer has), and a control SYN whose SYN-ACK the
/// client namespace drops; 2 s later a real client connects, so the capture shows
/// that this listener's children and accept() returns are seen.
pub fn stale_syn(net: &LabNet, port: u16, cap: &mut Capture) -> anyhow::Result<()> {
    client_rules(net, port, &[CONTROL_PORT])?;
    let srv = server(net, port)?;
    let (c, s) = (net.client_addr, net.server_addr);
    let (isn_stale, isn_control) = (isn(), isn() ^ 0x00ff_00ff);
    let sent = join(
        net.spawn_in(&net.client_ns, move || {
            let inj = Injector::open(c).context("raw TCP socket")?;
            let mut t = Vec::new();
            for (p, isn) in [(STALE_PORT, isn_stale), (CONTROL_PORT, isn_control)] {
                inj.send(&Segment {
                    src: sock(c, p),
                    dst: sock(s, port),
                    seq: isn,
                    ack: 0,
                    flags: SYN,
                    payload: Vec::new(),
                })?;
                t.push(monotonic_ns());
            }
            Ok(t)
        }),
        "raw SYNs",
    )?;
    cap.marks.insert("raw_stale_syn_sent".into(), sent[0]);
    cap.marks.insert("raw_control_syn_sent".into(), sent[1]);
    cap.marks.insert("raw_stale_isn".into(), isn_stale.into());
    // The control request's first SYN-ACK retransmit comes ~1 s after its SYN-ACK.
    std::thread::sleep(Duration::from_millis(2000));
    let addr = sock(s, port);
    join(
        net.spawn_in(&net.client_ns, move || {
            let mut t = TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
            std::io::Write::write_all(&mut t, b"end")?;
            t.shutdown(std::net::Shutdown::Write)?;
            let mut sink = Vec::new();
            let _ = t.read_to_end(&mut sink);
            Ok(())
        }),
        "client",
    )?;
    let accepted = srv.finish()?;
    cap.marks
        .insert("server_accepts_seen_by_lab".into(), accepted.len() as u64);
    Ok(())
}

/// duplicate-syn (C8): with `tcp_synack_retries=0` on the server (so its timer never
/// retransmits a SYN-ACK), the same SYN (same ISN, same 4-tuple) twice, then the ACK
/// of the SYN-ACK; once the server accepted, a RST ends it.
pub fn duplicate_syn(net: &LabNet, port: u16, cap: &mut Capture) -> anyhow::Result<()> {
    const KEY: &str = "net.ipv4.tcp_synack_retries";
    net.sysctl(&net.server_ns, &format!("{KEY}=0"))?;
    cap.sysctls.insert(
        format!("server:{KEY}"),
        net.read_sysctl(&net.server_ns, KEY)?,
    );
    client_rules(net, port, &[DUP_PORT])?;
    let srv = server(net, port)?;
    let (me, to) = (sock(net.client_addr, DUP_PORT), sock(net.server_addr, port));
    let raw = RawPeer::open_in(net, me, to)?;
    let isn = isn();
    let mut marks = Vec::new();
    let (_, synacks) = raw.handshake(isn, 2, &mut marks)?;
    let peer = srv
        .accepted
        .recv_timeout(WAIT)
        .context("the server accepted nothing")?;
    marks.push(("server_accept_seen_by_lab".into(), monotonic_ns()));
    let t = raw.send(isn.wrapping_add(1), 0, RST, &[])?;
    marks.push(("raw_rst_sent".into(), t));
    let accepted = srv.finish()?;
    cap.marks.extend(marks);
    cap.marks.insert("raw_isn".into(), isn.into());
    cap.marks.insert("raw_synacks_seen".into(), synacks);
    cap.marks
        .insert("server_accepts_seen_by_lab".into(), accepted.len() as u64);
    cap.marks
        .insert("server_accepted_raw_peer".into(), u64::from(peer == me));
    Ok(())
}

/// The payload of the reorder-dup rounds: 16 distinct bytes per round.
pub const PAYLOAD: &[u8; 16] = b"0123456789abcdef";

/// reorder-dup (C6). Round 1: a real client sends 4 × 16 bytes to the server while
/// nftables in the client namespace duplicates every segment it sends after the SYN
/// (`dup to`, with a counter read back). Round 2: a hand-made peer sends the second
/// half of the data and its FIN first, 300 ms later the first half, then every
/// segment again; it acknowledges the server's FIN.
pub fn reorder_dup(net: &LabNet, port: u16, cap: &mut Capture) -> anyhow::Result<()> {
    let s = net.server_addr;
    let fam = dup_family(net);
    client_rules(net, port, &[REORDER_PORT])?;
    net.nft(
        &net.client_ns,
        &format!(
            "table {fam} ttlabdup {{\n  chain output {{\n    type filter hook output priority 0; policy accept;\n    {fam} daddr {s} tcp dport {port} tcp sport != {REORDER_PORT} tcp flags & (syn|rst) == 0 counter dup to {s} device \"lab0\"\n  }}\n}}\n"
        ),
    )?;
    let srv = server(net, port)?;
    // Round 1: the kernel on both ends, every segment to the server twice.
    let addr = sock(s, port);
    let sent1: Vec<u8> = PAYLOAD.repeat(4);
    kernel_client(net, addr, sent1.clone(), Duration::from_millis(5))?;
    srv.accepted
        .recv_timeout(WAIT)
        .context("round 1: the server accepted nothing")?;
    cap.marks.insert(
        "round1_dup_packets".into(),
        nft_counter(&net.client_ns, dup_family(net), "ttlabdup")?.unwrap_or(0),
    );
    // Round 2: reordered and duplicated by hand.
    let (me, to) = (sock(net.client_addr, REORDER_PORT), sock(s, port));
    let raw = RawPeer::open_in(net, me, to)?;
    let isn = isn();
    let mut marks = Vec::new();
    let (y, _) = raw.handshake(isn, 1, &mut marks)?;
    let ack = y.wrapping_add(1);
    srv.accepted
        .recv_timeout(WAIT)
        .context("round 2: the server accepted nothing")?;
    let (first, second) = PAYLOAD.split_at(PAYLOAD.len() / 2);
    let a = isn.wrapping_add(1);
    let b = a.wrapping_add(first.len() as u32);
    let fin = a.wrapping_add(PAYLOAD.len() as u32);
    let t = raw.send(b, ack, ACK | PSH, second)?;
    marks.push(("raw_second_half_sent".into(), t));
    let t = raw.send(fin, ack, FIN | ACK, &[])?;
    marks.push(("raw_fin_sent".into(), t));
    std::thread::sleep(Duration::from_millis(300));
    let t = raw.send(a, ack, ACK | PSH, first)?;
    marks.push(("raw_gap_fill_sent".into(), t));
    std::thread::sleep(Duration::from_millis(20));
    let t = raw.send(a, ack, ACK | PSH, first)?;
    marks.push(("raw_duplicates_sent".into(), t));
    raw.send(b, ack, ACK | PSH, second)?;
    raw.send(fin, ack, FIN | ACK, &[])?;
    // The server read to EOF and closed: acknowledge its FIN.
    let sfin = raw
        .recv(WAIT, |s| s.flags & FIN != 0)?
        .context("round 2: no FIN from the server")?;
    let t = raw.send(
        fin.wrapping_add(1),
        sfin.seq.wrapping_add(sfin.seq_len()),
        ACK,
        &[],
    )?;
    marks.push(("raw_last_ack_sent".into(), t));
    // Round 3: the kernel on both ends again, no duplicates; the first data segment
    // is dropped once at the server (a quota of 100 bytes covers one 16-byte segment
    // and not its retransmit), the three after it arrive.
    super::env::sh(
        "ip",
        &[
            "netns",
            "exec",
            &net.client_ns,
            "nft",
            "delete",
            "table",
            dup_family(net),
            "ttlabdup",
        ],
    )?;
    net.nft(
        &net.server_ns,
        &format!(
            "table inet ttlab {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n    tcp dport {port} tcp sport != {REORDER_PORT} tcp flags & psh == psh quota until 100 bytes counter drop\n  }}\n}}\n"
        ),
    )?;
    let sent3: Vec<u8> = PAYLOAD.repeat(4);
    kernel_client(net, addr, sent3.clone(), Duration::ZERO)?;
    srv.accepted
        .recv_timeout(WAIT)
        .context("round 3: the server accepted nothing")?;
    cap.marks.insert(
        "round3_dropped_packets".into(),
        nft_counter(&net.server_ns, "inet", "ttlab")?.unwrap_or(0),
    );
    let accepted = srv.finish()?;
    cap.marks.extend(marks);
    for (i, (acc, sent)) in accepted
        .iter()
        .zip([sent1.as_slice(), PAYLOAD.as_slice(), sent3.as_slice()])
        .enumerate()
    {
        let r = i + 1;
        cap.marks
            .insert(format!("round{r}_sent_bytes"), sent.len() as u64);
        cap.marks
            .insert(format!("round{r}_read_bytes"), acc.bytes.len() as u64);
        cap.marks
            .insert(format!("round{r}_read_exact"), u64::from(acc.bytes == sent));
    }
    cap.marks
        .insert("server_accepts_seen_by_lab".into(), accepted.len() as u64);
    Ok(())
}

/// The first `counter packets N` of nftables table `family name` in namespace `ns`.
fn nft_counter(ns: &str, family: &str, name: &str) -> anyhow::Result<Option<u64>> {
    let out = super::env::sh(
        "ip",
        &["netns", "exec", ns, "nft", "list", "table", family, name],
    )?;
    Ok(parse_counter(&out))
}

/// A real client in the client namespace: connects to `addr`, writes `data` in
/// 16-byte writes (`TCP_NODELAY`, `gap` apart), shuts down its sending side and reads
/// until the server closes.
fn kernel_client(
    net: &LabNet,
    addr: SocketAddr,
    data: Vec<u8>,
    gap: Duration,
) -> anyhow::Result<()> {
    join(
        net.spawn_in(&net.client_ns, move || {
            let mut t = TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
            t.set_nodelay(true)?;
            for chunk in data.chunks(PAYLOAD.len()) {
                std::io::Write::write_all(&mut t, chunk)?;
                if !gap.is_zero() {
                    std::thread::sleep(gap);
                }
            }
            t.shutdown(std::net::Shutdown::Write)?;
            let mut sink = Vec::new();
            let _ = t.read_to_end(&mut sink);
            Ok(())
        }),
        "client",
    )
}

/// The first `counter packets N` in nft's listing.
pub fn parse_counter(out: &str) -> Option<u64> {
    let i = out.find("counter packets ")?;
    out[i + "counter packets ".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn setsockopt<T>(
    fd: &impl AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
    v: &T,
) -> anyhow::Result<()> {
    // SAFETY: valid fd; `v` points to a value of the size given.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (v as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r != 0 {
        bail!(
            "setsockopt({level}, {name}): {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// A blocking connect() from the fixed local address `from` (SO_REUSEADDR).
fn connect_from(from: SocketAddr, to: SocketAddr) -> anyhow::Result<TcpStream> {
    let family = if from.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket(2) call.
    let raw = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        bail!("socket: {}", std::io::Error::last_os_error());
    }
    // SAFETY: a fresh fd we own.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
    setsockopt(
        &fd,
        libc::SOL_SOCKET,
        libc::SO_REUSEADDR,
        &(1 as libc::c_int),
    )?;
    let (sa, len) = sockaddr_of(from);
    // SAFETY: sa is a valid sockaddr of length len.
    if unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_storage).cast(),
            len,
        )
    } != 0
    {
        bail!("bind {from}: {}", std::io::Error::last_os_error());
    }
    let (sa, len) = sockaddr_of(to);
    // SAFETY: as above.
    if unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_storage).cast(),
            len,
        )
    } != 0
    {
        bail!("connect {from} → {to}: {}", std::io::Error::last_os_error());
    }
    Ok(TcpStream::from(fd))
}

/// Bytes the isn-reuse client sends on each connection.
const REUSE_DATA: &[u8] = b"isn";

/// isn-reuse (C7, C5): two connections from the same client port to the same server
/// port, one after the other; the first is closed by the client with a reset
/// (SO_LINGER 0), so neither end keeps the 4-tuple in TIME_WAIT and the second
/// connect() reuses it at once. A packet socket in the server namespace records the
/// sequence numbers of what arrives there. Into the second connection the lab then
/// injects an old segment — a RST at the first connection's next sequence number —
/// and 200 ms later a RST at the second connection's.
pub fn isn_reuse(net: &LabNet, port: u16, cap: &mut Capture) -> anyhow::Result<()> {
    let srv = server(net, port)?;
    let (from, to) = (
        sock(net.client_addr, REUSE_PORT),
        sock(net.server_addr, port),
    );
    let ipv6 = net.ipv6;
    let tap = join(
        net.spawn_in(&net.server_ns, move || {
            Sniffer::open("lab0", ipv6).context("packet socket on the server's lab0")
        }),
        "server packet socket",
    )?;
    let c = net.client_addr;
    let inj = join(
        net.spawn_in(&net.client_ns, move || {
            Injector::open(c).context("raw TCP socket")
        }),
        "raw socket",
    )?;
    let from_client = move |s: &Segment| s.src == from && s.dst == to;
    let mut next_seq = Vec::new();
    let mut conns = Vec::new();
    for round in 1..=2 {
        let s = join(
            net.spawn_in(&net.client_ns, move || connect_from(from, to)),
            "client connect",
        )?;
        let syn = tap
            .next(WAIT, |s| from_client(s) && s.flags & SYN != 0)?
            .with_context(|| format!("round {round}: the server's interface saw no SYN"))?;
        cap.marks
            .insert(format!("round{round}_syn_seq_at_server"), syn.seq.into());
        // The sequence number after the SYN and the data.
        next_seq.push(syn.seq.wrapping_add(1 + REUSE_DATA.len() as u32));
        srv.accepted
            .recv_timeout(WAIT)
            .with_context(|| format!("round {round}: the server accepted nothing"))?;
        std::io::Write::write_all(&mut &s, REUSE_DATA)?;
        std::thread::sleep(Duration::from_millis(20));
        conns.push(s);
        if round == 1 {
            reset_close(conns.remove(0))?;
            cap.marks
                .insert("round1_client_reset_close".into(), monotonic_ns());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // The old segment, then the current one, each seen arriving at the server.
    for (name, seq) in [("old", next_seq[0]), ("current", next_seq[1])] {
        let t = monotonic_ns();
        inj.send(&Segment {
            src: from,
            dst: to,
            seq,
            ack: 0,
            flags: RST,
            payload: Vec::new(),
        })?;
        cap.marks.insert(format!("{name}_rst_sent"), t);
        let seen = tap
            .next(WAIT, |s| {
                from_client(s) && s.flags & RST != 0 && s.seq == seq
            })?
            .with_context(|| format!("the server's interface did not see the {name} RST"))?;
        cap.marks
            .insert(format!("{name}_rst_seq_at_server"), seen.seq.into());
        std::thread::sleep(Duration::from_millis(200));
    }
    for s in conns {
        reset_close(s)?;
    }
    let accepted = srv.finish()?;
    cap.marks
        .insert("server_accepts_seen_by_lab".into(), accepted.len() as u64);
    Ok(())
}

/// Closes with a reset (SO_LINGER 0): no TIME_WAIT on either end.
fn reset_close(s: TcpStream) -> anyhow::Result<()> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    setsockopt(&s, libc::SOL_SOCKET, libc::SO_LINGER, &linger)?;
    drop(s);
    Ok(())
}
