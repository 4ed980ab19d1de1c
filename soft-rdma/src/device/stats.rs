//! The counters a user reads: [`DeviceStats`], a snapshot of the live
//! [`Stats`] plus the link's, the ODP regions' and the fault injector's
//! (from `Device::stats`, printed by `softrdma perf --stats`, published for
//! `softrdma stats`) — the figures rxe and mlx5 expose as hardware counters.

use super::DeviceInner;
use crate::resources::counters::{odp_values, ODP_COUNTERS};
use crate::resources::mr::MrShared;
use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! device_stats {
    ($($name:ident: $desc:literal,)*) => {
        /// A snapshot of every counter of a device (`Device::stats`).
        /// `Display` prints a counters table.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct DeviceStats {
            $(#[doc = $desc] pub $name: u64,)*
        }

        impl DeviceStats {
            /// The counters' names, in table order.
            pub const NAMES: &'static [&'static str] = &[$(stringify!($name)),*];
            /// What each counter counts, in table order.
            pub const DESCRIPTIONS: &'static [&'static str] = &[$($desc),*];
            /// How many counters there are.
            pub const LEN: usize = Self::NAMES.len();

            /// The values, in table order.
            pub fn values(&self) -> [u64; Self::LEN] {
                [$(self.$name),*]
            }
        }
    };
}

device_stats! {
    sent_pkts: "packets sent (handed to the link)",
    rcvd_pkts: "packets received (before any check)",
    rcvd_inline: "of which received by an application thread polling a CQ",
    rx_wakeups: "receive-thread wake-ups",
    posts_held: "posts whose transmission waited for more (doorbell batching)",
    flight_limited: "RC sends stopped by the device's budget of bytes in flight",
    retransmits: "go-back-N retransmissions (timeout or sequence NAK)",
    duplicate_requests: "requests answered as duplicates",
    out_of_sequence: "requests past the expected PSN (held or dropped)",
    reorder_held: "of which held until the gap before them filled (RC)",
    reorder_run: "held requests run once the gap filled",
    loss_probes: "oldest unacknowledged packet resent early (loss probe; no retry counted)",
    icrc_errors: "packets dropped: bad ICRC",
    parse_errors: "packets dropped: malformed headers",
    unknown_qp: "packets dropped: no such QP",
    wrong_transport: "packets dropped: opcode of another transport than the QP's",
    wrong_source: "packets dropped: RC/UC packet not from the QP's peer address",
    qkey_violations: "UD packets dropped: wrong Q_Key",
    uc_dropped: "UC requests dropped: invalid or not permitted (UC has no NAK)",
    nak_sent_seq_err: "NAKs sent: PSN sequence error",
    nak_sent_inv_req: "NAKs sent: invalid request",
    nak_sent_rem_access: "NAKs sent: remote access error",
    nak_sent_rem_op: "NAKs sent: remote operational error",
    rnr_nak_sent: "RNR NAKs sent (no receive posted)",
    nak_rcvd_seq_err: "NAKs received: PSN sequence error",
    nak_rcvd_inv_req: "NAKs received: invalid request",
    nak_rcvd_rem_access: "NAKs received: remote access error",
    nak_rcvd_rem_op: "NAKs received: remote operational error",
    rnr_nak_rcvd: "RNR NAKs received",
    rnr_retries: "RNR waits followed by a retry",
    rnr_retry_exceeded: "RNR retry count exceeded (WR in error)",
    retry_exceeded: "transport retry count exceeded (WR in error)",
    local_ack_timeouts: "local ACK timeouts (retransmission timer fired)",
    bad_responses: "READ responses of the wrong opcode or length (READ in error)",
    xrc_bad_srqn: "XRC requests NAKed: the XRCETH names no XRC SRQ of the target's domain",
    odp_page_faults: "ODP fault operations of device accesses that committed pages",
    odp_pages_faulted: "ODP pages faulted in by device accesses",
    odp_invalidations: "ODP invalidations that reached an MR",
    odp_pages_invalidated: "ODP pages invalidated",
    odp_prefetches: "ODP prefetches (ibv_advise_mr)",
    odp_pages_prefetched: "ODP pages prefetches made present",
    odp_orphan_accesses: "pinned MR accesses to pages the application unmapped (dropped / zeros)",
    odp_mm_events: "address-space events seen (unmap, remove, remap; per process)",
    link_sent: "datagrams the link sent",
    link_received: "datagrams the link received",
    link_send_dropped: "datagrams the link could not send",
    link_recv_dropped: "datagrams dropped: receive queue full (loopback)",
    link_recv_truncated: "datagrams dropped: too large",
    link_same_host_sent: "of link_sent: through a same-host ring, not the kernel",
    link_same_host_received: "of link_received: through a same-host ring",
    link_same_host_refused: "same-host offers and rings refused or dropped (all reasons)",
    link_same_host_unproven: "of which: sender did not prove its UDP endpoint (forged, squatter)",
    link_same_host_other_uid: "of which: offered by a process of another uid",
    link_same_host_over_limit: "of which: over the limit of rings",
    link_same_host_squatted: "1: another socket held this device's same-host name (stays on UDP)",
    link_port_fallback: "1: UDP 4791 was taken; bound to a fallback port",
    link_by_ref_sent: "of link_same_host_sent: payload left in our memory, read by the peer",
    link_by_ref_received: "of link_same_host_received: payload read from the sender's memory",
    link_by_ref_failed: "payloads by reference that could not be read (sender asked to carry them)",
    link_gso_sent: "UDP GSO datagrams sent (each several of link_sent)",
    link_send_calls: "sendmmsg calls that sent (packets per call: link_sent less same-host over this)",
    link_recv_calls: "recvmmsg calls that brought datagrams (packets per call: as for sends)",
    link_gso_refused: "1: the kernel refused UDP GSO; plain datagrams since",
    fault_dropped: "fault injection: dropped",
    fault_duplicated: "fault injection: duplicated",
    fault_reordered: "fault injection: reordered",
    fault_corrupted: "fault injection: corrupted",
    fault_delayed: "fault injection: delayed",
    fault_overflow: "fault injection: lost, delay line full",
}

