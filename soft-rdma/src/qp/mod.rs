//! One queue pair's protocol, as rxe splits it by role: the [`requester`]
//! sends, the [`responder`] executes what arrives, the [`completer`] turns
//! acknowledgements into completions; [`state`] is the state machine
//! (`modify`), [`post`] the posting checks, [`tx`] the transmit queue.
//!
//! A QP sees its device only through a [`Context`]. Its state is private to
//! this module: the device and the verbs reach it through [`Locked`] — a
//! held QP lock — and the methods below. Packets a QP produces are sent
//! while its lock is held, so they leave in PSN order.
#![forbid(unsafe_code)]

mod completer;
mod context;
mod loss;
mod post;
mod psn;
mod reorder;
mod requester;
mod responder;
mod state;
mod tx;
mod xrc;

pub(crate) use context::Context;
pub(crate) use post::PostResult;
pub(crate) use tx::TxQueue;

use crate::log::log;
use crate::resources::counters::bump;
use crate::resources::cq::{CqShared, Overflow};
use crate::resources::flight::Flight;
use crate::resources::sge::RecvWqe;
use crate::resources::srq::SrqShared;
use crate::sync::{Guard, Level, OrderedMutex};
use crate::transport::Remote;
use crate::types::{
    Access, AsyncEvent, Mtu, QpCap, QpState, QpType, SendOp, Wc, WcOpcode, WcStatus,
};
use crate::wire::{Op, PacketRepr, Transport};
use requester::{ReqState, SendWqe};
use responder::RespState;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// What the requester does after a response (`qp::Locked::receive` tells it).
enum Next {
    /// Nothing: the response was stale, or the QP failed.
    Nothing,
    /// Send what the send queue now allows.
    Progress,
    /// A sequence NAK: send again from this PSN.
    Resend(u32),
    /// A READ response or atomic ACK is known lost: ask again from this PSN
    /// at once instead of when the retransmission timer fires.
    RetryNow(u32),
    /// READ responses with PSNs `from..to` are lost (later ones arrived):
    /// ask for just those again.
    Reread { from: u32, to: u32 },
    /// An RNR NAK for this PSN: wait `timer`, then send again from it.
    RnrWait { psn: u32, timer: u8 },
}

/// What a QP is created with: fixed for its life.
pub(crate) struct QpConfig {
    pub(crate) qpn: u32,
    pub(crate) qp_type: QpType,
    pub(crate) pd: u32,
    pub(crate) send_cq: Arc<CqShared>,
    pub(crate) recv_cq: Arc<CqShared>,
    pub(crate) cap: QpCap,
    /// Every send WR generates a completion (`sq_sig_all`).
    pub(crate) sq_sig_all: bool,
    /// Receive from this shared receive queue instead of the QP's own.
    pub(crate) srq: Option<Arc<SrqShared>>,
    /// An XRC target's domain: its requests deliver into that domain's SRQs.
    pub(crate) xrcd: Option<u32>,
}

pub(crate) struct QpShared {
    qpn: u32,
    qp_type: QpType,
    pd: u32,
    send_cq: Arc<CqShared>,
    recv_cq: Arc<CqShared>,
    cap: QpCap,
    sq_sig_all: bool,
    srq: Option<Arc<SrqShared>>,
    xrcd: Option<u32>,
    /// The device's budget of bytes in flight, charged at each unlock.
    flight: Arc<Flight>,
    inner: OrderedMutex<Inner>,
}

/// Everything under the QP lock.
struct Inner {
    state: QpState,
    access: Access,
    qkey: u32,
    path_mtu: Mtu,
    dest_qpn: u32,
    peer: Option<SocketAddr>,
    timeout: u8,
    retry_cnt: u8,
    rnr_retry: u8,
    min_rnr_timer: u8,
    max_rd_atomic: u8,
    max_dest_rd_atomic: u8,
    /// The transport of the QP's opcodes (its responses' too).
    transport: Transport,
    req: ReqState,
    resp: RespState,
}

