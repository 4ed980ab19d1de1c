//! libfabric 1.17 (Debian `libfabric-bin`) and qperf over our librdmacm,
//! as a user runs them, through `softrdma run`: `fi_info -p verbs` lists
//! softrdma0 for MSG (verbs) and RDM (verbs;ofi_rxm) endpoints;
//! `fi_pingpong` over each, with its data checks (`-c`), between two
//! processes of one host and between two network-namespace hosts (and, on
//! one host, RDM's tagged messages and verbs' datagram endpoints); `qperf
//! -cm1` RC bandwidth, latency, RDMA WRITE and READ between two processes,
//! on one host and between two network-namespace hosts.
//! `tests/c/addr_api.c` checks the librdmacm semantics libfabric relies on.

mod common;
use common::*;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::time::Duration;
use test_support::net::{two_hosts, wait_listening, TwoHosts};
use test_support::procs::{all_text, text};
use test_support::{serial::serial, shim, tools};

/// Our libraries with `softrdma` and the file-system face beside them.
fn dir() -> &'static Path {
    static DONE: OnceLock<()> = OnceLock::new();
    let d = lib_dir();
    DONE.get_or_init(|| shim::ensure_built(d, true));
    d
}

/// libfabric 1.17's rxm sizes its MSG endpoints' CQ as (rx + tx size) ×
/// `FI_UNIVERSE_SIZE` (default 1024: 262144 entries) and never caps it at
/// the device's `max_cqe` (ofiwg/libfabric#10692): our device's 65536, like
/// rxe's 32767, refuses it (EINVAL), so rxe users set the variable (≤ 127
/// there, ≤ 256 here; MPI launchers set it to the job's size).
const UNIVERSE: (&str, &str) = ("FI_UNIVERSE_SIZE", "16");

/// `softrdma run -- prog args` (on `host` if given) with `env` added.
fn run(host: Option<(&str, &str)>, prog: &str, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut c = shim::run_on(dir(), host, prog, args);
    c.envs(env.iter().copied());
    c
}

fn start(c: &mut Command, what: &str) -> Child {
    c.spawn().unwrap_or_else(|e| {
        panic!("{what}: {e} (is the Debian package installed? scripts/test.sh installs it)")
    })
}

#[test]
fn fi_info_lists_softrdma0_for_msg_and_rdm() {
    if !tools::have("fi_info") {
        return;
    }
    let c = start(&mut run(None, "fi_info", &["-p", "verbs"], &[]), "fi_info");
    let o = wait("fi_info", c, 60);
    let t = all_text(&o);
    assert!(o.status.success(), "fi_info: {}\n{t}", o.status);
    // Blocks of "provider: …", "domain: …", "type: …" lines.
    let blocks: Vec<(String, String, String)> = text(&o.stdout)
        .split("provider: ")
        .skip(1)
        .map(|b| {
            let field = |k: &str| {
                b.lines()
                    .find_map(|l| l.trim().strip_prefix(k).map(str::trim))
                    .unwrap_or_default()
                    .to_string()
            };
            let prov = b.lines().next().unwrap_or_default().trim().to_string();
            (prov, field("domain:"), field("type:"))
        })
        .collect();
    let has =
        |p: &str, d: &str, ty: &str| blocks.iter().any(|b| b == &(p.into(), d.into(), ty.into()));
    assert!(has("verbs", "softrdma0", "FI_EP_MSG"), "{t}");
    assert!(has("verbs;ofi_rxm", "softrdma0", "FI_EP_RDM"), "{t}");
}

/// One row of fi_pingpong's results: size, sent, acknowledged, µs a transfer.
#[derive(Debug)]
struct Row {
    bytes: String,
    sent: u64,
    acked: u64,
    usec: f64,
}

/// fi_pingpong's table: "bytes #sent #ack total time MB/sec usec/xfer
/// Mxfers/sec" rows, e.g. `64  20  =20  2.5k  0.51s  0.01  12670.12  0.00`.
fn rows(out: &str) -> Vec<Row> {
    out.lines()
        .filter_map(|l| {
            let c: Vec<&str> = l.split_whitespace().collect();
            if c.len() != 8 || !c[4].ends_with('s') {
                return None;
            }
            Some(Row {
                bytes: c[0].to_string(),
                sent: c[1].parse().ok()?,
                acked: c[2].strip_prefix('=')?.parse().ok()?,
                usec: c[6].parse().ok()?,
            })
        })
        .collect()
}

