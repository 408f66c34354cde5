//! tcp-trace-storm: a loopback connection storm for `cargo xtask bench`.
//!
//! Listens on ADDR (an ephemeral port unless `--port`), then `--threads` client
//! threads connect and close as fast as they can for `--secs` seconds while as many
//! server threads accept, read to EOF (or reset) and close. Each connection makes the
//! full life the tracer sees: SYN_SENT, ESTABLISHED on both ends, connect() and
//! accept4() returns, and a teardown:
//!
//! - `--close fin`: the client closes first with a FIN (client FIN_WAIT1 → FIN_WAIT2
//!   → TIME_WAIT, server CLOSE_WAIT → LAST_ACK → CLOSE), ~7 `inet_sock_set_state` hits.
//! - `--close rst`: the client closes with `SO_LINGER {on, 0}`, which sends a reset
//!   (`tcp_send_reset`, `tcp_receive_reset`; both ends go straight to CLOSE).
//!
//! Prints one JSON line on stdout at the end:
//! `{"close":"fin","threads":2,"secs":5.000,"connections":N,"rate":R,"connect_errors":E,"accepted":A}`
//! where `rate` is connections completed by the clients per second.
//!
//! `--netns` runs the storm in a network namespace of its own, made at start and gone
//! at exit, so that what limits the rate is the CPU, not what earlier runs left:
//! a FIN client keeps its port in TIME_WAIT for 60 s (reusable after 1 s), so in the
//! host's namespace the storm runs at ~28 000 ports / ~2 s ≈ 14 900 connections/s
//! until the namespace holds `tcp_max_tw_buckets` (131 072 here) TIME_WAIT sockets,
//! after which new ones are not kept and the same storm runs at 40–70 k/s. Which of
//! the two a run got depended on the runs of the minute before it. In its own
//! namespace the storm has loopback up, ports 1024–65535, room for 4 M TIME_WAIT
//! sockets, and a listener on the wildcard address that the clients reach on
//! `--dests` loopback addresses in turn (127.0.0.1, .2, …), each a port space of its
//! own. The tracer sees every namespace, so it sees the storm as before.
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Close {
    /// Orderly close: the client sends a FIN first.
    Fin,
    /// Abortive close: SO_LINGER 0, the client sends a reset.
    Rst,
}

impl Close {
    fn name(self) -> &'static str {
        match self {
            Close::Fin => "fin",
            Close::Rst => "rst",
        }
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "tcp-trace-storm",
    about = "Open and close loopback TCP connections as fast as possible, for a bounded time"
)]
struct Args {
    /// Client threads (as many server threads accept).
    #[arg(short = 't', long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=256))]
    threads: u32,
    /// How long the clients run, in seconds.
    #[arg(short = 's', long, default_value_t = 5.0)]
    secs: f64,
    /// How the client closes each connection.
    #[arg(long, value_enum, default_value_t = Close::Fin)]
    close: Close,
    /// Address to listen on and connect to.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    addr: IpAddr,
    /// Port to listen on (0: an ephemeral port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Run in a fresh network namespace of its own (needs CAP_SYS_ADMIN); see above.
    #[arg(long)]
    netns: bool,
    /// With --netns and an IPv4 --addr: how many consecutive loopback addresses,
    /// from --addr on, the clients connect to in turn.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(1..=64))]
    dests: u8,
}

/// TIME_WAIT sockets the storm's own namespace may hold: more than a ten-minute
/// soak at the full rate keeps (rate × 60 s).
const NETNS_TW_BUCKETS: &str = "4194304";

/// Makes the calling thread (the only one yet) enter a new network namespace and sets
/// it up for the storm: loopback up, the widest ephemeral port range, room for
/// TIME_WAIT sockets.
fn enter_fresh_netns() -> Result<(), String> {
    // SAFETY: unshare() affects only the calling thread's namespaces; no other thread
    // exists yet, and the ones spawned later inherit the new namespace.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(format!(
            "unshare(CLONE_NEWNET): {} (needs CAP_SYS_ADMIN)",
            std::io::Error::last_os_error()
        ));
    }
    loopback_up().map_err(|e| format!("bringing loopback up: {e}"))?;
    // /proc/sys/net shows the namespace of the task that opens it: this one's.
    for (path, value) in [
        ("/proc/sys/net/ipv4/ip_local_port_range", "1024 65535"),
        ("/proc/sys/net/ipv4/tcp_max_tw_buckets", NETNS_TW_BUCKETS),
    ] {
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|mut f| f.write_all(value.as_bytes()))
            .map_err(|e| format!("writing {value:?} to {path}: {e}"))?;
    }
    Ok(())
}

/// `ip link set lo up`, by ioctl.
fn loopback_up() -> std::io::Result<()> {
    // SAFETY: plain socket(2); the fd is closed below on every path.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: an all-zero ifreq is valid; the name is NUL-terminated within IFNAMSIZ.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *s as libc::c_char;
    }
    // SAFETY: fd is a socket and req a valid ifreq for SIOCGIFFLAGS/SIOCSIFFLAGS, which
    // read and write only ifr_name and ifru_flags.
    let rc = unsafe {
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) != 0 {
            -1
        } else {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            libc::ioctl(fd, libc::SIOCSIFFLAGS, &req)
        }
    };
    let err = std::io::Error::last_os_error();
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    if rc == 0 { Ok(()) } else { Err(err) }
}

