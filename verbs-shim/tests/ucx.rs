//! UCX (Debian `ucx-utils` 1.13) on the soft device through `softrdma run`:
//! `ucx_info -d` finds `softrdma0:1` with `rc_verbs` and `ud_verbs`, and
//! `ucx_perftest` pairs run over each (a hang fails after 60 s); and the
//! file-system face UCX needs (`fsface/`) is seen by the program run and by
//! nobody else, and changes no other path.
//!
//! ucx_perftest 1.13 has no data validation: its runs check completion and
//! sane figures; `tests/c/ucp_data.c` checks every byte of UCP's tagged
//! messages (eager and rendezvous), PUTs and GETs.

mod common;
use common::*;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use test_support::net::{two_hosts, wait_listening, TwoHosts};
use test_support::procs::{all_text, finish};
use test_support::serial::serial;
use test_support::{shim, tools};

/// `softrdma` beside the shim (built with the face if missing).
fn softrdma() -> PathBuf {
    let dir = lib_dir();
    shim::ensure_built(dir, true);
    dir.join("softrdma")
}

/// `softrdma run -- prog args`, with UCX limited to `tls` on our device.
fn through_run(prog: &str, args: &[&str], tls: Option<&str>) -> Command {
    on_host(None, prog, args, tls)
}

/// [`through_run`] on a host: in network namespace `ns` with the device on
/// address `addr` (`ip netns exec` keeps the environment).
fn on_host(host: Option<(&str, &str)>, prog: &str, args: &[&str], tls: Option<&str>) -> Command {
    let dir = softrdma();
    let mut c = shim::run_on(dir.parent().unwrap(), host, prog, args);
    if let Some(t) = tls {
        c.env("UCX_TLS", t).env("UCX_NET_DEVICES", "softrdma0:1");
    }
    c
}

