//! Every RC operation between two devices in one process (real UDP on
//! loopback), pinned and ODP, with the data checked.

use odp::{Mapping, Prot};
use soft_rdma::verbs::*;
use test_support::verbs::*;

fn kinds() -> [(&'static str, Access); 2] {
    [("pinned", Access::default()), ("odp", Access::ON_DEMAND)]
}

#[test]
fn send_recv_multi_packet_with_immediate() {
    for (kind, extra) in kinds() {
        let (a, b) = (node(), node());
        let (qa, qb) = connect(&a, &b, QpType::Rc);
        let src = Buf::new(5000, |i| (i * 7) as u8);
        let dst = Buf::new(8192, |_| 0);
        let mra =
            a.pd.reg_mr(src.addr(), 5000, Access::LOCAL_WRITE | extra)
                .unwrap();
        let mrb =
            b.pd.reg_mr(dst.addr(), 8192, Access::LOCAL_WRITE | extra)
                .unwrap();
        qb.post_recv(&[RecvWr {
            wr_id: 7,
            sg_list: &[dst.sge(&mrb, 0, 8192)],
        }])
        .unwrap();
        qa.post_send(&[SendWr {
            wr_id: 1,
            sg_list: &[src.sge(&mra, 0, 5000)],
            op: SendOp::SendImm(0xfeed),
            flags: signaled(),
            ud: None,
        }])
        .unwrap();
        let sc = wait(&a.cq, 1);
        assert_eq!(
            (sc[0].wr_id, sc[0].status, sc[0].opcode),
            (1, WcStatus::Success, WcOpcode::Send),
            "{kind}"
        );
        let rc = wait(&b.cq, 1);
        assert_eq!(
            (rc[0].wr_id, rc[0].status, rc[0].byte_len, rc[0].imm),
            (7, WcStatus::Success, 5000, Some(0xfeed)),
            "{kind}"
        );
        assert_eq!(&dst.0[..5000], &src.0[..], "{kind}: data");
        assert!(
            dst.0[5000..].iter().all(|&x| x == 0),
            "{kind}: nothing past the message"
        );
    }
}

#[test]
fn rdma_write_read_and_atomics() {
    for (kind, extra) in kinds() {
        let (a, b) = (node(), node());
        let (qa, _qb) = connect(&a, &b, QpType::Rc);
        let local = Buf::new(1 << 20, |i| (i % 251) as u8);
        let remote = Buf::new(1 << 20, |_| 0);
        let mra =
            a.pd.reg_mr(local.addr(), 1 << 20, all_access() | extra)
                .unwrap();
        let mrb =
            b.pd.reg_mr(remote.addr(), 1 << 20, all_access() | extra)
                .unwrap();
        // WRITE 300 000 bytes (293 packets at MTU 1024), unsignaled then a signaled one.
        let n = 300_000;
        qa.post_send(&[
            SendWr {
                wr_id: 1,
                sg_list: &[local.sge(&mra, 0, n)],
                op: SendOp::Write {
                    remote_addr: remote.addr() + 64,
                    rkey: mrb.rkey(),
                },
                flags: SendFlags::default(),
                ud: None,
            },
            SendWr {
                wr_id: 2,
                sg_list: &[local.sge(&mra, 0, 8)],
                op: SendOp::Write {
                    remote_addr: remote.addr(),
                    rkey: mrb.rkey(),
                },
                flags: signaled(),
                ud: None,
            },
        ])
        .unwrap();
        let c = wait(&a.cq, 1);
        assert_eq!((c[0].wr_id, c[0].status), (2, WcStatus::Success), "{kind}");
        assert_eq!(&remote.0[64..64 + n], &local.0[..n], "{kind}: write data");
        // READ it back into another part of the local buffer.
        qa.post_send(&[SendWr {
            wr_id: 3,
            sg_list: &[local.sge(&mra, 600_000, 200_000)],
            op: SendOp::Read {
                remote_addr: remote.addr() + 64,
                rkey: mrb.rkey(),
            },
            flags: signaled(),
            ud: None,
        }])
        .unwrap();
        let c = wait(&a.cq, 1);
        assert_eq!(
            (c[0].wr_id, c[0].status, c[0].opcode),
            (3, WcStatus::Success, WcOpcode::RdmaRead),
            "{kind}"
        );
        assert_eq!(
            &local.0[600_000..800_000],
            &local.0[..200_000],
            "{kind}: read data"
        );
        // Atomics on a remote counter.
        let ctr = remote.addr() + 512 * 1024;
        let res = local.addr() + 900_000;
        let sge = Sge {
            addr: res,
            length: 8,
            lkey: mra.lkey(),
        };
        for i in 0..10u64 {
            qa.post_send(&[SendWr {
                wr_id: 10 + i,
                sg_list: &[sge],
                op: SendOp::FetchAdd {
                    remote_addr: ctr,
                    rkey: mrb.rkey(),
                    add: 3,
                },
                flags: signaled(),
                ud: None,
            }])
            .unwrap();
            let c = wait(&a.cq, 1);
            assert_eq!(c[0].status, WcStatus::Success, "{kind}");
            assert_eq!(
                u64::from_ne_bytes(local.0[900_000..900_008].try_into().unwrap()),
                i * 3,
                "{kind}: fetched value"
            );
        }
        qa.post_send(&[SendWr {
            wr_id: 30,
            sg_list: &[sge],
            op: SendOp::CompareSwap {
                remote_addr: ctr,
                rkey: mrb.rkey(),
                compare: 30,
                swap: 99,
            },
            flags: signaled(),
            ud: None,
        }])
        .unwrap();
        assert_eq!(wait(&a.cq, 1)[0].status, WcStatus::Success);
        assert_eq!(
            u64::from_ne_bytes(remote.0[512 * 1024..512 * 1024 + 8].try_into().unwrap()),
            99,
            "{kind}: swapped"
        );
    }
}

#[test]
fn validation_failures_nak_and_write_nothing() {
    let (a, b) = (node(), node());
    let local = Buf::new(4096, |_| 0xaa);
    let remote = Buf::new(8192, |_| 0);
    let mra = a.pd.reg_mr(local.addr(), 4096, all_access()).unwrap();
    let ro =
        b.pd.reg_mr(
            remote.addr(),
            4096,
            Access::LOCAL_WRITE | Access::REMOTE_READ,
        )
        .unwrap();
    let other_pd = b.dev.alloc_pd();
    let foreign = other_pd
        .reg_mr(remote.addr() + 4096, 4096, all_access())
        .unwrap();
    let rw =
        b.pd.reg_mr(remote.addr() + 4096, 4096, all_access())
            .unwrap();
    let cases: Vec<(&str, SendOp, u32, WcStatus)> = vec![
        (
            "bad rkey",
            SendOp::Write {
                remote_addr: remote.addr(),
                rkey: ro.rkey() ^ 0x55,
            },
            16,
            WcStatus::RemAccessErr,
        ),
        (
            "no remote write",
            SendOp::Write {
                remote_addr: remote.addr(),
                rkey: ro.rkey(),
            },
            16,
            WcStatus::RemAccessErr,
        ),
        (
            "foreign pd",
            SendOp::Write {
                remote_addr: remote.addr() + 4096,
                rkey: foreign.rkey(),
            },
            16,
            WcStatus::RemAccessErr,
        ),
        (
            "past the end",
            SendOp::Write {
                remote_addr: remote.addr() + 8192 - 8,
                rkey: rw.rkey(),
            },
            16,
            WcStatus::RemAccessErr,
        ),
        (
            "overflowing va",
            SendOp::Write {
                remote_addr: u64::MAX - 4,
                rkey: rw.rkey(),
            },
            16,
            WcStatus::RemAccessErr,
        ),
        (
            "read past the end",
            SendOp::Read {
                remote_addr: remote.addr() + 4000,
                rkey: ro.rkey(),
            },
            200,
            WcStatus::RemAccessErr,
        ),
        (
            "misaligned atomic",
            SendOp::FetchAdd {
                remote_addr: remote.addr() + 4096 + 4,
                rkey: rw.rkey(),
                add: 1,
            },
            8,
            WcStatus::RemInvReqErr,
        ),
        (
            "atomic without right",
            SendOp::FetchAdd {
                remote_addr: remote.addr(),
                rkey: ro.rkey(),
                add: 1,
            },
            8,
            WcStatus::RemAccessErr,
        ),
    ];
    for (what, op, len, want) in cases {
        let (a0, b0) = (a.dev.stats(), b.dev.stats());
        let (qa, qb) = connect(&a, &b, QpType::Rc);
        qa.post_send(&[SendWr {
            wr_id: 1,
            sg_list: &[local.sge(&mra, 0, len as usize)],
            op,
            flags: signaled(),
            ud: None,
        }])
        .unwrap();
        let c = wait(&a.cq, 1);
        assert_eq!(c[0].status, want, "{what}");
        assert_eq!(qa.state(), QpState::Err, "{what}: requester QP in error");
        wait_state(&qb, QpState::Err, what);
        assert!(remote.0.iter().all(|&x| x == 0), "{what}: nothing written");
        // The NAK is counted by kind on both sides.
        let (a1, b1) = (a.dev.stats(), b.dev.stats());
        let (sent, rcvd) = match want {
            WcStatus::RemAccessErr => (
                b1.nak_sent_rem_access - b0.nak_sent_rem_access,
                a1.nak_rcvd_rem_access - a0.nak_rcvd_rem_access,
            ),
            _ => (
                b1.nak_sent_inv_req - b0.nak_sent_inv_req,
                a1.nak_rcvd_inv_req - a0.nak_rcvd_inv_req,
            ),
        };
        assert_eq!((sent, rcvd), (1, 1), "{what}: NAK counted\n{a1}{b1}");
        drop((qa, qb));
    }
}

/// Class C and J errors end the connection on the responder's side too; it
/// gets there just after its NAK left, so the requester may see it first.
fn wait_state(qp: &Qp, want: QpState, what: &str) {
    let t = std::time::Instant::now();
    while qp.state() != want {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(10),
            "{what}: responder QP in {:?}, not {want:?}",
            qp.state()
        );
        std::thread::yield_now();
    }
}

