//! `compare`: the soft device against the alternatives, side by side, in one
//! run (docs/BENCHMARKS.md, "Device (soft-rdma)").
//!
//!     cargo build --release -p verbs-shim -p soft-rdma -p softrdma-fsface
//!     cargo run --release -p benches --bin compare [-- --quick] [--only STEP,...] [--out DIR]
//!
//! Exit: 0 when every run worked (whatever the goals say), 1 when a run
//! failed, 2 when something to run is missing (one line says what to build
//! or install) or on a usage error. `--peer ROLE` is internal: the harness
//! re-runs itself as the other process of a baseline.

use benches::compare::{self, baseline, Config};
use std::path::PathBuf;

const USAGE: &str = "usage: compare [--quick] [--only STEP,...] [--out DIR]";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--peer") {
        if let Err(e) = baseline::peer_main(&args[1..]) {
            eprintln!("compare --peer: {e}");
            std::process::exit(1);
        }
        return;
    }
    let exe = std::env::current_exe().expect("the harness's own path");
    let exe_dir = exe.parent().expect("target/<profile>").to_path_buf();
    let mut cfg = Config {
        quick: false,
        only: Vec::new(),
        // target/<profile>/compare -> target/compare
        out: exe_dir.parent().unwrap_or(&exe_dir).join("compare"),
        exe_dir,
    };
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => cfg.quick = true,
            "--only" => match it.next() {
                Some(list) => {
                    for step in list.split(',') {
                        if !compare::STEPS.contains(&step) {
                            usage(&format!(
                                "no step {step:?}; the steps: {}",
                                compare::STEPS.join(",")
                            ));
                        }
                        cfg.only.push(step.to_string());
                    }
                }
                None => usage("--only needs a list of steps"),
            },
            "--out" => match it.next() {
                Some(d) => cfg.out = PathBuf::from(d),
                None => usage("--out needs a directory"),
            },
            "-h" | "--help" => {
                println!("{USAGE}");
                return;
            }
            other => usage(&format!("unknown argument {other:?}")),
        }
    }
    if let Err(e) = std::fs::create_dir_all(&cfg.out) {
        eprintln!("compare: {}: {e}", cfg.out.display());
        std::process::exit(1);
    }
    match compare::run(&cfg) {
        Ok((report, ok)) => {
            println!("{report}");
            std::process::exit(if ok { 0 } else { 1 });
        }
        Err(e) => {
            eprintln!("compare: {e}");
            std::process::exit(2);
        }
    }
}

fn usage(msg: &str) -> ! {
    eprintln!("compare: {msg}; {USAGE}");
    std::process::exit(2);
}
