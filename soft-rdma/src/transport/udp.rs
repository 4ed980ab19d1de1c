//! A [`Link`] over one UDP socket, batched with `sendmmsg`/`recvmmsg`.
//!
//! The socket is non-blocking; `recv` waits in `poll` on the socket and an
//! eventfd (the `close` doorbell), so a blocked receiver costs no CPU.
//! `IP_MTU_DISCOVER`/`IPV6_MTU_DISCOVER` = `PMTUDISC_DO`: the kernel sends DF
//! and, for an unconnected IPv4 socket, IP ID 0 on every datagram — the ID is
//! covered by the ICRC, so a receiver can only recompute an IPv4 ICRC if it is
//! known (roce-wire.md).
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::sys::{self, RawAddr, RecvMeta, CHUNK};
use super::{Counters, Link, LinkStats, Outgoing, RecvBatch, MAX_PACKET};

/// Socket buffer size asked for (each direction).
pub const SOCKET_BUFFER: usize = 16 << 20;

/// How often a send retries a full socket buffer (each wait up to 1 ms).
const SEND_RETRIES: u32 = 4;

/// A RoCEv2 endpoint on a UDP socket.
#[derive(Debug)]
pub struct UdpLink {
    sock: UdpSocket,
    wake: OwnedFd,
    closed: AtomicBool,
    local: SocketAddr,
    counters: Counters,
}

/// The one-line message for a failed bind, saying what to do.
fn bind_error(addr: SocketAddr, e: io::Error) -> io::Error {
    let what = match e.raw_os_error() {
        Some(libc::EADDRNOTAVAIL) => {
            "address not available on this host (set SOFTRDMA_ADDR to one of this host's addresses)"
                .to_string()
        }
        Some(libc::EADDRINUSE) => format!(
            "already in use by another soft RDMA device or program; stop it, or set SOFTRDMA_ADDR \
             to another address (e.g. another 127.x.y.z) or port (e.g. {}:{})",
            addr.ip(),
            addr.port().wrapping_add(1).max(1024)
        ),
        Some(libc::EACCES) => "permission denied (ports below 1024 need privilege; use port 4791 \
                               or another port of 1024 or more in SOFTRDMA_ADDR)"
            .to_string(),
        Some(libc::EAFNOSUPPORT) => {
            "this address family is not supported on this host (use an IPv4 address in SOFTRDMA_ADDR)"
                .to_string()
        }
        Some(libc::EINVAL) if matches!(addr, SocketAddr::V6(a) if a.ip().segments()[0] & 0xffc0 == 0xfe80 && a.scope_id() == 0) => {
            "an IPv6 link-local address needs an interface (use a global address in SOFTRDMA_ADDR)"
                .to_string()
        }
        _ => e.to_string(),
    };
    io::Error::new(e.kind(), format!("softrdma: cannot bind {addr}: {what}"))
}

