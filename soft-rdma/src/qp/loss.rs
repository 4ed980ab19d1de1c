//! The requester's loss recovery beyond plain go-back-N, within the RC rules
//! (a requester may send any unacknowledged packet again at any time):
//!
//! * a sequence NAK resends the one packet it names, with AckReq, and the
//!   answer decides the rest ([`Recovery::verdict`]): a responder that held
//!   what followed the gap (`super::reorder`) answers with its new expected
//!   PSN past all of it, or NAKs its next gap; a go-back-N responder, which
//!   dropped what followed, answers that it now expects the packet right
//!   after the resent one — and the requester goes back to it. So a peer
//!   that knows only go-back-N costs one round trip more per loss, no more.
//! * a loss probe: when nothing has been acknowledged for a while derived
//!   from the measured round trip ([`Rtt::pto`], far below the QP's local
//!   ACK timeout), the oldest unacknowledged packet is sent again with
//!   AckReq. Any RC responder answers it: a duplicate with an ACK of what it
//!   has, the missing packet by taking it. That recovers a lost last packet
//!   (no later packet shows the responder a gap), a lost ACK, a lost NAK and
//!   a lost retransmission without waiting for the timeout. A probe is not
//!   the local ACK timeout and does not spend `retry_cnt`: that counts
//!   timeouts, which still fire on their own clock (probes do not move it),
//!   so a dead peer still ends in RETRY_EXC after the same waits.
//! * READ responses past a missing one are placed where they belong, not
//!   dropped ([`ReadGaps`]), and the missing ones alone are asked for again:
//!   a READ request with the PSN of the first missing response and the VA
//!   and length of the missing run (IBA 9.7.5.2.8; rxe's responder answers
//!   such a request with just that range). A responder that answers every
//!   duplicate READ with the rest of the original sends the rest: those are
//!   duplicates here, and the READ completes all the same.

use super::psn::{self, HELD_PSNS};
use std::time::{Duration, Instant};

/// The probe timeout before any round trip was measured.
const INITIAL_PTO: Duration = Duration::from_millis(10);

/// The shortest probe timeout: below this a busy host's scheduling delay
/// alone would fire probes for packets that are merely late.
const MIN_PTO: Duration = Duration::from_micros(500);

/// Consecutive probes without progress double the probe timeout up to this
/// many times.
const MAX_PROBE_BACKOFF: u8 = 6;

/// The smoothed round trip from send to the ACK covering it (RFC 6298's
/// estimator; one sample at a time, none across a retransmission).
#[derive(Default)]
pub(super) struct Rtt {
    srtt: Option<Duration>,
    var: Duration,
    sample: Option<(u32, Instant)>,
}

impl Rtt {
    /// Packets up to `psn` left just now for the first time: time them
    /// unless a sample is under way.
    pub(super) fn sent(&mut self, psn: u32, now: Instant) {
        if self.sample.is_none() {
            self.sample = Some((psn, now));
        }
    }

    /// A retransmission: an ACK may now answer either copy (Karn).
    pub(super) fn discard(&mut self) {
        self.sample = None;
    }

    /// Everything up to `acked` is acknowledged.
    pub(super) fn acked(&mut self, acked: u32, now: Instant) {
        let Some((p, t)) = self.sample else { return };
        if psn::diff(acked, p) < 0 {
            return;
        }
        self.sample = None;
        let s = now.saturating_duration_since(t);
        match self.srtt {
            None => {
                self.srtt = Some(s);
                self.var = s / 2;
            }
            Some(r) => {
                let d = r.abs_diff(s);
                self.var = self.var * 3 / 4 + d / 4;
                self.srtt = Some(r * 7 / 8 + s / 8);
            }
        }
    }

    /// How long without an acknowledgement before a probe, after `probes`
    /// probes since the last progress; never past `rto`.
    pub(super) fn pto(&self, rto: Duration, probes: u8) -> Duration {
        let base = match self.srtt {
            None => INITIAL_PTO,
            Some(r) => (r * 2 + self.var * 4).max(MIN_PTO),
        };
        (base * (1u32 << probes.min(MAX_PROBE_BACKOFF))).min(rto)
    }
}

/// A recovery under way: the packet at `from` was sent again alone, when
/// `end` was the next PSN to assign.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Recovery {
    pub(super) from: u32,
    pub(super) end: u32,
    /// Sent by a probe, not for a NAK: `from` may well have arrived, and
    /// ACKs sent before the copy arrived say only how far the responder
    /// had got then.
    pub(super) probe: bool,
}

/// What the requester does on learning that the responder expects `e`.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// The resent packet has not been taken yet: nothing new.
    Wait,
    /// Everything sent before the recovery is in.
    Done,
    /// The responder lacks `e`, sent before the recovery: resend from there
    /// (go-back-N).
    GoBack(u32),
    /// A NAK of another gap among held packets: resend `e` alone.
    ResendOne(u32),
}

