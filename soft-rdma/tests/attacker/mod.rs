//! A hostile peer for the device tests: a raw port of a loopback hub that
//! sends whatever bytes it likes to a real `Device` and reads the replies,
//! plus memory regions surrounded by canaries.
//!
//! The device's QPs are connected to the attacker's address (the QPNs they
//! believe their peers have are made up), so every ACK or NAK comes back to
//! the attacker, decoded with the wire layer. "Nothing was answered" is
//! established without timing: after the hostile packets, a probe (a
//! duplicate SEND to a separate RC QP) is sent; the device handles
//! datagrams in order on one thread, so when the probe's ACK arrives every
//! earlier packet has been handled and its replies are already queued.
#![allow(dead_code)]

use soft_rdma::transport::{Hub, Link, LoopbackLink, Outgoing, RecvBatch};
use soft_rdma::verbs::*;
use soft_rdma::wire::icrc::{self, IcrcContext};
use soft_rdma::wire::{
    Bth, Ext, NakCode, Op, Opcode, PacketRepr, Syndrome, Transport, DEFAULT_PKEY,
};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use test_support::verbs::QpConfig;

pub const PAGE: usize = 4096;
/// The PSN every QP of the victim expects first.
pub const EPSN: u32 = 0x1000;
pub const MTU: Mtu = Mtu::M1024;
pub const MTU_BYTES: usize = 1024;
/// The UD Q_Key of the victim's UD QPs.
pub const QKEY: u32 = 0x1111_2222;

/// Memory with a canary page on each side of the region an MR covers. The
/// canaries and the region have distinct patterns, so any write, inside or
/// outside the region, shows.
pub struct Canaried {
    buf: Vec<u8>,
    start: usize,
    pub len: usize,
}

impl Canaried {
    pub fn new(len: usize, seed: u8) -> Canaried {
        // Over-allocate so the region starts on a page boundary.
        let total = len + 3 * PAGE;
        let mut buf = vec![0u8; total];
        let base = buf.as_ptr() as usize;
        let start = PAGE + (PAGE - base % PAGE) % PAGE;
        for (i, b) in buf.iter_mut().enumerate() {
            *b = if (start..start + len).contains(&i) {
                (i as u8).wrapping_mul(7).wrapping_add(seed)
            } else {
                0xc3 ^ (i as u8).wrapping_mul(13)
            };
        }
        Canaried { buf, start, len }
    }

    /// First byte of the region.
    pub fn addr(&self) -> u64 {
        self.buf[self.start..].as_ptr() as u64
    }

    /// The region and both canary pages, as they are now.
    pub fn snapshot(&self) -> Vec<u8> {
        self.buf.clone()
    }

    /// The region's bytes within a `snapshot`.
    pub fn region_in<'a>(&self, snapshot: &'a [u8]) -> &'a [u8] {
        &snapshot[self.start..self.start + self.len]
    }

    pub fn region(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }

    /// Byte for byte what `before` held; says where the first difference is.
    pub fn assert_unchanged(&self, before: &[u8], what: &str) {
        if self.buf == before {
            return;
        }
        let i = self
            .buf
            .iter()
            .zip(before)
            .position(|(a, b)| a != b)
            .expect("same length");
        let place = if i < self.start {
            format!(
                "canary below the region, {} bytes before it",
                self.start - i
            )
        } else if i >= self.start + self.len {
            format!(
                "canary above the region, {} bytes past it",
                i - self.start - self.len
            )
        } else {
            format!("region offset {}", i - self.start)
        };
        panic!(
            "{what}: memory written at {place}: {:#04x} -> {:#04x}",
            before[i], self.buf[i]
        );
    }

    /// Whether the canaries (not the region) still hold their pattern.
    pub fn canaries_intact(&self) -> bool {
        self.buf.iter().enumerate().all(|(i, &b)| {
            (self.start..self.start + self.len).contains(&i)
                || b == 0xc3 ^ (i as u8).wrapping_mul(13)
        })
    }
}

/// A reply the device sent to the attacker (ICRC verified).
#[derive(Debug, Clone)]
pub struct Reply {
    pub repr: PacketRepr,
    pub payload: Vec<u8>,
}

impl Reply {
    pub fn syndrome(&self) -> Option<Syndrome> {
        match self.repr.ext {
            Ext::Aeth(a) | Ext::AtomicAck(a, _) => Some(a.syndrome),
            _ => None,
        }
    }
}

