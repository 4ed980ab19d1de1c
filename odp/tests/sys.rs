//! Real-syscall tests for `odp::sys` (populate + userfaultfd). Each expectation
//! is a measurement on kernel 6.18 (see `docs/userfaultfd.md`); a kernel that
//! behaves differently fails here rather than somewhere deep in the device.
//!
//! Ordering rule in every uffd test: the `Userfaultfd` is dropped before any
//! registered memory is unmapped by a destructor, because `munmap` of
//! registered memory blocks until someone reads the UNMAP event.
use std::os::fd::{AsFd, AsRawFd, FromRawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use odp::sys::populate::{page_size, populate, PopulateError};
use odp::sys::uffd::{abi, Event, OpenMode, RegisterError, Userfaultfd};
use odp::{MapOptions, Prot};

// ---------------------------------------------------------------- helpers

/// An mmap'd range (`odp::Mapping`), unmapped on drop (unless `forget`);
/// `addr` and `len` copied out for the tests' address arithmetic.
struct Map {
    addr: usize,
    len: usize,
    map: odp::Mapping,
}

impl Map {
    fn new(len: usize, opts: MapOptions<'_>) -> std::io::Result<Map> {
        let map = opts.map(len)?;
        Ok(Map {
            addr: map.addr(),
            len,
            map,
        })
    }
    /// At a fixed address that must be free (`MAP_FIXED_NOREPLACE`).
    fn anon_at(addr: usize, pages: usize) -> Map {
        let m =
            Map::new(pages * page_size(), MapOptions::new().at(addr)).expect("MAP_FIXED_NOREPLACE");
        assert_eq!(m.addr, addr, "MAP_FIXED_NOREPLACE");
        m
    }
    fn anon(pages: usize, prot: Prot) -> Map {
        Map::new(pages * page_size(), MapOptions::new().prot(prot)).unwrap()
    }
    fn page(&self, i: usize) -> usize {
        self.addr + i * page_size()
    }
    /// The test unmapped (or moved) it itself.
    fn forget(self) {
        let _ = self.map.into_raw();
    }
}

use test_support::serial::serial;

fn ps() -> usize {
    page_size()
}

fn write_byte(addr: usize, v: u8) {
    // SAFETY: callers pass an address inside a live, writable mapping.
    unsafe { std::ptr::write_volatile(addr as *mut u8, v) }
}

fn read_byte(addr: usize) -> u8 {
    // SAFETY: callers pass an address inside a live, readable mapping.
    unsafe { std::ptr::read_volatile(addr as *const u8) }
}

fn munmap(addr: usize, len: usize) {
    // SAFETY: callers unmap ranges they own and do not touch afterwards.
    assert_eq!(unsafe { libc::munmap(addr as *mut libc::c_void, len) }, 0);
}

fn madvise(addr: usize, len: usize, advice: i32) -> i32 {
    // SAFETY: DONTNEED/REMOVE on memory the test owns; contents are not relied on.
    unsafe { libc::madvise(addr as *mut libc::c_void, len, advice) }
}

/// A regular file of `len` bytes (in /tmp, ext4 here, or /dev/shm, tmpfs).
struct TempFile {
    path: std::path::PathBuf,
    file: std::fs::File,
}

impl TempFile {
    fn new(dir: &str, tag: &str, len: usize, writable: bool) -> TempFile {
        let path = std::path::PathBuf::from(format!(
            "{dir}/odp-sys-{}-{tag}-{:?}",
            std::process::id(),
            thread::current().id()
        ));
        std::fs::write(&path, vec![0x5au8; len]).unwrap();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(writable)
            .open(&path)
            .unwrap();
        TempFile { path, file }
    }
    fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn open_uffd() -> Userfaultfd {
    Userfaultfd::open().expect("userfaultfd must be available in this test environment")
}

/// Run `op` on another thread (it blocks until its event is read) while this
/// thread polls and reads `uffd`. Fails instead of hanging if `op` does not
/// finish within 5 s. Returns every event read.
fn events_of(uffd: &Userfaultfd, op: impl FnOnce() + Send + 'static) -> Vec<Event> {
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    let h = thread::spawn(move || {
        op();
        d.store(true, Ordering::Release);
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut evs = Vec::new();
    loop {
        let mut pfd = libc::pollfd {
            fd: uffd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        unsafe { libc::poll(&mut pfd, 1, 20) };
        uffd.read_events(&mut evs).unwrap();
        if done.load(Ordering::Acquire) {
            // Events queued after op returned (none expected) are picked up too.
            uffd.read_events(&mut evs).unwrap();
            break;
        }
        assert!(
            Instant::now() < deadline,
            "operation still blocked after 5 s; events so far {evs:?}"
        );
    }
    h.join().unwrap();
    evs
}

/// Run `op` on another thread and fail if it does not finish in 5 s (a
/// blocked application fault), reading nothing from any uffd meanwhile.
fn must_not_block(op: impl FnOnce() + Send + 'static) {
    let h = thread::spawn(op);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !h.is_finished() {
        assert!(
            Instant::now() < deadline,
            "application access blocked on a WP-registered range"
        );
        thread::sleep(Duration::from_millis(5));
    }
    h.join().unwrap();
}

fn minor_faults() -> i64 {
    // SAFETY: getrusage writes one rusage, which `ru` is.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_THREAD counts this thread only.
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) }, 0);
    ru.ru_minflt
}

fn resident(addr: usize, len: usize) -> Vec<bool> {
    let mut v = vec![0u8; len.div_ceil(ps())];
    // SAFETY: `v` has one byte per page of the range, as mincore requires.
    let r = unsafe { libc::mincore(addr as *mut libc::c_void, len, v.as_mut_ptr()) };
    assert_eq!(r, 0);
    v.iter().map(|b| b & 1 == 1).collect()
}

// ---------------------------------------------------------------- populate

#[test]
fn page_size_is_sysconf() {
    let _g = serial();
    // SAFETY: sysconf has no preconditions.
    let sc = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    assert_eq!(page_size(), sc);
    assert_eq!(page_size(), sc, "cached value stays the same");
    assert!(
        odp::sys::populate::populate_supported(),
        "MADV_POPULATE_* needs Linux >= 5.14"
    );
}

#[test]
fn populate_mapped_anonymous() {
    let _g = serial();
    let m = Map::anon(4, Prot::ReadWrite);
    assert_eq!(resident(m.addr, m.len), vec![false; 4]);
    populate(m.addr, 2 * ps(), false).unwrap();
    populate(m.page(2), 2 * ps(), true).unwrap();
    assert_eq!(resident(m.addr, m.len), vec![true; 4]);
    assert_eq!(populate(m.addr, 0, true), Ok(()));
}

#[test]
fn populate_hole_is_hole() {
    let _g = serial();
    let m = Map::anon(3, Prot::ReadWrite);
    munmap(m.page(1), ps());
    assert_eq!(populate(m.addr, 3 * ps(), false), Err(PopulateError::Hole));
    assert_eq!(populate(m.addr, 3 * ps(), true), Err(PopulateError::Hole));
    assert_eq!(
        populate(m.page(1), ps(), true),
        Err(PopulateError::Hole),
        "entirely unmapped"
    );
    populate(m.page(2), ps(), true).unwrap();
}

#[test]
fn populate_read_only_and_prot_none() {
    let _g = serial();
    let ro = Map::anon(2, Prot::Read);
    assert_eq!(
        populate(ro.addr, ro.len, true),
        Err(PopulateError::Permission)
    );
    assert_eq!(populate(ro.addr, ro.len, false), Ok(()));
    let none = Map::anon(2, Prot::None);
    assert_eq!(
        populate(none.addr, none.len, false),
        Err(PopulateError::Permission)
    );
    assert_eq!(
        populate(none.addr, none.len, true),
        Err(PopulateError::Permission)
    );
}

#[test]
fn populate_misaligned_is_not_permission() {
    let _g = serial();
    let m = Map::anon(2, Prot::ReadWrite);
    assert_eq!(
        populate(m.addr + 1, ps(), false),
        Err(PopulateError::Other(libc::EINVAL))
    );
}

#[test]
fn populate_file_beyond_eof() {
    let _g = serial();
    let f = TempFile::new("/tmp", "eof", ps(), true);
    let m = Map::new(3 * ps(), MapOptions::new().shared().file(f.fd(), 0)).unwrap();
    populate(m.addr, ps(), true).unwrap();
    assert_eq!(
        populate(m.page(1), 2 * ps(), false),
        Err(PopulateError::BeyondEof)
    );
    assert_eq!(
        populate(m.addr, 3 * ps(), true),
        Err(PopulateError::BeyondEof)
    );
    let p = Map::new(3 * ps(), MapOptions::new().file(f.fd(), 0)).unwrap();
    assert_eq!(
        populate(p.page(1), ps(), true),
        Err(PopulateError::BeyondEof),
        "private too"
    );
}

/// `populate(write)` on a page that is present but read-only in the page
/// table (a private file page first read) breaks CoW up front: the following
/// application write takes no fault, and the file is untouched.
#[test]
fn populate_write_breaks_cow_of_private_file_page() {
    let _g = serial();
    let f = TempFile::new("/tmp", "cow", 3 * ps(), false);
    let m = Map::new(3 * ps(), MapOptions::new().file(f.fd(), 0)).unwrap();
    populate(m.addr, m.len, false).unwrap();
    assert_eq!(
        read_byte(m.addr),
        0x5a,
        "read-populated page shows the file"
    );
    // Control: the instrument sees the CoW fault of a merely read-populated page.
    let before = minor_faults();
    write_byte(m.page(2), 3);
    assert!(
        minor_faults() - before >= 1,
        "control write should have taken a CoW fault"
    );
    populate(m.addr, 2 * ps(), true).unwrap();
    assert_eq!(
        read_byte(m.page(1)),
        0x5a,
        "write-populate keeps the contents"
    );
    let before = minor_faults();
    write_byte(m.addr, 1);
    write_byte(m.page(1), 2);
    let faults = minor_faults() - before;
    assert_eq!(
        faults, 0,
        "write after populate(write) needed {faults} fault(s)"
    );
    assert_eq!(
        std::fs::read(&f.path).unwrap()[0],
        0x5a,
        "private write must not reach the file"
    );
}

/// Same for an anonymous page shared copy-on-write with a forked child.
#[test]
fn populate_write_breaks_cow_after_fork() {
    let _g = serial();
    let m = Map::anon(1, Prot::ReadWrite);
    write_byte(m.addr, 7);
    let mut pipe = [0i32; 2];
    // SAFETY: `pipe` has room for two descriptors.
    assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0);
    // SAFETY: the child only calls async-signal-safe functions (read, _exit).
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let mut b = 0u8;
        // SAFETY: child: block until the parent closes the pipe, then exit.
        unsafe {
            libc::close(pipe[1]);
            libc::read(pipe[0], (&mut b as *mut u8).cast(), 1);
            libc::_exit(0);
        }
    }
    assert!(pid > 0);
    populate(m.addr, ps(), true).unwrap();
    let before = minor_faults();
    write_byte(m.addr, 8);
    let faults = minor_faults() - before;
    // SAFETY: releasing and reaping our own child.
    unsafe {
        libc::close(pipe[0]);
        libc::close(pipe[1]);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
    assert_eq!(
        faults, 0,
        "write after populate(write) on a fork-shared page faulted"
    );
    assert_eq!(read_byte(m.addr), 8);
}

// ---------------------------------------------------------------- userfaultfd

#[test]
fn event_parse_never_panics() {
    let _g = serial();
    assert_eq!(Event::parse(&[]), None);
    assert_eq!(
        Event::parse(&[abi::UFFD_EVENT_UNMAP; 31]),
        None,
        "short message"
    );
    let mut m = [0u8; 32];
    m[0] = abi::UFFD_EVENT_REMAP;
    m[8..16].copy_from_slice(&0x1000u64.to_ne_bytes());
    m[16..24].copy_from_slice(&0x9000u64.to_ne_bytes());
    m[24..32].copy_from_slice(&0x3000u64.to_ne_bytes());
    assert_eq!(
        Event::parse(&m),
        Some(Event::Remap {
            from: 0x1000,
            to: 0x9000,
            len: 0x3000
        })
    );
    m[0] = abi::UFFD_EVENT_REMOVE;
    assert_eq!(
        Event::parse(&m),
        Some(Event::Remove {
            start: 0x1000,
            end: 0x9000
        })
    );
    m[0] = abi::UFFD_EVENT_UNMAP;
    assert_eq!(
        Event::parse(&m),
        Some(Event::Unmap {
            start: 0x1000,
            end: 0x9000
        })
    );
    for b in [0u8, abi::UFFD_EVENT_PAGEFAULT, abi::UFFD_EVENT_FORK, 0xff] {
        m[0] = b;
        assert_eq!(Event::parse(&m), Some(Event::Other(b)));
    }
}

#[test]
fn uffd_open_and_features() {
    let _g = serial();
    let u = open_uffd();
    eprintln!(
        "userfaultfd open mode: {:?}, features {:#x}",
        u.mode(),
        u.features()
    );
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } == 0 {
        assert_eq!(
            u.mode(),
            OpenMode::UserModeOnly,
            "USER_MODE_ONLY is tried first"
        );
    }
    for f in [
        abi::UFFD_FEATURE_EVENT_UNMAP,
        abi::UFFD_FEATURE_EVENT_REMOVE,
        abi::UFFD_FEATURE_EVENT_REMAP,
        abi::UFFD_FEATURE_WP_ASYNC,
    ] {
        assert_ne!(u.features() & f, 0, "feature {f:#x} not negotiated");
    }
    assert_eq!(
        u.features() & abi::UFFD_FEATURE_EVENT_FORK,
        0,
        "FORK not enabled"
    );
    let mut evs = Vec::new();
    assert_eq!(
        u.read_events(&mut evs).unwrap(),
        0,
        "nothing queued: EAGAIN, not a block"
    );
    // SAFETY: F_GETFL/F_GETFD on our own open descriptor.
    let (fl, fd) = unsafe {
        (
            libc::fcntl(u.as_raw_fd(), libc::F_GETFL),
            libc::fcntl(u.as_raw_fd(), libc::F_GETFD),
        )
    };
    assert_ne!(fl & libc::O_NONBLOCK, 0);
    assert_ne!(fd & libc::FD_CLOEXEC, 0);
}

