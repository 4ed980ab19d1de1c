//! The `softrdma` command line: devinfo, embedded perf runs of every test
//! with --verify (pinned, ODP, implicit ODP, UD, UC, -a, -q, --json), two
//! processes over TCP, two network-namespace hosts over a veth pair, and the
//! errors a user can cause.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use test_support::net::{ip, two_hosts};

const BIN: &str = env!("CARGO_BIN_EXE_softrdma");

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run softrdma")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Exit 0, or fail with both streams.
fn ok(args: &[&str]) -> String {
    let o = run(args);
    let (out, err) = text(&o);
    assert!(
        o.status.success(),
        "softrdma {args:?} exited {:?}\nstdout:\n{out}\nstderr:\n{err}",
        o.status.code()
    );
    out
}

/// The numeric rows of the result table (lines starting with a size).
fn rows(out: &str) -> Vec<Vec<f64>> {
    out.lines()
        .filter(|l| {
            l.starts_with(' ')
                && l.trim_start()
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_digit())
        })
        .map(|l| {
            l.split_whitespace()
                .map(|x| x.parse::<f64>().expect("number"))
                .collect()
        })
        .collect()
}

fn check_bw(out: &str, bytes: f64, iters: f64) {
    assert!(
        out.contains(
            " #bytes     #iterations    BW peak[MB/sec]    BW average[MB/sec]   MsgRate[Mpps]"
        ),
        "{out}"
    );
    let r = rows(out);
    assert_eq!(r.len(), 1, "one result row: {out}");
    assert_eq!((r[0][0], r[0][1]), (bytes, iters), "{out}");
    assert!(r[0][2] > 0.0 && r[0][3] > 0.0 && r[0][4] > 0.0, "{out}");
    assert!(out.contains("Verify: OK"), "{out}");
}

fn check_lat(out: &str, bytes: f64, iters: f64) {
    assert!(out.contains(" #bytes #iterations    t_min[usec]    t_max[usec]  t_typical[usec]    t_avg[usec]    t_stdev[usec]   99% percentile[usec]   99.9% percentile[usec]"), "{out}");
    let r = rows(out);
    assert_eq!(r.len(), 1, "{out}");
    assert_eq!((r[0][0], r[0][1]), (bytes, iters), "{out}");
    assert!(
        r[0][2] > 0.0 && r[0][2] <= r[0][3] && r[0][4] >= r[0][2],
        "{out}"
    );
    assert!(out.contains("Verify: OK"), "{out}");
}

#[test]
fn devinfo_fields() {
    let out = ok(&["devinfo"]);
    for f in [
        "hca_id:\tsoftrdma0",
        "transport:\t\t\tInfiniBand (0)",
        "fw_ver:",
        "node_guid:",
        "sys_image_guid:",
        "vendor_id:",
        "vendor_part_id:",
        "hw_ver:",
        "phys_port_cnt:\t\t\t1",
        "port:\t1",
        "state:\t\t\tPORT_ACTIVE (4)",
        "max_mtu:\t\t4096 (5)",
        "active_mtu:\t\t4096 (5)",
        "sm_lid:\t\t\t0",
        "port_lid:\t\t0",
        "port_lmc:\t\t0x00",
        "link_layer:\t\tEthernet",
    ] {
        assert!(out.contains(f), "devinfo lacks {f:?}:\n{out}");
    }
    assert!(!out.contains("odp_caps"), "no ODP caps without -v");
    let v = ok(&["devinfo", "-v"]);
    for f in ["general_odp_caps:\t\tODP_SUPPORT ODP_SUPPORT_IMPLICIT", "rc_odp_caps:\t\t\tSUPPORT_SEND SUPPORT_RECV SUPPORT_WRITE SUPPORT_READ SUPPORT_ATOMIC SUPPORT_SRQ", "ud_odp_caps:\t\t\tSUPPORT_SEND SUPPORT_RECV", "max_qp_wr:", "max_qp_rd_atom:", "GID[  0]:\t\tfe80::", "GID[  1]:\t\t::ffff:127.", ", RoCE v2"] {
        assert!(v.contains(f), "devinfo -v lacks {f:?}:\n{v}");
    }
    let inval = v
        .lines()
        .find(|l| l.contains("odp_invalidation:"))
        .unwrap_or_else(|| panic!("no invalidation line:\n{v}"));
    assert!(
        inval.contains("userfaultfd (") || inval.contains("fallback: "),
        "{inval}"
    );
}

