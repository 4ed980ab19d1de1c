//! The latency tests' loop: write/send ping-pong (both sides echo), and
//! read/atomic (the client alone, one operation at a time). Every
//! operation is signaled; a sample is one iteration's time (ping-pong:
//! half the round trip).

use super::ops::Ctx;
use super::poll::{relax, wc_ok, Watchdog};
use super::values::{lat_marker, W_LAT_CLIENT, W_LAT_SERVER};
use super::Role;
use crate::args::Verb;
use crate::ctrl::Ctrl;
use crate::report::{self, LatRow};
use crate::{runtime, CliResult};
use soft_rdma::verbs::Wc;
use std::time::Instant;

impl Ctx<'_> {
    /// Latency: write/send ping-pong (both sides), read/atomic (client only).
    pub(super) fn run_lat(&self, ctrl: &mut Ctrl, role: Role) -> CliResult<Option<LatRow>> {
        let iters = self.iters();
        let what = if role == Role::Client {
            W_LAT_CLIENT
        } else {
            W_LAT_SERVER
        };
        let pingpong = matches!(self.a.test.verb, Verb::Write | Verb::Send);
        let mut l = LatLoop::new(self);
        let mut samples = Vec::with_capacity(iters as usize);
        let mut t_prev: Option<Instant> = None;
        for i in 0..iters {
            l.wait_free_slot(i)?;
            if pingpong && role == Role::Server {
                // Echo: wait for the client's i-th message, answer it; a
                // sample is half the time from one answer to the next.
                l.wait_message(ctrl, i, role)?;
                let now = Instant::now();
                if let Some(t) = t_prev {
                    samples.push(now.duration_since(t).as_secs_f64() * 1e6 / 2.0);
                }
                self.post(0, i, true, what)?;
                t_prev = Some(Instant::now());
                l.dog.progress();
                continue;
            }
            let t0 = Instant::now();
            self.post(0, i, true, what)?;
            if pingpong {
                l.wait_message(ctrl, i, role)?;
                samples.push(t0.elapsed().as_secs_f64() * 1e6 / 2.0);
            } else {
                l.wait_completion(i)?;
                samples.push(t0.elapsed().as_secs_f64() * 1e6);
            }
            l.dog.progress();
        }
        l.wait_last_sends()?;
        Ok((!samples.is_empty()).then(|| report::lat_stats(self.size, samples)))
    }
}

/// What the latency loop has seen of the completions so far.
struct LatLoop<'c, 'a> {
    ctx: &'c Ctx<'a>,
    wcs: Vec<Wc>,
    /// Send completions seen (every lat op is signaled).
    sdone: u64,
    /// Messages received (send_lat).
    recvd: u64,
    dog: Watchdog,
    spins: u32,
    /// A received message's length (UD: with its GRH).
    want_len: u32,
}

impl<'c, 'a> LatLoop<'c, 'a> {
    fn new(ctx: &'c Ctx<'a>) -> Self {
        LatLoop {
            ctx,
            wcs: vec![Wc::EMPTY; 16],
            sdone: 0,
            recvd: 0,
            dog: Watchdog::new(),
            spins: 0,
            want_len: ctx.size as u32 + ctx.recv_off() as u32,
        }
    }

    /// Drain completions (and repost receives); returns whether anything
    /// happened.
    fn drain(&mut self) -> CliResult<bool> {
        let c = self.ctx;
        let mut any = false;
        let n = c.s.scq.poll(&mut self.wcs);
        for wc in &self.wcs[..n] {
            wc_ok(wc, "send queue")?;
            self.sdone = (wc.wr_id & 0xffff_ffff) + 1;
            any = true;
        }
        if c.a.test.verb == Verb::Send {
            let n = c.s.rcq.poll(&mut self.wcs);
            for wc in &self.wcs[..n] {
                wc_ok(wc, "receive queue")?;
                if wc.byte_len != self.want_len {
                    return runtime(format!(
                        "received {} bytes, expected {}",
                        wc.byte_len, self.want_len
                    ));
                }
                let j = wc.wr_id & 0xffff_ffff;
                self.recvd = j + 1;
                if j + (c.rx_depth() as u64) < c.iters() {
                    c.post_recv(0, j + c.rx_depth() as u64);
                }
                any = true;
            }
        }
        Ok(any)
    }

    /// Whether the peer's message `i` is here: write_lat's marker in the
    /// last byte, send_lat's receive.
    fn arrived(&self, i: u64) -> bool {
        let c = self.ctx;
        match c.a.test.verb {
            Verb::Write => c.s.dst[0].volatile_byte(c.size as usize - 1) == lat_marker(i),
            _ => self.recvd > i,
        }
    }

    /// Nothing completed: fail if nothing has for too long, else spin.
    fn idle(&mut self, what: impl FnOnce() -> String) -> CliResult<()> {
        self.dog.check(what)?;
        relax(&mut self.spins);
        Ok(())
    }

    /// A source slot is reused only after its operation completed.
    fn wait_free_slot(&mut self, i: u64) -> CliResult<()> {
        while i >= self.ctx.k as u64 + self.sdone {
            if self.drain()? {
                self.dog.progress();
            } else {
                self.idle(|| format!("iteration {i}: waiting for a send completion"))?;
            }
        }
        Ok(())
    }

    /// Ping-pong: wait for the peer's message `i` (the server: the
    /// client's ping; the client: the server's reply). A peer that died
    /// says so at once (as the send_bw receiver), not after the stall
    /// timeout.
    fn wait_message(&mut self, ctrl: &mut Ctrl, i: u64, role: Role) -> CliResult<()> {
        while !self.arrived(i) {
            if self.drain()? {
                self.dog.progress();
                continue;
            }
            if self.spins % 4096 == 0 && ctrl.peer_closed() {
                return runtime(match role {
                    Role::Server => "the client closed the connection (see its error)",
                    Role::Client => "the server closed the connection (see its error)",
                });
            }
            self.idle(|| match role {
                Role::Server => format!("iteration {i}: waiting for the client's message"),
                Role::Client => format!("iteration {i}: waiting for the server's reply"),
            })?;
        }
        Ok(())
    }

    /// read_lat / atomic_lat: wait for operation `i`'s completion.
    fn wait_completion(&mut self, i: u64) -> CliResult<()> {
        while self.sdone <= i {
            if !self.drain()? {
                self.idle(|| format!("iteration {i}: waiting for the completion"))?;
            }
        }
        Ok(())
    }

    /// Let the last sends complete (their buffers are checked / reused next size).
    fn wait_last_sends(&mut self) -> CliResult<()> {
        while self.sdone < self.ctx.iters() {
            if !self.drain()? {
                self.idle(|| "waiting for the last send completion".to_string())?;
            }
        }
        Ok(())
    }
}
