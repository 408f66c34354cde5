//! Loader: checks privileges, finds tracefs, reads the running kernel's tracepoint
//! layouts and struct offsets, loads the eBPF object with them, attaches every hook
//! and says what is missing.
use std::io;
use std::path::{Path, PathBuf};

use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{BtfTracePoint, RawTracePoint, TracePoint},
};
use tcp_trace_common::{Filter, TpLayout, counter};

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
}

const TCP_HOOKS: &[Hook] = &[
    Hook {
        tp: Tracepoint::InetSockSetState,
        program: "inet_sock_set_state",
        global: "LAYOUT_SET_STATE",
        btf_program: "btf_inet_sock_set_state",
        raw_program: "raw_inet_sock_set_state",
    },
    Hook {
        tp: Tracepoint::TcpRetransmitSynack,
        program: "tcp_retransmit_synack",
        global: "LAYOUT_SYNACK",
        btf_program: "btf_tcp_retransmit_synack",
        raw_program: "raw_tcp_retransmit_synack",
    },
    Hook {
        tp: Tracepoint::TcpRetransmitSkb,
        program: "tcp_retransmit_skb",
        global: "LAYOUT_RETRANSMIT",
        btf_program: "btf_tcp_retransmit_skb",
        raw_program: "raw_tcp_retransmit_skb",
    },
    Hook {
        tp: Tracepoint::TcpSendReset,
        program: "tcp_send_reset",
        global: "LAYOUT_SEND_RESET",
        btf_program: "btf_tcp_send_reset",
        raw_program: "raw_tcp_send_reset",
    },
    Hook {
        tp: Tracepoint::TcpReceiveReset,
        program: "tcp_receive_reset",
        global: "LAYOUT_RECV_RESET",
        btf_program: "btf_tcp_receive_reset",
        raw_program: "raw_tcp_receive_reset",
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
}

/// Totals of the per-CPU counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub lost: u64,
    pub submitted: u64,
    pub filtered: u64,
    pub fd_walk_failed: u64,
}

