//! tcp-trace-peer: small, scriptable TCP client and server used by the integration
//! tests and the lab to make real traffic with known timing.
//!
//!   tcp-trace-peer server ADDR PORT [--accepts N] [--close-delay-ms MS] [--null-accept]
//!       [--v6only] [--reuseport]
//!       listens, prints `listening PORT` on stdout, accepts N connections with
//!       accept4(fd, NULL, NULL) (or with an address buffer), reads until EOF and
//!       closes each MS after the peer's FIN. Prints `pid PID` first. `--v6only`: an
//!       IPv6 listener that takes no IPv4 (IPV6_V6ONLY); `--reuseport`: SO_REUSEPORT,
//!       so that several servers can share the port (then give the port, not 0).
//!       `--accept-delay-ms MS`: sleep MS before each accept() (the connection waits
//!       in the accept queue); `--never-close`: keep every accepted socket open after
//!       the peer's FIN (it stays in CLOSE_WAIT) and wait until killed. `--backlog N`:
//!       listen(fd, N) (a tiny accept queue overflows).
//!   tcp-trace-peer client ADDR PORT [--count N] [--send BYTES] [--wait-stdin]
//!       [--delay-before-send-ms MS] [--nonblock] [--send-on-stdin]
//!       connects N times (blocking connect, or with `--nonblock` a non-blocking one
//!       that returns EINPROGRESS and is waited for with poll, as curl does), sends
//!       BYTES bytes (with `--send-on-stdin` once a line comes on stdin), closes first.
//!       Prints `connect ok LOCALPORT` or `connect err ERRNO` per attempt.
use std::io::{BufRead, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};
use std::process::ExitCode;
use std::time::Duration;

fn usage() -> ExitCode {
    eprintln!(
        "usage: tcp-trace-peer server ADDR PORT [--accepts N] [--close-delay-ms MS] [--null-accept] [--v6only] [--reuseport] [--accept-delay-ms MS] [--never-close] [--backlog N]\n       tcp-trace-peer client ADDR PORT [--count N] [--send BYTES] [--wait-stdin] [--delay-before-send-ms MS] [--nonblock] [--send-on-stdin]"
    );
    ExitCode::from(2)
}

struct Opts {
    count: u64,
    send: usize,
    close_delay_ms: u64,
    delay_before_send_ms: u64,
    wait_stdin: bool,
    null_accept: bool,
    v6only: bool,
    reuseport: bool,
    nonblock: bool,
    send_on_stdin: bool,
    accept_delay_ms: u64,
    never_close: bool,
    backlog: Option<i32>,
}

fn parse_opts(rest: &[String]) -> Option<Opts> {
    let mut o = Opts {
        count: 1,
        send: 16,
        close_delay_ms: 40,
        delay_before_send_ms: 0,
        wait_stdin: false,
        null_accept: false,
        v6only: false,
        reuseport: false,
        nonblock: false,
        send_on_stdin: false,
        accept_delay_ms: 0,
        never_close: false,
        backlog: None,
    };
    let mut i = 0;
    while i < rest.len() {
        let num = |i: usize| rest.get(i + 1).and_then(|v| v.parse::<u64>().ok());
        match rest[i].as_str() {
            "--count" | "--accepts" => o.count = num(i)?,
            "--send" => o.send = num(i)? as usize,
            "--close-delay-ms" => o.close_delay_ms = num(i)?,
            "--delay-before-send-ms" => o.delay_before_send_ms = num(i)?,
            "--accept-delay-ms" => o.accept_delay_ms = num(i)?,
            "--backlog" => o.backlog = Some(i32::try_from(num(i)?).ok()?),
            "--never-close" => {
                o.never_close = true;
                i += 1;
                continue;
            }
            "--wait-stdin" => {
                o.wait_stdin = true;
                i += 1;
                continue;
            }
            "--null-accept" => {
                o.null_accept = true;
                i += 1;
                continue;
            }
            "--v6only" => {
                o.v6only = true;
                i += 1;
                continue;
            }
            "--reuseport" => {
                o.reuseport = true;
                i += 1;
                continue;
            }
            "--nonblock" => {
                o.nonblock = true;
                i += 1;
                continue;
            }
            "--send-on-stdin" => {
                o.send_on_stdin = true;
                i += 1;
                continue;
            }
            _ => return None,
        }
        i += 2;
    }
    Some(o)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        return usage();
    }
    let Ok(addr) = args[2].parse::<IpAddr>() else {
        return usage();
    };
    let Ok(port) = args[3].parse::<u16>() else {
        return usage();
    };
    let Some(opts) = parse_opts(&args[4..]) else {
        return usage();
    };
    println!("pid {}", std::process::id());
    let res = match args[1].as_str() {
        "server" => server(SocketAddr::new(addr, port), &opts),
        "client" => client(SocketAddr::new(addr, port), &opts),
        _ => return usage(),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tcp-trace-peer: {e}");
            ExitCode::from(1)
        }
    }
}

