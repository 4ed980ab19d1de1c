//! Shared receive queues.

use crate::ffi::*;
use crate::pd::ShimPd;
use crate::registry::SRQS;
use soft_rdma::verbs::Srq;
use std::sync::Mutex;

#[repr(C)]
pub struct ShimSrq {
    pub srq: ibv_srq,
    pub soft: Srq,
    /// max_wr, max_sge and the limit last armed (what `ibv_query_srq` says).
    attr: Mutex<ibv_srq_attr>,
}

// The C pointer converts back to the wrapper with a cast: the C struct comes first.
const _: () = assert!(std::mem::offset_of!(ShimSrq, srq) == 0);

impl ShimSrq {
    /// # Safety
    /// `srq` must be a live SRQ from `ibv_create_srq`.
    pub unsafe fn from_c<'a>(srq: *mut ibv_srq) -> &'a ShimSrq {
        // SAFETY: (caller) `srq` is the first field of a live ShimSrq.
        unsafe { &*(srq as *const ShimSrq) }
    }
}

pub unsafe extern "C" fn shim_ibv_create_srq(
    pd: *mut ibv_pd,
    init: *mut ibv_srq_init_attr,
) -> *mut ibv_srq {
    if pd.is_null() || init.is_null() {
        return fail_null(libc::EINVAL);
    }
    // SAFETY: a live object's context pointer.
    if unsafe { crate::context::forked_away((*pd).context) } {
        return fail_null(crate::context::FORKED);
    }
    // SAFETY: a live PD; the caller's attributes.
    let (p, ia) = unsafe { (ShimPd::from_c(pd), &mut *init) };
    let a = ia.attr;
    let soft = match p.soft.create_srq(a.max_wr, a.max_sge, a.srq_limit) {
        Ok(s) => s,
        Err(e) => return fail_null(e.0),
    };
    ia.attr.max_sge = a.max_sge.max(1);
    let srq = ibv_srq {
        context: p.pd.context,
        srq_context: ia.srq_context,
        pd,
        ..Default::default()
    };
    register(srq, soft, ia.attr)
}

/// The C handle of `soft` (`attr`: what `ibv_query_srq` reports).
pub fn register(srq: ibv_srq, soft: Srq, attr: ibv_srq_attr) -> *mut ibv_srq {
    let id = soft.id();
    let pd = srq.pd;
    // SAFETY: `pd` is a live PD (a parent domain's allocator may place the
    // object) or NULL.
    let placed = unsafe {
        crate::alloc::place(
            pd,
            crate::alloc::RESOURCE_SRQ,
            ShimSrq {
                srq,
                soft,
                attr: Mutex::new(attr),
            },
        )
    };
    let w = match placed {
        Ok(w) => w,
        Err(e) => return fail_null(e),
    };
    SRQS.insert(id, w);
    w as *mut ibv_srq
}

pub unsafe extern "C" fn shim_ibv_modify_srq(
    srq: *mut ibv_srq,
    attr: *mut ibv_srq_attr,
    mask: c_int,
) -> c_int {
    if srq.is_null() || attr.is_null() {
        return libc::EINVAL;
    }
    // SAFETY: live SRQ; the caller's attributes.
    let (w, a) = unsafe { (ShimSrq::from_c(srq), &*attr) };
    let mask = mask as c_uint;
    if mask & IBV_SRQ_MAX_WR != 0 {
        return libc::EINVAL; // resizing is not supported (no IBV_DEVICE_SRQ_RESIZE)
    }
    if mask & IBV_SRQ_LIMIT != 0 {
        if let Err(e) = w.soft.set_limit(a.srq_limit) {
            return e.0;
        }
        crate::sync::lock(&w.attr).srq_limit = a.srq_limit;
    }
    0
}

pub unsafe extern "C" fn shim_ibv_query_srq(srq: *mut ibv_srq, attr: *mut ibv_srq_attr) -> c_int {
    if srq.is_null() || attr.is_null() {
        return libc::EINVAL;
    }
    // SAFETY: live SRQ; the caller's output struct.
    unsafe { *attr = *crate::sync::lock(&ShimSrq::from_c(srq).attr) };
    0
}

pub unsafe extern "C" fn shim_ibv_destroy_srq(srq: *mut ibv_srq) -> c_int {
    if srq.is_null() {
        return libc::EINVAL;
    }
    // SAFETY: a live object's context pointer.
    if unsafe { crate::context::forked_away((*srq).context) } {
        return crate::context::FORKED;
    }
    // A QP still uses it: EBUSY, and it lives on (as rdma-core).
    // SAFETY: a live SRQ from ibv_create_srq.
    if let Err((_, e)) = unsafe { ShimSrq::from_c(srq) }.soft.clone().destroy() {
        return e.0;
    }
    // SAFETY: a live SRQ.
    SRQS.remove(unsafe { ShimSrq::from_c(srq) }.soft.id());
    // SAFETY: placed by ibv_create_srq; this ends its life.
    unsafe { crate::alloc::release(srq as *mut ShimSrq) };
    0
}

pub unsafe extern "C" fn post_srq_recv_op(
    srq: *mut ibv_srq,
    wr: *mut ibv_recv_wr,
    bad: *mut *mut ibv_recv_wr,
) -> c_int {
    // SAFETY: a live SRQ's context pointer.
    if unsafe { crate::context::forked_away((*srq).context) } {
        if !bad.is_null() {
            // SAFETY: the caller's out-pointer.
            unsafe { *bad = wr };
        }
        return crate::context::FORKED;
    }
    // SAFETY: live SRQ.
    let w = unsafe { ShimSrq::from_c(srq) };
    let max_sge = crate::sync::lock(&w.attr).max_sge;
    // SAFETY: the caller's WR chain.
    match unsafe { crate::qp::post_recv_chain(wr, max_sge, |wrs| w.soft.post_recv(wrs)) } {
        Ok(()) => 0,
        Err((p, e)) => {
            if !bad.is_null() {
                // SAFETY: the caller's out-pointer.
                unsafe { *bad = p };
            }
            e
        }
    }
}

/// `ibv_ack_async_event` for an SRQ event.
///
/// # Safety
/// `srq` must be a live SRQ.
pub unsafe fn ack_event(srq: *mut ibv_srq) {
    // SAFETY: (caller) live SRQ; zero-initialised mutex/cond.
    unsafe {
        let m = &mut (*srq).mutex as *mut pthread_mutex_t as *mut libc::pthread_mutex_t;
        libc::pthread_mutex_lock(m);
        (*srq).events_completed = (*srq).events_completed.wrapping_add(1);
        libc::pthread_cond_signal(
            &mut (*srq).cond as *mut pthread_cond_t as *mut libc::pthread_cond_t,
        );
        libc::pthread_mutex_unlock(m);
    }
}
