//! librdmacm's synchronous helpers: `rdma_getaddrinfo`/`rdma_freeaddrinfo`
//! (names through the system resolver), `rdma_create_ep`/`rdma_destroy_ep`
//! and `rdma_get_request`, over ids without a channel (each call waits for
//! its own event, `channel::complete`).

use super::channel::{self, next_event};
use super::global::ShimId;
use super::id::{self, create_id};
use super::qp::{self, create_qp};
use super::{addr, fail};
use crate::ffi::rdmacm_bindings::*;
use crate::ffi::*;

/// `<rdma/rdma_cma.h>`'s `RAI_*` flags (macros, which bindgen skips).
const RAI_PASSIVE: c_int = 0x1;
const RAI_NUMERICHOST: c_int = 0x2;
/// `<rdma/ib.h>`'s `AF_IB`: never handed to the system resolver.
const AF_IB: c_int = 27;

/// A malloc'd copy of `len` bytes of a socket address (freed by
/// `rdma_freeaddrinfo`); whatever its family, as librdmacm copies it.
///
/// # Safety
/// `src` is readable for `len` bytes.
unsafe fn copy_addr(src: *const sockaddr, len: socklen_t) -> Result<*mut sockaddr, i32> {
    // SAFETY: malloc of `len` bytes (at least one), checked before use.
    let p = unsafe { libc::malloc((len as usize).max(1)) } as *mut sockaddr;
    if p.is_null() {
        return Err(libc::ENOMEM);
    }
    // SAFETY: (caller) `len` readable bytes; `p` holds as many.
    unsafe { std::ptr::copy_nonoverlapping(src as *const u8, p as *mut u8, len as usize) };
    Ok(p)
}

/// The system resolver's hints for `h`, as librdmacm derives them: the
/// family (AF_IB is the resolver's "any"), the socket type from the QP type
/// and the protocol from the port space.
fn resolver_hints(h: &rdma_addrinfo) -> libc::addrinfo {
    // SAFETY: an all-zero addrinfo is the "no hints" value.
    let mut ai: libc::addrinfo = unsafe { std::mem::zeroed() };
    if h.ai_flags & RAI_PASSIVE != 0 {
        ai.ai_flags |= libc::AI_PASSIVE;
    }
    if h.ai_flags & RAI_NUMERICHOST != 0 {
        ai.ai_flags |= libc::AI_NUMERICHOST;
    }
    if h.ai_family != AF_IB {
        ai.ai_family = h.ai_family;
    }
    ai.ai_socktype = match h.ai_qp_type as ibv_qp_type {
        IBV_QPT_RC | IBV_QPT_UC | IBV_QPT_XRC_SEND | IBV_QPT_XRC_RECV => libc::SOCK_STREAM,
        IBV_QPT_UD => libc::SOCK_DGRAM,
        _ => 0,
    };
    ai.ai_protocol = match h.ai_port_space as rdma_port_space {
        RDMA_PS_TCP => libc::IPPROTO_TCP,
        RDMA_PS_UDP | RDMA_PS_IPOIB => libc::IPPROTO_UDP,
        RDMA_PS_IB if ai.ai_socktype == libc::SOCK_STREAM => libc::IPPROTO_TCP,
        RDMA_PS_IB if ai.ai_socktype == libc::SOCK_DGRAM => libc::IPPROTO_UDP,
        _ => 0,
    };
    ai
}

/// Resolves `node`/`service` into `o` (still zeroed): the first answer of
/// the system resolver, a source address if passive, else a destination.
/// `Err` holds the resolver's code (librdmacm returns it as is).
///
/// # Safety
/// `node`/`service` NULL or C strings; `o` a zeroed rdma_addrinfo of ours.
unsafe fn resolve(
    node: *const c_char,
    service: *const c_char,
    h: &rdma_addrinfo,
    o: &mut rdma_addrinfo,
) -> Result<(), c_int> {
    let ai = resolver_hints(h);
    let mut list: *mut libc::addrinfo = std::ptr::null_mut();
    // SAFETY: (caller) C strings or NULL, a local hints block.
    let r = unsafe { libc::getaddrinfo(node, service, &ai, &mut list) };
    if r != 0 || list.is_null() {
        crate::ffi::set_errno(libc::EADDRNOTAVAIL);
        return Err(if r != 0 { r } else { libc::EAI_NONAME });
    }
    // SAFETY: the resolver's list, read then freed.
    let done = unsafe {
        let a = &*list;
        o.ai_qp_type = match (h.ai_qp_type, a.ai_socktype) {
            (0, libc::SOCK_STREAM) => IBV_QPT_RC as c_int,
            (0, libc::SOCK_DGRAM) => IBV_QPT_UD as c_int,
            (t, _) => t,
        };
        o.ai_port_space = match (h.ai_port_space, a.ai_protocol) {
            (0, libc::IPPROTO_TCP) => RDMA_PS_TCP as c_int,
            (0, libc::IPPROTO_UDP) => RDMA_PS_UDP as c_int,
            (ps, _) => ps,
        };
        o.ai_family = a.ai_family;
        let len = a.ai_addrlen;
        let copied = copy_addr(a.ai_addr as *const sockaddr, len);
        let canon = if a.ai_canonname.is_null() {
            std::ptr::null_mut()
        } else {
            libc::strdup(a.ai_canonname)
        };
        let passive = h.ai_flags & RAI_PASSIVE != 0;
        libc::freeaddrinfo(list);
        copied.map(|p| {
            if passive {
                o.ai_flags = RAI_PASSIVE;
                (o.ai_src_addr, o.ai_src_len, o.ai_src_canonname) = (p, len, canon);
            } else {
                (o.ai_dst_addr, o.ai_dst_len, o.ai_dst_canonname) = (p, len, canon);
            }
        })
    };
    done.map_err(|e| {
        crate::ffi::set_errno(e);
        -1
    })
}

