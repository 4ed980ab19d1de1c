//! The CM formats: golden bytes placed by hand from the IBTA tables (not by
//! our writer), round trips of every message, arbitrary bytes never panic,
//! and tshark's InfiniBand dissector — an independent parser — reading our
//! MADs in RoCEv2 frames built here byte by byte.

use proptest::prelude::*;
use soft_rdma_cm::wire::msg::{Answered, Transport, DATA_LEN};
use soft_rdma_cm::wire::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use test_support::tools;

fn sample_path(seed: u8) -> Path {
    Path {
        local_lid: 0xffff,
        remote_lid: 0xffff,
        local_gid: [seed; 16],
        remote_gid: [seed.wrapping_add(1); 16],
        flow_label: 0x5_4321,
        packet_rate: 0x2a,
        traffic_class: 0x60,
        hop_limit: 64,
        sl: 0xb,
        subnet_local: true,
        local_ack_timeout: 0x13,
    }
}

fn sample_req() -> Req {
    Req {
        local_comm_id: 0x1122_3344,
        vendor_id: 0x00ab_cdef,
        service_id: PortSpace::Tcp.service_id(7471),
        local_ca_guid: 0x0102_0304_0506_0708,
        local_qkey: 0x8001_0000,
        local_qpn: 0x00_1234,
        responder_resources: 16,
        local_eecn: 0,
        initiator_depth: 8,
        remote_eecn: 0,
        remote_cm_response_timeout: 20,
        transport: Transport::Rc,
        end_to_end_flow_control: true,
        starting_psn: 0x00ab_cdef,
        local_cm_response_timeout: 21,
        retry_count: 7,
        pkey: 0xffff,
        path_mtu: 5,
        rdc_exists: false,
        rnr_retry_count: 6,
        max_cm_retries: 15,
        srq: true,
        primary: sample_path(0xfe),
        alternate: None,
        sap_supported: false,
        private_data: b"hello".to_vec(),
    }
}

#[test]
fn a_req_lands_where_table_106_puts_its_fields() {
    let mad = CmMessage::Req(sample_req())
        .emit(0x0102_0304_0506_0708)
        .unwrap();
    // The MAD header: base version, class 0x07, class version 2, Send.
    assert_eq!(&mad[..4], &[1, 0x07, 2, 0x03]);
    assert_eq!(&mad[8..16], &[1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(&mad[16..18], &[0x00, 0x10]);
    let d = &mad[24..];
    assert_eq!(&d[0..4], &[0x11, 0x22, 0x33, 0x44]);
    assert_eq!(&d[4..8], &[0, 0xab, 0xcd, 0xef]);
    assert_eq!(&d[8..16], &[0, 0, 0, 0, 0x01, 0x06, 0x1d, 0x2f]);
    assert_eq!(&d[28..32], &[0x80, 0x01, 0, 0]);
    assert_eq!(&d[32..36], &[0x00, 0x12, 0x34, 16]);
    assert_eq!(d[39], 8);
    // Byte 43: remote CM response timeout (5) | transport type (2) | EEFC.
    assert_eq!(d[43], 20 << 3 | 1);
    assert_eq!(&d[44..48], &[0xab, 0xcd, 0xef, 21 << 3 | 7]);
    assert_eq!(&d[48..50], &[0xff, 0xff]);
    // Byte 50: MTU (4) | RDC (1) | RNR retry (3); 51: max CM retries | SRQ.
    assert_eq!(d[50], 5 << 4 | 6);
    assert_eq!(d[51], 15 << 4 | 1 << 3);
    assert_eq!(&d[52..56], &[0xff, 0xff, 0xff, 0xff]);
    assert_eq!(&d[56..72], &[0xfe; 16]);
    assert_eq!(&d[72..88], &[0xff; 16]);
    // Flow label (20) then rate (6) in the low bits of byte 91.
    assert_eq!(&d[88..92], &[0x54, 0x32, 0x10, 0x2a]);
    assert_eq!(&d[92..96], &[0x60, 64, 0xb << 4 | 1 << 3, 0x13 << 3]);
    assert!(d[96..140].iter().all(|&b| b == 0), "no alternate path");
    assert_eq!(&d[140..145], b"hello");
    assert!(d[145..].iter().all(|&b| b == 0));
    assert_eq!(d.len(), DATA_LEN);
}

#[test]
fn the_ip_header_is_the_kernels_cma_hdr() {
    let h = IpHeader {
        src: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 0x1234),
        dst: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
    };
    let mut b = [0xaau8; 40];
    h.emit(&mut b).unwrap();
    let mut want = [0u8; 36];
    want[1] = 0x40;
    want[2..4].copy_from_slice(&[0x12, 0x34]);
    want[16..20].copy_from_slice(&[10, 0, 0, 1]);
    want[32..36].copy_from_slice(&[10, 0, 0, 2]);
    assert_eq!(&b[..36], &want);
    assert_eq!(IpHeader::parse(&b).unwrap(), h);
    let h6 = IpHeader {
        src: SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 9),
        dst: IpAddr::V6(Ipv6Addr::LOCALHOST),
    };
    h6.emit(&mut b).unwrap();
    assert_eq!(b[1], 0x60);
    assert_eq!(IpHeader::parse(&b).unwrap(), h6);
    b[0] = 1;
    assert_eq!(IpHeader::parse(&b), Err(WireError::BadField("CMA version")));
}

