//! The device's locks, each with its place in one order, and debug-build
//! assertions of that order (odp's `lockdep` does the same for its locks).
//!
//! The table — each lock, what it guards, who takes it, what may not be
//! held across what — is in docs/ARCHITECTURE.md ("Locks"). The rule: a
//! thread takes locks only in increasing [`Level`], never two of one level;
//! the link's own locks (inside `transport`) are leaves below all of these.
//!
//! Every lock ignores poisoning: each guards state that is consistent at
//! every unlock point, and a thread that panicked (a test's, an
//! application's callback) must not wedge the device.
#![forbid(unsafe_code)]

use std::ops::{Deref, DerefMut};
use std::sync::{Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

/// A lock's place in the order: a thread holding a lock of one level takes
/// only locks of higher levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Level {
    Xrcd,
    Receiver,
    Arming,
    McastGroups,
    QpTable,
    Qp,
    XrcSrqs,
    Doorbells,
    Flight,
    MrTable,
    Mw,
    MrValid,
    Srq,
    Cq,
    Timers,
    Channel,
    Events,
}

/// Lock a plain mutex whether or not a holder panicked (see the module
/// comment). For locks outside the order: the link's, the publisher's.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Wait on `cv` with a plain mutex's guard, whether or not a holder
/// panicked.
pub(crate) fn wait<'a, T>(cv: &Condvar, g: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    cv.wait(g).unwrap_or_else(|p| p.into_inner())
}

/// Wait on `cv` with a plain mutex's guard (at most `timeout`), whether or
/// not a holder panicked.
pub(crate) fn wait_timeout<'a, T>(
    cv: &Condvar,
    g: MutexGuard<'a, T>,
    timeout: Duration,
) -> MutexGuard<'a, T> {
    cv.wait_timeout(g, timeout)
        .unwrap_or_else(|p| p.into_inner())
        .0
}

#[cfg(debug_assertions)]
mod held {
    use super::Level;
    use std::cell::RefCell;

    thread_local! {
        static HELD: RefCell<Vec<Level>> = const { RefCell::new(Vec::new()) };
    }

    /// Proof, in debug builds, that this thread recorded taking a lock of
    /// `Level`; dropping it records the release.
    pub(crate) struct Held(Level);

    impl Held {
        pub(crate) fn take(level: Level) -> Held {
            HELD.with(|h| {
                let mut h = h.borrow_mut();
                if let Some(top) = h.iter().max() {
                    assert!(
                        level > *top,
                        "lock order: taking {level:?} while holding {:?} (see soft-rdma's sync.rs)",
                        *h
                    );
                }
                h.push(level);
            });
            Held(level)
        }
    }

    impl Drop for Held {
        fn drop(&mut self) {
            HELD.with(|h| {
                let mut h = h.borrow_mut();
                if let Some(i) = h.iter().rposition(|l| *l == self.0) {
                    h.remove(i);
                }
            });
        }
    }
}

#[cfg(not(debug_assertions))]
mod held {
    use super::Level;

    pub(crate) struct Held;

    impl Held {
        #[inline(always)]
        pub(crate) fn take(_: Level) -> Held {
            Held
        }
    }
}

use held::Held;

/// A mutex with a place in the lock order.
pub(crate) struct OrderedMutex<T> {
    level: Level,
    inner: Mutex<T>,
}

/// A held [`OrderedMutex`].
pub(crate) struct Guard<'a, T> {
    // Released before the order is told (field order).
    guard: MutexGuard<'a, T>,
    _held: Held,
}

impl<T> OrderedMutex<T> {
    pub(crate) const fn new(level: Level, value: T) -> OrderedMutex<T> {
        OrderedMutex {
            level,
            inner: Mutex::new(value),
        }
    }