/// A snapshot of the device's counters, with the probes sent so far.
pub struct Snap {
    stats: DeviceStats,
    probes: u64,
    sent: u64,
}

/// The victim device on a hub, the attacker's raw port next to it.
pub struct Env {
    _hub: Arc<Hub>,
    pub dev: Device,
    pub pd: Pd,
    pub cq: Cq,
    pub atk: LoopbackLink,
    pub victim: SocketAddr,
    pub me: SocketAddr,
    probe: Qp,
    probe_peer: u32,
    probes: u64,
    sent: u64,
    next_peer: u32,
    batch: RecvBatch,
    /// Replies read while waiting for a probe, not yet taken.
    pending: Vec<Reply>,
}

pub fn rc(op: Op) -> Opcode {
    Opcode::new(Transport::Rc, op).unwrap()
}
pub fn uc(op: Op) -> Opcode {
    Opcode::new(Transport::Uc, op).unwrap()
}
pub fn ud(op: Op) -> Opcode {
    Opcode::new(Transport::Ud, op).unwrap()
}

pub use test_support::verbs::all_access;

fn ctx(src: SocketAddr, dst: SocketAddr) -> IcrcContext {
    IcrcContext {
        src: src.ip(),
        dst: dst.ip(),
        src_port: src.port(),
        dst_port: dst.port(),
    }
}

impl Env {
    /// A victim at 127.31.`net`.1, the attacker at 127.31.`net`.2 (each
    /// test has its own hub, so addresses may repeat between tests).
    pub fn new(net: u8) -> Env {
        Env::with_queue(net, soft_rdma::transport::loopback::DEFAULT_QUEUE)
    }

    pub fn with_queue(net: u8, queue: usize) -> Env {
        let hub = Hub::with_queue(queue);
        let victim = SocketAddr::from(([127, 31, net, 1], 4791));
        let me = SocketAddr::from(([127, 31, net, 2], 4791));
        let link = hub.link(victim).unwrap();
        let dev = Device::with_link(Arc::new(link));
        let atk = hub.link(me).unwrap();
        let pd = dev.alloc_pd();
        let cq = Cq::new(4096, None).unwrap();
        let probe_peer = 0x00ab_0000;
        let probe = make_qp(&pd, &cq, QpType::Rc, all_access(), probe_peer, me);
        Env {
            _hub: hub,
            dev,
            pd,
            cq,
            atk,
            victim,
            me,
            probe,
            probe_peer,
            probes: 0,
            sent: 0,
            next_peer: probe_peer,
            batch: RecvBatch::new(256),
            pending: Vec::new(),
        }
    }

    /// A QP of type `t` with QP access `access`, in RTS, connected (RC/UC)
    /// to a made-up QPN at the attacker's address. Returns it and that QPN.
    pub fn qp(&mut self, t: QpType, access: Access) -> (Qp, u32) {
        self.qp_with(&self.pd.clone(), t, access)
    }

    pub fn qp_with(&mut self, pd: &Pd, t: QpType, access: Access) -> (Qp, u32) {
        self.next_peer += 1;
        let peer = self.next_peer;
        (make_qp(pd, &self.cq, t, access, peer, self.me), peer)
    }

    /// Send raw bytes to the victim.
    pub fn send(&mut self, bytes: &[u8]) {
        self.send_many(&[bytes]);
    }

    pub fn send_many(&mut self, pkts: &[&[u8]]) {
        let out: Vec<Outgoing<'_>> = pkts
            .iter()
            .map(|d| Outgoing {
                peer: self.victim,
                data: d,
            })
            .collect();
        for chunk in out.chunks(64) {
            let n = self.atk.send(chunk).unwrap();
            assert_eq!(n, chunk.len(), "the hub took every datagram");
        }
        self.sent += pkts.len() as u64;
    }

    /// Send raw bytes to the victim from another link of the hub.
    pub fn send_from(&mut self, link: &LoopbackLink, bytes: &[u8]) {
        let out = [Outgoing {
            peer: self.victim,
            data: bytes,
        }];
        assert_eq!(link.send(&out).unwrap(), 1, "the hub took the datagram");
        self.sent += 1;
    }

    /// A well-formed packet from the attacker, ICRC sealed.
    /// AckReq is set on last and only packets, as the requester does.
    pub fn build(&self, opcode: Opcode, qpn: u32, psn: u32, ext: Ext, payload: &[u8]) -> Vec<u8> {
        let ack_req = opcode.op().is_last();
        build(
            self.me,
            self.victim,
            opcode,
            qpn,
            psn,
            ext,
            payload,
            ack_req,
        )
    }

