//! The verbs vocabulary: flags, states, work requests, completions, errors —
//! shaped after `infiniband/verbs.h` so the shim maps them one to one.
#![forbid(unsafe_code)]

use std::fmt;

/// A verbs error: the errno the real library would return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Errno {
    pub const EINVAL: Errno = Errno(libc::EINVAL);
    pub const ENOMEM: Errno = Errno(libc::ENOMEM);
    pub const EPERM: Errno = Errno(libc::EPERM);
    pub const EFAULT: Errno = Errno(libc::EFAULT);
    pub const EBUSY: Errno = Errno(libc::EBUSY);
    pub const EAGAIN: Errno = Errno(libc::EAGAIN);
    pub const EOPNOTSUPP: Errno = Errno(libc::EOPNOTSUPP);
    pub const ENOENT: Errno = Errno(libc::ENOENT);
    pub const ENODATA: Errno = Errno(libc::ENODATA);
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", std::io::Error::from_raw_os_error(self.0))
    }
}

impl std::error::Error for Errno {}

pub type Result<T> = std::result::Result<T, Errno>;

/// `ibv_access_flags`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Access(pub u32);

impl Access {
    pub const LOCAL_WRITE: Access = Access(1);
    pub const REMOTE_WRITE: Access = Access(1 << 1);
    pub const REMOTE_READ: Access = Access(1 << 2);
    pub const REMOTE_ATOMIC: Access = Access(1 << 3);
    /// The MR may have memory windows bound to it (`IBV_ACCESS_MW_BIND`).
    pub const MW_BIND: Access = Access(1 << 4);
    pub const ON_DEMAND: Access = Access(1 << 6);
    /// A peer may FLUSH the MR for global visibility (`IBV_ACCESS_FLUSH_GLOBAL`).
    pub const FLUSH_GLOBAL: Access = Access(1 << 8);
    /// A peer may FLUSH the MR for persistence (`IBV_ACCESS_FLUSH_PERSISTENT`):
    /// only persistent memory may be registered so, which this device never
    /// has (`Pd::reg_mr` refuses it: `EOPNOTSUPP`).
    pub const FLUSH_PERSISTENT: Access = Access(1 << 9);

    pub fn contains(self, other: Access) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for Access {
    type Output = Access;
    fn bitor(self, o: Access) -> Access {
        Access(self.0 | o.0)
    }
}

/// `ibv_qp_type` (the ones the device implements).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QpType {
    Rc,
    Uc,
    Ud,
    /// XRC initiator (`IBV_QPT_XRC_SEND`): a send queue only; each request
    /// names the remote XRC SRQ it is for.
    XrcSend,
    /// XRC target (`IBV_QPT_XRC_RECV`): no send queue, no PD or CQs; it
    /// delivers into the XRC SRQs of its XRC domain.
    XrcRecv,
}

impl QpType {
    /// RC semantics (acknowledged, retransmitted, READ and atomics): RC and
    /// both XRC halves.
    pub fn is_reliable(self) -> bool {
        matches!(self, QpType::Rc | QpType::XrcSend | QpType::XrcRecv)
    }
}

/// `ibv_qp_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QpState {
    Reset,
    Init,
    Rtr,
    Rts,
    Sqd,
    Sqe,
    Err,
}

/// `ibv_mtu` as bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mtu {
    M256 = 256,
    M512 = 512,
    M1024 = 1024,
    M2048 = 2048,
    M4096 = 4096,
}

impl Mtu {
    /// Headers around an IB payload on the wire, at most: IPv6 (40) + UDP (8)
    /// + BTH (12) + the largest extension a payload travels with (RETH, 16)
    /// + ICRC (4) — rxe's 80 bytes.
    pub const WIRE_OVERHEAD: u32 = 80;

    /// The largest IB MTU whose packets fit a network MTU of `link_mtu`
    /// bytes (256 if even that does not: the link is unusable for RoCE).
    pub fn fitting(link_mtu: u32) -> Mtu {
        let room = link_mtu.saturating_sub(Self::WIRE_OVERHEAD);
        [Mtu::M4096, Mtu::M2048, Mtu::M1024, Mtu::M512]
            .into_iter()
            .find(|m| m.bytes() as u32 <= room)
            .unwrap_or(Mtu::M256)
    }

