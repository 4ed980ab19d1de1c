//! Interval notifiers: Linux's `mmu_interval_notifier` (mm/mmu_notifier.c) in
//! userspace, with its exact sequence semantics.
//!
//! One [`Notifiers`] per address space holds the global sequence, the interval
//! tree, the deferred list and the wait queue. Each subscriber (a umem) owns an
//! [`IntervalNotifier`] handle.
//!
//! **Sequences.** The global `seq` is even when idle and odd while an
//! invalidation that overlaps at least one interval runs ("fully excluded": the
//! tree must not change, inserts and removes are deferred to the end). Each
//! interval has its own seq; an invalidation sets it to the current odd global
//! value through [`Invalidation::set_seq`], which every callback must call under
//! its own lock (the "user lock"). A reader does:
//!
//! ```text
//! again:  seq = read_begin()                 // no user lock held: may sleep
//!         fault pages, speculatively
//!         lock(user)
//!         if read_retry(seq) { unlock; goto again }
//!         use the pages; unlock
//! ```
//!
//! The type system carries two of the rules: `set_seq` and `read_retry` demand a
//! held `MutexGuard` (proof that *a* user lock is held), and a callback can only
//! return [`SeqSet`], which only `set_seq` makes — so a callback that forgets it
//! does not compile (bug pattern 9). `read_begin` and `remove` assert, through
//! `lockdep`, that the caller holds no umem lock (they may wait for a callback
//! that needs it).

mod tree;

use crate::lockdep;
use crate::sync::{self, Arc, AtomicU64, Condvar, Mutex, MutexGuard, Ordering};
use tree::Tree;

/// Why an address range is being invalidated (the kernel's `mmu_notifier_event`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The range was unmapped (`munmap`, `mremap` shrink, `mmap(MAP_FIXED)` over).
    Unmap,
    /// Pages were discarded (`madvise(MADV_DONTNEED/FREE)`): the range stays mapped.
    Clear,
    /// The range moved (`mremap`); this is the old (or newly occupied) range.
    Remap,
    /// Protection changed (only through the explicit API: `mprotect` sends no event).
    Protection,
    /// The address space is being torn down: everything goes, faults fail afterwards.
    Release,
    /// A caller of the explicit invalidation API.
    Explicit,
}

/// A half-open address range `[start, end)` being invalidated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidateRange {
    pub start: u64,
    pub end: u64,
    pub event: Event,
    /// Whether callbacks may sleep (take a contended lock). A non-blockable
    /// invalidation may be refused by a callback; the whole invalidation then
    /// fails with [`Again`].
    pub blockable: bool,
}

/// A subscriber's reaction to invalidations of its interval.
pub trait Invalidate: Send + Sync {
    /// Stop using translations inside `inv.range()`: take the user lock
    /// ([`Invalidation::lock`]), call `inv.set_seq(&guard)`, forget the pages,
    /// return the token. May refuse only a non-blockable invalidation
    /// ([`Invalidation::lock`], [`Invalidation::try_refuse`]).
    fn invalidate(&self, inv: Invalidation<'_>) -> Result<SeqSet, Refused>;
}

/// Proof that a callback called [`Invalidation::set_seq`].
#[derive(Debug)]
pub struct SeqSet(());

/// Proof that a callback refused a non-blockable invalidation.
#[derive(Debug)]
pub struct Refused(());

/// A non-blockable invalidation was refused by a subscriber; nothing is left
/// accounted as active (the kernel's `-EAGAIN`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Again;

/// Registration errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertError {
    /// Length 0, or `start + len` overflows.
    BadRange,
}

/// One invalidation as a callback sees it.
pub struct Invalidation<'a> {
    interval: &'a Interval,
    range: &'a InvalidateRange,
    cur_seq: u64,
}

