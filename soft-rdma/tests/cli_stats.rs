//! `softrdma stats` reads the live counters of another process's devices
//! (published in `SOFTRDMA_STATS_DIR`), and cleans up after a dead one.
//!
//! The other process is this test binary again, running `child` (selected
//! by an environment variable): it opens two devices with `Device::open`
//! (so `SOFTRDMA_FAULTS` applies), moves data between them, reports its own
//! counters and waits for its stdin to close.

use soft_rdma::verbs::*;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use test_support::verbs::{all_access, connect, signaled, wait, Buf, Node};

const CHILD: &str = "SOFTRDMA_TEST_STATS_CHILD";

#[test]
fn child() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let (a, b) = (Node::open(), Node::open());
    let (qa, qb) = connect(&a, &b, QpType::Rc);
    // Over UDP on a loaded 2-core machine the kernel may hold loopback
    // datagrams for tens of ms (softirq work deferred): a 67 ms timeout (14,
    // perftest's default) rather than the 4 ms the shared set-up uses.
    for q in [&qa, &qb] {
        q.modify(&QpAttr {
            timeout: Some(14),
            ..Default::default()
        })
        .unwrap();
    }
    let src = Buf::new(1 << 20, |i| i as u8);
    let dst = Buf::new(1 << 20, |_| 0);
    let mra = a.pd.reg_mr(src.addr(), 1 << 20, all_access()).unwrap();
    let mrb = b.pd.reg_mr(dst.addr(), 1 << 20, all_access()).unwrap();
    for _ in 0..20 {
        qa.post_send(&[SendWr {
            wr_id: 1,
            sg_list: &[src.sge(&mra, 0, 1 << 20)],
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
            c[0].status,
            WcStatus::Success,
            "A:\n{}B:\n{}",
            a.dev.stats(),
            b.dev.stats()
        );
    }
    assert!(src.0 == dst.0);
    let (sa, sb) = (a.dev.stats(), b.dev.stats());
    // On a line of its own: the test harness may have begun one.
    println!(
        "\nREADY {} {} {}",
        sa.sent_pkts,
        sb.rcvd_pkts,
        sa.fault_dropped + sb.fault_dropped
    );
    std::io::stdout().flush().unwrap();
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
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

/// The value of counter `name` in each device table of `out`.
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
            .args(["--exact", "child", "--nocapture", "--test-threads", "1"])
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
    let own: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap())
        .collect();
    // Wait for the next publication (every 200 ms).
    std::thread::sleep(Duration::from_millis(500));
    let (code, text, err) = softrdma_stats(&dir, &[&pid.to_string()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        text.matches(&format!("(pid {pid},")).count(),
        2,
        "both devices listed:\n{text}"
    );
    let sent = values(&text, "sent_pkts");
    let rcvd = values(&text, "rcvd_pkts");
    let dropped = values(&text, "fault_dropped");
    assert_eq!(sent.len(), 2, "{text}");
    // At least what the child saw when it reported (it is idle since).
    assert!(sent[0] >= own[0] && own[0] > 20 * 256, "{text}\n{line}");
    assert!(rcvd[1] >= own[1], "{text}\n{line}");
    assert!(
        dropped.iter().sum::<u64>() >= own[2] && own[2] > 0,
        "{text}"
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
    let (code, _, err) = softrdma_stats(&dir, &["x12"]);
    assert_eq!(code, 2, "{err}");
    std::fs::remove_dir(&dir).unwrap();
    let _ = pid;
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
