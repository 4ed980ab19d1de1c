//! Per-MR ODP counters under mlx5's names (`rdma statistic mr show`): a
//! known workload's counts through `Mr::stats`, and `softrdma stats --mr`
//! showing another process's.
//!
//! The workload, on a fresh 64-page ODP region: a peer WRITEs 16 pages (16
//! pages faulted, in one fault), `ibv_advise_mr` prefetches 8 others (8
//! prefetched, no fault), then — with userfaultfd — `madvise(DONTNEED)`
//! discards 4 written pages and `mmap(MAP_FIXED)` replaces 2 more (6 pages
//! invalidated, by 2 invalidations). The other process is this test binary
//! again ([`child_runs_the_workload`], selected by an environment variable).

use odp::{Mapping, Prot};
use soft_rdma::verbs::*;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use test_support::verbs::{all_access, connect, signaled, wait, Buf, Node};

const CHILD: &str = "SOFTRDMA_TEST_MR_COUNTERS_CHILD";
const PAGE: u64 = 4096;

/// What the workload leaves: with userfaultfd (invalidations seen) or not.
fn expected(uffd: bool) -> MrStats {
    MrStats {
        page_faults: 16,
        page_faults_handled: 1,
        page_invalidations: if uffd { 6 } else { 0 },
        page_invalidations_handled: if uffd { 2 } else { 0 },
        page_prefetch: 8,
    }
}

/// `mr`'s counters once they are `want` (an invalidation is applied by the
/// odp monitor just after the unmapping call returns), at most 10 s.
fn settles_at(mr: &Mr, want: MrStats) {
    let t = Instant::now();
    while mr.stats() != Some(want) && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(mr.stats(), Some(want));
}

/// Run the workload from `a` onto an ODP MR of `b`; the MR, its memory and
/// whether invalidations are seen.
fn workload(a: &Node, b: &Node) -> (Mr, Mapping, bool) {
    let uffd = matches!(b.dev.odp_source(), odp::InvalidationSource::Userfaultfd(_));
    let (qa, _qb) = connect(a, b, QpType::Rc);
    let src = Buf::new(16 * PAGE as usize, |i| (i % 251) as u8);
    let mra =
        a.pd.reg_mr(src.addr(), src.0.len() as u64, Access::LOCAL_WRITE)
            .unwrap();
    assert_eq!(mra.stats(), None, "a pinned MR has no ODP counters");
    let map = Mapping::anon(64 * PAGE as usize).unwrap();
    let p = map.addr() as u64;
    let mr =
        b.pd.reg_mr(p, 64 * PAGE, all_access() | Access::ON_DEMAND)
            .unwrap();
    assert_eq!(
        mr.stats(),
        Some(MrStats::default()),
        "registering faults nothing"
    );

    qa.post_send(&[SendWr {
        wr_id: 1,
        sg_list: &[src.sge(&mra, 0, src.0.len())],
        op: SendOp::Write {
            remote_addr: p,
            rkey: mr.rkey(),
        },
        flags: signaled(),
        ud: None,
    }])
    .unwrap();
    assert_eq!(wait(&a.cq, 1)[0].status, WcStatus::Success);
    let mut back = vec![0u8; src.0.len()];
    mr.read(p, &mut back).unwrap();
    assert!(back == src.0, "the WRITE's data arrived");
    let mut want = MrStats {
        page_faults: 16,
        page_faults_handled: 1,
        ..MrStats::default()
    };
    assert_eq!(mr.stats(), Some(want), "one fault of the 16 pages written");

    mr.advise(odp::Advice::PrefetchWrite, p + 32 * PAGE, 8 * PAGE, true)
        .unwrap();
    want.page_prefetch = 8;
    assert_eq!(mr.stats(), Some(want), "prefetched pages are not faults");

    if uffd {
        // SAFETY: discards 4 pages of memory this test owns; nothing holds a
        // reference into it.
        let r =
            unsafe { libc::madvise(map.as_ptr().cast(), 4 * PAGE as usize, libc::MADV_DONTNEED) };
        assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
        want.page_invalidations = 4;
        want.page_invalidations_handled = 1;
        settles_at(&mr, want);
        // A replacement rather than a bare munmap: a mapping another test
        // makes meanwhile cannot land in the hole.
        // SAFETY: replaces 2 pages of memory this test owns; no reference
        // into them is live.
        unsafe { map.replace(4 * PAGE as usize, 2 * PAGE as usize, Prot::None) }.unwrap();
        want.page_invalidations = 6;
        want.page_invalidations_handled = 2;
        settles_at(&mr, want);
    }
    assert_eq!(want, expected(uffd));
    (mr, map, uffd)
}

