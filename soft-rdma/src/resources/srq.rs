//! Shared receive queues (`ibv_srq`) with the limit event.

use super::events::EventQueue;
use super::mr::MrTable;
use super::sge::RecvWqe;
use super::xrcd::XrcSrq;
use crate::sync::{Level, OrderedMutex};
use crate::types::{AsyncEvent, Errno, RecvWr};
use std::collections::VecDeque;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

struct SrqState {
    queue: VecDeque<RecvWqe>,
    /// Armed limit (0: disarmed).
    limit: u32,
}

pub(crate) struct SrqShared {
    id: u32,
    pd: u32,
    max_wr: u32,
    max_sge: u32,
    state: OrderedMutex<SrqState>,
    /// QPs using this SRQ: destroying it is EBUSY meanwhile (as rdma-core).
    pub(crate) users: Arc<AtomicUsize>,
    /// An XRC SRQ's domain and CQ (`None`: a basic SRQ).
    xrc: Option<XrcSrq>,
}

impl SrqShared {
    pub(crate) fn new(id: u32, pd: u32, max_wr: u32, max_sge: u32, limit: u32) -> SrqShared {
        SrqShared {
            id,
            pd,
            max_wr,
            max_sge: max_sge.max(1),
            users: Arc::default(),
            xrc: None,
            state: OrderedMutex::new(
                Level::Srq,
                SrqState {
                    queue: VecDeque::new(),
                    limit,
                },
            ),
        }
    }

    /// Make it an XRC SRQ of domain `x.xrcd`, completing into `x.cq`.
    pub(crate) fn with_xrc(self, x: XrcSrq) -> SrqShared {
        SrqShared {
            xrc: Some(x),
            ..self
        }
    }

    pub(crate) fn xrc(&self) -> Option<&XrcSrq> {
        self.xrc.as_ref()
    }

    pub(crate) fn id(&self) -> u32 {
        self.id
    }

    pub(crate) fn pd(&self) -> u32 {
        self.pd
    }

    /// `ibv_post_srq_recv`; on an error, the index of the first bad WR.
    pub(crate) fn post(&self, mrs: &MrTable, wrs: &[RecvWr<'_>]) -> Result<(), (usize, Errno)> {
        for (i, wr) in wrs.iter().enumerate() {
            // Keys resolved before the SRQ lock: the MR table is not taken
            // under it (see the lock order).
            let wqe = RecvWqe::new(mrs, wr.wr_id, wr.sg_list);
            let mut s = self.state.lock();
            if s.queue.len() >= self.max_wr as usize {
                return Err((i, Errno::ENOMEM));
            }
            if wr.sg_list.len() > self.max_sge as usize {
                return Err((i, Errno::EINVAL));
            }
            s.queue.push_back(wqe);
        }
        Ok(())
    }

    /// `ibv_modify_srq` with `IBV_SRQ_LIMIT`: arm the limit (0 disarms).
    pub(crate) fn set_limit(&self, limit: u32) -> Result<(), Errno> {
        if limit > self.max_wr {
            return Err(Errno::EINVAL);
        }
        self.state.lock().limit = limit;
        Ok(())
    }

    /// The next receive WQE, raising the limit event when the queue drops
    /// below the armed limit.
    pub(crate) fn take(&self, events: &EventQueue) -> Option<RecvWqe> {
        let mut s = self.state.lock();
        let w = s.queue.pop_front()?;
        if s.limit != 0 && (s.queue.len() as u32) < s.limit {
            s.limit = 0;
            drop(s);
            events.raise(AsyncEvent::SrqLimitReached { srq: self.id });
        }
        Some(w)
    }

    /// Put back a WQE taken for a message that was then lost (UC): it
    /// serves the next message.
    pub(crate) fn give_back(&self, w: RecvWqe) {
        self.state.lock().queue.push_front(w);
    }

    pub(crate) fn len(&self) -> usize {
        self.state.lock().queue.len()
    }
}