impl Invalidation<'_> {
    pub fn range(&self) -> &InvalidateRange {
        self.range
    }
    /// The part of the invalidated range that lies inside this interval.
    pub fn clamped(&self) -> (u64, u64) {
        (
            self.range.start.max(self.interval.start),
            self.range.end.min(self.interval.end),
        )
    }
    /// Record the invalidation for `read_retry`. Must be called under the same
    /// user lock the reader holds in `read_retry` (hence the guard argument).
    pub fn set_seq<T>(self, _user_lock: &MutexGuard<'_, T>) -> SeqSet {
        #[cfg(not(feature = "mutant-no-set-seq"))]
        self.interval.seq.store(self.cur_seq, Ordering::Release);
        #[cfg(feature = "mutant-no-set-seq")]
        let _ = self.cur_seq;
        SeqSet(())
    }
    /// Take the callback's user lock `m`: wait for it if this invalidation
    /// may block; otherwise try it once and refuse the invalidation if it is
    /// held (the kernel's non-blockable notifiers answer -EAGAIN likewise).
    pub fn lock<'m, T>(&self, m: &'m Mutex<T>) -> Result<MutexGuard<'m, T>, Refused> {
        if self.range.blockable {
            Ok(sync::lock(m))
        } else {
            sync::try_lock(m).ok_or(Refused(()))
        }
    }
    /// Refuse: only possible when the invalidation is not blockable; a
    /// blockable one is handed back and must be carried out.
    pub fn try_refuse(self) -> Result<Refused, Self> {
        if self.range.blockable {
            Err(self)
        } else {
            Ok(Refused(()))
        }
    }
}

/// A registered interval (the kernel's `mmu_interval_notifier` minus ownership).
pub struct Interval {
    start: u64,
    end: u64,
    /// This interval's invalidate sequence. Written by `set_seq` (under the user
    /// lock) and at insertion (under the notifiers lock); read locklessly by
    /// `read_begin` and `check_retry`, under the user lock by `read_retry`.
    seq: AtomicU64,
    ops: Arc<dyn Invalidate>,
}

impl Interval {
    pub fn start(&self) -> u64 {
        self.start
    }
    pub fn end(&self) -> u64 {
        self.end
    }
}

/// What waits to be applied to the tree when the current invalidation ends.
enum Deferred {
    Insert(Arc<Interval>),
    Remove(Arc<Interval>),
}

/// State under the notifiers lock (the kernel's `subscriptions->lock`).
struct Locked {
    tree: Tree,
    /// Invalidations between start and end (`active_invalidate_ranges`).
    active: usize,
    deferred: Vec<Deferred>,
    /// Set once by `release`; later inserts fail.
    released: bool,
    /// Threads asleep on `wq`: `notify_all` is a system call even with no
    /// sleeper, and invalidations are frequent while sleepers are rare.
    waiters: usize,
}

/// The per-address-space notifier state (`mmu_notifier_subscriptions`).
pub struct Notifiers {
    /// Global invalidate sequence: written under `locked`, read locklessly by
    /// the `read_begin` fast path. Starts at 2 (even, idle).
    seq: AtomicU64,
    locked: Mutex<Locked>,
    /// Woken when `seq` advances at the end of an invalidation.
    wq: Condvar,
}

impl Default for Notifiers {
    fn default() -> Self {
        Self::new()
    }
}

impl Notifiers {
    pub fn new() -> Self {
        Notifiers {
            seq: AtomicU64::new(2),
            locked: Mutex::new(Locked {
                tree: Tree::default(),
                active: 0,
                deferred: Vec::new(),
                released: false,
                waiters: 0,
            }),
            wq: Condvar::new(),
        }
    }

    /// The global sequence (for tests and diagnostics): odd while invalidating.
    pub fn seq(&self) -> u64 {
        self.seq.load(Ordering::Acquire)
    }

