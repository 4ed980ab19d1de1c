//! Event channels and events: `rdma_create_event_channel`,
//! `rdma_get_cm_event` (blocking, or EAGAIN when the descriptor is
//! O_NONBLOCK and nothing waits), `rdma_ack_cm_event`, `rdma_event_str`.
//!
//! A CM event becomes an `rdma_cm_event` here, with librdmacm's user-space
//! steps: a CONNECT_REQUEST makes the new id (addresses from the rdma_cm
//! IP header, which is stripped from the private data); a CONNECT_RESPONSE
//! for an id with a QP moves the QP to RTR and RTS and sends the RTU, and
//! the user sees ESTABLISHED; DISCONNECTED moves the QP to the error state.

use super::global::{global, lookup, register, Phase, ShimChannel, ShimId};
use super::{addr, fail, qp};
use crate::ffi::rdmacm_bindings::*;
use crate::ffi::*;
use soft_rdma_cm::wire::ip::IP_HEADER_LEN;
use soft_rdma_cm::wire::IpHeader;
use soft_rdma_cm::{Event, EventChannel, EventKind};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Mutex;
use std::time::Duration;

/// The codes of the events this library queues itself
/// (`EventKind::Local`): the `rdma_cm_event_type` they become.
pub const LOCAL_ADDR_RESOLVED: u32 = RDMA_CM_EVENT_ADDR_RESOLVED;
pub const LOCAL_ADDR_ERROR: u32 = RDMA_CM_EVENT_ADDR_ERROR;
pub const LOCAL_ROUTE_RESOLVED: u32 = RDMA_CM_EVENT_ROUTE_RESOLVED;

/// An event handed out: the C struct first, then what it points at.
#[repr(C)]
struct ShimEvent {
    c: rdma_cm_event,
    data: Vec<u8>,
    /// The id whose count of unacknowledged events this one is in.
    owner: *mut ShimId,
}

const _: () = assert!(std::mem::offset_of!(ShimEvent, c) == 0);

/// A channel whose descriptor starts blocking, as librdmacm's: whether the
/// user made it O_NONBLOCK is how `rdma_get_cm_event` knows not to wait.
/// (The CM reads the descriptor only to drain a counter it knows is not 0,
/// so a blocking descriptor never blocks it.)
pub fn new_channel() -> Result<*mut ShimChannel, i32> {
    let chan = EventChannel::new().map_err(|e| e.raw_os_error().unwrap_or(libc::ENOMEM))?;
    let fd = chan.as_fd().as_raw_fd();
    // SAFETY: flag changes on the channel's own descriptor.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        if fl < 0 || libc::fcntl(fd, libc::F_SETFL, fl & !libc::O_NONBLOCK) < 0 {
            return Err(libc::EMFILE);
        }
    }
    Ok(Box::into_raw(Box::new(ShimChannel {
        c: rdma_event_channel { fd },
        chan,
        gen: crate::device::generation(),
    })))
}

/// # Safety
/// `ch` came from [`new_channel`] and no id uses it any more.
pub unsafe fn free_channel(ch: *mut rdma_event_channel) {
    // SAFETY: (caller) a channel Box::into_raw made.
    drop(unsafe { Box::from_raw(ch as *mut ShimChannel) });
}

pub unsafe extern "C" fn shim_rdma_create_event_channel() -> *mut rdma_event_channel {
    if let Err(e) = global() {
        return fail_null(e);
    }
    match new_channel() {
        Ok(c) => c as *mut rdma_event_channel,
        Err(e) => fail_null(e),
    }
}

pub unsafe extern "C" fn shim_rdma_destroy_event_channel(ch: *mut rdma_event_channel) {
    if !ch.is_null() {
        // SAFETY: (caller) a channel of ours no id uses any more.
        unsafe { free_channel(ch) };
    }
}

fn nonblocking(fd: i32) -> bool {
    // SAFETY: F_GETFL on the channel's descriptor reads its flags only.
    let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    fl >= 0 && fl & libc::O_NONBLOCK != 0
}

