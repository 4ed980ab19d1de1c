//! The CM messages (IBTA volume 1, tables 106–120), each a struct of typed
//! fields. Offsets below are into the CM data, after the MAD header; every
//! message's data is 232 bytes, the rest of it private data.
//!
//! A received message's `private_data` is the whole field (a receiver cannot
//! tell how much the sender filled in: rdma_cm hands all of it up); an
//! emitted one is padded with zeros.

use super::bits::{f, get_16, get_u64, put_u64, Field};
use super::mad::{AttrId, MadHeader, HEADER_LEN, MAD_LEN};
use super::WireError;

/// Bytes of CM data after the MAD header.
pub const DATA_LEN: usize = MAD_LEN - HEADER_LEN;

/// The transport a REQ asks for (transport service type and extended
/// transport type together).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Rc,
    Uc,
    Rd,
    Xrc,
}

impl Transport {
    fn bits(self) -> (u32, u32) {
        match self {
            Transport::Rc => (0, 0),
            Transport::Uc => (1, 0),
            Transport::Rd => (2, 0),
            Transport::Xrc => (3, 1),
        }
    }

    fn from_bits(service: u32, extended: u32) -> Result<Transport, WireError> {
        Ok(match (service, extended) {
            (0, 0) => Transport::Rc,
            (1, 0) => Transport::Uc,
            (2, 0) => Transport::Rd,
            (3, 1) => Transport::Xrc,
            _ => return Err(WireError::BadField("transport service type")),
        })
    }
}

/// One path of a REQ (44 bytes; the primary at 52, the alternate at 96).
/// On RoCE the GIDs carry the addresses and the LIDs mean nothing (the
/// kernel's CM sends the permissive LID, 0xffff, for a routed path).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Path {
    pub local_lid: u16,
    pub remote_lid: u16,
    pub local_gid: [u8; 16],
    pub remote_gid: [u8; 16],
    /// 20 bits.
    pub flow_label: u32,
    /// 6 bits (the IBA rate encoding).
    pub packet_rate: u8,
    pub traffic_class: u8,
    pub hop_limit: u8,
    /// 4 bits.
    pub sl: u8,
    pub subnet_local: bool,
    /// 5 bits: 4.096 µs × 2^value.
    pub local_ack_timeout: u8,
}

mod path {
    use super::{f, Field};
    pub const LOCAL_LID: Field = f(0, 0, 16);
    pub const REMOTE_LID: Field = f(2, 0, 16);
    pub const LOCAL_GID: usize = 4;
    pub const REMOTE_GID: usize = 20;
    pub const FLOW_LABEL: Field = f(36, 0, 20);
    pub const PACKET_RATE: Field = f(39, 2, 6);
    pub const TRAFFIC_CLASS: Field = f(40, 0, 8);
    pub const HOP_LIMIT: Field = f(41, 0, 8);
    pub const SL: Field = f(42, 0, 4);
    pub const SUBNET_LOCAL: Field = f(42, 4, 1);
    pub const LOCAL_ACK_TIMEOUT: Field = f(43, 0, 5);
    pub const LEN: usize = 44;
}

impl Path {
    fn parse(b: &[u8]) -> Path {
        use path::*;
        Path {
            local_lid: LOCAL_LID.get(b) as u16,
            remote_lid: REMOTE_LID.get(b) as u16,
            local_gid: get_16(b, LOCAL_GID),
            remote_gid: get_16(b, REMOTE_GID),
            flow_label: FLOW_LABEL.get(b),
            packet_rate: PACKET_RATE.get(b) as u8,
            traffic_class: TRAFFIC_CLASS.get(b) as u8,
            hop_limit: HOP_LIMIT.get(b) as u8,
            sl: SL.get(b) as u8,
            subnet_local: SUBNET_LOCAL.get(b) != 0,
            local_ack_timeout: LOCAL_ACK_TIMEOUT.get(b) as u8,
        }
    }

