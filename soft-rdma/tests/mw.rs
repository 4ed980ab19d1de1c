//! Memory windows, type 1 and type 2, on pinned and ODP MRs: binding, every
//! remote operation through a window, the window's bounds and rights, local
//! and remote invalidation, rebinding under a new key, and the lifetime
//! rules (EBUSY for an MR with windows bound, deallocating a bound window).
//! Every refused access is checked to have written nothing.

use soft_rdma::verbs::*;
use test_support::verbs::*;

fn kinds() -> [(&'static str, Access); 2] {
    [("pinned", Access::default()), ("odp", Access::ON_DEMAND)]
}

const TYPES: [MwType; 2] = [MwType::One, MwType::Two];

/// The target buffer's size, and the window's place in it.
const LEN: usize = 64 << 10;
const WIN_OFF: usize = 4096;
const WIN_LEN: usize = 8192;

fn remote_rights() -> Access {
    Access::REMOTE_WRITE | Access::REMOTE_READ | Access::REMOTE_ATOMIC
}

/// `ibv_inc_rkey`: the next key byte, the index kept.
fn inc_rkey(k: u32) -> u32 {
    (k & !0xff) | (k.wrapping_add(1) & 0xff)
}

/// Two nodes with an RC pair: `a` the requester (`local`, all rights),
/// `b` the target whose MR over `remote` has only local write and MW_BIND
/// (plus `extra`): every remote right comes from a window.
/// The nodes live for a whole test (fewer devices opened and closed).
struct Setup<'n> {
    qa: Qp,
    qb: Qp,
    mra: Mr,
    mrb: Mr,
    local: Buf,
    remote: Buf,
    a: &'n Node,
    b: &'n Node,
}

/// A test's two nodes.
fn nodes() -> (Node, Node) {
    (node(), node())
}

fn setup<'n>(n: &'n (Node, Node), extra: Access) -> Setup<'n> {
    setup_with(n, Access::LOCAL_WRITE | Access::MW_BIND | extra)
}

/// An RC pair whose local ACK timeout (67 ms) survives a loaded machine:
/// the refusals here are NAKs, never timeouts.
fn rc_pair(a: &Node, b: &Node) -> (Qp, Qp) {
    QpConfig {
        timeout: Some(14),
        ..QpConfig::new(QpType::Rc)
    }
    .connect(a, b)
}

fn setup_with(n: &(Node, Node), mrb_access: Access) -> Setup<'_> {
    let (a, b) = (&n.0, &n.1);
    let (qa, qb) = rc_pair(a, b);
    let local = Buf::new(LEN, |i| (i % 251) as u8);
    let remote = Buf::new(LEN, |_| 0);
    let extra = Access(mrb_access.0 & Access::ON_DEMAND.0);
    let mra =
        a.pd.reg_mr(local.addr(), LEN as u64, all_access() | extra)
            .unwrap();
    let mrb = b.pd.reg_mr(remote.addr(), LEN as u64, mrb_access).unwrap();
    Setup {
        qa,
        qb,
        mra,
        mrb,
        local,
        remote,
        a,
        b,
    }
}

