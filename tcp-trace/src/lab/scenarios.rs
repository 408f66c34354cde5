//! The scenarios: real sockets in two network namespaces, with the kernel settings and
//! nftables drops each claim needs. They only make traffic and record what they
//! observe (timestamps of their own calls, sock_diag, sysctls read back); the
//! verdicts are computed elsewhere, from the capture.
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::Context;

use super::capture::{Capture, query_time_wait};
use super::env::{LabNet, join};
use super::injected;
use super::verdict::{self, VerdictFn};
use crate::clock::monotonic_ns;
use crate::loader::AttachMode;

/// One lab scenario.
pub struct Scenario {
    pub name: &'static str,
    pub claims: &'static [&'static str],
    pub about: &'static str,
    /// Port the server listens on (the tracer is filtered to it).
    pub port: u16,
    pub drive: fn(&LabNet, u16, &mut Capture) -> anyhow::Result<()>,
    /// How the tracer's hooks are attached (`Auto` but where a scenario needs what
    /// only another path records).
    pub attach: AttachMode,
    pub verdicts: &'static [VerdictFn],
}

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "connect-vs-accept",
        claims: &["C13", "C1"],
        about: "the server drops the client's pure third-step ACK; the client's data, 1.5 s later, completes the handshake",
        port: 47101,
        drive: connect_vs_accept,
        attach: AttachMode::Auto,
        verdicts: &[verdict::c13, verdict::c1],
    },
    Scenario {
        name: "handshake",
        claims: &["C2", "C5"],
        about: "one plain connection: both ends ESTABLISHED before data and close; both ISNs",
        port: 47102,
        drive: handshake,
        attach: AttachMode::Auto,
        verdicts: &[verdict::c2, verdict::c5],
    },
    Scenario {
        name: "time-wait",
        claims: &["C9", "C11"],
        about: "two connections, client closes first then server closes first; sock_diag read right after",
        port: 47103,
        drive: time_wait,
        attach: AttachMode::Auto,
        verdicts: &[verdict::c9, verdict::c11],
    },
    Scenario {
        name: "half-close",
        claims: &["C10"],
        about: "the client sends its FIN (shutdown(SHUT_WR)) and then still receives the server's reply",
        port: 47105,
        drive: half_close,
        attach: AttachMode::Auto,
        verdicts: &[verdict::c10],
    },
    Scenario {
        name: "lost-last-ack",
        claims: &["C12"],
        about: "the client's last ACK is dropped: once with tcp_max_tw_buckets=0 (no TIME_WAIT), once with TIME_WAIT",
        port: 47106,
        drive: lost_last_ack,
        attach: AttachMode::Auto,
        verdicts: &[verdict::c12],
    },
    Scenario {
        name: "synack-retries",
        claims: &["C3"],
        about: "tcp_synack_retries=2 on the server, every pure ACK to it dropped, the client silent 8 s, then it sends",
        port: 47104,
        drive: synack_retries,
        attach: AttachMode::Auto,
        verdicts: &[verdict::c3],
    },
    Scenario {
        name: "syn-retries",
        claims: &["S1"],
        about: "tcp_syn_retries=2 on the client, every SYN to the server dropped; the blocking connect() times out",
        port: 47107,
        drive: syn_retries,
        attach: AttachMode::Auto,
        verdicts: &[verdict::s1],
    },
    Scenario {
        name: "stale-syn",
        claims: &["C4"],
        about: "a hand-made SYN from a client port with no socket (a delayed old SYN) and an unanswered control SYN; a real connection 2 s later",
        port: 47108,
        drive: injected::stale_syn,
        // The verdict names the reset's reason (no socket), which the classic
        // tracepoint's record carries on 6.12+; the tp_btf path reads the tuple of
        // a socket-less reset from the segment, but not the reason (an argument only
        // some kernels have).
        attach: AttachMode::Tracepoint,
        verdicts: &[verdict::c4],
    },
    Scenario {
        name: "duplicate-syn",
        claims: &["C8"],
        about: "tcp_synack_retries=0 on the server; the same hand-made SYN twice, then the ACK of the SYN-ACK",
        port: 47109,
        drive: injected::duplicate_syn,
        attach: AttachMode::Auto,
        verdicts: &[verdict::c8],
    },
    Scenario {
        name: "reorder-dup",
        claims: &["C6"],
        about: "every client segment duplicated by nftables; a hand-made sender's FIN and second half before its first half, all sent twice; one client segment dropped once",
        port: 47110,
        drive: injected::reorder_dup,
        attach: AttachMode::Auto,
        verdicts: &[verdict::c6],
    },
    Scenario {
        name: "isn-reuse",
        claims: &["C7", "C5"],
        about: "two connections from one fixed client port, each closed by a reset (no TIME_WAIT): the same 4-tuple twice",
        port: 47111,
        drive: injected::isn_reuse,
        attach: AttachMode::Auto,
        verdicts: &[verdict::c7, verdict::c5],
    },
];

