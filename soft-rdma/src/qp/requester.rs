//! The requester (rxe_req.c's role): turns send work requests into packets —
//! segmentation by path MTU, PSN assignment, `max_rd_atomic`, fences — and
//! retransmits go-back-N from the oldest unacknowledged PSN on timeout or
//! after an RNR wait; a sequence NAK or a loss probe resends one packet
//! first and lets the answer decide (`super::loss`).
//!
//! The timer is lazy: armed for the earlier of the loss probe's and the
//! local ACK timeout's deadlines, and when it fires it checks whether an
//! acknowledgement made progress since; only then is it a probe or a timeout.

use super::loss::{ReadGaps, Recovery, Rtt, Verdict};
use super::psn::{self, HELD_PSNS, MAX_UNACKED};
use super::tx::{bth, peer_of, TxQueue};
use super::{xrc, Context, Inner, Next, QpShared};
use crate::limits::MAX_MSG;
use crate::log::log;
use crate::resources::counters::bump;
use crate::resources::flight;
use crate::resources::sge::{self, Payload, ResolvedSge};
use crate::types::{Errno, QpState, QpType, SendOp, SendWr, WcStatus};
use crate::wire::{AtomicEth, Deth, Ext, Feth, Op, Opcode, PacketRepr, Reth};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A posted send work request and its progress.
pub(super) struct SendWqe {
    pub(super) wr_id: u64,
    pub(super) op: SendOp,
    pub(super) sges: Vec<ResolvedSge>,
    /// `IBV_SEND_INLINE`: the data, copied at post time.
    pub(super) inline: Option<Vec<u8>>,
    pub(super) signaled: bool,
    pub(super) solicited: bool,
    pub(super) fence: bool,
    /// UD: peer endpoint, remote QPN, Q_Key.
    pub(super) ud: Option<(SocketAddr, u32, u32)>,
    pub(super) len: u64,
    /// First PSN and number of PSNs, assigned at first transmission.
    pub(super) psn: Option<(u32, u32)>,
    /// Next packet to (re)transmit in this pass (READ/atomic: 0 = request not sent).
    pub(super) next_pkt: u32,
    /// READ: responses received in order.
    pub(super) read_done: u32,
    /// READ: responses received past the first missing one.
    pub(super) read_gaps: ReadGaps,
    /// Finished (READ/atomic), waiting to complete in order.
    pub(super) result: Option<WcStatus>,
    /// XRC: the remote XRC SRQ its requests name.
    pub(super) xrc_srqn: Option<u32>,
}

impl SendWqe {
    /// `xrc_srqn`: the remote SRQ an XRC initiator's WR names (required
    /// there, refused elsewhere).
    pub(super) fn new(
        ctx: &Context<'_>,
        sh: &QpShared,
        wr: &SendWr<'_>,
        xrc_srqn: Option<u32>,
    ) -> Result<SendWqe, Errno> {
        if (sh.qp_type == QpType::XrcSend) != xrc_srqn.is_some() {
            return Err(Errno::EINVAL);
        }
        let local = is_local(wr.op);
        // A bind or invalidation moves no data: its gather list is ignored.
        let sges = sge::resolve(ctx.mrs, if local { &[] } else { wr.sg_list });
        let len = sge::total_len(&sges);
        if len > MAX_MSG {
            return Err(Errno::EINVAL);
        }
        let rd_atomic = is_rd_atomic(&wr.op);
        let legal = match sh.qp_type {
            // UD has no path MTU of its own: a datagram must fit the port's.
            QpType::Ud => {
                matches!(wr.op, SendOp::Send | SendOp::SendImm(_))
                    && wr.ud.is_some()
                    && len <= ctx.port_mtu.bytes() as u64
            }
            QpType::Uc => !rd_atomic && !matches!(wr.op, SendOp::SendInv(_)),
            QpType::Rc => true,
            // FLUSH and ATOMIC WRITE are RC only: XRC has no opcodes for them.
            QpType::XrcSend => !matches!(wr.op, SendOp::AtomicWrite { .. } | SendOp::Flush { .. }),
            QpType::XrcRecv => false,
        } && !(local && sh.qp_type == QpType::Ud);
        if !legal {
            return Err(Errno::EINVAL);
        }
        if matches!(wr.op, SendOp::CompareSwap { .. } | SendOp::FetchAdd { .. }) && len != 8 {
            return Err(Errno::EINVAL);
        }
        if !placement_ok(&wr.op, len) {
            return Err(Errno::EINVAL);
        }
        let inline = if wr.flags.inline && !rd_atomic && !local {
            if len > u64::from(sh.cap.max_inline_data) {
                return Err(Errno::EINVAL);
            }
            let mut data = vec![0u8; len as usize];
            crate::sys::copy_inline(wr.sg_list, &mut data).map_err(|_| Errno::EFAULT)?;
            Some(data)
        } else {
            None
        };
        let ud = wr
            .ud
            .as_ref()
            // A QPN is 24 bits: the rest is ignored, as rxe masks it.
            .map(|u| (peer_of(u.ah.dgid), u.remote_qpn & psn::MASK, u.remote_qkey));
        Ok(SendWqe {
            wr_id: wr.wr_id,
            op: wr.op,
            sges,
            inline,
            signaled: wr.flags.signaled,
            solicited: wr.flags.solicited,
            fence: wr.flags.fence,
            ud,
            len,
            psn: None,
            next_pkt: 0,
            read_done: 0,
            read_gaps: ReadGaps::default(),
            result: None,
            xrc_srqn: xrc_srqn.map(|n| n & psn::MASK),
        })
    }

    /// At first transmission: fault the local ODP memory of the whole
    /// message in at once — the gather list of a SEND/WRITE for reading, a
    /// READ's scatter list for writing — instead of a page per packet.
    /// Best effort: the access that needs a missing page reports it.
    fn fault_in(&self) {
        let write = match self.op {
            SendOp::Read { .. } => true,
            SendOp::CompareSwap { .. } | SendOp::FetchAdd { .. } => return,
            SendOp::AtomicWrite { .. } | SendOp::Flush { .. } => return,
            _ if self.inline.is_some() => return,
            _ => false,
        };
        for s in &self.sges {
            if let Some(mr) = &s.mr {
                mr.fault_in(s.sge.addr, u64::from(s.sge.length), write);
            }
        }
    }

    pub(super) fn is_rd_atomic(&self) -> bool {
        is_rd_atomic(&self.op)
    }

