//! Guarded access to application memory: the device's "DMA".
//!
//! Every load and store the device makes into application memory goes through
//! here. A fault (the page was unmapped, or lacks the permission) does not kill
//! the process: a SIGSEGV/SIGBUS handler recognises that the faulting
//! instruction lies inside one of the routines of this module and resumes at its
//! fix-up point, which returns [`GuardedFault`]. This is the kernel's exception
//! table (`copy_to_user`) done in userspace.
//!
//! STUB: filled in by the guarded-access work.

/// Why a guarded access failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardedFault {
    /// The access faulted at `addr` (unmapped, or permission denied).
    Fault { addr: usize },
    /// A 64-bit atomic was asked for at an address that is not 8-byte aligned.
    Misaligned,
}

/// Copy `dst.len()` bytes from application address `src` into `dst`.
///
/// # Safety
/// `src` may point anywhere (faults are caught), but it must not alias `dst`
/// and must not point into memory that Rust code treats as immutable or
/// uniquely borrowed elsewhere.
pub unsafe fn copy_in(dst: &mut [u8], src: *const u8) -> Result<(), GuardedFault> {
    let _ = (dst, src);
    unimplemented!()
}

/// Copy `src` to application address `dst`.
///
/// # Safety
/// As [`copy_in`]: `dst` may be unmapped, but must not be Rust-owned memory.
pub unsafe fn copy_out(dst: *mut u8, src: &[u8]) -> Result<(), GuardedFault> {
    let _ = (dst, src);
    unimplemented!()
}

/// Atomic compare-and-swap of the u64 at `addr`; returns the value found.
///
/// # Safety
/// As [`copy_out`].
pub unsafe fn compare_and_swap(addr: *mut u64, expect: u64, new: u64) -> Result<u64, GuardedFault> {
    let _ = (addr, expect, new);
    unimplemented!()
}

/// Atomic fetch-and-add on the u64 at `addr`; returns the value before the add.
///
/// # Safety
/// As [`copy_out`].
pub unsafe fn fetch_and_add(addr: *mut u64, add: u64) -> Result<u64, GuardedFault> {
    let _ = (addr, add);
    unimplemented!()
}
