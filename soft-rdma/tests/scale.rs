//! Scale (issue 21, goal 5): 10 000 RC QPs connected between two devices
//! (in one process, on the loopback hub: the two-process run is
//! `scripts/scale.sh`), each used once with its data checked; and the QP
//! table's number reuse: a QPN handed out again after a destroy reaches
//! the new QP only, and destroying the old one again leaves the new one in.

use soft_rdma::transport::{FaultConfig, FaultLink, Hub};
use soft_rdma::verbs::*;
use std::sync::Arc;
use test_support::verbs::*;

fn hub_node(hub: &Arc<Hub>, last: u8, cq_depth: usize) -> Node {
    Node::on_hub(hub, ([127, 33, 0, last], 4791).into(), cq_depth)
}

/// Small queues: what is measured is the number of QPs, not their depth.
fn small() -> QpConfig {
    QpConfig {
        cap: QpCap {
            max_send_wr: 2,
            max_recv_wr: 1,
            max_send_sge: 1,
            max_recv_sge: 1,
            max_inline_data: 0,
        },
        ..QpConfig::new(QpType::Rc)
    }
}

const QPS: usize = 10_000;

/// This process's resident set (`/proc/self/statm`, 4 KiB pages).
fn rss_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4
}
const SLOT: usize = 64;

#[test]
fn ten_thousand_rc_qps_each_write_their_own_slot() {
    let hub = Hub::new();
    let (a, b) = (hub_node(&hub, 1, 1 << 16), hub_node(&hub, 2, 16));
    let cfg = small();
    let before = rss_kib();
    let pairs: Vec<(Qp, Qp)> = (0..QPS).map(|_| cfg.connect(&a, &b)).collect();
    // Reported, not asserted (docs/BENCHMARKS.md, "Scale"): both sides'
    // QPs, so half of it per QP.
    eprintln!(
        "RSS for {QPS} connected pairs: {} KiB, {} bytes per QP",
        rss_kib() - before,
        (rss_kib() - before) * 1024 / (2 * QPS as u64)
    );
    // Every QPN distinct on each side.
    let mut nums: Vec<u32> = pairs.iter().map(|(qa, _)| qa.qp_num()).collect();
    nums.sort_unstable();
    nums.dedup();
    assert_eq!(nums.len(), QPS);

    // QP i writes SLOT bytes of pattern i into slot i of one MR of b.
    let src = Buf::new(QPS * SLOT, |j| ((j / SLOT) * 7 + j % SLOT) as u8);
    let dst = Buf::new(QPS * SLOT, |_| 0);
    let smr =
        a.pd.reg_mr(src.addr(), (QPS * SLOT) as u64, Access::LOCAL_WRITE)
            .unwrap();
    let dmr =
        b.pd.reg_mr(dst.addr(), (QPS * SLOT) as u64, all_access())
            .unwrap();
    for (i, (qa, _)) in pairs.iter().enumerate() {
        write(
            qa,
            i as u64,
            src.sge(&smr, i * SLOT, SLOT),
            dst.addr() + (i * SLOT) as u64,
            dmr.rkey(),
        );
    }
    let how = Wait {
        limit: std::time::Duration::from_secs(120),
        ok: true,
        ..Wait::default()
    };
    let wcs = wait_with(&a.cq, QPS, how, &|w| format!("{} completions", w.len()));
    // One completion per QP, each from its own QP.
    let mut by_qp: Vec<u32> = wcs.iter().map(|w| w.qp_num).collect();
    by_qp.sort_unstable();
    assert_eq!(by_qp, nums);
    for (i, slot) in dst.0.chunks(SLOT).enumerate() {
        assert_eq!(slot, &src.0[i * SLOT..(i + 1) * SLOT], "slot {i}");
    }
}

#[test]
fn a_reused_qpn_reaches_only_the_new_qp() {
    let hub = Hub::new();
    let (a, b) = (hub_node(&hub, 3, 64), hub_node(&hub, 4, 64));
    let cfg = small();
    let (qa, old) = cfg.connect(&a, &b);
    let num = old.qp_num();
    let dst = Buf::new(4096, |_| 0);
    let mr = b.pd.reg_mr(dst.addr(), 4096, all_access()).unwrap();
    drop(old); // destroyed: out of the table
    b.dev.set_next_ids(num, 1);
    let new = cfg.create(&b.pd, &b.cq);
    assert_eq!(new.qp_num(), num, "the number is free again");
    cfg.bring_up(&new, qa.qp_num(), a.dev.gid(1).unwrap());
    // a's QP still targets `num`: its WRITE lands through the new QP.
    let src = Buf::new(64, |_| 0x77);
    let smr = a.pd.reg_mr(src.addr(), 64, Access::LOCAL_WRITE).unwrap();
    write(&qa, 9, src.sge(&smr, 0, 64), dst.addr(), mr.rkey());
    assert_eq!(wait(&a.cq, 1)[0].status, WcStatus::Success);
    assert!(dst.0[..64].iter().all(|&x| x == 0x77));
    // A second QP at a live number's slot gets another number.
    b.dev.set_next_ids(num, 1);
    let other = cfg.create(&b.pd, &b.cq);
    assert_ne!(other.qp_num(), num);
    assert_ne!(other.qp_num() & 0xffff, num & 0xffff, "slot shared");
    drop(other);
    assert_eq!(new.state(), QpState::Rts);
}

