//! Doorbell batching: a send posted behind packets already in flight may wait
//! a moment, so that a burst of small posts leaves in one system call (one
//! GSO datagram when the packets are the same size) instead of one each.
//!
//! A hardware NIC gets this for free: the doorbell is an MMIO write and the
//! NIC fetches WQEs while earlier ones are on the wire. Here every transmit
//! is a `sendmmsg`, and a 64-byte `ib_write_bw` spent most of its time in one
//! system call per WR on the sender and one wake-up per few packets on the
//! receiver.
//!
//! When a post is held (all must hold, see [`Doorbells::hold`]): the QP is
//! RC, in RTS, with packets in flight (so an ACK is coming, which transmits
//! what waits — the completer lets the requester go on); an application
//! thread is polling a CQ of the device ([`super::rx::Receiver::app_polling`]),
//! so the next poll is near; and fewer than [`MAX_HELD_WRS`] WRs and
//! [`MAX_HELD_BYTES`] bytes wait. A first post on an idle QP — a ping-pong,
//! any latency test — is never held.
//!
//! Who rings the held doorbells: every `Cq::poll` and `req_notify` on the
//! device, the receive thread whenever it wakes (its wait is bounded while
//! any is held), and the ACKs of the packets in flight. An application that
//! posts and then leaves without polling waits at most about two
//! [`super::rx::POLLER_GRACE`]s.

use super::DeviceInner;
use crate::qp::{Locked, QpShared, TxQueue};
use crate::resources::counters::bump;
use crate::sync::{Level, OrderedMutex};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

/// A QP's posts are held while fewer than this many WRs wait (64 is what one
/// GSO datagram carries).
pub(crate) const MAX_HELD_WRS: usize = 64;

/// ... and while they hold fewer bytes than this: a large message gains
/// nothing from waiting (its packets already leave as one GSO datagram).
pub(crate) const MAX_HELD_BYTES: u64 = 16 * 1024;

/// The QPs of a device with posts held back.
pub(crate) struct Doorbells {
    /// `held` is not empty (the pollers' fast path reads only this).
    any: AtomicBool,
    /// Weak: a destroyed QP's doorbell needs no ringing (and the device
    /// must not keep its QPs alive).
    held: OrderedMutex<Vec<Weak<QpShared>>>,
}

impl Default for Doorbells {
    fn default() -> Doorbells {
        Doorbells {
            any: AtomicBool::new(false),
            held: OrderedMutex::new(Level::Doorbells, Vec::new()),
        }
    }
}

impl Doorbells {
    /// Whether some QP's posts are waiting.
    pub(crate) fn any(&self) -> bool {
        self.any.load(Ordering::Acquire)
    }

    /// Hold back the transmission of what `qp` just queued, if worth it
    /// (see the module comment); false: transmit now.
    ///
    /// Locks: under `qp`'s lock (`q` proves it); takes the doorbells lock.
    pub(crate) fn hold(&self, dev: &DeviceInner, qp: &Arc<QpShared>, q: &mut Locked<'_>) -> bool {
        let Some((wrs, bytes)) = q.unsent_behind_flight() else {
            return false;
        };
        if !dev.receiver.app_polling() || wrs > MAX_HELD_WRS || bytes > MAX_HELD_BYTES {
            return false;
        }
        if q.set_doorbell_held() {
            self.held.lock().push(Arc::downgrade(qp));
            self.any.store(true, Ordering::Release);
        }
        bump(&dev.stats.posts_held);
        true
    }

    /// Transmit everything held.
    ///
    /// Locks: call with no QP lock held. The doorbells lock is released
    /// before each held QP's lock is taken in turn (QP → doorbells is the
    /// order `hold` uses).
    pub(crate) fn ring(&self, dev: &DeviceInner) {
        if !self.any() {
            return;
        }
        let qps = {
            let mut held = self.held.lock();
            self.any.store(false, Ordering::Release);
            std::mem::take(&mut *held)
        };
        let ctx = dev.ctx();
        TxQueue::with(&ctx, |tx| {
            for qp in qps.iter().filter_map(Weak::upgrade) {
                let mut q = qp.lock();
                if q.take_doorbell_held() {
                    q.transmit(&ctx, tx);
                    // Each QP's packets leave before its lock is released.
                    tx.flush(&ctx);
                }
            }
        });
    }
}