/// librdmacm's `rdma_getaddrinfo`: `node`/`service` through the system
/// resolver with hints derived from `hints`, or, with neither, the hints'
/// own addresses and attributes (libfabric asks this way with a source
/// address); a source address in the hints fills an answer that has none.
pub unsafe extern "C" fn shim_rdma_getaddrinfo(
    node: *const c_char,
    service: *const c_char,
    hints: *const rdma_addrinfo,
    res: *mut *mut rdma_addrinfo,
) -> c_int {
    if res.is_null() || (node.is_null() && service.is_null() && hints.is_null()) {
        return fail(libc::EINVAL);
    }
    let none = rdma_addrinfo::default();
    // SAFETY: (caller) NULL or readable hints.
    let h = unsafe { hints.as_ref() }.unwrap_or(&none);
    // SAFETY: calloc of one rdma_addrinfo; checked.
    let out =
        unsafe { libc::calloc(1, std::mem::size_of::<rdma_addrinfo>()) } as *mut rdma_addrinfo;
    if out.is_null() {
        return fail(libc::ENOMEM);
    }
    // SAFETY: `out` is a zeroed rdma_addrinfo of ours; the hints' addresses
    // are readable for their lengths (caller).
    let r = unsafe {
        let o = &mut *out;
        let mut r = if !node.is_null() || !service.is_null() {
            resolve(node, service, h, o)
        } else {
            o.ai_flags = h.ai_flags;
            o.ai_family = h.ai_family;
            o.ai_qp_type = h.ai_qp_type;
            o.ai_port_space = h.ai_port_space;
            if h.ai_dst_len != 0 && !h.ai_dst_addr.is_null() {
                copy_addr(h.ai_dst_addr, h.ai_dst_len)
                    .map(|p| (o.ai_dst_addr, o.ai_dst_len) = (p, h.ai_dst_len))
                    .map_err(fail)
            } else {
                Ok(())
            }
        };
        if r.is_ok() && o.ai_src_len == 0 && h.ai_src_len != 0 && !h.ai_src_addr.is_null() {
            r = copy_addr(h.ai_src_addr, h.ai_src_len)
                .map(|p| (o.ai_src_addr, o.ai_src_len) = (p, h.ai_src_len))
                .map_err(fail);
        }
        r
    };
    match r {
        Ok(()) => {
            // SAFETY: (caller) writable.
            unsafe { *res = out };
            0
        }
        Err(code) => {
            // SAFETY: ours, partly filled.
            unsafe { shim_rdma_freeaddrinfo(out) };
            code
        }
    }
}

pub unsafe extern "C" fn shim_rdma_freeaddrinfo(mut res: *mut rdma_addrinfo) {
    while !res.is_null() {
        // SAFETY: a list rdma_getaddrinfo made; every pointer calloc'd or NULL.
        unsafe {
            let r = &*res;
            let next = r.ai_next;
            for p in [
                r.ai_src_addr as *mut c_void,
                r.ai_dst_addr as *mut c_void,
                r.ai_src_canonname as *mut c_void,
                r.ai_dst_canonname as *mut c_void,
                r.ai_route,
                r.ai_connect,
            ] {
                libc::free(p);
            }
            libc::free(res as *mut c_void);
            res = next;
        }
    }
}

