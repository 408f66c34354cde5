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
use std::io::{ErrorKind, Read};
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

fn client(addr: SocketAddr, close: Close, deadline: Instant) -> ClientResult {
    let mut r = ClientResult {
        connections: 0,
        errors: 0,
    };
    while Instant::now() < deadline {
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
    let listener = match TcpListener::bind(SocketAddr::new(args.addr, args.port)) {
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
    let addr = match listener.local_addr() {
        Ok(a) => a,
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
    let clients: Vec<_> = (0..args.threads)
        .map(|_| std::thread::spawn(move || client(addr, args.close, deadline)))
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
