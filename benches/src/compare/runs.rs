//! The measures, one step per kind, in the order they run: the baselines,
//! then the soft device (perftest through the shim, then `softrdma perf`),
//! then the device's memory. Each step adds its figures to `Results`.

use super::procs::{self, Tools};
use super::{baseline, bw, footprint, median, plot, sweep_sizes, Plan, Results, BW_RUNS, MIB};

/// memcpy, TCP and UDP between two processes: what the soft device is
/// measured against.
pub(super) fn baselines(p: &Plan, r: &mut Results) {
    let v = baseline::memcpy(p.memcpy_len, p.memcpy_reps);
    r.add(
        "memcpy",
        format!(
            "memcpy, one thread, {} MiB buffers, warm (median of {})",
            p.memcpy_len >> 20,
            p.memcpy_reps
        ),
        "MiB/s",
        Ok(v),
    );
    let tcp = baseline::tcp_stream(&[(65536, p.tcp_count); BW_RUNS]);
    let (v, spread) = median(tcp.map(|v| v.into_iter().map(|x| Ok(x.1)).collect()));
    r.add(
        "tcp_64k",
        format!("TCP loopback stream, 2 processes, 64 KiB writes (median of {BW_RUNS})"),
        "MiB/s",
        v,
    );
    r.note(spread);
    let rounds: Vec<(usize, usize)> = sweep_sizes()
        .into_iter()
        .map(|s| (s, (p.tcp_sweep_bytes / s).clamp(8, 200_000)))
        .collect();
    match baseline::tcp_stream(&rounds) {
        Ok(v) => r.sweeps.push(plot::Series {
            name: "TCP loopback stream (write size)".into(),
            points: v.into_iter().map(|(s, b)| (s as u64, b)).collect(),
        }),
        Err(e) => r.add(
            "tcp_sweep",
            "TCP loopback stream, size sweep",
            "MiB/s",
            Err(e),
        ),
    }
    r.add(
        "udp_oneway",
        "UDP ping-pong, 2 B, busy-polling: one-way = median RTT / 2",
        "usec",
        baseline::udp_pingpong(2, p.pp_iters / 10, p.pp_iters),
    );
    r.add(
        "udp_oneway_handoff",
        "UDP ping-pong, 2 B, a blocked receive thread hands off to a spinning thread (ib_write_lat's shape): one-way",
        "usec",
        baseline::udp_pingpong_handoff(p.pp_iters / 10, p.pp_iters),
    );
    let u64r = baseline::udp_stream(64, p.udp64_count);
    r.add(
        "udp64_rate",
        "UDP 64 B datagrams, sendmmsg/recvmmsg x64, received",
        "Mpps",
        u64r.as_ref().map(|v| v.0 / 1e6).map_err(Clone::clone),
    );
    if let Ok((_, lost)) = u64r {
        r.note(format!("{:.1} % lost", lost * 100.0));
    }
    let u4k = baseline::udp_stream(4096, p.udp4k_count);
    r.add(
        "udp4k_bw",
        "UDP 4 KiB datagrams, sendmmsg/recvmmsg x64, received",
        "MiB/s",
        u4k.as_ref()
            .map(|v| v.0 * 4096.0 / MIB)
            .map_err(Clone::clone),
    );
    if let Ok((_, lost)) = u4k {
        r.note(format!("{:.1} % lost", lost * 100.0));
    }
}