    fn emit(&self, b: &mut [u8]) {
        use path::*;
        LOCAL_LID.put(b, self.local_lid.into());
        REMOTE_LID.put(b, self.remote_lid.into());
        b[LOCAL_GID..LOCAL_GID + 16].copy_from_slice(&self.local_gid);
        b[REMOTE_GID..REMOTE_GID + 16].copy_from_slice(&self.remote_gid);
        FLOW_LABEL.put(b, self.flow_label);
        PACKET_RATE.put(b, self.packet_rate.into());
        TRAFFIC_CLASS.put(b, self.traffic_class.into());
        HOP_LIMIT.put(b, self.hop_limit.into());
        SL.put(b, self.sl.into());
        SUBNET_LOCAL.put(b, self.subnet_local.into());
        LOCAL_ACK_TIMEOUT.put(b, self.local_ack_timeout.into());
    }

    /// An alternate path is absent when its bytes are all zero (but for
    /// the REQ's SAP-supported bit, which shares its last byte).
    fn is_absent(b: &[u8]) -> bool {
        b[..path::LEN - 1].iter().all(|&x| x == 0) && path::LOCAL_ACK_TIMEOUT.get(b) == 0
    }
}

/// Copies private data into its field, zero-padded.
fn put_private(b: &mut [u8], at: usize, len: usize, data: &[u8]) -> Result<(), WireError> {
    if data.len() > len {
        return Err(WireError::PrivateDataTooLong);
    }
    b[at..at + data.len()].copy_from_slice(data);
    b[at + data.len()..at + len].fill(0);
    Ok(())
}

/// REQ: request for communication (table 106).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Req {
    pub local_comm_id: u32,
    /// 24 bits.
    pub vendor_id: u32,
    pub service_id: u64,
    pub local_ca_guid: u64,
    pub local_qkey: u32,
    /// 24 bits.
    pub local_qpn: u32,
    pub responder_resources: u8,
    /// 24 bits.
    pub local_eecn: u32,
    pub initiator_depth: u8,
    /// 24 bits.
    pub remote_eecn: u32,
    /// 5 bits: 4.096 µs × 2^value.
    pub remote_cm_response_timeout: u8,
    pub transport: Transport,
    pub end_to_end_flow_control: bool,
    /// 24 bits.
    pub starting_psn: u32,
    /// 5 bits.
    pub local_cm_response_timeout: u8,
    /// 3 bits.
    pub retry_count: u8,
    pub pkey: u16,
    /// 4 bits: the IBA MTU encoding (1 = 256 … 5 = 4096).
    pub path_mtu: u8,
    pub rdc_exists: bool,
    /// 3 bits.
    pub rnr_retry_count: u8,
    /// 4 bits.
    pub max_cm_retries: u8,
    pub srq: bool,
    pub primary: Path,
    pub alternate: Option<Path>,
    pub sap_supported: bool,
    pub private_data: Vec<u8>,
}

mod req {
    use super::{f, Field};
    pub const LOCAL_COMM_ID: Field = f(0, 0, 32);
    pub const VENDOR_ID: Field = f(5, 0, 24);
    pub const SERVICE_ID: usize = 8;
    pub const LOCAL_CA_GUID: usize = 16;
    pub const LOCAL_QKEY: Field = f(28, 0, 32);
    pub const LOCAL_QPN: Field = f(32, 0, 24);
    pub const RESPONDER_RESOURCES: Field = f(35, 0, 8);
    pub const LOCAL_EECN: Field = f(36, 0, 24);
    pub const INITIATOR_DEPTH: Field = f(39, 0, 8);
    pub const REMOTE_EECN: Field = f(40, 0, 24);
    pub const REMOTE_CM_RESPONSE_TIMEOUT: Field = f(43, 0, 5);
    pub const TRANSPORT_SERVICE_TYPE: Field = f(43, 5, 2);
    pub const END_TO_END_FLOW_CONTROL: Field = f(43, 7, 1);
    pub const STARTING_PSN: Field = f(44, 0, 24);
    pub const LOCAL_CM_RESPONSE_TIMEOUT: Field = f(47, 0, 5);
    pub const RETRY_COUNT: Field = f(47, 5, 3);
    pub const PKEY: Field = f(48, 0, 16);
    pub const PATH_MTU: Field = f(50, 0, 4);
    pub const RDC_EXISTS: Field = f(50, 4, 1);
    pub const RNR_RETRY_COUNT: Field = f(50, 5, 3);
    pub const MAX_CM_RETRIES: Field = f(51, 0, 4);
    pub const SRQ: Field = f(51, 4, 1);
    pub const EXTENDED_TRANSPORT_TYPE: Field = f(51, 5, 3);
    pub const PRIMARY: usize = 52;
    pub const ALTERNATE: usize = 96;
    pub const SAP_SUPPORTED: Field = f(139, 5, 1);
    pub const PRIVATE_DATA: usize = 140;
}