/// A held QP lock: the only way to the QP's state from outside `qp`.
/// Released, it settles the QP's charge on the device's budget of bytes
/// in flight: every change to what is in flight happens under it.
pub(crate) struct Locked<'a> {
    sh: &'a QpShared,
    q: Guard<'a, Inner>,
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        if self.sh.qp_type.is_reliable() {
            let now = requester::charge(&self.q);
            self.sh.flight.settle(&mut self.q.req.charged, now);
        }
    }
}

impl Drop for QpShared {
    /// What the QP still has charged goes back to the budget.
    fn drop(&mut self) {
        let q = self.inner.get_mut();
        self.flight.settle(&mut q.req.charged, 0);
    }
}

impl QpShared {
    pub(crate) fn new(c: QpConfig, flight: Arc<Flight>) -> QpShared {
        QpShared {
            flight,
            qpn: c.qpn,
            qp_type: c.qp_type,
            pd: c.pd,
            send_cq: c.send_cq,
            recv_cq: c.recv_cq,
            cap: c.cap,
            sq_sig_all: c.sq_sig_all,
            srq: c.srq,
            xrcd: c.xrcd,
            inner: OrderedMutex::new(
                Level::Qp,
                Inner {
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
                    transport: transport_of(c.qp_type),
                    req: ReqState::default(),
                    resp: RespState::default(),
                },
            ),
        }
    }

    pub(crate) fn qpn(&self) -> u32 {
        self.qpn
    }

    pub(crate) fn qp_type(&self) -> QpType {
        self.qp_type
    }

    pub(crate) fn cap(&self) -> QpCap {
        self.cap
    }

