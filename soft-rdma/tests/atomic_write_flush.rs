//! ATOMIC WRITE and FLUSH (the memory placement extensions) between two
//! devices: on pinned, explicit and implicit ODP MRs with the data checked;
//! the refusals (alignment, bounds, rights, placement types) with their
//! completion status and nothing written; and, under drops and duplicates,
//! every ATOMIC WRITE executed exactly once.

use odp::{Mapping, Prot};
use soft_rdma::transport::faults::{FaultConfig, FaultLink};
use soft_rdma::transport::{Hub, Link};
use soft_rdma::verbs::*;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use test_support::verbs::*;

/// The QP rights a FLUSH needs on the responder too (as rxe).
fn qp_access() -> Access {
    all_access() | Access::FLUSH_GLOBAL | Access::FLUSH_PERSISTENT
}

fn rc_pair(a: &Node, b: &Node, access: Access) -> (Qp, Qp) {
    QpConfig {
        access,
        ..QpConfig::new(QpType::Rc)
    }
    .connect(a, b)
}

fn post(qp: &Qp, wr_id: u64, op: SendOp) {
    qp.post_send(&[SendWr {
        wr_id,
        sg_list: &[],
        op,
        flags: signaled(),
        ud: None,
    }])
    .unwrap();
}

fn atomic_write(remote_addr: u64, rkey: u32, data: [u8; 8]) -> SendOp {
    SendOp::AtomicWrite {
        remote_addr,
        rkey,
        data,
    }
}

fn flush(remote_addr: u64, rkey: u32, len: u32, placement: FlushType, level: FlushLevel) -> SendOp {
    SendOp::Flush {
        remote_addr,
        rkey,
        len,
        placement,
        level,
    }
}

/// The responder's MR kinds: pinned, explicit ODP, implicit ODP (which
/// registers the whole address space: `buf` is reached through it).
fn register(pd: &Pd, kind: &str, buf: &Buf, access: Access) -> Mr {
    let len = buf.0.len() as u64;
    match kind {
        "pinned" => pd.reg_mr(buf.addr(), len, access),
        "odp" => pd.reg_mr(buf.addr(), len, access | Access::ON_DEMAND),
        "implicit" => pd.reg_mr(0, u64::MAX, access | Access::ON_DEMAND),
        _ => unreachable!(),
    }
    .unwrap()
}

const KINDS: [&str; 3] = ["pinned", "odp", "implicit"];

#[test]
fn atomic_write_stores_8_bytes_on_every_kind_of_mr() {
    for kind in KINDS {
        let (a, b) = (node(), node());
        let (qa, _qb) = rc_pair(&a, &b, qp_access());
        let remote = Buf::new(4096, |i| (i % 251) as u8);
        let before = remote.0.clone();
        let mr = register(&b.pd, kind, &remote, all_access());
        let at = [0usize, 8, 2048, 4088];
        for (i, &off) in at.iter().enumerate() {
            let data = (0xa1b2_c3d4_0000_0000u64 | i as u64).to_ne_bytes();
            post(
                &qa,
                i as u64,
                atomic_write(remote.addr() + off as u64, mr.rkey(), data),
            );
        }
        let wcs = wait(&a.cq, at.len());
        for (i, w) in wcs.iter().enumerate() {
            assert_eq!(
                (w.wr_id, w.status, w.opcode),
                (i as u64, WcStatus::Success, WcOpcode::AtomicWrite),
                "{kind}"
            );
        }
        let mut want = before;
        for (i, &off) in at.iter().enumerate() {
            want[off..off + 8]
                .copy_from_slice(&(0xa1b2_c3d4_0000_0000u64 | i as u64).to_ne_bytes());
        }
        assert_eq!(remote.0, want, "{kind}: the 8 bytes each, nothing else");
    }
}

