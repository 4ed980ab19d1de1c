//! The network interface behind the device's address (what
//! `gid_attrs/ndevs/<idx>` and `device/net/` name), found as the device
//! finds its address: `SOFTRDMA_ADDR`, else a loopback address (on `lo`).

#![forbid(unsafe_code)]

use std::net::{IpAddr, SocketAddr};

/// The address `SOFTRDMA_ADDR` names (with or without a port), if set.
fn env_ip() -> Option<IpAddr> {
    let v = std::env::var("SOFTRDMA_ADDR").ok()?;
    let v = v.trim();
    if v.is_empty() {
        return None;
    }
    v.parse::<SocketAddr>()
        .map(|s| s.ip())
        .or_else(|_| v.parse::<IpAddr>())
        .ok()
}

/// The interface name, or None when the address is on no interface (the
/// face then names none rather than a wrong one).
pub fn name(lookup: impl Fn(IpAddr) -> Option<String>) -> Option<String> {
    match env_ip() {
        None => Some("lo".to_string()),
        Some(ip) => lookup(ip).or_else(|| ip.is_loopback().then(|| "lo".to_string())),
    }
}
