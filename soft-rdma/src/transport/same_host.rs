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
//! send to a loopback peer starts the handshake below ("Trust"), after which
//! a ring is offered (the memfd by `SCM_RIGHTS`) from our socket to the
//! peer's name; until the peer has mapped it, packets still go by UDP. The
//! consumer learns who offered from the kernel (the sender's bound name),
//! not from the message, and labels the ring's datagrams with that address.
//! A peer that does not answer (not a device, or `SOFTRDMA_SHM=off` there)
//! is asked again after [`HELLO_WAIT`] and [`RETRY`]; one that does not map
//! the ring it asked for, after [`REFUSED_RETRY`].
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
//! **Trust.** Abstract names have no permissions: any local process, of
//! any uid, may bind a device's name before the device does, send from any
//! name it likes, and forge the source of a UDP datagram (`IP_PKTINFO` picks
//! any local address). What the kernel does guarantee is that only the
//! socket bound to a UDP endpoint *receives* what is sent to it. So a ring
//! is tied to the two devices' endpoints by a handshake over UDP before any
//! memory changes hands:
//!
//! 1. the producer A sends `HELLO(x)` by UDP to the peer B (a fresh random
//!    `x`), and keeps using UDP meanwhile;
//! 2. B's device answers `ACK(x, y)` by UDP to A (a fresh random `y`): the
//!    only process that can know `x` is the one that receives at B, and only
//!    the one that receives at A learns `y`;
//! 3. A creates the ring only now, and offers it by `SCM_RIGHTS` to B's
//!    socket name with `y` in the offer;
//! 4. B maps an offer only if it comes from A's canonical name, from a
//!    process of B's own uid (`SCM_CREDENTIALS`), carries the `y` B sent to
//!    A, within [`PROOF_TTL`], and B has fewer than [`MAX_RINGS`] rings.
//!
//! A squatter of B's name gets no offer (B's device, with no name, sends no
//! `ACK`; nobody else can know `x`); a squatter of A's name, or anyone
//! forging `HELLO`s, cannot know `y` (it went to A's endpoint). Refusals are
//! counted ([`LinkStats`](super::LinkStats) `same_host_*`) and logged once a
//! kind. The handshake datagrams are 15 bytes: shorter than any IB packet
//! (BTH and ICRC alone are 16), so they cannot be mistaken for one; the link
//! takes them out of what it receives. A mapped ring is then checked like
//! any untrusted memory: the consumer maps only sealed memfds, checks every
//! counter and length it reads, and drops a ring that breaks the format;
//! what it copies out is checked like any datagram.
//!
//! **One copy.** An RC WRITE packet may go on a ring by reference: its
//! headers and (address, length) of its payload in the sender's memory, a
//! record of kind `BY_REF` — no payload copied into the ring, no ICRC
//! computed. Only the `UdpLink` offers it ([`SameHost::by_ref`]: a ring in
//! use whose consumer has not refused them), so a capture or a fault layer
//! above the link always sees whole packets. The consumer labels the
//! packet with the producer's pid from `SCM_CREDENTIALS` (never a number
//! from the ring), and the device reads the payload with
//! `process_vm_readv` — the kernel checks that range of the sender's and
//! the ptrace rules — or, for another device of this process, with odp's
//! guarded copy. So a hostile reference can make us read only the
//! sender's own memory, into a range the R_Key allowed. A read that fails
//! makes the consumer set `NO_REFS` in the ring ([`SameHost::refuse_by_ref`]):
//! its producer sends whole packets from then on. Details and figures:
//! docs/TRANSPORT.md, "One copy".
#![forbid(unsafe_code)]
use crate::lock;
use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::ring::{self, Consumer, Producer, PushError};
use super::{sys, Counters, RecvBatch, MAX_PACKET};
use crate::log::log;

/// `SOFTRDMA_SHM=off` (or `0`) keeps a device on UDP for every peer.
pub const ENV: &str = "SOFTRDMA_SHM";

