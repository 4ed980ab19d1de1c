//! An explicit ODP umem: one region over a registered VA range.

use super::ahead::Stream;
use super::region::{Region, Space};
use super::{
    within, Access, AccessError, Advice, CounterSnapshot, Counters, Mode, UmemGuard, PAGE_SIZE,
};
use crate::mm::{Coverage, MmGet, MmGrab};
use crate::sync::{self, Arc, Mutex, Ordering, RwLockReadGuard};
use crate::sys::{mincore, populate};
use std::sync::Weak;

/// An explicit ODP umem: nothing pinned, O(1) to register.
pub struct Umem(Arc<Shared>);

struct Shared {
    mm: MmGrab,
    /// The registered range exactly as given (bounds checks use it); the
    /// region is its page-aligned cover.
    addr: u64,
    len: u64,
    writable: bool,
    counters: Arc<Counters>,
    region: Region,
    /// The device's message faults, for read-ahead (`umem/ahead.rs`).
    stream: Mutex<Stream>,
}

impl Umem {
    /// Register `[addr, addr+len)`. `writable` is the registration's access
    /// (`IBV_ACCESS_LOCAL_WRITE` and friends, collapsed).
    pub fn new(mm: &MmGet, addr: u64, len: u64, writable: bool) -> Result<Umem, AccessError> {
        let end = addr
            .checked_add(len)
            .filter(|_| len > 0)
            .ok_or(AccessError::OutOfBounds)?;
        let start = addr & !(PAGE_SIZE - 1);
        let end = end
            .checked_next_multiple_of(PAGE_SIZE)
            .ok_or(AccessError::OutOfBounds)?;
        let counters = Arc::new(Counters::default());
        let region = Region::new(mm, start, end, counters.clone(), None, true)?;
        Ok(Umem(Arc::new(Shared {
            mm: mm.grab(),
            addr,
            len,
            writable,
            counters,
            region,
            stream: Mutex::new(Stream::default()),
        })))
    }

    pub fn addr(&self) -> u64 {
        self.0.addr
    }

    pub fn len(&self) -> u64 {
        self.0.len
    }

    pub fn is_empty(&self) -> bool {
        self.0.len == 0
    }

    pub fn region(&self) -> &Region {
        &self.0.region
    }

    pub fn counters(&self) -> CounterSnapshot {
        self.0.counters.snapshot()
    }

    /// Bytes of per-page device state.
    pub fn footprint(&self) -> usize {
        self.0.region.footprint()
    }

    fn check(&self, va: u64, len: u64, access: Access) -> Result<(), AccessError> {
        if !within(va, len, self.0.addr, self.0.addr + self.0.len) {
            return Err(AccessError::OutOfBounds);
        }
        if access.is_write() && !self.0.writable {
            return Err(AccessError::NotWritable);
        }
        Ok(())
    }

    /// Fault `[va, va+len)` for `access` and return with the lock held.
    pub fn map(
        &self,
        va: u64,
        len: u64,
        access: Access,
        mode: Mode,
    ) -> Result<UmemGuard<'_>, AccessError> {
        self.check(va, len, access)?;
        self.0.region.map(&self.0.mm, va, len, access, mode)
    }

    /// Fault `[va, va+len)` in for `access` ahead of the accesses that
    /// follow (a device about to read or write a whole message: one fault
    /// for its pages instead of one per packet). Not a prefetch in the
    /// counters: the device, not the application, asked.
    ///
    /// Write faults that march forward through the umem (one message after
    /// another) also start read-ahead of the pages after them on the
    /// prefetch worker (`umem/ahead.rs`), so that later messages find their
    /// pages present — when enabled ([`super::ahead::enabled`]; off by
    /// default). Locks: the umem lock, released before the stream's.
    pub fn fault_in(&self, va: u64, len: u64, access: Access) -> Result<(), AccessError> {
        self.map(va, len, access, Mode::Fault).map(drop)?;
        if access.is_write()
            && super::ahead::enabled()
            && sync::lock(&self.0.stream).note(va, len, self.0.region.end())
        {
            let me = Arc::downgrade(&self.0);
            super::defer(Box::new(move || read_ahead(&me)));
        }
        Ok(())
    }

    /// Fault in and copy `data` to `va`.
    pub fn write(&self, va: u64, data: &[u8]) -> Result<(), AccessError> {
        self.map(va, data.len() as u64, Access::Write, Mode::Fault)?
            .write(va, data)
    }

    /// Fault in and let `fill` write `[va, va+len)` (see
    /// [`UmemGuard::fill_with`](super::UmemGuard::fill_with)).
    pub fn fill_with(
        &self,
        va: u64,
        len: u64,
        fill: impl FnOnce(u64, usize) -> Result<(), AccessError>,
    ) -> Result<(), AccessError> {
        self.map(va, len, Access::Write, Mode::Fault)?
            .fill_with(va, len, fill)
    }

    /// Fault in and copy from `va` into `out`.
    pub fn read(&self, va: u64, out: &mut [u8]) -> Result<(), AccessError> {
        self.map(va, out.len() as u64, Access::Read, Mode::Fault)?
            .read(va, out)
    }

    pub fn compare_and_swap(&self, va: u64, expect: u64, new: u64) -> Result<u64, AccessError> {
        self.map(va, 8, Access::Write, Mode::Fault)?
            .compare_and_swap(va, expect, new)
    }

    pub fn fetch_and_add(&self, va: u64, add: u64) -> Result<u64, AccessError> {
        self.map(va, 8, Access::Write, Mode::Fault)?
            .fetch_and_add(va, add)
    }

    /// `ibv_advise_mr`: synchronous when `flush`, otherwise best-effort on the
    /// prefetch worker (errors then go unreported, as with the kernel's work).
    pub fn prefetch(
        &self,
        va: u64,
        len: u64,
        advice: Advice,
        flush: bool,
    ) -> Result<(), AccessError> {
        let access = if advice == Advice::PrefetchWrite {
            Access::Write
        } else {
            Access::Read
        };
        self.check(va, len, access)?;
        self.0.counters.prefetches.fetch_add(1, Ordering::Relaxed);
        let shared = self.0.clone();
        let job = move || prefetch_now(&shared.region, &shared.mm, va, len, advice);
        if flush {
            job()
        } else {
            super::defer(Box::new(move || {
                let _ = job();
            }));
            Ok(())
        }
    }
}

