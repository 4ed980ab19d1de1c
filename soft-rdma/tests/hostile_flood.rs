//! A flood of hostile packets (200 000: unknown QPNs, bad R_Keys, absurd
//! lengths, wrong Q_Keys, bad ICRCs, garbage) costs bounded memory and does
//! not disturb a legitimate RC transfer between two other QPs of the same
//! device running at the same time. No timing is asserted: only that the
//! transfer completes with every byte right, that each hostile packet was
//! counted where it belongs, and that the process's RSS grew by less than a
//! small bound. Its own test binary, so no other test's allocations mix in.

mod attacker;
use attacker::*;
use soft_rdma::verbs::*;
use soft_rdma::wire::{Deth, Ext, Op, Reth};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

const FLOOD: usize = 200_000;
/// Packets between two probes: the device has handled a chunk before the
/// next is sent, so the hub's queue never overflows (no legitimate packet
/// is lost to the flood's volume; only the device's handling is tested).
const CHUNK: usize = 1000;
const MSG: usize = 1 << 20;
/// RSS growth allowed over the flood (after a warm-up chunk).
const RSS_BOUND: u64 = 16 << 20;

#[test]
fn a_flood_costs_bounded_memory_and_leaves_a_legitimate_transfer_intact() {
    let mut env = Env::with_queue(50, 1 << 15);
    let pd = env.pd.clone();
    // The legitimate pair: two QPs of the victim device, connected to each
    // other through the device's own address.
    let cq = Cq::new(256, None).unwrap();
    let a = new_qp(&pd, &cq, QpType::Rc);
    let b = new_qp(&pd, &cq, QpType::Rc);
    bring_up(&a, QpType::Rc, all_access(), b.qp_num(), env.victim);
    bring_up(&b, QpType::Rc, all_access(), a.qp_num(), env.victim);
    // The source holds two messages' worth of pattern; round n writes the
    // MiB at offset (n % 16) * 64 KiB of it, so each round's bytes differ.
    let src = Arc::new(Canaried::new(2 * MSG, 1));
    let dst = Arc::new(Canaried::new(MSG, 2));
    let src_mr = pd
        .reg_mr(src.addr(), 2 * MSG as u64, Access::LOCAL_WRITE)
        .unwrap();
    let dst_mr = pd.reg_mr(dst.addr(), MSG as u64, all_access()).unwrap();
    // Hostile targets: a UC QP and a UD QP that stay up, a region the
    // flood names with wrong keys.
    let target = Canaried::new(2 * PAGE, 3);
    let target_mr = pd
        .reg_mr(target.addr(), 2 * PAGE as u64, all_access())
        .unwrap();
    let (ucqp, _) = env.qp(QpType::Uc, all_access());
    let (udqp, _) = env.qp(QpType::Ud, all_access());
    let target_before = target.snapshot();

    let stop = Arc::new(AtomicBool::new(false));
    let legit = {
        let stop = stop.clone();
        let (src, dst) = (src.clone(), dst.clone());
        let (lkey, rkey) = (src_mr.lkey(), dst_mr.rkey());
        let cq = cq.clone();
        std::thread::spawn(move || {
            let mut n = 0u64;
            // At least 3 rounds, and on until the flood is over.
            while n < 3 || !stop.load(Ordering::Relaxed) {
                n += 1;
                let off = (n as usize % 16) * (64 << 10);
                a.post_send(&[SendWr {
                    wr_id: n,
                    sg_list: &[Sge {
                        addr: src.addr() + off as u64,
                        length: MSG as u32,
                        lkey,
                    }],
                    op: SendOp::Write {
                        remote_addr: dst.addr(),
                        rkey,
                    },
                    flags: SendFlags {
                        signaled: true,
                        ..Default::default()
                    },
                    ud: None,
                }])
                .unwrap();
                let t = std::time::Instant::now();
                let mut wc = [Wc::EMPTY; 4];
                loop {
                    let k = cq.poll(&mut wc);
                    if k > 0 {
                        assert_eq!(k, 1);
                        assert_eq!((wc[0].wr_id, wc[0].status), (n, WcStatus::Success));
                        break;
                    }
                    assert!(
                        t.elapsed() < std::time::Duration::from_secs(120),
                        "the legitimate WRITE {n} did not complete"
                    );
                    std::thread::sleep(std::time::Duration::from_micros(200));
                }
                assert!(
                    dst.region() == &src.region()[off..off + MSG],
                    "round {n}: the destination holds what was written"
                );
            }
            (n, a)
        })
    };

    let mut sent = 0usize;
    let mut kinds = [0u64; 8];
    let mut rss0 = None;
    let mut chunk_no = 0u32;
    while sent < FLOOD {
        // A fresh RC QP per chunk: the first hostile packet kills it (class
        // C), the rest of the chunk hits a QP in error.
        let (rcqp, _) = env.qp(QpType::Rc, all_access());
        let mut pkts = Vec::with_capacity(CHUNK);
        for i in 0..CHUNK {
            let k = (sent + i) % 8;
            kinds[k] += 1;
            let x = (sent + i) as u64;
            let p = match k {
                0 => env.build(
                    rc(Op::WriteOnly),
                    0x00f0_0000 | (x as u32 & 0xffff),
                    EPSN,
                    Ext::Reth(Reth {
                        va: target.addr(),
                        rkey: target_mr.rkey(),
                        len: 64,
                    }),
                    &[0xee; 64],
                ),
                1 => env.build(
                    uc(Op::WriteOnly),
                    ucqp.qp_num(),
                    EPSN,
                    Ext::Reth(Reth {
                        va: target.addr(),
                        rkey: target_mr.rkey() ^ (1 + (x as u32 & 0xff)),
                        len: 64,
                    }),
                    &[0xee; 64],
                ),
                2 => env.build(
                    uc(Op::WriteFirst),
                    ucqp.qp_num(),
                    EPSN,
                    Ext::Reth(Reth {
                        va: target.addr(),
                        rkey: target_mr.rkey(),
                        len: u32::MAX,
                    }),
                    &[0xee; MTU_BYTES],
                ),
                3 => env.build(
                    rc(Op::ReadRequest),
                    rcqp.qp_num(),
                    EPSN,
                    Ext::Reth(Reth {
                        va: target.addr(),
                        rkey: target_mr.rkey(),
                        len: u32::MAX,
                    }),
                    &[],
                ),
                4 => env.build(
                    rc(Op::WriteOnly),
                    rcqp.qp_num(),
                    EPSN,
                    Ext::Reth(Reth {
                        va: u64::MAX - 7,
                        rkey: target_mr.rkey(),
                        len: 64,
                    }),
                    &[0xee; 64],
                ),
                5 => env.build(
                    ud(Op::SendOnly),
                    udqp.qp_num(),
                    EPSN,
                    Ext::Deth(Deth {
                        qkey: QKEY ^ 0x10,
                        src_qp: 9,
                    }),
                    &[0xee; 64],
                ),
                6 => {
                    let mut p = env.build(
                        rc(Op::WriteOnly),
                        rcqp.qp_num(),
                        EPSN,
                        Ext::Reth(Reth {
                            va: target.addr(),
                            rkey: target_mr.rkey(),
                            len: 64,
                        }),
                        &[0xee; 64],
                    );
                    let n = p.len();
                    p[n - 2] ^= 1; // bad ICRC
                    p
                }
                _ => (0..(x % 90) as usize)
                    .map(|j| (j as u64 * 37 + x) as u8 | 0x40)
                    .collect(), // garbage; opcode 0x40.. = no transport here
            };
            pkts.push(p);
        }
        let refs: Vec<&[u8]> = pkts.iter().map(|p| p.as_slice()).collect();
        env.send_many(&refs);
        drop(pkts);
        // Replies (one NAK per fresh RC QP) are read and dropped.
        let replies = env.sync();
        assert!(replies.len() <= 1, "{replies:?}");
        drop(rcqp);
        sent += CHUNK;
        chunk_no += 1;
        if chunk_no == 10 {
            rss0 = Some(rss());
        }
    }
    let rss1 = rss();
    stop.store(true, Ordering::Relaxed);
    let (legit_rounds, a) = legit.join().expect("the legitimate transfer");
    let rss0 = rss0.expect("measured after warm-up");
    eprintln!(
        "flood of {sent} packets; RSS after warm-up {} KiB, after the flood {} KiB \
         (grew {} KiB); {legit_rounds} legitimate 1 MiB WRITEs verified meanwhile",
        rss0 >> 10,
        rss1 >> 10,
        rss1.saturating_sub(rss0) >> 10
    );
    assert!(
        rss1 <= rss0 + RSS_BOUND,
        "RSS grew from {rss0} to {rss1} over the flood"
    );
    target.assert_unchanged(&target_before, "the flood's target");
    assert!(src.canaries_intact() && dst.canaries_intact());
    assert_eq!(a.state(), QpState::Rts);
    assert_eq!(b.state(), QpState::Rts);
    let st = env.dev.stats();
    let chunks = (FLOOD / CHUNK) as u64;
    // Everything the flood sent is accounted for where it belongs.
    assert!(st.unknown_qp >= kinds[0], "{st}");
    assert_eq!(st.uc_dropped, kinds[1] + kinds[2], "{st}");
    assert_eq!(st.qkey_violations, kinds[5], "{st}");
    assert_eq!(st.icrc_errors, kinds[6], "{st}");
    assert_eq!(st.nak_sent_inv_req, chunks, "one NAK per fresh RC QP: {st}");
    assert!(st.parse_errors + st.unknown_qp >= kinds[7], "{st}");
    assert_eq!(st.link_recv_dropped, 0, "{st}");
    drop((target_mr, src_mr, dst_mr));
}
