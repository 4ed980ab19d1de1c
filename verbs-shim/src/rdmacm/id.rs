//! Ids: `rdma_create_id`/`rdma_destroy_id`, `rdma_bind_addr`,
//! `rdma_resolve_addr`/`rdma_resolve_route` (answered at once by events,
//! the address through `soft_rdma_cm::rendezvous`), `rdma_listen`,
//! `rdma_migrate_id`, `rdma_set_option`, the port getters, `rdma_notify`,
//! `rdma_get_devices`.

use super::channel::{self, LOCAL_ADDR_ERROR, LOCAL_ADDR_RESOLVED, LOCAL_ROUTE_RESOLVED};
use super::global::{global, register, unregister, IdState, Phase, ShimChannel, ShimId};
use super::{addr, fail, qp, ret};
use crate::ffi::rdmacm_bindings::*;
use crate::ffi::*;
use soft_rdma_cm::rendezvous;
use soft_rdma_cm::wire::PortSpace;
use std::net::SocketAddr;
use std::sync::Mutex;

/// # Safety
/// `ch` is NULL or a live channel of ours.
unsafe fn chan_of<'a>(ch: *mut rdma_event_channel) -> &'a ShimChannel {
    // SAFETY: (caller) a live ShimChannel.
    unsafe { &*(ch as *const ShimChannel) }
}

pub unsafe extern "C" fn shim_rdma_create_id(
    ch: *mut rdma_event_channel,
    out: *mut *mut rdma_cm_id,
    context: *mut c_void,
    ps: rdma_port_space,
) -> c_int {
    let qp_type = match ps {
        RDMA_PS_TCP | RDMA_PS_IB => IBV_QPT_RC,
        RDMA_PS_UDP | RDMA_PS_IPOIB => IBV_QPT_UD,
        _ => return fail(libc::EINVAL),
    };
    // SAFETY: (caller) as rdma_create_id asks.
    ret(unsafe { create_id(ch, out, context, ps, qp_type) })
}

/// # Safety
/// `ch` NULL or a live channel; `out` writable.
pub unsafe fn create_id(
    mut ch: *mut rdma_event_channel,
    out: *mut *mut rdma_cm_id,
    context: *mut c_void,
    ps: rdma_port_space,
    qp_type: ibv_qp_type,
) -> Result<(), i32> {
    if out.is_null() {
        return Err(libc::EINVAL);
    }
    let g = global()?;
    let sync = ch.is_null();
    if sync {
        ch = channel::new_channel()? as *mut rdma_event_channel;
    }
    // SAFETY: (caller) a live channel, or the one just made.
    let chan = unsafe { chan_of(ch) };
    let cm = g.cm.create_id(&chan.chan);
    let local = cm.local_id();
    let id = Box::into_raw(Box::new(ShimId {
        c: rdma_cm_id {
            verbs: std::ptr::null_mut(),
            channel: ch,
            context,
            qp: std::ptr::null_mut(),
            route: Default::default(),
            ps,
            port_num: 0,
            event: std::ptr::null_mut(),
            send_cq_channel: std::ptr::null_mut(),
            send_cq: std::ptr::null_mut(),
            recv_cq_channel: std::ptr::null_mut(),
            recv_cq: std::ptr::null_mut(),
            srq: std::ptr::null_mut(),
            pd: std::ptr::null_mut(),
            qp_type,
        },
        cm,
        st: Mutex::new(IdState {
            psn: super::global::random_psn(),
            ..Default::default()
        }),
        acked: Default::default(),
        sync,
        gen: crate::device::generation(),
    }));
    register(local, id);
    // SAFETY: (caller) writable.
    unsafe { *out = id as *mut rdma_cm_id };
    Ok(())
}

pub unsafe extern "C" fn shim_rdma_destroy_id(idp: *mut rdma_cm_id) -> c_int {
    // SAFETY: (caller) NULL or an id of ours.
    if unsafe { super::global::forked_id(idp) } {
        return fail(super::global::FORKED);
    }
    if idp.is_null() {
        return fail(libc::EINVAL);
    }
    // SAFETY: (caller) a live id of ours, destroyed once.
    let id = unsafe { &mut *(idp as *mut ShimId) };
    let ev = std::mem::replace(&mut id.c.event, std::ptr::null_mut());
    if !ev.is_null() {
        // SAFETY: the synchronous id's kept event.
        unsafe { channel::shim_rdma_ack_cm_event(ev) };
    }
    // No event of it is being translated (which would count it) once out.
    channel::quiesced(|| unregister(id.cm.local_id()));
    super::multicast::forget(id.cm.local_id());
    // librdmacm waits for the id's events to be acknowledged.
    {
        let mut st = id.st();
        while st.outstanding > 0 {
            st = crate::sync::wait(&id.acked, st);
        }
    }
    // SAFETY: made by Box::into_raw in this module or channel.rs.
    let b = unsafe { Box::from_raw(idp as *mut ShimId) };
    let (sync, ch) = (b.sync, b.c.channel);
    // Dropping the CM id rejects or disconnects as rdma_destroy_id does.
    drop(b);
    if sync {
        // SAFETY: the synchronous id's own channel, now unused.
        unsafe { channel::free_channel(ch) };
    }
    0
}

