//! One test per bug pattern the kernel's ODP code hit over its history,
//! named `pattern_NN_*` after the rule the kernel had to learn.
//!
//! Mutation check for pattern 9: `cargo test -p odp --test bug_patterns
//! --features mutant-no-set-seq` must FAIL patterns 1 and 9 (the README's test
//! command runs it and expects the failure).

mod common;
use common::*;
use odp::notifier::{Event, Invalidate, InvalidateRange, Invalidation, Refused, SeqSet};
use odp::umem::{Counters, Region, Space};
use odp::{
    Access, AccessError, Advice, ImplicitUmem, Memory, Mm, MmConfig, MmGet, MmGrab, Mode, Pinned,
    Umem,
};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLockReadGuard};
use std::time::Duration;

fn mm() -> MmGet {
    Mm::new(MmConfig::default())
}

/// Decides a fault's result from the call number and the real result.
type Hook<'a> = Box<dyn Fn(u32, Result<(), AccessError>) -> Result<(), AccessError> + Sync + 'a>;

/// The real address space, with a hook run after each fault (no lock held),
/// deciding that fault's result: injects invalidations or errors between
/// fault and commit.
struct Inject<'a> {
    real: &'a MmGrab,
    calls: AtomicU32,
    hook: Hook<'a>,
}

impl Space for Inject<'_> {
    type Usable = MmGet;
    fn get(&self) -> Option<MmGet> {
        self.real.get()
    }
    fn barrier(&self) -> RwLockReadGuard<'_, ()> {
        self.real.barrier()
    }
    fn cover_span(&self, mm: &MmGet, span: (u64, u64)) -> bool {
        self.real.cover_span(mm, span)
    }
    fn fault(&self, mm: &MmGet, start: u64, end: u64, write: bool) -> Result<(), AccessError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        let r = self.real.fault(mm, start, end, write);
        (self.hook)(n, r)
    }
    fn snapshot(
        &self,
        mm: &MmGet,
        start: u64,
        end: u64,
        resident: &mut dyn FnMut(u64),
    ) -> Result<(), AccessError> {
        self.real.snapshot(mm, start, end, resident)
    }
}

fn region(mm: &MmGet, m: &Mapping) -> Region {
    Region::new(
        mm,
        m.addr,
        m.addr + m.len as u64,
        Arc::new(Counters::default()),
        None,
        true,
    )
    .unwrap()
}

/// Shared by patterns 1 and 9: a complete invalidation between fault and commit.
fn invalidation_between_fault_and_commit_forces_a_retry() {
    let mm = mm();
    let grab = mm.grab();
    let m = map_anon(4 * PAGE);
    let r = region(&mm, &m);
    let (s, e) = (r.start(), r.end());
    let inj = Inject {
        real: &grab,
        calls: AtomicU32::new(0),
        hook: Box::new(|n, res| {
            if n == 0 {
                grab.invalidate(s, e, Event::Unmap, true).unwrap();
            }
            res
        }),
    };
    let g = r.map(&inj, m.addr, 8, Access::Write, Mode::Fault).unwrap();
    drop(g);
    assert_eq!(
        inj.calls.load(Ordering::SeqCst),
        2,
        "the commit must notice the invalidation and fault again"
    );
}

#[test]
fn pattern_01_sequence_not_boolean_flag_an_invalidation_between_fault_and_commit_is_seen() {
    invalidation_between_fault_and_commit_forces_a_retry();
}

