//! Devices of one process opened and closed, one after another and at
//! once: traffic for a device never reaches another one. Peers know a
//! device by its address alone, so no two devices of a process may share
//! one (the tenth device of a process once fell back to the first one's
//! address on another port, and traffic for its peers went to whoever held
//! that port), and a device opened after one closed must not take the
//! closed one's address while others are free: its peers' retries would
//! reach it, with the same QP numbers (the closed device must look gone:
//! RETRY_EXC for RC, dropped for UD).
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use soft_rdma::transport::addr::FALLBACK_TRIES;
use soft_rdma::verbs::*;
use test_support::verbs::*;

/// More devices than rule 2 tries addresses for.
const MANY: usize = FALLBACK_TRIES as usize + 4;

/// Whether `a` is a normal device (UDP 4791), not one that fell back.
fn on_4791(a: SocketAddr) -> bool {
    a.port() == soft_rdma::transport::ROCE_PORT
}

/// The status of the one completion `cq` gets (10 s at most).
fn status(cq: &Cq) -> WcStatus {
    wait(cq, 1)[0].status
}

#[test]
fn no_two_devices_of_a_process_share_an_address() {
    let devs: Vec<Device> = (0..2 * MANY).map(|_| Device::open().unwrap()).collect();
    let addrs: Vec<SocketAddr> = devs.iter().map(|d| d.local_addr()).collect();
    let ips: HashSet<_> = addrs.iter().map(|a| a.ip()).collect();
    assert_eq!(ips.len(), addrs.len(), "a GID twice: {addrs:?}");
    // A fallback port only when 4791 is held on every address (by a
    // wildcard socket): not because this process's devices hold a few.
    if on_4791(addrs[0]) {
        assert!(addrs.iter().all(|a| on_4791(*a)), "{addrs:?}");
    }
}

/// Opened and closed in a loop, a device never gets an address one of the
/// last few had (other tests of this process give addresses up meanwhile:
/// only the recent ones are sure to be in quarantine).
#[test]
fn a_device_opened_and_closed_in_a_loop_moves_on() {
    let mut seen: Vec<SocketAddr> = Vec::new();
    for _ in 0..20 {
        let at = Device::open().unwrap().local_addr();
        let recent = &seen[seen.len().saturating_sub(8)..];
        assert!(!recent.contains(&at), "{at} again: {seen:?}");
        seen.push(at);
    }
}

/// The case that was seen: a request that must be refused (a bad R_Key)
/// ended in RETRY_EXC instead of the NAK, because the tenth device's
/// packets went to another device ("no such QP").
#[test]
fn each_of_many_devices_reaches_its_own_peer() {
    let nodes: Vec<Node> = (0..MANY).map(|_| Node::open()).collect();
    let bufs: Vec<Buf> = (0..MANY)
        .map(|i| Buf::new(4096, |k| (i + k) as u8))
        .collect();
    let mrs: Vec<Mr> = nodes
        .iter()
        .zip(&bufs)
        .map(|(n, b)| n.pd.reg_mr(b.addr(), 4096, all_access()).unwrap())
        .collect();
    // Kept to the end: a late retransmission finds its QP.
    let mut qps = Vec::new();
    for i in 0..MANY {
        let j = (i + 1) % MANY;
        let (a, b) = (&nodes[i], &nodes[j]);
        let (qa, qb) = connect(a, b, QpType::Rc);
        write(
            &qa,
            1,
            bufs[i].sge(&mrs[i], 0, 64),
            bufs[j].addr() + 1024,
            mrs[j].rkey(),
        );
        assert_eq!(status(&a.cq), WcStatus::Success, "{i} to {j}");
        write(
            &qa,
            2,
            bufs[i].sge(&mrs[i], 0, 64),
            bufs[j].addr(),
            mrs[j].rkey() ^ 0x80,
        );
        assert_eq!(
            status(&a.cq),
            WcStatus::RemAccessErr,
            "{i} ({}) to {j} ({})",
            a.dev.local_addr(),
            b.dev.local_addr()
        );
        qps.push((qa, qb));
    }
    for i in 0..MANY {
        let j = (i + MANY - 1) % MANY;
        assert_eq!(bufs[i].0[1024..1088], bufs[j].0[..64], "{j} to {i}");
        assert_eq!(nodes[i].dev.stats().unknown_qp, 0, "device {i}");
    }
}

