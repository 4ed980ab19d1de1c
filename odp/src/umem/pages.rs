//! Per-page device state of one region: two bits a page (present, writable),
//! the `pfn_list` flags of `ib_umem_odp` without the pfns — in userspace the
//! device reaches memory by virtual address, so "present" means "faulted in
//! *and covered by the monitor* since the last invalidation".
//!
//! Always accessed under the region's lock (the umem "user lock").

pub(crate) struct Pages {
    present: Vec<u64>,
    writable: Vec<u64>,
    npages: usize,
    /// Pages with `present` set (`npages` mapped, for emptiness).
    mapped: usize,
    /// Implicit children only: set (under this lock) when the child is taken
    /// out of its parent; a fault that finds it set starts over.
    pub(crate) detached: bool,
    /// Whole-region coverage (explicit umems): registered with the
    /// invalidation source by a fault that committed after it, and no
    /// invalidation since (each clears it). Faults skip re-registering.
    pub(crate) covered: bool,
}

impl Pages {
    /// Zeroed bitmaps: large ones come from fresh zero pages, so registration
    /// stays O(1) in practice.
    pub(crate) fn new(npages: usize) -> Pages {
        let words = npages.div_ceil(64);
        Pages {
            present: vec![0; words],
            writable: vec![0; words],
            npages,
            mapped: 0,
            detached: false,
            covered: false,
        }
    }

    pub(crate) fn mapped(&self) -> usize {
        self.mapped
    }

    /// Whether pages `[first, first+n)` are all present (and writable if `write`).
    pub(crate) fn all_valid(&self, first: usize, n: usize, write: bool) -> bool {
        let bits = if write { &self.writable } else { &self.present };
        all_set(bits, first, n)
    }

    /// The smallest sub-range of `[first, first+n)` holding every page that is
    /// not valid for the access, if any.
    pub(crate) fn missing(&self, first: usize, n: usize, write: bool) -> Option<(usize, usize)> {
        let bits = if write { &self.writable } else { &self.present };
        let lo = (first..first + n).find(|&p| !get(bits, p))?;
        let hi = (lo..first + n).rev().find(|&p| !get(bits, p)).unwrap_or(lo);
        Some((lo, hi + 1 - lo))
    }

    /// Mark pages present (and writable if `write`); returns how many became present.
    pub(crate) fn set(&mut self, first: usize, n: usize, write: bool) -> usize {
        let mut newly = 0;
        for p in first..first + n {
            if !get(&self.present, p) {
                put(&mut self.present, p, true);
                newly += 1;
            }
            if write {
                put(&mut self.writable, p, true);
            }
        }
        self.mapped += newly;
        newly
    }

    /// Forget pages `[first, first+n)`; returns how many were present.
    pub(crate) fn clear(&mut self, first: usize, n: usize) -> usize {
        let end = (first + n).min(self.npages);
        let mut cleared = 0;
        let mut p = first;
        while p < end {
            // Whole words at a time: invalidations are often large.
            if p % 64 == 0 && p + 64 <= end {
                let w = p / 64;
                cleared += self.present[w].count_ones() as usize;
                self.present[w] = 0;
                self.writable[w] = 0;
                p += 64;
            } else {
                if get(&self.present, p) {
                    cleared += 1;
                }
                put(&mut self.present, p, false);
                put(&mut self.writable, p, false);
                p += 1;
            }
        }
        self.mapped -= cleared;
        cleared
    }

    /// Bytes of per-page state held.
    pub(crate) fn footprint(&self) -> usize {
        (self.present.capacity() + self.writable.capacity()) * 8
    }
}

fn get(bits: &[u64], p: usize) -> bool {
    bits[p / 64] >> (p % 64) & 1 == 1
}

fn put(bits: &mut [u64], p: usize, v: bool) {
    if v {
        bits[p / 64] |= 1 << (p % 64);
    } else {
        bits[p / 64] &= !(1 << (p % 64));
    }
}

fn all_set(bits: &[u64], first: usize, n: usize) -> bool {
    (first..first + n).all(|p| get(bits, p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_clear_and_missing() {
        let mut p = Pages::new(200);
        assert_eq!(p.missing(0, 200, false), Some((0, 200)));
        assert_eq!(p.set(10, 100, false), 100);
        assert!(p.all_valid(10, 100, false));
        assert!(
            !p.all_valid(10, 100, true),
            "present but read-only is not valid for write"
        );
        assert_eq!(p.missing(10, 100, true), Some((10, 100)));
        assert_eq!(p.missing(5, 10, false), Some((5, 5)));
        assert_eq!(p.set(50, 10, true), 0);
        assert_eq!(p.missing(50, 10, true), None);
        assert_eq!(p.mapped(), 100);
        assert_eq!(p.clear(0, 200), 100);
        assert_eq!(p.mapped(), 0);
        assert_eq!(p.missing(50, 10, false), Some((50, 10)));
    }
}
