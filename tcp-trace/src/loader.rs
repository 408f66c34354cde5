//! Loader: checks privileges, finds tracefs, reads the running kernel's tracepoint
//! layouts and struct offsets, loads the eBPF object with them, attaches every hook
//! and says what is missing.
use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{BtfTracePoint, Program, RawTracePoint, TracePoint},
};
use tcp_trace_common::{Filter, ListenKey, ListenerLink, Owner, TpLayout, counter};

use crate::layout::{self, LayoutError, Tracepoint, btf::Btf};
use crate::privilege::{self, Caps};

/// The eBPF object built by build.rs (tcp-trace-ebpf), embedded at compile time.
#[cfg(ebpf_object)]
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tcp-trace"));
#[cfg(not(ebpf_object))]
static EBPF_OBJECT: &[u8] = &[];

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0}")]
    Privilege(String),
    #[error(
        "tracefs is not mounted at /sys/kernel/tracing and could not be mounted ({0}); mount it with `mount -t tracefs nodev /sys/kernel/tracing`"
    )]
    NoTracefs(String),
    #[error(
        "tracefs at {path} is not readable ({err}): reading tracepoint formats needs root or CAP_DAC_READ_SEARCH"
    )]
    TracefsUnreadable { path: PathBuf, err: String },
    #[error("{0}")]
    Required(String),
    #[error("{0}")]
    Layout(#[from] LayoutError),
    #[error("loading the eBPF object failed: {0}")]
    Load(#[source] aya::EbpfError),
    #[error("program {name}: {err}")]
    Program {
        name: &'static str,
        #[source]
        err: aya::programs::ProgramError,
    },
    #[error("map {0}: {1}")]
    Map(&'static str, String),
    #[error("this binary was built without its eBPF object (AYA_BUILD_SKIP was set)")]
    NoObject,
}

/// How a hook is attached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum AttachMode {
    #[default]
    /// The cheapest path that works here: tp_btf for the TCP hooks, classic
    /// syscall tracepoints when tracefs is readable (else raw_syscalls through tp_btf).
    Auto,
    /// Classic tracepoints (needs a readable tracefs).
    Tracepoint,
    /// BTF-typed tracepoints (tp_btf): no tracefs, needs kernel BTF.
    Btf,
    /// Raw tracepoints: no tracefs; socket fields still read with BTF offsets.
    Raw,
}

/// The path one hook took.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachPath {
    Tracepoint,
    Btf,
    Raw,
}

impl AttachPath {
    pub fn name(self) -> &'static str {
        match self {
            AttachPath::Tracepoint => "tracepoint",
            AttachPath::Btf => "btf",
            AttachPath::Raw => "raw",
        }
    }
}

/// One TCP hook: its classic tracepoint (with the global holding its layout) and
/// its tp_btf/raw programs.
struct Hook {
    tp: Tracepoint,
    program: &'static str,
    global: &'static str,
    btf_program: &'static str,
    raw_program: &'static str,
    /// tp_btf/raw programs attached after the main one to the same tracepoint to
    /// report the runs the kernel skips for it (it does not re-enter a program on
    /// a CPU where it is running): (btf, raw).
    nested: Option<(&'static str, &'static str)>,
    /// tp_btf programs (main, nested) that also use socket local storage (5.11+),
    /// tried before `btf_program` and its twin.
    btf_storage: Option<(&'static str, &'static str)>,
}

const TCP_HOOKS: &[Hook] = &[
    Hook {
        tp: Tracepoint::InetSockSetState,
        program: "inet_sock_set_state",
        global: "LAYOUT_SET_STATE",
        btf_program: "btf_inet_sock_set_state",
        raw_program: "raw_inet_sock_set_state",
        nested: Some((
            "btf_inet_sock_set_state_nested",
            "raw_inet_sock_set_state_nested",
        )),
        btf_storage: Some((
            "btf_inet_sock_set_state_sk",
            "btf_inet_sock_set_state_sk_nested",
        )),
    },
    Hook {
        tp: Tracepoint::TcpRetransmitSynack,
        program: "tcp_retransmit_synack",
        global: "LAYOUT_SYNACK",
        btf_program: "btf_tcp_retransmit_synack",
        raw_program: "raw_tcp_retransmit_synack",
        nested: None,
        btf_storage: None,
    },
    Hook {
        tp: Tracepoint::TcpRetransmitSkb,
        program: "tcp_retransmit_skb",
        global: "LAYOUT_RETRANSMIT",
        btf_program: "btf_tcp_retransmit_skb",
        raw_program: "raw_tcp_retransmit_skb",
        nested: None,
        btf_storage: None,
    },
    Hook {
        tp: Tracepoint::TcpSendReset,
        program: "tcp_send_reset",
        global: "LAYOUT_SEND_RESET",
        btf_program: "btf_tcp_send_reset",
        raw_program: "raw_tcp_send_reset",
        nested: None,
        btf_storage: None,
    },
    Hook {
        tp: Tracepoint::TcpReceiveReset,
        program: "tcp_receive_reset",
        global: "LAYOUT_RECV_RESET",
        btf_program: "btf_tcp_receive_reset",
        raw_program: "raw_tcp_receive_reset",
        nested: None,
        btf_storage: None,
    },
];

