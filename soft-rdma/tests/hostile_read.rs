//! READ requests from a hostile peer (issue 19, findings 7 and 10): a
//! flood of duplicates of one large READ stays bounded in memory and in
//! bytes out; a duplicate READ is checked again (PD, rights) before it is
//! answered.

mod attacker;
use attacker::*;
use soft_rdma::transport::{Link, RecvBatch};
use soft_rdma::verbs::*;
use soft_rdma::wire::{Ext, Op, Reth};
use std::time::{Duration, Instant};

fn read(va: u64, rkey: u32, len: u32) -> Ext {
    Ext::Reth(Reth { va, rkey, len })
}

/// Finding 7: one valid 2 MiB READ, then 3000 duplicates of it as fast as
/// the hub takes them. Before the fix every duplicate rebuilt the whole
/// response into the transmit arena before one flush a batch (256 × 2 MiB
/// retained, ~3000 × 2 MiB built). Now a READ is answered at most once a
/// receive batch and the arena is flushed past 1 MiB.
#[test]
fn duplicate_read_flood_is_bounded_in_memory_and_bytes_out() {
    const LEN: usize = 2 << 20;
    const DUPS: usize = 3000;
    let mut env = Env::with_queue(1, 8192);
    let (qp, _) = env.qp(QpType::Rc, all_access());
    let mem = Canaried::new(LEN, 1);
    let mr = env
        .pd
        .reg_mr(mem.addr(), LEN as u64, Access::REMOTE_READ)
        .unwrap();
    let npsn = (LEN / MTU_BYTES) as u64;
    let req = env.build(
        rc(Op::ReadRequest),
        qp.qp_num(),
        EPSN,
        read(mem.addr(), mr.rkey(), LEN as u32),
        &[],
    );
    // Warm up (the arena's working size), then measure.
    env.sync();
    let rss0 = rss();
    let s0 = env.dev.stats();
    let t = Instant::now();
    let mut pkts: Vec<&[u8]> = vec![&req];
    pkts.extend(std::iter::repeat_n(&req[..], DUPS));
    let bytes_in: usize = pkts.iter().map(|p| p.len()).sum();
    env.send_many(&pkts);
    drain_until_handled(&mut env, s0.rcvd_pkts + pkts.len() as u64);
    let s1 = env.dev.stats();
    let grew = rss().saturating_sub(rss0);
    let out = s1.sent_pkts - s0.sent_pkts;
    let bytes_out = out * (MTU_BYTES as u64 + 32);
    println!(
        "{DUPS} duplicates of a {} MiB READ in {:?}: {out} packets built \
         ({:.1} READ answers, {} bytes out per byte in), RSS +{} KiB",
        LEN >> 20,
        t.elapsed(),
        out as f64 / npsn as f64,
        bytes_out / bytes_in as u64,
        grew >> 10
    );
    assert_eq!(s1.duplicate_requests - s0.duplicate_requests, DUPS as u64);
    // Once a batch: the device takes up to 256 datagrams a batch; with a
    // generous margin for small batches, at most one answer per 32
    // duplicates (before: one per duplicate).
    let answers_max = 1 + DUPS as u64 / 32;
    assert!(
        out <= answers_max * npsn + 64,
        "{out} packets for {DUPS} duplicates: more than {answers_max} answers"
    );
    // The arena holds at most 1 MiB plus one 128-packet window; the hub
    // queues what the attacker has not read (8192 datagrams, 8.5 MiB).
    assert!(
        grew < 48 << 20,
        "RSS grew by {} MiB during the flood",
        grew >> 20
    );
    drop(mr);
}

/// Read (and drop) what the victim sends until it has handled `rcvd`
/// datagrams in all and sent nothing more for 200 ms.
fn drain_until_handled(env: &mut Env, rcvd: u64) {
    let mut batch = RecvBatch::new(256);
    let t = Instant::now();
    let mut quiet = Instant::now();
    loop {
        let n = env
            .atk
            .recv(&mut batch, Some(Duration::from_millis(20)))
            .unwrap();
        if n > 0 {
            quiet = Instant::now();
        }
        if env.dev.stats().rcvd_pkts >= rcvd && quiet.elapsed() > Duration::from_millis(200) {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "the victim did not handle the flood"
        );
    }
}

/// Finding 10: a duplicate READ looks its R_Key up again — and must check
/// the PD and rights again: the key may name another PD's MR by now.
#[test]
fn duplicate_read_is_checked_again_before_it_is_answered() {
    let mut env = Env::new(2);
    let (qp, _) = env.qp(QpType::Rc, all_access());
    let mem = Canaried::new(PAGE, 2);
    let mr = env
        .pd
        .reg_mr(mem.addr(), PAGE as u64, Access::REMOTE_READ)
        .unwrap();
    let key = mr.rkey();
    let req = env.build(
        rc(Op::ReadRequest),
        qp.qp_num(),
        EPSN,
        read(mem.addr(), key, 64),
        &[],
    );
    env.send(&req);
    let r = env.sync();
    assert_eq!(r.len(), 1, "the READ is answered: {r:?}");
    assert_eq!(r[0].payload, mem.region()[..64]);
    // The MR goes; another PD's MR over the same memory takes its key
    // (index and random byte).
    drop(mr);
    let other = env.dev.alloc_pd();
    let mut taken = None;
    for _ in 0..20_000 {
        env.dev.set_next_ids(0x100, key >> 8);
        let m = other
            .reg_mr(mem.addr(), PAGE as u64, Access::REMOTE_READ)
            .unwrap();
        if m.rkey() == key {
            taken = Some(m);
            break;
        }
    }
    let _m = taken.expect("another PD's MR got the key");
    let dup = env.build(
        rc(Op::ReadRequest),
        qp.qp_num(),
        EPSN,
        read(mem.addr(), key, 64),
        &[],
    );
    env.send(&dup);
    let r = env.sync();
    assert!(
        r.is_empty(),
        "a duplicate READ answered from another PD's MR: {r:?}"
    );
    // The QP's right to READ is checked again too.
    let mr2 = env
        .pd
        .reg_mr(mem.addr(), PAGE as u64, Access::REMOTE_READ)
        .unwrap();
    let p2 = psn_add(EPSN, 1);
    let req = env.build(
        rc(Op::ReadRequest),
        qp.qp_num(),
        p2,
        read(mem.addr(), mr2.rkey(), 64),
        &[],
    );
    env.send(&req);
    assert_eq!(env.sync().len(), 1, "the second READ is answered");
    qp.modify(&QpAttr {
        access: Some(Access::LOCAL_WRITE),
        ..Default::default()
    })
    .unwrap();
    env.send(&req);
    let r = env.sync();
    assert!(
        r.is_empty(),
        "a duplicate READ answered without the QP's REMOTE_READ: {r:?}"
    );
}