/// One mapping type of the measurement table.
struct Kind {
    name: &'static str,
    unit: usize,
    make: fn(usize) -> Option<(Map, Option<TempFile>)>,
}

fn kinds() -> Vec<Kind> {
    fn anon(l: usize, opts: MapOptions<'_>) -> Option<(Map, Option<TempFile>)> {
        Some((Map::new(l, opts).ok()?, None))
    }
    fn file_map(
        dir: &str,
        len: usize,
        shared: bool,
        writable: bool,
        prot: Prot,
    ) -> Option<(Map, Option<TempFile>)> {
        let f = TempFile::new(dir, "kind", len, writable);
        let opts = MapOptions::new().prot(prot).file(f.fd(), 0);
        let opts = if shared { opts.shared() } else { opts };
        let m = Map::new(len, opts).unwrap();
        Some((m, Some(f)))
    }
    vec![
        Kind {
            name: "anon private",
            unit: ps(),
            make: |l| anon(l, MapOptions::new()),
        },
        Kind {
            name: "anon private PROT_READ",
            unit: ps(),
            make: |l| anon(l, MapOptions::new().prot(Prot::Read)),
        },
        Kind {
            name: "anon private PROT_NONE",
            unit: ps(),
            make: |l| anon(l, MapOptions::new().prot(Prot::None)),
        },
        Kind {
            name: "anon MAP_SHARED (shmem)",
            unit: ps(),
            make: |l| anon(l, MapOptions::new().shared()),
        },
        Kind {
            name: "memfd MAP_SHARED (shmem)",
            unit: ps(),
            make: |l| {
                // SAFETY: memfd_create with a NUL-terminated name.
                let fd = unsafe { libc::memfd_create(c"odp-sys".as_ptr(), libc::MFD_CLOEXEC) };
                assert!(fd >= 0);
                // SAFETY: a descriptor just created, owned by nobody else.
                let f = std::fs::File::from(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) });
                f.set_len(l as u64).unwrap();
                // The mapping keeps the memfd alive; `f` closes our descriptor.
                Some((
                    Map::new(l, MapOptions::new().shared().file(f.as_fd(), 0)).ok()?,
                    None,
                ))
            },
        },
        Kind {
            name: "/dev/shm file MAP_SHARED",
            unit: ps(),
            make: |l| file_map("/dev/shm", l, true, true, Prot::ReadWrite),
        },
        Kind {
            name: "ext4 file MAP_PRIVATE",
            unit: ps(),
            make: |l| file_map("/tmp", l, false, true, Prot::ReadWrite),
        },
        Kind {
            name: "ext4 file MAP_PRIVATE, O_RDONLY fd",
            unit: ps(),
            make: |l| file_map("/tmp", l, false, false, Prot::ReadWrite),
        },
        Kind {
            name: "ext4 file MAP_SHARED",
            unit: ps(),
            make: |l| file_map("/tmp", l, true, true, Prot::ReadWrite),
        },
        Kind {
            name: "ext4 file MAP_SHARED, O_RDONLY fd",
            unit: ps(),
            make: |l| file_map("/tmp", l, true, false, Prot::Read),
        },
        Kind {
            name: "hugetlb anon MAP_PRIVATE (2 MiB)",
            unit: 2 << 20,
            make: |l| anon(l, MapOptions::new().hugetlb()),
        },
    ]
}

