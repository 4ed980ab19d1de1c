//! Which local address a device uses.
//!
//! **The rule.** A soft RDMA device binds one UDP endpoint; its IP address is
//! the device's GID.
//!
//! 1. If `SOFTRDMA_ADDR` is set, it is used as is: an IPv4 or IPv6 address,
//!    optionally with a port (`192.168.1.10`, `192.168.1.10:4791`, `fd00::2`,
//!    `[fd00::2]:4791`). Without a port the RoCEv2 port 4791 is used. Set it to
//!    one of this host's addresses to talk to other hosts or containers. If it
//!    cannot be bound, the device reports why and does not fall back.
//! 2. Otherwise the device uses a loopback address of its own, derived from
//!    the process id: `127.A.B.C:4791` with `A = 1 + ((pid >> 16) & 0x3f)`,
//!    `B = (pid >> 8) & 0xff`, `C = pid & 0xff`. All of 127.0.0.0/8 reaches
//!    `lo` on Linux without any configuration, so every process on a host (or
//!    in a network namespace) gets its own RoCEv2 endpoint and GID, and two
//!    processes can talk at once with zero configuration; the address is
//!    distinct for every pid below 2^22 (Linux's largest `pid_max`) and never
//!    127.0.x.x, so 127.0.0.1 stays free. If that address is in use (a process
//!    of another pid namespace sharing the network), the next few addresses
//!    (`C + 1`, … with carry) are tried. Such a device reaches only devices of
//!    the same host (or network namespace).
//!
//!    A process's own devices never share an address, and an address one of
//!    them gave up is not taken again while others are free: the tries skip
//!    the addresses the process's devices hold (so its tenth device is
//!    tried further on, not pushed to rule 3 onto its first one's address),
//!    then take the ones given up in the last [`QUARANTINE`] (up to
//!    [`MAX_RELEASED`] of them) only after the rest, oldest first. Peers know
//!    a device by its address alone: a new device at a closed one's address
//!    would receive what they still send to it (their QPs' retries, a UD
//!    peer), with the same QP numbers — the closed device must look gone
//!    (TCP's TIME_WAIT, for the same reason).
//! 3. If every one of those is in use — one socket bound to UDP 4791 on the
//!    wildcard address (any user's, or the kernel's rxe) takes the port on
//!    every address — the device binds its pid-derived address at the first
//!    free port of [`FALLBACK_PORTS`] instead and says so (once). Peers name a
//!    device by its GID alone and send to port 4791, so a fallen-back device
//!    sends what is meant for a loopback peer's 4791 to that peer's fallback
//!    port (and reports it as 4791 above the link): devices of the host that
//!    fell back alike (while the port was held) reach each other; one that
//!    bound 4791 (before, or after the holder let go) does not reach them,
//!    nor they it. Without this step the device did not open at all.
#![forbid(unsafe_code)]
use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{UdpLink, ROCE_PORT};

/// The environment variable that names the device's address.
pub const ENV: &str = "SOFTRDMA_ADDR";

/// How many addresses after the pid-derived one are tried.
pub const FALLBACK_TRIES: u32 = 8;

/// The ports rule 3 tries, in order.
pub const FALLBACK_PORTS: std::ops::RangeInclusive<u16> = 4792..=4799;

/// How long an address a device of this process gave up is taken only
/// after every other (rule 2).
pub const QUARANTINE: Duration = Duration::from_secs(60);

/// Most given-up addresses remembered (the oldest is forgotten first).
pub const MAX_RELEASED: usize = 64;

/// The loopback addresses of this process's default devices.
struct Own {
    live: Vec<Ipv4Addr>,
    /// Given up, oldest first.
    released: VecDeque<(Ipv4Addr, Instant)>,
}

static OWN: Mutex<Own> = Mutex::new(Own {
    live: Vec::new(),
    released: VecDeque::new(),
});

/// A default device's hold on its address: dropped with its link, it puts
/// the address in quarantine.
#[derive(Debug)]
pub(super) struct Held(Ipv4Addr);

impl Drop for Held {
    /// Locks: the address registry (alone).
    fn drop(&mut self) {
        let mut own = crate::lock(&OWN);
        own.live.retain(|a| *a != self.0);
        own.released.retain(|(a, _)| *a != self.0);
        if own.released.len() >= MAX_RELEASED {
            own.released.pop_front();
        }
        own.released.push_back((self.0, Instant::now()));
    }
}

