//! UCX side by side (issue 18): `ucx_perftest tag_bw` 64 KiB and `tag_lat`
//! 8 B over UCX's `rc_verbs` on the soft device (through `softrdma run`)
//! against what a UCX user runs without it, in the same places: UCX's `tcp`
//! between two network-namespace hosts (veth, MTU 1500), UCX's shared
//! memory (`posix,cma`) on one host. Ours and theirs take turns in each
//! place. Rows only where `ucx_perftest` (Debian `ucx-utils`) is installed;
//! the two-host rows only where namespaces can be made (root).
//!
//! UCX's figures: the `-f` line's typical latency (one way, µs) and overall
//! bandwidth (MB/s, UCX's MB is 2^20 bytes).

use super::procs::{self, Tools};
use super::{median, Plan, Results, BW_RUNS};
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use test_support::net::{listening, listening_in, two_hosts, TwoHosts};

const PERFTEST: &str = "ucx_perftest";
/// Our transports: RC carries the data; UD only wires RC endpoints up (UCX
/// connects RC through a transport that reaches an interface).
const OURS: &str = "rc_verbs,ud_verbs:aux";
const FACE: &str = "libsoftrdma_fsface.so";

/// One side-by-side party: a UCX transport set, on our device or not.
struct Party {
    /// Short name for keys and logs.
    tag: &'static str,
    /// What the table calls it.
    what: &'static str,
    tls: &'static str,
    /// Through `softrdma run` on our device (else UCX alone, as a user runs it).
    device: bool,
}

const RC: Party = Party {
    tag: "rc",
    what: "UCX rc_verbs on the soft device (softrdma run)",
    tls: OURS,
    device: true,
};
const SM: Party = Party {
    tag: "sm",
    what: "UCX posix,cma (shared memory)",
    tls: "posix,cma",
    device: false,
};
const TCP: Party = Party {
    tag: "tcp",
    what: "UCX tcp",
    tls: "tcp",
    device: false,
};

/// Both sides of a pair: on one host, or server on the first namespace
/// host and client on the second.
fn hosts_of(h: Option<&TwoHosts>) -> [(Option<&str>, Option<&str>); 2] {
    match h {
        None => [(None, None); 2],
        Some(h) => [0, 1].map(|k| (Some(h.ns[k].as_str()), Some(h.addr[k].as_str()))),
    }
}

/// `ucx_perftest` tag_bw and tag_lat: ours against UCX's shared memory on
/// one host, against UCX's tcp between two namespace hosts.
pub(super) fn side_by_side(p: &Plan, tools: &Tools, r: &mut Results) {
    if !procs::in_path(PERFTEST) {
        eprintln!("compare: no {PERFTEST} (Debian ucx-utils): no UCX rows");
        return;
    }
    place(p, tools, r, None, [&RC, &SM], "one host, 2 processes");
    let Some(hosts) = two_hosts("cmpucx", [10, 79, 7]) else {
        eprintln!("compare: no network namespaces: no two-host UCX rows");
        return;
    };
    place(
        p,
        tools,
        r,
        Some(&hosts),
        [&RC, &TCP],
        "2 network-namespace hosts, veth MTU 1500",
    );
}

