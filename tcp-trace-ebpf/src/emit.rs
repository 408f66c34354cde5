//! The per-event design's records: built in per-CPU scratch, filtered, put into the
//! ring.

use crate::config::{FILTER, OFFSETS, WAKEUP_BYTES, opaque};
use crate::kread::{netns_of, zero_words};
use crate::maps::{EVENTS, SCRATCH, count};
use aya_ebpf::bindings::BPF_RB_FORCE_WAKEUP;
use aya_ebpf::bindings::BPF_RB_NO_WAKEUP;
use aya_ebpf::helpers::bpf_get_current_pid_tgid;
use aya_ebpf::helpers::bpf_ktime_get_ns;
use core::ptr::read_volatile;
use tcp_trace_common::RawEvent;
use tcp_trace_common::counter;
use tcp_trace_common::flags;

/// In-kernel volume filters. `tgid` is the resolved owner (0 = unknown).
#[inline(always)]
pub(crate) fn filtered_out(ev: &RawEvent) -> bool {
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
pub(crate) fn filter_miss(
    family: u8,
    tgid: u32,
    ns_pid: u32,
    cgroup_id: u64,
    sport: u16,
    dport: u16,
) -> bool {
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
pub(crate) const RECORD_BYTES: u64 = core::mem::size_of::<RawEvent>() as u64 + 8;

#[inline(always)]
pub(crate) fn emit(ev: &mut RawEvent) {
    if ev.skaddr != 0 && ev.netns == 0 {
        // Owner unknown (or a syscall return): read it from the socket.
        let o = opaque(&raw const OFFSETS);
        ev.netns = netns_of(&o, ev.skaddr);
    }
    if filtered_out(ev) {
        count(counter::FILTERED);
        return;
    }
    // SAFETY: a helper without arguments.
    ev.ts_ns = unsafe { bpf_ktime_get_ns() };
    output(&*ev, RECORD_BYTES);
}

/// Puts `rec` (`bytes` with the ring's header) into the ring, waking the reader only
/// when this record takes the backlog past `WAKEUP_BYTES`.
#[inline(always)]
pub(crate) fn output<T>(rec: &T, bytes: u64) {
    // SAFETY: a static of the object, valid for reads.
    let threshold = unsafe { read_volatile(&WAKEUP_BYTES) };
    let avail = EVENTS.query(aya_ebpf::bindings::BPF_RB_AVAIL_DATA as u64);
    let flags = if avail < threshold && avail + bytes >= threshold {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    match EVENTS.output::<T>(rec, flags as u64) {
        Ok(()) => {
            count(counter::SUBMITTED);
        }
        Err(_) => {
            count(counter::RINGBUF_FULL);
        }
    }
}

/// A zeroed event in `slot`, with its kind, socket and context filled in.
#[inline(always)]
pub(crate) fn new_event(
    slot: u32,
    kind: u8,
    skaddr: u64,
    task: bool,
) -> Option<&'static mut RawEvent> {
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
