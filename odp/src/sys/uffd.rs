//! `userfaultfd` in write-protect + `UFFD_FEATURE_WP_ASYNC` mode, used only as
//! an event source (UNMAP, REMOVE, REMAP); it never blocks the application.
//!
//! Why this shape (measured on kernel 6.18, table in `docs/userfaultfd.md`):
//! - MISSING mode would block the application's first touch of every page
//!   until a monitor resolves it; WP mode with `WP_ASYNC` lets the kernel
//!   resolve write-protect faults itself, so registration costs the
//!   application nothing and only the non-fault events reach us.
//! - `WP_ASYNC` also makes WP registration legal on *any* mapping type
//!   (regular files included), so one registration mode covers everything.
//! - The thread doing `munmap`/`madvise`/`mremap` on registered memory blocks
//!   until the event is *read*; a monitor must therefore never do those
//!   operations on registered memory itself, and must keep reading.
//! - Registration is per VMA: memory mapped later into a hole of a registered
//!   range is not covered; registering again with the same descriptor is
//!   cheap and succeeds, which is how coverage is refreshed.
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use super::populate::{last_errno, page_size};

/// The kernel ABI this module uses, mirroring `include/uapi/linux/userfaultfd.h`
/// (Linux 6.18). `libc` 0.2 only has `SYS_userfaultfd`; the system header on
/// the build machine predates `WP_ASYNC`, so everything else is spelled here.
#[allow(dead_code)]
pub mod abi {
    pub const UFFD_API: u64 = 0xAA;
    pub const UFFD_USER_MODE_ONLY: libc::c_int = 1;

    pub const UFFD_EVENT_PAGEFAULT: u8 = 0x12;
    pub const UFFD_EVENT_FORK: u8 = 0x13;
    pub const UFFD_EVENT_REMAP: u8 = 0x14;
    pub const UFFD_EVENT_REMOVE: u8 = 0x15;
    pub const UFFD_EVENT_UNMAP: u8 = 0x16;

    pub const UFFD_FEATURE_PAGEFAULT_FLAG_WP: u64 = 1 << 0;
    pub const UFFD_FEATURE_EVENT_FORK: u64 = 1 << 1;
    pub const UFFD_FEATURE_EVENT_REMAP: u64 = 1 << 2;
    pub const UFFD_FEATURE_EVENT_REMOVE: u64 = 1 << 3;
    pub const UFFD_FEATURE_MISSING_HUGETLBFS: u64 = 1 << 4;
    pub const UFFD_FEATURE_MISSING_SHMEM: u64 = 1 << 5;
    pub const UFFD_FEATURE_EVENT_UNMAP: u64 = 1 << 6;
    pub const UFFD_FEATURE_SIGBUS: u64 = 1 << 7;
    pub const UFFD_FEATURE_THREAD_ID: u64 = 1 << 8;
    pub const UFFD_FEATURE_MINOR_HUGETLBFS: u64 = 1 << 9;
    pub const UFFD_FEATURE_MINOR_SHMEM: u64 = 1 << 10;
    pub const UFFD_FEATURE_EXACT_ADDRESS: u64 = 1 << 11;
    pub const UFFD_FEATURE_WP_HUGETLBFS_SHMEM: u64 = 1 << 12;
    pub const UFFD_FEATURE_WP_UNPOPULATED: u64 = 1 << 13;
    pub const UFFD_FEATURE_POISON: u64 = 1 << 14;
    pub const UFFD_FEATURE_WP_ASYNC: u64 = 1 << 15;
    pub const UFFD_FEATURE_MOVE: u64 = 1 << 16;

    pub const UFFDIO_REGISTER_MODE_MISSING: u64 = 1 << 0;
    pub const UFFDIO_REGISTER_MODE_WP: u64 = 1 << 1;
    pub const UFFDIO_REGISTER_MODE_MINOR: u64 = 1 << 2;