#[test]
fn send_with_invalidate_of_a_plain_mr_fails_on_both_sides_and_invalidates_nothing() {
    let (a, b) = (node(), node());
    let src = Buf::new(64, |i| i as u8);
    let dst = Buf::new(4096, |_| 0);
    let mra = a.pd.reg_mr(src.addr(), 64, all_access()).unwrap();
    let mrb = b.pd.reg_mr(dst.addr(), 4096, all_access()).unwrap();
    let (qa, qb) = connect(&a, &b, QpType::Rc);
    qb.post_recv(&[RecvWr {
        wr_id: 9,
        sg_list: &[dst.sge(&mrb, 0, 4096)],
    }])
    .unwrap();
    qa.post_send(&[SendWr {
        wr_id: 1,
        sg_list: &[src.sge(&mra, 0, 64)],
        op: SendOp::SendInv(mrb.rkey()),
        flags: signaled(),
        ud: None,
    }])
    .unwrap();
    let sc = wait(&a.cq, 1);
    assert_eq!((sc[0].wr_id, sc[0].status), (1, WcStatus::RemInvReqErr));
    let rc = wait(&b.cq, 1);
    assert_eq!((rc[0].wr_id, rc[0].status), (9, WcStatus::RemInvReqErr));
    assert_eq!(rc[0].invalidated_rkey, None);
    assert_eq!(qa.state(), QpState::Err);
    wait_state(&qb, QpState::Err, "send with invalidate");
    // The MR named by the key is still valid: a new connection writes into it.
    let (qa, _qb) = connect(&a, &b, QpType::Rc);
    write(&qa, 2, src.sge(&mra, 0, 64), dst.addr() + 1024, mrb.rkey());
    assert_eq!(wait(&a.cq, 1)[0].status, WcStatus::Success);
    assert_eq!(&dst.0[1024..1088], &src.0[..]);
}