#[test]
fn pattern_02_no_callback_after_remove_under_dereg_vs_invalidation_races() {
    // Notifier level: a subscriber flags any callback after its removal.
    #[derive(Default)]
    struct Watch {
        lock: Mutex<()>,
        removed: AtomicBool,
        late: AtomicUsize,
    }
    impl Invalidate for Watch {
        fn invalidate(&self, inv: Invalidation<'_>) -> Result<SeqSet, Refused> {
            let g = self.lock.lock().unwrap();
            if self.removed.load(Ordering::SeqCst) {
                self.late.fetch_add(1, Ordering::SeqCst);
            }
            std::thread::yield_now();
            Ok(inv.set_seq(&g))
        }
    }
    let mm = mm();
    let stop = Arc::new(AtomicBool::new(false));
    let inv = {
        let (g, stop) = (mm.grab(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                g.invalidate(0, 1 << 30, Event::Explicit, true).unwrap();
            }
        })
    };
    for i in 0..2000u64 {
        let w = Arc::new(Watch::default());
        let iv = mm
            .notifiers()
            .insert((i % 64) << 12, 0x2000, w.clone())
            .unwrap();
        iv.remove();
        w.removed.store(true, Ordering::SeqCst);
        std::thread::yield_now();
        assert_eq!(
            w.late.load(Ordering::SeqCst),
            0,
            "callback ran after remove returned"
        );
    }
    // MR level: deregistration racing the monitor's invalidations of real munmaps.
    let m = map_anon(64 * PAGE);
    for i in 0..200 {
        let u = Umem::new(&mm, m.addr, m.len as u64, true).unwrap();
        u.write(m.addr + (i % 64) as u64 * PAGE as u64, &[1; 64])
            .unwrap();
        let off = (i % 64) * PAGE;
        std::thread::scope(|s| {
            let t = s.spawn(|| m.remap_fixed(off, PAGE));
            drop(u);
            t.join().unwrap();
        });
    }
    stop.store(true, Ordering::Relaxed);
    inv.join().unwrap();
}

