//! The verification pattern: bytes derived from a seed, cheap to produce and
//! check 8 bytes at a time; each (QP, iteration) has its own seed.

fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The seed of (what, qp, index).
pub fn seed(what: u64, qp: u64, i: u64) -> u64 {
    mix(what.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ mix(qp << 40 ^ i))
}

fn word(seed: u64, w: u64) -> u64 {
    let x = seed.wrapping_add(w.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let x = (x ^ (x >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^ (x >> 32)
}

pub fn fill(buf: &mut [u8], seed: u64) {
    let mut chunks = buf.chunks_exact_mut(8);
    let mut w = 0u64;
    for c in &mut chunks {
        c.copy_from_slice(&word(seed, w).to_le_bytes());
        w += 1;
    }
    let rem = chunks.into_remainder();
    let last = word(seed, w).to_le_bytes();
    let n = rem.len();
    rem.copy_from_slice(&last[..n]);
}

/// The first differing byte (offset, expected, got) and how many differ.
pub fn check(buf: &[u8], seed: u64) -> Option<(usize, u8, u8, usize)> {
    let mut first = None;
    let mut count = 0usize;
    for (wi, c) in buf.chunks(8).enumerate() {
        let e = word(seed, wi as u64).to_le_bytes();
        if c != &e[..c.len()] {
            for (k, (&g, &x)) in c.iter().zip(e.iter()).enumerate() {
                if g != x {
                    count += 1;
                    first.get_or_insert((wi * 8 + k, x, g));
                }
            }
        }
    }
    first.map(|(o, e, g)| (o, e, g, count))
}

/// Whether `buf` equals the pattern of `seed` from byte `offset` on
/// (`offset` a multiple of 8: packets are MTU-sized).
pub fn matches_at(buf: &[u8], seed: u64, offset: usize) -> bool {
    debug_assert!(offset % 8 == 0);
    let first = (offset / 8) as u64;
    buf.chunks(8)
        .enumerate()
        .all(|(wi, c)| c == &word(seed, first + wi as u64).to_le_bytes()[..c.len()])
}
