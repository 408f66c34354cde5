//! The per-CPU counters of the kernel side, and the runs of our programs the kernel
//! skipped (`recursion_misses`).
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use aya_obj::generated::{bpf_attr, bpf_cmd, bpf_prog_info};
use tcp_trace_common::counter;

use super::Loaded;

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
    /// Runs of the main state-transition program the kernel skipped, caught or not:
    /// every catch answers one of them on a kernel that counts skips, and what
    /// `caught_nested` has beyond it are transitions the main program had reported
    /// and its twin reported again.
    pub state_skips: u64,
    /// Sockets reported event by event because the book map was full.
    pub books_full: u64,
    /// Classic-tracepoint transitions whose states were no TCP states (the
    /// tracepoint's layout read wrong).
    pub layout_suspect: u64,
    /// connect()/accept() calls the kernel side could not follow (its map of calls
    /// in progress was full): their returns are missing.
    pub calls_full: u64,
}

/// `bpf_prog_info.recursion_misses` of the program behind `fd` (Linux 5.12+;
/// None before, or when the kernel refuses the query).
///
/// aya's `ProgramInfo` wraps the same `bpf_prog_info` but has no accessor for this
/// field (proposed upstream: docs/upstream.md, "recursion_misses in ProgramInfo"), so
/// the query is made here with aya-obj's generated kernel types rather than literal
/// offsets. A kernel older than the struct answers with a shorter `info_len`, and the
/// field then stays 0 and is reported as unknown.
pub(super) fn recursion_misses(fd: BorrowedFd<'_>) -> Option<u64> {
    let (info, filled) = prog_info(fd)?;
    let end = std::mem::offset_of!(bpf_prog_info, recursion_misses) + 8;
    (filled >= end).then_some(info.recursion_misses)
}

/// `bpf_prog_info.verified_insns` (Linux 5.16+): the instructions the verifier
/// processed for the program behind `fd`, what its load time grows with
/// (`TCP_TRACE_STARTUP_TIMES`).
pub(super) fn verified_insns(fd: BorrowedFd<'_>) -> Option<u32> {
    let (info, filled) = prog_info(fd)?;
    let end = std::mem::offset_of!(bpf_prog_info, verified_insns) + 4;
    (filled >= end).then_some(info.verified_insns)
}

/// The kernel's `bpf_prog_info` of the program behind `fd` and how many of its
/// bytes the kernel filled; None when it refuses the query.
fn prog_info(fd: BorrowedFd<'_>) -> Option<(bpf_prog_info, usize)> {
    // SAFETY: both are plain C structs/unions of integers, for which all-zero bytes
    // are a valid value (the kernel requires unused attr bytes to be zero).
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    let info_len = std::mem::size_of::<bpf_prog_info>();
    // Writing a `Copy` field of a union is safe; only reads need `unsafe`.
    attr.info.bpf_fd = fd.as_raw_fd() as u32;
    attr.info.info_len = info_len as u32;
    attr.info.info = std::ptr::from_mut(&mut info) as u64;
    // SAFETY: attr is a valid bpf_attr whose `info` points at `info_len` writable
    // bytes (`info`) that outlive the call; the kernel writes at most that many.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            bpf_cmd::BPF_OBJ_GET_INFO_BY_FD as libc::c_long,
            std::ptr::from_mut(&mut attr),
            std::mem::size_of::<bpf_attr>(),
        )
    };
    // SAFETY: `info` is the member written above and by the kernel (it updates
    // info_len to the size it filled).
    let filled = unsafe { attr.info.info_len } as usize;
    (r == 0).then_some((info, filled))
}

impl Loaded {
    /// Runs of our loaded programs the kernel skipped, before the catches of the
    /// twins are taken off (see `Counters::skipped`): the main state program's, and
    /// all the others'.
    /// The `_nested` twins' own misses are left out: a twin is only ever running
    /// when its main program is not (it runs after it, and returns at once unless
    /// the main one is interrupted), so a hit the twin misses the main one took.
    fn misses(&self) -> (u64, u64) {
        let (mut state, mut other) = (0, 0);
        for (name, p) in self.ebpf.programs() {
            if name.ends_with("_nested") {
                continue;
            }
            let Some(m) = p.fd().ok().and_then(|fd| recursion_misses(fd.as_fd())) else {
                continue;
            };
            if name.contains("inet_sock_set_state") {
                state += m;
            } else {
                other += m;
            }
        }
        (state, other)
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
        // `skipped` smaller, never report a caught run as missing. Taken off the
        // state program's own skips only: other programs' skips stay counted
        // whatever the twin did.
        let (state_skips, other_skips) = self.misses();
        let caught = sum(counter::NESTED_CAUGHT);
        Counters {
            lost: sum(counter::RINGBUF_FULL),
            submitted: sum(counter::SUBMITTED),
            filtered: sum(counter::FILTERED),
            fd_walk_failed: sum(counter::FD_WALK_FAILED),
            skipped: state_skips.saturating_sub(caught) + other_skips,
            caught_nested: caught,
            state_skips,
            books_full: sum(counter::BOOKS_FULL),
            layout_suspect: sum(counter::LAYOUT_SUSPECT),
            calls_full: sum(counter::CALLS_FULL),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// aya-obj's struct puts the field where the kernel's UAPI header does (the
    /// offset this module used to hard-code).
    #[test]
    fn recursion_misses_is_at_the_uapi_offset() {
        assert_eq!(std::mem::offset_of!(bpf_prog_info, recursion_misses), 208);
    }
}
