//! Waiting on completions: when to give up, how to spin, what an error
//! completion says.

use crate::{runtime, CliResult};
use soft_rdma::verbs::{Wc, WcStatus};
use std::time::{Duration, Instant};

/// No completion (or peer reply) for this long: the run has failed.
pub(super) const STALL: Duration = Duration::from_secs(10);

/// Stall detection: fails when nothing progressed for `STALL`.
pub(super) struct Watchdog {
    last: Instant,
}

impl Watchdog {
    pub(super) fn new() -> Watchdog {
        Watchdog {
            last: Instant::now(),
        }
    }
    pub(super) fn progress(&mut self) {
        self.last = Instant::now();
    }
    pub(super) fn check(&self, what: impl FnOnce() -> String) -> CliResult<()> {
        if self.last.elapsed() > STALL {
            return runtime(format!(
                "no progress for {} s: {} (peer gone, or packets lost)",
                STALL.as_secs(),
                what()
            ));
        }
        Ok(())
    }
}

pub(super) fn wc_ok(wc: &Wc, what: &str) -> CliResult<()> {
    if wc.status != WcStatus::Success {
        return runtime(format!(
            "{what} completion with error {:?} (QP {:#06x}, iteration {})",
            wc.status,
            wc.qp_num,
            wc.wr_id & 0xffff_ffff
        ));
    }
    Ok(())
}

/// Spin politely: the device's threads need the CPU too on small machines.
pub(super) fn relax(spins: &mut u32) {
    *spins += 1;
    if *spins % 64 == 0 {
        std::thread::yield_now();
    } else {
        std::hint::spin_loop();
    }
}
