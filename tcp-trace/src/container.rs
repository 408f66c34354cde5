//! Container identity: a cgroup v2 id (what `bpf_get_current_cgroup_id` returns, carried
//! by every event as `cgroup_id`) → its cgroup path → (container id, runtime).
//!
//! The id of a cgroup2 cgroup is the inode number of its directory in the cgroup2
//! mount. [`CgroupResolver`] finds that mount in `/proc/self/mountinfo`, walks it once
//! and indexes directory inode → path; a miss rescans (at most once per
//! [`RESCAN_INTERVAL`], at most [`MAX_DIRS`] directories), so a container started after
//! the tracer is found on its first connection. Ids are never reused (64-bit kernfs
//! ids), so entries of removed cgroups stay valid and are kept, up to [`MAX_ENTRIES`].
//!
//! The path → container mapping ([`parse_cgroup_path`]) is pure: podman/libpod
//! (`libpod-<id>`), docker (`docker-<id>.scope`, `/docker/<id>`), containerd
//! (`cri-containerd-<id>.scope`, `nerdctl-<id>.scope`), CRI-O (`crio-<id>`),
//! Kubernetes cgroupfs paths (`/kubepods/<qos>/pod<uid>/<id>`, runtime `cri`), LXC
//! (`lxc.payload.<name>`, `/lxc/<name>`), and otherwise the innermost systemd scope or
//! service (runtime `systemd`, id = unit name). The host root (`/`) and bare slices
//! have no container. Below `kubepods` it also reads the pod UID (`pod<uid>` with the
//! cgroupfs driver, `kubepods[-<qos>]-pod<uid with _>.slice` with the systemd driver);
//! [`PodsLogDir`] names the pod (namespace, name) from the kubelet's `/var/log/pods`.
//!
//! Inside a container the host's cgroup2 tree is usually not mounted (here podman shows
//! only cgroup v1 controllers); then [`CgroupResolver::new`] fails with
//! [`ContainerError::NoCgroup2`] and connections keep their raw `cgroup_id`. Mounting
//! the host's tree read-only (`-v /sys/fs/cgroup:/sys/fs/cgroup:ro`) makes it work.

use std::{
    collections::HashMap,
    fs, io,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde::Serialize;

/// A miss rescans the tree at most this often.
pub const RESCAN_INTERVAL: Duration = Duration::from_millis(200);
/// A scan reads at most this many directories (a host has hundreds to a few thousand).
pub const MAX_DIRS: usize = 200_000;
/// At most this many ids are indexed; beyond it, ids of removed cgroups are dropped.
pub const MAX_ENTRIES: usize = 400_000;
/// Directories deeper than this below the mount are not indexed.
pub const MAX_DEPTH: usize = 64;

/// What a cgroup id resolves to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContainerInfo {
    /// The cgroup's path as in `/proc/PID/cgroup` (`0::PATH`): `/` is the root.
    pub cgroup_path: String,
    /// Container id (64 hex for podman/docker/containerd/CRI-O), LXC container name or
    /// systemd unit name; `None` on the host root and for bare slices.
    pub container_id: Option<String>,
    /// `podman`, `docker`, `containerd`, `crio`, `cri` (a Kubernetes cgroupfs path that
    /// does not name its runtime), `lxc` or `systemd`.
    pub runtime: Option<&'static str>,
    /// Kubernetes: the pod's namespace, from the kubelet's `/var/log/pods` directory
    /// names ([`PodsLogDir`]); `None` when that directory is not visible.
    pub pod_namespace: Option<String>,
    /// Kubernetes: the pod's name (as `pod_namespace`).
    pub pod_name: Option<String>,
    /// Kubernetes: the pod's UID (dashed, `0f2a1b3c-…`), from a `pod<uid>` cgroup below
    /// `kubepods` (the systemd driver writes it with underscores; they are turned back).
    pub pod_uid: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error(
        "no cgroup2 mount is visible in /proc/self/mountinfo (inside a container without \
         the host's cgroup tree mounted?); container ids are not resolved, connections keep \
         their raw cgroup_id (mount the host's tree read-only, e.g. \
         -v /sys/fs/cgroup:/sys/fs/cgroup:ro, to resolve them)"
    )]
    NoCgroup2,
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Process `pid`'s cgroup2 path (its `0::` line in /proc/PID/cgroup) and that cgroup's
/// id, with the cgroup2 tree mounted at `mount`.
pub fn cgroup2_of_pid(mount: &Path, pid: u32) -> Option<(String, u64)> {
    let path = fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("0::").map(str::to_owned))?;
    let id = cgroup_id_of_path(&mount.join(path.trim_start_matches('/'))).ok()?;
    Some((path, id))
}

/// The cgroup id of a cgroup2 directory: its inode number.
pub fn cgroup_id_of_path(path: &Path) -> io::Result<u64> {
    Ok(fs::metadata(path)?.ino())
}

/// A cgroup2 mount from mountinfo: where it is mounted and which cgroup path its root is
/// (`/` for the host's whole tree; a container's own subtree when bind-mounted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup2Mount {
    pub mount_point: PathBuf,
    pub root: String,
}

