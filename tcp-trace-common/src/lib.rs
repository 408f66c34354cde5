//! Wire types shared by the eBPF programs and the userspace tracer.
//!
//! Everything here is `#[repr(C)]`, fixed-size and explicitly padded so that the
//! kernel side can write it into the ring buffer and userspace can read it back
//! byte for byte. Kernel enums travel as plain integers; the decoder turns them
//! into Rust enums (and reports unknown values instead of trusting them).
#![no_std]

/// What an [`RawEvent`] records. Values are part of the record format (see
/// `tcp-trace record`): add new kinds, never renumber.
pub mod kind {
    /// `sock:inet_sock_set_state` for a TCP socket.
    pub const STATE: u8 = 1;
    /// `tcp:tcp_retransmit_synack`: a listener's request sock resent its SYN-ACK.
    pub const SYNACK_RETRANSMIT: u8 = 2;
    /// `tcp:tcp_retransmit_skb`: a segment (SYN in SYN_SENT, data or FIN later) was resent.
    pub const RETRANSMIT: u8 = 3;
    /// `tcp:tcp_send_reset`.
    pub const RESET_SENT: u8 = 4;
    /// `tcp:tcp_receive_reset`.
    pub const RESET_RECEIVED: u8 = 5;
    /// `syscalls:sys_exit_connect` for a TCP socket.
    pub const CONNECT_RETURN: u8 = 6;
    /// `syscalls:sys_exit_accept` / `sys_exit_accept4` on a TCP listener.
    pub const ACCEPT_RETURN: u8 = 7;
}

/// Bits of [`RawEvent::flags`].
pub mod flags {
    /// The hook ran in the task that owns the socket (process context, not softirq):
    /// `ctx_pid_tgid` and the current comm describe the owner.
    pub const TASK_CTX: u16 = 1 << 0;
    /// `owner_*` and `comm` were filled from the owner map learned in process context.
    pub const OWNER_KNOWN: u16 = 1 << 1;
    /// The syscall was `accept4` (not `accept`).
    pub const ACCEPT4: u16 = 1 << 2;
    /// The 4-tuple fields are valid (false e.g. for an accept error).
    pub const HAS_TUPLE: u16 = 1 << 3;
    /// The owner was inherited from the listener on the same local port (a child
    /// socket before `accept()` returned).
    pub const OWNER_FROM_LISTENER: u16 = 1 << 4;
    /// A child's LISTEN → SYN_RECV or a SYN-ACK retransmit: `fd` holds the listener's
    /// accept-queue length and `ret` its limit (`sk_ack_backlog`, `sk_max_ack_backlog`)
    /// at that moment, and `aux` (transitions) the listener's address.
    pub const ACCEPT_QUEUE: u16 = 1 << 5;
    /// The listener in `aux` is the one the kernel cloned the child from (socket local
    /// storage, exact even in an SO_REUSEPORT group), not a lookup by port.
    pub const LISTENER_EXACT: u16 = 1 << 6;
    /// A transition to ESTABLISHED from SYN_SENT or SYN_RECV: `ret` holds the two
    /// initial sequence numbers, the socket's own in the low 32 bits and its peer's in
    /// the high 32 (`snd_una − 1` and `rcv_nxt − 1` of the `tcp_sock` at that moment).
    pub const ISN: u16 = 1 << 7;
}

/// TCP states, the kernel's numbering (`include/net/tcp_states.h`).
pub mod tcp_state {
    pub const ESTABLISHED: u8 = 1;
    pub const SYN_SENT: u8 = 2;
    pub const SYN_RECV: u8 = 3;
    pub const FIN_WAIT1: u8 = 4;
    pub const FIN_WAIT2: u8 = 5;
    pub const TIME_WAIT: u8 = 6;
    pub const CLOSE: u8 = 7;
    pub const CLOSE_WAIT: u8 = 8;
    pub const LAST_ACK: u8 = 9;
    pub const LISTEN: u8 = 10;
    pub const CLOSING: u8 = 11;
    pub const NEW_SYN_RECV: u8 = 12;
}

pub const AF_INET: u8 = 2;
pub const AF_INET6: u8 = 10;
pub const IPPROTO_TCP: u16 = 6;

