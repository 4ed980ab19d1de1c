//! Base Transport Header (12 bytes).
//!
//! | byte | field |
//! |---|---|
//! | 0 | opcode |
//! | 1 | SE 0x80, MigReq 0x40, PadCnt 0x30, TVer 0x0f (= 0) |
//! | 2–3 | P_Key |
//! | 4 | FECN 0x80, BECN 0x40, 6 reserved bits |
//! | 5–7 | destination QP |
//! | 8 | AckReq 0x80, 7 reserved bits |
//! | 9–11 | PSN |
//!
//! The reserved bits are written as zero and ignored on parse.

use super::bytes::{get_u16, get_u24, put_u16, put_u24};
use super::{Opcode, WireError};

/// Length of the BTH.
pub const BTH_LEN: usize = 12;
/// Largest value of a 24-bit field (QPN, PSN, MSN).
pub const MAX_U24: u32 = 0x00ff_ffff;
/// The default partition key.
pub const DEFAULT_PKEY: u16 = 0xffff;

/// Byte offsets and masks of the BTH fields.
pub(crate) mod field {
    pub const OPCODE: usize = 0;
    pub const FLAGS: usize = 1;
    pub const SE: u8 = 0x80;
    pub const MIG_REQ: u8 = 0x40;
    pub const PAD_MASK: u8 = 0x30;
    pub const PAD_SHIFT: u32 = 4;
    pub const TVER_MASK: u8 = 0x0f;
    pub const PKEY: usize = 2;
    pub const ECN: usize = 4;
    pub const FECN: u8 = 0x80;
    pub const BECN: u8 = 0x40;
    pub const DEST_QP: usize = 5;
    pub const ACK_REQ_BYTE: usize = 8;
    pub const ACK_REQ: u8 = 0x80;
    pub const PSN: usize = 9;
}

/// Base Transport Header (12 bytes). `dest_qp` and `psn` are 24-bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bth {
    pub opcode: Opcode,
    pub solicited: bool,
    pub mig_req: bool,
    /// Pad count (0..=3): bytes of pad after the payload.
    pub pad: u8,
    pub pkey: u16,
    pub fecn: bool,
    pub becn: bool,
    pub dest_qp: u32,
    pub ack_req: bool,
    pub psn: u32,
}

impl Bth {
    /// Parse the first [`BTH_LEN`] bytes of `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<Bth, WireError> {
        use field::*;
        if bytes.len() < BTH_LEN {
            return Err(WireError::Truncated);
        }
        let opcode =
            Opcode::from_u8(bytes[OPCODE]).ok_or(WireError::UnknownOpcode(bytes[OPCODE]))?;
        let flags = bytes[FLAGS];
        if flags & TVER_MASK != 0 {
            return Err(WireError::BadVersion);
        }
        Ok(Bth {
            opcode,
            solicited: flags & SE != 0,
            mig_req: flags & MIG_REQ != 0,
            pad: (flags & PAD_MASK) >> PAD_SHIFT,
            pkey: get_u16(bytes, PKEY),
            fecn: bytes[ECN] & FECN != 0,
            becn: bytes[ECN] & BECN != 0,
            dest_qp: get_u24(bytes, DEST_QP),
            ack_req: bytes[ACK_REQ_BYTE] & ACK_REQ != 0,
            psn: get_u24(bytes, PSN),
        })
    }

    /// Whether every field fits its wire width (24-bit QPN/PSN, 2-bit pad).
    pub fn check(&self) -> Result<(), WireError> {
        if self.dest_qp > MAX_U24 || self.psn > MAX_U24 || self.pad > 3 {
            return Err(WireError::FieldRange);
        }
        Ok(())
    }

    /// Write into `buf[..BTH_LEN]`, reserved bits zero. Fields wider than
    /// their wire width are truncated (see [`Bth::check`]).
    ///
    /// # Panics
    /// If `buf` is shorter than [`BTH_LEN`].
    pub fn emit(&self, buf: &mut [u8]) {
        use field::*;
        let buf = &mut buf[..BTH_LEN];
        buf[OPCODE] = self.opcode.to_u8();
        buf[FLAGS] = if self.solicited { SE } else { 0 }
            | if self.mig_req { MIG_REQ } else { 0 }
            | ((self.pad << PAD_SHIFT) & PAD_MASK);
        put_u16(buf, PKEY, self.pkey);
        buf[ECN] = if self.fecn { FECN } else { 0 } | if self.becn { BECN } else { 0 };
        put_u24(buf, DEST_QP, self.dest_qp);
        buf[ACK_REQ_BYTE] = if self.ack_req { ACK_REQ } else { 0 };
        put_u24(buf, PSN, self.psn);
    }
}