#[test]
fn atomic_write_is_ordered_with_the_other_requests() {
    // WRITE, ATOMIC WRITE, FETCH&ADD, READ on one word, in one post: each
    // sees the one before (max_rd_atomic 16 lets them all be in flight).
    let (a, b) = (node(), node());
    let (qa, _qb) = rc_pair(&a, &b, qp_access());
    let local = Buf::new(64, |_| 0);
    let remote = Buf::new(64, |_| 0);
    let mra = a.pd.reg_mr(local.addr(), 64, all_access()).unwrap();
    let mrb = b.pd.reg_mr(remote.addr(), 64, all_access()).unwrap();
    let word = remote.addr() + 16;
    let src = Buf::new(8, |_| 0x11);
    let mrs = a.pd.reg_mr(src.addr(), 8, all_access()).unwrap();
    let (sg_src, sg_fetch, sg_read) = (
        [src.sge(&mrs, 0, 8)],
        [local.sge(&mra, 0, 8)],
        [local.sge(&mra, 8, 8)],
    );
    let rkey = mrb.rkey();
    let ops: [(&[Sge], SendOp); 4] = [
        (
            &sg_src,
            SendOp::Write {
                remote_addr: word,
                rkey,
            },
        ),
        (&[], atomic_write(word, rkey, 40u64.to_ne_bytes())),
        (
            &sg_fetch,
            SendOp::FetchAdd {
                remote_addr: word,
                rkey,
                add: 2,
            },
        ),
        (
            &sg_read,
            SendOp::Read {
                remote_addr: word,
                rkey,
            },
        ),
    ];
    let wrs: Vec<SendWr<'_>> = ops
        .iter()
        .enumerate()
        .map(|(i, (sg, op))| SendWr {
            wr_id: i as u64 + 1,
            sg_list: sg,
            op: *op,
            flags: signaled(),
            ud: None,
        })
        .collect();
    qa.post_send(&wrs).unwrap();
    let wcs = wait(&a.cq, 4);
    assert!(wcs.iter().all(|w| w.status == WcStatus::Success), "{wcs:?}");
    let ids: Vec<u64> = wcs.iter().map(|w| w.wr_id).collect();
    assert_eq!(ids, [1, 2, 3, 4], "completions in order");
    let at = |b: &Buf, off: usize| u64::from_ne_bytes(b.0[off..off + 8].try_into().unwrap());
    assert_eq!(
        at(&local, 0),
        40,
        "the add fetched the atomic write's value"
    );
    assert_eq!(at(&local, 8), 42, "the READ saw the add");
    assert_eq!(at(&remote, 16), 42);
}

#[test]
fn flush_range_and_whole_mr_on_every_kind_of_mr() {
    for kind in KINDS {
        let (a, b) = (node(), node());
        let (qa, _qb) = rc_pair(&a, &b, qp_access());
        let local = Buf::new(8192, |i| (i * 3) as u8);
        let remote = Buf::new(8192, |_| 0);
        let mra = a.pd.reg_mr(local.addr(), 8192, all_access()).unwrap();
        let mrb = register(&b.pd, kind, &remote, all_access() | Access::FLUSH_GLOBAL);
        // A WRITE, then a FLUSH of its range, then of the whole MR.
        write(&qa, 1, local.sge(&mra, 0, 8192), remote.addr(), mrb.rkey());
        let g = FlushType::GLOBAL;
        post(
            &qa,
            2,
            flush(remote.addr(), mrb.rkey(), 8192, g, FlushLevel::Range),
        );
        // Level MR: the RETH's address and length are not the MR's business.
        post(&qa, 3, flush(0, mrb.rkey(), 0, g, FlushLevel::Mr));
        let wcs = wait(&a.cq, 3);
        let got: Vec<(u64, WcStatus, WcOpcode)> =
            wcs.iter().map(|w| (w.wr_id, w.status, w.opcode)).collect();
        assert_eq!(
            got,
            [
                (1, WcStatus::Success, WcOpcode::RdmaWrite),
                (2, WcStatus::Success, WcOpcode::Flush),
                (3, WcStatus::Success, WcOpcode::Flush),
            ],
            "{kind}"
        );
        assert_eq!(remote.0, local.0, "{kind}");
    }
}