const READY_TIMEOUT: Duration = Duration::from_secs(10);

fn drop_pure_acks(net: &LabNet, port: u16) -> anyhow::Result<()> {
    net.nft(
        &net.server_ns,
        &format!(
            "table inet ttlab {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n    tcp dport {port} tcp flags & (fin|syn|rst|psh|ack) == ack drop\n  }}\n}}\n"
        ),
    )
}

fn read_to_eof(s: &mut TcpStream) -> anyhow::Result<usize> {
    let mut buf = [0u8; 4096];
    let mut n = 0;
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Ok(n),
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(n),
            Err(e) => return Err(e.into()),
        }
    }
}

/// How the server treats each accepted connection.
#[derive(Clone, Copy)]
enum ServerClose {
    /// Read until the client's FIN, then close after `ms`.
    AfterPeer(u64),
    /// Close first, `ms` after accept().
    First(u64),
}

/// A server in the server namespace: listens, says so, then handles `plan` in order,
/// reporting after each close.
fn server(
    net: &LabNet,
    port: u16,
    plan: Vec<ServerClose>,
) -> (
    std::thread::JoinHandle<anyhow::Result<()>>,
    mpsc::Receiver<()>,
    mpsc::Receiver<()>,
) {
    let addr = SocketAddr::new(net.server_addr, port);
    let (ready_tx, ready_rx) = mpsc::channel();
    let (closed_tx, closed_rx) = mpsc::channel();
    let h = net.spawn_in(&net.server_ns, move || {
        let l = TcpListener::bind(addr).with_context(|| format!("bind {addr}"))?;
        let _ = ready_tx.send(());
        for step in plan {
            let (mut s, _) = l.accept().context("accept")?;
            match step {
                ServerClose::AfterPeer(ms) => {
                    read_to_eof(&mut s)?;
                    std::thread::sleep(Duration::from_millis(ms));
                }
                ServerClose::First(ms) => std::thread::sleep(Duration::from_millis(ms)),
            }
            drop(s);
            let _ = closed_tx.send(());
        }
        Ok(())
    });
    (h, ready_rx, closed_rx)
}

fn connect_in(net: &LabNet, port: u16) -> anyhow::Result<TcpStream> {
    let addr = SocketAddr::new(net.server_addr, port);
    join(
        net.spawn_in(&net.client_ns, move || {
            // A blocking connect(), as the claims describe.
            TcpStream::connect(addr).with_context(|| format!("connect {addr}"))
        }),
        "client connect",
    )
}

/// Sends and records when the send() started and returned.
fn send_marked(s: &mut TcpStream, cap: &mut Capture) -> anyhow::Result<()> {
    cap.marks.insert("client_send_start".into(), monotonic_ns());
    s.write_all(&[b'x'; 16])?;
    cap.marks.insert("client_send_end".into(), monotonic_ns());
    Ok(())
}

fn wait_ready(rx: &mpsc::Receiver<()>) -> anyhow::Result<()> {
    rx.recv_timeout(READY_TIMEOUT)
        .context("server did not start listening")
}

