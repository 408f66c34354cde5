//! The guest's root: a tree of files, written as one cpio (newc) archive through gzip.
//!
//! The guest is laid out like a merged-/usr Debian: /bin, /sbin, /lib and /lib64 are
//! symlinks into /usr. Host files keep their (canonical) host path, so the dynamic loader
//! finds the libraries where `ldd` saw them and the test binaries find tcp-trace where
//! cargo built it (its path is compiled into them).

use std::{
    collections::BTreeMap,
    fs,
    io::{BufWriter, Write},
    os::unix::fs::PermissionsExt,
    path::{Component, Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, Result, anyhow, bail};

enum Entry {
    Dir,
    File { data: Data, mode: u32 },
    Symlink(String),
    CharDev { major: u32, minor: u32, mode: u32 },
}

enum Data {
    Host(PathBuf),
    Bytes(Vec<u8>),
}

/// Guest paths (relative, no leading `/`) to entries. A `BTreeMap` of paths orders
/// every directory before what it contains, as the kernel's unpacker needs.
#[derive(Default)]
pub struct Tree {
    entries: BTreeMap<PathBuf, Entry>,
}

const MERGED: &[(&str, &str)] = &[
    ("bin", "usr/bin"),
    ("sbin", "usr/sbin"),
    ("lib", "usr/lib"),
    ("lib64", "usr/lib64"),
];

/// `/lib/x/y` → `usr/lib/x/y`: the guest path of an absolute host path.
fn guest_path(path: &Path) -> Result<PathBuf> {
    let rel = path
        .strip_prefix("/")
        .map_err(|_| anyhow!("{} is not absolute", path.display()))?;
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        bail!("{} is not a plain path", path.display());
    }
    for (link, target) in MERGED {
        if let Ok(rest) = rel.strip_prefix(link) {
            return Ok(Path::new(target).join(rest));
        }
    }
    Ok(rel.to_path_buf())
}

/// The host path with its directory canonicalized (symlinks resolved) and its file
/// name kept: `libfoo.so.1` stays `libfoo.so.1` even when it links to `libfoo.so.1.2`.
fn canonical_dir(path: &Path) -> Result<PathBuf> {
    let parent = path
        .parent()
        .ok_or_else(|| anyhow!("{} has no parent", path.display()))?;
    let name = path
        .file_name()
        .ok_or_else(|| anyhow!("{} has no file name", path.display()))?;
    Ok(fs::canonicalize(parent)
        .with_context(|| format!("resolving {}", parent.display()))?
        .join(name))
}

impl Tree {
    pub fn new() -> Tree {
        let mut t = Tree::default();
        for (link, target) in MERGED {
            t.entries
                .insert(PathBuf::from(link), Entry::Symlink((*target).to_owned()));
        }
        for dir in ["usr/bin", "usr/sbin", "usr/lib", "usr/lib64", "root", "tmp"] {
            t.dir(dir);
        }
        // The kernel opens /dev/console for /init before anything is mounted.
        t.add(
            "dev/console",
            Entry::CharDev {
                major: 5,
                minor: 1,
                mode: 0o600,
            },
        );
        t.add(
            "dev/null",
            Entry::CharDev {
                major: 1,
                minor: 3,
                mode: 0o666,
            },
        );
        t
    }

    fn dir(&mut self, path: impl AsRef<Path>) {
        let mut p = PathBuf::new();
        for c in path.as_ref().components() {
            p.push(c);
            self.entries.entry(p.clone()).or_insert(Entry::Dir);
        }
    }

    fn add(&mut self, path: impl AsRef<Path>, entry: Entry) {
        let path = path.as_ref();
        if let Some(parent) = path.parent() {
            self.dir(parent);
        }
        self.entries.insert(path.to_path_buf(), entry);
    }

    pub fn contains(&self, path: impl AsRef<Path>) -> bool {
        self.entries.contains_key(path.as_ref())
    }