    pub(super) fn last_psn(&self) -> Option<u32> {
        self.psn.map(|(f, n)| psn::add(f, n - 1))
    }

    /// Whether `p` is one of this WQE's PSNs.
    pub(super) fn holds(&self, p: u32) -> bool {
        self.psn.is_some_and(|(f, n)| {
            let d = psn::diff(p, f);
            d >= 0 && (d as u32) < n
        })
    }

    fn npsn(&self, mtu: u64) -> u32 {
        match self.op {
            SendOp::CompareSwap { .. } | SendOp::FetchAdd { .. } => 1,
            SendOp::AtomicWrite { .. } | SendOp::Flush { .. } => 1,
            _ => self.len.div_ceil(mtu).max(1) as u32,
        }
    }

    /// The message's bytes `[from, to)`, opened for the packets that carry them.
    fn payload(&self, pd: u32, from: u64, to: u64) -> Payload<'_> {
        match &self.inline {
            Some(d) => Payload::Inline(d),
            None => Payload::open(&self.sges, pd, from, to),
        }
    }
}

/// READs, atomics, ATOMIC WRITE and FLUSH: single requests answered by a
/// response of their own (READ data, atomic ACK, an empty READ response),
/// counted against `max_rd_atomic` because the responder keeps a record of
/// each for duplicates (rxe's `check_init_depth` counts ATOMIC WRITE too;
/// a FLUSH takes a responder resource as well, so it counts here).
fn is_rd_atomic(op: &SendOp) -> bool {
    matches!(
        op,
        SendOp::Read { .. }
            | SendOp::CompareSwap { .. }
            | SendOp::FetchAdd { .. }
            | SendOp::AtomicWrite { .. }
            | SendOp::Flush { .. }
    )
}

/// ATOMIC WRITE and FLUSH carry no scatter/gather list (the 8 bytes are in
/// the WR); a FLUSH names a known placement type and at most `MAX_MSG`
/// bytes, as a responder checks the RETH length.
fn placement_ok(op: &SendOp, sge_len: u64) -> bool {
    match op {
        SendOp::AtomicWrite { .. } => sge_len == 0,
        SendOp::Flush { len, placement, .. } => {
            sge_len == 0 && placement.is_valid() && u64::from(*len) <= MAX_MSG
        }
        _ => true,
    }
}

/// Requester state, under the QP lock.
#[derive(Default)]
pub(super) struct ReqState {
    pub(super) sq: VecDeque<SendWqe>,
    pub(super) next_psn: u32,
    /// Highest PSN acknowledged (everything up to it is done on the peer).
    pub(super) acked_psn: Option<u32>,
    /// Index in `sq` of the first WQE with packets still to (re)transmit.
    pub(super) send_idx: usize,
    pub(super) retries_left: u8,
    pub(super) rnr_left: u8,
    pub(super) timer_generation: u64,
    pub(super) timer_armed: bool,
    pub(super) progress_at: Option<Instant>,
    pub(super) rnr_waiting: bool,
    /// Stopped with nothing in flight by the device's budget: in its line
    /// (`resources::flight`), the timer armed to look again.
    budget_waiting: bool,
    /// When the timer's deadline is (while armed).
    timer_at: Option<Instant>,
    /// Start of the current wait for acknowledgements (None: idle).
    wait_from: Option<Instant>,
    /// The last loss probe, and how many since the last progress.
    probe_at: Option<Instant>,
    probes: u8,
    /// A sequence NAK or probe resent one packet; the answer decides the rest.
    recovery: Option<Recovery>,
    /// The peer was seen to hold requests past a gap (`super::reorder`).
    peer_holds: bool,
    /// The highest PSN ever transmitted (later ones are fresh: timed).
    sent_high: Option<u32>,
    rtt: Rtt,
    /// The QP is on its device's list of held doorbells (`device::doorbell`).
    pub(super) doorbell_held: bool,
    /// What the QP has charged to its device's budget of bytes in flight
    /// (`resources::flight`), settled at each unlock ([`charge`]).
    pub(super) charged: u64,
}

impl ReqState {
    /// Whether packets of the send queue are in flight: WQEs fully
    /// transmitted (`send_idx` of them), or one partly transmitted at
    /// `send_idx` (stopped by the window, or sent again after a go-back).
    pub(super) fn in_flight(&self) -> bool {
        self.send_idx > 0 || self.sq.get(self.send_idx).is_some_and(|w| w.psn.is_some())
    }

    /// How many WQEs from the front have had packets transmitted.
    fn transmitted(&self) -> usize {
        self.send_idx + usize::from(self.sq.get(self.send_idx).is_some_and(|w| w.psn.is_some()))
    }

    /// The WQEs queued and not yet transmitted at all.
    pub(super) fn untransmitted(&self) -> std::collections::vec_deque::Iter<'_, SendWqe> {
        self.sq.range(self.transmitted()..)
    }

    pub(super) fn reset_progress(&mut self) {
        self.send_idx = 0;
        self.timer_armed = false;
        self.timer_at = None;
        self.wait_from = None;
        self.rnr_waiting = false;
        self.budget_waiting = false;
        self.recovery = None;
        self.probes = 0;
        self.rtt.discard();
    }
}

/// The first PSN not transmitted yet: where the send queue stands, or past
/// the highest PSN sent when a recovery went back before it.
fn sent_edge(q: &Inner) -> u32 {
    let mut edge = q.req.next_psn;
    if let Some((first, _)) = q.req.sq.get(q.req.send_idx).and_then(|w| w.psn) {
        edge = psn::add(first, q.req.sq[q.req.send_idx].next_pkt);
    }
    match q.req.sent_high {
        Some(h) if psn::diff(psn::add(h, 1), edge) > 0 => psn::add(h, 1),
        _ => edge,
    }
}

/// What the QP has in flight, for its device's budget: its PSNs sent and
/// not acknowledged (a READ's responses included), at the path MTU.
pub(super) fn charge(q: &Inner) -> u64 {
    if !q.req.in_flight() {
        return 0;
    }
    let psns = psn::diff(sent_edge(q), first_unacked(q)).clamp(0, HELD_PSNS as i32);
    psns as u64 * q.path_mtu.bytes() as u64
}