    /// `struct uffdio_api`.
    #[repr(C)]
    #[derive(Debug, Default, Clone, Copy)]
    pub struct UffdioApi {
        pub api: u64,
        pub features: u64,
        pub ioctls: u64,
    }
    /// `struct uffdio_range`.
    #[repr(C)]
    #[derive(Debug, Default, Clone, Copy)]
    pub struct UffdioRange {
        pub start: u64,
        pub len: u64,
    }
    /// `struct uffdio_register`.
    #[repr(C)]
    #[derive(Debug, Default, Clone, Copy)]
    pub struct UffdioRegister {
        pub range: UffdioRange,
        pub mode: u64,
        pub ioctls: u64,
    }
    /// `sizeof(struct uffd_msg)`: an 8-byte header (`event` u8, then padding)
    /// and a 24-byte union (`remove {start, end}`, `remap {from, to, len}`, ...).
    pub const UFFD_MSG_SIZE: usize = 32;

    // `_IOC` from include/uapi/asm-generic/ioctl.h; powerpc, mips and sparc
    // use 3 direction bits and different values (arch/*/include/uapi/asm/ioctl.h).
    mod dir {
        /// The architectures with the 3-bit direction encoding.
        const ALT: bool = cfg!(any(
            target_arch = "powerpc",
            target_arch = "powerpc64",
            target_arch = "mips",
            target_arch = "mips64",
            target_arch = "sparc",
            target_arch = "sparc64"
        ));
        pub const NONE: u32 = if ALT { 1 } else { 0 };
        pub const READ: u32 = 2;
        pub const WRITE: u32 = if ALT { 4 } else { 1 };
        pub const SIZEBITS: u32 = if ALT { 13 } else { 14 };
    }
    const fn ioc(d: u32, nr: u32, size: usize) -> u64 {
        ((d << (16 + dir::SIZEBITS)) | ((size as u32) << 16) | (0xAA << 8) | nr) as u64
    }
    /// `_IOWR(UFFDIO, _UFFDIO_API, struct uffdio_api)`
    pub const UFFDIO_API: u64 = ioc(
        dir::READ | dir::WRITE,
        0x3F,
        core::mem::size_of::<UffdioApi>(),
    );
    /// `_IOWR(UFFDIO, _UFFDIO_REGISTER, struct uffdio_register)`
    pub const UFFDIO_REGISTER: u64 = ioc(
        dir::READ | dir::WRITE,
        0x00,
        core::mem::size_of::<UffdioRegister>(),
    );
    /// `_IOR(UFFDIO, _UFFDIO_UNREGISTER, struct uffdio_range)`
    pub const UFFDIO_UNREGISTER: u64 = ioc(dir::READ, 0x01, core::mem::size_of::<UffdioRange>());
    /// `_IO(USERFAULTFD_IOC, 0x00)` on `/dev/userfaultfd` (Linux >= 6.1).
    pub const USERFAULTFD_IOC_NEW: u64 = ioc(dir::NONE, 0x00, 0);
}

/// The features `open` insists on: the three invalidation events, and
/// `WP_ASYNC` so that WP registration never blocks the application.
/// (The kernel adds `WP_UNPOPULATED` by itself whenever `WP_ASYNC` is asked.)
pub const REQUIRED_FEATURES: u64 = abi::UFFD_FEATURE_EVENT_UNMAP
    | abi::UFFD_FEATURE_EVENT_REMOVE
    | abi::UFFD_FEATURE_EVENT_REMAP
    | abi::UFFD_FEATURE_WP_ASYNC;

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
    /// `munmap`, `mremap` shrink, `mmap(MAP_FIXED)` over, and the old range of
    /// an `mremap` move: pages already gone.
    Unmap { start: u64, end: u64 },
    /// `madvise(MADV_DONTNEED / MADV_FREE / MADV_REMOVE)`: pages about to go.
    Remove { start: u64, end: u64 },
    /// `mremap` move: `[from, from+len)` now lives at `[to, to+len)`.
    Remap { from: u64, to: u64, len: u64 },
    /// An event this module does not interpret (its `event` byte).
    Other(u8),
}

