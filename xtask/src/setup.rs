//! `cargo xtask setup`: check, and install where missing, what building and testing
//! tcp-trace need (docs/kernel-facts.md, "Building the kernel side"). Idempotent; with everything in place it only probes.

use std::{
    env, fs,
    os::unix::fs::{PermissionsExt, symlink},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, anyhow, bail};

use crate::cmd::{self, capture, run};

/// Debian packages the tests need; installed with apt-get when missing.
pub const PACKAGES: &[&str] = &[
    "nftables",
    "iproute2",
    "bpftrace",
    "bpftool",
    "procps",
    "util-linux",
    "podman",
    "runc",
    "busybox-static",
    "prometheus",
    "chromium",
    "nginx",
    "redis-server",
];

/// Packages of PACKAGES that ship a service their installation would start.
const SERVICES: &[&str] = &["nginx", "redis-server"];

/// Debian's maintainer scripts start no service while this exits 101.
const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

/// The toolchain tcp-trace/build.rs (aya-build) builds the eBPF crate with.
const TOOLCHAIN: &str = "nightly";
const BPF_LINKER_VERSION: &str = "^0.13";
const TRACEFS: &str = "/sys/kernel/tracing";

struct Rustc {
    /// `rustc -vV`'s first line, for messages.
    version: String,
    commit_hash: String,
    llvm_version: String,
    llvm_major: u32,
    sysroot: PathBuf,
}

struct Setup {
    quiet: bool,
    root: bool,
    /// What a non-root run could not do: commands to run as root.
    needs_root: Vec<String>,
}

impl Setup {
    fn ok(&self, what: &str) {
        if !self.quiet {
            eprintln!("ok: {what}");
        }
    }

    fn action(&self, verb: &str, what: &str) {
        eprintln!("{verb}: {what}");
    }

    fn warn(&self, what: &str) {
        eprintln!("warning: {what}");
    }
}

pub fn setup(quiet: bool) -> Result<()> {
    let mut s = Setup {
        quiet,
        root: cmd::is_root()?,
        needs_root: Vec::new(),
    };
    let rustc = s.toolchain()?;
    s.rust_src(&rustc)?;
    s.bpf_linker(&rustc)?;
    s.musl_target()?;
    s.packages()?;
    s.tracefs()?;
    if !s.needs_root.is_empty() {
        bail!(
            "setup needs root (effective uid {}) for the steps above; run as root:\n  {}",
            cmd::euid()?,
            s.needs_root.join("\n  ")
        );
    }
    Ok(())
}

