//! The side-by-side comparison (issue 5): the soft device (unmodified
//! perftest through the shim between two processes, and `softrdma perf`)
//! against baselines built here (TCP/UDP loopback between two processes,
//! memcpy), in one run. Prints the measures, the goals with their ratios
//! and pass/fail, a sweep table, and draws the bandwidth picture.
//!
//! A missed goal never fails the run; a measure whose run failed does (exit
//! 1, after everything else ran and printed).

pub mod baseline;
pub mod footprint;
pub mod plot;
pub mod procs;

use procs::Tools;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const MIB: f64 = (1u64 << 20) as f64;

pub struct Config {
    pub quick: bool,
    /// Output directory (the SVG, the table, the programs' logs).
    pub out: PathBuf,
    /// Where the shim and `softrdma` are (`target/<profile>`).
    pub exe_dir: PathBuf,
}

/// Iteration counts: the full run and the `--quick` smoke test.
struct Plan {
    bw_iters: u32,
    sweep_iters: u32,
    rate_iters: u32,
    q16_iters: u32,
    lat_iters: u32,
    fresh_buffer: &'static str,
    fresh_bytes: usize,
    fresh_iters: u32,
    tcp_count: usize,
    tcp_sweep_bytes: usize,
    pp_iters: usize,
    udp64_count: usize,
    udp4k_count: usize,
    memcpy_len: usize,
    memcpy_reps: usize,
    touched: u64,
}

const FULL: Plan = Plan {
    bw_iters: 10_000,
    sweep_iters: 500,
    rate_iters: 100_000,
    q16_iters: 1000,
    lat_iters: 10_000,
    fresh_buffer: "1G",
    fresh_bytes: 1 << 30,
    fresh_iters: 16384,
    tcp_count: 20_000,
    tcp_sweep_bytes: 256 << 20,
    pp_iters: 20_000,
    udp64_count: 2_000_000,
    udp4k_count: 200_000,
    memcpy_len: 256 << 20,
    memcpy_reps: 7,
    touched: 1 << 30,
};

const QUICK: Plan = Plan {
    bw_iters: 200,
    sweep_iters: 10,
    rate_iters: 2000,
    q16_iters: 20,
    lat_iters: 500,
    fresh_buffer: "32M",
    fresh_bytes: 32 << 20,
    fresh_iters: 512,
    tcp_count: 1000,
    tcp_sweep_bytes: 4 << 20,
    pp_iters: 1000,
    udp64_count: 50_000,
    udp4k_count: 5000,
    memcpy_len: 32 << 20,
    memcpy_reps: 3,
    touched: 64 << 20,
};

/// One measured figure (or why its run failed).
struct Measure {
    key: &'static str,
    what: String,
    unit: &'static str,
    value: Result<f64, String>,
    note: String,
}

#[derive(Default)]
struct Results {
    rows: Vec<Measure>,
    sweeps: Vec<plot::Series>,
}

impl Results {
    fn add(
        &mut self,
        key: &'static str,
        what: impl Into<String>,
        unit: &'static str,
        value: Result<f64, String>,
    ) {
        let what = what.into();
        match &value {
            Ok(v) => eprintln!("compare: {what}: {v:.3} {unit}"),
            Err(e) => eprintln!("compare: {what}: FAILED: {e}"),
        }
        self.rows.push(Measure {
            key,
            what,
            unit,
            value,
            note: String::new(),
        });
    }
    fn note(&mut self, n: impl Into<String>) {
        if let Some(m) = self.rows.last_mut() {
            m.note = n.into();
        }
    }
    fn get(&self, key: &str) -> Option<f64> {
        self.rows
            .iter()
            .find(|m| m.key == key)
            .and_then(|m| m.value.as_ref().ok().copied())
    }
}

/// A goal: `num / den` compared with `target`.
struct Goal {
    what: &'static str,
    num: &'static str,
    den: Den,
    at_least: bool,
    target: f64,
}

