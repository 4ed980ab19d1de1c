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
//! A QP with nothing in flight that finds no room waits in line, once: it
//! sends nothing more (its posts only queue) until the QPs whose ACKs free
//! room wake it, first in line first; the thread that received those ACKs
//! runs it once it has let go of their QP (no hand-off to the timer
//! thread: a wake-up and two context switches). No waiter has a timer of
//! its own — a thousand of them looking again every millisecond kept the
//! timer thread busy with nothing to send. One timer for the whole line,
//! armed while anyone waits ([`LINE_TIMER`]), wakes the first in line
//! every [`RETRY`] should room have been freed with no ACK to tell (a QP
//! reset or destroyed) or a wake-up gone to a QP that no longer waits.
//!
//! The charges are settled when a QP's lock is released (`qp::Locked`), so
//! the total is exact between operations and may run over by what the QPs
//! sending at that moment add in one go. The total is a relaxed atomic;
//! the line has a lock of its own, a leaf under a QP's.

use crate::sync::{Level, OrderedMutex};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// How often the line's own timer wakes its first waiter while anyone
/// waits (ACKs wake them in the normal course).
pub(crate) const RETRY: Duration = Duration::from_millis(1);

/// The timer heap's name for the line's timer: no QPN (24 bits) is it.
pub(crate) const LINE_TIMER: u32 = u32::MAX;

/// The least room worth a wake-up: the smallest path MTU.
const MIN_ROOM: u64 = 256;

/// The budget: three quarters of the same-host ring (4 MiB of records:
/// 4 MiB of payload and its headers overflowed it, a few to 500 link drops
/// a 1 000-QP run), and less than a quarter of a UDP socket's buffer. One
/// QP's whole window fits three times over.
pub(crate) const FLIGHT_BUDGET: u64 = 3 << 20;

/// Bytes in flight on a device's RC QPs, against [`FLIGHT_BUDGET`].
pub(crate) struct Flight {
    bytes: AtomicU64,
    /// `line` is not empty (the ACK path's fast check).
    any: AtomicBool,
    /// Some are woken and not run yet (the receive path's fast check).
    woken: AtomicBool,
    line: OrderedMutex<Line>,
}

#[derive(Default)]
struct Line {
    /// QPs waiting for room: QPN and the timer generation to wake.
    waiting: VecDeque<(u32, u64)>,
    /// The line's timer is armed ([`LINE_TIMER`]).
    timer: bool,
    /// Woken by an ACK, for the receive path to run ([`Flight::take_woken`]).
    woken: Vec<(u32, u64)>,
}

impl Default for Flight {
    fn default() -> Flight {
        Flight {
            bytes: AtomicU64::new(0),
            any: AtomicBool::new(false),
            woken: AtomicBool::new(false),
            line: OrderedMutex::new(Level::Flight, Line::default()),
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

    /// QP `qpn` (timer generation `generation`) waits for room. True if
    /// the caller is to arm the line's timer ([`LINE_TIMER`] at [`RETRY`]).
    /// Locks: takes the line's (a leaf; under the QP's lock).
    pub(crate) fn wait(&self, qpn: u32, generation: u64) -> bool {
        let mut line = self.line.lock();
        line.waiting.push_back((qpn, generation));
        self.any.store(true, Ordering::Release);
        !std::mem::replace(&mut line.timer, true)
    }

    /// The line's timer fired: the waiters the room allows (the first at
    /// least, if any room is left), as [`Flight::wake`]. True if anyone
    /// still waits: the caller arms the timer again.
    /// Locks: takes the line's, a leaf.
    pub(crate) fn on_line_timer(&self, out: &mut Vec<(u32, u64)>) -> bool {
        self.wake(MIN_ROOM, out);
        let mut line = self.line.lock();
        line.timer = !line.waiting.is_empty();
        line.timer
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
        let n = ((1 + room / (64 << 10)) as usize).min(line.waiting.len());
        out.extend(line.waiting.drain(..n));
        self.any.store(!line.waiting.is_empty(), Ordering::Release);
    }

    /// As [`Flight::wake`], the woken kept for the thread that received
    /// the ACK to run once it has let go of the QP ([`Flight::take_woken`]).
    /// Locks: takes the line's, a leaf.
    pub(crate) fn wake_later(&self, mtu: u64) {
        let mut out = Vec::new();
        self.wake(mtu, &mut out);
        if !out.is_empty() {
            self.line.lock().woken.append(&mut out);
            self.woken.store(true, Ordering::Release);
        }
    }

    /// The QPs woken by ACKs and not run yet (QPN, timer generation).
    /// Locks: takes the line's (a leaf) if there are any.
    pub(crate) fn take_woken(&self) -> Vec<(u32, u64)> {
        if !self.woken.load(Ordering::Acquire) {
            return Vec::new();
        }
        let mut line = self.line.lock();
        self.woken.store(false, Ordering::Release);
        std::mem::take(&mut line.woken)
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
        f.settle(&mut a, 2 << 20);
        f.settle(&mut b, 2 << 20);
        assert_eq!(f.room(), 0, "over the budget: no room, not an underflow");
        f.settle(&mut a, FLIGHT_BUDGET - (3 << 20));
        assert_eq!(f.in_flight(), FLIGHT_BUDGET - (1 << 20));
        assert_eq!((a, f.room()), (FLIGHT_BUDGET - (3 << 20), 1 << 20));
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
            let first = f.wait(qpn, u64::from(qpn) * 10);
            assert_eq!(first, qpn == 1, "the line's timer is armed once");
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
        assert!(
            !f.on_line_timer(&mut woken),
            "nobody waits: the timer stops"
        );
        assert!(f.wait(41, 410), "armed again for the next waiter");
        assert!(f.take_woken().is_empty(), "nobody woken to run later");
        f.wake_later(4096);
        assert_eq!(f.take_woken(), [(41, 410)], "kept for the receive path");
        assert!(f.take_woken().is_empty(), "taken once");
    }

    #[test]
    fn the_line_timer_wakes_the_first_waiter_once_there_is_room() {
        let f = Flight::default();
        let mut full = 0;
        f.settle(&mut full, FLIGHT_BUDGET);
        f.wait(7, 70);
        f.wait(8, 80);
        let mut woken = Vec::new();
        assert!(f.on_line_timer(&mut woken), "no room: still waiting");
        assert!(woken.is_empty());
        // Room freed with no ACK to tell (a QP destroyed).
        f.settle(&mut full, FLIGHT_BUDGET - 4096);
        assert!(f.on_line_timer(&mut woken), "one woken, one waits on");
        assert_eq!(woken, [(7, 70)]);
    }
}
