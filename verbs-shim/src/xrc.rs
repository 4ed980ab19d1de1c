//! XRC through `verbs_context`: `ibv_open_xrcd`/`ibv_close_xrcd`,
//! `ibv_create_srq_ex` (XRC and basic SRQs), `ibv_get_srq_num`, target QPs
//! (`ibv_create_qp_ex` with `IBV_QPT_XRC_RECV`) and `ibv_open_qp`. The
//! initiator side (`IBV_QPT_XRC_SEND`, `remote_srqn`) is an ordinary QP of
//! `qp.rs`/`qp_ex.rs`.
//!
//! Opens of one file (by inode) in one process are one domain, each open
//! its own `ibv_xrcd` (its context's), counted: the contexts of a process
//! share its soft device, so an XRC SRQ or target QP made through one open
//! is the domain's for every other. Across processes domains are not
//! shared (each process has its own soft device, its own QPs and SRQs).

use crate::context::ShimContext;
use crate::cq::ShimCq;
use crate::ffi::*;
use crate::pd::ShimPd;
use crate::srq::ShimSrq;
use soft_rdma::verbs::Xrcd;
use std::collections::HashMap;
use std::sync::Mutex;

#[repr(C)]
pub struct ShimXrcd {
    pub xrcd: ibv_xrcd,
    pub soft: Xrcd,
    /// The file it was opened on (device, inode), if any.
    file: Option<FileKey>,
}

// The C pointer converts back to the wrapper with a cast: the C struct comes first.
const _: () = assert!(std::mem::offset_of!(ShimXrcd, xrcd) == 0);

type FileKey = (u64, u64);

/// Domains opened on a file: the domain and how many opens hold it.
static FILES: Mutex<Option<HashMap<FileKey, (Xrcd, usize)>>> = Mutex::new(None);

impl ShimXrcd {
    /// # Safety
    /// `x` must be a live XRC domain from `ibv_open_xrcd`.
    pub unsafe fn from_c<'a>(x: *mut ibv_xrcd) -> &'a ShimXrcd {
        // SAFETY: (caller) `x` is the first field of a live ShimXrcd.
        unsafe { &*(x as *const ShimXrcd) }
    }
}

/// The XRC ops of a context.
pub fn set_ops(v: &mut verbs_context) {
    v.open_xrcd = Some(open_xrcd_op);
    v.close_xrcd = Some(close_xrcd_op);
    v.create_srq_ex = Some(create_srq_ex_op);
    v.get_srq_num = Some(get_srq_num_op);
    v.open_qp = Some(open_qp_op);
}

pub(crate) unsafe extern "C" fn open_xrcd_op(
    ctx: *mut ibv_context,
    attr: *mut ibv_xrcd_init_attr,
) -> *mut ibv_xrcd {
    if ctx.is_null() || attr.is_null() {
        return fail_null(libc::EINVAL);
    }
    // SAFETY: the caller's live context.
    if unsafe { crate::context::forked_away(ctx) } {
        return fail_null(crate::context::FORKED);
    }
    // SAFETY: the caller's attributes.
    let a = unsafe { *attr };
    let known = IBV_XRCD_INIT_ATTR_FD | IBV_XRCD_INIT_ATTR_OFLAGS;
    if a.comp_mask & !known != 0
        || a.comp_mask & IBV_XRCD_INIT_ATTR_FD == 0
        || a.comp_mask & IBV_XRCD_INIT_ATTR_OFLAGS == 0
    {
        return fail_null(libc::EINVAL);
    }
    let create = a.oflags & libc::O_CREAT != 0;
    let file = if a.fd == -1 {
        // A private domain: it can only be created.
        if !create {
            return fail_null(libc::EINVAL);
        }
        None
    } else {
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: fstat writes one stat into `st`.
        if unsafe { libc::fstat(a.fd, st.as_mut_ptr()) } != 0 {
            return std::ptr::null_mut(); // errno from fstat (EBADF)
        }
        // SAFETY: fstat succeeded, so `st` is initialised.
        let st = unsafe { st.assume_init() };
        Some((st.st_dev, st.st_ino))
    };
    let mut files = crate::sync::lock(&FILES);
    let files = files.get_or_insert_with(HashMap::new);
    let shared = file.and_then(|key| files.get_mut(&key));
    let soft = match shared {
        Some((soft, opens)) => {
            if create && a.oflags & libc::O_EXCL != 0 {
                return fail_null(libc::EEXIST);
            }
            *opens += 1;
            soft.clone()
        }
        None if file.is_some() && !create => {
            return fail_null(libc::EINVAL); // no domain on that file yet
        }
        None => {
            // SAFETY: live context.
            let soft = unsafe { ShimContext::from_c(ctx) }.dev.open_xrcd();
            if let Some(key) = file {
                files.insert(key, (soft.clone(), 1));
            }
            soft
        }
    };
    let w = Box::into_raw(Box::new(ShimXrcd {
        xrcd: ibv_xrcd { context: ctx },
        soft,
        file,
    }));
    w as *mut ibv_xrcd
}

