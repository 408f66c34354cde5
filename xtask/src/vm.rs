//! `cargo xtask vm-test`: the privileged integration tests on other kernels, each booted
//! under QEMU from a Debian kernel package (docs/vm-tests.md; docs/kernel-facts.md, "The kernels a test can boot here").
//!
//! Per kernel: `apt-get download` (cached in target/vm/debs), `dpkg-deb -x`, an initramfs
//! (busybox, iproute2's ip and ss, nft, setpriv, bpftool, their libraries, the modules the tests
//! need, tcp-trace, tcp-trace-peer and the test binaries at their host paths, and
//! xtask/vm/init as /init), one boot with the serial console logged to
//! target/vm/<release>.log, and one `PASS <release>` or `FAIL <release>` line from the
//! guest's `TCP_TRACE_VM_RESULT` line.

mod initramfs;
mod json;
mod kernel;
mod qemu;

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};

use crate::{
    cmd::{self, workspace_root},
    setup, target_dir,
};
use initramfs::Tree;
use json::Fields as _;
use kernel::{Available, Kernel, LINES, PRIVATE, Source};
use qemu::{Accel, Boot, Outcome};

/// Debian packages vm-test needs besides setup's (iproute2, nftables, util-linux).
/// (zstd: for kernels whose modules are `.ko.zst`.)
const PACKAGES: &[&str] = &["qemu-system-x86", "busybox-static", "xz-utils", "zstd"];

/// The integration tests run by default: those whose needs the guest has (container
/// needs podman, oracle bpftrace).
const DEFAULT_TESTS: &[&str] = &[
    "live",
    "connections",
    "servers",
    "programs",
    "explain",
    "designs",
    "replay",
    "lab",
];

/// Programs the tests run inside the guest (from the host's packages).
const PROGRAMS: &[&str] = &["ip", "ss", "nft", "setpriv", "bpftool"];

/// Real server programs and clients the `programs` tests run (from the host's packages,
/// which setup installs): in the guest when the host has them; the tests say SKIPPED
/// where one is missing.
const OPTIONAL_PROGRAMS: &[&str] = &["nginx", "redis-server", "redis-cli"];

const INIT: &str = include_str!("../vm/init");

/// Tracepoints whose `format` files the guest prints (`TCP_TRACE_VM_FORMAT <event> <line>`)
/// and the host keeps in target/vm/<release>/formats/<category>/<name>.format.
const FORMATS: &[&str] = &[
    "sock/inet_sock_set_state",
    "tcp/tcp_retransmit_synack",
    "tcp/tcp_retransmit_skb",
    "tcp/tcp_send_reset",
    "tcp/tcp_receive_reset",
    "syscalls/sys_enter_connect",
    "syscalls/sys_exit_connect",
    "syscalls/sys_enter_accept4",
    "syscalls/sys_exit_accept4",
];

const FORMAT_MARKER: &str = "TCP_TRACE_VM_FORMAT ";
/// A file the guest's tests left (`TCP_TRACE_VM_FILE <name> <hex>`, several lines).
const FILE_MARKER: &str = "TCP_TRACE_VM_FILE ";

#[derive(Debug, clap::Args)]
pub struct VmArgs {
    /// Kernel to boot: a line (6.1, 6.12, 6.12-rt, 5.10, unstable: its newest package),
    /// a release (6.1.0-56-cloud-amd64) or a Debian package name. Repeatable. Default: 6.1.
    #[arg(long = "kernel", value_name = "VERSION")]
    kernels: Vec<String>,
    /// Every kernel line: 6.1 cloud, 6.12 cloud, 6.12 PREEMPT_RT (bookworm), 5.10 cloud
    /// (bullseye), unstable's newest cloud kernel.
    #[arg(long)]
    all: bool,
    /// List the kernel packages reachable for each line, then exit.
    #[arg(long)]
    list: bool,
    /// Only this test binary (tcp-trace/tests/NAME.rs). Repeatable. Default: live,
    /// connections, servers, designs, replay, lab.
    #[arg(long = "test", value_name = "NAME")]
    tests: Vec<String>,
    /// Seconds a guest may run (boot and every test) before it counts as hung.
    #[arg(long, default_value_t = 600, value_name = "SECONDS")]
    timeout: u64,
    /// QEMU accelerator. Nested KVM hangs on some hosts, hence TCG by default.
    #[arg(long, value_enum, default_value_t = Accel::Tcg)]
    accel: Accel,
    /// Echo the whole serial console, not only the test lines.
    #[arg(long, short)]
    verbose: bool,
    /// Arguments for every test binary (after `--`), e.g. a test-name filter.
    #[arg(last = true)]
    args: Vec<String>,
}

