//! `softrdma stats` reads the live counters of another process's devices
//! (published in `SOFTRDMA_STATS_DIR`), and cleans up after a dead one.
//!
//! The other process is this test binary again, running
//! [`two_devices_move_data_and_count_it`] with an environment variable set:
//! it opens two devices with `Device::open` (so `SOFTRDMA_FAULTS` applies),
//! moves data between them, checks that it arrived and that the devices'
//! counters account for it, waits for the counters to settle, reports them
//! all and waits for its stdin to close. The parent checks that what
//! `softrdma stats` shows is what the child reported. Run on its own (no
//! variable), the same test moves the data and checks it, then returns.

use soft_rdma::verbs::*;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use test_support::verbs::{all_access, connect, signaled, wait, Buf, Node};

const CHILD: &str = "SOFTRDMA_TEST_STATS_CHILD";
/// The WRITEs the child makes, each `WRITE_LEN` bytes.
const WRITES: usize = 20;
const WRITE_LEN: usize = 1 << 20;
/// Packets of those WRITEs at the path MTU (`connect`'s 1024).
const WRITE_PKTS: u64 = (WRITES * WRITE_LEN / 1024) as u64;

/// Both devices' counters once two snapshots 300 ms apart agree (nothing in
/// flight: no retransmission or late ACK left to count), at most 10 s.
fn settled(a: &Device, b: &Device) -> (DeviceStats, DeviceStats) {
    let t = Instant::now();
    let mut last = (a.stats(), b.stats());
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = (a.stats(), b.stats());
        if now == last {
            return now;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "counters still moving after 10 s idle:\nA:\n{}B:\n{}",
            now.0,
            now.1
        );
        last = now;
    }
}

/// `name=value,…` of every counter of `s`.
fn report(s: &DeviceStats) -> String {
    DeviceStats::NAMES
        .iter()
        .zip(s.values())
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The counters of a [`report`].
fn parse_report(r: &str) -> BTreeMap<String, u64> {
    r.split(',')
        .map(|kv| {
            let (k, v) = kv.split_once('=').expect("name=value");
            (k.to_string(), v.parse().expect("a number"))
        })
        .collect()
}

#[test]
fn two_devices_move_data_and_count_it() {
    let child = std::env::var_os(CHILD).is_some();
    let faults = std::env::var_os("SOFTRDMA_FAULTS").is_some_and(|f| !f.is_empty());
    let (a, b) = (Node::open(), Node::open());
    let (qa, qb) = connect(&a, &b, QpType::Rc);
    // Over UDP on a loaded 2-core machine the kernel may hold loopback
    // datagrams for tens of ms (softirq work deferred), and at load 15 the
    // receiving thread went without a CPU through eight 67 ms timeouts in
    // a row (RetryExcErr): 268 ms (16) rather than the 4 ms the shared
    // set-up uses. A lost tail is found by the loss probe, not the timer.
    for q in [&qa, &qb] {
        q.modify(&QpAttr {
            timeout: Some(16),
            ..Default::default()
        })
        .unwrap();
    }
    let src = Buf::new(WRITE_LEN, |i| i as u8);
    let dst = Buf::new(WRITE_LEN, |_| 0);
    let mra =
        a.pd.reg_mr(src.addr(), WRITE_LEN as u64, all_access())
            .unwrap();
    let mrb =
        b.pd.reg_mr(dst.addr(), WRITE_LEN as u64, all_access())
            .unwrap();
    for i in 0..WRITES {
        qa.post_send(&[SendWr {
            wr_id: i as u64,
            sg_list: &[src.sge(&mra, 0, WRITE_LEN)],
            op: SendOp::Write {
                remote_addr: dst.addr(),
                rkey: mrb.rkey(),
            },
            flags: signaled(),
            ud: None,
        }])
        .unwrap();
        let c = wait(&a.cq, 1);
        assert_eq!(
            (c.len(), c[0].wr_id, c[0].status),
            (1, i as u64, WcStatus::Success),
            "A:\n{}B:\n{}",
            a.dev.stats(),
            b.dev.stats()
        );
    }
    assert!(src.0 == dst.0, "the WRITEs' data arrived");
    let (sa, sb) = settled(&a.dev, &b.dev);
    let both = format!("A:\n{sa}B:\n{sb}");
    // Every WRITE packet left A, and reached B, at least once (B holds all
    // the data), and B acknowledged them.
    assert!(sa.sent_pkts >= WRITE_PKTS, "{both}");
    assert!(sb.rcvd_pkts >= WRITE_PKTS, "{both}");
    assert!(sb.sent_pkts > 0 && sa.rcvd_pkts > 0, "ACKs: {both}");
    // Nothing malformed, misdirected or given up on.
    for s in [&sa, &sb] {
        for k in [
            "icrc_errors",
            "parse_errors",
            "unknown_qp",
            "retry_exceeded",
        ] {
            assert_eq!(s.get(k), Some(0), "{k}: {both}");
        }
    }
    if faults {
        // 2% of some 20 000 datagrams dropped: resent by go-back-N.
        assert!(sa.fault_dropped + sb.fault_dropped > 0, "{both}");
        assert!(sa.retransmits > 0, "{both}");
    } else {
        assert_eq!(sa.fault_dropped + sb.fault_dropped, 0, "{both}");
    }
    if !child {
        return;
    }
    // On a line of its own: the test harness may have begun one.
    println!("\nREADY {} {}", report(&sa), report(&sb));
    std::io::stdout().flush().unwrap();
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    // Idle meanwhile: what it published is still what it reported.
    assert_eq!(
        (a.dev.stats(), b.dev.stats()),
        (sa, sb),
        "counters moved while idle"
    );
}

fn stats_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("softrdma-stats-test-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn softrdma_stats(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_softrdma"))
        .arg("stats")
        .args(args)
        .env("SOFTRDMA_STATS_DIR", dir)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The value of counter `name` in each device table of `out`, in table order.
