//! The responder (rxe_resp.c's role): executes requests arriving for a QP.
//!
//! Order of checks, each failure a NAK (RC) or a drop (UC/UD) and nothing
//! written: QP state → PSN (duplicates are answered, gaps NAKed once; an RC
//! request past a gap is held and runs, checked here, once the gap fills:
//! `super::reorder`) →
//! (an XRC target) the SRQ the XRCETH names, whose PD stands for the QP's →
//! opcode sequence → QP access flags → R_Key, PD, MR access, bounds (no
//! overflow) → atomic alignment → receive queue (RNR NAK) → memory (an ODP
//! region the target unmapped is a remote access error).
//!
//! READ, atomic, ATOMIC WRITE and FLUSH requests are remembered (up to
//! `max_dest_rd_atomic`) so a duplicate is answered from the record: READ
//! data re-read, atomic result replayed, ATOMIC WRITE and FLUSH answered
//! again — none is ever executed twice.

use super::psn::{self, MAX_UNACKED};
use super::reorder::Reorder;
use super::tx::{bth, TxQueue};
use super::{Context, Inner, QpShared};
use crate::limits::MAX_MSG;
use crate::log::log;
use crate::resources::counters::bump;
use crate::resources::cq::CqShared;
use crate::resources::mr::FillError;
use crate::resources::mr::KeyError;
use crate::resources::mw::Resolved;
use crate::resources::placement;
use crate::resources::sge::{self, RecvWqe};
use crate::resources::srq::SrqShared;
use crate::transport::Remote;
use crate::types::{Access, FlushLevel, FlushType, Gid, QpState, QpType, Wc, WcOpcode, WcStatus};
use crate::wire::{Aeth, Ext, NakCode, Op, Opcode, PacketRepr, Reth, Syndrome, Transport};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

/// A multi-packet message being received.
enum InMsg {
    Send {
        wqe: RecvWqe,
        offset: u64,
    },
    Write {
        mr: Option<Resolved>,
        va: u64,
        remaining: u64,
        total: u32,
    },
}

/// What a READ or atomic request did, for duplicates.
enum Replay {
    /// `answered`: the receive batch that last answered it and the PSN
    /// it was asked from (a duplicate is answered at most once a batch,
    /// however many arrive; one asking from another PSN is another).
    Read {
        first: u32,
        npsn: u32,
        reth: Reth,
        answered: (u64, u32),
    },
    Atomic {
        psn: u32,
        orig: u64,
    },
    /// An ATOMIC WRITE or FLUSH: done, answered by an empty READ response.
    Placement {
        psn: u32,
    },
}

/// Responder state, under the QP lock.
#[derive(Default)]
pub(super) struct RespState {
    pub(super) rq: VecDeque<RecvWqe>,
    /// Expected PSN.
    pub(super) epsn: u32,
    /// Messages completed (the AETH MSN).
    pub(super) msn: u32,
    /// A sequence NAK was sent for the current gap.
    nak_sent: bool,
    /// Requests past the gap, held until it fills.
    reorder: Reorder,
    cur: Option<InMsg>,
    replay: VecDeque<Replay>,
    /// Coalesced ACK to send at the end of the receive batch.
    pub(super) ack_pending: Option<u32>,
    /// The PSN the last ACK sent acknowledged.
    last_ack: Option<u32>,
    /// Receive completions of this receive batch, published at its end only
    /// after the ACK covering them has left (`device::rx`): an application
    /// that sees its completion and exits must not strand the sender
    /// without an ACK.
    pub(super) completed: Vec<(Wc, bool)>,
    /// A class C or J error (IBTA 9.9.3.1): once this packet's NAK and
    /// completion are out, the responder QP goes to the error state too.
    pub(super) goto_error: bool,
    /// An XRC target: the SRQ the current request's XRCETH names (`super::xrc`).
    pub(super) xrc_srq: Option<Arc<SrqShared>>,
    /// An XRC target: the current request's XRCETH names no SRQ it may use.
    pub(super) xrc_refused: bool,
    /// An XRC target: the SRQ number of the current request, and of the
    /// first packet of the message in progress.
    pub(super) xrc_srqn: Option<u32>,
    pub(super) xrc_msg_srqn: Option<u32>,
    /// An XRC target: the CQ of each of `completed`, in the same order.
    pub(super) xrc_cqs: Vec<Arc<CqShared>>,
    /// WRITE packets by reference checked and counted but not yet placed.
    deferred: Option<Deferred>,
}

/// A run of WRITE packets by reference of one message, in sequence and
/// checked like any (QP, source, PSN, opcode sequence, lengths, R_Key, PD,
/// bounds), counted as received but not yet placed: their payloads follow
/// each other in the sender's memory and their targets in the MR, so one
/// read places them all ([`place_deferred`]) — across processes one
/// `process_vm_readv` whose local iovec is the MR's own range, as UCX's
/// cma does. Until then nothing may acknowledge them: the message's last
/// packet, a packet that is not the run's next, an error, the coalesced
/// ACK, and the end of the receive run (before the QP lock goes) place
/// the run first. A failed read undoes it whole.
struct Deferred {
    /// The first packet's PSN: where a failed read takes the responder back.
    psn: u32,
    /// The first packet opened the message (undone, no message is open).
    opened: bool,
    /// Where the run lands in the MR, and its payloads joined.
    va: u64,
    remote: Remote,
    from: SocketAddr,
}

/// Why a request fails.
enum Fail {
    Nak(NakCode),
    Rnr,
    /// UC/UD: drop silently.
    Drop,
    /// The deferred run before this packet could not be placed and was
    /// undone ([`place_deferred`] answered it); this packet, past it now,
    /// comes again with the rest.
    Undone,
}

/// A request's payload: its bytes, or where a same-host sender kept it
/// (`from`'s packet by reference, see `transport::same_host`).
#[derive(Clone, Copy)]
enum Body<'a> {
    Bytes(&'a [u8]),
    Remote { remote: Remote, from: SocketAddr },
}

impl Body<'_> {
    fn len(&self) -> usize {
        match self {
            Body::Bytes(b) => b.len(),
            Body::Remote { remote, .. } => remote.len(),
        }
    }
}

