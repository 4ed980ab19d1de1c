//! Queue pairs: the object, its state machine and posting. The protocol work
//! lives in `engine` (requester, responder, completer), all under the QP lock.
//!
//! Lock order: QP lock → CQ lock. Packets a QP produces are sent while its
//! lock is held, so they leave in PSN order.

use super::cq::CqShared;
use super::{
    Access, Cq, Errno, Gid, Mtu, QpAttr, QpCap, QpState, QpType, RecvWr, Result, SendOp, SendWr,
    Wc, WcOpcode, WcStatus,
};
use crate::engine::doorbell;
use crate::engine::packet::{self, ResolvedSge, TxQueue};
use crate::engine::requester::{ReqState, SendWqe};
use crate::engine::responder::{RecvWqe, RespState};
use crate::verbs::device::{DeviceInner, MAX_QP_WR, MAX_SGE};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

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

pub(crate) struct QpShared {
    pub(crate) qpn: u32,
    pub(crate) qp_type: QpType,
    pub(crate) dev: Arc<DeviceInner>,
    pub(crate) pd: u32,
    pub(crate) send_cq: Arc<CqShared>,
    pub(crate) recv_cq: Arc<CqShared>,
    pub(crate) cap: QpCap,
    pub(crate) sq_sig_all: bool,
    pub(crate) srq: Option<Arc<super::srq::SrqShared>>,
    pub(crate) inner: Mutex<QpInner>,
}

/// Everything under the QP lock.
pub(crate) struct QpInner {
    pub(crate) state: QpState,
    pub(crate) access: Access,
    pub(crate) qkey: u32,
    pub(crate) path_mtu: Mtu,
    pub(crate) dest_qpn: u32,
    pub(crate) peer: Option<SocketAddr>,
    pub(crate) timeout: u8,
    pub(crate) retry_cnt: u8,
    pub(crate) rnr_retry: u8,
    pub(crate) min_rnr_timer: u8,
    pub(crate) max_rd_atomic: u8,
    pub(crate) max_dest_rd_atomic: u8,
    pub(crate) req: ReqState,
    pub(crate) resp: RespState,
}

