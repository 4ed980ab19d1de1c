//! Queue pairs: create/modify/query/destroy and the data path (`post_send`,
//! `post_recv` through `ctx->ops`). Every QP is an `ibv_qp_ex` (an `ibv_qp`
//! is its first member); those made by `ibv_create_qp_ex` answer
//! `ibv_qp_to_qp_ex` and carry the `wr_*` functions of `qp_ex.rs`.

use crate::ah::ShimAh;
use crate::conv;
use crate::cq::ShimCq;
use crate::ffi::*;
use crate::pd::ShimPd;
use crate::registry::QPS;
use crate::srq::ShimSrq;
use soft_rdma::verbs::{self as sv, Qp, QpCap, QpInitAttr};
use std::sync::Mutex;

#[repr(C)]
pub struct ShimQp {
    pub qp: ibv_qp_ex,
    /// `ibv_qp_ex::wr_flush` of rdma-core 45 on, which ends where the
    /// installed struct does (`placement_abi`): NULL unless created with
    /// `IBV_QP_EX_WITH_FLUSH`.
    pub wr_flush: Option<crate::placement_abi::WrFlush>,
    pub soft: Qp,
    /// What `ibv_query_qp` reports besides the live state: the attributes
    /// last set by `ibv_modify_qp`, and the creation attributes.
    shadow: Mutex<(ibv_qp_attr, ibv_qp_init_attr)>,
    /// Made by `ibv_create_qp_ex`: `ibv_qp_to_qp_ex` returns it.
    ex: bool,
    /// The `wr_*` batch being built (between `wr_start` and `wr_complete`).
    pub batch: crate::qp_ex::BatchSlot,
}

// The C pointer converts back to the wrapper with a cast: the C struct comes
// first, and an `ibv_qp` is the first member of an `ibv_qp_ex`.
const _: () = assert!(std::mem::offset_of!(ShimQp, qp) == 0);
const _: () = assert!(std::mem::offset_of!(ibv_qp_ex, qp_base) == 0);
const _: () =
    assert!(std::mem::offset_of!(ShimQp, wr_flush) == crate::placement_abi::WR_FLUSH_OFFSET);

impl ShimQp {
    /// # Safety
    /// `qp` must be a live QP from `ibv_create_qp`.
    pub unsafe fn from_c<'a>(qp: *mut ibv_qp) -> &'a ShimQp {
        // SAFETY: (caller) `qp` is the first field of a live ShimQp.
        unsafe { &*(qp as *const ShimQp) }
    }
}

fn cap_to_c(c: QpCap) -> ibv_qp_cap {
    ibv_qp_cap {
        max_send_wr: c.max_send_wr,
        max_recv_wr: c.max_recv_wr,
        max_send_sge: c.max_send_sge,
        max_recv_sge: c.max_recv_sge,
        max_inline_data: c.max_inline_data,
    }
}

pub unsafe extern "C" fn shim_ibv_create_qp(
    pd: *mut ibv_pd,
    init: *mut ibv_qp_init_attr,
) -> *mut ibv_qp {
    if pd.is_null() || init.is_null() {
        return fail_null(libc::EINVAL);
    }
    // SAFETY: a live object's context pointer.
    if unsafe { crate::context::forked_away((*pd).context) } {
        return fail_null(crate::context::FORKED);
    }
    // SAFETY: the caller's PD and init attributes.
    match unsafe { create(pd, &mut *init, None) } {
        Ok(qp) => qp,
        Err(e) => fail_null(e),
    }
}

