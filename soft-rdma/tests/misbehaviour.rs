//! An application misbehaving while RC traffic is in flight.
//!
//! - A peer that goes away: a `softrdma perf` process SIGKILLed in the middle
//!   of a long write_bw / read_bw / send_bw or a latency test (server side,
//!   then client side), and, in one process, a `Device` dropped (or just the
//!   peer's QP destroyed) while its peer has hundreds of WRs outstanding.
//!   The survivor must not hang: its QP goes to error by retry exhaustion,
//!   the first outstanding WR completes with `RETRY_EXC_ERR`, every later
//!   one with `WR_FLUSH_ERR`, and `perf` exits nonzero with a message saying
//!   so (or that its peer closed the control connection, for a side with
//!   nothing outstanding). The 60 s deadlines detect hangs; they are not
//!   timing assertions.
//! - An MR deregistered while a peer's WRITEs / READs into it are in flight
//!   (pinned, explicit ODP, implicit ODP): as rxe, deregistration is allowed
//!   (it fails only while memory windows are bound, and this device has
//!   none) and waits for accesses under way; after it returns the memory
//!   (which the test keeps mapped) never changes again, the peer's
//!   operations that reach it later complete with `REM_ACCESS_ERR` (QP to
//!   error, the rest flushed), and every operation that completed
//!   successfully did land. On the requester's side, the MR its WRITEs
//!   gather from: `LOC_PROT_ERR`, nothing read after the dereg.
//! - Send completions stay in posting order when a WR fails behind others
//!   still unacknowledged.

use soft_rdma::verbs::*;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use test_support::verbs::{all_access, connect, node, signaled, wait_with, Buf, Node, Wait};

const BIN: &str = env!("CARGO_BIN_EXE_softrdma");

/// Poll `cq` until `n` completions or `limit` (then fail, showing them).
fn wait_for(cq: &Cq, n: usize, limit: Duration) -> Vec<Wc> {
    let how = Wait {
        limit,
        pause: Some(Duration::from_micros(200)),
        ..Wait::default()
    };
    wait_with(cq, n, how, &|out| {
        let ids: std::collections::BTreeSet<u64> = out.iter().map(|w| w.wr_id).collect();
        let first_missing = (0..).find(|i| !ids.contains(i));
        let kinds: Vec<_> = out
            .iter()
            .map(|w| (w.wr_id, w.status))
            .filter(|w| w.1 != WcStatus::WrFlushErr)
            .collect();
        format!("hang: first missing wr_id {first_missing:?}; non-flush: {kinds:?}")
    })
}

/// Completions, in order, must read: `Success`*, one `fail`, `WrFlushErr`*;
/// returns how many succeeded.
fn success_then_error_then_flushed(c: &[Wc], fail: WcStatus) -> usize {
    let ok = c
        .iter()
        .take_while(|w| w.status == WcStatus::Success)
        .count();
    assert!(ok < c.len(), "every WR succeeded: nothing failed");
    assert_eq!(c[ok].status, fail, "first failure: {:?}", c[ok]);
    let bad: Vec<_> = c[ok + 1..]
        .iter()
        .filter(|w| w.status != WcStatus::WrFlushErr)
        .collect();
    assert!(bad.is_empty(), "after the failure, not flushed: {bad:?}");
    // In posting order: wr_ids are 0, 1, 2, ...
    for (i, w) in c.iter().enumerate() {
        assert_eq!(w.wr_id, i as u64, "completions out of order");
    }
    ok
}

// ---------------------------------------------------------------------------
// A peer device that goes away.

#[test]
fn dropping_a_device_fails_the_peers_outstanding_wrs_retry_exceeded_then_flushed() {
    peer_vanishes_with_wrs_outstanding(true);
}

/// The peer's device stays but its QP is destroyed: packets for an unknown
/// QPN are dropped unanswered (as rxe does), with the same outcome.
#[test]
fn destroying_the_peer_qp_fails_the_outstanding_wrs_retry_exceeded_then_flushed() {
    peer_vanishes_with_wrs_outstanding(false);
}