/// Many busy QPs share the device's budget of bytes in flight
/// (`resources::flight`): 512 QPs each WRITE 256 KiB at once — 128 MiB
/// offered against a 4 MiB budget, each QP's window alone 128 KiB, the
/// ACKs 20 ms on their way (so the budget fills before any comes back,
/// however fast the peer). QPs stopped by the budget (counted) go on as
/// ACKs free room, those with nothing in flight wait in line; every WRITE
/// completes, every byte lands.
#[test]
fn busy_qps_share_the_devices_budget_of_bytes_in_flight() {
    const N: usize = 512;
    const PART: usize = 64 << 10;
    const PARTS: usize = 4;
    let hub = Hub::new();
    let slow: FaultConfig = "delay_us=20000".parse().unwrap();
    let link = hub.link(([127, 33, 0, 5], 4791).into()).unwrap();
    let a = Node::on_link(Arc::new(FaultLink::new(link, slow)), 4096);
    let b = hub_node(&hub, 6, 64);
    let cfg = QpConfig {
        cap: QpCap {
            max_send_wr: PARTS as u32,
            ..small().cap
        },
        timeout: Some(14), // 67 ms, perftest's: the budget, not the timer, paces
        ..QpConfig::new(QpType::Rc)
    };
    let pairs: Vec<(Qp, Qp)> = (0..N).map(|_| cfg.connect(&a, &b)).collect();
    let len = N * PARTS * PART;
    let src = Buf::new(len, |j| (j / 4093 + j % 251) as u8);
    let dst = Buf::new(len, |_| 0);
    let smr =
        a.pd.reg_mr(src.addr(), len as u64, Access::LOCAL_WRITE)
            .unwrap();
    let dmr = b.pd.reg_mr(dst.addr(), len as u64, all_access()).unwrap();
    for k in 0..PARTS {
        for (i, (qa, _)) in pairs.iter().enumerate() {
            let off = (i * PARTS + k) * PART;
            write(
                qa,
                off as u64,
                src.sge(&smr, off, PART),
                dst.addr() + off as u64,
                dmr.rkey(),
            );
        }
    }
    let how = Wait {
        limit: std::time::Duration::from_secs(120),
        ok: true,
        ..Wait::default()
    };
    wait_with(&a.cq, N * PARTS, how, &|w| {
        format!("{} completions", w.len())
    });
    assert!(dst.0 == src.0, "every byte of every WRITE");
    let s = a.dev.stats();
    assert!(s.flight_limited > 0, "the budget never stopped a QP: {s}");
    assert_eq!(s.retry_exceeded, 0, "{s}");
}

/// Room freed with no ACK to tell: QPs whose peer is gone fill the
/// device's budget, a WRITE on a live pair waits in line behind them (and
/// behind two of them that wait too), and once they are destroyed the
/// line's own timer wakes it — nothing else would: no ACK ever comes.
#[test]
fn a_qp_waiting_for_room_goes_on_when_room_is_freed_without_an_ack() {
    const DEAD: usize = 26; // 24 × 128 KiB fill the 3 MiB budget
    const LEN: usize = 128 << 10; // one window at MTU 1024
    let hub = Hub::new();
    let (a, b) = (hub_node(&hub, 7, 64), hub_node(&hub, 8, 64));
    let cfg = QpConfig {
        timeout: Some(20), // 4 s: the dead QPs keep their bytes in flight
        ..small()
    };
    let src = Buf::new(LEN, |j| (j % 253) as u8);
    let dst = Buf::new(LEN, |_| 0);
    let smr =
        a.pd.reg_mr(src.addr(), LEN as u64, Access::LOCAL_WRITE)
            .unwrap();
    let dmr = b.pd.reg_mr(dst.addr(), LEN as u64, all_access()).unwrap();
    let dead: Vec<Qp> = (0..DEAD)
        .map(|_| {
            let (qa, qb) = cfg.connect(&a, &b);
            drop(qb); // its packets now reach no QP: never acknowledged
            qa
        })
        .collect();
    for (i, qa) in dead.iter().enumerate() {
        write(qa, i as u64, src.sge(&smr, 0, LEN), dst.addr(), dmr.rkey());
    }
    let (live, _peer) = cfg.connect(&a, &b);
    write(
        &live,
        99,
        src.sge(&smr, 0, 64 << 10),
        dst.addr(),
        dmr.rkey(),
    );
    let s = a.dev.stats();
    assert!(
        s.flight_limited >= 3,
        "two dead QPs and the live one wait: {s}"
    );
    assert_eq!(a.cq.poll(&mut [Wc::EMPTY; 4]), 0, "nothing is acknowledged");
    drop(dead);
    let wc = wait_with(
        &a.cq,
        1,
        Wait {
            ok: true,
            ..Wait::default()
        },
        &|w| format!("{w:?}\n{}", a.dev.stats()),
    );
    assert_eq!(wc[0].wr_id, 99);
    assert!(dst.0[..64 << 10] == src.0[..64 << 10]);
}
