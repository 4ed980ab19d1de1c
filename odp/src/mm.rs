//! The address space as the device sees it (the kernel's `mm_struct` plus its
//! `mmu_notifier_subscriptions`), and its two lifetimes as two types.
//!
//! * [`MmGrab`] (`mmgrab`) keeps the *structure* alive: the notifier tree, the
//!   barrier, the counters. Umems and the monitor thread hold one. It cannot
//!   fault, register coverage or insert notifiers.
//! * [`MmGet`] (`mmget_not_zero`) proves the address space is *usable*: while
//!   one exists, release has not run. Faulting, coverage and notifier insertion
//!   take `&MmGet`, so code that faults without one does not compile.
//!   [`MmGrab::get`] fails once the last `MmGet` is gone: "if a range is valid,
//!   the mm is valid".
//!
//! ```
//! # let m = vec![0u8; 8192];
//! let mm = odp::Mm::new(odp::MmConfig::default());
//! let umem = odp::Umem::new(&mm, m.as_ptr() as u64, 8192, true); // MmGet: fine
//! # drop(umem);
//! ```
//! ```compile_fail
//! # let m = vec![0u8; 8192];
//! let mm = odp::Mm::new(odp::MmConfig::default());
//! let grab = mm.grab();
//! let umem = odp::Umem::new(&grab, m.as_ptr() as u64, 8192, true); // MmGrab: no
//! ```
//!
//! When the last `MmGet` drops, [`Mm`] is released: every interval is
//! invalidated with `Event::Release`, the monitor stops and the userfaultfd is
//! closed (which also frees any thread blocked in `munmap` on it). If that
//! drop happens on a thread holding a umem lock — the deadlock the kernel hit
//! with `mmput` inside `ib_umem_odp_map_dma_and_lock` (bug pattern 3) — the
//! release runs on another thread instead (`mmput_async`).

use crate::lockdep;
use crate::monitor::Monitor;
use crate::notifier::{Again, Event, InvalidateRange, Notifiers};
use crate::sync::{self, Arc, AtomicU64, AtomicUsize, Mutex, Ordering, RwLock, RwLockReadGuard};
use crate::sys::uffd::{OpenMode, RegisterError, Userfaultfd};
use std::fmt;

/// How this address space learns about `munmap`/`madvise`/`mremap`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvalidationSource {
    /// A userfaultfd monitor (write-protect, async) feeds the notifiers.
    Userfaultfd(OpenMode),
    /// No userfaultfd could be had: the device relies on guarded copies alone.
    /// Accesses never crash and unmapped memory still gives access errors, but
    /// an access racing an `munmap` that returns may still land (guarantee 2 is
    /// not kept). The reason says why.
    Fallback(String),
}

impl fmt::Display for InvalidationSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InvalidationSource::Userfaultfd(m) => write!(f, "userfaultfd ({m:?})"),
            InvalidationSource::Fallback(why) => write!(f, "fallback: guarded copies only ({why})"),
        }
    }
}

/// Options for [`Mm::new`].
#[derive(Debug, Clone)]
pub struct MmConfig {
    /// Try to open a userfaultfd (false forces the fallback mode).
    pub userfaultfd: bool,
}

impl Default for MmConfig {
    /// userfaultfd on, unless the environment says `ODP_USERFAULTFD=0`.
    fn default() -> Self {
        MmConfig {
            userfaultfd: std::env::var("ODP_USERFAULTFD")
                .map(|v| v != "0")
                .unwrap_or(true),
        }
    }
}

/// Address-space–wide counters.
#[derive(Debug, Default)]
pub struct MmStats {
    pub unmap_events: AtomicU64,
    pub remove_events: AtomicU64,
    pub remap_events: AtomicU64,
    /// Faults on memory the monitor could not cover (e.g. a regular file
    /// mapping, or a range another userfaultfd owns).
    pub uncovered_faults: AtomicU64,
}

/// The address space. Reach it through [`MmGet`] or [`MmGrab`].
pub struct Mm {
    /// `mm_users`: live `MmGet`s. Release runs when it drops to zero; it never
    /// rises from zero again (`get_not_zero`).
    users: AtomicUsize,
    notifiers: Arc<Notifiers>,
    /// Device accesses hold it shared for their duration (inside a
    /// `UmemGuard`); the monitor takes it exclusively *before* reading an event,
    /// so the `munmap` that waits for that read cannot return while an access
    /// that started before it is still running (guarantee 2).
    barrier: RwLock<()>,
    source: InvalidationSource,
    /// The descriptor; taken (closed) at release.
    uffd: RwLock<Option<Arc<Userfaultfd>>>,
    monitor: Mutex<Option<Monitor>>,
    /// Set under this lock at the end of release.
    released: Mutex<bool>,
    released_cv: crate::sync::Condvar,
    stats: MmStats,
}