unsafe extern "C" fn close_xrcd_op(x: *mut ibv_xrcd) -> c_int {
    if x.is_null() {
        return libc::EINVAL;
    }
    // SAFETY: a live object's context pointer.
    if unsafe { crate::context::forked_away((*x).context) } {
        return crate::context::FORKED;
    }
    // SAFETY: a live domain.
    let w = unsafe { ShimXrcd::from_c(x) };
    let mut files = crate::sync::lock(&FILES);
    let shared = w.file.and_then(|key| files.as_mut()?.get_mut(&key));
    match shared {
        // Another open still holds the domain: this handle goes.
        Some((_, opens)) if *opens > 1 => *opens -= 1,
        _ => {
            // The last holder: EBUSY while an XRC SRQ or a target QP uses it.
            if let Err((_, e)) = w.soft.clone().close() {
                return e.0;
            }
            if let (Some(key), Some(f)) = (w.file, files.as_mut()) {
                f.remove(&key);
            }
        }
    }
    // SAFETY: the Box from open_xrcd_op; its last holder closes it.
    drop(unsafe { Box::from_raw(x as *mut ShimXrcd) });
    0
}

/// `ibv_create_srq_ex`: a basic SRQ (as `ibv_create_srq`) or an XRC SRQ
/// (PD, domain and CQ required). Tag matching is EOPNOTSUPP.
pub(crate) unsafe extern "C" fn create_srq_ex_op(
    ctx: *mut ibv_context,
    attr: *mut ibv_srq_init_attr_ex,
) -> *mut ibv_srq {
    if ctx.is_null() || attr.is_null() {
        return fail_null(libc::EINVAL);
    }
    // SAFETY: the caller's live context.
    if unsafe { crate::context::forked_away(ctx) } {
        return fail_null(crate::context::FORKED);
    }
    // SAFETY: the caller's attributes.
    let a = unsafe { &mut *attr };
    let known = IBV_SRQ_INIT_ATTR_TYPE
        | IBV_SRQ_INIT_ATTR_PD
        | IBV_SRQ_INIT_ATTR_XRCD
        | IBV_SRQ_INIT_ATTR_CQ;
    if a.comp_mask & IBV_SRQ_INIT_ATTR_TM != 0 {
        return fail_null(libc::EOPNOTSUPP);
    }
    if a.comp_mask & !known != 0 || a.comp_mask & IBV_SRQ_INIT_ATTR_PD == 0 || a.pd.is_null() {
        return fail_null(libc::EINVAL);
    }
    let srq_type = if a.comp_mask & IBV_SRQ_INIT_ATTR_TYPE != 0 {
        a.srq_type
    } else {
        IBV_SRQT_BASIC
    };
    // SAFETY: a live PD.
    if unsafe { (*a.pd).context } != ctx {
        return fail_null(libc::EINVAL);
    }
    match srq_type {
        IBV_SRQT_BASIC => {
            let mut init = ibv_srq_init_attr {
                srq_context: a.srq_context,
                attr: a.attr,
            };
            // SAFETY: a live PD; a local init struct.
            let srq = unsafe { crate::srq::shim_ibv_create_srq(a.pd, &mut init) };
            a.attr = init.attr;
            srq
        }
        IBV_SRQT_XRC => {
            let need = IBV_SRQ_INIT_ATTR_XRCD | IBV_SRQ_INIT_ATTR_CQ;
            if a.comp_mask & need != need || a.xrcd.is_null() || a.cq.is_null() {
                return fail_null(libc::EINVAL);
            }
            // SAFETY: a live PD, domain and CQ, as the caller promises.
            let (p, x, cq) = unsafe {
                if (*a.xrcd).context != ctx || (*a.cq).context != ctx {
                    return fail_null(libc::EINVAL);
                }
                (
                    ShimPd::from_c(a.pd),
                    ShimXrcd::from_c(a.xrcd),
                    ShimCq::from_c(a.cq),
                )
            };
            let r = a.attr;
            let soft = match x
                .soft
                .create_srq(&p.soft, &cq.soft, r.max_wr, r.max_sge, r.srq_limit)
            {
                Ok(s) => s,
                Err(e) => return fail_null(e.0),
            };
            a.attr.max_sge = r.max_sge.max(1);
            let srq = ibv_srq {
                context: ctx,
                srq_context: a.srq_context,
                pd: a.pd,
                ..Default::default()
            };
            crate::srq::register(srq, soft, a.attr)
        }
        _ => fail_null(libc::EOPNOTSUPP),
    }
}

