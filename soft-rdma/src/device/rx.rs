//! Receiving: who takes datagrams off the link, and handling each one
//! (parse, ICRC, QP → the QP's responder or completer, one coalesced ACK per
//! QP at the end of a batch — or, while an application polls, riding with
//! the QP's next request: see [`receive`]).
//!
//! Two kinds of thread receive, one at a time under [`Receiver`]'s lock (so
//! datagrams are handled in arrival order): an application thread polling an
//! empty CQ of the device receives inline (`Cq::poll`), and the
//! `softrdma-rx` thread receives what arrives while no application thread is
//! in the library — it blocks in [`Link::wait`], never spins. The point is
//! the 2-core machine: every datagram the thread handles costs a wake-up and
//! two context switches, and in a ping-pong the application is already
//! spinning on the CQ the datagram completes. So while an application polls,
//! arrivals stop waking the thread ([`Link::wake_on_arrival`]); its wait is
//! then bounded by [`POLLER_GRACE`], and once nobody has polled for that long
//! (the application left, e.g. to spin on memory a peer writes, as
//! `ib_write_lat` does) arrivals wake it again. A poll that finds a
//! completion turns the wake-ups back on at once: the caller is about to
//! leave the library.

use super::DeviceInner;
use crate::log::log;
use crate::qp::{QpShared, TxQueue};
use crate::resources::counters::bump;
use crate::sync::{Level, OrderedMutex};
use crate::transport::{RecvBatch, Remote};
use crate::wire::icrc::{self, IcrcContext};
use crate::wire::{Packet, PacketRepr, BTH_LEN};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long after an application thread's last empty poll it still counts
/// as polling: the receive thread then sleeps at most this long, and an
/// application that stopped polling without finding a completion leaves
/// arrivals unhandled at most this long.
pub(crate) const POLLER_GRACE: Duration = Duration::from_micros(200);

/// An application thread that polled an empty CQ this recently is in its
/// poll loop: the receive thread leaves the receiving to it.
const POLLING_NOW: Duration = Duration::from_micros(20);

/// Datagrams taken per receive call.
const BATCH: usize = 256;

/// The receive side of a device: the receive state and who may sleep on
/// arrivals.
pub(crate) struct Receiver {
    /// Held by whoever receives; receiving and handling under one lock keeps
    /// arrival order.
    work: OrderedMutex<Work>,
    arming: OrderedMutex<Arming>,
    /// `arming.armed`, readable without the lock (the poller's fast path).
    armed: AtomicBool,
    /// When an application thread last polled an empty CQ (ns after
    /// `epoch`; 0: never).
    last_poll: AtomicU64,
    /// `Work::deferred` is not empty: the receive thread's wait is bounded.
    acks_deferred: AtomicBool,
    /// Receive batches taken so far (`Context::rx_batch`).
    batches: AtomicU64,
    epoch: Instant,
}

struct Work {
    batch: RecvBatch,
    tx: TxQueue,
    acks: Vec<Arc<QpShared>>,
    /// QPs whose coalesced ACK waits for a ride (see [`receive`]).
    deferred: Vec<Arc<QpShared>>,
}

struct Arming {
    /// Arrivals wake the receive thread (the link's `wake_on_arrival`).
    armed: bool,
    /// The receive thread is (about to be) asleep with no timeout: turning
    /// wake-ups off must then kick it, or it would sleep through arrivals.
    waiter_unbounded: bool,
}

