//! ODP umems against real memory and the real userfaultfd monitor.

mod common;
use common::*;
use odp::umem::{CounterSnapshot, CHILD_SIZE};
use odp::{
    Access, AccessError, Advice, ImplicitUmem, InvalidationSource, Mm, MmConfig, Mode, Umem,
};

fn mm() -> odp::MmGet {
    let mm = Mm::new(MmConfig::default());
    assert!(
        matches!(mm.source(), InvalidationSource::Userfaultfd(_)),
        "this machine has userfaultfd: {}",
        mm.source()
    );
    mm
}

#[test]
fn registration_faults_nothing_and_first_access_faults_only_what_it_touches() {
    let mm = mm();
    let m = map_anon(64 * PAGE);
    let u = Umem::new(&mm, m.addr, m.len as u64, true).unwrap();
    assert_eq!(u.counters(), CounterSnapshot::default());
    assert_eq!(u.region().mapped_pages(), 0);
    u.write(m.addr + 5 * PAGE as u64 + 10, &[7u8; 2 * PAGE])
        .unwrap();
    let c = u.counters();
    assert_eq!(c.page_faults, 1);
    assert_eq!(c.pages_faulted, 3, "unaligned 2-page write spans 3 pages");
    assert_eq!(m.byte(5 * PAGE + 10), 7);
    assert_eq!(m.byte(7 * PAGE + 9), 7);
    assert_eq!(m.byte(7 * PAGE + 10), 0);
    // Same pages again: no new fault.
    u.write(m.addr + 5 * PAGE as u64, &[1u8; 8]).unwrap();
    assert_eq!(u.counters().page_faults, 1);
    let mut back = [0u8; 16];
    u.read(m.addr + 5 * PAGE as u64, &mut back).unwrap();
    assert_eq!(&back[..8], &[1u8; 8]);
    assert_eq!(&back[8..10], &[0u8; 2]);
    assert_eq!(&back[10..], &[7u8; 6]);
}

#[test]
fn read_only_present_page_is_faulted_again_for_write() {
    let mm = mm();
    let m = map_anon(4 * PAGE);
    let u = Umem::new(&mm, m.addr, m.len as u64, true).unwrap();
    let mut b = [0u8; 8];
    u.read(m.addr, &mut b).unwrap();
    assert_eq!(u.counters().page_faults, 1);
    u.write(m.addr, &[9u8; 8]).unwrap();
    assert_eq!(
        u.counters().page_faults,
        2,
        "present but not writable must fault for write"
    );
    assert_eq!(m.byte(0), 9);
}

#[test]
fn access_errors_for_holes_protections_and_bounds() {
    let mm = mm();
    let m = map_anon(8 * PAGE);
    let u = Umem::new(&mm, m.addr, m.len as u64, true).unwrap();
    m.protect(0, PAGE, odp::Prot::Read);
    m.protect(PAGE, PAGE, odp::Prot::None);
    munmap(m.addr + 2 * PAGE as u64, PAGE);
    assert_eq!(u.write(m.addr, &[1]), Err(AccessError::Permission));
    let mut b = [0u8; 1];
    assert_eq!(
        u.read(m.addr, &mut b),
        Ok(()),
        "reading PROT_READ memory works"
    );
    assert_eq!(
        u.read(m.addr + PAGE as u64, &mut b),
        Err(AccessError::Permission)
    );
    assert_eq!(
        u.write(m.addr + 2 * PAGE as u64, &[1]),
        Err(AccessError::Unmapped)
    );
    assert_eq!(u.write(m.addr + 3 * PAGE as u64, &[1]), Ok(()));
    assert_eq!(
        u.write(m.addr + 8 * PAGE as u64, &[1]),
        Err(AccessError::OutOfBounds)
    );
    assert_eq!(u.write(m.addr - 1, &[1]), Err(AccessError::OutOfBounds));
    let ro = Umem::new(&mm, m.addr + 4 * PAGE as u64, PAGE as u64, false).unwrap();
    assert_eq!(
        ro.write(m.addr + 4 * PAGE as u64, &[1]),
        Err(AccessError::NotWritable)
    );
}