fn run_ok(prog: &str, args: &[&str]) -> String {
    let child = through_run(prog, args, None).spawn().expect("softrdma run");
    let out = finish(prog, child, Duration::from_secs(60));
    let all = all_text(&out);
    assert!(
        out.status.success(),
        "{prog} {args:?}: {}\n{all}",
        out.status
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn ucx_info_lists_rc_and_ud_verbs_on_softrdma0() {
    if !tools::have("ucx_info") {
        return;
    }
    let out = run_ok("ucx_info", &["-d"]);
    let md = out
        .split("# Memory domain: ")
        .find(|s| s.starts_with("softrdma0\n"))
        .unwrap_or_else(|| panic!("no softrdma0 memory domain:\n{out}"));
    for tl in ["rc_verbs", "ud_verbs"] {
        let at = md
            .find(&format!("Transport: {tl}\n"))
            .unwrap_or_else(|| panic!("no {tl}:\n{md}"));
        let dev = md[at..].lines().nth(1).unwrap_or("");
        assert!(dev.ends_with("Device: softrdma0:1"), "{tl}: {dev:?}");
    }
}

/// The figures of a `-f` run's last line: iterations, then typical,
/// average and overall latency (µs), average and overall bandwidth (MB/s),
/// average and overall message rate.
fn figures(out: &str) -> Vec<f64> {
    let line = out.lines().last().unwrap_or("");
    line.split_whitespace()
        .map(|w| w.parse().unwrap_or(f64::NAN))
        .collect()
}

/// UCX 1.13.1's `uct_ib_md_close` hands its implicit-ODP handle to
/// `uct_ib_mem_dereg` as if it were the parameters struct, so it reads the
/// handle's flags (1) as a pointer and crashes at exit whenever the key it
/// reads as the field mask is odd — whatever the device. With implicit ODP a
/// process may end so, after its run: nothing else is excused.
fn ended_well(st: std::process::ExitStatus, out: &str, odp: bool) -> bool {
    use std::os::unix::process::ExitStatusExt;
    let ucx_bug = odp && out.contains("(uct_ib_md_close+");
    // The crash ends the process it hits: the server (ucp_data itself), or
    // the forked client, whose SIGSEGV (status 0xb) the server reports.
    st.success()
        || (ucx_bug && st.signal() == Some(libc::SIGSEGV))
        || (ucx_bug && st.code() == Some(1) && out.contains("client status 0xb"))
}

/// One ucx_perftest pair on TCP `port` over `tls`; returns the client's figures.
fn perftest(port: u16, tls: &str, args: &[&str], iters: u32) -> Vec<f64> {
    perftest_with(port, tls, args, iters, false, None)
}

/// As [`perftest`]; with `odp`, memory is registered by UCX's implicit ODP
/// key (`UCX_IB_REG_METHODS=odp`: the only method, so the device must have
/// it); with `hosts`, server and client run on two network-namespace hosts.
fn perftest_with(
    port: u16,
    tls: &str,
    args: &[&str],
    iters: u32,
    odp: bool,
    hosts: Option<&TwoHosts>,
) -> Vec<f64> {
    let _g = serial();
    let p = port.to_string();
    let host = |k: usize| hosts.map(|h| (h.ns[k].as_str(), h.addr[k].as_str()));
    let run = |k: usize, args: &[&str]| {
        let mut c = on_host(host(k), "ucx_perftest", args, Some(tls));
        if odp {
            c.env("UCX_IB_REG_METHODS", "odp");
        }
        c
    };
    let server = run(0, &["-p", &p]).spawn().expect("server");
    assert!(
        wait_listening(host(0).map(|h| h.0), port, Duration::from_secs(20)),
        "ucx_perftest server never listened on {port}"
    );
    let n = iters.to_string();
    let peer = host(0).map_or("127.0.0.1", |h| h.1);
    let mut cargs = vec!["-p", &p, peer, "-f", "-n", &n, "-w", "100"];
    cargs.extend_from_slice(args);
    let client = run(1, &cargs).spawn().expect("client");
    let c = finish("ucx_perftest client", client, Duration::from_secs(60));
    let s = finish("ucx_perftest server", server, Duration::from_secs(30));
    let (so, co) = (all_text(&s), all_text(&c));
    assert!(
        ended_well(s.status, &so, odp) && ended_well(c.status, &co, odp),
        "{tls} {args:?}: server {}, client {}\n--- server:\n{so}\n--- client:\n{co}",
        s.status,
        c.status
    );
    let f = figures(&String::from_utf8_lossy(&c.stdout));
    // Iterations, three latencies (µs), bandwidth average/overall (MB/s
    // with two decimals: an 8 B tag_lat slowed by a loaded machine prints
    // 0.00), message rate average/overall.
    assert!(
        f.len() == 8
            && f[0] == f64::from(iters)
            && f.iter().all(|x| x.is_finite() && *x >= 0.0)
            && [1, 2, 3, 6, 7].iter().all(|&k| f[k] > 0.0),
        "{tls} {args:?}: no sane result line:\n{co}"
    );
    f
}

/// The tests each transport runs: (args, iterations, a bandwidth test?).
const UCP_TESTS: [(&[&str], u32, bool); 5] = [
    (&["-t", "tag_bw", "-s", "65536"], 1000, true),
    (&["-t", "tag_lat", "-s", "8"], 5000, false),
    (&["-t", "ucp_put_bw", "-s", "65536"], 1000, true),
    (&["-t", "ucp_get", "-s", "65536"], 1000, true),
    (&["-t", "ucp_am_bw", "-s", "65536"], 1000, true),
];

fn check(tls: &str, port: u16, args: &[&str], iters: u32, bw: bool) {
    let f = perftest(port, tls, args, iters);
    if bw {
        // More than 1 MB/s moved: the run did not crawl through timeouts.
        assert!(f[5] > 1.0, "{tls} {args:?}: {} MB/s", f[5]);
    } else {
        // A typical round trip under a millisecond.
        assert!(f[1] < 1000.0, "{tls} {args:?}: {} us", f[1]);
    }
}

#[test]
fn ucx_perftest_over_rc_verbs() {
    if !tools::have("ucx_perftest") {
        return;
    }
    // UCP connects RC endpoints through an auxiliary transport (`:aux`: wireup only).
    for (i, (args, n, bw)) in UCP_TESTS.into_iter().enumerate() {
        check("rc_verbs,ud_verbs:aux", 14310 + i as u16, args, n, bw);
    }
    let uct = ["-x", "rc_verbs", "-d", "softrdma0:1"];
    for (i, t) in [["put_bw", "zcopy"], ["get", "zcopy"], ["am_bw", "bcopy"]]
        .into_iter()
        .enumerate()
    {
        let args: Vec<&str> = uct
            .iter()
            .copied()
            .chain(["-t", t[0], "-D", t[1], "-s", "8192"])
            .collect();
        check("rc_verbs", 14320 + i as u16, &args, 2000, true);
    }
}

#[test]
fn ucx_perftest_over_ud_verbs() {
    if !tools::have("ucx_perftest") {
        return;
    }
    for (i, (args, n, bw)) in UCP_TESTS.into_iter().enumerate() {
        check("ud_verbs", 14330 + i as u16, args, n, bw);
    }
    let args = [
        "-x",
        "ud_verbs",
        "-d",
        "softrdma0:1",
        "-t",
        "am_bw",
        "-D",
        "bcopy",
        "-s",
        "4000",
    ];
    check("ud_verbs", 14340, &args, 2000, true);
}

/// The face's trees a process (of this PID namespace) left in the temporary directory.
fn trees_of(pid: u32) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let ns = std::fs::metadata("/proc/self/ns/pid").map_or(0, |m| m.ino());
    let pfx = format!("softrdma-face.{ns}.{pid}.");
    std::fs::read_dir(std::env::temp_dir())
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&pfx))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn the_face_is_the_programs_alone_and_changes_no_other_path() {
    let before = std::fs::read_dir("/sys/class/infiniband").is_ok();
    let sh = |script: &str| run_ok("/bin/sh", &["-c", script]);
    // The program sees the device's paths...
    let out = sh(
        "cat /sys/class/infiniband/softrdma0/ports/1/gid_attrs/types/1; \
                  test -c /dev/infiniband/uverbs0 && echo chr; \
                  cat /sys/class/infiniband_verbs/uverbs0/ibdev; \
                  ls /sys/class/infiniband/softrdma0/device/net/; echo pid $$",
    );
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("RoCE v2"), "{out}");
    assert_eq!(lines.next(), Some("chr"), "{out}");
    assert_eq!(lines.next(), Some("softrdma0"), "{out}");
    assert!(
        lines.next().is_some_and(|l| !l.is_empty()),
        "a netdev: {out}"
    );
    let pid: u32 = lines
        .next()
        .and_then(|l| l.strip_prefix("pid "))
        .and_then(|p| p.parse().ok())
        .expect("the shell's pid");
    // ... and leaves nothing behind: a tree its exit handlers did not remove
    // (the shell ends with _exit) goes with the next program's lookup.
    let _ = sh("cat /sys/class/infiniband/softrdma0/node_type");
    assert!(trees_of(pid).is_empty(), "{:?} left", trees_of(pid));
    // Other paths read as they do outside: a file, a directory's listing
    // (the face's parent included), and a missing path's error.
    let outside = |p: &str| {
        let o = Command::new("/bin/sh")
            .args(["-c", &format!("ls -a {p} 2>&1; cat {p}/mtu 2>&1")])
            .output()
            .expect("sh");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    for p in [
        "/sys/class/net/lo",
        "/sys/class",
        "/dev",
        "/sys/class/infinibandx",
    ] {
        let inside = sh(&format!("ls -a {p} 2>&1; cat {p}/mtu 2>&1; true"));
        assert_eq!(inside, outside(p), "{p} differs inside the face");
    }
    // Nobody else sees it: not this process, before or after.
    assert_eq!(std::fs::read_dir("/sys/class/infiniband").is_ok(), before);
    assert_eq!(
        std::fs::metadata("/dev/infiniband/uverbs0").is_ok(),
        std::path::Path::new("/dev/infiniband").exists()
    );
}

