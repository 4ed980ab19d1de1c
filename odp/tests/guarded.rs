//! Guarded access against real mappings: copies, atomics, faults from
//! unmapped/protected/truncated memory, concurrent unmapping, and the
//! chaining of faults that are not ours.

use odp::guarded::{self, GuardedFault};
use odp::Prot;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

// Every test maps and unmaps, one at a time (`serial`): a page one test
// unmaps must not be handed to a concurrent test's mmap (a write expected to
// fault would then corrupt it).
use test_support::serial::serial;

// The guarded API is `unsafe` because a pointer into Rust-owned memory could
// corrupt it. Every pointer these tests pass is either inside a test mapping
// (never Rust-owned) or deliberately invalid (unmapped, NULL, non-canonical):
// that is the invariant behind the four wrappers, stated once here.

fn copy_out(dst: *mut u8, src: &[u8]) -> Result<(), GuardedFault> {
    // SAFETY: see above — `dst` is test-mapping or invalid memory, never Rust's.
    unsafe { guarded::copy_out(dst, src) }
}

fn copy_in(dst: &mut [u8], src: *const u8) -> Result<(), GuardedFault> {
    // SAFETY: see above — `src` is test-mapping or invalid memory and does not alias `dst`.
    unsafe { guarded::copy_in(dst, src) }
}

fn fetch_and_add(addr: *mut u64, add: u64) -> Result<u64, GuardedFault> {
    // SAFETY: see above.
    unsafe { guarded::fetch_and_add(addr, add) }
}

fn compare_and_swap(addr: *mut u64, expect: u64, new: u64) -> Result<u64, GuardedFault> {
    // SAFETY: see above.
    unsafe { guarded::compare_and_swap(addr, expect, new) }
}

