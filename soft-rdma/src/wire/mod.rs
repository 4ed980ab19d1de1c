//! The InfiniBand transport packet as RoCEv2 carries it in a UDP payload:
//! BTH, extension headers, payload, pad, ICRC (IBA vol. 1 ch. 9, annex A17).
//!
//! Two views, smoltcp-style: [`Packet`] is a zero-copy view over bytes with
//! field accessors; [`PacketRepr`] is the parsed form, whose [`Ext`] enum holds
//! exactly the extension headers the opcode requires, so an illegal
//! combination cannot be built. Parsing never panics and never reads out of
//! bounds on any input.
//!
//! Modules:
//! * `opcode` — [`Transport`], [`Op`], [`Opcode`]: the table of valid pairs
//!   and what each op carries;
//! * `bth` — [`Bth`] and its field layout;
//! * `ext` — [`Reth`], [`Aeth`] ([`Syndrome`], [`NakCode`]), [`AtomicEth`],
//!   [`Deth`], [`Feth`], and [`Ext`] / [`ExtKind`];
//! * `packet` — [`Packet`], the zero-copy view;
//! * `repr` — [`PacketRepr`]: parse, emit, `Display`;
//! * `xrc` — the XRCETH: [`XrcExt`], [`XrcKind`] (an XRC request's headers);
//! * [`icrc`] — the invariant CRC.
//!
//! What the parser accepts: a known RC/UC/UD/XRC opcode, TVer 0, the opcode's
//! headers and the ICRC present, payload + pad a multiple of 4 with the pad
//! inside it, no payload or pad on READ request / ACK / ATOMIC ACK / atomics
//! / FLUSH,
//! and a defined AETH syndrome. Reserved bits and pad contents are ignored
//! (and written as zero). Whether first/middle packets carry exactly the
//! path MTU is the QP's business (the wire layer does not know the MTU).
#![forbid(unsafe_code)]

mod bth;
mod bytes;
mod ext;
pub mod icrc;
mod opcode;
mod packet;
mod repr;
mod xrc;

use std::fmt;

pub use bth::{Bth, BTH_LEN, DEFAULT_PKEY, MAX_U24};
pub use ext::{
    Aeth, AtomicEth, Deth, Ext, ExtKind, Feth, NakCode, Reth, Syndrome, AETH_LEN,
    ATOMIC_ACK_ETH_LEN, ATOMIC_ETH_LEN, DETH_LEN, FETH_LEN, IETH_LEN, IMM_LEN, MAX_SYNDROME_VALUE,
    NO_CREDIT_LIMIT, RETH_LEN,
};
pub use icrc::ICRC_LEN;
pub use opcode::{Op, Opcode, Transport};
pub use packet::Packet;
pub use repr::{pad_for, PacketRepr};
pub use xrc::{XrcExt, XrcKind, XRCETH_LEN};

/// Why bytes are not a valid packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// Shorter than the headers + ICRC the opcode needs.
    Truncated,
    /// Opcode byte not in the RC/UC/UD/XRC tables.
    UnknownOpcode(u8),
    /// Transport header version (TVer) not 0.
    BadVersion,
    /// Extension headers do not match the opcode (emit-side misuse).
    ExtMismatch,
    /// Pad count inconsistent with the length, or payload where none is allowed.
    BadLength,
    /// AETH syndrome byte of a reserved kind or NAK code.
    BadSyndrome(u8),
    /// A value wider than its wire field (emit-side misuse): a QPN, PSN, MSN
    /// above 24 bits, a credit count or RNR timer above 5 bits.
    FieldRange,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Truncated => f.write_str("packet truncated"),
            WireError::UnknownOpcode(b) => write!(f, "unknown opcode {b:#04x}"),
            WireError::BadVersion => f.write_str("transport header version not 0"),
            WireError::ExtMismatch => f.write_str("extension headers do not match the opcode"),
            WireError::BadLength => f.write_str("pad or payload length invalid for the opcode"),
            WireError::BadSyndrome(b) => write!(f, "reserved AETH syndrome {b:#04x}"),
            WireError::FieldRange => f.write_str("value too wide for its wire field"),
        }
    }
}

impl std::error::Error for WireError {}
