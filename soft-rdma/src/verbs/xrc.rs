//! XRC verbs: domains (`ibv_open_xrcd`), XRC SRQs (`ibv_create_srq_ex`
//! with `IBV_SRQT_XRC`), target QPs (`IBV_QPT_XRC_RECV`, `ibv_open_qp`)
//! and initiators' sends naming a remote SRQ. The protocol is
//! `crate::qp::xrc`; the SRQ table `crate::resources::xrcd`.

use super::{Cq, Errno, Pd, Qp, QpCap, QpType, Result, SendWr, Srq, Use};
use crate::device::DeviceInner;
use crate::limits::{MAX_QP_WR, MAX_SGE};
use crate::qp::{QpConfig, QpShared};
use crate::resources::cq::{CqShared, Driver};
use crate::resources::srq::SrqShared;
use crate::resources::xrcd::XrcSrq;
use crate::sync::{Level, OrderedMutex};
use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Weak};

/// An XRC domain (`ibv_xrcd`). Clones are the same domain.
#[derive(Clone)]
pub struct Xrcd(Arc<XrcdInner>);

struct XrcdInner {
    dev: Arc<DeviceInner>,
    id: u32,
    /// XRC SRQs and target QPs in the domain: closing is EBUSY meanwhile.
    users: Arc<AtomicUsize>,
    /// The domain's target QPs by number, for `open_qp`.
    tgts: OrderedMutex<HashMap<u32, Weak<Target>>>,
}

/// A target QP, shared by the handles that created or opened it: it is
/// destroyed with the last of them (as the kernel keeps an XRC target QP
/// until every opener destroyed it).
pub(crate) struct Target {
    dev: Arc<DeviceInner>,
    pub(crate) qp: Arc<QpShared>,
    _xrcd: Use,
}

impl Target {
    pub(crate) fn dev(&self) -> &Arc<DeviceInner> {
        &self.dev
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        self.dev.destroy_qp(&self.qp);
    }
}

/// What an XRC SRQ holds besides its queue: its place in the device's XRC
/// SRQ table (left with the last handle) and its uses of the domain and CQ.
pub(crate) struct XrcSrqEntry {
    dev: Arc<DeviceInner>,
    srqn: u32,
    _uses: [Use; 2],
}

impl Drop for XrcSrqEntry {
    fn drop(&mut self) {
        self.dev.xrc_srqs.remove(self.srqn);
    }
}

impl super::Device {
    /// `ibv_open_xrcd` of a new domain. (Sharing a domain between opens of
    /// one file is the verbs shim's business: it keeps the `Xrcd`.)
    pub fn open_xrcd(&self) -> Xrcd {
        let dev = self.inner().clone();
        Xrcd(Arc::new(XrcdInner {
            id: dev.new_object_id(),
            dev,
            users: Arc::default(),
            tgts: OrderedMutex::new(Level::Xrcd, HashMap::new()),
        }))
    }
}

impl Xrcd {
    pub fn id(&self) -> u32 {
        self.0.id
    }

    /// `ibv_close_xrcd`: EBUSY (and the domain back) while an XRC SRQ or a
    /// target QP uses it; otherwise this handle is dropped.
    pub fn close(self) -> std::result::Result<(), (Xrcd, Errno)> {
        match super::unused(&self.0.users) {
            Ok(()) => Ok(()),
            Err(e) => Err((self, e)),
        }
    }

