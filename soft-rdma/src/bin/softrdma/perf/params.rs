//! The test's parameters as both sides agreed them: the sizes, the MTU, and
//! the buffer geometry (slots per buffer, which slot an iteration uses).

use crate::args::{PerfArgs, Verb};
use crate::{usage, CliResult};
use soft_rdma::verbs::{Mtu, QpType};

/// Room for the GRH a UD receive gets ahead of the message.
pub(super) const UD_GRH: usize = 40;

/// What a side negotiated: the shared parameters.
pub(super) struct Plan {
    pub(super) a: PerfArgs,
    pub(super) mtu: Mtu,
    pub(super) sizes: Vec<u64>,
    pub(super) lay: Layout,
}

/// Choose the sizes for the agreed MTU (perftest: UD messages fit one MTU).
/// `warn`: say so when the size is changed to the MTU.
pub(super) fn plan(a: PerfArgs, mtu: Mtu, warn: bool) -> CliResult<Plan> {
    let mut a = a;
    if a.conn == QpType::Ud {
        let top = mtu.bytes() as u64;
        if a.size.is_none() && !a.all && !a.test.lat {
            if warn {
                eprintln!(" Max msg size in UD is MTU {top}; changing to MTU");
            }
            a.size = Some(top);
        } else if let Some(s) = a.size {
            if s > top {
                return usage(format!("UD messages must fit one MTU: -s {s} is more than the MTU {top}; use -s {top} or less"));
            }
        }
    }
    let sizes = a.sizes(mtu.bytes() as u64);
    let lay = Layout::new(&a, *sizes.iter().max().unwrap_or(&8));
    Ok(Plan { a, mtu, sizes, lay })
}

/// Buffer geometry, the same on both sides (derived from the shared args).
/// Each buffer is cut into `k` slots; iteration `i` uses slot `i % k`
/// (perftest's cycle buffer).
#[derive(Clone, Copy)]
pub(super) struct Layout {
    pub(super) buf_len: usize,
    pub(super) depth_cap: usize,
    ud: bool,
    /// `--buffer`: every slot of the buffer is used in turn.
    walk: bool,
}

impl Layout {
    fn new(a: &PerfArgs, max_size: u64) -> Layout {
        let ud = a.conn == QpType::Ud;
        let depth_cap = if a.test.lat {
            16
        } else if a.test.verb == Verb::Send {
            a.tx_depth.max(a.rx_depth) as usize
        } else {
            a.tx_depth as usize
        };
        let mut l = Layout {
            buf_len: 0,
            depth_cap,
            ud,
            walk: a.buffer.is_some(),
        };
        let s = l.slot(max_size);
        l.buf_len = match a.buffer {
            Some(b) => (b as usize).max(s),
            None => (depth_cap * s).min((16 << 20).max(2 * s)),
        }
        .next_multiple_of(4096);
        l
    }

    /// A slot's length for messages of `size` (cache-line multiples).
    pub(super) fn slot(&self, size: u64) -> usize {
        (size as usize + if self.ud { UD_GRH } else { 0 })
            .max(8)
            .next_multiple_of(64)
    }

    /// Slots for `size`.
    pub(super) fn k(&self, size: u64) -> usize {
        let k = self.buf_len / self.slot(size);
        if self.walk {
            k.max(1)
        } else {
            k.min(self.depth_cap).max(1)
        }
    }
}

/// The `i`-th iteration's remote read slot (varies per iteration).
pub(super) fn read_slot(i: u64, k: usize) -> usize {
    ((i + i / k as u64) % k as u64) as usize
}

/// The last iteration `< iters` that used slot `s` of `k`.
pub(super) fn last_in_slot(s: usize, k: usize, iters: u64) -> Option<u64> {
    let s = s as u64;
    (s < iters).then(|| s + (iters - 1 - s) / k as u64 * k as u64)
}
