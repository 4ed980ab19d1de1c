//! A hostile peer against a real device: hand-crafted (and then corrupted)
//! packets to connected RC, UC and UD QPs whose memory is surrounded by
//! canaries. For each case: nothing is written (canaries and the region
//! byte for byte), the right counter moves (and no other), the answer is
//! what rxe (drivers/infiniband/sw/rxe/rxe_resp.c, rxe_recv.c) gives — a
//! NAK of the right kind and PSN, or silence — and the QP ends in the state
//! rxe leaves it in (class C errors take the responder QP to error).

mod attacker;
use attacker::*;
use soft_rdma::verbs::*;
use soft_rdma::wire::{AtomicEth, Deth, Ext, NakCode, Op, Opcode, Reth, ICRC_LEN};

const REGION: usize = 2 * PAGE;

/// An MR over canaried memory; the MR is dropped before the memory.
struct Target {
    mr: Mr,
    mem: Canaried,
}

fn target(pd: &Pd, access: Access, seed: u8) -> Target {
    let mem = Canaried::new(REGION, seed);
    let mr = pd.reg_mr(mem.addr(), REGION as u64, access).unwrap();
    Target { mr, mem }
}

fn write_only(va: u64, rkey: u32, len: u32) -> Ext {
    Ext::Reth(Reth { va, rkey, len })
}

fn atomic(va: u64, rkey: u32) -> Ext {
    Ext::Atomic(AtomicEth {
        va,
        rkey,
        swap_add: 0x1111_2222_3333_4444,
        compare: 0,
    })
}

/// One hostile request to a fresh RC QP (all QP rights): it must be NAKed
/// with `code` at ePSN, write nothing, count one NAK of that kind, and take
/// the QP to the error state (class C, rxe's do_class_ac_error).
fn expect_class_c(
    env: &mut Env,
    targets: &[&Target],
    opcode: Opcode,
    ext: Ext,
    payload: &[u8],
    code: NakCode,
    what: &str,
) {
    let (qp, peer) = env.qp(QpType::Rc, all_access());
    let before: Vec<Vec<u8>> = targets.iter().map(|t| t.mem.snapshot()).collect();
    let s = env.snap();
    let pkt = env.build(opcode, qp.qp_num(), EPSN, ext, payload);
    env.send(&pkt);
    let replies = env.sync();
    assert_nak(&replies, peer, EPSN, code, what);
    for (t, b) in targets.iter().zip(&before) {
        t.mem.assert_unchanged(b, what);
    }
    let counter = match code {
        NakCode::RemoteAccessError => "nak_sent_rem_access",
        NakCode::InvalidRequest => "nak_sent_inv_req",
        _ => unreachable!(),
    };
    env.assert_counted(&s, &[(counter, 1)], what);
    assert_eq!(qp.state(), QpState::Err, "{what}: class C error");
    // Its receive queue was empty: no completion to flush.
    assert!(env.completions().is_empty(), "{what}");
}

