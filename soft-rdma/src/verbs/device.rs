//! The device: one RoCEv2 endpoint (a [`Link`]), the tables that map QPNs and
//! keys to objects, and the two threads that run when the application is not
//! in the library: the receiver (blocks in `recv`) and the timer thread
//! (sleeps until the next retransmission deadline). Neither spins.

use super::{Errno, Gid, Mtu, Result};
use crate::engine::{rx, timer::Timers};
use crate::transport::{self, Link};
use crate::verbs::mr::MrShared;
use crate::verbs::qp::QpShared;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;

/// Limits, modelled on rxe (rxe_param.h).
pub const MAX_QP: usize = 1 << 16;
pub const MAX_MR: usize = 1 << 16;
pub const MAX_CQE: usize = 1 << 16;
pub const MAX_QP_WR: u32 = 1 << 14;
pub const MAX_SGE: u32 = 32;
pub const MAX_INLINE: u32 = 256;
pub const MAX_MSG: u64 = 8 << 20;
pub const MAX_RD_ATOMIC: u8 = 128;

/// `ibv_device_attr` (the part programs look at).
#[derive(Debug, Clone)]
pub struct DeviceAttr {
    pub fw_ver: &'static str,
    pub node_guid: u64,
    pub vendor_id: u32,
    pub max_qp: usize,
    pub max_qp_wr: u32,
    pub max_sge: u32,
    pub max_cq: usize,
    pub max_cqe: usize,
    pub max_mr: usize,
    pub max_mr_size: u64,
    pub max_qp_rd_atom: u8,
    pub max_qp_init_rd_atom: u8,
    pub max_inline: u32,
    pub max_msg: u64,
    pub phys_port_cnt: u8,
    pub odp: OdpCaps,
}

/// `ibv_odp_caps`: explicit and implicit ODP for RC (all ops) and UD (SEND/RECV).
#[derive(Debug, Clone, Copy)]
pub struct OdpCaps {
    pub general: u64,
    pub rc: u32,
    pub uc: u32,
    pub ud: u32,
}

/// `ibv_port_attr` (the part programs look at).
#[derive(Debug, Clone)]
pub struct PortAttr {
    pub state_active: bool,
    pub max_mtu: Mtu,
    pub active_mtu: Mtu,
    pub gid_tbl_len: u32,
    pub lid: u16,
}

pub use super::stats::Stats;

pub(crate) struct DeviceInner {
    pub(crate) link: Arc<dyn Link>,
    pub(crate) local: SocketAddr,
    active_mtu: Mtu,
    pub(crate) gid: Gid,
    pub(crate) mm: odp::MmGet,
    pub(crate) qps: RwLock<HashMap<u32, Arc<QpShared>>>,
    pub(crate) mrs: RwLock<HashMap<u32, Arc<MrShared>>>,
    pub(crate) timers: Timers,
    pub(crate) receiver: crate::engine::rx::Receiver,
    pub(crate) doorbells: crate::engine::doorbell::Doorbells,
    pub(crate) stats: Stats,
    /// Asynchronous events, and an eventfd readable while there are some.
    events: Mutex<std::collections::VecDeque<super::AsyncEvent>>,
    events_fd: std::os::fd::OwnedFd,
    next_qpn: AtomicU32,
    next_mr: AtomicU32,
    next_pd: AtomicU32,
    closing: AtomicBool,
}

impl DeviceInner {
    pub(crate) fn new_qpn(&self) -> u32 {
        // QPN 0 and 1 are the special QPs; keep within 24 bits.
        (self.next_qpn.fetch_add(1, Ordering::Relaxed) % 0x00ff_fff0) + 0x11
    }

    /// A key: 24-bit index (unique) and 8 unpredictable bits, so a peer cannot
    /// guess a key from another (a stale or forged R_Key mostly misses).
    pub(crate) fn new_mr_key(&self) -> u32 {
        let index = self.next_mr.fetch_add(1, Ordering::Relaxed) & 0x00ff_ffff;
        (index << 8) | u32::from(crate::sys::random_byte())
    }

    pub(crate) fn new_pd_id(&self) -> u32 {
        self.next_pd.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub(crate) fn qp(&self, qpn: u32) -> Option<Arc<QpShared>> {
        self.qps
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&qpn)
            .cloned()
    }

