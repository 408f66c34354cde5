//! Shared helpers of the privileged integration tests: start the real tracer,
//! make real traffic, clean up network namespaces and processes on drop.
#![allow(dead_code)]

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const TRACER: &str = env!("CARGO_BIN_EXE_tcp-trace");
pub const PEER: &str = env!("CARGO_BIN_EXE_tcp-trace-peer");

/// Privileged tests run when root. `cargo xtask test` sets
/// TCP_TRACE_PRIVILEGED_TESTS=1: then lacking root is a failure, not a skip. A
/// plain `cargo test` as a user prints a loud SKIPPED line.
pub fn require_root(test: &str) -> bool {
    let root = unsafe { libc::geteuid() } == 0;
    let required = std::env::var("TCP_TRACE_PRIVILEGED_TESTS").is_ok_and(|v| v == "1");
    if root {
        return true;
    }
    if required {
        panic!("{test}: TCP_TRACE_PRIVILEGED_TESTS=1 but not running as root");
    }
    eprintln!("SKIPPED {test}: needs root (run `cargo xtask test`)");
    false
}

/// A running tracer. Killed on drop.
pub struct Tracer {
    child: Child,
    stdout: Option<ChildStdout>,
    pub stderr_lines: mpsc::Receiver<String>,
    /// stderr lines up to and including "hooks attached" (warnings, attach paths).
    pub startup: Vec<String>,
}

impl Tracer {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts `tcp-trace ARGS` and waits until every hook is attached.
    pub fn start(args: &[&str]) -> Tracer {
        Self::start_cmd(Command::new(TRACER).args(args))
    }

    /// Starts `tcp-trace ARGS -P PORT` and waits until every hook is attached.
    pub fn on_port(port: u16, args: &[&str]) -> Tracer {
        Self::start_cmd(
            Command::new(TRACER)
                .args(args)
                .args(["-P", &port.to_string()]),
        )
    }

    /// `on_port`, returning once the socket table read right after attaching is in
    /// place (its "learned … open before start" line, the first after the start).
    pub fn on_port_learned(port: u16, args: &[&str]) -> Tracer {
        let t = Self::on_port(port, args);
        let learned = t
            .stderr_lines
            .recv_timeout(Duration::from_secs(10))
            .expect("a line after 'hooks attached'");
        assert!(
            learned.contains("TCP sockets open before start"),
            "{learned}"
        );
        t
    }

    pub fn start_cmd(cmd: &mut Command) -> Tracer {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tcp-trace");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[tcp-trace] {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdout = child.stdout.take();
        let mut t = Tracer {
            child,
            stdout,
            stderr_lines: rx,
            startup: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match t.stderr_lines.recv_timeout(left) {
                Ok(l) if l.contains("hooks attached") => {
                    t.startup.push(l);
                    return t;
                }
                Ok(l) => t.startup.push(l),
                Err(_) => panic!("tcp-trace did not report 'hooks attached' within 20 s"),
            }
        }
    }

    /// Hands stdout over to a reader thread: lines as they are printed, while the
    /// tracer runs (`collect`/`stop` then return no lines).
    pub fn stream_stdout(&mut self) -> mpsc::Receiver<String> {
        let stdout = self.stdout.take().expect("stdout not taken yet");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        rx
    }

    /// Stops with SIGINT and returns (stdout JSON lines, exit code).
    pub fn stop(self) -> (Vec<Value>, i32) {
        // Let the 10 ms poll timer pick up the last events (generously: a tracer in a
        // container or a QEMU guest may be slow to be scheduled).
        std::thread::sleep(Duration::from_millis(300));
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        self.collect()
    }

    /// Stops with SIGINT, asserts exit 0 and returns the stdout JSON lines.
    pub fn finish(self) -> Vec<Value> {
        let (lines, code) = self.stop();
        assert_eq!(code, 0, "tcp-trace exit code");
        lines
    }

