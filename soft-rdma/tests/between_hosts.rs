//! UDP GSO/GRO between two network-namespace hosts (veth): every byte of
//! WRITE/READ/SEND arrives at link MTUs 1500 and 9000 with messages that end
//! mid-segment, the segments' ICRCs verify independently (scapy) under the
//! IP IDs the kernel gave them, and a kernel that refuses UDP_SEGMENT
//! (`SOFTRDMA_GSO=refuse`) leaves a link that still delivers everything.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use test_support::net::{ip, two_hosts, wait_listening, TwoHosts};
use test_support::tools;

const BIN: &str = env!("CARGO_BIN_EXE_softrdma");

fn text(o: &Output) -> String {
    format!(
        "{}\nstderr:\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `softrdma perf TEST -s SIZE --odp --verify --stats` between the hosts
/// (server on host 0), with `env` on both sides; (client's, server's output).
fn perf(h: &TwoHosts, port: u16, test: &str, size: usize, env: &[&str]) -> (String, String) {
    let (size, port) = (size.to_string(), port.to_string());
    let side = |k: usize| {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &h.ns[k], "env"])
            .arg(format!("SOFTRDMA_ADDR={}", h.addr[k]))
            .args(env)
            .args([BIN, "perf", test, "-s", &size, "-n", "40", "-p", &port])
            .args(["--odp", "--verify", "--stats"]);
        c
    };
    let server: Child = side(0)
        .arg("--server")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn server");
    assert!(
        wait_listening(
            Some(&h.ns[0]),
            port.parse().unwrap(),
            Duration::from_secs(20)
        ),
        "server did not listen"
    );
    let client = side(1)
        .args(["--client", &h.addr[0]])
        .output()
        .expect("client");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut server = server;
    while server.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = server.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let server = server.wait_with_output().unwrap();
    let (c, s) = (text(&client), text(&server));
    assert!(
        client.status.success() && server.status.success(),
        "{test} {size}: client:\n{c}\nserver:\n{s}"
    );
    assert!(c.contains("Verify: OK"), "{test} {size}: {c}");
    (c, s)
}

/// A counter of the `--stats` table (summed over the devices printed).
fn counter(out: &str, name: &str) -> u64 {
    out.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some(name)).then(|| w.next()?.parse::<u64>().ok())?
        })
        .sum()
}

fn set_mtu(h: &TwoHosts, mtu: u32) {
    for k in 0..2 {
        ip(&[
            "-n",
            &h.ns[k],
            "link",
            "set",
            &h.veth[k],
            "mtu",
            &mtu.to_string(),
        ])
        .unwrap();
    }
}

#[test]
fn every_byte_crosses_in_gso_segments_at_mtu_1500_and_9000() {
    let Some(h) = two_hosts("gsob", [10, 92, 0]) else {
        return;
    };
    let port = 21000 + (std::process::id() % 2000) as u16;
    // Active MTU 1024 (link 1500) and 4096 (link 9000): the sizes end
    // mid-segment, and 65000 needs more than one GSO datagram at 1024.
    for (mtu, sizes) in [(1500, [5000, 65000]), (9000, [9000, 65000])] {
        set_mtu(&h, mtu);
        for test in ["write_bw", "read_bw", "send_bw"] {
            for size in sizes {
                let (c, s) = perf(&h, port, test, size, &[]);
                // The side that carries the data: READ responses come from
                // the server, WRITE and SEND from the client.
                let data = if test == "read_bw" { &s } else { &c };
                assert!(
                    counter(data, "link_gso_sent") > 0,
                    "{test} {size} at MTU {mtu}: no GSO datagram\n{data}"
                );
                for out in [&c, &s] {
                    assert_eq!(counter(out, "icrc_errors"), 0, "{out}");
                    assert_eq!(counter(out, "link_gso_refused"), 0, "{out}");
                }
                if size == 65000 {
                    // Batched both ways: a system call carries a run of
                    // packets (the sender's GSO, the receiver's GRO), not
                    // one each. (How many depends on timing; 4 is far
                    // below the 16-64 packets of one message.)
                    let back = if test == "read_bw" { &c } else { &s };
                    let per = |out: &str, what: &str, calls: &str| {
                        counter(out, what) as f64 / counter(out, calls).max(1) as f64
                    };
                    let sent = per(data, "link_sent", "link_send_calls");
                    let got = per(back, "link_received", "link_recv_calls");
                    assert!(sent >= 4.0, "{test} at MTU {mtu}: {sent} a send\n{data}");
                    assert!(got >= 4.0, "{test} at MTU {mtu}: {got} a receive\n{back}");
                }
            }
        }
    }
}

