//! Reads of kernel memory: tracepoint record fields, a socket's tuple, state,
//! namespace, accept queue and ISNs, and the fd → socket walk.

use crate::config::{OFFSETS, opaque};
use aya_ebpf::EbpfContext;
use aya_ebpf::helpers::bpf_get_current_task;
use aya_ebpf::helpers::generated as helper;
use aya_ebpf::programs::TracePointContext;
use core::ffi::c_void;
use core::mem::MaybeUninit;
use tcp_trace_common::AF_INET;
use tcp_trace_common::AF_INET6;
use tcp_trace_common::ConnRecord;
use tcp_trace_common::IPPROTO_TCP;
use tcp_trace_common::KernelOffsets;
use tcp_trace_common::NO_FIELD;
use tcp_trace_common::Owner;
use tcp_trace_common::PendingCall;
use tcp_trace_common::RawEvent;
use tcp_trace_common::TpLayout;
use tcp_trace_common::flags;
use tcp_trace_common::tcp_state::NEW_SYN_RECV as TCP_NEW_SYN_RECV;
use tcp_trace_common::tcp_state::TIME_WAIT as TCP_TIME_WAIT;

/// The listener's accept queue (length and limit) into `ev` (`fd`, `ret`).
#[inline(always)]
pub(crate) fn read_accept_queue(ev: &mut RawEvent, listener: u64) {
    if listener == 0 {
        return;
    }
    let o = opaque(&raw const OFFSETS);
    if o.valid == 0 {
        return;
    }
    let (len, max) = accept_queue_of(&o, listener);
    ev.fd = len as i32;
    ev.ret = max as i64;
    ev.flags |= flags::ACCEPT_QUEUE;
}

/// A listener's accept-queue length and limit (`sk_ack_backlog`, `sk_max_ack_backlog`).
#[inline(always)]
pub(crate) fn accept_queue_of(o: &KernelOffsets, listener: u64) -> (u32, u32) {
    // Neighbours in `struct sock`: one read.
    let first = if o.sk_ack_backlog < o.sk_max_ack_backlog {
        o.sk_ack_backlog
    } else {
        o.sk_max_ack_backlog
    };
    let w = Window::<1>::read(listener, first as u64);
    (
        w.get(o.sk_ack_backlog as u64),
        w.get(o.sk_max_ack_backlog as u64),
    )
}

/// The socket's own ISN and its peer's, at its transition to ESTABLISHED: no data has
/// moved yet, so `snd_una` and `rcv_nxt` are each ISN + 1 (the SYN takes one sequence
/// number).
#[inline(always)]
pub(crate) fn isns_of(o: &KernelOffsets, sk: u64) -> (u32, u32) {
    // 8 bytes apart in 6.18's `struct tcp_sock` (rcv_nxt, snd_nxt, snd_una): one read
    // where they are as close.
    let first = if o.tcp_snd_una < o.tcp_rcv_nxt {
        o.tcp_snd_una
    } else {
        o.tcp_rcv_nxt
    };
    let w = Window::<2>::read(sk, first as u64);
    (
        w.get::<u32>(o.tcp_snd_una as u64).wrapping_sub(1),
        w.get::<u32>(o.tcp_rcv_nxt as u64).wrapping_sub(1),
    )
}

/// The two initial sequence numbers of a socket that has just become ESTABLISHED
/// ([`isns_of`]), into `ev.ret`, own in the low half.
#[inline(always)]
pub(crate) fn read_isns(ev: &mut RawEvent) {
    let o = opaque(&raw const OFFSETS);
    if o.valid == 0 || o.tcp_snd_una == 0 {
        return;
    }
    let (local, remote) = isns_of(&o, ev.skaddr);
    ev.ret = (u64::from(local) | (u64::from(remote) << 32)) as i64;
    ev.flags |= flags::ISN;
}

pub(crate) const SOCK_STREAM: u16 = 1;

/// Reads a `T` at `base + off` of kernel memory; all zeroes when the read faults
/// (the helper clears its destination then). No branch on the helper's result:
/// a zero is what every caller treats as "unknown", and each such branch would
/// double the paths the verifier walks through the rest of the program (the
/// reason start-up spent ~250 ms verifying ~7 000 instructions).
#[inline(always)]
pub(crate) fn rd<T: Plain>(base: u64, off: u64) -> T {
    let mut v = MaybeUninit::<T>::uninit();
    // SAFETY: the helper writes all of `v` (what it read, or zeroes on a fault) and
    // never faults itself; every bit pattern is a valid `T` (`Plain`).
    unsafe {
        probe_read(v.as_mut_ptr(), base + off);
        v.assume_init()
    }
}