/// One event, as the kernel side writes it into the ring buffer (120 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawEvent {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC).
    pub ts_ns: u64,
    /// Kernel address of the `struct sock` (0 when unknown).
    pub skaddr: u64,
    /// Kind-specific: the request sock for SYN-ACK retransmits, the reset reason for
    /// resets sent on kernels that report it.
    pub aux: u64,
    /// `bpf_get_current_pid_tgid()` of whoever ran the hook (not trustworthy in softirq).
    pub ctx_pid_tgid: u64,
    /// Owner process (tgid) of the socket, 0 when unknown.
    pub owner_tgid: u32,
    /// Owner thread id.
    pub owner_pid: u32,
    /// Syscall return value (connect/accept), 0 otherwise.
    pub ret: i64,
    /// Syscall fd: the socket passed to `connect()`, or the listener passed to `accept()`.
    pub fd: i32,
    /// One of [`kind`].
    pub kind: u8,
    /// `AF_INET` or `AF_INET6` (0 when unknown).
    pub family: u8,
    /// Old TCP state (transitions) — kernel numbering (`TCP_ESTABLISHED` = 1 …).
    pub oldstate: u8,
    /// New TCP state (transitions), or the socket state at a retransmit/reset.
    pub newstate: u8,
    /// Local port, host byte order.
    pub sport: u16,
    /// Remote port, host byte order.
    pub dport: u16,
    /// [`flags`] bits.
    pub flags: u16,
    pub _pad: [u8; 2],
    /// Local address: IPv4 in the first 4 bytes, or IPv6.
    pub saddr: [u8; 16],
    /// Remote address.
    pub daddr: [u8; 16],
    /// Owner's command name (NUL padded), or the current task's in task context.
    pub comm: [u8; 16],
    /// cgroup v2 id of the owner task.
    pub cgroup_id: u64,
    /// Owner's pid as tcp-trace's own pid namespace sees it (0 = not in it, or
    /// tcp-trace runs in the initial one).
    pub ns_pid: u32,
    /// Inode of the socket's network namespace (0 = unknown).
    pub netns: u32,
}

pub const RAW_EVENT_SIZE: usize = core::mem::size_of::<RawEvent>();
const _: () = assert!(RAW_EVENT_SIZE == 128);
/// Size of a record written by the first version (before `ns_pid` and `netns`).
pub const RAW_EVENT_SIZE_V1: usize = 120;

/// Marker for "this tracepoint has no such field".
pub const NO_FIELD: u16 = u16::MAX;

/// Where the fields of one classic tracepoint record live, read from the running
/// kernel's tracefs `format` file before load. A field that does not exist is
/// [`NO_FIELD`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TpLayout {
    pub skaddr: u16,
    /// `req` (tcp_retransmit_synack) or `reason` (tcp_send_reset).
    pub aux: u16,
    pub oldstate: u16,
    /// `newstate`, or `state` for tcp_retransmit_skb / tcp_send_reset.
    pub newstate: u16,
    pub sport: u16,
    pub dport: u16,
    pub family: u16,
    pub protocol: u16,
    /// Size in bytes of `protocol` (u8 on older kernels, u16 since 5.x).
    pub protocol_size: u16,
    pub saddr: u16,
    pub daddr: u16,
    pub saddr_v6: u16,
    pub daddr_v6: u16,
    /// 1 when `saddr`/`daddr` are 28-byte `struct sockaddr_in/in6` (tcp_send_reset
    /// since 6.12): family and port are read from inside them.
    pub sockaddr_form: u16,
    /// Syscall tracepoints: offset of the `fd` argument (enter) or `ret` (exit).
    pub sys_arg: u16,
    pub _pad: u16,
}

impl TpLayout {
    pub const EMPTY: TpLayout = TpLayout {
        skaddr: NO_FIELD,
        aux: NO_FIELD,
        oldstate: NO_FIELD,
        newstate: NO_FIELD,
        sport: NO_FIELD,
        dport: NO_FIELD,
        family: NO_FIELD,
        protocol: NO_FIELD,
        protocol_size: 0,
        saddr: NO_FIELD,
        daddr: NO_FIELD,
        saddr_v6: NO_FIELD,
        daddr_v6: NO_FIELD,
        sockaddr_form: 0,
        sys_arg: NO_FIELD,
        _pad: 0,
    };
}

