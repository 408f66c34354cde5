//! The lab's network: two network namespaces (client, server) joined by a veth pair,
//! removed on drop, on error and on Ctrl-C / SIGTERM.
use std::fs::File;
use std::io::Write;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::sync::{Mutex, Once};

use anyhow::{Context, bail};

/// Namespaces alive now, deleted by the signal thread if the run is interrupted.
static LIVE: Mutex<Vec<String>> = Mutex::new(Vec::new());
static SIGNALS: Once = Once::new();
static SEQ: AtomicU32 = AtomicU32::new(0);

/// Write end of the self-pipe the signal handler writes to.
static SIGNAL_PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    let b = sig as u8;
    let fd = SIGNAL_PIPE.load(Ordering::Relaxed);
    // SAFETY: write(2) is async-signal-safe; `b` lives for the call.
    unsafe { libc::write(fd, (&b as *const u8).cast(), 1) };
}

/// Installs SIGINT/SIGTERM handlers (whichever thread receives the signal) that wake
/// a thread which deletes the lab's namespaces and exits with 130.
pub fn install_signal_cleanup() {
    SIGNALS.call_once(|| {
        let mut fds = [0; 2];
        // SAFETY: fds is a valid 2-element out-array.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            eprintln!("tcp-trace lab: warning: no Ctrl-C cleanup (pipe2 failed)");
            return;
        }
        SIGNAL_PIPE.store(fds[1], Ordering::Relaxed);
        let rd = fds[0];
        std::thread::spawn(move || {
            let mut b = 0u8;
            // SAFETY: rd is our pipe's read end; b is a 1-byte buffer.
            let n = unsafe { libc::read(rd, (&mut b as *mut u8).cast(), 1) };
            if n != 1 {
                return;
            }
            let names: Vec<String> = LIVE.lock().map(|v| v.clone()).unwrap_or_default();
            for n in &names {
                let _ = quiet("ip", &["netns", "del", n]);
            }
            eprintln!(
                "tcp-trace lab: interrupted (signal {b}), removed {} network namespaces",
                names.len()
            );
            std::process::exit(130);
        });
        for sig in [libc::SIGINT, libc::SIGTERM] {
            // SAFETY: a zeroed sigaction with a valid handler and an empty mask.
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_signal as *const () as usize;
                libc::sigemptyset(&mut sa.sa_mask);
                sa.sa_flags = libc::SA_RESTART;
                libc::sigaction(sig, &sa, std::ptr::null_mut());
            }
        }
    });
}

fn quiet(cmd: &str, args: &[&str]) -> std::io::Result<std::process::ExitStatus> {
    Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
}