pub fn run(args: &VmArgs) -> Result<()> {
    let root = workspace_root()?;
    let vm_dir = target_dir(&root).join("vm");
    let debs = vm_dir.join("debs");
    fs::create_dir_all(&debs).with_context(|| format!("creating {}", debs.display()))?;

    let available = available_kernels(args, &vm_dir)?;
    if args.list {
        for line in LINES {
            let pkgs = line.packages(&available);
            println!(
                "{:8} {} ({}; apt: {}): {}",
                line.name,
                pkgs.last().copied().unwrap_or("none reachable"),
                line.about,
                line.source.name(),
                if pkgs.is_empty() {
                    "-".to_owned()
                } else {
                    pkgs.join(" ")
                }
            );
        }
        return Ok(());
    }
    let packages = chosen_packages(args, &available)?;

    setup::setup(true)?;
    ensure_packages()?;
    let build = build(&root, &args.tests)?;

    let mut failed = Vec::new();
    for package in &packages {
        let t0 = Instant::now();
        let source = available.get(package).copied().unwrap_or(Source::Host);
        let deb = kernel::fetch(package, source, &debs, &vm_dir)?;
        let kernel = kernel::unpack(package, &deb, &vm_dir.join("kernels"))?;
        let fetch_secs = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let initrd = vm_dir.join(&kernel.release).join("initrd.gz");
        initramfs(&kernel, &build, &args.args, &initrd)?;
        let initrd_secs = t1.elapsed().as_secs_f64();
        let log = vm_dir.join(format!("{}.log", kernel.release));
        let outcome = qemu::boot(
            &Boot {
                vmlinuz: &kernel.vmlinuz,
                initrd: &initrd,
                log: &log,
                timeout: Duration::from_secs(args.timeout),
                verbose: args.verbose,
                tag: &kernel.release,
            },
            args.accel,
        )?;
        let verdict = verdict(&kernel, &outcome);
        let formats = vm_dir.join(&kernel.release).join("formats");
        match save_formats(&log, &formats) {
            Ok(0) => {}
            Ok(n) => eprintln!(
                "{}: {n} tracepoint formats in {}",
                kernel.release,
                formats.display()
            ),
            Err(e) => eprintln!("{}: saving tracepoint formats: {e:#}", kernel.release),
        }
        let out = vm_dir.join(&kernel.release).join("out");
        match save_files(&log, &out) {
            Ok(0) => {}
            Ok(n) => eprintln!(
                "{}: {n} files from the guest in {}",
                kernel.release,
                out.display()
            ),
            Err(e) => eprintln!("{}: saving the guest's files: {e:#}", kernel.release),
        }
        eprintln!(
            "{} ({}): package and unpack {fetch_secs:.1} s, initramfs {initrd_secs:.1} s, guest {:.1} s ({}; /init after {}), log {}",
            kernel.release,
            kernel.package,
            outcome.total_secs,
            outcome.accel,
            outcome
                .boot_secs
                .map_or("never".to_owned(), |s| format!("{s:.1} s")),
            log.display()
        );
        for w in &outcome.kernel_warnings {
            eprintln!("{}: kernel warning: {w}", kernel.release);
        }
        if verdict.reasons.is_empty() {
            println!(
                "PASS {} ({}; {:.0} s)",
                kernel.release,
                verdict.counts,
                t0.elapsed().as_secs_f64()
            );
        } else {
            if verdict.show_tail {
                eprintln!("{}: last lines of {}:", kernel.release, log.display());
                for l in qemu::tail(&log, 30) {
                    eprintln!("  | {l}");
                }
            }
            // The failed tests' own output again, so that the end of the output (all
            // CI shows) says why, not only which.
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            for section in qemu::failure_sections(&text, 30, 30) {
                for l in section {
                    eprintln!("{}: | {l}", kernel.release);
                }
            }
            for r in &verdict.reasons {
                eprintln!("{}: {r}", kernel.release);
            }
            println!(
                "FAIL {} ({}; {:.0} s; log {})",
                kernel.release,
                verdict.counts,
                t0.elapsed().as_secs_f64(),
                log.display()
            );
            failed.push(kernel.release.clone());
        }
    }
    if !failed.is_empty() {
        bail!(
            "vm-test failed on {} of {} kernels: {}",
            failed.len(),
            packages.len(),
            failed.join(", ")
        );
    }
    Ok(())
}

