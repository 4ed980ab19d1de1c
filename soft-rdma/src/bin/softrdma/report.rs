//! perftest's output: the header block (`ctx_print_test_info`), the address
//! lines, and the result rows (`print_report_bw` / `print_report_lat`) with
//! perftest's column widths; or one JSON object per row.

use crate::args::{conn_name, AtomicKind, PerfArgs, Verb};
use soft_rdma::verbs::{Gid, Mtu};

pub fn dashes() -> String {
    "-".repeat(87)
}

/// One QP's end as exchanged (perftest's `pingpong_dest`).
#[derive(Debug, Clone, Copy)]
pub struct Dest {
    pub qpn: u32,
    pub psn: u32,
    pub rkey: u32,
    pub vaddr: u64,
    pub gid: Gid,
}

pub fn title(a: &PerfArgs) -> String {
    let verb = match a.test.verb {
        Verb::Send => "Send".to_string(),
        Verb::Write => "RDMA_Write".to_string(),
        Verb::Read => "RDMA_Read".to_string(),
        Verb::Atomic => format!(
            "Atomic {}",
            if a.atomic == AtomicKind::CmpAndSwap {
                "CMP_AND_SWAP"
            } else {
                "FETCH_AND_ADD"
            }
        ),
    };
    format!("{verb} {} Test", if a.test.lat { "Latency" } else { "BW" })
}

pub struct HeaderInfo<'a> {
    pub args: &'a PerfArgs,
    pub mtu: Mtu,
    pub tx_depth: u32,
    pub rx_depth: Option<u32>,
    pub cq_mod: u32,
    pub outstanding_reads: u8,
}

pub fn header(h: &HeaderInfo<'_>) -> String {
    let a = h.args;
    let mut o = String::new();
    let mut l = |s: &str| {
        o.push_str(s);
        o.push('\n');
    };
    l(&dashes());
    l(&format!("                    {}", title(a)));
    l(" Dual-port       : OFF\t\tDevice         : softrdma0");
    l(&format!(
        " Number of qps   : {}\t\tTransport type : IB",
        a.qps
    ));
    l(&format!(
        " Connection type : {}\t\tUsing SRQ      : OFF",
        conn_name(a.conn)
    ));
    if let Some(r) = h.rx_depth {
        l(&format!(" RX depth        : {r}"));
    }
    l(&format!(" TX depth        : {}", h.tx_depth));
    if !a.test.lat {
        l(&format!(" CQ Moderation   : {}", h.cq_mod));
    }
    l(&format!(" Mtu             : {}[B]", h.mtu.bytes()));
    l(" Link type       : Ethernet");
    l(" GID index       : 1");
    if a.test.verb == Verb::Read || a.test.verb == Verb::Atomic {
        l(&format!(" Outstand reads  : {}", h.outstanding_reads));
    }
    l(" Max inline data : 0[B]");
    l(" rdma_cm QPs\t : OFF");
    l(" Data ex. method : Ethernet");
    l(&dashes());
    o
}

fn gid_line(g: Gid) -> String {
    let v: Vec<String> = g.0.iter().map(|b| format!("{b:02}")).collect();
    format!(" GID: {}", v.join(":"))
}

fn addr_line(side: &str, d: &Dest, rdma: bool) -> String {
    let mut s = format!(
        " {side} address: LID 0000 QPN {:#06x} PSN {:#06x}",
        d.qpn, d.psn
    );
    if rdma {
        s.push_str(&format!(" RKey {:#08x} VAddr {:#016x}", d.rkey, d.vaddr));
    }
    s
}

/// Address lines for all QPs (local first, then remote), closing dashes.
pub fn addresses(a: &PerfArgs, local: &[Dest], remote: &[Dest]) -> String {
    let rdma = a.test.verb != Verb::Send;
    let mut o = String::new();
    for d in local {
        o.push_str(&addr_line("local", d, rdma));
        o.push('\n');
        o.push_str(&gid_line(d.gid));
        o.push('\n');
    }
    for d in remote {
        o.push_str(&addr_line("remote", d, rdma));
        o.push('\n');
        o.push_str(&gid_line(d.gid));
        o.push('\n');
    }
    o.push_str(&dashes());
    o.push('\n');
    o
}

pub const BW_HEAD: &str =
    " #bytes     #iterations    BW peak[MB/sec]    BW average[MB/sec]   MsgRate[Mpps]";
pub const LAT_HEAD: &str = " #bytes #iterations    t_min[usec]    t_max[usec]  t_typical[usec]    t_avg[usec]    t_stdev[usec]   99% percentile[usec]   99.9% percentile[usec] ";

#[derive(Debug, Clone, Copy)]
pub struct BwRow {
    pub bytes: u64,
    pub iters: u64,
    pub peak_mbs: f64,
    pub avg_mbs: f64,
    pub mpps: f64,
}

