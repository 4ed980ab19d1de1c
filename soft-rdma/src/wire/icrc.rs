//! The invariant CRC (IBA annex A17 for RoCEv2): CRC-32 (zlib's) over 8 bytes
//! of 0xFF, the IP header with its variant fields masked to ones, the UDP
//! header with checksum 0xFFFF, the BTH with byte 4 masked, and the rest of
//! the packet; inverted, stored little-endian after the pad.
//!
//! A UDP socket never sees the IP header, so the IP and UDP headers are
//! rebuilt from [`IcrcContext`]. IPv4: DF set and IP ID 0 — what the kernel
//! sends from a socket with `IP_MTU_DISCOVER = IP_PMTUDISC_DO` (measured),
//! and the first segment of a UDP GSO send; later segments' IDs count up
//! ([`IdDeltas`], [`verify_gso_segment`]).
//!
//! Masked ("variant") fields: IPv4 TOS, TTL, header checksum; IPv6 traffic
//! class, flow label, hop limit; UDP checksum; BTH byte 4 (FECN, BECN,
//! reserved). Everything else, including the IPv4 ID and flags, is covered.
//!
//! The `u32` these functions use is the value whose little-endian bytes are
//! the 4 ICRC bytes on the wire (zlib's `crc32()` of the covered bytes: the
//! CRC register inverted, as IBA specifies).
//!
//! No allocation: the masked headers are assembled in a stack buffer and the
//! hasher is fed twice per packet.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::bth::BTH_LEN;

/// Length of the ICRC.
pub const ICRC_LEN: usize = 4;

const LRH_LEN: usize = 8;
const IPV4_LEN: usize = 20;
const IPV4_MAX_LEN: usize = 60;
const IPV6_LEN: usize = 40;
const UDP_LEN: usize = 8;
const UDP_PROTO: u8 = 17;
const SCRATCH_LEN: usize = LRH_LEN + IPV4_MAX_LEN + UDP_LEN + BTH_LEN;

/// What the ICRC covers outside the IB packet.
///
/// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, what a dual-stack socket
/// reports for an IPv4 peer) stands for its IPv4 address: when both
/// addresses are IPv4 or IPv4-mapped, the packet is taken to travel over
/// IPv4; otherwise over IPv6 (an IPv4 address then taken as IPv4-mapped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcrcContext {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
}

impl IcrcContext {
    /// The context of a datagram from `from` to `to`: the IP/UDP headers
    /// the ICRC covers are rebuilt from the two endpoints.
    pub fn between(from: std::net::SocketAddr, to: std::net::SocketAddr) -> IcrcContext {
        IcrcContext {
            src: from.ip(),
            dst: to.ip(),
            src_port: from.port(),
            dst_port: to.port(),
        }
    }
}

enum Family {
    V4(Ipv4Addr, Ipv4Addr),
    V6(Ipv6Addr, Ipv6Addr),
}

fn family(ctx: &IcrcContext) -> Family {
    match (ctx.src.to_canonical(), ctx.dst.to_canonical()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => Family::V4(s, d),
        (s, d) => Family::V6(v6(s), v6(d)),
    }
}

fn v6(a: IpAddr) -> Ipv6Addr {
    match a {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    }
}