/// The next event of a channel for a live id. Blocks unless the
/// descriptor is O_NONBLOCK (then EAGAIN when none waits) or `timeout`.
///
/// # Safety
/// `ch` is a live channel of ours.
pub unsafe fn next_event(
    ch: *mut rdma_event_channel,
    timeout: Option<Duration>,
) -> Result<*mut rdma_cm_event, i32> {
    let g = global()?;
    // SAFETY: (caller) a live ShimChannel.
    let ch = unsafe { &*(ch as *const ShimChannel) };
    let timeout = if nonblocking(ch.c.fd) {
        Some(Duration::ZERO)
    } else {
        timeout
    };
    loop {
        let Some(e) = ch.chan.get(timeout, &g.cm) else {
            return Err(libc::EAGAIN);
        };
        // SAFETY: the ids the table names are live until unregistered.
        if let Some(ev) = unsafe { translate(e) } {
            return Ok(ev);
        }
    }
}

pub unsafe extern "C" fn shim_rdma_get_cm_event(
    ch: *mut rdma_event_channel,
    event: *mut *mut rdma_cm_event,
) -> c_int {
    if ch.is_null() || event.is_null() {
        return fail(libc::EINVAL);
    }
    // SAFETY: (caller) a channel of ours.
    if unsafe { super::global::forked_channel(ch) } {
        return fail(super::global::FORKED);
    }
    // SAFETY: (caller) a live channel of ours.
    match unsafe { next_event(ch, None) } {
        Ok(ev) => {
            // SAFETY: (caller) `event` is writable.
            unsafe { *event = ev };
            0
        }
        Err(e) => fail(e),
    }
}

pub unsafe extern "C" fn shim_rdma_ack_cm_event(event: *mut rdma_cm_event) -> c_int {
    if event.is_null() {
        return fail(libc::EINVAL);
    }
    // SAFETY: (caller) an event rdma_get_cm_event handed out, acked once.
    let ev = unsafe { Box::from_raw(event as *mut ShimEvent) };
    if !ev.owner.is_null() {
        // SAFETY: an id waits for its events' acknowledgements before it
        // is freed (rdma_destroy_id), so the owner is live.
        let owner = unsafe { &*ev.owner };
        let mut st = owner.st();
        st.outstanding = st.outstanding.saturating_sub(1);
        owner.acked.notify_all();
    }
    0
}

static NAMES: [&str; 16] = [
    "RDMA_CM_EVENT_ADDR_RESOLVED\0",
    "RDMA_CM_EVENT_ADDR_ERROR\0",
    "RDMA_CM_EVENT_ROUTE_RESOLVED\0",
    "RDMA_CM_EVENT_ROUTE_ERROR\0",
    "RDMA_CM_EVENT_CONNECT_REQUEST\0",
    "RDMA_CM_EVENT_CONNECT_RESPONSE\0",
    "RDMA_CM_EVENT_CONNECT_ERROR\0",
    "RDMA_CM_EVENT_UNREACHABLE\0",
    "RDMA_CM_EVENT_REJECTED\0",
    "RDMA_CM_EVENT_ESTABLISHED\0",
    "RDMA_CM_EVENT_DISCONNECTED\0",
    "RDMA_CM_EVENT_DEVICE_REMOVAL\0",
    "RDMA_CM_EVENT_MULTICAST_JOIN\0",
    "RDMA_CM_EVENT_MULTICAST_ERROR\0",
    "RDMA_CM_EVENT_ADDR_CHANGE\0",
    "RDMA_CM_EVENT_TIMEWAIT_EXIT\0",
];

pub unsafe extern "C" fn shim_rdma_event_str(event: rdma_cm_event_type) -> *const c_char {
    NAMES
        .get(event as usize)
        .copied()
        .unwrap_or("UNKNOWN EVENT\0")
        .as_ptr() as *const c_char
}

/// Serialises translations: a CONNECT_RESPONSE's QP moves and RTU happen
/// once, whichever thread reads it.
static TRANSLATE: Mutex<()> = Mutex::new(());

