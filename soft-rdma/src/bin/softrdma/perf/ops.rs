//! One size's run: what its steps share (`Ctx`), preparing the buffers,
//! posting the work requests, and which loop each side runs.

use super::exchange::Remote;
use super::output::Row;
use super::params::{read_slot, UD_GRH};
use super::resources::{Side, QKEY};
use super::values::{atomic_before, atomic_init, cas_next, fa_add, lat_marker, W_READSRC};
use super::Role;
use crate::args::{AtomicKind, PerfArgs, Verb};
use crate::ctrl::Ctrl;
use crate::{pattern, CliError, CliResult};
use soft_rdma::verbs::*;

/// One size's run.
pub(super) struct Ctx<'a> {
    pub(super) a: &'a PerfArgs,
    pub(super) s: &'a Side,
    pub(super) remote: &'a [Remote],
    /// `--duration`: which repetition of the sizes (0 without).
    pub(super) round: u64,
    pub(super) size: u64,
    /// Slots per buffer.
    pub(super) k: usize,
    /// A slot's length.
    pub(super) slot: usize,
    /// Path MTU in bytes (UC loses data a packet at a time).
    pub(super) mtu: usize,
    /// send_bw over UC/UD: the receiver grants credits (posted receives),
    /// as a send without a posted receive is lost rather than retried.
    pub(super) credits: bool,
}

