//! One region: an interval notifier, its per-page state under the umem lock,
//! and the fault/commit loop (`ib_umem_odp_map_dma_and_lock`).
//!
//! ```text
//! fast:   barrier(shared); lock; all pages valid? -> guard
//! again:  mm = get()                  -- else Gone
//!         seq = read_begin()          -- no lock held (asserted)
//!         cover (unless covered since the last invalidation)
//!         + populate missing          -- speculative, no lock held
//!         drop(mm)                    -- a last put must not run under the lock
//!         barrier(shared); lock
//!         read_retry(seq)? unlock; goto again
//!         mark pages; -> guard (lock + barrier held, pages valid)
//! ```
//!
//! The invalidate callback takes the same lock, calls `set_seq`, clears the
//! pages and returns; a non-blockable invalidation that finds the lock taken
//! is refused.

use super::pages::Pages;
use super::{within, Access, AccessError, Counters, Mode, UmemGuard, PAGE_SIZE};
use crate::lockdep;
use crate::mm::MmGet;
use crate::notifier::{IntervalNotifier, Invalidate, Invalidation, Refused, SeqSet};
use crate::sync::{self, Arc, Mutex, Ordering, RwLockReadGuard};

/// What a region needs from the operating system. [`crate::MmGrab`] is the
/// real one; tests and the loom model supply their own.
pub trait Space {
    /// Proof that the address space is usable (`MmGet` for the real one).
    type Usable;
    /// `mmget_not_zero`.
    fn get(&self) -> Option<Self::Usable>;
    /// Shared side of the invalidation barrier, held for the guard's life.
    fn barrier(&self) -> RwLockReadGuard<'_, ()>;
    /// Make `span` covered by the invalidation source (a whole explicit
    /// region, so coverage does not split the application's mappings page by
    /// page); true if all of it is now.
    fn cover_span(&self, mm: &Self::Usable, span: (u64, u64)) -> bool;
    /// Fault `[start, end)` (page-aligned) in for read or write.
    fn fault(
        &self,
        mm: &Self::Usable,
        start: u64,
        end: u64,
        write: bool,
    ) -> Result<(), AccessError>;
    /// Report the pages of `[start, end)` the CPU has resident.
    fn snapshot(
        &self,
        mm: &Self::Usable,
        start: u64,
        end: u64,
        resident: &mut dyn FnMut(u64),
    ) -> Result<(), AccessError>;
}

/// How many commit attempts an invalidation may spoil before giving up.
const MAX_ROUNDS: u32 = 10_000;

/// The part the notifier tree points at: the lock and the pages.
pub(crate) struct Core {
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) pages: Mutex<Pages>,
    pub(crate) counters: Arc<Counters>,
    /// Called (under the lock) when an invalidation leaves no page present.
    on_empty: Option<Box<dyn Fn(u64) + Send + Sync>>,
    /// What a fault registers with the monitor: the whole region (explicit
    /// umems: the application's own buffer, kept in one piece) or only the
    /// pages faulted (implicit children: a 2 MiB chunk may hold unrelated
    /// memory — malloc's, a thread stack — whose unmaps must not wait on us).
    cover_whole: bool,
}

impl Core {
    pub(crate) fn page_range(&self, va: u64, len: u64) -> (usize, usize) {
        let first = (va - self.start) / PAGE_SIZE;
        let last = (va + len - self.start).div_ceil(PAGE_SIZE);
        (first as usize, (last - first) as usize)
    }
}

impl Invalidate for Core {
    fn invalidate(&self, inv: Invalidation<'_>) -> Result<SeqSet, Refused> {
        let mut pages = inv.lock(&self.pages)?;
        let (s, e) = inv.clamped();
        let token = inv.set_seq(&pages);
        // An unmap or remap may have taken coverage with it.
        pages.covered = false;
        let (first, n) = self.page_range(s, e - s);
        if pages.mapped() > 0 {
            self.counters
                .invalidations_of_present
                .fetch_add(1, Ordering::Relaxed);
        }
        let cleared = pages.clear(first, n);
        self.counters.invalidations.fetch_add(1, Ordering::Relaxed);
        self.counters
            .pages_invalidated
            .fetch_add(cleared as u64, Ordering::Relaxed);
        if cleared > 0 && pages.mapped() == 0 {
            if let Some(f) = &self.on_empty {
                f(self.start);
            }
        }
        Ok(token)
    }
}