#[test]
fn flush_of_odp_memory_faults_its_range_and_fails_where_it_is_unmapped() {
    let (a, b) = (node(), node());
    let (qa, _qb) = rc_pair(&a, &b, qp_access());
    let len = 1 << 20;
    let map = Mapping::anon(len).unwrap();
    let p = map.addr() as u64;
    let mr =
        b.pd.reg_mr(
            p,
            len as u64,
            all_access() | Access::ON_DEMAND | Access::FLUSH_GLOBAL,
        )
        .unwrap();
    assert_eq!(mr.odp_counters().pages_faulted, 0);
    let g = FlushType::GLOBAL;
    post(
        &qa,
        1,
        flush(p + 4096, mr.rkey(), 16 * 4096, g, FlushLevel::Range),
    );
    let w = wait(&a.cq, 1)[0];
    assert_eq!((w.status, w.opcode), (WcStatus::Success, WcOpcode::Flush));
    assert!(
        mr.odp_counters().pages_faulted >= 16,
        "the FLUSH faulted its range in: {:?}",
        mr.odp_counters()
    );
    // Part of the range made inaccessible (one step, as rc_ops explains):
    // a FLUSH over it is a remote access error.
    // SAFETY: replaces memory this test owns; no reference into it is live.
    unsafe { map.replace(8192, 8192, Prot::None) }.unwrap();
    post(&qa, 2, flush(p, mr.rkey(), 4 * 4096, g, FlushLevel::Range));
    let w = wait(&a.cq, 1)[0];
    assert_eq!((w.wr_id, w.status), (2, WcStatus::RemAccessErr));
}

/// What a refusal test posts: a name, the QP's and the MR's access, the
/// operation on (MR address, rkey), the status it must complete with.
type Refusal = (
    &'static str,
    Access,
    Access,
    Box<dyn Fn(u64, u32) -> SendOp>,
    WcStatus,
);

/// A fresh pair; the responder's 4 KiB canaried MR registered with
/// `mr_access` (pinned or ODP); `op(addr, rkey)` posted; its completion.
/// The MR's memory must be untouched.
fn refused(kind: &str, qp: Access, mr_access: Access, op: impl Fn(u64, u32) -> SendOp) -> Wc {
    let (a, b) = (node(), node());
    let (qa, qb) = rc_pair(&a, &b, qp);
    let remote = Buf::new(4096, |i| (i % 13) as u8 | 0x80);
    let before = remote.0.clone();
    let mr = register(&b.pd, kind, &remote, mr_access);
    post(&qa, 9, op(remote.addr(), mr.rkey()));
    let w = wait(&a.cq, 1)[0];
    assert_eq!(remote.0, before, "{kind}: nothing written");
    assert_eq!(w.wr_id, 9);
    // A class C/J error: the requester's QP is in error (and the responder's).
    assert_eq!(qa.state(), QpState::Err, "{kind}");
    drop(qb);
    w
}

#[test]
fn atomic_write_refusals_complete_in_error_and_write_nothing() {
    let mr_ok = all_access();
    for kind in ["pinned", "odp"] {
        let cases: [Refusal; 6] = [
            (
                "misaligned",
                qp_access(),
                mr_ok,
                Box::new(|a, k| atomic_write(a + 4, k, [1; 8])),
                WcStatus::RemInvReqErr,
            ),
            (
                "past the end",
                qp_access(),
                mr_ok,
                Box::new(|a, k| atomic_write(a + 4096, k, [1; 8])),
                WcStatus::RemAccessErr,
            ),
            (
                "before the start",
                qp_access(),
                mr_ok,
                Box::new(|a, k| atomic_write(a - 8, k, [1; 8])),
                WcStatus::RemAccessErr,
            ),
            (
                "MR without remote write (atomic right alone is not enough)",
                qp_access(),
                Access::LOCAL_WRITE | Access::REMOTE_READ | Access::REMOTE_ATOMIC,
                Box::new(|a, k| atomic_write(a, k, [1; 8])),
                WcStatus::RemAccessErr,
            ),
            (
                "QP without remote write",
                Access::REMOTE_READ | Access::REMOTE_ATOMIC,
                mr_ok,
                Box::new(|a, k| atomic_write(a, k, [1; 8])),
                WcStatus::RemAccessErr,
            ),
            (
                "wrong key",
                qp_access(),
                mr_ok,
                Box::new(|a, k| atomic_write(a, k ^ 0x100, [1; 8])),
                WcStatus::RemAccessErr,
            ),
        ];
        for (what, qp, mr, op, want) in cases {
            let w = refused(kind, qp, mr, op);
            assert_eq!(w.status, want, "{kind}: {what}");
        }
    }
}

