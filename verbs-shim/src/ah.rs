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
    // SAFETY: a live object's context pointer.
    if unsafe { crate::context::forked_away((*pd).context) } {
        return fail_null(crate::context::FORKED);
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
    // SAFETY: a live object's context pointer.
    if unsafe { crate::context::forked_away((*ah).context) } {
        return crate::context::FORKED;
    }
    // SAFETY: the Box from ibv_create_ah.
    drop(unsafe { Box::from_raw(ah as *mut ShimAh) });
    0
}

/// `ibv_init_ah_from_wc`: the address that answers a UD receive — the
/// GRH's source as the destination, its destination (one of our GIDs) as
/// the source index. The device writes the IPv6 layout (RoCE v2 GIDs), so
/// that is what is read; a receive without a GRH cannot be answered on
/// RoCE (EINVAL).
pub unsafe extern "C" fn shim_ibv_init_ah_from_wc(
    ctx: *mut ibv_context,
    port_num: u8,
    wc: *const ibv_wc,
    grh: *const ibv_grh,
    attr: *mut ibv_ah_attr,
) -> c_int {
    if ctx.is_null() || wc.is_null() || grh.is_null() || attr.is_null() {
        set_errno(libc::EINVAL);
        return -1;
    }
    // SAFETY: the caller's completion, GRH area (40 bytes), attributes, and
    // a live context of ours.
    let (wc, grh, attr, c) = unsafe {
        (
            &*wc,
            &*(grh as *const [u8; 40]),
            &mut *attr,
            crate::context::ShimContext::from_c(ctx),
        )
    };
    *attr = ibv_ah_attr {
        port_num,
        sl: wc.sl,
        ..Default::default()
    };
    if wc.wc_flags & IBV_WC_GRH == 0 || grh[0] >> 4 != 6 {
        set_errno(libc::EINVAL);
        return -1;
    }
    let mut sgid = [0u8; 16];
    sgid.copy_from_slice(&grh[8..24]);
    let mut dgid = [0u8; 16];
    dgid.copy_from_slice(&grh[24..40]);
    let Some((index, _)) = c.dev.gids().into_iter().find(|(_, g)| g.0 == dgid) else {
        set_errno(libc::ENOENT);
        return -1;
    };
    attr.is_global = 1;
    attr.grh.dgid = conv::gid_to_c(Gid(sgid));
    attr.grh.flow_label = u32::from_be_bytes([0, grh[1] & 0x0f, grh[2], grh[3]]);
    attr.grh.sgid_index = index as u8;
    attr.grh.hop_limit = 0xff;
    attr.grh.traffic_class = (grh[0] << 4) | (grh[1] >> 4);
    0
}

/// `ibv_create_ah_from_wc`: [`shim_ibv_init_ah_from_wc`], then an AH.
pub unsafe extern "C" fn shim_ibv_create_ah_from_wc(
    pd: *mut ibv_pd,
    wc: *const ibv_wc,
    grh: *const ibv_grh,
    port_num: u8,
) -> *mut ibv_ah {
    if pd.is_null() {
        return fail_null(libc::EINVAL);
    }
    let mut attr = ibv_ah_attr::default();
    // SAFETY: a live PD; the rest is checked by the callee.
    unsafe {
        if shim_ibv_init_ah_from_wc((*pd).context, port_num, wc, grh, &mut attr) != 0 {
            return std::ptr::null_mut();
        }
        shim_ibv_create_ah(pd, &mut attr)
    }
}