impl Loaded {
    pub fn counters(&self) -> Counters {
        let sum = |idx: u32| -> u64 {
            self.counters
                .get(&idx, 0)
                .map(|v| v.iter().copied().sum())
                .unwrap_or(0)
        };
        Counters {
            lost: sum(counter::RINGBUF_FULL),
            submitted: sum(counter::SUBMITTED),
            filtered: sum(counter::FILTERED),
            fd_walk_failed: sum(counter::FD_WALK_FAILED),
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

/// Loads and attaches one program on `path`.
fn attach_one(
    ebpf: &mut Ebpf,
    btf: Option<&aya::Btf>,
    path: AttachPath,
    program: &'static str,
    group: &str,
    name: &str,
) -> Result<(), LoadError> {
    let prog = ebpf
        .program_mut(program)
        .ok_or_else(|| LoadError::Map(program, "program missing from the object".into()))?;
    match path {
        AttachPath::Tracepoint => {
            let p: &mut TracePoint = prog.try_into().map_err(program_err(program))?;
            p.load().map_err(program_err(program))?;
            p.attach(group, name).map_err(program_err(program))?;
        }
        AttachPath::Btf => {
            let btf = btf.ok_or_else(|| LoadError::Map(program, "no kernel BTF".into()))?;
            let p: &mut BtfTracePoint = prog.try_into().map_err(program_err(program))?;
            p.load(name, btf).map_err(program_err(program))?;
            p.attach().map_err(program_err(program))?;
        }
        AttachPath::Raw => {
            let p: &mut RawTracePoint = prog.try_into().map_err(program_err(program))?;
            p.load().map_err(program_err(program))?;
            p.attach(name).map_err(program_err(program))?;
        }
    }
    Ok(())
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

/// Loads and attaches everything. Errors are fatal; degradations become warnings.
pub fn load(opts: &Options) -> Result<(Loaded, RingBuf<MapData>), LoadError> {
    if EBPF_OBJECT.is_empty() {
        return Err(LoadError::NoObject);
    }
    let caps = Caps::current();
    if let Some(msg) = caps.missing_for_bpf() {
        return Err(LoadError::Privilege(msg));
    }
    let mut warnings = Vec::new();

    // Kernel BTF: struct offsets (fd → socket walk, the tp_btf/raw paths) and the
    // types tp_btf programs are checked against.
    let offsets = match Btf::from_file(Path::new("/sys/kernel/btf/vmlinux"))
        .and_then(|b| layout::kernel_offsets(&b))
    {
        Ok(o) => Some(o),
        Err(e) => {
            warnings.push(format!(
                "kernel BTF unusable ({e}): only classic tracepoints; accept() returns are reported without their socket, connect() only when it sends a SYN"
            ));
            None
        }
    };
    let aya_btf = if offsets.is_some() {
        aya::Btf::from_sys_fs().ok()
    } else {
        None
    };

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
    let layout_of = |tp: Tracepoint| layouts.iter().any(|(t, _, _)| *t == tp);

    let mut loader = EbpfLoader::new();
    if let Some(b) = &aya_btf {
        loader.btf(Some(b));
    }
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

    let candidates = |mode: AttachMode| -> &'static [AttachPath] {
        match mode {
            AttachMode::Auto => &[AttachPath::Btf, AttachPath::Raw, AttachPath::Tracepoint],
            AttachMode::Btf => &[AttachPath::Btf],
            AttachMode::Raw => &[AttachPath::Raw],
            AttachMode::Tracepoint => &[AttachPath::Tracepoint],
        }
    };
    let path_possible = |path: AttachPath, tp: Tracepoint| -> bool {
        match path {
            AttachPath::Tracepoint => layout_of(tp),
            AttachPath::Btf => offsets.is_some() && aya_btf.is_some(),
            AttachPath::Raw => offsets.is_some(),
        }
    };

    let mut attached = Vec::new();
    for h in TCP_HOOKS {
        let mut errors = Vec::new();
        let mut done = None;
        for &path in candidates(opts.attach) {
            if !path_possible(path, h.tp) {
                match (path, layout_errors.iter().find(|(t, _)| *t == h.tp)) {
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
            match attach_one(
                &mut ebpf,
                aya_btf.as_ref(),
                path,
                program,
                h.tp.group(),
                h.tp.name(),
            ) {
                Ok(()) => {
                    done = Some(path);
                    break;
                }
                Err(e) => errors.push(format!("{}: {e}", path.name())),
            }
        }
        match done {
            Some(path) => attached.push((h.tp.name(), path)),
            None if h.tp.required() => {
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
            None => warnings.push(format!(
                "{} unavailable, its events are off: {}",
                h.tp,
                errors.join("; ")
            )),
        }
    }

    // connect()/accept()/accept4(): the six syscall tracepoints, or raw_syscalls.
    let sys_paths: &[AttachPath] = match opts.attach {
        AttachMode::Auto => &[AttachPath::Tracepoint, AttachPath::Btf, AttachPath::Raw],
        m => candidates(m),
    };
    let mut sys_errors = Vec::new();
    let mut sys_done = false;
    for &path in sys_paths {
        let res = match path {
            AttachPath::Tracepoint => {
                if !SYSCALL_HOOKS.iter().all(|(tp, _, _)| layout_of(*tp)) {
                    sys_errors
                        .push("tracepoint: syscall tracepoint formats unavailable".to_string());
                    continue;
                }
                SYSCALL_HOOKS.iter().try_for_each(|(tp, program, _)| {
                    attach_one(&mut ebpf, None, path, program, tp.group(), tp.name())
                })
            }
            AttachPath::Btf | AttachPath::Raw => {
                if !path_possible(path, Tracepoint::SysEnterConnect)
                    || !cfg!(target_arch = "x86_64")
                {
                    sys_errors.push(format!("{}: needs kernel BTF on x86_64", path.name()));
                    continue;
                }
                let (enter, exit) = if path == AttachPath::Btf {
                    ("btf_sys_enter", "btf_sys_exit")
                } else {
                    ("raw_sys_enter", "raw_sys_exit")
                };
                attach_one(
                    &mut ebpf,
                    aya_btf.as_ref(),
                    path,
                    enter,
                    "raw_syscalls",
                    "sys_enter",
                )
                .and_then(|()| {
                    attach_one(
                        &mut ebpf,
                        aya_btf.as_ref(),
                        path,
                        exit,
                        "raw_syscalls",
                        "sys_exit",
                    )
                })
            }
        };
        match res {
            Ok(()) => {
                attached.push(("connect/accept", path));
                sys_done = true;
                break;
            }
            Err(e) => sys_errors.push(format!("{}: {e}", path.name())),
        }
    }
    if !sys_done {
        warnings.push(format!(
            "connect()/accept() returns unavailable: {}",
            sys_errors.join("; ")
        ));
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

    Ok((
        Loaded {
            ebpf,
            counters,
            warnings,
            attached,
        },
        ring,
    ))
}
