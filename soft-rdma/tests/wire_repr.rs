//! Deterministic tests of the wire layer: the opcode table, round trips of
//! every legal (transport, op) pair, hand-assembled golden packets, the error
//! cases, Display, and the zero-copy accessors.

use soft_rdma::wire::*;

const PAYLOAD_LENS: [usize; 6] = [0, 1, 2, 3, 4, 255];

fn reth() -> Reth {
    Reth {
        va: 0x7f01_0203_0405_0607,
        rkey: 0x8899_aabb,
        len: 0xfedc_ba98,
    }
}

/// Every value of `kind` we round-trip (several syndromes for AETH).
fn exts(kind: ExtKind) -> Vec<Ext> {
    let aeths = [
        Aeth {
            syndrome: Syndrome::Ack { credits: 0x1f },
            msn: MAX_U24,
        },
        Aeth {
            syndrome: Syndrome::Ack { credits: 0 },
            msn: 0,
        },
        Aeth {
            syndrome: Syndrome::RnrNak { timer: 0x1f },
            msn: 0x123456,
        },
        Aeth {
            syndrome: Syndrome::Nak(NakCode::PsnSequenceError),
            msn: 1,
        },
        Aeth {
            syndrome: Syndrome::Nak(NakCode::InvalidRequest),
            msn: 2,
        },
        Aeth {
            syndrome: Syndrome::Nak(NakCode::RemoteAccessError),
            msn: 3,
        },
        Aeth {
            syndrome: Syndrome::Nak(NakCode::RemoteOperationalError),
            msn: 4,
        },
        Aeth {
            syndrome: Syndrome::Nak(NakCode::InvalidRdRequest),
            msn: 5,
        },
    ];
    let deth = Deth {
        qkey: 0x8001_0000,
        src_qp: MAX_U24,
    };
    match kind {
        ExtKind::None => vec![Ext::None],
        ExtKind::Imm => vec![Ext::Imm(0xdead_beef)],
        ExtKind::Inv => vec![Ext::Inv(0x1234_5678)],
        ExtKind::Reth => vec![Ext::Reth(reth())],
        ExtKind::RethImm => vec![Ext::RethImm(reth(), 0xcafe_f00d)],
        ExtKind::Aeth => aeths.iter().map(|&a| Ext::Aeth(a)).collect(),
        ExtKind::AtomicAck => aeths
            .iter()
            .map(|&a| Ext::AtomicAck(a, 0x0102_0304_0506_0708))
            .collect(),
        ExtKind::Atomic => vec![Ext::Atomic(AtomicEth {
            va: 0xffff_0000_1111_2222,
            rkey: 0x3333_4444,
            swap_add: 0x5555_6666_7777_8888,
            compare: 0x9999_aaaa_bbbb_cccc,
        })],
        ExtKind::Deth => vec![Ext::Deth(deth)],
        ExtKind::DethImm => vec![Ext::DethImm(deth, 0x0bad_cafe)],
        ExtKind::FethReth => [(1, 0), (2, 1), (3, 0), (0xf, 3)]
            .into_iter()
            .map(|(placement, level)| Ext::FethReth(Feth { placement, level }, reth()))
            .collect(),
        ExtKind::Xrc(k) => [0, 0x12, MAX_U24]
            .into_iter()
            .flat_map(|srqn| {
                exts(k.base())
                    .into_iter()
                    .map(move |e| Ext::Xrc(srqn, XrcExt::from_ext(e).unwrap()))
            })
            .collect(),
    }
}

fn bths(opcode: Opcode) -> [Bth; 2] {
    [
        Bth {
            opcode,
            solicited: true,
            mig_req: true,
            pad: 3, // emit recomputes it
            pkey: 0xffff,
            fecn: true,
            becn: true,
            dest_qp: MAX_U24,
            ack_req: true,
            psn: MAX_U24,
        },
        Bth {
            opcode,
            solicited: false,
            mig_req: false,
            pad: 0,
            pkey: 0x8001,
            fecn: false,
            becn: false,
            dest_qp: 0x000011,
            ack_req: false,
            psn: 0,
        },
    ]
}

