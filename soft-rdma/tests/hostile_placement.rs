//! A hostile peer's ATOMIC WRITE and FLUSH packets against a real device
//! (hostile_peer.rs's harness): malformed lengths, misaligned or
//! out-of-bounds addresses, missing rights and reserved FETH values are
//! NAKed as rxe does with nothing written and the QP in error; a good one
//! is answered by an empty READ response only, and its duplicate answered
//! again without being executed again.

mod attacker;
use attacker::*;
use soft_rdma::verbs::*;
use soft_rdma::wire::{Ext, Feth, NakCode, Op, Reth, Syndrome};

const REGION: usize = 2 * PAGE;

struct Target {
    mr: Mr,
    mem: Canaried,
}

fn target(pd: &Pd, access: Access, seed: u8) -> Target {
    let mem = Canaried::new(REGION, seed);
    let mr = pd.reg_mr(mem.addr(), REGION as u64, access).unwrap();
    Target { mr, mem }
}

/// Every right a placement request may need on the QP.
fn qp_rights() -> Access {
    all_access() | Access::FLUSH_GLOBAL | Access::FLUSH_PERSISTENT
}

fn reth(va: u64, rkey: u32, len: u32) -> Reth {
    Reth { va, rkey, len }
}

fn feth_reth(placement: u8, level: u8, r: Reth) -> Ext {
    Ext::FethReth(Feth { placement, level }, r)
}

/// One hostile request to a fresh RC QP with `qp` rights: NAKed with
/// `code` at ePSN, nothing written, one NAK counted, the QP in error.
#[allow(clippy::too_many_arguments)]
fn expect_nak(
    env: &mut Env,
    t: &Target,
    qp_access: Access,
    op: Op,
    ext: Ext,
    payload: &[u8],
    code: NakCode,
    what: &str,
) {
    let (qp, peer) = env.qp(QpType::Rc, qp_access);
    let before = t.mem.snapshot();
    let s = env.snap();
    let pkt = env.build(rc(op), qp.qp_num(), EPSN, ext, payload);
    env.send(&pkt);
    assert_nak(&env.sync(), peer, EPSN, code, what);
    t.mem.assert_unchanged(&before, what);
    let counter = match code {
        NakCode::RemoteAccessError => "nak_sent_rem_access",
        _ => "nak_sent_inv_req",
    };
    env.assert_counted(&s, &[(counter, 1)], what);
    assert_eq!(qp.state(), QpState::Err, "{what}: class C error");
}

/// Exactly one empty READ response only with an ACK for `psn` to `qpn`.
fn assert_empty_read_response(replies: &[Reply], qpn: u32, psn: u32, what: &str) {
    assert_eq!(replies.len(), 1, "{what}: {replies:?}");
    let r = &replies[0];
    assert_eq!(r.repr.bth.opcode, rc(Op::ReadRespOnly), "{what}");
    assert_eq!((r.repr.bth.dest_qp, r.repr.bth.psn), (qpn, psn), "{what}");
    assert!(r.payload.is_empty(), "{what}: no payload");
    assert!(
        matches!(r.syndrome(), Some(Syndrome::Ack { .. })),
        "{what}: {:?}",
        r.syndrome()
    );
}

#[test]
fn malformed_or_unauthorised_atomic_writes_are_naked() {
    let mut env = Env::new(40);
    let t = target(&env.pd, all_access(), 40);
    let ro = target(
        &env.pd,
        Access::LOCAL_WRITE | Access::REMOTE_READ | Access::REMOTE_ATOMIC,
        41,
    );
    let (va, k) = (t.mem.addr(), t.mr.rkey());
    let end = va + REGION as u64;
    let inv = NakCode::InvalidRequest;
    let acc = NakCode::RemoteAccessError;
    let all = qp_rights();
    for (ext, payload, qp, code, what) in [
        (reth(va, k, 16), &[7u8; 8][..], all, inv, "RETH length 16"),
        (
            reth(va, k, 0),
            &[][..],
            all,
            inv,
            "RETH length 0, no payload",
        ),
        (reth(va, k, 8), &[7u8; 4][..], all, inv, "4-byte payload"),
        (reth(va, k, 8), &[7u8; 12][..], all, inv, "12-byte payload"),
        (reth(va + 4, k, 8), &[7u8; 8][..], all, inv, "misaligned"),
        (
            reth(va + 1, k, 8),
            &[7u8; 8][..],
            all,
            inv,
            "misaligned by 1",
        ),
        (reth(end, k, 8), &[7u8; 8][..], all, acc, "at the end"),
        (
            reth(va - 8, k, 8),
            &[7u8; 8][..],
            all,
            acc,
            "before the start",
        ),
        (
            reth(u64::MAX - 7, k, 8),
            &[7u8; 8][..],
            all,
            acc,
            "wrapping",
        ),
        (reth(va, k ^ 0x100, 8), &[7u8; 8][..], all, acc, "wrong key"),
        (
            reth(va, k, 8),
            &[7u8; 8][..],
            Access::REMOTE_READ | Access::REMOTE_ATOMIC,
            acc,
            "QP without remote write",
        ),
        (
            reth(ro.mem.addr(), ro.mr.rkey(), 8),
            &[7u8; 8][..],
            all,
            acc,
            "MR without remote write",
        ),
    ] {
        expect_nak(
            &mut env,
            &t,
            qp,
            Op::AtomicWrite,
            Ext::Reth(ext),
            payload,
            code,
            &format!("ATOMIC WRITE: {what}"),
        );
    }
    assert!(ro.mem.canaries_intact());
}