#[test]
fn flush_refusals_complete_in_error() {
    let g = FlushType::GLOBAL;
    let p = FlushType::PERSISTENT;
    let mr_ok = all_access() | Access::FLUSH_GLOBAL;
    for kind in ["pinned", "odp"] {
        let cases: [Refusal; 6] = [
            (
                "MR without FLUSH_GLOBAL",
                qp_access(),
                all_access(),
                Box::new(move |a, k| flush(a, k, 64, g, FlushLevel::Range)),
                WcStatus::RemAccessErr,
            ),
            (
                "persistence asked of an MR registered for global visibility",
                qp_access(),
                mr_ok,
                Box::new(move |a, k| flush(a, k, 64, p, FlushLevel::Range)),
                WcStatus::RemAccessErr,
            ),
            (
                "both types, the MR allowing one",
                qp_access(),
                mr_ok,
                Box::new(move |a, k| flush(a, k, 64, FlushType(3), FlushLevel::Mr)),
                WcStatus::RemAccessErr,
            ),
            (
                "QP without FLUSH_GLOBAL",
                all_access(),
                mr_ok,
                Box::new(move |a, k| flush(a, k, 64, g, FlushLevel::Range)),
                WcStatus::RemAccessErr,
            ),
            (
                "range past the end",
                qp_access(),
                mr_ok,
                Box::new(move |a, k| flush(a + 64, k, 4096, g, FlushLevel::Range)),
                WcStatus::RemAccessErr,
            ),
            (
                "wrong key",
                qp_access(),
                mr_ok,
                Box::new(move |a, k| flush(a, k ^ 0x100, 64, g, FlushLevel::Mr)),
                WcStatus::RemAccessErr,
            ),
        ];
        for (what, qp, mr, op, want) in cases {
            let w = refused(kind, qp, mr, op);
            assert_eq!(w.status, want, "{kind}: {what}");
        }
    }
}

#[test]
fn posting_checks_registration_and_device_caps() {
    let (a, b) = (node(), node());
    let buf = Buf::new(4096, |_| 0);
    // Persistence needs persistent memory: never this device's.
    for extra in [Access::default(), Access::ON_DEMAND] {
        let r = a.pd.reg_mr(
            buf.addr(),
            4096,
            all_access() | Access::FLUSH_PERSISTENT | extra,
        );
        assert_eq!(r.err(), Some(Errno::EOPNOTSUPP));
        assert!(a
            .pd
            .reg_mr(
                buf.addr(),
                4096,
                all_access() | Access::FLUSH_GLOBAL | extra
            )
            .is_ok());
    }
    let caps = a.dev.attr().placement;
    assert!(caps.atomic_write && caps.flush_global && !caps.flush_persistent);

    let mr = a.pd.reg_mr(buf.addr(), 4096, all_access()).unwrap();
    let (qa, _qb) = rc_pair(&a, &b, qp_access());
    let sge = [buf.sge(&mr, 0, 8)];
    let bad = |sg: &[Sge], op| {
        qa.post_send(&[SendWr {
            wr_id: 1,
            sg_list: sg,
            op,
            flags: signaled(),
            ud: None,
        }])
        .map_err(|(_, e)| e)
    };
    let g = FlushType::GLOBAL;
    // The 8 bytes are in the WR: no gather list.
    assert_eq!(bad(&sge, atomic_write(0, 1, [0; 8])), Err(Errno::EINVAL));
    assert_eq!(
        bad(&sge, flush(0, 1, 8, g, FlushLevel::Range)),
        Err(Errno::EINVAL)
    );
    // A placement type: at least one, nothing unknown.
    for t in [0, 4, 0x10] {
        assert_eq!(
            bad(&[], flush(0, 1, 8, FlushType(t), FlushLevel::Range)),
            Err(Errno::EINVAL),
            "type {t}"
        );
    }
    // A FLUSH names at most MAX_MSG (2 GiB) bytes.
    assert_eq!(
        bad(&[], flush(0, 1, u32::MAX, g, FlushLevel::Range)),
        Err(Errno::EINVAL)
    );
    // RC only.
    let (ua, _ub) = QpConfig::new(QpType::Uc).connect(&a, &b);
    for op in [
        atomic_write(0, 1, [0; 8]),
        flush(0, 1, 8, g, FlushLevel::Range),
    ] {
        let r = ua.post_send(&[SendWr {
            wr_id: 1,
            sg_list: &[],
            op,
            flags: signaled(),
            ud: None,
        }]);
        assert_eq!(r.map_err(|(_, e)| e), Err(Errno::EINVAL), "UC {op:?}");
    }
}

/// Drops, duplicates and reorders on both sides (rc_faults' mix).
const MIX: &str = "drop=0.05,dup=0.02,reorder=0.02";

