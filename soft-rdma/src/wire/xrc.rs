//! XRC (eXtended Reliable Connected, IBA annex A14): the XRCETH and the
//! request headers that follow it.
//!
//! An XRC request carries, right after the BTH, a 4-byte XRCETH (8
//! reserved bits, the 24-bit number of the XRC SRQ the message is for),
//! then what the same RC request carries (RETH, AtomicETH, ImmDt, IETH).
//! Responses (ACK, ATOMIC ACK, READ responses) use the XRC opcodes too but
//! carry no XRCETH: their headers are RC's.

use std::fmt;

use super::bth::MAX_U24;
use super::bytes::{get_u24, put_u24};
use super::ext::{AtomicEth, Ext, ExtKind, Reth};
use super::WireError;

/// Length of an XRCETH.
pub const XRCETH_LEN: usize = 4;

/// The headers of an XRC request after its XRCETH: RC's request headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum XrcKind {
    None,
    Imm,
    Inv,
    Reth,
    RethImm,
    Atomic,
}

impl XrcKind {
    /// The RC headers that follow the XRCETH.
    pub const fn base(self) -> ExtKind {
        match self {
            XrcKind::None => ExtKind::None,
            XrcKind::Imm => ExtKind::Imm,
            XrcKind::Inv => ExtKind::Inv,
            XrcKind::Reth => ExtKind::Reth,
            XrcKind::RethImm => ExtKind::RethImm,
            XrcKind::Atomic => ExtKind::Atomic,
        }
    }

    /// `None` for the kinds no request carries (AETH, DETH, ...).
    pub const fn of(base: ExtKind) -> Option<XrcKind> {
        Some(match base {
            ExtKind::None => XrcKind::None,
            ExtKind::Imm => XrcKind::Imm,
            ExtKind::Inv => XrcKind::Inv,
            ExtKind::Reth => XrcKind::Reth,
            ExtKind::RethImm => XrcKind::RethImm,
            ExtKind::Atomic => XrcKind::Atomic,
            _ => return None,
        })
    }
}

/// The values of [`XrcKind`]: an XRC request's headers after the XRCETH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XrcExt {
    None,
    Imm(u32),
    Inv(u32),
    Reth(Reth),
    RethImm(Reth, u32),
    Atomic(AtomicEth),
}

impl XrcExt {
    pub const fn kind(&self) -> XrcKind {
        match self {
            XrcExt::None => XrcKind::None,
            XrcExt::Imm(_) => XrcKind::Imm,
            XrcExt::Inv(_) => XrcKind::Inv,
            XrcExt::Reth(_) => XrcKind::Reth,
            XrcExt::RethImm(..) => XrcKind::RethImm,
            XrcExt::Atomic(_) => XrcKind::Atomic,
        }
    }

    /// The same headers as an RC request carries them.
    pub const fn to_ext(self) -> Ext {
        match self {
            XrcExt::None => Ext::None,
            XrcExt::Imm(v) => Ext::Imm(v),
            XrcExt::Inv(v) => Ext::Inv(v),
            XrcExt::Reth(r) => Ext::Reth(r),
            XrcExt::RethImm(r, v) => Ext::RethImm(r, v),
            XrcExt::Atomic(a) => Ext::Atomic(a),
        }
    }

    /// An RC request's headers; `None` for a response's or a datagram's.
    pub const fn from_ext(ext: Ext) -> Option<XrcExt> {
        Some(match ext {
            Ext::None => XrcExt::None,
            Ext::Imm(v) => XrcExt::Imm(v),
            Ext::Inv(v) => XrcExt::Inv(v),
            Ext::Reth(r) => XrcExt::Reth(r),
            Ext::RethImm(r, v) => XrcExt::RethImm(r, v),
            Ext::Atomic(a) => XrcExt::Atomic(a),
            _ => return None,
        })
    }
}

/// The XRCETH: the 24-bit XRC SRQ number (the reserved byte is written as
/// zero and ignored on parse).
pub(super) fn parse_srqn(b: &[u8]) -> Result<u32, WireError> {
    if b.len() < XRCETH_LEN {
        return Err(WireError::Truncated);
    }
    Ok(get_u24(b, 1))
}

/// # Panics
/// If `b` is shorter than [`XRCETH_LEN`].
pub(super) fn emit_srqn(b: &mut [u8], srqn: u32) {
    b[0] = 0;
    put_u24(b, 1, srqn);
}

/// [`WireError::FieldRange`] for an SRQ number above 24 bits.
pub(super) const fn check_srqn(srqn: u32) -> Result<(), WireError> {
    if srqn > MAX_U24 {
        Err(WireError::FieldRange)
    } else {
        Ok(())
    }
}

/// `srqn=0x000012`, then the RC headers' fields.
pub(super) fn fmt(f: &mut fmt::Formatter<'_>, srqn: u32, rest: &XrcExt) -> fmt::Result {
    write!(f, "srqn={srqn:#08x}")?;
    let ext = rest.to_ext();
    if !ext.is_empty() {
        write!(f, " {ext}")?;
    }
    Ok(())
}