/// A hostile packet that must be dropped in silence: no reply, nothing
/// written, exactly `counted` moves, the QP (if any) stays in RTS.
fn expect_silent_drop(
    env: &mut Env,
    targets: &[&Target],
    qp: Option<&Qp>,
    pkts: &[Vec<u8>],
    counted: &[(&'static str, u64)],
    what: &str,
) {
    let before: Vec<Vec<u8>> = targets.iter().map(|t| t.mem.snapshot()).collect();
    let s = env.snap();
    let refs: Vec<&[u8]> = pkts.iter().map(|p| p.as_slice()).collect();
    env.send_many(&refs);
    let replies = env.sync();
    assert!(
        replies.is_empty(),
        "{what}: no answer expected, got {replies:?}"
    );
    for (t, b) in targets.iter().zip(&before) {
        t.mem.assert_unchanged(b, what);
    }
    env.assert_counted(&s, counted, what);
    if let Some(qp) = qp {
        assert_eq!(qp.state(), QpState::Rts, "{what}: the QP goes on");
    }
    assert!(env.completions().is_empty(), "{what}");
}

/// After the hostile cases, the same kind of request done right works on a
/// fresh QP: the refusals were about the packets, not a broken device.
fn legit_write_works(env: &mut Env, t: &Target) {
    let (qp, peer) = env.qp(QpType::Rc, all_access());
    let data: Vec<u8> = (0..64u8).map(|i| i ^ 0x5a).collect();
    let s = env.snap();
    let pkt = env.build(
        rc(Op::WriteOnly),
        qp.qp_num(),
        EPSN,
        write_only(t.mem.addr() + 100, t.mr.rkey(), 64),
        &data,
    );
    env.send(&pkt);
    let replies = env.sync();
    assert_ack(&replies, peer, EPSN, "a legitimate WRITE");
    assert_eq!(&t.mem.region()[100..164], &data[..]);
    assert!(t.mem.canaries_intact());
    env.assert_counted(&s, &[], "a legitimate WRITE");
}

#[test]
fn wrong_rkey_is_a_remote_access_nak() {
    let mut env = Env::new(1);
    let t = target(&env.pd, all_access(), 1);
    let va = t.mem.addr();
    let data = [0xeeu8; 64];
    // rxe check_rkey: lookup_mr fails → RESPST_ERR_RKEY_VIOLATION, class C.
    for (bad, how) in [
        (t.mr.rkey() ^ 0x1, "right index, wrong key byte"),
        (t.mr.rkey() ^ 0x100, "an index no MR has"),
        (t.mr.rkey().wrapping_add(0x100), "the next index"),
        (0, "zero"),
        (u32::MAX, "all ones"),
    ] {
        expect_class_c(
            &mut env,
            &[&t],
            rc(Op::WriteOnly),
            write_only(va, bad, 64),
            &data,
            NakCode::RemoteAccessError,
            &format!("WRITE, rkey {how}"),
        );
        expect_class_c(
            &mut env,
            &[&t],
            rc(Op::WriteFirst),
            write_only(va, bad, 2 * MTU_BYTES as u32),
            &[0xee; MTU_BYTES],
            NakCode::RemoteAccessError,
            &format!("WRITE FIRST, rkey {how}"),
        );
        expect_class_c(
            &mut env,
            &[&t],
            rc(Op::ReadRequest),
            write_only(va, bad, 64),
            &[],
            NakCode::RemoteAccessError,
            &format!("READ, rkey {how}"),
        );
        for op in [Op::FetchAdd, Op::CompareSwap] {
            expect_class_c(
                &mut env,
                &[&t],
                rc(op),
                atomic(va, bad),
                &[],
                NakCode::RemoteAccessError,
                &format!("{op:?}, rkey {how}"),
            );
        }
    }
    legit_write_works(&mut env, &t);
}

#[test]
fn rkey_of_a_foreign_pd_is_a_remote_access_nak() {
    let mut env = Env::new(2);
    let other = env.dev.alloc_pd();
    let t = target(&other, all_access(), 2);
    let va = t.mem.addr();
    // rxe lookup_mr: mr->ibmr.pd != pd → no MR → rkey violation.
    expect_class_c(
        &mut env,
        &[&t],
        rc(Op::WriteOnly),
        write_only(va, t.mr.rkey(), 8),
        &[1; 8],
        NakCode::RemoteAccessError,
        "WRITE to another PD's MR",
    );
    expect_class_c(
        &mut env,
        &[&t],
        rc(Op::ReadRequest),
        write_only(va, t.mr.rkey(), 8),
        &[],
        NakCode::RemoteAccessError,
        "READ of another PD's MR",
    );
    expect_class_c(
        &mut env,
        &[&t],
        rc(Op::FetchAdd),
        atomic(va, t.mr.rkey()),
        &[],
        NakCode::RemoteAccessError,
        "FETCH&ADD on another PD's MR",
    );
    // The same MR through a QP of its own PD is fine.
    let (qp, peer) = env.qp_with(&other, QpType::Rc, all_access());
    let pkt = env.build(
        rc(Op::WriteOnly),
        qp.qp_num(),
        EPSN,
        write_only(va, t.mr.rkey(), 8),
        &[9; 8],
    );
    env.send(&pkt);
    assert_ack(&env.sync(), peer, EPSN, "WRITE from the MR's own PD");
    assert_eq!(&t.mem.region()[..8], &[9; 8]);
}

#[test]
fn missing_mr_rights_are_remote_access_naks() {
    let mut env = Env::new(3);
    let lw = Access::LOCAL_WRITE;
    let no_write = target(&env.pd, lw | Access::REMOTE_READ | Access::REMOTE_ATOMIC, 3);
    let no_read = target(
        &env.pd,
        lw | Access::REMOTE_WRITE | Access::REMOTE_ATOMIC,
        4,
    );
    let no_atomic = target(&env.pd, lw | Access::REMOTE_WRITE | Access::REMOTE_READ, 5);
    let all = [&no_write, &no_read, &no_atomic];
    // rxe lookup_mr: (mr->access & access) != access → rkey violation.
    expect_class_c(
        &mut env,
        &all,
        rc(Op::WriteOnly),
        write_only(no_write.mem.addr(), no_write.mr.rkey(), 16),
        &[0xab; 16],
        NakCode::RemoteAccessError,
        "WRITE without REMOTE_WRITE",
    );
    expect_class_c(
        &mut env,
        &all,
        rc(Op::WriteOnlyImm),
        Ext::RethImm(
            Reth {
                va: no_write.mem.addr(),
                rkey: no_write.mr.rkey(),
                len: 16,
            },
            7,
        ),
        &[0xab; 16],
        NakCode::RemoteAccessError,
        "WRITE with immediate without REMOTE_WRITE",
    );
    expect_class_c(
        &mut env,
        &all,
        rc(Op::ReadRequest),
        write_only(no_read.mem.addr(), no_read.mr.rkey(), 16),
        &[],
        NakCode::RemoteAccessError,
        "READ without REMOTE_READ",
    );
    for op in [Op::FetchAdd, Op::CompareSwap] {
        expect_class_c(
            &mut env,
            &all,
            rc(op),
            atomic(no_atomic.mem.addr(), no_atomic.mr.rkey()),
            &[],
            NakCode::RemoteAccessError,
            &format!("{op:?} without REMOTE_ATOMIC"),
        );
    }
    // Each right where it was granted works.
    legit_write_works(&mut env, &no_read);
}

#[test]
fn out_of_bounds_and_wrapping_ranges_are_remote_access_naks() {
    let mut env = Env::new(4);
    let t = target(&env.pd, all_access(), 6);
    let (a, k) = (t.mem.addr(), t.mr.rkey());
    let end = a + REGION as u64;
    // rxe mr_check_range → rkey violation (class C).
    let cases: [(u64, u32, &str); 7] = [
        (u64::MAX - 7, 16, "va + len wraps past u64::MAX"),
        (u64::MAX, 1, "va = u64::MAX"),
        (u64::MAX - 15, 16, "ends exactly at 2^64"),
        (a - 1, 8, "starts one byte below the MR"),
        (a - 64, 64, "ends where the MR starts"),
        (end - 8, 16, "crosses the MR's end"),
        (end, 1, "starts at the MR's end"),
    ];
    for (va, len, how) in cases {
        let payload = vec![0x77; len as usize];
        expect_class_c(
            &mut env,
            &[&t],
            rc(Op::WriteOnly),
            write_only(va, k, len),
            &payload,
            NakCode::RemoteAccessError,
            &format!("WRITE {how}"),
        );
        expect_class_c(
            &mut env,
            &[&t],
            rc(Op::ReadRequest),
            write_only(va, k, len),
            &[],
            NakCode::RemoteAccessError,
            &format!("READ {how}"),
        );
    }
    // A multi-packet WRITE whose first packet fits but whose message does
    // not: nothing of it is written.
    expect_class_c(
        &mut env,
        &[&t],
        rc(Op::WriteFirst),
        write_only(end - MTU_BYTES as u64, k, 4 * MTU_BYTES as u32),
        &[0x77; MTU_BYTES],
        NakCode::RemoteAccessError,
        "WRITE FIRST whose message overruns the MR",
    );
    for (va, how) in [
        (u64::MAX - 7, "at u64::MAX - 7"),
        (end, "at the MR's end"),
        (a - 8, "below the MR"),
    ] {
        expect_class_c(
            &mut env,
            &[&t],
            rc(Op::FetchAdd),
            atomic(va, k),
            &[],
            NakCode::RemoteAccessError,
            &format!("FETCH&ADD {how}"),
        );
    }
    legit_write_works(&mut env, &t);
}

#[test]
fn inconsistent_lengths_are_invalid_request_naks() {
    let mut env = Env::new(5);
    let t = target(&env.pd, all_access(), 7);
    let (a, k) = (t.mem.addr(), t.mr.rkey());
    // rxe check_rkey: a single-packet WRITE's payload must equal the RETH
    // length → RESPST_ERR_LENGTH, class C invalid request.
    expect_class_c(
        &mut env,
        &[&t],
        rc(Op::WriteOnly),
        write_only(a, k, 64),
        &[1; 32],
        NakCode::InvalidRequest,
        "WRITE ONLY, RETH length above the payload",
    );
    expect_class_c(
        &mut env,
        &[&t],
        rc(Op::WriteOnly),
        write_only(a, k, 16),
        &[1; 32],
        NakCode::InvalidRequest,
        "WRITE ONLY, payload above the RETH length",
    );
    // rxe check_length: first and middle packets carry exactly the MTU.
    expect_class_c(
        &mut env,
        &[&t],
        rc(Op::WriteFirst),
        write_only(a, k, 2 * MTU_BYTES as u32),
        &[1; MTU_BYTES / 2],
        NakCode::InvalidRequest,
        "WRITE FIRST shorter than the MTU",
    );
    expect_class_c(
        &mut env,
        &[&t],
        rc(Op::WriteFirst),
        write_only(a, k, MTU_BYTES as u32),
        &[1; MTU_BYTES],
        NakCode::InvalidRequest,
        "WRITE FIRST of a message that fits one packet",
    );
    let (qp, peer) = env.qp(QpType::Rc, all_access());
    let before = t.mem.snapshot();
    // A multi-packet WRITE whose last packet brings more than announced:
    // the first packet lands (it was valid), the last is refused.
    let first = env.build(
        rc(Op::WriteFirst),
        qp.qp_num(),
        EPSN,
        write_only(a, k, MTU_BYTES as u32 + 8),
        &[2; MTU_BYTES],
    );
    let last = env.build(
        rc(Op::WriteLast),
        qp.qp_num(),
        EPSN + 1,
        Ext::None,
        &[2; 16],
    );
    let s = env.snap();
    env.send_many(&[&first, &last]);
    let replies = env.sync();
    assert_nak(
        &replies,
        peer,
        EPSN + 1,
        NakCode::InvalidRequest,
        "WRITE LAST above the RETH length",
    );
    assert_eq!(&t.mem.region()[..MTU_BYTES], &[2; MTU_BYTES]);
    assert_eq!(
        &t.mem.region()[MTU_BYTES..],
        &region_of(&t, &before)[MTU_BYTES..]
    );
    assert!(t.mem.canaries_intact());
    env.assert_counted(&s, &[("nak_sent_inv_req", 1)], "WRITE LAST too long");
    assert_eq!(qp.state(), QpState::Err);
}

/// The region's bytes within a snapshot of `t`'s memory.
fn region_of<'a>(t: &Target, snap: &'a [u8]) -> &'a [u8] {
    t.mem.region_in(snap)
}