impl Setup<'_> {
    /// A new QP pair on the same nodes (after a refusal put the last in error).
    fn reconnect(&mut self) {
        (self.qa, self.qb) = rc_pair(self.a, self.b);
    }

    fn win_addr(&self) -> u64 {
        self.remote.addr() + WIN_OFF as u64
    }

    /// Bind `mw` through `qb` to the window over `mrb` with `access` under
    /// `new_rkey`; the completion.
    fn bind(&self, mw: &Mw, new_rkey: u32, addr: u64, len: u64, access: Access) -> Wc {
        post_bind(&self.qb, mw, new_rkey, &self.mrb, addr, len, access);
        let wc = wait(&self.b.cq, 1)[0];
        assert_eq!(wc.opcode, WcOpcode::BindMw, "{wc:?}");
        wc
    }

    /// The usual window: `[WIN_OFF, WIN_OFF+WIN_LEN)` with every remote
    /// right, under the window's next key; that key.
    fn bind_window(&self, mw: &Mw) -> u32 {
        let k = inc_rkey(mw.rkey());
        let wc = self.bind(mw, k, self.win_addr(), WIN_LEN as u64, remote_rights());
        assert_eq!(wc.status, WcStatus::Success, "{wc:?}");
        if mw.kind() == MwType::One {
            assert_eq!(mw.rkey(), k, "a type 1 window's key is the bind's");
        }
        k
    }

    /// Post `op` (with `len` bytes of `local` at offset 0) on `qa`; its
    /// completion.
    fn run(&self, op: SendOp, len: usize) -> Wc {
        self.qa
            .post_send(&[SendWr {
                wr_id: 9,
                sg_list: &[self.local.sge(&self.mra, 0, len)],
                op,
                flags: signaled(),
                ud: None,
            }])
            .unwrap();
        wait(&self.a.cq, 1)[0]
    }

    /// `op` is NAKed as a remote access error and the target's bytes are
    /// what they were.
    fn refused(&self, what: &str, op: SendOp, len: usize) {
        let before = self.remote.0.clone();
        let wc = self.run(op, len);
        assert_eq!(wc.status, WcStatus::RemAccessErr, "{what}: {wc:?}");
        assert!(self.remote.0 == before, "{what}: nothing written");
    }
}

fn post_bind(q: &Qp, mw: &Mw, new_rkey: u32, mr: &Mr, addr: u64, len: u64, access: Access) {
    q.post_send(&[SendWr {
        wr_id: 0xb1d,
        sg_list: &[],
        op: SendOp::BindMw(MwBind {
            mw_rkey: mw.rkey(),
            new_rkey,
            mr_lkey: mr.lkey(),
            addr,
            length: len,
            access,
        }),
        flags: signaled(),
        ud: None,
    }])
    .unwrap();
}

fn write(rkey: u32, remote_addr: u64) -> SendOp {
    SendOp::Write { remote_addr, rkey }
}

#[test]
fn write_read_and_atomics_through_a_window() {
    let n = nodes();
    for (kind, extra) in kinds() {
        for t in TYPES {
            let s = setup(&n, extra);
            let mw = s.b.pd.alloc_mw(t).unwrap();
            let k = s.bind_window(&mw);
            // A 3000-byte WRITE (3 packets at MTU 1024) at the window's start.
            let wc = s.run(write(k, s.win_addr()), 3000);
            assert_eq!(wc.status, WcStatus::Success, "{kind} {t:?}: {wc:?}");
            assert_eq!(&s.remote.0[WIN_OFF..WIN_OFF + 3000], &s.local.0[..3000]);
            assert!(s.remote.0[..WIN_OFF].iter().all(|&x| x == 0));
            assert!(s.remote.0[WIN_OFF + 3000..].iter().all(|&x| x == 0));
            // READ the window's last 2000 bytes over the local buffer's start.
            let off = WIN_OFF + WIN_LEN - 2000;
            let wc = s.run(
                SendOp::Read {
                    remote_addr: s.remote.addr() + off as u64,
                    rkey: k,
                },
                2000,
            );
            assert_eq!(wc.status, WcStatus::Success, "{kind} {t:?}: {wc:?}");
            assert!(s.local.0[..2000].iter().all(|&x| x == 0), "{kind} {t:?}");
            // Atomics on the window's last 8 bytes (zero so far).
            let va = s.remote.addr() + (WIN_OFF + WIN_LEN - 8) as u64;
            let wc = s.run(
                SendOp::FetchAdd {
                    remote_addr: va,
                    rkey: k,
                    add: 5,
                },
                8,
            );
            assert_eq!(wc.status, WcStatus::Success, "{kind} {t:?}: {wc:?}");
            assert_eq!(&s.local.0[..8], &0u64.to_ne_bytes());
            let wc = s.run(
                SendOp::CompareSwap {
                    remote_addr: va,
                    rkey: k,
                    compare: 5,
                    swap: 77,
                },
                8,
            );
            assert_eq!(wc.status, WcStatus::Success, "{kind} {t:?}: {wc:?}");
            assert_eq!(&s.local.0[..8], &5u64.to_ne_bytes());
            let end = WIN_OFF + WIN_LEN;
            assert_eq!(&s.remote.0[end - 8..end], &77u64.to_ne_bytes());
            // The MR's own key grants nothing remote.
            s.refused(
                &format!("{kind} {t:?} MR key"),
                write(s.mrb.rkey(), s.win_addr()),
                8,
            );
        }
    }
}

