//! Moving datagrams (the "phy" layer): a [`Link`] sends and receives whole
//! UDP payloads (IB transport packets) to and from peers' RoCEv2 endpoints.
//!
//! * [`udp`] — a UDP socket on port 4791, batched (`sendmmsg`/`recvmmsg`);
//! * [`loopback`] — an in-process hub of links for tests;
//! * [`pcap`] — middleware that records every datagram of the link it wraps
//!   (`SOFTRDMA_PCAP=file.pcap`), with synthesized Ethernet/IP/UDP headers so
//!   tshark and scapy decode it and the ICRC verifies;
//! * [`faults`] — middleware that drops, duplicates, reorders, corrupts and
//!   delays received datagrams (`SOFTRDMA_FAULTS=drop=0.05,seed=7`), counting
//!   what it did;
//! * [`addr`] — which local address a device uses (the documented rule);
//! * `multicast` — a UDP link's IP multicast group memberships.
//!
//! No per-packet allocation: receive buffers are a preallocated batch
//! ([`RecvBatch`]), reused across calls.
//!
//! Progress model: [`Link::recv`] with `Some(Duration::ZERO)` is a single
//! non-blocking attempt (for inline receive processing in the caller's verbs
//! calls); with a timeout or `None` it *blocks* in the kernel (`poll`) or on a
//! condvar — never spins — and [`Link::close`] wakes it. The device's receive
//! thread blocks in [`Link::wait`] instead and receives under the same lock
//! as an application thread polling a CQ, which turns the thread's wake-ups
//! off while it polls ([`Link::wake_on_arrival`]).
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub mod addr;
pub mod faults;
pub mod loopback;
mod multicast;
pub mod pcap;
mod ring;
mod same_host;
mod sys;
pub mod udp;

pub use addr::bind_default;
pub use faults::{FaultConfig, FaultLink, FaultStats};
pub use loopback::{Hub, LoopbackLink};
pub use pcap::PcapLink;
pub use same_host::MAX_RINGS as SAME_HOST_MAX_RINGS;
pub use udp::UdpLink;

/// RoCEv2's UDP destination port.
pub const ROCE_PORT: u16 = 4791;

/// Largest IB packet we send or accept: 4096-byte path MTU + headers + ICRC.
pub const MAX_PACKET: usize = 4096 + 128;

/// A packet's payload left where the sender keeps it: `len` bytes at `va`
/// in process `pid` (None: this process, another device of it) — a
/// same-host peer that sent the packet by reference, see `same_host`, "One
/// copy". `pid` is the ring's producer as the kernel named it, never a
/// number from the ring; `va` and `len` are the peer's word, as untrusted
/// as any packet byte: read only through [`Remote::read_into`] and
/// [`Remote::read_to`], where the kernel (or a guarded copy) checks them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remote {
    pid: Option<i32>,
    va: u64,
    len: u32,
}

