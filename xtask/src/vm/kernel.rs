//! Debian kernel packages: which are reachable, fetching them (`apt-get download`, cached
//! under `target/vm/debs`), unpacking them (`dpkg-deb -x`) and choosing the modules the
//! tests need, in load order (dependencies read from each module's `.modinfo`).

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, anyhow, bail};

use crate::cmd::{self, capture, run};

/// A kernel line: the newest package whose name is `prefix` + digits + `suffix`.
pub struct Line {
    pub name: &'static str,
    prefix: &'static str,
    suffix: &'static str,
    pub about: &'static str,
}

/// The matrix (DESIGN.md §5): what the Debian 12 archive offers for amd64.
pub const LINES: &[Line] = &[
    Line {
        name: "6.1",
        prefix: "linux-image-6.1.0-",
        suffix: "-cloud-amd64",
        about: "Debian 12's own kernel, cloud flavour",
    },
    Line {
        name: "6.12",
        prefix: "linux-image-6.12.",
        suffix: "+deb12-cloud-amd64-unsigned",
        about: "bookworm's 6.12 (backport), cloud flavour",
    },
    Line {
        name: "6.12-rt",
        prefix: "linux-image-6.12.",
        suffix: "+deb12-rt-amd64-unsigned",
        about: "bookworm's 6.12, PREEMPT_RT",
    },
];

/// What the tests need beyond a bare kernel: veth (lab), nftables with `reject with tcp
/// reset` (live, lab), sock_diag for TCP (`ss` in the lab). Dependencies (nfnetlink,
/// libcrc32c, nf_reject_ipv4/6, nft_reject, inet_diag) come from `.modinfo`. Built-in
/// ones are skipped. crc32c_generic is libcrc32c's soft dependency (a module on 6.12-rt).
const MODULES: &[&str] = &[
    "crc32c_generic",
    "veth",
    "nf_tables",
    "nft_reject_inet",
    "tcp_diag",
];

impl Line {
    fn version_of(&self, package: &str) -> Option<u32> {
        let middle = package
            .strip_prefix(self.prefix)?
            .strip_suffix(self.suffix)?;
        if middle.is_empty() || !middle.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        middle.parse().ok()
    }

    /// This line's packages in `available`, oldest first.
    pub fn packages<'a>(&self, available: &'a BTreeSet<String>) -> Vec<&'a str> {
        let mut v: Vec<(u32, &str)> = available
            .iter()
            .filter_map(|p| self.version_of(p).map(|n| (n, p.as_str())))
            .collect();
        v.sort();
        v.into_iter().map(|(_, p)| p).collect()
    }
}

/// The `linux-image-*` packages apt knows (after the last `apt-get update`).
pub fn available() -> Result<BTreeSet<String>> {
    let out = capture(Command::new("apt-cache").args(["search", "--names-only", "^linux-image-"]))?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

/// A package name for `spec`: a line name (its newest package), a package name, or a
/// kernel release (`6.1.0-56-cloud-amd64`, `6.12.117+deb12-rt-amd64`).
pub fn resolve(spec: &str, available: &BTreeSet<String>) -> Option<String> {
    if let Some(line) = LINES.iter().find(|l| l.name == spec) {
        return line.packages(available).last().map(|p| (*p).to_owned());
    }
    let bare = spec.strip_prefix("linux-image-").unwrap_or(spec);
    [
        format!("linux-image-{bare}"),
        format!("linux-image-{bare}-unsigned"),
    ]
    .into_iter()
    .find(|p| available.contains(p))
}

/// `apt-get update` (needs root); run at most once, when a kernel cannot be resolved.
pub fn apt_update() -> Result<()> {
    if !cmd::is_root()? {
        bail!("apt knows no such kernel package and `apt-get update` needs root");
    }
    run(Command::new("apt-get").arg("update"))
}

/// The cached `.deb` of `package`, downloaded with `apt-get download` when absent.
pub fn fetch(package: &str, debs: &Path) -> Result<PathBuf> {
    if let Some(deb) = cached_deb(package, debs)? {
        return Ok(deb);
    }
    // Download into a scratch directory so an interrupted download is never "cached".
    let partial = debs.join(".download");
    if partial.exists() {
        fs::remove_dir_all(&partial).with_context(|| format!("removing {}", partial.display()))?;
    }
    fs::create_dir_all(&partial).with_context(|| format!("creating {}", partial.display()))?;
    run(Command::new("apt-get")
        .current_dir(&partial)
        .args(["download", package]))?;
    let got = cached_deb(package, &partial)?
        .ok_or_else(|| anyhow!("`apt-get download {package}` left no {package}_*.deb"))?;
    let deb = debs.join(got.file_name().expect("a file"));
    fs::rename(&got, &deb)
        .with_context(|| format!("moving {} to {}", got.display(), deb.display()))?;
    fs::remove_dir(&partial).ok();
    Ok(deb)
}

fn cached_deb(package: &str, dir: &Path) -> Result<Option<PathBuf>> {
    if !dir.is_dir() {
        return Ok(None);
    }
    let prefix = format!("{package}_");
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with(&prefix) && name.ends_with(".deb") {
            found.push(path);
        }
    }
    found.sort();
    Ok(found.pop())
}

