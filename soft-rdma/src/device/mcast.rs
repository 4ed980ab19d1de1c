//! Multicast groups (rxe's `rxe_mcast.c`, `rxe_rcv_mcast_pkt`): the UD QPs
//! of the device attached to each multicast GID, and a multicast packet's
//! fan-out to them.
//!
//! A RoCEv2 packet carries no GRH: its destination GID is the IP
//! destination. A UDP link reports it (`RecvBatch::group`: the group socket
//! it came from); where the link cannot tell (a test hub, datagrams a fault
//! layer held back), a packet to the multicast QPN is taken to be for the
//! joined group whose ICRC it verifies with (the ICRC covers the
//! destination address). One that verifies with none is counted as an ICRC
//! error, one sent to the device's own address as for no QP (rxe finds no
//! group for it either).
#![forbid(unsafe_code)]

use super::DeviceInner;
use crate::limits::{MAX_MCAST_GRP, MAX_MCAST_QP_ATTACH, MAX_TOT_MCAST_QP_ATTACH};
use crate::log::log;
use crate::qp::{QpShared, TxQueue};
use crate::resources::counters::bump;
use crate::sync::{Level, OrderedMutex};
use crate::transport::{RecvBatch, ROCE_PORT};
use crate::types::{Errno, Gid, QpType, Result};
use crate::wire::icrc::{self, IcrcContext};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// The destination QPN of a multicast packet (`IB_MULTICAST_QPN`).
pub const MULTICAST_QPN: u32 = 0xff_ffff;

/// Whether `gid` is a multicast GID (ib_core's `rdma_is_multicast_addr`:
/// an IPv4-mapped `224.0.0.0/4` address or `ff00::/8`).
pub fn is_multicast(gid: Gid) -> bool {
    gid.to_ip().is_multicast()
}

/// Group → attached QPNs.
pub(crate) struct Groups {
    table: OrderedMutex<Table>,
}

#[derive(Default)]
struct Table {
    groups: HashMap<Gid, Vec<u32>>,
    /// Attachments over all groups.
    attached: usize,
}

impl Groups {
    pub(crate) fn new() -> Groups {
        Groups {
            table: OrderedMutex::new(Level::McastGroups, Table::default()),
        }
    }
}

impl DeviceInner {
    /// `ibv_attach_mcast`: EINVAL for a QP other than UD or a GID that is
    /// not multicast (ib_core's checks); ENOMEM past the group and
    /// attachment limits (rxe's); attaching again is a success. The first
    /// attachment to a group joins it on the link.
    ///
    /// Locks: none held; takes the groups lock (the link's are leaves).
    pub(crate) fn attach_mcast(&self, qp: &QpShared, gid: Gid) -> Result<()> {
        if qp.qp_type() != QpType::Ud || !is_multicast(gid) {
            return Err(Errno::EINVAL);
        }
        let mut t = self.mcast.table.lock();
        let t = &mut *t;
        match t.groups.get(&gid) {
            Some(m) if m.contains(&qp.qpn()) => return Ok(()),
            Some(m) if m.len() >= MAX_MCAST_QP_ATTACH => return Err(Errno::ENOMEM),
            None if t.groups.len() >= MAX_MCAST_GRP => return Err(Errno::ENOMEM),
            _ if t.attached >= MAX_TOT_MCAST_QP_ATTACH => return Err(Errno::ENOMEM),
            Some(_) => {}
            None => {
                if let Err(e) = self.link.join(gid.to_ip()) {
                    log!(Warn, "cannot join multicast group {}: {e}", gid.to_ip());
                    return Err(Errno(e.raw_os_error().unwrap_or(libc::EINVAL)));
                }
            }
        }
        t.groups.entry(gid).or_default().push(qp.qpn());
        t.attached += 1;
        Ok(())
    }

    /// `ibv_detach_mcast`: EINVAL as for attach, and for a group this QP is
    /// not attached to (rxe). The last detachment leaves the group.
    ///
    /// Locks: none held; takes the groups lock.
    pub(crate) fn detach_mcast(&self, qp: &QpShared, gid: Gid) -> Result<()> {
        if qp.qp_type() != QpType::Ud || !is_multicast(gid) {
            return Err(Errno::EINVAL);
        }
        self.detach(qp.qpn(), |g| g == gid)
            .then_some(())
            .ok_or(Errno::EINVAL)
    }

