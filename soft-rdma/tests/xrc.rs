//! XRC between two devices (real UDP on loopback): one initiator QP
//! sending to several SRQs behind one target QP — SEND, WRITE (with
//! immediate), READ and both atomics checked byte by byte, pinned and ODP —
//! and the bad flows: an SRQ number that names nothing, another domain's
//! SRQ or a basic SRQ (NAKed, counted, nothing delivered or written),
//! receives posted on XRC QPs, domains closed while in use.

use soft_rdma::transport::faults::{FaultConfig, FaultLink};
use soft_rdma::transport::{Hub, Link};
use soft_rdma::verbs::*;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use test_support::verbs::*;

fn kinds() -> [(&'static str, Access); 2] {
    [("pinned", Access::default()), ("odp", Access::ON_DEMAND)]
}

/// An initiator on `a` (its PD and CQ) and a target of `xrcd` on `b`,
/// connected and in RTS.
fn pair(a: &Node, b: &Node, xrcd: &Xrcd) -> (Qp, Qp) {
    pair_with(a, b, xrcd, &QpConfig::new(QpType::XrcSend))
}

fn pair_with(a: &Node, b: &Node, xrcd: &Xrcd, cfg: &QpConfig) -> (Qp, Qp) {
    let ini =
        a.pd.create_qp(QpInitAttr {
            qp_type: QpType::XrcSend,
            send_cq: a.cq.clone(),
            recv_cq: a.cq.clone(),
            cap: cap(),
            sq_sig_all: false,
            srq: None,
        })
        .unwrap();
    let tgt = xrcd.create_target_qp().unwrap();
    assert_eq!(tgt.qp_type(), QpType::XrcRecv);
    cfg.bring_up(&ini, tgt.qp_num(), b.dev.gid(1).unwrap());
    cfg.bring_up(&tgt, ini.qp_num(), a.dev.gid(1).unwrap());
    (ini, tgt)
}

fn recv(srq: &Srq, wr_id: u64, buf: &Buf, mr: &Mr, off: usize, len: usize) {
    srq.post_recv(&[RecvWr {
        wr_id,
        sg_list: &[buf.sge(mr, off, len)],
    }])
    .unwrap();
}

fn wr<'a>(wr_id: u64, sg: &'a [Sge], op: SendOp) -> SendWr<'a> {
    SendWr {
        wr_id,
        sg_list: sg,
        op,
        flags: signaled(),
        ud: None,
    }
}