impl Req {
    /// Bytes of private data a REQ carries (rdma_cm's IP header takes 36).
    pub const PRIVATE_DATA_LEN: usize = DATA_LEN - req::PRIVATE_DATA;

    fn parse(b: &[u8]) -> Result<Req, WireError> {
        use req::*;
        Ok(Req {
            local_comm_id: LOCAL_COMM_ID.get(b),
            vendor_id: VENDOR_ID.get(b),
            service_id: get_u64(b, SERVICE_ID),
            local_ca_guid: get_u64(b, LOCAL_CA_GUID),
            local_qkey: LOCAL_QKEY.get(b),
            local_qpn: LOCAL_QPN.get(b),
            responder_resources: RESPONDER_RESOURCES.get(b) as u8,
            local_eecn: LOCAL_EECN.get(b),
            initiator_depth: INITIATOR_DEPTH.get(b) as u8,
            remote_eecn: REMOTE_EECN.get(b),
            remote_cm_response_timeout: REMOTE_CM_RESPONSE_TIMEOUT.get(b) as u8,
            transport: Transport::from_bits(
                TRANSPORT_SERVICE_TYPE.get(b),
                EXTENDED_TRANSPORT_TYPE.get(b),
            )?,
            end_to_end_flow_control: END_TO_END_FLOW_CONTROL.get(b) != 0,
            starting_psn: STARTING_PSN.get(b),
            local_cm_response_timeout: LOCAL_CM_RESPONSE_TIMEOUT.get(b) as u8,
            retry_count: RETRY_COUNT.get(b) as u8,
            pkey: PKEY.get(b) as u16,
            path_mtu: PATH_MTU.get(b) as u8,
            rdc_exists: RDC_EXISTS.get(b) != 0,
            rnr_retry_count: RNR_RETRY_COUNT.get(b) as u8,
            max_cm_retries: MAX_CM_RETRIES.get(b) as u8,
            srq: SRQ.get(b) != 0,
            primary: Path::parse(&b[PRIMARY..]),
            alternate: (!Path::is_absent(&b[ALTERNATE..])).then(|| Path::parse(&b[ALTERNATE..])),
            sap_supported: SAP_SUPPORTED.get(b) != 0,
            private_data: b[PRIVATE_DATA..DATA_LEN].to_vec(),
        })
    }

    fn emit(&self, b: &mut [u8]) -> Result<(), WireError> {
        use req::*;
        LOCAL_COMM_ID.put(b, self.local_comm_id);
        VENDOR_ID.put(b, self.vendor_id);
        put_u64(b, SERVICE_ID, self.service_id);
        put_u64(b, LOCAL_CA_GUID, self.local_ca_guid);
        LOCAL_QKEY.put(b, self.local_qkey);
        LOCAL_QPN.put(b, self.local_qpn);
        RESPONDER_RESOURCES.put(b, self.responder_resources.into());
        LOCAL_EECN.put(b, self.local_eecn);
        INITIATOR_DEPTH.put(b, self.initiator_depth.into());
        REMOTE_EECN.put(b, self.remote_eecn);
        REMOTE_CM_RESPONSE_TIMEOUT.put(b, self.remote_cm_response_timeout.into());
        let (service, extended) = self.transport.bits();
        TRANSPORT_SERVICE_TYPE.put(b, service);
        END_TO_END_FLOW_CONTROL.put(b, self.end_to_end_flow_control.into());
        STARTING_PSN.put(b, self.starting_psn);
        LOCAL_CM_RESPONSE_TIMEOUT.put(b, self.local_cm_response_timeout.into());
        RETRY_COUNT.put(b, self.retry_count.into());
        PKEY.put(b, self.pkey.into());
        PATH_MTU.put(b, self.path_mtu.into());
        RDC_EXISTS.put(b, self.rdc_exists.into());
        RNR_RETRY_COUNT.put(b, self.rnr_retry_count.into());
        MAX_CM_RETRIES.put(b, self.max_cm_retries.into());
        SRQ.put(b, self.srq.into());
        EXTENDED_TRANSPORT_TYPE.put(b, extended);
        self.primary.emit(&mut b[PRIMARY..]);
        if let Some(alt) = &self.alternate {
            alt.emit(&mut b[ALTERNATE..]);
        }
        SAP_SUPPORTED.put(b, self.sap_supported.into());
        put_private(b, PRIVATE_DATA, Self::PRIVATE_DATA_LEN, &self.private_data)
    }
}

