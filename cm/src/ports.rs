//! How ids share a port, as the kernel's rdma_cm decides it (`cma.c`):
//! `rdma_set_option`'s REUSEADDR and AFONLY, which ids a listener takes,
//! and the listen backlog (`ucma.c`). The agent keeps a [`Binding`] per id
//! and asks these rules; ids of other processes are seen only through the
//! rendezvous name, which one process holds (a port in use elsewhere is
//! EADDRINUSE whatever the flags).

use soft_rdma::verbs::Errno;
use std::net::IpAddr;

/// An id's address and options.
#[derive(Debug, Clone, Copy, Default)]
pub struct Binding {
    /// RDMA_OPTION_ID_REUSEADDR.
    pub reuse: bool,
    /// RDMA_OPTION_ID_AFONLY as the user set it.
    pub afonly_set: Option<bool>,
    /// The address bound (None: not bound).
    pub ip: Option<IpAddr>,
}

impl Binding {
    /// Whether the id takes its own address family only: as set, else
    /// IPv4 ids do and IPv6 ids do not (the kernel's default, with
    /// `net.ipv6.bindv6only` 0).
    pub fn afonly(&self) -> bool {
        self.afonly_set
            .unwrap_or(matches!(self.ip, Some(IpAddr::V4(_))))
    }

    /// Whether a listener bound so takes a request to an address of the
    /// family `v4` (None: the request says no address) — the kernel's
    /// `cma_match_private_data`, by family: a wildcard listener that is
    /// not AF-only takes both.
    pub fn takes(&self, v4: Option<bool>) -> bool {
        let (Some(ip), Some(v4)) = (self.ip, v4) else {
            return true;
        };
        (ip.is_unspecified() && !self.afonly()) || ip.is_ipv4() == v4
    }
}

/// Whether `me` may hold the port the `others` (bound ids of this process
/// on the same port) hold, as `cma_check_port`: two ids that both set
/// REUSEADDR share it (`reuse` false: a listener's check, which REUSEADDR
/// does not pass); AF-only ids of two families share it; otherwise a
/// wildcard on either side is EADDRNOTAVAIL and the same address
/// EADDRINUSE (different addresses share it).
pub fn check<'a>(
    me: &Binding,
    reuse: bool,
    others: impl IntoIterator<Item = &'a Binding>,
) -> Result<(), Errno> {
    let ip = me.ip.unwrap_or(IpAddr::from([0, 0, 0, 0]));
    for cur in others {
        if reuse && cur.reuse {
            continue;
        }
        let cur_ip = cur.ip.unwrap_or(IpAddr::from([0, 0, 0, 0]));
        if me.afonly() && cur.afonly() && ip.is_ipv4() != cur_ip.is_ipv4() {
            continue;
        }
        if ip.is_unspecified() || cur_ip.is_unspecified() {
            return Err(Errno(libc::EADDRNOTAVAIL));
        }
        if ip == cur_ip {
            return Err(Errno(libc::EADDRINUSE));
        }
    }
    Ok(())
}

/// `/proc/sys/net/rdma_ucm/max_backlog`'s default.
pub const MAX_BACKLOG: u32 = 1024;

/// The backlog `rdma_listen(id, n)` gets: `n` if in 1..MAX_BACKLOG, else
/// the maximum (ucma's rule). It counts connection requests delivered to
/// the listener's channel and not yet taken by `rdma_get_cm_event`; one
/// more is refused (REJ, consumer defined).
pub fn backlog(n: i32) -> u32 {
    match u32::try_from(n) {
        Ok(n) if n > 0 && n < MAX_BACKLOG => n,
        _ => MAX_BACKLOG,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(ip: &str, reuse: bool, afonly: Option<bool>) -> Binding {
        Binding {
            reuse,
            afonly_set: afonly,
            ip: Some(ip.parse().unwrap()),
        }
    }

    #[test]
    fn the_kernels_port_rules() {
        let any4 = b("0.0.0.0", false, None);
        let lo = b("127.0.0.1", false, None);
        let eaddrnotavail = Err(Errno(libc::EADDRNOTAVAIL));
        let eaddrinuse = Err(Errno(libc::EADDRINUSE));
        assert_eq!(check(&any4, false, [&lo]), eaddrnotavail);
        assert_eq!(check(&lo, false, [&lo]), eaddrinuse);
        assert_eq!(check(&lo, false, [&b("127.0.0.2", false, None)]), Ok(()));
        // REUSEADDR on both, not on one; never for a listener's check.
        let r = b("0.0.0.0", true, None);
        assert_eq!(check(&r, true, [&r]), Ok(()));
        assert_eq!(check(&r, true, [&any4]), eaddrnotavail);
        assert_eq!(check(&r, false, [&r]), eaddrnotavail);
        // IPv4 is AF-only by default; IPv6 when asked.
        let any6 = b("::", false, None);
        let any6_only = b("::", false, Some(true));
        assert_eq!(check(&any6, false, [&any4]), eaddrnotavail);
        assert_eq!(check(&any6_only, false, [&any4]), Ok(()));
    }

    #[test]
    fn which_requests_a_listener_takes_and_the_backlog() {
        assert!(b("::", false, None).takes(Some(true)));
        assert!(!b("::", false, Some(true)).takes(Some(true)));
        assert!(b("::", false, Some(true)).takes(Some(false)));
        assert!(!b("0.0.0.0", false, None).takes(Some(false)));
        assert!(b("0.0.0.0", false, Some(false)).takes(Some(false)));
        assert_eq!(backlog(2), 2);
        assert_eq!((backlog(0), backlog(-1)), (MAX_BACKLOG, MAX_BACKLOG));
        assert_eq!(backlog(100_000), MAX_BACKLOG);
    }
}
