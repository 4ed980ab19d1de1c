//! One side's verbs objects: the device, PD, buffers and their MRs, CQs,
//! and QPs, and bringing the QPs up to RTS against the peer's ends.

use super::exchange::Remote;
use super::params::Layout;
use super::region::Region;
use super::Role;
use crate::args::{OdpMode, PerfArgs, Verb};
use crate::report::Dest;
use crate::{runtime, CliError, CliResult};
use soft_rdma::verbs::*;
use std::time::Instant;

pub(super) const QKEY: u32 = 0x1111_1111;
pub(super) const OUTSTANDING_READS: u8 = 16;

/// A QP's (lkey/rkey of src, lkey/rkey of dst).
type Keys = (u32, u32);

/// One side: device, objects, buffers.
pub(super) struct Side {
    // Drop order: QPs and MRs before the buffers and the device.
    pub(super) qps: Vec<Qp>,
    mrs: Vec<Mr>,
    /// Per QP.
    pub(super) keys: Vec<Keys>,
    pub(super) src: Vec<Region>,
    pub(super) dst: Vec<Region>,
    pub(super) psns: Vec<u32>,
    pub(super) scq: Cq,
    pub(super) rcq: Cq,
    pub(super) pd: Pd,
    pub(super) dev: Device,
}

pub(super) fn open_device() -> CliResult<Device> {
    Device::open().or_else(|e| runtime(format!("cannot open the device: {e}")))
}

fn all_access(odp: bool) -> Access {
    let a =
        Access::LOCAL_WRITE | Access::REMOTE_WRITE | Access::REMOTE_READ | Access::REMOTE_ATOMIC;
    if odp {
        a | Access::ON_DEMAND
    } else {
        a
    }
}

fn verr(what: &str, e: Errno) -> CliError {
    CliError::Runtime(format!("{what}: {e}"))
}

fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos() ^ u128::from(std::process::id()));
    h.finish() as u32
}

impl Side {
    pub(super) fn new(a: &PerfArgs, role: Role, lay: &Layout) -> CliResult<Side> {
        let dev = open_device()?;
        let pd = dev.alloc_pd();
        let sq_wr = (a.tx_depth as usize).max(lay.depth_cap).max(16) as u32 + 1;
        let rq_wr = (a.rx_depth as usize).max(lay.depth_cap).max(16) as u32 + 1;
        let scq = Cq::new(((sq_wr as usize) * a.qps as usize + 16).min(65536), None)
            .map_err(|e| verr("create CQ", e))?;
        let rcq = Cq::new(((rq_wr as usize) * a.qps as usize + 16).min(65536), None)
            .map_err(|e| verr("create CQ", e))?;
        let (src, dst) = alloc_buffers(a, role, lay)?;
        let (mrs, keys) = register(a, &pd, &src, &dst)?;
        let mut qps = Vec::new();
        let mut psns = Vec::new();
        for _ in 0..a.qps {
            qps.push(create_qp(a, &pd, &scq, &rcq, sq_wr, rq_wr)?);
            psns.push(random_u32() & 0x00ff_ffff);
        }
        Ok(Side {
            qps,
            mrs,
            keys,
            src,
            dst,
            psns,
            scq,
            rcq,
            pd,
            dev,
        })
    }

    /// This side's end of QP `q`, as the address table prints it.
    pub(super) fn dest(&self, q: usize, verb: Verb) -> Dest {
        let (rkey, vaddr) = if verb == Verb::Read {
            (self.keys[q].0, self.src[q].addr())
        } else {
            (self.keys[q].1, self.dst[q].addr())
        };
        Dest {
            qpn: self.qps[q].qp_num(),
            psn: self.psns[q],
            rkey,
            vaddr,
            gid: self.dev.gid(1).expect("gid 1"),
        }
    }

    /// Every QP from INIT to RTS, aimed at the peer's QP of the same index.
    pub(super) fn connect(&self, a: &PerfArgs, mtu: Mtu, remote: &[Remote]) -> CliResult<()> {
        for (q, qp) in self.qps.iter().enumerate() {
            qp.modify(&rtr_attr(a.conn, mtu, &remote[q]))
                .map_err(|e| verr("modify QP to RTR", e))?;
            qp.modify(&rts_attr(a.conn, self.psns[q]))
                .map_err(|e| verr("modify QP to RTS", e))?;
        }
        Ok(())
    }

    /// (page faults, invalidations) over all of this side's MRs.
    pub(super) fn odp_counters(&self) -> (u64, u64) {
        self.mrs
            .iter()
            .map(|m| m.odp_counters())
            .fold((0, 0), |(f, i), c| (f + c.page_faults, i + c.invalidations))
    }
}