fn connect_vs_accept(net: &LabNet, port: u16, cap: &mut Capture) -> anyhow::Result<()> {
    drop_pure_acks(net, port)?;
    let (h, ready, closed) = server(net, port, vec![ServerClose::AfterPeer(20)]);
    wait_ready(&ready)?;
    // connect() returns once the SYN-ACK is in and the ACK sent (and dropped).
    let mut s = connect_in(net, port)?;
    std::thread::sleep(Duration::from_millis(1500));
    send_marked(&mut s, cap)?;
    // The data completed the handshake; let the teardown's pure ACKs through.
    std::thread::sleep(Duration::from_millis(50));
    net.nft_delete_table(&net.server_ns)?;
    drop(s);
    closed
        .recv_timeout(READY_TIMEOUT)
        .context("server did not close")?;
    join(h, "server")
}

fn handshake(net: &LabNet, port: u16, cap: &mut Capture) -> anyhow::Result<()> {
    let (h, ready, closed) = server(net, port, vec![ServerClose::AfterPeer(20)]);
    wait_ready(&ready)?;
    let mut s = connect_in(net, port)?;
    send_marked(&mut s, cap)?;
    std::thread::sleep(Duration::from_millis(20));
    drop(s);
    closed
        .recv_timeout(READY_TIMEOUT)
        .context("server did not close")?;
    join(h, "server")
}

fn time_wait(net: &LabNet, port: u16, cap: &mut Capture) -> anyhow::Result<()> {
    let (h, ready, closed) = server(
        net,
        port,
        vec![ServerClose::AfterPeer(20), ServerClose::First(30)],
    );
    wait_ready(&ready)?;
    // 1: the client closes first.
    let mut s = connect_in(net, port)?;
    s.write_all(b"bye")?;
    drop(s);
    closed
        .recv_timeout(READY_TIMEOUT)
        .context("server did not close")?;
    std::thread::sleep(Duration::from_millis(50));
    cap.time_wait.extend(query_time_wait(&net.client_ns)?);
    cap.time_wait.extend(query_time_wait(&net.server_ns)?);
    // 2: the server closes first; the client closes 30 ms after the server's FIN.
    let mut s = connect_in(net, port)?;
    read_to_eof(&mut s)?;
    std::thread::sleep(Duration::from_millis(30));
    drop(s);
    closed
        .recv_timeout(READY_TIMEOUT)
        .context("server did not close")?;
    std::thread::sleep(Duration::from_millis(50));
    // Both namespaces again; a socket already listed keeps its first entry.
    for e in query_time_wait(&net.server_ns)?
        .into_iter()
        .chain(query_time_wait(&net.client_ns)?)
    {
        if !cap
            .time_wait
            .iter()
            .any(|o| o.local == e.local && o.remote == e.remote)
        {
            cap.time_wait.push(e);
        }
    }
    join(h, "server")
}