/// The read-ahead job: fault the stream's chunks in until it has caught
/// up. Holds the umem only while faulting a chunk: a deregistered umem's
/// job ends at the next chunk (its pages were the application's to fault).
fn read_ahead(me: &Weak<Shared>) {
    while let Some(sh) = me.upgrade() {
        let Some((start, end)) = sync::lock(&sh.stream).next_chunk() else {
            return;
        };
        // Best effort: a hole or a read-only page stops read-ahead there;
        // the device's own fault reports it if it gets there.
        if sh
            .region
            .read_ahead(&sh.mm, start, end - start, Access::Write)
            .is_err()
        {
            sync::lock(&sh.stream).failed(start);
            return;
        }
    }
}

pub(crate) fn prefetch_now<S: Space>(
    region: &Region,
    space: &S,
    va: u64,
    len: u64,
    advice: Advice,
) -> Result<(), AccessError> {
    let r = match advice {
        Advice::Prefetch => region
            .prefetch(space, va, len, Access::Read, Mode::Fault)
            .map(drop),
        Advice::PrefetchWrite => region
            .prefetch(space, va, len, Access::Write, Mode::Fault)
            .map(drop),
        Advice::PrefetchNoFault => region
            .prefetch(space, va, len, Access::Read, Mode::Snapshot)
            .map(drop),
    };
    match r {
        // A snapshot maps what is resident; missing pages are not an error.
        Err(AccessError::NotPresent) if advice == Advice::PrefetchNoFault => Ok(()),
        r => r,
    }
}

/// The real address space as a region's [`Space`].
impl Space for MmGrab {
    type Usable = MmGet;

    fn get(&self) -> Option<MmGet> {
        MmGrab::get(self)
    }

    fn barrier(&self) -> RwLockReadGuard<'_, ()> {
        self.barrier_shared()
    }

    fn cover_span(&self, mm: &MmGet, span: (u64, u64)) -> bool {
        // A hole elsewhere in the span is fine (its mapped parts get covered);
        // the fault reports a hole where the access needs memory.
        self.cover(mm, span.0, span.1) == Coverage::Covered
    }

    fn fault(&self, _mm: &MmGet, start: u64, end: u64, write: bool) -> Result<(), AccessError> {
        Ok(populate::populate(
            start as usize,
            (end - start) as usize,
            write,
        )?)
    }

    fn snapshot(
        &self,
        _mm: &MmGet,
        start: u64,
        end: u64,
        resident: &mut dyn FnMut(u64),
    ) -> Result<(), AccessError> {
        mincore::for_each_resident(start as usize, (end - start) as usize, |p| {
            resident(start + p as u64 * PAGE_SIZE)
        })
        .map_err(|e| {
            if e == libc::ENOMEM {
                AccessError::Unmapped
            } else {
                AccessError::Os(e)
            }
        })
    }
}