impl Recovery {
    /// The responder's answer: it expects `e` next (an ACK of `e - 1`, or a
    /// sequence NAK of `e` when `nak`).
    pub(super) fn verdict(&self, e: u32, nak: bool) -> Verdict {
        if psn::diff(e, self.from) <= 0 {
            return Verdict::Wait;
        }
        if psn::diff(e, self.end) >= 0 {
            return if nak {
                Verdict::ResendOne(e)
            } else {
                Verdict::Done
            };
        }
        // The responder stopped at `e`. A go-back-N responder does so
        // right after the resent packet (it dropped the rest). After a NAK,
        // whatever followed `from` arrived before its copy, so an ACK there
        // without a NAK means nothing past `e` is held either; after a probe
        // such an ACK may be older than the copy's arrival: wait for a NAK
        // or the next probe.
        let next = e == psn::add(self.from, 1);
        match (nak, next) {
            (_, true) => Verdict::GoBack(e),
            (true, false) => Verdict::ResendOne(e),
            (false, false) if self.probe => Verdict::Wait,
            (false, false) => Verdict::GoBack(e),
        }
    }
}

impl Recovery {
    /// What `verdict` shows of the responder: Some(true) if it held what
    /// followed the gap (everything sent before the recovery got in, or
    /// another gap past the resent packet was NAKed), Some(false) if it
    /// took the resent packet alone (go-back-N), None if it tells nothing.
    pub(super) fn holding(&self, verdict: &Verdict) -> Option<bool> {
        let after = psn::add(self.from, 1);
        let more = psn::diff(self.end, after) > 0; // sent after `from`
        match verdict {
            Verdict::Done => more.then_some(true),
            Verdict::ResendOne(e) => (psn::diff(*e, self.end) < 0).then_some(true),
            Verdict::GoBack(e) if *e == after && more => Some(false),
            _ => None,
        }
    }
}

/// A READ's responses that arrived past the first missing one (the READ's
/// `read_done`, "done" below), and how far responses were asked for again.
/// Only [`HELD_PSNS`] responses past the missing one are kept track of:
/// later ones are dropped and asked for again after the gap fills.
#[derive(Default, Clone, Debug, PartialEq, Eq)]
pub(super) struct ReadGaps {
    /// Bit `d`: response `done + d` arrived (bit 0 never set: it is the
    /// missing one).
    seen: [u64; 4],
    /// Responses before this index were asked for again (or arrived).
    asked_to: u32,
    /// Some were asked for again (by a reread or a go-back-N).
    again: bool,
}

impl ReadGaps {
    /// Whether response `k` may be taken now: not yet arrived and within
    /// the tracked window past `done`.
    pub(super) fn wanted(&self, done: u32, k: u32) -> bool {
        k >= done && k - done < HELD_PSNS && !self.bit(k - done)
    }

    /// Response `k` (one [`ReadGaps::wanted`]) arrived; returns the new
    /// `done`: past every response now received in a row.
    pub(super) fn arrived(&mut self, done: u32, k: u32) -> u32 {
        let d = k - done;
        self.seen[(d / 64) as usize] |= 1 << (d % 64);
        let mut run = 0;
        for w in self.seen {
            run += w.trailing_ones();
            if w != u64::MAX {
                break;
            }
        }
        self.shift(run);
        done + run
    }

    /// The run of responses missing before `k` and not asked for again
    /// yet, `[from, to)`: responses come in PSN order, so whatever did not
    /// arrive before `k` is lost.
    pub(super) fn hole_before(&self, done: u32, k: u32) -> Option<(u32, u32)> {
        let mut from = done.max(self.asked_to);
        while from < k && from - done < HELD_PSNS && self.bit(from - done) {
            from += 1;
        }
        (from < k).then_some((from, k))
    }

    /// Everything from `done` on is asked for again (a go-back-N): holes
    /// of the new stream of responses are holes again.
    pub(super) fn restart(&mut self, done: u32) {
        self.asked_to = done;
        self.again = true;
    }

    /// Whether any response was asked for again.
    pub(super) fn asked_again(&self) -> bool {
        self.again
    }

    /// Responses before `to` were asked for again.
    pub(super) fn asked(&mut self, to: u32) {
        self.asked_to = self.asked_to.max(to);
        self.again = true;
    }

    fn bit(&self, d: u32) -> bool {
        d < HELD_PSNS && self.seen[(d / 64) as usize] & (1 << (d % 64)) != 0
    }

