//! `Mr::rereg` (`ibv_rereg_mr`): translation, PD and rights changed in
//! place, keys kept, the old translation never reached afterwards; and the
//! bad flows, which leave the MR as it was.

use soft_rdma::verbs::*;
use test_support::verbs::*;

fn kinds() -> [(&'static str, Access); 2] {
    [("pinned", Access::default()), ("odp", Access::ON_DEMAND)]
}

/// A requester node `a` connected to `b` (RC), and `b`'s target buffers.
struct Pair {
    a: Node,
    b: Node,
    qa: Qp,
    _qb: Qp,
    src: Buf,
    mra: Mr,
}

fn pair() -> Pair {
    let (a, b) = (node(), node());
    let (qa, qb) = connect(&a, &b, QpType::Rc);
    let src = Buf::new(1 << 20, |i| (i * 5 + 1) as u8);
    let mra = a.pd.reg_mr(src.addr(), 1 << 20, all_access()).unwrap();
    Pair {
        a,
        b,
        qa,
        _qb: qb,
        src,
        mra,
    }
}

impl Pair {
    /// RDMA WRITE `len` bytes of `src` to `remote_addr` under `rkey`: the
    /// sender's completion status.
    fn write(&self, remote_addr: u64, rkey: u32, len: usize) -> WcStatus {
        self.qa
            .post_send(&[SendWr {
                wr_id: 9,
                sg_list: &[self.src.sge(&self.mra, 0, len)],
                op: SendOp::Write { remote_addr, rkey },
                flags: signaled(),
                ud: None,
            }])
            .unwrap();
        wait(&self.a.cq, 1)[0].status
    }

    /// Post the WRITE of [`Pair::write`] without waiting for it.
    fn post_write(&self, remote_addr: u64, rkey: u32, len: usize) {
        self.qa
            .post_send(&[SendWr {
                wr_id: 9,
                sg_list: &[self.src.sge(&self.mra, 0, len)],
                op: SendOp::Write { remote_addr, rkey },
                flags: signaled(),
                ud: None,
            }])
            .unwrap();
    }

    /// A fresh connection after an error (the old QPs are dropped).
    fn reconnect(&mut self) {
        let (qa, qb) = connect(&self.a, &self.b, QpType::Rc);
        self.qa = qa;
        self._qb = qb;
    }
}

#[test]
fn a_write_through_the_rkey_lands_in_the_new_range_after_a_translation_change() {
    for (kind, extra) in kinds() {
        let p = pair();
        let old = Buf::new(4096, |_| 0xee);
        let new = Buf::new(8192, |_| 0);
        let mut mr =
            p.b.pd
                .reg_mr(old.addr(), 4096, all_access() | extra)
                .unwrap();
        let (lkey, rkey) = (mr.lkey(), mr.rkey());
        assert_eq!(p.write(old.addr(), rkey, 64), WcStatus::Success, "{kind}");
        mr.rereg(Rereg {
            translation: Some((new.addr(), 8192)),
            ..Default::default()
        })
        .unwrap();
        assert_eq!((mr.lkey(), mr.rkey()), (lkey, rkey), "{kind}: keys kept");
        assert_eq!((mr.addr(), mr.len()), (new.addr(), 8192), "{kind}");
        assert_eq!(
            p.write(new.addr() + 4096, rkey, 4096),
            WcStatus::Success,
            "{kind}"
        );
        assert_eq!(
            &new.0[4096..],
            &p.src.0[..4096],
            "{kind}: the new range got it"
        );
        assert!(new.0[..4096].iter().all(|&b| b == 0), "{kind}");
        // The old range is outside the MR now: a remote access error, and
        // the old buffer keeps what the first WRITE left.
        let before = old.0.clone();
        assert_eq!(
            p.write(old.addr(), rkey, 64),
            WcStatus::RemAccessErr,
            "{kind}"
        );
        assert_eq!(old.0, before, "{kind}: the old translation is not reached");
    }
}

#[test]
fn rights_removed_by_rereg_refuse_a_peer_and_restored_rights_admit_it() {
    for (kind, extra) in kinds() {
        let mut p = pair();
        let dst = Buf::new(4096, |_| 0);
        let mut mr =
            p.b.pd
                .reg_mr(dst.addr(), 4096, all_access() | extra)
                .unwrap();
        assert_eq!(
            p.write(dst.addr(), mr.rkey(), 16),
            WcStatus::Success,
            "{kind}"
        );
        mr.rereg(Rereg {
            access: Some(Access::LOCAL_WRITE | extra),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(mr.access(), Access::LOCAL_WRITE | extra, "{kind}");
        let before = dst.0.clone();
        assert_eq!(
            p.write(dst.addr() + 100, mr.rkey(), 16),
            WcStatus::RemAccessErr,
            "{kind}"
        );
        assert_eq!(dst.0, before, "{kind}: nothing written without the right");
        mr.rereg(Rereg {
            access: Some(all_access() | extra),
            ..Default::default()
        })
        .unwrap();
        p.reconnect();
        assert_eq!(
            p.write(dst.addr() + 100, mr.rkey(), 16),
            WcStatus::Success,
            "{kind}"
        );
        assert_eq!(&dst.0[100..116], &p.src.0[..16], "{kind}");
    }
}

#[test]
fn switching_between_pinned_and_on_demand_keeps_the_key_working() {
    let p = pair();
    let dst = Buf::new(4096, |_| 0);
    let mut mr = p.b.pd.reg_mr(dst.addr(), 4096, all_access()).unwrap();
    for (i, access) in [all_access() | Access::ON_DEMAND, all_access()]
        .into_iter()
        .enumerate()
    {
        mr.rereg(Rereg {
            access: Some(access),
            ..Default::default()
        })
        .unwrap();
        let off = 1000 * (i + 1);
        assert_eq!(
            p.write(dst.addr() + off as u64, mr.rkey(), 8),
            WcStatus::Success
        );
        assert_eq!(&dst.0[off..off + 8], &p.src.0[..8]);
    }
}

#[test]
fn a_pd_change_moves_the_mr_and_its_use_of_the_pd() {
    let mut p = pair();
    let dst = Buf::new(4096, |_| 0);
    let mut mr = p.b.pd.reg_mr(dst.addr(), 4096, all_access()).unwrap();
    let other = p.b.dev.alloc_pd();
    mr.rereg(Rereg {
        pd: Some(&other),
        ..Default::default()
    })
    .unwrap();
    // The QP on the old PD cannot use it (rxe: a remote access error).
    let before = dst.0.clone();
    assert_eq!(p.write(dst.addr(), mr.rkey(), 8), WcStatus::RemAccessErr);
    assert_eq!(dst.0, before);
    // The MR counts as using the new PD, not the old one.
    let (back, e) = other.clone().dealloc().unwrap_err();
    assert_eq!(e, Errno::EBUSY);
    drop(back);
    mr.rereg(Rereg {
        pd: Some(&p.b.pd),
        ..Default::default()
    })
    .unwrap();
    other.dealloc().map_err(|(_, e)| e).unwrap();
    p.reconnect();
    assert_eq!(p.write(dst.addr(), mr.rkey(), 8), WcStatus::Success);
    assert_eq!(&dst.0[..8], &p.src.0[..8]);
}

#[test]
fn bad_rereg_flows_fail_with_rdma_cores_errnos_and_change_nothing() {
    let p = pair();
    let dst = Buf::new(4096, |_| 0);
    let mut mr = p.b.pd.reg_mr(dst.addr(), 4096, all_access()).unwrap();
    let foreign = node();
    let unmapped = 0x1000; // the page below every mapping (mmap_min_addr)
    let cases: [(&str, Rereg<'_>, Errno); 5] = [
        ("nothing to change", Rereg::default(), Errno::EINVAL),
        (
            "a PD of another device",
            Rereg {
                pd: Some(&foreign.pd),
                ..Default::default()
            },
            Errno::EINVAL,
        ),
        (
            "remote write without local write",
            Rereg {
                access: Some(Access::REMOTE_WRITE),
                ..Default::default()
            },
            Errno::EINVAL,
        ),
        (
            "an empty pinned range",
            Rereg {
                translation: Some((dst.addr(), 0)),
                ..Default::default()
            },
            Errno::EINVAL,
        ),
        (
            "unmapped memory, pinned",
            Rereg {
                translation: Some((unmapped, 4096)),
                ..Default::default()
            },
            Errno::EFAULT,
        ),
    ];
    for (what, change, errno) in cases {
        assert_eq!(mr.rereg(change), Err(errno), "{what}");
        assert_eq!(
            (mr.addr(), mr.len(), mr.access()),
            (dst.addr(), 4096, all_access()),
            "{what}"
        );
        assert_eq!(
            p.write(dst.addr() + 8, mr.rkey(), 8),
            WcStatus::Success,
            "{what}: still usable"
        );
    }
}

/// A WRITE of 1 MiB (1024 packets) in flight while its target MR moves:
/// once `rereg` returns, not one more byte lands in the old range — the
/// WRITE either finished before, or its remaining packets fail (a remote
/// access error), or they land in the new range.
#[test]
fn a_write_in_flight_during_rereg_never_lands_in_the_old_range_afterwards() {
    for (kind, extra) in kinds() {
        let mut outcomes = [0usize; 2];
        for round in 0..8 {
            let mut p = pair();
            let old = Buf::new(1 << 20, |_| 0);
            let new = Buf::new(1 << 20, |_| 0);
            let mut mr =
                p.b.pd
                    .reg_mr(old.addr(), 1 << 20, all_access() | extra)
                    .unwrap();
            p.post_write(old.addr(), mr.rkey(), 1 << 20);
            // Let a varying part of the message through first.
            std::thread::sleep(std::time::Duration::from_micros(50 * round));
            mr.rereg(Rereg {
                translation: Some((new.addr(), 1 << 20)),
                ..Default::default()
            })
            .unwrap();
            let after = old.0.clone();
            let status = wait(&p.a.cq, 1)[0].status;
            assert_eq!(
                old.0, after,
                "{kind} round {round}: written after rereg returned"
            );
            match status {
                WcStatus::Success => outcomes[0] += 1,
                WcStatus::RemAccessErr => outcomes[1] += 1,
                s => panic!("{kind} round {round}: {s:?}"),
            }
            p.reconnect();
        }
        eprintln!("{kind}: {outcomes:?} (succeeded before the move, refused after)");
    }
}
