//! What a side prints, in perftest's layout (`crate::report` formats it):
//! the header and address table, a row per size, the closing lines, and
//! `--stats`' counters.

use super::{Role, Tally, Test};
use crate::args::{OdpMode, Verb};
use crate::report::{self, BwRow, Dest, HeaderInfo, JsonCtx, LatRow};
use std::io::Write;
use std::time::Duration;

/// One size's figures.
pub(super) enum Row {
    Bw(BwRow),
    Lat(LatRow),
}

/// The header block and both sides' QP ends; then the column heads, if
/// this side prints rows.
pub(super) fn header(t: &Test) {
    let (a, s) = (&t.p.a, t.s);
    let eff_tx = if a.test.lat { 1 } else { a.tx_depth };
    let rx =
        (a.test.verb == Verb::Send && (t.role == Role::Server || a.test.lat)).then_some(a.rx_depth);
    let h = HeaderInfo {
        args: a,
        mtu: t.p.mtu,
        tx_depth: eff_tx,
        rx_depth: rx,
        cq_mod: a.cq_mod,
        outstanding_reads: super::resources::OUTSTANDING_READS,
    };
    let local: Vec<Dest> = (0..a.qps as usize)
        .map(|q| s.dest(q, a.test.verb))
        .collect();
    let rem: Vec<Dest> = t
        .remote
        .iter()
        .map(|r| {
            let (rkey, vaddr) = if a.test.verb == Verb::Read {
                (r.src_rkey, r.src_addr)
            } else {
                (r.dst_rkey, r.dst_addr)
            };
            Dest {
                qpn: r.qpn,
                psn: r.psn,
                rkey,
                vaddr,
                gid: r.gid,
            }
        })
        .collect();
    print!(
        "{}{}",
        report::header(&h),
        report::addresses(a, &local, &rem)
    );
    if t.measures {
        println!(
            "{}",
            if a.test.lat {
                report::LAT_HEAD
            } else {
                report::BW_HEAD
            }
        );
    }
    let _ = std::io::stdout().flush();
}

/// A size's row (or JSON object).
pub(super) fn row(t: &Test, tally: &Tally, row: &Row) {
    let a = &t.p.a;
    let odp = (a.odp != OdpMode::Pinned).then(|| tally.odp(t.s, t.role));
    let jc = JsonCtx {
        args: a,
        mtu: t.p.mtu,
        odp,
        verified: a.verify.then_some(tally.failures.is_empty()),
    };
    match row {
        Row::Bw(r) => println!(
            "{}",
            if a.json {
                report::bw_json(&jc, r)
            } else {
                report::bw_row(r)
            }
        ),
        Row::Lat(r) => println!(
            "{}",
            if a.json {
                report::lat_json(&jc, r)
            } else {
                report::lat_row(r)
            }
        ),
    }
    let _ = std::io::stdout().flush();
}

/// After the last size: the rounds of `--duration`, the closing dashes,
/// the ODP counters, the buffers' page size, verification's verdict.
pub(super) fn summary(t: &Test, tally: &Tally, rounds: u64, took: Duration) {
    let a = &t.p.a;
    if let Some(d) = a.duration {
        println!(
            "Rounds: {rounds} in {:.1} s (--duration {d})",
            took.as_secs_f64()
        );
    }
    if t.measures {
        println!("{}", report::dashes());
    }
    if a.odp != OdpMode::Pinned {
        let (fa, inv) = tally.odp(t.s, t.role);
        let kind = if a.odp == OdpMode::Implicit {
            "implicit"
        } else {
            "explicit"
        };
        println!("ODP: {kind} (faults={fa}, invalidations={inv})");
    }
    if a.thp {
        println!("Buffers: transparent huge pages advised (MADV_HUGEPAGE)");
    }
    if a.verify && tally.failures.is_empty() {
        println!(
            "Verify: OK (every destination byte{} checked)",
            if a.test.verb == Verb::Atomic {
                " and the final counters"
            } else {
                ""
            }
        );
    }
}

/// `--stats`: this side's device counters (stderr with `--json`).
pub(super) fn stats(t: &Test) {
    let who = match t.role {
        Role::Client => "client",
        Role::Server => "server",
    };
    // One write per table: the two sides of an embedded run do not interleave.
    let text = format!(
        "Counters of the {who}'s device ({}):\n{}",
        t.s.dev.local_addr(),
        t.s.dev.stats()
    );
    if t.p.a.json {
        eprint!("{text}");
    } else {
        print!("{text}");
        let _ = std::io::stdout().flush();
    }
}
