//! Posting work requests: the checks `ibv_post_send`/`ibv_post_recv` make
//! (state, queue room, SGE count), and queueing what passes.

use super::requester::SendWqe;
use super::{flush_wc, Context, Inner, Locked, QpShared};
use crate::resources::sge::RecvWqe;
use crate::types::{Errno, QpState, QpType, RecvWr, SendWr, WcStatus};

/// On an error, the index of the first bad WR and its errno (`bad_wr`).
pub(crate) type PostResult = std::result::Result<(), (usize, Errno)>;

impl Locked<'_> {
    /// Validate and queue each WR in turn (`ibv_post_send`); the caller
    /// transmits (`Locked::transmit`).
    /// `srqns`: an XRC initiator's remote SRQ of each WR (empty otherwise).
    pub(crate) fn queue_sends(
        &mut self,
        ctx: &Context<'_>,
        wrs: &[SendWr<'_>],
        srqns: &[u32],
    ) -> PostResult {
        let (sh, q) = (self.sh, &mut *self.q);
        for (i, wr) in wrs.iter().enumerate() {
            let srqn = srqns.get(i).copied();
            let wqe = check_send(ctx, sh, q, q.req.sq.len(), wr, srqn).map_err(|e| (i, e))?;
            queue_send(ctx, sh, q, wqe);
        }
        Ok(())
    }

    /// The extended send API's batch (`ibv_wr_complete`): all of `wrs` or
    /// none. Every WR is checked, with room for the whole batch in the send
    /// queue, before any is queued.
    pub(crate) fn queue_batch(
        &mut self,
        ctx: &Context<'_>,
        wrs: &[SendWr<'_>],
        srqns: &[u32],
    ) -> PostResult {
        let (sh, q) = (self.sh, &mut *self.q);
        let mut wqes = Vec::with_capacity(wrs.len());
        for (i, wr) in wrs.iter().enumerate() {
            let queued = q.req.sq.len() + i;
            let srqn = srqns.get(i).copied();
            wqes.push(check_send(ctx, sh, q, queued, wr, srqn).map_err(|e| (i, e))?);
        }
        for wqe in wqes {
            queue_send(ctx, sh, q, wqe);
        }
        Ok(())
    }

    /// `ibv_post_recv` to the QP's own receive queue.
    pub(crate) fn post_recv(&mut self, ctx: &Context<'_>, wrs: &[RecvWr<'_>]) -> PostResult {
        let (sh, q) = (self.sh, &mut *self.q);
        let no_rq = sh.srq.is_some() || matches!(sh.qp_type, QpType::XrcSend | QpType::XrcRecv);
        if no_rq && !wrs.is_empty() {
            // Receives go to the SRQ (an XRC initiator has no receive side,
            // a target receives through its domain's SRQs).
            return Err((0, Errno::EINVAL));
        }
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
            let wqe = RecvWqe::new(ctx.mrs, wr.wr_id, wr.sg_list);
            if q.state == QpState::Err {
                sh.complete_recv(ctx, flush_wc(wqe.wr_id), false);
                continue;
            }
            q.resp.rq.push_back(wqe);
        }
        Ok(())
    }
}

/// Validate one WR that would be the send queue's `queued`+1-th entry.
fn check_send(
    ctx: &Context<'_>,
    sh: &QpShared,
    q: &Inner,
    queued: usize,
    wr: &SendWr<'_>,
    xrc_srqn: Option<u32>,
) -> Result<SendWqe, Errno> {
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
    SendWqe::new(ctx, sh, wr, xrc_srqn)
}

/// Queue a checked WQE (one posted to a QP in error is flushed).
fn queue_send(ctx: &Context<'_>, sh: &QpShared, q: &mut Inner, wqe: SendWqe) {
    if matches!(q.state, QpState::Err | QpState::Sqe) {
        sh.complete_send(ctx, &wqe, WcStatus::WrFlushErr);
    } else {
        q.req.sq.push_back(wqe);
    }
}