/// The rows of one place: tag_bw (median of [`BW_RUNS`], parties taking
/// turns), then tag_lat (one run each).
fn place(
    p: &Plan,
    tools: &Tools,
    r: &mut Results,
    hosts: Option<&TwoHosts>,
    parties: [&Party; 2],
    where_: &str,
) {
    let at = if hosts.is_some() { "2h" } else { "1h" };
    let n = p.bw_iters.to_string();
    let bw_args = ["-t", "tag_bw", "-s", "65536", "-n", &n];
    let mut runs = [Vec::new(), Vec::new()];
    for k in 0..BW_RUNS {
        for (i, party) in parties.iter().enumerate() {
            let name = format!("ucx_bw_{}_{at}.{k}", party.tag);
            let f = pair(tools, &name, party, hosts, &bw_args, p.bw_iters);
            runs[i].push(f.and_then(|f| positive(f.bw)));
        }
    }
    for (party, runs) in parties.iter().zip(runs) {
        let (v, spread) = median(Ok(runs));
        r.add(
            key("bw", party, at),
            format!(
                "{PERFTEST} tag_bw -s 65536, {} ({where_}; median of {BW_RUNS})",
                party.what
            ),
            "MiB/s",
            v,
        );
        r.note(spread);
    }
    let n = p.lat_iters.to_string();
    let lat_args = ["-t", "tag_lat", "-s", "8", "-n", &n];
    for party in parties {
        let name = format!("ucx_lat_{}_{at}", party.tag);
        let f = pair(tools, &name, party, hosts, &lat_args, p.lat_iters);
        r.add(
            key("lat", party, at),
            format!(
                "{PERFTEST} tag_lat -s 8, {} ({where_}): typical, one way",
                party.what
            ),
            "usec",
            f.and_then(|f| positive(f.lat)),
        );
    }
}

/// The table's key of a row.
fn key(test: &str, party: &Party, at: &str) -> &'static str {
    match (test, party.tag, at) {
        ("bw", "rc", "1h") => "ucx_bw_rc_1h",
        ("bw", "sm", "1h") => "ucx_bw_sm_1h",
        ("lat", "rc", "1h") => "ucx_lat_rc_1h",
        ("lat", "sm", "1h") => "ucx_lat_sm_1h",
        ("bw", "rc", "2h") => "ucx_bw_rc_2h",
        ("bw", "tcp", "2h") => "ucx_bw_tcp_2h",
        ("lat", "rc", "2h") => "ucx_lat_rc_2h",
        ("lat", "tcp", "2h") => "ucx_lat_tcp_2h",
        _ => "ucx",
    }
}

fn positive(v: f64) -> Result<f64, String> {
    if v > 0.0 {
        Ok(v)
    } else {
        Err(format!("a result of {v}"))
    }
}

struct Figures {
    /// Typical latency, µs.
    lat: f64,
    /// Overall bandwidth, MiB/s.
    bw: f64,
}

/// A `ucx_perftest` pair (retried once, as every harness run): the server,
/// then the client once the server's TCP port listens; both must exit 0.
fn pair(
    tools: &Tools,
    name: &str,
    party: &Party,
    hosts: Option<&TwoHosts>,
    args: &[&str],
    iters: u32,
) -> Result<Figures, String> {
    tools
        .twice(name, || pair_once(tools, name, party, hosts, args))
        .and_then(|out| figures(&out, iters))
}

