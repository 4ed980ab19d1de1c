//! What every id shares: the device's CM and `ibv_context` (opened on the
//! first id, kept for the process's life, as librdmacm keeps its device
//! list), the table from CM communication IDs to our ids, and the C
//! wrappers of ids and channels.
//!
//! Locks, in this order: `channel::TRANSLATE` (events being turned into C
//! events), `IDS` (the table), one id's `st`; a channel's queue is the CM
//! crate's leaf. No lock is held across a wait for an event.

use crate::ffi::rdmacm_bindings::*;
use crate::ffi::*;
use crate::sync::lock;
use soft_rdma::verbs::Gid;
use soft_rdma_cm::{Cm, CmConfig, CmId, EventChannel, Remote};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Condvar, Mutex};

pub struct Global {
    pub cm: Cm,
    /// Our device's context: every id's `verbs`.
    pub ctx: *mut ibv_context,
    pub gid: Gid,
    /// The port's active MTU (`enum ibv_mtu`).
    pub mtu: u32,
    pub max_rd_atomic: u8,
    /// The PD of ids given none (librdmacm's per-device PD).
    pub pd: Mutex<usize>,
    /// The XRC domain of XRC_RECV ids (librdmacm's per-device one).
    pub xrcd: Mutex<usize>,
}

// SAFETY: `ctx` is a context that lives for the process; its C struct is
// read-only after open and our verbs on it are thread-safe.
unsafe impl Send for Global {}
// SAFETY: as above.
unsafe impl Sync for Global {}

/// The CM and context (or the errno of a failed open) and the fork
/// generation they belong to. One is leaked per generation: a forked child
/// opens its own (`device.rs`) and must never drop its parent's, whose
/// threads it does not have.
static GLOBAL: Mutex<Option<(u32, &'static Result<Global, i32>)>> = Mutex::new(None);

/// The CM and context, made on first use (and on first use after a fork,
/// forgetting the parent's ids); the errno of a failed open.
pub fn global() -> Result<&'static Global, i32> {
    let mut g = lock(&GLOBAL);
    let now = crate::device::generation();
    let r = match *g {
        Some((gen, r)) if gen == now => r,
        inherited => {
            if inherited.is_some() {
                *lock(&IDS) = None;
            }
            let r: &'static _ = Box::leak(Box::new(open()));
            *g = Some((now, r));
            r
        }
    };
    r.as_ref().map_err(|e| *e)
}

/// This process's CM if it has opened one since its last fork.
fn current() -> Option<&'static Global> {
    match *lock(&GLOBAL) {
        Some((gen, Ok(g))) if gen == crate::device::generation() => Some(g),
        _ => None,
    }
}

fn open() -> Result<Global, i32> {
    let dev = crate::device::soft().map_err(|e| crate::device::open_errno(&e))?;
    let cm = Cm::new(&dev, CmConfig::default()).map_err(|e| e.0)?;
    // SAFETY: our own device pointer; the context is never closed.
    let ctx = unsafe { crate::context::shim_ibv_open_device(crate::device::c_device()) };
    if ctx.is_null() {
        return Err(libc::ENODEV);
    }
    let port = crate::context::port_attr(&dev);
    // Once per process image: a forked child inherits the registration.
    static FAREWELL: std::sync::Once = std::sync::Once::new();
    // SAFETY: registers a function of no arguments that only takes our
    // locks and sends MADs.
    FAREWELL.call_once(|| unsafe {
        libc::atexit(farewell);
    });
    Ok(Global {
        gid: cm.gid(),
        cm,
        ctx,
        mtu: port.active_mtu,
        max_rd_atomic: dev.attr().max_qp_rd_atom,
        pd: Mutex::new(0),
        xrcd: Mutex::new(0),
    })
}

impl Global {
    /// The PD for ids given none, allocated once.
    pub fn default_pd(&self) -> Result<*mut ibv_pd, i32> {
        let mut g = lock(&self.pd);
        if *g == 0 {
            // SAFETY: our live context.
            let pd = unsafe { crate::pd::shim_ibv_alloc_pd(self.ctx) };
            if pd.is_null() {
                return Err(libc::ENOMEM);
            }
            *g = pd as usize;
        }
        Ok(*g as *mut ibv_pd)
    }
}