#[test]
fn outside_the_window_is_refused() {
    let n = nodes();
    for (kind, extra) in kinds() {
        for t in TYPES {
            let cases = [
                ("across the end", (WIN_OFF + WIN_LEN - 100) as u64, 200),
                ("before the start", (WIN_OFF - 8) as u64, 16),
                ("past the end, inside the MR", (WIN_OFF + WIN_LEN) as u64, 8),
            ];
            let mut s = setup(&n, extra);
            for (what, off, len) in cases {
                let mw = s.b.pd.alloc_mw(t).unwrap();
                let k = s.bind_window(&mw);
                let at = s.remote.addr() + off;
                s.refused(&format!("{kind} {t:?} write {what}"), write(k, at), len);
                s.reconnect();
                let mw = s.b.pd.alloc_mw(t).unwrap();
                let k = s.bind_window(&mw);
                let read = SendOp::Read {
                    remote_addr: s.remote.addr() + off,
                    rkey: k,
                };
                let wc = s.run(read, len);
                assert_eq!(
                    wc.status,
                    WcStatus::RemAccessErr,
                    "{kind} {t:?} read {what}"
                );
                s.reconnect();
            }
        }
    }
}

#[test]
fn the_windows_rights_are_checked() {
    let n = nodes();
    for (kind, extra) in kinds() {
        for t in TYPES {
            // Read-only window: WRITE and atomics refused.
            let mut s = setup(&n, extra);
            let mw = s.b.pd.alloc_mw(t).unwrap();
            let k = inc_rkey(mw.rkey());
            let wc = s.bind(&mw, k, s.win_addr(), WIN_LEN as u64, Access::REMOTE_READ);
            assert_eq!(wc.status, WcStatus::Success);
            s.refused(&format!("{kind} {t:?} write"), write(k, s.win_addr()), 64);
            s.reconnect();
            let mw = s.b.pd.alloc_mw(t).unwrap();
            let k = inc_rkey(mw.rkey());
            s.bind(&mw, k, s.win_addr(), WIN_LEN as u64, Access::REMOTE_READ);
            let fa = SendOp::FetchAdd {
                remote_addr: s.win_addr(),
                rkey: k,
                add: 1,
            };
            s.refused(&format!("{kind} {t:?} atomic"), fa, 8);
            // Write-only window: READ refused.
            s.reconnect();
            let mw = s.b.pd.alloc_mw(t).unwrap();
            let k = inc_rkey(mw.rkey());
            s.bind(&mw, k, s.win_addr(), WIN_LEN as u64, Access::REMOTE_WRITE);
            let read = SendOp::Read {
                remote_addr: s.win_addr(),
                rkey: k,
            };
            let wc = s.run(read, 64);
            assert_eq!(wc.status, WcStatus::RemAccessErr, "{kind} {t:?} read");
        }
    }
}

