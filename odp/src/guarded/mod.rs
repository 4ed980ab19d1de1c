//! Guarded access to application memory: the device's "DMA".
//!
//! Every load and store the device makes into application memory goes through
//! here. The application may `munmap`/`mprotect` that memory at any moment,
//! even from another thread while a copy is under way, so a fault must become
//! an error, not a crash. This is the kernel's exception table
//! (`copy_to_user`) done in userspace:
//!
//! - The accesses are made by small assembly routines (`x86_64.rs`) whose
//!   faulting instructions lie in known address ranges, each with a fix-up
//!   label.
//! - A SIGSEGV/SIGBUS handler (`signal.rs`, installed once on first use, with
//!   `SA_SIGINFO | SA_ONSTACK`) looks at the interrupted RIP: inside a range,
//!   it moves RIP to the fix-up and hands it the fault address (`si_addr`),
//!   and the routine returns [`GuardedFault::Fault`]. Anywhere else it chains
//!   to the disposition it replaced (std's stack-overflow detector, another
//!   handler, or the default, which still kills the process).
//!
//! Copies use `rep movsb` (fast with ERMS/FSRM), a qword loop below 16 bytes;
//! on a fault either one resumes byte by byte from where it stopped, so the
//! reported address is the first byte that could not be accessed.
//!
//! Limits:
//! - x86_64 Linux only (other targets fail to compile).
//! - A program that installs its own SIGSEGV/SIGBUS handler *after* our first
//!   use, without chaining to ours, defeats the fix-up: a fault then reaches
//!   its handler (or kills the process). One installed before is chained to.
//! - Chaining calls the previous handler directly: its `sa_mask` and
//!   `SA_RESETHAND`/`SA_NODEFER` flags are not reproduced.
//! - A thread that blocks SIGSEGV/SIGBUS is killed by a fault (the kernel
//!   forces synchronous faults through).
//! - A copy that faults has already copied the bytes before the fault
//!   address; an atomic that faults changed nothing.
//! - Installing queries the old disposition then sets ours: a handler another
//!   thread installs between the two is lost.

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
compile_error!("odp::guarded is implemented for x86_64 Linux only");

mod signal;
mod x86_64;

use x86_64::Outcome;

/// Why a guarded access failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardedFault {
    /// The access faulted at `addr` (unmapped, or permission denied).
    Fault { addr: usize },
    /// A 64-bit atomic was asked for at an address that is not 8-byte aligned.
    Misaligned,
}

fn result(outcome: Outcome) -> Result<u64, GuardedFault> {
    match outcome.faulted {
        0 => Ok(outcome.value),
        _ => Err(GuardedFault::Fault {
            addr: outcome.value as usize,
        }),
    }
}

/// Copy `dst.len()` bytes from application address `src` into `dst`.
///
/// On a fault, the bytes before the fault address have been copied.
///
/// # Safety
/// `src` may point anywhere (faults are caught), but it must not alias `dst`
/// and must not point into memory that Rust code treats as immutable or
/// uniquely borrowed elsewhere.
pub unsafe fn copy_in(dst: &mut [u8], src: *const u8) -> Result<(), GuardedFault> {
    if dst.is_empty() {
        return Ok(());
    }
    signal::ensure_installed();
    // SAFETY: `dst` is a valid writable slice of `dst.len()` bytes; any fault
    // on `src` is turned into an error by the installed handler; the caller
    // guarantees `src` does not alias Rust-owned memory.
    result(unsafe { x86_64::odp_guarded_copy(dst.as_mut_ptr(), src, dst.len()) }).map(drop)
}

/// Copy `src` to application address `dst`.
///
/// On a fault, the bytes before the fault address have been copied.
///
/// # Safety
/// As [`copy_in`]: `dst` may be unmapped, but must not be Rust-owned memory.
pub unsafe fn copy_out(dst: *mut u8, src: &[u8]) -> Result<(), GuardedFault> {
    if src.is_empty() {
        return Ok(());
    }
    signal::ensure_installed();
    // SAFETY: `src` is a valid readable slice; faults on `dst` are caught by
    // the installed handler; the caller guarantees `dst` is not Rust-owned.
    result(unsafe { x86_64::odp_guarded_copy(dst, src.as_ptr(), src.len()) }).map(drop)
}

/// Copy `len` bytes from application address `src` to application
/// address `dst` (e.g. another device's buffer of this process into an MR).
///
/// On a fault (on either side), the bytes before it have been copied.
///
/// # Safety
/// As [`copy_in`] and [`copy_out`]: either may be unmapped, neither may be
/// Rust-owned memory, and they must not overlap.
pub unsafe fn copy(dst: *mut u8, src: *const u8, len: usize) -> Result<(), GuardedFault> {
    if len == 0 {
        return Ok(());
    }
    signal::ensure_installed();
    // SAFETY: faults on either address are caught by the installed handler;
    // the caller guarantees neither is Rust-owned and they do not overlap.
    result(unsafe { x86_64::odp_guarded_copy(dst, src, len) }).map(drop)
}

/// Atomic compare-and-swap of the u64 at `addr`; returns the value found.
///
/// The store is attempted even when the comparison fails (a locked
/// read-modify-write), so a read-only page faults either way.
///
/// # Safety
/// As [`copy_out`].
pub unsafe fn compare_and_swap(addr: *mut u64, expect: u64, new: u64) -> Result<u64, GuardedFault> {
    if addr as usize % 8 != 0 {
        return Err(GuardedFault::Misaligned);
    }
    signal::ensure_installed();
    // SAFETY: `addr` is 8-byte aligned (no split lock); faults are caught by
    // the installed handler; the caller guarantees it is not Rust-owned.
    result(unsafe { x86_64::odp_guarded_cas(addr, expect, new) })
}

/// Atomic fetch-and-add on the u64 at `addr`; returns the value before the add.
///
/// # Safety
/// As [`copy_out`].
pub unsafe fn fetch_and_add(addr: *mut u64, add: u64) -> Result<u64, GuardedFault> {
    if addr as usize % 8 != 0 {
        return Err(GuardedFault::Misaligned);
    }
    signal::ensure_installed();
    // SAFETY: as in `compare_and_swap`.
    result(unsafe { x86_64::odp_guarded_faa(addr, add) })
}
