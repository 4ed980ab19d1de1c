//! The InfiniBand transport packet as RoCEv2 carries it in a UDP payload:
//! BTH, extension headers, payload, pad, ICRC (IBA vol. 1 ch. 9, annex A17).
//!
//! Two views, smoltcp-style: [`Packet`] is a zero-copy view over bytes with
//! field accessors; [`PacketRepr`] is the parsed form, whose [`Ext`] enum holds
//! exactly the extension headers the opcode requires, so an illegal
//! combination cannot be built. Parsing never panics and never reads out of
//! bounds on any input.
//!
//! INTERFACE STUB: the types and signatures below are the contract the engine
//! codes against; the wire work fills in the bodies (and may add to it).

pub mod icrc;

use std::fmt;

/// Transport service of an opcode (its top three bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Rc,
    Uc,
    Ud,
}

/// The operation part of an opcode (its low five bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    SendFirst,
    SendMiddle,
    SendLast,
    SendLastImm,
    SendOnly,
    SendOnlyImm,
    WriteFirst,
    WriteMiddle,
    WriteLast,
    WriteLastImm,
    WriteOnly,
    WriteOnlyImm,
    ReadRequest,
    ReadRespFirst,
    ReadRespMiddle,
    ReadRespLast,
    ReadRespOnly,
    Ack,
    AtomicAck,
    CompareSwap,
    FetchAdd,
    SendLastInv,
    SendOnlyInv,
}

/// A valid (transport, operation) pair: RC has all ops; UC has SEND and
/// WRITE; UD only SEND only / SEND only with immediate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Opcode {
    transport: Transport,
    op: Op,
}

impl Opcode {
    /// `None` for a pair that does not exist (e.g. UD READ).
    pub fn new(transport: Transport, op: Op) -> Option<Opcode> {
        let _ = (transport, op);
        unimplemented!()
    }
    pub fn from_u8(byte: u8) -> Option<Opcode> {
        let _ = byte;
        unimplemented!()
    }
    pub fn to_u8(self) -> u8 {
        unimplemented!()
    }
    pub fn transport(self) -> Transport {
        self.transport
    }
    pub fn op(self) -> Op {
        self.op
    }
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

/// RDMA Extended Transport Header (16 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reth {
    pub va: u64,
    pub rkey: u32,
    pub len: u32,
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

/// AETH syndrome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syndrome {
    /// ACK with a credit count (0x1f: no limit).
    Ack { credits: u8 },
    /// RNR NAK with the 5-bit RNR timer code.
    RnrNak { timer: u8 },
    Nak(NakCode),
}

/// ACK Extended Transport Header (4 bytes). `msn` is 24-bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Aeth {
    pub syndrome: Syndrome,
    pub msn: u32,
}

/// Atomic Extended Transport Header (28 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AtomicEth {
    pub va: u64,
    pub rkey: u32,
    pub swap_add: u64,
    pub compare: u64,
}

/// Datagram Extended Transport Header (8 bytes). `src_qp` is 24-bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deth {
    pub qkey: u32,
    pub src_qp: u32,
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
    /// WRITE first/only, READ request.
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
}

/// Why bytes are not a valid packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// Shorter than the headers + ICRC the opcode needs.
    Truncated,
    /// Opcode byte not in the RC/UC/UD tables.
    UnknownOpcode(u8),
    /// Transport header version (TVer) not 0.
    BadVersion,
    /// Extension headers do not match the opcode (emit-side misuse).
    ExtMismatch,
    /// Pad count inconsistent with the length, or payload where none is allowed.
    BadLength,
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
    pub fn parse(bytes: &[u8]) -> Result<(PacketRepr, std::ops::Range<usize>), WireError> {
        let _ = bytes;
        unimplemented!()
    }
    /// BTH + extension headers.
    pub fn header_len(&self) -> usize {
        unimplemented!()
    }
    /// Header + payload + pad + ICRC: the UDP payload length.
    pub fn buffer_len(&self) -> usize {
        unimplemented!()
    }
    /// Write the headers into `buf[..header_len()]` and zero the pad after the
    /// payload; the caller writes the payload at `buf[header_len()..]` (before
    /// or after) and then seals the ICRC. `buf` must be `buffer_len()` long.
    /// `bth.pad` is computed from `payload_len`, whatever it held.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        let _ = buf;
        unimplemented!()
    }
}

/// tcpdump-like one-line summary.
impl fmt::Display for PacketRepr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let _ = f;
        unimplemented!()
    }
}

/// Zero-copy view over a packet's bytes (the wire work defines it fully).
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }
    pub fn into_inner(self) -> T {
        self.buffer
    }
}
