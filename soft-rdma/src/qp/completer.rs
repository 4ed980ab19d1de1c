//! The completer (rxe_comp.c's role): acknowledgements, NAKs, READ responses
//! and atomic ACKs for this QP's requests; completes work requests in order
//! and turns failures into the verbs statuses (QP to error, rest flushed).
//! What the requester does next is the [`Next`] it returns: the completer
//! changes no requester state but the acknowledged PSN, the results of
//! READs and atomics, and the completed WQEs.

use super::psn;
use super::{Context, Inner, Next, QpShared};
use crate::resources::counters::bump;
use crate::resources::sge;
use crate::types::{AsyncEvent, QpState, SendOp, WcStatus};
use crate::wire::{Ext, NakCode, Op, PacketRepr, Syndrome};
use std::time::Instant;

/// A response for this QP's requests: acknowledged PSNs, READ data, atomic
/// results, completions in order, failures; what the requester does next.
pub(super) fn on_response(
    ctx: &Context<'_>,
    sh: &QpShared,
    q: &mut Inner,
    repr: &PacketRepr,
    payload: &[u8],
) -> Next {
    if !sh.qp_type.is_reliable() || !q.req.in_flight() {
        return Next::Nothing; // nothing outstanding: a stale or stray response
    }
    let p = repr.bth.psn;
    let mtu = q.path_mtu.bytes() as u64;
    if repr.bth.opcode.op() == Op::ReadRespOnly {
        if let Some(i) = placement_waiting(q, p) {
            return placement_response(ctx, sh, q, i, repr, payload);
        }
    }
    match (repr.bth.opcode.op(), repr.ext) {
        (Op::Ack, Ext::Aeth(aeth)) => match aeth.syndrome {
            Syndrome::Ack { .. } => ack_upto(q, p),
            Syndrome::RnrNak { timer } => {
                bump(&ctx.stats.rnr_naks_rcvd);
                ack_upto(q, psn::add(p, psn::MASK));
                complete_front(ctx, sh, q);
                return Next::RnrWait { psn: p, timer };
            }
            Syndrome::Nak(code) => {
                ctx.stats.nak_received(code);
                ack_upto(q, psn::add(p, psn::MASK));
                complete_front(ctx, sh, q);
                if code == NakCode::PsnSequenceError {
                    return Next::Resend(p);
                } else {
                    let status = match code {
                        NakCode::InvalidRequest | NakCode::InvalidRdRequest => {
                            WcStatus::RemInvReqErr
                        }
                        NakCode::RemoteAccessError => WcStatus::RemAccessErr,
                        _ => WcStatus::RemOpErr,
                    };
                    if let Some(pos) = q.req.sq.iter().position(|w| w.holds(p)) {
                        let w = sh.take_failed(ctx, q, pos);
                        sh.complete_send(ctx, &w, status);
                    }
                    sh.fail(ctx, q);
                    return Next::Nothing;
                }
            }
        },
        (Op::ReadRespFirst | Op::ReadRespMiddle | Op::ReadRespLast | Op::ReadRespOnly, _) => {
            let Some(i) = q.req.sq.iter().take(q.req.send_idx).position(|w| {
                matches!(w.op, SendOp::Read { .. }) && w.result.is_none() && w.holds(p)
            }) else {
                return Next::Nothing;
            };
            let (first, n) = q.req.sq[i].psn.expect("transmitted");
            let k = psn::diff(p, first) as u32;
            let (done, gaps) = (q.req.sq[i].read_done, &q.req.sq[i].read_gaps);
            if !gaps.wanted(done, k) {
                // A duplicate, or too far past a gap to keep track of.
                return Next::Nothing;
            }
            // Responses come in PSN order: what is missing before this one
            // (of this READ or an earlier one) is lost.
            let hole = read_hole(q, i, k);
            if !read_response_fits(repr, payload, &q.req.sq[i], k, mtu) {
                // A faulty responder, or path MTUs that differ: the READ
                // fails rather than completing with holes (rxe's check_ack
                // errs too); nothing of this packet is trusted.
                bump(&ctx.stats.bad_responses);
                let psn = q.req.sq[i].psn;
                complete_front(ctx, sh, q);
                if let Some(i) = q.req.sq.iter().position(|w| w.psn == psn) {
                    let w = sh.take_failed(ctx, q, i);
                    sh.complete_send(ctx, &w, WcStatus::BadRespErr);
                }
                sh.fail(ctx, q);
                return Next::Nothing;
            }
            // A READ response acknowledges every earlier request.
            if i > 0 {
                ack_upto(q, psn::add(first, psn::MASK));
            }
            // Placed where it belongs, in or out of order (`super::loss`).
            let off = u64::from(k) * mtu;
            let w = &mut q.req.sq[i];
            if let Err(st) = sge::scatter(&w.sges, sh.pd, off, payload) {
                // What this response acknowledged completes first.
                let psn = w.psn;
                complete_front(ctx, sh, q);
                let i = q
                    .req
                    .sq
                    .iter()
                    .position(|w| w.psn == psn)
                    .expect("still queued");
                let w = sh.take_failed(ctx, q, i);
                sh.complete_send(ctx, &w, st);
                sh.fail(ctx, q);
                return Next::Nothing;
            }
            w.read_done = w.read_gaps.arrived(w.read_done, k);
            if w.read_done == n {
                w.result = Some(WcStatus::Success);
            }
            q.req.progress_at = Some(Instant::now());
            q.req.retries_left = q.retry_cnt;
            if let Some((from, to)) = hole {
                complete_front(ctx, sh, q);
                return Next::Reread { from, to };
            }
        }
        (Op::AtomicAck, Ext::AtomicAck(_, orig)) => {
            let Some(i) = q.req.sq.iter().take(q.req.send_idx).position(|w| {
                w.is_rd_atomic() && w.result.is_none() && w.psn.is_some_and(|(f, _)| f == p)
            }) else {
                return Next::Nothing;
            };
            // Responses come in order: a read/atomic just before this one
            // still without a result lost its response.
            let lost = lost_before(q, i);
            if i > 0 {
                ack_upto(q, psn::add(p, psn::MASK));
            }
            let w = &mut q.req.sq[i];
            w.result = Some(
                sge::scatter(&w.sges, sh.pd, 0, &orig.to_ne_bytes())
                    .err()
                    .unwrap_or(WcStatus::Success),
            );
            q.req.progress_at = Some(Instant::now());
            q.req.retries_left = q.retry_cnt;
            if let Some(lost) = lost {
                // Ask again now rather than when the timer fires.
                complete_front(ctx, sh, q);
                return Next::RetryNow(lost);
            }
        }
        _ => return Next::Nothing,
    }
    complete_front(ctx, sh, q);
    Next::Progress
}

