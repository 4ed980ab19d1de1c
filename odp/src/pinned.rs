//! Pinned (non-ODP) regions, and [`Memory`]: what an MR's memory is, so the
//! device has one access path for every kind and no "null umem" to mistake
//! (kernel bug pattern 8 cannot be written).
//!
//! Pinned means what `ibv_reg_mr` without ON_DEMAND means: faulted in and
//! locked at registration, and the device keeps using *those pages*. A real
//! device keeps DMAing to the pinned pages after the application unmaps them;
//! in userspace we cannot keep a private mapping's pages alive, so we emulate
//! what is observable: once part of the range is unmapped, remapped, moved or
//! discarded, those pages are *orphaned* for this region — the device never
//! touches that virtual range through it again (it may hold somebody else's
//! memory now). Writes there are discarded, reads give zeros (hardware would
//! return the old contents, which we no longer have), atomics return 0 and
//! store nothing.
//!
//! Race-free with the ODP machinery: an interval notifier marks orphaned
//! pages (under `Orphans::pages`, with `set_seq`), the range is covered by the
//! userfaultfd monitor from registration, and every access holds the barrier
//! shared while it checks the marks and copies. So an access either ends
//! before the `munmap` (or `mremap`, `madvise`) returns, or sees the mark.
//! Without userfaultfd no event arrives: pinned memory follows the virtual
//! address as before (guarded copies: no crash, unmapped memory is an error).
//!
//! Registration is charged to the process as the kernel charges
//! `mm->pinned_vm` in `ib_umem_get`: the pages of every live pinned region
//! count against `RLIMIT_MEMLOCK` (read at each registration), and one that
//! would pass it fails ([`AccessError::MemlockLimit`], ENOMEM at the verbs
//! layer) unless the process holds `CAP_IPC_LOCK`. ODP regions pin nothing
//! and are not charged. Independently, the pages are `mlock`ed where the
//! limit allows; that `mlock`'s own accounting does not decide anything.

use crate::guarded;
use crate::lockdep;
use crate::mm::{MmGet, MmGrab};
use crate::notifier::{Event, IntervalNotifier, Invalidate, Invalidation, Refused, SeqSet};
use crate::sync::{self, Arc, AtomicU64, Mutex, Ordering};
use crate::sys::{mlock, populate};
use crate::umem::{within, AccessError, CounterSnapshot, ImplicitUmem, Umem, PAGE_SIZE};

/// Pages of the live pinned regions of this process (`mm->pinned_vm`).
/// (std's atomic: a process-wide total, outside any loom model.)
static PINNED_PAGES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Pages charged to [`PINNED_PAGES`]; uncharged when dropped.
struct Charge(u64);