#[test]
fn binds_the_spec_refuses_end_in_mw_bind_err() {
    let n = nodes();
    for t in TYPES {
        let bad = |what: &str, s: &Setup, mw: &Mw, addr: u64, len: u64, access: Access| {
            let wc = s.bind(mw, inc_rkey(mw.rkey()), addr, len, access);
            assert_eq!(wc.status, WcStatus::MwBindErr, "{t:?} {what}: {wc:?}");
            assert_eq!(
                s.qb.state(),
                QpState::Err,
                "{t:?} {what}: the QP goes to error"
            );
        };
        // The MR was registered without MW_BIND.
        let s = setup_with(&n, Access::LOCAL_WRITE);
        let mw = s.b.pd.alloc_mw(t).unwrap();
        bad("no MW_BIND", &s, &mw, s.win_addr(), 64, Access::REMOTE_READ);
        // Remote write through a window needs local write on the MR.
        let s = setup_with(&n, Access::MW_BIND);
        let mw = s.b.pd.alloc_mw(t).unwrap();
        bad(
            "no local write",
            &s,
            &mw,
            s.win_addr(),
            64,
            Access::REMOTE_WRITE,
        );
        // Beyond the MR.
        let s = setup(&n, Access::default());
        let mw = s.b.pd.alloc_mw(t).unwrap();
        let end = s.remote.addr() + LEN as u64;
        bad("beyond the MR", &s, &mw, end - 64, 128, Access::REMOTE_READ);
        // A window of another PD.
        let s = setup(&n, Access::default());
        let other = s.b.dev.alloc_pd();
        let mw = other.alloc_mw(t).unwrap();
        bad("another PD", &s, &mw, s.win_addr(), 64, Access::REMOTE_READ);
    }
    // Type 2: bound already, or given no memory.
    let s = setup(&n, Access::default());
    let mw = s.b.pd.alloc_mw(MwType::Two).unwrap();
    s.bind_window(&mw);
    let wc = s.bind(
        &mw,
        inc_rkey(mw.rkey()),
        s.win_addr(),
        64,
        Access::REMOTE_READ,
    );
    assert_eq!(wc.status, WcStatus::MwBindErr, "type 2 bound twice");
    let s = setup(&n, Access::default());
    let mw = s.b.pd.alloc_mw(MwType::Two).unwrap();
    let wc = s.bind(&mw, inc_rkey(mw.rkey()), 0, 0, Access::REMOTE_READ);
    assert_eq!(wc.status, WcStatus::MwBindErr, "type 2 of length 0");
}

#[test]
fn local_invalidate_then_write_is_naked_and_writes_nothing() {
    let n = nodes();
    for (kind, extra) in kinds() {
        let s = setup(&n, extra);
        let mw = s.b.pd.alloc_mw(MwType::Two).unwrap();
        let k = s.bind_window(&mw);
        assert_eq!(s.run(write(k, s.win_addr()), 512).status, WcStatus::Success);
        s.qb.post_send(&[SendWr {
            wr_id: 0x1a,
            sg_list: &[],
            op: SendOp::LocalInv(k),
            flags: signaled(),
            ud: None,
        }])
        .unwrap();
        let wc = wait(&s.b.cq, 1)[0];
        assert_eq!(
            (wc.wr_id, wc.status, wc.opcode),
            (0x1a, WcStatus::Success, WcOpcode::LocalInv),
            "{kind}"
        );
        // Bytes 512.. of the window are still zero; a WRITE there is refused.
        s.refused(
            &format!("{kind}: after LOCAL_INV"),
            write(k, s.win_addr() + 512),
            1024,
        );
        assert!(
            s.remote.0[WIN_OFF + 512..].iter().all(|&x| x == 0),
            "{kind}"
        );
    }
}

