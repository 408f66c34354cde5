//! Developer tasks for tcp-trace: `cargo xtask setup | build | run | test`.

mod bench;
mod cmd;
mod dist;
mod fuzz;
mod setup;
mod vm;

use std::{
    env,
    ffi::OsString,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

use crate::cmd::{ChildFailed, workspace_root};

#[derive(Parser)]
#[command(
    name = "xtask",
    bin_name = "cargo xtask",
    about = "Developer tasks for tcp-trace"
)]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Check, and install where missing, what building and testing need.
    ///
    /// rust-src for nightly, bpf-linker built against nightly's own LLVM, the Debian
    /// packages the tests use, tracefs. Idempotent; fast when everything is in place.
    Setup {
        /// Print only what is done, not what is already fine.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Setup (quiet), then `cargo build --release -p tcp-trace`.
    Build {
        /// Build the debug profile instead of release.
        #[arg(long)]
        debug: bool,
    },
    /// Setup (quiet), build, then run tcp-trace as root (via `sudo -E` when not root).
    Run {
        /// Build and run the debug profile instead of release.
        #[arg(long)]
        debug: bool,
        /// Arguments for tcp-trace (after `--`).
        #[arg(last = true)]
        args: Vec<OsString>,
    },
    /// Setup (quiet), then `cargo test --workspace --release` (all but the eBPF crate)
    /// with TCP_TRACE_PRIVILEGED_TESTS=1. Must run as root.
    Test {
        /// Extra arguments for `cargo test` (after `--`).
        #[arg(last = true)]
        args: Vec<OsString>,
    },
    /// Paired, alternating throughput/overhead benchmark (see docs/performance.md).
    Bench(bench::BenchArgs),
    /// Run the privileged tests and lab scenarios on other kernels under QEMU.
    VmTest(vm::VmArgs),
    /// Build a static (musl) tcp-trace at target/dist/tcp-trace.
    Dist(dist::DistArgs),
    /// Run each cargo-fuzz target (fuzz/) for --secs seconds (default 30), seeded
    /// with the recordings, the kernels' format files and a small BTF blob.
    Fuzz(fuzz::FuzzArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let is_test = matches!(cli.command, Task::Test { .. });
    let result = match cli.command {
        Task::Setup { quiet } => setup::setup(quiet),
        Task::Build { debug } => build(debug),
        Task::Run { debug, args } => run(debug, args),
        Task::Test { args } => test(args),
        Task::Bench(args) => bench::run(&args),
        Task::VmTest(args) => vm::run(&args),
        Task::Dist(args) => dist::run(&args),
        Task::Fuzz(args) => fuzz::run(&args),
    };
    let code = match &result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e:#}");
            e.downcast_ref::<ChildFailed>().map_or(1, |c| c.code)
        }
    };
    if is_test {
        match &result {
            // The totals line printed by test() is the last line on success.
            Ok(()) => {}
            Err(e) if e.downcast_ref::<TestsFailed>().is_some() => {
                println!("xtask test: FAILED (cargo test exited with {code})")
            }
            Err(_) => println!("xtask test: FAILED before the tests ran (see the error above)"),
        }
    }
    // Exit codes are 0..=255 on Unix; clamp rather than wrap.
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn cargo(root: &Path) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root);
    cmd
}

fn profile_dir(debug: bool) -> &'static str {
    if debug { "debug" } else { "release" }
}

fn build(debug: bool) -> Result<()> {
    setup::setup(true)?;
    build_only(debug)
}

fn build_only(debug: bool) -> Result<()> {
    let root = workspace_root()?;
    let mut cmd = cargo(&root);
    cmd.arg("build");
    if !debug {
        cmd.arg("--release");
    }
    cmd.args(["-p", "tcp-trace"]);
    cmd::run(&mut cmd)
}

fn target_dir(root: &Path) -> PathBuf {
    // Relative CARGO_TARGET_DIR is relative to where cargo ran: the root.
    env::var_os("CARGO_TARGET_DIR")
        .filter(|d| !d.is_empty())
        .map_or_else(|| root.join("target"), |d| root.join(d))
}

