//! The device's budget of RC bytes in flight, shared by all its QPs.
//!
//! Each RC QP may have a window of PSNs unacknowledged (`qp::psn`): up to
//! 1 MiB at MTU 4096. A thousand busy QPs would offer a gigabyte to a
//! same-host ring of 4 MiB or a socket buffer of 16 MiB; what does not fit
//! is dropped, and every QP that lost a packet recovers by probe or timer
//! while the queues ahead of its ACKs grow longer than its timeout. So the
//! QPs of a device share one budget, as a NIC's send queues share its
//! wire: a QP charges what it has in flight, and sends new packets only
//! within what the others leave — and starts a message only if the room
//! holds all of it (up to [`WHOLE`]): slivers of messages each asked for
//! an ACK and split the receiver's runs of one message.
//!
//! A QP with nothing in flight that finds no room waits in line, once,
//! saying how much its next message needs: it sends nothing more (its
//! posts only queue) until woken. The QPs whose ACKs free room wake the
//! line in order, as far as the room holds each one's need, and set that
//! room aside for them ([`Flight::reserved`]) until they run: a woken QP
//! is not overtaken by the QPs whose ACKs come in meanwhile. The woken are
//! handed to the timer thread ([`Flight::take_woken`], [`LINE_TIMER`]
//! armed for now), which runs each and gives its reservation back. No
//! waiter has a timer of its own — a thousand of them looking again every
//! millisecond kept the timer thread busy with nothing to send; the line's
//! one timer, armed while anyone waits, looks every [`RETRY`] should room
//! have been freed with no ACK to tell (a QP reset or destroyed).
//!
//! The charges are settled when a QP's lock is released (`qp::Locked`), so
//! the total is exact between operations and may run over by what the QPs
//! sending at that moment add in one go. The totals are relaxed atomics;
//! the line has a lock of its own, a leaf under a QP's.

use crate::sync::{Level, OrderedMutex};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// How often the line's own timer looks while anyone waits (ACKs wake the
/// line in the normal course).
pub(crate) const RETRY: Duration = Duration::from_millis(1);

/// The timer heap's name for the line's timer: no QPN (24 bits) is it.
/// Generation [`PERIODIC`]: the timer proper; [`WOKEN`]: run the woken now.
pub(crate) const LINE_TIMER: u32 = u32::MAX;
pub(crate) const PERIODIC: u64 = 0;
pub(crate) const WOKEN: u64 = 1;

/// The budget: three quarters of the same-host ring (4 MiB of records,
/// each packet's headers on top of its payload: a budget of the ring's
/// whole size, once whole messages filled it, overflowed it), and less
/// than a quarter of a UDP socket's buffer. One QP's whole window fits
/// three times over.
pub(crate) const FLIGHT_BUDGET: u64 = 3 << 20;

/// Messages up to this size start only when the room holds them whole;
/// larger ones go out as the room allows, packet by packet.
pub(crate) const WHOLE: u64 = 256 << 10;

/// A QP in line: its timer generation when it queued (a later one means it
/// no longer waits) and the room its next message needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Waiter {
    pub(crate) qpn: u32,
    pub(crate) generation: u64,
    pub(crate) need: u64,
}

/// Bytes in flight on a device's RC QPs, against [`FLIGHT_BUDGET`].
pub(crate) struct Flight {
    bytes: AtomicU64,
    /// Room set aside for QPs woken and not run yet.
    reserved: AtomicU64,
    /// `line` is not empty (the ACK path's fast check).
    any: AtomicBool,
    line: OrderedMutex<Line>,
}

#[derive(Default)]
struct Line {
    waiting: VecDeque<Waiter>,
    /// Woken, their room reserved, for the timer thread to run.
    woken: Vec<Waiter>,
    /// The line's periodic timer is armed.
    timer: bool,
}

impl Default for Flight {
    fn default() -> Flight {
        Flight {
            bytes: AtomicU64::new(0),
            reserved: AtomicU64::new(0),
            any: AtomicBool::new(false),
            line: OrderedMutex::new(Level::Flight, Line::default()),
        }
    }
}

