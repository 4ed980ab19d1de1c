//! Completion channels and completion queues.
//!
//! A soft-rdma `CompChannel` reports which CQ fired only as a `Cq` handle, so
//! each CQ with a channel gets a private soft channel, and the C channel's fd
//! is an epoll descriptor over the private channels' eventfds (pollable like
//! the real one); the epoll data names the CQ.
//!
//! Every CQ is an `ibv_cq_ex` (an `ibv_cq` is its prefix, so
//! `ibv_cq_ex_to_cq` is a cast); only `ibv_create_cq_ex` fills in the
//! extended poll functions. `start_poll` takes the first completion off the
//! soft CQ, `next_poll` the next; the `read_*` functions read the one taken.

use crate::context::wait_readable;
use crate::conv;
use crate::ffi::*;
use crate::registry;
use soft_rdma::verbs::{self as sv, CompChannel, Cq};
use std::mem::offset_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Mutex;

#[repr(C)]
pub struct ShimChannel {
    pub ch: ibv_comp_channel,
    epoll: OwnedFd,
}

// The C pointer converts back to the wrapper with a cast: the C struct comes first.
const _: () = assert!(std::mem::offset_of!(ShimChannel, ch) == 0);

#[repr(C)]
pub struct ShimCq {
    pub cq: ibv_cq_ex,
    pub soft: Cq,
    /// The private soft channel (when created with a channel).
    events: Option<CompChannel>,
    /// The completion `start_poll`/`next_poll` took (extended CQs).
    cur: Mutex<sv::Wc>,
}

// The C pointer converts back to the wrapper with a cast: the C struct comes first.
const _: () = assert!(offset_of!(ShimCq, cq) == 0);
// `ibv_cq` is the prefix of `ibv_cq_ex` (`ibv_cq_ex_to_cq` is a cast).
const _: () = assert!(
    offset_of!(ibv_cq, context) == offset_of!(ibv_cq_ex, context)
        && offset_of!(ibv_cq, channel) == offset_of!(ibv_cq_ex, channel)
        && offset_of!(ibv_cq, cq_context) == offset_of!(ibv_cq_ex, cq_context)
        && offset_of!(ibv_cq, handle) == offset_of!(ibv_cq_ex, handle)
        && offset_of!(ibv_cq, cqe) == offset_of!(ibv_cq_ex, cqe)
        && offset_of!(ibv_cq, mutex) == offset_of!(ibv_cq_ex, mutex)
        && offset_of!(ibv_cq, cond) == offset_of!(ibv_cq_ex, cond)
        && offset_of!(ibv_cq, comp_events_completed)
            == offset_of!(ibv_cq_ex, comp_events_completed)
        && offset_of!(ibv_cq, async_events_completed)
            == offset_of!(ibv_cq_ex, async_events_completed)
        && std::mem::size_of::<ibv_cq>() <= offset_of!(ibv_cq_ex, comp_mask) + 8
);

impl ShimCq {
    /// # Safety
    /// `cq` must be a live CQ from `ibv_create_cq` or `ibv_create_cq_ex`.
    pub unsafe fn from_c<'a>(cq: *mut ibv_cq) -> &'a ShimCq {
        // SAFETY: (caller) `cq` is the first field of a live ShimCq.
        unsafe { &*(cq as *const ShimCq) }
    }

    /// # Safety
    /// `cq` must be a live CQ from `ibv_create_cq_ex`.
    unsafe fn from_ex<'a>(cq: *mut ibv_cq_ex) -> &'a ShimCq {
        // SAFETY: (caller) as `from_c`.
        unsafe { &*(cq as *const ShimCq) }
    }

    fn current(&self) -> sv::Wc {
        *crate::sync::lock(&self.cur)
    }
}