fn describe(r: &Result<(), RegisterError>) -> String {
    match r {
        Ok(()) => "ok".into(),
        Err(RegisterError::Other(e)) => format!("Other({e})"),
        Err(e) => format!("{e:?}"),
    }
}

/// The measurement table of docs/userfaultfd.md, as assertions: for each
/// mapping type, does WP registration succeed, and does `MADV_DONTNEED` of
/// the first unit give REMOVE and `munmap` of the whole give UNMAP?
#[test]
fn uffd_mapping_type_table() {
    let _g = serial();
    let mut rows = Vec::new();
    for k in kinds() {
        let len = 4 * k.unit;
        let Some((m, _file)) = (k.make)(len) else {
            rows.push(format!("{:<36} | mmap failed (not available) |", k.name));
            continue;
        };
        // Touch what can be touched so events concern present pages too.
        let _ = populate(m.addr, len, false);
        let _ = populate(m.addr, len, true);
        let u = open_uffd();
        let reg = u.register_wp(m.addr, len);
        let (a, unit) = (m.addr, k.unit);
        let rc = Arc::new(std::sync::atomic::AtomicI32::new(0));
        let rc2 = rc.clone();
        let remove = events_of(&u, move || {
            rc2.store(madvise(a, unit, libc::MADV_DONTNEED), Ordering::SeqCst)
        });
        let unmap = events_of(&u, move || munmap(a, len));
        m.forget();
        drop(u);
        let dontneed = if rc.load(Ordering::SeqCst) == 0 {
            ""
        } else {
            " (DONTNEED failed)"
        };
        let row = format!(
            "{:<36} | {:<12} | {:?}{dontneed} | {:?}",
            k.name,
            describe(&reg),
            remove,
            unmap
        );
        eprintln!("{row}");
        let (a, len, unit) = (a as u64, len as u64, unit as u64);
        if k.name == "ext4 file MAP_SHARED, O_RDONLY fd" {
            // EPERM: the kernel wants VM_MAYWRITE, i.e. a writable fd.
            assert!(matches!(reg, Err(RegisterError::Unsupported)), "{row}");
            assert_eq!((remove.len(), unmap.len()), (0, 0), "{row}");
        } else {
            assert!(reg.is_ok(), "{row}");
            assert_eq!(
                remove,
                vec![Event::Remove {
                    start: a,
                    end: a + unit
                }],
                "{row}"
            );
            assert_eq!(
                unmap,
                vec![Event::Unmap {
                    start: a,
                    end: a + len
                }],
                "{row}"
            );
        }
        rows.push(row);
    }
    eprintln!("{}", rows.join("\n"));
}

