//! Privileged container tests (issue #8): the static tcp-trace (target/dist/tcp-trace,
//! `cargo xtask dist`) in a real podman container with only CAP_BPF + CAP_PERFMON, as
//! an unprivileged user, without tracefs; the seccomp profile deploy/seccomp.json that
//! makes it possible; and the cgroup id of a container's connection resolved to the
//! container id podman reports.
//!
//! No image can be pulled here: each container runs a directory (`--rootfs DIR`, which
//! must be the last option: podman takes the first argument after it as the rootfs)
//! holding the binary and busybox-static. Needs podman and runc (`cargo xtask setup`).
mod common;

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::PathBuf,
    process::{Command, Stdio},
};

use common::*;
use tcp_trace::container::{CgroupResolver, cgroup_id_of_path};

fn seccomp_profile() -> PathBuf {
    let p = workspace_path("deploy/seccomp.json");
    assert!(p.is_file(), "{} is missing", p.display());
    p.canonicalize().unwrap()
}

/// A container root directory: /tcp-trace, /bin/busybox and applet links. Removed on drop.
struct Rootfs(TempDir);

impl Rootfs {
    fn new(tag: &str) -> Rootfs {
        let dir = TempDir::new(&format!("rootfs-{tag}"));
        busybox_bin(&dir.0, &["sh", "nc", "sleep", "cat"]);
        fs::set_permissions(&dir.0, fs::Permissions::from_mode(0o755)).unwrap();
        copy_executable(&dist_binary(), &dir.0.join("tcp-trace"));
        Rootfs(dir)
    }
}

/// A detached container, removed (killed) on drop.
struct Container {
    id: String,
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args(["rm", "-f", "-t", "0", &self.id])
            .stdout(Stdio::null())
            .status();
    }
}

/// `podman --runtime runc run` with least privilege: no capability but those in
/// `caps`, user nobody, the lowered ulimits this machine needs (root here lacks
/// CAP_SYS_RESOURCE), host network. `extra` goes before `--rootfs DIR CMD...`.
fn podman_run(rootfs: &Rootfs, caps: &[&str], extra: &[&str], cmd: &[&str]) -> Command {
    let mut c = Command::new("podman");
    c.args(["--runtime", "runc", "run", "--cap-drop=ALL"]);
    for cap in caps {
        c.arg(format!("--cap-add={cap}"));
    }
    c.args([
        "--user",
        "65534:65534",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1000:1000",
        "--network",
        "host",
    ]);
    c.args(extra);
    c.arg("--rootfs").arg(&rootfs.0.0).args(cmd);
    c
}

fn seccomp_opt() -> String {
    format!("seccomp={}", seccomp_profile().display())
}

/// The tracer in a container (CAP_BPF + CAP_PERFMON, deploy/seccomp.json, no tracefs)
/// captures a host connection's full sequence.
#[test]
fn tracer_in_container_with_cap_bpf_perfmon() {
    if !require_root("tracer_in_container_with_cap_bpf_perfmon") {
        return;
    }
    require_podman();
    let rootfs = Rootfs::new("bpf");
    let port = free_port();
    let ps = port.to_string();
    let seccomp = seccomp_opt();
    let mut cmd = podman_run(
        &rootfs,
        &["BPF", "PERFMON"],
        &["--rm", "--security-opt", &seccomp],
        &[
            "/tcp-trace",
            "--json",
            "--view",
            "all",
            "-P",
            &ps,
            "--duration",
            "60",
        ],
    );
    // Stopped by SIGINT to podman, which proxies it to the tracer; it detaches and
    // exits 0.
    let (lines, x) = traced_cmd(&mut cmd, |t| {
        // No tracefs in the container: auto chose tp_btf (or raw) tracepoints.
        let attached = t.startup.last().unwrap();
        assert!(
            !attached.contains("=tracepoint"),
            "classic tracepoints without tracefs? {attached}"
        );
        server_and_client(None, "127.0.0.1", port, &DESIGN_SERVER, &[])
    });
    // Both sequences, both returns with host pids (although the tracer has its own pid
    // namespace), nothing lost.
    assert_design_connection(&lines, &events(&lines), port, &x);
}