#[test]
fn reserved_or_unauthorised_flushes_are_naked() {
    let mut env = Env::new(41);
    let t = target(&env.pd, all_access() | Access::FLUSH_GLOBAL, 42);
    let plain = target(&env.pd, all_access(), 43);
    let (va, k) = (t.mem.addr(), t.mr.rkey());
    let inv = NakCode::InvalidRequest;
    let acc = NakCode::RemoteAccessError;
    let all = qp_rights();
    let r = reth(va, k, 64);
    for (ext, qp, code, what) in [
        (feth_reth(0, 0, r), all, inv, "no placement type"),
        (feth_reth(4, 0, r), all, inv, "a reserved placement type"),
        (
            feth_reth(1 | 8, 0, r),
            all,
            inv,
            "global and a reserved type",
        ),
        (feth_reth(1, 2, r), all, inv, "a reserved level"),
        (feth_reth(1, 3, r), all, inv, "the other reserved level"),
        (feth_reth(2, 0, r), all, acc, "persistence, MR global only"),
        (feth_reth(3, 1, r), all, acc, "both types, MR global only"),
        (
            feth_reth(1, 0, r),
            all_access(),
            acc,
            "QP without FLUSH_GLOBAL",
        ),
        (
            feth_reth(1, 0, reth(plain.mem.addr(), plain.mr.rkey(), 8)),
            all,
            acc,
            "MR without FLUSH_GLOBAL",
        ),
        (
            feth_reth(1, 0, reth(va + 64, k, REGION as u32)),
            all,
            acc,
            "range past the end",
        ),
        (
            feth_reth(1, 0, reth(va, k, 0x8000_0001)),
            all,
            inv,
            "a RETH length above 2^31",
        ),
        (
            feth_reth(1, 1, reth(0, k ^ 0x100, 0)),
            all,
            acc,
            "wrong key, whole MR",
        ),
    ] {
        expect_nak(
            &mut env,
            &t,
            qp,
            Op::Flush,
            ext,
            &[],
            code,
            &format!("FLUSH: {what}"),
        );
    }
    assert!(plain.mem.canaries_intact());
}

#[test]
fn good_requests_are_answered_by_an_empty_read_response_and_never_executed_twice() {
    let mut env = Env::new(42);
    let t = target(&env.pd, all_access() | Access::FLUSH_GLOBAL, 44);
    let (va, k) = (t.mem.addr(), t.mr.rkey());
    let (qp, peer) = env.qp(QpType::Rc, qp_rights());
    let word = |t: &Target| t.mem.region()[256..264].to_vec();

    // ATOMIC WRITE at ePSN: 8 bytes written, nothing else.
    let before = t.mem.snapshot();
    let s = env.snap();
    let aw = env.build(
        rc(Op::AtomicWrite),
        qp.qp_num(),
        EPSN,
        Ext::Reth(reth(va + 256, k, 8)),
        b"placed!!",
    );
    env.send(&aw);
    assert_empty_read_response(&env.sync(), peer, EPSN, "ATOMIC WRITE");
    let mut want = t.mem.region_in(&before).to_vec();
    want[256..264].copy_from_slice(b"placed!!");
    assert_eq!(t.mem.region(), &want[..]);
    assert!(t.mem.canaries_intact());
    env.assert_counted(&s, &[], "ATOMIC WRITE");

    // A WRITE over it, then the ATOMIC WRITE again (a duplicate): answered
    // the same way, and the WRITE's bytes stay.
    let w = env.build(
        rc(Op::WriteOnly),
        qp.qp_num(),
        psn_add(EPSN, 1),
        Ext::Reth(reth(va + 256, k, 8)),
        b"written.",
    );
    env.send(&w);
    assert_ack(&env.sync(), peer, psn_add(EPSN, 1), "WRITE over it");
    let s = env.snap();
    env.send(&aw);
    assert_empty_read_response(&env.sync(), peer, EPSN, "duplicate ATOMIC WRITE");
    assert_eq!(word(&t), b"written.", "the duplicate was not executed");
    env.assert_counted(&s, &[("duplicate_requests", 1)], "duplicate ATOMIC WRITE");

    // FLUSH of a range and of the whole MR: answered, nothing written; a
    // duplicate answered again.
    let before = t.mem.snapshot();
    let f = env.build(
        rc(Op::Flush),
        qp.qp_num(),
        psn_add(EPSN, 2),
        feth_reth(1, 0, reth(va, k, REGION as u32)),
        &[],
    );
    env.send(&f);
    assert_empty_read_response(&env.sync(), peer, psn_add(EPSN, 2), "FLUSH range");
    let fm = env.build(
        rc(Op::Flush),
        qp.qp_num(),
        psn_add(EPSN, 3),
        feth_reth(1, 1, reth(0, k, 0)),
        &[],
    );
    env.send(&fm);
    assert_empty_read_response(&env.sync(), peer, psn_add(EPSN, 3), "FLUSH MR");
    env.send(&f);
    assert_empty_read_response(&env.sync(), peer, psn_add(EPSN, 2), "duplicate FLUSH");
    t.mem.assert_unchanged(&before, "FLUSH");
    assert_eq!(qp.state(), QpState::Rts);
}
