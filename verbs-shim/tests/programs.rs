//! Unmodified Debian verbs programs (ibverbs-utils, perftest) on the soft
//! device through our libibverbs.so.1. Each pair uses its own out-of-band
//! TCP port; pairs run one at a time (2 cores); a hang fails after 60 s.

mod common;
use common::*;
use test_support::procs::{all_text, finish};

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
            "\t\t\t\t\tXRC\n",
            "ODP_SUPPORT_IMPLICIT",
            "rc_odp_caps:\n\t\t\t\t\tSUPPORT_SEND\n\t\t\t\t\tSUPPORT_RECV\n\t\t\t\t\tSUPPORT_WRITE\n\t\t\t\t\tSUPPORT_READ\n\t\t\t\t\tSUPPORT_ATOMIC\n\t\t\t\t\tSUPPORT_SRQ",
            "gid_tbl_len:\t\t1024",
            "phys_state:\t\tLINK_UP (5)",
            // RoCE v2 entries print as addresses (v1 ones as raw groups).
            "GID[  0]:\t\tfe80::ffff:",
            "GID[  1]:\t\t::ffff:127.",
            ", RoCE v2",
        ],
    );
    // rxe's table: only RoCE v2, and only the two populated entries.
    assert!(
        !out.contains("RoCE v1") && !out.contains("GID[  2]"),
        "{out}"
    );
}

/// What a pingpong server run with `-c` prints for a page of its receive
/// buffer whose first byte the client did not set (it still exits 0).
const PINGPONG_INVALID: &str = "invalid data in page";

/// A pingpong pair, both with `-c` (the client zeroes the first byte of each
/// page of its buffer before sending it; the server checks the last buffer
/// it received and prints [`PINGPONG_INVALID`] for each page that is not —
/// its exit status does not say): both print the byte count and the
/// per-iteration time, and the server found its data valid.
fn pingpong(prog: &str, port: u16, extra: &[&str]) {
    let mut args = vec!["-g", "1", "-c"];
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
        assert!(!out.contains(PINGPONG_INVALID), "{prog} {extra:?}:\n{out}");
    }
}

/// The control of `-c`: a client without it leaves its buffer as allocated
/// (0x7b bytes), and the validating server says so — the check runs and
/// would catch data that did not arrive.
#[test]
fn rc_pingpong_validation_catches_unset_data() {
    let (s, _) = pair("ibv_rc_pingpong", 18745, &["-g", "1", "-c"], &["-g", "1"]);
    assert!(s.contains(&format!("{PINGPONG_INVALID} 0")), "{s}");
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

/// `-N`: the extended send API (`ibv_create_qp_ex` with send ops,
/// `ibv_qp_to_qp_ex`, `ibv_wr_start`/`wr_send`/`wr_set_sge`/`wr_complete`).
#[test]
fn rc_pingpong_new_send() {
    pingpong("ibv_rc_pingpong", 18743, &["-N"]);
}

#[test]
fn srq_pingpong() {
    pingpong("ibv_srq_pingpong", 18709, &[]);
}

/// XRC: each side's initiator QP sends to the other's XRC SRQs through
/// its target QP (`ibv_open_xrcd`, `ibv_create_srq_ex`, `ibv_get_srq_num`,
/// `ibv_create_qp_ex` with both XRC types, `remote_srqn`); plain, ODP, and
/// multi-packet messages.
#[test]
fn xsrq_pingpong() {
    for (port, extra) in [
        (18750, &[][..]),
        (18751, &["-o"][..]),
        (18752, &["-s", "10000", "-m", "1024", "-n", "20"][..]),
    ] {
        let mut args = vec!["-g", "1"];
        args.extend_from_slice(extra);
        let (s, c) = pair("ibv_xsrq_pingpong", port, &args, &args);
        for out in [&s, &c] {
            assert_has(out, &["local: LID", "remote: LID", "SRQN", "success"]);
        }
    }
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

/// How a perftest result table reads: its header and the column of the row
/// that must be positive.
#[derive(Clone, Copy)]
enum Table {
    /// `#bytes #iterations BW peak[MB/sec] BW average[MB/sec] MsgRate[Mpps]`:
    /// the message rate (a BW of small messages rounds to 0.00).
    Bw,
    /// `#bytes #iterations t_min[usec] t_max[usec] t_typical[usec] t_avg[usec] ...`.
    Lat,
}

impl Table {
    fn header(self) -> &'static [&'static str] {
        match self {
            Table::Bw => &[
                "#bytes",
                "#iterations",
                "BW average[MB/sec]",
                "MsgRate[Mpps]",
            ],
            Table::Lat => &["#bytes", "#iterations", "t_min[usec]", "t_avg[usec]"],
        }
    }

    fn column(self) -> usize {
        match self {
            Table::Bw => 4,
            Table::Lat => 5,
        }
    }
}

/// The result row for `bytes`/`iters` in `out`, with its figure checked.
fn result_row<'a>(out: &'a str, t: Table, bytes: &str, iters: &str) -> &'a str {
    let header = out
        .lines()
        .find(|l| l.contains("#bytes"))
        .unwrap_or_else(|| panic!("no table header:\n{out}"));
    for h in t.header() {
        assert!(header.contains(h), "header {header:?} lacks {h:?}");
    }
    let row = out
        .lines()
        .find(|l| l.split_whitespace().take(2).collect::<Vec<_>>() == [bytes, iters])
        .unwrap_or_else(|| panic!("no {bytes} x {iters} row:\n{out}"));
    let v: f64 = row
        .split_whitespace()
        .nth(t.column())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("row {row:?}"));
    assert!(v > 0.0, "column {} is {v} in {row:?}", t.column());
    row
}