/// The sizes fi_pingpong runs without `-S`.
const ALL_SIZES: &[&str] = &["64", "256", "1k", "4k", "64k", "1m"];
/// Those a datagram endpoint runs (up to its MTU, 4096 here).
const DGRAM_SIZES: &[&str] = &["64", "256", "1k", "4k"];

/// How a fi_pingpong pair runs: iterations of each size, the environment
/// added, the sizes the results must show.
struct Run<'a> {
    iters: u32,
    env: &'a [(&'a str, &'a str)],
    sizes: &'a [&'a str],
}

/// One fi_pingpong pair with `args` (which name provider and endpoint type)
/// plus data checks and `r.iters` iterations of every size: the server on
/// control port `port` (on host 0 of `hosts`, else here), the client
/// dialing it (from host 1). Both must exit 0 and report every size of
/// `r.sizes` with every message acknowledged.
fn pingpong(port: u16, args: &[&str], r: Run, hosts: Option<&TwoHosts>) {
    let Run { iters, env, sizes } = r;
    if !tools::have("fi_pingpong") {
        return;
    }
    let _g = serial();
    let host = |k: usize| hosts.map(|h| (h.ns[k].as_str(), h.addr[k].as_str()));
    let (p, n) = (port.to_string(), iters.to_string());
    let mut sargs = args.to_vec();
    sargs.extend(["-c", "-I", &n, "-B", &p]);
    let server = start(&mut run(host(0), "fi_pingpong", &sargs, env), "fi_pingpong");
    assert!(
        wait_listening(host(0).map(|h| h.0), port, Duration::from_secs(30)),
        "fi_pingpong server never listened on {port}"
    );
    let peer = host(0).map_or("127.0.0.1", |h| h.1);
    let mut cargs = args.to_vec();
    cargs.extend(["-c", "-I", &n, "-P", &p, peer]);
    let client = start(&mut run(host(1), "fi_pingpong", &cargs, env), "fi_pingpong");
    let co = wait_or_kill("fi_pingpong client", client, 180);
    let mut server = server;
    if !co.status.success() {
        let _ = server.kill();
    }
    let so = wait_or_kill("fi_pingpong server", server, 60);
    let (st, ct) = (all_text(&so), all_text(&co));
    assert!(
        so.status.success() && co.status.success(),
        "{args:?}: server {}, client {}\n--- server:\n{st}\n--- client:\n{ct}",
        so.status,
        co.status
    );
    for (who, out) in [("server", &so), ("client", &co)] {
        let r = rows(&text(&out.stdout));
        let seen: Vec<&str> = r.iter().map(|r| r.bytes.as_str()).collect();
        assert_eq!(seen, sizes, "{args:?} {who}:\n{}", all_text(out));
        for row in &r {
            assert!(
                row.sent == u64::from(iters) && row.acked == row.sent && row.usec > 0.0,
                "{args:?} {who}: {row:?}"
            );
        }
    }
}