/// A request past the expected PSN: NAK the gap (sequence error) once,
/// until an expected request arrives (one NAK per gap, as the IBA has it).
fn nak_gap_once(ctx: &Context<'_>, q: &mut Inner, tx: &mut TxQueue) {
    if !q.resp.nak_sent {
        q.resp.nak_sent = true;
        let e = q.resp.epsn;
        ctx.stats.nak_sent(NakCode::PsnSequenceError);
        send_aeth(ctx, q, tx, e, Syndrome::Nak(NakCode::PsnSequenceError));
    }
}

/// An RC WRITE packet whose payload stayed with the same-host sender
/// (`qp::Locked::receive_by_ref` checked the kind and the source). As
/// [`on_request`], except that one past a gap is not held (the payload is
/// not here to hold): the gap's NAK makes the sender send it again.
pub(super) fn on_write_by_ref(
    ctx: &Context<'_>,
    sh: &QpShared,
    q: &mut Inner,
    from: SocketAddr,
    repr: &PacketRepr,
    remote: Remote,
    tx: &mut TxQueue,
) {
    if !matches!(
        q.state,
        QpState::Rtr | QpState::Rts | QpState::Sqd | QpState::Sqe
    ) {
        return;
    }
    if repr.bth.psn != q.resp.epsn {
        // Not the run's next: whatever answers it must follow the run.
        place_deferred(ctx, sh, q, tx);
    }
    let d = psn::diff(repr.bth.psn, q.resp.epsn);
    if d < 0 {
        bump(&ctx.stats.duplicate_requests);
        duplicate(ctx, sh, super::xrc::pd(sh, q), q, repr, tx);
        return;
    }
    if d > 0 {
        bump(&ctx.stats.out_of_sequence);
        nak_gap_once(ctx, q, tx);
        return;
    }
    q.resp.nak_sent = false;
    let body = Body::Remote { remote, from };
    if in_sequence(ctx, sh, q, from, repr, body, tx)
        && q.resp.reorder.any()
        && place_deferred(ctx, sh, q, tx)
    {
        run_held(ctx, sh, q, from, tx);
    }
}

/// Place the deferred run, if any (see [`Deferred`]), with one read from
/// the sender's memory into the MR's range, under the MR's access as any
/// write (its window held, `valid` read, odp's guard or the pinned
/// barrier: the pages stay the MR's for the read, and a pinned region's
/// orphaned pages are skipped, never written through their address).
/// Whether it was placed (or there was none). If not, the run is undone —
/// the responder is as before its first packet, which is NAKed: a read
/// that failed (the sender's memory, the kernel's rules) with a PSN
/// sequence error, the sender asked to carry its payloads from then on; an
/// MR that refused (unmapped ODP pages, a window unbound meanwhile) with a
/// remote access error, as the first packet's own write would have been.
/// Either NAK implies the coalesced ACK, which is dropped.
///
/// Locks: under the QP lock; takes the window's lock and the MR's (see
/// `MrShared::fill_by_ref`) for the read.
pub(super) fn place_deferred(
    ctx: &Context<'_>,
    sh: &QpShared,
    q: &mut Inner,
    tx: &mut TxQueue,
) -> bool {
    let Some(d) = q.resp.deferred.take() else {
        return true;
    };
    let r = match &q.resp.cur {
        Some(InMsg::Write { mr: Some(m), .. }) => match m.hold() {
            Ok(_held) => m.fill_by_ref(d.va, &d.remote),
            Err(_) => Err(FillError::Target(odp::AccessError::OutOfBounds)),
        },
        // A run is deferred only inside an open message that names an MR.
        _ => Err(FillError::Target(odp::AccessError::OutOfBounds)),
    };
    let Err(e) = r else {
        return true;
    };
    log!(
        Debug,
        "qp {:#x}: {} bytes by reference from {} at PSN {:#x}: {e}",
        sh.qpn,
        d.remote.len(),
        d.from,
        d.psn
    );
    let n = d.remote.len() as u64;
    q.resp.epsn = d.psn;
    q.resp.ack_pending = None;
    match &mut q.resp.cur {
        Some(InMsg::Write { va, remaining, .. }) if !d.opened => {
            *va = d.va;
            *remaining += n;
        }
        _ => q.resp.cur = None,
    }
    let code = match e {
        FillError::Target(_) => {
            q.resp.cur = None;
            q.resp.goto_error = true;
            NakCode::RemoteAccessError
        }
        FillError::Source(_) => {
            // Not the MR's fault: the sender's memory or the kernel's rules.
            ctx.link.refuse_by_ref(d.from);
            q.resp.nak_sent = true;
            NakCode::PsnSequenceError
        }
    };
    ctx.stats.nak_sent(code);
    send_aeth(ctx, q, tx, d.psn, Syndrome::Nak(code));
    false
}

fn key_nak(_: KeyError) -> Fail {
    Fail::Nak(NakCode::RemoteAccessError)
}

/// Handle a request packet for this QP.
pub(super) fn on_request(
    ctx: &Context<'_>,
    sh: &QpShared,
    q: &mut Inner,
    from: SocketAddr,
    repr: &PacketRepr,
    payload: &[u8],
    tx: &mut TxQueue,
) {
    if !matches!(
        q.state,
        QpState::Rtr | QpState::Rts | QpState::Sqd | QpState::Sqe
    ) {
        return;
    }
    // A carried request ends a run by reference (the same sender switched
    // to carrying): the run is placed, or undone, before it is looked at.
    place_deferred(ctx, sh, q, tx);
    if sh.qp_type == QpType::Ud {
        ud_receive(ctx, sh, q, from, repr, payload);
        return;
    }
    let p = repr.bth.psn;
    let d = psn::diff(p, q.resp.epsn);
    let op = repr.bth.opcode.op();
    if sh.qp_type == QpType::Uc {
        if d != 0 {
            // UC: a gap loses the message in progress; resync on a new one.
            abandon_uc_message(sh, q);
            if !is_first_or_only(op) {
                return;
            }
            q.resp.epsn = p;
        }
    } else if d < 0 {
        bump(&ctx.stats.duplicate_requests);
        duplicate(ctx, sh, super::xrc::pd(sh, q), q, repr, tx);
        return;
    } else if d > 0 {
        bump(&ctx.stats.out_of_sequence);
        // Held to run once the gap fills (not XRC: its SRQ is resolved per
        // packet on arrival, `super::xrc::accept`).
        if sh.qp_type == QpType::Rc && q.resp.reorder.hold(q.resp.epsn, p, repr, payload) {
            bump(&ctx.stats.reorder_held);
        }
        nak_gap_once(ctx, q, tx);
        return;
    }
    q.resp.nak_sent = false;
    if in_sequence(ctx, sh, q, from, repr, Body::Bytes(payload), tx) && q.resp.reorder.any() {
        run_held(ctx, sh, q, from, tx);
    }
}