pub unsafe extern "C" fn shim_ibv_create_comp_channel(
    ctx: *mut ibv_context,
) -> *mut ibv_comp_channel {
    if ctx.is_null() {
        return fail_null(libc::EINVAL);
    }
    // SAFETY: plain syscall.
    let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if fd < 0 {
        return std::ptr::null_mut(); // errno set by epoll_create1
    }
    // SAFETY: `fd` is a fresh descriptor we own.
    let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
    let w = Box::into_raw(Box::new(ShimChannel {
        ch: ibv_comp_channel {
            context: ctx,
            fd,
            refcnt: 0,
        },
        epoll,
    }));
    w as *mut ibv_comp_channel
}

pub unsafe extern "C" fn shim_ibv_destroy_comp_channel(ch: *mut ibv_comp_channel) -> c_int {
    if ch.is_null() {
        return libc::EINVAL;
    }
    // SAFETY: a live channel from ibv_create_comp_channel.
    if unsafe { (*ch).refcnt } > 0 {
        return libc::EBUSY;
    }
    // SAFETY: the Box allocated in ibv_create_comp_channel.
    drop(unsafe { Box::from_raw(ch as *mut ShimChannel) });
    0
}

pub unsafe extern "C" fn shim_ibv_create_cq(
    ctx: *mut ibv_context,
    cqe: c_int,
    cq_context: *mut c_void,
    channel: *mut ibv_comp_channel,
    comp_vector: c_int,
) -> *mut ibv_cq {
    if ctx.is_null() || cqe < 0 {
        return fail_null(libc::EINVAL);
    }
    // SAFETY: the caller's live context.
    if unsafe { crate::context::forked_away(ctx) } {
        return fail_null(crate::context::FORKED);
    }
    // SAFETY: the caller's context and channel.
    match unsafe {
        new_cq(
            ctx,
            cqe as u32,
            comp_vector,
            cq_context,
            channel,
            std::ptr::null_mut(),
        )
    } {
        Ok(w) => w as *mut ibv_cq,
        Err(e) => fail_null(e),
    }
}

/// A CQ of `cqe` entries, registered with `channel` (if any); its
/// extended poll functions are not set. As rxe and uverbs: EINVAL for a
/// `comp_vector` the context does not have, for `cqe` 0 or above `max_cqe`,
/// and for a channel of another context. Made through a parent domain
/// `pd` (NULL: none), its memory comes from the domain's allocator.
///
/// # Safety
/// `ctx` must be a live context, `channel` NULL or a live channel, `pd`
/// NULL or a live PD.
unsafe fn new_cq(
    ctx: *mut ibv_context,
    cqe: u32,
    comp_vector: c_int,
    cq_context: *mut c_void,
    channel: *mut ibv_comp_channel,
    pd: *mut ibv_pd,
) -> Result<*mut ShimCq, i32> {
    // SAFETY: (caller) live context; a channel is NULL or live.
    let (c, foreign) = unsafe {
        (
            &(*ctx),
            !channel.is_null() && !crate::import::same_file((*channel).context, ctx),
        )
    };
    if comp_vector < 0 || comp_vector >= c.num_comp_vectors || foreign {
        return Err(libc::EINVAL);
    }
    let depth = cqe as usize;
    let events = if channel.is_null() {
        None
    } else {
        Some(CompChannel::new().map_err(|e| e.0)?)
    };
    let soft = Cq::new(depth, events.as_ref()).map_err(|e| e.0)?;
    let cq = ibv_cq_ex {
        context: ctx,
        channel,
        cq_context,
        cqe: depth as c_int,
        ..Default::default()
    };
    // SAFETY: (caller) `pd` NULL or live; destroy_cq releases it.
    let w = unsafe {
        crate::alloc::place(
            pd,
            crate::alloc::RESOURCE_CQ,
            ShimCq {
                cq,
                soft,
                events,
                cur: Mutex::new(sv::Wc::EMPTY),
            },
        )
    }?;
    if !channel.is_null() {
        // SAFETY: a live channel; `w` is live until ibv_destroy_cq, which
        // removes it from the epoll set first.
        unsafe {
            let ch = &mut *(channel as *mut ShimChannel);
            let fd = (*w).events.as_ref().map(|e| e.as_raw_fd()).unwrap_or(-1);
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: w as u64,
            };
            if libc::epoll_ctl(ch.epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) != 0 {
                let e = *libc::__errno_location();
                crate::alloc::release(w);
                return Err(e);
            }
            ch.ch.refcnt += 1;
        }
    }
    // For IBV_EVENT_CQ_ERR. SAFETY: `w` is live (just allocated).
    registry::CQS.insert(unsafe { (*w).soft.id() }, w as *mut ibv_cq);
    Ok(w)
}

