//! The real rdma_cm programs of Debian (rdmacm-utils, perftest) between two
//! processes on our libibverbs.so.1 and librdmacm.so.1, each under a
//! deadline; and our own C program of the API's semantics (tests/c/).

mod common;
use common::*;
use std::process::Command;
use std::time::Duration;
use test_support::procs::all_text;

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

/// A peer killed with SIGKILL after ESTABLISHED (no DREQ: its device dies
/// with it): the survivor, idle or sending, hears DISCONNECTED from the
/// CM's liveness probe (3 s at most by default), its QP in error and
/// its receives flushed (tests/c/killed_peer.c).
#[test]
fn a_peer_killed_after_established_is_disconnected() {
    let Some(exe) = compile("killed_peer") else {
        return;
    };
    let _g = test_support::serial::serial();
    for (mode, port) in [("idle", "20912"), ("send", "20913")] {
        let c = program(exe.to_str().unwrap(), &[port, mode])
            .spawn()
            .unwrap();
        let o = wait("killed_peer", c, 60);
        let t = all_text(&o);
        assert!(o.status.success(), "killed_peer {mode}: {}\n{t}", o.status);
        assert!(t.contains(&format!("killed_peer: ok: {mode}")), "{t}");
        println!("{t}");
    }
}

/// Two network-namespace hosts joined by a veth (`NET.1` the server's,
/// `NET.2` the client's), each program's device on its host's address
/// (`SOFTRDMA_ADDR`); None where namespaces cannot be made.
fn two_hosts(prefix: &str, net: [u8; 3]) -> Option<test_support::net::TwoHosts> {
    test_support::net::two_hosts(prefix, net)
}

fn on(h: &test_support::net::TwoHosts) -> [Option<Host<'_>>; 2] {
    [0, 1].map(|k| {
        Some(Host {
            ns: &h.ns[k],
            addr: &h.addr[k],
        })
    })
}

#[test]
fn rping_verifies_100_iterations_between_two_hosts() {
    let Some(h) = two_hosts("rcmr", [10, 81, 0]) else {
        return;
    };
    let _g = test_support::serial::serial();
    let (s, c, ok) = run_pair_on(
        on(&h),
        (
            "rping",
            &[
                "-s", "-a", "0.0.0.0", "-p", "20921", "-V", "-C", "100", "-v",
            ],
        ),
        (
            "rping",
            &[
                "-c", "-a", &h.addr[0], "-p", "20921", "-V", "-C", "100", "-v",
            ],
        ),
        TCP,
        20921,
        Duration::ZERO,
    );
    assert!(
        ok,
        "rping between hosts failed\n--- server:\n{s}\n--- client:\n{c}"
    );
    assert!(c.contains("ping data: rdma-ping-99: "), "{c}");
    assert!(s.contains("server ping data: rdma-ping-99: "), "{s}");
}

#[test]
fn ib_write_bw_odp_over_rdma_cm_between_two_hosts() {
    let Some(h) = two_hosts("rcmw", [10, 82, 0]) else {
        return;
    };
    let _g = test_support::serial::serial();
    let args = ["-R", "--odp", "-n", "200", "-p", "20922"];
    let mut cargs = args.to_vec();
    cargs.push(&h.addr[0]);
    let (s, c, ok) = run_pair_on(
        on(&h),
        ("ib_write_bw", &args),
        ("ib_write_bw", &cargs),
        TCP,
        20922,
        PERFTEST_SETTLE,
    );
    assert!(
        ok,
        "ib_write_bw between hosts failed\n--- server:\n{s}\n--- client:\n{c}"
    );
    for o in [&s, &c] {
        assert!(o.contains(" 65536      200"), "{o}");
    }
}

/// [`a_peer_killed_after_established_is_disconnected`] between two hosts:
/// the server on one is killed with SIGKILL once established; the client
/// on the other (idle) hears DISCONNECTED over the veth.
#[test]
fn a_peer_killed_on_another_host_is_disconnected() {
    use std::io::{Read, Write};
    let Some(h) = two_hosts("rcmk", [10, 84, 0]) else {
        return;
    };
    let Some(exe) = compile("killed_peer") else {
        return;
    };
    let exe = exe.to_str().unwrap();
    let [sh, ch] = on(&h);
    let _g = test_support::serial::serial();
    let mut s = program_on(sh, exe, &["20924", "idle", "server"])
        .spawn()
        .unwrap();
    let mut from_server = s.stdout.take().unwrap();
    let mut said = |want: u8| {
        let mut b = [0u8];
        from_server.read_exact(&mut b).expect("the server's word");
        assert_eq!(b[0], want);
    };
    said(b'l');
    let mut c = program_on(ch, exe, &["20924", "idle", "client", &h.addr[0]])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    said(b'e');
    // `ip netns exec` execs the program: this is the server itself.
    s.kill().unwrap();
    let _ = s.wait();
    c.stdin.take().unwrap().write_all(b"k").unwrap();
    let o = wait("killed_peer client", c, 30);
    let t = all_text(&o);
    assert!(o.status.success(), "killed_peer client: {}\n{t}", o.status);
    assert!(t.contains("killed_peer: ok: idle"), "{t}");
    println!("{t}");
}

/// rdma_set_option (REUSEADDR, AFONLY, TOS, ACK_TIMEOUT) and the listen
/// backlog with the kernel's rules and errnos (tests/c/options.c).
#[test]
fn options_and_backlog_as_the_kernel_enforces_them() {
    let Some(exe) = compile("options") else {
        return;
    };
    let _g = test_support::serial::serial();
    let c = program(exe.to_str().unwrap(), &["20930"]).spawn().unwrap();
    let o = wait("options", c, 60);
    let t = all_text(&o);
    assert!(o.status.success(), "options: {}\n{t}", o.status);
    assert!(t.contains("options: ok"), "{t}");
}

/// rdma_xserver/rdma_xclient (rdmacm-utils): RC, and XRC over rdma_cm
/// (RDMA_PS_IB, rdma_create_ep with IBV_QPT_XRC_SEND/XRC_RECV, the SRQ
/// number in the accept's private data, `rdma_get_request`).
#[test]
fn rdma_xserver_and_xclient_rc_and_xrc() {
    const IB: u16 = 0x013f;
    for (mode, ps, port) in [("r", TCP, 20951u16), ("x", IB, 20952)] {
        let p = port.to_string();
        let (s, c) = pair(
            ("rdma_xserver", &["-p", &p, "-c", mode]),
            ("rdma_xclient", &["-s", "127.0.0.1", "-p", &p, "-c", mode]),
            ps,
            port,
            Duration::ZERO,
        );
        assert!(s.contains("rdma_xserver: end 0"), "{mode}: {s}");
        assert!(c.contains("rdma_xclient: end 0"), "{mode}: {c}");
    }
}