    /// Number of intervals in the tree (deferred inserts not yet counted).
    pub fn len(&self) -> usize {
        sync::lock(&self.locked).tree.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Subscribe `ops` to invalidations of `[start, start+len)`.
    ///
    /// Callers must hold an `MmGet` (the `mm` layer enforces it). If an
    /// invalidation is running the interval may be parked on the deferred list
    /// with a sequence that makes `read_begin` wait for that invalidation's
    /// end: callers must use the `read_begin` flow before trusting anything.
    pub fn insert(
        self: &Arc<Self>,
        start: u64,
        len: u64,
        ops: Arc<dyn Invalidate>,
    ) -> Result<IntervalNotifier, InsertError> {
        let end = start
            .checked_add(len)
            .filter(|_| len > 0)
            .ok_or(InsertError::BadRange)?;
        let mut l = sync::lock(&self.locked);
        assert!(
            !l.released,
            "insert after release: callers must hold an MmGet"
        );
        let seq = self.seq.load(Ordering::Relaxed);
        let iv = if l.active > 0 {
            if seq & 1 == 1 {
                // Fully excluded: the tree may not change; read_begin on this
                // interval blocks until the invalidation ends.
                let iv = Arc::new(Interval {
                    start,
                    end,
                    seq: AtomicU64::new(seq),
                    ops,
                });
                l.deferred.push(Deferred::Insert(iv.clone()));
                iv
            } else {
                // Partially excluded: treat the running invalidation as covering
                // the new interval, so its end advances seq and wakes readers.
                self.seq.store(seq | 1, Ordering::Release);
                let iv = Arc::new(Interval {
                    start,
                    end,
                    seq: AtomicU64::new(seq | 1),
                    ops,
                });
                l.tree.insert(iv.clone());
                iv
            }
        } else {
            debug_assert!(seq & 1 == 0);
            // Odd, and never equal to the current global seq.
            let iv = Arc::new(Interval {
                start,
                end,
                seq: AtomicU64::new(seq - 1),
                ops,
            });
            l.tree.insert(iv.clone());
            iv
        };
        drop(l);
        Ok(IntervalNotifier {
            notifiers: self.clone(),
            interval: Some(iv),
        })
    }

    /// Start of `read_begin`: returns the interval's seq, first sleeping until
    /// the end of an invalidation that is running on this interval. No loop:
    /// `read_retry` may already be true on return (bounded time for callers).
    fn read_begin(&self, iv: &Interval) -> u64 {
        // Fast path without the lock. Loading the interval's seq first (Acquire,
        // pairs with set_seq's Release) guarantees that if we see the value an
        // invalidation stored, we also see the global seq it raised. Any other
        // race is closed by read_retry under the user lock.
        let s = iv.seq.load(Ordering::Acquire);
        if s != self.seq.load(Ordering::Acquire) {
            return s;
        }
        lockdep::assert_may_wait_for_invalidation("read_begin");
        let mut l = sync::lock(&self.locked);
        let s = iv.seq.load(Ordering::Acquire);
        l.waiters += 1;
        while self.seq.load(Ordering::Acquire) == s {
            l = sync::wait(&self.wq, l);
        }
        l.waiters -= 1;
        s
    }

    /// Invalidate `range`: calls every overlapping interval's callback, then
    /// ends the invalidation. A refused non-blockable invalidation has already
    /// been ended (accounting undone) when `Again` is returned.
    pub fn invalidate(&self, range: InvalidateRange) -> Result<(), Again> {
        self.invalidate_start(range)?;
        self.invalidate_end();
        Ok(())
    }

    /// Start an invalidation; it stays active (and readers of the intervals it
    /// hit block in `read_begin`) until the returned token is dropped.
    pub fn begin_invalidate(
        &self,
        range: InvalidateRange,
    ) -> Result<ActiveInvalidation<'_>, Again> {
        self.invalidate_start(range)?;
        Ok(ActiveInvalidation { notifiers: self })
    }

    fn invalidate_start(&self, range: InvalidateRange) -> Result<(), Again> {
        let (hits, cur_seq) = {
            let mut l = sync::lock(&self.locked);
            l.active += 1;
            let mut hits = Vec::new();
            l.tree
                .for_each_overlap(range.start, range.end, |iv| hits.push(iv.clone()));
            let mut seq = self.seq.load(Ordering::Relaxed);
            if !hits.is_empty() && seq & 1 == 0 {
                seq |= 1;
                self.seq.store(seq, Ordering::Release);
            }
            (hits, seq)
        };
        // The tree cannot change while seq is odd, so iterating a snapshot
        // without the lock sees exactly the intervals the kernel would.
        for iv in &hits {
            let inv = Invalidation {
                interval: iv,
                range: &range,
                cur_seq,
            };
            if iv.ops.invalidate(inv).is_err() {
                // try_refuse only yields Refused when !blockable.
                self.invalidate_end();
                return Err(Again);
            }
        }
        Ok(())
    }

    /// `mn_itree_inv_end`: only the last active invalidation acts, and only if
    /// it made seq odd; it applies the deferred list and wakes every waiter.
    fn invalidate_end(&self) {
        let mut l = sync::lock(&self.locked);
        l.active -= 1;
        let seq = self.seq.load(Ordering::Relaxed);
        if l.active > 0 || seq & 1 == 0 {
            return;
        }
        self.seq.store(seq + 1, Ordering::Release);
        let deferred = std::mem::take(&mut l.deferred);
        for d in deferred {
            match d {
                Deferred::Insert(iv) => l.tree.insert(iv),
                Deferred::Remove(iv) => {
                    l.tree.remove(&iv);
                }
            }
        }
        let wake = l.waiters > 0;
        drop(l);
        if wake {
            self.wq.notify_all();
        }
    }

