//! `cargo xtask fuzz [--secs N]`: runs each cargo-fuzz target of `fuzz/` for N seconds,
//! its corpus seeded first from the real inputs: the recordings, the kernels' tracefs
//! format files, and a small BTF blob built here.
//!
//! Seeds go to target/fuzz/seeds/<target> (read only for libFuzzer), what the fuzzer
//! finds to target/fuzz/corpus/<target>, crashes to fuzz/artifacts/<target>/ (cargo-fuzz's
//! place; git ignores it). A crash fails the task: make it a regression unit test in the
//! module it hit, then fix it.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::cmd::{self, workspace_root};

#[derive(clap::Args)]
pub struct FuzzArgs {
    /// Seconds per target.
    #[arg(long, default_value_t = 30)]
    pub secs: u64,
    /// Run only these targets (default: all).
    #[arg(long = "target", value_name = "NAME")]
    pub targets: Vec<String>,
}

/// The targets in fuzz/fuzz_targets/.
pub const TARGETS: [&str; 4] = ["decode", "record_reader", "tracefs_format", "btf"];

const TOOLCHAIN: &str = "+nightly";

pub fn run(args: &FuzzArgs) -> Result<()> {
    let root = workspace_root()?;
    for t in &args.targets {
        if !TARGETS.contains(&t.as_str()) {
            bail!("no fuzz target {t:?} (targets: {})", TARGETS.join(", "));
        }
    }
    let targets: Vec<&str> = if args.targets.is_empty() {
        TARGETS.to_vec()
    } else {
        args.targets.iter().map(String::as_str).collect()
    };
    ensure_cargo_fuzz()?;
    let work = root.join("target/fuzz");
    seed(&root, &work.join("seeds"))?;
    for t in targets {
        let corpus = work.join("corpus").join(t);
        fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
        let mut c = Command::new("cargo");
        c.current_dir(&root)
            // The fuzz targets need tcp-trace's library only: no eBPF object (its
            // build would get the sanitizer flags).
            .env("AYA_BUILD_SKIP", "1")
            .args([TOOLCHAIN, "fuzz", "run", t])
            .arg(&corpus)
            .arg(work.join("seeds").join(t))
            .arg("--")
            .arg(format!("-max_total_time={}", args.secs))
            .arg("-max_len=65536");
        cmd::run(&mut c).with_context(|| {
            format!("fuzz target {t} failed: the input is in fuzz/artifacts/{t}/")
        })?;
    }
    Ok(())
}

/// Installs cargo-fuzz from crates.io when `cargo fuzz` is absent.
fn ensure_cargo_fuzz() -> Result<()> {
    let present = Command::new("cargo")
        .args([TOOLCHAIN, "fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if present {
        return Ok(());
    }
    cmd::run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))
}

/// Writes the seed corpora under `dir` (replacing what was there).
fn seed(root: &Path, dir: &Path) -> Result<()> {
    let fixtures = root.join("tcp-trace/tests/fixtures");
    let put = |target: &str, name: &str, bytes: &[u8]| -> Result<()> {
        let d = dir.join(target);
        fs::create_dir_all(&d)?;
        fs::write(d.join(name), bytes).with_context(|| format!("writing seed {target}/{name}"))
    };
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    // Recordings: whole (cut to their first records) for the reader, and their records
    // one by one for the decoder.
    for path in files(&fixtures.join("recordings"), "ttr")? {
        let bytes = fs::read(&path)?;
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let (header_len, rec_size) = recording_layout(&bytes)
            .with_context(|| format!("{} is not a recording", path.display()))?;
        let end = bytes.len().min(header_len + 64 * rec_size);
        put("record_reader", &name, &bytes[..end])?;
        for (i, rec) in bytes[header_len..end].chunks_exact(rec_size).enumerate() {
            put("decode", &format!("{name}.{i}"), rec)?;
        }
    }
    // Every kernel's format files.
    let kernels = fixtures.join("kernels");
    for kernel in dirs(&kernels)? {
        for group in dirs(&kernel)? {
            for f in files(&group, "format")? {
                let name = format!(
                    "{}.{}.{}",
                    kernel.file_name().unwrap_or_default().to_string_lossy(),
                    group.file_name().unwrap_or_default().to_string_lossy(),
                    f.file_name().unwrap_or_default().to_string_lossy()
                );
                put("tracefs_format", &name, &fs::read(&f)?)?;
            }
        }
    }
    put("btf", "sock.btf", &small_btf())?;
    Ok(())
}