/// Which message an MRA or REJ answers (2 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answered {
    Req,
    Rep,
    /// A LAP (MRA) or any other message (REJ).
    Other,
}

impl Answered {
    fn bits(self) -> u32 {
        match self {
            Answered::Req => 0,
            Answered::Rep => 1,
            Answered::Other => 2,
        }
    }

    fn from_bits(v: u32) -> Result<Answered, WireError> {
        match v {
            0 => Ok(Answered::Req),
            1 => Ok(Answered::Rep),
            2 => Ok(Answered::Other),
            _ => Err(WireError::BadField("message answered")),
        }
    }
}

/// The local and remote communication IDs every connected-mode message
/// but the REQ begins with.
const LOCAL_COMM_ID: Field = f(0, 0, 32);
const REMOTE_COMM_ID: Field = f(4, 0, 32);

/// MRA: message receipt acknowledgement — "I got it, answering takes
/// longer" (table 107).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mra {
    pub local_comm_id: u32,
    pub remote_comm_id: u32,
    pub message_mraed: Answered,
    /// 5 bits: 4.096 µs × 2^value.
    pub service_timeout: u8,
    pub private_data: Vec<u8>,
}

impl Mra {
    const MRAED: Field = f(8, 0, 2);
    const SERVICE_TIMEOUT: Field = f(9, 0, 5);
    const PRIVATE_DATA: usize = 10;
    pub const PRIVATE_DATA_LEN: usize = DATA_LEN - Self::PRIVATE_DATA;

    fn parse(b: &[u8]) -> Result<Mra, WireError> {
        Ok(Mra {
            local_comm_id: LOCAL_COMM_ID.get(b),
            remote_comm_id: REMOTE_COMM_ID.get(b),
            message_mraed: Answered::from_bits(Self::MRAED.get(b))?,
            service_timeout: Self::SERVICE_TIMEOUT.get(b) as u8,
            private_data: b[Self::PRIVATE_DATA..DATA_LEN].to_vec(),
        })
    }

    fn emit(&self, b: &mut [u8]) -> Result<(), WireError> {
        LOCAL_COMM_ID.put(b, self.local_comm_id);
        REMOTE_COMM_ID.put(b, self.remote_comm_id);
        Self::MRAED.put(b, self.message_mraed.bits());
        Self::SERVICE_TIMEOUT.put(b, self.service_timeout.into());
        put_private(
            b,
            Self::PRIVATE_DATA,
            Self::PRIVATE_DATA_LEN,
            &self.private_data,
        )
    }
}

/// A REJ's reason (table 109); any value may arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RejReason(pub u16);

impl RejReason {
    pub const NO_QP: RejReason = RejReason(1);
    pub const NO_RESOURCES: RejReason = RejReason(3);
    pub const TIMEOUT: RejReason = RejReason(4);
    pub const UNSUPPORTED: RejReason = RejReason(5);
    pub const INVALID_COMM_ID: RejReason = RejReason(6);
    pub const INVALID_COMM_INSTANCE: RejReason = RejReason(7);
    pub const INVALID_SERVICE_ID: RejReason = RejReason(8);
    pub const INVALID_TRANSPORT_TYPE: RejReason = RejReason(9);
    pub const STALE_CONN: RejReason = RejReason(10);
    pub const INVALID_GID: RejReason = RejReason(12);
    pub const INVALID_MTU: RejReason = RejReason(26);
    pub const INSUFFICIENT_RESP_RESOURCES: RejReason = RejReason(27);
    pub const CONSUMER_DEFINED: RejReason = RejReason(28);
    pub const INVALID_RNR_RETRY: RejReason = RejReason(29);
    pub const DUPLICATE_LOCAL_COMM_ID: RejReason = RejReason(30);
    pub const INVALID_CLASS_VERSION: RejReason = RejReason(31);
}

