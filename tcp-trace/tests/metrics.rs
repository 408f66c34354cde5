//! Privileged: `--metrics` scraped by a real Prometheus (Debian's `prometheus`, its own
//! config and data directory in a temporary folder, loopback only, scraping every
//! second). Known traffic — N connections that succeed, M connects refused by a closed
//! port — must show in Prometheus' query API as exactly those counts per role and
//! outcome.
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const N: usize = 12;
const M: usize = 5;

/// `GET path` on 127.0.0.1:port over HTTP/1.0 (so that the answer is neither chunked
/// nor kept alive): (status, body).
fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_string()))
}

/// Percent-encoding of a query parameter (everything but unreserved characters).
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A Prometheus server of our own. Killed, and its directory removed, on drop.
struct Prometheus {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Prometheus {
    /// Starts Prometheus scraping 127.0.0.1:`target`/metrics every second and waits
    /// until it is ready.
    fn start(target: u16) -> Prometheus {
        let which = Command::new("prometheus").arg("--version").output();
        assert!(
            which.is_ok_and(|o| o.status.success()),
            "the `prometheus` binary is missing: `cargo xtask setup` installs Debian's package"
        );
        let dir = fresh_dir(&format!("prometheus-{target}"));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: tcp-trace\n    static_configs:\n      - targets: ['127.0.0.1:{target}']\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn prometheus");
        let mut p = Prometheus { child, dir, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((200, _)) = http_get(port, "/-/ready") {
                return p;
            }
            if let Ok(Some(st)) = p.child.try_wait() {
                panic!("prometheus exited ({st}):\n{}", p.log());
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready within 30 s:\n{}",
                p.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// An instant query: the result vector as (labels, value).
    fn query(&self, q: &str) -> Vec<(Value, f64)> {
        let (status, body) =
            http_get(self.port, &format!("/api/v1/query?query={}", urlencode(q))).unwrap();
        let v: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("query {q}: HTTP {status}, not JSON ({e}): {body}"));
        assert_eq!(v["status"], "success", "query {q}: {v}");
        v["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let val = r["value"][1].as_str().unwrap().parse::<f64>().unwrap();
                (r["metric"].clone(), val)
            })
            .collect()
    }

    /// The single value of `q`, or None when the result is empty.
    fn scalar(&self, q: &str) -> Option<f64> {
        let r = self.query(q);
        assert!(r.len() <= 1, "{q}: {r:?}");
        r.first().map(|(_, v)| *v)
    }

    /// Waits (up to 20 s) until `q` has the value `want`; panics with the last value.
    fn wait_for(&self, q: &str, want: f64) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let got = self.scalar(q);
            if got == Some(want) {
                return;
            }
            assert!(Instant::now() < deadline, "{q}: {got:?}, expected {want}");
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn prometheus_scrapes_connection_counts_per_outcome() {
    if !require_root("prometheus_scrapes_connection_counts_per_outcome") {
        return;
    }
    let port = free_port();
    let closed = loop {
        let p = free_port();
        if p != port {
            break p;
        }
    };
    let mport = loop {
        let p = free_port();
        if p != port && p != closed {
            break p;
        }
    };
    let (ps, cs) = (port.to_string(), closed.to_string());
    let maddr = format!("127.0.0.1:{mport}");
    // Headless; only the test's two ports are traced (not the scrapes).
    let mut t = Tracer::on_port(port, &["--metrics", &maddr, "--view", "none", "-P", &cs]);
    assert!(
        t.startup
            .iter()
            .any(|l| l == &format!("tcp-trace: metrics at http://{maddr}/metrics")),
        "{:?}",
        t.startup
    );
    let stdout = t.stream_stdout();
    let prom = Prometheus::start(mport);
    prom.wait_for(
        &format!("up{{job=\"tcp-trace\",instance=\"{maddr}\"}}"),
        1.0,
    );

    let n = N.to_string();
    let server = start_server(
        None,
        "127.0.0.1",
        port,
        &["--accepts", &n, "--close-delay-ms", "0"],
    );
    let mut client = start_client(None, "127.0.0.1", port, &["--count", &n]);
    for _ in 0..N {
        client.connect_ok();
    }
    all_exit_ok([client, server]);
    run_refused_client(None, "127.0.0.1", closed, M);

    let c = |labels: &str| format!("sum(tcp_trace_connections_total{{{labels}}})");
    prom.wait_for(
        &c(&format!("role=\"client\",outcome=\"closed\",port=\"{ps}\"")),
        N as f64,
    );
    prom.wait_for(
        &c(&format!("role=\"server\",outcome=\"closed\",port=\"{ps}\"")),
        N as f64,
    );
    // The server's listening socket closed when it exited.
    prom.wait_for(
        &c(&format!(
            "role=\"listener\",outcome=\"closed\",port=\"{ps}\""
        )),
        1.0,
    );
    prom.wait_for(
        &c(&format!(
            "role=\"client\",outcome=\"refused\",port=\"{cs}\""
        )),
        M as f64,
    );
    // Nothing else: every series of the family, by role and outcome.
    let all = prom.query("sum by (role, outcome, port) (tcp_trace_connections_total)");
    let mut got: Vec<String> = all
        .iter()
        .map(|(l, v)| {
            format!(
                "{} {} {} {v}",
                l["role"].as_str().unwrap_or(""),
                l["outcome"].as_str().unwrap_or(""),
                l["port"].as_str().unwrap_or("")
            )
        })
        .collect();
    got.sort();
    let mut want = vec![
        format!("client closed {ps} {N}"),
        format!("server closed {ps} {N}"),
        format!("listener closed {ps} 1"),
        format!("client refused {cs} {M}"),
    ];
    want.sort();
    assert_eq!(got, want);

    // Histograms: one handshake per end, one connect per client (refused ones too),
    // one accept-queue wait per server connection.
    prom.wait_for(
        &format!("sum(tcp_trace_handshake_duration_seconds_count{{port=\"{ps}\"}})"),
        2.0 * N as f64,
    );
    prom.wait_for(
        &format!("sum(tcp_trace_connect_duration_seconds_count{{port=\"{ps}\"}})"),
        N as f64,
    );
    prom.wait_for(
        &format!("sum(tcp_trace_accept_queue_wait_seconds_count{{port=\"{ps}\"}})"),
        N as f64,
    );
    // A loopback handshake takes well under a second: every observation is in a
    // finite bucket at or below 1.6384 s.
    prom.wait_for(
        &format!("sum(tcp_trace_handshake_duration_seconds_bucket{{port=\"{ps}\",le=\"1.6384\"}})"),
        2.0 * N as f64,
    );
    // The clients closed first: each entered TIME_WAIT. Each refused connect received
    // one reset.
    prom.wait_for(
        &format!("sum(tcp_trace_time_wait_entries_total{{role=\"client\",port=\"{ps}\"}})"),
        N as f64,
    );
    prom.wait_for(
        &format!("sum(tcp_trace_resets_total{{direction=\"received\",port=\"{cs}\"}})"),
        M as f64,
    );
    prom.wait_for("tcp_trace_lost_events_total", 0.0);
    prom.wait_for("tcp_trace_skipped_hook_runs_total", 0.0);
    prom.wait_for("count(tcp_trace_unplaced_events_total)", 4.0);

    // --view none: nothing on stdout; the summary on stderr at exit.
    let (lines, code, err) = t.stop_with_stderr();
    assert_eq!(code, 0);
    assert!(lines.is_empty(), "stdout with --view none: {lines:?}");
    assert!(stdout.try_recv().is_err());
    assert!(
        err.iter().any(|l| l.starts_with("connections: ")),
        "no summary on stderr: {err:?}"
    );
}

/// A taken address: a clear message and exit code 1, before any hook is loaded.
#[test]
fn metrics_address_in_use_exits_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(TRACER)
        .args(["--metrics", &addr, "--view", "none"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("tcp-trace: --metrics {addr}: cannot listen: ")),
        "{err}"
    );
    assert!(!err.contains("hooks attached"), "{err}");
}