/// Offsets inside kernel structures, read from the running kernel's BTF before
/// load. Used to walk `current->files->fdt->fd[fd]->private_data->sk` at
/// `accept()`/`connect()` return and to read a `struct sock`'s 4-tuple. All zero
/// (`valid == 0`) when the kernel has no BTF: the fd walk is then disabled.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    pub valid: u32,
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdt_max_fds: u32,
    pub fdt_fd: u32,
    pub file_private_data: u32,
    pub socket_sk: u32,
    pub socket_file: u32,
    pub sk_type: u32,
    pub sk_protocol: u32,
    pub skc_family: u32,
    pub skc_num: u32,
    pub skc_dport: u32,
    pub skc_rcv_saddr: u32,
    pub skc_daddr: u32,
    pub skc_v6_rcv_saddr: u32,
    pub skc_v6_daddr: u32,
    pub inet_sport: u32,
    /// `sock_common.skc_state` (u8): the state at a retransmit/reset (BTF/raw paths).
    pub skc_state: u32,
    /// `pt_regs.di` (first syscall argument, x86_64) and `pt_regs.orig_ax` (syscall
    /// number): raw_syscalls sys_enter/sys_exit, the syscall path without tracefs.
    pub regs_di: u32,
    pub regs_orig_ax: u32,
    /// `sock_common.skc_net` (a `struct net *`) and `net.ns.inum`: the socket's
    /// network namespace inode.
    pub skc_net: u32,
    pub net_ns_inum: u32,
    /// `sock.sk_ack_backlog` and `sock.sk_max_ack_backlog` (u32 each): a listener's
    /// accept-queue length and limit.
    pub sk_ack_backlog: u32,
    pub sk_max_ack_backlog: u32,
    /// `tcp_sock.snd_una` and `tcp_sock.rcv_nxt` (u32 each): the initial sequence
    /// numbers at ESTABLISHED, before any data moved.
    pub tcp_snd_una: u32,
    pub tcp_rcv_nxt: u32,
    /// `sk_buff.head` (pointer), `sk_buff.network_header` and
    /// `sk_buff.transport_header` (u16 offsets from `head`): the addresses and ports
    /// of the segment a reset answers when no socket does (tp_btf/raw paths).
    pub skb_head: u32,
    pub skb_network_header: u32,
    pub skb_transport_header: u32,
    pub _pad: u32,
}

/// Volume filters applied in the kernel, set before load.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only sockets owned by this tgid (0 = any).
    pub tgid: u32,
    /// Number of valid entries in `ports` (0 = any port).
    pub nports: u32,
    /// Match when either end's port is one of these.
    pub ports: [u16; MAX_PORTS],
    /// Only this address family (0 = both).
    pub family: u8,
    /// Only sockets whose owner is in tcp-trace's own pid namespace.
    pub this_container: u8,
    pub _pad: [u8; 2],
    /// Number of valid entries in `cgroups` (0 = any cgroup).
    pub ncgroups: u32,
    /// Only sockets whose owner is in one of these cgroup v2 ids.
    pub cgroups: [u64; MAX_CGROUPS],
    /// dev and inode of tcp-trace's pid namespace (/proc/self/ns/pid), when it is not
    /// the initial one: owners get `ns_pid`, and `this_container` can work.
    pub pidns_dev: u64,
    pub pidns_ino: u64,
}

pub const MAX_PORTS: usize = 16;
pub const MAX_CGROUPS: usize = 8;

/// Process that owns a socket, learned in process context.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Owner {
    pub tgid: u32,
    pub pid: u32,
    pub comm: [u8; 16],
    pub cgroup_id: u64,
    /// tgid in tcp-trace's pid namespace (0 = outside it / not computed).
    pub ns_tgid: u32,
    /// Inode of the socket's network namespace, read once when the owner is bound.
    pub netns: u32,
}

/// Key of the in-kernel listener table: a listening port is only unique within its
/// network namespace (two containers may both listen on :80).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ListenKey {
    /// Inode of the listener's network namespace (0 = unknown).
    pub netns: u32,
    /// Local port, host byte order.
    pub port: u16,
    pub _pad: u16,
}

/// A listening socket and its owner: the value of the kernel's listener table and
/// of the socket local storage a listener's children inherit.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListenerLink {
    /// Kernel address of the listening socket (0 = unknown, e.g. learned from the
    /// socket table at start).
    pub sk: u64,
    pub owner: Owner,
    /// [`link_flags`].
    pub flags: u32,
    pub _pad: u32,
}