    /// Address-space teardown (`mn_itree_release`): invalidate everything,
    /// blockable, with [`Event::Release`]; later inserts are refused.
    pub fn release(&self) {
        sync::lock(&self.locked).released = true;
        let all = InvalidateRange {
            start: 0,
            end: u64::MAX,
            event: Event::Release,
            blockable: true,
        };
        let _ = self.invalidate(all);
    }

    /// Run `f` under the notifiers lock if no interval overlaps `[start, end)`
    /// and no invalidation runs (so no insert is parked on the deferred list);
    /// an insert meanwhile waits for this lock. For undoing, after a
    /// subscriber left, what only it needed. Returns whether `f` ran.
    pub(crate) fn if_unsubscribed(&self, start: u64, end: u64, f: impl FnOnce()) -> bool {
        let l = sync::lock(&self.locked);
        if l.active > 0 {
            return false;
        }
        let mut any = false;
        l.tree.for_each_overlap(start, end, |_| any = true);
        if any {
            return false;
        }
        f();
        true
    }

    /// `mmu_interval_notifier_remove`: afterwards no callback runs or will run.
    fn remove(&self, iv: &Arc<Interval>) {
        lockdep::assert_may_wait_for_invalidation("interval notifier remove");
        let mut l = sync::lock(&self.locked);
        let seq = self.seq.load(Ordering::Relaxed);
        if seq & 1 == 1 {
            if let Some(pos) = l
                .deferred
                .iter()
                .position(|d| matches!(d, Deferred::Insert(x) if Arc::ptr_eq(x, iv)))
            {
                // Never reached the tree: no callback can have seen it.
                l.deferred.swap_remove(pos);
                return;
            }
            // In the tree and maybe being called right now: have inv_end take it
            // out, and wait for that.
            l.deferred.push(Deferred::Remove(iv.clone()));
            l.waiters += 1;
            while self.seq.load(Ordering::Acquire) == seq {
                l = sync::wait(&self.wq, l);
            }
            l.waiters -= 1;
        } else {
            let was_there = l.tree.remove(iv);
            debug_assert!(was_there, "removing an interval that is not in the tree");
        }
    }

    #[cfg(all(test, not(loom)))]
    fn contains(&self, iv: &Interval) -> bool {
        sync::lock(&self.locked).tree.contains(iv)
    }
}

/// An invalidation between its start and end; ends on drop.
pub struct ActiveInvalidation<'a> {
    notifiers: &'a Notifiers,
}

impl Drop for ActiveInvalidation<'_> {
    fn drop(&mut self) {
        self.notifiers.invalidate_end();
    }
}

/// An owned subscription. Dropping it (or [`IntervalNotifier::remove`]) removes
/// the interval and waits until no callback for it is running: after that the
/// subscriber may be freed (bug pattern 2: unregister *is* a fence here).
pub struct IntervalNotifier {
    notifiers: Arc<Notifiers>,
    interval: Option<Arc<Interval>>,
}

impl IntervalNotifier {
    fn iv(&self) -> &Arc<Interval> {
        self.interval.as_ref().expect("interval present until drop")
    }

    pub fn start(&self) -> u64 {
        self.iv().start
    }

    pub fn end(&self) -> u64 {
        self.iv().end
    }

    /// `mmu_interval_read_begin`. May sleep until a running invalidation of
    /// this interval ends; the caller must hold no umem lock.
    pub fn read_begin(&self) -> u64 {
        self.notifiers.read_begin(self.iv())
    }

    /// `mmu_interval_read_retry`: true if an invalidation touched the interval
    /// since `read_begin` returned `seq`. Reliable only under the user lock,
    /// which the guard argument stands for.
    pub fn read_retry<T>(&self, _user_lock: &MutexGuard<'_, T>, seq: u64) -> bool {
        self.iv().seq.load(Ordering::Relaxed) != seq
    }

    /// `mmu_interval_check_retry`: the same test without the lock; `true` is
    /// reliable, `false` only a hint (use it to abandon a long fault early).
    pub fn check_retry(&self, seq: u64) -> bool {
        self.iv().seq.load(Ordering::Acquire) != seq
    }

    /// Remove now (same as dropping).
    pub fn remove(self) {}
}

impl Drop for IntervalNotifier {
    fn drop(&mut self) {
        if let Some(iv) = self.interval.take() {
            self.notifiers.remove(&iv);
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests;
