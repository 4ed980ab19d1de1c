//! The side-by-side comparison (issue 5): the soft device (unmodified
//! perftest through the shim between two processes, and `softrdma perf`)
//! against baselines built here (TCP/UDP loopback between two processes,
//! memcpy), and UCX on the device against UCX's own transports (issue 18),
//! in one run. Prints the measures, the goals with their ratios and
//! pass/fail, a sweep table, and draws the bandwidth picture.
//!
//! A missed goal never fails the run; a measure whose run failed does (exit
//! 1, after everything else ran and printed).

pub mod baseline;
pub mod footprint;
mod goals;
mod hosts;
pub mod plot;
pub mod procs;
mod report;
mod runs;
mod ucx;

use procs::Tools;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const MIB: f64 = (1u64 << 20) as f64;

pub struct Config {
    pub quick: bool,
    /// Run only these steps ([`STEPS`]); all when empty.
    pub only: Vec<String>,
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
    /// rdma_cm connections set up at once (cmtime).
    cm_conns: u32,
    /// The README's main job's `-n`.
    main_iters: u32,
    /// `-n` of the runs under loss, and their rounds.
    loss_iters: u32,
    loss_rounds: usize,
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
    cm_conns: 1000,
    main_iters: 5000,
    loss_iters: 20_000,
    loss_rounds: 5,
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
    cm_conns: 100,
    main_iters: 200,
    loss_iters: 500,
    loss_rounds: 1,
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

/// The steps, in the order they run (`compare --only STEP,...`): the
/// baselines, perftest through the shim (ODP vs pinned, the UDP path,
/// size sweeps, message rate/QPs/latency), `softrdma perf` (the embedded
/// default, fresh vs steady memory, under loss), the device's memory, rdma_cm set-up,
/// UCX side by side, between two network-namespace hosts.
pub const STEPS: &[&str] = &[
    "baselines",
    "odp",
    "udp",
    "sweeps",
    "rate",
    "default",
    "fresh",
    "loss",
    "memory",
    "cm",
    "ucx",
    "hosts",
];

/// Runs the steps; returns the report text and whether every run succeeded.
pub fn run(cfg: &Config) -> Result<(String, bool), String> {
    let p = if cfg.quick { &QUICK } else { &FULL };
    let timeout = Duration::from_secs(if cfg.quick { 60 } else { 300 });
    // Fails early, in one line, if the shim, softrdma or perftest is missing.
    let tools = Tools::find(&cfg.exe_dir, &cfg.out, timeout)?;
    let started = Instant::now();
    let mut r = Results::default();
    let want = |step: &str| cfg.only.is_empty() || cfg.only.iter().any(|s| s == step);
    for step in STEPS {
        if !want(step) {
            continue;
        }
        match *step {
            "baselines" => runs::baselines(p, &mut r),
            "odp" => runs::perftest_odp_vs_pinned(p, &tools, &mut r),
            "udp" => runs::perftest_udp_path(p, &tools, &mut r),
            "sweeps" => runs::perftest_sweeps(p, &tools, &mut r),
            "rate" => runs::perftest_rate_qps_lat(p, &tools, &mut r),
            "default" => runs::softrdma_default(p, &tools, cfg.quick, &mut r),
            "fresh" => runs::fresh_vs_steady(p, &tools, &mut r),
            "loss" => runs::under_loss(p, &tools, &mut r),
            "memory" => runs::device_memory(p, &mut r),
            "cm" => runs::connection_rate(p, &tools, &mut r),
            "ucx" => ucx::side_by_side(p, &tools, &mut r),
            "hosts" => hosts::between_hosts(p, &tools, &cfg.out, &mut r),
            _ => unreachable!("STEPS names every step"),
        }
    }
    Ok(report::write(cfg, &tools, &mut r, started))
}
