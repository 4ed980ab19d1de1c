//! QPs on ids: `rdma_create_qp(_ex)` (CQs and completion channels made
//! when the caller gives none, as librdmacm), `rdma_destroy_qp`,
//! `rdma_init_qp_attr`, the SRQ helpers, and the moves librdmacm makes for
//! the user: INIT at creation (a UD QP straight to RTS), RTR and RTS once
//! the peer's REQ or REP is known, the error state on disconnection.
//! Each move goes through our `ibv_modify_qp`, as librdmacm's do.

use super::global::{global, ShimId};
use super::{fail, ret};
use crate::ffi::rdmacm_bindings::*;
use crate::ffi::*;
use soft_rdma::verbs::Gid;

/// GID index of the device's RoCE v2 IPv4-mapped address (what the CM
/// sends from).
const SGID_INDEX: u8 = 1;
/// The kernel's rdma_cm Q_Key for RDMA_PS_UDP.
pub const UDP_QKEY: u32 = RDMA_UDP_QKEY;
/// The local ACK timeout when no option set one (the CM's path default).
const ACK_TIMEOUT: u8 = 14;

/// An address handle's attributes to reach `peer` from our port.
pub fn ah_to(peer: Gid, tos: u8) -> ibv_ah_attr {
    let mut a = ibv_ah_attr {
        is_global: 1,
        port_num: 1,
        ..Default::default()
    };
    a.grh.dgid.raw = peer.0;
    a.grh.sgid_index = SGID_INDEX;
    a.grh.hop_limit = 64;
    a.grh.traffic_class = tos;
    a
}

/// Fills `id->route` once both ends are known: the GIDs and one path.
pub fn fill_route(id: &mut ShimId) {
    let Ok(g) = global() else { return };
    let (peer, mtu, tos) = {
        let st = id.st();
        (
            st.peer,
            st.remote_mtu.map(u32::from).unwrap_or(g.mtu),
            st.tos,
        )
    };
    let Some(peer) = peer else { return };
    let mut rec = Box::new(ibv_sa_path_rec {
        pkey: 0xffff_u16.to_be(),
        hop_limit: 64,
        mtu_selector: 2,
        mtu: mtu as u8,
        rate_selector: 2,
        packet_life_time_selector: 2,
        reversible: 1,
        numb_path: 1,
        // RoCE: the TOS the user set is the path's traffic class.
        traffic_class: tos,
        ..Default::default()
    });
    rec.sgid.raw = g.gid.0;
    rec.dgid.raw = peer.0;
    // SAFETY: the ib address is a member of the route's address union.
    unsafe {
        let ib = id.c.route.addr.addr.ibaddr.as_mut();
        ib.sgid.raw = g.gid.0;
        ib.dgid.raw = peer.0;
        ib.pkey = 0xffff_u16.to_be();
    }
    id.c.route.path_rec = &mut *rec;
    id.c.route.num_paths = 1;
    id.st().path = Some(rec);
}

