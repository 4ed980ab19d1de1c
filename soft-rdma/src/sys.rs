//! Random bytes, and reading inline data from application memory (through
//! `odp`'s guarded copy): the device's `unsafe` outside the transport's
//! syscalls and rings and the counters' shared mapping (`shm.rs`).

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
