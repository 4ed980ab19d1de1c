//! Completion channels and completion queues.
//!
//! A soft-rdma `CompChannel` reports which CQ fired only as a `Cq` handle, so
//! each CQ with a channel gets a private soft channel, and the C channel's fd
//! is an epoll descriptor over the private channels' eventfds (pollable like
//! the real one); the epoll data names the CQ.

use crate::context::{wait_readable, ShimContext};
use crate::conv;
use crate::ffi::*;
use crate::registry;
use soft_rdma::verbs::{CompChannel, Cq};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

#[repr(C)]
pub struct ShimChannel {
    pub ch: ibv_comp_channel,
    epoll: OwnedFd,
}

// The C pointer converts back to the wrapper with a cast: the C struct comes first.
const _: () = assert!(std::mem::offset_of!(ShimChannel, ch) == 0);

#[repr(C)]
pub struct ShimCq {
    pub cq: ibv_cq,
    pub soft: Cq,
    /// The private soft channel (when created with a channel).
    events: Option<CompChannel>,
}

// The C pointer converts back to the wrapper with a cast: the C struct comes first.
const _: () = assert!(std::mem::offset_of!(ShimCq, cq) == 0);

impl ShimCq {
    /// # Safety
    /// `cq` must be a live CQ from `ibv_create_cq`.
    pub unsafe fn from_c<'a>(cq: *mut ibv_cq) -> &'a ShimCq {
        // SAFETY: (caller) `cq` is the first field of a live ShimCq.
        unsafe { &*(cq as *const ShimCq) }
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
    _comp_vector: c_int,
) -> *mut ibv_cq {
    if ctx.is_null() || cqe < 0 {
        return fail_null(libc::EINVAL);
    }
    // SAFETY: live context (only checked for being ours).
    let _ = unsafe { ShimContext::from_c(ctx) };
    let depth = (cqe as usize).max(1);
    let events = if channel.is_null() {
        None
    } else {
        match CompChannel::new() {
            Ok(c) => Some(c),
            Err(e) => return fail_null(e.0),
        }
    };
    let soft = match Cq::new(depth, events.as_ref()) {
        Ok(c) => c,
        Err(e) => return fail_null(e.0),
    };
    let cq = ibv_cq {
        context: ctx,
        channel,
        cq_context,
        cqe: depth as c_int,
        ..Default::default()
    };
    let w = Box::into_raw(Box::new(ShimCq { cq, soft, events }));
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
                drop(Box::from_raw(w));
                return fail_null(e);
            }
            ch.ch.refcnt += 1;
        }
    }
    // SAFETY: `w` is live (just allocated).
    registry::CQS.insert(unsafe { (*w).soft.id() }, w as *mut ibv_cq);
    w as *mut ibv_cq
}

/// `ibv_create_cq_ex`: not yet (phase 2: `ibv_cq_ex` with start/next/end_poll).
pub unsafe extern "C" fn create_cq_ex_op(
    _ctx: *mut ibv_context,
    _attr: *mut ibv_cq_init_attr_ex,
) -> *mut ibv_cq_ex {
    fail_null(libc::EOPNOTSUPP)
}

pub unsafe extern "C" fn shim_ibv_destroy_cq(cq: *mut ibv_cq) -> c_int {
    if cq.is_null() {
        return libc::EINVAL;
    }
    // SAFETY: the Box allocated in ibv_create_cq; this ends its life.
    let w = unsafe { Box::from_raw(cq as *mut ShimCq) };
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
    0
}

pub unsafe extern "C" fn shim_ibv_resize_cq(_cq: *mut ibv_cq, _cqe: c_int) -> c_int {
    libc::EOPNOTSUPP
}

/// `ibv_poll_cq` (through `ctx->ops.poll_cq`).
pub unsafe extern "C" fn poll_cq_op(cq: *mut ibv_cq, n: c_int, wc: *mut ibv_wc) -> c_int {
    if cq.is_null() || n < 0 || (wc.is_null() && n > 0) {
        return -libc::EINVAL;
    }
    // SAFETY: live CQ.
    let w = unsafe { ShimCq::from_c(cq) };
    let mut buf = [conv::empty_wc(); 16];
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
    if done == 0 {
        // soft-rdma processes received packets on its receive thread only;
        // an application spinning on an empty CQ (both ends of a pingpong on
        // 2 cores) would starve it for a whole time slice. Let it run.
        std::thread::yield_now();
    }
    done as c_int
}

pub unsafe extern "C" fn req_notify_cq_op(cq: *mut ibv_cq, solicited_only: c_int) -> c_int {
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
