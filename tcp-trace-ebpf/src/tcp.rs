//! `tcp:*` tracepoints: SYN-ACK and segment retransmits, resets sent and received.

use crate::books::step_book;
use crate::config::{
    LAYOUT_RECV_RESET, LAYOUT_RETRANSMIT, LAYOUT_SEND_RESET, LAYOUT_SYNACK, OFFSETS, books_on,
    opaque,
};
use crate::emit::{emit, new_event};
use crate::kread::{
    netns_of_head, read_accept_queue, read_any_sock_tuple, read_skb_reply_tuple, read_tuple,
    sock_head, tp_read,
};
use crate::maps::{in_slot, slot, slot_of};
use crate::owner::attribute;
use aya_ebpf::macros::btf_tracepoint;
use aya_ebpf::macros::raw_tracepoint;
use aya_ebpf::macros::tracepoint;
use aya_ebpf::programs::BtfTracePointContext;
use aya_ebpf::programs::RawTracePointContext;
use aya_ebpf::programs::TracePointContext;
use tcp_trace_common::NO_FIELD;
use tcp_trace_common::TpLayout;
use tcp_trace_common::kind;
use tcp_trace_common::tcp_state::NEW_SYN_RECV as TCP_NEW_SYN_RECV;
use tcp_trace_common::tcp_state::SYN_RECV as TCP_SYN_RECV;

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
pub(crate) fn sock_event(ctx: &TracePointContext, k: u8, l: &TpLayout) -> u32 {
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

/// tcp_retransmit_synack(sk = listener, req): the request sock starts with a
/// `struct sock_common` (`__req_common`), so the socket offsets apply; its local
/// port is `skc_num` (host order).
#[inline(always)]
pub(crate) fn synack_args(sk: u64, req: u64) {
    let o = opaque(&raw const OFFSETS);
    if o.valid == 0 {
        return;
    }
    in_slot(slot::SYNACK, |slot| {
        let Some(ev) = new_event(slot, kind::SYNACK_RETRANSMIT, sk, false) else {
            return;
        };
        ev.aux = req;
        ev.newstate = TCP_SYN_RECV;
        if req != 0 {
            read_any_sock_tuple(&o, &sock_head(req), TCP_NEW_SYN_RECV, ev);
        }
        read_accept_queue(ev, sk);
        attribute(ev, false);
        emit(ev);
    });
}

#[inline(always)]
pub(crate) fn sock_args(k: u8, sk: u64, skb: u64) {
    let o = opaque(&raw const OFFSETS);
    if o.valid == 0 {
        return;
    }
    if books_on() && sk != 0 && step_book(&o, k, sk) {
        return;
    }
    // A retransmit or reset in process context (the socket's backlog processed at
    // release_sock) can be interrupted by a softirq's on this CPU.
    in_slot(slot_of(k), |slot| {
        let Some(ev) = new_event(slot, k, sk, false) else {
            return;
        };
        // The reset reason is an extra argument only since 6.12; not read on this path.
        ev.aux = u64::MAX;
        if sk != 0 {
            let h = sock_head(sk);
            ev.newstate = h.get::<u8>(o.skc_state as u64);
            // tcp_send_reset may be called with a timewait or request sock.
            read_any_sock_tuple(&o, &h, ev.newstate, ev);
            attribute(ev, false);
            if ev.netns == 0 {
                // Owner unknown: the namespace from the head, as `emit` would read it.
                ev.netns = netns_of_head(&o, &h);
            }
        } else if k == kind::RESET_SENT {
            // A reset with no socket (to a port nobody listens on, a stale segment):
            // its tuple is the segment's it answers (the classic tracepoint fills it so
            // too).
            read_skb_reply_tuple(&o, skb, ev);
        }
        emit(ev);
    });
}

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
    |c| { sock_args(kind::RETRANSMIT, c.arg::<u64>(0), 0) }
);

both_paths!(
    btf_tcp_send_reset,
    raw_tcp_send_reset,
    "tcp_send_reset",
    |c| { sock_args(kind::RESET_SENT, c.arg::<u64>(0), c.arg::<u64>(1)) }
);

both_paths!(
    btf_tcp_receive_reset,
    raw_tcp_receive_reset,
    "tcp_receive_reset",
    |c| { sock_args(kind::RESET_RECEIVED, c.arg::<u64>(0), 0) }
);
