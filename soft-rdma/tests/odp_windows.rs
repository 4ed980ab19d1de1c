//! Nothing allocates under an ODP window (issue 19, finding 8): the
//! transmit queue is sized before a window onto an MR opens, on every path
//! that builds packets from memory — READ responses (responder), SEND and
//! WRITE segments and UD datagrams (requester). A queue that would grow
//! under an open window fails a debug assertion (`qp/tx.rs`), so each path
//! is driven here with a cold queue: a fresh device (the receive path's
//! queue) and a fresh thread (a poster's queue).

mod attacker;
use attacker::{all_access as atk_access, rc, Canaried, Env, EPSN, MTU_BYTES};
use soft_rdma::transport::Hub;
use soft_rdma::verbs::*;
use soft_rdma::wire::{Ext, Op, Reth};
use std::sync::Arc;
use test_support::verbs::{all_access, connect, signaled, wait, Buf, Node};

const ODP: Access = Access::ON_DEMAND;

#[test]
fn read_responses_from_odp_memory_with_a_cold_queue() {
    let mut env = Env::new(40);
    let (qp, _) = env.qp(QpType::Rc, atk_access());
    let len = 64 << 10;
    let mem = Canaried::new(len, 9);
    let mr = env
        .pd
        .reg_mr(mem.addr(), len as u64, Access::REMOTE_READ | ODP)
        .unwrap();
    let req = env.build(
        rc(Op::ReadRequest),
        qp.qp_num(),
        EPSN,
        Ext::Reth(Reth {
            va: mem.addr(),
            rkey: mr.rkey(),
            len: len as u32,
        }),
        &[],
    );
    env.send(&req);
    // The receive thread would have panicked (and the probe gone unanswered).
    let r = env.sync();
    assert_eq!(r.len(), len / MTU_BYTES, "every response");
    let got: Vec<u8> = r.iter().flat_map(|p| p.payload.clone()).collect();
    assert_eq!(got, mem.region());
}

fn hub_node(hub: &Arc<Hub>, last: u8) -> Node {
    Node::on_hub(hub, ([127, 33, 0, last], 4791).into(), 256)
}

/// Post `wr` from a new thread: its transmit queue starts empty.
fn post_cold(qp: &Qp, wr: SendWr<'_>) {
    std::thread::scope(|s| {
        s.spawn(|| qp.post_send(&[wr]).unwrap())
            .join()
            .expect("posting panicked")
    });
}

#[test]
fn sends_and_writes_from_odp_memory_with_a_cold_queue() {
    let hub = Hub::new();
    let (a, b) = (hub_node(&hub, 1), hub_node(&hub, 2));
    let (qa, qb) = connect(&a, &b, QpType::Rc);
    let len = 64 << 10;
    let src = Buf::new(len, |i| (i * 7) as u8);
    let dst = Buf::new(len, |_| 0);
    let mra =
        a.pd.reg_mr(src.addr(), len as u64, Access::LOCAL_WRITE | ODP)
            .unwrap();
    let mrb =
        b.pd.reg_mr(dst.addr(), len as u64, all_access() | ODP)
            .unwrap();
    post_cold(
        &qa,
        SendWr {
            wr_id: 1,
            sg_list: &[src.sge(&mra, 0, len)],
            op: SendOp::Write {
                remote_addr: dst.addr(),
                rkey: mrb.rkey(),
            },
            flags: signaled(),
            ud: None,
        },
    );
    assert_eq!(wait(&a.cq, 1)[0].status, WcStatus::Success);
    assert_eq!(dst.0, src.0);
    qb.post_recv(&[RecvWr {
        wr_id: 2,
        sg_list: &[dst.sge(&mrb, 0, len)],
    }])
    .unwrap();
    post_cold(
        &qa,
        SendWr {
            wr_id: 3,
            sg_list: &[src.sge(&mra, 0, len)],
            op: SendOp::Send,
            flags: signaled(),
            ud: None,
        },
    );
    assert_eq!(wait(&a.cq, 1)[0].status, WcStatus::Success);
    assert_eq!(wait(&b.cq, 1)[0].status, WcStatus::Success);

    let (ua, ub) = connect(&a, &b, QpType::Ud);
    ub.post_recv(&[RecvWr {
        wr_id: 4,
        sg_list: &[dst.sge(&mrb, 0, 2048)],
    }])
    .unwrap();
    post_cold(
        &ua,
        SendWr {
            wr_id: 5,
            sg_list: &[src.sge(&mra, 0, 1000)],
            op: SendOp::Send,
            flags: signaled(),
            ud: Some(UdDest {
                ah: a.pd.create_ah(b.dev.gid(1).unwrap()),
                remote_qpn: ub.qp_num(),
                remote_qkey: 0x1111,
            }),
        },
    );
    assert_eq!(wait(&a.cq, 1)[0].status, WcStatus::Success);
    assert_eq!(wait(&b.cq, 1)[0].status, WcStatus::Success);
    assert_eq!(dst.0[40..1040], src.0[..1000]);
}
