//! Kernel side of tcp-trace: one small program per hook, one shared `emit` path.
//!
//! Field offsets are data: userspace reads them from the running kernel (tracefs
//! `format` files and BTF) and writes them into the read-only globals below before
//! load, so one object runs on every kernel we test (6.1 … 6.18).
#![no_std]
#![no_main]

use core::{ffi::c_void, mem::MaybeUninit, ptr::read_volatile};

use aya_ebpf::{
    EbpfContext,
    bindings::bpf_pidns_info,
    bindings::{BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_get_current_task,
        bpf_get_ns_current_pid_tgid, bpf_ktime_get_ns, generated as helper,
    },
    macros::{btf_tracepoint, map, raw_tracepoint, tracepoint},
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::{BtfTracePointContext, RawTracePointContext, TracePointContext},
};
use tcp_trace_common::{
    AF_INET, AF_INET6, BOOK_STEPS, ConnRecord, Filter, IPPROTO_TCP, KernelOffsets, ListenKey,
    ListenerLink, NO_FIELD, Owner, PendingCall, RawEvent, TpLayout, book_flags, counter, flags,
    kind, step_flags,
};

// ---------------------------------------------------------------------------
// Configuration, written by userspace before load (EbpfLoader::override_global).

#[unsafe(no_mangle)]
static LAYOUT_SET_STATE: TpLayout = TpLayout::EMPTY;
#[unsafe(no_mangle)]
static LAYOUT_SYNACK: TpLayout = TpLayout::EMPTY;
#[unsafe(no_mangle)]
static LAYOUT_RETRANSMIT: TpLayout = TpLayout::EMPTY;
#[unsafe(no_mangle)]
static LAYOUT_SEND_RESET: TpLayout = TpLayout::EMPTY;
#[unsafe(no_mangle)]
static LAYOUT_RECV_RESET: TpLayout = TpLayout::EMPTY;
#[unsafe(no_mangle)]
static LAYOUT_ENTER_CONNECT: TpLayout = TpLayout::EMPTY;
#[unsafe(no_mangle)]
static LAYOUT_EXIT_CONNECT: TpLayout = TpLayout::EMPTY;
#[unsafe(no_mangle)]
static LAYOUT_ENTER_ACCEPT: TpLayout = TpLayout::EMPTY;
#[unsafe(no_mangle)]
static LAYOUT_EXIT_ACCEPT: TpLayout = TpLayout::EMPTY;
#[unsafe(no_mangle)]
static LAYOUT_ENTER_ACCEPT4: TpLayout = TpLayout::EMPTY;
#[unsafe(no_mangle)]
static LAYOUT_EXIT_ACCEPT4: TpLayout = TpLayout::EMPTY;
#[unsafe(no_mangle)]
static OFFSETS: KernelOffsets = KernelOffsets {
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
};
#[unsafe(no_mangle)]
static FILTER: Filter = Filter {
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
static WAKEUP_BYTES: u64 = 2 * 1024 * 1024;
/// 1: the per-connection design (a book per socket in `CONN_OF`, flushed as
/// [`ConnRecord`]s) in the programs that may use socket storage; 0: one record per
/// event everywhere.
#[unsafe(no_mangle)]
static BOOKS: u32 = 0;

// ---------------------------------------------------------------------------
// Maps.

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(8 * 1024 * 1024, 0);

#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Socket → owning process, learned where a hook runs in the owner's task.
#[map]
static OWNERS: LruHashMap<u64, Owner> = LruHashMap::with_max_entries(65536, 0);

/// Network namespace and local port of a listening socket → its owner, so that a
/// child socket created in softirq (LISTEN → SYN_RECV) is attributed before accept()
/// returns. Keyed by namespace too: containers listen on the same ports.
#[map]
static LISTENERS: LruHashMap<ListenKey, ListenerLink> = LruHashMap::with_max_entries(4096, 0);

/// Socket local storage (`BPF_MAP_TYPE_SK_STORAGE`) with `BPF_F_CLONE`: written on a
/// listener at CLOSE → LISTEN, and copied by the kernel into every child it clones
/// from that listener (`sk_clone_lock` → `bpf_sk_storage_clone`) before the child's
/// LISTEN → SYN_RECV. So a child knows the very listener it was queued on, even in an
/// SO_REUSEPORT group where the port names several. Only tp_btf programs may use it
/// (5.11+); it is freed with the socket. aya-ebpf's `SkStorage` cannot set
/// `BPF_F_CLONE`, so the BTF map definition is written out here in the same shape.
#[repr(C)]
pub struct SkStorageClone<V> {
    r#type: *const [i32; 24],
    key: *const i32,
    value: *const V,
    max_entries: *const [i32; 0],
    /// `BPF_F_NO_PREALLOC | BPF_F_CLONE`.
    map_flags: *const [i32; 513],
}

// SAFETY: placeholder pointers the loader patches; never dereferenced from Rust.
unsafe impl<V> Sync for SkStorageClone<V> {}

#[unsafe(link_section = ".maps")]
#[unsafe(export_name = "LISTENER_OF")]
static LISTENER_OF: SkStorageClone<ListenerLink> = SkStorageClone {
    r#type: core::ptr::null(),
    key: core::ptr::null(),
    value: core::ptr::null(),
    max_entries: core::ptr::null(),
    map_flags: core::ptr::null(),
};

/// Socket local storage without `BPF_F_CLONE` (`BPF_F_NO_PREALLOC` only): a book
/// belongs to one socket and dies with it; a child starts its own.
#[repr(C)]
pub struct SkStorage<V> {
    r#type: *const [i32; 24],
    key: *const i32,
    value: *const V,
    max_entries: *const [i32; 0],
    map_flags: *const [i32; 1],
}

// SAFETY: as for SkStorageClone.
unsafe impl<V> Sync for SkStorage<V> {}

/// Each socket's book (per-connection design): its identity once and its steps since
/// the last flush.
#[unsafe(link_section = ".maps")]
#[unsafe(export_name = "CONN_OF")]
static CONN_OF: SkStorage<ConnRecord> = SkStorage {
    r#type: core::ptr::null(),
    key: core::ptr::null(),
    value: core::ptr::null(),
    max_entries: core::ptr::null(),
    map_flags: core::ptr::null(),
};

/// Books by socket address, preallocated: taking an entry from the map's free list
/// costs less than allocating socket storage for every socket (measured: the busiest
/// program took ~580 ns per hit with socket storage, against ~490 for the per-event
/// design). A socket's book is removed at its CLOSE; when the map is full the socket
/// is reported event by event instead.
#[map]
static BOOK_MAP: HashMap<u64, ConnRecord> = HashMap::with_max_entries(16384, 0);

/// An empty book, copied into the map for a new socket.
static EMPTY_BOOK: ConnRecord = ConnRecord {
    seq: 0,
    nsteps: 0,
    family: 0,
    flags: 0,
    skaddr: 0,
    listener: 0,
    owner: Owner {
        tgid: 0,
        pid: 0,
        comm: [0; 16],
        cgroup_id: 0,
        ns_tgid: 0,
        netns: 0,
    },
    sport: 0,
    dport: 0,
    aq_len: 0,
    aq_max: 0,
    isn_local: 0,
    isn_remote: 0,
    _pad: 0,
    saddr: [0; 16],
    daddr: [0; 16],
    steps: [tcp_trace_common::Step {
        ts_ns: 0,
        kind: 0,
        old: 0,
        new: 0,
        flags: 0,
        aux: 0,
    }; BOOK_STEPS],
};

/// The book of `sk`; created (empty) when `create`. None when there is none, or no
/// room for a new one.
#[inline(always)]
fn book_of(sk: u64, create: bool) -> Option<&'static mut ConnRecord> {
    if let Some(p) = BOOK_MAP.get_ptr_mut(&sk) {
        // SAFETY: a map value, valid while the program runs; a socket's transitions,
        // retransmits and resets run under its lock, one at a time.
        return unsafe { p.as_mut() };
    }
    if !create {
        return None;
    }
    const BPF_NOEXIST: u64 = 1;
    BOOK_MAP.insert(&sk, &EMPTY_BOOK, BPF_NOEXIST).ok()?;
    // SAFETY: as above.
    BOOK_MAP
        .get_ptr_mut(&sk)
        .and_then(|p| unsafe { p.as_mut() })
}