    /// Stops with SIGINT and returns (stdout JSON lines, exit code, the stderr lines
    /// after the start-up ones).
    pub fn stop_with_stderr(mut self) -> (Vec<Value>, i32, Vec<String>) {
        let stderr = std::mem::replace(&mut self.stderr_lines, mpsc::channel().1);
        let (lines, code) = self.stop();
        let mut err = Vec::new();
        while let Ok(l) = stderr.recv_timeout(Duration::from_secs(5)) {
            err.push(l);
        }
        (lines, code, err)
    }

    /// Waits for the tracer to exit by itself (--duration/--count).
    pub fn collect(mut self) -> (Vec<Value>, i32) {
        let mut out = String::new();
        if let Some(mut s) = self.stdout.take() {
            s.read_to_string(&mut out).expect("read stdout");
        }
        let status = self.child.wait().expect("wait tcp-trace");
        save_trace(&out);
        let lines = out
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
            .collect();
        (lines, status.code().unwrap_or(-1))
    }
}

/// Runs `traffic` under `tcp-trace ARGS -P PORT`: started (hooks attached) before it,
/// stopped with SIGINT after it, exit 0. Returns the stdout JSON lines and what
/// `traffic` returned.
pub fn traced<R>(port: u16, args: &[&str], traffic: impl FnOnce(&Tracer) -> R) -> (Vec<Value>, R) {
    let ps = port.to_string();
    traced_cmd(Command::new(TRACER).args(args).args(["-P", &ps]), traffic)
}

/// `traced` with a tracer command of its own (setpriv, podman, `record`, …).
pub fn traced_cmd<R>(cmd: &mut Command, traffic: impl FnOnce(&Tracer) -> R) -> (Vec<Value>, R) {
    let t = Tracer::start_cmd(cmd);
    let r = traffic(&t);
    (t.finish(), r)
}

impl Drop for Tracer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Keeps what a tracer printed in target/tmp/traces/TEST.N.jsonl and says where (the
/// harness shows it with a failing test's output): a failure in CI can be read
/// event by event afterwards.
fn save_trace(out: &str) {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("traces");
    let test = std::thread::current()
        .name()
        .unwrap_or("main")
        .replace("::", "-");
    let path = dir.join(format!(
        "{test}.{}.{}.jsonl",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    match std::fs::create_dir_all(&dir).and_then(|_| std::fs::write(&path, out)) {
        Ok(()) => eprintln!("tracer output saved in {}", path.display()),
        Err(e) => eprintln!("tracer output not saved in {}: {e}", path.display()),
    }
}

/// A peer process (tcp-trace-peer). Killed on drop.
pub struct Peer {
    pub child: Child,
    pub pid: u32,
    lines: mpsc::Receiver<String>,
}

impl Peer {
    pub fn spawn(mut cmd: Command) -> Peer {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn tcp-trace-peer");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut p = Peer {
            child,
            pid: 0,
            lines: rx,
        };
        let l = p.line();
        p.pid = l.strip_prefix("pid ").expect("pid line").parse().unwrap();
        p
    }

    pub fn line(&mut self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(20))
            .expect("peer output")
    }

    pub fn wait(mut self) -> i32 {
        self.child.wait().unwrap().code().unwrap_or(-1)
    }

    /// Waits for the exit and asserts it is 0.
    pub fn exits_ok(self) {
        let pid = self.pid;
        assert_eq!(self.wait(), 0, "tcp-trace-peer {pid} exit code");
    }

    /// A client's next line, which must be `connect ok LOCALPORT`: the local port.
    pub fn connect_ok(&mut self) -> u64 {
        let l = self.line();
        l.strip_prefix("connect ok ")
            .unwrap_or_else(|| panic!("expected `connect ok PORT`, got {l:?}"))
            .parse()
            .unwrap()
    }

    pub fn write_stdin(&mut self, s: &str) {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(s.as_bytes()).unwrap();
        stdin.flush().unwrap();
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `PROGRAM ARGS…` in `ns`'s network namespace (`ip netns exec`, which execs in
/// place: the pid is the program's), or in the host's when None.
pub fn in_netns(ns: Option<&Netns>, program: impl AsRef<OsStr>, args: &[&str]) -> Command {
    let mut c = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &ns.name]).arg(program);
            c
        }
        None => Command::new(program),
    };
    c.args(args);
    c
}

