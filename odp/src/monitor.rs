//! The userfaultfd monitor: the thread that turns the application's `munmap`,
//! `madvise(DONTNEED)` and `mremap` of covered memory into invalidations.
//!
//! The kernel makes the calling thread wait until an event is *read*, so the
//! order of operations is what keeps guarantee 2:
//!
//! ```text
//! poll: the descriptor is readable (an munmap/madvise/mremap is waiting)
//! take the barrier exclusively  -- waits for every in-flight device access
//! read the events               -- the application's call may now return
//! invalidate each range         -- umem pages cleared, sequences bumped
//! drop the barrier              -- new accesses re-fault and see the new mapping
//! ```
//!
//! The thread blocks in `poll`; it never spins. It holds only an [`MmGrab`]:
//! it must not keep the address space usable, or release would never run.
//! Rule: the thread must not allocate-and-free large memory while holding the
//! barrier (a free could `munmap` covered memory and wait for itself).

use crate::mm::MmGrab;
use crate::notifier::{Event, InvalidateRange};
use crate::sync::{Arc, Ordering};
use crate::sys::event::{poll_readable, EventFd};
use crate::sys::uffd::{self, Userfaultfd};
use std::os::fd::AsFd;

pub(crate) struct Monitor {
    stop: Arc<EventFd>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Monitor {
    pub(crate) fn start(mm: MmGrab, fd: Arc<Userfaultfd>) -> std::io::Result<Monitor> {
        let stop = Arc::new(EventFd::new()?);
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("odp-monitor".into())
            .spawn(move || run(mm, fd, stop2))?;
        Ok(Monitor {
            stop,
            thread: Some(thread),
        })
    }

    /// Stop the thread and wait for it (it holds no lock a caller could hold).
    pub(crate) fn stop(mut self) {
        self.stop.signal();
        if let Some(t) = self.thread.take() {
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }
}

fn run(mm: MmGrab, fd: Arc<Userfaultfd>, stop: Arc<EventFd>) {
    // Preallocated so the loop does not allocate while holding the barrier.
    let mut events: Vec<uffd::Event> = Vec::with_capacity(64);
    loop {
        let (ready, stopping) = match poll_readable(fd.as_fd(), stop.as_fd()) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("odp: monitor poll failed: {e}; invalidation monitor stopped");
                return;
            }
        };
        if stopping {
            return;
        }
        if !ready {
            continue;
        }
        let barrier = mm.barrier_exclusive();
        events.clear();
        if let Err(e) = fd.read_events(&mut events) {
            eprintln!("odp: reading userfaultfd events failed: {e}");
        }
        for ev in &events {
            handle(&mm, ev);
        }
        drop(barrier);
    }
}

fn handle(mm: &MmGrab, ev: &uffd::Event) {
    let stats = mm.stats();
    let inval = |start: u64, end: u64, event: Event| {
        if start < end {
            let _ = mm.notifiers().invalidate(InvalidateRange {
                start,
                end,
                event,
                blockable: true,
            });
        }
    };
    match *ev {
        uffd::Event::Unmap { start, end } => {
            stats.unmap_events.fetch_add(1, Ordering::Relaxed);
            inval(start, end, Event::Unmap);
        }
        uffd::Event::Remove { start, end } => {
            stats.remove_events.fetch_add(1, Ordering::Relaxed);
            inval(start, end, Event::Clear);
        }
        uffd::Event::Remap { from, to, len } => {
            stats.remap_events.fetch_add(1, Ordering::Relaxed);
            // The old range lost its pages; the new range now holds other
            // memory than any umem registered there may have mirrored.
            inval(from, from.saturating_add(len), Event::Remap);
            inval(to, to.saturating_add(len), Event::Remap);
        }
        uffd::Event::Other(_) => {}
    }
}
