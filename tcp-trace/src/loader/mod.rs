//! Loader: checks privileges, finds tracefs, reads the running kernel's tracepoint
//! layouts and struct offsets, loads the eBPF object with them, attaches every hook
//! and says what is missing.
mod btf_index;
mod counters;
mod hooks;
mod tracefs;

use std::path::{Path, PathBuf};

use aya::{
    EbpfLoader,
    maps::{MapData, PerCpuArray, RingBuf},
};
use tcp_trace_common::{Filter, ListenKey, ListenerLink, Owner, PendingCall, TpLayout, link_flags};

pub use aya::Ebpf;
pub use counters::Counters;
pub use hooks::{AttachMode, AttachPath};
pub use tracefs::find_or_mount_tracefs;

use crate::layout::{self, LayoutError, Tracepoint, btf::Btf};
use crate::privilege::{self, Caps};
use btf_index::tp_btf_index;
use hooks::{Hook, Plan, Progs, SYSCALL_HOOKS, TCP_HOOKS};

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
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error("loading the eBPF object failed")]
    Load(#[source] aya::EbpfError),
    #[error("program {name}")]
    Program {
        name: &'static str,
        #[source]
        err: aya::programs::ProgramError,
    },
    #[error("program {0} is missing from the eBPF object")]
    ProgramMissing(&'static str),
    #[error("program {0} needs the kernel's BTF (tp_btf), which is unusable here")]
    NoKernelBtf(&'static str),
    #[error("map {0} is missing from the eBPF object")]
    MapMissing(&'static str),
    #[error("map {name}")]
    Map {
        name: &'static str,
        #[source]
        err: aya::maps::MapError,
    },
    #[error("this binary was built without its eBPF object (AYA_BUILD_SKIP was set)")]
    NoObject,
}

/// What the user asked to trace (in-kernel filters).
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub filter: Filter,
    pub attach: AttachMode,
    /// Ring buffer size in bytes (power of two, multiple of the page size); 0 = the
    /// object's default (8 MiB).
    pub ring_bytes: u32,
    /// Entries of the book map (0 = the object's default, 16384).
    pub book_entries: u32,
    /// Ask for the per-connection design (a book per socket, flushed as one record)
    /// where the state hook can use socket storage.
    pub books: bool,
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
    /// The per-connection design is active: the state hook (tp_btf or raw) keeps a
    /// book per socket and flushes it as [`tcp_trace_common::ConnRecord`]s.
    pub books: bool,
    /// The kernel side's log records (aya-log), when the object has aya-log's map;
    /// [`Loaded::flush_log`] hands them to the `log` facade.
    pub log: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    /// The in-kernel filters as loaded: applied to the books read at the end, which
    /// the kernel keeps for every socket and filters only when it flushes them.
    pub filter: Filter,
}

/// Whether the kernel side's filters would drop a book when flushing it (the same
/// test as its `filter_miss`, on the book's family, owner and ports).
pub fn book_filtered_out(f: &Filter, b: &tcp_trace_common::ConnRecord) -> bool {
    let owner_known = b.flags & tcp_trace_common::book_flags::OWNER_KNOWN != 0;
    let tgid = if owner_known { b.owner.tgid } else { 0 };
    let n_cgroups = (f.ncgroups as usize).min(f.cgroups.len());
    (f.family != 0 && b.family != 0 && f.family != b.family)
        || (f.tgid != 0 && tgid != f.tgid)
        || (f.this_container != 0 && b.owner.ns_tgid == 0)
        || (n_cgroups != 0
            && (b.owner.cgroup_id == 0 || !f.cgroups[..n_cgroups].contains(&b.owner.cgroup_id)))
        || !ports_take(f, b.sport, b.dport)
}

/// Whether the port filter of `f` takes a socket with ports `a` and `b` (either end's;
/// no port filter takes all), as the kernel side's `filter_miss` decides.
pub fn ports_take(f: &Filter, a: u16, b: u16) -> bool {
    let n = (f.nports as usize).min(f.ports.len());
    n == 0 || f.ports[..n].iter().any(|&p| p == a || p == b)
}

impl Loaded {
    /// Detaches and unloads every program (at the end of a run): from here on the
    /// kernel side writes nothing, so its ring and its books can be read to the end
    /// without racing it. Counters stay readable (`misses` are read before: they need
    /// the programs).
    pub fn detach_all(&mut self) {
        use aya::programs::{BtfTracePoint, RawTracePoint, TracePoint};
        for (_, p) in self.ebpf.programs_mut() {
            let r = if let Ok(p) = <&mut BtfTracePoint>::try_from(&mut *p) {
                p.unload()
            } else if let Ok(p) = <&mut RawTracePoint>::try_from(&mut *p) {
                p.unload()
            } else if let Ok(p) = <&mut TracePoint>::try_from(&mut *p) {
                p.unload()
            } else {
                Ok(())
            };
            if let Err(e) = r {
                log::debug!("unloading a program at exit: {e}");
            }
        }
    }

    /// The books still in the kernel (per-connection design) with steps not yet
    /// flushed: sockets that have not closed, with the transitions, retransmits and
    /// resets since their last record. Read after [`Loaded::detach_all`]. Sorted by
    /// their first step's time; with the number of entries that could not be read.
    pub fn pending_books(&self) -> (Vec<tcp_trace_common::ConnRecord>, u64) {
        let Some(map) = self.ebpf.map("BOOK_MAP") else {
            return (Vec::new(), 0);
        };
        let Ok(map) = aya::maps::HashMap::<_, u64, tcp_trace_common::ConnRecord>::try_from(map)
        else {
            return (Vec::new(), 0);
        };
        let mut unread = 0;
        let mut books: Vec<_> = map
            .iter()
            .filter_map(|r| r.map_err(|_| unread += 1).ok())
            .map(|(_, b)| b)
            .filter(|b| b.skaddr != 0 && b.nsteps > 0)
            // Books of sockets the filters leave out are kept by the kernel too.
            .filter(|b| !book_filtered_out(&self.filter, b))
            .collect();
        books.sort_by_key(|b| b.steps[0].ts_ns);
        (books, unread)
    }

    /// Passes the kernel side's pending log records (aya-log) to the `log` facade
    /// (shown with `-v` / `RUST_LOG`). Does nothing without aya-log's map.
    pub fn flush_log(&mut self) {
        if let Some(l) = &mut self.log {
            l.flush();
        }
    }

    /// `connect()` calls in progress before the programs were attached, as (thread's
    /// `pid_tgid`, fd): each goes into the kernel's table of calls in progress, unless
    /// the thread has an entry already (a call it began since attaching, which is
    /// newer and knows its socket). Its exit then finds the socket through the fd.
    /// Returns how many were added.
    pub fn seed_connects(&mut self, calls: &[(u64, i32)]) -> usize {
        let Some(map) = self.ebpf.map_mut("CONNECTS") else {
            return 0;
        };
        let Ok(mut map) = aya::maps::HashMap::<_, u64, PendingCall>::try_from(map) else {
            return 0;
        };
        const BPF_NOEXIST: u64 = 1;
        calls
            .iter()
            .filter(|&&(id, fd)| {
                let call = PendingCall {
                    fd,
                    ..PendingCall::default()
                };
                map.insert(id, call, BPF_NOEXIST).is_ok()
            })
            .count()
    }

    /// Listening sockets that existed before the programs were attached: their owners
    /// go into the kernel's listener table, so that their children are attributed
    /// when born (LISTEN → SYN_RECV) rather than only at accept(). Entries the kernel
    /// side made since attaching are kept, but no longer said to be their key's only
    /// listener without socket storage (`link_flags::SOLE`): a listener from before
    /// the start has none, so a child without it may be this one's. Returns how many
    /// were added.
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
                    flags: 0,
                    _pad: 0,
                };
                if map.insert(key, link, BPF_NOEXIST).is_ok() {
                    return true;
                }
                if let Ok(mut made) = map.get(&key, 0)
                    && made.flags & link_flags::SOLE != 0
                {
                    made.flags &= !link_flags::SOLE;
                    const BPF_EXIST: u64 = 2;
                    // Gone meanwhile (the listener closed): nothing left to correct.
                    let _ = map.insert(key, made, BPF_EXIST);
                }
                false
            })
            .count()
    }
}

