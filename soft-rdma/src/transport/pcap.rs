//! Middleware that records every datagram of the link it wraps in a pcap
//! file (classic pcap, LINKTYPE_ETHERNET, microsecond timestamps).
//!
//! Each datagram becomes a frame with synthesized headers: Ethernet (made-up,
//! locally administered MACs `02:00:` + the last four bytes of the IP
//! address), then IPv4 (TOS 0, ID 0, DF, TTL 64, a correct header checksum,
//! UDP checksum 0) or IPv6 (traffic class 0, flow label 0, hop limit 64, UDP
//! checksum computed), and UDP with the sender's and receiver's ports. These
//! are exactly the headers a [`super::UdpLink`] sender's kernel puts on the
//! wire (`IP_PMTUDISC_DO`: DF and ID 0), so tshark decodes UDP 4791 as
//! InfiniBand and scapy can recompute the ICRC over the same bytes the sender
//! covered. A datagram whose families differ (IPv4 peer of an IPv6 link) is
//! written as IPv6 with the IPv4-mapped address.
//!
//! Sent datagrams are recorded as handed to the inner link (before it can
//! drop them), received ones as delivered. Several links in one process may
//! record into the same file (`SOFTRDMA_PCAP` is per process): they share one
//! writer, and a datagram received from another link of that writer is not
//! written again (its send was), so the file reads like a capture on `lo`.
//!
//! Writes are buffered; a background thread flushes every 100 ms and the
//! last link flushes on drop, so a crashed run still leaves a readable file
//! (missing at most the last 100 ms).
#![forbid(unsafe_code)]
use crate::lock;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{Link, LinkStats, Outgoing, RecvBatch};

/// The environment variable naming the capture file.
pub const ENV: &str = "SOFTRDMA_PCAP";

/// How often buffered records reach the file.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);

const LINKTYPE_ETHERNET: u32 = 1;
const SNAPLEN: u32 = 65535;

/// A link whose traffic is recorded.
pub struct PcapLink<L: Link> {
    inner: L,
    rec: Arc<Recorder>,
    local: SocketAddr,
    /// The multicast groups joined: a datagram to one is recorded as sent
    /// to the group (see [`PcapLink::destination`]).
    groups: Mutex<Vec<IpAddr>>,
}

impl<L: Link> std::fmt::Debug for PcapLink<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcapLink")
            .field("local", &self.local)
            .field("path", &self.rec.path)
            .finish()
    }
}

impl<L: Link> PcapLink<L> {
    /// Record `inner`'s traffic in `path` (created or truncated, unless another
    /// link of this process already records there: then they share it).
    pub fn new(inner: L, path: &Path) -> io::Result<Self> {
        let rec = Recorder::open(path)?;
        // What it records must be whole RoCEv2 packets.
        inner.refuse_all_by_ref();
        let local = inner.local();
        lock(&rec.w).locals.push(local);
        Ok(PcapLink {
            inner,
            rec,
            local,
            groups: Mutex::new(Vec::new()),
        })
    }

    /// Where a received datagram was sent: this link, or for one to the
    /// multicast QPN the joined group its ICRC verifies with (a link does
    /// not report a datagram's destination address).
    fn destination(&self, from: SocketAddr, data: &[u8]) -> SocketAddr {
        let multicast =
            crate::wire::Packet::new_checked(data).is_ok_and(|p| p.dest_qp() == 0xff_ffff);
        if multicast {
            for &g in lock(&self.groups).iter() {
                let to = SocketAddr::new(g, super::ROCE_PORT);
                let ctx = crate::wire::icrc::IcrcContext::between(from, to);
                if crate::wire::icrc::verify(&ctx, data) {
                    return to;
                }
            }
        }
        self.local
    }

    /// The wrapped link.
    pub fn inner(&self) -> &L {
        &self.inner
    }

    /// Write buffered records to the file now.
    pub fn flush(&self) -> io::Result<()> {
        lock(&self.rec.w).flush()
    }
}

