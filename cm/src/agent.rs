//! The CM agent of one device: its GSI endpoint, the table of ids (by local
//! communication ID), the listeners (by service ID), and a thread that
//! receives MADs and runs the timers. Users hold [`CmId`]s (their calls
//! are in `id.rs`) and read [`Event`]s from their [`EventChannel`]s.
//!
//! Locks: `Shared::tables` (one per device), then a channel's queue (a
//! leaf). Nothing is sent and no id handle is dropped under `tables`: what
//! an input produced is collected in an `Out` and acted on after.

use crate::conn::{Conn, Out, State, Timing, SIDR_UNSUPPORTED};
use crate::event::{EventChannel, EventKind, Queued, Remote};
use crate::gsi::Gsi;
pub use crate::id::CmId;
use crate::liveness::{Keepalive, Liveness};
use crate::ports::Binding;
use crate::rendezvous::Claim;
use crate::wire::probe::ProbeMad;
use crate::wire::{Answered, CmMessage, PortSpace, Rej, RejReason, SidrRep, SidrReq, MAD_LEN};
use soft_rdma::verbs::{Device, Errno, Gid, PeerWatch, Result};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How the CM times its exchanges.
#[derive(Debug, Clone, Copy)]
pub struct CmConfig {
    /// The CM response timeout, as the exponent of 4.096 µs: how long an
    /// unanswered REQ, REP or DREQ waits before it is sent again. 16 is
    /// 268 ms (the kernel's rdma_cm uses 20, 4.3 s, sized for fabrics).
    pub response_timeout: u8,
    /// Sends after the first before giving up (rdma_cm: 15).
    pub max_retries: u8,
    /// What our MRAs ask the peer to wait (an exponent as above; 20 is
    /// 4.3 s) while the user decides on a connection request.
    pub mra_timeout: u8,
    /// How long a disconnected connection answers late DREQs.
    pub timewait: Duration,
    /// A peer with established connections from which no MAD came for
    /// this long is probed ([`crate::wire::probe`])…
    pub keepalive_idle: Duration,
    /// …every this long…
    pub keepalive_interval: Duration,
    /// …and, this many probes unanswered, is gone: its connections are
    /// DISCONNECTED. A killed peer is noticed within `keepalive_idle +
    /// keepalive_probes × keepalive_interval` (3 s by default; eight
    /// probes, so that a live peer is declared dead about once in 3 500
    /// probe rounds under 20 % loss each way, once in 600 000 under 10 %).
    /// The probes are UD MADs: data traffic to the peer does not count.
    pub keepalive_probes: u8,
}

impl Default for CmConfig {
    fn default() -> CmConfig {
        CmConfig {
            response_timeout: 16,
            max_retries: 15,
            mra_timeout: 20,
            timewait: Duration::from_millis(500),
            keepalive_idle: Duration::from_secs(1),
            keepalive_interval: Duration::from_millis(250),
            keepalive_probes: 8,
        }
    }
}

/// What an id is.
pub(crate) enum Kind {
    Conn(Box<Conn>),
    Listener {
        service_id: u64,
        /// Connection requests it may still be handed before one is taken
        /// ([`crate::ports::backlog`]).
        backlog: u32,
    },
    /// Created, neither connecting nor listening yet.
    Fresh,
}

pub(crate) struct Entry {
    pub(crate) kind: Kind,
    /// The port this id holds on the host ([`CmId::bind`]), shared by the
    /// ids of this CM that bind it together ([`crate::ports`]).
    pub(crate) claim: Option<Arc<Claim>>,
    pub(crate) binding: Binding,
    pub(crate) chan: EventChannel,
    /// Set for a connection a listener's REQ made, until the user takes it.
    pub(crate) listen_id: Option<u32>,
}

pub(crate) struct Tables {
    pub(crate) ids: HashMap<u32, Entry>,
    /// Several when they take different address families (AF-only).
    pub(crate) listeners: HashMap<u64, Vec<u32>>,
    /// (peer, its communication ID) → ours: how a repeated REQ is known.
    by_remote: HashMap<(Gid, u32), u32>,
    next_id: u32,
    next_tid: u64,
    liveness: Liveness,
    /// Service IDs whose listener was destroyed, and when (for
    /// [`RELISTEN_GRACE`]).
    pub(crate) unlistened: HashMap<u64, Instant>,
}