/// The first PSN the device's budget of bytes in flight does not allow
/// yet, given the `room` the other QPs leave: packets sent before (resent
/// after a loss) are charged already; new ones only within the room. A QP
/// stopped with packets in flight goes on when their ACK comes (the last
/// packet the limit allows asks for it); one with none waits in line
/// ([`wait_for_room`]).
fn budget_limit(q: &Inner, room: u64) -> u32 {
    let packets = room / q.path_mtu.bytes() as u64;
    psn::add(sent_edge(q), packets.min(u64::from(HELD_PSNS)) as u32)
}

/// Stopped by the budget with nothing in flight: wait in the device's line
/// for an ACK of another QP to free room (the line's one timer looks
/// again every [`flight::RETRY`] meanwhile). Queued once: until woken the
/// QP sends nothing ([`progress`] returns at once), so its posts do not
/// queue it again. The timer generation is bumped so that a stale
/// retransmission deadline does not pass for the wake-up.
/// Locks: under the QP lock; takes the line's, then the timers'.
fn wait_for_room(ctx: &Context<'_>, sh: &QpShared, q: &mut Inner) {
    q.req.budget_waiting = true;
    q.req.wait_from = None; // nothing in flight, nothing waited for
    q.req.timer_generation += 1;
    q.req.timer_armed = false;
    q.req.timer_at = None;
    if sh.flight.wait(sh.qpn, q.req.timer_generation) {
        ctx.timers
            .arm(Instant::now() + flight::RETRY, flight::LINE_TIMER, 0);
    }
}

/// An ACK freed room: the QP's charge settles now (not at its unlock) and
/// the first QPs in line are woken, for the receive path to run once it
/// has let go of this QP (`device::timer::run_woken`).
/// Locks: under the QP lock; takes the line's.
fn wake_waiters(sh: &QpShared, q: &mut Inner) {
    let now_charged = charge(q);
    sh.flight.settle(&mut q.req.charged, now_charged);
    sh.flight.wake_later(q.path_mtu.bytes() as u64);
}

/// The first PSN the window does not allow yet.
fn window_limit(q: &Inner) -> u32 {
    let base = if q.req.sq.front().is_some_and(|w| w.psn.is_some()) {
        first_unacked(q)
    } else {
        q.req.next_psn
    };
    // Recovering from a NAK against a peer that holds what follows a gap:
    // the window stays open past the packet resent (`super::loss`).
    let room = match q.req.recovery {
        Some(r) if q.req.peer_holds && !r.probe => HELD_PSNS,
        _ => MAX_UNACKED,
    };
    psn::add(base, room)
}

/// Transmit whatever the send queue allows now.
pub(super) fn progress(ctx: &Context<'_>, sh: &QpShared, q: &mut Inner, tx: &mut TxQueue) {
    if !matches!(q.state, QpState::Rts) || q.req.rnr_waiting || q.req.budget_waiting {
        return; // a QP in the budget's line goes on when woken
    }
    let mtu = q.path_mtu.bytes() as u64;
    // The tighter of the QP's window and the device's budget.
    let mut stopped = false; // by the limit, with more to send
    let (limit, by_budget) = if sh.qp_type.is_reliable() {
        let (w, b) = (window_limit(q), budget_limit(q, sh.flight.room()));
        let by_budget = psn::diff(b, w) < 0;
        (Some(if by_budget { b } else { w }), by_budget)
    } else {
        (None, false)
    };
    while q.req.send_idx < q.req.sq.len() {
        let idx = q.req.send_idx;
        if must_wait(q, idx) {
            break;
        }
        if is_local(q.req.sq[idx].op) {
            // A bind or invalidation takes effect once everything posted
            // before it has completed: a window never changes under an
            // earlier request, and its completion keeps posting order.
            if idx != 0 {
                break;
            }
            if let Err(status) = local_op(ctx, sh, &q.req.sq[0]) {
                fail_wqe(ctx, sh, q, 0, status);
                return;
            }
            let w = q.req.sq.pop_front().expect("idx 0");
            sh.complete_send(ctx, &w, WcStatus::Success);
            continue;
        }
        {
            // Finished, or already requested in this pass (after a go-back-N
            // only the unfinished ones are reset): nothing to send. Resending a
            // finished READ would ask for PSNs past its range.
            let w = &q.req.sq[idx];
            if w.is_rd_atomic() && (w.result.is_some() || w.next_pkt > 0) {
                q.req.send_idx += 1;
                continue;
            }
        }
        if q.req.sq[idx].psn.is_none() {
            if limit.is_some_and(|l| psn::diff(q.req.next_psn, l) >= 0) {
                stopped = true;
                break; // the window is full
            }
            let n = q.req.sq[idx].npsn(mtu);
            q.req.sq[idx].psn = Some((q.req.next_psn, n));
            q.req.next_psn = psn::add(q.req.next_psn, n);
            q.req.sq[idx].fault_in();
        }
        if let Err(status) = emit(ctx, sh, q, idx, mtu, limit, tx) {
            fail_wqe(ctx, sh, q, idx, status);
            return;
        }
        let w = &q.req.sq[idx];
        if w.next_pkt < w.psn.map_or(0, |(_, n)| n) && !w.is_rd_atomic() {
            stopped = true;
            break; // stopped by the window: resumed when ACKs open it
        }
        q.req.send_idx += 1;
        if !sh.qp_type.is_reliable() {
            // UC and UD complete once sent, in order.
            let w = q.req.sq.pop_front().expect("sent one");
            q.req.send_idx -= 1;
            sh.complete_send(ctx, &w, WcStatus::Success);
        }
    }
    if sh.qp_type.is_reliable() {
        let stopped_by_budget = stopped && by_budget;
        if stopped_by_budget {
            bump(&ctx.stats.flight_limited);
        }
        if stopped_by_budget && charge(q) == 0 {
            wait_for_room(ctx, sh, q);
        } else if q.req.in_flight() {
            arm(ctx, sh, q);
        } else {
            q.req.recovery = None;
        }
    }
}

/// Whether `op` is a local operation (no packets: a memory window's bind
/// or invalidation).
fn is_local(op: SendOp) -> bool {
    matches!(op, SendOp::BindMw(_) | SendOp::LocalInv(_))
}

/// Execute a local operation (rxe's `rxe_do_local_ops`): a failed bind
/// completes with `MwBindErr`, a failed invalidation with `LocQpOpErr`.
fn local_op(ctx: &Context<'_>, sh: &QpShared, w: &SendWqe) -> Result<(), WcStatus> {
    match w.op {
        SendOp::BindMw(b) => ctx
            .mrs
            .bind_mw(sh.pd, sh.qpn, &b)
            .map(drop)
            .map_err(|_| WcStatus::MwBindErr),
        SendOp::LocalInv(rkey) => ctx
            .mrs
            .invalidate_mw(sh.pd, rkey)
            .map_err(|_| WcStatus::LocQpOpErr),
        _ => unreachable!("not a local operation"),
    }
}

