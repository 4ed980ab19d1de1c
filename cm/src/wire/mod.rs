//! CM wire formats: the MAD header ([`mad`]), the CM messages of IBTA
//! volume 1 chapter 12 ([`msg`]) and the rdma_cm IP header carried in a
//! REQ's private data ([`ip`]), and the liveness probe's Get and its answer
//! ([`probe`]).
//!
//! Each message has a parsed form (a `struct` of typed fields) with `parse`
//! from bytes and `emit` into bytes; reserved bits are written as zero and
//! ignored on parse, as the specification asks. Field positions are given as
//! in the specification's tables: a byte offset into the message (after
//! the 24-byte MAD header), a bit offset from that byte's most significant
//! bit, and a width.

mod bits;
pub mod ip;
pub mod mad;
pub mod msg;
pub mod probe;

pub use ip::{IpHeader, PortSpace};
pub use mad::{AttrId, MadHeader, MAD_LEN};
pub use msg::{
    Answered, CmMessage, Drep, Dreq, Mra, Path, Rej, RejReason, Rep, Req, Rtu, SidrRep, SidrReq,
    Transport,
};

/// Why bytes are not a CM message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// Shorter than a MAD (256 bytes).
    Truncated,
    /// Not base version 1, management class 0x07, class version 2.
    NotCm,
    /// An attribute this CM does not know (LAP, APR, ClassPortInfo, …).
    UnknownAttr(u16),
    /// A field holds a value the specification does not allow.
    BadField(&'static str),
    /// Private data longer than the message has room for.
    PrivateDataTooLong,
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Truncated => write!(f, "shorter than a MAD"),
            WireError::NotCm => write!(f, "not a CM MAD (class 0x07, version 2)"),
            WireError::UnknownAttr(a) => write!(f, "unknown CM attribute {a:#06x}"),
            WireError::BadField(n) => write!(f, "bad field {n}"),
            WireError::PrivateDataTooLong => write!(f, "private data too long"),
        }
    }
}

impl std::error::Error for WireError {}