/// A posts 1000 64 KiB WRITEs to B; once the first completes, B's device
/// (`device`) or B's QP goes away.
fn peer_vanishes_with_wrs_outstanding(device: bool) {
    const N: usize = 1000;
    const LEN: usize = 64 << 10;
    let a = node();
    let b = node();
    let (qa, qb) = connect(&a, &b, QpType::Rc);
    let src = Buf::new(N * LEN, |i| (i / LEN) as u8 ^ 0x5a);
    let dst = Buf::new(N * LEN, |_| 0);
    let mra =
        a.pd.reg_mr(src.addr(), src.0.len() as u64, Access::LOCAL_WRITE)
            .unwrap();
    let mrb =
        b.pd.reg_mr(dst.addr(), dst.0.len() as u64, all_access())
            .unwrap();
    let sges: Vec<Sge> = (0..N).map(|i| src.sge(&mra, i * LEN, LEN)).collect();
    let wrs: Vec<SendWr<'_>> = (0..N)
        .map(|i| SendWr {
            wr_id: i as u64,
            sg_list: std::slice::from_ref(&sges[i]),
            op: SendOp::Write {
                remote_addr: dst.addr() + (i * LEN) as u64,
                rkey: mrb.rkey(),
            },
            flags: signaled(),
            ud: None,
        })
        .collect();
    qa.post_send(&wrs).unwrap();
    // Traffic is flowing: then B's device goes (threads joined, socket
    // closed); its QP, PD and MR objects outlive it, as a dead process's
    // would never answer either.
    let mut c = wait_for(&a.cq, 1, Duration::from_secs(60));
    let Node { dev, pd, cq } = b;
    let (dev, qb) = if device {
        drop(dev);
        (None, Some(qb))
    } else {
        drop(qb);
        (Some(dev), None)
    };
    c.extend(wait_for(&a.cq, N - c.len(), Duration::from_secs(60)));
    assert_eq!(c.len(), N, "one completion per WR");
    let ok = success_then_error_then_flushed(&c, WcStatus::RetryExcErr);
    assert!(
        N - ok > 100,
        "only {} WRs were outstanding when the device went",
        N - ok
    );
    assert_eq!(qa.state(), QpState::Err);
    assert_eq!(
        a.dev.get_async_event(),
        Some(AsyncEvent::QpFatal { qpn: qa.qp_num() })
    );
    let st = a.dev.stats();
    assert_eq!(st.retry_exceeded, 1, "{st}");
    // Nothing else arrives: exactly N completions.
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(a.cq.poll(&mut [Wc::EMPTY; 4]), 0);
    // What completed successfully landed.
    for i in 0..ok {
        assert!(
            dst.0[i * LEN..(i + 1) * LEN] == src.0[i * LEN..(i + 1) * LEN],
            "WRITE {i} completed but did not land"
        );
    }
    drop((qb, mrb, pd, cq, dev));
}

/// Start `softrdma perf ARGS`, collecting stdout lines on a channel.
fn spawn_perf(args: &[&str]) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn softrdma");
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out)
            .lines()
            .map_while(std::result::Result::ok)
        {
            let _ = tx.send(l);
        }
    });
    (child, rx)
}

/// Wait for a line containing `what` (a hang detector: 60 s).
fn wait_line(rx: &mpsc::Receiver<String>, what: &str, who: &str) {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(60) {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(l) if l.contains(what) => return,
            Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                panic!("{who} ended before printing {what:?}")
            }
        }
    }
    panic!("{who} never printed {what:?}");
}

/// Wait (at most 60 s: else a hang) for `child` to exit; its status and stderr.
fn finish(mut child: Child, who: &str) -> (std::process::ExitStatus, String) {
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{who} hung: still running 60 s after its peer was killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut err);
    }
    (status, err)
}

fn port(k: u16) -> String {
    // Below the ephemeral range, apart from cli_softrdma's ports.
    (14000 + (std::process::id() % 1000) as u16 * 16 + k).to_string()
}

