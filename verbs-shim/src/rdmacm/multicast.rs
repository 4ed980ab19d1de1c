//! `rdma_join_multicast`, `rdma_join_multicast_ex`, `rdma_leave_multicast`
//! for UD ids, as the kernel's rdma_cm does them on a RoCE port
//! (`cma_iboe_join_multicast`: no SA, the group's GID is its IP address —
//! IPv4-mapped on a RoCE v2 port — and the join completes at once) with
//! librdmacm's user-space part.
//!
//! A join is checked (a UD id bound to the device or with its address
//! resolved, an address that is not zero, FULLMEMBER or
//! SENDONLY_FULLMEMBER) and
//! answered by RDMA_CM_EVENT_MULTICAST_JOIN, whose `param.ud` is the
//! kernel's `cma_make_mc_event`: the user's context as private data, an
//! address handle to the group, QPN 0xFFFFFF and the port space's Q_Key.
//! When that event is handed out, the id's QP (if it has one, and unless the
//! join is send-only) is attached to the group, as librdmacm does; an attach
//! that fails makes it RDMA_CM_EVENT_MULTICAST_ERROR. Leaving detaches it.
//! The device joins the IP group when its first QP attaches (a send-only
//! member joins nothing, as the kernel sends no IGMP report for it).

use super::global::{Phase, ShimId};
use super::qp::{ah_to, UDP_QKEY};
use super::{addr, fail, ret};
use crate::ffi::rdmacm_bindings::*;
use crate::ffi::*;
use crate::sync::lock;
use soft_rdma::verbs::{Gid, MULTICAST_QPN};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;

/// One join of an id.
struct Mc {
    addr: SocketAddr,
    mgid: Gid,
    flags: u32,
    /// The user's context (`param.ud.private_data` of its events).
    context: usize,
    /// Its JOIN event is still to be handed out.
    pending: bool,
    /// The id's QP was attached when the event was handed out.
    attached: bool,
}

/// CM id (`CmId::local_id`) → its joins, in order.
static JOINS: Mutex<Option<HashMap<u32, Vec<Mc>>>> = Mutex::new(None);

/// # Safety
/// `idp` is NULL or a live id of ours; `sa` NULL or a readable sockaddr.
unsafe fn join(idp: *mut rdma_cm_id, sa: *const sockaddr, flags: u32, context: usize) -> c_int {
    // SAFETY: (caller) NULL or an id of ours.
    if unsafe { super::global::forked_id(idp) } {
        return fail(super::global::FORKED);
    }
    if idp.is_null() {
        return fail(libc::EINVAL);
    }
    // SAFETY: (caller) a live id and a readable address.
    let (id, a) = unsafe { (&mut *(idp as *mut ShimId), addr::read(sa)) };
    // The kernel refuses only the zero address; a unicast one gets its
    // JOIN event and fails the QP's attach (MULTICAST_ERROR) as on rxe.
    let Some(a) = a.filter(|a| !a.ip().is_unspecified()) else {
        return fail(libc::EINVAL);
    };
    if flags > RDMA_MC_JOIN_FLAG_SENDONLY_FULLMEMBER || !id.is_ud() {
        return fail(libc::EINVAL);
    }
    let phase = id.st().phase;
    let on_device = !id.c.verbs.is_null();
    if !on_device || !matches!(phase, Phase::Bound | Phase::AddrResolved) {
        return fail(libc::EINVAL);
    }
    let local = id.cm.local_id();
    lock(&JOINS)
        .get_or_insert_with(HashMap::new)
        .entry(local)
        .or_default()
        .push(Mc {
            addr: a,
            mgid: Gid::from_ip(a.ip()),
            flags,
            context,
            pending: true,
            attached: false,
        });
    // SAFETY: an id's channel outlives it.
    let ch = unsafe { &*(id.c.channel as *const super::global::ShimChannel) };
    ch.chan.post(local, RDMA_CM_EVENT_MULTICAST_JOIN, 0);
    if id.sync {
        // SAFETY: a live synchronous id.
        return ret(unsafe { super::channel::complete(id, RDMA_CM_EVENT_MULTICAST_JOIN) });
    }
    0
}

pub unsafe extern "C" fn shim_rdma_join_multicast(
    id: *mut rdma_cm_id,
    addr: *mut sockaddr,
    context: *mut c_void,
) -> c_int {
    // SAFETY: the caller's id and address.
    unsafe { join(id, addr, RDMA_MC_JOIN_FLAG_FULLMEMBER, context as usize) }
}

