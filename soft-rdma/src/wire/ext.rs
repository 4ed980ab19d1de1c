//! Extension transport headers: RETH, AETH, AtomicETH, AtomicAckETH, DETH,
//! ImmDt, IETH, FETH, and [`Ext`], the legal combinations of them.
//!
//! Wire order after the BTH: DETH or XRCETH, then FETH, then RETH /
//! AtomicETH / AETH, then AtomicAckETH, then ImmDt / IETH. The DETH's
//! reserved byte and the FETH's reserved bits are written as zero and
//! ignored on parse.

use std::fmt;

use super::bth::MAX_U24;
use super::bytes::{get_u24, get_u32, get_u64, put_u24, put_u32, put_u64};
use super::xrc::{self, XrcExt, XrcKind, XRCETH_LEN};
use super::WireError;

/// Length of a RETH.
pub const RETH_LEN: usize = 16;
/// Length of an AETH.
pub const AETH_LEN: usize = 4;
/// Length of an AtomicETH.
pub const ATOMIC_ETH_LEN: usize = 28;
/// Length of an AtomicAckETH.
pub const ATOMIC_ACK_ETH_LEN: usize = 8;
/// Length of a DETH.
pub const DETH_LEN: usize = 8;
/// Length of an ImmDt.
pub const IMM_LEN: usize = 4;
/// Length of an IETH.
pub const IETH_LEN: usize = 4;
/// Length of a FETH.
pub const FETH_LEN: usize = 4;
/// Largest credit count / RNR timer code in an AETH syndrome.
pub const MAX_SYNDROME_VALUE: u8 = 0x1f;
/// AETH credit count meaning "no credit limit".
pub const NO_CREDIT_LIMIT: u8 = 0x1f;

/// RDMA Extended Transport Header (16 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reth {
    pub va: u64,
    pub rkey: u32,
    pub len: u32,
}

impl Reth {
    /// # Panics
    /// If `b` is shorter than [`RETH_LEN`] (likewise for the other headers'
    /// `parse_unchecked` / `emit`).
    fn parse_unchecked(b: &[u8]) -> Reth {
        Reth {
            va: get_u64(b, 0),
            rkey: get_u32(b, 8),
            len: get_u32(b, 12),
        }
    }
    pub fn emit(&self, b: &mut [u8]) {
        put_u64(b, 0, self.va);
        put_u32(b, 8, self.rkey);
        put_u32(b, 12, self.len);
    }
}

/// NAK codes (AETH syndrome 0b011x_xxxx).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NakCode {
    PsnSequenceError,
    InvalidRequest,
    RemoteAccessError,
    RemoteOperationalError,
    InvalidRdRequest,
}

impl NakCode {
    /// The 5-bit code (0..=4).
    pub const fn to_u8(self) -> u8 {
        match self {
            NakCode::PsnSequenceError => 0,
            NakCode::InvalidRequest => 1,
            NakCode::RemoteAccessError => 2,
            NakCode::RemoteOperationalError => 3,
            NakCode::InvalidRdRequest => 4,
        }
    }
    /// `None` for the reserved codes 5..=31 (and anything larger).
    pub const fn from_u8(code: u8) -> Option<NakCode> {
        Some(match code {
            0 => NakCode::PsnSequenceError,
            1 => NakCode::InvalidRequest,
            2 => NakCode::RemoteAccessError,
            3 => NakCode::RemoteOperationalError,
            4 => NakCode::InvalidRdRequest,
            _ => return None,
        })
    }
    pub const fn name(self) -> &'static str {
        match self {
            NakCode::PsnSequenceError => "PSN_SEQ_ERR",
            NakCode::InvalidRequest => "INV_REQ",
            NakCode::RemoteAccessError => "REM_ACCESS_ERR",
            NakCode::RemoteOperationalError => "REM_OP_ERR",
            NakCode::InvalidRdRequest => "INV_RD_REQ",
        }
    }
}