/// Run TEST between two processes, SIGKILL one side once the run is under
/// way; returns the survivor's exit status and stderr.
fn kill_mid_run(test: &str, kill_server: bool, k: u16) -> (std::process::ExitStatus, String) {
    let p = port(k);
    // Far more iterations than the run can do before the kill.
    let common = ["perf", test, "-p", &p, "-n", "100000000", "-s", "65536"];
    let (mut server, srx) = spawn_perf(&[&common[..], &["--server"]].concat());
    wait_line(&srx, "Waiting for client to connect", "the server");
    let (mut client, crx) = spawn_perf(&[&common[..], &["--client", "127.0.0.1"]].concat());
    // Both print the peer's address once connected, right before running.
    wait_line(&crx, "remote address", "the client");
    wait_line(&srx, "remote address", "the server");
    std::thread::sleep(Duration::from_millis(500));
    let (victim, survivor, who) = if kill_server {
        (&mut server, client, "the client")
    } else {
        (&mut client, server, "the server")
    };
    assert!(
        victim.try_wait().unwrap().is_none(),
        "the run ended before the kill: make it longer"
    );
    victim.kill().unwrap(); // SIGKILL
    victim.wait().unwrap();
    finish(survivor, who)
}

/// The client's message after its server died: retry count exceeded on the
/// oldest outstanding WR, every later one flushed.
fn assert_retry_exceeded_then_flushed(status: std::process::ExitStatus, err: &str) {
    assert!(!status.success(), "exit 0 although the server died: {err}");
    assert_eq!(status.code(), Some(1), "{err}");
    let line = err
        .lines()
        .find(|l| l.contains("completion with error"))
        .unwrap_or_else(|| panic!("no error completion reported: {err}"));
    assert!(line.contains("RetryExcErr"), "{line}");
    // "flushed after it: F of the L work requests posted later"
    let tail = line.split("flushed after it: ").nth(1).expect(line);
    let nums: Vec<u64> = tail
        .split(' ')
        .filter_map(|w| w.parse().ok())
        .take(2)
        .collect();
    assert_eq!(nums.len(), 2, "{line}");
    assert_eq!(nums[0], nums[1], "not every later WR was flushed: {line}");
    assert!(
        !line.contains("completed otherwise"),
        "a later WR completed other than flushed: {line}"
    );
}

#[test]
fn perf_client_survives_its_server_being_killed_mid_write_bw() {
    let (status, err) = kill_mid_run("write_bw", true, 0);
    assert_retry_exceeded_then_flushed(status, &err);
}

#[test]
fn perf_client_survives_its_server_being_killed_mid_read_bw() {
    let (status, err) = kill_mid_run("read_bw", true, 1);
    assert_retry_exceeded_then_flushed(status, &err);
}

#[test]
fn perf_client_survives_its_server_being_killed_mid_send_bw() {
    let (status, err) = kill_mid_run("send_bw", true, 2);
    assert_retry_exceeded_then_flushed(status, &err);
}

#[test]
fn perf_latency_tests_survive_the_peer_being_killed() {
    // One WR outstanding at a time: retry count exceeded on it, either side
    // (the write/send_lat server sends too).
    for (k, (t, kill_server)) in [
        ("write_lat", true),
        ("send_lat", true),
        ("read_lat", true),
        ("write_lat", false),
        ("send_lat", false),
    ]
    .into_iter()
    .enumerate()
    {
        let (status, err) = kill_mid_run(t, kill_server, 6 + k as u16);
        eprintln!("{t} (server killed: {kill_server}): {}", err.trim());
        assert_eq!(status.code(), Some(1), "{t}: {err}");
        // A ping-pong side learns it from its outstanding message, or,
        // waiting for the peer's, from the control connection.
        let peer = if kill_server { "server" } else { "client" };
        assert!(
            err.contains("completion with error RetryExcErr")
                || err.contains(&format!("{peer} closed the connection")),
            "{t} (server killed: {kill_server}): {err}"
        );
    }
}

#[test]
fn perf_server_survives_its_client_being_killed_mid_run() {
    // The passive write_bw/read_bw server and the send_bw receiver have no
    // send WR outstanding: they learn from the control connection.
    for (k, t) in ["write_bw", "read_bw", "send_bw"].iter().enumerate() {
        let (status, err) = kill_mid_run(t, false, 3 + k as u16);
        assert_eq!(status.code(), Some(1), "{t}: {err}");
        assert!(
            err.contains("closed the connection") || err.contains("lost the connection"),
            "{t}: the server's error does not say its client went: {err}"
        );
    }
}

