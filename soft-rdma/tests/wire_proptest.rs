//! Property tests of the wire layer: emit/parse round trips of arbitrary
//! reprs; arbitrary and mutated bytes never panic the parser or the
//! zero-copy view, the two agree, and whatever parses re-emits to the same
//! header bytes.
//!
//! Bits the repr does not model, written as zero by emit and ignored by
//! parse: BTH byte 4 low 6 bits (reserved after FECN/BECN), BTH byte 8 low 7
//! bits (reserved after AckReq), the DETH's reserved byte 4, and the
//! contents of the pad bytes.

use proptest::prelude::*;
use soft_rdma::wire::*;

fn arb_opcode() -> impl Strategy<Value = Opcode> {
    proptest::sample::select(Opcode::all().collect::<Vec<_>>())
}

fn arb_aeth() -> impl Strategy<Value = Aeth> {
    let syndrome = prop_oneof![
        (0..=MAX_SYNDROME_VALUE).prop_map(|credits| Syndrome::Ack { credits }),
        (0..=MAX_SYNDROME_VALUE).prop_map(|timer| Syndrome::RnrNak { timer }),
        (0..5u8).prop_map(|c| Syndrome::Nak(NakCode::from_u8(c).unwrap())),
    ];
    (syndrome, 0..=MAX_U24).prop_map(|(syndrome, msn)| Aeth { syndrome, msn })
}

fn arb_reth() -> impl Strategy<Value = Reth> {
    any::<(u64, u32, u32)>().prop_map(|(va, rkey, len)| Reth { va, rkey, len })
}

fn arb_deth() -> impl Strategy<Value = Deth> {
    (any::<u32>(), 0..=MAX_U24).prop_map(|(qkey, src_qp)| Deth { qkey, src_qp })
}

fn arb_ext(kind: ExtKind) -> BoxedStrategy<Ext> {
    match kind {
        ExtKind::None => Just(Ext::None).boxed(),
        ExtKind::Imm => any::<u32>().prop_map(Ext::Imm).boxed(),
        ExtKind::Inv => any::<u32>().prop_map(Ext::Inv).boxed(),
        ExtKind::Reth => arb_reth().prop_map(Ext::Reth).boxed(),
        ExtKind::RethImm => (arb_reth(), any::<u32>())
            .prop_map(|(r, i)| Ext::RethImm(r, i))
            .boxed(),
        ExtKind::Aeth => arb_aeth().prop_map(Ext::Aeth).boxed(),
        ExtKind::AtomicAck => (arb_aeth(), any::<u64>())
            .prop_map(|(a, v)| Ext::AtomicAck(a, v))
            .boxed(),
        ExtKind::Atomic => any::<(u64, u32, u64, u64)>()
            .prop_map(|(va, rkey, swap_add, compare)| {
                Ext::Atomic(AtomicEth {
                    va,
                    rkey,
                    swap_add,
                    compare,
                })
            })
            .boxed(),
        ExtKind::Deth => arb_deth().prop_map(Ext::Deth).boxed(),
        ExtKind::DethImm => (arb_deth(), any::<u32>())
            .prop_map(|(d, i)| Ext::DethImm(d, i))
            .boxed(),
        ExtKind::FethReth => (0..16u8, 0..4u8, arb_reth())
            .prop_map(|(placement, level, r)| Ext::FethReth(Feth { placement, level }, r))
            .boxed(),
        ExtKind::Xrc(k) => (0..=MAX_U24, arb_ext(k.base()))
            .prop_map(|(srqn, rest)| Ext::Xrc(srqn, XrcExt::from_ext(rest).unwrap()))
            .boxed(),
    }
}

prop_compose! {
    fn arb_bth(opcode: Opcode)(
        flags in any::<[bool; 5]>(),
        pad in 0..4u8,
        pkey in any::<u16>(),
        dest_qp in 0..=MAX_U24,
        psn in 0..=MAX_U24,
    ) -> Bth {
        let [solicited, mig_req, fecn, becn, ack_req] = flags;
        Bth { opcode, solicited, mig_req, pad, pkey, fecn, becn, dest_qp, ack_req, psn }
    }
}

fn arb_repr() -> impl Strategy<Value = PacketRepr> {
    arb_opcode().prop_flat_map(|opcode| {
        let max_len: usize = if opcode.op().has_payload() { 300 } else { 0 };
        (arb_bth(opcode), arb_ext(opcode.ext_kind()), 0..=max_len).prop_map(
            |(bth, ext, payload_len)| PacketRepr {
                bth,
                ext,
                payload_len,
            },
        )
    })
}

/// Emit `repr` with a payload derived from `seed`.
fn build(repr: &PacketRepr, seed: u8) -> Vec<u8> {
    let mut buf = vec![0x5au8; repr.buffer_len()];
    let hl = repr.header_len();
    for (i, b) in buf[hl..hl + repr.payload_len].iter_mut().enumerate() {
        *b = seed.wrapping_add(i as u8);
    }
    repr.emit(&mut buf).unwrap();
    buf
}