    fn shift(&mut self, s: u32) {
        let (w, b) = ((s / 64) as usize, s % 64);
        for i in 0..self.seen.len() {
            let lo = self.seen.get(i + w).copied().unwrap_or(0);
            let hi = self.seen.get(i + w + 1).copied().unwrap_or(0);
            self.seen[i] = if b == 0 {
                lo
            } else {
                (lo >> b) | (hi << (64 - b))
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_gaps_place_past_a_hole_and_ask_for_each_hole_once() {
        let mut g = ReadGaps::default();
        // 0 and 1 in order; 2 lost; 3 shows the hole [2, 3).
        let mut done = g.arrived(0, 0);
        done = g.arrived(done, 1);
        assert_eq!(done, 2);
        assert_eq!(g.hole_before(done, 2), None);
        assert_eq!(g.hole_before(done, 3), Some((2, 3)));
        assert!(g.wanted(done, 3));
        assert_eq!(g.arrived(done, 3), 2);
        g.asked(3);
        assert!(!g.wanted(done, 3), "a duplicate");
        // 4 arrives: no new hole; 5 and 6 lost, 7 shows them.
        assert_eq!(g.arrived(done, 4), 2);
        assert_eq!(g.hole_before(done, 5), None);
        assert_eq!(g.hole_before(done, 7), Some((5, 7)));
        assert_eq!(g.arrived(done, 7), 2);
        g.asked(7);
        assert_eq!(g.hole_before(done, 8), None);
        // The resent 2 fills the first hole up to the second.
        done = g.arrived(done, 2);
        assert_eq!(done, 5);
        assert!(g.wanted(done, 5) && !g.wanted(done, 7) && !g.wanted(done, 4));
        done = g.arrived(done, 6);
        assert_eq!(done, 5);
        done = g.arrived(done, 5);
        assert_eq!(done, 8);
        // Past the window: not taken; runs across words of the bitmap.
        assert!(!g.wanted(done, done + HELD_PSNS));
        for k in done + 1..done + 200 {
            g.arrived(done, k);
        }
        assert_eq!(g.arrived(done, done), done + 200);
        assert_eq!(
            g,
            ReadGaps {
                asked_to: 7,
                again: true,
                ..ReadGaps::default()
            }
        );
        // A go-back-N: the new stream's holes show again.
        done = g.arrived(done, done);
        g.restart(done);
        assert_eq!(g.hole_before(done, done + 3), Some((done, done + 3)));
    }

    #[test]
    fn verdicts_against_a_holding_and_a_go_back_n_responder() {
        let r = Recovery {
            from: psn::MASK - 1,
            end: 20,
            probe: false,
        };
        let next = |k| psn::add(r.from, k);
        assert_eq!(r.verdict(r.from, true), Verdict::Wait, "a duplicate NAK");
        assert_eq!(r.verdict(r.from, false), Verdict::Wait);
        // Holding responder: everything was in, or a second gap is NAKed.
        assert_eq!(r.verdict(20, false), Verdict::Done);
        assert_eq!(r.verdict(next(7), true), Verdict::ResendOne(next(7)));
        // Go-back-N responder: it took the resent packet only.
        assert_eq!(r.verdict(next(1), false), Verdict::GoBack(next(1)));
        assert_eq!(r.verdict(next(1), true), Verdict::GoBack(next(1)));
        // An ACK stopping short without a NAK: nothing held past it.
        assert_eq!(r.verdict(next(7), false), Verdict::GoBack(next(7)));
        // A NAK of a packet sent after the recovery began.
        assert_eq!(r.verdict(25, true), Verdict::ResendOne(25));
        // What each answer shows of the responder.
        assert_eq!(r.holding(&r.verdict(20, false)), Some(true));
        assert_eq!(r.holding(&r.verdict(next(7), true)), Some(true));
        assert_eq!(r.holding(&r.verdict(next(1), false)), Some(false));
        assert_eq!(r.holding(&r.verdict(r.from, false)), None);
        let alone = Recovery { end: next(1), ..r };
        assert_eq!(alone.holding(&alone.verdict(next(1), false)), None);
        // After a probe, an ACK short of the end may predate the copy.
        let p = Recovery { probe: true, ..r };
        assert_eq!(p.verdict(next(7), false), Verdict::Wait);
        assert_eq!(p.verdict(next(1), false), Verdict::GoBack(next(1)));
        assert_eq!(p.verdict(20, false), Verdict::Done);
        assert_eq!(p.verdict(next(7), true), Verdict::ResendOne(next(7)));
    }

    #[test]
    fn probe_timeout_follows_the_round_trip_within_its_bounds() {
        let mut rtt = Rtt::default();
        let rto = Duration::from_secs(4);
        assert_eq!(rtt.pto(rto, 0), INITIAL_PTO);
        let t = Instant::now();
        rtt.sent(10, t);
        rtt.sent(11, t); // one sample at a time
        rtt.acked(9, t + Duration::from_millis(1));
        assert_eq!(rtt.pto(rto, 0), INITIAL_PTO, "not yet acknowledged");
        rtt.acked(10, t + Duration::from_millis(2));
        // srtt 2 ms, var 1 ms: 2 × 2 + 4 × 1.
        assert_eq!(rtt.pto(rto, 0), Duration::from_millis(8));
        assert_eq!(rtt.pto(rto, 2), Duration::from_millis(32));
        assert_eq!(
            rtt.pto(Duration::from_millis(5), 0),
            Duration::from_millis(5)
        );
        rtt.sent(12, t);
        rtt.discard();
        rtt.acked(12, t + Duration::from_secs(1));
        assert_eq!(rtt.pto(rto, 0), Duration::from_millis(8), "Karn");
        let mut fast = Rtt::default();
        fast.sent(1, t);
        fast.acked(1, t + Duration::from_micros(10));
        assert_eq!(fast.pto(rto, 0), MIN_PTO);
    }
}