impl<L: Link> Drop for PcapLink<L> {
    fn drop(&mut self) {
        let mut w = lock(&self.rec.w);
        if let Some(i) = w.locals.iter().position(|a| *a == self.local) {
            w.locals.swap_remove(i);
        }
        let _ = w.flush();
    }
}

/// Wrap `inner` in a [`PcapLink`] if `SOFTRDMA_PCAP` names a file. A `%p`
/// in the name becomes the process id: a launcher (mpirun) passes one
/// environment to many processes, and two writers of one file corrupt it.
pub fn from_env(inner: Box<dyn Link>) -> io::Result<Box<dyn Link>> {
    let Some(name) = std::env::var_os(ENV).filter(|p| !p.is_empty()) else {
        return Ok(inner);
    };
    let path = match name.to_str() {
        Some(s) => PathBuf::from(s.replace("%p", &std::process::id().to_string())),
        None => PathBuf::from(name),
    };
    Ok(Box::new(PcapLink::new(inner, &path)?))
}

impl<L: Link> Link for PcapLink<L> {
    fn local(&self) -> SocketAddr {
        self.local
    }

    fn send(&self, batch: &[Outgoing<'_>]) -> io::Result<usize> {
        {
            let mut w = lock(&self.rec.w);
            for o in batch {
                w.record(self.local, o.peer, o.data);
            }
        }
        self.inner.send(batch)
    }

    fn recv(&self, batch: &mut RecvBatch, timeout: Option<Duration>) -> io::Result<usize> {
        let n = self.inner.recv(batch, timeout)?;
        if n > 0 {
            let mut w = lock(&self.rec.w);
            for (peer, data) in batch.iter() {
                if !w.locals.contains(&peer) {
                    w.record(peer, self.destination(peer, data), data);
                }
            }
        }
        Ok(n)
    }

    fn wait(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.inner.wait(timeout)
    }

    fn kick(&self) {
        self.inner.kick()
    }

    fn wake_on_arrival(&self, on: bool) {
        self.inner.wake_on_arrival(on)
    }

    fn close(&self) {
        self.inner.close()
    }

    fn stats(&self) -> LinkStats {
        self.inner.stats()
    }

    fn mtu(&self) -> Option<u32> {
        self.inner.mtu()
    }

    fn join(&self, group: std::net::IpAddr) -> io::Result<()> {
        self.inner.join(group)?;
        lock(&self.groups).push(group);
        Ok(())
    }

    fn leave(&self, group: std::net::IpAddr) {
        self.inner.leave(group);
        lock(&self.groups).retain(|g| *g != group);
    }

    fn fault_stats(&self) -> Option<super::FaultStats> {
        self.inner.fault_stats()
    }

    fn peer_gone(&self, peer: std::net::SocketAddr) -> bool {
        self.inner.peer_gone(peer)
    }
}

/// One open capture file, shared by the links of this process that record
/// into it.
struct Recorder {
    path: PathBuf,
    w: Mutex<Writer>,
    flusher: Arc<(Mutex<bool>, Condvar)>,
}

/// Open recorders by absolute path.
static OPEN: Mutex<Vec<(PathBuf, Weak<Recorder>)>> = Mutex::new(Vec::new());

impl Recorder {
    fn open(path: &Path) -> io::Result<Arc<Recorder>> {
        let err = |e: io::Error| {
            io::Error::new(
                e.kind(),
                format!(
                    "softrdma: cannot write the pcap file {} ({ENV}): {e}",
                    path.display()
                ),
            )
        };
        let abs = std::path::absolute(path).map_err(err)?;
        let mut open = lock(&OPEN);
        open.retain(|(_, r)| r.strong_count() > 0);
        if let Some(r) = open
            .iter()
            .find(|(p, _)| *p == abs)
            .and_then(|(_, r)| r.upgrade())
        {
            return Ok(r);
        }
        let mut out = BufWriter::with_capacity(1 << 16, File::create(&abs).map_err(err)?);
        // Global header, little-endian: magic, v2.4, zone, sigfigs, snaplen, linktype.
        let mut h = Vec::with_capacity(24);
        h.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        h.extend_from_slice(&2u16.to_le_bytes());
        h.extend_from_slice(&4u16.to_le_bytes());
        h.extend_from_slice(&0i32.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes());
        h.extend_from_slice(&SNAPLEN.to_le_bytes());
        h.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
        out.write_all(&h).map_err(err)?;
        out.flush().map_err(err)?;
        let rec = Arc::new(Recorder {
            path: abs.clone(),
            w: Mutex::new(Writer {
                out,
                dirty: false,
                frame: Vec::with_capacity(1 << 16),
                locals: Vec::new(),
            }),
            flusher: Arc::new((Mutex::new(false), Condvar::new())),
        });
        let weak = Arc::downgrade(&rec);
        let stop = rec.flusher.clone();
        std::thread::Builder::new()
            .name("softrdma-pcap".into())
            .spawn(move || flush_loop(weak, stop))
            .map_err(err)?;
        open.push((abs, Arc::downgrade(&rec)));
        Ok(rec)
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let _ = lock(&self.w).flush();
        *lock(&self.flusher.0) = true;
        self.flusher.1.notify_all();
    }
}

/// Flush every [`FLUSH_INTERVAL`] while the recorder lives (sleeps, never spins).
fn flush_loop(rec: Weak<Recorder>, stop: Arc<(Mutex<bool>, Condvar)>) {
    loop {
        let stopped = lock(&stop.0);
        if *stopped {
            return;
        }
        let stopped = crate::sync::wait_timeout(&stop.1, stopped, FLUSH_INTERVAL);
        if *stopped {
            return;
        }
        // Not holding `stop` from here: Recorder::drop takes it, and may run
        // on this thread when `r` is the last reference.
        drop(stopped);
        let Some(r) = rec.upgrade() else { return };
        let mut w = lock(&r.w);
        if w.dirty {
            let _ = w.flush();
        }
        drop(w);
        drop(r);
    }
}

struct Writer {
    out: BufWriter<File>,
    dirty: bool,
    /// Scratch for one record (header + frame): no allocation per packet.
    frame: Vec<u8>,
    /// Local addresses of the links recording here.
    locals: Vec<SocketAddr>,
}

impl Writer {
    fn flush(&mut self) -> io::Result<()> {
        self.dirty = false;
        self.out.flush()
    }