/// The socket-storage variant of [`book_of`] (kept to measure against).
#[allow(dead_code)]
#[inline(always)]
fn book_of_storage(sk: u64, create: bool) -> Option<&'static mut ConnRecord> {
    // SAFETY: as in `listener_of`.
    let p = unsafe {
        helper::bpf_sk_storage_get(
            &raw const CONN_OF as *mut c_void,
            sk as *mut c_void,
            core::ptr::null_mut(),
            if create { 1 } else { 0 },
        )
    } as *mut ConnRecord;
    // SAFETY: a map value of this socket, valid while the program runs; the socket's
    // transitions, retransmits and resets run under its lock, one at a time.
    unsafe { p.as_mut() }
}

/// The storage of `sk` in `LISTENER_OF`; created (zeroed) when `create`.
#[inline(always)]
fn listener_of(sk: u64, create: bool) -> Option<&'static mut ListenerLink> {
    // SAFETY: the map is a BTF map definition in .maps; `sk` is the BTF-typed socket
    // argument of a tp_btf program (the helper refuses anything else at load).
    let p = unsafe {
        helper::bpf_sk_storage_get(
            &raw const LISTENER_OF as *mut c_void,
            sk as *mut c_void,
            core::ptr::null_mut(),
            if create { 1 } else { 0 },
        )
    } as *mut ListenerLink;
    // SAFETY: a map value of this socket, valid while the program runs.
    unsafe { p.as_mut() }
}

/// The listener's accept queue (length and limit) into `ev` (`fd`, `ret`).
#[inline(always)]
fn read_accept_queue(ev: &mut RawEvent, listener: u64) {
    if listener == 0 {
        return;
    }
    let o = opaque(&raw const OFFSETS);
    if o.valid == 0 {
        return;
    }
    // SAFETY: kernel reads through the helper (zero on a fault).
    unsafe {
        ev.fd = rd::<u32>(listener, o.sk_ack_backlog as u64) as i32;
        ev.ret = rd::<u32>(listener, o.sk_max_ack_backlog as u64) as i64;
    }
    ev.flags |= flags::ACCEPT_QUEUE;
}

/// The two initial sequence numbers of a socket that has just become ESTABLISHED,
/// into `ev.ret`: no data has moved yet, so `snd_una` and `rcv_nxt` are each ISN + 1
/// (the SYN takes one sequence number).
#[inline(always)]
fn read_isns(ev: &mut RawEvent) {
    let o = opaque(&raw const OFFSETS);
    if o.valid == 0 || o.tcp_snd_una == 0 {
        return;
    }
    // SAFETY: kernel reads through the helper (zero on a fault).
    let (una, nxt) = unsafe {
        (
            rd::<u32>(ev.skaddr, o.tcp_snd_una as u64),
            rd::<u32>(ev.skaddr, o.tcp_rcv_nxt as u64),
        )
    };
    let local = una.wrapping_sub(1) as u64;
    let remote = nxt.wrapping_sub(1) as u64;
    ev.ret = (local | (remote << 32)) as i64;
    ev.flags |= flags::ISN;
}

#[inline(always)]
fn listen_key(netns: u32, port: u16) -> ListenKey {
    ListenKey {
        netns,
        port,
        _pad: 0,
    }
}

/// Thread → connect() in progress (fd at enter, socket at SYN_SENT).
#[map]
static CONNECTS: LruHashMap<u64, PendingCall> = LruHashMap::with_max_entries(16384, 0);

/// Thread → accept() in progress (listener fd).
#[map]
static ACCEPTS: LruHashMap<u64, PendingCall> = LruHashMap::with_max_entries(16384, 0);

// ---------------------------------------------------------------------------
// Small helpers.

use tcp_trace_common::tcp_state::{
    CLOSE as TCP_CLOSE, CLOSE_WAIT as TCP_CLOSE_WAIT, ESTABLISHED as TCP_ESTABLISHED,
    FIN_WAIT1 as TCP_FIN_WAIT1, LAST_ACK as TCP_LAST_ACK, LISTEN as TCP_LISTEN,
    NEW_SYN_RECV as TCP_NEW_SYN_RECV, SYN_RECV as TCP_SYN_RECV, SYN_SENT as TCP_SYN_SENT,
    TIME_WAIT as TCP_TIME_WAIT,
};
const EAGAIN: i64 = 11;
const SOCK_STREAM: u16 = 1;

#[inline(always)]
fn count(idx: u32) {
    if let Some(c) = COUNTERS.get_ptr_mut(idx) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *c += 1 };
    }
}

/// A read-only global (written by userspace before load) through a pointer LLVM
/// cannot see through: a plain `static` would be folded to its initial value, and
/// `read_volatile` of a whole struct loads every field (~40 loads per program for
/// OFFSETS). The verifier still knows the frozen values, as the pointer is a map
/// value pointer spilled to the stack and filled again.
#[inline(always)]
fn opaque<T>(p: *const T) -> &'static T {
    // SAFETY: `p` points at a static of the object.
    unsafe { &*read_volatile(&p) }
}

/// Reads a `T` at `base + off` of kernel memory; all zeroes when the read faults
/// (the helper clears its destination then). No branch on the helper's result:
/// a zero is what every caller treats as "unknown", and each such branch would
/// double the paths the verifier walks through the rest of the program (the
/// reason start-up spent ~250 ms verifying ~7 000 instructions).
#[inline(always)]
unsafe fn rd<T>(base: u64, off: u64) -> T {
    let mut v = MaybeUninit::<T>::uninit();
    unsafe {
        probe_read(v.as_mut_ptr(), base + off);
        v.assume_init()
    }
}

/// Reads `size_of::<T>()` bytes at `base + off` straight into `dst` (zeroes when the
/// read faults): for addresses, which as values went through a temporary that LLVM
/// zeroed and copied with `memset`/`memmove` calls.
#[inline(always)]
unsafe fn rd_into<T>(dst: &mut T, base: u64, off: u64) {
    unsafe { probe_read(dst, base + off) }
}

/// `bpf_probe_read_kernel` of a `T` at `src` into `dst`, whose result is not
/// looked at (see `rd`): the helper writes all of `dst` either way.
#[inline(always)]
unsafe fn probe_read<T>(dst: *mut T, src: u64) {
    unsafe {
        helper::bpf_probe_read_kernel(
            dst as *mut c_void,
            core::mem::size_of::<T>() as u32,
            src as *const c_void,
        );
    }
}

/// Zeroes the `T` at `p` with volatile word stores, which LLVM cannot merge into a
/// call to compiler_builtins' byte-by-byte `memset` subprogram (which cost as much
/// per hit as the rest of a program).
///
/// SAFETY: `p` is valid for writes, 8-byte aligned, and `T` is a whole number of
/// words for which all zeroes is a valid value.
#[inline(always)]
unsafe fn zero_words<T>(p: *mut T) {
    let words = p as *mut u64;
    let mut i = 0;
    while i < core::mem::size_of::<T>() / 8 {
        unsafe { words.add(i).write_volatile(0) };
        i += 1;
    }
}
const _: () = assert!(core::mem::size_of::<RawEvent>() % 8 == 0);
const _: () = assert!(core::mem::size_of::<PendingCall>() % 8 == 0);
const _: () = assert!(core::mem::size_of::<ConnRecord>() % 8 == 0);
const _: () = assert!(core::mem::align_of::<ConnRecord>() == 8);

/// Like `tp_read`, into `dst`; leaves `dst` as it is (zero) when the field is absent.
#[inline(always)]
fn tp_read_into<T>(dst: &mut T, ctx: &TracePointContext, off: u16) {
    if off != NO_FIELD {
        unsafe { rd_into(dst, ctx.as_ptr() as u64, off as u64) }
    }
}

