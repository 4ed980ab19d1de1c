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

/// An object made through a parent domain: its domain (held: EBUSY while
/// the object lives) and, if the allocator provided its memory, where it
/// goes back.
struct Placement {
    pd: usize,
    freed_by: Option<(Allocator, usize, u64)>,
}

/// Objects made through a parent domain, by address.
static PLACED: Mutex<Option<HashMap<usize, Placement>>> = Mutex::new(None);

/// Move `v` into memory for an object of `resource` made on `pd`: a parent
/// domain's allocator if it has one (and does not answer
/// `IBV_ALLOCATOR_USE_DEFAULT`), else a Box. An object made through a
/// parent domain holds it until [`release`].
///
/// # Safety
/// `pd` must be NULL or a live PD; the result must be released with
/// [`release`].
pub unsafe fn place<T>(pd: *mut ibv_pd, resource: u64, v: T) -> Result<*mut T, i32> {
    if pd.is_null() {
        return Ok(Box::into_raw(Box::new(v)));
    }
    // SAFETY: (caller) a live PD.
    let w = unsafe { ShimPd::from_c(pd) };
    let Kind::Parent {
        allocator,
        pd_context,
        ..
    } = w.kind
    else {
        return Ok(Box::into_raw(Box::new(v)));
    };
    let (size, align) = (std::mem::size_of::<T>(), std::mem::align_of::<T>());
    let mut freed_by = None;
    let p = match allocator {
        None => Box::into_raw(Box::new(v)),
        Some(a) => {
            // SAFETY: the application's allocator, called as rdma-core's
            // providers call it.
            let p = unsafe { (a.alloc)(pd, pd_context, size, align, resource) };
            if p as usize == USE_DEFAULT {
                Box::into_raw(Box::new(v))
            } else if p.is_null() {
                return Err(libc::ENOMEM);
            } else if (p as usize) % align != 0 {
                // Not what was asked: give it back rather than misuse it.
                // SAFETY: returned by this allocator just now.
                unsafe { (a.free)(pd, pd_context, p, resource) };
                return Err(libc::ENOMEM);
            } else {
                let p = p as *mut T;
                // SAFETY: `size` bytes at `p`, aligned for T, ours until freed.
                unsafe { p.write(v) };
                freed_by = Some((a, pd_context as usize, resource));
                p
            }
        }
    };
    w.holds.fetch_add(1, Ordering::AcqRel);
    crate::sync::lock(&PLACED)
        .get_or_insert_with(HashMap::new)
        .insert(
            p as usize,
            Placement {
                pd: pd as usize,
                freed_by,
            },
        );
    Ok(p)
}

/// Drop the object at `p`, give its memory back where it came from and
/// release its parent domain.
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
    let pd = pl.pd as *mut ibv_pd;
    match pl.freed_by {
        // SAFETY: (caller) a Box from `place`.
        None => drop(unsafe { Box::from_raw(p) }),
        // SAFETY: (caller) a live T placed in the allocator's memory; the
        // parent domain outlives it (its `holds` refuses deallocation).
        Some((a, pd_context, resource)) => unsafe {
            std::ptr::drop_in_place(p);
            (a.free)(pd, pd_context as *mut c_void, p as *mut c_void, resource);
        },
    }
    // SAFETY: the parent domain is live while it holds this object.
    unsafe { ShimPd::from_c(pd) }
        .holds
        .fetch_sub(1, Ordering::AcqRel);
}