impl QpShared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, QpInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next receive WQE: from the SRQ if the QP has one.
    pub(crate) fn take_recv(&self, q: &mut QpInner) -> Option<RecvWqe> {
        match &self.srq {
            Some(s) => s.take(),
            None => q.resp.rq.pop_front(),
        }
    }

    pub(crate) fn has_recv(&self, q: &QpInner) -> bool {
        match &self.srq {
            Some(s) => !s.is_empty(),
            None => !q.resp.rq.is_empty(),
        }
    }

    /// Post a completion on the send CQ.
    pub(crate) fn complete_send(&self, wqe: &SendWqe, status: WcStatus) {
        if status == WcStatus::Success && !(wqe.signaled || self.sq_sig_all) {
            return;
        }
        let opcode = match wqe.op {
            SendOp::Send | SendOp::SendImm(_) | SendOp::SendInv(_) => WcOpcode::Send,
            SendOp::Write { .. } | SendOp::WriteImm { .. } => WcOpcode::RdmaWrite,
            SendOp::Read { .. } => WcOpcode::RdmaRead,
            SendOp::CompareSwap { .. } => WcOpcode::CompSwap,
            SendOp::FetchAdd { .. } => WcOpcode::FetchAdd,
        };
        let byte_len = match wqe.op {
            SendOp::Read { .. } | SendOp::CompareSwap { .. } | SendOp::FetchAdd { .. } => {
                wqe.len as u32
            }
            _ => 0,
        };
        let wc = Wc {
            wr_id: wqe.wr_id,
            status,
            opcode,
            byte_len,
            imm: None,
            invalidated_rkey: None,
            qp_num: self.qpn,
            src_qp: 0,
            grh: false,
        };
        let lost = self.send_cq.push(wc, false);
        self.on_cq_overflow(&self.send_cq, lost);
    }

    /// Post a completion on the receive CQ.
    pub(crate) fn complete_recv(&self, wc: Wc, solicited: bool) {
        let lost = self.recv_cq.push(
            Wc {
                qp_num: self.qpn,
                ..wc
            },
            solicited,
        );
        self.on_cq_overflow(&self.recv_cq, lost);
    }

    /// A full CQ lost a completion of this QP: the CQ is in error, which the
    /// application learns once (`IBV_EVENT_CQ_ERR`). The QP goes on, as on
    /// rxe; what the lost completion would have said is gone.
    fn on_cq_overflow(&self, cq: &Arc<super::cq::CqShared>, lost: Option<super::cq::Overflow>) {
        if lost == Some(super::cq::Overflow::First) {
            crate::log::log!(Error, "qp {:#x}: CQ {} overflowed", self.qpn, cq.id);
            self.dev.raise(super::AsyncEvent::CqErr { cq: cq.id });
        }
    }

    /// The protocol failed (retry or RNR exhaustion, a NAK, a local error):
    /// to the error state, and tell the application (`IBV_EVENT_QP_FATAL`).
    pub(crate) fn fail(&self, q: &mut QpInner) {
        if q.state != QpState::Err {
            self.dev.raise(super::AsyncEvent::QpFatal { qpn: self.qpn });
        }
        self.to_error(q);
    }

    /// Send WQE `idx` failed: take it out of the send queue to complete it
    /// with its error. Completions stay in posting order, so the WQEs before
    /// it (still outstanding: sent and unacknowledged, or waiting to complete
    /// in order) complete first, flushed — the QP is going to the error
    /// state, which the caller then enters (flushing the rest).
    pub(crate) fn take_failed(&self, q: &mut QpInner, idx: usize) -> SendWqe {
        for w in q.req.sq.drain(..idx) {
            self.complete_send(&w, WcStatus::WrFlushErr);
        }
        q.req.sq.pop_front().expect("failed WQE in the send queue")
    }

    /// SQE (UC/UD): the send queue is flushed, the receive side keeps working.
    pub(crate) fn to_send_queue_error(&self, q: &mut QpInner) {
        crate::log::log!(
            Info,
            "qp {:#x}: -> Sqe, flushing {} send requests",
            self.qpn,
            q.req.sq.len()
        );
        q.state = QpState::Sqe;
        for w in q.req.sq.drain(..) {
            self.complete_send(&w, WcStatus::WrFlushErr);
        }
        q.req.reset_progress();
    }

    /// Move to the error state: every outstanding work request completes with
    /// `WR_FLUSH_ERR` (the one that failed was completed by the caller).
    pub(crate) fn to_error(&self, q: &mut QpInner) {
        if q.state != QpState::Err {
            crate::log::log!(
                Info,
                "qp {:#x}: -> Err, flushing {} send and {} receive requests",
                self.qpn,
                q.req.sq.len(),
                q.resp.rq.len()
            );
        }
        q.state = QpState::Err;
        for w in q.req.sq.drain(..) {
            self.complete_send(&w, WcStatus::WrFlushErr);
        }
        q.req.reset_progress();
        // Receives that completed in the current receive batch come first.
        for (wc, solicited) in q.resp.completed.drain(..) {
            self.complete_recv(wc, solicited);
        }
        for r in q.resp.rq.drain(..) {
            self.complete_recv(flush_wc(r.wr_id), false);
        }
        q.req.timer_generation += 1;
    }

    /// A timer armed by this QP expired.
    pub(crate) fn on_timer(self: &Arc<Self>, generation: u64) {
        let mut q = self.lock();
        if q.req.timer_generation != generation || q.state == QpState::Err {
            return;
        }
        TxQueue::with(&self.dev, |tx| {
            crate::engine::requester::on_timer(self, &mut q, tx)
        });
    }
}

fn flush_wc(wr_id: u64) -> Wc {
    Wc {
        wr_id,
        status: WcStatus::WrFlushErr,
        opcode: WcOpcode::Recv,
        ..Wc::EMPTY
    }
}

/// A queue pair (`ibv_qp`).
pub struct Qp(pub(crate) Arc<QpShared>);

