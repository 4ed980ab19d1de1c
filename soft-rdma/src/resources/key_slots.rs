//! The key table's storage: key index → MR or window, in a vector indexed
//! by the index's low [`SLOT_BITS`] bits. The table hands out the indexes,
//! so it keeps live ones in distinct slots ([`KeySlots::is_free`]) and a
//! lookup — one per packet that carries an R_Key, one per SGE — is an
//! index and a compare instead of a hash (the QP table does the same:
//! `device/qp_table.rs`; figures in docs/BENCHMARKS.md, "Per-packet
//! lookups"). Each entry keeps its full index, so an index sharing a slot
//! with a live entry never reaches it.
#![forbid(unsafe_code)]

use super::mr::Keyed;
use crate::limits::{MAX_MR, MAX_MW};

/// Twice the objects that may live at once (MRs and windows share the
/// index space): a wrapped counter finds a free slot in a few steps.
const SLOT_BITS: u32 = (MAX_MR + MAX_MW).trailing_zeros() + 1;
const SLOTS: usize = 1 << SLOT_BITS;
const _: () = assert!((MAX_MR + MAX_MW).is_power_of_two());

fn slot(index: u32) -> usize {
    index as usize & (SLOTS - 1)
}

#[derive(Default)]
pub(crate) struct KeySlots {
    /// Grown on demand up to `SLOTS`.
    slots: Vec<Option<(u32, Keyed)>>,
    len: usize,
}

impl KeySlots {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether `index` may be handed out: its slot holds nothing.
    pub(crate) fn is_free(&self, index: u32) -> bool {
        self.slots.get(slot(index)).is_none_or(Option::is_none)
    }

    pub(crate) fn get(&self, index: u32) -> Option<&Keyed> {
        match self.slots.get(slot(index))? {
            Some((i, k)) if *i == index => Some(k),
            _ => None,
        }
    }

    /// Enter `k` under `index`, replacing the entry of that index (callers
    /// insert only at an index that [`KeySlots::is_free`] or that is
    /// already theirs).
    pub(crate) fn insert(&mut self, index: u32, k: Keyed) {
        let s = slot(index);
        if self.slots.len() <= s {
            self.slots.resize_with(s + 1, || None);
        }
        let e = &mut self.slots[s];
        debug_assert!(e.as_ref().is_none_or(|(i, _)| *i == index));
        if e.replace((index, k)).is_none() {
            self.len += 1;
        }
    }

    pub(crate) fn remove(&mut self, index: u32) {
        if let Some(e) = self.slots.get_mut(slot(index)) {
            if e.as_ref().is_some_and(|(i, _)| *i == index) {
                *e = None;
                self.len -= 1;
            }
        }
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &Keyed> {
        self.slots.iter().flatten().map(|(_, k)| k)
    }
}