/// The first cgroup2 mount in a mountinfo text, preferring one whose root is `/`.
pub fn find_cgroup2_mount(mountinfo: &str) -> Option<Cgroup2Mount> {
    let mut mounts = mountinfo.lines().filter_map(|line| {
        // ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let mut f = left.split_whitespace();
        let mut root = unescape_mountinfo(f.nth(3)?);
        // Inside a cgroup namespace (a Kubernetes pod), the host's tree bind-mounted
        // shows as an ancestor of the namespace's root: `/../../..`. Its real path is
        // not known from here; paths are kept relative to the mount, which names the
        // kubepods, pod and container cgroups all the same.
        if root == "/.." || root.starts_with("/../") {
            root = "/".to_owned();
        }
        let mount_point = PathBuf::from(unescape_mountinfo(f.next()?));
        Some(Cgroup2Mount { mount_point, root })
    });
    let first = mounts.next()?;
    if first.root == "/" {
        return Some(first);
    }
    Some(mounts.find(|m| m.root == "/").unwrap_or(first))
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            if let Ok(v) = u8::try_from(v) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Resolves cgroup ids to cgroup paths and containers; see the module docs.
pub struct CgroupResolver {
    mount_point: PathBuf,
    /// The cgroup path of the mount's root, prefixed to every path found below it.
    mount_root: String,
    /// cgroup id → path (relative to the host's cgroup2 root, starting with `/`).
    index: HashMap<u64, String>,
    last_scan: Option<Instant>,
    /// The last scan stopped at MAX_DIRS.
    truncated: bool,
}

impl CgroupResolver {
    /// Finds the cgroup2 mount in `/proc/self/mountinfo` and indexes it.
    pub fn new() -> Result<Self, ContainerError> {
        let path = Path::new("/proc/self/mountinfo");
        let mountinfo = fs::read_to_string(path).map_err(|source| ContainerError::Io {
            path: path.to_owned(),
            source,
        })?;
        let mount = find_cgroup2_mount(&mountinfo).ok_or(ContainerError::NoCgroup2)?;
        let mut r = Self::with_mount(mount.mount_point, &mount.root);
        r.rescan();
        Ok(r)
    }

    /// A resolver over the tree at `mount_point`, whose root is the cgroup `mount_root`
    /// (`/` for a whole cgroup2 hierarchy). Scans lazily, on the first lookup.
    pub fn with_mount(mount_point: impl Into<PathBuf>, mount_root: &str) -> Self {
        let mount_root = mount_root.trim_end_matches('/');
        CgroupResolver {
            mount_point: mount_point.into(),
            mount_root: mount_root.to_owned(),
            index: HashMap::new(),
            last_scan: None,
            truncated: false,
        }
    }

    /// Where the cgroup2 tree is mounted.
    pub fn mount_point(&self) -> &Path {
        &self.mount_point
    }

    /// True when the visible tree is not the host's whole hierarchy (a container's own
    /// subtree bind-mounted): only ids of cgroups below it resolve.
    pub fn partial_view(&self) -> bool {
        !self.mount_root.is_empty()
    }

    /// Number of indexed cgroup ids.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The cgroup path and container of `cgroup_id`; `None` when no cgroup2 directory
    /// with that inode exists (even after a rescan) — e.g. outside the visible tree.
    pub fn resolve(&mut self, cgroup_id: u64) -> Option<ContainerInfo> {
        if cgroup_id == 0 {
            return None;
        }
        if !self.index.contains_key(&cgroup_id) && self.may_rescan() {
            self.rescan();
        }
        self.index.get(&cgroup_id).map(|p| parse_cgroup_path(p))
    }

    /// Every indexed cgroup whose container id starts with `id_prefix` (after a fresh
    /// scan), sorted by cgroup id. A container has several when it has sub-cgroups. An
    /// empty prefix matches every cgroup that belongs to some container.
    pub fn lookup_container(&mut self, id_prefix: &str) -> Vec<(u64, ContainerInfo)> {
        self.rescan();
        let mut found: Vec<(u64, ContainerInfo)> = self
            .index
            .iter()
            .map(|(&id, path)| (id, parse_cgroup_path(path)))
            .filter(|(_, info)| {
                info.container_id
                    .as_deref()
                    .is_some_and(|c| c.starts_with(id_prefix))
            })
            .collect();
        found.sort_by_key(|(id, _)| *id);
        found
    }

    fn may_rescan(&self) -> bool {
        self.last_scan
            .is_none_or(|t| t.elapsed() >= RESCAN_INTERVAL)
    }

    /// Walks the tree and refreshes the index now.
    pub fn rescan(&mut self) {
        self.last_scan = Some(Instant::now());
        let mut fresh = HashMap::new();
        let mut dirs = 0usize;
        self.truncated = false;
        // (directory, cgroup path, depth)
        let root_path = if self.mount_root.is_empty() {
            "/".to_owned()
        } else {
            self.mount_root.clone()
        };
        let mut stack = vec![(self.mount_point.clone(), root_path, 0usize)];
        while let Some((dir, cg_path, depth)) = stack.pop() {
            let Ok(meta) = fs::metadata(&dir) else {
                continue; // removed meanwhile
            };
            fresh.insert(meta.ino(), cg_path.clone());
            dirs += 1;
            if dirs >= MAX_DIRS {
                self.truncated = true;
                break;
            }
            if depth >= MAX_DEPTH {
                continue;
            }
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                // cgroupfs reports DT_DIR for cgroups; no stat needed for control files.
                if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                let name = entry.file_name();
                let name = name.to_string_lossy();
                let child = if cg_path == "/" {
                    format!("/{name}")
                } else {
                    format!("{cg_path}/{name}")
                };
                stack.push((entry.path(), child, depth + 1));
            }
        }
        // Keep removed cgroups' entries (their ids are not reused) while there is room.
        if fresh.len() < MAX_ENTRIES {
            for (id, path) in self.index.drain() {
                if fresh.len() >= MAX_ENTRIES {
                    break;
                }
                fresh.entry(id).or_insert(path);
            }
        }
        self.index = fresh;
    }

    /// The last scan stopped at [`MAX_DIRS`] directories.
    pub fn truncated(&self) -> bool {
        self.truncated
    }
}

