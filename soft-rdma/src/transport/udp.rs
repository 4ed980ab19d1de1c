//! A [`Link`] over one UDP socket, batched with `sendmmsg`/`recvmmsg`.
//!
//! The socket is non-blocking; `recv` waits in `poll` on the socket and an
//! eventfd (the `close` doorbell), so a blocked receiver costs no CPU; `wait`
//! polls an epoll instance holding the socket instead, whose interest
//! `wake_on_arrival` switches off and on.
//! `IP_MTU_DISCOVER`/`IPV6_MTU_DISCOVER` = `PMTUDISC_DO`: the kernel sends DF
//! and, for an unconnected IPv4 socket, IP ID 0 on every datagram — the ID is
//! covered by the ICRC, so a receiver can only recompute an IPv4 ICRC if it is
//! known (docs/ARCHITECTURE.md, the ICRC paragraph).
//!
//! GSO: consecutive packets of equal size to one peer go out as one UDP GSO
//! datagram (`UDP_SEGMENT`: the kernel, or a NIC, cuts it into the same
//! packets), and the socket takes coalesced datagrams back (`UDP_GRO`, split
//! here by the segment size the kernel reports) — one skb and one copy per
//! up to 64 packets instead of per packet. Over IPv4 the kernel gives the
//! segments IP IDs 0, 1, 2… and the ICRC covers the ID, so segment k to a
//! peer off loopback leaves with the ICRC for ID k (`wire::icrc::IdDeltas`: a 4-byte part of its own
//! after the packet's other bytes) — what a kernel rxe peer, which verifies
//! against the real header, accepts; our receiver cannot see the ID and
//! accepts one below 64. IPv6 has no ID. `SOFTRDMA_GSO=off` sends every
//! packet alone; a kernel that refuses a GSO send turns GSO off for the
//! link and the refused packets go again unsegmented. Hand-written over
//! `sendmmsg`/`recvmmsg` rather than a crate such as quinn-udp because it
//! mixes peers and segment sizes in one system call and needs DF with IP ID
//! 0, which QUIC's socket set-up does not keep.
//!
//! A link bound with [`UdpLink::bind_same_host`] (the device's default) also
//! sends to and receives from other devices of the host through shared-memory
//! rings ([`super::same_host`]), polling the fast path's socket with its own.
#![forbid(unsafe_code)]
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::same_host::{self, SameHost};
use super::sys::{self, Datagram, RawAddr, RecvMeta, CHUNK, MAX_IOV};
use super::{Counters, Link, LinkStats, Outgoing, Packed, RecvBatch, MAX_PACKET, ROCE_PORT};
use crate::wire::icrc::{IdDeltas, ICRC_LEN};

/// Socket buffer size asked for (each direction).
pub const SOCKET_BUFFER: usize = 16 << 20;

/// How often a send retries a full socket buffer (each wait up to 1 ms).
const SEND_RETRIES: u32 = 4;

/// Largest GSO datagram (the UDP payload limit, with room to spare) and the
/// kernel's limit on its segments (`UDP_MAX_SEGMENTS`).
const GSO_MAX_BYTES: usize = 65000;
const GSO_MAX_SEGMENTS: usize = crate::wire::icrc::GSO_MAX_SEGMENTS as usize;

/// How long a waiter with nothing else to do watches the same-host rings
/// before it sleeps: a streaming sender's next datagram usually comes
/// sooner, and a sleeping consumer costs the sender a wake-up (a system call
/// that schedules the other process) for each gap. Linux's `busy_poll`
/// suggestion, 50 us.
const SPIN_BEFORE_SLEEP: Duration = Duration::from_micros(50);

/// How long a waiter with nothing else to do watches the UDP socket (with
/// zero-timeout polls) before it sleeps, after a receive that found
/// datagrams: a streaming sender's next GSO datagram comes sooner (every
/// ~30 us at 1 GB/s), and between hosts each sleep cost the receiving
/// thread a wake-up (two context switches) per 1.2 datagrams of a 64 KiB
/// `write_bw` at MTU 1500. Not on a busy core: a spin during which the
/// thread was preempted turns spinning off for [`SPIN_CALM`] waits.
const SPIN_UDP: Duration = Duration::from_micros(50);

/// Waits that sleep at once after a spin was preempted.
const SPIN_CALM: u32 = 256;

/// Receives in a row that may skip the UDP socket while the rings deliver.
const UDP_SKIPS: u32 = 8;

/// How long polls may leave alone a socket found empty at its last read,
/// on a device whose peers are on the rings (`try_recv`): at most one
/// empty `recvmmsg` this often, and at most this long for a datagram.
const UDP_IDLE: Duration = Duration::from_micros(10);

/// Receive slot for a possibly coalesced (GRO) datagram.
pub(super) const GRO_SLOT: usize = 1 << 16;

/// `SOFTRDMA_GSO`: `off` (or `0`) sends every packet as its own datagram
/// and takes no coalesced ones (no `UDP_GRO`); `refuse` is a test hook that
/// makes the first GSO send fail as a kernel without UDP GSO would (the
/// link then falls back to plain datagrams, resending that one's packets).
pub const GSO_ENV: &str = "SOFTRDMA_GSO";

/// `SOFTRDMA_RX_SPIN`: `off` (or `0`) makes a waiting thread sleep at once
/// instead of watching the UDP socket for [`SPIN_UDP`] first (on a machine
/// whose cores are all busy).
pub const RX_SPIN_ENV: &str = "SOFTRDMA_RX_SPIN";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GsoMode {
    On,
    Off,
    Refuse,
}

impl GsoMode {
    fn from_env() -> GsoMode {
        match std::env::var(GSO_ENV).as_deref().map(str::trim) {
            Ok("off" | "0" | "no" | "false") => GsoMode::Off,
            Ok("refuse") => GsoMode::Refuse,
            _ => GsoMode::On,
        }
    }
}