/// `b` closes with a peer `a` still connected to it; `c` opens and sets up
/// as `b` had (same QP numbers, R_Key, PSN, connected to `a`'s address).
/// `a`'s RC write to `b` ends in RETRY_EXC, its UD send to `b` is dropped,
/// and `c` receives nothing.
#[test]
fn a_device_opened_after_one_closed_gets_none_of_its_traffic() {
    let a = Node::open();
    let src = Buf::new(4096, |k| k as u8);
    let mra = a.pd.reg_mr(src.addr(), 4096, all_access()).unwrap();
    let rc = QpConfig {
        // 67 ms, 4 retries: gone in a third of a second, and a loaded
        // machine does not fail the writes that must succeed.
        timeout: Some(14),
        retry_cnt: Some(4),
        ..QpConfig::new(QpType::Rc)
    };
    let ud = QpConfig::new(QpType::Ud);
    // Set up `b` or `c`: an MR, an RC QP connected to `qa` expecting PSN
    // `psn`, a UD QP with a receive posted.
    let peer = |qa: &Qp, psn: u32| {
        let n = Node::open();
        let buf = Buf::new(4096, |_| 0);
        let mr = n.pd.reg_mr(buf.addr(), 4096, all_access()).unwrap();
        let q = rc.create(&n.pd, &n.cq);
        let rc = QpConfig { psn, ..rc.clone() };
        rc.bring_up(&q, qa.qp_num(), a.dev.gid(1).unwrap());
        let u = ud.create(&n.pd, &n.cq);
        ud.bring_up(&u, 0, n.dev.gid(1).unwrap());
        u.post_recv(&[RecvWr {
            wr_id: 9,
            sg_list: &[buf.sge(&mr, 0, 4096)],
        }])
        .unwrap();
        (n, buf, mr, q, u)
    };
    let qa = rc.create(&a.pd, &a.cq);
    let ua = ud.create(&a.pd, &a.cq);
    ud.bring_up(&ua, 0, a.dev.gid(1).unwrap());
    let (b, bbuf, bmr, qb, ub) = peer(&qa, rc.psn);
    rc.bring_up(&qa, qb.qp_num(), b.dev.gid(1).unwrap());
    // `a` and `b` talk (by ring, if the fast path is on).
    write(&qa, 1, src.sge(&mra, 0, 64), bbuf.addr(), bmr.rkey());
    assert_eq!(status(&a.cq), WcStatus::Success);
    assert_eq!(bbuf.0[..64], src.0[..64]);
    let (b_at, qpn, uqpn) = (b.dev.local_addr(), qb.qp_num(), ub.qp_num());
    drop((qb, ub, bmr, b));
    drop(bbuf);
    // `c` expects the PSN `b` would have: the worst case.
    let (c, cbuf, cmr, qc, uc) = peer(&qa, rc.psn + 1);
    // Had it taken it, `c` would have been `b` to `a`.
    assert_eq!((qc.qp_num(), uc.qp_num()), (qpn, uqpn));
    // `a` still sends to `b`: by UD, and an RC write that would land in
    // `c`'s buffer had `c` taken `b`'s place (its QP number, and its R_Key
    // and address as `a` may have learnt them).
    ua.post_send(&[SendWr {
        wr_id: 3,
        sg_list: &[src.sge(&mra, 0, 64)],
        op: SendOp::Send,
        flags: signaled(),
        ud: Some(UdDest {
            ah: a.pd.create_ah(Gid::from_ip(b_at.ip())),
            remote_qpn: uqpn,
            remote_qkey: ud.qkey,
        }),
    }])
    .unwrap();
    assert_eq!(status(&a.cq), WcStatus::Success, "a UD send completes");
    write(&qa, 2, src.sge(&mra, 0, 64), cbuf.addr(), cmr.rkey());
    assert_eq!(status(&a.cq), WcStatus::RetryExcErr, "the peer is gone");
    std::thread::sleep(Duration::from_millis(50));
    assert!(c.cq.poll(&mut [Wc::EMPTY; 4]) == 0, "c completed something");
    assert!(cbuf.0.iter().all(|&x| x == 0), "c's memory was written");
    assert_eq!(c.dev.stats().rcvd_pkts, 0, "c received packets meant for b");
    assert_ne!(c.dev.local_addr(), b_at);
}

