//! Unit tests for every semantic of the notifier core (issue: point 1).

use super::*;
use std::sync::atomic::AtomicUsize;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// A subscriber that records what it was told, can refuse non-blockable
/// invalidations, and can be made to park inside its callback.
#[derive(Default)]
struct Sub {
    user_lock: Mutex<Vec<(u64, u64, Event)>>,
    refuse_nonblocking: bool,
    calls: AtomicUsize,
    /// When set, the callback signals `entered` and waits on `release`.
    park: Mutex<Option<(mpsc::Sender<()>, mpsc::Receiver<()>)>>,
}

impl Invalidate for Sub {
    fn invalidate(&self, inv: Invalidation<'_>) -> Result<SeqSet, Refused> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let inv = if self.refuse_nonblocking {
            match inv.try_refuse() {
                Ok(r) => return Err(r),
                Err(inv) => inv,
            }
        } else {
            inv
        };
        if let Some((entered, release)) = self.park.lock().unwrap().take() {
            entered.send(()).unwrap();
            release.recv().unwrap();
        }
        let mut g = self.user_lock.lock().unwrap();
        let (s, e) = inv.clamped();
        let ev = inv.range().event;
        let tok = inv.set_seq(&g);
        g.push((s, e, ev));
        Ok(tok)
    }
}

fn range(start: u64, end: u64) -> InvalidateRange {
    InvalidateRange {
        start,
        end,
        event: Event::Explicit,
        blockable: true,
    }
}

fn setup() -> (Arc<Notifiers>, Arc<Sub>) {
    (Arc::new(Notifiers::new()), Arc::new(Sub::default()))
}

#[test]
fn seq_is_even_when_idle_and_odd_during_an_overlapping_invalidation() {
    let (n, sub) = setup();
    assert_eq!(n.seq() % 2, 0);
    let _iv = n.insert(0x1000, 0x1000, sub.clone()).unwrap();
    {
        let _a = n.begin_invalidate(range(0x1800, 0x1900)).unwrap();
        assert_eq!(n.seq() % 2, 1, "odd while an overlapping invalidation runs");
    }
    assert_eq!(n.seq() % 2, 0, "even again after it ends");
    // A non-overlapping invalidation leaves seq even ("partially excluded").
    let before = n.seq();
    {
        let _a = n.begin_invalidate(range(0x9000, 0xa000)).unwrap();
        assert_eq!(n.seq(), before);
    }
    assert_eq!(n.seq(), before);
    assert_eq!(
        *sub.user_lock.lock().unwrap(),
        vec![(0x1800, 0x1900, Event::Explicit)]
    );
}

#[test]
fn callbacks_see_only_overlaps_clamped_to_their_interval() {
    let (n, a) = setup();
    let b = Arc::new(Sub::default());
    let c = Arc::new(Sub::default());
    let _ia = n.insert(0x1000, 0x1000, a.clone()).unwrap();
    let _ib = n.insert(0x1000, 0x1000, b.clone()).unwrap(); // same range as a
    let _ic = n.insert(0x3000, 0x1000, c.clone()).unwrap();
    n.invalidate(range(0x1fff, 0x3001)).unwrap();
    assert_eq!(
        *a.user_lock.lock().unwrap(),
        vec![(0x1fff, 0x2000, Event::Explicit)]
    );
    assert_eq!(
        *b.user_lock.lock().unwrap(),
        vec![(0x1fff, 0x2000, Event::Explicit)]
    );
    assert_eq!(
        *c.user_lock.lock().unwrap(),
        vec![(0x3000, 0x3001, Event::Explicit)]
    );
    // Half-open: touching the end does not overlap.
    n.invalidate(range(0x2000, 0x3000)).unwrap();
    assert_eq!(a.calls.load(Ordering::SeqCst), 1);
    assert_eq!(c.calls.load(Ordering::SeqCst), 1);
}

#[test]
fn read_retry_detects_an_invalidation_that_started_and_ended_in_between() {
    let (n, sub) = setup();
    let iv = n.insert(0, 0x1000, sub.clone()).unwrap();
    let seq = iv.read_begin();
    assert!(!iv.check_retry(seq));
    n.invalidate(range(0, 0x1000)).unwrap();
    let g = sub.user_lock.lock().unwrap();
    assert!(
        iv.read_retry(&g, seq),
        "a complete invalidation in between must force a retry"
    );
    drop(g);
    let seq2 = iv.read_begin();
    let g = sub.user_lock.lock().unwrap();
    assert!(!iv.read_retry(&g, seq2));
}

#[test]
fn a_new_interval_seq_is_odd_and_not_current() {
    let (n, sub) = setup();
    let iv = n.insert(0, 0x1000, sub).unwrap();
    let s = iv.read_begin(); // must not block
    assert_eq!(s % 2, 1);
    assert_ne!(s, n.seq());
}