/// Whether WQE `idx` waits for earlier ones: a READ/atomic beyond
/// `max_rd_atomic`, or a fenced WR behind unfinished READs/atomics.
fn must_wait(q: &Inner, idx: usize) -> bool {
    let outstanding = outstanding_rd_atomic(q, idx);
    let w = &q.req.sq[idx];
    (w.is_rd_atomic() && outstanding >= usize::from(q.max_rd_atomic))
        || (w.fence && outstanding > 0)
}

/// WQE `idx` could not be sent (a local error): it completes with
/// `status`. RC goes to the error state; UC/UD only stop the send queue
/// (SQE): receives go on, and SQE -> RTS resumes sending.
fn fail_wqe(ctx: &Context<'_>, sh: &QpShared, q: &mut Inner, idx: usize, status: WcStatus) {
    let w = sh.take_failed(ctx, q, idx);
    sh.complete_send(ctx, &w, status);
    if sh.qp_type.is_reliable() {
        sh.fail(ctx, q);
    } else {
        sh.to_send_queue_error(ctx, q);
    }
}

/// READ/atomic requests before `idx` the responder may still have to answer
/// again: from the oldest one without its response, every later one counts —
/// those answered since too, because the responder keeps only
/// `max_dest_rd_atomic` records and must still hold the oldest's when it is
/// asked again. (Counting only the unanswered ones let a lost atomic ACK be
/// followed by more than `max_rd_atomic` newer atomics; its record was then
/// gone, the re-sent request got no answer, and the QP ended in
/// retry-exceeded.)
fn outstanding_rd_atomic(q: &Inner, idx: usize) -> usize {
    let sent = q.req.sq.iter().take(idx);
    match sent
        .clone()
        .position(|w| w.is_rd_atomic() && w.result.is_none())
    {
        Some(k) => sent.skip(k).filter(|w| w.is_rd_atomic()).count(),
        None => 0,
    }
}

/// Emit the remaining packets of WQE `idx`, none at or past PSN `limit`.
fn emit(
    ctx: &Context<'_>,
    sh: &QpShared,
    q: &mut Inner,
    idx: usize,
    mtu: u64,
    limit: Option<u32>,
    tx: &mut TxQueue,
) -> Result<(), WcStatus> {
    let w = &q.req.sq[idx];
    let op_code = |op: Op| Opcode::new(sh.transport(), op).expect("op legal for this transport");
    let sent = match (sh.qp_type, w.op) {
        (QpType::Ud, _) => emit_ud(ctx, sh, w, op_code, tx)?,
        (_, SendOp::Read { remote_addr, rkey }) => {
            let peer = q.peer.ok_or(WcStatus::GeneralErr)?;
            let (first, n) = w.psn.expect("assigned");
            let ks = w.read_done..n;
            let fresh = w.read_done == 0 && !w.read_gaps.asked_again();
            emit_read_request(ctx, q, w, peer, (remote_addr, rkey), ks, mtu, op_code, tx)?;
            if fresh {
                // Timed like fresh packets: a READ-only stream gets a round
                // trip for its loss probes (acknowledged by the responses
                // to the next request).
                timed(q, psn::add(first, n - 1));
            }
            1
        }
        (_, SendOp::CompareSwap { .. } | SendOp::FetchAdd { .. }) => {
            let peer = q.peer.ok_or(WcStatus::GeneralErr)?;
            emit_atomic(ctx, q, w, peer, op_code, tx)?
        }
        (_, SendOp::AtomicWrite { .. } | SendOp::Flush { .. }) => {
            let peer = q.peer.ok_or(WcStatus::GeneralErr)?;
            emit_placement(ctx, q, w, peer, op_code, tx)?
        }
        _ => {
            let peer = q.peer.ok_or(WcStatus::GeneralErr)?;
            let sent = emit_segments(ctx, sh, q, w, peer, mtu, w.next_pkt, limit, op_code, tx)?;
            if sh.qp_type.is_reliable() && sent > 0 {
                let (first, _) = w.psn.expect("assigned");
                timed(q, psn::add(first, sent - 1));
            }
            sent
        }
    };
    q.req.sq[idx].next_pkt = sent;
    Ok(())
}

/// Packets up to `last` were sent: time them if they are fresh (a
/// retransmission never is, nor what waits behind one in a recovery).
fn timed(q: &mut Inner, last: u32) {
    if q.req.sent_high.is_none_or(|h| psn::diff(last, h) > 0) {
        q.req.sent_high = Some(last);
        if q.req.recovery.is_none() {
            q.req.rtt.sent(last, Instant::now());
        }
    }
}

/// UD: one datagram with a DETH (remote QPN and Q_Key from the WR).
/// Returns the next packet to send (all sent).
fn emit_ud(
    ctx: &Context<'_>,
    sh: &QpShared,
    w: &SendWqe,
    op_code: impl Fn(Op) -> Opcode,
    tx: &mut TxQueue,
) -> Result<u32, WcStatus> {
    let (peer, rqpn, qkey) = w.ud.expect("checked at post");
    let deth = Deth {
        qkey,
        src_qp: sh.qpn,
    };
    let (o, ext) = match w.op {
        SendOp::SendImm(imm) => (Op::SendOnlyImm, Ext::DethImm(deth, imm)),
        _ => (Op::SendOnly, Ext::Deth(deth)),
    };
    let (first, n) = w.psn.expect("assigned");
    let repr = PacketRepr {
        bth: bth(op_code(o), rqpn, first, false, w.solicited),
        ext,
        payload_len: w.len as usize,
    };
    // Sized before the payload's window opens (nothing allocates under it).
    tx.reserve(ctx, 1, w.len as usize);
    let mut payload = w.payload(sh.pd, 0, w.len);
    tx.push(ctx, peer, &repr, |buf| payload.fill(0, buf))?;
    Ok(n)
}