fn faulty_pair(seed: u64) -> (Node, Node) {
    let hub = Hub::with_queue(1 << 15);
    let mk = |ip: [u8; 4]| {
        let link = hub.link(SocketAddr::from((ip, 4791))).unwrap();
        let mut cfg: FaultConfig = MIX.parse().unwrap();
        cfg.seed = Some(seed);
        let link: Arc<dyn Link> = Arc::new(FaultLink::new(link, cfg));
        Node::on_link(link, 8192)
    };
    (mk([127, 11, 0, 1]), mk([127, 11, 0, 2]))
}

/// ATOMIC WRITE `i` stores `v(i)` in slot `i`; FETCH&ADD `i` then adds 1 to
/// it. Go-back-N resends both after a loss, so the responder sees the
/// ATOMIC WRITE again after the add: executed again, it would set the slot
/// back to `v(i)` — the final `v(i) + 1` in every slot and each add
/// fetching `v(i)` prove each ATOMIC WRITE ran exactly once, in order.
fn executes_once(odp: bool, seed: u64) {
    const N: usize = 1500;
    const DEPTH: usize = 16;
    let v = |i: usize| 0x5a5a_0000_0000_0000u64 | (i as u64) << 8;
    let (a, b) = faulty_pair(seed);
    let (qa, _qb) = QpConfig {
        access: qp_access(),
        timeout: Some(11),
        ..QpConfig::new(QpType::Rc)
    }
    .connect(&a, &b);
    let extra = if odp {
        Access::ON_DEMAND
    } else {
        Access::default()
    };
    let fetched = Buf::new(N * 8, |_| 0xff);
    let slots = Buf::new(N * 8, |_| 0);
    let mra =
        a.pd.reg_mr(fetched.addr(), (N * 8) as u64, all_access() | extra)
            .unwrap();
    let mrb =
        b.pd.reg_mr(slots.addr(), (N * 8) as u64, all_access() | extra)
            .unwrap();
    let why = |done: usize| format!("{done} of {N}\nA:\n{}B:\n{}", a.dev.stats(), b.dev.stats());
    let how = Wait {
        limit: Duration::from_secs(60),
        exact: true,
        ok: true,
        pause: Some(Duration::from_micros(50)),
    };
    let (mut posted, mut done) = (0, 0);
    while done < 2 * N {
        while posted < N && 2 * posted - done < DEPTH {
            let at = slots.addr() + (posted * 8) as u64;
            qa.post_send(&[
                SendWr {
                    wr_id: 2 * posted as u64,
                    sg_list: &[],
                    op: atomic_write(at, mrb.rkey(), v(posted).to_ne_bytes()),
                    flags: signaled(),
                    ud: None,
                },
                SendWr {
                    wr_id: 2 * posted as u64 + 1,
                    sg_list: &[fetched.sge(&mra, posted * 8, 8)],
                    op: SendOp::FetchAdd {
                        remote_addr: at,
                        rkey: mrb.rkey(),
                        add: 1,
                    },
                    flags: signaled(),
                    ud: None,
                },
            ])
            .unwrap();
            posted += 1;
        }
        let wcs = wait_with(&a.cq, 1, how, &|_| why(done));
        for w in &wcs {
            assert_eq!(w.wr_id, done as u64, "in order");
            let want = if done % 2 == 0 {
                WcOpcode::AtomicWrite
            } else {
                WcOpcode::FetchAdd
            };
            assert_eq!(w.opcode, want);
            done += 1;
        }
    }
    let word = |b: &Buf, i: usize| u64::from_ne_bytes(b.0[i * 8..i * 8 + 8].try_into().unwrap());
    for i in 0..N {
        assert_eq!(
            word(&fetched, i),
            v(i),
            "add {i} fetched its atomic write's value"
        );
        assert_eq!(
            word(&slots, i),
            v(i) + 1,
            "slot {i}: written once, then added to"
        );
    }
    let (sa, sb) = (a.dev.stats(), b.dev.stats());
    assert!(
        sa.retransmits > 0,
        "the faults made the requester resend: {sa}"
    );
    assert!(
        sb.duplicate_requests > 0,
        "duplicates reached the responder: {sb}"
    );
}

#[test]
fn atomic_write_executes_once_under_faults_pinned() {
    executes_once(false, 21);
}

#[test]
fn atomic_write_executes_once_under_faults_odp() {
    executes_once(true, 22);
}