#[test]
fn read_begin_blocks_while_its_interval_is_being_invalidated() {
    let (n, sub) = setup();
    let iv = Arc::new(n.insert(0, 0x1000, sub).unwrap());
    let active = n.begin_invalidate(range(0, 0x10)).unwrap();
    let (tx, rx) = mpsc::channel();
    let iv2 = iv.clone();
    let t = thread::spawn(move || {
        let s = iv2.read_begin();
        tx.send(s).unwrap();
    });
    assert!(
        rx.recv_timeout(Duration::from_millis(200)).is_err(),
        "read_begin returned during the invalidation"
    );
    let odd = n.seq();
    drop(active);
    let s = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("read_begin woke after the end");
    assert_eq!(s, odd, "returns the interval's seq, no loop");
    t.join().unwrap();
}

#[test]
fn read_begin_does_not_block_for_an_invalidation_of_another_interval() {
    let (n, sub) = setup();
    let other = Arc::new(Sub::default());
    let iv = n.insert(0, 0x1000, sub).unwrap();
    let _o = n.insert(0x5000, 0x1000, other).unwrap();
    let _active = n.begin_invalidate(range(0x5000, 0x6000)).unwrap();
    assert_eq!(n.seq() % 2, 1);
    let s = iv.read_begin(); // would hang the test if it blocked
    assert_ne!(s, n.seq());
}

#[test]
fn insert_during_a_fully_excluding_invalidation_is_deferred_and_read_begin_waits() {
    let (n, a) = setup();
    let _ia = n.insert(0, 0x1000, a).unwrap();
    let active = n.begin_invalidate(range(0, 0x1000)).unwrap();
    assert_eq!(n.seq() % 2, 1);
    let b = Arc::new(Sub::default());
    let ib = Arc::new(n.insert(0x8000, 0x1000, b.clone()).unwrap());
    assert!(
        !n.contains(ib.interval.as_ref().unwrap()),
        "deferred: not in the tree yet"
    );
    assert_eq!(n.len(), 1);
    // read_begin on the deferred node blocks until the invalidation ends.
    let (tx, rx) = mpsc::channel();
    let ib2 = ib.clone();
    let t = thread::spawn(move || tx.send(ib2.read_begin()).unwrap());
    assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
    drop(active);
    rx.recv_timeout(Duration::from_secs(10))
        .expect("woken at the end");
    t.join().unwrap();
    assert!(
        n.contains(ib.interval.as_ref().unwrap()),
        "applied from the deferred list"
    );
    n.invalidate(range(0x8000, 0x8001)).unwrap();
    assert_eq!(b.calls.load(Ordering::SeqCst), 1);
}

#[test]
fn insert_during_a_partially_excluding_invalidation_goes_in_now_and_makes_seq_odd() {
    let (n, _) = setup();
    let active = n.begin_invalidate(range(0, 0x1000)).unwrap(); // overlaps nothing
    assert_eq!(n.seq() % 2, 0);
    let b = Arc::new(Sub::default());
    let ib = n.insert(0x8000, 0x1000, b).unwrap();
    assert!(n.contains(ib.interval.as_ref().unwrap()));
    assert_eq!(
        n.seq() % 2,
        1,
        "the running invalidation now covers the new interval"
    );
    drop(active);
    assert_eq!(n.seq() % 2, 0);
    let _ = ib.read_begin();
}

#[test]
fn remove_of_a_deferred_insert_just_drops_it() {
    let (n, a) = setup();
    let _ia = n.insert(0, 0x1000, a).unwrap();
    let active = n.begin_invalidate(range(0, 0x1000)).unwrap();
    let b = Arc::new(Sub::default());
    let ib = n.insert(0x8000, 0x1000, b.clone()).unwrap();
    ib.remove(); // must not wait: the node never reached the tree
    drop(active);
    assert_eq!(n.len(), 1);
    n.invalidate(range(0x8000, 0x9000)).unwrap();
    assert_eq!(b.calls.load(Ordering::SeqCst), 0);
}

