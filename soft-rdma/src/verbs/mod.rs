//! The verbs: the public handles (Device, Pd, Mr, Cq, CompChannel, Qp, Srq,
//! Ah) with the semantics and errnos of the verbs specification. Each checks
//! its arguments and calls down into the device; none holds protocol state.
#![forbid(unsafe_code)]

mod cq;
mod device;
mod mr;
mod mw;
mod qp;
mod srq;
mod xrc;

pub use crate::device::mcast::{is_multicast, MULTICAST_QPN};
pub use crate::device::publish;
pub use crate::device::stats::{DeviceStats, MrStats};
pub use crate::resources::counters::Stats;
pub use crate::types::*;
pub use cq::{CompChannel, Cq};
pub use device::{Device, DeviceAttr, OdpCaps, PeerWatch, PlacementCaps, PortAttr};
pub use mr::{Mr, Rereg};
pub use mw::Mw;
pub use qp::{Qp, QpInitAttr};
pub use srq::Srq;
pub use xrc::Xrcd;

use crate::device::DeviceInner;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// One object counted as using another (rdma-core's `usecnt`) until it is
/// dropped: a PD, CQ or SRQ in use refuses destruction with EBUSY.
pub(crate) struct Use(Arc<AtomicUsize>);

impl Use {
    pub(crate) fn of(users: &Arc<AtomicUsize>) -> Use {
        users.fetch_add(1, Ordering::AcqRel);
        Use(users.clone())
    }
}

impl Drop for Use {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// EBUSY while anything uses the object `users` counts for.
fn unused(users: &AtomicUsize) -> Result<()> {
    match users.load(Ordering::Acquire) {
        0 => Ok(()),
        _ => Err(Errno::EBUSY),
    }
}

/// A protection domain (`ibv_pd`). Clones are the same PD.
#[derive(Clone)]
pub struct Pd {
    dev: Arc<DeviceInner>,
    id: u32,
    /// MRs, memory windows, QPs and SRQs on this PD.
    users: Arc<AtomicUsize>,
}

impl Pd {
    fn new(dev: Arc<DeviceInner>) -> Pd {
        let id = dev.new_object_id();
        Pd {
            dev,
            id,
            users: Arc::default(),
        }
    }
    pub(crate) fn use_(&self) -> Use {
        Use::of(&self.users)
    }
    /// `ibv_dealloc_pd`: EBUSY (and the PD back) while an MR, QP or SRQ
    /// uses it, as rdma-core; otherwise this handle is dropped.
    pub fn dealloc(self) -> std::result::Result<(), (Pd, Errno)> {
        match unused(&self.users) {
            Ok(()) => Ok(()),
            Err(e) => Err((self, e)),
        }
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
    /// `ibv_alloc_mw` (see [`Mw`]).
    pub fn alloc_mw(&self, kind: MwType) -> Result<Mw> {
        Mw::alloc(self, kind)
    }
    pub fn create_qp(&self, attr: QpInitAttr) -> Result<Qp> {
        Qp::create(self, attr, None)
    }
    /// The device's GSI QP, QP1: a UD QP that management datagrams (the
    /// CM's MADs) are sent to and from, with the GSI Q_Key. One per device
    /// (EBUSY while it lives); EINVAL for another type.
    pub fn create_gsi_qp(&self, attr: QpInitAttr) -> Result<Qp> {
        if attr.qp_type != QpType::Ud {
            return Err(Errno::EINVAL);
        }
        Qp::create(self, attr, Some(GSI_QPN))
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
