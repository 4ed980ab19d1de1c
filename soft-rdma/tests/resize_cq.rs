//! `Cq::resize` (`ibv_resize_cq`): rxe's sizes and errnos, completions
//! waiting kept in order across a resize, the new depth enforced.

use soft_rdma::verbs::*;
use std::time::{Duration, Instant};
use test_support::verbs::*;

/// Wait (polling nothing) until `cq` holds `n` completions.
fn until_waiting(cq: &Cq, n: usize) {
    let end = Instant::now() + Duration::from_secs(10);
    while cq.waiting() < n {
        assert!(Instant::now() < end, "{} of {n} completions", cq.waiting());
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// `a` SENDs `n` messages to `b`, whose receives complete on `b.cq`
/// (which is never polled meanwhile: its device's receive thread fills it).
fn send_n(a: &Node, qa: &Qp, b: &Node, qb: &Qp, first: u64, n: u64) {
    let buf = Buf::new(64, |i| i as u8);
    let mra = a.pd.reg_mr(buf.addr(), 64, all_access()).unwrap();
    let rbuf = Buf::new(64, |_| 0);
    let mrb = b.pd.reg_mr(rbuf.addr(), 64, all_access()).unwrap();
    for i in first..first + n {
        qb.post_recv(&[RecvWr {
            wr_id: i,
            sg_list: &[rbuf.sge(&mrb, 0, 64)],
        }])
        .unwrap();
    }
    for i in first..first + n {
        qa.post_send(&[SendWr {
            wr_id: i,
            sg_list: &[buf.sge(&mra, 0, 8)],
            op: SendOp::Send,
            flags: signaled(),
            ud: None,
        }])
        .unwrap();
    }
    let sent = wait(&a.cq, n as usize);
    assert!(sent.iter().all(|w| w.status == WcStatus::Success));
}

#[test]
fn resize_refuses_sizes_rxe_refuses() {
    let n = node();
    let cq = Cq::new(4, None).unwrap();
    let max = n.dev.attr().max_cqe;
    assert_eq!(cq.resize(0), Err(Errno::EINVAL));
    assert_eq!(cq.resize(max + 1), Err(Errno::EINVAL));
    assert_eq!(cq.depth(), 4, "unchanged by a refused resize");
    cq.resize(1).unwrap();
    assert_eq!(cq.depth(), 1);
    cq.resize(max).unwrap();
    assert_eq!(cq.depth(), max);
}

#[test]
fn completions_waiting_survive_a_resize_in_order_and_bound_a_shrink() {
    let a = node();
    let b = Node::of(Device::open().unwrap(), 8);
    let (qa, qb) = connect(&a, &b, QpType::Rc);
    send_n(&a, &qa, &b, &qb, 0, 6);
    until_waiting(&b.cq, 6);
    assert_eq!(b.cq.resize(5), Err(Errno::EINVAL), "below the 6 waiting");
    assert_eq!(b.cq.depth(), 8);
    b.cq.resize(6).unwrap();
    b.cq.resize(32).unwrap();
    // Grown: 20 more fit beside the 6 without a loss.
    send_n(&a, &qa, &b, &qb, 6, 20);
    until_waiting(&b.cq, 26);
    let got = wait(&b.cq, 26);
    let ids: Vec<u64> = got.iter().map(|w| w.wr_id).collect();
    assert_eq!(
        ids,
        (0..26).collect::<Vec<_>>(),
        "in order across the resizes"
    );
    assert!(got.iter().all(|w| w.status == WcStatus::Success));
    assert_eq!(b.cq.lost(), 0);
}

#[test]
fn a_shrunk_cq_holds_no_more_than_its_new_depth() {
    let a = node();
    let b = Node::of(Device::open().unwrap(), 64);
    let (qa, qb) = connect(&a, &b, QpType::Rc);
    b.cq.resize(2).unwrap();
    send_n(&a, &qa, &b, &qb, 0, 3);
    let end = Instant::now() + Duration::from_secs(10);
    while b.cq.lost() == 0 {
        assert!(Instant::now() < end, "the third completion was not lost");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!((b.cq.waiting(), b.cq.lost()), (2, 1));
    assert!(b.cq.overflowed());
}
