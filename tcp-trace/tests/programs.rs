//! Privileged: real server programs from Debian's packages, as hosts run them. nginx
//! (a master that listens, with `reuseport` one socket per worker, and workers that
//! accept non-blocking from epoll) and redis-server (one process, epoll, `accept()`),
//! each started before the tracer, as a host's servers are, and after it. Skipped,
//! and said so, where the program is not installed (`cargo xtask setup` installs
//! both; the vm-test guests carry them when the host has them).
mod common;

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// A server program in `ns`, stopped with SIGTERM (nginx's fast shutdown: the master
/// takes its workers with it; SIGKILL would leave them holding the listeners).
struct Program {
    child: Child,
}

impl Program {
    fn start(ns: &Netns, port: u16, argv: &[&str]) -> Program {
        let child = in_netns(Some(ns), argv[0], &argv[1..])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        let p = Program { child };
        ns.wait_listening(port);
        p
    }

    /// `ip netns exec` execs the program: this is its pid.
    fn pid(&self) -> u64 {
        self.child.id() as u64
    }

    /// The pids of its child processes (nginx's workers), once there are `n`.
    fn children(&self, n: usize) -> Vec<u64> {
        let pid = self.child.id();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let list = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
            let kids: Vec<u64> = list
                .split_whitespace()
                .map(|p| p.parse().unwrap())
                .collect();
            if kids.len() >= n {
                return kids;
            }
            assert!(Instant::now() < deadline, "{pid} has children {kids:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let _ = self.child.wait();
        }
    }
}

fn installed(test: &str, programs: &[&str]) -> bool {
    let missing: Vec<&str> = programs
        .iter()
        .copied()
        .filter(|p| which(p).is_none())
        .collect();
    if !missing.is_empty() {
        eprintln!("SKIPPED {test}: {} not installed", missing.join(", "));
        return false;
    }
    true
}

/// nginx's configuration: two workers, `listen 0.0.0.0:PORT reuseport` (the master
/// opens one listening socket per worker), everything it writes under `dir`.
fn nginx_conf(dir: &Path, port: u16) -> String {
    let d = dir.display();
    format!(
        "worker_processes 2;\n\
         daemon off;\n\
         master_process on;\n\
         pid {d}/nginx.pid;\n\
         error_log {d}/error.log;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n\
           access_log off;\n\
           client_body_temp_path {d}/body;\n\
           proxy_temp_path {d}/proxy;\n\
           fastcgi_temp_path {d}/fastcgi;\n\
           uwsgi_temp_path {d}/uwsgi;\n\
           scgi_temp_path {d}/scgi;\n\
           server {{ listen 0.0.0.0:{port} reuseport; location / {{ return 200 \"ok\\n\"; }} }}\n\
         }}\n"
    )
}

fn start_nginx(ns: &Netns, dir: &Path, port: u16) -> Program {
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, nginx_conf(dir, port)).unwrap();
    // Its workers run as nobody: the temp directories it makes there are theirs.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (c, p) = (conf.display().to_string(), dir.display().to_string());
    Program::start(ns, port, &["nginx", "-e", "stderr", "-p", &p, "-c", &c])
}

/// Ten clients connect to nginx and close; nginx's workers accept them.
const NGINX_CLIENTS: usize = 10;

#[test]
fn nginx_workers_accept_from_listeners_made_after_the_start() {
    if !require_root("nginx_workers_accept_from_listeners_made_after_the_start")
        || !installed(
            "nginx_workers_accept_from_listeners_made_after_the_start",
            &["nginx"],
        )
    {
        return;
    }
    retry_on_kernel_skips("nginx-after", |last| nginx_once(last, false));
}

#[test]
fn nginx_workers_accept_from_listeners_made_before_the_start() {
    if !require_root("nginx_workers_accept_from_listeners_made_before_the_start")
        || !installed(
            "nginx_workers_accept_from_listeners_made_before_the_start",
            &["nginx"],
        )
    {
        return;
    }
    retry_on_kernel_skips("nginx-before", |last| nginx_once(last, true));
}