pub unsafe extern "C" fn shim_rdma_join_multicast_ex(
    id: *mut rdma_cm_id,
    attr: *mut rdma_cm_join_mc_attr_ex,
    context: *mut c_void,
) -> c_int {
    if attr.is_null() {
        return fail(libc::EINVAL);
    }
    // SAFETY: (caller) a readable attribute struct.
    let a = unsafe { &*attr };
    // librdmacm's checks: an address, and join flags it knows.
    let needed = RDMA_CM_JOIN_MC_ATTR_ADDRESS | RDMA_CM_JOIN_MC_ATTR_JOIN_FLAGS;
    if a.comp_mask & needed != needed || a.join_flags >= RDMA_MC_JOIN_FLAG_RESERVED {
        return fail(libc::EINVAL);
    }
    // SAFETY: the caller's id and address.
    unsafe { join(id, a.addr, a.join_flags, context as usize) }
}

pub unsafe extern "C" fn shim_rdma_leave_multicast(
    idp: *mut rdma_cm_id,
    sa: *mut sockaddr,
) -> c_int {
    // SAFETY: (caller) NULL or an id of ours.
    if unsafe { super::global::forked_id(idp) } {
        return fail(super::global::FORKED);
    }
    if idp.is_null() {
        return fail(libc::EINVAL);
    }
    // SAFETY: (caller) a live id and a readable address.
    let (id, a) = unsafe { (&*(idp as *const ShimId), addr::read(sa)) };
    let Some(a) = a else {
        return fail(libc::EINVAL);
    };
    let mc = {
        let mut joins = lock(&JOINS);
        let list = joins.as_mut().and_then(|j| j.get_mut(&id.cm.local_id()));
        match list.and_then(|l| Some(l.remove(l.iter().position(|m| m.addr == a)?))) {
            Some(mc) => mc,
            // librdmacm: no such join of this id.
            None => return fail(libc::EADDRNOTAVAIL),
        }
    };
    if mc.attached && !id.c.qp.is_null() {
        let gid = ibv_gid { raw: mc.mgid.0 };
        // SAFETY: the id's QP is live while the id has it. A QP destroyed
        // and replaced meanwhile is not attached: EINVAL, ignored.
        unsafe { crate::mcast::shim_ibv_detach_mcast(id.c.qp, &gid, 0) };
    }
    0
}

/// `rdma_destroy_id`: the id's joins go with it (its QP, destroyed first,
/// left the groups).
pub fn forget(local: u32) {
    if let Some(j) = lock(&JOINS).as_mut() {
        j.remove(&local);
    }
}

/// Fill a MULTICAST_JOIN event of `id` for its oldest join not yet
/// reported, attaching the id's QP as librdmacm does; false if that join
/// was left meanwhile (the event is dropped).
pub fn joined(id: &ShimId, ev: &mut rdma_cm_event) -> bool {
    let mut joins = lock(&JOINS);
    let Some(mc) = joins
        .as_mut()
        .and_then(|j| j.get_mut(&id.cm.local_id()))
        .and_then(|l| l.iter_mut().find(|m| m.pending))
    else {
        return false;
    };
    mc.pending = false;
    let mut ah = ah_to(mc.mgid, id.st().tos);
    // One hop: IP multicast's default TTL, which the link keeps.
    ah.grh.hop_limit = 1;
    let p = rdma_ud_param {
        private_data: mc.context as *const c_void,
        private_data_len: 0,
        ah_attr: ah,
        qp_num: MULTICAST_QPN,
        qkey: UDP_QKEY,
    };
    // SAFETY: `param` is a union with room for `ud` (bindgen's field).
    unsafe { *ev.param.ud.as_mut() = p };
    if !id.c.qp.is_null() && mc.flags != RDMA_MC_JOIN_FLAG_SENDONLY_FULLMEMBER {
        let gid = ibv_gid { raw: mc.mgid.0 };
        // SAFETY: the id's QP is live while the id has it.
        match unsafe { crate::mcast::shim_ibv_attach_mcast(id.c.qp, &gid, 0) } {
            0 => mc.attached = true,
            e => {
                // librdmacm: the attach's errno, the status -1.
                set_errno(e);
                ev.status = -1;
                ev.event = RDMA_CM_EVENT_MULTICAST_ERROR;
            }
        }
    }
    true
}