/// Copies a 16-byte `comm` or address between two 8-byte aligned places as two
/// words (a `[u8; 16]` assignment is a `memmove` call on BPF).
#[inline(always)]
fn copy16(dst: &mut [u8; 16], src: &[u8; 16]) {
    let (d, s) = (dst.as_mut_ptr() as *mut u64, src.as_ptr() as *const u64);
    // SAFETY: both arrays are at 8-byte aligned offsets of 8-aligned structs
    // (checked at compile time below).
    unsafe {
        d.write(s.read());
        d.add(1).write(s.add(1).read());
    }
}
const _: () = assert!(core::mem::offset_of!(RawEvent, comm) % 8 == 0);
const _: () = assert!(core::mem::offset_of!(RawEvent, daddr) % 8 == 0);
const _: () = assert!(core::mem::offset_of!(PendingCall, daddr) % 8 == 0);
const _: () = assert!(core::mem::align_of::<PendingCall>() == 8);
const _: () = assert!(core::mem::offset_of!(Owner, comm) % 8 == 0);
const _: () = assert!(core::mem::align_of::<RawEvent>() == 8);
const _: () = assert!(core::mem::align_of::<Owner>() == 8);

/// A field of a classic tracepoint record (zero when absent on this kernel).
#[inline(always)]
fn tp_read<T>(ctx: &TracePointContext, off: u16) -> T {
    if off == NO_FIELD {
        // SAFETY: only plain integers and byte arrays are read this way.
        return unsafe { MaybeUninit::<T>::zeroed().assume_init() };
    }
    unsafe { rd(ctx.as_ptr() as u64, off as u64) }
}

/// True for transitions that only happen inside a system call of the task that
/// owns the socket: connect() (CLOSE → SYN_SENT), listen() (CLOSE → LISTEN), and
/// close()/shutdown() sending the first FIN (ESTABLISHED|SYN_RECV → FIN_WAIT1,
/// CLOSE_WAIT → LAST_ACK). Everything else may run in softirq or a timer, where
/// the current task is whoever happened to be on the CPU. (The record's
/// `common_flags` would say, but they are not filled in for BPF programs.)
#[inline(always)]
fn process_transition(old: u8, new: u8) -> bool {
    new == TCP_SYN_SENT
        || new == TCP_LISTEN
        || (new == TCP_FIN_WAIT1 && (old == TCP_ESTABLISHED || old == TCP_SYN_RECV))
        || (new == TCP_LAST_ACK && old == TCP_CLOSE_WAIT)
}

#[inline(always)]
fn current_owner() -> Owner {
    let pid_tgid = bpf_get_current_pid_tgid();
    let dev = unsafe { read_volatile(&FILTER.pidns_dev) };
    let ino = unsafe { read_volatile(&FILTER.pidns_ino) };
    let mut ns_tgid = 0;
    if ino != 0 {
        // The owner as tcp-trace's own pid namespace sees it (-EINVAL: outside it).
        let mut info = bpf_pidns_info { pid: 0, tgid: 0 };
        let r = unsafe {
            bpf_get_ns_current_pid_tgid(
                dev,
                ino,
                &mut info as *mut bpf_pidns_info,
                core::mem::size_of::<bpf_pidns_info>() as u32,
            )
        };
        if r == 0 {
            ns_tgid = info.tgid;
        }
    }
    // The helper writes all 16 bytes (NUL padded, zeroes on failure).
    let mut comm = MaybeUninit::<[u8; 16]>::uninit();
    unsafe { helper::bpf_get_current_comm(comm.as_mut_ptr() as *mut c_void, 16) };
    Owner {
        tgid: (pid_tgid >> 32) as u32,
        pid: pid_tgid as u32,
        comm: unsafe { comm.assume_init() },
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        ns_tgid,
        netns: 0,
    }
}

#[inline(always)]
fn set_owner(ev: &mut RawEvent, o: &Owner, extra: u16) {
    ev.owner_tgid = o.tgid;
    ev.owner_pid = o.pid;
    copy16(&mut ev.comm, &o.comm);
    ev.cgroup_id = o.cgroup_id;
    ev.ns_pid = o.ns_tgid;
    ev.netns = o.netns;
    ev.flags |= flags::OWNER_KNOWN | extra;
}

/// The first four bytes of an address field (where an IPv4 address goes).
#[inline(always)]
fn v4_of(a: &mut [u8; 16]) -> &mut [u8; 4] {
    // SAFETY: a 16-byte array starts with 4 bytes; [u8; 4] has alignment 1.
    unsafe { &mut *(a.as_mut_ptr() as *mut [u8; 4]) }
}

/// Reads family, ports and addresses of a classic tracepoint record into `ev`.
#[inline(always)]
fn read_tuple(ctx: &TracePointContext, l: &TpLayout, ev: &mut RawEvent) {
    if l.sockaddr_form != 0 {
        // `saddr`/`daddr` are struct sockaddr_in / sockaddr_in6 (tcp_send_reset, 6.12+):
        // family at +0 (host order), port at +2 (network order), v4 at +4, v6 at +8.
        let fam: u16 = tp_read(ctx, l.saddr);
        ev.family = fam as u8;
        ev.sport = u16::from_be(tp_read(ctx, l.saddr + 2));
        ev.dport = u16::from_be(tp_read(ctx, l.daddr + 2));
        if ev.family == AF_INET {
            tp_read_into(v4_of(&mut ev.saddr), ctx, l.saddr + 4);
            tp_read_into(v4_of(&mut ev.daddr), ctx, l.daddr + 4);
        } else {
            tp_read_into(&mut ev.saddr, ctx, l.saddr + 8);
            tp_read_into(&mut ev.daddr, ctx, l.daddr + 8);
        }
    } else {
        ev.family = if l.family == NO_FIELD {
            // 5.10's tcp:* events have no family: an AF_INET socket's saddr_v6 holds its
            // address v4-mapped (TP_STORE_ADDRS), ::ffff:a.b.c.d.
            let prefix: u32 = tp_read(ctx, l.saddr_v6 + 8);
            let head: u64 = tp_read(ctx, l.saddr_v6);
            if head == 0 && prefix == u32::from_ne_bytes([0, 0, 0xff, 0xff]) {
                AF_INET
            } else {
                AF_INET6
            }
        } else {
            tp_read::<u16>(ctx, l.family) as u8
        };
        ev.sport = tp_read(ctx, l.sport);
        ev.dport = tp_read(ctx, l.dport);
        if ev.family == AF_INET {
            tp_read_into(v4_of(&mut ev.saddr), ctx, l.saddr);
            tp_read_into(v4_of(&mut ev.daddr), ctx, l.daddr);
        } else {
            tp_read_into(&mut ev.saddr, ctx, l.saddr_v6);
            tp_read_into(&mut ev.daddr, ctx, l.daddr_v6);
        }
    }
    ev.flags |= flags::HAS_TUPLE;
}

/// Reads family, ports and addresses of a socket that may not be a full `struct sock`:
/// a timewait or request sock (`struct inet_timewait_sock`, `struct request_sock`)
/// begins with the same `struct sock_common` but has no `inet_sport`, so its local
/// port is `skc_num` (host order), which such socks keep.
#[inline(always)]
fn read_any_sock_tuple(o: &KernelOffsets, sk: u64, state: u8, ev: &mut RawEvent) -> bool {
    if state == TCP_TIME_WAIT || state == TCP_NEW_SYN_RECV {
        if !read_common_tuple(o, sk, ev) {
            return false;
        }
        ev.sport = unsafe { rd::<u16>(sk, o.skc_num as u64) };
        true
    } else {
        read_sock_tuple(o, sk, ev)
    }
}

/// Family, remote port and addresses from `struct sock_common` (no local port).
#[inline(always)]
fn read_common_tuple(o: &KernelOffsets, sk: u64, ev: &mut RawEvent) -> bool {
    unsafe {
        let family = rd::<u16>(sk, o.skc_family as u64);
        if family == 0 {
            // The read faulted (no socket has AF_UNSPEC here).
            return false;
        }
        ev.family = family as u8;
        ev.dport = u16::from_be(rd::<u16>(sk, o.skc_dport as u64));
        if ev.family == AF_INET {
            rd_into(v4_of(&mut ev.saddr), sk, o.skc_rcv_saddr as u64);
            rd_into(v4_of(&mut ev.daddr), sk, o.skc_daddr as u64);
        } else {
            rd_into(&mut ev.saddr, sk, o.skc_v6_rcv_saddr as u64);
            rd_into(&mut ev.daddr, sk, o.skc_v6_daddr as u64);
        }
    }
    ev.flags |= flags::HAS_TUPLE;
    true
}

