//! Protection domains.

use crate::context::ShimContext;
use crate::ffi::*;
use soft_rdma::verbs::Pd;

#[repr(C)]
pub struct ShimPd {
    pub pd: ibv_pd,
    pub soft: Pd,
}

// The C pointer converts back to the wrapper with a cast: the C struct comes first.
const _: () = assert!(std::mem::offset_of!(ShimPd, pd) == 0);

impl ShimPd {
    /// # Safety
    /// `pd` must be a live PD from `ibv_alloc_pd`.
    pub unsafe fn from_c<'a>(pd: *mut ibv_pd) -> &'a ShimPd {
        // SAFETY: (caller) `pd` is the first field of a live ShimPd.
        unsafe { &*(pd as *const ShimPd) }
    }
}

pub unsafe extern "C" fn shim_ibv_alloc_pd(ctx: *mut ibv_context) -> *mut ibv_pd {
    if ctx.is_null() {
        return fail_null(libc::EINVAL);
    }
    // SAFETY: live context.
    let soft = unsafe { ShimContext::from_c(ctx) }.dev.alloc_pd();
    let w = Box::into_raw(Box::new(ShimPd {
        pd: ibv_pd {
            context: ctx,
            handle: 0,
        },
        soft,
    }));
    w as *mut ibv_pd
}

pub unsafe extern "C" fn shim_ibv_dealloc_pd(pd: *mut ibv_pd) -> c_int {
    if pd.is_null() {
        return libc::EINVAL;
    }
    // An MR, QP or SRQ still uses it: EBUSY, and it lives on (as rdma-core).
    // SAFETY: a live PD from ibv_alloc_pd.
    if let Err((_, e)) = unsafe { ShimPd::from_c(pd) }.soft.clone().dealloc() {
        return e.0;
    }
    // SAFETY: `pd` came from ibv_alloc_pd's Box; this ends its life.
    drop(unsafe { Box::from_raw(pd as *mut ShimPd) });
    0
}
