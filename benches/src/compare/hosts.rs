//! Between hosts (issue 21, goal 1): two network-namespace hosts joined by
//! a veth pair, at link MTU 1500 and 9000. `softrdma perf` WRITE/READ/SEND
//! 64 KiB and write_lat 2 B (one device per namespace, `--server`/
//! `--client`) against what a user would take instead on the same path:
//! UCX's `tcp` transport (`ucx_perftest tag_bw` 64 KiB, `tag_lat` 8 B) and
//! iperf3 TCP. Each bandwidth figure is the median of `BW_RUNS` runs, the
//! tools taking turns. Then the picture "bandwidth by message size between
//! hosts" at MTU 9000 (`bandwidth_hosts.svg`).

use super::procs::Tools;
use super::{median, plot, Plan, Results, BW_RUNS};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use test_support::net::{ip, two_hosts, wait_listening, TwoHosts};

/// A program run in host `k`'s namespace with `env`.
fn in_ns(h: &TwoHosts, k: usize, env: &[(&str, &str)], prog: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &h.ns[k], "env"]);
    for (n, v) in env {
        c.arg(format!("{n}={v}"));
    }
    c.arg(prog);
    c
}

/// The server (host 0) is waited for at most `limit`, then killed.
fn finish(mut server: Child, limit: Duration) -> Result<(), String> {
    let t = Instant::now();
    loop {
        match server.try_wait() {
            Ok(Some(s)) if s.success() => return Ok(()),
            Ok(Some(s)) => return Err(format!("server: {s}")),
            Ok(None) if t.elapsed() > limit => {
                let _ = server.kill();
                let _ = server.wait();
                return Err("server did not finish (killed)".into());
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// A client/server pair: the server on host 0 (listening on TCP `port`
/// before the client starts), the client on host 1; the client's output.
fn pair(
    h: &TwoHosts,
    (server, client): (Command, Command),
    port: u16,
    log: &Path,
    limit: Duration,
) -> Result<String, String> {
    let mut server = server;
    let s = server
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    if !wait_listening(Some(&h.ns[0]), port, Duration::from_secs(20)) {
        let _ = finish(s, Duration::ZERO);
        return Err(format!("no server on port {port}"));
    }
    let mut client = client;
    let o: Output = client.output().map_err(|e| e.to_string())?;
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let _ = std::fs::write(log, &out);
    if !o.status.success() {
        // The server waits for a client that is gone: not for `limit`.
        let _ = finish(s, Duration::ZERO);
        return Err(format!("client {}: see {}", o.status, log.display()));
    }
    let srv = finish(s, limit);
    srv.map(|()| out)
}

/// The soft device: `softrdma perf TEST ARGS --odp`, server and client.
fn softrdma(
    h: &TwoHosts,
    tools: &Tools,
    name: &str,
    test: &str,
    args: &[&str],
) -> Result<String, String> {
    let port = 18600;
    let bin = tools.softrdma.to_string_lossy().to_string();
    let side = |k: usize| {
        let mut c = in_ns(h, k, &[("SOFTRDMA_ADDR", &h.addr[k])], &bin);
        c.args(["perf", test, "--odp", "-p", "18600"]).args(args);
        c
    };
    let mut s = side(0);
    s.arg("--server");
    let mut c = side(1);
    c.args(["--client", &h.addr[0]]);
    let log = tools.logs.join(format!("{name}.txt"));
    pair(h, (s, c), port, &log, tools.timeout)
}

/// UCX's tcp transport over the veth: `ucx_perftest -t TEST -s SIZE -n N`.
fn ucx(
    h: &TwoHosts,
    tools: &Tools,
    name: &str,
    test: &str,
    size: usize,
    n: u32,
) -> Result<String, String> {
    let side = |k: usize| {
        let mut c = in_ns(
            h,
            k,
            &[("UCX_TLS", "tcp"), ("UCX_NET_DEVICES", &h.veth[k])],
            "ucx_perftest",
        );
        c.args(["-p", "18601"]);
        c
    };
    let s = side(0);
    let mut c = side(1);
    c.arg(&h.addr[0])
        .args(["-t", test, "-s", &size.to_string(), "-n", &n.to_string()]);
    let log = tools.logs.join(format!("{name}.txt"));
    pair(h, (s, c), 18601, &log, tools.timeout)
}

/// The `Final:` line of ucx_perftest: its numbers.
fn ucx_final(out: &str) -> Result<Vec<f64>, String> {
    out.lines()
        .find(|l| l.trim_start().starts_with("Final:"))
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect()
        })
        .ok_or_else(|| "no Final: line".to_string())
}

/// ucx_perftest tag_bw: the overall bandwidth (MB/s, which UCX means as MiB/s).
fn ucx_bw(out: Result<String, String>) -> Result<f64, String> {
    let v = ucx_final(&out?)?;
    v.get(5).copied().ok_or_else(|| "short Final: line".into())
}

/// The largest write iperf3 takes (`-l`; it refuses more).
const IPERF3_MAX_WRITE: usize = 1 << 20;

/// iperf3 TCP host 1 → host 0, `-l LEN` writes (at most
/// [`IPERF3_MAX_WRITE`]) for 3 s: received MiB/s.
fn iperf3(h: &TwoHosts, tools: &Tools, name: &str, len: usize) -> Result<f64, String> {
    let len = len.min(IPERF3_MAX_WRITE);
    if !super::procs::in_path("iperf3") {
        return Err("no iperf3 (Debian iperf3; scripts/test.sh installs it)".into());
    }
    let mut s = in_ns(h, 0, &[], "iperf3");
    s.args(["-s", "-1", "-p", "18602"]);
    let mut c = in_ns(h, 1, &[], "iperf3");
    c.args(["-c", &h.addr[0], "-p", "18602", "-t", "3", "-f", "M", "-l"])
        .arg(len.to_string());
    let log = tools.logs.join(format!("{name}.txt"));
    let out = pair(h, (s, c), 18602, &log, tools.timeout)?;
    out.lines()
        .find(|l| l.contains("receiver"))
        .and_then(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let at = w.iter().position(|x| *x == "MBytes/sec")?;
            w.get(at - 1)?.parse().ok()
        })
        .ok_or_else(|| format!("no receiver line (log: {})", log.display()))
}

fn set_mtu(h: &TwoHosts, mtu: &str) -> Result<(), String> {
    for k in 0..2 {
        ip(&["-n", &h.ns[k], "link", "set", &h.veth[k], "mtu", mtu])?;
    }
    Ok(())
}

/// The keys of one link MTU's rows.
struct Keys {
    mtu: &'static str,
    ours: [(&'static str, &'static str); 3],
    ucx_bw: &'static str,
    tcp: &'static str,
    lat: &'static str,
    ucx_lat: &'static str,
}

const KEYS: [Keys; 2] = [
    Keys {
        mtu: "1500",
        ours: [
            ("hosts_wbw_1500", "write_bw"),
            ("hosts_rbw_1500", "read_bw"),
            ("hosts_sbw_1500", "send_bw"),
        ],
        ucx_bw: "hosts_ucx_bw_1500",
        tcp: "hosts_tcp_1500",
        lat: "hosts_wlat_1500",
        ucx_lat: "hosts_ucx_lat_1500",
    },
    Keys {
        mtu: "9000",
        ours: [
            ("hosts_wbw_9000", "write_bw"),
            ("hosts_rbw_9000", "read_bw"),
            ("hosts_sbw_9000", "send_bw"),
        ],
        ucx_bw: "hosts_ucx_bw_9000",
        tcp: "hosts_tcp_9000",
        lat: "hosts_wlat_9000",
        ucx_lat: "hosts_ucx_lat_9000",
    },
];

/// Every row of this step failed for one reason (no namespaces, no tool).
fn all_failed(r: &mut Results, why: &str) {
    for k in &KEYS {
        for (key, test) in k.ours {
            r.add(
                key,
                format!("between hosts, MTU {}: {test}", k.mtu),
                "MiB/s",
                Err(why.into()),
            );
        }
    }
}

/// The rows and goals' figures between two hosts, then the picture.
pub(super) fn between_hosts(p: &Plan, tools: &Tools, out: &Path, r: &mut Results) {
    let Some(h) = two_hosts("cmph", [10, 95, 0]) else {
        all_failed(r, "no network namespaces here (root and `ip` needed)");
        return;
    };
    let iters = p.bw_iters.to_string();
    let ucx_n = p.bw_iters * 2;
    for k in &KEYS {
        if let Err(e) = set_mtu(&h, k.mtu) {
            all_failed(r, &e);
            return;
        }
        let mut ours: [Vec<Result<f64, String>>; 3] = Default::default();
        let (mut ucx_runs, mut tcp_runs) = (Vec::new(), Vec::new());
        for run in 0..BW_RUNS {
            for (i, (key, test)) in k.ours.iter().enumerate() {
                let o = softrdma(
                    &h,
                    tools,
                    &format!("{key}.{run}"),
                    test,
                    &["-s", "65536", "-n", &iters],
                );
                ours[i].push(o.and_then(|o| super::procs::bw_row(&o)).map(|x| x.avg_mbs));
            }
            let name = format!("{}.{run}", k.ucx_bw);
            ucx_runs.push(ucx_bw(ucx(&h, tools, &name, "tag_bw", 65536, ucx_n)));
            tcp_runs.push(iperf3(&h, tools, &format!("{}.{run}", k.tcp), 128 << 10));
        }
        for ((key, test), runs) in k.ours.iter().zip(ours) {
            let (v, spread) = median(Ok(runs));
            r.add(
                key,
                format!("between hosts (veth, MTU {}): softrdma perf {test} -s 65536 --odp (median of {BW_RUNS})", k.mtu),
                "MiB/s",
                v,
            );
            r.note(spread);
        }
        let (v, spread) = median(Ok(ucx_runs));
        r.add(
            k.ucx_bw,
            format!("between hosts (veth, MTU {}): UCX tcp, ucx_perftest tag_bw 64 KiB (median of {BW_RUNS})", k.mtu),
            "MiB/s",
            v,
        );
        r.note(spread);
        let (v, spread) = median(Ok(tcp_runs));
        r.add(
            k.tcp,
            format!(
                "between hosts (veth, MTU {}): iperf3 TCP, 128 KiB writes (median of {BW_RUNS})",
                k.mtu
            ),
            "MiB/s",
            v,
        );
        r.note(spread);
        // Not fewer: the first thousand or so round trips between hosts
        // take ~80 us each (t_typical 76-88 us at -n 100 and 1000, 9.3 us
        // at -n 10000, one run each).
        let lat_n = p.lat_iters.max(2000).to_string();
        let o = softrdma(&h, tools, k.lat, "write_lat", &["-s", "2", "-n", &lat_n])
            .and_then(|o| super::procs::lat_typical(&o));
        r.add(
            k.lat,
            format!(
                "between hosts (veth, MTU {}): softrdma perf write_lat -s 2 --odp: t_typical",
                k.mtu
            ),
            "usec",
            o,
        );
        let o = ucx(&h, tools, k.ucx_lat, "tag_lat", 8, ucx_n)
            .and_then(|o| ucx_final(&o))
            .and_then(|v| v.get(1).copied().ok_or_else(|| "short Final: line".into()));
        r.add(
            k.ucx_lat,
            format!(
                "between hosts (veth, MTU {}): UCX tcp, ucx_perftest tag_lat 8 B: typical",
                k.mtu
            ),
            "usec",
            o,
        );
    }
    picture(p, tools, &h, out, r);
}

/// Bandwidth by message size between hosts at MTU 9000: ours (`-a`), UCX
/// tcp and iperf3 TCP (write size) — `bandwidth_hosts.svg`.
fn picture(p: &Plan, tools: &Tools, h: &TwoHosts, out: &Path, r: &mut Results) {
    let _ = set_mtu(h, "9000");
    let sizes: Vec<usize> = (3..=11).map(|k| 1usize << (2 * k)).collect(); // 64 B .. 4 MiB
    let mut series = Vec::new();
    let iters = p.sweep_iters.to_string();
    if let Ok(o) = softrdma(h, tools, "hosts_sweep", "write_bw", &["-a", "-n", &iters]) {
        let pts = super::procs::bw_rows(&o)
            .iter()
            .map(|x| (x.bytes, x.avg_mbs))
            .collect();
        series.push(plot::Series {
            name: "softrdma perf write_bw -a --odp".into(),
            points: pts,
        });
    }
    let mut u = Vec::new();
    let mut t = Vec::new();
    for &s in &sizes {
        let n = ((256usize << 20) / s).clamp(100, 20_000) as u32;
        let n = if p.sweep_iters < 100 { n / 20 + 10 } else { n };
        if let Ok(v) = ucx_bw(ucx(
            h,
            tools,
            &format!("hosts_ucx_sweep_{s}"),
            "tag_bw",
            s,
            n,
        )) {
            u.push((s as u64, v));
        }
        if let Ok(v) = iperf3(h, tools, &format!("hosts_tcp_sweep_{s}"), s) {
            t.push((s as u64, v));
        }
    }
    series.push(plot::Series {
        name: "UCX tcp, ucx_perftest tag_bw".into(),
        points: u,
    });
    series.push(plot::Series {
        name: "iperf3 TCP (write size, at most 1 MiB)".into(),
        points: t,
    });
    let svg = out.join("bandwidth_hosts.svg");
    let title = "Between two hosts (network namespaces, veth, MTU 9000)";
    let drawn = plot::bandwidth_svg(&svg, title, &series, None);
    r.add(
        "svg_hosts",
        "the picture: bandwidth by message size between hosts",
        "points",
        drawn.map(|()| series.iter().map(|s| s.points.len() as f64).sum()),
    );
    r.note(svg.display().to_string());
}
