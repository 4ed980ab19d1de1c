//! The report: the measures, the goals, the sweeps as a table and as a
//! picture; written to `results.md` as well as returned.

use super::goals::GOALS;
use super::procs::Tools;
use super::{plot, Config, Results};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Instant;

/// The report text, and whether every run succeeded (a failure to draw
/// the picture counts as a failed run).
pub(super) fn write(
    cfg: &Config,
    tools: &Tools,
    r: &mut Results,
    started: Instant,
) -> (String, bool) {
    let mut rep = String::new();
    measures(&mut rep, cfg, r, started);
    goals(&mut rep, r);
    sweeps(&mut rep, r);
    picture(&mut rep, cfg, r);
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
    (rep, all_ok)
}

/// The title and a row per measure (a failed one: FAILED, and why).
fn measures(rep: &mut String, cfg: &Config, r: &Results, started: Instant) {
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
}

fn goals(rep: &mut String, r: &Results) {
    let _ = writeln!(
        rep,
        "\n| goal | ratio | target | met? |\n| --- | ---: | --- | --- |"
    );
    for g in GOALS {
        let (ratio, target, met) = g.row(r);
        let _ = writeln!(rep, "| {} | {ratio} | {target} | {met} |", g.what);
    }
}

/// The picture's data as a table too: a row per size, a column per series.
fn sweeps(rep: &mut String, r: &Results) {
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
}

/// The bandwidth picture. Failing to draw it fails the run: it becomes a
/// failed measure, after the table was written (stderr and the verdict
/// show it).
fn picture(rep: &mut String, cfg: &Config, r: &mut Results) {
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
}
