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