#[test]
fn uffd_register_holes() {
    let _g = serial();
    // Partially mapped: the kernel registers the mapped VMAs and skips the
    // hole; we report Hole, and the mapped parts do deliver events.
    let m = Map::anon(3, Prot::ReadWrite);
    munmap(m.page(1), ps());
    let u = open_uffd();
    assert!(matches!(
        u.register_wp(m.addr, 3 * ps()),
        Err(RegisterError::Hole)
    ));
    let a = m.page(2);
    assert_eq!(
        events_of(&u, move || assert_eq!(
            madvise(a, ps(), libc::MADV_DONTNEED),
            0
        )),
        vec![Event::Remove {
            start: a as u64,
            end: (a + ps()) as u64
        }],
        "mapped part after the hole was registered anyway"
    );
    // A range starting in the hole: also partial (the kernel only needs some
    // VMA to intersect the range).
    assert!(matches!(
        u.register_wp(m.page(1), 2 * ps()),
        Err(RegisterError::Hole)
    ));
    // Memory mapped into the hole afterwards is NOT covered...
    let hole = m.page(1);
    let filled = Map::anon_at(hole, 1);
    assert_eq!(
        events_of(&u, move || assert_eq!(
            madvise(hole, ps(), libc::MADV_DONTNEED),
            0
        )),
        vec![]
    );
    // ...until the range is registered again, which now succeeds in full.
    u.register_wp(m.addr, 3 * ps()).unwrap();
    assert_eq!(
        events_of(&u, move || assert_eq!(
            madvise(hole, ps(), libc::MADV_DONTNEED),
            0
        )),
        vec![Event::Remove {
            start: hole as u64,
            end: (hole + ps()) as u64
        }]
    );
    drop(u);
    filled.forget();

    // Entirely unmapped: EINVAL from the kernel, reported as Hole.
    let gone = Map::anon(2, Prot::ReadWrite);
    let (ga, gl) = (gone.addr, gone.len);
    drop(gone);
    let u = open_uffd();
    assert!(matches!(u.register_wp(ga, gl), Err(RegisterError::Hole)));
    assert!(
        matches!(u.register_wp(ga + 1, gl), Err(RegisterError::Other(_))),
        "misaligned"
    );
}

