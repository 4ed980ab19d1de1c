//! The device: one RoCEv2 endpoint (a [`Link`]), the tables that map QPNs
//! and keys to objects, receive dispatch ([`rx`]: parse → ICRC → QPN → the
//! QP), doorbell batching ([`doorbell`]), and the threads that run when the
//! application is not in the library: the receiver (blocks in `Link::wait`),
//! the timer thread ([`timer`]: sleeps until the next deadline) and the
//! counters' publisher ([`publish`]). None spins.
//!
//! A QP sees the device only through the [`Context`] built by
//! [`DeviceInner::ctx`].
#![forbid(unsafe_code)]

pub(crate) mod doorbell;
pub mod mcast;
pub mod publish;
mod qp_table;
pub(crate) mod rx;
pub(crate) mod stats;
mod timer;

use crate::limits::MAX_MR;
use crate::log::log;
use crate::qp::{Context, PostResult, QpConfig, QpShared, TxQueue};
use crate::resources::counters::Stats;
use crate::resources::cq::Driver;
use crate::resources::events::EventQueue;
use crate::resources::flight::Flight;
use crate::resources::mr::MrTable;
use crate::resources::timers::Timers;
use crate::resources::xrcd::XrcSrqTable;
use crate::sync::{lock, wait_timeout};
use crate::transport::Link;
use crate::types::{Errno, Gid, Mtu, QpAttr, RecvWr, Result, SendWr};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// The first QPN handed out (0 and 1 are the special QPs).
const FIRST_QPN: u32 = 0x11;

pub(crate) struct DeviceInner {
    pub(crate) link: Arc<dyn Link>,
    pub(crate) local: SocketAddr,
    pub(crate) active_mtu: Mtu,
    pub(crate) gid: Gid,
    pub(crate) mm: odp::MmGet,
    qps: qp_table::QpTable,
    pub(crate) mrs: MrTable,
    pub(crate) timers: Timers,
    pub(crate) receiver: rx::Receiver,
    pub(crate) doorbells: doorbell::Doorbells,
    /// The RC bytes in flight its QPs share (`resources::flight`).
    pub(crate) flight: Arc<Flight>,
    pub(crate) stats: Stats,
    pub(crate) events: EventQueue,
    pub(crate) xrc_srqs: XrcSrqTable,
    pub(crate) mcast: mcast::Groups,
    next_qpn: AtomicU32,
    next_object: AtomicU32,
    closing: AtomicBool,
}

impl DeviceInner {
    fn new(link: Arc<dyn Link>) -> std::io::Result<DeviceInner> {
        let local = link.local();
        Ok(DeviceInner {
            active_mtu: link.mtu().map_or(Mtu::M1024, Mtu::fitting),
            link,
            local,
            gid: Gid::from_ip(local.ip()),
            mm: odp::Mm::current(),
            qps: qp_table::QpTable::new(),
            mrs: MrTable::new(MAX_MR),
            timers: Timers::default(),
            receiver: rx::Receiver::new(),
            doorbells: Default::default(),
            flight: Arc::default(),
            stats: Stats::default(),
            events: EventQueue::new()?,
            xrc_srqs: XrcSrqTable::default(),
            mcast: mcast::Groups::new(),
            next_qpn: AtomicU32::new(0),
            next_object: AtomicU32::new(0),
            closing: AtomicBool::new(false),
        })
    }

