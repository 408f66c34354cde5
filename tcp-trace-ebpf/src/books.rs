//! The per-connection design: a socket's book, flushed into the ring at the
//! transitions a reader must see in time, and when full.

use crate::emit::{filter_miss, output};
use crate::klog::count_rare;
use crate::kread::{
    SockHead, accept_queue_of, copy_owner, isns_of, netns_of_head, rd, read_addrs, sock_head,
    zero_words,
};
use crate::maps::{
    BOOK_MAP, LISTENERS, OWNERS, book_of, book_to_start, count, forget_listener, listen_key,
    listener_entry, listener_of, note_connect,
};
use crate::owner::{owner_in, process_transition};
use aya_ebpf::helpers::bpf_get_current_pid_tgid;
use aya_ebpf::helpers::bpf_ktime_get_ns;
use tcp_trace_common::BOOK_STEPS;
use tcp_trace_common::ConnRecord;
use tcp_trace_common::KernelOffsets;
use tcp_trace_common::ListenerLink;
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

/// After these transitions the book leaves the kernel: a `connect()` return may follow
/// SYN_SENT and ESTABLISHED, an `accept()` return a child's ESTABLISHED (the reader
/// orders records by time only within a short window); CLOSE_WAIT may last (the
/// application has not closed: a leak is seen while it lasts); LISTEN names a listener
/// for its children; CLOSE ends the book.
#[inline(always)]
pub(crate) fn flush_after(new: u8) -> bool {
    new == TCP_SYN_SENT
        || new == TCP_ESTABLISHED
        || new == TCP_CLOSE_WAIT
        || new == TCP_CLOSE
        || new == TCP_LISTEN
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
    if b.nsteps == 0 {
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
pub(crate) fn state_book(o: &KernelOffsets, sk: u64, old: u8, new: u8, storage: bool) -> bool {
    let child = old == TCP_LISTEN && new == TCP_SYN_RECV;
    let start = child || (old == TCP_CLOSE && (new == TCP_SYN_SENT || new == TCP_LISTEN));
    let book = if start {
        book_to_start(sk)
    } else {
        book_of(sk, true)
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
            None => (listener_entry(&listen_key(b.owner.netns, b.sport)), 0),
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
    let (sflags, aux) = if task {
        (
            step_flags::TASK_CTX,
            (bpf_get_current_pid_tgid() >> 32) as u32,
        )
    } else {
        (0, 0)
    };
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
        let link = ListenerLink { sk, owner: b.owner };
        let _ = LISTENERS.insert(&listen_key(b.owner.netns, b.sport), &link, 0);
        if storage && let Some(l) = listener_of(sk, true) {
            *l = link;
        }
    }
    if new == TCP_CLOSE {
        b.flags |= book_flags::FINAL;
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
    if b.nsteps as usize == BOOK_STEPS {
        book_flush(o, sk, b, false);
    }
    true
}