/// Two SRQs (each with its CQ) behind one target: SENDs land in the SRQ
/// each names and complete on that SRQ's CQ; WRITE, READ and atomics use
/// the named SRQ's PD; every byte checked.
#[test]
fn one_initiator_several_srqs() {
    for (kind, extra) in kinds() {
        let (a, b) = (node(), node());
        let xrcd = b.dev.open_xrcd();
        let (cq1, cq2) = (Cq::new(64, None).unwrap(), Cq::new(64, None).unwrap());
        let srq1 = xrcd.create_srq(&b.pd, &cq1, 64, 2, 0).unwrap();
        let srq2 = xrcd.create_srq(&b.pd, &cq2, 64, 2, 0).unwrap();
        assert!(srq1.is_xrc() && srq1.srq_num() != srq2.srq_num());
        let (ini, tgt) = pair(&a, &b, &xrcd);

        let src = Buf::new(1 << 16, |i| (i * 7 + 3) as u8);
        let dst = Buf::new(1 << 16, |_| 0);
        let mra =
            a.pd.reg_mr(src.addr(), 1 << 16, all_access() | extra)
                .unwrap();
        let mrb =
            b.pd.reg_mr(dst.addr(), 1 << 16, all_access() | extra)
                .unwrap();
        recv(&srq1, 101, &dst, &mrb, 0, 8192);
        recv(&srq2, 201, &dst, &mrb, 8192, 8192);
        recv(&srq2, 202, &dst, &mrb, 16384, 64);

        // A 5000-byte SEND to SRQ 2, a 100-byte SEND with immediate to SRQ 1,
        // a WRITE with immediate (which takes SRQ 2's next WQE).
        let s1 = [src.sge(&mra, 0, 5000)];
        let s2 = [src.sge(&mra, 5000, 100)];
        let s3 = [src.sge(&mra, 6000, 3000)];
        ini.post_send_xrc(
            &[
                wr(1, &s1, SendOp::Send),
                wr(2, &s2, SendOp::SendImm(0xfeed)),
                wr(
                    3,
                    &s3,
                    SendOp::WriteImm {
                        remote_addr: dst.addr() + 20_000,
                        rkey: mrb.rkey(),
                        imm: 0xbeef,
                    },
                ),
            ],
            &[srq2.srq_num(), srq1.srq_num(), srq2.srq_num()],
        )
        .unwrap();
        let sc = wait(&a.cq, 3);
        assert!(
            sc.iter().all(|w| w.status == WcStatus::Success),
            "{kind}: {sc:?}"
        );
        let c1 = wait(&cq1, 1);
        assert_eq!(
            (
                c1[0].wr_id,
                c1[0].status,
                c1[0].byte_len,
                c1[0].imm,
                c1[0].qp_num
            ),
            (101, WcStatus::Success, 100, Some(0xfeed), tgt.qp_num()),
            "{kind}"
        );
        let c2 = wait(&cq2, 2);
        assert_eq!(
            (c2[0].wr_id, c2[0].byte_len, c2[0].opcode),
            (201, 5000, WcOpcode::Recv),
            "{kind}"
        );
        assert_eq!(
            (c2[1].wr_id, c2[1].byte_len, c2[1].imm, c2[1].opcode),
            (202, 3000, Some(0xbeef), WcOpcode::RecvRdmaWithImm),
            "{kind}"
        );
        assert!(a.cq.poll(&mut [Wc::EMPTY; 4]) == 0 && b.cq.poll(&mut [Wc::EMPTY; 4]) == 0);
        assert_eq!(&dst.0[..100], &src.0[5000..5100], "{kind}: SRQ 1's SEND");
        assert!(dst.0[100..8192].iter().all(|&x| x == 0), "{kind}");
        assert_eq!(&dst.0[8192..13192], &src.0[..5000], "{kind}: SRQ 2's SEND");
        assert!(dst.0[13192..20_000].iter().all(|&x| x == 0), "{kind}");
        assert_eq!(&dst.0[20_000..23_000], &src.0[6000..9000], "{kind}: WRITE");
        assert!(dst.0[23_000..].iter().all(|&x| x == 0), "{kind}");

        // READ it back, then the atomics on an 8-byte word.
        let back = [src.sge(&mra, 30_000, 3000)];
        let word_addr = dst.addr() + 40_000;
        let old = [src.sge(&mra, 40_000, 8)];
        let old2 = [src.sge(&mra, 40_008, 8)];
        ini.post_send_xrc(
            &[
                wr(
                    4,
                    &back,
                    SendOp::Read {
                        remote_addr: dst.addr() + 20_000,
                        rkey: mrb.rkey(),
                    },
                ),
                wr(
                    5,
                    &old,
                    SendOp::FetchAdd {
                        remote_addr: word_addr,
                        rkey: mrb.rkey(),
                        add: 0x0102_0304,
                    },
                ),
                wr(
                    6,
                    &old2,
                    SendOp::CompareSwap {
                        remote_addr: word_addr,
                        rkey: mrb.rkey(),
                        compare: 0x0102_0304,
                        swap: 0xdead_beef_cafe_f00d,
                    },
                ),
            ],
            &[srq1.srq_num(); 3],
        )
        .unwrap();
        let sc = wait(&a.cq, 3);
        assert_eq!(
            sc.iter()
                .map(|w| (w.wr_id, w.status, w.opcode))
                .collect::<Vec<_>>(),
            [
                (4, WcStatus::Success, WcOpcode::RdmaRead),
                (5, WcStatus::Success, WcOpcode::FetchAdd),
                (6, WcStatus::Success, WcOpcode::CompSwap),
            ],
            "{kind}"
        );
        assert_eq!(&src.0[30_000..33_000], &src.0[6000..9000], "{kind}: READ");
        assert_eq!(src.0[40_000..40_008], [0; 8], "{kind}: FAA's old value");
        assert_eq!(
            u64::from_ne_bytes(src.0[40_008..40_016].try_into().unwrap()),
            0x0102_0304,
            "{kind}: CAS's old value"
        );
        assert_eq!(
            u64::from_ne_bytes(dst.0[40_000..40_008].try_into().unwrap()),
            0xdead_beef_cafe_f00d,
            "{kind}: swapped"
        );
        assert_eq!(b.dev.stats().xrc_bad_srqn, 0);
        assert_eq!(
            cq1.poll(&mut [Wc::EMPTY; 4]) + cq2.poll(&mut [Wc::EMPTY; 4]),
            0
        );
    }
}