impl Remote {
    pub(crate) fn new(pid: Option<i32>, va: u64, len: u32) -> Remote {
        Remote { pid, va, len }
    }
    /// Whether the payload is in another process (reading it is then a
    /// system call: worth batching, see [`Remote::follows`]).
    pub fn other_process(&self) -> bool {
        self.pid.is_some()
    }
    /// Whether `next`'s payload continues this one's in the same process.
    pub fn follows(&self, next: &Remote) -> bool {
        self.pid == next.pid && self.va.checked_add(u64::from(self.len)) == Some(next.va)
    }
    /// This payload and `next`'s as one, if `next` [follows](Remote::follows) it.
    pub fn join(&self, next: &Remote) -> Option<Remote> {
        let len = self.len.checked_add(next.len)?;
        self.follows(next).then_some(Remote { len, ..*self })
    }
    /// The payload's length.
    pub fn len(&self) -> usize {
        self.len as usize
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Copy payload bytes `[off, off+n)` to our address `dst` (memory an
    /// MR's access holds, see `odp::Memory::fill_with`). An error — the
    /// sender unmapped its buffer, may not be read by us (ptrace rules), is
    /// gone, or [`by_ref_refused`] says so — writes nothing the caller may
    /// trust: the packet is to be dropped.
    pub fn read_into(&self, off: usize, dst: u64, n: usize) -> io::Result<()> {
        if off.checked_add(n).is_none_or(|e| e > self.len()) {
            return Err(io::ErrorKind::InvalidInput.into());
        }
        if by_ref_refused() {
            return Err(io::Error::from_raw_os_error(libc::EPERM));
        }
        let src = self.va.wrapping_add(off as u64);
        match self.pid {
            Some(pid) => sys::read_remote(pid, src, dst, n),
            None => sys::read_own(src, dst, n),
        }
    }
}

/// `SOFTRDMA_ONECOPY`: unset (or `local`), payloads go by reference only
/// between devices of one process (a receiver asks other processes for
/// whole packets: across processes the page walk of `process_vm_readv`
/// costs the receiver more than the ring's copy: on a quiet 2-core VM
/// two-process `ib_write_bw` ran at 3.4-4.5 GB/s with it, even placing
/// straight into the MR, against 4.6-5.4 without — docs/BENCHMARKS.md,
/// "Issue 21's goals in one compare run (session 12)"); `all` takes
/// references from other processes too; `off` sends every payload in its
/// packet; `eperm` (for tests) is `all` with every read of a payload by
/// reference failing as a kernel that forbids it would (`EPERM`, Yama's
/// `ptrace_scope`).
pub const ONECOPY_ENV: &str = "SOFTRDMA_ONECOPY";

fn onecopy_setting() -> &'static str {
    static S: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    S.get_or_init(|| {
        std::env::var(ONECOPY_ENV)
            .unwrap_or_default()
            .trim()
            .to_string()
    })
}

/// Whether this process sends payloads by reference to same-host peers.
pub(crate) fn by_ref_enabled() -> bool {
    !matches!(onecopy_setting(), "off" | "0" | "no" | "false")
}

/// Whether a receiver takes references from another process.
pub(crate) fn by_ref_across_processes() -> bool {
    matches!(onecopy_setting(), "all" | "eperm")
}

/// The test hook: reads by reference fail with `EPERM`.
fn by_ref_refused() -> bool {
    onecopy_setting() == "eperm"
}

/// One datagram to send.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    pub peer: SocketAddr,
    pub data: &'a [u8],
}

/// Where one packet to send lies in a buffer of packets
/// ([`Link::send_packed`]).
#[derive(Debug, Clone, Copy)]
pub struct Packed {
    pub peer: SocketAddr,
    pub start: usize,
    pub len: usize,
}

/// [`Link::send_packed`] through [`Link::send`], 64 packets a call.
pub fn send_packed_as_is<L: Link + ?Sized>(
    link: &L,
    bytes: &[u8],
    pkts: &[Packed],
) -> io::Result<usize> {
    const BATCH: usize = 64;
    let none = Outgoing {
        peer: UNSPECIFIED,
        data: &[],
    };
    let mut batch = [none; BATCH];
    let mut sent = 0;
    for run in pkts.chunks(BATCH) {
        for (slot, p) in batch.iter_mut().zip(run) {
            *slot = Outgoing {
                peer: p.peer,
                data: &bytes[p.start..p.start + p.len],
            };
        }
        sent += link.send(&batch[..run.len()])?;
    }
    Ok(sent)
}

/// A placeholder peer for preallocated slots.
pub(crate) const UNSPECIFIED: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::UNSPECIFIED,
    0,
));

/// Received datagrams in preallocated buffers, reused across calls.
///
/// [`RecvBatch::new`]`(n)` allocates once: room for `n` datagrams of
/// [`MAX_PACKET`] bytes (and at least one 64 KiB receive slot: a UDP link
/// may hand over packets the kernel coalesced, so a `recv` can return more
/// than `n` small ones). A `recv` overwrites the batch; [`RecvBatch::push`],
/// [`RecvBatch::retain`], [`RecvBatch::swap`] and [`RecvBatch::get_mut`] let
/// middleware (a fault injector, a test link) edit it in place — reordering
/// and dropping move no bytes.
pub struct RecvBatch {
    pub(crate) buf: Box<[u8]>,
    /// Bytes of `buf` in use (the next receive or push appends after them).
    pub(crate) used: usize,
    pub(crate) pkts: Vec<Slot>,
    /// Packets a receive may add (beyond `n`: coalesced ones).
    pub(crate) max: usize,
    n: usize,
}

