//! `struct sockaddr` ↔ `SocketAddr` (AF_INET and AF_INET6; AF_IB is not
//! supported), and the GIDs of addresses.

use crate::ffi::rdmacm_bindings::sockaddr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// Reads a C socket address; None for NULL or another family.
///
/// # Safety
/// `sa` is NULL or points at a socket address as long as its family says.
pub unsafe fn read(sa: *const sockaddr) -> Option<SocketAddr> {
    if sa.is_null() {
        return None;
    }
    // SAFETY: (caller) a readable sockaddr; the family field comes first.
    let family = unsafe { (*sa).sa_family } as i32;
    match family {
        libc::AF_INET => {
            // SAFETY: (caller) an AF_INET address is a sockaddr_in.
            let s = unsafe { &*(sa as *const libc::sockaddr_in) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(s.sin_addr.s_addr)),
                u16::from_be(s.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: (caller) an AF_INET6 address is a sockaddr_in6.
            let s = unsafe { &*(sa as *const libc::sockaddr_in6) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(s.sin6_addr.s6_addr),
                u16::from_be(s.sin6_port),
                s.sin6_flowinfo,
                s.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Writes `a` into `dst` (a `sockaddr_storage`-sized slot).
///
/// # Safety
/// `dst` is writable for `sizeof(struct sockaddr_in6)` bytes.
pub unsafe fn write(dst: *mut sockaddr, a: SocketAddr) {
    match a {
        SocketAddr::V4(v4) => {
            let s = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*v4.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: (caller) room for a sockaddr_in.
            unsafe { std::ptr::write_unaligned(dst as *mut libc::sockaddr_in, s) };
        }
        SocketAddr::V6(v6) => {
            let s = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: v6.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: (caller) room for a sockaddr_in6.
            unsafe { std::ptr::write_unaligned(dst as *mut libc::sockaddr_in6, s) };
        }
    }
}

/// The unspecified address of `a`'s family with `port`.
pub fn any_like(a: &SocketAddr, port: u16) -> SocketAddr {
    match a {
        SocketAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
        SocketAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
    }
}

/// This device's address in `like`'s family (an IPv4 device address as
/// IPv4-mapped IPv6 for an IPv6 peer).
pub fn device_addr(gid: soft_rdma::verbs::Gid, like: &SocketAddr, port: u16) -> SocketAddr {
    let ip = gid.to_ip();
    let ip = match (ip, like) {
        (IpAddr::V4(v4), SocketAddr::V6(_)) => IpAddr::V6(v4.to_ipv6_mapped()),
        (IpAddr::V6(v6), SocketAddr::V4(_)) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        _ => ip,
    };
    SocketAddr::new(ip, port)
}
