//! XRC through an rdma_cm id, as librdmacm does it: an `IBV_QPT_XRC_RECV`
//! id's QP is a target QP of the process's XRC domain (opened on first
//! need, `fd` -1), and its `rdma_create_srq` an XRC SRQ of that domain
//! completing on the id's receive CQ. An `IBV_QPT_XRC_SEND` id's QP is an
//! ordinary initiator QP (`qp.rs`).

use super::global::{global, ShimId};
use crate::ffi::*;

/// The process's XRC domain for rdma_cm ids.
fn xrcd() -> Result<*mut ibv_xrcd, i32> {
    let g = global()?;
    let mut x = crate::sync::lock(&g.xrcd);
    if *x == 0 {
        let mut a = ibv_xrcd_init_attr {
            comp_mask: IBV_XRCD_INIT_ATTR_FD | IBV_XRCD_INIT_ATTR_OFLAGS,
            fd: -1,
            oflags: libc::O_CREAT,
        };
        // SAFETY: our live context and a local attribute struct.
        let d = unsafe { crate::xrc::open_xrcd_op(g.ctx, &mut a) };
        if d.is_null() {
            return Err(libc::ENOMEM);
        }
        *x = d as usize;
    }
    Ok(*x as *mut ibv_xrcd)
}

/// A target QP for an XRC_RECV id (the CQs in `a` are not used: a target
/// QP completes nothing; its SRQs do).
///
/// # Safety
/// `pd` live.
pub unsafe fn create_target_qp(pd: *mut ibv_pd, a: &mut ibv_qp_init_attr) -> *mut ibv_qp {
    let x = match xrcd() {
        Ok(x) => x,
        Err(e) => {
            crate::ffi::set_errno(e);
            return std::ptr::null_mut();
        }
    };
    let mut ax = ibv_qp_init_attr_ex {
        qp_context: a.qp_context,
        qp_type: IBV_QPT_XRC_RECV,
        comp_mask: IBV_QP_INIT_ATTR_XRCD,
        xrcd: x,
        ..Default::default()
    };
    // SAFETY: (caller) a live PD, whose context is the domain's.
    let qp = unsafe { crate::xrc::create_target((*pd).context, &mut ax) };
    a.cap = ax.cap;
    qp
}

/// `rdma_create_srq` of an XRC_RECV id: an XRC SRQ of the domain on the
/// id's receive CQ.
///
/// # Safety
/// `id` live with its CQs made; `pd` live; `attr` readable and writable.
pub unsafe fn create_srq(
    id: &ShimId,
    pd: *mut ibv_pd,
    attr: *mut ibv_srq_init_attr,
) -> Result<*mut ibv_srq, i32> {
    if id.c.recv_cq.is_null() {
        return Err(libc::EINVAL);
    }
    // SAFETY: (caller) readable attributes.
    let a = unsafe { &mut *attr };
    let mut ax = ibv_srq_init_attr_ex {
        srq_context: a.srq_context,
        attr: a.attr,
        comp_mask: IBV_SRQ_INIT_ATTR_TYPE
            | IBV_SRQ_INIT_ATTR_PD
            | IBV_SRQ_INIT_ATTR_XRCD
            | IBV_SRQ_INIT_ATTR_CQ,
        srq_type: IBV_SRQT_XRC,
        pd,
        xrcd: xrcd()?,
        cq: id.c.recv_cq,
        ..Default::default()
    };
    // SAFETY: (caller) a live PD; the domain and CQ are live.
    let srq = unsafe { crate::xrc::create_srq_ex_op((*pd).context, &mut ax) };
    a.attr = ax.attr;
    Ok(srq)
}
