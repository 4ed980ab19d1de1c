//! The `softrdma-timer` thread: sleeps until the earliest retransmission or
//! RNR deadline (no busy thread), then lets that QP act on it; and runs the
//! QPs the budget's line woke (`resources::flight`).

use super::DeviceInner;
use crate::resources::flight::{self, LINE_TIMER, PERIODIC};
use std::time::Instant;

pub(crate) fn run(dev: &DeviceInner) {
    let mut due = Vec::new();
    let mut woken = Vec::new();
    while dev.timers.wait_due(&mut due) {
        for (qpn, generation) in due.drain(..) {
            if qpn == LINE_TIMER {
                line(dev, generation == PERIODIC, &mut woken);
                continue;
            }
            if let Some(qp) = dev.qp(qpn) {
                qp.on_timer(&dev.ctx(), generation);
            }
        }
    }
}

/// The budget's line: on its periodic timer, wake whom the room allows and
/// look again while anyone waits; then run the woken, first in line first
/// (each gives its reservation back, a QP gone too).
/// Locks: none held; the line's and the timers' (not nested), then each
/// woken QP's in turn.
fn line(dev: &DeviceInner, periodic: bool, woken: &mut Vec<flight::Waiter>) {
    if periodic && dev.flight.on_line_timer() {
        let at = Instant::now() + flight::RETRY;
        dev.timers.arm(at, LINE_TIMER, PERIODIC);
    }
    dev.flight.take_woken(woken);
    let ctx = dev.ctx();
    for w in woken.drain(..) {
        match dev.qp(w.qpn) {
            Some(qp) => qp.on_room(&ctx, w),
            None => dev.flight.unreserve(w.need),
        }
    }
}
