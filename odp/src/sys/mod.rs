//! The system calls `odp` makes, each wrapped once, with its errors mapped.
//! This and `guarded` are the only modules with `unsafe`.
//!
//! Kernel floor: `MADV_POPULATE_*` needs Linux 5.14; the userfaultfd event
//! source needs `UFFD_FEATURE_WP_ASYNC` (Linux 6.7) and is optional — without
//! it `Userfaultfd::open` fails cleanly and the device runs on guarded copies
//! alone. Measured behaviour: `docs/userfaultfd.md`.

pub mod event;
pub mod mapping;
pub mod mincore;
pub mod mlock;
pub mod populate;
pub mod uffd;
