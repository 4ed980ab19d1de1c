//! The QP state machine (`ibv_modify_qp`): legal transitions, the
//! attributes each requires, and what entering a state does.

use super::requester::{self, ReqState};
use super::responder::RespState;
use super::{psn, tx, Context, Locked, TxQueue};
use crate::limits::MAX_RD_ATOMIC;
use crate::log::log;
use crate::types::{AsyncEvent, Errno, QpAttr, QpState, QpType, Result};

impl Locked<'_> {
    /// `ibv_modify_qp`. Transitions and required attributes follow the
    /// verbs specification (RC/UC connect at RTR, UD needs a Q_Key at INIT);
    /// anything else is `EINVAL` and changes nothing.
    pub(crate) fn modify(&mut self, ctx: &Context<'_>, attr: &QpAttr) -> Result<()> {
        let cur = self.q.state;
        let next = attr.state.unwrap_or(cur);
        self.check_transition(cur, next, attr)?;
        self.apply(attr);
        self.enter(ctx, cur, next);
        Ok(())
    }

    /// Whether `cur → next` is legal with the attributes given.
    fn check_transition(&self, cur: QpState, next: QpState, attr: &QpAttr) -> Result<()> {
        use QpState as S;
        let qp_type = self.sh.qp_type;
        let connected = qp_type != QpType::Ud;
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
        let complete = match (cur, next) {
            (S::Reset, S::Init) => {
                let ok = if connected {
                    attr.access.is_some() || attr.pkey_index.is_some()
                } else {
                    attr.qkey.is_some()
                };
                ok && attr.port_num.is_none_or(|p| p == 1)
            }
            (S::Init, S::Rtr) if connected => {
                attr.dest_qp_num.is_some()
                    && attr.rq_psn.is_some()
                    && attr.path_mtu.is_some()
                    && (attr.dgid.is_some() || self.q.peer.is_some())
            }
            (S::Rtr, S::Rts) if matches!(qp_type, QpType::Rc | QpType::XrcSend) => {
                attr.sq_psn.is_some()
            }
            _ => true,
        };
        // Above the device's `max_qp_rd_atom` / `max_qp_init_rd_atom`:
        // EINVAL, as rxe's attribute check (not clamped silently).
        let rd_atomic_ok = attr.max_rd_atomic.unwrap_or(0) <= MAX_RD_ATOMIC
            && attr.max_dest_rd_atomic.unwrap_or(0) <= MAX_RD_ATOMIC;
        if complete && rd_atomic_ok {
            Ok(())
        } else {
            Err(Errno::EINVAL)
        }
    }

    /// Store the attributes given.
    fn apply(&mut self, attr: &QpAttr) {
        let q = &mut *self.q;
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
            q.dest_qpn = d & psn::MASK;
        }
        if let Some(g) = attr.dgid {
            q.peer = Some(tx::peer_of(g));
        }
        if let Some(p) = attr.rq_psn {
            q.resp.epsn = p & psn::MASK;
        }
        if let Some(p) = attr.sq_psn {
            q.req.next_psn = p & psn::MASK;
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
            q.max_rd_atomic = v.clamp(1, MAX_RD_ATOMIC);
        }
        if let Some(v) = attr.max_dest_rd_atomic {
            q.max_dest_rd_atomic = v.clamp(1, MAX_RD_ATOMIC);
        }
    }

    /// Enter `next` from `cur`: reset, flush, arm the retry counters, raise
    /// SQ drained, or send what SQD held back.
    fn enter(&mut self, ctx: &Context<'_>, cur: QpState, next: QpState) {
        use QpState as S;
        let sh = self.sh;
        let q = &mut *self.q;
        match next {
            S::Reset => {
                q.req = ReqState::default();
                q.resp = RespState::default();
                // Its completions not yet polled go too (as mlx5's
                // provider cleans its CQs): a QP brought back up from error
                // does not report the old flushes as new failures.
                sh.send_cq.purge(sh.qpn);
                sh.recv_cq.purge(sh.qpn);
            }
            S::Err if cur != S::Err => sh.to_error(ctx, q),
            S::Rts if cur == S::Rtr => {
                q.req.retries_left = q.retry_cnt;
                q.req.rnr_left = q.rnr_retry;
            }
            _ => {}
        }
        let drained_now = next == S::Sqd && cur != S::Sqd && !q.req.in_flight();
        if next != cur {
            log!(
                Info,
                "qp {:#x} ({:?}): {cur:?} -> {next:?}{}",
                sh.qpn,
                sh.qp_type,
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
            ctx.events.raise(AsyncEvent::SqDrained { qpn: sh.qpn });
        }
        if next == S::Rts && cur == S::Sqd {
            // SQD held back what was posted meanwhile; send it now.
            TxQueue::with(ctx, |tx| requester::progress(ctx, sh, q, tx));
        }
    }
}
