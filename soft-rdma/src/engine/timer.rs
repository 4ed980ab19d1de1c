//! The timer thread: sleeps until the earliest retransmission or RNR
//! deadline (no busy thread), then lets that QP act on it.

use crate::verbs::device::DeviceInner;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Condvar, Mutex};
use std::time::Instant;

#[derive(Default)]
struct Heap {
    /// (deadline, qpn, generation): a QP re-arming bumps its generation, so
    /// stale entries are recognised and skipped.
    entries: BinaryHeap<Reverse<(Instant, u32, u64)>>,
    shutdown: bool,
}

#[derive(Default)]
pub(crate) struct Timers {
    heap: Mutex<Heap>,
    cv: Condvar,
}

impl Timers {
    pub(crate) fn arm(&self, at: Instant, qpn: u32, generation: u64) {
        let mut h = self.heap.lock().unwrap_or_else(|e| e.into_inner());
        let earliest = h.entries.peek().map(|Reverse((t, _, _))| *t);
        h.entries.push(Reverse((at, qpn, generation)));
        if earliest.is_none_or(|t| at < t) {
            self.cv.notify_one();
        }
    }

    pub(crate) fn shutdown(&self) {
        self.heap.lock().unwrap_or_else(|e| e.into_inner()).shutdown = true;
        self.cv.notify_all();
    }
}

pub(crate) fn run(dev: &DeviceInner) {
    let mut due = Vec::new();
    loop {
        {
            let mut h = dev.timers.heap.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if h.shutdown {
                    return;
                }
                let now = Instant::now();
                match h.entries.peek() {
                    Some(Reverse((t, _, _))) if *t <= now => break,
                    Some(Reverse((t, _, _))) => {
                        let wait = *t - now;
                        h = dev
                            .timers
                            .cv
                            .wait_timeout(h, wait)
                            .unwrap_or_else(|e| e.into_inner())
                            .0;
                    }
                    None => h = dev.timers.cv.wait(h).unwrap_or_else(|e| e.into_inner()),
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
        }
        for (qpn, g) in due.drain(..) {
            if let Some(qp) = dev.qp(qpn) {
                qp.on_timer(g);
            }
        }
    }
}