/// The syscall tracepoints (classic path); the other paths use raw_syscalls
/// sys_enter/sys_exit filtered by syscall number in the kernel.
const SYSCALL_HOOKS: &[(Tracepoint, &str, &str)] = &[
    (
        Tracepoint::SysEnterConnect,
        "sys_enter_connect",
        "LAYOUT_ENTER_CONNECT",
    ),
    (
        Tracepoint::SysExitConnect,
        "sys_exit_connect",
        "LAYOUT_EXIT_CONNECT",
    ),
    (
        Tracepoint::SysEnterAccept,
        "sys_enter_accept",
        "LAYOUT_ENTER_ACCEPT",
    ),
    (
        Tracepoint::SysExitAccept,
        "sys_exit_accept",
        "LAYOUT_EXIT_ACCEPT",
    ),
    (
        Tracepoint::SysEnterAccept4,
        "sys_enter_accept4",
        "LAYOUT_ENTER_ACCEPT4",
    ),
    (
        Tracepoint::SysExitAccept4,
        "sys_exit_accept4",
        "LAYOUT_EXIT_ACCEPT4",
    ),
];

/// What the user asked to trace (in-kernel filters).
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub filter: Filter,
    pub attach: AttachMode,
    /// Ring buffer size in bytes (power of two, multiple of the page size); 0 = the
    /// object's default (8 MiB).
    pub ring_bytes: u32,
}

/// A loaded and attached tracer.
pub struct Loaded {
    pub ebpf: Ebpf,
    pub counters: PerCpuArray<MapData, u64>,
    /// Human-readable notes about what was degraded (one line each).
    pub warnings: Vec<String>,
    /// Hooks attached: (hook name, path taken).
    pub attached: Vec<(&'static str, AttachPath)>,
    /// The kernel reports the runs of a program it skipped (`recursion_misses`, Linux
    /// 5.12+). Without it `Counters::skipped` stays 0 and means "not known".
    pub skips_counted: bool,
    /// The state hook uses socket local storage (tp_btf, 5.11+): a child names the
    /// very listener it was cloned from. Otherwise by namespace and port.
    pub listener_storage: bool,
}

/// Totals of the per-CPU counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub lost: u64,
    pub submitted: u64,
    pub filtered: u64,
    pub fd_walk_failed: u64,
    /// Runs of our programs the kernel skipped because the same program was
    /// already running on that CPU (a softirq's state transition interrupting
    /// a process-context one): each is one event at most, never seen. Net of
    /// `caught_nested`.
    pub skipped: u64,
    /// Skipped runs of the state-transition program that its `_nested` twin
    /// reported instead (not missing).
    pub caught_nested: u64,
}

/// `bpf_prog_info.recursion_misses` of the program behind `fd` (Linux 5.12+;
/// None before, or when the kernel refuses the query).
fn recursion_misses(fd: std::os::fd::BorrowedFd<'_>) -> Option<u64> {
    use std::os::fd::AsRawFd;
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    /// Offset of `recursion_misses` in `struct bpf_prog_info`.
    const RECURSION_MISSES: usize = 208;
    #[repr(C, align(8))]
    struct Info([u8; 256]);
    #[repr(C)]
    struct Attr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let mut info = Info([0; 256]);
    let mut attr = Attr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: info.0.len() as u32,
        info: info.0.as_mut_ptr() as u64,
    };
    // SAFETY: attr points at a buffer of info_len bytes that outlives the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &mut attr as *mut Attr,
            std::mem::size_of::<Attr>(),
        )
    };
    if r != 0 || (attr.info_len as usize) < RECURSION_MISSES + 8 {
        return None;
    }
    let b = &info.0[RECURSION_MISSES..RECURSION_MISSES + 8];
    Some(u64::from_ne_bytes(b.try_into().ok()?))
}

