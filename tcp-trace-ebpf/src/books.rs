//! The per-connection design: a socket's book, flushed into the ring at the
//! transitions a reader must see in time, and when full.

use crate::emit::{filter_miss, output};
use crate::klog::count_rare;
use crate::kread::{
    SockHead, accept_queue_of, copy_owner, isns_of, netns_of_head, rd, read_addrs, sock_head,
    zero_words,
};
use crate::maps::{
    BOOK_MAP, OWNERS, book_of, book_to_start, count, forget_listener, listen_key, listener_entry,
    listener_of, note_connect, note_listener, sole_listener,
};
use crate::owner::{owner_in, process_transition};
use aya_ebpf::helpers::bpf_get_current_pid_tgid;
use aya_ebpf::helpers::bpf_ktime_get_ns;
use core::ptr::{read_volatile, write_volatile};
use tcp_trace_common::BOOK_STEPS;
use tcp_trace_common::ConnRecord;
use tcp_trace_common::KernelOffsets;
use tcp_trace_common::Owner;
use tcp_trace_common::book_flags;
use tcp_trace_common::counter;
use tcp_trace_common::kind;
use tcp_trace_common::step_flags;
use tcp_trace_common::tcp_state::CLOSE as TCP_CLOSE;
use tcp_trace_common::tcp_state::CLOSE_WAIT as TCP_CLOSE_WAIT;
use tcp_trace_common::tcp_state::ESTABLISHED as TCP_ESTABLISHED;
use tcp_trace_common::tcp_state::LISTEN as TCP_LISTEN;
use tcp_trace_common::tcp_state::SYN_RECV as TCP_SYN_RECV;
use tcp_trace_common::tcp_state::SYN_SENT as TCP_SYN_SENT;

/// After these transitions the book leaves the kernel: ESTABLISHED shows an open
/// connection while it lasts (a connection may live for days); CLOSE_WAIT may last (the
/// application has not closed: a leak is seen while it lasts); LISTEN names a listener
/// for its children; CLOSE ends the book. `connect()` and `accept()` returns wait in
/// the book's return slot (see [`book_return`]), so SYN_SENT is not flushed: a client's
/// first record leaves at ESTABLISHED, at CLOSE (refused) or at its first SYN
/// retransmit (a slow connect shows at once).
#[inline(always)]
pub(crate) fn flush_after(new: u8) -> bool {
    new == TCP_ESTABLISHED || new == TCP_CLOSE_WAIT || new == TCP_CLOSE || new == TCP_LISTEN
}

/// A full memory barrier: an atomic add on the book's `ret.sync` (BPF's atomic add,
/// a locked instruction on x86). Between a store and a load that must not pass it, on
/// both sides of the slot protocol in [`book_return`]. Inline assembly: the BPF target
/// has no atomic read-modify-write in `core::sync::atomic` (no compare-and-swap).
#[inline(always)]
fn barrier(b: &mut ConnRecord) {
    // SAFETY: a u64 of a map value, 8-byte aligned, valid while the program runs; the
    // instruction adds 1 to it and touches nothing else.
    unsafe {
        core::arch::asm!(
            "lock *(u64 *)({p} + 0) += {v}",
            p = in(reg) &raw mut b.ret.sync,
            v = in(reg) 1u64,
            options(nostack),
        )
    };
}

/// A `connect()`/`accept()` return into the book of `sk`, written by the syscall's
/// exit, which runs without the socket lock: true when the book will report it. False
/// when it may not: the book is closed or not this socket's, the slot is taken (a
/// second return before a flush), or a CLOSE flush on another CPU may have read the
/// slot before this write. The caller then reports the return as an event of its own;
/// the book may report it too (the reader keeps one).
///
/// The protocol with [`book_flush`]: the exit writes every field, then `ts_ns`, then
/// a barrier, then reads `flags`; a closing flush sets FINAL, then a barrier, then
/// reads `ts_ns`. One of the two sees the other's write, so a return is never lost.
#[inline(always)]
pub(crate) fn book_return(
    b: &mut ConnRecord,
    sk: u64,
    k: u8,
    ret: i64,
    fd: i32,
    rflags: u8,
    owner: &Owner,
) -> bool {
    // SAFETY: fields of a map value, valid while the program runs; volatile because
    // another CPU may change them meanwhile.
    unsafe {
        if read_volatile(&raw const b.skaddr) != sk
            || read_volatile(&raw const b.flags) & book_flags::FINAL != 0
            || read_volatile(&raw const b.ret.ts_ns) != 0
        {
            return false;
        }
    }
    b.ret.sk = sk;
    b.ret.ret = ret as i32;
    b.ret.fd = fd;
    b.ret.kind = k;
    b.ret.flags = rflags;
    copy_owner(&mut b.ret.owner, owner);
    // SAFETY: as above.
    unsafe { write_volatile(&raw mut b.ret.ts_ns, bpf_ktime_get_ns()) };
    barrier(b);
    // SAFETY: as above.
    unsafe {
        read_volatile(&raw const b.skaddr) == sk
            && read_volatile(&raw const b.flags) & book_flags::FINAL == 0
    }
}