/// Bits of [`ListenerLink::flags`].
pub mod link_flags {
    /// In the listener table, with socket storage in use: the entry was made by the
    /// kernel side at this listener's listen(), and it is the only listener on its
    /// (namespace, port) without socket storage (a later one in an SO_REUSEPORT group
    /// gets storage, and no listener from before the start shares the key: the
    /// socket table's seeding clears the bit when it finds one). A child that
    /// inherited no storage was then queued on this very listener.
    pub const SOLE: u32 = 1;
}

/// Per-thread state of a `connect()` in progress (enter → SYN_SENT → exit).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PendingCall {
    pub skaddr: u64,
    pub fd: i32,
    /// Remote port / family / address seen at SYN_SENT: a failed connect() is
    /// disconnected (tcp_disconnect zeroes the socket's dport) before it returns.
    pub dport: u16,
    pub family: u8,
    pub _pad: u8,
    pub daddr: [u8; 16],
}

/// Steps a [`ConnRecord`] holds before it must leave the kernel.
pub const BOOK_STEPS: usize = 8;

/// One step of a connection's book: a state transition, or a retransmit or reset on
/// the socket (16 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Step {
    /// `bpf_ktime_get_ns()`.
    pub ts_ns: u64,
    /// [`kind::STATE`], [`kind::RETRANSMIT`], [`kind::RESET_SENT`] or
    /// [`kind::RESET_RECEIVED`].
    pub kind: u8,
    /// Old and new TCP state (transitions); the socket's state (retransmits, resets)
    /// in `new`.
    pub old: u8,
    pub new: u8,
    /// [`step_flags`] bits.
    pub flags: u8,
    /// Resets sent: the reason (`u32::MAX` when not read); task-context steps: the
    /// tgid of the task that ran the hook.
    pub aux: u32,
}

/// Bits of [`Step::flags`].
pub mod step_flags {
    /// The hook ran in the task that made the transition (connect, listen, close).
    pub const TASK_CTX: u8 = 1 << 0;
    /// The socket had no local port yet (a client's SYN_SENT: `connect()` picks the
    /// port after it, and the search can take milliseconds when ports are scarce). The
    /// book's tuple, read later, is not this step's: its local port is unknown, as the
    /// per-event design reports it.
    pub const NO_LOCAL_PORT: u8 = 1 << 1;
}

/// Bits of [`ConnRecord::flags`].
pub mod book_flags {
    /// `family`, ports and addresses are valid.
    pub const HAS_TUPLE: u16 = 1 << 0;
    /// `owner` is valid.
    pub const OWNER_KNOWN: u16 = 1 << 1;
    /// `owner` is the listener's (a child before `accept()`).
    pub const OWNER_FROM_LISTENER: u16 = 1 << 2;
    /// `listener` is the socket the kernel cloned this child from (socket storage).
    pub const LISTENER_EXACT: u16 = 1 << 3;
    /// `aq_len`/`aq_max` hold the listener's accept queue at the child's birth.
    pub const ACCEPT_QUEUE: u16 = 1 << 4;
    /// `isn_local`/`isn_remote` were read at the transition to ESTABLISHED.
    pub const ISN: u16 = 1 << 5;
    /// The socket reached CLOSE: its book is gone with this record.
    pub const FINAL: u16 = 1 << 6;
    /// The flush that sent this record found the return slot written (its `ts_ns` set)
    /// before it copied the book: only then is the slot whole. A `connect()`/`accept()`
    /// exit writes the slot without the socket lock, `ts_ns` last; a copy made while
    /// it writes may hold the time and not the rest (seen under a FIN storm: 5 slots in
    /// 52 M events with the time and nothing else). Such a return was not taken by the
    /// flush and comes whole in the book's next record, or as an event of its own.
    pub const RETURN_SEEN: u16 = 1 << 7;
}

/// Bits of [`BookReturn::flags`].
pub mod return_flags {
    /// The syscall was `accept4` (not `accept`).
    pub const ACCEPT4: u8 = 1 << 0;
}