/// The `wc_flags` the device can report: the standard fields (as rxe). No
/// completion timestamps (the device advertises no `completion_timestamp_mask`),
/// no CVLAN, flow tag or tag matching: those are EOPNOTSUPP, as in rxe.
const SUPPORTED_WC_FLAGS: u64 = IBV_WC_STANDARD_FLAGS as u64;

/// `ibv_create_cq_ex` (through `verbs_context.create_cq_ex`).
pub unsafe extern "C" fn create_cq_ex_op(
    ctx: *mut ibv_context,
    attr: *mut ibv_cq_init_attr_ex,
) -> *mut ibv_cq_ex {
    if ctx.is_null() || attr.is_null() {
        return fail_null(libc::EINVAL);
    }
    // SAFETY: the caller's live context.
    if unsafe { crate::context::forked_away(ctx) } {
        return fail_null(crate::context::FORKED);
    }
    // SAFETY: the caller's attributes.
    let a = unsafe { &*attr };
    if a.wc_flags & !SUPPORTED_WC_FLAGS != 0 {
        return fail_null(libc::EOPNOTSUPP);
    }
    // rdma-core's ibv_cmd_create_cq_ex: FLAGS and PD are the known mask bits.
    if a.comp_mask & !(IBV_CQ_INIT_ATTR_MASK_FLAGS | IBV_CQ_INIT_ATTR_MASK_PD) != 0 {
        return fail_null(libc::EOPNOTSUPP);
    }
    // SINGLE_THREADED is a hint; rxe's kernel refuses IGNORE_OVERRUN.
    if a.comp_mask & IBV_CQ_INIT_ATTR_MASK_FLAGS != 0
        && a.flags & !IBV_CREATE_CQ_ATTR_SINGLE_THREADED != 0
    {
        return fail_null(libc::EOPNOTSUPP);
    }
    // The PD of an extended CQ must be a parent domain of this file.
    let pd = if a.comp_mask & IBV_CQ_INIT_ATTR_MASK_PD != 0 {
        // SAFETY: NULL or the caller's live PD.
        let ok = !a.parent_domain.is_null()
            && unsafe {
                let p = crate::pd::ShimPd::from_c(a.parent_domain);
                matches!(p.kind, crate::pd::Kind::Parent { .. })
                    && crate::import::same_file(p.pd.context, ctx)
            };
        if !ok {
            return fail_null(libc::EINVAL);
        }
        a.parent_domain
    } else {
        std::ptr::null_mut()
    };
    if a.cqe > c_int::MAX as u32 || a.comp_vector > c_int::MAX as u32 {
        return fail_null(libc::EINVAL);
    }
    // SAFETY: the caller's context and channel.
    let w = match unsafe {
        new_cq(
            ctx,
            a.cqe,
            a.comp_vector as c_int,
            a.cq_context,
            a.channel,
            pd,
        )
    } {
        Ok(w) => w,
        Err(e) => return fail_null(e),
    };
    // SAFETY: just created, not yet shared.
    let c = unsafe { &mut (*w).cq };
    c.start_poll = Some(start_poll);
    c.next_poll = Some(next_poll);
    c.end_poll = Some(end_poll);
    c.read_opcode = Some(read_opcode);
    c.read_vendor_err = Some(read_vendor_err);
    c.read_wc_flags = Some(read_wc_flags);
    let has = |f: ibv_create_cq_wc_flags| a.wc_flags & f as u64 != 0;
    if has(IBV_WC_EX_WITH_BYTE_LEN) {
        c.read_byte_len = Some(read_byte_len);
    }
    if has(IBV_WC_EX_WITH_IMM) {
        c.read_imm_data = Some(read_imm_data);
    }
    if has(IBV_WC_EX_WITH_QP_NUM) {
        c.read_qp_num = Some(read_qp_num);
    }
    if has(IBV_WC_EX_WITH_SRC_QP) {
        c.read_src_qp = Some(read_src_qp);
    }
    if has(IBV_WC_EX_WITH_SLID) {
        c.read_slid = Some(read_slid);
    }
    if has(IBV_WC_EX_WITH_SL) {
        c.read_sl = Some(read_sl);
    }
    if has(IBV_WC_EX_WITH_DLID_PATH_BITS) {
        c.read_dlid_path_bits = Some(read_dlid_path_bits);
    }
    c as *mut ibv_cq_ex
}