fn values(out: &str, name: &str) -> Vec<u64> {
    out.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some(name)).then(|| w.next().unwrap().parse().unwrap())
        })
        .collect()
}

#[test]
fn stats_reads_another_process_live_counters_and_cleans_up_after_it() {
    let dir = stats_dir();
    let spawn = || {
        Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "two_devices_move_data_and_count_it",
                "--nocapture",
            ])
            .args(["--test-threads", "1"])
            .env(CHILD, "1")
            .env("SOFTRDMA_STATS_DIR", &dir)
            .env("SOFTRDMA_FAULTS", "drop=0.02,seed=3")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap()
    };
    let mut child = spawn();
    let pid = child.id();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.starts_with("READY") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "child ended early");
    }
    // Keep reading what the child prints (so it never blocks on a full pipe).
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    let own: Vec<BTreeMap<String, u64>> =
        line.split_whitespace().skip(1).map(parse_report).collect();
    assert_eq!(own.len(), 2, "{line}");
    assert!(own[0]["sent_pkts"] >= WRITE_PKTS, "{line}");
    // Wait for the next publication (every 200 ms).
    std::thread::sleep(Duration::from_millis(500));
    let (code, text, err) = softrdma_stats(&dir, &[&pid.to_string()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        text.matches(&format!("(pid {pid},")).count(),
        2,
        "both devices listed:\n{text}"
    );
    // Every counter, of both devices (listed in opening order), is what the
    // child reported: it has been idle since its counters settled.
    for name in DeviceStats::NAMES {
        let shown = values(&text, name);
        let reported = [own[0][*name], own[1][*name]];
        assert_eq!(shown, reported, "{name}:\n{text}\n{line}");
    }
    assert!(
        own[0]["fault_dropped"] + own[1]["fault_dropped"] > 0,
        "{line}"
    );
    // Without a pid: every live device, this child's among them.
    let (code, all, _) = softrdma_stats(&dir, &[]);
    assert_eq!(code, 0);
    assert!(all.contains(&format!("(pid {pid},")), "{all}");

    // A normal exit removes the files.
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    let left = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(left, 0, "files removed on device drop");
    let (code, _, err) = softrdma_stats(&dir, &[&pid.to_string()]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!("no live softrdma device in process {pid}")),
        "{err}"
    );

    // A killed process leaves stale files: ignored and removed by the reader.
    let mut child = spawn();
    let pid = child.id();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.starts_with("READY") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "child ended early");
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        2,
        "stale files stay"
    );
    let (code, all, _) = softrdma_stats(&dir, &[]);
    assert_eq!(code, 0);
    assert!(all.contains("no live softrdma devices"), "{all}");
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "stale files removed"
    );
    let (code, _, err) = softrdma_stats(&dir, &[&pid.to_string()]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("no live softrdma device in process {pid}")),
        "{err}"
    );
    let (code, _, err) = softrdma_stats(&dir, &["x12"]);
    assert_eq!(code, 2, "{err}");
    std::fs::remove_dir(&dir).unwrap();
}

#[test]
fn perf_stats_prints_both_tables_and_a_bad_fault_spec_is_one_line() {
    let out = Command::new(env!("CARGO_BIN_EXE_softrdma"))
        .args(["perf", "write_bw", "-s", "65536", "-n", "200", "-t", "4"])
        .args(["--verify", "--stats"])
        .env("SOFTRDMA_FAULTS", "drop=0.02,seed=5")
        .env("SOFTRDMA_STATS_DIR", "")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("Verify: OK"), "{text}");
    for who in ["client", "server"] {
        assert!(
            text.contains(&format!("Counters of the {who}'s device")),
            "{text}"
        );
    }
    let sent = values(&text, "sent_pkts");
    let dropped = values(&text, "fault_dropped");
    assert!(sent.len() == 2 && sent.iter().all(|&v| v > 0), "{text}");
    assert!(dropped.iter().sum::<u64>() > 0, "{text}");
    assert!(
        values(&text, "retransmits").iter().sum::<u64>() > 0,
        "{text}"
    );

    for (spec, needle) in [
        ("drop=0.1,bogus=1", "unknown key \"bogus\""),
        ("corrupt=2", "corrupt=2"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_softrdma"))
            .args(["perf", "write_bw", "-n", "10"])
            .env("SOFTRDMA_FAULTS", spec)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains("SOFTRDMA_FAULTS") && err.contains(needle),
            "{err}"
        );
    }
}
