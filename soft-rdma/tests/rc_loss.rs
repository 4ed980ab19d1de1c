//! Loss recovery beyond go-back-N against a responder that knows only
//! go-back-N, played by hand on a raw port: a sequence NAK makes the
//! requester resend the one packet it names; the go-back-N responder's ACK
//! of just that packet makes it go back for the rest — and the WRITE
//! completes. And the other way round: a go-back-N requester, played by
//! hand, against the responder that holds what follows a gap.

mod attacker;
use attacker::*;
use soft_rdma::transport::{Link, RecvBatch};
use soft_rdma::verbs::*;
use soft_rdma::wire::{Aeth, Ext, NakCode, Op, Reth, Syndrome};
use std::time::{Duration, Instant};
use test_support::verbs::{signaled, wait, Buf};

/// The requests the victim's QP sent to the raw port until `done` says
/// so (or 5 s pass).
fn take_until(env: &Env, batch: &mut RecvBatch, done: impl Fn(&[Reply]) -> bool) -> Vec<Reply> {
    let mut out = Vec::new();
    let t = Instant::now();
    while !done(&out) {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "waited for requests: {out:?}"
        );
        let n = env
            .atk
            .recv(batch, Some(Duration::from_millis(20)))
            .unwrap();
        for i in 0..n {
            let (_, bytes) = batch.get(i);
            out.push(decode(env.victim, env.me, bytes));
        }
    }
    out
}

fn answer(env: &mut Env, qpn: u32, psn: u32, syndrome: Syndrome) {
    let ack = env.build(
        rc(Op::Ack),
        qpn,
        psn,
        Ext::Aeth(Aeth { syndrome, msn: 0 }),
        &[],
    );
    env.send(&ack);
}

#[test]
fn a_go_back_n_responder_gets_the_named_packet_then_everything_after_it() {
    let mut env = Env::new(41);
    let (qp, peer) = env.qp(QpType::Rc, all_access());
    let n = 8u32;
    let len = n as usize * MTU_BYTES;
    let src = Buf::new(len, |i| (i * 5) as u8);
    let mr = env
        .pd
        .reg_mr(src.addr(), len as u64, Access::LOCAL_WRITE)
        .unwrap();
    qp.post_send(&[SendWr {
        wr_id: 9,
        sg_list: &[src.sge(&mr, 0, len)],
        op: SendOp::Write {
            remote_addr: 0x10_0000,
            rkey: 0x1234,
        },
        flags: signaled(),
        ud: None,
    }])
    .unwrap();
    let mut batch = RecvBatch::new(256);
    let psn = |k: u32| psn_add(EPSN, k);
    let first = take_until(&env, &mut batch, |r| r.len() >= n as usize);
    let psns: Vec<u32> = first.iter().map(|r| r.repr.bth.psn).collect();
    assert_eq!(psns, (0..n).map(psn).collect::<Vec<_>>());
    assert!(first.iter().all(|r| r.repr.bth.dest_qp == peer));
    // Packet 2 "lost": the responder took 0 and 1, dropped 3.. and NAKs 2.
    answer(
        &mut env,
        qp.qp_num(),
        psn(2),
        Syndrome::Nak(NakCode::PsnSequenceError),
    );
    let again = take_until(&env, &mut batch, |r| !r.is_empty());
    for r in &again {
        // Only the named packet (a loss probe may send it again too).
        assert_eq!(r.repr.bth.psn, psn(2), "{again:?}");
        assert!(r.repr.bth.ack_req, "the resent packet asks for an ACK");
        assert_eq!(&r.payload[..], &src.0[2 * MTU_BYTES..3 * MTU_BYTES]);
    }
    // A go-back-N responder took just that one: it expects 3 now.
    answer(
        &mut env,
        qp.qp_num(),
        psn(2),
        Syndrome::Ack { credits: 0x1f },
    );
    let rest = take_until(&env, &mut batch, |r| {
        r.iter().any(|r| r.repr.bth.psn == psn(n - 1))
    });
    let mut want = 3;
    for r in rest.iter().filter(|r| r.repr.bth.psn != psn(2)) {
        // Go-back-N from 3, in order, each packet's bytes right.
        assert_eq!(r.repr.bth.psn, psn(want), "{rest:?}");
        let off = want as usize * MTU_BYTES;
        assert_eq!(&r.payload[..], &src.0[off..off + MTU_BYTES]);
        want += 1;
    }
    assert_eq!(want, n);
    answer(
        &mut env,
        qp.qp_num(),
        psn(n - 1),
        Syndrome::Ack { credits: 0x1f },
    );
    let c = wait(&env.cq, 1)[0];
    assert_eq!((c.wr_id, c.status), (9, WcStatus::Success));
    let st = env.dev.stats();
    assert_eq!(st.local_ack_timeouts, 0, "{st}");
    assert_eq!(st.nak_rcvd_seq_err, 1, "{st}");
}

