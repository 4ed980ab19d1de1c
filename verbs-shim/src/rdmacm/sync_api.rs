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

/// A calloc'd copy of a socket address (freed by `rdma_freeaddrinfo`).
fn alloc_addr(a: std::net::SocketAddr) -> (*mut sockaddr, socklen_t) {
    let len = addr::len_of(&a);
    // SAFETY: calloc of a sockaddr_storage; checked before use.
    let p =
        unsafe { libc::calloc(1, std::mem::size_of::<libc::sockaddr_storage>()) } as *mut sockaddr;
    if !p.is_null() {
        // SAFETY: room for either family.
        unsafe { addr::write(p, a) };
    }
    (p, len as socklen_t)
}

pub unsafe extern "C" fn shim_rdma_getaddrinfo(
    node: *const c_char,
    service: *const c_char,
    hints: *const rdma_addrinfo,
    res: *mut *mut rdma_addrinfo,
) -> c_int {
    if res.is_null() || (node.is_null() && service.is_null()) {
        return fail(libc::EINVAL);
    }
    // SAFETY: (caller) NULL or readable hints.
    let h = unsafe { hints.as_ref() };
    let flags = h.map_or(0, |h| h.ai_flags);
    let passive = flags & RAI_PASSIVE != 0;
    let mut ai: libc::addrinfo = {
        // SAFETY: an all-zero addrinfo is the "no hints" value.
        unsafe { std::mem::zeroed() }
    };
    ai.ai_family = h.map_or(libc::AF_UNSPEC, |h| h.ai_family);
    if ai.ai_family != libc::AF_INET && ai.ai_family != libc::AF_INET6 {
        ai.ai_family = libc::AF_INET;
    }
    ai.ai_socktype = libc::SOCK_STREAM;
    if passive {
        ai.ai_flags |= libc::AI_PASSIVE;
    }
    if flags & RAI_NUMERICHOST != 0 {
        ai.ai_flags |= libc::AI_NUMERICHOST;
    }
    let mut list: *mut libc::addrinfo = std::ptr::null_mut();
    // SAFETY: C strings from the caller (or NULL), a local hints block.
    let r = unsafe { libc::getaddrinfo(node, service, &ai, &mut list) };
    if r != 0 || list.is_null() {
        // librdmacm returns the resolver's code (for gai_strerror).
        crate::ffi::set_errno(libc::EADDRNOTAVAIL);
        return if r != 0 { r } else { libc::EAI_NONAME };
    }
    // SAFETY: the resolver's list, read then freed.
    let found = unsafe {
        let a = addr::read((*list).ai_addr as *const sockaddr);
        libc::freeaddrinfo(list);
        a
    };
    let Some(found) = found else {
        crate::ffi::set_errno(libc::EAFNOSUPPORT);
        return libc::EAI_FAMILY;
    };
    // SAFETY: calloc of one rdma_addrinfo; checked.
    let out =
        unsafe { libc::calloc(1, std::mem::size_of::<rdma_addrinfo>()) } as *mut rdma_addrinfo;
    if out.is_null() {
        return fail(libc::ENOMEM);
    }
    // SAFETY: `out` is a zeroed rdma_addrinfo of ours; hints readable.
    unsafe {
        let o = &mut *out;
        o.ai_flags = flags;
        o.ai_family = if found.is_ipv4() {
            libc::AF_INET
        } else {
            libc::AF_INET6
        };
        o.ai_qp_type = h.map_or(0, |h| h.ai_qp_type);
        if o.ai_qp_type == 0 {
            o.ai_qp_type = IBV_QPT_RC as c_int;
        }
        o.ai_port_space = h.map_or(0, |h| h.ai_port_space);
        if o.ai_port_space == 0 {
            o.ai_port_space = if o.ai_qp_type == IBV_QPT_UD as c_int {
                RDMA_PS_UDP as c_int
            } else {
                RDMA_PS_TCP as c_int
            };
        }
        let (p, len) = alloc_addr(found);
        if passive {
            o.ai_src_addr = p;
            o.ai_src_len = len;
        } else {
            o.ai_dst_addr = p;
            o.ai_dst_len = len;
            if let Some(s) = h.and_then(|h| addr::read(h.ai_src_addr)) {
                let (p, len) = alloc_addr(s);
                o.ai_src_addr = p;
                o.ai_src_len = len;
            }
        }
        *res = out;
    }
    0
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