#[test]
fn embedded_write_bw_odp_verify_full() {
    let out = ok(&[
        "perf", "write_bw", "-s", "65536", "-n", "5000", "--odp", "--verify",
    ]);
    for f in [
        "RDMA_Write BW Test",
        "Dual-port       : OFF",
        "Number of qps   : 1",
        "Connection type : RC",
        "Using SRQ      : OFF",
        "TX depth        : 128",
        "CQ Moderation   : 100",
        "Mtu             : 4096[B]",
        "Link type       : Ethernet",
        "GID index       : 1",
        "Max inline data : 0[B]",
        "rdma_cm QPs",
        "Data ex. method : Ethernet",
        " local address: LID 0000 QPN 0x",
        " remote address: LID 0000 QPN 0x",
        " GID: 00:00:00:00:00:00:00:00:00:00:255:255:127:",
    ] {
        assert!(out.contains(f), "lacks {f:?}:\n{out}");
    }
    check_bw(&out, 65536.0, 5000.0);
    let odp = out
        .lines()
        .find(|l| l.starts_with("ODP: explicit (faults="))
        .unwrap_or_else(|| panic!("no ODP line:\n{out}"));
    let faults: u64 = odp
        .split("faults=")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(faults > 0, "{odp}");
}

#[test]
fn embedded_every_test_pinned_and_odp_verified() {
    for t in [
        "write_bw",
        "read_bw",
        "send_bw",
        "atomic_bw",
        "write_lat",
        "read_lat",
        "send_lat",
        "atomic_lat",
    ] {
        let mut modes: Vec<Vec<&str>> = vec![vec![], vec!["--odp"]];
        if t == "write_bw" {
            modes.push(vec!["--implicit-odp"]);
        }
        if t.starts_with("atomic") {
            modes.push(vec!["-A", "CMP_AND_SWAP"]);
        }
        for m in modes {
            let mut args = vec!["perf", t, "-n", "200", "--verify"];
            args.extend(&m);
            let out = ok(&args);
            let bytes = if t.starts_with("atomic") {
                8.0
            } else if t.ends_with("lat") {
                2.0
            } else {
                65536.0
            };
            if t.ends_with("bw") {
                check_bw(&out, bytes, 200.0);
            } else {
                check_lat(&out, bytes, 200.0);
            }
            if m.contains(&"--odp") {
                assert!(out.contains("ODP: explicit (faults="), "{t} {m:?}:\n{out}");
            }
            if m.contains(&"--implicit-odp") {
                assert!(out.contains("ODP: implicit (faults="), "{t} {m:?}:\n{out}");
            }
        }
    }
}

