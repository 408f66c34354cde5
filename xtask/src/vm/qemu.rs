//! Booting a guest: `qemu-system-x86_64` with the serial console on a pipe, every line
//! logged, a deadline, and the guest's `TCP_TRACE_VM_RESULT` line picked out.

use std::{
    fs,
    io::{BufRead, BufReader, Read, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use crate::cmd;

pub const RESULT_MARKER: &str = "TCP_TRACE_VM_RESULT ";
const BOOTED_MARKER: &str = "TCP_TRACE_VM_BOOTED ";

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Accel {
    /// Software emulation: slow, works everywhere.
    Tcg,
    /// KVM (`-cpu host`); fails when /dev/kvm is missing.
    Kvm,
    /// KVM if the guest reaches /init within 60 s with it, else TCG.
    Auto,
}

pub struct Boot<'a> {
    pub vmlinuz: &'a Path,
    pub initrd: &'a Path,
    pub log: &'a Path,
    pub timeout: Duration,
    /// Echo every console line (else only test progress).
    pub verbose: bool,
    /// Prefix of echoed lines.
    pub tag: &'a str,
}

pub struct Outcome {
    /// The JSON after the result marker.
    pub result: Option<String>,
    pub timed_out: bool,
    /// Kernel panics, BUGs and Oopses seen on the console.
    pub kernel_errors: Vec<String>,
    /// Kernel WARNINGs seen on the console (reported, not fatal).
    pub kernel_warnings: Vec<String>,
    /// Seconds from start to the guest's /init, and in total.
    pub boot_secs: Option<f64>,
    pub total_secs: f64,
    pub accel: &'static str,
}

enum Msg {
    Line(String),
    Eof,
}

/// Boots with `accel`; with `Auto`, tries KVM first and falls back to TCG when the guest
/// does not reach /init within 60 s (nested KVM hangs on some hosts).
pub fn boot(b: &Boot, accel: Accel) -> Result<Outcome> {
    match accel {
        Accel::Tcg => run(b, false, None),
        Accel::Kvm => run(b, true, None),
        Accel::Auto => {
            if !kvm_usable() {
                return run(b, false, None);
            }
            let o = run(b, true, Some(Duration::from_secs(60)))?;
            if o.boot_secs.is_some() {
                return Ok(o);
            }
            eprintln!(
                "{}: the guest did not reach /init under KVM; falling back to TCG",
                b.tag
            );
            run(b, false, None)
        }
    }
}

fn kvm_usable() -> bool {
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// One boot. `boot_deadline`: give up (outcome without `boot_secs`) when /init has not
/// started by then.
fn run(b: &Boot, kvm: bool, boot_deadline: Option<Duration>) -> Result<Outcome> {
    let mut qemu = Command::new("qemu-system-x86_64");
    if kvm {
        qemu.args(["-accel", "kvm", "-cpu", "host"]);
    } else {
        qemu.args(["-accel", "tcg"]);
    }
    qemu.args([
        "-m",
        "1024",
        "-smp",
        "2",
        "-nographic",
        "-no-reboot",
        "-kernel",
    ])
    .arg(b.vmlinuz)
    .arg("-initrd")
    .arg(b.initrd)
    .args(["-append", "console=ttyS0 panic=-1 quiet"])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    cmd::echo(&qemu);
    let start = Instant::now();
    let mut child = qemu
        .spawn()
        .with_context(|| format!("failed to start `{}`", cmd::display(&qemu)))?;
    let (tx, rx) = mpsc::channel();
    let readers: Vec<Box<dyn Read + Send>> = vec![
        Box::new(child.stdout.take().expect("piped")),
        Box::new(child.stderr.take().expect("piped")),
    ];
    for r in readers {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut r = BufReader::new(r);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf);
                        let line = line.trim_end_matches(['\n', '\r']).to_owned();
                        if tx.send(Msg::Line(line)).is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = tx.send(Msg::Eof);
        });
    }
    drop(tx);

    let mut log =
        fs::File::create(b.log).with_context(|| format!("creating {}", b.log.display()))?;
    let mut o = Outcome {
        result: None,
        timed_out: false,
        kernel_errors: Vec::new(),
        kernel_warnings: Vec::new(),
        boot_secs: None,
        total_secs: 0.0,
        accel: if kvm { "kvm" } else { "tcg" },
    };
    let mut eofs = 0;
    while eofs < 2 {
        let limit = match (boot_deadline, o.boot_secs) {
            (Some(d), None) => d.min(b.timeout),
            _ => b.timeout,
        };
        let left = limit.saturating_sub(start.elapsed());
        match rx.recv_timeout(left) {
            Ok(Msg::Line(line)) => {
                writeln!(log, "{line}")?;
                observe(b, &mut o, &line, start);
            }
            Ok(Msg::Eof) => eofs += 1,
            Err(_) => {
                // Deadline: our own child, killed by its handle.
                let _ = child.kill();
                o.timed_out = o.boot_secs.is_some() || boot_deadline.is_none();
                break;
            }
        }
    }
    let status = child.wait().context("waiting for qemu")?;
    o.total_secs = start.elapsed().as_secs_f64();
    writeln!(
        log,
        "# xtask: qemu {} after {:.1} s{}",
        status,
        o.total_secs,
        if o.timed_out {
            " (killed: timeout)"
        } else {
            ""
        }
    )?;
    Ok(o)
}