pub unsafe extern "C" fn shim_rdma_create_ep(
    out: *mut *mut rdma_cm_id,
    res: *mut rdma_addrinfo,
    pd: *mut ibv_pd,
    init: *mut ibv_qp_init_attr,
) -> c_int {
    if out.is_null() || res.is_null() {
        return fail(libc::EINVAL);
    }
    // SAFETY: (caller) a readable addrinfo.
    let r = unsafe { &*res };
    let mut idp: *mut rdma_cm_id = std::ptr::null_mut();
    // SAFETY: a synchronous id (no channel) into a local.
    if let Err(e) = unsafe {
        create_id(
            std::ptr::null_mut(),
            &mut idp,
            std::ptr::null_mut(),
            r.ai_port_space as rdma_port_space,
            r.ai_qp_type as ibv_qp_type,
        )
    } {
        return fail(e);
    }
    // SAFETY: the id just made, the caller's addresses and attributes.
    let done = unsafe { build_ep(idp, r, pd, init) };
    match done {
        Ok(()) => {
            // SAFETY: (caller) writable.
            unsafe { *out = idp };
            0
        }
        Err(e) => {
            // SAFETY: ours, never handed out.
            unsafe { shim_rdma_destroy_ep(idp) };
            fail(e)
        }
    }
}

/// # Safety
/// `idp` a live synchronous id; `r`'s addresses readable; `init` NULL or
/// readable.
unsafe fn build_ep(
    idp: *mut rdma_cm_id,
    r: &rdma_addrinfo,
    pd: *mut ibv_pd,
    init: *mut ibv_qp_init_attr,
) -> Result<(), i32> {
    // SAFETY: (caller) a live id of ours.
    let id = unsafe { &mut *(idp as *mut ShimId) };
    // SAFETY: (caller) readable addresses.
    let (src, dst) = unsafe { (addr::read(r.ai_src_addr), addr::read(r.ai_dst_addr)) };
    if r.ai_flags & RAI_PASSIVE != 0 {
        let src = src.ok_or(libc::EINVAL)?;
        id::bind(id, src)?;
        id.c.pd = pd;
        if !init.is_null() {
            // SAFETY: (caller) readable attributes, kept for rdma_get_request.
            let mut a = unsafe { *init };
            a.qp_type = r.ai_qp_type as ibv_qp_type;
            id.st().ep_init = Some(Box::new(a));
        }
        return Ok(());
    }
    let dst = dst.ok_or(libc::EINVAL)?;
    id::resolve_addr(id, src, dst)?;
    // SAFETY: a live id.
    if unsafe { id::shim_rdma_resolve_route(idp, 2000) } != 0 {
        return Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EINVAL));
    }
    if !init.is_null() {
        // SAFETY: (caller) the attributes, written back as librdmacm does.
        unsafe {
            (*init).qp_type = r.ai_qp_type as ibv_qp_type;
            create_qp(idp, pd, init)?;
        }
    }
    Ok(())
}

pub unsafe extern "C" fn shim_rdma_destroy_ep(idp: *mut rdma_cm_id) {
    // SAFETY: (caller) NULL or an id of ours.
    if unsafe { super::global::forked_id(idp) } {
        return;
    }
    if idp.is_null() {
        return;
    }
    // SAFETY: (caller) a live id, destroyed here.
    unsafe {
        qp::shim_rdma_destroy_qp(idp);
        qp::shim_rdma_destroy_srq(idp);
        id::shim_rdma_destroy_id(idp);
    }
}

pub unsafe extern "C" fn shim_rdma_get_request(
    listen: *mut rdma_cm_id,
    out: *mut *mut rdma_cm_id,
) -> c_int {
    // SAFETY: (caller) NULL or an id of ours.
    if unsafe { super::global::forked_id(listen) } {
        return fail(super::global::FORKED);
    }
    if listen.is_null() || out.is_null() {
        return fail(libc::EINVAL);
    }
    // SAFETY: (caller) a live listening id.
    let l = unsafe { &*(listen as *const ShimId) };
    if !l.sync {
        return fail(libc::EINVAL);
    }
    // SAFETY: a synchronous id's own channel.
    let ev = match unsafe { next_event(l.c.channel, None) } {
        Ok(ev) => ev,
        Err(e) => return fail(e),
    };
    // SAFETY: the event just handed out; its id is live.
    unsafe {
        let e = &*ev;
        let err = if e.status != 0 {
            Some(e.status.abs())
        } else if e.event != RDMA_CM_EVENT_CONNECT_REQUEST {
            Some(libc::EINVAL)
        } else {
            None
        };
        if let Some(err) = err {
            channel::shim_rdma_ack_cm_event(ev);
            return fail(err);
        }
        let nid = e.id;
        let init = l.st().ep_init.as_deref().copied();
        if let Some(mut a) = init {
            if let Err(err) = create_qp(nid, l.c.pd, &mut a) {
                channel::shim_rdma_ack_cm_event(ev);
                let _ = super::conn::shim_rdma_reject(nid, std::ptr::null(), 0);
                id::shim_rdma_destroy_id(nid);
                return fail(err);
            }
        }
        (*nid).event = ev;
        *out = nid;
    }
    0
}