#[test]
fn service_ids_name_port_space_and_port() {
    assert_eq!(PortSpace::Tcp.service_id(7471), 0x0106_1d2f);
    assert_eq!(PortSpace::Udp.service_id(1), 0x0111_0001);
    assert_eq!(PortSpace::Ib.service_id(2), 0x013f_0002);
    assert_eq!(PortSpace::Ipoib.service_id(3), 0x0002_0003);
    for ps in [
        PortSpace::Tcp,
        PortSpace::Udp,
        PortSpace::Ib,
        PortSpace::Ipoib,
    ] {
        assert_eq!(
            PortSpace::from_service_id(ps.service_id(4791)),
            Some((ps, 4791))
        );
    }
    assert_eq!(PortSpace::from_service_id(0x1_0106_0001), None);
    assert_eq!(PortSpace::from_service_id(0x0107_0001), None);
}

#[test]
fn the_other_messages_round_trip() {
    let msgs = [
        CmMessage::Mra(Mra {
            local_comm_id: 1,
            remote_comm_id: 2,
            message_mraed: Answered::Rep,
            service_timeout: 31,
            private_data: vec![7; Mra::PRIVATE_DATA_LEN],
        }),
        CmMessage::Rej(Rej {
            local_comm_id: 3,
            remote_comm_id: 4,
            message_rejected: Answered::Req,
            reason: RejReason::INVALID_SERVICE_ID,
            ari: vec![1, 2, 3],
            private_data: vec![9; Rej::PRIVATE_DATA_LEN],
        }),
        CmMessage::Rep(Rep {
            local_comm_id: 5,
            remote_comm_id: 6,
            local_qkey: 7,
            local_qpn: 0xff_fffe,
            local_eecn: 0,
            starting_psn: 0x12_3456,
            vendor_id: 0xab_cdef,
            responder_resources: 4,
            initiator_depth: 3,
            target_ack_delay: 17,
            failover_accepted: 2,
            end_to_end_flow_control: true,
            rnr_retry_count: 7,
            srq: true,
            local_ca_guid: u64::MAX,
            private_data: vec![1; Rep::PRIVATE_DATA_LEN],
        }),
        CmMessage::Rtu(Rtu {
            local_comm_id: 8,
            remote_comm_id: 9,
            private_data: vec![2; Rtu::PRIVATE_DATA_LEN],
        }),
        CmMessage::Dreq(Dreq {
            local_comm_id: 10,
            remote_comm_id: 11,
            remote_qpn: 0x42,
            private_data: vec![3; Dreq::PRIVATE_DATA_LEN],
        }),
        CmMessage::Drep(Rtu {
            local_comm_id: 12,
            remote_comm_id: 13,
            private_data: vec![4; Rtu::PRIVATE_DATA_LEN],
        }),
        CmMessage::SidrReq(SidrReq {
            request_id: 14,
            pkey: 0xffff,
            service_id: PortSpace::Udp.service_id(5),
            private_data: vec![5; SidrReq::PRIVATE_DATA_LEN],
        }),
        CmMessage::SidrRep(SidrRep {
            request_id: 15,
            status: 0,
            vendor_id: 0x12_3456,
            qpn: 0x77,
            service_id: PortSpace::Udp.service_id(5),
            qkey: 0x1_1ee7,
            info: vec![],
            private_data: vec![6; SidrRep::PRIVATE_DATA_LEN],
        }),
    ];
    for m in msgs {
        let mad = m.emit(99).unwrap();
        assert_eq!(CmMessage::parse(&mad).unwrap(), (99, m));
    }
}

