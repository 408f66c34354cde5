//! Monotonic kernel timestamps (`bpf_ktime_get_ns`) → wall clock, converted once.

fn now_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid out-pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub fn monotonic_ns() -> u64 {
    now_ns(libc::CLOCK_MONOTONIC)
}

/// Offset that turns a CLOCK_MONOTONIC timestamp into UNIX-epoch nanoseconds.
#[derive(Clone, Copy, Debug)]
pub struct WallClock {
    offset_ns: i128,
}

impl WallClock {
    pub fn now() -> WallClock {
        let mono = now_ns(libc::CLOCK_MONOTONIC) as i128;
        let real = now_ns(libc::CLOCK_REALTIME) as i128;
        WallClock {
            offset_ns: real - mono,
        }
    }

    /// Fixed offset (replay of a recording made on another boot).
    pub fn with_offset(offset_ns: i128) -> WallClock {
        WallClock { offset_ns }
    }

    pub fn offset_ns(&self) -> i128 {
        self.offset_ns
    }

    pub fn epoch_ns(&self, mono_ns: u64) -> i128 {
        mono_ns as i128 + self.offset_ns
    }

    /// `HH:MM:SS.uuuuuu` in local time.
    pub fn format(&self, mono_ns: u64, out: &mut impl std::fmt::Write) -> std::fmt::Result {
        let epoch = self.epoch_ns(mono_ns);
        // `as _`: the type from localtime_r's argument (naming libc::time_t warns on
        // musl, where libc deprecates the alias ahead of its change to 64 bits).
        let secs = epoch.div_euclid(1_000_000_000) as _;
        let micros = (epoch.rem_euclid(1_000_000_000) / 1000) as u32;
        // SAFETY: zeroed tm is a valid out-value for localtime_r.
        let mut tm: libc::tm = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointers for the call's duration.
        unsafe { libc::localtime_r(&secs, &mut tm) };
        write!(
            out,
            "{:02}:{:02}:{:02}.{:06}",
            tm.tm_hour, tm.tm_min, tm.tm_sec, micros
        )
    }
}