    /// Take the QP lock (see `crate::sync` for what may be held meanwhile).
    pub(crate) fn lock(&self) -> Locked<'_> {
        Locked {
            sh: self,
            q: self.inner.lock(),
        }
    }

    /// The transport whose opcodes this QP accepts.
    pub(crate) fn transport(&self) -> Transport {
        transport_of(self.qp_type)
    }

    /// A timer this QP armed expired. Takes the QP lock.
    pub(crate) fn on_timer(&self, ctx: &Context<'_>, generation: u64) {
        let mut l = self.lock();
        let q = &mut *l.q;
        if q.req.timer_generation != generation || q.state == QpState::Err {
            return;
        }
        TxQueue::with(ctx, |tx| requester::on_timer(ctx, self, q, tx));
    }

    /// The next receive WQE: from the SRQ if the QP has one.
    /// (An XRC target: from the SRQ its current request names.)
    fn take_recv(&self, ctx: &Context<'_>, q: &mut Inner) -> Option<RecvWqe> {
        match self.srq.as_ref().or(q.resp.xrc_srq.as_ref()) {
            Some(s) => s.take(ctx.events),
            None => q.resp.rq.pop_front(),
        }
    }

    fn has_recv(&self, q: &Inner) -> bool {
        match self.srq.as_ref().or(q.resp.xrc_srq.as_ref()) {
            Some(s) => s.len() > 0,
            None => !q.resp.rq.is_empty(),
        }
    }

    /// Post a completion on the send CQ.
    fn complete_send(&self, ctx: &Context<'_>, wqe: &SendWqe, status: WcStatus) {
        if status == WcStatus::Success && !(wqe.signaled || self.sq_sig_all) {
            return;
        }
        let opcode = match wqe.op {
            SendOp::Send | SendOp::SendImm(_) | SendOp::SendInv(_) => WcOpcode::Send,
            SendOp::Write { .. } | SendOp::WriteImm { .. } => WcOpcode::RdmaWrite,
            SendOp::Read { .. } => WcOpcode::RdmaRead,
            SendOp::CompareSwap { .. } => WcOpcode::CompSwap,
            SendOp::FetchAdd { .. } => WcOpcode::FetchAdd,
            SendOp::BindMw(_) => WcOpcode::BindMw,
            SendOp::LocalInv(_) => WcOpcode::LocalInv,
            SendOp::AtomicWrite { .. } => WcOpcode::AtomicWrite,
            SendOp::Flush { .. } => WcOpcode::Flush,
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
        self.on_cq_overflow(ctx, &self.send_cq, lost);
    }

    /// Post a completion on the receive CQ.
    fn complete_recv(&self, ctx: &Context<'_>, wc: Wc, solicited: bool) {
        self.complete_recv_on(ctx, &self.recv_cq, wc, solicited);
    }

    /// Post a receive completion on `cq` (an XRC SRQ's for a target).
    fn complete_recv_on(&self, ctx: &Context<'_>, cq: &Arc<CqShared>, wc: Wc, solicited: bool) {
        let wc = Wc {
            qp_num: self.qpn,
            ..wc
        };
        let lost = cq.push(wc, solicited);
        self.on_cq_overflow(ctx, cq, lost);
    }

    /// Publish the receive completions of the batch (each on its CQ).
    fn publish_completed(&self, ctx: &Context<'_>, q: &mut Inner) {
        let mut cqs = std::mem::take(&mut q.resp.xrc_cqs).into_iter();
        for (wc, solicited) in q.resp.completed.drain(..) {
            match cqs.next() {
                Some(cq) => self.complete_recv_on(ctx, &cq, wc, solicited),
                None => self.complete_recv(ctx, wc, solicited),
            }
        }
    }

    /// A full CQ lost a completion of this QP: the CQ is in error, which the
    /// application learns once (`IBV_EVENT_CQ_ERR`). The QP goes on, as on
    /// rxe; what the lost completion would have said is gone.
    fn on_cq_overflow(&self, ctx: &Context<'_>, cq: &CqShared, lost: Option<Overflow>) {
        if lost == Some(Overflow::First) {
            log!(Error, "qp {:#x}: CQ {} overflowed", self.qpn, cq.id());
            ctx.events.raise(AsyncEvent::CqErr { cq: cq.id() });
        }
    }

    /// The protocol failed (retry or RNR exhaustion, a NAK, a local error):
    /// to the error state, and tell the application (`IBV_EVENT_QP_FATAL`).
    fn fail(&self, ctx: &Context<'_>, q: &mut Inner) {
        if q.state != QpState::Err {
            ctx.events.raise(AsyncEvent::QpFatal { qpn: self.qpn });
        }
        self.to_error(ctx, q);
    }

    /// Send WQE `idx` failed: take it out of the send queue to complete it
    /// with its error. Completions stay in posting order, so the WQEs before
    /// it (still outstanding: sent and unacknowledged, or waiting to complete
    /// in order) complete first, flushed — the QP is going to the error
    /// state, which the caller then enters (flushing the rest).
    fn take_failed(&self, ctx: &Context<'_>, q: &mut Inner, idx: usize) -> SendWqe {
        for w in q.req.sq.drain(..idx) {
            self.complete_send(ctx, &w, WcStatus::WrFlushErr);
        }
        q.req.sq.pop_front().expect("failed WQE in the send queue")
    }

    /// SQE (UC/UD): the send queue is flushed, the receive side keeps working.
    fn to_send_queue_error(&self, ctx: &Context<'_>, q: &mut Inner) {
        log!(
            Info,
            "qp {:#x}: -> Sqe, flushing {} send requests",
            self.qpn,
            q.req.sq.len()
        );
        q.state = QpState::Sqe;
        for w in q.req.sq.drain(..) {
            self.complete_send(ctx, &w, WcStatus::WrFlushErr);
        }
        q.req.reset_progress();
    }

    /// Move to the error state: every outstanding work request completes with
    /// `WR_FLUSH_ERR` (the one that failed was completed by the caller).
    fn to_error(&self, ctx: &Context<'_>, q: &mut Inner) {
        if q.state != QpState::Err {
            log!(
                Info,
                "qp {:#x}: -> Err, flushing {} send and {} receive requests",
                self.qpn,
                q.req.sq.len(),
                q.resp.rq.len()
            );
        }
        q.state = QpState::Err;
        for w in q.req.sq.drain(..) {
            self.complete_send(ctx, &w, WcStatus::WrFlushErr);
        }
        q.req.reset_progress();
        // Receives that completed in the current receive batch come first.
        self.publish_completed(ctx, q);
        for r in q.resp.rq.drain(..) {
            self.complete_recv(ctx, flush_wc(r.wr_id), false);
        }
        q.req.timer_generation += 1;
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

impl Locked<'_> {
    pub(crate) fn state(&self) -> QpState {
        self.q.state
    }

    /// Handle one datagram for this QP (its transport already checked):
    /// a response goes to the completer, a request to the responder.
    /// Anything not from the QP's peer is dropped and counted.
    pub(crate) fn receive(
        &mut self,
        ctx: &Context<'_>,
        from: SocketAddr,
        repr: &PacketRepr,
        payload: &[u8],
        tx: &mut TxQueue,
    ) {
        let (sh, q) = (self.sh, &mut *self.q);
        if let Some(peer) = q.peer.filter(|_| sh.qp_type != QpType::Ud) {
            // rxe's check_addr: a connected QP hears only its peer's address
            // (the port is the sender's to choose), so nobody else can inject
            // requests or forge acknowledgements even knowing QPN and PSN.
            if canonical(peer.ip()) != canonical(from.ip()) {
                bump(&ctx.stats.wrong_source);
                log!(Debug, "dropped {repr} from {from}: the QP's peer is {peer}");
                return;
            }
        }
        let response = is_response(repr.bth.opcode.op());
        let xrc_form;
        let repr = if q.transport == Transport::Xrc {
            let Some(r) = xrc::accept(ctx, sh, q, repr, response) else {
                return;
            };
            xrc_form = r;
            &xrc_form
        } else {
            repr
        };
        if response {
            let next = completer::on_response(ctx, sh, q, repr, payload);
            requester::after_response(ctx, sh, q, next, tx);
        } else {
            responder::on_request(ctx, sh, q, from, repr, payload, tx);
            xrc::tag_completions(q);
        }
    }

    /// A request whose payload stayed with its sender (`remote`: a
    /// same-host peer's packet by reference). Only an RC WRITE may come so
    /// (the only kind a requester sends so); anything else is dropped and
    /// counted as malformed, as its payload is not here to parse.
    pub(crate) fn receive_by_ref(
        &mut self,
        ctx: &Context<'_>,
        from: SocketAddr,
        repr: &PacketRepr,
        remote: Remote,
        tx: &mut TxQueue,
    ) {
        let (sh, q) = (self.sh, &mut *self.q);
        let op = repr.bth.opcode.op();
        if sh.qp_type != QpType::Rc || q.transport != Transport::Rc || !op.is_write() {
            bump(&ctx.stats.parse_errors);
            log!(
                Debug,
                "dropped {repr} from {from}: no payload by reference for it"
            );
            return;
        }
        if let Some(peer) = q.peer {
            if canonical(peer.ip()) != canonical(from.ip()) {
                bump(&ctx.stats.wrong_source);
                log!(Debug, "dropped {repr} from {from}: the QP's peer is {peer}");
                return;
            }
        }
        responder::on_write_by_ref(ctx, sh, q, from, repr, remote, tx);
    }

    /// Whether the coalesced ACK should leave now rather than at the end of
    /// the receive batch (it covers a quarter of the peer's window).
    pub(crate) fn ack_due(&self) -> bool {
        responder::ack_due(&self.q)
    }

    /// Send the coalesced ACK, if any.
    pub(crate) fn flush_ack(&mut self, ctx: &Context<'_>, tx: &mut TxQueue) {
        responder::flush_ack(ctx, &mut self.q, tx);
    }

    /// An ACK or receive completions wait for the end of the batch.
    pub(crate) fn batch_pending(&self) -> bool {
        self.q.resp.ack_pending.is_some() || !self.q.resp.completed.is_empty()
    }

    /// Receive completions of this batch wait (nothing but an ACK would
    /// otherwise go: that one may ride with the next post).
    pub(crate) fn completions_pending(&self) -> bool {
        !self.q.resp.completed.is_empty()
    }

    /// Send the coalesced ACK, then publish the receive completions it
    /// covers — in that order: an application that sees its last message
    /// and exits must not strand the sender without an ACK.
    pub(crate) fn acknowledge_and_complete(&mut self, ctx: &Context<'_>, tx: &mut TxQueue) {
        self.flush_ack(ctx, tx);
        tx.flush(ctx);
        self.sh.publish_completed(ctx, &mut self.q);
    }

    /// The last request was a class C or J error (IBTA 9.9.3.1): once its
    /// NAK and completion are out, the QP goes to the error state too.
    /// Whether that is so (and forget it).
    pub(crate) fn take_goto_error(&mut self) -> bool {
        std::mem::take(&mut self.q.resp.goto_error)
    }

    /// To the error state, with `IBV_EVENT_QP_FATAL`.
    pub(crate) fn fail(&mut self, ctx: &Context<'_>) {
        self.sh.fail(ctx, &mut self.q);
    }

    /// What a post sends: the queue's new requests, then a deferred ACK
    /// riding behind them — a peer polling for that ACK then finds the
    /// request already there and handles both in one go.
    pub(crate) fn transmit(&mut self, ctx: &Context<'_>, tx: &mut TxQueue) {
        requester::progress(ctx, self.sh, &mut self.q, tx);
        responder::flush_ack(ctx, &mut self.q, tx);
    }

    /// RC in RTS with packets in flight (an ACK is coming, which transmits
    /// what waits): the WRs and bytes queued and not yet sent. `None`: a
    /// post must leave at once.
    pub(crate) fn unsent_behind_flight(&self) -> Option<(usize, u64)> {
        let q = &self.q;
        if !self.sh.qp_type.is_reliable() || q.state != QpState::Rts || !q.req.in_flight() {
            return None;
        }
        let fresh = q.req.untransmitted();
        Some((fresh.len(), fresh.map(|w| w.len).sum()))
    }

    /// Mark the QP as on its device's list of held doorbells; false if it
    /// already was.
    pub(crate) fn set_doorbell_held(&mut self) -> bool {
        !std::mem::replace(&mut self.q.req.doorbell_held, true)
    }

    /// Whether the QP was on the list of held doorbells (and no more is).
    pub(crate) fn take_doorbell_held(&mut self) -> bool {
        std::mem::take(&mut self.q.req.doorbell_held)
    }

    /// The QP is being destroyed: an ACK still waiting for a ride leaves
    /// now (the peer's requests were executed and must not end in a retry
    /// error), timers are disarmed, and the QP is reset.
    pub(crate) fn destroy(&mut self, ctx: &Context<'_>) {
        TxQueue::with(ctx, |tx| responder::flush_ack(ctx, &mut self.q, tx));
        self.q.req.timer_generation += 1;
        self.q.state = QpState::Reset;
    }
}

fn transport_of(t: QpType) -> Transport {
    match t {
        QpType::Rc => Transport::Rc,
        QpType::Uc => Transport::Uc,
        QpType::Ud => Transport::Ud,
        QpType::XrcSend | QpType::XrcRecv => Transport::Xrc,
    }
}

/// An IPv4 peer seen through an IPv6 socket is the same peer.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn is_response(op: Op) -> bool {
    matches!(
        op,
        Op::ReadRespFirst
            | Op::ReadRespMiddle
            | Op::ReadRespLast
            | Op::ReadRespOnly
            | Op::Ack
            | Op::AtomicAck
    )
}
