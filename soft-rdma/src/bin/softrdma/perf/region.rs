//! The benchmark's buffers: anonymous mappings, page aligned and untouched
//! until used, so that ODP faults them in as the test runs. All of perf's
//! `unsafe` is here, behind a narrow interface: the rest of perf sees
//! offsets into a region, never its pointer.

use crate::{runtime, CliResult};
use odp::Mapping;
use std::sync::atomic::{fence, Ordering};

/// One anonymous private mapping, unmapped on drop (after the MRs over it:
/// `Side`'s field order).
pub(super) struct Region {
    map: Mapping,
}

impl Region {
    /// At least `len` bytes, rounded up to whole pages. `thp`: advise
    /// transparent huge pages (`--thp`), so the kernel hands out 2 MiB at a
    /// fault where it can instead of 4 KiB.
    pub(super) fn new(len: usize, thp: bool) -> CliResult<Region> {
        let len = len.max(4096).next_multiple_of(4096);
        let map = match Mapping::anon(len) {
            Ok(m) => m,
            Err(e) => return runtime(format!("cannot allocate {len} bytes of buffer: {e}")),
        };
        if thp {
            if let Err(e) = map.advise_huge() {
                return runtime(format!("--thp: the kernel refused MADV_HUGEPAGE: {e}"));
            }
        }
        Ok(Region { map })
    }

    /// The start address, as memory registration and the peer see it.
    pub(super) fn addr(&self) -> u64 {
        self.map.addr() as u64
    }

    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    /// Bytes no posted operation is writing (their operations completed,
    /// or the link is quiet).
    pub(super) fn bytes(&self, off: usize, len: usize) -> &[u8] {
        assert!(off + len <= self.map.len());
        // SAFETY: in bounds (asserted) of a mapping that lives as long as
        // `self`; the device writes concurrently only to areas not being read
        // (the caller checks after completion or quiescence).
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(off), len) }
    }

    /// Bytes to fill before posting: a slot no posted operation uses.
    #[allow(clippy::mut_from_ref)]
    pub(super) fn bytes_mut(&self, off: usize, len: usize) -> &mut [u8] {
        assert!(off + len <= self.map.len());
        // SAFETY: in bounds (asserted) of a mapping that lives as long as
        // `self`; callers take only slots no posted operation uses, and hold
        // no other slice of them meanwhile.
        unsafe { std::slice::from_raw_parts_mut(self.map.as_ptr().add(off), len) }
    }

    /// A byte the device may be writing right now (the latency marker).
    pub(super) fn volatile_byte(&self, off: usize) -> u8 {
        assert!(off < self.map.len());
        // SAFETY: in bounds (asserted); a volatile read, as the device
        // writes the byte concurrently.
        let v = unsafe { std::ptr::read_volatile(self.map.as_ptr().add(off)) };
        fence(Ordering::Acquire);
        v
    }

    /// An atomic target or a fetched value.
    pub(super) fn volatile_u64(&self, off: usize) -> u64 {
        assert!(off + 8 <= self.map.len() && off % 8 == 0);
        // SAFETY: in bounds and 8-byte aligned (asserted; the mapping is page
        // aligned); a volatile read, as the device may write it.
        let v = unsafe { std::ptr::read_volatile(self.map.as_ptr().add(off).cast::<u64>()) };
        fence(Ordering::Acquire);
        v
    }

    /// Set an atomic target before the peer's operations on it.
    pub(super) fn write_u64(&self, off: usize, v: u64) {
        assert!(off + 8 <= self.map.len() && off % 8 == 0);
        // SAFETY: in bounds and 8-byte aligned (asserted; the mapping is page
        // aligned); no operation on it is in flight.
        unsafe { std::ptr::write_volatile(self.map.as_ptr().add(off).cast::<u64>(), v) };
    }
}