/// Reads family, ports and addresses from a `struct sock` (offsets from BTF).
#[inline(always)]
fn read_sock_tuple(o: &KernelOffsets, sk: u64, ev: &mut RawEvent) -> bool {
    if !read_common_tuple(o, sk, ev) {
        return false;
    }
    // inet_sport (network order) keeps the local port after the socket leaves its
    // bind bucket, where skc_num is already 0 (docs/kernel-facts.md).
    ev.sport = u16::from_be(unsafe { rd::<u16>(sk, o.inet_sport as u64) });
    true
}

/// The local end of a `struct sock` (family already known).
#[inline(always)]
fn read_local(o: &KernelOffsets, sk: u64, ev: &mut RawEvent) {
    unsafe {
        ev.sport = u16::from_be(rd::<u16>(sk, o.inet_sport as u64));
        if ev.family == AF_INET {
            rd_into(v4_of(&mut ev.saddr), sk, o.skc_rcv_saddr as u64);
        } else {
            rd_into(&mut ev.saddr, sk, o.skc_v6_rcv_saddr as u64);
        }
    }
}

/// `current->files->fdt->fd[fd]->private_data->sk`, for a TCP socket only.
/// The `struct socket` is checked to point back at the same `struct file`, so
/// a non-socket fd (whose private_data is something else) is rejected.
#[inline(always)]
fn sock_of_fd(o: &KernelOffsets, fd: i64) -> Option<u64> {
    if o.valid == 0 || fd < 0 {
        return None;
    }
    unsafe {
        let task = bpf_get_current_task();
        // A faulting read gives 0, which fails the next check (max_fds 0, a NULL
        // file or socket, a back-pointer mismatch, protocol 0).
        let files: u64 = rd(task, o.task_files as u64);
        let fdt: u64 = rd(files, o.files_fdt as u64);
        let max_fds: u32 = rd(fdt, o.fdt_max_fds as u64);
        if fd as u64 >= max_fds as u64 {
            return None;
        }
        let fd_array: u64 = rd(fdt, o.fdt_fd as u64);
        let file: u64 = rd(fd_array, (fd as u64) * 8);
        if file == 0 {
            return None;
        }
        let socket: u64 = rd(file, o.file_private_data as u64);
        if socket == 0 {
            return None;
        }
        let back: u64 = rd(socket, o.socket_file as u64);
        if back != file {
            return None;
        }
        let sk: u64 = rd(socket, o.socket_sk as u64);
        if sk == 0 {
            return None;
        }
        let proto: u16 = rd(sk, o.sk_protocol as u64);
        let ty: u16 = rd(sk, o.sk_type as u64);
        let family: u16 = rd(sk, o.skc_family as u64);
        if proto != IPPROTO_TCP
            || ty != SOCK_STREAM
            || (family as u8 != AF_INET && family as u8 != AF_INET6)
        {
            return None;
        }
        Some(sk)
    }
}

/// In-kernel volume filters. `tgid` is the resolved owner (0 = unknown).
#[inline(always)]
fn filtered_out(ev: &RawEvent) -> bool {
    filter_miss(
        ev.family,
        ev.owner_tgid,
        ev.ns_pid,
        ev.cgroup_id,
        ev.sport,
        ev.dport,
    )
}

/// The filters on one record's family, owner (tgid, pid in our namespace, cgroup) and
/// ports.
#[inline(always)]
fn filter_miss(family: u8, tgid: u32, ns_pid: u32, cgroup_id: u64, sport: u16, dport: u16) -> bool {
    let f = opaque(&raw const FILTER);
    if f.family != 0 && family != 0 && f.family != family {
        return true;
    }
    if f.tgid != 0 && tgid != f.tgid {
        return true;
    }
    if f.this_container != 0 && ns_pid == 0 {
        return true;
    }
    if f.ncgroups != 0 {
        let mut hit = false;
        let mut i = 0;
        while i < tcp_trace_common::MAX_CGROUPS {
            if (i as u32) < f.ncgroups && f.cgroups[i] == cgroup_id && cgroup_id != 0 {
                hit = true;
            }
            i += 1;
        }
        if !hit {
            return true;
        }
    }
    if f.nports != 0 {
        let mut hit = false;
        let mut i = 0;
        while i < tcp_trace_common::MAX_PORTS {
            if (i as u32) < f.nports && (f.ports[i] == sport || f.ports[i] == dport) {
                hit = true;
            }
            i += 1;
        }
        if !hit {
            return true;
        }
    }
    false
}

/// A record in the ring: the event plus the ring's 8-byte header.
const RECORD_BYTES: u64 = core::mem::size_of::<RawEvent>() as u64 + 8;

/// `sk->__sk_common.skc_net.net->ns.inum`.
#[inline(always)]
fn netns_of(o: &KernelOffsets, sk: u64) -> u32 {
    if o.valid == 0 || sk == 0 {
        return 0;
    }
    let net = unsafe { rd::<u64>(sk, o.skc_net as u64) };
    if net == 0 {
        return 0;
    }
    unsafe { rd::<u32>(net, o.net_ns_inum as u64) }
}

/// The current task as the owner of `sk` (netns read once, here).
#[inline(always)]
fn owner_of(sk: u64) -> Owner {
    let mut o = current_owner();
    let off = opaque(&raw const OFFSETS);
    o.netns = netns_of(&off, sk);
    o
}

#[inline(always)]
fn emit(ev: &mut RawEvent) {
    if ev.skaddr != 0 && ev.netns == 0 {
        // Owner unknown (or a syscall return): read it from the socket.
        let o = opaque(&raw const OFFSETS);
        ev.netns = netns_of(&o, ev.skaddr);
    }
    if filtered_out(ev) {
        count(counter::FILTERED);
        return;
    }
    ev.ts_ns = unsafe { bpf_ktime_get_ns() };
    output(&*ev, RECORD_BYTES);
}

/// Puts `rec` (`bytes` with the ring's header) into the ring, waking the reader only
/// when this record takes the backlog past `WAKEUP_BYTES`.
#[inline(always)]
fn output<T>(rec: &T, bytes: u64) {
    let threshold = unsafe { read_volatile(&WAKEUP_BYTES) };
    let avail = EVENTS.query(aya_ebpf::bindings::BPF_RB_AVAIL_DATA as u64);
    let flags = if avail < threshold && avail + bytes >= threshold {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    match EVENTS.output::<T>(rec, flags as u64) {
        Ok(()) => count(counter::SUBMITTED),
        Err(_) => count(counter::RINGBUF_FULL),
    }
}

/// Per-CPU scratch events, one per program: an event is built there rather than on
/// the 512-byte stack. (On the stack, LLVM zeroed it through calls to
/// compiler_builtins' byte-by-byte `memset` subprogram, which cost as much per hit
/// as the rest of the program: perf showed `bpf_prog_…_memset`.) One slot per
/// program because a program may be interrupted on its CPU by another one (a
/// syscall exit by a softirq's state transition); a program does not nest in itself.
#[map]
static SCRATCH: PerCpuArray<RawEvent> = PerCpuArray::with_max_entries(slot::COUNT, 0);

mod slot {
    pub const STATE: u32 = 0;
    pub const SYNACK: u32 = 1;
    pub const RETRANSMIT: u32 = 2;
    pub const RESET_SENT: u32 = 3;
    pub const RESET_RECEIVED: u32 = 4;
    pub const SYSCALL: u32 = 5;
    pub const STATE_NESTED: u32 = 6;
    pub const COUNT: u32 = 7;
}

/// The scratch slot of the program that reports events of kind `k`.
#[inline(always)]
fn slot_of(k: u8) -> u32 {
    match k {
        kind::RETRANSMIT => slot::RETRANSMIT,
        kind::RESET_SENT => slot::RESET_SENT,
        _ => slot::RESET_RECEIVED,
    }
}

/// A zeroed event in `slot`, with its kind, socket and context filled in.
#[inline(always)]
fn new_event(slot: u32, kind: u8, skaddr: u64, task: bool) -> Option<&'static mut RawEvent> {
    let p = SCRATCH.get_ptr_mut(slot)?;
    // SAFETY: a map value of this CPU, 8-byte aligned (asserted above); the slot is
    // this program's alone on this CPU while it runs.
    let ev = unsafe {
        zero_words(p);
        &mut *p
    };
    ev.kind = kind;
    ev.skaddr = skaddr;
    ev.ctx_pid_tgid = bpf_get_current_pid_tgid();
    if task {
        ev.flags = flags::TASK_CTX;
    }
    Some(ev)
}