/// One datagram of a [`RecvBatch`]: `buf[start..start + len]` from `peer`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Slot {
    pub(crate) peer: SocketAddr,
    pub(crate) start: usize,
    pub(crate) len: usize,
    /// The medium guarantees these are the bytes the sending device wrote
    /// (a same-host ring: memory, no wire), so the ICRC, which guards
    /// against corruption on a wire, need not be checked — Linux's loopback
    /// marks its packets CHECKSUM_UNNECESSARY for the same reason. Anything
    /// that edits the bytes clears it.
    pub(crate) intact: bool,
    /// The multicast group it was sent to, if the link knows (a group
    /// socket's datagram); None for unicast, or unknown.
    pub(crate) group: Option<IpAddr>,
    /// Sent by reference: the bytes are the headers only, the payload is
    /// there (see [`RecvBatch::remote`]).
    pub(crate) remote: Option<Remote>,
}

impl RecvBatch {
    /// Room for `n` datagrams of up to [`MAX_PACKET`] bytes (`n` = 0 is taken as 1).
    pub fn new(n: usize) -> RecvBatch {
        let n = n.max(1);
        let bytes = (n * MAX_PACKET).max(udp::GRO_SLOT);
        // Every coalesced datagram of a 64 KiB slot may be 64 packets.
        let max = n + bytes / udp::GRO_SLOT * 64;
        RecvBatch {
            buf: vec![0u8; bytes].into_boxed_slice(),
            used: 0,
            pkts: Vec::with_capacity(max),
            max,
            n,
        }
    }
    /// Datagrams filled by the last `recv`.
    pub fn len(&self) -> usize {
        self.pkts.len()
    }
    pub fn is_empty(&self) -> bool {
        self.pkts.is_empty()
    }
    /// How many datagrams of [`MAX_PACKET`] bytes fit.
    pub fn capacity(&self) -> usize {
        self.n
    }
    /// The `i`th datagram: sender and bytes. Panics if `i >= len()`.
    pub fn get(&self, i: usize) -> (SocketAddr, &[u8]) {
        let s = self.pkts[i];
        (s.peer, &self.buf[s.start..][..s.len])
    }
    /// The `i`th datagram, mutable bytes (e.g. to corrupt it in a test); it
    /// is no longer [intact](Self::intact).
    pub fn get_mut(&mut self, i: usize) -> (SocketAddr, &mut [u8]) {
        self.pkts[i].intact = false;
        // Middleware turns references off (`Link::refuse_all_by_ref`); one
        // that came before is left as its headers alone: malformed.
        self.pkts[i].remote = None;
        let s = self.pkts[i];
        (s.peer, &mut self.buf[s.start..][..s.len])
    }
    /// Whether the `i`th datagram came over a medium that cannot corrupt it
    /// (a same-host ring), so its ICRC need not be checked.
    pub fn intact(&self, i: usize) -> bool {
        self.pkts[i].intact
    }
    /// Iterate over the filled datagrams.
    pub fn iter(&self) -> impl Iterator<Item = (SocketAddr, &[u8])> + '_ {
        (0..self.len()).map(move |i| self.get(i))
    }
    /// Forget the contents (keeps the buffers).
    pub fn clear(&mut self) {
        self.pkts.clear();
        self.used = 0;
    }
    /// Append a datagram (a copy). False if the batch is full or `data` is
    /// longer than [`MAX_PACKET`].
    pub fn push(&mut self, peer: SocketAddr, data: &[u8]) -> bool {
        self.push_with(peer, data.len(), false, |dst| dst.copy_from_slice(data))
    }
    /// Append a datagram of `len` bytes that `fill` writes (all of them);
    /// `intact` as in [`RecvBatch::intact`]. False, and `fill` not called,
    /// where [`RecvBatch::push`] would be.
    pub(crate) fn push_with(
        &mut self,
        peer: SocketAddr,
        len: usize,
        intact: bool,
        fill: impl FnOnce(&mut [u8]),
    ) -> bool {
        if self.len() >= self.n || len > MAX_PACKET || self.used + len > self.buf.len() {
            return false;
        }
        let start = self.used;
        fill(&mut self.buf[start..][..len]);
        self.used += len;
        self.pkts.push(Slot {
            peer,
            start,
            len,
            intact,
            group: None,
            remote: None,
        });
        true
    }

    /// Append the headers of a packet whose payload stays at `remote`
    /// (intact: it came by a ring). False where [`RecvBatch::push`] would be.
    pub(crate) fn push_remote(
        &mut self,
        peer: SocketAddr,
        len: usize,
        remote: Remote,
        fill: impl FnOnce(&mut [u8]),
    ) -> bool {
        let pushed = self.push_with(peer, len, true, fill);
        if let Some(s) = self.pkts.last_mut().filter(|_| pushed) {
            s.remote = Some(remote);
        }
        pushed
    }

    /// If the `i`th datagram was sent by reference: where its payload is
    /// (its bytes are then the packet's headers only, BTH to the last
    /// extension header, with no payload, pad or ICRC).
    pub fn remote(&self, i: usize) -> Option<Remote> {
        self.pkts[i].remote
    }

    /// [`RecvBatch::push`] of a datagram sent to the multicast `group`.
    pub(crate) fn push_to_group(&mut self, peer: SocketAddr, group: IpAddr, data: &[u8]) -> bool {
        let pushed = self.push(peer, data);
        if let Some(s) = self.pkts.last_mut().filter(|_| pushed) {
            s.group = Some(group);
        }
        pushed
    }

    /// The multicast group the `i`th datagram was sent to, if the link
    /// knows it (None: unicast, or a link that cannot tell).
    pub fn group(&self, i: usize) -> Option<IpAddr> {
        self.pkts[i].group
    }
    /// Keep only the datagrams for which `keep` is true, in order.
    pub fn retain(&mut self, mut keep: impl FnMut(SocketAddr, &[u8]) -> bool) {
        let buf = &self.buf;
        self.pkts.retain(|s| keep(s.peer, &buf[s.start..][..s.len]));
    }
    /// Exchange datagrams `i` and `j` (both `< len()`).
    pub fn swap(&mut self, i: usize, j: usize) {
        assert!(
            i < self.len() && j < self.len(),
            "RecvBatch::swap out of range"
        );
        self.pkts.swap(i, j);
    }
}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch")
            .field("len", &self.len())
            .field("capacity", &self.capacity())
            .finish()
    }
}