#[test]
fn uffd_reregister_same_fd_and_ebusy() {
    let _g = serial();
    let m = Map::anon(4, Prot::ReadWrite);
    let u = open_uffd();
    u.register_wp(m.addr, 2 * ps()).unwrap();
    u.register_wp(m.addr, 2 * ps()).unwrap();
    u.register_wp(m.addr, 4 * ps()).unwrap(); // overlaps and extends
    u.register_wp(m.page(1), ps()).unwrap(); // inside
    let other = open_uffd();
    assert!(matches!(
        other.register_wp(m.addr, ps()),
        Err(RegisterError::Busy)
    ));
    assert!(matches!(
        other.register_wp(m.page(3), ps()),
        Err(RegisterError::Busy)
    ));
    // Unregister, then the other descriptor may take it.
    u.unregister(m.addr, 4 * ps()).unwrap();
    u.unregister(m.addr, 4 * ps()).unwrap(); // idempotent
    other.register_wp(m.addr, 4 * ps()).unwrap();
    assert!(matches!(
        u.register_wp(m.addr, ps()),
        Err(RegisterError::Busy)
    ));
    let a = m.addr;
    assert_eq!(
        events_of(&other, move || assert_eq!(
            madvise(a, ps(), libc::MADV_DONTNEED),
            0
        )),
        vec![Event::Remove {
            start: a as u64,
            end: (a + ps()) as u64
        }],
        "events go to the descriptor that owns the range"
    );
    let mut evs = Vec::new();
    assert_eq!(u.read_events(&mut evs).unwrap(), 0);
    drop(other);
    // Closing a descriptor releases its ranges.
    u.register_wp(m.addr, 4 * ps()).unwrap();
}

