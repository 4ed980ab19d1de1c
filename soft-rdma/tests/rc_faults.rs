//! The device under random faults (the `SOFTRDMA_FAULTS` middleware on both
//! devices of a loopback hub): RC moves every byte intact and executes every
//! atomic once; UC and UD lose exactly what the fault layer dropped; the
//! counters say so.
//!
//! The bulk tests move 256 MiB each (`RC_FAULTS_MIB` to change) through
//! 16 MiB buffers reused lap after lap, each message with its own pattern,
//! checked and cleared as it completes. Each prints its figures (bytes, time,
//! the counters of both devices): `cargo test -p soft-rdma --test rc_faults
//! -- --nocapture`. The deadlines catch a livelock; they are no speed limit.

use soft_rdma::transport::faults::{FaultConfig, FaultLink};
use soft_rdma::transport::{Hub, Link};
use soft_rdma::verbs::*;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use test_support::verbs::{all_access, signaled, wait_with, Buf, Node, QpConfig, Wait};

const MIX: &str = "drop=0.05,dup=0.01,reorder=0.02,corrupt=0.001";

/// The local ACK timeout, 4.096 µs × 2^11 ≈ 8 ms: tail losses recover
/// quickly, and 8 of them (retry_cnt 7), doubling from the second on (8 ms
/// … 256 ms, about 1 s in all), outlast a scheduling stall of a loaded
/// 2-core machine (70 ms seen).
const TIMEOUT: u8 = 11;

/// Two devices on a hub, each receiving through a fault injector (`None`: no injector).
fn pair(spec_a: Option<&str>, spec_b: Option<&str>, seed: u64) -> (Node, Node) {
    let hub = Hub::with_queue(1 << 15);
    let mk = |ip: [u8; 4], spec: Option<&str>| {
        let link = hub.link(SocketAddr::from((ip, 4791))).unwrap();
        let link: Arc<dyn Link> = match spec {
            Some(s) => {
                let mut cfg: FaultConfig = s.parse().unwrap();
                cfg.seed = Some(seed);
                Arc::new(FaultLink::new(link, cfg))
            }
            None => Arc::new(link),
        };
        Node::on_link(link, 8192)
    };
    (mk([127, 10, 0, 1], spec_a), mk([127, 10, 0, 2], spec_b))
}

/// 4096 WRs of one SGE each way, PSNs from 0xffff00 (every bulk test
/// crosses the 24-bit wrap), the ACK timeout [`TIMEOUT`].
fn connect(a: &Node, b: &Node, t: QpType, mtu: Mtu) -> (Qp, Qp) {
    QpConfig {
        cap: QpCap {
            max_send_wr: 4096,
            max_recv_wr: 4096,
            max_send_sge: 1,
            max_recv_sge: 1,
            max_inline_data: 0,
        },
        qkey: 0x1234,
        mtu,
        psn: 0xffff00,
        timeout: Some(TIMEOUT),
        ..QpConfig::new(t)
    }
    .connect(a, b)
}

/// Poll until `n` completions (all successful; no more than `n`) or 60 s pass.
fn wait_ok(cq: &Cq, n: usize) -> Vec<Wc> {
    wait_ok_or(cq, n, &String::new)
}

/// [`wait_ok`], saying `why()` (e.g. the counters) on failure.
fn wait_ok_or(cq: &Cq, n: usize, why: &dyn Fn() -> String) -> Vec<Wc> {
    let how = Wait {
        limit: Duration::from_secs(60),
        exact: true,
        ok: true,
        pause: Some(Duration::from_micros(50)),
    };
    wait_with(cq, n, how, &|_| why())
}

