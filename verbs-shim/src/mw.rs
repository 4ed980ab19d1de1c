//! Memory windows: the `alloc_mw`/`dealloc_mw`/`bind_mw` context ops behind
//! verbs.h's inline `ibv_alloc_mw`, `ibv_dealloc_mw` and `ibv_bind_mw`,
//! `IBV_WR_BIND_MW` in `ibv_post_send`, and the extended QP's
//! `wr_bind_mw`/`wr_local_inv` builders. The windows themselves are
//! soft-rdma's `Mw`.
//!
//! As rxe's provider: `ibv_bind_mw` (type 1) posts a BIND_MW work request
//! with the key `ibv_inc_rkey(mw->rkey)` and sets `mw->rkey` to it once
//! posted (a failed bind completes with `IBV_WC_MW_BIND_ERR`; undoing the
//! key is the application's, as the provider says). A type 2 window's
//! `mw->rkey` stays the one of its allocation; the key in force is the WR's.

use crate::ffi::*;
use crate::pd::ShimPd;
use crate::qp::ShimQp;
use soft_rdma::verbs as sv;
use soft_rdma::verbs::{Mw, MwType};

#[repr(C)]
pub struct ShimMw {
    pub mw: ibv_mw,
    pub soft: Mw,
}

// The C pointer converts back to the wrapper with a cast: the C struct comes first.
const _: () = assert!(std::mem::offset_of!(ShimMw, mw) == 0);

impl ShimMw {
    /// # Safety
    /// `mw` must be a live MW from `ibv_alloc_mw`.
    pub unsafe fn from_c<'a>(mw: *mut ibv_mw) -> &'a ShimMw {
        // SAFETY: (caller) `mw` is the first field of a live ShimMw.
        unsafe { &*(mw as *const ShimMw) }
    }
}

/// `mw_access_flags`: the remote rights a window grants (and local write,
/// accepted as rxe does); a zero-based window or another bit is EINVAL.
fn mw_access_from_c(a: c_uint) -> Result<sv::Access, i32> {
    let known = IBV_ACCESS_LOCAL_WRITE
        | IBV_ACCESS_REMOTE_WRITE
        | IBV_ACCESS_REMOTE_READ
        | IBV_ACCESS_REMOTE_ATOMIC;
    if a & !known != 0 {
        return Err(libc::EINVAL);
    }
    Ok(sv::Access(a))
}

/// The bind of window `mw` to `info` under `new_rkey`.
///
/// # Safety
/// `mw` must be a live MW; `info.mr` NULL or a live MR.
unsafe fn bind_of(
    mw: *mut ibv_mw,
    new_rkey: u32,
    info: &ibv_mw_bind_info,
) -> Result<sv::SendOp, i32> {
    if mw.is_null() || (info.mr.is_null() && (info.addr != 0 || info.length != 0)) {
        return Err(libc::EINVAL);
    }
    // SAFETY: (caller) a live MW.
    let w = unsafe { ShimMw::from_c(mw) };
    let mr_lkey = if info.mr.is_null() {
        0
    } else {
        // SAFETY: (caller) a live MR.
        unsafe { (*info.mr).lkey }
    };
    Ok(sv::SendOp::BindMw(sv::MwBind {
        mw_rkey: w.soft.rkey(),
        new_rkey,
        mr_lkey,
        addr: info.addr,
        length: info.length,
        access: mw_access_from_c(info.mw_access_flags)?,
    }))
}

/// `IBV_WR_BIND_MW` of `ibv_post_send`.
///
/// # Safety
/// The WR's `bind_mw.mw` must be a live MW and its `bind_info.mr` NULL or
/// a live MR (what `ibv_post_send` asks of its caller).
pub unsafe fn bind_wr_from_c(wr: &ibv_send_wr) -> Result<sv::SendOp, i32> {
    // SAFETY: the opcode says the caller filled `bind_mw`.
    let b = unsafe { wr.__bindgen_anon_2.bind_mw };
    // SAFETY: (caller) live MW and MR.
    unsafe { bind_of(b.mw, b.rkey, &b.bind_info) }
}