impl Qp {
    pub(crate) fn create(pd: &super::Pd, attr: QpInitAttr) -> Result<Qp> {
        let cap = attr.cap;
        if cap.max_send_wr > MAX_QP_WR
            || cap.max_recv_wr > MAX_QP_WR
            || cap.max_send_sge > MAX_SGE
            || cap.max_recv_sge > MAX_SGE
            || cap.max_inline_data > super::device::MAX_INLINE
        {
            return Err(Errno::EINVAL);
        }
        if attr.srq.as_ref().is_some_and(|s| s.pd() != pd.id()) {
            return Err(Errno::EINVAL);
        }
        let dev = pd.dev().clone();
        // Holding the table: the count cannot change before the insert.
        let mut qps = dev.qps.write().unwrap_or_else(|e| e.into_inner());
        if qps.len() >= super::device::MAX_QP {
            // As rxe, whose object pools refuse an element over their
            // maximum with EINVAL.
            return Err(Errno::EINVAL);
        }
        let qpn = dev.new_qpn();
        attr.send_cq.0.attach(&dev);
        attr.recv_cq.0.attach(&dev);
        let shared = Arc::new(QpShared {
            qpn,
            qp_type: attr.qp_type,
            dev: dev.clone(),
            pd: pd.id(),
            send_cq: attr.send_cq.0.clone(),
            recv_cq: attr.recv_cq.0.clone(),
            cap,
            sq_sig_all: attr.sq_sig_all,
            srq: attr.srq.map(|s| s.0),
            inner: Mutex::new(QpInner {
                state: QpState::Reset,
                access: Access::default(),
                qkey: 0,
                path_mtu: Mtu::M1024,
                dest_qpn: 0,
                peer: None,
                timeout: 14,
                retry_cnt: 7,
                rnr_retry: 7,
                min_rnr_timer: 12,
                max_rd_atomic: 1,
                max_dest_rd_atomic: 1,
                req: ReqState::default(),
                resp: RespState::default(),
            }),
        });
        qps.insert(qpn, shared.clone());
        Ok(Qp(shared))
    }

    pub fn qp_num(&self) -> u32 {
        self.0.qpn
    }

    pub fn qp_type(&self) -> QpType {
        self.0.qp_type
    }

    pub fn state(&self) -> QpState {
        self.0.lock().state
    }

    pub fn cap(&self) -> QpCap {
        self.0.cap
    }

