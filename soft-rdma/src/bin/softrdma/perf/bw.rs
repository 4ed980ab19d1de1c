//! The bandwidth tests' loops (perftest's `run_iter_bw` and its receiver)
//! and their figures.

use super::ops::Ctx;
use super::poll::{relax, wc_ok, Watchdog, STALL};
use super::values::{W_SEND, W_WRITE};
use crate::args::Verb;
use crate::ctrl::{kv_u64, Ctrl};
use crate::report::BwRow;
use crate::{runtime, CliError, CliResult};
use soft_rdma::verbs::{Wc, WcStatus};
use std::time::{Duration, Instant};

impl Ctx<'_> {
    /// perftest's bw loop: up to `-t` in flight per QP, signal every
    /// `--cq-mod`, count completions.
    pub(super) fn run_bw_client(&self, ctrl: &mut Ctrl) -> CliResult<BwRow> {
        let nq = self.a.qps as usize;
        let iters = self.iters();
        let (depth, cq_mod) = (self.depth() as u64, self.cq_mod());
        let mut posted = vec![0u64; nq];
        let mut done = vec![0u64; nq];
        let mut credit = vec![
            if self.credits {
                self.rx_depth() as u64
            } else {
                u64::MAX
            };
            nq
        ];
        let mut wcs = vec![Wc::EMPTY; 64];
        let mut events: Vec<(Instant, u64)> =
            Vec::with_capacity((iters * nq as u64 / cq_mod) as usize + 2);
        let total = iters * nq as u64;
        let mut completed = 0u64;
        let mut dog = Watchdog::new();
        let mut spins = 0u32;
        let start = Instant::now();
        while completed < total {
            for q in 0..nq {
                while posted[q] < iters && posted[q] - done[q] < depth && posted[q] < credit[q] {
                    let i = posted[q];
                    self.post(
                        q,
                        i,
                        i % cq_mod == cq_mod - 1 || i == iters - 1,
                        if self.a.test.verb == Verb::Send {
                            W_SEND
                        } else {
                            W_WRITE
                        },
                    )?;
                    posted[q] += 1;
                }
            }
            if self.credits && (0..nq).any(|q| posted[q] >= credit[q] && posted[q] < iters) {
                while ctrl.readable() {
                    let f = ctrl.expect("CREDIT")?;
                    let q = kv_u64(&f, "q")? as usize;
                    credit[q] = credit[q].max(kv_u64(&f, "n")?);
                    dog.progress();
                }
            }
            let n = self.s.scq.poll(&mut wcs);
            if n == 0 {
                dog.check(|| format!("{completed} of {total} operations completed"))?;
                relax(&mut spins);
                continue;
            }
            let now = Instant::now();
            for (k, wc) in wcs[..n].iter().enumerate() {
                let q = (wc.wr_id >> 32) as usize;
                let i = wc.wr_id & 0xffff_ffff;
                if wc.status != WcStatus::Success {
                    return Err(self.send_failed(wc, &wcs[k + 1..n], posted[q] - (i + 1)));
                }
                completed += i + 1 - done[q];
                done[q] = i + 1;
            }
            events.push((now, completed));
            dog.progress();
        }
        let end = Instant::now();
        Ok(bw_row(
            self.size, iters, nq as u64, cq_mod, start, end, &events,
        ))
    }

    /// The first error completion of a send queue ends the run. The QP is
    /// then in error and every work request posted after the failed one
    /// (`later` of them) comes back flushed; wait for those (at most
    /// `STALL`) and say how many did, so a peer that died mid-run reads as
    /// "retry count exceeded, the rest flushed" rather than a hang.
    /// `polled`: the completions polled with `first`, after it.
    fn send_failed(&self, first: &Wc, polled: &[Wc], later: u64) -> CliError {
        // (flushed, completed otherwise) among this QP's completions.
        let count = |seen: &mut (u64, u64), wcs: &[Wc]| {
            for wc in wcs.iter().filter(|w| w.qp_num == first.qp_num) {
                if wc.status == WcStatus::WrFlushErr {
                    seen.0 += 1;
                } else {
                    seen.1 += 1;
                }
            }
        };
        let mut seen = (0u64, 0u64);
        count(&mut seen, polled);
        let mut wcs = vec![Wc::EMPTY; 64];
        let t = Instant::now();
        while seen.0 + seen.1 < later && t.elapsed() < STALL {
            let n = self.s.scq.poll(&mut wcs);
            count(&mut seen, &wcs[..n]);
            if n == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let (flushed, other) = seen;
        CliError::Runtime(format!(
            "send queue completion with error {:?} (QP {:#06x}, iteration {}); \
             flushed after it: {flushed} of the {later} work requests posted later{}",
            first.status,
            first.qp_num,
            first.wr_id & 0xffff_ffff,
            if other > 0 {
                format!(" ({other} completed otherwise)")
            } else {
                String::new()
            }
        ))
    }

    /// send_bw's receiver: repost as receives complete (credits for UC/UD).
    pub(super) fn run_bw_receiver(&self, ctrl: &mut Ctrl) -> CliResult<BwRow> {
        let nq = self.a.qps as usize;
        let iters = self.iters();
        let mut posted = vec![self.rx_depth() as u64; nq];
        let mut got = vec![0u64; nq];
        let mut credited = posted.clone();
        let batch = (self.rx_depth() as u64 / 4).max(1);
        let mut wcs = vec![Wc::EMPTY; 64];
        let total = iters * nq as u64;
        let mut received = 0u64;
        let mut events = Vec::new();
        let mut dog = Watchdog::new();
        let mut spins = 0u32;
        let want_len = self.size as u32 + self.recv_off() as u32;
        let start = Instant::now();
        while received < total {
            let n = self.s.rcq.poll(&mut wcs);
            if n == 0 {
                if spins % 4096 == 0 && ctrl.peer_closed() {
                    return runtime("the client closed the connection (see its error)");
                }
                dog.check(|| format!("{received} of {total} messages received"))?;
                relax(&mut spins);
                continue;
            }
            for wc in &wcs[..n] {
                wc_ok(wc, "receive queue")?;
                if wc.byte_len != want_len {
                    return runtime(format!(
                        "received {} bytes, expected {want_len}",
                        wc.byte_len
                    ));
                }
                let q = (wc.wr_id >> 32) as usize;
                got[q] += 1;
                received += 1;
                if posted[q] < iters {
                    self.post_recv(q, posted[q]);
                    posted[q] += 1;
                }
                if self.credits
                    && (posted[q] - credited[q] >= batch || posted[q] == iters)
                    && posted[q] > credited[q]
                {
                    ctrl.send(&format!("CREDIT q={q} n={}", posted[q]))?;
                    credited[q] = posted[q];
                }
            }
            events.push((Instant::now(), received));
            dog.progress();
        }
        Ok(bw_row(
            self.size,
            iters,
            nq as u64,
            batch,
            start,
            Instant::now(),
            &events,
        ))
    }
}