/// A READ request for responses `ks` of READ `w` (those not arrived yet
/// after a go-back-N; a run found missing, `super::loss`): the PSN of the
/// first, the VA and length adjusted. Returns 1: the request is out.
#[allow(clippy::too_many_arguments)]
fn emit_read_request(
    ctx: &Context<'_>,
    q: &Inner,
    w: &SendWqe,
    peer: SocketAddr,
    (remote_addr, rkey): (u64, u32),
    ks: std::ops::Range<u32>,
    mtu: u64,
    op_code: impl Fn(Op) -> Opcode,
    tx: &mut TxQueue,
) -> Result<u32, WcStatus> {
    let (first, _) = w.psn.expect("assigned");
    let off = (u64::from(ks.start) * mtu).min(w.len);
    let end = (u64::from(ks.end) * mtu).min(w.len);
    let reth = Reth {
        va: remote_addr.wrapping_add(off),
        rkey,
        len: (end - off.min(end)) as u32,
    };
    let psn = psn::add(first, ks.start);
    let repr = PacketRepr {
        bth: bth(op_code(Op::ReadRequest), q.dest_qpn, psn, true, false),
        ext: Ext::Reth(reth),
        payload_len: 0,
    };
    tx.push(ctx, peer, &xrc::with_srqn(repr, w.xrc_srqn), |_| {
        Ok::<(), WcStatus>(())
    })?;
    Ok(1)
}

/// A compare-and-swap or fetch-and-add request. Returns 1: it is out.
fn emit_atomic(
    ctx: &Context<'_>,
    q: &Inner,
    w: &SendWqe,
    peer: SocketAddr,
    op_code: impl Fn(Op) -> Opcode,
    tx: &mut TxQueue,
) -> Result<u32, WcStatus> {
    let (o, eth) = match w.op {
        SendOp::CompareSwap {
            remote_addr,
            rkey,
            compare,
            swap,
        } => (
            Op::CompareSwap,
            AtomicEth {
                va: remote_addr,
                rkey,
                swap_add: swap,
                compare,
            },
        ),
        SendOp::FetchAdd {
            remote_addr,
            rkey,
            add,
        } => (
            Op::FetchAdd,
            AtomicEth {
                va: remote_addr,
                rkey,
                swap_add: add,
                compare: 0,
            },
        ),
        _ => unreachable!("only atomics come here"),
    };
    let (first, _) = w.psn.expect("assigned");
    let repr = PacketRepr {
        bth: bth(op_code(o), q.dest_qpn, first, true, false),
        ext: Ext::Atomic(eth),
        payload_len: 0,
    };
    tx.push(ctx, peer, &xrc::with_srqn(repr, w.xrc_srqn), |_| {
        Ok::<(), WcStatus>(())
    })?;
    Ok(1)
}

/// An ATOMIC WRITE (RETH for 8 bytes, the 8 bytes as payload) or a FLUSH
/// (FETH + RETH, no payload). Returns 1: it is out.
fn emit_placement(
    ctx: &Context<'_>,
    q: &Inner,
    w: &SendWqe,
    peer: SocketAddr,
    op_code: impl Fn(Op) -> Opcode,
    tx: &mut TxQueue,
) -> Result<u32, WcStatus> {
    let (first, _) = w.psn.expect("assigned");
    let (o, ext, data) = match w.op {
        SendOp::AtomicWrite {
            remote_addr,
            rkey,
            data,
        } => (
            Op::AtomicWrite,
            Ext::Reth(Reth {
                va: remote_addr,
                rkey,
                len: 8,
            }),
            Some(data),
        ),
        SendOp::Flush {
            remote_addr,
            rkey,
            len,
            placement,
            level,
        } => (
            Op::Flush,
            Ext::FethReth(
                Feth {
                    placement: placement.0,
                    level: level as u8,
                },
                Reth {
                    va: remote_addr,
                    rkey,
                    len,
                },
            ),
            None,
        ),
        _ => unreachable!("only ATOMIC WRITE and FLUSH come here"),
    };
    let repr = PacketRepr {
        bth: bth(op_code(o), q.dest_qpn, first, true, false),
        ext,
        payload_len: data.map_or(0, |d| d.len()),
    };
    tx.push(ctx, peer, &repr, |buf| {
        if let Some(d) = data {
            buf.copy_from_slice(&d);
        }
        Ok::<(), WcStatus>(())
    })?;
    Ok(1)
}

/// SEND/WRITE (RC, UC): the message's packets of one path MTU each from
/// packet `from` on, as many as the window allows (none at or past PSN
/// `limit`), their payload read through one window onto the memory.
/// Returns the first packet not sent.
#[allow(clippy::too_many_arguments)]
fn emit_segments(
    ctx: &Context<'_>,
    sh: &QpShared,
    q: &Inner,
    w: &SendWqe,
    peer: SocketAddr,
    mtu: u64,
    from: u32,
    limit: Option<u32>,
    op_code: impl Fn(Op) -> Opcode,
    tx: &mut TxQueue,
) -> Result<u32, WcStatus> {
    let (first, n) = w.psn.expect("assigned");
    // The packets this pass may send, and their payload opened once.
    let stop = limit.map_or(n, |l| {
        let room = psn::diff(l, psn::add(first, from)).max(0) as u32;
        from.saturating_add(room).min(n)
    });
    let start = u64::from(from) * mtu;
    // Sized before the payload's window opens (nothing allocates under it).
    tx.reserve(ctx, stop.saturating_sub(from) as usize, mtu as usize);
    let mut payload = w.payload(sh.pd, start, (u64::from(stop) * mtu).min(w.len).max(start));
    // One copy: an RC WRITE's payload to a device of this host stays here,
    // and the peer reads it from our memory (`transport::same_host`, "One
    // copy"); anything else carries it (a peer that could not read one
    // asks for that, and the resend then does).
    let by_ref = sh.qp_type == QpType::Rc
        && w.len >= BY_REF_MIN
        && w.xrc_srqn.is_none()
        && matches!(w.op, SendOp::Write { .. } | SendOp::WriteImm { .. })
        && payload.va(0).is_some()
        && ctx.link.by_ref(peer);
    for k in from..n {
        if limit.is_some_and(|l| psn::diff(psn::add(first, k), l) >= 0) {
            return Ok(k);
        }
        // The last packet the window allows asks for an ACK, which opens it
        // again; so do every 64th and the last of the message.
        let edge = limit.is_some_and(|l| psn::add(first, k + 1) == l);
        let last = k == n - 1;
        let ack_req = sh.qp_type.is_reliable() && (last || k % 64 == 63 || edge);
        let (o, ext) = segment_header(w, k, n);
        let off = u64::from(k) * mtu;
        let repr = PacketRepr {
            bth: bth(
                op_code(o),
                q.dest_qpn,
                psn::add(first, k),
                ack_req,
                last && w.solicited,
            ),
            ext,
            payload_len: (w.len - off).min(mtu) as usize,
        };
        let repr = xrc::with_srqn(repr, w.xrc_srqn);
        match payload.va(off).filter(|_| by_ref) {
            Some(va) => tx.push_by_ref(peer, &repr, va),
            None => tx.push(ctx, peer, &repr, |buf| payload.fill(off, buf))?,
        }
    }
    Ok(n)
}

