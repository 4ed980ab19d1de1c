//! `odp`: mirroring a process address space for a software RDMA device.
//!
//! See `docs/ARCHITECTURE.md` for the map. In one breath: [`mm`] is the address
//! space as the device sees it (with its two lifetimes, [`MmGrab`] and
//! [`MmGet`]), [`notifier`] its interval tree of invalidation subscribers with
//! the kernel's sequence scheme, [`umem`] the ODP regions built on it, `monitor`
//! the userfaultfd thread that turns `munmap`/`madvise`/`mremap` into
//! invalidations, and [`guarded`] the only way bytes move between the device
//! and application memory.

pub mod guarded;
mod lockdep;
pub mod mm;
mod monitor;
pub mod notifier;
pub mod pinned;
mod sync;
pub mod sys;
pub mod umem;

pub use mm::{InvalidationSource, Mm, MmConfig, MmGet, MmGrab};
pub use pinned::{pinned_pages, Memory, Pinned, Window};
pub use sys::event::EventFd;
pub use sys::mapping::{MapOptions, Mapping, Prot};
pub use umem::{Access, AccessError, Advice, ImplicitUmem, Mode, Umem, UmemGuard};

#[cfg(all(test, loom))]
mod loom_tests;