/// Fills the owner of `skaddr`: the owner map, else (task context) the current task.
#[inline(always)]
fn attribute(ev: &mut RawEvent, task: bool) {
    if let Some(o) = unsafe { OWNERS.get(&ev.skaddr) } {
        let o = *o;
        set_owner(ev, &o, 0);
    } else if task {
        let o = current_owner();
        set_owner(ev, &o, 0);
    }
}

// ---------------------------------------------------------------------------
// sock:inet_sock_set_state

#[tracepoint(category = "sock", name = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    let l = opaque(&raw const LAYOUT_SET_STATE);
    let proto: u16 = if l.protocol_size == 1 {
        tp_read::<u8>(&ctx, l.protocol) as u16
    } else {
        tp_read::<u16>(&ctx, l.protocol)
    };
    if proto != IPPROTO_TCP {
        return 0;
    }
    let skaddr = tp_read::<u64>(&ctx, l.skaddr);
    if skaddr == 0 {
        return 0;
    }
    let oldstate = tp_read::<i32>(&ctx, l.oldstate) as u8;
    let newstate = tp_read::<i32>(&ctx, l.newstate) as u8;
    let task = process_transition(oldstate, newstate);
    let Some(ev) = new_event(slot::STATE, kind::STATE, skaddr, task) else {
        return 0;
    };
    ev.oldstate = oldstate;
    ev.newstate = newstate;
    read_tuple(&ctx, &l, ev);
    on_state(ev, task, None);
    0
}