/// Counters of a link, a snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Datagrams handed to the network (or to the peer's queue).
    pub sent: u64,
    pub sent_bytes: u64,
    pub received: u64,
    pub received_bytes: u64,
    /// Datagrams dropped on send: buffer full after retries, unreachable or
    /// unknown peer, address family mismatch, too large.
    pub send_dropped: u64,
    /// Received datagrams dropped because they were larger than [`MAX_PACKET`].
    pub recv_truncated: u64,
    /// Datagrams dropped before delivery because the receiver's queue was
    /// full (loopback only: the kernel does not tell a UDP socket this).
    pub recv_dropped: u64,
    /// Of `sent`/`received`: datagrams that went through a same-host ring
    /// instead of the kernel (UDP links of devices on loopback addresses).
    pub same_host_sent: u64,
    pub same_host_received: u64,
    /// Same-host offers and rings refused (not a sealed ring, an unproven
    /// or foreign sender, over the limit) or dropped because they broke the
    /// ring's format; of these, the next three by reason.
    pub same_host_refused: u64,
    /// Offers whose sender did not prove it receives at the UDP endpoint it
    /// claims (a forged offer, a squatter of a device's name), and
    /// non-canonical names.
    pub same_host_unproven: u64,
    /// Offers from a process of another uid (the rings are same-uid only).
    pub same_host_other_uid: u64,
    /// Offers and handshakes refused because the device already has
    /// [`SAME_HOST_MAX_RINGS`] of them.
    pub same_host_over_limit: u64,
    /// 1 if another socket held this device's same-host name when it opened
    /// (a squatter, or another device at the same address): it stays on UDP.
    pub same_host_squatted: u64,
    /// 1 if the link is bound to a fallback port, not 4791: another socket
    /// holds UDP 4791 on every address (`addr::bind_default`).
    pub port_fallback: u64,
    /// Of `same_host_sent`/`_received`: packets whose payload went by
    /// reference (the receiver read it from the sender's memory).
    pub by_ref_sent: u64,
    pub by_ref_received: u64,
    /// Payloads by reference the receiver could not read (the kernel
    /// refused: ptrace rules, an unmapped range, a gone sender; or a
    /// malformed reference): dropped, and the sender told to carry its
    /// payloads from then on.
    pub by_ref_failed: u64,
    /// UDP GSO datagrams handed to the kernel (each several of `sent`).
    pub gso_sent: u64,
    /// `sendmmsg` calls that sent something: `sent` less `same_host_sent`
    /// over this is the packets a system call carries.
    pub send_calls: u64,
    /// `recvmmsg` calls that returned datagrams: `received` less
    /// `same_host_received` over this is the packets a system call brings.
    pub recv_calls: u64,
    /// 1 if the kernel refused a GSO datagram (or `SOFTRDMA_GSO=refuse`
    /// made it seem to): the link went on with plain datagrams.
    pub gso_refused: u64,
}

