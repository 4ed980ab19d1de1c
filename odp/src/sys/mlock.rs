//! `mlock`/`munlock` for pinned (non-ODP) regions.

/// Lock `[addr, addr+len)` in memory; Err(errno) on failure (ENOMEM: a hole
/// or over RLIMIT_MEMLOCK; EPERM).
pub fn mlock(addr: usize, len: usize) -> Result<(), i32> {
    // SAFETY: mlock reads no memory through the pointer; the kernel validates the range.
    let r = unsafe { libc::mlock(addr as *const libc::c_void, len) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO))
    }
}

/// Undo [`mlock`]; errors (the range was unmapped since) are ignored.
pub fn munlock(addr: usize, len: usize) {
    // SAFETY: as for mlock.
    let _ = unsafe { libc::munlock(addr as *const libc::c_void, len) };
}