/// Who asked for a fault, for the counters.
#[derive(Clone, Copy)]
enum Why {
    /// A device access.
    Access,
    /// `ibv_advise_mr`.
    Prefetch,
    /// The device's read-ahead of a stream.
    ReadAhead,
}

/// One interval of mirrored address space.
pub struct Region {
    pub(crate) core: Arc<Core>,
    notifier: IntervalNotifier,
}

impl Region {
    /// Subscribe a page-aligned `[start, end)` (inserting a notifier needs
    /// `MmGet`). `on_empty` runs, under the region lock, when an invalidation
    /// leaves no page present. `cover_whole`: see `Core::cover_whole`.
    pub fn new(
        mm: &MmGet,
        start: u64,
        end: u64,
        counters: Arc<Counters>,
        on_empty: Option<Box<dyn Fn(u64) + Send + Sync>>,
        cover_whole: bool,
    ) -> Result<Region, AccessError> {
        debug_assert!(start % PAGE_SIZE == 0 && end % PAGE_SIZE == 0 && start < end);
        let npages = ((end - start) / PAGE_SIZE) as usize;
        let core = Arc::new(Core {
            start,
            end,
            pages: Mutex::new(Pages::new(npages)),
            counters,
            on_empty,
            cover_whole,
        });
        let notifier = mm
            .notifiers()
            .insert(start, end - start, core.clone())
            .map_err(|_| AccessError::OutOfBounds)?;
        Ok(Region { core, notifier })
    }

    pub fn start(&self) -> u64 {
        self.core.start
    }

    pub fn end(&self) -> u64 {
        self.core.end
    }

    pub fn notifier(&self) -> &IntervalNotifier {
        &self.notifier
    }

    /// Pages currently present.
    pub fn mapped_pages(&self) -> usize {
        sync::lock(&self.core.pages).mapped()
    }

    /// Whether every page of `[va, va+len)` (inside the region) is present,
    /// and writable if `write`: what the device would use without faulting.
    pub fn present(&self, va: u64, len: u64, write: bool) -> bool {
        let core = &*self.core;
        if len == 0 || !within(va, len, core.start, core.end) {
            return false;
        }
        let (first, n) = core.page_range(va, len);
        sync::lock(&core.pages).all_valid(first, n, write)
    }

    pub(crate) fn footprint(&self) -> usize {
        sync::lock(&self.core.pages).footprint() + std::mem::size_of::<Core>()
    }

