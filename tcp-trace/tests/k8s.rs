//! Privileged Kubernetes test (issue #15, item 2): the pod template of
//! deploy/kubernetes/daemonset.yaml, taken out of the DaemonSet into a Pod manifest, run
//! by `podman kube play` with the static tcp-trace (target/dist/tcp-trace, `cargo xtask
//! dist`) in a local image; a second pod's connection must be attributed to it.
//!
//! What podman 4.3's `kube play` does with the template, as found here:
//! - `capabilities` (drop ALL, add BPF and PERFMON) and `runAsUser` are honoured.
//! - `securityContext.seccompProfile` (type Localhost) is ignored: podman 4.3 reads only
//!   the older annotations (`container.seccomp.security.alpha.kubernetes.io/<name>:
//!   localhost/<file>`, below `--seccomp-profile-root`). The test adds that annotation
//!   naming the same file, so the shipped profile is what lets bpf() through.
//! - `hostPID: true` is ignored (the pod gets its own pid namespace); the tracer then
//!   cannot read /proc/PID/cgroup of host pids and relies on its cgroup tree scans.
//! - Pods' cgroups are podman's, not the kubelet's: with the cgroupfs manager of this
//!   host `/libpod_parent/<podman pod id>/libpod-<container id>` (systemd manager:
//!   `/machine.slice/machine-libpod_pod_<pod id>.slice/libpod-<id>.scope`), no
//!   `kubepods` and no pod UID, so a pod played by podman has a container id and null
//!   pod fields. The pod naming is checked with a third container placed by
//!   `podman run --cgroup-parent /kubepods/besteffort/pod<uid>` (the kubelet's cgroupfs
//!   layout) and a `/var/log/pods/<namespace>_<name>_<uid>` directory made in a temp dir
//!   and mounted where the DaemonSet mounts the node's.
//!
//! No image is pulled: the tracer's image is built from deploy/Containerfile (the static
//! binary alone); the other pods' image, also every pod's infra image (`/pause`, a
//! sleep), from a directory holding busybox-static. The infra image is set in a
//! containers.conf of the test's own (CONTAINERS_CONF), with the runc runtime and the
//! lowered ulimits this machine needs.
mod common;

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use common::*;
use serde_json::Value;