/// The requests held past a gap that the request just run filled, in PSN
/// order, until the next gap. If requests are still held past that one, it
/// is NAKed at once — in place of the coalesced ACK, which the NAK's PSN
/// implies: an ACK alone would tell the requester that everything past it
/// was dropped, as a go-back-N responder's would.
fn run_held(ctx: &Context<'_>, sh: &QpShared, q: &mut Inner, from: SocketAddr, tx: &mut TxQueue) {
    let mut last = None;
    while let Some((repr, payload)) = q.resp.reorder.take(q.resp.epsn) {
        bump(&ctx.stats.reorder_run);
        if !in_sequence(ctx, sh, q, from, &repr, Body::Bytes(&payload), tx) {
            // Refused (an RNR or error NAK went out): the requester sends
            // everything from there again.
            q.resp.reorder.clear();
            return;
        }
        last = Some(repr);
    }
    if let Some(r) = last.filter(|r| !is_rd_atomic(r.bth.opcode.op())) {
        // The ACK covers everything run, not only the last request that
        // asked for one: the requester learns at once that nothing past
        // the gap is missing (a READ's or atomic's answer speaks for it).
        q.resp.ack_pending = Some(r.bth.psn);
    }
    if q.resp.reorder.any() {
        q.resp.ack_pending = None;
        q.resp.nak_sent = true;
        let e = q.resp.epsn;
        ctx.stats.nak_sent(NakCode::PsnSequenceError);
        send_aeth(ctx, q, tx, e, Syndrome::Nak(NakCode::PsnSequenceError));
    }
}

/// Whether `op` is answered by a response of its own (not an ACK).
fn is_rd_atomic(op: Op) -> bool {
    matches!(op, Op::ReadRequest | Op::CompareSwap | Op::FetchAdd) || op.is_placement()
}

/// Run the request at the expected PSN: on success the expected PSN moves
/// past it (and its ACK is due if it asked for one); a failure is NAKed
/// (RC) or dropped (UC). Whether it succeeded.
fn in_sequence(
    ctx: &Context<'_>,
    sh: &QpShared,
    q: &mut Inner,
    from: SocketAddr,
    repr: &PacketRepr,
    body: Body<'_>,
    tx: &mut TxQueue,
) -> bool {
    let p = repr.bth.psn;
    let op = repr.bth.opcode.op();
    let mut r = execute(ctx, sh, q, repr, body, tx);
    // Refused: what came before it in the run is placed first (its NAK
    // acknowledges them); if that fails, the run's undoing answers all.
    if matches!(r, Err(ref f) if !matches!(f, Fail::Undone)) && !place_deferred(ctx, sh, q, tx) {
        r = Err(Fail::Undone);
    }
    match r {
        Ok(npsn) => {
            q.resp.epsn = psn::add(p, npsn);
            if repr.bth.ack_req && sh.qp_type.is_reliable() && !is_rd_atomic(op) {
                // Coalesced: one ACK a QP at the end of the receive batch,
                // sent before the receive completions it covers become
                // visible (`device::rx`).
                q.resp.ack_pending = Some(p);
            }
            return true;
        }
        Err(Fail::Rnr) if sh.qp_type.is_reliable() => {
            let t = q.min_rnr_timer;
            bump(&ctx.stats.rnr_naks_sent);
            send_aeth(ctx, q, tx, p, Syndrome::RnrNak { timer: t });
        }
        Err(Fail::Rnr) => {
            // UC has no RNR NAK either: a message with no receive WQE for it
            // is dropped (IBA 9.7.5.2.2); the sender never learns.
            q.resp.cur = None;
            bump(&ctx.stats.uc_dropped);
        }
        Err(Fail::Nak(code)) => {
            q.resp.cur = None;
            log!(
                Debug,
                "qp {:#x}: {} from {from} refused: {code:?}",
                sh.qpn,
                repr
            );
            if sh.qp_type.is_reliable() {
                ctx.stats.nak_sent(code);
                send_aeth(ctx, q, tx, p, Syndrome::Nak(code));
                // Invalid request, remote access and remote operational
                // errors end the connection on both sides (as rxe and mlx5).
                q.resp.goto_error = true;
            } else {
                // UC has no NAK: the message is dropped (rxe's class D/E).
                bump(&ctx.stats.uc_dropped);
            }
        }
        Err(Fail::Drop) => q.resp.cur = None,
        Err(Fail::Undone) => {}
    }
    false
}

/// Payload length rules of IBTA 9.7.5.1.x as rxe's check_length applies
/// them: first and middle packets carry exactly the path MTU, last packets
/// 1..=MTU bytes, only packets at most the MTU.
fn packet_len_ok(op: Op, len: u64, mtu: u64) -> bool {
    match (op.is_first(), op.is_last()) {
        (true, true) => len <= mtu,
        (false, true) => len > 0 && len <= mtu,
        _ => len == mtu,
    }
}

fn is_first_or_only(op: Op) -> bool {
    matches!(
        op,
        Op::SendFirst
            | Op::SendOnly
            | Op::SendOnlyImm
            | Op::SendOnlyInv
            | Op::WriteFirst
            | Op::WriteOnly
            | Op::WriteOnlyImm
    )
}