fn is_hex_id(s: &str) -> bool {
    s.len() >= 12 && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `<prefix><hex id>` with an optional `.scope` suffix (systemd driver) → the id.
fn prefixed_id<'a>(component: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = component.strip_prefix(prefix)?;
    let id = rest.strip_suffix(".scope").unwrap_or(rest);
    is_hex_id(id).then_some(id)
}

/// The container a single path component names, given the component before it.
fn component_container(
    prev: Option<&str>,
    c: &str,
    in_kubepods: bool,
) -> Option<(String, &'static str)> {
    // Monitors (conmon) are not the container: `libpod-conmon-<id>`, `crio-conmon-<id>`
    // fail the hex test below and fall through to the systemd rule.
    const PREFIXED: &[(&str, &str)] = &[
        ("libpod-", "podman"),
        ("docker-", "docker"),
        ("cri-containerd-", "containerd"),
        ("nerdctl-", "containerd"),
        ("crio-", "crio"),
    ];
    for &(prefix, runtime) in PREFIXED {
        if let Some(id) = prefixed_id(c, prefix) {
            return Some((id.to_owned(), runtime));
        }
    }
    if let Some(name) = c.strip_prefix("lxc.payload.")
        && !name.is_empty()
    {
        return Some((name.to_owned(), "lxc"));
    }
    match prev {
        // cgroupfs driver: /docker/<id>
        Some("docker") if is_hex_id(c) => Some((c.to_owned(), "docker")),
        // LXC before 4.0: /lxc/<name>
        Some("lxc") if !c.is_empty() => Some((c.to_owned(), "lxc")),
        // Kubernetes cgroupfs driver: /kubepods[/<qos>]/pod<uid>/<id>
        Some(p) if in_kubepods && p.starts_with("pod") && is_hex_id(c) => {
            Some((c.to_owned(), "cri"))
        }
        _ => None,
    }
}

/// A Kubernetes pod UID: a UUID (36 characters, 8-4-4-4-12 hex groups) or, for a
/// static pod, the 32-hex hash of its manifest that the kubelet uses as its UID.
pub fn is_pod_uid(s: &str) -> bool {
    (s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        }))
        || (s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The pod UID a cgroup path component below `kubepods` names:
/// cgroupfs driver `pod<uid>`, systemd driver `kubepods[-<qos>]-pod<uid with _>.slice`.
fn pod_uid_of(c: &str) -> Option<String> {
    let raw = if let Some(unit) = c.strip_suffix(".slice") {
        // kubepods-pod<uid>.slice, kubepods-burstable-pod<uid>.slice, and with a
        // kubelet cgroup root (kind): kubelet-kubepods-besteffort-pod<uid>.slice.
        if !is_kubepods(c) {
            return None;
        }
        let (_, uid) = unit.rsplit_once("-pod")?;
        uid.replace('_', "-")
    } else {
        c.strip_prefix("pod")?.to_owned()
    };
    is_pod_uid(&raw).then(|| raw.to_ascii_lowercase())
}

/// `kubepods`, `kubepods.slice`, `kubepods-…`, `kubelet-kubepods-…` (kind's
/// `--cgroup-root=/kubelet`).
fn is_kubepods(c: &str) -> bool {
    let c = c.strip_prefix("kubelet-").unwrap_or(c);
    c == "kubepods" || c.starts_with("kubepods.") || c.starts_with("kubepods-")
}

fn is_systemd_unit(c: &str) -> bool {
    [".scope", ".service"]
        .iter()
        .any(|s| c.len() > s.len() && c.ends_with(s))
}

/// The container a cgroup path (as in `/proc/PID/cgroup`) belongs to.
///
/// A container runtime's cgroup anywhere on the path wins over systemd units (a
/// container running systemd has `.service` cgroups inside its own); of several
/// (nested containers), the innermost. Without one, the innermost `.scope` or
/// `.service` is the unit (runtime `systemd`). The root and bare slices have none.
pub fn parse_cgroup_path(path: &str) -> ContainerInfo {
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let mut container = None;
    let mut unit = None;
    let mut in_kubepods = false;
    let mut pod_uid = None;
    let mut prev = None;
    for &c in &components {
        if is_kubepods(c) {
            in_kubepods = true;
        }
        if in_kubepods && let Some(uid) = pod_uid_of(c) {
            pod_uid = Some(uid);
        }
        if let Some(found) = component_container(prev, c, in_kubepods) {
            container = Some(found);
        } else if is_systemd_unit(c) {
            unit = Some(c);
        }
        prev = Some(c);
    }
    let (container_id, runtime) = match (container, unit) {
        (Some((id, runtime)), _) => (Some(id), Some(runtime)),
        (None, Some(unit)) => (Some(unit.to_owned()), Some("systemd")),
        (None, None) => (None, None),
    };
    let cgroup_path = if components.is_empty() {
        "/".to_owned()
    } else {
        format!("/{}", components.join("/"))
    };
    ContainerInfo {
        cgroup_path,
        container_id,
        runtime,
        pod_namespace: None,
        pod_name: None,
        pod_uid,
    }
}

/// A pod's namespace and name, as the kubelet's log directory names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodName {
    pub namespace: String,
    pub name: String,
}

