//! [`PacketRepr`]: the parsed form of a packet, with parse, emit and a
//! tcpdump-like `Display`.

use std::fmt;
use std::ops::Range;

use super::bth::{Bth, DEFAULT_PKEY};
use super::ext::Ext;
use super::icrc::ICRC_LEN;
use super::packet::Packet;
use super::WireError;

/// Pad count for a payload of `payload_len` bytes: `(4 - len % 4) % 4`.
pub const fn pad_for(payload_len: usize) -> u8 {
    ((4 - payload_len % 4) % 4) as u8
}

/// A parsed packet: headers plus the payload length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketRepr {
    pub bth: Bth,
    pub ext: Ext,
    pub payload_len: usize,
}

impl PacketRepr {
    /// Parse a whole IB transport packet (BTH .. ICRC, i.e. the UDP payload).
    /// Returns the repr and the payload's byte range. Does not check the ICRC.
    ///
    /// Reserved bits (BTH byte 4 low 6 bits, byte 8 low 7 bits, the DETH's
    /// byte 4) and the contents of the pad bytes are ignored.
    pub fn parse(bytes: &[u8]) -> Result<(PacketRepr, Range<usize>), WireError> {
        let packet = Packet::new_checked(bytes)?;
        let bth = packet.bth()?;
        let ext = packet.ext()?;
        let range = packet.payload_range();
        let repr = PacketRepr {
            bth,
            ext,
            payload_len: range.len(),
        };
        Ok((repr, range))
    }

    /// Parse the headers of a packet whose `payload_len` bytes of payload
    /// travel apart (a same-host packet by reference): `header` is exactly
    /// BTH and the opcode's extension headers, of an opcode with payload;
    /// no pad or ICRC follow. The BTH's pad count is taken as
    /// `payload_len`'s, whatever the header says.
    pub fn parse_header(header: &[u8], payload_len: usize) -> Result<PacketRepr, WireError> {
        const MAX_HEADER: usize = 64;
        let n = header.len();
        if !(super::bth::BTH_LEN..=MAX_HEADER).contains(&n) {
            return Err(WireError::Truncated);
        }
        // A payload-less packet to parse: the header, pad 0, an ICRC slot.
        let mut buf = [0u8; MAX_HEADER + ICRC_LEN];
        buf[..n].copy_from_slice(header);
        buf[super::bth::field::FLAGS] &= !super::bth::field::PAD_MASK;
        let (repr, payload) = PacketRepr::parse(&buf[..n + ICRC_LEN])?;
        if repr.header_len() != n || !payload.is_empty() || !repr.bth.opcode.op().has_payload() {
            return Err(WireError::BadLength);
        }
        let bth = Bth {
            pad: pad_for(payload_len),
            ..repr.bth
        };
        Ok(PacketRepr {
            bth,
            payload_len,
            ..repr
        })
    }

    /// BTH + extension headers (as the opcode requires them).
    pub fn header_len(&self) -> usize {
        self.bth.opcode.header_len()
    }

    /// Header + payload + pad + ICRC: the UDP payload length.
    pub fn buffer_len(&self) -> usize {
        self.header_len() + self.payload_len + usize::from(pad_for(self.payload_len)) + ICRC_LEN
    }

    /// Write the headers into `buf[..header_len()]` and zero the pad after the
    /// payload; the caller writes the payload at `buf[header_len()..]` (before
    /// or after) and then seals the ICRC. `buf` must be `buffer_len()` long.
    /// `bth.pad` is computed from `payload_len`, whatever it held.
    ///
    /// Errors, with `buf` untouched: [`WireError::ExtMismatch`] if `ext` is
    /// not the kind the opcode carries; [`WireError::BadLength`] for payload
    /// on an op that has none, or a `buf` longer than `buffer_len()`;
    /// [`WireError::Truncated`] for a shorter `buf`;
    /// [`WireError::FieldRange`] for a value wider than its field (24-bit
    /// QPN/PSN/MSN, 5-bit credits / RNR timer).
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        let opcode = self.bth.opcode;
        if opcode.ext_kind() != self.ext.kind() {
            return Err(WireError::ExtMismatch);
        }
        if self.payload_len != 0 && !opcode.op().has_payload() {
            return Err(WireError::BadLength);
        }
        let pad = pad_for(self.payload_len);
        let bth = Bth { pad, ..self.bth };
        bth.check()?;
        self.ext.check()?;
        let len = self.buffer_len();
        if buf.len() < len {
            return Err(WireError::Truncated);
        }
        if buf.len() > len {
            return Err(WireError::BadLength);
        }
        let header_len = self.header_len();
        bth.emit(buf);
        self.ext.emit(&mut buf[super::bth::BTH_LEN..header_len]);
        let pad_start = header_len + self.payload_len;
        buf[pad_start..pad_start + usize::from(pad)].fill(0);
        Ok(())
    }
}

/// tcpdump-like one-line summary, e.g.
/// `RC SEND_ONLY qp=0x000011 psn=123 ack_req len=64`,
/// `RC ACK qp=0x000011 psn=123 ACK msn=5`,
/// `RC RDMA_WRITE_FIRST qp=0x000011 psn=7 va=0x7f00 rkey=0x1234 dlen=8192 len=1024`.
///
/// Flags (`se`, `mig`, `fecn`, `becn`, `ack_req`) appear only when set, the
/// P_Key only when not the default, `len` only for ops that carry payload.
impl fmt::Display for PacketRepr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.bth;
        write!(f, "{} qp={:#08x} psn={}", b.opcode, b.dest_qp, b.psn)?;
        if b.pkey != DEFAULT_PKEY {
            write!(f, " pkey={:#06x}", b.pkey)?;
        }
        for (on, name) in [
            (b.solicited, "se"),
            (b.mig_req, "mig"),
            (b.fecn, "fecn"),
            (b.becn, "becn"),
            (b.ack_req, "ack_req"),
        ] {
            if on {
                write!(f, " {name}")?;
            }
        }
        if !self.ext.is_empty() {
            write!(f, " {}", self.ext)?;
        }
        if b.opcode.op().has_payload() {
            write!(f, " len={}", self.payload_len)?;
        }
        Ok(())
    }
}