fn port_space(id: &ShimId) -> Result<PortSpace, i32> {
    PortSpace::from_value(id.c.ps).ok_or(libc::EINVAL)
}

/// Claims `a`'s port (0: a free one) and records the source address.
pub fn bind(id: &mut ShimId, a: SocketAddr) -> Result<(), i32> {
    let g = global()?;
    if !a.ip().is_unspecified() && !a.ip().is_loopback() && !is_ours(a) {
        return Err(libc::EADDRNOTAVAIL);
    }
    let ps = port_space(id)?;
    let port = id.cm.bind_addr(ps, a).map_err(|e| e.0)?;
    let a = SocketAddr::new(a.ip(), port);
    {
        let mut st = id.st();
        st.src = Some(a);
        st.claimed = true;
        if st.phase == Phase::Idle {
            st.phase = Phase::Bound;
        }
    }
    // SAFETY: the route's source union has room for either family.
    unsafe { addr::write(&mut id.c.route.addr.__bindgen_anon_1.src_addr, a) };
    // The kernel's rdma_cm binds a loopback address as a wildcard (its
    // `cma_any_addr`): no device until a listen or resolution. libfabric
    // relies on it, advertising its device's interface address instead.
    // Alone on a host our device is on loopback (its address is 127.x and
    // the file-system face names `lo` its interface): a loopback address
    // is then its own, as an interface's address binds a NIC.
    let on_lo = g.gid.to_ip().is_loopback();
    if !a.ip().is_unspecified() && (!a.ip().is_loopback() || on_lo) {
        id.c.verbs = g.ctx;
        id.c.port_num = 1;
        // librdmacm gives an id its device's PD with the device (pyverbs
        // builds its PD object from `id->pd` after route resolution).
        id.c.pd = g.default_pd()?;
    }
    Ok(())
}

/// A source port for an active id that bound none: the kernel's
/// ephemeral range, from a per-process random start.
fn ephemeral_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    const LOW: u32 = 32768;
    const SPAN: u32 = 60999 - 32768 + 1;
    let _ = NEXT.compare_exchange(
        u32::MAX,
        super::global::random_psn() % SPAN,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    (LOW + NEXT.fetch_add(1, Ordering::Relaxed) % SPAN) as u16
}

/// Whether this host has a route to `d` (a UDP socket's connect asks the
/// routing table; nothing is sent): the errno of the failure.
fn route_to(d: SocketAddr) -> Result<(), i32> {
    if d.ip().is_loopback() || d.ip().is_unspecified() {
        return Ok(());
    }
    let any = addr::any_like(&d, 0);
    let s = std::net::UdpSocket::bind(any).map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
    s.connect(SocketAddr::new(d.ip(), 4791))
        .map_err(|e| e.raw_os_error().unwrap_or(libc::ENETUNREACH))
}

/// Whether a socket may bind `a`'s address here (an address of this host).
fn is_ours(a: SocketAddr) -> bool {
    std::net::UdpSocket::bind(SocketAddr::new(a.ip(), 0)).is_ok()
}

pub unsafe extern "C" fn shim_rdma_bind_addr(idp: *mut rdma_cm_id, sa: *mut sockaddr) -> c_int {
    // SAFETY: (caller) NULL or an id of ours.
    if unsafe { super::global::forked_id(idp) } {
        return fail(super::global::FORKED);
    }
    if idp.is_null() {
        return fail(libc::EINVAL);
    }
    // SAFETY: (caller) a live id and a readable address.
    let (id, a) = unsafe { (&mut *(idp as *mut ShimId), addr::read(sa)) };
    let Some(a) = a else {
        return fail(libc::EAFNOSUPPORT);
    };
    if id.st().claimed {
        return fail(libc::EINVAL);
    }
    ret(bind(id, a))
}

