//! Implicit ODP: one umem for the whole address space (`ibv_reg_mr(pd, NULL,
//! SIZE_MAX, ON_DEMAND)`). Children of [`CHILD_SIZE`] are created on first
//! fault — racing creators settle on one — and reaped once an invalidation
//! leaves them with no page present (mlx5's design, with smaller children:
//! 2 MiB keeps per-page state to 128 bytes a child, so 1 GiB touched in a
//! 1 TiB space costs about 150 KiB).

use super::explicit::prefetch_now;
use super::region::Region;
use super::{Access, AccessError, Advice, CounterSnapshot, Counters, Mode, UmemGuard};
use crate::mm::{MmGet, MmGrab};
use crate::sync::{self, Arc, Mutex, Ordering, RwLock};
use std::collections::BTreeMap;

/// Size of one implicit child (a 2 MiB-aligned chunk).
pub const CHILD_SIZE: u64 = 2 << 20;

/// An implicit ODP umem.
pub struct ImplicitUmem(Arc<Shared>);

struct Shared {
    mm: MmGrab,
    writable: bool,
    counters: Arc<Counters>,
    children: RwLock<BTreeMap<u64, Arc<Region>>>,
    /// Starts of children an invalidation emptied; reaped outside any lock.
    reap: Arc<Mutex<Vec<u64>>>,
}

impl ImplicitUmem {
    pub fn new(mm: &MmGet, writable: bool) -> ImplicitUmem {
        ImplicitUmem(Arc::new(Shared {
            mm: mm.grab(),
            writable,
            counters: Arc::new(Counters::default()),
            children: RwLock::new(BTreeMap::new()),
            reap: Arc::new(Mutex::new(Vec::new())),
        }))
    }

    pub fn counters(&self) -> CounterSnapshot {
        self.0.counters.snapshot()
    }

    /// Number of live children.
    pub fn children(&self) -> usize {
        sync::read(&self.0.children).len()
    }

    /// Bytes of per-page device state over all children.
    pub fn footprint(&self) -> usize {
        sync::read(&self.0.children)
            .values()
            .map(|c| c.footprint())
            .sum()
    }

    /// The child covering `va`, created if needed.
    fn child(&self, va: u64) -> Result<Arc<Region>, AccessError> {
        let start = va & !(CHILD_SIZE - 1);
        if let Some(c) = sync::read(&self.0.children).get(&start) {
            return Ok(c.clone());
        }
        let end = start
            .checked_add(CHILD_SIZE)
            .ok_or(AccessError::OutOfBounds)?;
        let mm = self.0.mm.get().ok_or(AccessError::Gone)?;
        let reap = self.0.reap.clone();
        let on_empty: Box<dyn Fn(u64) + Send + Sync> = Box::new(move |s| sync::lock(&reap).push(s));
        let fresh = Arc::new(Region::new(
            &mm,
            start,
            end,
            self.0.counters.clone(),
            Some(on_empty),
            false,
        )?);
        let mut map = sync::write(&self.0.children);
        let winner = map.entry(start).or_insert_with(|| fresh.clone()).clone();
        drop(map);
        // The loser of a creation race is dropped here, outside every lock
        // (dropping removes its notifier, which may wait).
        drop(fresh);
        Ok(winner)
    }

    /// A failed access (e.g. to unmapped memory) may have created a child that
    /// no invalidation will ever empty: queue it, so addresses a peer makes up
    /// cannot grow the child map without bound.
    fn reap_if_empty(&self, child: &Region) {
        if child.mapped_pages() == 0 {
            sync::lock(&self.0.reap).push(child.start());
        }
    }

    /// Drop children that invalidations emptied and nobody refilled.
    pub fn reap(&self) {
        let starts = std::mem::take(&mut *sync::lock(&self.0.reap));
        for s in starts {
            let victim = {
                let mut map = sync::write(&self.0.children);
                let Some(c) = map.get(&s) else { continue };
                let mut pages = sync::lock(&c.core.pages);
                if pages.mapped() != 0 {
                    continue;
                }
                // Under the child's lock: a fault holding a stale Arc to it
                // sees this and starts over with a fresh child.
                pages.detached = true;
                drop(pages);
                map.remove(&s)
            };
            drop(victim); // removes the notifier: waits, so no lock held here
        }
    }