/// How long a REQ for a service whose listener was just destroyed goes
/// unanswered rather than rejected: a server may be between destroying a
/// listener and binding and listening on the next, and the peer's
/// retransmission (every 268 ms, `response_timeout` 16) finds the new one
/// — as a local client's rendezvous waits (`NO_LISTENER_GRACE` in the
/// shim). perftest -R's server destroys its first listener, sleeps 1 s,
/// exchanges versions and parameters, and only after a handshake with
/// its client creates, binds and listens on the second, while the client
/// resolves and sends its REQ: so the REQ comes more than a second after
/// the destroy, and the grace must outlast that with room for a loaded
/// machine. A port nobody listened on lately is refused at once, as ib_cm.
pub(crate) const RELISTEN_GRACE: Duration = Duration::from_secs(3);

impl Tables {
    fn new_id(&mut self) -> u32 {
        loop {
            self.next_id = self.next_id.wrapping_add(1);
            if self.next_id != 0 && !self.ids.contains_key(&self.next_id) {
                return self.next_id;
            }
        }
    }

    /// The listener of `service_id` that takes a request to an address of
    /// family `v4`, and its channel.
    fn listener_for(&self, service_id: u64, v4: Option<bool>) -> Option<(u32, EventChannel)> {
        self.listeners.get(&service_id)?.iter().find_map(|l| {
            let e = self.ids.get(l)?;
            e.binding.takes(v4).then(|| (*l, e.chan.clone()))
        })
    }

    /// The bindings of the ids other than `me` holding `port` of `ps`, and
    /// the claim they share.
    pub(crate) fn holders(
        &self,
        me: u32,
        ps: PortSpace,
        port: u16,
    ) -> (Vec<Binding>, Option<Arc<Claim>>) {
        let mut claim = None;
        let b = self
            .ids
            .iter()
            .filter(|(id, _)| **id != me)
            .filter_map(|(_, e)| {
                let c = e.claim.as_ref()?;
                (c.ps == ps && c.port == port).then(|| {
                    claim = Some(c.clone());
                    e.binding
                })
            })
            .collect();
        (b, claim)
    }

    /// Whether a REQ for `service_id`, which nobody listens for, should go
    /// unanswered for now: a fresh id of this device holds its port (bound,
    /// not listening yet), or its listener went within [`RELISTEN_GRACE`].
    fn listener_coming(&self, service_id: u64) -> bool {
        let recent = self
            .unlistened
            .get(&service_id)
            .is_some_and(|at| at.elapsed() < RELISTEN_GRACE);
        recent
            || self.ids.values().any(|e| {
                matches!(e.kind, Kind::Fresh)
                    && e.claim
                        .as_ref()
                        .is_some_and(|c| c.ps.service_id(c.port) == service_id)
            })
    }

    pub(crate) fn new_tid(&mut self) -> u64 {
        self.next_tid = self.next_tid.wrapping_add(1);
        self.next_tid
    }
}

pub(crate) struct Shared {
    gsi: Gsi,
    /// Whether a same-host peer's endpoint closed ([`PeerWatch`]).
    watch: PeerWatch,
    pub(crate) gid: Gid,
    pub(crate) guid: u64,
    pub(crate) timing: Timing,
    tables: Mutex<Tables>,
    /// Wakes the thread when a new deadline may be earlier than its wait.
    pub(crate) kick: odp::EventFd,
    stop: AtomicBool,
    /// Rounds of the thread's loop completed: a released port is closed once
    /// the round that may hold it ends ([`Shared::wait_round`]).
    rounds: Mutex<u64>,
    round_done: std::sync::Condvar,
}