#[test]
fn send_with_invalidate_invalidates_a_type_2_window_and_reports_its_key() {
    let n = nodes();
    for (kind, extra) in kinds() {
        let s = setup(&n, extra);
        let mw = s.b.pd.alloc_mw(MwType::Two).unwrap();
        let k = s.bind_window(&mw);
        let rbuf = Buf::new(256, |_| 0);
        let rmr =
            s.b.pd
                .reg_mr(rbuf.addr(), 256, Access::LOCAL_WRITE)
                .unwrap();
        s.qb.post_recv(&[RecvWr {
            wr_id: 0x5e,
            sg_list: &[rbuf.sge(&rmr, 0, 256)],
        }])
        .unwrap();
        let wc = s.run(SendOp::SendInv(k), 100);
        assert_eq!(wc.status, WcStatus::Success, "{kind}: {wc:?}");
        let rc = wait(&s.b.cq, 1)[0];
        assert_eq!(
            (rc.wr_id, rc.status, rc.byte_len, rc.invalidated_rkey),
            (0x5e, WcStatus::Success, 100, Some(k)),
            "{kind}"
        );
        assert_eq!(&rbuf.0[..100], &s.local.0[..100], "{kind}: the SEND's data");
        s.refused(
            &format!("{kind}: after SEND_WITH_INV"),
            write(k, s.win_addr()),
            64,
        );
    }
}

#[test]
fn a_type_1_window_or_an_mr_cannot_be_invalidated() {
    let n = nodes();
    for (what, by_mr) in [("type 1 window", false), ("MR", true)] {
        // LOCAL_INV: the WR fails (LOC_QP_OP_ERR, as rxe).
        let s = setup(&n, Access::default());
        let mw = s.b.pd.alloc_mw(MwType::One).unwrap();
        let k = s.bind_window(&mw);
        let key = if by_mr { s.mrb.rkey() } else { k };
        s.qb.post_send(&[SendWr {
            wr_id: 0x1b,
            sg_list: &[],
            op: SendOp::LocalInv(key),
            flags: signaled(),
            ud: None,
        }])
        .unwrap();
        let wc = wait(&s.b.cq, 1)[0];
        assert_eq!(wc.status, WcStatus::LocQpOpErr, "{what}: {wc:?}");
        // A peer's SEND with invalidate: the receive fails (REM_INV_REQ_ERR).
        let rbuf = Buf::new(64, |_| 0);
        let rmr = s.b.pd.reg_mr(rbuf.addr(), 64, Access::LOCAL_WRITE).unwrap();
        let (qa2, qb2) = rc_pair(s.a, s.b);
        qb2.post_recv(&[RecvWr {
            wr_id: 0x5f,
            sg_list: &[rbuf.sge(&rmr, 0, 64)],
        }])
        .unwrap();
        qa2.post_send(&[SendWr {
            wr_id: 3,
            sg_list: &[s.local.sge(&s.mra, 0, 16)],
            op: SendOp::SendInv(key),
            flags: signaled(),
            ud: None,
        }])
        .unwrap();
        let rc = wait(&s.b.cq, 1)[0];
        assert_eq!(
            (rc.wr_id, rc.status),
            (0x5f, WcStatus::RemInvReqErr),
            "{what}"
        );
        assert_ne!(wait(&s.a.cq, 1)[0].status, WcStatus::Success, "{what}");
        // The type 1 window still works, through a third pair.
        let (qa3, _qb3) = rc_pair(s.a, s.b);
        qa3.post_send(&[SendWr {
            wr_id: 4,
            sg_list: &[s.local.sge(&s.mra, 0, 32)],
            op: write(k, s.win_addr()),
            flags: signaled(),
            ud: None,
        }])
        .unwrap();
        assert_eq!(wait(&s.a.cq, 1)[0].status, WcStatus::Success, "{what}");
        assert_eq!(&s.remote.0[WIN_OFF..WIN_OFF + 32], &s.local.0[..32]);
    }
}