// ---------------------------------------------------------------------------
// An MR deregistered with traffic in flight.

#[derive(Clone, Copy, Debug)]
enum Kind {
    Pinned,
    Odp,
    ImplicitOdp,
}

fn reg(n: &Node, buf: &Buf, kind: Kind) -> Mr {
    match kind {
        Kind::Pinned => n.pd.reg_mr(buf.addr(), buf.0.len() as u64, all_access()),
        Kind::Odp => n.pd.reg_mr(
            buf.addr(),
            buf.0.len() as u64,
            all_access() | Access::ON_DEMAND,
        ),
        Kind::ImplicitOdp => n.pd.reg_mr(0, u64::MAX, all_access() | Access::ON_DEMAND),
    }
    .unwrap()
}

/// A posts N 1 MiB WRITEs (or READs) into (from) B's MR, slot i for WR i;
/// once the first completes, B deregisters the MR. Multi-packet messages
/// are then being placed (the responder keeps the MR for the message).
fn dereg_mid_traffic(kind: Kind, read: bool) {
    const N: usize = 24;
    const LEN: usize = 1 << 20;
    let a = node();
    let b = node();
    let (qa, qb) = connect(&a, &b, QpType::Rc);
    // A 67 ms ACK timeout (the shared set-up's 4 ms once ran out of retries on a busy
    // machine while 1 MiB READ bursts were answered, before any dereg).
    qa.modify(&QpAttr {
        state: Some(QpState::Rts),
        timeout: Some(14),
        ..Default::default()
    })
    .unwrap();
    // A's buffer: WRITE sources (slot i holds i+1), or READ destinations.
    let local = Buf::new(N * LEN, |i| if read { 0 } else { (i / LEN) as u8 + 1 });
    // B's: WRITE targets (zero), or READ sources (slot i holds 0x80 | i).
    let remote = Buf::new(N * LEN, |i| if read { 0x80 | (i / LEN) as u8 } else { 0 });
    let lmr =
        a.pd.reg_mr(local.addr(), local.0.len() as u64, all_access())
            .unwrap();
    let rmr = reg(&b, &remote, kind);
    let rkey = rmr.rkey();
    let sges: Vec<Sge> = (0..=N)
        .map(|i| local.sge(&lmr, (i % N) * LEN, LEN))
        .collect();
    let wr = |i: usize| {
        let remote_addr = remote.addr() + (i * LEN) as u64;
        SendWr {
            wr_id: i as u64,
            sg_list: std::slice::from_ref(&sges[i]),
            op: if read {
                SendOp::Read { remote_addr, rkey }
            } else {
                SendOp::Write { remote_addr, rkey }
            },
            flags: signaled(),
            ud: None,
        }
    };
    let wrs: Vec<SendWr<'_>> = (0..N).map(wr).collect();
    qa.post_send(&wrs).unwrap();
    let mut c = wait_for(&a.cq, 1, Duration::from_secs(60));
    drop(rmr);
    // From here on B's memory must not change. The last byte of each slot
    // first (a responder places a message in order, so a WRITE still being
    // placed has not written it yet), at once; then everything.
    let last_bytes = |m: &Buf| -> Vec<u8> {
        (0..N)
            // SAFETY: in bounds of a live buffer; volatile, as the device
            // may be writing it from another thread.
            .map(|i| unsafe { std::ptr::read_volatile(m.0.as_ptr().add((i + 1) * LEN - 1)) })
            .collect()
    };
    let tails = last_bytes(&remote);
    let snapshot = remote.0.clone();
    c.extend(wait_for(&a.cq, N - c.len(), Duration::from_secs(60)));
    if c.iter().all(|w| w.status == WcStatus::Success) {
        // All done before the dereg (not seen so far): a later one then fails.
        qa.post_send(&[wr(N)]).unwrap();
        c.extend(wait_for(&a.cq, 1, Duration::from_secs(60)));
    }
    let ok = success_then_error_then_flushed(&c, WcStatus::RemAccessErr);
    assert_eq!(qa.state(), QpState::Err);
    eprintln!(
        "{kind:?} {}: {ok} succeeded, then REM_ACCESS_ERR, {} flushed",
        if read { "READ" } else { "WRITE" },
        c.len() - ok - 1
    );
    // Late or retransmitted packets have had time to arrive.
    std::thread::sleep(Duration::from_millis(100));
    for (i, (before, now)) in tails.iter().zip(last_bytes(&remote)).enumerate() {
        assert_eq!(
            *before, now,
            "{kind:?}: slot {i}'s last byte was written after the dereg returned"
        );
    }
    assert!(
        remote.0 == snapshot,
        "{kind:?}: B's memory changed after the MR was deregistered"
    );
    // What completed successfully landed.
    for i in 0..ok {
        let (l, r) = (
            &local.0[i * LEN..(i + 1) * LEN],
            &remote.0[i * LEN..(i + 1) * LEN],
        );
        assert!(
            l == r,
            "{kind:?}: WR {i} completed but its data is not there"
        );
    }
    if !read {
        // Nothing a failed WRITE carried landed after the dereg either: any
        // byte of a slot the device placed was there in the snapshot.
        for i in ok + 1..N {
            assert!(
                remote.0[i * LEN..(i + 1) * LEN].iter().all(|&x| x == 0),
                "{kind:?}: flushed WRITE {i} wrote into B"
            );
        }
    }
    drop((qb, b, a));
}