/// A SEND arriving while its SRQ is empty is RNR-NAKed and delivered once a
/// receive is posted (RC semantics).
#[test]
fn empty_srq_is_rnr() {
    let (a, b) = (node(), node());
    let xrcd = b.dev.open_xrcd();
    let cq1 = Cq::new(16, None).unwrap();
    let srq = xrcd.create_srq(&b.pd, &cq1, 16, 1, 0).unwrap();
    let (ini, _tgt) = pair(&a, &b, &xrcd);
    let src = Buf::new(64, |i| i as u8);
    let dst = Buf::new(64, |_| 0);
    let mra = a.pd.reg_mr(src.addr(), 64, all_access()).unwrap();
    let mrb = b.pd.reg_mr(dst.addr(), 64, all_access()).unwrap();
    let sg = [src.sge(&mra, 0, 64)];
    ini.post_send_xrc(&[wr(1, &sg, SendOp::Send)], &[srq.srq_num()])
        .unwrap();
    let t = std::time::Instant::now();
    while b.dev.stats().rnr_nak_sent == 0 {
        assert!(t.elapsed().as_secs() < 10, "no RNR NAK");
        std::thread::yield_now();
    }
    recv(&srq, 9, &dst, &mrb, 0, 64);
    assert_eq!(wait(&a.cq, 1)[0].status, WcStatus::Success);
    assert_eq!(wait(&cq1, 1)[0].wr_id, 9);
    assert_eq!(dst.0, src.0);
}

