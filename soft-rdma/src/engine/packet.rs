//! Building outgoing packets (headers, payload, pad, ICRC in one buffer) and
//! moving message data between packets and scatter/gather lists.

use crate::transport::{Outgoing, ROCE_PORT};
use crate::verbs::device::DeviceInner;
use crate::verbs::mr::MrShared;
use crate::verbs::{Access, Sge, WcStatus};
use crate::wire::icrc::{self, IcrcContext};
use crate::wire::PacketRepr;
use std::net::SocketAddr;
use std::sync::Arc;

/// Packets built while a QP lock is held, sent in one batch.
#[derive(Default)]
pub(crate) struct TxQueue {
    pkts: Vec<(SocketAddr, Vec<u8>)>,
}

impl TxQueue {
    /// Build one packet to `peer`: `fill` writes the payload.
    pub(crate) fn push<E>(&mut self, dev: &DeviceInner, peer: SocketAddr, repr: &PacketRepr, fill: impl FnOnce(&mut [u8]) -> Result<(), E>) -> Result<(), E> {
        let mut buf = vec![0u8; repr.buffer_len()];
        repr.emit(&mut buf).expect("engine builds only legal packets");
        let h = repr.header_len();
        fill(&mut buf[h..h + repr.payload_len])?;
        icrc::seal(&icrc_ctx(dev.local, peer), &mut buf);
        self.pkts.push((peer, buf));
        Ok(())
    }

    /// Send everything queued.
    pub(crate) fn flush(&mut self, dev: &DeviceInner) {
        if self.pkts.is_empty() {
            return;
        }
        let batch: Vec<Outgoing<'_>> = self.pkts.iter().map(|(peer, data)| Outgoing { peer: *peer, data }).collect();
        let _ = dev.link.send(&batch);
        dev.stats.sent_pkts.fetch_add(self.pkts.len() as u64, std::sync::atomic::Ordering::Relaxed);
        self.pkts.clear();
    }
}

/// The ICRC covers the IP/UDP headers, rebuilt from the two endpoints.
pub(crate) fn icrc_ctx(from: SocketAddr, to: SocketAddr) -> IcrcContext {
    IcrcContext { src: from.ip(), dst: to.ip(), src_port: from.port(), dst_port: to.port() }
}

/// The peer endpoint of a GID.
pub(crate) fn peer_of(gid: crate::verbs::Gid) -> SocketAddr {
    SocketAddr::new(gid.to_ip(), ROCE_PORT)
}

/// A scatter/gather entry with its MR resolved at post time (`None`: bad lkey).
#[derive(Clone)]
pub(crate) struct ResolvedSge {
    pub(crate) sge: Sge,
    pub(crate) mr: Option<Arc<MrShared>>,
}

pub(crate) fn resolve(dev: &DeviceInner, sges: &[Sge]) -> Vec<ResolvedSge> {
    sges.iter().map(|s| ResolvedSge { sge: *s, mr: dev.mr(s.lkey) }).collect()
}

pub(crate) fn total_len(sges: &[ResolvedSge]) -> u64 {
    sges.iter().map(|s| u64::from(s.sge.length)).sum()
}

/// Visit the pieces of `[offset, offset+len)` of the gather list: (mr, va, piece length, position in the run).
fn walk(sges: &[ResolvedSge], pd: u32, mut offset: u64, len: usize, need: Access, mut f: impl FnMut(&MrShared, u64, usize, usize) -> Result<(), WcStatus>) -> Result<(), WcStatus> {
    let mut done = 0usize;
    for s in sges {
        if done == len {
            break;
        }
        let sl = u64::from(s.sge.length);
        if offset >= sl {
            offset -= sl;
            continue;
        }
        let n = ((sl - offset) as usize).min(len - done);
        let mr = s.mr.as_deref().ok_or(WcStatus::LocProtErr)?;
        let va = s.sge.addr.checked_add(offset).ok_or(WcStatus::LocProtErr)?;
        mr.check(pd, va, n as u64, need).map_err(|_| WcStatus::LocProtErr)?;
        f(mr, va, n, done)?;
        done += n;
        offset = 0;
    }
    if done < len {
        return Err(WcStatus::LocLenErr);
    }
    Ok(())
}

/// Copy `[offset, offset+out.len())` of the message out of local memory.
pub(crate) fn gather(sges: &[ResolvedSge], pd: u32, offset: u64, out: &mut [u8]) -> Result<(), WcStatus> {
    let len = out.len();
    walk(sges, pd, offset, len, Access::default(), |mr, va, n, at| mr.read(va, &mut out[at..at + n]).map_err(|_| WcStatus::LocProtErr))
}

/// Copy `data` into local memory at message offset `offset`.
pub(crate) fn scatter(sges: &[ResolvedSge], pd: u32, offset: u64, data: &[u8]) -> Result<(), WcStatus> {
    walk(sges, pd, offset, data.len(), Access::LOCAL_WRITE, |mr, va, n, at| mr.write(va, &data[at..at + n]).map_err(|_| WcStatus::LocProtErr))
}
