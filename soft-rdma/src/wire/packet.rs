//! [`Packet`]: a zero-copy view over an IB transport packet's bytes (the UDP
//! payload: BTH .. ICRC), smoltcp-style.
//!
//! [`Packet::new_checked`] (or [`Packet::check_len`]) establishes that the
//! opcode is known, TVer is 0, and the buffer holds the opcode's headers, a
//! pad consistent with the length and the ICRC; after that every accessor is
//! in bounds and never panics. On a packet that was not checked, accessors
//! panic if the buffer is too short for what they read (the BTH accessors
//! need [`BTH_LEN`] bytes; the rest need a known opcode and its headers).

use std::ops::Range;

use super::bth::{field, Bth, BTH_LEN};
use super::bytes::{get_u16, get_u24, put_u16, put_u24};
use super::ext::Ext;
use super::icrc::{self, IcrcContext, ICRC_LEN};
use super::{Opcode, WireError};

/// Zero-copy view over a packet's bytes.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// [`Packet::new_unchecked`] followed by [`Packet::check_len`].
    pub fn new_checked(buffer: T) -> Result<Packet<T>, WireError> {
        let packet = Packet::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Check the structure every accessor relies on:
    /// * [`WireError::Truncated`]: shorter than the BTH, or than the
    ///   opcode's headers + ICRC;
    /// * [`WireError::UnknownOpcode`], [`WireError::BadVersion`];
    /// * [`WireError::BadLength`]: payload + pad not a multiple of 4, pad
    ///   longer than the payload area, or payload/pad on an op without
    ///   payload.
    ///
    /// The extension headers' contents (e.g. the AETH syndrome) are checked
    /// by [`Packet::ext`], not here.
    pub fn check_len(&self) -> Result<(), WireError> {
        let b = self.buffer.as_ref();
        if b.len() < BTH_LEN {
            return Err(WireError::Truncated);
        }
        let opcode = self.opcode()?;
        if self.tver() != 0 {
            return Err(WireError::BadVersion);
        }
        let header_len = opcode.header_len();
        if b.len() < header_len + ICRC_LEN {
            return Err(WireError::Truncated);
        }
        let area = b.len() - header_len - ICRC_LEN; // payload + pad
        let pad = usize::from(self.pad());
        let ok = if opcode.op().has_payload() {
            area % 4 == 0 && pad <= area
        } else {
            area == 0 && pad == 0
        };
        if ok {
            Ok(())
        } else {
            Err(WireError::BadLength)
        }
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The whole buffer.
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// The raw opcode byte.
    pub fn opcode_byte(&self) -> u8 {
        self.buffer.as_ref()[field::OPCODE]
    }

    /// The opcode, or [`WireError::UnknownOpcode`].
    pub fn opcode(&self) -> Result<Opcode, WireError> {
        let byte = self.opcode_byte();
        Opcode::from_u8(byte).ok_or(WireError::UnknownOpcode(byte))
    }

    fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    pub fn solicited(&self) -> bool {
        self.flags() & field::SE != 0
    }

    pub fn mig_req(&self) -> bool {
        self.flags() & field::MIG_REQ != 0
    }

    /// Pad count (0..=3).
    pub fn pad(&self) -> u8 {
        (self.flags() & field::PAD_MASK) >> field::PAD_SHIFT
    }

    /// Transport header version (0 in a checked packet).
    pub fn tver(&self) -> u8 {
        self.flags() & field::TVER_MASK
    }

    pub fn pkey(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::PKEY)
    }

    pub fn fecn(&self) -> bool {
        self.buffer.as_ref()[field::ECN] & field::FECN != 0
    }

    pub fn becn(&self) -> bool {
        self.buffer.as_ref()[field::ECN] & field::BECN != 0
    }

    pub fn dest_qp(&self) -> u32 {
        get_u24(self.buffer.as_ref(), field::DEST_QP)
    }

    pub fn ack_req(&self) -> bool {
        self.buffer.as_ref()[field::ACK_REQ_BYTE] & field::ACK_REQ != 0
    }

    pub fn psn(&self) -> u32 {
        get_u24(self.buffer.as_ref(), field::PSN)
    }

    /// The whole BTH (opcode and version checked).
    pub fn bth(&self) -> Result<Bth, WireError> {
        Bth::parse(self.buffer.as_ref())
    }

    /// BTH + the opcode's extension headers.
    pub fn header_len(&self) -> Result<usize, WireError> {
        Ok(self.opcode()?.header_len())
    }

    /// The extension headers; [`WireError::BadSyndrome`] for a reserved AETH
    /// syndrome.
    pub fn ext(&self) -> Result<Ext, WireError> {
        let kind = self.opcode()?.ext_kind();
        Ext::parse(kind, self.buffer.as_ref().get(BTH_LEN..).unwrap_or(&[]))
    }

    /// Byte range of the payload (between the headers and the pad).
    ///
    /// # Panics
    /// On an unchecked packet that fails [`Packet::check_len`].
    pub fn payload_range(&self) -> Range<usize> {
        let len = self.buffer.as_ref().len();
        let start = self.opcode().expect("unchecked packet").header_len();
        let end = len - ICRC_LEN - usize::from(self.pad());
        assert!(start <= end, "unchecked packet");
        start..end
    }

    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.payload_range()]
    }

    /// Payload length.
    pub fn payload_len(&self) -> usize {
        self.payload_range().len()
    }

    /// The ICRC as stored (the little-endian last 4 bytes).
    ///
    /// # Panics
    /// If the buffer is shorter than 4 bytes.
    pub fn icrc(&self) -> u32 {
        let b = self.buffer.as_ref();
        let t = &b[b.len() - ICRC_LEN..];
        u32::from_le_bytes([t[0], t[1], t[2], t[3]])
    }

    /// Whether the stored ICRC is right ([`icrc::verify`]).
    pub fn verify_icrc(&self, ctx: &IcrcContext) -> bool {
        icrc::verify(ctx, self.buffer.as_ref())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn bytes_mut(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }

    fn set_flag(&mut self, at: usize, bit: u8, on: bool) {
        let b = &mut self.bytes_mut()[at];
        if on {
            *b |= bit;
        } else {
            *b &= !bit;
        }
    }

    pub fn set_opcode(&mut self, opcode: Opcode) {
        self.bytes_mut()[field::OPCODE] = opcode.to_u8();
    }

    pub fn set_solicited(&mut self, on: bool) {
        self.set_flag(field::FLAGS, field::SE, on);
    }

    pub fn set_mig_req(&mut self, on: bool) {
        self.set_flag(field::FLAGS, field::MIG_REQ, on);
    }

    /// Set the pad count (its low two bits).
    pub fn set_pad(&mut self, pad: u8) {
        let b = &mut self.bytes_mut()[field::FLAGS];
        *b = (*b & !field::PAD_MASK) | ((pad << field::PAD_SHIFT) & field::PAD_MASK);
    }

    pub fn set_pkey(&mut self, pkey: u16) {
        put_u16(self.bytes_mut(), field::PKEY, pkey);
    }

    pub fn set_fecn(&mut self, on: bool) {
        self.set_flag(field::ECN, field::FECN, on);
    }

    pub fn set_becn(&mut self, on: bool) {
        self.set_flag(field::ECN, field::BECN, on);
    }

    /// Set the destination QP (its low 24 bits).
    pub fn set_dest_qp(&mut self, qpn: u32) {
        put_u24(self.bytes_mut(), field::DEST_QP, qpn);
    }

    pub fn set_ack_req(&mut self, on: bool) {
        self.set_flag(field::ACK_REQ_BYTE, field::ACK_REQ, on);
    }

    /// Set the PSN (its low 24 bits).
    pub fn set_psn(&mut self, psn: u32) {
        put_u24(self.bytes_mut(), field::PSN, psn);
    }

    /// Overwrite the extension headers; [`WireError::ExtMismatch`] if `ext`
    /// is not the kind the opcode carries.
    pub fn set_ext(&mut self, ext: &Ext) -> Result<(), WireError> {
        if self.opcode()?.ext_kind() != ext.kind() {
            return Err(WireError::ExtMismatch);
        }
        ext.check()?;
        ext.emit(&mut self.bytes_mut()[BTH_LEN..]);
        Ok(())
    }

    /// # Panics
    /// On an unchecked packet that fails [`Packet::check_len`].
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let range = self.payload_range();
        &mut self.bytes_mut()[range]
    }

    /// Compute and store the ICRC ([`icrc::seal`]).
    pub fn seal_icrc(&mut self, ctx: &IcrcContext) {
        icrc::seal(ctx, self.bytes_mut());
    }
}