/// ICRC of `packet` = the whole IB packet *including* the 4 ICRC bytes at the
/// end (which are not covered).
///
/// Never panics; a packet shorter than the ICRC covers no IB bytes.
pub fn compute(ctx: &IcrcContext, packet: &[u8]) -> u32 {
    let mut s = [0u8; SCRATCH_LEN];
    s[..LRH_LEN].fill(0xff);
    let mut n = LRH_LEN;
    // Lengths wrap for packets beyond 64 KiB, which UDP cannot carry anyway.
    let udp_len = (UDP_LEN + packet.len()) as u16;
    match family(ctx) {
        Family::V4(src, dst) => {
            let h = &mut s[n..n + IPV4_LEN];
            h[0] = 0x45; // version 4, IHL 5
            h[1] = 0xff; // TOS (masked)
            h[2..4].copy_from_slice(&((IPV4_LEN as u16).wrapping_add(udp_len)).to_be_bytes());
            // ID 0 (bytes 4-5); flags DF, fragment offset 0
            h[6] = 0x40;
            h[8] = 0xff; // TTL (masked)
            h[9] = UDP_PROTO;
            h[10] = 0xff; // header checksum (masked)
            h[11] = 0xff;
            h[12..16].copy_from_slice(&src.octets());
            h[16..20].copy_from_slice(&dst.octets());
            n += IPV4_LEN;
        }
        Family::V6(src, dst) => {
            let h = &mut s[n..n + IPV6_LEN];
            // version 6, traffic class and flow label (masked)
            h[..4].copy_from_slice(&[0x6f, 0xff, 0xff, 0xff]);
            h[4..6].copy_from_slice(&udp_len.to_be_bytes());
            h[6] = UDP_PROTO;
            h[7] = 0xff; // hop limit (masked)
            h[8..24].copy_from_slice(&src.octets());
            h[24..40].copy_from_slice(&dst.octets());
            n += IPV6_LEN;
        }
    }
    let u = &mut s[n..n + UDP_LEN];
    u[0..2].copy_from_slice(&ctx.src_port.to_be_bytes());
    u[2..4].copy_from_slice(&ctx.dst_port.to_be_bytes());
    u[4..6].copy_from_slice(&udp_len.to_be_bytes());
    u[6..8].fill(0xff); // checksum (masked)
    n += UDP_LEN;
    finish(&mut s, n, packet)
}

/// The ICRC of `packet` (BTH .. ICRC) as carried under the given raw IP and
/// UDP headers, e.g. from a capture. The variant fields of the headers are
/// masked here, whatever they hold; the lengths in the headers are used as
/// they are (not checked against `packet`). The IP version is taken from
/// the first nibble of `ip_header` (4, else IPv6).
///
/// # Panics
/// If `udp_header` is not 8 bytes, or `ip_header` is not 20..=60 bytes
/// (IPv4) or 40 bytes (IPv6).
pub fn compute_with_headers(ip_header: &[u8], udp_header: &[u8], packet: &[u8]) -> u32 {
    assert_eq!(udp_header.len(), UDP_LEN, "UDP header length");
    let mut s = [0u8; SCRATCH_LEN];
    s[..LRH_LEN].fill(0xff);
    let mut n = LRH_LEN;
    let ip_len = ip_header.len();
    let h = &mut s[n..n + ip_len];
    h.copy_from_slice(ip_header);
    if ip_header.first().is_some_and(|b| b >> 4 == 4) {
        assert!(
            (IPV4_LEN..=IPV4_MAX_LEN).contains(&ip_len),
            "IPv4 header length"
        );
        h[1] = 0xff;
        h[8] = 0xff;
        h[10] = 0xff;
        h[11] = 0xff;
    } else {
        assert_eq!(ip_len, IPV6_LEN, "IPv6 header length");
        h[0] |= 0x0f;
        h[1..4].fill(0xff);
        h[7] = 0xff;
    }
    n += ip_len;
    let u = &mut s[n..n + UDP_LEN];
    u.copy_from_slice(udp_header);
    u[6..8].fill(0xff);
    n += UDP_LEN;
    finish(&mut s, n, packet)
}

/// Append the masked BTH to `s[..n]` and hash it and the rest of the packet
/// (up to its ICRC).
fn finish(s: &mut [u8; SCRATCH_LEN], n: usize, packet: &[u8]) -> u32 {
    let covered = &packet[..packet.len().saturating_sub(ICRC_LEN)];
    let bth_len = covered.len().min(BTH_LEN);
    s[n..n + bth_len].copy_from_slice(&covered[..bth_len]);
    if bth_len > 4 {
        s[n + 4] = 0xff; // FECN, BECN, reserved
    }
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&s[..n + bth_len]);
    hasher.update(&covered[bth_len..]);
    hasher.finalize()
}