/// Runs `f` with no event being turned into a C event meanwhile: once an
/// id is unregistered this way, no translation is touching it, and none
/// will.
pub fn quiesced<R>(f: impl FnOnce() -> R) -> R {
    let _g = crate::sync::lock(&TRANSLATE);
    f()
}

fn new_event(owner: *mut ShimId, id: *mut ShimId, kind: u32, status: i32) -> Box<ShimEvent> {
    Box::new(ShimEvent {
        c: rdma_cm_event {
            id: id as *mut rdma_cm_id,
            listen_id: std::ptr::null_mut(),
            event: kind,
            status,
            param: Default::default(),
        },
        data: vec![],
        owner,
    })
}

/// Turns a CM event into the C event the user sees; None for an event of
/// an id that is gone (it is dropped).
///
/// # Safety
/// Ids in the table are live.
unsafe fn translate(e: Event) -> Option<*mut rdma_cm_event> {
    let _g = crate::sync::lock(&TRANSLATE);
    if e.kind == EventKind::ConnectRequest {
        // SAFETY: (caller) the listener is live while registered.
        return unsafe { connect_request(e) };
    }
    let idp = lookup(e.id)?;
    // SAFETY: (caller) registered ids are live.
    let id = unsafe { &*idp };
    let ev = match e.kind {
        EventKind::Local(RDMA_CM_EVENT_MULTICAST_JOIN) => {
            let mut ev = new_event(idp, idp, RDMA_CM_EVENT_MULTICAST_JOIN, e.status);
            if !super::multicast::joined(id, &mut ev.c) {
                return None;
            }
            ev
        }
        EventKind::Local(code) => new_event(idp, idp, code, e.status),
        EventKind::ConnectResponse => {
            {
                let mut st = id.st();
                st.remote = e.remote;
                if let Some(r) = e.remote {
                    // The REP's view, turned to ours.
                    st.agreed.rnr_retry_count = r.rnr_retry_count;
                }
            }
            if id.c.qp.is_null() {
                let mut ev = new_event(idp, idp, RDMA_CM_EVENT_CONNECT_RESPONSE, 0);
                conn_param(&mut ev, &e, &e.private_data);
                ev
            } else {
                id.st().rep_data = Some(e.private_data.clone());
                // SAFETY: the id's QP is live while the id has it.
                match unsafe { qp::complete_connect(id) } {
                    // The RTU is sent: the CM's ESTABLISHED follows.
                    Ok(()) => return None,
                    Err(err) => {
                        let _ = id.cm.reject(&[]);
                        id.st().phase = Phase::Disconnected;
                        new_event(idp, idp, RDMA_CM_EVENT_CONNECT_ERROR, -err)
                    }
                }
            }
        }
        EventKind::Established => {
            let (quiet, rep) = {
                let mut st = id.st();
                st.phase = Phase::Connected;
                (
                    std::mem::take(&mut st.quiet_established),
                    st.rep_data.take(),
                )
            };
            if quiet {
                return None;
            }
            let mut ev = new_event(idp, idp, RDMA_CM_EVENT_ESTABLISHED, 0);
            let e = Event {
                private_data: rep.unwrap_or(e.private_data),
                remote: id.st().remote.or(e.remote),
                ..e
            };
            if id.is_ud() {
                if let Some(r) = e.remote {
                    id.st().remote = Some(r);
                    ud_param(&mut ev, id, r.qpn, r.qkey, &e.private_data);
                }
            } else {
                conn_param(&mut ev, &e, &e.private_data);
            }
            ev
        }
        EventKind::Rejected(_) => {
            id.st().phase = Phase::Disconnected;
            let mut ev = new_event(idp, idp, RDMA_CM_EVENT_REJECTED, e.status);
            conn_param(&mut ev, &e, &e.private_data);
            ev
        }
        EventKind::Unreachable => {
            id.st().phase = Phase::Disconnected;
            new_event(idp, idp, RDMA_CM_EVENT_UNREACHABLE, e.status)
        }
        EventKind::Disconnected => {
            id.st().phase = Phase::Disconnected;
            qp::to_error_if_live(id);
            new_event(idp, idp, RDMA_CM_EVENT_DISCONNECTED, 0)
        }
        EventKind::TimewaitExit => new_event(idp, idp, RDMA_CM_EVENT_TIMEWAIT_EXIT, 0),
        EventKind::ConnectRequest => return None,
    };
    id.st().outstanding += 1;
    // The private data pointer is into the Vec's heap buffer: it stays put.
    Some(Box::into_raw(ev).cast::<rdma_cm_event>())
}