impl UdpLink {
    /// Bind `addr` (IPv4 or IPv6; port normally [`super::ROCE_PORT`], 0 for
    /// any). Errors are one line saying what to do.
    pub fn bind(addr: SocketAddr) -> io::Result<UdpLink> {
        let sock = UdpSocket::bind(addr).map_err(|e| bind_error(addr, e))?;
        sock.set_nonblocking(true)?;
        let fd = sock.as_fd();
        let is_v4 = match sock.local_addr()? {
            SocketAddr::V4(_) => true,
            SocketAddr::V6(_) => false,
        };
        if is_v4 {
            sys::setsockopt_int(
                fd,
                libc::IPPROTO_IP,
                libc::IP_MTU_DISCOVER,
                libc::IP_PMTUDISC_DO,
            )?;
        } else {
            sys::setsockopt_int(
                fd,
                libc::IPPROTO_IPV6,
                libc::IPV6_MTU_DISCOVER,
                libc::IPV6_PMTUDISC_DO,
            )?;
        }
        for (force, plain) in [
            (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
            (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
        ] {
            // FORCE needs CAP_NET_ADMIN; otherwise the request is capped at
            // net.core.[rw]mem_max. Either way, carry on with what we get.
            if sys::setsockopt_int(fd, libc::SOL_SOCKET, force, SOCKET_BUFFER as libc::c_int)
                .is_err()
            {
                let _ =
                    sys::setsockopt_int(fd, libc::SOL_SOCKET, plain, SOCKET_BUFFER as libc::c_int);
            }
        }
        let local = sock.local_addr()?;
        Ok(UdpLink {
            sock,
            wake: sys::eventfd()?,
            closed: AtomicBool::new(false),
            local,
            counters: Counters::default(),
        })
    }

    /// The counters.
    pub fn stats(&self) -> LinkStats {
        self.counters.snapshot()
    }

    /// The kernel's receive buffer size for the socket (after doubling).
    pub fn recv_buffer_size(&self) -> io::Result<usize> {
        sys::getsockopt_int(self.sock.as_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF)
            .map(|v| v as usize)
    }

    /// The socket's path-MTU-discovery mode (`IP_PMTUDISC_*`).
    pub fn mtu_discover(&self) -> io::Result<i32> {
        match self.local {
            SocketAddr::V4(_) => {
                sys::getsockopt_int(self.sock.as_fd(), libc::IPPROTO_IP, libc::IP_MTU_DISCOVER)
            }
            SocketAddr::V6(_) => sys::getsockopt_int(
                self.sock.as_fd(),
                libc::IPPROTO_IPV6,
                libc::IPV6_MTU_DISCOVER,
            ),
        }
    }

    /// The peer in the socket's family (an IPv4 peer of an IPv6 socket
    /// becomes `::ffff:a.b.c.d`, and back); None if it cannot be reached.
    fn peer_addr(&self, peer: SocketAddr) -> Option<SocketAddr> {
        match (self.local, peer) {
            (SocketAddr::V4(_), SocketAddr::V4(_)) | (SocketAddr::V6(_), SocketAddr::V6(_)) => {
                Some(peer)
            }
            (SocketAddr::V6(_), SocketAddr::V4(p)) => Some(SocketAddr::new(
                IpAddr::V6(p.ip().to_ipv6_mapped()),
                p.port(),
            )),
            (SocketAddr::V4(_), SocketAddr::V6(p)) => p
                .ip()
                .to_ipv4_mapped()
                .map(|ip| SocketAddr::new(IpAddr::V4(ip), p.port())),
        }
    }

    /// Send one chunk (<= CHUNK) of already converted datagrams.
    fn send_chunk(&self, addrs: &[RawAddr], datas: &[&[u8]]) -> io::Result<usize> {
        let fd = self.sock.as_fd();
        let (mut off, mut sent, mut retries) = (0, 0, 0);
        while off < datas.len() {
            match sys::send_batch(fd, &addrs[off..], &datas[off..]) {
                Ok(k) => {
                    let bytes: usize = datas[off..off + k].iter().map(|d| d.len()).sum();
                    Counters::add(&self.counters.sent, k as u64);
                    Counters::add(&self.counters.sent_bytes, bytes as u64);
                    off += k;
                    sent += k;
                }
                Err(e) => match e.raw_os_error() {
                    Some(libc::EINTR) => {}
                    Some(libc::EAGAIN | libc::ENOBUFS) if retries < SEND_RETRIES => {
                        retries += 1;
                        // Wait (up to 1 ms) for room; ENOBUFS has no event, so
                        // the timeout is the back-off.
                        sys::poll(&[(fd, libc::POLLOUT)], Some(Duration::from_millis(1)))?;
                    }
                    Some(libc::EAGAIN | libc::ENOBUFS) => {
                        // Still full after the retries: drop the rest.
                        Counters::add(&self.counters.send_dropped, (datas.len() - off) as u64);
                        return Ok(sent);
                    }
                    Some(libc::EBADF | libc::ENOTSOCK | libc::EFAULT) => return Err(e),
                    // Refused, unreachable, too large, bad address...: this
                    // datagram only.
                    _ => {
                        Counters::add(&self.counters.send_dropped, 1);
                        off += 1;
                    }
                },
            }
        }
        Ok(sent)
    }

    /// One non-blocking `recvmmsg` round appending to `batch`; Ok(false) when
    /// the socket had nothing.
    fn try_recv(&self, batch: &mut RecvBatch) -> io::Result<bool> {
        let mut meta = [RecvMeta::empty(); CHUNK];
        loop {
            let start = batch.len;
            let room = batch.capacity() - start;
            if room == 0 {
                return Ok(true);
            }
            let bufs = &mut batch.bufs[start * MAX_PACKET..];
            let got = match sys::recv_batch(
                self.sock.as_fd(),
                bufs,
                MAX_PACKET,
                &mut meta[..room.min(CHUNK)],
            ) {
                Ok(n) => n,
                Err(e) => match e.raw_os_error() {
                    Some(libc::EAGAIN) => return Ok(batch.len > 0),
                    Some(libc::EINTR) => continue,
                    // A queued ICMP error (only with IP_RECVERR or a
                    // connected socket): not ours to report, keep going.
                    Some(
                        libc::ECONNREFUSED
                        | libc::EHOSTUNREACH
                        | libc::ENETUNREACH
                        | libc::EHOSTDOWN,
                    ) => continue,
                    _ => return Err(e),
                },
            };
            let mut w = start;
            let mut bytes = 0;
            for (i, m) in meta[..got].iter().enumerate() {
                let slot = start + i;
                let peer = m.addr.socket_addr();
                if m.truncated || peer.is_none() {
                    Counters::add(&self.counters.recv_truncated, 1);
                    continue;
                }
                batch.lens[slot] = m.len;
                batch.peers[slot] = peer.unwrap_or(super::UNSPECIFIED);
                if w != slot {
                    batch.move_slot(slot, w);
                }
                bytes += m.len;
                w += 1;
            }
            Counters::add(&self.counters.received, (w - start) as u64);
            Counters::add(&self.counters.received_bytes, bytes as u64);
            batch.len = w;
            // A short read means the queue is (momentarily) empty.
            if got < room.min(CHUNK) {
                return Ok(batch.len > 0);
            }
        }
    }
}

impl Link for UdpLink {
    fn local(&self) -> SocketAddr {
        self.local
    }

    fn send(&self, batch: &[Outgoing<'_>]) -> io::Result<usize> {
        let mut addrs = [RawAddr::new(&self.local); CHUNK];
        let mut datas: [&[u8]; CHUNK] = [&[]; CHUNK];
        let mut sent = 0;
        let mut it = batch.iter();
        loop {
            let mut n = 0;
            for o in it.by_ref() {
                match self.peer_addr(o.peer) {
                    Some(p) if o.data.len() <= u16::MAX as usize => {
                        addrs[n] = RawAddr::new(&p);
                        datas[n] = o.data;
                        n += 1;
                        if n == CHUNK {
                            break;
                        }
                    }
                    _ => Counters::add(&self.counters.send_dropped, 1),
                }
            }
            if n == 0 {
                return Ok(sent);
            }
            sent += self.send_chunk(&addrs[..n], &datas[..n])?;
        }
    }

    fn recv(&self, batch: &mut RecvBatch, timeout: Option<Duration>) -> io::Result<usize> {
        batch.clear();
        let deadline = super::deadline(timeout);
        loop {
            if self.closed.load(Ordering::Acquire) {
                return Ok(0);
            }
            // Fast path first: under load the socket is usually readable.
            if self.try_recv(batch)? {
                return Ok(batch.len);
            }
            let rest = match deadline {
                None => None, // no timeout, or one too long to represent

                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(r) if !r.is_zero() => Some(r),
                    _ => return Ok(0),
                },
            };
            let ready = sys::poll(
                &[
                    (self.sock.as_fd(), libc::POLLIN),
                    (self.wake.as_fd(), libc::POLLIN),
                ],
                rest,
            )?;
            if ready[1] {
                return Ok(0);
            }
        }
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        sys::eventfd_signal(self.wake.as_fd());
    }

    fn stats(&self) -> LinkStats {
        self.counters.snapshot()
    }
}

impl AsRawFd for UdpLink {
    /// The socket, for callers that wait on it with other fds (readable =
    /// `recv` with a zero timeout will find something).
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}