/// aya-log's reader for the kernel side's log records, when the object has its map.
/// Tolerant: an object without aya-log calls has no such map, and that is no error.
fn init_ebpf_log(
    ebpf: &mut Ebpf,
    warnings: &mut Vec<String>,
) -> Option<aya_log::EbpfLogger<&'static dyn log::Log>> {
    match aya_log::EbpfLogger::init(ebpf) {
        Ok(l) => Some(l),
        Err(aya_log::Error::MapNotFound) => {
            log::debug!("the eBPF object has no aya-log map: no kernel-side log records");
            None
        }
        Err(e) => {
            warnings.push(format!(
                "the kernel side's log records are unavailable: {}",
                chain(&e)
            ));
            None
        }
    }
}

/// `e` and its sources, `: `-separated (for the one-line notes about hooks).
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// True when an error (or one of its sources) is an EPERM from the kernel.
fn is_eperm(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
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

/// Whether this process is in the initial pid namespace, where /proc's pids and tids
/// are the ones the kernel side sees (`bpf_get_current_pid_tgid`).
pub fn in_initial_pid_namespace() -> bool {
    own_pid_namespace().is_some_and(|(_, ino)| ino == PROC_PID_INIT_INO)
}

/// Start-up phases, printed on stderr when TCP_TRACE_STARTUP_TIMES is set (what
/// docs/performance.md's start-up figures come from).
pub(super) struct Phases {
    on: bool,
    last: std::time::Instant,
}

impl Phases {
    pub(super) fn new() -> Self {
        Phases {
            on: std::env::var_os("TCP_TRACE_STARTUP_TIMES").is_some(),
            last: std::time::Instant::now(),
        }
    }
    pub(super) fn mark(&mut self, what: &str) {
        if self.on {
            let now = std::time::Instant::now();
            eprintln!(
                "tcp-trace: startup {what}: {:.1} ms",
                (now - self.last).as_secs_f64() * 1e3
            );
            self.last = now;
        }
    }
    /// A program loaded: the time since the last mark, and what the verifier
    /// processed (`bpf_prog_info.verified_insns`, when the kernel says).
    pub(super) fn loaded(&mut self, program: &str, fd: Option<std::os::fd::BorrowedFd<'_>>) {
        if self.on {
            let insns = fd.and_then(counters::verified_insns);
            self.mark(&match insns {
                Some(n) => format!("{program} ({n} instructions verified)"),
                None => program.to_string(),
            });
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
    let books: u32 = opts.books.into();
    loader.override_global("BOOKS", &books, true);
    if opts.ring_bytes != 0 {
        loader.map_max_entries("EVENTS", opts.ring_bytes);
    }
    if opts.book_entries != 0 {
        loader.map_max_entries("BOOK_MAP", opts.book_entries);
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

    // Loading is mostly the verifier, which runs in the calling thread: the programs
    // are verified on two threads. The state hook (its program and `_nested` twin,
    // ~65 ms of the ~110 to ready on 6.18) has this one; the syscall hooks and then
    // the other TCP hooks (~25 ms) the second. Each thread gets the programs it may
    // use (disjoint sets), so no program is shared, and a twin still attaches after
    // its main program, on the same thread.
    let is_main = |h: &Hook| h.nested.is_some() || h.btf_storage.is_some();
    let hook_programs = |h: &Hook| -> Vec<&'static str> {
        let mut v = vec![h.program, h.btf_program, h.raw_program];
        if let Some((b, r)) = h.nested {
            v.extend([b, r]);
        }
        if let Some((m, t)) = h.btf_storage {
            v.push(m);
            v.extend(t);
        }
        v
    };
    let mut programs: Progs = ebpf.programs_mut().collect();
    let mut take = |names: &mut dyn Iterator<Item = &'static str>| -> Progs {
        names
            .filter_map(|n| programs.remove_entry(n))
            .collect::<Progs>()
    };
    let mut main_programs = take(
        &mut TCP_HOOKS
            .iter()
            .filter(|h| is_main(h))
            .flat_map(&hook_programs),
    );
    let mut side_programs = take(
        &mut TCP_HOOKS
            .iter()
            .filter(|h| !is_main(h))
            .flat_map(&hook_programs)
            .chain(SYSCALL_HOOKS.iter().map(|(_, p, _)| *p))
            .chain([
                "btf_sys_enter",
                "btf_sys_exit",
                "raw_sys_enter",
                "raw_sys_exit",
            ]),
    );
    type TcpResult = Result<(AttachPath, Vec<String>), Vec<String>>;
    let (main_results, side) = std::thread::scope(|scope| {
        let plan = &plan;
        let side = scope.spawn(move || {
            let mut ph = Phases::new();
            let sys = plan.attach_syscalls(&mut ph, &mut side_programs);
            let tcp: Vec<(usize, TcpResult)> = TCP_HOOKS
                .iter()
                .enumerate()
                .filter(|(_, h)| !is_main(h))
                .map(|(i, h)| (i, plan.attach_tcp_hook(&mut ph, &mut side_programs, h)))
                .collect();
            (sys, tcp)
        });
        let main: Vec<(usize, TcpResult)> = TCP_HOOKS
            .iter()
            .enumerate()
            .filter(|(_, h)| is_main(h))
            .map(|(i, h)| (i, plan.attach_tcp_hook(&mut ph, &mut main_programs, h)))
            .collect();
        (main, side.join())
    });
    drop((main_programs, programs));
    let Ok((sys_result, side_results)) = side else {
        return Err(LoadError::Required(
            "the thread loading the syscall hooks panicked".into(),
        ));
    };
    // Back in TCP_HOOKS order (the order of the warnings and the start line).
    let mut tcp_results: Vec<Option<TcpResult>> = TCP_HOOKS.iter().map(|_| None).collect();
    for (i, r) in main_results.into_iter().chain(side_results) {
        tcp_results[i] = Some(r);
    }
    let tcp_results = tcp_results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(vec!["not attempted".into()])));

    let mut attached = Vec::new();
    for (h, result) in TCP_HOOKS.iter().zip(tcp_results) {
        match result {
            Ok((path, fell_back)) => {
                if !fell_back.is_empty() {
                    warnings.push(format!(
                        "{} attached as {} because {}",
                        h.tp,
                        path.name(),
                        fell_back.join("; ")
                    ));
                }
                attached.push((h.tp.name(), path))
            }
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
        Ok(path) => attached.push(("connect/accept", path)),
        Err(errors) => warnings.push(format!(
            "connect()/accept() returns unavailable: {}",
            errors.join("; ")
        )),
    }

    let map = |ebpf: &mut Ebpf, name| ebpf.take_map(name).ok_or(LoadError::MapMissing(name));
    let map_err = |name| move |err| LoadError::Map { name, err };
    let ring = RingBuf::try_from(map(&mut ebpf, "EVENTS")?).map_err(map_err("EVENTS"))?;
    let counters =
        PerCpuArray::try_from(map(&mut ebpf, "COUNTERS")?).map_err(map_err("COUNTERS"))?;

    let log = init_ebpf_log(&mut ebpf, &mut warnings);

    // Kernels before 5.12 do not count the runs they skip: say so once, and report
    // skipped runs as unknown rather than as zero.
    let skips_counted = {
        use std::os::fd::AsFd;
        ebpf.programs()
            .filter_map(|(_, p)| p.fd().ok())
            .any(|fd| counters::recursion_misses(fd.as_fd()).is_some())
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

    // The books need the BTF-typed or raw state hook (they read the socket through
    // BTF offsets); the classic tracepoint keeps one record per event.
    let books = opts.books
        && attached.iter().any(|(hook, path)| {
            *hook == "inet_sock_set_state" && matches!(path, AttachPath::Btf | AttachPath::Raw)
        });
    Ok((
        Loaded {
            ebpf,
            counters,
            warnings,
            attached,
            log,
            skips_counted,
            listener_storage,
            books,
            filter,
        },
        ring,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The books read at the end pass the filters the kernel applies at a flush: a
    /// book of another port, family, owner or cgroup is left out.
    #[test]
    fn books_read_at_the_end_are_filtered_as_the_kernel_would() {
        use tcp_trace_common::{ConnRecord, book_flags};
        let mut b = ConnRecord {
            family: 2,
            sport: 40000,
            dport: 8080,
            flags: book_flags::OWNER_KNOWN,
            ..Default::default()
        };
        b.owner.tgid = 77;
        b.owner.cgroup_id = 5;
        let mut f = Filter::default();
        assert!(!book_filtered_out(&f, &b), "no filter");
        f.nports = 2;
        f.ports[0] = 443;
        f.ports[1] = 8080;
        assert!(!book_filtered_out(&f, &b), "remote port matches");
        f.ports[1] = 9090;
        assert!(book_filtered_out(&f, &b), "no port matches");
        b.sport = 443;
        assert!(!book_filtered_out(&f, &b), "local port matches");
        f.family = 10;
        assert!(book_filtered_out(&f, &b), "IPv6 only");
        f.family = 2;
        f.tgid = 78;
        assert!(book_filtered_out(&f, &b), "another process");
        f.tgid = 77;
        assert!(!book_filtered_out(&f, &b));
        b.flags = 0;
        assert!(
            book_filtered_out(&f, &b),
            "owner unknown: not the process asked for"
        );
        f.tgid = 0;
        f.ncgroups = 1;
        f.cgroups[0] = 6;
        assert!(book_filtered_out(&f, &b), "another cgroup");
        f.cgroups[0] = 5;
        assert!(!book_filtered_out(&f, &b));
        f.this_container = 1;
        assert!(book_filtered_out(&f, &b), "owner outside our pid namespace");
    }

    /// Each cause is printed once: by the error that has it as its source, never
    /// also in the message of the one wrapping it.
    #[test]
    fn causes_are_printed_once() {
        let err = LoadError::Map {
            name: "EVENTS",
            err: aya::maps::MapError::InvalidName {
                name: "EVENTS".into(),
            },
        };
        let line = chain(&err);
        assert!(line.starts_with("map EVENTS: "), "{line}");
        assert_eq!(line.matches("EVENTS").count(), 2, "{line}");
        let missing = || LayoutError::FieldMissing {
            tracepoint: "tcp:tcp_send_reset".into(),
            field: "skaddr",
        };
        assert_eq!(chain(&LoadError::from(missing())), missing().to_string());
        let unreadable = LayoutError::FormatUnreadable {
            path: "/x/format".into(),
            io: std::io::Error::from_raw_os_error(libc::EACCES),
        };
        let line = chain(&LoadError::from(unreadable));
        assert_eq!(line.matches("os error 13").count(), 1, "{line}");
    }
}