/// The Communication Manager of one device.
pub struct Cm {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// An event from a channel.
pub struct Event {
    /// The id it is for ([`CmId::local_id`]).
    pub id: u32,
    pub kind: EventKind,
    /// What the peer's message carried (the whole field, as rdma_cm).
    pub private_data: Vec<u8>,
    /// rdma_cm's `status`: 0; the reason of a REJ; -ETIMEDOUT for no
    /// answer; the status of a failed SIDR_REP.
    pub status: i32,
    /// The peer's end, from its REQ (ConnectRequest) or REP.
    pub remote: Option<Remote>,
    /// ConnectRequest: the listener it came to, and the new connection.
    pub listen_id: Option<u32>,
    pub new_id: Option<CmId>,
}

fn seed() -> u32 {
    // Communication IDs of a restarted process should not repeat the last
    // one's (a peer may still hold them): start from the clock.
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u32)
        .unwrap_or(1)
}

impl Cm {
    /// Opens the device's GSI QP and starts the agent thread.
    pub fn new(dev: &Device, config: CmConfig) -> Result<Cm> {
        let gsi = Gsi::open(dev)?;
        let kick =
            odp::EventFd::new().map_err(|e| Errno(e.raw_os_error().unwrap_or(libc::EMFILE)))?;
        let s = seed();
        let shared = Arc::new(Shared {
            gsi,
            watch: dev.peer_watch(),
            gid: dev.gid(1)?,
            guid: dev.attr().node_guid,
            timing: Timing {
                response_timeout: config.response_timeout,
                max_retries: config.max_retries,
                mra_timeout: config.mra_timeout,
                timewait: config.timewait,
            },
            tables: Mutex::new(Tables {
                ids: HashMap::new(),
                listeners: HashMap::new(),
                by_remote: HashMap::new(),
                next_id: s,
                next_tid: u64::from(s) << 32,
                unlistened: HashMap::new(),
                liveness: Liveness::new(Keepalive {
                    idle: config.keepalive_idle,
                    interval: config.keepalive_interval,
                    probes: config.keepalive_probes,
                }),
            }),
            kick,
            stop: AtomicBool::new(false),
            rounds: Mutex::new(0),
            round_done: std::sync::Condvar::new(),
        });
        let t = shared.clone();
        let thread = std::thread::Builder::new()
            .name("softrdma-cm".into())
            .spawn(move || t.run())
            .map_err(|_| Errno::EAGAIN)?;
        Ok(Cm {
            shared,
            thread: Some(thread),
        })
    }

    /// `rdma_create_id`: a fresh id reporting to `chan`.
    pub fn create_id(&self, chan: &EventChannel) -> CmId {
        let mut t = self.shared.lock();
        let id = t.new_id();
        t.ids.insert(
            id,
            Entry {
                kind: Kind::Fresh,
                claim: None,
                binding: Binding::default(),
                chan: chan.clone(),
                listen_id: None,
            },
        );
        CmId {
            shared: self.shared.clone(),
            id,
        }
    }

