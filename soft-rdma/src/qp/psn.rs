//! 24-bit packet sequence numbers, their modular comparison, and the RC
//! window of PSNs in flight.

pub(crate) const MASK: u32 = 0x00ff_ffff;

/// RC: at most this many PSNs past the oldest unacknowledged one are in
/// flight (rxe's `RXE_MAX_UNACKED_PSNS`). Without a window a lost packet
/// makes go-back-N resend the rest of an up-to-8 MiB message, and under
/// steady loss the retransmissions pile up faster than the responder drains
/// them (found with `SOFTRDMA_FAULTS=drop=0.02`: 1 MiB WRITEs ended in
/// retry-exceeded errors).
pub(crate) const MAX_UNACKED: u32 = 128;

/// How far past a gap the responder holds requests (`qp::reorder`), and so
/// how many PSNs a requester recovering from a loss may have in flight
/// past it once the peer is known to hold them (`qp::loss`): the window
/// keeps moving while the lost packet is resent, instead of stalling for
/// its round trip.
pub(crate) const HELD_PSNS: u32 = 2 * MAX_UNACKED;

pub(crate) fn add(psn: u32, n: u32) -> u32 {
    psn.wrapping_add(n) & MASK
}

/// `a - b` in PSN space, as a signed distance in (-2^23, 2^23].
pub(crate) fn diff(a: u32, b: u32) -> i32 {
    let d = a.wrapping_sub(b) & MASK;
    if d & 0x0080_0000 != 0 {
        d as i32 - 0x0100_0000
    } else {
        d as i32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn wraps() {
        assert_eq!(add(MASK, 1), 0);
        assert_eq!(diff(0, MASK), 1);
        assert_eq!(diff(MASK, 0), -1);
        assert_eq!(diff(5, 3), 2);
    }
}