#[test]
fn ucx_perftest_put_bw_with_implicit_odp() {
    if !tools::have("ucx_perftest") {
        return;
    }
    let uct = [
        "-x",
        "rc_verbs",
        "-d",
        "softrdma0:1",
        "-t",
        "put_bw",
        "-D",
        "zcopy",
        "-s",
        "65536",
    ];
    let f = perftest_with(14350, "rc_verbs", &uct, 1000, true, None);
    assert!(f[5] > 1.0, "UCT put_bw over implicit ODP: {} MB/s", f[5]);
    let ucp = ["-t", "ucp_put_bw", "-s", "65536"];
    let f = perftest_with(14351, "rc_verbs,ud_verbs:aux", &ucp, 1000, true, None);
    assert!(f[5] > 1.0, "UCP put_bw over implicit ODP: {} MB/s", f[5]);
}

#[test]
fn ucx_perftest_between_two_network_namespace_hosts() {
    if !tools::have("ucx_perftest") {
        return;
    }
    let Some(hosts) = two_hosts("ucx", [10, 79, 0]) else {
        return;
    };
    // Each host's face names the interface behind its device's address.
    for k in 0..2 {
        let child = on_host(
            Some((&hosts.ns[k], &hosts.addr[k])),
            "cat",
            &["/sys/class/infiniband/softrdma0/ports/1/gid_attrs/ndevs/1"],
            None,
        )
        .spawn()
        .expect("cat");
        let out = finish("cat", child, Duration::from_secs(30));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            hosts.veth[k],
            "{}",
            all_text(&out)
        );
    }
    for (i, tls) in ["rc_verbs,ud_verbs:aux", "ud_verbs"]
        .into_iter()
        .enumerate()
    {
        let port = 14360 + 2 * i as u16;
        let bw = ["-t", "tag_bw", "-s", "65536"];
        let f = perftest_with(port, tls, &bw, 500, false, Some(&hosts));
        assert!(f[5] > 1.0, "{tls} tag_bw between hosts: {} MB/s", f[5]);
        let lat = ["-t", "tag_lat", "-s", "8"];
        let f = perftest_with(port + 1, tls, &lat, 2000, false, Some(&hosts));
        assert!(f[1] < 1000.0, "{tls} tag_lat between hosts: {} us", f[1]);
    }
}

