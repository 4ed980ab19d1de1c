//! `ibv_qp`: creation (the limits checked), and each verb passed to the
//! device; the protocol is `crate::qp`.

use super::{Cq, Errno, Gid, QpAttr, QpCap, QpState, QpType, RecvWr, Result, SendWr};
use crate::device::DeviceInner;
use crate::limits::{MAX_INLINE, MAX_QP_WR, MAX_SGE};
use crate::qp::{QpConfig, QpShared};
use std::sync::Arc;

/// `ibv_qp_init_attr`.
#[derive(Clone)]
pub struct QpInitAttr {
    pub qp_type: QpType,
    pub send_cq: Cq,
    pub recv_cq: Cq,
    pub cap: QpCap,
    /// Every send WR generates a completion (`sq_sig_all`).
    pub sq_sig_all: bool,
    /// Receive from this shared receive queue instead of the QP's own.
    pub srq: Option<super::Srq>,
}

/// A queue pair (`ibv_qp`).
pub struct Qp {
    dev: Arc<DeviceInner>,
    qp: Arc<QpShared>,
    /// The PD, CQs and SRQ counted as in use until the QP is gone (dropped
    /// after `Drop::drop` destroyed it).
    _uses: Vec<super::Use>,
    /// An XRC target QP: shared by its handles, destroyed with the last.
    target: Option<Arc<super::xrc::Target>>,
}

impl Qp {
    /// A QP numbered by the device, or numbered `fixed` (a special QP).
    pub(crate) fn create(pd: &super::Pd, attr: QpInitAttr, fixed: Option<u32>) -> Result<Qp> {
        let cap = attr.cap;
        // A target QP belongs to an XRC domain (`Xrcd::create_target_qp`).
        if attr.qp_type == QpType::XrcRecv {
            return Err(Errno::EINVAL);
        }
        if cap.max_send_wr > MAX_QP_WR
            || cap.max_recv_wr > MAX_QP_WR
            || cap.max_send_sge > MAX_SGE
            || cap.max_recv_sge > MAX_SGE
            || cap.max_inline_data > MAX_INLINE
        {
            return Err(Errno::EINVAL);
        }
        // As rxe: a send WQE has room for max_send_sge SGEs or the inline
        // data, whichever is more, so inline sends of up to that many SGEs'
        // bytes (16 each) are allowed even when less was asked for
        // (rdma_xclient asks for 0 and sends 16 bytes inline).
        let cap = QpCap {
            max_inline_data: cap
                .max_inline_data
                .max(cap.max_send_sge.saturating_mul(16))
                .min(MAX_INLINE),
            ..cap
        };
        // Another device's SRQ (its PD ids are its own): EINVAL, as a
        // handle of another context is to rdma-core.
        if attr
            .srq
            .as_ref()
            .is_some_and(|s| s.pd() != pd.id() || !Arc::ptr_eq(s.dev(), pd.dev()))
        {
            return Err(Errno::EINVAL);
        }
        let mut uses = vec![
            pd.use_(),
            super::Use::of(&attr.send_cq.0.users),
            super::Use::of(&attr.recv_cq.0.users),
        ];
        if let Some(s) = &attr.srq {
            uses.push(super::Use::of(&s.srq.users));
        }
        let dev = pd.dev().clone();
        let qp = dev.create_qp(
            QpConfig {
                qpn: 0, // the device assigns it
                qp_type: attr.qp_type,
                pd: pd.id(),
                send_cq: attr.send_cq.0,
                recv_cq: attr.recv_cq.0,
                cap,
                sq_sig_all: attr.sq_sig_all,
                srq: attr.srq.map(|s| s.srq),
                xrcd: None,
            },
            fixed,
        )?;
        Ok(Qp {
            dev,
            qp,
            _uses: uses,
            target: None,
        })
    }

    /// A handle on an XRC target QP.
    pub(crate) fn of_target(t: Arc<super::xrc::Target>) -> Qp {
        Qp {
            dev: t.dev().clone(),
            qp: t.qp.clone(),
            _uses: Vec::new(),
            target: Some(t),
        }
    }

    pub(crate) fn dev(&self) -> &Arc<DeviceInner> {
        &self.dev
    }

    pub(crate) fn shared(&self) -> &Arc<QpShared> {
        &self.qp
    }

    pub fn qp_num(&self) -> u32 {
        self.qp.qpn()
    }

    pub fn qp_type(&self) -> QpType {
        self.qp.qp_type()
    }

    pub fn state(&self) -> QpState {
        self.qp.lock().state()
    }

    pub fn cap(&self) -> QpCap {
        self.qp.cap()
    }

    /// `ibv_modify_qp`. Transitions and required attributes follow the verbs
    /// specification (RC/UC connect at RTR, UD needs a Q_Key at INIT);
    /// anything else is `EINVAL` and changes nothing.
    pub fn modify(&self, attr: &QpAttr) -> Result<()> {
        self.dev.modify_qp(&self.qp, attr)
    }

    /// `ibv_post_send`: queue and transmit (inline, or at the next poll when
    /// the doorbell waits for more). On an error, the index of the first bad
    /// WR and its errno (`bad_wr`); the WRs before it were posted.
    pub fn post_send(&self, wrs: &[SendWr<'_>]) -> std::result::Result<(), (usize, Errno)> {
        self.dev.post_send(&self.qp, wrs, &[], false)
    }

    /// The extended send API's batch (`ibv_wr_complete`): all of `wrs` or
    /// none. Every WR is checked, with room for the whole batch in the send
    /// queue, before any is queued; on an error nothing was posted and the
    /// first bad WR's index and errno are returned.
    pub fn post_send_batch(&self, wrs: &[SendWr<'_>]) -> std::result::Result<(), (usize, Errno)> {
        self.dev.post_send(&self.qp, wrs, &[], true)
    }

    /// `ibv_post_recv`.
    pub fn post_recv(&self, wrs: &[RecvWr<'_>]) -> std::result::Result<(), (usize, Errno)> {
        self.dev.post_recv(&self.qp, wrs)
    }

    /// `ibv_attach_mcast`: datagrams sent to the multicast `gid` reach
    /// this UD QP too. `lid` is ignored (RoCE has none). EINVAL for a QP
    /// other than UD or a GID that is not multicast; ENOMEM past the
    /// device's multicast limits (`DeviceAttr::max_mcast_*`).
    pub fn attach_mcast(&self, gid: Gid, _lid: u16) -> Result<()> {
        self.dev.attach_mcast(&self.qp, gid)
    }

    /// `ibv_detach_mcast`: EINVAL as for attach, and if the QP is not
    /// attached to `gid`.
    pub fn detach_mcast(&self, gid: Gid, _lid: u16) -> Result<()> {
        self.dev.detach_mcast(&self.qp, gid)
    }

    /// The local endpoint's GID this QP sends from.
    pub fn local_gid(&self) -> Gid {
        self.dev.gid
    }
}

impl Drop for Qp {
    fn drop(&mut self) {
        if self.target.is_none() {
            self.dev.destroy_qp(&self.qp);
        }
    }
}
