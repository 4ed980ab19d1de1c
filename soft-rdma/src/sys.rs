//! The only `unsafe` in soft-rdma: eventfds, random bytes, and reading
//! inline data from application memory (through `odp`'s guarded copy).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// A non-blocking, close-on-exec eventfd.
pub(crate) fn eventfd() -> std::io::Result<OwnedFd> {
    // SAFETY: eventfd takes no pointers; a non-negative result is a new
    // descriptor that we own exclusively.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd was just created and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Add one to an eventfd's counter (makes it readable).
pub(crate) fn eventfd_signal(fd: &OwnedFd) {
    let one = 1u64;
    // SAFETY: writes 8 bytes from a live u64 to a descriptor we own.
    let _ = unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
}

/// Reset an eventfd's counter (no longer readable).
pub(crate) fn eventfd_drain(fd: &OwnedFd) {
    let mut v = 0u64;
    // SAFETY: reads 8 bytes into a live u64 from a descriptor we own.
    let _ = unsafe { libc::read(fd.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
}

/// One random byte (for the unpredictable part of memory keys).
pub(crate) fn random_byte() -> u8 {
    let mut b = [0u8; 1];
    // SAFETY: getrandom writes at most 1 byte into the live 1-byte buffer.
    let r = unsafe { libc::getrandom(b.as_mut_ptr().cast(), 1, 0) };
    if r == 1 {
        b[0]
    } else {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() as u8)
            .unwrap_or(0)
    }
}

/// Copy the bytes named by a gather list straight from application memory
/// (inline sends: no key is needed). Faults are errors, never crashes.
pub(crate) fn copy_inline(sges: &[crate::types::Sge], out: &mut [u8]) -> Result<(), ()> {
    let mut at = 0;
    for s in sges {
        let n = s.length as usize;
        // SAFETY: the source is application memory named by the work request
        // (never Rust-owned); `guarded::copy_in` turns a fault into an error.
        unsafe { odp::guarded::copy_in(&mut out[at..at + n], s.addr as *const u8) }
            .map_err(|_| ())?;
        at += n;
    }
    Ok(())
}
