//! The C side: bindings generated from <infiniband/verbs.h> (see
//! `tools/gen-bindings.sh`) and the few helpers every exported function uses.

// Generated code: its `unsafe` blocks are bindgen's bitfield accessors over
// `#[repr(C)]` storage, reviewed as a generator rather than line by line, so
// they carry no hand-written `// SAFETY:` notes (the file is regenerated).
#[allow(
    clippy::all,
    clippy::undocumented_unsafe_blocks,
    unsafe_op_in_unsafe_fn,
    unnecessary_transmutes
)]
#[rustfmt::skip]
pub mod bindings;
pub use bindings::*;

/// `<rdma/rdma_cma.h>`'s structures over the types above
/// (`tools/gen-rdmacm-bindings.sh`), for `crate::rdmacm`.
#[allow(
    clippy::all,
    clippy::undocumented_unsafe_blocks,
    unsafe_op_in_unsafe_fn,
    unnecessary_transmutes
)]
#[rustfmt::skip]
pub mod rdmacm_bindings;

pub use std::os::raw::{c_char, c_int, c_uint, c_void};

/// Set the caller's `errno` (the verbs API reports many failures this way).
pub fn set_errno(e: i32) {
    // SAFETY: __errno_location returns this thread's errno slot, always valid.
    unsafe { *libc::__errno_location() = e };
}

/// `NULL` with `errno` set: how pointer-returning verbs fail.
pub fn fail_null<T>(e: i32) -> *mut T {
    set_errno(e);
    std::ptr::null_mut()
}

/// Copy `s` into a fixed C char array, NUL-terminated and truncated to fit.
pub fn put_cstr(dst: &mut [c_char], s: &str) {
    let n = s.len().min(dst.len().saturating_sub(1));
    for (d, b) in dst.iter_mut().zip(s.as_bytes()[..n].iter()) {
        *d = *b as c_char;
    }
    if let Some(z) = dst.get_mut(n) {
        *z = 0;
    }
}
