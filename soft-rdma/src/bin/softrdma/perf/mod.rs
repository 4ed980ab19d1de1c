//! `softrdma perf`: perftest's benchmarks on the soft device.
//!
//! Both sides run the same code: `side()` with a role. The client is the
//! requester (it issues the operations of bw tests and of read/atomic lat);
//! the server is the target (and the echoing peer of write_lat/send_lat).
//! Embedded mode is the two roles as two threads of this process, each with
//! its own `Device::open()`, talking over a loopback TCP connection exactly
//! as two processes do.
//!
//! Per QP each side has two buffers, `src` and `dst`, each cut into `k`
//! slots; iteration `i` uses slot `i % k` (perftest's cycle buffer), so a
//! slot is rewritten only after the operation that used it completed. With
//! `--verify` every source slot gets a pattern seeded by (QP, iteration)
//! before it is posted, and at the end of each size every destination byte
//! the last operation on each slot wrote is checked (atomics: the exact
//! final counter, and the values fetched).
//!
//! Modules, in the order a run uses them: `exchange` (the control
//! connection's messages), `params` (sizes and buffer geometry), `resources`
//! (verbs objects; `region`, the buffers), `ops` (one size: preparing and
//! posting), `bw` / `lat` (the loops; `poll`, waiting on completions),
//! `values` (what each operation carries), `verify`, `output`.

mod bw;
mod exchange;
mod lat;
mod ops;
mod output;
mod params;
mod poll;
mod region;
mod resources;
mod values;
mod verify;

use crate::args::{Mode, PerfArgs, Verb};
use crate::ctrl::Ctrl;
use crate::{runtime, CliError, CliResult};
use exchange::Remote;
use ops::Ctx;
use output::Row;
use params::Plan;
use resources::Side;
use soft_rdma::verbs::QpType;
use std::io::Write;
use std::time::Instant;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Role {
    Client,
    Server,
}

pub fn run(a: &PerfArgs) -> CliResult<()> {
    match &a.mode {
        Mode::Server => {
            let l = Ctrl::listen(a.port)?;
            let banner = "************************************\n* Waiting for client to connect... *\n************************************";
            if a.json {
                eprintln!("{banner}");
            } else {
                println!("{banner}");
                let _ = std::io::stdout().flush();
            }
            let ctrl = Ctrl::accept(&l)?;
            side(a.clone(), Role::Server, ctrl, true)
        }
        Mode::Client(host) => {
            let ctrl = Ctrl::connect(host, a.port)?;
            side(a.clone(), Role::Client, ctrl, true)
        }
        Mode::Embedded => embedded(a),
    }
}

/// Both sides in this process: the server in a thread that prints no
/// header or rows of its own (the client's are the run's).
fn embedded(a: &PerfArgs) -> CliResult<()> {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0))
        .or_else(|e| runtime(format!("loopback TCP: {e}")))?;
    let port = l
        .local_addr()
        .map_err(|e| CliError::Runtime(e.to_string()))?
        .port();
    let sa = a.clone();
    let server = std::thread::Builder::new()
        .name("softrdma-server".into())
        .spawn(move || -> CliResult<()> {
            let ctrl = Ctrl::accept(&l)?;
            side(sa, Role::Server, ctrl, false)
        })
        .map_err(|e| CliError::Runtime(format!("spawn: {e}")))?;
    let client =
        Ctrl::connect("127.0.0.1", port).and_then(|c| side(a.clone(), Role::Client, c, true));
    let server = server
        .join()
        .unwrap_or_else(|_| runtime("the server thread panicked"));
    match (client, server) {
        (Ok(()), Ok(())) => Ok(()),
        // The side that failed first says why; the other saw the connection drop.
        (Err(c), Ok(())) => Err(c),
        (Ok(()), Err(s)) => Err(s),
        (Err(c), Err(s)) => {
            if s.to_string().contains("closed the connection") {
                Err(c)
            } else {
                Err(s)
            }
        }
    }
}

/// One side of the test, from the handshake to the verdict. `printing`:
/// this side prints the run (not the server thread of an embedded run).
fn side(args: PerfArgs, role: Role, mut ctrl: Ctrl, printing: bool) -> CliResult<()> {
    let p = exchange::negotiate(args, role, &mut ctrl, printing)?;
    let a = &p.a;
    let s = Side::new(a, role, &p.lay)?;
    let remote = exchange::swap_qp_ends(&mut ctrl, &s, a.qps)?;
    s.connect(a, p.mtu, &remote)?;
    let t = Test {
        p: &p,
        role,
        s: &s,
        remote: &remote,
        printing,
        measures: measures(a, role),
    };
    if printing && !a.json {
        output::header(&t);
    }
    let mut tally = Tally::default();
    let started = Instant::now();
    let rounds = t.run_rounds(&mut ctrl, &mut tally, started)?;
    if printing && !a.json {
        output::summary(&t, &tally, rounds, started.elapsed());
    }
    if a.stats {
        output::stats(&t);
    }
    if !tally.failures.is_empty() {
        return runtime(format!(
            "verification failed ({} mismatch{}; details above)",
            tally.failures.len(),
            if tally.failures.len() == 1 { "" } else { "es" }
        ));
    }
    Ok(())
}