/// An unpacked kernel package.
pub struct Kernel {
    pub package: String,
    /// `uname -r` of the guest: the directory name under lib/modules.
    pub release: String,
    pub vmlinuz: PathBuf,
    /// `lib/modules/<release>` in the unpacked package.
    pub modules: PathBuf,
}

/// Unpacks `deb` under `root/<package>` (once: a stamp names the unpacked file).
pub fn unpack(package: &str, deb: &Path, root: &Path) -> Result<Kernel> {
    let dir = root.join(package);
    let stamp = dir.join(".unpacked");
    let want = deb
        .file_name()
        .expect("a file")
        .to_string_lossy()
        .into_owned();
    if fs::read_to_string(&stamp).ok().as_deref() != Some(want.as_str()) {
        if dir.exists() {
            fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&dir))?;
        fs::write(&stamp, &want).with_context(|| format!("writing {}", stamp.display()))?;
    }
    let lib_modules = dir.join("lib/modules");
    let mut releases: Vec<String> = fs::read_dir(&lib_modules)
        .with_context(|| {
            format!(
                "reading {} (is {package} a kernel image?)",
                lib_modules.display()
            )
        })?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let release = match releases.len() {
        1 => releases.pop().expect("one"),
        _ => bail!(
            "{} holds {releases:?}, expected one release",
            lib_modules.display()
        ),
    };
    let vmlinuz = dir.join(format!("boot/vmlinuz-{release}"));
    if !vmlinuz.is_file() {
        bail!("{package} has no boot/vmlinuz-{release}");
    }
    Ok(Kernel {
        package: package.to_owned(),
        modules: lib_modules.join(&release),
        release,
        vmlinuz,
    })
}

/// A module to load in the guest: its name and its (possibly compressed) file.
pub struct Module {
    pub name: String,
    pub path: PathBuf,
}

impl Kernel {
    /// The modules the tests need, dependencies first; built-in ones left out.
    pub fn needed_modules(&self) -> Result<Vec<Module>> {
        let files = module_files(&self.modules.join("kernel"))?;
        let builtin = fs::read_to_string(self.modules.join("modules.builtin")).unwrap_or_default();
        let builtin: BTreeSet<String> = builtin
            .lines()
            .filter_map(|l| l.rsplit('/').next())
            .map(|f| module_name(f).to_owned())
            .collect();
        let mut order = Vec::new();
        let mut seen = BTreeSet::new();
        for &name in MODULES {
            if files.contains_key(name) {
                self.visit(name, &files, &mut seen, &mut order)?;
            } else if !builtin.contains(name) && name != "crc32c_generic" {
                eprintln!(
                    "warning: {}: module {name} is neither a module nor built in; tests that need it will fail",
                    self.release
                );
            }
        }
        Ok(order)
    }

    fn visit(
        &self,
        name: &str,
        files: &BTreeMap<String, PathBuf>,
        seen: &mut BTreeSet<String>,
        order: &mut Vec<Module>,
    ) -> Result<()> {
        if !seen.insert(name.to_owned()) {
            return Ok(());
        }
        let path = files
            .get(name)
            .ok_or_else(|| anyhow!("{}: module {name} (a dependency) not found", self.release))?;
        let image = read_module(path)?;
        for dep in modinfo(&image, "depends")
            .with_context(|| format!("reading .modinfo of {}", path.display()))?
            .iter()
            .flat_map(|d| d.split(','))
            .filter(|d| !d.is_empty())
        {
            self.visit(&dep.replace('-', "_"), files, seen, order)?;
        }
        order.push(Module {
            name: name.to_owned(),
            path: path.clone(),
        });
        Ok(())
    }
}

/// `name` of `foo-bar.ko.xz` is `foo_bar` (module names use `_`).
fn module_name(file: &str) -> String {
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

fn module_files(dir: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let mut map = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let entry = entry?;
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                stack.push(path);
                continue;
            }
            let file = entry.file_name().to_string_lossy().into_owned();
            if file.contains(".ko") {
                map.insert(module_name(&file), path);
            }
        }
    }
    Ok(map)
}