/// AETH syndrome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syndrome {
    /// ACK with a credit count (0x1f: no limit).
    Ack {
        credits: u8,
    },
    /// RNR NAK with the 5-bit RNR timer code.
    RnrNak {
        timer: u8,
    },
    Nak(NakCode),
}

impl Syndrome {
    const KIND_MASK: u8 = 0xe0;
    const VALUE_MASK: u8 = 0x1f;
    const ACK: u8 = 0x00;
    const RNR_NAK: u8 = 0x20;
    const NAK: u8 = 0x60;

    /// The syndrome byte. A credit count or timer above 0x1f is truncated to
    /// 5 bits (see [`Syndrome::check`]).
    pub const fn to_u8(self) -> u8 {
        match self {
            Syndrome::Ack { credits } => Self::ACK | (credits & Self::VALUE_MASK),
            Syndrome::RnrNak { timer } => Self::RNR_NAK | (timer & Self::VALUE_MASK),
            Syndrome::Nak(code) => Self::NAK | code.to_u8(),
        }
    }

    /// [`WireError::BadSyndrome`] for the reserved kinds (0b010, 0b1xx) and
    /// NAK codes.
    pub const fn from_u8(byte: u8) -> Result<Syndrome, WireError> {
        let value = byte & Self::VALUE_MASK;
        match byte & Self::KIND_MASK {
            Self::ACK => Ok(Syndrome::Ack { credits: value }),
            Self::RNR_NAK => Ok(Syndrome::RnrNak { timer: value }),
            Self::NAK => match NakCode::from_u8(value) {
                Some(code) => Ok(Syndrome::Nak(code)),
                None => Err(WireError::BadSyndrome(byte)),
            },
            _ => Err(WireError::BadSyndrome(byte)),
        }
    }

    /// Whether the credit count / timer fits 5 bits.
    pub const fn check(self) -> Result<(), WireError> {
        match self {
            Syndrome::Ack { credits: v } | Syndrome::RnrNak { timer: v }
                if v > MAX_SYNDROME_VALUE =>
            {
                Err(WireError::FieldRange)
            }
            _ => Ok(()),
        }
    }

    /// A positive acknowledgement (not an RNR NAK or NAK).
    pub const fn is_ack(self) -> bool {
        matches!(self, Syndrome::Ack { .. })
    }
}

/// `ACK`, `ACK credits=3`, `RNR_NAK timer=14`, `NAK PSN_SEQ_ERR`.
impl fmt::Display for Syndrome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Syndrome::Ack {
                credits: NO_CREDIT_LIMIT,
            } => f.write_str("ACK"),
            Syndrome::Ack { credits } => write!(f, "ACK credits={credits}"),
            Syndrome::RnrNak { timer } => write!(f, "RNR_NAK timer={timer}"),
            Syndrome::Nak(code) => write!(f, "NAK {}", code.name()),
        }
    }
}

/// ACK Extended Transport Header (4 bytes). `msn` is 24-bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Aeth {
    pub syndrome: Syndrome,
    pub msn: u32,
}

impl Aeth {
    /// The header as one big-endian word: syndrome << 24 | MSN.
    pub const fn to_u32(self) -> u32 {
        (self.syndrome.to_u8() as u32) << 24 | (self.msn & MAX_U24)
    }
    pub const fn from_u32(word: u32) -> Result<Aeth, WireError> {
        match Syndrome::from_u8((word >> 24) as u8) {
            Ok(syndrome) => Ok(Aeth {
                syndrome,
                msn: word & MAX_U24,
            }),
            Err(e) => Err(e),
        }
    }
    pub const fn check(self) -> Result<(), WireError> {
        if self.msn > MAX_U24 {
            return Err(WireError::FieldRange);
        }
        self.syndrome.check()
    }
    fn parse_unchecked(b: &[u8]) -> Result<Aeth, WireError> {
        Aeth::from_u32(get_u32(b, 0))
    }
    pub fn emit(&self, b: &mut [u8]) {
        put_u32(b, 0, self.to_u32());
    }
}