/// Bytes each bulk test moves: `RC_FAULTS_MIB` MiB (default 256, the figure
/// issue 6 asks for).
fn total_bytes() -> usize {
    let mib = std::env::var("RC_FAULTS_MIB")
        .ok()
        .map(|v| v.parse::<usize>().expect("RC_FAULTS_MIB: a number of MiB"))
        .unwrap_or(256);
    assert!(mib > 0, "RC_FAULTS_MIB must be at least 1");
    mib << 20
}
const MSG: usize = 64 << 10;
/// The buffers: a window of slots reused lap after lap, so memory does not
/// grow with the bytes moved (two 16 MiB buffers per test, whatever the total).
const WINDOW_BYTES: usize = 16 << 20;
/// Messages in flight: go-back-N resends the whole window after a loss,
/// so a small window keeps the cost of each loss small.
const WINDOW: usize = 2;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Verb {
    Write,
    Read,
    Send,
}

fn access(odp: bool) -> Access {
    if odp {
        all_access() | Access::ON_DEMAND
    } else {
        all_access()
    }
}

/// Message `m`'s bytes: a distinct pattern per message (so data left over
/// from an earlier lap, or a message written twice, is caught), generated a
/// 64-bit word at a time.
fn fill(m: usize, out: &mut [u8]) {
    for (w, chunk) in out.chunks_exact_mut(8).enumerate() {
        let mut x = ((m as u64) << 32 | w as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        x ^= x >> 29;
        chunk.copy_from_slice(&x.wrapping_mul(0xbf58_476d_1ce4_e5b9).to_ne_bytes());
    }
}

/// Checks that `got` is message `m` intact, then zeroes it (a message the
/// next lap fails to write into this slot is then caught as zeros).
fn check_and_clear(m: usize, got: &mut [u8], want: &mut [u8]) {
    fill(m, want);
    if got != want {
        let i = (0..MSG).find(|&i| got[i] != want[i]).unwrap();
        panic!(
            "message {m}: first wrong byte at {i} of {MSG} (got {:#04x}, want {:#04x})",
            got[i], want[i]
        );
    }
    got.fill(0);
}

/// The figures of one run, both devices: what the run cost.
fn figures(title: &str, sa: &DeviceStats, sb: &DeviceStats) -> String {
    let mut t = format!(
        "{title}\n  {:<10} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}\n",
        "device",
        "sent",
        "received",
        "retrans",
        "timeouts",
        "NAK sent",
        "NAK rcvd",
        "dup req",
        "dropped",
        "dup'd",
        "reord/corr",
    );
    for (name, s) in [("A (req)", sa), ("B (resp)", sb)] {
        t += &format!(
            "  {:<10} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>5}/{}\n",
            name,
            s.sent_pkts,
            s.rcvd_pkts,
            s.retransmits,
            s.local_ack_timeouts,
            s.nak_sent_seq_err + s.nak_sent_inv_req + s.nak_sent_rem_access + s.nak_sent_rem_op,
            s.nak_rcvd_seq_err + s.nak_rcvd_inv_req + s.nak_rcvd_rem_access + s.nak_rcvd_rem_op,
            s.duplicate_requests,
            s.fault_dropped,
            s.fault_duplicated,
            s.fault_reordered,
            s.fault_corrupted,
        );
    }
    t
}

/// Livelock detector, not a performance bound: a minute plus a second per
/// MiB (the debug build moves tens of MB/s here, even on a loaded machine).
fn deadline(bytes: usize) -> Duration {
    Duration::from_secs(60 + (bytes >> 20) as u64)
}

/// [`total_bytes`] of `verb` from A to B (READ: B's data into A) under the
/// fault mix, every byte of every message checked as it completes.
fn bulk(verb: Verb, odp: bool, seed: u64) {
    let total = total_bytes().next_multiple_of(MSG);
    let (a, b) = pair(Some(MIX), Some(MIX), seed);
    let (qa, qb) = connect(&a, &b, QpType::Rc, Mtu::M4096);
    let win = WINDOW_BYTES.min(total);
    let slots = win / MSG;
    let (mut src, mut dst) = (Buf::new(win, |_| 0), Buf::new(win, |_| 0));
    let mut want = vec![0u8; MSG];
    // The side holding the data: A for WRITE/SEND, B for READ.
    let (data_side, sink_side) = if verb == Verb::Read {
        (&b, &a)
    } else {
        (&a, &b)
    };
    let mr_src = data_side
        .pd
        .reg_mr(src.addr(), win as u64, access(odp))
        .unwrap();
    let mr_dst = sink_side
        .pd
        .reg_mr(dst.addr(), win as u64, access(odp))
        .unwrap();
    let n = total / MSG;
    let slot = |m: usize| (m % slots) * MSG;
    let (dst_addr, dst_lkey) = (dst.addr(), mr_dst.lkey());
    let recv = |m: usize| {
        qb.post_recv(&[RecvWr {
            wr_id: m as u64,
            sg_list: &[Sge {
                addr: dst_addr + slot(m) as u64,
                length: MSG as u32,
                lkey: dst_lkey,
            }],
        }])
        .unwrap()
    };
    if verb == Verb::Send {
        (0..slots.min(n)).for_each(recv);
    }
    let why = || format!("A:\n{}B:\n{}", a.dev.stats(), b.dev.stats());
    let limit = deadline(total);
    let t = Instant::now();
    let (mut posted, mut done) = (0, 0);
    while done < n {
        while posted < n && posted - done < WINDOW {
            let off = slot(posted);
            // The slot's previous message completed `slots - WINDOW` ago.
            fill(posted, &mut src.0[off..off + MSG]);
            let (sge, op) = match verb {
                Verb::Write => (
                    src.sge(&mr_src, off, MSG),
                    SendOp::Write {
                        remote_addr: dst.addr() + off as u64,
                        rkey: mr_dst.rkey(),
                    },
                ),
                Verb::Send => (src.sge(&mr_src, off, MSG), SendOp::Send),
                Verb::Read => (
                    dst.sge(&mr_dst, off, MSG),
                    SendOp::Read {
                        remote_addr: src.addr() + off as u64,
                        rkey: mr_src.rkey(),
                    },
                ),
            };
            qa.post_send(&[SendWr {
                wr_id: posted as u64,
                sg_list: &[sge],
                op,
                flags: signaled(),
                ud: None,
            }])
            .unwrap();
            posted += 1;
        }
        let c = wait_ok_or(&a.cq, 1, &why);
        assert_eq!(c[0].wr_id, done as u64, "in order");
        if verb == Verb::Send {
            let r = wait_ok_or(&b.cq, 1, &why);
            assert_eq!((r[0].wr_id, r[0].byte_len), (done as u64, MSG as u32));
        }
        let off = slot(done);
        check_and_clear(done, &mut dst.0[off..off + MSG], &mut want);
        if verb == Verb::Send && done + slots < n {
            recv(done + slots);
        }
        done += 1;
        assert!(
            t.elapsed() < limit,
            "livelock? {done} of {n} messages after {:?}\n{}",
            t.elapsed(),
            why()
        );
    }
    let elapsed = t.elapsed();
    let (sa, sb) = (a.dev.stats(), b.dev.stats());
    let mode = if odp { "ODP" } else { "pinned" };
    println!(
        "{}",
        figures(
            &format!(
                "RC {verb:?} {mode}: {} MiB in {:.2} s ({:.1} MB/s)",
                total >> 20,
                elapsed.as_secs_f64(),
                total as f64 / elapsed.as_secs_f64() / 1e6
            ),
            &sa,
            &sb
        )
    );
    for s in [&sa, &sb] {
        assert!(s.fault_dropped > 0 && s.fault_duplicated > 0 && s.fault_reordered > 0);
    }
    // The requester recovered by going back; the responder saw the gaps.
    assert!(sa.retransmits > 0, "{sa}");
    let data_receiver = if verb == Verb::Read { &sa } else { &sb };
    assert!(data_receiver.out_of_sequence > 0 || verb == Verb::Read);
    assert!(sb.duplicate_requests > 0, "{sb}");
    assert_eq!(sa.retry_exceeded + sb.retry_exceeded, 0);
    if odp {
        let faults = sa.odp_page_faults + sb.odp_page_faults;
        assert!(faults > 0, "ODP MRs fault their pages in");
    }
    drop((qa, qb, mr_src, mr_dst));
}

#[test]
fn rc_write_256m_under_faults_pinned() {
    bulk(Verb::Write, false, 1);
}
#[test]
fn rc_write_256m_under_faults_odp() {
    bulk(Verb::Write, true, 2);
}
#[test]
fn rc_read_256m_under_faults_pinned() {
    bulk(Verb::Read, false, 3);
}
#[test]
fn rc_read_256m_under_faults_odp() {
    bulk(Verb::Read, true, 4);
}
#[test]
fn rc_send_256m_under_faults_pinned() {
    bulk(Verb::Send, false, 5);
}
#[test]
fn rc_send_256m_under_faults_odp() {
    bulk(Verb::Send, true, 6);
}

/// 10 000 fetch-and-adds under the fault mix: each executed exactly once,
/// each fetching the value before it.
fn atomics(odp: bool, seed: u64) {
    const N: usize = 10_000;
    const DEPTH: usize = 16;
    let (a, b) = pair(Some(MIX), Some(MIX), seed);
    let (qa, _qb) = connect(&a, &b, QpType::Rc, Mtu::M4096);
    let local = Buf::new(N * 8, |_| 0xff);
    let remote = Buf::new(64, |_| 0);
    let mra =
        a.pd.reg_mr(local.addr(), (N * 8) as u64, access(odp))
            .unwrap();
    let mrb = b.pd.reg_mr(remote.addr(), 64, access(odp)).unwrap();
    let why = || format!("A:\n{}B:\n{}", a.dev.stats(), b.dev.stats());
    let t = Instant::now();
    let (mut posted, mut done) = (0, 0);
    while done < N {
        while posted < N && posted - done < DEPTH {
            qa.post_send(&[SendWr {
                wr_id: posted as u64,
                sg_list: &[local.sge(&mra, posted * 8, 8)],
                op: SendOp::FetchAdd {
                    remote_addr: remote.addr() + 8,
                    rkey: mrb.rkey(),
                    add: 1,
                },
                flags: signaled(),
                ud: None,
            }])
            .unwrap();
            posted += 1;
        }
        done += wait_ok_or(&a.cq, 1, &why).len();
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "livelock? {done} of {N} atomics after {:?}\n{}",
            t.elapsed(),
            why()
        );
    }
    let elapsed = t.elapsed();
    let at = |i: usize| u64::from_ne_bytes(local.0[i * 8..i * 8 + 8].try_into().unwrap());
    assert_eq!(
        u64::from_ne_bytes(remote.0[8..16].try_into().unwrap()),
        N as u64,
        "every add executed exactly once"
    );
    for i in 0..N {
        assert_eq!(at(i), i as u64, "the add {i} fetched the value before it");
    }
    let (sa, sb) = (a.dev.stats(), b.dev.stats());
    let mode = if odp { "ODP" } else { "pinned" };
    println!(
        "{}",
        figures(
            &format!(
                "RC {N} fetch-and-adds {mode}: {:.2} s ({:.0} ops/s), final counter {N}",
                elapsed.as_secs_f64(),
                N as f64 / elapsed.as_secs_f64()
            ),
            &sa,
            &sb
        )
    );
    assert!(sa.retransmits > 0, "{sa}");
    assert!(sb.duplicate_requests > 0, "duplicates replayed: {sb}");
}

