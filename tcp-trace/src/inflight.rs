//! `connect()` calls in progress when the tracer starts, read from
//! `/proc/PID/task/TID/syscall`.
//!
//! The kernel side follows a call from its entry (thread → fd) to its exit; a call
//! that entered before the programs were attached has no entry, and its return
//! (success after SYN retransmits, or ETIMEDOUT) was lost. That is the slow connect
//! an SRE starts the tracer for. The loader puts these calls in the kernel's table
//! of calls in progress (without replacing one the kernel made since attaching), so
//! that their exit finds the socket through the fd.

use std::fs;
use std::io;

/// A thread inside `connect()`: its `pid_tgid` as the kernel side keys it (tgid in the
/// upper half) and the call's fd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InFlight {
    pub pid_tgid: u64,
    pub fd: i32,
}

/// What a walk of /proc found.
#[derive(Debug, Default)]
pub struct Calls {
    pub connects: Vec<InFlight>,
    /// Threads whose system call could not be read (another user's without
    /// CAP_SYS_PTRACE, …): a `connect()` one of them has in progress loses its return.
    pub unreadable: usize,
    /// The first such error, for the note.
    pub first_error: Option<String>,
}

/// The system call `/proc/PID/task/TID/syscall` shows (`NR ARG0 … SP PC` while the
/// thread is blocked in it; `running`, or `-1 SP PC` outside one): `(NR, ARG0)`.
pub fn parse_syscall(line: &str) -> Option<(i64, i64)> {
    let mut it = line.split_ascii_whitespace();
    let nr: i64 = it.next()?.parse().ok()?;
    if nr < 0 {
        return None;
    }
    let arg0 = it.next()?.strip_prefix("0x")?;
    let arg0 = u64::from_str_radix(arg0, 16).ok()? as i64;
    Some((nr, arg0))
}

/// Every thread of every process blocked in `connect()` now (blocking: a /proc walk,
/// one small read per thread).
pub fn connects_in_progress() -> Calls {
    let mut calls = Calls::default();
    let Ok(procs) = fs::read_dir("/proc") else {
        return calls;
    };
    for p in procs.flatten() {
        let Some(tgid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        // Gone meanwhile: nothing to follow.
        let Ok(tasks) = fs::read_dir(p.path().join("task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let Some(tid) = t.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let path = t.path().join("syscall");
            match fs::read_to_string(&path) {
                Ok(line) => {
                    if let Some((nr, fd)) = parse_syscall(&line)
                        && nr == libc::SYS_connect
                        && let Ok(fd) = i32::try_from(fd)
                    {
                        calls.connects.push(InFlight {
                            pid_tgid: (u64::from(tgid) << 32) | u64::from(tid),
                            fd,
                        });
                    }
                }
                // Gone meanwhile (ENOENT at the open, ESRCH at the read).
                Err(e)
                    if e.kind() == io::ErrorKind::NotFound
                        || e.raw_os_error() == Some(libc::ESRCH) => {}
                Err(e) => {
                    calls.unreadable += 1;
                    calls
                        .first_error
                        .get_or_insert_with(|| format!("{}: {e}", path.display()));
                }
            }
        }
    }
    calls
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blocked_call_gives_its_number_and_first_argument() {
        assert_eq!(
            parse_syscall("42 0x3 0x7ffd2c1e2b30 0x10 0x0 0x0 0x0 0x7ffd2c1e2b08 0x7f3e8b51c0f7\n"),
            Some((42, 3))
        );
        assert_eq!(
            parse_syscall("288 0x7 0x0 0x0 0x80800 0x0 0x0 0x7ffc 0x7f3e"),
            Some((288, 7))
        );
    }

    #[test]
    fn outside_a_call_gives_nothing() {
        assert_eq!(parse_syscall("running\n"), None);
        assert_eq!(parse_syscall("-1 0x7ffd2c1e2b08 0x7f3e8b51c0f7\n"), None);
        assert_eq!(parse_syscall(""), None);
        assert_eq!(parse_syscall("42"), None);
        assert_eq!(parse_syscall("42 zz"), None);
    }

    /// A thread of this process blocked in connect() is found, with its thread id and
    /// fd, and only while it is in the call. The connect blocks because its listener's
    /// accept queue is full (backlog 0, one connection queued): the kernel drops the SYN.
    #[test]
    fn the_walk_finds_a_thread_blocked_in_connect() {
        use std::net::{TcpListener, TcpStream};
        use std::os::fd::AsRawFd;
        use std::sync::mpsc;
        use std::time::{Duration, Instant};

        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        // SAFETY: listen(2) on a socket this test owns.
        assert_eq!(unsafe { libc::listen(l.as_raw_fd(), 0) }, 0);
        let addr = l.local_addr().unwrap();
        let _queued = TcpStream::connect(addr).unwrap();
        let (tx, rx) = mpsc::channel();
        let blocked = std::thread::spawn(move || {
            // SAFETY: plain socket calls on a socket this thread owns; `sa` is a valid
            // sockaddr_in of the size passed.
            unsafe {
                let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
                assert!(fd >= 0);
                let tv = libc::timeval {
                    tv_sec: 3,
                    tv_usec: 0,
                };
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_SNDTIMEO,
                    (&raw const tv).cast(),
                    size_of::<libc::timeval>() as u32,
                );
                let mut sa: libc::sockaddr_in = std::mem::zeroed();
                sa.sin_family = libc::AF_INET as u16;
                sa.sin_port = addr.port().to_be();
                sa.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
                tx.send((libc::gettid() as u32, fd)).unwrap();
                libc::connect(
                    fd,
                    (&raw const sa).cast(),
                    size_of::<libc::sockaddr_in>() as u32,
                );
                libc::close(fd);
            }
        });
        let (tid, fd) = rx.recv().unwrap();
        let me = (u64::from(std::process::id()) << 32) | u64::from(tid);
        let deadline = Instant::now() + Duration::from_secs(2);
        let found = loop {
            let calls = connects_in_progress();
            if let Some(c) = calls.connects.iter().find(|c| c.pid_tgid == me) {
                break Some(*c);
            }
            if Instant::now() > deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        assert_eq!(found, Some(InFlight { pid_tgid: me, fd }));
        blocked.join().unwrap();
        assert!(
            connects_in_progress()
                .connects
                .iter()
                .all(|c| c.pid_tgid != me),
            "a thread out of connect() is not listed"
        );
    }
}