#[test]
fn a_go_back_n_requester_resending_everything_gets_duplicates_acknowledged() {
    let mut env = Env::new(42);
    let (qp, peer) = env.qp(QpType::Rc, all_access());
    let mem = Canaried::new(4 * MTU_BYTES, 7);
    let mr = env
        .pd
        .reg_mr(mem.addr(), (4 * MTU_BYTES) as u64, all_access())
        .unwrap();
    let data: Vec<u8> = (0..4 * MTU_BYTES).map(|i| (i * 3 + 1) as u8).collect();
    let reth = Ext::Reth(Reth {
        va: mem.addr(),
        rkey: mr.rkey(),
        len: (4 * MTU_BYTES) as u32,
    });
    let ops = [
        Op::WriteFirst,
        Op::WriteMiddle,
        Op::WriteMiddle,
        Op::WriteLast,
    ];
    let pkt = |env: &Env, k: usize| {
        let ext = if k == 0 { reth } else { Ext::None };
        let chunk = &data[k * MTU_BYTES..(k + 1) * MTU_BYTES];
        env.build(rc(ops[k]), qp.qp_num(), psn_add(EPSN, k as u32), ext, chunk)
    };
    // Packet 1 lost on the way: 2 and 3 are held, 1 is NAKed once.
    let (p0, p2, p3) = (pkt(&env, 0), pkt(&env, 2), pkt(&env, 3));
    env.send_many(&[&p0, &p2, &p3]);
    let r = env.sync();
    assert_nak(
        &r,
        peer,
        psn_add(EPSN, 1),
        NakCode::PsnSequenceError,
        "the gap",
    );
    assert!(
        mem.region()[MTU_BYTES..] != data[MTU_BYTES..],
        "held, not run"
    );
    // Go-back-N: 1, 2, 3 again. 1 fills the gap and the held 2 and 3 run;
    // the copies of 2 and 3 are duplicates, acknowledged.
    let s = env.snap();
    let (p1, p2, p3) = (pkt(&env, 1), pkt(&env, 2), pkt(&env, 3));
    env.send_many(&[&p1, &p2, &p3]);
    let r = env.sync();
    assert!(
        r.iter().all(|r| r.syndrome().is_some_and(|s| s.is_ack())),
        "only ACKs: {r:?}"
    );
    // (One coalesced ACK, or one per receive batch if they were split.)
    let last = r.last().expect("an ACK");
    assert_eq!(
        (last.repr.bth.dest_qp, last.repr.bth.psn),
        (peer, psn_add(EPSN, 3))
    );
    assert_eq!(mem.region(), &data[..]);
    assert!(mem.canaries_intact());
    env.assert_counted(
        &s,
        &[("reorder_run", 2), ("duplicate_requests", 2)],
        "the gap filled",
    );
}

