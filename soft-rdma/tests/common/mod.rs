//! Shared set-up for the device tests: devices, connected QP pairs, buffers.
#![allow(dead_code)]

use soft_rdma::verbs::*;
use std::time::{Duration, Instant};

/// The `Link` methods a test's link wrapper (a field `inner`) forwards
/// unchanged: everything but `send` and `recv`, which the wrapper writes.
#[macro_export]
macro_rules! forward_rest_of_link {
    () => {
        fn local(&self) -> std::net::SocketAddr {
            self.inner.local()
        }
        fn wait(&self, timeout: Option<std::time::Duration>) -> std::io::Result<()> {
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
        fn stats(&self) -> soft_rdma::transport::LinkStats {
            self.inner.stats()
        }
        fn mtu(&self) -> Option<u32> {
            self.inner.mtu()
        }
        fn fault_stats(&self) -> Option<soft_rdma::transport::FaultStats> {
            self.inner.fault_stats()
        }
    };
}

/// A device with its PD and one CQ used for both directions.
pub struct Node {
    pub dev: Device,
    pub pd: Pd,
    pub cq: Cq,
}

pub fn node() -> Node {
    let dev = Device::open().expect("open device");
    let pd = dev.alloc_pd();
    let cq = Cq::new(4096, None).unwrap();
    Node { dev, pd, cq }
}

pub fn cap() -> QpCap {
    QpCap {
        max_send_wr: 1024,
        max_recv_wr: 1024,
        max_send_sge: 4,
        max_recv_sge: 4,
        max_inline_data: 128,
    }
}

pub fn all_access() -> Access {
    Access::LOCAL_WRITE | Access::REMOTE_WRITE | Access::REMOTE_READ | Access::REMOTE_ATOMIC
}

/// Create and connect a pair of QPs of `t` (RESET → INIT → RTR → RTS).
pub fn connect(a: &Node, b: &Node, t: QpType) -> (Qp, Qp) {
    let qa =
        a.pd.create_qp(QpInitAttr {
            qp_type: t,
            send_cq: a.cq.clone(),
            recv_cq: a.cq.clone(),
            cap: cap(),
            sq_sig_all: false,
            srq: None,
        })
        .unwrap();
    let qb =
        b.pd.create_qp(QpInitAttr {
            qp_type: t,
            send_cq: b.cq.clone(),
            recv_cq: b.cq.clone(),
            cap: cap(),
            sq_sig_all: false,
            srq: None,
        })
        .unwrap();
    for (q, peer, dev) in [(&qa, &qb, &b.dev), (&qb, &qa, &a.dev)] {
        let init = if t == QpType::Ud {
            QpAttr {
                state: Some(QpState::Init),
                qkey: Some(0x1111),
                port_num: Some(1),
                pkey_index: Some(0),
                ..Default::default()
            }
        } else {
            QpAttr {
                state: Some(QpState::Init),
                access: Some(all_access()),
                port_num: Some(1),
                pkey_index: Some(0),
                ..Default::default()
            }
        };
        q.modify(&init).unwrap();
        let rtr = if t == QpType::Ud {
            QpAttr {
                state: Some(QpState::Rtr),
                ..Default::default()
            }
        } else {
            QpAttr {
                state: Some(QpState::Rtr),
                path_mtu: Some(Mtu::M1024),
                dest_qp_num: Some(peer.qp_num()),
                rq_psn: Some(0x10),
                dgid: Some(dev.gid(1).unwrap()),
                max_dest_rd_atomic: Some(16),
                min_rnr_timer: Some(1),
                ..Default::default()
            }
        };
        q.modify(&rtr).unwrap();
        let rts = QpAttr {
            state: Some(QpState::Rts),
            sq_psn: Some(0x10),
            timeout: Some(10),
            retry_cnt: Some(7),
            rnr_retry: Some(7),
            max_rd_atomic: Some(16),
            ..Default::default()
        };
        q.modify(&rts).unwrap();
    }
    (qa, qb)
}

/// Poll `cq` until `n` completions arrived (or 10 s passed: a failure).
pub fn wait(cq: &Cq, n: usize) -> Vec<Wc> {
    let mut out = Vec::new();
    let t = Instant::now();
    let mut buf = [Wc::EMPTY; 16];
    while out.len() < n {
        let k = cq.poll(&mut buf);
        out.extend_from_slice(&buf[..k]);
        if k == 0 {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "timed out with {} of {n} completions: {out:?}",
                out.len()
            );
            std::thread::yield_now();
        }
    }
    out
}

/// A page-aligned heap buffer (its address is what MRs register).
pub struct Buf(pub Vec<u8>);

impl Buf {
    pub fn new(len: usize, fill: impl Fn(usize) -> u8) -> Buf {
        Buf((0..len).map(fill).collect())
    }
    pub fn addr(&self) -> u64 {
        self.0.as_ptr() as u64
    }
    pub fn sge(&self, mr: &Mr, off: usize, len: usize) -> Sge {
        Sge {
            addr: self.addr() + off as u64,
            length: len as u32,
            lkey: mr.lkey(),
        }
    }
}

pub fn signaled() -> SendFlags {
    SendFlags {
        signaled: true,
        ..Default::default()
    }
}