/// `<namespace>_<name>_<uid>` (a `/var/log/pods` entry) → (uid, namespace and name).
/// Namespaces and pod names cannot contain `_` (DNS labels / subdomains), so the split
/// is unambiguous.
pub fn parse_pod_log_dir(entry: &str) -> Option<(String, PodName)> {
    let (rest, uid) = entry.rsplit_once('_')?;
    let (namespace, name) = rest.split_once('_')?;
    if !is_pod_uid(uid) || namespace.is_empty() || name.is_empty() || name.contains('_') {
        return None;
    }
    Some((
        uid.to_ascii_lowercase(),
        PodName {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        },
    ))
}

/// The kubelet's `/var/log/pods` (or `--pods-log-dir`), read for pod UID → namespace
/// and name. Only directory names are read (never the logs). A UID not found rereads
/// the directory, at most once per [`RESCAN_INTERVAL`]; an absent directory gives
/// nothing (pods then have only their UID).
pub struct PodsLogDir {
    dir: PathBuf,
    pods: HashMap<String, PodName>,
    last_scan: Option<Instant>,
}

impl PodsLogDir {
    pub fn new(dir: impl Into<PathBuf>) -> PodsLogDir {
        PodsLogDir {
            dir: dir.into(),
            pods: HashMap::new(),
            last_scan: None,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Rereads the directory now; false when it cannot be read.
    pub fn rescan(&mut self) -> bool {
        self.last_scan = Some(Instant::now());
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return false;
        };
        // Removed pods are kept (a connection may be rendered after its pod is gone),
        // up to MAX_ENTRIES.
        if self.pods.len() > MAX_ENTRIES {
            self.pods.clear();
        }
        for e in entries.flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            if let Some((uid, pod)) = parse_pod_log_dir(&e.file_name().to_string_lossy()) {
                self.pods.insert(uid, pod);
            }
        }
        true
    }

    /// The namespace and name of the pod with `uid` (dashed, any case).
    pub fn lookup(&mut self, uid: &str) -> Option<&PodName> {
        let uid = uid.to_ascii_lowercase();
        if !self.pods.contains_key(&uid)
            && self
                .last_scan
                .is_none_or(|t| t.elapsed() >= RESCAN_INTERVAL)
        {
            self.rescan();
        }
        self.pods.get(&uid)
    }