/// Requests naming no SRQ the target may use — a number nobody has,
/// another domain's XRC SRQ, a basic SRQ — are NAKed as invalid requests:
/// the initiator's WR fails with REM_INV_REQ_ERR, the target counts it, and
/// nothing is delivered or written.
#[test]
fn foreign_srq_numbers_are_refused() {
    let (a, b) = (node(), node());
    let xrcd = b.dev.open_xrcd();
    let other = b.dev.open_xrcd();
    let cq1 = Cq::new(16, None).unwrap();
    let mine = xrcd.create_srq(&b.pd, &cq1, 16, 1, 0).unwrap();
    let theirs = other.create_srq(&b.pd, &cq1, 16, 1, 0).unwrap();
    let basic = b.pd.create_srq(16, 1, 0).unwrap();
    let src = Buf::new(64, |i| i as u8 | 0x80);
    let dst = Buf::new(64, |_| 0);
    let mra = a.pd.reg_mr(src.addr(), 64, all_access()).unwrap();
    let mrb = b.pd.reg_mr(dst.addr(), 64, all_access()).unwrap();
    for s in [&mine, &theirs, &basic] {
        recv(s, 1, &dst, &mrb, 0, 64);
    }
    let sg = [src.sge(&mra, 0, 64)];
    let write = SendOp::Write {
        remote_addr: dst.addr(),
        rkey: mrb.rkey(),
    };
    let mut refused = 0;
    for (what, srqn) in [
        ("no such SRQ", 0x00ab_cdef),
        ("another domain's", theirs.srq_num()),
        ("a basic SRQ", basic.srq_num()),
    ] {
        for op in [SendOp::Send, write] {
            let (ini, tgt) = pair(&a, &b, &xrcd);
            ini.post_send_xrc(&[wr(7, &sg, op)], &[srqn]).unwrap();
            let c = wait(&a.cq, 1);
            assert_eq!(c[0].status, WcStatus::RemInvReqErr, "{what} {op:?}");
            refused += 1;
            assert_eq!(b.dev.stats().xrc_bad_srqn, refused, "{what}");
            assert_eq!(ini.state(), QpState::Err);
            let t = std::time::Instant::now();
            while tgt.state() != QpState::Err {
                assert!(t.elapsed().as_secs() < 10, "target stays {:?}", tgt.state());
                std::thread::yield_now();
            }
        }
    }
    assert!(dst.0.iter().all(|&x| x == 0), "nothing written");
    assert_eq!((mine.len(), theirs.len(), basic.len()), (1, 1, 1));
    assert_eq!(cq1.poll(&mut [Wc::EMPTY; 4]), 0);
    assert_eq!(b.cq.poll(&mut [Wc::EMPTY; 4]), 0);
}

/// Receives go to SRQs: posting one on either XRC half is EINVAL; an
/// initiator's send must name an SRQ, a target sends nothing.
#[test]
fn xrc_queues_refuse_what_they_do_not_have() {
    let (a, b) = (node(), node());
    let xrcd = b.dev.open_xrcd();
    let (ini, tgt) = pair(&a, &b, &xrcd);
    let buf = Buf::new(64, |_| 0);
    let mra = a.pd.reg_mr(buf.addr(), 64, all_access()).unwrap();
    let sg = [buf.sge(&mra, 0, 64)];
    let r = [RecvWr {
        wr_id: 1,
        sg_list: &sg,
    }];
    assert_eq!(ini.post_recv(&r).unwrap_err().1, Errno::EINVAL);
    assert_eq!(tgt.post_recv(&r).unwrap_err().1, Errno::EINVAL);
    assert_eq!(
        ini.post_send(&[wr(1, &sg, SendOp::Send)]).unwrap_err(),
        (0, Errno::EINVAL)
    );
    assert_eq!(
        tgt.post_send_xrc(&[wr(1, &sg, SendOp::Send)], &[1])
            .unwrap_err(),
        (0, Errno::EINVAL)
    );
    assert_eq!(
        ini.post_send_xrc(&[wr(1, &sg, SendOp::Send)], &[])
            .unwrap_err(),
        (0, Errno::EINVAL)
    );
    // A target QP comes from a domain, not a PD.
    let attr = QpInitAttr {
        qp_type: QpType::XrcRecv,
        send_cq: b.cq.clone(),
        recv_cq: b.cq.clone(),
        cap: cap(),
        sq_sig_all: false,
        srq: None,
    };
    assert_eq!(b.pd.create_qp(attr).err(), Some(Errno::EINVAL));
}