/// `rdma_init_qp_attr`: the attributes of the move to `attr.qp_state`.
pub fn init_attr(id: &ShimId, state: ibv_qp_state) -> Result<(ibv_qp_attr, c_int), i32> {
    let g = global()?;
    let st = id.st();
    let mut a = ibv_qp_attr {
        qp_state: state,
        ..Default::default()
    };
    let mask;
    match state {
        IBV_QPS_INIT => {
            a.pkey_index = 0;
            a.port_num = 1;
            if id.is_ud() {
                a.qkey = UDP_QKEY;
                mask = IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_QKEY;
            } else {
                a.qp_access_flags = if st.remote.is_some() {
                    access(st.agreed.responder_resources)
                } else {
                    0
                };
                mask = IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS;
            }
        }
        IBV_QPS_RTR if id.is_ud() => mask = IBV_QP_STATE,
        IBV_QPS_RTR => {
            let (Some(r), Some(peer)) = (st.remote, st.peer) else {
                return Err(libc::EINVAL);
            };
            a.path_mtu = st.remote_mtu.map(u32::from).unwrap_or(g.mtu).min(g.mtu);
            a.dest_qp_num = r.qpn;
            a.rq_psn = r.psn;
            a.max_dest_rd_atomic = st.agreed.responder_resources;
            // The kernel CM's value: code 0, the longest RNR delay
            // (655.36 ms), so a peer that posts its receive a little late
            // (after its own send completes) is waited for, not failed.
            a.min_rnr_timer = 0;
            a.ah_attr = ah_to(peer, st.tos);
            a.qp_access_flags = access(st.agreed.responder_resources);
            mask = IBV_QP_STATE
                | IBV_QP_AV
                | IBV_QP_PATH_MTU
                | IBV_QP_DEST_QPN
                | IBV_QP_RQ_PSN
                | IBV_QP_MAX_DEST_RD_ATOMIC
                | IBV_QP_MIN_RNR_TIMER
                | IBV_QP_ACCESS_FLAGS;
        }
        IBV_QPS_RTS if id.is_ud() => {
            a.sq_psn = 0;
            mask = IBV_QP_STATE | IBV_QP_SQ_PSN;
        }
        IBV_QPS_RTS => {
            if st.remote.is_none() {
                return Err(libc::EINVAL);
            }
            a.sq_psn = st.psn;
            a.max_rd_atomic = st.agreed.initiator_depth;
            a.timeout = st.ack_timeout.unwrap_or(ACK_TIMEOUT);
            a.retry_cnt = st.agreed.retry_count.min(7);
            a.rnr_retry = st.agreed.rnr_retry_count.min(7);
            mask = IBV_QP_STATE
                | IBV_QP_SQ_PSN
                | IBV_QP_MAX_QP_RD_ATOMIC
                | IBV_QP_TIMEOUT
                | IBV_QP_RETRY_CNT
                | IBV_QP_RNR_RETRY;
        }
        _ => return Err(libc::EINVAL),
    }
    Ok((a, mask as c_int))
}

/// ib_cm's access for a connected QP: remote writes, and reads and
/// atomics when it answers any.
fn access(responder_resources: u8) -> c_uint {
    let mut f = IBV_ACCESS_REMOTE_WRITE;
    if responder_resources > 0 {
        f |= IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_ATOMIC;
    }
    f
}

fn modify(id: &ShimId, state: ibv_qp_state) -> Result<(), i32> {
    let (mut a, mask) = init_attr(id, state)?;
    // SAFETY: the id's QP is live while the id has it.
    match unsafe { crate::qp::shim_ibv_modify_qp(id.c.qp, &mut a, mask) } {
        0 => Ok(()),
        e => Err(e),
    }
}

/// Active side, REP received: RTR, RTS, then the RTU.
///
/// # Safety
/// The id's QP is live.
pub unsafe fn complete_connect(id: &ShimId) -> Result<(), i32> {
    modify(id, IBV_QPS_RTR)?;
    modify(id, IBV_QPS_RTS)?;
    id.cm.establish().map_err(|e| e.0)
}

/// Passive side, in `rdma_accept`: RTR and RTS before the REP goes.
pub fn accept_moves(id: &ShimId) -> Result<(), i32> {
    if id.c.qp.is_null() || id.is_ud() {
        return Ok(());
    }
    modify(id, IBV_QPS_RTR)?;
    modify(id, IBV_QPS_RTS)
}

/// To the error state if the id's QP is still live: a peer's disconnect
/// comes whenever it comes, and an application may have destroyed the QP
/// with `ibv_destroy_qp` (rping does), leaving `id->qp` dangling. (The
/// kernel's rdma_cm leaves a user QP alone then; we flush it, as a killed
/// peer's survivor expects.)
pub fn to_error_if_live(id: &ShimId) {
    let Some(num) = id.st().qp_num else { return };
    let qp = id.c.qp;
    if qp.is_null() {
        return;
    }
    // SAFETY: the registry says `qp` is the live QP `num`, and it stays
    // live while the registry is held.
    crate::registry::QPS.with_live(num, qp, || unsafe { to_error(qp) });
}

