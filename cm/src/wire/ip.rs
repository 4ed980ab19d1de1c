//! What rdma_cm adds to the IB CM for IP addressing: service IDs made of a
//! port space and a port, and the header at the start of a REQ's private
//! data that carries the IP addresses and ports of both ends (the kernel's
//! `cma_hdr`, version 0).
//!
//! | byte | field |
//! |---|---|
//! | 0 | CMA version (0) |
//! | 1 | IP version in the high nibble (4 or 6) |
//! | 2–3 | source port |
//! | 4–19 | source address (IPv4: in bytes 16–19, the rest zero) |
//! | 20–35 | destination address (likewise) |

use super::WireError;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The port spaces of `rdma_create_id` (`enum rdma_ucm_port_space`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PortSpace {
    Tcp,
    Udp,
    Ib,
    Ipoib,
}

impl PortSpace {
    /// The `RDMA_PS_*` value, which is also the service ID's bits 16–31.
    pub const fn value(self) -> u16 {
        match self {
            PortSpace::Ipoib => 0x0002,
            PortSpace::Tcp => 0x0106,
            PortSpace::Udp => 0x0111,
            PortSpace::Ib => 0x013f,
        }
    }

    pub fn from_value(v: u32) -> Option<PortSpace> {
        Some(match v {
            0x0002 => PortSpace::Ipoib,
            0x0106 => PortSpace::Tcp,
            0x0111 => PortSpace::Udp,
            0x013f => PortSpace::Ib,
            _ => return None,
        })
    }

    /// The service ID a listener on `port` in this space is reached by: the
    /// space above the port (TCP port 7471 is 0x0000_0000_0106_1d2f).
    pub const fn service_id(self, port: u16) -> u64 {
        (self.value() as u64) << 16 | port as u64
    }

    /// The port space and port a service ID names, if it is an rdma_cm one.
    pub fn from_service_id(id: u64) -> Option<(PortSpace, u16)> {
        if id >> 32 != 0 {
            return None;
        }
        Some((PortSpace::from_value((id >> 16) as u32)?, id as u16))
    }
}

/// Bytes the header takes of a REQ's (or SIDR_REQ's) private data.
pub const IP_HEADER_LEN: usize = 36;
const CMA_VERSION: u8 = 0;

/// The rdma_cm IP header: who connects to whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpHeader {
    pub src: SocketAddr,
    /// The port is the listener's; the header itself carries only the
    /// source port (the destination's is in the service ID).
    pub dst: IpAddr,
}

fn put_addr(b: &mut [u8], a: IpAddr) {
    b[..16].fill(0);
    match a {
        IpAddr::V4(v4) => b[12..16].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => b[..16].copy_from_slice(&v6.octets()),
    }
}

fn get_addr(b: &[u8], v4: bool) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::new(b[12], b[13], b[14], b[15]))
    } else {
        let mut o = [0u8; 16];
        o.copy_from_slice(&b[..16]);
        IpAddr::V6(Ipv6Addr::from(o))
    }
}

impl IpHeader {
    /// Reads the header at the start of `private_data`.
    pub fn parse(private_data: &[u8]) -> Result<IpHeader, WireError> {
        let b = private_data;
        if b.len() < IP_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if b[0] != CMA_VERSION {
            return Err(WireError::BadField("CMA version"));
        }
        let v4 = match b[1] >> 4 {
            4 => true,
            6 => false,
            _ => return Err(WireError::BadField("IP version")),
        };
        let port = u16::from_be_bytes([b[2], b[3]]);
        Ok(IpHeader {
            src: SocketAddr::new(get_addr(&b[4..20], v4), port),
            dst: get_addr(&b[20..36], v4),
        })
    }

    /// Writes the header into the first [`IP_HEADER_LEN`] bytes of `b`; both
    /// addresses must be of one family.
    pub fn emit(&self, b: &mut [u8]) -> Result<(), WireError> {
        let v4 = match (self.src.ip(), self.dst) {
            (IpAddr::V4(_), IpAddr::V4(_)) => true,
            (IpAddr::V6(_), IpAddr::V6(_)) => false,
            _ => return Err(WireError::BadField("mixed address families")),
        };
        if b.len() < IP_HEADER_LEN {
            return Err(WireError::PrivateDataTooLong);
        }
        b[0] = CMA_VERSION;
        b[1] = if v4 { 4 << 4 } else { 6 << 4 };
        b[2..4].copy_from_slice(&self.src.port().to_be_bytes());
        put_addr(&mut b[4..20], self.src.ip());
        put_addr(&mut b[20..36], self.dst);
        Ok(())
    }
}
