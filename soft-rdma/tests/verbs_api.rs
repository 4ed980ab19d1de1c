//! The verbs error contract: a bad call returns the errno the real library
//! returns, and changes nothing.

use soft_rdma::verbs::*;
use test_support::verbs::{all_access, cap, connect, node, signaled, wait, Buf};

#[test]
fn qp_state_machine_refuses_illegal_transitions_and_missing_attributes() {
    let n = node();
    let qp =
        n.pd.create_qp(QpInitAttr {
            qp_type: QpType::Rc,
            send_cq: n.cq.clone(),
            recv_cq: n.cq.clone(),
            cap: cap(),
            sq_sig_all: false,
            srq: None,
        })
        .unwrap();
    assert_eq!(qp.state(), QpState::Reset);
    assert_eq!(
        qp.modify(&QpAttr {
            state: Some(QpState::Rts),
            ..Default::default()
        }),
        Err(Errno::EINVAL),
        "RESET -> RTS"
    );
    assert_eq!(
        qp.modify(&QpAttr {
            state: Some(QpState::Init),
            ..Default::default()
        }),
        Err(Errno::EINVAL),
        "INIT needs access flags"
    );
    assert_eq!(
        qp.modify(&QpAttr {
            state: Some(QpState::Init),
            access: Some(all_access()),
            port_num: Some(2),
            ..Default::default()
        }),
        Err(Errno::EINVAL),
        "one port"
    );
    assert_eq!(qp.state(), QpState::Reset, "nothing changed");
    qp.modify(&QpAttr {
        state: Some(QpState::Init),
        access: Some(all_access()),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(
        qp.post_send(&[SendWr {
            wr_id: 1,
            sg_list: &[],
            op: SendOp::Send,
            flags: Default::default(),
            ud: None
        }])
        .err()
        .map(|e| e.1),
        Some(Errno::EINVAL),
        "post_send before RTS"
    );
    assert!(
        qp.post_recv(&[RecvWr {
            wr_id: 1,
            sg_list: &[]
        }])
        .is_ok(),
        "post_recv is allowed in INIT"
    );
    assert_eq!(
        qp.modify(&QpAttr {
            state: Some(QpState::Rtr),
            path_mtu: Some(Mtu::M1024),
            ..Default::default()
        }),
        Err(Errno::EINVAL),
        "RTR needs dest QPN, PSN, GID"
    );
    qp.modify(&QpAttr {
        state: Some(QpState::Rtr),
        path_mtu: Some(Mtu::M1024),
        dest_qp_num: Some(0x22),
        rq_psn: Some(0),
        dgid: Some(n.dev.gid(1).unwrap()),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(
        qp.modify(&QpAttr {
            state: Some(QpState::Rts),
            ..Default::default()
        }),
        Err(Errno::EINVAL),
        "RTS needs the SQ PSN"
    );
    qp.modify(&QpAttr {
        state: Some(QpState::Rts),
        sq_psn: Some(0),
        ..Default::default()
    })
    .unwrap();
    // To error: the posted receive is flushed with a completion.
    qp.modify(&QpAttr {
        state: Some(QpState::Err),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(wait(&n.cq, 1)[0].status, WcStatus::WrFlushErr);
    qp.modify(&QpAttr {
        state: Some(QpState::Reset),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(qp.state(), QpState::Reset);
}

#[test]
fn limits_and_registration_rules() {
    let n = node();
    let too_big = QpCap {
        max_send_sge: 33,
        ..cap()
    };
    assert_eq!(
        n.pd.create_qp(QpInitAttr {
            qp_type: QpType::Rc,
            send_cq: n.cq.clone(),
            recv_cq: n.cq.clone(),
            cap: too_big,
            sq_sig_all: false,
            srq: None
        })
        .err(),
        Some(Errno::EINVAL)
    );
    assert_eq!(Cq::new(0, None).err(), Some(Errno::EINVAL));
    let b = Buf::new(4096, |_| 0);
    assert_eq!(
        n.pd.reg_mr(b.addr(), 4096, Access::REMOTE_WRITE).err(),
        Some(Errno::EINVAL),
        "remote write needs local write"
    );
    assert_eq!(
        n.pd.reg_mr(0, u64::MAX, Access::LOCAL_WRITE).err(),
        Some(Errno::EINVAL),
        "implicit needs ON_DEMAND"
    );
    assert_eq!(
        n.pd.reg_mr(b.addr(), 0, Access::LOCAL_WRITE).err(),
        Some(Errno::EINVAL)
    );
    assert_eq!(
        n.pd.reg_mr(0x1000, 4096, Access::LOCAL_WRITE).err(),
        Some(Errno::EFAULT),
        "pinning unmapped memory"
    );
    let ro = n.pd.reg_mr(b.addr(), 4096, Access::ON_DEMAND).unwrap();
    assert_eq!(
        ro.advise(odp::Advice::PrefetchWrite, b.addr(), 4096, true),
        Err(Errno::EPERM)
    );
    assert_eq!(
        ro.advise(odp::Advice::Prefetch, b.addr(), 8192, true),
        Err(Errno::EFAULT)
    );
    let pinned = n.pd.reg_mr(b.addr(), 4096, Access::LOCAL_WRITE).unwrap();
    assert_eq!(
        pinned.advise(odp::Advice::Prefetch, b.addr(), 4096, true),
        Err(Errno::EOPNOTSUPP)
    );
    assert_ne!(pinned.lkey(), ro.lkey());
}

#[test]
fn cq_overflow_is_reported() {
    let n = node();
    let cq = Cq::new(2, None).unwrap();
    let qp =
        n.pd.create_qp(QpInitAttr {
            qp_type: QpType::Rc,
            send_cq: cq.clone(),
            recv_cq: cq.clone(),
            cap: cap(),
            sq_sig_all: false,
            srq: None,
        })
        .unwrap();
    qp.modify(&QpAttr {
        state: Some(QpState::Init),
        access: Some(all_access()),
        ..Default::default()
    })
    .unwrap();
    for i in 0..3 {
        qp.post_recv(&[RecvWr {
            wr_id: i,
            sg_list: &[],
        }])
        .unwrap();
    }
    qp.modify(&QpAttr {
        state: Some(QpState::Err),
        ..Default::default()
    })
    .unwrap(); // three flush completions into a CQ of two
    assert!(cq.overflowed());
    assert_eq!(cq.lost(), 1);
    qp.post_recv(&[RecvWr {
        wr_id: 9,
        sg_list: &[],
    }])
    .unwrap(); // flushed at once in the error state: lost too
    assert_eq!(cq.lost(), 2);
    let got: Vec<u64> = wait(&cq, 2).iter().map(|w| w.wr_id).collect();
    assert_eq!(got, [0, 1]);
    // The application learns it once, as IBV_EVENT_CQ_ERR naming the CQ.
    assert_eq!(
        n.dev.get_async_event(),
        Some(AsyncEvent::CqErr { cq: cq.id() })
    );
    assert_eq!(n.dev.get_async_event(), None);
}

/// `post_send_batch` (the extended send API's `ibv_wr_complete`) posts the
/// whole batch or nothing: a bad WR anywhere leaves the send queue untouched.
#[test]
fn post_send_batch_is_all_or_nothing() {
    let (a, b) = (node(), node());
    let (qa, _qb) = connect(&a, &b, QpType::Rc);
    let local = Buf::new(64, |i| i as u8 + 1);
    let remote = Buf::new(64, |_| 0);
    let mra = a.pd.reg_mr(local.addr(), 64, all_access()).unwrap();
    let mrb = b.pd.reg_mr(remote.addr(), 64, all_access()).unwrap();
    let sges: Vec<Sge> = (0..8).map(|k| local.sge(&mra, k * 8, 8)).collect();
    let write = |wr_id: u64, k: usize| SendWr {
        wr_id,
        sg_list: &sges[k..k + 1],
        op: SendOp::Write {
            remote_addr: remote.addr() + 8 * k as u64,
            rkey: mrb.rkey(),
        },
        flags: signaled(),
        ud: None,
    };
    let too_many = vec![local.sge(&mra, 0, 1); cap().max_send_sge as usize + 1];
    let mut bad = write(3, 2);
    bad.sg_list = &too_many;
    assert_eq!(
        qa.post_send_batch(&[write(1, 0), write(2, 1), bad]),
        Err((2, Errno::EINVAL))
    );
    // A batch larger than the send queue: ENOMEM, nothing posted.
    let n = cap().max_send_wr as usize;
    let big: Vec<SendWr<'_>> = (0..=n).map(|i| write(i as u64, 0)).collect();
    assert_eq!(qa.post_send_batch(&big), Err((n, Errno::ENOMEM)));
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert!(remote.0.iter().all(|&x| x == 0), "nothing written");
    qa.post_send_batch(&[write(1, 0), write(2, 1)]).unwrap();
    // Completions come in order: any from a refused batch would come first.
    let wc = wait(&a.cq, 2);
    assert_eq!(wc.iter().map(|w| w.wr_id).collect::<Vec<_>>(), [1, 2]);
    assert!(wc.iter().all(|w| w.status == WcStatus::Success), "{wc:?}");
    assert_eq!(&remote.0[..16], &local.0[..16]);
}