/// Run one in-sequence request; returns how many PSNs it used.
fn execute(
    ctx: &Context<'_>,
    sh: &QpShared,
    q: &mut Inner,
    repr: &PacketRepr,
    body: Body<'_>,
    tx: &mut TxQueue,
) -> Result<u32, Fail> {
    let op = repr.bth.opcode.op();
    // Only a WRITE comes by reference (`qp::Locked::receive_by_ref`).
    let payload = match body {
        Body::Bytes(b) => b,
        Body::Remote { .. } if op.is_write() => &[],
        Body::Remote { .. } => return Err(Fail::Nak(NakCode::InvalidRequest)),
    };
    let plen = body.len() as u64;
    let mtu = q.path_mtu.bytes() as u64;
    let invalid = Fail::Nak(NakCode::InvalidRequest);
    if super::xrc::refused(sh, q, op) {
        bump(&ctx.stats.xrc_bad_srqn);
        return Err(invalid);
    }
    let pd = super::xrc::pd(sh, q);
    match op {
        Op::SendFirst | Op::SendOnly | Op::SendOnlyImm | Op::SendOnlyInv => {
            if q.resp.cur.is_some() {
                return Err(invalid);
            }
            if !packet_len_ok(op, payload.len() as u64, mtu) {
                return Err(invalid);
            }
            let wqe = sh.take_recv(ctx, q).ok_or(Fail::Rnr)?;
            q.resp.cur = Some(InMsg::Send { wqe, offset: 0 });
            recv_payload(ctx, sh, q, repr, payload)
        }
        Op::SendMiddle | Op::SendLast | Op::SendLastImm | Op::SendLastInv => {
            if !matches!(q.resp.cur, Some(InMsg::Send { .. })) {
                return Err(invalid);
            }
            if !packet_len_ok(op, payload.len() as u64, mtu) {
                return Err(invalid);
            }
            recv_payload(ctx, sh, q, repr, payload)
        }
        Op::WriteFirst | Op::WriteOnly | Op::WriteOnlyImm => {
            if q.resp.cur.is_some() {
                return Err(invalid);
            }
            let reth = match repr.ext {
                Ext::Reth(r) | Ext::RethImm(r, _) => r,
                _ => return Err(invalid),
            };
            if !q.access.contains(Access::REMOTE_WRITE) {
                return Err(Fail::Nak(NakCode::RemoteAccessError));
            }
            let single = op != Op::WriteFirst;
            if !packet_len_ok(op, plen, mtu)
                || u64::from(reth.len) > MAX_MSG
                || (single && plen != u64::from(reth.len))
                || (!single && u64::from(reth.len) <= mtu)
            {
                return Err(invalid);
            }
            // A zero-length write names no memory: its R_Key is not checked.
            let mr = if reth.len == 0 {
                None
            } else {
                let len = u64::from(reth.len);
                let mr = ctx
                    .mrs
                    .resolve(reth.rkey, pd, sh.qpn, reth.va, len, Access::REMOTE_WRITE)
                    .map_err(key_nak)?;
                // ODP: the message's pages in one fault, not one per packet.
                mr.fault_in(reth.va, u64::from(reth.len), true);
                Some(mr)
            };
            if op == Op::WriteOnlyImm && !sh.has_recv(q) {
                return Err(Fail::Rnr);
            }
            q.resp.cur = Some(InMsg::Write {
                mr,
                va: reth.va,
                remaining: u64::from(reth.len),
                total: reth.len,
            });
            write_payload(ctx, sh, q, repr, body, tx)
        }
        Op::WriteMiddle | Op::WriteLast | Op::WriteLastImm => {
            if !matches!(q.resp.cur, Some(InMsg::Write { .. })) {
                return Err(invalid);
            }
            if !packet_len_ok(op, plen, mtu) {
                return Err(invalid);
            }
            if op == Op::WriteLastImm && !sh.has_recv(q) {
                return Err(Fail::Rnr);
            }
            write_payload(ctx, sh, q, repr, body, tx)
        }
        Op::ReadRequest => {
            let Ext::Reth(reth) = repr.ext else {
                return Err(invalid);
            };
            if q.resp.cur.is_some() {
                return Err(invalid);
            }
            if !q.access.contains(Access::REMOTE_READ) {
                return Err(Fail::Nak(NakCode::RemoteAccessError));
            }
            // Checked before the R_Key, as rxe's check_length; the bound
            // also caps what one request makes the receive thread queue.
            if u64::from(reth.len) > MAX_MSG {
                return Err(invalid);
            }
            let mr = read_mr(ctx, sh, pd, q, reth)?;
            if let Some(mr) = &mr {
                mr.fault_in(reth.va, u64::from(reth.len), false);
            }
            let npsn = u64::from(reth.len).div_ceil(mtu).max(1) as u32;
            let first = repr.bth.psn;
            read_responses(ctx, q, mr.as_ref(), first, npsn, reth, 0, tx)?;
            remember(
                q,
                Replay::Read {
                    first,
                    npsn,
                    reth,
                    answered: (ctx.rx_batch, first),
                },
            );
            q.resp.msn = psn::add(q.resp.msn, 1);
            Ok(npsn)
        }
        Op::CompareSwap | Op::FetchAdd => {
            let Ext::Atomic(a) = repr.ext else {
                return Err(invalid);
            };
            if q.resp.cur.is_some() {
                return Err(invalid);
            }
            if !q.access.contains(Access::REMOTE_ATOMIC) {
                return Err(Fail::Nak(NakCode::RemoteAccessError));
            }
            if a.va % 8 != 0 {
                return Err(invalid);
            }
            let mr = ctx
                .mrs
                .resolve(a.rkey, pd, sh.qpn, a.va, 8, Access::REMOTE_ATOMIC)
                .map_err(key_nak)?;
            let held = mr
                .hold()
                .map_err(|_| Fail::Nak(NakCode::RemoteAccessError))?;
            let r = if op == Op::CompareSwap {
                mr.compare_and_swap(a.va, a.compare, a.swap_add)
            } else {
                mr.fetch_and_add(a.va, a.swap_add)
            };
            drop(held);
            let orig = r.map_err(|_| Fail::Nak(NakCode::RemoteAccessError))?;
            q.resp.msn = psn::add(q.resp.msn, 1);
            remember(
                q,
                Replay::Atomic {
                    psn: repr.bth.psn,
                    orig,
                },
            );
            send_atomic_ack(ctx, q, tx, repr.bth.psn, orig);
            Ok(1)
        }
        Op::AtomicWrite => atomic_write(ctx, sh, q, repr, payload, tx),
        Op::Flush => flush(ctx, sh, q, repr, tx),
        _ => Err(invalid),
    }
}