/// The `linux-image-*` packages apt knows; `apt-get update` once for each source that
/// lacks a wanted kernel (or, for --list, a line): a line's own source, every source for
/// a release or package name apt does not know. The private sources (bullseye, sid) are
/// updated first and write only under target/vm/apt; the host's `apt-get update` last.
fn available_kernels(args: &VmArgs, vm_dir: &Path) -> Result<Available> {
    let available = kernel::available(vm_dir)?;
    let mut stale: BTreeSet<Source> = BTreeSet::new();
    if args.list {
        stale.extend(
            LINES
                .iter()
                .filter(|l| l.packages(&available).is_empty())
                .map(|l| l.source),
        );
    } else {
        for s in specs(args) {
            if kernel::resolve(&s, &available).is_some() {
                continue;
            }
            match LINES.iter().find(|l| l.name == s) {
                Some(line) => {
                    stale.insert(line.source);
                }
                None => stale.extend(PRIVATE.iter().copied().chain([Source::Host])),
            }
        }
    }
    if stale.is_empty() {
        return Ok(available);
    }
    // Private sources first: a release they offer then needs no host update.
    for source in PRIVATE.iter().copied().filter(|s| stale.contains(s)) {
        eprintln!(
            "vm-test: updating the private {} package lists ({})",
            source.name(),
            vm_dir.join("apt").join(source.name()).display()
        );
        source.update(vm_dir)?;
    }
    let available = kernel::available(vm_dir)?;
    let host_needed = stale.contains(&Source::Host)
        && if args.list {
            LINES
                .iter()
                .any(|l| l.source == Source::Host && l.packages(&available).is_empty())
        } else {
            specs(args)
                .iter()
                .any(|s| kernel::resolve(s, &available).is_none())
        };
    if !host_needed {
        return Ok(available);
    }
    eprintln!("vm-test: apt does not know every kernel asked for; updating the package lists");
    Source::Host.update(vm_dir)?;
    kernel::available(vm_dir)
}

fn specs(args: &VmArgs) -> Vec<String> {
    let mut specs = args.kernels.clone();
    if args.all {
        specs.extend(LINES.iter().map(|l| l.name.to_owned()));
    }
    if specs.is_empty() {
        specs.push(LINES[0].name.to_owned());
    }
    specs
}

fn chosen_packages(args: &VmArgs, available: &Available) -> Result<Vec<String>> {
    let mut packages: Vec<String> = Vec::new();
    for spec in specs(args) {
        let package = kernel::resolve(&spec, available).ok_or_else(|| {
            anyhow!(
                "no kernel package for {spec:?} (lines: {}; `cargo xtask vm-test --list` shows what apt offers)",
                LINES.iter().map(|l| l.name).collect::<Vec<_>>().join(", ")
            )
        })?;
        if !packages.contains(&package) {
            packages.push(package);
        }
    }
    Ok(packages)
}

fn ensure_packages() -> Result<()> {
    let missing: Vec<&str> = PACKAGES.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !cmd::is_root()? {
        bail!(
            "vm-test needs {} ; as root: apt-get install -y --no-install-recommends {}",
            missing.join(" "),
            missing.join(" ")
        );
    }
    eprintln!("installing: packages {}", missing.join(" "));
    cmd::run(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing),
    )?;
    if let Some(p) = missing.iter().find(|p| !installed(p)) {
        bail!("apt-get install succeeded but {p} is still not installed");
    }
    Ok(())
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

/// What the release build of tcp-trace produced: the binaries and the test executables.
struct Build {
    /// The tcp-trace package directory (the tests' working directory).
    package_dir: PathBuf,
    bins: Vec<PathBuf>,
    /// (test target name, executable), sorted by name.
    tests: Vec<(String, PathBuf)>,
}