/// The module's ELF image, decompressed (`.ko.xz`, `.ko.zst`, `.ko.gz`): busybox insmod
/// takes plain `.ko` files only.
pub fn read_module(path: &Path) -> Result<Vec<u8>> {
    let name = path.to_string_lossy();
    let tool = if name.ends_with(".xz") {
        "xz"
    } else if name.ends_with(".zst") {
        "zstd"
    } else if name.ends_with(".gz") {
        "gzip"
    } else {
        return fs::read(path).with_context(|| format!("reading {}", path.display()));
    };
    let out = Command::new(tool)
        .arg("-dc")
        .arg(path)
        .output()
        .with_context(|| format!("running {tool} -dc {}", path.display()))?;
    if !out.status.success() {
        bail!(
            "`{tool} -dc {}` failed: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

/// The values of `key` in the ELF section `.modinfo` (NUL-separated `key=value`).
fn modinfo(image: &[u8], key: &str) -> Result<Vec<String>> {
    let section = elf_section(image, ".modinfo")?;
    let prefix = format!("{key}=");
    Ok(section
        .split(|&b| b == 0)
        .filter_map(|kv| std::str::from_utf8(kv).ok())
        .filter_map(|kv| kv.strip_prefix(&prefix))
        .map(str::to_owned)
        .collect())
}

/// One section of a 64-bit little-endian ELF file.
fn elf_section<'a>(image: &'a [u8], wanted: &str) -> Result<&'a [u8]> {
    let u16_at = |o: usize| -> Result<u16> {
        Ok(u16::from_le_bytes(
            image.get(o..o + 2).context("truncated ELF")?.try_into()?,
        ))
    };
    let u32_at = |o: usize| -> Result<u32> {
        Ok(u32::from_le_bytes(
            image.get(o..o + 4).context("truncated ELF")?.try_into()?,
        ))
    };
    let u64_at = |o: usize| -> Result<usize> {
        Ok(u64::from_le_bytes(image.get(o..o + 8).context("truncated ELF")?.try_into()?) as usize)
    };
    if image.get(..6) != Some(b"\x7fELF\x02\x01") {
        bail!("not a 64-bit little-endian ELF file");
    }
    let shoff = u64_at(0x28)?;
    let shentsize = usize::from(u16_at(0x3a)?);
    let shnum = usize::from(u16_at(0x3c)?);
    let shstrndx = usize::from(u16_at(0x3e)?);
    let header = |i: usize| shoff + i * shentsize;
    let bytes = |i: usize| -> Result<&'a [u8]> {
        let off = u64_at(header(i) + 0x18)?;
        let size = u64_at(header(i) + 0x20)?;
        image.get(off..off + size).context("section out of bounds")
    };
    let names = bytes(shstrndx)?;
    for i in 0..shnum {
        let name_off = u32_at(header(i))? as usize;
        let name = names
            .get(name_off..)
            .and_then(|n| n.split(|&b| b == 0).next())
            .unwrap_or_default();
        if name == wanted.as_bytes() {
            return bytes(i);
        }
    }
    bail!("no {wanted} section")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_pick_their_own_packages() {
        let available: BTreeSet<String> = [
            "linux-image-6.1.0-9-cloud-amd64",
            "linux-image-6.1.0-56-cloud-amd64",
            "linux-image-6.1.0-56-cloud-amd64-dbg",
            "linux-image-6.1.0-56-cloud-amd64-unsigned",
            "linux-image-6.1.0-56-rt-amd64",
            "linux-image-6.12.117+deb12-cloud-amd64-unsigned",
            "linux-image-6.12.99+deb12-cloud-amd64-unsigned",
            "linux-image-6.12.117+deb12-rt-amd64-unsigned",
            "linux-image-6.12.117+deb12-cloud-amd64",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect();
        let r = |s| resolve(s, &available);
        assert_eq!(
            r("6.1").as_deref(),
            Some("linux-image-6.1.0-56-cloud-amd64")
        );
        assert_eq!(
            r("6.12").as_deref(),
            Some("linux-image-6.12.117+deb12-cloud-amd64-unsigned")
        );
        assert_eq!(
            r("6.12-rt").as_deref(),
            Some("linux-image-6.12.117+deb12-rt-amd64-unsigned")
        );
        assert_eq!(
            r("6.12.117+deb12-rt-amd64").as_deref(),
            Some("linux-image-6.12.117+deb12-rt-amd64-unsigned")
        );
        assert_eq!(
            r("6.1.0-9-cloud-amd64").as_deref(),
            Some("linux-image-6.1.0-9-cloud-amd64")
        );
        assert_eq!(r("5.10"), None);
    }

    #[test]
    fn module_names_use_underscores() {
        assert_eq!(module_name("nf_reject_ipv4.ko.xz"), "nf_reject_ipv4");
        assert_eq!(module_name("crc32c-generic.ko"), "crc32c_generic");
    }
}