/// What an id or channel made before this process forked fails with (as
/// the verbs objects of that time: `context::FORKED`).
pub const FORKED: i32 = crate::context::FORKED;

/// Whether `id` was made before this process forked: its CM is the
/// parent's, whose agent thread this process lacks and whose socket it must
/// not send on.
///
/// # Safety
/// `id` is NULL or an id this library made (here or before a fork).
pub unsafe fn forked_id(id: *mut rdma_cm_id) -> bool {
    // SAFETY: (caller) a live id when not NULL.
    !id.is_null() && unsafe { ShimId::from_c(id) }.gen != crate::device::generation()
}

/// Whether `ch` was made before this process forked (see [`forked_id`]).
///
/// # Safety
/// `ch` is NULL or a channel this library made (here or before a fork).
pub unsafe fn forked_channel(ch: *mut rdma_event_channel) -> bool {
    // SAFETY: (caller) a live channel when not NULL.
    !ch.is_null() && unsafe { &*(ch as *const ShimChannel) }.gen != crate::device::generation()
}

/// An `rdma_event_channel`: its `fd` is the CM channel's descriptor,
/// readable while an event waits.
#[repr(C)]
pub struct ShimChannel {
    pub c: rdma_event_channel,
    pub chan: EventChannel,
    /// The fork generation it was made in (`device.rs`).
    pub gen: u32,
}

const _: () = assert!(std::mem::offset_of!(ShimChannel, c) == 0);

/// Where an id is, as librdmacm's state checks need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Phase {
    #[default]
    Idle,
    Bound,
    AddrResolved,
    RouteResolved,
    Listening,
    Connecting,
    /// Passive: the request was delivered; accept or reject.
    Requested,
    Connected,
    Disconnected,
}

/// What the two ends agreed (from the user's parameters and the peer's).
#[derive(Debug, Clone, Copy, Default)]
pub struct Agreed {
    pub responder_resources: u8,
    pub initiator_depth: u8,
    pub retry_count: u8,
    pub rnr_retry_count: u8,
}

#[derive(Default)]
pub struct IdState {
    pub phase: Phase,
    pub src: Option<SocketAddr>,
    pub dst: Option<SocketAddr>,
    /// The peer's device (resolved address, or the requester).
    pub peer: Option<Gid>,
    pub claimed: bool,
    /// Our first PSN, sent in the REQ or REP.
    pub psn: u32,
    pub agreed: Agreed,
    pub remote: Option<Remote>,
    /// The REQ's path MTU (IBA encoding), passive side.
    pub remote_mtu: Option<u8>,
    pub tos: u8,
    pub ack_timeout: Option<u8>,
    pub reuseaddr: bool,
    pub afonly: bool,
    /// Events handed out for this id and not acknowledged yet.
    pub outstanding: u32,
    /// `rdma_create_ep`'s QP attributes for `rdma_get_request`.
    pub ep_init: Option<Box<ibv_qp_init_attr>>,
    /// The route `id->route.path_rec` points at.
    pub path: Option<Box<ibv_sa_path_rec>>,
    /// CQs and channels `rdma_create_qp` made, destroyed with the QP.
    pub own_cqs: bool,
    /// The number of the QP `rdma_create_qp` made: `id->qp` may dangle
    /// (rping destroys it with `ibv_destroy_qp`), so the number is checked
    /// against the live QPs before the pointer is used.
    pub qp_num: Option<u32>,
    /// The REP's private data, for the ESTABLISHED that the RTU we send for
    /// an id with a QP brings.
    pub rep_data: Option<Vec<u8>>,
    /// The user sent the RTU (`rdma_establish`): the CM's ESTABLISHED for
    /// it is not reported (the kernel reports none).
    pub quiet_established: bool,
}

