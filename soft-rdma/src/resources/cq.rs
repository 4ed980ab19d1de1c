//! Completion queues and completion channels (real pollable descriptors).
//! A CQ knows nothing of the device that fills it: polling it empty asks
//! its [`Driver`] (the device of the first QP using it) to receive.

use crate::sync::{Level, OrderedMutex};
use crate::types::{Wc, WcStatus};
use odp::EventFd;
use std::collections::VecDeque;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};

/// What polling a CQ asks of the device that fills it (`device::rx`).
/// Called with no lock held.
pub(crate) trait Driver: Send + Sync {
    /// Send posts held back for a batch (doorbell batching).
    fn ring_doorbells(&self);
    /// The CQ was found empty: receive and handle what has arrived, in the
    /// caller's thread.
    fn poll_empty(&self);
    /// A completion was found, or the CQ is armed to sleep: the caller is
    /// leaving the library.
    fn poll_done(&self);
}

/// `ibv_comp_channel`: an eventfd that becomes readable when an armed CQ
/// gets a completion.
pub(crate) struct ChannelShared {
    fd: EventFd,
    /// CQs whose events are pending (`ibv_get_cq_event` order).
    events: OrderedMutex<VecDeque<Arc<CqShared>>>,
}

impl ChannelShared {
    pub(crate) fn new() -> std::io::Result<ChannelShared> {
        Ok(ChannelShared {
            fd: EventFd::new()?,
            events: OrderedMutex::new(Level::Channel, VecDeque::new()),
        })
    }

    /// The next CQ with an event, if any (non-blocking).
    pub(crate) fn next_event(&self) -> Option<Arc<CqShared>> {
        let mut ev = self.events.lock();
        let cq = ev.pop_front()?;
        if ev.is_empty() {
            self.fd.drain();
        }
        Some(cq)
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub(crate) fn borrowed_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.fd.as_fd()
    }
}

struct CqState {
    ring: VecDeque<Wc>,
    /// Completions the CQ holds at most (`ibv_resize_cq` changes it).
    depth: usize,
    /// `ibv_req_notify_cq`: Some(solicited_only) while armed.
    armed: Option<bool>,
    /// Completions lost to overflow; the CQ is in error once this is
    /// non-zero (async event `IBV_EVENT_CQ_ERR`).
    lost: u64,
}

pub(crate) struct CqShared {
    /// Names the CQ in `AsyncEvent::CqErr`; unique in the process.
    id: u32,
    state: OrderedMutex<CqState>,
    channel: Option<Arc<ChannelShared>>,
    /// The device of the first QP using this CQ. Weak: the device holds its
    /// QPs, which hold their CQs.
    driver: OnceLock<Weak<dyn Driver>>,
    /// QPs using this CQ: destroying it is EBUSY meanwhile (as rdma-core).
    pub(crate) users: Arc<AtomicUsize>,
}

/// A completion was lost to a full CQ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Overflow {
    /// The first loss: the CQ just went to error.
    First,
    Again,
}

impl CqShared {
    pub(crate) fn new(depth: usize, channel: Option<Arc<ChannelShared>>) -> CqShared {
        static NEXT_ID: AtomicU32 = AtomicU32::new(1);
        CqShared {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            users: Arc::default(),
            state: OrderedMutex::new(
                Level::Cq,
                CqState {
                    ring: VecDeque::with_capacity(depth),
                    depth,
                    armed: None,
                    lost: 0,
                },
            ),
            channel,
            driver: OnceLock::new(),
        }
    }

    pub(crate) fn id(&self) -> u32 {
        self.id
    }

    pub(crate) fn depth(&self) -> usize {
        self.state.lock().depth
    }

    /// `ibv_resize_cq`: hold up to `depth` completions from now on; false
    /// (nothing changed) if more than that are waiting to be polled. The
    /// completions waiting stay, in order. Locks: the CQ's.
    pub(crate) fn resize(&self, depth: usize) -> bool {
        let mut s = self.state.lock();
        if s.ring.len() > depth {
            return false;
        }
        s.depth = depth;
        // Room for all of it now: a push (possibly under an ODP window,
        // where nothing may allocate) never grows the ring.
        let len = s.ring.len();
        s.ring.shrink_to(depth);
        s.ring.reserve_exact(depth - len);
        true
    }

    pub(crate) fn has_channel(&self) -> bool {
        self.channel.is_some()
    }

    /// Record the device that polling this CQ drives (the first to ask).
    pub(crate) fn attach(&self, driver: Weak<dyn Driver>) {
        let _ = self.driver.set(driver);
    }

    /// Whether a QP of another device than `driver`'s uses this CQ already.
    pub(crate) fn driven_by_other(&self, driver: &Weak<dyn Driver>) -> bool {
        self.driver
            .get()
            .is_some_and(|d| !std::ptr::addr_eq(d.as_ptr(), driver.as_ptr()))
    }

    /// The device polling drives, if it is still open.
    pub(crate) fn driver(&self) -> Option<Arc<dyn Driver>> {
        self.driver.get().and_then(Weak::upgrade)
    }

    /// Move up to `out.len()` completions out; how many.
    pub(crate) fn take(&self, out: &mut [Wc]) -> usize {
        let mut s = self.state.lock();
        let n = out.len().min(s.ring.len());
        for (slot, wc) in out.iter_mut().zip(s.ring.drain(..n)) {
            *slot = wc;
        }
        n
    }

    pub(crate) fn waiting(&self) -> usize {
        self.state.lock().ring.len()
    }

    /// Drop the completions of QP `qpn` not yet polled (the QP was reset);
    /// the others keep their order. Locks: the CQ's (under the QP's).
    pub(crate) fn purge(&self, qpn: u32) {
        self.state.lock().ring.retain(|wc| wc.qp_num != qpn);
    }

    /// `ibv_req_notify_cq`: the next completion (solicited or in error
    /// only, if asked) signals the channel.
    pub(crate) fn arm(&self, solicited_only: bool) {
        self.state.lock().armed = Some(solicited_only);
    }

    /// Completions lost because the CQ was full.
    pub(crate) fn lost(&self) -> u64 {
        self.state.lock().lost
    }

    /// Add a completion; signals the channel if armed (and, when armed for
    /// solicited only, if `solicited`). A full CQ loses the completion and
    /// goes to error: the caller raises `IBV_EVENT_CQ_ERR` when this returns
    /// [`Overflow::First`].
    ///
    /// Locks: typically under the completing QP's lock; takes the CQ lock,
    /// releases it, then the channel's (a waiter woken by the channel finds
    /// the completion already there).
    #[must_use]
    pub(crate) fn push(self: &Arc<Self>, wc: Wc, solicited: bool) -> Option<Overflow> {
        let mut s = self.state.lock();
        if s.ring.len() >= s.depth {
            s.lost += 1;
            return Some(if s.lost == 1 {
                Overflow::First
            } else {
                Overflow::Again
            });
        }
        s.ring.push_back(wc);
        let fire = match s.armed {
            Some(only_solicited) => !only_solicited || solicited || wc.status != WcStatus::Success,
            None => false,
        };
        if fire {
            s.armed = None;
        }
        drop(s);
        if let (true, Some(ch)) = (fire, &self.channel) {
            ch.events.lock().push_back(self.clone());
            ch.fd.signal();
        }
        None
    }
}
