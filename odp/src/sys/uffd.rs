//! `userfaultfd` in write-protect + `UFFD_FEATURE_WP_ASYNC` mode, used only as
//! an event source (UNMAP, REMOVE, REMAP); it never blocks the application.
//!
//! STUB: filled in by the syscall work.
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// How the descriptor was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// `userfaultfd(UFFD_USER_MODE_ONLY)`: works unprivileged.
    UserModeOnly,
    /// `userfaultfd(0)`: needs privilege or `vm.unprivileged_userfaultfd=1`.
    Syscall,
    /// `/dev/userfaultfd` + `USERFAULTFD_IOC_NEW`.
    DevNode,
}

/// One event read from the descriptor. Ranges are half-open `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// `munmap`, `mremap` shrink, `mmap(MAP_FIXED)` over: pages already gone.
    Unmap { start: u64, end: u64 },
    /// `madvise(MADV_DONTNEED / MADV_FREE / MADV_REMOVE)`: pages about to go.
    Remove { start: u64, end: u64 },
    /// `mremap` move: `[from, from+len)` now lives at `[to, to+len)`.
    Remap { from: u64, to: u64, len: u64 },
    /// An event this module does not interpret (its `event` byte).
    Other(u8),
}

/// Why a range could not be registered.
#[derive(Debug)]
pub enum RegisterError {
    /// Part of the range is not mapped at all.
    Hole,
    /// The mapping type does not support write-protect tracking (e.g. a regular
    /// file mapping) — the range stays uncovered.
    Unsupported,
    /// Another userfaultfd already covers the range (EBUSY).
    Busy,
    Other(io::Error),
}

/// A userfaultfd, non-blocking, close-on-exec, features negotiated.
#[derive(Debug)]
pub struct Userfaultfd {
    fd: OwnedFd,
    mode: OpenMode,
}

impl Userfaultfd {
    /// Try `UFFD_USER_MODE_ONLY`, then plain, then `/dev/userfaultfd`;
    /// negotiate `EVENT_UNMAP | EVENT_REMOVE | EVENT_REMAP | WP_ASYNC`.
    pub fn open() -> io::Result<Self> {
        unimplemented!()
    }
    pub fn mode(&self) -> OpenMode {
        self.mode
    }
    /// Register `[start, start+len)` (page-aligned) in WP mode. Registering a
    /// range this descriptor already covers succeeds.
    pub fn register_wp(&self, start: usize, len: usize) -> Result<(), RegisterError> {
        let _ = (start, len);
        unimplemented!()
    }
    /// Read every event now queued (non-blocking) into `out`; returns how many.
    pub fn read_events(&self, out: &mut Vec<Event>) -> io::Result<usize> {
        let _ = out;
        unimplemented!()
    }
}

impl AsRawFd for Userfaultfd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
