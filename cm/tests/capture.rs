//! A real connection's CM traffic, captured by the device's pcap middleware,
//! read by tshark's InfiniBand dissector (an independent parser): REQ, MRA,
//! REP, RTU, DREQ, DREP in RoCEv2 UD packets between the two QP1s, the
//! service ID's port, and the rdma_cm IP header (addresses and source port)
//! in the REQ's private data.

use soft_rdma::transport::{Hub, PcapLink};
use soft_rdma::verbs::*;
use soft_rdma_cm::wire::{IpHeader, PortSpace};
use soft_rdma_cm::*;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use test_support::tools;
use test_support::verbs::{Node, QpConfig};

fn next(chan: &EventChannel, cm: &Cm, kind: EventKind) -> Event {
    let e = chan
        .get(Some(Duration::from_secs(20)), cm)
        .expect("an event");
    assert_eq!(e.kind, kind);
    e
}

#[test]
fn tshark_decodes_a_captured_connection() {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cm_connection.pcap");
    let _ = std::fs::remove_file(&path);
    let hub = Hub::new();
    let side = |last: u8| {
        let link = hub
            .link(SocketAddr::from(([127, 22, 0, last], 4791)))
            .unwrap();
        let node = Node::on_link(Arc::new(PcapLink::new(link, &path).unwrap()), 64);
        let cm = Cm::new(&node.dev, CmConfig::default()).unwrap();
        (node, cm, EventChannel::new().unwrap())
    };
    let (sn, scm, sch) = side(1);
    let (cn, ccm, cch) = side(2);
    let cfg = QpConfig::new(QpType::Rc);
    let port = 7471;
    let listener = scm.create_id(&sch);
    listener.listen(PortSpace::Tcp.service_id(port)).unwrap();

    let cqp = cfg.create(&cn.pd, &cn.cq);
    let mut pd = vec![0u8; 36];
    IpHeader {
        src: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 22, 0, 2)), 40001),
        dst: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)),
    }
    .emit(&mut pd)
    .unwrap();
    let param = |qp: &Qp, pd: Vec<u8>| ConnParam {
        qpn: qp.qp_num(),
        psn: 0,
        responder_resources: 1,
        initiator_depth: 1,
        retry_count: 7,
        rnr_retry_count: 7,
        path_mtu: 3,
        private_data: pd,
        ..ConnParam::default()
    };
    let cid = ccm.create_id(&cch);
    cid.connect(scm.gid(), PortSpace::Tcp.service_id(port), &param(&cqp, pd))
        .unwrap();
    let req = next(&sch, &scm, EventKind::ConnectRequest);
    let sid = req.new_id.unwrap();
    let sqp = cfg.create(&sn.pd, &sn.cq);
    cfg.bring_up(&sqp, cqp.qp_num(), ccm.gid());
    sid.accept(&param(&sqp, vec![])).unwrap();
    next(&cch, &ccm, EventKind::ConnectResponse);
    cfg.bring_up(&cqp, sqp.qp_num(), scm.gid());
    cid.establish().unwrap();
    next(&sch, &scm, EventKind::Established);
    cid.disconnect().unwrap();
    next(&sch, &scm, EventKind::Disconnected);
    next(&cch, &ccm, EventKind::Established);
    next(&cch, &ccm, EventKind::Disconnected);
    drop((cid, sid, listener, scm, ccm, cqp, sqp, sn, cn));

    if !tools::works("tshark", &["-v"]) {
        return;
    }
    let out = Command::new("tshark")
        .arg("-r")
        .arg(&path)
        .args(["-Y", "infiniband.mad.mgmtclass == 0x07"])
        .args(["-T", "fields", "-E", "separator=|"])
        .args(["-e", "infiniband.bth.destqp", "-e", "infiniband.deth.srcqp"])
        .args(["-e", "infiniband.mad.attributeid"])
        .args(["-e", "infiniband.cm.req.serviceid.dport"])
        .args([
            "-e",
            "infiniband.cm.req.ip_cm.sip4",
            "-e",
            "infiniband.cm.req.ip_cm.dip4",
        ])
        .args(["-e", "infiniband.cm.req.ip_cm.sport"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let num = |s: &str| match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).unwrap_or(u64::MAX),
        None => s.parse().unwrap_or(u64::MAX),
    };
    // Each packet is recorded by both devices' links (sent and received).
    let mut attrs = std::collections::BTreeSet::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split('|').collect();
        assert_eq!((num(f[0]), num(f[1])), (1, 1), "QP1 to QP1: {line}");
        let attr = num(f[2]);
        attrs.insert(attr);
        if attr == 0x10 {
            assert_eq!(num(f[3]), u64::from(port), "{line}");
            assert_eq!(f[4], "127.22.0.2", "{line}");
            assert_eq!(f[5], "127.0.0.1", "{line}");
            assert_eq!(num(f[6]), 40001, "{line}");
        }
    }
    // REQ, MRA, REP, RTU, DREQ, DREP.
    let want: std::collections::BTreeSet<u64> = [0x10, 0x11, 0x13, 0x14, 0x15, 0x16].into();
    assert_eq!(attrs, want, "{text}");
}

