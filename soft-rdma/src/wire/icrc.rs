//! The invariant CRC (IBA annex A17 for RoCEv2): CRC-32 (zlib's) over 8 bytes
//! of 0xFF, the IP header with its variant fields masked to ones, the UDP
//! header with checksum 0xFFFF, the BTH with byte 4 masked, and the rest of
//! the packet; inverted, stored little-endian after the pad.
//!
//! A UDP socket never sees the IP header, so the IP and UDP headers are
//! rebuilt from [`IcrcContext`]. IPv4: DF set and IP ID 0 — what the kernel
//! sends from a socket with `IP_MTU_DISCOVER = IP_PMTUDISC_DO` (measured).
//!
//! INTERFACE STUB: filled in by the wire work.
use std::net::IpAddr;

/// What the ICRC covers outside the IB packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcrcContext {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
}

/// ICRC of `packet` = the whole IB packet *including* the 4 ICRC bytes at the
/// end (which are not covered).
pub fn compute(ctx: &IcrcContext, packet: &[u8]) -> u32 {
    let _ = (ctx, packet);
    unimplemented!()
}

/// Write the ICRC into the last 4 bytes of `packet`.
pub fn seal(ctx: &IcrcContext, packet: &mut [u8]) {
    let _ = (ctx, packet);
    unimplemented!()
}

/// Whether the last 4 bytes of `packet` hold its ICRC.
pub fn verify(ctx: &IcrcContext, packet: &[u8]) -> bool {
    let _ = (ctx, packet);
    unimplemented!()
}
