//! `sock:inet_sock_set_state`, on the three attach paths (classic tracepoint,
//! tp_btf, raw), with the `_nested` twins that report the runs the kernel skips.

use crate::books::state_book;
use crate::config::{LAYOUT_SET_STATE, OFFSETS, books_on, opaque};
use crate::emit::{emit, new_event};
use crate::klog::count_rare;
use crate::kread::{
    netns_of, read_accept_queue, read_isns, read_sock_tuple, read_tuple, sock_head, tcp_sock,
    tp_read,
};
use crate::maps::{
    OWNERS, SLOT_BUSY, STATE_HANDLED, STATE_HANDLED_HITS, STATE_HANDLED_SEARCH, book_of, count,
    forget_listener, hit_states, listen_key, listener_entry, listener_of, note_connect,
    note_listener, owner_entry, slot, sole_listener,
};
use crate::owner::{owner_of, process_transition, set_owner};
use aya_ebpf::macros::btf_tracepoint;
use aya_ebpf::macros::raw_tracepoint;
use aya_ebpf::macros::tracepoint;
use aya_ebpf::programs::BtfTracePointContext;
use aya_ebpf::programs::RawTracePointContext;
use aya_ebpf::programs::TracePointContext;
use tcp_trace_common::IPPROTO_TCP;
use tcp_trace_common::ListenerLink;
use tcp_trace_common::RawEvent;
use tcp_trace_common::counter;
use tcp_trace_common::flags;
use tcp_trace_common::kind;
use tcp_trace_common::tcp_state::CLOSE as TCP_CLOSE;
use tcp_trace_common::tcp_state::ESTABLISHED as TCP_ESTABLISHED;
use tcp_trace_common::tcp_state::LISTEN as TCP_LISTEN;
use tcp_trace_common::tcp_state::SYN_RECV as TCP_SYN_RECV;
use tcp_trace_common::tcp_state::SYN_SENT as TCP_SYN_SENT;

/// TCP_ESTABLISHED (1) … TCP_NEW_SYN_RECV (12), the states a TCP socket can have.
#[inline(always)]
fn tcp_state_number(s: i32) -> bool {
    (1..=12).contains(&s)
}

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
    let oldstate = tp_read::<i32>(&ctx, l.oldstate);
    let newstate = tp_read::<i32>(&ctx, l.newstate);
    if !tcp_state_number(oldstate) || !tcp_state_number(newstate) {
        // Read through the tracefs format's offsets: a state no TCP socket has says
        // the layout was read wrong. Reported as read (userspace names it unknown).
        count_rare!(
            counter::LAYOUT_SUSPECT,
            "sock:inet_sock_set_state: states {} -> {} read at offsets {}/{} are not TCP states: the tracepoint's layout does not match ({} on this CPU)",
            oldstate,
            newstate,
            l.oldstate,
            l.newstate
        );
    }
    let (oldstate, newstate) = (oldstate as u8, newstate as u8);
    let task = process_transition(oldstate, newstate);
    let Some(ev) = new_event(slot::STATE, kind::STATE, skaddr, task) else {
        return 0;
    };
    ev.oldstate = oldstate;
    ev.newstate = newstate;
    read_tuple(&ctx, &l, ev);
    on_state(ev, task, None, false);
    0
}

