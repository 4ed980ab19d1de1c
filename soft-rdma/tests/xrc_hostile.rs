//! XRC against a raw attacker port (the `attacker` helpers): a target QP
//! answers with XRC opcodes; a message whose later packet names another SRQ
//! than its first, or a WRITE naming an SRQ of another PD, is NAKed and
//! counted with nothing delivered or written; packets of the wrong half or
//! transport are dropped and counted.

mod attacker;

use attacker::*;
use soft_rdma::verbs::*;
use soft_rdma::wire::{Ext, NakCode, Op, Opcode, Reth, Syndrome, Transport, XrcExt};

fn xrc(op: Op) -> Opcode {
    Opcode::new(Transport::Xrc, op).unwrap()
}

struct Target {
    xrcd: Xrcd,
    srq_cq: Cq,
    tgt: Qp,
    peer: u32,
}

/// A target QP of a new domain, connected to a made-up initiator at the
/// attacker's address.
fn target(env: &Env, peer: u32) -> Target {
    let xrcd = env.dev.open_xrcd();
    let tgt = xrcd.create_target_qp().unwrap();
    bring_up(&tgt, QpType::XrcRecv, all_access(), peer, env.me);
    Target {
        xrcd,
        srq_cq: Cq::new(64, None).unwrap(),
        tgt,
        peer,
    }
}

fn one_reply(replies: &[Reply], what: &str) -> (Opcode, u32, Option<Syndrome>) {
    assert_eq!(replies.len(), 1, "{what}: {replies:?}");
    let r = &replies[0];
    (r.repr.bth.opcode, r.repr.bth.psn, r.syndrome())
}

#[test]
fn target_answers_with_xrc_opcodes() {
    let mut env = Env::new(40);
    let t = target(&env, 0x00cc_0001);
    let srq = t.xrcd.create_srq(&env.pd, &t.srq_cq, 8, 1, 0).unwrap();
    let mem = Canaried::new(PAGE, 3);
    let mr = env
        .pd
        .reg_mr(mem.addr(), PAGE as u64, all_access())
        .unwrap();
    srq.post_recv(&[RecvWr {
        wr_id: 4,
        sg_list: &[Sge {
            addr: mem.addr(),
            length: 64,
            lkey: mr.lkey(),
        }],
    }])
    .unwrap();
    let pkt = env.build(
        xrc(Op::SendOnly),
        t.tgt.qp_num(),
        EPSN,
        Ext::Xrc(srq.srq_num(), XrcExt::None),
        &[0x5a; 64],
    );
    env.send(&pkt);
    let (op, psn, syn) = one_reply(&env.sync(), "XRC SEND");
    assert_eq!((op, psn), (xrc(Op::Ack), EPSN));
    assert!(matches!(syn, Some(Syndrome::Ack { .. })), "{syn:?}");
    let mut wc = [Wc::EMPTY; 2];
    assert_eq!(t.srq_cq.poll(&mut wc), 1);
    assert_eq!(
        (wc[0].wr_id, wc[0].byte_len, wc[0].qp_num),
        (4, 64, t.tgt.qp_num())
    );
    assert_eq!(&mem.region()[..64], &[0x5a; 64]);
    assert_eq!(t.peer, 0x00cc_0001);
}