fn remember(q: &mut Inner, r: Replay) {
    while q.resp.replay.len() >= usize::from(q.max_dest_rd_atomic).max(1) {
        q.resp.replay.pop_front();
    }
    q.resp.replay.push_back(r);
}

/// SEND payload into the current receive WQE; completes it on the last packet.
fn recv_payload(
    ctx: &Context<'_>,
    sh: &QpShared,
    q: &mut Inner,
    repr: &PacketRepr,
    payload: &[u8],
) -> Result<u32, Fail> {
    let op = repr.bth.opcode.op();
    let pd = super::xrc::pd(sh, q);
    let Some(InMsg::Send { wqe, offset }) = q.resp.cur.as_mut() else {
        unreachable!("checked by the caller")
    };
    let end = *offset + payload.len() as u64;
    let status = if end > wqe.len {
        Some((WcStatus::LocLenErr, NakCode::InvalidRequest))
    } else {
        sge::scatter(&wqe.sges, pd, *offset, payload)
            .err()
            .map(|s| (s, NakCode::RemoteOperationalError))
    };
    if let Some((st, nak)) = status {
        let Some(InMsg::Send { wqe, .. }) = q.resp.cur.take() else {
            unreachable!()
        };
        q.resp
            .completed
            .push((recv_wc(wqe.wr_id, st, WcOpcode::Recv, 0), false));
        return Err(Fail::Nak(nak));
    }
    *offset = end;
    if matches!(
        op,
        Op::SendLast
            | Op::SendLastImm
            | Op::SendLastInv
            | Op::SendOnly
            | Op::SendOnlyImm
            | Op::SendOnlyInv
    ) {
        let Some(InMsg::Send { wqe, offset }) = q.resp.cur.take() else {
            unreachable!()
        };
        let mut wc = recv_wc(wqe.wr_id, WcStatus::Success, WcOpcode::Recv, offset as u32);
        if let Ext::Inv(rkey) = repr.ext {
            // Only a memory window or a fast-registration MR may be
            // invalidated by a peer (IBTA 10.6.7.2); fast registration is a
            // kernel verb, so here: a type 2 window of this QP's PD. Any
            // other key (a plain MR is never invalidated) fails, as on rxe
            // (class J): the receive completes in error and both QPs go to
            // the error state.
            if ctx.mrs.invalidate_mw(super::xrc::pd(sh, q), rkey).is_err() {
                q.resp.completed.push((
                    recv_wc(wqe.wr_id, WcStatus::RemInvReqErr, WcOpcode::Recv, 0),
                    false,
                ));
                return Err(Fail::Nak(NakCode::InvalidRequest));
            }
            wc.invalidated_rkey = Some(rkey);
        }
        if let Ext::Imm(i) = repr.ext {
            wc.imm = Some(i);
        }
        q.resp.msn = psn::add(q.resp.msn, 1);
        q.resp.completed.push((wc, repr.bth.solicited));
    }
    Ok(1)
}

/// WRITE payload into the target MR; on a last-with-immediate, a completion.
/// A payload by reference joins the deferred run (see [`Deferred`]),
/// placed at the message's last packet at the latest.
fn write_payload(
    ctx: &Context<'_>,
    sh: &QpShared,
    q: &mut Inner,
    repr: &PacketRepr,
    body: Body<'_>,
    tx: &mut TxQueue,
) -> Result<u32, Fail> {
    let op = repr.bth.opcode.op();
    let last = matches!(
        op,
        Op::WriteLast | Op::WriteLastImm | Op::WriteOnly | Op::WriteOnlyImm
    );
    let joined = match (body, &q.resp.deferred) {
        (Body::Remote { remote, .. }, Some(d)) => d.remote.join(&remote),
        _ => None,
    };
    if joined.is_none() && !place_deferred(ctx, sh, q, tx) {
        // (Only a run's next packet can find one deferred: this is it.)
        return Err(Fail::Undone);
    }
    let Some(InMsg::Write {
        mr,
        va,
        remaining,
        total,
    }) = q.resp.cur.as_mut()
    else {
        unreachable!("checked by the caller")
    };
    let n = body.len() as u64;
    if n > *remaining || (last && n != *remaining) {
        return Err(Fail::Nak(NakCode::InvalidRequest));
    }
    if n > 0 {
        let m = mr.as_ref().ok_or(Fail::Nak(NakCode::InvalidRequest))?;
        // Through a window: only while it stays bound (checked each packet).
        let _held = m
            .hold()
            .map_err(|_| Fail::Nak(NakCode::RemoteAccessError))?;
        match body {
            // The ODP path: a region the target unmapped is a remote access error.
            Body::Bytes(b) => m
                .write(*va, b)
                .map_err(|_| Fail::Nak(NakCode::RemoteAccessError))?,
            // Checked above as carried bytes are: placed with its run.
            Body::Remote { remote, from } => match (joined, q.resp.deferred.as_mut()) {
                (Some(j), Some(d)) => d.remote = j,
                _ => {
                    q.resp.deferred = Some(Deferred {
                        psn: repr.bth.psn,
                        opened: op.is_first(),
                        va: *va,
                        remote,
                        from,
                    })
                }
            },
        }
    }
    *va += n;
    *remaining -= n;
    let total = *total;
    if last {
        // The message ends here: placed before it counts (MSN, completion).
        if !place_deferred(ctx, sh, q, tx) {
            return Err(Fail::Undone);
        }
        q.resp.cur = None;
        q.resp.msn = psn::add(q.resp.msn, 1);
        let imm = match repr.ext {
            Ext::Imm(i) | Ext::RethImm(_, i) => Some(i),
            _ => None,
        };
        if let Some(i) = imm {
            let wqe = sh.take_recv(ctx, q).expect("checked before writing");
            let mut wc = recv_wc(
                wqe.wr_id,
                WcStatus::Success,
                WcOpcode::RecvRdmaWithImm,
                total,
            );
            wc.imm = Some(i);
            q.resp.completed.push((wc, repr.bth.solicited));
        }
    }
    Ok(1)
}

fn recv_wc(wr_id: u64, status: WcStatus, opcode: WcOpcode, byte_len: u32) -> Wc {
    Wc {
        wr_id,
        status,
        opcode,
        byte_len,
        ..Wc::EMPTY
    }
}