#[test]
fn bad_mads_are_refused_not_misread() {
    let good = CmMessage::Req(sample_req()).emit(1).unwrap();
    assert_eq!(CmMessage::parse(&good[..255]), Err(WireError::Truncated));
    let mut m = good;
    m[1] = 0x04; // the SA's class
    assert_eq!(CmMessage::parse(&m), Err(WireError::NotCm));
    let mut m = good;
    m[2] = 1;
    assert_eq!(CmMessage::parse(&m), Err(WireError::NotCm));
    let mut m = good;
    m[17] = 0x19; // LAP: not spoken here
    assert_eq!(CmMessage::parse(&m), Err(WireError::UnknownAttr(0x19)));
    let mut m = good;
    m[24 + 51] |= 0x01; // an extended transport type with RC
    assert!(matches!(CmMessage::parse(&m), Err(WireError::BadField(_))));
    let too_long = Req {
        private_data: vec![0; Req::PRIVATE_DATA_LEN + 1],
        ..sample_req()
    };
    assert_eq!(
        CmMessage::Req(too_long).emit(1),
        Err(WireError::PrivateDataTooLong)
    );
}

fn arb_path() -> impl Strategy<Value = Path> {
    (
        any::<(u16, u16, [u8; 16], [u8; 16])>(),
        (0u32..1 << 20, 0u8..64, any::<u8>(), any::<u8>()),
        (0u8..16, any::<bool>(), 0u8..32),
    )
        .prop_map(|((ll, rl, lg, rg), (fl, pr, tc, hl), (sl, sn, at))| Path {
            local_lid: ll,
            remote_lid: rl,
            local_gid: lg,
            remote_gid: rg,
            flow_label: fl,
            packet_rate: pr,
            traffic_class: tc,
            hop_limit: hl,
            sl,
            subnet_local: sn,
            local_ack_timeout: at,
        })
}

proptest! {
    #[test]
    fn any_req_round_trips(
        ids in any::<(u32, u64, u64, u32)>(),
        qpn in 0u32..1 << 24,
        psn in 0u32..1 << 24,
        small in (0u8..32, 0u8..8, 0u8..16, 1u8..6, 0u8..8, 0u8..32),
        flags in any::<(bool, bool, bool, bool)>(),
        t in prop_oneof![Just(Transport::Rc), Just(Transport::Uc), Just(Transport::Xrc)],
        primary in arb_path(),
        alternate in proptest::option::of(arb_path()),
        pd in proptest::collection::vec(any::<u8>(), 0..=Req::PRIVATE_DATA_LEN),
        tid in any::<u64>(),
    ) {
        // An alternate path of all zeros reads back as none.
        let alternate = alternate.filter(|p| *p != Path::default());
        let req = Req {
            local_comm_id: ids.0,
            vendor_id: ids.3 & 0xff_ffff,
            service_id: ids.1,
            local_ca_guid: ids.2,
            local_qkey: ids.3,
            local_qpn: qpn,
            responder_resources: small.1,
            local_eecn: qpn ^ 1,
            initiator_depth: small.2,
            remote_eecn: psn,
            remote_cm_response_timeout: small.0,
            transport: t,
            end_to_end_flow_control: flags.0,
            starting_psn: psn,
            local_cm_response_timeout: small.5,
            retry_count: small.4,
            pkey: ids.0 as u16,
            path_mtu: small.3,
            rdc_exists: flags.1,
            rnr_retry_count: small.1,
            max_cm_retries: small.2,
            srq: flags.2,
            primary,
            alternate,
            sap_supported: flags.3,
            private_data: pd.clone(),
        };
        let mad = CmMessage::Req(req.clone()).emit(tid).unwrap();
        let mut want = req;
        want.private_data.resize(Req::PRIVATE_DATA_LEN, 0);
        prop_assert_eq!(CmMessage::parse(&mad).unwrap(), (tid, CmMessage::Req(want)));
    }

    #[test]
    fn arbitrary_bytes_parse_or_fail_cleanly(mut b in proptest::collection::vec(any::<u8>(), 256)) {
        // Mostly a CM header, so the message parsers see the bytes too.
        b[0] = 1;
        b[1] = 0x07;
        b[2] = 2;
        b[3] = 3;
        b[4] = 0;
        b[5] = 0;
        b[16] = 0;
        b[17] = 0x10 + b[17] % 10;
        if let Ok((_, m)) = CmMessage::parse(&b) {
            // What parses, re-emits to a MAD that parses the same.
            let again = m.emit(0).unwrap();
            prop_assert_eq!(CmMessage::parse(&again).unwrap().1, m);
        }
    }
}