#[test]
fn odp_write_faults_in_never_touched_memory_and_unmapped_is_remote_access_error() {
    let (a, b) = (node(), node());
    let (qa, _qb) = connect(&a, &b, QpType::Rc);
    let local = Buf::new(65536, |i| i as u8);
    let mra =
        a.pd.reg_mr(local.addr(), 65536, Access::LOCAL_WRITE)
            .unwrap();
    // Fresh anonymous memory, never touched: ODP faults it in on the WRITE.
    let len = 1 << 20;
    let map = Mapping::anon(len).unwrap();
    let p = map.addr() as u64;
    let mrb =
        b.pd.reg_mr(p, len as u64, all_access() | Access::ON_DEMAND)
            .unwrap();
    assert_eq!(mrb.odp_counters().pages_faulted, 0);
    write(&qa, 1, local.sge(&mra, 0, 65536), p + 4096, mrb.rkey());
    assert_eq!(wait(&a.cq, 1)[0].status, WcStatus::Success);
    assert!(mrb.odp_counters().pages_faulted >= 16);
    // SAFETY: reads memory the MR covers and this test owns.
    let got = unsafe { std::slice::from_raw_parts((p + 4096) as *const u8, 65536) };
    assert_eq!(got, &local.0[..]);
    // The target unmaps part of it: a WRITE there is a remote access error.
    // Not a bare munmap: other tests of this binary map memory meanwhile
    // (a device's counters page, say), one of those mappings may land in
    // the hole, and ODP then rightly writes there. So the hole gets an
    // inaccessible mapping of its own, in one step (MAP_FIXED unmaps what
    // was there first: the same unmap event for the device).
    // SAFETY: replaces memory this test owns, and nothing else; no
    // reference into it is live (`got` above is not used again).
    unsafe { map.replace(8192, 8192, Prot::None) }.unwrap();
    write(&qa, 2, local.sge(&mra, 0, 4096), p + 8192, mrb.rkey());
    assert_eq!(wait(&a.cq, 1)[0].status, WcStatus::RemAccessErr);
    // The device counters carry the MR's ODP figures and the NAK.
    let st = b.dev.stats();
    assert!(
        st.odp_pages_faulted >= 16 && st.odp_page_faults >= 1,
        "{st}"
    );
    if matches!(b.dev.odp_source(), odp::InvalidationSource::Userfaultfd(_)) {
        assert!(st.odp_invalidations >= 1 && st.odp_mm_events >= 1, "{st}");
    }
    assert_eq!(st.nak_sent_rem_access, 1, "{st}");
    assert_eq!(a.dev.stats().nak_rcvd_rem_access, 1);
}

