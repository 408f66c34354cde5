//! Source: the ring buffer, read through tokio's `AsyncFd`.
//!
//! The kernel side submits without waking us unless the ring is filling up
//! (a wakeup per event costs more than the event: docs/kernel-facts.md), so the reader
//! also drains on a short timer. Either way each drain empties the ring.
use std::os::fd::AsRawFd;
use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;

/// How often the ring is drained when no wakeup came.
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);

pub struct Source {
    fd: AsyncFd<RingBuf<MapData>>,
}

impl Source {
    pub fn new(ring: RingBuf<MapData>) -> std::io::Result<Source> {
        debug_assert!(ring.as_raw_fd() >= 0);
        Ok(Source {
            // SAFETY: the RingBuf owns its map fd and keeps it open while the
            // AsyncFd owns the RingBuf.
            fd: unsafe { AsyncFd::register(ring)? },
        })
    }

    /// Waits until the kernel signals data (the ring passed its wakeup threshold).
    pub async fn readable(&mut self) -> std::io::Result<()> {
        let mut guard = self.fd.readable_mut().await?;
        guard.clear_ready();
        Ok(())
    }

    /// Hands every record now in the ring to `f`; returns how many.
    pub fn drain(&mut self, mut f: impl FnMut(&[u8])) -> usize {
        let ring = self.fd.get_mut();
        let mut n = 0;
        while let Some(item) = ring.next() {
            f(&item);
            n += 1;
        }
        n
    }
}
