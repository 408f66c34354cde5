//! Loader: checks privileges, finds tracefs, reads the running kernel's tracepoint
//! layouts and struct offsets, loads the eBPF object with them, attaches every hook
//! and says what is missing.
use std::io;
use std::path::{Path, PathBuf};

use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, RingBuf},
    programs::TracePoint,
};
use tcp_trace_common::{Filter, KernelOffsets, TpLayout, counter};

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
    #[error("required tracepoint sock:inet_sock_set_state is unavailable on this kernel: {0}")]
    MissingRequired(LayoutError),
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

/// One hook and the global holding its layout.
struct Hook {
    tp: Tracepoint,
    program: &'static str,
    global: &'static str,
}

const HOOKS: &[Hook] = &[
    Hook {
        tp: Tracepoint::InetSockSetState,
        program: "inet_sock_set_state",
        global: "LAYOUT_SET_STATE",
    },
    Hook {
        tp: Tracepoint::TcpRetransmitSynack,
        program: "tcp_retransmit_synack",
        global: "LAYOUT_SYNACK",
    },
    Hook {
        tp: Tracepoint::TcpRetransmitSkb,
        program: "tcp_retransmit_skb",
        global: "LAYOUT_RETRANSMIT",
    },
    Hook {
        tp: Tracepoint::TcpSendReset,
        program: "tcp_send_reset",
        global: "LAYOUT_SEND_RESET",
    },
    Hook {
        tp: Tracepoint::TcpReceiveReset,
        program: "tcp_receive_reset",
        global: "LAYOUT_RECV_RESET",
    },
    Hook {
        tp: Tracepoint::SysEnterConnect,
        program: "sys_enter_connect",
        global: "LAYOUT_ENTER_CONNECT",
    },
    Hook {
        tp: Tracepoint::SysExitConnect,
        program: "sys_exit_connect",
        global: "LAYOUT_EXIT_CONNECT",
    },
    Hook {
        tp: Tracepoint::SysEnterAccept,
        program: "sys_enter_accept",
        global: "LAYOUT_ENTER_ACCEPT",
    },
    Hook {
        tp: Tracepoint::SysExitAccept,
        program: "sys_exit_accept",
        global: "LAYOUT_EXIT_ACCEPT",
    },
    Hook {
        tp: Tracepoint::SysEnterAccept4,
        program: "sys_enter_accept4",
        global: "LAYOUT_ENTER_ACCEPT4",
    },
    Hook {
        tp: Tracepoint::SysExitAccept4,
        program: "sys_exit_accept4",
        global: "LAYOUT_EXIT_ACCEPT4",
    },
];

/// What the user asked to trace (in-kernel filters).
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub filter: Filter,
}

/// A loaded and attached tracer.
pub struct Loaded {
    pub ebpf: Ebpf,
    pub counters: PerCpuArray<MapData, u64>,
    /// Human-readable notes about what was degraded (one line each).
    pub warnings: Vec<String>,
    /// Hooks attached, by tracepoint name.
    pub attached: Vec<&'static str>,
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

/// Loads and attaches everything. Errors are fatal; degradations become warnings.
pub fn load(opts: &Options) -> Result<(Loaded, RingBuf<MapData>), LoadError> {
    if EBPF_OBJECT.is_empty() {
        return Err(LoadError::NoObject);
    }
    let caps = Caps::current();
    if let Some(msg) = caps.missing_for_bpf() {
        return Err(LoadError::Privilege(msg));
    }
    let tracefs = find_or_mount_tracefs(&caps)?;
    let mut warnings = Vec::new();

    // Layouts of every hook, from the running kernel's format files.
    let mut layouts: Vec<(usize, TpLayout)> = Vec::new();
    for (i, h) in HOOKS.iter().enumerate() {
        let res = layout::read_format(&tracefs, h.tp).and_then(|f| layout::tp_layout(h.tp, &f));
        match res {
            Ok(l) => layouts.push((i, l)),
            Err(e) if h.tp.required() => {
                return Err(match e {
                    LayoutError::FormatUnreadable { .. } => LoadError::TracefsUnreadable {
                        path: tracefs.clone(),
                        err: e.to_string(),
                    },
                    e => LoadError::MissingRequired(e),
                });
            }
            Err(e) => warnings.push(format!(
                "{}:{} unavailable, its events are off: {e}",
                h.tp.group(),
                h.tp.name()
            )),
        }
    }

    let offsets = match Btf::from_file(Path::new("/sys/kernel/btf/vmlinux"))
        .and_then(|b| layout::kernel_offsets(&b))
    {
        Ok(o) => o,
        Err(e) => {
            warnings.push(format!(
                "kernel BTF unusable ({e}): accept() returns are reported without their socket, connect() only when it sends a SYN"
            ));
            KernelOffsets::default()
        }
    };

    let mut loader = EbpfLoader::new();
    for (i, l) in &layouts {
        loader.override_global(HOOKS[*i].global, l, true);
    }
    loader.override_global("OFFSETS", &offsets, true);
    loader.override_global("FILTER", &opts.filter, true);
    let mut ebpf = loader.load(EBPF_OBJECT).map_err(LoadError::Load)?;

    let mut attached = Vec::new();
    for (i, _) in &layouts {
        let h = &HOOKS[*i];
        let prog: &mut TracePoint = ebpf
            .program_mut(h.program)
            .ok_or_else(|| LoadError::Map(h.program, "program missing from the object".into()))?
            .try_into()
            .map_err(|err| LoadError::Program {
                name: h.program,
                err,
            })?;
        let res = prog
            .load()
            .and_then(|()| prog.attach(h.tp.group(), h.tp.name()));
        match res {
            Ok(_) => attached.push(h.tp.name()),
            Err(err) if h.tp.required() => {
                return Err(LoadError::Program {
                    name: h.program,
                    err,
                });
            }
            Err(err) => warnings.push(format!(
                "{}:{} could not be attached, its events are off: {err}",
                h.tp.group(),
                h.tp.name()
            )),
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