#[test]
fn implicit_odp_across_children_and_prefetch() {
    let (a, b) = (node(), node());
    let (qa, _qb) = connect(&a, &b, QpType::Rc);
    let local = Buf::new(5 << 20, |i| (i % 241) as u8);
    let mra =
        a.pd.reg_mr(local.addr(), 5 << 20, Access::LOCAL_WRITE)
            .unwrap();
    let remote = Buf::new(5 << 20, |_| 0);
    let implicit =
        b.pd.reg_mr(0, u64::MAX, all_access() | Access::ON_DEMAND)
            .unwrap();
    implicit
        .advise(odp::Advice::PrefetchWrite, remote.addr(), 1 << 20, true)
        .unwrap();
    write(
        &qa,
        1,
        local.sge(&mra, 0, 5 << 20),
        remote.addr(),
        implicit.rkey(),
    );
    assert_eq!(wait(&a.cq, 1)[0].status, WcStatus::Success);
    assert_eq!(
        remote.0, local.0,
        "5 MiB across at least three 2 MiB children"
    );
    assert!(implicit.odp_counters().prefetches == 1);
}

#[test]
fn an_odp_message_faults_its_pages_in_one_go_not_one_per_packet() {
    const LEN: usize = 1 << 20; // 1024 packets at MTU 1024, 256 pages
    for implicit in [false, true] {
        let (a, b) = (node(), node());
        let (qa, _qb) = connect(&a, &b, QpType::Rc);
        let local = Buf::new(LEN, |i| (i % 253) as u8);
        let back = Buf::new(LEN, |_| 0);
        // The requester's side is ODP too: its gather and scatter lists.
        let odp_local = Access::LOCAL_WRITE | Access::ON_DEMAND;
        let mra = a.pd.reg_mr(local.addr(), LEN as u64, odp_local).unwrap();
        let mrback = a.pd.reg_mr(back.addr(), LEN as u64, odp_local).unwrap();
        // WRITE into one fresh mapping, READ from another (never touched:
        // the READ faults zero pages in for reading).
        let (wmap, rmap) = (Mapping::anon(LEN).unwrap(), Mapping::anon(LEN).unwrap());
        let (w, r) = (wmap.addr() as u64, rmap.addr() as u64);
        let mrs: Vec<Mr> = if implicit {
            vec![b
                .pd
                .reg_mr(0, u64::MAX, all_access() | Access::ON_DEMAND)
                .unwrap()]
        } else {
            [w, r]
                .iter()
                .map(|&p| {
                    b.pd.reg_mr(p, LEN as u64, all_access() | Access::ON_DEMAND)
                        .unwrap()
                })
                .collect()
        };
        let (wkey, rkey) = (mrs[0].rkey(), mrs[mrs.len() - 1].rkey());
        let faults = || {
            let (sa, sb) = (a.dev.stats(), b.dev.stats());
            (sa.odp_page_faults, sb.odp_page_faults)
        };
        let before = faults();
        write(&qa, 1, local.sge(&mra, 0, LEN), w, wkey);
        assert_eq!(wait(&a.cq, 1)[0].status, WcStatus::Success);
        let after_write = faults();
        qa.post_send(&[SendWr {
            wr_id: 2,
            sg_list: &[back.sge(&mrback, 0, LEN)],
            op: SendOp::Read {
                remote_addr: r,
                rkey,
            },
            flags: signaled(),
            ud: None,
        }])
        .unwrap();
        assert_eq!(wait(&a.cq, 1)[0].status, WcStatus::Success);
        let after_read = faults();
        // SAFETY: reads the mapping the WRITE filled; this test owns it.
        let got = unsafe { std::slice::from_raw_parts(w as *const u8, LEN) };
        assert!(got == &local.0[..], "implicit={implicit}: WRITE data");
        assert!(
            back.0.iter().all(|&x| x == 0),
            "implicit={implicit}: READ data"
        );
        // One fault operation per message and side (per 2 MiB child for
        // implicit ODP: a 1 MiB range may straddle two), not one per page
        // or packet: the responder's target range, the requester's gather
        // list (WRITE) and scatter list (READ).
        let d = |x: (u64, u64), y: (u64, u64)| (y.0 - x.0, y.1 - x.1);
        let (wf, rf) = (d(before, after_write), d(after_write, after_read));
        for (what, (req, resp)) in [("WRITE", wf), ("READ", rf)] {
            assert!(
                (1..=2).contains(&req) && (1..=2).contains(&resp),
                "implicit={implicit}: {what}: {req} fault operations at the requester, {resp} at the responder"
            );
        }
        drop(mrs); // deregistered before the mappings go
    }
}