pub unsafe extern "C" fn shim_rdma_resolve_addr(
    idp: *mut rdma_cm_id,
    src: *mut sockaddr,
    dst: *mut sockaddr,
    _timeout_ms: c_int,
) -> c_int {
    // SAFETY: (caller) NULL or an id of ours.
    if unsafe { super::global::forked_id(idp) } {
        return fail(super::global::FORKED);
    }
    if idp.is_null() {
        return fail(libc::EINVAL);
    }
    // SAFETY: (caller) a live id; readable addresses.
    let (id, s, d) = unsafe { (&mut *(idp as *mut ShimId), addr::read(src), addr::read(dst)) };
    let Some(d) = d else {
        return fail(libc::EINVAL);
    };
    ret(resolve_addr(id, s, d))
}

pub fn resolve_addr(id: &mut ShimId, s: Option<SocketAddr>, d: SocketAddr) -> Result<(), i32> {
    let g = global()?;
    {
        let st = id.st();
        if !matches!(st.phase, Phase::Idle | Phase::Bound) {
            return Err(libc::EINVAL);
        }
    }
    if !id.st().claimed {
        match s {
            // A source port asked for is claimed as rdma_bind_addr does.
            Some(s) if s.port() != 0 => bind(id, s)?,
            // An ephemeral one is not: only listeners must be found on the
            // host, and every claimed port costs the CM's thread a
            // descriptor to watch (thousands of clients would slow it).
            _ => {
                let s = s.unwrap_or_else(|| addr::any_like(&d, 0));
                if !s.ip().is_unspecified() && !s.ip().is_loopback() && !is_ours(s) {
                    return Err(libc::EADDRNOTAVAIL);
                }
                id.st().src = Some(SocketAddr::new(s.ip(), ephemeral_port()));
            }
        }
    }
    let ps = port_space(id)?;
    // Where the listener is: the device holding the port on this host, or
    // the address's own; nobody at a local port → our own device, whose CM
    // rejects the REQ (invalid service ID) as a host with no listener does.
    let peer = if d.ip().is_multicast() {
        // A group is reached on the device's interface, routed or not.
        Ok(soft_rdma::verbs::Gid::from_ip(d.ip()))
    } else {
        match rendezvous::resolve(ps, d).map_err(|_| libc::EHOSTUNREACH) {
            Ok(p) => route_to(d).map(|()| p.unwrap_or(g.gid)),
            Err(e) => Err(e),
        }
    };
    let peer = match peer {
        Ok(p) => p,
        Err(e) => {
            // ADDR_ERROR with the routing error, as the kernel reports it.
            id.c.channel_post(LOCAL_ADDR_ERROR, -e, id.cm.local_id());
            if id.sync {
                // SAFETY: a live synchronous id.
                unsafe { channel::complete(id, RDMA_CM_EVENT_ADDR_RESOLVED) }?;
            }
            return Ok(());
        }
    };
    let src = {
        let mut st = id.st();
        let bound = st.src.unwrap_or_else(|| addr::any_like(&d, 0));
        let src = if !bound.ip().is_unspecified() {
            bound
        } else if d.ip().is_loopback() || d.ip().is_unspecified() {
            SocketAddr::new(d.ip(), bound.port())
        } else {
            addr::device_addr(g.gid, &d, bound.port())
        };
        st.src = Some(src);
        st.dst = Some(d);
        st.peer = Some(peer);
        st.phase = Phase::AddrResolved;
        src
    };
    // SAFETY: the route's address unions have room for either family.
    unsafe {
        addr::write(&mut id.c.route.addr.__bindgen_anon_1.src_addr, src);
        addr::write(&mut id.c.route.addr.__bindgen_anon_2.dst_addr, d);
    }
    id.c.verbs = g.ctx;
    id.c.port_num = 1;
    // The device's PD comes with the device, as in librdmacm.
    id.c.pd = g.default_pd()?;
    id.c.channel_post(LOCAL_ADDR_RESOLVED, 0, id.cm.local_id());
    if id.sync {
        // SAFETY: a live synchronous id.
        unsafe { channel::complete(id, RDMA_CM_EVENT_ADDR_RESOLVED) }?;
    }
    Ok(())
}

/// Posting on an id's channel.
trait Post {
    fn channel_post(&self, code: u32, status: i32, local: u32);
}

impl Post for rdma_cm_id {
    fn channel_post(&self, code: u32, status: i32, local: u32) {
        // SAFETY: an id's channel outlives it.
        let ch = unsafe { chan_of(self.channel) };
        ch.chan.post(local, code, status);
    }
}