    /// Waits (at most `max`) until no disconnection of this CM waits for
    /// its DREP: what a process about to exit does so that its DREQs, sent
    /// again while lost, reach the peers (the kernel's CM outlives the
    /// process; ours does not).
    pub fn linger(&self, max: Duration) {
        let end = Instant::now() + max;
        while Instant::now() < end {
            let waiting = self
                .shared
                .lock()
                .ids
                .values()
                .any(|e| matches!(&e.kind, Kind::Conn(c) if c.state == State::DreqSent));
            if !waiting {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The GID requests from this CM come from (the device's RoCE v2 GID).
    pub fn gid(&self) -> Gid {
        self.shared.gid
    }

    /// Whether QP1's completion queue ever overflowed (MADs were lost
    /// inside this device, not on the network).
    pub fn qp1_overflowed(&self) -> bool {
        self.shared.gsi.overflowed()
    }
}

impl Drop for Cm {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.kick.signal();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl EventChannel {
    /// `rdma_get_cm_event`: the next event, waiting at most `timeout` (None:
    /// forever).
    pub fn get(&self, timeout: Option<Duration>, cm: &Cm) -> Option<Event> {
        let q = self.pop(timeout)?;
        if let (EventKind::ConnectRequest, Some(lid)) = (q.kind, q.listen_id) {
            // Taken: room for one more in the listener's backlog.
            if let Some(Entry {
                kind: Kind::Listener { backlog, .. },
                ..
            }) = cm.shared.lock().ids.get_mut(&lid)
            {
                *backlog += 1;
            }
        }
        let new_id = (q.kind == EventKind::ConnectRequest).then(|| CmId {
            shared: cm.shared.clone(),
            id: q.id,
        });
        Some(Event {
            id: q.id,
            kind: q.kind,
            private_data: q.private_data,
            status: q.status,
            remote: q.remote,
            listen_id: q.listen_id,
            new_id,
        })
    }
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends what an input produced and queues its events. Call with no
    /// lock held.
    pub(crate) fn flush(
        &self,
        id: u32,
        chan: Option<EventChannel>,
        listen_id: Option<u32>,
        remote: Option<Remote>,
        out: Out,
    ) {
        for (to, mad) in &out.sends {
            // A full send queue loses this one; retransmission covers it.
            let _ = self.gsi.send(*to, mad);
        }
        if let Some(chan) = chan {
            for (kind, private_data, status) in out.events {
                chan.push(Queued {
                    id,
                    listen_id,
                    kind,
                    private_data,
                    status,
                    remote,
                });
            }
        }
    }

    /// Runs `f` on connection `id` under the table lock, then acts on what
    /// it produced; removes the connection once closed.
    pub(crate) fn with_conn<R>(
        &self,
        id: u32,
        f: impl FnOnce(&mut Conn, &mut Tables, &mut Out) -> Result<R>,
    ) -> Result<R> {
        let mut out = Out::default();
        let (r, chan, remote, listen_id, gone) = {
            let mut t = self.lock();
            let mut entry = t.ids.remove(&id).ok_or(Errno::EINVAL)?;
            let Kind::Conn(conn) = &mut entry.kind else {
                t.ids.insert(id, entry);
                return Err(Errno::EINVAL);
            };
            let was = conn.watched();
            let r = f(conn, &mut t, &mut out);
            if was != conn.watched() {
                t.liveness.changed();
            }
            let remote = conn.remote;
            let closed = conn.state == State::Closed;
            if closed {
                let key = (conn.peer, conn.remote_id);
                if t.by_remote.get(&key) == Some(&id) {
                    t.by_remote.remove(&key);
                }
            }
            let chan = entry.chan.clone();
            let listen_id = entry.listen_id;
            let gone = if closed && matches!(&entry.kind, Kind::Conn(c) if c.detached) {
                Some(entry)
            } else {
                t.ids.insert(id, entry);
                None
            };
            (r, chan, remote, listen_id, gone)
        };
        drop(gone);
        self.flush(id, Some(chan), listen_id, remote, out);
        self.kick.signal();
        r
    }

    /// The agent thread: wait for MADs, the next deadline or a client of a
    /// claimed port; handle them.
    fn run(self: Arc<Self>) {
        while !self.stop.load(Ordering::Relaxed) {
            let (next, claims) = {
                let t = self.lock();
                let next = t
                    .ids
                    .values()
                    .filter_map(|e| match &e.kind {
                        Kind::Conn(c) => c.deadline(),
                        _ => None,
                    })
                    .chain(t.liveness.deadline())
                    .min();
                // A port answers its clients once its id listens: a client
                // dialling between bind and listen waits for the listener
                // (at most the rendezvous' answer wait) instead of racing
                // it into a REJ.
                let claims: Vec<Arc<Claim>> = t
                    .ids
                    .values()
                    .filter(|e| matches!(e.kind, Kind::Listener { .. }))
                    .filter_map(|e| e.claim.clone())
                    .collect();
                (next, claims)
            };
            let wait = next.map(|d| d.saturating_duration_since(Instant::now()));
            let ts = wait.map(|w| rustix::event::Timespec {
                tv_sec: w.as_secs() as i64,
                tv_nsec: i64::from(w.subsec_nanos()),
            });
            let mut fds = vec![
                rustix::event::PollFd::new(&self.gsi, rustix::event::PollFlags::IN),
                rustix::event::PollFd::new(&self.kick, rustix::event::PollFlags::IN),
            ];
            fds.extend(
                claims
                    .iter()
                    .map(|c| rustix::event::PollFd::new(&**c, rustix::event::PollFlags::IN)),
            );
            let _ = rustix::event::poll(&mut fds, ts.as_ref());
            // Only the ports a client is dialling: one accept each, not
            // one per claimed port per round.
            let ready: Vec<usize> = fds[2..]
                .iter()
                .enumerate()
                .filter(|(_, f)| !f.revents().is_empty())
                .map(|(i, _)| i)
                .collect();
            drop(fds);
            self.kick.drain();
            for i in ready {
                claims[i].serve();
            }
            drop(claims);
            *self.rounds.lock().unwrap_or_else(|e| e.into_inner()) += 1;
            self.round_done.notify_all();
            for r in self.gsi.receive() {
                // The CM speaks QP1 to QP1 (no redirection).
                if r.src_qp == soft_rdma::verbs::GSI_QPN {
                    self.on_mad(r.from, &r.mad);
                }
            }
            self.on_timers();
        }
    }

    fn on_timers(&self) {
        let now = Instant::now();
        self.check_peers(now);
        let due: Vec<u32> = self
            .lock()
            .ids
            .iter()
            .filter_map(|(id, e)| match &e.kind {
                Kind::Conn(c) if c.deadline().is_some_and(|d| d <= now) => Some(*id),
                _ => None,
            })
            .collect();
        for id in due {
            let _ = self.with_conn(id, |c, _, out| {
                c.on_timer(now, out);
                Ok(())
            });
        }
    }

    /// Returns once the thread's current round is over (so it holds no port
    /// released before this call), or after a second should it be stuck.
    pub(crate) fn wait_round(&self) {
        let mut r = self.rounds.lock().unwrap_or_else(|e| e.into_inner());
        let start = *r;
        self.kick.signal();
        let end = Instant::now() + Duration::from_secs(1);
        while *r == start && !self.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if now >= end {
                return;
            }
            r = self
                .round_done
                .wait_timeout(r, end - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Answers a message no id takes: a REJ, so the sender stops at once.
    fn reject_stray(
        &self,
        to: Gid,
        tid: u64,
        remote_comm_id: u32,
        answered: Answered,
        reason: RejReason,
    ) {
        let rej = CmMessage::Rej(Rej {
            local_comm_id: 0,
            remote_comm_id,
            message_rejected: answered,
            reason,
            ari: vec![],
            private_data: vec![],
        });
        if let Ok(mad) = rej.emit(tid) {
            let _ = self.gsi.send(to, &mad);
        }
    }

    /// Probes the silent peers of established connections, and
    /// disconnects every connection to a peer that stopped answering
    /// ([`crate::liveness`]). Locks: the tables, released before anything
    /// is sent.
    fn check_peers(&self, now: Instant) {
        let (probes, mut dead) = {
            let mut t = self.lock();
            if !t.liveness.due(now) {
                return;
            }
            let connected: HashSet<Gid> = t
                .ids
                .values()
                .filter_map(|e| match &e.kind {
                    Kind::Conn(c) if c.watched() => Some(c.peer),
                    _ => None,
                })
                .collect();
            let tick = t.liveness.tick(&connected, now);
            let probes: Vec<(Gid, u64)> = tick.probe.iter().map(|g| (*g, t.new_tid())).collect();
            (probes, tick.dead)
        };
        // A peer of this host whose endpoint closed (its process ended) is
        // gone now, not after the probes (asked outside the tables: the
        // link has locks of its own).
        let (gone, probes): (Vec<_>, Vec<_>) = probes
            .into_iter()
            .partition(|(g, _): &(Gid, u64)| self.watch.gone(*g));
        dead.extend(gone.into_iter().map(|(g, _)| g));
        let lost: Vec<u32> = if dead.is_empty() {
            Vec::new()
        } else {
            let mut t = self.lock();
            for g in &dead {
                t.liveness.forget(*g);
            }
            t.ids
                .iter()
                .filter_map(|(id, e)| match &e.kind {
                    Kind::Conn(c) if c.watched() && dead.contains(&c.peer) => Some(*id),
                    _ => None,
                })
                .collect()
        };
        for (to, tid) in probes {
            let _ = self.gsi.send(to, &crate::wire::probe::probe(tid));
        }
        for id in lost {
            let _ = self.with_conn(id, |c, t, out| {
                let tid = t.new_tid();
                c.peer_lost(tid, now, out);
                Ok(())
            });
        }
    }

    fn on_mad(&self, from: Gid, mad: &[u8; MAD_LEN]) {
        let now = Instant::now();
        self.lock().liveness.heard(from, now);
        match crate::wire::probe::classify(mad) {
            Some(ProbeMad::Request) => {
                let _ = self
                    .gsi
                    .send(from, &crate::wire::probe::unmatched_response(mad));
                return;
            }
            Some(ProbeMad::Response(_)) => return,
            None => {}
        }
        // A malformed or foreign MAD is dropped: it names no connection.
        let Ok((tid, msg)) = CmMessage::parse(mad) else {
            return;
        };
        match msg {
            CmMessage::Req(req) => self.on_req(from, tid, req),
            CmMessage::Mra(m) => {
                let _ = self.with_conn(m.remote_comm_id, |c, _, _| {
                    c.on_mra(&m, now);
                    Ok(())
                });
            }
            CmMessage::Rej(r) => {
                let _ = self.with_conn(r.remote_comm_id, |c, _, out| {
                    if c.remote_id == 0 || c.remote_id == r.local_comm_id || r.local_comm_id == 0 {
                        c.on_rej(&r, out);
                    }
                    Ok(())
                });
            }
            CmMessage::Rep(r) => {
                let known = self.with_conn(r.remote_comm_id, |c, _, out| {
                    if c.peer != from {
                        return Err(Errno::EINVAL);
                    }
                    c.on_rep(&r, out);
                    Ok(())
                });
                if known.is_err() {
                    self.reject_stray(
                        from,
                        tid,
                        r.local_comm_id,
                        Answered::Rep,
                        RejReason::INVALID_COMM_ID,
                    );
                }
            }
            CmMessage::Rtu(r) => {
                let _ = self.with_conn(r.remote_comm_id, |c, _, out| {
                    if c.remote_id == r.local_comm_id {
                        c.on_rtu(&r, out);
                    }
                    Ok(())
                });
            }
            CmMessage::Dreq(d) => {
                let known = self.with_conn(d.remote_comm_id, |c, _, out| {
                    if c.remote_id != d.local_comm_id {
                        return Err(Errno::EINVAL);
                    }
                    c.on_dreq(tid, out, now);
                    Ok(())
                });
                if known.is_err() {
                    // Forgotten already (its DREP was lost): answer anyway,
                    // as ib_cm does, so the peer stops asking.
                    let drep = CmMessage::Drep(crate::wire::Drep {
                        local_comm_id: d.remote_comm_id,
                        remote_comm_id: d.local_comm_id,
                        private_data: vec![],
                    });
                    if let Ok(mad) = drep.emit(tid) {
                        let _ = self.gsi.send(from, &mad);
                    }
                }
            }
            CmMessage::Drep(d) => {
                let _ = self.with_conn(d.remote_comm_id, |c, _, out| {
                    if c.remote_id == d.local_comm_id {
                        c.on_drep(out, now);
                    }
                    Ok(())
                });
            }
            CmMessage::SidrReq(r) => self.on_sidr_req(from, tid, r),
            CmMessage::SidrRep(r) => {
                let _ = self.with_conn(r.request_id, |c, _, out| {
                    if c.peer == from {
                        c.on_sidr_rep(&r, out);
                    }
                    Ok(())
                });
            }
        }
    }

    /// A SIDR_REQ: a new UD request for a listener, a repeated one, or one
    /// nobody listens for (answered "unsupported service ID", as ib_cm).
    fn on_sidr_req(&self, from: Gid, tid: u64, req: SidrReq) {
        // Refused without a connection: nobody listens (unsupported), or
        // the listener's backlog is full (rejected).
        let refuse = |status| {
            let rep = CmMessage::SidrRep(SidrRep {
                request_id: req.request_id,
                status,
                vendor_id: 0,
                qpn: 0,
                service_id: req.service_id,
                qkey: 0,
                info: vec![],
                private_data: vec![],
            });
            if let Ok(mad) = rep.emit(tid) {
                let _ = self.gsi.send(from, &mad);
            }
        };
        let nobody = || refuse(SIDR_UNSUPPORTED);
        let full = || refuse(crate::conn::SIDR_REJECTED);
        let v4 = crate::wire::IpHeader::parse(&req.private_data)
            .ok()
            .map(|h| h.dst.is_ipv4());
        self.incoming(
            from,
            (req.request_id, req.service_id, v4),
            |c, out| c.on_dup_sidr_req(out),
            |c, out| c.on_sidr_req(from, tid, &req, out),
            nobody,
            full,
        );
    }

    /// A REQ: a new connection for a listener, a repeated one, or one nobody
    /// listens for (REJ "invalid service ID", as ib_cm).
    fn on_req(&self, from: Gid, tid: u64, req: crate::wire::Req) {
        let reject =
            |reason| self.reject_stray(from, tid, req.local_comm_id, Answered::Req, reason);
        let nobody = || reject(RejReason::INVALID_SERVICE_ID);
        // Past the listener's backlog: refused as ucma's handler refuses
        // it (ib_cm's REJ for a destroyed request, consumer defined).
        let full = || reject(RejReason::CONSUMER_DEFINED);
        let v4 = crate::wire::IpHeader::parse(&req.private_data)
            .ok()
            .map(|h| h.dst.is_ipv4());
        self.incoming(
            from,
            (req.local_comm_id, req.service_id, v4),
            |c, out| c.on_dup_req(out),
            |c, out| c.on_req(from, tid, &req, out),
            nobody,
            full,
        );
    }

    /// A request (REQ or SIDR_REQ) from `from` with its communication or
    /// request ID and service ID: `again` answers a repeated one, `first`
    /// starts a new connection of the listener of the service, `nobody`
    /// refuses it when there is none. Locks: the tables, released before
    /// anything is sent.
    fn incoming(
        &self,
        from: Gid,
        (remote_id, service_id, v4): (u32, u64, Option<bool>),
        again: impl FnOnce(&mut Conn, &mut Out),
        first: impl FnOnce(&mut Conn, &mut Out),
        nobody: impl FnOnce(),
        full: impl FnOnce(),
    ) {
        let mut out = Out::default();
        let (id, chan, lid, remote) = {
            let mut t = self.lock();
            if let Some(&id) = t.by_remote.get(&(from, remote_id)) {
                if let Some(Entry {
                    kind: Kind::Conn(c),
                    ..
                }) = t.ids.get_mut(&id)
                {
                    again(c, &mut out);
                }
                drop(t);
                self.flush(id, None, None, None, out);
                return;
            }
            let Some((lid, chan)) = t.listener_for(service_id, v4) else {
                if t.listener_coming(service_id) {
                    return;
                }
                drop(t);
                nobody();
                return;
            };
            if let Some(Entry {
                kind: Kind::Listener { backlog, .. },
                ..
            }) = t.ids.get_mut(&lid)
            {
                if *backlog == 0 {
                    drop(t);
                    full();
                    return;
                }
                *backlog -= 1;
            }
            let id = t.new_id();
            let mut conn = Conn::new(id, self.timing);
            first(&mut conn, &mut out);
            let remote = conn.remote;
            t.by_remote.insert((from, remote_id), id);
            t.ids.insert(
                id,
                Entry {
                    kind: Kind::Conn(Box::new(conn)),
                    claim: None,
                    binding: Binding::default(),
                    chan: chan.clone(),
                    listen_id: Some(lid),
                },
            );
            (id, chan, lid, remote)
        };
        self.flush(id, Some(chan), Some(lid), remote, out);
    }
}