/// Every legal (transport, op) pair, each header variant, each payload
/// length: emit (around a payload written first) and parse back.
#[test]
fn round_trip_every_opcode() {
    let mut cases = 0;
    for opcode in Opcode::all() {
        let lens: &[usize] = if opcode.op().has_payload() {
            &PAYLOAD_LENS
        } else {
            &[0]
        };
        for bth in bths(opcode) {
            for ext in exts(opcode.ext_kind()) {
                for &payload_len in lens {
                    let repr = PacketRepr {
                        bth,
                        ext,
                        payload_len,
                    };
                    let hl = repr.header_len();
                    assert_eq!(hl, BTH_LEN + ext.len());
                    let pad = pad_for(payload_len) as usize;
                    assert_eq!(repr.buffer_len(), hl + payload_len + pad + ICRC_LEN);
                    assert_eq!((payload_len + pad) % 4, 0);

                    let mut buf = vec![0xa5u8; repr.buffer_len()];
                    for (i, b) in buf[hl..hl + payload_len].iter_mut().enumerate() {
                        *b = i as u8 ^ 0x3c;
                    }
                    repr.emit(&mut buf).unwrap();
                    // payload untouched, pad zeroed, ICRC area untouched
                    for (i, b) in buf[hl..hl + payload_len].iter().enumerate() {
                        assert_eq!(*b, i as u8 ^ 0x3c);
                    }
                    assert!(buf[hl + payload_len..hl + payload_len + pad]
                        .iter()
                        .all(|&b| b == 0));
                    assert!(buf[buf.len() - ICRC_LEN..].iter().all(|&b| b == 0xa5));

                    let (parsed, range) = PacketRepr::parse(&buf).unwrap();
                    let expected = PacketRepr {
                        bth: Bth {
                            pad: pad as u8,
                            ..bth
                        },
                        ..repr
                    };
                    assert_eq!(parsed, expected, "{opcode}");
                    assert_eq!(range, hl..hl + payload_len);

                    // emitting the parsed repr again gives the same bytes
                    let mut again = buf.clone();
                    parsed.emit(&mut again).unwrap();
                    assert_eq!(again, buf);
                    cases += 1;
                }
            }
        }
    }
    // 37 opcodes; sanity check that the loops ran
    assert!(cases > 37 * 2, "{cases}");
}

#[test]
fn opcode_table() {
    let mut legal = Vec::new();
    legal.extend(0x00..=0x14u8);
    legal.extend([0x16, 0x17, 0x1c, 0x1d]);
    legal.extend(0x20..=0x2bu8);
    legal.extend([0x64, 0x65]);
    legal.extend(0xa0..=0xb4u8);
    legal.extend([0xb6, 0xb7]);
    for byte in 0..=255u8 {
        match Opcode::from_u8(byte) {
            Some(op) => {
                assert!(legal.contains(&byte), "{byte:#04x} accepted");
                assert_eq!(op.to_u8(), byte);
                assert_eq!(Opcode::new(op.transport(), op.op()), Some(op));
            }
            None => assert!(!legal.contains(&byte), "{byte:#04x} rejected"),
        }
    }
    assert_eq!(Opcode::all().count(), legal.len());
    for op in Opcode::all() {
        assert_eq!(Opcode::from_u8(op.to_u8()), Some(op));
    }
    // CNP and RD are not ours (yet); FLUSH and ATOMIC WRITE are RC only
    for byte in [
        0x15, 0x3c, 0x3d, 0x7c, 0x7d, 0x80, 0x81, 0x40, 0x44, 0xb5, 0xbc, 0xbd, 0x2c, 0x36, 0x60,
        0x66,
    ] {
        assert_eq!(Opcode::from_u8(byte), None, "{byte:#04x}");
    }
    assert_eq!(Opcode::new(Transport::Ud, Op::ReadRequest), None);
    assert_eq!(Opcode::new(Transport::Uc, Op::SendOnlyInv), None);
    assert_eq!(Opcode::new(Transport::Uc, Op::Ack), None);
    assert_eq!(Opcode::new(Transport::Ud, Op::SendFirst), None);
}

#[test]
fn op_properties() {
    use Op::*;
    for op in Op::ALL {
        assert_eq!(Op::from_code(op.code()), Some(op));
        // exactly one position in a message
        let pos = [
            op.is_first() && !op.is_last(),
            op.is_middle(),
            op.is_last() && !op.is_first(),
        ];
        assert!(pos.iter().filter(|&&p| p).count() <= 1, "{op}");
        assert_eq!(op.is_middle(), !op.is_first() && !op.is_last(), "{op}");
        let carries_payload = !matches!(
            op,
            ReadRequest | Ack | AtomicAck | CompareSwap | FetchAdd | Flush
        );
        assert_eq!(op.has_payload(), carries_payload, "{op}");
    }
    for op in [
        SendOnly,
        SendOnlyImm,
        SendOnlyInv,
        WriteOnly,
        WriteOnlyImm,
        ReadRespOnly,
        Ack,
        Flush,
        AtomicWrite,
    ] {
        assert!(op.is_first() && op.is_last(), "{op}");
    }
    for op in [
        SendLast,
        SendLastImm,
        SendLastInv,
        WriteLast,
        WriteLastImm,
        ReadRespLast,
    ] {
        assert!(!op.is_first() && op.is_last(), "{op}");
    }
    for op in [SendFirst, WriteFirst, ReadRespFirst] {
        assert!(op.is_first() && !op.is_last(), "{op}");
    }
    let aeth: Vec<Op> = Op::ALL.into_iter().filter(|o| o.carries_aeth()).collect();
    assert_eq!(
        aeth,
        [ReadRespFirst, ReadRespLast, ReadRespOnly, Ack, AtomicAck]
    );
    let reth: Vec<Op> = Op::ALL.into_iter().filter(|o| o.carries_reth()).collect();
    assert_eq!(
        reth,
        [
            WriteFirst,
            WriteOnly,
            WriteOnlyImm,
            ReadRequest,
            Flush,
            AtomicWrite
        ]
    );
    let feth: Vec<Op> = Op::ALL.into_iter().filter(|o| o.carries_feth()).collect();
    assert_eq!(feth, [Flush]);
    let placement: Vec<Op> = Op::ALL.into_iter().filter(|o| o.is_placement()).collect();
    assert_eq!(placement, [Flush, AtomicWrite]);
    for op in [Flush, AtomicWrite] {
        assert!(!op.is_response() && !op.is_atomic(), "{op}");
        assert_eq!(Opcode::new(Transport::Uc, op), None, "{op}");
        assert_eq!(Opcode::new(Transport::Ud, op), None, "{op}");
    }
    assert_eq!((Flush.code(), AtomicWrite.code()), (0x1c, 0x1d));
    assert_eq!(
        (Flush.name(), AtomicWrite.name()),
        ("FLUSH", "ATOMIC_WRITE")
    );
}

