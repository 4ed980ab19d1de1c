//! The device's read-ahead (`umem/ahead.rs`) against real memory: a stream
//! of message write faults through fresh memory gets its later pages
//! faulted on the prefetch worker and every byte still lands; reads start
//! none; a hole stops it; discards racing it leave the data path right.

mod common;
use common::*;
use odp::{Access, AccessError, InvalidationSource, Mm, MmConfig, Umem};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MSG: usize = 64 << 10;

fn mm() -> odp::MmGet {
    // Off by default (see `odp::umem::ahead::enabled`).
    odp::umem::ahead::set_enabled(true);
    let mm = Mm::new(MmConfig::default());
    assert!(
        matches!(mm.source(), InvalidationSource::Userfaultfd(_)),
        "this machine has userfaultfd: {}",
        mm.source()
    );
    mm
}

/// Wait (bounded) until `f` holds: the worker runs when the scheduler lets it.
fn eventually(what: &str, f: impl Fn() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{what}: not within 20 s"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn pattern(msg: usize, i: usize) -> u8 {
    (msg.wrapping_mul(31) ^ i.wrapping_mul(7) ^ (i >> 8)) as u8
}

#[test]
fn a_write_stream_through_fresh_memory_reads_ahead_and_every_byte_lands() {
    let mm = mm();
    let len = 16 << 20;
    let m = map_anon(len);
    let u = Umem::new(&mm, m.addr, len as u64, true).unwrap();
    let msgs = len / MSG;
    let mut buf = vec![0u8; MSG];
    for k in 0..msgs {
        let va = m.addr + (k * MSG) as u64;
        u.fault_in(va, MSG as u64, Access::Write).unwrap();
        if k == 1 {
            // The second message in a row is a stream: the pages after the
            // next message come from the worker.
            let ahead = va + 2 * MSG as u64;
            eventually("read-ahead of the pages after the next message", || {
                u.region().present(ahead, PAGE as u64, true)
            });
            assert!(!u.region().present(va + MSG as u64, PAGE as u64, true));
        }
        for (i, b) in buf.iter_mut().enumerate() {
            *b = pattern(k, i);
        }
        u.write(va, &buf).unwrap();
    }
    for k in 0..msgs {
        for i in 0..MSG {
            assert_eq!(m.byte(k * MSG + i), pattern(k, i), "message {k} byte {i}");
        }
    }
    let c = u.counters();
    assert!(c.pages_read_ahead > 0);
    assert_eq!(
        c.pages_faulted + c.pages_read_ahead,
        (len / PAGE) as u64,
        "every page made present once, by the stream or by read-ahead: {c:?}"
    );
    assert_eq!(
        c.prefetches + c.pages_prefetched,
        0,
        "not the application's prefetch"
    );
}

#[test]
fn a_read_stream_does_not_read_ahead() {
    let mm = mm();
    let len = 4 << 20;
    let m = map_anon(len);
    let u = Umem::new(&mm, m.addr, len as u64, false).unwrap();
    for k in 0..8 {
        u.fault_in(m.addr + (k * MSG) as u64, MSG as u64, Access::Read)
            .unwrap();
    }
    // Nothing to wait for: a job would have been started by now. Give a
    // wrongly started one time to show.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(u.counters().pages_read_ahead, 0);
    assert_eq!(u.region().mapped_pages(), 8 * MSG / PAGE);
}

#[test]
fn read_ahead_stops_at_a_hole_and_the_device_gets_the_error() {
    let mm = mm();
    let len = 4 << 20;
    let m = map_anon(len);
    let hole = 2 << 20;
    munmap(m.addr + hole as u64, len - hole);
    let u = Umem::new(&mm, m.addr, len as u64, true).unwrap();
    for k in 0..hole / MSG {
        u.fault_in(m.addr + (k * MSG) as u64, MSG as u64, Access::Write)
            .unwrap();
    }
    let before = m.addr + (hole - PAGE) as u64;
    eventually("the pages before the hole", || {
        u.region().present(before, PAGE as u64, true)
    });
    assert!(!u.region().present(m.addr + hole as u64, PAGE as u64, false));
    assert_eq!(
        u.fault_in(m.addr + hole as u64, MSG as u64, Access::Write),
        Err(AccessError::Unmapped)
    );
    assert_eq!(u.region().mapped_pages(), hole / PAGE);
}

/// `MADV_DONTNEED` of the pages read-ahead is faulting, over and over,
/// while streams run: nothing fails or hangs, the stream's bytes land, and
/// the discarded memory reads back as zeroes through the device. (That a
/// chunk faulted before a finished discard is never trusted is the loom
/// model `read_ahead_never_trusts_pages_faulted_before_a_finished_invalidation`:
/// here the window is too narrow to hit on purpose.)
#[test]
fn read_ahead_racing_discards_keeps_the_data_path_right() {
    let mm = mm();
    let len = 32 << 20;
    let half = len / 2;
    let m = map_anon(len);
    let u = Umem::new(&mm, m.addr, len as u64, true).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let discards = {
        let (addr, stop) = (m.addr, stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // Where read-ahead goes: the second half, 1 MiB at a time.
                let off = half + (n as usize % 16) * (1 << 20);
                dontneed(addr + off as u64, 1 << 20);
                n += 1;
            }
            n
        })
    };
    for k in 0..half / MSG {
        let va = m.addr + (k * MSG) as u64;
        u.fault_in(va, MSG as u64, Access::Write).unwrap();
        u.write(va, &[k as u8; MSG]).unwrap();
    }
    // Again and again: each pass starts a new stream (a jump back), whose
    // read-ahead faults the discarded pages once more.
    for _ in 0..50 {
        for k in (half - (1 << 20)) / MSG..half / MSG {
            u.fault_in(m.addr + (k * MSG) as u64, MSG as u64, Access::Write)
                .unwrap();
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    // Only read-ahead makes pages of the second half present: a discard
    // that found some there is the race this test is about.
    eventually("a discard of pages read ahead", || {
        u.counters().invalidations_of_present > 0
    });
    stop.store(true, Ordering::Relaxed);
    assert!(discards.join().unwrap() > 0);
    mm.sync_invalidations();
    for k in 0..half / MSG {
        assert_eq!(m.byte(k * MSG), k as u8);
        assert_eq!(m.byte(k * MSG + MSG - 1), k as u8);
    }
    let mut out = vec![1u8; half];
    u.read(m.addr + half as u64, &mut out).unwrap();
    assert!(out.iter().all(|&b| b == 0));
}