#[derive(Debug, Clone, Copy)]
pub struct LatRow {
    pub bytes: u64,
    pub iters: u64,
    pub min: f64,
    pub max: f64,
    pub typical: f64,
    pub avg: f64,
    pub stdev: f64,
    pub p99: f64,
    pub p999: f64,
}

pub fn bw_row(r: &BwRow) -> String {
    format!(
        " {:<7}    {:<10}       {:<7.2}            {:<7.2}\t\t   {:<7.6}",
        r.bytes, r.iters, r.peak_mbs, r.avg_mbs, r.mpps
    )
}

pub fn lat_row(r: &LatRow) -> String {
    format!(
        " {:<7} {}          {:<7.2}        {:<7.2}      {:<7.2}            {:<7.2}       {:<7.2}         {:<7.2}                 {:<7.2}",
        r.bytes, r.iters, r.min, r.max, r.typical, r.avg, r.stdev, r.p99, r.p999
    )
}

/// Latency statistics of samples in microseconds (perftest: typical = median).
pub fn lat_stats(bytes: u64, mut us: Vec<f64>) -> LatRow {
    us.sort_by(|a, b| a.total_cmp(b));
    let n = us.len().max(1);
    let pick = |q: f64| {
        us.get(
            ((n as f64 * q).ceil() as usize)
                .saturating_sub(1)
                .min(n - 1),
        )
        .copied()
        .unwrap_or(0.0)
    };
    let avg = us.iter().sum::<f64>() / n as f64;
    let var = us.iter().map(|x| (x - avg) * (x - avg)).sum::<f64>() / n as f64;
    LatRow {
        bytes,
        iters: us.len() as u64,
        min: us.first().copied().unwrap_or(0.0),
        max: us.last().copied().unwrap_or(0.0),
        typical: us.get(n / 2).copied().unwrap_or(0.0),
        avg,
        stdev: var.sqrt(),
        p99: pick(0.99),
        p999: pick(0.999),
    }
}

pub struct JsonCtx<'a> {
    pub args: &'a PerfArgs,
    pub mtu: Mtu,
    pub odp: Option<(u64, u64)>,
    pub verified: Option<bool>,
}

/// What every JSON row says of the run.
#[derive(serde::Serialize)]
struct JsonRun {
    test: String,
    connection: &'static str,
    qps: u32,
    mtu: usize,
    memory: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    atomic_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    odp_faults: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    odp_invalidations: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    verified: Option<bool>,
}

fn json_run(c: &JsonCtx<'_>) -> JsonRun {
    let a = c.args;
    JsonRun {
        test: a.test.name(),
        connection: conn_name(a.conn),
        qps: a.qps,
        mtu: c.mtu.bytes(),
        memory: match a.odp {
            crate::args::OdpMode::Pinned => "pinned",
            crate::args::OdpMode::Explicit => "odp",
            crate::args::OdpMode::Implicit => "implicit_odp",
        },
        atomic_type: (a.test.verb == Verb::Atomic).then(|| a.atomic.name()),
        odp_faults: c.odp.map(|o| o.0),
        odp_invalidations: c.odp.map(|o| o.1),
        verified: c.verified,
    }
}

/// A figure to the microsecond / byte per second the table shows (6
/// decimals); serde_json writes a non-finite one as `null`.
fn num(x: f64) -> f64 {
    if x.is_finite() {
        (x * 1e6).round() / 1e6
    } else {
        x
    }
}

#[derive(serde::Serialize)]
struct BwJson {
    #[serde(flatten)]
    run: JsonRun,
    bytes: u64,
    iterations: u64,
    bw_peak_mb_s: f64,
    bw_avg_mb_s: f64,
    msg_rate_mpps: f64,
}

#[derive(serde::Serialize)]
struct LatJson {
    #[serde(flatten)]
    run: JsonRun,
    bytes: u64,
    iterations: u64,
    t_min_us: f64,
    t_max_us: f64,
    t_typical_us: f64,
    t_avg_us: f64,
    t_stdev_us: f64,
    p99_us: f64,
    p99_9_us: f64,
}

fn to_json(row: &impl serde::Serialize) -> String {
    serde_json::to_string(row).expect("a row of numbers and strings serialises")
}

pub fn bw_json(c: &JsonCtx<'_>, r: &BwRow) -> String {
    to_json(&BwJson {
        run: json_run(c),
        bytes: r.bytes,
        iterations: r.iters,
        bw_peak_mb_s: num(r.peak_mbs),
        bw_avg_mb_s: num(r.avg_mbs),
        msg_rate_mpps: num(r.mpps),
    })
}

pub fn lat_json(c: &JsonCtx<'_>, r: &LatRow) -> String {
    to_json(&LatJson {
        run: json_run(c),
        bytes: r.bytes,
        iterations: r.iters,
        t_min_us: num(r.min),
        t_max_us: num(r.max),
        t_typical_us: num(r.typical),
        t_avg_us: num(r.avg),
        t_stdev_us: num(r.stdev),
        p99_us: num(r.p99),
        p99_9_us: num(r.p999),
    })
}