/// Take the next completion into `cur` and publish its `status`/`wr_id` in
/// the C struct; ENOENT when the CQ is empty.
///
/// # Safety
/// `cq` must be a live extended CQ.
unsafe fn take_next(cq: *mut ibv_cq_ex) -> c_int {
    // SAFETY: (caller) live CQ.
    let w = unsafe { ShimCq::from_ex(cq) };
    let mut one = [sv::Wc::EMPTY];
    if w.soft.poll(&mut one) == 0 {
        return libc::ENOENT;
    }
    *crate::sync::lock(&w.cur) = one[0];
    let c = conv::wc_to_c(&one[0]);
    // SAFETY: (caller) live CQ; `status` and `wr_id` are the library's to
    // write (the application reads them after start/next_poll).
    unsafe {
        (*cq).status = c.status;
        (*cq).wr_id = c.wr_id;
    }
    0
}

/// `attr` (its `comp_mask` must be 0 and no provider reads it) is ignored, as in rxe.
unsafe extern "C" fn start_poll(cq: *mut ibv_cq_ex, _attr: *mut ibv_poll_cq_attr) -> c_int {
    // SAFETY: a live extended CQ (start_poll is only reachable through one).
    let r = unsafe { take_next(cq) };
    if r != 0 {
        set_errno(r);
    }
    r
}

unsafe extern "C" fn next_poll(cq: *mut ibv_cq_ex) -> c_int {
    // SAFETY: as start_poll.
    let r = unsafe { take_next(cq) };
    if r != 0 {
        set_errno(r);
    }
    r
}

unsafe extern "C" fn end_poll(_cq: *mut ibv_cq_ex) {}

/// The C view of the completion `start_poll`/`next_poll` took.
///
/// # Safety
/// `cq` must be a live extended CQ.
unsafe fn cur(cq: *mut ibv_cq_ex) -> ibv_wc {
    // SAFETY: (caller) live CQ.
    conv::wc_to_c(&unsafe { ShimCq::from_ex(cq) }.current())
}

unsafe extern "C" fn read_opcode(cq: *mut ibv_cq_ex) -> ibv_wc_opcode {
    // SAFETY: reached only through a live extended CQ.
    unsafe { cur(cq) }.opcode
}

unsafe extern "C" fn read_vendor_err(cq: *mut ibv_cq_ex) -> u32 {
    // SAFETY: reached only through a live extended CQ.
    unsafe { cur(cq) }.vendor_err
}

unsafe extern "C" fn read_byte_len(cq: *mut ibv_cq_ex) -> u32 {
    // SAFETY: reached only through a live extended CQ.
    unsafe { cur(cq) }.byte_len
}

