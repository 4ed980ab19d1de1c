//! Object identities and lifetimes (issue 19, findings 10 and 11): key
//! indexes and QPNs that wrap skip live objects and stay within 24 bits;
//! a UD destination QPN is masked, not a panic; a PD, CQ or SRQ in use is
//! EBUSY to destroy (as rdma-core); another device's SRQ or CQ is EINVAL.

use soft_rdma::transport::Hub;
use soft_rdma::verbs::*;
use std::sync::Arc;
use test_support::verbs::*;

fn hub_node(hub: &Arc<Hub>, last: u8) -> Node {
    Node::on_hub(hub, ([127, 32, 0, last], 4791).into(), 256)
}

/// WRITE 64 bytes from `a` into `dst` (MR `mr` of `b`) and check they landed.
fn write_lands(a: &Node, qa: &Qp, dst: &Buf, mr: &Mr, byte: u8) {
    let src = Buf::new(64, |_| byte);
    let smr = a.pd.reg_mr(src.addr(), 64, Access::LOCAL_WRITE).unwrap();
    write(qa, 1, src.sge(&smr, 0, 64), dst.addr(), mr.rkey());
    let wc = wait(&a.cq, 1);
    assert_eq!(
        wc[0].status,
        WcStatus::Success,
        "WRITE with the live MR's key"
    );
    assert!(dst.0[..64].iter().all(|&b| b == byte), "the WRITE landed");
}

/// Finding 10: MR key indexes wrap at 2^24. A new MR must not take the
/// index of a live one (before: it replaced it in the table, and its
/// deregistration removed the newcomer... or the live MR's own entry).
#[test]
fn mr_key_indexes_wrap_past_live_mrs() {
    let hub = Hub::new();
    let (a, b) = (hub_node(&hub, 1), hub_node(&hub, 2));
    let (qa, _qb) = connect(&a, &b, QpType::Rc);
    let dst = Buf::new(4096, |_| 0);
    let live = b.pd.reg_mr(dst.addr(), 4096, all_access()).unwrap();
    let scratch = Buf::new(4096, |_| 0);
    // Start just below the wrap: 0xffffff, then 0 (never used), then the
    // live MR's index (must be skipped).
    b.dev.set_next_ids(0x100, 0x00ff_ffff);
    let mut keys = Vec::new();
    let mut mrs = Vec::new();
    for _ in 0..3 {
        let m = b.pd.reg_mr(scratch.addr(), 4096, all_access()).unwrap();
        keys.push(m.lkey() >> 8);
        mrs.push(m);
    }
    assert_eq!(keys[0], 0x00ff_ffff);
    assert!(
        !keys.contains(&(live.lkey() >> 8)) && !keys.contains(&0),
        "indexes {keys:x?} reuse the live MR's {:x} (or 0)",
        live.lkey() >> 8
    );
    drop(mrs);
    // The live MR still answers for its key.
    write_lands(&a, &qa, &dst, &live, 0x5a);
}

/// Finding 10: QPNs are 24 bits (before: 0x1000000 came out, and a UD send
/// to it panicked) and a wrapped counter skips live QPs (before: the new
/// QP replaced the live one in the table, and destroying it cut the live
/// one off).
#[test]
fn qp_numbers_stay_24_bits_and_wrap_past_live_qps() {
    let hub = Hub::new();
    let (a, b) = (hub_node(&hub, 3), hub_node(&hub, 4));
    let (qa, qb) = connect(&a, &b, QpType::Rc);
    let new_qp = |n: &Node| {
        n.pd.create_qp(QpInitAttr {
            qp_type: QpType::Ud,
            send_cq: n.cq.clone(),
            recv_cq: n.cq.clone(),
            cap: cap(),
            sq_sig_all: false,
            srq: None,
        })
        .unwrap()
    };
    b.dev.set_next_ids(0x00ff_fffe, 1);
    let q1 = new_qp(&b);
    let q2 = new_qp(&b);
    let q3 = new_qp(&b);
    let nums = [q1.qp_num(), q2.qp_num(), q3.qp_num()];
    assert_eq!(nums[..2], [0x00ff_fffe, 0x00ff_ffff]);
    assert!(nums.iter().all(|&n| n <= 0x00ff_ffff), "{nums:x?}");
    assert!(nums[2] >= 0x11, "{nums:x?}: 0 and 1 are special");
    // Right onto the live RC QP's number.
    b.dev.set_next_ids(qb.qp_num(), 1);
    let q4 = new_qp(&b);
    assert_ne!(q4.qp_num(), qb.qp_num(), "a live QPN handed out again");
    drop((q1, q2, q3, q4));
    // The live QP still receives.
    let dst = Buf::new(4096, |_| 0);
    let mr = b.pd.reg_mr(dst.addr(), 4096, all_access()).unwrap();
    write_lands(&a, &qa, &dst, &mr, 0x3c);
}

