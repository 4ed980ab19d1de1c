//! Completion queues and completion channels (real pollable descriptors).

use super::device::DeviceInner;
use super::{Errno, Result, Wc};
use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

/// `ibv_comp_channel`: an eventfd that becomes readable when an armed CQ
/// gets a completion.
pub struct CompChannel(pub(crate) Arc<ChannelShared>);

pub(crate) struct ChannelShared {
    fd: OwnedFd,
    /// CQs whose events are pending (`ibv_get_cq_event` order).
    events: Mutex<VecDeque<Arc<CqShared>>>,
}

impl CompChannel {
    pub fn new() -> Result<CompChannel> {
        let fd =
            crate::sys::eventfd().map_err(|e| Errno(e.raw_os_error().unwrap_or(libc::EMFILE)))?;
        Ok(CompChannel(Arc::new(ChannelShared {
            fd,
            events: Mutex::new(VecDeque::new()),
        })))
    }

    /// `ibv_get_cq_event`, non-blocking: the next CQ with an event, if any.
    /// Wait for readability of [`AsRawFd::as_raw_fd`] to block.
    pub fn get_event(&self) -> Option<Cq> {
        let mut ev = self.0.events.lock().unwrap_or_else(|e| e.into_inner());
        let cq = ev.pop_front()?;
        if ev.is_empty() {
            crate::sys::eventfd_drain(&self.0.fd);
        }
        Some(Cq(cq))
    }
}

impl AsRawFd for CompChannel {
    fn as_raw_fd(&self) -> RawFd {
        self.0.fd.as_raw_fd()
    }
}

pub(crate) struct CqState {
    ring: VecDeque<Wc>,
    /// `ibv_req_notify_cq`: Some(solicited_only) while armed.
    armed: Option<bool>,
    /// Completions lost to overflow; the CQ is in error once this is
    /// non-zero (async event `IBV_EVENT_CQ_ERR`).
    lost: u64,
}

pub(crate) struct CqShared {
    /// Names the CQ in [`super::AsyncEvent::CqErr`]; unique in the process.
    pub(crate) id: u32,
    pub(crate) depth: usize,
    state: Mutex<CqState>,
    channel: Option<Arc<ChannelShared>>,
    /// The device of the first QP using this CQ: polling the CQ empty
    /// receives for it inline (`engine::rx`). Weak: the device holds its
    /// QPs, which hold their CQs.
    driver: OnceLock<Weak<DeviceInner>>,
}

/// A completion queue (`ibv_cq`).
#[derive(Clone)]
pub struct Cq(pub(crate) Arc<CqShared>);

impl Cq {
    pub fn new(depth: usize, channel: Option<&CompChannel>) -> Result<Cq> {
        if depth == 0 || depth > super::device::MAX_CQE {
            return Err(Errno::EINVAL);
        }
        static NEXT_ID: AtomicU32 = AtomicU32::new(1);
        Ok(Cq(Arc::new(CqShared {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            depth,
            state: Mutex::new(CqState {
                ring: VecDeque::with_capacity(depth),
                armed: None,
                lost: 0,
            }),
            channel: channel.map(|c| c.0.clone()),
            driver: OnceLock::new(),
        })))
    }

    /// `ibv_poll_cq`: move up to `out.len()` completions; returns how many.
    /// An empty CQ first receives and handles what has arrived for its
    /// device, in the caller's thread (see `engine::rx`).
    pub fn poll(&self, out: &mut [Wc]) -> usize {
        if out.is_empty() {
            return 0;
        }
        let dev = self.0.driver.get().and_then(Weak::upgrade);
        if let Some(dev) = &dev {
            // Posts held for a batch leave before anything else.
            dev.doorbells.ring(dev);
        }
        let n = self.take(out);
        let Some(dev) = dev else {
            return n;
        };
        if n > 0 {
            dev.receiver.poll_done(&dev);
            return n;
        }
        dev.receiver.poll(&dev);
        let n = self.take(out);
        if n > 0 {
            dev.receiver.poll_done(&dev);
        }
        n
    }

    fn take(&self, out: &mut [Wc]) -> usize {
        let mut s = self.0.state.lock().unwrap_or_else(|e| e.into_inner());
        let n = out.len().min(s.ring.len());
        for slot in out.iter_mut().take(n) {
            *slot = s.ring.pop_front().expect("counted");
        }
        n
    }

    /// `ibv_req_notify_cq`. The caller is about to sleep on the channel, so
    /// the device's receive thread must be woken by arrivals again.
    pub fn req_notify(&self, solicited_only: bool) -> Result<()> {
        if self.0.channel.is_none() {
            return Err(Errno::EINVAL);
        }
        self.0.state.lock().unwrap_or_else(|e| e.into_inner()).armed = Some(solicited_only);
        if let Some(dev) = self.0.driver.get().and_then(Weak::upgrade) {
            dev.doorbells.ring(&dev);
            dev.receiver.poll_done(&dev);
        }
        Ok(())
    }

    /// Whether the CQ overflowed (completions were lost): it is in error.
    pub fn overflowed(&self) -> bool {
        self.lost() > 0
    }

    /// How many completions were lost because the CQ was full.
    pub fn lost(&self) -> u64 {
        self.0.state.lock().unwrap_or_else(|e| e.into_inner()).lost
    }

    /// The identity [`super::AsyncEvent::CqErr`] reports.
    pub fn id(&self) -> u32 {
        self.0.id
    }

    pub fn depth(&self) -> usize {
        self.0.depth
    }
}

impl CqShared {
    /// Record the device that polling this CQ drives (the first one to ask).
    pub(crate) fn attach(&self, dev: &Arc<DeviceInner>) {
        let _ = self.driver.set(Arc::downgrade(dev));
    }

    /// Add a completion; signals the channel if armed (and, when armed for
    /// solicited only, if `solicited`). A full CQ loses the completion and
    /// goes to error: the caller raises `IBV_EVENT_CQ_ERR` when this returns
    /// [`Overflow::First`].
    #[must_use]
    pub(crate) fn push(self: &Arc<Self>, wc: Wc, solicited: bool) -> Option<Overflow> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.ring.len() >= self.depth {
            s.lost += 1;
            return Some(if s.lost == 1 {
                Overflow::First
            } else {
                Overflow::Again
            });
        }
        s.ring.push_back(wc);
        let fire = match s.armed {
            Some(only_solicited) => {
                !only_solicited || solicited || wc.status != super::WcStatus::Success
            }
            None => false,
        };
        if fire {
            s.armed = None;
        }
        drop(s);
        if let (true, Some(ch)) = (fire, &self.channel) {
            ch.events
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push_back(self.clone());
            crate::sys::eventfd_signal(&ch.fd);
        }
        None
    }
}

/// A completion was lost to a full CQ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Overflow {
    /// The first loss: the CQ just went to error.
    First,
    Again,
}
