//! `compare --quick` once: the harness runs every measure (the baselines'
//! peers, perftest through the shim, softrdma perf, the footprint, rdma_cm
//! set-up through both shims), prints a complete table with a verdict for
//! every goal, and draws the SVG. Only
//! structure and sanity are checked here; the goals' figures belong in the
//! harness's output (a loaded 2-core box says nothing about them).

use std::path::PathBuf;
use std::process::Command;

fn value(row: &str) -> f64 {
    let cols: Vec<&str> = row.split('|').map(str::trim).collect();
    cols[2]
        .parse()
        .unwrap_or_else(|_| panic!("no value in {row:?}"))
}

#[test]
fn quick_run_prints_the_table_and_draws_the_svg() {
    // The harness needs the shims and `softrdma` next to it.
    let dir = test_support::shim::own_profile_dir();
    test_support::shim::ensure_built(&dir, true);
    test_support::shim::ensure_rdmacm_built(&dir);
    let out = tempdir();
    let o = Command::new(env!("CARGO_BIN_EXE_compare"))
        .args(["--quick", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(
        o.status.success(),
        "compare --quick: {}\n{stdout}\n{stderr}",
        o.status
    );
    let rows: Vec<&str> = stdout.lines().filter(|l| l.starts_with("| ")).collect();
    // Every measure, with a positive figure in its unit.
    for (what, unit) in [
        ("memcpy, one thread", "MiB/s"),
        ("TCP loopback stream, 2 processes, 64 KiB", "MiB/s"),
        ("UDP ping-pong, 2 B, busy-polling", "usec"),
        ("UDP ping-pong, 2 B, a blocked receive thread", "usec"),
        ("UDP 64 B datagrams", "Mpps"),
        ("UDP 4 KiB datagrams", "MiB/s"),
        ("ib_write_bw -s 65536 RC (", "MiB/s"),
        ("ib_write_bw -s 65536 RC --odp", "MiB/s"),
        ("ib_read_bw -s 65536 RC (", "MiB/s"),
        ("ib_read_bw -s 65536 RC --odp", "MiB/s"),
        ("ib_send_bw -s 65536 RC (", "MiB/s"),
        ("ib_send_bw -s 65536 RC --odp", "MiB/s"),
        ("over the kernel's UDP path (SOFTRDMA_SHM=off", "MiB/s"),
        ("ib_write_bw -s 64 RC --odp: message rate", "Mpps"),
        ("ib_write_bw -s 65536 -q 16", "MiB/s"),
        ("ib_write_lat -s 2 RC --odp: t_typical", "usec"),
        ("ib_send_lat -s 2 RC --odp: t_typical", "usec"),
        ("softrdma perf write_bw (embedded default", "MiB/s"),
        ("4 KiB pages: steady", "MiB/s"),
        ("4 KiB pages: fresh (each page faulted once)", "MiB/s"),
        ("4 KiB pages, one thread", "MiB/s"),
        ("huge pages advised (--thp): steady", "MiB/s"),
        (
            "huge pages advised (--thp): fresh (each page faulted once)",
            "MiB/s",
        ),
        ("huge pages advised (--thp), one thread", "MiB/s"),
        ("implicit ODP over 1 TiB", "bytes"),
        ("rdma_cm: 100 connections connected at once", "conn/s"),
        ("rdma_cm: 100 connections from nothing", "conn/s"),
    ] {
        let row = rows
            .iter()
            .find(|r| r.contains(what))
            .unwrap_or_else(|| panic!("no row for {what:?}:\n{stdout}"));
        assert!(row.contains(&format!("| {unit} |")), "{row}");
        let v = value(row);
        assert!(v > 0.0 && v.is_finite(), "{row}");
    }
    // UCX's rows where ucx_perftest is installed (the two-host ones where
    // namespaces can be made: root).
    let have_ucx = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("ucx_perftest").is_file()));
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| {
        use std::os::unix::fs::MetadataExt;
        m.uid() == 0
    });
    let ours = "UCX rc_verbs on the soft device";
    for (place, needs_root, theirs) in [
        ("(one host", false, "UCX posix,cma"),
        ("(2 network-namespace hosts", true, "UCX tcp"),
    ] {
        if !have_ucx || (needs_root && !root) {
            continue;
        }
        for (test, unit) in [("tag_bw -s 65536", "MiB/s"), ("tag_lat -s 8", "usec")] {
            for party in [ours, theirs] {
                let row = rows
                    .iter()
                    .find(|r| r.contains(test) && r.contains(party) && r.contains(place))
                    .unwrap_or_else(|| panic!("no row for {test} {party} {place}:\n{stdout}"));
                assert!(row.contains(&format!("| {unit} |")), "{row}");
                let v = value(row);
                assert!(v > 0.0 && v.is_finite(), "{row}");
            }
        }
    }
    // The implicit footprint is a count of bytes, not a timing: a 1 GiB
    // touch costs per-page state (2 bits a page at least), far below 1 GiB.
    let fp = value(
        rows.iter()
            .find(|r| r.contains("implicit ODP over"))
            .unwrap(),
    );
    assert!(fp >= 65536.0 && fp < (1u64 << 30) as f64, "{fp}");
    // Every goal has a ratio and a verdict.
    let goals: Vec<&&str> = rows
        .iter()
        .filter(|r| r.contains(" >= ") || r.contains(" <= "))
        .collect();
    assert_eq!(goals.len(), 33, "{stdout}");
    for g in goals {
        assert!(g.ends_with("| PASS |") || g.ends_with("| FAIL |"), "{g}");
        assert!(g.contains("x | "), "{g}");
    }
    // The sweep table: 23 sizes, 2 .. 8 MiB, three series.
    let sweep: Vec<&&str> = rows
        .iter()
        .filter(|r| {
            r[2..]
                .split(' ')
                .next()
                .is_some_and(|x| x.parse::<u64>().is_ok())
        })
        .collect();
    assert_eq!(sweep.len(), 23, "{stdout}");
    assert!(sweep[0].starts_with("| 2 |") && sweep[22].starts_with("| 8388608 |"));
    for r in &sweep {
        assert_eq!(r.matches('|').count(), 5, "{r}");
        assert!(!r.contains(" - "), "a series lacks a size: {r}");
    }
    // The picture.
    let svg = std::fs::read_to_string(out.join("bandwidth.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    for name in [
        "ib_write_bw -a (pinned)",
        "ib_write_bw -a --odp",
        "TCP loopback stream",
        "memcpy",
    ] {
        assert!(svg.contains(name), "the SVG lacks {name:?}");
    }
    assert!(svg.matches("<polyline").count() >= 3, "three lines drawn");
    assert!(stdout.contains(&format!("picture: {}", out.join("bandwidth.svg").display())));
    assert!(std::fs::read_to_string(out.join("results.md"))
        .unwrap()
        .contains("| goal |"));
    let _ = std::fs::remove_dir_all(&out);
}

fn tempdir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("compare-test-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