impl Loaded {
    /// Runs of our loaded programs the kernel skipped, before the catches of the
    /// twins are taken off (see `Counters::skipped`).
    /// The `_nested` twins' own misses are left out: a twin is only ever running
    /// when its main program is not (it runs after it, and returns at once unless
    /// the main one is interrupted), so a hit the twin misses the main one took.
    fn misses_total(&self) -> u64 {
        use std::os::fd::AsFd;
        self.ebpf
            .programs()
            .filter(|(name, _)| !name.ends_with("_nested"))
            .filter_map(|(_, p)| p.fd().ok().and_then(|fd| recursion_misses(fd.as_fd())))
            .sum()
    }

    /// Listening sockets that existed before the programs were attached: their owners
    /// go into the kernel's listener table, so that their children are attributed
    /// when born (LISTEN → SYN_RECV) rather than only at accept(). Entries the kernel
    /// side made since attaching are kept. Returns how many were added.
    pub fn seed_listeners(&mut self, listeners: &[(u32, u16, Owner)]) -> usize {
        let Some(map) = self.ebpf.map_mut("LISTENERS") else {
            return 0;
        };
        let Ok(mut map) = aya::maps::HashMap::<_, ListenKey, ListenerLink>::try_from(map) else {
            return 0;
        };
        const BPF_NOEXIST: u64 = 1;
        listeners
            .iter()
            .filter(|(netns, port, owner)| {
                let key = ListenKey {
                    netns: *netns,
                    port: *port,
                    _pad: 0,
                };
                // The socket's address is not in the socket table: 0, unknown.
                let link = ListenerLink {
                    sk: 0,
                    owner: *owner,
                };
                map.insert(key, link, BPF_NOEXIST).is_ok()
            })
            .count()
    }

    pub fn counters(&self) -> Counters {
        let sum = |idx: u32| -> u64 {
            self.counters
                .get(&idx, 0)
                .map(|v| v.iter().copied().sum())
                .unwrap_or(0)
        };
        // Skips of the main state program that its `_nested` twin caught are not
        // missing. Misses are read first: a catch counted in between can only make
        // `skipped` smaller, never report a caught run as missing.
        let misses = self.misses_total();
        let caught = sum(counter::NESTED_CAUGHT);
        Counters {
            lost: sum(counter::RINGBUF_FULL),
            submitted: sum(counter::SUBMITTED),
            filtered: sum(counter::FILTERED),
            fd_walk_failed: sum(counter::FD_WALK_FAILED),
            skipped: misses.saturating_sub(caught),
            caught_nested: caught,
        }
    }
}

const TRACEFS_PATHS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

fn tracefs_mounted(p: &Path) -> bool {
    p.join("events").is_dir()
}

/// Finds a mounted tracefs, mounting it at /sys/kernel/tracing when absent and
/// permitted (CAP_SYS_ADMIN).
pub fn find_or_mount_tracefs(caps: &Caps) -> Result<PathBuf, LoadError> {
    for p in TRACEFS_PATHS {
        let p = Path::new(p);
        match p.join("events").metadata() {
            Ok(m) if m.is_dir() => return Ok(p.to_path_buf()),
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                return Err(LoadError::TracefsUnreadable {
                    path: p.to_path_buf(),
                    err: e.to_string(),
                });
            }
            _ => {}
        }
    }
    let target = Path::new(TRACEFS_PATHS[0]);
    if !caps.has(privilege::CAP_SYS_ADMIN) {
        return Err(LoadError::NoTracefs(
            "mounting needs CAP_SYS_ADMIN".to_string(),
        ));
    }
    privilege::mount_tracefs(target).map_err(|e| LoadError::NoTracefs(e.to_string()))?;
    if tracefs_mounted(target) {
        eprintln!("tcp-trace: mounted tracefs at {}", target.display());
        Ok(target.to_path_buf())
    } else {
        Err(LoadError::NoTracefs(
            "mount succeeded but events/ is missing".into(),
        ))
    }
}

/// True when an error (or one of its sources) is an EPERM from the kernel.
fn is_eperm(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<io::Error>()
            && io.raw_os_error() == Some(libc::EPERM)
        {
            return true;
        }
        if err.to_string().contains("Operation not permitted") {
            return true;
        }
        cur = err.source();
    }
    false
}

/// Seccomp mode of this process (`Seccomp:` in /proc/self/status; 2 = filter).
fn seccomp_mode() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    privilege::status_field(&status, "Seccomp")?.parse().ok()
}

