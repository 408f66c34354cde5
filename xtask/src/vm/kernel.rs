//! Debian kernel packages: which are reachable, fetching them (`apt-get download`, cached
//! under `target/vm/debs`), unpacking them (`dpkg-deb -x`) and choosing the modules the
//! tests need, in load order (dependencies read from each module's `.modinfo`).
//!
//! The bookworm lines use the host's own apt configuration. The others (bullseye's 5.10,
//! unstable's newest) come from a private apt list and state under `target/vm/apt/<name>`
//! (see [`Source`]): the host's `/etc/apt` is only read, for its mirror's host name.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, anyhow, bail};

use crate::cmd::{self, capture, run};

/// Where a line's packages come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    /// The host's own apt configuration (Debian 12 "bookworm" here).
    Host,
    /// Debian 11 "bullseye" and bullseye-security, through a private apt state.
    Bullseye,
    /// Debian unstable ("sid"), through a private apt state.
    Sid,
}

/// The sources with a private apt state, in update order.
pub const PRIVATE: &[Source] = &[Source::Bullseye, Source::Sid];

/// The keyring the private lists are signed with (package debian-archive-keyring).
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// A kernel line: the newest package whose name is `prefix` + version + `suffix`, the
/// version digits separated by dots, optionally ending in `+debN` (`7.2.13+deb14`).
pub struct Line {
    pub name: &'static str,
    prefix: &'static str,
    suffix: &'static str,
    pub source: Source,
    pub about: &'static str,
}

/// The matrix: what the Debian archive offers for amd64 (docs/kernel-facts.md, "The
/// kernels a test can boot here").
pub const LINES: &[Line] = &[
    Line {
        name: "6.1",
        prefix: "linux-image-6.1.0-",
        suffix: "-cloud-amd64",
        source: Source::Host,
        about: "Debian 12's own kernel, cloud flavour",
    },
    Line {
        name: "6.12",
        prefix: "linux-image-6.12.",
        suffix: "+deb12-cloud-amd64-unsigned",
        source: Source::Host,
        about: "bookworm's 6.12 (backport), cloud flavour",
    },
    Line {
        name: "6.12-rt",
        prefix: "linux-image-6.12.",
        suffix: "+deb12-rt-amd64-unsigned",
        source: Source::Host,
        about: "bookworm's 6.12, PREEMPT_RT",
    },
    Line {
        name: "5.10",
        prefix: "linux-image-5.10.0-",
        suffix: "-cloud-amd64",
        source: Source::Bullseye,
        about: "Debian 11's kernel (bullseye-security), cloud flavour",
    },
    Line {
        name: "unstable",
        prefix: "linux-image-",
        suffix: "-cloud-amd64",
        source: Source::Sid,
        about: "Debian unstable's newest kernel, cloud flavour",
    },
];

/// What the tests need beyond a bare kernel: veth (lab), nftables with `reject with tcp
/// reset` (live, lab), sock_diag for TCP (`ss` in the lab). Dependencies (nfnetlink,
/// libcrc32c, nf_reject_ipv4/6, nft_reject, inet_diag) come from `.modinfo`. Built-in
/// ones are skipped. crc32c_generic is libcrc32c's soft dependency (a module on 6.12-rt).
/// nft_dup_ipv4/6 (nftables `dup to`) and af_packet (packet sockets) for the lab's
/// reorder-dup, duplicate-syn and isn-reuse scenarios; nft_counter (the `counter` those
/// rules read back) is a module on 5.10, built in later.
const MODULES: &[&str] = &[
    "crc32c_generic",
    "veth",
    "nf_tables",
    "nft_reject_inet",
    "nft_quota",
    "nft_counter",
    "tcp_diag",
    "nft_dup_ipv4",
    "nft_dup_ipv6",
    "af_packet",
];

/// Modules of `MODULES` that later kernels compile into another module rather than
/// ship on their own: (module, the one it is part of). nft_counter is a module on
/// 5.10 and part of nf_tables from 6.0 on (no file of its own, not in modules.builtin).
const FOLDED: &[(&str, &str)] = &[("nft_counter", "nf_tables")];