#[test]
fn embedded_ud_uc_all_sizes_qps_and_json() {
    let out = ok(&[
        "perf", "send_bw", "-c", "UD", "-n", "200", "--verify", "--odp",
    ]);
    assert!(out.contains("Connection type : UD"), "{out}");
    check_bw(&out, 4096.0, 200.0);
    let out = ok(&["perf", "write_bw", "-c", "UC", "-n", "200", "--verify"]);
    assert!(out.contains("Connection type : UC"), "{out}");
    check_bw(&out, 65536.0, 200.0);
    let out = ok(&["perf", "write_bw", "-a", "-n", "5", "--verify"]);
    let r = rows(&out);
    let sizes: Vec<f64> = r.iter().map(|x| x[0]).collect();
    let want: Vec<f64> = (1..=23).map(|k| (1u64 << k) as f64).collect();
    assert_eq!(sizes, want, "{out}");
    // BW is printed with two decimals: 5 × 2 bytes under load rounds to 0.00;
    // the message rate (six decimals) is what must be positive for every size.
    assert!(r.iter().all(|x| x[1] == 5.0 && x[4] > 0.0), "{out}");
    let out = ok(&[
        "perf", "write_bw", "-q", "4", "-n", "200", "--verify", "--odp",
    ]);
    assert!(out.contains("Number of qps   : 4"), "{out}");
    assert_eq!(out.matches(" local address:").count(), 4, "{out}");
    check_bw(&out, 65536.0, 200.0);
    let out = ok(&["perf", "read_bw", "-n", "200", "--json", "--verify"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "only JSON on stdout: {out}");
    let j = lines[0];
    assert!(j.starts_with('{') && j.ends_with('}'), "{j}");
    for f in [
        "\"test\":\"read_bw\"",
        "\"bytes\":65536",
        "\"iterations\":200",
        "\"verified\":true",
        "\"bw_avg_mb_s\":",
    ] {
        assert!(j.contains(f), "{f} in {j}");
    }
    let out = ok(&["perf", "write_lat", "-n", "100", "--json"]);
    assert!(
        out.trim().starts_with('{')
            && out.contains("\"t_typical_us\":")
            && out.contains("\"p99_9_us\":"),
        "{out}"
    );
}

/// Start a server (optionally wrapped, e.g. `ip netns exec`), wait for its
/// banner; returns the child and a channel with the rest of its stdout.
fn start_server(prefix: &[&str], args: &[&str]) -> (Child, mpsc::Receiver<String>) {
    let (prog, pre) = match prefix.split_first() {
        Some((p, rest)) => (p.to_string(), rest.to_vec()),
        None => (BIN.to_string(), vec![]),
    };
    let mut cmd = Command::new(prog);
    cmd.args(pre);
    if !prefix.is_empty() {
        cmd.arg(BIN);
    }
    let mut child = cmd
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn server");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut all = String::new();
        let mut ready = Some(ready_tx);
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            if l.contains("Waiting for client to connect") {
                if let Some(r) = ready.take() {
                    let _ = r.send(());
                }
            }
            all.push_str(&l);
            all.push('\n');
        }
        let _ = tx.send(all);
    });
    if ready_rx.recv_timeout(Duration::from_secs(20)).is_err() {
        let _ = child.kill();
        let o = child.wait_with_output().unwrap();
        panic!(
            "server {args:?} never waited for a client: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    (child, rx)
}

fn finish_server(mut child: Child, rx: mpsc::Receiver<String>) -> (bool, String) {
    let mut err = String::new();
    // A server whose client never came (or hung) is a failure, not a hang.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().expect("server") {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return (false, "server did not finish within 60 s (killed)".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut err);
    }
    let out = rx.recv_timeout(Duration::from_secs(5)).unwrap_or_default();
    (status.success(), format!("{out}\nstderr:\n{err}"))
}

