//! The pcap middleware: the file is parsed here, field by field.
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use soft_rdma::transport::{pcap, Hub, Link, Outgoing, PcapLink, RecvBatch};

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("softrdma-test-{}-{name}.pcap", std::process::id()))
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

struct Record {
    ts_sec: u32,
    frame: Vec<u8>,
}

fn parse_file(path: &PathBuf) -> Vec<Record> {
    let f = std::fs::read(path).unwrap();
    assert!(f.len() >= 24, "no global header");
    let u32le = |b: &[u8]| u32::from_le_bytes(b[..4].try_into().unwrap());
    let u16le = |b: &[u8]| u16::from_le_bytes(b[..2].try_into().unwrap());
    assert_eq!(
        u32le(&f[0..]),
        0xa1b2_c3d4,
        "magic (microsecond, little-endian)"
    );
    assert_eq!((u16le(&f[4..]), u16le(&f[6..])), (2, 4), "version");
    assert_eq!(u32le(&f[16..]), 65535, "snaplen");
    assert_eq!(u32le(&f[20..]), 1, "LINKTYPE_ETHERNET");
    let mut at = 24;
    let mut out = Vec::new();
    while at < f.len() {
        assert!(at + 16 <= f.len(), "truncated record header");
        let (ts_sec, ts_usec, incl, orig) = (
            u32le(&f[at..]),
            u32le(&f[at + 4..]),
            u32le(&f[at + 8..]),
            u32le(&f[at + 12..]),
        );
        assert!(ts_usec < 1_000_000);
        assert_eq!(incl, orig);
        at += 16;
        assert!(at + incl as usize <= f.len(), "truncated record");
        out.push(Record {
            ts_sec,
            frame: f[at..at + incl as usize].to_vec(),
        });
        at += incl as usize;
    }
    out
}

