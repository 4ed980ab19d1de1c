//! The CM end to end between two devices on a loopback hub: connect,
//! accept, data over the connected QPs, disconnect and time-wait; the
//! refusals (nobody listening, a consumer's REJ, a port taken); a peer that
//! never answers, one that goes away mid-handshake or dies once connected
//! (the liveness probe), and a live one the probe must not lose; lossy,
//! duplicating, reordering links.

use soft_rdma::transport::faults::{FaultConfig, FaultLink};
use soft_rdma::transport::{Hub, Link};
use soft_rdma::verbs::*;
use soft_rdma_cm::wire::{PortSpace, RejReason};
use soft_rdma_cm::*;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use test_support::verbs::{all_access, signaled, wait, Buf, Node, QpConfig};

/// Quick retransmissions (4.096 µs × 2^12 ≈ 17 ms), as on one host.
fn fast() -> CmConfig {
    CmConfig {
        response_timeout: 12,
        max_retries: 15,
        mra_timeout: 14,
        timewait: Duration::from_millis(50),
        ..CmConfig::default()
    }
}

struct Side {
    node: Node,
    cm: Cm,
    chan: EventChannel,
    faults: Option<Arc<FaultLink<soft_rdma::transport::LoopbackLink>>>,
}

fn side(hub: &Arc<Hub>, ip: [u8; 4], faults: Option<&str>, seed: u64, cfg: CmConfig) -> Side {
    let link = hub.link(SocketAddr::from((ip, 4791))).unwrap();
    let (link, faults): (Arc<dyn Link>, _) = match faults {
        Some(spec) => {
            let mut c: FaultConfig = spec.parse().unwrap();
            c.seed = Some(seed);
            let f = Arc::new(FaultLink::new(link, c));
            (f.clone(), Some(f))
        }
        None => (Arc::new(link), None),
    };
    let node = Node::on_link(link, 1024);
    let cm = Cm::new(&node.dev, cfg).unwrap();
    Side {
        node,
        cm,
        chan: EventChannel::new().unwrap(),
        faults,
    }
}

fn pair(faults: Option<&str>, seed: u64) -> (Side, Side) {
    let hub = Hub::new();
    (
        side(&hub, [127, 20, 0, 1], faults, seed, fast()),
        side(&hub, [127, 20, 0, 2], faults, seed + 1, fast()),
    )
}

fn next(s: &Side) -> Event {
    s.chan
        .get(Some(Duration::from_secs(20)), &s.cm)
        .expect("an event within 20 s")
}

fn expect(s: &Side, kind: EventKind) -> Event {
    let e = next(s);
    assert_eq!(e.kind, kind, "event");
    e
}

const PSN: u32 = 0x12_3456;

fn rc() -> QpConfig {
    QpConfig {
        psn: PSN,
        ..QpConfig::new(QpType::Rc)
    }
}

fn param(qp: &Qp, private_data: &[u8]) -> ConnParam {
    ConnParam {
        qpn: qp.qp_num(),
        psn: PSN,
        responder_resources: 4,
        initiator_depth: 4,
        retry_count: 7,
        rnr_retry_count: 7,
        path_mtu: 5,
        private_data: private_data.to_vec(),
        ..ConnParam::default()
    }
}

/// A connection from `c` (client) to `s` (server) listening on `service`;
/// returns both QPs and ids, established.
fn connect(s: &Side, c: &Side, service: u64) -> (Qp, CmId, Qp, CmId, CmId) {
    let listener = s.cm.create_id(&s.chan);
    listener.listen(service).unwrap();
    let cqp = rc().create(&c.node.pd, &c.node.cq);
    let cid = c.cm.create_id(&c.chan);
    cid.connect(s.cm.gid(), service, &param(&cqp, b"hello"))
        .unwrap();

    let req = expect(s, EventKind::ConnectRequest);
    assert_eq!(req.listen_id, Some(listener.local_id()));
    assert_eq!(&req.private_data[..5], b"hello");
    let remote = req.remote.expect("the REQ's parameters");
    assert_eq!((remote.qpn, remote.psn), (cqp.qp_num(), PSN));
    let sid = req.new_id.expect("a new id");
    let sqp = rc().create(&s.node.pd, &s.node.cq);
    rc().bring_up(&sqp, remote.qpn, c.cm.gid());
    sid.accept(&param(&sqp, b"world")).unwrap();

    let rep = expect(c, EventKind::ConnectResponse);
    assert_eq!(&rep.private_data[..5], b"world");
    let remote = rep.remote.expect("the REP's parameters");
    assert_eq!((remote.qpn, remote.psn), (sqp.qp_num(), PSN));
    rc().bring_up(&cqp, remote.qpn, s.cm.gid());
    cid.establish().unwrap();
    expect(c, EventKind::Established);
    expect(s, EventKind::Established);
    (cqp, cid, sqp, sid, listener)
}

