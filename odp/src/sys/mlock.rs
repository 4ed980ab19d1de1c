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

/// `RLIMIT_MEMLOCK`'s soft limit in bytes; `None` when unlimited.
pub fn memlock_limit() -> Option<u64> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit, which `r` is.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) } != 0 {
        return None;
    }
    (r.rlim_cur != libc::RLIM_INFINITY).then_some(r.rlim_cur)
}

/// Whether this process holds `CAP_IPC_LOCK` in its effective set (the
/// `CapEff` mask of `/proc/self/status`), which exempts it from the limit.
pub fn has_ipc_lock() -> bool {
    const CAP_IPC_LOCK: u32 = 14;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let hex = s
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))?
                .trim()
                .to_owned();
            u64::from_str_radix(&hex, 16).ok()
        })
        .is_some_and(|eff| eff & (1 << CAP_IPC_LOCK) != 0)
}
