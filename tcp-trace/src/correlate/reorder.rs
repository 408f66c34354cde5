//! The reorder buffer: events not yet applied, taken out in timestamp order, equal
//! timestamps in push order.
//!
//! Two parts. Events that come in order (nearly all of the per-event design's) are
//! appended to a run; one a few events late is inserted near the run's back, which
//! moves a few events. One later than that goes to a heap instead (of its timestamp,
//! push number and place in a slab, so that the heap moves 24 bytes, not events). A
//! book (one
//! record per connection) unfolds into steps stamped up to the whole connection's
//! life ago: inserted into the run, each would move every event buffered after it —
//! at 56 k connections/s with FIN closes that was half of the tracer's CPU (perf:
//! `VecDeque::insert` → memmove 46 %) and the ring buffer overflowed.
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use crate::decode::Event;

/// How far back from the run's end an out-of-order event may go into the run.
const SCAN: usize = 8;

#[derive(Default)]
pub(super) struct Reorder {
    /// Sorted by (timestamp, push number).
    run: VecDeque<(u64, Event)>,
    /// The late ones: (timestamp, push number, index in `slab`), earliest on top.
    late: BinaryHeap<Reverse<(u64, u64, u32)>>,
    /// The late events themselves; `free` lists the unused entries.
    slab: Vec<Event>,
    free: Vec<u32>,
    /// Push number of the next event.
    seq: u64,
}

impl Reorder {
    pub(super) fn len(&self) -> usize {
        self.run.len() + self.late.len()
    }

    /// The earliest timestamp buffered.
    pub(super) fn front_ts(&self) -> Option<u64> {
        self.front().map(|(ts, _)| ts)
    }

    /// (timestamp, push number) of the next event out, and whether it is the run's.
    fn front(&self) -> Option<(u64, bool)> {
        let run = self.run.front().map(|(s, e)| (e.ts_ns, *s));
        let late = self.late.peek().map(|Reverse((t, s, _))| (*t, *s));
        match (run, late) {
            (Some(r), Some(l)) if l < r => Some((l.0, false)),
            (Some(r), _) => Some((r.0, true)),
            (None, Some(l)) => Some((l.0, false)),
            (None, None) => None,
        }
    }

    pub(super) fn push(&mut self, ev: &Event) {
        let seq = self.seq;
        self.seq += 1;
        let q = &mut self.run;
        match q.back() {
            Some((_, last)) if last.ts_ns > ev.ts_ns => {}
            _ => return q.push_back((seq, *ev)),
        }
        // Out of order: a few events back goes into the run, further into the tree.
        let n = q.len();
        let floor = n.saturating_sub(SCAN);
        let mut at = n - 1;
        while at > floor && q[at - 1].1.ts_ns > ev.ts_ns {
            at -= 1;
        }
        if at == floor && at > 0 && q[at - 1].1.ts_ns > ev.ts_ns {
            let slot = match self.free.pop() {
                Some(i) => {
                    self.slab[i as usize] = *ev;
                    i
                }
                None => {
                    self.slab.push(*ev);
                    // The buffer never holds 4 G events: the ring and the window bound it.
                    (self.slab.len() - 1) as u32
                }
            };
            self.late.push(Reverse((ev.ts_ns, seq, slot)));
        } else {
            q.insert(at, (seq, *ev));
        }
    }

    /// Applies, in order, every event stamped at or before `until` (all of them with
    /// `u64::MAX`), each in place and then dropped.
    pub(super) fn apply_until(&mut self, until: u64, mut apply: impl FnMut(&Event)) {
        while let Some((ts, from_run)) = self.front() {
            if ts > until {
                break;
            }
            if from_run {
                if let Some((_, ev)) = self.run.front() {
                    apply(ev);
                }
                self.run.pop_front();
            } else if let Some(Reverse((_, _, slot))) = self.late.pop() {
                apply(&self.slab[slot as usize]);
                self.free.push(slot);
            }
        }
    }

    /// The buffered events in the order they will be applied (tests).
    #[cfg(test)]
    pub(super) fn in_order(&self) -> Vec<&Event> {
        let mut all: Vec<(u64, u64, &Event)> = self
            .run
            .iter()
            .map(|(s, e)| (e.ts_ns, *s, e))
            .chain(
                self.late
                    .iter()
                    .map(|Reverse((t, s, i))| (*t, *s, &self.slab[*i as usize])),
            )
            .collect();
        all.sort_by_key(|&(t, s, _)| (t, s));
        all.into_iter().map(|(_, _, e)| e).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::correlate::testutil::Ev;

    fn ev(ts: u64, tag: u32) -> Event {
        Ev::rst_recv(ts, 0).softirq(tag).ev()
    }

    fn out(r: &mut Reorder, until: u64) -> Vec<u32> {
        let mut tags = Vec::new();
        r.apply_until(until, |e| tags.push(e.ctx_pid));
        tags
    }

    #[test]
    fn comes_out_by_time_then_push_order_from_both_parts() {
        let mut r = Reorder::default();
        // 20 in order, then one far back (to the tree) and one a little back (run).
        for i in 0..20u32 {
            r.push(&ev(100 + 10 * u64::from(i), i));
        }
        r.push(&ev(105, 100)); // far back: after 100 (tag 0), before 110
        r.push(&ev(285, 101)); // two back: between 280 and 290
        r.push(&ev(100, 102)); // equal to the first: after it (push order)
        assert_eq!(r.late.len(), 2, "the far ones went to the tree");
        assert_eq!(r.len(), 23);
        assert_eq!(r.front_ts(), Some(100));
        assert_eq!(out(&mut r, 110), vec![0, 102, 100, 1]);
        let rest = out(&mut r, u64::MAX);
        assert_eq!(rest.len(), 19);
        let at = rest.iter().position(|&t| t == 101).unwrap();
        assert_eq!(&rest[at - 1..=at + 1], &[18, 101, 19]);
        assert_eq!(r.len(), 0);
        assert_eq!(r.front_ts(), None);
    }

    #[test]
    fn a_late_event_before_a_drained_run_keeps_push_order_on_a_tie() {
        let mut r = Reorder::default();
        for i in 0..10u32 {
            r.push(&ev(1000 + u64::from(i), i));
        }
        r.push(&ev(500, 50)); // to the tree
        assert_eq!(out(&mut r, 1009), vec![50, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
        r.push(&ev(2000, 60));
        for i in 0..SCAN as u32 + 2 {
            r.push(&ev(3000 + u64::from(i), 70 + i));
        }
        r.push(&ev(2000, 61)); // equal to 60 and far back: after 60
        assert_eq!(out(&mut r, 2000), vec![60, 61]);
    }
}
