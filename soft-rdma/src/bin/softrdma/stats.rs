//! `softrdma stats [--mr] [PID]`: the counters every live device publishes
//! (see `soft_rdma::verbs::publish`), of all processes or of one; with
//! `--mr`, its ODP MRs' counters in the shape of `rdma statistic mr show`.
//! What the directory held besides is summed up on stderr in one line.

use crate::{runtime, CliResult};
use soft_rdma::verbs::{publish, MrStats};

/// Print the counters of the live devices (of process `pid`), or with
/// `mr` their ODP MRs'.
pub fn run(pid: Option<u32>, mr: bool) -> CliResult<()> {
    let Some(dir) = publish::stats_dir() else {
        return runtime(format!(
            "{} is empty: devices publish no counters",
            publish::DIR_ENV
        ));
    };
    let listing = publish::list(&dir, pid)
        .or_else(|e| runtime(format!("cannot read {}: {e}", dir.display())))?;
    not_shown(&listing);
    let devs = listing.devices;
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
        if mr {
            mr_lines(&mut out, d);
        } else {
            out.push_str(&d.to_string());
        }
    }
    print!("{out}");
    Ok(())
}

/// A device's ODP MRs as `rdma statistic mr show` prints mlx5's (`dev NAME
/// mrn N` and the counters as name/value pairs), the process last (a device
/// name is per process here).
fn mr_lines(out: &mut String, d: &publish::PublishedDevice) {
    use std::fmt::Write;
    for (mrn, s) in &d.mrs {
        let _ = write!(out, "dev {} mrn {mrn}", d.device);
        for (n, v) in MrStats::NAMES.iter().zip(s.values()) {
            let _ = write!(out, " {n} {v}");
        }
        let _ = writeln!(out, " pid {}", d.pid);
    }
    let hidden = d.mr_total.saturating_sub(d.mrs.len() as u64);
    if hidden > 0 {
        eprintln!(
            "softrdma stats: pid {} {}: {hidden} more ODP MRs not shown (the first {} are published)",
            d.pid,
            d.device,
            publish::MR_SLOTS
        );
    }
}

/// One line on stderr for the files not listed (but not for the stale files
/// removed: cleaning up after dead processes is routine).
fn not_shown(l: &publish::Listing) {
    let parts: Vec<String> = [
        (l.other_namespace, "of another PID namespace"),
        (l.other_version, "of another format version"),
        (l.stale_kept, "stale of other users"),
        (l.refused, "refused"),
    ]
    .iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, what)| format!("{n} {what}"))
    .collect();
    if !parts.is_empty() {
        let hint = if l.refused > 0 {
            " (SOFTRDMA_LOG=warn names the refused)"
        } else {
            ""
        };
        eprintln!("softrdma stats: not shown: {}{hint}", parts.join(", "));
    }
    if l.truncated {
        eprintln!(
            "softrdma stats: stopped after {} files (the rest not read)",
            publish::MAX_FILES
        );
    }
}