unsafe extern "C" fn get_srq_num_op(srq: *mut ibv_srq, num: *mut u32) -> c_int {
    if srq.is_null() || num.is_null() {
        return libc::EINVAL;
    }
    // SAFETY: a live SRQ.
    let w = unsafe { ShimSrq::from_c(srq) };
    // Any SRQ has a number, as on mlx5; only an XRC SRQ's is accepted in
    // an XRCETH.
    // SAFETY: the caller's output.
    unsafe { *num = w.soft.srq_num() };
    0
}

/// `ibv_create_qp_ex` with `IBV_QPT_XRC_RECV`: a target QP of `a.xrcd`.
///
/// # Safety
/// `a.xrcd` must be NULL or a live domain.
pub unsafe fn create_target(ctx: *mut ibv_context, a: &mut ibv_qp_init_attr_ex) -> *mut ibv_qp {
    let known = IBV_QP_INIT_ATTR_XRCD | IBV_QP_INIT_ATTR_PD | IBV_QP_INIT_ATTR_CREATE_FLAGS;
    if a.comp_mask & !known != 0
        || (a.comp_mask & IBV_QP_INIT_ATTR_CREATE_FLAGS != 0 && a.create_flags != 0)
    {
        return fail_null(libc::EOPNOTSUPP);
    }
    if a.comp_mask & IBV_QP_INIT_ATTR_XRCD == 0 || a.xrcd.is_null() {
        return fail_null(libc::EINVAL);
    }
    // SAFETY: (caller) a live domain.
    let x = unsafe { ShimXrcd::from_c(a.xrcd) };
    if x.xrcd.context != ctx {
        return fail_null(libc::EINVAL);
    }
    let soft = match x.soft.create_target_qp() {
        Ok(q) => q,
        Err(e) => return fail_null(e.0),
    };
    a.cap = ibv_qp_cap::default();
    target_handle(ctx, soft, a.qp_context)
}

/// An `ibv_qp` for a target QP handle (created or opened).
fn target_handle(
    ctx: *mut ibv_context,
    soft: soft_rdma::verbs::Qp,
    qp_context: *mut c_void,
) -> *mut ibv_qp {
    let qp = ibv_qp {
        context: ctx,
        qp_context,
        qp_num: soft.qp_num(),
        state: crate::conv::qp_state_to_c(soft.state()),
        qp_type: IBV_QPT_XRC_RECV,
        ..Default::default()
    };
    let init = ibv_qp_init_attr {
        qp_context,
        qp_type: IBV_QPT_XRC_RECV,
        ..Default::default()
    };
    crate::qp::register(qp, soft, init, None).unwrap_or_else(fail_null)
}

/// `ibv_open_qp`: another handle on a target QP of the domain.
unsafe extern "C" fn open_qp_op(ctx: *mut ibv_context, attr: *mut ibv_qp_open_attr) -> *mut ibv_qp {
    if ctx.is_null() || attr.is_null() {
        return fail_null(libc::EINVAL);
    }
    // SAFETY: the caller's live context.
    if unsafe { crate::context::forked_away(ctx) } {
        return fail_null(crate::context::FORKED);
    }
    // SAFETY: the caller's attributes.
    let a = unsafe { *attr };
    let need = IBV_QP_OPEN_ATTR_NUM | IBV_QP_OPEN_ATTR_XRCD | IBV_QP_OPEN_ATTR_TYPE;
    if a.comp_mask & need != need
        || a.comp_mask & !(need | IBV_QP_OPEN_ATTR_CONTEXT) != 0
        || a.xrcd.is_null()
    {
        return fail_null(libc::EINVAL);
    }
    if a.qp_type != IBV_QPT_XRC_RECV {
        return fail_null(libc::EINVAL);
    }
    // SAFETY: a live domain.
    let x = unsafe { ShimXrcd::from_c(a.xrcd) };
    if x.xrcd.context != ctx {
        return fail_null(libc::EINVAL);
    }
    match x.soft.open_qp(a.qp_num) {
        Ok(q) => {
            let qp_context = if a.comp_mask & IBV_QP_OPEN_ATTR_CONTEXT != 0 {
                a.qp_context
            } else {
                std::ptr::null_mut()
            };
            target_handle(ctx, q, qp_context)
        }
        Err(e) => fail_null(e.0),
    }
}