#[test]
fn pattern_03_mmget_vs_mmgrab_faults_and_prefetch_racing_teardown_end_in_gone() {
    let mm = mm();
    let grab = mm.grab();
    let m = Arc::new(map_anon(256 * PAGE));
    let u = Arc::new(Umem::new(&mm, m.addr, m.len as u64, true).unwrap());
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (u, m) = (u.clone(), m.clone());
            std::thread::spawn(move || {
                let mut i = 0u64;
                loop {
                    let va = m.addr + ((i * 7 + t) % 256) * PAGE as u64;
                    let r = if t % 2 == 0 {
                        u.write(va, &[1; 64])
                    } else {
                        u.prefetch(va, PAGE as u64, Advice::PrefetchWrite, true)
                    };
                    match r {
                        Ok(()) => {}
                        Err(AccessError::Gone) => return i,
                        Err(e) => panic!("unexpected {e:?}"),
                    }
                    if i % 64 == 0 {
                        m.dontneed(0, 256 * PAGE);
                    }
                    i += 1;
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(50));
    drop(mm); // the last "get": release races the faults
    for t in threads {
        within_secs(20, "fault racing teardown", move || t.join().unwrap());
    }
    assert!(grab.is_released());
    assert!(grab.get().is_none());
}

#[test]
fn pattern_03_last_reference_dropped_inside_a_fault_does_not_deadlock() {
    let done = within_secs(20, "last MmGet dropped under the umem lock", || {
        let mm = mm();
        let grab = mm.grab();
        let m = map_anon(4 * PAGE);
        let u = Umem::new(&mm, m.addr, m.len as u64, true).unwrap();
        let mut g = u.map(m.addr, 8, Access::Write, Mode::Fault).unwrap();
        // The umem lock is held: releasing synchronously here would invalidate,
        // which needs this very lock (the kernel's mmput deadlock).
        drop(mm);
        g.write(m.addr, &[5; 8]).unwrap();
        drop(g);
        grab.wait_released();
        assert_eq!(u.write(m.addr, &[1]), Err(AccessError::Gone));
        assert_eq!(m.byte(0), 5);
        true
    });
    assert!(done);
}

fn panic_message(r: std::thread::Result<()>) -> String {
    let e = r.expect_err("expected the lock rule to fire");
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

#[test]
fn pattern_04_no_wait_for_invalidation_while_holding_a_umem_lock() {
    let mm = mm();
    let m = map_anon(8 * PAGE);
    let a = Umem::new(&mm, m.addr, 4 * PAGE as u64, true).unwrap();
    let b = Umem::new(&mm, m.addr + 4 * PAGE as u64, 4 * PAGE as u64, true).unwrap();
    // Nested fault: read_begin may wait for an invalidation needing lock `a`.
    let msg = panic_message(std::panic::catch_unwind(std::panic::AssertUnwindSafe(
        || {
            let _g = a.map(m.addr, 8, Access::Write, Mode::Fault).unwrap();
            let _h = b.map(m.addr + 4 * PAGE as u64, 8, Access::Write, Mode::Fault);
        },
    )));
    assert!(msg.contains("odp lock rule violated"), "{msg}");
    // Deregistering (notifier remove waits) while holding a umem lock.
    let c = Umem::new(&mm, m.addr, PAGE as u64, true).unwrap();
    let msg = panic_message(std::panic::catch_unwind(std::panic::AssertUnwindSafe(
        || {
            let _g = a.map(m.addr, 8, Access::Write, Mode::Fault).unwrap();
            drop(c);
        },
    )));
    assert!(msg.contains("odp lock rule violated"), "{msg}");
    // The locks were released by unwinding: everything still works.
    a.write(m.addr, &[1]).unwrap();
    mm.invalidate(m.addr, m.addr + 8 * PAGE as u64, Event::Explicit, false)
        .unwrap();
}

#[test]
fn pattern_05_every_error_and_retry_path_releases_the_lock() {
    let mm = mm();
    let grab = mm.grab();
    let m = map_anon(4 * PAGE);
    let r = region(&mm, &m);
    let (s, e) = (r.start(), r.end());
    // Faults succeed but the re-check fails three times, then the fault fails.
    let inj = Inject {
        real: &grab,
        calls: AtomicU32::new(0),
        hook: Box::new(|n, res| {
            if n < 3 {
                grab.invalidate(s, e, Event::Unmap, true).unwrap();
                res
            } else {
                Err(AccessError::Unmapped)
            }
        }),
    };
    assert_eq!(
        r.map(&inj, m.addr, 8, Access::Write, Mode::Fault).err(),
        Some(AccessError::Unmapped)
    );
    assert_eq!(inj.calls.load(Ordering::SeqCst), 4);
    // A non-blockable invalidation is refused only if the lock is held.
    assert_eq!(
        grab.invalidate(s, e, Event::Explicit, false),
        Ok(()),
        "lock left held on the error path"
    );
    let g = r.map(&grab, m.addr, 8, Access::Write, Mode::Fault).unwrap();
    assert!(
        grab.invalidate(s, e, Event::Explicit, false).is_err(),
        "the guard does hold it"
    );
    drop(g);
    assert_eq!(grab.invalidate(s, e, Event::Explicit, false), Ok(()));
}

#[test]
fn pattern_06_read_only_memory_read_converges_and_write_fails_cleanly() {
    let mm = mm();
    let m = map_anon(4 * PAGE);
    m.set_byte(0, 42);
    m.protect(0, 4 * PAGE, odp::Prot::Read);
    let u = Arc::new(Umem::new(&mm, m.addr, m.len as u64, true).unwrap());
    let i = Arc::new(ImplicitUmem::new(&mm, true));
    let addr = m.addr;
    let (u2, i2) = (u.clone(), i.clone());
    within_secs(20, "access to PROT_READ memory", move || {
        let mut b = [0u8; 1];
        u2.read(addr, &mut b).unwrap();
        assert_eq!(b[0], 42);
        assert_eq!(u2.write(addr, &[1]), Err(AccessError::Permission));
        i2.read(addr, &mut b).unwrap();
        assert_eq!(i2.write(addr, &[1]), Err(AccessError::Permission));
        assert_eq!(u2.fetch_and_add(addr, 1), Err(AccessError::Permission));
    });
    assert_eq!(m.byte(0), 42);
}

#[test]
fn pattern_07_no_overflow_in_range_checks_near_u64_max() {
    let mm = mm();
    let m = map_anon(4 * PAGE);
    let max = u64::MAX;
    assert_eq!(
        Umem::new(&mm, max - 10, 100, true).err(),
        Some(AccessError::OutOfBounds)
    );
    assert_eq!(
        Umem::new(&mm, max - 10, 11, true).err(),
        Some(AccessError::OutOfBounds),
        "aligning the end up overflows"
    );
    assert_eq!(
        Umem::new(&mm, m.addr, 0, true).err(),
        Some(AccessError::OutOfBounds)
    );
    let u = Umem::new(&mm, m.addr, m.len as u64, true).unwrap();
    let huge = vec![0u8; 8];
    for va in [
        max,
        max - 3,
        max - 4096,
        m.addr + m.len as u64 - 7,
        0,
        m.addr - 1,
    ] {
        assert_eq!(
            u.write(va, &huge),
            Err(AccessError::OutOfBounds),
            "va {va:#x}"
        );
    }
    assert_eq!(
        u.map(m.addr + 8, max - 4, Access::Read, Mode::Fault).err(),
        Some(AccessError::OutOfBounds)
    );
    assert_eq!(
        u.prefetch(m.addr + 8, max, Advice::Prefetch, true),
        Err(AccessError::OutOfBounds)
    );
    let mut g = u.map(m.addr, 16, Access::Write, Mode::Fault).unwrap();
    assert_eq!(
        g.write(m.addr + 8, &[0u8; 9]),
        Err(AccessError::OutOfBounds),
        "the guard checks its own range"
    );
    assert_eq!(g.write(max - 2, &[0u8; 4]), Err(AccessError::OutOfBounds));
    drop(g);
    let i = ImplicitUmem::new(&mm, true);
    assert_eq!(i.write(max - 3, &huge), Err(AccessError::OutOfBounds));
    assert_eq!(
        i.prefetch(max - 3, 8, Advice::Prefetch, true),
        Err(AccessError::OutOfBounds)
    );
    assert!(
        i.write(1 << 62, &huge).is_err(),
        "non-canonical address: an error, no crash"
    );
    assert_eq!(
        Pinned::new(&mm, max - 3, 8, true).err(),
        Some(AccessError::OutOfBounds)
    );
}

#[test]
fn pattern_08_pinned_and_odp_memory_through_every_access_path() {
    let mm = mm();
    let maps: Vec<Mapping> = (0..3).map(|_| map_anon(4 * PAGE)).collect();
    let kinds = [
        Memory::Pinned(Pinned::new(&mm, maps[0].addr, 4 * PAGE as u64, true).unwrap()),
        Memory::Odp(Umem::new(&mm, maps[1].addr, 4 * PAGE as u64, true).unwrap()),
        Memory::Implicit(ImplicitUmem::new(&mm, true)),
    ];
    for (mem, m) in kinds.iter().zip(&maps) {
        let data: Vec<u8> = (0..3 * PAGE + 5).map(|i| i as u8).collect();
        mem.write(m.addr + 3, &data).unwrap();
        let mut back = vec![0u8; data.len()];
        mem.read(m.addr + 3, &mut back).unwrap();
        assert_eq!(back, data);
        assert_eq!(
            mem.fetch_and_add(m.addr + 8 * 100, 3).unwrap(),
            u64::from_le_bytes(data[797..805].try_into().unwrap())
        );
        let old = mem.compare_and_swap(m.addr + 8 * 100, 0, 0).unwrap();
        assert_eq!(
            mem.compare_and_swap(m.addr + 8 * 100, old, 77).unwrap(),
            old
        );
        assert_eq!(mem.fetch_and_add(m.addr + 8 * 100, 0).unwrap(), 77);
        assert_eq!(
            mem.fetch_and_add(m.addr + 3, 0),
            Err(AccessError::Misaligned)
        );
        // The application unmaps the memory behind every kind: no crash.
        // ODP: errors. Pinned: orphaned pages, as on hardware (the write
        // completes to pages nobody sees; reads zero; see tests/pinned.rs).
        m.munmap();
        if let Memory::Pinned(_) = mem {
            assert_eq!(mem.write(m.addr, &[1; 8]), Ok(()));
            let mut b = [9; 8];
            assert_eq!(mem.read(m.addr, &mut b), Ok(()));
            assert_eq!(b, [0; 8]);
            assert_eq!(mem.fetch_and_add(m.addr, 1), Ok(0));
            assert_eq!(mem.counters().orphan_accesses, 3);
            continue;
        }
        assert!(mem.write(m.addr, &[1; 8]).is_err());
        assert!(mem.read(m.addr, &mut [0; 8]).is_err());
        assert!(mem.fetch_and_add(m.addr, 1).is_err());
    }
}

#[test]
fn pattern_09_set_seq_is_what_makes_read_retry_work() {
    // With `--features mutant-no-set-seq` this fails: the commit trusts pages
    // faulted before a complete invalidation.
    invalidation_between_fault_and_commit_forces_a_retry();
}

#[test]
fn pattern_10_insert_and_remove_during_long_invalidations() {
    let mm = mm();
    let m = map_anon(64 * PAGE);
    let (s, e) = (m.addr, m.addr + m.len as u64);
    let active = mm.notifiers().begin_invalidate(InvalidateRange {
        start: s,
        end: e,
        event: Event::Explicit,
        blockable: true,
    });
    // An umem registered now is deferred; its first fault waits for the end.
    let anchor = Umem::new(&mm, s, PAGE as u64, true).unwrap();
    drop(active);
    let active = mm
        .notifiers()
        .begin_invalidate(InvalidateRange {
            start: s,
            end: e,
            event: Event::Explicit,
            blockable: true,
        })
        .unwrap();
    let fresh = Arc::new(Umem::new(&mm, s, m.len as u64, true).unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    let f2 = fresh.clone();
    let t = std::thread::spawn(move || tx.send(f2.write(s, &[1; 8])).unwrap());
    assert!(
        rx.recv_timeout(Duration::from_millis(200)).is_err(),
        "read_begin on a deferred node must block"
    );
    drop(active);
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), Ok(()));
    t.join().unwrap();
    drop(anchor);
    // Churn: register/deregister/fault against back-to-back long invalidations.
    let stop = Arc::new(AtomicBool::new(false));
    let inv = {
        let (g, stop) = (mm.grab(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let _a = g.notifiers().begin_invalidate(InvalidateRange {
                    start: s,
                    end: e,
                    event: Event::Explicit,
                    blockable: true,
                });
                std::thread::sleep(Duration::from_micros(200));
                n += 1;
            }
            n
        })
    };
    let workers: Vec<_> = (0..3u64)
        .map(|w| {
            let mm = mm.clone();
            std::thread::spawn(move || {
                for i in 0..300u64 {
                    let off = ((w * 17 + i) % 60) * PAGE as u64;
                    let u = Umem::new(&mm, s + off, 4 * PAGE as u64, true).unwrap();
                    u.write(s + off, &[w as u8; 16]).unwrap();
                }
            })
        })
        .collect();
    for w in workers {
        within_secs(60, "umem churn against long invalidations", move || {
            w.join().unwrap()
        });
    }
    stop.store(true, Ordering::Relaxed);
    assert!(inv.join().unwrap() > 0);
    assert_eq!(mm.notifiers().len(), 1, "only `fresh` is left registered");
    assert_eq!(mm.notifiers().seq() % 2, 0);
}

#[test]
fn pattern_11_refused_nonblocking_invalidation_undoes_its_accounting() {
    let mm = mm();
    let m = map_anon(4 * PAGE);
    let u = Arc::new(Umem::new(&mm, m.addr, m.len as u64, true).unwrap());
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let u2 = u.clone();
    let addr = m.addr;
    let holder = std::thread::spawn(move || {
        let _g = u2.map(addr, 8, Access::Write, Mode::Fault).unwrap();
        locked_tx.send(()).unwrap();
        release_rx.recv().unwrap();
    });
    locked_rx.recv().unwrap();
    let (s, e) = (m.addr, m.addr + m.len as u64);
    assert!(
        mm.invalidate(s, e, Event::Explicit, false).is_err(),
        "lock held: refused"
    );
    assert_eq!(mm.notifiers().seq() % 2, 0, "no invalidation left active");
    let before = mm.notifiers().len();
    let other = Umem::new(&mm, s, PAGE as u64, true).unwrap();
    assert_eq!(
        mm.notifiers().len(),
        before + 1,
        "not stuck in 'invalidating': inserts go straight in"
    );
    release_tx.send(()).unwrap();
    holder.join().unwrap();
    mm.invalidate(s, e, Event::Explicit, true).unwrap();
    assert_eq!(u.region().mapped_pages(), 0);
    drop(other);
}
