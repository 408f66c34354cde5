//! The maps: the ring, counters, owners and listeners, calls in progress, per-CPU
//! scratch events, and the per-socket books and listener links.

use crate::kread::copy16;
use aya_ebpf::helpers::bpf_get_current_pid_tgid;
use aya_ebpf::helpers::generated as helper;
use aya_ebpf::macros::map;
use aya_ebpf::maps::HashMap;
use aya_ebpf::maps::LruHashMap;
use aya_ebpf::maps::PerCpuArray;
use aya_ebpf::maps::RingBuf;
use core::ffi::c_void;
use tcp_trace_common::BOOK_STEPS;
use tcp_trace_common::ConnRecord;
use tcp_trace_common::ListenKey;
use tcp_trace_common::ListenerLink;
use tcp_trace_common::Owner;
use tcp_trace_common::PendingCall;
use tcp_trace_common::RawEvent;
use tcp_trace_common::counter;
use tcp_trace_common::kind;
use tcp_trace_common::link_flags;

#[map]
pub(crate) static EVENTS: RingBuf = RingBuf::with_byte_size(8 * 1024 * 1024, 0);

#[map]
pub(crate) static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Socket → owning process, learned where a hook runs in the owner's task.
#[map]
pub(crate) static OWNERS: LruHashMap<u64, Owner> = LruHashMap::with_max_entries(65536, 0);

/// Network namespace and local port of a listening socket → its owner, so that a
/// child socket created in softirq (LISTEN → SYN_RECV) is attributed before accept()
/// returns. Keyed by namespace too: containers listen on the same ports.
#[map]
pub(crate) static LISTENERS: LruHashMap<ListenKey, ListenerLink> =
    LruHashMap::with_max_entries(4096, 0);