/// The smallest WRITE whose payload goes by reference: below it a read
/// from another process (a system call and a page walk, ~10 µs measured in
/// a ping-pong) costs more than carrying the bytes; from it the receiver
/// reads four or more packets in one call.
const BY_REF_MIN: u64 = 16 << 10;

/// Opcode and extension header of packet `k` of `n` of a SEND or WRITE:
/// first/middle/last/only, the RETH on a WRITE's first packet, immediate
/// data or the key to invalidate on the last.
fn segment_header(w: &SendWqe, k: u32, n: u32) -> (Op, Ext) {
    let (only, first, last) = (n == 1, k == 0, k == n - 1);
    let pick = |o: Op, f: Op, m: Op, l: Op| {
        if only {
            o
        } else if first {
            f
        } else if last {
            l
        } else {
            m
        }
    };
    let reth = |remote_addr: u64, rkey: u32| Reth {
        va: remote_addr,
        rkey,
        len: w.len as u32,
    };
    match w.op {
        SendOp::Send => (
            pick(Op::SendOnly, Op::SendFirst, Op::SendMiddle, Op::SendLast),
            Ext::None,
        ),
        SendOp::SendImm(imm) => (
            pick(
                Op::SendOnlyImm,
                Op::SendFirst,
                Op::SendMiddle,
                Op::SendLastImm,
            ),
            if last { Ext::Imm(imm) } else { Ext::None },
        ),
        SendOp::SendInv(rk) => (
            pick(
                Op::SendOnlyInv,
                Op::SendFirst,
                Op::SendMiddle,
                Op::SendLastInv,
            ),
            if last { Ext::Inv(rk) } else { Ext::None },
        ),
        SendOp::Write { remote_addr, rkey } => (
            pick(
                Op::WriteOnly,
                Op::WriteFirst,
                Op::WriteMiddle,
                Op::WriteLast,
            ),
            if first {
                Ext::Reth(reth(remote_addr, rkey))
            } else {
                Ext::None
            },
        ),
        SendOp::WriteImm {
            remote_addr,
            rkey,
            imm,
        } => {
            let o = pick(
                Op::WriteOnlyImm,
                Op::WriteFirst,
                Op::WriteMiddle,
                Op::WriteLastImm,
            );
            let ext = match (only, first, last) {
                (true, _, _) => Ext::RethImm(reth(remote_addr, rkey), imm),
                (_, true, _) => Ext::Reth(reth(remote_addr, rkey)),
                (_, _, true) => Ext::Imm(imm),
                _ => Ext::None,
            };
            (o, ext)
        }
        _ => unreachable!("READ and atomics are single requests, local operations none"),
    }
}

/// The shortest local ACK timeout. Codes below 8 (4.096 µs × 2^7 ≈ 0.5 ms)
/// ask for less than a software peer's wake-up and scheduling delay: the
/// `ibverbs` crate's default, 4 (65 µs), exhausted its retries before the
/// peer's first ACK. rxe likewise never waits less than one timer tick.
const MIN_RTO: Duration = Duration::from_millis(1);

/// Consecutive timeouts without progress double the wait, up to this many
/// times: a requester whose own receive thread is starved of the CPU (a
/// loaded machine) would otherwise spend its `retry_cnt` retries within
/// 8 × the timeout while the ACKs sit in its receive queue. Every wait is
/// still at least the QP's timeout, the minimum the IBA asks for.
const MAX_BACKOFF: u8 = 5;

/// The local ACK timeout: 4.096 µs × 2^timeout, at least `MIN_RTO` (0: none),
/// doubled for each timeout since the last progress.
fn rto(q: &Inner) -> Option<Duration> {
    let timeouts = q.retry_cnt.saturating_sub(q.req.retries_left);
    (q.timeout != 0).then(|| backed_off(rto_of(q.timeout), timeouts))
}

fn backed_off(base: Duration, timeouts: u8) -> Duration {
    base * (1u32 << timeouts.min(MAX_BACKOFF))
}

fn rto_of(code: u8) -> Duration {
    Duration::from_nanos(4096u64 << code.min(31)).max(MIN_RTO)
}

/// RNR NAK timer codes (IBA table 45), in microseconds.
fn rnr_delay(code: u8) -> Duration {
    const US: [u32; 32] = [
        655_360, 10, 20, 30, 40, 60, 80, 120, 160, 240, 320, 480, 640, 960, 1280, 1920, 2560, 3840,
        5120, 7680, 10240, 15360, 20480, 30720, 40960, 61440, 81920, 122_880, 163_840, 245_760,
        327_680, 491_520,
    ];
    Duration::from_micros(u64::from(US[usize::from(code & 0x1f)]))
}

/// Arm the timer for the earlier of the probe's and the timeout's
/// deadlines (lazily: only if it is not armed for that time or earlier;
/// see the module comment).
fn arm(ctx: &Context<'_>, sh: &QpShared, q: &mut Inner) {
    if q.req.rnr_waiting {
        return; // the RNR wait holds the timer
    }
    let Some(d) = rto(q) else { return };
    let now = Instant::now();
    q.req.wait_from.get_or_insert(now);
    let at = timeout_at(q, d).min(probe_at(q, d)).max(now);
    if q.req.timer_armed && q.req.timer_at.is_some_and(|t| t <= at) {
        return;
    }
    q.req.timer_armed = true;
    q.req.timer_at = Some(at);
    q.req.timer_generation += 1;
    ctx.timers.arm(at, sh.qpn, q.req.timer_generation);
}

/// The last sign of life: the start of the wait or the last progress.
fn waited_since(q: &Inner) -> Instant {
    let from = q.req.wait_from.unwrap_or_else(Instant::now);
    q.req.progress_at.map_or(from, |p| p.max(from))
}

/// When the local ACK timeout (`d`) expires.
fn timeout_at(q: &Inner, d: Duration) -> Instant {
    waited_since(q) + d
}

