//! Protection domains: allocated, imported (`ibv_import_pd`, see
//! `import.rs`) and parent domains (`ibv_alloc_parent_domain`).
//!
//! A parent domain wraps a PD: its `soft` is the inner PD's, so it serves
//! wherever a PD does (QPs, SRQs, MRs, AHs, an extended CQ's
//! `parent_domain`) with the inner PD's protection. Its allocator callbacks
//! place the shim's own per-object memory (`alloc.rs`).

use crate::ffi::*;
use crate::import::CmdFile;
use soft_rdma::verbs::Pd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The custom allocator of a parent domain (`IBV_PARENT_DOMAIN_INIT_ATTR_ALLOCATORS`).
#[derive(Clone, Copy)]
pub struct Allocator {
    pub alloc: unsafe extern "C" fn(*mut ibv_pd, *mut c_void, usize, usize, u64) -> *mut c_void,
    pub free: unsafe extern "C" fn(*mut ibv_pd, *mut c_void, *mut c_void, u64),
}

pub enum Kind {
    Allocated,
    /// `ibv_import_pd`: another context's view of a PD (same handle).
    Imported,
    /// `ibv_alloc_parent_domain` over `inner`.
    Parent {
        inner: *mut ibv_pd,
        allocator: Option<Allocator>,
        pd_context: *mut c_void,
    },
}

#[repr(C)]
pub struct ShimPd {
    pub pd: ibv_pd,
    pub soft: Pd,
    pub kind: Kind,
    /// Parent domains over this PD, and objects made through it (a parent):
    /// deallocation is EBUSY meanwhile (the callbacks and the inner PD must
    /// outlive them).
    pub holds: AtomicUsize,
    /// The command file its handle is in (the context may be closed first).
    file: Arc<CmdFile>,
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

/// # Safety
/// `ctx` must be a live context.
unsafe fn boxed(ctx: *mut ibv_context, handle: u32, soft: Pd, kind: Kind) -> *mut ShimPd {
    // SAFETY: (caller) live context.
    let file = unsafe { crate::import::file(ctx) };
    Box::into_raw(Box::new(ShimPd {
        pd: ibv_pd {
            context: ctx,
            handle,
        },
        soft,
        kind,
        holds: AtomicUsize::new(0),
        file,
    }))
}

pub unsafe extern "C" fn shim_ibv_alloc_pd(ctx: *mut ibv_context) -> *mut ibv_pd {
    if ctx.is_null() {
        return fail_null(libc::EINVAL);
    }
    // SAFETY: the caller's live context.
    if unsafe { crate::context::forked_away(ctx) } {
        return fail_null(crate::context::FORKED);
    }
    // SAFETY: live context.
    let soft = unsafe { crate::context::ShimContext::from_c(ctx) }
        .dev
        .alloc_pd();
    // SAFETY: live context; `w` is live until ibv_dealloc_pd, which forgets
    // the handle.
    let w = unsafe { boxed(ctx, 0, soft, Kind::Allocated) };
    // SAFETY: as above.
    unsafe { (*w).pd.handle = (*w).file.add_pd(w) };
    w as *mut ibv_pd
}

/// `ibv_import_pd`'s new view of `orig` in `ctx`.
///
/// # Safety
/// `ctx` must be a live context.
pub unsafe fn imported(ctx: *mut ibv_context, handle: u32, orig: &ShimPd) -> *mut ShimPd {
    // SAFETY: (caller) live context.
    unsafe { boxed(ctx, handle, orig.soft.clone(), Kind::Imported) }
}

/// `ibv_unimport_pd`: free an imported PD's view (nothing for others).
///
/// # Safety
/// `pd` must be NULL or a live PD.
pub unsafe fn unimport(pd: *mut ibv_pd) {
    // SAFETY: (caller) NULL or live.
    if !pd.is_null() && matches!(unsafe { ShimPd::from_c(pd) }.kind, Kind::Imported) {
        // SAFETY: the Box from ibv_import_pd.
        drop(unsafe { Box::from_raw(pd as *mut ShimPd) });
    }
}

pub unsafe extern "C" fn shim_ibv_dealloc_pd(pd: *mut ibv_pd) -> c_int {
    if pd.is_null() {
        return libc::EINVAL;
    }
    // SAFETY: a live object's context pointer.
    if unsafe { crate::context::forked_away((*pd).context) } {
        return crate::context::FORKED;
    }
    // SAFETY: a live PD from ibv_alloc_pd, ibv_import_pd or ibv_alloc_parent_domain.
    let w = unsafe { ShimPd::from_c(pd) };
    if w.holds.load(Ordering::Acquire) > 0 {
        return libc::EBUSY;
    }
    match w.kind {
        Kind::Allocated => {
            // An MR, QP or SRQ still uses it: EBUSY, and it lives on (as rdma-core).
            if let Err((_, e)) = w.soft.clone().dealloc() {
                return e.0;
            }
            w.file.forget(w.pd.handle);
        }
        Kind::Imported => {}
        Kind::Parent { inner, .. } => {
            // SAFETY: the inner PD is live while a parent domain holds it.
            unsafe { ShimPd::from_c(inner) }
                .holds
                .fetch_sub(1, Ordering::AcqRel);
        }
    }
    // SAFETY: `pd` came from one of the Boxes above; this ends its life.
    drop(unsafe { Box::from_raw(pd as *mut ShimPd) });
    0
}

/// `ibv_alloc_parent_domain` (through `verbs_context.alloc_parent_domain`):
/// a PD is required, thread domains do not exist here (EINVAL, as for an
/// unknown `comp_mask` bit), and allocators come as a pair.
pub unsafe extern "C" fn alloc_parent_domain_op(
    ctx: *mut ibv_context,
    attr: *mut ibv_parent_domain_init_attr,
) -> *mut ibv_pd {
    if ctx.is_null() || attr.is_null() {
        return fail_null(libc::EINVAL);
    }
    // SAFETY: the caller's attributes.
    let a = unsafe { &*attr };
    let known = IBV_PARENT_DOMAIN_INIT_ATTR_ALLOCATORS | IBV_PARENT_DOMAIN_INIT_ATTR_PD_CONTEXT;
    if a.pd.is_null() || !a.td.is_null() || a.comp_mask & !known != 0 {
        return fail_null(libc::EINVAL);
    }
    // SAFETY: a live PD.
    let inner = unsafe { ShimPd::from_c(a.pd) };
    if !crate::import::same_file(inner.pd.context, ctx) || matches!(inner.kind, Kind::Parent { .. })
    {
        return fail_null(libc::EINVAL);
    }
    let allocator = if a.comp_mask & IBV_PARENT_DOMAIN_INIT_ATTR_ALLOCATORS != 0 {
        match (a.alloc, a.free) {
            (Some(alloc), Some(free)) => Some(Allocator { alloc, free }),
            _ => return fail_null(libc::EINVAL),
        }
    } else {
        None
    };
    let pd_context = if a.comp_mask & IBV_PARENT_DOMAIN_INIT_ATTR_PD_CONTEXT != 0 {
        a.pd_context
    } else {
        std::ptr::null_mut()
    };
    inner.holds.fetch_add(1, Ordering::AcqRel);
    let kind = Kind::Parent {
        inner: a.pd,
        allocator,
        pd_context,
    };
    // SAFETY: live context.
    unsafe { boxed(ctx, inner.pd.handle, inner.soft.clone(), kind) as *mut ibv_pd }
}