/// Plain data a kernel read may produce: integers and byte arrays, for which every
/// bit pattern (all zeroes after a faulting read) is a valid value.
pub(crate) trait Plain: Copy {}
impl Plain for u8 {}
impl Plain for u16 {}
impl Plain for u32 {}
impl Plain for u64 {}
impl Plain for i32 {}
impl Plain for i64 {}
impl Plain for [u8; 4] {}
impl Plain for [u8; 16] {}

/// Reads `size_of::<T>()` bytes at `base + off` straight into `dst` (zeroes when the
/// read faults): for addresses, which as values went through a temporary that LLVM
/// zeroed and copied with `memset`/`memmove` calls.
#[inline(always)]
pub(crate) fn rd_into<T: Plain>(dst: &mut T, base: u64, off: u64) {
    // SAFETY: `dst` is valid for writes of a `T`, which the helper fills whole; any
    // bit pattern is a valid `T`.
    unsafe { probe_read(dst, base + off) }
}

/// `N` words of kernel memory at `base + start`, read in one helper call: the fields
/// that lie inside (at an offset aligned for their type) are taken from this copy,
/// any other is read on its own. A helper call costs ~12 ns here whatever its size
/// (bpf_stats, 6.18), so neighbouring fields cost one call instead of one each. The
/// offsets are read-only globals the verifier knows, so it keeps only one branch of
/// each `get`.
pub(crate) struct Window<const N: usize> {
    base: u64,
    start: u64,
    w: [u64; N],
}

impl<const N: usize> Window<N> {
    #[inline(always)]
    pub(crate) fn read(base: u64, start: u64) -> Self {
        let mut w = MaybeUninit::<[u64; N]>::uninit();
        // SAFETY: the helper writes all of `w` (zeroes on a fault); any bits are valid.
        let w = unsafe {
            probe_read(w.as_mut_ptr(), base + start);
            w.assume_init()
        };
        Window { base, start, w }
    }

    /// Byte offset of `off` in the copy, when `size` bytes there are inside it and
    /// aligned to `align`.
    #[inline(always)]
    fn inside(&self, off: u64, size: u64, align: u64) -> Option<usize> {
        if off >= self.start && off + size <= self.start + 8 * N as u64 {
            let at = off - self.start;
            if at % align == 0 {
                return Some(at as usize);
            }
        }
        None
    }

    /// The `T` at `base + off`, as `rd` reads it.
    #[inline(always)]
    pub(crate) fn get<T: Plain>(&self, off: u64) -> T {
        let size = core::mem::size_of::<T>() as u64;
        match self.inside(off, size, core::mem::align_of::<T>() as u64) {
            // SAFETY: within the copy and aligned for `T`; any bits are a valid `T`.
            Some(at) => unsafe { ((self.w.as_ptr() as *const u8).add(at) as *const T).read() },
            None => rd(self.base, off),
        }
    }

    /// An IPv4 address at `base + off` into the first four bytes of `dst`.
    #[inline(always)]
    pub(crate) fn get_v4(&self, dst: &mut [u8; 16], off: u64) {
        match self.inside(off, 4, 4) {
            Some(_) => *v4_of(dst) = self.get::<u32>(off).to_ne_bytes(),
            None => rd_into(v4_of(dst), self.base, off),
        }
    }

    /// An IPv6 address at `base + off` into `dst` (8-byte aligned: see `copy16`).
    #[inline(always)]
    pub(crate) fn get_v6(&self, dst: &mut [u8; 16], off: u64) {
        match self.inside(off, 16, 8) {
            Some(_) => {
                let d = dst.as_mut_ptr() as *mut u64;
                // SAFETY: every `[u8; 16]` address this is given sits at an 8-byte
                // aligned offset of an 8-aligned struct (asserted below).
                unsafe {
                    d.write(self.get::<u64>(off));
                    d.add(1).write(self.get::<u64>(off + 8));
                }
            }
            None => rd_into(dst, self.base, off),
        }
    }
}

/// Words of a `struct sock_common` read at once: family, ports, IPv4 addresses, state
/// and network namespace lie in its first 64 bytes on every kernel we test (a field
/// further on, such as an IPv6 address, is read on its own). One cache line: reading
/// the next too (88 bytes, with the IPv6 addresses) made a reset's event cost ~120 ns
/// more, that line being cold in an IPv4 socket. Timewait and request socks begin
/// with a whole `struct sock_common` too.
pub(crate) const HEAD_WORDS: usize = 8;