/// `listen()` backlog: large enough that the accepting threads never make the kernel
/// drop a SYN (a dropped SYN costs the client a one-second retransmit timeout).
const BACKLOG: libc::c_int = 4096;

fn set_linger_zero(s: &TcpStream) -> std::io::Result<()> {
    let lg = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: valid socket fd; the option value is a `struct linger` of the given size.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&lg as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn serve(listener: &TcpListener, accepted: &AtomicU64) {
    let mut buf = [0u8; 256];
    loop {
        let mut s = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            // EMFILE and friends: back off rather than spin.
            Err(_) => {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
        };
        accepted.fetch_add(1, Ordering::Relaxed);
        // Until the client's FIN (read returns 0) or reset (ECONNRESET).
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    }
}

struct ClientResult {
    connections: u64,
    errors: u64,
}

fn client(dests: &[SocketAddr], close: Close, deadline: Instant) -> ClientResult {
    let mut r = ClientResult {
        connections: 0,
        errors: 0,
    };
    let mut next = 0;
    while Instant::now() < deadline {
        let addr = dests[next];
        next = (next + 1) % dests.len();
        match TcpStream::connect(addr) {
            Ok(s) => {
                if close == Close::Rst && set_linger_zero(&s).is_err() {
                    r.errors += 1;
                }
                drop(s);
                r.connections += 1;
            }
            Err(e) => {
                r.errors += 1;
                // Out of ephemeral ports (every one in TIME_WAIT younger than the
                // reuse delay): wait a little instead of spinning in connect().
                if e.kind() == ErrorKind::AddrNotAvailable {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
    r
}

fn main() -> ExitCode {
    let args = Args::parse();
    if !(args.secs.is_finite() && args.secs > 0.0 && args.secs <= 86400.0) {
        eprintln!("tcp-trace-storm: --secs must be in (0, 86400]");
        return ExitCode::from(2);
    }
    if args.netns
        && let Err(e) = enter_fresh_netns()
    {
        eprintln!("tcp-trace-storm: --netns: {e}");
        return ExitCode::from(1);
    }
    let dests: Vec<IpAddr> = match (args.netns, args.addr) {
        (true, IpAddr::V4(a)) if a.is_loopback() => {
            let first = u32::from(a);
            (0..u32::from(args.dests))
                .map(|i| IpAddr::V4(Ipv4Addr::from(first.wrapping_add(i))))
                .take_while(|d| d.is_loopback())
                .collect()
        }
        _ => vec![args.addr],
    };
    // Several destinations need the wildcard address (the namespace is the storm's own).
    let bind_ip = match (dests.len() > 1, args.addr) {
        (true, IpAddr::V4(_)) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        _ => args.addr,
    };
    let listener = match TcpListener::bind(SocketAddr::new(bind_ip, args.port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("tcp-trace-storm: cannot listen on {}: {e}", args.addr);
            return ExitCode::from(1);
        }
    };
    // std listens with a smaller backlog; listen() again only raises it.
    // SAFETY: valid listening socket fd.
    if unsafe { libc::listen(listener.as_raw_fd(), BACKLOG) } != 0 {
        eprintln!(
            "tcp-trace-storm: listen: {}",
            std::io::Error::last_os_error()
        );
        return ExitCode::from(1);
    }
    let port = match listener.local_addr() {
        Ok(a) => a.port(),
        Err(e) => {
            eprintln!("tcp-trace-storm: {e}");
            return ExitCode::from(1);
        }
    };
    let listener = Arc::new(listener);
    let accepted = Arc::new(AtomicU64::new(0));
    for _ in 0..args.threads {
        let l = Arc::clone(&listener);
        let a = Arc::clone(&accepted);
        // Server threads block in accept() for ever; the process exits under them.
        std::thread::spawn(move || serve(&l, &a));
    }

    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(args.secs);
    let dests: Vec<SocketAddr> = dests.iter().map(|&ip| SocketAddr::new(ip, port)).collect();
    let clients: Vec<_> = (0..args.threads)
        .map(|i| {
            // Each thread starts at another destination.
            let mut mine = dests.clone();
            mine.rotate_left(i as usize % dests.len());
            std::thread::spawn(move || client(&mine, args.close, deadline))
        })
        .collect();
    let mut connections = 0;
    let mut errors = 0;
    for c in clients {
        match c.join() {
            Ok(r) => {
                connections += r.connections;
                errors += r.errors;
            }
            Err(_) => {
                eprintln!("tcp-trace-storm: a client thread panicked");
                return ExitCode::from(1);
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{{\"close\":\"{}\",\"threads\":{},\"secs\":{secs:.6},\"connections\":{connections},\"rate\":{:.1},\"connect_errors\":{errors},\"accepted\":{}}}",
        args.close.name(),
        args.threads,
        connections as f64 / secs,
        accepted.load(Ordering::Relaxed)
    );
    ExitCode::SUCCESS
}