#[test]
fn payload_above_the_path_mtu_is_an_invalid_request_nak() {
    let mut env = Env::new(6);
    let t = target(&env.pd, all_access(), 8);
    let big = vec![3u8; 2 * MTU_BYTES];
    // rxe check_length: an "only" packet longer than the path MTU →
    // RESPST_ERR_LENGTH → class C invalid request, even when the RETH
    // length agrees with the payload.
    expect_class_c(
        &mut env,
        &[&t],
        rc(Op::WriteOnly),
        write_only(t.mem.addr(), t.mr.rkey(), big.len() as u32),
        &big,
        NakCode::InvalidRequest,
        "WRITE ONLY of two MTUs",
    );
    // A SEND ONLY above the MTU with a receive big enough for it: refused,
    // the receive buffer untouched.
    let (qp, peer) = env.qp(QpType::Rc, all_access());
    env.post_recv(&qp, &t.mr, t.mem.addr(), REGION as u32, 42);
    let before = t.mem.snapshot();
    let s = env.snap();
    let pkt = env.build(rc(Op::SendOnly), qp.qp_num(), EPSN, Ext::None, &big);
    env.send(&pkt);
    assert_nak(
        &env.sync(),
        peer,
        EPSN,
        NakCode::InvalidRequest,
        "SEND ONLY of two MTUs",
    );
    t.mem.assert_unchanged(&before, "SEND ONLY of two MTUs");
    env.assert_counted(&s, &[("nak_sent_inv_req", 1)], "SEND ONLY of two MTUs");
    assert_eq!(qp.state(), QpState::Err);
    // The receive is flushed (never completed with the data).
    let c = env.completions();
    assert!(
        c.iter()
            .all(|w| w.wr_id != 42 || w.status != WcStatus::Success),
        "{c:?}"
    );
    legit_write_works(&mut env, &t);
}

