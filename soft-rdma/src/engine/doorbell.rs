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
//! When a post is held (all must hold, see [`hold`]): the QP is RC, in RTS,
//! with packets in flight (so an ACK is coming, which transmits what waits —
//! the completer calls `requester::progress`); an application thread is
//! polling a CQ of the device ([`super::rx::Receiver::app_polling`]), so the
//! next poll is near; and fewer than [`MAX_HELD_WRS`] WRs and
//! [`MAX_HELD_BYTES`] bytes wait. A first post on an idle QP — a ping-pong,
//! any latency test — is never held.
//!
//! Who rings the held doorbells: every `Cq::poll` and `req_notify` on the
//! device, the receive thread whenever it wakes (its wait is bounded while
//! any is held), and the ACKs of the packets in flight. An application that
//! posts and then leaves without polling waits at most about two
//! [`super::rx::POLLER_GRACE`]s.

use super::packet::TxQueue;
use crate::verbs::device::DeviceInner;
use crate::verbs::qp::{QpInner, QpShared};
use crate::verbs::{QpState, QpType};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// A QP's posts are held while fewer than this many WRs wait (64 is what one
/// GSO datagram carries).
pub(crate) const MAX_HELD_WRS: usize = 64;

/// ... and while they hold fewer bytes than this: a large message gains
/// nothing from waiting (its packets already leave as one GSO datagram).
pub(crate) const MAX_HELD_BYTES: u64 = 16 * 1024;

/// The QPs of a device with posts held back.
#[derive(Default)]
pub(crate) struct Doorbells {
    /// `held` is not empty (the pollers' fast path reads only this).
    any: AtomicBool,
    /// Weak: a destroyed QP's doorbell needs no ringing (and the device
    /// must not keep its QPs alive).
    held: Mutex<Vec<Weak<QpShared>>>,
}

impl Doorbells {
    /// Whether some QP's posts are waiting.
    pub(crate) fn any(&self) -> bool {
        self.any.load(Ordering::Acquire)
    }

    /// Hold back the transmission of what `qp` just queued, if worth it
    /// (see the module comment); false: transmit now. Under the QP lock.
    pub(crate) fn hold(&self, qp: &Arc<QpShared>, q: &mut QpInner) -> bool {
        if qp.qp_type != QpType::Rc
            || q.state != QpState::Rts
            || !q.req.in_flight()
            || !qp.dev.receiver.app_polling()
        {
            return false;
        }
        // Counted first: a queue stopped by the window may be long.
        let fresh = q.req.untransmitted();
        if fresh.len() > MAX_HELD_WRS || fresh.map(|w| w.len).sum::<u64>() > MAX_HELD_BYTES {
            return false;
        }
        if !q.req.doorbell_held {
            q.req.doorbell_held = true;
            let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
            held.push(Arc::downgrade(qp));
            self.any.store(true, Ordering::Release);
        }
        qp.dev.stats.posts_held.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Transmit everything held. Takes QP locks: call with none held.
    pub(crate) fn ring(&self, dev: &DeviceInner) {
        if !self.any() {
            return;
        }
        let qps = {
            let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
            self.any.store(false, Ordering::Release);
            std::mem::take(&mut *held)
        };
        TxQueue::with(dev, |tx| {
            for qp in qps.iter().filter_map(Weak::upgrade) {
                let mut q = qp.lock();
                if std::mem::take(&mut q.req.doorbell_held) {
                    transmit(&qp, &mut q, tx);
                    // Each QP's packets leave before its lock is released.
                    tx.flush(dev);
                }
            }
        });
    }
}

/// What a post sends: the queue's new requests, then a deferred ACK riding
/// behind them (`engine::rx::receive`) — a peer polling for that ACK then
/// finds the request already there and handles both in one go.
pub(crate) fn transmit(qp: &QpShared, q: &mut QpInner, tx: &mut TxQueue) {
    super::requester::progress(qp, q, tx);
    super::responder::flush_ack(qp, q, tx);
}
