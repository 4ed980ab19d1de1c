//! What the two sides say over the control connection: the parameters
//! (HELLO / OK or ERR), the QP ends (QP), and per size GO / READY, DONE and
//! the server's RESULT (with `--duration`, END after the last round).

use super::params::{plan, Plan};
use super::resources::{open_device, Side};
use super::Role;
use crate::args::{conn_name, AtomicKind, PerfArgs, Test};
use crate::ctrl::{kv, kv_u64, Ctrl};
use crate::{runtime, CliError, CliResult};
use soft_rdma::verbs::{Gid, Mtu};

/// Agree the parameters and the MTU. The device is opened first: its active
/// MTU takes part, and SOFTRDMA_ADDR errors surface early.
pub(super) fn negotiate(
    args: PerfArgs,
    role: Role,
    ctrl: &mut Ctrl,
    printing: bool,
) -> CliResult<Plan> {
    let probe = open_device()?;
    let active = probe.port_attr().active_mtu;
    drop(probe);
    match role {
        Role::Client => {
            ctrl.send(&hello_line(&args, active))?;
            let f = ctrl.expect("OK")?;
            let mtu = mtu_of(kv_u64(&f, "mtu")?)?;
            plan(args, mtu, printing)
        }
        Role::Server => answer_hello(&args, active, ctrl),
    }
}

fn hello_line(a: &PerfArgs, active: Mtu) -> String {
    format!(
        "HELLO test={} size={} iters={} all={} qps={} conn={} mtu={} atomic={} txd={} rxd={} cqmod={} verify={} buffer={} duration={} active={}",
        a.test.name(),
        a.size.unwrap_or(0),
        a.iters,
        u8::from(a.all),
        a.qps,
        conn_name(a.conn),
        a.mtu.map_or(0, |m| m.bytes()),
        a.atomic.name(),
        a.tx_depth,
        a.rx_depth,
        a.cq_mod,
        u8::from(a.verify),
        a.buffer.unwrap_or(0),
        a.duration.unwrap_or(0),
        active.bytes()
    )
}

/// Server: take the client's HELLO, choose the MTU, and answer OK, or ERR
/// with the reason (which this side fails with too).
fn answer_hello(mine: &PerfArgs, active: Mtu, ctrl: &mut Ctrl) -> CliResult<Plan> {
    let f = ctrl.expect("HELLO")?;
    let (a, peer_active) = match adopt(mine, &f) {
        Ok(x) => x,
        Err(e) => {
            let _ = ctrl.send(&format!("ERR {e}"));
            return runtime(e);
        }
    };
    let limit = active.bytes().min(peer_active as usize);
    let mtu = match a.mtu {
        Some(m) if m.bytes() > limit => {
            let e = format!(
                "-m {} is more than the active MTU {limit} of the two ports; use -m {limit} or less",
                m.bytes()
            );
            let _ = ctrl.send(&format!("ERR {e}"));
            return runtime(e);
        }
        Some(m) => m,
        None => crate::args::parse_mtu(limit as u64).expect("a valid MTU"),
    };
    let p = match plan(a, mtu, false) {
        Ok(p) => p,
        Err(e) => {
            let _ = ctrl.send(&format!("ERR {e}"));
            return Err(e);
        }
    };
    ctrl.send(&format!("OK mtu={}", mtu.bytes()))?;
    Ok(p)
}

/// Server: adopt the client's parameters (the test must match), keep our
/// memory mode and output options. Also returns the client's active MTU.
fn adopt(mine: &PerfArgs, f: &[String]) -> std::result::Result<(PerfArgs, u64), String> {
    let perr = |e: CliError| e.to_string();
    let test = Test::parse(kv(f, "test").map_err(perr)?).ok_or("bad test")?;
    if test != mine.test {
        return Err(format!(
            "the client runs {} but this server runs {}; start both with the same TEST",
            test.name(),
            mine.test.name()
        ));
    }
    let mut a = mine.clone();
    let size = kv_u64(f, "size").map_err(perr)?;
    a.size = (size != 0).then_some(size);
    a.iters = kv_u64(f, "iters").map_err(perr)?;
    a.all = kv_u64(f, "all").map_err(perr)? == 1;
    a.qps = kv_u64(f, "qps").map_err(perr)? as u32;
    a.conn = crate::args::parse_conn(kv(f, "conn").map_err(perr)?).ok_or("bad conn")?;
    let m = kv_u64(f, "mtu").map_err(perr)?;
    a.mtu = if m == 0 {
        None
    } else {
        Some(crate::args::parse_mtu(m).ok_or("bad mtu")?)
    };
    a.atomic = AtomicKind::parse(kv(f, "atomic").map_err(perr)?).ok_or("bad atomic")?;
    a.tx_depth = kv_u64(f, "txd").map_err(perr)? as u32;
    a.rx_depth = kv_u64(f, "rxd").map_err(perr)? as u32;
    a.cq_mod = kv_u64(f, "cqmod").map_err(perr)? as u32;
    a.verify = kv_u64(f, "verify").map_err(perr)? == 1;
    let buffer = kv_u64(f, "buffer").map_err(perr)?;
    a.buffer = (buffer != 0).then_some(buffer);
    let duration = kv_u64(f, "duration").map_err(perr)?;
    a.duration = (duration != 0).then_some(duration);
    let active = kv_u64(f, "active").map_err(perr)?;
    Ok((a, active))
}