#[test]
fn rebinding_under_a_new_key_retires_the_old_one() {
    let n = nodes();
    for (kind, extra) in kinds() {
        for t in TYPES {
            let s = setup(&n, extra);
            let mw = s.b.pd.alloc_mw(t).unwrap();
            let k1 = s.bind_window(&mw);
            assert_eq!(s.run(write(k1, s.win_addr()), 16).status, WcStatus::Success);
            if t == MwType::Two {
                s.qb.post_send(&[SendWr {
                    wr_id: 0x1c,
                    sg_list: &[],
                    op: SendOp::LocalInv(k1),
                    flags: signaled(),
                    ud: None,
                }])
                .unwrap();
                assert_eq!(wait(&s.b.cq, 1)[0].status, WcStatus::Success);
            }
            // Rebound over the buffer's start, under the next key.
            let k2 = inc_rkey(k1);
            assert_ne!(k1, k2);
            let wc = s.bind(&mw, k2, s.remote.addr(), 1024, Access::REMOTE_WRITE);
            assert_eq!(wc.status, WcStatus::Success, "{kind} {t:?}");
            assert_eq!(
                s.run(write(k2, s.remote.addr()), 16).status,
                WcStatus::Success
            );
            assert_eq!(&s.remote.0[..16], &s.local.0[..16]);
            let at = s.remote.addr() + 64;
            s.refused(&format!("{kind} {t:?} old key"), write(k1, at), 16);
        }
    }
}

#[test]
fn a_type_2_window_is_reached_only_through_the_qp_it_was_bound_through() {
    let n = nodes();
    let s = setup(&n, Access::default());
    let mw = s.b.pd.alloc_mw(MwType::Two).unwrap();
    let k = s.bind_window(&mw);
    let (qa2, _qb2) = rc_pair(s.a, s.b);
    qa2.post_send(&[SendWr {
        wr_id: 5,
        sg_list: &[s.local.sge(&s.mra, 0, 64)],
        op: write(k, s.win_addr()),
        flags: signaled(),
        ud: None,
    }])
    .unwrap();
    assert_eq!(wait(&s.a.cq, 1)[0].status, WcStatus::RemAccessErr);
    assert!(s.remote.0.iter().all(|&x| x == 0), "nothing written");
    assert_eq!(s.run(write(k, s.win_addr()), 64).status, WcStatus::Success);
}

#[test]
fn dealloc_and_dereg_rules() {
    let n = nodes();
    for (kind, extra) in kinds() {
        for t in TYPES {
            let s = setup(&n, extra);
            let mw = s.b.pd.alloc_mw(t).unwrap();
            let k = s.bind_window(&mw);
            // The PD is in use by the window; the MR has a window bound.
            let (pd, e) = s.b.pd.clone().dealloc().unwrap_err();
            drop(pd);
            assert_eq!(e, Errno::EBUSY);
            let Setup {
                qa,
                qb,
                mra,
                mrb,
                local,
                remote,
                a,
                b,
            } = s;
            let (mrb, e) = mrb.dereg().unwrap_err();
            assert_eq!(e, Errno::EBUSY, "{kind} {t:?}");
            let s = Setup {
                qa,
                qb,
                mra,
                mrb,
                local,
                remote,
                a,
                b,
            };
            // Deallocating a bound window: allowed; its key reaches nothing.
            drop(mw);
            s.refused(
                &format!("{kind} {t:?} deallocated"),
                write(k, s.win_addr()),
                64,
            );
            let Setup { mrb, .. } = s;
            assert!(
                mrb.dereg().is_ok(),
                "{kind} {t:?}: no window bound any more"
            );
        }
    }
    // A type 1 window unbound by a bind of length 0 frees its MR too.
    let s = setup(&n, Access::default());
    let mw = s.b.pd.alloc_mw(MwType::One).unwrap();
    let k = s.bind_window(&mw);
    let k0 = inc_rkey(k);
    let wc = s.bind(&mw, k0, 0, 0, Access::default());
    assert_eq!(wc.status, WcStatus::Success);
    s.refused("unbound type 1", write(k0, s.win_addr()), 64);
    let Setup { mrb, .. } = s;
    assert!(mrb.dereg().is_ok());
}

