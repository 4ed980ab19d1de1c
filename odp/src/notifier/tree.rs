//! The interval tree of subscriptions: `interavl` (an augmented AVL tree —
//! overlap queries prune subtrees by their maximum end, so a lookup is
//! O(log n + k)) keyed by the half-open range, with a short list per key
//! because two MRs over the same buffer are common and the crate keeps one
//! value per exact range. Chosen over writing our own: maintained, tested,
//! and the augmentation is the subtle part.

use super::Interval;
use crate::sync::Arc;
use interavl::IntervalTree;

#[derive(Default)]
pub(crate) struct Tree {
    tree: IntervalTree<u64, Vec<Arc<Interval>>>,
    len: usize,
}

impl Tree {
    pub(crate) fn insert(&mut self, iv: Arc<Interval>) {
        let key = iv.start..iv.end;
        match self.tree.get_mut(&key) {
            Some(list) => list.push(iv),
            None => {
                self.tree.insert(key, vec![iv]);
            }
        }
        self.len += 1;
    }

    /// Removes `iv` (by identity); returns whether it was there.
    pub(crate) fn remove(&mut self, iv: &Interval) -> bool {
        let key = iv.start..iv.end;
        let Some(list) = self.tree.get_mut(&key) else {
            return false;
        };
        let Some(pos) = list.iter().position(|x| std::ptr::eq(&**x, iv)) else {
            return false;
        };
        list.swap_remove(pos);
        if list.is_empty() {
            self.tree.remove(&key);
        }
        self.len -= 1;
        true
    }

    #[cfg(test)]
    pub(crate) fn contains(&self, iv: &Interval) -> bool {
        self.tree
            .get(&(iv.start..iv.end))
            .is_some_and(|l| l.iter().any(|x| std::ptr::eq(&**x, iv)))
    }

    /// Calls `f` for every interval overlapping `[start, end)`.
    pub(crate) fn for_each_overlap(&self, start: u64, end: u64, mut f: impl FnMut(&Arc<Interval>)) {
        for (_, list) in self.tree.iter_overlaps(&(start..end)) {
            list.iter().for_each(&mut f);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }
}