pub fn peer_cmd(ns: Option<&Netns>, args: &[&str]) -> Command {
    in_netns(ns, PEER, args)
}

// ---- servers and clients ----

/// Starts `tcp-trace-peer server ADDR PORT EXTRA…` in `ns` (the host's network
/// namespace when None) and returns it once it listens (its `listening PORT` line).
pub fn start_server(ns: Option<&Netns>, addr: &str, port: u16, extra: &[&str]) -> Peer {
    let ps = port.to_string();
    let mut args = vec!["server", addr, &ps];
    args.extend_from_slice(extra);
    let mut server = Peer::spawn(peer_cmd(ns, &args));
    assert_eq!(
        server.line(),
        format!("listening {port}"),
        "server {args:?}"
    );
    server
}

/// Starts `tcp-trace-peer client ADDR PORT EXTRA…` in `ns` (the host's when None).
pub fn start_client(ns: Option<&Netns>, addr: &str, port: u16, extra: &[&str]) -> Peer {
    let ps = port.to_string();
    let mut args = vec!["client", addr, &ps];
    args.extend_from_slice(extra);
    Peer::spawn(peer_cmd(ns, &args))
}

/// A client that ran to its end (exit 0): its pid and the local port of its first
/// connection.
pub struct ClientRun {
    pub pid: u64,
    pub cport: u64,
}

/// Runs a client to its end: its first connect succeeded (`connect ok PORT`), it
/// exited 0.
pub fn run_client(ns: Option<&Netns>, addr: &str, port: u16, extra: &[&str]) -> ClientRun {
    let mut client = start_client(ns, addr, port, extra);
    let cport = client.connect_ok();
    let pid = client.pid as u64;
    client.exits_ok();
    ClientRun { pid, cport }
}

/// Runs a client of `count` connects to a port nobody listens on: each refused
/// (`connect err 111`, ECONNREFUSED), exit 0. Returns its pid.
pub fn run_refused_client(ns: Option<&Netns>, addr: &str, port: u16, count: usize) -> u64 {
    let n = count.to_string();
    let mut client = start_client(ns, addr, port, &["--count", &n]);
    for _ in 0..count {
        assert_eq!(client.line(), "connect err 111", "a refused connect");
    }
    let pid = client.pid as u64;
    client.exits_ok();
    pid
}

/// Waits for every peer (started together) and asserts each exited 0.
pub fn all_exit_ok(peers: impl IntoIterator<Item = Peer>) {
    for p in peers {
        p.exits_ok();
    }
}

/// Traffic between one server and one client process, both run to their end.
pub struct Exchange {
    pub server_pid: u64,
    pub client_pid: u64,
    /// The client's local port of its first connection.
    pub cport: u64,
    /// From the server's `listening` line read to the client's exit (after its
    /// connects): how late the client came, for timings the server counts from then.
    pub client_took: Duration,
}

/// A server on ADDR:PORT in `ns` (`server_extra`: its options, e.g. how many it
/// accepts), then a client to it (`client_extra`); both must exit 0.
pub fn server_and_client(
    ns: Option<&Netns>,
    addr: &str,
    port: u16,
    server_extra: &[&str],
    client_extra: &[&str],
) -> Exchange {
    server_and_client_to(ns, addr, addr, port, server_extra, client_extra)
}

/// `server_and_client` with a server listening on `listen` (a wildcard, …) and a
/// client connecting to `connect`.
pub fn server_and_client_to(
    ns: Option<&Netns>,
    listen: &str,
    connect: &str,
    port: u16,
    server_extra: &[&str],
    client_extra: &[&str],
) -> Exchange {
    let x = exchange_unsettled(ns, listen, connect, port, server_extra, client_extra);
    settle(ns, port);
    x
}

