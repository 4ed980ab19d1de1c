//! The real rdma_cm programs of Debian (rdmacm-utils, perftest) between two
//! processes on our libibverbs.so.1 and librdmacm.so.1, each under a
//! deadline; and our own C program of the API's semantics (tests/c/).

mod common;
use common::*;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use test_support::procs::{all_text, text};

const TCP: u16 = 0x0106;
/// perftest binds its port, then builds its buffers and QPs before
/// `rdma_listen`: its client waits.
const PERFTEST_SETTLE: Duration = Duration::from_secs(2);

/// A perftest pair over rdma_cm. perftest connects twice (its parameter
/// channel, then the test's QPs) and its server destroys its listener and
/// binds a new one in between: the client must find the second
/// (`NO_LISTENER_GRACE` in verbs-shim/src/rdmacm/conn.rs), or it is
/// rejected and Debian's perftest (4.5-0.17) crashes retrying on the ids
/// it destroyed.
fn perftest(prog: &str, args: &[&str], port: u16) -> (String, String) {
    let p = port.to_string();
    let mut sargs = args.to_vec();
    sargs.extend(["-p", &p]);
    let mut cargs = sargs.clone();
    cargs.push("127.0.0.1");
    pair((prog, &sargs), (prog, &cargs), TCP, port, PERFTEST_SETTLE)
}
const UDP: u16 = 0x0111;

#[test]
fn rping_verifies_100_iterations() {
    let (s, c) = pair(
        (
            "rping",
            &[
                "-s", "-a", "0.0.0.0", "-p", "20901", "-V", "-C", "100", "-v",
            ],
        ),
        (
            "rping",
            &[
                "-c",
                "-a",
                "127.0.0.1",
                "-p",
                "20901",
                "-V",
                "-C",
                "100",
                "-v",
            ],
        ),
        TCP,
        20901,
        Duration::ZERO,
    );
    assert!(c.contains("ping data: rdma-ping-99: "), "{c}");
    assert!(s.contains("server ping data: rdma-ping-99: "), "{s}");
}

#[test]
fn rping_to_a_port_nobody_listens_on_is_rejected() {
    let _g = test_support::serial::serial();
    let t0 = std::time::Instant::now();
    let c = spawn(
        "rping",
        &["-c", "-a", "127.0.0.1", "-p", "20902", "-C", "1"],
    );
    let o = wait("rping client", c, 30);
    let t = all_text(&o);
    assert!(!o.status.success());
    // IB_CM_REJ_INVALID_SERVICE_ID, at once (no retransmissions).
    assert!(t.contains("RDMA_CM_EVENT_REJECTED, error 8"), "{t}");
    assert!(t0.elapsed() < std::time::Duration::from_secs(10));
}

#[test]
fn ucmatose_10_connections() {
    let (s, c) = pair(
        ("ucmatose", &["-p", "20903", "-c", "10", "-C", "10"]),
        (
            "ucmatose",
            &["-s", "127.0.0.1", "-p", "20903", "-c", "10", "-C", "10"],
        ),
        TCP,
        20903,
        Duration::ZERO,
    );
    for o in [&s, &c] {
        assert!(o.contains("data transfers complete"), "{o}");
        assert!(o.contains("return status 0"), "{o}");
    }
}

#[test]
fn udaddy_sidr_and_datagrams() {
    // udaddy's port is fixed (7174); -p is its port space.
    let (s, c) = pair(
        ("udaddy", &["-c", "2", "-C", "5"]),
        ("udaddy", &["-s", "127.0.0.1", "-c", "2", "-C", "5"]),
        UDP,
        7174,
        Duration::ZERO,
    );
    for o in [&s, &c] {
        assert!(o.contains("data transfers complete"), "{o}");
        assert!(o.contains("return status 0"), "{o}");
    }
}

#[test]
fn rdma_server_and_client() {
    let (s, c) = pair(
        ("rdma_server", &["-p", "20904"]),
        ("rdma_client", &["-s", "127.0.0.1", "-p", "20904"]),
        TCP,
        20904,
        Duration::ZERO,
    );
    assert!(s.contains("rdma_server: end 0"), "{s}");
    assert!(c.contains("rdma_client: end 0"), "{c}");
}

#[test]
fn ib_write_bw_over_rdma_cm() {
    let (s, c) = perftest("ib_write_bw", &["-R", "-n", "200"], 20905);
    for o in [&s, &c] {
        assert!(o.contains(" 65536      200"), "{o}");
    }
}

#[test]
fn ib_send_bw_odp_over_rdma_cm() {
    let (s, c) = perftest("ib_send_bw", &["-R", "--odp", "-n", "200"], 20906);
    for o in [&s, &c] {
        assert!(o.contains(" 65536      200"), "{o}");
    }
}