/// The ext kind each opcode requires, straight from the brief's table.
#[test]
fn ext_kind_table() {
    use ExtKind as K;
    use Op::*;
    let rc = |op| Opcode::new(Transport::Rc, op).unwrap().ext_kind();
    for (op, kind) in [
        (SendFirst, K::None),
        (SendMiddle, K::None),
        (SendLast, K::None),
        (SendLastImm, K::Imm),
        (SendOnly, K::None),
        (SendOnlyImm, K::Imm),
        (WriteFirst, K::Reth),
        (WriteMiddle, K::None),
        (WriteLast, K::None),
        (WriteLastImm, K::Imm),
        (WriteOnly, K::Reth),
        (WriteOnlyImm, K::RethImm),
        (ReadRequest, K::Reth),
        (ReadRespFirst, K::Aeth),
        (ReadRespMiddle, K::None),
        (ReadRespLast, K::Aeth),
        (ReadRespOnly, K::Aeth),
        (Ack, K::Aeth),
        (AtomicAck, K::AtomicAck),
        (CompareSwap, K::Atomic),
        (FetchAdd, K::Atomic),
        (SendLastInv, K::Inv),
        (SendOnlyInv, K::Inv),
        (Flush, K::FethReth),
        (AtomicWrite, K::Reth),
    ] {
        assert_eq!(rc(op), kind, "{op}");
        // XRC: RC's headers behind an XRCETH on requests, RC's on
        // responses; no FLUSH or ATOMIC WRITE (RC only, as rxe's table).
        let Some(xrc) = Opcode::new(Transport::Xrc, op) else {
            assert!(matches!(op, Flush | AtomicWrite), "XRC {op}");
            continue;
        };
        let xrc = xrc.ext_kind();
        if op.is_response() {
            assert_eq!(xrc, kind, "XRC {op}");
        } else {
            assert_eq!(xrc, K::Xrc(XrcKind::of(kind).unwrap()), "XRC {op}");
            assert_eq!(xrc.len(), 4 + kind.len(), "XRC {op}");
        }
        if let Some(uc) = Opcode::new(Transport::Uc, op) {
            assert_eq!(uc.ext_kind(), kind, "UC {op}");
        }
    }
    let ud = |op| Opcode::new(Transport::Ud, op).unwrap().ext_kind();
    assert_eq!(ud(SendOnly), K::Deth);
    assert_eq!(ud(SendOnlyImm), K::DethImm);
    let lens = [
        (K::None, 0),
        (K::Imm, 4),
        (K::Inv, 4),
        (K::Reth, 16),
        (K::RethImm, 20),
        (K::Aeth, 4),
        (K::AtomicAck, 12),
        (K::Atomic, 28),
        (K::Deth, 8),
        (K::DethImm, 12),
        (K::FethReth, 20),
    ];
    for (k, len) in lens {
        assert_eq!(k.len(), len, "{k:?}");
    }
}

fn op(t: Transport, o: Op) -> Opcode {
    Opcode::new(t, o).unwrap()
}

fn plain_bth(opcode: Opcode) -> Bth {
    Bth {
        opcode,
        solicited: false,
        mig_req: false,
        pad: 0,
        pkey: 0xffff,
        fecn: false,
        becn: false,
        dest_qp: 0x11,
        ack_req: false,
        psn: 123,
    }
}

