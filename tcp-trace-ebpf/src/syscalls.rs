//! `connect()`, `accept()` and `accept4()`: enter/exit tracepoints, or raw_syscalls
//! filtered by syscall number.

use crate::books::book_return;
use crate::config::{
    FILTER, LAYOUT_ENTER_ACCEPT, LAYOUT_ENTER_ACCEPT4, LAYOUT_ENTER_CONNECT, LAYOUT_EXIT_ACCEPT,
    LAYOUT_EXIT_ACCEPT4, LAYOUT_EXIT_CONNECT, OFFSETS, books_on, opaque,
};
use crate::emit::{emit, new_event};
use crate::klog::count_rare;
use crate::kread::{
    copy16, netns_of_head, rd, read_local, read_sock_tuple, sk_of_fd, sock_of_fd, tp_read,
    zero_words,
};
use crate::maps::{ACCEPTS, CONNECTS, OWNERS, book_of, owner_entry, pending_call, slot};
use crate::owner::{current_owner, owner_in, owner_of, set_owner};
use aya_ebpf::helpers::bpf_get_current_pid_tgid;
use aya_ebpf::macros::btf_tracepoint;
use aya_ebpf::macros::raw_tracepoint;
use aya_ebpf::macros::tracepoint;
use aya_ebpf::maps::HashMap;
use aya_ebpf::programs::BtfTracePointContext;
use aya_ebpf::programs::RawTracePointContext;
use aya_ebpf::programs::TracePointContext;
use core::mem::MaybeUninit;
use tcp_trace_common::ConnRecord;
use tcp_trace_common::NO_FIELD;
use tcp_trace_common::Owner;
use tcp_trace_common::PendingCall;
use tcp_trace_common::TpLayout;
use tcp_trace_common::book_flags;
use tcp_trace_common::counter;
use tcp_trace_common::flags;
use tcp_trace_common::kind;
use tcp_trace_common::return_flags;

pub(crate) const EAGAIN: i64 = 11;

#[inline(always)]
pub(crate) fn sys_arg(ctx: &TracePointContext, l: &TpLayout) -> i64 {
    if l.sys_arg == NO_FIELD {
        return -1;
    }
    tp_read::<i64>(ctx, l.sys_arg)
}

/// Pid filter for syscalls: the caller is the owner.
#[inline(always)]
pub(crate) fn caller_filtered(id: u64) -> bool {
    let f = opaque(&raw const FILTER);
    f.tgid != 0 && (id >> 32) as u32 != f.tgid
}

