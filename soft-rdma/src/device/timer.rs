//! The `softrdma-timer` thread: sleeps until the earliest retransmission or
//! RNR deadline (no busy thread), then lets that QP act on it; and the
//! budget's line (`resources::flight`): its timer, and running the woken.

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
    run_woken(dev); // none left behind, should a receive have missed them
}

/// Run the QPs the budget's line woke as a receive batch's ACKs freed room
/// (first in line first): called by the receive path once it has let go
/// of the QPs of the batch, so they send from that thread.
/// Locks: none but the receive lock held; each woken QP's in turn.
pub(crate) fn run_woken(dev: &DeviceInner) {
    let woken = dev.flight.take_woken();
    if woken.is_empty() {
        return;
    }
    let ctx = dev.ctx();
    for (qpn, generation) in woken {
        if let Some(qp) = dev.qp(qpn) {
            qp.on_timer(&ctx, generation);
        }
    }
}
