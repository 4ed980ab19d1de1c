//! `ibv_srq`: creation limits and posting; the queue is `resources::srq`.

use super::{Errno, RecvWr, Result};
use crate::device::DeviceInner;
use crate::limits::{MAX_QP_WR, MAX_SGE};
use crate::resources::srq::SrqShared;
use std::sync::Arc;

/// A shared receive queue.
#[derive(Clone)]
pub struct Srq {
    dev: Arc<DeviceInner>,
    pub(crate) srq: Arc<SrqShared>,
    _pd: Arc<super::Use>,
    /// An XRC SRQ's table entry and uses (`super::xrc`).
    _xrc: Option<Arc<super::xrc::XrcSrqEntry>>,
}

impl Srq {
    pub(crate) fn create(pd: &super::Pd, max_wr: u32, max_sge: u32, limit: u32) -> Result<Srq> {
        if max_wr == 0 || max_wr > MAX_QP_WR || max_sge > MAX_SGE || limit > max_wr {
            return Err(Errno::EINVAL);
        }
        let dev = pd.dev().clone();
        let id = dev.new_object_id();
        let srq = SrqShared::new(id, pd.id(), max_wr, max_sge, limit);
        Ok(Srq::from_parts(dev, Arc::new(srq), pd, None))
    }

    pub(crate) fn from_parts(
        dev: Arc<DeviceInner>,
        srq: Arc<SrqShared>,
        pd: &super::Pd,
        xrc: Option<Arc<super::xrc::XrcSrqEntry>>,
    ) -> Srq {
        Srq {
            dev,
            srq,
            _pd: Arc::new(pd.use_()),
            _xrc: xrc,
        }
    }

    pub fn id(&self) -> u32 {
        self.srq.id()
    }

    /// `ibv_post_srq_recv`.
    pub fn post_recv(&self, wrs: &[RecvWr<'_>]) -> std::result::Result<(), (usize, Errno)> {
        self.srq.post(&self.dev.mrs, wrs)
    }

    /// `ibv_modify_srq` with `IBV_SRQ_LIMIT`: arm the limit (0 disarms).
    pub fn set_limit(&self, limit: u32) -> Result<()> {
        self.srq.set_limit(limit)
    }

    /// WQEs queued now.
    pub fn len(&self) -> usize {
        self.srq.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn pd(&self) -> u32 {
        self.srq.pd()
    }

    pub(crate) fn dev(&self) -> &Arc<DeviceInner> {
        &self.dev
    }

    /// `ibv_destroy_srq`: EBUSY (and the SRQ back) while a QP uses it, as
    /// rdma-core; otherwise this handle is dropped.
    pub fn destroy(self) -> std::result::Result<(), (Srq, Errno)> {
        match super::unused(&self.srq.users) {
            Ok(()) => Ok(()),
            Err(e) => Err((self, e)),
        }
    }
}