/// Probes sent since the last progress.
fn probes(q: &Inner) -> u8 {
    match (q.req.probe_at, q.req.progress_at) {
        (Some(p), Some(g)) if p <= g => 0,
        (Some(_), _) => q.req.probes,
        (None, _) => 0,
    }
}

/// When the next loss probe is due (the timeout `d` bounds its wait).
fn probe_at(q: &Inner, d: Duration) -> Instant {
    let since = waited_since(q);
    let since = q.req.probe_at.map_or(since, |p| p.max(since));
    since + q.req.rtt.pto(d, probes(q))
}

/// Act on what the completer made of a response.
pub(super) fn after_response(
    ctx: &Context<'_>,
    sh: &QpShared,
    q: &mut Inner,
    next: Next,
    tx: &mut TxQueue,
) {
    if let Some(a) = q.req.acked_psn {
        q.req.rtt.acked(a, Instant::now());
    }
    match next {
        Next::Nothing => {}
        Next::Progress => {
            if let (Some(r), Some(a)) = (q.req.recovery, q.req.acked_psn) {
                let verdict = r.verdict(psn::add(a, 1), false);
                q.req.peer_holds = r.holding(&verdict).unwrap_or(q.req.peer_holds);
                match verdict {
                    Verdict::Wait => {}
                    Verdict::Done => q.req.recovery = None,
                    Verdict::GoBack(e) | Verdict::ResendOne(e) => {
                        bump(&ctx.stats.retransmits);
                        go_back(q, e);
                    }
                }
            }
            progress(ctx, sh, q, tx);
        }
        Next::Resend(p) => {
            let verdict = match q.req.recovery {
                Some(r) => {
                    let v = r.verdict(p, true);
                    q.req.peer_holds = r.holding(&v).unwrap_or(q.req.peer_holds);
                    v
                }
                None => Verdict::ResendOne(p),
            };
            match verdict {
                Verdict::Wait | Verdict::Done => {}
                Verdict::GoBack(e) => {
                    bump(&ctx.stats.retransmits);
                    go_back(q, e);
                }
                Verdict::ResendOne(e) => {
                    if !resend_one(ctx, sh, q, e, false, tx) {
                        bump(&ctx.stats.retransmits);
                        go_back(q, e);
                    }
                }
            }
            progress(ctx, sh, q, tx);
        }
        Next::RetryNow(p) => {
            bump(&ctx.stats.retransmits);
            go_back(q, p);
            q.req.progress_at = Some(Instant::now());
            progress(ctx, sh, q, tx);
        }
        Next::Reread { from, to } => {
            reread(ctx, sh, q, from, to, false, tx);
            progress(ctx, sh, q, tx);
        }
        Next::RnrWait { psn, timer } => on_rnr_nak(ctx, sh, q, psn, timer),
    }
    wake_waiters(sh, q);
}

/// READ responses `[from, to)` (PSNs) are lost: ask for just those again
/// (`super::loss`). A loss of this request or of its answers is left to
/// the loss probe, which asks from the first missing response to the end
/// (`restart`: the answer is a new stream, whose own holes are asked for
/// again as they show).
fn reread(
    ctx: &Context<'_>,
    sh: &QpShared,
    q: &mut Inner,
    from: u32,
    to: u32,
    restart: bool,
    tx: &mut TxQueue,
) {
    let Some(i) =
        q.req.sq.iter().take(q.req.transmitted()).position(|w| {
            matches!(w.op, SendOp::Read { .. }) && w.result.is_none() && w.holds(from)
        })
    else {
        return;
    };
    let w = &q.req.sq[i];
    let (SendOp::Read { remote_addr, rkey }, Some(peer), Some((first, n))) = (w.op, q.peer, w.psn)
    else {
        return;
    };
    let ks = psn::diff(from, first) as u32..(psn::diff(to, first) as u32).min(n);
    let mtu = q.path_mtu.bytes() as u64;
    let op_code = |op: Op| Opcode::new(sh.transport(), op).expect("op legal for this transport");
    let end = ks.end;
    if let Err(status) =
        emit_read_request(ctx, q, w, peer, (remote_addr, rkey), ks, mtu, op_code, tx)
    {
        fail_wqe(ctx, sh, q, i, status);
        return;
    }
    bump(&ctx.stats.retransmits);
    let w = &mut q.req.sq[i];
    if restart {
        w.read_gaps.restart(w.read_done);
    } else {
        w.read_gaps.asked(end);
    }
}

/// Go back to PSN `p`: everything from there is sent again.
fn go_back(q: &mut Inner, p: u32) {
    q.req.recovery = None;
    q.req.rtt.discard();
    let Some(i) = q
        .req
        .sq
        .iter()
        .take(q.req.transmitted())
        .position(|w| w.holds(p) || w.psn.is_some_and(|(f, _)| psn::diff(f, p) > 0))
    else {
        return;
    };
    let transmitted = q.req.transmitted();
    for (j, w) in q.req.sq.iter_mut().enumerate().take(transmitted).skip(i) {
        let (f, _) = w.psn.expect("transmitted");
        if w.is_rd_atomic() {
            if w.result.is_none() {
                w.next_pkt = 0;
                // The rest is asked for again: a new stream of responses,
                // whose own holes are asked for again as they show.
                w.read_gaps.restart(w.read_done);
            }
        } else {
            w.next_pkt = if j == i && w.holds(p) {
                psn::diff(p, f) as u32
            } else {
                0
            };
        }
    }
    q.req.send_idx = i;
}