/// `tshark -r path -Y filter -T fields -e …`: one `|`-separated line per
/// packet (None without tshark).
fn fields(path: &std::path::Path, filter: &str, names: &[&str]) -> Option<Vec<Vec<String>>> {
    if !tools::works("tshark", &["-v"]) {
        return None;
    }
    let mut c = Command::new("tshark");
    c.arg("-r").arg(path).args(["-Y", filter]);
    c.args(["-T", "fields", "-E", "separator=|"]);
    for n in names {
        c.args(["-e", n]);
    }
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.split('|').map(str::to_string).collect())
            .collect(),
    )
}

/// The liveness probe as a kernel peer would see it: a Get of the CM
/// class's ClassPortInfo, answered by a GetResp with the same transaction
/// ID and status 0x000C; and a REQ's traffic class (rdma_cm's TOS) and
/// XRC transport (service type 3, extended).
#[test]
fn tshark_decodes_the_liveness_probe_and_an_xrc_req_with_its_traffic_class() {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cm_probe.pcap");
    let _ = std::fs::remove_file(&path);
    let hub = Hub::new();
    let cfg = CmConfig {
        keepalive_idle: Duration::from_millis(50),
        keepalive_interval: Duration::from_millis(50),
        ..CmConfig::default()
    };
    let side = |last: u8| {
        let link = hub
            .link(SocketAddr::from(([127, 23, 0, last], 4791)))
            .unwrap();
        let node = Node::on_link(Arc::new(PcapLink::new(link, &path).unwrap()), 64);
        let cm = Cm::new(&node.dev, cfg).unwrap();
        (node, cm, EventChannel::new().unwrap())
    };
    let (sn, scm, sch) = side(1);
    let (cn, ccm, cch) = side(2);
    let service = PortSpace::Ib.service_id(7472);
    let listener = scm.create_id(&sch);
    listener.listen(service).unwrap();
    let qcfg = QpConfig::new(QpType::Rc);
    let cqp = qcfg.create(&cn.pd, &cn.cq);
    let param = |qp: &Qp| ConnParam {
        qpn: qp.qp_num(),
        retry_count: 7,
        rnr_retry_count: 7,
        path_mtu: 3,
        traffic_class: 0x20,
        xrc: true,
        ..ConnParam::default()
    };
    let cid = ccm.create_id(&cch);
    cid.connect(scm.gid(), service, &param(&cqp)).unwrap();
    let sid = next(&sch, &scm, EventKind::ConnectRequest).new_id.unwrap();
    let sqp = qcfg.create(&sn.pd, &sn.cq);
    sid.accept(&param(&sqp)).unwrap();
    next(&cch, &ccm, EventKind::ConnectResponse);
    cid.establish().unwrap();
    next(&sch, &scm, EventKind::Established);
    next(&cch, &ccm, EventKind::Established);
    // Idle: both sides probe each other.
    std::thread::sleep(Duration::from_millis(400));
    drop((cid, sid, listener, scm, ccm, cqp, sqp, sn, cn));

    let Some(req) = fields(
        &path,
        "infiniband.mad.attributeid == 0x0010",
        &[
            "infiniband.cm.req.transpsvctype",
            "infiniband.cm.req.ext_transport",
            "infiniband.cm.req.prim_tfcclass",
        ],
    ) else {
        return;
    };
    assert!(!req.is_empty());
    for f in &req {
        assert_eq!(f, &["0x03", "0x01", "0x20"].map(String::from), "{req:?}");
    }
    let mads = fields(
        &path,
        "infiniband.mad.mgmtclass == 0x07 && infiniband.mad.attributeid == 0x0001",
        &[
            "infiniband.mad.method",
            "infiniband.mad.status",
            "infiniband.mad.transactionid",
            "infiniband.deth.srcqp",
        ],
    )
    .unwrap();
    let gets: std::collections::HashSet<&str> = mads
        .iter()
        .filter(|f| f[0] == "0x01")
        .map(|f| f[2].as_str())
        .collect();
    let answered: Vec<&Vec<String>> = mads
        .iter()
        .filter(|f| f[0] == "0x81" && gets.contains(f[2].as_str()))
        .collect();
    assert!(!gets.is_empty() && !answered.is_empty(), "{mads:?}");
    for f in &mads {
        assert_eq!(f[3], "0x00000001", "QP1: {f:?}");
        if f[0] == "0x81" {
            assert_eq!(f[1], "0x000c", "unsupported method/attribute: {f:?}");
        }
    }
}