fn observe(b: &Boot, o: &mut Outcome, line: &str, start: Instant) {
    let shown = printable(line);
    if let Some(json) = line.split_once(RESULT_MARKER).map(|(_, j)| j.trim()) {
        o.result = Some(json.to_owned());
    } else if line.contains(BOOTED_MARKER) {
        o.boot_secs = Some(start.elapsed().as_secs_f64());
        eprintln!(
            "{}: guest /init started after {:.1} s",
            b.tag,
            start.elapsed().as_secs_f64()
        );
    } else if ["Kernel panic", "BUG:", "Oops:", "general protection fault"]
        .iter()
        .any(|m| line.contains(m))
    {
        o.kernel_errors.push(shown.clone());
    } else if line.contains("WARNING:") && line.contains("at ") {
        o.kernel_warnings.push(shown.clone());
    }
    let progress = line.starts_with("test ")
        || line.starts_with("TCP_TRACE_VM_TEST_")
        || line.starts_with("TCP_TRACE_VM_ERROR")
        || line.starts_with("TCP_TRACE_VM_INFO");
    if b.verbose || progress {
        eprintln!("[{}] {shown}", b.tag);
    }
}

/// Control characters escaped: the console carries whatever the guest printed.
pub fn printable(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() && c != '\t' {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Each failed test's own output in a guest's console log (libtest's `---- name stdout
/// ----` sections, up to the next section or the `failures:` list), its first `head`
/// and last `tail` lines (a panic message may be long: its start says what failed, its
/// end where): CI shows the end of its output, where the guest's streamed lines are
/// long gone.
pub fn failure_sections(text: &str, head: usize, tail: usize) -> Vec<Vec<String>> {
    let mut sections: Vec<Vec<String>> = Vec::new();
    let mut current: Option<Vec<String>> = None;
    for raw in text.lines() {
        let l = raw.trim_end_matches('\r');
        let starts = l.starts_with("---- ") && l.ends_with(" ----");
        let ends = l == "failures:" || l.starts_with("test result:");
        if (starts || ends)
            && let Some(s) = current.take()
        {
            sections.push(s);
        }
        if starts {
            current = Some(vec![printable(l)]);
        } else if let Some(s) = current.as_mut() {
            s.push(printable(l));
        }
    }
    sections.extend(current);
    for s in &mut sections {
        // The section's title line, then its body.
        if s.len() > 1 + head + tail {
            let left_out = s.len() - 1 - head - tail;
            s.splice(
                1 + head..1 + head + left_out,
                [format!("[{left_out} lines left out]")],
            );
        }
    }
    sections
}

/// The last `n` lines of the log, for a failure report.
pub fn tail(log: &PathBuf, n: usize) -> Vec<String> {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| printable(l))
        .collect()
}