/// Finding 11: a UD `remote_qpn` of more than 24 bits is masked (as rxe
/// does), not a panic in the packet builder.
#[test]
fn ud_remote_qpn_beyond_24_bits_is_masked() {
    let hub = Hub::new();
    let (a, b) = (hub_node(&hub, 5), hub_node(&hub, 6));
    let (ua, ub) = connect(&a, &b, QpType::Ud);
    let dst = Buf::new(2048, |_| 0);
    let mrb = b.pd.reg_mr(dst.addr(), 2048, all_access()).unwrap();
    ub.post_recv(&[RecvWr {
        wr_id: 4,
        sg_list: &[dst.sge(&mrb, 0, 2048)],
    }])
    .unwrap();
    let src = Buf::new(99, |i| i as u8);
    let mra = a.pd.reg_mr(src.addr(), 99, Access::LOCAL_WRITE).unwrap();
    ua.post_send(&[SendWr {
        wr_id: 1,
        sg_list: &[src.sge(&mra, 0, 99)],
        op: SendOp::Send,
        flags: signaled(),
        ud: Some(UdDest {
            ah: a.pd.create_ah(b.dev.gid(1).unwrap()),
            remote_qpn: 0xff00_0000 | ub.qp_num(),
            remote_qkey: 0x1111,
        }),
    }])
    .unwrap();
    assert_eq!(wait(&a.cq, 1)[0].status, WcStatus::Success);
    let wc = wait(&b.cq, 1);
    assert_eq!(wc[0].status, WcStatus::Success);
    assert_eq!(dst.0[40..139], src.0[..]);
}

/// Finding 11: destroying a PD, CQ or SRQ that is still used is EBUSY (as
/// rdma-core), and the object is handed back; once unused it goes.
#[test]
fn pd_cq_srq_in_use_are_busy() {
    let hub = Hub::new();
    let a = hub_node(&hub, 7);
    let buf = Buf::new(4096, |_| 0);
    let pd = a.dev.alloc_pd();
    let mr = pd.reg_mr(buf.addr(), 4096, all_access()).unwrap();
    let (pd, e) = pd.dealloc().unwrap_err();
    assert_eq!(e, Errno::EBUSY, "PD with an MR");
    drop(mr);
    let srq = pd.create_srq(16, 1, 0).unwrap();
    let (pd, e) = pd.clone().dealloc().unwrap_err();
    assert_eq!(e, Errno::EBUSY, "PD with an SRQ");
    let cq = Cq::new(16, None).unwrap();
    let qp = pd
        .create_qp(QpInitAttr {
            qp_type: QpType::Rc,
            send_cq: cq.clone(),
            recv_cq: cq.clone(),
            cap: cap(),
            sq_sig_all: false,
            srq: Some(srq.clone()),
        })
        .unwrap();
    let (cq, e) = cq.destroy().unwrap_err();
    assert_eq!(e, Errno::EBUSY, "CQ with a QP");
    let (srq, e) = srq.destroy().unwrap_err();
    assert_eq!(e, Errno::EBUSY, "SRQ with a QP");
    drop(qp);
    assert!(cq.destroy().is_ok(), "an unused CQ");
    let (pd, e) = pd.dealloc().unwrap_err();
    assert_eq!(e, Errno::EBUSY, "PD with an SRQ still");
    assert!(srq.destroy().is_ok(), "an unused SRQ");
    assert!(pd.dealloc().is_ok(), "an unused PD");
}

/// Finding 11: a QP takes its SRQ and CQs from its own device only (PD ids
/// are per device: another device's SRQ may carry the same PD id).
#[test]
fn srq_or_cq_of_another_device_is_einval() {
    let hub = Hub::new();
    let (a, b) = (hub_node(&hub, 8), hub_node(&hub, 9));
    let (pa, pb) = (a.dev.alloc_pd(), b.dev.alloc_pd());
    let srq_b = pb.create_srq(16, 1, 0).unwrap();
    let attr = |cq: &Cq, srq: Option<Srq>| QpInitAttr {
        qp_type: QpType::Rc,
        send_cq: cq.clone(),
        recv_cq: cq.clone(),
        cap: cap(),
        sq_sig_all: false,
        srq,
    };
    // Both second PDs of their device: the same id on each.
    let r = pa.create_qp(attr(&a.cq, Some(srq_b.clone())));
    assert_eq!(r.err(), Some(Errno::EINVAL), "another device's SRQ");
    let _qb = pb.create_qp(attr(&b.cq, None)).unwrap();
    let r = pa.create_qp(attr(&b.cq, None));
    assert_eq!(r.err(), Some(Errno::EINVAL), "a CQ another device polls");
    pa.create_qp(attr(&a.cq, None)).expect("its own objects");
}

#[test]
fn a_device_has_one_gsi_qp_numbered_1() {
    let n = node();
    let attr = |t| QpInitAttr {
        qp_type: t,
        send_cq: n.cq.clone(),
        recv_cq: n.cq.clone(),
        cap: cap(),
        sq_sig_all: false,
        srq: None,
    };
    assert_eq!(
        n.pd.create_gsi_qp(attr(QpType::Rc)).err(),
        Some(Errno::EINVAL)
    );
    let gsi = n.pd.create_gsi_qp(attr(QpType::Ud)).unwrap();
    assert_eq!(gsi.qp_num(), GSI_QPN);
    assert_eq!(
        n.pd.create_gsi_qp(attr(QpType::Ud)).err(),
        Some(Errno::EBUSY)
    );
    // Ordinary QPs never take QPN 1.
    let other = n.pd.create_qp(attr(QpType::Ud)).unwrap();
    assert_ne!(other.qp_num(), GSI_QPN);
    drop(gsi);
    assert_eq!(
        n.pd.create_gsi_qp(attr(QpType::Ud)).unwrap().qp_num(),
        GSI_QPN
    );
}