    /// Re-seal the ICRC after editing bytes.
    pub fn reseal(&self, bytes: &mut [u8]) {
        icrc::seal(&ctx(self.me, self.victim), bytes);
    }

    /// Wait until the device has handled everything sent so far; the
    /// replies it sent meanwhile (the probe's ACK excluded).
    pub fn sync(&mut self) -> Vec<Reply> {
        let dup = psn_sub(EPSN, 1);
        let pkt = self.build(rc(Op::SendOnly), self.probe.qp_num(), dup, Ext::None, &[]);
        self.send(&pkt);
        self.probes += 1;
        let t = Instant::now();
        loop {
            let n = self
                .atk
                .recv(&mut self.batch, Some(Duration::from_millis(100)))
                .unwrap();
            let mut done = false;
            for i in 0..n {
                let (from, bytes) = self.batch.get(i);
                assert_eq!(from, self.victim);
                let r = decode(self.victim, self.me, bytes);
                if r.repr.bth.dest_qp == self.probe_peer {
                    assert_eq!(r.repr.bth.opcode, rc(Op::Ack), "probe answer {:?}", r.repr);
                    assert_eq!(
                        r.repr.bth.psn, dup,
                        "the probe is acknowledged up to ePSN-1"
                    );
                    done = true;
                } else {
                    self.pending.push(r);
                }
            }
            if done {
                return std::mem::take(&mut self.pending);
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "the device did not answer the probe (wedged?)\n{}",
                self.dev.stats()
            );
        }
    }

    pub fn hub(&self) -> Arc<Hub> {
        self._hub.clone()
    }

    pub fn snap(&self) -> Snap {
        Snap {
            stats: self.dev.stats(),
            probes: self.probes,
            sent: self.sent,
        }
    }