#[test]
fn window_and_mr_keys_share_one_space() {
    let n = node();
    let buf = Buf::new(4096, |_| 0);
    let mut indexes = std::collections::HashSet::new();
    let mut keep_mrs = Vec::new();
    let mut keep_mws = Vec::new();
    for i in 0..64 {
        let mr = n.pd.reg_mr(buf.addr(), 4096, Access::LOCAL_WRITE).unwrap();
        assert!(indexes.insert(mr.rkey() >> 8), "MR {i}");
        keep_mrs.push(mr);
        let t = if i % 2 == 0 { MwType::One } else { MwType::Two };
        let mw = n.pd.alloc_mw(t).unwrap();
        assert_eq!(mw.kind(), t);
        assert!(indexes.insert(mw.rkey() >> 8), "MW {i}");
        keep_mws.push(mw);
    }
    assert!(n.dev.attr().max_mw > 0);
}

#[test]
fn binds_on_a_ud_qp_are_refused_at_post() {
    let (a, b) = (node(), node());
    let (qa, _qb) = connect(&a, &b, QpType::Ud);
    let buf = Buf::new(64, |_| 0);
    let mr =
        a.pd.reg_mr(buf.addr(), 64, Access::LOCAL_WRITE | Access::MW_BIND)
            .unwrap();
    let mw = a.pd.alloc_mw(MwType::Two).unwrap();
    let r = qa.post_send(&[SendWr {
        wr_id: 1,
        sg_list: &[],
        op: SendOp::BindMw(MwBind {
            mw_rkey: mw.rkey(),
            new_rkey: inc_rkey(mw.rkey()),
            mr_lkey: mr.lkey(),
            addr: buf.addr(),
            length: 64,
            access: Access::REMOTE_READ,
        }),
        flags: signaled(),
        ud: None,
    }]);
    assert_eq!(r, Err((0, Errno::EINVAL)));
}

#[test]
fn a_window_is_reached_only_through_a_qp_of_its_pd() {
    let n = nodes();
    let s = setup(&n, Access::default());
    let mw = s.b.pd.alloc_mw(MwType::One).unwrap();
    let k = s.bind_window(&mw);
    // A pair whose target QP is on another PD of the target's device.
    let cfg = QpConfig {
        timeout: Some(14),
        ..QpConfig::new(QpType::Rc)
    };
    let pd2 = s.b.dev.alloc_pd();
    let (qa2, qb2) = (cfg.create(&s.a.pd, &s.a.cq), cfg.create(&pd2, &s.b.cq));
    cfg.bring_up(&qa2, qb2.qp_num(), s.b.dev.gid(1).unwrap());
    cfg.bring_up(&qb2, qa2.qp_num(), s.a.dev.gid(1).unwrap());
    qa2.post_send(&[SendWr {
        wr_id: 6,
        sg_list: &[s.local.sge(&s.mra, 0, 64)],
        op: write(k, s.win_addr()),
        flags: signaled(),
        ud: None,
    }])
    .unwrap();
    assert_eq!(wait(&s.a.cq, 1)[0].status, WcStatus::RemAccessErr);
    assert!(s.remote.0.iter().all(|&x| x == 0), "nothing written");
    assert_eq!(s.run(write(k, s.win_addr()), 64).status, WcStatus::Success);
}