enum Den {
    Measure(&'static str),
    Const(f64),
}

const GOALS: &[Goal] = &[
    Goal {
        what: "ib_write_bw 64 KiB RC --odp vs TCP loopback stream",
        num: "wbw_odp",
        den: Den::Measure("tcp_64k"),
        at_least: true,
        target: 1.0,
    },
    Goal {
        what: "(stretch) ib_write_bw 64 KiB RC --odp vs memcpy",
        num: "wbw_odp",
        den: Den::Measure("memcpy"),
        at_least: true,
        target: 0.5,
    },
    Goal {
        what: "ib_write_bw 64 KiB: ODP vs pinned",
        num: "wbw_odp",
        den: Den::Measure("wbw_pinned"),
        at_least: true,
        target: 0.95,
    },
    Goal {
        what: "(also) ib_read_bw 64 KiB: ODP vs pinned",
        num: "rbw_odp",
        den: Den::Measure("rbw_pinned"),
        at_least: true,
        target: 0.95,
    },
    Goal {
        what: "(also) ib_send_bw 64 KiB: ODP vs pinned",
        num: "sbw_odp",
        den: Den::Measure("sbw_pinned"),
        at_least: true,
        target: 0.95,
    },
    Goal {
        what: "write_bw over a fresh ODP buffer vs steady state, 4 KiB pages",
        num: "fresh",
        den: Den::Measure("steady"),
        at_least: true,
        target: 0.5,
    },
    Goal {
        what: "write_bw over a fresh ODP buffer vs steady state, huge pages advised",
        num: "fresh_thp",
        den: Den::Measure("steady_thp"),
        at_least: true,
        target: 0.5,
    },
    Goal {
        what: "(also) the machine: populating fresh 4 KiB memory alone vs steady state (below 1, a fresh 4 KiB run cannot reach 0.5)",
        num: "populate",
        den: Den::Measure("steady"),
        at_least: true,
        target: 1.0,
    },
    Goal {
        what: "(also) write_bw over a fresh ODP buffer vs populating fresh memory alone, 4 KiB",
        num: "fresh",
        den: Den::Measure("populate"),
        at_least: true,
        target: 0.5,
    },
    Goal {
        what: "ib_write_lat 2 B t_typical vs UDP one-way",
        num: "wlat",
        den: Den::Measure("udp_oneway"),
        at_least: false,
        target: 1.2,
    },
    Goal {
        what: "(also) ib_write_lat 2 B vs the hand-off UDP one-way (its floor here)",
        num: "wlat",
        den: Den::Measure("udp_oneway_handoff"),
        at_least: false,
        target: 1.2,
    },
    Goal {
        what: "(also) ib_send_lat 2 B t_typical vs UDP one-way",
        num: "slat",
        den: Den::Measure("udp_oneway"),
        at_least: false,
        target: 1.2,
    },
    Goal {
        what: "ib_write_bw 64 B msg rate vs UDP 64 B datagram rate",
        num: "wbw64_rate",
        den: Den::Measure("udp64_rate"),
        at_least: true,
        target: 0.8,
    },
    Goal {
        what: "ib_write_bw 64 KiB -q 16 vs -q 1",
        num: "wbw_q16",
        den: Den::Measure("wbw_odp"),
        at_least: true,
        target: 0.9,
    },
    Goal {
        what: "implicit ODP, 1 TiB space, 1 GiB touched: per-page state vs 1 MiB",
        num: "implicit_fp",
        den: Den::Const(MIB),
        at_least: false,
        target: 1.0,
    },
];

/// Runs of each 64 KiB bandwidth figure behind a goal: the table takes the
/// median, the note the spread (runs on this machine differ by 10-30 %).
const BW_RUNS: usize = 3;

/// The median of some runs (a failed run fails the figure) and their range.
fn median(runs: Result<Vec<Result<f64, String>>, String>) -> (Result<f64, String>, String) {
    let mut v = match runs.and_then(|r| r.into_iter().collect::<Result<Vec<f64>, _>>()) {
        Ok(v) if !v.is_empty() => v,
        Ok(_) => return (Err("no runs".into()), String::new()),
        Err(e) => return (Err(e), String::new()),
    };
    v.sort_by(f64::total_cmp);
    let spread = format!("runs {:.0}-{:.0}", v[0], v[v.len() - 1]);
    (Ok(v[v.len() / 2]), spread)
}

fn bw(out: Result<String, String>) -> Result<procs::BwRow, String> {
    out.and_then(|o| procs::bw_row(&o))
}

/// The sweep sizes of `-a`: 2 .. 8 MiB.
fn sweep_sizes() -> Vec<usize> {
    (1..=23).map(|k| 1usize << k).collect()
}

/// Runs everything; returns the report text and whether every run succeeded.
pub fn run(cfg: &Config) -> Result<(String, bool), String> {
    let p = if cfg.quick { &QUICK } else { &FULL };
    let timeout = Duration::from_secs(if cfg.quick { 60 } else { 300 });
    // Fails early, in one line, if the shim, softrdma or perftest is missing.
    let tools = Tools::find(&cfg.exe_dir, &cfg.out, timeout)?;
    let started = Instant::now();
    let mut r = Results::default();
    let n = |v: u32| v.to_string();

    // ---- baselines ----
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

    // ---- the soft device: unmodified perftest through the shim ----
    for (key_p, key_o, prog) in [
        ("wbw_pinned", "wbw_odp", "ib_write_bw"),
        ("rbw_pinned", "rbw_odp", "ib_read_bw"),
        ("sbw_pinned", "sbw_odp", "ib_send_bw"),
    ] {
        // Pinned and ODP take turns, so that a slower stretch of the
        // machine hits both alike.
        let iters = n(p.bw_iters);
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
    // The same pair on the kernel's UDP path: what the same-host rings buy.
    let iters = n(p.bw_iters);
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
    let iters = n(p.sweep_iters);
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
            // The rest of the picture: each missing size on its own (-s).
            for size in sweep_sizes().into_iter().filter(|&s| s as u64 > last) {
                let sz = size.to_string();
                let mut one = vec!["-s", &sz, "-n", &iters];
                if odp {
                    one.push("--odp");
                }
                if let Ok(x) = bw(tools.perftest(&format!("{key}_{size}"), "ib_write_bw", &one)) {
                    rows.push(x);
                }
            }
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
    let iters = n(p.rate_iters);
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
    let iters = n(p.q16_iters);
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
    let iters = n(p.lat_iters);
    let o = tools
        .perftest("wlat", "ib_write_lat", &["-s", "2", "-n", &iters, "--odp"])
        .and_then(|o| procs::lat_typical(&o));
    r.add("wlat", "ib_write_lat -s 2 RC --odp: t_typical", "usec", o);
    let o = tools
        .perftest("slat", "ib_send_lat", &["-s", "2", "-n", &iters, "--odp"])
        .and_then(|o| procs::lat_typical(&o));
    r.add("slat", "ib_send_lat -s 2 RC --odp: t_typical", "usec", o);

    // ---- the soft device: softrdma perf (embedded: one process, two devices) ----
    let iters = n(p.bw_iters);
    let quick_args = ["write_bw", "-n", &iters];
    let o = bw(tools.softrdma(
        "softrdma_default",
        if cfg.quick {
            &quick_args[..]
        } else {
            &quick_args[..1]
        },
    ));
    r.add(
        "softrdma_default",
        format!(
            "softrdma perf write_bw (embedded default{})",
            if cfg.quick { ", quick -n" } else { "" }
        ),
        "MiB/s",
        o.map(|x| x.avg_mbs),
    );
    // Steady state, a fresh buffer, and the kernel's floor under the fresh
    // run: with 4 KiB pages, and again with the buffers advised for huge
    // pages; three times each, taking turns. Right before each fresh run
    // and each populate, the harness touches and frees more memory than the
    // run takes (`baseline::warm_host`): otherwise the first touch of memory
    // the VM's host has taken back is the host's fault-in, and that falls on
    // whichever run comes first (runs of 355-5429 MiB/s without it).
    let iters = n(p.fresh_iters);
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

    // ---- device memory ----
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

    // ---- report ----
    let mut rep = String::new();
    let took = started.elapsed().as_secs_f64();
    let _ = writeln!(
        rep,
        "\n## soft-rdma vs baselines{} ({took:.0} s)\n",
        if cfg.quick {
            " (--quick: smoke-test counts, figures not meaningful)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        rep,
        "| measure | value | unit | note |\n| --- | ---: | --- | --- |"
    );
    for m in &r.rows {
        let v = match &m.value {
            Ok(v) if m.unit == "bytes" => format!("{v:.0}"),
            Ok(v) if *v >= 100.0 => format!("{v:.0}"),
            Ok(v) => format!("{v:.3}"),
            Err(_) => "FAILED".into(),
        };
        let note = match &m.value {
            Err(e) => e.replace('|', "/"),
            Ok(_) => m.note.clone(),
        };
        let _ = writeln!(rep, "| {} | {v} | {} | {note} |", m.what, m.unit);
    }
    let _ = writeln!(
        rep,
        "\n| goal | ratio | target | met? |\n| --- | ---: | --- | --- |"
    );
    for g in GOALS {
        let den = match g.den {
            Den::Measure(k) => r.get(k),
            Den::Const(c) => Some(c),
        };
        let (ratio, met) = match (r.get(g.num), den) {
            (Some(a), Some(b)) if b > 0.0 => {
                let x = a / b;
                let ok = if g.at_least {
                    x >= g.target
                } else {
                    x <= g.target
                };
                (format!("{x:.2}x"), if ok { "PASS" } else { "FAIL" })
            }
            _ => ("n/a".into(), "n/a (a run failed)"),
        };
        let target = format!("{} {:.2}x", if g.at_least { ">=" } else { "<=" }, g.target);
        let _ = writeln!(rep, "| {} | {ratio} | {target} | {met} |", g.what);
    }
    // The picture's data as a table too.
    let _ = writeln!(rep, "\nBandwidth against message size (MiB/s):\n");
    let mut cols: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for (i, s) in r.sweeps.iter().enumerate() {
        for &(x, y) in &s.points {
            let c = cols
                .entry(x)
                .or_insert_with(|| vec!["-".into(); r.sweeps.len()]);
            c[i] = format!("{y:.1}");
        }
    }
    let head: Vec<&str> = r.sweeps.iter().map(|s| s.name.as_str()).collect();
    let _ = writeln!(rep, "| bytes | {} |", head.join(" | "));
    let _ = writeln!(rep, "| ---: |{}", " ---: |".repeat(head.len()));
    for (x, c) in &cols {
        let _ = writeln!(rep, "| {x} | {} |", c.join(" | "));
    }
    let svg = cfg.out.join("bandwidth.svg");
    let title = "ib_write_bw (soft-rdma through the shim, 2 processes) vs TCP loopback";
    match plot::bandwidth_svg(
        &svg,
        title,
        &r.sweeps,
        r.get("memcpy").map(|m| ("memcpy (one thread)", m)),
    ) {
        Ok(()) => {
            let _ = writeln!(rep, "\npicture: {}", svg.display());
        }
        Err(e) => {
            r.add("svg", "the bandwidth picture", "-", Err(e));
        }
    }
    for (name, first) in tools.retried.borrow().iter() {
        let _ = writeln!(rep, "\nretried: {name} failed once, then passed: {first}");
    }
    let all_ok = r.rows.iter().all(|m| m.value.is_ok());
    if !all_ok {
        let _ = writeln!(
            rep,
            "\nsome runs FAILED (see the table; logs in {})",
            tools.logs.display()
        );
    }
    let md = cfg.out.join("results.md");
    let _ = std::fs::write(&md, &rep);
    Ok((rep, all_ok))
}