fn page() -> usize {
    // SAFETY: sysconf takes no pointers.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

/// An anonymous private read-write mapping (`odp::Mapping`), unmapped on
/// drop. Placed far below where the kernel puts mappings of its own choosing
/// (it allocates top-down, 1 GiB apart from each other here), so a hole a
/// test punches stays free — no thread stack or other test's memory lands in
/// it — which is what `odp::Mapping::unmap` asks of its callers.
struct Mapping(odp::Mapping);

impl Mapping {
    fn new(len: usize) -> Mapping {
        use std::sync::atomic::AtomicUsize;
        static NEXT: AtomicUsize = AtomicUsize::new(0x1000_0000_0000);
        assert!(len <= 1 << 30);
        loop {
            let at = NEXT.fetch_add(1 << 30, Ordering::Relaxed);
            match odp::MapOptions::new().at(at).map(len) {
                Ok(m) => return Mapping(m),
                Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EEXIST), "mmap: {e}"),
            }
        }
    }
    fn len(&self) -> usize {
        self.0.len()
    }
    fn at(&self, off: usize) -> *mut u8 {
        self.0.as_ptr().wrapping_add(off)
    }
    fn addr(&self, off: usize) -> usize {
        self.at(off) as usize
    }
    fn protect(&self, off: usize, len: usize, prot: Prot) {
        // SAFETY: inside this test's own mapping; no reference into it is
        // live (`bytes` slices are dropped before the next call).
        unsafe { self.0.protect(off, len, prot) }.unwrap();
    }
    fn unmap(&self, off: usize, len: usize) {
        // SAFETY: punches a hole in this test's own mapping, where nothing
        // refers to and nothing else will map (see the type's docs).
        unsafe { self.0.unmap(off, len) }.unwrap();
    }
    /// Only while the range is readable.
    fn bytes(&self, off: usize, len: usize) -> &[u8] {
        assert!(off + len <= self.len());
        // SAFETY: in bounds (asserted); the caller keeps the range readable.
        unsafe { std::slice::from_raw_parts(self.at(off), len) }
    }
    /// Only while the range is writable.
    fn fill(&self, off: usize, len: usize, byte: u8) {
        assert!(off + len <= self.len());
        // SAFETY: in bounds (asserted); the caller keeps the range writable.
        unsafe { std::ptr::write_bytes(self.at(off), byte, len) }
    }
    /// Only while the range is writable.
    fn write(&self, off: usize, data: &[u8]) {
        assert!(off + data.len() <= self.len());
        // SAFETY: in bounds (asserted), writable (caller), and `data` is a
        // Rust buffer that cannot overlap the mapping.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.at(off), data.len()) }
    }
    /// The native-endian u64 at `off` (the caller keeps it readable).
    fn u64_at(&self, off: usize) -> u64 {
        u64::from_ne_bytes(self.bytes(off, 8).try_into().unwrap())
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

fn fault(addr: usize) -> Result<(), GuardedFault> {
    Err(GuardedFault::Fault { addr })
}

#[test]
fn round_trip_many_sizes_and_misalignments() {
    let _g = serial();
    const CANARY: u8 = 0xA5;
    for len in [0, 1, 7, 8, 9, 15, 63, 64, 65, 4096, 4097, (1 << 20) + 3] {
        let map = Mapping::new(len + 3 * page());
        for (map_off, buf_off) in [(0, 0), (1, 3), (7, 0), (page() - 1, 5), (13, 1)] {
            map.fill(0, map.len(), CANARY);
            let data = pattern(len, map_off as u8);
            let mut src = vec![0u8; len + 16];
            src[buf_off..buf_off + len].copy_from_slice(&data);
            copy_out(map.at(map_off), &src[buf_off..buf_off + len]).unwrap();
            assert_eq!(
                map.bytes(map_off, len),
                &data[..],
                "copy_out len {len} off {map_off}"
            );
            assert!(
                map.bytes(0, map_off).iter().all(|&b| b == CANARY),
                "before, len {len}"
            );
            let after = map_off + len;
            assert!(
                map.bytes(after, map.len() - after)
                    .iter()
                    .all(|&b| b == CANARY),
                "after"
            );

            let mut dst = vec![CANARY; len + 16];
            copy_in(&mut dst[buf_off..buf_off + len], map.at(map_off)).unwrap();
            assert_eq!(&dst[buf_off..buf_off + len], &data[..], "copy_in len {len}");
            assert!(dst[..buf_off].iter().all(|&b| b == CANARY));
            assert!(dst[buf_off + len..].iter().all(|&b| b == CANARY));
        }
    }
}

#[test]
fn zero_length_copies_touch_nothing() {
    let _g = serial();
    let map = Mapping::new(page());
    map.protect(0, page(), Prot::None);
    assert_eq!(copy_out(map.at(0), &[]), Ok(()));
    assert_eq!(copy_in(&mut [], map.at(0)), Ok(()));
}

#[test]
fn copy_out_to_read_only_faults_and_leaves_page_unchanged() {
    let _g = serial();
    let p = page();
    let map = Mapping::new(2 * p);
    let before = pattern(p, 7);
    map.write(p, &before);
    map.protect(p, p, Prot::Read);
    for (off, len) in [
        (p + 100, 200),
        (p, 1),
        (p + 8, 8),
        (p + 3, 5000 - 3 - p % 5000),
    ] {
        let len = len.min(2 * p - off);
        let r = copy_out(map.at(off), &vec![0xEE; len]);
        assert_eq!(r, fault(map.addr(off)), "off {off} len {len}");
        assert_eq!(map.bytes(p, p), &before[..]);
    }
    // Straddling writable -> read-only: faults at the first read-only byte,
    // having written everything before it.
    for (start, len) in [(p - 8, 16), (p - 3, 9), (p - 100, 4096), (0, 2 * p)] {
        map.fill(0, p, 0);
        let r = copy_out(map.at(start), &vec![0xEE; len]);
        assert_eq!(r, fault(map.addr(p)), "straddle start {start} len {len}");
        assert!(map.bytes(start, p - start).iter().all(|&b| b == 0xEE));
        assert_eq!(map.bytes(p, p), &before[..]);
    }
}

#[test]
fn copy_in_from_prot_none_faults() {
    let _g = serial();
    let p = page();
    let map = Mapping::new(2 * p);
    map.protect(p, p, Prot::None);
    let mut buf = vec![0u8; 300];
    assert_eq!(copy_in(&mut buf, map.at(p + 10)), fault(map.addr(p + 10)));
    let mut big = vec![0u8; p];
    assert_eq!(copy_in(&mut big, map.at(p / 2)), fault(map.addr(p)));
}

#[test]
fn unmapped_faults_at_first_unmapped_byte() {
    let _g = serial();
    let p = page();
    let map = Mapping::new(3 * p);
    map.unmap(p, p);
    let mut buf = vec![0u8; 64];
    assert_eq!(copy_in(&mut buf, map.at(p + 1)), fault(map.addr(p + 1)));
    assert_eq!(copy_out(map.at(p), &buf), fault(map.addr(p)));
    // Mapped -> unmapped, through every copy path (qword loop, rep movsb).
    for (start, len) in [
        (p - 1, 2),
        (p - 8, 16),
        (p - 5, 60),
        (p - 64, 128),
        (p / 2, p),
        (0, 2 * p),
    ] {
        let src = pattern(len, 3);
        let r = copy_out(map.at(start), &src);
        assert_eq!(r, fault(map.addr(p)), "copy_out start {start} len {len}");
        assert_eq!(map.bytes(start, p - start), &src[..p - start]);
        let mut dst = vec![0u8; len];
        let r = copy_in(&mut dst, map.at(start));
        assert_eq!(r, fault(map.addr(p)), "copy_in start {start} len {len}");
        assert_eq!(&dst[..p - start], &src[..p - start]);
    }
}

#[test]
fn null_and_non_canonical_addresses_fault() {
    let _g = serial();
    let mut buf = [0u8; 16];
    assert_eq!(copy_in(&mut buf, std::ptr::null()), fault(0));
    let nc = 0x8000_0000_0000_0000usize;
    let ptr = std::ptr::without_provenance_mut::<u8>(nc);
    assert_eq!(copy_in(&mut buf, ptr), fault(nc));
    assert_eq!(copy_out(ptr, &[1u8; 4096]), fault(nc));
    assert_eq!(
        fetch_and_add(ptr.cast(), 1),
        Err(GuardedFault::Fault { addr: nc })
    );
}

#[test]
fn sigbus_past_end_of_file_faults() {
    let _g = serial();
    let p = page();
    // SAFETY: memfd_create with a NUL-terminated name; no other pointers.
    let fd = unsafe { libc::memfd_create(c"odp-guarded".as_ptr(), 0) };
    assert!(fd >= 0);
    // SAFETY: a descriptor just created, owned by nobody else.
    let file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    file.set_len(2 * p as u64).unwrap();
    let map = odp::MapOptions::new()
        .shared()
        .file(file.as_fd(), 0)
        .map(2 * p)
        .unwrap();
    let ptr = map.as_ptr();
    // Shrinking makes the second page SIGBUS on access.
    file.set_len(p as u64).unwrap();
    let base = ptr as usize;
    let mut buf = vec![0u8; 2 * p];
    assert_eq!(copy_in(&mut buf, ptr.cast()), fault(base + p));
    assert_eq!(
        copy_out(ptr.cast::<u8>().wrapping_add(p + 8), &buf[..8]),
        fault(base + p + 8)
    );
    let word = ptr.cast::<u8>().wrapping_add(p + 64).cast::<u64>();
    assert_eq!(
        compare_and_swap(word, 0, 1),
        Err(GuardedFault::Fault {
            addr: base + p + 64
        })
    );
}

#[test]
fn atomics_compute_and_store() {
    let _g = serial();
    let map = Mapping::new(page());
    let word = map.at(64).cast::<u64>();
    map.write(64, &40u64.to_ne_bytes());
    assert_eq!(fetch_and_add(word, 2), Ok(40));
    assert_eq!(map.u64_at(64), 42);
    assert_eq!(fetch_and_add(word, u64::MAX), Ok(42)); // wraps: -1
    assert_eq!(map.u64_at(64), 41);
    assert_eq!(compare_and_swap(word, 41, 7), Ok(41));
    assert_eq!(map.u64_at(64), 7);
    assert_eq!(compare_and_swap(word, 41, 9), Ok(7)); // mismatch: no store
    assert_eq!(map.u64_at(64), 7);
    // Neighbours untouched.
    assert!(map
        .bytes(0, 64)
        .iter()
        .chain(map.bytes(72, 64))
        .all(|&b| b == 0));
}

#[test]
fn atomics_reject_misalignment_without_touching_memory() {
    let _g = serial();
    let map = Mapping::new(page());
    for off in 1..8 {
        let word = map.at(off).cast::<u64>();
        assert_eq!(fetch_and_add(word, 1), Err(GuardedFault::Misaligned));
        assert_eq!(compare_and_swap(word, 0, 1), Err(GuardedFault::Misaligned));
    }
    assert!(map.bytes(0, 32).iter().all(|&b| b == 0));
    // Misaligned wins over unmapped: memory is not touched at all.
    map.protect(0, page(), Prot::None);
    assert_eq!(
        fetch_and_add(map.at(3).cast(), 1),
        Err(GuardedFault::Misaligned)
    );
}

#[test]
fn atomics_fault_on_read_only_and_unmapped() {
    let _g = serial();
    let p = page();
    let map = Mapping::new(2 * p);
    map.write(8, &5u64.to_ne_bytes());
    map.protect(0, p, Prot::Read);
    map.unmap(p, p);
    let ro = map.at(8).cast::<u64>();
    let gone = map.at(p + 16).cast::<u64>();
    let f = |w: *mut u64| Err(GuardedFault::Fault { addr: w as usize });
    assert_eq!(fetch_and_add(ro, 1), f(ro));
    assert_eq!(compare_and_swap(ro, 5, 6), f(ro));
    assert_eq!(compare_and_swap(ro, 99, 6), f(ro)); // even on mismatch
    assert_eq!(map.u64_at(8), 5);
    assert_eq!(fetch_and_add(gone, 1), f(gone));
    assert_eq!(compare_and_swap(gone, 0, 1), f(gone));
}

// ---- Chaining: run this binary as a child that crashes on purpose. ----

const CHILD_ENV: &str = "ODP_GUARDED_CHILD";

/// Not a test of its own: the body of the child processes below. In a normal
/// run the variable is unset and it does nothing.
#[test]
fn child_entry() {
    let Ok(what) = std::env::var(CHILD_ENV) else {
        return;
    };
    // Install the handler through a real guarded fault, and prove it works.
    let map = Mapping::new(page());
    map.protect(0, page(), Prot::None);
    assert_eq!(copy_in(&mut [0u8; 8], map.at(0)), fault(map.addr(0)));
    println!("guarded-installed");
    match what.as_str() {
        "segv" => {
            // A raw write to (nearly) null, outside any guarded routine.
            let ptr = std::ptr::without_provenance_mut::<u8>(16);
            // SAFETY: none — this write is meant to crash the child process.
            unsafe { ptr.write_volatile(1) };
        }
        "overflow" => {
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(|| recurse(0))
                .unwrap()
                .join()
                .unwrap();
        }
        "race" => race(),
        other => panic!("unknown child {other}"),
    }
    println!("child-survived");
}

/// In a child process because the test harness's other threads map memory
/// (e.g. each new thread's signal stack), and one of those mappings could land
/// in the hole the racer punches, to be scribbled on by the copier.
#[test]
fn copies_survive_concurrent_munmap_and_remap() {
    let out = run_child("race");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "status {:?}\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("race-done"), "{stdout}");
    eprintln!(
        "{}",
        stdout
            .lines()
            .find(|l| l.starts_with("race:"))
            .unwrap_or("")
    );
}
/// Runs in a child process (see `copies_survive_concurrent_munmap_and_remap`).
fn race() {
    let len = 16 * page();
    let map = Mapping::new(len);
    let base = map.addr(0);
    let stop = AtomicBool::new(false);
    // The copier's thread start-up maps memory (its signal stack, its malloc
    // arena): that must be done before the first hole is punched.
    let started = std::sync::Barrier::new(2);
    let (oks, faults, remaps) = std::thread::scope(|s| {
        let copier = s.spawn(|| {
            let src = pattern(len, 1);
            started.wait();
            let (mut oks, mut faults) = (0u64, 0u64);
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                i = i.wrapping_add(1);
                let off = (i * 4099) % len;
                let n = [1, 8, 100, 4096, len][i % 5].min(len - off);
                match copy_out((base + off) as *mut u8, &src[..n]) {
                    Ok(()) => oks += 1,
                    Err(GuardedFault::Fault { addr }) => {
                        assert!(
                            (base + off..base + off + n).contains(&addr),
                            "addr {addr:#x}"
                        );
                        faults += 1;
                    }
                    Err(e) => panic!("{e:?}"),
                }
            }
            (oks, faults)
        });
        // Stop the copier even if an assertion below panics (else: a hang).
        struct StopOnDrop<'a>(&'a AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let _stop = StopOnDrop(&stop);
        started.wait();
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut remaps = 0u64;
        while Instant::now() < deadline {
            // SAFETY: the racing mapping is this test's; the copier only reaches
            // it through the guarded API, which tolerates the hole, and the
            // hole is where nothing else maps (see `Mapping`).
            unsafe { map.0.unmap(0, len) }.unwrap();
            std::thread::yield_now();
            // NOREPLACE: never clobber a mapping that raced into the hole.
            if let Err(e) = map.0.fill_hole(0, len, Prot::ReadWrite) {
                panic!("remap failed: {e}");
            }
            remaps += 1;
        }
        drop(_stop);
        let (oks, faults) = copier.join().unwrap();
        (oks, faults, remaps)
    });
    println!("race: {oks} ok, {faults} faults, {remaps} remaps");
    assert!(
        oks > 0 && faults > 0,
        "{oks} ok, {faults} faults: the race was not exercised"
    );
    println!("race-done");
}