#[test]
fn a_read_longer_than_the_max_message_is_an_invalid_request_nak() {
    let mut env = Env::new(7);
    let t = target(&env.pd, all_access(), 9);
    // rxe check_length: a RETH DMA length above 2^31 is RESPST_ERR_LENGTH
    // (checked before the R_Key). This device's maximum message is 8 MiB.
    for len in [0x8000_0001u32, u32::MAX, (8 << 20) + 1] {
        expect_class_c(
            &mut env,
            &[&t],
            rc(Op::ReadRequest),
            write_only(t.mem.addr(), t.mr.rkey(), len),
            &[],
            NakCode::InvalidRequest,
            &format!("READ of {len:#x} bytes"),
        );
        expect_class_c(
            &mut env,
            &[&t],
            rc(Op::WriteFirst),
            write_only(t.mem.addr(), t.mr.rkey(), len),
            &[4; MTU_BYTES],
            NakCode::InvalidRequest,
            &format!("WRITE FIRST of {len:#x} bytes"),
        );
    }
}

#[test]
fn misaligned_atomics_are_invalid_request_naks() {
    let mut env = Env::new(8);
    let t = target(&env.pd, all_access(), 10);
    // rxe atomic_reply: vaddr & 7 → RESPST_ERR_MISALIGNED_ATOMIC → class C
    // invalid request.
    for off in [1u64, 4, 7, 12] {
        for op in [Op::FetchAdd, Op::CompareSwap] {
            expect_class_c(
                &mut env,
                &[&t],
                rc(op),
                atomic(t.mem.addr() + off, t.mr.rkey()),
                &[],
                NakCode::InvalidRequest,
                &format!("{op:?} at offset {off}"),
            );
        }
    }
    // Aligned, it executes once and answers the original value.
    let (qp, peer) = env.qp(QpType::Rc, all_access());
    let orig = u64::from_ne_bytes(t.mem.region()[8..16].try_into().unwrap());
    let pkt = env.build(
        rc(Op::FetchAdd),
        qp.qp_num(),
        EPSN,
        Ext::Atomic(AtomicEth {
            va: t.mem.addr() + 8,
            rkey: t.mr.rkey(),
            swap_add: 5,
            compare: 0,
        }),
        &[],
    );
    env.send(&pkt);
    let r = env.sync();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].repr.bth.dest_qp, peer);
    assert!(matches!(r[0].repr.ext, Ext::AtomicAck(_, o) if o == orig));
    let now = u64::from_ne_bytes(t.mem.region()[8..16].try_into().unwrap());
    assert_eq!(now, orig.wrapping_add(5));
    assert!(t.mem.canaries_intact());
}