/// A response's opcode: of the QP's transport (RC, or XRC for a target).
/// Only RC and XRC QPs answer (their callers check); should another ever
/// reach here, it answers as RC rather than take the receive thread down.
fn reply(q: &Inner, op: Op) -> Opcode {
    debug_assert!(matches!(q.transport, Transport::Rc | Transport::Xrc));
    Opcode::new(q.transport, op)
        .or(Opcode::new(Transport::Rc, op))
        .expect("RC has every op")
}

/// READ responses built under one window onto the memory (the requester's
/// PSN window: what it sends under one window at most).
const WINDOW_PACKETS: u32 = MAX_UNACKED;

/// The MR a READ of `reth` reads, checked: the QP's and the MR's (or its
/// window's) right, the PD, the bounds (None for a zero-length READ, which names no memory).
/// A duplicate is checked again: its key may name another MR by now.
fn read_mr(
    ctx: &Context<'_>,
    sh: &QpShared,
    pd: u32,
    q: &Inner,
    reth: Reth,
) -> Result<Option<Resolved>, Fail> {
    if !q.access.contains(Access::REMOTE_READ) {
        return Err(Fail::Nak(NakCode::RemoteAccessError));
    }
    if reth.len == 0 {
        return Ok(None);
    }
    let len = u64::from(reth.len);
    let mr = ctx
        .mrs
        .resolve(reth.rkey, pd, sh.qpn, reth.va, len, Access::REMOTE_READ)
        .map_err(key_nak)?;
    Ok(Some(mr))
}

/// READ responses for PSNs `first+from .. first+npsn` from `mr` (checked by
/// [`read_mr`]). The transmit queue is sized before each window opens, and
/// sends what it holds when it passes its bound: one READ holds at most one
/// window of responses in memory, however long it is.
#[allow(clippy::too_many_arguments)]
fn read_responses(
    ctx: &Context<'_>,
    q: &Inner,
    mr: Option<&Resolved>,
    first: u32,
    npsn: u32,
    reth: Reth,
    from: u32,
    tx: &mut TxQueue,
) -> Result<(), Fail> {
    let peer = q.peer.ok_or(Fail::Drop)?;
    let mtu = q.path_mtu.bytes() as u64;
    let aeth = Aeth {
        syndrome: Syndrome::Ack { credits: 0x1f },
        msn: psn::add(q.resp.msn, 1),
    };
    // The memory is read through one window per WINDOW_PACKETS responses:
    // not one guard a packet, and not one for a whole large READ either (a
    // guard holds off every invalidation of the address space).
    // Through a memory window: held over each window onto the memory
    // (declared first: released after it).
    let mut _held = None;
    let mut window = None;
    for k in from..npsn {
        let off = u64::from(k) * mtu;
        let plen = (u64::from(reth.len) - off).min(mtu) as usize;
        if (k - from) % WINDOW_PACKETS == 0 {
            // One window per thread: close before opening; and size the
            // queue first, as nothing may allocate under a window.
            window = None;
            _held = None;
            tx.reserve(ctx, (npsn - k).min(WINDOW_PACKETS) as usize, mtu as usize);
            let end = (off + u64::from(WINDOW_PACKETS) * mtu).min(u64::from(reth.len));
            if let Some(m) = mr {
                let h = m
                    .hold()
                    .map_err(|_| Fail::Nak(NakCode::RemoteAccessError))?;
                _held = Some(h);
                let w = m.window(reth.va + off, end - off, false);
                window = Some(w.map_err(|_| Fail::Nak(NakCode::RemoteAccessError))?);
            }
        }
        let (op, ext) = match (npsn == 1, k == 0, k == npsn - 1) {
            (true, _, _) => (Op::ReadRespOnly, Ext::Aeth(aeth)),
            (_, true, _) => (Op::ReadRespFirst, Ext::Aeth(aeth)),
            (_, _, true) => (Op::ReadRespLast, Ext::Aeth(aeth)),
            _ => (Op::ReadRespMiddle, Ext::None),
        };
        let repr = PacketRepr {
            bth: bth(reply(q, op), q.dest_qpn, psn::add(first, k), false, false),
            ext,
            payload_len: plen,
        };
        tx.push(ctx, peer, &repr, |buf| match &mut window {
            Some(w) => w
                .window
                .read(reth.va + off, buf)
                .map_err(|_| Fail::Nak(NakCode::RemoteAccessError)),
            None => Ok(()),
        })?;
    }
    Ok(())
}

fn send_atomic_ack(ctx: &Context<'_>, q: &Inner, tx: &mut TxQueue, p: u32, orig: u64) {
    let Some(peer) = q.peer else { return };
    let aeth = Aeth {
        syndrome: Syndrome::Ack { credits: 0x1f },
        msn: q.resp.msn,
    };
    let repr = PacketRepr {
        bth: bth(reply(q, Op::AtomicAck), q.dest_qpn, p, false, false),
        ext: Ext::AtomicAck(aeth, orig),
        payload_len: 0,
    };
    let _ = tx.push(ctx, peer, &repr, |_| Ok::<(), ()>(()));
}

/// An ACK, NAK or RNR NAK for PSN `p` (a pending coalesced ACK goes first).
fn send_aeth(ctx: &Context<'_>, q: &mut Inner, tx: &mut TxQueue, p: u32, syndrome: Syndrome) {
    if !matches!(syndrome, Syndrome::Ack { .. }) {
        flush_ack(ctx, q, tx);
    }
    let Some(peer) = q.peer else { return };
    if matches!(syndrome, Syndrome::Ack { .. }) {
        q.resp.last_ack = Some(p);
    }
    let repr = PacketRepr {
        bth: bth(reply(q, Op::Ack), q.dest_qpn, p, false, false),
        ext: Ext::Aeth(Aeth {
            syndrome,
            msn: q.resp.msn,
        }),
        payload_len: 0,
    };
    let _ = tx.push(ctx, peer, &repr, |_| Ok::<(), ()>(()));
}

/// A coalesced ACK covering this many PSNs past the last one sent leaves
/// before the receive batch ends (a quarter of the requester's window, see
/// `psn::MAX_UNACKED`): while the rest of a large batch is handled
/// here, the requester, its window reopened, sends more instead of waiting.
const ACK_EVERY: i32 = (MAX_UNACKED / 4) as i32;