impl Charge {
    /// Charge `pages`, or refuse if that passes `RLIMIT_MEMLOCK` and the
    /// process lacks `CAP_IPC_LOCK` (checked only then, as the kernel does).
    fn new(pages: u64) -> Result<Charge, AccessError> {
        let now = PINNED_PAGES.fetch_add(pages, Ordering::Relaxed) + pages;
        let charge = Charge(pages);
        match mlock::memlock_limit() {
            Some(limit) if now > limit / PAGE_SIZE && !mlock::has_ipc_lock() => {
                Err(AccessError::MemlockLimit)
            }
            _ => Ok(charge),
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        PINNED_PAGES.fetch_sub(self.0, Ordering::Relaxed);
    }
}

/// Pages the process's live pinned regions hold (what `RLIMIT_MEMLOCK` is
/// checked against).
pub fn pinned_pages() -> u64 {
    PINNED_PAGES.load(Ordering::Relaxed)
}

/// A registered, populated and (if the limit allows) locked range.
pub struct Pinned {
    addr: u64,
    len: u64,
    writable: bool,
    /// The page-aligned cover `[start, end)`.
    span: (u64, u64),
    /// Page-aligned locked span, if `mlock` succeeded.
    locked: Option<(usize, usize)>,
    /// Its pages in the process's pinned total.
    _charge: Charge,
    mm: MmGrab,
    orphans: Arc<Orphans>,
    /// Dropped (removed: a fence against running callbacks) before the
    /// `Drop` impl reads the marks to unlock.
    notifier: Option<IntervalNotifier>,
}

/// The pages of a pinned region the application took away.
struct Orphans {
    /// The first page of the region.
    start: u64,
    /// Pages marked so far; nonzero means "look at `pages`". Stored under
    /// `pages`; read (Acquire) under the barrier by every access: the hot
    /// path's one check.
    marked: AtomicU64,
    /// One bit a page, allocated at registration so that the callback, which
    /// runs on the monitor under the exclusive barrier, never allocates (a
    /// free could `munmap` covered memory and wait for the monitor itself).
    pages: Mutex<Vec<u64>>,
    /// Accesses that met an orphaned page.
    accesses: AtomicU64,
}

impl Orphans {
    fn page(&self, va: u64) -> usize {
        ((va - self.start) / PAGE_SIZE) as usize
    }
}

fn bit(bits: &[u64], p: usize) -> bool {
    bits[p / 64] & (1 << (p % 64)) != 0
}

impl Invalidate for Orphans {
    fn invalidate(&self, inv: Invalidation<'_>) -> Result<SeqSet, Refused> {
        let bits = inv.lock(&self.pages)?;
        let (s, e) = inv.clamped();
        // The pages themselves stay ours on a protection change (hardware keeps
        // its pinned pages), and release only stops the monitor: the
        // application still owns the memory. Everything else takes the pages.
        let orphaning = !matches!(inv.range().event, Event::Protection | Event::Release);
        let mut bits = bits;
        if orphaning && s < e {
            let (first, last) = (self.page(s), self.page(e - 1));
            let mut newly = 0;
            for p in first..=last {
                if !bit(&bits, p) {
                    bits[p / 64] |= 1 << (p % 64);
                    newly += 1;
                }
            }
            let n = self.marked.load(Ordering::Relaxed) + newly;
            self.marked.store(n, Ordering::Release);
        }
        Ok(inv.set_seq(&bits))
    }
}

impl Pinned {
    /// Subscribe, cover, populate (for write if `writable`) and lock
    /// `[addr, addr+len)`, charged to the process's pinned pages
    /// ([`AccessError::MemlockLimit`] past `RLIMIT_MEMLOCK`, see the module
    /// docs). `mlock` itself failing is not an error: the pages are
    /// populated, which is what the device needs; `is_locked` tells.
    pub fn new(mm: &MmGet, addr: u64, len: u64, writable: bool) -> Result<Pinned, AccessError> {
        let end = addr
            .checked_add(len)
            .filter(|_| len > 0)
            .ok_or(AccessError::OutOfBounds)?;
        let start = addr & !(PAGE_SIZE - 1);
        let end = end
            .checked_next_multiple_of(PAGE_SIZE)
            .ok_or(AccessError::OutOfBounds)?;
        let npages = ((end - start) / PAGE_SIZE) as usize;
        let charge = Charge::new(npages as u64)?;
        let orphans = Arc::new(Orphans {
            start,
            marked: AtomicU64::new(0),
            pages: Mutex::new(vec![0; npages.div_ceil(64)]),
            accesses: AtomicU64::new(0),
        });
        // Subscribed, then covered, then populated: an unmap once the range is
        // covered is marked; one before leaves a hole that populating reports.
        // What cannot be covered (no userfaultfd, some file mappings) follows
        // the virtual address, as ODP memory then does.
        let notifier = mm
            .notifiers()
            .insert(start, end - start, orphans.clone())
            .map_err(|_| AccessError::OutOfBounds)?;
        let _ = mm.cover(mm, start, end);
        let (s, l) = (start as usize, (end - start) as usize);
        if let Err(e) = populate::populate(s, l, writable) {
            drop(notifier);
            mm.uncover(start, end);
            return Err(e.into());
        }
        let locked = mlock::mlock(s, l).ok().map(|_| (s, l));
        Ok(Pinned {
            addr,
            len,
            writable,
            span: (start, end),
            locked,
            _charge: charge,
            mm: mm.grab(),
            orphans,
            notifier: Some(notifier),
        })
    }