    /// Bytes at an absolute guest path (`/lib/…` lands in `usr/lib/…`).
    pub fn bytes(&mut self, path: &str, data: Vec<u8>, mode: u32) -> Result<()> {
        let guest = guest_path(Path::new(path))?;
        self.add(
            guest,
            Entry::File {
                data: Data::Bytes(data),
                mode,
            },
        );
        Ok(())
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> Result<()> {
        let guest = guest_path(Path::new(path))?;
        self.add(guest, Entry::Symlink(target.to_owned()));
        Ok(())
    }

    /// A host file at its own (canonical-directory) path, world-readable (the tests
    /// run tcp-trace as uid 65534 too). Returns the guest path, absolute.
    pub fn host_file(&mut self, path: &Path) -> Result<PathBuf> {
        let host = canonical_dir(path)?;
        let guest = guest_path(&host)?;
        let meta = fs::metadata(&host).with_context(|| format!("reading {}", host.display()))?;
        if !meta.is_file() {
            bail!("{} is not a file", host.display());
        }
        let exec = meta.permissions().mode() & 0o111 != 0;
        self.add(
            &guest,
            Entry::File {
                data: Data::Host(host),
                mode: if exec { 0o755 } else { 0o644 },
            },
        );
        Ok(Path::new("/").join(guest))
    }

    /// A dynamically linked program with every library `ldd` names, and the loader.
    pub fn program(&mut self, path: &Path) -> Result<PathBuf> {
        for lib in ldd(path)? {
            self.host_file(&lib)?;
        }
        self.host_file(path)
    }

    /// Every file under `dir`, recursively, at its host path.
    pub fn host_tree(&mut self, dir: &Path) -> Result<()> {
        for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let entry = entry?;
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                self.host_tree(&path)?;
            } else {
                self.host_file(&path)?;
            }
        }
        Ok(())
    }

    /// busybox (static) and a link for each of its applets not already in the tree.
    pub fn busybox(&mut self, busybox: &Path) -> Result<()> {
        let guest = self.host_file(busybox)?;
        let list = Command::new(busybox)
            .arg("--list")
            .output()
            .with_context(|| format!("running {} --list", busybox.display()))?;
        if !list.status.success() {
            bail!("`{} --list` failed", busybox.display());
        }
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            let applet = applet.trim();
            if applet.is_empty() || applet.contains('/') || applet == "busybox" {
                continue;
            }
            let link = Path::new("usr/bin").join(applet);
            let in_sbin = Path::new("usr/sbin").join(applet);
            if !self.contains(&link) && !self.contains(&in_sbin) {
                self.add(link, Entry::Symlink(guest.to_string_lossy().into_owned()));
            }
        }
        Ok(())
    }

    /// Writes the archive through `gzip -n` to `out`.
    pub fn write_gz(&self, out: &Path) -> Result<()> {
        let file = fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
        let mut gzip = Command::new("gzip")
            .args(["-n", "-c"])
            .stdin(Stdio::piped())
            .stdout(file)
            .spawn()
            .context("starting gzip")?;
        let stdin = gzip.stdin.take().expect("piped");
        let mut w = BufWriter::with_capacity(1 << 20, stdin);
        self.write_cpio(&mut w)?;
        w.flush()?;
        drop(w);
        let status = gzip.wait().context("waiting for gzip")?;
        if !status.success() {
            bail!("gzip failed writing {}", out.display());
        }
        Ok(())
    }

    fn write_cpio(&self, w: &mut impl Write) -> Result<()> {
        for (ino, (path, entry)) in (1..).zip(&self.entries) {
            let name = path.to_string_lossy();
            let (mode, data, rdev): (u32, Vec<u8>, (u32, u32)) = match entry {
                Entry::Dir => (0o040_755, Vec::new(), (0, 0)),
                Entry::File { data, mode } => {
                    let bytes = match data {
                        Data::Host(p) => {
                            fs::read(p).with_context(|| format!("reading {}", p.display()))?
                        }
                        Data::Bytes(b) => b.clone(),
                    };
                    (0o100_000 | mode, bytes, (0, 0))
                }
                Entry::Symlink(target) => (0o120_777, target.as_bytes().to_vec(), (0, 0)),
                Entry::CharDev { major, minor, mode } => {
                    (0o020_000 | mode, Vec::new(), (*major, *minor))
                }
            };
            let nlink = if matches!(entry, Entry::Dir) { 2 } else { 1 };
            cpio_entry(w, ino, mode, nlink, rdev, &name, &data)?;
        }
        cpio_entry(w, 0, 0, 1, (0, 0), "TRAILER!!!", &[])?;
        Ok(())
    }
}

