//! The memory placement extensions on an MR, for the responder: ATOMIC
//! WRITE (8 bytes stored in one access) and FLUSH (what earlier requests
//! placed made visible). The key, rights and bounds are checked before.
//! Locks: each access takes the MR's `valid` lock shared (and, for ODP,
//! odp's barrier and umem lock), under the QP lock as every responder
//! access does; nothing else.

use super::mr::MrShared;
use odp::{AccessError, Memory};
use std::sync::atomic::{fence, Ordering};

/// Store `data` at the 8-byte aligned `va` in one atomic access (IBA
/// A19.4.2): no reader sees half of it. Memory offers a guarded
/// compare-and-swap, not a store, so the store is a CAS from what the word
/// holds, again while someone else changes it in between. The CAS is a full
/// barrier: every earlier access of the QP is visible first, as rxe's
/// `smp_store_release`.
pub(crate) fn atomic_write(mr: &MrShared, va: u64, data: [u8; 8]) -> Result<(), AccessError> {
    let new = u64::from_ne_bytes(data);
    let mut expect = 0;
    loop {
        let seen = mr.compare_and_swap(va, expect, new)?;
        if seen == expect {
            return Ok(());
        }
        expect = seen;
    }
}

/// FLUSH of `[va, va+len)` for global visibility. Every earlier request
/// was already placed by the CPU, in order, so a fence is all visibility
/// takes (rxe's `wmb`); ODP memory is faulted in first, for reading, as
/// rxe's ODP flush maps its range: a range the target unmapped fails (a
/// remote access error) instead of reporting a placement that cannot be.
/// An implicit ODP MR flushed whole names the address space: nothing to
/// fault. Persistence never gets here (no MR allows it, see
/// `Access::FLUSH_PERSISTENT`).
pub(crate) fn flush(mr: &MrShared, va: u64, len: u64) -> Result<(), AccessError> {
    let whole_space = matches!(mr.memory(), Memory::Implicit(_)) && len == u64::MAX;
    if len > 0 && !whole_space && !matches!(mr.memory(), Memory::Pinned(_)) {
        // Opened and closed at once: the fault is what it is for.
        drop(mr.window(va, len, false)?);
    }
    fence(Ordering::SeqCst);
    Ok(())
}