/// (bytes before the first record, record size) of a tcp-trace recording.
fn recording_layout(b: &[u8]) -> Option<(usize, usize)> {
    let u32_at = |i: usize| Some(u32::from_le_bytes(b.get(i..i + 4)?.try_into().ok()?) as usize);
    if b.get(..8)? != b"TCPTRACE" {
        return None;
    }
    let rec_size = u32_at(12)?;
    (rec_size > 0).then_some((28 + u32_at(24)?, rec_size))
}

fn dirs(d: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = fs::read_dir(d)
        .with_context(|| format!("reading {}", d.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    v.sort();
    Ok(v)
}

fn files(d: &Path, ext: &str) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = fs::read_dir(d)
        .with_context(|| format!("reading {}", d.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    Ok(v)
}

/// A small valid BTF blob: `int`, `struct sock_common { int skc_num @ 12 }`,
/// `struct sock { struct sock_common __sk_common }`, `struct sock *`, and the typedef
/// `btf_trace_inet_sock_set_state` of that pointer: enough for member look-ups to
/// succeed, so the fuzzer starts from the paths the loader takes.
pub fn small_btf() -> Vec<u8> {
    const INT: u32 = 1;
    const PTR: u32 = 2;
    const STRUCT: u32 = 4;
    const TYPEDEF: u32 = 8;
    let mut strings = vec![0u8];
    let mut s = |name: &str| {
        let off = strings.len() as u32;
        strings.extend_from_slice(name.as_bytes());
        strings.push(0);
        off
    };
    let info = |kind: u32, vlen: u32| (kind << 24) | vlen;
    let types: Vec<u32> = vec![
        // 1: int, 4 bytes, 32 bits, signed.
        s("int"),
        info(INT, 0),
        4,
        (1 << 24) | 32,
        // 2: struct sock_common, 16 bytes: skc_num (int) at bit 96.
        s("sock_common"),
        info(STRUCT, 1),
        16,
        s("skc_num"),
        1,
        96,
        // 3: struct sock, 16 bytes: __sk_common at 0.
        s("sock"),
        info(STRUCT, 1),
        16,
        s("__sk_common"),
        2,
        0,
        // 4: struct sock *.
        0,
        info(PTR, 0),
        3,
        // 5: typedef btf_trace_inet_sock_set_state -> 4.
        s("btf_trace_inet_sock_set_state"),
        info(TYPEDEF, 0),
        4,
    ];
    let type_bytes: Vec<u8> = types.iter().flat_map(|w| w.to_le_bytes()).collect();
    let mut out = Vec::new();
    out.extend_from_slice(&0xeb9f_u16.to_le_bytes());
    out.extend_from_slice(&[1, 0]); // version, flags
    let tl = type_bytes.len() as u32;
    for w in [24, 0, tl, tl, strings.len() as u32] {
        out.extend_from_slice(&w.to_le_bytes());
    }
    out.extend_from_slice(&type_bytes);
    out.extend_from_slice(&strings);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recording_layout_reads_the_header() {
        let mut b = b"TCPTRACE".to_vec();
        for w in [1u32, 120, 0, 0, 2] {
            b.extend_from_slice(&w.to_le_bytes());
        }
        assert_eq!(recording_layout(&b), Some((30, 120)));
        assert_eq!(recording_layout(b"NOTATRACE"), None);
    }

    #[test]
    fn small_btf_has_a_consistent_header() {
        let b = small_btf();
        let word = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap()) as usize;
        assert_eq!(&b[..4], &[0x9f, 0xeb, 1, 0]);
        assert_eq!(24 + word(16) + word(20), b.len());
        assert_eq!(word(12), word(16));
    }
}