#[test]
fn remove_waits_for_a_running_callback_and_none_runs_after_it_returns() {
    let (n, sub) = setup();
    let (entered_tx, entered_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel();
    *sub.park.lock().unwrap() = Some((entered_tx, release_rx));
    let iv = n.insert(0, 0x1000, sub.clone()).unwrap();
    let n2 = n.clone();
    let inval = thread::spawn(move || n2.invalidate(range(0, 0x1000)).unwrap());
    entered_rx.recv().unwrap(); // the callback is running
    let (done_tx, done_rx) = mpsc::channel();
    let remover = thread::spawn(move || {
        iv.remove();
        done_tx.send(()).unwrap();
    });
    assert!(
        done_rx.recv_timeout(Duration::from_millis(200)).is_err(),
        "remove returned while its callback ran"
    );
    release_tx.send(()).unwrap();
    done_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("remove returns after the invalidation ends");
    remover.join().unwrap();
    inval.join().unwrap();
    assert_eq!(n.len(), 0);
    let calls = sub.calls.load(Ordering::SeqCst);
    n.invalidate(range(0, 0x1000)).unwrap();
    assert_eq!(
        sub.calls.load(Ordering::SeqCst),
        calls,
        "no callback after remove returned"
    );
}

#[test]
fn refused_nonblocking_invalidation_undoes_its_accounting() {
    let n = Arc::new(Notifiers::new());
    let ok = Arc::new(Sub::default());
    let refuser = Arc::new(Sub {
        refuse_nonblocking: true,
        ..Sub::default()
    });
    let iv_ok = n.insert(0, 0x1000, ok.clone()).unwrap();
    let _iv_r = n.insert(0, 0x1000, refuser.clone()).unwrap();
    let seq_ok = iv_ok.read_begin();
    let before = n.seq();
    let r = n.invalidate(InvalidateRange {
        start: 0,
        end: 0x1000,
        event: Event::Explicit,
        blockable: false,
    });
    assert_eq!(r, Err(Again));
    assert_eq!(refuser.calls.load(Ordering::SeqCst), 1);
    assert_eq!(n.seq() % 2, 0, "no invalidation left active");
    assert!(n.seq() > before);
    // The tree is not stuck in "fully excluded": inserts go straight in.
    let iv3 = n.insert(0x4000, 0x1000, Arc::new(Sub::default())).unwrap();
    assert!(n.contains(iv3.interval.as_ref().unwrap()));
    // A subscriber called before the refusal did set its seq: its reader retries.
    if ok.calls.load(Ordering::SeqCst) == 1 {
        let g = ok.user_lock.lock().unwrap();
        assert!(iv_ok.read_retry(&g, seq_ok));
    }
    // The same invalidation, blockable, cannot be refused.
    n.invalidate(range(0, 0x1000)).unwrap();
    assert_eq!(refuser.user_lock.lock().unwrap().len(), 1);
}

#[test]
fn release_invalidates_everything_with_release_and_refuses_later_inserts() {
    let (n, a) = setup();
    let b = Arc::new(Sub::default());
    let ia = n.insert(0x1000, 0x1000, a.clone()).unwrap();
    let _ib = n.insert(u64::MAX - 0x2000, 0x1000, b.clone()).unwrap();
    let seq = ia.read_begin();
    n.release();
    assert_eq!(
        *a.user_lock.lock().unwrap(),
        vec![(0x1000, 0x2000, Event::Release)]
    );
    assert_eq!(b.user_lock.lock().unwrap()[0].2, Event::Release);
    let g = a.user_lock.lock().unwrap();
    assert!(ia.read_retry(&g, seq));
    drop(g);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        n.insert(0, 0x1000, Arc::new(Sub::default()))
    }));
    assert!(r.is_err(), "insert after release must be refused");
}

#[test]
fn insert_rejects_empty_and_overflowing_ranges() {
    let (n, a) = setup();
    assert_eq!(
        n.insert(0x1000, 0, a.clone()).err(),
        Some(InsertError::BadRange)
    );
    assert_eq!(
        n.insert(u64::MAX - 10, 11, a.clone()).err(),
        Some(InsertError::BadRange)
    );
    assert!(n.insert(u64::MAX - 10, 10, a).is_ok());
}

#[test]
fn concurrent_insert_remove_against_long_invalidations_never_livelocks() {
    let n = Arc::new(Notifiers::new());
    let anchor = Arc::new(Sub::default());
    let _anchor = n.insert(0, 1 << 20, anchor).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut threads = Vec::new();
    for t in 0..3u64 {
        let n = n.clone();
        let stop = stop.clone();
        threads.push(thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let s = Arc::new(Sub::default());
                let iv = n.insert((t * 7 + i % 13) << 12, 0x3000, s).unwrap();
                let _ = iv.read_begin();
                drop(iv);
                i += 1;
            }
            i
        }));
    }
    let inv = {
        let n = n.clone();
        thread::spawn(move || {
            for _ in 0..300 {
                let _a = n.begin_invalidate(range(0, 1 << 20)).unwrap();
                thread::yield_now();
            }
        })
    };
    inv.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        assert!(t.join().unwrap() > 0, "every inserter made progress");
    }
    assert_eq!(n.len(), 1, "every temporary interval was removed");
    assert_eq!(n.seq() % 2, 0);
}