#[tracepoint(category = "syscalls", name = "sys_enter_connect")]
pub fn sys_enter_connect(ctx: TracePointContext) -> u32 {
    let l = opaque(&raw const LAYOUT_ENTER_CONNECT);
    enter_connect(sys_arg(&ctx, &l));
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_connect")]
pub fn sys_exit_connect(ctx: TracePointContext) -> u32 {
    let l = opaque(&raw const LAYOUT_EXIT_CONNECT);
    exit_connect(sys_arg(&ctx, &l));
    0
}

/// Remembers a call in progress of thread `id` on `fd`. The record is zeroed in
/// place and inserted from there (zeroing a value and moving it made LLVM call the
/// byte-by-byte `memset` subprogram).
#[inline(always)]
pub(crate) fn insert_pending(map: &HashMap<u64, PendingCall>, id: u64, fd: i64) {
    let mut c = MaybeUninit::<PendingCall>::uninit();
    // SAFETY: 8-byte aligned (asserted above); fully written by zero_words, and all
    // zeroes is a valid PendingCall.
    let r = unsafe {
        zero_words(c.as_mut_ptr());
        (*c.as_mut_ptr()).fd = fd as i32;
        map.insert(&id, &*c.as_ptr(), 0)
    };
    if r.is_err() {
        // The map is full: this call's return will not be reported.
        count_rare!(
            counter::CALLS_FULL,
            "connect()/accept() of pid {} on fd {} not followed: the call map is full ({} on this CPU)",
            (id >> 32) as u32,
            fd
        );
    }
}

#[inline(always)]
pub(crate) fn enter_connect(fd: i64) {
    let id = bpf_get_current_pid_tgid();
    if caller_filtered(id) {
        return;
    }
    insert_pending(&CONNECTS, id, fd);
}

#[inline(always)]
pub(crate) fn exit_connect(ret: i64) {
    let id = bpf_get_current_pid_tgid();
    let Some(call) = pending_call(&CONNECTS, id) else {
        return;
    };
    let _ = CONNECTS.remove(&id);
    if call.skaddr != 0 && books_on() && connect_into_book(call.skaddr, id, ret, call.fd) {
        // Reported with the book's next record.
        return;
    }
    connect_event(ret, id, &call);
}

/// A `connect()` return as an event of its own. A subprogram, as are the book paths:
/// in one body with them, LLVM spilled a window's start where the verifiers of 5.10
/// and 6.1 lose its value, and they refused the program (a stack read at an unknown
/// offset).
#[inline(never)]
fn connect_event(ret: i64, id: u64, call: &PendingCall) {
    let o = opaque(&raw const OFFSETS);
    // The socket: the one that went SYN_SENT inside this call, else (a connect that
    // sent no SYN: EALREADY, EISCONN, an early error) found through the fd, TCP only.
    let (skaddr, head) = if call.skaddr != 0 {
        (call.skaddr, None)
    } else {
        match sock_of_fd(&o, call.fd as i64) {
            Some((sk, h)) => (sk, Some(h)),
            None => return,
        }
    };
    let Some(ev) = new_event(slot::CONNECT, kind::CONNECT_RETURN, skaddr, true) else {
        return;
    };
    ev.ret = ret;
    ev.fd = call.fd;
    if call.skaddr != 0 {
        // The remote end as it was when the SYN left (a failed connect is
        // disconnected, its dport zeroed, before it returns); only the local end,
        // bound after SYN_SENT was reported, is read from the socket.
        ev.dport = call.dport;
        ev.family = call.family;
        copy16(&mut ev.daddr, &call.daddr);
        ev.flags |= flags::HAS_TUPLE;
        if o.valid != 0 {
            read_local(&o, skaddr, ev);
        }
    } else if let Some(h) = &head {
        read_sock_tuple(&o, h, ev);
    }
    let book = if call.skaddr != 0 && books_on() {
        book_of(skaddr, false)
    } else {
        None
    };
    let owner = connect_owner(book.as_deref(), skaddr, id);
    set_owner(ev, &owner, 0);
    emit(ev);
}

/// The caller of `connect()` on `sk`, thread `id`: the owner bound at SYN_SENT (same
/// task), from the socket's book (per-connection design), else from the owner map.
/// Reading it again costs a comm and a cgroup helper and the namespace reads (~100 ns).
#[inline(always)]
fn connect_owner(book: Option<&ConnRecord>, sk: u64, id: u64) -> Owner {
    let booked = book
        .filter(|b| {
            b.skaddr == sk
                && b.flags & (book_flags::OWNER_KNOWN | book_flags::OWNER_FROM_LISTENER)
                    == book_flags::OWNER_KNOWN
                && b.owner.pid == id as u32
        })
        .map(|b| b.owner);
    match booked {
        Some(o) => o,
        None => match owner_entry(sk) {
            Some(o) if o.pid == id as u32 => o,
            _ => owner_of(sk),
        },
    }
}

/// A `connect()` return into the book of `sk` (see `book_return`): false when it was
/// not taken and goes as an event of its own.
///
/// A subprogram, as is [`accept_into_book`], with scalar arguments: inlined, its code
/// changed how LLVM laid out the rest of the exit programs (two windows' reads merged
/// into one block with a variable start), which the verifiers of 5.10 and 6.1 refuse.
#[inline(never)]
fn connect_into_book(sk: u64, id: u64, ret: i64, fd: i32) -> bool {
    let Some(b) = book_of(sk, false) else {
        return false;
    };
    let owner = connect_owner(Some(&*b), sk, id);
    book_return(b, sk, kind::CONNECT_RETURN, ret, fd, 0, &owner)
}

/// An `accept()` return into the book of the socket behind fd `ret` (see
/// `book_return`): false when there is none or it was not taken. A socket with a
/// book is a TCP socket this trace follows, in the namespace its book names: its type,
/// tuple and namespace are not read. No `OWNERS` entry either (the hooks that read it
/// find the book first).
#[inline(never)]
fn accept_into_book(ret: i64, listen_fd: i32, accept4: bool) -> bool {
    let o = opaque(&raw const OFFSETS);
    let Some(sk) = sk_of_fd(&o, ret) else {
        return false;
    };
    let Some(b) = book_of(sk, false) else {
        return false;
    };
    let owner = owner_in(b.owner.netns);
    let rflags = if accept4 { return_flags::ACCEPT4 } else { 0 };
    book_return(b, sk, kind::ACCEPT_RETURN, ret, listen_fd, rflags, &owner)
}

#[inline(always)]
pub(crate) fn enter_accept(fd: i64) -> u32 {
    let id = bpf_get_current_pid_tgid();
    if caller_filtered(id) {
        return 0;
    }
    insert_pending(&ACCEPTS, id, fd);
    0
}

#[inline(always)]
pub(crate) fn exit_accept(ret: i64, accept4: bool) -> u32 {
    let id = bpf_get_current_pid_tgid();
    let listen_fd = match pending_call(&ACCEPTS, id) {
        Some(call) => {
            let _ = ACCEPTS.remove(&id);
            call.fd
        }
        // Entered before the programs were attached: a server blocked in accept()
        // when the trace starts (its first child after the start would have no
        // accept() otherwise), or a call the full map did not remember (counted).
        // The returned fd names the child; the listener's fd is not known: -1.
        None if ret >= 0 && !caller_filtered(id) => -1,
        None => return 0,
    };
    // A non-blocking accept with nothing queued is not an event.
    if ret == -EAGAIN {
        return 0;
    }
    if ret >= 0 && books_on() && accept_into_book(ret, listen_fd, accept4) {
        // Reported with the child's next record.
        return 0;
    }
    accept_event(ret, id, listen_fd, accept4);
    0
}

/// The scratch slot of the `accept()` (or `accept4()`) exit: not `connect()`'s, each
/// exit program its own (see `SCRATCH`). On 7.2 a run of one is preempted and a run
/// of another, in another task, goes on the same CPU; the kernel skips only a run of
/// the same program.
#[inline(always)]
fn accept_slot(accept4: bool) -> u32 {
    if accept4 { slot::ACCEPT4 } else { slot::ACCEPT }
}

/// An `accept()` return as an event of its own (a subprogram: see `connect_event`).
#[inline(never)]
fn accept_event(ret: i64, id: u64, listen_fd: i32, accept4: bool) {
    let o = opaque(&raw const OFFSETS);
    // The accepted child socket, found through the returned fd: works for
    // accept4(fd, NULL, NULL), which most servers call.
    let fd = if ret >= 0 { ret } else { listen_fd as i64 };
    let sk = sock_of_fd(&o, fd);
    let Some((sk, head)) = sk else {
        if o.valid != 0 {
            // Not a TCP socket (unix, …): not ours. With valid offsets a failed
            // walk on a TCP fd is rare; it is counted in userspace-visible stats.
            if ret >= 0 {
                count_rare!(
                    counter::FD_WALK_FAILED,
                    "accept() gave fd {} to pid {}, whose socket the fd walk did not find: its accept return is not reported ({} on this CPU)",
                    ret,
                    (id >> 32) as u32
                );
            }
            return;
        }
        // No BTF: report the return without a socket.
        let Some(ev) = new_event(accept_slot(accept4), kind::ACCEPT_RETURN, 0, true) else {
            return;
        };
        ev.ret = ret;
        ev.fd = listen_fd;
        if accept4 {
            ev.flags |= flags::ACCEPT4;
        }
        let owner = current_owner();
        set_owner(ev, &owner, 0);
        emit(ev);
        return;
    };
    let skaddr = if ret >= 0 { sk } else { 0 };
    let Some(ev) = new_event(accept_slot(accept4), kind::ACCEPT_RETURN, skaddr, true) else {
        return;
    };
    ev.ret = ret;
    ev.fd = listen_fd;
    if accept4 {
        ev.flags |= flags::ACCEPT4;
    }
    read_sock_tuple(&o, &head, ev);
    let owner = owner_in(netns_of_head(&o, &head));
    if ret >= 0 {
        let _ = OWNERS.insert(&sk, &owner, 0);
    }
    set_owner(ev, &owner, 0);
    emit(ev);
}

#[tracepoint(category = "syscalls", name = "sys_enter_accept")]
pub fn sys_enter_accept(ctx: TracePointContext) -> u32 {
    let l = opaque(&raw const LAYOUT_ENTER_ACCEPT);
    enter_accept(sys_arg(&ctx, &l))
}

#[tracepoint(category = "syscalls", name = "sys_exit_accept")]
pub fn sys_exit_accept(ctx: TracePointContext) -> u32 {
    let l = opaque(&raw const LAYOUT_EXIT_ACCEPT);
    exit_accept(sys_arg(&ctx, &l), false)
}

#[tracepoint(category = "syscalls", name = "sys_enter_accept4")]
pub fn sys_enter_accept4(ctx: TracePointContext) -> u32 {
    let l = opaque(&raw const LAYOUT_ENTER_ACCEPT4);
    enter_accept(sys_arg(&ctx, &l))
}

#[tracepoint(category = "syscalls", name = "sys_exit_accept4")]
pub fn sys_exit_accept4(ctx: TracePointContext) -> u32 {
    let l = opaque(&raw const LAYOUT_EXIT_ACCEPT4);
    exit_accept(sys_arg(&ctx, &l), true)
}

pub(crate) const NR_CONNECT: u64 = 42;

pub(crate) const NR_ACCEPT: u64 = 43;

pub(crate) const NR_ACCEPT4: u64 = 288;

/// raw_syscalls:sys_enter(regs, id), filtered by syscall number in the kernel.
#[inline(always)]
pub(crate) fn sys_enter_args(regs: u64, id: u64) {
    if id != NR_CONNECT && id != NR_ACCEPT && id != NR_ACCEPT4 {
        return;
    }
    let o = opaque(&raw const OFFSETS);
    let fd: i64 = rd(regs, o.regs_di as u64);
    if id == NR_CONNECT {
        enter_connect(fd);
    } else {
        enter_accept(fd);
    }
}

/// raw_syscalls:sys_exit(regs, ret): the syscall number is `regs->orig_ax`.
#[inline(always)]
pub(crate) fn sys_exit_args(regs: u64, ret: u64) {
    let o = opaque(&raw const OFFSETS);
    // 0 (read) when the read faults: not one of ours.
    let nr: u64 = rd(regs, o.regs_orig_ax as u64);
    match nr {
        NR_CONNECT => exit_connect(ret as i64),
        NR_ACCEPT => {
            exit_accept(ret as i64, false);
        }
        NR_ACCEPT4 => {
            exit_accept(ret as i64, true);
        }
        _ => {}
    }
}

both_paths!(btf_sys_enter, raw_sys_enter, "sys_enter", |c| {
    sys_enter_args(c.arg::<u64>(0), c.arg::<u64>(1))
});

both_paths!(btf_sys_exit, raw_sys_exit, "sys_exit", |c| {
    sys_exit_args(c.arg::<u64>(0), c.arg::<u64>(1))
});