/// Socket local storage (`BPF_MAP_TYPE_SK_STORAGE`) with `BPF_F_CLONE`: written on a
/// listener at CLOSE → LISTEN when another listener already holds its (namespace,
/// port) in `LISTENERS` (see [`note_listener`]), and copied by the kernel into every
/// child it clones from that listener (`sk_clone_lock` → `bpf_sk_storage_clone`)
/// before the child's LISTEN → SYN_RECV. So a child knows the very listener it was
/// queued on, even in an SO_REUSEPORT group where the port names several. Only tp_btf
/// programs may use it (5.11+); it is freed with the socket. aya-ebpf's `SkStorage`
/// cannot set `BPF_F_CLONE`, so the BTF map definition is written out here in the
/// same shape.
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
pub(crate) static LISTENER_OF: SkStorageClone<ListenerLink> = SkStorageClone {
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
pub(crate) static BOOK_MAP: HashMap<u64, ConnRecord> = HashMap::with_max_entries(16384, 0);

/// An owner not known yet (all zeroes; `Default` is not const).
const NO_OWNER: Owner = Owner {
    tgid: 0,
    pid: 0,
    comm: [0; 16],
    cgroup_id: 0,
    ns_tgid: 0,
    netns: 0,
};

/// An empty book, copied into the map for a new socket.
pub(crate) static EMPTY_BOOK: ConnRecord = ConnRecord {
    seq: 0,
    nsteps: 0,
    family: 0,
    flags: 0,
    skaddr: 0,
    listener: 0,
    owner: NO_OWNER,
    sport: 0,
    dport: 0,
    aq_len: 0,
    aq_max: 0,
    isn_local: 0,
    isn_remote: 0,
    _pad: 0,
    saddr: [0; 16],
    daddr: [0; 16],
    ret: tcp_trace_common::BookReturn {
        ts_ns: 0,
        sk: 0,
        ret: 0,
        fd: 0,
        kind: 0,
        flags: 0,
        _pad: [0; 6],
        sync: 0,
        owner: NO_OWNER,
    },
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
pub(crate) fn book_of(sk: u64, create: bool) -> Option<&'static mut ConnRecord> {
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

/// The book of a socket whose life starts (connect(), listen(), a child's birth):
/// a new empty one, inserted without looking first (one lookup less than
/// `book_of`), or the one a socket whose CLOSE was not seen left under this address.
/// None when the map is full.
#[inline(always)]
pub(crate) fn book_to_start(sk: u64) -> Option<&'static mut ConnRecord> {
    const BPF_NOEXIST: u64 = 1;
    // Fails when a book is there already (-EEXIST): the lookup finds that one.
    let _ = BOOK_MAP.insert(&sk, &EMPTY_BOOK, BPF_NOEXIST);
    // SAFETY: as in `book_of`.
    BOOK_MAP
        .get_ptr_mut(&sk)
        .and_then(|p| unsafe { p.as_mut() })
}

/// The storage of `sk` in `LISTENER_OF`; created (zeroed) when `create`.
#[inline(always)]
pub(crate) fn listener_of(sk: u64, create: bool) -> Option<&'static mut ListenerLink> {
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

/// A listener at listen(): its (namespace, port) entry in `LISTENERS`. Returns the
/// link to write into the listener's socket storage (`LISTENER_OF`), if it needs one.
///
/// Without socket storage (`storage` false: 5.10, raw and classic attach) the entry
/// is the latest listener's, as it always was. With it, the first listener of a key
/// takes the entry, marked [`link_flags::SOLE`], and keeps it; only a later one on the
/// same key (an SO_REUSEPORT group, or an entry left by a listener from before the
/// start) gets storage. A child that inherits no storage then comes from the entry's
/// listener. Storage on every listener made the kernel clone it into every child (an
/// allocation charged to the memory cgroup) and free it with the child: under a FIN
/// storm of 32 k connections/s, `perf record -a` put 2.3 % of both cores' samples in
/// `bpf_sk_storage_clone` and `bpf_sk_storage_free` (~1.4 µs per connection, outside
/// the programs' own time, which bpf_stats does not see).
#[inline(always)]
pub(crate) fn note_listener(
    sk: u64,
    owner: &Owner,
    port: u16,
    storage: bool,
) -> Option<ListenerLink> {
    let key = listen_key(owner.netns, port);
    let mut link = ListenerLink {
        sk,
        owner: *owner,
        flags: 0,
        _pad: 0,
    };
    if !storage {
        let _ = LISTENERS.insert(&key, &link, 0);
        return None;
    }
    const BPF_NOEXIST: u64 = 1;
    link.flags = link_flags::SOLE;
    if LISTENERS.insert(&key, &link, BPF_NOEXIST).is_ok() {
        return None;
    }
    link.flags = 0;
    Some(link)
}

/// How exactly a child born without inherited storage knows its listener: exact when
/// socket storage is in use and the entry of its (namespace, port) is
/// [`link_flags::SOLE`] (see [`note_listener`]).
#[inline(always)]
pub(crate) fn sole_listener(l: &ListenerLink, storage: bool) -> bool {
    storage && l.flags & link_flags::SOLE != 0
}

#[inline(always)]
pub(crate) fn listen_key(netns: u32, port: u16) -> ListenKey {
    ListenKey {
        netns,
        port,
        _pad: 0,
    }
}

/// Thread → connect() in progress (fd at enter, socket at SYN_SENT). A plain hash
/// map, not an LRU one: an entry lives from a thread's syscall entry to its exit
/// (the exit hook runs for a thread killed in the call too), so nothing is left to
/// evict, and the LRU's list upkeep cost the enter hooks 60–170 ns of their 330–390
/// (bpf_stats, RST storm; docs/performance.md). Full (16384 threads inside connect()
/// at once): counted as `calls_full`.
#[map]
pub(crate) static CONNECTS: HashMap<u64, PendingCall> = HashMap::with_max_entries(16384, 0);

/// Thread → accept() in progress (listener fd); as `CONNECTS`.
#[map]
pub(crate) static ACCEPTS: HashMap<u64, PendingCall> = HashMap::with_max_entries(16384, 0);

#[inline(always)]
pub(crate) fn count(idx: u32) -> u64 {
    match COUNTERS.get_ptr_mut(idx) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        Some(c) => unsafe {
            *c += 1;
            *c
        },
        None => 0,
    }
}

/// Per-CPU scratch events, one per program: an event is built there rather than on
/// the 512-byte stack. (On the stack, LLVM zeroed it through calls to
/// compiler_builtins' byte-by-byte `memset` subprogram, which cost as much per hit
/// as the rest of the program: perf showed `bpf_prog_…_memset`.) One slot per
/// program because a program may be interrupted on its CPU by another one (a
/// syscall exit by a softirq's state transition), and on a kernel that runs BPF
/// programs preemptibly (7.2) by another task's run of another program: the three
/// syscall-exit tracepoint programs once shared a slot, and on 7.2 an `accept4()`
/// exit preempted on its CPU resumed in the slot a `connect()` exit had filled
/// meanwhile and sent that (the accept return was lost, the connect return came
/// twice with the server's owner). Newer kernels never run a raw or
/// tp_btf program again on a CPU where it is running; older ones (5.10) do: a
/// softirq's transition then runs the state program inside its own process-context
/// run. That nested run takes the slot's second copy (`slot + slot::COUNT`, see
/// `SLOT_BUSY`); before, it overwrote the event being built and the outer run sent a
/// copy of the inner one (a lost transition, seen under a storm on 5.10).
#[map]
pub(crate) static SCRATCH: PerCpuArray<RawEvent> =
    PerCpuArray::with_max_entries(2 * slot::COUNT, 0);