#[test]
fn dereg_pinned_mr_while_writes_are_in_flight() {
    dereg_mid_traffic(Kind::Pinned, false);
}

#[test]
fn dereg_odp_mr_while_writes_are_in_flight() {
    dereg_mid_traffic(Kind::Odp, false);
}

#[test]
fn dereg_implicit_odp_mr_while_writes_are_in_flight() {
    dereg_mid_traffic(Kind::ImplicitOdp, false);
}

#[test]
fn dereg_pinned_mr_while_reads_are_in_flight() {
    dereg_mid_traffic(Kind::Pinned, true);
}

#[test]
fn dereg_odp_mr_while_reads_are_in_flight() {
    dereg_mid_traffic(Kind::Odp, true);
}

#[test]
fn dereg_implicit_odp_mr_while_reads_are_in_flight() {
    dereg_mid_traffic(Kind::ImplicitOdp, true);
}

/// The requester's side: A deregisters the MR its WRITEs gather from while
/// they are in flight. As rxe (the WQE's lkey is looked up when the data
/// is read): the WR being sent then completes with `LOC_PROT_ERR`, the QP
/// goes to error, completions stay in posting order (earlier WRs still
/// unacknowledged and every later one flushed), and no byte is read after
/// the dereg returned: A then overwrites its buffer, and no slot B holds
/// for a successful WRITE shows the new bytes.
#[test]
fn dereg_the_local_mr_while_1mib_writes_gather_from_it() {
    dereg_local_mid_traffic(24, 1 << 20);
}

/// 16 KiB WRITEs: several are wholly sent and unacknowledged when the
/// gather fails.
#[test]
fn dereg_the_local_mr_while_16kib_writes_gather_from_it() {
    dereg_local_mid_traffic(1000, 16 << 10);
}