/// `server_and_client_to` without waiting for the kernel to close the sockets: for
/// an exchange that leaves one open on purpose (a dropped ACK keeps the server's in
/// LAST_ACK).
pub fn exchange_unsettled(
    ns: Option<&Netns>,
    listen: &str,
    connect: &str,
    port: u16,
    server_extra: &[&str],
    client_extra: &[&str],
) -> Exchange {
    let server = start_server(ns, listen, port, server_extra);
    let server_pid = server.pid as u64;
    let listening = Instant::now();
    let c = run_client(ns, connect, port, client_extra);
    let client_took = listening.elapsed();
    server.exits_ok();
    Exchange {
        server_pid,
        client_pid: c.pid,
        cport: c.cport,
        client_took,
    }
}

/// Waits until every connection on `port` in `ns` is in TIME_WAIT or gone (listeners
/// may stay): the exchange is over in the kernel, not only in the processes. Both programs may have exited
/// while a FIN or its ACK has not been processed yet. A CI run on a loaded machine
/// stopped the tracer, 300 ms after the server exited, with the client's FIN_WAIT1
/// and no FIN_WAIT2 or CLOSE; the likeliest reading is that they came later (their
/// kernel was not seen). Gives up after 10 s, saying so: the test then fails on what
/// the tracer saw, with this line beside it.
pub fn settle(ns: Option<&Netns>, port: u16) {
    let filter = format!("( sport = :{port} or dport = :{port} )");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut left = String::new();
    while Instant::now() < deadline {
        let out = in_netns(
            ns,
            "ss",
            &[
                "-Htan",
                "exclude",
                "time-wait",
                "exclude",
                "listening",
                &filter,
            ],
        )
        .output();
        match out {
            Ok(o) if o.status.success() => {
                left = String::from_utf8_lossy(&o.stdout).trim().to_string();
                if left.is_empty() {
                    return;
                }
            }
            Ok(o) => panic!("ss: {}", String::from_utf8_lossy(&o.stderr)),
            Err(e) => panic!("ss: {e}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("note: sockets on port {port} still not closed after 10 s:\n{left}");
}

/// The server of the design's one loopback connection (docs/kernel-facts.md, "One
/// loopback connection"): one accept4(fd, NULL, NULL), closing 40 ms after the
/// client's FIN.
pub const DESIGN_SERVER: [&str; 5] = ["--accepts", "1", "--close-delay-ms", "40", "--null-accept"];

/// A server program that is not tcp-trace-peer (python's http.server, …), started in
/// `ns` from `dir`, returned once something listens on `port` there. Killed on drop.
pub struct Daemon(pub Child);

impl Daemon {
    pub fn start(ns: &Netns, port: u16, dir: &Path, argv: &[&str]) -> Daemon {
        let child = in_netns(Some(ns), argv[0], &argv[1..])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        let d = Daemon(child);
        ns.wait_listening(port);
        d
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The path of `cmd` on PATH, if any.
pub fn which(cmd: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(cmd))
        .find(|p| p.is_file())
}

/// A network namespace with loopback up, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = format!("tt-{tag}-{}", std::process::id());
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        run("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    pub fn exec(&self, args: &[&str]) {
        let mut full = vec!["netns", "exec", &self.name];
        full.extend_from_slice(args);
        run("ip", &full);
    }

    /// Drops, inside the namespace, the incoming TCP segments to `port` that match the
    /// nftables expression `matcher` (e.g. `tcp flags & (syn|ack) == syn quota until 100
    /// bytes` drops only the first SYN: a SYN is 60–80 bytes).
    pub fn drop_input(&self, port: u16, matcher: &str) {
        self.nft(&format!(
            "table inet tt {{\n chain input {{\n type filter hook input priority 0; policy accept;\n \
             tcp dport {port} {matcher} drop\n }}\n}}\n"
        ));
    }

    /// A `TcpExt` counter of the namespace's /proc/net/netstat (e.g. `TCPSynRetrans`,
    /// the SYN and SYN-ACK retransmits): the kernel's own count, to tell a scenario the
    /// kernel did not play from one the tracer missed.
    pub fn tcp_ext(&self, field: &str) -> u64 {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, "cat", "/proc/net/netstat"])
            .output()
            .expect("ip netns exec cat /proc/net/netstat");
        assert!(
            out.status.success(),
            "reading /proc/net/netstat in {}",
            self.name
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let mut lines = text.lines();
        while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
            if !names.starts_with("TcpExt:") {
                continue;
            }
            let at = names.split_whitespace().position(|n| n == field);
            let at = at.unwrap_or_else(|| panic!("no TcpExt {field} in /proc/net/netstat"));
            let v = values.split_whitespace().nth(at);
            return v
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("TcpExt {field} unreadable: {values}"));
        }
        panic!("no TcpExt lines in /proc/net/netstat of {}", self.name)
    }

    /// The namespace's inode (what the tracer reports as `netns`).
    pub fn inode(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(format!("/run/netns/{}", self.name))
            .unwrap()
            .ino()
    }

    /// Waits (up to 20 s) until something listens on `port` inside the namespace.
    pub fn wait_listening(&self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let ok = Command::new("ip")
                .args(["netns", "exec", &self.name, "ss", "-Htln"])
                .arg(format!("sport = :{port}"))
                .output()
                .is_ok_and(|o| !o.stdout.is_empty());
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("nothing listens on {port} in {}", self.name);
    }

    /// Applies an nftables ruleset inside the namespace.
    pub fn nft(&self, ruleset: &str) {
        use std::io::Write;
        let mut c = Command::new("ip")
            .args(["netns", "exec", &self.name, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("nft");
        c.stdin
            .as_mut()
            .unwrap()
            .write_all(ruleset.as_bytes())
            .unwrap();
        drop(c.stdin.take());
        assert!(c.wait().unwrap().success(), "nft -f failed:\n{ruleset}");
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

pub fn run(cmd: &str, args: &[&str]) {
    let st = Command::new(cmd)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(st.success(), "{cmd} {args:?} failed: {st}");
}

/// A port that is free now on 127.0.0.1 and ::1.
pub fn free_port() -> u16 {
    // Not bind(0): the kernel may hand the same port to two tests running at once
    // (each releases it before its server binds), and it comes from the ephemeral
    // range, where another test's clients pick their local ports; either way a test's
    // `-P port` filter would let the other test's connections in. Ports below the
    // ephemeral range (above it if it starts low), each handed out once per process.
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let (lo, hi) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|w| w.parse::<u32>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999));
    let (base, span) = if lo >= 12_000 {
        (lo - 10_000, 10_000)
    } else {
        (hi + 1, 65_535 - hi)
    };
    // A start of its own per process: test binaries of one run follow each other.
    let start = std::process::id() * 97 % span;
    for _ in 0..span {
        let p = (base + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span) as u16;
        let v4 = std::net::TcpListener::bind(("127.0.0.1", p));
        if v4.is_ok() && std::net::TcpListener::bind(("::1", p)).is_ok() {
            return p;
        }
    }
    panic!("no free port in {base}..{}", base + span);
}

// ---- replaying recordings ----

/// One loopback connection on 6.18 (python3 server on 127.0.0.1:8123, its own client).
pub const LOOPBACK_V4: &str = "loopback-v4-6.18.ttr";
/// An IPv6 connect refused by a reset, on 6.18.
pub const REFUSED_V6: &str = "refused-v6-6.18.ttr";

/// A recording of tests/fixtures/recordings.
pub fn recording(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/recordings")
        .join(name)
}

/// What `tcp-trace replay` printed, and its exit code.
pub struct Replay {
    pub stdout: String,
    pub stderr: String,
    pub code: i32,
}

impl Replay {
    /// Asserts exit 0 (the stderr in the message).
    pub fn ok(self) -> Replay {
        assert_eq!(self.code, 0, "tcp-trace replay: {}", self.stderr);
        self
    }

    /// The stdout as JSON lines.
    pub fn json(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
            .collect()
    }
}

/// `tcp-trace replay FILE ARGS…`, NO_COLOR unset.
pub fn replay_file(file: &Path, args: &[&str]) -> Replay {
    let out = Command::new(TRACER)
        .arg("replay")
        .arg(file)
        .args(args)
        .env_remove("NO_COLOR")
        .output()
        .expect("run tcp-trace replay");
    Replay {
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
        code: out.status.code().unwrap_or(-1),
    }
}

/// `tcp-trace replay RECORDING ARGS…` of a fixture recording.
pub fn replay(name: &str, args: &[&str]) -> Replay {
    replay_file(&recording(name), args)
}

/// A wildcard and dual-stack recording (test `servers::record_wildcard_traffic_for_replay`:
/// 0.0.0.0 with three IPv4 clients, then [::] with an IPv4 and an IPv6 client), as any
/// kernel must replay it: five established server ends (on `port` when given), each
/// with its own local address, an accept() return and its client as peer; two
/// listeners, with 3 and 2 children accepted.
pub fn assert_recorded_wildcard(lines: &[Value], port: Option<u16>, what: &str) {
    let all = conns(lines);
    let ids = by_id(&all);
    let servers = established_servers(&all);
    assert_eq!(servers.len(), 5, "{what}: {all:#?}");
    for c in &servers {
        let local = c["saddr"].as_str().unwrap();
        assert!(
            ["127.0.0.1", "::ffff:127.0.0.1", "::1"].contains(&local),
            "{what}: server local address {local}: {c}"
        );
        if let Some(port) = port {
            assert_eq!(c["sport"], port, "{what}: {c}");
        }
        assert!(accepted(c), "{what}: accept return: {c}");
        client_peer_of(&ids, c);
    }
    let mut kids: Vec<u64> = all
        .iter()
        .filter(|c| c["role"] == "listener" && port.is_none_or(|p| c["sport"] == p))
        .map(|l| l["listener"]["accepted"].as_u64().unwrap())
        .collect();
    kids.sort();
    assert_eq!(kids, [2, 3], "{what}");
}

/// A fresh, empty directory `tcp-trace-TAG-PID` below the temp dir.
pub fn fresh_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tcp-trace-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A `fresh_dir`, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        TempDir(fresh_dir(tag))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---- the static binary and podman (container and k8s tests) ----

const WORKSPACE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

pub fn workspace_path(p: &str) -> PathBuf {
    Path::new(WORKSPACE).join(p)
}

/// target/dist/tcp-trace, built by `cargo xtask dist` (not by the tests: it would take
/// minutes and a second cargo inside `cargo test`).
pub fn dist_binary() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .filter(|d| !d.is_empty())
        .map_or_else(
            || workspace_path("target"),
            |d| Path::new(WORKSPACE).join(d),
        );
    let bin = target.join("dist/tcp-trace");
    assert!(
        bin.is_file(),
        "{} does not exist: the container tests run the static binary; build it first with \
         `cargo xtask dist`",
        bin.display()
    );
    bin
}

/// `podman` and busybox-static must exist; otherwise a clear failure (`cargo xtask
/// setup` installs podman, runc and busybox-static).
pub fn require_podman() {
    let ok = Command::new("podman")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "podman is not installed (`cargo xtask setup` installs podman, runc, busybox-static)"
    );
    assert!(
        Path::new("/bin/busybox").is_file(),
        "/bin/busybox is missing (busybox-static)"
    );
}