impl DeviceStats {
    /// The counter called `name`.
    pub fn get(&self, name: &str) -> Option<u64> {
        let i = Self::NAMES.iter().position(|n| *n == name)?;
        Some(self.values()[i])
    }

    /// The description of the counter called `name`.
    pub fn describe(name: &str) -> Option<&'static str> {
        let i = Self::NAMES.iter().position(|n| *n == name)?;
        Some(Self::DESCRIPTIONS[i])
    }
}

/// One row of a counters table.
pub(crate) fn write_row(f: &mut impl std::fmt::Write, name: &str, value: u64) -> std::fmt::Result {
    writeln!(
        f,
        "  {name:<22} {value:>14}  {}",
        DeviceStats::describe(name).unwrap_or("")
    )
}

impl std::fmt::Display for DeviceStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (name, v) in Self::NAMES.iter().zip(self.values()) {
            write_row(f, name, v)?;
        }
        Ok(())
    }
}

/// Every counter of `dev` now.
pub(crate) fn snapshot(dev: &DeviceInner) -> DeviceStats {
    let s = &dev.stats;
    let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let mut odp: [u64; ODP_COUNTERS] = std::array::from_fn(|i| g(&s.odp_retired[i]));
    dev.mrs.for_each(|mr| {
        for (a, v) in odp.iter_mut().zip(odp_values(&mr.odp_counters())) {
            *a += v;
        }
    });
    let mm = dev.mm.stats();
    let link = dev.link.stats();
    let fault = dev.link.fault_stats().unwrap_or_default();
    DeviceStats {
        sent_pkts: g(&s.sent_pkts),
        rcvd_pkts: g(&s.rcvd_pkts),
        rcvd_inline: g(&s.rcvd_inline),
        rx_wakeups: g(&s.rx_wakeups),
        posts_held: g(&s.posts_held),
        flight_limited: g(&s.flight_limited),
        retransmits: g(&s.retransmits),
        duplicate_requests: g(&s.duplicate_requests),
        out_of_sequence: g(&s.out_of_sequence),
        reorder_held: g(&s.reorder_held),
        reorder_run: g(&s.reorder_run),
        loss_probes: g(&s.loss_probes),
        icrc_errors: g(&s.icrc_errors),
        parse_errors: g(&s.parse_errors),
        unknown_qp: g(&s.unknown_qp),
        wrong_transport: g(&s.wrong_transport),
        wrong_source: g(&s.wrong_source),
        qkey_violations: g(&s.qkey_violations),
        uc_dropped: g(&s.uc_dropped),
        nak_sent_seq_err: g(&s.nak_sent_seq_err),
        nak_sent_inv_req: g(&s.nak_sent_inv_req),
        nak_sent_rem_access: g(&s.nak_sent_rem_access),
        nak_sent_rem_op: g(&s.nak_sent_rem_op),
        rnr_nak_sent: g(&s.rnr_naks_sent),
        nak_rcvd_seq_err: g(&s.nak_rcvd_seq_err),
        nak_rcvd_inv_req: g(&s.nak_rcvd_inv_req),
        nak_rcvd_rem_access: g(&s.nak_rcvd_rem_access),
        nak_rcvd_rem_op: g(&s.nak_rcvd_rem_op),
        rnr_nak_rcvd: g(&s.rnr_naks_rcvd),
        rnr_retries: g(&s.rnr_retries),
        rnr_retry_exceeded: g(&s.rnr_retry_exceeded),
        retry_exceeded: g(&s.retry_exceeded),
        local_ack_timeouts: g(&s.local_ack_timeouts),
        bad_responses: g(&s.bad_responses),
        xrc_bad_srqn: g(&s.xrc_bad_srqn),
        odp_page_faults: odp[0],
        odp_pages_faulted: odp[1],
        odp_invalidations: odp[2],
        odp_pages_invalidated: odp[3],
        odp_prefetches: odp[4],
        odp_pages_prefetched: odp[5],
        odp_orphan_accesses: odp[6],
        odp_mm_events: g(&mm.unmap_events) + g(&mm.remove_events) + g(&mm.remap_events),
        link_sent: link.sent,
        link_received: link.received,
        link_send_dropped: link.send_dropped,
        link_recv_dropped: link.recv_dropped,
        link_recv_truncated: link.recv_truncated,
        link_same_host_sent: link.same_host_sent,
        link_same_host_received: link.same_host_received,
        link_same_host_refused: link.same_host_refused,
        link_same_host_unproven: link.same_host_unproven,
        link_same_host_other_uid: link.same_host_other_uid,
        link_same_host_over_limit: link.same_host_over_limit,
        link_same_host_squatted: link.same_host_squatted,
        link_port_fallback: link.port_fallback,
        link_by_ref_sent: link.by_ref_sent,
        link_by_ref_received: link.by_ref_received,
        link_by_ref_failed: link.by_ref_failed,
        link_gso_sent: link.gso_sent,
        link_send_calls: link.send_calls,
        link_recv_calls: link.recv_calls,
        link_gso_refused: link.gso_refused,
        fault_dropped: fault.dropped,
        fault_duplicated: fault.duplicated,
        fault_reordered: fault.reordered,
        fault_corrupted: fault.corrupted,
        fault_delayed: fault.delayed,
        fault_overflow: fault.overflow,
    }
}