    /// `ibv_modify_qp`. Transitions and required attributes follow the verbs
    /// specification (RC/UC connect at RTR, UD needs a Q_Key at INIT);
    /// anything else is `EINVAL` and changes nothing.
    pub fn modify(&self, attr: &QpAttr) -> Result<()> {
        let mut q = self.0.lock();
        let cur = q.state;
        let next = attr.state.unwrap_or(cur);
        let connected = self.0.qp_type != QpType::Ud;
        use QpState as S;
        let legal = matches!(
            (cur, next),
            (_, S::Reset)
                | (_, S::Err)
                | (S::Reset, S::Init)
                | (S::Init, S::Init)
                | (S::Init, S::Rtr)
                | (S::Rtr, S::Rts)
                | (S::Rts, S::Rts)
                | (S::Rts, S::Sqd)
                | (S::Sqd, S::Rts)
                | (S::Sqd, S::Sqd)
                | (S::Sqe, S::Rts)
        );
        if !legal {
            return Err(Errno::EINVAL);
        }
        match (cur, next) {
            (S::Reset, S::Init) => {
                let ok = if connected {
                    attr.access.is_some() || attr.pkey_index.is_some()
                } else {
                    attr.qkey.is_some()
                };
                if !ok || attr.port_num.is_some_and(|p| p != 1) {
                    return Err(Errno::EINVAL);
                }
            }
            (S::Init, S::Rtr) if connected => {
                if attr.dest_qp_num.is_none()
                    || attr.rq_psn.is_none()
                    || attr.path_mtu.is_none()
                    || (attr.dgid.is_none() && q.peer.is_none())
                {
                    return Err(Errno::EINVAL);
                }
            }
            (S::Rtr, S::Rts) if self.0.qp_type == QpType::Rc => {
                if attr.sq_psn.is_none() {
                    return Err(Errno::EINVAL);
                }
            }
            _ => {}
        }
        // Above the device's `max_qp_rd_atom` / `max_qp_init_rd_atom`:
        // EINVAL, as rxe's attribute check (not clamped silently).
        if attr.max_rd_atomic.unwrap_or(0) > super::device::MAX_RD_ATOMIC
            || attr.max_dest_rd_atomic.unwrap_or(0) > super::device::MAX_RD_ATOMIC
        {
            return Err(Errno::EINVAL);
        }
        if let Some(a) = attr.access {
            q.access = a;
        }
        if let Some(k) = attr.qkey {
            q.qkey = k;
        }
        if let Some(m) = attr.path_mtu {
            q.path_mtu = m;
        }
        if let Some(d) = attr.dest_qp_num {
            q.dest_qpn = d & crate::engine::psn::MASK;
        }
        if let Some(g) = attr.dgid {
            q.peer = Some(packet::peer_of(g));
        }
        if let Some(p) = attr.rq_psn {
            q.resp.epsn = p & crate::engine::psn::MASK;
        }
        if let Some(p) = attr.sq_psn {
            q.req.next_psn = p & crate::engine::psn::MASK;
        }
        if let Some(v) = attr.timeout {
            q.timeout = v;
        }
        if let Some(v) = attr.retry_cnt {
            q.retry_cnt = v.min(7);
        }
        if let Some(v) = attr.rnr_retry {
            q.rnr_retry = v.min(7);
        }
        if let Some(v) = attr.min_rnr_timer {
            q.min_rnr_timer = v & 0x1f;
        }
        if let Some(v) = attr.max_rd_atomic {
            q.max_rd_atomic = v.clamp(1, super::device::MAX_RD_ATOMIC);
        }
        if let Some(v) = attr.max_dest_rd_atomic {
            q.max_dest_rd_atomic = v.clamp(1, super::device::MAX_RD_ATOMIC);
        }
        match next {
            S::Reset => {
                q.req = ReqState::default();
                q.resp = RespState::default();
            }
            S::Err if cur != S::Err => self.0.to_error(&mut q),
            S::Rts if cur == S::Rtr => {
                q.req.retries_left = q.retry_cnt;
                q.req.rnr_left = q.rnr_retry;
            }
            _ => {}
        }
        let resume = next == S::Rts && cur == S::Sqd;
        let drained_now = next == S::Sqd && cur != S::Sqd && !q.req.in_flight();
        if next != cur {
            crate::log::log!(
                Info,
                "qp {:#x} ({:?}): {cur:?} -> {next:?}{}",
                self.0.qpn,
                self.0.qp_type,
                match (next, q.peer) {
                    (S::Rtr, Some(peer)) => format!(
                        ", peer qp {:#x} at {peer}, mtu {}, rq_psn {:#x}",
                        q.dest_qpn,
                        q.path_mtu.bytes(),
                        q.resp.epsn
                    ),
                    _ => String::new(),
                }
            );
        }
        q.state = next;
        if drained_now {
            self.0
                .dev
                .raise(super::AsyncEvent::SqDrained { qpn: self.0.qpn });
        }
        if resume {
            // SQD held back what was posted meanwhile; send it now.
            TxQueue::with(&self.0.dev, |tx| {
                crate::engine::requester::progress(&self.0, &mut q, tx)
            });
        }
        Ok(())
    }

