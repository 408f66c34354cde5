//! Configuration the loader writes before load (read-only globals), and the way to
//! read it so that LLVM does not fold it to its initial value.

use core::ptr::read_volatile;
use tcp_trace_common::Filter;
use tcp_trace_common::KernelOffsets;
use tcp_trace_common::TpLayout;

#[unsafe(no_mangle)]
pub(crate) static LAYOUT_SET_STATE: TpLayout = TpLayout::EMPTY;

#[unsafe(no_mangle)]
pub(crate) static LAYOUT_SYNACK: TpLayout = TpLayout::EMPTY;

#[unsafe(no_mangle)]
pub(crate) static LAYOUT_RETRANSMIT: TpLayout = TpLayout::EMPTY;

#[unsafe(no_mangle)]
pub(crate) static LAYOUT_SEND_RESET: TpLayout = TpLayout::EMPTY;

#[unsafe(no_mangle)]
pub(crate) static LAYOUT_RECV_RESET: TpLayout = TpLayout::EMPTY;

#[unsafe(no_mangle)]
pub(crate) static LAYOUT_ENTER_CONNECT: TpLayout = TpLayout::EMPTY;

#[unsafe(no_mangle)]
pub(crate) static LAYOUT_EXIT_CONNECT: TpLayout = TpLayout::EMPTY;

#[unsafe(no_mangle)]
pub(crate) static LAYOUT_ENTER_ACCEPT: TpLayout = TpLayout::EMPTY;

#[unsafe(no_mangle)]
pub(crate) static LAYOUT_EXIT_ACCEPT: TpLayout = TpLayout::EMPTY;

#[unsafe(no_mangle)]
pub(crate) static LAYOUT_ENTER_ACCEPT4: TpLayout = TpLayout::EMPTY;

#[unsafe(no_mangle)]
pub(crate) static LAYOUT_EXIT_ACCEPT4: TpLayout = TpLayout::EMPTY;

#[unsafe(no_mangle)]
pub(crate) static OFFSETS: KernelOffsets = KernelOffsets {
    valid: 0,
    task_files: 0,
    files_fdt: 0,
    fdt_max_fds: 0,
    fdt_fd: 0,
    file_private_data: 0,
    socket_sk: 0,
    socket_file: 0,
    sk_type: 0,
    sk_protocol: 0,
    skc_family: 0,
    skc_num: 0,
    skc_dport: 0,
    skc_rcv_saddr: 0,
    skc_daddr: 0,
    skc_v6_rcv_saddr: 0,
    skc_v6_daddr: 0,
    inet_sport: 0,
    skc_state: 0,
    regs_di: 0,
    regs_orig_ax: 0,
    skc_net: 0,
    net_ns_inum: 0,
    sk_ack_backlog: 0,
    sk_max_ack_backlog: 0,
    tcp_snd_una: 0,
    tcp_rcv_nxt: 0,
    skb_head: 0,
    skb_network_header: 0,
    skb_transport_header: 0,
    _pad: 0,
};

#[unsafe(no_mangle)]
pub(crate) static FILTER: Filter = Filter {
    tgid: 0,
    nports: 0,
    ports: [0; tcp_trace_common::MAX_PORTS],
    family: 0,
    this_container: 0,
    _pad: [0; 2],
    ncgroups: 0,
    cgroups: [0; tcp_trace_common::MAX_CGROUPS],
    pidns_dev: 0,
    pidns_ino: 0,
};

/// Unread bytes in the ring buffer whose crossing wakes the reader: only the submit
/// that takes the backlog from below to above it forces a wakeup. Every other event is
/// submitted without one (each wakeup is an irq_work, which costs more than the event:
/// docs/kernel-facts.md) and the reader drains on a 10 ms timer.
#[unsafe(no_mangle)]
pub(crate) static WAKEUP_BYTES: u64 = 2 * 1024 * 1024;

/// 1: the per-connection design (a book per socket in `BOOK_MAP`, flushed as
/// [`ConnRecord`]s) in the programs that may use socket storage; 0: one record per
/// event everywhere.
#[unsafe(no_mangle)]
pub(crate) static BOOKS: u32 = 0;

/// A read-only global (written by userspace before load) through a pointer LLVM
/// cannot see through: a plain `static` would be folded to its initial value, and
/// `read_volatile` of a whole struct loads every field (~40 loads per program for
/// OFFSETS). The verifier still knows the frozen values, as the pointer is a map
/// value pointer spilled to the stack and filled again.
#[inline(always)]
pub(crate) fn opaque<T>(p: *const T) -> &'static T {
    // SAFETY: `p` points at a static of the object.
    unsafe { &*read_volatile(&p) }
}

#[inline(always)]
pub(crate) fn books_on() -> bool {
    // SAFETY: a static of the object, valid for reads.
    unsafe { read_volatile(&BOOKS) != 0 }
}