/// ib_write_bw, ib_read_bw and ib_send_bw at 64 KiB, pinned and ODP, each
/// `BW_RUNS` times.
pub(super) fn perftest_odp_vs_pinned(p: &Plan, tools: &Tools, r: &mut Results) {
    for (key_p, key_o, prog) in [
        ("wbw_pinned", "wbw_odp", "ib_write_bw"),
        ("rbw_pinned", "rbw_odp", "ib_read_bw"),
        ("sbw_pinned", "sbw_odp", "ib_send_bw"),
    ] {
        // Pinned and ODP take turns, so that a slower stretch of the
        // machine hits both alike.
        let iters = p.bw_iters.to_string();
        let mut runs = [Vec::new(), Vec::new()];
        for k in 0..BW_RUNS {
            for (odp, key) in [key_p, key_o].into_iter().enumerate() {
                let mut args = vec!["-s", "65536", "-n", &iters];
                if odp == 1 {
                    args.push("--odp");
                }
                let o = bw(tools.perftest(&format!("{key}.{k}"), prog, &args));
                runs[odp].push(o.map(|x| x.avg_mbs));
            }
        }
        for ((key, odp), runs) in [(key_p, ""), (key_o, " --odp")].into_iter().zip(runs) {
            let (v, spread) = median(Ok(runs));
            r.add(
                key,
                format!("{prog} -s 65536 RC{odp} (2 processes, shim; median of {BW_RUNS})"),
                "MiB/s",
                v,
            );
            r.note(spread);
        }
    }
}

/// ib_write_bw --odp on the kernel's UDP path: what the same-host rings buy.
pub(super) fn perftest_udp_path(p: &Plan, tools: &Tools, r: &mut Results) {
    let iters = p.bw_iters.to_string();
    let o = bw(tools.perftest_env(
        "wbw_odp_udp",
        "ib_write_bw",
        &["-s", "65536", "-n", &iters, "--odp"],
        &[("SOFTRDMA_SHM", "off")],
    ));
    r.add(
        "wbw_odp_udp",
        "ib_write_bw -s 65536 RC --odp over the kernel's UDP path (SOFTRDMA_SHM=off; one run)",
        "MiB/s",
        o.map(|x| x.avg_mbs),
    );
}

/// ib_write_bw -a, pinned and ODP: the picture's soft-device curves.
pub(super) fn perftest_sweeps(p: &Plan, tools: &Tools, r: &mut Results) {
    let iters = p.sweep_iters.to_string();
    for (key, odp, name) in [
        ("sweep_pinned", false, "ib_write_bw -a (pinned)"),
        ("sweep_odp", true, "ib_write_bw -a --odp"),
    ] {
        let mut args = vec!["-a", "-n", &iters];
        if odp {
            args.push("--odp");
        }
        let (rows, failed) = match tools.perftest(key, "ib_write_bw", &args) {
            Ok(o) => {
                let rows = procs::bw_rows(&o);
                let e = (rows.len() != 23).then(|| format!("{} rows, expected 23", rows.len()));
                (rows, e)
            }
            // The sizes that completed before the failure still go into the
            // picture (the table says it failed, and where).
            Err(e) => (procs::bw_rows(&tools.client_log(key)), Some(e)),
        };
        let mut series = name.to_string();
        let mut rows = rows;
        if let Some(e) = failed {
            let last = rows.last().map_or(0, |x| x.bytes);
            r.add(
                key,
                format!("{name}: completed sizes up to {last} B, then"),
                "MiB/s",
                Err(e),
            );
            rows.extend(sweep_rest(tools, key, odp, &iters, last));
            series.push_str(&format!(
                " (-a failed after {last} B; larger sizes run one by one)"
            ));
        }
        if !rows.is_empty() {
            r.sweeps.push(plot::Series {
                name: series,
                points: rows.iter().map(|x| (x.bytes, x.avg_mbs)).collect(),
            });
        }
    }
}

/// The rest of a failed sweep's picture: each size above `last` on its own
/// (-s); the sizes that fail again are left out.
fn sweep_rest(tools: &Tools, key: &str, odp: bool, iters: &str, last: u64) -> Vec<procs::BwRow> {
    let mut rows = Vec::new();
    for size in sweep_sizes().into_iter().filter(|&s| s as u64 > last) {
        let sz = size.to_string();
        let mut one = vec!["-s", &sz, "-n", iters];
        if odp {
            one.push("--odp");
        }
        if let Ok(x) = bw(tools.perftest(&format!("{key}_{size}"), "ib_write_bw", &one)) {
            rows.push(x);
        }
    }
    rows
}