/// Programs address peers by GID index 0 as often as by index 1 (rdma-core's
/// own tests take index 0): the link-local GID a device reports names the
/// same device, for RC and for UD.
#[test]
fn a_peer_addressed_by_gid_index_0_is_reached() {
    peer_addressed_by_gid_is_reached(0);
}

/// GID index 1, the device's own address (IPv4-mapped).
#[test]
fn a_peer_addressed_by_gid_index_1_is_reached() {
    peer_addressed_by_gid_is_reached(1);
}

/// The table holds exactly the GIDs the tests above reach: a new entry
/// needs its own test.
#[test]
fn every_reported_gid_has_a_reachability_test() {
    let a = node();
    let indexes: Vec<u32> = a.dev.gids().iter().map(|(i, _)| *i).collect();
    assert_eq!(indexes, [0, 1]);
    assert_eq!(a.dev.gid(2), Err(Errno::ENODATA), "an empty entry");
    let len = a.dev.port_attr().gid_tbl_len;
    assert_eq!(a.dev.gid(len), Err(Errno::EINVAL), "beyond the table");
}

/// RC WRITE and UD SEND to a peer named by its GID at `index` (both sides
/// address each other by the same index).
fn peer_addressed_by_gid_is_reached(index: u32) {
    let (a, b) = (node(), node());
    let cfg = QpConfig::new(QpType::Rc);
    let (qa, qb) = (cfg.create(&a.pd, &a.cq), cfg.create(&b.pd, &b.cq));
    cfg.bring_up(&qa, qb.qp_num(), b.dev.gid(index).unwrap());
    cfg.bring_up(&qb, qa.qp_num(), a.dev.gid(index).unwrap());
    let src = Buf::new(8192, |i| (i * 3) as u8);
    let dst = Buf::new(8192, |_| 0);
    let mra = a.pd.reg_mr(src.addr(), 8192, all_access()).unwrap();
    let mrb = b.pd.reg_mr(dst.addr(), 8192, all_access()).unwrap();
    write(&qa, 1, src.sge(&mra, 0, 8192), dst.addr(), mrb.rkey());
    assert_eq!(wait(&a.cq, 1)[0].status, WcStatus::Success);
    assert_eq!(dst.0, src.0);

    // UD: an address handle of GID index 0.
    let ud = QpConfig::new(QpType::Ud);
    let (ua, ub) = (ud.create(&a.pd, &a.cq), ud.create(&b.pd, &b.cq));
    ud.bring_up(&ua, 0, a.dev.gid(index).unwrap());
    ud.bring_up(&ub, 0, b.dev.gid(index).unwrap());
    let got = Buf::new(40 + 64, |_| 0);
    let mrg = b.pd.reg_mr(got.addr(), 104, all_access()).unwrap();
    ub.post_recv(&[RecvWr {
        wr_id: 7,
        sg_list: &[got.sge(&mrg, 0, 104)],
    }])
    .unwrap();
    let ah = a.pd.create_ah(b.dev.gid(index).unwrap());
    ua.post_send(&[SendWr {
        wr_id: 2,
        sg_list: &[src.sge(&mra, 0, 64)],
        op: SendOp::Send,
        flags: signaled(),
        ud: Some(UdDest {
            ah,
            remote_qpn: ub.qp_num(),
            remote_qkey: ud.qkey,
        }),
    }])
    .unwrap();
    assert_eq!(wait(&a.cq, 1)[0].status, WcStatus::Success);
    let wc = wait(&b.cq, 1)[0];
    assert_eq!((wc.wr_id, wc.status), (7, WcStatus::Success));
    assert_eq!(&got.0[40..], &src.0[..64]);
}