/// `dir/bin/busybox` with links for `applets`.
pub fn busybox_bin(dir: &Path, applets: &[&str]) {
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", dir.join("bin/busybox")).unwrap();
    for applet in applets {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet)).unwrap();
    }
}

/// Copies `from` to `to`, mode 0755.
pub fn copy_executable(from: &Path, to: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::copy(from, to).unwrap();
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755)).unwrap();
}

// ---- reading the captured events ----

/// The `connection` lines.
pub fn conns(lines: &[Value]) -> Vec<&Value> {
    lines.iter().filter(|l| l["type"] == "connection").collect()
}

/// Connections by their id.
pub fn by_id<'a>(conns: &[&'a Value]) -> HashMap<u64, &'a Value> {
    conns
        .iter()
        .map(|c| (c["id"].as_u64().unwrap(), *c))
        .collect()
}

/// The established server ends among `conns`.
pub fn established_servers<'a>(conns: &[&'a Value]) -> Vec<&'a Value> {
    conns
        .iter()
        .copied()
        .filter(|c| c["role"] == "server" && c["established"] == true)
        .collect()
}

/// The listeners on local port `port` among `conns`.
pub fn listeners_on<'a>(conns: &[&'a Value], port: u16) -> Vec<&'a Value> {
    conns
        .iter()
        .copied()
        .filter(|c| c["role"] == "listener" && c["sport"] == port)
        .collect()
}

