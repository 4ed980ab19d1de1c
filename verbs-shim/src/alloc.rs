//! Where the shim's per-object memory lives: a Box, or — for a QP, SRQ or
//! extended CQ made through a parent domain with allocators — memory from
//! the application's allocator.
//!
//! A hardware provider gives the allocator its queue buffers and doorbell
//! records. The soft device keeps its queues inside the library (Rust
//! collections the application never maps), so the memory this library
//! allocates for each such object is the wrapper the application's pointer
//! points into (the C struct followed by the soft handle): that is what the
//! allocator provides, with the wrapper's size and alignment, and what its
//! `free` gets back when the object is destroyed. An allocator that answers
//! `IBV_ALLOCATOR_USE_DEFAULT` leaves it to the Box; NULL fails the creation
//! with ENOMEM.

use crate::ffi::*;
use crate::pd::{Allocator, Kind, ShimPd};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Mutex;

/// The `resource_type` the allocator is told (provider-defined in
/// rdma-core; these are the soft device's).
pub const RESOURCE_QP: u64 = 1;
pub const RESOURCE_CQ: u64 = 2;
pub const RESOURCE_SRQ: u64 = 3;

/// `IBV_ALLOCATOR_USE_DEFAULT` (`(void *)-1` in verbs.h, a macro bindgen skips).
const USE_DEFAULT: usize = usize::MAX;

struct Placement {
    allocator: Allocator,
    pd: usize,
    pd_context: usize,
    resource: u64,
}

/// Objects placed by an application's allocator, by address.
static PLACED: Mutex<Option<HashMap<usize, Placement>>> = Mutex::new(None);

/// Move `v` into memory for an object of `resource` made on `pd`: the
/// parent domain's allocator if it has one, else a Box.
///
/// # Safety
/// `pd` must be NULL or a live PD; the result must be released with
/// [`release`].
pub unsafe fn place<T>(pd: *mut ibv_pd, resource: u64, v: T) -> Result<*mut T, i32> {
    let parent = if pd.is_null() {
        None
    } else {
        // SAFETY: (caller) a live PD.
        let w = unsafe { ShimPd::from_c(pd) };
        match w.kind {
            Kind::Parent {
                allocator: Some(a),
                pd_context,
                ..
            } => Some((w, a, pd_context)),
            _ => None,
        }
    };
    let Some((w, a, pd_context)) = parent else {
        return Ok(Box::into_raw(Box::new(v)));
    };
    let (size, align) = (std::mem::size_of::<T>(), std::mem::align_of::<T>());
    // SAFETY: the application's allocator, called as rdma-core's providers
    // call it.
    let p = unsafe { (a.alloc)(pd, pd_context, size, align, resource) };
    if p as usize == USE_DEFAULT {
        return Ok(Box::into_raw(Box::new(v)));
    }
    if p.is_null() {
        return Err(libc::ENOMEM);
    }
    if (p as usize) % align != 0 {
        // Not what was asked: give it back rather than misuse it.
        // SAFETY: returned by this allocator just now.
        unsafe { (a.free)(pd, pd_context, p, resource) };
        return Err(libc::ENOMEM);
    }
    let p = p as *mut T;
    // SAFETY: `size` bytes at `p`, aligned for T, ours until freed.
    unsafe { p.write(v) };
    w.holds.fetch_add(1, Ordering::AcqRel);
    crate::sync::lock(&PLACED)
        .get_or_insert_with(HashMap::new)
        .insert(
            p as usize,
            Placement {
                allocator: a,
                pd: pd as usize,
                pd_context: pd_context as usize,
                resource,
            },
        );
    Ok(p)
}

/// Drop the object at `p` and give its memory back where it came from.
///
/// # Safety
/// `p` must come from [`place`] and not be used afterwards.
pub unsafe fn release<T>(p: *mut T) {
    let placed = crate::sync::lock(&PLACED)
        .as_mut()
        .and_then(|m| m.remove(&(p as usize)));
    let Some(pl) = placed else {
        // SAFETY: (caller) a Box from `place`.
        drop(unsafe { Box::from_raw(p) });
        return;
    };
    // SAFETY: (caller) a live T placed in the allocator's memory; the
    // parent domain outlives it (its `holds` refuses deallocation).
    unsafe {
        std::ptr::drop_in_place(p);
        let pd = pl.pd as *mut ibv_pd;
        (pl.allocator.free)(
            pd,
            pl.pd_context as *mut c_void,
            p as *mut c_void,
            pl.resource,
        );
        ShimPd::from_c(pd).holds.fetch_sub(1, Ordering::AcqRel);
    }
}