/// An `rdma_cm_id`. `c` comes first: the C pointer converts back by a cast.
#[repr(C)]
pub struct ShimId {
    pub c: rdma_cm_id,
    pub cm: CmId,
    pub st: Mutex<IdState>,
    pub acked: Condvar,
    /// Made with no channel: its calls wait for their own events and it
    /// owns `c.channel`.
    pub sync: bool,
    /// The fork generation it was made in (`device.rs`).
    pub gen: u32,
}

const _: () = assert!(std::mem::offset_of!(ShimId, c) == 0);

impl ShimId {
    /// # Safety
    /// `id` is a live id this library made.
    pub unsafe fn from_c<'a>(id: *mut rdma_cm_id) -> &'a ShimId {
        // SAFETY: (caller) `id` is the first member of a live ShimId.
        unsafe { &*(id as *const ShimId) }
    }

    pub fn st(&self) -> std::sync::MutexGuard<'_, IdState> {
        lock(&self.st)
    }

    pub fn is_ud(&self) -> bool {
        self.c.qp_type == IBV_QPT_UD
    }
}

/// CM communication ID → our id (as an address): how events find ids.
static IDS: Mutex<Option<HashMap<u32, usize>>> = Mutex::new(None);

pub fn register(local: u32, id: *mut ShimId) {
    lock(&IDS)
        .get_or_insert_with(HashMap::new)
        .insert(local, id as usize);
}

pub fn unregister(local: u32) {
    if let Some(m) = lock(&IDS).as_mut() {
        m.remove(&local);
    }
}

pub fn lookup(local: u32) -> Option<*mut ShimId> {
    lock(&IDS).as_ref()?.get(&local).map(|p| *p as *mut ShimId)
}

/// At `exit`: what the kernel does for a process whose ids are still open
/// when its rdma_cm file closes — DREQ for every connection, REJ for every
/// request not answered — so that peers hear DISCONNECTED (or REJECTED)
/// rather than nothing. (A process killed outright says nothing: its peers
/// learn from their QPs' errors.) Run on a thread of its own: the exiting
/// thread's thread-locals (the device's lock bookkeeping) are gone by now.
extern "C" fn farewell() {
    let mut t: libc::pthread_t = 0;
    // SAFETY: a plain pthread running `farewell_thread`, joined at once.
    unsafe {
        if libc::pthread_create(
            &mut t,
            std::ptr::null(),
            farewell_thread,
            std::ptr::null_mut(),
        ) == 0
        {
            libc::pthread_join(t, std::ptr::null_mut());
        }
    }
}

/// How long an exiting process waits for its DREQs' answers.
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// The id table stays locked meanwhile, so no id is freed under us; then
/// the process lingers (at most [`LINGER`]) until every DREQ, its own and
/// those of ids destroyed before, is answered.
extern "C" fn farewell_thread(_: *mut c_void) -> *mut c_void {
    // A forked child that opened no CM of its own: the ids and the CM are
    // its parent's, and saying goodbye for them is the parent's business.
    let Some(g) = current() else {
        return std::ptr::null_mut();
    };
    let ids = lock(&IDS);
    for p in ids.iter().flat_map(|m| m.values()) {
        // SAFETY: registered ids are live; destroy_id unregisters (under
        // this lock) before it frees.
        let id = unsafe { &*(*p as *const ShimId) };
        let phase = lock(&id.st).phase;
        let _ = match phase {
            Phase::Connected | Phase::Connecting if !id.is_ud() => id.cm.disconnect(),
            Phase::Requested => id.cm.reject(&[]),
            _ => Ok(()),
        };
    }
    drop(ids);
    g.cm.linger(LINGER);
    std::ptr::null_mut()
}

/// A random 24-bit PSN, as the kernel's rdma_cm picks one.
pub fn random_psn() -> u32 {
    let mut b = [0u8; 4];
    // SAFETY: getrandom into a 4-byte local buffer.
    let n = unsafe { libc::getrandom(b.as_mut_ptr() as *mut c_void, 4, 0) };
    if n != 4 {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(1);
        return t & 0xff_ffff;
    }
    u32::from_ne_bytes(b) & 0xff_ffff
}