impl Ctx<'_> {
    pub(super) fn iters(&self) -> u64 {
        self.a.iters
    }
    /// Operations in flight per QP.
    pub(super) fn depth(&self) -> usize {
        (self.a.tx_depth as usize).min(self.k).max(1)
    }
    /// Every `cq_mod`-th send is signaled.
    pub(super) fn cq_mod(&self) -> u64 {
        u64::from(self.a.cq_mod).min(self.depth() as u64).max(1)
    }
    /// Receives posted per QP.
    pub(super) fn rx_depth(&self) -> usize {
        (self.a.rx_depth as usize)
            .min(self.k)
            .min(self.iters() as usize)
            .max(1)
    }
    pub(super) fn seed(&self, what: u64, q: usize, i: u64) -> u64 {
        // Each round has its own patterns: a stale byte from an earlier
        // round is a mismatch.
        pattern::seed(what ^ (self.size << 8) ^ (self.round << 40), q as u64, i)
    }
    /// Where a received message starts in its slot (after UD's GRH).
    pub(super) fn recv_off(&self) -> usize {
        if self.a.conn == QpType::Ud {
            UD_GRH
        } else {
            0
        }
    }

    /// Before a size: sources of reads, atomic counters, receive areas, receives.
    pub(super) fn prepare(&self, role: Role) {
        let s = self.s;
        for q in 0..self.a.qps as usize {
            match (self.a.test.verb, role) {
                (Verb::Read, Role::Server) => {
                    for slot in 0..self.k {
                        pattern::fill(
                            s.src[q].bytes_mut(slot * self.slot, self.size as usize),
                            self.seed(W_READSRC, q, slot as u64),
                        );
                    }
                }
                (Verb::Atomic, Role::Server) => s.dst[q].write_u64(0, atomic_init(q)),
                (Verb::Write, _) if self.a.test.lat => {
                    s.dst[q].bytes_mut(0, self.size as usize).fill(0)
                }
                // UC may lose writes: start each size from zeros, so the check
                // can tell "lost" (zeros, or an older write) from "corrupted".
                (Verb::Write, Role::Server) if self.a.conn == QpType::Uc && self.a.verify => {
                    s.dst[q].bytes_mut(0, self.k * self.slot).fill(0);
                }
                _ => {}
            }
            let receives =
                self.a.test.verb == Verb::Send && (role == Role::Server || self.a.test.lat);
            if receives {
                for j in 0..self.rx_depth() as u64 {
                    self.post_recv(q, j);
                }
            }
        }
    }

    /// Post receive `j` of QP `q`, into slot `j % k`.
    pub(super) fn post_recv(&self, q: usize, j: u64) {
        let s = self.s;
        let slot = (j as usize) % self.k;
        let len = self.size as usize + self.recv_off();
        let sge = Sge {
            addr: s.dst[q].addr() + (slot * self.slot) as u64,
            length: len as u32,
            lkey: s.keys[q].1,
        };
        s.qps[q]
            .post_recv(&[RecvWr {
                wr_id: (q as u64) << 32 | j,
                sg_list: &[sge],
            }])
            .expect("post_recv within the receive queue's depth");
    }

    /// Post iteration `i` of QP `q` (the requester's operation). `what`:
    /// the pattern's seed, for writes and sends.
    pub(super) fn post(&self, q: usize, i: u64, signaled: bool, what: u64) -> CliResult<()> {
        let (s, r) = (self.s, &self.remote[q]);
        let (sge, op) = match self.a.test.verb {
            Verb::Write | Verb::Send => self.write_or_send(q, i, what),
            Verb::Read => self.read(q, i),
            Verb::Atomic => self.atomic(q, i),
        };
        let ud = (self.a.conn == QpType::Ud).then(|| UdDest {
            ah: s.pd.create_ah(r.gid),
            remote_qpn: r.qpn,
            remote_qkey: QKEY,
        });
        let wr = SendWr {
            wr_id: (q as u64) << 32 | i,
            sg_list: &[sge],
            op,
            flags: SendFlags {
                signaled,
                ..Default::default()
            },
            ud,
        };
        s.qps[q]
            .post_send(&[wr])
            .map_err(|(_, e)| CliError::Runtime(format!("post_send (QP {q}, iteration {i}): {e}")))
    }

    /// A write or send from source slot `i % k`, filled with its pattern
    /// first (with `--verify`, and always for latency: write_lat's receiver
    /// polls the last byte).
    fn write_or_send(&self, q: usize, i: u64, what: u64) -> (Sge, SendOp) {
        let (s, r) = (self.s, &self.remote[q]);
        let slot = (i as usize) % self.k;
        let size = self.size as usize;
        let lat = self.a.test.lat;
        let buf = s.src[q].bytes_mut(slot * self.slot, size);
        if self.a.verify || lat {
            pattern::fill(buf, self.seed(what, q, i));
        }
        if lat && self.a.test.verb == Verb::Write {
            buf[size - 1] = lat_marker(i);
        }
        let sge = Sge {
            addr: s.src[q].addr() + (slot * self.slot) as u64,
            length: size as u32,
            lkey: s.keys[q].0,
        };
        let op = if self.a.test.verb == Verb::Send {
            SendOp::Send
        } else {
            let off = if lat { 0 } else { slot * self.slot };
            SendOp::Write {
                remote_addr: r.dst_addr + off as u64,
                rkey: r.dst_rkey,
            }
        };
        (sge, op)
    }

    /// A read of remote slot `read_slot(i)` (lat: `i % k`) into local slot
    /// `i % k` (lat: the first).
    fn read(&self, q: usize, i: u64) -> (Sge, SendOp) {
        let (s, r) = (self.s, &self.remote[q]);
        let slot = (i as usize) % self.k;
        let lat = self.a.test.lat;
        let dslot = if lat { 0 } else { slot };
        let rslot = if lat { slot } else { read_slot(i, self.k) };
        let sge = Sge {
            addr: s.dst[q].addr() + (dslot * self.slot) as u64,
            length: self.size as u32,
            lkey: s.keys[q].1,
        };
        let op = SendOp::Read {
            remote_addr: r.src_addr + (rslot * self.slot) as u64,
            rkey: r.src_rkey,
        };
        (sge, op)
    }

    /// An atomic on the peer's counter, fetching into local slot `i % k`
    /// (lat: the first).
    fn atomic(&self, q: usize, i: u64) -> (Sge, SendOp) {
        let (s, r) = (self.s, &self.remote[q]);
        let slot = (i as usize) % self.k;
        let dslot = if self.a.test.lat { 0 } else { slot };
        let sge = Sge {
            addr: s.dst[q].addr() + (dslot * self.slot) as u64,
            length: 8,
            lkey: s.keys[q].1,
        };
        let op = match self.a.atomic {
            AtomicKind::FetchAndAdd => SendOp::FetchAdd {
                remote_addr: r.dst_addr,
                rkey: r.dst_rkey,
                add: fa_add(q, i),
            },
            AtomicKind::CmpAndSwap => {
                let v = atomic_before(AtomicKind::CmpAndSwap, q, i);
                SendOp::CompareSwap {
                    remote_addr: r.dst_addr,
                    rkey: r.dst_rkey,
                    compare: v,
                    swap: cas_next(q, v),
                }
            }
        };
        (sge, op)
    }

    /// The client's loop for this size; None if it measured nothing.
    pub(super) fn run_client(&self, ctrl: &mut Ctrl) -> CliResult<Option<Row>> {
        if self.a.test.lat {
            self.run_lat(ctrl, Role::Client).map(|r| r.map(Row::Lat))
        } else {
            self.run_bw_client(ctrl).map(|r| Some(Row::Bw(r)))
        }
    }

    /// The server's loop for this size; None if it measured nothing.
    pub(super) fn run_server(&self, ctrl: &mut Ctrl) -> CliResult<Option<Row>> {
        match (self.a.test.lat, self.a.test.verb) {
            (false, Verb::Send) => self.run_bw_receiver(ctrl).map(|r| Some(Row::Bw(r))),
            (true, Verb::Write | Verb::Send) => {
                self.run_lat(ctrl, Role::Server).map(|r| r.map(Row::Lat))
            }
            // Passive target: the device does the work; wait for DONE.
            _ => Ok(None),
        }
    }
}
