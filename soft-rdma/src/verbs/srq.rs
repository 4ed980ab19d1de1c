//! Shared receive queues (`ibv_srq`) with the limit event, and the device's
//! asynchronous events (`ibv_get_async_event`).

use super::{Errno, RecvWr, Result};
use crate::engine::packet::{self, ResolvedSge};
use crate::engine::responder::RecvWqe;
use crate::verbs::device::{DeviceInner, MAX_QP_WR, MAX_SGE};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// An asynchronous event (`ibv_async_event`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsyncEvent {
    /// The SRQ fell below its armed limit (`IBV_EVENT_SRQ_LIMIT_REACHED`);
    /// the limit is disarmed until set again.
    SrqLimitReached { srq: u32 },
    /// A QP went to the error state on its own (`IBV_EVENT_QP_FATAL`).
    QpFatal { qpn: u32 },
    /// A QP moved to SQD has no send request in flight any more
    /// (`IBV_EVENT_SQ_DRAINED`).
    SqDrained { qpn: u32 },
    /// A completion was lost because the CQ was full (`IBV_EVENT_CQ_ERR`):
    /// the CQ is in error from then on ([`super::Cq::overflowed`]). Raised
    /// once per CQ, on the device of the QP whose completion was lost.
    CqErr { cq: u32 },
}

struct SrqState {
    queue: VecDeque<RecvWqe>,
    /// Armed limit (0: disarmed).
    limit: u32,
}

pub(crate) struct SrqShared {
    pub(crate) id: u32,
    dev: Arc<DeviceInner>,
    pd: u32,
    max_wr: u32,
    max_sge: u32,
    state: Mutex<SrqState>,
}

impl SrqShared {
    /// The next receive WQE, raising the limit event when the queue drops
    /// below the armed limit.
    pub(crate) fn take(&self) -> Option<RecvWqe> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let w = s.queue.pop_front()?;
        if s.limit != 0 && (s.queue.len() as u32) < s.limit {
            s.limit = 0;
            drop(s);
            self.dev.raise(AsyncEvent::SrqLimitReached { srq: self.id });
        }
        Some(w)
    }

    /// Put back a WQE taken for a message that was then lost (UC): it
    /// serves the next message.
    pub(crate) fn give_back(&self, w: RecvWqe) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.queue.push_front(w);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .queue
            .is_empty()
    }
}

/// A shared receive queue.
#[derive(Clone)]
pub struct Srq(pub(crate) Arc<SrqShared>);

impl Srq {
    pub(crate) fn create(pd: &super::Pd, max_wr: u32, max_sge: u32, limit: u32) -> Result<Srq> {
        if max_wr == 0 || max_wr > MAX_QP_WR || max_sge > MAX_SGE || limit > max_wr {
            return Err(Errno::EINVAL);
        }
        let dev = pd.dev().clone();
        let id = dev.new_pd_id();
        Ok(Srq(Arc::new(SrqShared {
            id,
            dev,
            pd: pd.id(),
            max_wr,
            max_sge: max_sge.max(1),
            state: Mutex::new(SrqState {
                queue: VecDeque::new(),
                limit,
            }),
        })))
    }

    pub fn id(&self) -> u32 {
        self.0.id
    }

    /// `ibv_post_srq_recv`.
    pub fn post_recv(&self, wrs: &[RecvWr<'_>]) -> std::result::Result<(), (usize, Errno)> {
        let mut s = self.0.state.lock().unwrap_or_else(|e| e.into_inner());
        for (i, wr) in wrs.iter().enumerate() {
            if s.queue.len() >= self.0.max_wr as usize {
                return Err((i, Errno::ENOMEM));
            }
            if wr.sg_list.len() > self.0.max_sge as usize {
                return Err((i, Errno::EINVAL));
            }
            let sges: Vec<ResolvedSge> = packet::resolve(&self.0.dev, wr.sg_list);
            s.queue.push_back(RecvWqe {
                wr_id: wr.wr_id,
                len: packet::total_len(&sges),
                sges,
            });
        }
        Ok(())
    }

    /// `ibv_modify_srq` with `IBV_SRQ_LIMIT`: arm the limit (0 disarms).
    pub fn set_limit(&self, limit: u32) -> Result<()> {
        if limit > self.0.max_wr {
            return Err(Errno::EINVAL);
        }
        self.0.state.lock().unwrap_or_else(|e| e.into_inner()).limit = limit;
        Ok(())
    }

    /// WQEs queued now.
    pub fn len(&self) -> usize {
        self.0
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .queue
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn pd(&self) -> u32 {
        self.0.pd
    }
}