/// `ibv_close_xrcd` is EBUSY while an XRC SRQ or a target QP uses the
/// domain; `ibv_open_qp` finds a target of its domain only, and a target
/// lives while any handle on it does.
#[test]
fn domain_lifetimes_and_open_qp() {
    let (a, b) = (node(), node());
    let xrcd = b.dev.open_xrcd();
    let other = b.dev.open_xrcd();
    let cq1 = Cq::new(16, None).unwrap();
    let srq = xrcd.create_srq(&b.pd, &cq1, 16, 1, 0).unwrap();
    let (ini, tgt) = pair(&a, &b, &xrcd);
    let xrcd = xrcd.close().map(|_| ()).unwrap_err();
    assert_eq!(xrcd.1, Errno::EBUSY);
    let xrcd = xrcd.0;

    assert_eq!(other.open_qp(tgt.qp_num()).err(), Some(Errno::ENOENT));
    let rc = QpConfig::new(QpType::Rc).create(&b.pd, &b.cq);
    assert_eq!(
        xrcd.open_qp(rc.qp_num()).err(),
        Some(Errno::ENOENT),
        "not a target"
    );
    let opened = xrcd.open_qp(tgt.qp_num()).unwrap();
    assert_eq!(opened.qp_num(), tgt.qp_num());
    drop(tgt); // the opened handle keeps the target
    assert_eq!(opened.state(), QpState::Rts);
    let src = Buf::new(32, |i| i as u8 + 1);
    let dst = Buf::new(32, |_| 0);
    let mra = a.pd.reg_mr(src.addr(), 32, all_access()).unwrap();
    let mrb = b.pd.reg_mr(dst.addr(), 32, all_access()).unwrap();
    recv(&srq, 5, &dst, &mrb, 0, 32);
    let sg = [src.sge(&mra, 0, 32)];
    ini.post_send_xrc(&[wr(1, &sg, SendOp::Send)], &[srq.srq_num()])
        .unwrap();
    assert_eq!(wait(&a.cq, 1)[0].status, WcStatus::Success);
    assert_eq!(wait(&cq1, 1)[0].qp_num, opened.qp_num());
    assert_eq!(dst.0, src.0);

    let qpn = opened.qp_num();
    drop(opened);
    assert_eq!(
        xrcd.open_qp(qpn).err(),
        Some(Errno::ENOENT),
        "gone with its last handle"
    );
    let xrcd = xrcd.close().map(|_| ()).unwrap_err().0; // the SRQ still uses it
    let srq = srq.destroy().map_err(|e| e.1).map(|_| 0).unwrap_or(1);
    assert_eq!(srq, 0);
    assert!(xrcd.close().is_ok());
    assert!(other.close().is_ok());
}

