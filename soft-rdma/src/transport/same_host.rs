//! The same-host fast path: datagrams to another device of this host go
//! through a shared-memory [`ring`](super::ring) instead of the kernel's UDP
//! path, where `perf` put a third of the sending thread (the send system call
//! with the receiver's softirq: loopback delivers in the sender's context).
//! The datagrams are the same RoCEv2 packets (ICRC included), so captures,
//! fault injection and the engines above see no difference; a peer on
//! another host, or any peer that does not take up the offer, gets UDP.
//!
//! **Finding each other.** A device on a loopback address binds the abstract
//! unix datagram socket `softrdma-roce/<ip>:<port>`. Abstract names belong to
//! the network namespace, like the loopback addresses themselves, so a name
//! resolves exactly when the peer is a device in our namespace. The first
//! send to a loopback peer creates a ring and offers it (the memfd by
//! `SCM_RIGHTS`) from our socket to the peer's name; until the peer has
//! mapped it, packets still go by UDP. The consumer learns who offered from
//! the kernel (the sender's bound name), not from the message, and labels
//! the ring's datagrams with that address. A refused offer (no such name:
//! not a device, or `SOFTRDMA_SHM=off` there) is retried after [`RETRY`].
//!
//! **Order.** Packets sent by UDP before the switch may still be on their
//! way through the kernel when the first ones land in the ring (loopback
//! delivery can be deferred to a softirq). So the producer's first use of a
//! ring is preceded by an empty UDP datagram, the marker, and the consumer
//! reads a new ring only once the marker — behind every earlier UDP packet
//! from that peer — has arrived (or [`GATE_MAX`] passed, should it be lost).
//! UD has no sequence numbers to restore order, and RC would pay a NAK and a
//! go-back-N for it.
//!
//! **Waking.** A consumer that sleeps arms its rings; a producer that finds
//! its consumer armed sends a one-byte kick to the consumer's socket, which
//! the consumer polls alongside the UDP socket. While an application polls
//! inline nobody sleeps, so nothing is kicked.
//!
//! **Trust.** Peers of one namespace. A consumer maps only sealed memfds,
//! checks every counter and length it reads, and drops a ring that breaks
//! the format ([`LinkStats::same_host_refused`](super::LinkStats)); what it
//! copies out is checked like any datagram.
#![forbid(unsafe_code)]
use crate::lock;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::ring::{Consumer, Producer, PushError};
use super::{sys, Counters, RecvBatch, MAX_PACKET};
use crate::log::log;

/// `SOFTRDMA_SHM=off` (or `0`) keeps a device on UDP for every peer.
pub const ENV: &str = "SOFTRDMA_SHM";

/// The offer's bytes (the ring's memfd rides along).
const OFFER: &[u8] = b"softrdma ring offer v1";
/// After a refused offer or a dead ring, how long a peer stays on UDP.
const RETRY: Duration = Duration::from_secs(1);
/// How often a receive looks for offers when nothing woke it for them.
const CONTROL_EVERY: Duration = Duration::from_millis(1);
/// How long a new ring waits for its marker before it is read anyway.
const GATE_MAX: Duration = Duration::from_millis(10);
/// A full ring: waits of [`FULL_WAIT`] before the rest of a send is dropped
/// (4 ms in all, as a full UDP socket buffer).
const FULL_WAITS: u32 = 40;
const FULL_WAIT: Duration = Duration::from_micros(100);
/// Before the first of those waits, a full ring is watched this long: a
/// consumer that is awake frees room within microseconds, and a sleep of
/// [`FULL_WAIT`] would leave it idle once it has caught up.
const FULL_SPIN: Duration = Duration::from_micros(50);

/// Whether the environment allows the fast path.
pub(super) fn enabled() -> bool {
    !matches!(
        std::env::var(ENV).as_deref().map(str::trim),
        Ok("off" | "0" | "no" | "false")
    )
}

/// The abstract socket name of the device at `addr`.
fn name_of(addr: SocketAddr) -> Vec<u8> {
    format!("softrdma-roce/{addr}").into_bytes()
}

/// The device address a socket name stands for.
fn addr_of(name: &[u8]) -> Option<SocketAddr> {
    std::str::from_utf8(name.strip_prefix(b"softrdma-roce/")?)
        .ok()?
        .parse()
        .ok()
}

/// A device's end of the fast path: its socket, its rings out, its rings in.
pub(super) struct SameHost {
    sock: OwnedFd,
    out: Mutex<HashMap<SocketAddr, Route>>,
    inbound: Mutex<Vec<Inbound>>,
    epoch: Instant,
    /// When offers were last looked for (ns after `epoch`).
    last_control: AtomicU64,
}