fn nginx_once(last: bool, before: bool) -> Option<u64> {
    let ns = Netns::new(if before { "nginx-b" } else { "nginx-a" });
    let dir = TempDir::new(if before { "nginx-b" } else { "nginx-a" });
    let port = free_port();
    let mut early = before.then(|| start_nginx(&ns, &dir.0, port));
    let (lines, (master, workers)) = traced(port, &["--json"], |_| {
        let nginx = early
            .take()
            .unwrap_or_else(|| start_nginx(&ns, &dir.0, port));
        let workers = nginx.children(2);
        run_client(
            Some(&ns),
            "127.0.0.1",
            port,
            &["--count", &NGINX_CLIENTS.to_string()],
        );
        settle(Some(&ns), port);
        std::thread::sleep(Duration::from_millis(300));
        let master = nginx.pid();
        // Its listeners close: their records come out while the tracer runs.
        nginx.stop();
        (master, workers)
    });
    if !last && skipped_of(&lines) > 0 {
        return Some(skipped_of(&lines));
    }
    let all = conns(&lines);
    let ids = by_id(&all);
    let srv = established_servers(&all);
    assert_eq!(srv.len(), NGINX_CLIENTS, "{all:#?}");
    for c in &srv {
        assert_eq!(c["comm"], "nginx", "{c}");
        assert!(accepted(c), "{c}");
        // Accepted by a worker (the caller of accept4()), not by the master that
        // listened.
        let pid = c["pid"].as_u64().unwrap();
        assert!(workers.contains(&pid), "{c}: workers {workers:?}");
        assert_eq!(c["pid_source"], "syscall", "{c}");
        assert_eq!(c["saddr"], "127.0.0.1", "{c}");
        let client = client_peer_of(&ids, c);
        assert_eq!(client["comm"], "tcp-trace-peer", "{client}");
        assert_eq!(client["connect"]["ret"], 0, "{client}");
    }
    let listeners = listeners_on(&all, port);
    // One listening socket per worker (`reuseport`), all made by the master.
    assert_eq!(listeners.len(), 2, "{listeners:#?}");
    for l in &listeners {
        if before {
            // Named from the socket table: a process holding the socket (the master
            // and its workers all do).
            let pid = l["pid"].as_u64().unwrap_or_else(|| panic!("no owner: {l}"));
            assert!(pid == master || workers.contains(&pid), "{l}");
            assert_eq!(l["pid_source"], "snapshot", "{l}");
        } else {
            assert_eq!(l["pid"], master, "{l}");
        }
    }
    let linked: Vec<&Value> = srv
        .iter()
        .copied()
        .filter(|c| !c["listener_id"].is_null())
        .collect();
    if before {
        // The listeners have no record until they close (after their children): the
        // children are linked to none.
        assert!(linked.is_empty(), "{linked:#?}");
    } else {
        // Each child on one of the two, and each listener counts its own.
        assert_eq!(linked.len(), NGINX_CLIENTS, "{srv:#?}");
        let mut total = 0;
        for l in &listeners {
            let n = linked
                .iter()
                .filter(|c| c["listener_id"] == l["id"])
                .count() as u64;
            assert_eq!(l["listener"]["children"], n, "{l}");
            assert_eq!(l["listener"]["accepted"], n, "{l}");
            total += n;
        }
        assert_eq!(total as usize, NGINX_CLIENTS);
    }
    None
}

const REDIS_CLIENTS: usize = 5;

/// redis-server, started before the tracer, and `redis-cli ping` clients (or
/// tcp-trace-peer's where redis-cli is missing): each pair of ends, the accept() in
/// redis-server, the connect() in the client.
#[test]
fn redis_server_running_before_the_start_and_its_clients() {
    let test = "redis_server_running_before_the_start_and_its_clients";
    if !require_root(test) || !installed(test, &["redis-server"]) {
        return;
    }
    retry_on_kernel_skips("redis", redis_once);
}

fn redis_once(last: bool) -> Option<u64> {
    let ns = Netns::new("redis");
    let port = free_port();
    let ps = port.to_string();
    let redis = Program::start(
        &ns,
        port,
        &[
            "redis-server",
            "--port",
            &ps,
            "--bind",
            "0.0.0.0",
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
            "--dir",
            "/tmp",
        ],
    );
    let cli = which("redis-cli").is_some();
    let (lines, ()) = traced(port, &["--json"], |_| {
        for _ in 0..REDIS_CLIENTS {
            if cli {
                let out = in_netns(Some(&ns), "redis-cli", &["-p", &ps, "ping"])
                    .output()
                    .expect("redis-cli");
                assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "PONG");
            } else {
                run_client(Some(&ns), "127.0.0.1", port, &["--send", "14"]);
            }
        }
        settle(Some(&ns), port);
    });
    let pid = redis.pid();
    redis.stop();
    if !last && skipped_of(&lines) > 0 {
        return Some(skipped_of(&lines));
    }
    let all = conns(&lines);
    let ids = by_id(&all);
    let srv = established_servers(&all);
    assert_eq!(srv.len(), REDIS_CLIENTS, "{all:#?}");
    let mut ports = HashSet::new();
    for c in &srv {
        assert_eq!(c["comm"], "redis-server", "{c}");
        assert_eq!(c["pid"], pid, "{c}");
        assert!(accepted(c), "{c}");
        assert_eq!(c["outcome"], "closed", "{c}");
        let client = client_peer_of(&ids, c);
        let comm = if cli { "redis-cli" } else { "tcp-trace-peer" };
        assert_eq!(client["comm"], comm, "{client}");
        // redis-cli connects non-blocking.
        let ret = client["connect"]["ret"]
            .as_i64()
            .unwrap_or_else(|| panic!("{client}"));
        assert!(ret == 0 || (cli && ret == -115), "{client}");
        assert_eq!(client["established"], true, "{client}");
        assert!(ports.insert(client["sport"].clone()), "{client}");
    }
    None
}