/// Every check on arbitrary bytes: no panics anywhere; the view and the
/// parser agree; what parses re-emits to the same header bytes.
fn check_bytes(bytes: &[u8]) {
    let parsed = PacketRepr::parse(bytes);

    if bytes.len() >= BTH_LEN {
        // BTH accessors need only the BTH, checked or not
        let p = Packet::new_unchecked(bytes);
        let _ = (
            p.opcode(),
            p.solicited(),
            p.mig_req(),
            p.pad(),
            p.tver(),
            p.pkey(),
        );
        let _ = (
            p.fecn(),
            p.becn(),
            p.dest_qp(),
            p.ack_req(),
            p.psn(),
            p.bth(),
            p.ext(),
        );
        let _ = p.header_len();
    }

    match Packet::new_checked(bytes) {
        Ok(p) => {
            let bth = p.bth().expect("checked packet has a valid BTH");
            let range = p.payload_range();
            assert_eq!(p.payload().len(), range.len());
            assert_eq!(p.payload_len(), range.len());
            let _ = p.icrc();
            assert_eq!(bth.psn, p.psn());
            assert_eq!(bth.dest_qp, p.dest_qp());
            match p.ext() {
                Ok(ext) => {
                    let (repr, prange) = parsed.clone().expect("view accepts, parser must too");
                    assert_eq!(
                        repr,
                        PacketRepr {
                            bth,
                            ext,
                            payload_len: range.len()
                        }
                    );
                    assert_eq!(prange, range);
                }
                Err(e) => assert_eq!(parsed.clone().map(|_| ()), Err(e)),
            }
        }
        Err(e) => assert_eq!(parsed.clone().map(|_| ()), Err(e)),
    }

    if let Ok((repr, range)) = parsed {
        let _ = repr.to_string();
        assert_eq!(repr.buffer_len(), bytes.len());
        let mut out = vec![0xa5u8; bytes.len()];
        out[range.clone()].copy_from_slice(&bytes[range.clone()]);
        repr.emit(&mut out).unwrap();
        let hl = repr.header_len();
        let mut want = bytes[..hl].to_vec();
        want[4] &= 0xc0;
        want[8] &= 0x80;
        if matches!(repr.ext, Ext::Deth(_) | Ext::DethImm(..)) {
            want[BTH_LEN + 4] = 0;
        }
        if matches!(repr.ext, Ext::FethReth(..)) {
            // The FETH's reserved bits (all but the low 6) are written as zero.
            want[BTH_LEN..BTH_LEN + 3].fill(0);
            want[BTH_LEN + 3] &= 0x3f;
        }
        if matches!(repr.ext, Ext::Xrc(..)) {
            want[BTH_LEN] = 0; // the XRCETH's reserved byte
        }
        assert_eq!(&out[..hl], &want[..]);
        assert_eq!(&out[range.clone()], &bytes[range.clone()]);
        assert!(out[range.end..bytes.len() - ICRC_LEN]
            .iter()
            .all(|&b| b == 0));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn emit_parse_round_trip(repr in arb_repr(), seed in any::<u8>()) {
        let buf = build(&repr, seed);
        let hl = repr.header_len();
        let (parsed, range) = PacketRepr::parse(&buf).unwrap();
        let pad = pad_for(repr.payload_len);
        prop_assert_eq!(parsed, PacketRepr { bth: Bth { pad, ..repr.bth }, ..repr });
        prop_assert_eq!(range.clone(), hl..hl + repr.payload_len);
        let view = Packet::new_checked(&buf[..]).unwrap();
        prop_assert_eq!(view.payload(), &buf[range]);
        check_bytes(&buf);
    }

    #[test]
    fn arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        check_bytes(&bytes);
    }

    /// Arbitrary bytes behind a valid opcode and TVer 0, so that more of them
    /// get past the first checks.
    #[test]
    fn arbitrary_bytes_valid_opcode(
        opcode in arb_opcode(),
        flags in any::<u8>(),
        rest in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let mut bytes = vec![opcode.to_u8(), flags & 0xf0];
        bytes.extend(rest);
        check_bytes(&bytes);
    }

    #[test]
    fn mutated_packets(
        repr in arb_repr(),
        seed in any::<u8>(),
        flips in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 0..4),
        resize in -8i32..8,
    ) {
        let mut buf = build(&repr, seed);
        for (i, x) in flips {
            let i = i.index(buf.len());
            buf[i] ^= x;
        }
        let new_len = (buf.len() as i32 + resize).max(0) as usize;
        buf.resize(new_len, 0);
        check_bytes(&buf);
    }
}
