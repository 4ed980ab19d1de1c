//! The `softrdma-timer` thread: sleeps until the earliest retransmission or
//! RNR deadline (no busy thread), then lets that QP act on it.

use super::DeviceInner;

pub(crate) fn run(dev: &DeviceInner) {
    let mut due = Vec::new();
    while dev.timers.wait_due(&mut due) {
        for (qpn, generation) in due.drain(..) {
            if let Some(qp) = dev.qp(qpn) {
                qp.on_timer(&dev.ctx(), generation);
            }
        }
    }
}
