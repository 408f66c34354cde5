//! Shared helpers of the privileged integration tests: start the real tracer,
//! make real traffic, clean up network namespaces and processes on drop.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
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

    /// Waits for the tracer to exit by itself (--duration/--count).
    pub fn collect(mut self) -> (Vec<Value>, i32) {
        let mut out = String::new();
        if let Some(mut s) = self.stdout.take() {
            s.read_to_string(&mut out).expect("read stdout");
        }
        let status = self.child.wait().expect("wait tcp-trace");
        let lines = out
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
            .collect();
        (lines, status.code().unwrap_or(-1))
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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

pub fn peer_cmd(netns: Option<&str>, args: &[&str]) -> Command {
    match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, PEER]).args(args);
            c
        }
        None => {
            let mut c = Command::new(PEER);
            c.args(args);
            c
        }
    }
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
    loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let p = l.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("::1", p)).is_ok() {
            return p;
        }
    }
}

// ---- reading the captured events ----

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