/// The ATOMIC WRITE or FLUSH sent at PSN `p` still waiting for its answer.
fn placement_waiting(q: &Inner, p: u32) -> Option<usize> {
    q.req.sq.iter().take(q.req.send_idx).position(|w| {
        matches!(w.op, SendOp::AtomicWrite { .. } | SendOp::Flush { .. })
            && w.result.is_none()
            && w.psn.is_some_and(|(f, _)| f == p)
    })
}

/// The READ response only that answers the ATOMIC WRITE or FLUSH WQE `i`:
/// empty, with an ACK (rxe's check_ack completes an ATOMIC WRITE on it like
/// a WRITE, a FLUSH like a READ of nothing). Anything else fails the WQE
/// (`BAD_RESP_ERR`) and the QP. As an atomic ACK, it acknowledges what came
/// before and reveals a lost answer just before it.
fn placement_response(
    ctx: &Context<'_>,
    sh: &QpShared,
    q: &mut Inner,
    i: usize,
    repr: &PacketRepr,
    payload: &[u8],
) -> Next {
    let ack = matches!(repr.ext, Ext::Aeth(a) if a.syndrome.is_ack());
    if !ack || !payload.is_empty() {
        bump(&ctx.stats.bad_responses);
        let psn = q.req.sq[i].psn;
        complete_front(ctx, sh, q);
        if let Some(i) = q.req.sq.iter().position(|w| w.psn == psn) {
            let w = sh.take_failed(ctx, q, i);
            sh.complete_send(ctx, &w, WcStatus::BadRespErr);
        }
        sh.fail(ctx, q);
        return Next::Nothing;
    }
    let p = repr.bth.psn;
    let lost = lost_before(q, i);
    if i > 0 {
        ack_upto(q, psn::add(p, psn::MASK));
    }
    q.req.sq[i].result = Some(WcStatus::Success);
    q.req.progress_at = Some(Instant::now());
    q.req.retries_left = q.retry_cnt;
    complete_front(ctx, sh, q);
    match lost {
        Some(lost) => Next::RetryNow(lost),
        None => Next::Progress,
    }
}