/// A WRITE from `from` lands in `to`'s memory.
fn write_works(from: (&Side, &Qp), to: (&Side, &Qp)) {
    let src = Buf::new(4096, |i| (i * 7) as u8);
    let dst = Buf::new(4096, |_| 0);
    let smr = from
        .0
        .node
        .pd
        .reg_mr(src.addr(), 4096, all_access())
        .unwrap();
    let dmr = to.0.node.pd.reg_mr(dst.addr(), 4096, all_access()).unwrap();
    from.1
        .post_send(&[SendWr {
            wr_id: 1,
            sg_list: &[src.sge(&smr, 0, 4096)],
            op: SendOp::Write {
                remote_addr: dst.addr(),
                rkey: dmr.rkey(),
            },
            flags: signaled(),
            ud: None,
        }])
        .unwrap();
    let wc = wait(&from.0.node.cq, 1);
    assert_eq!(wc[0].status, WcStatus::Success);
    assert_eq!(src.0, dst.0);
}

#[test]
fn connect_accept_write_disconnect_timewait() {
    let (s, c) = pair(None, 1);
    let (cqp, cid, sqp, _sid, _l) = connect(&s, &c, PortSpace::Tcp.service_id(7471));
    write_works((&c, &cqp), (&s, &sqp));
    write_works((&s, &sqp), (&c, &cqp));
    cid.disconnect().unwrap();
    expect(&s, EventKind::Disconnected);
    expect(&c, EventKind::Disconnected);
    expect(&s, EventKind::TimewaitExit);
    expect(&c, EventKind::TimewaitExit);
    // A second disconnect of the same id is refused.
    assert_eq!(cid.disconnect(), Err(Errno::EINVAL));
}