    pub(crate) fn mr(&self, key: u32) -> Option<Arc<MrShared>> {
        let mr = self
            .mrs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(key >> 8))
            .cloned()?;
        (mr.key == key).then_some(mr)
    }

    /// Queue an asynchronous event for `Device::get_async_event`.
    pub(crate) fn raise(&self, ev: super::AsyncEvent) {
        crate::log::log!(Info, "async event: {ev:?}");
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(ev);
        crate::sys::eventfd_signal(&self.events_fd);
    }

    /// The port's active MTU (see `Device::port_attr`).
    pub(crate) fn active_mtu(&self) -> Mtu {
        self.active_mtu
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }
}

/// An open device (`ibv_context`). Dropping it stops its threads.
pub struct Device {
    pub(crate) inner: Arc<DeviceInner>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Tells the `softrdma-stats` thread to stop (and remove the file).
    publisher: Arc<(Mutex<bool>, Condvar)>,
    published: Option<std::path::PathBuf>,
}

impl Device {
    /// Open a device on the address the documented rule picks
    /// (`SOFTRDMA_ADDR`, else a per-process loopback address), injecting the
    /// faults `SOFTRDMA_FAULTS` names on receive, recording to `SOFTRDMA_PCAP`
    /// if set.
    pub fn open() -> std::io::Result<Device> {
        // Parse the fault spec before binding: a bad one is the error to report.
        if let Ok(spec) = std::env::var(transport::faults::ENV) {
            spec.parse::<transport::FaultConfig>()?;
        }
        let link = transport::addr::bind_default()?;
        // The capture (outermost) records what the device receives, after the faults.
        let link = transport::faults::from_env(Box::new(link))?;
        let link = transport::pcap::from_env(link)?;
        Ok(Device::with_link(Arc::from(link)))
    }

    /// Open a device on a given link (tests: loopback hubs, fault injection).
    pub fn with_link(link: Arc<dyn Link>) -> Device {
        let local = link.local();
        let active_mtu = link.mtu().map_or(Mtu::M1024, Mtu::fitting);
        let inner = Arc::new(DeviceInner {
            link,
            local,
            active_mtu,
            gid: Gid::from_ip(local.ip()),
            mm: odp::Mm::current(),
            qps: RwLock::new(HashMap::new()),
            mrs: RwLock::new(HashMap::new()),
            timers: Timers::default(),
            receiver: crate::engine::rx::Receiver::new(),
            doorbells: Default::default(),
            stats: Stats::default(),
            events: Mutex::new(Default::default()),
            events_fd: crate::sys::eventfd().expect("eventfd for async events"),
            next_qpn: AtomicU32::new(0),
            next_mr: AtomicU32::new(1),
            next_pd: AtomicU32::new(0),
            closing: AtomicBool::new(false),
        });
        let rx = {
            let d = inner.clone();
            std::thread::Builder::new()
                .name("softrdma-rx".into())
                .spawn(move || rx::run(&d))
                .expect("spawn softrdma-rx")
        };
        let tm = {
            let d = inner.clone();
            std::thread::Builder::new()
                .name("softrdma-timer".into())
                .spawn(move || crate::engine::timer::run(&d))
                .expect("spawn softrdma-timer")
        };
        let mut threads = vec![rx, tm];
        let publisher = Arc::new((Mutex::new(false), Condvar::new()));
        let mut published = None;
        if let Some(dir) = super::publish::stats_dir() {
            match super::publish::Publication::create(&dir, "softrdma0", local) {
                Ok(p) => {
                    published = Some(p.path().to_owned());
                    let (d, stop) = (inner.clone(), publisher.clone());
                    threads.push(
                        std::thread::Builder::new()
                            .name("softrdma-stats".into())
                            .spawn(move || publish_loop(&d, p, &stop))
                            .expect("spawn softrdma-stats"),
                    );
                }
                Err(e) => {
                    crate::log::log!(Debug, "counters not published in {}: {e}", dir.display())
                }
            }
        }
        Device {
            inner,
            threads: Mutex::new(threads),
            publisher,
            published,
        }
    }