/// FLUSH and ATOMIC WRITE assembled by hand (IBTA memory placement
/// extensions; rxe's layout): FETH before RETH, the FETH's reserved bits
/// zero on emit and ignored on parse, no payload on a FLUSH.
#[test]
fn golden_flush_and_atomic_write() {
    let reth = Reth {
        va: 0x0011_2233_4455_6677,
        rkey: 0x8899_aabb,
        len: 0x0000_1000,
    };
    let repr = PacketRepr {
        bth: Bth {
            ack_req: true,
            ..plain_bth(op(Transport::Rc, Op::Flush))
        },
        ext: Ext::FethReth(
            Feth {
                placement: 1,
                level: 1,
            },
            reth,
        ),
        payload_len: 0,
    };
    let mut buf = vec![0xeeu8; repr.buffer_len()];
    repr.emit(&mut buf).unwrap();
    #[rustfmt::skip]
    let want = [
        0x1c, 0x00, 0xff, 0xff, 0x00, 0x00, 0x00, 0x11, 0x80, 0x00, 0x00, 0x7b,
        0x00, 0x00, 0x00, 0x11,
        0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0x00, 0x00, 0x10, 0x00,
        0xee, 0xee, 0xee, 0xee,
    ];
    assert_eq!(buf, want);
    assert_eq!(
        repr.to_string(),
        "RC FLUSH qp=0x000011 psn=123 ack_req plt=1 sel=1 va=0x11223344556677 rkey=0x8899aabb dlen=4096"
    );
    // Reserved FETH bits set by a peer: ignored.
    let mut odd = buf.clone();
    odd[12] = 0xff;
    odd[13] = 0xff;
    odd[14] = 0xff;
    odd[15] = 0xc2; // reserved bits 7..6, level 0, placement 2
    let (parsed, range) = PacketRepr::parse(&odd).unwrap();
    assert_eq!(
        parsed.ext,
        Ext::FethReth(
            Feth {
                placement: 2,
                level: 0,
            },
            reth
        )
    );
    assert_eq!(range, 32..32);
    // A FLUSH carries no payload.
    let mut long = buf[..32].to_vec();
    long.extend_from_slice(&[1, 2, 3, 4, 0, 0, 0, 0]);
    assert_eq!(PacketRepr::parse(&long), Err(WireError::BadLength));
    let with_payload = PacketRepr {
        payload_len: 4,
        ..repr
    };
    let mut b = vec![0u8; with_payload.buffer_len()];
    assert_eq!(with_payload.emit(&mut b), Err(WireError::BadLength));
    // The FETH's fields are 4 and 2 bits.
    for feth in [
        Feth {
            placement: 16,
            level: 0,
        },
        Feth {
            placement: 1,
            level: 4,
        },
    ] {
        let r = PacketRepr {
            ext: Ext::FethReth(feth, reth),
            ..repr
        };
        let mut b = vec![0u8; r.buffer_len()];
        assert_eq!(r.emit(&mut b), Err(WireError::FieldRange), "{feth:?}");
    }

    // RC ATOMIC_WRITE: RETH, then the 8 bytes.
    let repr = PacketRepr {
        bth: Bth {
            ack_req: true,
            ..plain_bth(op(Transport::Rc, Op::AtomicWrite))
        },
        ext: Ext::Reth(Reth { len: 8, ..reth }),
        payload_len: 8,
    };
    let mut buf = vec![0u8; repr.buffer_len()];
    buf[28..36].copy_from_slice(b"atomic!!");
    repr.emit(&mut buf).unwrap();
    #[rustfmt::skip]
    let want = [
        0x1d, 0x00, 0xff, 0xff, 0x00, 0x00, 0x00, 0x11, 0x80, 0x00, 0x00, 0x7b,
        0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0x00, 0x00, 0x00, 0x08,
        b'a', b't', b'o', b'm', b'i', b'c', b'!', b'!',
        0, 0, 0, 0,
    ];
    assert_eq!(buf, want);
    let (parsed, range) = PacketRepr::parse(&buf).unwrap();
    assert_eq!(parsed, repr);
    assert_eq!(&buf[range], b"atomic!!");
    assert_eq!(
        repr.to_string(),
        "RC ATOMIC_WRITE qp=0x000011 psn=123 ack_req va=0x11223344556677 rkey=0x8899aabb dlen=8 len=8"
    );
}

