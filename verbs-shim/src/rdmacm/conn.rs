//! `rdma_connect`, `rdma_accept`, `rdma_reject`, `rdma_establish`,
//! `rdma_disconnect`, and the ECE calls (no ECE: EOPNOTSUPP).
//!
//! A connect of a TCP/IB id sends a REQ whose private data begins with
//! the rdma_cm IP header (so the user has 56 bytes of the REQ's 92); a UD
//! id asks by SIDR_REQ. Parameters are clamped to the device as librdmacm
//! clamps them; a NULL `conn_param` takes librdmacm's defaults.

use super::channel;
use super::global::{global, Agreed, Phase, ShimId};
use super::qp::{self, UDP_QKEY};
use super::{fail, ret};
use crate::ffi::rdmacm_bindings::*;
use crate::ffi::*;
use soft_rdma_cm::wire::ip::IP_HEADER_LEN;
use soft_rdma_cm::wire::{IpHeader, PortSpace};
use soft_rdma_cm::{rendezvous, ConnParam};

/// The user's private data.
///
/// # Safety
/// `p` is NULL or readable.
unsafe fn private(p: *const rdma_conn_param) -> Vec<u8> {
    if p.is_null() {
        return vec![];
    }
    // SAFETY: (caller) a readable parameter block with `private_data_len`
    // readable bytes at `private_data`.
    unsafe {
        let p = &*p;
        if p.private_data.is_null() || p.private_data_len == 0 {
            return vec![];
        }
        std::slice::from_raw_parts(p.private_data as *const u8, p.private_data_len.into()).to_vec()
    }
}

/// How long a connect to a local port nobody holds asks again before the
/// REQ goes to our own CM (and is rejected): a server may be between
/// destroying a listener and binding the next (perftest -R does exactly
/// that between its two connections). The kernel's REQ takes a trip
/// through the CM and the network stack first; this is that margin.
const NO_LISTENER_GRACE: std::time::Duration = std::time::Duration::from_millis(200);