#[test]
fn uffd_events_munmap_dontneed_free() {
    let _g = serial();
    let m = Map::anon(8, Prot::ReadWrite);
    populate(m.addr, m.len, true).unwrap();
    let u = open_uffd();
    u.register_wp(m.addr, 6 * ps()).unwrap(); // pages 6, 7 stay unregistered
    let (a, p) = (m.addr as u64, ps() as u64);
    let x = m.addr;
    assert_eq!(
        events_of(&u, move || assert_eq!(
            madvise(x + ps(), 2 * ps(), libc::MADV_DONTNEED),
            0
        )),
        vec![Event::Remove {
            start: a + p,
            end: a + 3 * p
        }]
    );
    assert_eq!(
        events_of(&u, move || assert_eq!(
            madvise(x + 3 * ps(), ps(), libc::MADV_FREE),
            0
        )),
        vec![Event::Remove {
            start: a + 3 * p,
            end: a + 4 * p
        }]
    );
    // munmap spanning registered and unregistered memory: the event carries
    // the munmap range itself, unregistered tail included.
    assert_eq!(
        events_of(&u, move || munmap(x + 4 * ps(), 4 * ps())),
        vec![Event::Unmap {
            start: a + 4 * p,
            end: a + 8 * p
        }]
    );
    assert_eq!(
        events_of(&u, move || munmap(x, 4 * ps())),
        vec![Event::Unmap {
            start: a,
            end: a + 4 * p
        }]
    );
    m.forget();
}

#[test]
fn uffd_events_madv_remove_on_shmem() {
    let _g = serial();
    let m = Map::new(4 * ps(), MapOptions::new().shared()).unwrap();
    populate(m.addr, m.len, true).unwrap();
    let u = open_uffd();
    u.register_wp(m.addr, m.len).unwrap();
    let x = m.addr;
    assert_eq!(
        events_of(&u, move || assert_eq!(
            madvise(x, 2 * ps(), libc::MADV_REMOVE),
            0
        )),
        vec![Event::Remove {
            start: x as u64,
            end: (x + 2 * ps()) as u64
        }]
    );
    drop(u);
}

#[test]
fn uffd_events_mremap() {
    let _g = serial();
    let (p, p64) = (ps(), ps() as u64);
    // Move to a fixed destination.
    let m = Map::anon(4, Prot::ReadWrite);
    let dst = Map::anon(4, Prot::None);
    populate(m.addr, m.len, true).unwrap();
    let u = open_uffd();
    u.register_wp(m.addr, m.len).unwrap();
    let (from, to) = (m.addr, dst.addr);
    let evs = events_of(&u, move || {
        // SAFETY: moving our own mapping onto our own reservation.
        let r = unsafe {
            libc::mremap(
                from as *mut _,
                4 * p,
                4 * p,
                libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                to as *mut libc::c_void,
            )
        };
        assert_eq!(r as usize, to);
    });
    // REMAP first, then an UNMAP of the whole old range.
    assert_eq!(
        evs,
        vec![
            Event::Remap {
                from: from as u64,
                to: to as u64,
                len: 4 * p64
            },
            Event::Unmap {
                start: from as u64,
                end: from as u64 + 4 * p64
            },
        ]
    );
    m.forget();
    // The registration moved with the pages.
    assert_eq!(
        events_of(&u, move || assert_eq!(
            madvise(to, p, libc::MADV_DONTNEED),
            0
        )),
        vec![Event::Remove {
            start: to as u64,
            end: (to + p) as u64
        }]
    );
    // Shrink in place.
    let evs = events_of(&u, move || {
        // SAFETY: shrinking our own mapping.
        let r = unsafe { libc::mremap(to as *mut _, 4 * p, 2 * p, 0) };
        assert_eq!(r as usize, to);
    });
    assert_eq!(
        evs,
        vec![Event::Unmap {
            start: (to + 2 * p) as u64,
            end: (to + 4 * p) as u64
        }]
    );
    // Grow in place, into the hole just made: on this thread, as nothing
    // blocks here, because a new thread maps its signal stack (a few
    // pages) first and could take the hole.
    // SAFETY: growing our own mapping in place (no MREMAP_MAYMOVE).
    let r = unsafe { libc::mremap(to as *mut _, 2 * p, 3 * p, 0) };
    assert_eq!(r as usize, to);
    let evs = events_of(&u, || {});
    assert_eq!(evs, vec![], "growing in place sends nothing");
    drop(u);
    // SAFETY-free cleanup: dst is a 4-page range we own (3 pages mapped now).
    drop(dst);
}