/// Packets assembled by hand from the spec's byte layout.
#[test]
fn golden_bytes() {
    // RC SEND_ONLY, SE, FECN, AckReq, 2-byte payload (pad 2)
    let repr = PacketRepr {
        bth: Bth {
            solicited: true,
            fecn: true,
            ack_req: true,
            ..plain_bth(op(Transport::Rc, Op::SendOnly))
        },
        ext: Ext::None,
        payload_len: 2,
    };
    let mut buf = vec![0xeeu8; repr.buffer_len()];
    buf[12] = 0xab;
    buf[13] = 0xcd;
    repr.emit(&mut buf).unwrap();
    #[rustfmt::skip]
    let want = [
        0x04, 0xa0, 0xff, 0xff, 0x80, 0x00, 0x00, 0x11, 0x80, 0x00, 0x00, 0x7b,
        0xab, 0xcd, 0x00, 0x00,
        0xee, 0xee, 0xee, 0xee,
    ];
    assert_eq!(buf, want);

    // UC RDMA_WRITE_ONLY_IMM, MigReq, BECN: RETH then ImmDt, 3-byte payload (pad 1)
    let repr = PacketRepr {
        bth: Bth {
            mig_req: true,
            becn: true,
            pkey: 0x8001,
            dest_qp: 0xabcdef,
            psn: 0x010203,
            ..plain_bth(op(Transport::Uc, Op::WriteOnlyImm))
        },
        ext: Ext::RethImm(
            Reth {
                va: 0x0011_2233_4455_6677,
                rkey: 0x8899_aabb,
                len: 3,
            },
            0xdead_beef,
        ),
        payload_len: 3,
    };
    let mut buf = vec![0u8; repr.buffer_len()];
    buf[32..35].copy_from_slice(b"xyz");
    repr.emit(&mut buf).unwrap();
    #[rustfmt::skip]
    let want = [
        0x2b, 0x50, 0x80, 0x01, 0x40, 0xab, 0xcd, 0xef, 0x00, 0x01, 0x02, 0x03,
        0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0x00, 0x00, 0x00, 0x03,
        0xde, 0xad, 0xbe, 0xef,
        b'x', b'y', b'z', 0x00,
        0, 0, 0, 0,
    ];
    assert_eq!(buf, want);

    // RC ACK, NAK remote access error, MSN 0x000105
    let repr = PacketRepr {
        bth: plain_bth(op(Transport::Rc, Op::Ack)),
        ext: Ext::Aeth(Aeth {
            syndrome: Syndrome::Nak(NakCode::RemoteAccessError),
            msn: 0x105,
        }),
        payload_len: 0,
    };
    let mut buf = vec![0u8; repr.buffer_len()];
    repr.emit(&mut buf).unwrap();
    assert_eq!(
        &buf[..16],
        &[0x11, 0, 0xff, 0xff, 0, 0, 0, 0x11, 0, 0, 0, 0x7b, 0x62, 0x00, 0x01, 0x05]
    );

    // RC ATOMIC_ACK, ACK with 5 credits: AETH then the original value
    let repr = PacketRepr {
        bth: plain_bth(op(Transport::Rc, Op::AtomicAck)),
        ext: Ext::AtomicAck(
            Aeth {
                syndrome: Syndrome::Ack { credits: 5 },
                msn: 7,
            },
            0x0102_0304_0506_0708,
        ),
        payload_len: 0,
    };
    let mut buf = vec![0u8; repr.buffer_len()];
    repr.emit(&mut buf).unwrap();
    assert_eq!(buf.len(), 12 + 12 + 4);
    assert_eq!(&buf[12..24], &[0x05, 0, 0, 7, 1, 2, 3, 4, 5, 6, 7, 8]);

    // RC RNR NAK timer 14
    let aeth = Aeth {
        syndrome: Syndrome::RnrNak { timer: 14 },
        msn: 9,
    };
    assert_eq!(aeth.to_u32(), 0x2e00_0009);
    assert_eq!(Aeth::from_u32(0x2e00_0009), Ok(aeth));

    // RC CMP&SWAP: VA, R_Key, swap, compare
    let repr = PacketRepr {
        bth: plain_bth(op(Transport::Rc, Op::CompareSwap)),
        ext: Ext::Atomic(AtomicEth {
            va: 0x1000,
            rkey: 0x22,
            swap_add: 0x33,
            compare: 0x44,
        }),
        payload_len: 0,
    };
    let mut buf = vec![0u8; repr.buffer_len()];
    repr.emit(&mut buf).unwrap();
    assert_eq!(buf[0], 0x13);
    #[rustfmt::skip]
    assert_eq!(&buf[12..40], &[
        0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 0x22,
        0, 0, 0, 0, 0, 0, 0, 0x33, 0, 0, 0, 0, 0, 0, 0, 0x44,
    ]);

    // UD SEND_ONLY_IMM: DETH (Q_Key, reserved, source QP) then ImmDt
    let repr = PacketRepr {
        bth: Bth {
            dest_qp: 1,
            ..plain_bth(op(Transport::Ud, Op::SendOnlyImm))
        },
        ext: Ext::DethImm(
            Deth {
                qkey: 0x8001_0000,
                src_qp: 0x000203,
            },
            0x0a0b_0c0d,
        ),
        payload_len: 4,
    };
    let mut buf = vec![0xffu8; repr.buffer_len()];
    repr.emit(&mut buf).unwrap();
    assert_eq!(buf[0], 0x65);
    assert_eq!(
        &buf[12..24],
        &[0x80, 0x01, 0x00, 0x00, 0x00, 0x00, 0x02, 0x03, 0x0a, 0x0b, 0x0c, 0x0d]
    );
    assert_eq!(buf.len(), 24 + 4 + 4);
}

