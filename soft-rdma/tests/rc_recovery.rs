//! The RC protocol's recovery paths, with loss aimed at chosen packets: a
//! test middleware `Link` drops exactly the datagrams a rule picks.
//! Go-back-N on a sequence NAK, retransmission on timeout, duplicates
//! answered (READ re-sent, atomics replayed — executed once), RNR NAK and
//! retry, retry and RNR exhaustion ending in error completions and a flushed
//! QP. Also UC and UD.

use soft_rdma::transport::{loopback::Hub, Link, Outgoing, RecvBatch};
use soft_rdma::verbs::*;
use soft_rdma::wire::{Op, PacketRepr};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use test_support::verbs::{all_access, cap, signaled, wait, Buf, Node, QpConfig};

type Rule = Box<dyn FnMut(&PacketRepr) -> bool + Send>;

/// Drops outgoing datagrams for which the rule says true; `stall` makes
/// the next receive sleep first (a receive thread starved of the CPU).
struct Lossy {
    inner: Box<dyn Link>,
    rule: Mutex<Option<Rule>>,
    dropped: AtomicUsize,
    stall: Mutex<Option<Duration>>,
}

impl Link for Lossy {
    fn send(&self, batch: &[Outgoing<'_>]) -> std::io::Result<usize> {
        let mut rule = self.rule.lock().unwrap();
        let keep: Vec<Outgoing<'_>> = batch
            .iter()
            .filter(|o| {
                let drop = match (rule.as_mut(), PacketRepr::parse(o.data)) {
                    (Some(r), Ok((repr, _))) => r(&repr),
                    _ => false,
                };
                if drop {
                    self.dropped.fetch_add(1, Ordering::SeqCst);
                }
                !drop
            })
            .copied()
            .collect();
        self.inner.send(&keep).map(|_| batch.len())
    }
    fn recv(&self, batch: &mut RecvBatch, timeout: Option<Duration>) -> std::io::Result<usize> {
        let stall = self.stall.lock().unwrap().take();
        if let Some(d) = stall {
            std::thread::sleep(d);
        }
        self.inner.recv(batch, timeout)
    }
    test_support::forward_rest_of_link!();
}

/// A device on a hub whose outgoing datagrams go through [`Lossy`].
struct Side {
    node: Node,
    lossy: Arc<Lossy>,
}

impl std::ops::Deref for Side {
    type Target = Node;
    fn deref(&self) -> &Node {
        &self.node
    }
}

fn pair() -> (Side, Side) {
    let hub = Hub::new();
    let mk = |ip: [u8; 4]| {
        let link = hub.link(SocketAddr::from((ip, 4791))).unwrap();
        let lossy = Arc::new(Lossy {
            inner: Box::new(link),
            rule: Mutex::new(None),
            dropped: AtomicUsize::new(0),
            stall: Mutex::new(None),
        });
        let node = Node::on_link(lossy.clone(), 4096);
        Side { node, lossy }
    };
    (mk([127, 9, 0, 1]), mk([127, 9, 0, 2]))
}

/// 8 reads/atomics each way, min RNR timer 3 (0.03 ms), qkey 7, and PSNs
/// just below the 24-bit wrap, so every test crosses it.
fn connect_with(
    a: &Side,
    b: &Side,
    t: QpType,
    rnr_retry: u8,
    retry_cnt: u8,
    timeout: u8,
) -> (Qp, Qp) {
    QpConfig {
        qkey: 7,
        psn: 0xfffff0,
        rd_atomic: Some(8),
        min_rnr_timer: Some(3),
        timeout: Some(timeout),
        retry_cnt: Some(retry_cnt),
        rnr_retry: Some(rnr_retry),
        ..QpConfig::new(t)
    }
    .connect(a, b)
}

fn connect(a: &Side, b: &Side) -> (Qp, Qp) {
    // timeout 8: 4.096 µs × 2^8 ≈ 1 ms, so timeouts are quick.
    connect_with(a, b, QpType::Rc, 7, 7, 8)
}

fn set_rule(s: &Side, r: impl FnMut(&PacketRepr) -> bool + Send + 'static) {
    *s.lossy.rule.lock().unwrap() = Some(Box::new(r));
}

/// Drop the `n`th packet (0-based) matching `pred`, once.
fn nth(
    n: usize,
    pred: impl Fn(&PacketRepr) -> bool + Send + 'static,
) -> impl FnMut(&PacketRepr) -> bool + Send {
    let mut seen = 0;
    move |p| {
        if pred(p) {
            seen += 1;
            return seen == n + 1;
        }
        false
    }
}

#[test]
fn lost_middle_packet_is_recovered_by_sequence_nak_and_go_back_n() {
    let (a, b) = pair();
    let (qa, _qb) = connect(&a, &b);
    let src = Buf::new(40_000, |i| (i * 13) as u8);
    let dst = Buf::new(40_000, |_| 0);
    let mra =
        a.pd.reg_mr(src.addr(), 40_000, Access::LOCAL_WRITE)
            .unwrap();
    let mrb = b.pd.reg_mr(dst.addr(), 40_000, all_access()).unwrap();
    set_rule(&a, nth(3, |p| matches!(p.bth.opcode.op(), Op::WriteMiddle)));
    qa.post_send(&[SendWr {
        wr_id: 1,
        sg_list: &[src.sge(&mra, 0, 40_000)],
        op: SendOp::Write {
            remote_addr: dst.addr(),
            rkey: mrb.rkey(),
        },
        flags: signaled(),
        ud: None,
    }])
    .unwrap();
    assert_eq!(wait(&a.cq, 1)[0].status, WcStatus::Success);
    assert_eq!(dst.0, src.0);
    assert_eq!(a.lossy.dropped.load(Ordering::SeqCst), 1);
    assert!(b.dev.stats().out_of_sequence >= 1);
    assert_eq!(b.dev.stats().nak_sent_seq_err, 1, "one NAK per gap");
    assert!(a.dev.stats().nak_rcvd_seq_err >= 1);
}

/// The requester's own receive thread stalls for 40 ms (a loaded machine)
/// while the ACK it waits for sits in its queue. Eight fixed 1 ms timeouts
/// gave up after ~8 ms with retry-exceeded (found by the 256 MiB fault
/// tests on a busy 2-core machine: 70 ms without the CPU); doubling waits
/// (1, 2, 4, … 32 ms) outlast the stall.
#[test]
fn backed_off_timeouts_outlast_a_stalled_receive_thread() {
    let (a, b) = pair();
    let (qa, _qb) = connect(&a, &b); // timeout ≈ 1 ms, retry_cnt 7
    let src = Buf::new(4096, |i| i as u8);
    let dst = Buf::new(4096, |_| 0);
    let mra = a.pd.reg_mr(src.addr(), 4096, Access::LOCAL_WRITE).unwrap();
    let mrb = b.pd.reg_mr(dst.addr(), 4096, all_access()).unwrap();
    let write = |id: u64| {
        qa.post_send(&[SendWr {
            wr_id: id,
            sg_list: &[src.sge(&mra, 0, 4096)],
            op: SendOp::Write {
                remote_addr: dst.addr(),
                rkey: mrb.rkey(),
            },
            flags: signaled(),
            ud: None,
        }])
        .unwrap()
    };
    write(1);
    assert_eq!(wait(&a.cq, 1)[0].status, WcStatus::Success);
    // Taken by the receive after the one now blocked: once WRITE 2's ACK is in.
    *a.lossy.stall.lock().unwrap() = Some(Duration::from_millis(40));
    write(2);
    assert_eq!(wait(&a.cq, 1)[0].status, WcStatus::Success);
    write(3);
    let c = wait(&a.cq, 1)[0];
    let st = a.dev.stats();
    assert_eq!((c.wr_id, c.status), (3, WcStatus::Success), "{st}");
    assert!(st.local_ack_timeouts >= 1, "the stall cost timeouts: {st}");
    assert_eq!(st.retry_exceeded, 0);
    assert_eq!(dst.0, src.0);
}

#[test]
fn at_most_128_psns_are_unacknowledged_and_duplicates_get_one_ack_per_batch() {
    let (a, b) = pair();
    // timeout 18: 4.096 µs × 2^18 ≈ 1.07 s, far past the 30 ms below even
    // on a loaded machine (at 67 ms a descheduled test thread saw the
    // timeout's go-back-N resend the window).
    let (qa, _qb) = connect_with(&a, &b, QpType::Rc, 7, 7, 18);
    let len = 1 << 20; // 1024 packets at MTU 1024
    let src = Buf::new(len, |i| (i * 7) as u8);
    let dst = Buf::new(len, |_| 0);
    let mra =
        a.pd.reg_mr(src.addr(), len as u64, Access::LOCAL_WRITE)
            .unwrap();
    let mrb = b.pd.reg_mr(dst.addr(), len as u64, all_access()).unwrap();
    set_rule(&b, |p| p.bth.opcode.op() == Op::Ack); // no ACK gets through
    qa.post_send(&[SendWr {
        wr_id: 1,
        sg_list: &[src.sge(&mra, 0, len)],
        op: SendOp::Write {
            remote_addr: dst.addr(),
            rkey: mrb.rkey(),
        },
        flags: signaled(),
        ud: None,
    }])
    .unwrap();
    std::thread::sleep(Duration::from_millis(30));
    // The window stops the requester without ACKs: the responder saw no
    // more than 128 new PSNs (loss probes, or a timeout's go-back-N on a
    // loaded machine, only repeat them).
    let (sa, sb) = (a.dev.stats(), b.dev.stats());
    assert!(sa.sent_pkts >= 128, "{sa}");
    assert!(
        sb.rcvd_pkts - sb.duplicate_requests <= 128,
        "past the window: {sb}"
    );
    set_rule(&b, |_| false);
    // A probe (one packet, a duplicate now) or the timeout (the 128) is
    // answered; the ACK opens the window.
    assert_eq!(wait(&a.cq, 1)[0].status, WcStatus::Success);
    assert!(dst.0 == src.0);
    let (sa, sb) = (a.dev.stats(), b.dev.stats());
    assert!(sa.local_ack_timeouts <= 1, "{sa}");
    assert!(sa.loss_probes >= 1, "{sa}");
    assert!(
        sb.duplicate_requests <= 128 * sa.local_ack_timeouts + sa.loss_probes,
        "{sb}"
    );
    // ACKs: one per 64 packets and per window edge, plus the duplicates'
    // coalesced ones — not one per duplicate.
    assert!(sb.sent_pkts < 64, "{sb}");
}

#[test]
fn lost_ack_is_recovered_by_timeout_and_the_duplicate_is_only_acknowledged() {
    let (a, b) = pair();
    let (qa, qb) = connect(&a, &b);
    let src = Buf::new(3000, |i| i as u8);
    let dst = Buf::new(3000, |_| 0);
    let mra = a.pd.reg_mr(src.addr(), 3000, Access::LOCAL_WRITE).unwrap();
    let mrb = b.pd.reg_mr(dst.addr(), 3000, Access::LOCAL_WRITE).unwrap();
    qb.post_recv(&[RecvWr {
        wr_id: 5,
        sg_list: &[dst.sge(&mrb, 0, 3000)],
    }])
    .unwrap();
    set_rule(&b, nth(0, |p| p.bth.opcode.op() == Op::Ack));
    qa.post_send(&[SendWr {
        wr_id: 1,
        sg_list: &[src.sge(&mra, 0, 3000)],
        op: SendOp::Send,
        flags: signaled(),
        ud: None,
    }])
    .unwrap();
    assert_eq!(wait(&a.cq, 1)[0].status, WcStatus::Success);
    let r = wait(&b.cq, 1);
    assert_eq!((r[0].wr_id, r[0].byte_len), (5, 3000));
    assert!(a.dev.stats().retransmits >= 1);
    assert!(b.dev.stats().duplicate_requests >= 1);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(
        b.cq.poll(&mut [r[0]; 4]),
        0,
        "the duplicate SEND delivered nothing twice"
    );
}

#[test]
fn lost_read_response_is_requested_again() {
    let (a, b) = pair();
    // A long timeout (≈1 s): recovery must not wait for it.
    let (qa, _qb) = connect_with(&a, &b, QpType::Rc, 7, 7, 18);
    let local = Buf::new(10_000, |_| 0);
    let remote = Buf::new(10_000, |i| (i * 3) as u8);
    let mra =
        a.pd.reg_mr(local.addr(), 10_000, Access::LOCAL_WRITE)
            .unwrap();
    let mrb = b.pd.reg_mr(remote.addr(), 10_000, all_access()).unwrap();
    set_rule(
        &b,
        nth(4, |p| matches!(p.bth.opcode.op(), Op::ReadRespMiddle)),
    );
    qa.post_send(&[SendWr {
        wr_id: 1,
        sg_list: &[local.sge(&mra, 0, 10_000)],
        op: SendOp::Read {
            remote_addr: remote.addr(),
            rkey: mrb.rkey(),
        },
        flags: signaled(),
        ud: None,
    }])
    .unwrap();
    assert_eq!(wait(&a.cq, 1)[0].status, WcStatus::Success);
    assert_eq!(local.0, remote.0);
    let st = a.dev.stats();
    // A loss probe may fire too when the machine delays the responses.
    assert_eq!(
        (st.retransmits - st.loss_probes, st.local_ack_timeouts),
        (1, 0),
        "the response after the gap asks again at once, no timeout: {st}"
    );
}

#[test]
fn an_atomic_waiting_for_its_replay_counts_against_max_rd_atomic() {
    let (a, b) = pair();
    let (qa, _qb) = connect(&a, &b); // max_rd_atomic = max_dest_rd_atomic = 8
    const N: usize = 40;
    let local = Buf::new(N * 8, |_| 0xff);
    let remote = Buf::new(64, |_| 0);
    let mra =
        a.pd.reg_mr(local.addr(), (N * 8) as u64, Access::LOCAL_WRITE)
            .unwrap();
    let mrb = b.pd.reg_mr(remote.addr(), 64, all_access()).unwrap();
    // The first atomic's ACK is lost, and so is its first replay: the
    // requester must not run more than 8 atomics past it, or the
    // responder forgets its result (8 records) and never answers again.
    set_rule(&b, {
        let mut n = 0;
        move |p| {
            if p.bth.opcode.op() == Op::AtomicAck && p.bth.psn == 0xfffff0 {
                n += 1;
                return n <= 2;
            }
            false
        }
    });
    let sges: Vec<Sge> = (0..N).map(|i| local.sge(&mra, i * 8, 8)).collect();
    let wrs: Vec<SendWr<'_>> = (0..N)
        .map(|i| SendWr {
            wr_id: i as u64,
            sg_list: std::slice::from_ref(&sges[i]),
            op: SendOp::FetchAdd {
                remote_addr: remote.addr(),
                rkey: mrb.rkey(),
                add: 1,
            },
            flags: signaled(),
            ud: None,
        })
        .collect();
    qa.post_send(&wrs).unwrap();
    let c = wait(&a.cq, N);
    for (i, w) in c.iter().enumerate() {
        assert_eq!((w.wr_id, w.status), (i as u64, WcStatus::Success), "{c:?}");
        let got = u64::from_ne_bytes(local.0[i * 8..i * 8 + 8].try_into().unwrap());
        assert_eq!(got, i as u64);
    }
    assert_eq!(
        u64::from_ne_bytes(remote.0[..8].try_into().unwrap()),
        N as u64
    );
}

#[test]
fn lost_atomic_ack_followed_by_another_is_asked_again_without_a_timeout() {
    let (a, b) = pair();
    // A long timeout: recovering through it would take a second.
    let (qa, _qb) = connect_with(&a, &b, QpType::Rc, 7, 7, 18);
    let local = Buf::new(64, |_| 0);
    let remote = Buf::new(64, |_| 0);
    let mra = a.pd.reg_mr(local.addr(), 64, Access::LOCAL_WRITE).unwrap();
    let mrb = b.pd.reg_mr(remote.addr(), 64, all_access()).unwrap();
    set_rule(&b, nth(2, |p| p.bth.opcode.op() == Op::AtomicAck));
    let sges: Vec<Sge> = (0..8).map(|i| local.sge(&mra, i * 8, 8)).collect();
    let wrs: Vec<SendWr<'_>> = (0..8u64)
        .map(|i| SendWr {
            wr_id: i,
            sg_list: std::slice::from_ref(&sges[i as usize]),
            op: SendOp::FetchAdd {
                remote_addr: remote.addr(),
                rkey: mrb.rkey(),
                add: 1,
            },
            flags: signaled(),
            ud: None,
        })
        .collect();
    let t = std::time::Instant::now();
    qa.post_send(&wrs).unwrap();
    let c = wait(&a.cq, 8);
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    for (i, w) in c.iter().enumerate() {
        assert_eq!((w.wr_id, w.status), (i as u64, WcStatus::Success));
        let got = u64::from_ne_bytes(local.0[i * 8..i * 8 + 8].try_into().unwrap());
        assert_eq!(got, i as u64, "fetched the value before it");
    }
    assert_eq!(u64::from_ne_bytes(remote.0[..8].try_into().unwrap()), 8);
    let (sa, sb) = (a.dev.stats(), b.dev.stats());
    assert_eq!(sa.local_ack_timeouts, 0, "{sa}");
    assert!(
        sa.retransmits >= 1 && sb.duplicate_requests >= 1,
        "{sa}{sb}"
    );
}

#[test]
fn lost_atomic_ack_is_replayed_never_executed_twice() {
    let (a, b) = pair();
    let (qa, _qb) = connect(&a, &b);
    let local = Buf::new(64, |_| 0);
    let remote = Buf::new(64, |_| 0);
    let mra = a.pd.reg_mr(local.addr(), 64, Access::LOCAL_WRITE).unwrap();
    let mrb = b.pd.reg_mr(remote.addr(), 64, all_access()).unwrap();
    set_rule(&b, {
        let mut n = 0;
        move |p| {
            if p.bth.opcode.op() == Op::AtomicAck {
                n += 1;
                return n % 3 == 1; // lose every third atomic ACK
            }
            false
        }
    });
    for i in 0..30u64 {
        qa.post_send(&[SendWr {
            wr_id: i,
            sg_list: &[local.sge(&mra, 0, 8)],
            op: SendOp::FetchAdd {
                remote_addr: remote.addr(),
                rkey: mrb.rkey(),
                add: 1,
            },
            flags: signaled(),
            ud: None,
        }])
        .unwrap();
        let c = wait(&a.cq, 1);
        assert_eq!(c[0].status, WcStatus::Success);
        assert_eq!(
            u64::from_ne_bytes(local.0[..8].try_into().unwrap()),
            i,
            "fetched the value before this add"
        );
    }
    assert_eq!(
        u64::from_ne_bytes(remote.0[..8].try_into().unwrap()),
        30,
        "each add executed exactly once"
    );
    assert!(b.lossy.dropped.load(Ordering::SeqCst) >= 10);
}

#[test]
fn rnr_nak_then_retry_succeeds_once_a_receive_is_posted() {
    let (a, b) = pair();
    let (qa, qb) = connect(&a, &b);
    let src = Buf::new(100, |i| i as u8);
    let dst = Buf::new(100, |_| 0);
    let mra = a.pd.reg_mr(src.addr(), 100, Access::LOCAL_WRITE).unwrap();
    let mrb = b.pd.reg_mr(dst.addr(), 100, Access::LOCAL_WRITE).unwrap();
    qa.post_send(&[SendWr {
        wr_id: 1,
        sg_list: &[src.sge(&mra, 0, 100)],
        op: SendOp::Send,
        flags: signaled(),
        ud: None,
    }])
    .unwrap();
    std::thread::sleep(Duration::from_millis(30));
    assert!(b.dev.stats().rnr_nak_sent >= 1);
    assert!(a.dev.stats().rnr_nak_rcvd >= 1);
    qb.post_recv(&[RecvWr {
        wr_id: 9,
        sg_list: &[dst.sge(&mrb, 0, 100)],
    }])
    .unwrap();
    assert_eq!(wait(&a.cq, 1)[0].status, WcStatus::Success);
    assert_eq!(wait(&b.cq, 1)[0].wr_id, 9);
    assert_eq!(dst.0, src.0);
}

#[test]
fn rnr_retry_exhausted_ends_in_error_and_flushes() {
    let (a, b) = pair();
    // A local ACK timeout of 268 ms: at 1 ms a loaded machine's late RNR
    // NAKs met retransmissions, each answered by another RNR NAK.
    let (qa, _qb) = connect_with(&a, &b, QpType::Rc, 2, 7, 16);
    let src = Buf::new(16, |_| 1);
    let mra = a.pd.reg_mr(src.addr(), 16, Access::LOCAL_WRITE).unwrap();
    let wrs: Vec<SendWr<'_>> = (0..3)
        .map(|i| SendWr {
            wr_id: i,
            sg_list: &[],
            op: SendOp::Send,
            flags: signaled(),
            ud: None,
        })
        .collect();
    let _ = &mra;
    qa.post_send(&wrs).unwrap();
    let c = wait(&a.cq, 3);
    assert_eq!((c[0].wr_id, c[0].status), (0, WcStatus::RnrRetryExcErr));
    assert!(
        c[1..].iter().all(|w| w.status == WcStatus::WrFlushErr),
        "{c:?}"
    );
    assert_eq!(qa.state(), QpState::Err);
    let st = a.dev.stats();
    assert_eq!((st.rnr_retries, st.rnr_retry_exceeded), (2, 1), "{st}");
    // A loss probe sent while a late RNR NAK was on its way gets one too.
    let naks = b.dev.stats().rnr_nak_sent;
    assert!((3..=3 + st.loss_probes).contains(&naks), "{naks}: {st}");
}

#[test]
fn retry_exhausted_when_the_peer_never_answers() {
    let (a, b) = pair();
    let (qa, qb) = connect_with(&a, &b, QpType::Rc, 7, 2, 8);
    set_rule(&a, |_| true); // everything A sends is lost
    let src = Buf::new(16, |_| 1);
    let mra = a.pd.reg_mr(src.addr(), 16, Access::LOCAL_WRITE).unwrap();
    qa.post_send(&[
        SendWr {
            wr_id: 1,
            sg_list: &[src.sge(&mra, 0, 16)],
            op: SendOp::Write {
                remote_addr: 0,
                rkey: 0,
            },
            flags: signaled(),
            ud: None,
        },
        SendWr {
            wr_id: 2,
            sg_list: &[src.sge(&mra, 0, 16)],
            op: SendOp::Write {
                remote_addr: 0,
                rkey: 0,
            },
            flags: SendFlags::default(),
            ud: None,
        },
    ])
    .unwrap();
    let c = wait(&a.cq, 2);
    assert_eq!((c[0].wr_id, c[0].status), (1, WcStatus::RetryExcErr));
    assert_eq!(
        (c[1].wr_id, c[1].status),
        (2, WcStatus::WrFlushErr),
        "unsignaled WRs are flushed with a completion too"
    );
    let st = a.dev.stats();
    assert_eq!(st.retransmits, 2);
    assert_eq!((st.local_ack_timeouts, st.retry_exceeded), (3, 1), "{st}");
    assert_eq!(qa.state(), QpState::Err);
    // Posting to a QP in error completes at once with a flush error.
    qa.post_send(&[SendWr {
        wr_id: 3,
        sg_list: &[],
        op: SendOp::Send,
        flags: SendFlags::default(),
        ud: None,
    }])
    .unwrap();
    assert_eq!(wait(&a.cq, 1)[0].status, WcStatus::WrFlushErr);
    drop(qb);
}

#[test]
fn uc_write_and_send_and_a_lost_packet_loses_only_its_message() {
    let (a, b) = pair();
    let (qa, qb) = connect_with(&a, &b, QpType::Uc, 7, 7, 8);
    let src = Buf::new(8192, |i| (i % 199) as u8);
    let dst = Buf::new(16384, |_| 0);
    let mra = a.pd.reg_mr(src.addr(), 8192, Access::LOCAL_WRITE).unwrap();
    let mrb = b.pd.reg_mr(dst.addr(), 16384, all_access()).unwrap();
    qa.post_send(&[SendWr {
        wr_id: 1,
        sg_list: &[src.sge(&mra, 0, 8192)],
        op: SendOp::Write {
            remote_addr: dst.addr(),
            rkey: mrb.rkey(),
        },
        flags: signaled(),
        ud: None,
    }])
    .unwrap();
    assert_eq!(
        wait(&a.cq, 1)[0].status,
        WcStatus::Success,
        "UC completes when sent"
    );
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(&dst.0[..8192], &src.0[..]);
    // Lose the second packet of a 3-packet SEND: that message is lost, the next arrives.
    qb.post_recv(&[
        RecvWr {
            wr_id: 1,
            sg_list: &[dst.sge(&mrb, 8192, 4096)],
        },
        RecvWr {
            wr_id: 2,
            sg_list: &[dst.sge(&mrb, 12288, 4096)],
        },
    ])
    .unwrap();
    set_rule(&a, nth(0, |p| p.bth.opcode.op() == Op::SendMiddle));
    qa.post_send(&[
        SendWr {
            wr_id: 2,
            sg_list: &[src.sge(&mra, 0, 3000)],
            op: SendOp::Send,
            flags: SendFlags::default(),
            ud: None,
        },
        SendWr {
            wr_id: 3,
            sg_list: &[src.sge(&mra, 100, 500)],
            op: SendOp::SendImm(77),
            flags: SendFlags::default(),
            ud: None,
        },
    ])
    .unwrap();
    let r = wait(&b.cq, 1);
    assert_eq!(
        (r[0].byte_len, r[0].imm),
        (500, Some(77)),
        "only the intact message is delivered"
    );
    assert_eq!(
        r[0].wr_id, 1,
        "the lost message's receive WQE is not consumed: it serves the next message"
    );
    assert_eq!(&dst.0[8192..8692], &src.0[100..600]);
}

#[test]
fn ud_send_carries_a_grh_and_the_source_qp() {
    let (a, b) = pair();
    let (qa, qb) = connect_with(&a, &b, QpType::Ud, 7, 7, 8);
    let src = Buf::new(512, |i| i as u8);
    let dst = Buf::new(40 + 1024, |_| 0);
    let mra = a.pd.reg_mr(src.addr(), 512, Access::LOCAL_WRITE).unwrap();
    let mrb = b.pd.reg_mr(dst.addr(), 1064, Access::LOCAL_WRITE).unwrap();
    qb.post_recv(&[RecvWr {
        wr_id: 4,
        sg_list: &[dst.sge(&mrb, 0, 1064)],
    }])
    .unwrap();
    let ah = a.pd.create_ah(b.dev.gid(1).unwrap());
    let ud = UdDest {
        ah,
        remote_qpn: qb.qp_num(),
        remote_qkey: 7,
    };
    qa.post_send(&[SendWr {
        wr_id: 1,
        sg_list: &[src.sge(&mra, 0, 512)],
        op: SendOp::SendImm(5),
        flags: signaled(),
        ud: Some(ud.clone()),
    }])
    .unwrap();
    assert_eq!(wait(&a.cq, 1)[0].status, WcStatus::Success);
    let r = wait(&b.cq, 1);
    assert_eq!(
        (r[0].byte_len, r[0].src_qp, r[0].grh, r[0].imm),
        (552, qa.qp_num(), true, Some(5))
    );
    assert_eq!(&dst.0[40..552], &src.0[..]);
    assert_eq!(&dst.0[8..24], &a.dev.gid(1).unwrap().0, "GRH source GID");
    // A wrong Q_Key is dropped.
    qb.post_recv(&[RecvWr {
        wr_id: 5,
        sg_list: &[dst.sge(&mrb, 0, 1064)],
    }])
    .unwrap();
    let bad = UdDest {
        remote_qkey: 8,
        ..ud
    };
    qa.post_send(&[SendWr {
        wr_id: 2,
        sg_list: &[src.sge(&mra, 0, 512)],
        op: SendOp::Send,
        flags: signaled(),
        ud: Some(bad),
    }])
    .unwrap();
    wait(&a.cq, 1);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(b.cq.poll(&mut [r[0]; 2]), 0);
}

#[test]
fn srq_serves_several_qps_and_raises_its_limit_event_once() {
    let (a, b) = pair();
    let srq = b.pd.create_srq(64, 1, 0).unwrap();
    let mk = |s: &Side, srq: Option<Srq>| {
        s.pd.create_qp(QpInitAttr {
            qp_type: QpType::Rc,
            send_cq: s.cq.clone(),
            recv_cq: s.cq.clone(),
            cap: cap(),
            sq_sig_all: false,
            srq,
        })
        .unwrap()
    };
    let dst = Buf::new(64 * 256, |_| 0);
    let mrb =
        b.pd.reg_mr(dst.addr(), dst.0.len() as u64, Access::LOCAL_WRITE)
            .unwrap();
    let wrs: Vec<[Sge; 1]> = (0..8).map(|i| [dst.sge(&mrb, i * 256, 256)]).collect();
    let posts: Vec<RecvWr<'_>> = wrs
        .iter()
        .enumerate()
        .map(|(i, s)| RecvWr {
            wr_id: 100 + i as u64,
            sg_list: s,
        })
        .collect();
    srq.post_recv(&posts).unwrap();
    srq.set_limit(5).unwrap();
    let src = Buf::new(256, |i| i as u8);
    let mra = a.pd.reg_mr(src.addr(), 256, Access::LOCAL_WRITE).unwrap();
    let mut pairs = Vec::new();
    for _ in 0..2 {
        let (qa, qb) = (mk(&a, None), mk(&b, Some(srq.clone())));
        for (q, peer, dev) in [(&qa, &qb, &b.dev), (&qb, &qa, &a.dev)] {
            QpConfig::minimal(QpType::Rc).bring_up(q, peer.qp_num(), dev.gid(1).unwrap());
        }
        assert_eq!(
            qb.post_recv(&[RecvWr {
                wr_id: 0,
                sg_list: &[]
            }])
            .err()
            .map(|e| e.1),
            Some(Errno::EINVAL),
            "a QP with an SRQ has no receive queue"
        );
        pairs.push((qa, qb));
    }
    for (i, (qa, _)) in pairs.iter().cycle().take(4).enumerate() {
        qa.post_send(&[SendWr {
            wr_id: i as u64,
            sg_list: &[src.sge(&mra, 0, 256)],
            op: SendOp::Send,
            flags: signaled(),
            ud: None,
        }])
        .unwrap();
        assert_eq!(wait(&a.cq, 1)[0].status, WcStatus::Success);
    }
    let got = wait(&b.cq, 4);
    let mut ids: Vec<u64> = got.iter().map(|w| w.wr_id).collect();
    ids.sort();
    assert_eq!(
        ids,
        vec![100, 101, 102, 103],
        "both QPs consumed the shared queue in order"
    );
    assert_eq!(srq.len(), 4);
    assert_eq!(
        b.dev.get_async_event(),
        Some(AsyncEvent::SrqLimitReached { srq: srq.id() }),
        "8 -> 4 crossed the limit of 5"
    );
    assert_eq!(
        b.dev.get_async_event(),
        None,
        "once: the limit is disarmed after firing"
    );
}

#[test]
fn completion_channel_fd_becomes_readable_when_an_armed_cq_completes() {
    let (a, b) = pair();
    let ch = CompChannel::new().unwrap();
    let cq = Cq::new(16, Some(&ch)).unwrap();
    let qa =
        a.pd.create_qp(QpInitAttr {
            qp_type: QpType::Rc,
            send_cq: cq.clone(),
            recv_cq: cq.clone(),
            cap: cap(),
            sq_sig_all: true,
            srq: None,
        })
        .unwrap();
    let qb =
        b.pd.create_qp(QpInitAttr {
            qp_type: QpType::Rc,
            send_cq: b.cq.clone(),
            recv_cq: b.cq.clone(),
            cap: cap(),
            sq_sig_all: false,
            srq: None,
        })
        .unwrap();
    for (q, peer, dev) in [(&qa, &qb, &b.dev), (&qb, &qa, &a.dev)] {
        QpConfig::minimal(QpType::Rc).bring_up(q, peer.qp_num(), dev.gid(1).unwrap());
    }
    let readable = |ms: i32| {
        use std::os::fd::AsRawFd;
        let mut p = libc::pollfd {
            fd: ch.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one live pollfd for the duration of the call.
        unsafe { libc::poll(&mut p, 1, ms) == 1 }
    };
    let buf = Buf::new(8, |_| 1);
    let mr = b.pd.reg_mr(buf.addr(), 8, all_access()).unwrap();
    cq.req_notify(false).unwrap();
    assert!(!readable(0));
    qa.post_send(&[SendWr {
        wr_id: 1,
        sg_list: &[],
        op: SendOp::Write {
            remote_addr: buf.addr(),
            rkey: mr.rkey(),
        },
        flags: signaled(),
        ud: None,
    }])
    .unwrap();
    assert!(
        readable(5000),
        "an armed CQ's completion makes the channel readable"
    );
    assert!(ch.get_event().is_some());
    assert!(!readable(0), "drained by get_event");
    assert_eq!(wait(&cq, 1)[0].wr_id, 1);
    // Not armed again: the next completion does not wake the channel.
    qa.post_send(&[SendWr {
        wr_id: 2,
        sg_list: &[],
        op: SendOp::Write {
            remote_addr: buf.addr(),
            rkey: mr.rkey(),
        },
        flags: signaled(),
        ud: None,
    }])
    .unwrap();
    wait(&cq, 1);
    assert!(!readable(50));
}

/// Regression (found by `softrdma perf read_bw -a -q 2 --verify`): after a
/// go-back-N, a READ that had already finished behind an unfinished one was
/// transmitted again with a PSN past its range; the responder took that as a
/// new zero-length READ, and a later READ's first page was never written.
#[test]
fn go_back_n_does_not_resend_reads_that_already_finished() {
    let (a, b) = pair();
    let (qa, _qb) = connect(&a, &b);
    let remote = Buf::new(64 * 1024, |i| (i * 7 + i / 4096) as u8);
    let local = Buf::new(64 * 1024, |_| 0xee);
    let mra =
        a.pd.reg_mr(local.addr(), local.0.len() as u64, Access::LOCAL_WRITE)
            .unwrap();
    let mrb =
        b.pd.reg_mr(remote.addr(), remote.0.len() as u64, all_access())
            .unwrap();
    // READ A (8 KiB, 8 packets), READ B (1 KiB): lose one of A's responses so
    // that B finishes first and A times out.
    set_rule(&b, nth(2, |p| p.bth.opcode.op() == Op::ReadRespMiddle));
    qa.post_send(&[
        SendWr {
            wr_id: 1,
            sg_list: &[local.sge(&mra, 0, 8192)],
            op: SendOp::Read {
                remote_addr: remote.addr(),
                rkey: mrb.rkey(),
            },
            flags: signaled(),
            ud: None,
        },
        SendWr {
            wr_id: 2,
            sg_list: &[local.sge(&mra, 8192, 1024)],
            op: SendOp::Read {
                remote_addr: remote.addr() + 8192,
                rkey: mrb.rkey(),
            },
            flags: signaled(),
            ud: None,
        },
    ])
    .unwrap();
    let c = wait(&a.cq, 2);
    assert!(c.iter().all(|w| w.status == WcStatus::Success), "{c:?}");
    // READ C afterwards: every byte must arrive.
    qa.post_send(&[SendWr {
        wr_id: 3,
        sg_list: &[local.sge(&mra, 16384, 16384)],
        op: SendOp::Read {
            remote_addr: remote.addr() + 16384,
            rkey: mrb.rkey(),
        },
        flags: signaled(),
        ud: None,
    }])
    .unwrap();
    assert_eq!(wait(&a.cq, 1)[0].status, WcStatus::Success);
    let differ =
        |r: std::ops::Range<usize>| r.clone().filter(|&i| local.0[i] != remote.0[i]).count();
    assert_eq!(differ(0..9216), 0, "READs A and B");
    assert_eq!(differ(16384..32768), 0, "READ C: every page written");
}

#[test]
fn bad_lkey_is_a_local_protection_error() {
    let (a, b) = pair();
    let (qa, _qb) = connect(&a, &b);
    let buf = Buf::new(64, |_| 0);
    let mrb = b.pd.reg_mr(buf.addr(), 64, all_access()).unwrap();
    let bad = Sge {
        addr: buf.addr(),
        length: 16,
        lkey: 0x0bad_0bad,
    };
    qa.post_send(&[
        SendWr {
            wr_id: 1,
            sg_list: &[bad],
            op: SendOp::Write {
                remote_addr: buf.addr(),
                rkey: mrb.rkey(),
            },
            flags: signaled(),
            ud: None,
        },
        SendWr {
            wr_id: 2,
            sg_list: &[],
            op: SendOp::Send,
            flags: SendFlags::default(),
            ud: None,
        },
    ])
    .unwrap();
    let c = wait(&a.cq, 2);
    assert_eq!((c[0].wr_id, c[0].status), (1, WcStatus::LocProtErr));
    assert_eq!((c[1].wr_id, c[1].status), (2, WcStatus::WrFlushErr));
    assert_eq!(qa.state(), QpState::Err);
    assert_eq!(
        a.dev.get_async_event(),
        Some(AsyncEvent::QpFatal { qpn: qa.qp_num() })
    );
}

#[test]
fn sqd_holds_new_sends_reports_drained_and_rts_resumes() {
    let (a, b) = pair();
    let (qa, _qb) = connect(&a, &b);
    let dst = Buf::new(64, |_| 0);
    let mrb = b.pd.reg_mr(dst.addr(), 64, all_access()).unwrap();
    qa.modify(&QpAttr {
        state: Some(QpState::Sqd),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(
        a.dev.get_async_event(),
        Some(AsyncEvent::SqDrained { qpn: qa.qp_num() }),
        "nothing in flight: drained at once"
    );
    let src = Buf::new(8, |_| 7);
    let mra = a.pd.reg_mr(src.addr(), 8, Access::LOCAL_WRITE).unwrap();
    qa.post_send(&[SendWr {
        wr_id: 1,
        sg_list: &[src.sge(&mra, 0, 8)],
        op: SendOp::Write {
            remote_addr: dst.addr(),
            rkey: mrb.rkey(),
        },
        flags: signaled(),
        ud: None,
    }])
    .unwrap();
    std::thread::sleep(Duration::from_millis(30));
    assert!(dst.0.iter().all(|&x| x == 0), "SQD sends nothing new");
    qa.modify(&QpAttr {
        state: Some(QpState::Rts),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(wait(&a.cq, 1)[0].status, WcStatus::Success);
    assert_eq!(&dst.0[..8], &src.0[..]);
}

#[test]
fn ud_local_send_error_moves_to_sqe_receives_go_on_and_rts_recovers() {
    let (a, b) = pair();
    let (qa, qb) = connect_with(&a, &b, QpType::Ud, 7, 7, 8);
    let buf = Buf::new(2048, |i| i as u8);
    let mra = a.pd.reg_mr(buf.addr(), 2048, Access::LOCAL_WRITE).unwrap();
    let mrb = b.pd.reg_mr(buf.addr(), 2048, Access::LOCAL_WRITE).unwrap();
    let to_b = UdDest {
        ah: a.pd.create_ah(b.dev.gid(1).unwrap()),
        remote_qpn: qb.qp_num(),
        remote_qkey: 7,
    };
    let bad = Sge {
        addr: buf.addr(),
        length: 16,
        lkey: 0x0bad_0bad,
    };
    qa.post_send(&[
        SendWr {
            wr_id: 1,
            sg_list: &[bad],
            op: SendOp::Send,
            flags: signaled(),
            ud: Some(to_b.clone()),
        },
        SendWr {
            wr_id: 2,
            sg_list: &[],
            op: SendOp::Send,
            flags: SendFlags::default(),
            ud: Some(to_b.clone()),
        },
    ])
    .unwrap();
    let c = wait(&a.cq, 2);
    assert_eq!(
        (c[0].status, c[1].status),
        (WcStatus::LocProtErr, WcStatus::WrFlushErr)
    );
    assert_eq!(
        qa.state(),
        QpState::Sqe,
        "UD: send queue error, not the error state"
    );
    // The receive side of the SQE QP still works.
    qa.post_recv(&[RecvWr {
        wr_id: 9,
        sg_list: &[buf.sge(&mra, 0, 1024)],
    }])
    .unwrap();
    let to_a = UdDest {
        ah: b.pd.create_ah(a.dev.gid(1).unwrap()),
        remote_qpn: qa.qp_num(),
        remote_qkey: 7,
    };
    qb.post_send(&[SendWr {
        wr_id: 3,
        sg_list: &[buf.sge(&mrb, 1024, 100)],
        op: SendOp::Send,
        flags: signaled(),
        ud: Some(to_a),
    }])
    .unwrap();
    wait(&b.cq, 1);
    assert_eq!(wait(&a.cq, 1)[0].wr_id, 9, "received while in SQE");
    // SQE -> RTS: sending works again.
    qa.modify(&QpAttr {
        state: Some(QpState::Rts),
        ..Default::default()
    })
    .unwrap();
    qa.post_send(&[SendWr {
        wr_id: 4,
        sg_list: &[buf.sge(&mra, 0, 8)],
        op: SendOp::Send,
        flags: signaled(),
        ud: Some(to_b),
    }])
    .unwrap();
    assert_eq!(wait(&a.cq, 1)[0].status, WcStatus::Success);
}

#[test]
fn a_uc_send_with_no_receive_posted_is_dropped_without_an_answer() {
    let (a, b) = pair();
    let (qa, qb) = connect_with(&a, &b, QpType::Uc, 7, 7, 8);
    let src = Buf::new(4096, |i| (i % 97) as u8);
    let dst = Buf::new(4096, |_| 0);
    let mra = a.pd.reg_mr(src.addr(), 4096, Access::LOCAL_WRITE).unwrap();
    let mrb = b.pd.reg_mr(dst.addr(), 4096, all_access()).unwrap();
    let send = |wr_id, off| SendWr {
        wr_id,
        sg_list: &[],
        op: SendOp::SendImm(off),
        flags: signaled(),
        ud: None,
    };
    let sent_before = b.dev.stats().sent_pkts;
    let dropped_before = b.dev.stats().uc_dropped;
    qa.post_send(&[SendWr {
        sg_list: &[src.sge(&mra, 0, 100)],
        ..send(1, 1)
    }])
    .unwrap();
    assert_eq!(wait(&a.cq, 1)[0].status, WcStatus::Success);
    let end = std::time::Instant::now() + Duration::from_secs(5);
    while b.dev.stats().uc_dropped == dropped_before && std::time::Instant::now() < end {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(b.dev.stats().uc_dropped, dropped_before + 1, "counted");
    assert_eq!(
        b.dev.stats().sent_pkts,
        sent_before,
        "UC answers nothing (no RNR NAK)"
    );
    // The next message, with a receive posted, arrives.
    qb.post_recv(&[RecvWr {
        wr_id: 9,
        sg_list: &[dst.sge(&mrb, 0, 4096)],
    }])
    .unwrap();
    qa.post_send(&[SendWr {
        sg_list: &[src.sge(&mra, 0, 200)],
        ..send(2, 2)
    }])
    .unwrap();
    assert_eq!(wait(&a.cq, 1)[0].status, WcStatus::Success);
    let r = wait(&b.cq, 1);
    assert_eq!((r[0].wr_id, r[0].byte_len, r[0].imm), (9, 200, Some(2)));
    assert_eq!(&dst.0[..200], &src.0[..200]);
}

/// A 40-packet WRITE (MTU 1024) whose packets `lose` picks are dropped.
fn write_losing(
    a: &Side,
    b: &Side,
    qa: &Qp,
    lose: impl FnMut(&PacketRepr) -> bool + Send + 'static,
) -> (Buf, Buf) {
    let len = 40_000;
    let src = Buf::new(len, |i| (i * 11) as u8);
    let dst = Buf::new(len, |_| 0);
    let mra =
        a.pd.reg_mr(src.addr(), len as u64, Access::LOCAL_WRITE)
            .unwrap();
    let mrb = b.pd.reg_mr(dst.addr(), len as u64, all_access()).unwrap();
    set_rule(a, lose);
    qa.post_send(&[SendWr {
        wr_id: 1,
        sg_list: &[src.sge(&mra, 0, len)],
        op: SendOp::Write {
            remote_addr: dst.addr(),
            rkey: mrb.rkey(),
        },
        flags: signaled(),
        ud: None,
    }])
    .unwrap();
    assert_eq!(wait(&a.cq, 1)[0].status, WcStatus::Success);
    (src, dst)
}

/// The responder holds what follows a lost packet; the sequence NAK makes
/// the requester resend that one packet only, and the WRITE is whole.
#[test]
fn a_lost_packet_is_resent_alone_and_what_followed_it_was_held() {
    let (a, b) = pair();
    // timeout 20: 4.096 µs × 2^20 ≈ 4.3 s: any timeout would show.
    let (qa, _qb) = connect_with(&a, &b, QpType::Rc, 7, 7, 20);
    let (src, dst) = write_losing(
        &a,
        &b,
        &qa,
        nth(0, |p| p.bth.opcode.op() == Op::WriteMiddle),
    );
    assert!(dst.0 == src.0);
    let (sa, sb) = (a.dev.stats(), b.dev.stats());
    assert_eq!(a.lossy.dropped.load(Ordering::SeqCst), 1);
    // A loaded machine may delay the ACKs past a loss probe's time: each
    // probe resends one more packet (and may find it already received).
    let probes = sa.loss_probes;
    assert_eq!(sa.sent_pkts, 40 + 1 + probes, "one packet resent: {sa}");
    if probes == 0 {
        assert_eq!(sb.reorder_held, 38, "the 38 after it were held: {sb}");
        assert_eq!(sb.duplicate_requests, 0, "{sb}");
    }
    assert!(sb.duplicate_requests <= probes, "{sb}");
    assert_eq!(sb.reorder_run, sb.reorder_held, "{sb}");
    assert_eq!(sa.local_ack_timeouts, 0, "{sa}");
}

/// A lost last packet shows the responder no gap, so no NAK comes: the
/// loss probe resends it long before the QP's local ACK timeout (here
/// ≈ 4.3 s; the bound asserted is a quarter of that, far above the probe's
/// milliseconds), and no retry is spent.
#[test]
fn a_lost_last_packet_is_recovered_by_a_probe_well_before_the_timeout() {
    let (a, b) = pair();
    let (qa, _qb) = connect_with(&a, &b, QpType::Rc, 7, 1, 20);
    let t = std::time::Instant::now();
    let (src, dst) = write_losing(&a, &b, &qa, nth(0, |p| p.bth.opcode.op() == Op::WriteLast));
    assert!(
        t.elapsed() < Duration::from_millis(1000),
        "{:?}",
        t.elapsed()
    );
    assert!(dst.0 == src.0);
    let sa = a.dev.stats();
    assert!(sa.loss_probes >= 1, "{sa}");
    assert_eq!(sa.local_ack_timeouts, 0, "{sa}");
    assert_eq!(b.dev.stats().reorder_held, 0);
}

/// The probe itself is lost, then the ACK of the next one: probes go on
/// (backing off) and the WRITE completes without a timeout.
#[test]
fn lost_probes_and_a_lost_ack_are_probed_again() {
    let (a, b) = pair();
    let (qa, _qb) = connect_with(&a, &b, QpType::Rc, 7, 1, 20);
    let t = std::time::Instant::now();
    let last = |p: &PacketRepr| p.bth.opcode.op() == Op::WriteLast;
    let mut seen = 0;
    // The last packet and its first copy lost; the ACK of the second copy too.
    set_rule(&b, nth(0, |p| p.bth.opcode.op() == Op::Ack));
    let (src, dst) = write_losing(&a, &b, &qa, move |p| {
        if last(p) {
            seen += 1;
        }
        last(p) && seen <= 2
    });
    assert!(
        t.elapsed() < Duration::from_millis(1000),
        "{:?}",
        t.elapsed()
    );
    assert!(dst.0 == src.0);
    let sa = a.dev.stats();
    assert!(sa.loss_probes >= 3, "{sa}");
    assert_eq!(sa.local_ack_timeouts, 0, "{sa}");
    assert_eq!(a.lossy.dropped.load(Ordering::SeqCst), 2);
    assert_eq!(b.lossy.dropped.load(Ordering::SeqCst), 1);
}

/// What a side sent: (opcode, PSN) of every packet, and the rule's picks
/// dropped (`drop` sees the packet and how many matched `pred` before).
fn recording(
    s: &Side,
    mut drop: impl FnMut(&PacketRepr) -> bool + Send + 'static,
) -> Arc<Mutex<Vec<(Op, u32)>>> {
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    set_rule(s, move |p| {
        l.lock().unwrap().push((p.bth.opcode.op(), p.bth.psn));
        drop(p)
    });
    log
}

/// READs of 40 packets each (MTU 1024) from B into A, every byte checked;
/// the QP's timeout ≈ 4.3 s, far beyond the bound asserted.
fn read_losing(
    a: &Side,
    b: &Side,
    reads: usize,
    lose: impl FnMut(&PacketRepr) -> bool + Send + 'static,
) -> Arc<Mutex<Vec<(Op, u32)>>> {
    let (qa, _qb) = connect_with(a, b, QpType::Rc, 7, 7, 20);
    let len = 40_000;
    let local = Buf::new(len * reads, |_| 0);
    let remote = Buf::new(len * reads, |i| (i * 7 + i / 4096) as u8);
    let mra =
        a.pd.reg_mr(local.addr(), (len * reads) as u64, Access::LOCAL_WRITE)
            .unwrap();
    let mrb =
        b.pd.reg_mr(remote.addr(), (len * reads) as u64, all_access())
            .unwrap();
    let log = recording(b, lose);
    let t = std::time::Instant::now();
    let wrs: Vec<Vec<_>> = (0..reads)
        .map(|r| vec![local.sge(&mra, r * len, len)])
        .collect();
    let wrs: Vec<SendWr> = wrs
        .iter()
        .enumerate()
        .map(|(r, sg)| SendWr {
            wr_id: r as u64,
            sg_list: sg,
            op: SendOp::Read {
                remote_addr: remote.addr() + (r * len) as u64,
                rkey: mrb.rkey(),
            },
            flags: signaled(),
            ud: None,
        })
        .collect();
    qa.post_send(&wrs).unwrap();
    let wcs = wait(&a.cq, reads);
    assert!(wcs.iter().all(|w| w.status == WcStatus::Success), "{wcs:?}");
    assert!(
        t.elapsed() < Duration::from_millis(1000),
        "{:?}",
        t.elapsed()
    );
    assert!(local.0 == remote.0, "every byte read");
    assert_eq!(a.dev.stats().local_ack_timeouts, 0);
    log
}

/// A lost middle READ response: the ones after it are placed as they
/// come, and the first of them asks for the lost one alone — a READ
/// request at its PSN for its 1024 bytes, which the responder answers with
/// that one response (a last: the end of what was asked), not the rest.
#[test]
fn a_lost_read_response_is_asked_for_alone_and_answered_alone() {
    let (a, b) = pair();
    let log = read_losing(
        &a,
        &b,
        1,
        nth(9, |p| p.bth.opcode.op() == Op::ReadRespMiddle),
    );
    let (sa, sb) = (a.dev.stats(), b.dev.stats());
    let log = log.lock().unwrap();
    let lost = log[10].1;
    let probes = sa.loss_probes;
    // A loaded machine may delay responses past a loss probe's time: a
    // probe asks again for what is still missing.
    if probes == 0 {
        assert_eq!(sa.sent_pkts, 2, "the READ and one request again: {sa}");
        assert_eq!(sb.sent_pkts, 41, "40 responses and the lost one: {sb}");
        assert_eq!(log[40], (Op::ReadRespLast, lost), "{log:?}");
        assert_eq!(sb.duplicate_requests, 1, "{sb}");
    }
    assert!(sb.sent_pkts <= 41 + 30 * probes, "{sb}");
}

/// The last response of the first of two READs is lost: the second READ's
/// first response shows it, and only it is asked for again.
#[test]
fn a_lost_last_read_response_is_asked_for_when_the_next_read_answers() {
    let (a, b) = pair();
    let log = read_losing(&a, &b, 2, nth(0, |p| p.bth.opcode.op() == Op::ReadRespLast));
    let (sa, sb) = (a.dev.stats(), b.dev.stats());
    let log = log.lock().unwrap();
    if sa.loss_probes == 0 {
        assert_eq!(sa.sent_pkts, 3, "two READs, one request again: {sa}");
        assert_eq!(sb.sent_pkts, 81, "{sb}");
        assert_eq!(log[80], (Op::ReadRespLast, log[39].1), "{log:?}");
    }
}

/// The request asking again is lost too: the loss probe asks again (for
/// the READ's missing responses only), well before the QP's timeout.
#[test]
fn a_lost_request_for_a_lost_read_response_is_probed() {
    let (a, b) = pair();
    set_rule(&a, nth(1, |p| p.bth.opcode.op() == Op::ReadRequest));
    read_losing(
        &a,
        &b,
        1,
        nth(19, |p| p.bth.opcode.op() == Op::ReadRespMiddle),
    );
    let (sa, sb) = (a.dev.stats(), b.dev.stats());
    assert!(sa.loss_probes >= 1, "{sa}");
    assert_eq!(a.lossy.dropped.load(Ordering::SeqCst), 1);
    // The probe asks from the lost response to the READ's end: 20 at most
    // per probe, never the whole READ again.
    assert!(sb.sent_pkts <= 40 + 20 * sa.loss_probes, "{sb}");
}