/// A READ whose third response is lost: the requester places what follows
/// and asks for the lost response alone (its PSN, VA and length); a
/// responder that answers every duplicate READ with the rest of the
/// original (go-back-N of responses) sends 2..7 again — duplicates but 2 —
/// and the READ completes with every byte right.
#[test]
fn a_lost_read_response_is_asked_for_alone_and_the_rest_resent_is_harmless() {
    let mut env = Env::new(43);
    let (qp, peer) = env.qp(QpType::Rc, all_access());
    let n = 8u32;
    let len = n as usize * MTU_BYTES;
    let remote: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
    let dst = Buf::new(len, |_| 0);
    let mr = env
        .pd
        .reg_mr(dst.addr(), len as u64, Access::LOCAL_WRITE)
        .unwrap();
    let va = 0x20_0000u64;
    qp.post_send(&[SendWr {
        wr_id: 5,
        sg_list: &[dst.sge(&mr, 0, len)],
        op: SendOp::Read {
            remote_addr: va,
            rkey: 0x4321,
        },
        flags: signaled(),
        ud: None,
    }])
    .unwrap();
    let mut batch = RecvBatch::new(256);
    let psn = |k: u32| psn_add(EPSN, k);
    let req = take_until(&env, &mut batch, |r| !r.is_empty());
    assert_eq!(req[0].repr.bth.opcode.op(), Op::ReadRequest);
    let aeth = Ext::Aeth(Aeth {
        syndrome: Syndrome::Ack { credits: 0x1f },
        msn: 1,
    });
    let response = |env: &Env, k: u32| {
        let op = match k {
            0 => Op::ReadRespFirst,
            k if k == n - 1 => Op::ReadRespLast,
            _ => Op::ReadRespMiddle,
        };
        let ext = if op == Op::ReadRespMiddle {
            Ext::None
        } else {
            aeth
        };
        let off = k as usize * MTU_BYTES;
        env.build(
            rc(op),
            qp.qp_num(),
            psn(k),
            ext,
            &remote[off..off + MTU_BYTES],
        )
    };
    // Response 2 lost.
    let first: Vec<_> = (0..n)
        .filter(|&k| k != 2)
        .map(|k| response(&env, k))
        .collect();
    env.send_many(&first.iter().map(Vec::as_slice).collect::<Vec<_>>());
    let again = take_until(&env, &mut batch, |r| !r.is_empty());
    let r = &again[0];
    assert_eq!(
        (r.repr.bth.opcode.op(), r.repr.bth.psn),
        (Op::ReadRequest, psn(2)),
        "{again:?}"
    );
    let Ext::Reth(reth) = r.repr.ext else {
        panic!("no RETH: {again:?}")
    };
    assert_eq!(
        (reth.va, reth.rkey, reth.len),
        (va + 2 * MTU_BYTES as u64, 0x4321, MTU_BYTES as u32),
        "just the lost response"
    );
    assert!(dst.0[..] != remote[..], "not complete yet");
    // The go-back-N responder resends everything from 2.
    let rest: Vec<_> = (2..n).map(|k| response(&env, k)).collect();
    env.send_many(&rest.iter().map(Vec::as_slice).collect::<Vec<_>>());
    let c = wait(&env.cq, 1)[0];
    assert_eq!((c.wr_id, c.status), (5, WcStatus::Success));
    assert!(dst.0[..] == remote[..], "every byte");
    let st = env.dev.stats();
    assert_eq!((st.local_ack_timeouts, st.bad_responses), (0, 0), "{st}");
    let _ = peer;
}

/// The responder answers a duplicate READ with the range its RETH names
/// (rxe's way): one response asked for is one response, a last at its PSN;
/// a duplicate naming the rest of the READ gets the rest.
#[test]
fn a_duplicate_read_naming_one_response_is_answered_with_that_one() {
    let mut env = Env::new(44);
    let (qp, peer) = env.qp(QpType::Rc, all_access());
    let n = 6usize;
    let data: Vec<u8> = (0..n * MTU_BYTES).map(|i| (i * 13 + 5) as u8).collect();
    let mem = Buf::new(n * MTU_BYTES, |i| data[i]);
    let mr = env
        .pd
        .reg_mr(mem.addr(), (n * MTU_BYTES) as u64, all_access())
        .unwrap();
    let read = |env: &Env, k: usize, len: usize| {
        let reth = Ext::Reth(Reth {
            va: mem.addr() + (k * MTU_BYTES) as u64,
            rkey: mr.rkey(),
            len: len as u32,
        });
        env.build(
            rc(Op::ReadRequest),
            qp.qp_num(),
            psn_add(EPSN, k as u32),
            reth,
            &[],
        )
    };
    let req = read(&env, 0, n * MTU_BYTES);
    env.send(&req);
    let r = env.sync();
    let resp: Vec<_> = r.iter().filter(|r| r.repr.bth.dest_qp == peer).collect();
    assert_eq!(resp.len(), n, "{r:?}");
    // Response 3 asked for again, alone.
    let dup = read(&env, 3, MTU_BYTES);
    env.send(&dup);
    let r = env.sync();
    let resp: Vec<_> = r.iter().filter(|r| r.repr.bth.dest_qp == peer).collect();
    assert_eq!(resp.len(), 1, "{r:?}");
    assert_eq!(
        (resp[0].repr.bth.opcode.op(), resp[0].repr.bth.psn),
        (Op::ReadRespLast, psn_add(EPSN, 3))
    );
    assert_eq!(&resp[0].payload[..], &data[3 * MTU_BYTES..4 * MTU_BYTES]);
    // The rest from 2: 2 (middle) .. 5 (last).
    let dup = read(&env, 2, (n - 2) * MTU_BYTES);
    env.send(&dup);
    let r = env.sync();
    let ops: Vec<_> = r
        .iter()
        .filter(|r| r.repr.bth.dest_qp == peer)
        .map(|r| (r.repr.bth.opcode.op(), r.repr.bth.psn))
        .collect();
    let want: Vec<_> = (2..n as u32)
        .map(|k| {
            let op = if k == n as u32 - 1 {
                Op::ReadRespLast
            } else {
                Op::ReadRespMiddle
            };
            (op, psn_add(EPSN, k))
        })
        .collect();
    assert_eq!(ops, want);
}