/// The immediate data, or the invalidated rkey (`ibv_wc_read_invalidated_rkey`
/// reads the same union through this function).
unsafe extern "C" fn read_imm_data(cq: *mut ibv_cq_ex) -> __be32 {
    // SAFETY: reached only through a live extended CQ; the union is two u32s.
    unsafe { cur(cq).__bindgen_anon_1.imm_data }
}

unsafe extern "C" fn read_qp_num(cq: *mut ibv_cq_ex) -> u32 {
    // SAFETY: reached only through a live extended CQ.
    unsafe { cur(cq) }.qp_num
}

unsafe extern "C" fn read_src_qp(cq: *mut ibv_cq_ex) -> u32 {
    // SAFETY: reached only through a live extended CQ.
    unsafe { cur(cq) }.src_qp
}

unsafe extern "C" fn read_wc_flags(cq: *mut ibv_cq_ex) -> c_uint {
    // SAFETY: reached only through a live extended CQ.
    unsafe { cur(cq) }.wc_flags
}

unsafe extern "C" fn read_slid(cq: *mut ibv_cq_ex) -> u32 {
    // SAFETY: reached only through a live extended CQ.
    unsafe { cur(cq) }.slid.into()
}

unsafe extern "C" fn read_sl(cq: *mut ibv_cq_ex) -> u8 {
    // SAFETY: reached only through a live extended CQ.
    unsafe { cur(cq) }.sl
}

unsafe extern "C" fn read_dlid_path_bits(cq: *mut ibv_cq_ex) -> u8 {
    // SAFETY: reached only through a live extended CQ.
    unsafe { cur(cq) }.dlid_path_bits
}

pub unsafe extern "C" fn shim_ibv_destroy_cq(cq: *mut ibv_cq) -> c_int {
    if cq.is_null() {
        return libc::EINVAL;
    }
    // SAFETY: a live object's context pointer.
    if unsafe { crate::context::forked_away((*cq).context) } {
        return crate::context::FORKED;
    }
    // A QP still uses it: EBUSY, and it lives on (as rdma-core).
    // SAFETY: a live CQ from ibv_create_cq.
    if let Err((_, e)) = unsafe { ShimCq::from_c(cq) }.soft.clone().destroy() {
        return e.0;
    }
    // SAFETY: a live CQ; released below, after its last use.
    let w = unsafe { ShimCq::from_c(cq) };
    registry::CQS.remove(w.soft.id());
    if let (Some(ev), false) = (&w.events, w.cq.channel.is_null()) {
        // SAFETY: the channel outlives its CQs (destroy_comp_channel refuses
        // while refcnt > 0).
        unsafe {
            let ch = &mut *(w.cq.channel as *mut ShimChannel);
            libc::epoll_ctl(
                ch.epoll.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                ev.as_raw_fd(),
                std::ptr::null_mut(),
            );
            ch.ch.refcnt -= 1;
        }
    }
    // SAFETY: placed by ibv_create_cq(_ex); this ends its life.
    unsafe { crate::alloc::release(cq as *mut ShimCq) };
    0
}

/// `ibv_resize_cq`: the completions waiting stay, in order; EINVAL for a
/// size outside 1..=`max_cqe` or below the number waiting (as rxe).
pub unsafe extern "C" fn shim_ibv_resize_cq(cq: *mut ibv_cq, cqe: c_int) -> c_int {
    if cq.is_null() || cqe <= 0 {
        return libc::EINVAL;
    }
    // SAFETY: a live CQ.
    let w = unsafe { ShimCq::from_c(cq) };
    if let Err(e) = w.soft.resize(cqe as usize) {
        return e.0;
    }
    // SAFETY: a live CQ; `cqe` is the library's to write (as rdma-core's
    // ibv_cmd_resize_cq does with the size the kernel reports).
    unsafe { (*cq).cqe = cqe };
    0
}