/// REJ: reject (table 108).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rej {
    pub local_comm_id: u32,
    pub remote_comm_id: u32,
    pub message_rejected: Answered,
    pub reason: RejReason,
    /// Additional rejection information (at most 72 bytes; its length is
    /// sent).
    pub ari: Vec<u8>,
    pub private_data: Vec<u8>,
}

impl Rej {
    const REJECTED: Field = f(8, 0, 2);
    const ARI_LENGTH: Field = f(9, 0, 7);
    const REASON: Field = f(10, 0, 16);
    const ARI: usize = 12;
    const ARI_MAX: usize = 72;
    const PRIVATE_DATA: usize = 84;
    pub const PRIVATE_DATA_LEN: usize = DATA_LEN - Self::PRIVATE_DATA;

    fn parse(b: &[u8]) -> Result<Rej, WireError> {
        let ari_len = Self::ARI_LENGTH.get(b) as usize;
        if ari_len > Self::ARI_MAX {
            return Err(WireError::BadField("rejected info length"));
        }
        Ok(Rej {
            local_comm_id: LOCAL_COMM_ID.get(b),
            remote_comm_id: REMOTE_COMM_ID.get(b),
            message_rejected: Answered::from_bits(Self::REJECTED.get(b))?,
            reason: RejReason(Self::REASON.get(b) as u16),
            ari: b[Self::ARI..Self::ARI + ari_len].to_vec(),
            private_data: b[Self::PRIVATE_DATA..DATA_LEN].to_vec(),
        })
    }

    fn emit(&self, b: &mut [u8]) -> Result<(), WireError> {
        if self.ari.len() > Self::ARI_MAX {
            return Err(WireError::BadField("rejected info length"));
        }
        LOCAL_COMM_ID.put(b, self.local_comm_id);
        REMOTE_COMM_ID.put(b, self.remote_comm_id);
        Self::REJECTED.put(b, self.message_rejected.bits());
        Self::ARI_LENGTH.put(b, self.ari.len() as u32);
        Self::REASON.put(b, self.reason.0.into());
        b[Self::ARI..Self::ARI + self.ari.len()].copy_from_slice(&self.ari);
        put_private(
            b,
            Self::PRIVATE_DATA,
            Self::PRIVATE_DATA_LEN,
            &self.private_data,
        )
    }
}

/// REP: reply to a REQ (table 110).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rep {
    pub local_comm_id: u32,
    pub remote_comm_id: u32,
    pub local_qkey: u32,
    /// 24 bits.
    pub local_qpn: u32,
    /// 24 bits.
    pub local_eecn: u32,
    /// 24 bits.
    pub starting_psn: u32,
    /// 24 bits (sent as three bytes at 15, 19 and 23).
    pub vendor_id: u32,
    pub responder_resources: u8,
    pub initiator_depth: u8,
    /// 5 bits.
    pub target_ack_delay: u8,
    /// 2 bits.
    pub failover_accepted: u8,
    pub end_to_end_flow_control: bool,
    /// 3 bits.
    pub rnr_retry_count: u8,
    pub srq: bool,
    pub local_ca_guid: u64,
    pub private_data: Vec<u8>,
}

mod rep {
    use super::{f, Field};
    pub const LOCAL_QKEY: Field = f(8, 0, 32);
    pub const LOCAL_QPN: Field = f(12, 0, 24);
    pub const VENDOR_ID_H: Field = f(15, 0, 8);
    pub const LOCAL_EECN: Field = f(16, 0, 24);
    pub const VENDOR_ID_M: Field = f(19, 0, 8);
    pub const STARTING_PSN: Field = f(20, 0, 24);
    pub const VENDOR_ID_L: Field = f(23, 0, 8);
    pub const RESPONDER_RESOURCES: Field = f(24, 0, 8);
    pub const INITIATOR_DEPTH: Field = f(25, 0, 8);
    pub const TARGET_ACK_DELAY: Field = f(26, 0, 5);
    pub const FAILOVER_ACCEPTED: Field = f(26, 5, 2);
    pub const END_TO_END_FLOW_CONTROL: Field = f(26, 7, 1);
    pub const RNR_RETRY_COUNT: Field = f(27, 0, 3);
    pub const SRQ: Field = f(27, 3, 1);
    pub const LOCAL_CA_GUID: usize = 28;
    pub const PRIVATE_DATA: usize = 36;
}

impl Rep {
    pub const PRIVATE_DATA_LEN: usize = DATA_LEN - rep::PRIVATE_DATA;