#[test]
fn nobody_listening_is_rejected_at_once_with_invalid_service_id() {
    let (s, c) = pair(None, 2);
    let qp = rc().create(&c.node.pd, &c.node.cq);
    let id = c.cm.create_id(&c.chan);
    let t = Instant::now();
    id.connect(s.cm.gid(), PortSpace::Tcp.service_id(1), &param(&qp, b""))
        .unwrap();
    let e = next(&c);
    assert_eq!(e.kind, EventKind::Rejected(RejReason::INVALID_SERVICE_ID));
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

#[test]
fn a_consumer_reject_carries_its_private_data() {
    let (s, c) = pair(None, 3);
    let l = s.cm.create_id(&s.chan);
    l.listen(PortSpace::Tcp.service_id(9)).unwrap();
    let qp = rc().create(&c.node.pd, &c.node.cq);
    let id = c.cm.create_id(&c.chan);
    id.connect(
        s.cm.gid(),
        PortSpace::Tcp.service_id(9),
        &param(&qp, b"please"),
    )
    .unwrap();
    let req = expect(&s, EventKind::ConnectRequest);
    req.new_id.unwrap().reject(b"no thanks").unwrap();
    let e = next(&c);
    assert_eq!(e.kind, EventKind::Rejected(RejReason::CONSUMER_DEFINED));
    assert_eq!(&e.private_data[..9], b"no thanks");
}

#[test]
fn a_service_id_has_one_listener() {
    let (s, _c) = pair(None, 4);
    let a = s.cm.create_id(&s.chan);
    let b = s.cm.create_id(&s.chan);
    a.listen(PortSpace::Tcp.service_id(5)).unwrap();
    assert_eq!(
        b.listen(PortSpace::Tcp.service_id(5)),
        Err(Errno(libc::EADDRINUSE))
    );
    drop(a);
    b.listen(PortSpace::Tcp.service_id(5)).unwrap();
}

#[test]
fn a_peer_that_never_answers_is_unreachable_in_bounded_time() {
    let hub = Hub::new();
    let cfg = CmConfig {
        response_timeout: 10,
        max_retries: 3,
        ..fast()
    };
    let c = side(&hub, [127, 20, 1, 1], None, 5, cfg);
    let qp = rc().create(&c.node.pd, &c.node.cq);
    let id = c.cm.create_id(&c.chan);
    let nobody = Gid::from_ip([127, 20, 1, 99].into());
    let t = Instant::now();
    id.connect(nobody, PortSpace::Tcp.service_id(1), &param(&qp, b""))
        .unwrap();
    expect(&c, EventKind::Unreachable);
    // 4 sends, 4 ms apart.
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

#[test]
fn a_listener_gone_mid_handshake_ends_in_unreachable() {
    let (s, c) = pair(None, 6);
    let l = s.cm.create_id(&s.chan);
    l.listen(PortSpace::Tcp.service_id(6)).unwrap();
    let qp = rc().create(&c.node.pd, &c.node.cq);
    let id = c.cm.create_id(&c.chan);
    id.connect(s.cm.gid(), PortSpace::Tcp.service_id(6), &param(&qp, b""))
        .unwrap();
    let req = expect(&s, EventKind::ConnectRequest);
    // The server's process ends without answering: its device and CM vanish.
    std::mem::forget(req.new_id);
    drop(l);
    drop(s);
    let e = next(&c);
    assert_eq!(e.kind, EventKind::Unreachable);
}

#[test]
fn destroying_a_connected_id_disconnects_the_peer() {
    let (s, c) = pair(None, 7);
    let (_cqp, cid, _sqp, _sid, _l) = connect(&s, &c, PortSpace::Tcp.service_id(8));
    drop(cid);
    expect(&s, EventKind::Disconnected);
}

#[test]
fn connections_survive_lost_duplicated_and_reordered_mads() {
    let (s, c) = pair(Some("drop=0.2,dup=0.1,reorder=0.1"), 8);
    for i in 0..20 {
        let (_cqp, cid, _sqp, _sid, _l) = connect(&s, &c, PortSpace::Tcp.service_id(100 + i));
        cid.disconnect().unwrap();
        expect(&c, EventKind::Disconnected);
        expect(&s, EventKind::Disconnected);
        expect(&c, EventKind::TimewaitExit);
        expect(&s, EventKind::TimewaitExit);
    }
    for side in [&s, &c] {
        let f = side.faults.as_ref().unwrap().fault_stats().expect("stats");
        println!("{f:?}");
        // (A handshake is a ping-pong: there is rarely a successor to
        // reorder behind, so reordering is not asserted.)
        assert!(f.dropped > 0 && f.duplicated > 0, "{f:?}");
    }
}

/// Quick keepalives: probed after 100 ms of silence, every 50 ms, gone
/// after six unanswered (400 ms).
fn quick_keepalive() -> CmConfig {
    CmConfig {
        keepalive_idle: Duration::from_millis(100),
        keepalive_interval: Duration::from_millis(50),
        keepalive_probes: 6,
        ..fast()
    }
}

#[test]
fn a_peer_whose_cm_dies_without_a_dreq_is_disconnected_in_bounded_time() {
    let hub = Hub::new();
    let s = side(&hub, [127, 20, 2, 1], None, 12, quick_keepalive());
    let c = side(&hub, [127, 20, 2, 2], None, 13, quick_keepalive());
    let (_cqp, _cid, _sqp, sid, l) = connect(&s, &c, PortSpace::Tcp.service_id(12));
    // The server's process dies: no DREQ, no REJ — its CM is simply gone
    // (the ids are never destroyed; the device stays, silent on QP1).
    std::mem::forget(sid);
    std::mem::forget(l);
    let Side { node, cm, .. } = s;
    let t = Instant::now();
    drop(cm);
    let e = next(&c);
    let took = t.elapsed();
    assert_eq!(e.kind, EventKind::Disconnected);
    // Idle 100 ms + 6 × 50 ms = 400 ms; slack for a loaded machine.
    assert!(
        took >= Duration::from_millis(350),
        "not before the probes: {took:?}"
    );
    assert!(took < Duration::from_secs(3), "{took:?}");
    expect(&c, EventKind::TimewaitExit);
    drop(node);
}

#[test]
fn a_live_idle_peer_is_never_taken_for_dead_even_under_loss() {
    let hub = Hub::new();
    let cfg = quick_keepalive();
    let s = side(&hub, [127, 20, 3, 1], Some("drop=0.1"), 14, cfg);
    let c = side(&hub, [127, 20, 3, 2], Some("drop=0.1"), 15, cfg);
    let (cqp, _cid, sqp, _sid, _l) = connect(&s, &c, PortSpace::Tcp.service_id(14));
    let before = c.node.dev.stats().link_received;
    // Neither application reads its channel (a slow poller): the CMs
    // answer probes by themselves. ~15 probe rounds, some MADs lost.
    std::thread::sleep(Duration::from_millis(1500));
    for side in [&s, &c] {
        if let Some(e) = side.chan.get(Some(Duration::ZERO), &side.cm) {
            panic!("a live peer lost its connection: {:?}", e.kind);
        }
    }
    let heard = c.node.dev.stats().link_received - before;
    assert!(
        heard >= 10,
        "the peer was probed and answered: {heard} MADs"
    );
    write_works((&c, &cqp), (&s, &sqp));
}

/// On one host the survivor need not wait for its probes: the peer's
/// device is gone once the shared-memory ring to it ends
/// (`PeerWatch`), which the CM asks before probing. With probes alone
/// this peer would take 15 s to be given up.
#[test]
fn a_same_host_peer_whose_device_closes_is_disconnected_before_the_probes_end() {
    use soft_rdma::transport::udp::UdpLink;
    let cfg = CmConfig {
        keepalive_idle: Duration::from_millis(100),
        keepalive_interval: Duration::from_millis(300),
        keepalive_probes: 50,
        ..fast()
    };
    let on = |ip: [u8; 4]| {
        let link = UdpLink::bind_same_host(SocketAddr::from((ip, 4791))).unwrap();
        let node = Node::on_link(Arc::new(link), 1024);
        let cm = Cm::new(&node.dev, cfg).unwrap();
        Side {
            node,
            cm,
            chan: EventChannel::new().unwrap(),
            faults: None,
        }
    };
    let (s, c) = (on([127, 24, 0, 1]), on([127, 24, 0, 2]));
    let (cqp, _cid, sqp, sid, l) = connect(&s, &c, PortSpace::Tcp.service_id(17));
    for _ in 0..4 {
        write_works((&c, &cqp), (&s, &sqp));
        write_works((&s, &sqp), (&c, &cqp));
    }
    assert!(
        c.node.dev.stats().link_same_host_sent > 0,
        "the rings carry the traffic"
    );
    // The server's process ends: no DREQ, its device closes.
    std::mem::forget(sid);
    std::mem::forget(l);
    let Side { node, cm, .. } = s;
    drop(cm);
    let t = Instant::now();
    drop(node);
    let e = next(&c);
    assert_eq!(e.kind, EventKind::Disconnected);
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "by the ring's end, not the probes: {:?}",
        t.elapsed()
    );
    drop(sqp);
}

/// A REQ that comes while the server is between listeners (the last one
/// destroyed lately, or the port bound and not listening yet) is left
/// to its retransmission, which finds the next listener: no REJ.
#[test]
fn a_req_between_listeners_waits_for_the_next_one() {
    let (s, c) = pair(None, 16);
    let qp = rc().create(&c.node.pd, &c.node.cq);
    // The listener went a while ago: perftest -R's server sleeps 1 s and
    // exchanges parameters between destroying its first listener and
    // listening on the next, and its client's REQ comes in between.
    let service = PortSpace::Tcp.service_id(16);
    drop({
        let l = s.cm.create_id(&s.chan);
        l.listen(service).unwrap();
        l
    });
    std::thread::sleep(Duration::from_millis(1300));
    let id = c.cm.create_id(&c.chan);
    id.connect(s.cm.gid(), service, &param(&qp, b"")).unwrap();
    std::thread::sleep(Duration::from_millis(150));
    let l = s.cm.create_id(&s.chan);
    l.listen(service).unwrap();
    let req = expect(&s, EventKind::ConnectRequest);
    drop(req.new_id);
    expect(&c, EventKind::Rejected(RejReason::CONSUMER_DEFINED));

    // Bound, listening only later (another service: no grace involved).
    let b = s.cm.create_id(&s.chan);
    let port = b.bind(PortSpace::Tcp, 0).unwrap();
    let service = PortSpace::Tcp.service_id(port);
    let qp = rc().create(&c.node.pd, &c.node.cq);
    let id = c.cm.create_id(&c.chan);
    id.connect(s.cm.gid(), service, &param(&qp, b"")).unwrap();
    std::thread::sleep(Duration::from_millis(150));
    b.listen(service).unwrap();
    let req = expect(&s, EventKind::ConnectRequest);
    assert_eq!(req.listen_id, Some(b.local_id()));
}

fn ud_qp(n: &Node) -> Qp {
    let cfg = QpConfig {
        qkey: 0x1ee7,
        ..QpConfig::new(QpType::Ud)
    };
    let qp = cfg.create(&n.pd, &n.cq);
    cfg.bring_up(&qp, 0, Gid([0; 16]));
    qp
}

#[test]
fn a_ud_id_learns_the_services_qp_by_sidr_and_sends_to_it() {
    let (s, c) = pair(None, 9);
    let service = PortSpace::Udp.service_id(4000);
    let l = s.cm.create_id(&s.chan);
    l.listen(service).unwrap();
    let sqp = ud_qp(&s.node);
    let cqp = ud_qp(&c.node);
    let cid = c.cm.create_id(&c.chan);
    cid.resolve_ud(s.cm.gid(), service, b"ud?").unwrap();
    let req = expect(&s, EventKind::ConnectRequest);
    assert_eq!(&req.private_data[..3], b"ud?");
    let sid = req.new_id.unwrap();
    sid.accept_ud(sqp.qp_num(), 0x1ee7, b"ud!").unwrap();
    let e = expect(&c, EventKind::Established);
    assert_eq!(&e.private_data[..3], b"ud!");
    let r = e.remote.unwrap();
    assert_eq!((r.qpn, r.qkey), (sqp.qp_num(), 0x1ee7));

    let src = Buf::new(64, |i| i as u8 ^ 0x5a);
    let dst = Buf::new(40 + 64, |_| 0);
    let smr = c.node.pd.reg_mr(src.addr(), 64, all_access()).unwrap();
    let dmr = s.node.pd.reg_mr(dst.addr(), 104, all_access()).unwrap();
    sqp.post_recv(&[RecvWr {
        wr_id: 7,
        sg_list: &[dst.sge(&dmr, 0, 104)],
    }])
    .unwrap();
    cqp.post_send(&[SendWr {
        wr_id: 1,
        sg_list: &[src.sge(&smr, 0, 64)],
        op: SendOp::Send,
        flags: signaled(),
        ud: Some(UdDest {
            ah: Ah { dgid: s.cm.gid() },
            remote_qpn: r.qpn,
            remote_qkey: r.qkey,
        }),
    }])
    .unwrap();
    let wc = wait(&s.node.cq, 1);
    assert_eq!((wc[0].wr_id, wc[0].status), (7, WcStatus::Success));
    assert_eq!(&dst.0[40..], &src.0[..]);
}

#[test]
fn sidr_without_a_listener_or_refused_is_unreachable_with_its_status() {
    let (s, c) = pair(None, 10);
    let id = c.cm.create_id(&c.chan);
    id.resolve_ud(s.cm.gid(), PortSpace::Udp.service_id(1), b"")
        .unwrap();
    let e = expect(&c, EventKind::Unreachable);
    assert_eq!(e.status, 1, "service ID not supported");

    let l = s.cm.create_id(&s.chan);
    l.listen(PortSpace::Udp.service_id(2)).unwrap();
    let id = c.cm.create_id(&c.chan);
    id.resolve_ud(s.cm.gid(), PortSpace::Udp.service_id(2), b"")
        .unwrap();
    let req = expect(&s, EventKind::ConnectRequest);
    req.new_id.unwrap().reject(b"go away").unwrap();
    let e = expect(&c, EventKind::Unreachable);
    assert_eq!(e.status, 2, "rejected");
    assert_eq!(&e.private_data[..7], b"go away");
}

#[test]
fn a_burst_of_thousands_of_disconnects_leaves_the_cm_working() {
    // Thousands of DREQs and DREPs at once: more completions than QP1's
    // completion queue holds if every send were signalled. Every one must
    // arrive (retransmitted if a burst overran a receive queue) and the CM
    // must still work after.
    let (s, c) = pair(None, 10);
    let n = 3000;
    let listener = s.cm.create_id(&s.chan);
    let service = PortSpace::Tcp.service_id(9000);
    listener.listen(service).unwrap();
    let mut ids = Vec::new();
    for _ in 0..n {
        let cid = c.cm.create_id(&c.chan);
        cid.connect(
            s.cm.gid(),
            service,
            &ConnParam {
                qpn: 0x100,
                ..ConnParam::default()
            },
        )
        .unwrap();
        let req = expect(&s, EventKind::ConnectRequest);
        let sid = req.new_id.expect("a new id");
        sid.accept(&ConnParam {
            qpn: 0x200,
            ..ConnParam::default()
        })
        .unwrap();
        expect(&c, EventKind::ConnectResponse);
        cid.establish().unwrap();
        expect(&c, EventKind::Established);
        expect(&s, EventKind::Established);
        ids.push((cid, sid));
    }
    for (cid, _) in &ids {
        cid.disconnect().unwrap();
    }
    for side in [&s, &c] {
        let (mut disconnected, mut timewait_over) = (0, 0);
        while timewait_over < n {
            match next(side).kind {
                EventKind::Disconnected => disconnected += 1,
                EventKind::TimewaitExit => timewait_over += 1,
                k => panic!("{k:?}"),
            }
        }
        assert_eq!(disconnected, n);
        assert!(!side.cm.qp1_overflowed());
    }
    let (cqp, _cid, sqp, _sid, _l) = connect(&s, &c, PortSpace::Tcp.service_id(9001));
    write_works((&c, &cqp), (&s, &sqp));
}