/// A pair talks (writes, verified) while other threads open devices, each
/// connecting to the pair's first device, writing once and closing, a few
/// alive at a time: every operation of everyone succeeds and lands where
/// it was meant to.
#[test]
fn a_pair_keeps_talking_while_devices_come_and_go() {
    let a = Arc::new(Node::open());
    let b = Node::open();
    let (qa, _qb) = connect(&a, &b, QpType::Rc);
    let src = Buf::new(4096, |k| (k * 7) as u8);
    let dst = Buf::new(4096, |_| 0);
    let mra = a.pd.reg_mr(src.addr(), 4096, all_access()).unwrap();
    let mrb = b.pd.reg_mr(dst.addr(), 4096, all_access()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let churn: Vec<_> = (0..3u8)
        .map(|t| {
            let (a, stop) = (a.clone(), stop.clone());
            let (src, rkey) = (src.addr(), mra.rkey());
            std::thread::spawn(move || {
                let mut rounds = 0;
                while !stop.load(Ordering::Relaxed) || rounds < 3 {
                    // A few alive at once (more than rule 2's tries in all).
                    let ns: Vec<Node> = (0..4).map(|_| Node::open()).collect();
                    for n in &ns {
                        // Read `a`'s source: what comes back must be it.
                        let back = Buf::new(256, |_| t);
                        let mr = n.pd.reg_mr(back.addr(), 256, all_access()).unwrap();
                        let (qn, _qa) = connect(n, &a, QpType::Rc);
                        qn.post_send(&[SendWr {
                            wr_id: 5,
                            sg_list: &[back.sge(&mr, 0, 256)],
                            op: SendOp::Read {
                                remote_addr: src,
                                rkey,
                            },
                            flags: signaled(),
                            ud: None,
                        }])
                        .unwrap();
                        let wc = wait(&n.cq, 1)[0];
                        assert_eq!(wc.status, WcStatus::Success, "{}", n.dev.local_addr());
                        assert!(back.0.iter().enumerate().all(|(i, &x)| x == (i * 7) as u8));
                    }
                    rounds += 1;
                }
                rounds
            })
        })
        .collect();
    let end = Instant::now() + Duration::from_secs(3);
    let mut i = 0u64;
    while Instant::now() < end {
        let off = (i as usize * 64) % 4096;
        write(
            &qa,
            i,
            src.sge(&mra, off, 64),
            dst.addr() + off as u64,
            mrb.rkey(),
        );
        assert_eq!(status(&a.cq), WcStatus::Success, "write {i}");
        assert_eq!(dst.0[off..off + 64], src.0[off..off + 64]);
        i += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for t in churn {
        assert!(t.join().unwrap() >= 3);
    }
}

/// A device closed while the program still holds its PD, CQ and QP (so
/// its endpoint stays bound): its peers' rings to it end at the close —
/// `a`'s next packets go by UDP into nothing, not into a ring nobody reads.
#[test]
fn closing_a_device_ends_its_peers_rings_at_once() {
    if std::env::var("SOFTRDMA_SHM").is_ok_and(|v| matches!(v.trim(), "off" | "0")) {
        return;
    }
    let a = Node::open();
    let Node { dev, pd, cq } = Node::open();
    let src = Buf::new(4096, |k| k as u8);
    let dst = Buf::new(4096, |_| 0);
    let mra = a.pd.reg_mr(src.addr(), 4096, all_access()).unwrap();
    let mrb = pd.reg_mr(dst.addr(), 4096, all_access()).unwrap();
    let rc = QpConfig {
        timeout: Some(14),
        retry_cnt: Some(4),
        ..QpConfig::new(QpType::Rc)
    };
    let (qa, qb) = (rc.create(&a.pd, &a.cq), rc.create(&pd, &cq));
    rc.bring_up(&qa, qb.qp_num(), dev.gid(1).unwrap());
    rc.bring_up(&qb, qa.qp_num(), a.dev.gid(1).unwrap());
    let end = Instant::now() + Duration::from_secs(5);
    let mut i = 0;
    while a.dev.stats().link_same_host_sent == 0 {
        assert!(Instant::now() < end, "no ring");
        write(&qa, i, src.sge(&mra, 0, 64), dst.addr(), mrb.rkey());
        assert_eq!(status(&a.cq), WcStatus::Success);
        i += 1;
    }
    drop(dev);
    let before = a.dev.stats().link_same_host_sent;
    write(&qa, 99, src.sge(&mra, 0, 64), dst.addr(), mrb.rkey());
    assert_eq!(status(&a.cq), WcStatus::RetryExcErr, "the peer is gone");
    assert_eq!(
        a.dev.stats().link_same_host_sent,
        before,
        "packets went into the closed device's ring"
    );
    drop((qb, mrb, pd, cq));
}

/// What `peer_process` does in the child: set up a device as `b` for the
/// parent's QP (`A` = its address, RC QP number, UD QP number), say so,
/// and on `CLOSE psn` close it and set up `c` alike, expecting `psn`;
/// on `CHECK` say what `c` received. Lines on stdout, commands on stdin.
#[test]
fn churn_child() {
    let Ok(a) = std::env::var("SOFTRDMA_TEST_CHURN_CHILD") else {
        return;
    };
    let mut it = a.split(' ');
    let a_ip: std::net::IpAddr = it.next().unwrap().parse().unwrap();
    let a_qpn: u32 = it.next().unwrap().parse().unwrap();
    let rc = QpConfig::new(QpType::Rc);
    let ud = QpConfig::new(QpType::Ud);
    let setup = |psn: u32| {
        let n = Node::open();
        let buf = Buf::new(4096, |_| 0);
        let mr = n.pd.reg_mr(buf.addr(), 4096, all_access()).unwrap();
        let q = rc.create(&n.pd, &n.cq);
        QpConfig { psn, ..rc.clone() }.bring_up(&q, a_qpn, Gid::from_ip(a_ip));
        let u = ud.create(&n.pd, &n.cq);
        ud.bring_up(&u, 0, n.dev.gid(1).unwrap());
        u.post_recv(&[RecvWr {
            wr_id: 9,
            sg_list: &[buf.sge(&mr, 0, 4096)],
        }])
        .unwrap();
        println!(
            "DEVICE {} {} {} {} {}",
            n.dev.local_addr(),
            q.qp_num(),
            u.qp_num(),
            buf.addr(),
            mr.rkey()
        );
        (n, buf, mr, q, u)
    };
    let line = || {
        let mut l = String::new();
        std::io::stdin().read_line(&mut l).unwrap();
        l.trim().to_string()
    };
    let b = setup(rc.psn);
    let next_psn = line().strip_prefix("CLOSE ").unwrap().parse().unwrap();
    let b_ok = b.1 .0[..64].iter().enumerate().all(|(k, &x)| x == k as u8);
    println!("B {}", u8::from(b_ok));
    drop(b);
    let c = setup(next_psn);
    assert_eq!(line(), "CHECK");
    std::thread::sleep(Duration::from_millis(50));
    let completions = c.0.cq.poll(&mut [Wc::EMPTY; 4]);
    let clean = c.1 .0.iter().all(|&x| x == 0);
    println!(
        "C {} {} {}",
        c.0.dev.stats().rcvd_pkts,
        completions,
        u8::from(clean)
    );
}

/// As `a_device_opened_after_one_closed_gets_none_of_its_traffic`, with
/// `b` and `c` in another process, `a` and `b` talking by ring: `a`'s ring
/// and route to `b` end with `b`, and `c` gets nothing meant for `b`.
#[test]
fn a_device_of_another_process_reopened_gets_none_of_its_traffic() {
    use std::io::{BufRead, Write};
    use std::process::{Command, Stdio};
    let a = Node::open();
    let src = Buf::new(4096, |k| k as u8);
    let mra = a.pd.reg_mr(src.addr(), 4096, all_access()).unwrap();
    let rc = QpConfig {
        timeout: Some(14),
        retry_cnt: Some(4),
        ..QpConfig::new(QpType::Rc)
    };
    let ud = QpConfig::new(QpType::Ud);
    let qa = rc.create(&a.pd, &a.cq);
    let ua = ud.create(&a.pd, &a.cq);
    ud.bring_up(&ua, 0, a.dev.gid(1).unwrap());
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "churn_child",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(
            "SOFTRDMA_TEST_CHURN_CHILD",
            format!("{} {}", a.dev.local_addr().ip(), qa.qp_num()),
        )
        .env_remove("SOFTRDMA_ADDR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut to = child.stdin.take().unwrap();
    // The child's lines, read by a thread: a silent child fails the test
    // instead of hanging it.
    let (lines, from) = std::sync::mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(out).lines() {
            let Ok(l) = l else { break };
            if lines.send(l).is_err() {
                break;
            }
        }
    });
    // What follows `what` in the child's next line that holds it (the
    // test harness may have printed before it on the line), split.
    let said = |what: &str| -> Vec<String> {
        loop {
            let l = from
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|e| panic!("waiting for {what:?} from the child: {e}"));
            if let Some(at) = l.find(what) {
                return l[at + what.len()..]
                    .split_whitespace()
                    .map(String::from)
                    .collect();
            }
        }
    };
    let b = said("DEVICE ");
    let b_at: SocketAddr = b[0].parse().unwrap();
    let num = |s: &String| s.parse::<u64>().unwrap();
    let (qpn, uqpn, b_buf, b_rkey) = (num(&b[1]) as u32, num(&b[2]) as u32, num(&b[3]), num(&b[4]));
    rc.bring_up(&qa, qpn, Gid::from_ip(b_at.ip()));
    // Writes until one goes by ring (unless the fast path is off).
    let shm = std::env::var("SOFTRDMA_SHM").map_or(true, |v| !matches!(v.trim(), "off" | "0"));
    let end = Instant::now() + Duration::from_secs(5);
    let mut i = 0;
    loop {
        write(&qa, i, src.sge(&mra, 0, 64), b_buf, b_rkey as u32);
        assert_eq!(status(&a.cq), WcStatus::Success, "write {i}");
        i += 1;
        if !shm || a.dev.stats().link_same_host_sent > 0 {
            break;
        }
        assert!(Instant::now() < end, "no ring to the child's device");
        std::thread::sleep(Duration::from_millis(20));
    }
    // `c` expects the PSN `b` would have: the worst case.
    writeln!(to, "CLOSE {}", rc.psn + i as u32).unwrap();
    assert_eq!(said("B "), ["1"], "b got a's writes");
    let c = said("DEVICE ");
    let c_at: SocketAddr = c[0].parse().unwrap();
    assert_eq!((num(&c[1]) as u32, num(&c[2]) as u32), (qpn, uqpn));
    ua.post_send(&[SendWr {
        wr_id: 3,
        sg_list: &[src.sge(&mra, 0, 64)],
        op: SendOp::Send,
        flags: signaled(),
        ud: Some(UdDest {
            ah: a.pd.create_ah(Gid::from_ip(b_at.ip())),
            remote_qpn: uqpn,
            remote_qkey: ud.qkey,
        }),
    }])
    .unwrap();
    assert_eq!(status(&a.cq), WcStatus::Success, "a UD send completes");
    write(
        &qa,
        100,
        src.sge(&mra, 0, 64),
        num(&c[3]),
        num(&c[4]) as u32,
    );
    assert_eq!(status(&a.cq), WcStatus::RetryExcErr, "the peer is gone");
    writeln!(to, "CHECK").unwrap();
    assert_eq!(
        said("C "),
        ["0", "0", "1"],
        "c: packets, completions, clean"
    );
    let out = test_support::procs::finish("churn child", child, Duration::from_secs(20));
    assert!(
        out.status.success(),
        "{}",
        test_support::procs::all_text(&out)
    );
    assert_ne!(c_at, b_at);
}