pub unsafe extern "C" fn alloc_mw_op(pd: *mut ibv_pd, kind: ibv_mw_type) -> *mut ibv_mw {
    if pd.is_null() {
        return fail_null(libc::EINVAL);
    }
    // SAFETY: a live object's context pointer.
    if unsafe { crate::context::forked_away((*pd).context) } {
        return fail_null(crate::context::FORKED);
    }
    // The kernel's uverbs refuses other types with EINVAL.
    let kind = match kind {
        IBV_MW_TYPE_1 => MwType::One,
        IBV_MW_TYPE_2 => MwType::Two,
        _ => return fail_null(libc::EINVAL),
    };
    // SAFETY: a live PD from ibv_alloc_pd.
    let p = unsafe { ShimPd::from_c(pd) };
    let soft = match p.soft.alloc_mw(kind) {
        Ok(m) => m,
        Err(e) => return fail_null(e.0),
    };
    let mw = ibv_mw {
        context: p.pd.context,
        pd,
        rkey: soft.rkey(),
        handle: 0,
        type_: if kind == MwType::One {
            IBV_MW_TYPE_1
        } else {
            IBV_MW_TYPE_2
        },
    };
    Box::into_raw(Box::new(ShimMw { mw, soft })) as *mut ibv_mw
}

pub unsafe extern "C" fn dealloc_mw_op(mw: *mut ibv_mw) -> c_int {
    if mw.is_null() {
        return libc::EINVAL;
    }
    // SAFETY: a live object's context pointer.
    if unsafe { crate::context::forked_away((*mw).context) } {
        return crate::context::FORKED;
    }
    // SAFETY: `mw` came from alloc_mw_op's Box; this ends its life.
    drop(unsafe { Box::from_raw(mw as *mut ShimMw) });
    0
}

/// `ibv_bind_mw` (type 1; the inline function checked the type, the MR's
/// PD and a NULL MR's range).
pub unsafe extern "C" fn bind_mw_op(
    qp: *mut ibv_qp,
    mw: *mut ibv_mw,
    mw_bind: *mut ibv_mw_bind,
) -> c_int {
    if qp.is_null() || mw.is_null() || mw_bind.is_null() {
        return libc::EINVAL;
    }
    // SAFETY: a live object's context pointer.
    if unsafe { crate::context::forked_away((*qp).context) } {
        return crate::context::FORKED;
    }
    // SAFETY: the caller's live bind request, MW and QP.
    let (b, old) = unsafe { (&*mw_bind, (*mw).rkey) };
    // ibv_inc_rkey: the next key byte, the window's index kept.
    let new_rkey = (old & 0xffff_ff00) | (old.wrapping_add(1) & 0xff);
    // SAFETY: a live MW; the bind info's MR is NULL or live.
    let op = match unsafe { bind_of(mw, new_rkey, &b.bind_info) } {
        Ok(op) => op,
        Err(e) => return e,
    };
    let wr = sv::SendWr {
        wr_id: b.wr_id,
        sg_list: &[],
        op,
        flags: crate::conv::send_flags_from_c(b.send_flags),
        ud: None,
    };
    // SAFETY: a live QP.
    if let Err((_, e)) = unsafe { ShimQp::from_c(qp) }.soft.post_send(&[wr]) {
        return e.0;
    }
    // SAFETY: a live MW, the caller's.
    unsafe { (*mw).rkey = new_rkey };
    0
}

/// `ibv_wr_bind_mw` of the extended QP.
pub unsafe extern "C" fn wr_bind_mw(
    qp: *mut ibv_qp_ex,
    mw: *mut ibv_mw,
    rkey: u32,
    bind_info: *const ibv_mw_bind_info,
) {
    if bind_info.is_null() {
        // SAFETY: reached only through a live extended QP.
        unsafe { crate::qp_ex::fail(qp, libc::EINVAL) };
        return;
    }
    // SAFETY: the caller's live MW and bind info (its MR NULL or live).
    match unsafe { bind_of(mw, rkey, &*bind_info) } {
        // SAFETY: reached only through a live extended QP.
        Ok(op) => unsafe { crate::qp_ex::build(qp, op) },
        // SAFETY: as above.
        Err(e) => unsafe { crate::qp_ex::fail(qp, e) },
    }
}

/// `ibv_wr_local_inv` of the extended QP.
pub unsafe extern "C" fn wr_local_inv(qp: *mut ibv_qp_ex, invalidate_rkey: u32) {
    // SAFETY: reached only through a live extended QP.
    unsafe { crate::qp_ex::build(qp, sv::SendOp::LocalInv(invalidate_rkey)) };
}
