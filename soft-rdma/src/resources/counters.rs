//! The device's live counters: relaxed atomics the QPs and the device
//! increment where the event happens. `device::stats` snapshots them (with
//! the link's, the ODP regions' and the fault injector's) into `DeviceStats`.

use crate::wire::NakCode;
use std::sync::atomic::{AtomicU64, Ordering};

/// Device-wide counters, incremented where the event happens.
#[derive(Debug, Default)]
pub struct Stats {
    pub sent_pkts: AtomicU64,
    pub rcvd_pkts: AtomicU64,
    pub rcvd_inline: AtomicU64,
    pub rx_wakeups: AtomicU64,
    pub posts_held: AtomicU64,
    pub flight_limited: AtomicU64,
    pub retransmits: AtomicU64,
    pub duplicate_requests: AtomicU64,
    pub out_of_sequence: AtomicU64,
    pub reorder_held: AtomicU64,
    pub reorder_run: AtomicU64,
    pub loss_probes: AtomicU64,
    pub icrc_errors: AtomicU64,
    pub parse_errors: AtomicU64,
    pub unknown_qp: AtomicU64,
    pub wrong_transport: AtomicU64,
    pub wrong_source: AtomicU64,
    pub qkey_violations: AtomicU64,
    pub uc_dropped: AtomicU64,
    pub nak_sent_seq_err: AtomicU64,
    pub nak_sent_inv_req: AtomicU64,
    pub nak_sent_rem_access: AtomicU64,
    pub nak_sent_rem_op: AtomicU64,
    pub rnr_naks_sent: AtomicU64,
    pub nak_rcvd_seq_err: AtomicU64,
    pub nak_rcvd_inv_req: AtomicU64,
    pub nak_rcvd_rem_access: AtomicU64,
    pub nak_rcvd_rem_op: AtomicU64,
    pub rnr_naks_rcvd: AtomicU64,
    pub rnr_retries: AtomicU64,
    pub rnr_retry_exceeded: AtomicU64,
    pub retry_exceeded: AtomicU64,
    pub local_ack_timeouts: AtomicU64,
    pub bad_responses: AtomicU64,
    pub xrc_bad_srqn: AtomicU64,
    /// ODP counters of MRs already deregistered (live ones are summed).
    pub(crate) odp_retired: [AtomicU64; ODP_COUNTERS],
}

/// How many per-MR ODP counters the device sums ([`odp_values`]).
pub(crate) const ODP_COUNTERS: usize = 7;

/// An MR's ODP counters in the order `DeviceStats` shows them.
pub(crate) fn odp_values(c: &odp::umem::CounterSnapshot) -> [u64; ODP_COUNTERS] {
    [
        c.page_faults,
        c.pages_faulted,
        c.invalidations,
        c.pages_invalidated,
        c.prefetches,
        c.pages_prefetched,
        c.orphan_accesses,
    ]
}

pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Stats {
    /// A NAK (not RNR) left for the peer.
    pub(crate) fn nak_sent(&self, code: NakCode) {
        bump(match code {
            NakCode::PsnSequenceError => &self.nak_sent_seq_err,
            NakCode::InvalidRequest | NakCode::InvalidRdRequest => &self.nak_sent_inv_req,
            NakCode::RemoteAccessError => &self.nak_sent_rem_access,
            NakCode::RemoteOperationalError => &self.nak_sent_rem_op,
        })
    }

    /// A NAK (not RNR) arrived from the peer.
    pub(crate) fn nak_received(&self, code: NakCode) {
        bump(match code {
            NakCode::PsnSequenceError => &self.nak_rcvd_seq_err,
            NakCode::InvalidRequest | NakCode::InvalidRdRequest => &self.nak_rcvd_inv_req,
            NakCode::RemoteAccessError => &self.nak_rcvd_rem_access,
            NakCode::RemoteOperationalError => &self.nak_rcvd_rem_op,
        })
    }

    /// Remember the counters of an MR being deregistered.
    pub(crate) fn retire_odp(&self, c: odp::umem::CounterSnapshot) {
        for (a, v) in self.odp_retired.iter().zip(odp_values(&c)) {
            if v != 0 {
                a.fetch_add(v, Ordering::Relaxed);
            }
        }
    }
}