impl Own {
    /// The addresses rule 2 tries from `base`, in order: the first
    /// `FALLBACK_TRIES + 1` that no device of this process holds or gave up
    /// lately, then those given up lately, oldest first.
    fn candidates(&mut self, base: Ipv4Addr, now: Instant) -> Vec<Ipv4Addr> {
        while self
            .released
            .front()
            .is_some_and(|(_, at)| now.duration_since(*at) >= QUARANTINE)
        {
            self.released.pop_front();
        }
        let recent = |a: &Ipv4Addr| self.released.iter().any(|(r, _)| r == a);
        let mut fresh = Vec::new();
        // Every address skipped is held or recent: the walk is bounded.
        for k in 0.. {
            if fresh.len() > FALLBACK_TRIES as usize {
                break;
            }
            let a = nth_after(base, k);
            if !self.live.contains(&a) && !recent(&a) {
                fresh.push(a);
            }
        }
        let live = &self.live;
        fresh.extend(
            self.released
                .iter()
                .map(|(a, _)| *a)
                .filter(|a| !live.contains(a)),
        );
        fresh
    }
}

/// Rule 3 was announced (once a process).
static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The pid-derived loopback address of rule 2.
pub fn pid_loopback(pid: u32) -> Ipv4Addr {
    let a = 1 + ((pid >> 16) & 0x3f) as u8;
    Ipv4Addr::new(127, a, (pid >> 8) as u8, pid as u8)
}

/// The `k`th fallback after `base` (k = 0 is `base`), staying in 127.1-64.x.x.
fn nth_after(base: Ipv4Addr, k: u32) -> Ipv4Addr {
    let o = base.octets();
    let low = (u32::from(o[1] - 1) << 16 | u32::from(o[2]) << 8 | u32::from(o[3])) + k;
    let low = low % (64 << 16);
    Ipv4Addr::new(127, 1 + (low >> 16) as u8, (low >> 8) as u8, low as u8)
}

/// Parse a `SOFTRDMA_ADDR` value; the port defaults to [`ROCE_PORT`].
pub fn parse(value: &str) -> io::Result<SocketAddr> {
    let v = value.trim();
    if let Ok(sa) = v.parse::<SocketAddr>() {
        return Ok(sa);
    }
    if let Ok(ip) = v.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, ROCE_PORT));
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "softrdma: {ENV}={value:?} is not an IP address (examples: 192.168.1.10, \
             192.168.1.10:4791, fd00::2, [fd00::2]:4791)"
        ),
    ))
}

/// The address rule 1 names, if `SOFTRDMA_ADDR` is set (and not empty).
pub fn from_env() -> io::Result<Option<SocketAddr>> {
    match std::env::var(ENV) {
        Ok(v) if !v.trim().is_empty() => parse(&v).map(Some),
        Ok(_) | Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(v)) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("softrdma: {ENV}={v:?} is not an IP address"),
        )),
    }
}

/// The address a process's first device uses (rule 1 or 2) if it is free,
/// without binding.
pub fn default_addr() -> io::Result<SocketAddr> {
    Ok(match from_env()? {
        Some(a) => a,
        None => SocketAddr::new(IpAddr::V4(pid_loopback(std::process::id())), ROCE_PORT),
    })
}

