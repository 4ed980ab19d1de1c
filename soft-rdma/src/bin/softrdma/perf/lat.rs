//! The latency tests' loop: write/send ping-pong (both sides echo), and
//! read/atomic (the client alone, one operation at a time).

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
        let size = self.size as usize;
        let verb = self.a.test.verb;
        let what = if role == Role::Client {
            W_LAT_CLIENT
        } else {
            W_LAT_SERVER
        };
        let mut samples = Vec::with_capacity(iters as usize);
        let mut wcs = vec![Wc::EMPTY; 16];
        let mut sdone = 0u64; // send completions seen (every lat op is signaled)
        let mut recvd = 0u64;
        let mut dog = Watchdog::new();
        let mut spins = 0u32;
        let want_len = self.size as u32 + self.recv_off() as u32;
        // Drain completions; returns whether anything happened.
        let mut drain = |sdone: &mut u64, recvd: &mut u64| -> CliResult<bool> {
            let mut any = false;
            let n = self.s.scq.poll(&mut wcs);
            for wc in &wcs[..n] {
                wc_ok(wc, "send queue")?;
                *sdone = (wc.wr_id & 0xffff_ffff) + 1;
                any = true;
            }
            if verb == Verb::Send {
                let n = self.s.rcq.poll(&mut wcs);
                for wc in &wcs[..n] {
                    wc_ok(wc, "receive queue")?;
                    if wc.byte_len != want_len {
                        return runtime(format!(
                            "received {} bytes, expected {want_len}",
                            wc.byte_len
                        ));
                    }
                    let j = wc.wr_id & 0xffff_ffff;
                    *recvd = j + 1;
                    if j + (self.rx_depth() as u64) < iters {
                        self.post_recv(0, j + self.rx_depth() as u64);
                    }
                    any = true;
                }
            }
            Ok(any)
        };
        let arrived = |i: u64, recvd: u64| -> bool {
            match verb {
                Verb::Write => self.s.dst[0].volatile_byte(size - 1) == lat_marker(i),
                _ => recvd > i,
            }
        };
        let pingpong = matches!(verb, Verb::Write | Verb::Send);
        let mut t_prev: Option<Instant> = None;
        for i in 0..iters {
            // A source slot is reused only after its operation completed.
            while i >= self.k as u64 + sdone {
                if !drain(&mut sdone, &mut recvd)? {
                    dog.check(|| format!("iteration {i}: waiting for a send completion"))?;
                    relax(&mut spins);
                } else {
                    dog.progress();
                }
            }
            if pingpong && role == Role::Server {
                // Echo: wait for the client's i-th message, answer it.
                while !arrived(i, recvd) {
                    if !drain(&mut sdone, &mut recvd)? {
                        // A client that died says so at once (as the send_bw
                        // receiver), not after the stall timeout.
                        if spins % 4096 == 0 && ctrl.peer_closed() {
                            return runtime("the client closed the connection (see its error)");
                        }
                        dog.check(|| format!("iteration {i}: waiting for the client's message"))?;
                        relax(&mut spins);
                    } else {
                        dog.progress();
                    }
                }
                let now = Instant::now();
                if let Some(t) = t_prev {
                    samples.push(now.duration_since(t).as_secs_f64() * 1e6 / 2.0);
                }
                self.post(0, i, true, what)?;
                t_prev = Some(Instant::now());
                dog.progress();
                continue;
            }
            let t0 = Instant::now();
            self.post(0, i, true, what)?;
            if pingpong {
                while !arrived(i, recvd) {
                    if !drain(&mut sdone, &mut recvd)? {
                        if spins % 4096 == 0 && ctrl.peer_closed() {
                            return runtime("the server closed the connection (see its error)");
                        }
                        dog.check(|| format!("iteration {i}: waiting for the server's reply"))?;
                        relax(&mut spins);
                    }
                }
                samples.push(t0.elapsed().as_secs_f64() * 1e6 / 2.0);
            } else {
                while sdone <= i {
                    if !drain(&mut sdone, &mut recvd)? {
                        dog.check(|| format!("iteration {i}: waiting for the completion"))?;
                        relax(&mut spins);
                    }
                }
                samples.push(t0.elapsed().as_secs_f64() * 1e6);
            }
            dog.progress();
        }
        // Let the last sends complete (their buffers are checked / reused next size).
        while sdone < iters {
            if !drain(&mut sdone, &mut recvd)? {
                dog.check(|| "waiting for the last send completion".to_string())?;
                relax(&mut spins);
            }
        }
        Ok((!samples.is_empty()).then(|| report::lat_stats(self.size, samples)))
    }
}