/// A perftest pair on softrdma0 (GID index 1 unless `auto_gid`): both exit
/// 0 and print the test's title and settings; the client prints the result
/// table with the `bytes` x `iters` row. Returns (server, client).
fn perftest_pair(
    prog: &str,
    port: u16,
    extra: &[&str],
    auto_gid: bool,
    title: &str,
    t: Table,
    (bytes, iters): (&str, &str),
) -> (String, String) {
    let mut args = vec!["-d", "softrdma0"];
    if !auto_gid {
        args.extend(["-x", "1"]);
    }
    args.extend_from_slice(extra);
    let (s, c) = pair(prog, port, &args, &args);
    for out in [&s, &c] {
        assert_has(
            out,
            &[
                title,
                "Device         : softrdma0",
                "Link type       : Ethernet",
                "GID index       : 1",
            ],
        );
    }
    result_row(&c, t, bytes, iters);
    (s, c)
}

/// The common case: the default message size of the test, `-n` iterations.
fn perftest(prog: &str, port: u16, extra: &[&str], title: &str, bytes: &str, iters: &str) {
    let t = if prog.ends_with("_lat") {
        Table::Lat
    } else {
        Table::Bw
    };
    let mut args = vec!["-n", iters];
    args.extend_from_slice(extra);
    let (_, c) = perftest_pair(prog, port, &args, false, title, t, (bytes, iters));
    let conn = if extra.contains(&"UD") {
        "UD"
    } else if extra.contains(&"UC") {
        "UC"
    } else {
        "RC"
    };
    assert_has(&c, &[&format!("Connection type : {conn}")]);
}

#[test]
fn ib_write_bw_odp() {
    perftest(
        "ib_write_bw",
        18711,
        &["--odp"],
        "RDMA_Write BW Test",
        "65536",
        "500",
    );
}

#[test]
fn ib_read_bw() {
    perftest(
        "ib_read_bw",
        18712,
        &[],
        "RDMA_Read BW Test",
        "65536",
        "500",
    );
}

#[test]
fn ib_send_bw_ud() {
    perftest(
        "ib_send_bw",
        18713,
        &["-c", "UD"],
        "Send BW Test",
        "4096",
        "500",
    );
}

#[test]
fn ib_write_lat() {
    perftest(
        "ib_write_lat",
        18714,
        &["-s", "2"],
        "RDMA_Write Latency Test",
        "2",
        "1000",
    );
}

#[test]
fn ib_atomic_bw() {
    perftest(
        "ib_atomic_bw",
        18715,
        &[],
        "Atomic FETCH_AND_ADD BW Test",
        "8",
        "500",
    );
}