    pub fn is_locked(&self) -> bool {
        self.locked.is_some()
    }

    /// `orphan_accesses` is the only counter a pinned region keeps.
    pub fn counters(&self) -> CounterSnapshot {
        CounterSnapshot {
            orphan_accesses: self.orphans.accesses.load(Ordering::Relaxed),
            ..CounterSnapshot::default()
        }
    }

    /// Pages the application took away while registered.
    pub fn orphaned_pages(&self) -> u64 {
        self.orphans.marked.load(Ordering::Relaxed)
    }

    fn check(&self, va: u64, len: u64, write: bool) -> Result<(), AccessError> {
        if !within(va, len, self.addr, self.addr + self.len) {
            return Err(AccessError::OutOfBounds);
        }
        if write && !self.writable {
            return Err(AccessError::NotWritable);
        }
        Ok(())
    }

    /// Run one access (`[va, va+len)`, checked) with the barrier held:
    /// `f(at, n, orphaned)` for each run of pages all orphaned or all not;
    /// an access that met an orphaned page is counted (and the first logged).
    fn access(
        &self,
        va: u64,
        len: u64,
        mut f: impl FnMut(u64, usize, bool) -> Result<(), AccessError>,
    ) -> Result<(), AccessError> {
        // A thread holding a guard holds the barrier: taking it again could
        // wait behind the monitor, which waits for that guard.
        lockdep::assert_may_wait_for_invalidation("pinned access");
        let met = {
            let _barrier = self.mm.barrier_shared();
            let o = &*self.orphans;
            // The hot path: nothing was ever orphaned.
            if o.marked.load(Ordering::Acquire) == 0 {
                return f(va, len as usize, false);
            }
            let bits = sync::lock(&o.pages);
            let (end, mut at, mut met) = (va + len, va, false);
            while at < end {
                let orphan = bit(&bits, o.page(at));
                let mut next = (at & !(PAGE_SIZE - 1)) + PAGE_SIZE;
                while next < end && bit(&bits, o.page(next)) == orphan {
                    next += PAGE_SIZE;
                }
                let next = next.min(end);
                met |= orphan;
                f(at, (next - at) as usize, orphan)?;
                at = next;
            }
            met
        };
        // Outside the barrier: logging may allocate, and a free may unmap.
        if met && self.orphans.accesses.fetch_add(1, Ordering::Relaxed) == 0 && !cfg!(loom) {
            eprintln!(
                "odp: pinned region {:#x}+{:#x} accessed after the application unmapped, \
                 moved or discarded part of it: writes there are dropped, reads give zeros",
                self.addr, self.len
            );
        }
        Ok(())
    }

    pub fn write(&self, va: u64, data: &[u8]) -> Result<(), AccessError> {
        self.check(va, data.len() as u64, true)?;
        self.access(va, data.len() as u64, |at, n, orphan| {
            if orphan {
                return Ok(());
            }
            let part = &data[(at - va) as usize..][..n];
            // SAFETY: registered application memory (checked), not orphaned
            // (checked under the barrier, held), not Rust-owned; faults caught.
            unsafe { guarded::copy_out(at as *mut u8, part) }.map_err(AccessError::from)
        })
    }

    /// Let `fill` write `[va, va+len)` itself, a run of pages at a time
    /// (see [`crate::umem::UmemGuard::fill_with`]); orphaned pages are
    /// skipped, as a write's.
    pub fn fill_with(
        &self,
        va: u64,
        len: u64,
        mut fill: impl FnMut(u64, usize) -> Result<(), AccessError>,
    ) -> Result<(), AccessError> {
        self.check(va, len, true)?;
        self.access(va, len, |at, n, orphan| {
            if orphan {
                return Ok(());
            }
            fill(at, n)
        })
    }

