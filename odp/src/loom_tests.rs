//! loom models (run with `RUSTFLAGS="--cfg loom"`, see README): every
//! interleaving of the notifier's reader protocol, of insert/remove against an
//! invalidation, and of the real `Region` fault/commit loop against an
//! invalidation.
//!
//! The property in each: *once an invalidation has returned, no reader holds a
//! translation made before it* — modelled as a mapping generation that the
//! "application" bumps before invalidating (like `munmap` replacing memory),
//! which a reader samples when it "faults".

use crate::mm::{Mm, MmConfig};
use crate::notifier::{
    Event, Invalidate, InvalidateRange, Invalidation, Notifiers, Refused, SeqSet,
};
use crate::sync::{self, Arc, AtomicU64, AtomicUsize, Mutex, Ordering, RwLock, RwLockReadGuard};
use crate::umem::{Access, AccessError, Counters, Mode, Region, Space};
use loom::thread;

const RANGE: InvalidateRange = InvalidateRange {
    start: 0,
    end: 0x1000,
    event: Event::Unmap,
    blockable: true,
};

/// A device page table of one entry: `Some(gen)` = translation of generation gen.
#[derive(Default)]
struct OnePage {
    lock: Mutex<Option<u64>>,
}

impl Invalidate for OnePage {
    fn invalidate(&self, inv: Invalidation<'_>) -> Result<SeqSet, Refused> {
        let mut g = sync::lock(&self.lock);
        let t = inv.set_seq(&g);
        *g = None;
        Ok(t)
    }
}

#[test]
fn reader_never_keeps_a_translation_older_than_a_finished_invalidation() {
    loom::model(|| {
        let n = Arc::new(Notifiers::new());
        let page = Arc::new(OnePage::default());
        let iv = Arc::new(n.insert(0, 0x1000, page.clone()).unwrap());
        let gen = Arc::new(AtomicU64::new(0));

        let app = {
            let (n, gen) = (n.clone(), gen.clone());
            thread::spawn(move || {
                gen.store(1, Ordering::SeqCst); // the mapping changes...
                n.invalidate(RANGE).unwrap(); // ...then the notifiers are told
            })
        };
        // The device: at most two attempts (loom needs bounded loops).
        for _ in 0..2 {
            let seq = iv.read_begin();
            let seen = gen.load(Ordering::SeqCst); // "populate"
            let mut g = sync::lock(&page.lock);
            if iv.read_retry(&g, seq) {
                continue;
            }
            *g = Some(seen);
            break;
        }
        app.join().unwrap();
        // The invalidation has finished: an entry left over must be current.
        let left = *sync::lock(&page.lock);
        if let Some(seen) = left {
            assert_eq!(
                seen, 1,
                "stale translation survived a finished invalidation"
            );
        }
    });
}

/// Counts callbacks and flags any that runs after `remove` returned.
#[derive(Default)]
struct Watch {
    lock: Mutex<()>,
    removed: AtomicUsize,
    late: AtomicUsize,
}

impl Invalidate for Watch {
    fn invalidate(&self, inv: Invalidation<'_>) -> Result<SeqSet, Refused> {
        let g = sync::lock(&self.lock);
        if self.removed.load(Ordering::SeqCst) == 1 {
            self.late.fetch_add(1, Ordering::SeqCst);
        }
        Ok(inv.set_seq(&g))
    }
}

#[test]
fn no_callback_after_remove_returns_even_during_an_invalidation() {
    loom::model(|| {
        let n = Arc::new(Notifiers::new());
        let w = Arc::new(Watch::default());
        let iv = n.insert(0, 0x1000, w.clone()).unwrap();
        let inv = {
            let n = n.clone();
            thread::spawn(move || n.invalidate(RANGE).unwrap())
        };
        iv.remove();
        w.removed.store(1, Ordering::SeqCst);
        inv.join().unwrap();
        assert_eq!(w.late.load(Ordering::SeqCst), 0);
        assert!(n.is_empty());
        assert_eq!(n.seq() % 2, 0);
    });
}

#[test]
fn insert_racing_an_invalidation_is_applied_and_read_begin_settles() {
    loom::model(|| {
        let n = Arc::new(Notifiers::new());
        let anchor = n.insert(0, 0x1000, Arc::new(OnePage::default())).unwrap();
        let inv = {
            let n = n.clone();
            thread::spawn(move || n.invalidate(RANGE).unwrap())
        };
        let page = Arc::new(OnePage::default());
        let iv = n.insert(0x800, 0x1000, page.clone()).unwrap();
        let _ = iv.read_begin(); // must not hang, whatever the interleaving
        inv.join().unwrap();
        assert_eq!(n.len(), 2, "deferred insert applied");
        assert_eq!(n.seq() % 2, 0);
        drop(anchor);
    });
}

