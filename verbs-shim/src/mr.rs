//! Memory regions: pinned, explicit ODP and implicit ODP (`addr` NULL with
//! `length` SIZE_MAX and `IBV_ACCESS_ON_DEMAND`), and `ibv_advise_mr`.

use crate::conv;
use crate::ffi::*;
use crate::pd::ShimPd;
use crate::registry::MRS;
use soft_rdma::verbs::Mr;

#[repr(C)]
pub struct ShimMr {
    pub mr: ibv_mr,
    pub soft: Mr,
}

// The C pointer converts back to the wrapper with a cast: the C struct comes first.
const _: () = assert!(std::mem::offset_of!(ShimMr, mr) == 0);

/// # Safety
/// `pd` must be NULL or a live PD.
unsafe fn reg(
    pd: *mut ibv_pd,
    addr: *mut c_void,
    length: usize,
    iova: u64,
    access: c_int,
) -> *mut ibv_mr {
    if pd.is_null() {
        return fail_null(libc::EINVAL);
    }
    if iova != addr as u64 {
        // Needs an IOVA-based MR in soft-rdma (see the README's "next").
        return fail_null(libc::EOPNOTSUPP);
    }
    let access = match conv::access_from_c(access as c_uint) {
        Ok(a) => a,
        Err(e) => return fail_null(e),
    };
    // SAFETY: a live PD from ibv_alloc_pd.
    let p = unsafe { ShimPd::from_c(pd) };
    let soft = match p.soft.reg_mr(addr as u64, length as u64, access) {
        Ok(m) => m,
        Err(e) => return fail_null(e.0),
    };
    let mr = ibv_mr {
        context: p.pd.context,
        pd,
        addr,
        length,
        handle: 0,
        lkey: soft.lkey(),
        rkey: soft.rkey(),
    };
    let lkey = soft.lkey();
    let w = Box::into_raw(Box::new(ShimMr { mr, soft }));
    MRS.insert(lkey, w);
    w as *mut ibv_mr
}

pub unsafe extern "C" fn shim_ibv_reg_mr(
    pd: *mut ibv_pd,
    addr: *mut c_void,
    length: usize,
    access: c_int,
) -> *mut ibv_mr {
    // SAFETY: the caller passes a live PD (or NULL, refused).
    unsafe { reg(pd, addr, length, addr as u64, access) }
}

pub unsafe extern "C" fn shim_ibv_reg_mr_iova(
    pd: *mut ibv_pd,
    addr: *mut c_void,
    length: usize,
    iova: u64,
    access: c_int,
) -> *mut ibv_mr {
    // SAFETY: the caller passes a live PD (or NULL, refused).
    unsafe { reg(pd, addr, length, iova, access) }
}

pub unsafe extern "C" fn shim_ibv_reg_mr_iova2(
    pd: *mut ibv_pd,
    addr: *mut c_void,
    length: usize,
    iova: u64,
    access: c_uint,
) -> *mut ibv_mr {
    // SAFETY: the caller passes a live PD (or NULL, refused).
    unsafe { reg(pd, addr, length, iova, access as c_int) }
}

pub unsafe extern "C" fn shim_ibv_dereg_mr(mr: *mut ibv_mr) -> c_int {
    if mr.is_null() {
        return libc::EINVAL;
    }
    // Memory windows bound to it: EBUSY, and it lives on.
    // SAFETY: a live MR from ibv_reg_mr.
    if let Err(e) = unsafe { &*(mr as *const ShimMr) }.soft.dereg_in_place() {
        return e.0;
    }
    // SAFETY: `mr` came from ibv_reg_mr's Box; this ends its life.
    let w = unsafe { Box::from_raw(mr as *mut ShimMr) };
    MRS.remove(w.soft.lkey());
    0
}

/// `ibv_advise_mr`: prefetch the SGEs' ranges of their (ODP) MRs.
pub unsafe extern "C" fn advise_mr_op(
    pd: *mut ibv_pd,
    advice: ib_uverbs_advise_mr_advice,
    flags: u32,
    sg: *mut ibv_sge,
    n: u32,
) -> c_int {
    let Some(advice) = conv::advice_from_c(advice) else {
        return libc::EOPNOTSUPP;
    };
    if sg.is_null() || n == 0 || flags & !IB_UVERBS_ADVISE_MR_FLAG_FLUSH != 0 {
        return libc::EINVAL;
    }
    let flush = flags & IB_UVERBS_ADVISE_MR_FLAG_FLUSH != 0;
    // SAFETY: the caller passes `n` SGEs.
    let sges = unsafe { std::slice::from_raw_parts(sg, n as usize) };
    for s in sges {
        let Some(w) = MRS.get::<ShimMr>(s.lkey) else {
            return libc::EINVAL;
        };
        // SAFETY: registered MRs are live until ibv_dereg_mr removes them.
        let w = unsafe { &*w };
        if w.mr.pd != pd {
            return libc::EINVAL;
        }
        if let Err(e) = w.soft.advise(advice, s.addr, s.length.into(), flush) {
            return e.0;
        }
    }
    0
}
