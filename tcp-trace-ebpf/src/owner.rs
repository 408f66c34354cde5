//! Who owns a socket: the current task where a hook runs in process context, else
//! the owner learned there.

use crate::config::{FILTER, OFFSETS, opaque};
use crate::kread::{copy16, netns_of};
use crate::maps::owner_entry;
use aya_ebpf::bindings::bpf_pidns_info;
use aya_ebpf::helpers::bpf_get_current_cgroup_id;
use aya_ebpf::helpers::bpf_get_current_pid_tgid;
use aya_ebpf::helpers::bpf_get_ns_current_pid_tgid;
use aya_ebpf::helpers::generated as helper;
use core::ffi::c_void;
use core::mem::MaybeUninit;
use core::ptr::read_volatile;
use tcp_trace_common::Owner;
use tcp_trace_common::RawEvent;
use tcp_trace_common::flags;
use tcp_trace_common::tcp_state::CLOSE_WAIT as TCP_CLOSE_WAIT;
use tcp_trace_common::tcp_state::ESTABLISHED as TCP_ESTABLISHED;
use tcp_trace_common::tcp_state::FIN_WAIT1 as TCP_FIN_WAIT1;
use tcp_trace_common::tcp_state::LAST_ACK as TCP_LAST_ACK;
use tcp_trace_common::tcp_state::LISTEN as TCP_LISTEN;
use tcp_trace_common::tcp_state::SYN_RECV as TCP_SYN_RECV;
use tcp_trace_common::tcp_state::SYN_SENT as TCP_SYN_SENT;

/// True for transitions that only happen inside a system call of the task that
/// owns the socket: connect() (CLOSE → SYN_SENT), listen() (CLOSE → LISTEN), and
/// close()/shutdown() sending the first FIN (ESTABLISHED|SYN_RECV → FIN_WAIT1,
/// CLOSE_WAIT → LAST_ACK). Everything else may run in softirq or a timer, where
/// the current task is whoever happened to be on the CPU. (The record's
/// `common_flags` would say, but they are not filled in for BPF programs.)
#[inline(always)]
pub(crate) fn process_transition(old: u8, new: u8) -> bool {
    new == TCP_SYN_SENT
        || new == TCP_LISTEN
        || (new == TCP_FIN_WAIT1 && (old == TCP_ESTABLISHED || old == TCP_SYN_RECV))
        || (new == TCP_LAST_ACK && old == TCP_CLOSE_WAIT)
}

#[inline(always)]
pub(crate) fn current_owner() -> Owner {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: fields of a static of the object, valid for reads.
    let (dev, ino) = unsafe {
        (
            read_volatile(&FILTER.pidns_dev),
            read_volatile(&FILTER.pidns_ino),
        )
    };
    let mut ns_tgid = 0;
    if ino != 0 {
        // The owner as tcp-trace's own pid namespace sees it (-EINVAL: outside it).
        let mut info = bpf_pidns_info { pid: 0, tgid: 0 };
        // SAFETY: `info` is a local of the size passed.
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
    // SAFETY: `comm` is 16 bytes, which the helper writes whole.
    unsafe { helper::bpf_get_current_comm(comm.as_mut_ptr() as *mut c_void, 16) };
    Owner {
        tgid: (pid_tgid >> 32) as u32,
        pid: pid_tgid as u32,
        // SAFETY: written whole above.
        comm: unsafe { comm.assume_init() },
        // SAFETY: a helper without arguments.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        ns_tgid,
        netns: 0,
    }
}

#[inline(always)]
pub(crate) fn set_owner(ev: &mut RawEvent, o: &Owner, extra: u16) {
    ev.owner_tgid = o.tgid;
    ev.owner_pid = o.pid;
    copy16(&mut ev.comm, &o.comm);
    ev.cgroup_id = o.cgroup_id;
    ev.ns_pid = o.ns_tgid;
    ev.netns = o.netns;
    ev.flags |= flags::OWNER_KNOWN | extra;
}

/// The current task as the owner of `sk` (netns read once, here).
#[inline(always)]
pub(crate) fn owner_of(sk: u64) -> Owner {
    let off = opaque(&raw const OFFSETS);
    owner_in(netns_of(&off, sk))
}

/// The current task as the owner of a socket in network namespace `netns`.
#[inline(always)]
pub(crate) fn owner_in(netns: u32) -> Owner {
    let mut o = current_owner();
    o.netns = netns;
    o
}

/// Fills the owner of `skaddr`: the owner map, else (task context) the current task.
#[inline(always)]
pub(crate) fn attribute(ev: &mut RawEvent, task: bool) {
    if let Some(o) = owner_entry(ev.skaddr) {
        set_owner(ev, &o, 0);
    } else if task {
        let o = current_owner();
        set_owner(ev, &o, 0);
    }
}