/// The live counters behind [`LinkStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub sent: AtomicU64,
    pub sent_bytes: AtomicU64,
    pub received: AtomicU64,
    pub received_bytes: AtomicU64,
    pub send_dropped: AtomicU64,
    pub recv_truncated: AtomicU64,
    pub recv_dropped: AtomicU64,
    pub same_host_sent: AtomicU64,
    pub same_host_received: AtomicU64,
    pub same_host_refused: AtomicU64,
    pub same_host_unproven: AtomicU64,
    pub same_host_other_uid: AtomicU64,
    pub same_host_over_limit: AtomicU64,
    pub same_host_squatted: AtomicU64,
    pub port_fallback: AtomicU64,
    pub by_ref_sent: AtomicU64,
    pub by_ref_received: AtomicU64,
    pub by_ref_failed: AtomicU64,
    pub gso_sent: AtomicU64,
    pub send_calls: AtomicU64,
    pub recv_calls: AtomicU64,
    pub gso_refused: AtomicU64,
}

impl Counters {
    pub(crate) fn add(c: &AtomicU64, n: u64) {
        if n != 0 {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }
    pub(crate) fn snapshot(&self) -> LinkStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        LinkStats {
            sent: g(&self.sent),
            sent_bytes: g(&self.sent_bytes),
            received: g(&self.received),
            received_bytes: g(&self.received_bytes),
            send_dropped: g(&self.send_dropped),
            recv_truncated: g(&self.recv_truncated),
            recv_dropped: g(&self.recv_dropped),
            same_host_sent: g(&self.same_host_sent),
            same_host_received: g(&self.same_host_received),
            same_host_refused: g(&self.same_host_refused),
            same_host_unproven: g(&self.same_host_unproven),
            same_host_other_uid: g(&self.same_host_other_uid),
            same_host_over_limit: g(&self.same_host_over_limit),
            same_host_squatted: g(&self.same_host_squatted),
            port_fallback: g(&self.port_fallback),
            by_ref_sent: g(&self.by_ref_sent),
            by_ref_received: g(&self.by_ref_received),
            by_ref_failed: g(&self.by_ref_failed),
            gso_sent: g(&self.gso_sent),
            send_calls: g(&self.send_calls),
            recv_calls: g(&self.recv_calls),
            gso_refused: g(&self.gso_refused),
        }
    }
}