fn run(debug: bool, args: Vec<OsString>) -> Result<()> {
    build(debug)?;
    let root = workspace_root()?;
    let bin = target_dir(&root).join(profile_dir(debug)).join("tcp-trace");
    if !bin.is_file() {
        bail!("the build finished but {} does not exist", bin.display());
    }
    // exec (replace this process) so that Ctrl-C/SIGTERM reach only tcp-trace, which
    // detaches and prints its summary, and its exit code is ours. The working
    // directory stays the caller's, so relative paths in ARGS mean what they say.
    let mut cmd = if cmd::is_root()? {
        Command::new(&bin)
    } else {
        if cmd::which("sudo").is_none() {
            bail!(
                "tcp-trace needs root (or CAP_BPF + CAP_PERFMON) and sudo is not installed; \
                 run as root: {} {}",
                bin.display(),
                args.iter()
                    .map(|a| a.to_string_lossy())
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        }
        let mut sudo = Command::new("sudo");
        sudo.arg("-E").arg(&bin);
        sudo
    };
    cmd.args(&args);
    cmd::echo(&cmd);
    let err = cmd.exec();
    Err(err).with_context(|| format!("failed to execute `{}`", cmd::display(&cmd)))
}

/// Marks the failure of `cargo test` itself (not of setup before it).
#[derive(Debug)]
struct TestsFailed;

impl std::fmt::Display for TestsFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the tests failed")
    }
}

fn test(args: Vec<OsString>) -> Result<()> {
    if !cmd::is_root()? {
        bail!(
            "`cargo xtask test` runs the privileged integration tests (TCP_TRACE_PRIVILEGED_TESTS=1, \
             which fail rather than skip without privilege) and must run as root \
             (effective uid is {}); e.g. `sudo -E env \"PATH=$PATH\" cargo xtask test`",
            cmd::euid()?
        );
    }
    setup::setup(true)?;
    // The container tests run the static binary in an empty container.
    dist::run(&dist::DistArgs { no_setup: true })?;
    let root = workspace_root()?;
    let mut cmd = cargo(&root);
    cmd.env("TCP_TRACE_PRIVILEGED_TESTS", "1")
        // The eBPF crate only builds for bpfel-unknown-none (its no_main bin has no host
        // test harness); tcp-trace's build.rs builds it and the tests load it.
        .args([
            "test",
            "--workspace",
            "--exclude",
            "tcp-trace-ebpf",
            "--release",
        ])
        .args(&args);
    // Stream cargo's stdout through us to add up the "test result:" lines, so the run
    // ends with one plain `N passed, N failed` line for whoever reads the log.
    cmd.stdout(std::process::Stdio::piped());
    cmd::echo(&cmd);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("failed to start `{}`", cmd::display(&cmd)))?;
    let mut totals = TestTotals::default();
    if let Some(out) = child.stdout.take() {
        use std::io::BufRead;
        for line in std::io::BufReader::new(out).lines() {
            let line = line.context("reading cargo test output")?;
            println!("{line}");
            totals.add_line(&line);
        }
    }
    let status = child.wait().context("waiting for cargo test")?;
    if totals.ignored > 0 {
        println!("xtask: {} tests ignored", totals.ignored);
    }
    // The plain closing line CI reads: `N passed, N failed`.
    println!("xtask: {} passed, {} failed", totals.passed, totals.failed);
    if !status.success() {
        return Err(anyhow::anyhow!(
            "cargo test exited with {}",
            status.code().unwrap_or(-1)
        ))
        .context(TestsFailed);
    }
    if totals.passed == 0 {
        bail!("cargo test ran no test");
    }
    Ok(())
}

/// Sums cargo's `test result: ok. 8 passed; 0 failed; 1 ignored; …` lines.
#[derive(Debug, Default, PartialEq, Eq)]
struct TestTotals {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl TestTotals {
    fn add_line(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(what), Some(n)) = (words.next(), words.next()) else {
                continue;
            };
            let n: u64 = n.parse().unwrap_or(0);
            match what {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::TestTotals;

    #[test]
    fn sums_test_result_lines() {
        let mut t = TestTotals::default();
        t.add_line("test result: ok. 8 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 6.38s");
        t.add_line(
            "test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out",
        );
        t.add_line("running 3 tests");
        assert_eq!(
            t,
            TestTotals {
                passed: 11,
                failed: 2,
                ignored: 1
            }
        );
    }
}