/// A RoCEv2 frame around `mad`, every header written here from its layout:
/// Ethernet, IPv4, UDP 4791, BTH (UD SEND only to QP1), DETH (the GSI
/// Q_Key, from QP1), the MAD, and an ICRC tshark does not check.
fn rocev2_frame(mad: &[u8]) -> Vec<u8> {
    let payload_len = 12 + 8 + mad.len() + 4;
    let udp_len = 8 + payload_len;
    let ip_len = 20 + udp_len;
    let mut f = vec![0u8; 14];
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let mut ip = vec![
        0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
    ];
    ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
    let sum = ip
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum::<u32>();
    let sum = !((sum & 0xffff) + (sum >> 16)) as u16;
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&49152u16.to_be_bytes());
    f.extend_from_slice(&4791u16.to_be_bytes());
    f.extend_from_slice(&(udp_len as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(&[0x64, 0, 0xff, 0xff, 0, 0, 0, 1, 0, 0, 0, 7]);
    f.extend_from_slice(&[0x80, 0x01, 0, 0, 0, 0, 0, 1]);
    f.extend_from_slice(mad);
    f.extend_from_slice(&[0; 4]);
    f
}

fn pcap(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut p = Vec::new();
    for v in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 65535, 1] {
        // magic, version 2.4 (as two u16), zone, sigfigs, snaplen, Ethernet.
        p.extend_from_slice(&v.to_le_bytes());
    }
    p.truncate(4);
    p.extend_from_slice(&2u16.to_le_bytes());
    p.extend_from_slice(&4u16.to_le_bytes());
    for v in [0u32, 0, 65535, 1] {
        p.extend_from_slice(&v.to_le_bytes());
    }
    for fr in frames {
        for v in [0u32, 0, fr.len() as u32, fr.len() as u32] {
            p.extend_from_slice(&v.to_le_bytes());
        }
        p.extend_from_slice(fr);
    }
    p
}

#[test]
fn tshark_reads_our_cm_mads() {
    if !tools::works("tshark", &["-v"]) {
        return;
    }
    let mut req = sample_req();
    let mut pd = vec![0u8; 36];
    IpHeader {
        src: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 40000),
        dst: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
    }
    .emit(&mut pd)
    .unwrap();
    pd.extend_from_slice(b"user data");
    req.private_data = pd;
    let rej = CmMessage::Rej(Rej {
        local_comm_id: 0x55,
        remote_comm_id: 0x1122_3344,
        message_rejected: Answered::Req,
        reason: RejReason::INVALID_SERVICE_ID,
        ari: vec![],
        private_data: vec![],
    });
    let frames = [
        rocev2_frame(&CmMessage::Req(req).emit(7).unwrap()),
        rocev2_frame(&rej.emit(7).unwrap()),
    ];
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cm_wire.pcap");
    std::fs::write(&path, pcap(&frames)).unwrap();
    let fields = [
        "infiniband.mad.mgmtclass",
        "infiniband.mad.attributeid",
        "infiniband.cm.req.serviceid.dport",
        "infiniband.cm.req.localqpn",
        "infiniband.cm.req.startpsn",
        "infiniband.cm.req.ip_cm.sip4",
        "infiniband.cm.req.ip_cm.dip4",
        "infiniband.cm.req.ip_cm.sport",
        "infiniband.cm.rej.reason",
    ];
    let mut cmd = Command::new("tshark");
    cmd.arg("-r")
        .arg(&path)
        .args(["-T", "fields", "-E", "separator=|"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    // tshark prints most numbers in hex.
    let num = |s: &str| match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).unwrap_or(u64::MAX),
        None => s.parse().unwrap_or(u64::MAX),
    };
    let req: Vec<&str> = lines[0].split('|').collect();
    assert_eq!(num(req[0]), 0x07, "{text}");
    assert_eq!(num(req[1]), 0x10, "{text}");
    assert_eq!(num(req[2]), 7471, "{text}");
    assert_eq!(num(req[3]), 0x1234, "{text}");
    assert_eq!(num(req[4]), 0xab_cdef, "{text}");
    assert_eq!(req[5], "10.0.0.1", "{text}");
    assert_eq!(req[6], "10.0.0.2", "{text}");
    assert_eq!(num(req[7]), 40000, "{text}");
    let rej: Vec<&str> = lines[1].split('|').collect();
    assert_eq!(num(rej[1]), 0x12, "{text}");
    assert_eq!(
        num(rej[8]),
        u64::from(RejReason::INVALID_SERVICE_ID.0),
        "{text}"
    );
}