#[test]
fn two_processes_over_tcp() {
    // Below the kernel's ephemeral range (32768–60999), which concurrent tests'
    // loopback TCP connections draw from: a listener there can find its port taken.
    let base = 20000 + (std::process::id() % 12000) as u16;
    // (test, server memory, client flags): ODP and pinned on each side,
    // implicit ODP, and UC / UD across processes too.
    let cases: [(&str, &str, &[&str]); 9] = [
        ("write_bw", "--odp", &[]),
        ("read_bw", "--odp", &["--odp"]),
        ("send_bw", "--odp", &[]),
        ("atomic_bw", "--odp", &["--implicit-odp"]),
        ("write_lat", "--odp", &[]),
        ("write_bw", "--implicit-odp", &["--odp"]),
        ("read_lat", "--implicit-odp", &[]),
        ("write_bw", "--odp", &["-c", "UC"]),
        ("send_bw", "--odp", &["-c", "UD"]),
    ];
    for (k, (t, server_mem, client)) in cases.iter().enumerate() {
        let port = (base + k as u16).to_string();
        let (srv, rx) = start_server(&[], &["perf", t, "--server", "-p", &port, server_mem]);
        let mut args = vec![
            "perf",
            *t,
            "--client",
            "127.0.0.1",
            "-p",
            &port,
            "-n",
            "300",
            "--verify",
        ];
        args.extend_from_slice(client);
        let o = run(&args);
        let (out, err) = text(&o);
        let (sok, sout) = finish_server(srv, rx);
        assert!(
            o.status.success(),
            "{t} client failed:\n{out}\n{err}\nserver:\n{sout}"
        );
        assert!(sok, "{t} server failed:\n{sout}");
        let ud = client.contains(&"UD");
        if t.ends_with("bw") {
            check_bw(
                &out,
                if *t == "atomic_bw" {
                    8.0
                } else if ud {
                    4096.0
                } else {
                    65536.0
                },
                300.0,
            );
        } else {
            check_lat(&out, 2.0, 300.0);
        }
    }
}

#[test]
fn two_network_namespace_hosts() {
    let pid = std::process::id();
    let Some(hosts) = two_hosts("srdma", [10, 77, 0]) else {
        return;
    };
    let (n1, n2) = (&hosts.ns[0], &hosts.ns[1]);
    let v2 = &hosts.veth[1];
    let port = (30000 + pid % 20000).to_string();
    let (srv, rx) = start_server(
        &["ip", "netns", "exec", n1, "env", "SOFTRDMA_ADDR=10.77.0.1"],
        &[
            "perf", "write_bw", "--odp", "--verify", "--server", "-p", &port,
        ],
    );
    let o = Command::new("ip")
        .args([
            "netns",
            "exec",
            n2,
            "env",
            "SOFTRDMA_ADDR=10.77.0.2",
            BIN,
            "perf",
            "write_bw",
            "--odp",
            "--verify",
            "--client",
            "10.77.0.1",
            "-p",
            &port,
            "-n",
            "1000",
        ])
        .output()
        .unwrap();
    let (out, err) = text(&o);
    let (sok, sout) = finish_server(srv, rx);
    assert!(
        o.status.success(),
        "client failed:\n{out}\n{err}\nserver:\n{sout}"
    );
    assert!(sok, "server failed:\n{sout}");
    check_bw(&out, 65536.0, 1000.0);
    assert!(
        out.contains("Mtu             : 1024[B]"),
        "veth: MTU 1024\n{out}"
    );
    assert!(
        out.contains(":255:255:10:77:00:02") && out.contains(":255:255:10:77:00:01"),
        "GIDs of the veth addresses\n{out}"
    );
    // The active MTU follows the interface's MTU (link MTU − 80 headers).
    for (link_mtu, active) in [("9000", "4096 (5)"), ("1100", "512 (2)")] {
        ip(&["-n", n2, "link", "set", v2, "mtu", link_mtu]).unwrap();
        let o = Command::new("ip")
            .args([
                "netns",
                "exec",
                n2,
                "env",
                "SOFTRDMA_ADDR=10.77.0.2",
                BIN,
                "devinfo",
            ])
            .output()
            .unwrap();
        let (out, err) = text(&o);
        assert!(o.status.success(), "devinfo failed: {err}");
        assert!(
            out.contains(&format!("active_mtu:\t\t{active}")),
            "link MTU {link_mtu}: active_mtu {active}\n{out}"
        );
    }
    drop(hosts);
}

fn odp_faults(out: &str) -> u64 {
    let odp = out
        .lines()
        .find(|l| l.starts_with("ODP: explicit (faults="))
        .unwrap_or_else(|| panic!("no ODP line:\n{out}"));
    odp.split("faults=")
        .nth(1)
        .and_then(|x| x.split(',').next())
        .and_then(|x| x.parse().ok())
        .unwrap_or_else(|| panic!("{odp}"))
}