/// Turns a refused bpf() into one line that says what to do.
fn explain_load_error(e: aya::EbpfError) -> LoadError {
    if !is_eperm(&e) {
        return LoadError::Load(e);
    }
    let msg = if seccomp_mode() == Some(2) {
        format!(
            "bpf() was refused (EPERM) while a seccomp filter is active (Seccomp: 2 in /proc/self/status): container runtimes' default seccomp profiles allow bpf() and perf_event_open() only with CAP_SYS_ADMIN; run the container with the profile shipped in deploy/seccomp.json (--security-opt seccomp=deploy/seccomp.json) ({e})"
        )
    } else {
        format!(
            "bpf() was refused (EPERM) although CAP_BPF and CAP_PERFMON are held: a security module (lockdown, SELinux/AppArmor) or kernel.unprivileged_bpf_disabled policy may forbid it ({e})"
        )
    };
    LoadError::Privilege(msg)
}

fn program_err(name: &'static str) -> impl Fn(aya::programs::ProgramError) -> LoadError {
    move |err| LoadError::Program { name, err }
}

/// Programs by name, each lent to the one thread that loads it.
type Progs<'a> = HashMap<&'a str, &'a mut Program>;

/// Loads and attaches one program on `path`.
fn attach_one(
    ph: &mut Phases,
    programs: &mut Progs,
    btf: Option<&aya::Btf>,
    path: AttachPath,
    program: &'static str,
    group: &str,
    name: &str,
) -> Result<(), LoadError> {
    let prog = programs
        .get_mut(program)
        .ok_or_else(|| LoadError::Map(program, "program missing from the object".into()))?;
    match path {
        AttachPath::Tracepoint => {
            let p: &mut TracePoint = (&mut **prog).try_into().map_err(program_err(program))?;
            p.load().map_err(program_err(program))?;
            p.attach(group, name).map_err(program_err(program))?;
        }
        AttachPath::Btf => {
            let btf = btf.ok_or_else(|| LoadError::Map(program, "no kernel BTF".into()))?;
            let p: &mut BtfTracePoint = (&mut **prog).try_into().map_err(program_err(program))?;
            p.load(name, btf).map_err(program_err(program))?;
            p.attach().map_err(program_err(program))?;
        }
        AttachPath::Raw => {
            let p: &mut RawTracePoint = (&mut **prog).try_into().map_err(program_err(program))?;
            p.load().map_err(program_err(program))?;
            p.attach(name).map_err(program_err(program))?;
        }
    }
    ph.mark(program);
    Ok(())
}

/// What is known before attaching: the mode asked for, kernel BTF, and the
/// classic tracepoints' layouts.
struct Plan<'a> {
    attach: AttachMode,
    btf: Option<&'a aya::Btf>,
    have_offsets: bool,
    layouts: &'a [(Tracepoint, &'static str, TpLayout)],
    layout_errors: &'a [(Tracepoint, LayoutError)],
}

