//! The rare paths, told through aya-log (`tcp-trace -v` prints them) with the
//! values a bug report needs; each is counted too. Throttled: the 1st, 2nd, 4th,
//! 8th, … time on a CPU, so a path taken at every event cannot flood the log ring.

/// True for the counts worth a log line: 1, 2, 4, 8, …
#[inline(always)]
pub(crate) fn worth_telling(n: u64) -> bool {
    n != 0 && n & (n - 1) == 0
}

/// Counts a rare path in `COUNTERS[$idx]` and, when [`worth_telling`], logs it with
/// `aya_log_ebpf::warn!`: the format's last `{}` is this CPU's count. No context
/// (aya-log-ebpf 0.2 takes one and does not use it; the helpers that log here are
/// shared by three program types).
macro_rules! count_rare {
    ($idx:expr, $fmt:literal $(, $arg:expr)* $(,)?) => {{
        let n = crate::maps::count($idx);
        if crate::klog::worth_telling(n) {
            aya_log_ebpf::warn!(&(), $fmt $(, $arg)*, n);
        }
    }};
}
pub(crate) use count_rare;