impl Setup {
    /// a. The nightly toolchain exists (rustup cannot download toolchains here).
    fn toolchain(&self) -> Result<Rustc> {
        let list = capture(Command::new("rustup").args(["toolchain", "list"])).context(
            "rustup is needed to build tcp-trace (the eBPF crate builds with `rustup run nightly`)",
        )?;
        let present = list.lines().any(|line| {
            let name = line.split_whitespace().next().unwrap_or("");
            // "nightly-x86_64-unknown-linux-gnu" or a linked "nightly"; not a dated
            // "nightly-2026-05-01-…", which `rustup run nightly` would not use.
            name == TOOLCHAIN
                || name
                    .strip_prefix("nightly-")
                    .is_some_and(|rest| !rest.starts_with(|c: char| c.is_ascii_digit()))
        });
        if !present {
            bail!(
                "the `{TOOLCHAIN}` toolchain is not installed (`rustup toolchain list`: {}).\n\
                 tcp-trace/build.rs builds the eBPF crate with `rustup run nightly cargo build -Z build-std=core`,\n\
                 and rustup cannot download toolchains here (RUSTUP_AUTO_INSTALL=0), only components.\n\
                 Install it where the network allows (`rustup toolchain install nightly --profile minimal`)\n\
                 or link a toolchain under that name (`rustup toolchain link nightly DIR`). docs/kernel-facts.md:\n\
                 a stable toolchain with the same LLVM also works with RUSTC_BOOTSTRAP=1.",
                list.lines()
                    .filter_map(|l| l.split_whitespace().next())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }

        let vv = capture(Command::new("rustc").args([&format!("+{TOOLCHAIN}"), "-vV"]))?;
        let field = |key: &str| {
            vv.lines()
                .find_map(|l| l.strip_prefix(key))
                .map(|v| v.trim().to_owned())
                .ok_or_else(|| anyhow!("`rustc +{TOOLCHAIN} -vV` has no `{key}` line:\n{vv}"))
        };
        let commit_hash = field("commit-hash:")?;
        let llvm_version = field("LLVM version:")?;
        let llvm_major = llvm_version
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .ok_or_else(|| anyhow!("cannot read the LLVM major from {llvm_version:?}"))?;
        let version = vv.lines().next().unwrap_or("").trim().to_owned();
        let sysroot =
            capture(Command::new("rustc").args([&format!("+{TOOLCHAIN}"), "--print", "sysroot"]))?;
        let rustc = Rustc {
            version,
            commit_hash,
            llvm_version,
            llvm_major,
            sysroot: PathBuf::from(sysroot.trim()),
        };
        self.ok(&format!(
            "{TOOLCHAIN} toolchain ({}, LLVM {})",
            rustc.version, rustc.llvm_version
        ));
        Ok(rustc)
    }

    /// b. rust-src for nightly (`-Z build-std=core` needs it).
    fn rust_src(&self, rustc: &Rustc) -> Result<()> {
        let library = rustc.sysroot.join("lib/rustlib/src/rust/library");
        if library.is_dir() {
            self.ok(&format!("rust-src for {TOOLCHAIN}"));
            return Ok(());
        }
        self.action("installing", &format!("rust-src for {TOOLCHAIN}"));
        run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            TOOLCHAIN,
        ]))?;
        if !library.is_dir() {
            bail!(
                "`rustup component add rust-src` succeeded but {} is still missing",
                library.display()
            );
        }
        Ok(())
    }

    /// c. bpf-linker built against nightly's own libLLVM.
    fn bpf_linker(&self, rustc: &Rustc) -> Result<()> {
        let major = rustc.llvm_major;
        let home = env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .ok_or_else(|| {
                anyhow!("HOME is not set; bpf-linker's LLVM prefix lives in $HOME/.cache")
            })?;
        // The installed bpf-linker has RUNPATH=$prefix/lib: this directory must stay.
        let prefix = Path::new(&home).join(format!(".cache/tcp-trace/llvm-{major}"));
        let lib = prefix.join("lib");
        self.link_libllvm(rustc, &lib)?;

        let stamp = prefix.join("stamp");
        let want = format!("commit-hash: {}\n", rustc.commit_hash);
        let reason = match cmd::which("bpf-linker") {
            None => Some("not on PATH".to_owned()),
            Some(path) => {
                let runs = Command::new(&path)
                    .arg("--version")
                    .output()
                    .is_ok_and(|o| o.status.success());
                match fs::read_to_string(&stamp) {
                    _ if !runs => Some(format!("`{} --version` fails", path.display())),
                    Err(_) => Some(format!(
                        "no stamp {} (built for another prefix)",
                        stamp.display()
                    )),
                    Ok(have) if have != want => Some(format!(
                        "built for rustc {}, {TOOLCHAIN} is now {}",
                        have.trim().trim_start_matches("commit-hash: "),
                        rustc.commit_hash
                    )),
                    Ok(_) => None,
                }
            }
        };
        let Some(reason) = reason else {
            self.ok(&format!(
                "bpf-linker for LLVM {major} (prefix {})",
                prefix.display()
            ));
            return Ok(());
        };

        self.action(
            "installing",
            &format!("bpf-linker {BPF_LINKER_VERSION} for LLVM {major} ({reason}; takes ~1.5 min)"),
        );
        // A stale stamp must not survive a failed install.
        match fs::remove_file(&stamp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing {}", stamp.display()));
            }
            _ => {}
        }
        run(Command::new("cargo").env("LLVM_PREFIX", &prefix).args([
            &format!("+{TOOLCHAIN}"),
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--no-default-features",
            "--features",
            &format!("llvm-{major}"),
            "--force",
        ]))?;
        let path = cmd::which("bpf-linker").ok_or_else(|| {
            anyhow!("bpf-linker was installed but is not on PATH; add cargo's bin directory (usually ~/.cargo/bin) to PATH")
        })?;
        let version = capture(Command::new(&path).arg("--version"))
            .with_context(|| format!("the freshly installed {} does not run", path.display()))?;
        fs::write(&stamp, &want).with_context(|| format!("writing {}", stamp.display()))?;
        self.action(
            "installed",
            &format!("{} ({})", version.trim(), path.display()),
        );
        Ok(())
    }

    /// Symlinks nightly's libLLVM.so.<major>.*-rust-* into `lib` under its own name and
    /// as libLLVM.so; removes other libLLVM links there (left by an older nightly).
    fn link_libllvm(&self, rustc: &Rustc, lib: &Path) -> Result<()> {
        let sysroot_lib = rustc.sysroot.join("lib");
        let prefix = format!("libLLVM.so.{}.", rustc.llvm_major);
        let mut found = Vec::new();
        for entry in fs::read_dir(&sysroot_lib)
            .with_context(|| format!("reading {}", sysroot_lib.display()))?
        {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(&prefix) && name.contains("-rust-") {
                found.push(name.into_owned());
            }
        }
        found.sort();
        let name = match found.as_slice() {
            [one] => one.clone(),
            [] => bail!(
                "no {prefix}*-rust-* in {} (the {TOOLCHAIN} toolchain's own LLVM)",
                sysroot_lib.display()
            ),
            many => bail!(
                "several {prefix}*-rust-* in {}: {}",
                sysroot_lib.display(),
                many.join(", ")
            ),
        };
        let source = sysroot_lib.join(&name);
        let target =
            fs::canonicalize(&source).with_context(|| format!("resolving {}", source.display()))?;

        fs::create_dir_all(lib).with_context(|| format!("creating {}", lib.display()))?;
        let names = [name.as_str(), "libLLVM.so"];
        for link_name in names {
            let link = lib.join(link_name);
            if fs::read_link(&link).is_ok_and(|t| t == target) {
                continue;
            }
            if fs::symlink_metadata(&link).is_ok() {
                fs::remove_file(&link)
                    .with_context(|| format!("removing the old {}", link.display()))?;
            }
            symlink(&target, &link)
                .with_context(|| format!("linking {} -> {}", link.display(), target.display()))?;
            self.action(
                "linked",
                &format!("{} -> {}", link.display(), target.display()),
            );
        }
        for entry in fs::read_dir(lib).with_context(|| format!("reading {}", lib.display()))? {
            let entry = entry?;
            let file_name = entry.file_name();
            let file_name = file_name.to_string_lossy();
            if file_name.starts_with("libLLVM")
                && !names.contains(&file_name.as_ref())
                && entry.file_type()?.is_symlink()
            {
                fs::remove_file(entry.path())
                    .with_context(|| format!("removing {}", entry.path().display()))?;
                self.action("removed", &format!("stale link {}", entry.path().display()));
            }
        }
        Ok(())
    }

    /// The musl target `cargo xtask dist` builds the static binary for (for the
    /// toolchain cargo uses in the workspace, not nightly).
    fn musl_target(&self) -> Result<()> {
        let target = crate::dist::MUSL_TARGET;
        let root = cmd::workspace_root()?;
        let installed = capture(Command::new("rustup").current_dir(&root).args([
            "target",
            "list",
            "--installed",
        ]))?;
        if installed.lines().any(|l| l.trim() == target) {
            self.ok(&format!("rust target {target}"));
            return Ok(());
        }
        self.action(
            "installing",
            &format!("rust target {target} (for `cargo xtask dist`)"),
        );
        run(Command::new("rustup")
            .current_dir(&root)
            .args(["target", "add", target]))
    }

    /// d. Debian packages the tests use.
    fn packages(&mut self) -> Result<()> {
        let mut missing = Vec::new();
        for &package in PACKAGES {
            if !package_installed(package)? {
                missing.push(package);
            }
        }
        if missing.is_empty() {
            self.ok(&format!("packages {}", PACKAGES.join(" ")));
            return Ok(());
        }
        let install = format!(
            "apt-get install -y --no-install-recommends {}",
            missing.join(" ")
        );
        if !self.root {
            self.warn(&format!("missing packages: {}", missing.join(" ")));
            self.needs_root.push(format!("apt-get update && {install}"));
            return Ok(());
        }
        self.action("installing", &format!("packages {}", missing.join(" ")));
        run(Command::new("apt-get").arg("update"))?;
        // nginx and redis-server are for the tests, which start them on ports of their
        // own: their packages must not start them as services (on port 80 and 6379 of
        // a developer's machine). Debian's maintainer scripts ask policy-rc.d.
        let policy = Path::new(POLICY_RC_D);
        let own_policy = !policy.exists()
            && missing.iter().any(|p| SERVICES.contains(p))
            && fs::write(
                policy,
                "#!/bin/sh\n# tcp-trace setup: no service starts\nexit 101\n",
            )
            .and_then(|()| fs::set_permissions(policy, fs::Permissions::from_mode(0o755)))
            .is_ok();
        if own_policy {
            self.action(
                "holding",
                &format!("service starts with {POLICY_RC_D} while installing (removed after)"),
            );
        }
        let installed = run(Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing));
        if own_policy {
            let _ = fs::remove_file(policy);
        }
        installed?;
        let still: Vec<&str> = missing
            .into_iter()
            .filter(|p| !package_installed(p).unwrap_or(false))
            .collect();
        if !still.is_empty() {
            bail!(
                "apt-get install succeeded but these are still not installed: {}",
                still.join(" ")
            );
        }
        Ok(())
    }

    /// e. tracefs at /sys/kernel/tracing (classic tracepoints need it; the tracer can
    /// fall back to tp_btf/raw tracepoints, so failing to mount is only a warning).
    fn tracefs(&self) -> Result<()> {
        if tracefs_mounted() {
            self.ok(&format!("tracefs mounted at {TRACEFS}"));
            return Ok(());
        }
        let mut mount = Command::new("mount");
        mount.args(["-t", "tracefs", "nodev", TRACEFS]);
        if !self.root {
            self.warn(&format!(
                "tracefs is not mounted at {TRACEFS} and mounting it needs root (`{}`); \
                 classic tracepoints will not attach",
                cmd::display(&mount)
            ));
            return Ok(());
        }
        self.action("mounting", &format!("tracefs at {TRACEFS}"));
        match cmd::status(&mut mount) {
            Ok(status) if status.success() && tracefs_mounted() => {
                self.action("mounted", &format!("tracefs at {TRACEFS}"));
            }
            Ok(status) => self.warn(&format!(
                "could not mount tracefs at {TRACEFS} (`{}` exited with {}); classic tracepoints will not attach",
                cmd::display(&mount),
                cmd::exit_code(status)
            )),
            Err(e) => self.warn(&format!(
                "could not mount tracefs at {TRACEFS} ({e:#}); classic tracepoints will not attach"
            )),
        }
        Ok(())
    }
}

fn package_installed(package: &str) -> Result<bool> {
    // Exits non-zero for a package dpkg has never heard of: that is "missing" too.
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .context("running dpkg-query (setup installs test packages with apt on Debian/Ubuntu)")?;
    Ok(String::from_utf8_lossy(&out.stdout).contains("install ok installed"))
}

fn tracefs_mounted() -> bool {
    if Path::new(TRACEFS).join("events").exists() {
        return true;
    }
    // /sys/kernel/tracing is mode 0700: a non-root caller cannot look inside it.
    fs::read_to_string("/proc/self/mounts").is_ok_and(|mounts| {
        mounts.lines().any(|l| {
            let mut f = l.split_whitespace();
            let (_, dir, fstype) = (f.next(), f.next(), f.next());
            dir == Some(TRACEFS) && fstype == Some("tracefs")
        })
    })
}