    /// Run `f` with `[va, va+len)` (inside one child) faulted for `access`.
    pub fn with_map<R>(
        &self,
        va: u64,
        len: u64,
        access: Access,
        mode: Mode,
        f: impl FnOnce(&mut UmemGuard<'_>) -> Result<R, AccessError>,
    ) -> Result<R, AccessError> {
        if access.is_write() && !self.0.writable {
            return Err(AccessError::NotWritable);
        }
        let end = va.checked_add(len).ok_or(AccessError::OutOfBounds)?;
        if len > 0 && (va & !(CHILD_SIZE - 1)) != ((end - 1) & !(CHILD_SIZE - 1)) {
            return Err(AccessError::OutOfBounds);
        }
        self.reap();
        loop {
            let child = self.child(va)?;
            let r = match child.map(&self.0.mm, va, len, access, mode) {
                Err(AccessError::Detached) => continue,
                Err(e) => {
                    self.reap_if_empty(&child);
                    Err(e)
                }
                Ok(mut g) => f(&mut g),
            };
            return r;
        }
    }

    /// [`super::Umem::fault_in`] over any range (children created as needed).
    pub fn fault_in(&self, va: u64, len: u64, access: Access) -> Result<(), AccessError> {
        self.chunks(va, len, |at, n, _| {
            self.with_map(at, n, access, Mode::Fault, |_| Ok(()))
        })
    }

    /// Apply `f` to each child-sized chunk of `[va, va+len)` in order.
    fn chunks(
        &self,
        va: u64,
        len: u64,
        mut f: impl FnMut(u64, u64, usize) -> Result<(), AccessError>,
    ) -> Result<(), AccessError> {
        va.checked_add(len).ok_or(AccessError::OutOfBounds)?;
        let mut done = 0u64;
        while done < len {
            let at = va + done;
            let n = (CHILD_SIZE - (at & (CHILD_SIZE - 1))).min(len - done);
            f(at, n, done as usize)?;
            done += n;
        }
        Ok(())
    }

    pub fn write(&self, va: u64, data: &[u8]) -> Result<(), AccessError> {
        self.chunks(va, data.len() as u64, |at, n, off| {
            self.with_map(at, n, Access::Write, Mode::Fault, |g| {
                g.write(at, &data[off..off + n as usize])
            })
        })
    }

    /// Let `fill` write `[va, va+len)`, a child's piece at a time (see
    /// [`UmemGuard::fill_with`](super::UmemGuard::fill_with)).
    pub fn fill_with(
        &self,
        va: u64,
        len: u64,
        mut fill: impl FnMut(u64, usize) -> Result<(), AccessError>,
    ) -> Result<(), AccessError> {
        self.chunks(va, len, |at, n, _| {
            self.with_map(at, n, Access::Write, Mode::Fault, |g| {
                g.fill_with(at, n, &mut fill)
            })
        })
    }

    pub fn read(&self, va: u64, out: &mut [u8]) -> Result<(), AccessError> {
        let len = out.len() as u64;
        self.chunks(va, len, |at, n, off| {
            self.with_map(at, n, Access::Read, Mode::Fault, |g| {
                g.read(at, &mut out[off..off + n as usize])
            })
        })
    }

    pub fn compare_and_swap(&self, va: u64, expect: u64, new: u64) -> Result<u64, AccessError> {
        self.with_map(va, 8, Access::Write, Mode::Fault, |g| {
            g.compare_and_swap(va, expect, new)
        })
    }

    pub fn fetch_and_add(&self, va: u64, add: u64) -> Result<u64, AccessError> {
        self.with_map(va, 8, Access::Write, Mode::Fault, |g| {
            g.fetch_and_add(va, add)
        })
    }

    /// `ibv_advise_mr` over any range (children created as needed).
    pub fn prefetch(
        &self,
        va: u64,
        len: u64,
        advice: Advice,
        flush: bool,
    ) -> Result<(), AccessError> {
        if advice == Advice::PrefetchWrite && !self.0.writable {
            return Err(AccessError::NotWritable);
        }
        va.checked_add(len).ok_or(AccessError::OutOfBounds)?;
        self.0.counters.prefetches.fetch_add(1, Ordering::Relaxed);
        let me = ImplicitUmem(self.0.clone());
        let job = move || {
            me.chunks(va, len, |at, n, _| loop {
                let child = me.child(at)?;
                match prefetch_now(&child, &me.0.mm, at, n, advice) {
                    Err(AccessError::Detached) => continue,
                    Err(e) => {
                        me.reap_if_empty(&child);
                        return Err(e);
                    }
                    Ok(()) => return Ok(()),
                }
            })
        };
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