impl Plan<'_> {
    fn candidates(&self) -> &'static [AttachPath] {
        match self.attach {
            AttachMode::Auto => &[AttachPath::Btf, AttachPath::Raw, AttachPath::Tracepoint],
            AttachMode::Btf => &[AttachPath::Btf],
            AttachMode::Raw => &[AttachPath::Raw],
            AttachMode::Tracepoint => &[AttachPath::Tracepoint],
        }
    }

    fn has_layout(&self, tp: Tracepoint) -> bool {
        self.layouts.iter().any(|(t, _, _)| *t == tp)
    }

    fn possible(&self, path: AttachPath, tp: Tracepoint) -> bool {
        match path {
            AttachPath::Tracepoint => self.has_layout(tp),
            AttachPath::Btf => self.have_offsets && self.btf.is_some(),
            AttachPath::Raw => self.have_offsets,
        }
    }

    /// One TCP hook, trying its paths in order; the errors of every path tried.
    fn attach_tcp_hook(
        &self,
        ph: &mut Phases,
        programs: &mut Progs,
        h: &Hook,
    ) -> Result<AttachPath, Vec<String>> {
        let mut errors = Vec::new();
        for &path in self.candidates() {
            if !self.possible(path, h.tp) {
                match (path, self.layout_errors.iter().find(|(t, _)| *t == h.tp)) {
                    (AttachPath::Tracepoint, Some((_, e))) => errors.push(e.to_string()),
                    (AttachPath::Tracepoint, None) => errors.push("tracefs unavailable".into()),
                    _ => errors.push(format!("{}: no kernel BTF", path.name())),
                }
                continue;
            }
            let program = match path {
                AttachPath::Tracepoint => h.program,
                AttachPath::Btf => h.btf_program,
                AttachPath::Raw => h.raw_program,
            };
            let nested = match (h.nested, path) {
                (Some((b, _)), AttachPath::Btf) => Some(b),
                (Some((_, r)), AttachPath::Raw) => Some(r),
                _ => None,
            };
            let group = h.tp.group();
            if let (AttachPath::Btf, Some((main, twin))) = (path, h.btf_storage) {
                match attach_one(ph, programs, self.btf, path, main, group, h.tp.name()).and_then(
                    |()| attach_one(ph, programs, self.btf, path, twin, group, h.tp.name()),
                ) {
                    Ok(()) => return Ok(path),
                    Err(e) => {
                        // Never both variants at once: drop what did load.
                        for name in [main, twin] {
                            if let Some(p) = programs.get_mut(name)
                                && let Ok(p) = <&mut BtfTracePoint>::try_from(&mut **p)
                            {
                                let _ = p.unload();
                            }
                        }
                        errors.push(format!("{} with socket storage: {e}", path.name()));
                    }
                }
            }
            match attach_one(ph, programs, self.btf, path, program, group, h.tp.name()).and_then(
                |()| match nested {
                    Some(n) => attach_one(ph, programs, self.btf, path, n, group, h.tp.name()),
                    None => Ok(()),
                },
            ) {
                Ok(()) => return Ok(path),
                Err(e) => errors.push(format!("{}: {e}", path.name())),
            }
        }
        Err(errors)
    }

    /// connect()/accept()/accept4(): the six syscall tracepoints, or raw_syscalls.
    fn attach_syscalls(
        &self,
        ph: &mut Phases,
        programs: &mut Progs,
    ) -> Result<AttachPath, Vec<String>> {
        let paths: &[AttachPath] = match self.attach {
            AttachMode::Auto => &[AttachPath::Tracepoint, AttachPath::Btf, AttachPath::Raw],
            _ => self.candidates(),
        };
        let mut errors = Vec::new();
        for &path in paths {
            let res = match path {
                AttachPath::Tracepoint => {
                    if !SYSCALL_HOOKS.iter().all(|(tp, _, _)| self.has_layout(*tp)) {
                        errors.push("tracepoint: syscall tracepoint formats unavailable".into());
                        continue;
                    }
                    SYSCALL_HOOKS.iter().try_for_each(|(tp, program, _)| {
                        attach_one(ph, programs, None, path, program, tp.group(), tp.name())
                    })
                }
                AttachPath::Btf | AttachPath::Raw => {
                    if !self.possible(path, Tracepoint::SysEnterConnect)
                        || !cfg!(target_arch = "x86_64")
                    {
                        errors.push(format!("{}: needs kernel BTF on x86_64", path.name()));
                        continue;
                    }
                    let (enter, exit) = if path == AttachPath::Btf {
                        ("btf_sys_enter", "btf_sys_exit")
                    } else {
                        ("raw_sys_enter", "raw_sys_exit")
                    };
                    attach_one(
                        ph,
                        programs,
                        self.btf,
                        path,
                        enter,
                        "raw_syscalls",
                        "sys_enter",
                    )
                    .and_then(|()| {
                        attach_one(
                            ph,
                            programs,
                            self.btf,
                            path,
                            exit,
                            "raw_syscalls",
                            "sys_exit",
                        )
                    })
                }
            };
            match res {
                Ok(()) => return Ok(path),
                Err(e) => errors.push(format!("{}: {e}", path.name())),
            }
        }
        Err(errors)
    }
}

fn perf_event_paranoid() -> i32 {
    std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(2)
}

/// The initial pid namespace's inode (PROC_PID_INIT_INO).
const PROC_PID_INIT_INO: u64 = 0xEFFF_FFFC;

/// dev/inode of this process's pid namespace.
pub fn own_pid_namespace() -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata("/proc/self/ns/pid").ok()?;
    Some((m.dev(), m.ino()))
}

/// The tracepoints tp_btf programs are loaded against (their typedefs are
/// `btf_trace_<name>`): every TCP hook's, and raw_syscalls' for the syscalls.
fn tp_btf_targets() -> impl Iterator<Item = &'static str> {
    TCP_HOOKS
        .iter()
        .map(|h| h.tp.name())
        .chain(["sys_enter", "sys_exit"])
}