/// What every attach path does with a TCP state transition once its fields are read.
///
/// Returns the link to write into a new listener's socket storage, if it needs one
/// (see `note_listener`; only with `storage`).
#[inline(always)]
pub(crate) fn on_state(
    ev: &mut RawEvent,
    task: bool,
    inherited: Option<ListenerLink>,
    storage: bool,
) -> Option<ListenerLink> {
    let skaddr = ev.skaddr;
    let child = ev.oldstate == TCP_LISTEN && ev.newstate == TCP_SYN_RECV;
    let mut needs_storage = None;
    let known = if child {
        // A new socket: an owner under its address is a stale one of a freed socket.
        None
    } else {
        owner_entry(skaddr)
    };
    match known {
        // connect() and listen() run in the owner's task and (re)start a socket's
        // life: bind the owner there, overriding any stale entry for a reused address.
        _ if task && (ev.newstate == TCP_SYN_SENT || ev.newstate == TCP_LISTEN) => {
            let o = owner_of(skaddr);
            let _ = OWNERS.insert(&skaddr, &o, 0);
            if ev.newstate == TCP_LISTEN {
                needs_storage = note_listener(skaddr, &o, ev.sport, storage);
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
                        let l = listener_entry(&listen_key(netns, ev.sport));
                        let exact = match &l {
                            Some(l) if child && sole_listener(l, storage) => flags::LISTENER_EXACT,
                            _ => 0,
                        };
                        (l, exact)
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
        note_connect(skaddr, ev.dport, ev.family, &ev.daddr);
    }

    emit(ev);

    if ev.newstate == TCP_CLOSE {
        // The address may be reused by a new socket: forget this one's owner.
        let _ = OWNERS.remove(&skaddr);
        if ev.oldstate == TCP_LISTEN {
            forget_listener(ev.netns, ev.sport, skaddr, Some(ev.owner_tgid));
        }
    }
    needs_storage
}

#[inline(always)]
pub(crate) fn state_args(slot: u32, sk: u64, old: u64, new: u64, storage: bool) {
    let o = opaque(&raw const OFFSETS);
    // A socket with a book is a TCP socket: its book was made after this check (a read
    // of kernel memory per hit otherwise, ~8 of the ~10 per connection).
    let found = if books_on() { book_of(sk, false) } else { None };
    if found.is_none() && !tcp_sock(&o, sk) {
        return;
    }
    let (old, new) = (old as u8, new as u8);
    if books_on() && state_book(&o, sk, old, new, storage, found) {
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
    read_sock_tuple(&o, &sock_head(sk), ev);
    // listen() of a listener that shares its (namespace, port): what every child of
    // this socket will inherit.
    if let Some(link) = on_state(ev, task, inherited, storage)
        && let Some(l) = listener_of(sk, true)
    {
        *l = link;
    }
}

/// Says the main program ran for this transition (see `STATE_HANDLED`).
#[inline(always)]
fn handled(sk: u64, old: u64, new: u64) {
    // An index in range of a per-CPU array: never missing.
    let Some(h) = STATE_HANDLED.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's entry of a per-CPU array, valid while the program runs; a
    // nested run on this CPU completes before the interrupted one resumes.
    let h = unsafe { &mut *h };
    let mut top = h.top as usize;
    if top >= STATE_HANDLED_HITS {
        // Full. Entries a twin will never look for gather at the bottom (a twin the
        // kernel skipped in the instants after another one's last look); the ones
        // still awaited are the newest. The lower half goes, the upper half moves
        // down. (Wrapping to the bottom, as before, hid an awaited entry under the
        // new one: that transition was reported twice, about once per 2 s storm.)
        for k in 0..STATE_HANDLED_HITS / 2 {
            h.hits[k] = h.hits[k + STATE_HANDLED_HITS / 2];
        }
        top = STATE_HANDLED_HITS / 2;
    }
    let top = top & (STATE_HANDLED_HITS - 1);
    if let Some(hit) = h.hits.get_mut(top) {
        hit.sk = sk;
        hit.states = hit_states(old, new);
    }
    h.top = top as u64 + 1;
}

/// The main state program: `in_slot`'s busy flag, then it says it ran (see
/// `STATE_HANDLED`; last, so that nothing the verifier walks comes after it).
///
/// One call of `state_args`, on one path: the verifier walks what follows a branch
/// once per way into it that it cannot prove equal, so a second call for the nested
/// run (its own scratch slot) and a flag pointer that was null on one way and not on
/// the other each had it walk the whole transition again. The nested run's slot is
/// picked before the call, and the flag is put back to what it was after it (1 for a
/// nested run, 0 otherwise). Written out rather than through `in_slot`'s closure:
/// that way LLVM outlined `state_args` into a subprogram that read a stack slot it
/// had not written on every path, which 5.10's verifier refuses (tried in session 7;
/// docs/kernel-facts.md, "Older verifiers refuse what LLVM may lay out").
#[inline(always)]
pub(crate) fn state_outer(sk: u64, old: u64, new: u64, storage: bool) {
    // An index in range of a per-CPU array: never missing.
    let Some(busy) = SLOT_BUSY.get_ptr_mut(slot::STATE) else {
        return;
    };
    // SAFETY: this CPU's entry of a per-CPU array, valid while the program runs; a
    // nested run on this CPU completes before the interrupted one resumes.
    let was = unsafe { busy.read_volatile() };
    let mut at = slot::STATE;
    if was != 0 {
        // Nested in its own run on this CPU (a kernel without the raw/tp_btf
        // recursion guard): the second scratch copy. Counted as caught, as the twin
        // would have (that kernel reports no skips to take it from).
        count(counter::NESTED_CAUGHT);
        at = slot::STATE + slot::COUNT;
    }
    // SAFETY: as above.
    unsafe { busy.write_volatile(1) };
    state_args(at, sk, old, new, storage);
    // SAFETY: as above.
    unsafe { busy.write_volatile(was) };
    handled(sk, old, new);
}

/// The twin: reports the transition unless the main program said it ran for it.
#[inline(always)]
pub(crate) fn state_nested(sk: u64, old: u64, new: u64, storage: bool) {
    let Some(h) = STATE_HANDLED.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: as in `state_outer`.
    let h = unsafe { &mut *h };
    let states = hit_states(old, new);
    let top = h.top as usize;
    for d in 1..=STATE_HANDLED_SEARCH {
        // Masked as well as checked: 5.10's verifier refuses an index it cannot
        // bound on its own ("math between map_value pointer and register with
        // unbounded min value").
        let j = top.wrapping_sub(d) & (STATE_HANDLED_HITS - 1);
        if d <= top
            && let Some(hit) = h.hits.get(j)
            && hit.sk == sk
            && hit.states == states
        {
            h.top = j as u64;
            return;
        }
    }
    count(counter::NESTED_CAUGHT);
    h.base = top as u64;
    state_args(slot::STATE_NESTED, sk, old, new, storage);
    // What was pushed while this ran came from transitions that interrupted it: their
    // main programs ran and their twins, this one running, were skipped. Those
    // entries answer for no one; left, they would pile up under later entries and
    // make the stack overflow over a pending one (a transition reported twice).
    // Dropped. (Read back from the map: see `HandledHits::base`.)
    let Some(h) = STATE_HANDLED.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: as above.
    let h = unsafe { &mut *h };
    h.top = core::hint::black_box(h.base);
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