/// accept() returned a descriptor for this server end.
pub fn accepted(c: &Value) -> bool {
    c["accept"]["ret"].as_i64().is_some_and(|r| r >= 0)
}

/// The peer of a server end, which must be a client whose local port is the server
/// end's remote port.
pub fn client_peer_of<'a>(ids: &HashMap<u64, &'a Value>, c: &Value) -> &'a Value {
    let p = ids[&c["peer"].as_u64().unwrap_or_else(|| panic!("no peer: {c}"))];
    assert_eq!(p["role"], "client", "peer of {c}: {p}");
    assert_eq!(p["sport"], c["dport"], "peer of {c}: {p}");
    p
}

/// The first event of `kind`.
pub fn first_of_kind<'a>(evs: &[&'a Value], kind: &str) -> &'a Value {
    evs.iter()
        .copied()
        .find(|e| e["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} event"))
}

/// The `stats` line.
pub fn stats(lines: &[Value]) -> &Value {
    lines
        .iter()
        .find(|l| l["type"] == "stats")
        .expect("stats line")
}

pub fn events(lines: &[Value]) -> Vec<&Value> {
    lines.iter().filter(|l| l["type"] == "event").collect()
}

pub fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or("")
}

/// Transitions of one socket, as "OLD>NEW" strings in order.
pub fn transitions_of(evs: &[&Value], skaddr: &str) -> Vec<String> {
    evs.iter()
        .filter(|e| e["kind"] == "transition" && s(e, "skaddr") == skaddr)
        .map(|e| format!("{}>{}", s(e, "old"), s(e, "new")))
        .collect()
}

