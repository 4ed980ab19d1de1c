//! The device's budget of RC bytes in flight, shared by all its QPs.
//!
//! Each RC QP may have a window of PSNs unacknowledged (`qp::psn`): up to
//! 1 MiB at MTU 4096. A thousand busy QPs would offer a gigabyte to a
//! same-host ring of 4 MiB or a socket buffer of 16 MiB; what does not fit
//! is dropped, and every QP that lost a packet recovers by probe or timer
//! while the queues ahead of its ACKs grow longer than its timeout. So the
//! QPs of a device share one budget, as a NIC's send queues share its
//! wire: a QP charges what it has in flight, and sends new packets only
//! within what the others leave — at least one packet when it has none in
//! flight, so nobody starves, and its own ACKs (asked for by the last
//! packet the budget allows) let it go on.
//!
//! A QP with nothing in flight that finds no room waits in line: the QPs
//! whose ACKs free room wake the first in line (their timers, armed for
//! now), and a waiter's own timer retries after [`RETRY`] should a wake-up
//! be missed.
//!
//! The charges are settled when a QP's lock is released (`qp::Locked`), so
//! the total is exact between operations and may run over by what the QPs
//! sending at that moment add in one go. The total is a relaxed atomic;
//! the line has a lock of its own, a leaf under a QP's.

use crate::sync::{Level, OrderedMutex};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// How long a waiting QP waits at most before it looks again.
pub(crate) const RETRY: Duration = Duration::from_millis(1);

/// The budget: the same-host ring's size, and a quarter of a UDP socket's
/// buffer. One QP's whole window fits four times over.
pub(crate) const FLIGHT_BUDGET: u64 = 4 << 20;

/// Bytes in flight on a device's RC QPs, against [`FLIGHT_BUDGET`].
pub(crate) struct Flight {
    bytes: AtomicU64,
    /// `line` is not empty (the ACK path's fast check).
    any: AtomicBool,
    /// QPs waiting for room: QPN and the timer generation to wake.
    line: OrderedMutex<VecDeque<(u32, u64)>>,
}

impl Default for Flight {
    fn default() -> Flight {
        Flight {
            bytes: AtomicU64::new(0),
            any: AtomicBool::new(false),
            line: OrderedMutex::new(Level::Flight, VecDeque::new()),
        }
    }
}

impl Flight {
    /// What the budget leaves beyond every charge settled so far.
    pub(crate) fn room(&self) -> u64 {
        FLIGHT_BUDGET.saturating_sub(self.bytes.load(Ordering::Relaxed))
    }

    /// A QP that had `charged` bytes in flight now has `now`.
    pub(crate) fn settle(&self, charged: &mut u64, now: u64) {
        if now > *charged {
            self.bytes.fetch_add(now - *charged, Ordering::Relaxed);
        } else if now < *charged {
            self.bytes.fetch_sub(*charged - now, Ordering::Relaxed);
        }
        *charged = now;
    }

    /// QP `qpn` (timer generation `generation`) waits for room.
    /// Locks: takes the line's (a leaf; under the QP's lock).
    pub(crate) fn wait(&self, qpn: u32, generation: u64) {
        self.line.lock().push_back((qpn, generation));
        self.any.store(true, Ordering::Release);
    }

    /// The waiters to wake now that the room is `room` bytes at `mtu`: one
    /// per 64 KiB of room and at least one (each takes what it can; the
    /// rest wait on). Locks: takes the line's, a leaf.
    pub(crate) fn wake(&self, mtu: u64, out: &mut Vec<(u32, u64)>) {
        if !self.any.load(Ordering::Acquire) {
            return;
        }
        let room = self.room();
        if room < mtu {
            return;
        }
        let mut line = self.line.lock();
        let n = ((1 + room / (64 << 10)) as usize).min(line.len());
        out.extend(line.drain(..n));
        self.any.store(!line.is_empty(), Ordering::Release);
    }

    /// Everything settled so far (a test's view).
    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settling_moves_the_total_by_the_difference() {
        let f = Flight::default();
        let (mut a, mut b) = (0, 0);
        f.settle(&mut a, 3 << 20);
        f.settle(&mut b, 2 << 20);
        assert_eq!(f.room(), 0, "over the budget: no room, not an underflow");
        f.settle(&mut a, 1 << 20);
        assert_eq!((a, f.in_flight(), f.room()), (1 << 20, 3 << 20, 1 << 20));
        f.settle(&mut a, 0);
        f.settle(&mut b, 0);
        assert_eq!(f.in_flight(), 0);
    }

    #[test]
    fn waiters_are_woken_in_line_as_room_allows() {
        let f = Flight::default();
        let mut full = 0;
        f.settle(&mut full, FLIGHT_BUDGET);
        for qpn in 1..=40 {
            f.wait(qpn, u64::from(qpn) * 10);
        }
        let mut woken = Vec::new();
        f.wake(4096, &mut woken);
        assert!(woken.is_empty(), "no room, nobody woken");
        f.settle(&mut full, FLIGHT_BUDGET - (128 << 10));
        f.wake(4096, &mut woken);
        assert_eq!(
            woken,
            [(1, 10), (2, 20), (3, 30)],
            "1 + 128 KiB / 64 KiB, first in line first"
        );
        f.settle(&mut full, 0);
        woken.clear();
        f.wake(4096, &mut woken);
        assert_eq!(woken.len(), 37, "the rest");
        woken.clear();
        f.wake(4096, &mut woken);
        assert!(woken.is_empty());
    }
}