    /// A destroyed QP leaves every group (as the kernel's uverbs does).
    /// Locks: none held; takes the groups lock.
    pub(crate) fn detach_all_mcast(&self, qpn: u32) {
        self.detach(qpn, |_| true);
    }

    /// Detach `qpn` from the groups `which` selects; whether it was in any.
    fn detach(&self, qpn: u32, which: impl Fn(Gid) -> bool) -> bool {
        let mut t = self.mcast.table.lock();
        let t = &mut *t;
        let mut found = false;
        let link = &self.link;
        t.groups.retain(|&g, m| {
            if !which(g) {
                return true;
            }
            let before = m.len();
            m.retain(|&q| q != qpn);
            if m.len() < before {
                found = true;
                t.attached -= 1;
            }
            if m.is_empty() {
                link.leave(g.to_ip());
            }
            !m.is_empty()
        });
        found
    }

    /// The group a multicast packet from `from` was sent to (`known`, if
    /// the link said; see the module comment) and its QPs; None after
    /// counting the drop.
    /// Locks: under the receive lock; takes the groups lock.
    fn mcast_destination(
        &self,
        from: SocketAddr,
        bytes: &[u8],
        known: Option<IpAddr>,
    ) -> Option<(Gid, Vec<u32>)> {
        let t = self.mcast.table.lock();
        let verifies = |g: &Gid| {
            let to = SocketAddr::new(g.to_ip(), ROCE_PORT);
            icrc::verify(&IcrcContext::between(from, to), bytes)
        };
        // Known: one check, however many groups (a flood costs no more).
        let (found, no_group) = match known {
            Some(ip) => match t.groups.get_key_value(&Gid::from_ip(ip)) {
                Some(e) => (Some(e).filter(|(g, _)| verifies(g)), false),
                // Left since it was queued.
                None => (None, true),
            },
            None => (t.groups.iter().find(|(g, _)| verifies(g)), false),
        };
        if let Some((g, m)) = found {
            return Some((*g, m.clone()));
        }
        drop(t);
        let unicast = known.is_none() && {
            let to = IcrcContext::between(from, self.local);
            icrc::verify(&to, bytes)
        };
        if no_group || unicast {
            bump(&self.stats.unknown_qp);
        } else {
            bump(&self.stats.icrc_errors);
        }
        None
    }
}

/// Handle datagrams to the multicast QPN (`rx::handle_run`'s counterpart):
/// each goes to every QP attached to its group, with the group as the
/// GRH's destination GID; each QP checks it as any UD datagram (state,
/// Q_Key, a posted receive). Anything malformed is dropped and counted.
///
/// Locks: under the receive lock; the groups lock, released, then each
/// QP's lock in turn.
pub(super) fn handle_run(
    dev: &DeviceInner,
    batch: &RecvBatch,
    run: std::ops::Range<usize>,
    tx: &mut TxQueue,
    acks: &mut Vec<Arc<QpShared>>,
) {
    for k in run {
        let (from, bytes) = batch.get(k);
        let Some((repr, payload)) = super::rx::parse_counted(dev, from, bytes) else {
            continue;
        };
        // Verified even if `intact`: the ICRC is what names the group.
        let Some((group, qpns)) = dev.mcast_destination(from, bytes, batch.group(k)) else {
            log!(
                Debug,
                "dropped {repr} from {from}: no multicast group of ours"
            );
            continue;
        };
        let mut ctx = dev.ctx();
        ctx.gid = group;
        for qp in qpns.iter().filter_map(|&n| dev.qp(n)) {
            if repr.bth.opcode.transport() != qp.transport() {
                bump(&dev.stats.wrong_transport);
                continue;
            }
            let mut q = qp.lock();
            q.receive(&ctx, from, &repr, &bytes[payload.clone()], tx);
            tx.flush(&ctx);
            let pending = q.batch_pending();
            drop(q);
            if pending && !acks.iter().any(|a| Arc::ptr_eq(a, &qp)) {
                acks.push(qp.clone());
            }
        }
    }
}