fn mtu_of(v: u64) -> CliResult<Mtu> {
    crate::args::parse_mtu(v).map_or_else(|| runtime(format!("protocol error: mtu {v}")), Ok)
}

/// The peer's end of one QP.
#[derive(Clone, Copy, Debug)]
pub(super) struct Remote {
    pub(super) qpn: u32,
    pub(super) psn: u32,
    pub(super) gid: Gid,
    pub(super) src_rkey: u32,
    pub(super) src_addr: u64,
    pub(super) dst_rkey: u32,
    pub(super) dst_addr: u64,
}

/// Send this side's QP ends, then read the peer's (`qps` of them).
pub(super) fn swap_qp_ends(ctrl: &mut Ctrl, s: &Side, qps: u32) -> CliResult<Vec<Remote>> {
    for q in 0..qps as usize {
        ctrl.send(&format!(
            "QP qpn={} psn={} gid={} srkey={} saddr={} drkey={} daddr={}",
            s.qps[q].qp_num(),
            s.psns[q],
            gid_hex(s.dev.gid(1).expect("gid")),
            s.keys[q].0,
            s.src[q].addr(),
            s.keys[q].1,
            s.dst[q].addr()
        ))?;
    }
    let mut remote = Vec::new();
    for _ in 0..qps {
        let f = ctrl.expect("QP")?;
        remote.push(Remote {
            qpn: kv_u64(&f, "qpn")? as u32,
            psn: kv_u64(&f, "psn")? as u32,
            gid: parse_gid(kv(&f, "gid")?)?,
            src_rkey: kv_u64(&f, "srkey")? as u32,
            src_addr: kv_u64(&f, "saddr")?,
            dst_rkey: kv_u64(&f, "drkey")? as u32,
            dst_addr: kv_u64(&f, "daddr")?,
        });
    }
    Ok(remote)
}

fn gid_hex(g: Gid) -> String {
    g.0.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_gid(s: &str) -> CliResult<Gid> {
    if s.len() != 32 {
        return runtime(format!("protocol error: gid {s}"));
    }
    let mut g = [0u8; 16];
    for (i, b) in g.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16)
            .or_else(|_| runtime(format!("protocol error: gid {s}")))?;
    }
    Ok(Gid(g))
}

/// Server: wait for the client's GO for `size`; false if it said END
/// instead (only with `--duration`, where the client decides when to stop).
pub(super) fn await_go(ctrl: &mut Ctrl, duration: bool, size: u64) -> CliResult<bool> {
    let f = if duration {
        let line = ctrl.recv()?;
        if line == "END" {
            return Ok(false);
        }
        match line.strip_prefix("GO ") {
            Some(rest) => rest.split_whitespace().map(str::to_string).collect(),
            None => return runtime(format!("protocol error: expected GO or END, got {line:?}")),
        }
    } else {
        ctrl.expect("GO")?
    };
    if kv_u64(&f, "size")? != size {
        return runtime("protocol error: size order differs");
    }
    Ok(true)
}

/// Server: how the size went here (its first mismatch, if any) and its ODP
/// counters (the client prints the sum of both sides').
pub(super) fn send_result(ctrl: &mut Ctrl, fails: &[String], odp: (u64, u64)) -> CliResult<()> {
    let (fa, inv) = odp;
    let msg = fails.first().cloned().unwrap_or_default();
    ctrl.send(&format!(
        "RESULT ok={} faults={fa} inval={inv} msg={msg}",
        u8::from(fails.is_empty())
    ))
}

/// The server's RESULT, as the client takes it.
pub(super) struct PeerResult {
    /// (page faults, invalidations) of the server's MRs.
    pub(super) odp: (u64, u64),
    /// The server's first mismatch, if it found any.
    pub(super) failure: Option<String>,
}

pub(super) fn recv_result(ctrl: &mut Ctrl) -> CliResult<PeerResult> {
    let f = ctrl.expect("RESULT")?;
    let odp = (kv_u64(&f, "faults")?, kv_u64(&f, "inval")?);
    let failure = if kv_u64(&f, "ok")? != 1 {
        let msg = f
            .iter()
            .skip_while(|x| !x.starts_with("msg="))
            .cloned()
            .collect::<Vec<_>>()
            .join(" ");
        Some(msg.trim_start_matches("msg=").to_string())
    } else {
        None
    };
    Ok(PeerResult { odp, failure })
}