/// The device listening at `dst` ([`rendezvous::resolve`]), asking again
/// for [`NO_LISTENER_GRACE`] while nobody holds a local port.
fn listener_of(
    ps: PortSpace,
    dst: std::net::SocketAddr,
) -> std::io::Result<Option<soft_rdma::verbs::Gid>> {
    let end = std::time::Instant::now() + NO_LISTENER_GRACE;
    loop {
        let r = rendezvous::resolve(ps, dst)?;
        if r.is_some() || std::time::Instant::now() >= end {
            return Ok(r);
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// A depth the user asked for: `RDMA_MAX_RESP_RES`/`RDMA_MAX_INIT_DEPTH`
/// (255) is the device's maximum; more than the device has is EINVAL, as
/// librdmacm checks.
fn depth(v: u8, max: u8) -> Result<u8, i32> {
    match v {
        255 => Ok(max),
        v if v > max => Err(libc::EINVAL),
        v => Ok(v),
    }
}

/// librdmacm: an id without a QP must say which QP (`conn_param`).
fn need_param(id: &ShimId, p: Option<&rdma_conn_param>) -> Result<(), i32> {
    if id.c.qp.is_null() && p.is_none() {
        return Err(libc::EINVAL);
    }
    Ok(())
}

fn qpn_of(id: &ShimId, p: Option<&rdma_conn_param>) -> u32 {
    if id.c.qp.is_null() {
        p.map_or(0, |p| p.qp_num)
    } else {
        // SAFETY: the id's QP is live while the id has it.
        unsafe { (*id.c.qp).qp_num }
    }
}

pub unsafe extern "C" fn shim_rdma_connect(
    idp: *mut rdma_cm_id,
    param: *mut rdma_conn_param,
) -> c_int {
    // SAFETY: (caller) NULL or an id of ours.
    if unsafe { super::global::forked_id(idp) } {
        return fail(super::global::FORKED);
    }
    if idp.is_null() {
        return fail(libc::EINVAL);
    }
    // SAFETY: (caller) a live id; `param` NULL or readable.
    let (id, p, data) = unsafe { (&*(idp as *const ShimId), param.as_ref(), private(param)) };
    ret(connect(id, p, data))
}

fn connect(id: &ShimId, p: Option<&rdma_conn_param>, data: Vec<u8>) -> Result<(), i32> {
    let g = global()?;
    need_param(id, p)?;
    let (src, dst, peer) = {
        let st = id.st();
        if st.phase != Phase::RouteResolved {
            return Err(libc::EINVAL);
        }
        match (st.src, st.dst, st.peer) {
            (Some(s), Some(d), Some(p)) => (s, d, p),
            _ => return Err(libc::EINVAL),
        }
    };
    let ps = PortSpace::from_value(id.c.ps).ok_or(libc::EINVAL)?;
    // The listener is looked up again now: the kernel's REQ to a local
    // address finds whoever listens when it arrives, not when the address
    // was resolved (a server may listen in between, or restart).
    let peer = match listener_of(ps, dst) {
        Ok(Some(p)) => p,
        Ok(None) => g.gid,
        Err(_) => peer,
    };
    id.st().peer = Some(peer);
    let mut pd = vec![0u8; IP_HEADER_LEN];
    IpHeader { src, dst: dst.ip() }
        .emit(&mut pd)
        .map_err(|_| libc::EINVAL)?;
    pd.extend_from_slice(&data);
    let service_id = ps.service_id(dst.port());
    let max = g.max_rd_atomic;
    let agreed = Agreed {
        responder_resources: p.map_or(Ok(max), |p| depth(p.responder_resources, max))?,
        initiator_depth: p.map_or(Ok(max), |p| depth(p.initiator_depth, max))?,
        retry_count: p.map_or(7, |p| p.retry_count.min(7)),
        rnr_retry_count: p.map_or(7, |p| p.rnr_retry_count.min(7)),
    };
    id.st().phase = Phase::Connecting;
    let r = if id.is_ud() {
        id.cm.resolve_ud(peer, service_id, &pd)
    } else {
        let psn = {
            let mut st = id.st();
            st.agreed = agreed;
            st.psn
        };
        let cp = ConnParam {
            qpn: qpn_of(id, p),
            psn,
            responder_resources: agreed.responder_resources,
            initiator_depth: agreed.initiator_depth,
            retry_count: agreed.retry_count,
            rnr_retry_count: agreed.rnr_retry_count,
            srq: !id.c.srq.is_null() || p.is_some_and(|p| p.srq != 0),
            path_mtu: g.mtu as u8,
            traffic_class: id.st().tos,
            xrc: id.c.qp_type == IBV_QPT_XRC_SEND,
            local_ca_guid: 0,
            private_data: pd,
        };
        id.cm.connect(peer, service_id, &cp)
    };
    if let Err(e) = r {
        id.st().phase = Phase::RouteResolved;
        return Err(e.0);
    }
    if id.sync {
        // SAFETY: a live synchronous id.
        unsafe { channel::complete(id, RDMA_CM_EVENT_ESTABLISHED) }?;
    }
    Ok(())
}

pub unsafe extern "C" fn shim_rdma_accept(
    idp: *mut rdma_cm_id,
    param: *mut rdma_conn_param,
) -> c_int {
    // SAFETY: (caller) NULL or an id of ours.
    if unsafe { super::global::forked_id(idp) } {
        return fail(super::global::FORKED);
    }
    if idp.is_null() {
        return fail(libc::EINVAL);
    }
    // SAFETY: (caller) a live id; `param` NULL or readable.
    let (id, p, data) = unsafe { (&*(idp as *const ShimId), param.as_ref(), private(param)) };
    ret(accept(id, p, data))
}

fn accept(id: &ShimId, p: Option<&rdma_conn_param>, data: Vec<u8>) -> Result<(), i32> {
    let g = global()?;
    need_param(id, p)?;
    let remote = {
        let st = id.st();
        if st.phase != Phase::Requested {
            return Err(libc::EINVAL);
        }
        st.remote
    };
    if id.is_ud() {
        id.cm
            .accept_ud(qpn_of(id, p), UDP_QKEY, &data)
            .map_err(|e| e.0)?;
        id.st().phase = Phase::Connected;
        return Ok(());
    }
    let r = remote.ok_or(libc::EINVAL)?;
    let max = g.max_rd_atomic;
    let agreed = Agreed {
        responder_resources: match p {
            Some(p) => depth(p.responder_resources, max)?,
            None => r.initiator_depth.min(max),
        },
        initiator_depth: match p {
            Some(p) => depth(p.initiator_depth, max)?,
            None => r.responder_resources.min(max),
        },
        retry_count: r.retry_count,
        rnr_retry_count: r.rnr_retry_count,
    };
    let psn = {
        let mut st = id.st();
        st.agreed = agreed;
        st.psn
    };
    if let Err(e) = qp::accept_moves(id) {
        let _ = id.cm.reject(&[]);
        return Err(e);
    }
    let cp = ConnParam {
        qpn: qpn_of(id, p),
        psn,
        responder_resources: agreed.responder_resources,
        initiator_depth: agreed.initiator_depth,
        retry_count: 7,
        rnr_retry_count: p.map_or(7, |p| p.rnr_retry_count.min(7)),
        srq: !id.c.srq.is_null() || p.is_some_and(|p| p.srq != 0),
        path_mtu: g.mtu as u8,
        traffic_class: 0, // a REP carries no path
        xrc: false,
        local_ca_guid: 0,
        private_data: data,
    };
    id.cm.accept(&cp).map_err(|e| e.0)?;
    id.st().phase = Phase::Connecting;
    if id.sync {
        // SAFETY: a live synchronous id.
        unsafe { channel::complete(id, RDMA_CM_EVENT_ESTABLISHED) }?;
    }
    Ok(())
}

pub unsafe extern "C" fn shim_rdma_reject(
    idp: *mut rdma_cm_id,
    data: *const c_void,
    len: u8,
) -> c_int {
    // SAFETY: (caller) NULL or an id of ours.
    if unsafe { super::global::forked_id(idp) } {
        return fail(super::global::FORKED);
    }
    if idp.is_null() {
        return fail(libc::EINVAL);
    }
    // SAFETY: (caller) a live id; `len` readable bytes at `data`.
    let (id, pd) = unsafe {
        let pd = if data.is_null() {
            vec![]
        } else {
            std::slice::from_raw_parts(data as *const u8, len.into()).to_vec()
        };
        (&*(idp as *const ShimId), pd)
    };
    let r = id.cm.reject(&pd).map_err(|e| e.0);
    if r.is_ok() {
        id.st().phase = Phase::Disconnected;
    }
    ret(r)
}

pub unsafe extern "C" fn shim_rdma_establish(idp: *mut rdma_cm_id) -> c_int {
    // SAFETY: (caller) NULL or an id of ours.
    if unsafe { super::global::forked_id(idp) } {
        return fail(super::global::FORKED);
    }
    if idp.is_null() {
        return fail(libc::EINVAL);
    }
    // SAFETY: (caller) a live id.
    let id = unsafe { &*(idp as *const ShimId) };
    if !id.c.qp.is_null() {
        // librdmacm moves the id's QP first.
        // SAFETY: the id's QP is live while the id has it.
        return ret(unsafe { qp::complete_connect(id) });
    }
    id.st().quiet_established = true;
    let r = id.cm.establish().map_err(|e| e.0);
    if r.is_err() {
        id.st().quiet_established = false;
    }
    ret(r)
}

pub unsafe extern "C" fn shim_rdma_disconnect(idp: *mut rdma_cm_id) -> c_int {
    // SAFETY: (caller) NULL or an id of ours.
    if unsafe { super::global::forked_id(idp) } {
        return fail(super::global::FORKED);
    }
    if idp.is_null() {
        return fail(libc::EINVAL);
    }
    // SAFETY: (caller) a live id.
    let id = unsafe { &*(idp as *const ShimId) };
    qp::to_error_if_live(id);
    match id.cm.disconnect() {
        // The kernel's rdma_disconnect "initiates or responds to" a
        // disconnect and succeeds for a connection already going or gone
        // (its failed DREQ and DREP are not reported): a peer's DREQ was
        // answered by the CM already, or this id sent one before.
        Err(e)
            if e.0 == libc::EINVAL
                && matches!(id.st().phase, Phase::Connected | Phase::Disconnected) =>
        {
            0
        }
        r => ret(r.map_err(|e| e.0)),
    }
}

pub unsafe extern "C" fn shim_rdma_set_local_ece(id: *mut rdma_cm_id, _ece: *mut c_void) -> c_int {
    if id.is_null() {
        return fail(libc::EINVAL);
    }
    fail(libc::EOPNOTSUPP)
}

pub unsafe extern "C" fn shim_rdma_get_remote_ece(id: *mut rdma_cm_id, _ece: *mut c_void) -> c_int {
    if id.is_null() {
        return fail(libc::EINVAL);
    }
    fail(libc::EOPNOTSUPP)
}

pub unsafe extern "C" fn shim_rdma_reject_ece(
    idp: *mut rdma_cm_id,
    data: *const c_void,
    len: u8,
) -> c_int {
    // SAFETY: (caller) as rdma_reject.
    unsafe { shim_rdma_reject(idp, data, len) }
}