impl Line {
    /// The version of `package` in this line, as its numbers (`7.2.13+deb14`: 7, 2, 13, 14).
    fn version_of(&self, package: &str) -> Option<Vec<u32>> {
        let middle = package
            .strip_prefix(self.prefix)?
            .strip_suffix(self.suffix)?;
        let (dotted, deb) = match middle.split_once("+deb") {
            Some((d, n)) => (d, Some(n)),
            None => (middle, None),
        };
        let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !dotted.split('.').all(numeric) || !deb.is_none_or(numeric) {
            return None;
        }
        dotted
            .split('.')
            .chain(deb)
            .map(|n| n.parse().ok())
            .collect()
    }

    /// This line's packages in `available` (those of its own source), oldest first.
    pub fn packages<'a>(&self, available: &'a Available) -> Vec<&'a str> {
        let mut v: Vec<(Vec<u32>, &str)> = available
            .iter()
            .filter(|(_, s)| **s == self.source)
            .filter_map(|(p, _)| self.version_of(p).map(|n| (n, p.as_str())))
            .collect();
        v.sort();
        v.into_iter().map(|(_, p)| p).collect()
    }
}

/// Every `linux-image-*` package apt knows, and the source it comes from (the host's
/// when several offer it).
pub type Available = BTreeMap<String, Source>;

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::Host => "host",
            Source::Bullseye => "bullseye",
            Source::Sid => "sid",
        }
    }

    /// (suite, on the security mirror) for a private source.
    fn suites(self) -> &'static [(&'static str, bool)] {
        match self {
            Source::Host => &[],
            Source::Bullseye => &[("bullseye", false), ("bullseye-security", true)],
            Source::Sid => &[("sid", false)],
        }
    }

    /// `target/vm/apt/<name>`: sources.list, lists/, cache/ of a private source.
    fn dir(self, vm_dir: &Path) -> PathBuf {
        vm_dir.join("apt").join(self.name())
    }

    /// The `-o` options that point apt at this source's private list and state (none
    /// for the host's).
    pub fn apt_options(self, vm_dir: &Path) -> Vec<String> {
        if self == Source::Host {
            return Vec::new();
        }
        let dir = self.dir(vm_dir);
        let d = |p: &str| dir.join(p).display().to_string();
        [
            format!("Dir::Etc::SourceList={}", d("sources.list")),
            "Dir::Etc::SourceParts=/dev/null".to_owned(),
            format!("Dir::State::Lists={}", d("lists")),
            format!("Dir::Cache={}", d("cache")),
        ]
        .into_iter()
        .flat_map(|o| ["-o".to_owned(), o])
        .collect()
    }

    /// Whether `apt-get update` has filled this private source's lists (the host's: always).
    fn has_lists(self, vm_dir: &Path) -> bool {
        if self == Source::Host {
            return true;
        }
        fs::read_dir(self.dir(vm_dir).join("lists")).is_ok_and(|d| {
            d.filter_map(|e| e.ok())
                .any(|e| e.file_name().to_string_lossy().contains("_Packages"))
        })
    }

    /// `apt-get update` for this source (needs root): the host's own, or, for a private
    /// source, one that writes only under `target/vm/apt/<name>`.
    pub fn update(self, vm_dir: &Path) -> Result<()> {
        if !cmd::is_root()? {
            bail!("apt knows no such kernel package and `apt-get update` needs root");
        }
        if self == Source::Host {
            return run(Command::new("apt-get").arg("update"));
        }
        let dir = self.dir(vm_dir);
        for sub in ["lists/partial", "cache/archives/partial"] {
            let p = dir.join(sub);
            fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        }
        let list = self.sources_list(&host_mirrors()?)?;
        let path = dir.join("sources.list");
        fs::write(&path, list).with_context(|| format!("writing {}", path.display()))?;
        // apt's progress goes to stderr: stdout carries only the PASS/FAIL lines.
        run(Command::new("apt-get")
            .args(self.apt_options(vm_dir))
            .arg("update")
            .stdout(std::io::stderr()))
    }

    /// The one-line-style sources.list of a private source on the host's mirrors.
    fn sources_list(self, mirrors: &Mirrors) -> Result<String> {
        if !Path::new(KEYRING).is_file() {
            bail!("{KEYRING} is missing (package debian-archive-keyring)");
        }
        let mut list = String::new();
        for &(suite, security) in self.suites() {
            let uri = if security {
                match &mirrors.security {
                    Some(u) => u,
                    None => {
                        eprintln!(
                            "warning: the host's apt configuration names no security mirror; {suite} left out"
                        );
                        continue;
                    }
                }
            } else {
                &mirrors.main
            };
            list.push_str(&format!("deb [signed-by={KEYRING}] {uri} {suite} main\n"));
        }
        Ok(list)
    }
}

