//! Devices, connected QP pairs, buffers and completions, through the
//! device's public verbs API (`soft_rdma::verbs`).

use soft_rdma::transport::Link;
use soft_rdma::verbs::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A device with its PD and one CQ used for both directions.
pub struct Node {
    pub dev: Device,
    pub pd: Pd,
    pub cq: Cq,
}

impl Node {
    /// A device from `Device::open` (UDP, `SOFTRDMA_*` settings apply) with
    /// a CQ of 4096.
    pub fn open() -> Node {
        Node::of(Device::open().expect("open device"), 4096)
    }

    /// A device on `link` (a hub's, a fault or pcap wrapper…) with a CQ of
    /// `cq_depth`.
    pub fn on_link(link: Arc<dyn Link>, cq_depth: usize) -> Node {
        Node::of(Device::with_link(link), cq_depth)
    }

    /// A device on a loopback hub's port at `addr` with a CQ of `cq_depth`.
    pub fn on_hub(
        hub: &Arc<soft_rdma::transport::Hub>,
        addr: std::net::SocketAddr,
        cq_depth: usize,
    ) -> Node {
        Node::on_link(Arc::new(hub.link(addr).expect("hub port")), cq_depth)
    }

    /// `dev` with a new PD and a CQ of `cq_depth`.
    pub fn of(dev: Device, cq_depth: usize) -> Node {
        let pd = dev.alloc_pd();
        let cq = Cq::new(cq_depth, None).expect("create CQ");
        Node { dev, pd, cq }
    }
}

/// [`Node::open`].
pub fn node() -> Node {
    Node::open()
}

/// Every remote access and local write.
pub fn all_access() -> Access {
    Access::LOCAL_WRITE | Access::REMOTE_WRITE | Access::REMOTE_READ | Access::REMOTE_ATOMIC
}

/// The QP capacities most tests use: 1024 WRs each way, 4 SGEs, 128 bytes
/// inline.
pub fn cap() -> QpCap {
    QpCap {
        max_send_wr: 1024,
        max_recv_wr: 1024,
        max_send_sge: 4,
        max_recv_sge: 4,
        max_inline_data: 128,
    }
}

/// Post a signaled RDMA WRITE of `sge` to `(remote_addr, rkey)`.
pub fn write(qp: &Qp, wr_id: u64, sge: Sge, remote_addr: u64, rkey: u32) {
    qp.post_send(&[SendWr {
        wr_id,
        sg_list: &[sge],
        op: SendOp::Write { remote_addr, rkey },
        flags: signaled(),
        ud: None,
    }])
    .unwrap();
}

/// Send flags with only `signaled`.
pub fn signaled() -> SendFlags {
    SendFlags {
        signaled: true,
        ..Default::default()
    }
}

/// How a test's QPs are made and brought to RTS. [`QpConfig::new`] holds the
/// common values; each field says which attribute it sets. One PSN serves
/// both directions (`sq_psn` of one side is `rq_psn` of the other).
#[derive(Clone, Debug)]
pub struct QpConfig {
    pub qp_type: QpType,
    pub cap: QpCap,
    /// RC/UC: `qp_access_flags` (INIT).
    pub access: Access,
    /// UD: `qkey` (INIT).
    pub qkey: u32,
    /// RC/UC: `path_mtu` (RTR).
    pub mtu: Mtu,
    /// `sq_psn` (RTS) and, RC/UC, `rq_psn` (RTR).
    pub psn: u32,
    /// `max_rd_atomic` (RTS) and, RC/UC, `max_dest_rd_atomic` (RTR);
    /// `None` leaves the device's defaults.
    pub rd_atomic: Option<u8>,
    /// RC/UC: `min_rnr_timer` (RTR); `None` leaves the device's default.
    pub min_rnr_timer: Option<u8>,
    /// `timeout` (RTS); `None` leaves the device's default.
    pub timeout: Option<u8>,
    /// `retry_cnt` (RTS); `None` leaves the device's default.
    pub retry_cnt: Option<u8>,
    /// `rnr_retry` (RTS); `None` leaves the device's default.
    pub rnr_retry: Option<u8>,
}

impl QpConfig {
    /// QPs of `qp_type` with [`cap`], [`all_access`], qkey 0x1111, MTU 1024,
    /// PSN 0x10, 16 reads/atomics each way, min RNR timer 1, timeout 10
    /// (4.096 µs × 2^10 ≈ 4 ms), 7 retries and 7 RNR retries.
    pub fn new(qp_type: QpType) -> QpConfig {
        QpConfig {
            qp_type,
            cap: cap(),
            access: all_access(),
            qkey: 0x1111,
            mtu: Mtu::M1024,
            psn: 0x10,
            rd_atomic: Some(16),
            min_rnr_timer: Some(1),
            timeout: Some(10),
            retry_cnt: Some(7),
            rnr_retry: Some(7),
        }
    }

    /// Only what the transitions require: [`QpConfig::new`]'s capacities,
    /// access, qkey and MTU, PSN 0, and the device's defaults for the rest
    /// (reads/atomics in flight, timers, retries).
    pub fn minimal(qp_type: QpType) -> QpConfig {
        QpConfig {
            psn: 0,
            rd_atomic: None,
            min_rnr_timer: None,
            timeout: None,
            retry_cnt: None,
            rnr_retry: None,
            ..QpConfig::new(qp_type)
        }
    }