/// How packets to one peer travel.
enum Route {
    /// Offered; UDP until the peer maps it.
    Offered(Arc<Outbound>),
    Ring(Arc<Outbound>),
    /// No fast path to this peer until then.
    Udp(Instant),
}

/// A ring we write, to one peer.
pub(super) struct Outbound {
    /// The peer's socket name (for kicks).
    to: Vec<u8>,
    producer: Mutex<Producer>,
    /// The consumer is gone or broke the ring: back to UDP.
    dead: AtomicBool,
}

/// A ring we read, from one peer.
struct Inbound {
    peer: SocketAddr,
    ring: Consumer,
    /// Not read before (ns after `epoch`): the marker has not come yet. 0:
    /// open.
    gate: u64,
}

impl SameHost {
    /// Bind the socket of the device at `local` (a loopback address).
    pub(super) fn bind(local: SocketAddr) -> io::Result<SameHost> {
        Ok(SameHost {
            sock: sys::unix_dgram_bound(&name_of(local))?,
            out: Mutex::new(HashMap::new()),
            inbound: Mutex::new(Vec::new()),
            epoch: Instant::now(),
            last_control: AtomicU64::new(0),
        })
    }

    /// The socket offers and kicks arrive on (readable: call [`SameHost::control`]).
    pub(super) fn fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }

    /// The ring to send to `peer` on, if there is one (offering one the
    /// first time a loopback peer is named), and whether this is its first
    /// use: the caller must then send the marker (an empty UDP datagram)
    /// before anything goes by ring.
    pub(super) fn route(&self, peer: SocketAddr) -> Option<(Arc<Outbound>, bool)> {
        if !peer.ip().is_loopback() {
            return None;
        }
        let mut out = lock(&self.out);
        let now = Instant::now();
        let route = out.entry(peer).or_insert(Route::Udp(now));
        match route {
            Route::Ring(o) | Route::Offered(o) => {
                let (attached, gone) = {
                    let p = lock(&o.producer);
                    (p.attached(), p.consumer_gone())
                };
                if gone || o.dead.load(Ordering::Relaxed) {
                    *route = Route::Udp(now + RETRY);
                    return None;
                }
                if !attached {
                    return None;
                }
                let o = o.clone();
                let first = matches!(route, Route::Offered(_));
                *route = Route::Ring(o.clone());
                return Some((o, first));
            }
            Route::Udp(until) if *until > now => return None,
            Route::Udp(_) => {}
        }
        *route = match self.offer(peer) {
            Ok(o) => Route::Offered(Arc::new(o)),
            Err(e) => {
                log!(Debug, "no same-host ring to {peer}: {e}");
                Route::Udp(now + RETRY)
            }
        };
        None
    }

    fn offer(&self, peer: SocketAddr) -> io::Result<Outbound> {
        let (producer, fd) = Producer::create()?;
        let to = name_of(peer);
        sys::send_with_fd(self.sock.as_fd(), &to, OFFER, fd.as_fd())?;
        Ok(Outbound {
            to,
            producer: Mutex::new(producer),
            dead: AtomicBool::new(false),
        })
    }

    fn kick(&self, o: &Outbound) {
        match sys::send_to_abstract(self.sock.as_fd(), &o.to, b"k") {
            // The consumer's socket is gone: so is its device.
            Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
                o.dead.store(true, Ordering::Relaxed)
            }
            // EAGAIN: its queue is full of kicks already.
            _ => {}
        }
    }

    /// Write `data` to the ring `o`; returns how many datagrams went (the
    /// rest are dropped: the ring stayed full for 4 ms, or broke).
    pub(super) fn send<'a>(
        &self,
        o: &Outbound,
        data: impl Iterator<Item = &'a [u8]>,
        c: &Counters,
    ) -> usize {
        let mut p = lock(&o.producer);
        let (mut sent, mut bytes, mut dropped) = (0usize, 0usize, 0usize);
        let mut waits = 0;
        let mut spin_start = None;
        for d in data {
            // Longer than any receiver takes: dropped here, not sent to
            // break the ring (the consumer would refuse the whole ring).
            if o.dead.load(Ordering::Relaxed) || waits > FULL_WAITS || d.len() > MAX_PACKET {
                dropped += 1;
                continue;
            }
            loop {
                match p.push(d) {
                    Ok(()) => {
                        sent += 1;
                        bytes += d.len();
                        spin_start = None;
                        break;
                    }
                    Err(PushError::Full) if waits < FULL_WAITS && !p.consumer_gone() => {
                        // Let the consumer see what is there; probing with a
                        // kick the first time tells a dead consumer.
                        if p.publish() || (spin_start.is_none() && waits == 0) {
                            self.kick(o);
                        }
                        let since = *spin_start.get_or_insert_with(Instant::now);
                        if since.elapsed() < FULL_SPIN {
                            for _ in 0..64 {
                                std::hint::spin_loop();
                            }
                            continue;
                        }
                        waits += 1;
                        std::thread::sleep(FULL_WAIT);
                    }
                    Err(_) => {
                        if p.consumer_gone() {
                            o.dead.store(true, Ordering::Relaxed);
                        }
                        waits = FULL_WAITS + 1;
                        dropped += 1;
                        break;
                    }
                }
            }
        }
        if p.publish() {
            self.kick(o);
        }
        Counters::add(&c.sent, sent as u64);
        Counters::add(&c.same_host_sent, sent as u64);
        Counters::add(&c.sent_bytes, bytes as u64);
        Counters::add(&c.send_dropped, dropped as u64);
        sent
    }

    /// Take up offers waiting on the socket (and swallow kicks).
    pub(super) fn control(&self, c: &Counters) {
        self.last_control.store(self.now(), Ordering::Relaxed);
        let mut buf = [0u8; 64];
        loop {
            let m = match sys::recv_with_fd(self.sock.as_fd(), &mut buf) {
                Ok(m) => m,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => {
                    if e.kind() != io::ErrorKind::WouldBlock {
                        log!(Warn, "same-host socket: {e}");
                    }
                    return;
                }
            };
            let Some(fd) = m.fd else { continue };
            match (&buf[..m.len] == OFFER, addr_of(&m.from)) {
                (true, Some(peer)) if peer.ip().is_loopback() => self.take(peer, fd, c),
                _ => Counters::add(&c.same_host_refused, 1),
            }
        }
    }

    /// Map a ring `peer` offered; it replaces an older one from the same
    /// address (the peer's device was closed and opened again).
    fn take(&self, peer: SocketAddr, fd: OwnedFd, c: &Counters) {
        match Consumer::attach(fd) {
            Ok(ring) => {
                let mut rings = lock(&self.inbound);
                rings.retain(|r| r.peer != peer);
                let gate = self.now() + GATE_MAX.as_nanos() as u64;
                rings.push(Inbound { peer, ring, gate });
                log!(Debug, "same-host ring from {peer}");
            }
            Err(e) => {
                Counters::add(&c.same_host_refused, 1);
                log!(Warn, "refused a same-host ring from {peer}: {e}");
            }
        }
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// `peer`'s marker arrived: everything it sent by UDP before its ring
    /// has been received, so the ring may be read.
    pub(super) fn marker(&self, peer: SocketAddr) {
        if let Some(r) = lock(&self.inbound).iter_mut().find(|r| r.peer == peer) {
            r.gate = 0;
        }
    }

    /// Append what the rings hold to `batch` (and take up offers, at most
    /// every [`CONTROL_EVERY`]).
    pub(super) fn receive(&self, batch: &mut RecvBatch, c: &Counters) {
        let now = self.now();
        let last = self.last_control.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= CONTROL_EVERY.as_nanos() as u64 {
            self.control(c);
        }
        let mut rings = lock(&self.inbound);
        rings.retain_mut(|r| {
            if r.gate > now {
                return true;
            }
            r.gate = 0;
            r.pop(batch, c)
        });
    }
}