#[test]
fn parse_errors() {
    let ack = PacketRepr {
        bth: plain_bth(op(Transport::Rc, Op::Ack)),
        ext: Ext::Aeth(Aeth {
            syndrome: Syndrome::Ack { credits: 0x1f },
            msn: 1,
        }),
        payload_len: 0,
    };
    let mut good = vec![0u8; ack.buffer_len()];
    ack.emit(&mut good).unwrap();
    assert!(PacketRepr::parse(&good).is_ok());

    for len in 0..good.len() {
        assert_eq!(
            PacketRepr::parse(&good[..len]).map(|_| ()),
            Err(WireError::Truncated),
            "{len}"
        );
    }
    // payload on an ACK
    let mut long = good.clone();
    long.extend_from_slice(&[0; 4]);
    assert_eq!(
        PacketRepr::parse(&long).map(|_| ()),
        Err(WireError::BadLength)
    );
    // pad on an ACK
    let mut padded = good.clone();
    padded[1] = 0x10;
    assert_eq!(
        PacketRepr::parse(&padded).map(|_| ()),
        Err(WireError::BadLength)
    );
    // TVer
    for v in 1..16u8 {
        let mut b = good.clone();
        b[1] = v;
        assert_eq!(
            PacketRepr::parse(&b).map(|_| ()),
            Err(WireError::BadVersion)
        );
    }
    // reserved syndromes: 010, 1xx kinds, NAK codes 5..=31
    for s in [0x40u8, 0x45, 0x80, 0xa0, 0xc0, 0xe0, 0xff, 0x65, 0x66, 0x7f] {
        let mut b = good.clone();
        b[12] = s;
        assert_eq!(
            PacketRepr::parse(&b).map(|_| ()),
            Err(WireError::BadSyndrome(s)),
            "{s:#x}"
        );
    }
    // unknown opcodes
    for o in [0x15u8, 0x3c, 0x7d, 0x81] {
        let mut b = good.clone();
        b[0] = o;
        assert_eq!(
            PacketRepr::parse(&b).map(|_| ()),
            Err(WireError::UnknownOpcode(o))
        );
    }

    // SEND: payload + pad must be a multiple of 4, pad within it
    let send = PacketRepr {
        bth: plain_bth(op(Transport::Rc, Op::SendOnly)),
        ext: Ext::None,
        payload_len: 5,
    };
    let mut b = vec![0u8; send.buffer_len()];
    send.emit(&mut b).unwrap();
    assert_eq!(b[1] & 0x30, 0x30); // pad 3
    assert_eq!(PacketRepr::parse(&b).unwrap().0.payload_len, 5);
    // within a 4-aligned area, the pad count just decides the payload length
    for pad in [0u8, 1, 2, 3] {
        let mut x = b.clone();
        x[1] = pad << 4;
        assert_eq!(
            PacketRepr::parse(&x).unwrap().0.payload_len,
            8 - pad as usize,
            "pad {pad}"
        );
    }
    // an area that is not a multiple of 4 fits no pad count
    for extra in 1..4 {
        for pad in [0u8, 1, 2, 3] {
            let mut x = b.clone();
            x[1] = pad << 4;
            x.extend(std::iter::repeat_n(0, extra));
            assert_eq!(PacketRepr::parse(&x).map(|_| ()), Err(WireError::BadLength));
        }
    }
    // empty SEND with a pad count: pad longer than the payload area
    let empty = PacketRepr {
        payload_len: 0,
        ..send
    };
    let mut x = vec![0u8; empty.buffer_len()];
    empty.emit(&mut x).unwrap();
    x[1] = 0x30;
    assert_eq!(PacketRepr::parse(&x).map(|_| ()), Err(WireError::BadLength));
}

#[test]
fn emit_errors() {
    let bth = plain_bth(op(Transport::Rc, Op::WriteFirst));
    let reth = Ext::Reth(reth());
    let good = PacketRepr {
        bth,
        ext: reth,
        payload_len: 8,
    };
    let mut buf = vec![0x77u8; good.buffer_len()];
    let untouched = buf.clone();

    let check = |repr: PacketRepr, buf: &mut Vec<u8>, err: WireError| {
        assert_eq!(repr.emit(buf), Err(err), "{repr:?}");
        assert_eq!(*buf, untouched, "buffer written on error");
    };
    // every wrong ext kind
    for opcode in Opcode::all() {
        for ext in [
            Ext::None,
            Ext::Imm(1),
            Ext::Inv(1),
            reth,
            Ext::RethImm(self::reth(), 1),
            Ext::Aeth(Aeth {
                syndrome: Syndrome::Ack { credits: 1 },
                msn: 1,
            }),
            Ext::AtomicAck(
                Aeth {
                    syndrome: Syndrome::Ack { credits: 1 },
                    msn: 1,
                },
                1,
            ),
            Ext::Atomic(AtomicEth {
                va: 1,
                rkey: 1,
                swap_add: 1,
                compare: 1,
            }),
            Ext::Deth(Deth { qkey: 1, src_qp: 1 }),
            Ext::DethImm(Deth { qkey: 1, src_qp: 1 }, 1),
        ] {
            let repr = PacketRepr {
                bth: Bth { opcode, ..bth },
                ext,
                payload_len: 0,
            };
            let mut b = vec![0u8; repr.buffer_len()];
            let res = repr.emit(&mut b);
            if ext.kind() == opcode.ext_kind() {
                assert_eq!(res, Ok(()));
            } else {
                assert_eq!(res, Err(WireError::ExtMismatch), "{opcode} {ext:?}");
            }
        }
    }
    // payload where none is allowed
    let read = PacketRepr {
        bth: plain_bth(op(Transport::Rc, Op::ReadRequest)),
        ext: reth,
        payload_len: 4,
    };
    let mut b = vec![0u8; read.buffer_len()];
    assert_eq!(read.emit(&mut b), Err(WireError::BadLength));
    // buffer size
    let mut short = vec![0u8; good.buffer_len() - 1];
    assert_eq!(good.emit(&mut short), Err(WireError::Truncated));
    let mut long = vec![0u8; good.buffer_len() + 1];
    assert_eq!(good.emit(&mut long), Err(WireError::BadLength));
    // fields too wide
    check(
        PacketRepr {
            bth: Bth {
                psn: 1 << 24,
                ..bth
            },
            ..good
        },
        &mut buf,
        WireError::FieldRange,
    );
    check(
        PacketRepr {
            bth: Bth {
                dest_qp: 1 << 24,
                ..bth
            },
            ..good
        },
        &mut buf,
        WireError::FieldRange,
    );
    let ack = |syndrome, msn| PacketRepr {
        bth: plain_bth(op(Transport::Rc, Op::Ack)),
        ext: Ext::Aeth(Aeth { syndrome, msn }),
        payload_len: 0,
    };
    let mut b = vec![0u8; 20];
    assert_eq!(
        ack(Syndrome::Ack { credits: 0x20 }, 0).emit(&mut b),
        Err(WireError::FieldRange)
    );
    assert_eq!(
        ack(Syndrome::RnrNak { timer: 0x20 }, 0).emit(&mut b),
        Err(WireError::FieldRange)
    );
    assert_eq!(
        ack(Syndrome::Ack { credits: 0 }, 1 << 24).emit(&mut b),
        Err(WireError::FieldRange)
    );
    assert_eq!(
        ack(Syndrome::Ack { credits: 0x1f }, MAX_U24).emit(&mut b),
        Ok(())
    );
    let ud = PacketRepr {
        bth: plain_bth(op(Transport::Ud, Op::SendOnly)),
        ext: Ext::Deth(Deth {
            qkey: 0,
            src_qp: 1 << 24,
        }),
        payload_len: 0,
    };
    let mut b = vec![0u8; ud.buffer_len()];
    assert_eq!(ud.emit(&mut b), Err(WireError::FieldRange));
}