/// The operating system, modelled: a mapping generation, a fault that
/// records which generation it saw, and a coverage registration that
/// records which generation it covered.
struct ModelSpace {
    barrier: RwLock<()>,
    gen: AtomicU64,
    seen: AtomicU64,
    covered: AtomicU64,
}

impl ModelSpace {
    fn new() -> ModelSpace {
        ModelSpace {
            barrier: RwLock::new(()),
            gen: AtomicU64::new(0),
            seen: AtomicU64::new(0),
            covered: AtomicU64::new(0),
        }
    }
}

impl Space for ModelSpace {
    type Usable = ();
    fn get(&self) -> Option<()> {
        Some(())
    }
    fn barrier(&self) -> RwLockReadGuard<'_, ()> {
        sync::read(&self.barrier)
    }
    fn cover_span(&self, _: &(), _: (u64, u64)) -> bool {
        self.covered
            .store(self.gen.load(Ordering::SeqCst), Ordering::SeqCst);
        true
    }
    fn fault(&self, _: &(), _: u64, _: u64, _: bool) -> Result<(), AccessError> {
        self.seen
            .store(self.gen.load(Ordering::SeqCst), Ordering::SeqCst);
        Ok(())
    }
    fn snapshot(&self, _: &(), _: u64, _: u64, _: &mut dyn FnMut(u64)) -> Result<(), AccessError> {
        unreachable!()
    }
}

/// The model both region tests share: a region of `len` bytes (page 0
/// faulted first if `prefault`); the application unmaps page 0 (a new
/// generation) while the device faults the page at `at`. With the guard
/// held — so no invalidation is mid-callback on the region — `check` runs
/// if the unmap has finished. `ahead`: the fault is the device's read-ahead
/// (`Region::read_ahead`, on the prefetch worker) instead of an access.
fn unmap_races_a_fault(
    len: u64,
    prefault: bool,
    at: u64,
    ahead: bool,
    check: impl Fn(&ModelSpace),
) {
    let mm = Mm::new(MmConfig { userfaultfd: false });
    let region = Region::new(&mm, 0, len, Arc::new(Counters::default()), None, true).unwrap();
    let space = Arc::new(ModelSpace::new());
    if prefault {
        drop(
            region
                .map(&*space, 0, 8, Access::Write, Mode::Fault)
                .unwrap(),
        );
    }
    let done = Arc::new(AtomicU64::new(0));
    let app = {
        let (mm2, space, done) = (mm.grab(), space.clone(), done.clone());
        thread::spawn(move || {
            space.gen.store(1, Ordering::SeqCst);
            mm2.invalidate(0, 0x1000, Event::Unmap, true).unwrap();
            done.store(1, Ordering::SeqCst);
        })
    };
    let guard = if ahead {
        region.read_ahead(&*space, at, 0x1000, Access::Write)
    } else {
        region.map(&*space, at, 8, Access::Write, Mode::Fault)
    };
    match guard {
        Ok(_guard) => {
            if done.load(Ordering::SeqCst) == 1 {
                check(&space);
            }
        }
        Err(e) => panic!("map failed: {e:?}"),
    }
    app.join().unwrap();
}

#[test]
fn region_fault_commit_never_trusts_pages_faulted_before_a_finished_invalidation() {
    loom::model(|| {
        unmap_races_a_fault(0x1000, false, 0, false, |space| {
            // If the unmap has finished, our pages postdate it.
            assert_eq!(
                space.seen.load(Ordering::SeqCst),
                1,
                "guard over pages faulted before a finished invalidation"
            );
        })
    });
}

/// Faults skip re-registering a region covered since its last invalidation
/// (`Pages::covered`). The model: page 0 of a two-page region is faulted
/// (the region covered), then an unmap (a new generation) races a fault of
/// page 1, which may read "covered" before the unmap and start after it. A
/// guard taken after that unmap finished must rest on a registration of the
/// new generation — never on the first one's coverage.
#[test]
fn region_fault_never_skips_coverage_lost_to_a_finished_invalidation() {
    loom::model(|| {
        unmap_races_a_fault(0x2000, true, 0x1000, false, |space| {
            assert_eq!(
                space.covered.load(Ordering::SeqCst),
                1,
                "guard over a region not covered since the unmap"
            );
        })
    });
}

/// The device's read-ahead commits through the same loop: a chunk faulted
/// on the worker while the application unmaps it is never trusted once the
/// unmap has finished (a second page, faulted and covered before, so the
/// chunk also takes the "covered since" shortcut that must be re-checked).
#[test]
fn read_ahead_never_trusts_pages_faulted_before_a_finished_invalidation() {
    loom::model(|| {
        unmap_races_a_fault(0x2000, true, 0x1000, true, |space| {
            assert_eq!(space.seen.load(Ordering::SeqCst), 1);
            assert_eq!(space.covered.load(Ordering::SeqCst), 1);
        })
    });
}