fn stored(packet: &[u8]) -> Option<u32> {
    let tail = packet.get(packet.len().checked_sub(ICRC_LEN)?..)?;
    Some(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]))
}

/// Write the ICRC into the last 4 bytes of `packet`.
///
/// # Panics
/// If `packet` is shorter than 4 bytes.
pub fn seal(ctx: &IcrcContext, packet: &mut [u8]) {
    assert!(packet.len() >= ICRC_LEN, "packet shorter than its ICRC");
    let icrc = compute(ctx, packet);
    let at = packet.len() - ICRC_LEN;
    packet[at..].copy_from_slice(&icrc.to_le_bytes());
}

/// Whether the last 4 bytes of `packet` hold its ICRC (false for a packet
/// shorter than 4 bytes).
pub fn verify(ctx: &IcrcContext, packet: &[u8]) -> bool {
    stored(packet) == Some(compute(ctx, packet))
}

/// The kernel's UDP segmentation offload gives the IPv4 segments of one
/// GSO send consecutive IDs from the first's (0 from an unconnected socket
/// with `IP_PMTUDISC_DO`: `ip_select_ident_segs`, then `inet_gso_segment`
/// counts up), and the ID is covered. Flipping the ID from 0 to `k` flips
/// the ICRC by a value that depends only on `k` and the packet's length
/// (the CRC is linear): [`IdDeltas`] computes it without hashing the packet.
///
/// The most segments one UDP GSO send may have (the kernel's
/// `UDP_MAX_SEGMENTS`): a segment's IP ID is below this.
pub const GSO_MAX_SEGMENTS: u16 = 64;

/// CRC-32 polynomials in the reflected form crc32fast uses: bit 31 is x^0.
const POLY: u32 = 0xedb8_8320;
/// x^0, x^8 and x^-1 modulo the polynomial (x^-1 = x^31 + (p(x) - 1)/x,
/// p(x) = 0x04c11db7 the polynomial less x^32).
const X0: u32 = 1 << 31;
const X8: u32 = 1 << 23;
const X_INV: u32 = 0x8260_8edb_u32.reverse_bits();

/// `t` times x, modulo the polynomial.
const fn times_x(t: u32) -> u32 {
    if t & 1 != 0 {
        (t >> 1) ^ POLY
    } else {
        t >> 1
    }
}

/// `a` times `b` modulo the polynomial.
const fn mul_mod(a: u32, b: u32) -> u32 {
    let (mut r, mut t, mut j) = (0, b, 0);
    while j < 32 {
        if a & (X0 >> j) != 0 {
            r ^= t;
        }
        t = times_x(t);
        j += 1;
    }
    r
}

/// `base` to the power `n`, modulo the polynomial.
fn pow_mod(mut base: u32, mut n: usize) -> u32 {
    let mut r = X0;
    while n > 0 {
        if n & 1 != 0 {
            r = mul_mod(r, base);
        }
        base = mul_mod(base, base);
        n >>= 1;
    }
    r
}

/// The CRC register (from zero, not inverted) after the two ID bytes of `id`.
const fn id_register(id: u16) -> u32 {
    let mut reg = 0u32;
    let bytes = id.to_be_bytes();
    let mut i = 0;
    while i < 2 {
        reg ^= bytes[i] as u32;
        let mut k = 0;
        while k < 8 {
            reg = times_x(reg);
            k += 1;
        }
        i += 1;
    }
    reg
}

/// Bytes the ICRC covers after an IPv4 header's ID: the rest of that header
/// (14), the UDP header (8) and the packet less its ICRC.
fn after_id(packet_len: usize) -> usize {
    IPV4_LEN - 6 + UDP_LEN + packet_len.saturating_sub(ICRC_LEN)
}

/// How the ICRC of an IPv4 packet of one length changes with its IP ID
/// (see [`POLY`]): `ICRC(id k) = ICRC(id 0) ^ delta(k)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdDeltas {
    /// x^(8·bytes after the ID): moves the ID's contribution to the end.
    shift: u32,
    /// Its inverse: moves a difference at the end back to the ID.
    unshift: u32,
    packet_len: usize,
}

