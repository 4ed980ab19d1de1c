//! Who receives: an application thread polling an empty CQ handles what has
//! arrived for its device itself; the receive thread handles the rest —
//! and nothing is stranded or reordered between the two.

mod common;
use common::*;
use soft_rdma::transport::Hub;
use soft_rdma::verbs::*;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn write(qp: &Qp, id: u64, src: &Buf, mr: &Mr, len: usize, dst: u64, rkey: u32, sig: bool) {
    qp.post_send(&[SendWr {
        wr_id: id,
        sg_list: &[src.sge(mr, 0, len)],
        op: SendOp::Write {
            remote_addr: dst,
            rkey,
        },
        flags: if sig {
            signaled()
        } else {
            SendFlags::default()
        },
        ud: None,
    }])
    .unwrap();
}

#[test]
fn a_thread_spinning_on_its_cq_receives_the_acks_itself() {
    let (a, b) = (node(), node());
    let (qa, _qb) = connect(&a, &b, QpType::Rc);
    let src = Buf::new(64, |i| i as u8);
    let dst = Buf::new(64 * 200, |_| 0);
    let mra = a.pd.reg_mr(src.addr(), 64, Access::LOCAL_WRITE).unwrap();
    let mrb =
        b.pd.reg_mr(dst.addr(), dst.0.len() as u64, all_access())
            .unwrap();
    for i in 0..200u64 {
        let at = dst.addr() + i * 64;
        write(&qa, i, &src, &mra, 64, at, mrb.rkey(), true);
        let c = wait(&a.cq, 1);
        assert_eq!((c[0].wr_id, c[0].status), (i, WcStatus::Success));
    }
    for i in 0..200 {
        assert_eq!(&dst.0[i * 64..][..64], &src.0[..], "write {i}");
    }
    let (sa, sb) = (a.dev.stats(), b.dev.stats());
    // Each ACK arrived while `a`'s thread was polling for it.
    assert!(
        sa.rcvd_inline > 0 && sa.rcvd_inline <= sa.rcvd_pkts,
        "inline {} of {}",
        sa.rcvd_inline,
        sa.rcvd_pkts
    );
    // Nobody polled `b`'s CQ: its receive thread took every WRITE.
    assert_eq!(sb.rcvd_inline, 0);
    assert!(sb.rcvd_pkts >= 200 && sb.rx_wakeups > 0, "{sb}");
}

#[test]
fn arrivals_are_handled_after_a_poller_leaves_without_a_completion() {
    let (a, b) = (node(), node());
    let (_qa, qb) = connect(&a, &b, QpType::Rc);
    // `a` polls its CQ once, finds nothing, and never calls again: arrivals
    // stop waking its receive thread for a moment, then must again.
    let mut none = [Wc::EMPTY; 4];
    assert_eq!(a.cq.poll(&mut none), 0);
    std::thread::sleep(Duration::from_millis(5));
    let src = Buf::new(4096, |i| (i * 3) as u8);
    let dst = Buf::new(4096, |_| 0);
    let mrb = b.pd.reg_mr(src.addr(), 4096, Access::LOCAL_WRITE).unwrap();
    let mra = a.pd.reg_mr(dst.addr(), 4096, all_access()).unwrap();
    for i in 0..20 {
        write(&qb, i, &src, &mrb, 4096, dst.addr(), mra.rkey(), true);
        let c = wait(&b.cq, 1);
        assert_eq!(c[0].status, WcStatus::Success);
        // Leave `a` alone longer than a poller counts as polling.
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(dst.0, src.0);
    assert_eq!(a.dev.stats().rcvd_inline, 0);
}

/// A device on an in-process hub with room for every datagram (no loss).
fn hub_node(hub: &Arc<Hub>, ip: [u8; 4]) -> Node {
    let link = hub.link(SocketAddr::from((ip, 4791))).unwrap();
    let dev = Device::with_link(Arc::new(link));
    let pd = dev.alloc_pd();
    let cq = Cq::new(4096, None).unwrap();
    Node { dev, pd, cq }
}

#[test]
fn poller_and_receive_thread_take_turns_without_reordering() {
    let hub = Hub::with_queue(1 << 20);
    let (a, b) = (hub_node(&hub, [10, 9, 0, 1]), hub_node(&hub, [10, 9, 0, 2]));
    let (qa, _qb) = connect(&a, &b, QpType::Rc);
    const N: usize = 20_000;
    let src = Buf::new(256, |i| i as u8);
    let dst = Buf::new(N * 16, |_| 0);
    let mra = a.pd.reg_mr(src.addr(), 256, Access::LOCAL_WRITE).unwrap();
    let mrb =
        b.pd.reg_mr(dst.addr(), dst.0.len() as u64, all_access())
            .unwrap();
    // `b`'s application polls its (always empty) CQ in bursts with pauses
    // longer than the grace period, so both kinds of receiver take packets.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = {
        let (cq, stop) = (b.cq.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut none = [Wc::EMPTY; 4];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let t = Instant::now();
                while t.elapsed() < Duration::from_micros(500) {
                    assert_eq!(cq.poll(&mut none), 0);
                }
                std::thread::sleep(Duration::from_micros(700));
            }
        })
    };
    for i in 0..N {
        let len = 1 + i % 16;
        let at = dst.addr() + (i * 16) as u64;
        let last = i == N - 1;
        write(
            &qa,
            i as u64,
            &src,
            &mra,
            len,
            at,
            mrb.rkey(),
            i % 64 == 63 || last,
        );
        if i % 64 == 63 || last {
            let c = wait(&a.cq, 1);
            assert_eq!(c[0].status, WcStatus::Success, "write {i}");
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    poller.join().unwrap();
    for i in 0..N {
        let len = 1 + i % 16;
        assert_eq!(&dst.0[i * 16..][..len], &src.0[..len], "write {i}");
    }
    let sb = b.dev.stats();
    assert_eq!(sb.link_recv_dropped, 0, "the hub lost datagrams: {sb}");
    // No loss, so any out-of-sequence packet would be two receivers
    // handling datagrams out of their arrival order.
    assert_eq!(
        (sb.out_of_sequence, sb.duplicate_requests, sb.retransmits),
        (0, 0, 0),
        "{sb}"
    );
    assert!(
        sb.rcvd_inline > 0 && sb.rcvd_inline < sb.rcvd_pkts,
        "both kinds of receiver must have taken packets: {sb}"
    );
}