/// The skaddr of the socket whose first transition matches (old, new, sport, dport);
/// a 0 port matches any.
pub fn find_socket(evs: &[&Value], old: &str, new: &str, sport: u64, dport: u64) -> String {
    evs.iter()
        .find(|e| {
            e["kind"] == "transition"
                && s(e, "old") == old
                && s(e, "new") == new
                && (sport == 0 || e["sport"] == sport)
                && (dport == 0 || e["dport"] == dport)
        })
        .map(|e| s(e, "skaddr").to_string())
        .unwrap_or_else(|| panic!("no {old}>{new} sport={sport} dport={dport} in {evs:#?}"))
}

pub fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// The client that closes first (docs/kernel-facts.md, "One loopback connection").
pub const CLIENT_ACTIVE_CLOSE: [&str; 5] = [
    "CLOSE>SYN_SENT",
    "SYN_SENT>ESTABLISHED",
    "ESTABLISHED>FIN_WAIT1",
    "FIN_WAIT1>FIN_WAIT2",
    "FIN_WAIT2>CLOSE",
];

/// The server child that closes second (docs/kernel-facts.md, "One loopback connection").
pub const CHILD_PASSIVE_CLOSE: [&str; 5] = [
    "LISTEN>SYN_RECV",
    "SYN_RECV>ESTABLISHED",
    "ESTABLISHED>CLOSE_WAIT",
    "CLOSE_WAIT>LAST_ACK",
    "LAST_ACK>CLOSE",
];