/// Family, ports and addresses of a socket (`h`: the head of its `sock_common`) into
/// its book; kept as they were when the socket no longer has a remote port (a failed
/// connect() is disconnected).
#[inline(always)]
pub(crate) fn book_tuple(o: &KernelOffsets, h: &SockHead, b: &mut ConnRecord) {
    let family = h.get::<u16>(o.skc_family as u64) as u8;
    let dport = u16::from_be(h.get::<u16>(o.skc_dport as u64));
    if family == 0 || (dport == 0 && b.flags & book_flags::HAS_TUPLE != 0) {
        return;
    }
    b.family = family;
    b.dport = dport;
    b.sport = u16::from_be(h.get::<u16>(o.inet_sport as u64));
    read_addrs(o, h, family, &mut b.saddr, &mut b.daddr);
    b.flags |= book_flags::HAS_TUPLE;
}

/// Appends a step; false when the book is full (the caller flushes first).
#[inline(always)]
pub(crate) fn book_step(b: &mut ConnRecord, k: u8, old: u8, new: u8, sflags: u8, aux: u32) -> bool {
    let n = b.nsteps as usize;
    let Some(st) = b.steps.get_mut(n) else {
        return false;
    };
    // SAFETY: a helper without arguments.
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
pub(crate) fn book_flush(o: &KernelOffsets, sk: u64, b: &mut ConnRecord, fresh: bool) {
    // SAFETY: a field of a map value; the syscall exit may write it meanwhile.
    if b.nsteps == 0 && unsafe { read_volatile(&raw const b.ret.ts_ns) } == 0 {
        return;
    }
    if !fresh && (b.sport == 0 || b.dport == 0) {
        // Not complete yet (a client's local port comes after SYN_SENT, a child's
        // remote end before 6.15 after its birth): read again, unless this very hook
        // run read it (a client's SYN_SENT: five reads that cannot find more).
        book_tuple(o, &sock_head(sk), b);
    }
    let tgid = if b.flags & book_flags::OWNER_KNOWN != 0 {
        b.owner.tgid
    } else {
        0
    };
    // A return in the slot as this flush finds it, said in the record (its slot is whole:
    // see `book_flags::RETURN_SEEN`) and emptied after the record left (one written
    // meanwhile stays for the next flush; see `book_return`).
    // SAFETY: a field of a map value; the syscall exit may write it meanwhile.
    if unsafe { read_volatile(&raw const b.ret.ts_ns) } != 0 {
        b.flags |= book_flags::RETURN_SEEN;
    }
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
    if b.flags & book_flags::RETURN_SEEN != 0 {
        b.flags &= !book_flags::RETURN_SEEN;
        // SAFETY: as above.
        unsafe { write_volatile(&raw mut b.ret.ts_ns, 0) };
    }
    b.seq += 1;
    b.nsteps = 0;
}

/// A transition in the per-connection design, into `found` (the book of `sk`, looked up
/// by the caller) or a new book. False when the socket has no book (the kernel could not
/// allocate one): the caller reports the event on its own.
#[inline(always)]
pub(crate) fn state_book(
    o: &KernelOffsets,
    sk: u64,
    old: u8,
    new: u8,
    storage: bool,
    found: Option<&'static mut ConnRecord>,
) -> bool {
    let child = old == TCP_LISTEN && new == TCP_SYN_RECV;
    let start = child || (old == TCP_CLOSE && (new == TCP_SYN_SENT || new == TCP_LISTEN));
    // None found: a new one (a socket's life starts, or one from before the trace makes
    // its first transition in it); one found at a start: left by a socket whose CLOSE
    // was not seen (flushed below).
    let book = match found {
        Some(b) => Some(b),
        None => book_to_start(sk),
    };
    let Some(b) = book else {
        // Not the socket's address: in a tp_btf program it is a pointer to the
        // verifier, which refuses the byte shifts of a log argument.
        count_rare!(
            counter::BOOKS_FULL,
            "book map full (--book-entries): a transition {} -> {} reported as an event of its own ({} on this CPU)",
            old,
            new
        );
        return false;
    };
    let task = process_transition(old, new);
    if start && b.skaddr != 0 {
        // A book left under this address by a socket whose CLOSE was not seen (the
        // kernel skipped the hook): out with what it holds, then a new one.
        book_flush(o, sk, b, false);
        // SAFETY: 8-byte aligned map value; all zeroes is a valid ConnRecord.
        unsafe { zero_words(b as *mut ConnRecord) };
    }
    let fresh = b.skaddr == 0;
    if fresh {
        b.skaddr = sk;
        // The namespace travels in the owner, and is the socket's even while the
        // owner is not known: `b.owner.netns` is the socket's from here on (an owner
        // from its listener is in the same namespace).
        let h = sock_head(sk);
        b.owner.netns = netns_of_head(o, &h);
        book_tuple(o, &h, b);
    }
    if task && (new == TCP_SYN_SENT || new == TCP_LISTEN || b.flags & book_flags::OWNER_KNOWN == 0)
    {
        b.owner = owner_in(b.owner.netns);
        b.flags = (b.flags | book_flags::OWNER_KNOWN) & !book_flags::OWNER_FROM_LISTENER;
    } else if b.flags & book_flags::OWNER_KNOWN == 0
        && (child || new == TCP_SYN_RECV || new == TCP_ESTABLISHED)
    {
        // A child born in softirq: its listener's process owns it until accept().
        // The listener it was cloned from (socket storage), else the one on its
        // namespace and port.
        let inherited = if child && storage {
            listener_of(sk, false).map(|l| *l).filter(|l| l.sk != 0)
        } else {
            None
        };
        let (link, exact) = match inherited {
            Some(l) => (Some(l), book_flags::LISTENER_EXACT),
            None => {
                let l = listener_entry(&listen_key(b.owner.netns, b.sport));
                let exact = match &l {
                    Some(l) if child && sole_listener(l, storage) => book_flags::LISTENER_EXACT,
                    _ => 0,
                };
                (l, exact)
            }
        };
        if let Some(l) = link {
            copy_owner(&mut b.owner, &l.owner);
            b.flags |= book_flags::OWNER_KNOWN | book_flags::OWNER_FROM_LISTENER | exact;
            if child {
                b.listener = l.sk;
                if l.sk != 0 && o.valid != 0 {
                    (b.aq_len, b.aq_max) = accept_queue_of(o, l.sk);
                    b.flags |= book_flags::ACCEPT_QUEUE;
                }
            }
        }
    }
    if new == TCP_ESTABLISHED && (old == TCP_SYN_SENT || old == TCP_SYN_RECV) && o.tcp_snd_una != 0
    {
        (b.isn_local, b.isn_remote) = isns_of(o, sk);
        b.flags |= book_flags::ISN;
    }
    let (mut sflags, aux) = if task {
        (
            step_flags::TASK_CTX,
            (bpf_get_current_pid_tgid() >> 32) as u32,
        )
    } else {
        (0, 0)
    };
    // connect() picks the local port after SYN_SENT (the only transition a socket
    // makes before it has one): the book's tuple, read at its flush, is not this
    // step's.
    if new == TCP_SYN_SENT && b.sport == 0 {
        sflags |= step_flags::NO_LOCAL_PORT;
    }
    if !book_step(b, kind::STATE, old, new, sflags, aux) {
        book_flush(o, sk, b, fresh);
        book_step(b, kind::STATE, old, new, sflags, aux);
    }

    // What the per-event design does around a transition, for the other hooks.
    if task && new == TCP_SYN_SENT {
        note_connect(sk, b.dport, b.family, &b.daddr);
    }
    if task && new == TCP_LISTEN {
        // A listener's SYN-ACK retransmits are reported event by event (their request
        // socks have no book) and take their owner from OWNERS.
        let _ = OWNERS.insert(&sk, &b.owner, 0);
        if let Some(link) = note_listener(sk, &b.owner, b.sport, storage)
            && let Some(l) = listener_of(sk, true)
        {
            *l = link;
        }
    }
    if new == TCP_CLOSE {
        b.flags |= book_flags::FINAL;
        // Before the flush reads the return slot (see `book_return`).
        barrier(b);
    }
    if flush_after(new) || b.nsteps as usize == BOOK_STEPS {
        book_flush(o, sk, b, fresh);
    }
    if new == TCP_CLOSE {
        // The address may be a new socket's next: an owner left here (a listener's, an
        // accepted child's) would be taken for it. Removed as the per-event design
        // does; an accept() on a map that fills with stale children also paid an LRU
        // eviction on every insert (350–500 ns).
        let _ = OWNERS.remove(&sk);
        if old == TCP_LISTEN {
            // Only this socket's entry: matching by owner too, as the per-event design
            // does, made a SO_REUSEPORT test lose its children's listener (not yet
            // understood).
            forget_listener(b.owner.netns, b.sport, sk, None);
        }
        // Back to the free list; the address may be a new socket's next.
        let _ = BOOK_MAP.remove(&sk);
    }
    true
}

/// A retransmit or reset on a socket with a book: a step in it. False when `sk` has
/// none (a request or timewait sock, a socket from before the trace, a closed one).
#[inline(always)]
pub(crate) fn step_book(o: &KernelOffsets, k: u8, sk: u64) -> bool {
    let Some(b) = book_of(sk, false) else {
        return false;
    };
    if b.skaddr == 0 || b.flags & book_flags::FINAL != 0 {
        // No book yet, or closed: a reset sent after CLOSE (an abortive close sets
        // CLOSE first) would wait for a flush that never comes; it goes on its own.
        return false;
    }
    let state = rd::<u8>(sk, o.skc_state as u64);
    let aux = if k == kind::RESET_SENT { u32::MAX } else { 0 };
    if !book_step(b, k, 0, state, 0, aux) {
        book_flush(o, sk, b, false);
        book_step(b, k, 0, state, 0, aux);
    }
    // A SYN retransmit: a connect that waits for an answer shows now, not when it ends.
    if b.nsteps as usize == BOOK_STEPS || (k == kind::RETRANSMIT && state == TCP_SYN_SENT) {
        book_flush(o, sk, b, false);
    }
    true
}