impl Event {
    /// Parse one `struct uffd_msg`. `None` if `msg` is shorter than
    /// [`abi::UFFD_MSG_SIZE`]; bytes beyond it are ignored.
    pub fn parse(msg: &[u8]) -> Option<Event> {
        if msg.len() < abi::UFFD_MSG_SIZE {
            return None;
        }
        // The union starts at offset 8; fields are native-endian u64.
        let word = |i: usize| {
            let o = 8 + 8 * i;
            let mut b = [0u8; 8];
            b.copy_from_slice(&msg[o..o + 8]);
            u64::from_ne_bytes(b)
        };
        Some(match msg[0] {
            abi::UFFD_EVENT_UNMAP => Event::Unmap {
                start: word(0),
                end: word(1),
            },
            abi::UFFD_EVENT_REMOVE => Event::Remove {
                start: word(0),
                end: word(1),
            },
            abi::UFFD_EVENT_REMAP => Event::Remap {
                from: word(0),
                to: word(1),
                len: word(2),
            },
            other => Event::Other(other),
        })
    }
}

/// Why a range could not be registered.
#[derive(Debug)]
pub enum RegisterError {
    /// Part of the range is not mapped at all. The kernel registers every VMA
    /// that intersects the range and silently skips holes (measured); so when
    /// the range is *partially* mapped, the mapped parts ARE registered and
    /// this error only says coverage is incomplete. Memory mapped into the
    /// hole later is not covered until the range is registered again.
    Hole,
    /// The mapping type does not support write-protect tracking, or (EPERM)
    /// a `MAP_SHARED` mapping of a file opened read-only — the range stays
    /// uncovered.
    Unsupported,
    /// Another userfaultfd already covers the range (EBUSY).
    Busy,
    Other(io::Error),
}

impl std::fmt::Display for RegisterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegisterError::Hole => f.write_str("range not fully mapped"),
            RegisterError::Unsupported => f.write_str("mapping type cannot be registered"),
            RegisterError::Busy => f.write_str("range registered with another userfaultfd"),
            RegisterError::Other(e) => write!(f, "userfaultfd register: {e}"),
        }
    }
}

impl std::error::Error for RegisterError {}

/// A userfaultfd, non-blocking, close-on-exec, features negotiated.
/// Dropping it unregisters every range and releases any thread blocked in an
/// unread event.
#[derive(Debug)]
pub struct Userfaultfd {
    fd: OwnedFd,
    mode: OpenMode,
    features: u64,
}

impl Userfaultfd {
    /// Try `UFFD_USER_MODE_ONLY`, then plain, then `/dev/userfaultfd`;
    /// negotiate `EVENT_UNMAP | EVENT_REMOVE | EVENT_REMAP | WP_ASYNC`.
    ///
    /// `USER_MODE_ONLY` comes first because it is the one that works without
    /// privilege (`vm.unprivileged_userfaultfd=0` only restricts *kernel-mode*
    /// faults), and we never need kernel-mode faults: WP_ASYNC resolves them.
    /// A kernel older than 5.11 rejects the flag with EINVAL, hence plain next.
    /// Fails with `ErrorKind::Unsupported` naming the missing features if the
    /// kernel lacks one; the caller then runs without invalidation events.
    pub fn open() -> io::Result<Self> {
        let mut tried = Vec::new();
        let mut first_err: Option<io::Error> = None;
        for mode in [OpenMode::UserModeOnly, OpenMode::Syscall, OpenMode::DevNode] {
            match open_fd(mode) {
                Ok(fd) => {
                    let available = handshake(&fd, REQUIRED_FEATURES).map_err(|e| {
                        if e.raw_os_error() == Some(libc::EINVAL) {
                            missing_features_error(mode)
                        } else {
                            e
                        }
                    })?;
                    // UFFDIO_API reports everything the kernel offers; what
                    // this descriptor has enabled is what we asked for plus
                    // WP_UNPOPULATED, which the kernel adds to WP_ASYNC.
                    let features =
                        REQUIRED_FEATURES | (available & abi::UFFD_FEATURE_WP_UNPOPULATED);
                    return Ok(Userfaultfd { fd, mode, features });
                }
                Err(e) => {
                    tried.push(format!("{mode:?}: {e}"));
                    first_err.get_or_insert(e);
                }
            }
        }
        let kind = first_err.map_or(io::ErrorKind::Other, |e| e.kind());
        Err(io::Error::new(
            kind,
            format!("userfaultfd unavailable ({})", tried.join("; ")),
        ))
    }