#[test]
fn rc_fetch_add_10k_under_faults_pinned() {
    atomics(false, 7);
}
#[test]
fn rc_fetch_add_10k_under_faults_odp() {
    atomics(true, 8);
}

/// `n` completions that arrive within `quiet` of each other.
fn drain_cq(cq: &Cq, quiet: Duration) -> Vec<Wc> {
    let mut out = Vec::new();
    let mut buf = [Wc::EMPTY; 32];
    let mut last = Instant::now();
    while last.elapsed() < quiet {
        let k = cq.poll(&mut buf);
        if k > 0 {
            out.extend_from_slice(&buf[..k]);
            last = Instant::now();
        } else {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    out
}

/// UD and UC single-packet SENDs to a receiver that drops 10%: it gets
/// exactly sent − dropped messages, each intact.
fn unreliable(t: QpType) {
    const N: usize = 3000;
    const LEN: usize = 1000;
    let (a, b) = pair(None, Some("drop=0.1"), 11);
    let (qa, qb) = connect(&a, &b, t, Mtu::M1024);
    let src = Buf::new(N * LEN, |i| (i / LEN) as u8 ^ (i % 251) as u8);
    let slot = LEN + 40;
    let dst = Buf::new(N * slot, |_| 0);
    let mra =
        a.pd.reg_mr(src.addr(), src.0.len() as u64, all_access())
            .unwrap();
    let mrb =
        b.pd.reg_mr(dst.addr(), dst.0.len() as u64, all_access())
            .unwrap();
    for i in 0..N {
        qb.post_recv(&[RecvWr {
            wr_id: i as u64,
            sg_list: &[dst.sge(&mrb, i * slot, slot)],
        }])
        .unwrap();
    }
    let ud = (t == QpType::Ud).then(|| UdDest {
        ah: a.pd.create_ah(b.dev.gid(1).unwrap()),
        remote_qpn: qb.qp_num(),
        remote_qkey: 0x1234,
    });
    for i in 0..N {
        qa.post_send(&[SendWr {
            wr_id: i as u64,
            sg_list: &[src.sge(&mra, i * LEN, LEN)],
            // The message number rides in the immediate.
            op: SendOp::SendImm(i as u32),
            flags: signaled(),
            ud: ud.clone(),
        }])
        .unwrap();
        if i % 256 == 255 {
            wait_ok(&a.cq, 256);
        }
    }
    wait_ok(&a.cq, N % 256);
    let got = drain_cq(&b.cq, Duration::from_millis(200));
    let sb = b.dev.stats();
    assert_eq!(sb.link_recv_dropped, 0, "the hub lost nothing itself");
    assert!(sb.fault_dropped > 0);
    assert_eq!(
        got.len() as u64,
        N as u64 - sb.fault_dropped,
        "received = sent − dropped by the fault layer\n{sb}"
    );
    let grh = if t == QpType::Ud { 40 } else { 0 };
    let mut last = None;
    for (k, w) in got.iter().enumerate() {
        assert_eq!(w.status, WcStatus::Success);
        assert_eq!(w.byte_len as usize, LEN + grh);
        let m = w.imm.unwrap() as usize;
        assert!(last.is_none_or(|l| m > l), "in order");
        last = Some(m);
        // Receives are consumed in order: the k-th completion used slot k.
        assert_eq!(w.wr_id, k as u64);
        let at = k * slot + grh;
        assert!(
            dst.0[at..at + LEN] == src.0[m * LEN..(m + 1) * LEN],
            "message {m} intact"
        );
    }
}

#[test]
fn ud_under_drop_loses_exactly_the_dropped() {
    unreliable(QpType::Ud);
}

#[test]
fn uc_under_drop_loses_exactly_the_dropped() {
    unreliable(QpType::Uc);
}

/// UC multi-packet messages: a message with a lost packet is lost whole; the
/// others arrive intact.
#[test]
fn uc_multi_packet_messages_under_drop_arrive_whole_or_not_at_all() {
    const N: usize = 1000;
    const LEN: usize = 3000; // three packets at MTU 1024
    let (a, b) = pair(None, Some("drop=0.05"), 12);
    let (qa, qb) = connect(&a, &b, QpType::Uc, Mtu::M1024);
    let src = Buf::new(N * LEN, |i| (i / LEN) as u8 ^ (i % 253) as u8);
    let dst = Buf::new(N * LEN, |_| 0);
    let mra =
        a.pd.reg_mr(src.addr(), src.0.len() as u64, all_access())
            .unwrap();
    let mrb =
        b.pd.reg_mr(dst.addr(), dst.0.len() as u64, all_access())
            .unwrap();
    for i in 0..N {
        qb.post_recv(&[RecvWr {
            wr_id: i as u64,
            sg_list: &[dst.sge(&mrb, i * LEN, LEN)],
        }])
        .unwrap();
    }
    for i in 0..N {
        qa.post_send(&[SendWr {
            wr_id: i as u64,
            sg_list: &[src.sge(&mra, i * LEN, LEN)],
            op: SendOp::SendImm(i as u32),
            flags: signaled(),
            ud: None,
        }])
        .unwrap();
        if i % 100 == 99 {
            wait_ok(&a.cq, 100);
        }
    }
    let got = drain_cq(&b.cq, Duration::from_millis(200));
    let sb = b.dev.stats();
    let dropped = sb.fault_dropped as usize;
    assert!(dropped > 0);
    // Each drop loses at most one message (two drops may hit the same one).
    assert!(
        got.len() >= N - dropped && got.len() < N,
        "{} of {N}, {dropped} dropped",
        got.len()
    );
    for (k, w) in got.iter().enumerate() {
        assert_eq!((w.status, w.byte_len), (WcStatus::Success, LEN as u32));
        let m = w.imm.unwrap() as usize;
        let at = k * LEN;
        assert!(
            dst.0[at..at + LEN] == src.0[m * LEN..(m + 1) * LEN],
            "message {m} intact"
        );
    }
}

/// Corruption is caught by the receiver's ICRC check: counted, nothing delivered.
#[test]
fn corrupted_packets_are_dropped_by_the_icrc_check_and_never_delivered() {
    const N: usize = 500;
    let (a, b) = pair(None, Some("corrupt=1"), 13);
    let (qa, qb) = connect(&a, &b, QpType::Ud, Mtu::M1024);
    let src = Buf::new(256, |i| i as u8);
    let dst = Buf::new(N * 296, |_| 0);
    let mra = a.pd.reg_mr(src.addr(), 256, all_access()).unwrap();
    let mrb =
        b.pd.reg_mr(dst.addr(), dst.0.len() as u64, all_access())
            .unwrap();
    for i in 0..N {
        qb.post_recv(&[RecvWr {
            wr_id: i as u64,
            sg_list: &[dst.sge(&mrb, i * 296, 296)],
        }])
        .unwrap();
    }
    let ud = UdDest {
        ah: a.pd.create_ah(b.dev.gid(1).unwrap()),
        remote_qpn: qb.qp_num(),
        remote_qkey: 0x1234,
    };
    for i in 0..N {
        qa.post_send(&[SendWr {
            wr_id: i as u64,
            sg_list: &[src.sge(&mra, 0, 256)],
            op: SendOp::Send,
            flags: signaled(),
            ud: Some(ud.clone()),
        }])
        .unwrap();
    }
    wait_ok(&a.cq, N);
    let got = drain_cq(&b.cq, Duration::from_millis(200));
    assert!(
        got.is_empty(),
        "a corrupted packet was delivered: {:?}",
        got[0]
    );
    let sb = b.dev.stats();
    assert_eq!(sb.fault_corrupted, N as u64);
    assert_eq!(sb.rcvd_pkts, N as u64);
    assert_eq!(sb.icrc_errors + sb.parse_errors, N as u64, "{sb}");
    assert!(sb.icrc_errors > N as u64 / 2, "{sb}");
    assert!(dst.0.iter().all(|&x| x == 0), "nothing written");
}
