//! The responder's reorder buffer: RC requests that arrive past a gap are
//! held (a copy of each, bounded) instead of dropped, and run in PSN order
//! once the missing packet arrives — so one loss costs the packet resent,
//! not the whole window behind it.
//!
//! Nothing changes on the wire or in what a request does: a held request
//! runs through the same checks, at the same point of the sequence, as if it
//! had arrived in order, and a requester that knows only go-back-N still
//! works (its resent copies of held packets are duplicates, answered with an
//! ACK). Held requests are never acknowledged before they run.

use super::psn::{self, HELD_PSNS};
use crate::wire::PacketRepr;
use std::collections::VecDeque;

/// Held requests, by their distance past the expected PSN.
#[derive(Default)]
pub(super) struct Reorder {
    /// Slot `k` holds the request at PSN `base + k` (None: not arrived).
    slots: VecDeque<Option<(PacketRepr, Vec<u8>)>>,
    /// The PSN of slot 0: the responder's expected PSN when it was filled.
    base: u32,
    held: usize,
}

impl Reorder {
    /// Hold the request at `p`, `d` PSNs past the expected PSN `epsn`.
    /// False (not held: dropped as before) [`HELD_PSNS`] or more past it,
    /// or if `p` is held already.
    pub(super) fn hold(&mut self, epsn: u32, p: u32, repr: &PacketRepr, payload: &[u8]) -> bool {
        self.rebase(epsn);
        let d = psn::diff(p, epsn);
        if d <= 0 || d as u32 >= HELD_PSNS {
            return false;
        }
        let k = d as usize;
        if self.slots.len() <= k {
            self.slots.resize_with(k + 1, || None);
        }
        if self.slots[k].is_some() {
            return false;
        }
        self.slots[k] = Some((*repr, payload.to_vec()));
        self.held += 1;
        true
    }

    /// The held request at the expected PSN `epsn`, if any (taken out).
    pub(super) fn take(&mut self, epsn: u32) -> Option<(PacketRepr, Vec<u8>)> {
        if self.held == 0 {
            return None;
        }
        self.rebase(epsn);
        let r = self.slots.front_mut()?.take();
        if r.is_some() {
            self.held -= 1;
        }
        r
    }

    /// Whether requests past a gap are held.
    pub(super) fn any(&self) -> bool {
        self.held > 0
    }

    /// Forget everything (the requester will send it again).
    pub(super) fn clear(&mut self) {
        self.slots.clear();
        self.held = 0;
    }

    /// Move slot 0 to `epsn`: slots before it are past (run, or covered by
    /// a multi-PSN request such as a READ) and dropped.
    fn rebase(&mut self, epsn: u32) {
        let d = psn::diff(epsn, self.base);
        if d == 0 {
            return;
        }
        if d < 0 || d as usize >= self.slots.len() {
            self.clear();
        } else {
            for s in self.slots.drain(..d as usize) {
                self.held -= usize::from(s.is_some());
            }
        }
        self.base = epsn;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Ext, Op, Opcode, Transport};

    fn req(p: u32) -> PacketRepr {
        PacketRepr {
            bth: super::super::tx::bth(
                Opcode::new(Transport::Rc, Op::WriteMiddle).unwrap(),
                1,
                p,
                false,
                false,
            ),
            ext: Ext::None,
            payload_len: 1,
        }
    }

    fn psn_of(r: Option<(PacketRepr, Vec<u8>)>) -> Option<u32> {
        r.map(|(r, _)| r.bth.psn)
    }

    #[test]
    fn holds_past_the_gap_and_gives_back_in_order_across_the_wrap() {
        let mut r = Reorder::default();
        let e = psn::MASK - 1;
        assert!(r.hold(e, psn::add(e, 2), &req(psn::add(e, 2)), &[2]));
        assert!(r.hold(e, psn::add(e, 1), &req(psn::add(e, 1)), &[1]));
        assert!(
            !r.hold(e, psn::add(e, 1), &req(psn::add(e, 1)), &[1]),
            "once"
        );
        assert!(!r.hold(e, e, &req(e), &[0]), "the expected PSN is not held");
        assert!(!r.hold(e, psn::add(e, HELD_PSNS), &req(0), &[0]), "window");
        assert_eq!(r.take(e), None, "the gap is not filled yet");
        let e = psn::add(e, 1);
        assert_eq!(psn_of(r.take(e)), Some(e));
        let e = psn::add(e, 1);
        assert_eq!(psn_of(r.take(e)), Some(e));
        assert!(!r.any());
    }

    #[test]
    fn a_jump_past_held_slots_drops_them() {
        let mut r = Reorder::default();
        assert!(r.hold(10, 12, &req(12), &[]));
        assert!(r.hold(10, 20, &req(20), &[]));
        // A READ at 10 covered 10..=14: 12 is gone, 20 stays.
        assert_eq!(r.take(15), None);
        assert!(r.any());
        assert_eq!(psn_of(r.take(20)), Some(20));
        assert!(!r.any());
    }
}