#[test]
fn uffd_events_map_fixed_over_and_mprotect() {
    let _g = serial();
    let m = Arc::new(Map::anon(4, Prot::ReadWrite));
    populate(m.addr, m.len, true).unwrap();
    let u = open_uffd();
    u.register_wp(m.addr, m.len).unwrap();
    let (x, p) = (m.addr, ps());
    let over = m.clone();
    let evs = events_of(&u, move || {
        // SAFETY: replacing a page of our own mapping, which nothing refers to.
        unsafe { over.map.replace(p, p, Prot::ReadWrite) }.expect("mmap(MAP_FIXED)");
    });
    assert_eq!(
        evs,
        vec![Event::Unmap {
            start: (x + p) as u64,
            end: (x + 2 * p) as u64
        }]
    );
    let evs = events_of(&u, move || {
        for prot in [
            libc::PROT_READ,
            libc::PROT_NONE,
            libc::PROT_READ | libc::PROT_WRITE,
        ] {
            // SAFETY: changing protection of our own mapping; nothing touches it.
            assert_eq!(unsafe { libc::mprotect(x as *mut _, 4 * p, prot) }, 0);
        }
    });
    assert_eq!(evs, vec![], "mprotect sends no event");
    // The page mapped over is not covered any more; DONTNEED across the three
    // VMAs gives one REMOVE per registered VMA.
    let evs = events_of(&u, move || {
        assert_eq!(madvise(x, 4 * p, libc::MADV_DONTNEED), 0)
    });
    let x = x as u64;
    let p = p as u64;
    assert_eq!(
        evs,
        vec![
            Event::Remove {
                start: x,
                end: x + p
            },
            Event::Remove {
                start: x + 2 * p,
                end: x + 4 * p
            }
        ]
    );
    drop(u);
}