#[allow(non_snake_case)]
fn dereg_local_mid_traffic(N: usize, LEN: usize) {
    let a = node();
    let b = node();
    let (qa, qb) = connect(&a, &b, QpType::Rc);
    // 67 ms: the shared set-up's 4 ms ran out of retries on a busy machine.
    qa.modify(&QpAttr {
        state: Some(QpState::Rts),
        timeout: Some(14),
        ..Default::default()
    })
    .unwrap();
    let mut src = Buf::new(N * LEN, |i| ((i / LEN) % 251) as u8 + 1);
    let dst = Buf::new(N * LEN, |_| 0);
    let lmr =
        a.pd.reg_mr(src.addr(), src.0.len() as u64, all_access())
            .unwrap();
    let rmr =
        b.pd.reg_mr(dst.addr(), dst.0.len() as u64, all_access())
            .unwrap();
    let sges: Vec<Sge> = (0..N).map(|i| src.sge(&lmr, i * LEN, LEN)).collect();
    let wrs: Vec<SendWr<'_>> = (0..N)
        .map(|i| SendWr {
            wr_id: i as u64,
            sg_list: std::slice::from_ref(&sges[i]),
            op: SendOp::Write {
                remote_addr: dst.addr() + (i * LEN) as u64,
                rkey: rmr.rkey(),
            },
            flags: signaled(),
            ud: None,
        })
        .collect();
    qa.post_send(&wrs).unwrap();
    drop(wrs);
    let mut c = wait_for(&a.cq, 1, Duration::from_secs(60));
    drop(lmr);
    src.0.fill(0xee);
    c.extend(wait_for(&a.cq, N - c.len(), Duration::from_secs(60)));
    assert_eq!(c.len(), N);
    for (i, w) in c.iter().enumerate() {
        assert_eq!(w.wr_id, i as u64, "completions out of posting order: {c:?}");
    }
    let ok = c
        .iter()
        .take_while(|w| w.status == WcStatus::Success)
        .count();
    let errs: Vec<_> = c[ok..]
        .iter()
        .filter(|w| w.status != WcStatus::WrFlushErr)
        .collect();
    if ok < N {
        assert_eq!(qa.state(), QpState::Err);
        assert!(
            errs.len() <= 1 && errs.iter().all(|w| w.status == WcStatus::LocProtErr),
            "after the successes: one LOC_PROT_ERR at most, the rest flushed: {c:?}"
        );
    }
    eprintln!("{ok} succeeded, then {:?}", errs);
    std::thread::sleep(Duration::from_millis(50));
    for i in 0..ok {
        let slot = &dst.0[i * LEN..(i + 1) * LEN];
        assert!(
            slot.iter().all(|&x| x == (i % 251) as u8 + 1),
            "WRITE {i} succeeded but B holds other bytes (read after the dereg?)"
        );
    }
    drop((qb, rmr));
}

/// Holds back the packets a device sends that `pred` picks, while `hold`
/// is set; `release` sends them.
struct Hold {
    inner: Box<dyn soft_rdma::transport::Link>,
    pred: Box<dyn Fn(&soft_rdma::wire::PacketRepr) -> bool + Send + Sync>,
    hold: std::sync::atomic::AtomicBool,
    held: std::sync::Mutex<Vec<(std::net::SocketAddr, Vec<u8>)>>,
}

impl Hold {
    fn new(
        inner: impl soft_rdma::transport::Link + 'static,
        pred: impl Fn(&soft_rdma::wire::PacketRepr) -> bool + Send + Sync + 'static,
    ) -> std::sync::Arc<Hold> {
        std::sync::Arc::new(Hold {
            inner: Box::new(inner),
            pred: Box::new(pred),
            hold: true.into(),
            held: Default::default(),
        })
    }
    fn held(&self) -> usize {
        self.held.lock().unwrap().len()
    }
    fn release(&self) {
        self.hold.store(false, std::sync::atomic::Ordering::SeqCst);
        for (peer, data) in std::mem::take(&mut *self.held.lock().unwrap()) {
            let o = soft_rdma::transport::Outgoing { peer, data: &data };
            self.inner.send(&[o]).unwrap();
        }
    }
}

