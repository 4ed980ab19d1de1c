//! ICRC tests: the ConnectX-4 Lx capture vector, seal/verify, and that every
//! single-byte change of a sealed packet is caught except in BTH byte 4
//! (FECN/BECN/reserved), which the ICRC masks.

use std::net::IpAddr;

use proptest::prelude::*;
use soft_rdma::wire::icrc::{self, IcrcContext};
use soft_rdma::wire::*;

/// scapy test/contrib/roce.uts, "RoCE CNP captured on ConnectX-4 Lx": the
/// frame from the IP header on (IPv4 20, UDP 8, BTH 12, 16 reserved, ICRC).
#[rustfmt::skip]
const CNP_IP_PACKET: [u8; 60] = [
    0x45, 0xc2, 0x00, 0x3c, 0x71, 0x8c, 0x40, 0x00, 0x40, 0x11, 0x91, 0x61,
    0x0a, 0x00, 0x11, 0x01, 0x0a, 0x00, 0x12, 0x01,
    0x00, 0x00, 0x12, 0xb7, 0x00, 0x28, 0x00, 0x00,
    0x81, 0x00, 0xff, 0xff, 0x40, 0x00, 0x01, 0x18, 0x00, 0x00, 0x00, 0x00,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0x82, 0xfd, 0x00, 0x2a,
];

#[test]
fn connectx4_cnp_vector() {
    let (ip, rest) = CNP_IP_PACKET.split_at(20);
    let (udp, ib) = rest.split_at(8);
    let icrc = icrc::compute_with_headers(ip, udp, ib);
    assert_eq!(icrc.to_le_bytes(), [0x82, 0xfd, 0x00, 0x2a]);
    assert_eq!(icrc, 0x2a00_fd82);
    // The stored value through the view, too (CNP is not a PacketRepr opcode).
    assert_eq!(Packet::new_unchecked(ib).icrc(), icrc);
    assert_eq!(
        PacketRepr::parse(ib).map(|_| ()),
        Err(WireError::UnknownOpcode(0x81))
    );
}

fn v4() -> IcrcContext {
    IcrcContext {
        src: "192.168.0.7".parse().unwrap(),
        dst: "192.168.0.9".parse().unwrap(),
        src_port: 0xc123,
        dst_port: 4791,
    }
}

fn v6() -> IcrcContext {
    IcrcContext {
        src: "fe80::1:2".parse().unwrap(),
        dst: "2001:db8::7".parse().unwrap(),
        src_port: 0xfedc,
        dst_port: 4791,
    }
}

fn sample(opcode: Opcode) -> Ext {
    sample_of(opcode.ext_kind())
}

fn sample_of(kind: ExtKind) -> Ext {
    let aeth = Aeth {
        syndrome: Syndrome::Ack { credits: 0x1f },
        msn: 0x654321,
    };
    let reth = Reth {
        va: 0x1122_3344_5566_7788,
        rkey: 0x99aa_bbcc,
        len: 4096,
    };
    let deth = Deth {
        qkey: 0x8001_0000,
        src_qp: 0x123,
    };
    match kind {
        ExtKind::Xrc(k) => Ext::Xrc(0x00ab_cdef, XrcExt::from_ext(sample_of(k.base())).unwrap()),
        ExtKind::None => Ext::None,
        ExtKind::Imm => Ext::Imm(0x1357_9bdf),
        ExtKind::Inv => Ext::Inv(0x2468_ace0),
        ExtKind::Reth => Ext::Reth(reth),
        ExtKind::RethImm => Ext::RethImm(reth, 0x0f0f_0f0f),
        ExtKind::Aeth => Ext::Aeth(aeth),
        ExtKind::AtomicAck => Ext::AtomicAck(aeth, 0xdead_beef_0bad_f00d),
        ExtKind::Atomic => Ext::Atomic(AtomicEth {
            va: 8,
            rkey: 9,
            swap_add: 10,
            compare: 11,
        }),
        ExtKind::Deth => Ext::Deth(deth),
        ExtKind::DethImm => Ext::DethImm(deth, 0x7777_7777),
        ExtKind::FethReth => Ext::FethReth(
            Feth {
                placement: 1,
                level: 1,
            },
            reth,
        ),
    }
}

fn sealed(ctx: &IcrcContext, opcode: Opcode, payload_len: usize) -> Vec<u8> {
    let repr = PacketRepr {
        bth: Bth {
            opcode,
            solicited: true,
            mig_req: false,
            pad: 0,
            pkey: 0xffff,
            fecn: false,
            becn: true,
            dest_qp: 0xabcdef,
            ack_req: true,
            psn: 0x00fffe,
        },
        ext: sample(opcode),
        payload_len,
    };
    let mut buf = vec![0u8; repr.buffer_len()];
    let hl = repr.header_len();
    for (i, b) in buf[hl..hl + payload_len].iter_mut().enumerate() {
        *b = (i * 7) as u8;
    }
    repr.emit(&mut buf).unwrap();
    icrc::seal(ctx, &mut buf);
    buf
}

fn lens(opcode: Opcode) -> &'static [usize] {
    if opcode.op().has_payload() {
        &[0, 1, 3, 4, 37]
    } else {
        &[0]
    }
}

#[test]
fn seal_then_verify() {
    for ctx in [v4(), v6()] {
        for opcode in Opcode::all() {
            for &len in lens(opcode) {
                let buf = sealed(&ctx, opcode, len);
                assert!(icrc::verify(&ctx, &buf), "{opcode} {len}");
                let p = Packet::new_checked(&buf[..]).unwrap();
                assert!(p.verify_icrc(&ctx));
                assert_eq!(p.icrc(), icrc::compute(&ctx, &buf));
            }
        }
    }
}