#[test]
fn bad_psns_are_duplicates_or_sequence_naks() {
    let mut env = Env::new(9);
    let t = target(&env.pd, all_access(), 11);
    let (qp, peer) = env.qp(QpType::Rc, all_access());
    let w = |env: &Env, psn: u32| {
        env.build(
            rc(Op::WriteOnly),
            qp.qp_num(),
            psn,
            write_only(t.mem.addr(), t.mr.rkey(), 32),
            &[0x99; 32],
        )
    };
    // rxe check_psn: diff < 0 → duplicate (RXE_CNT_DUP_REQ); a duplicate
    // WRITE is not executed again, only acknowledged up to ePSN - 1
    // (duplicate_request: send_ack(prev_psn)).
    for back in [1u32, 1000, 0x7f_ffff] {
        let what = format!("WRITE {back} PSNs in the past");
        let before = t.mem.snapshot();
        let s = env.snap();
        let pkt = w(&env, psn_sub(EPSN, back));
        env.send(&pkt);
        assert_ack(&env.sync(), peer, psn_sub(EPSN, 1), &what);
        t.mem.assert_unchanged(&before, &what);
        env.assert_counted(&s, &[("duplicate_requests", 1)], &what);
        assert_eq!(qp.state(), QpState::Rts, "{what}");
    }
    // Half the PSN space ahead is behind: psn_compare is a signed 24-bit
    // difference, so ePSN + 2^23 is a duplicate too ("beyond the window").
    {
        let what = "WRITE 2^23 PSNs ahead";
        let before = t.mem.snapshot();
        let s = env.snap();
        let pkt = w(&env, psn_add(EPSN, 0x80_0000));
        env.send(&pkt);
        assert_ack(&env.sync(), peer, psn_sub(EPSN, 1), what);
        t.mem.assert_unchanged(&before, what);
        env.assert_counted(&s, &[("duplicate_requests", 1)], what);
    }
    // diff > 0 → out of sequence: one PSN sequence error NAK carrying ePSN
    // for the gap (class B, RESPST_ERR_PSN_OUT_OF_SEQ), then silence
    // (sent_psn_nak) while the gap lasts; each counted; the QP goes on.
    // Those within the window (128 PSNs) are held, not run, until the gap
    // fills (`qp::reorder`).
    let before = t.mem.snapshot();
    let s = env.snap();
    let (p1, p2, p3) = (
        w(&env, psn_add(EPSN, 1)),
        w(&env, psn_add(EPSN, 50)),
        w(&env, psn_add(EPSN, 0x7f_ffff)),
    );
    env.send(&p1);
    let r = env.sync();
    assert_nak(&r, peer, EPSN, NakCode::PsnSequenceError, "ePSN + 1");
    env.send_many(&[&p2, &p3]);
    let r = env.sync();
    assert!(r.is_empty(), "one NAK per gap: {r:?}");
    t.mem.assert_unchanged(&before, "out-of-sequence WRITEs");
    env.assert_counted(
        &s,
        &[
            ("out_of_sequence", 3),
            ("reorder_held", 2),
            ("nak_sent_seq_err", 1),
        ],
        "three out-of-sequence WRITEs",
    );
    assert_eq!(qp.state(), QpState::Rts);
    // The expected PSN still works, and ends the gap: it runs, then the
    // held ePSN + 1; ePSN + 50 is still held past the new gap at ePSN + 2,
    // which is NAKed at once (the NAK's PSN acknowledges what ran).
    let s = env.snap();
    let good = w(&env, EPSN);
    env.send(&good);
    assert_nak(
        &env.sync(),
        peer,
        psn_add(EPSN, 2),
        NakCode::PsnSequenceError,
        "the expected WRITE, then the held one",
    );
    assert_eq!(&t.mem.region()[..32], &[0x99; 32]);
    assert!(t.mem.canaries_intact());
    env.assert_counted(
        &s,
        &[("reorder_run", 1), ("nak_sent_seq_err", 1)],
        "the expected WRITE",
    );
    // Filling that gap moves the NAK on to the next one.
    let s = env.snap();
    env.send(&w(&env, psn_add(EPSN, 2)));
    assert_nak(
        &env.sync(),
        peer,
        psn_add(EPSN, 3),
        NakCode::PsnSequenceError,
        "a new gap",
    );
    env.assert_counted(&s, &[("nak_sent_seq_err", 1)], "a new gap");
    assert!(t.mem.canaries_intact());
}

#[test]
fn unknown_and_reserved_opcodes_are_dropped_and_counted() {
    let mut env = Env::new(10);
    let t = target(&env.pd, all_access(), 12);
    let (qp, _) = env.qp(QpType::Rc, all_access());
    // A WRITE ONLY's bytes with the opcode byte replaced: no header layout is
    // known for these, so nothing can be answered (rxe_rcv: the opcode table
    // has no mask for them; the packet never reaches the responder).
    let template = env.build(
        rc(Op::WriteOnly),
        qp.qp_num(),
        EPSN,
        write_only(t.mem.addr(), t.mr.rkey(), 64),
        &[0x42; 64],
    );
    let mut pkts = Vec::new();
    for b in 0..=255u8 {
        if Opcode::from_u8(b).is_some() {
            continue;
        }
        let mut p = template.clone();
        p[0] = b;
        env.reseal(&mut p);
        pkts.push(p);
    }
    // 0x15, 0x18..=0x1f (incl. FLUSH, ATOMIC WRITE), RD (0x40), CNP (0x80),
    // XRC's reserved codes (0xb5, 0xb8..)...
    assert!(pkts.len() > 180, "{}", pkts.len());
    let n = pkts.len() as u64;
    expect_silent_drop(
        &mut env,
        &[&t],
        Some(&qp),
        &pkts,
        &[("parse_errors", n)],
        "unknown opcodes",
    );
    // A nonzero transport version is no packet either.
    let mut p = template.clone();
    p[1] |= 0x01;
    env.reseal(&mut p);
    expect_silent_drop(
        &mut env,
        &[&t],
        Some(&qp),
        &[p],
        &[("parse_errors", 1)],
        "TVer 1",
    );
    legit_write_works(&mut env, &t);
}

