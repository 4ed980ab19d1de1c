//! Pinned regions keep to their pages: once the application unmaps, replaces
//! or discards part of a registered range, the device never touches that
//! virtual range through the region again (a canary mapped there stays
//! intact; reads give zeros, atomics 0, and the counter counts).

mod common;
use common::*;
use odp::{AccessError, InvalidationSource, Mm, MmConfig, Pinned};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

fn mm() -> odp::MmGet {
    let mm = Mm::new(MmConfig::default());
    assert!(
        matches!(mm.source(), InvalidationSource::Userfaultfd(_)),
        "this machine has userfaultfd: {}",
        mm.source()
    );
    mm
}

const CANARY: u8 = 0xca;

/// Fill `[off, off+len)` of `m` with the canary (as the application would
/// write its new heap data).
fn canary(m: &Mapping, off: usize, len: usize) {
    for i in off..off + len {
        m.set_byte(i, CANARY);
    }
}

fn assert_canary(m: &Mapping, off: usize, len: usize) {
    for i in off..off + len {
        assert_eq!(m.byte(i), CANARY, "canary overwritten at +{i:#x}");
    }
}

#[test]
fn unmapped_then_remapped_pages_are_orphaned_and_the_canary_survives() {
    let mm = mm();
    let m = map_anon(8 * PAGE);
    // Unaligned ends: the region's first and last pages are partly outside it.
    let (addr, len) = (m.addr + 100, 8 * PAGE as u64 - 200);
    let p = Pinned::new(&mm, addr, len, true).unwrap();
    p.write(addr, &vec![0x11; len as usize]).unwrap();
    assert_eq!(p.counters().orphan_accesses, 0);

    // The application unmaps pages 2 and 3, and something else (malloc, say)
    // maps fresh memory there and fills it.
    munmap(m.addr + 2 * PAGE as u64, 2 * PAGE);
    m.remap_fixed(2 * PAGE, 2 * PAGE);
    canary(&m, 2 * PAGE, 2 * PAGE);
    // munmap returns once the event is read; accesses wait for it to be
    // applied (the barrier), a reader of counters must ask.
    mm.sync_invalidations();
    assert_eq!(p.orphaned_pages(), 2);

    // A write across pages 1..5: the live pages get it, the orphaned ones
    // (their bytes went to pages nobody sees) leave the canary alone.
    let at = m.addr + PAGE as u64 + 8;
    p.write(at, &[0x22; 4 * PAGE]).unwrap();
    assert_canary(&m, 2 * PAGE, 2 * PAGE);
    assert_eq!(m.byte(PAGE + 8), 0x22);
    assert_eq!(m.byte(4 * PAGE), 0x22);
    assert_eq!(m.byte(5 * PAGE + 7), 0x22);
    assert_eq!(m.byte(5 * PAGE + 8), 0x11);

    // A read across them: zeros where orphaned, the live pages' bytes elsewhere.
    let mut back = vec![0xffu8; 4 * PAGE];
    p.read(at, &mut back).unwrap();
    assert!(back[..PAGE - 8].iter().all(|&b| b == 0x22));
    assert!(back[PAGE - 8..3 * PAGE - 8].iter().all(|&b| b == 0));
    assert!(back[3 * PAGE - 8..].iter().all(|&b| b == 0x22));

    // Atomics on an orphaned page: 0, nothing stored.
    let va = m.addr + 2 * PAGE as u64 + 64;
    assert_eq!(p.fetch_and_add(va, 5), Ok(0));
    assert_eq!(p.compare_and_swap(va + 8, 0, 7), Ok(0));
    assert_eq!(
        p.compare_and_swap(va + 4, 0, 7),
        Err(AccessError::Misaligned),
        "alignment is checked on orphaned pages too"
    );
    assert_canary(&m, 2 * PAGE, 2 * PAGE);
    // On live pages they work as before.
    assert_eq!(
        p.fetch_and_add(m.addr + 6 * PAGE as u64, 1),
        Ok(0x1111_1111_1111_1111)
    );

    assert_eq!(p.counters().orphan_accesses, 4);
    // Accesses wholly on live pages are not counted.
    p.write(m.addr + 6 * PAGE as u64, &[0x33; 16]).unwrap();
    assert_eq!(p.counters().orphan_accesses, 4);
    // Bounds and writability are checked as before.
    assert_eq!(p.write(addr - 1, &[0]), Err(AccessError::OutOfBounds));
    assert_eq!(p.read(addr + len, &mut [0]), Err(AccessError::OutOfBounds));
}