/// Atomic Extended Transport Header (28 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AtomicEth {
    pub va: u64,
    pub rkey: u32,
    pub swap_add: u64,
    pub compare: u64,
}

impl AtomicEth {
    fn parse_unchecked(b: &[u8]) -> AtomicEth {
        AtomicEth {
            va: get_u64(b, 0),
            rkey: get_u32(b, 8),
            swap_add: get_u64(b, 12),
            compare: get_u64(b, 20),
        }
    }
    pub fn emit(&self, b: &mut [u8]) {
        put_u64(b, 0, self.va);
        put_u32(b, 8, self.rkey);
        put_u64(b, 12, self.swap_add);
        put_u64(b, 20, self.compare);
    }
}

/// Datagram Extended Transport Header (8 bytes). `src_qp` is 24-bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deth {
    pub qkey: u32,
    pub src_qp: u32,
}

impl Deth {
    fn parse_unchecked(b: &[u8]) -> Deth {
        Deth {
            qkey: get_u32(b, 0),
            src_qp: get_u24(b, 5),
        }
    }
    /// Reserved byte 4 written as zero; `src_qp` truncated to 24 bits.
    pub fn emit(&self, b: &mut [u8]) {
        put_u32(b, 0, self.qkey);
        b[4] = 0;
        put_u24(b, 5, self.src_qp);
    }
}

/// FLUSH Extended Transport Header (4 bytes): the placement type (bits
/// 3..0: 1 global visibility, 2 persistence) and the selectivity level
/// (bits 5..4: 0 the RETH's range, 1 the whole memory region). The rest is
/// reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Feth {
    pub placement: u8,
    pub level: u8,
}

impl Feth {
    const PLT_MASK: u32 = 0xf;
    const SEL_SHIFT: u32 = 4;
    const SEL_MASK: u32 = 0x3;

    fn parse_unchecked(b: &[u8]) -> Feth {
        let w = get_u32(b, 0);
        Feth {
            placement: (w & Self::PLT_MASK) as u8,
            level: ((w >> Self::SEL_SHIFT) & Self::SEL_MASK) as u8,
        }
    }

    /// Whether both fields fit their bits (4 and 2).
    pub const fn check(self) -> Result<(), WireError> {
        if self.placement as u32 > Self::PLT_MASK || self.level as u32 > Self::SEL_MASK {
            Err(WireError::FieldRange)
        } else {
            Ok(())
        }
    }

    /// Reserved bits written as zero; the fields truncated to their bits.
    pub fn emit(&self, b: &mut [u8]) {
        let w = (u32::from(self.placement) & Self::PLT_MASK)
            | ((u32::from(self.level) & Self::SEL_MASK) << Self::SEL_SHIFT);
        put_u32(b, 0, w);
    }
}

/// Which extension headers a packet carries: [`Ext`] without the values.
/// [`Opcode::ext_kind`](super::Opcode::ext_kind) gives the one an opcode
/// requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExtKind {
    None,
    Imm,
    Inv,
    Reth,
    RethImm,
    Aeth,
    AtomicAck,
    Atomic,
    Deth,
    DethImm,
    FethReth,
    /// XRC request: an XRCETH, then the RC request headers of this kind.
    Xrc(XrcKind),
}

impl ExtKind {
    /// Bytes of extension headers (after the BTH).
    pub const fn len(self) -> usize {
        match self {
            ExtKind::None => 0,
            ExtKind::Imm => IMM_LEN,
            ExtKind::Inv => IETH_LEN,
            ExtKind::Reth => RETH_LEN,
            ExtKind::RethImm => RETH_LEN + IMM_LEN,
            ExtKind::Aeth => AETH_LEN,
            ExtKind::AtomicAck => AETH_LEN + ATOMIC_ACK_ETH_LEN,
            ExtKind::Atomic => ATOMIC_ETH_LEN,
            ExtKind::Deth => DETH_LEN,
            ExtKind::DethImm => DETH_LEN + IMM_LEN,
            ExtKind::FethReth => FETH_LEN + RETH_LEN,
            ExtKind::Xrc(k) => XRCETH_LEN + k.base().len(),
        }
    }
    pub const fn is_empty(self) -> bool {
        matches!(self, ExtKind::None)
    }
}

