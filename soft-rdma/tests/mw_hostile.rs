//! Memory windows against a raw peer (`attacker`): a multi-packet WRITE
//! under way through a type 2 window that is invalidated or deallocated
//! between its packets writes nothing more — its next packet is NAKed
//! (remote access error) — as an MR's deregistration fences a message.

mod attacker;
use attacker::*;
use soft_rdma::verbs::*;
use soft_rdma::wire::{Ext, NakCode, Op, Reth};
use test_support::verbs::{signaled, wait};

fn post(qp: &Qp, op: SendOp) {
    qp.post_send(&[SendWr {
        wr_id: 1,
        sg_list: &[],
        op,
        flags: signaled(),
        ud: None,
    }])
    .unwrap();
}

#[test]
fn a_write_under_way_stops_when_its_window_goes() {
    for how in ["LOCAL_INV", "dealloc"] {
        let mut env = Env::new(61);
        let len = 4 * PAGE;
        let mem = Canaried::new(len, 5);
        let access = Access::LOCAL_WRITE | Access::MW_BIND;
        let mr = env.pd.reg_mr(mem.addr(), len as u64, access).unwrap();
        let (qp, peer) = env.qp(QpType::Rc, all_access());
        let mw = env.pd.alloc_mw(MwType::Two).unwrap();
        let k = (mw.rkey() & !0xff) | (mw.rkey().wrapping_add(1) & 0xff);
        post(
            &qp,
            SendOp::BindMw(MwBind {
                mw_rkey: mw.rkey(),
                new_rkey: k,
                mr_lkey: mr.lkey(),
                addr: mem.addr(),
                length: len as u64,
                access: Access::REMOTE_WRITE,
            }),
        );
        assert_eq!(wait(&env.cq, 1)[0].status, WcStatus::Success, "{how}: bind");
        // The first of three packets is written.
        let reth = Ext::Reth(Reth {
            va: mem.addr(),
            rkey: k,
            len: 3 * MTU_BYTES as u32,
        });
        let first = env.build(
            rc(Op::WriteFirst),
            qp.qp_num(),
            EPSN,
            reth,
            &[0xaa; MTU_BYTES],
        );
        env.send(&first);
        assert!(
            env.sync().is_empty(),
            "{how}: a first packet is not answered"
        );
        assert!(
            mem.region()[..MTU_BYTES].iter().all(|&b| b == 0xaa),
            "{how}"
        );
        // The window goes; the second packet writes nothing.
        let mut mw = Some(mw);
        if how == "LOCAL_INV" {
            post(&qp, SendOp::LocalInv(k));
            let wc = wait(&env.cq, 1)[0];
            assert_eq!(
                (wc.status, wc.opcode),
                (WcStatus::Success, WcOpcode::LocalInv)
            );
        } else {
            drop(mw.take());
        }
        let before = mem.snapshot();
        let psn = psn_add(EPSN, 1);
        let middle = env.build(
            rc(Op::WriteMiddle),
            qp.qp_num(),
            psn,
            Ext::None,
            &[0xbb; MTU_BYTES],
        );
        env.send(&middle);
        let replies = env.sync();
        assert_nak(&replies, peer, psn, NakCode::RemoteAccessError, how);
        mem.assert_unchanged(&before, how);
    }
}