    /// `ibv_create_srq_ex` with `IBV_SRQT_XRC`: an SRQ on `pd` that target
    /// QPs of this domain deliver into, their completions going to `cq`.
    /// Its number (`Srq::srq_num`) is what initiators name.
    pub fn create_srq(
        &self,
        pd: &Pd,
        cq: &Cq,
        max_wr: u32,
        max_sge: u32,
        limit: u32,
    ) -> Result<Srq> {
        let dev = &self.0.dev;
        if !Arc::ptr_eq(pd.dev(), dev) {
            return Err(Errno::EINVAL);
        }
        if max_wr == 0 || max_wr > MAX_QP_WR || max_sge > MAX_SGE || limit > max_wr {
            return Err(Errno::EINVAL);
        }
        // A CQ polls the device that fills it: another device's is EINVAL.
        let driver: Weak<dyn Driver> = Arc::downgrade(dev) as _;
        if cq.0.driven_by_other(&driver) {
            return Err(Errno::EINVAL);
        }
        let id = dev.new_object_id();
        // An XRCETH names 24 bits. (The device's object numbers reach past
        // that only after 2^24 PDs and SRQs.)
        if id > crate::wire::MAX_U24 {
            return Err(Errno::ENOMEM);
        }
        cq.0.attach(driver);
        let srq = SrqShared::new(id, pd.id(), max_wr, max_sge, limit).with_xrc(XrcSrq {
            xrcd: self.0.id,
            cq: cq.0.clone(),
        });
        let srq = Arc::new(srq);
        dev.xrc_srqs.insert(&srq);
        let entry = XrcSrqEntry {
            dev: dev.clone(),
            srqn: id,
            _uses: [Use::of(&self.0.users), Use::of(&cq.0.users)],
        };
        Ok(Srq::from_parts(dev.clone(), srq, pd, Some(Arc::new(entry))))
    }

    /// `ibv_create_qp_ex` with `IBV_QPT_XRC_RECV`: a target QP of this
    /// domain — no send queue, no PD, no CQ of its own.
    pub fn create_target_qp(&self) -> Result<Qp> {
        let dev = &self.0.dev;
        // Never completes anything itself: its receives complete on the
        // SRQs' CQs, and it sends no WRs.
        let none = Arc::new(CqShared::new(1, None));
        let qp = dev.create_qp(
            QpConfig {
                qpn: 0,
                qp_type: QpType::XrcRecv,
                pd: 0, // no PD of its own: requests use their SRQ's
                send_cq: none.clone(),
                recv_cq: none,
                cap: QpCap::default(),
                sq_sig_all: false,
                srq: None,
                xrcd: Some(self.0.id),
            },
            None,
        )?;
        let t = Arc::new(Target {
            dev: dev.clone(),
            qp,
            _xrcd: Use::of(&self.0.users),
        });
        let mut tgts = self.0.tgts.lock();
        tgts.retain(|_, w| w.strong_count() > 0);
        tgts.insert(t.qp.qpn(), Arc::downgrade(&t));
        drop(tgts);
        Ok(Qp::of_target(t))
    }

    /// `ibv_open_qp`: another handle on target QP `qpn` of this domain
    /// (ENOENT if the domain has none of that number, as rdma-core's
    /// kernel answer for an unknown QP).
    pub fn open_qp(&self, qpn: u32) -> Result<Qp> {
        let t = self.0.tgts.lock().get(&qpn).and_then(Weak::upgrade);
        t.map(Qp::of_target).ok_or(Errno::ENOENT)
    }
}

impl Srq {
    /// `ibv_get_srq_num`: the number an XRC initiator names this SRQ by.
    pub fn srq_num(&self) -> u32 {
        self.srq.id()
    }

    /// Whether this is an XRC SRQ.
    pub fn is_xrc(&self) -> bool {
        self.srq.xrc().is_some()
    }
}

impl Qp {
    /// `ibv_post_send` on an XRC initiator: each WR with the remote XRC SRQ
    /// it is for (`srqns[i]` for `wrs[i]`; `wr.qp_type.xrc.remote_srqn`).
    /// EINVAL for a count that does not match or a QP of another type.
    pub fn post_send_xrc(
        &self,
        wrs: &[SendWr<'_>],
        srqns: &[u32],
    ) -> std::result::Result<(), (usize, Errno)> {
        if wrs.len() != srqns.len() {
            return Err((0, Errno::EINVAL));
        }
        self.dev().post_send(self.shared(), wrs, srqns, false)
    }

    /// The extended API's batch (`ibv_wr_complete`) on an XRC initiator:
    /// all or none (see [`Qp::post_send_batch`]).
    pub fn post_send_batch_xrc(
        &self,
        wrs: &[SendWr<'_>],
        srqns: &[u32],
    ) -> std::result::Result<(), (usize, Errno)> {
        if wrs.len() != srqns.len() {
            return Err((0, Errno::EINVAL));
        }
        self.dev().post_send(self.shared(), wrs, srqns, true)
    }
}
