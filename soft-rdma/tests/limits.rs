//! The device's limits, as `ibv_query_device` advertises them, each enforced
//! with the errno rxe / rdma-core providers return:
//!
//! | limit | beyond it | source |
//! |---|---|---|
//! | `max_qp`, `max_mr` (objects alive) | create/register: `EINVAL` | rxe's object pools refuse an element over their maximum with `-EINVAL` |
//! | `max_cqe` (and `cqe` 0) | `EINVAL` | rxe_cq_chk_attr |
//! | QP caps: `max_send_wr`/`max_recv_wr` > `max_qp_wr`, `max_*_sge` > `max_sge`, `max_inline_data` > the device's | `EINVAL` | rxe_qp_chk_cap |
//! | `max_rd_atomic` > `max_qp_init_rd_atom`, `max_dest_rd_atomic` > `max_qp_rd_atom` | modify: `EINVAL`, QP unchanged | rxe_qp_chk_attr |
//! | a WR past the send/receive queue's size | post: `ENOMEM`, `bad_wr` = it, the earlier ones posted | rxe post_one_send / post_one_recv (queue full) |
//! | more READs than `max_rd_atomic` | queued, not failed: at most `max_rd_atomic` on the wire | IBA 9.5 (initiator depth) |

use soft_rdma::transport::{loopback::Hub, Link, Outgoing, RecvBatch};
use soft_rdma::verbs::*;
use soft_rdma::wire::{Op, PacketRepr};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use test_support::verbs::{all_access, cap, connect, node, signaled, wait, Buf, Node};

fn qp_attr(cq: &Cq, cap: QpCap) -> QpInitAttr {
    QpInitAttr {
        qp_type: QpType::Rc,
        send_cq: cq.clone(),
        recv_cq: cq.clone(),
        cap,
        sq_sig_all: false,
        srq: None,
    }
}

#[test]
fn device_attributes_advertise_the_limits_enforced() {
    let n = node();
    let a = n.dev.attr();
    assert_eq!(a.max_qp, 1 << 16);
    assert_eq!(a.max_mr, 1 << 16);
    assert_eq!(a.max_cqe, 1 << 16);
    assert_eq!(a.max_qp_wr, 1 << 14);
    assert_eq!(a.max_sge, 32);
    assert_eq!(a.max_inline, 256);
    assert_eq!((a.max_qp_rd_atom, a.max_qp_init_rd_atom), (128, 128));
}

#[test]
fn cq_depth_above_max_cqe_or_zero_is_einval() {
    let n = node();
    let max = n.dev.attr().max_cqe;
    assert_eq!(Cq::new(max + 1, None).err(), Some(Errno::EINVAL));
    assert_eq!(Cq::new(0, None).err(), Some(Errno::EINVAL));
    assert_eq!(Cq::new(max, None).unwrap().depth(), max);
}

#[test]
fn qp_caps_above_the_device_limits_are_einval() {
    let n = node();
    let a = n.dev.attr();
    let base = cap();
    let over = [
        QpCap {
            max_send_wr: a.max_qp_wr + 1,
            ..base
        },
        QpCap {
            max_recv_wr: a.max_qp_wr + 1,
            ..base
        },
        QpCap {
            max_send_sge: a.max_sge + 1,
            ..base
        },
        QpCap {
            max_recv_sge: a.max_sge + 1,
            ..base
        },
        QpCap {
            max_inline_data: a.max_inline + 1,
            ..base
        },
    ];
    for c in over {
        assert_eq!(
            n.pd.create_qp(qp_attr(&n.cq, c)).err(),
            Some(Errno::EINVAL),
            "{c:?}"
        );
    }
    // Exactly at the limits: created.
    let at = QpCap {
        max_send_wr: a.max_qp_wr,
        max_recv_wr: a.max_qp_wr,
        max_send_sge: a.max_sge,
        max_recv_sge: a.max_sge,
        max_inline_data: a.max_inline,
    };
    assert_eq!(n.pd.create_qp(qp_attr(&n.cq, at)).unwrap().cap(), at);
}

#[test]
fn more_qps_than_max_qp_is_einval_until_one_is_destroyed() {
    let n = node();
    let max = n.dev.attr().max_qp;
    let small = QpCap {
        max_send_wr: 1,
        max_recv_wr: 1,
        max_send_sge: 1,
        max_recv_sge: 1,
        max_inline_data: 0,
    };
    let mut qps: Vec<Qp> = (0..max)
        .map(|i| {
            n.pd.create_qp(qp_attr(&n.cq, small))
                .unwrap_or_else(|e| panic!("QP {i} of {max}: {e:?}"))
        })
        .collect();
    assert_eq!(
        n.pd.create_qp(qp_attr(&n.cq, small)).err(),
        Some(Errno::EINVAL)
    );
    qps.pop();
    let again = n.pd.create_qp(qp_attr(&n.cq, small)).unwrap();
    let mut nums: Vec<u32> = qps.iter().map(Qp::qp_num).collect();
    nums.push(again.qp_num());
    nums.sort_unstable();
    nums.dedup();
    assert_eq!(nums.len(), max, "QP numbers are unique");
}