    pub fn bytes(self) -> usize {
        self as usize
    }
    /// From the `ibv_mtu` enum value (1..=5).
    pub fn from_ibv(v: u32) -> Option<Mtu> {
        Some(match v {
            1 => Mtu::M256,
            2 => Mtu::M512,
            3 => Mtu::M1024,
            4 => Mtu::M2048,
            5 => Mtu::M4096,
            _ => return None,
        })
    }
}

/// A GID: 16 bytes; IPv4 addresses as IPv4-mapped IPv6 (`::ffff:a.b.c.d`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Gid(pub [u8; 16]);

impl Gid {
    pub fn from_ip(ip: std::net::IpAddr) -> Gid {
        match ip {
            std::net::IpAddr::V4(v4) => Gid(v4.to_ipv6_mapped().octets()),
            std::net::IpAddr::V6(v6) => Gid(v6.octets()),
        }
    }
    pub fn to_ip(self) -> std::net::IpAddr {
        let v6 = std::net::Ipv6Addr::from(self.0);
        match v6.to_ipv4_mapped() {
            Some(v4) => std::net::IpAddr::V4(v4),
            None => std::net::IpAddr::V6(v6),
        }
    }

    /// The address of the device a GID names: its IP, except that the
    /// link-local GID a device reports at index 0 for an IPv4 address
    /// (`fe80::ffff:a.b.c.d`, see `Device::gid`) names that IPv4 address
    /// too — programs (rdma-core's tests among them) address peers by GID
    /// index 0.
    pub fn device_ip(self) -> std::net::IpAddr {
        let g = self.0;
        let link_local_v4 =
            g[..2] == [0xfe, 0x80] && g[2..10].iter().all(|&b| b == 0) && g[10..12] == [0xff, 0xff];
        if link_local_v4 {
            std::net::IpAddr::V4(std::net::Ipv4Addr::new(g[12], g[13], g[14], g[15]))
        } else {
            self.to_ip()
        }
    }
}

/// `ibv_sge`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sge {
    pub addr: u64,
    pub length: u32,
    pub lkey: u32,
}

/// The GSI QP's number (QP1: where management datagrams go).
pub const GSI_QPN: u32 = 1;
/// The Q_Key of the GSI QP's datagrams (IBA 13.4.6.1: the well-known one).
pub const GSI_QKEY: u32 = 0x8001_0000;

/// What a send work request does (`ibv_wr_opcode` with its operands).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOp {
    Send,
    SendImm(u32),
    SendInv(u32),
    Write {
        remote_addr: u64,
        rkey: u32,
    },
    WriteImm {
        remote_addr: u64,
        rkey: u32,
        imm: u32,
    },
    Read {
        remote_addr: u64,
        rkey: u32,
    },
    CompareSwap {
        remote_addr: u64,
        rkey: u32,
        compare: u64,
        swap: u64,
    },
    FetchAdd {
        remote_addr: u64,
        rkey: u32,
        add: u64,
    },
    /// Bind a memory window (`IBV_WR_BIND_MW`; a local operation).
    BindMw(MwBind),
    /// Invalidate the type 2 window with this R_Key (`IBV_WR_LOCAL_INV`).
    LocalInv(u32),
    /// `IBV_WR_ATOMIC_WRITE`: these 8 bytes written at once to an 8-byte
    /// aligned `remote_addr` (the MR needs remote write).
    AtomicWrite {
        remote_addr: u64,
        rkey: u32,
        data: [u8; 8],
    },
    /// `IBV_WR_FLUSH`: make what earlier requests placed in `[remote_addr,
    /// remote_addr+len)` (or the whole MR) visible or persistent.
    Flush {
        remote_addr: u64,
        rkey: u32,
        len: u32,
        placement: FlushType,
        level: FlushLevel,
    },
}

/// `ibv_mw_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MwType {
    /// Bound by `ibv_bind_mw`; keeps its window until rebound.
    One,
    /// Bound through a QP (type 2B: accessed only through that QP) and
    /// invalidated by LOCAL_INV or a peer's SEND with invalidate.
    Two,
}

