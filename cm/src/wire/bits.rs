//! Fields of up to 32 bits at a byte and bit position, big-endian, as the
//! specification's tables give them.

/// A field: `width` bits starting `bit` bits below the most significant bit
/// of byte `at`, within the 32-bit big-endian word that starts at `at`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Field {
    pub at: usize,
    pub bit: u32,
    pub width: u32,
}

/// A field of `width` bits at byte `at`, bit `bit` (0 = the MSB).
pub(crate) const fn f(at: usize, bit: u32, width: u32) -> Field {
    assert!(bit < 8 && width >= 1 && bit + width <= 32);
    Field { at, bit, width }
}

impl Field {
    fn bytes(self) -> usize {
        (self.bit + self.width).div_ceil(8) as usize
    }

    fn shift(self) -> u32 {
        32 - self.bit - self.width
    }

    fn mask(self) -> u32 {
        if self.width == 32 {
            u32::MAX
        } else {
            (1 << self.width) - 1
        }
    }

    /// The field's value in `b` (which the caller checked is long enough).
    pub fn get(self, b: &[u8]) -> u32 {
        let mut w = [0u8; 4];
        w[..self.bytes()].copy_from_slice(&b[self.at..self.at + self.bytes()]);
        (u32::from_be_bytes(w) >> self.shift()) & self.mask()
    }

    /// Writes the low `width` bits of `v`, leaving the other bits of the
    /// bytes it shares alone.
    pub fn put(self, b: &mut [u8], v: u32) {
        let n = self.bytes();
        let mut w = [0u8; 4];
        w[..n].copy_from_slice(&b[self.at..self.at + n]);
        let mut word = u32::from_be_bytes(w);
        word &= !(self.mask() << self.shift());
        word |= (v & self.mask()) << self.shift();
        b[self.at..self.at + n].copy_from_slice(&word.to_be_bytes()[..n]);
    }
}

pub(crate) fn get_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

pub(crate) fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_be_bytes());
}

pub(crate) fn get_16(b: &[u8], at: usize) -> [u8; 16] {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[at..at + 16]);
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_sit_where_the_tables_say() {
        let mut b = [0u8; 8];
        f(1, 0, 24).put(&mut b, 0x00ab_cdef);
        assert_eq!(b, [0, 0xab, 0xcd, 0xef, 0, 0, 0, 0]);
        f(4, 5, 2).put(&mut b, 3);
        assert_eq!(b[4], 0b0000_0110);
        f(4, 0, 5).put(&mut b, 0x1f);
        assert_eq!(b[4], 0b1111_1110);
        assert_eq!(f(4, 5, 2).get(&b), 3);
        f(4, 5, 2).put(&mut b, 0);
        assert_eq!(b[4], 0b1111_1000);
        f(4, 0, 32).put(&mut b, 0x1234_5678);
        assert_eq!(f(4, 0, 32).get(&b), 0x1234_5678);
        assert_eq!(f(4, 0, 20).get(&b), 0x12345);
    }
}