/// `ibv_poll_cq` (through `ctx->ops.poll_cq`).
pub unsafe extern "C" fn poll_cq_op(cq: *mut ibv_cq, n: c_int, wc: *mut ibv_wc) -> c_int {
    if cq.is_null() || n < 0 || (wc.is_null() && n > 0) {
        return -libc::EINVAL;
    }
    // SAFETY: a live object's context pointer.
    if unsafe { crate::context::forked_away((*cq).context) } {
        return -crate::context::FORKED;
    }
    // SAFETY: live CQ.
    let w = unsafe { ShimCq::from_c(cq) };
    let mut buf = [sv::Wc::EMPTY; 16];
    let mut done = 0usize;
    let want = n as usize;
    while done < want {
        let k = w.soft.poll(&mut buf[..(want - done).min(16)]);
        for (i, c) in buf[..k].iter().enumerate() {
            // SAFETY: the caller's array holds `n` entries; done + i < n.
            unsafe { *wc.add(done + i) = conv::wc_to_c(c) };
        }
        done += k;
        if k < 16 {
            break;
        }
    }
    done as c_int
}

pub unsafe extern "C" fn req_notify_cq_op(cq: *mut ibv_cq, solicited_only: c_int) -> c_int {
    // SAFETY: a live object's context pointer.
    if unsafe { crate::context::forked_away((*cq).context) } {
        return crate::context::FORKED;
    }
    // SAFETY: live CQ.
    match unsafe { ShimCq::from_c(cq) }
        .soft
        .req_notify(solicited_only != 0)
    {
        Ok(()) => 0,
        Err(e) => e.0,
    }
}

pub unsafe extern "C" fn shim_ibv_get_cq_event(
    ch: *mut ibv_comp_channel,
    cq_out: *mut *mut ibv_cq,
    ctx_out: *mut *mut c_void,
) -> c_int {
    if ch.is_null() || cq_out.is_null() || ctx_out.is_null() {
        set_errno(libc::EINVAL);
        return -1;
    }
    // As for async events: the parent's channel's descriptor is shared.
    // SAFETY: a live channel's context pointer.
    if unsafe { crate::context::forked_away((*ch).context) } {
        set_errno(crate::context::FORKED);
        return -1;
    }
    // SAFETY: a live channel.
    let epfd = unsafe { &*(ch as *const ShimChannel) }.epoll.as_raw_fd();
    loop {
        if !wait_readable(epfd) {
            return -1;
        }
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: one epoll_event of room.
        let r = unsafe { libc::epoll_wait(epfd, &mut ev, 1, 0) };
        if r < 0 {
            return -1;
        }
        if r == 0 {
            continue;
        }
        let w = ev.u64 as *mut ShimCq;
        // SAFETY: the epoll data is a CQ still in the set, hence live.
        let cq = unsafe { &*w };
        if cq.events.as_ref().and_then(|e| e.get_event()).is_some() {
            // SAFETY: the caller's out-pointers.
            unsafe {
                *cq_out = w as *mut ibv_cq;
                *ctx_out = cq.cq.cq_context;
            }
            return 0;
        }
    }
}

pub unsafe extern "C" fn shim_ibv_ack_cq_events(cq: *mut ibv_cq, n: c_uint) {
    if cq.is_null() {
        return;
    }
    // SAFETY: live CQ; its mutex/cond are zero-initialised (glibc's static
    // initialisers), as the real library leaves them for applications.
    unsafe {
        let m = &mut (*cq).mutex as *mut pthread_mutex_t as *mut libc::pthread_mutex_t;
        libc::pthread_mutex_lock(m);
        (*cq).comp_events_completed = (*cq).comp_events_completed.wrapping_add(n);
        libc::pthread_cond_signal(
            &mut (*cq).cond as *mut pthread_cond_t as *mut libc::pthread_cond_t,
        );
        libc::pthread_mutex_unlock(m);
    }
}