/// `--buffer`: the iterations walk a fresh region, so every message lands on
/// pages no earlier message touched (more faults than perftest's cycle of
/// 128 slots), and the data still verifies.
#[test]
fn write_bw_buffer_walks_fresh_pages() {
    let common = [
        "perf", "write_bw", "-s", "65536", "-n", "512", "--odp", "--verify",
    ];
    let cycled = ok(&common);
    check_bw(&cycled, 65536.0, 512.0);
    let mut walk = common.to_vec();
    walk.extend(["--buffer", "32M"]);
    let walked = ok(&walk);
    check_bw(&walked, 65536.0, 512.0);
    let (c, w) = (odp_faults(&cycled), odp_faults(&walked));
    assert!(
        w >= 512,
        "one fault at least per fresh message: {w}\n{walked}"
    );
    assert!(
        w > c,
        "walking 32 MiB faults more than cycling 8 MiB: {w} vs {c}"
    );
    // The same walk over buffers advised for huge pages: the kernel hands out
    // 2 MiB at a fault, the device still tracks (and verifies) 4 KiB pages.
    walk.push("--thp");
    let huge = ok(&walk);
    check_bw(&huge, 65536.0, 512.0);
    assert!(
        huge.contains("Buffers: transparent huge pages advised"),
        "{huge}"
    );
    assert!(odp_faults(&huge) >= 512, "{huge}");
    for bad in [
        &["perf", "write_lat", "--buffer", "1G"][..],
        &["perf", "read_bw", "--buffer", "1G"],
        &["perf", "write_bw", "--buffer", "1X"],
        &["perf", "write_bw", "-s", "65536", "--buffer", "8K"],
    ] {
        let o = run(bad);
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{bad:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{bad:?}: {err}");
        assert!(err.contains("--buffer"), "{bad:?}: {err}");
    }
}

#[test]
fn user_errors_one_line() {
    let o = run(&["perf", "write_bw", "--bogus"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--bogus"), "{err}");
    for bad in [
        &["perf", "nope_bw"][..],
        &["perf", "read_bw", "-c", "UD"],
        &["perf", "atomic_bw", "-c", "UC"],
        &["perf", "write_bw", "-s", "x"],
    ] {
        let o = run(bad);
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{bad:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{bad:?}: {err}");
    }
    // Nobody listens on this port.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port().to_string();
    drop(l);
    let o = run(&["perf", "write_bw", "--client", "127.0.0.1", "-p", &port]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("cannot reach server") && err.contains("--server"),
        "{err}"
    );
    // Port in use.
    let l = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = l.local_addr().unwrap().port().to_string();
    let o = run(&["perf", "write_bw", "--server", "-p", &port]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("in use") && err.lines().count() == 1, "{err}");
}

/// Every size of `read_bw -a` on two QPs, each byte verified. Once the
/// reproducer of a library bug (fixed in b62913e: a go-back-N resent a
/// finished READ past its PSN range, and a later READ lost its first page
/// to the stale response).
#[test]
fn read_bw_all_sizes_two_qps_verified() {
    for _ in 0..4 {
        ok(&["perf", "read_bw", "-a", "-n", "10", "-q", "2", "--verify"]);
    }
}

/// The "Rounds: N in S s" line of a `--duration` run.
fn rounds(out: &str) -> usize {
    out.lines()
        .find_map(|l| l.strip_prefix("Rounds: "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no Rounds line: {out}"))
}

/// `--duration`: the test runs round after round on the same devices and
/// QPs (one verified result row each) until the time is up; two processes
/// agree on the rounds (the client says when to stop).
#[test]
fn duration_repeats_rounds_on_the_same_devices() {
    for t in ["write_bw", "atomic_bw", "send_bw"] {
        let out = ok(&["perf", t, "-n", "50", "--verify", "--duration", "2"]);
        let n = rounds(&out);
        assert!(n >= 2, "{t}: {out}");
        assert_eq!(rows(&out).len(), n, "{t}: a row a round: {out}");
        assert!(out.contains("Verify: OK"), "{t}: {out}");
        // One device pair for the whole run: one QP line per side.
        assert_eq!(out.matches(" local address:").count(), 1, "{t}: {out}");
    }
    let port = (20000 + (std::process::id() % 12000) as u16 + 500).to_string();
    let (srv, rx) = start_server(&[], &["perf", "read_bw", "--server", "-p", &port]);
    let out = ok(&[
        "perf",
        "read_bw",
        "--client",
        "127.0.0.1",
        "-p",
        &port,
        "-n",
        "50",
        "--verify",
        "--odp",
        "--duration",
        "2",
    ]);
    let (sok, sout) = finish_server(srv, rx);
    assert!(sok, "server failed:\n{sout}");
    assert!(rounds(&out) >= 2, "{out}");
    assert_eq!(
        rounds(&sout),
        rounds(&out),
        "client:\n{out}\nserver:\n{sout}"
    );
    assert!(sout.contains("Verify: OK"), "{sout}");
    let o = run(&["perf", "write_bw", "--duration", "0"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o).1);
}

/// The help clap generates names perftest's spellings; a JSON row is JSON
/// (parsed, not matched) with the run's fields and figures.
#[test]
fn help_names_perftest_flags_and_json_rows_parse() {
    let help = ok(&["perf", "--help"]);
    for f in [
        "-s, --size",
        "-n, --iters",
        "-a, --all",
        "-q, --qp",
        "-c, --connection",
        "-m, --mtu",
        "-t, --tx-depth",
        "-r, --rx-depth",
        "-Q, --cq-mod",
        "-A, --atomic_type",
        "--odp",
        "--implicit-odp",
        "-D, --duration",
        "--server",
        "--client",
        "-p, --port",
        "--json",
    ] {
        assert!(help.contains(f), "{f} in:\n{help}");
    }
    for sub in ["devinfo", "perf", "run", "stats"] {
        assert!(ok(&["--help"]).contains(sub), "{sub}");
    }
    // perftest's spellings, long with `=`, the implicit ODP alias.
    let out = ok(&[
        "perf",
        "atomic_bw",
        "--iters=20",
        "-A",
        "CMP_AND_SWAP",
        "--use-implicit-odp",
        "--json",
        "--verify",
    ]);
    let j: serde_json::Value = serde_json::from_str(out.trim()).expect("a JSON row");
    assert_eq!(j["test"], "atomic_bw", "{j}");
    assert_eq!(j["memory"], "implicit_odp", "{j}");
    assert_eq!(j["atomic_type"], "CMP_AND_SWAP", "{j}");
    assert_eq!(
        (j["bytes"].as_u64(), j["iterations"].as_u64()),
        (Some(8), Some(20)),
        "{j}"
    );
    assert_eq!(j["verified"], true, "{j}");
    assert!(j["msg_rate_mpps"].as_f64().is_some_and(|r| r > 0.0), "{j}");
    // A flag given twice: the last one counts, as perftest's getopt.
    let out = ok(&[
        "perf",
        "write_lat",
        "-n",
        "5",
        "-n",
        "7",
        "-s",
        "4",
        "--json",
    ]);
    let j: serde_json::Value = serde_json::from_str(out.trim()).expect("a JSON row");
    assert_eq!(
        (j["bytes"].as_u64(), j["iterations"].as_u64()),
        (Some(4), Some(7)),
        "{j}"
    );
    for bad in [
        &["perf", "write_bw", "--client", "a", "b"][..],
        &["perf", "write_bw", "--server", "host"],
        &["perf"],
        &["stats", "--mr", "1", "2"],
        &["devinfo", "-x"],
        &["bogus"],
    ] {
        let o = run(bad);
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{bad:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{bad:?}: {err}");
    }
}