#[test]
fn a_bind_behind_a_write_runs_after_it_and_completes_in_order() {
    let n = nodes();
    let s = setup(&n, Access::default());
    let mw = s.b.pd.alloc_mw(MwType::Two).unwrap();
    let k = inc_rkey(mw.rkey());
    // On the target's QP: a 5000-byte WRITE to the requester's buffer (5
    // packets), the bind, another WRITE — one post.
    fn wr(wr_id: u64, op: SendOp, sg: &[Sge]) -> SendWr<'_> {
        SendWr {
            wr_id,
            sg_list: sg,
            op,
            flags: signaled(),
            ud: None,
        }
    }
    let sge = [s.remote.sge(&s.mrb, 0, 5000)];
    let bind = SendOp::BindMw(MwBind {
        mw_rkey: mw.rkey(),
        new_rkey: k,
        mr_lkey: s.mrb.lkey(),
        addr: s.win_addr(),
        length: WIN_LEN as u64,
        access: Access::REMOTE_WRITE,
    });
    let to_a = |off: u64| write(s.mra.rkey(), s.local.addr() + off);
    s.qb.post_send(&[
        wr(1, to_a(0), &sge),
        wr(2, bind, &[]),
        wr(3, to_a(8192), &sge),
    ])
    .unwrap();
    let wcs = wait_with(
        &s.b.cq,
        3,
        Wait {
            ok: true,
            ..Wait::default()
        },
        &|c| format!("{c:?}"),
    );
    let order: Vec<_> = wcs.iter().map(|w| (w.wr_id, w.opcode)).collect();
    assert_eq!(
        order,
        [
            (1, WcOpcode::RdmaWrite),
            (2, WcOpcode::BindMw),
            (3, WcOpcode::RdmaWrite)
        ]
    );
    assert!(s.local.0[..5000].iter().all(|&x| x == 0), "the first WRITE");
    assert_eq!(s.run(write(k, s.win_addr()), 64).status, WcStatus::Success);
}

/// Post `op` on `qa` with no gather list (ATOMIC WRITE carries its data in
/// the request); its completion.
fn run_bare(s: &Setup<'_>, op: SendOp) -> Wc {
    s.qa.post_send(&[SendWr {
        wr_id: 10,
        sg_list: &[],
        op,
        flags: signaled(),
        ud: None,
    }])
    .unwrap();
    wait(&s.a.cq, 1)[0]
}

#[test]
fn an_atomic_write_goes_through_a_window_and_not_once_it_is_invalidated() {
    let n = nodes();
    for (kind, extra) in kinds() {
        let mut s = setup(&n, extra);
        let mw = s.b.pd.alloc_mw(MwType::Two).unwrap();
        let k = s.bind_window(&mw);
        let at = s.win_addr() + 64;
        let aw = |rkey| SendOp::AtomicWrite {
            remote_addr: at,
            rkey,
            data: [0xa5; 8],
        };
        let wc = run_bare(&s, aw(k));
        assert_eq!(wc.status, WcStatus::Success, "{kind}: {wc:?}");
        assert_eq!(
            &s.remote.0[WIN_OFF + 64..WIN_OFF + 72],
            &[0xa5; 8],
            "{kind}"
        );
        s.qb.post_send(&[SendWr {
            wr_id: 0x1b,
            sg_list: &[],
            op: SendOp::LocalInv(k),
            flags: signaled(),
            ud: None,
        }])
        .unwrap();
        assert_eq!(wait(&s.b.cq, 1)[0].status, WcStatus::Success, "{kind}");
        s.remote.0[WIN_OFF + 64..WIN_OFF + 72].fill(0);
        let wc = run_bare(&s, aw(k));
        assert_eq!(wc.status, WcStatus::RemAccessErr, "{kind}: {wc:?}");
        assert_eq!(&s.remote.0[WIN_OFF + 64..WIN_OFF + 72], &[0; 8], "{kind}");
        s.reconnect();
    }
}

#[test]
fn an_mr_with_a_window_bound_refuses_rereg_until_the_window_goes() {
    let n = nodes();
    let mut s = setup(&n, Access::default());
    let mw = s.b.pd.alloc_mw(MwType::One).unwrap();
    let k = s.bind_window(&mw);
    let change = Rereg {
        translation: None,
        pd: None,
        access: Some(Access::LOCAL_WRITE | Access::MW_BIND | Access::REMOTE_READ),
    };
    assert_eq!(s.mrb.rereg(change), Err(Errno::EBUSY));
    // Unchanged: the window still reaches the MR beneath.
    assert_eq!(s.run(write(k, s.win_addr()), 64).status, WcStatus::Success);
    drop(mw);
    let change = Rereg {
        translation: None,
        pd: None,
        access: Some(Access::LOCAL_WRITE | Access::MW_BIND | Access::REMOTE_READ),
    };
    assert_eq!(s.mrb.rereg(change), Ok(()));
}