    /// The counters that moved since `s`, the probes' own effect removed
    /// (packet/datagram totals are checked here and left out).
    pub fn moved(&self, s: &Snap) -> BTreeMap<&'static str, u64> {
        let now = self.dev.stats();
        let probes = self.probes - s.probes;
        let sent = self.sent - s.sent;
        assert_eq!(
            now.rcvd_pkts - s.stats.rcvd_pkts,
            sent,
            "the device received every datagram sent"
        );
        let mut out = BTreeMap::new();
        for ((name, a), b) in DeviceStats::NAMES
            .iter()
            .zip(now.values())
            .zip(s.stats.values())
        {
            let mut d = a - b;
            if matches!(
                *name,
                "rcvd_pkts"
                    | "rcvd_inline"
                    | "rx_wakeups"
                    | "posts_held"
                    | "sent_pkts"
                    | "link_sent"
                    | "link_received"
            ) {
                continue;
            }
            if *name == "duplicate_requests" {
                d -= probes;
            }
            if d != 0 {
                out.insert(*name, d);
            }
        }
        out
    }

    /// Assert exactly these counters moved since `s`, by these amounts.
    pub fn assert_counted(&self, s: &Snap, want: &[(&'static str, u64)], what: &str) {
        let got = self.moved(s);
        let want: BTreeMap<&'static str, u64> = want.iter().copied().collect();
        assert_eq!(got, want, "{what}: counters moved");
    }

    /// Post a receive of `len` bytes at `addr` (lkey of `mr`).
    pub fn post_recv(&self, qp: &Qp, mr: &Mr, addr: u64, len: u32, wr_id: u64) {
        qp.post_recv(&[RecvWr {
            wr_id,
            sg_list: &[Sge {
                addr,
                length: len,
                lkey: mr.lkey(),
            }],
        }])
        .unwrap();
    }

    /// Completions now on the CQ (without waiting).
    pub fn completions(&self) -> Vec<Wc> {
        let mut out = Vec::new();
        let mut buf = [Wc::EMPTY; 16];
        loop {
            let k = self.cq.poll(&mut buf);
            if k == 0 {
                return out;
            }
            out.extend_from_slice(&buf[..k]);
        }
    }
}

/// A QP in RTS connected (RC/UC) to QPN `peer` at `me`.
pub fn make_qp(pd: &Pd, cq: &Cq, t: QpType, access: Access, peer: u32, me: SocketAddr) -> Qp {
    let qp = new_qp(pd, cq, t);
    bring_up(&qp, t, access, peer, me);
    qp
}

/// How the victim's QPs are made and brought up: 64 WRs of one SGE each
/// way, [`QKEY`], [`MTU`], [`EPSN`], a 67 ms timeout, `access` for RC/UC.
fn config(t: QpType, access: Access) -> QpConfig {
    QpConfig {
        cap: QpCap {
            max_send_wr: 64,
            max_recv_wr: 64,
            max_send_sge: 1,
            max_recv_sge: 1,
            max_inline_data: 0,
        },
        access,
        qkey: QKEY,
        mtu: MTU,
        psn: EPSN,
        timeout: Some(14),
        ..QpConfig::new(t)
    }
}

/// A QP in RESET.
pub fn new_qp(pd: &Pd, cq: &Cq, t: QpType) -> Qp {
    config(t, all_access()).create(pd, cq)
}

/// RESET → RTS, connected (RC/UC) to QPN `peer` at `me`.
pub fn bring_up(qp: &Qp, t: QpType, access: Access, peer: u32, me: SocketAddr) {
    config(t, access).bring_up(qp, peer, Gid::from_ip(me.ip()));
}

pub fn psn_sub(p: u32, n: u32) -> u32 {
    p.wrapping_sub(n) & 0x00ff_ffff
}
pub fn psn_add(p: u32, n: u32) -> u32 {
    p.wrapping_add(n) & 0x00ff_ffff
}

/// A packet from `from` to `to`, ICRC sealed.
#[allow(clippy::too_many_arguments)]
pub fn build(
    from: SocketAddr,
    to: SocketAddr,
    opcode: Opcode,
    qpn: u32,
    psn: u32,
    ext: Ext,
    payload: &[u8],
    ack_req: bool,
) -> Vec<u8> {
    let repr = PacketRepr {
        bth: Bth {
            opcode,
            solicited: false,
            mig_req: false,
            pad: 0,
            pkey: DEFAULT_PKEY,
            fecn: false,
            becn: false,
            dest_qp: qpn,
            ack_req,
            psn,
        },
        ext,
        payload_len: payload.len(),
    };
    let mut buf = vec![0u8; repr.buffer_len()];
    repr.emit(&mut buf).expect("a legal packet");
    let h = repr.header_len();
    buf[h..h + payload.len()].copy_from_slice(payload);
    icrc::seal(&ctx(from, to), &mut buf);
    buf
}

/// Decode a reply of the device, checking it is well formed and sealed.
pub fn decode(from: SocketAddr, to: SocketAddr, bytes: &[u8]) -> Reply {
    let (repr, range) = PacketRepr::parse(bytes).expect("the device sends parseable packets");
    assert!(
        icrc::verify(&ctx(from, to), bytes),
        "the device's ICRC is right: {repr}"
    );
    Reply {
        repr,
        payload: bytes[range].to_vec(),
    }
}

/// Assert `replies` is exactly one NAK of `code` for `psn` to `qpn`.
pub fn assert_nak(replies: &[Reply], qpn: u32, psn: u32, code: NakCode, what: &str) {
    assert_eq!(
        replies.len(),
        1,
        "{what}: one reply expected, got {replies:?}"
    );
    let r = &replies[0].repr;
    assert_eq!(r.bth.opcode, rc(Op::Ack), "{what}: {r}");
    assert_eq!(r.bth.dest_qp, qpn, "{what}: {r}");
    assert_eq!(r.bth.psn, psn, "{what}: NAK PSN {r}");
    assert_eq!(
        replies[0].syndrome(),
        Some(Syndrome::Nak(code)),
        "{what}: {r}"
    );
}

/// Assert `replies` is exactly one positive ACK for `psn` to `qpn`.
pub fn assert_ack(replies: &[Reply], qpn: u32, psn: u32, what: &str) {
    assert_eq!(
        replies.len(),
        1,
        "{what}: one reply expected, got {replies:?}"
    );
    let r = &replies[0].repr;
    assert_eq!(r.bth.opcode, rc(Op::Ack), "{what}: {r}");
    assert_eq!(r.bth.dest_qp, qpn, "{what}: {r}");
    assert_eq!(r.bth.psn, psn, "{what}: ACK PSN {r}");
    assert!(
        matches!(replies[0].syndrome(), Some(Syndrome::Ack { .. })),
        "{what}: {r}"
    );
}

/// Resident set size of this process, from /proc/self/status (bytes).
pub fn rss() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = s
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS in /proc/self/status");
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("a number of kB");
    kb * 1024
}