/// The extension headers an opcode carries — only legal combinations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ext {
    /// SEND first/middle/last, WRITE middle/last, READ response middle.
    None,
    /// SEND last/only with immediate, WRITE last with immediate.
    Imm(u32),
    /// SEND last/only with invalidate: the R_Key to invalidate.
    Inv(u32),
    /// WRITE first/only, READ request, ATOMIC WRITE.
    Reth(Reth),
    /// WRITE only with immediate.
    RethImm(Reth, u32),
    /// ACK, READ response first/last/only.
    Aeth(Aeth),
    /// ATOMIC ACK: AETH + the original value.
    AtomicAck(Aeth, u64),
    /// CMP&SWAP, FETCH&ADD.
    Atomic(AtomicEth),
    /// UD SEND only.
    Deth(Deth),
    /// UD SEND only with immediate.
    DethImm(Deth, u32),
    /// FLUSH: what to make durable or visible, and where.
    FethReth(Feth, Reth),
    /// XRC request: the XRCETH's SRQ number (24-bit), then the RC headers.
    Xrc(u32, XrcExt),
}

impl Ext {
    pub const fn kind(&self) -> ExtKind {
        match self {
            Ext::None => ExtKind::None,
            Ext::Imm(_) => ExtKind::Imm,
            Ext::Inv(_) => ExtKind::Inv,
            Ext::Reth(_) => ExtKind::Reth,
            Ext::RethImm(..) => ExtKind::RethImm,
            Ext::Aeth(_) => ExtKind::Aeth,
            Ext::AtomicAck(..) => ExtKind::AtomicAck,
            Ext::Atomic(_) => ExtKind::Atomic,
            Ext::Deth(_) => ExtKind::Deth,
            Ext::DethImm(..) => ExtKind::DethImm,
            Ext::FethReth(..) => ExtKind::FethReth,
            Ext::Xrc(_, rest) => ExtKind::Xrc(rest.kind()),
        }
    }

    /// Bytes on the wire.
    pub const fn len(&self) -> usize {
        self.kind().len()
    }

    pub const fn is_empty(&self) -> bool {
        self.kind().is_empty()
    }

    /// Parse the headers of `kind` from the start of `bytes` (the bytes after
    /// the BTH).
    pub fn parse(kind: ExtKind, bytes: &[u8]) -> Result<Ext, WireError> {
        if bytes.len() < kind.len() {
            return Err(WireError::Truncated);
        }
        let b = bytes;
        Ok(match kind {
            ExtKind::None => Ext::None,
            ExtKind::Imm => Ext::Imm(get_u32(b, 0)),
            ExtKind::Inv => Ext::Inv(get_u32(b, 0)),
            ExtKind::Reth => Ext::Reth(Reth::parse_unchecked(b)),
            ExtKind::RethImm => Ext::RethImm(Reth::parse_unchecked(b), get_u32(b, RETH_LEN)),
            ExtKind::Aeth => Ext::Aeth(Aeth::parse_unchecked(b)?),
            ExtKind::AtomicAck => Ext::AtomicAck(Aeth::parse_unchecked(b)?, get_u64(b, AETH_LEN)),
            ExtKind::Atomic => Ext::Atomic(AtomicEth::parse_unchecked(b)),
            ExtKind::Deth => Ext::Deth(Deth::parse_unchecked(b)),
            ExtKind::DethImm => Ext::DethImm(Deth::parse_unchecked(b), get_u32(b, DETH_LEN)),
            ExtKind::FethReth => Ext::FethReth(
                Feth::parse_unchecked(b),
                Reth::parse_unchecked(&b[FETH_LEN..]),
            ),
            ExtKind::Xrc(k) => {
                let rest = Ext::parse(k.base(), &b[XRCETH_LEN..])?;
                let rest = XrcExt::from_ext(rest).expect("a request's headers");
                Ext::Xrc(xrc::parse_srqn(b)?, rest)
            }
        })
    }