impl Receiver {
    pub(crate) fn new() -> Receiver {
        Receiver {
            work: OrderedMutex::new(
                Level::Receiver,
                Work {
                    batch: RecvBatch::new(BATCH),
                    tx: TxQueue::default(),
                    acks: Vec::new(),
                    deferred: Vec::new(),
                },
            ),
            arming: OrderedMutex::new(
                Level::Arming,
                Arming {
                    armed: true,
                    waiter_unbounded: false,
                },
            ),
            armed: AtomicBool::new(true),
            last_poll: AtomicU64::new(0),
            acks_deferred: AtomicBool::new(false),
            batches: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// The number of the receive batch being (or last) handled.
    pub(crate) fn batch(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    fn now(&self) -> u64 {
        (self.epoch.elapsed().as_nanos() as u64).max(1)
    }

    /// Whether an application thread polled an empty CQ of the device less
    /// than [`POLLER_GRACE`] ago.
    pub(crate) fn app_polling(&self) -> bool {
        self.polled_within(POLLER_GRACE)
    }

    /// Whether an application thread is in its poll loop right now: it
    /// polled an empty CQ less than [`POLLING_NOW`] ago and has found no
    /// completion since (which re-arms wake-ups: the caller is leaving the
    /// library, e.g. to spin on memory as `ib_write_lat` does, and what
    /// arrives next is the receive thread's at once).
    fn in_poll_loop(&self) -> bool {
        !self.armed.load(Ordering::Relaxed) && self.polled_within(POLLING_NOW)
    }

    /// Whether an application thread polled an empty CQ less than `d` ago.
    fn polled_within(&self, d: Duration) -> bool {
        let last = self.last_poll.load(Ordering::Relaxed);
        last != 0 && self.now().saturating_sub(last) < d.as_nanos() as u64
    }

    fn set_armed(&self, dev: &DeviceInner, a: &mut Arming, on: bool) {
        dev.link.wake_on_arrival(on);
        a.armed = on;
        self.armed.store(on, Ordering::Relaxed);
    }

    /// An application thread found its CQ empty: take over receiving for a
    /// while (the receive thread is no longer woken by arrivals) and handle
    /// what has arrived (see [`Receiver::try_receive`]).
    ///
    /// Locks: call with none held (`Cq::poll`); takes the arming lock, then
    /// tries the receive lock — it never waits for another receiver.
    pub(crate) fn poll(&self, dev: &DeviceInner) {
        self.last_poll.store(self.now(), Ordering::Relaxed);
        if self.armed.load(Ordering::Relaxed) {
            let mut a = self.arming.lock();
            if a.armed {
                self.set_armed(dev, &mut a, false);
                if std::mem::take(&mut a.waiter_unbounded) {
                    dev.link.kick();
                }
            }
        }
        if let Err(e) = self.try_receive(dev, true) {
            log!(Debug, "inline receive failed: {e}");
        }
    }

    /// Receive, unless another thread is receiving right now: it takes what
    /// has arrived, so yield to it (it may be waiting for this core).
    /// Locks: none held; the receive lock, then QP locks one at a time.
    fn try_receive(&self, dev: &DeviceInner, inline: bool) -> std::io::Result<()> {
        match self.work.try_lock() {
            Some(mut w) => receive(dev, &mut w, inline),
            None => {
                std::thread::yield_now();
                Ok(())
            }
        }
    }

    /// The application found a completion (or arms its CQ to sleep): it is
    /// about to leave the library, so arrivals wake the receive thread again.
    /// Locks: none held; the arming lock only if wake-ups are off.
    pub(crate) fn poll_done(&self, dev: &DeviceInner) {
        if !self.armed.load(Ordering::Relaxed) {
            let mut a = self.arming.lock();
            if !a.armed {
                self.set_armed(dev, &mut a, true);
            }
        }
    }

    /// The receive thread, before it waits: how long it may sleep. Turns
    /// wake-ups back on if the application stopped polling.
    fn before_wait(&self, dev: &DeviceInner) -> Option<Duration> {
        let polling = self.app_polling();
        let mut a = self.arming.lock();
        if !a.armed && !polling {
            self.set_armed(dev, &mut a, true);
        }
        a.waiter_unbounded = a.armed
            && !polling
            && !self.acks_deferred.load(Ordering::Relaxed)
            && !dev.doorbells.any();
        (!a.waiter_unbounded).then_some(POLLER_GRACE)
    }
}

/// The `softrdma-rx` thread.
pub(crate) fn run(dev: &DeviceInner) {
    let r = &dev.receiver;
    while !dev.is_closing() {
        let timeout = r.before_wait(dev);
        if let Err(e) = dev.link.wait(timeout) {
            log!(Error, "waiting for packets failed: {e}");
            std::thread::sleep(Duration::from_millis(10));
        }
        if dev.is_closing() {
            break;
        }
        bump(&dev.stats.rx_wakeups);
        dev.doorbells.ring(dev);
        // An application thread in its poll loop right now takes what
        // arrived: receiving here too only makes the two take turns on the
        // receive lock (its polls then yield the core to this thread: 15 000
        // `sched_yield` a 10 000-READ `read_bw` between hosts). Otherwise
        // receive even while an application polls: the wait may have ended
        // for a datagram a fault layer held back falling due, and skipping
        // it would make the next wait end at once again. But not behind an
        // application thread receiving right now: it takes what arrived, and
        // blocking on its lock cost both threads a futex round trip (3 % of
        // the sender's cycles in `ib_write_bw`, its poll waking this thread).
        if r.in_poll_loop() {
            continue;
        }
        if let Err(e) = r.try_receive(dev, false) {
            log!(Error, "receive failed: {e}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Take what has arrived (without blocking) and handle it; `inline`: in an
/// application thread.
///
/// The coalesced ACKs of the batch leave at its end — unless an application
/// polls: then the application is likely to answer (a ping-pong), and each
/// ACK waits for a ride instead: the QP's next `post_send` (one system call
/// for the ACK and the answer, and the peer, polling, takes both at once),
/// or the next receive by anyone, which the receive thread's bounded wait
/// makes at most [`POLLER_GRACE`] later.
///
/// Locks: under the receive lock (`w` proves it); takes each QP's lock in
/// turn, sending what the QP produced before releasing it.
fn receive(dev: &DeviceInner, w: &mut Work, inline: bool) -> std::io::Result<()> {
    let Work {
        batch,
        tx,
        acks,
        deferred,
    } = w;
    let r = &dev.receiver;
    // Under the `Work` lock: one number per batch, seen by its contexts.
    r.batches.fetch_add(1, Ordering::Relaxed);
    let ctx = dev.ctx();
    if !deferred.is_empty() {
        r.acks_deferred.store(false, Ordering::Relaxed);
        for qp in deferred.drain(..) {
            // None if a `post_send` took it along.
            qp.lock().flush_ack(&ctx, tx);
            tx.flush(&ctx);
        }
    }
    let n = dev.link.recv(batch, Some(Duration::ZERO))?;
    if inline && n > 0 {
        dev.stats.rcvd_inline.fetch_add(n as u64, Ordering::Relaxed);
    }
    handle_all(dev, batch, tx, acks);
    let polling = r.app_polling();
    for qp in acks.drain(..) {
        let mut q = qp.lock();
        if polling && !q.completions_pending() {
            // Only an ACK, nothing the application can see yet: it may ride.
            drop(q);
            deferred.push(qp);
            continue;
        }
        q.acknowledge_and_complete(&ctx, tx);
    }
    if !deferred.is_empty() {
        r.acks_deferred.store(true, Ordering::Relaxed);
    }
    // QPs the budget's line woke as this batch's ACKs freed room send from
    // here, not from the timer thread.
    super::timer::run_woken(dev);
    Ok(())
}

/// The destination QP a datagram names, if it is long enough to name one.
/// A received datagram counted and parsed; a malformed one is counted as
/// such and dropped (`None`).
pub(super) fn parse_counted(
    dev: &DeviceInner,
    from: SocketAddr,
    bytes: &[u8],
) -> Option<(PacketRepr, std::ops::Range<usize>)> {
    bump(&dev.stats.rcvd_pkts);
    PacketRepr::parse(bytes)
        .map_err(|e| {
            bump(&dev.stats.parse_errors);
            log!(Debug, "dropped {} bytes from {from}: {e:?}", bytes.len());
        })
        .ok()
}

/// A datagram as [`handle_run`] takes it.
#[derive(Clone, Copy)]
enum Arrived<'a> {
    /// A whole packet.
    Full(&'a [u8]),
    /// A packet by reference (its headers): the responder places its
    /// payload straight from the sender's memory into the MR, one read for
    /// a run of them (`qp::Locked::place_deferred`).
    Remote(&'a [u8], Remote),
}

/// [`parse_counted`] of a packet by reference: `header` and the length of
/// the payload that stayed with the sender (the range is then empty).
fn parse_header_counted(
    dev: &DeviceInner,
    from: SocketAddr,
    header: &[u8],
    payload_len: usize,
) -> Option<(PacketRepr, std::ops::Range<usize>)> {
    bump(&dev.stats.rcvd_pkts);
    PacketRepr::parse_header(header, payload_len)
        .map(|r| (r, 0..0))
        .map_err(|e| {
            bump(&dev.stats.parse_errors);
            log!(Debug, "dropped a by-reference packet from {from}: {e:?}");
        })
        .ok()
}

fn dest_qp(bytes: &[u8]) -> Option<u32> {
    Packet::new_checked(bytes).ok().map(|p| p.dest_qp())
}

/// The destination QP of the `i`th datagram of `batch` (a packet by
/// reference holds only its headers: its BTH is enough).
fn dest_qp_at(batch: &RecvBatch, i: usize) -> Option<u32> {
    let bytes = batch.get(i).1;
    match batch.remote(i) {
        Some(_) if bytes.len() >= BTH_LEN => Some(Packet::new_unchecked(bytes).dest_qp()),
        Some(_) => None,
        None => dest_qp(bytes),
    }
}

/// Handle the datagrams of `batch` in order, grouped into runs to the
/// same QP: each run takes the QP lock once and hands what it produced (read
/// responses, NAKs) to the link in one go before releasing it.
fn handle_all(
    dev: &DeviceInner,
    batch: &RecvBatch,
    tx: &mut TxQueue,
    acks: &mut Vec<Arc<QpShared>>,
) {
    let n = batch.len();
    let mut i = 0;
    while i < n {
        let qpn = dest_qp_at(batch, i);
        let mut j = i + 1;
        while j < n && qpn.is_some() && dest_qp_at(batch, j) == qpn {
            j += 1;
        }
        if qpn == Some(super::mcast::MULTICAST_QPN) && (i..j).any(|k| batch.remote(k).is_some()) {
            // Only RC WRITEs go by reference: no multicast packet does.
            bump(&dev.stats.rcvd_pkts);
            bump(&dev.stats.parse_errors);
            i += 1;
            continue;
        }
        if qpn == Some(super::mcast::MULTICAST_QPN) {
            super::mcast::handle_run(dev, batch, i..j, tx, acks);
            i = j;
            continue;
        }
        let run = (i..j).map(|k| {
            let (from, bytes) = batch.get(k);
            let body = match batch.remote(k) {
                None => Arrived::Full(bytes),
                Some(r) => Arrived::Remote(bytes, r),
            };
            (from, body, batch.intact(k))
        });
        handle_run(dev, qpn, run, tx, acks);
        i = j;
    }
}

/// The last request was a class C or J error: what completed before it is
/// acknowledged and completes first; the flush completions follow.
fn fail_if_due(ctx: &crate::qp::Context<'_>, q: &mut crate::qp::Locked<'_>, tx: &mut TxQueue) {
    if q.take_goto_error() {
        q.acknowledge_and_complete(ctx, tx);
        q.fail(ctx);
    }
}

/// Datagrams that all name destination QP `qpn` (None: too short to name
/// one), in arrival order, each with its `intact` mark (`RecvBatch::intact`:
/// no ICRC check needed) and, for a packet by reference, where its payload
/// is (`RecvBatch::remote`: the bytes are its headers; it came by a ring,
/// so it is intact). Anything malformed is dropped and counted, never a
/// panic.
///
/// Locks: under the receive lock; the QP's lock is taken at the first
/// datagram that passes the device's checks and held for the rest of the
/// run (arrival order, one acquisition), released before this returns.
fn handle_run<'a>(
    dev: &DeviceInner,
    qpn: Option<u32>,
    run: impl Iterator<Item = (SocketAddr, Arrived<'a>, bool)>,
    tx: &mut TxQueue,
    acks: &mut Vec<Arc<QpShared>>,
) {
    let ctx = dev.ctx();
    let found = qpn.and_then(|n| dev.qp(n));
    // Locked at the first datagram that passes the checks before it.
    let mut held = None;
    let mut id_deltas = None;
    let mut run = run.peekable();
    while let Some((from, body, intact)) = run.next() {
        let (parsed, bytes) = match body {
            Arrived::Full(b) => (parse_counted(dev, from, b), b),
            Arrived::Remote(h, r) => (parse_header_counted(dev, from, h, r.len()), h),
        };
        let Some((repr, payload)) = parsed else {
            continue;
        };
        // Over IPv4 a GSO sender's later segments carry IDs 1, 2…, which a
        // socket cannot see: the ICRC must hold for one ID below the most
        // segments one GSO send has (0, a lone datagram's, tried first).
        if !intact
            && icrc::verify_gso_segment(
                &IcrcContext::between(from, dev.local),
                bytes,
                icrc::GSO_MAX_SEGMENTS,
                &mut id_deltas,
            )
            .is_none()
        {
            bump(&dev.stats.icrc_errors);
            log!(Debug, "dropped {repr} from {from}: bad ICRC");
            continue;
        }
        let Some(qp) = &found else {
            bump(&dev.stats.unknown_qp);
            log!(Debug, "dropped {repr} from {from}: no such QP");
            continue;
        };
        if repr.bth.opcode.transport() != qp.transport() {
            // rxe's check_type_state: a UC opcode is no request of an RC QP.
            bump(&dev.stats.wrong_transport);
            log!(
                Debug,
                "dropped {repr} from {from}: QP is {:?}",
                qp.qp_type()
            );
            continue;
        }
        let q = held.get_or_insert_with(|| qp.lock());
        match body {
            Arrived::Full(_) => q.receive(&ctx, from, &repr, &bytes[payload], tx),
            Arrived::Remote(_, r) => q.receive_by_ref(&ctx, from, &repr, r, tx),
        }
        if run.peek().is_some() && q.ack_due() {
            // More of the run to handle: let the requester go on meanwhile
            // (what the ACK covers is placed first).
            q.flush_ack(&ctx, tx);
            tx.flush(&ctx);
        }
        fail_if_due(&ctx, q, tx);
    }
    let (Some(qp), Some(mut q)) = (&found, held) else {
        return;
    };
    // WRITE payloads by reference still deferred: placed (or undone and
    // NAKed) before anything leaves or the lock goes.
    q.place_deferred(&ctx, tx);
    fail_if_due(&ctx, &mut q, tx);
    // Packets this QP produced leave before its lock is released (PSN order).
    tx.flush(&ctx);
    // The coalesced ACK and the completions it covers: at the batch's end.
    let pending = q.batch_pending();
    drop(q);
    if pending && !acks.iter().any(|a| Arc::ptr_eq(a, qp)) {
        acks.push(qp.clone());
    }
}
