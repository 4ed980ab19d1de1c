//! UD multicast on the device (rxe's semantics): attach/detach and their
//! errnos, a send to a multicast GID fanned out to every attached QP of
//! every device of the group and to nobody else, and multicast packets that
//! are malformed or unauthorised dropped and counted. Devices on a loopback
//! hub, whose links join groups as a UDP link's sockets do.

use soft_rdma::transport::{Hub, Link, LoopbackLink, Outgoing, RecvBatch};
use soft_rdma::verbs::*;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use test_support::verbs::*;

const QKEY: u32 = 0x1111;

fn group(ip: &str) -> Gid {
    Gid::from_ip(ip.parse().unwrap())
}

fn addr(n: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, n], 4791))
}

/// A UD QP in RTS on `n` with `slots` receives of 40 + 64 bytes posted.
struct Member {
    qp: Qp,
    buf: Buf,
    _mr: Mr,
}

fn member(n: &Node, slots: usize) -> Member {
    let cfg = QpConfig::new(QpType::Ud);
    let qp = cfg.create(&n.pd, &n.cq);
    cfg.bring_up(&qp, 0, n.dev.gid(1).unwrap());
    let buf = Buf::new(slots.max(1) * 104, |_| 0);
    let mr =
        n.pd.reg_mr(buf.addr(), buf.0.len() as u64, all_access())
            .unwrap();
    for i in 0..slots {
        qp.post_recv(&[RecvWr {
            wr_id: i as u64,
            sg_list: &[buf.sge(&mr, i * 104, 104)],
        }])
        .unwrap();
    }
    Member { qp, buf, _mr: mr }
}

/// Send 64 bytes of `fill` from `qp` on `n` to `to` (QPN 0xFFFFFF).
fn send(n: &Node, qp: &Qp, to: Gid, qkey: u32, fill: u8) {
    let src = Buf::new(64, |_| fill);
    let mr = n.pd.reg_mr(src.addr(), 64, all_access()).unwrap();
    qp.post_send(&[SendWr {
        wr_id: 99,
        sg_list: &[src.sge(&mr, 0, 64)],
        op: SendOp::Send,
        flags: signaled(),
        ud: Some(UdDest {
            ah: n.pd.create_ah(to),
            remote_qpn: MULTICAST_QPN,
            remote_qkey: qkey,
        }),
    }])
    .unwrap();
    assert_eq!(wait(&n.cq, 1)[0].status, WcStatus::Success);
}

/// Nothing arrives on `cq` for a while.
fn quiet(cq: &Cq) {
    std::thread::sleep(Duration::from_millis(100));
    let mut wc = [Wc::EMPTY; 4];
    let got = cq.poll(&mut wc);
    assert_eq!(got, 0, "unexpected completions: {:?}", &wc[..got]);
}

#[test]
fn a_send_reaches_every_attached_qp_of_every_member_device_and_nobody_else() {
    let hub = Hub::new();
    let (s, r1, r2, other) = (
        Node::on_hub(&hub, addr(1), 64),
        Node::on_hub(&hub, addr(2), 64),
        Node::on_hub(&hub, addr(3), 64),
        Node::on_hub(&hub, addr(4), 64),
    );
    let g = group("239.1.1.1");
    let sender = member(&s, 4);
    let members: Vec<(&Node, Member)> = [&r1, &r1, &r2, &r2]
        .into_iter()
        .map(|n| (n, member(n, 4)))
        .collect();
    for (_, m) in &members {
        m.qp.attach_mcast(g, 0).unwrap();
        m.qp.attach_mcast(g, 0)
            .expect("attaching again is a success");
    }
    // A UD QP of a member device that did not attach, and one of a device
    // that joined nothing.
    let bystander = member(&r2, 4);
    let outsider = member(&other, 4);
    send(&s, &sender.qp, g, QKEY, 0x5a);
    for n in [&r1, &r2] {
        let wcs = wait(&n.cq, 2);
        for wc in &wcs {
            assert_eq!(wc.status, WcStatus::Success, "{wc:?}");
            assert_eq!((wc.byte_len, wc.src_qp), (104, sender.qp.qp_num()));
        }
        let qps: Vec<u32> = wcs.iter().map(|w| w.qp_num).collect();
        assert!(qps.len() == 2 && qps[0] != qps[1], "{qps:?}");
        assert!(!qps.contains(&bystander.qp.qp_num()));
    }
    for (_, m) in &members {
        let got = &m.buf.0[..104];
        assert_eq!(&got[8..24], &s.dev.gid(1).unwrap().0, "GRH source");
        assert_eq!(&got[24..40], &g.0, "GRH destination: the group");
        assert!(got[40..].iter().all(|&b| b == 0x5a));
    }
    // The sender's QP is not attached: it gets nothing (its device did not
    // join); neither do the bystander nor the outsider's device.
    quiet(&s.cq);
    quiet(&other.cq);
    assert_eq!(other.dev.stats().link_received, 0);
    assert!(bystander.buf.0.iter().all(|&b| b == 0));
    assert!(outsider.buf.0.iter().all(|&b| b == 0));

    // Detached QPs hear no more; the one still attached does.
    for (_, m) in &members[1..] {
        m.qp.detach_mcast(g, 0).unwrap();
    }
    send(&s, &sender.qp, g, QKEY, 0x33);
    let wc = wait(&r1.cq, 1)[0];
    assert_eq!(wc.qp_num, members[0].1.qp.qp_num());
    quiet(&r1.cq);
    quiet(&r2.cq);
    let before = r2.dev.stats().link_received;
    send(&s, &sender.qp, g, QKEY, 0x34);
    wait(&r1.cq, 1);
    assert_eq!(
        r2.dev.stats().link_received,
        before,
        "a device whose last QP detached left the group"
    );
}