/// Whether GSO segments to `peer` (in the socket's family) need their
/// ICRCs for the IP IDs the kernel numbers them with: IPv4 peers that are
/// not on loopback. `lo` keeps a GSO datagram whole up to the receiving
/// socket (it takes every offload), so on loopback the IDs reach no wire
/// and no rxe (which does not bind `lo`), and the link sends the bytes it
/// was given, as the transport tests check.
fn ids_on_wire(peer: &SocketAddr) -> bool {
    match peer {
        SocketAddr::V4(a) => !a.ip().is_loopback(),
        SocketAddr::V6(a) => a.ip().to_ipv4_mapped().is_some_and(|v4| !v4.is_loopback()),
    }
}

/// One datagram being planned: `pkts` packets from the `first`th on, each
/// `seg` bytes but the last, `bytes` in all; `end`, where the last one ends
/// when the packets lie one after another in one buffer
/// (`UdpLink::send_udp_packed`; 0 otherwise).
#[derive(Clone, Copy)]
struct Group {
    peer: SocketAddr,
    first: usize,
    pkts: usize,
    seg: usize,
    bytes: usize,
    end: usize,
    ids: bool,
}

/// Up to [`CHUNK`] datagrams for one `sendmmsg`, packets taken in order:
/// the planning both send paths share.
struct Planner {
    groups: [Group; CHUNK],
    n: usize,
    /// The last group may take more packets (no packet was skipped since).
    open: bool,
}

impl Planner {
    fn new(local: SocketAddr) -> Planner {
        let empty = Group {
            peer: local,
            first: 0,
            pkts: 0,
            seg: 0,
            bytes: 0,
            end: 0,
            ids: false,
        };
        Planner {
            groups: [empty; CHUNK],
            n: 0,
            open: false,
        }
    }

    fn planned(&self) -> &[Group] {
        &self.groups[..self.n]
    }

    /// Whether a packet of `len` bytes to `p` (at `at` in the buffer, for
    /// packed ones) joins the open datagram: same peer, its segments all
    /// full so far, within GSO's limits, right after it in memory, and GSO
    /// allowed to `p`.
    fn joins(&self, link: &UdpLink, p: SocketAddr, len: usize, at: Option<usize>) -> bool {
        self.open
            && {
                let g = &self.groups[self.n - 1];
                g.peer == p
                    && at.is_none_or(|a| g.end == a)
                    && g.bytes == g.seg * g.pkts
                    && len <= g.seg
                    && len >= ICRC_LEN
                    && g.pkts < GSO_MAX_SEGMENTS
                    && g.bytes + len <= GSO_MAX_BYTES
            }
            && link.gso_to(&p)
    }

    /// Whether the open datagram numbers its segments' IP IDs.
    fn open_ids(&self) -> bool {
        self.open && self.groups[self.n - 1].ids
    }

    /// Packet `i` joins the open datagram (`joins`, from [`Planner::joins`])
    /// or opens a new one; false when [`CHUNK`] are planned already.
    fn push(
        &mut self,
        i: usize,
        p: SocketAddr,
        len: usize,
        at: Option<usize>,
        joins: bool,
    ) -> bool {
        if joins {
            let g = &mut self.groups[self.n - 1];
            g.pkts += 1;
            g.bytes += len;
            g.end += len;
            return true;
        }
        if self.n == CHUNK {
            return false;
        }
        self.groups[self.n] = Group {
            peer: p,
            first: i,
            pkts: 1,
            seg: len,
            bytes: len,
            end: at.map_or(0, |a| a + len),
            ids: ids_on_wire(&p),
        };
        self.n += 1;
        self.open = true;
        true
    }

    /// A packet was skipped: the next one cannot join across it.
    fn close(&mut self) {
        self.open = false;
    }
}