#[test]
fn more_mrs_than_max_mr_is_einval_until_one_is_deregistered() {
    let n = node();
    let max = n.dev.attr().max_mr;
    // One page registered over and over (ODP: nothing pinned per MR).
    let buf = Buf::new(4096, |_| 0);
    let access = all_access() | Access::ON_DEMAND;
    let mut mrs: Vec<Mr> = (0..max)
        .map(|i| {
            n.pd.reg_mr(buf.addr(), 4096, access)
                .unwrap_or_else(|e| panic!("MR {i} of {max}: {e:?}"))
        })
        .collect();
    assert_eq!(
        n.pd.reg_mr(buf.addr(), 4096, access).err(),
        Some(Errno::EINVAL)
    );
    mrs.pop();
    let again = n.pd.reg_mr(buf.addr(), 4096, access).unwrap();
    assert!(mrs.iter().all(|m| m.lkey() != again.lkey()));
}

#[test]
fn rd_atomic_depths_above_the_device_limit_are_einval_and_change_nothing() {
    let a = node();
    let b = node();
    let (qa, _qb) = connect(&a, &b, QpType::Rc);
    let max = a.dev.attr().max_qp_init_rd_atom;
    for attr in [
        QpAttr {
            state: Some(QpState::Rts),
            max_rd_atomic: Some(max + 1),
            ..Default::default()
        },
        QpAttr {
            state: Some(QpState::Rts),
            max_dest_rd_atomic: Some(max + 1),
            ..Default::default()
        },
        // A state change with a bad depth is refused whole.
        QpAttr {
            state: Some(QpState::Sqd),
            max_rd_atomic: Some(255),
            ..Default::default()
        },
    ] {
        assert_eq!(qa.modify(&attr).err(), Some(Errno::EINVAL), "{attr:?}");
        assert_eq!(qa.state(), QpState::Rts);
    }
    qa.modify(&QpAttr {
        state: Some(QpState::Rts),
        max_rd_atomic: Some(max),
        ..Default::default()
    })
    .unwrap();
}

#[test]
fn posting_past_the_queue_size_is_enomem_for_that_wr() {
    let a = node();
    let b = node();
    let (qa, _qb) = connect(&a, &b, QpType::Rc);
    let max = cap().max_send_wr as usize;
    // SQD holds what is posted: the send queue fills and stays full.
    qa.modify(&QpAttr {
        state: Some(QpState::Sqd),
        ..Default::default()
    })
    .unwrap();
    let wr = |i: usize| SendWr {
        wr_id: i as u64,
        sg_list: &[],
        op: SendOp::Send,
        flags: signaled(),
        ud: None,
    };
    // Per WR (rxe validate_send_wr): more SGEs than max_send_sge, or inline
    // data beyond max_inline_data, is EINVAL, and nothing is queued.
    let buf = Buf::new(4096, |_| 1);
    let mr = a.pd.reg_mr(buf.addr(), 4096, all_access()).unwrap();
    let sges: Vec<Sge> = (0..=cap().max_send_sge as usize)
        .map(|i| buf.sge(&mr, i, 1))
        .collect();
    let too_many = SendWr {
        sg_list: &sges,
        ..wr(0)
    };
    assert_eq!(qa.post_send(&[too_many]), Err((0, Errno::EINVAL)));
    let big = [buf.sge(&mr, 0, cap().max_inline_data as usize + 1)];
    let too_long = SendWr {
        sg_list: &big,
        flags: SendFlags {
            inline: true,
            ..signaled()
        },
        ..wr(0)
    };
    assert_eq!(qa.post_send(&[wr(0), too_long]), Err((1, Errno::EINVAL)));
    // wr(0) before it was posted: one slot used.
    let wrs: Vec<SendWr<'_>> = (1..max + 2).map(wr).collect();
    assert_eq!(qa.post_send(&wrs), Err((max - 1, Errno::ENOMEM)));
    assert_eq!(qa.post_send(&[wr(0)]), Err((0, Errno::ENOMEM)));
    // The first `max` were posted: they go once the QP is back in RTS.
    let _ = a.dev.get_async_event(); // SQ drained (nothing was in flight)
    let rwrs: Vec<RecvWr<'_>> = (0..max)
        .map(|i| RecvWr {
            wr_id: i as u64,
            sg_list: &[],
        })
        .collect();
    _qb.post_recv(&rwrs).unwrap();
    qa.modify(&QpAttr {
        state: Some(QpState::Rts),
        ..Default::default()
    })
    .unwrap();
    let c = wait(&a.cq, max);
    assert!(c.iter().all(|w| w.status == WcStatus::Success), "{c:?}");
    assert_eq!(c.len(), max);

    // The receive queue likewise (a fresh QP in INIT).
    let q = a.pd.create_qp(qp_attr(&a.cq, cap())).unwrap();
    q.modify(&QpAttr {
        state: Some(QpState::Init),
        access: Some(all_access()),
        ..Default::default()
    })
    .unwrap();
    let rmax = cap().max_recv_wr as usize;
    let rwrs: Vec<RecvWr<'_>> = (0..rmax + 1)
        .map(|i| RecvWr {
            wr_id: i as u64,
            sg_list: &[],
        })
        .collect();
    assert_eq!(q.post_recv(&rwrs), Err((rmax, Errno::ENOMEM)));
}