/// podman with the test's containers.conf.
fn podman(conf: &Path) -> Command {
    let mut c = Command::new("podman");
    c.env("CONTAINERS_CONF", conf).stdin(Stdio::null());
    c
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Removes pods and containers made by the test (by name), whatever happens.
struct Cleanup {
    conf: PathBuf,
    pods: Vec<String>,
    containers: Vec<String>,
    images: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = podman(&self.conf)
                .args(["rm", "-f", "-t", "0", c])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        for p in &self.pods {
            let _ = podman(&self.conf)
                .args(["pod", "rm", "-f", "-t", "0", p])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        for i in &self.images {
            let _ = podman(&self.conf)
                .args(["rmi", "-f", i])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// The DaemonSet's pod template as a Pod manifest: the lines below `template:`
/// dedented, under `apiVersion: v1` / `kind: Pod`, with a name.
fn pod_from_daemonset(daemonset: &str, name: &str, namespace: &str) -> String {
    let doc = daemonset
        .split("\n---\n")
        .find(|d| d.contains("\nkind: DaemonSet\n"))
        .expect("a DaemonSet document");
    let mut lines = doc.lines().skip_while(|l| l.trim_end() != "  template:");
    assert!(lines.next().is_some(), "no `  template:` in the DaemonSet");
    let mut out = String::from("apiVersion: v1\nkind: Pod\n");
    for l in lines {
        if !l.trim().is_empty() && !l.starts_with("    ") {
            break; // back at the DaemonSet spec's level
        }
        let l = l.get(4..).unwrap_or("");
        out.push_str(l);
        out.push('\n');
        if l == "metadata:" {
            out.push_str(&format!("  name: {name}\n  namespace: {namespace}\n"));
        }
    }
    assert!(out.contains("\nspec:\n"), "{out}");
    out
}

/// Replaces exactly one occurrence of `from` (so that a change to the DaemonSet shows
/// here as a clear failure instead of a silently different test).
fn replace_once(s: &str, from: &str, to: &str) -> String {
    assert_eq!(
        s.matches(from).count(),
        1,
        "expected `{from}` once in the manifest:\n{s}"
    );
    s.replacen(from, to, 1)
}

/// The tracer's JSON lines so far (`podman logs` of its container).
fn json_lines(conf: &Path, ctr: &str) -> (Vec<Value>, String) {
    let out = podman(conf)
        .args(["logs", ctr])
        .output()
        .expect("podman logs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let lines = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    (lines, stderr)
}

fn client_conn(lines: &[Value], port: u16) -> Option<&Value> {
    lines
        .iter()
        .find(|l| l["type"] == "connection" && l["role"] == "client" && l["dport"] == port)
}

/// A busybox script: a server on `port` in the same network namespace, then one
/// connection to it, then a long sleep (the cgroup stays while the tracer names it).
fn nc_script(port: u16) -> String {
    format!(
        "nc -l -p {port} >/dev/null & sleep 2; i=0; \
         while [ $i -lt 20 ]; do echo hi | nc -w 2 127.0.0.1 {port} && break; \
         i=$((i+1)); sleep 0.5; done; sleep 600"
    )
}

#[test]
fn daemonset_pod_attributes_a_second_pods_connection() {
    if !require_root("daemonset_pod_attributes_a_second_pods_connection") {
        return;
    }
    require_podman();
    let tag = std::process::id();
    let scratch = TempDir::new("k8s");
    let dir = &scratch.0;

    // The tracer's image, built from deploy/Containerfile as docs/kubernetes.md says
    // (context: a directory holding the static binary).
    let dist = dir.join("dist");
    fs::create_dir_all(&dist).unwrap();
    copy_executable(&dist_binary(), &dist.join("tcp-trace"));
    // The other pods' image and every pod's infra image: busybox and /pause.
    let ctx = dir.join("ctx");
    busybox_bin(&ctx, &["sh", "nc", "sleep", "cat", "wget", "echo"]);
    fs::write(ctx.join("pause"), "#!/bin/sh\nexec /bin/sleep 1000000\n").unwrap();
    fs::set_permissions(ctx.join("pause"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(
        ctx.join("Containerfile"),
        "FROM scratch\nCOPY bin /bin\nCOPY pause /pause\nCMD [\"/pause\"]\n",
    )
    .unwrap();
    let image = format!("localhost/tcp-trace-k8s-test:tracer-{tag}");
    let busybox = format!("localhost/tcp-trace-k8s-test:busybox-{tag}");
    let conf = dir.join("containers.conf");
    fs::write(
        &conf,
        format!(
            "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1000:1000\"]\n\
             [engine]\nruntime = \"runc\"\ninfra_image = \"{busybox}\"\ninfra_command = \"/pause\"\n"
        ),
    )
    .unwrap();
    let mut cleanup = Cleanup {
        conf: conf.clone(),
        pods: Vec::new(),
        containers: Vec::new(),
        images: vec![image.clone(), busybox.clone()],
    };
    ok(
        podman(&conf)
            .args(["build", "-q", "-t", &image, "-f"])
            .arg(workspace_path("deploy/Containerfile"))
            .arg(&dist)
            .output()
            .unwrap(),
        "podman build -f deploy/Containerfile",
    );
    ok(
        podman(&conf)
            .args(["build", "-q", "-t", &busybox])
            .arg(&ctx)
            .output()
            .unwrap(),
        "podman build (busybox)",
    );

    // The seccomp profile where the kubelet would have it (install step of the docs).
    let seccomp_root = dir.join("kubelet-seccomp");
    fs::create_dir_all(&seccomp_root).unwrap();
    fs::copy(
        workspace_path("deploy/seccomp.json"),
        seccomp_root.join("tcp-trace.json"),
    )
    .unwrap();

    // The node's /var/log/pods, with the pod of the third container.
    let pod_uid = "5e9b7c1d-3f2a-4b8e-9c0d-00000000beef";
    let pods_dir = dir.join("pods");
    fs::create_dir_all(pods_dir.join(format!("shop_web-1_{pod_uid}/web"))).unwrap();
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();

    let (p2, p3) = (free_port(), free_port());
    let ds = fs::read_to_string(workspace_path("deploy/kubernetes/daemonset.yaml")).unwrap();
    let tracer_pod = format!("tcp-trace-{tag}");
    let mut pod = pod_from_daemonset(&ds, &tracer_pod, "tcp-trace");
    pod = replace_once(
        &pod,
        "image: localhost/tcp-trace:0.1.0",
        &format!("image: {image}"),
    );
    pod = replace_once(
        &pod,
        "imagePullPolicy: IfNotPresent",
        "imagePullPolicy: Never",
    );
    // JSON lines to read back (the DaemonSet runs headless: --view none), limited to
    // the two test ports; --metrics stays.
    pod = replace_once(
        &pod,
        r#"args: ["--metrics", "0.0.0.0:9464", "--view", "none"]"#,
        &format!(
            r#"args: ["--metrics", "0.0.0.0:9464", "--json", "--view", "all", "-P", "{p2},{p3}", "--duration", "120"]"#
        ),
    );
    pod = replace_once(
        &pod,
        "path: /var/log/pods",
        &format!("path: {}", pods_dir.display()),
    );
    // podman 4.3 ignores seccompProfile; the annotation it reads names the same file.
    pod = replace_once(
        &pod,
        "  annotations:\n",
        "  annotations:\n    container.seccomp.security.alpha.kubernetes.io/tcp-trace: localhost/tcp-trace.json\n",
    );
    assert!(pod.contains("localhostProfile: tcp-trace.json"), "{pod}");
    let pod_file = dir.join("tracer-pod.yaml");
    fs::write(&pod_file, &pod).unwrap();
    eprintln!("tracer pod manifest:\n{pod}");
    cleanup.pods.push(tracer_pod.clone());
    ok(
        podman(&conf)
            .arg("kube")
            .arg("play")
            .arg("--seccomp-profile-root")
            .arg(&seccomp_root)
            .arg(&pod_file)
            .output()
            .unwrap(),
        "podman kube play (tracer)",
    );
    let tracer_ctr = format!("{tracer_pod}-tcp-trace");

    // The tracer says it attached (its last startup line on stderr) before traffic.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, err) = json_lines(&conf, &tracer_ctr);
        if err.contains("attached") || err.contains("tracing") {
            eprintln!("tracer stderr:\n{err}");
            break;
        }
        let state = ok(
            podman(&conf)
                .args(["inspect", "--format", "{{.State.Status}}", &tracer_ctr])
                .output()
                .unwrap(),
            "podman inspect",
        );
        assert!(
            state.trim() == "running",
            "the tracer pod's container is {state}: {err}"
        );
        assert!(Instant::now() < deadline, "the tracer did not start: {err}");
        std::thread::sleep(Duration::from_millis(300));
    }
    // Its security settings as podman applied them.
    let tracer_pid = ok(
        podman(&conf)
            .args(["inspect", "--format", "{{.State.Pid}}", &tracer_ctr])
            .output()
            .unwrap(),
        "podman inspect pid",
    );
    let status = fs::read_to_string(format!("/proc/{}/status", tracer_pid.trim())).unwrap();
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap_or("")
            .trim()
            .to_owned()
    };
    // CAP_PERFMON (38) and CAP_BPF (39) only.
    assert_eq!(field("CapEff:"), "000000c000000000", "{status}");
    assert_eq!(field("Seccomp:"), "2", "{status}");

    // The second pod, as Kubernetes would have it, played by podman.
    let web_pod = format!("web-{tag}");
    let web = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {web_pod}\n  namespace: shop\nspec:\n  \
         containers:\n    - name: web\n      image: {busybox}\n      imagePullPolicy: Never\n      \
         command: [\"/bin/sh\", \"-c\", {script:?}]\n",
        script = nc_script(p2)
    );
    let web_file = dir.join("web-pod.yaml");
    fs::write(&web_file, &web).unwrap();
    cleanup.pods.push(web_pod.clone());
    ok(
        podman(&conf)
            .args(["kube", "play"])
            .arg(&web_file)
            .output()
            .unwrap(),
        "podman kube play (web)",
    );
    let web_ctr = format!("{web_pod}-web");
    let web_id = ok(
        podman(&conf)
            .args(["inspect", "--format", "{{.Id}}", &web_ctr])
            .output()
            .unwrap(),
        "podman inspect",
    )
    .trim()
    .to_owned();

    // A third container in the kubelet's cgroupfs layout (pod UID in the path).
    let kube_ctr = format!("kubepods-web-1-{tag}");
    cleanup.containers.push(kube_ctr.clone());
    let kube_id = ok(
        podman(&conf)
            .args([
                "run",
                "-d",
                "--name",
                &kube_ctr,
                "--cgroup-parent",
                &format!("/kubepods/besteffort/pod{pod_uid}"),
                &busybox,
                "/bin/sh",
                "-c",
                &nc_script(p3),
            ])
            .output()
            .unwrap(),
        "podman run --cgroup-parent",
    )
    .trim()
    .to_owned();
    let pid = ok(
        podman(&conf)
            .args(["inspect", "--format", "{{.State.Pid}}", &web_ctr])
            .output()
            .unwrap(),
        "podman inspect pid",
    );
    let cg = fs::read_to_string(format!("/proc/{}/cgroup", pid.trim())).unwrap_or_default();
    eprintln!("the web pod's container: {web_id}\n/proc/PID/cgroup:\n{cg}");

    // Both client connections show up in the tracer's JSON.
    let deadline = Instant::now() + Duration::from_secs(60);
    let lines = loop {
        let (lines, err) = json_lines(&conf, &tracer_ctr);
        if client_conn(&lines, p2).is_some() && client_conn(&lines, p3).is_some() {
            break lines;
        }
        assert!(
            Instant::now() < deadline,
            "no client connections to {p2} and {p3} from the tracer pod; stderr:\n{err}\n\
             lines:\n{lines:#?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let c2 = client_conn(&lines, p2).unwrap();
    eprintln!("web pod's connection: {c2}");
    assert_eq!(c2["container_id"], web_id.as_str(), "{c2}");
    assert_eq!(c2["container_runtime"], "podman", "{c2}");
    // podman's cgroup paths carry no kubepods/pod UID: the pod fields stay null.
    assert!(c2["pod_uid"].is_null(), "{c2}");
    assert!(
        c2["pod_name"].is_null() && c2["pod_namespace"].is_null(),
        "{c2}"
    );
    // The server end, in the same container.
    let s2 = lines
        .iter()
        .find(|l| l["type"] == "connection" && l["role"] == "server" && l["sport"] == p2)
        .unwrap_or_else(|| panic!("no server connection on {p2}"));
    assert_eq!(s2["container_id"], web_id.as_str(), "{s2}");

    let c3 = client_conn(&lines, p3).unwrap();
    eprintln!("kubepods container's connection: {c3}");
    assert_eq!(c3["container_id"], kube_id.as_str(), "{c3}");
    assert_eq!(c3["pod_uid"], pod_uid, "{c3}");
    assert_eq!(c3["pod_namespace"], "shop", "{c3}");
    assert_eq!(c3["pod_name"], "web-1", "{c3}");
    // Events carry them too.
    let ev = lines
        .iter()
        .find(|l| l["type"] == "event" && l["dport"] == p3 && l["pod_uid"].is_string());
    assert!(ev.is_some(), "no event towards {p3} with pod fields");

    // /metrics inside the tracer pod: the same attribution as labels.
    // The tracer's image has nothing but the binary: wget runs in the pod's infra
    // container, which shares its network namespace.
    let infra = ok(
        podman(&conf)
            .args([
                "pod",
                "inspect",
                "--format",
                "{{.InfraContainerID}}",
                &tracer_pod,
            ])
            .output()
            .unwrap(),
        "podman pod inspect",
    );
    let metrics = ok(
        podman(&conf)
            .args([
                "exec",
                infra.trim(),
                "wget",
                "-qO-",
                "http://127.0.0.1:9464/metrics",
            ])
            .output()
            .unwrap(),
        "wget /metrics",
    );
    let want = format!(
        "tcp_trace_connections_total{{role=\"client\",outcome=\"closed\",port=\"{p3}\",\
         container_id=\"{kube_id}\",pod=\"web-1\",namespace=\"shop\"}} 1"
    );
    assert!(metrics.contains(&want), "{want} not in:\n{metrics}");
    let web_series = format!("port=\"{p2}\",container_id=\"{web_id}\"}}");
    assert!(
        metrics.lines().any(
            |l| l.starts_with("tcp_trace_connections_total{role=\"client\"")
                && l.contains(&web_series)
        ),
        "no client series for the web pod ({web_series}) in:\n{metrics}"
    );
    for l in metrics.lines().filter(|l| {
        l.starts_with("tcp_trace_connections_total{")
            && (l.contains(&kube_id) || l.contains(&web_id))
    }) {
        eprintln!("metrics: {l}");
    }

    // --pod/--namespace: a second tracer in the tracer's container (same capabilities
    // and seccomp profile) sees connections of both containers to one port and keeps
    // only those of pod shop/web-1.
    let p4 = free_port();
    let sel = Tracer::start_cmd(podman(&conf).args([
        "exec",
        &tracer_ctr,
        "/tcp-trace",
        "--json",
        "--view",
        "all",
        "-P",
        &p4.to_string(),
        "--pod",
        "web-1",
        "--namespace",
        "shop",
        "--duration",
        "10",
    ]));
    let once =
        format!("nc -l -p {p4} >/dev/null & sleep 0.5; echo hi | nc -w 2 127.0.0.1 {p4}; wait");
    for ctr in [&web_ctr, &kube_ctr] {
        ok(
            podman(&conf)
                .args(["exec", ctr, "/bin/sh", "-c", &once])
                .output()
                .unwrap(),
            "podman exec nc",
        );
    }
    let (sel_lines, code) = sel.collect();
    assert_eq!(code, 0, "selecting tracer: exit code");
    let conns = conns(&sel_lines);
    // The kube container's client (and its server and listener), nothing of the web
    // pod's.
    assert!(client_conn(&sel_lines, p4).is_some(), "{sel_lines:#?}");
    eprintln!(
        "--pod web-1 --namespace shop: {} connection lines",
        conns.len()
    );
    for c in conns.iter().chain(
        sel_lines
            .iter()
            .filter(|l| l["type"] == "event")
            .collect::<Vec<_>>()
            .iter(),
    ) {
        assert_eq!(c["pod_name"], "web-1", "{c}");
        assert_eq!(c["container_id"], kube_id.as_str(), "{c}");
    }
    drop(cleanup);
}