    pub fn read(&self, va: u64, out: &mut [u8]) -> Result<(), AccessError> {
        self.check(va, out.len() as u64, false)?;
        self.access(va, out.len() as u64, |at, n, orphan| {
            let part = &mut out[(at - va) as usize..][..n];
            if orphan {
                part.fill(0);
                return Ok(());
            }
            // SAFETY: as in `write`; `out` is a distinct Rust buffer.
            unsafe { guarded::copy_in(part, at as *const u8) }.map_err(AccessError::from)
        })
    }

    /// An 8-byte atomic at `va` through `op`; 0 on an orphaned page.
    fn atomic(
        &self,
        va: u64,
        op: impl Fn(*mut u64) -> Result<u64, AccessError>,
    ) -> Result<u64, AccessError> {
        self.check(va, 8, true)?;
        // Checked here too: an orphaned page skips `guarded`, which checks.
        if va % 8 != 0 {
            return Err(AccessError::Misaligned);
        }
        let mut old = 0;
        self.access(va, 8, |at, _, orphan| {
            if !orphan {
                old = op(at as *mut u64)?;
            }
            Ok(())
        })?;
        Ok(old)
    }

    pub fn compare_and_swap(&self, va: u64, expect: u64, new: u64) -> Result<u64, AccessError> {
        self.atomic(va, |p| {
            // SAFETY: as in `write` (`atomic` runs `op` only on such memory).
            unsafe { guarded::compare_and_swap(p, expect, new) }.map_err(AccessError::from)
        })
    }

    pub fn fetch_and_add(&self, va: u64, add: u64) -> Result<u64, AccessError> {
        self.atomic(va, |p| {
            // SAFETY: as in `write` (`atomic` runs `op` only on such memory).
            unsafe { guarded::fetch_and_add(p, add) }.map_err(AccessError::from)
        })
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        // Removal waits for a running callback: the marks are final after it.
        drop(self.notifier.take());
        self.mm.uncover(self.span.0, self.span.1);
        let Some((s, l)) = self.locked else {
            return;
        };
        // Unlock only what is still ours: an orphaned page's address may hold
        // other memory now, locked by its owner.
        let o = &*self.orphans;
        let bits = sync::lock(&o.pages);
        let n = l / PAGE_SIZE as usize;
        let mut p = 0;
        while p < n {
            let run = (p..n).take_while(|&q| !bit(&bits, q)).count();
            if run > 0 {
                mlock::munlock(s + p * PAGE_SIZE as usize, run * PAGE_SIZE as usize);
            }
            p += run + 1;
        }
    }
}

/// The memory behind an MR: one enum, one set of access methods.
pub enum Memory {
    Pinned(Pinned),
    Odp(Umem),
    Implicit(ImplicitUmem),
}

macro_rules! each {
    ($self:ident, $m:ident => $e:expr) => {
        match $self {
            Memory::Pinned($m) => $e,
            Memory::Odp($m) => $e,
            Memory::Implicit($m) => $e,
        }
    };
}

impl Memory {
    /// Fault `[va, va+len)` in ahead of a message's accesses (ODP; pinned
    /// memory is always present). See [`Umem::fault_in`].
    pub fn fault_in(&self, va: u64, len: u64, write: bool) -> Result<(), AccessError> {
        let access = access_of(write);
        match self {
            Memory::Pinned(_) => Ok(()),
            Memory::Odp(u) => u.fault_in(va, len, access),
            Memory::Implicit(u) => u.fault_in(va, len, access),
        }
    }

    pub fn write(&self, va: u64, data: &[u8]) -> Result<(), AccessError> {
        each!(self, m => m.write(va, data))
    }
    pub fn read(&self, va: u64, out: &mut [u8]) -> Result<(), AccessError> {
        each!(self, m => m.read(va, out))
    }