#[test]
fn another_transports_opcode_is_dropped_and_counted() {
    let mut env = Env::new(11);
    let t = target(&env.pd, all_access(), 13);
    let (rcqp, _) = env.qp(QpType::Rc, all_access());
    let (ucqp, _) = env.qp(QpType::Uc, all_access());
    let (udqp, _) = env.qp(QpType::Ud, all_access());
    for qp in [&rcqp, &ucqp, &udqp] {
        env.post_recv(qp, &t.mr, t.mem.addr(), REGION as u32, 7);
    }
    let reth = write_only(t.mem.addr(), t.mr.rkey(), 64);
    let deth = Ext::Deth(Deth {
        qkey: QKEY,
        src_qp: 0x55,
    });
    // rxe check_type_state: the opcode's transport must be the QP's, else
    // the packet is dropped before the responder sees it.
    let cases = [
        (uc(Op::WriteOnly), &rcqp, reth, "UC WRITE ONLY to an RC QP"),
        (
            uc(Op::SendOnly),
            &rcqp,
            Ext::None,
            "UC SEND ONLY to an RC QP",
        ),
        (ud(Op::SendOnly), &rcqp, deth, "UD SEND ONLY to an RC QP"),
        (rc(Op::WriteOnly), &ucqp, reth, "RC WRITE ONLY to a UC QP"),
        (
            rc(Op::SendOnly),
            &ucqp,
            Ext::None,
            "RC SEND ONLY to a UC QP",
        ),
        (rc(Op::ReadRequest), &ucqp, reth, "RC READ to a UC QP"),
        (
            rc(Op::SendOnly),
            &udqp,
            Ext::None,
            "RC SEND ONLY to a UD QP",
        ),
        (
            uc(Op::SendOnly),
            &udqp,
            Ext::None,
            "UC SEND ONLY to a UD QP",
        ),
        (rc(Op::WriteOnly), &udqp, reth, "RC WRITE ONLY to a UD QP"),
    ];
    for (opcode, qp, ext, what) in cases {
        let payload: &[u8] = if opcode.op() == Op::ReadRequest {
            &[]
        } else {
            &[0x42; 64]
        };
        let pkt = env.build(opcode, qp.qp_num(), EPSN, ext, payload);
        expect_silent_drop(
            &mut env,
            &[&t],
            Some(qp),
            &[pkt],
            &[("wrong_transport", 1)],
            what,
        );
    }
}

#[test]
fn middle_or_last_without_first_is_an_invalid_request_nak() {
    let mut env = Env::new(12);
    let t = target(&env.pd, all_access(), 14);
    // rxe check_op_seq (RC): RESPST_ERR_MISSING_OPCODE_FIRST, class C.
    for (op, ext) in [
        (Op::WriteMiddle, Ext::None),
        (Op::WriteLast, Ext::None),
        (Op::WriteLastImm, Ext::Imm(1)),
        (Op::SendMiddle, Ext::None),
        (Op::SendLast, Ext::None),
        (Op::SendLastImm, Ext::Imm(1)),
        (Op::SendLastInv, Ext::Inv(t.mr.rkey())),
    ] {
        let len = if op.is_middle() { MTU_BYTES } else { 32 };
        expect_class_c(
            &mut env,
            &[&t],
            rc(op),
            ext,
            &vec![0x31; len],
            NakCode::InvalidRequest,
            &format!("{op:?} without a first"),
        );
    }
    // rxe check_op_seq (RC): a new message inside one →
    // RESPST_ERR_MISSING_OPCODE_LAST_C, class C.
    let (qp, peer) = env.qp(QpType::Rc, all_access());
    let first = env.build(
        rc(Op::WriteFirst),
        qp.qp_num(),
        EPSN,
        write_only(t.mem.addr(), t.mr.rkey(), 2 * MTU_BYTES as u32),
        &[0x31; MTU_BYTES],
    );
    let again = env.build(
        rc(Op::WriteOnly),
        qp.qp_num(),
        EPSN + 1,
        write_only(t.mem.addr() + 2048, t.mr.rkey(), 8),
        &[0x32; 8],
    );
    let before = t.mem.snapshot();
    env.send_many(&[&first, &again]);
    assert_nak(
        &env.sync(),
        peer,
        EPSN + 1,
        NakCode::InvalidRequest,
        "WRITE ONLY inside a WRITE",
    );
    assert_eq!(
        &t.mem.region()[2048..2056],
        &region_of(&t, &before)[2048..2056]
    );
    assert!(t.mem.canaries_intact());
    assert_eq!(qp.state(), QpState::Err);
    // UC: a middle or last without a first is dropped in silence (rxe
    // check_op_seq UC: drop_msg), nothing written, the QP goes on.
    let (ucqp, _) = env.qp(QpType::Uc, all_access());
    let pkts = vec![
        env.build(
            uc(Op::WriteMiddle),
            ucqp.qp_num(),
            EPSN,
            Ext::None,
            &[0x33; MTU_BYTES],
        ),
        env.build(
            uc(Op::WriteLast),
            ucqp.qp_num(),
            EPSN,
            Ext::None,
            &[0x33; 16],
        ),
    ];
    expect_silent_drop(
        &mut env,
        &[&t],
        Some(&ucqp),
        &pkts,
        &[("uc_dropped", 2)],
        "UC WRITE middle/last without a first",
    );
}

