//! Privileged tests of `tcp_trace::sockdiag`: real sockets, real namespaces.
//! Gated like the other privileged tests (`common::require_root`): with
//! TCP_TRACE_PRIVILEGED_TESTS=1 lacking root fails them.
mod common;

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Daemon, Netns, require_root};
use tcp_trace::decode::{Family, TcpState};
use tcp_trace::sockdiag::{self, ExistingSocket, Snapshot, comm_from_proc};

fn own_netns() -> u64 {
    fs::metadata("/proc/self/ns/net").unwrap().ino()
}

fn tuple(a: SocketAddr) -> (IpAddr, u16) {
    (a.ip(), a.port())
}

fn with_local(s: &Snapshot, local: SocketAddr) -> Vec<&ExistingSocket> {
    s.sockets
        .iter()
        .filter(|x| x.local == tuple(local))
        .collect()
}

fn dump(s: &Snapshot) -> String {
    let mut out = format!("{}\nerrors: {:?}\n", sockdiag::summary_line(s), s.errors);
    for x in &s.sockets {
        out.push_str(&format!("{x:?}\n"));
    }
    out
}

#[test]
fn own_listener_and_established_connection() {
    if !require_root("own_listener_and_established_connection") {
        return;
    }
    let me = std::process::id();
    let my_comm = comm_from_proc(&fs::read("/proc/self/comm").unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let laddr = listener.local_addr().unwrap();
    let client = TcpStream::connect(laddr).unwrap();
    let (server, peer) = listener.accept().unwrap();
    let caddr = client.local_addr().unwrap();
    assert_eq!(peer, caddr);

    let snap = sockdiag::snapshot();
    let ctx = dump(&snap);
    assert!(snap.namespaces >= 1, "{ctx}");
    let ns = own_netns();

    // The listener.
    let listen: Vec<_> = with_local(&snap, laddr)
        .into_iter()
        .filter(|x| x.state == TcpState::Listen)
        .collect();
    assert_eq!(listen.len(), 1, "listener {laddr} not found once\n{ctx}");
    let l = listen[0];
    assert_eq!(l.netns, ns);
    assert_eq!(l.family, Family::Inet);
    assert_eq!(l.remote, (IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0));
    assert_ne!(l.inode, 0);
    assert_eq!(l.uid, 0);
    assert_eq!(l.owner, Some((me, my_comm)), "{ctx}");

    // Both ends of the connection.
    let c: Vec<_> = with_local(&snap, caddr)
        .into_iter()
        .filter(|x| x.remote == tuple(laddr))
        .collect();
    assert_eq!(c.len(), 1, "client end {caddr} -> {laddr} not found\n{ctx}");
    let c = c[0];
    assert_eq!(c.state, TcpState::Established);
    assert_eq!(c.netns, ns);
    assert_ne!(c.inode, 0);
    assert_eq!(c.owner.map(|o| o.0), Some(me), "{ctx}");

    let s: Vec<_> = with_local(&snap, laddr)
        .into_iter()
        .filter(|x| x.remote == tuple(caddr))
        .collect();
    assert_eq!(s.len(), 1, "server end {laddr} -> {caddr} not found\n{ctx}");
    let s = s[0];
    assert_eq!(s.state, TcpState::Established);
    assert_eq!(s.owner.map(|o| o.0), Some(me), "{ctx}");

    // Three distinct sockets: distinct inodes and cookies.
    assert!(l.inode != c.inode && c.inode != s.inode && l.inode != s.inode);
    assert!(l.cookie != c.cookie && c.cookie != s.cookie && l.cookie != s.cookie);
    assert_ne!(c.cookie, 0);
    drop((client, server, listener));
}

const PY_LISTENER: &str = "import socket,sys,time\n\
s=socket.socket()\n\
s.bind(('127.0.0.1',int(sys.argv[1])))\n\
s.listen(8)\n\
print('ready',flush=True)\n\
time.sleep(120)\n";

/// Starts `prefix... python3 -c PY_LISTENER port` and waits for "ready". Killed on drop.
fn start_listener(prefix: &[&str], port: u16) -> Daemon {
    let port = port.to_string();
    let mut child = Command::new(prefix[0])
        .args(&prefix[1..])
        .args(["python3", "-c", PY_LISTENER, &port])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn listener");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    if line.trim() != "ready" {
        let _ = child.kill();
        let _ = child.wait();
        panic!("listener {prefix:?} did not start: {line:?}");
    }
    Daemon(child)
}