/// A SEND whose first packet names SRQ A and whose last names SRQ B: the
/// last is NAKed (invalid request), counted, and B's WQE stays untouched.
#[test]
fn a_message_keeps_to_the_srq_of_its_first_packet() {
    let mut env = Env::new(41);
    let t = target(&env, 0x00cc_0002);
    let a = t.xrcd.create_srq(&env.pd, &t.srq_cq, 8, 1, 0).unwrap();
    let b = t.xrcd.create_srq(&env.pd, &t.srq_cq, 8, 1, 0).unwrap();
    let mem = Canaried::new(2 * PAGE, 4);
    let mr = env
        .pd
        .reg_mr(mem.addr(), 2 * PAGE as u64, all_access())
        .unwrap();
    for (s, off) in [(&a, 0), (&b, PAGE as u64)] {
        s.post_recv(&[RecvWr {
            wr_id: off,
            sg_list: &[Sge {
                addr: mem.addr() + off,
                length: PAGE as u32,
                lkey: mr.lkey(),
            }],
        }])
        .unwrap();
    }
    let before = mem.snapshot();
    let first = env.build(
        xrc(Op::SendFirst),
        t.tgt.qp_num(),
        EPSN,
        Ext::Xrc(a.srq_num(), XrcExt::None),
        &[1; MTU_BYTES],
    );
    let last = env.build(
        xrc(Op::SendLast),
        t.tgt.qp_num(),
        psn_add(EPSN, 1),
        Ext::Xrc(b.srq_num(), XrcExt::None),
        &[2; 8],
    );
    let s = env.snap();
    env.send_many(&[&first, &last]);
    let (op, psn, syn) = one_reply(&env.sync(), "switched SRQ");
    assert_eq!((op, psn), (xrc(Op::Ack), psn_add(EPSN, 1)));
    assert_eq!(syn, Some(Syndrome::Nak(NakCode::InvalidRequest)));
    env.assert_counted(
        &s,
        &[("xrc_bad_srqn", 1), ("nak_sent_inv_req", 1)],
        "switched SRQ",
    );
    assert_eq!(b.len(), 1, "B's WQE untouched");
    let now = mem.snapshot();
    assert_eq!(
        mem.region_in(&now)[PAGE..],
        mem.region_in(&before)[PAGE..],
        "nothing in B's buffer"
    );
    assert_eq!(t.srq_cq.poll(&mut [Wc::EMPTY; 4]), 0);
}

/// A WRITE naming an XRC SRQ on another PD than the MR's: the target checks
/// the R_Key against the SRQ's PD, so it is a remote access error.
#[test]
fn writes_are_checked_against_the_named_srqs_pd() {
    let mut env = Env::new(42);
    let t = target(&env, 0x00cc_0003);
    let other_pd = env.dev.alloc_pd();
    let foreign = t.xrcd.create_srq(&other_pd, &t.srq_cq, 8, 1, 0).unwrap();
    let mem = Canaried::new(PAGE, 5);
    let mr = env
        .pd
        .reg_mr(mem.addr(), PAGE as u64, all_access())
        .unwrap();
    let before = mem.snapshot();
    let reth = Reth {
        va: mem.addr(),
        rkey: mr.rkey(),
        len: 16,
    };
    let pkt = env.build(
        xrc(Op::WriteOnly),
        t.tgt.qp_num(),
        EPSN,
        Ext::Xrc(foreign.srq_num(), XrcExt::Reth(reth)),
        &[9; 16],
    );
    let s = env.snap();
    env.send(&pkt);
    let (op, _, syn) = one_reply(&env.sync(), "foreign PD");
    assert_eq!(op, xrc(Op::Ack));
    assert_eq!(syn, Some(Syndrome::Nak(NakCode::RemoteAccessError)));
    env.assert_counted(&s, &[("nak_sent_rem_access", 1)], "foreign PD");
    mem.assert_unchanged(&before, "foreign PD");
}

/// XRC packets to an RC QP, RC packets and XRC responses to a target:
/// dropped and counted as of the wrong transport, nothing answered.
#[test]
fn wrong_halves_and_transports_are_dropped() {
    let mut env = Env::new(43);
    let t = target(&env, 0x00cc_0004);
    let srq = t.xrcd.create_srq(&env.pd, &t.srq_cq, 8, 1, 0).unwrap();
    let (rc_qp, _) = env.qp(QpType::Rc, all_access());
    let to_rc = env.build(
        xrc(Op::SendOnly),
        rc_qp.qp_num(),
        EPSN,
        Ext::Xrc(srq.srq_num(), XrcExt::None),
        &[1; 8],
    );
    let rc_to_tgt = env.build(rc(Op::SendOnly), t.tgt.qp_num(), EPSN, Ext::None, &[1; 8]);
    let resp_to_tgt = env.build(
        xrc(Op::Ack),
        t.tgt.qp_num(),
        EPSN,
        Ext::Aeth(soft_rdma::wire::Aeth {
            syndrome: Syndrome::Ack { credits: 0x1f },
            msn: 0,
        }),
        &[],
    );
    let s = env.snap();
    env.send_many(&[&to_rc, &rc_to_tgt, &resp_to_tgt]);
    assert!(env.sync().is_empty(), "nothing answered");
    env.assert_counted(&s, &[("wrong_transport", 3)], "wrong halves");
    assert_eq!(t.tgt.state(), QpState::Rts);
}