#[test]
fn the_sender_hears_itself_when_its_qp_is_attached() {
    // As rxe behind the kernel's rdma_cm (which joins the group at the IP
    // level): the looped-back datagram reaches every attached QP, the
    // sender's own included.
    let hub = Hub::new();
    let s = Node::on_hub(&hub, addr(1), 16);
    let g = group("ff0e::1:2");
    let m = member(&s, 2);
    m.qp.attach_mcast(g, 0).unwrap();
    let src = Buf::new(64, |_| 7);
    let mr = s.pd.reg_mr(src.addr(), 64, all_access()).unwrap();
    m.qp.post_send(&[SendWr {
        wr_id: 99,
        sg_list: &[src.sge(&mr, 0, 64)],
        op: SendOp::Send,
        flags: signaled(),
        ud: Some(UdDest {
            ah: s.pd.create_ah(g),
            remote_qpn: MULTICAST_QPN,
            remote_qkey: QKEY,
        }),
    }])
    .unwrap();
    // The send's completion and the receive's, on the one CQ.
    let wcs = wait(&s.cq, 2);
    assert!(wcs.iter().all(|w| w.status == WcStatus::Success), "{wcs:?}");
    let recv = wcs.iter().find(|w| w.wr_id != 99).expect("a receive");
    assert_eq!(recv.src_qp, m.qp.qp_num());
}

#[test]
fn bad_attaches_and_detaches_get_rxes_errnos() {
    let n = Node::on_hub(&Hub::new(), addr(1), 16);
    let g = group("239.2.2.2");
    let rc = QpConfig::new(QpType::Rc).create(&n.pd, &n.cq);
    assert_eq!(rc.attach_mcast(g, 0), Err(Errno::EINVAL), "not UD");
    let ud = member(&n, 1);
    for unicast in ["10.0.0.9", "fe80::1", "::1", "223.255.255.255"] {
        assert_eq!(
            ud.qp.attach_mcast(group(unicast), 0),
            Err(Errno::EINVAL),
            "{unicast}"
        );
    }
    assert_eq!(ud.qp.detach_mcast(g, 0), Err(Errno::EINVAL), "not attached");
    ud.qp.attach_mcast(g, 0).unwrap();
    assert_eq!(
        ud.qp.detach_mcast(group("239.2.2.3"), 0),
        Err(Errno::EINVAL),
        "another group"
    );
    ud.qp.detach_mcast(g, 0).unwrap();
    assert_eq!(ud.qp.detach_mcast(g, 0), Err(Errno::EINVAL), "twice");

    let attr = n.dev.attr();
    assert_eq!(
        (
            attr.max_mcast_grp,
            attr.max_mcast_qp_attach,
            attr.max_total_mcast_qp_attach
        ),
        (8192, 56, 0x70000)
    );
    let qps: Vec<Member> = (0..=attr.max_mcast_qp_attach)
        .map(|_| member(&n, 0))
        .collect();
    for m in &qps[..attr.max_mcast_qp_attach] {
        m.qp.attach_mcast(g, 0).unwrap();
    }
    assert_eq!(
        qps[attr.max_mcast_qp_attach].qp.attach_mcast(g, 0),
        Err(Errno::ENOMEM),
        "one QP past max_mcast_qp_attach"
    );
    // Destroying a QP detaches it: room for another.
    drop(qps.into_iter().next());
    let late = member(&n, 0);
    late.qp.attach_mcast(g, 0).unwrap();
}