impl Inbound {
    /// Move what the ring holds to `batch`; false if the ring is to go
    /// (finished, or broken: counted).
    fn pop(&mut self, batch: &mut RecvBatch, c: &Counters) -> bool {
        let r = self;
        match r.ring.pop_into(batch, r.peer) {
            Ok((n, bytes)) => {
                Counters::add(&c.received, n as u64);
                Counters::add(&c.same_host_received, n as u64);
                Counters::add(&c.received_bytes, bytes as u64);
                !r.ring.finished()
            }
            Err(_) => {
                Counters::add(&c.same_host_refused, 1);
                log!(
                    Warn,
                    "dropped the same-host ring from {}: it broke the format",
                    r.peer
                );
                false
            }
        }
    }
}

impl SameHost {
    /// About to sleep: ask every producer for a kick. False (none asked) if
    /// a ring already holds something to read. A ring waiting for its marker
    /// is not asked: the marker wakes us.
    pub(super) fn arm(&self) -> bool {
        let rings = lock(&self.inbound);
        for (i, r) in rings.iter().enumerate() {
            if r.gate == 0 && !r.ring.arm() {
                rings[..i].iter().for_each(|r| r.ring.disarm());
                return false;
            }
        }
        true
    }

    pub(super) fn disarm(&self) {
        lock(&self.inbound).iter().for_each(|r| r.ring.disarm());
    }