#[test]
fn ib_send_bw() {
    perftest("ib_send_bw", 18730, &[], "Send BW Test", "65536", "500");
}

#[test]
fn ib_send_bw_odp() {
    perftest(
        "ib_send_bw",
        18731,
        &["--odp"],
        "Send BW Test",
        "65536",
        "500",
    );
}

#[test]
fn ib_read_bw_odp() {
    perftest(
        "ib_read_bw",
        18732,
        &["--odp"],
        "RDMA_Read BW Test",
        "65536",
        "500",
    );
}

#[test]
fn ib_read_lat() {
    perftest(
        "ib_read_lat",
        18733,
        &[],
        "RDMA_Read Latency Test",
        "2",
        "500",
    );
}

#[test]
fn ib_read_lat_odp() {
    perftest(
        "ib_read_lat",
        18734,
        &["--odp"],
        "RDMA_Read Latency Test",
        "2",
        "500",
    );
}

#[test]
fn ib_send_lat() {
    perftest("ib_send_lat", 18735, &[], "Send Latency Test", "2", "500");
}

#[test]
fn ib_send_lat_odp() {
    perftest(
        "ib_send_lat",
        18736,
        &["--odp"],
        "Send Latency Test",
        "2",
        "500",
    );
}

#[test]
fn ib_write_lat_odp() {
    perftest(
        "ib_write_lat",
        18737,
        &["--odp"],
        "RDMA_Write Latency Test",
        "2",
        "500",
    );
}

#[test]
fn ib_atomic_lat() {
    perftest(
        "ib_atomic_lat",
        18738,
        &[],
        "Atomic FETCH_AND_ADD Latency Test",
        "8",
        "500",
    );
}

#[test]
fn ib_atomic_bw_compare_and_swap() {
    perftest(
        "ib_atomic_bw",
        18744,
        &["-A", "CMP_AND_SWAP"],
        "Atomic CMP_AND_SWAP BW Test",
        "8",
        "500",
    );
}

/// Debian's perftest (4.5-0.17) refuses `--odp` with the atomic tests itself,
/// before it opens a device; ODP atomics are covered by soft-rdma's
/// `rc_ops` and `softrdma perf atomic_bw --odp` instead.
#[test]
fn ib_atomic_odp_is_refused_by_perftest_itself() {
    for prog in ["ib_atomic_bw", "ib_atomic_lat"] {
        let child = program(prog, &["-d", "softrdma0", "--odp"])
            .spawn()
            .unwrap_or_else(|e| panic!("{prog}: {e}"));
        let out = finish(prog, child, std::time::Duration::from_secs(30));
        let all = all_text(&out);
        assert!(
            !out.status.success() && all.contains("ODP does not support ATOMICS"),
            "{prog} --odp: {}\n{all}",
            out.status
        );
    }
}

#[test]
fn ib_write_bw_uc() {
    perftest(
        "ib_write_bw",
        18739,
        &["-c", "UC"],
        "RDMA_Write BW Test",
        "65536",
        "500",
    );
}

/// `-a`: every size from 2 bytes to 8 MiB, each with its row.
#[test]
fn ib_write_bw_all_sizes() {
    let (_, c) = perftest_pair(
        "ib_write_bw",
        18740,
        &["-a", "-n", "20"],
        false,
        "RDMA_Write BW Test",
        Table::Bw,
        ("2", "20"),
    );
    for k in 1..=23 {
        result_row(&c, Table::Bw, &(1u64 << k).to_string(), "20");
    }
}

/// Without `-x` perftest scores the GID table itself and must pick the
/// IPv4-mapped RoCE v2 entry (index 1).
#[test]
fn ib_write_bw_auto_gid() {
    perftest_pair(
        "ib_write_bw",
        18741,
        &["-n", "200"],
        true,
        "RDMA_Write BW Test",
        Table::Bw,
        ("65536", "200"),
    );
}

#[test]
fn ib_send_lat_auto_gid() {
    perftest_pair(
        "ib_send_lat",
        18742,
        &["-n", "200"],
        true,
        "Send Latency Test",
        Table::Lat,
        ("2", "200"),
    );
}