/// Whether this side has figures to print: the client always; the server
/// for what it measures (send_bw's receiver, write/send lat's echo).
fn measures(a: &PerfArgs, role: Role) -> bool {
    role == Role::Client
        || (a.test.verb == Verb::Send && !a.test.lat)
        || (a.test.lat && matches!(a.test.verb, Verb::Write | Verb::Send))
}

/// One side, connected: what every size needs.
struct Test<'a> {
    p: &'a Plan,
    role: Role,
    s: &'a Side,
    remote: &'a [Remote],
    printing: bool,
    measures: bool,
}

/// What the sizes so far came to.
#[derive(Default)]
struct Tally {
    /// Every mismatch, of both sides (the client hears the server's first).
    failures: Vec<String>,
    /// Client: the server's ODP counters, as its last RESULT said.
    remote_odp: (u64, u64),
}

impl Tally {
    /// Report a size's mismatches and keep them.
    fn record(&mut self, size: u64, fails: &[String]) {
        for m in fails {
            eprintln!("softrdma: verify: size {size}: {m}");
        }
        self.failures.extend(fails.iter().cloned());
    }

    /// The ODP counters to print: the client's are the run's (both sides').
    fn odp(&self, s: &Side, role: Role) -> (u64, u64) {
        let (fa, inv) = s.odp_counters();
        if role == Role::Client {
            (fa + self.remote_odp.0, inv + self.remote_odp.1)
        } else {
            (fa, inv)
        }
    }
}

impl Test<'_> {
    /// Every size once, a row each; with `--duration`, round after round
    /// until the client says END. Returns the rounds run.
    fn run_rounds(&self, ctrl: &mut Ctrl, tally: &mut Tally, started: Instant) -> CliResult<u64> {
        let a = &self.p.a;
        let mut round = 0u64;
        loop {
            for &size in &self.p.sizes {
                let ctx = self.ctx(round, size);
                let row = match self.role {
                    Role::Client => self.client_size(&ctx, ctrl, tally)?,
                    Role::Server => {
                        if !exchange::await_go(ctrl, a.duration.is_some(), size)? {
                            return Ok(round);
                        }
                        self.server_size(&ctx, ctrl, tally)?
                    }
                };
                if let (Some(row), true) = (row, self.printing && self.measures) {
                    output::row(self, tally, &row);
                }
            }
            round += 1;
            match a.duration {
                Some(d) if self.role == Role::Client => {
                    if started.elapsed().as_secs() >= d || !tally.failures.is_empty() {
                        ctrl.send("END")?;
                        return Ok(round);
                    }
                }
                Some(_) => {} // the client decides
                None => return Ok(round),
            }
        }
    }

    fn ctx(&self, round: u64, size: u64) -> Ctx<'_> {
        let a = &self.p.a;
        Ctx {
            a,
            s: self.s,
            remote: self.remote,
            round,
            size,
            k: self.p.lay.k(size),
            slot: self.p.lay.slot(size),
            mtu: self.p.mtu.bytes(),
            credits: a.test.verb == Verb::Send && a.conn != QpType::Rc,
        }
    }

    /// Client, one size: GO / READY, run, DONE, check this side, and take
    /// the server's RESULT.
    fn client_size(&self, ctx: &Ctx, ctrl: &mut Ctrl, tally: &mut Tally) -> CliResult<Option<Row>> {
        ctx.prepare(Role::Client);
        ctrl.send(&format!("GO size={}", ctx.size))?;
        ctrl.expect("READY")?;
        let row = ctx.run_client(ctrl)?;
        ctrl.send("DONE")?;
        let mut fails = if self.p.a.verify {
            ctx.verify(Role::Client)
        } else {
            Vec::new()
        };
        let peer = exchange::recv_result(ctrl)?;
        tally.remote_odp = peer.odp;
        if let Some(m) = peer.failure {
            fails.push(format!("server side: {m}"));
        }
        tally.record(ctx.size, &fails);
        Ok(row)
    }

    /// Server, one size, after its GO: READY, run, wait for DONE, check
    /// this side, and send the RESULT.
    fn server_size(&self, ctx: &Ctx, ctrl: &mut Ctrl, tally: &mut Tally) -> CliResult<Option<Row>> {
        let a = &self.p.a;
        ctx.prepare(Role::Server);
        ctrl.send("READY")?;
        let row = ctx.run_server(ctrl)?;
        if row.is_some() || !a.test.lat || matches!(a.test.verb, Verb::Read | Verb::Atomic) {
            // Passive servers (and echoing lat servers) wait for the client's end.
            ctrl.expect("DONE")?;
        }
        let fails = if a.verify {
            ctx.verify(Role::Server)
        } else {
            Vec::new()
        };
        tally.record(ctx.size, &fails);
        exchange::send_result(ctrl, &fails, self.s.odp_counters())?;
        Ok(row)
    }
}
