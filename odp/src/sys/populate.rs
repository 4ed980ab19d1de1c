//! Faulting pages in: `madvise(MADV_POPULATE_READ / MADV_POPULATE_WRITE)`.
//!
//! STUB: filled in by the syscall work.

/// Why pages could not be faulted in (measured errno mapping, see testing.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PopulateError {
    /// ENOMEM: part of the range is not mapped.
    Hole,
    /// EINVAL: write asked on a read-only mapping, or PROT_NONE, or a mapping
    /// that cannot be populated.
    Permission,
    /// EFAULT: a file mapping beyond the end of the file (or a hardware error).
    BeyondEof,
    /// Any other errno.
    Other(i32),
}

/// Fault in `[addr, addr+len)` for read, or for write when `write` (which also
/// breaks copy-on-write and upgrades a present read-only page). Retries
/// EINTR/EAGAIN internally. `addr` and `len` must be page-aligned.
pub fn populate(addr: usize, len: usize, write: bool) -> Result<(), PopulateError> {
    let _ = (addr, len, write);
    unimplemented!()
}

/// The system page size.
pub fn page_size() -> usize {
    4096
}