/// Create a QP; with `send_ops` (from `ibv_create_qp_ex`) it is an
/// `ibv_qp_ex` whose `wr_*` builders are those the flags ask for.
///
/// # Safety
/// `pd` must be a live PD, and the CQs/SRQ in `ia` live ones.
unsafe fn create(
    pd: *mut ibv_pd,
    ia: &mut ibv_qp_init_attr,
    send_ops: Option<u64>,
) -> Result<*mut ibv_qp, i32> {
    let Some(qp_type) = conv::qp_type_from_c(ia.qp_type) else {
        return Err(libc::EOPNOTSUPP);
    };
    // An XRC initiator receives nothing: its receive CQ may be NULL.
    if ia.qp_type == IBV_QPT_XRC_SEND && ia.recv_cq.is_null() {
        ia.recv_cq = ia.send_cq;
    }
    if ia.send_cq.is_null() || ia.recv_cq.is_null() {
        return Err(libc::EINVAL);
    }
    // SAFETY: a live PD, live CQs and (optionally) a live SRQ.
    let foreign = unsafe {
        let c = (*pd).context;
        use crate::import::same_file;
        !same_file((*ia.send_cq).context, c)
            || !same_file((*ia.recv_cq).context, c)
            || (!ia.srq.is_null() && !same_file((*ia.srq).context, c))
    };
    if foreign {
        // Objects of another context: EINVAL, as the kernel finds no such
        // handle in the caller's context.
        return Err(libc::EINVAL);
    }
    // SAFETY: a live PD, live CQs and (optionally) a live SRQ.
    let (p, send_cq, recv_cq, srq) = unsafe {
        (
            ShimPd::from_c(pd),
            ShimCq::from_c(ia.send_cq).soft.clone(),
            ShimCq::from_c(ia.recv_cq).soft.clone(),
            if ia.srq.is_null() {
                None
            } else {
                Some(ShimSrq::from_c(ia.srq).soft.clone())
            },
        )
    };
    let c = ia.cap;
    let cap = QpCap {
        max_send_wr: c.max_send_wr,
        max_recv_wr: c.max_recv_wr,
        max_send_sge: c.max_send_sge,
        max_recv_sge: c.max_recv_sge,
        max_inline_data: c.max_inline_data,
    };
    let soft = p
        .soft
        .create_qp(QpInitAttr {
            qp_type,
            send_cq,
            recv_cq,
            cap,
            sq_sig_all: ia.sq_sig_all != 0,
            srq,
        })
        .map_err(|e| e.0)?;
    ia.cap = cap_to_c(soft.cap());
    let qp = ibv_qp {
        context: p.pd.context,
        qp_context: ia.qp_context,
        pd,
        send_cq: ia.send_cq,
        recv_cq: ia.recv_cq,
        srq: ia.srq,
        qp_num: soft.qp_num(),
        state: IBV_QPS_RESET,
        qp_type: ia.qp_type,
        ..Default::default()
    };
    register(qp, soft, *ia, send_ops)
}

/// The C handle of `soft`: an `ibv_qp_ex` around `qp`, extended (with the
/// `wr_*` builders `send_ops` asks for) if given. Async events name the
/// first handle of a QPN.
pub fn register(
    qp: ibv_qp,
    soft: Qp,
    init: ibv_qp_init_attr,
    send_ops: Option<u64>,
) -> Result<*mut ibv_qp, i32> {
    let mut qp = ibv_qp_ex {
        qp_base: qp,
        ..Default::default()
    };
    if let Some(flags) = send_ops {
        crate::qp_ex::set_ops(&mut qp, flags);
    }
    let qpn = soft.qp_num();
    let pd = qp.qp_base.pd;
    // SAFETY: `pd` is NULL (an XRC target has none) or a live PD (a parent
    // domain's allocator may place the object); destroy_qp releases it.
    let w = unsafe {
        crate::alloc::place(
            pd,
            crate::alloc::RESOURCE_QP,
            ShimQp {
                qp,
                wr_flush: send_ops.and_then(crate::qp_ex::wr_flush_op),
                soft,
                shadow: Mutex::new((ibv_qp_attr::default(), init)),
                ex: send_ops.is_some(),
                batch: Default::default(),
            },
        )
    }?;
    if QPS.get::<ShimQp>(qpn).is_none() {
        QPS.insert(qpn, w);
    }
    Ok(w as *mut ibv_qp)
}