impl Flight {
    /// What the budget leaves beyond every charge settled so far and the
    /// room set aside for woken QPs.
    pub(crate) fn room(&self) -> u64 {
        let used = self.bytes.load(Ordering::Relaxed) + self.reserved.load(Ordering::Relaxed);
        FLIGHT_BUDGET.saturating_sub(used)
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

    /// A woken QP ran (or is gone): the room set aside for it is free.
    pub(crate) fn unreserve(&self, need: u64) {
        self.reserved.fetch_sub(need, Ordering::Relaxed);
    }

    /// `w` waits for room: at the back of the line, or at its front for a
    /// QP woken that still found too little. True if the caller is to arm
    /// the line's timer ([`LINE_TIMER`], [`PERIODIC`], at [`RETRY`]).
    /// Locks: takes the line's (a leaf; under the QP's lock).
    pub(crate) fn wait(&self, w: Waiter, front: bool) -> bool {
        let mut line = self.line.lock();
        if front {
            line.waiting.push_front(w);
        } else {
            line.waiting.push_back(w);
        }
        self.any.store(true, Ordering::Release);
        !std::mem::replace(&mut line.timer, true)
    }

    /// Wake the line in order as far as the room holds each one's need,
    /// setting it aside. True if any was woken: the caller arms
    /// [`LINE_TIMER`] ([`WOKEN`]) for now, and the timer thread runs them.
    /// Locks: takes the line's, a leaf.
    pub(crate) fn wake(&self) -> bool {
        if !self.any.load(Ordering::Acquire) {
            return false;
        }
        let mut line = self.line.lock();
        let mut room = self.room();
        let mut any = false;
        while let Some(&w) = line.waiting.front() {
            if w.need > room {
                break;
            }
            room -= w.need;
            self.reserved.fetch_add(w.need, Ordering::Relaxed);
            line.waiting.pop_front();
            line.woken.push(w);
            any = true;
        }
        self.any.store(!line.waiting.is_empty(), Ordering::Release);
        any
    }

    /// The QPs woken, to run (each then gives its reservation back).
    /// Locks: takes the line's, a leaf.
    pub(crate) fn take_woken(&self, out: &mut Vec<Waiter>) {
        out.append(&mut self.line.lock().woken);
    }

    /// The line's periodic timer fired: wake whom the room allows (as
    /// [`Flight::wake`]). True if anyone still waits: the caller arms it
    /// again. Locks: takes the line's, a leaf.
    pub(crate) fn on_line_timer(&self) -> bool {
        self.wake();
        let mut line = self.line.lock();
        line.timer = !line.waiting.is_empty();
        line.timer
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

    fn waiter(qpn: u32, need: u64) -> Waiter {
        Waiter {
            qpn,
            generation: u64::from(qpn) * 10,
            need,
        }
    }

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
    fn waiters_are_woken_in_line_as_far_as_the_room_holds_their_needs() {
        let f = Flight::default();
        let mut full = 0;
        f.settle(&mut full, FLIGHT_BUDGET);
        for qpn in 1..=40 {
            let first = f.wait(waiter(qpn, 64 << 10), false);
            assert_eq!(first, qpn == 1, "the line's timer is armed once");
        }
        let mut woken = Vec::new();
        assert!(!f.wake(), "no room, nobody woken");
        f.settle(&mut full, FLIGHT_BUDGET - (160 << 10));
        assert!(f.wake());
        f.take_woken(&mut woken);
        assert_eq!(woken, [waiter(1, 64 << 10), waiter(2, 64 << 10)]);
        assert_eq!(f.room(), 32 << 10, "their room is set aside");
        assert!(!f.wake(), "the third's need is more than what is left");
        f.unreserve(64 << 10);
        f.unreserve(64 << 10);
        f.settle(&mut full, 0);
        woken.clear();
        assert!(f.wake());
        f.take_woken(&mut woken);
        assert_eq!(woken.len(), 38, "the rest");
        assert_eq!(f.room(), FLIGHT_BUDGET - 38 * (64 << 10));
        assert!(!f.on_line_timer(), "nobody waits: the timer stops");
        assert!(f.wait(waiter(41, 4096), false), "armed again");
    }

    #[test]
    fn a_woken_qp_that_found_too_little_goes_back_to_the_front() {
        let f = Flight::default();
        let mut full = 0;
        f.settle(&mut full, FLIGHT_BUDGET);
        f.wait(waiter(7, 4096), false);
        f.wait(waiter(8, 4096), true);
        assert!(f.on_line_timer(), "no room: still waiting");
        // Room freed with no ACK to tell (a QP destroyed).
        f.settle(&mut full, FLIGHT_BUDGET - 4096);
        assert!(f.on_line_timer(), "one woken, one waits on");
        let mut woken = Vec::new();
        f.take_woken(&mut woken);
        assert_eq!(woken, [waiter(8, 4096)], "the one put at the front first");
    }
}