    /// Append one datagram from `src` to `dst`. Errors writing a debug
    /// capture must not break the link: they are ignored.
    fn record(&mut self, src: SocketAddr, dst: SocketAddr, data: &[u8]) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        self.frame.clear();
        if !synthesize(&mut self.frame, src, dst, data) {
            return;
        }
        let len = self.frame.len() as u32;
        let mut rh = [0u8; 16];
        rh[0..4].copy_from_slice(&(now.as_secs() as u32).to_le_bytes());
        rh[4..8].copy_from_slice(&now.subsec_micros().to_le_bytes());
        rh[8..12].copy_from_slice(&len.min(SNAPLEN).to_le_bytes());
        rh[12..16].copy_from_slice(&len.to_le_bytes());
        let cap = (len.min(SNAPLEN)) as usize;
        if self
            .out
            .write_all(&rh)
            .and_then(|_| self.out.write_all(&self.frame[..cap]))
            .is_ok()
        {
            self.dirty = true;
        }
    }
}

fn mac(ip: &IpAddr) -> [u8; 6] {
    let o = match ip {
        IpAddr::V4(a) => a.octets(),
        IpAddr::V6(a) => {
            let s = a.octets();
            [s[12], s[13], s[14], s[15]]
        }
    };
    [0x02, 0x00, o[0], o[1], o[2], o[3]]
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    }
}