/// Most rings a device reads (and most it writes): each is 4 MiB of shared
/// memory, and every receive looks at each one. Beyond it, peers use UDP.
pub const MAX_RINGS: usize = 64;
/// Most handshakes a device answers at once (each waits [`PROOF_TTL`]).
const MAX_HELLOS: usize = 64;
/// Most peers a device keeps a route for (a peer on UDP costs an entry; a
/// flood of forged sources must not grow it without end).
const MAX_ROUTES: usize = 4096;
/// Most unix messages one [`SameHost::control`] takes (a flood of them must
/// not hold the receive path).
const CONTROL_BATCH: usize = 256;

/// The offer's words, then the `y` of the handshake (the memfd rides along).
const OFFER: &[u8] = b"softrdma ring offer v2";
/// A handshake nonce: 48 random bits. A guess is a datagram, and a wrong
/// one spends the handshake.
type Nonce = [u8; 6];
/// Handshake datagrams: `"SR"`, the kind, `x`, `y` (zero in a hello).
pub(super) const CONTROL_LEN: usize = 15;
const HELLO: u8 = b'H';
const ACK: u8 = b'A';

/// After a refused offer or a dead ring, how long a peer stays on UDP.
const RETRY: Duration = Duration::from_secs(1);
/// How long a producer waits for its hello's answer, and then uses it.
const HELLO_WAIT: Duration = Duration::from_secs(1);
/// How long a consumer holds a `y` it sent for the offer that must carry it.
const PROOF_TTL: Duration = Duration::from_secs(2);
/// An offer not mapped by then was refused (another uid, the consumer's
/// limit): the peer stays on UDP for [`REFUSED_RETRY`].
const OFFER_WAIT: Duration = Duration::from_secs(2);
const REFUSED_RETRY: Duration = Duration::from_secs(30);
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

/// The device address a socket name stands for, if it is that address's
/// one canonical name (`127.1.2.3:04791` is not a name of
/// `127.1.2.3:4791`: a second name must not stand for a peer).
fn addr_of(name: &[u8]) -> Option<SocketAddr> {
    let a: SocketAddr = std::str::from_utf8(name.strip_prefix(b"softrdma-roce/")?)
        .ok()?
        .parse()
        .ok()?;
    (name_of(a) == name).then_some(canon(a))
}