/// ib_write_bw's 64 B message rate and 16 QPs; ib_write_lat and
/// ib_send_lat at 2 B.
pub(super) fn perftest_rate_qps_lat(p: &Plan, tools: &Tools, r: &mut Results) {
    let iters = p.rate_iters.to_string();
    let o = bw(tools.perftest(
        "wbw64_rate",
        "ib_write_bw",
        &["-s", "64", "-n", &iters, "--odp"],
    ));
    r.add(
        "wbw64_rate",
        "ib_write_bw -s 64 RC --odp: message rate",
        "Mpps",
        o.map(|x| x.mpps),
    );
    let iters = p.q16_iters.to_string();
    let o = bw(tools.perftest(
        "wbw_q16",
        "ib_write_bw",
        &["-s", "65536", "-q", "16", "-n", &iters, "--odp"],
    ));
    r.add(
        "wbw_q16",
        "ib_write_bw -s 65536 -q 16 RC --odp",
        "MiB/s",
        o.map(|x| x.avg_mbs),
    );
    // As many messages in all as `wbw_odp` (perftest takes 5 a QP at
    // least), over 1000 QPs (-t 64: perftest sizes its CQ tx_depth × QPs,
    // and 128 × 1000 is over max_cqe).
    let per_qp = (p.bw_iters / 1000).max(5).to_string();
    let o = bw(tools.perftest(
        "wbw_q1000",
        "ib_write_bw",
        &[
            "-s", "65536", "-q", "1000", "-t", "64", "-n", &per_qp, "--odp",
        ],
    ));
    r.add(
        "wbw_q1000",
        format!("ib_write_bw -s 65536 -q 1000 -t 64 -n {per_qp} RC --odp"),
        "MiB/s",
        o.map(|x| x.avg_mbs),
    );
    let iters = p.lat_iters.to_string();
    let o = tools
        .perftest("wlat", "ib_write_lat", &["-s", "2", "-n", &iters, "--odp"])
        .and_then(|o| procs::lat_typical(&o));
    r.add("wlat", "ib_write_lat -s 2 RC --odp: t_typical", "usec", o);
    let o = tools
        .perftest("slat", "ib_send_lat", &["-s", "2", "-n", &iters, "--odp"])
        .and_then(|o| procs::lat_typical(&o));
    r.add("slat", "ib_send_lat -s 2 RC --odp: t_typical", "usec", o);
}

/// `softrdma perf write_bw` as it comes (embedded: one process, two
/// devices); `--quick` only lowers -n.
pub(super) fn softrdma_default(p: &Plan, tools: &Tools, quick: bool, r: &mut Results) {
    let iters = p.bw_iters.to_string();
    let quick_args = ["write_bw", "-n", &iters];
    let o = bw(tools.softrdma(
        "softrdma_default",
        if quick {
            &quick_args[..]
        } else {
            &quick_args[..1]
        },
    ));
    r.add(
        "softrdma_default",
        format!(
            "softrdma perf write_bw (embedded default{})",
            if quick { ", quick -n" } else { "" }
        ),
        "MiB/s",
        o.map(|x| x.avg_mbs),
    );
    main_job_embedded_vs_two_processes(p, tools, r);
}

/// The README's main job (`perf write_bw -s 65536 -n 5000 --odp
/// --verify`: both devices in one process) against the same run as two
/// processes, taking turns `BW_RUNS` times (issue 21, goal 6).
fn main_job_embedded_vs_two_processes(p: &Plan, tools: &Tools, r: &mut Results) {
    let iters = p.main_iters.to_string();
    let args = ["write_bw", "-s", "65536", "-n", &iters, "--odp", "--verify"];
    let mut runs = [Vec::new(), Vec::new()];
    for k in 0..BW_RUNS {
        let o = bw(tools.softrdma(&format!("main_embedded.{k}"), &args));
        runs[0].push(o.map(|x| x.avg_mbs));
        let o = bw(tools.softrdma_pair(&format!("main_2proc.{k}"), &args));
        runs[1].push(o.map(|x| x.avg_mbs));
    }
    let what = format!("softrdma perf write_bw -s 65536 -n {iters} --odp --verify");
    for ((key, how), runs) in [
        (
            "main_embedded",
            "embedded: one process, the README's main job",
        ),
        ("main_2proc", "two processes: --server, --client 127.0.0.1"),
    ]
    .into_iter()
    .zip(runs)
    {
        let (v, spread) = median(Ok(runs));
        r.add(
            key,
            format!("{what} ({how}; median of {BW_RUNS})"),
            "MiB/s",
            v,
        );
        r.note(spread);
    }
}