#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    let frame = std::hint::black_box([depth as u8; 1024]);
    recurse(depth + 1) + u64::from(frame[0])
}

/// Run `child_entry` in a child process, killed if it hangs (a broken chain
/// would re-fault forever).
fn run_child(what: &str) -> std::process::Output {
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, what)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let (done, watch) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if watch.recv_timeout(Duration::from_secs(60)).is_err() {
            // SAFETY: kill takes no pointers; `pid` is our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    });
    let out = child.wait_with_output().unwrap();
    drop(done);
    watchdog.join().unwrap();
    assert_ne!(
        out.status.signal(),
        Some(libc::SIGKILL),
        "child {what} hung"
    );
    out
}

#[test]
fn genuine_segfault_still_kills_the_process() {
    let out = run_child("segv");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("guarded-installed"),
        "child did not get there: {stdout}"
    );
    assert!(!stdout.contains("child-survived"));
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGSEGV),
        "status {:?}",
        out.status
    );
}

#[test]
fn std_stack_overflow_report_still_works() {
    let out = run_child("overflow");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("guarded-installed"),
        "child did not get there: {stdout}"
    );
    assert!(
        stderr.contains("has overflowed its stack"),
        "stderr: {stderr}"
    );
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGABRT),
        "status {:?}",
        out.status
    );
}