    /// `ibv_post_send`: queue and transmit (see [`ring`]). On an error, the
    /// index of the first bad WR and its errno (`bad_wr`).
    pub fn post_send(&self, wrs: &[SendWr<'_>]) -> std::result::Result<(), (usize, Errno)> {
        let sh = &self.0;
        let mut q = sh.lock();
        let r = self.queue_sends(&mut q, wrs);
        ring(sh, &mut q);
        r
    }

    /// The extended send API's batch (`ibv_wr_complete`): all of `wrs` or
    /// none. Every WR is checked, with room for the whole batch in the send
    /// queue, before any is queued; on an error nothing was posted and the
    /// first bad WR's index and errno are returned.
    pub fn post_send_batch(&self, wrs: &[SendWr<'_>]) -> std::result::Result<(), (usize, Errno)> {
        let sh = &self.0;
        let mut q = sh.lock();
        let mut wqes = Vec::with_capacity(wrs.len());
        for (i, wr) in wrs.iter().enumerate() {
            wqes.push(
                self.check_send(&q, q.req.sq.len() + i, wr)
                    .map_err(|e| (i, e))?,
            );
        }
        for wqe in wqes {
            self.queue_send(&mut q, wqe);
        }
        ring(sh, &mut q);
        Ok(())
    }

    /// Validate one WR that would be the send queue's `queued`+1-th entry.
    fn check_send(
        &self,
        q: &QpInner,
        queued: usize,
        wr: &SendWr<'_>,
    ) -> std::result::Result<SendWqe, Errno> {
        let sh = &self.0;
        if !matches!(
            q.state,
            QpState::Rts | QpState::Err | QpState::Sqd | QpState::Sqe
        ) {
            return Err(Errno::EINVAL);
        }
        if queued >= sh.cap.max_send_wr.max(1) as usize {
            return Err(Errno::ENOMEM);
        }
        if wr.sg_list.len() > sh.cap.max_send_sge.max(1) as usize {
            return Err(Errno::EINVAL);
        }
        SendWqe::new(sh, wr)
    }

    /// Queue a checked WQE (one posted to a QP in error is flushed).
    fn queue_send(&self, q: &mut QpInner, wqe: SendWqe) {
        if matches!(q.state, QpState::Err | QpState::Sqe) {
            self.0.complete_send(&wqe, WcStatus::WrFlushErr);
        } else {
            q.req.sq.push_back(wqe);
        }
    }

    /// Validate and queue each WR in turn.
    fn queue_sends(
        &self,
        q: &mut QpInner,
        wrs: &[SendWr<'_>],
    ) -> std::result::Result<(), (usize, Errno)> {
        for (i, wr) in wrs.iter().enumerate() {
            let wqe = self.check_send(q, q.req.sq.len(), wr).map_err(|e| (i, e))?;
            self.queue_send(q, wqe);
        }
        Ok(())
    }

    /// `ibv_post_recv`.
    pub fn post_recv(&self, wrs: &[RecvWr<'_>]) -> std::result::Result<(), (usize, Errno)> {
        let sh = &self.0;
        if sh.srq.is_some() {
            return Err((0, Errno::EINVAL)); // receives go to the SRQ
        }
        let mut q = sh.lock();
        for (i, wr) in wrs.iter().enumerate() {
            if q.state == QpState::Reset {
                return Err((i, Errno::EINVAL));
            }
            if q.resp.rq.len() >= sh.cap.max_recv_wr.max(1) as usize {
                return Err((i, Errno::ENOMEM));
            }
            if wr.sg_list.len() > sh.cap.max_recv_sge.max(1) as usize {
                return Err((i, Errno::EINVAL));
            }
            let sges: Vec<ResolvedSge> = packet::resolve(&sh.dev, wr.sg_list);
            if q.state == QpState::Err {
                sh.complete_recv(flush_wc(wr.wr_id), false);
                continue;
            }
            q.resp.rq.push_back(RecvWqe {
                wr_id: wr.wr_id,
                len: packet::total_len(&sges),
                sges,
            });
        }
        Ok(())
    }

    /// The local endpoint's GID this QP sends from.
    pub fn local_gid(&self) -> Gid {
        self.0.dev.gid
    }
}

impl Drop for Qp {
    fn drop(&mut self) {
        let mut q = self.0.lock();
        // An ACK still waiting for a ride leaves now: the peer's requests
        // were executed and must not end in a retry error.
        TxQueue::with(&self.0.dev, |tx| {
            crate::engine::responder::flush_ack(&self.0, &mut q, tx)
        });
        q.req.timer_generation += 1;
        q.state = QpState::Reset;
        drop(q);
        self.0
            .dev
            .qps
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.0.qpn);
    }
}

/// Transmit what was just queued — at once (inline progress), unless the
/// doorbell may wait for more (`engine::doorbell`).
fn ring(sh: &Arc<QpShared>, q: &mut QpInner) {
    if !sh.dev.doorbells.hold(sh, q) {
        TxQueue::with(&sh.dev, |tx| doorbell::transmit(sh, q, tx));
    }
}