pub(crate) type SockHead = Window<HEAD_WORDS>;

/// The head of `sk`'s `struct sock_common` (all zeroes when the read faults).
#[inline(always)]
pub(crate) fn sock_head(sk: u64) -> SockHead {
    Window::read(sk, 0)
}

const _: () = assert!(core::mem::offset_of!(RawEvent, saddr) % 8 == 0);

const _: () = assert!(core::mem::offset_of!(ConnRecord, saddr) % 8 == 0);

const _: () = assert!(core::mem::offset_of!(ConnRecord, daddr) % 8 == 0);

/// `bpf_probe_read_kernel` of a `T` at `src` into `dst`, whose result is not
/// looked at (see `rd`): the helper writes all of `dst` either way.
///
/// SAFETY: `dst` is valid for writes of a `T`.
#[inline(always)]
pub(crate) unsafe fn probe_read<T>(dst: *mut T, src: u64) {
    // SAFETY: the helper checks `src` itself (a fault zeroes `dst`); `dst` is the
    // caller's promise.
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
pub(crate) unsafe fn zero_words<T>(p: *mut T) {
    let words = p as *mut u64;
    let mut i = 0;
    while i < core::mem::size_of::<T>() / 8 {
        // SAFETY: within the `T` at `p` (the caller's promise), word aligned.
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
pub(crate) fn tp_read_into<T: Plain>(dst: &mut T, ctx: &TracePointContext, off: u16) {
    if off != NO_FIELD {
        rd_into(dst, ctx.as_ptr() as u64, off as u64)
    }
}

/// Copies a 16-byte `comm` or address between two 8-byte aligned places as two
/// words (a `[u8; 16]` assignment is a `memmove` call on BPF).
#[inline(always)]
pub(crate) fn copy16(dst: &mut [u8; 16], src: &[u8; 16]) {
    let (d, s) = (dst.as_mut_ptr() as *mut u64, src.as_ptr() as *const u64);
    // SAFETY: both arrays are at 8-byte aligned offsets of 8-aligned structs
    // (checked at compile time below).
    unsafe {
        d.write(s.read());
        d.add(1).write(s.add(1).read());
    }
}

/// Copies an owner into a map value as five words: `*dst = *src` there was a call to
/// compiler_builtins' byte-by-byte `memmove` subprogram (LLVM cannot tell the two
/// apart), ~300 instructions on a child's birth.
#[inline(always)]
pub(crate) fn copy_owner(dst: &mut Owner, src: &Owner) {
    let (d, s) = (
        dst as *mut Owner as *mut u64,
        src as *const Owner as *const u64,
    );
    let mut i = 0;
    while i < core::mem::size_of::<Owner>() / 8 {
        // SAFETY: both are whole, 8-aligned `Owner`s (asserted below); volatile
        // stores so that LLVM does not merge them back into a `memmove` call.
        unsafe { d.add(i).write_volatile(s.add(i).read()) };
        i += 1;
    }
}

const _: () = assert!(core::mem::size_of::<Owner>() % 8 == 0);

const _: () = assert!(core::mem::offset_of!(RawEvent, comm) % 8 == 0);

const _: () = assert!(core::mem::offset_of!(RawEvent, daddr) % 8 == 0);

const _: () = assert!(core::mem::offset_of!(PendingCall, daddr) % 8 == 0);

const _: () = assert!(core::mem::align_of::<PendingCall>() == 8);

const _: () = assert!(core::mem::offset_of!(Owner, comm) % 8 == 0);

const _: () = assert!(core::mem::align_of::<RawEvent>() == 8);

const _: () = assert!(core::mem::align_of::<Owner>() == 8);

/// A field of a classic tracepoint record (zero when absent on this kernel).
#[inline(always)]
pub(crate) fn tp_read<T: Plain>(ctx: &TracePointContext, off: u16) -> T {
    if off == NO_FIELD {
        // SAFETY: all zeroes is a valid `Plain` value.
        return unsafe { MaybeUninit::<T>::zeroed().assume_init() };
    }
    rd(ctx.as_ptr() as u64, off as u64)
}

/// The first four bytes of an address field (where an IPv4 address goes).
#[inline(always)]
pub(crate) fn v4_of(a: &mut [u8; 16]) -> &mut [u8; 4] {
    // SAFETY: a 16-byte array starts with 4 bytes; [u8; 4] has alignment 1.
    unsafe { &mut *(a.as_mut_ptr() as *mut [u8; 4]) }
}

/// Reads family, ports and addresses of a classic tracepoint record into `ev`.
#[inline(always)]
pub(crate) fn read_tuple(ctx: &TracePointContext, l: &TpLayout, ev: &mut RawEvent) {
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
pub(crate) fn read_any_sock_tuple(
    o: &KernelOffsets,
    h: &SockHead,
    state: u8,
    ev: &mut RawEvent,
) -> bool {
    if state == TCP_TIME_WAIT || state == TCP_NEW_SYN_RECV {
        if !read_common_tuple(o, h, ev) {
            return false;
        }
        ev.sport = h.get::<u16>(o.skc_num as u64);
        true
    } else {
        read_sock_tuple(o, h, ev)
    }
}

/// Family, remote port and addresses from `struct sock_common` (no local port).
#[inline(always)]
pub(crate) fn read_common_tuple(o: &KernelOffsets, h: &SockHead, ev: &mut RawEvent) -> bool {
    let family = h.get::<u16>(o.skc_family as u64);
    if family == 0 {
        // The read faulted (no socket has AF_UNSPEC here).
        return false;
    }
    ev.family = family as u8;
    ev.dport = u16::from_be(h.get::<u16>(o.skc_dport as u64));
    read_addrs(o, h, ev.family, &mut ev.saddr, &mut ev.daddr);
    ev.flags |= flags::HAS_TUPLE;
    true
}

/// Local and remote address of a socket (`sock_common`), IPv4 in the first four bytes.
#[inline(always)]
pub(crate) fn read_addrs(
    o: &KernelOffsets,
    h: &SockHead,
    family: u8,
    saddr: &mut [u8; 16],
    daddr: &mut [u8; 16],
) {
    if family == AF_INET {
        h.get_v4(saddr, o.skc_rcv_saddr as u64);
        h.get_v4(daddr, o.skc_daddr as u64);
    } else {
        h.get_v6(saddr, o.skc_v6_rcv_saddr as u64);
        h.get_v6(daddr, o.skc_v6_daddr as u64);
    }
}

/// Reads family, ports and addresses from a `struct sock` (offsets from BTF).
#[inline(always)]
pub(crate) fn read_sock_tuple(o: &KernelOffsets, h: &SockHead, ev: &mut RawEvent) -> bool {
    if !read_common_tuple(o, h, ev) {
        return false;
    }
    // inet_sport (network order) keeps the local port after the socket leaves its
    // bind bucket, where skc_num is already 0 (docs/kernel-facts.md).
    ev.sport = u16::from_be(h.get::<u16>(o.inet_sport as u64));
    true
}

/// The local end of a `struct sock` (family already known).
#[inline(always)]
pub(crate) fn read_local(o: &KernelOffsets, sk: u64, ev: &mut RawEvent) {
    ev.sport = u16::from_be(rd::<u16>(sk, o.inet_sport as u64));
    if ev.family == AF_INET {
        rd_into(v4_of(&mut ev.saddr), sk, o.skc_rcv_saddr as u64);
    } else {
        rd_into(&mut ev.saddr, sk, o.skc_v6_rcv_saddr as u64);
    }
}

/// `current->files->fdt->fd[fd]->private_data->sk`, any kind of socket. The `struct
/// socket` is checked to point back at the same `struct file`, so a non-socket fd
/// (whose private_data is something else) is rejected. Neighbouring fields (`max_fds`
/// and `fd`, `file` and `sk`) are read in one call each.
#[inline(always)]
pub(crate) fn sk_of_fd(o: &KernelOffsets, fd: i64) -> Option<u64> {
    if o.valid == 0 || fd < 0 {
        return None;
    }
    // SAFETY: `bpf_get_current_task` takes no argument; every other read goes through
    // the helper (`rd`, `Window`).
    let task = unsafe { bpf_get_current_task() };
    // A faulting read gives 0, which fails the next check (max_fds 0, a NULL
    // file or socket, a back-pointer mismatch).
    let files: u64 = rd(task, o.task_files as u64);
    let fdt: u64 = rd(files, o.files_fdt as u64);
    let fdt_w = Window::<2>::read(fdt, o.fdt_max_fds as u64);
    let max_fds: u32 = fdt_w.get(o.fdt_max_fds as u64);
    if fd as u64 >= max_fds as u64 {
        return None;
    }
    let fd_array: u64 = fdt_w.get(o.fdt_fd as u64);
    let file: u64 = rd(fd_array, (fd as u64) * 8);
    if file == 0 {
        return None;
    }
    let socket: u64 = rd(file, o.file_private_data as u64);
    if socket == 0 {
        return None;
    }
    let socket_w = Window::<2>::read(socket, o.socket_file as u64);
    let back: u64 = socket_w.get(o.socket_file as u64);
    if back != file {
        return None;
    }
    let sk: u64 = socket_w.get(o.socket_sk as u64);
    (sk != 0).then_some(sk)
}

/// [`sk_of_fd`], for a TCP socket only (type and protocol checked), with the head of
/// its `sock_common` (one read of `sk_type` and `sk_protocol`).
#[inline(always)]
pub(crate) fn sock_of_fd(o: &KernelOffsets, fd: i64) -> Option<(u64, SockHead)> {
    let sk = sk_of_fd(o, fd)?;
    let first = if o.sk_type < o.sk_protocol {
        o.sk_type
    } else {
        o.sk_protocol
    };
    let sk_w = Window::<1>::read(sk, first as u64);
    let proto: u16 = sk_w.get(o.sk_protocol as u64);
    let ty: u16 = sk_w.get(o.sk_type as u64);
    if proto != IPPROTO_TCP || ty != SOCK_STREAM {
        return None;
    }
    let h = sock_head(sk);
    let family: u16 = h.get(o.skc_family as u64);
    if family as u8 != AF_INET && family as u8 != AF_INET6 {
        return None;
    }
    Some((sk, h))
}

/// `sk->__sk_common.skc_net.net->ns.inum`.
#[inline(always)]
pub(crate) fn netns_of(o: &KernelOffsets, sk: u64) -> u32 {
    if o.valid == 0 || sk == 0 {
        return 0;
    }
    let net = rd::<u64>(sk, o.skc_net as u64);
    net_inum(o, net)
}

/// As [`netns_of`], the `struct net` pointer taken from the socket's head.
#[inline(always)]
pub(crate) fn netns_of_head(o: &KernelOffsets, h: &SockHead) -> u32 {
    if o.valid == 0 {
        return 0;
    }
    net_inum(o, h.get::<u64>(o.skc_net as u64))
}

#[inline(always)]
fn net_inum(o: &KernelOffsets, net: u64) -> u32 {
    if net == 0 {
        return 0;
    }
    rd::<u32>(net, o.net_ns_inum as u64)
}

/// Sockets whose `sk_protocol` is not TCP (MPTCP subflows are TCP; SCTP is not).
#[inline(always)]
pub(crate) fn tcp_sock(o: &KernelOffsets, sk: u64) -> bool {
    o.valid != 0 && sk != 0 && rd::<u16>(sk, o.sk_protocol as u64) == IPPROTO_TCP
}

/// The tuple of a reset that answers segment `skb` with no socket: the segment's
/// destination is the local end, its source the remote one (IPv4 or IPv6 header at
/// `head + network_header`, TCP header at `head + transport_header`).
#[inline(always)]
pub(crate) fn read_skb_reply_tuple(o: &KernelOffsets, skb: u64, ev: &mut RawEvent) {
    if skb == 0 || o.skb_head == 0 {
        return;
    }
    {
        let head: u64 = rd(skb, o.skb_head as u64);
        let nh: u16 = rd(skb, o.skb_network_header as u64);
        let th: u16 = rd(skb, o.skb_transport_header as u64);
        if head == 0 {
            return;
        }
        let ip = head + nh as u64;
        let tcp = head + th as u64;
        let version = rd::<u8>(ip, 0) >> 4;
        if version == 4 {
            ev.family = AF_INET;
            rd_into(v4_of(&mut ev.daddr), ip, 12);
            rd_into(v4_of(&mut ev.saddr), ip, 16);
        } else if version == 6 {
            ev.family = AF_INET6;
            rd_into(&mut ev.daddr, ip, 8);
            rd_into(&mut ev.saddr, ip, 24);
        } else {
            return;
        }
        ev.dport = u16::from_be(rd::<u16>(tcp, 0));
        ev.sport = u16::from_be(rd::<u16>(tcp, 2));
    }
    ev.flags |= flags::HAS_TUPLE;
}