/// tests/c/NAME.c compiled against the installed headers, linked with
/// -lrdmacm -libverbs (the installed symbol versions, which ours export);
/// `None` (the test skips) where librdmacm-dev is not installed.
fn compile(name: &str) -> Option<PathBuf> {
    if !test_support::tools::have_header("rdma/rdma_cma.h", "librdmacm-dev") {
        return None;
    }
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/c/{name}.c"));
    let dir = std::env::temp_dir().join(format!("rdmacm-shim-c-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join(name);
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(&cc)
        .args(["-std=gnu11", "-O1", "-Wall", "-Werror", "-o"])
        .arg(&exe)
        .arg(&src)
        .args(["-lrdmacm", "-libverbs", "-pthread"])
        .output()
        .expect("run cc");
    assert!(
        out.status.success(),
        "{cc} failed on {} (needs librdmacm-dev):\n{}",
        src.display(),
        text(&out.stderr)
    );
    Some(exe)
}

#[test]
fn cm_api_semantics() {
    let Some(exe) = compile("cm_api") else {
        return;
    };
    let _g = test_support::serial::serial();
    let c = program(exe.to_str().unwrap(), &["20907"]).spawn().unwrap();
    let o = wait("cm_api", c, 60);
    let t = all_text(&o);
    assert!(o.status.success(), "cm_api: {}\n{t}", o.status);
    assert!(t.contains("cm_api: ok"), "{t}");
}

#[test]
fn ids_and_channels_across_fork() {
    let Some(exe) = compile("fork_ids") else {
        return;
    };
    let _g = test_support::serial::serial();
    let c = program(exe.to_str().unwrap(), &["20917"]).spawn().unwrap();
    let o = wait("fork_ids", c, 60);
    let t = all_text(&o);
    assert!(o.status.success(), "fork_ids: {}\n{t}", o.status);
    assert!(t.contains("fork_ids: ok"), "{t}");
}

/// `rping -c` to `dst` in a network namespace of its own (`unshare -n`)
/// whose routing `setup` makes; its output (it must fail) within `secs`.
fn rping_in_netns(setup: &str, dst: &str, secs: u64) -> Option<String> {
    if !test_support::tools::works("unshare", &["-n", "true"]) {
        return None;
    }
    let script = format!("ip link set lo up && {setup} exec rping -c -a {dst} -p 20908 -C 1 -v");
    let c = spawn("unshare", &["-n", "sh", "-c", &script]);
    let t0 = std::time::Instant::now();
    let o = wait("rping in a namespace", c, 30);
    let t = all_text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(t0.elapsed() < Duration::from_secs(secs), "{t}");
    Some(t)
}

#[test]
fn no_route_is_addr_error() {
    // No route but the loopback's: ENETUNREACH (101), at once.
    if let Some(t) = rping_in_netns("", "10.1.1.1", 5) {
        assert!(t.contains("RDMA_CM_EVENT_ADDR_ERROR, error -101"), "{t}");
    }
}

#[test]
fn nobody_answering_is_unreachable() {
    // A route to a host that never answers: the REQ's retries run out
    // (15 × 268 ms), UNREACHABLE with -ETIMEDOUT.
    if let Some(t) = rping_in_netns("ip route add 10.9.0.0/16 dev lo &&", "10.9.1.1", 25) {
        assert!(t.contains("RDMA_CM_EVENT_UNREACHABLE, error -110"), "{t}");
    }
}

#[test]
fn softrdma_run_provides_librdmacm() {
    // `softrdma run` puts our librdmacm.so.1 first: the real one would fail
    // to open /dev/infiniband/rdma_cm; ours rejects (nobody listens).
    let dir = lib_dir();
    test_support::shim::ensure_built(dir, true);
    let _g = test_support::serial::serial();
    let c = Command::new(dir.join("softrdma"))
        .args([
            "run",
            "--",
            "rping",
            "-c",
            "-a",
            "127.0.0.1",
            "-p",
            "20909",
            "-C",
            "1",
        ])
        .env_remove("LD_LIBRARY_PATH")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let o = wait("softrdma run rping", c, 30);
    let t = all_text(&o);
    assert!(t.contains("RDMA_CM_EVENT_REJECTED, error 8"), "{t}");
}

#[test]
fn rping_connects_through_lost_duplicated_reordered_datagrams() {
    // Both devices drop a fifth of what they receive (CM MADs included),
    // duplicate and reorder some: the CM's retransmissions and the RC
    // transport still connect and deliver every iteration, verified (-V)
    // on both sides.
    let run = |args: &[&str]| {
        let mut c = program("rping", args);
        c.env("SOFTRDMA_FAULTS", "drop=0.2,dup=0.1,reorder=0.1,seed=7");
        c.spawn().unwrap()
    };
    let _g = test_support::serial::serial();
    let s = run(&["-s", "-a", "0.0.0.0", "-p", "20910", "-V", "-C", "20", "-v"]);
    let end = std::time::Instant::now() + Duration::from_secs(30);
    while !cm_listening(TCP, 20910) && std::time::Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    let c = run(&[
        "-c",
        "-a",
        "127.0.0.1",
        "-p",
        "20910",
        "-V",
        "-C",
        "20",
        "-v",
    ]);
    let co = wait("rping client", c, 90);
    let so = wait("rping server", s, 30);
    let (ct, st) = (all_text(&co), all_text(&so));
    assert!(co.status.success(), "{ct}\n{st}");
    assert!(ct.contains("ping data: rdma-ping-19: "), "{ct}");
    assert!(st.contains("server ping data: rdma-ping-19: "), "{st}");
    // The server's last SEND may lose its ACK after the client, done,
    // has disconnected: that completion fails (retry exceeded, 12) as on
    // any lossy fabric. Nothing else may.
    assert!(
        so.status.success() || st.contains("cq completion failed status 12"),
        "{st}"
    );
}

#[test]
fn exiting_with_a_connection_open_disconnects_it() {
    let Some(exe) = compile("exit_disconnects") else {
        return;
    };
    let _g = test_support::serial::serial();
    let c = program(exe.to_str().unwrap(), &["20911"]).spawn().unwrap();
    let o = wait("exit_disconnects", c, 60);
    let t = all_text(&o);
    assert!(o.status.success(), "exit_disconnects: {}\n{t}", o.status);
    assert!(t.contains("exit_disconnects: ok"), "{t}");
}