/// `cargo test --release -p tcp-trace --no-run --test NAME…`, reading the executables
/// from cargo's JSON messages.
fn build(root: &Path, only: &[String]) -> Result<Build> {
    let package_dir = root.join("tcp-trace");
    let manifest = package_dir.join("Cargo.toml");
    let names: Vec<String> = if only.is_empty() {
        DEFAULT_TESTS
            .iter()
            .filter(|n| package_dir.join(format!("tests/{n}.rs")).is_file())
            .map(|n| (*n).to_owned())
            .collect()
    } else {
        only.to_vec()
    };
    let mut cargo = Command::new("cargo");
    cargo.current_dir(root).args([
        "test",
        "--release",
        "-p",
        "tcp-trace",
        "--no-run",
        "--message-format=json-render-diagnostics",
    ]);
    for n in &names {
        cargo.args(["--test", n]);
    }
    cmd::echo(&cargo);
    let out = cargo
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("failed to start `{}`", cmd::display(&cargo)))?;
    if !out.status.success() {
        return Err(cmd::ChildFailed {
            command: cmd::display(&cargo),
            code: cmd::exit_code(out.status),
        }
        .into());
    }
    let mut bins = Vec::new();
    let mut tests = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = json::parse(line) else { continue };
        if msg.str("reason") != Some("compiler-artifact")
            || msg.str("manifest_path").map(Path::new) != Some(manifest.as_path())
        {
            continue;
        }
        let Some(exe) = msg.str("executable") else {
            continue;
        };
        let target = msg.get("target");
        let name = target.and_then(|t| t.str("name")).unwrap_or_default();
        let kinds: Vec<&str> = target
            .map(|t| t.array("kind").iter().filter_map(|k| k.as_str()).collect())
            .unwrap_or_default();
        let test_profile = msg
            .get("profile")
            .and_then(|p| p.get("test"))
            .is_some_and(|t| *t == json::Value::Bool(true));
        if kinds.contains(&"bin") && !test_profile {
            bins.push(PathBuf::from(exe));
        } else if kinds.contains(&"test") && names.iter().any(|n| n == name) {
            tests.push((name.to_owned(), PathBuf::from(exe)));
        }
    }
    tests.sort();
    for n in &names {
        if !tests.iter().any(|(t, _)| t == n) {
            bail!("cargo reported no executable for the integration test {n:?}");
        }
    }
    if tests.is_empty() {
        bail!("cargo built no integration test of tcp-trace");
    }
    for want in ["tcp-trace", "tcp-trace-peer"] {
        if !bins.iter().any(|b| b.file_name() == Some(want.as_ref())) {
            bail!("cargo did not report the {want} binary");
        }
    }
    Ok(Build {
        package_dir,
        bins,
        tests,
    })
}

/// Builds the guest's initramfs for `kernel` at `out`.
fn initramfs(kernel: &Kernel, build: &Build, test_args: &[String], out: &Path) -> Result<()> {
    let mut tree = Tree::new();
    for name in PROGRAMS {
        let path = cmd::which(name).ok_or_else(|| {
            anyhow!("{name} is not on PATH (setup installs iproute2, nftables, util-linux)")
        })?;
        tree.program(&path)?;
    }
    for name in OPTIONAL_PROGRAMS {
        match cmd::which(name) {
            Some(path) => {
                tree.program(&path)?;
            }
            None => eprintln!(
                "vm-test: note: {name} is not installed: the guest's `programs` tests skip it"
            ),
        }
    }
    let busybox = ["/usr/bin/busybox", "/bin/busybox"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| anyhow!("no busybox (package busybox-static)"))?;
    tree.busybox(&busybox)?;
    for bin in &build.bins {
        tree.program(bin)?;
    }
    let mut tests = String::new();
    for (name, exe) in &build.tests {
        let guest = tree.program(exe)?;
        tests.push_str(&format!("{name} {}\n", guest.display()));
    }
    // The replay tests read recordings from tests/fixtures at their host path.
    let test_dir = build.package_dir.join("tests");
    if test_dir.is_dir() {
        tree.host_tree(&test_dir)?;
    }

    let mut modules = String::new();
    let module_dir = format!("/lib/modules/{}", kernel.release);
    for m in kernel.needed_modules()? {
        let guest = format!("{module_dir}/{}.ko", m.name);
        tree.bytes(&guest, kernel::read_module(&m.path)?, 0o644)?;
        modules.push_str(&guest);
        modules.push('\n');
    }

    tree.bytes("/init", INIT.as_bytes().to_vec(), 0o755)?;
    tree.bytes("/etc/tcp-trace-vm/tests", tests.into_bytes(), 0o644)?;
    tree.bytes("/etc/tcp-trace-vm/modules", modules.into_bytes(), 0o644)?;
    tree.bytes(
        "/etc/tcp-trace-vm/formats",
        FORMATS
            .iter()
            .map(|f| format!("{f}\n"))
            .collect::<String>()
            .into_bytes(),
        0o644,
    )?;
    tree.bytes(
        "/etc/tcp-trace-vm/cwd",
        format!("{}\n", build.package_dir.display()).into_bytes(),
        0o644,
    )?;
    tree.bytes(
        "/etc/tcp-trace-vm/args",
        format!("{}\n", test_args.join(" ")).into_bytes(),
        0o644,
    )?;
    tree.bytes(
        "/etc/passwd",
        b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
            .to_vec(),
        0o644,
    )?;
    tree.bytes(
        "/etc/group",
        b"root:x:0:\nnogroup:x:65534:\n".to_vec(),
        0o644,
    )?;
    tree.symlink("/var/run", "../run")?;

    let dir = out.parent().expect("a directory");
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    tree.write_gz(out)
}