pub(crate) mod slot {
    pub const STATE: u32 = 0;
    pub const SYNACK: u32 = 1;
    pub const RETRANSMIT: u32 = 2;
    pub const RESET_SENT: u32 = 3;
    pub const RESET_RECEIVED: u32 = 4;
    /// `connect()`'s exit: the classic `sys_exit_connect` program (or the raw
    /// `sys_exit` one, which takes the three syscalls' slots by syscall).
    pub const CONNECT: u32 = 5;
    pub const STATE_NESTED: u32 = 6;
    /// `accept()`'s and `accept4()`'s exits: programs of their own on the classic
    /// tracepoint path, so slots of their own.
    pub const ACCEPT: u32 = 7;
    pub const ACCEPT4: u32 = 8;
    pub const COUNT: u32 = 9;
}

/// The scratch slot of the program that reports events of kind `k`.
#[inline(always)]
pub(crate) fn slot_of(k: u8) -> u32 {
    match k {
        kind::RETRANSMIT => slot::RETRANSMIT,
        kind::RESET_SENT => slot::RESET_SENT,
        _ => slot::RESET_RECEIVED,
    }
}

/// Per scratch slot, set on a CPU while a program using it runs there (`in_slot`):
/// a run that finds its slot busy is nested in another run of the same program on
/// this CPU (kernels without the raw/tp_btf recursion guard, 5.10) and builds its
/// event in the slot's second copy.
#[map]
pub(crate) static SLOT_BUSY: PerCpuArray<u32> = PerCpuArray::with_max_entries(slot::COUNT, 0);

/// The transitions the main state program ran for on this CPU whose twin has not
/// looked yet: a stack (`hits[..top]`), innermost last.
#[repr(C)]
pub(crate) struct HandledHits {
    pub top: u64,
    /// Where a twin that reports a transition found the top (what it puts back
    /// when done): kept here, not in a register, so that the verifier does not
    /// follow each way out of the search through the report separately.
    pub base: u64,
    pub hits: [Hit; STATE_HANDLED_HITS],
}

/// One transition: the socket's address and [`hit_states`]. Two words: in a tp_btf
/// program the address is a pointer to the verifier, which allows no arithmetic on
/// it.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct Hit {
    pub sk: u64,
    pub states: u64,
}

/// Room for the nesting a CPU can have (process context, softirq), and for the
/// transitions one softirq makes while a process-context twin waits to run (each of
/// them pushed above the waiting entry, their own twins skipped). Not for all of
/// them: a softirq that closed 34 clients' connections (68 transitions, 276 µs) right
/// as a twin was starting pushed its entry out, and that twin reported its transition
/// again (`caught_nested` above `state_skips` in the stats says so). 128 entries held
/// it, but the verifier then walked the twin 87 000 instructions (47 ms at start)
/// instead of 17 000.
pub(crate) const STATE_HANDLED_HITS: usize = 16;

/// How deep the twin looks: the whole stack. Its own entry can lie under as many
/// entries as a softirq made transitions while the twin was held up (a search two
/// deep reported the outer transition again — a client's CLOSE → SYN_SENT twice,
/// 35 µs apart, once in a few 2 s FIN storms; 68 seen since).
pub(crate) const STATE_HANDLED_SEARCH: usize = STATE_HANDLED_HITS;

/// How the `*_nested` twin of the state program, attached after it to the same
/// tracepoint, tells whether the main program ran for a transition. Newer kernels do
/// not run a program again on a CPU where it is already running (a softirq's
/// transition interrupting a process-context run: `recursion_misses`); the kernel
/// counts the program active from before its first instruction to after its last.
/// A flag the main program set in its body (the design before) left those edges
/// uncovered: a transition in a softirq that came during them was skipped and the
/// twin saw no flag (~7 % of the skips under a storm, reported as missing).
///
/// Now the main program pushes its transition (socket, states) here as it ends,
/// whatever the nesting, and the twin looks for its own from the top down through
/// the whole stack: found at `j`, the main program reported it, and the stack is cut
/// to `j` (what lies above was pushed by nested runs whose twins the kernel skipped:
/// a softirq's transitions while this twin was running or about to); not found, the
/// main program was skipped and the twin reports the transition. A nested
/// transition's runs end before the interrupted one resumes (the state tracepoint
/// runs its programs with preemption off, unlike 7.2's syscall tracepoints: see
/// `SCRATCH`), and a socket does not make the same transition twice at once, so an
/// outer run's entry never answers for an inner one.
///
/// An entry outlives its own twin only when that twin was skipped, inside an outer
/// twin's run: the outer twin's cut removes it when it came before the search, and
/// a twin that reported a transition puts the top back where it found it when done.
/// What a skipped twin leaves in the instants after another one's last store stays
/// (old entries a twin may match: a reused socket address making the same
/// transition with its main program skipped — counted as skipped, never silent).
/// Overflow keeps the newer half (the entries still awaited are the newest); an
/// awaited entry pushed out makes its twin report the transition twice, never lose
/// it (`caught_nested` above `state_skips`).
/// (Entries in a ring, overwritten oldest first, were tried: a softirq that made four
/// transitions between a main run and its twin overwrote the outer entry, and its
/// twin reported it again — 3 in a 4 s storm. A search two deep came next: the same
/// duplicate, rarer.)
#[map]
pub(crate) static STATE_HANDLED: PerCpuArray<HandledHits> = PerCpuArray::with_max_entries(1, 0);