/// The thread doing `munmap` of registered memory blocks until the event is
/// read; closing the descriptor instead releases it (monitor shutdown). Pages
/// never touched are covered like any other.
#[test]
fn uffd_unmap_blocks_until_read_or_close() {
    let _g = serial();
    let m = Map::anon(4, Prot::ReadWrite); // never touched
    let u = open_uffd();
    u.register_wp(m.addr, m.len).unwrap();
    let (x, l) = (m.addr, m.len);
    m.forget();
    let h = thread::spawn(move || munmap(x, 2 * ps()));
    thread::sleep(Duration::from_millis(200));
    assert!(
        !h.is_finished(),
        "munmap returned before its UNMAP event was read"
    );
    let mut pfd = libc::pollfd {
        fd: u.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    let r = unsafe { libc::poll(&mut pfd, 1, 0) };
    assert_eq!(r, 1, "fd readable while an event waits");
    let mut evs = Vec::new();
    u.read_events(&mut evs).unwrap();
    assert_eq!(
        evs,
        vec![Event::Unmap {
            start: x as u64,
            end: (x + 2 * ps()) as u64
        }]
    );
    h.join().unwrap();
    // Now nobody reads: closing the descriptor must release the thread.
    let h = thread::spawn(move || munmap(x + 2 * ps(), l - 2 * ps()));
    thread::sleep(Duration::from_millis(200));
    assert!(!h.is_finished());
    drop(u);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !h.is_finished() {
        assert!(
            Instant::now() < deadline,
            "close did not release the blocked munmap"
        );
        thread::sleep(Duration::from_millis(5));
    }
    h.join().unwrap();
}

/// When the fd becomes readable, a REMOVE's pages are still intact (sent
/// before the zap), while an UNMAP's range is already gone from the address
/// space (sent after); a REMAP's old range is already empty too.
#[test]
fn uffd_event_timing() {
    let _g = serial();
    fn mapped(addr: usize, len: usize) -> bool {
        // SAFETY: MS_ASYNC only validates the range.
        unsafe { libc::msync(addr as *mut libc::c_void, len, libc::MS_ASYNC) == 0 }
    }
    fn wait_readable(u: &Userfaultfd) {
        let mut pfd = libc::pollfd {
            fd: u.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let r = unsafe { libc::poll(&mut pfd, 1, 5000) };
        assert_eq!(r, 1, "no event within 5 s");
    }
    let m = Map::anon(2, Prot::ReadWrite);
    let dst = Map::anon(1, Prot::None);
    write_byte(m.addr, 0x42);
    let u = open_uffd();
    u.register_wp(m.addr, m.len).unwrap();
    let (x, p, d) = (m.addr, ps(), dst.addr);
    let mut evs = Vec::new();

    let h = thread::spawn(move || assert_eq!(madvise(x, p, libc::MADV_DONTNEED), 0));
    wait_readable(&u);
    assert_eq!(
        read_byte(x),
        0x42,
        "REMOVE is queued before the pages are zapped"
    );
    u.read_events(&mut evs).unwrap();
    h.join().unwrap();
    assert_eq!(read_byte(x), 0, "zapped once the event was read");

    let h = thread::spawn(move || {
        // SAFETY: moving our own page onto our own reservation.
        let r = unsafe {
            libc::mremap(
                x as *mut _,
                p,
                p,
                libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                d as *mut libc::c_void,
            )
        };
        assert_eq!(r as usize, d);
    });
    wait_readable(&u);
    assert!(!mapped(x, p), "REMAP is queued after the move");
    while !h.is_finished() {
        u.read_events(&mut evs).unwrap();
        thread::sleep(Duration::from_millis(1));
    }
    h.join().unwrap();

    let h = thread::spawn(move || munmap(x + p, p));
    wait_readable(&u);
    assert!(
        !mapped(x + p, p),
        "UNMAP is queued after the range left the address space"
    );
    u.read_events(&mut evs).unwrap();
    h.join().unwrap();
    m.forget();
    drop(u);
    assert!(
        matches!(
            evs[..],
            [
                Event::Remove { .. },
                Event::Remap { .. },
                Event::Unmap { .. },
                Event::Unmap { .. }
            ]
        ),
        "{evs:?}"
    );
}

/// WP + WP_ASYNC: the application's writes (to present and never-touched
/// pages, anonymous and shmem) never block and produce no event.
#[test]
fn uffd_wp_async_writes_never_block() {
    let _g = serial();
    let anon = Map::anon(64, Prot::ReadWrite);
    let shm = Map::new(64 * ps(), MapOptions::new().shared()).unwrap();
    populate(anon.addr, 32 * ps(), true).unwrap(); // half present, half never touched
    populate(shm.addr, 32 * ps(), true).unwrap();
    let u = open_uffd();
    u.register_wp(anon.addr, anon.len).unwrap();
    u.register_wp(shm.addr, shm.len).unwrap();
    let (a, s) = (anon.addr, shm.addr);
    must_not_block(move || {
        for i in 0..64 {
            write_byte(a + i * ps(), i as u8);
            write_byte(s + i * ps(), i as u8);
        }
    });
    // Reads of never-touched pages, then writes to them, and populate too.
    let f = TempFile::new("/tmp", "wp", 8 * ps(), true);
    let file = Map::new(8 * ps(), MapOptions::new().shared().file(f.fd(), 0)).unwrap();
    u.register_wp(file.addr, file.len).unwrap();
    let fa = file.addr;
    must_not_block(move || {
        for i in 0..8 {
            assert_eq!(read_byte(fa + i * ps()), 0x5a);
            write_byte(fa + i * ps(), 1);
        }
        populate(fa, 8 * ps(), true).unwrap();
    });
    let mut evs = Vec::new();
    assert_eq!(
        u.read_events(&mut evs).unwrap(),
        0,
        "no page-fault events: {evs:?}"
    );
    for i in 0..64 {
        assert_eq!(read_byte(a + i * ps()), i as u8);
    }
    drop(u);
}

/// Re-executes this test binary as uid/gid 65534 with no capabilities:
/// `USER_MODE_ONLY` open, register and events must work there too.
#[test]
fn uffd_unprivileged_user_mode_only() {
    let _g = serial();
    const CHILD: &str = "ODP_SYS_UNPRIVILEGED_CHILD";
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    if std::env::var_os(CHILD).is_some() || uid != 0 {
        assert_ne!(uid, 0);
        let u = open_uffd();
        assert_eq!(u.mode(), OpenMode::UserModeOnly);
        let unpriv =
            std::fs::read_to_string("/proc/sys/vm/unprivileged_userfaultfd").unwrap_or_default();
        if unpriv.trim() == "0" {
            // SAFETY: plain userfaultfd(2); closed again if it unexpectedly works.
            let fd =
                unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | libc::O_NONBLOCK) };
            let err = std::io::Error::last_os_error();
            if fd >= 0 {
                // SAFETY: closing the descriptor just opened.
                unsafe { libc::close(fd as i32) };
            }
            assert_eq!(fd, -1, "plain userfaultfd must be refused unprivileged");
            assert_eq!(err.raw_os_error(), Some(libc::EPERM));
        }
        let m = Map::anon(2, Prot::ReadWrite);
        populate(m.addr, m.len, true).unwrap();
        u.register_wp(m.addr, m.len).unwrap();
        let x = m.addr;
        assert_eq!(
            events_of(&u, move || assert_eq!(
                madvise(x, ps(), libc::MADV_DONTNEED),
                0
            )),
            vec![Event::Remove {
                start: x as u64,
                end: (x + ps()) as u64
            }]
        );
        let l = m.len;
        assert_eq!(
            events_of(&u, move || munmap(x, l)),
            vec![Event::Unmap {
                start: x as u64,
                end: (x + l) as u64
            }]
        );
        m.forget();
        println!("unprivileged child ok: mode {:?}", u.mode());
        return;
    }
    use std::os::unix::process::CommandExt;
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "uffd_unprivileged_user_mode_only",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("unprivileged child ok: mode UserModeOnly"),
        "child output:\n{stdout}"
    );
}