/// Steady state, a fresh buffer, and the kernel's floor under the fresh
/// run: with 4 KiB pages, and again with the buffers advised for huge
/// pages; three times each, taking turns. Right before each fresh run and
/// each populate, the harness touches and frees more memory than the run
/// takes (`baseline::warm_host`): otherwise the first touch of memory the
/// VM's host has taken back is the host's fault-in, and that falls on
/// whichever run comes first (runs of 355-5429 MiB/s without it).
pub(super) fn fresh_vs_steady(p: &Plan, tools: &Tools, r: &mut Results) {
    let iters = p.fresh_iters.to_string();
    for (thp, steady, fresh, populate) in [
        (false, "steady", "fresh", "populate"),
        (true, "steady_thp", "fresh_thp", "populate_thp"),
    ] {
        let (flag, pages) = if thp {
            (&["--thp"][..], "huge pages advised (--thp)")
        } else {
            (&[][..], "4 KiB pages")
        };
        let steady_args = [&["write_bw", "--odp", "-n", &iters][..], flag].concat();
        let fresh_args = [&steady_args[..], &["--buffer", p.fresh_buffer]].concat();
        let mut runs = [Vec::new(), Vec::new(), Vec::new()];
        for k in 0..BW_RUNS {
            let o = bw(tools.softrdma(&format!("{steady}.{k}"), &steady_args));
            runs[0].push(o.map(|x| x.avg_mbs));
            let warm = p.fresh_bytes + p.fresh_bytes / 2;
            let o = baseline::warm_host(warm, thp)
                .and_then(|()| bw(tools.softrdma(&format!("{fresh}.{k}"), &fresh_args)));
            runs[1].push(o.map(|x| x.avg_mbs));
            runs[2].push(
                baseline::warm_host(warm, thp)
                    .and_then(|()| baseline::populate_write(p.fresh_bytes, thp)),
            );
        }
        let [steady_runs, fresh_runs, populate_runs] = runs;
        let rows = [
            (
                steady,
                format!("softrdma perf write_bw --odp -n {iters}, {pages}: steady (128 slots cycled)"),
                steady_runs,
            ),
            (
                fresh,
                format!(
                    "softrdma perf write_bw --odp -n {iters} --buffer {}, {pages}: fresh (each page faulted once)",
                    p.fresh_buffer
                ),
                fresh_runs,
            ),
            (
                populate,
                format!(
                    "MADV_POPULATE_WRITE of a fresh {} mapping, {pages}, one thread (the floor under `{fresh}`)",
                    p.fresh_buffer
                ),
                populate_runs,
            ),
        ];
        for (key, what, runs) in rows {
            let (v, spread) = median(Ok(runs));
            r.add(key, format!("{what}; median of {BW_RUNS}"), "MiB/s", v);
            r.note(spread);
        }
    }
}