/// A transition's two states in one word. From copies the compiler cannot see
/// through: otherwise it masks the program's own `old` and `new` in place, the
/// verifier then follows their exact values through every branch on them, and what
/// it walks grows by two thirds (the state program: 30 054 → 50 325 instructions,
/// start-up 20–40 ms later).
#[inline(always)]
pub(crate) fn hit_states(old: u64, new: u64) -> u64 {
    let (old, new) = (core::hint::black_box(old), core::hint::black_box(new));
    (1 << 16) | ((old & 0xff) << 8) | (new & 0xff)
}

/// Runs `f` with the scratch slot of this run: `slot`, or its second copy when a run
/// of the same program is already under way on this CPU (kernels that let a raw or
/// tp_btf program nest in itself). Returns whether it was nested.
#[inline(always)]
pub(crate) fn in_slot(slot: u32, f: impl FnOnce(u32)) -> bool {
    let Some(b) = SLOT_BUSY.get_ptr_mut(slot) else {
        f(slot);
        return false;
    };
    // SAFETY: this CPU's entry of a per-CPU array, valid while the program runs; a
    // nested run on this CPU completes before the interrupted one resumes.
    let was = unsafe { b.read_volatile() };
    if was != 0 {
        f(slot + slot::COUNT);
        return true;
    }
    // SAFETY: as above.
    unsafe { b.write_volatile(1) };
    f(slot);
    // SAFETY: as above.
    unsafe { b.write_volatile(0) };
    false
}

/// The owner recorded for `sk`, copied out of `OWNERS`.
#[inline(always)]
pub(crate) fn owner_entry(sk: u64) -> Option<Owner> {
    // SAFETY: the value is copied while the program runs, which keeps it alive; a
    // concurrent update from another CPU can at worst mix two owners of plain data,
    // which every reader takes as a hint (the correlator ranks owners by source).
    unsafe { OWNERS.get(&sk) }.copied()
}

/// The listener recorded for a (namespace, port), copied out of `LISTENERS`.
#[inline(always)]
pub(crate) fn listener_entry(key: &ListenKey) -> Option<ListenerLink> {
    // SAFETY: as in `owner_entry`.
    unsafe { LISTENERS.get(key) }.copied()
}

/// The call in progress of thread `id`, copied out of `CONNECTS` or `ACCEPTS`.
#[inline(always)]
pub(crate) fn pending_call(map: &HashMap<u64, PendingCall>, id: u64) -> Option<PendingCall> {
    // SAFETY: as in `owner_entry`; only the thread itself writes its entry.
    unsafe { map.get(&id) }.copied()
}

/// The thread inside connect() has just sent the SYN on `sk`: remember the socket and
/// the remote end for its return (a failed connect is disconnected before it returns).
#[inline(always)]
pub(crate) fn note_connect(sk: u64, dport: u16, family: u8, daddr: &[u8; 16]) {
    let id = bpf_get_current_pid_tgid();
    if let Some(p) = CONNECTS.get_ptr_mut(&id) {
        // SAFETY: this thread's entry, valid while the program runs; only the thread
        // itself writes it.
        unsafe {
            (*p).skaddr = sk;
            (*p).dport = dport;
            (*p).family = family;
            copy16(&mut (*p).daddr, daddr);
        }
    }
}

/// A listener closed: drop its (namespace, port) entry if it is this socket's, or (with
/// `owner_tgid`) one its owner had, e.g. learned from the socket table at start.
#[inline(always)]
pub(crate) fn forget_listener(netns: u32, port: u16, sk: u64, owner_tgid: Option<u32>) {
    let key = listen_key(netns, port);
    if let Some(l) = listener_entry(&key)
        && (l.sk == sk || owner_tgid == Some(l.owner.tgid))
    {
        let _ = LISTENERS.remove(&key);
    }
}