/// Writes the tracepoint formats the guest printed into `dir/<category>/<name>.format`;
/// returns how many.
fn save_formats(log: &Path, dir: &Path) -> Result<usize> {
    let text = fs::read_to_string(log).with_context(|| format!("reading {}", log.display()))?;
    let formats = formats_in(&text);
    if formats.is_empty() {
        return Ok(0);
    }
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    for (event, body) in &formats {
        let path = dir.join(format!("{event}.format"));
        fs::create_dir_all(path.parent().expect("a directory"))
            .with_context(|| format!("creating {}", dir.display()))?;
        fs::write(&path, body).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(formats.len())
}

/// Writes the files the guest printed (recordings its tests made) into `dir`.
fn save_files(log: &Path, dir: &Path) -> Result<usize> {
    let text = fs::read_to_string(log).with_context(|| format!("reading {}", log.display()))?;
    let files = files_in(&text)?;
    if files.is_empty() {
        return Ok(0);
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, bytes) in &files {
        let path = dir.join(name);
        fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(files.len())
}

/// The files in a console log: name → bytes (hex lines concatenated in order). Names
/// are plain file names; anything else is refused.
fn files_in(log: &str) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut hex = BTreeMap::<String, String>::new();
    for line in log.lines() {
        let line = line.trim_end_matches('\r');
        let Some((_, rest)) = line.split_once(FILE_MARKER) else {
            continue;
        };
        let Some((name, body)) = rest.split_once(' ') else {
            continue;
        };
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            anyhow::bail!("the guest named a file {name:?}");
        }
        hex.entry(name.to_owned())
            .or_default()
            .push_str(body.trim());
    }
    hex.into_iter()
        .map(|(name, h)| {
            if h.len() % 2 != 0 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                anyhow::bail!("{name}: the guest's hex is damaged");
            }
            let bytes = (0..h.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&h[i..i + 2], 16).expect("hex digits"))
                .collect();
            Ok((name, bytes))
        })
        .collect()
}

/// The `format` files in a console log, by event (`sock/inet_sock_set_state`).
fn formats_in(log: &str) -> BTreeMap<String, String> {
    let mut formats = BTreeMap::<String, String>::new();
    for line in log.lines() {
        let line = line.trim_end_matches('\r');
        let Some((_, rest)) = line.split_once(FORMAT_MARKER) else {
            continue;
        };
        let (event, body) = rest.split_once(' ').unwrap_or((rest, ""));
        if FORMATS.contains(&event) {
            let f = formats.entry(event.to_owned()).or_default();
            f.push_str(body);
            f.push('\n');
        }
    }
    formats
}

struct Verdict {
    /// Why it failed; empty for a pass.
    reasons: Vec<String>,
    /// "N passed, M failed, K ignored" or "no result".
    counts: String,
    /// Print the end of the console log (the result line never came).
    show_tail: bool,
}