/// A listening socket with the options std does not offer.
fn listen(addr: SocketAddr, o: &Opts) -> std::io::Result<TcpListener> {
    if !o.v6only && !o.reuseport && o.backlog.is_none() {
        return TcpListener::bind(addr);
    }
    let family = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket(2); the fd is owned by the TcpListener below.
    let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh socket we own.
    let l = unsafe { TcpListener::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    let set = |level, name| {
        // SAFETY: valid fd, pointer to a c_int of the given size.
        let r = unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    set(libc::SOL_SOCKET, libc::SO_REUSEADDR)?;
    if o.reuseport {
        set(libc::SOL_SOCKET, libc::SO_REUSEPORT)?;
    }
    if o.v6only {
        set(libc::IPPROTO_IPV6, libc::IPV6_V6ONLY)?;
    }
    let (storage, len) = sockaddr_of(addr);
    // SAFETY: storage holds a sockaddr_in/in6 of `len` bytes.
    if unsafe { libc::bind(fd, (&storage as *const libc::sockaddr_storage).cast(), len) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: bound socket.
    if unsafe { libc::listen(fd, o.backlog.unwrap_or(1024)) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(l)
}

fn sockaddr_of(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all zeroes is a valid sockaddr_storage.
    let mut st: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            let sin = unsafe {
                &mut *(&mut st as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>()
            };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe {
                &mut *(&mut st as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (st, len as libc::socklen_t)
}

/// A non-blocking connect as curl makes it: connect() returns EINPROGRESS, poll()
/// waits for the socket to become writable, SO_ERROR tells the outcome.
fn connect_nonblocking(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let family = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket(2); owned by the TcpStream below.
    let fd = unsafe {
        libc::socket(
            family,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh socket we own.
    let s = unsafe { TcpStream::from_raw_fd(fd) };
    let (storage, len) = sockaddr_of(addr);
    // SAFETY: storage holds a sockaddr of `len` bytes.
    let r = unsafe { libc::connect(fd, (&storage as *const libc::sockaddr_storage).cast(), len) };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(e);
        }
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut pfd, 1, 30_000) } <= 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::TimedOut));
        }
        if let Some(e) = s.take_error()? {
            return Err(e);
        }
    }
    s.set_nonblocking(false)?;
    Ok(s)
}

fn server(addr: SocketAddr, o: &Opts) -> std::io::Result<()> {
    let l = listen(addr, o)?;
    println!("listening {}", l.local_addr()?.port());
    std::io::stdout().flush()?;
    let mut kept = Vec::new();
    for _ in 0..o.count {
        if o.accept_delay_ms > 0 {
            std::thread::sleep(Duration::from_millis(o.accept_delay_ms));
        }
        let s = if o.null_accept {
            // Most servers pass NULL: the tracer must still find the socket.
            // SAFETY: valid listening fd; NULL address buffers are allowed.
            let fd = unsafe {
                libc::accept4(
                    l.as_raw_fd(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_CLOEXEC,
                )
            };
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // SAFETY: fd is a fresh socket we own.
            unsafe { TcpStream::from_raw_fd(fd) }
        } else {
            l.accept()?.0
        };
        let mut s = s;
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(e) => return Err(e),
            }
        }
        if o.never_close {
            println!("kept {}", s.peer_addr()?.port());
            std::io::stdout().flush()?;
            kept.push(s);
            continue;
        }
        std::thread::sleep(Duration::from_millis(o.close_delay_ms));
        drop(s);
    }
    if o.never_close {
        // The sockets stay in CLOSE_WAIT until the process is killed.
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    Ok(())
}

fn client(addr: SocketAddr, o: &Opts) -> std::io::Result<()> {
    if o.wait_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
    }
    for _ in 0..o.count {
        let attempt = if o.nonblock {
            connect_nonblocking(addr)
        } else {
            TcpStream::connect(addr)
        };
        match attempt {
            Ok(mut s) => {
                println!("connect ok {}", s.local_addr()?.port());
                std::io::stdout().flush()?;
                if o.delay_before_send_ms > 0 {
                    std::thread::sleep(Duration::from_millis(o.delay_before_send_ms));
                }
                if o.send_on_stdin {
                    let mut line = String::new();
                    std::io::stdin().lock().read_line(&mut line)?;
                }
                if o.send > 0 {
                    s.write_all(&vec![b'x'; o.send])?;
                }
                drop(s);
            }
            Err(e) => {
                println!("connect err {}", e.raw_os_error().unwrap_or(0));
                std::io::stdout().flush()?;
            }
        }
    }
    Ok(())
}