    pub fn name(&self) -> &'static str {
        "softrdma0"
    }

    /// The local endpoint; its IP is GID index 1.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local
    }

    /// GID table: 0 = link-local (RoCEv1-style, derived from the GID), 1 = the
    /// endpoint's address as a RoCEv2 GID (IPv4-mapped for IPv4).
    pub fn gid(&self, index: u32) -> Result<Gid> {
        match index {
            0 => {
                let mut g = [0u8; 16];
                g[0] = 0xfe;
                g[1] = 0x80;
                g[8..].copy_from_slice(&self.inner.gid.0[8..]);
                Ok(Gid(g))
            }
            1 => Ok(self.inner.gid),
            _ => Err(Errno::EINVAL),
        }
    }

    pub fn attr(&self) -> DeviceAttr {
        let g = self.inner.gid.0;
        DeviceAttr {
            fw_ver: "0.1.0",
            node_guid: u64::from_be_bytes([
                g[10] ^ 0x02,
                g[11],
                g[12],
                0xff,
                0xfe,
                g[13],
                g[14],
                g[15],
            ]),
            vendor_id: 0xffffff,
            max_qp: MAX_QP,
            max_qp_wr: MAX_QP_WR,
            max_sge: MAX_SGE,
            max_cq: MAX_QP,
            max_cqe: MAX_CQE,
            max_mr: MAX_MR,
            max_mr_size: u64::MAX,
            max_qp_rd_atom: MAX_RD_ATOMIC,
            max_qp_init_rd_atom: MAX_RD_ATOMIC,
            max_inline: MAX_INLINE,
            max_msg: MAX_MSG,
            phys_port_cnt: 1,
            odp: OdpCaps {
                general: 1 | 2,
                rc: 1 | 2 | 4 | 8 | 16 | 32,
                uc: 1 | 2 | 4 | 32,
                ud: 1 | 2 | 32,
            },
        }
    }

    /// Active MTU: packets leave with DF set, so they must fit the interface
    /// the device's address is on — the largest IB MTU not above its MTU
    /// minus 80 header bytes, as rxe: 4096 on `lo` (65536) or a 9000-byte
    /// link, 1024 on 1500-byte Ethernet; 1024 if the interface is unknown.
    pub fn port_attr(&self) -> PortAttr {
        PortAttr {
            state_active: true,
            max_mtu: Mtu::M4096,
            active_mtu: self.inner.active_mtu(),
            gid_tbl_len: 2,
            lid: 0,
        }
    }

    /// Every counter now: the engine's, the link's, the ODP regions', the
    /// fault injector's. `Display` prints a counters table.
    pub fn stats(&self) -> super::DeviceStats {
        super::stats::snapshot(&self.inner)
    }

    /// The file this device's counters are published in (`softrdma stats`),
    /// if publishing is on.
    pub fn stats_path(&self) -> Option<&std::path::Path> {
        self.published.as_deref()
    }

    /// How the ODP regions learn about unmaps (userfaultfd or fallback).
    pub fn odp_source(&self) -> odp::InvalidationSource {
        self.inner.mm.source().clone()
    }

    /// `ibv_get_async_event`, non-blocking; wait for [`Device::async_fd`] to
    /// become readable to block.
    pub fn get_async_event(&self) -> Option<super::AsyncEvent> {
        let mut q = self.inner.events.lock().unwrap_or_else(|e| e.into_inner());
        let ev = q.pop_front();
        if q.is_empty() {
            crate::sys::eventfd_drain(&self.inner.events_fd);
        }
        ev
    }

    /// The descriptor that is readable while async events are queued.
    pub fn async_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.inner.events_fd.as_raw_fd()
    }

    pub fn alloc_pd(&self) -> super::Pd {
        super::Pd::new(self.inner.clone())
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        self.inner.closing.store(true, Ordering::Release);
        self.inner.link.close();
        self.inner.timers.shutdown();
        *self.publisher.0.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.publisher.1.notify_all();
        for t in self
            .threads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            let _ = t.join();
        }
    }
}

/// The `softrdma-stats` thread: refresh the published counters every
/// `PUBLISH_INTERVAL` (sleeping in between) until the device is dropped; the
/// file goes with the publication.
fn publish_loop(dev: &DeviceInner, p: super::publish::Publication, stop: &(Mutex<bool>, Condvar)) {
    let mut stopped = stop.0.lock().unwrap_or_else(|e| e.into_inner());
    while !*stopped {
        p.store(&super::stats::snapshot(dev));
        stopped = stop
            .1
            .wait_timeout(stopped, super::publish::PUBLISH_INTERVAL)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}
