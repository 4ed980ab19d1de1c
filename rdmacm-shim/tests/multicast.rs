//! UD multicast through rdma_cm: rdmacm-utils' `mckey` (a receiver that
//! joins a group and counts its messages, a sender that joins and sends
//! them to the group) through `softrdma run`, on one host and between two
//! network-namespace hosts (real IP multicast over a veth).

mod common;
use common::*;
use std::process::Child;
use std::time::Duration;
use test_support::net::two_hosts;
use test_support::procs::all_text;
use test_support::{serial::serial, shim, tools};

/// `group` as /proc/net/igmp shows it (the address's bytes, read as a
/// little-endian word, in hex).
fn igmp_hex(group: &str) -> String {
    let ip: std::net::Ipv4Addr = group.parse().unwrap();
    format!("{:08X}", u32::from_le_bytes(ip.octets()))
}

/// Whether a socket of network namespace `ns` (None: ours) joins `group`
/// within 30 s.
fn joined(ns: Option<&str>, group: &str) -> bool {
    let hex = igmp_hex(group);
    let end = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < end {
        let table = match ns {
            None => std::fs::read_to_string("/proc/net/igmp").unwrap_or_default(),
            Some(ns) => std::process::Command::new("ip")
                .args(["netns", "exec", ns, "cat", "/proc/net/igmp"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default(),
        };
        if table.contains(&hex) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn start(host: Option<(&str, &str)>, args: &[&str]) -> Child {
    let dir = lib_dir();
    shim::ensure_built(dir, true);
    shim::run_on(dir, host, "mckey", args)
        .spawn()
        .unwrap_or_else(|e| panic!("mckey: {e} (rdmacm-utils; scripts/test.sh installs it)"))
}

/// `mckey -m group` receiving on `rx`, `mckey -m group -s` sending from
/// `tx` (each with `-b` its address on a namespace host): both must
/// finish, the receiver having counted every message of the sender.
fn mckey(group: &str, rx: Option<(&str, &str)>, tx: Option<(&str, &str)>) {
    let _g = serial();
    let args = |host: Option<(&str, &str)>, send: bool| {
        let mut a = vec!["-m", group, "-C", "20", "-S", "512"];
        if let Some((_, addr)) = host {
            a.extend(["-b", addr]);
        }
        if send {
            a.push("-s");
        }
        a.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let ra = args(rx, false);
    let mut r = start(rx, &ra.iter().map(|s| s.as_str()).collect::<Vec<_>>());
    // The receiver's device is a member (its QP attached) before the
    // sender starts.
    if !joined(rx.map(|h| h.0), group) {
        let _ = r.kill();
        let o = wait("mckey receiver", r, 10);
        panic!("the receiver never joined {group}:\n{}", all_text(&o));
    }
    let ta = args(tx, true);
    let s = start(tx, &ta.iter().map(|s| s.as_str()).collect::<Vec<_>>());
    let so = wait("mckey sender", s, 60);
    // The receiver polls until it has every message: a lost one is a hang,
    // killed at the deadline.
    let ro = wait("mckey receiver", r, 30);
    let (st, rt) = (all_text(&so), all_text(&ro));
    let joined = format!("joined dgid: ::ffff:{group} ");
    for (who, o, t) in [("sender", &so, &st), ("receiver", &ro, &rt)] {
        assert!(
            o.status.success() && t.contains("return status 0"),
            "mckey {who}: {}\n{t}\n--- sender:\n{st}",
            o.status
        );
        assert!(t.contains(&joined), "mckey {who}: {t}");
        assert!(t.contains("data transfers complete"), "mckey {who}: {t}");
    }
    assert!(rt.contains("receiving data transfers"), "{rt}");
}

#[test]
fn mckey_on_one_host() {
    mckey("239.1.1.1", None, None);
}

#[test]
fn mckey_between_two_network_namespace_hosts() {
    let Some(hosts) = two_hosts("mck", [10, 83, 0]) else {
        return;
    };
    let host = |k: usize| Some((hosts.ns[k].as_str(), hosts.addr[k].as_str()));
    // What crosses the veth, as tshark's RoCE dissector reads it: the
    // sender's address to the group, UDP 4791 both ways, DF with IP ID 0,
    // UD SEND with immediate (mckey's) to QPN 0xFFFFFF with RDMA_UDP_QKEY.
    let capture = tools::have("tshark").then(|| {
        let fields = [
            "ip.src",
            "ip.dst",
            "ip.id",
            "ip.flags.df",
            "udp.srcport",
            "udp.dstport",
            "infiniband.bth.opcode",
            "infiniband.bth.destqp",
            "infiniband.deth.q_key",
        ];
        let mut args = vec![
            "netns",
            "exec",
            &hosts.ns[0],
            "tshark",
            "-i",
            &hosts.veth[0],
        ];
        args.extend(["-c", "3", "-f", "udp port 4791", "-T", "fields"]);
        for f in fields {
            args.extend(["-e", f]);
        }
        let c = std::process::Command::new("ip")
            .args(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("tshark");
        // tshark takes a moment to open the interface.
        std::thread::sleep(Duration::from_secs(2));
        c
    });
    mckey("239.1.1.2", host(0), host(1));
    if let Some(c) = capture {
        let o = wait("tshark", c, 20);
        let t = test_support::procs::text(&o.stdout);
        let want = format!(
            "{}\t239.1.1.2\t0x0000\t1\t4791\t4791\t101\t0xffffff\t0x0000000001234567",
            hosts.addr[1]
        );
        let lines: Vec<&str> = t.lines().collect();
        assert!(
            lines.len() == 3 && lines.iter().all(|l| *l == want),
            "captured:\n{t}\n{}",
            all_text(&o)
        );
    }
}

#[test]
fn mckey_in_a_bare_namespace_with_no_multicast_route() {
    // Only `lo`, up, and no route at all: the group still reaches the
    // receiver (the sender names its interface).
    if !test_support::tools::works("unshare", &["-n", "true"]) {
        return;
    }
    let dir = lib_dir();
    shim::ensure_built(dir, true);
    let _g = serial();
    let run = format!(
        "{} run -- mckey -m 239.1.1.3 -C 5",
        dir.join("softrdma").display()
    );
    let script = format!(
        "ip link set lo up && {{ {run} > /dev/stderr & }} && \
         until grep -q {} /proc/net/igmp; do sleep 0.05; done && {run} -s && wait $!",
        igmp_hex("239.1.1.3")
    );
    let c = spawn("unshare", &["-n", "sh", "-c", &script]);
    let o = wait("mckey pair in a namespace", c, 60);
    let t = all_text(&o);
    assert!(o.status.success(), "{}\n{t}", o.status);
    assert_eq!(t.matches("return status 0").count(), 2, "{t}");
    assert!(t.contains("receiving data transfers"), "{t}");
}

#[test]
fn join_and_leave_semantics() {
    let Some(exe) = compile("mcast_api") else {
        return;
    };
    let _g = serial();
    let c = program(exe.to_str().unwrap(), &[]).spawn().unwrap();
    let o = wait("mcast_api", c, 60);
    let t = all_text(&o);
    assert!(o.status.success(), "mcast_api: {}\n{t}", o.status);
    assert!(t.contains("mcast_api: ok"), "{t}");
}