/// An `aya::Btf` that holds, at their vmlinux type ids, only the typedefs
/// `btf_trace_<tp>` of `tp_btf_targets()`; every other id is a placeholder
/// pointer. Loading a tp_btf program asks its `Btf` for exactly that (the id of
/// the typedef with that name, `BtfTracePoint::load`), so this index answers as
/// the full vmlinux BTF would, without aya parsing the 5 MB file a second time
/// (~30 ms). `None` when one of the typedefs is missing.
fn tp_btf_index(btf: &Btf) -> Option<aya::Btf> {
    const KIND_PTR: u32 = 2;
    const KIND_TYPEDEF: u32 = 8;
    let names: Vec<String> = tp_btf_targets()
        .map(|tp| format!("btf_trace_{tp}"))
        .collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut wanted: Vec<(u32, String)> = btf
        .typedef_ids(&refs)
        .into_iter()
        .zip(names)
        .map(|(id, name)| id.map(|id| (id, name)))
        .collect::<Option<_>>()?;
    wanted.sort();
    let max_id = wanted.last()?.0;
    let mut strings = vec![0u8];
    let mut name_offs = Vec::new();
    for (_, name) in &wanted {
        name_offs.push(strings.len() as u32);
        strings.extend_from_slice(name.as_bytes());
        strings.push(0);
    }
    let type_len = max_id as usize * 12;
    let mut blob = Vec::with_capacity(24 + type_len + strings.len());
    for word in [0x0001_eb9f_u32, 24, 0, type_len as u32, type_len as u32] {
        blob.extend_from_slice(&word.to_le_bytes());
    }
    blob.extend_from_slice(&(strings.len() as u32).to_le_bytes());
    let mut next = wanted.iter().zip(&name_offs).peekable();
    for id in 1..=max_id {
        let (name_off, kind) = match next.peek() {
            Some(((want, _), off)) if *want == id => {
                let off = **off;
                next.next();
                (off, KIND_TYPEDEF)
            }
            _ => (0, KIND_PTR),
        };
        for word in [name_off, kind << 24, 0] {
            blob.extend_from_slice(&word.to_le_bytes());
        }
    }
    blob.extend_from_slice(&strings);
    aya::Btf::parse(&blob, aya::Endianness::default()).ok()
}

/// Start-up phases, printed on stderr when TCP_TRACE_STARTUP_TIMES is set (what
/// docs/performance.md's start-up figures come from).
struct Phases {
    on: bool,
    last: std::time::Instant,
}

impl Phases {
    fn new() -> Self {
        Phases {
            on: std::env::var_os("TCP_TRACE_STARTUP_TIMES").is_some(),
            last: std::time::Instant::now(),
        }
    }
    fn mark(&mut self, what: &str) {
        if self.on {
            let now = std::time::Instant::now();
            eprintln!(
                "tcp-trace: startup {what}: {:.1} ms",
                (now - self.last).as_secs_f64() * 1e3
            );
            self.last = now;
        }
    }
}

