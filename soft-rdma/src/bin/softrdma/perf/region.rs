//! The benchmark's buffers: anonymous mappings, page aligned and untouched
//! until used, so that ODP faults them in as the test runs. All of perf's
//! `unsafe` is here, behind a narrow interface: the rest of perf sees
//! offsets into a region, never its pointer.

use crate::{runtime, CliResult};
use std::sync::atomic::{fence, Ordering};

/// One anonymous private mapping, unmapped on drop.
pub(super) struct Region {
    ptr: *mut u8,
    len: usize,
}

impl Region {
    /// At least `len` bytes, rounded up to whole pages. `thp`: advise
    /// transparent huge pages (`--thp`), so the kernel hands out 2 MiB at a
    /// fault where it can instead of 4 KiB.
    pub(super) fn new(len: usize, thp: bool) -> CliResult<Region> {
        let len = len.max(4096).next_multiple_of(4096);
        // SAFETY: asks for a fresh private anonymous mapping; no existing
        // memory is touched, and failure is checked below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return runtime(format!(
                "cannot allocate {len} bytes of buffer: {}",
                std::io::Error::last_os_error()
            ));
        }
        // Owned before the advice, so that a refusal unmaps it on the way out.
        let region = Region { ptr: p.cast(), len };
        // SAFETY: advice on our own fresh mapping of `len` bytes; it changes
        // no contents.
        if thp && unsafe { libc::madvise(p, len, libc::MADV_HUGEPAGE) } != 0 {
            return runtime(format!(
                "--thp: the kernel refused MADV_HUGEPAGE: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(region)
    }

    /// The start address, as memory registration and the peer see it.
    pub(super) fn addr(&self) -> u64 {
        self.ptr as u64
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Bytes no posted operation is writing (their operations completed,
    /// or the link is quiet).
    pub(super) fn bytes(&self, off: usize, len: usize) -> &[u8] {
        assert!(off + len <= self.len);
        // SAFETY: in bounds (asserted) of a mapping that lives as long as
        // `self`; the device writes concurrently only to areas not being read
        // (the caller checks after completion or quiescence).
        unsafe { std::slice::from_raw_parts(self.ptr.add(off), len) }
    }

    /// Bytes to fill before posting: a slot no posted operation uses.
    #[allow(clippy::mut_from_ref)]
    pub(super) fn bytes_mut(&self, off: usize, len: usize) -> &mut [u8] {
        assert!(off + len <= self.len);
        // SAFETY: in bounds (asserted) of a mapping that lives as long as
        // `self`; callers take only slots no posted operation uses, and hold
        // no other slice of them meanwhile.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(off), len) }
    }

    /// A byte the device may be writing right now (the latency marker).
    pub(super) fn volatile_byte(&self, off: usize) -> u8 {
        assert!(off < self.len);
        // SAFETY: in bounds (asserted); a volatile read, as the device
        // writes the byte concurrently.
        let v = unsafe { std::ptr::read_volatile(self.ptr.add(off)) };
        fence(Ordering::Acquire);
        v
    }

    /// An atomic target or a fetched value.
    pub(super) fn volatile_u64(&self, off: usize) -> u64 {
        assert!(off + 8 <= self.len && off % 8 == 0);
        // SAFETY: in bounds and 8-byte aligned (asserted; the mapping is page
        // aligned); a volatile read, as the device may write it.
        let v = unsafe { std::ptr::read_volatile(self.ptr.add(off).cast::<u64>()) };
        fence(Ordering::Acquire);
        v
    }

    /// Set an atomic target before the peer's operations on it.
    pub(super) fn write_u64(&self, off: usize, v: u64) {
        assert!(off + 8 <= self.len && off % 8 == 0);
        // SAFETY: in bounds and 8-byte aligned (asserted; the mapping is page
        // aligned); no operation on it is in flight.
        unsafe { std::ptr::write_volatile(self.ptr.add(off).cast::<u64>(), v) };
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: our own mapping of `len` bytes, unmapped once; the MRs over
        // it are dropped before it (`Side`'s field order).
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}
