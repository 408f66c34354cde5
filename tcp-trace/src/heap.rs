//! The C heap's free memory given back to the kernel.
//!
//! glibc's allocator keeps what a program frees in its arenas and returns it to the
//! kernel only from the top of the main heap, and only past a threshold. Measured on
//! 6.18 (`mallinfo2` beside /proc/self/smaps): after start-up the arenas held 20.5 MB of
//! which 1.2 MB were in use — the kernel BTF, the programs' objects and the socket table
//! read on other threads, all freed — and 6 MB of the heap stayed resident; under a
//! 28 k/s storm the arenas grew to 25.5 MB with 11–13 MB in use, and a burst that makes
//! the correlator's tables grow leaves its peak resident after they shrink. An SRE who
//! leaves the tracer running reads its RSS: `malloc_trim` after start-up and, while it
//! runs, every [`EVERY`] makes that RSS follow what is in use (a trim took
//! 138–426 µs under a storm). Other C libraries (musl, the static release build) return memory on
//! their own: nothing to do there.

use std::time::{Duration, Instant};

/// How often a running tracer gives back what it freed.
pub const EVERY: Duration = Duration::from_secs(10);

/// Gives the heap's free pages back now (what is freed inside the arenas is released
/// with `MADV_DONTNEED`, the top of the main heap with `brk`).
pub fn give_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: a plain call into the C library, with no pointers; safe at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Gives the heap's free pages back at most every [`EVERY`].
pub struct Trimmer {
    last: Instant,
    /// Trims done.
    pub trims: u64,
}

impl Trimmer {
    pub fn new(now: Instant) -> Trimmer {
        Trimmer {
            last: now,
            trims: 0,
        }
    }

    /// Trims if [`EVERY`] has passed since the last time; says whether it did.
    pub fn tick(&mut self, now: Instant) -> bool {
        if now.saturating_duration_since(self.last) < EVERY {
            return false;
        }
        self.last = now;
        give_back();
        self.trims += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_once_per_period() {
        let t0 = Instant::now();
        let mut t = Trimmer::new(t0);
        assert!(!t.tick(t0 + EVERY / 2), "not yet time");
        assert!(t.tick(t0 + EVERY), "time");
        assert!(!t.tick(t0 + EVERY + EVERY / 2), "the period starts again");
        assert!(t.tick(t0 + 3 * EVERY));
        assert_eq!(t.trims, 2);
    }

    /// Anonymous resident memory of this process, in kB.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn rss_anon_kb() -> u64 {
        let s = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
        s.lines()
            .find_map(|l| l.strip_prefix("RssAnon:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("RssAnon in /proc/self/status")
    }

    /// What the tracer relies on: memory freed inside the arenas (a burst's small
    /// blocks, one kept at the end so that the heap's top cannot simply shrink) stays
    /// resident until `give_back`, and leaves with it. 200 MB, far above what other
    /// tests running beside this one allocate.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn a_freed_burst_leaves_with_give_back() {
        let mut blocks: Vec<Vec<u8>> = (0..200_000).map(|i| vec![i as u8; 1000]).collect();
        let keep = blocks.split_off(199_999);
        let full = rss_anon_kb();
        drop(blocks);
        let freed = rss_anon_kb();
        give_back();
        let given = rss_anon_kb();
        assert!(
            given + 100_000 < freed.max(full),
            "RssAnon {full} kB full, {freed} kB freed, {given} kB after give_back"
        );
        drop(keep);
    }
}
