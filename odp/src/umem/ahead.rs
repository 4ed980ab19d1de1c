//! Read-ahead for a device streaming writes through an explicit umem: once
//! its message faults march forward, the pages after them are faulted in
//! for writing on the prefetch worker while the device copies, instead of
//! each message waiting for its own pages to be allocated and zeroed.
//!
//! Writes only: a read of fresh memory maps the shared zero page (cheap),
//! and a read of memory the application wrote finds its pages resident;
//! neither is worth the worker's time, which a write stream on the same
//! worker needs (both sides of a same-process run share it).
//!
//! Only the bookkeeping lives here (what to fault next); the faulting is
//! `Region::map_for`, with its read_begin/read_retry commit, so a chunk
//! racing an invalidation never marks an invalidated page present.

use super::PAGE_SIZE;
use std::sync::atomic::{AtomicU8, Ordering};

/// 0: not decided yet, 1: off, 2: on.
static ENABLED: AtomicU8 = AtomicU8::new(0);

/// Whether read-ahead runs: off unless the environment says
/// `ODP_READ_AHEAD=1` or [`set_enabled`] turned it on. Off by default
/// because on an otherwise idle 2-core machine the extra busy thread cost
/// more than it hid (docs/BENCHMARKS.md, "Fresh ODP memory").
pub fn enabled() -> bool {
    match ENABLED.load(Ordering::Relaxed) {
        1 => false,
        2 => true,
        _ => {
            let on = std::env::var("ODP_READ_AHEAD").is_ok_and(|v| v == "1");
            // A concurrent `set_enabled` wins.
            let _ = ENABLED.compare_exchange(
                0,
                if on { 2 } else { 1 },
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            ENABLED.load(Ordering::Relaxed) == 2
        }
    }
}

/// Turn read-ahead on or off for the process (tests, benchmarks).
pub fn set_enabled(on: bool) {
    ENABLED.store(if on { 2 } else { 1 }, Ordering::Relaxed);
}

/// Pages handed to one worker fault: small enough that the stream's own
/// fault rarely waits behind a chunk in flight, large enough that the
/// system call is a small part of it.
pub(crate) const CHUNK: u64 = 256 << 10;

/// How far past the stream's end read-ahead goes. Bounds the memory it may
/// fault that the device never touches (a stream that stops, or jumps).
pub(crate) const DISTANCE: u64 = 8 << 20;

/// One umem's stream: the last message faulted and how far ahead of it the
/// worker has gone. Under its own lock, never with the umem lock held.
#[derive(Debug, Default)]
pub(crate) struct Stream {
    /// `[start, end)` of the last fault.
    last: (u64, u64),
    /// Faults in a row that continued the stream.
    run: u32,
    /// Read-ahead wants pages up to here (page-aligned, exclusive).
    want: u64,
    /// The worker's next chunk starts here: everything below was handed out.
    next: u64,
    /// A chunk here failed (a hole, a read-only mapping): the stream stays
    /// below it until it jumps.
    cap: u64,
    /// A worker job is running or queued for this stream.
    busy: bool,
}

impl Stream {
    /// Note a device write fault of `[va, va+len)` in a region ending at
    /// `limit`. True if a worker job should be started (`busy` is now set).
    pub(crate) fn note(&mut self, va: u64, len: u64, limit: u64) -> bool {
        let end = va.saturating_add(len);
        let (ls, le) = self.last;
        // Forward, at most one message's length past the last one: a
        // sequential stream (perftest's cycle buffer, a bulk transfer).
        let continues = len > 0 && le > ls && va >= ls && va <= le.saturating_add(le - ls);
        self.last = (va, end);
        if !continues {
            self.run = 0;
            self.cap = limit;
            self.want = 0;
            self.next = 0;
            return false;
        }
        self.run += 1;
        let aligned = end.next_multiple_of(PAGE_SIZE).min(limit);
        self.want = self
            .want
            .max(aligned.saturating_add(DISTANCE).min(self.cap.min(limit)));
        // The next message is the device's own fault; start after it, so the
        // two do not allocate the same pages at once.
        let after_next = aligned.saturating_add(len).next_multiple_of(PAGE_SIZE);
        self.next = self.next.max(after_next);
        // Restarted once a whole chunk is due, not for every message.
        let due = self.want.saturating_sub(self.next);
        let whole = CHUNK.min(limit.saturating_sub(self.next)).max(1);
        if !self.busy && due >= whole {
            self.busy = true;
            return true;
        }
        false
    }

    /// The worker's next chunk `(start, end)`, or `None` when it has caught
    /// up (then `busy` is cleared: the next fault starts a job again).
    pub(crate) fn next_chunk(&mut self) -> Option<(u64, u64)> {
        if self.next >= self.want {
            self.busy = false;
            return None;
        }
        let s = self.next;
        let e = (s + CHUNK).min(self.want);
        self.next = e;
        Some((s, e))
    }

    /// The chunk at `start` could not be faulted: stop there.
    pub(crate) fn failed(&mut self, start: u64) {
        self.cap = start;
        self.want = self.want.min(start);
        self.busy = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: u64 = 64 << 10;

    #[test]
    fn off_unless_asked_for() {
        if std::env::var_os("ODP_READ_AHEAD").is_none() {
            assert!(!enabled());
        }
    }
    const LIMIT: u64 = 1 << 30;

    #[test]
    fn a_single_fault_or_a_jump_starts_nothing() {
        let mut s = Stream::default();
        assert!(!s.note(0x10_0000, M, LIMIT));
        assert!(!s.note(0x800_0000, M, LIMIT), "a jump is not a stream");
        assert!(!s.note(0x100_0000, M, LIMIT), "backwards is not a stream");
        assert_eq!(s.next_chunk(), None);
    }

    #[test]
    fn a_forward_stream_reads_ahead_in_chunks_past_its_next_message() {
        let mut s = Stream::default();
        assert!(!s.note(0, M, LIMIT));
        assert!(s.note(M, M, LIMIT));
        // The message after this one (2M..3M) is left to the device.
        assert_eq!(s.next_chunk(), Some((3 * M, 3 * M + CHUNK)));
        assert!(!s.note(2 * M, M, LIMIT), "a job is already running");
        let mut last = 0;
        while let Some((a, b)) = s.next_chunk() {
            assert!(b - a <= CHUNK && a < b);
            last = b;
        }
        assert_eq!(last, 3 * M + DISTANCE, "up to DISTANCE past the stream");
        assert!(!s.busy);
        // Later faults restart the worker where it stopped, once a whole
        // chunk is due.
        let mut k = 3;
        while !s.note(k * M, M, LIMIT) {
            k += 1;
        }
        assert_eq!((k - 2) * M, CHUNK, "want (k+1)M+D, the worker at 3M+D");
        let c = (3 * M + DISTANCE, 3 * M + DISTANCE + CHUNK);
        assert_eq!(s.next_chunk(), Some(c));
    }

    #[test]
    fn a_stream_that_overtakes_the_worker_moves_it_forward() {
        let mut s = Stream::default();
        s.note(0, M, LIMIT);
        s.note(M, M, LIMIT);
        s.next_chunk();
        // The device ran far ahead of the worker.
        s.note(2 * M, M, LIMIT);
        for k in 3..64 {
            s.note(k * M, M, LIMIT);
        }
        let (a, _) = s.next_chunk().unwrap();
        assert_eq!(a, 65 * M);
    }

    #[test]
    fn read_ahead_stays_inside_the_region_and_below_a_failure() {
        let mut s = Stream::default();
        let limit = 4 * M + 4096;
        s.note(0, M, limit);
        assert!(s.note(M, M, limit));
        let mut last = 0;
        while let Some((_, b)) = s.next_chunk() {
            last = b;
        }
        assert_eq!(last, limit);

        let mut s = Stream::default();
        s.note(0, M, LIMIT);
        s.note(M, M, LIMIT);
        let (a, _) = s.next_chunk().unwrap();
        s.failed(a);
        assert_eq!(s.next_chunk(), None);
        assert!(!s.note(2 * M, M, LIMIT), "capped below the failure");
        // A jump starts a new stream, without the cap.
        s.note(100 * M, M, LIMIT);
        assert!(s.note(101 * M, M, LIMIT));
    }
}