/// Per QP a source and a destination buffer; one this side does not use is
/// a page, so that the MRs and the exchange stay uniform.
fn alloc_buffers(a: &PerfArgs, role: Role, lay: &Layout) -> CliResult<(Vec<Region>, Vec<Region>)> {
    let (need_src, need_dst) = match (a.test.verb, a.test.lat, role) {
        (Verb::Write | Verb::Send, true, _) => (true, true),
        (Verb::Write | Verb::Send, false, Role::Client) => (true, false),
        (Verb::Write | Verb::Send, false, Role::Server) => (false, true),
        (Verb::Read, _, Role::Client) => (false, true),
        (Verb::Read, _, Role::Server) => (true, false),
        (Verb::Atomic, _, _) => (false, true),
    };
    let mut src = Vec::new();
    let mut dst = Vec::new();
    for _ in 0..a.qps {
        src.push(Region::new(
            if need_src { lay.buf_len } else { 4096 },
            a.thp,
        )?);
        dst.push(Region::new(
            if need_dst { lay.buf_len } else { 4096 },
            a.thp,
        )?);
    }
    Ok((src, dst))
}

/// The MRs (`--odp`: explicit ODP; `--implicit-odp`: one MR over the whole
/// address space) and, per QP, the keys of its (src, dst).
fn register(
    a: &PerfArgs,
    pd: &Pd,
    src: &[Region],
    dst: &[Region],
) -> CliResult<(Vec<Mr>, Vec<Keys>)> {
    let mut mrs = Vec::new();
    let mut keys = Vec::new();
    match a.odp {
        OdpMode::Implicit => {
            let mr = pd
                .reg_mr(0, u64::MAX, all_access(true))
                .map_err(|e| verr("register the implicit ODP MR", e))?;
            keys = vec![(mr.lkey(), mr.lkey()); a.qps as usize];
            mrs.push(mr);
        }
        m => {
            let odp = m == OdpMode::Explicit;
            for q in 0..a.qps as usize {
                let s = pd
                    .reg_mr(src[q].addr(), src[q].len() as u64, all_access(odp))
                    .map_err(|e| verr("register MR", e))?;
                let d = pd
                    .reg_mr(dst[q].addr(), dst[q].len() as u64, all_access(odp))
                    .map_err(|e| verr("register MR", e))?;
                keys.push((s.lkey(), d.lkey()));
                mrs.push(s);
                mrs.push(d);
            }
        }
    }
    Ok((mrs, keys))
}

/// A QP in INIT.
fn create_qp(a: &PerfArgs, pd: &Pd, scq: &Cq, rcq: &Cq, sq_wr: u32, rq_wr: u32) -> CliResult<Qp> {
    let cap = QpCap {
        max_send_wr: sq_wr,
        max_recv_wr: rq_wr,
        max_send_sge: 1,
        max_recv_sge: 1,
        max_inline_data: 0,
    };
    let qp = pd
        .create_qp(QpInitAttr {
            qp_type: a.conn,
            send_cq: scq.clone(),
            recv_cq: rcq.clone(),
            cap,
            sq_sig_all: false,
            srq: None,
        })
        .map_err(|e| verr("create QP", e))?;
    let init = if a.conn == QpType::Ud {
        QpAttr {
            state: Some(QpState::Init),
            qkey: Some(QKEY),
            port_num: Some(1),
            pkey_index: Some(0),
            ..Default::default()
        }
    } else {
        QpAttr {
            state: Some(QpState::Init),
            access: Some(all_access(false)),
            port_num: Some(1),
            pkey_index: Some(0),
            ..Default::default()
        }
    };
    qp.modify(&init).map_err(|e| verr("modify QP to INIT", e))?;
    Ok(qp)
}

fn rtr_attr(conn: QpType, mtu: Mtu, r: &Remote) -> QpAttr {
    match conn {
        // Workaround: the library checks UD sends against the QP's path
        // MTU (default 1024) instead of the port's active MTU.
        QpType::Ud => QpAttr {
            state: Some(QpState::Rtr),
            path_mtu: Some(mtu),
            ..Default::default()
        },
        QpType::Uc => QpAttr {
            state: Some(QpState::Rtr),
            path_mtu: Some(mtu),
            dest_qp_num: Some(r.qpn),
            rq_psn: Some(r.psn),
            dgid: Some(r.gid),
            ..Default::default()
        },
        // The perf tool does not run XRC (`parse_conn` has no name for it).
        QpType::Rc | QpType::XrcSend | QpType::XrcRecv => QpAttr {
            state: Some(QpState::Rtr),
            path_mtu: Some(mtu),
            dest_qp_num: Some(r.qpn),
            rq_psn: Some(r.psn),
            dgid: Some(r.gid),
            max_dest_rd_atomic: Some(OUTSTANDING_READS),
            min_rnr_timer: Some(1),
            ..Default::default()
        },
    }
}

fn rts_attr(conn: QpType, sq_psn: u32) -> QpAttr {
    match conn {
        QpType::Rc => QpAttr {
            state: Some(QpState::Rts),
            sq_psn: Some(sq_psn),
            timeout: Some(14),
            retry_cnt: Some(7),
            rnr_retry: Some(7),
            max_rd_atomic: Some(OUTSTANDING_READS),
            ..Default::default()
        },
        _ => QpAttr {
            state: Some(QpState::Rts),
            sq_psn: Some(sq_psn),
            ..Default::default()
        },
    }
}