/// An address as a key: IPv4-mapped IPv6 as IPv4, no flow label or scope.
pub(super) fn canon(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

fn nonce() -> Nonce {
    let mut n = [0u8; 6];
    if sys::random(&mut n).is_err() {
        // No kernel randomness (cannot happen after boot): an all-zero
        // nonce is never sent as a proof nor taken as one.
        n = [0; 6];
    }
    n
}

/// Whether a received datagram is a handshake message (not a packet).
pub(super) fn is_control(d: &[u8]) -> bool {
    d.len() == CONTROL_LEN && d.starts_with(b"SR")
}

fn control_msg(kind: u8, x: Nonce, y: Nonce) -> [u8; CONTROL_LEN] {
    let mut m = [0u8; CONTROL_LEN];
    m[..2].copy_from_slice(b"SR");
    m[2] = kind;
    m[3..9].copy_from_slice(&x);
    m[9..].copy_from_slice(&y);
    m
}

/// Reasons to log once per device.
const WARN_UNPROVEN: u32 = 1;
const WARN_OTHER_UID: u32 = 2;
const WARN_LIMIT: u32 = 4;
const WARN_BROKEN: u32 = 8;

/// A device's end of the fast path: its socket, its rings out, its rings in.
pub(super) struct SameHost {
    sock: OwnedFd,
    /// The link's UDP socket (a duplicate): the handshake goes by UDP.
    udp: UdpSocket,
    local: SocketAddr,
    uid: u32,
    out: Mutex<HashMap<SocketAddr, Route>>,
    inbound: Mutex<Vec<Inbound>>,
    /// The `y`s this device sent, each for the one offer that may carry it.
    proofs: Mutex<Vec<Proof>>,
    epoch: Instant,
    /// When offers were last looked for (ns after `epoch`).
    last_control: AtomicU64,
    /// `WARN_*` bits already logged.
    warned: AtomicU32,
    /// The link was closed: no new routes or rings.
    closed: AtomicBool,
    /// Every ring we read asks its producer for whole packets.
    no_refs: AtomicBool,
}

/// How packets to one peer travel.
enum Route {
    /// Asked the peer's endpoint to prove itself; UDP meanwhile.
    Hello {
        x: Nonce,
        at: Instant,
        fresh: Option<Fresh>,
    },
    /// It did: offer it a ring carrying `y` (at the next send).
    Proven {
        y: Nonce,
        at: Instant,
        fresh: Option<Fresh>,
    },
    /// Offered; UDP until the peer maps it.
    Offered {
        o: Arc<Outbound>,
        at: Instant,
    },
    Ring(Arc<Outbound>),
    /// No fast path to this peer until then.
    Udp(Instant),
}

/// A ring made with the hello, offered to nobody yet: its making (4 MiB
/// mapped populated, a millisecond or two) falls on the first send to the
/// peer, as it did before the handshake, not on a later one.
struct Fresh(Producer, OwnedFd);

impl Route {
    /// Whether it holds a ring of ours (counted against [`MAX_RINGS`]).
    fn holds_ring(&self) -> bool {
        matches!(
            self,
            Route::Offered { .. }
                | Route::Ring(_)
                | Route::Hello { fresh: Some(_), .. }
                | Route::Proven { fresh: Some(_), .. }
        )
    }
}

/// A `y` sent to `peer`'s endpoint.
struct Proof {
    peer: SocketAddr,
    y: Nonce,
    at: Instant,
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
    /// The offering process, as the kernel named it (None: this one):
    /// payloads by reference are read from its memory, never from a pid of
    /// its choice.
    pid: Option<i32>,
    ring: Consumer,
    /// Not read before (ns after `epoch`): the marker has not come yet. 0:
    /// open.
    gate: u64,
}

impl SameHost {
    /// Bind the socket of the device at `local` (a loopback address), whose
    /// UDP socket is `udp`.
    pub(super) fn bind(local: SocketAddr, udp: &UdpSocket) -> io::Result<SameHost> {
        Ok(SameHost {
            sock: sys::unix_dgram_bound(&name_of(local))?,
            udp: udp.try_clone()?,
            local: canon(local),
            uid: sys::uid(),
            out: Mutex::new(HashMap::new()),
            inbound: Mutex::new(Vec::new()),
            proofs: Mutex::new(Vec::new()),
            epoch: Instant::now(),
            last_control: AtomicU64::new(0),
            warned: AtomicU32::new(0),
            closed: AtomicBool::new(false),
            no_refs: AtomicBool::new(false),
        })
    }

    /// The device is closing: let go of every ring, which tells each peer
    /// (a producer sees its consumer gone, a consumer its producer), while
    /// our endpoint and name are still held — a device that takes our
    /// address later must not inherit a peer's ring to us.
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        lock(&self.inbound).clear();
        lock(&self.out).clear();
        lock(&self.proofs).clear();
    }

    /// The socket offers and kicks arrive on (readable: call [`SameHost::control`]).
    pub(super) fn fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }

    /// How many rings this device reads now.
    pub(super) fn rings_in(&self) -> usize {
        lock(&self.inbound).len()
    }

    fn warn_once(&self, bit: u32, what: std::fmt::Arguments<'_>) {
        if self.warned.fetch_or(bit, Ordering::Relaxed) & bit == 0 {
            log!(
                Warn,
                "{what} (logged once; counted in the link's same_host_* counters)"
            );
        }
    }

    /// Count a refusal of `why` (one of the reason counters, if any).
    fn refuse(&self, c: &Counters, why: Option<&AtomicU64>) {
        Counters::add(&c.same_host_refused, 1);
        if let Some(w) = why {
            Counters::add(w, 1);
        }
    }

    /// Whether `peer` is a device this one could share a ring with.
    fn candidate(&self, peer: SocketAddr) -> bool {
        peer.ip().is_loopback() && peer.is_ipv4() == self.local.is_ipv4()
    }

    /// The ring to send to `peer` on, if there is one (starting the
    /// handshake the first time a loopback peer is named), and whether this
    /// is its first use: the caller must then send the marker (an empty UDP
    /// datagram) before anything goes by ring.
    pub(super) fn route(&self, peer: SocketAddr, c: &Counters) -> Option<(Arc<Outbound>, bool)> {
        if !peer.ip().is_loopback() {
            return None;
        }
        let peer = canon(peer);
        if !self.candidate(peer) || self.closed.load(Ordering::Acquire) {
            return None;
        }
        let mut out = lock(&self.out);
        let now = Instant::now();
        if out.len() >= MAX_ROUTES && !out.contains_key(&peer) {
            out.retain(|_, r| matches!(r, Route::Offered { .. } | Route::Ring(_)));
            if out.len() >= MAX_ROUTES {
                return None;
            }
        }
        let route = out.entry(peer).or_insert(Route::Udp(now));
        match route {
            Route::Ring(o) | Route::Offered { o, .. } => {
                let o = o.clone();
                let (attached, gone) = {
                    let p = lock(&o.producer);
                    (p.attached(), p.consumer_gone())
                };
                if gone || o.dead.load(Ordering::Relaxed) {
                    *route = Route::Udp(now + RETRY);
                    return None;
                }
                if let Route::Offered { at, .. } = route {
                    if !attached {
                        if now.duration_since(*at) > OFFER_WAIT {
                            log!(Debug, "{peer} did not take our ring: UDP for a while");
                            *route = Route::Udp(now + REFUSED_RETRY);
                        }
                        return None;
                    }
                }
                let first = matches!(route, Route::Offered { .. });
                *route = Route::Ring(o.clone());
                return Some((o, first));
            }
            Route::Hello { at, .. } => {
                if now.duration_since(*at) > HELLO_WAIT {
                    *route = Route::Udp(now + RETRY);
                }
                return None;
            }
            Route::Proven { y, at, fresh } => {
                let (y, at, fresh) = (*y, *at, fresh.take());
                let rings_out = out.values().filter(|r| r.holds_ring()).count();
                let next = if now.duration_since(at) > HELLO_WAIT {
                    Route::Udp(now + RETRY)
                } else if fresh.is_none() && rings_out >= MAX_RINGS {
                    self.refuse(c, Some(&c.same_host_over_limit));
                    self.warn_once(
                        WARN_LIMIT,
                        format_args!("same-host rings: {MAX_RINGS} already; {peer} stays on UDP"),
                    );
                    Route::Udp(now + REFUSED_RETRY)
                } else {
                    match self.offer(peer, y, fresh) {
                        Ok(o) => Route::Offered {
                            o: Arc::new(o),
                            at: now,
                        },
                        Err(e) => {
                            log!(Debug, "no same-host ring to {peer}: {e}");
                            Route::Udp(now + RETRY)
                        }
                    }
                };
                out.insert(peer, next);
                return None;
            }
            Route::Udp(until) if *until > now => return None,
            Route::Udp(_) => {}
        }
        let x = nonce();
        let fresh = if out.values().filter(|r| r.holds_ring()).count() < MAX_RINGS {
            Producer::create().ok().map(|(p, fd)| Fresh(p, fd))
        } else {
            None
        };
        out.insert(peer, Route::Hello { x, at: now, fresh });
        // Lost, it is asked again after HELLO_WAIT and RETRY.
        let _ = self.udp.send_to(&control_msg(HELLO, x, [0; 6]), peer);
        None
    }

    fn offer(&self, peer: SocketAddr, y: Nonce, fresh: Option<Fresh>) -> io::Result<Outbound> {
        let Fresh(producer, fd) = match fresh {
            Some(f) => f,
            None => {
                let (p, fd) = Producer::create()?;
                Fresh(p, fd)
            }
        };
        let to = name_of(peer);
        let mut msg = OFFER.to_vec();
        msg.extend_from_slice(&y);
        sys::send_with_fd(self.sock.as_fd(), &to, &msg, fd.as_fd())?;
        Ok(Outbound {
            to,
            producer: Mutex::new(producer),
            dead: AtomicBool::new(false),
        })
    }

    /// A handshake datagram `d` ([`is_control`]) came by UDP, claiming to
    /// be from `from` (which anyone may forge: only what it knows counts).
    pub(super) fn handshake(&self, from: SocketAddr, d: &[u8], c: &Counters) {
        let from = canon(from);
        let (x, y): (Nonce, Nonce) = (d[3..9].try_into().unwrap(), d[9..].try_into().unwrap());
        if !self.candidate(from) || x == [0; 6] {
            return;
        }
        match d[2] {
            HELLO => self.answer(from, x, c),
            ACK => {
                let mut out = lock(&self.out);
                match out.get_mut(&from) {
                    Some(r) if matches!(&*r, Route::Hello { x: ours, .. } if *ours == x) => {
                        let now = Instant::now();
                        if let Route::Hello { fresh, .. } = std::mem::replace(r, Route::Udp(now)) {
                            *r = Route::Proven { y, at: now, fresh };
                        }
                    }
                    // A late answer, or a guess.
                    _ => Counters::add(&c.same_host_unproven, 1),
                }
            }
            _ => {}
        }
    }

    /// Answer `from`'s hello: a `y` only `from`'s endpoint receives, which
    /// its offer must carry.
    fn answer(&self, from: SocketAddr, x: Nonce, c: &Counters) {
        let now = Instant::now();
        let has_ring = lock(&self.inbound).iter().any(|r| r.peer == from);
        if !has_ring && self.rings_in() >= MAX_RINGS {
            self.refuse(c, Some(&c.same_host_over_limit));
            self.warn_once(
                WARN_LIMIT,
                format_args!("same-host rings: {MAX_RINGS} already; {from} stays on UDP"),
            );
            return;
        }
        let mut proofs = lock(&self.proofs);
        proofs.retain(|p| p.peer != from && now.duration_since(p.at) <= PROOF_TTL);
        if proofs.len() >= MAX_HELLOS {
            drop(proofs);
            self.refuse(c, Some(&c.same_host_over_limit));
            self.warn_once(
                WARN_LIMIT,
                format_args!("same-host handshakes: {MAX_HELLOS} open; {from} stays on UDP"),
            );
            return;
        }
        let y = nonce();
        if y == [0; 6] {
            return; // no randomness: no proof to give
        }
        proofs.push(Proof {
            peer: from,
            y,
            at: now,
        });
        drop(proofs);
        let _ = self.udp.send_to(&control_msg(ACK, x, y), from);
    }

    /// Whether the device at `peer`, to which a ring of ours is open, is
    /// gone: its consumer said so, or its socket no longer exists (a kick
    /// is refused — the process ended, however). Only a peer proven to be
    /// a same-host device has a ring, so a refusal means gone, not "never
    /// had a socket". False for any other peer.
    pub(super) fn peer_gone(&self, peer: SocketAddr) -> bool {
        let o = match lock(&self.out).get(&canon(peer)) {
            Some(Route::Ring(o)) => o.clone(),
            _ => return false,
        };
        if o.dead.load(Ordering::Relaxed) || lock(&o.producer).consumer_gone() {
            return true;
        }
        self.kick(&o);
        o.dead.load(Ordering::Relaxed)
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
        self.send_kind(o, data, ring::PLAIN, c)
    }

    /// [`SameHost::send`] of records of `kind`.
    fn send_kind<'a>(
        &self,
        o: &Outbound,
        data: impl Iterator<Item = &'a [u8]>,
        kind: u32,
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
                match p.push_kind(d, kind) {
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

    /// The ring to `peer` if packets may go on it by reference now: it is
    /// in use (its marker sent), its consumer alive and not refusing them.
    fn ring_for_refs(&self, peer: SocketAddr) -> Option<Arc<Outbound>> {
        let o = match lock(&self.out).get(&canon(peer)) {
            Some(Route::Ring(o)) => o.clone(),
            _ => return None,
        };
        let ok = !o.dead.load(Ordering::Relaxed) && {
            let p = lock(&o.producer);
            !p.refs_refused() && !p.consumer_gone()
        };
        ok.then_some(o)
    }

    /// Whether packets to `peer` may leave by reference (see "One copy").
    pub(super) fn by_ref(&self, peer: SocketAddr) -> bool {
        super::by_ref_enabled() && self.ring_for_refs(peer).is_some()
    }

    /// Send by-reference stubs to `peer` on its ring; those that cannot go
    /// (no ring any more) are dropped and counted.
    pub(super) fn send_by_ref(&self, peer: SocketAddr, stubs: &[&[u8]], c: &Counters) -> usize {
        let Some(o) = self.ring_for_refs(peer) else {
            Counters::add(&c.send_dropped, stubs.len() as u64);
            return 0;
        };
        let sent = self.send_kind(&o, stubs.iter().copied(), ring::BY_REF, c);
        Counters::add(&c.by_ref_sent, sent as u64);
        sent
    }

    /// A payload `peer` sent by reference could not be read: ask it (its
    /// ring's producer) to carry them from now on.
    pub(super) fn refuse_by_ref(&self, peer: SocketAddr, c: &Counters) {
        Counters::add(&c.by_ref_failed, 1);
        let peer = canon(peer);
        if let Some(r) = lock(&self.inbound).iter().find(|r| r.peer == peer) {
            r.ring.refuse_refs();
        }
    }

    /// From now on every ring we read (those to come too) asks for whole
    /// packets.
    pub(super) fn refuse_all_by_ref(&self) {
        self.no_refs.store(true, Ordering::Release);
        lock(&self.inbound)
            .iter()
            .for_each(|r| r.ring.refuse_refs());
    }

    /// Take up offers waiting on the socket (and swallow kicks).
    pub(super) fn control(&self, c: &Counters) {
        self.last_control.store(self.now(), Ordering::Relaxed);
        let mut buf = [0u8; 64];
        for _ in 0..CONTROL_BATCH {
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
            self.consider(&buf[..m.len], &m.from, (m.uid, m.pid), fd, c);
        }
    }

    /// An offer: `msg` with the ring `fd`, from the socket named `from`, of
    /// a process of `uid`.
    fn consider(
        &self,
        msg: &[u8],
        from: &[u8],
        (uid, pid): (Option<u32>, Option<i32>),
        fd: OwnedFd,
        c: &Counters,
    ) {
        let (Some(words), Some(y)) = (msg.get(..OFFER.len()), msg.get(OFFER.len()..)) else {
            return self.refuse(c, None);
        };
        let (Some(peer), true, Ok(y)) = (addr_of(from), words == OFFER, <Nonce>::try_from(y))
        else {
            return self.refuse(c, Some(&c.same_host_unproven));
        };
        if !self.candidate(peer) {
            return self.refuse(c, Some(&c.same_host_unproven));
        }
        // The handshake is spent by any offer from `peer`: one guess each.
        let now = Instant::now();
        let proof = {
            let mut proofs = lock(&self.proofs);
            let i = proofs.iter().position(|p| p.peer == peer);
            i.map(|i| proofs.swap_remove(i))
        };
        if uid != Some(self.uid) {
            self.refuse(c, Some(&c.same_host_other_uid));
            return self.warn_once(
                WARN_OTHER_UID,
                format_args!(
                    "refused a same-host ring from {peer}: offered by uid {uid:?}, not ours ({})",
                    self.uid
                ),
            );
        }
        if !proof.is_some_and(|p| p.y == y && now.duration_since(p.at) <= PROOF_TTL) {
            self.refuse(c, Some(&c.same_host_unproven));
            return self.warn_once(
                WARN_UNPROVEN,
                format_args!(
                    "refused a same-host ring offered as {peer}: the offerer does not receive \
                     at that endpoint (a forged offer, or a squatter of its name)"
                ),
            );
        }
        // No pid (cannot happen with SO_PASSCRED): 0 names no process, so
        // reads by reference fail and the peer is asked to stop.
        self.take(peer, pid.unwrap_or(0), fd, c);
    }

    /// Map a ring `peer` offered; it replaces an older one from the same
    /// address (the peer's device was closed and opened again).
    fn take(&self, peer: SocketAddr, pid: i32, fd: OwnedFd, c: &Counters) {
        let mut rings = lock(&self.inbound);
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        rings.retain(|r| r.peer != peer);
        if rings.len() >= MAX_RINGS {
            drop(rings);
            self.refuse(c, Some(&c.same_host_over_limit));
            return self.warn_once(
                WARN_LIMIT,
                format_args!("same-host rings: {MAX_RINGS} already; {peer} stays on UDP"),
            );
        }
        // Our own pid now (a forked child has its own device).
        let pid = (pid != std::process::id() as i32).then_some(pid);
        let no_refs = self.no_refs.load(Ordering::Acquire)
            || (pid.is_some() && !super::by_ref_across_processes());
        match Consumer::attach(fd, no_refs) {
            Ok(ring) => {
                let gate = self.now() + GATE_MAX.as_nanos() as u64;
                rings.push(Inbound {
                    peer,
                    pid,
                    ring,
                    gate,
                });
                log!(Debug, "same-host ring from {peer}");
            }
            Err(e) => {
                drop(rings);
                self.refuse(c, None);
                self.warn_once(
                    WARN_BROKEN,
                    format_args!("refused a same-host ring from {peer}: {e}"),
                );
            }
        }
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// `peer`'s marker arrived: everything it sent by UDP before its ring
    /// has been received, so the ring may be read. (Anyone may forge it:
    /// then the ring only opens early, as after [`GATE_MAX`].)
    pub(super) fn marker(&self, peer: SocketAddr) {
        let peer = canon(peer);
        if let Some(r) = lock(&self.inbound).iter_mut().find(|r| r.peer == peer) {
            r.gate = 0;
        }
    }

    /// Append what the rings hold to `batch` (and take up offers, at most
    /// every [`CONTROL_EVERY`]); if some peer has a ring to us, the time
    /// (ns on this link's clock) it read.
    pub(super) fn receive(&self, batch: &mut RecvBatch, c: &Counters) -> Option<u64> {
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
        (!rings.is_empty()).then_some(now)
    }
}

impl Inbound {
    /// Move what the ring holds to `batch`; false if the ring is to go
    /// (finished, or broken: counted).
    fn pop(&mut self, batch: &mut RecvBatch, c: &Counters) -> bool {
        let r = self;
        match r.ring.pop_into(batch, r.peer, r.pid) {
            Ok((n, bytes, refs)) => {
                Counters::add(&c.by_ref_received, refs as u64);
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

impl Drop for SameHost {
    /// The rings go before the fields that hold our endpoint and name.
    fn drop(&mut self) {
        self.close();
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
    fn names_round_trip_and_foreign_or_second_names_are_no_address() {
        for a in ["127.1.2.3:4791", "[::1]:4791"] {
            let a: SocketAddr = a.parse().unwrap();
            assert_eq!(addr_of(&name_of(a)), Some(a));
        }
        assert_eq!(addr_of(b"softrdma-roce/eth0"), None);
        assert_eq!(addr_of(b"other/127.0.0.1:4791"), None);
        // Parses to 127.1.2.3:4791, but is not its name.
        assert_eq!(addr_of(b"softrdma-roce/127.1.2.3:04791"), None);
        assert_eq!(addr_of(b"softrdma-roce/127.001.2.3:4791"), None);
    }

    /// A device at `at` (its UDP socket too: the handshake needs one).
    fn device(at: SocketAddr) -> (SameHost, UdpSocket) {
        let udp = UdpSocket::bind(at).unwrap();
        (SameHost::bind(at, &udp).unwrap(), udp)
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

    fn offer_words(y: Nonce) -> Vec<u8> {
        [OFFER, &y].concat()
    }

    /// What `b` answers a hello from `peer` (whose UDP socket is `udp`).
    fn handshake(b: &SameHost, peer: SocketAddr, udp: &UdpSocket, c: &Counters) -> Nonce {
        b.handshake(peer, &control_msg(HELLO, [1; 6], [0; 6]), c);
        let mut m = [0u8; 64];
        udp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let (n, _) = udp.recv_from(&mut m).unwrap();
        assert!(is_control(&m[..n]) && m[2] == ACK && m[3..9] == [1; 6]);
        m[9..15].try_into().unwrap()
    }

    #[test]
    fn only_a_sealed_ring_offered_with_the_proof_of_its_endpoint_is_taken() {
        let at: SocketAddr = "127.79.1.2:4791".parse().unwrap();
        let (b, _udp) = device(at);
        let c = Counters::default();
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let ring = || Some(Producer::create().unwrap().1);
        let file = Some(OwnedFd::from(
            std::fs::File::open("/proc/self/status").unwrap(),
        ));
        let p: SocketAddr = "127.79.1.6:4791".parse().unwrap();
        let p_udp = UdpSocket::bind(p).unwrap();
        let y = handshake(&b, p, &p_udp, &c);
        // Not a ring; from a socket that is no device; from a second name of
        // the device; from a non-loopback device; the wrong words; no proof
        // (a device that did not say hello); a wrong proof (which spends
        // the right one).
        offer_from(&name_of(p), at, &offer_words(y), file);
        offer_from(b"someone-else", at, &offer_words(y), ring());
        offer_from(
            b"softrdma-roce/127.79.1.6:04791",
            at,
            &offer_words(y),
            ring(),
        );
        offer_from(b"softrdma-roce/10.0.0.1:4791", at, &offer_words(y), ring());
        offer_from(b"softrdma-roce/127.79.1.8:1", at, b"take this", ring());
        offer_from(b"softrdma-roce/127.79.1.9:1", at, &offer_words(y), ring());
        b.control(&c);
        assert_eq!(get(&c.same_host_refused), 6);
        assert_eq!(get(&c.same_host_unproven), 4);
        assert!(lock(&b.inbound).is_empty());
        // The words without a ring: taken as a kick, nothing refused.
        offer_from(b"softrdma-roce/127.79.1.7:1", at, &offer_words(y), None);
        b.control(&c);
        assert_eq!(get(&c.same_host_refused), 6);
        // The file offer spent the proof: the right words now fail too.
        offer_from(&name_of(p), at, &offer_words(y), ring());
        b.control(&c);
        assert_eq!(get(&c.same_host_unproven), 5);
        assert!(lock(&b.inbound).is_empty());
        // A wrong guess spends it as well.
        let y = handshake(&b, p, &p_udp, &c);
        let mut wrong = y;
        wrong[0] ^= 1;
        offer_from(&name_of(p), at, &offer_words(wrong), ring());
        offer_from(&name_of(p), at, &offer_words(y), ring());
        b.control(&c);
        assert_eq!(get(&c.same_host_unproven), 7);
        // The device's real offer, after its hello.
        let y = handshake(&b, p, &p_udp, &c);
        offer_from(&name_of(p), at, &offer_words(y), ring());
        b.control(&c);
        assert_eq!(get(&c.same_host_refused), 9);
        let rings = lock(&b.inbound);
        assert_eq!(rings.len(), 1);
        assert_eq!(rings[0].peer, p);
    }

    #[test]
    fn a_new_ring_is_read_only_after_its_marker() {
        let at: SocketAddr = "127.79.2.2:4791".parse().unwrap();
        let peer: SocketAddr = "127.79.2.6:4791".parse().unwrap();
        let (b, _udp) = device(at);
        let c = Counters::default();
        let p_udp = UdpSocket::bind(peer).unwrap();
        let y = handshake(&b, peer, &p_udp, &c);
        let (mut p, fd) = Producer::create().unwrap();
        offer_from(&name_of(peer), at, &offer_words(y), Some(fd));
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

    #[test]
    fn an_answer_without_the_hello_proves_nothing_and_handshakes_are_bounded() {
        let at: SocketAddr = "127.79.3.2:4791".parse().unwrap();
        let (b, _udp) = device(at);
        let c = Counters::default();
        let peer: SocketAddr = "127.79.3.6:4791".parse().unwrap();
        // The route says hello; a forged answer with another x is ignored.
        assert!(b.route(peer, &c).is_none());
        b.handshake(peer, &control_msg(ACK, [9; 6], [7; 6]), &c);
        assert!(matches!(lock(&b.out).get(&peer), Some(Route::Hello { .. })));
        assert_eq!(c.same_host_unproven.load(Ordering::Relaxed), 1);
        // Hellos from many sources: answered up to the bound, then refused.
        for i in 0..MAX_HELLOS + 10 {
            let from = SocketAddr::from(([127, 79, 4, i as u8], 4791));
            b.handshake(from, &control_msg(HELLO, [1; 6], [0; 6]), &c);
        }
        assert_eq!(lock(&b.proofs).len(), MAX_HELLOS);
        assert_eq!(c.same_host_over_limit.load(Ordering::Relaxed), 10);
    }
}