/// A raw port of the hub at `at`, joined to `g`'s group.
fn spy(hub: &Arc<Hub>, at: SocketAddr, g: Gid) -> LoopbackLink {
    let l = hub.link(at).unwrap();
    l.join(g.to_ip()).unwrap();
    l
}

#[test]
fn malformed_and_unauthorised_multicast_packets_are_dropped_and_counted() {
    let hub = Hub::new();
    let (s, r) = (
        Node::on_hub(&hub, addr(1), 16),
        Node::on_hub(&hub, addr(2), 16),
    );
    let g = group("239.3.3.3");
    let to = SocketAddr::new(g.to_ip(), 4791);
    let sender = member(&s, 1);
    let m = member(&r, 4);
    m.qp.attach_mcast(g, 0).unwrap();
    // A real datagram, captured by a raw member of the group.
    let raw = spy(&hub, addr(9), g);
    send(&s, &sender.qp, g, QKEY, 1);
    assert_eq!(wait(&r.cq, 1)[0].status, WcStatus::Success);
    let mut batch = RecvBatch::new(4);
    assert_eq!(
        raw.recv(&mut batch, Some(Duration::from_secs(5))).unwrap(),
        1
    );
    let (from, good) = batch.get(0);
    assert_eq!(from, addr(1));
    let good = good.to_vec();
    let before = r.dev.stats();

    // Not from the sender's address: the ICRC (which covers the source)
    // fails — so does a flipped payload bit; a truncated header does not
    // parse.
    let mut flipped = good.clone();
    flipped[good.len() - 10] ^= 1;
    raw.send(&[
        Outgoing {
            peer: to,
            data: &good,
        },
        Outgoing {
            peer: to,
            data: &flipped,
        },
        Outgoing {
            peer: to,
            data: &good[..10],
        },
    ])
    .unwrap();
    // To the device's own address: no group (and not from the sender).
    raw.send(&[Outgoing {
        peer: addr(2),
        data: &good,
    }])
    .unwrap();
    // The wrong Q_Key, from the right address and with a valid ICRC: the
    // sender's QP sends it.
    send(&s, &sender.qp, g, QKEY ^ 1, 2);
    std::thread::sleep(Duration::from_millis(200));
    quiet(&r.cq);
    let after = r.dev.stats();
    assert_eq!(after.icrc_errors - before.icrc_errors, 3, "{after}");
    assert_eq!(after.parse_errors - before.parse_errors, 1, "{after}");
    assert_eq!(after.qkey_violations - before.qkey_violations, 1, "{after}");
    // Still a member: a good one lands in the next receive.
    send(&s, &sender.qp, g, QKEY, 3);
    let wc = wait(&r.cq, 1)[0];
    assert_eq!((wc.status, wc.wr_id), (WcStatus::Success, 1));
}