/// Loads and attaches everything. Errors are fatal; degradations become warnings.
pub fn load(opts: &Options) -> Result<(Loaded, RingBuf<MapData>), LoadError> {
    let mut ph = Phases::new();
    if EBPF_OBJECT.is_empty() {
        return Err(LoadError::NoObject);
    }
    let caps = Caps::current();
    if let Some(msg) = caps.missing_for_bpf() {
        return Err(LoadError::Privilege(msg));
    }
    // aya's loader parses the whole vmlinux BTF when it is made (for CO-RE
    // relocations): let that run on another core while we read ours.
    let new_loader = std::thread::spawn(EbpfLoader::new);
    let mut warnings = Vec::new();

    // Kernel BTF: struct offsets (fd → socket walk, the tp_btf/raw paths) and the
    // types tp_btf programs are checked against.
    let mut parsed = None;
    let offsets = match Btf::from_file(Path::new("/sys/kernel/btf/vmlinux")).and_then(|b| {
        let o = layout::kernel_offsets(&b)?;
        parsed = Some(b);
        Ok(o)
    }) {
        Ok(o) => Some(o),
        Err(e) => {
            warnings.push(format!(
                "kernel BTF unusable ({e}): only classic tracepoints; accept() returns are reported without their socket, connect() only when it sends a SYN"
            ));
            None
        }
    };
    ph.mark("our BTF parse");
    let aya_btf = parsed.as_ref().and_then(tp_btf_index);
    drop(parsed);

    ph.mark("tp_btf index");
    // tracefs, for the classic tracepoints: required with --attach tracepoint, tried
    // (and mounted when permitted) with auto; never needed for btf/raw.
    let tracefs = match opts.attach {
        AttachMode::Btf | AttachMode::Raw => None,
        AttachMode::Tracepoint => Some(find_or_mount_tracefs(&caps)?),
        AttachMode::Auto => match find_or_mount_tracefs(&caps) {
            Ok(p) => Some(p),
            Err(e) if offsets.is_some() => {
                warnings.push(format!("{e}; using tp_btf/raw tracepoints instead"));
                None
            }
            Err(e) => return Err(e),
        },
    };

    // Layouts of the classic tracepoints, from the running kernel's format files.
    let mut layouts: Vec<(Tracepoint, &'static str, TpLayout)> = Vec::new();
    let mut layout_errors: Vec<(Tracepoint, LayoutError)> = Vec::new();
    if let Some(root) = &tracefs {
        let all = TCP_HOOKS
            .iter()
            .map(|h| (h.tp, h.global))
            .chain(SYSCALL_HOOKS.iter().map(|(tp, _, g)| (*tp, *g)));
        for (tp, global) in all {
            match layout::read_format(root, tp).and_then(|f| layout::tp_layout(tp, &f)) {
                Ok(l) => layouts.push((tp, global, l)),
                Err(e) => layout_errors.push((tp, e)),
            }
        }
    }

    ph.mark("tracefs formats");
    let mut loader = new_loader.join().unwrap_or_default();
    ph.mark("EbpfLoader::new (wait)");
    for (_, global, l) in &layouts {
        loader.override_global(global, l, true);
    }
    let offsets_value = offsets.unwrap_or_default();
    loader.override_global("OFFSETS", &offsets_value, true);
    let mut filter = opts.filter;
    // In a pid namespace (a container), or when asked to keep to it: the kernel side
    // translates owners' pids into it (`ns_pid`), and `--this-container` keeps only them.
    let pidns = own_pid_namespace()
        .filter(|&(_, ino)| ino != PROC_PID_INIT_INO || filter.this_container != 0);
    if let Some((dev, ino)) = pidns {
        filter.pidns_dev = dev;
        filter.pidns_ino = ino;
    }
    loader.override_global("FILTER", &filter, true);
    if opts.ring_bytes != 0 {
        loader.map_max_entries("EVENTS", opts.ring_bytes);
    }
    let mut ebpf = loader.load(EBPF_OBJECT).map_err(explain_load_error)?;
    ph.mark("object load (maps)");

    let plan = Plan {
        attach: opts.attach,
        btf: aya_btf.as_ref(),
        have_offsets: offsets.is_some(),
        layouts: &layouts,
        layout_errors: &layout_errors,
    };

    // Loading is mostly the verifier, which runs in the calling thread: the TCP
    // hooks and the syscall hooks are verified on two threads. Each group gets
    // the programs it may use (disjoint sets), so no program is shared.
    let mut programs: Progs = ebpf.programs_mut().collect();
    let mut take = |names: &mut dyn Iterator<Item = &'static str>| -> Progs {
        names
            .filter_map(|n| programs.remove_entry(n))
            .collect::<Progs>()
    };
    let mut tcp_programs = take(
        &mut TCP_HOOKS
            .iter()
            .flat_map(|h| [h.program, h.btf_program, h.raw_program])
            .chain(
                TCP_HOOKS
                    .iter()
                    .filter_map(|h| h.nested)
                    .chain(TCP_HOOKS.iter().filter_map(|h| h.btf_storage))
                    .flat_map(|(b, r)| [b, r]),
            ),
    );
    let mut sys_programs = take(&mut SYSCALL_HOOKS.iter().map(|(_, p, _)| *p).chain([
        "btf_sys_enter",
        "btf_sys_exit",
        "raw_sys_enter",
        "raw_sys_exit",
    ]));
    let (tcp_results, sys_result) = std::thread::scope(|scope| {
        let plan = &plan;
        let sys = scope.spawn(move || {
            let mut ph = Phases::new();
            plan.attach_syscalls(&mut ph, &mut sys_programs)
        });
        let tcp: Vec<_> = TCP_HOOKS
            .iter()
            .map(|h| plan.attach_tcp_hook(&mut ph, &mut tcp_programs, h))
            .collect();
        (tcp, sys.join())
    });
    drop((tcp_programs, programs));

    let mut attached = Vec::new();
    for (h, result) in TCP_HOOKS.iter().zip(tcp_results) {
        match result {
            Ok(path) => attached.push((h.tp.name(), path)),
            Err(errors) if h.tp.required() => {
                let mut msg = format!(
                    "required hook {} could not be attached: {}",
                    h.tp,
                    errors.join("; ")
                );
                if perf_event_paranoid() >= 3 && !caps.has(privilege::CAP_SYS_ADMIN) {
                    msg.push_str(
                        "; kernel.perf_event_paranoid is 3, which (a Debian kernel patch) refuses perf_event_open, and so classic tracepoints, without CAP_SYS_ADMIN: use --attach btf, which needs no perf event",
                    );
                }
                return Err(LoadError::Required(msg));
            }
            Err(errors) => warnings.push(format!(
                "{} unavailable, its events are off: {}",
                h.tp,
                errors.join("; ")
            )),
        }
    }
    match sys_result {
        Ok(Ok(path)) => attached.push(("connect/accept", path)),
        Ok(Err(errors)) => warnings.push(format!(
            "connect()/accept() returns unavailable: {}",
            errors.join("; ")
        )),
        Err(_) => {
            return Err(LoadError::Required(
                "the thread loading the syscall hooks panicked".into(),
            ));
        }
    }

    let ring = RingBuf::try_from(
        ebpf.take_map("EVENTS")
            .ok_or_else(|| LoadError::Map("EVENTS", "missing".into()))?,
    )
    .map_err(|e| LoadError::Map("EVENTS", e.to_string()))?;
    let counters = PerCpuArray::try_from(
        ebpf.take_map("COUNTERS")
            .ok_or_else(|| LoadError::Map("COUNTERS", "missing".into()))?,
    )
    .map_err(|e| LoadError::Map("COUNTERS", e.to_string()))?;

    // Kernels before 5.12 do not count the runs they skip: say so once, and report
    // skipped runs as unknown rather than as zero.
    let skips_counted = {
        use std::os::fd::AsFd;
        ebpf.programs()
            .filter_map(|(_, p)| p.fd().ok())
            .any(|fd| recursion_misses(fd.as_fd()).is_some())
    };
    let listener_storage = ebpf
        .program("btf_inet_sock_set_state_sk")
        .is_some_and(|p| p.fd().is_ok());
    let state_on_btf = attached
        .iter()
        .any(|(hook, path)| *hook == "inet_sock_set_state" && *path == AttachPath::Btf);
    if state_on_btf && !listener_storage {
        warnings.push(
            "this kernel does not let tp_btf programs use socket local storage (Linux 5.11+): \
             a child's listener is found by network namespace and port, so in an SO_REUSEPORT \
             group it is exact only once accept() returns"
                .to_string(),
        );
    }
    if !skips_counted {
        warnings.push(
            "this kernel does not report the hook runs it skips (bpf_prog_info.recursion_misses, Linux 5.12+): \
             a transition that interrupts a hook on the same CPU is still reported by the _nested twin \
             (tp_btf/raw), other skipped runs cannot be counted (\"skips_counted\":false in the stats)"
                .to_string(),
        );
    }

    Ok((
        Loaded {
            ebpf,
            counters,
            warnings,
            attached,
            skips_counted,
            listener_storage,
        },
        ring,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aya_obj::btf::BtfKind;

    /// The small index answers every tp_btf target as aya's parse of the whole
    /// vmlinux BTF does (the id is what the kernel checks the program against).
    #[test]
    fn tp_btf_index_matches_full_vmlinux_btf() {
        let path = Path::new("/sys/kernel/btf/vmlinux");
        assert!(path.exists(), "these tests need a kernel with BTF");
        let ours = Btf::from_file(path).unwrap_or_else(|e| panic!("{e}"));
        let index = tp_btf_index(&ours).expect("every btf_trace_ typedef is in vmlinux");
        let full = aya::Btf::from_sys_fs().expect("aya parses vmlinux");
        for tp in tp_btf_targets() {
            let name = format!("btf_trace_{tp}");
            let want = full
                .id_by_type_name_kind(&name, BtfKind::Typedef)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let got = index
                .id_by_type_name_kind(&name, BtfKind::Typedef)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(got, want, "{name}");
        }
        // A name that is not a target is not found (no false positives).
        assert!(
            index
                .id_by_type_name_kind("btf_trace_tcp_destroy_sock", BtfKind::Typedef)
                .is_err()
        );
    }

    /// A target missing from the kernel's BTF gives no index (and so no tp_btf
    /// path), rather than a wrong id.
    #[test]
    fn tp_btf_index_needs_every_target() {
        let ours = Btf::from_file("/sys/kernel/btf/vmlinux").unwrap_or_else(|e| panic!("{e}"));
        let ids = ours.typedef_ids(&["btf_trace_inet_sock_set_state", "btf_trace_no_such_tp"]);
        assert!(ids[0].is_some());
        assert_eq!(ids[1], None);
    }
}