#[test]
fn a_mapping_replaced_in_one_step_is_orphaned_too() {
    let mm = mm();
    let m = map_anon(4 * PAGE);
    let p = Pinned::new(&mm, m.addr, 4 * PAGE as u64, true).unwrap();
    // mmap(MAP_FIXED) over the whole registered buffer.
    m.remap_fixed(0, 4 * PAGE);
    canary(&m, 0, 4 * PAGE);
    p.write(m.addr, &[0x44; 4 * PAGE]).unwrap();
    assert_eq!(p.fetch_and_add(m.addr + 8, 1), Ok(0));
    let mut back = [0xffu8; 64];
    p.read(m.addr + PAGE as u64, &mut back).unwrap();
    assert_eq!(back, [0u8; 64]);
    assert_canary(&m, 0, 4 * PAGE);
    assert_eq!(p.orphaned_pages(), 4);
    assert_eq!(p.counters().orphan_accesses, 3);
    // A read-only registration still refuses writes, orphaned or not.
    let m2 = map_anon(PAGE);
    let ro = Pinned::new(&mm, m2.addr, PAGE as u64, false).unwrap();
    m2.remap_fixed(0, PAGE);
    assert_eq!(ro.write(m2.addr, &[1]), Err(AccessError::NotWritable));
}

#[test]
fn a_write_racing_the_unmap_never_lands_in_the_new_mapping() {
    let mm = mm();
    let m = map_anon(4 * PAGE);
    let p = Arc::new(Pinned::new(&mm, m.addr, 4 * PAGE as u64, true).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let (p2, stop2, addr) = (p.clone(), stop.clone(), m.addr);
    // A peer writing the buffer as fast as it can.
    let writer = std::thread::spawn(move || {
        let data = vec![0x55u8; 4 * PAGE];
        let mut n = 0u64;
        while !stop2.load(Ordering::Relaxed) {
            p2.write(addr, &data).unwrap();
            n += 1;
        }
        n
    });
    std::thread::sleep(std::time::Duration::from_millis(20));
    // Replaced in one step, then filled at once: from the moment mmap
    // returns, no write of the device may reach the new pages.
    m.remap_fixed(PAGE, 2 * PAGE);
    canary(&m, PAGE, 2 * PAGE);
    std::thread::sleep(std::time::Duration::from_millis(50));
    stop.store(true, Ordering::Relaxed);
    let n = writer.join().unwrap();
    assert!(n > 0);
    assert_canary(&m, PAGE, 2 * PAGE);
    assert_eq!(m.byte(0), 0x55, "the live pages still get the writes");
    assert!(p.counters().orphan_accesses > 0);
}

#[test]
fn without_userfaultfd_pinned_memory_follows_the_address() {
    // The documented limit of the fallback mode: no event, no orphan mark.
    let mm = Mm::new(MmConfig { userfaultfd: false });
    let m = map_anon(2 * PAGE);
    let p = Pinned::new(&mm, m.addr, 2 * PAGE as u64, true).unwrap();
    m.remap_fixed(0, PAGE);
    assert_eq!(p.orphaned_pages(), 0);
    p.write(m.addr, &[7]).unwrap();
    assert_eq!(m.byte(0), 7);
    // An unmapped page is still an error, never a crash.
    munmap(m.addr + PAGE as u64, PAGE);
    assert!(p.write(m.addr + PAGE as u64, &[7]).is_err());
}

#[test]
fn deregistering_uncovers_unless_another_region_still_needs_it() {
    let mm = mm();
    let unmaps = || mm.stats().unmap_events.load(Ordering::Relaxed);
    // Alone: once the region is gone, freeing its memory does not go
    // through the monitor any more.
    let m = map_anon(4 * PAGE);
    drop(Pinned::new(&mm, m.addr, 4 * PAGE as u64, true).unwrap());
    let before = unmaps();
    m.munmap();
    mm.sync_invalidations();
    assert_eq!(unmaps(), before, "uncovered when the pinned region left");
    // Overlapping an ODP umem on the same buffer: the umem keeps it covered.
    let m = map_anon(4 * PAGE);
    let u = odp::Umem::new(&mm, m.addr, 4 * PAGE as u64, true).unwrap();
    u.write(m.addr, &[1]).unwrap();
    drop(Pinned::new(&mm, m.addr + 10, 100, true).unwrap());
    let before = unmaps();
    m.munmap();
    mm.sync_invalidations();
    assert_eq!(unmaps(), before + 1, "still covered for the umem");
    assert_eq!(u.region().mapped_pages(), 0);
}