/// What every attach path does with a TCP state transition once its fields are read.
#[inline(always)]
fn on_state(ev: &mut RawEvent, task: bool, inherited: Option<ListenerLink>) {
    let skaddr = ev.skaddr;
    let child = ev.oldstate == TCP_LISTEN && ev.newstate == TCP_SYN_RECV;
    let known = if child {
        // A new socket: an owner under its address is a stale one of a freed socket.
        None
    } else {
        unsafe { OWNERS.get(&skaddr) }.copied()
    };
    match known {
        // connect() and listen() run in the owner's task and (re)start a socket's
        // life: bind the owner there, overriding any stale entry for a reused address.
        _ if task && (ev.newstate == TCP_SYN_SENT || ev.newstate == TCP_LISTEN) => {
            let o = owner_of(skaddr);
            let _ = OWNERS.insert(&skaddr, &o, 0);
            if ev.newstate == TCP_LISTEN {
                let link = ListenerLink {
                    sk: skaddr,
                    owner: o,
                };
                let _ = LISTENERS.insert(&listen_key(o.netns, ev.sport), &link, 0);
            }
            set_owner(ev, &o, 0);
        }
        Some(o) => set_owner(ev, &o, 0),
        None if task => {
            let o = owner_of(skaddr);
            let _ = OWNERS.insert(&skaddr, &o, 0);
            set_owner(ev, &o, 0);
        }
        None => {
            // A child socket born in softirq from a request (LISTEN → SYN_RECV):
            // until accept() returns, it belongs to the listener's process. Its
            // listener: the one it was cloned from (socket storage, tp_btf), else the
            // one on its namespace and port.
            if child || ev.newstate == TCP_SYN_RECV || ev.newstate == TCP_ESTABLISHED {
                let (link, exact) = match inherited {
                    Some(l) => (Some(l), flags::LISTENER_EXACT),
                    None => {
                        // The child is in its listener's namespace.
                        let netns = netns_of(opaque(&raw const OFFSETS), skaddr);
                        let l = unsafe { LISTENERS.get(&listen_key(netns, ev.sport)) };
                        (l.copied(), 0)
                    }
                };
                if let Some(l) = link {
                    let _ = OWNERS.insert(&skaddr, &l.owner, 0);
                    set_owner(ev, &l.owner, flags::OWNER_FROM_LISTENER | exact);
                    if child {
                        ev.aux = l.sk;
                        read_accept_queue(ev, l.sk);
                    }
                }
            }
        }
    }

    if ev.newstate == TCP_ESTABLISHED
        && (ev.oldstate == TCP_SYN_SENT || ev.oldstate == TCP_SYN_RECV)
    {
        read_isns(ev);
    }

    // The thread inside connect() has just sent the SYN: remember which socket.
    if task && ev.newstate == TCP_SYN_SENT {
        let id = bpf_get_current_pid_tgid();
        if let Some(p) = CONNECTS.get_ptr_mut(&id) {
            unsafe {
                (*p).skaddr = skaddr;
                (*p).dport = ev.dport;
                (*p).family = ev.family;
                copy16(&mut (*p).daddr, &ev.daddr);
            }
        }
    }

    emit(ev);

    if ev.newstate == TCP_CLOSE {
        // The address may be reused by a new socket: forget this one's owner.
        let _ = OWNERS.remove(&skaddr);
        if ev.oldstate == TCP_LISTEN {
            let key = listen_key(ev.netns, ev.sport);
            if let Some(l) = unsafe { LISTENERS.get(&key) } {
                if l.sk == skaddr || l.owner.tgid == ev.owner_tgid {
                    let _ = LISTENERS.remove(&key);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// tcp:* tracepoints

#[tracepoint(category = "tcp", name = "tcp_retransmit_synack")]
pub fn tcp_retransmit_synack(ctx: TracePointContext) -> u32 {
    let l = opaque(&raw const LAYOUT_SYNACK);
    let skaddr = tp_read::<u64>(&ctx, l.skaddr);
    // skaddr is the listener; the SYN-ACK timer runs in softirq.
    let Some(ev) = new_event(slot::SYNACK, kind::SYNACK_RETRANSMIT, skaddr, false) else {
        return 0;
    };
    ev.aux = tp_read::<u64>(&ctx, l.aux);
    ev.newstate = TCP_SYN_RECV;
    read_tuple(&ctx, &l, ev);
    // A SYN-ACK resent while the accept queue is full is overflow, not loss.
    read_accept_queue(ev, skaddr);
    attribute(ev, false);
    emit(ev);
    0
}

#[tracepoint(category = "tcp", name = "tcp_retransmit_skb")]
pub fn tcp_retransmit_skb(ctx: TracePointContext) -> u32 {
    sock_event(&ctx, kind::RETRANSMIT, opaque(&raw const LAYOUT_RETRANSMIT))
}

#[tracepoint(category = "tcp", name = "tcp_send_reset")]
pub fn tcp_send_reset(ctx: TracePointContext) -> u32 {
    sock_event(&ctx, kind::RESET_SENT, opaque(&raw const LAYOUT_SEND_RESET))
}

#[tracepoint(category = "tcp", name = "tcp_receive_reset")]
pub fn tcp_receive_reset(ctx: TracePointContext) -> u32 {
    sock_event(
        &ctx,
        kind::RESET_RECEIVED,
        opaque(&raw const LAYOUT_RECV_RESET),
    )
}

#[inline(always)]
fn sock_event(ctx: &TracePointContext, k: u8, l: &TpLayout) -> u32 {
    let skaddr = tp_read::<u64>(ctx, l.skaddr);
    // Retransmits and resets run from timers and softirq as often as not: never
    // take the current task for the owner here.
    let Some(ev) = new_event(slot_of(k), k, skaddr, false) else {
        return 0;
    };
    ev.newstate = tp_read::<i32>(ctx, l.newstate) as u8;
    // The reset reason exists since 6.12: u64::MAX says "no such field".
    ev.aux = if l.aux == NO_FIELD {
        u64::MAX
    } else {
        tp_read::<u32>(ctx, l.aux) as u64
    };
    read_tuple(ctx, l, ev);
    if skaddr != 0 {
        attribute(ev, false);
    }
    emit(ev);
    0
}

// ---------------------------------------------------------------------------
// syscalls: connect, accept, accept4

#[inline(always)]
fn sys_arg(ctx: &TracePointContext, l: &TpLayout) -> i64 {
    if l.sys_arg == NO_FIELD {
        return -1;
    }
    tp_read::<i64>(ctx, l.sys_arg)
}

/// Pid filter for syscalls: the caller is the owner.
#[inline(always)]
fn caller_filtered(id: u64) -> bool {
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
fn insert_pending(map: &LruHashMap<u64, PendingCall>, id: u64, fd: i64) {
    let mut c = MaybeUninit::<PendingCall>::uninit();
    // SAFETY: 8-byte aligned (asserted above); fully written by zero_words, and all
    // zeroes is a valid PendingCall.
    unsafe {
        zero_words(c.as_mut_ptr());
        (*c.as_mut_ptr()).fd = fd as i32;
        let _ = map.insert(&id, &*c.as_ptr(), 0);
    }
}

#[inline(always)]
fn enter_connect(fd: i64) {
    let id = bpf_get_current_pid_tgid();
    if caller_filtered(id) {
        return;
    }
    insert_pending(&CONNECTS, id, fd);
}

#[inline(always)]
fn exit_connect(ret: i64) {
    let id = bpf_get_current_pid_tgid();
    let Some(call) = (unsafe { CONNECTS.get(&id) }).copied() else {
        return;
    };
    let _ = CONNECTS.remove(&id);
    let o = opaque(&raw const OFFSETS);
    // The socket: the one that went SYN_SENT inside this call, else (a connect that
    // sent no SYN: EALREADY, EISCONN, an early error) found through the fd, TCP only.
    let skaddr = if call.skaddr != 0 {
        call.skaddr
    } else {
        match sock_of_fd(&o, call.fd as i64) {
            Some(sk) => sk,
            None => return,
        }
    };
    let Some(ev) = new_event(slot::SYSCALL, kind::CONNECT_RETURN, skaddr, true) else {
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
    } else if o.valid != 0 {
        read_sock_tuple(&o, skaddr, ev);
    }
    // The caller is the owner bound at SYN_SENT (same task); reuse that entry.
    let owner = match unsafe { OWNERS.get(&skaddr) } {
        Some(o) if o.pid == id as u32 => *o,
        _ => owner_of(skaddr),
    };
    set_owner(ev, &owner, 0);
    emit(ev);
}

#[inline(always)]
fn enter_accept(fd: i64) -> u32 {
    let id = bpf_get_current_pid_tgid();
    if caller_filtered(id) {
        return 0;
    }
    insert_pending(&ACCEPTS, id, fd);
    0
}

#[inline(always)]
fn exit_accept(ret: i64, accept4: bool) -> u32 {
    let id = bpf_get_current_pid_tgid();
    let Some(call) = (unsafe { ACCEPTS.get(&id) }).copied() else {
        return 0;
    };
    let _ = ACCEPTS.remove(&id);
    // A non-blocking accept with nothing queued is not an event.
    if ret == -EAGAIN {
        return 0;
    }
    let o = opaque(&raw const OFFSETS);
    // The accepted child socket, found through the returned fd: works for
    // accept4(fd, NULL, NULL), which most servers call.
    let fd = if ret >= 0 { ret } else { call.fd as i64 };
    let sk = sock_of_fd(&o, fd);
    let Some(sk) = sk else {
        if o.valid != 0 {
            // Not a TCP socket (unix, …): not ours. With valid offsets a failed
            // walk on a TCP fd is rare; it is counted in userspace-visible stats.
            if ret >= 0 {
                count(counter::FD_WALK_FAILED);
            }
            return 0;
        }
        // No BTF: report the return without a socket.
        let Some(ev) = new_event(slot::SYSCALL, kind::ACCEPT_RETURN, 0, true) else {
            return 0;
        };
        ev.ret = ret;
        ev.fd = call.fd;
        if accept4 {
            ev.flags |= flags::ACCEPT4;
        }
        let owner = current_owner();
        set_owner(ev, &owner, 0);
        emit(ev);
        return 0;
    };
    let skaddr = if ret >= 0 { sk } else { 0 };
    let Some(ev) = new_event(slot::SYSCALL, kind::ACCEPT_RETURN, skaddr, true) else {
        return 0;
    };
    ev.ret = ret;
    ev.fd = call.fd;
    if accept4 {
        ev.flags |= flags::ACCEPT4;
    }
    read_sock_tuple(&o, sk, ev);
    let owner = owner_of(sk);
    if ret >= 0 {
        let _ = OWNERS.insert(&sk, &owner, 0);
    }
    set_owner(ev, &owner, 0);
    emit(ev);
    0
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

// ---------------------------------------------------------------------------
// The per-connection design: a socket's book (socket local storage), flushed into the
// ring at the transitions a reader must see in time, and when full.

#[inline(always)]
fn books_on() -> bool {
    unsafe { read_volatile(&BOOKS) != 0 }
}

/// After these transitions the book leaves the kernel: a `connect()` return may follow
/// SYN_SENT and ESTABLISHED, an `accept()` return a child's ESTABLISHED (the reader
/// orders records by time only within a short window); CLOSE_WAIT may last (the
/// application has not closed: a leak is seen while it lasts); LISTEN names a listener
/// for its children; CLOSE ends the book.
#[inline(always)]
fn flush_after(new: u8) -> bool {
    new == TCP_SYN_SENT
        || new == TCP_ESTABLISHED
        || new == TCP_CLOSE_WAIT
        || new == TCP_CLOSE
        || new == TCP_LISTEN
}

/// Family, ports and addresses of `sk` into its book; kept as they were when the
/// socket no longer has a remote port (a failed connect() is disconnected).
#[inline(always)]
fn book_tuple(o: &KernelOffsets, sk: u64, b: &mut ConnRecord) {
    unsafe {
        let family = rd::<u16>(sk, o.skc_family as u64) as u8;
        let dport = u16::from_be(rd::<u16>(sk, o.skc_dport as u64));
        if family == 0 || (dport == 0 && b.flags & book_flags::HAS_TUPLE != 0) {
            return;
        }
        b.family = family;
        b.dport = dport;
        b.sport = u16::from_be(rd::<u16>(sk, o.inet_sport as u64));
        if family == AF_INET {
            rd_into(v4_of(&mut b.saddr), sk, o.skc_rcv_saddr as u64);
            rd_into(v4_of(&mut b.daddr), sk, o.skc_daddr as u64);
        } else {
            rd_into(&mut b.saddr, sk, o.skc_v6_rcv_saddr as u64);
            rd_into(&mut b.daddr, sk, o.skc_v6_daddr as u64);
        }
    }
    b.flags |= book_flags::HAS_TUPLE;
}

/// Appends a step; false when the book is full (the caller flushes first).
#[inline(always)]
fn book_step(b: &mut ConnRecord, k: u8, old: u8, new: u8, sflags: u8, aux: u32) -> bool {
    let n = b.nsteps as usize;
    let Some(st) = b.steps.get_mut(n) else {
        return false;
    };
    st.ts_ns = unsafe { bpf_ktime_get_ns() };
    st.kind = k;
    st.old = old;
    st.new = new;
    st.flags = sflags;
    st.aux = aux;
    b.nsteps = (n + 1) as u8;
    true
}

/// The book into the ring (unless filtered out), then empty for the next steps.
#[inline(always)]
fn book_flush(o: &KernelOffsets, sk: u64, b: &mut ConnRecord) {
    if b.nsteps == 0 {
        return;
    }
    if b.sport == 0 || b.dport == 0 || b.seq == 0 {
        // Not complete yet (a client's local port comes at SYN_SENT, a child's remote
        // end before 6.15 after its birth), or the first flush: read again.
        book_tuple(o, sk, b);
    }
    let tgid = if b.flags & book_flags::OWNER_KNOWN != 0 {
        b.owner.tgid
    } else {
        0
    };
    if filter_miss(
        b.family,
        tgid,
        b.owner.ns_tgid,
        b.owner.cgroup_id,
        b.sport,
        b.dport,
    ) {
        count(counter::FILTERED);
    } else {
        output(&*b, core::mem::size_of::<ConnRecord>() as u64 + 8);
    }
    b.seq += 1;
    b.nsteps = 0;
}

/// A transition in the per-connection design. False when the socket has no book (the
/// kernel could not allocate one): the caller reports the event on its own.
#[inline(always)]
fn state_book(o: &KernelOffsets, sk: u64, old: u8, new: u8) -> bool {
    let Some(b) = book_of(sk, true) else {
        return false;
    };
    let task = process_transition(old, new);
    let child = old == TCP_LISTEN && new == TCP_SYN_RECV;
    let start = child || (old == TCP_CLOSE && (new == TCP_SYN_SENT || new == TCP_LISTEN));
    if start && b.skaddr != 0 {
        // A book left under this address by a socket whose CLOSE was not seen (the
        // kernel skipped the hook): out with what it holds, then a new one.
        book_flush(o, sk, b);
        // SAFETY: 8-byte aligned map value; all zeroes is a valid ConnRecord.
        unsafe { zero_words(b as *mut ConnRecord) };
    }
    if b.skaddr == 0 {
        b.skaddr = sk;
        book_tuple(o, sk, b);
    }
    if task && (new == TCP_SYN_SENT || new == TCP_LISTEN || b.flags & book_flags::OWNER_KNOWN == 0)
    {
        b.owner = owner_of(sk);
        b.flags = (b.flags | book_flags::OWNER_KNOWN) & !book_flags::OWNER_FROM_LISTENER;
    } else if b.flags & book_flags::OWNER_KNOWN == 0
        && (child || new == TCP_SYN_RECV || new == TCP_ESTABLISHED)
    {
        // A child born in softirq: its listener's process owns it until accept().
        // The listener it was cloned from (socket storage), else the one on its
        // namespace and port.
        let inherited = if child {
            listener_of(sk, false).map(|l| *l).filter(|l| l.sk != 0)
        } else {
            None
        };
        let (link, exact) = match inherited {
            Some(l) => (Some(l), book_flags::LISTENER_EXACT),
            None => {
                let netns = netns_of(o, sk);
                let l = unsafe { LISTENERS.get(&listen_key(netns, b.sport)) };
                (l.copied(), 0)
            }
        };
        if let Some(l) = link {
            b.owner = l.owner;
            b.flags |= book_flags::OWNER_KNOWN | book_flags::OWNER_FROM_LISTENER | exact;
            if child {
                b.listener = l.sk;
                if l.sk != 0 && o.valid != 0 {
                    // SAFETY: kernel reads through the helper (zero on a fault).
                    unsafe {
                        b.aq_len = rd::<u32>(l.sk, o.sk_ack_backlog as u64);
                        b.aq_max = rd::<u32>(l.sk, o.sk_max_ack_backlog as u64);
                    }
                    b.flags |= book_flags::ACCEPT_QUEUE;
                }
            }
        }
    }
    if new == TCP_ESTABLISHED && (old == TCP_SYN_SENT || old == TCP_SYN_RECV) && o.tcp_snd_una != 0
    {
        // SAFETY: kernel reads through the helper (zero on a fault).
        unsafe {
            b.isn_local = rd::<u32>(sk, o.tcp_snd_una as u64).wrapping_sub(1);
            b.isn_remote = rd::<u32>(sk, o.tcp_rcv_nxt as u64).wrapping_sub(1);
        }
        b.flags |= book_flags::ISN;
    }
    let (sflags, aux) = if task {
        (
            step_flags::TASK_CTX,
            (bpf_get_current_pid_tgid() >> 32) as u32,
        )
    } else {
        (0, 0)
    };
    if !book_step(b, kind::STATE, old, new, sflags, aux) {
        book_flush(o, sk, b);
        book_step(b, kind::STATE, old, new, sflags, aux);
    }

    // What the per-event design does around a transition, for the other hooks.
    if task && new == TCP_SYN_SENT {
        let id = bpf_get_current_pid_tgid();
        if let Some(p) = CONNECTS.get_ptr_mut(&id) {
            unsafe {
                (*p).skaddr = sk;
                (*p).dport = b.dport;
                (*p).family = b.family;
                copy16(&mut (*p).daddr, &b.daddr);
            }
        }
    }
    if task && new == TCP_LISTEN {
        let link = ListenerLink { sk, owner: b.owner };
        let _ = LISTENERS.insert(&listen_key(b.owner.netns, b.sport), &link, 0);
        if let Some(l) = listener_of(sk, true) {
            *l = link;
        }
    }
    if new == TCP_CLOSE {
        b.flags |= book_flags::FINAL;
    }
    if flush_after(new) || b.nsteps as usize == BOOK_STEPS {
        book_flush(o, sk, b);
    }
    if new == TCP_CLOSE {
        if old == TCP_LISTEN {
            let key = listen_key(b.owner.netns, b.sport);
            if let Some(l) = unsafe { LISTENERS.get(&key) } {
                if l.sk == sk {
                    let _ = LISTENERS.remove(&key);
                }
            }
        }
        // Back to the free list; the address may be a new socket's next.
        let _ = BOOK_MAP.remove(&sk);
    }
    true
}

/// A retransmit or reset on a socket with a book: a step in it. False when `sk` has
/// none (a request or timewait sock, a socket from before the trace, a closed one).
#[inline(always)]
fn step_book(o: &KernelOffsets, k: u8, sk: u64) -> bool {
    let Some(b) = book_of(sk, false) else {
        return false;
    };
    if b.skaddr == 0 || b.flags & book_flags::FINAL != 0 {
        // No book yet, or closed: a reset sent after CLOSE (an abortive close sets
        // CLOSE first) would wait for a flush that never comes; it goes on its own.
        return false;
    }
    let state = unsafe { rd::<u8>(sk, o.skc_state as u64) };
    let aux = if k == kind::RESET_SENT { u32::MAX } else { 0 };
    if !book_step(b, k, 0, state, 0, aux) {
        book_flush(o, sk, b);
        book_step(b, k, 0, state, 0, aux);
    }
    if b.nsteps as usize == BOOK_STEPS {
        book_flush(o, sk, b);
    }
    true
}

// ---------------------------------------------------------------------------
// The same hooks without tracefs: BTF-typed (tp_btf) and raw tracepoints. Both
// contexts are an array of u64 arguments; the socket's fields are read through
// BTF offsets. Userspace picks one path per hook (`--attach`).

/// Sockets whose `sk_protocol` is not TCP (MPTCP subflows are TCP; SCTP is not).
#[inline(always)]
fn tcp_sock(o: &KernelOffsets, sk: u64) -> bool {
    o.valid != 0 && sk != 0 && unsafe { rd::<u16>(sk, o.sk_protocol as u64) } == IPPROTO_TCP
}

#[inline(always)]
fn state_args(slot: u32, sk: u64, old: u64, new: u64, storage: bool) {
    let o = opaque(&raw const OFFSETS);
    if !tcp_sock(&o, sk) {
        return;
    }
    let (old, new) = (old as u8, new as u8);
    if storage && books_on() && state_book(&o, sk, old, new) {
        return;
    }
    let task = process_transition(old, new);
    // A child's storage is its listener's, cloned by the kernel (see LISTENER_OF).
    let inherited = if storage && old == TCP_LISTEN && new == TCP_SYN_RECV {
        listener_of(sk, false).map(|l| *l).filter(|l| l.sk != 0)
    } else {
        None
    };
    let Some(ev) = new_event(slot, kind::STATE, sk, task) else {
        return;
    };
    ev.oldstate = old;
    ev.newstate = new;
    read_sock_tuple(&o, sk, ev);
    on_state(ev, task, inherited);
    if storage && task && new == TCP_LISTEN {
        // listen(): what every child of this socket will inherit.
        if let Some(l) = listener_of(sk, true) {
            l.sk = sk;
            l.owner = Owner {
                tgid: ev.owner_tgid,
                pid: ev.owner_pid,
                comm: ev.comm,
                cgroup_id: ev.cgroup_id,
                ns_tgid: ev.ns_pid,
                netns: ev.netns,
            };
        }
    }
}

/// tcp_retransmit_synack(sk = listener, req): the request sock starts with a
/// `struct sock_common` (`__req_common`), so the socket offsets apply; its local
/// port is `skc_num` (host order).
#[inline(always)]
fn synack_args(sk: u64, req: u64) {
    let o = opaque(&raw const OFFSETS);
    if o.valid == 0 {
        return;
    }
    let Some(ev) = new_event(slot::SYNACK, kind::SYNACK_RETRANSMIT, sk, false) else {
        return;
    };
    ev.aux = req;
    ev.newstate = TCP_SYN_RECV;
    if req != 0 {
        read_any_sock_tuple(&o, req, TCP_NEW_SYN_RECV, ev);
    }
    read_accept_queue(ev, sk);
    attribute(ev, false);
    emit(ev);
}

#[inline(always)]
fn sock_args(k: u8, sk: u64, storage: bool) {
    let o = opaque(&raw const OFFSETS);
    if o.valid == 0 {
        return;
    }
    if storage && books_on() && sk != 0 && step_book(&o, k, sk) {
        return;
    }
    let Some(ev) = new_event(slot_of(k), k, sk, false) else {
        return;
    };
    // The reset reason is an extra argument only since 6.12; not read on this path.
    ev.aux = u64::MAX;
    if sk != 0 {
        ev.newstate = unsafe { rd::<u8>(sk, o.skc_state as u64) };
        // tcp_send_reset may be called with a timewait or request sock.
        read_any_sock_tuple(&o, sk, ev.newstate, ev);
        attribute(ev, false);
    }
    emit(ev);
}

const NR_CONNECT: u64 = 42;
const NR_ACCEPT: u64 = 43;
const NR_ACCEPT4: u64 = 288;

/// raw_syscalls:sys_enter(regs, id), filtered by syscall number in the kernel.
#[inline(always)]
fn sys_enter_args(regs: u64, id: u64) {
    if id != NR_CONNECT && id != NR_ACCEPT && id != NR_ACCEPT4 {
        return;
    }
    let o = opaque(&raw const OFFSETS);
    let fd: i64 = unsafe { rd(regs, o.regs_di as u64) };
    if id == NR_CONNECT {
        enter_connect(fd);
    } else {
        enter_accept(fd);
    }
}

/// raw_syscalls:sys_exit(regs, ret): the syscall number is `regs->orig_ax`.
#[inline(always)]
fn sys_exit_args(regs: u64, ret: u64) {
    let o = opaque(&raw const OFFSETS);
    // 0 (read) when the read faults: not one of ours.
    let nr: u64 = unsafe { rd(regs, o.regs_orig_ax as u64) };
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

macro_rules! both_paths {
    ($btf:ident, $raw:ident, $tp:literal, |$c:ident| $body:expr) => {
        #[btf_tracepoint(function = $tp)]
        pub fn $btf($c: BtfTracePointContext) -> i32 {
            $body;
            0
        }
        #[raw_tracepoint(tracepoint = $tp)]
        pub fn $raw($c: RawTracePointContext) -> i32 {
            $body;
            0
        }
    };
}

/// Set on a CPU while `*_inet_sock_set_state` runs there. The kernel does not run a
/// program again on a CPU where it is already running (a softirq's transition
/// interrupting a process-context one: `recursion_misses`); the `*_nested` program,
/// attached after it to the same tracepoint, sees the flag and reports that
/// transition instead. Outside such nesting it returns at once.
#[map]
static STATE_BUSY: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn state_outer(sk: u64, old: u64, new: u64, storage: bool) {
    let busy = STATE_BUSY.get_ptr_mut(0);
    if let Some(b) = busy {
        unsafe { b.write_volatile(1) };
    }
    state_args(slot::STATE, sk, old, new, storage);
    if let Some(b) = busy {
        unsafe { b.write_volatile(0) };
    }
}

#[inline(always)]
fn state_nested(sk: u64, old: u64, new: u64, storage: bool) {
    match STATE_BUSY.get_ptr_mut(0) {
        Some(b) if unsafe { b.read_volatile() } != 0 => {
            count(counter::NESTED_CAUGHT);
            state_args(slot::STATE_NESTED, sk, old, new, storage)
        }
        _ => {}
    }
}

both_paths!(
    btf_inet_sock_set_state,
    raw_inet_sock_set_state,
    "inet_sock_set_state",
    |c| { state_outer(c.arg::<u64>(0), c.arg::<u64>(1), c.arg::<u64>(2), false) }
);

/// The state hook with socket local storage (tp_btf only, 5.11+): the loader tries
/// these first and falls back to the pair above where the kernel refuses them.
#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn btf_inet_sock_set_state_sk(c: BtfTracePointContext) -> i32 {
    state_outer(c.arg::<u64>(0), c.arg::<u64>(1), c.arg::<u64>(2), true);
    0
}

#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn btf_inet_sock_set_state_sk_nested(c: BtfTracePointContext) -> i32 {
    state_nested(c.arg::<u64>(0), c.arg::<u64>(1), c.arg::<u64>(2), true);
    0
}
both_paths!(
    btf_inet_sock_set_state_nested,
    raw_inet_sock_set_state_nested,
    "inet_sock_set_state",
    |c| { state_nested(c.arg::<u64>(0), c.arg::<u64>(1), c.arg::<u64>(2), false) }
);
both_paths!(
    btf_tcp_retransmit_synack,
    raw_tcp_retransmit_synack,
    "tcp_retransmit_synack",
    |c| { synack_args(c.arg::<u64>(0), c.arg::<u64>(1)) }
);
both_paths!(
    btf_tcp_retransmit_skb,
    raw_tcp_retransmit_skb,
    "tcp_retransmit_skb",
    |c| { sock_args(kind::RETRANSMIT, c.arg::<u64>(0), false) }
);
both_paths!(
    btf_tcp_send_reset,
    raw_tcp_send_reset,
    "tcp_send_reset",
    |c| { sock_args(kind::RESET_SENT, c.arg::<u64>(0), false) }
);
both_paths!(
    btf_tcp_receive_reset,
    raw_tcp_receive_reset,
    "tcp_receive_reset",
    |c| { sock_args(kind::RESET_RECEIVED, c.arg::<u64>(0), false) }
);
/// The retransmit and reset hooks with socket storage (tp_btf only, 5.11+): a step
/// in the socket's book when it has one.
#[btf_tracepoint(function = "tcp_retransmit_skb")]
pub fn btf_tcp_retransmit_skb_sk(c: BtfTracePointContext) -> i32 {
    sock_args(kind::RETRANSMIT, c.arg::<u64>(0), true);
    0
}
#[btf_tracepoint(function = "tcp_send_reset")]
pub fn btf_tcp_send_reset_sk(c: BtfTracePointContext) -> i32 {
    sock_args(kind::RESET_SENT, c.arg::<u64>(0), true);
    0
}
#[btf_tracepoint(function = "tcp_receive_reset")]
pub fn btf_tcp_receive_reset_sk(c: BtfTracePointContext) -> i32 {
    sock_args(kind::RESET_RECEIVED, c.arg::<u64>(0), true);
    0
}
both_paths!(btf_sys_enter, raw_sys_enter, "sys_enter", |c| {
    sys_enter_args(c.arg::<u64>(0), c.arg::<u64>(1))
});
both_paths!(btf_sys_exit, raw_sys_exit, "sys_exit", |c| {
    sys_exit_args(c.arg::<u64>(0), c.arg::<u64>(1))
});

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