#[test]
fn over_udp_links_the_group_is_ip_multicast_on_loopback() {
    // Real sockets: each member device binds group:4791 and joins the group
    // on its loopback address; the sender needs no multicast route.
    let link = |n: u8| -> Arc<dyn Link> {
        let a = SocketAddr::from(([127, 77, 0, n], 0));
        Arc::new(soft_rdma::transport::UdpLink::bind(a).expect("bind"))
    };
    let (s, r1, r2, other) = (
        Node::on_link(link(1), 16),
        Node::on_link(link(2), 16),
        Node::on_link(link(3), 16),
        Node::on_link(link(4), 16),
    );
    let g = group("239.77.0.9");
    let sender = member(&s, 1);
    let (m1, m2) = (member(&r1, 2), member(&r2, 2));
    m1.qp.attach_mcast(g, 0).unwrap();
    m2.qp.attach_mcast(g, 0).unwrap();
    send(&s, &sender.qp, g, QKEY, 0x42);
    for (n, m) in [(&r1, &m1), (&r2, &m2)] {
        let wc = wait(&n.cq, 1)[0];
        assert_eq!(
            (wc.status, wc.src_qp),
            (WcStatus::Success, sender.qp.qp_num())
        );
        assert_eq!(&m.buf.0[24..40], &g.0);
        assert!(m.buf.0[40..104].iter().all(|&b| b == 0x42));
    }
    quiet(&other.cq);
    assert_eq!(other.dev.stats().link_received, 0, "not a member");
    // The last QP of r2 detaches: r2's socket leaves the group.
    m2.qp.detach_mcast(g, 0).unwrap();
    let before = r2.dev.stats().link_received;
    send(&s, &sender.qp, g, QKEY, 0x43);
    assert_eq!(wait(&r1.cq, 1)[0].status, WcStatus::Success);
    quiet(&r2.cq);
    assert_eq!(r2.dev.stats().link_received, before);
}

#[test]
fn a_capture_records_a_received_group_datagram_as_sent_to_the_group() {
    if !test_support::tools::works("tshark", &["-v"]) {
        return;
    }
    let path = std::env::temp_dir().join(format!("mcast-{}.pcap", std::process::id()));
    let hub = Hub::new();
    let s = Node::on_hub(&hub, addr(1), 16);
    let cap = soft_rdma::transport::PcapLink::new(hub.link(addr(2)).unwrap(), &path).unwrap();
    let r = Node::on_link(Arc::new(cap), 16);
    let g = group("239.4.4.4");
    let sender = member(&s, 1);
    let m = member(&r, 1);
    m.qp.attach_mcast(g, 0).unwrap();
    send(&s, &sender.qp, g, QKEY, 9);
    assert_eq!(wait(&r.cq, 1)[0].status, WcStatus::Success);
    drop((m, r));
    let o = std::process::Command::new("tshark")
        .args(["-r", path.to_str().unwrap(), "-T", "fields"])
        .args([
            "-e",
            "ip.src",
            "-e",
            "ip.dst",
            "-e",
            "infiniband.bth.destqp",
        ])
        .output()
        .unwrap();
    let t = String::from_utf8_lossy(&o.stdout);
    assert_eq!(t.trim(), "10.0.0.1\t239.4.4.4\t0xffffff", "{o:?}");
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn over_udp_links_forged_and_malformed_group_datagrams_are_dropped_and_counted() {
    let udp = |n: u8| soft_rdma::transport::UdpLink::bind(SocketAddr::from(([127, 77, 1, n], 0)));
    let (s, r) = (
        Node::on_link(Arc::new(udp(1).unwrap()), 16),
        Node::on_link(Arc::new(udp(2).unwrap()), 16),
    );
    let g = group("239.77.1.9");
    let to = SocketAddr::new(g.to_ip(), 4791);
    let sender = member(&s, 1);
    let m = member(&r, 2);
    m.qp.attach_mcast(g, 0).unwrap();
    // Another local user's socket in the group: it reads what any member
    // reads (as on a host with a kernel RoCE device) and sends what it likes.
    let spy = udp(3).unwrap();
    spy.join(g.to_ip()).unwrap();
    send(&s, &sender.qp, g, QKEY, 5);
    assert_eq!(wait(&r.cq, 1)[0].status, WcStatus::Success);
    let mut batch = RecvBatch::new(4);
    assert_eq!(
        spy.recv(&mut batch, Some(Duration::from_secs(5))).unwrap(),
        1
    );
    assert_eq!(batch.group(0), Some(g.to_ip()));
    let good = batch.get(0).1.to_vec();
    let before = r.dev.stats();
    // Replayed from its own address (the ICRC covers the source), and cut
    // short.
    spy.send(&[
        Outgoing {
            peer: to,
            data: &good,
        },
        Outgoing {
            peer: to,
            data: &good[..9],
        },
    ])
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    quiet(&r.cq);
    let after = r.dev.stats();
    assert_eq!(after.icrc_errors - before.icrc_errors, 1, "{after}");
    assert_eq!(after.parse_errors - before.parse_errors, 1, "{after}");
    // The member still hears the group.
    send(&s, &sender.qp, g, QKEY, 6);
    assert_eq!(wait(&r.cq, 1)[0].status, WcStatus::Success);
}