#[test]
fn display() {
    let send = PacketRepr {
        bth: Bth {
            ack_req: true,
            ..plain_bth(op(Transport::Rc, Op::SendOnly))
        },
        ext: Ext::None,
        payload_len: 64,
    };
    assert_eq!(
        send.to_string(),
        "RC SEND_ONLY qp=0x000011 psn=123 ack_req len=64"
    );
    let ack = PacketRepr {
        bth: plain_bth(op(Transport::Rc, Op::Ack)),
        ext: Ext::Aeth(Aeth {
            syndrome: Syndrome::Ack { credits: 0x1f },
            msn: 5,
        }),
        payload_len: 0,
    };
    assert_eq!(ack.to_string(), "RC ACK qp=0x000011 psn=123 ACK msn=5");
    let nak = PacketRepr {
        ext: Ext::Aeth(Aeth {
            syndrome: Syndrome::Nak(NakCode::PsnSequenceError),
            msn: 5,
        }),
        ..ack
    };
    assert_eq!(
        nak.to_string(),
        "RC ACK qp=0x000011 psn=123 NAK PSN_SEQ_ERR msn=5"
    );
    let write = PacketRepr {
        bth: Bth {
            solicited: true,
            fecn: true,
            pkey: 0x8001,
            ..plain_bth(op(Transport::Uc, Op::WriteFirst))
        },
        ext: Ext::Reth(Reth {
            va: 0x7f00_1000,
            rkey: 0x1234,
            len: 8192,
        }),
        payload_len: 1024,
    };
    assert_eq!(
        write.to_string(),
        "UC RDMA_WRITE_FIRST qp=0x000011 psn=123 pkey=0x8001 se fecn va=0x7f001000 rkey=0x1234 dlen=8192 len=1024"
    );
    let ud = PacketRepr {
        bth: plain_bth(op(Transport::Ud, Op::SendOnlyImm)),
        ext: Ext::DethImm(
            Deth {
                qkey: 0x8001_0000,
                src_qp: 1,
            },
            7,
        ),
        payload_len: 0,
    };
    assert_eq!(
        ud.to_string(),
        "UD SEND_ONLY_IMM qp=0x000011 psn=123 qkey=0x80010000 src_qp=0x000001 imm=0x7 len=0"
    );
}

#[test]
fn packet_view() {
    let repr = PacketRepr {
        bth: Bth {
            solicited: true,
            becn: true,
            ack_req: true,
            ..plain_bth(op(Transport::Rc, Op::ReadRespFirst))
        },
        ext: Ext::Aeth(Aeth {
            syndrome: Syndrome::Ack { credits: 3 },
            msn: 77,
        }),
        payload_len: 6,
    };
    let mut buf = vec![0u8; repr.buffer_len()];
    buf[16..22].copy_from_slice(b"abcdef");
    repr.emit(&mut buf).unwrap();

    let mut p = Packet::new_checked(&mut buf[..]).unwrap();
    assert_eq!(p.opcode(), Ok(repr.bth.opcode));
    assert_eq!(p.opcode_byte(), 0x0d);
    assert!(p.solicited() && !p.mig_req() && !p.fecn() && p.becn() && p.ack_req());
    assert_eq!(
        (p.pad(), p.tver(), p.pkey(), p.dest_qp(), p.psn()),
        (2, 0, 0xffff, 0x11, 123)
    );
    assert_eq!(p.header_len(), Ok(16));
    assert_eq!(p.ext(), Ok(repr.ext));
    assert_eq!(p.payload(), b"abcdef");
    assert_eq!(p.payload_range(), 16..22);

    p.set_psn(0xfff_ffff); // truncated to 24 bits
    p.set_dest_qp(0x123456);
    p.set_ack_req(false);
    p.set_fecn(true);
    p.set_becn(false);
    p.set_solicited(false);
    p.set_mig_req(true);
    p.set_pkey(0x7fff);
    p.set_ext(&Ext::Aeth(Aeth {
        syndrome: Syndrome::RnrNak { timer: 1 },
        msn: 2,
    }))
    .unwrap();
    assert_eq!(p.set_ext(&Ext::None), Err(WireError::ExtMismatch));
    p.payload_mut().copy_from_slice(b"ABCDEF");
    let (parsed, range) = PacketRepr::parse(&buf).unwrap();
    assert_eq!(
        parsed.bth,
        Bth {
            solicited: false,
            mig_req: true,
            pad: 2,
            pkey: 0x7fff,
            fecn: true,
            becn: false,
            dest_qp: 0x123456,
            ack_req: false,
            psn: MAX_U24,
            opcode: repr.bth.opcode,
        }
    );
    assert_eq!(
        parsed.ext,
        Ext::Aeth(Aeth {
            syndrome: Syndrome::RnrNak { timer: 1 },
            msn: 2
        })
    );
    assert_eq!(&buf[range], b"ABCDEF");

    assert!(Packet::new_checked(&buf[..11]).is_err());
    assert_eq!(
        Packet::new_checked(&[0x15u8; 40][..]).map(|_| ()),
        Err(WireError::UnknownOpcode(0x15))
    );
}