/// Send the packet at PSN `p` again, alone and asking for an ACK, and
/// start a recovery from it (`super::loss`). False if that is not how `p`
/// is resent: not RC (an XRC target of ours does not hold requests past a
/// gap), a READ/atomic (resent by going back), or not sent yet.
fn resend_one(
    ctx: &Context<'_>,
    sh: &QpShared,
    q: &mut Inner,
    p: u32,
    probe: bool,
    tx: &mut TxQueue,
) -> bool {
    if sh.qp_type != QpType::Rc {
        return false;
    }
    let Some(i) = q
        .req
        .sq
        .iter()
        .take(q.req.transmitted())
        .position(|w| w.holds(p))
    else {
        return false;
    };
    let w = &q.req.sq[i];
    let (first, _) = w.psn.expect("transmitted");
    let k = psn::diff(p, first) as u32;
    let (Some(peer), false, true) = (
        q.peer,
        w.is_rd_atomic(),
        i < q.req.send_idx || k < w.next_pkt,
    ) else {
        return false;
    };
    let mtu = q.path_mtu.bytes() as u64;
    let op_code = |op: Op| Opcode::new(sh.transport(), op).expect("op legal for this transport");
    let limit = Some(psn::add(p, 1)); // the one packet, its AckReq set as a window edge
    if let Err(status) = emit_segments(ctx, sh, q, w, peer, mtu, k, limit, op_code, tx) {
        fail_wqe(ctx, sh, q, i, status);
        return true;
    }
    bump(&ctx.stats.retransmits);
    q.req.rtt.discard();
    let end = q.req.sent_high.map_or(q.req.next_psn, |h| psn::add(h, 1));
    q.req.recovery = Some(match q.req.recovery {
        // A probe resending the packet a NAK's recovery waits for (the
        // copy or its answer was lost, or is late): the same recovery.
        Some(r) if r.from == p => Recovery {
            probe: r.probe && probe,
            ..r
        },
        _ => Recovery {
            from: p,
            end,
            probe,
        },
    });
    true
}

/// Nothing acknowledged for the probe timeout: send the oldest
/// unacknowledged packet again (a READ/atomic by going back to it). No
/// retry is counted: see `super::loss`.
fn probe(ctx: &Context<'_>, sh: &QpShared, q: &mut Inner, tx: &mut TxQueue, now: Instant) {
    bump(&ctx.stats.loss_probes);
    q.req.probes = probes(q).saturating_add(1);
    q.req.probe_at = Some(now);
    let from = first_unacked(q);
    let front = q.req.sq.front().expect("outstanding");
    if let (SendOp::Read { .. }, None, Some((f, n)), true) =
        (front.op, front.result, front.psn, front.next_pkt > 0)
    {
        // A READ under way: only its own missing responses, not every
        // READ after it again (they are answered or probed in turn).
        reread(ctx, sh, q, from, psn::add(f, n), true, tx);
        return;
    }
    if !resend_one(ctx, sh, q, from, true, tx) {
        bump(&ctx.stats.retransmits);
        go_back(q, from);
        progress(ctx, sh, q, tx);
    }
}

/// The QP's timer fired (retransmission timeout or end of an RNR wait).
pub(super) fn on_timer(ctx: &Context<'_>, sh: &QpShared, q: &mut Inner, tx: &mut TxQueue) {
    q.req.timer_armed = false;
    q.req.timer_at = None;
    if std::mem::take(&mut q.req.budget_waiting) {
        progress(ctx, sh, q, tx);
        return;
    }
    if q.req.rnr_waiting {
        q.req.rnr_waiting = false;
        progress(ctx, sh, q, tx);
        return;
    }
    if !q.req.in_flight() {
        q.req.wait_from = None;
        return; // nothing outstanding
    }
    let Some(d) = rto(q) else { return };
    let now = Instant::now();
    if timeout_at(q, d) > now {
        // Acknowledged since the timer was armed: no timeout; maybe a probe.
        if probe_at(q, d) <= now {
            probe(ctx, sh, q, tx, now);
        }
        if q.state == QpState::Rts && q.req.in_flight() {
            arm(ctx, sh, q);
        }
        return;
    }
    bump(&ctx.stats.local_ack_timeouts);
    if q.req.retries_left == 0 {
        bump(&ctx.stats.retry_exceeded);
        log!(
            Warn,
            "qp {:#x}: no answer from {:?} after {} retries: retry count exceeded",
            sh.qpn,
            q.peer,
            q.retry_cnt
        );
        let w = q.req.sq.pop_front().expect("outstanding");
        sh.complete_send(ctx, &w, WcStatus::RetryExcErr);
        sh.fail(ctx, q);
        return;
    }
    q.req.retries_left -= 1;
    bump(&ctx.stats.retransmits);
    let from = first_unacked(q);
    go_back(q, from);
    q.req.progress_at = Some(now);
    progress(ctx, sh, q, tx);
}

/// The oldest PSN not known to be done.
fn first_unacked(q: &Inner) -> u32 {
    let front = q.req.sq.front().expect("outstanding");
    let (f, _) = front.psn.expect("transmitted");
    if front.is_rd_atomic() {
        return psn::add(f, front.read_done);
    }
    match q.req.acked_psn {
        Some(a) if front.holds(psn::add(a, 1)) => psn::add(a, 1),
        _ => f,
    }
}

/// An RNR NAK for PSN `p`: wait, then go back to `p`.
fn on_rnr_nak(ctx: &Context<'_>, sh: &QpShared, q: &mut Inner, p: u32, timer: u8) {
    if q.req.rnr_left == 0 {
        bump(&ctx.stats.rnr_retry_exceeded);
        log!(
            Warn,
            "qp {:#x}: peer {:?} had no receive posted after {} RNR retries",
            sh.qpn,
            q.peer,
            q.rnr_retry
        );
        if let Some(pos) = q.req.sq.iter().position(|w| w.holds(p)) {
            let w = sh.take_failed(ctx, q, pos);
            sh.complete_send(ctx, &w, WcStatus::RnrRetryExcErr);
        }
        sh.fail(ctx, q);
        return;
    }
    bump(&ctx.stats.rnr_retries);
    if q.rnr_retry != 7 {
        q.req.rnr_left -= 1;
    }
    go_back(q, p);
    q.req.rnr_waiting = true;
    q.req.timer_armed = true;
    q.req.timer_generation += 1;
    ctx.timers.arm(
        Instant::now() + rnr_delay(timer),
        sh.qpn,
        q.req.timer_generation,
    );
}

#[cfg(test)]
mod rto_tests {
    use super::*;

    #[test]
    fn short_timeout_codes_wait_at_least_the_floor() {
        assert_eq!(rto_of(1), MIN_RTO);
        assert_eq!(rto_of(4), MIN_RTO); // the ibverbs crate's default
        assert_eq!(rto_of(8), Duration::from_nanos(4096 << 8));
        assert_eq!(rto_of(14), Duration::from_nanos(4096 << 14));
    }

    #[test]
    fn consecutive_timeouts_double_the_wait_up_to_32_times() {
        let base = rto_of(11);
        let waits: Vec<u32> = (0..8)
            .map(|k| backed_off(base, k).as_nanos() as u32 / base.as_nanos() as u32)
            .collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 32, 32]);
    }
}
