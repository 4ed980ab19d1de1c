//! What each operation carries, as a function of (QP, iteration): the
//! posting side and the checking side compute the same values, so nothing
//! about the data travels over the control connection.

use crate::args::AtomicKind;

// Seeds ("what") of the patterns.
pub(super) const W_WRITE: u64 = 1;
pub(super) const W_SEND: u64 = 2;
pub(super) const W_READSRC: u64 = 3;
pub(super) const W_LAT_CLIENT: u64 = 4;
pub(super) const W_LAT_SERVER: u64 = 5;

/// Fetch-and-add's operand of operation `i`.
pub(super) fn fa_add(q: usize, i: u64) -> u64 {
    (i % 7) + 1 + q as u64
}

/// Compare-and-swap's swap value for a counter at `v`.
pub(super) fn cas_next(q: usize, v: u64) -> u64 {
    v.wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407 + 2 * q as u64)
}

/// The counter's value before operation `i` (initial value: its seed).
pub(super) fn atomic_before(kind: AtomicKind, q: usize, i: u64) -> u64 {
    let init = atomic_init(q);
    match kind {
        AtomicKind::FetchAndAdd => (0..i).fold(init, |v, j| v.wrapping_add(fa_add(q, j))),
        AtomicKind::CmpAndSwap => (0..i).fold(init, |v, _| cas_next(q, v)),
    }
}

pub(super) fn atomic_init(q: usize) -> u64 {
    0x1000 * (q as u64 + 1)
}

/// write_lat's last byte of message `i`: the receiver polls for it.
pub(super) fn lat_marker(i: u64) -> u8 {
    (i % 255) as u8 + 1
}