#[test]
fn truncated_headers_are_dropped_and_counted() {
    let mut env = Env::new(13);
    let t = target(&env.pd, all_access(), 15);
    let (qp, _) = env.qp(QpType::Rc, all_access());
    let full = [
        env.build(
            rc(Op::WriteOnly),
            qp.qp_num(),
            EPSN,
            write_only(t.mem.addr(), t.mr.rkey(), 8),
            &[0x61; 8],
        ),
        env.build(
            rc(Op::FetchAdd),
            qp.qp_num(),
            EPSN,
            atomic(t.mem.addr(), t.mr.rkey()),
            &[],
        ),
        env.build(
            rc(Op::ReadRequest),
            qp.qp_num(),
            EPSN,
            write_only(t.mem.addr(), t.mr.rkey(), 8),
            &[],
        ),
    ];
    for p in &full {
        let header = Opcode::from_u8(p[0]).unwrap().header_len();
        // Every cut from nothing to the headers + ICRC minus one byte: not
        // a packet (rxe_rcv: skb->len < header_size → drop).
        let cuts: Vec<Vec<u8>> = (0..header + ICRC_LEN).map(|n| p[..n].to_vec()).collect();
        let n = cuts.len() as u64;
        expect_silent_drop(
            &mut env,
            &[&t],
            Some(&qp),
            &cuts,
            &[("parse_errors", n)],
            "truncated headers",
        );
    }
    // Cut inside the payload (header and ICRC length present): a bad pad
    // or a bad ICRC, never executed.
    let p = &full[0];
    let header = rc(Op::WriteOnly).header_len();
    let cuts: Vec<Vec<u8>> = (header + ICRC_LEN..p.len())
        .map(|n| p[..n].to_vec())
        .collect();
    let before = t.mem.snapshot();
    let s = env.snap();
    let refs: Vec<&[u8]> = cuts.iter().map(|c| c.as_slice()).collect();
    env.send_many(&refs);
    assert!(env.sync().is_empty());
    t.mem.assert_unchanged(&before, "payload cut");
    let moved = env.moved(&s);
    assert_eq!(
        moved.get("parse_errors").unwrap_or(&0) + moved.get("icrc_errors").unwrap_or(&0),
        cuts.len() as u64,
        "{moved:?}"
    );
    assert_eq!(
        moved.len(),
        moved.keys().filter(|k| k.ends_with("_errors")).count()
    );
    assert_eq!(qp.state(), QpState::Rts);
    legit_write_works(&mut env, &t);
}

#[test]
fn a_wrong_icrc_is_dropped_and_counted() {
    let mut env = Env::new(14);
    let t = target(&env.pd, all_access(), 16);
    let (qp, _) = env.qp(QpType::Rc, all_access());
    let good = env.build(
        rc(Op::WriteOnly),
        qp.qp_num(),
        EPSN,
        write_only(t.mem.addr(), t.mr.rkey(), 64),
        &[0x71; 64],
    );
    let mut pkts = Vec::new();
    // Each ICRC byte, the payload, the RETH's rkey, the PSN (the byte the
    // ICRC masks, BTH byte 4, excluded: it is not covered).
    for i in [good.len() - 1, good.len() - 4, 40, 30, 20, 11, 5, 0] {
        let mut p = good.clone();
        p[i] ^= 0x08;
        pkts.push(p);
    }
    expect_silent_drop(
        &mut env,
        &[&t],
        Some(&qp),
        &pkts,
        &[("icrc_errors", 8)],
        "wrong ICRC",
    );
    legit_write_works(&mut env, &t);
}

#[test]
fn unknown_destination_qpns_are_dropped_and_counted() {
    let mut env = Env::new(15);
    let t = target(&env.pd, all_access(), 17);
    let (qp, _) = env.qp(QpType::Rc, all_access());
    let mut pkts = Vec::new();
    for qpn in [
        0u32,
        1,
        qp.qp_num() + 1000,
        0xff_ffff,
        qp.qp_num() ^ 0x80_0000,
    ] {
        pkts.push(env.build(
            rc(Op::WriteOnly),
            qpn,
            EPSN,
            write_only(t.mem.addr(), t.mr.rkey(), 64),
            &[0x81; 64],
        ));
    }
    expect_silent_drop(
        &mut env,
        &[&t],
        Some(&qp),
        &pkts,
        &[("unknown_qp", 5)],
        "unknown QPNs",
    );
    // A destroyed QP's number is unknown too.
    let (gone, _) = env.qp(QpType::Rc, all_access());
    let n = gone.qp_num();
    drop(gone);
    let p = env.build(
        rc(Op::WriteOnly),
        n,
        EPSN,
        write_only(t.mem.addr(), t.mr.rkey(), 64),
        &[0x81; 64],
    );
    expect_silent_drop(
        &mut env,
        &[&t],
        None,
        &[p],
        &[("unknown_qp", 1)],
        "destroyed QP",
    );
}

