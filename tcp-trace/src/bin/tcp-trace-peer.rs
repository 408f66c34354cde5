//! tcp-trace-peer: small, scriptable TCP client and server used by the integration
//! tests and the lab to make real traffic with known timing.
//!
//!   tcp-trace-peer server ADDR PORT [--accepts N] [--close-delay-ms MS] [--null-accept]
//!       listens, prints `listening PORT` on stdout, accepts N connections with
//!       accept4(fd, NULL, NULL) (or with an address buffer), reads until EOF and
//!       closes each MS after the peer's FIN. Prints `pid PID` first.
//!   tcp-trace-peer client ADDR PORT [--count N] [--send BYTES] [--wait-stdin]
//!       [--delay-before-send-ms MS]
//!       connects N times (blocking connect), sends BYTES bytes, closes first.
//!       Prints `connect ok LOCALPORT` or `connect err ERRNO` per attempt.
use std::io::{BufRead, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};
use std::process::ExitCode;
use std::time::Duration;

fn usage() -> ExitCode {
    eprintln!(
        "usage: tcp-trace-peer server ADDR PORT [--accepts N] [--close-delay-ms MS] [--null-accept]\n       tcp-trace-peer client ADDR PORT [--count N] [--send BYTES] [--wait-stdin] [--delay-before-send-ms MS]"
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
}

fn parse_opts(rest: &[String]) -> Option<Opts> {
    let mut o = Opts {
        count: 1,
        send: 16,
        close_delay_ms: 40,
        delay_before_send_ms: 0,
        wait_stdin: false,
        null_accept: false,
    };
    let mut i = 0;
    while i < rest.len() {
        let num = |i: usize| rest.get(i + 1).and_then(|v| v.parse::<u64>().ok());
        match rest[i].as_str() {
            "--count" | "--accepts" => o.count = num(i)?,
            "--send" => o.send = num(i)? as usize,
            "--close-delay-ms" => o.close_delay_ms = num(i)?,
            "--delay-before-send-ms" => o.delay_before_send_ms = num(i)?,
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

fn server(addr: SocketAddr, o: &Opts) -> std::io::Result<()> {
    let l = TcpListener::bind(addr)?;
    println!("listening {}", l.local_addr()?.port());
    std::io::stdout().flush()?;
    for _ in 0..o.count {
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
        std::thread::sleep(Duration::from_millis(o.close_delay_ms));
        drop(s);
    }
    Ok(())
}

fn client(addr: SocketAddr, o: &Opts) -> std::io::Result<()> {
    if o.wait_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
    }
    for _ in 0..o.count {
        match TcpStream::connect(addr) {
            Ok(mut s) => {
                println!("connect ok {}", s.local_addr()?.port());
                std::io::stdout().flush()?;
                if o.delay_before_send_ms > 0 {
                    std::thread::sleep(Duration::from_millis(o.delay_before_send_ms));
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
