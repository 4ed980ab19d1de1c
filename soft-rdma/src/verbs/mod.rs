//! Verbs objects with the semantics and errors of the verbs specification.

mod cq;
pub(crate) mod device;
pub(crate) mod mr;
pub mod publish;
pub(crate) mod qp;
mod srq;
pub(crate) mod stats;
mod types;

pub use cq::{CompChannel, Cq};
pub use device::{Device, DeviceAttr, OdpCaps, PortAttr};
pub use mr::Mr;
pub use qp::{Qp, QpInitAttr};
pub use srq::{AsyncEvent, Srq};
pub use stats::{DeviceStats, Stats};
pub use types::*;

use device::DeviceInner;
use std::sync::Arc;

/// A protection domain (`ibv_pd`).
#[derive(Clone)]
pub struct Pd {
    dev: Arc<DeviceInner>,
    id: u32,
}

impl Pd {
    fn new(dev: Arc<DeviceInner>) -> Pd {
        let id = dev.new_pd_id();
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

/// An address handle (`ibv_ah`): where UD sends go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ah {
    pub dgid: Gid,
}