/// `tests/c/ucp_data.c` compiled against UCX's headers (Debian `libucx-dev`);
/// None (skipped, unless tools are required) without them.
fn ucp_data() -> Option<PathBuf> {
    if !std::path::Path::new("/usr/include/ucp/api/ucp.h").exists() {
        tools::unavailable("libucx-dev", "no /usr/include/ucp/api/ucp.h");
        return None;
    }
    let c = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/c");
    let dir = std::env::temp_dir().join(format!("verbs-shim-ucx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join("ucp_data");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(&cc)
        .args(["-std=gnu11", "-O1", "-Wall", "-Werror", "-I"])
        .arg(&c)
        .arg("-o")
        .arg(&exe)
        .arg(c.join("ucp_data.c"))
        .args(["-lucp", "-lucs", "-pthread"])
        .output()
        .expect("run cc");
    assert!(out.status.success(), "{cc}: {}", all_text(&out));
    Some(exe)
}

#[test]
fn ucp_moves_every_byte_over_rc_verbs_and_ud_verbs() {
    let Some(exe) = ucp_data() else { return };
    let exe = exe.to_str().expect("a UTF-8 path");
    // Pinned (UCX's registration cache), then UCX's implicit ODP key.
    for odp in [false, true] {
        for tls in ["rc_verbs,ud_verbs:aux", "ud_verbs"] {
            let _g = serial();
            let mut cmd = through_run(exe, &[], Some(tls));
            if odp {
                cmd.env("UCX_IB_REG_METHODS", "odp");
            }
            let child = cmd.spawn().expect("ucp_data");
            // 4 MiB over ud_verbs in a debug build can take half a minute.
            let out = finish("ucp_data", child, Duration::from_secs(150));
            let all = all_text(&out);
            // With implicit ODP, ucp_data leaves UCX's context to the exit
            // (see its teardown): every run ends cleanly.
            assert!(
                out.status.success(),
                "{tls} odp={odp}: {}\n{all}",
                out.status
            );
            for step in ["OK tag", "OK put", "OK get", "OK done"] {
                assert!(all.contains(step), "{tls} odp={odp}: no {step:?}:\n{all}");
            }
        }
    }
}