/// perftest's figures: average over the whole run; peak over the best
/// window of a tenth of the run (and of at least two completion batches of
/// every QP).
fn bw_row(
    size: u64,
    iters: u64,
    nq: u64,
    cq_mod: u64,
    start: Instant,
    end: Instant,
    events: &[(Instant, u64)],
) -> BwRow {
    let total = iters * nq;
    let secs = end.duration_since(start).as_secs_f64().max(1e-9);
    let mb = (size * total) as f64 / (1u64 << 20) as f64;
    let avg = mb / secs;
    // At least two completion batches of every QP: a burst polled late is not a peak.
    let win = (total / 10).max(2 * cq_mod * nq);
    let mut peak = avg;
    let mut j = 0usize;
    let mut pts = vec![(start, 0u64)];
    pts.extend_from_slice(events);
    for e in 0..pts.len() {
        while j + 1 < e && pts[e].1 - pts[j + 1].1 >= win {
            j += 1;
        }
        let (dt, dn) = (
            pts[e].0.duration_since(pts[j].0).as_secs_f64(),
            pts[e].1 - pts[j].1,
        );
        if dn >= win && dt > 1e-6 {
            peak = peak.max((size * dn) as f64 / (1u64 << 20) as f64 / dt);
        }
    }
    BwRow {
        bytes: size,
        iters,
        peak_mbs: peak,
        avg_mbs: avg,
        mpps: total as f64 / secs / 1e6,
    }
}