    /// Whether every field fits its wire width (24-bit MSN / source QP,
    /// 5-bit credits / RNR timer, the FETH's 4-bit type and 2-bit level).
    pub fn check(&self) -> Result<(), WireError> {
        match *self {
            Ext::FethReth(f, _) => f.check(),
            Ext::Aeth(a) | Ext::AtomicAck(a, _) => a.check(),
            Ext::Deth(d) | Ext::DethImm(d, _) if d.src_qp > MAX_U24 => Err(WireError::FieldRange),
            Ext::Xrc(srqn, _) => xrc::check_srqn(srqn),
            _ => Ok(()),
        }
    }

    /// Write into `buf[..self.len()]`.
    ///
    /// # Panics
    /// If `buf` is shorter than `self.len()`.
    pub fn emit(&self, buf: &mut [u8]) {
        let b = &mut buf[..self.len()];
        match *self {
            Ext::None => {}
            Ext::Imm(v) | Ext::Inv(v) => put_u32(b, 0, v),
            Ext::Reth(r) => r.emit(b),
            Ext::RethImm(r, imm) => {
                r.emit(b);
                put_u32(b, RETH_LEN, imm);
            }
            Ext::Aeth(a) => a.emit(b),
            Ext::AtomicAck(a, orig) => {
                a.emit(b);
                put_u64(b, AETH_LEN, orig);
            }
            Ext::Atomic(a) => a.emit(b),
            Ext::Deth(d) => d.emit(b),
            Ext::DethImm(d, imm) => {
                d.emit(b);
                put_u32(b, DETH_LEN, imm);
            }
            Ext::FethReth(f, r) => {
                f.emit(b);
                r.emit(&mut b[FETH_LEN..]);
            }
            Ext::Xrc(srqn, rest) => {
                xrc::emit_srqn(b, srqn);
                rest.to_ext().emit(&mut b[XRCETH_LEN..]);
            }
        }
    }
}

fn fmt_reth(f: &mut fmt::Formatter<'_>, r: &Reth) -> fmt::Result {
    write!(f, "va={:#x} rkey={:#x} dlen={}", r.va, r.rkey, r.len)
}

fn fmt_aeth(f: &mut fmt::Formatter<'_>, a: &Aeth) -> fmt::Result {
    write!(f, "{} msn={}", a.syndrome, a.msn)
}

fn fmt_deth(f: &mut fmt::Formatter<'_>, d: &Deth) -> fmt::Result {
    write!(f, "qkey={:#x} src_qp={:#08x}", d.qkey, d.src_qp)
}

/// Space-separated `key=value` fields; empty for [`Ext::None`].
impl fmt::Display for Ext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ext::None => Ok(()),
            Ext::Imm(imm) => write!(f, "imm={imm:#x}"),
            Ext::Inv(rkey) => write!(f, "inv_rkey={rkey:#x}"),
            Ext::Reth(r) => fmt_reth(f, r),
            Ext::RethImm(r, imm) => {
                fmt_reth(f, r)?;
                write!(f, " imm={imm:#x}")
            }
            Ext::Aeth(a) => fmt_aeth(f, a),
            Ext::AtomicAck(a, orig) => {
                fmt_aeth(f, a)?;
                write!(f, " orig={orig:#x}")
            }
            Ext::Atomic(a) => write!(
                f,
                "va={:#x} rkey={:#x} swap_add={:#x} compare={:#x}",
                a.va, a.rkey, a.swap_add, a.compare
            ),
            Ext::Deth(d) => fmt_deth(f, d),
            Ext::DethImm(d, imm) => {
                fmt_deth(f, d)?;
                write!(f, " imm={imm:#x}")
            }
            Ext::FethReth(feth, r) => {
                write!(f, "plt={} sel={} ", feth.placement, feth.level)?;
                fmt_reth(f, r)
            }
            Ext::Xrc(srqn, rest) => xrc::fmt(f, *srqn, rest),
        }
    }
}
