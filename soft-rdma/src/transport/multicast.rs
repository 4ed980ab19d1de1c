//! A UDP link's IP multicast groups (docs/TRANSPORT.md, "Multicast"): what
//! a kernel RoCE device does on the wire, so a kernel peer could be in the
//! group. A UD send to a multicast GID leaves the link's own socket for
//! `group:4791` on the interface of the device's address (`IP_MULTICAST_IF`,
//! looped back to the host's members); each group the device joins is one
//! more socket bound to `group:4791` (`SO_REUSEADDR`: every device of the
//! host binds it) with `IP_ADD_MEMBERSHIP` on that interface, watched by
//! the link's `arrivals` epoll and read with the link's own socket.
#![forbid(unsafe_code)]
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use super::sys;
use super::{Counters, RecvBatch, MAX_PACKET, ROCE_PORT};
use crate::sync::lock;

/// The groups a link has joined, one socket each.
#[derive(Debug, Default)]
pub(super) struct Groups {
    socks: Mutex<Vec<(IpAddr, UdpSocket)>>,
    /// `socks` is not empty: read without the lock, so a link that joined
    /// nothing pays one load a receive.
    any: AtomicBool,
}

/// Send multicast from `sock` (bound to `local`) on `local`'s interface —
/// without it the kernel would route a group by the routing table, which
/// on `lo` (or in a bare namespace) has no multicast route. IPv6 groups
/// are left to the routing table.
pub(super) fn send_from(sock: &UdpSocket, local: IpAddr) -> io::Result<()> {
    match local {
        IpAddr::V4(a) if !a.is_unspecified() => sys::multicast_from(sock.as_fd(), &a),
        _ => Ok(()),
    }
}

impl Groups {
    /// Receive what is sent to `group` on `local`'s interface; the socket
    /// joins `arrivals` (the link's epoll). Joining twice is one membership.
    pub(super) fn join(
        &self,
        group: IpAddr,
        local: IpAddr,
        arrivals: BorrowedFd<'_>,
    ) -> io::Result<()> {
        if !group.is_multicast() {
            return Err(io::ErrorKind::InvalidInput.into());
        }
        let mut socks = lock(&self.socks);
        if socks.iter().any(|(g, _)| *g == group) {
            return Ok(());
        }
        let sock = UdpSocket::from(sys::udp_bound_shared(&SocketAddr::new(group, ROCE_PORT))?);
        match (group, local) {
            (IpAddr::V4(g), IpAddr::V4(l)) => sock.join_multicast_v4(&g, &l)?,
            (IpAddr::V4(g), IpAddr::V6(_)) => {
                sock.join_multicast_v4(&g, &std::net::Ipv4Addr::UNSPECIFIED)?
            }
            (IpAddr::V6(g), _) => sock.join_multicast_v6(&g, 0)?,
        }
        sys::epoll_add(arrivals, sock.as_fd())?;
        socks.push((group, sock));
        self.any.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Leave `group` (closing its socket ends the membership and takes it
    /// out of the epoll).
    pub(super) fn leave(&self, group: IpAddr) {
        let mut socks = lock(&self.socks);
        socks.retain(|(g, _)| *g != group);
        self.any.store(!socks.is_empty(), Ordering::Relaxed);
    }

    /// Append what the groups' sockets hold to `batch`, without blocking,
    /// while it has room.
    pub(super) fn receive(&self, batch: &mut RecvBatch, c: &Counters) {
        // A datagram that came as the flag was set is read next time: the
        // epoll still reports its socket readable.
        if !self.any.load(Ordering::Relaxed) {
            return;
        }
        let socks = lock(&self.socks);
        if socks.is_empty() {
            return;
        }
        // One byte more than a packet: a longer datagram is seen as such.
        let mut buf = [0u8; MAX_PACKET + 1];
        for (group, sock) in socks.iter() {
            while batch.len() < batch.capacity() && batch.used + MAX_PACKET <= batch.buf.len() {
                match sock.recv_from(&mut buf) {
                    Ok((n, _)) if n > MAX_PACKET => Counters::add(&c.recv_truncated, 1),
                    Ok((n, from)) => {
                        batch.push_to_group(from, *group, &buf[..n]);
                        Counters::add(&c.received, 1);
                        Counters::add(&c.received_bytes, n as u64);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break, // WouldBlock; anything else is the next round's
                }
            }
        }
    }
}