    fn parse(b: &[u8]) -> Result<Rep, WireError> {
        use rep::*;
        Ok(Rep {
            local_comm_id: LOCAL_COMM_ID.get(b),
            remote_comm_id: REMOTE_COMM_ID.get(b),
            local_qkey: LOCAL_QKEY.get(b),
            local_qpn: LOCAL_QPN.get(b),
            local_eecn: LOCAL_EECN.get(b),
            starting_psn: STARTING_PSN.get(b),
            vendor_id: VENDOR_ID_H.get(b) << 16 | VENDOR_ID_M.get(b) << 8 | VENDOR_ID_L.get(b),
            responder_resources: RESPONDER_RESOURCES.get(b) as u8,
            initiator_depth: INITIATOR_DEPTH.get(b) as u8,
            target_ack_delay: TARGET_ACK_DELAY.get(b) as u8,
            failover_accepted: FAILOVER_ACCEPTED.get(b) as u8,
            end_to_end_flow_control: END_TO_END_FLOW_CONTROL.get(b) != 0,
            rnr_retry_count: RNR_RETRY_COUNT.get(b) as u8,
            srq: SRQ.get(b) != 0,
            local_ca_guid: get_u64(b, LOCAL_CA_GUID),
            private_data: b[PRIVATE_DATA..DATA_LEN].to_vec(),
        })
    }

    fn emit(&self, b: &mut [u8]) -> Result<(), WireError> {
        use rep::*;
        LOCAL_COMM_ID.put(b, self.local_comm_id);
        REMOTE_COMM_ID.put(b, self.remote_comm_id);
        LOCAL_QKEY.put(b, self.local_qkey);
        LOCAL_QPN.put(b, self.local_qpn);
        VENDOR_ID_H.put(b, self.vendor_id >> 16);
        LOCAL_EECN.put(b, self.local_eecn);
        VENDOR_ID_M.put(b, self.vendor_id >> 8);
        STARTING_PSN.put(b, self.starting_psn);
        VENDOR_ID_L.put(b, self.vendor_id);
        RESPONDER_RESOURCES.put(b, self.responder_resources.into());
        INITIATOR_DEPTH.put(b, self.initiator_depth.into());
        TARGET_ACK_DELAY.put(b, self.target_ack_delay.into());
        FAILOVER_ACCEPTED.put(b, self.failover_accepted.into());
        END_TO_END_FLOW_CONTROL.put(b, self.end_to_end_flow_control.into());
        RNR_RETRY_COUNT.put(b, self.rnr_retry_count.into());
        SRQ.put(b, self.srq.into());
        put_u64(b, LOCAL_CA_GUID, self.local_ca_guid);
        put_private(b, PRIVATE_DATA, Self::PRIVATE_DATA_LEN, &self.private_data)
    }
}

/// RTU: ready to use, the REP's acknowledgement (table 111).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rtu {
    pub local_comm_id: u32,
    pub remote_comm_id: u32,
    pub private_data: Vec<u8>,
}

/// DREP: reply to a DREQ (table 113); laid out as an RTU.
pub type Drep = Rtu;

impl Rtu {
    const PRIVATE_DATA: usize = 8;
    pub const PRIVATE_DATA_LEN: usize = DATA_LEN - Self::PRIVATE_DATA;

    fn parse(b: &[u8]) -> Rtu {
        Rtu {
            local_comm_id: LOCAL_COMM_ID.get(b),
            remote_comm_id: REMOTE_COMM_ID.get(b),
            private_data: b[Self::PRIVATE_DATA..DATA_LEN].to_vec(),
        }
    }

    fn emit(&self, b: &mut [u8]) -> Result<(), WireError> {
        LOCAL_COMM_ID.put(b, self.local_comm_id);
        REMOTE_COMM_ID.put(b, self.remote_comm_id);
        put_private(
            b,
            Self::PRIVATE_DATA,
            Self::PRIVATE_DATA_LEN,
            &self.private_data,
        )
    }
}

/// DREQ: request for disconnection (table 112).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dreq {
    pub local_comm_id: u32,
    pub remote_comm_id: u32,
    /// 24 bits: the receiver's QP, so a stale DREQ can be told apart.
    pub remote_qpn: u32,
    pub private_data: Vec<u8>,
}