    pub fn mode(&self) -> OpenMode {
        self.mode
    }

    /// The features enabled on this descriptor: [`REQUIRED_FEATURES`] plus
    /// `WP_UNPOPULATED`, which the kernel enables along with `WP_ASYNC`.
    pub fn features(&self) -> u64 {
        self.features
    }

    /// Register `[start, start+len)` (page-aligned) in WP mode. Registering a
    /// range this descriptor already covers succeeds.
    ///
    /// Errors, as measured: no VMA intersects the range → EINVAL (`Hole`); a
    /// partially mapped range registers its mapped parts and we report `Hole`
    /// (probed with `msync(MS_ASYNC)`, which answers ENOMEM on any unmapped
    /// page and does nothing else); another userfaultfd → EBUSY (`Busy`);
    /// EINVAL on a fully mapped range or EPERM → `Unsupported`.
    pub fn register_wp(&self, start: usize, len: usize) -> Result<(), RegisterError> {
        check_aligned(start, len).map_err(RegisterError::Other)?;
        let mut reg = abi::UffdioRegister {
            range: abi::UffdioRange {
                start: start as u64,
                len: len as u64,
            },
            mode: abi::UFFDIO_REGISTER_MODE_WP,
            ioctls: 0,
        };
        // SAFETY: UFFDIO_REGISTER reads and writes exactly one
        // `struct uffdio_register`, which `reg` is (#[repr(C)], same layout as
        // the kernel header); the pointer is valid for the call's duration.
        let r = unsafe { libc::ioctl(self.fd.as_raw_fd(), abi::UFFDIO_REGISTER as _, &mut reg) };
        if r == 0 {
            return if fully_mapped(start, len) {
                Ok(())
            } else {
                Err(RegisterError::Hole)
            };
        }
        let errno = last_errno();
        Err(match errno {
            libc::EBUSY => RegisterError::Busy,
            libc::EINVAL if !fully_mapped(start, len) => RegisterError::Hole,
            libc::EINVAL | libc::EPERM => RegisterError::Unsupported,
            e => RegisterError::Other(io::Error::from_raw_os_error(e)),
        })
    }

    /// Stop tracking `[start, start+len)`. Unmapped parts are skipped; a range
    /// never registered is not an error.
    pub fn unregister(&self, start: usize, len: usize) -> io::Result<()> {
        check_aligned(start, len)?;
        let mut range = abi::UffdioRange {
            start: start as u64,
            len: len as u64,
        };
        // SAFETY: UFFDIO_UNREGISTER reads one `struct uffdio_range`, which
        // `range` is (#[repr(C)]); valid for the duration of the call.
        let r =
            unsafe { libc::ioctl(self.fd.as_raw_fd(), abi::UFFDIO_UNREGISTER as _, &mut range) };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Read every event now queued (non-blocking) into `out`; returns how many.
    ///
    /// Reading an UNMAP/REMOVE/REMAP event is what releases the application
    /// thread blocked in `munmap`/`madvise`/`mremap`; anything the monitor
    /// must do *before* that thread resumes has to happen before this call.
    pub fn read_events(&self, out: &mut Vec<Event>) -> io::Result<usize> {
        const BATCH: usize = 16;
        let mut buf = [0u8; abi::UFFD_MSG_SIZE * BATCH];
        let mut count = 0;
        loop {
            // SAFETY: `buf` is a writable buffer of exactly `buf.len()` bytes
            // that outlives the call; read(2) writes at most that many.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                match last_errno() {
                    libc::EINTR => continue,
                    libc::EAGAIN => return Ok(count),
                    // Report events already consumed; the error recurs next call.
                    _ if count > 0 => return Ok(count),
                    e => return Err(io::Error::from_raw_os_error(e)),
                }
            }
            let n = n as usize;
            if n == 0 {
                return Ok(count);
            }
            // The kernel only ever returns whole messages; a short tail would
            // be dropped rather than misparsed.
            for msg in buf[..n].chunks_exact(abi::UFFD_MSG_SIZE) {
                if let Some(ev) = Event::parse(msg) {
                    out.push(ev);
                    count += 1;
                }
            }
        }
    }
}