/// [`id_register`] of the IDs a GSO segment can carry, by ID.
const ID_REGISTERS: [u32; GSO_MAX_SEGMENTS as usize] = {
    let mut t = [0u32; GSO_MAX_SEGMENTS as usize];
    let mut k = 0;
    while k < t.len() {
        t[k] = id_register(k as u16);
        k += 1;
    }
    t
};

/// The shifts of every packet length up to this, computed once each
/// (two modular powers are dearer than hashing a short packet).
const SHIFT_CACHE_LEN: usize = 4096 + 256;
static SHIFTS: [std::sync::atomic::AtomicU64; SHIFT_CACHE_LEN] =
    [const { std::sync::atomic::AtomicU64::new(0) }; SHIFT_CACHE_LEN];

impl IdDeltas {
    /// For IB packets (BTH .. ICRC) of `packet_len` bytes.
    pub fn new(packet_len: usize) -> IdDeltas {
        use std::sync::atomic::Ordering::Relaxed;
        let cached = SHIFTS.get(packet_len).map(|c| c.load(Relaxed));
        // 0 is no power of x: not computed yet.
        let (shift, unshift) = match cached {
            Some(v) if v != 0 => ((v >> 32) as u32, v as u32),
            _ => {
                let n = after_id(packet_len);
                let pair = (pow_mod(X8, n), pow_mod(X_INV, 8 * n));
                if let Some(c) = SHIFTS.get(packet_len) {
                    c.store((u64::from(pair.0) << 32) | u64::from(pair.1), Relaxed);
                }
                pair
            }
        };
        IdDeltas {
            shift,
            unshift,
            packet_len,
        }
    }

    /// The packet length these are for.
    pub fn packet_len(&self) -> usize {
        self.packet_len
    }

    /// What XORs the ICRC computed with IP ID 0 into the one for ID `id`.
    pub fn delta(&self, id: u16) -> u32 {
        mul_mod(id_register(id), self.shift)
    }

    /// The IP ID below `limit` (at most [`GSO_MAX_SEGMENTS`]) that turns
    /// the ICRC `with_id0` (computed with ID 0) into `stored`, if any.
    pub fn id_between(&self, with_id0: u32, stored: u32, limit: u16) -> Option<u16> {
        let d = with_id0 ^ stored;
        if d == 0 {
            return Some(0);
        }
        // Undo the shift: what the register held right after the ID.
        let reg = mul_mod(d, self.unshift);
        let limit = usize::from(limit.min(GSO_MAX_SEGMENTS));
        ID_REGISTERS[..limit]
            .iter()
            .position(|&r| r == reg)
            .map(|k| k as u16)
    }
}