/// With the runtime's default seccomp profile bpf() is EPERM for CAP_BPF alone: the
/// tracer says so in one line and exits 1.
#[test]
fn tracer_in_container_default_seccomp_fails_clearly() {
    if !require_root("tracer_in_container_default_seccomp_fails_clearly") {
        return;
    }
    require_podman();
    let rootfs = Rootfs::new("default-seccomp");
    let port = free_port().to_string();
    let out = podman_run(
        &rootfs,
        &["BPF", "PERFMON"],
        &["--rm"],
        &[
            "/tcp-trace",
            "--json",
            "--view",
            "all",
            "-P",
            &port,
            "--duration",
            "5",
        ],
    )
    .stdin(Stdio::null())
    .output()
    .expect("podman run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("stderr:\n{stderr}stdout:\n{stdout}");
    assert_eq!(out.status.code(), Some(1), "exit code; stderr:\n{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one error line, got:\n{stderr}");
    assert!(stdout.trim().is_empty(), "nothing on stdout: {stdout}");
}

/// A busybox `nc` in a second container connects to a host server: its events carry
/// the container's cgroup id, which the resolver maps to the id podman reports.
#[test]
fn container_connection_resolves_to_podman_container_id() {
    if !require_root("container_connection_resolves_to_podman_container_id") {
        return;
    }
    require_podman();
    let rootfs = Rootfs::new("nc");
    let port = free_port();
    let t = Tracer::on_port(port, &["--json", "--view", "all"]);
    let server = start_server(None, "127.0.0.1", port, &["--accepts", "1"]);

    // Stays alive after the connection so that its cgroup still exists when resolved.
    // nc stays 1 s after connecting, as a real client would: short enough, and long
    // enough for its /proc/PID/cgroup to be read while its first events are rendered.
    let script = format!("sleep 1 | nc 127.0.0.1 {port}; sleep 120");
    let out = podman_run(&rootfs, &[], &["-d"], &["/bin/sh", "-c", &script])
        .stdin(Stdio::null())
        .output()
        .expect("podman run -d");
    assert!(
        out.status.success(),
        "podman run -d failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let container = Container {
        id: String::from_utf8_lossy(&out.stdout).trim().to_owned(),
    };
    let id = &container.id;
    assert!(
        id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "container id {id:?}"
    );
    // The host server returns once nc has connected and closed.
    server.exits_ok();
    let lines = t.finish();
    let evs = events(&lines);

    // podman agrees on the id.
    let ps_out = Command::new("podman")
        .args(["ps", "--no-trunc", "--format", "{{.ID}}"])
        .output()
        .expect("podman ps");
    let listed = String::from_utf8_lossy(&ps_out.stdout);
    assert!(
        listed.lines().any(|l| l.trim() == id),
        "{id} not in `podman ps --no-trunc`:\n{listed}"
    );

    // The nc socket: first transition CLOSE>SYN_SENT towards the port, in nc's context.
    let sk = find_socket(&evs, "CLOSE", "SYN_SENT", 0, port as u64);
    let first = evs
        .iter()
        .find(|e| s(e, "skaddr") == sk && e["kind"] == "transition")
        .unwrap();
    let cgid = first["cgroup_id"]
        .as_u64()
        .unwrap_or_else(|| panic!("no cgroup_id in {first}"));
    assert_ne!(cgid, 0);
    // Every event of the nc socket carries the same id (softirq ones included).
    for e in evs.iter().filter(|e| s(e, "skaddr") == sk) {
        assert_eq!(e["cgroup_id"], cgid, "{e}");
    }

    let mut resolver = CgroupResolver::new().expect("the host has a cgroup2 mount");
    let info = resolver
        .resolve(cgid)
        .unwrap_or_else(|| panic!("cgroup id {cgid} does not resolve"));
    eprintln!("cgroup {cgid} -> {info:?}");
    assert_eq!(info.container_id.as_deref(), Some(id.as_str()));
    assert_eq!(info.runtime, Some("podman"));
    assert!(
        info.cgroup_path.contains(id.as_str()),
        "{}",
        info.cgroup_path
    );

    // The same cgroup, seen from podman's side: the container's init process.
    let pid_out = Command::new("podman")
        .args(["inspect", "--format", "{{.State.Pid}}", id])
        .output()
        .expect("podman inspect");
    let pid = String::from_utf8_lossy(&pid_out.stdout).trim().to_owned();
    let cgroup = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let path = cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("cgroup2 line");
    assert_eq!(path, info.cgroup_path);
    let dir = resolver.mount_point().join(path.trim_start_matches('/'));
    assert_eq!(cgroup_id_of_path(&dir).unwrap(), cgid);

    // --container's lookup: the short id finds this cgroup.
    let found = resolver.lookup_container(&id[..12]);
    assert!(
        found.iter().any(|(c, _)| *c == cgid),
        "lookup_container({}) = {found:?}",
        &id[..12]
    );

    // The client connection carries the same cgroup id.
    let conn = lines
        .iter()
        .find(|l| l["type"] == "connection" && l["role"] == "client" && l["dport"] == port as u64)
        .unwrap_or_else(|| panic!("no client connection to port {port} in {lines:#?}"));
    assert_eq!(conn["cgroup_id"], cgid, "{conn}");
    // ... and tcp-trace itself resolved it to the container (connection and events).
    assert_eq!(conn["container_id"], id.as_str(), "{conn}");
    assert_eq!(conn["container_runtime"], "podman", "{conn}");
    // Events of a container that has just started resolve too (through the owner's
    // /proc/PID/cgroup while the cgroup tree has not been rescanned yet).
    for e in evs
        .iter()
        .filter(|e| s(e, "skaddr") == sk && e["pid"].is_u64())
    {
        assert_eq!(e["container_id"], id.as_str(), "{e}");
    }

    // --container <short id>: in the kernel, only that container's sockets pass. A
    // host client and a client in the container connect to the same host server.
    let t = Tracer::on_port(port, &["--json", "--view", "all", "--container", &id[..12]]);
    let server = start_server(
        None,
        "127.0.0.1",
        port,
        &["--accepts", "2", "--close-delay-ms", "0"],
    );
    run_client(None, "127.0.0.1", port, &[]);
    let exec = Command::new("podman")
        .args([
            "exec",
            id,
            "/bin/sh",
            "-c",
            &format!("nc 127.0.0.1 {port} </dev/null"),
        ])
        .stdin(Stdio::null())
        .output()
        .expect("podman exec");
    assert!(
        exec.status.success(),
        "podman exec: {}",
        String::from_utf8_lossy(&exec.stderr)
    );
    server.exits_ok();
    let lines = t.finish();
    let evs = events(&lines);
    assert!(!evs.is_empty(), "the container's connection must show");
    for e in &evs {
        assert_eq!(
            e["cgroup_id"], cgid,
            "--container let another cgroup through: {e}"
        );
        assert_eq!(e["container_id"], id.as_str(), "{e}");
    }
    let sk = find_socket(&evs, "SYN_SENT", "ESTABLISHED", 0, port as u64);
    assert_eq!(transitions_of(&evs, &sk).len(), 5);
    drop(container);
}