/// # Safety
/// `qp` is live.
unsafe fn to_error(qp: *mut ibv_qp) {
    let mut a = ibv_qp_attr {
        qp_state: IBV_QPS_ERR,
        ..Default::default()
    };
    // SAFETY: (caller) a live QP.
    let _ = unsafe { crate::qp::shim_ibv_modify_qp(qp, &mut a, IBV_QP_STATE as c_int) };
}

pub unsafe extern "C" fn shim_rdma_init_qp_attr(
    id: *mut rdma_cm_id,
    attr: *mut ibv_qp_attr,
    mask: *mut c_int,
) -> c_int {
    // SAFETY: (caller) NULL or an id of ours.
    if unsafe { super::global::forked_id(id) } {
        return fail(super::global::FORKED);
    }
    if id.is_null() || attr.is_null() || mask.is_null() {
        return fail(libc::EINVAL);
    }
    // SAFETY: (caller) a live id and writable attr/mask.
    unsafe {
        let id = ShimId::from_c(id);
        match init_attr(id, (*attr).qp_state) {
            Ok((a, m)) => {
                *attr = a;
                *mask = m;
                0
            }
            Err(e) => fail(e),
        }
    }
}

/// librdmacm's CQs for a QP created without them: one completion channel
/// and CQ per direction, sized by the QP's caps.
///
/// # Safety
/// `id` is live with `verbs` set.
unsafe fn make_cqs(id: &mut ShimId, send: bool, recv: bool, cap: &ibv_qp_cap) -> Result<(), i32> {
    let ctx = id.c.verbs;
    // SAFETY: (caller) `ctx` is our live context; the objects made are kept
    // in the id and destroyed with its QP.
    unsafe {
        for (want, depth, is_send) in [
            (send, cap.max_send_wr, true),
            (recv, cap.max_recv_wr, false),
        ] {
            if !want {
                continue;
            }
            let ch = crate::cq::shim_ibv_create_comp_channel(ctx);
            if ch.is_null() {
                return Err(libc::ENOMEM);
            }
            let cq = crate::cq::shim_ibv_create_cq(
                ctx,
                depth.max(1) as c_int,
                id as *mut ShimId as *mut c_void,
                ch,
                0,
            );
            if cq.is_null() {
                crate::cq::shim_ibv_destroy_comp_channel(ch);
                return Err(libc::ENOMEM);
            }
            if is_send {
                id.c.send_cq_channel = ch;
                id.c.send_cq = cq;
            } else {
                id.c.recv_cq_channel = ch;
                id.c.recv_cq = cq;
            }
        }
    }
    id.st().own_cqs = true;
    Ok(())
}

/// # Safety
/// `id` is live.
unsafe fn free_cqs(id: &mut ShimId) {
    if !std::mem::take(&mut id.st().own_cqs) {
        return;
    }
    // SAFETY: (caller) CQs and channels make_cqs made, no QP on them now.
    unsafe {
        for (cq, ch) in [
            (&mut id.c.send_cq, &mut id.c.send_cq_channel),
            (&mut id.c.recv_cq, &mut id.c.recv_cq_channel),
        ] {
            if !cq.is_null() {
                crate::cq::shim_ibv_destroy_cq(std::mem::replace(cq, std::ptr::null_mut()));
            }
            if !ch.is_null() {
                crate::cq::shim_ibv_destroy_comp_channel(std::mem::replace(
                    ch,
                    std::ptr::null_mut(),
                ));
            }
        }
    }
}