    /// Fills `info`'s pod namespace and name from its pod UID.
    pub fn fill(&mut self, info: &mut ContainerInfo) {
        if let Some(uid) = info.pod_uid.as_deref()
            && let Some(p) = self.lookup(uid)
        {
            info.pod_namespace = Some(p.namespace.clone());
            info.pod_name = Some(p.name.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "69e36398ed94f52587b5d1b7aef6c9ebf14ad62c9698dc617244fcacccce94a1";

    fn check(path: &str, id: Option<&str>, runtime: Option<&str>) {
        let info = parse_cgroup_path(path);
        assert_eq!(
            (info.container_id.as_deref(), info.runtime),
            (id, runtime),
            "{path}"
        );
    }

    #[test]
    fn host_root_and_slices_have_no_container() {
        for p in [
            "/",
            "",
            "/system.slice",
            "/user.slice/user-1000.slice",
            "/libpod_parent",
            "/kubepods.slice/kubepods-burstable.slice",
            "/kubepods/burstable/pod1234abcd-5678-90ab-cdef-1234567890ab",
            "/machine.slice",
            "/docker",
            "/process_api/2f90ab4d870c9c3642caa488b0fe5dde",
        ] {
            check(p, None, None);
        }
        assert_eq!(parse_cgroup_path("").cgroup_path, "/");
        assert_eq!(parse_cgroup_path("/a//b/").cgroup_path, "/a/b");
    }

    #[test]
    fn podman() {
        check(
            &format!("/libpod_parent/libpod-{ID}"),
            Some(ID),
            Some("podman"),
        );
        check(
            &format!("/machine.slice/libpod-{ID}.scope"),
            Some(ID),
            Some("podman"),
        );
        check(
            &format!("/machine.slice/libpod-{ID}.scope/container"),
            Some(ID),
            Some("podman"),
        );
        check(
            &format!("/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope"),
            Some(ID),
            Some("podman"),
        );
        // In a pod.
        check(
            &format!(
                "/machine.slice/machine-libpod_pod_0123456789abcdef0123.slice/libpod-{ID}.scope"
            ),
            Some(ID),
            Some("podman"),
        );
        // systemd inside the container: the container wins over its units.
        check(
            &format!("/machine.slice/libpod-{ID}.scope/system.slice/nginx.service"),
            Some(ID),
            Some("podman"),
        );
        // conmon is the monitor, not the container.
        check(
            &format!("/machine.slice/libpod-conmon-{ID}.scope"),
            Some(&format!("libpod-conmon-{ID}.scope")),
            Some("systemd"),
        );
        check(&format!("/libpod_parent/libpod-conmon-{ID}"), None, None);
    }

    #[test]
    fn docker() {
        check(
            &format!("/system.slice/docker-{ID}.scope"),
            Some(ID),
            Some("docker"),
        );
        check(&format!("/docker/{ID}"), Some(ID), Some("docker"));
        // The daemon itself is a systemd service.
        check(
            "/system.slice/docker.service",
            Some("docker.service"),
            Some("systemd"),
        );
        // Docker in Docker: the innermost.
        let inner = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        check(
            &format!("/docker/{ID}/docker/{inner}"),
            Some(inner),
            Some("docker"),
        );
        // Not ids.
        check("/docker/buildkit", None, None);
        check(
            "/system.slice/docker-xyz.scope",
            Some("docker-xyz.scope"),
            Some("systemd"),
        );
    }

    #[test]
    fn containerd_and_kubernetes() {
        check(
            &format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0f2a_1b3c.slice/cri-containerd-{ID}.scope"
            ),
            Some(ID),
            Some("containerd"),
        );
        check(
            &format!("/kubepods.slice/kubepods-pod0f2a_1b3c.slice/cri-containerd-{ID}.scope"),
            Some(ID),
            Some("containerd"),
        );
        check(
            &format!("/system.slice/nerdctl-{ID}.scope"),
            Some(ID),
            Some("containerd"),
        );
        // cgroupfs driver: the runtime is not in the path.
        check(
            &format!("/kubepods/burstable/pod0f2a1b3c-1111-2222-3333-444455556666/{ID}"),
            Some(ID),
            Some("cri"),
        );
        check(
            &format!("/kubepods/pod0f2a1b3c-1111-2222-3333-444455556666/{ID}"),
            Some(ID),
            Some("cri"),
        );
        check(
            &format!("/kubepods/besteffort/pod0f2a1b3c-1111-2222-3333-444455556666/{ID}"),
            Some(ID),
            Some("cri"),
        );
        // kind: a Kubernetes node in a docker container; the pod's container is innermost.
        check(
            &format!(
                "/docker/{}/kubepods/burstable/pod0f2a1b3c-1111-2222-3333-444455556666/{ID}",
                "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
            ),
            Some(ID),
            Some("cri"),
        );
        // A 64-hex directory outside kubepods/docker is not guessed at.
        check(&format!("/somewhere/pod1/{ID}"), None, None);
        check(
            "/system.slice/containerd.service",
            Some("containerd.service"),
            Some("systemd"),
        );
    }

    /// (container id, runtime, pod uid) of a path.
    fn pod_of(path: &str) -> (Option<String>, Option<&'static str>, Option<String>) {
        let i = parse_cgroup_path(path);
        (i.container_id, i.runtime, i.pod_uid)
    }

    /// Path shapes as kubelet + runtime write them (the `0::` line of
    /// /proc/PID/cgroup on cgroup v2, the memory controller's line on v1).
    #[test]
    fn kubernetes_pod_uid_from_real_paths() {
        const UID: &str = "5e9b7c1d-3f2a-4b8e-9c0d-1a2b3c4d5e6f";
        const UID_: &str = "5e9b7c1d_3f2a_4b8e_9c0d_1a2b3c4d5e6f";
        let want = |rt: &'static str| (Some(ID.to_owned()), Some(rt), Some(UID.to_owned()));
        let cases: &[(String, &'static str)] = &[
            // containerd, systemd driver (cgroup v2 and the v1 controllers alike), per QoS.
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{ID}.scope"
                ),
                "containerd",
            ),
            (
                format!(
                    "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/cri-containerd-{ID}.scope"
                ),
                "containerd",
            ),
            // Guaranteed pods sit directly below kubepods.slice.
            (
                format!("/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{ID}.scope"),
                "containerd",
            ),
            // CRI-O, systemd driver.
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/crio-{ID}.scope"
                ),
                "crio",
            ),
            (
                format!("/kubepods.slice/kubepods-pod{UID_}.slice/crio-{ID}.scope"),
                "crio",
            ),
            // CRI-O with cgroup v2: the container's processes live one level lower.
            (
                format!(
                    "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/crio-{ID}.scope/container"
                ),
                "crio",
            ),
            // cgroupfs driver (containerd or CRI-O with cgroup_manager=cgroupfs).
            (format!("/kubepods/burstable/pod{UID}/{ID}"), "cri"),
            (format!("/kubepods/besteffort/pod{UID}/{ID}"), "cri"),
            (format!("/kubepods/pod{UID}/{ID}"), "cri"),
            (format!("/kubepods/burstable/pod{UID}/crio-{ID}"), "crio"),
            // kind (kubelet --cgroup-root=/kubelet inside the node container, cgroupns).
            (
                format!(
                    "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/kubelet-kubepods-burstable-pod{UID_}.slice/cri-containerd-{ID}.scope"
                ),
                "containerd",
            ),
            // The node itself in a docker container (kind without cgroupns, cgroupfs).
            (
                format!(
                    "/docker/0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef/kubepods/besteffort/pod{UID}/{ID}"
                ),
                "cri",
            ),
        ];
        for (path, rt) in cases {
            assert_eq!(pod_of(path), want(rt), "{path}");
        }
        // A cgroup v1 line of /proc/PID/cgroup: the path after the second colon.
        let v1 = format!("11:memory:/kubepods/burstable/pod{UID}/{ID}");
        let path = v1.splitn(3, ':').nth(2).unwrap();
        assert_eq!(pod_of(path), want("cri"));