#[test]
fn a_known_workload_counts_faults_prefetches_and_invalidations() {
    let (a, b) = (Node::open(), Node::open());
    let (mr, _map, uffd) = workload(&a, &b);
    assert_eq!(mr.stats(), Some(expected(uffd)));
    // The per-device sums carry the same figures.
    let st = b.dev.stats();
    assert_eq!((st.odp_pages_faulted, st.odp_page_faults), (16, 1), "{st}");
    assert_eq!(st.odp_pages_prefetched, 8, "{st}");
    assert_eq!(st.odp_pages_invalidated, if uffd { 6 } else { 0 }, "{st}");
}

#[test]
fn an_implicit_mr_counts_too() {
    let (a, b) = (Node::open(), Node::open());
    let (qa, _qb) = connect(&a, &b, QpType::Rc);
    let src = Buf::new(3 * PAGE as usize, |i| i as u8);
    let mra =
        a.pd.reg_mr(src.addr(), src.0.len() as u64, Access::LOCAL_WRITE)
            .unwrap();
    let map = Mapping::anon(3 * PAGE as usize).unwrap();
    let implicit =
        b.pd.reg_mr(0, u64::MAX, all_access() | Access::ON_DEMAND)
            .unwrap();
    qa.post_send(&[SendWr {
        wr_id: 1,
        sg_list: &[src.sge(&mra, 0, src.0.len())],
        op: SendOp::Write {
            remote_addr: map.addr() as u64,
            rkey: implicit.rkey(),
        },
        flags: signaled(),
        ud: None,
    }])
    .unwrap();
    assert_eq!(wait(&a.cq, 1)[0].status, WcStatus::Success);
    let s = implicit.stats().expect("an implicit ODP MR has counters");
    // A 2 MiB child may hold the 3 pages or straddle two children.
    assert_eq!(s.page_faults, 3, "{s:?}");
    assert!((1..=2).contains(&s.page_faults_handled), "{s:?}");
}

/// Child: run the workload with `Node::open` devices (so they publish),
/// report the MR's number and counters, and wait for stdin to close.
#[test]
fn child_runs_the_workload() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let (a, b) = (Node::open(), Node::open());
    let (mr, _map, uffd) = workload(&a, &b);
    println!("\nREADY {} {}", mr.number(), u8::from(uffd));
    std::io::stdout().flush().unwrap();
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

fn softrdma_stats(dir: &std::path::Path, args: &[&str]) -> (i32, String, String) {
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

/// One line of `rdma statistic mr show`'s shape: `dev NAME mrn N` then
/// name/value pairs; the pairs by name.
fn parse_line(l: &str) -> (String, Vec<(String, u64)>) {
    let w: Vec<&str> = l.split_whitespace().collect();
    assert!(w.len() % 2 == 0 && w[0] == "dev" && w[2] == "mrn", "{l}");
    let pairs = w[2..]
        .chunks(2)
        .map(|kv| (kv[0].to_string(), kv[1].parse().expect("a number")))
        .collect();
    (w[1].to_string(), pairs)
}

#[test]
fn stats_mr_shows_another_process_odp_mrs_as_rdma_statistic_does() {
    let dir = std::env::temp_dir().join(format!("softrdma-mr-stats-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_runs_the_workload", "--nocapture"])
        .args(["--test-threads", "1"])
        .env(CHILD, "1")
        .env("SOFTRDMA_STATS_DIR", &dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.starts_with("READY") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "child ended early");
    }
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    let w: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap())
        .collect();
    let (mrn, uffd) = (w[0], w[1] == 1);
    // The next publication (every 200 ms).
    std::thread::sleep(Duration::from_millis(500));

    let (code, text, err) = softrdma_stats(&dir, &["--mr", &pid.to_string()]);
    assert_eq!(code, 0, "{err}");
    // Only the ODP MR: the other device's pinned MR has no counters.
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    let (dev, pairs) = parse_line(lines[0]);
    assert_eq!(dev, "softrdma0");
    let names: Vec<&str> = pairs.iter().map(|p| p.0.as_str()).collect();
    let mut want = vec!["mrn"];
    want.extend(MrStats::NAMES);
    want.push("pid");
    assert_eq!(names, want, "{text}");
    let mut values = vec![mrn];
    values.extend(expected(uffd).values());
    values.push(u64::from(pid));
    assert_eq!(
        pairs.iter().map(|p| p.1).collect::<Vec<_>>(),
        values,
        "{text}"
    );
    // Without a pid: every process's, this one's among them.
    let (code, all, _) = softrdma_stats(&dir, &["--mr"]);
    assert_eq!(code, 0);
    assert!(all.contains(lines[0]), "{all}");
    // The device table is unchanged by --mr's existence.
    let (code, table, _) = softrdma_stats(&dir, &[&pid.to_string()]);
    assert_eq!(code, 0);
    assert!(table.contains("odp_pages_prefetched"), "{table}");
    let (code, _, err) = softrdma_stats(&dir, &["--mr", "x1"]);
    assert_eq!(code, 2, "{err}");

    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    let (code, _, err) = softrdma_stats(&dir, &["--mr", &pid.to_string()]);
    assert_eq!(code, 1, "{err}");
    std::fs::remove_dir(&dir).unwrap();
}