/// Finds the client (local port `cport`) and the server child (local port `port`) of
/// one connection and asserts their exact sequences; returns their skaddrs.
pub fn assert_design_sequences(evs: &[&Value], port: u16, cport: u64) -> (String, String) {
    let client = find_socket(evs, "SYN_SENT", "ESTABLISHED", cport, port as u64);
    assert_eq!(
        transitions_of(evs, &client),
        strs(&CLIENT_ACTIVE_CLOSE),
        "client"
    );
    // Found by SYN_RECV → ESTABLISHED: on 6.1 and 6.12 the child's LISTEN → SYN_RECV
    // record does not carry the remote end yet (dport 0); 6.18's does.
    let child = find_socket(evs, "SYN_RECV", "ESTABLISHED", port as u64, cport);
    assert_eq!(
        transitions_of(evs, &child),
        strs(&CHILD_PASSIVE_CLOSE),
        "server child"
    );
    (client, child)
}

/// Hook runs the kernel skipped during a run (the `skipped` of its stats line).
pub fn skipped_of(lines: &[Value]) -> u64 {
    lines
        .iter()
        .find(|l| l["type"] == "stats")
        .and_then(|l| l["skipped"].as_u64())
        .unwrap_or(0)
}

/// Runs `attempt` (given `last`) up to three times while it returns the number of hook
/// runs the kernel skipped. A kernel may skip a run of a program (counted, reported,
/// never silent: tested elsewhere), e.g. 7.2 when a preempted program is still marked
/// running on its CPU; tests that assert every event of a run need a run without one.
/// The last attempt asserts whatever happened.
pub fn retry_on_kernel_skips(test: &str, mut attempt: impl FnMut(bool) -> Option<u64>) {
    for n in 1..=3 {
        match attempt(n == 3) {
            Some(skipped) => {
                eprintln!("{test}: the kernel skipped {skipped} hook runs; trying again")
            }
            None => return,
        }
    }
}

/// The design's connection (`DESIGN_SERVER`, `server_and_client`) as the tracer saw
/// it: both exact sequences; connect() returned 0 in the client on its socket,
/// accept() a descriptor in the server on the child; nothing was lost. Returns the
/// (client, child) skaddrs and the (connect, accept) return events.
pub fn assert_design_connection<'a>(
    lines: &[Value],
    evs: &[&'a Value],
    port: u16,
    x: &Exchange,
) -> ((String, String), (&'a Value, &'a Value)) {
    let (client_sk, child_sk) = assert_design_sequences(evs, port, x.cport);
    let conn = first_of_kind(evs, "connect_return");
    assert_eq!(s(conn, "skaddr"), client_sk);
    assert_eq!(conn["ret"], 0);
    assert_eq!(conn["pid"], x.client_pid);
    let acc = first_of_kind(evs, "accept_return");
    assert_eq!(s(acc, "skaddr"), child_sk);
    assert!(acc["ret"].as_i64().unwrap() >= 0);
    assert_eq!(acc["pid"], x.server_pid);
    assert_eq!(stats(lines)["lost"], 0);
    ((client_sk, child_sk), (conn, acc))
}

/// A connect to `port` refused by the remote end's reset: its socket went CLOSE →
/// SYN_SENT → CLOSE and nothing else. Returns its skaddr.
pub fn assert_refused_sequence(evs: &[&Value], port: u16) -> String {
    let sk = find_socket(evs, "CLOSE", "SYN_SENT", 0, port as u64);
    assert_eq!(
        transitions_of(evs, &sk),
        strs(&["CLOSE>SYN_SENT", "SYN_SENT>CLOSE"])
    );
    sk
}

/// Whether this kernel's `tcp:tcp_send_reset` fires for a reset sent with no socket:
/// 6.1 does not, 6.12 does, with the layout that has `reason` (docs/kernel-facts.md).
/// None when the format cannot be read.
pub fn send_reset_without_socket() -> Option<bool> {
    ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .find_map(|b| std::fs::read_to_string(format!("{b}/events/tcp/tcp_send_reset/format")).ok())
        .map(|f| f.contains("reason"))
}