/// Whether the coalesced ACK should leave now rather than at the end of
/// the receive batch.
pub(super) fn ack_due(q: &Inner) -> bool {
    match (q.resp.ack_pending, q.resp.last_ack) {
        (Some(p), Some(last)) => psn::diff(p, last) >= ACK_EVERY,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// Send the coalesced ACK, if any.
pub(super) fn flush_ack(ctx: &Context<'_>, q: &mut Inner, tx: &mut TxQueue) {
    if let Some(p) = q.resp.ack_pending.take() {
        send_aeth(ctx, q, tx, p, Syndrome::Ack { credits: 0x1f });
    }
}

/// A request below the expected PSN: answer it again, execute nothing.
///
/// A duplicate READ is answered at most once a receive batch (the first
/// one; rxe likewise restarts one reply per READ rather than adding one):
/// a burst of duplicates of one large READ must not become a burst of
/// copies of it. The requester's own retries come one per timeout or gap.
fn duplicate(
    ctx: &Context<'_>,
    sh: &QpShared,
    pd: u32,
    q: &mut Inner,
    repr: &PacketRepr,
    tx: &mut TxQueue,
) {
    let p = repr.bth.psn;
    let op = repr.bth.opcode.op();
    match op {
        Op::ReadRequest => {
            let found = q.resp.replay.iter_mut().find_map(|r| match r {
                Replay::Read {
                    first,
                    npsn,
                    reth,
                    answered,
                } if psn::diff(p, *first) >= 0 && (psn::diff(p, *first) as u32) < *npsn => {
                    let again = *answered != (ctx.rx_batch, p);
                    *answered = (ctx.rx_batch, p);
                    again.then_some((*first, *npsn, *reth))
                }
                _ => None,
            });
            // Its key, PD and rights checked again: the MR may be gone, or
            // the key another MR's, by now. A failure answers nothing.
            if let Some((first, npsn, reth)) = found {
                let from = psn::diff(p, first) as u32;
                let mtu = q.path_mtu.bytes() as u64;
                let to = match repr.ext {
                    Ext::Reth(asked) => asked_range_end(reth, npsn, from, asked, mtu),
                    _ => npsn,
                };
                if let Ok(mr) = read_mr(ctx, sh, pd, q, reth) {
                    // Responses `from..to`: the last of them a last.
                    let _ = read_responses(ctx, q, mr.as_ref(), first, to, reth, from, tx);
                }
            }
        }
        Op::CompareSwap | Op::FetchAdd => {
            let orig = q.resp.replay.iter().find_map(|r| match r {
                Replay::Atomic { psn, orig } if *psn == p => Some(*orig),
                _ => None,
            });
            if let Some(orig) = orig {
                send_atomic_ack(ctx, q, tx, p, orig);
            }
        }
        Op::AtomicWrite | Op::Flush => {
            // Answered again, never executed again (rxe's replay); no
            // record (older than max_dest_rd_atomic): dropped, class D.
            let done = q
                .resp
                .replay
                .iter()
                .any(|r| matches!(r, Replay::Placement { psn } if *psn == p));
            if done {
                send_read_response_ack(ctx, q, tx, p);
            }
        }
        _ => {
            // SEND/WRITE already done: acknowledge everything received so
            // far — once per receive batch (the coalesced ACK), not once per
            // duplicate: a go-back-N burst of duplicates must not become a
            // burst of ACKs.
            q.resp.ack_pending = Some(psn::add(q.resp.epsn, psn::MASK));
        }
    }
}

/// Where the responses to a duplicate READ end (exclusive, a packet index
/// of the original READ `reth` of `npsn` packets): where its own RETH
/// (`asked`, from packet `from`) ends, as rxe's responder answers, if that
/// RETH names a part of the original that starts at `from` and ends on a
/// packet boundary or at the original's end; else the original's end (a
/// requester that re-asks for the rest gets the rest either way).
fn asked_range_end(reth: Reth, npsn: u32, from: u32, asked: Reth, mtu: u64) -> u32 {
    let off = u64::from(from) * mtu;
    let end = off + u64::from(asked.len);
    let total = u64::from(reth.len);
    let fits = asked.rkey == reth.rkey
        && asked.va == reth.va.wrapping_add(off)
        && asked.len > 0
        && end <= total
        && (end == total || end % mtu == 0);
    if fits {
        (end.div_ceil(mtu) as u32).clamp(from + 1, npsn)
    } else {
        npsn
    }
}

/// UD: one packet, one message, a 40-byte GRH area in front of the data.
fn ud_receive(
    ctx: &Context<'_>,
    sh: &QpShared,
    q: &mut Inner,
    from: SocketAddr,
    repr: &PacketRepr,
    payload: &[u8],
) {
    let (deth, imm) = match repr.ext {
        Ext::Deth(d) => (d, None),
        Ext::DethImm(d, i) => (d, Some(i)),
        _ => return,
    };
    if deth.qkey != q.qkey {
        bump(&ctx.stats.qkey_violations);
        return;
    }
    let Some(wqe) = sh.take_recv(ctx, q) else {
        return; // UD has no RNR: the datagram is lost
    };
    let total = 40 + payload.len() as u64;
    let mut wc = recv_wc(wqe.wr_id, WcStatus::Success, WcOpcode::Recv, total as u32);
    if total > wqe.len {
        wc.status = WcStatus::LocLenErr;
    } else {
        let grh = grh(Gid::from_ip(from.ip()), ctx.gid, payload.len());
        if let Err(s) = sge::scatter(&wqe.sges, sh.pd, 0, &grh)
            .and_then(|_| sge::scatter(&wqe.sges, sh.pd, 40, payload))
        {
            wc.status = s;
        }
    }
    wc.imm = imm;
    wc.src_qp = deth.src_qp;
    wc.grh = true;
    sh.complete_recv(ctx, wc, repr.bth.solicited);
}

/// The GRH a UD receive buffer starts with (IPv6 layout, RoCEv2 GIDs).
fn grh(sgid: Gid, dgid: Gid, payload: usize) -> [u8; 40] {
    let mut g = [0u8; 40];
    g[0] = 0x60;
    g[4..6].copy_from_slice(&((payload + 12 + 8 + 4) as u16).to_be_bytes());
    g[6] = 0x1b;
    g[7] = 64;
    g[8..24].copy_from_slice(&sgid.0);
    g[24..40].copy_from_slice(&dgid.0);
    g
}

/// UC lost a packet of the message in progress: the message is gone, and a
/// dropped UC message generates no completion, so the receive WQE it had
/// taken is not consumed — it serves the next message (rxe does the same).
/// Dropping it would leak the application's buffer: no completion, ever.
fn abandon_uc_message(sh: &QpShared, q: &mut Inner) {
    if let Some(InMsg::Send { wqe, .. }) = q.resp.cur.take() {
        match &sh.srq {
            Some(srq) => srq.give_back(wqe),
            None => q.resp.rq.push_front(wqe),
        }
    }
}

/// ATOMIC WRITE (rxe's `atomic_write_reply`): checked as a WRITE of 8
/// bytes — the QP's and the MR's remote write right, a RETH length and a
/// payload of exactly 8, the bounds — and aligned as an atomic (misaligned:
/// invalid request, as rxe); then stored at once, remembered, and answered
/// by an empty READ response.
fn atomic_write(
    ctx: &Context<'_>,
    sh: &QpShared,
    q: &mut Inner,
    repr: &PacketRepr,
    payload: &[u8],
    tx: &mut TxQueue,
) -> Result<u32, Fail> {
    let invalid = Fail::Nak(NakCode::InvalidRequest);
    let access = Fail::Nak(NakCode::RemoteAccessError);
    let Ext::Reth(reth) = repr.ext else {
        return Err(invalid);
    };
    if q.resp.cur.is_some() {
        return Err(invalid);
    }
    if !q.access.contains(Access::REMOTE_WRITE) {
        return Err(access);
    }
    let Ok(data) = <[u8; 8]>::try_from(payload) else {
        return Err(invalid);
    };
    if reth.len != 8 || reth.va % 8 != 0 {
        return Err(invalid);
    }
    // An MR's key or a bound window's (checked again while held).
    let mr = ctx
        .mrs
        .resolve(reth.rkey, sh.pd, sh.qpn, reth.va, 8, Access::REMOTE_WRITE)
        .map_err(key_nak)?;
    let held = mr
        .hold()
        .map_err(|_| Fail::Nak(NakCode::RemoteAccessError))?;
    placement::atomic_write(&mr, reth.va, data).map_err(|_| access)?;
    drop(held);
    placed(ctx, q, repr.bth.psn, tx);
    Ok(1)
}

/// FLUSH (rxe's `process_flush`): a known placement type and level (else
/// an invalid request), the right for each type asked for on the QP (as
/// rxe) and on the MR, the RETH's range inside the MR unless the level is
/// the whole MR; then the flush (see `placement::flush`), remembered and
/// answered by an empty READ response. No MR allows persistence, so a
/// FLUSH asking for it is a remote access error.
fn flush(
    ctx: &Context<'_>,
    sh: &QpShared,
    q: &mut Inner,
    repr: &PacketRepr,
    tx: &mut TxQueue,
) -> Result<u32, Fail> {
    let invalid = Fail::Nak(NakCode::InvalidRequest);
    let access = Fail::Nak(NakCode::RemoteAccessError);
    let Ext::FethReth(feth, reth) = repr.ext else {
        return Err(invalid);
    };
    if q.resp.cur.is_some() {
        return Err(invalid);
    }
    let kind = FlushType(feth.placement);
    let (true, Some(level)) = (kind.is_valid(), FlushLevel::from_u8(feth.level)) else {
        return Err(invalid);
    };
    let mut need = Access::default();
    if kind.contains(FlushType::GLOBAL) {
        need = need | Access::FLUSH_GLOBAL;
    }
    if kind.contains(FlushType::PERSISTENT) {
        need = need | Access::FLUSH_PERSISTENT;
    }
    if !q.access.contains(need) {
        return Err(access);
    }
    if u64::from(reth.len) > MAX_MSG {
        return Err(invalid);
    }
    // An MR's key or a bound window's; the whole-MR level names the range
    // of the MR beneath.
    let (at, named) = match level {
        FlushLevel::Range => (reth.va, u64::from(reth.len)),
        // The RETH's range means nothing here: an MR is checked at its
        // start, a window at the RETH's address (within the window).
        FlushLevel::Mr => (ctx.mrs.get(reth.rkey).map_or(reth.va, |m| m.range().0), 0),
    };
    let mr = ctx
        .mrs
        .resolve(reth.rkey, sh.pd, sh.qpn, at, named, need)
        .map_err(key_nak)?;
    let (va, len) = match level {
        FlushLevel::Range => (reth.va, named),
        FlushLevel::Mr => mr.range(),
    };
    let held = mr
        .hold()
        .map_err(|_| Fail::Nak(NakCode::RemoteAccessError))?;
    placement::flush(&mr, va, len).map_err(|_| access)?;
    drop(held);
    placed(ctx, q, repr.bth.psn, tx);
    Ok(1)
}

/// An ATOMIC WRITE or FLUSH at PSN `p` is done: one more message,
/// remembered for its duplicates, and answered.
fn placed(ctx: &Context<'_>, q: &mut Inner, p: u32, tx: &mut TxQueue) {
    q.resp.msn = psn::add(q.resp.msn, 1);
    remember(q, Replay::Placement { psn: p });
    send_read_response_ack(ctx, q, tx, p);
}

/// The answer to an ATOMIC WRITE or FLUSH: a READ response only with no
/// payload (rxe's `send_read_response_ack`).
fn send_read_response_ack(ctx: &Context<'_>, q: &Inner, tx: &mut TxQueue, p: u32) {
    let Some(peer) = q.peer else { return };
    let aeth = Aeth {
        syndrome: Syndrome::Ack { credits: 0x1f },
        msn: q.resp.msn,
    };
    let repr = PacketRepr {
        bth: bth(reply(q, Op::ReadRespOnly), q.dest_qpn, p, false, false),
        ext: Ext::Aeth(aeth),
        payload_len: 0,
    };
    let _ = tx.push(ctx, peer, &repr, |_| Ok::<(), ()>(()));
}