#[test]
fn captured_gso_segments_verify_with_the_ip_ids_they_carry() {
    if !tools::works("dumpcap", &["-v"])
        || !tools::works("ethtool", &["--version"])
        || !tools::works("python3", &["-c", "import scapy.contrib.roce"])
    {
        tools::unavailable("dumpcap, ethtool and scapy", "not installed");
        return;
    }
    let Some(h) = two_hosts("gsoc", [10, 93, 0]) else {
        return;
    };
    let port = 23000 + (std::process::id() % 2000) as u16;
    // Segment in software before the capture taps see the packets (veth
    // would otherwise carry a GSO datagram whole, and the tap show it as
    // one packet): what a wire carries.
    for k in 0..2 {
        let o = Command::new("ip")
            .args(["netns", "exec", &h.ns[k], "ethtool", "-K", &h.veth[k]])
            .args(["tx-udp-segmentation", "off"])
            .output()
            .unwrap();
        assert!(o.status.success(), "ethtool: {}", text(&o));
    }
    let pcap = std::env::temp_dir().join(format!("softrdma-gso-{}.pcap", std::process::id()));
    let mut cap = Command::new("ip")
        .args(["netns", "exec", &h.ns[1], "dumpcap", "-q", "-i", &h.veth[1]])
        .args(["-f", "udp port 4791", "-w"])
        .arg(&pcap)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !pcap.exists() && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let (c, _) = perf(&h, port, "write_bw", 5000, &[]);
    let (_, s) = perf(&h, port, "read_bw", 3000, &[]);
    assert!(counter(&c, "link_gso_sent") > 0, "{c}");
    assert!(counter(&s, "link_gso_sent") > 0, "{s}");
    std::thread::sleep(Duration::from_millis(500));
    let _ = Command::new("kill")
        .args(["-INT", &cap.id().to_string()])
        .status();
    let _ = cap.wait();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/check_icrc.py");
    let o = Command::new("python3")
        .arg(script)
        .arg(&pcap)
        .output()
        .unwrap();
    assert!(o.status.success(), "scapy: {}\nserver:\n{s}", text(&o));
    // The capture holds segments numbered by the kernel, not only ID 0.
    let o = Command::new("tshark")
        .args(["-r"])
        .arg(&pcap)
        .args(["-T", "fields", "-e", "ip.id", "-Y", "ip.src == 10.93.0.2"])
        .output()
        .unwrap();
    let ids: Vec<u16> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| u16::from_str_radix(l.trim().trim_start_matches("0x"), 16).ok())
        .collect();
    let _ = std::fs::remove_file(&pcap);
    // (How many segments a batch holds depends on timing: only "more than
    // ID 0" is certain.)
    assert!(ids.contains(&0) && ids.contains(&1), "IP IDs: {ids:?}");
}

#[test]
fn a_refused_gso_send_falls_back_to_plain_datagrams() {
    let Some(h) = two_hosts("gsof", [10, 94, 0]) else {
        return;
    };
    let port = 25000 + (std::process::id() % 2000) as u16;
    for test in ["write_bw", "read_bw"] {
        let (c, s) = perf(&h, port, test, 65000, &["SOFTRDMA_GSO=refuse"]);
        let data = if test == "read_bw" { &s } else { &c };
        assert_eq!(counter(data, "link_gso_refused"), 1, "{data}");
        assert_eq!(counter(data, "link_gso_sent"), 0, "{data}");
        assert_eq!(counter(data, "link_send_dropped"), 0, "{data}");
    }
    // Off: neither GSO nor a refusal, and still every byte.
    let (c, _) = perf(&h, port, "write_bw", 65000, &["SOFTRDMA_GSO=off"]);
    assert_eq!(counter(&c, "link_gso_sent"), 0, "{c}");
    assert_eq!(counter(&c, "link_gso_refused"), 0, "{c}");
}
