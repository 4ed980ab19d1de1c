//! Memory regions: pinned, explicit ODP and implicit ODP (`addr` NULL with
//! `length` SIZE_MAX and `IBV_ACCESS_ON_DEMAND`), and `ibv_advise_mr`.

use crate::conv;
use crate::ffi::*;
use crate::pd::ShimPd;
use crate::registry::MRS;
use soft_rdma::verbs::{Mr, Rereg};

#[repr(C)]
pub struct ShimMr {
    pub mr: ibv_mr,
    pub soft: Mr,
    /// The command file its handle is in (the context may be closed first).
    file: std::sync::Arc<crate::import::CmdFile>,
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
    // SAFETY: a live object's context pointer.
    if unsafe { crate::context::forked_away((*pd).context) } {
        return fail_null(crate::context::FORKED);
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
    // SAFETY: the PD's context is live.
    let file = unsafe { crate::import::file(p.pd.context) };
    let w = Box::into_raw(Box::new(ShimMr { mr, soft, file }));
    MRS.insert(lkey, w);
    // SAFETY: `w` is live until ibv_dereg_mr, which forgets the handle.
    unsafe { (*w).mr.handle = (*w).file.add_mr(w) };
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
    // SAFETY: a live object's context pointer.
    if unsafe { crate::context::forked_away((*mr).context) } {
        return crate::context::FORKED;
    }
    // An imported MR: this context's view goes (see import.rs).
    // SAFETY: a live MR.
    if unsafe { crate::import::release_imported_mr(mr) } {
        return 0;
    }
    // Memory windows bound to it: EBUSY, and it lives on.
    // SAFETY: a live MR from ibv_reg_mr.
    if let Err(e) = unsafe { &*(mr as *const ShimMr) }.soft.dereg_in_place() {
        return e.0;
    }
    // SAFETY: `mr` came from ibv_reg_mr's Box; this ends its life.
    let w = unsafe { Box::from_raw(mr as *mut ShimMr) };
    MRS.remove(w.soft.lkey());
    w.file.forget(w.mr.handle);
    0
}

/// `ibv_rereg_mr`: rdma-core's input checks (`IBV_REREG_MR_ERR_INPUT`,
/// errno EINVAL), then the kernel's and the device's (`IBV_REREG_MR_ERR_CMD`
/// with their errno: EINVAL for no flag, a PD of another context or rights
/// against the verbs rule). On success the C struct follows (PD, address,
/// length; the keys stay); on failure the MR is unchanged and still needs
/// `ibv_dereg_mr`.
pub unsafe extern "C" fn shim_ibv_rereg_mr(
    mr: *mut ibv_mr,
    flags: c_int,
    pd: *mut ibv_pd,
    addr: *mut c_void,
    length: usize,
    access: c_int,
) -> c_int {
    let input = |e| {
        set_errno(e);
        IBV_REREG_MR_ERR_INPUT
    };
    let flags = flags as c_uint;
    if mr.is_null() || crate::import::is_imported_mr(mr) {
        return input(libc::EINVAL);
    }
    if flags & !IBV_REREG_MR_FLAGS_SUPPORTED != 0 {
        return input(libc::EINVAL);
    }
    let translation = flags & IBV_REREG_MR_CHANGE_TRANSLATION != 0;
    if translation && (addr.is_null() || length == 0) {
        return input(libc::EINVAL);
    }
    if !translation && (!addr.is_null() || length != 0) {
        return input(libc::EINVAL);
    }
    // SAFETY: a live MR from ibv_reg_mr (imported ones were refused above);
    // the application does not use it concurrently with its re-registration.
    let w = unsafe { &mut *(mr as *mut ShimMr) };
    // SAFETY: the PD is NULL or a live PD of the caller's.
    match unsafe { rereg(w, flags, pd, addr, length, access) } {
        Ok(()) => 0,
        Err(e) => {
            set_errno(e);
            IBV_REREG_MR_ERR_CMD
        }
    }
}

/// The command half of `ibv_rereg_mr`.
///
/// # Safety
/// `pd` must be NULL or a live PD.
unsafe fn rereg(
    w: &mut ShimMr,
    flags: c_uint,
    pd: *mut ibv_pd,
    addr: *mut c_void,
    length: usize,
    access: c_int,
) -> Result<(), i32> {
    if flags == 0 {
        return Err(libc::EINVAL);
    }
    let mut change = Rereg::default();
    if flags & IBV_REREG_MR_CHANGE_TRANSLATION != 0 {
        change.translation = Some((addr as u64, length as u64));
    }
    let new_pd = if flags & IBV_REREG_MR_CHANGE_PD != 0 {
        // As the kernel, which finds no such PD handle in the MR's file.
        // SAFETY: (caller) NULL or a live PD.
        if pd.is_null() || !crate::import::same_file(unsafe { (*pd).context }, w.mr.context) {
            return Err(libc::EINVAL);
        }
        // SAFETY: (caller) a live PD.
        Some(unsafe { ShimPd::from_c(pd) })
    } else {
        None
    };
    change.pd = new_pd.map(|p| &p.soft);
    if flags & IBV_REREG_MR_CHANGE_ACCESS != 0 {
        change.access = Some(conv::access_from_c(access as c_uint)?);
    }
    w.soft.rereg(change).map_err(|e| e.0)?;
    if new_pd.is_some() {
        w.mr.pd = pd;
    }
    if change.translation.is_some() {
        w.mr.addr = addr;
        w.mr.length = length;
    }
    w.mr.lkey = w.soft.lkey();
    w.mr.rkey = w.soft.rkey();
    Ok(())
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