/// One ODP MR's counters under mlx5's names and meanings (`rdma statistic
/// mr show`): pages and operations, faults and invalidations, and pages
/// `ibv_advise_mr` made present. A pinned MR has none (mlx5 gives none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MrStats {
    /// Pages the device faulted in (its own accesses, not prefetches).
    pub page_faults: u64,
    /// Fault operations that committed those pages.
    pub page_faults_handled: u64,
    /// Present pages invalidations cleared (`munmap`, `madvise`, `mremap`…).
    pub page_invalidations: u64,
    /// Invalidations that found pages present in the MR.
    pub page_invalidations_handled: u64,
    /// Pages prefetches (`ibv_advise_mr`) made present.
    pub page_prefetch: u64,
}

impl MrStats {
    /// The counters' names, in mlx5's order.
    pub const NAMES: [&'static str; 5] = [
        "page_faults",
        "page_faults_handled",
        "page_invalidations",
        "page_invalidations_handled",
        "page_prefetch",
    ];

    /// The values, in [`MrStats::NAMES`]' order.
    pub fn values(&self) -> [u64; 5] {
        [
            self.page_faults,
            self.page_faults_handled,
            self.page_invalidations,
            self.page_invalidations_handled,
            self.page_prefetch,
        ]
    }

    /// From [`MrStats::values`]' order.
    pub fn from_values(v: [u64; 5]) -> MrStats {
        MrStats {
            page_faults: v[0],
            page_faults_handled: v[1],
            page_invalidations: v[2],
            page_invalidations_handled: v[3],
            page_prefetch: v[4],
        }
    }

    /// An ODP MR's counters; `None` for a pinned MR.
    pub(crate) fn of(mr: &MrShared) -> Option<MrStats> {
        if matches!(mr.memory(), odp::Memory::Pinned(_)) {
            return None;
        }
        let c = mr.odp_counters();
        Some(MrStats {
            page_faults: c.pages_faulted,
            page_faults_handled: c.page_faults,
            page_invalidations: c.pages_invalidated,
            page_invalidations_handled: c.invalidations_of_present,
            page_prefetch: c.pages_prefetched,
        })
    }
}

/// The device's ODP MRs, by MR number (the key's 24-bit index, mlx5's
/// `mrn`), in number order: at most `max`, and how many there are.
pub(crate) fn mr_snapshot(dev: &DeviceInner, max: usize) -> (Vec<(u32, MrStats)>, usize) {
    let mut all = Vec::new();
    dev.mrs.for_each(|mr| {
        if let Some(s) = MrStats::of(mr) {
            all.push((mr.key() >> 8, s));
        }
    });
    all.sort_unstable_by_key(|m| m.0);
    let n = all.len();
    all.truncate(max);
    (all, n)
}
