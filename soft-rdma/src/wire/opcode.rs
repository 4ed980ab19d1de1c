//! The opcode table: transport service (top three bits) + operation (low
//! five bits), which pairs exist, and what each operation carries.

use std::fmt;

use super::ext::ExtKind;
use super::xrc::XrcKind;

/// Transport service of an opcode (its top three bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Rc,
    Uc,
    Ud,
    /// eXtended Reliable Connected: RC's operations, requests with an XRCETH.
    Xrc,
}

impl Transport {
    /// Every transport, in opcode order.
    pub const ALL: [Transport; 4] = [Transport::Rc, Transport::Uc, Transport::Ud, Transport::Xrc];

    /// The opcode's top three bits: RC 0x00, UC 0x20, UD 0x60, XRC 0xa0.
    pub const fn base(self) -> u8 {
        match self {
            Transport::Rc => 0x00,
            Transport::Uc => 0x20,
            Transport::Ud => 0x60,
            Transport::Xrc => 0xa0,
        }
    }

    /// The transport of `byte & 0xe0`; `None` for RD, CNP and the rest.
    pub const fn from_base(byte: u8) -> Option<Transport> {
        match byte & 0xe0 {
            0x00 => Some(Transport::Rc),
            0x20 => Some(Transport::Uc),
            0x60 => Some(Transport::Ud),
            0xa0 => Some(Transport::Xrc),
            _ => None,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Transport::Rc => "RC",
            Transport::Uc => "UC",
            Transport::Ud => "UD",
            Transport::Xrc => "XRC",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
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
    /// FLUSH (IBTA memory placement extensions): FETH + RETH, no payload.
    Flush,
    /// ATOMIC WRITE: RETH + an 8-byte payload written at once.
    AtomicWrite,
}

impl Op {
    /// Every operation, in code order.
    pub const ALL: [Op; 25] = [
        Op::SendFirst,
        Op::SendMiddle,
        Op::SendLast,
        Op::SendLastImm,
        Op::SendOnly,
        Op::SendOnlyImm,
        Op::WriteFirst,
        Op::WriteMiddle,
        Op::WriteLast,
        Op::WriteLastImm,
        Op::WriteOnly,
        Op::WriteOnlyImm,
        Op::ReadRequest,
        Op::ReadRespFirst,
        Op::ReadRespMiddle,
        Op::ReadRespLast,
        Op::ReadRespOnly,
        Op::Ack,
        Op::AtomicAck,
        Op::CompareSwap,
        Op::FetchAdd,
        Op::SendLastInv,
        Op::SendOnlyInv,
        Op::Flush,
        Op::AtomicWrite,
    ];

    /// The opcode's low five bits.
    pub const fn code(self) -> u8 {
        match self {
            Op::SendFirst => 0x00,
            Op::SendMiddle => 0x01,
            Op::SendLast => 0x02,
            Op::SendLastImm => 0x03,
            Op::SendOnly => 0x04,
            Op::SendOnlyImm => 0x05,
            Op::WriteFirst => 0x06,
            Op::WriteMiddle => 0x07,
            Op::WriteLast => 0x08,
            Op::WriteLastImm => 0x09,
            Op::WriteOnly => 0x0a,
            Op::WriteOnlyImm => 0x0b,
            Op::ReadRequest => 0x0c,
            Op::ReadRespFirst => 0x0d,
            Op::ReadRespMiddle => 0x0e,
            Op::ReadRespLast => 0x0f,
            Op::ReadRespOnly => 0x10,
            Op::Ack => 0x11,
            Op::AtomicAck => 0x12,
            Op::CompareSwap => 0x13,
            Op::FetchAdd => 0x14,
            Op::SendLastInv => 0x16,
            Op::SendOnlyInv => 0x17,
            Op::Flush => 0x1c,
            Op::AtomicWrite => 0x1d,
        }
    }

    /// The operation of `code & 0x1f`; `None` for 0x15 (RESYNC) and the
    /// reserved codes.
    pub const fn from_code(code: u8) -> Option<Op> {
        Some(match code & 0x1f {
            0x00 => Op::SendFirst,
            0x01 => Op::SendMiddle,
            0x02 => Op::SendLast,
            0x03 => Op::SendLastImm,
            0x04 => Op::SendOnly,
            0x05 => Op::SendOnlyImm,
            0x06 => Op::WriteFirst,
            0x07 => Op::WriteMiddle,
            0x08 => Op::WriteLast,
            0x09 => Op::WriteLastImm,
            0x0a => Op::WriteOnly,
            0x0b => Op::WriteOnlyImm,
            0x0c => Op::ReadRequest,
            0x0d => Op::ReadRespFirst,
            0x0e => Op::ReadRespMiddle,
            0x0f => Op::ReadRespLast,
            0x10 => Op::ReadRespOnly,
            0x11 => Op::Ack,
            0x12 => Op::AtomicAck,
            0x13 => Op::CompareSwap,
            0x14 => Op::FetchAdd,
            0x16 => Op::SendLastInv,
            0x17 => Op::SendOnlyInv,
            0x1c => Op::Flush,
            0x1d => Op::AtomicWrite,
            _ => return None,
        })
    }

    /// Upper-case name as in the IBA / rdma-core tables, e.g. `RDMA_WRITE_FIRST`.
    pub const fn name(self) -> &'static str {
        match self {
            Op::SendFirst => "SEND_FIRST",
            Op::SendMiddle => "SEND_MIDDLE",
            Op::SendLast => "SEND_LAST",
            Op::SendLastImm => "SEND_LAST_IMM",
            Op::SendOnly => "SEND_ONLY",
            Op::SendOnlyImm => "SEND_ONLY_IMM",
            Op::WriteFirst => "RDMA_WRITE_FIRST",
            Op::WriteMiddle => "RDMA_WRITE_MIDDLE",
            Op::WriteLast => "RDMA_WRITE_LAST",
            Op::WriteLastImm => "RDMA_WRITE_LAST_IMM",
            Op::WriteOnly => "RDMA_WRITE_ONLY",
            Op::WriteOnlyImm => "RDMA_WRITE_ONLY_IMM",
            Op::ReadRequest => "RDMA_READ_REQUEST",
            Op::ReadRespFirst => "RDMA_READ_RESPONSE_FIRST",
            Op::ReadRespMiddle => "RDMA_READ_RESPONSE_MIDDLE",
            Op::ReadRespLast => "RDMA_READ_RESPONSE_LAST",
            Op::ReadRespOnly => "RDMA_READ_RESPONSE_ONLY",
            Op::Ack => "ACK",
            Op::AtomicAck => "ATOMIC_ACK",
            Op::CompareSwap => "COMPARE_SWAP",
            Op::FetchAdd => "FETCH_ADD",
            Op::SendLastInv => "SEND_LAST_INV",
            Op::SendOnlyInv => "SEND_ONLY_INV",
            Op::Flush => "FLUSH",
            Op::AtomicWrite => "ATOMIC_WRITE",
        }
    }

    /// SEND of any kind (first .. only with invalidate).
    pub const fn is_send(self) -> bool {
        matches!(
            self,
            Op::SendFirst
                | Op::SendMiddle
                | Op::SendLast
                | Op::SendLastImm
                | Op::SendOnly
                | Op::SendOnlyImm
                | Op::SendLastInv
                | Op::SendOnlyInv
        )
    }

    /// RDMA WRITE of any kind.
    pub const fn is_write(self) -> bool {
        matches!(
            self,
            Op::WriteFirst
                | Op::WriteMiddle
                | Op::WriteLast
                | Op::WriteLastImm
                | Op::WriteOnly
                | Op::WriteOnlyImm
        )
    }

    /// RDMA READ response of any kind.
    pub const fn is_read_response(self) -> bool {
        matches!(
            self,
            Op::ReadRespFirst | Op::ReadRespMiddle | Op::ReadRespLast | Op::ReadRespOnly
        )
    }

    /// CMP&SWAP or FETCH&ADD (a request carrying an AtomicETH).
    pub const fn is_atomic(self) -> bool {
        matches!(self, Op::CompareSwap | Op::FetchAdd)
    }

    /// Sent by a responder (ACK, ATOMIC ACK, READ responses); the rest are
    /// requests.
    pub const fn is_response(self) -> bool {
        self.is_read_response() || matches!(self, Op::Ack | Op::AtomicAck)
    }

    /// Whether packets of this op may carry payload (SEND, WRITE, READ
    /// responses, ATOMIC WRITE). The others must have none, and no pad.
    pub const fn has_payload(self) -> bool {
        self.is_send()
            || self.is_write()
            || self.is_read_response()
            || matches!(self, Op::AtomicWrite)
    }

    /// FLUSH or ATOMIC WRITE (the memory placement extensions): single
    /// requests answered by a zero-length READ response.
    pub const fn is_placement(self) -> bool {
        matches!(self, Op::Flush | Op::AtomicWrite)
    }

    /// Starts a message: first and only packets, and the single-packet ops
    /// (READ request, ACK, ATOMIC ACK, atomics).
    pub const fn is_first(self) -> bool {
        !self.is_middle() && !self.is_last_only()
    }

    /// Neither starts nor ends a message.
    pub const fn is_middle(self) -> bool {
        matches!(self, Op::SendMiddle | Op::WriteMiddle | Op::ReadRespMiddle)
    }

    /// Ends a message: last and only packets, and the single-packet ops.
    pub const fn is_last(self) -> bool {
        !self.is_middle() && !self.is_first_only()
    }

    /// First packet of a multi-packet message (starts it, does not end it).
    const fn is_first_only(self) -> bool {
        matches!(self, Op::SendFirst | Op::WriteFirst | Op::ReadRespFirst)
    }

    /// Last packet of a multi-packet message (ends it, did not start it).
    const fn is_last_only(self) -> bool {
        matches!(
            self,
            Op::SendLast
                | Op::SendLastImm
                | Op::SendLastInv
                | Op::WriteLast
                | Op::WriteLastImm
                | Op::ReadRespLast
        )
    }

    /// Carries immediate data (ImmDt).
    pub const fn carries_imm(self) -> bool {
        matches!(
            self,
            Op::SendLastImm | Op::SendOnlyImm | Op::WriteLastImm | Op::WriteOnlyImm
        )
    }

    /// Carries an IETH (an R_Key to invalidate).
    pub const fn carries_inv(self) -> bool {
        matches!(self, Op::SendLastInv | Op::SendOnlyInv)
    }

    /// Carries a RETH.
    pub const fn carries_reth(self) -> bool {
        matches!(
            self,
            Op::WriteFirst
                | Op::WriteOnly
                | Op::WriteOnlyImm
                | Op::ReadRequest
                | Op::Flush
                | Op::AtomicWrite
        )
    }

    /// Carries a FETH (FLUSH: placement type and selectivity level).
    pub const fn carries_feth(self) -> bool {
        matches!(self, Op::Flush)
    }

    /// Carries an AETH (ACK, ATOMIC ACK, READ response first/last/only).
    pub const fn carries_aeth(self) -> bool {
        matches!(
            self,
            Op::Ack | Op::AtomicAck | Op::ReadRespFirst | Op::ReadRespLast | Op::ReadRespOnly
        )
    }

    /// The extension headers this op carries on RC/UC (UD adds a DETH: see
    /// [`Opcode::ext_kind`]).
    pub const fn ext_kind(self) -> ExtKind {
        match self {
            Op::SendFirst
            | Op::SendMiddle
            | Op::SendLast
            | Op::SendOnly
            | Op::WriteMiddle
            | Op::WriteLast
            | Op::ReadRespMiddle => ExtKind::None,
            Op::SendLastImm | Op::SendOnlyImm | Op::WriteLastImm => ExtKind::Imm,
            Op::SendLastInv | Op::SendOnlyInv => ExtKind::Inv,
            Op::WriteFirst | Op::WriteOnly | Op::ReadRequest | Op::AtomicWrite => ExtKind::Reth,
            Op::WriteOnlyImm => ExtKind::RethImm,
            Op::Ack | Op::ReadRespFirst | Op::ReadRespLast | Op::ReadRespOnly => ExtKind::Aeth,
            Op::AtomicAck => ExtKind::AtomicAck,
            Op::CompareSwap | Op::FetchAdd => ExtKind::Atomic,
            Op::Flush => ExtKind::FethReth,
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A valid (transport, operation) pair: RC has all ops; XRC those of RC but
/// FLUSH and ATOMIC WRITE (RC only, as in rxe's table); UC has SEND and
/// WRITE; UD only SEND only / SEND only with immediate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Opcode {
    transport: Transport,
    op: Op,
}

impl Opcode {
    /// `None` for a pair that does not exist (e.g. UD READ).
    pub const fn new(transport: Transport, op: Op) -> Option<Opcode> {
        let legal = match transport {
            Transport::Rc => true,
            Transport::Xrc => !matches!(op, Op::Flush | Op::AtomicWrite),
            Transport::Uc => (op.is_send() && !op.carries_inv()) || op.is_write(),
            Transport::Ud => matches!(op, Op::SendOnly | Op::SendOnlyImm),
        };
        if legal {
            Some(Opcode { transport, op })
        } else {
            None
        }
    }

    pub const fn from_u8(byte: u8) -> Option<Opcode> {
        match (Transport::from_base(byte), Op::from_code(byte)) {
            (Some(t), Some(op)) => Opcode::new(t, op),
            _ => None,
        }
    }

    pub const fn to_u8(self) -> u8 {
        self.transport.base() | self.op.code()
    }

    pub const fn transport(self) -> Transport {
        self.transport
    }

    pub const fn op(self) -> Op {
        self.op
    }

    /// Every valid opcode (RC, then UC, UD, XRC; in code order).
    pub fn all() -> impl Iterator<Item = Opcode> {
        Transport::ALL
            .into_iter()
            .flat_map(|t| Op::ALL.into_iter().filter_map(move |op| Opcode::new(t, op)))
    }

    /// The extension headers packets of this opcode carry.
    pub const fn ext_kind(self) -> ExtKind {
        match (self.transport, self.op) {
            (Transport::Ud, Op::SendOnlyImm) => ExtKind::DethImm,
            (Transport::Ud, _) => ExtKind::Deth,
            (Transport::Xrc, op) if !op.is_response() => match XrcKind::of(op.ext_kind()) {
                Some(k) => ExtKind::Xrc(k),
                None => op.ext_kind(),
            },
            (_, op) => op.ext_kind(),
        }
    }

    /// BTH + extension headers.
    pub const fn header_len(self) -> usize {
        super::bth::BTH_LEN + self.ext_kind().len()
    }
}

/// E.g. `RC SEND_ONLY`.
impl fmt::Display for Opcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.transport, self.op)
    }
}
