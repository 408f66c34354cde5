//! `cargo xtask dist`: a static (musl) tcp-trace at target/dist/tcp-trace, the eBPF
//! object embedded by tcp-trace/build.rs as in any build. It runs in an empty
//! container (deploy/Containerfile is `FROM scratch`).

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::cmd::{self, workspace_root};

pub const MUSL_TARGET: &str = "x86_64-unknown-linux-musl";

#[derive(Debug, clap::Args)]
pub struct DistArgs {
    /// Skip `cargo xtask setup` (toolchain, bpf-linker, musl target checks).
    #[arg(long)]
    pub no_setup: bool,
}

pub fn run(args: &DistArgs) -> Result<()> {
    if !args.no_setup {
        crate::setup::setup(true)?;
    }
    let root = workspace_root()?;
    let target_dir = target_dir(&root);
    let mut build = Command::new("cargo");
    build.current_dir(&root).args([
        "build",
        "--release",
        "--target",
        MUSL_TARGET,
        "-p",
        "tcp-trace",
        "--bin",
        "tcp-trace",
    ]);
    cmd::run(&mut build)?;

    let built = target_dir.join(MUSL_TARGET).join("release/tcp-trace");
    if !built.is_file() {
        bail!("the build finished but {} does not exist", built.display());
    }
    check_static(&built)?;
    let dist = target_dir.join("dist");
    fs::create_dir_all(&dist).with_context(|| format!("creating {}", dist.display()))?;
    let out = dist.join("tcp-trace");
    // Copy to a temporary name and rename, so a running container never sees half a file.
    let tmp = dist.join(".tcp-trace.tmp");
    fs::copy(&built, &tmp)
        .with_context(|| format!("copying {} to {}", built.display(), tmp.display()))?;
    fs::rename(&tmp, &out).with_context(|| format!("renaming to {}", out.display()))?;
    let size = fs::metadata(&out)?.len();
    eprintln!(
        "dist: {} ({:.1} MiB, static, {MUSL_TARGET})",
        out.display(),
        size as f64 / (1024.0 * 1024.0)
    );
    Ok(())
}

/// Where cargo puts artifacts: CARGO_TARGET_DIR (relative to the root) or target/.
fn target_dir(root: &Path) -> PathBuf {
    env::var_os("CARGO_TARGET_DIR")
        .filter(|d| !d.is_empty())
        .map_or_else(|| root.join("target"), |d| root.join(d))
}

/// A static executable has no PT_INTERP (no dynamic loader) and no PT_DYNAMIC
/// NEEDED libraries; checked from the ELF program headers, no `file`/`ldd` needed.
fn check_static(path: &Path) -> Result<()> {
    let data = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let kinds = program_header_types(&data)
        .with_context(|| format!("{} is not a 64-bit little-endian ELF", path.display()))?;
    const PT_INTERP: u32 = 3;
    if kinds.contains(&PT_INTERP) {
        bail!(
            "{} has a program interpreter (dynamically linked); a static musl build was expected",
            path.display()
        );
    }
    Ok(())
}

fn program_header_types(data: &[u8]) -> Option<Vec<u32>> {
    if data.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let u16_at = |o: usize| Some(u16::from_le_bytes(data.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(data.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_le_bytes(data.get(o..o + 8)?.try_into().ok()?));
    let phoff = usize::try_from(u64_at(0x20)?).ok()?;
    let phentsize = usize::from(u16_at(0x36)?);
    let phnum = usize::from(u16_at(0x38)?);
    (0..phnum)
        .map(|i| u32_at(phoff.checked_add(i.checked_mul(phentsize)?)?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::program_header_types;

    #[test]
    fn reads_program_headers_of_this_test_binary() {
        let exe = std::env::current_exe().unwrap();
        let data = std::fs::read(exe).unwrap();
        let kinds = program_header_types(&data).expect("an ELF");
        assert!(kinds.contains(&1), "PT_LOAD in {kinds:?}");
        assert_eq!(program_header_types(b"not an elf"), None);
    }
}