/// A datagram endpoint.
pub trait Link: Send + Sync {
    /// The local endpoint (its IP is the device's GID).
    fn local(&self) -> SocketAddr;
    /// Send a batch; returns how many were sent. A datagram the network
    /// refuses (unreachable peer, buffer full after retries) is dropped and
    /// counted, not an error of the whole batch.
    fn send(&self, batch: &[Outgoing<'_>]) -> io::Result<usize>;
    /// [`Link::send`] of packets laid out in `bytes` (each [`Packed`] says
    /// where), which the link may change as it sends them: the UDP link
    /// writes each later GSO segment's ICRC for its IP ID in place, so a
    /// datagram's packets leave as one piece of memory (one iovec) instead
    /// of two pieces a packet. Any other link sends them as they are.
    fn send_packed(&self, bytes: &mut [u8], pkts: &[Packed]) -> io::Result<usize> {
        send_packed_as_is(self, bytes, pkts)
    }
    /// Block until at least one datagram arrives, the link is closed, or the
    /// timeout passes; fills `batch` and returns how many (0: closed/timeout).
    fn recv(&self, batch: &mut RecvBatch, timeout: Option<Duration>) -> io::Result<usize>;
    /// Block until a datagram may be ready to [`Link::recv`] (one arrived,
    /// or one held back falls due), the link is closed or [`Link::kick`]ed,
    /// or the timeout passes. Receives nothing: the caller then receives
    /// with `recv(batch, Some(Duration::ZERO))`, so a thread that waits and
    /// a thread that polls take datagrams in arrival order under one lock.
    /// May return early for no reason.
    fn wait(&self, timeout: Option<Duration>) -> io::Result<()>;
    /// Make a blocked [`Link::wait`] (or the next one) return.
    fn kick(&self);
    /// Whether an arrival ends a blocked [`Link::wait`] (on by default).
    /// A thread that receives inline while it polls turns this off, so the
    /// waiting thread is not woken for datagrams the poller takes itself;
    /// the wait's timeout still runs (a link may let the first arrival after
    /// an off end one wait: `UdpLink` turns it off lazily). Turning it on
    /// while a datagram is waiting ends the wait at once. Links without the
    /// distinction ignore it.
    fn wake_on_arrival(&self, _on: bool) {}
    /// Wake every blocked `recv`; later ones return Ok(0) at once.
    fn close(&self);
    /// The link's counters (middleware forwards its inner link's).
    fn stats(&self) -> LinkStats {
        LinkStats::default()
    }
    /// The MTU (largest IP packet) of the network interface the link sends
    /// on, if known: the device's active MTU is the largest IB MTU whose
    /// packets fit it (packets leave with DF set). Middleware forwards it.
    fn mtu(&self) -> Option<u32> {
        None
    }
    /// What a fault injector in the stack did (`None`: there is none).
    fn fault_stats(&self) -> Option<FaultStats> {
        None
    }
    /// Whether `peer`, a device of this host this link had a ring to, is
    /// known to be gone (its endpoint closed: its process ended). False
    /// when not known (no ring, another host). Middleware forwards it.
    fn peer_gone(&self, _peer: SocketAddr) -> bool {
        false
    }
    /// Receive, from now on, datagrams sent to the IP multicast `group`
    /// (the device joins a group once, however many QPs attach). Middleware
    /// forwards it; a link that cannot is `Unsupported`.
    fn join(&self, _group: IpAddr) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }
    /// Stop receiving what is sent to `group` (after a [`Link::join`]).
    fn leave(&self, _group: IpAddr) {}
    /// Whether packets to `peer` may leave by reference now
    /// ([`Link::send_by_ref`]): only a link that hands them to the peer
    /// itself, over a ring to a device of this host. Middleware does not
    /// forward it: a capture or a fault layer needs the payload in the
    /// packet.
    fn by_ref(&self, _peer: SocketAddr) -> bool {
        false
    }
    /// Send packets to `peer` whose payload stays in our memory: each
    /// `stubs` entry is the packet's headers followed by a reference (our
    /// address, as 8 bytes LE, and the payload's length, as 4 bytes LE,
    /// then 4 zero bytes: [`REF_LEN`]); no payload, pad or ICRC. Returns how
    /// many went; the rest are dropped and counted (the route changed since
    /// [`Link::by_ref`]: the RC requester sends them again, in full).
    fn send_by_ref(&self, _peer: SocketAddr, stubs: &[&[u8]]) -> usize {
        let _ = stubs;
        0
    }
    /// A payload `peer` sent by reference could not be read: it is to send
    /// its payloads in its packets from now on.
    fn refuse_by_ref(&self, _peer: SocketAddr) {}
    /// Every peer is to send whole packets to us (middleware that must see
    /// the payload, a capture or a fault layer, wraps this link).
    fn refuse_all_by_ref(&self) {}
}

/// Bytes of the reference that ends a by-reference packet's stub.
pub const REF_LEN: usize = 16;

/// A boxed or shared link is a link (the device holds `Arc<dyn Link>`).
macro_rules! forward_link {
    ($($ptr:ident),*) => {$(
        impl<L: Link + ?Sized> Link for $ptr<L> {
            fn local(&self) -> SocketAddr {
                (**self).local()
            }
            fn send(&self, batch: &[Outgoing<'_>]) -> io::Result<usize> {
                (**self).send(batch)
            }
            fn send_packed(&self, bytes: &mut [u8], pkts: &[Packed]) -> io::Result<usize> {
                (**self).send_packed(bytes, pkts)
            }
            fn recv(&self, batch: &mut RecvBatch, timeout: Option<Duration>) -> io::Result<usize> {
                (**self).recv(batch, timeout)
            }
            fn wait(&self, timeout: Option<Duration>) -> io::Result<()> {
                (**self).wait(timeout)
            }
            fn kick(&self) {
                (**self).kick()
            }
            fn wake_on_arrival(&self, on: bool) {
                (**self).wake_on_arrival(on)
            }
            fn close(&self) {
                (**self).close()
            }
            fn stats(&self) -> LinkStats {
                (**self).stats()
            }
            fn mtu(&self) -> Option<u32> {
                (**self).mtu()
            }
            fn fault_stats(&self) -> Option<FaultStats> {
                (**self).fault_stats()
            }
            fn peer_gone(&self, peer: SocketAddr) -> bool {
                (**self).peer_gone(peer)
            }
            fn join(&self, group: IpAddr) -> io::Result<()> {
                (**self).join(group)
            }
            fn leave(&self, group: IpAddr) {
                (**self).leave(group)
            }
            fn by_ref(&self, peer: SocketAddr) -> bool {
                (**self).by_ref(peer)
            }
            fn send_by_ref(&self, peer: SocketAddr, stubs: &[&[u8]]) -> usize {
                (**self).send_by_ref(peer, stubs)
            }
            fn refuse_by_ref(&self, peer: SocketAddr) {
                (**self).refuse_by_ref(peer)
            }
            fn refuse_all_by_ref(&self) {
                (**self).refuse_all_by_ref()
            }
        }
    )*};
}
forward_link!(Box, Arc);

/// Deadline arithmetic shared by the links.
pub(crate) fn deadline(timeout: Option<Duration>) -> Option<std::time::Instant> {
    timeout.and_then(|t| std::time::Instant::now().checked_add(t))
}

#[cfg(test)]
mod tests {
    use super::RecvBatch;

    #[test]
    fn only_an_untouched_intact_push_is_intact() {
        let peer = "127.0.0.1:4791".parse().unwrap();
        let mut b = RecvBatch::new(4);
        assert!(b.push(peer, b"copied"));
        assert!(b.push_with(peer, 4, true, |d| d.copy_from_slice(b"ring")));
        assert!(b.push_with(peer, 4, true, |d| d.copy_from_slice(b"edit")));
        assert_eq!(
            (0..3).map(|i| b.intact(i)).collect::<Vec<_>>(),
            [false, true, true]
        );
        b.get_mut(2).1[0] ^= 1;
        assert!(
            b.intact(1) && !b.intact(2),
            "an edited datagram is checked again"
        );
        assert_eq!(b.get(2).1, b"ddit");
    }
}