#[test]
fn a_wrong_ud_qkey_is_dropped_and_counted() {
    let mut env = Env::new(16);
    let t = target(&env.pd, all_access(), 18);
    let (qp, _) = env.qp(QpType::Ud, all_access());
    env.post_recv(&qp, &t.mr, t.mem.addr(), 40 + 64, 77);
    // rxe check_keys: a UD packet whose Q_Key is not the QP's is dropped;
    // counted as the port's Q_Key violations (IBA PortInfo:Q_KeyViolations).
    let pkts: Vec<Vec<u8>> = [0u32, QKEY ^ 1, QKEY ^ 0x8000_0000, 0x8001_0000]
        .iter()
        .map(|&qkey| {
            env.build(
                ud(Op::SendOnly),
                qp.qp_num(),
                7,
                Ext::Deth(Deth { qkey, src_qp: 0x99 }),
                &[0x91; 64],
            )
        })
        .collect();
    expect_silent_drop(
        &mut env,
        &[&t],
        Some(&qp),
        &pkts,
        &[("qkey_violations", 4)],
        "wrong Q_Key",
    );
    // The receive was not consumed: the right Q_Key lands in it.
    let p = env.build(
        ud(Op::SendOnly),
        qp.qp_num(),
        8,
        Ext::Deth(Deth {
            qkey: QKEY,
            src_qp: 0x99,
        }),
        &[0x92; 64],
    );
    env.send(&p);
    assert!(env.sync().is_empty(), "UD answers nothing");
    let c = env.completions();
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!((c[0].wr_id, c[0].status), (77, WcStatus::Success));
    assert_eq!(&t.mem.region()[40..104], &[0x92; 64]);
    assert!(t.mem.canaries_intact());
}

#[test]
fn uc_access_errors_are_dropped_and_counted() {
    let mut env = Env::new(17);
    let t = target(&env.pd, all_access(), 19);
    let ro = target(&env.pd, Access::LOCAL_WRITE | Access::REMOTE_READ, 20);
    let (qp, _) = env.qp(QpType::Uc, all_access());
    // rxe: RESPST_ERR_RKEY_VIOLATION on UC without SRQ is class E: the
    // message is dropped, nothing answered, the QP goes on.
    let mut pkts = Vec::new();
    for (psn, (va, rkey)) in (EPSN..).zip([
        (t.mem.addr(), t.mr.rkey() ^ 1),
        (t.mem.addr() + REGION as u64 - 8, t.mr.rkey()),
        (u64::MAX - 7, t.mr.rkey()),
        (ro.mem.addr(), ro.mr.rkey()),
    ]) {
        pkts.push(env.build(
            uc(Op::WriteOnly),
            qp.qp_num(),
            psn,
            write_only(va, rkey, 16),
            &[0xa1; 16],
        ));
    }
    expect_silent_drop(
        &mut env,
        &[&t, &ro],
        Some(&qp),
        &pkts,
        &[("uc_dropped", 4)],
        "UC WRITEs without rights",
    );
}

#[test]
fn a_well_formed_request_from_another_address_is_dropped_and_counted() {
    let mut env = Env::new(18);
    let t = target(&env.pd, all_access(), 18);
    let (qp, peer) = env.qp(QpType::Rc, all_access());
    // Everything right — QPN, ePSN, R_Key, bounds — but sent from an address
    // that is not the QP's peer (rxe's check_addr).
    let impostor = std::net::SocketAddr::from(([127, 31, 18, 9], 4791));
    let link = env.hub().link(impostor).unwrap();
    let data = [0x77u8; 64];
    let before = t.mem.snapshot();
    let s = env.snap();
    for (op, ext, payload) in [
        (
            Op::WriteOnly,
            write_only(t.mem.addr(), t.mr.rkey(), 64),
            &data[..],
        ),
        (Op::FetchAdd, atomic(t.mem.addr(), t.mr.rkey()), &[][..]),
        (
            Op::ReadRequest,
            write_only(t.mem.addr(), t.mr.rkey(), 64),
            &[][..],
        ),
    ] {
        let pkt = build(
            impostor,
            env.victim,
            rc(op),
            qp.qp_num(),
            EPSN,
            ext,
            payload,
            true,
        );
        env.send_from(&link, &pkt);
    }
    let replies = env.sync();
    assert!(
        replies.is_empty(),
        "answered an impostor: {:?}",
        replies.len()
    );
    t.mem
        .assert_unchanged(&before, "requests from another address");
    env.assert_counted(&s, &[("wrong_source", 3)], "requests from another address");
    // The impostor got nothing back either.
    assert_eq!(link.queued(), 0);
    // The QP is untouched: its peer's WRITE at the same ePSN works.
    let pkt = env.build(
        rc(Op::WriteOnly),
        qp.qp_num(),
        EPSN,
        write_only(t.mem.addr(), t.mr.rkey(), 64),
        &data,
    );
    env.send(&pkt);
    assert_ack(&env.sync(), peer, EPSN, "the peer's WRITE");
    assert_eq!(&t.mem.region()[..64], &data[..]);
}
