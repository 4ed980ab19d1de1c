//! The timer heap: retransmission and RNR deadlines that QPs arm (under
//! their lock) and the device's timer thread waits for (`device::timer`).

use crate::sync::{Level, OrderedMutex};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Condvar;
use std::time::Instant;

#[derive(Default)]
struct Heap {
    /// (deadline, qpn, generation): a QP re-arming bumps its generation, so
    /// stale entries are recognised and skipped.
    entries: BinaryHeap<Reverse<(Instant, u32, u64)>>,
    shutdown: bool,
}

pub(crate) struct Timers {
    heap: OrderedMutex<Heap>,
    cv: Condvar,
}

impl Default for Timers {
    fn default() -> Timers {
        Timers {
            heap: OrderedMutex::new(Level::Timers, Heap::default()),
            cv: Condvar::new(),
        }
    }
}

impl Timers {
    /// Wake QP `qpn` at `at`, unless it armed a later generation meanwhile.
    /// Locks: typically under the QP's lock; takes the heap's.
    pub(crate) fn arm(&self, at: Instant, qpn: u32, generation: u64) {
        let mut h = self.heap.lock();
        let earliest = h.entries.peek().map(|Reverse((t, _, _))| *t);
        h.entries.push(Reverse((at, qpn, generation)));
        if earliest.is_none_or(|t| at < t) {
            self.cv.notify_one();
        }
    }

    /// Stop the waiter: [`Timers::wait_due`] returns false from now on.
    pub(crate) fn shutdown(&self) {
        self.heap.lock().shutdown = true;
        self.cv.notify_all();
    }

    /// Sleep until at least one deadline has passed and move every passed
    /// one, as (qpn, generation), to `due`; false once shut down. Call with
    /// no lock held.
    pub(crate) fn wait_due(&self, due: &mut Vec<(u32, u64)>) -> bool {
        let mut h = self.heap.lock();
        loop {
            if h.shutdown {
                return false;
            }
            let now = Instant::now();
            match h.entries.peek() {
                Some(Reverse((t, _, _))) if *t <= now => break,
                Some(Reverse((t, _, _))) => {
                    let wait = *t - now;
                    h = h.wait(&self.cv, Some(wait));
                }
                None => h = h.wait(&self.cv, None),
            }
        }
        let now = Instant::now();
        while let Some(Reverse((t, qpn, g))) = h.entries.peek().copied() {
            if t > now {
                break;
            }
            h.entries.pop();
            due.push((qpn, g));
        }
        true
    }
}