fn ones_sum(bytes: &[u8]) -> u32 {
    bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

fn folds_to_ffff(mut s: u32) -> bool {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s == 0xffff
}

/// Check an IPv4 frame from `src` to `dst`; returns the UDP payload.
fn check_v4(frame: &[u8], src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let (IpAddr::V4(s), IpAddr::V4(d)) = (src.ip(), dst.ip()) else {
        panic!()
    };
    assert_eq!(&frame[12..14], &[0x08, 0x00], "ethertype IPv4");
    assert_eq!(frame[6] & 1, 0, "source MAC is unicast");
    assert_ne!(&frame[0..6], &frame[6..12], "distinct MACs");
    let ip = &frame[14..];
    assert_eq!(ip[0], 0x45, "version 4, IHL 5");
    assert_eq!(ip[1], 0, "TOS 0");
    let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    assert_eq!(total, ip.len(), "total length");
    assert_eq!(&ip[4..6], &[0, 0], "IP ID 0");
    assert_eq!(&ip[6..8], &[0x40, 0], "DF, no fragment offset");
    assert_eq!(ip[8], 64, "TTL");
    assert_eq!(ip[9], 17, "UDP");
    assert!(
        folds_to_ffff(ones_sum(&ip[..20])),
        "IPv4 header checksum invalid"
    );
    assert_eq!(&ip[12..16], &s.octets());
    assert_eq!(&ip[16..20], &d.octets());
    let udp = &ip[20..];
    assert_eq!(u16::from_be_bytes([udp[0], udp[1]]), src.port());
    assert_eq!(u16::from_be_bytes([udp[2], udp[3]]), dst.port());
    assert_eq!(u16::from_be_bytes([udp[4], udp[5]]) as usize, udp.len());
    assert_eq!(&udp[6..8], &[0, 0], "UDP checksum 0");
    udp[8..].to_vec()
}

/// RoCEv2 ICRC as the IBA (annex A17) defines it, over an IP packet (from its IP
/// header), with the variant fields masked.
fn icrc(ip_packet: &[u8]) -> u32 {
    let mut p = ip_packet.to_vec();
    let udp_at = if p[0] >> 4 == 4 {
        p[1] = 0xff; // TOS
        p[8] = 0xff; // TTL
        p[10] = 0xff; // checksum
        p[11] = 0xff;
        20
    } else {
        p[0] |= 0x0f; // traffic class + flow label
        p[1] = 0xff;
        p[2] = 0xff;
        p[3] = 0xff;
        p[7] = 0xff; // hop limit
        40
    };
    p[udp_at + 6] = 0xff;
    p[udp_at + 7] = 0xff;
    p[udp_at + 8 + 4] = 0xff; // BTH byte 4
    let mut h = crc32fast::Hasher::new();
    h.update(&[0xff; 8]);
    h.update(&p[..p.len() - 4]);
    h.finalize() // zlib's crc32 (final inversion included), stored little-endian
}

#[test]
fn records_sent_and_received_ipv4() {
    let path = tmp("v4");
    let hub = Hub::new();
    let a = PcapLink::new(hub.link(addr("127.1.2.3:49200")).unwrap(), &path).unwrap();
    let b = hub.link(addr("127.4.5.6:4791")).unwrap();
    let sent: Vec<Vec<u8>> = (0..3)
        .map(|i| (0..(40 + 300 * i)).map(|j| (j * 7 + i) as u8).collect())
        .collect();
    let out: Vec<Outgoing> = sent
        .iter()
        .map(|d| Outgoing {
            peer: b.local(),
            data: d,
        })
        .collect();
    assert_eq!(a.send(&out).unwrap(), 3);
    let back = [b"reply-one".to_vec(), vec![0x5a; 1001]];
    b.send(
        &back
            .iter()
            .map(|d| Outgoing {
                peer: a.local(),
                data: d,
            })
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let mut batch = RecvBatch::new(8);
    assert_eq!(a.recv(&mut batch, Some(Duration::from_secs(1))).unwrap(), 2);
    assert_eq!(a.stats().sent, 3); // forwarded from the inner link
    drop(a);

    let recs = parse_file(&path);
    assert_eq!(recs.len(), 5);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32;
    for (i, r) in recs.iter().enumerate() {
        assert!(now - r.ts_sec < 60, "timestamp");
        let payload = if i < 3 {
            check_v4(&r.frame, addr("127.1.2.3:49200"), addr("127.4.5.6:4791"))
        } else {
            check_v4(&r.frame, addr("127.4.5.6:4791"), addr("127.1.2.3:49200"))
        };
        let want = if i < 3 { &sent[i] } else { &back[i - 3] };
        assert_eq!(&payload, want, "record {i} payload");
    }
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn icrc_over_recorded_headers_matches_the_senders() {
    // What a sender on a UdpLink covers: IPv4 with ID 0 and DF, its own
    // addresses and ports, total and UDP lengths. Build that independently
    // and compare with the ICRC over the recorded frame.
    let path = tmp("icrc");
    let hub = Hub::new();
    let a = PcapLink::new(hub.link(addr("127.9.9.1:50001")).unwrap(), &path).unwrap();
    let b = hub.link(addr("127.9.9.2:4791")).unwrap();
    let mut pkt = vec![0x04, 0x00, 0xff, 0xff, 0, 0, 0, 0x11, 0x80, 0, 0, 0x05]; // BTH SEND only
    pkt.extend_from_slice(b"payload!");
    pkt.extend_from_slice(&[0; 4]); // ICRC place
    let len = pkt.len();
    let mut model = vec![
        0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 127, 9, 9, 1, 127, 9, 9, 2,
    ];
    model[2..4].copy_from_slice(&((20 + 8 + len) as u16).to_be_bytes());
    model.extend_from_slice(&50001u16.to_be_bytes());
    model.extend_from_slice(&4791u16.to_be_bytes());
    model.extend_from_slice(&((8 + len) as u16).to_be_bytes());
    model.extend_from_slice(&[0, 0]);
    model.extend_from_slice(&pkt);
    let want = icrc(&model);
    let n = pkt.len();
    pkt[n - 4..].copy_from_slice(&want.to_le_bytes());
    a.send(&[Outgoing {
        peer: b.local(),
        data: &pkt,
    }])
    .unwrap();
    a.flush().unwrap();
    let recs = parse_file(&path);
    assert_eq!(recs.len(), 1);
    let ip = &recs[0].frame[14..];
    assert_eq!(icrc(ip), want);
    assert_eq!(&ip[ip.len() - 4..], &want.to_le_bytes());
    drop(a);
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn ipv6_records_have_valid_udp_checksum() {
    let path = tmp("v6");
    let hub = Hub::new();
    let a = PcapLink::new(hub.link(addr("[fd00::1]:50000")).unwrap(), &path).unwrap();
    let b = hub.link(addr("[fd00::2]:4791")).unwrap();
    for data in [&b"odd"[..], &[0xab; 1000][..]] {
        a.send(&[Outgoing {
            peer: b.local(),
            data,
        }])
        .unwrap();
    }
    drop(a);
    let recs = parse_file(&path);
    assert_eq!(recs.len(), 2);
    for r in &recs {
        let f = &r.frame;
        assert_eq!(&f[12..14], &[0x86, 0xdd]);
        let ip = &f[14..];
        assert_eq!(&ip[0..4], &[0x60, 0, 0, 0], "version 6, TC 0, flow 0");
        let plen = u16::from_be_bytes([ip[4], ip[5]]) as usize;
        assert_eq!(plen + 40, ip.len());
        assert_eq!((ip[6], ip[7]), (17, 64));
        let udp = &ip[40..];
        assert_eq!(u16::from_be_bytes([udp[2], udp[3]]), 4791);
        assert_ne!(&udp[6..8], &[0, 0], "IPv6 UDP checksum is mandatory");
        let mut pseudo = ip[8..40].to_vec();
        pseudo.extend_from_slice(&(plen as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, 17]);
        assert!(
            folds_to_ffff(ones_sum(&pseudo) + ones_sum(udp)),
            "UDP checksum invalid"
        );
    }
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn flushed_periodically_while_running() {
    let path = tmp("periodic");
    let hub = Hub::new();
    let a = PcapLink::new(hub.link(addr("10.1.0.1:4791")).unwrap(), &path).unwrap();
    let b = hub.link(addr("10.1.0.2:4791")).unwrap();
    a.send(&[Outgoing {
        peer: b.local(),
        data: b"early",
    }])
    .unwrap();
    std::thread::sleep(pcap::FLUSH_INTERVAL * 4);
    // Still open, never explicitly flushed: the record is on disk.
    assert_eq!(parse_file(&path).len(), 1);
    drop(a);
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn links_sharing_a_file_record_each_datagram_once() {
    let path = tmp("shared");
    let hub = Hub::new();
    let a = PcapLink::new(hub.link(addr("10.2.0.1:4791")).unwrap(), &path).unwrap();
    let b = PcapLink::new(hub.link(addr("10.2.0.2:4791")).unwrap(), &path).unwrap();
    let c = hub.link(addr("10.2.0.3:4791")).unwrap(); // not recorded
    a.send(&[Outgoing {
        peer: b.local(),
        data: b"a->b",
    }])
    .unwrap();
    c.send(&[Outgoing {
        peer: b.local(),
        data: b"c->b",
    }])
    .unwrap();
    let mut batch = RecvBatch::new(4);
    assert_eq!(b.recv(&mut batch, Some(Duration::from_secs(1))).unwrap(), 2);
    drop((a, b));
    let recs = parse_file(&path);
    let payloads: Vec<&[u8]> = recs.iter().map(|r| &r.frame[42..]).collect();
    assert_eq!(payloads, vec![&b"a->b"[..], b"c->b"]);
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn from_env_wraps_only_when_set() {
    let hub = Hub::new();
    std::env::remove_var(pcap::ENV);
    let path = tmp("env");
    let l = pcap::from_env(Box::new(hub.link(addr("10.3.0.1:4791")).unwrap())).unwrap();
    drop(l);
    assert!(!path.exists());
    std::env::set_var(pcap::ENV, &path);
    let l = pcap::from_env(Box::new(hub.link(addr("10.3.0.1:4791")).unwrap())).unwrap();
    std::env::remove_var(pcap::ENV);
    let b = hub.link(addr("10.3.0.2:4791")).unwrap();
    l.send(&[Outgoing {
        peer: b.local(),
        data: b"env",
    }])
    .unwrap();
    drop(l);
    assert_eq!(parse_file(&path).len(), 1);
    std::fs::remove_file(&path).unwrap();
    // `%p`: the process id, so processes of one launch write files of their own.
    let pattern = tmp("env-%p");
    std::env::set_var(pcap::ENV, &pattern);
    let l = pcap::from_env(Box::new(hub.link(addr("10.3.0.4:4791")).unwrap())).unwrap();
    std::env::remove_var(pcap::ENV);
    drop(l);
    let own = PathBuf::from(
        pattern
            .to_str()
            .unwrap()
            .replace("%p", &std::process::id().to_string()),
    );
    assert!(own.exists() && !pattern.exists(), "{own:?}");
    std::fs::remove_file(&own).unwrap();
    let e = match PcapLink::new(
        hub.link(addr("10.3.0.3:4791")).unwrap(),
        std::path::Path::new("/nonexistent/dir/x.pcap"),
    ) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("created a file in a missing directory"),
    };
    assert!(
        e.starts_with(
            "softrdma: cannot write the pcap file /nonexistent/dir/x.pcap (SOFTRDMA_PCAP): "
        ),
        "{e}"
    );
}

#[test]
fn tshark_decodes_as_roce() {
    // A skip where tshark is missing, a failure if the suite requires it.
    if !test_support::tools::works("tshark", &["-v"]) {
        return;
    }
    let path = tmp("tshark");
    let hub = Hub::new();
    let a = PcapLink::new(hub.link(addr("127.1.1.1:50000")).unwrap(), &path).unwrap();
    let b = hub.link(addr("127.1.1.2:4791")).unwrap();
    let mut pkt = vec![0x04, 0x00, 0xff, 0xff, 0, 0, 0, 0x11, 0x80, 0, 0, 0x05];
    pkt.extend_from_slice(&[1, 2, 3, 4, 0, 0, 0, 0]);
    a.send(&[Outgoing {
        peer: b.local(),
        data: &pkt,
    }])
    .unwrap();
    drop(a);
    let o = std::process::Command::new("tshark")
        .args([
            "-r",
            path.to_str().unwrap(),
            "-T",
            "fields",
            "-e",
            "udp.dstport",
            "-e",
            "infiniband.bth.opcode",
        ])
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        s.trim(),
        "4791\t4",
        "tshark said: {s} {}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::remove_file(&path).unwrap();
}
