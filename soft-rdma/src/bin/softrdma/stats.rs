//! `softrdma stats [PID]`: the counters every live device publishes (see
//! `soft_rdma::verbs::publish`), of all processes or of one.

use crate::{runtime, usage, CliResult};
use soft_rdma::verbs::publish;

const USAGE: &str = "usage: softrdma stats [PID]";

pub fn run(args: Vec<String>) -> CliResult<()> {
    let mut pid = None;
    for a in &args {
        match a.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}\nCounters of the live soft RDMA devices (all processes, or process PID),\nread from the files they publish in ${} (default {}).", publish::DIR_ENV, publish::DEFAULT_DIR);
                return Ok(());
            }
            _ if pid.is_none() => match a.parse::<u32>() {
                Ok(p) => pid = Some(p),
                Err(_) => return usage(format!("stats: {a:?} is not a process id ({USAGE})")),
            },
            _ => return usage(format!("stats: unexpected argument {a:?} ({USAGE})")),
        }
    }
    let Some(dir) = publish::stats_dir() else {
        return runtime(format!(
            "{} is empty: devices publish no counters",
            publish::DIR_ENV
        ));
    };
    let devs = publish::published(pid)
        .or_else(|e| runtime(format!("cannot read {}: {e}", dir.display())))?;
    if devs.is_empty() {
        return match pid {
            Some(p) => runtime(format!(
                "no live softrdma device in process {p} (none published in {})",
                dir.display()
            )),
            None => {
                println!(
                    "no live softrdma devices (none published in {})",
                    dir.display()
                );
                Ok(())
            }
        };
    }
    let mut out = String::new();
    for d in &devs {
        out.push_str(&d.to_string());
    }
    print!("{out}");
    Ok(())
}