/// Runs a command, failing with its stderr.
pub fn sh(cmd: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {cmd}"))?;
    if !out.status.success() {
        bail!(
            "`{cmd} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One scenario's network. Dropping it deletes both namespaces (and with them the
/// veth pair, the addresses, the sysctls and the nftables rules set inside).
pub struct LabNet {
    pub client_ns: String,
    pub server_ns: String,
    pub client_addr: IpAddr,
    pub server_addr: IpAddr,
    pub ipv6: bool,
}

impl LabNet {
    /// Creates the namespaces and the link. `tag` goes into the names.
    pub fn new(ipv6: bool) -> anyhow::Result<LabNet> {
        let pid = std::process::id();
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        // Distinct subnets per process and per scenario, so that concurrent runs (the
        // IPv4 and IPv6 tests) never see each other's traffic.
        let b = 64 + (pid % 128) as u8;
        let c = (seq % 250) as u8 + 1;
        let (client_addr, server_addr, plen): (IpAddr, IpAddr, &str) = if ipv6 {
            (
                format!("fd00:203:{b:x}:{c:x}::1").parse()?,
                format!("fd00:203:{b:x}:{c:x}::2").parse()?,
                "64",
            )
        } else {
            (
                format!("10.{b}.{c}.1").parse()?,
                format!("10.{b}.{c}.2").parse()?,
                "24",
            )
        };
        let net = LabNet {
            client_ns: format!("ttlab-{pid}-{seq}-c"),
            server_ns: format!("ttlab-{pid}-{seq}-s"),
            client_addr,
            server_addr,
            ipv6,
        };
        for ns in [&net.client_ns, &net.server_ns] {
            let _ = quiet("ip", &["netns", "del", ns]);
            LIVE.lock().map(|mut v| v.push(ns.clone())).ok();
            sh("ip", &["netns", "add", ns])?;
            sh("ip", &["-n", ns, "link", "set", "lo", "up"])?;
        }
        sh(
            "ip",
            &[
                "-n",
                &net.client_ns,
                "link",
                "add",
                "lab0",
                "type",
                "veth",
                "peer",
                "name",
                "lab0",
                "netns",
                &net.server_ns,
            ],
        )?;
        for (ns, a) in [(&net.client_ns, client_addr), (&net.server_ns, server_addr)] {
            let cidr = format!("{a}/{plen}");
            let mut args = vec!["-n", ns.as_str(), "addr", "add", &cidr, "dev", "lab0"];
            if ipv6 {
                args.push("nodad");
            }
            sh("ip", &args)?;
            sh("ip", &["-n", ns, "link", "set", "lab0", "up"])?;
        }
        net.wait_ready()?;
        Ok(net)
    }

    /// Waits until both ends have carrier and no tentative address, so that the
    /// first SYN is not dropped (which would add a 1 s SYN retransmit).
    fn wait_ready(&self) -> anyhow::Result<()> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let mut ready = true;
            for ns in [&self.client_ns, &self.server_ns] {
                let link = sh("ip", &["-n", ns, "-o", "link", "show", "lab0"])?;
                let tentative = sh(
                    "ip",
                    &["-n", ns, "-o", "addr", "show", "dev", "lab0", "tentative"],
                )?;
                ready &= link.contains("LOWER_UP") && tentative.trim().is_empty();
            }
            if ready {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                bail!("the veth pair did not come up within 5 s");
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    pub fn sysctl(&self, ns: &str, key_value: &str) -> anyhow::Result<()> {
        sh("ip", &["netns", "exec", ns, "sysctl", "-qw", key_value]).map(|_| ())
    }

    /// Reads a sysctl back (what the kernel has, not what we meant to set).
    pub fn read_sysctl(&self, ns: &str, key: &str) -> anyhow::Result<String> {
        Ok(sh("ip", &["netns", "exec", ns, "sysctl", "-n", key])?
            .trim()
            .to_string())
    }

    /// Loads an nftables ruleset inside `ns`.
    pub fn nft(&self, ns: &str, ruleset: &str) -> anyhow::Result<()> {
        let mut c = Command::new("ip")
            .args(["netns", "exec", ns, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run nft")?;
        c.stdin
            .take()
            .context("nft stdin")?
            .write_all(ruleset.as_bytes())?;
        let out = c.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "nft failed in {ns}: {}\n{ruleset}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// Removes the lab's nftables table (`inet ttlab`) from `ns`: lifts its drops.
    pub fn nft_delete_table(&self, ns: &str) -> anyhow::Result<()> {
        sh(
            "ip",
            &[
                "netns", "exec", ns, "nft", "delete", "table", "inet", "ttlab",
            ],
        )
        .map(drop)
    }

    /// Runs `f` in a new thread that has joined network namespace `ns`.
    pub fn spawn_in<T: Send + 'static>(
        &self,
        ns: &str,
        f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
    ) -> std::thread::JoinHandle<anyhow::Result<T>> {
        let path = format!("/run/netns/{ns}");
        std::thread::spawn(move || {
            enter_netns(&path)?;
            f()
        })
    }
}

/// Moves the calling thread into the network namespace bound at `path`.
pub fn enter_netns(path: &str) -> anyhow::Result<()> {
    let f = File::open(path).with_context(|| format!("cannot open {path}"))?;
    // SAFETY: valid fd of a namespace file; affects only the calling thread.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if r != 0 {
        bail!("setns({path}): {}", std::io::Error::last_os_error());
    }
    Ok(())
}

impl Drop for LabNet {
    fn drop(&mut self) {
        for ns in [&self.client_ns, &self.server_ns] {
            let _ = quiet("ip", &["netns", "del", ns]);
            if let Ok(mut v) = LIVE.lock() {
                v.retain(|n| n != ns);
            }
        }
    }
}

/// Joins a scenario thread, turning a panic into an error.
pub fn join<T>(h: std::thread::JoinHandle<anyhow::Result<T>>, what: &str) -> anyhow::Result<T> {
    match h.join() {
        Ok(r) => r.with_context(|| what.to_string()),
        Err(_) => bail!("{what}: thread panicked"),
    }
}
