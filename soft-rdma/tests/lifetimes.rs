//! Object identities and lifetimes (issue 19, finding 10): key indexes
//! and QPNs that wrap skip live objects and stay within 24 bits.

mod common;
use common::*;
use soft_rdma::transport::Hub;
use soft_rdma::verbs::*;
use std::sync::Arc;

fn hub_node(hub: &Arc<Hub>, last: u8) -> Node {
    let link = hub
        .link(std::net::SocketAddr::from(([127, 32, 0, last], 4791)))
        .unwrap();
    let dev = Device::with_link(Arc::new(link));
    let pd = dev.alloc_pd();
    let cq = Cq::new(256, None).unwrap();
    Node { dev, pd, cq }
}

/// WRITE 64 bytes from `a` into `dst` (MR `mr` of `b`) and check they landed.
fn write_lands(a: &Node, qa: &Qp, dst: &Buf, mr: &Mr, byte: u8) {
    let src = Buf::new(64, |_| byte);
    let smr = a.pd.reg_mr(src.addr(), 64, Access::LOCAL_WRITE).unwrap();
    qa.post_send(&[SendWr {
        wr_id: 1,
        sg_list: &[src.sge(&smr, 0, 64)],
        op: SendOp::Write {
            remote_addr: dst.addr(),
            rkey: mr.rkey(),
        },
        flags: signaled(),
        ud: None,
    }])
    .unwrap();
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