impl Dreq {
    const REMOTE_QPN: Field = f(8, 0, 24);
    const PRIVATE_DATA: usize = 12;
    pub const PRIVATE_DATA_LEN: usize = DATA_LEN - Self::PRIVATE_DATA;

    fn parse(b: &[u8]) -> Dreq {
        Dreq {
            local_comm_id: LOCAL_COMM_ID.get(b),
            remote_comm_id: REMOTE_COMM_ID.get(b),
            remote_qpn: Self::REMOTE_QPN.get(b),
            private_data: b[Self::PRIVATE_DATA..DATA_LEN].to_vec(),
        }
    }

    fn emit(&self, b: &mut [u8]) -> Result<(), WireError> {
        LOCAL_COMM_ID.put(b, self.local_comm_id);
        REMOTE_COMM_ID.put(b, self.remote_comm_id);
        Self::REMOTE_QPN.put(b, self.remote_qpn);
        put_private(
            b,
            Self::PRIVATE_DATA,
            Self::PRIVATE_DATA_LEN,
            &self.private_data,
        )
    }
}

/// SIDR_REQ: service ID resolution request, how a UD id finds its peer's
/// QP (table 119).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SidrReq {
    pub request_id: u32,
    pub pkey: u16,
    pub service_id: u64,
    pub private_data: Vec<u8>,
}

impl SidrReq {
    const REQUEST_ID: Field = f(0, 0, 32);
    const PKEY: Field = f(4, 0, 16);
    const SERVICE_ID: usize = 8;
    const PRIVATE_DATA: usize = 16;
    pub const PRIVATE_DATA_LEN: usize = DATA_LEN - Self::PRIVATE_DATA;

    fn parse(b: &[u8]) -> SidrReq {
        SidrReq {
            request_id: Self::REQUEST_ID.get(b),
            pkey: Self::PKEY.get(b) as u16,
            service_id: get_u64(b, Self::SERVICE_ID),
            private_data: b[Self::PRIVATE_DATA..DATA_LEN].to_vec(),
        }
    }

    fn emit(&self, b: &mut [u8]) -> Result<(), WireError> {
        Self::REQUEST_ID.put(b, self.request_id);
        Self::PKEY.put(b, self.pkey.into());
        put_u64(b, Self::SERVICE_ID, self.service_id);
        put_private(
            b,
            Self::PRIVATE_DATA,
            Self::PRIVATE_DATA_LEN,
            &self.private_data,
        )
    }
}

/// SIDR_REP: the answer to a SIDR_REQ (table 120).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SidrRep {
    pub request_id: u32,
    /// 0 valid; 1 service ID not supported; 2 rejected by the service; 3 no
    /// QP; 4 redirect; 5 unsupported class version.
    pub status: u8,
    /// 24 bits (16 at 6, 8 at 11).
    pub vendor_id: u32,
    /// 24 bits.
    pub qpn: u32,
    pub service_id: u64,
    pub qkey: u32,
    /// Additional information (at most 72 bytes; its length is sent).
    pub info: Vec<u8>,
    pub private_data: Vec<u8>,
}

impl SidrRep {
    const REQUEST_ID: Field = f(0, 0, 32);
    const STATUS: Field = f(4, 0, 8);
    const INFO_LENGTH: Field = f(5, 0, 8);
    const VENDOR_ID_H: Field = f(6, 0, 16);
    const QPN: Field = f(8, 0, 24);
    const VENDOR_ID_L: Field = f(11, 0, 8);
    const SERVICE_ID: usize = 12;
    const QKEY: Field = f(20, 0, 32);
    const INFO: usize = 24;
    const INFO_MAX: usize = 72;
    const PRIVATE_DATA: usize = 96;
    pub const PRIVATE_DATA_LEN: usize = DATA_LEN - Self::PRIVATE_DATA;

    fn parse(b: &[u8]) -> Result<SidrRep, WireError> {
        let info_len = Self::INFO_LENGTH.get(b) as usize;
        if info_len > Self::INFO_MAX {
            return Err(WireError::BadField("additional information length"));
        }
        Ok(SidrRep {
            request_id: Self::REQUEST_ID.get(b),
            status: Self::STATUS.get(b) as u8,
            vendor_id: Self::VENDOR_ID_H.get(b) << 8 | Self::VENDOR_ID_L.get(b),
            qpn: Self::QPN.get(b),
            service_id: get_u64(b, Self::SERVICE_ID),
            qkey: Self::QKEY.get(b),
            info: b[Self::INFO..Self::INFO + info_len].to_vec(),
            private_data: b[Self::PRIVATE_DATA..DATA_LEN].to_vec(),
        })
    }

