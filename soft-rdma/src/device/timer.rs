//! The `softrdma-timer` thread: sleeps until the earliest retransmission or
//! RNR deadline (no busy thread), then lets that QP act on it.

use super::DeviceInner;
use crate::resources::flight::{self, LINE_TIMER};
use std::time::Instant;

pub(crate) fn run(dev: &DeviceInner) {
    let mut due = Vec::new();
    let mut woken = Vec::new();
    while dev.timers.wait_due(&mut due) {
        for (qpn, generation) in due.drain(..) {
            if qpn == LINE_TIMER {
                line_timer(dev, &mut woken);
                continue;
            }
            if let Some(qp) = dev.qp(qpn) {
                qp.on_timer(&dev.ctx(), generation);
            }
        }
    }
}

/// The budget's line timer (`resources::flight`): wake who the room allows,
/// and look again while anyone waits. Locks: none held; the line's, then
/// the timers' (not nested).
fn line_timer(dev: &DeviceInner, woken: &mut Vec<(u32, u64)>) {
    let again = dev.flight.on_line_timer(woken);
    let now = Instant::now();
    for (qpn, generation) in woken.drain(..) {
        dev.timers.arm(now, qpn, generation);
    }
    if again {
        dev.timers.arm(now + flight::RETRY, LINE_TIMER, 0);
    }
}