    /// Whether a ring holds a datagram to read.
    pub(super) fn pending(&self) -> bool {
        lock(&self.inbound)
            .iter()
            .any(|r| r.gate == 0 && r.ring.pending())
    }
}

impl std::fmt::Debug for SameHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SameHost")
            .field("rings_in", &lock(&self.inbound).len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_foreign_names_are_no_address() {
        for a in ["127.1.2.3:4791", "[::1]:4791"] {
            let a: SocketAddr = a.parse().unwrap();
            assert_eq!(addr_of(&name_of(a)), Some(a));
        }
        assert_eq!(addr_of(b"softrdma-roce/eth0"), None);
        assert_eq!(addr_of(b"other/127.0.0.1:4791"), None);
    }

    /// Send one message to the device at `to` from a socket bound to `name`.
    fn offer_from(name: &[u8], to: SocketAddr, payload: &[u8], fd: Option<OwnedFd>) {
        let from = sys::unix_dgram_bound(name).unwrap();
        let dest = name_of(to);
        match fd {
            Some(fd) => sys::send_with_fd(from.as_fd(), &dest, payload, fd.as_fd()).unwrap(),
            None => sys::send_to_abstract(from.as_fd(), &dest, payload).unwrap(),
        }
    }

    #[test]
    fn only_a_sealed_ring_offered_by_a_loopback_device_is_taken() {
        let at: SocketAddr = "127.79.1.2:1".parse().unwrap();
        let b = SameHost::bind(at).unwrap();
        let c = Counters::default();
        let refused = |c: &Counters| c.same_host_refused.load(Ordering::Relaxed);
        let ring = || Some(Producer::create().unwrap().1);
        let file = Some(OwnedFd::from(
            std::fs::File::open("/proc/self/status").unwrap(),
        ));
        // Not a ring; a ring from a socket that is no device, from one that
        // claims a non-loopback device, and with the wrong words.
        offer_from(b"softrdma-roce/127.79.1.9:1", at, OFFER, file);
        offer_from(b"someone-else", at, OFFER, ring());
        offer_from(b"softrdma-roce/10.0.0.1:4791", at, OFFER, ring());
        offer_from(b"softrdma-roce/127.79.1.8:1", at, b"take this", ring());
        b.control(&c);
        assert_eq!(refused(&c), 4);
        assert!(lock(&b.inbound).is_empty());
        // The words without a ring: taken as a kick, nothing refused.
        offer_from(b"softrdma-roce/127.79.1.7:1", at, OFFER, None);
        b.control(&c);
        assert_eq!(refused(&c), 4);
        // A device's real offer.
        offer_from(b"softrdma-roce/127.79.1.6:1", at, OFFER, ring());
        b.control(&c);
        assert_eq!(refused(&c), 4);
        let rings = lock(&b.inbound);
        assert_eq!(rings.len(), 1);
        assert_eq!(rings[0].peer, "127.79.1.6:1".parse::<SocketAddr>().unwrap());
    }

    #[test]
    fn a_new_ring_is_read_only_after_its_marker() {
        let at: SocketAddr = "127.79.2.2:1".parse().unwrap();
        let peer: SocketAddr = "127.79.2.6:1".parse().unwrap();
        let b = SameHost::bind(at).unwrap();
        let c = Counters::default();
        let (mut p, fd) = Producer::create().unwrap();
        offer_from(&name_of(peer), at, OFFER, Some(fd));
        b.control(&c);
        p.push(b"after the marker").unwrap();
        p.publish();
        let mut batch = RecvBatch::new(4);
        b.receive(&mut batch, &c);
        assert!(batch.is_empty(), "read before the marker");
        assert!(!b.pending() && b.arm(), "a gated ring keeps nobody awake");
        b.disarm();
        b.marker(peer);
        assert!(b.pending());
        b.receive(&mut batch, &c);
        assert_eq!(
            batch.iter().map(|(_, d)| d.to_vec()).collect::<Vec<_>>(),
            [b"after the marker".to_vec()]
        );
    }
}