/// `ibv_create_qp_ex` (the inline wrapper calls `ibv_create_qp` itself when
/// the mask is only the PD). As rxe: PD, create flags (none supported) and
/// send ops flags; the send ops each QP type can do, others EOPNOTSUPP.
pub unsafe extern "C" fn create_qp_ex_op(
    _ctx: *mut ibv_context,
    attr: *mut ibv_qp_init_attr_ex,
) -> *mut ibv_qp {
    if attr.is_null() {
        return fail_null(libc::EINVAL);
    }
    // SAFETY: the caller's attributes.
    let a = unsafe { &mut *attr };
    // SAFETY: the caller's live context.
    if unsafe { crate::context::forked_away(_ctx) } {
        return fail_null(crate::context::FORKED);
    }
    if a.qp_type == IBV_QPT_XRC_RECV {
        // SAFETY: the caller's domain (checked there).
        return unsafe { crate::xrc::create_target(_ctx, a) };
    }
    let known =
        IBV_QP_INIT_ATTR_PD | IBV_QP_INIT_ATTR_CREATE_FLAGS | IBV_QP_INIT_ATTR_SEND_OPS_FLAGS;
    if a.comp_mask & !known != 0
        || (a.comp_mask & IBV_QP_INIT_ATTR_CREATE_FLAGS != 0 && a.create_flags != 0)
    {
        return fail_null(libc::EOPNOTSUPP);
    }
    let send_ops = if a.comp_mask & IBV_QP_INIT_ATTR_SEND_OPS_FLAGS != 0 {
        a.send_ops_flags
    } else {
        0
    };
    if send_ops & !crate::qp_ex::supported_send_ops(a.qp_type) != 0 {
        return fail_null(libc::EOPNOTSUPP);
    }
    if a.comp_mask & IBV_QP_INIT_ATTR_PD == 0 || a.pd.is_null() {
        return fail_null(libc::EINVAL);
    }
    let mut init = ibv_qp_init_attr {
        qp_context: a.qp_context,
        send_cq: a.send_cq,
        recv_cq: a.recv_cq,
        srq: a.srq,
        cap: a.cap,
        qp_type: a.qp_type,
        sq_sig_all: a.sq_sig_all,
    };
    // SAFETY: the caller's PD, CQs and SRQ.
    let r = unsafe { create(a.pd, &mut init, Some(send_ops)) };
    a.cap = init.cap;
    match r {
        Ok(qp) => qp,
        Err(e) => fail_null(e),
    }
}

pub unsafe extern "C" fn shim_ibv_modify_qp(
    qp: *mut ibv_qp,
    attr: *mut ibv_qp_attr,
    mask: c_int,
) -> c_int {
    if qp.is_null() || attr.is_null() {
        return libc::EINVAL;
    }
    // SAFETY: a live object's context pointer.
    if unsafe { crate::context::forked_away((*qp).context) } {
        return crate::context::FORKED;
    }
    // SAFETY: live QP; the caller's attributes.
    let (w, a) = unsafe { (ShimQp::from_c(qp), &*attr) };
    let sa = match conv::qp_attr_from_c(a, mask) {
        Ok(s) => s,
        Err(e) => return e,
    };
    if let Err(e) = w.soft.modify(&sa) {
        return e.0;
    }
    conv::merge_qp_attr(&mut crate::sync::lock(&w.shadow).0, a, mask);
    if mask as c_uint & IBV_QP_STATE != 0 {
        // SAFETY: the library owns `state` (the real one writes it here too).
        unsafe { (*qp).state = a.qp_state };
    }
    0
}

pub unsafe extern "C" fn shim_ibv_query_qp(
    qp: *mut ibv_qp,
    attr: *mut ibv_qp_attr,
    _mask: c_int,
    init: *mut ibv_qp_init_attr,
) -> c_int {
    if qp.is_null() || attr.is_null() || init.is_null() {
        return libc::EINVAL;
    }
    // SAFETY: a live object's context pointer.
    if unsafe { crate::context::forked_away((*qp).context) } {
        return crate::context::FORKED;
    }
    // SAFETY: live QP.
    let w = unsafe { ShimQp::from_c(qp) };
    let (mut a, mut i) = *crate::sync::lock(&w.shadow);
    a.qp_state = conv::qp_state_to_c(w.soft.state());
    a.cur_qp_state = a.qp_state;
    a.cap = cap_to_c(w.soft.cap());
    i.cap = a.cap;
    // SAFETY: the caller's output structs.
    unsafe {
        *attr = a;
        *init = i;
    }
    0
}