/// A `connect()` or `accept()` return kept in a socket's book until its next flush
/// (80 bytes). The syscall exit writes it without the socket lock, while a flush may
/// run on another CPU: `ts_ns` is written last and sits first (a record copied while
/// it is written either shows it empty or whole), a flush empties the slot only when
/// it read it set, and an exit that finds the book closed (or the slot taken) reports
/// its return as an event of its own as well: a return may arrive twice (same socket,
/// same time), never not at all.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BookReturn {
    /// `bpf_ktime_get_ns()` at the syscall's exit; 0 = the slot is empty.
    pub ts_ns: u64,
    /// The socket the exit wrote it for: a slot whose `sk` is not the book's own was
    /// written into a book the map had just handed to another socket (reported on
    /// its own as well), and is not this socket's.
    pub sk: u64,
    /// The syscall's return value.
    pub ret: i32,
    /// The fd passed in: the connecting socket, or the listener.
    pub fd: i32,
    /// [`kind::CONNECT_RETURN`] or [`kind::ACCEPT_RETURN`].
    pub kind: u8,
    /// [`return_flags`] bits.
    pub flags: u8,
    pub _pad: [u8; 6],
    /// A word the writer and a flush each change atomically: the barrier between a
    /// write and the read that must see it (see the kernel side's `book_return`).
    pub sync: u64,
    /// The caller: the accepting process for `accept()`.
    pub owner: Owner,
}

/// The books a socket keeps in the kernel (per-connection design), and the record
/// they leave in when flushed: the connection's identity once, the steps since the
/// last flush, and a `connect()`/`accept()` return not reported yet. Flushed at
/// ESTABLISHED, CLOSE_WAIT, LISTEN and CLOSE, at a SYN retransmit, and when `steps`
/// is full; 328 bytes, which tells it apart from a [`RawEvent`] in the ring.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnRecord {
    /// Flushes of this book so far (0 for its first record).
    pub seq: u32,
    /// Valid entries in `steps`.
    pub nsteps: u8,
    /// `AF_INET` or `AF_INET6`.
    pub family: u8,
    /// [`book_flags`] bits.
    pub flags: u16,
    /// Kernel address of the `struct sock`.
    pub skaddr: u64,
    /// A child: its listener's address (0 = unknown).
    pub listener: u64,
    pub owner: Owner,
    pub sport: u16,
    pub dport: u16,
    /// A child: its listener's accept-queue length and limit when it was queued.
    pub aq_len: u32,
    pub aq_max: u32,
    /// This end's and the peer's initial sequence numbers.
    pub isn_local: u32,
    pub isn_remote: u32,
    pub _pad: u32,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub ret: BookReturn,
    pub steps: [Step; BOOK_STEPS],
}

pub const BOOK_RETURN_SIZE: usize = core::mem::size_of::<BookReturn>();
const _: () = assert!(BOOK_RETURN_SIZE == 80);
pub const CONN_RECORD_SIZE: usize = core::mem::size_of::<ConnRecord>();
const _: () = assert!(CONN_RECORD_SIZE == 328);
const _: () = assert!(CONN_RECORD_SIZE != RAW_EVENT_SIZE && CONN_RECORD_SIZE != RAW_EVENT_SIZE_V1);

/// Indexes of the per-CPU counter array `COUNTERS`.
pub mod counter {
    /// Events that could not be reserved in the ring buffer (lost).
    pub const RINGBUF_FULL: u32 = 0;
    /// Events submitted.
    pub const SUBMITTED: u32 = 1;
    /// Events dropped by the in-kernel filters (not lost: filtered on purpose).
    pub const FILTERED: u32 = 2;
    /// fd → socket walks that failed (accept/connect return without a socket).
    pub const FD_WALK_FAILED: u32 = 3;
    /// State transitions the kernel did not run the main program for (already
    /// running on that CPU) that the `_nested` program reported instead.
    pub const NESTED_CAUGHT: u32 = 4;
    /// Sockets that got no book (the book map was full): reported event by event.
    pub const BOOKS_FULL: u32 = 5;
    /// Classic-tracepoint transitions whose states read through the tracefs layout
    /// were no TCP states (a layout read wrong; reported as read).
    pub const LAYOUT_SUSPECT: u32 = 6;
    /// connect()/accept() calls not followed: the map of calls in progress was full.
    pub const CALLS_FULL: u32 = 7;
    pub const COUNT: u32 = 8;
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    unsafe impl aya::Pod for RawEvent {}
    unsafe impl aya::Pod for TpLayout {}
    unsafe impl aya::Pod for KernelOffsets {}
    unsafe impl aya::Pod for Filter {}
    unsafe impl aya::Pod for Owner {}
    unsafe impl aya::Pod for PendingCall {}
    unsafe impl aya::Pod for ListenKey {}
    unsafe impl aya::Pod for ListenerLink {}
    unsafe impl aya::Pod for ConnRecord {}
    unsafe impl aya::Pod for BookReturn {}
}