    pub(crate) fn lock(&self) -> Guard<'_, T> {
        let held = Held::take(self.level);
        Guard {
            guard: lock(&self.inner),
            _held: held,
        }
    }

    /// The value, through exclusive access (no lock taken: nothing to order).
    pub(crate) fn get_mut(&mut self) -> &mut T {
        self.inner.get_mut().unwrap_or_else(|p| p.into_inner())
    }

    /// The lock if nobody holds it now.
    pub(crate) fn try_lock(&self) -> Option<Guard<'_, T>> {
        let guard = match self.inner.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        Some(Guard {
            guard,
            _held: Held::take(self.level),
        })
    }
}

impl<'a, T> Guard<'a, T> {
    /// Wait on `cv` (at most `timeout`), releasing the lock meanwhile.
    pub(crate) fn wait(self, cv: &Condvar, timeout: Option<Duration>) -> Guard<'a, T> {
        let Guard { guard, _held } = self;
        let guard = match timeout {
            Some(t) => {
                cv.wait_timeout(guard, t)
                    .unwrap_or_else(|p| p.into_inner())
                    .0
            }
            None => cv.wait(guard).unwrap_or_else(|p| p.into_inner()),
        };
        Guard { guard, _held }
    }
}

impl<T> Deref for Guard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T> DerefMut for Guard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

/// A reader-writer lock with a place in the lock order.
pub(crate) struct OrderedRwLock<T> {
    level: Level,
    inner: RwLock<T>,
}

/// A shared hold of an [`OrderedRwLock`].
pub(crate) struct ReadGuard<'a, T> {
    guard: RwLockReadGuard<'a, T>,
    _held: Held,
}

/// An exclusive hold of an [`OrderedRwLock`].
pub(crate) struct WriteGuard<'a, T> {
    guard: RwLockWriteGuard<'a, T>,
    _held: Held,
}

impl<T> OrderedRwLock<T> {
    pub(crate) const fn new(level: Level, value: T) -> OrderedRwLock<T> {
        OrderedRwLock {
            level,
            inner: RwLock::new(value),
        }
    }

    pub(crate) fn read(&self) -> ReadGuard<'_, T> {
        let held = Held::take(self.level);
        ReadGuard {
            guard: self.inner.read().unwrap_or_else(|p| p.into_inner()),
            _held: held,
        }
    }

    pub(crate) fn write(&self) -> WriteGuard<'_, T> {
        let held = Held::take(self.level);
        WriteGuard {
            guard: self.inner.write().unwrap_or_else(|p| p.into_inner()),
            _held: held,
        }
    }
}

impl<T> Deref for ReadGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T> Deref for WriteGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T> DerefMut for WriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

#[cfg(all(test, debug_assertions))]
mod tests {
    use super::*;

    #[test]
    fn locks_taken_in_order_are_allowed_and_released() {
        let qp = OrderedMutex::new(Level::Qp, 0);
        let cq = OrderedMutex::new(Level::Cq, 0);
        for _ in 0..2 {
            let _a = qp.lock();
            let _b = cq.lock();
        }
        // Released in any order: the record follows.
        let a = qp.lock();
        let b = cq.lock();
        drop(a);
        drop(b);
        let _a = qp.lock();
    }

    #[test]
    #[should_panic(expected = "lock order: taking Qp while holding [Cq]")]
    fn a_lock_below_one_held_is_refused() {
        let qp = OrderedMutex::new(Level::Qp, 0);
        let cq = OrderedMutex::new(Level::Cq, 0);
        let _b = cq.lock();
        let _a = qp.lock();
    }

    #[test]
    #[should_panic(expected = "lock order: taking Qp while holding [Qp]")]
    fn two_locks_of_one_level_are_refused() {
        let a = OrderedMutex::new(Level::Qp, 0);
        let b = OrderedMutex::new(Level::Qp, 0);
        let _a = a.lock();
        let _b = b.lock();
    }

    #[test]
    fn a_wait_keeps_the_record() {
        let heap = OrderedMutex::new(Level::Timers, 0);
        let cv = Condvar::new();
        let g = heap.lock().wait(&cv, Some(Duration::from_millis(1)));
        drop(g);
        let _again = heap.lock();
    }
}