pub unsafe extern "C" fn shim_ibv_destroy_qp(qp: *mut ibv_qp) -> c_int {
    if qp.is_null() {
        return libc::EINVAL;
    }
    // SAFETY: a live object's context pointer.
    if unsafe { crate::context::forked_away((*qp).context) } {
        return crate::context::FORKED;
    }
    // SAFETY: a live QP.
    let num = unsafe { ShimQp::from_c(qp) }.soft.qp_num();
    if QPS.get::<ibv_qp>(num) == Some(qp) {
        QPS.remove(num);
    }
    // SAFETY: placed by register; this ends its life.
    unsafe { crate::alloc::release(qp as *mut ShimQp) };
    0
}

/// `ibv_qp_to_qp_ex`: the QP itself if `ibv_create_qp_ex` made it, else NULL
/// (errno untouched, as rdma-core).
pub unsafe extern "C" fn shim_ibv_qp_to_qp_ex(qp: *mut ibv_qp) -> *mut ibv_qp_ex {
    if qp.is_null() {
        return std::ptr::null_mut();
    }
    // SAFETY: a live QP.
    if unsafe { ShimQp::from_c(qp) }.ex {
        qp as *mut ibv_qp_ex
    } else {
        std::ptr::null_mut()
    }
}

/// Collect a C list of SGEs.
///
/// # Safety
/// `sg` must hold `n` entries (or `n` be 0).
pub unsafe fn sges(sg: *const ibv_sge, n: c_int, max: u32) -> Result<Vec<sv::Sge>, i32> {
    // Checked before anything is read or allocated: `num_sge` is the
    // caller's word for how much memory to read (EINVAL, as rxe's provider).
    if n < 0 || n as u32 > max || (n > 0 && sg.is_null()) {
        return Err(libc::EINVAL);
    }
    if n == 0 {
        return Ok(Vec::new());
    }
    // SAFETY: (caller) `sg` holds `n` entries.
    Ok(unsafe { std::slice::from_raw_parts(sg, n as usize) }
        .iter()
        .map(conv::sge_from_c)
        .collect())
}

pub unsafe extern "C" fn post_send_op(
    qp: *mut ibv_qp,
    wr: *mut ibv_send_wr,
    bad: *mut *mut ibv_send_wr,
) -> c_int {
    // SAFETY: a live QP's context pointer.
    if unsafe { crate::context::forked_away((*qp).context) } {
        if !bad.is_null() {
            // SAFETY: the caller's out-pointer.
            unsafe { *bad = wr };
        }
        return crate::context::FORKED;
    }
    // SAFETY: live QP.
    let w = unsafe { ShimQp::from_c(qp) };
    let max_sge = w.soft.cap().max_send_sge;
    let mut ptrs = Vec::new();
    let mut lists = Vec::new();
    let mut err = None;
    let mut p = wr;
    while !p.is_null() {
        // SAFETY: the caller's WR chain.
        let c = unsafe { &*p };
        // SAFETY: the WR's SGE array.
        match unsafe { sges(c.sg_list, c.num_sge, max_sge) } {
            Ok(s) => lists.push(s),
            Err(e) => {
                err = Some(e);
                break;
            }
        }
        ptrs.push(p);
        p = c.next;
    }
    let mut wrs = Vec::with_capacity(ptrs.len());
    let xrc = w.qp.qp_base.qp_type == IBV_QPT_XRC_SEND;
    let mut srqns = Vec::new();
    for (i, &p) in ptrs.iter().enumerate() {
        // SAFETY: as above.
        let c = unsafe { &*p };
        let op = match conv::send_op_from_c(c) {
            Ok(op) => op,
            Err(e) => {
                err = Some(e);
                break;
            }
        };
        let ud = if w.qp.qp_base.qp_type == IBV_QPT_UD {
            // SAFETY: UD WRs carry `wr.ud`.
            let u = unsafe { c.wr.ud };
            // An AH of another command file: EINVAL, as the kernel's
            // post_send finds no such AH handle.
            let foreign = !u.ah.is_null() && {
                // SAFETY: a non-NULL AH is a live one.
                let ah_ctx = unsafe { (*u.ah).context };
                !crate::import::same_file(ah_ctx, w.qp.qp_base.context)
            };
            if u.ah.is_null() || foreign {
                err = Some(libc::EINVAL);
                break;
            }
            // SAFETY: a live AH from ibv_create_ah.
            let ah = unsafe { ShimAh::from_c(u.ah) }.soft;
            Some(sv::UdDest {
                ah,
                remote_qpn: u.remote_qpn,
                remote_qkey: u.remote_qkey,
            })
        } else {
            None
        };
        if xrc {
            // SAFETY: an XRC initiator's WRs carry `qp_type.xrc`.
            srqns.push(unsafe { c.qp_type.xrc.remote_srqn });
        }
        wrs.push(sv::SendWr {
            wr_id: c.wr_id,
            sg_list: &lists[i],
            op,
            flags: conv::send_flags_from_c(c.send_flags),
            ud,
        });
    }
    let first_bad = wrs.len();
    let posted = if xrc {
        w.soft.post_send_xrc(&wrs, &srqns)
    } else {
        w.soft.post_send(&wrs)
    };
    let r = match posted {
        Ok(()) => match err {
            None => return 0,
            Some(e) => (first_bad, e),
        },
        Err((i, e)) => (i, e.0),
    };
    if !bad.is_null() {
        // SAFETY: the caller's out-pointer; r.0 indexes the chain (or is its
        // length when a WR failed to convert, i.e. that WR).
        unsafe { *bad = ptrs.get(r.0).copied().unwrap_or(p) };
    }
    r.1
}