impl soft_rdma::transport::Link for Hold {
    fn send(&self, batch: &[soft_rdma::transport::Outgoing<'_>]) -> std::io::Result<usize> {
        let mut held = self.held.lock().unwrap();
        let hold = self.hold.load(std::sync::atomic::Ordering::SeqCst);
        let keep: Vec<_> = batch
            .iter()
            .filter(|o| {
                let pick = hold
                    && soft_rdma::wire::PacketRepr::parse(o.data)
                        .is_ok_and(|(r, _)| (self.pred)(&r));
                if pick {
                    held.push((o.peer, o.data.to_vec()));
                }
                !pick
            })
            .copied()
            .collect();
        self.inner.send(&keep).map(|_| batch.len())
    }
    fn recv(
        &self,
        batch: &mut soft_rdma::transport::RecvBatch,
        timeout: Option<Duration>,
    ) -> std::io::Result<usize> {
        self.inner.recv(batch, timeout)
    }
    test_support::forward_rest_of_link!();
}

/// Completions of one send queue come in posting order, also when a local
/// error hits a WR behind others still unacknowledged. A sends 64-packet
/// WRITEs (two fill the 128-PSN window); A's link holds the second's
/// packets and B's link its ACKs; A deregisters the source MR; then B's
/// ACK (of the first WRITE only) goes through: the window opens, the third
/// WRITE's gather fails (LOC_PROT_ERR) while the second is still
/// unacknowledged. Expected, in order: 0 success, 1 flushed, 2
/// LOC_PROT_ERR, 3 flushed. (It came out 0, 2, 1, 3: the failed WR
/// completed before the flush of the earlier one.)
#[test]
fn a_local_error_behind_unacknowledged_wrs_completes_in_posting_order() {
    use soft_rdma::transport::loopback::Hub;
    use soft_rdma::wire::Op;
    const LEN: usize = 64 << 10; // 64 packets at MTU 1024
    const PSN: u32 = 0x10; // test_support::verbs::connect's first PSN
    let hub = Hub::new();
    // A: the second WRITE's packets (PSNs from PSN + 64) wait.
    let hold_a = Hold::new(hub.link(([127, 9, 2, 1], 4791).into()).unwrap(), |r| {
        r.bth.opcode.op() != Op::Ack && r.bth.psn >= PSN + 64
    });
    // B: its ACKs wait.
    let hold_b = Hold::new(hub.link(([127, 9, 2, 2], 4791).into()).unwrap(), |r| {
        r.bth.opcode.op() == Op::Ack
    });
    let a = Node::on_link(hold_a.clone(), 64);
    let b = Node::on_link(hold_b.clone(), 64);
    let (qa, qb) = connect(&a, &b, QpType::Rc);
    // Long enough not to retransmit meanwhile (4.3 s: a 67 ms timeout
    // once fired first on a busy machine, failing WR 0's resend instead).
    qa.modify(&QpAttr {
        state: Some(QpState::Rts),
        timeout: Some(20),
        ..Default::default()
    })
    .unwrap();
    let src = Buf::new(4 * LEN, |_| 7);
    let dst = Buf::new(4 * LEN, |_| 0);
    let lmr =
        a.pd.reg_mr(src.addr(), src.0.len() as u64, all_access())
            .unwrap();
    let rmr =
        b.pd.reg_mr(dst.addr(), dst.0.len() as u64, all_access())
            .unwrap();
    let sges: Vec<Sge> = (0..4).map(|i| src.sge(&lmr, i * LEN, LEN)).collect();
    let wrs: Vec<SendWr<'_>> = (0..4)
        .map(|i| SendWr {
            wr_id: i as u64,
            sg_list: std::slice::from_ref(&sges[i]),
            op: SendOp::Write {
                remote_addr: dst.addr() + (i * LEN) as u64,
                rkey: rmr.rkey(),
            },
            flags: signaled(),
            ud: None,
        })
        .collect();
    qa.post_send(&wrs).unwrap();
    drop(wrs);
    // The window is full (the second WRITE held on A) and B acknowledged
    // the first (held on B).
    let t = Instant::now();
    while hold_a.held() < 64 || hold_b.held() < 1 {
        assert!(t.elapsed() < Duration::from_secs(20), "never got there");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(a.cq.poll(&mut [Wc::EMPTY; 4]), 0);
    drop(lmr);
    hold_b.release();
    let c = wait_for(&a.cq, 4, Duration::from_secs(60));
    let got: Vec<(u64, WcStatus)> = c.iter().map(|w| (w.wr_id, w.status)).collect();
    assert_eq!(
        got,
        [
            (0, WcStatus::Success),
            (1, WcStatus::WrFlushErr),
            (2, WcStatus::LocProtErr),
            (3, WcStatus::WrFlushErr)
        ]
    );
    assert_eq!(qa.state(), QpState::Err);
    hold_a.release();
    drop((qb, rmr, b));
}