impl Mm {
    /// A new address-space mirror for this process. Prefer [`Mm::current`]:
    /// only one userfaultfd may cover a given range, so two `Mm`s that
    /// register the same memory leave the second one uncovered there.
    ///
    /// Returns the [`MmGet`] reference, not a bare `Mm`: an `Mm` only ever
    /// lives behind its two reference kinds (see the module docs).
    #[allow(clippy::new_ret_no_self)]
    pub fn new(config: MmConfig) -> MmGet {
        let (uffd, source) = if config.userfaultfd {
            match Userfaultfd::open() {
                Ok(fd) => {
                    let mode = fd.mode();
                    (Some(Arc::new(fd)), InvalidationSource::Userfaultfd(mode))
                }
                Err(e) => (
                    None,
                    InvalidationSource::Fallback(format!("userfaultfd unavailable: {e}")),
                ),
            }
        } else {
            (
                None,
                InvalidationSource::Fallback("userfaultfd disabled by configuration".into()),
            )
        };
        let mm = Mm::build(source, uffd.clone());
        let mm = match uffd {
            None => mm,
            Some(fd) => match Monitor::start(MmGrab(mm.clone()), fd) {
                Ok(m) => {
                    *sync::lock(&mm.monitor) = Some(m);
                    mm
                }
                // Without a reader a registered munmap would block forever:
                // drop this one (closing the descriptor) and fall back.
                Err(e) => Mm::build(
                    InvalidationSource::Fallback(format!("monitor thread failed to start: {e}")),
                    None,
                ),
            },
        };
        if let InvalidationSource::Fallback(why) = &mm.source {
            log_fallback(why);
        }
        MmGet(mm)
    }

    fn build(source: InvalidationSource, uffd: Option<Arc<Userfaultfd>>) -> Arc<Mm> {
        Arc::new(Mm {
            users: AtomicUsize::new(1),
            notifiers: Arc::new(Notifiers::new()),
            barrier: RwLock::new(()),
            source,
            uffd: RwLock::new(uffd),
            monitor: Mutex::new(None),
            released: Mutex::new(false),
            released_cv: crate::sync::Condvar::new(),
            stats: MmStats::default(),
        })
    }

    /// The process-wide address space, created on first use (and again after
    /// a previous one was released, or in a forked child: the inherited
    /// userfaultfd still watches the parent's address space, and its monitor
    /// thread did not survive the fork, so the child's memory needs one of
    /// its own; the inherited `Mm` is left to whoever holds it, never
    /// released here, as releasing would join a thread the child lacks).
    pub fn current() -> MmGet {
        static CURRENT: std::sync::Mutex<Option<(u32, MmGrab)>> = std::sync::Mutex::new(None);
        let mut cur = CURRENT.lock().unwrap_or_else(|e| e.into_inner());
        let pid = std::process::id();
        match cur.take() {
            Some((p, grab)) if p == pid => {
                if let Some(get) = grab.get() {
                    *cur = Some((p, grab));
                    return get;
                }
            }
            Some((_, inherited)) => std::mem::forget(inherited),
            None => {}
        }
        let get = Mm::new(MmConfig::default());
        *cur = Some((pid, get.grab()));
        get
    }

    pub fn source(&self) -> &InvalidationSource {
        &self.source
    }

    pub fn notifiers(&self) -> &Arc<Notifiers> {
        &self.notifiers
    }

    pub fn stats(&self) -> &MmStats {
        &self.stats
    }

    /// Whether release has completed (faults fail from then on).
    pub fn is_released(&self) -> bool {
        *sync::lock(&self.released)
    }

    /// Wait until release has completed (e.g. after dropping the last `MmGet`
    /// on a thread that held a umem lock, where it runs asynchronously).
    pub fn wait_released(&self) {
        let mut r = sync::lock(&self.released);
        while !*r {
            r = sync::wait(&self.released_cv, r);
        }
    }

    /// The explicit invalidation API: for tests and for callers who know
    /// better than the monitor (e.g. before they remap memory themselves).
    pub fn invalidate(
        &self,
        start: u64,
        end: u64,
        event: Event,
        blockable: bool,
    ) -> Result<(), Again> {
        self.notifiers.invalidate(InvalidateRange {
            start,
            end,
            event,
            blockable,
        })
    }

    /// Wait until every event the monitor has read is applied. `munmap`
    /// returns once its event is *read*; the invalidation completes under the
    /// barrier right after, before any device access can start again — so
    /// accesses never see stale state, but a reader of counters might.
    pub fn sync_invalidations(&self) {
        drop(self.barrier_shared());
    }

