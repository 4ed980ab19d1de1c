//! How a connecting process finds the device of a listener on the same
//! host, although every process's device has an address of its own.
//!
//! A listener on port P of port space S (whatever local address it bound:
//! `0.0.0.0`, `127.0.0.1`, any address of the host) claims the abstract
//! Unix socket name `softrdma-cm/S/P`, and answers each connection to it
//! with its device's GID. A client connecting to a local address and port
//! P asks that name. A port is answered once its id listens (a client
//! dialling a port bound but not yet listening waits for the listen, at
//! most two seconds, rather than racing it). The kernel gives an abstract name to the first to bind
//! it in the network namespace, as it gives a port: another local user can
//! take a port no sooner than with TCP — a listener finding its port taken
//! fails with EADDRINUSE as `rdma_listen` does, and never shares it — and
//! cannot answer for a port someone else holds. As with the kernel's
//! rdma_cm, one port of a space has one listener in a namespace.

use crate::wire::PortSpace;
use soft_rdma::verbs::Gid;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::time::Duration;

/// How long a client waits for a listener's answer.
const ANSWER_WAIT: Duration = Duration::from_secs(2);

fn name(ps: PortSpace, port: u16) -> io::Result<SocketAddr> {
    SocketAddr::from_abstract_name(format!("softrdma-cm/{:#06x}/{port}", ps.value()))
}

/// A port of a port space this process holds.
pub struct Claim {
    listener: UnixListener,
    gid: Gid,
    pub ps: PortSpace,
    pub port: u16,
}

impl Claim {
    /// Takes `port` of `ps` for the device `gid`; EADDRINUSE when anyone
    /// holds it.
    pub fn take(ps: PortSpace, port: u16, gid: Gid) -> io::Result<Claim> {
        let listener = UnixListener::bind_addr(&name(ps, port)?)?;
        listener.set_nonblocking(true)?;
        Ok(Claim {
            listener,
            gid,
            ps,
            port,
        })
    }

    /// Takes a free port of `ps` (an ephemeral one, as `bind` to port 0).
    pub fn take_any(ps: PortSpace, gid: Gid) -> io::Result<Claim> {
        // The kernel's ephemeral range; a random start spreads processes.
        let span = 60999 - 32768;
        let start = std::process::id().wrapping_mul(2_654_435_761) % span;
        for k in 0..span {
            let port = 32768 + ((start + k) % span) as u16;
            match Claim::take(ps, port, gid) {
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
                r => return r,
            }
        }
        Err(io::Error::from(io::ErrorKind::AddrInUse))
    }

    /// Answers every client waiting: our GID, then the connection closes.
    /// Call when the descriptor is readable (it never blocks).
    pub fn serve(&self) {
        while let Ok((mut s, _)) = self.listener.accept() {
            // A client that does not read is its own problem: the write of
            // 16 bytes into a fresh socket's buffer does not block.
            let _ = s.write_all(&self.gid.0);
        }
    }
}

impl AsFd for Claim {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }
}

/// The GID of the device listening on `port` of `ps` on this host, if any
/// process listens there.
pub fn find(ps: PortSpace, port: u16) -> io::Result<Option<Gid>> {
    let mut s = match UnixStream::connect_addr(&name(ps, port)?) {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return Ok(None),
        Err(e) => return Err(e),
    };
    s.set_read_timeout(Some(ANSWER_WAIT))?;
    let mut g = [0u8; 16];
    match s.read_exact(&mut g) {
        Ok(()) => Ok(Some(Gid(g))),
        // The holder did not answer (a squatter, or a process stuck): as
        // good as nobody listening.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::UnexpectedEof
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Where a connection request for `dst` goes: for an address of this host
/// (loopback, unspecified, or one a socket can bind here), the device of
/// the process holding port `dst.port()` of `ps` (None: nobody holds it);
/// for another host's, the device at that address (its GID is the address).
pub fn resolve(ps: PortSpace, dst: std::net::SocketAddr) -> io::Result<Option<Gid>> {
    if is_local(dst.ip()) {
        find(ps, dst.port())
    } else {
        Ok(Some(Gid::from_ip(dst.ip())))
    }
}

fn is_local(ip: std::net::IpAddr) -> bool {
    ip.is_loopback() || ip.is_unspecified() || std::net::UdpSocket::bind((ip, 0)).is_ok()
}
