//! The common MAD header (24 bytes) as the CM uses it.
//!
//! | byte | field |
//! |---|---|
//! | 0 | base version (1) |
//! | 1 | management class (0x07, communication management) |
//! | 2 | class version (2) |
//! | 3 | R (response) 0x80, method 0x7f (CM: Send, 0x03) |
//! | 4–5 | status |
//! | 6–7 | class specific |
//! | 8–15 | transaction ID |
//! | 16–17 | attribute ID |
//! | 18–19 | reserved |
//! | 20–23 | attribute modifier |

use super::bits::{f, get_u64, put_u64};
use super::WireError;

/// A MAD's length: the GSI carries exactly 256 bytes.
pub const MAD_LEN: usize = 256;
/// The common header's length; the CM message follows it.
pub const HEADER_LEN: usize = 24;
/// The management class of communication management.
pub const CM_CLASS: u8 = 0x07;
/// The CM class version of IBA 1.2 (what `ib_cm` speaks).
pub const CM_CLASS_VERSION: u8 = 2;
/// The only method the CM sends its messages with.
pub const METHOD_SEND: u8 = 0x03;

/// The CM's attributes (IBTA table 103).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttrId {
    Req,
    Mra,
    Rej,
    Rep,
    Rtu,
    Dreq,
    Drep,
    SidrReq,
    SidrRep,
}

impl AttrId {
    pub const fn value(self) -> u16 {
        match self {
            AttrId::Req => 0x0010,
            AttrId::Mra => 0x0011,
            AttrId::Rej => 0x0012,
            AttrId::Rep => 0x0013,
            AttrId::Rtu => 0x0014,
            AttrId::Dreq => 0x0015,
            AttrId::Drep => 0x0016,
            AttrId::SidrReq => 0x0017,
            AttrId::SidrRep => 0x0018,
        }
    }

    pub fn from_value(v: u16) -> Result<AttrId, WireError> {
        Ok(match v {
            0x0010 => AttrId::Req,
            0x0011 => AttrId::Mra,
            0x0012 => AttrId::Rej,
            0x0013 => AttrId::Rep,
            0x0014 => AttrId::Rtu,
            0x0015 => AttrId::Dreq,
            0x0016 => AttrId::Drep,
            0x0017 => AttrId::SidrReq,
            0x0018 => AttrId::SidrRep,
            other => return Err(WireError::UnknownAttr(other)),
        })
    }
}

/// The parts of the header a CM message varies: the rest is fixed (base
/// version 1, class 0x07 version 2, method Send, status 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MadHeader {
    pub attr: AttrId,
    /// Chosen by the side that starts an exchange and echoed in the answers
    /// (a REP carries its REQ's, an RTU the REP's): how retransmissions and
    /// answers are matched.
    pub tid: u64,
    /// The attribute modifier (0 in every CM message but a few vendor ones).
    pub attr_mod: u32,
}

mod field {
    use super::super::bits::Field;
    use super::f;
    pub const BASE_VERSION: Field = f(0, 0, 8);
    pub const CLASS: Field = f(1, 0, 8);
    pub const CLASS_VERSION: Field = f(2, 0, 8);
    pub const METHOD: Field = f(3, 0, 8);
    pub const STATUS: Field = f(4, 0, 16);
    pub const ATTR_ID: Field = f(16, 0, 16);
    pub const ATTR_MOD: Field = f(20, 0, 32);
    pub const TID: usize = 8;
}

impl MadHeader {
    /// Parses the header of a MAD, refusing anything but a CM Send.
    pub fn parse(b: &[u8]) -> Result<MadHeader, WireError> {
        use field::*;
        if b.len() < MAD_LEN {
            return Err(WireError::Truncated);
        }
        if BASE_VERSION.get(b) != 1
            || CLASS.get(b) != u32::from(CM_CLASS)
            || CLASS_VERSION.get(b) != u32::from(CM_CLASS_VERSION)
        {
            return Err(WireError::NotCm);
        }
        if METHOD.get(b) != u32::from(METHOD_SEND) {
            return Err(WireError::BadField("method"));
        }
        if STATUS.get(b) != 0 {
            return Err(WireError::BadField("status"));
        }
        Ok(MadHeader {
            attr: AttrId::from_value(ATTR_ID.get(b) as u16)?,
            tid: get_u64(b, TID),
            attr_mod: ATTR_MOD.get(b),
        })
    }

    /// Writes the header into the first [`HEADER_LEN`] bytes of `b`.
    pub fn emit(&self, b: &mut [u8]) {
        use field::*;
        b[..HEADER_LEN].fill(0);
        BASE_VERSION.put(b, 1);
        CLASS.put(b, u32::from(CM_CLASS));
        CLASS_VERSION.put(b, u32::from(CM_CLASS_VERSION));
        METHOD.put(b, u32::from(METHOD_SEND));
        put_u64(b, TID, self.tid);
        ATTR_ID.put(b, u32::from(self.attr.value()));
        ATTR_MOD.put(b, self.attr_mod);
    }
}
