//! The verbs: the public handles (Device, Pd, Mr, Cq, CompChannel, Qp, Srq,
//! Ah) with the semantics and errnos of the verbs specification. Each checks
//! its arguments and calls down into the device; none holds protocol state.
#![forbid(unsafe_code)]

mod cq;
mod device;
mod mr;
mod qp;
mod srq;

pub use crate::device::publish;
pub use crate::device::stats::DeviceStats;
pub use crate::resources::counters::Stats;
pub use crate::types::*;
pub use cq::{CompChannel, Cq};
pub use device::{Device, DeviceAttr, OdpCaps, PortAttr};
pub use mr::Mr;
pub use qp::{Qp, QpInitAttr};
pub use srq::Srq;

use crate::device::DeviceInner;
use std::sync::Arc;

/// A protection domain (`ibv_pd`).
#[derive(Clone)]
pub struct Pd {
    dev: Arc<DeviceInner>,
    id: u32,
}

impl Pd {
    fn new(dev: Arc<DeviceInner>) -> Pd {
        let id = dev.new_object_id();
        Pd { dev, id }
    }
    pub(crate) fn dev(&self) -> &Arc<DeviceInner> {
        &self.dev
    }
    pub(crate) fn id(&self) -> u32 {
        self.id
    }
    /// `ibv_reg_mr`: pinned, or ODP with `Access::ON_DEMAND`; implicit ODP is
    /// `addr` 0 with `len` `u64::MAX`.
    pub fn reg_mr(&self, addr: u64, len: u64, access: Access) -> Result<Mr> {
        Mr::register(self, addr, len, access)
    }
    pub fn create_qp(&self, attr: QpInitAttr) -> Result<Qp> {
        Qp::create(self, attr)
    }
    /// `ibv_create_srq`: up to `max_wr` receive WQEs of `max_sge` entries;
    /// `limit` (0: none) arms the limit event.
    pub fn create_srq(&self, max_wr: u32, max_sge: u32, limit: u32) -> Result<Srq> {
        Srq::create(self, max_wr, max_sge, limit)
    }
    /// `ibv_create_ah`: the destination GID of UD sends.
    pub fn create_ah(&self, dgid: Gid) -> Ah {
        Ah { dgid }
    }
}