    fn emit(&self, b: &mut [u8]) -> Result<(), WireError> {
        if self.info.len() > Self::INFO_MAX {
            return Err(WireError::BadField("additional information length"));
        }
        Self::REQUEST_ID.put(b, self.request_id);
        Self::STATUS.put(b, self.status.into());
        Self::INFO_LENGTH.put(b, self.info.len() as u32);
        Self::VENDOR_ID_H.put(b, self.vendor_id >> 8);
        Self::QPN.put(b, self.qpn);
        Self::VENDOR_ID_L.put(b, self.vendor_id);
        put_u64(b, Self::SERVICE_ID, self.service_id);
        Self::QKEY.put(b, self.qkey);
        b[Self::INFO..Self::INFO + self.info.len()].copy_from_slice(&self.info);
        put_private(
            b,
            Self::PRIVATE_DATA,
            Self::PRIVATE_DATA_LEN,
            &self.private_data,
        )
    }
}

/// A CM message of any kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CmMessage {
    Req(Req),
    Mra(Mra),
    Rej(Rej),
    Rep(Rep),
    Rtu(Rtu),
    Dreq(Dreq),
    Drep(Drep),
    SidrReq(SidrReq),
    SidrRep(SidrRep),
}

impl CmMessage {
    pub fn attr(&self) -> AttrId {
        match self {
            CmMessage::Req(_) => AttrId::Req,
            CmMessage::Mra(_) => AttrId::Mra,
            CmMessage::Rej(_) => AttrId::Rej,
            CmMessage::Rep(_) => AttrId::Rep,
            CmMessage::Rtu(_) => AttrId::Rtu,
            CmMessage::Dreq(_) => AttrId::Dreq,
            CmMessage::Drep(_) => AttrId::Drep,
            CmMessage::SidrReq(_) => AttrId::SidrReq,
            CmMessage::SidrRep(_) => AttrId::SidrRep,
        }
    }

    /// Parses a whole MAD (at least [`MAD_LEN`] bytes; more is ignored).
    pub fn parse(mad: &[u8]) -> Result<(u64, CmMessage), WireError> {
        let h = MadHeader::parse(mad)?;
        let b = &mad[HEADER_LEN..MAD_LEN];
        let m = match h.attr {
            AttrId::Req => CmMessage::Req(Req::parse(b)?),
            AttrId::Mra => CmMessage::Mra(Mra::parse(b)?),
            AttrId::Rej => CmMessage::Rej(Rej::parse(b)?),
            AttrId::Rep => CmMessage::Rep(Rep::parse(b)?),
            AttrId::Rtu => CmMessage::Rtu(Rtu::parse(b)),
            AttrId::Dreq => CmMessage::Dreq(Dreq::parse(b)),
            AttrId::Drep => CmMessage::Drep(Rtu::parse(b)),
            AttrId::SidrReq => CmMessage::SidrReq(SidrReq::parse(b)),
            AttrId::SidrRep => CmMessage::SidrRep(SidrRep::parse(b)?),
        };
        Ok((h.tid, m))
    }

    /// The MAD carrying this message with transaction ID `tid`.
    pub fn emit(&self, tid: u64) -> Result<[u8; MAD_LEN], WireError> {
        let mut mad = [0u8; MAD_LEN];
        MadHeader {
            attr: self.attr(),
            tid,
            attr_mod: 0,
        }
        .emit(&mut mad);
        let b = &mut mad[HEADER_LEN..];
        match self {
            CmMessage::Req(m) => m.emit(b)?,
            CmMessage::Mra(m) => m.emit(b)?,
            CmMessage::Rej(m) => m.emit(b)?,
            CmMessage::Rep(m) => m.emit(b)?,
            CmMessage::Rtu(m) | CmMessage::Drep(m) => m.emit(b)?,
            CmMessage::Dreq(m) => m.emit(b)?,
            CmMessage::SidrReq(m) => m.emit(b)?,
            CmMessage::SidrRep(m) => m.emit(b)?,
        }
        Ok(mad)
    }
}