/// Whether READ response `k` of `w` has the opcode and length that packet
/// must have (IBTA 9.7.5.2: first and middle carry the path MTU, last and
/// only the rest): the READ's first packet is a first/only and its last a
/// last/only; once responses were asked for again, one may start anywhere
/// and end where such a request ended (rxe's responder ends such a range
/// with a last); a response carries no NAK.
fn read_response_fits(
    repr: &PacketRepr,
    payload: &[u8],
    w: &super::SendWqe,
    k: u32,
    mtu: u64,
) -> bool {
    let Some((_, n)) = w.psn else { return false };
    let op = repr.bth.opcode.op();
    let start = matches!(op, Op::ReadRespFirst | Op::ReadRespOnly);
    let end = matches!(op, Op::ReadRespLast | Op::ReadRespOnly);
    let want = w.len.saturating_sub(u64::from(k) * mtu).min(mtu);
    let ack = match repr.ext {
        Ext::Aeth(a) => matches!(a.syndrome, Syndrome::Ack { .. }),
        _ => op == Op::ReadRespMiddle,
    };
    let end_ok = if k + 1 == n {
        end
    } else {
        !end || w.read_gaps.asked_again()
    };
    ack && end_ok && (k > 0 || start) && payload.len() as u64 == want
}

/// The READ responses lost before response `k` of READ `i` arrived, not
/// asked for again yet (PSNs `[from, to)`): a run of READ `i`'s own, else
/// the missing tail of the READ just before it (one at a time: the next
/// response finds the next). Responses come in PSN order,
/// so whatever did not arrive before `k` is lost.
fn read_hole(q: &Inner, i: usize, k: u32) -> Option<(u32, u32)> {
    let w = &q.req.sq[i];
    let (first, _) = w.psn?;
    if let Some((a, b)) = w.read_gaps.hole_before(w.read_done, k) {
        return Some((psn::add(first, a), psn::add(first, b)));
    }
    // The READ before it has ended by now.
    let prev = q.req.sq.iter().take(i).rev().find(|w| w.is_rd_atomic())?;
    let (SendOp::Read { .. }, None, Some((f, n))) = (prev.op, prev.result, prev.psn) else {
        return None;
    };
    let (a, b) = prev.read_gaps.hole_before(prev.read_done, n)?;
    Some((psn::add(f, a), psn::add(f, b)))
}

/// Everything up to PSN `a` is acknowledged (if `a` is in the outstanding window).
fn ack_upto(q: &mut Inner, a: u32) {
    let Some(front) = q.req.sq.front().and_then(|w| w.psn) else {
        return;
    };
    let last_sent = psn::add(q.req.next_psn, psn::MASK);
    if psn::diff(a, psn::add(front.0, psn::MASK)) < 0 || psn::diff(a, last_sent) > 0 {
        return;
    }
    if q.req.acked_psn.is_none_or(|old| psn::diff(a, old) > 0) {
        q.req.acked_psn = Some(a);
        q.req.progress_at = Some(Instant::now());
        q.req.retries_left = q.retry_cnt;
        q.req.rnr_left = q.rnr_retry;
    }
}

/// Complete finished work requests from the front, in order.
fn complete_front(ctx: &Context<'_>, sh: &QpShared, q: &mut Inner) {
    while q.req.send_idx > 0 {
        let w = q.req.sq.front().expect("send_idx > 0");
        let done = match w.result {
            Some(_) => true,
            None if w.is_rd_atomic() => false,
            None => match (w.last_psn(), q.req.acked_psn) {
                (Some(l), Some(a)) => {
                    psn::diff(a, l) >= 0 && w.next_pkt == w.psn.map_or(0, |(_, n)| n)
                }
                _ => false,
            },
        };
        if !done {
            break;
        }
        let w = q.req.sq.pop_front().expect("front");
        q.req.send_idx -= 1;
        sh.complete_send(ctx, &w, w.result.unwrap_or(WcStatus::Success));
        if q.req.send_idx == 0 && q.state == QpState::Sqd {
            ctx.events.raise(AsyncEvent::SqDrained { qpn: sh.qpn });
        }
    }
}

/// The response of the read/atomic WQE `i` arrived: if the read/atomic WQE
/// just before it (in PSN order) has no result yet, its response was lost:
/// the PSN to ask again from. Only the one just before, so the responses
/// after a loss trigger one early retry, not one each.
fn lost_before(q: &Inner, i: usize) -> Option<u32> {
    let prev = q.req.sq.iter().take(i).rev().find(|w| w.is_rd_atomic())?;
    if prev.result.is_some() {
        return None;
    }
    let (f, _) = prev.psn?;
    Some(psn::add(f, prev.read_done))
}