/// Fills `param.conn` from a REQ/REP/RTU/REJ event: the peer's resources
/// seen from here (its initiator depth is our responder resources).
fn conn_param(ev: &mut ShimEvent, e: &Event, data: &[u8]) {
    ev.data = data.to_vec();
    let r = e.remote.unwrap_or_default();
    let p = rdma_conn_param {
        private_data: if ev.data.is_empty() {
            std::ptr::null()
        } else {
            ev.data.as_ptr() as *const c_void
        },
        private_data_len: ev.data.len().min(255) as u8,
        responder_resources: r.initiator_depth,
        initiator_depth: r.responder_resources,
        flow_control: 1,
        retry_count: r.retry_count,
        rnr_retry_count: r.rnr_retry_count,
        srq: r.srq as u8,
        qp_num: r.qpn,
    };
    // SAFETY: `param` is a union with room for `conn` (bindgen's field).
    unsafe { *ev.c.param.conn.as_mut() = p };
}

/// Fills `param.ud`: the peer's QP, Q_Key and an address to reach it.
fn ud_param(ev: &mut ShimEvent, id: &ShimId, qpn: u32, qkey: u32, data: &[u8]) {
    ev.data = data.to_vec();
    let peer = id.st().peer;
    let mut p = rdma_ud_param {
        private_data: if ev.data.is_empty() {
            std::ptr::null()
        } else {
            ev.data.as_ptr() as *const c_void
        },
        private_data_len: ev.data.len().min(255) as u8,
        ah_attr: Default::default(),
        qp_num: qpn,
        qkey,
    };
    if let Some(peer) = peer {
        p.ah_attr = qp::ah_to(peer, id.st().tos);
    }
    // SAFETY: `param` is a union with room for `ud` (bindgen's field).
    unsafe { *ev.c.param.ud.as_mut() = p };
}

