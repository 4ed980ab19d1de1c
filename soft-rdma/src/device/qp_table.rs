//! The QP table: QPN → QP, looked up for every packet received and every
//! timer that fires. A vector indexed by the QPN's low [`SLOT_BITS`] bits
//! under one read-write lock: the device hands out the QPNs, so it keeps
//! them in distinct slots and the lookup is an index and one compare, no
//! hash (measured against the `HashMap` it replaces, `dashmap` and a
//! lock-free `ArcSwapOption` array: docs/BENCHMARKS.md, "Per-packet
//! lookups"). Each entry is checked against the QPN asked for, so a number
//! that shares a slot with a live QP never reaches it.
#![forbid(unsafe_code)]

use crate::limits::MAX_QP;
use crate::qp::QpShared;
use crate::sync::{Level, OrderedRwLock};
use crate::types::{Errno, Result};
use std::sync::Arc;

/// Twice `MAX_QP` slots: with the table at most half full, a wrapped
/// counter finds a free slot in a few steps.
const SLOT_BITS: u32 = MAX_QP.trailing_zeros() + 1;
const SLOTS: usize = 1 << SLOT_BITS;
const _: () = assert!(MAX_QP.is_power_of_two());

/// QPNs are 24 bits.
const QPN_SPACE: u32 = 0x0100_0000;

fn slot(qpn: u32) -> usize {
    qpn as usize & (SLOTS - 1)
}

struct Slots {
    /// Grown on demand up to `SLOTS` (a device with few QPs stays small).
    by_slot: Vec<Option<Arc<QpShared>>>,
    len: usize,
}

pub(crate) struct QpTable {
    slots: OrderedRwLock<Slots>,
}

impl QpTable {
    pub(crate) fn new() -> QpTable {
        QpTable {
            slots: OrderedRwLock::new(
                Level::QpTable,
                Slots {
                    by_slot: Vec::new(),
                    len: 0,
                },
            ),
        }
    }

    /// The live QP numbered `qpn` (takes the table lock for reading).
    pub(crate) fn get(&self, qpn: u32) -> Option<Arc<QpShared>> {
        match self.slots.read().by_slot.get(slot(qpn))? {
            Some(qp) if qp.qpn() == qpn => Some(qp.clone()),
            _ => None,
        }
    }

    /// Enter the QP `make` builds for a QPN: `fixed` (a special QP's, below
    /// `first`; EBUSY while one lives) or the next from `counter`, wrapping
    /// within 24 bits and skipping the special QPs' slots and those in use.
    /// EINVAL beyond `MAX_QP` QPs (rxe's object pools refuse an element
    /// over their maximum with EINVAL). `make` runs under the table lock
    /// (held for writing): it takes no lock of a level at or below
    /// `QpTable`.
    pub(crate) fn insert(
        &self,
        fixed: Option<u32>,
        first: u32,
        mut counter: impl FnMut() -> u32,
        make: impl FnOnce(u32) -> Arc<QpShared>,
    ) -> Result<Arc<QpShared>> {
        let mut t = self.slots.write();
        if t.len >= MAX_QP {
            return Err(Errno::EINVAL);
        }
        let qpn = match fixed {
            Some(n) if t.by_slot.get(slot(n)).is_some_and(Option::is_some) => {
                return Err(Errno::EBUSY)
            }
            Some(n) => n,
            // Ends: at most MAX_QP of the SLOTS slots are taken.
            None => loop {
                let qpn = first + counter() % (QPN_SPACE - first);
                let s = slot(qpn);
                if s >= first as usize && t.by_slot.get(s).is_none_or(Option::is_none) {
                    break qpn;
                }
            },
        };
        let qp = make(qpn);
        let s = slot(qpn);
        if t.by_slot.len() <= s {
            t.by_slot.resize(s + 1, None);
        }
        t.by_slot[s] = Some(qp.clone());
        t.len += 1;
        Ok(qp)
    }

    /// Take `qp` out, if it is still the one in its slot (a QPN handed out
    /// again belongs to the new QP: its entry stays).
    pub(crate) fn remove(&self, qp: &QpShared) {
        let mut t = self.slots.write();
        let s = slot(qp.qpn());
        if let Some(e) = t.by_slot.get_mut(s) {
            if e.as_deref().is_some_and(|q| std::ptr::eq(q, qp)) {
                *e = None;
                t.len -= 1;
            }
        }
    }
}