/// What a bind sets (`ibv_mw_bind_info` with the window and its new key).
/// `length` 0 unbinds a type 1 window (a type 2 window must be given memory).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MwBind {
    /// The window's current R_Key (`Mw::rkey`): its index names the window.
    pub mw_rkey: u32,
    /// The R_Key after the bind: only its low 8 bits (the consumer's key
    /// byte, `ibv_inc_rkey`) are taken; the 24-bit index is the window's.
    pub new_rkey: u32,
    /// The MR's L_Key (ignored when `length` is 0).
    pub mr_lkey: u32,
    pub addr: u64,
    pub length: u64,
    /// Remote rights granted through the window (`mw_access_flags`).
    pub access: Access,
}

/// A FLUSH's placement type (`IBV_FLUSH_GLOBAL`, `IBV_FLUSH_PERSISTENT`,
/// may be combined): the MR must allow each one asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushType(pub u8);

impl FlushType {
    pub const GLOBAL: FlushType = FlushType(1);
    pub const PERSISTENT: FlushType = FlushType(2);

    pub fn contains(self, other: FlushType) -> bool {
        self.0 & other.0 == other.0
    }

    /// At least one type, and no unknown bit.
    pub fn is_valid(self) -> bool {
        self.0 != 0 && self.0 & !(Self::GLOBAL.0 | Self::PERSISTENT.0) == 0
    }
}

/// A FLUSH's selectivity level (`ibv_selectivity_level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushLevel {
    /// `IBV_FLUSH_RANGE`: the range the request names.
    Range = 0,
    /// `IBV_FLUSH_MR`: the whole memory region its key names.
    Mr = 1,
}

impl FlushLevel {
    pub fn from_u8(v: u8) -> Option<FlushLevel> {
        match v {
            0 => Some(FlushLevel::Range),
            1 => Some(FlushLevel::Mr),
            _ => None,
        }
    }
}

/// UD destination of a send (`wr.ud`).
#[derive(Debug, Clone)]
pub struct UdDest {
    pub ah: Ah,
    pub remote_qpn: u32,
    pub remote_qkey: u32,
}

/// `ibv_send_flags`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SendFlags {
    pub signaled: bool,
    pub solicited: bool,
    /// Copy the data at post time (`IBV_SEND_INLINE`).
    pub inline: bool,
    pub fence: bool,
}

/// `ibv_send_wr` (one; post a slice for a chain).
#[derive(Debug, Clone)]
pub struct SendWr<'a> {
    pub wr_id: u64,
    pub sg_list: &'a [Sge],
    pub op: SendOp,
    pub flags: SendFlags,
    pub ud: Option<UdDest>,
}

/// `ibv_recv_wr`.
#[derive(Debug, Clone)]
pub struct RecvWr<'a> {
    pub wr_id: u64,
    pub sg_list: &'a [Sge],
}

/// `ibv_wc_status` (the ones the device produces).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WcStatus {
    Success,
    LocLenErr,
    LocQpOpErr,
    LocProtErr,
    WrFlushErr,
    BadRespErr,
    LocAccessErr,
    RemInvReqErr,
    RemAccessErr,
    RemOpErr,
    RetryExcErr,
    RnrRetryExcErr,
    GeneralErr,
    /// A memory window bind failed (`IBV_WC_MW_BIND_ERR`).
    MwBindErr,
}

/// `ibv_wc_opcode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WcOpcode {
    Send,
    RdmaWrite,
    RdmaRead,
    CompSwap,
    FetchAdd,
    Flush,
    AtomicWrite,
    Recv,
    RecvRdmaWithImm,
    BindMw,
    LocalInv,
}

/// `ibv_wc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wc {
    pub wr_id: u64,
    pub status: WcStatus,
    pub opcode: WcOpcode,
    pub byte_len: u32,
    pub imm: Option<u32>,
    /// The key a SEND with invalidate invalidated (`IBV_WC_WITH_INV`): a type 2
    /// memory window's (nothing else can be invalidated by a peer; any other
    /// key fails the receive with `RemInvReqErr`).
    pub invalidated_rkey: Option<u32>,
    pub qp_num: u32,
    pub src_qp: u32,
    /// A GRH is present in the first 40 bytes of the buffer (UD).
    pub grh: bool,
}