/// The Debian mirrors the host's apt uses: the archive and, if any, the security archive.
#[derive(Debug, PartialEq)]
pub struct Mirrors {
    pub main: String,
    pub security: Option<String>,
}

/// Reads the mirrors from `/etc/apt/sources.list` and `/etc/apt/sources.list.d/*`.
fn host_mirrors() -> Result<Mirrors> {
    let codename = fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|c| c.trim_matches('"').to_owned())
        .filter(|c| !c.is_empty())
        .ok_or_else(|| anyhow!("no VERSION_CODENAME in /etc/os-release"))?;
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = dir.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        more.sort();
        files.extend(more);
    }
    let mut text = String::new();
    for f in files {
        if let Ok(t) = fs::read_to_string(&f) {
            text.push_str(&t);
            text.push_str("\n\n");
        }
    }
    mirrors_in(&text, &codename).ok_or_else(|| {
        anyhow!("no Debian mirror for {codename} in /etc/apt/sources.list or sources.list.d")
    })
}

/// The mirrors in apt sources (one-line or deb822 format) whose suites are `codename`
/// (`bookworm`, `bookworm-updates`, … : the archive) or `codename-security`.
fn mirrors_in(text: &str, codename: &str) -> Option<Mirrors> {
    // (URIs, suites) of every `deb` entry.
    let mut entries: Vec<(Vec<String>, Vec<String>)> = Vec::new();
    let mut stanza: BTreeMap<String, String> = BTreeMap::new();
    let flush = |stanza: &mut BTreeMap<String, String>,
                 entries: &mut Vec<(Vec<String>, Vec<String>)>| {
        let words = |k: &str| -> Vec<String> {
            stanza
                .get(k)
                .map(|v| v.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default()
        };
        let enabled = stanza.get("enabled").is_none_or(|v| v.trim() != "no");
        if enabled && words("types").iter().any(|t| t == "deb") {
            entries.push((words("uris"), words("suites")));
        }
        stanza.clear();
    };
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        if line.is_empty() {
            flush(&mut stanza, &mut entries);
            continue;
        }
        if let Some(rest) = line.strip_prefix("deb ") {
            // deb [options] uri suite components…
            let rest = match rest.trim_start().strip_prefix('[') {
                Some(r) => r.split_once(']').map_or("", |(_, r)| r),
                None => rest,
            };
            let mut w = rest.split_whitespace();
            if let (Some(uri), Some(suite)) = (w.next(), w.next()) {
                entries.push((vec![uri.to_owned()], vec![suite.to_owned()]));
            }
            continue;
        }
        if let Some((k, v)) = line.split_once(':')
            && !k.contains(' ')
        {
            stanza.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    flush(&mut stanza, &mut entries);
    let security_suite = format!("{codename}-security");
    let mut main = None;
    let mut security = None;
    for (uris, suites) in &entries {
        let Some(uri) = uris.first() else { continue };
        let uri = uri.trim_end_matches('/').to_owned();
        for s in suites {
            if *s == security_suite || s.starts_with(&format!("{codename}/updates")) {
                security.get_or_insert(uri.clone());
            } else if s == codename
                || s.strip_prefix(codename)
                    .is_some_and(|r| r == "-updates" || r == "-backports")
            {
                main.get_or_insert(uri.clone());
            }
        }
    }
    Some(Mirrors {
        main: main?,
        security,
    })
}

/// The `linux-image-*` packages apt knows (after the last `apt-get update`): the
/// host's, then each private source's that has lists.
pub fn available(vm_dir: &Path) -> Result<Available> {
    let mut all = Available::new();
    for source in std::iter::once(Source::Host).chain(PRIVATE.iter().copied()) {
        if !source.has_lists(vm_dir) {
            continue;
        }
        let out = capture(
            Command::new("apt-cache")
                .args(source.apt_options(vm_dir))
                .args(["search", "--names-only", "^linux-image-"]),
        )?;
        for p in out.lines().filter_map(|l| l.split_whitespace().next()) {
            all.entry(p.to_owned()).or_insert(source);
        }
    }
    Ok(all)
}

/// A package name for `spec`: a line name (its newest package), a package name, or a
/// kernel release (`6.1.0-56-cloud-amd64`, `6.12.117+deb12-rt-amd64`).
pub fn resolve(spec: &str, available: &Available) -> Option<String> {
    if let Some(line) = LINES.iter().find(|l| l.name == spec) {
        return line.packages(available).last().map(|p| (*p).to_owned());
    }
    let bare = spec.strip_prefix("linux-image-").unwrap_or(spec);
    [
        format!("linux-image-{bare}"),
        format!("linux-image-{bare}-unsigned"),
    ]
    .into_iter()
    .find(|p| available.contains_key(p))
}

/// The cached `.deb`s of `package` (from `source`), downloaded with `apt-get download`
/// when absent: the image package and, where Debian splits the kernel (unstable: the
/// image package is empty), the `linux-binary-*`, `linux-modules-*` and `linux-base-*`
/// packages it depends on.
pub fn fetch(package: &str, source: Source, debs: &Path, vm_dir: &Path) -> Result<Vec<PathBuf>> {
    let image = fetch_one(package, source, debs, vm_dir)?;
    let depends = capture(
        Command::new("dpkg-deb")
            .arg("-f")
            .arg(&image)
            .arg("Depends"),
    )?;
    let mut all = vec![image];
    for part in split_parts(package, &depends) {
        all.push(fetch_one(&part, source, debs, vm_dir)?);
    }
    Ok(all)
}

/// The packages in `depends` (a `Depends:` field) that hold a split kernel's parts.
fn split_parts(package: &str, depends: &str) -> Vec<String> {
    let flavour = package
        .strip_prefix("linux-image-")
        .unwrap_or(package)
        .trim_end_matches("-unsigned");
    depends
        .split([',', '|'])
        .filter_map(|d| d.split_whitespace().next())
        .filter(|d| {
            ["linux-binary-", "linux-modules-", "linux-base-"]
                .iter()
                .any(|p| d.strip_prefix(p) == Some(flavour))
        })
        .map(str::to_owned)
        .collect()
}

fn fetch_one(package: &str, source: Source, debs: &Path, vm_dir: &Path) -> Result<PathBuf> {
    if let Some(deb) = cached_deb(package, debs)? {
        return Ok(deb);
    }
    // Download into a scratch directory so an interrupted download is never "cached".
    let partial = debs.join(".download");
    if partial.exists() {
        fs::remove_dir_all(&partial).with_context(|| format!("removing {}", partial.display()))?;
    }
    fs::create_dir_all(&partial).with_context(|| format!("creating {}", partial.display()))?;
    let download = || {
        run(Command::new("apt-get")
            .current_dir(&partial)
            .args(source.apt_options(vm_dir))
            .args(["download", package])
            .stdout(std::io::stderr()))
    };
    if let Err(e) = download() {
        if source == Source::Host {
            return Err(e);
        }
        // A private list may be stale (unstable moves fast): refresh it once.
        eprintln!("vm-test: {e:#}; updating the {} lists", source.name());
        source.update(vm_dir)?;
        download()?;
    }
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
    /// `lib/modules/<release>` (or `usr/lib/modules/<release>`) in the unpacked package.
    pub modules: PathBuf,
}

/// Unpacks `debs` under `root/<package>` (once: a stamp names the unpacked files).
pub fn unpack(package: &str, debs: &[PathBuf], root: &Path) -> Result<Kernel> {
    let dir = root.join(package);
    let stamp = dir.join(".unpacked");
    let want: String = debs
        .iter()
        .map(|d| format!("{}\n", d.file_name().expect("a file").to_string_lossy()))
        .collect();
    // Stamps written before split packages name one file without a newline.
    let have = fs::read_to_string(&stamp).unwrap_or_default();
    if have != want && format!("{have}\n") != want {
        if dir.exists() {
            fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        for deb in debs {
            run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&dir))?;
        }
        fs::write(&stamp, &want).with_context(|| format!("writing {}", stamp.display()))?;
    }
    // bookworm and bullseye ship lib/modules and boot/vmlinuz-<release>; unstable
    // (merged /usr) usr/lib/modules/<release>/vmlinuz.
    let lib_modules = ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|p| dir.join(p))
        .find(|p| p.is_dir())
        .ok_or_else(|| anyhow!("{package} has no lib/modules (is it a kernel image?)"))?;
    let mut releases: Vec<String> = fs::read_dir(&lib_modules)
        .with_context(|| format!("reading {}", lib_modules.display()))?
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
    let modules = lib_modules.join(&release);
    let vmlinuz = [
        dir.join(format!("boot/vmlinuz-{release}")),
        modules.join("vmlinuz"),
    ]
    .into_iter()
    .find(|p| p.is_file())
    .ok_or_else(|| {
        anyhow!(
            "{package} has neither boot/vmlinuz-{release} nor a vmlinuz in {}",
            modules.display()
        )
    })?;
    Ok(Kernel {
        package: package.to_owned(),
        modules,
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
            } else if let Some(&(_, into)) = FOLDED.iter().find(|(m, _)| *m == name)
                && (files.contains_key(into) || builtin.contains(into))
            {
                // Part of `into` on this kernel: loaded (or built in) with it.
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

    fn available(packages: &[(&str, Source)]) -> Available {
        packages
            .iter()
            .map(|(p, s)| ((*p).to_owned(), *s))
            .collect()
    }

    #[test]
    fn lines_pick_their_own_packages() {
        use Source::*;
        let available = available(&[
            ("linux-image-6.1.0-9-cloud-amd64", Host),
            ("linux-image-6.1.0-56-cloud-amd64", Host),
            ("linux-image-6.1.0-56-cloud-amd64-dbg", Host),
            ("linux-image-6.1.0-56-cloud-amd64-unsigned", Host),
            ("linux-image-6.1.0-56-rt-amd64", Host),
            ("linux-image-6.12.117+deb12-cloud-amd64-unsigned", Host),
            ("linux-image-6.12.99+deb12-cloud-amd64-unsigned", Host),
            ("linux-image-6.12.117+deb12-rt-amd64-unsigned", Host),
            ("linux-image-6.12.117+deb12-cloud-amd64", Host),
            ("linux-image-5.10.0-30-cloud-amd64", Bullseye),
            ("linux-image-5.10.0-46-cloud-amd64", Bullseye),
            ("linux-image-5.10.0-46-cloud-amd64-unsigned", Bullseye),
            ("linux-image-5.10.0-46-rt-amd64", Bullseye),
            ("linux-image-5.10.0-46-cloud-amd64-dbg", Bullseye),
            ("linux-image-6.1.0-0.deb11.52-cloud-amd64", Bullseye),
            ("linux-image-cloud-amd64", Bullseye),
            ("linux-image-7.2.13+deb14-cloud-amd64", Sid),
            ("linux-image-7.2.9+deb14-cloud-amd64", Sid),
            ("linux-image-7.10.1+deb14-cloud-amd64", Sid),
            ("linux-image-7.2.13+deb14-cloud-amd64-dbg", Sid),
            ("linux-image-7.2.13+deb14-rt-amd64", Sid),
            ("linux-image-cloud-amd64", Sid),
            // Only bullseye's list offers 5.10; a bullseye backport stays out of 6.1.
            ("linux-image-6.1.0-60-cloud-amd64", Bullseye),
        ]);
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
        assert_eq!(
            r("5.10").as_deref(),
            Some("linux-image-5.10.0-46-cloud-amd64")
        );
        assert_eq!(
            r("5.10.0-30-cloud-amd64").as_deref(),
            Some("linux-image-5.10.0-30-cloud-amd64")
        );
        // Versions compare as numbers: 7.10.1 is newer than 7.2.13.
        assert_eq!(
            r("unstable").as_deref(),
            Some("linux-image-7.10.1+deb14-cloud-amd64")
        );
        assert_eq!(
            r("7.2.13+deb14-cloud-amd64").as_deref(),
            Some("linux-image-7.2.13+deb14-cloud-amd64")
        );
        assert_eq!(r("4.19"), None);
        let line = |n| LINES.iter().find(|l| l.name == n).unwrap();
        assert_eq!(
            line("unstable").packages(&available),
            [
                "linux-image-7.2.9+deb14-cloud-amd64",
                "linux-image-7.2.13+deb14-cloud-amd64",
                "linux-image-7.10.1+deb14-cloud-amd64"
            ]
        );
        assert_eq!(
            line("5.10").packages(&available),
            [
                "linux-image-5.10.0-30-cloud-amd64",
                "linux-image-5.10.0-46-cloud-amd64"
            ]
        );
    }

    #[test]
    fn lines_without_their_source_resolve_to_nothing() {
        let available = available(&[("linux-image-6.1.0-56-cloud-amd64", Source::Host)]);
        assert_eq!(resolve("5.10", &available), None);
        assert_eq!(resolve("unstable", &available), None);
        assert!(
            LINES
                .iter()
                .all(|l| l.name != "5.10" || l.source == Source::Bullseye)
        );
    }

    #[test]
    fn split_kernels_name_their_parts() {
        let depends = "dracut | initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool, \
            linux-base-7.2.13+deb14-cloud-amd64 (= 7.2.13-1), \
            linux-binary-7.2.13+deb14-cloud-amd64 (= 7.2.13-1), \
            linux-modules-7.2.13+deb14-cloud-amd64 (= 7.2.13-1)";
        assert_eq!(
            split_parts("linux-image-7.2.13+deb14-cloud-amd64", depends),
            [
                "linux-base-7.2.13+deb14-cloud-amd64",
                "linux-binary-7.2.13+deb14-cloud-amd64",
                "linux-modules-7.2.13+deb14-cloud-amd64"
            ]
        );
        let old =
            "kmod, linux-base (>= 4.3~), initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool";
        assert!(split_parts("linux-image-5.10.0-46-cloud-amd64", old).is_empty());
    }

    #[test]
    fn host_mirrors_from_deb822_and_one_line_sources() {
        let deb822 = "Types: deb\n# http://snapshot.debian.org/archive/debian/20250520T000000Z\n\
            URIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\n\
            Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n\
            Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n\
            Components: main\n\n\
            deb https://packages.cloud.google.com/apt cloud-sdk-bookworm main\n\
            Types: deb\nURIs: https://deb.nodesource.com/node_20.x\nSuites: nodistro\n";
        assert_eq!(
            mirrors_in(deb822, "bookworm"),
            Some(Mirrors {
                main: "http://deb.debian.org/debian".to_owned(),
                security: Some("http://deb.debian.org/debian-security".to_owned()),
            })
        );
        let one_line = "# deb http://old.example/debian bookworm main\n\
            deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian/ bookworm main\n\
            deb-src http://mirror.example/debian bookworm main\n";
        assert_eq!(
            mirrors_in(one_line, "bookworm"),
            Some(Mirrors {
                main: "http://mirror.example/debian".to_owned(),
                security: None,
            })
        );
        assert_eq!(mirrors_in(one_line, "trixie"), None);
        let list = Source::Bullseye
            .sources_list(&mirrors_in(deb822, "bookworm").unwrap())
            .unwrap();
        assert_eq!(
            list,
            format!(
                "deb [signed-by={KEYRING}] http://deb.debian.org/debian bullseye main\n\
                 deb [signed-by={KEYRING}] http://deb.debian.org/debian-security bullseye-security main\n"
            )
        );
    }

    #[test]
    fn module_names_use_underscores() {
        assert_eq!(module_name("nf_reject_ipv4.ko.xz"), "nf_reject_ipv4");
        assert_eq!(module_name("crc32c-generic.ko"), "crc32c_generic");
    }
}