/// The IP ID below `limit` with which `packet`'s stored ICRC verifies (0
/// first: what a lone datagram carries; higher ones are the later segments
/// of a GSO send, see [`IdDeltas`]); None if none does. Over IPv6 (no ID)
/// only 0, i.e. [`verify`]. `cached` holds the deltas of the last length
/// seen (a stream's segments mostly share one).
pub fn verify_gso_segment(
    ctx: &IcrcContext,
    packet: &[u8],
    limit: u16,
    cached: &mut Option<IdDeltas>,
) -> Option<u16> {
    let stored = stored(packet)?;
    let computed = compute(ctx, packet);
    if stored == computed {
        return Some(0);
    }
    if !matches!(family(ctx), Family::V4(..)) {
        return None;
    }
    let d = match cached {
        Some(d) if d.packet_len == packet.len() => *d,
        _ => *cached.insert(IdDeltas::new(packet.len())),
    };
    d.id_between(computed, stored, limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CNP captured on a ConnectX-4 Lx, from scapy's test/contrib/roce.uts
    /// ("RoCE CNP captured on ConnectX-4 Lx"): Ethernet (14) + IPv4 (20) +
    /// UDP (8) + BTH (12) + 16 reserved bytes + ICRC 82 fd 00 2a. The IP
    /// header has TOS 0xc2, ID 0x718c, DF, TTL 0x40.
    const CNP_FRAME: [u8; 74] = [
        0xe4, 0x1d, 0x2d, 0xab, 0x2b, 0xc2, 0x7c, 0xfe, 0x90, 0x64, 0x3b, 0x32, 0x08,
        0x00, // eth
        0x45, 0xc2, 0x00, 0x3c, 0x71, 0x8c, 0x40, 0x00, 0x40, 0x11, 0x91, 0x61, // ipv4
        0x0a, 0x00, 0x11, 0x01, 0x0a, 0x00, 0x12, 0x01, //
        0x00, 0x00, 0x12, 0xb7, 0x00, 0x28, 0x00, 0x00, // udp
        0x81, 0x00, 0xff, 0xff, 0x40, 0x00, 0x01, 0x18, 0x00, 0x00, 0x00, 0x00, // bth
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // reserved
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, //
        0x82, 0xfd, 0x00, 0x2a, // icrc
    ];

    #[test]
    fn cnp_capture_vector() {
        let ip = &CNP_FRAME[14..34];
        let udp = &CNP_FRAME[34..42];
        let ib = &CNP_FRAME[42..];
        assert_eq!(ib.len(), 32);
        let icrc = compute_with_headers(ip, udp, ib);
        assert_eq!(icrc.to_le_bytes(), [0x82, 0xfd, 0x00, 0x2a]);
        assert_eq!(stored(ib), Some(icrc));
    }

    #[test]
    fn cnp_vector_is_sensitive() {
        let ip = &CNP_FRAME[14..34];
        let udp = &CNP_FRAME[34..42];
        let good = compute_with_headers(ip, udp, &CNP_FRAME[42..]);
        // The IP ID is covered...
        let mut ip2 = [0u8; 20];
        ip2.copy_from_slice(ip);
        ip2[4] ^= 1;
        assert_ne!(compute_with_headers(&ip2, udp, &CNP_FRAME[42..]), good);
        // ...TOS, TTL and checksum are not, nor is BTH byte 4.
        ip2.copy_from_slice(ip);
        ip2[1] = 0;
        ip2[8] = 1;
        ip2[10] = 0x12;
        assert_eq!(compute_with_headers(&ip2, udp, &CNP_FRAME[42..]), good);
        let mut ib = [0u8; 32];
        ib.copy_from_slice(&CNP_FRAME[42..]);
        ib[4] = 0x80;
        assert_eq!(compute_with_headers(ip, udp, &ib), good);
    }

    /// The context path rebuilds exactly the header a kernel sends with
    /// IP_PMTUDISC_DO (ID 0, DF): same ICRC as the raw-header path on it.
    #[test]
    fn context_matches_raw_headers() {
        let ib = &CNP_FRAME[42..];
        let ctx = IcrcContext {
            src: "10.0.17.1".parse().unwrap(),
            dst: "10.0.18.1".parse().unwrap(),
            src_port: 0,
            dst_port: 4791,
        };
        let mut ip = [0u8; 20];
        ip.copy_from_slice(&CNP_FRAME[14..34]);
        ip[4] = 0;
        ip[5] = 0;
        assert_eq!(
            compute(&ctx, ib),
            compute_with_headers(&ip, &CNP_FRAME[34..42], ib)
        );
        // IPv4-mapped addresses mean IPv4.
        let mapped = IcrcContext {
            src: "::ffff:10.0.17.1".parse().unwrap(),
            dst: "::ffff:10.0.18.1".parse().unwrap(),
            ..ctx
        };
        assert_eq!(compute(&mapped, ib), compute(&ctx, ib));

        let v6 = IcrcContext {
            src: "fe80::1".parse().unwrap(),
            dst: "fe80::2".parse().unwrap(),
            src_port: 0xc001,
            dst_port: 4791,
        };
        let mut ip6 = [0u8; 40];
        ip6[0] = 0x60;
        ip6[4..6].copy_from_slice(&40u16.to_be_bytes());
        ip6[6] = 17;
        ip6[7] = 64;
        ip6[8..24].copy_from_slice(&"fe80::1".parse::<Ipv6Addr>().unwrap().octets());
        ip6[24..40].copy_from_slice(&"fe80::2".parse::<Ipv6Addr>().unwrap().octets());
        let udp6 = [0xc0, 0x01, 0x12, 0xb7, 0x00, 0x28, 0x00, 0x00];
        assert_eq!(compute(&v6, ib), compute_with_headers(&ip6, &udp6, ib));
    }

    fn ipv4_header_with_id(ctx_src: [u8; 4], ctx_dst: [u8; 4], id: u16, ib_len: usize) -> [u8; 20] {
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&((20 + 8 + ib_len) as u16).to_be_bytes());
        ip[4..6].copy_from_slice(&id.to_be_bytes());
        ip[6] = 0x40;
        ip[9] = 17;
        ip[12..16].copy_from_slice(&ctx_src);
        ip[16..20].copy_from_slice(&ctx_dst);
        ip
    }

    /// The delta of an IP ID is what the full computation over a header
    /// holding that ID gives, for several lengths (a short last segment
    /// included), and the receiver finds the ID back from it.
    #[test]
    fn id_deltas_match_headers_with_that_id() {
        assert_eq!(mul_mod(1 << 30, X_INV), X0, "x * x^-1 = 1");
        let ctx = IcrcContext {
            src: "10.77.0.2".parse().unwrap(),
            dst: "10.77.0.1".parse().unwrap(),
            src_port: 4791,
            dst_port: 4791,
        };
        for len in [16usize, 32, 1052, 1084, 777, 4124] {
            let mut ib: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let d = IdDeltas::new(len);
            for id in [0u16, 1, 2, 17, 63, 64, 0x1234] {
                let ip = ipv4_header_with_id([10, 77, 0, 2], [10, 77, 0, 1], id, len);
                let mut udp = [0u8; 8];
                udp[0..2].copy_from_slice(&4791u16.to_be_bytes());
                udp[2..4].copy_from_slice(&4791u16.to_be_bytes());
                udp[4..6].copy_from_slice(&((8 + len) as u16).to_be_bytes());
                let want = compute_with_headers(&ip, &udp, &ib);
                assert_eq!(compute(&ctx, &ib) ^ d.delta(id), want, "len {len} id {id}");
                // Stored with that ID: the receiver finds it (below the limit).
                let at = len - 4;
                ib[at..].copy_from_slice(&want.to_le_bytes());
                let mut cache = None;
                let got = verify_gso_segment(&ctx, &ib, 64, &mut cache);
                assert_eq!(got, (id < 64).then_some(id), "len {len} id {id}");
            }
            // One flipped payload bit matches no ID.
            ib[len / 2] ^= 0x10;
            assert_eq!(verify_gso_segment(&ctx, &ib, 64, &mut None), None);
        }
        // IPv6 has no ID: only the ICRC as computed.
        let v6 = IcrcContext {
            src: "fd00::1".parse().unwrap(),
            dst: "fd00::2".parse().unwrap(),
            ..ctx
        };
        let mut ib = vec![5u8; 64];
        seal(&v6, &mut ib);
        assert_eq!(verify_gso_segment(&v6, &ib, 64, &mut None), Some(0));
        let icrc = compute(&v6, &ib) ^ IdDeltas::new(64).delta(1);
        ib[60..].copy_from_slice(&icrc.to_le_bytes());
        assert_eq!(verify_gso_segment(&v6, &ib, 64, &mut None), None);
    }

    #[test]
    fn short_packets_do_not_panic() {
        let ctx = IcrcContext {
            src: "10.0.0.1".parse().unwrap(),
            dst: "10.0.0.2".parse().unwrap(),
            src_port: 1,
            dst_port: 4791,
        };
        for len in 0..20 {
            let buf = vec![0u8; len];
            let _ = compute(&ctx, &buf);
            assert!(!verify(&ctx, &buf) || len >= ICRC_LEN);
        }
    }
}
