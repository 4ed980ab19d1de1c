//! Unmodified Debian verbs programs (ibverbs-utils, perftest) on the soft
//! device through our libibverbs.so.1. Each pair uses its own out-of-band
//! TCP port; pairs run one at a time (2 cores); a hang fails after 60 s.

mod common;
use common::*;

fn assert_has(out: &str, what: &[&str]) {
    for w in what {
        assert!(out.contains(w), "missing {w:?} in:\n{out}");
    }
}

#[test]
fn ibv_devices_lists_softrdma0() {
    let out = run_ok("ibv_devices", &[]);
    let line = out
        .lines()
        .find(|l| l.contains("softrdma0"))
        .unwrap_or_else(|| panic!("no softrdma0:\n{out}"));
    let guid = line.split_whitespace().nth(1).expect("a GUID column");
    assert!(
        guid.len() == 16 && guid.chars().all(|c| c.is_ascii_hexdigit()),
        "GUID {guid:?}"
    );
}

#[test]
fn ibv_devinfo() {
    let out = run_ok("ibv_devinfo", &[]);
    assert_has(
        &out,
        &[
            "hca_id:\tsoftrdma0",
            "transport:\t\t\tInfiniBand (0)",
            "fw_ver:\t\t\t\t0.1.0",
            "phys_port_cnt:\t\t\t1",
            "state:\t\t\tPORT_ACTIVE (4)",
            "active_mtu:\t\t4096 (5)",
            "link_layer:\t\tEthernet",
        ],
    );
}

#[test]
fn ibv_devinfo_verbose() {
    let out = run_ok("ibv_devinfo", &["-v"]);
    assert_has(
        &out,
        &[
            "hca_id:\tsoftrdma0",
            "atomic_cap:\t\t\tATOMIC_HCA (1)",
            "max_qp_wr:\t\t\t16384",
            "ODP_SUPPORT\n",
            "ODP_SUPPORT_IMPLICIT",
            "rc_odp_caps:\n\t\t\t\t\tSUPPORT_SEND\n\t\t\t\t\tSUPPORT_RECV\n\t\t\t\t\tSUPPORT_WRITE\n\t\t\t\t\tSUPPORT_READ\n\t\t\t\t\tSUPPORT_ATOMIC\n\t\t\t\t\tSUPPORT_SRQ",
            "gid_tbl_len:\t\t2",
            "phys_state:\t\tLINK_UP (5)",
            "GID[  0]:\t\tfe80:0000:0000:0000:",
            ", RoCE v1",
            "GID[  1]:\t\t::ffff:127.",
            ", RoCE v2",
        ],
    );
}

/// A pingpong pair: both print the byte count and the per-iteration time.
fn pingpong(prog: &str, port: u16, extra: &[&str]) {
    let mut args = vec!["-g", "1"];
    args.extend_from_slice(extra);
    let (s, c) = pair(prog, port, &args, &args);
    for out in [&s, &c] {
        assert_has(
            out,
            &[
                "local address:",
                "remote address:",
                "GID ::ffff:127.",
                " bytes in ",
                " seconds = ",
                "1000 iters in ",
            ],
        );
    }
}

#[test]
fn rc_pingpong() {
    pingpong("ibv_rc_pingpong", 18701, &[]);
}

#[test]
fn rc_pingpong_events() {
    pingpong("ibv_rc_pingpong", 18702, &["-e"]);
}

#[test]
fn rc_pingpong_odp() {
    pingpong("ibv_rc_pingpong", 18703, &["-o"]);
}

#[test]
fn rc_pingpong_implicit_odp() {
    pingpong("ibv_rc_pingpong", 18704, &["-O"]);
}

#[test]
fn rc_pingpong_odp_prefetch() {
    pingpong("ibv_rc_pingpong", 18705, &["-o", "-P"]);
}

#[test]
fn rc_pingpong_implicit_odp_prefetch() {
    pingpong("ibv_rc_pingpong", 18706, &["-O", "-P"]);
}

#[test]
fn uc_pingpong() {
    pingpong("ibv_uc_pingpong", 18707, &[]);
}

#[test]
fn ud_pingpong() {
    pingpong("ibv_ud_pingpong", 18708, &[]);
}

#[test]
fn srq_pingpong() {
    pingpong("ibv_srq_pingpong", 18709, &[]);
}

#[test]
fn ib_write_bw() {
    let args = ["-d", "softrdma0", "-x", "1", "-n", "1000"];
    let (s, c) = pair("ib_write_bw", 18710, &args, &args);
    for out in [&s, &c] {
        assert_has(
            out,
            &[
                "RDMA_Write BW Test",
                "Device         : softrdma0",
                "Link type       : Ethernet",
                "GID index       : 1",
                "BW average[MB/sec]",
            ],
        );
        let row = out
            .lines()
            .find(|l| l.split_whitespace().take(2).collect::<Vec<_>>() == ["65536", "1000"])
            .unwrap_or_else(|| panic!("no result row:\n{out}"));
        let avg: f64 = row
            .split_whitespace()
            .nth(3)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("row {row:?}"));
        assert!(avg > 0.0, "average bandwidth {avg} in {row:?}");
    }
}

/// A perftest pair: both sides exit 0 and print the result row
/// (`#bytes #iterations ...`).
fn perftest(prog: &str, port: u16, extra: &[&str], bytes: &str, iters: &str) {
    let mut args = vec!["-d", "softrdma0", "-x", "1"];
    args.extend_from_slice(extra);
    let (s, c) = pair(prog, port, &args, &args);
    let row = c
        .lines()
        .find(|l| l.split_whitespace().take(2).collect::<Vec<_>>() == [bytes, iters]);
    assert!(
        row.is_some(),
        "no result row in the client's output:\n{c}\n--- server:\n{s}"
    );
}

#[test]
fn ib_write_bw_odp() {
    perftest(
        "ib_write_bw",
        18711,
        &["--odp", "-n", "500"],
        "65536",
        "500",
    );
}

#[test]
fn ib_read_bw() {
    perftest("ib_read_bw", 18712, &["-n", "500"], "65536", "500");
}

#[test]
fn ib_send_bw_ud() {
    perftest(
        "ib_send_bw",
        18713,
        &["-c", "UD", "-n", "500"],
        "4096",
        "500",
    );
}

#[test]
fn ib_write_lat() {
    perftest(
        "ib_write_lat",
        18714,
        &["-s", "2", "-n", "1000"],
        "2",
        "1000",
    );
}

#[test]
fn ib_atomic_bw() {
    perftest("ib_atomic_bw", 18715, &["-n", "500"], "8", "500");
}
