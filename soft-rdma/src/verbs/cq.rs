//! `ibv_cq` and `ibv_comp_channel`. Polling an empty CQ receives for its
//! device in the caller's thread (`device::rx`).

use super::{Errno, Result, Wc};
use crate::limits::MAX_CQE;
use crate::resources::cq::{ChannelShared, CqShared};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::Arc;

/// `ibv_comp_channel`: an eventfd that becomes readable when an armed CQ
/// gets a completion.
pub struct CompChannel(pub(crate) Arc<ChannelShared>);

impl CompChannel {
    pub fn new() -> Result<CompChannel> {
        let ch =
            ChannelShared::new().map_err(|e| Errno(e.raw_os_error().unwrap_or(libc::EMFILE)))?;
        Ok(CompChannel(Arc::new(ch)))
    }

    /// `ibv_get_cq_event`, non-blocking: the next CQ with an event, if any.
    /// Wait for readability of [`AsRawFd::as_raw_fd`] to block.
    pub fn get_event(&self) -> Option<Cq> {
        self.0.next_event().map(Cq)
    }
}

impl AsRawFd for CompChannel {
    fn as_raw_fd(&self) -> RawFd {
        self.0.fd()
    }
}

/// For `poll` with a timeout (e.g. through rustix) without a raw descriptor.
impl AsFd for CompChannel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.borrowed_fd()
    }
}

/// A completion queue (`ibv_cq`).
#[derive(Clone)]
pub struct Cq(pub(crate) Arc<CqShared>);

impl Cq {
    pub fn new(depth: usize, channel: Option<&CompChannel>) -> Result<Cq> {
        if depth == 0 || depth > MAX_CQE {
            return Err(Errno::EINVAL);
        }
        Ok(Cq(Arc::new(CqShared::new(
            depth,
            channel.map(|c| c.0.clone()),
        ))))
    }

    /// `ibv_poll_cq`: move up to `out.len()` completions; returns how many.
    /// An empty CQ first receives and handles what has arrived for its
    /// device, in the caller's thread.
    pub fn poll(&self, out: &mut [Wc]) -> usize {
        if out.is_empty() {
            return 0;
        }
        let driver = self.0.driver();
        if let Some(d) = &driver {
            // Posts held for a batch leave before anything else.
            d.ring_doorbells();
        }
        let n = self.0.take(out);
        let Some(d) = driver else {
            return n;
        };
        if n > 0 {
            d.poll_done();
            return n;
        }
        d.poll_empty();
        let n = self.0.take(out);
        if n > 0 {
            d.poll_done();
        }
        n
    }

    /// `ibv_req_notify_cq`. The caller is about to sleep on the channel, so
    /// the device's receive thread must be woken by arrivals again.
    pub fn req_notify(&self, solicited_only: bool) -> Result<()> {
        if !self.0.has_channel() {
            return Err(Errno::EINVAL);
        }
        self.0.arm(solicited_only);
        if let Some(d) = self.0.driver() {
            d.ring_doorbells();
            d.poll_done();
        }
        Ok(())
    }

    /// Whether the CQ overflowed (completions were lost): it is in error.
    pub fn overflowed(&self) -> bool {
        self.lost() > 0
    }

    /// How many completions were lost because the CQ was full.
    pub fn lost(&self) -> u64 {
        self.0.lost()
    }

    /// The identity `AsyncEvent::CqErr` reports.
    pub fn id(&self) -> u32 {
        self.0.id()
    }

    pub fn depth(&self) -> usize {
        self.0.depth()
    }

    /// Completions waiting to be polled now (no polling, no receiving).
    pub fn waiting(&self) -> usize {
        self.0.waiting()
    }

    /// `ibv_resize_cq`: grow or shrink to `depth` completions, keeping those
    /// waiting, in order. EINVAL (as rxe) for a depth outside
    /// 1..=`max_cqe` or below the number of completions waiting now; the
    /// CQ is then unchanged.
    pub fn resize(&self, depth: usize) -> Result<()> {
        if depth == 0 || depth > MAX_CQE || !self.0.resize(depth) {
            return Err(Errno::EINVAL);
        }
        Ok(())
    }

    /// `ibv_destroy_cq`: EBUSY (and the CQ back) while a QP uses it, as
    /// rdma-core; otherwise this handle is dropped.
    pub fn destroy(self) -> std::result::Result<(), (Cq, Errno)> {
        match super::unused(&self.0.users) {
            Ok(()) => Ok(()),
            Err(e) => Err((self, e)),
        }
    }
}