/// Every single-byte change (several XOR values at every offset; all 255 on
/// a few packets) is caught, except in BTH byte 4, where every value still
/// verifies.
#[test]
fn single_byte_flips() {
    for ctx in [v4(), v6()] {
        for opcode in Opcode::all() {
            for &len in lens(opcode) {
                let buf = sealed(&ctx, opcode, len);
                let exhaustive = len == 3 && opcode.transport() == Transport::Rc;
                for i in 0..buf.len() {
                    let xors: Vec<u8> = if exhaustive || i == 4 {
                        (1..=255).collect()
                    } else {
                        vec![0x01, 0x80, 0xff, 0x5a]
                    };
                    for x in xors {
                        let mut b = buf.clone();
                        b[i] ^= x;
                        assert_eq!(
                            icrc::verify(&ctx, &b),
                            i == 4,
                            "{opcode} len {len}: byte {i} ^ {x:#04x}"
                        );
                    }
                }
            }
        }
    }
}

/// Through the view: setting FECN/BECN keeps the ICRC valid; any other BTH
/// field does not.
#[test]
fn ecn_bits_are_not_covered() {
    let ctx = v4();
    let mut buf = sealed(&ctx, Opcode::new(Transport::Rc, Op::SendOnly).unwrap(), 5);
    let mut p = Packet::new_checked(&mut buf[..]).unwrap();
    p.set_fecn(true);
    p.set_becn(false);
    assert!(p.verify_icrc(&ctx));
    p.set_ack_req(false);
    assert!(!p.verify_icrc(&ctx));
    p.seal_icrc(&ctx);
    assert!(p.verify_icrc(&ctx));
}

/// The pseudo-header counts: addresses, ports, family, length.
#[test]
fn context_is_covered() {
    let opcode = Opcode::new(Transport::Rc, Op::WriteFirst).unwrap();
    for base in [v4(), v6()] {
        let buf = sealed(&base, opcode, 8);
        let other_ip: IpAddr = match base.src {
            IpAddr::V4(_) => "192.168.0.8".parse().unwrap(),
            IpAddr::V6(_) => "fe80::1:3".parse().unwrap(),
        };
        for ctx in [
            IcrcContext {
                src: other_ip,
                ..base
            },
            IcrcContext {
                dst: other_ip,
                ..base
            },
            IcrcContext {
                src: base.dst,
                dst: base.src,
                ..base
            },
            IcrcContext {
                src_port: base.src_port ^ 1,
                ..base
            },
            IcrcContext {
                dst_port: 4792,
                ..base
            },
        ] {
            assert!(!icrc::verify(&ctx, &buf), "{ctx:?}");
        }
    }
    // IPv4 and the same addresses IPv4-mapped in IPv6 sockets are one thing
    let buf = sealed(&v4(), opcode, 8);
    let mapped = |a: IpAddr| match a {
        IpAddr::V4(a) => IpAddr::V6(a.to_ipv6_mapped()),
        a => a,
    };
    let ctx = IcrcContext {
        src: mapped(v4().src),
        dst: mapped(v4().dst),
        ..v4()
    };
    assert!(icrc::verify(&ctx, &buf));
    // a length change is caught even when the covered bytes are the same
    let mut longer = buf.clone();
    let icrc_bytes: Vec<u8> = longer[longer.len() - 4..].to_vec();
    longer.truncate(longer.len() - 4);
    longer.extend_from_slice(&[0, 0, 0, 0]);
    longer.extend_from_slice(&icrc_bytes);
    assert!(!icrc::verify(&v4(), &longer));
}

/// The context path is the raw-header path on the header the kernel sends
/// with IP_PMTUDISC_DO: IPv4 ID 0, DF; UDP checksum 0.
#[test]
fn context_equals_kernel_headers() {
    let buf = sealed(&v4(), Opcode::new(Transport::Uc, Op::SendOnly).unwrap(), 10);
    let ctx = v4();
    let total = (20 + 8 + buf.len()) as u16;
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[1] = 0x02; // ECT(0): masked
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[6] = 0x40; // DF
    ip[8] = 64;
    ip[9] = 17;
    ip[10] = 0x12;
    ip[11] = 0x34;
    ip[12..16].copy_from_slice(&[192, 168, 0, 7]);
    ip[16..20].copy_from_slice(&[192, 168, 0, 9]);
    let mut udp = [0u8; 8];
    udp[0..2].copy_from_slice(&ctx.src_port.to_be_bytes());
    udp[2..4].copy_from_slice(&4791u16.to_be_bytes());
    udp[4..6].copy_from_slice(&(total - 20).to_be_bytes());
    assert_eq!(
        icrc::compute_with_headers(&ip, &udp, &buf),
        icrc::compute(&ctx, &buf)
    );
    // a non-zero IP ID (a connected socket, or rxe) gives another ICRC
    ip[5] = 1;
    assert_ne!(
        icrc::compute_with_headers(&ip, &udp, &buf),
        icrc::compute(&ctx, &buf)
    );
}

proptest! {
    #[test]
    fn arbitrary_bytes_seal_verify(
        mut bytes in proptest::collection::vec(any::<u8>(), 4..300),
        i in any::<proptest::sample::Index>(),
        x in 1..=255u8,
        v6ctx in any::<bool>(),
    ) {
        let ctx = if v6ctx { v6() } else { v4() };
        icrc::seal(&ctx, &mut bytes);
        prop_assert!(icrc::verify(&ctx, &bytes));
        let i = i.index(bytes.len());
        bytes[i] ^= x;
        prop_assert_eq!(icrc::verify(&ctx, &bytes), i == 4 && bytes.len() >= 9);
    }
}
