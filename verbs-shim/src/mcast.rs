//! `ibv_attach_mcast` / `ibv_detach_mcast`: a UD QP joins or leaves a
//! multicast group of the soft device (errnos: the device's, as rxe's
//! behind ib_core).

use crate::conv::gid_bytes;
use crate::ffi::*;
use crate::qp::ShimQp;
use soft_rdma::verbs::Gid;

/// # Safety
/// `qp` is NULL or a live QP; `gid` is NULL or points to an `ibv_gid`.
unsafe fn with_qp(
    qp: *mut ibv_qp,
    gid: *const ibv_gid,
    f: impl FnOnce(&ShimQp, Gid) -> Result<(), soft_rdma::verbs::Errno>,
) -> c_int {
    if qp.is_null() || gid.is_null() {
        return libc::EINVAL;
    }
    // SAFETY: a live object's context pointer (caller).
    if unsafe { crate::context::forked_away((*qp).context) } {
        return crate::context::FORKED;
    }
    // SAFETY: (caller) a live QP and a readable GID.
    let (w, g) = unsafe { (ShimQp::from_c(qp), Gid(gid_bytes(&*gid))) };
    match f(w, g) {
        Ok(()) => 0,
        Err(e) => e.0,
    }
}

pub unsafe extern "C" fn shim_ibv_attach_mcast(
    qp: *mut ibv_qp,
    gid: *const ibv_gid,
    lid: u16,
) -> c_int {
    // SAFETY: the caller's QP and GID.
    unsafe { with_qp(qp, gid, |w, g| w.soft.attach_mcast(g, lid)) }
}

pub unsafe extern "C" fn shim_ibv_detach_mcast(
    qp: *mut ibv_qp,
    gid: *const ibv_gid,
    lid: u16,
) -> c_int {
    // SAFETY: the caller's QP and GID.
    unsafe { with_qp(qp, gid, |w, g| w.soft.detach_mcast(g, lid)) }
}
