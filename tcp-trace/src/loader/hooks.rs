//! The hooks: which tracepoint each program is for, the three attach paths (classic
//! tracepoint, tp_btf, raw tracepoint), and the plan that tries them in order.
use std::collections::HashMap;
use std::os::fd::AsFd;

use aya::programs::{BtfTracePoint, Program, RawTracePoint, TracePoint};
use tcp_trace_common::TpLayout;

use super::{LoadError, Phases};
use crate::layout::{LayoutError, Tracepoint};

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
pub(super) struct Hook {
    pub(super) tp: Tracepoint,
    pub(super) program: &'static str,
    pub(super) global: &'static str,
    pub(super) btf_program: &'static str,
    pub(super) raw_program: &'static str,
    /// tp_btf/raw programs attached after the main one to the same tracepoint to
    /// report the runs the kernel skips for it (it does not re-enter a program on
    /// a CPU where it is running): (btf, raw).
    pub(super) nested: Option<(&'static str, &'static str)>,
    /// tp_btf programs (main, nested twin if any) that also use socket local storage
    /// (5.11+), tried before `btf_program` and its twin.
    pub(super) btf_storage: Option<(&'static str, Option<&'static str>)>,
}

pub(super) const TCP_HOOKS: &[Hook] = &[
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
            Some("btf_inet_sock_set_state_sk_nested"),
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
pub(super) const SYSCALL_HOOKS: &[(Tracepoint, &str, &str)] = &[
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

/// The tracepoints tp_btf programs are loaded against (their typedefs are
/// `btf_trace_<name>`): every TCP hook's, and raw_syscalls' for the syscalls.
pub(super) fn tp_btf_targets() -> impl Iterator<Item = &'static str> {
    TCP_HOOKS
        .iter()
        .map(|h| h.tp.name())
        .chain(["sys_enter", "sys_exit"])
}

fn program_err(name: &'static str) -> impl Fn(aya::programs::ProgramError) -> LoadError {
    move |err| LoadError::Program { name, err }
}

/// Programs by name, each lent to the one thread that loads it.
pub(super) type Progs<'a> = HashMap<&'a str, &'a mut Program>;

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
        .ok_or(LoadError::ProgramMissing(program))?;
    match path {
        AttachPath::Tracepoint => {
            let p: &mut TracePoint = (&mut **prog).try_into().map_err(program_err(program))?;
            p.load().map_err(program_err(program))?;
            p.attach(group, name).map_err(program_err(program))?;
        }
        AttachPath::Btf => {
            let btf = btf.ok_or(LoadError::NoKernelBtf(program))?;
            let p: &mut BtfTracePoint = (&mut **prog).try_into().map_err(program_err(program))?;
            // Loaded already when it was verified ahead on another thread (a twin).
            if p.fd().is_err() {
                p.load(name, btf).map_err(program_err(program))?;
            }
            p.attach().map_err(program_err(program))?;
        }
        AttachPath::Raw => {
            let p: &mut RawTracePoint = (&mut **prog).try_into().map_err(program_err(program))?;
            p.load().map_err(program_err(program))?;
            p.attach(name).map_err(program_err(program))?;
        }
    }
    ph.loaded(program, prog.fd().ok().map(|f| f.as_fd()));
    Ok(())
}

/// What is known before attaching: the mode asked for, kernel BTF, and the
/// classic tracepoints' layouts.
pub(super) struct Plan<'a> {
    pub(super) attach: AttachMode,
    pub(super) btf: Option<&'a aya::Btf>,
    pub(super) have_offsets: bool,
    pub(super) layouts: &'a [(Tracepoint, &'static str, TpLayout)],
    pub(super) layout_errors: &'a [(Tracepoint, LayoutError)],
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

    /// One TCP hook, trying its paths in order: the path that attached with why the
    /// paths tried before it failed (a fallback worth a note), or the errors of every
    /// path.
    pub(super) fn attach_tcp_hook(
        &self,
        ph: &mut Phases,
        programs: &mut Progs,
        h: &Hook,
    ) -> Result<(AttachPath, Vec<String>), Vec<String>> {
        let mut errors = Vec::new();
        // Failures of paths this kernel could have taken (not "no BTF", not the
        // storage variant, whose absence has a note of its own).
        let mut fell_back = Vec::new();
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
                // The twin is verified on another thread while the main program is
                // (~14 ms beside ~52 ms on 6.18), and attached only after it. A twin
                // the verifier refused there is loaded again below, for its error.
                let ahead = twin.and_then(|t| programs.remove_entry(t));
                let (main_result, ahead) = std::thread::scope(|scope| {
                    let btf = self.btf;
                    let verifying = ahead.map(|(t, prog)| {
                        scope.spawn(move || {
                            if let (Some(btf), Ok(p)) =
                                (btf, <&mut BtfTracePoint>::try_from(&mut *prog))
                            {
                                let _ = p.load(h.tp.name(), btf);
                            }
                            (t, prog)
                        })
                    });
                    let r = attach_one(ph, programs, self.btf, path, main, group, h.tp.name());
                    (r, verifying.map(|v| v.join()))
                });
                match ahead {
                    Some(Ok((t, prog))) => {
                        programs.insert(t, prog);
                    }
                    Some(Err(_)) => {
                        return Err(vec![format!(
                            "{}: the thread verifying {} panicked",
                            path.name(),
                            twin.unwrap_or_default()
                        )]);
                    }
                    None => {}
                }
                match main_result.and_then(|()| match twin {
                    Some(twin) => {
                        attach_one(ph, programs, self.btf, path, twin, group, h.tp.name())
                    }
                    None => Ok(()),
                }) {
                    Ok(()) => return Ok((path, fell_back)),
                    Err(e) => {
                        // Never both variants at once: drop what did load.
                        for name in [Some(main), twin].into_iter().flatten() {
                            if let Some(p) = programs.get_mut(name)
                                && let Ok(p) = <&mut BtfTracePoint>::try_from(&mut **p)
                            {
                                let _ = p.unload();
                            }
                        }
                        errors.push(format!(
                            "{} with socket storage: {}",
                            path.name(),
                            super::chain(&e)
                        ));
                    }
                }
            }
            match attach_one(ph, programs, self.btf, path, program, group, h.tp.name()).and_then(
                |()| match nested {
                    Some(n) => attach_one(ph, programs, self.btf, path, n, group, h.tp.name()),
                    None => Ok(()),
                },
            ) {
                Ok(()) => return Ok((path, fell_back)),
                Err(e) => {
                    let e = format!("{}: {}", path.name(), super::chain(&e));
                    fell_back.push(e.clone());
                    errors.push(e);
                }
            }
        }
        Err(errors)
    }

    /// connect()/accept()/accept4(): the six syscall tracepoints, or raw_syscalls.
    pub(super) fn attach_syscalls(
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
                Err(e) => errors.push(format!("{}: {}", path.name(), super::chain(&e))),
            }
        }
        Err(errors)
    }
}