/// The QP of an id, made and moved to INIT (a UD one on to RTS).
///
/// # Safety
/// `id` live; `pd` NULL or a live PD; `attr` readable and writable.
pub unsafe fn create_qp(
    idp: *mut rdma_cm_id,
    mut pd: *mut ibv_pd,
    attr: *mut ibv_qp_init_attr,
) -> Result<(), i32> {
    if idp.is_null() || attr.is_null() {
        return Err(libc::EINVAL);
    }
    let g = global()?;
    // SAFETY: (caller) a live id of ours, used by this thread.
    let id = unsafe { &mut *(idp as *mut ShimId) };
    if !id.c.qp.is_null() {
        return Err(libc::EINVAL);
    }
    if pd.is_null() {
        pd = if id.c.pd.is_null() {
            g.default_pd()?
        } else {
            id.c.pd
        };
    }
    // SAFETY: (caller) a live PD.
    let pd_ctx = unsafe { (*pd).context };
    if id.c.verbs.is_null() {
        id.c.verbs = pd_ctx;
    } else if id.c.verbs != pd_ctx {
        return Err(libc::EINVAL);
    }
    // SAFETY: (caller) readable and writable init attributes.
    let a = unsafe { &mut *attr };
    let (need_send, need_recv) = (a.send_cq.is_null(), a.recv_cq.is_null() && a.srq.is_null());
    if need_send || need_recv {
        // SAFETY: the id is live with verbs set.
        unsafe { make_cqs(id, need_send, need_recv, &a.cap) }?;
        if need_send {
            a.send_cq = id.c.send_cq;
        }
        if need_recv {
            a.recv_cq = id.c.recv_cq;
        }
    }
    if a.srq.is_null() && !id.c.srq.is_null() {
        a.srq = id.c.srq;
    }
    let qp = if a.qp_type == IBV_QPT_XRC_RECV {
        // SAFETY: a live PD and valid attributes.
        unsafe { super::xrc::create_target_qp(pd, a) }
    } else {
        // SAFETY: a live PD and valid attributes.
        unsafe { crate::qp::shim_ibv_create_qp(pd, attr) }
    };
    if qp.is_null() {
        // SAFETY: ours, unused.
        unsafe { free_cqs(id) };
        return Err(match errno() {
            0 => libc::ENOMEM,
            e => e,
        });
    }
    id.c.qp = qp;
    id.c.pd = pd;
    id.c.qp_type = a.qp_type;
    // SAFETY: the QP just made.
    id.st().qp_num = Some(unsafe { (*qp).qp_num });
    let moved = if id.is_ud() {
        modify(id, IBV_QPS_INIT)
            .and_then(|()| modify(id, IBV_QPS_RTR))
            .and_then(|()| modify(id, IBV_QPS_RTS))
    } else {
        modify(id, IBV_QPS_INIT)
    };
    if let Err(e) = moved {
        // SAFETY: the QP just made, and our CQs.
        unsafe {
            crate::qp::shim_ibv_destroy_qp(qp);
            free_cqs(id);
        }
        id.c.qp = std::ptr::null_mut();
        return Err(e);
    }
    Ok(())
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

pub unsafe extern "C" fn shim_rdma_create_qp(
    id: *mut rdma_cm_id,
    pd: *mut ibv_pd,
    attr: *mut ibv_qp_init_attr,
) -> c_int {
    // SAFETY: (caller) NULL or an id of ours.
    if unsafe { super::global::forked_id(id) } {
        return fail(super::global::FORKED);
    }
    // SAFETY: (caller) as create_qp asks.
    ret(unsafe { create_qp(id, pd, attr) })
}

pub unsafe extern "C" fn shim_rdma_create_qp_ex(
    id: *mut rdma_cm_id,
    attr: *mut ibv_qp_init_attr_ex,
) -> c_int {
    // SAFETY: (caller) NULL or an id of ours.
    if unsafe { super::global::forked_id(id) } {
        return fail(super::global::FORKED);
    }
    if id.is_null() || attr.is_null() {
        return fail(libc::EINVAL);
    }
    // SAFETY: (caller) readable attributes.
    let x = unsafe { &mut *attr };
    // The basic attributes only: extended QP features through an id are
    // not offered (EOPNOTSUPP, as a provider without them).
    if x.comp_mask & !IBV_QP_INIT_ATTR_PD != 0 {
        return fail(libc::EOPNOTSUPP);
    }
    let mut a = ibv_qp_init_attr {
        qp_context: x.qp_context,
        send_cq: x.send_cq,
        recv_cq: x.recv_cq,
        srq: x.srq,
        cap: x.cap,
        qp_type: x.qp_type,
        sq_sig_all: x.sq_sig_all,
    };
    let pd = if x.comp_mask & IBV_QP_INIT_ATTR_PD != 0 {
        x.pd
    } else {
        std::ptr::null_mut()
    };
    // SAFETY: (caller) a live id; `a` is a local.
    let r = unsafe { create_qp(id, pd, &mut a) };
    x.cap = a.cap;
    x.send_cq = a.send_cq;
    x.recv_cq = a.recv_cq;
    ret(r)
}

pub unsafe extern "C" fn shim_rdma_destroy_qp(idp: *mut rdma_cm_id) {
    // SAFETY: (caller) NULL or an id of ours.
    if unsafe { super::global::forked_id(idp) } {
        return;
    }
    if idp.is_null() {
        return;
    }
    // SAFETY: (caller) a live id of ours.
    let id = unsafe { &mut *(idp as *mut ShimId) };
    let qp = std::mem::replace(&mut id.c.qp, std::ptr::null_mut());
    id.st().qp_num = None;
    if !qp.is_null() {
        // SAFETY: the id's QP, no longer reachable through it.
        unsafe { crate::qp::shim_ibv_destroy_qp(qp) };
    }
    // SAFETY: the QP on them is gone.
    unsafe { free_cqs(id) };
}

pub unsafe extern "C" fn shim_rdma_create_srq(
    idp: *mut rdma_cm_id,
    mut pd: *mut ibv_pd,
    attr: *mut ibv_srq_init_attr,
) -> c_int {
    // SAFETY: (caller) NULL or an id of ours.
    if unsafe { super::global::forked_id(idp) } {
        return fail(super::global::FORKED);
    }
    if idp.is_null() || attr.is_null() {
        return fail(libc::EINVAL);
    }
    // SAFETY: (caller) a live id of ours.
    let id = unsafe { &mut *(idp as *mut ShimId) };
    if pd.is_null() {
        pd = if id.c.pd.is_null() {
            match global().and_then(|g| g.default_pd()) {
                Ok(p) => p,
                Err(e) => return fail(e),
            }
        } else {
            id.c.pd
        };
    }
    let srq = if id.c.qp_type == IBV_QPT_XRC_RECV {
        // SAFETY: a live id and PD, the caller's attributes.
        match unsafe { super::xrc::create_srq(id, pd, attr) } {
            Ok(s) => s,
            Err(e) => return fail(e),
        }
    } else {
        // SAFETY: a live PD and the caller's attributes.
        unsafe { crate::srq::shim_ibv_create_srq(pd, attr) }
    };
    if srq.is_null() {
        return -1;
    }
    id.c.srq = srq;
    id.c.pd = pd;
    0
}

pub unsafe extern "C" fn shim_rdma_create_srq_ex(
    id: *mut rdma_cm_id,
    attr: *mut ibv_srq_init_attr_ex,
) -> c_int {
    // SAFETY: (caller) NULL or an id of ours.
    if unsafe { super::global::forked_id(id) } {
        return fail(super::global::FORKED);
    }
    if id.is_null() || attr.is_null() {
        return fail(libc::EINVAL);
    }
    // SAFETY: (caller) readable attributes.
    let x = unsafe { &*attr };
    if x.srq_type != IBV_SRQT_BASIC {
        return fail(libc::EOPNOTSUPP);
    }
    let mut a = ibv_srq_init_attr {
        srq_context: x.srq_context,
        attr: x.attr,
    };
    let pd = if x.comp_mask & IBV_SRQ_INIT_ATTR_PD != 0 {
        x.pd
    } else {
        std::ptr::null_mut()
    };
    // SAFETY: (caller) a live id; `a` is a local.
    unsafe { shim_rdma_create_srq(id, pd, &mut a) }
}

pub unsafe extern "C" fn shim_rdma_destroy_srq(idp: *mut rdma_cm_id) {
    // SAFETY: (caller) NULL or an id of ours.
    if unsafe { super::global::forked_id(idp) } {
        return;
    }
    if idp.is_null() {
        return;
    }
    // SAFETY: (caller) a live id of ours.
    let id = unsafe { &mut *(idp as *mut ShimId) };
    let srq = std::mem::replace(&mut id.c.srq, std::ptr::null_mut());
    if !srq.is_null() {
        // SAFETY: the id's SRQ.
        unsafe { crate::srq::shim_ibv_destroy_srq(srq) };
    }
}