/// `child`'s output within `secs`, killed if it has not exited by then
/// (its status then says so).
fn wait_or_kill(what: &str, mut child: Child, secs: u64) -> std::process::Output {
    let t = std::time::Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if t.elapsed() > Duration::from_secs(secs) {
            eprintln!("{what}: no exit after {secs} s, killed");
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

/// `iters` of every size fi_pingpong runs by default, with `env`.
fn all(iters: u32, env: &'static [(&'static str, &'static str)]) -> Run<'static> {
    Run {
        iters,
        env,
        sizes: ALL_SIZES,
    }
}

#[test]
fn fi_pingpong_msg_endpoints_on_one_host() {
    pingpong(20941, &["-p", "verbs", "-e", "msg"], all(20, &[]), None);
}

#[test]
fn fi_pingpong_rdm_over_rxm_on_one_host() {
    let rdm = ["-p", "verbs;ofi_rxm", "-e", "rdm"];
    pingpong(20942, &rdm, all(20, &[UNIVERSE]), None);
    let tagged = [&rdm[..], &["-m", "tagged"]].concat();
    pingpong(20947, &tagged, all(10, &[UNIVERSE]), None);
}

#[test]
fn fi_pingpong_dgram_endpoints_on_one_host() {
    let r = Run {
        iters: 20,
        env: &[],
        sizes: DGRAM_SIZES,
    };
    pingpong(20948, &["-p", "verbs", "-e", "dgram"], r, None);
}

#[test]
fn fi_pingpong_between_two_network_namespace_hosts() {
    if !tools::have("fi_pingpong") {
        return;
    }
    let Some(hosts) = two_hosts("fab", [10, 81, 0]) else {
        return;
    };
    let h = Some(&hosts);
    pingpong(20943, &["-p", "verbs", "-e", "msg"], all(10, &[]), h);
    let rdm = ["-p", "verbs;ofi_rxm", "-e", "rdm"];
    pingpong(20944, &rdm, all(10, &[UNIVERSE]), h);
}

/// qperf's results: (test, figure name, value, unit) from its
/// "rc_bw:\n    bw  =  1.05 GB/sec" blocks.
fn qperf_figures(out: &str) -> Vec<(String, String, f64, String)> {
    let mut test = String::new();
    let mut v = vec![];
    for l in out.lines() {
        if let Some(t) = l.strip_suffix(':').filter(|_| !l.starts_with(' ')) {
            test = t.to_string();
        } else if let Some((k, rest)) = l.split_once('=') {
            let mut r = rest.split_whitespace();
            if let (Some(x), Some(u)) = (r.next().and_then(|x| x.parse().ok()), r.next()) {
                v.push((test.clone(), k.trim().to_string(), x, u.to_string()));
            }
        }
    }
    v
}

/// `qperf -cm1` RC bandwidth, latency, RDMA WRITE and READ: its server on
/// TCP `port` (on host 0 of `hosts`, else here), the client from host 1.
/// Each test must report a positive figure.
fn qperf(port: u16, hosts: Option<&TwoHosts>) {
    if !tools::have("qperf") {
        return;
    }
    let _g = serial();
    let host = |k: usize| hosts.map(|h| (h.ns[k].as_str(), h.addr[k].as_str()));
    let p = port.to_string();
    let mut server = start(&mut run(host(0), "qperf", &["-lp", &p], &[]), "qperf");
    assert!(
        wait_listening(host(0).map(|h| h.0), port, Duration::from_secs(30)),
        "qperf server never listened on {port}"
    );
    let tests = ["rc_bw", "rc_lat", "rc_rdma_write_bw", "rc_rdma_read_bw"];
    let peer = host(0).map_or("127.0.0.1", |h| h.1);
    let mut args = vec!["-cm1", "-lp", &p, peer, "-t", "1"];
    args.extend(tests);
    let client = start(&mut run(host(1), "qperf", &args, &[]), "qperf");
    let co = wait_or_kill("qperf client", client, 120);
    // The server serves until killed.
    let _ = server.kill();
    let so = wait_or_kill("qperf server", server, 30);
    let ct = all_text(&co);
    assert!(
        co.status.success(),
        "qperf: {}\n{ct}\n--- server:\n{}",
        co.status,
        all_text(&so)
    );
    let f = qperf_figures(&text(&co.stdout));
    for t in tests {
        let (key, units): (&str, &[&str]) = if t.ends_with("_lat") {
            ("latency", &["ns", "us", "ms", "sec"])
        } else {
            ("bw", &["bytes/sec", "KB/sec", "MB/sec", "GB/sec"])
        };
        assert!(
            f.iter()
                .any(|(n, k, x, u)| n == t && k == key && *x > 0.0 && units.contains(&u.as_str())),
            "qperf {t}: no positive {key}:\n{ct}"
        );
    }
}

#[test]
fn qperf_cm1_rc_tests_on_one_host() {
    qperf(20945, None);
}

#[test]
fn qperf_cm1_rc_tests_between_two_network_namespace_hosts() {
    if !tools::have("qperf") {
        return;
    }
    if let Some(hosts) = two_hosts("fabqp", [10, 83, 0]) {
        qperf(20949, Some(&hosts));
    }
}

/// `tests/c/addr_api.c` through `softrdma run` (on `host` if given),
/// expecting a loopback bind to attach the device or not (`expect`).
fn addr_api(host: Option<(&str, &str)>, expect: &str) {
    let Some(exe) = compile("addr_api") else {
        return;
    };
    let c = start(
        &mut run(host, exe.to_str().unwrap(), &["20946", expect], &[]),
        "addr_api",
    );
    let o = wait("addr_api", c, 90);
    let t = all_text(&o);
    assert!(o.status.success(), "addr_api {expect}: {}\n{t}", o.status);
    assert!(t.contains("addr_api: ok"), "{t}");
}

#[test]
fn librdmacm_semantics_libfabric_relies_on() {
    let _g = serial();
    // Alone on a host the device is on loopback: 127.0.0.1 is its own.
    addr_api(None, "device");
    // With an address of its own, loopback is not the device's (kernel).
    if let Some(h) = two_hosts("fabapi", [10, 82, 0]) {
        addr_api(Some((&h.ns[0], &h.addr[0])), "wildcard");
    }
}