fn verdict(kernel: &Kernel, o: &Outcome) -> Verdict {
    let mut reasons = Vec::new();
    let mut show_tail = false;
    if o.timed_out {
        reasons.push("timeout: the guest was killed".to_owned());
    }
    for e in &o.kernel_errors {
        reasons.push(format!("kernel: {e}"));
    }
    let Some(text) = &o.result else {
        if !o.timed_out && o.boot_secs.is_none() {
            reasons.push("the guest never reached /init".to_owned());
        } else if !o.timed_out {
            reasons.push(
                "the guest stopped without a result line (crash or panic in /init?)".to_owned(),
            );
        }
        return Verdict {
            reasons,
            counts: "no result".to_owned(),
            show_tail: true,
        };
    };
    let result = match json::parse(text) {
        Ok(v) => v,
        Err(e) => {
            reasons.push(format!(
                "unreadable result line ({e}): {}",
                qemu::printable(text)
            ));
            return Verdict {
                reasons,
                counts: "no result".to_owned(),
                show_tail: true,
            };
        }
    };
    let (passed, failed, ignored) = (
        result.u64("passed").unwrap_or(0),
        result.u64("failed").unwrap_or(0),
        result.u64("ignored").unwrap_or(0),
    );
    if result.str("kernel") != Some(kernel.release.as_str()) {
        reasons.push(format!(
            "the guest ran kernel {:?}, expected {}",
            result.str("kernel"),
            kernel.release
        ));
    }
    if failed > 0 {
        let names: Vec<&str> = result
            .array("failures")
            .iter()
            .filter_map(|f| f.as_str())
            .collect();
        reasons.push(format!("{failed} failed: {}", names.join(", ")));
    }
    for b in result.array("binaries") {
        let exit = b.i64("exit").unwrap_or(-1);
        if exit != 0 && b.u64("failed").unwrap_or(0) == 0 {
            reasons.push(format!(
                "{} exited with {exit} without a failed test",
                b.str("name").unwrap_or("?")
            ));
            show_tail = true;
        }
    }
    for e in result.array("errors") {
        reasons.push(format!("guest: {}", e.as_str().unwrap_or("?")));
    }
    if passed == 0 {
        reasons.push("no test passed".to_owned());
    }
    Verdict {
        reasons,
        counts: format!("{passed} passed, {failed} failed, {ignored} ignored"),
        show_tail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_tests_output_is_found_in_the_log() {
        let log = "test a ... FAILED\r\n\r\nfailures:\r\n\r\n---- a::b stdout ----\r\nx\r\ny\r\nz\r\n---- c stdout ----\r\npanicked\r\n\r\nfailures:\r\n    a::b\r\ntest result: FAILED\n";
        let s = qemu::failure_sections(log, 1, 1);
        assert_eq!(s.len(), 2, "{s:?}");
        assert_eq!(
            s[0],
            ["---- a::b stdout ----", "x", "[1 lines left out]", "z"]
        );
        assert_eq!(s[1], ["---- c stdout ----", "panicked", ""]);
        assert!(qemu::failure_sections("test a ... ok\n", 5, 5).is_empty());
    }

    #[test]
    fn files_come_out_of_the_console_log() {
        let log = "x\nTCP_TRACE_VM_FILE a.ttr 0001ff\r\nnoise\nTCP_TRACE_VM_FILE a.ttr 10\nTCP_TRACE_VM_FILE b 41\n";
        let f = files_in(log).unwrap();
        assert_eq!(f["a.ttr"], vec![0x00, 0x01, 0xff, 0x10]);
        assert_eq!(f["b"], b"A".to_vec());
        assert!(files_in("TCP_TRACE_VM_FILE ../x 00\n").is_err());
        assert!(files_in("TCP_TRACE_VM_FILE x 0g\n").is_err());
        assert!(files_in("TCP_TRACE_VM_FILE x 000\n").is_err());
    }

    #[test]
    fn formats_come_out_of_the_console_log() {
        let log = "TCP_TRACE_VM_BOOTED 5.10.0-46-cloud-amd64 uptime 6.1s\r\n\
            TCP_TRACE_VM_FORMAT tcp/tcp_send_reset name: tcp_send_reset\r\n\
            TCP_TRACE_VM_FORMAT tcp/tcp_send_reset ID: 1234\r\n\
            TCP_TRACE_VM_FORMAT tcp/tcp_send_reset \r\n\
            TCP_TRACE_VM_FORMAT tcp/tcp_send_reset \tfield:const void * skbaddr;\toffset:8;\r\n\
            TCP_TRACE_VM_FORMAT_MISSING tcp/tcp_receive_reset\r\n\
            TCP_TRACE_VM_FORMAT ../../etc/passwd x\r\n";
        let f = formats_in(log);
        assert_eq!(f.len(), 1);
        assert_eq!(
            f["tcp/tcp_send_reset"],
            "name: tcp_send_reset\nID: 1234\n\n\tfield:const void * skbaddr;\toffset:8;\n"
        );
    }
}