/// XRC, assembled by hand: the XRCETH (reserved byte, 24-bit SRQ number)
/// right after the BTH and before the RETH and ImmDt; an XRC ACK is an RC
/// ACK with the XRC opcode (no XRCETH); parse gives back the same repr, and
/// Display names the SRQ.
#[test]
fn golden_xrc() {
    let repr = PacketRepr {
        bth: plain_bth(op(Transport::Xrc, Op::WriteOnlyImm)),
        ext: Ext::Xrc(
            0x00c0_ffee,
            XrcExt::RethImm(
                Reth {
                    va: 0x0011_2233_4455_6677,
                    rkey: 0x8899_aabb,
                    len: 4,
                },
                0xdead_beef,
            ),
        ),
        payload_len: 4,
    };
    let mut buf = vec![0x55u8; repr.buffer_len()];
    buf[36..40].copy_from_slice(b"wxyz");
    repr.emit(&mut buf).unwrap();
    #[rustfmt::skip]
    let want = [
        0xab, 0x00, 0xff, 0xff, 0x00, 0x00, 0x00, 0x11, 0x00, 0x00, 0x00, 0x7b,
        0x00, 0xc0, 0xff, 0xee,
        0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0x00, 0x00, 0x00, 0x04,
        0xde, 0xad, 0xbe, 0xef,
        b'w', b'x', b'y', b'z',
        0x55, 0x55, 0x55, 0x55,
    ];
    assert_eq!(buf, want);
    let (back, range) = PacketRepr::parse(&buf).unwrap();
    assert_eq!(back, repr);
    assert_eq!(&buf[range], b"wxyz");
    assert_eq!(
        repr.to_string(),
        "XRC RDMA_WRITE_ONLY_IMM qp=0x000011 psn=123 srqn=0xc0ffee \
         va=0x11223344556677 rkey=0x8899aabb dlen=4 imm=0xdeadbeef len=4"
    );
    // The reserved byte is ignored on parse, written as zero.
    let mut odd = buf.clone();
    odd[12] = 0xff;
    assert_eq!(PacketRepr::parse(&odd).unwrap().0, repr);

    let ack = PacketRepr {
        bth: plain_bth(op(Transport::Xrc, Op::Ack)),
        ext: Ext::Aeth(Aeth {
            syndrome: Syndrome::Nak(NakCode::InvalidRequest),
            msn: 7,
        }),
        payload_len: 0,
    };
    let mut buf = vec![0u8; ack.buffer_len()];
    ack.emit(&mut buf).unwrap();
    assert_eq!(buf.len(), 12 + 4 + 4);
    assert_eq!(&buf[..1], [0xb1]);
    assert_eq!(&buf[12..16], [0x61, 0x00, 0x00, 0x07]);
    // An RC header set where the XRC opcode wants an XRCETH is refused, and
    // an SRQ number wider than 24 bits too.
    let plain = PacketRepr {
        ext: Ext::Reth(Reth {
            va: 0,
            rkey: 1,
            len: 0,
        }),
        bth: plain_bth(op(Transport::Xrc, Op::WriteOnly)),
        payload_len: 0,
    };
    let mut buf = vec![0u8; plain.buffer_len() + 4];
    assert_eq!(plain.emit(&mut buf), Err(WireError::ExtMismatch));
    let wide = PacketRepr {
        ext: Ext::Xrc(
            MAX_U24 + 1,
            XrcExt::Reth(Reth {
                va: 0,
                rkey: 1,
                len: 0,
            }),
        ),
        ..plain
    };
    let mut buf = vec![0u8; wide.buffer_len()];
    assert_eq!(wide.emit(&mut buf), Err(WireError::FieldRange));
    // Truncated inside the XRCETH.
    assert_eq!(
        PacketRepr::parse(&want[..14]).unwrap_err(),
        WireError::Truncated
    );
}