/// One cpio "newc" record: a 110-byte ASCII header, the NUL-terminated name padded to
/// 4 bytes, the data padded to 4 bytes. Owner root, mtime 0 (reproducible).
fn cpio_entry(
    w: &mut impl Write,
    ino: u32,
    mode: u32,
    nlink: u32,
    rdev: (u32, u32),
    name: &str,
    data: &[u8],
) -> Result<()> {
    let namesize = name.len() + 1;
    let filesize = u32::try_from(data.len()).context("file too large for cpio")?;
    let fields = [
        ino,
        mode,
        0,
        0,
        nlink,
        0,
        filesize,
        0,
        0,
        rdev.0,
        rdev.1,
        namesize as u32,
        0,
    ];
    let mut header = String::from("070701");
    for f in fields {
        header.push_str(&format!("{f:08X}"));
    }
    w.write_all(header.as_bytes())?;
    w.write_all(name.as_bytes())?;
    w.write_all(&[0])?;
    w.write_all(&[0; 3][..pad4(110 + namesize)])?;
    w.write_all(data)?;
    w.write_all(&[0; 3][..pad4(data.len())])?;
    Ok(())
}

fn pad4(n: usize) -> usize {
    (4 - n % 4) % 4
}

/// The libraries `ldd` resolves for `path`, the dynamic loader included; none for a
/// static program.
fn ldd(path: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .context("running ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        if text.contains("not a dynamic executable")
            || String::from_utf8_lossy(&out.stderr).contains("not a dynamic executable")
        {
            return Ok(Vec::new());
        }
        bail!(
            "`ldd {}` failed: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let mut libs = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.contains("not found") {
            bail!("{}: library {line}", path.display());
        }
        let lib = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(lib) = lib.filter(|l| l.starts_with('/')) {
            libs.push(PathBuf::from(lib));
        }
    }
    Ok(libs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_paths_land_in_merged_usr() {
        assert_eq!(
            guest_path(Path::new("/lib/x86_64-linux-gnu/libc.so.6")).unwrap(),
            Path::new("usr/lib/x86_64-linux-gnu/libc.so.6")
        );
        assert_eq!(
            guest_path(Path::new("/work/main/target/release/tcp-trace")).unwrap(),
            Path::new("work/main/target/release/tcp-trace")
        );
        assert!(guest_path(Path::new("/a/../b")).is_err());
    }

    #[test]
    fn cpio_records_are_padded() {
        let mut t = Tree::default();
        t.bytes("/etc/x", b"hello".to_vec(), 0o644).unwrap();
        let mut out = Vec::new();
        t.write_cpio(&mut out).unwrap();
        assert_eq!(out.len() % 4, 0);
        assert!(out.starts_with(b"070701"));
        let text = String::from_utf8_lossy(&out);
        // etc (dir) before etc/x, then the trailer.
        let etc = text.find("etc\0").unwrap();
        let x = text.find("etc/x\0").unwrap();
        assert!(etc < x && x < text.find("TRAILER!!!").unwrap());
        assert!(text.contains("hello"));
    }
}