/// A RoCEv2 endpoint on a UDP socket.
#[derive(Debug)]
pub struct UdpLink {
    sock: UdpSocket,
    /// An epoll instance holding `sock`: what `wait` sleeps on, so the
    /// interest can be turned off while another thread polls the socket.
    arrivals: OwnedFd,
    /// The doorbell of `kick` and `close`.
    wake: odp::EventFd,
    /// Set by `kick`/`close` before the doorbell rings: what a spinning
    /// waiter watches instead of the eventfd.
    rung: AtomicBool,
    closed: AtomicBool,
    local: SocketAddr,
    /// The MTU of the interface holding `local`, read at bind time.
    mtu: Option<u32>,
    /// The socket takes coalesced datagrams (`UDP_GRO` accepted).
    gro: bool,
    /// Cleared if the kernel refuses a GSO send (or `SOFTRDMA_GSO=off`):
    /// plain datagrams from then on.
    gso: AtomicBool,
    /// Test hook (`SOFTRDMA_GSO=refuse`): the next GSO send fails as on a
    /// kernel without UDP GSO.
    refuse_gso: AtomicBool,
    /// The same-host fast path, if bound with it.
    same_host: Option<SameHost>,
    /// The last `wake_on_arrival` (a waiter then also wants kicks from rings).
    arrivals_on: AtomicBool,
    /// Whether `sock` is in `arrivals`' interest list. Turned off lazily
    /// (`wake_on_arrival`); the lock orders the toggles of pollers and of
    /// the waiter, and nothing is taken under it.
    watched: Mutex<bool>,
    /// A UDP datagram arrived since the last `wake_on_arrival(false)`.
    udp_recent: AtomicBool,
    /// Receives in a row that skipped the socket (rings busy, or idle
    /// polls: `try_recv`).
    udp_skips: AtomicU32,
    /// The last `recvmmsg` found the socket empty.
    udp_quiet: AtomicBool,
    /// When `try_recv` last read the socket (the same-host clock, ns).
    udp_read_at: AtomicU64,
    /// A waiter is (about to be) in a wait that does not watch the rings.
    deaf: AtomicBool,
    /// The last receive from the socket found datagrams (cleared by a spin
    /// that saw none): an unbounded wait spins first ([`SPIN_UDP`]).
    streaming: AtomicBool,
    /// Waits left that do not spin (a spin was preempted: the core is busy).
    calm: AtomicU32,
    /// `SOFTRDMA_RX_SPIN=off`: never spin on the socket.
    spin: bool,
    /// Bound to this port instead of [`ROCE_PORT`] (another socket holds
    /// 4791 on every address: `addr::bind_default`): loopback peers are
    /// taken to have fallen back alike, so their 4791 is this port on the
    /// wire, and this port is 4791 above the link.
    fallback: Option<u16>,
    counters: Counters,
    /// A default device's hold on its address (`addr::bind_default`): its
    /// drop quarantines the address.
    pub(super) held: Option<super::addr::Held>,
    /// The multicast groups joined (`Link::join`).
    groups: super::multicast::Groups,
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
        sys::path_mtu_discovery_do(fd, is_v4)?;
        sys::socket_buffers(fd, SOCKET_BUFFER);
        let local = sock.local_addr()?;
        // Best effort: a device that cannot send multicast still does the rest.
        let _ = super::multicast::send_from(&sock, local.ip());
        let mode = GsoMode::from_env();
        let gro = mode != GsoMode::Off && sys::enable_udp_gro(fd);
        Ok(UdpLink {
            gro,
            gso: AtomicBool::new(mode != GsoMode::Off),
            refuse_gso: AtomicBool::new(mode == GsoMode::Refuse),
            arrivals: sys::epoll_watching(fd)?,
            sock,
            wake: odp::EventFd::new()?,
            rung: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            local,
            // Unknown for a wildcard address: the device then assumes Ethernet.
            mtu: super::addr::link_mtu(local.ip()).ok(),
            same_host: None,
            arrivals_on: AtomicBool::new(true),
            watched: Mutex::new(true),
            udp_recent: AtomicBool::new(false),
            udp_skips: AtomicU32::new(0),
            udp_quiet: AtomicBool::new(false),
            udp_read_at: AtomicU64::new(0),
            deaf: AtomicBool::new(false),
            streaming: AtomicBool::new(false),
            calm: AtomicU32::new(0),
            spin: !matches!(
                std::env::var(RX_SPIN_ENV).as_deref().map(str::trim),
                Ok("off" | "0" | "no" | "false")
            ),
            fallback: None,
            counters: Counters::default(),
            held: None,
            groups: Default::default(),
        })
    }

    /// [`UdpLink::bind`], plus the same-host fast path if `addr` is a
    /// loopback address and `SOFTRDMA_SHM` does not turn it off (a fast path
    /// that cannot be set up is logged and left out).
    pub fn bind_same_host(addr: SocketAddr) -> io::Result<UdpLink> {
        let mut link = UdpLink::bind(addr)?;
        if link.local.ip().is_loopback() && same_host::enabled() {
            match SameHost::bind(link.local, &link.sock) {
                Ok(sh) => link.same_host = Some(sh),
                // Our UDP endpoint is ours, so the name's holder is no
                // device of this address: a squatter. Peers' handshakes go
                // to our endpoint and get no answer, so they stay on UDP and
                // the squatter receives nothing.
                Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => {
                    Counters::add(&link.counters.same_host_squatted, 1);
                    static SAID: AtomicBool = AtomicBool::new(false);
                    if !SAID.swap(true, Ordering::Relaxed) {
                        crate::log::log!(
                            Warn,
                            "no same-host fast path: another process holds this device's \
                             name softrdma-roce/{} (squatted); staying on UDP (logged once; \
                             counted in same_host_squatted)",
                            link.local
                        );
                    }
                }
                Err(e) => crate::log::log!(Warn, "no same-host fast path: {e}"),
            }
        }
        Ok(link)
    }

    /// [`UdpLink::bind_same_host`] on a port other than [`ROCE_PORT`] that
    /// stands in for it (see `fallback`).
    pub(super) fn bind_fallback(addr: SocketAddr) -> io::Result<UdpLink> {
        let mut link = UdpLink::bind_same_host(addr)?;
        link.fallback = Some(link.local.port());
        Counters::add(&link.counters.port_fallback, 1);
        Ok(link)
    }

    /// The port this link stands in for 4791 with, if it fell back.
    pub fn fallback_port(&self) -> Option<u16> {
        self.fallback
    }

    /// How many same-host rings this link reads now (at most
    /// [`super::SAME_HOST_MAX_RINGS`]).
    pub fn same_host_rings_in(&self) -> usize {
        self.same_host.as_ref().map_or(0, |sh| sh.rings_in())
    }

    /// Where a datagram to `peer` goes on the wire (see `fallback`).
    fn wire(&self, peer: SocketAddr) -> SocketAddr {
        match self.fallback {
            Some(f) if peer.port() == ROCE_PORT && peer.ip().is_loopback() => {
                SocketAddr::new(peer.ip(), f)
            }
            _ => peer,
        }
    }

    /// Whether the link has the same-host fast path.
    pub fn has_same_host(&self) -> bool {
        self.same_host.is_some()
    }

    /// The counters.
    pub fn stats(&self) -> LinkStats {
        self.counters.snapshot()
    }

    /// The kernel's receive buffer size for the socket (after doubling).
    pub fn recv_buffer_size(&self) -> io::Result<usize> {
        sys::recv_buffer_size(self.sock.as_fd())
    }

    /// The socket's path-MTU-discovery mode (`IP_PMTUDISC_*`).
    pub fn mtu_discover(&self) -> io::Result<i32> {
        sys::path_mtu_discovery(self.sock.as_fd(), self.local.is_ipv4())
    }

    /// The peer in the socket's family (an IPv4 peer of an IPv6 socket
    /// becomes `::ffff:a.b.c.d`, and back); None if it cannot be reached.
    fn peer_addr(&self, peer: SocketAddr) -> Option<SocketAddr> {
        let peer = self.wire(peer);
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

    /// Sleep until `fd` is readable, the doorbell rings, or the timeout
    /// passes — or, with `rings`, a same-host ring gets a datagram (or an
    /// offer arrives). A kick is consumed; a close stays (later sleeps end
    /// at once). True if `fd` was found readable.
    fn sleep_on(
        &self,
        fd: BorrowedFd<'_>,
        timeout: Option<Duration>,
        rings: bool,
    ) -> io::Result<bool> {
        let (fd, wake) = ((fd, libc::POLLIN), (self.wake.as_fd(), libc::POLLIN));
        let ready = match self.same_host.as_ref().filter(|_| rings) {
            None => match timeout {
                // Only an unbounded wait spins: a bounded one is a thread
                // that shares the work with a polling application thread.
                None if self.spin && self.streaming.load(Ordering::Relaxed) => {
                    match self.spin_on_socket(fd, wake)? {
                        Some(ready) => ready,
                        None => sys::poll(&[fd, wake], timeout)?,
                    }
                }
                _ => sys::poll(&[fd, wake], timeout)?,
            },
            Some(sh) => {
                // Only an unbounded wait spins: a bounded one is a thread
                // that shares the work with a polling application thread.
                if timeout.is_none() && self.spin_until_ready(sh) {
                    return Ok(false);
                }
                if !sh.arm() {
                    return Ok(false);
                }
                let ready = sys::poll(&[fd, wake, (sh.fd(), libc::POLLIN)], timeout);
                sh.disarm();
                let ready = ready?;
                if ready[2] {
                    sh.control(&self.counters);
                }
                ready
            }
        };
        if ready[1] && !self.closed.load(Ordering::Acquire) {
            self.rung.store(false, Ordering::Relaxed);
            self.wake.drain();
        }
        if ready[0] {
            // The socket (or, for `arrivals`, a socket it watches) has
            // datagrams: the next poll reads it (`try_recv`).
            self.udp_quiet.store(false, Ordering::Relaxed);
        }
        Ok(ready[0])
    }

    /// Put `sock` in the waiter's interest list, or take it out.
    /// Locks: `watched` (a leaf).
    fn set_watched(&self, on: bool) {
        let mut w = self.watched.lock().unwrap_or_else(|e| e.into_inner());
        // Off only while still off: a poller may have turned arrivals on
        // since the waiter decided (it stores `arrivals_on` before locking).
        if *w == on || (!on && self.arrivals_on.load(Ordering::SeqCst)) {
            return;
        }
        if let Err(e) = sys::epoll_interest(self.arrivals.as_fd(), self.sock.as_fd(), on) {
            // Cannot happen with our own two live descriptors; a waiter
            // that stays deaf still wakes at its timeout.
            crate::log::log!(Error, "epoll_ctl: {e}");
            return;
        }
        *w = on;
    }

    /// Watch the rings for up to [`SPIN_BEFORE_SLEEP`]: true if a datagram
    /// came; false at the end, or at once if the doorbell rang (the `poll`
    /// that follows then drains it). The UDP socket is not watched: a
    /// datagram there waits at most the spin.
    fn spin_until_ready(&self, sh: &SameHost) -> bool {
        let start = Instant::now();
        loop {
            for _ in 0..64 {
                if self.rung.load(Ordering::Relaxed) {
                    return false;
                }
                if sh.pending() {
                    return true;
                }
                std::hint::spin_loop();
            }
            if start.elapsed() >= SPIN_BEFORE_SLEEP {
                return false;
            }
        }
    }

    /// Watch `fd` and the doorbell with zero-timeout polls for up to
    /// [`SPIN_UDP`]: what `poll` found, or None at the end (the link went
    /// quiet: the next waits sleep at once until a receive finds datagrams
    /// again). Skipped for [`SPIN_CALM`] waits after a spin during which
    /// this thread was preempted.
    fn spin_on_socket(
        &self,
        fd: (BorrowedFd<'_>, libc::c_short),
        wake: (BorrowedFd<'_>, libc::c_short),
    ) -> io::Result<Option<[bool; 3]>> {
        let calm = self.calm.load(Ordering::Relaxed);
        if calm > 0 {
            self.calm.store(calm - 1, Ordering::Relaxed);
            return Ok(None);
        }
        let before = sys::preempted();
        let start = Instant::now();
        let found = loop {
            let ready = sys::poll(&[fd, wake], Some(Duration::ZERO))?;
            if ready[0] || ready[1] {
                break Some(ready);
            }
            if start.elapsed() >= SPIN_UDP {
                self.streaming.store(false, Ordering::Relaxed);
                break None;
            }
            std::hint::spin_loop();
        };
        if sys::preempted() != before {
            self.calm.store(SPIN_CALM, Ordering::Relaxed);
        }
        Ok(found)
    }

    /// Whether packets to `peer` may be coalesced into a GSO datagram.
    fn gso_to(&self, _peer: &SocketAddr) -> bool {
        self.gso.load(Ordering::Relaxed)
    }

    /// Send planned datagrams (`plan[i]` says how many packets and bytes
    /// `dgrams[i]` carries). Returns how many packets left and, if the
    /// kernel refused a GSO datagram (and GSO is now off), its index: the
    /// caller sends its packets and the rest again, one datagram each.
    fn send_planned(
        &self,
        dgrams: &[Datagram<'_>],
        plan: &[(usize, usize)],
    ) -> io::Result<(usize, Option<usize>)> {
        let fd = self.sock.as_fd();
        let (mut off, mut sent, mut retries) = (0, 0, 0);
        let count = |r: std::ops::Range<usize>| {
            plan[r]
                .iter()
                .fold((0, 0), |(p, b), &(np, nb)| (p + np, b + nb))
        };
        while off < dgrams.len() {
            let result =
                if dgrams[off].segment > 0 && self.refuse_gso.swap(false, Ordering::Relaxed) {
                    // The test hook: a kernel that refuses UDP_SEGMENT.
                    Err(io::Error::from_raw_os_error(libc::EIO))
                } else {
                    sys::send_batch(fd, &dgrams[off..])
                };
            match result {
                Ok(k) => {
                    let (pkts, bytes) = count(off..off + k);
                    let gso = dgrams[off..off + k].iter().filter(|d| d.segment > 0);
                    Counters::add(&self.counters.gso_sent, gso.count() as u64);
                    Counters::add(&self.counters.send_calls, 1);
                    Counters::add(&self.counters.sent, pkts as u64);
                    Counters::add(&self.counters.sent_bytes, bytes as u64);
                    off += k;
                    sent += pkts;
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
                        let (pkts, _) = count(off..dgrams.len());
                        Counters::add(&self.counters.send_dropped, pkts as u64);
                        return Ok((sent, None));
                    }
                    Some(libc::EBADF | libc::ENOTSOCK | libc::EFAULT) => return Err(e),
                    // A kernel without UDP GSO, or a device that cannot
                    // segment (a path MTU below the segment size), refuses
                    // a GSO datagram: plain datagrams from now on, starting
                    // with this one's packets. (An unreachable peer is not
                    // GSO's fault: below, as for any datagram.)
                    Some(
                        libc::EIO
                        | libc::EINVAL
                        | libc::EMSGSIZE
                        | libc::EOPNOTSUPP
                        | libc::ENOPROTOOPT,
                    ) if dgrams[off].segment > 0 => {
                        if self.gso.swap(false, Ordering::Relaxed) {
                            Counters::add(&self.counters.gso_refused, 1);
                            crate::log::log!(
                                Warn,
                                "UDP GSO refused ({e}): sending plain datagrams"
                            );
                        }
                        return Ok((sent, Some(off)));
                    }
                    // Refused, unreachable, too large, bad address...: this
                    // datagram only.
                    _ => {
                        let (pkts, _) = count(off..off + 1);
                        Counters::add(&self.counters.send_dropped, pkts as u64);
                        off += 1;
                    }
                },
            }
        }
        Ok((sent, None))
    }

    /// Send through the kernel: runs of equal-size packets to one peer as
    /// GSO datagrams where allowed; returns how many packets left.
    ///
    /// Over IPv4 the kernel numbers a GSO datagram's segments' IP IDs 0, 1,
    /// 2… (see `wire::icrc::IdDeltas`), and the ICRC covers the ID, so
    /// segment k > 0 to a peer off loopback goes out with its ICRC for ID
    /// k: its bytes less the ICRC, then the adjusted ICRC, as two parts.
    fn send_udp(&self, batch: &[Outgoing<'_>]) -> io::Result<usize> {
        let mut sent = 0;
        let mut at = 0;
        while at < batch.len() {
            let mut plan = Planner::new(self.local);
            let mut iovs = 0;
            let mut i = at;
            while i < batch.len() {
                let o = &batch[i];
                let len = o.data.len();
                let Some(p) = self.peer_addr(o.peer).filter(|_| len <= u16::MAX as usize) else {
                    Counters::add(&self.counters.send_dropped, 1);
                    // A datagram's packets are consecutive in `batch`.
                    plan.close();
                    i += 1;
                    continue;
                };
                let joins = plan.joins(self, p, len, None);
                let parts = if joins && plan.open_ids() { 2 } else { 1 };
                if iovs + parts > MAX_IOV || !plan.push(i, p, len, None, joins) {
                    break;
                }
                iovs += parts;
                i += 1;
            }
            let groups = plan.planned();
            let n = groups.len();
            if n == 0 {
                return Ok(sent);
            }
            // The ICRCs of the later IPv4 segments, for the IDs they get.
            let mut icrcs = [[0u8; ICRC_LEN]; MAX_IOV];
            let mut m = 0;
            for g in groups[..n].iter().filter(|g| g.ids) {
                let mut deltas: Option<IdDeltas> = None;
                for (k, o) in batch[g.first..g.first + g.pkts].iter().enumerate().skip(1) {
                    let len = o.data.len();
                    let d = match deltas {
                        Some(d) if d.packet_len() == len => d,
                        _ => *deltas.insert(IdDeltas::new(len)),
                    };
                    let t = &o.data[len - ICRC_LEN..];
                    let icrc = u32::from_le_bytes([t[0], t[1], t[2], t[3]]) ^ d.delta(k as u16);
                    icrcs[m] = icrc.to_le_bytes();
                    m += 1;
                }
            }
            let mut parts: [&[u8]; MAX_IOV] = [&[]; MAX_IOV];
            let (mut v, mut m) = (0, 0);
            let mut dgrams: [Datagram<'_>; CHUNK] = std::array::from_fn(|_| Datagram {
                addr: RawAddr::empty(),
                parts: &[],
                segment: 0,
            });
            let mut plan = [(0usize, 0usize); CHUNK];
            let mut spans = [(0usize, 0usize); CHUNK];
            for (k, g) in groups[..n].iter().enumerate() {
                let from = v;
                for (j, o) in batch[g.first..g.first + g.pkts].iter().enumerate() {
                    if g.ids && j > 0 {
                        parts[v] = &o.data[..o.data.len() - ICRC_LEN];
                        parts[v + 1] = &icrcs[m];
                        v += 2;
                        m += 1;
                    } else {
                        parts[v] = o.data;
                        v += 1;
                    }
                }
                spans[k] = (from, v);
                plan[k] = (g.pkts, g.bytes);
            }
            for (k, g) in groups[..n].iter().enumerate() {
                dgrams[k] = Datagram {
                    addr: RawAddr::new(&g.peer),
                    parts: &parts[spans[k].0..spans[k].1],
                    segment: if g.pkts > 1 { g.seg as u16 } else { 0 },
                };
            }
            let (k, refused) = self.send_planned(&dgrams[..n], &plan[..n])?;
            sent += k;
            at = match refused {
                // Again from the refused datagram's first packet, unsegmented.
                Some(r) => groups[r].first,
                None => i,
            };
        }
        Ok(sent)
    }

    /// [`UdpLink::send_udp`] of packets laid out in `bytes` (a transmit
    /// queue's arena: each packet right after the one before). A datagram
    /// is a run of consecutive packets, so it leaves as one iovec; over IPv4
    /// off loopback its later segments' ICRCs are first turned, in place,
    /// into the ones for the IP IDs the kernel gives them (and back, for a
    /// datagram the kernel refused, which goes again unsegmented).
    ///
    /// Before: 2 iovecs a segment (the bytes less the ICRC, the adjusted
    /// ICRC), 127 for a 64 KiB message at MTU 1024, and at most
    /// [`MAX_IOV`] a `sendmmsg` (two such messages).
    fn send_udp_packed(&self, bytes: &mut [u8], pkts: &[Packed]) -> io::Result<usize> {
        let (mut sent, mut at) = (0, 0);
        while at < pkts.len() {
            let mut plan = Planner::new(self.local);
            let mut i = at;
            while i < pkts.len() {
                let Packed { peer, start, len } = pkts[i];
                let Some(p) = self.peer_addr(peer).filter(|_| len <= u16::MAX as usize) else {
                    Counters::add(&self.counters.send_dropped, 1);
                    plan.close();
                    i += 1;
                    continue;
                };
                let joins = plan.joins(self, p, len, Some(start));
                if !plan.push(i, p, len, Some(start), joins) {
                    break;
                }
                i += 1;
            }
            let groups = plan.planned();
            let n = groups.len();
            if n == 0 {
                return Ok(sent);
            }
            // Segment k's ICRC for IP ID k (XOR again undoes it).
            let adjust = |bytes: &mut [u8], g: &Group| {
                let mut deltas: Option<IdDeltas> = None;
                for (k, p) in pkts[g.first..g.first + g.pkts].iter().enumerate().skip(1) {
                    let d = match deltas {
                        Some(d) if d.packet_len() == p.len => d,
                        _ => *deltas.insert(IdDeltas::new(p.len)),
                    };
                    let t = &mut bytes[p.start + p.len - ICRC_LEN..p.start + p.len];
                    let icrc = u32::from_le_bytes([t[0], t[1], t[2], t[3]]) ^ d.delta(k as u16);
                    t.copy_from_slice(&icrc.to_le_bytes());
                }
            };
            for g in groups[..n].iter().filter(|g| g.ids && g.pkts > 1) {
                adjust(bytes, g);
            }
            let (k, refused) = {
                let mut parts: [&[u8]; CHUNK] = [&[]; CHUNK];
                let mut plan = [(0usize, 0usize); CHUNK];
                for (k, g) in groups[..n].iter().enumerate() {
                    parts[k] = &bytes[g.end - g.bytes..g.end];
                    plan[k] = (g.pkts, g.bytes);
                }
                let mut dgrams: [Datagram<'_>; CHUNK] = std::array::from_fn(|_| Datagram {
                    addr: RawAddr::empty(),
                    parts: &[],
                    segment: 0,
                });
                for (k, g) in groups[..n].iter().enumerate() {
                    dgrams[k] = Datagram {
                        addr: RawAddr::new(&g.peer),
                        parts: &parts[k..k + 1],
                        segment: if g.pkts > 1 { g.seg as u16 } else { 0 },
                    };
                }
                self.send_planned(&dgrams[..n], &plan[..n])?
            };
            sent += k;
            at = match refused {
                // Again from the refused datagram's first packet, unsegmented:
                // with the ICRCs for ID 0 each then leaves with.
                Some(r) => {
                    for g in groups[r..n].iter().filter(|g| g.ids && g.pkts > 1) {
                        adjust(bytes, g);
                    }
                    groups[r].first
                }
                None => i,
            };
        }
        Ok(sent)
    }

    /// What the socket and then the same-host rings hold, appended to
    /// `batch` without blocking; Ok(false) when there was nothing.
    ///
    /// While the rings deliver, up to [`UDP_SKIPS`] receives in a row leave
    /// the socket alone: on the same-host path it is silent, and its empty
    /// `recvmmsg` was a system call a message. Every so often it goes first
    /// (as always when the rings are idle), so a busy ring cannot starve it.
    /// Datagrams of one peer come one way at a time (a new ring waits for
    /// its marker), so the order of the two reads changes no peer's order.
    ///
    /// `poll` (a zero-timeout `recv`: an application's empty CQ, or the
    /// receive thread after a wait): on a device whose peers are on the
    /// rings, an empty ring is no reason to read a socket that was empty at
    /// its last read, less than [`UDP_IDLE`] ago, and has not woken a wait
    /// since (`sleep_on`). A 64 B `ib_write_bw` polled its empty CQ, hence
    /// the socket, once a message (995 000 `recvmmsg` for 1 000 000
    /// WRITEs, each a system call that found nothing). A datagram waits at
    /// most [`UDP_IDLE`] while anyone polls; if nobody does, the receive
    /// thread's wait sees the socket readable (arrivals on, or at the end of
    /// its bounded wait).
    fn try_recv(&self, batch: &mut RecvBatch, poll: bool) -> io::Result<bool> {
        match &self.same_host {
            Some(sh) if self.udp_skips.load(Ordering::Relaxed) < UDP_SKIPS => {
                let rings_at = sh.receive(batch, &self.counters);
                let idle = poll
                    && self.udp_quiet.load(Ordering::Relaxed)
                    && rings_at.is_some_and(|now| {
                        now.saturating_sub(self.udp_read_at.load(Ordering::Relaxed))
                            < UDP_IDLE.as_nanos() as u64
                    });
                if !batch.is_empty() {
                    self.udp_skips.fetch_add(1, Ordering::Relaxed);
                } else if !idle {
                    self.udp_skips.store(0, Ordering::Relaxed);
                    self.try_recv_udp(batch)?;
                    if let Some(now) = rings_at {
                        self.udp_read_at.store(now, Ordering::Relaxed);
                    }
                }
            }
            Some(sh) => {
                self.udp_skips.store(0, Ordering::Relaxed);
                self.try_recv_udp(batch)?;
                if let Some(now) = sh.receive(batch, &self.counters) {
                    self.udp_read_at.store(now, Ordering::Relaxed);
                }
            }
            None => {
                self.try_recv_udp(batch)?;
            }
        }
        // A link that joined no multicast group pays one load here.
        self.groups.receive(batch, &self.counters);
        if let Some(f) = self.fallback {
            for s in &mut batch.pkts {
                if s.peer.port() == f && s.peer.ip().is_loopback() {
                    s.peer.set_port(ROCE_PORT);
                }
            }
        }
        Ok(!batch.is_empty())
    }

    /// Non-blocking `recvmmsg` rounds appending to `batch`; Ok(false) when
    /// the socket had nothing.
    fn try_recv_udp(&self, batch: &mut RecvBatch) -> io::Result<bool> {
        let mut meta = [RecvMeta::empty(); CHUNK];
        let slot = if self.gro { GRO_SLOT } else { MAX_PACKET };
        loop {
            let start = batch.used;
            let room = ((batch.buf.len() - start) / slot).min(CHUNK);
            if room == 0 || batch.pkts.len() >= batch.max {
                return Ok(!batch.is_empty());
            }
            let got = match sys::recv_batch(
                self.sock.as_fd(),
                &mut batch.buf[start..],
                slot,
                &mut meta[..room],
            ) {
                Ok(n) => n,
                Err(e) => match e.raw_os_error() {
                    Some(libc::EAGAIN) => {
                        self.udp_quiet.store(true, Ordering::Relaxed);
                        return Ok(!batch.is_empty());
                    }
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
            if got > 0 {
                self.udp_quiet.store(false, Ordering::Relaxed);
                self.udp_recent.store(true, Ordering::Relaxed);
                self.streaming.store(true, Ordering::Relaxed);
                Counters::add(&self.counters.recv_calls, 1);
            }
            let before = batch.pkts.len();
            let mut bytes = 0;
            for (i, m) in meta[..got].iter().enumerate() {
                // A coalesced datagram is the sender's packets back to back.
                let seg = if m.segment > 0 {
                    m.segment
                } else {
                    m.len.max(1)
                };
                let peer = match m.addr.socket_addr() {
                    Some(p) if !m.truncated && seg <= MAX_PACKET => p,
                    _ => {
                        Counters::add(&self.counters.recv_truncated, 1);
                        continue;
                    }
                };
                if m.len == 0 {
                    if let Some(sh) = &self.same_host {
                        sh.marker(peer);
                    }
                }
                let base = start + i * slot;
                let mut off = 0;
                while off < m.len {
                    let len = seg.min(m.len - off);
                    let at = base + off;
                    if len == same_host::CONTROL_LEN
                        && same_host::is_control(&batch.buf[at..at + len])
                    {
                        // A ring handshake, not a packet (shorter than any).
                        if let Some(sh) = &self.same_host {
                            sh.handshake(peer, &batch.buf[at..at + len], &self.counters);
                        }
                        off += len;
                        continue;
                    }
                    batch.pkts.push(super::Slot {
                        peer,
                        start: base + off,
                        len,
                        intact: false,
                        group: None,
                        remote: None,
                    });
                    off += len;
                }
                bytes += m.len;
            }
            // The next round starts after the last packet's bytes (not the
            // last datagram's: a handshake or a truncated one holds none, and
            // a round that took only such must leave the room it found).
            if let Some(last) = batch.pkts[before..].last() {
                batch.used = (last.start + last.len + 63) & !63;
            }
            Counters::add(&self.counters.received, (batch.pkts.len() - before) as u64);
            Counters::add(&self.counters.received_bytes, bytes as u64);
            // A short read means the queue is (momentarily) empty.
            if got < room {
                return Ok(!batch.is_empty());
            }
        }
    }
}

impl Link for UdpLink {
    fn local(&self) -> SocketAddr {
        self.local
    }

    fn peer_gone(&self, peer: SocketAddr) -> bool {
        self.same_host
            .as_ref()
            .is_some_and(|sh| sh.peer_gone(self.wire(peer)))
    }

    fn mtu(&self) -> Option<u32> {
        self.mtu
    }

    fn send(&self, batch: &[Outgoing<'_>]) -> io::Result<usize> {
        let Some(sh) = &self.same_host else {
            return self.send_udp(batch);
        };
        // Runs to one peer: a peer with a ring gets its run there, the rest
        // go to the kernel together.
        let (mut sent, mut udp_from, mut i) = (0, 0, 0);
        while i < batch.len() {
            let peer = batch[i].peer;
            let end = i + batch[i..].iter().take_while(|o| o.peer == peer).count();
            if let Some((ring, first)) = sh.route(self.wire(peer), &self.counters) {
                sent += self.send_udp(&batch[udp_from..i])?;
                if first {
                    // The marker: behind every earlier UDP packet to `peer`
                    // (see same_host, "Order"). Lost, the ring opens late.
                    if let Some(p) = self.peer_addr(peer) {
                        let _ = self.sock.send_to(&[], p);
                    }
                }
                sent += sh.send(&ring, batch[i..end].iter().map(|o| o.data), &self.counters);
                udp_from = end;
            }
            i = end;
        }
        Ok(sent + self.send_udp(&batch[udp_from..])?)
    }

    fn send_packed(&self, bytes: &mut [u8], pkts: &[Packed]) -> io::Result<usize> {
        match self.same_host {
            // Rings take packets one by one: as they are.
            Some(_) => super::send_packed_as_is(self, bytes, pkts),
            None => self.send_udp_packed(bytes, pkts),
        }
    }

    fn recv(&self, batch: &mut RecvBatch, timeout: Option<Duration>) -> io::Result<usize> {
        batch.clear();
        if timeout.is_some_and(|t| t.is_zero()) {
            // A poll (an application's empty CQ, spinning): no clock read.
            if !self.closed.load(Ordering::Acquire) {
                self.try_recv(batch, true)?;
            }
            return Ok(batch.len());
        }
        let deadline = super::deadline(timeout);
        loop {
            if self.closed.load(Ordering::Acquire) {
                return Ok(0);
            }
            // Fast path first: under load the socket is usually readable.
            if self.try_recv(batch, false)? {
                return Ok(batch.len());
            }
            let rest = match deadline {
                None => None, // no timeout, or one too long to represent

                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(r) if !r.is_zero() => Some(r),
                    _ => return Ok(0),
                },
            };
            // A kick ends the sleep but is not for `recv`: the loop goes on
            // (a close ends it at the top).
            self.sleep_on(self.sock.as_fd(), rest, true)?;
        }
    }

    fn wait(&self, timeout: Option<Duration>) -> io::Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Ok(());
        }
        // Dekker with `wake_on_arrival(true)`: either it sees `deaf` and
        // kicks, or this sees `on` and watches the rings.
        self.deaf.store(true, Ordering::SeqCst);
        let on = self.arrivals_on.load(Ordering::SeqCst);
        if on {
            self.deaf.store(false, Ordering::Relaxed);
        }
        let ready = self.sleep_on(self.arrivals.as_fd(), timeout, on);
        self.deaf.store(false, Ordering::Relaxed);
        let ready = ready?;
        if ready && !on {
            // Arrivals are off but the socket was left watched (see
            // `wake_on_arrival`): now that it has traffic, stop watching.
            self.set_watched(false);
        }
        Ok(())
    }

    fn kick(&self) {
        self.rung.store(true, Ordering::Relaxed);
        self.wake.signal();
    }

    /// Off takes the socket out of the waiter's interest at once only if
    /// UDP datagrams came since the last off; else it stays watched until
    /// one wakes the waiter, which then takes it out (`wait`). A ping-pong
    /// on the rings toggles this twice a message, and the socket is silent
    /// there: two `epoll_ctl` calls a message saved, one wake-up at most
    /// per off when it is not.
    fn wake_on_arrival(&self, on: bool) {
        self.arrivals_on.store(on, Ordering::SeqCst);
        // A waiter does not watch the rings while this is off: it must wait
        // again watching them, or a ring datagram waits for its timeout
        // (the application may now spin on memory, as `ib_write_lat` does).
        if on
            && self.same_host.is_some()
            && (self.deaf.load(Ordering::SeqCst)
                || self.same_host.as_ref().is_some_and(|sh| sh.pending()))
        {
            self.kick();
        }
        if on || self.udp_recent.swap(false, Ordering::Relaxed) {
            self.set_watched(on);
        }
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        // Nobody reads any more: every peer's ring to us, and ours to
        // them, ends now (their next send goes by UDP, into nothing).
        if let Some(sh) = &self.same_host {
            sh.close();
        }
        self.rung.store(true, Ordering::Relaxed);
        self.wake.signal();
    }

    fn stats(&self) -> LinkStats {
        self.counters.snapshot()
    }

    /// A waiter wakes for the groups' datagrams whatever `wake_on_arrival`
    /// says (multicast is rare); a blocked `recv` does not — the device
    /// receives with a zero timeout after its waits.
    fn join(&self, group: IpAddr) -> io::Result<()> {
        self.groups
            .join(group, self.local.ip(), self.arrivals.as_fd())
    }

    fn leave(&self, group: IpAddr) {
        self.groups.leave(group)
    }

    fn by_ref(&self, peer: SocketAddr) -> bool {
        self.same_host
            .as_ref()
            .is_some_and(|sh| sh.by_ref(self.wire(peer)))
    }

    fn send_by_ref(&self, peer: SocketAddr, stubs: &[&[u8]]) -> usize {
        match &self.same_host {
            Some(sh) => sh.send_by_ref(self.wire(peer), stubs, &self.counters),
            None => {
                Counters::add(&self.counters.send_dropped, stubs.len() as u64);
                0
            }
        }
    }

    fn refuse_by_ref(&self, peer: SocketAddr) {
        if let Some(sh) = &self.same_host {
            sh.refuse_by_ref(self.wire(peer), &self.counters);
        }
    }

    fn refuse_all_by_ref(&self) {
        if let Some(sh) = &self.same_host {
            sh.refuse_all_by_ref();
        }
    }
}

impl AsRawFd for UdpLink {
    /// The socket, for callers that wait on it with other fds (readable =
    /// `recv` with a zero timeout will find something).
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}