pub unsafe extern "C" fn shim_rdma_resolve_route(
    idp: *mut rdma_cm_id,
    _timeout_ms: c_int,
) -> c_int {
    // SAFETY: (caller) NULL or an id of ours.
    if unsafe { super::global::forked_id(idp) } {
        return fail(super::global::FORKED);
    }
    if idp.is_null() {
        return fail(libc::EINVAL);
    }
    // SAFETY: (caller) a live id.
    let id = unsafe { &mut *(idp as *mut ShimId) };
    if id.st().phase != Phase::AddrResolved {
        return fail(libc::EINVAL);
    }
    qp::fill_route(id);
    id.st().phase = Phase::RouteResolved;
    id.c.channel_post(LOCAL_ROUTE_RESOLVED, 0, id.cm.local_id());
    if id.sync {
        // SAFETY: a live synchronous id.
        return ret(unsafe { channel::complete(id, RDMA_CM_EVENT_ROUTE_RESOLVED) });
    }
    0
}

pub unsafe extern "C" fn shim_rdma_listen(idp: *mut rdma_cm_id, backlog: c_int) -> c_int {
    // SAFETY: (caller) NULL or an id of ours.
    if unsafe { super::global::forked_id(idp) } {
        return fail(super::global::FORKED);
    }
    if idp.is_null() {
        return fail(libc::EINVAL);
    }
    // SAFETY: (caller) a live id.
    let id = unsafe { &mut *(idp as *mut ShimId) };
    ret(listen(id, backlog))
}

fn listen(id: &mut ShimId, backlog: c_int) -> Result<(), i32> {
    let ps = port_space(id)?;
    let (phase, src) = {
        let st = id.st();
        (st.phase, st.src)
    };
    match phase {
        Phase::Bound => {}
        // librdmacm binds an unbound id to the wildcard address.
        Phase::Idle => {
            bind(id, SocketAddr::from(([0, 0, 0, 0], 0)))?;
        }
        _ => return Err(libc::EINVAL),
    }
    let port = id.st().src.or(src).map_or(0, |a| a.port());
    id.cm
        .listen_backlog(ps.service_id(port), backlog)
        .map_err(|e| e.0)?;
    id.st().phase = Phase::Listening;
    Ok(())
}

pub unsafe extern "C" fn shim_rdma_migrate_id(
    idp: *mut rdma_cm_id,
    ch: *mut rdma_event_channel,
) -> c_int {
    // SAFETY: (caller) NULL or an id of ours.
    if unsafe { super::global::forked_id(idp) } {
        return fail(super::global::FORKED);
    }
    if idp.is_null() {
        return fail(libc::EINVAL);
    }
    // SAFETY: (caller) a live id.
    let id = unsafe { &mut *(idp as *mut ShimId) };
    if id.sync && ch.is_null() {
        return fail(libc::EINVAL);
    }
    let (new, own) = if ch.is_null() {
        match channel::new_channel() {
            Ok(c) => (c as *mut rdma_event_channel, true),
            Err(e) => return fail(e),
        }
    } else {
        (ch, false)
    };
    // A synchronous id keeps its last event (`id->event`) unacknowledged;
    // librdmacm acknowledges it here (libfabric resolves synchronously, then
    // migrates to its event queue's channel).
    if id.sync && !id.c.event.is_null() {
        let ev = std::mem::replace(&mut id.c.event, std::ptr::null_mut());
        // SAFETY: the id's own event, handed out by `channel::complete`.
        unsafe { channel::shim_rdma_ack_cm_event(ev) };
    }
    // Events handed out and not acknowledged would name the old channel.
    {
        let mut st = id.st();
        while st.outstanding > 0 {
            st = crate::sync::wait(&id.acked, st);
        }
    }
    // SAFETY: a live channel (the caller's or the one just made).
    let nc = unsafe { chan_of(new) };
    if let Err(e) = id.cm.set_channel(&nc.chan) {
        if own {
            // SAFETY: made above, unused.
            unsafe { channel::free_channel(new) };
        }
        return fail(e.0);
    }
    let old = std::mem::replace(&mut id.c.channel, new);
    if id.sync {
        // SAFETY: the id's own channel, no longer used.
        unsafe { channel::free_channel(old) };
    }
    id.sync = own;
    0
}