#[test]
fn same_port_in_two_namespaces() {
    if !require_root("same_port_in_two_namespaces") {
        return;
    }
    let me = std::process::id();
    let host = TcpListener::bind("127.0.0.1:0").unwrap();
    let haddr = host.local_addr().unwrap();
    let port = haddr.port();

    // Deleted on drop, after the listeners in it are killed (declared before them).
    let ns = Netns::new("sd");
    // A named namespace, entered by `ip netns exec` (which execs in place: the
    // listener's pid is the child's).
    let named = start_listener(&["ip", "netns", "exec", &ns.name], port);
    let named_pid = named.0.id();
    // An anonymous namespace, reachable only through /proc/PID/ns/net.
    let anon = start_listener(
        &[
            "unshare",
            "--net",
            "sh",
            "-c",
            "ip link set lo up && exec \"$@\"",
            "sh",
        ],
        port,
    );
    let anon_pid = anon.0.id();
    let anon_ino = fs::metadata(format!("/proc/{anon_pid}/ns/net"))
        .unwrap()
        .ino();

    let snap = sockdiag::snapshot();
    let ctx = dump(&snap);
    assert!(snap.namespaces >= 3, "{ctx}");
    let mut found: Vec<_> = with_local(&snap, haddr)
        .into_iter()
        .filter(|x| x.state == TcpState::Listen)
        .filter(|x| [me, named_pid, anon_pid].contains(&x.owner.map_or(0, |o| o.0)))
        .map(|x| (x.netns, x.owner.unwrap().0))
        .collect();
    found.sort();
    let mut want = vec![
        (own_netns(), me),
        (ns.inode(), named_pid),
        (anon_ino, anon_pid),
    ];
    want.sort();
    assert_eq!(found, want, "{ctx}");
    assert_ne!(ns.inode(), own_netns());
    assert_ne!(anon_ino, own_netns());
    assert_ne!(anon_ino, ns.inode());
    let py = snap
        .sockets
        .iter()
        .find(|x| x.owner.is_some_and(|o| o.0 == named_pid))
        .unwrap();
    assert!(
        py.owner.unwrap().1.to_string().starts_with("python"),
        "{ctx}"
    );
    drop(host);
}

#[test]
fn time_wait_socket() {
    if !require_root("time_wait_socket") {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let laddr = listener.local_addr().unwrap();
    let mut client = TcpStream::connect(laddr).unwrap();
    let (mut server, _) = listener.accept().unwrap();
    let caddr = client.local_addr().unwrap();
    // The client closes first: it ends in TIME_WAIT once the server closes too.
    client.write_all(b"bye").unwrap();
    drop(client);
    let mut rest = Vec::new();
    server.read_to_end(&mut rest).unwrap();
    assert_eq!(rest, b"bye");
    drop(server);

    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let snap = sockdiag::snapshot();
        let tw: Vec<_> = with_local(&snap, caddr)
            .into_iter()
            .filter(|x| x.remote == tuple(laddr))
            .collect();
        if let [x] = tw[..]
            && x.state == TcpState::TimeWait
        {
            assert_eq!(x.inode, 0);
            assert_eq!(x.owner, None);
            assert_eq!(x.netns, own_netns());
            assert_eq!(x.family, Family::Inet);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no TIME_WAIT socket {caddr} -> {laddr}; found {tw:?}\n{}",
            dump(&snap)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(listener);
}