fn synack_retries(net: &LabNet, port: u16, cap: &mut Capture) -> anyhow::Result<()> {
    const KEY: &str = "net.ipv4.tcp_synack_retries";
    net.sysctl(&net.server_ns, &format!("{KEY}=2"))?;
    // Only a SYN-queue overflow would make the listener try cookies; be explicit.
    net.sysctl(&net.server_ns, "net.ipv4.tcp_syncookies=0")?;
    cap.sysctls.insert(
        format!("server:{KEY}"),
        net.read_sysctl(&net.server_ns, KEY)?,
    );
    drop_pure_acks(net, port)?;
    let addr = SocketAddr::new(net.server_addr, port);
    let (ready_tx, ready_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    // A listener that never accepts (no child will ever exist to accept).
    let h = net.spawn_in(&net.server_ns, move || {
        let l = TcpListener::bind(addr).with_context(|| format!("bind {addr}"))?;
        let _ = ready_tx.send(());
        let _ = done_rx.recv_timeout(Duration::from_secs(30));
        drop(l);
        Ok(())
    });
    wait_ready(&ready_rx)?;
    let mut s = connect_in(net, port)?;
    // SYN-ACK retransmits at ~1 s and ~3 s; the request expires at ~7 s.
    std::thread::sleep(Duration::from_millis(8000));
    send_marked(&mut s, cap)?;
    std::thread::sleep(Duration::from_millis(200));
    drop(s);
    let _ = done_tx.send(());
    join(h, "server")
}

fn syn_retries(net: &LabNet, port: u16, cap: &mut Capture) -> anyhow::Result<()> {
    const KEY: &str = "net.ipv4.tcp_syn_retries";
    // Kernels >= 6.7 (default 4): that many SYN retransmits with a linear 1 s timeout
    // come on top of tcp_syn_retries. Turned off where it exists, so that
    // tcp_syn_retries alone bounds the retransmits and the timeouts back off.
    const LINEAR: &str = "net.ipv4.tcp_syn_linear_timeouts";
    net.sysctl(&net.client_ns, &format!("{KEY}=2"))?;
    cap.sysctls.insert(
        format!("client:{KEY}"),
        net.read_sysctl(&net.client_ns, KEY)?,
    );
    if net.read_sysctl(&net.client_ns, LINEAR).is_ok() {
        net.sysctl(&net.client_ns, &format!("{LINEAR}=0"))?;
        cap.sysctls.insert(
            format!("client:{LINEAR}"),
            net.read_sysctl(&net.client_ns, LINEAR)?,
        );
    }
    net.nft(
        &net.server_ns,
        &format!(
            "table inet ttlab {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n    tcp dport {port} tcp flags & (syn|ack) == syn drop\n  }}\n}}\n"
        ),
    )?;
    let addr = SocketAddr::new(net.server_addr, port);
    let (ready_tx, ready_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    // A listener that never sees a SYN (so never makes a child).
    let h = net.spawn_in(&net.server_ns, move || {
        let l = TcpListener::bind(addr).with_context(|| format!("bind {addr}"))?;
        let _ = ready_tx.send(());
        let _ = done_rx.recv_timeout(Duration::from_secs(30));
        drop(l);
        Ok(())
    });
    wait_ready(&ready_rx)?;
    // A blocking connect(); the kernel gives up after tcp_syn_retries retransmits.
    let (start, end, errno) = join(
        net.spawn_in(&net.client_ns, move || {
            let start = monotonic_ns();
            let r = TcpStream::connect(addr);
            let end = monotonic_ns();
            Ok((start, end, r.err().map(|e| e.raw_os_error().unwrap_or(0))))
        }),
        "client connect",
    )?;
    cap.marks.insert("client_connect_start".into(), start);
    cap.marks.insert("client_connect_end".into(), end);
    if let Some(e) = errno {
        cap.marks
            .insert("client_connect_errno".into(), e.unsigned_abs().into());
    }
    let _ = done_tx.send(());
    join(h, "server")
}

fn half_close(net: &LabNet, port: u16, cap: &mut Capture) -> anyhow::Result<()> {
    let addr = SocketAddr::new(net.server_addr, port);
    let (ready_tx, ready_rx) = mpsc::channel();
    // Server: reads to the client's FIN, then replies 1000 bytes and closes 30 ms later.
    let h = net.spawn_in(&net.server_ns, move || {
        let l = TcpListener::bind(addr).with_context(|| format!("bind {addr}"))?;
        let _ = ready_tx.send(());
        let (mut s, _) = l.accept().context("accept")?;
        read_to_eof(&mut s)?;
        s.write_all(&[b'r'; 1000])?;
        std::thread::sleep(Duration::from_millis(30));
        drop(s);
        Ok(())
    });
    wait_ready(&ready_rx)?;
    let mut s = connect_in(net, port)?;
    send_marked(&mut s, cap)?;
    s.shutdown(std::net::Shutdown::Write)?;
    cap.marks
        .insert("client_shutdown_wr".into(), monotonic_ns());
    // What the client still receives after its FIN, and when.
    let mut buf = [0u8; 4096];
    let mut total = 0u64;
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        if total == 0 {
            cap.marks
                .insert("client_recv_after_fin".into(), monotonic_ns());
        }
        total += n as u64;
    }
    cap.marks
        .insert("client_recv_after_fin_bytes".into(), total);
    cap.marks.insert("client_eof".into(), monotonic_ns());
    drop(s);
    join(h, "server")
}

/// One connection whose client closes first (shutdown, then read to the server's FIN,
/// then close), with the client's final ACK dropped at the server; the rule is
/// deleted `undrop_after` after the server's close (None: kept).
fn last_ack_round(
    net: &LabNet,
    port: u16,
    cap: &mut Capture,
    undrop_after: Option<Duration>,
    settle: Duration,
) -> anyhow::Result<()> {
    let addr = SocketAddr::new(net.server_addr, port);
    let (ready_tx, ready_rx) = mpsc::channel();
    let (eof_tx, eof_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let h = net.spawn_in(&net.server_ns, move || {
        let l = TcpListener::bind(addr).with_context(|| format!("bind {addr}"))?;
        let _ = ready_tx.send(());
        let (mut s, _) = l.accept().context("accept")?;
        read_to_eof(&mut s)?;
        let _ = eof_tx.send(());
        go_rx.recv_timeout(READY_TIMEOUT).context("no go")?;
        drop(s);
        Ok(())
    });
    wait_ready(&ready_rx)?;
    let mut s = connect_in(net, port)?;
    s.write_all(b"last")?;
    s.shutdown(std::net::Shutdown::Write)?;
    eof_rx
        .recv_timeout(READY_TIMEOUT)
        .context("server saw no FIN")?;
    drop_pure_acks(net, port)?;
    let _ = go_tx.send(());
    join(h, "server")?;
    // The server's FIN: the client ACKs it (dropped) and closes.
    read_to_eof(&mut s)?;
    drop(s);
    if let Some(d) = undrop_after {
        std::thread::sleep(d);
        net.nft_delete_table(&net.server_ns)?;
        // The next FIN retransmit is acknowledged now; its time depends on the
        // backoff and on how long the steps above took (seconds on a slow guest):
        // wait until the server's socket has left LAST_ACK, as long as a few more
        // retransmits take.
        wait_last_ack_gone(net, port, Duration::from_secs(10))?;
    }
    std::thread::sleep(settle);
    for e in query_time_wait(&net.client_ns)? {
        if !cap
            .time_wait
            .iter()
            .any(|o| o.local == e.local && o.remote == e.remote)
        {
            cap.time_wait.push(e);
        }
    }
    Ok(())
}

/// Waits until no socket of the server's namespace on `port` is in LAST_ACK.
fn wait_last_ack_gone(net: &LabNet, port: u16, max: Duration) -> anyhow::Result<()> {
    let sport = format!("sport = :{port}");
    let deadline = std::time::Instant::now() + max;
    loop {
        let out = super::env::sh(
            "ip",
            &[
                "netns",
                "exec",
                &net.server_ns,
                "ss",
                "-tanH",
                "state",
                "last-ack",
                &sport,
            ],
        )?;
        if out.trim().is_empty() || std::time::Instant::now() >= deadline {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn lost_last_ack(net: &LabNet, port: u16, cap: &mut Capture) -> anyhow::Result<()> {
    const KEY: &str = "net.ipv4.tcp_max_tw_buckets";
    // 1: no TIME_WAIT at the client: its socket is gone when the FIN is retransmitted.
    net.sysctl(&net.client_ns, &format!("{KEY}=0"))?;
    cap.sysctls.insert(
        format!("client:{KEY}:round1"),
        net.read_sysctl(&net.client_ns, KEY)?,
    );
    last_ack_round(net, port, cap, None, Duration::from_millis(900))?;
    let _ = net.nft_delete_table(&net.server_ns);
    // 2: with TIME_WAIT; the drop is lifted after the first FIN retransmit (~200 ms).
    net.sysctl(&net.client_ns, &format!("{KEY}=4096"))?;
    cap.sysctls.insert(
        format!("client:{KEY}:round2"),
        net.read_sysctl(&net.client_ns, KEY)?,
    );
    last_ack_round(
        net,
        port,
        cap,
        Some(Duration::from_millis(700)),
        Duration::from_millis(1200),
    )
}