impl Wc {
    /// A placeholder completion (for poll buffers, and the fields a
    /// completion leaves unset).
    pub const EMPTY: Wc = Wc {
        wr_id: 0,
        status: WcStatus::Success,
        opcode: WcOpcode::Send,
        byte_len: 0,
        imm: None,
        invalidated_rkey: None,
        qp_num: 0,
        src_qp: 0,
        grh: false,
    };
}

/// `ibv_qp_cap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QpCap {
    pub max_send_wr: u32,
    pub max_recv_wr: u32,
    pub max_send_sge: u32,
    pub max_recv_sge: u32,
    pub max_inline_data: u32,
}

/// The fields of `ibv_qp_attr` the device uses; `None` = not in the mask.
#[derive(Debug, Clone, Default)]
pub struct QpAttr {
    pub state: Option<QpState>,
    pub pkey_index: Option<u16>,
    pub port_num: Option<u8>,
    pub qkey: Option<u32>,
    pub access: Option<Access>,
    pub path_mtu: Option<Mtu>,
    pub dest_qp_num: Option<u32>,
    pub rq_psn: Option<u32>,
    pub sq_psn: Option<u32>,
    pub dgid: Option<Gid>,
    pub max_rd_atomic: Option<u8>,
    pub max_dest_rd_atomic: Option<u8>,
    pub min_rnr_timer: Option<u8>,
    pub timeout: Option<u8>,
    pub retry_cnt: Option<u8>,
    pub rnr_retry: Option<u8>,
}

/// An address handle (`ibv_ah`): where UD sends go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ah {
    pub dgid: Gid,
}

/// An asynchronous event (`ibv_async_event`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsyncEvent {
    /// The SRQ fell below its armed limit (`IBV_EVENT_SRQ_LIMIT_REACHED`);
    /// the limit is disarmed until set again.
    SrqLimitReached { srq: u32 },
    /// A QP went to the error state on its own (`IBV_EVENT_QP_FATAL`).
    QpFatal { qpn: u32 },
    /// A QP moved to SQD has no send request in flight any more
    /// (`IBV_EVENT_SQ_DRAINED`).
    SqDrained { qpn: u32 },
    /// A completion was lost because the CQ was full (`IBV_EVENT_CQ_ERR`):
    /// the CQ is in error from then on (`Cq::overflowed`). Raised once per
    /// CQ, on the device of the QP whose completion was lost.
    CqErr { cq: u32 },
}

#[cfg(test)]
mod tests {
    use super::{Gid, Mtu};

    #[test]
    fn a_devices_link_local_gid_names_its_ipv4_address() {
        let ip: std::net::IpAddr = "127.1.2.3".parse().unwrap();
        let gid1 = Gid::from_ip(ip);
        let mut gid0 = [0u8; 16];
        gid0[0] = 0xfe;
        gid0[1] = 0x80;
        gid0[8..].copy_from_slice(&gid1.0[8..]);
        assert_eq!(Gid(gid0).device_ip(), ip);
        assert_eq!(gid1.device_ip(), ip);
        // Other link-local GIDs stay IPv6.
        let other: std::net::IpAddr = "fe80::1".parse().unwrap();
        assert_eq!(Gid::from_ip(other).device_ip(), other);
    }

    #[test]
    fn mtu_fitting_a_link_leaves_room_for_80_header_bytes() {
        for (link, want) in [
            (65536, Mtu::M4096),
            (9000, Mtu::M4096),
            (4176, Mtu::M4096),
            (4175, Mtu::M2048),
            (1500, Mtu::M1024),
            (1280, Mtu::M1024),
            (1100, Mtu::M512),
            (592, Mtu::M512),
            (591, Mtu::M256),
            (0, Mtu::M256),
        ] {
            assert_eq!(Mtu::fitting(link), want, "link MTU {link}");
        }
    }
}
