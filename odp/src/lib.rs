//! `odp`: mirroring a process address space for a software RDMA device.
//!
//! See `docs/ARCHITECTURE.md` for the map. In one breath: [`mm`] is the address
//! space as the device sees it, [`notifier`] its interval tree of invalidation
//! subscribers with the kernel's sequence scheme, [`umem`] the ODP regions
//! built on it, `monitor` the userfaultfd thread that turns `munmap`/`madvise`/
//! `mremap` into invalidations, and [`guarded`] the only way bytes move between
//! the device and application memory.

pub mod guarded;
pub mod sys;

mod lockdep;
pub mod notifier;
mod sync;