/// WRITEs marching through a fresh ODP buffer one message after another
/// (perftest's cycle buffer over a big `--buffer`): the responder's faults
/// form a stream, so odp reads ahead of it on its worker; every byte still
/// lands where it was sent, and each page is made present once, by the
/// stream's own fault or by read-ahead.
#[test]
fn writes_streaming_into_fresh_odp_memory_are_read_ahead_and_land_whole() {
    const MSG: usize = 64 << 10;
    const LEN: usize = 16 << 20;
    // Off by default (see `odp::umem::ahead::enabled`); the other tests
    // here pass either way.
    odp::umem::ahead::set_enabled(true);
    let (a, b) = (node(), node());
    let (qa, _qb) = connect(&a, &b, QpType::Rc);
    let local = Buf::new(LEN, |i| (i % 251) as u8 ^ (i >> 16) as u8);
    let odp_local = Access::LOCAL_WRITE | Access::ON_DEMAND;
    let mra = a.pd.reg_mr(local.addr(), LEN as u64, odp_local).unwrap();
    let map = Mapping::anon(LEN).unwrap();
    let base = map.addr() as u64;
    let mr =
        b.pd.reg_mr(base, LEN as u64, all_access() | Access::ON_DEMAND)
            .unwrap();
    for k in 0..LEN / MSG {
        write(
            &qa,
            k as u64,
            local.sge(&mra, k * MSG, MSG),
            base + (k * MSG) as u64,
            mr.rkey(),
        );
        assert_eq!(wait(&a.cq, 1)[0].status, WcStatus::Success, "message {k}");
        if k == 1 {
            // Two messages in a row are a stream: read-ahead starts (on
            // the worker, when the scheduler lets it).
            let t = std::time::Instant::now();
            while mr.odp_counters().pages_read_ahead == 0 {
                assert!(t.elapsed().as_secs() < 20, "no read-ahead in 20 s");
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
    }
    // SAFETY: reads the mapping the WRITEs filled; this test owns it and
    // nothing writes it any more (every WRITE completed).
    let got = unsafe { std::slice::from_raw_parts(base as *const u8, LEN) };
    if let Some(i) = (0..LEN).find(|&i| got[i] != local.0[i]) {
        panic!("byte {i}: {} instead of {}", got[i], local.0[i]);
    }
    let c = mr.odp_counters();
    assert!(c.pages_read_ahead > 0);
    assert_eq!(
        c.pages_faulted + c.pages_read_ahead,
        (LEN / 4096) as u64,
        "{c:?}"
    );
}