/// Under loss, duplication, reordering and corruption on both devices
/// (the fault layer of a loopback hub), XRC recovers as RC does: every
/// SEND lands once in the SRQ it names, WRITEs and READs move every byte,
/// and every fetch-and-add executes exactly once.
#[test]
fn recovers_from_faults() {
    let hub = Hub::with_queue(1 << 15);
    let mk = |ip: [u8; 4], seed: u64| {
        let link = hub.link(SocketAddr::from((ip, 4791))).unwrap();
        let mut cfg: FaultConfig = "drop=0.05,dup=0.01,reorder=0.02,corrupt=0.001"
            .parse()
            .unwrap();
        cfg.seed = Some(seed);
        let link: Arc<dyn Link> = Arc::new(FaultLink::new(link, cfg));
        Node::on_link(link, 4096)
    };
    let (a, b) = (mk([127, 11, 0, 1], 7), mk([127, 11, 0, 2], 8));
    let xrcd = b.dev.open_xrcd();
    let (cq1, cq2) = (Cq::new(256, None).unwrap(), Cq::new(256, None).unwrap());
    let srq1 = xrcd.create_srq(&b.pd, &cq1, 128, 1, 0).unwrap();
    let srq2 = xrcd.create_srq(&b.pd, &cq2, 128, 1, 0).unwrap();
    let cfg = QpConfig {
        timeout: Some(11),
        ..QpConfig::new(QpType::XrcSend)
    };
    let (ini, _tgt) = pair_with(&a, &b, &xrcd, &cfg);
    const N: usize = 48;
    const LEN: usize = 5000;
    let src = Buf::new(N * LEN, |i| (i * 13 + i / 4096) as u8);
    let dst = Buf::new(2 * N * LEN + 8, |_| 0);
    let back = Buf::new(N * LEN + 8 * N, |_| 0);
    let mra =
        a.pd.reg_mr(src.addr(), (N * LEN) as u64, all_access())
            .unwrap();
    let mrr =
        a.pd.reg_mr(back.addr(), (N * LEN + 8 * N) as u64, all_access())
            .unwrap();
    let mrb =
        b.pd.reg_mr(
            dst.addr(),
            (2 * N * LEN + 8) as u64,
            all_access() | Access::ON_DEMAND,
        )
        .unwrap();
    for i in 0..N {
        let s = if i % 2 == 0 { &srq1 } else { &srq2 };
        recv(s, i as u64, &dst, &mrb, i * LEN, LEN);
    }
    let word = dst.addr() + (2 * N * LEN) as u64;
    let how = Wait {
        limit: Duration::from_secs(60),
        exact: false,
        ok: true,
        pause: Some(Duration::from_micros(50)),
    };
    for i in 0..N {
        let sg = [src.sge(&mra, i * LEN, LEN)];
        let wsg = [src.sge(&mra, i * LEN, LEN)];
        let rsg = [back.sge(&mrr, i * LEN, LEN)];
        let fsg = [back.sge(&mrr, N * LEN + 8 * i, 8)];
        let srqn = if i % 2 == 0 {
            srq1.srq_num()
        } else {
            srq2.srq_num()
        };
        let far = dst.addr() + ((N + i) * LEN) as u64;
        ini.post_send_xrc(
            &[
                wr(1, &sg, SendOp::Send),
                wr(
                    2,
                    &wsg,
                    SendOp::Write {
                        remote_addr: far,
                        rkey: mrb.rkey(),
                    },
                ),
                wr(
                    3,
                    &rsg,
                    SendOp::Read {
                        remote_addr: far,
                        rkey: mrb.rkey(),
                    },
                ),
                wr(
                    4,
                    &fsg,
                    SendOp::FetchAdd {
                        remote_addr: word,
                        rkey: mrb.rkey(),
                        add: 1,
                    },
                ),
            ],
            &[srqn; 4],
        )
        .unwrap();
        wait_with(&a.cq, 4, how, &|c| {
            format!("{c:?}\n{}\n{}", a.dev.stats(), b.dev.stats())
        });
    }
    let r1 = wait_with(&cq1, N / 2, how, &|c| format!("{c:?}"));
    let r2 = wait_with(&cq2, N / 2, how, &|c| format!("{c:?}"));
    assert!(r1
        .iter()
        .all(|w| w.wr_id % 2 == 0 && w.byte_len == LEN as u32));
    assert!(r2
        .iter()
        .all(|w| w.wr_id % 2 == 1 && w.byte_len == LEN as u32));
    assert_eq!(&dst.0[..N * LEN], &src.0[..], "SENDs");
    assert_eq!(&dst.0[N * LEN..2 * N * LEN], &src.0[..], "WRITEs");
    assert_eq!(&back.0[..N * LEN], &src.0[..], "READs");
    let mut olds: Vec<u64> = (0..N)
        .map(|i| {
            let at = N * LEN + 8 * i;
            u64::from_ne_bytes(back.0[at..at + 8].try_into().unwrap())
        })
        .collect();
    olds.sort();
    assert_eq!(olds, (0..N as u64).collect::<Vec<_>>(), "each FAA once");
    let tail = 2 * N * LEN;
    assert_eq!(
        u64::from_ne_bytes(dst.0[tail..tail + 8].try_into().unwrap()),
        N as u64
    );
    let (sa, sb) = (a.dev.stats(), b.dev.stats());
    assert!(
        sa.fault_dropped + sb.fault_dropped > 0 && sa.retransmits > 0,
        "the faults happened, and were recovered from: {sa}\n{sb}"
    );
    println!(
        "dropped {} + {}, retransmits {}, duplicates answered {}",
        sa.fault_dropped, sb.fault_dropped, sa.retransmits, sb.duplicate_requests
    );
}