    /// Fault `[va, va+len)` (inside the region) for `access` and return with
    /// the lock held and the pages valid. `len` 0 returns a guard over nothing.
    pub fn map<'a, S: Space>(
        &'a self,
        space: &'a S,
        va: u64,
        len: u64,
        access: Access,
        mode: Mode,
    ) -> Result<UmemGuard<'a>, AccessError> {
        self.map_for(space, va, len, access, mode, Why::Access)
    }

    /// [`Region::map`] for `ibv_advise_mr`: the pages it makes present are
    /// counted as prefetched, not faulted (as mlx5 counts them).
    pub(crate) fn prefetch<'a, S: Space>(
        &'a self,
        space: &'a S,
        va: u64,
        len: u64,
        access: Access,
        mode: Mode,
    ) -> Result<UmemGuard<'a>, AccessError> {
        self.map_for(space, va, len, access, mode, Why::Prefetch)
    }

    /// [`Region::map`] for the device's read-ahead (`umem/ahead.rs`): the
    /// pages it makes present are counted as read ahead.
    pub(crate) fn read_ahead<'a, S: Space>(
        &'a self,
        space: &'a S,
        va: u64,
        len: u64,
        access: Access,
    ) -> Result<UmemGuard<'a>, AccessError> {
        self.map_for(space, va, len, access, Mode::Fault, Why::ReadAhead)
    }

    fn map_for<'a, S: Space>(
        &'a self,
        space: &'a S,
        va: u64,
        len: u64,
        access: Access,
        mode: Mode,
        why: Why,
    ) -> Result<UmemGuard<'a>, AccessError> {
        let core = &*self.core;
        if !within(va, len, core.start, core.end) {
            return Err(AccessError::OutOfBounds);
        }
        let write = access.is_write();
        // Taking the lock below while already holding one would deadlock
        // against an invalidation needing the first (and nest the barrier).
        lockdep::assert_may_wait_for_invalidation("umem map");
        let (first, n) = if len == 0 {
            (0, 0)
        } else {
            core.page_range(va, len)
        };
        let mut rounds = 0;
        loop {
            let (missing, barrier, pages) = {
                let barrier = space.barrier();
                let pages = sync::lock(&core.pages);
                (pages.missing(first, n, write), barrier, pages)
            };
            let hint_covered = pages.covered;
            if pages.detached {
                return Err(AccessError::Detached);
            }
            let Some((mfirst, mn)) = missing else {
                return Ok(UmemGuard::new(pages, barrier, core, va, len, write));
            };
            drop(pages);
            drop(barrier);

            let mm = space.get().ok_or(AccessError::Gone)?;
            let seq = self.notifier.read_begin();
            let (ms, me) = (
                core.start + mfirst as u64 * PAGE_SIZE,
                core.start + (mfirst + mn) as u64 * PAGE_SIZE,
            );
            // Coverage before populating, so that memory mapped since the
            // last look is covered before it is trusted. A whole region
            // covered since its last invalidation needs no new registration
            // (a system call taking the mmap lock for writing): checked again
            // at the commit, where `covered` is exact.
            let skip_cover = core.cover_whole && hint_covered;
            let covered_now = !skip_cover
                && space.cover_span(
                    &mm,
                    if core.cover_whole {
                        (core.start, core.end)
                    } else {
                        (ms, me)
                    },
                );
            let mut resident: Vec<usize> = Vec::new();
            let r = match mode {
                Mode::Fault => space.fault(&mm, ms, me, write),
                Mode::Snapshot => space.snapshot(&mm, ms, me, &mut |addr| {
                    resident.push(((addr - core.start) / PAGE_SIZE) as usize)
                }),
            };
            // Bug pattern 3: never let the last MmGet go while holding the lock.
            drop(mm);
            if let Err(e) = r {
                // A fault that raced an invalidation may fail spuriously: retry.
                if self.notifier.check_retry(seq) && rounds < MAX_ROUNDS {
                    rounds += 1;
                    continue;
                }
                return Err(e);
            }

            let barrier = space.barrier();
            let mut pages = sync::lock(&core.pages);
            if pages.detached {
                return Err(AccessError::Detached);
            }
            // No invalidation since `seq`: what was covered after it still
            // is. Skipped on a stale hint (an invalidation cleared `covered`
            // before `seq`): again, covering this time.
            let stale_hint = skip_cover && !pages.covered;
            if self.notifier.read_retry(&pages, seq) || stale_hint {
                rounds += 1;
                if rounds >= MAX_ROUNDS {
                    return Err(AccessError::Busy);
                }
                continue;
            }
            if covered_now && core.cover_whole {
                pages.covered = true;
            }
            let newly = match mode {
                Mode::Fault => pages.set(mfirst, mn, write),
                Mode::Snapshot => resident.iter().map(|&p| pages.set(p, 1, false)).sum(),
            };
            let c = &core.counters;
            match why {
                Why::Prefetch => c
                    .pages_prefetched
                    .fetch_add(newly as u64, Ordering::Relaxed),
                Why::ReadAhead => c
                    .pages_read_ahead
                    .fetch_add(newly as u64, Ordering::Relaxed),
                Why::Access => {
                    c.page_faults.fetch_add(1, Ordering::Relaxed);
                    c.pages_faulted.fetch_add(newly as u64, Ordering::Relaxed)
                }
            };
            if !pages.all_valid(first, n, write) {
                return Err(AccessError::NotPresent);
            }
            return Ok(UmemGuard::new(pages, barrier, core, va, len, write));
        }
    }
}