/// Counts READ requests A sends minus the READ messages whose last
/// response A received: the READs on the wire.
struct ReadCounter {
    inner: Box<dyn Link>,
    outstanding: AtomicI64,
    max: AtomicI64,
}

impl Link for ReadCounter {
    fn send(&self, batch: &[Outgoing<'_>]) -> std::io::Result<usize> {
        for o in batch {
            if let Ok((r, _)) = PacketRepr::parse(o.data) {
                if r.bth.opcode.op() == Op::ReadRequest {
                    let now = self.outstanding.fetch_add(1, Ordering::SeqCst) + 1;
                    self.max.fetch_max(now, Ordering::SeqCst);
                }
            }
        }
        self.inner.send(batch)
    }
    fn recv(&self, batch: &mut RecvBatch, timeout: Option<Duration>) -> std::io::Result<usize> {
        let n = self.inner.recv(batch, timeout)?;
        for (_, d) in batch.iter() {
            if let Ok((r, _)) = PacketRepr::parse(d) {
                if matches!(r.bth.opcode.op(), Op::ReadRespLast | Op::ReadRespOnly) {
                    self.outstanding.fetch_sub(1, Ordering::SeqCst);
                }
            }
        }
        Ok(n)
    }
    test_support::forward_rest_of_link!();
}

#[test]
fn more_reads_than_max_rd_atomic_are_queued_not_failed() {
    const N: usize = 40;
    const LEN: usize = 16 << 10; // 16 responses each at MTU 1024
    const DEPTH: u8 = 2;
    let hub = Hub::new();
    let counter = Arc::new(ReadCounter {
        inner: Box::new(hub.link(SocketAddr::from(([127, 9, 1, 1], 4791))).unwrap()),
        outstanding: AtomicI64::new(0),
        max: AtomicI64::new(0),
    });
    let a = Node::on_link(counter.clone(), 4096);
    let b = Node::on_link(
        Arc::new(hub.link(SocketAddr::from(([127, 9, 1, 2], 4791))).unwrap()),
        4096,
    );
    let (qa, _qb) = connect(&a, &b, QpType::Rc);
    qa.modify(&QpAttr {
        state: Some(QpState::Rts),
        max_rd_atomic: Some(DEPTH),
        // 4.3 s: no timeout resends a request (the count would see it
        // twice; a busy machine made the shared set-up's 4 ms fire).
        timeout: Some(20),
        ..Default::default()
    })
    .unwrap();
    let dst = Buf::new(N * LEN, |_| 0);
    let src = Buf::new(N * LEN, |i| (i * 7 + i / LEN) as u8);
    let lmr =
        a.pd.reg_mr(dst.addr(), dst.0.len() as u64, all_access())
            .unwrap();
    let rmr =
        b.pd.reg_mr(src.addr(), src.0.len() as u64, all_access())
            .unwrap();
    let sges: Vec<Sge> = (0..N).map(|i| dst.sge(&lmr, i * LEN, LEN)).collect();
    let wrs: Vec<SendWr<'_>> = (0..N)
        .map(|i| SendWr {
            wr_id: i as u64,
            sg_list: std::slice::from_ref(&sges[i]),
            op: SendOp::Read {
                remote_addr: src.addr() + (i * LEN) as u64,
                rkey: rmr.rkey(),
            },
            flags: signaled(),
            ud: None,
        })
        .collect();
    // All posted at once: accepted (the queue holds them), none fails.
    qa.post_send(&wrs).unwrap();
    let c = wait(&a.cq, N);
    assert!(c.iter().all(|w| w.status == WcStatus::Success), "{c:?}");
    assert!(dst.0 == src.0, "READ data differs");
    let max = counter.max.load(Ordering::SeqCst);
    assert!(
        (1..=i64::from(DEPTH)).contains(&max),
        "{max} READs were on the wire at once (max_rd_atomic {DEPTH})"
    );
    assert_eq!(counter.outstanding.load(Ordering::SeqCst), 0);
    assert_eq!(a.dev.stats().retransmits, 0, "the count assumes no resends");
}