/// Bind the device's endpoint by the rule above.
///
/// Locks: the process's address registry, for the whole search (alone:
/// binding takes no other lock).
pub fn bind_default() -> io::Result<UdpLink> {
    if let Some(a) = from_env()? {
        return UdpLink::bind_same_host(a);
    }
    // Held while binding: two devices opening at once must not both count
    // the other's new address as a stranger's (that is rule 3's evidence).
    let mut own = crate::lock(&OWN);
    let tries = own.candidates(pid_loopback(std::process::id()), Instant::now());
    let held = |mut l: UdpLink, own: &mut Own, ip: Ipv4Addr| {
        own.live.push(ip);
        l.held = Some(Held(ip));
        l
    };
    let mut first_err = None;
    for &ip in &tries {
        let addr = SocketAddr::new(IpAddr::V4(ip), ROCE_PORT);
        match UdpLink::bind_same_host(addr) {
            Ok(l) => return Ok(held(l, &mut own, ip)),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                first_err.get_or_insert(e);
            }
            Err(e) => return Err(e),
        }
    }
    let first_err =
        first_err.unwrap_or_else(|| io::Error::other("softrdma: no loopback address free"));
    // Rule 3: every address was taken, which is what a wildcard holder of
    // 4791 does. The port first: devices that fall back must agree on it.
    for (port, &ip) in FALLBACK_PORTS.flat_map(|p| tries.iter().map(move |ip| (p, ip))) {
        let addr = SocketAddr::new(IpAddr::V4(ip), port);
        match UdpLink::bind_fallback(addr) {
            Ok(l) => {
                if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    crate::log::log!(
                        Warn,
                        "UDP port {ROCE_PORT} is held on every loopback address (a wildcard \
                         socket: another user's program, or the kernel's rxe); this device uses \
                         {addr}: it reaches, and is reached by, only devices of this host that \
                         fell back alike (docs/RELIABILITY.md, Local users)"
                    );
                }
                return Ok(held(l, &mut own, ip));
            }
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {}
            Err(e) => return Err(e),
        }
    }
    Err(first_err)
}

/// The MTU of the interface that holds `ip` — on Linux every 127.0.0.0/8
/// address is on `lo`, even when no interface lists it.
pub fn link_mtu(ip: IpAddr) -> io::Result<u32> {
    match super::sys::interface_mtu(ip) {
        Err(e) if e.kind() == io::ErrorKind::NotFound && ip.is_loopback() => {
            super::sys::interface_mtu(IpAddr::V4(Ipv4Addr::LOCALHOST))
        }
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_rule() {
        assert_eq!(pid_loopback(0), Ipv4Addr::new(127, 1, 0, 0));
        assert_eq!(pid_loopback(0x12345), Ipv4Addr::new(127, 2, 0x23, 0x45));
        assert_eq!(
            pid_loopback((1 << 22) - 1),
            Ipv4Addr::new(127, 64, 255, 255)
        );
        assert_eq!(
            nth_after(Ipv4Addr::new(127, 1, 0, 255), 1),
            Ipv4Addr::new(127, 1, 1, 0)
        );
        assert_eq!(
            nth_after(Ipv4Addr::new(127, 64, 255, 255), 1),
            Ipv4Addr::new(127, 1, 0, 0)
        );
    }

    #[test]
    fn own_addresses_are_skipped_and_given_up_ones_tried_last_oldest_first() {
        let base = Ipv4Addr::new(127, 9, 0, 250);
        let at = |k| nth_after(base, k);
        let t0 = Instant::now();
        let mut own = Own {
            live: vec![at(0), at(2)],
            released: [(at(5), t0), (at(1), t0 + Duration::from_secs(1))].into(),
        };
        let now = t0 + Duration::from_secs(2);
        let tries = own.candidates(base, now);
        let fresh: Vec<_> = [3, 4, 6, 7, 8, 9, 10, 11, 12].map(at).into();
        assert_eq!(tries[..9], fresh[..]);
        assert_eq!(tries[9..], [at(5), at(1)], "given up: last, oldest first");
        // Out of quarantine, an address is like any other again.
        let tries = own.candidates(base, t0 + QUARANTINE + Duration::from_millis(1500));
        assert_eq!(own.released.len(), 0);
        assert_eq!(tries[..3], [at(1), at(3), at(4)]);
        assert_eq!(tries.len(), FALLBACK_TRIES as usize + 1);
    }

    #[test]
    fn parse_forms() {
        assert_eq!(parse("10.0.0.1").unwrap(), "10.0.0.1:4791".parse().unwrap());
        assert_eq!(
            parse("10.0.0.1:5000").unwrap(),
            "10.0.0.1:5000".parse().unwrap()
        );
        assert_eq!(parse("::1").unwrap(), "[::1]:4791".parse().unwrap());
        assert_eq!(parse("[::1]:7").unwrap(), "[::1]:7".parse().unwrap());
        let e = parse("eth0").unwrap_err().to_string();
        assert!(
            e.starts_with("softrdma: SOFTRDMA_ADDR=\"eth0\" is not an IP address"),
            "{e}"
        );
    }
}