        // The pod's own cgroup (the sandbox's parent) has the uid and no container.
        assert_eq!(
            pod_of(&format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice"
            )),
            (None, None, Some(UID.to_owned()))
        );
        assert_eq!(
            pod_of(&format!("/kubepods/besteffort/pod{UID}")),
            (None, None, Some(UID.to_owned()))
        );
        // A static pod: the kubelet's UID is the manifest's 32-hex hash.
        let hash = "8a2f0e4b5c6d7e8f9a0b1c2d3e4f5a6b";
        assert_eq!(
            pod_of(&format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{hash}.slice/cri-containerd-{ID}.scope"
            )),
            (
                Some(ID.to_owned()),
                Some("containerd"),
                Some(hash.to_owned())
            )
        );
        // CRI-O's monitor is in the pod but is not a container.
        let conmon = pod_of(&format!(
            "/kubepods.slice/kubepods-pod{UID_}.slice/crio-conmon-{ID}.scope"
        ));
        assert_eq!(conmon.1, Some("systemd"));
        assert_eq!(conmon.2.as_deref(), Some(UID));
        // Upper case in a path is folded (UIDs are compared lower case).
        assert_eq!(
            pod_of(&format!("/kubepods/pod{}/{ID}", UID.to_uppercase()))
                .2
                .as_deref(),
            Some(UID)
        );
        // Not pods: outside kubepods, not a UID, a QoS slice.
        for p in [
            format!("/system.slice/pod{UID}/{ID}"),
            format!(
                "/machine.slice/machine-libpod_pod_{}.slice/libpod-{ID}.scope",
                &ID[..32]
            ),
            "/kubepods/burstable/podnot-a-uid".to_owned(),
            "/kubepods.slice/kubepods-burstable.slice".to_owned(),
            format!(
                "/kubepods.slice/kubepods-burstable-pod{}.slice",
                &UID_[..30]
            ),
        ] {
            assert_eq!(parse_cgroup_path(&p).pod_uid, None, "{p}");
        }
    }

    #[test]
    fn pod_log_dir_names() {
        const UID: &str = "5e9b7c1d-3f2a-4b8e-9c0d-1a2b3c4d5e6f";
        let pod = |ns: &str, name: &str| PodName {
            namespace: ns.into(),
            name: name.into(),
        };
        assert_eq!(
            parse_pod_log_dir(&format!("default_web-7d4b9c8f6-x2x9z_{UID}")),
            Some((UID.to_owned(), pod("default", "web-7d4b9c8f6-x2x9z")))
        );
        assert_eq!(
            parse_pod_log_dir("kube-system_kube-apiserver-node1_8a2f0e4b5c6d7e8f9a0b1c2d3e4f5a6b"),
            Some((
                "8a2f0e4b5c6d7e8f9a0b1c2d3e4f5a6b".to_owned(),
                pod("kube-system", "kube-apiserver-node1")
            ))
        );
        assert_eq!(
            parse_pod_log_dir(&format!(
                "monitoring_node-exporter.v1_{}",
                UID.to_uppercase()
            )),
            Some((UID.to_owned(), pod("monitoring", "node-exporter.v1")))
        );
        for bad in [
            "default_web".to_owned(),
            "default_web_not-a-uid".to_owned(),
            format!("_web_{UID}"),
            format!("default__{UID}"),
            format!("a_b_c_{UID}"),
            UID.to_owned(),
        ] {
            assert_eq!(parse_pod_log_dir(&bad), None, "{bad}");
        }
    }

    #[test]
    fn pods_log_dir_tree() {
        const UID: &str = "5e9b7c1d-3f2a-4b8e-9c0d-1a2b3c4d5e6f";
        const UID2: &str = "0f2a1b3c-1111-2222-3333-444455556666";
        let t = TempDir::new("pods");
        // As the kubelet lays it out: <ns>_<name>_<uid>/<container>/<restart>.log
        let web = t.0.join(format!("shop_web-0_{UID}/web"));
        fs::create_dir_all(&web).unwrap();
        fs::write(web.join("0.log"), "").unwrap();
        fs::create_dir_all(t.0.join("not-a-pod")).unwrap();
        fs::write(t.0.join(format!("stray_file_{UID2}")), "").unwrap();
        let mut d = PodsLogDir::new(&t.0);
        assert_eq!(
            d.lookup(UID),
            Some(&PodName {
                namespace: "shop".into(),
                name: "web-0".into()
            })
        );
        // A pod created later is found on a miss after the interval.
        assert_eq!(d.lookup(UID2), None);
        fs::remove_file(t.0.join(format!("stray_file_{UID2}"))).unwrap();
        fs::create_dir_all(t.0.join(format!("kube-system_coredns-5d78c9869d-abcde_{UID2}")))
            .unwrap();
        std::thread::sleep(RESCAN_INTERVAL);
        assert_eq!(d.lookup(UID2).unwrap().name, "coredns-5d78c9869d-abcde");

        // fill(): cgroup path → uid → namespace and name.
        let mut info = parse_cgroup_path(&format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{ID}.scope",
            UID.replace('-', "_")
        ));
        d.fill(&mut info);
        assert_eq!(info.pod_namespace.as_deref(), Some("shop"));
        assert_eq!(info.pod_name.as_deref(), Some("web-0"));
        assert_eq!(info.pod_uid.as_deref(), Some(UID));
        assert_eq!(info.container_id.as_deref(), Some(ID));

        // Absent directory: only the uid.
        let mut none = PodsLogDir::new(t.0.join("absent"));
        let mut info = parse_cgroup_path(&format!("/kubepods/pod{UID}/{ID}"));
        none.fill(&mut info);
        assert_eq!((info.pod_namespace, info.pod_name), (None, None));
        assert_eq!(info.pod_uid.as_deref(), Some(UID));
    }

    #[test]
    fn crio() {
        check(
            &format!(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod12_34.slice/crio-{ID}.scope"
            ),
            Some(ID),
            Some("crio"),
        );
        check(
            &format!("/kubepods/burstable/pod0f2a1b3c-1111-2222-3333-444455556666/crio-{ID}"),
            Some(ID),
            Some("crio"),
        );
        check(
            &format!("/kubepods.slice/kubepods-pod12_34.slice/crio-conmon-{ID}.scope"),
            Some(&format!("crio-conmon-{ID}.scope")),
            Some("systemd"),
        );
    }

    #[test]
    fn lxc() {
        check("/lxc.payload.web1", Some("web1"), Some("lxc"));
        check(
            "/lxc.payload.web1/system.slice/ssh.service",
            Some("web1"),
            Some("lxc"),
        );
        check("/lxc/web1", Some("web1"), Some("lxc"));
        check("/lxc.monitor.web1", None, None);
    }

    #[test]
    fn systemd_units() {
        check("/init.scope", Some("init.scope"), Some("systemd"));
        check(
            "/system.slice/sshd.service",
            Some("sshd.service"),
            Some("systemd"),
        );
        check(
            "/user.slice/user-1000.slice/session-3.scope",
            Some("session-3.scope"),
            Some("systemd"),
        );
        // The innermost unit: a user service inside user@1000.service.
        check(
            "/user.slice/user-1000.slice/user@1000.service/app.slice/app-foo.scope",
            Some("app-foo.scope"),
            Some("systemd"),
        );
        check(
            "/user.slice/user-1000.slice/user@1000.service/init.scope",
            Some("init.scope"),
            Some("systemd"),
        );
        check(
            "/machine.slice/machine-qemu\\x2d1\\x2dvm.scope/libvirt",
            Some("machine-qemu\\x2d1\\x2dvm.scope"),
            Some("systemd"),
        );
        check(
            "/system.slice/system-getty.slice/getty@tty1.service",
            Some("getty@tty1.service"),
            Some("systemd"),
        );
        // Not units.
        check("/system.slice/.service", None, None);
    }

    #[test]
    fn mountinfo() {
        let host = "\
24 30 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
33 24 0:28 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
42 33 0:29 / /sys/fs/cgroup/cpu rw,nosuid shared:11 - cgroup cgroup rw,cpu
";
        assert_eq!(
            find_cgroup2_mount(host),
            Some(Cgroup2Mount {
                mount_point: "/sys/fs/cgroup/unified".into(),
                root: "/".into()
            })
        );
        let unified = "29 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n";
        assert_eq!(
            find_cgroup2_mount(unified).unwrap().mount_point,
            Path::new("/sys/fs/cgroup")
        );
        // A container's own subtree, then the host's whole tree: the whole tree wins.
        let both = format!(
            "90 84 0:38 /libpod_parent/libpod-{ID} /sys/fs/cgroup ro,nosuid - cgroup2 cgroup2 rw\n\
             91 84 0:38 / /host/cgroup\\040tree ro - cgroup2 cgroup2 rw\n"
        );
        assert_eq!(
            find_cgroup2_mount(&both),
            Some(Cgroup2Mount {
                mount_point: "/host/cgroup tree".into(),
                root: "/".into()
            })
        );
        let own = format!(
            "90 84 0:38 /libpod_parent/libpod-{ID} /sys/fs/cgroup ro - cgroup2 cgroup2 rw\n"
        );
        assert_eq!(
            find_cgroup2_mount(&own).unwrap().root,
            format!("/libpod_parent/libpod-{ID}")
        );
        // podman on a hybrid host: v1 controllers only.
        let v1_only = format!(
            "84 76 0:44 / /sys/fs/cgroup rw,nosuid - tmpfs tmpfs rw,mode=755\n\
             85 84 0:29 /libpod_parent/libpod-{ID} /sys/fs/cgroup/cpu ro - cgroup cgroup rw,cpu\n"
        );
        assert_eq!(find_cgroup2_mount(&v1_only), None);
        assert_eq!(find_cgroup2_mount(""), None);
        // In a pod's cgroup namespace: the container's own tree, then the host's
        // mounted over it (hostPath /sys/fs/cgroup), whose root is outside the namespace.
        let in_pod = "\
1285 1264 0:30 / /sys/fs/cgroup ro,nosuid,nodev,noexec,relatime - cgroup2 cgroup rw
1290 1285 0:30 /../../../.. /sys/fs/cgroup ro,relatime - cgroup2 cgroup2 rw
";
        assert_eq!(
            find_cgroup2_mount(in_pod),
            Some(Cgroup2Mount {
                mount_point: "/sys/fs/cgroup".into(),
                root: "/".into()
            })
        );
        assert_eq!(unescape_mountinfo("a\\011b\\134c\\0"), "a\tb\\c\\0");
    }

    /// A scratch directory removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let d = std::env::temp_dir().join(format!(
                "tcp-trace-cgroup-{tag}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = fs::remove_dir_all(&d);
            fs::create_dir_all(&d).unwrap();
            TempDir(d)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn walker_indexes_a_tree_by_inode() {
        let t = TempDir::new("walk");
        let root = &t.0;
        let podman = root.join(format!("libpod_parent/libpod-{ID}"));
        let sshd = root.join("system.slice/sshd.service");
        fs::create_dir_all(&podman).unwrap();
        fs::create_dir_all(&sshd).unwrap();
        fs::write(root.join("cgroup.procs"), "").unwrap();
        fs::write(podman.join("cgroup.procs"), "").unwrap();

        let mut r = CgroupResolver::with_mount(root, "/");
        assert!(!r.partial_view());
        let id = cgroup_id_of_path(&podman).unwrap();
        assert_eq!(
            r.resolve(id),
            Some(ContainerInfo {
                cgroup_path: format!("/libpod_parent/libpod-{ID}"),
                container_id: Some(ID.into()),
                runtime: Some("podman"),
                pod_namespace: None,
                pod_name: None,
                pod_uid: None,
            })
        );
        // root, libpod_parent, libpod-…, system.slice, sshd.service; files are not indexed.
        assert_eq!(r.len(), 5);
        let root_info = r.resolve(cgroup_id_of_path(root).unwrap()).unwrap();
        assert_eq!(root_info.cgroup_path, "/");
        assert_eq!(root_info.container_id, None);
        let unit = r.resolve(cgroup_id_of_path(&sshd).unwrap()).unwrap();
        assert_eq!(unit.container_id.as_deref(), Some("sshd.service"));
        assert_eq!(r.resolve(0), None);
        assert_eq!(r.resolve(u64::MAX), None);

        // A container created after the scan: a miss rescans (after the interval).
        let other = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let late = root.join(format!("system.slice/docker-{other}.scope"));
        fs::create_dir_all(&late).unwrap();
        let late_id = cgroup_id_of_path(&late).unwrap();
        std::thread::sleep(RESCAN_INTERVAL);
        let info = r.resolve(late_id).expect("found by the rescan on miss");
        assert_eq!(info.container_id.as_deref(), Some(other));
        assert_eq!(info.runtime, Some("docker"));

        // lookup by prefix, sub-cgroups included.
        let sub = podman.join("container");
        fs::create_dir_all(&sub).unwrap();
        let sub_id = cgroup_id_of_path(&sub).unwrap();
        let found = r.lookup_container(&ID[..12]);
        let ids: Vec<u64> = found.iter().map(|(id, _)| *id).collect();
        let mut want = vec![id, sub_id];
        want.sort();
        assert_eq!(ids, want);
        assert!(found.iter().all(|(_, i)| i.runtime == Some("podman")));
        assert_eq!(r.lookup_container(other).len(), 1);
        assert!(r.lookup_container("fffffff").is_empty());
        // Empty prefix: every container cgroup, units included.
        assert_eq!(r.lookup_container("").len(), 4);

        // A removed cgroup keeps its entry: its id is not reused.
        fs::remove_dir_all(&late).unwrap();
        r.rescan();
        assert_eq!(
            r.resolve(late_id).unwrap().container_id.as_deref(),
            Some(other)
        );
    }

    #[test]
    fn walker_prefixes_a_subtree_root() {
        let t = TempDir::new("sub");
        let inner = t.0.join("container");
        fs::create_dir_all(&inner).unwrap();
        let mut r = CgroupResolver::with_mount(&t.0, &format!("/machine.slice/libpod-{ID}.scope/"));
        assert!(r.partial_view());
        let top = r.resolve(cgroup_id_of_path(&t.0).unwrap()).unwrap();
        assert_eq!(top.cgroup_path, format!("/machine.slice/libpod-{ID}.scope"));
        assert_eq!(top.container_id.as_deref(), Some(ID));
        let info = r.resolve(cgroup_id_of_path(&inner).unwrap()).unwrap();
        assert_eq!(
            info.cgroup_path,
            format!("/machine.slice/libpod-{ID}.scope/container")
        );
    }

    #[test]
    fn walker_on_the_real_cgroup2_mount() {
        let Ok(mut r) = CgroupResolver::new() else {
            eprintln!("SKIPPED walker_on_the_real_cgroup2_mount: no cgroup2 mount visible");
            return;
        };
        assert!(!r.is_empty());
        let root_id = cgroup_id_of_path(r.mount_point()).unwrap();
        let root = r.resolve(root_id).expect("the mount's root is indexed");
        assert!(root.cgroup_path.starts_with('/'));
        // Our own cgroup (0::PATH in /proc/self/cgroup) resolves to that path.
        let own = fs::read_to_string("/proc/self/cgroup").unwrap();
        let own = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .expect("a cgroup2 line in /proc/self/cgroup")
            .to_owned();
        if !r.partial_view() {
            let rel = own.trim_start_matches('/');
            let dir = r.mount_point().join(rel);
            let id = cgroup_id_of_path(&dir).unwrap();
            let info = r.resolve(id).expect("own cgroup resolves");
            assert_eq!(
                info.cgroup_path,
                if rel.is_empty() { "/".into() } else { own }
            );
        }
        // Every indexed path is a directory under the mount with that inode.
        let all: Vec<(u64, String)> = r.index.iter().map(|(k, v)| (*k, v.clone())).collect();
        for (id, path) in all.iter().take(500) {
            let dir = r.mount_point().join(path.trim_start_matches('/'));
            if let Ok(ino) = cgroup_id_of_path(&dir) {
                assert_eq!(ino, *id, "{path}");
            }
        }
    }
}