pub unsafe extern "C" fn shim_rdma_set_option(
    idp: *mut rdma_cm_id,
    level: c_int,
    optname: c_int,
    optval: *mut c_void,
    optlen: usize,
) -> c_int {
    // SAFETY: (caller) NULL or an id of ours.
    if unsafe { super::global::forked_id(idp) } {
        return fail(super::global::FORKED);
    }
    if idp.is_null() || optval.is_null() {
        return fail(libc::EINVAL);
    }
    // SAFETY: (caller) a live id.
    let id = unsafe { &*(idp as *const ShimId) };
    let int = |len: usize| -> Result<i32, i32> {
        if optlen != len {
            return Err(libc::EINVAL);
        }
        // SAFETY: (caller) `optlen` readable bytes at `optval`.
        Ok(unsafe {
            match len {
                1 => i32::from(*(optval as *const u8)),
                _ => std::ptr::read_unaligned(optval as *const i32),
            }
        })
    };
    let r = match (level as u32, optname as u32) {
        (RDMA_OPTION_ID, RDMA_OPTION_ID_TOS) => int(1).map(|v| id.st().tos = v as u8),
        // The CM enforces both ([`soft_rdma_cm::ports`]).
        (RDMA_OPTION_ID, RDMA_OPTION_ID_REUSEADDR) => int(4).and_then(|v| {
            id.cm.set_reuseaddr(v != 0).map_err(|e| e.0)?;
            id.st().reuseaddr = v != 0;
            Ok(())
        }),
        (RDMA_OPTION_ID, RDMA_OPTION_ID_AFONLY) => int(4).and_then(|v| {
            id.cm.set_afonly(v != 0).map_err(|e| e.0)?;
            id.st().afonly = v != 0;
            Ok(())
        }),
        (RDMA_OPTION_ID, RDMA_OPTION_ID_ACK_TIMEOUT) => int(1).and_then(|v| {
            // As rdma_set_ack_timeout: connected QP types only.
            if v > 31 || id.is_ud() {
                return Err(libc::EINVAL);
            }
            id.st().ack_timeout = Some(v as u8);
            Ok(())
        }),
        // A path record given by the user (IB subnets): nothing to route.
        (RDMA_OPTION_IB, RDMA_OPTION_IB_PATH) => Err(libc::EOPNOTSUPP),
        _ => Err(libc::ENOSYS),
    };
    ret(r)
}

fn port_of(sa: *const sockaddr) -> u16 {
    // SAFETY: the id's route addresses are sockaddr_storage-sized.
    unsafe { addr::read(sa) }.map_or(0, |a| a.port())
}

pub unsafe extern "C" fn shim_rdma_get_src_port(idp: *mut rdma_cm_id) -> u16 {
    if idp.is_null() {
        return 0;
    }
    // SAFETY: (caller) a live id; the union member's address only.
    let sa = unsafe { &(*idp).route.addr.__bindgen_anon_1.src_addr as *const sockaddr };
    port_of(sa).to_be()
}

pub unsafe extern "C" fn shim_rdma_get_dst_port(idp: *mut rdma_cm_id) -> u16 {
    if idp.is_null() {
        return 0;
    }
    // SAFETY: (caller) a live id; the union member's address only.
    let sa = unsafe { &(*idp).route.addr.__bindgen_anon_2.dst_addr as *const sockaddr };
    port_of(sa).to_be()
}

pub unsafe extern "C" fn shim_rdma_notify(idp: *mut rdma_cm_id, _event: ibv_event_type) -> c_int {
    // SAFETY: (caller) NULL or an id of ours.
    if unsafe { super::global::forked_id(idp) } {
        return fail(super::global::FORKED);
    }
    if idp.is_null() {
        return fail(libc::EINVAL);
    }
    // SAFETY: (caller) a live id.
    let id = unsafe { &*(idp as *const ShimId) };
    // A receive before the RTU: the connection is up. The RTU (or its
    // loss) settles the passive side either way; nothing to do.
    match id.st().phase {
        Phase::Requested | Phase::Connected | Phase::Connecting => 0,
        _ => fail(libc::EINVAL),
    }
}

pub unsafe extern "C" fn shim_rdma_get_devices(num: *mut c_int) -> *mut *mut ibv_context {
    let g = match global() {
        Ok(g) => g,
        Err(e) => return fail_null(e),
    };
    // SAFETY: a two-pointer array, NULL-terminated, freed by rdma_free_devices.
    let list = unsafe { libc::calloc(2, std::mem::size_of::<*mut ibv_context>()) }
        as *mut *mut ibv_context;
    if list.is_null() {
        return fail_null(libc::ENOMEM);
    }
    // SAFETY: room for two pointers.
    unsafe { *list = g.ctx };
    if !num.is_null() {
        // SAFETY: (caller) writable.
        unsafe { *num = 1 };
    }
    list
}

pub unsafe extern "C" fn shim_rdma_free_devices(list: *mut *mut ibv_context) {
    // SAFETY: from rdma_get_devices's calloc (or NULL).
    unsafe { libc::free(list as *mut c_void) };
}