    /// Shared side of the invalidation barrier (held by every device access).
    pub(crate) fn barrier_shared(&self) -> RwLockReadGuard<'_, ()> {
        sync::read(&self.barrier)
    }

    /// Exclusive side (the monitor, around reading events).
    pub(crate) fn barrier_exclusive(&self) -> crate::sync::RwLockWriteGuard<'_, ()> {
        sync::write(&self.barrier)
    }

    /// Make the monitor cover the mapped parts of `[start, end)`: register
    /// them with the userfaultfd (idempotent; holes are skipped). Must run
    /// after `read_begin` and before populating, so an unmap after this point
    /// is seen and forces a retry.
    ///
    /// Registration sets a flag on the application's mappings (VMAs); callers
    /// pass whole regions so a buffer is not split into many mappings (an
    /// application `mremap` cannot move a range spanning several).
    pub(crate) fn cover(&self, _mm: &MmGet, start: u64, end: u64) -> Coverage {
        let guard = sync::read(&self.uffd);
        let Some(fd) = guard.as_ref() else {
            return Coverage::Uncovered;
        };
        match fd.register_wp(start as usize, (end - start) as usize) {
            Ok(()) => Coverage::Covered,
            Err(RegisterError::Hole) => Coverage::Hole,
            Err(_) => {
                self.stats.uncovered_faults.fetch_add(1, Ordering::Relaxed);
                Coverage::Uncovered
            }
        }
    }

    /// Undo `cover` of `[start, end)` if nothing subscribed there needs it
    /// any more (a pinned region leaving: the application's heap should not
    /// keep every later `munmap` waiting for the monitor). Skipped while
    /// another interval overlaps or an invalidation runs; a subscriber
    /// inserted afterwards covers for itself, after its insert.
    pub(crate) fn uncover(&self, start: u64, end: u64) {
        let guard = sync::read(&self.uffd);
        let Some(fd) = guard.as_ref() else {
            return;
        };
        self.notifiers.if_unsubscribed(start, end, || {
            let _ = fd.unregister(start as usize, (end - start) as usize);
        });
    }

    /// Release: the last `MmGet` is gone.
    fn release(&self) {
        // No MmGet exists any more, so no fault, insert or coverage can start.
        self.notifiers.release();
        if let Some(m) = sync::lock(&self.monitor).take() {
            m.stop();
        }
        // Closing the descriptor unregisters every range and wakes any thread
        // still blocked in munmap on an unread event.
        *sync::write(&self.uffd) = None;
        *sync::lock(&self.released) = true;
        self.released_cv.notify_all();
    }
}

fn log_fallback(why: &str) {
    if cfg!(loom) {
        return;
    }
    // One line, once per Mm: the stack works, with a weaker guarantee.
    eprintln!("odp: invalidation source: fallback to guarded copies only ({why})");
}

/// What `Mm::cover` achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Coverage {
    Covered,
    /// Part of the range is not mapped.
    Hole,
    /// No monitor, or the mapping cannot be monitored.
    Uncovered,
}

/// Keeps the [`Mm`] structure alive (`mmgrab`); cannot touch memory.
#[derive(Clone)]
pub struct MmGrab(Arc<Mm>);

impl MmGrab {
    /// `mmget_not_zero`: a usable handle, unless the address space is released.
    pub fn get(&self) -> Option<MmGet> {
        let mut n = self.0.users.load(Ordering::Relaxed);
        loop {
            if n == 0 {
                return None;
            }
            match self
                .0
                .users
                .compare_exchange_weak(n, n + 1, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => return Some(MmGet(self.0.clone())),
                Err(cur) => n = cur,
            }
        }
    }
}

impl std::ops::Deref for MmGrab {
    type Target = Mm;
    fn deref(&self) -> &Mm {
        &self.0
    }
}

/// Proves the address space is usable (`mmget`); the last one dropped releases it.
pub struct MmGet(Arc<Mm>);

impl MmGet {
    pub fn grab(&self) -> MmGrab {
        MmGrab(self.0.clone())
    }
}

impl Clone for MmGet {
    fn clone(&self) -> Self {
        self.0.users.fetch_add(1, Ordering::Relaxed);
        MmGet(self.0.clone())
    }
}

impl std::ops::Deref for MmGet {
    type Target = Mm;
    fn deref(&self) -> &Mm {
        &self.0
    }
}

impl Drop for MmGet {
    fn drop(&mut self) {
        if self.0.users.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        if lockdep::umem_locks_held() == 0 {
            self.0.release();
        } else {
            // mmput_async: release invalidates, which needs the umem lock this
            // thread holds.
            let mm = self.0.clone();
            spawn_release(mm);
        }
    }
}

#[cfg(not(loom))]
fn spawn_release(mm: Arc<Mm>) {
    std::thread::Builder::new()
        .name("odp-release".into())
        .spawn(move || mm.release())
        .expect("spawn odp-release thread");
}

#[cfg(loom)]
fn spawn_release(mm: Arc<Mm>) {
    loom::thread::spawn(move || mm.release());
}
