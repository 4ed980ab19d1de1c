//! Shared file mappings: [`SharedMapping`] owns one (mapped once, unmapped
//! on drop); [`SharedCounters`] sees one as an array of `AtomicU64` for
//! counter publication (the only thing either side touches through that
//! mapping; headers are read and written with ordinary file I/O). The
//! same-host ring (`transport/ring.rs`) builds on `SharedMapping` too.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::ptr::NonNull;
use std::sync::atomic::AtomicU64;

/// A shared mapping of the first `len` bytes of a file, unmapped on drop.
pub(crate) struct SharedMapping {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory that its users reach through
// atomics or raw copies only; it is unmapped once, in Drop.
unsafe impl Send for SharedMapping {}
// SAFETY: as above; no `&` to its non-atomic bytes is handed out.
unsafe impl Sync for SharedMapping {}

impl SharedMapping {
    /// Map `len` bytes of `fd`, read-write or read-only, faulted in at once
    /// with `populate`.
    pub(crate) fn map(
        fd: BorrowedFd<'_>,
        len: usize,
        writable: bool,
        populate: bool,
    ) -> io::Result<SharedMapping> {
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        let flags = if populate {
            libc::MAP_SHARED | libc::MAP_POPULATE
        } else {
            libc::MAP_SHARED
        };
        // SAFETY: a fresh shared mapping of `len` bytes of an open file at an
        // address the kernel picks; no existing memory is affected. The
        // result is checked below.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, fd.as_raw_fd(), 0) };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(SharedMapping {
            base: NonNull::new(p.cast()).ok_or_else(io::Error::last_os_error)?,
            len,
        })
    }

    /// The first byte (page-aligned); `len()` bytes follow.
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl Drop for SharedMapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `map`; no reference into
        // it outlives `self` (its users' accessors borrow them, and they own
        // the mapping).
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// `n` 64-bit counters at byte `offset` of a shared mapping of a file.
pub(crate) struct SharedCounters {
    map: SharedMapping,
    offset: usize,
    n: usize,
}

impl SharedCounters {
    /// Map `file` (at least `offset + 8 * n` bytes long, `offset` a multiple
    /// of 8), read-write for the publisher or read-only for a reader.
    pub(crate) fn map(file: &File, offset: usize, n: usize, writable: bool) -> io::Result<Self> {
        let need = n
            .checked_mul(8)
            .and_then(|b| b.checked_add(offset))
            .filter(|_| offset % 8 == 0)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad counter layout"))?;
        let file_len = file.metadata()?.len();
        if file_len < need as u64 || need == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "counter file shorter than its header says",
            ));
        }
        Ok(SharedCounters {
            map: SharedMapping::map(file.as_fd(), need, writable, false)?,
            offset,
            n,
        })
    }

    /// The counters. A reader's mapping is read-only: it may only `load`.
    pub(crate) fn values(&self) -> &[AtomicU64] {
        // SAFETY: `[offset, offset + 8n)` lies inside the live mapping
        // (checked in `map`), is 8-aligned (page-aligned base, offset % 8 ==
        // 0), and is only ever accessed atomically by every process mapping
        // the file (the publisher stores, readers load). The slice borrows
        // `self`, so it cannot outlive the mapping. Atomic loads from
        // read-only memory are allowed for types no wider than a pointer.
        unsafe {
            std::slice::from_raw_parts(
                self.map.as_ptr().add(self.offset).cast::<AtomicU64>(),
                self.n,
            )
        }
    }
}