    /// A QP in RESET on `pd`, with `cq` for sends and receives.
    pub fn create(&self, pd: &Pd, cq: &Cq) -> Qp {
        pd.create_qp(QpInitAttr {
            qp_type: self.qp_type,
            send_cq: cq.clone(),
            recv_cq: cq.clone(),
            cap: self.cap,
            sq_sig_all: false,
            srq: None,
        })
        .expect("create QP")
    }

    /// RESET → INIT → RTR → RTS; RC/UC connected to QP `peer_qpn` at `dgid`
    /// (a UD QP ignores both).
    pub fn bring_up(&self, qp: &Qp, peer_qpn: u32, dgid: Gid) {
        let ud = self.qp_type == QpType::Ud;
        qp.modify(&QpAttr {
            state: Some(QpState::Init),
            access: (!ud).then_some(self.access),
            qkey: ud.then_some(self.qkey),
            port_num: Some(1),
            pkey_index: Some(0),
            ..Default::default()
        })
        .expect("QP to INIT");
        let rtr = if ud {
            QpAttr {
                state: Some(QpState::Rtr),
                ..Default::default()
            }
        } else {
            QpAttr {
                state: Some(QpState::Rtr),
                path_mtu: Some(self.mtu),
                dest_qp_num: Some(peer_qpn),
                rq_psn: Some(self.psn),
                dgid: Some(dgid),
                max_dest_rd_atomic: self.rd_atomic,
                min_rnr_timer: self.min_rnr_timer,
                ..Default::default()
            }
        };
        qp.modify(&rtr).expect("QP to RTR");
        qp.modify(&QpAttr {
            state: Some(QpState::Rts),
            sq_psn: Some(self.psn),
            timeout: self.timeout,
            retry_cnt: self.retry_cnt,
            rnr_retry: self.rnr_retry,
            max_rd_atomic: self.rd_atomic,
            ..Default::default()
        })
        .expect("QP to RTS");
    }

    /// A QP on each node, connected to each other (RC/UC) and in RTS.
    pub fn connect(&self, a: &Node, b: &Node) -> (Qp, Qp) {
        let (qa, qb) = (self.create(&a.pd, &a.cq), self.create(&b.pd, &b.cq));
        self.bring_up(&qa, qb.qp_num(), b.dev.gid(1).expect("GID 1"));
        self.bring_up(&qb, qa.qp_num(), a.dev.gid(1).expect("GID 1"));
        (qa, qb)
    }
}

/// A connected pair of QPs of `t` with [`QpConfig::new`]'s values.
pub fn connect(a: &Node, b: &Node, t: QpType) -> (Qp, Qp) {
    QpConfig::new(t).connect(a, b)
}

/// How [`wait_with`] polls.
#[derive(Clone, Copy, Debug)]
pub struct Wait {
    /// Fail once no completion came for this long since the start.
    pub limit: Duration,
    /// Take no more than the `n` asked for (otherwise every completion ready
    /// when the `n`th arrives is returned too).
    pub exact: bool,
    /// Every completion must be successful.
    pub ok: bool,
    /// Between empty polls: sleep this long (`None`: yield the CPU).
    pub pause: Option<Duration>,
}

impl Default for Wait {
    /// 10 s, not exact, any status, yielding between polls: [`wait`].
    fn default() -> Wait {
        Wait {
            limit: Duration::from_secs(10),
            exact: false,
            ok: false,
            pause: None,
        }
    }
}

/// Poll `cq` until `n` completions arrived; on a timeout or (with `how.ok`)
/// an unsuccessful one, fail with `why(completions so far)`.
pub fn wait_with(cq: &Cq, n: usize, how: Wait, why: &dyn Fn(&[Wc]) -> String) -> Vec<Wc> {
    let mut out = Vec::with_capacity(n);
    let t = Instant::now();
    let mut buf = [Wc::EMPTY; 32];
    while out.len() < n {
        let room = if how.exact {
            (n - out.len()).min(buf.len())
        } else {
            buf.len()
        };
        let k = cq.poll(&mut buf[..room]);
        if how.ok {
            for w in &buf[..k] {
                assert_eq!(w.status, WcStatus::Success, "{w:?}\n{}", why(&out));
            }
        }
        out.extend_from_slice(&buf[..k]);
        if k == 0 {
            assert!(
                t.elapsed() < how.limit,
                "timed out after {:?} with {} of {n} completions\n{}",
                how.limit,
                out.len(),
                why(&out)
            );
            match how.pause {
                Some(d) => std::thread::sleep(d),
                None => std::thread::yield_now(),
            }
        }
    }
    out
}

/// Poll `cq` until `n` completions arrived (or 10 s passed: a failure).
pub fn wait(cq: &Cq, n: usize) -> Vec<Wc> {
    wait_with(cq, n, Wait::default(), &|c| format!("{c:?}"))
}

/// A heap buffer whose address MRs register (a `Vec` never moves while it
/// is not resized).
pub struct Buf(pub Vec<u8>);

impl Buf {
    /// `len` bytes, byte `i` being `fill(i)`.
    pub fn new(len: usize, fill: impl Fn(usize) -> u8) -> Buf {
        Buf((0..len).map(fill).collect())
    }

    /// The first byte's address.
    pub fn addr(&self) -> u64 {
        self.0.as_ptr() as u64
    }

    /// `len` bytes at `off`, through `mr`.
    pub fn sge(&self, mr: &Mr, off: usize, len: usize) -> Sge {
        Sge {
            addr: self.addr() + off as u64,
            length: len as u32,
            lkey: mr.lkey(),
        }
    }
}
