//! A tiny lockdep: which odp locks the current thread holds, so the rules in
//! ARCHITECTURE.md are assertions rather than comments.
//!
//! The rule it guards (kernel bug pattern 4, "reclaim recursion", and pattern 3,
//! the deadlock on the last `mmput`): a thread holding a umem lock (inside a
//! [`crate::UmemGuard`]) must never wait for an invalidation to finish —
//! `read_begin`, notifier `remove`, address-space release — because the
//! invalidation needs that very lock. The counter is per thread, so reading it
//! needs no synchronisation.

#[cfg(not(loom))]
mod imp {
    use std::cell::Cell;

    thread_local! {
        static UMEM_LOCKS: Cell<u32> = const { Cell::new(0) };
    }

    /// Proof-of-accounting for one held umem lock; dropping it un-counts.
    #[derive(Debug)]
    pub(crate) struct Held(());

    impl Held {
        pub(crate) fn umem_lock() -> Held {
            UMEM_LOCKS.with(|c| c.set(c.get() + 1));
            Held(())
        }
    }

    impl Drop for Held {
        fn drop(&mut self) {
            UMEM_LOCKS.with(|c| c.set(c.get() - 1));
        }
    }

    pub(crate) fn umem_locks_held() -> u32 {
        UMEM_LOCKS.with(|c| c.get())
    }
}

#[cfg(loom)]
mod imp {
    #[derive(Debug)]
    pub(crate) struct Held(());
    impl Held {
        pub(crate) fn umem_lock() -> Held {
            Held(())
        }
    }
    pub(crate) fn umem_locks_held() -> u32 {
        0
    }
}

pub(crate) use imp::{umem_locks_held, Held};

/// Panics if the calling thread holds a umem lock: `what` is about to wait for
/// an invalidation, which would need that lock (deadlock).
#[track_caller]
pub(crate) fn assert_may_wait_for_invalidation(what: &str) {
    let n = umem_locks_held();
    assert!(n == 0, "odp lock rule violated: {what} may wait for an invalidation, but this thread holds {n} umem lock(s)");
}