pub unsafe extern "C" fn post_recv_op(
    qp: *mut ibv_qp,
    wr: *mut ibv_recv_wr,
    bad: *mut *mut ibv_recv_wr,
) -> c_int {
    // SAFETY: a live QP's context pointer.
    if unsafe { crate::context::forked_away((*qp).context) } {
        if !bad.is_null() {
            // SAFETY: the caller's out-pointer.
            unsafe { *bad = wr };
        }
        return crate::context::FORKED;
    }
    // SAFETY: live QP.
    let w = unsafe { ShimQp::from_c(qp) };
    // SAFETY: the caller's WR chain.
    match unsafe { post_recv_chain(wr, w.soft.cap().max_recv_sge, |wrs| w.soft.post_recv(wrs)) } {
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

/// Convert a chain of `ibv_recv_wr` (up to `max_sge` SGEs each) and post it
/// with `post`; on failure the WR that failed and the errno.
///
/// # Safety
/// `wr` must be a valid chain of receive WRs.
pub unsafe fn post_recv_chain(
    wr: *mut ibv_recv_wr,
    max_sge: u32,
    post: impl FnOnce(&[sv::RecvWr<'_>]) -> Result<(), (usize, sv::Errno)>,
) -> Result<(), (*mut ibv_recv_wr, i32)> {
    let mut ptrs = Vec::new();
    let mut lists = Vec::new();
    let mut err = None;
    let mut p = wr;
    while !p.is_null() {
        // SAFETY: (caller) a valid chain.
        let c = unsafe { &*p };
        // SAFETY: the WR's SGE array.
        match unsafe { sges(c.sg_list, c.num_sge, max_sge) } {
            Ok(s) => lists.push(s),
            Err(e) => {
                err = Some((p, e));
                break;
            }
        }
        ptrs.push(p);
        p = c.next;
    }
    let wrs: Vec<sv::RecvWr<'_>> = ptrs
        .iter()
        .zip(&lists)
        .map(|(&p, l)| sv::RecvWr {
            // SAFETY: (caller) as above: `p` is a live WR of the chain.
            wr_id: unsafe { (*p).wr_id },
            sg_list: l,
        })
        .collect();
    // A refusal names one of the WRs handed over (or, with none handed
    // over, the one that failed to convert).
    post(&wrs).map_err(|(i, e)| (ptrs.get(i).copied().unwrap_or(p), e.0))?;
    match err {
        None => Ok(()),
        Some(e) => Err(e),
    }
}

/// `ibv_ack_async_event` for a QP event.
///
/// # Safety
/// `qp` must be a live QP.
pub unsafe fn ack_event(qp: *mut ibv_qp) {
    // SAFETY: (caller) live QP; its zero-initialised mutex/cond.
    unsafe {
        let m = &mut (*qp).mutex as *mut pthread_mutex_t as *mut libc::pthread_mutex_t;
        libc::pthread_mutex_lock(m);
        (*qp).events_completed = (*qp).events_completed.wrapping_add(1);
        libc::pthread_cond_signal(
            &mut (*qp).cond as *mut pthread_cond_t as *mut libc::pthread_cond_t,
        );
        libc::pthread_mutex_unlock(m);
    }
}
