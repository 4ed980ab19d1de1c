//! The `unsafe` of counter publication: a shared file mapping seen as an
//! array of `AtomicU64` (the only thing either side touches through the
//! mapping; headers are read and written with ordinary file I/O).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::sync::atomic::AtomicU64;

/// `n` 64-bit counters at byte `offset` of a shared mapping of a file.
pub(crate) struct SharedCounters {
    base: NonNull<libc::c_void>,
    map_len: usize,
    offset: usize,
    n: usize,
}

// SAFETY: the mapping is only reached through `&[AtomicU64]`, which is Sync;
// the pointer is owned (unmapped once, in Drop).
unsafe impl Send for SharedCounters {}
// SAFETY: as above — shared access goes through atomics only.
unsafe impl Sync for SharedCounters {}

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
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        // SAFETY: a fresh shared mapping of `need` bytes of an open file; no
        // existing memory is affected. The result is checked below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                need,
                prot,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(SharedCounters {
            base: NonNull::new(p).ok_or_else(io::Error::last_os_error)?,
            map_len: need,
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
                self.base
                    .as_ptr()
                    .cast::<u8>()
                    .add(self.offset)
                    .cast::<AtomicU64>(),
                self.n,
            )
        }
    }
}

impl Drop for SharedCounters {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `map`; no reference into
        // it outlives `self` (`values` borrows `self`).
        unsafe {
            libc::munmap(self.base.as_ptr(), self.map_len);
        }
    }
}