/// RC WRITE under loss (issue 21, goal 3): the embedded `write_bw -s 65536
/// --odp --verify` with no injector, then dropping 1 packet in 1 000 and 1
/// in 100 (`SOFTRDMA_FAULTS`, each datagram on its own), the three taking
/// turns in each round — a run's figure swings with the machine, so each
/// lossy one is compared with the loss-free ones around it through the
/// medians of all rounds.
pub(super) fn under_loss(p: &Plan, tools: &Tools, r: &mut Results) {
    let iters = p.loss_iters.to_string();
    let args = ["write_bw", "-s", "65536", "-n", &iters, "--odp", "--verify"];
    let cases = [
        ("loss_none", None, "no loss"),
        (
            "loss_0001",
            Some("drop=0.001"),
            "SOFTRDMA_FAULTS=drop=0.001",
        ),
        ("loss_001", Some("drop=0.01"), "SOFTRDMA_FAULTS=drop=0.01"),
    ];
    let mut runs: Vec<Vec<Result<f64, String>>> = vec![Vec::new(); cases.len()];
    for k in 0..p.loss_rounds {
        // Rotate the order so no case always runs first or last.
        for j in 0..cases.len() {
            let c = (j + k) % cases.len();
            let (key, faults, _) = cases[c];
            let env: Vec<(&str, &str)> =
                faults.map(|f| ("SOFTRDMA_FAULTS", f)).into_iter().collect();
            let o = bw(tools.softrdma_env(&format!("{key}.{k}"), &args, &env));
            runs[c].push(o.map(|x| x.avg_mbs));
        }
    }
    for ((key, _, how), runs) in cases.into_iter().zip(runs) {
        let (v, spread) = median(Ok(runs));
        r.add(
            key,
            format!(
                "softrdma perf write_bw -s 65536 -n {iters} --odp --verify, {how}; median of {}",
                p.loss_rounds
            ),
            "MiB/s",
            v,
        );
        r.note(spread);
    }
}

/// The device's own memory: implicit ODP's per-page state over 1 TiB of
/// address space, per GiB touched.
pub(super) fn device_memory(p: &Plan, r: &mut Results) {
    let fp = footprint::implicit_1tib(p.touched);
    let scale = |f: &footprint::Footprint| f.bytes as f64 * (1u64 << 30) as f64 / f.touched as f64;
    r.add(
        "implicit_fp",
        "implicit ODP over 1 TiB, per-page state per 1 GiB touched",
        "bytes",
        fp.as_ref().map(scale).map_err(Clone::clone),
    );
    if let Ok(f) = &fp {
        r.note(format!(
            "{} children; {} MiB touched{}",
            f.children,
            f.touched >> 20,
            if f.touched < 1 << 30 {
                ", scaled to 1 GiB"
            } else {
                ""
            }
        ));
    }
}

/// rdma_cm connection set-up between two processes: rdma-core's `cmtime`
/// (its client resolves, creates the QPs and connects N connections, each
/// step for all of them at once) through our libibverbs and librdmacm.
pub(super) fn connection_rate(p: &Plan, tools: &Tools, r: &mut Results) {
    let n = p.cm_conns.to_string();
    let mut connect = Vec::new();
    let mut setup = Vec::new();
    for k in 0..BW_RUNS {
        let port = 21_000 + k as u16;
        let ports = port.to_string();
        let server: [&str; 4] = ["-p", &ports, "-c", &n];
        let client: [&str; 6] = ["-s", "127.0.0.1", "-p", &ports, "-c", &n];
        let Some(out) = tools.cm_pair(&format!("cmtime.{k}"), "cmtime", (&server, &client), || {
            test_support::net::cm_listening(procs::RDMA_PS_TCP, port)
        }) else {
            r.add(
                "cm_connect",
                "rdma_cm connections (cmtime)",
                "conn/s",
                Err("librdmacm.so not built: `cargo build -p rdmacm-shim`".into()),
            );
            return;
        };
        let steps = out.and_then(|o| procs::cmtime_steps(&o));
        let per_s = |ms: f64| p.cm_conns as f64 / (ms / 1000.0);
        connect.push(steps.clone().map(|s| per_s(s.connect)));
        setup.push(steps.map(|s| per_s(s.until_connected)));
    }
    let (v, spread) = median(Ok(connect));
    r.add(
        "cm_connect",
        format!(
            "rdma_cm: {} connections connected at once, 2 processes (cmtime's connect step; median of {BW_RUNS})",
            p.cm_conns
        ),
        "conn/s",
        v,
    );
    r.note(spread);
    let (v, spread) = median(Ok(setup));
    r.add(
        "cm_setup",
        format!(
            "rdma_cm: {} connections from nothing (create id, resolve address and route, create QP, connect; median of {BW_RUNS})",
            p.cm_conns
        ),
        "conn/s",
        v,
    );
    r.note(spread);
}
