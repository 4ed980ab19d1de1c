//! Faulting pages in: `madvise(MADV_POPULATE_READ / MADV_POPULATE_WRITE)`.
//!
//! The device must never fault a page in by touching it: a touch of an
//! unmapped or `PROT_NONE` page is a `SIGSEGV` in the process that hosts the
//! device. `MADV_POPULATE_*` (Linux >= 5.14) runs the same fault path as a
//! touch but reports failure as an errno, like `hmm_range_fault` does in the
//! kernel. The errno mapping below is measured (kernel 6.18); `odp/tests/sys.rs`
//! asserts it.
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

/// Why pages could not be faulted in (measured errno mapping, asserted in
/// `odp/tests/sys.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PopulateError {
    /// ENOMEM: part of the range is not mapped.
    Hole,
    /// EINVAL: write asked on a read-only mapping, or PROT_NONE, or a mapping
    /// that cannot be populated.
    Permission,
    /// EFAULT: a file mapping beyond the end of the file (or a hardware error).
    BeyondEof,
    /// Any other errno. `Other(EINVAL)` means `addr` was not page-aligned;
    /// `Other(ENOSYS)` means the kernel predates `MADV_POPULATE_*` (< 5.14).
    Other(i32),
}

/// Fault in `[addr, addr+len)` for read, or for write when `write` (which also
/// breaks copy-on-write and upgrades a present read-only page). Retries
/// EINTR/EAGAIN internally. `addr` and `len` must be page-aligned.
pub fn populate(addr: usize, len: usize, write: bool) -> Result<(), PopulateError> {
    // The kernel answers EINVAL for a misaligned start, which would otherwise
    // read as `Permission`; reject it here so the two stay distinguishable.
    if addr % page_size() != 0 {
        return Err(PopulateError::Other(libc::EINVAL));
    }
    if len == 0 {
        return Ok(());
    }
    let advice = if write {
        libc::MADV_POPULATE_WRITE
    } else {
        libc::MADV_POPULATE_READ
    };
    loop {
        // SAFETY: MADV_POPULATE_* only faults pages in (as a touch would) and
        // never changes the mapping or the memory's contents; on an unmapped
        // or inaccessible range it fails with an errno instead of a signal.
        // No Rust reference to the memory is created.
        let r = unsafe { libc::madvise(addr as *mut libc::c_void, len, advice) };
        if r == 0 {
            return Ok(());
        }
        let err = match last_errno() {
            // A fatal-signal-free interruption, or the mmap lock was dropped
            // during the fault: populated pages stay, just retry the range.
            libc::EINTR | libc::EAGAIN => continue,
            libc::ENOMEM => PopulateError::Hole,
            libc::EINVAL if !populate_supported() => PopulateError::Other(libc::ENOSYS),
            libc::EINVAL => PopulateError::Permission,
            libc::EFAULT => PopulateError::BeyondEof,
            e => PopulateError::Other(e),
        };
        return Err(err);
    }
}

/// Whether the kernel knows `MADV_POPULATE_READ` (Linux >= 5.14). Probed once:
/// `madvise` validates the advice before it looks at a zero length, so a
/// zero-length call answers EINVAL exactly when the advice is unknown.
pub fn populate_supported() -> bool {
    // 0 = not probed yet, 1 = no, 2 = yes.
    static STATE: AtomicU8 = AtomicU8::new(0);
    match STATE.load(Ordering::Relaxed) {
        1 => false,
        2 => true,
        _ => {
            let probe = page_size(); // any aligned address; length 0 touches nothing
                                     // SAFETY: a zero-length madvise affects no page at all.
            let r =
                unsafe { libc::madvise(probe as *mut libc::c_void, 0, libc::MADV_POPULATE_READ) };
            let ok = r == 0;
            STATE.store(if ok { 2 } else { 1 }, Ordering::Relaxed);
            ok
        }
    }
}

/// The system page size (`sysconf(_SC_PAGESIZE)`, cached after the first call).
pub fn page_size() -> usize {
    static PAGE: AtomicUsize = AtomicUsize::new(0);
    let cached = PAGE.load(Ordering::Relaxed);
    if cached != 0 {
        return cached;
    }
    // SAFETY: sysconf has no memory-safety preconditions.
    let r = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    // POSIX guarantees _SC_PAGESIZE; 4096 is only a defensive fallback.
    let size = if r > 0 { r as usize } else { 4096 };
    PAGE.store(size, Ordering::Relaxed);
    size
}

pub(crate) fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}
