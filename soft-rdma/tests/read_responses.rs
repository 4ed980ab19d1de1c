//! READ responses from a hostile (or mismatched) responder (issue 19,
//! finding 12): responses of the wrong opcode or length fail the READ
//! (`BAD_RESP_ERR`, counted, QP in error) instead of completing it with
//! holes; the right ones, a restart after a re-request included, complete.

mod attacker;
use attacker::*;
use soft_rdma::transport::{Link, RecvBatch};
use soft_rdma::verbs::*;
use soft_rdma::wire::{Aeth, Ext, Op, Syndrome};
use std::time::{Duration, Instant};

/// The victim as the requester: it READs `len` bytes from the attacker,
/// who reads the request off the hub. Returns the QP, its local memory and
/// MR, and the request's PSN.
fn victim_reads(env: &mut Env, len: usize) -> (Qp, Canaried, Mr, u32) {
    let (qp, _) = env.qp(QpType::Rc, all_access());
    let mem = Canaried::new(len, 3);
    let mr = env
        .pd
        .reg_mr(mem.addr(), len as u64, Access::LOCAL_WRITE)
        .unwrap();
    qp.post_send(&[SendWr {
        wr_id: 7,
        sg_list: &[Sge {
            addr: mem.addr(),
            length: len as u32,
            lkey: mr.lkey(),
        }],
        op: SendOp::Read {
            remote_addr: 0x10_0000,
            rkey: 0x1234,
        },
        flags: SendFlags {
            signaled: true,
            ..Default::default()
        },
        ud: None,
    }])
    .unwrap();
    let mut batch = RecvBatch::new(16);
    let t = Instant::now();
    loop {
        let n = env
            .atk
            .recv(&mut batch, Some(Duration::from_millis(100)))
            .unwrap();
        for i in 0..n {
            let r = decode(env.victim, env.me, batch.get(i).1);
            if r.repr.bth.opcode == rc(Op::ReadRequest) {
                return (qp, mem, mr, r.repr.bth.psn);
            }
        }
        assert!(t.elapsed() < Duration::from_secs(10), "no READ request");
    }
}

fn response(env: &Env, qp: &Qp, op: Op, psn: u32, payload: &[u8]) -> Vec<u8> {
    let aeth = Ext::Aeth(Aeth {
        syndrome: Syndrome::Ack { credits: 0x1f },
        msn: 1,
    });
    let ext = if op == Op::ReadRespMiddle {
        Ext::None
    } else {
        aeth
    };
    env.build(rc(op), qp.qp_num(), psn, ext, payload)
}

/// Wait for the READ's completion.
fn completion(env: &Env) -> Wc {
    let t = Instant::now();
    loop {
        if let Some(wc) = env.completions().into_iter().find(|w| w.wr_id == 7) {
            return wc;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "no completion");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Finding 12: responses that do not fit the READ end it in error
/// (`BAD_RESP_ERR`, counted), never as a success with holes.
#[test]
fn read_responses_of_the_wrong_shape_fail_the_read() {
    type Case = (&'static str, usize, &'static [(Op, usize)]);
    let cases: &[Case] = &[
        // A responder whose path MTU is 512: every PSN answered, half the
        // bytes missing.
        (
            "MTU 512 answer",
            2048,
            &[(Op::ReadRespFirst, 512), (Op::ReadRespLast, 512)],
        ),
        // Short packets with the right opcodes.
        (
            "short packets",
            3072,
            &[
                (Op::ReadRespFirst, 100),
                (Op::ReadRespMiddle, 100),
                (Op::ReadRespLast, 100),
            ],
        ),
        // The right lengths, the wrong order: a last before the end.
        (
            "last too early",
            3072,
            &[(Op::ReadRespFirst, 1024), (Op::ReadRespLast, 1024)],
        ),
        // A middle as the first packet.
        (
            "middle first",
            2048,
            &[(Op::ReadRespMiddle, 1024), (Op::ReadRespLast, 1024)],
        ),
        // Too long for the READ.
        ("only, too long", 512, &[(Op::ReadRespOnly, 1024)]),
    ];
    for (i, (what, len, pkts)) in cases.iter().enumerate() {
        let mut env = Env::new(10 + i as u8);
        let (qp, mem, _mr, psn) = victim_reads(&mut env, *len);
        let before = env.dev.stats().bad_responses;
        for (k, (op, n)) in pkts.iter().enumerate() {
            let p = response(&env, &qp, *op, psn_add(psn, k as u32), &vec![0xab; *n]);
            env.send(&p);
        }
        let wc = completion(&env);
        assert_eq!(
            wc.status,
            WcStatus::BadRespErr,
            "{what}: the READ completed {:?}",
            wc.status
        );
        assert_eq!(env.dev.stats().bad_responses - before, 1, "{what}: counted");
        assert!(mem.canaries_intact(), "{what}: canaries");
        assert_eq!(qp.state(), QpState::Err, "{what}: QP state");
    }
}

/// The right responses still complete the READ (and a response that
/// restarts after a re-request of the rest is accepted).
#[test]
fn read_responses_of_the_right_shape_complete_the_read() {
    let mut env = Env::new(20);
    let (qp, mem, _mr, psn) = victim_reads(&mut env, 2500);
    let pkts = [
        (Op::ReadRespFirst, 1024),
        // A restart at PSN 1 (re-requested rest of 1476 bytes: first/last).
        (Op::ReadRespFirst, 1024),
        (Op::ReadRespLast, 452),
    ];
    for (k, (op, n)) in pkts.iter().enumerate() {
        let p = response(
            &env,
            &qp,
            *op,
            psn_add(psn, k as u32),
            &vec![k as u8 + 1; *n],
        );
        env.send(&p);
    }
    let wc = completion(&env);
    assert_eq!(wc.status, WcStatus::Success);
    let r = mem.region();
    assert!(r[..1024].iter().all(|&b| b == 1));
    assert!(r[1024..2048].iter().all(|&b| b == 2));
    assert!(r[2048..2500].iter().all(|&b| b == 3));
    assert_eq!(env.dev.stats().bad_responses, 0);
}
