//! The interval tree of subscriptions: `iset`'s `IntervalMap` (a red-black
//! tree in an arena, each node augmented with its subtree's span), keyed by
//! the half-open range, with a short list per key because two MRs over the
//! same buffer are common and the map keeps one value per exact range.
//!
//! Why `iset`: its overlap query descends into a subtree only if the
//! subtree's span reaches the query (left subtrees are pruned by their maximum
//! end), so a lookup is O(log n + k) — measured flat from 1 to 100 000
//! intervals (docs/BENCHMARKS.md). `interavl` 0.6, tried first, prunes only
//! right subtrees: its lookups grew linearly with the intervals below the
//! query (222 µs at 100 000).

use super::Interval;
use crate::sync::Arc;
use iset::{Entry, IntervalMap};

#[derive(Default)]
pub(crate) struct Tree {
    map: IntervalMap<u64, Vec<Arc<Interval>>>,
    len: usize,
}

impl Tree {
    pub(crate) fn insert(&mut self, iv: Arc<Interval>) {
        match self.map.entry(iv.start..iv.end) {
            Entry::Occupied(mut e) => e.get_mut().push(iv),
            Entry::Vacant(e) => {
                e.insert(vec![iv]);
            }
        }
        self.len += 1;
    }

    /// Removes `iv` (by identity); returns whether it was there.
    pub(crate) fn remove(&mut self, iv: &Interval) -> bool {
        let Entry::Occupied(mut e) = self.map.entry(iv.start..iv.end) else {
            return false;
        };
        let list = e.get_mut();
        let Some(pos) = list.iter().position(|x| std::ptr::eq(&**x, iv)) else {
            return false;
        };
        list.swap_remove(pos);
        if list.is_empty() {
            e.remove();
        }
        self.len -= 1;
        true
    }

    #[cfg(all(test, not(loom)))]
    pub(crate) fn contains(&self, iv: &Interval) -> bool {
        self.map
            .get(iv.start..iv.end)
            .is_some_and(|l| l.iter().any(|x| std::ptr::eq(&**x, iv)))
    }

    /// Calls `f` for every interval overlapping `[start, end)`.
    pub(crate) fn for_each_overlap(&self, start: u64, end: u64, mut f: impl FnMut(&Arc<Interval>)) {
        if start >= end {
            return; // an empty range overlaps nothing (and iset would panic)
        }
        for (_, list) in self.map.iter(start..end) {
            list.iter().for_each(&mut f);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }
}