/// A REQ (or SIDR_REQ) for a listener: the new id, the event on the
/// listener's channel.
///
/// # Safety
/// Registered ids are live.
unsafe fn connect_request(mut e: Event) -> Option<*mut rdma_cm_event> {
    let g = global().ok()?;
    let lp = lookup(e.listen_id?)?;
    // SAFETY: (caller) registered ids are live.
    let listener = unsafe { &*lp };
    let cm = e.new_id.take()?;
    let hdr = IpHeader::parse(&e.private_data).ok();
    let user = e.private_data.get(IP_HEADER_LEN..).unwrap_or(&[]).to_vec();
    let (lsrc, ps, qp_type, ctx, chan) = {
        let st = listener.st();
        (
            st.src,
            listener.c.ps,
            listener.c.qp_type,
            listener.c.context,
            listener.c.channel,
        )
    };
    let peer = cm.peer();
    let local = cm.local_id();
    let mut c = rdma_cm_id {
        verbs: g.ctx,
        channel: chan,
        context: ctx,
        qp: std::ptr::null_mut(),
        route: Default::default(),
        ps,
        port_num: 1,
        event: std::ptr::null_mut(),
        send_cq_channel: std::ptr::null_mut(),
        send_cq: std::ptr::null_mut(),
        recv_cq_channel: std::ptr::null_mut(),
        recv_cq: std::ptr::null_mut(),
        srq: std::ptr::null_mut(),
        // The device's PD, as librdmacm gives every id on the device.
        pd: g.default_pd().unwrap_or(std::ptr::null_mut()),
        qp_type,
    };
    let lport = lsrc.map_or(0, |a| a.port());
    let (src, dst) = match hdr {
        Some(h) => (Some(std::net::SocketAddr::new(h.dst, lport)), Some(h.src)),
        None => (lsrc, None),
    };
    // SAFETY: the route's address unions have room for either family.
    unsafe {
        if let Some(s) = src {
            addr::write(&mut c.route.addr.__bindgen_anon_1.src_addr, s);
        }
        if let Some(d) = dst {
            addr::write(&mut c.route.addr.__bindgen_anon_2.dst_addr, d);
        }
    }
    let remote = e.remote;
    let st = super::global::IdState {
        phase: Phase::Requested,
        src,
        dst,
        peer,
        psn: super::global::random_psn(),
        remote,
        remote_mtu: remote.and_then(|r| r.path_mtu),
        tos: listener.st().tos,
        // The REQ's terms, as the kernel CM keeps them from the request:
        // rdma_init_qp_attr before rdma_accept (an external QP) needs them;
        // accept may still change the depths.
        agreed: remote.map_or_else(Default::default, |r| super::global::Agreed {
            responder_resources: r.initiator_depth.min(g.max_rd_atomic),
            initiator_depth: r.responder_resources.min(g.max_rd_atomic),
            retry_count: r.retry_count,
            rnr_retry_count: r.rnr_retry_count,
        }),
        ..Default::default()
    };
    // A synchronous listener's requests get ids of their own channel, as
    // librdmacm migrates them, so their calls wait for their own events.
    let mut sync = false;
    if listener.sync {
        if let Ok(own) = new_channel() {
            // SAFETY: just made.
            if cm.set_channel(unsafe { &(*own).chan }).is_ok() {
                c.channel = own as *mut rdma_event_channel;
                sync = true;
            } else {
                // SAFETY: made above, unused.
                unsafe { free_channel(own as *mut rdma_event_channel) };
            }
        }
    }
    let nid = Box::into_raw(Box::new(ShimId {
        c,
        cm,
        st: Mutex::new(st),
        acked: Default::default(),
        sync,
        gen: crate::device::generation(),
    }));
    // SAFETY: just made.
    let n = unsafe { &mut *nid };
    qp::fill_route(n);
    register(local, nid);
    let mut ev = new_event(lp, nid, RDMA_CM_EVENT_CONNECT_REQUEST, 0);
    ev.c.listen_id = lp as *mut rdma_cm_id;
    if n.is_ud() {
        ud_param(&mut ev, n, 0, 0, &user);
    } else {
        conn_param(&mut ev, &e, &user);
    }
    listener.st().outstanding += 1;
    Some(Box::into_raw(ev).cast::<rdma_cm_event>())
}

/// For a synchronous id: wait for its next event, keep it in `id->event`
/// (acknowledging the one before), and fail as librdmacm does when it
/// reports an error (REJECTED: ECONNREFUSED; else its status's errno).
///
/// # Safety
/// `id` is a live synchronous id.
pub unsafe fn complete(id: &ShimId, want: u32) -> Result<(), i32> {
    let idp = id as *const ShimId as *mut ShimId;
    // SAFETY: a synchronous id's channel is its own and live.
    let ev = unsafe { next_event(id.c.channel, None) }?;
    // SAFETY: the id is live; its previous event is ours to acknowledge.
    unsafe {
        let old = std::mem::replace(&mut (*idp).c.event, ev);
        if !old.is_null() {
            shim_rdma_ack_cm_event(old);
        }
        let ev = &*ev;
        if ev.status != 0 || ev.event != want {
            return Err(if ev.event == RDMA_CM_EVENT_REJECTED {
                libc::ECONNREFUSED
            } else if ev.status < 0 {
                -ev.status
            } else if ev.status > 0 {
                ev.status
            } else {
                libc::EINVAL
            });
        }
    }
    Ok(())
}
