//! [`UmemGuard`]: the umem lock and the barrier held, pages valid — the only
//! place the device touches application memory (through `guarded`).

use super::pages::Pages;
use super::region::Core;
use super::{within, AccessError, PAGE_SIZE};
use crate::guarded::{self, GuardedFault};
use crate::lockdep;
use crate::sync::{MutexGuard, RwLockReadGuard};

/// Proof that `[va, va+len)` of a umem is valid for the access it was mapped
/// for, for as long as the guard lives: an invalidation of the range waits for
/// it (it needs the lock), and so does the `munmap` behind the invalidation
/// (the monitor needs the barrier). Keep it short: one message's worth.
///
/// Rules: one guard per thread at a time (asserted); do not allocate large
/// buffers or call anything that may `munmap` while holding it.
pub struct UmemGuard<'a> {
    // Drop order is declaration order: unlock, then un-count, then barrier.
    pages: MutexGuard<'a, Pages>,
    _held: lockdep::Held,
    _barrier: RwLockReadGuard<'a, ()>,
    core: &'a Core,
    va: u64,
    len: u64,
    write: bool,
}

impl<'a> UmemGuard<'a> {
    pub(crate) fn new(
        pages: MutexGuard<'a, Pages>,
        barrier: RwLockReadGuard<'a, ()>,
        core: &'a Core,
        va: u64,
        len: u64,
        write: bool,
    ) -> Self {
        UmemGuard {
            pages,
            _held: lockdep::Held::umem_lock(),
            _barrier: barrier,
            core,
            va,
            len,
            write,
        }
    }

    /// The mapped range.
    pub fn range(&self) -> (u64, u64) {
        (self.va, self.va + self.len)
    }

    fn check(&self, va: u64, len: u64, write: bool) -> Result<(), AccessError> {
        if !within(va, len, self.va, self.va + self.len) {
            return Err(AccessError::OutOfBounds);
        }
        if write && !self.write {
            return Err(AccessError::NotWritable);
        }
        Ok(())
    }

    /// A fault inside a guarded access: the page is no longer what we thought
    /// (unmapped, or re-protected — `mprotect` sends no event). Forget it, so
    /// the next access faults again and gets the real answer.
    fn faulted(&mut self, f: GuardedFault) -> AccessError {
        if let GuardedFault::Fault { addr } = f {
            let addr = addr as u64;
            if addr >= self.core.start && addr < self.core.end {
                let p = ((addr - self.core.start) / PAGE_SIZE) as usize;
                self.pages.clear(p, 1);
            }
        }
        AccessError::from(f)
    }

    /// Copy `data` to application address `va`.
    pub fn write(&mut self, va: u64, data: &[u8]) -> Result<(), AccessError> {
        self.check(va, data.len() as u64, true)?;
        // SAFETY: va..va+len is application memory registered with this umem
        // (checked above), never Rust-owned; faults are caught by `guarded`.
        unsafe { guarded::copy_out(va as *mut u8, data) }.map_err(|f| self.faulted(f))
    }

    /// Let `fill` write `[va, va+len)` itself (e.g. a system call that
    /// copies from another process): the range is checked and held present
    /// and writable like any write's, and `fill` gets only its address — it
    /// must write through the kernel, which reports a fault as an error,
    /// never by dereferencing it.
    pub fn fill_with(
        &mut self,
        va: u64,
        len: u64,
        fill: impl FnOnce(u64, usize) -> Result<(), AccessError>,
    ) -> Result<(), AccessError> {
        self.check(va, len, true)?;
        fill(va, len as usize)
    }

    /// Copy from application address `va` into `out`.
    pub fn read(&mut self, va: u64, out: &mut [u8]) -> Result<(), AccessError> {
        self.check(va, out.len() as u64, false)?;
        // SAFETY: as in `write`; `out` is a distinct Rust buffer.
        unsafe { guarded::copy_in(out, va as *const u8) }.map_err(|f| self.faulted(f))
    }

    /// 64-bit compare-and-swap at `va` (8-byte aligned); returns the old value.
    pub fn compare_and_swap(&mut self, va: u64, expect: u64, new: u64) -> Result<u64, AccessError> {
        self.check(va, 8, true)?;
        // SAFETY: as in `write`.
        unsafe { guarded::compare_and_swap(va as *mut u64, expect, new) }
            .map_err(|f| self.faulted(f))
    }

    /// 64-bit fetch-and-add at `va` (8-byte aligned); returns the old value.
    pub fn fetch_and_add(&mut self, va: u64, add: u64) -> Result<u64, AccessError> {
        self.check(va, 8, true)?;
        // SAFETY: as in `write`.
        unsafe { guarded::fetch_and_add(va as *mut u64, add) }.map_err(|f| self.faulted(f))
    }
}