/// One's-complement sum of 16-bit big-endian words (odd tail padded with 0).
fn ones_sum(mut acc: u32, bytes: &[u8]) -> u32 {
    let mut chunks = bytes.chunks_exact(2);
    for c in &mut chunks {
        acc += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [b] = chunks.remainder() {
        acc += u32::from(*b) << 8;
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// The IPv4 header checksum of a 20-byte header (its checksum field zero).
pub fn ipv4_checksum(header: &[u8]) -> u16 {
    fold(ones_sum(0, header))
}

/// Ethernet + IP + UDP + `data` into `out`; false if it cannot be expressed
/// (too large for an IP datagram).
fn synthesize(out: &mut Vec<u8>, src: SocketAddr, dst: SocketAddr, data: &[u8]) -> bool {
    let udp_len = data.len() + 8;
    let both_v4 = matches!((src.ip(), dst.ip()), (IpAddr::V4(_), IpAddr::V4(_)));
    // Ethernet.
    out.extend_from_slice(&mac(&dst.ip()));
    out.extend_from_slice(&mac(&src.ip()));
    if both_v4 {
        if udp_len + 20 > 65535 {
            return false;
        }
        let (IpAddr::V4(s), IpAddr::V4(d)) = (src.ip(), dst.ip()) else {
            return false;
        };
        out.extend_from_slice(&0x0800u16.to_be_bytes());
        let ip_at = out.len();
        out.extend_from_slice(&[0x45, 0x00]); // version 4, IHL 5, TOS 0
        out.extend_from_slice(&((udp_len + 20) as u16).to_be_bytes());
        out.extend_from_slice(&[0x00, 0x00, 0x40, 0x00]); // ID 0, DF, offset 0
        out.extend_from_slice(&[64, 17, 0, 0]); // TTL, UDP, checksum (below)
        out.extend_from_slice(&s.octets());
        out.extend_from_slice(&d.octets());
        let ck = ipv4_checksum(&out[ip_at..ip_at + 20]);
        out[ip_at + 10..ip_at + 12].copy_from_slice(&ck.to_be_bytes());
        out.extend_from_slice(&src.port().to_be_bytes());
        out.extend_from_slice(&dst.port().to_be_bytes());
        out.extend_from_slice(&(udp_len as u16).to_be_bytes());
        out.extend_from_slice(&[0, 0]); // no checksum, as rxe
        out.extend_from_slice(data);
    } else {
        if udp_len > 65535 {
            return false;
        }
        let (s, d) = (v6(src.ip()), v6(dst.ip()));
        out.extend_from_slice(&0x86ddu16.to_be_bytes());
        out.extend_from_slice(&[0x60, 0, 0, 0]); // version 6, TC 0, flow 0
        out.extend_from_slice(&(udp_len as u16).to_be_bytes());
        out.extend_from_slice(&[17, 64]); // UDP, hop limit
        out.extend_from_slice(&s.octets());
        out.extend_from_slice(&d.octets());
        let mut udp = [0u8; 8];
        udp[0..2].copy_from_slice(&src.port().to_be_bytes());
        udp[2..4].copy_from_slice(&dst.port().to_be_bytes());
        udp[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
        // Pseudo-header: addresses, upper-layer length, next header.
        let mut acc = ones_sum(0, &s.octets());
        acc = ones_sum(acc, &d.octets());
        acc = ones_sum(acc, &(udp_len as u32).to_be_bytes());
        acc = ones_sum(acc, &[0, 0, 0, 17]);
        acc = ones_sum(acc, &udp);
        // Sum the data in 64 KiB pieces' worth of u32 headroom: fold as we go.
        for c in data.chunks(1 << 15) {
            acc = ones_sum(acc, c);
            acc = (acc & 0xffff) + (acc >> 16);
        }
        let ck = match fold(acc) {
            0 => 0xffff,
            c => c,
        };
        udp[6..8].copy_from_slice(&ck.to_be_bytes());
        out.extend_from_slice(&udp);
        out.extend_from_slice(data);
    }
    true
}
