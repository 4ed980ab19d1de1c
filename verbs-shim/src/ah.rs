//! Address handles (UD destinations): RoCE needs the GRH's destination GID.

use crate::conv;
use crate::ffi::*;
use crate::pd::ShimPd;
use soft_rdma::verbs::{Ah, Gid};

#[repr(C)]
pub struct ShimAh {
    pub ah: ibv_ah,
    pub soft: Ah,
}

// The C pointer converts back to the wrapper with a cast: the C struct comes first.
const _: () = assert!(std::mem::offset_of!(ShimAh, ah) == 0);

impl ShimAh {
    /// # Safety
    /// `ah` must be a live AH from `ibv_create_ah`.
    pub unsafe fn from_c<'a>(ah: *mut ibv_ah) -> &'a ShimAh {
        // SAFETY: (caller) `ah` is the first field of a live ShimAh.
        unsafe { &*(ah as *const ShimAh) }
    }
}

pub unsafe extern "C" fn shim_ibv_create_ah(
    pd: *mut ibv_pd,
    attr: *mut ibv_ah_attr,
) -> *mut ibv_ah {
    if pd.is_null() || attr.is_null() {
        return fail_null(libc::EINVAL);
    }
    // SAFETY: the caller's attributes and a live PD.
    let (a, p) = unsafe { (&*attr, ShimPd::from_c(pd)) };
    if a.is_global == 0 {
        return fail_null(libc::EINVAL);
    }
    let soft = p.soft.create_ah(Gid(conv::gid_bytes(&a.grh.dgid)));
    let w = Box::into_raw(Box::new(ShimAh {
        ah: ibv_ah {
            context: p.pd.context,
            pd,
            handle: 0,
        },
        soft,
    }));
    w as *mut ibv_ah
}

pub unsafe extern "C" fn shim_ibv_destroy_ah(ah: *mut ibv_ah) -> c_int {
    if ah.is_null() {
        return libc::EINVAL;
    }
    // SAFETY: the Box from ibv_create_ah.
    drop(unsafe { Box::from_raw(ah as *mut ShimAh) });
    0
}