    /// Let `fill(address, length)` write `[va, va+len)` itself, in one or
    /// more pieces (see [`crate::umem::UmemGuard::fill_with`]).
    pub fn fill_with(
        &self,
        va: u64,
        len: u64,
        mut fill: impl FnMut(u64, usize) -> Result<(), AccessError>,
    ) -> Result<(), AccessError> {
        match self {
            Memory::Pinned(p) => p.fill_with(va, len, fill),
            Memory::Odp(u) => u.fill_with(va, len, &mut fill),
            Memory::Implicit(u) => u.fill_with(va, len, fill),
        }
    }

    /// Open `[va, va+len)` for several accesses (see [`Window`]); faults it
    /// in for ODP.
    pub fn window(&self, va: u64, len: u64, write: bool) -> Result<Window<'_>, AccessError> {
        let access = access_of(write);
        let kind = match self {
            Memory::Pinned(p) => {
                p.check(va, len, write)?;
                WindowKind::Pinned(p)
            }
            Memory::Odp(u) => WindowKind::Odp(u.map(va, len, access, crate::umem::Mode::Fault)?),
            Memory::Implicit(u) => {
                // Fault the range in now, child by child, so that the
                // accesses find it present (one fault, not one per access).
                u.fault_in(va, len, access)?;
                WindowKind::Implicit(u)
            }
        };
        Ok(Window {
            kind,
            start: va,
            end: va + len,
            write,
        })
    }

    pub fn compare_and_swap(&self, va: u64, expect: u64, new: u64) -> Result<u64, AccessError> {
        each!(self, m => m.compare_and_swap(va, expect, new))
    }
    pub fn fetch_and_add(&self, va: u64, add: u64) -> Result<u64, AccessError> {
        each!(self, m => m.fetch_and_add(va, add))
    }

    /// The region's counters (a pinned region keeps only `orphan_accesses`).
    pub fn counters(&self) -> CounterSnapshot {
        each!(self, m => m.counters())
    }
}

fn access_of(write: bool) -> crate::umem::Access {
    if write {
        crate::umem::Access::Write
    } else {
        crate::umem::Access::Read
    }
}

/// Several accesses to one range of a [`Memory`] under one mapping: for an
/// explicit ODP umem, one [`UmemGuard`] — one fault check, one lock — for
/// all the packets of a message instead of one per packet. The guard's rules
/// hold for the window's life: keep it short, open no other mapping (no
/// second window, no `read`/`write` of any `Memory`), and call nothing that
/// may unmap covered memory (allocation included: size buffers first).
pub struct Window<'a> {
    kind: WindowKind<'a>,
    start: u64,
    end: u64,
    /// Opened for writing (what was faulted and checked).
    write: bool,
}

enum WindowKind<'a> {
    Pinned(&'a Pinned),
    Odp(crate::umem::UmemGuard<'a>),
    /// Each access maps on its own: a window may span children, and holding
    /// one child's guard while mapping the next would nest two.
    Implicit(&'a ImplicitUmem),
}

impl Window<'_> {
    fn check(&self, va: u64, len: usize) -> Result<(), AccessError> {
        if within(va, len as u64, self.start, self.end) {
            Ok(())
        } else {
            Err(AccessError::OutOfBounds)
        }
    }

    /// Copy from `va` (inside the window) into `out`.
    pub fn read(&mut self, va: u64, out: &mut [u8]) -> Result<(), AccessError> {
        self.check(va, out.len())?;
        match &mut self.kind {
            WindowKind::Pinned(p) => p.read(va, out),
            WindowKind::Odp(g) => g.read(va, out),
            WindowKind::Implicit(u) => u.read(va, out),
        }
    }

    /// Copy `data` to `va` (inside the window; opened for writing).
    pub fn write(&mut self, va: u64, data: &[u8]) -> Result<(), AccessError> {
        self.check(va, data.len())?;
        if !self.write {
            return Err(AccessError::NotWritable);
        }
        match &mut self.kind {
            WindowKind::Pinned(p) => p.write(va, data),
            WindowKind::Odp(g) => g.write(va, data),
            WindowKind::Implicit(u) => u.write(va, data),
        }
    }
}