impl AsRawFd for Userfaultfd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for Userfaultfd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn check_aligned(start: usize, len: usize) -> io::Result<()> {
    let page = page_size();
    if start % page != 0 || len % page != 0 || len == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "userfaultfd range must be page-aligned and non-empty",
        ));
    }
    Ok(())
}

/// Whether every page of `[start, start+len)` is mapped. `msync(MS_ASYNC)` has
/// been a no-op since Linux 2.6.19 but still walks the VMAs and answers ENOMEM
/// for any unmapped part.
fn fully_mapped(start: usize, len: usize) -> bool {
    // SAFETY: MS_ASYNC without MS_INVALIDATE neither writes nor discards
    // anything; it only validates that the range is mapped.
    unsafe { libc::msync(start as *mut libc::c_void, len, libc::MS_ASYNC) == 0 }
}

fn open_fd(mode: OpenMode) -> io::Result<OwnedFd> {
    match mode {
        OpenMode::UserModeOnly => syscall_open(abi::UFFD_USER_MODE_ONLY),
        OpenMode::Syscall => syscall_open(0),
        OpenMode::DevNode => dev_open(),
    }
}

fn syscall_open(extra: libc::c_int) -> io::Result<OwnedFd> {
    let flags = libc::O_CLOEXEC | libc::O_NONBLOCK | extra;
    // SAFETY: userfaultfd(2) takes only flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by the kernel and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

fn dev_open() -> io::Result<OwnedFd> {
    // std opens with O_CLOEXEC; the node itself is closed on return.
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/userfaultfd")?;
    let flags = libc::O_CLOEXEC | libc::O_NONBLOCK;
    // SAFETY: USERFAULTFD_IOC_NEW takes its flags by value and returns a new
    // descriptor or -1; `dev` is an open /dev/userfaultfd.
    let fd = unsafe { libc::ioctl(dev.as_raw_fd(), abi::USERFAULTFD_IOC_NEW as _, flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by the kernel and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `UFFDIO_API`: returns the features the kernel *offers* (not only those
/// enabled). A failed handshake leaves the descriptor unusable (measured:
/// a second UFFDIO_API answers EINVAL), hence a fresh fd for probing.
fn handshake(fd: &OwnedFd, features: u64) -> io::Result<u64> {
    let mut api = abi::UffdioApi {
        api: abi::UFFD_API,
        features,
        ioctls: 0,
    };
    // SAFETY: UFFDIO_API reads and writes one `struct uffdio_api`, which `api`
    // is (#[repr(C)]); valid for the duration of the call.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), abi::UFFDIO_API as _, &mut api) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(api.features)
}

/// The handshake failed: ask a fresh descriptor (features 0 always succeeds
/// and reports everything available) what is missing, to say so clearly.
fn missing_features_error(mode: OpenMode) -> io::Error {
    let available = open_fd(mode).and_then(|fd| handshake(&fd, 0)).unwrap_or(0);
    let names = [
        (abi::UFFD_FEATURE_EVENT_UNMAP, "EVENT_UNMAP"),
        (abi::UFFD_FEATURE_EVENT_REMOVE, "EVENT_REMOVE"),
        (abi::UFFD_FEATURE_EVENT_REMAP, "EVENT_REMAP"),
        (abi::UFFD_FEATURE_WP_ASYNC, "WP_ASYNC"),
    ];
    let missing: Vec<&str> = names
        .iter()
        .filter(|(bit, _)| available & bit == 0)
        .map(|(_, n)| *n)
        .collect();
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!(
            "userfaultfd lacks required features: {} (available {available:#x})",
            missing.join(", ")
        ),
    )
}
