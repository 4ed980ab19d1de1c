//! ODP umems (`ib_umem_odp`): registering pins nothing; pages are faulted in
//! when the device first touches them and forgotten when invalidated.
//!
//! * [`Region`]: one interval notifier + per-page state + the umem lock, and the
//!   fault/commit loop. Both umem kinds are made of regions.
//! * [`Umem`]: an explicit ODP umem over a VA range, one region.
//! * [`ImplicitUmem`]: the whole address space; a child region per
//!   [`CHILD_SIZE`] chunk, created on first fault, dropped when emptied.
//! * [`UmemGuard`]: what a successful fault returns — proof that the umem lock
//!   and the invalidation barrier are held and the pages are valid for the
//!   access. All device reads and writes of application memory go through it.
//! * [`Space`]: what a region needs from the operating system (fault, coverage,
//!   barrier). [`crate::MmGrab`] implements it; the loom model replaces it.

pub mod ahead;
mod explicit;
mod guard;
mod implicit;
mod pages;
mod region;

pub use explicit::Umem;
pub use guard::UmemGuard;
pub use implicit::{ImplicitUmem, CHILD_SIZE};
pub use region::{Region, Space};

use crate::sync::{AtomicU64, Ordering};

/// Page size the per-page state is kept in (x86-64 base pages).
pub const PAGE_SIZE: u64 = 4096;

/// The kind of access the device wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

impl Access {
    pub(crate) fn is_write(self) -> bool {
        self == Access::Write
    }
}

/// Whether a fault may fault pages in, or only map what the CPU has resident.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Fault,
    /// `PREFETCH_NO_FAULT` / hmm without `HMM_PFN_REQ_FAULT`.
    Snapshot,
}

/// `ibv_advise_mr` advice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Advice {
    Prefetch,
    PrefetchWrite,
    PrefetchNoFault,
}

/// Why an access to application memory failed. Each maps to a verbs
/// completion status (local/remote access error) in the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessError {
    /// Outside the umem (checked without overflow), or an empty/overflowing registration.
    OutOfBounds,
    /// Write asked of a umem registered without write access (`EPERM`).
    NotWritable,
    /// Part of the range is not mapped (`MADV_POPULATE` ENOMEM).
    Unmapped,
    /// The mapping forbids the access (`PROT_READ` for write, `PROT_NONE`).
    Permission,
    /// A file mapping beyond its end.
    BeyondEof,
    /// A guarded access faulted at this address (unmapped or re-protected
    /// after it was faulted in).
    Fault { addr: u64 },
    /// Snapshot mode: a page was not resident.
    NotPresent,
    /// A 64-bit atomic on an address that is not 8-byte aligned.
    Misaligned,
    /// The address space was released (`mmget_not_zero` failed).
    Gone,
    /// Invalidations kept racing the fault; gave up after a bounded time.
    Busy,
    /// An implicit child was reaped under us (internal: the caller retries).
    Detached,
    /// An unexpected errno from the kernel.
    Os(i32),
    /// Pinning the range would take the process's pinned pages past
    /// `RLIMIT_MEMLOCK` (the kernel's `ib_umem_get`: ENOMEM).
    MemlockLimit,
}

impl std::fmt::Display for AccessError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

impl std::error::Error for AccessError {}

impl From<crate::sys::populate::PopulateError> for AccessError {
    fn from(e: crate::sys::populate::PopulateError) -> Self {
        use crate::sys::populate::PopulateError as P;
        match e {
            P::Hole => AccessError::Unmapped,
            P::Permission => AccessError::Permission,
            P::BeyondEof => AccessError::BeyondEof,
            P::Other(errno) => AccessError::Os(errno),
        }
    }
}

impl From<crate::guarded::GuardedFault> for AccessError {
    fn from(f: crate::guarded::GuardedFault) -> Self {
        match f {
            crate::guarded::GuardedFault::Misaligned => AccessError::Misaligned,
            crate::guarded::GuardedFault::Fault { addr } => {
                AccessError::Fault { addr: addr as u64 }
            }
        }
    }
}

/// Per-umem counters (the figures `rdma stat show mr` gives for mlx5 ODP
/// MRs): relaxed atomics, bumped where a fault commits or an invalidation
/// clears pages — never on an access that finds its pages present.
#[derive(Debug, Default)]
pub struct Counters {
    page_faults: AtomicU64,
    pages_faulted: AtomicU64,
    invalidations: AtomicU64,
    invalidations_of_present: AtomicU64,
    pages_invalidated: AtomicU64,
    prefetches: AtomicU64,
    pages_prefetched: AtomicU64,
    pages_read_ahead: AtomicU64,
}

/// A copy of [`Counters`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CounterSnapshot {
    /// Fault operations of device accesses that committed pages (mlx5's
    /// `page_faults_handled`; a prefetch's are not counted here).
    pub page_faults: u64,
    /// Pages those faults made present (mlx5's `page_faults`).
    pub pages_faulted: u64,
    /// Invalidation callbacks that reached this umem.
    pub invalidations: u64,
    /// Of those, the ones that found pages present in the umem (mlx5's
    /// `page_invalidations_handled`: its callback does nothing before the
    /// first page is mapped).
    pub invalidations_of_present: u64,
    /// Present pages invalidations cleared (mlx5's `page_invalidations`).
    pub pages_invalidated: u64,
    /// `ibv_advise_mr` calls.
    pub prefetches: u64,
    /// Pages prefetches made present (mlx5's `page_prefetch`).
    pub pages_prefetched: u64,
    /// Pages the device's own read-ahead made present (a sequential stream
    /// of message faults; see `umem/ahead.rs`). Not in mlx5's counters.
    pub pages_read_ahead: u64,
    /// Pinned regions only: accesses that met pages the application unmapped,
    /// moved or discarded while registered (see [`crate::Pinned`]).
    pub orphan_accesses: u64,
}

impl Counters {
    pub fn snapshot(&self) -> CounterSnapshot {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CounterSnapshot {
            page_faults: r(&self.page_faults),
            pages_faulted: r(&self.pages_faulted),
            invalidations: r(&self.invalidations),
            invalidations_of_present: r(&self.invalidations_of_present),
            pages_invalidated: r(&self.pages_invalidated),
            prefetches: r(&self.prefetches),
            pages_prefetched: r(&self.pages_prefetched),
            pages_read_ahead: r(&self.pages_read_ahead),
            orphan_accesses: 0,
        }
    }
}

/// Whether `[va, va+len)` lies inside `[start, end)`, computed without overflow.
pub fn within(va: u64, len: u64, start: u64, end: u64) -> bool {
    va >= start && va.checked_add(len).is_some_and(|e| e <= end)
}

/// A piece of best-effort work for [`defer`].
pub(crate) type Job = Box<dyn FnOnce() + Send>;

/// Best-effort work (non-flushing prefetch) runs on one worker thread, like
/// the kernel's deferred prefetch work.
pub(crate) fn defer(job: Job) {
    #[cfg(loom)]
    job();
    #[cfg(not(loom))]
    {
        use std::sync::mpsc::{channel, Sender};
        static WORKER: std::sync::Mutex<Option<Sender<Job>>> = std::sync::Mutex::new(None);
        let mut w = WORKER.lock().unwrap_or_else(|e| e.into_inner());
        let tx = w.get_or_insert_with(|| {
            let (tx, rx) = channel::<Job>();
            std::thread::Builder::new()
                .name("odp-prefetch".into())
                .spawn(move || rx.into_iter().for_each(|j| j()))
                .expect("spawn odp-prefetch thread");
            tx
        });
        let _ = tx.send(job);
    }
}