fn pair_once(
    tools: &Tools,
    name: &str,
    party: &Party,
    hosts: Option<&TwoHosts>,
    args: &[&str],
) -> Result<String, String> {
    let face = tools.softrdma.with_file_name(FACE);
    if party.device && !face.is_file() {
        let dir = face.parent().and_then(|d| d.file_name());
        let flag = if dir.is_some_and(|n| n == "release") {
            " --release"
        } else {
            ""
        };
        return Err(format!(
            "missing {} (UCX finds the device through it): build it with `cargo build{flag} -p softrdma-fsface`",
            face.display()
        ));
    }
    let port = procs::free_port()?;
    let p = port.to_string();
    let sides = hosts_of(hosts);
    let spawn = |role: &str, k: usize, extra: &[&str]| -> Result<(PathBuf, Child), String> {
        let (ns, addr) = sides[k];
        let (path, out, err) = tools.log(&format!("{name}.{role}"))?;
        let mut argv: Vec<OsString> = vec![];
        if let Some(ns) = ns {
            argv.extend(["ip", "netns", "exec", ns].map(OsString::from));
        }
        if party.device {
            argv.extend([tools.softrdma.as_os_str().into(), "run".into(), "--".into()]);
        }
        argv.push(PERFTEST.into());
        argv.extend(["-p", &p].iter().chain(extra).map(OsString::from));
        let mut c = Command::new(&argv[0]);
        c.args(&argv[1..])
            .env_remove("LD_PRELOAD")
            .env_remove("SOFTRDMA_SHM")
            .env_remove("SOFTRDMA_ADDR")
            .env_remove("UCX_NET_DEVICES")
            .env("UCX_TLS", party.tls)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        if party.device {
            c.env("UCX_NET_DEVICES", "softrdma0:1");
            if let Some(a) = addr {
                c.env("SOFTRDMA_ADDR", a);
            }
        } else if let (Some(h), "tcp") = (hosts, party.tls) {
            // UCX tcp on the veth only (not loopback).
            c.env("UCX_NET_DEVICES", &h.veth[k]);
        }
        let child = c.spawn().map_err(|e| format!("{PERFTEST}: {e}"))?;
        Ok((path, child))
    };
    let (slog, mut server) = spawn("server", 0, &[])?;
    let t = Instant::now();
    let up = || match sides[0].0 {
        Some(ns) => listening_in(ns, port),
        None => listening(port),
    };
    while !up() {
        if let Ok(Some(st)) = server.try_wait() {
            return Err(format!(
                "{PERFTEST} server exited ({st}) before listening: {}",
                procs::tail(&slog)
            ));
        }
        if t.elapsed() > Duration::from_secs(20) {
            let _ = server.kill();
            let _ = server.wait();
            return Err(format!("{PERFTEST} server never listened on port {port}"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let peer = sides[0].1.unwrap_or("127.0.0.1");
    let mut cargs = vec![peer, "-f", "-w", "100"];
    cargs.extend_from_slice(args);
    let (clog, client) = match spawn("client", 1, &cargs) {
        Ok(c) => c,
        Err(e) => {
            let _ = server.kill();
            let _ = server.wait();
            return Err(e);
        }
    };
    let cst = procs::wait(client, tools.timeout);
    let limit = if cst.is_ok() { 30 } else { 0 };
    let sst = procs::wait(server, Duration::from_secs(limit));
    match (cst, sst) {
        (Ok(c), Ok(s)) if c.success() && s.success() => {
            Ok(std::fs::read_to_string(&clog).unwrap_or_default())
        }
        (c, s) => Err(format!(
            "{PERFTEST} UCX_TLS={} {}: client {}, server {}; client said: {} | server said: {}",
            party.tls,
            args.join(" "),
            procs::status(&c),
            procs::status(&s),
            procs::tail(&clog),
            procs::tail(&slog)
        )),
    }
}

/// The `-f` result line: iterations, latency typical/average/overall (µs),
/// bandwidth average/overall (MB/s), message rate average/overall.
fn figures(out: &str, iters: u32) -> Result<Figures, String> {
    let f: Vec<f64> = out
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .split_whitespace()
        .map(|w| w.parse().unwrap_or(f64::NAN))
        .collect();
    match f.as_slice() {
        // Rounded to 0.00: an 8 B test's bandwidth, say; the caller wants
        // its own figure positive.
        [n, lat, _, _, _, bw, _, _]
            if *n == f64::from(iters) && f.iter().all(|x| x.is_finite() && *x >= 0.0) =>
        {
            Ok(Figures { lat: *lat, bw: *bw })
        }
        _ => Err(format!("no result line of {iters} iterations: {f:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_final_line() {
        let out = "+----+\n| ... |\n  1000     1.733     1.856     1.856   33677.01   33677.01   538832   538832\n";
        let f = figures(out, 1000).unwrap();
        assert_eq!((f.lat, f.bw), (1.733, 33677.01));
        assert!(figures(out, 500).is_err(), "another iteration count");
        assert!(figures("  1000  nan  1 1 1 1 1 1\n", 1000).is_err());
        let lat = figures("  500  0.741  1.2  1.3  0.02  0.00  2095  187\n", 500).unwrap();
        assert_eq!(
            (lat.lat, lat.bw),
            (0.741, 0.0),
            "an 8 B test's rounded bandwidth"
        );
        assert!(figures("", 1000).is_err());
    }
}