#[test]
fn munmap_invalidates_and_later_access_is_an_error_not_a_crash() {
    let mm = mm();
    let m = map_anon(16 * PAGE);
    let u = Umem::new(&mm, m.addr, m.len as u64, true).unwrap();
    u.write(m.addr, &vec![3u8; 16 * PAGE]).unwrap();
    assert_eq!(u.region().mapped_pages(), 16);
    munmap(m.addr + 4 * PAGE as u64, 4 * PAGE);
    // munmap returned: the monitor has read the event; wait for it to apply.
    mm.sync_invalidations();
    let c = u.counters();
    assert!(c.invalidations >= 1);
    assert!(c.invalidations_of_present >= 1);
    assert_eq!(c.pages_invalidated, 4);
    assert_eq!(u.region().mapped_pages(), 12);
    assert_eq!(
        u.write(m.addr + 5 * PAGE as u64, &[1]),
        Err(AccessError::Unmapped)
    );
    assert_eq!(u.write(m.addr + 9 * PAGE as u64, &[1]), Ok(()));
    assert!(
        mm.stats()
            .unmap_events
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
}

#[test]
fn coverage_follows_the_memory_after_munmap_and_mmap_fixed() {
    let mm = mm();
    let m = map_anon(8 * PAGE);
    let u = Umem::new(&mm, m.addr, m.len as u64, true).unwrap();
    u.write(m.addr, &[1u8; 8 * PAGE]).unwrap();
    // Replace two pages with a new mapping: UNMAP event, pages invalidated.
    m.remap_fixed(2 * PAGE, 2 * PAGE);
    mm.sync_invalidations();
    assert_eq!(u.region().mapped_pages(), 6);
    assert_eq!(m.byte(2 * PAGE), 0, "new mapping is fresh");
    // ODP follows the VA: the device writes into the new mapping...
    u.write(m.addr + 2 * PAGE as u64, &[5u8; 4]).unwrap();
    assert_eq!(m.byte(2 * PAGE), 5);
    // ...and the new mapping is covered: unmapping it invalidates again.
    let before = u.counters().pages_invalidated;
    munmap(m.addr + 2 * PAGE as u64, PAGE);
    mm.sync_invalidations();
    assert_eq!(
        u.counters().pages_invalidated,
        before + 1,
        "the re-covered page was invalidated"
    );
    // Into a hole, later: not covered at first, covered by the next fault.
    m.remap_fixed(2 * PAGE, PAGE);
    u.write(m.addr + 2 * PAGE as u64, &[6u8; 4]).unwrap();
    let before = u.counters().pages_invalidated;
    m.dontneed(2 * PAGE, PAGE);
    mm.sync_invalidations();
    assert_eq!(u.counters().pages_invalidated, before + 1);
}

#[test]
fn dontneed_and_mremap_invalidate() {
    let mm = mm();
    let m = map_anon(8 * PAGE);
    let u = Umem::new(&mm, m.addr, m.len as u64, true).unwrap();
    u.write(m.addr, &[4u8; 8 * PAGE]).unwrap();
    m.dontneed(0, 2 * PAGE);
    mm.sync_invalidations();
    assert_eq!(u.region().mapped_pages(), 6);
    let mut b = [9u8; 4];
    u.read(m.addr, &mut b).unwrap();
    assert_eq!(b, [0; 4], "discarded anonymous memory reads back as zero");
    // Move the last two pages elsewhere.
    let dst = map_anon(2 * PAGE);
    // SAFETY: moves pages this test owns onto another mapping it owns.
    let p = unsafe {
        libc::mremap(
            (m.addr as usize + 6 * PAGE) as *mut libc::c_void,
            2 * PAGE,
            2 * PAGE,
            libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
            dst.addr as *mut libc::c_void,
        )
    };
    assert_eq!(p as u64, dst.addr);
    mm.sync_invalidations();
    // 8 written, 2 discarded, 1 re-read, 2 moved away.
    assert_eq!(u.region().mapped_pages(), 5, "moved pages invalidated");
    assert!(
        mm.stats()
            .remap_events
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
    assert_eq!(
        u.write(m.addr + 6 * PAGE as u64, &[1]),
        Err(AccessError::Unmapped)
    );
}

/// `softrdma perf --thp` and applications that advise huge pages: the kernel
/// backs the region with 2 MiB pages, the umem still tracks 4 KiB pages, and
/// an event on a 4 KiB piece of a huge page (the kernel splits it)
/// invalidates exactly that piece.
#[test]
fn huge_pages_are_faulted_whole_and_invalidated_a_4k_page_at_a_time() {
    const HUGE: usize = 2 << 20;
    let thp =
        std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
    let mm = mm();
    let m = map_anon(2 * HUGE); // map_anon's addresses are 1 GiB aligned
    m.advise_huge();
    let u = Umem::new(&mm, m.addr, m.len as u64, true).unwrap();
    u.write(m.addr, &vec![4u8; 2 * HUGE]).unwrap();
    assert_eq!(u.region().mapped_pages(), 2 * HUGE / PAGE);
    if thp.contains("[never]") {
        eprintln!("transparent huge pages are off here: the split is not exercised");
    } else {
        assert_eq!(
            m.huge_bytes(),
            2 * HUGE as u64,
            "the kernel used huge pages"
        );
    }
    // One 4 KiB page out of the middle of the first huge page, discarded...
    m.dontneed(HUGE / 2, PAGE);
    mm.sync_invalidations();
    assert_eq!(u.region().mapped_pages(), 2 * HUGE / PAGE - 1);
    let mut b = [9u8; 2];
    u.read(m.addr + (HUGE / 2 - 1) as u64, &mut b).unwrap();
    assert_eq!(
        b,
        [4, 0],
        "the neighbour kept its bytes, the discarded page is zero"
    );
    // ...and one unmapped out of the second.
    munmap(m.addr + (HUGE + 3 * PAGE) as u64, PAGE);
    mm.sync_invalidations();
    assert_eq!(
        u.write(m.addr + (HUGE + 3 * PAGE) as u64, &[1]),
        Err(AccessError::Unmapped)
    );
    let mut around = [0u8; 2];
    u.read(m.addr + (HUGE + 3 * PAGE - 1) as u64, &mut around[..1])
        .unwrap();
    u.read(m.addr + (HUGE + 4 * PAGE) as u64, &mut around[1..])
        .unwrap();
    assert_eq!(around, [4, 4], "the rest of the huge page is intact");
    // All 1024 written, the discarded one faulted back by the read, the unmapped one gone.
    assert_eq!(u.region().mapped_pages(), 2 * HUGE / PAGE - 1);
}

#[test]
fn mprotect_after_fault_gives_an_error_and_the_page_is_re_checked() {
    let mm = mm();
    let m = map_anon(2 * PAGE);
    let u = Umem::new(&mm, m.addr, m.len as u64, true).unwrap();
    u.write(m.addr, &[1u8; 16]).unwrap();
    m.protect(0, PAGE, odp::Prot::Read); // sends no event: pages still "present"
    let e = u.write(m.addr, &[2u8; 16]).unwrap_err();
    assert_eq!(
        e,
        AccessError::Fault { addr: m.addr },
        "guarded copy caught the write"
    );
    assert_eq!(m.byte(0), 1, "nothing written");
    assert_eq!(
        u.write(m.addr, &[2u8; 16]),
        Err(AccessError::Permission),
        "the next access re-faults and learns"
    );
}

#[test]
fn atomics_are_exact_and_checked() {
    let mm = mm();
    let m = map_anon(PAGE);
    let u = Umem::new(&mm, m.addr, m.len as u64, true).unwrap();
    assert_eq!(u.fetch_and_add(m.addr + 8, 5), Ok(0));
    assert_eq!(u.fetch_and_add(m.addr + 8, 5), Ok(5));
    assert_eq!(u.compare_and_swap(m.addr + 8, 10, 99), Ok(10));
    assert_eq!(u.compare_and_swap(m.addr + 8, 10, 7), Ok(99));
    assert_eq!(u.fetch_and_add(m.addr + 9, 1), Err(AccessError::Misaligned));
    assert_eq!(
        u.fetch_and_add(m.addr + PAGE as u64 - 4, 1),
        Err(AccessError::OutOfBounds)
    );
}

#[test]
fn snapshot_maps_only_resident_pages() {
    let mm = mm();
    let m = map_anon(4 * PAGE);
    m.set_byte(0, 1); // page 0 resident, the rest never touched
    let u = Umem::new(&mm, m.addr, m.len as u64, true).unwrap();
    assert!(u.map(m.addr, 8, Access::Read, Mode::Snapshot).is_ok());
    assert_eq!(
        u.map(m.addr + PAGE as u64, 8, Access::Read, Mode::Snapshot)
            .err(),
        Some(AccessError::NotPresent)
    );
    assert_eq!(u.region().mapped_pages(), 1);
}

#[test]
fn prefetch_advices_sync_and_best_effort() {
    let mm = mm();
    let m = map_anon(32 * PAGE);
    m.set_byte(20 * PAGE, 1);
    let u = Umem::new(&mm, m.addr, m.len as u64, true).unwrap();
    u.prefetch(m.addr, 4 * PAGE as u64, Advice::Prefetch, true)
        .unwrap();
    assert_eq!(u.region().mapped_pages(), 4);
    // mlx5's split: prefetched pages are not faults.
    let c = u.counters();
    assert_eq!(
        (c.pages_prefetched, c.page_faults, c.pages_faulted),
        (4, 0, 0)
    );
    u.prefetch(
        m.addr + 4 * PAGE as u64,
        4 * PAGE as u64,
        Advice::PrefetchWrite,
        true,
    )
    .unwrap();
    assert_eq!(u.region().mapped_pages(), 8);
    let faults = u.counters().page_faults;
    u.write(m.addr + 4 * PAGE as u64, &[1; PAGE * 4]).unwrap();
    assert_eq!(
        u.counters().page_faults,
        faults,
        "prefetched for write: no fault on the write"
    );
    u.prefetch(
        m.addr + 16 * PAGE as u64,
        8 * PAGE as u64,
        Advice::PrefetchNoFault,
        true,
    )
    .unwrap();
    assert_eq!(
        u.region().mapped_pages(),
        9,
        "no-fault prefetch maps only the one resident page"
    );
    // Best effort: happens later, on the worker.
    u.prefetch(
        m.addr + 28 * PAGE as u64,
        4 * PAGE as u64,
        Advice::Prefetch,
        false,
    )
    .unwrap();
    let t = std::time::Instant::now();
    while u.region().mapped_pages() < 13 && t.elapsed().as_secs() < 10 {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert_eq!(u.region().mapped_pages(), 13);
    assert_eq!(u.counters().prefetches, 4);
    assert_eq!(u.counters().pages_prefetched, 13);
    let ro = Umem::new(&mm, m.addr, PAGE as u64, false).unwrap();
    assert_eq!(
        ro.prefetch(m.addr, 8, Advice::PrefetchWrite, true),
        Err(AccessError::NotWritable)
    );
    assert_eq!(
        u.prefetch(m.addr, u64::MAX, Advice::Prefetch, true),
        Err(AccessError::OutOfBounds)
    );
}

#[test]
fn implicit_children_appear_on_fault_and_go_when_emptied() {
    let mm = mm();
    let u = ImplicitUmem::new(&mm, true);
    let len = 4 * CHILD_SIZE as usize;
    let m = map_anon(len + 2 * CHILD_SIZE as usize);
    let base = (m.addr + CHILD_SIZE - 1) & !(CHILD_SIZE - 1); // child-aligned
    assert_eq!(u.children(), 0);
    // One write spanning three children.
    let data = vec![0xabu8; 2 * CHILD_SIZE as usize + 100];
    u.write(base + CHILD_SIZE - 50, &data).unwrap();
    assert_eq!(u.children(), 4, "children 0..=3 of the aligned base");
    let mut back = vec![0u8; data.len()];
    u.read(base + CHILD_SIZE - 50, &mut back).unwrap();
    assert_eq!(back, data);
    // Unmap the middle child entirely: it empties and is reaped.
    munmap(base + CHILD_SIZE, CHILD_SIZE as usize);
    mm.sync_invalidations();
    u.reap();
    assert_eq!(u.children(), 3);
    assert_eq!(u.write(base + CHILD_SIZE, &[1]), Err(AccessError::Unmapped));
    assert!(
        u.footprint() < 4096,
        "per-page state of three 2 MiB children is tiny: {}",
        u.footprint()
    );
}

#[test]
fn implicit_failed_accesses_leave_no_children_behind() {
    let mm = mm();
    let u = ImplicitUmem::new(&mm, true);
    // Made-up addresses (a peer's choice): unmapped, each in another child.
    for i in 0..100u64 {
        let va = 0x3000_0000_0000 + i * CHILD_SIZE * 7;
        assert_eq!(u.write(va, &[1; 8]), Err(AccessError::Unmapped));
    }
    u.reap();
    assert_eq!(
        u.children(),
        0,
        "empty children from failed accesses are reaped"
    );
}

#[test]
fn implicit_covers_only_what_it_faults() {
    // A neighbour in the same 2 MiB chunk that the device never touches must
    // not be registered: its munmap must not involve the monitor.
    let mm = mm();
    let u = ImplicitUmem::new(&mm, true);
    let m = map_anon(2 * CHILD_SIZE as usize);
    let base = (m.addr + CHILD_SIZE - 1) & !(CHILD_SIZE - 1);
    u.write(base, &[1; 8]).unwrap();
    let events = || {
        mm.stats()
            .unmap_events
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let before = events();
    munmap(base + 64 * PAGE as u64, PAGE); // same child, never touched by the device
    mm.sync_invalidations();
    assert_eq!(events(), before, "untouched memory is not covered");
    munmap(base, PAGE);
    mm.sync_invalidations();
    assert_eq!(events(), before + 1, "touched memory is");
}

#[test]
fn implicit_racing_creators_settle_on_one_child() {
    let mm = mm();
    let u = std::sync::Arc::new(ImplicitUmem::new(&mm, true));
    let m = std::sync::Arc::new(map_anon(2 * CHILD_SIZE as usize));
    let base = (m.addr + CHILD_SIZE - 1) & !(CHILD_SIZE - 1);
    let threads: Vec<_> = (0..4u64)
        .map(|i| {
            let u = u.clone();
            let _m = m.clone();
            std::thread::spawn(move || u.write(base + i * 64, &[i as u8; 8]).unwrap())
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    assert_eq!(u.children(), 1);
    assert_eq!(m.byte((base - m.addr) as usize + 3 * 64), 3);
}

#[test]
fn fallback_mode_still_works_and_says_so() {
    let mm = Mm::new(MmConfig { userfaultfd: false });
    assert!(matches!(mm.source(), InvalidationSource::Fallback(_)));
    assert!(mm.source().to_string().contains("fallback"));
    let m = map_anon(4 * PAGE);
    let u = Umem::new(&mm, m.addr, m.len as u64, true).unwrap();
    u.write(m.addr, &[1u8; 100]).unwrap();
    munmap(m.addr, PAGE); // no event: pages stay "present"...
    let e = u.write(m.addr, &[1u8; 100]).unwrap_err();
    assert_eq!(
        e,
        AccessError::Fault { addr: m.addr },
        "...but the guarded copy still refuses, no crash"
    );
    assert_eq!(u.write(m.addr, &[1]), Err(AccessError::Unmapped));
}

#[test]
fn release_invalidates_everything_and_faults_fail_afterwards() {
    let mm = mm();
    let grab = mm.grab();
    let m = map_anon(4 * PAGE);
    let u = Umem::new(&mm, m.addr, m.len as u64, true).unwrap();
    u.write(m.addr, &[1u8; 4 * PAGE]).unwrap();
    drop(mm); // the last MmGet
    assert!(grab.is_released());
    assert!(grab.get().is_none(), "get_not_zero fails after release");
    assert_eq!(u.region().mapped_pages(), 0);
    assert_eq!(u.write(m.addr, &[1]), Err(AccessError::Gone));
    // The descriptor is closed: munmap of formerly covered memory does not hang.
    within_secs(10, "munmap after release", move || drop(m));
}

#[test]
fn a_window_serves_a_message_with_one_fault_and_holds_off_munmap() {
    use odp::{Memory, Pinned};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let mm = mm();
    let maps: Vec<Mapping> = (0..3).map(|_| map_anon(8 * PAGE)).collect();
    let kinds = [
        Memory::Pinned(Pinned::new(&mm, maps[0].addr, 8 * PAGE as u64, true).unwrap()),
        Memory::Odp(Umem::new(&mm, maps[1].addr, 8 * PAGE as u64, true).unwrap()),
        Memory::Implicit(ImplicitUmem::new(&mm, true)),
    ];
    for (mem, m) in kinds.iter().zip(&maps) {
        // Four "packets" of one message through one window.
        let (va, len) = (m.addr + 3, 4 * PAGE as u64);
        let mut w = mem.window(va, len, true).unwrap();
        for k in 0..4u64 {
            w.write(va + k * PAGE as u64, &[k as u8 + 1; PAGE]).unwrap();
        }
        let mut back = vec![0u8; PAGE];
        w.read(va + 2 * PAGE as u64, &mut back).unwrap();
        assert_eq!(back, vec![3u8; PAGE]);
        // Only inside the window.
        assert_eq!(w.read(va - 1, &mut [0]), Err(AccessError::OutOfBounds));
        assert_eq!(w.write(va + len, &[0]), Err(AccessError::OutOfBounds));
        drop(w);
        assert_eq!(m.byte(3 + PAGE), 2);
        let mut r = mem.window(va, len, false).unwrap();
        assert!(r.write(va, &[0]).is_err(), "a read window does not write");
        assert_eq!(m.byte(3), 1);
    }
    // The ODP window faulted its pages once, and accessed them four times.
    let Memory::Odp(u) = &kinds[1] else {
        unreachable!()
    };
    assert_eq!(u.counters().page_faults, 1);
    // An open window is a guard: munmap waits until it is closed.
    let w = kinds[1].window(maps[1].addr, PAGE as u64, false).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let (addr, d) = (maps[1].addr, done.clone());
    let t = std::thread::spawn(move || {
        munmap(addr, 8 * PAGE);
        d.store(true, Ordering::SeqCst);
    });
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(
        !done.load(Ordering::SeqCst),
        "munmap returned under an open window"
    );
    drop(w);
    within_secs(10, "munmap after the window closed", move || {
        t.join().unwrap()
    });
    mm.sync_invalidations();
    assert_eq!(
        kinds[1].window(maps[1].addr, PAGE as u64, false).err(),
        Some(AccessError::Unmapped)
    );
}

#[test]
fn an_invalidation_finding_no_page_present_is_not_counted_as_handled() {
    let mm = mm();
    let m = map_anon(4 * PAGE);
    let u = Umem::new(&mm, m.addr, m.len as u64, true).unwrap();
    u.write(m.addr, &[1u8; 8]).unwrap();
    m.dontneed(0, PAGE);
    mm.sync_invalidations();
    let c = u.counters();
    assert_eq!((c.invalidations_of_present, c.pages_invalidated), (1, 1));
    // Still covered, nothing present: the callback runs and finds nothing
    // (mlx5 counts neither).
    m.dontneed(0, 4 * PAGE);
    mm.sync_invalidations();
    let c = u.counters();
    assert_eq!(c.invalidations, 2, "{c:?}");
    assert_eq!((c.invalidations_of_present, c.pages_invalidated), (1, 1));
}
