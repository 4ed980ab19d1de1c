//! The system calls `odp` makes, each wrapped once, with its errors mapped.
//! This and `guarded` are the only modules with `unsafe`.

pub mod event;
pub mod mincore;
pub mod populate;
pub mod uffd;