    /// What a QP may use of this device.
    pub(crate) fn ctx(&self) -> Context<'_> {
        Context {
            link: &*self.link,
            local: self.local,
            gid: self.gid,
            port_mtu: self.active_mtu,
            stats: &self.stats,
            mrs: &self.mrs,
            timers: &self.timers,
            events: &self.events,
            xrc_srqs: &self.xrc_srqs,
            rx_batch: self.receiver.batch(),
        }
    }

    /// A new PD or SRQ identity.
    pub(crate) fn new_object_id(&self) -> u32 {
        self.next_object.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The live QP numbered `qpn` (the QP table's lock, for reading).
    pub(crate) fn qp(&self, qpn: u32) -> Option<Arc<QpShared>> {
        self.qps.get(qpn)
    }

    /// Create a QP with the next QPN — or with `fixed`, the number of a
    /// special QP (`GSI_QPN`; EBUSY while one lives) — and enter it in the
    /// table (the `qpn` of `config` is replaced); EINVAL beyond `MAX_QP`, as
    /// rxe, whose object pools refuse an element over their maximum with
    /// EINVAL.
    pub(crate) fn create_qp(
        self: &Arc<Self>,
        config: QpConfig,
        fixed: Option<u32>,
    ) -> Result<Arc<QpShared>> {
        let driver: std::sync::Weak<dyn Driver> = Arc::downgrade(self) as _;
        // A CQ polls the device of its first QP: another device's is EINVAL.
        if config.send_cq.driven_by_other(&driver) || config.recv_cq.driven_by_other(&driver) {
            return Err(Errno::EINVAL);
        }
        let counter = || self.next_qpn.fetch_add(1, Ordering::Relaxed);
        // QPN 0 and 1 are the special QPs; the table skips QPNs in use (a
        // new QP must not replace a live one).
        self.qps.insert(fixed, FIRST_QPN, counter, |qpn| {
            config.send_cq.attach(driver.clone());
            config.recv_cq.attach(driver);
            Arc::new(QpShared::new(
                QpConfig { qpn, ..config },
                self.flight.clone(),
            ))
        })
    }

    /// Destroy a QP: out of the table once its last words are sent.
    pub(crate) fn destroy_qp(&self, qp: &QpShared) {
        if qp.qp_type() == crate::types::QpType::Ud {
            self.detach_all_mcast(qp.qpn());
        }
        qp.lock().destroy(&self.ctx());
        self.qps.remove(qp);
    }

    /// Tests: the QPN and MR key index tried next (to reach the wraps).
    pub(crate) fn set_next_ids(&self, qpn: u32, mr_index: u32) {
        let n = qpn.saturating_sub(FIRST_QPN);
        self.next_qpn.store(n, Ordering::Relaxed);
        self.mrs.set_next_index(mr_index);
    }

    /// `ibv_modify_qp`.
    pub(crate) fn modify_qp(&self, qp: &QpShared, attr: &QpAttr) -> Result<()> {
        qp.lock().modify(&self.ctx(), attr)
    }

    /// `ibv_post_send` (`srqns`: an XRC initiator's remote SRQ of each WR;
    /// `batch`: all or nothing, the extended API's
    /// `ibv_wr_complete`): queue, then transmit — at once (inline
    /// progress), unless the doorbell may wait for more ([`doorbell`]).
    pub(crate) fn post_send(
        self: &Arc<Self>,
        qp: &Arc<QpShared>,
        wrs: &[SendWr<'_>],
        srqns: &[u32],
        batch: bool,
    ) -> PostResult {
        let ctx = self.ctx();
        let mut l = qp.lock();
        let r = if batch {
            l.queue_batch(&ctx, wrs, srqns)
        } else {
            l.queue_sends(&ctx, wrs, srqns)
        };
        if batch && r.is_err() {
            return r; // nothing was queued
        }
        if !self.doorbells.hold(self, qp, &mut l) {
            TxQueue::with(&ctx, |tx| l.transmit(&ctx, tx));
        }
        r
    }

    /// `ibv_post_recv`.
    pub(crate) fn post_recv(&self, qp: &QpShared, wrs: &[RecvWr<'_>]) -> PostResult {
        qp.lock().post_recv(&self.ctx(), wrs)
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }
}

impl Driver for DeviceInner {
    fn ring_doorbells(&self) {
        self.doorbells.ring(self);
    }
    fn poll_empty(&self) {
        self.receiver.poll(self);
    }
    fn poll_done(&self) {
        self.receiver.poll_done(self);
    }
}

/// The running device: its shared part and its threads. Dropping it stops
/// them.
pub(crate) struct Running {
    pub(crate) inner: Arc<DeviceInner>,
    threads: Vec<JoinHandle<()>>,
    /// Tells the `softrdma-stats` thread to stop (and remove the file).
    publisher: Arc<(Mutex<bool>, Condvar)>,
    pub(crate) published: Option<std::path::PathBuf>,
}

impl Running {
    /// Start a device on `link`: the receive and timer threads, and the
    /// counters' publisher if publishing is on. Fails (with the errno) when
    /// a descriptor or a thread cannot be had.
    pub(crate) fn start(link: Arc<dyn Link>) -> std::io::Result<Running> {
        // Built first, so that a failure below stops what was started.
        let mut r = Running {
            inner: Arc::new(DeviceInner::new(link)?),
            threads: Vec::new(),
            publisher: Arc::new((Mutex::new(false), Condvar::new())),
            published: None,
        };
        let d = r.inner.clone();
        r.threads.push(spawn("softrdma-rx", move || rx::run(&d))?);
        let d = r.inner.clone();
        r.threads
            .push(spawn("softrdma-timer", move || timer::run(&d))?);
        if let Some(dir) = publish::stats_dir() {
            match publish::Publication::create(&dir, "softrdma0", r.inner.local) {
                Ok(p) => {
                    r.published = Some(p.path().to_owned());
                    let (d, stop) = (r.inner.clone(), r.publisher.clone());
                    r.threads
                        .push(spawn("softrdma-stats", move || publish_loop(&d, p, &stop))?);
                }
                Err(e) => log!(Debug, "counters not published in {}: {e}", dir.display()),
            }
        }
        Ok(r)
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name(name.into()).spawn(f)
}

impl Drop for Running {
    fn drop(&mut self) {
        self.inner.closing.store(true, Ordering::Release);
        self.inner.link.close();
        self.inner.timers.shutdown();
        *lock(&self.publisher.0) = true;
        self.publisher.1.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The `softrdma-stats` thread: refresh the published counters every
/// `PUBLISH_INTERVAL` (sleeping in between) until the device is dropped; the
/// file goes with the publication. The directory's stale files are swept
/// here, once per process: never on the device-open path.
fn publish_loop(dev: &DeviceInner, p: publish::Publication, stop: &(Mutex<bool>, Condvar)) {
    let store = || {
        p.store(
            &stats::snapshot(dev),
            &stats::mr_snapshot(dev, publish::MR_SLOTS),
        )
    };
    store();
    p.sweep_once(|| *lock(&stop.0));
    let mut stopped = lock(&stop.0);
    while !*stopped {
        store();
        stopped = wait_timeout(&stop.1, stopped, publish::PUBLISH_INTERVAL);
    }
}
