//! Building outgoing packets (headers, payload, pad, ICRC in one buffer) and
//! moving message data between packets and scatter/gather lists.

use crate::transport::{Outgoing, ROCE_PORT};
use crate::verbs::device::DeviceInner;
use crate::verbs::mr::{MrShared, MrWindow};
use crate::verbs::{Access, Sge, WcStatus};
use crate::wire::icrc::{self, IcrcContext};
use crate::wire::PacketRepr;
use std::net::SocketAddr;
use std::sync::Arc;

/// Packets built while a QP lock is held, sent in one batch. They are laid
/// out back to back in one byte arena that is reused: building a packet
/// allocates nothing once the arena has grown to the working size.
#[derive(Default)]
pub(crate) struct TxQueue {
    /// The arena. Its length is the most it ever held (bytes past `used`
    /// are stale packets): every byte of a packet is written when it is
    /// built, so reusing the arena needs no zeroing pass.
    bytes: Vec<u8>,
    used: usize,
    /// (peer, start, length) of each packet in `bytes`.
    pkts: Vec<(SocketAddr, usize, usize)>,
}

thread_local! {
    static SPARE: std::cell::Cell<Option<TxQueue>> = const { std::cell::Cell::new(None) };
}

impl TxQueue {
    /// Run `f` with this thread's queue (kept between calls, so its arena is
    /// reused), then send what it built.
    pub(crate) fn with<R>(dev: &DeviceInner, f: impl FnOnce(&mut TxQueue) -> R) -> R {
        let mut tx = SPARE.with(|s| s.take()).unwrap_or_default();
        let r = f(&mut tx);
        tx.flush(dev);
        SPARE.with(|s| s.set(Some(tx)));
        r
    }

    /// Build one packet to `peer`: `fill` writes the payload.
    pub(crate) fn push<E>(
        &mut self,
        dev: &DeviceInner,
        peer: SocketAddr,
        repr: &PacketRepr,
        fill: impl FnOnce(&mut [u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        self.build(dev.local, peer, repr, fill)
    }

    fn build<E>(
        &mut self,
        local: SocketAddr,
        peer: SocketAddr,
        repr: &PacketRepr,
        fill: impl FnOnce(&mut [u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let (start, len) = (self.used, repr.buffer_len());
        self.grow_to(start + len);
        let buf = &mut self.bytes[start..start + len];
        // Headers and pad here, the payload by `fill` (all of it, or an
        // error), the ICRC by `seal`: no stale byte survives.
        repr.emit(buf).expect("engine builds only legal packets");
        let h = repr.header_len();
        fill(&mut buf[h..h + repr.payload_len])?;
        icrc::seal(&icrc_ctx(local, peer), buf);
        self.used = start + len;
        self.pkts.push((peer, start, len));
        Ok(())
    }

    /// Room for `n` more packets of up to `payload` bytes each, so that
    /// building them allocates nothing: while a [`Payload`] window is open
    /// nothing may unmap memory, and growing the arena may.
    pub(crate) fn reserve(&mut self, n: usize, payload: usize) {
        self.grow_to(self.used + n * (payload + MAX_OVERHEAD));
        self.pkts.reserve(n);
    }

    /// Make the arena at least `need` bytes long. Only growth past its
    /// high-water mark is zeroed, so this is rare once it reached the
    /// working size.
    fn grow_to(&mut self, need: usize) {
        if self.bytes.len() < need {
            self.bytes.resize(need, 0);
        }
    }

    /// Send everything queued, up to 64 datagrams a system call.
    pub(crate) fn flush(&mut self, dev: &DeviceInner) {
        if self.pkts.is_empty() {
            return;
        }
        const BATCH: usize = 64;
        let none = Outgoing {
            peer: SocketAddr::from(([0, 0, 0, 0], 0)),
            data: &[],
        };
        let mut batch = [none; BATCH];
        for chunk in self.pkts.chunks(BATCH) {
            for (slot, &(peer, start, len)) in batch.iter_mut().zip(chunk) {
                *slot = Outgoing {
                    peer,
                    data: &self.bytes[start..start + len],
                };
            }
            let _ = dev.link.send(&batch[..chunk.len()]);
        }
        dev.stats
            .sent_pkts
            .fetch_add(self.pkts.len() as u64, std::sync::atomic::Ordering::Relaxed);
        self.clear();
    }

    fn clear(&mut self) {
        self.pkts.clear();
        self.used = 0;
    }

    #[cfg(test)]
    fn packets(&self) -> impl Iterator<Item = &[u8]> {
        self.pkts
            .iter()
            .map(|&(_, start, len)| &self.bytes[start..start + len])
    }
}

/// Most bytes a packet has besides its payload: BTH, the largest extension
/// header (atomic ETH), pad, ICRC.
const MAX_OVERHEAD: usize = crate::wire::BTH_LEN + 28 + 3 + crate::wire::ICRC_LEN;

/// Where the packets of one message take their payload from.
pub(crate) enum Payload<'a> {
    /// Data carried in the WQE (inline sends).
    Inline(&'a [u8]),
    /// A single SGE, opened once as a window onto its MR: for an ODP MR one
    /// guard for all the packets built with it, not one per packet. `base`
    /// is the address of message offset 0.
    Window { window: MrWindow<'a>, base: u64 },
    /// Anything else, one [`gather`] a packet.
    Gather { sges: &'a [ResolvedSge], pd: u32 },
}

impl<'a> Payload<'a> {
    /// Open the gather list for message bytes `[from, to)`. If the window
    /// cannot be opened (bad key, unmapped ODP memory), each packet gathers
    /// on its own and reports the error as before.
    pub(crate) fn open(sges: &'a [ResolvedSge], pd: u32, from: u64, to: u64) -> Payload<'a> {
        if let [ResolvedSge { sge, mr: Some(mr) }] = sges {
            let va = sge.addr.checked_add(from);
            if let Some(va) = va.filter(|_| from <= to && to <= u64::from(sge.length)) {
                let len = to - from;
                if mr.check(pd, va, len, Access::default()).is_ok() {
                    if let Ok(window) = mr.window(va, len, false) {
                        return Payload::Window {
                            window,
                            base: sge.addr,
                        };
                    }
                }
            }
        }
        Payload::Gather { sges, pd }
    }

    /// Copy message bytes `[off, off+out.len())` into `out`.
    pub(crate) fn fill(&mut self, off: u64, out: &mut [u8]) -> Result<(), WcStatus> {
        match self {
            Payload::Inline(d) => {
                out.copy_from_slice(&d[off as usize..off as usize + out.len()]);
                Ok(())
            }
            Payload::Window { window, base } => window
                .window
                .read(*base + off, out)
                .map_err(|_| WcStatus::LocProtErr),
            Payload::Gather { sges, pd } => gather(sges, *pd, off, out),
        }
    }
}

/// The ICRC covers the IP/UDP headers, rebuilt from the two endpoints.
pub(crate) fn icrc_ctx(from: SocketAddr, to: SocketAddr) -> IcrcContext {
    IcrcContext {
        src: from.ip(),
        dst: to.ip(),
        src_port: from.port(),
        dst_port: to.port(),
    }
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
    sges.iter()
        .map(|s| ResolvedSge {
            sge: *s,
            mr: dev.mr(s.lkey),
        })
        .collect()
}

pub(crate) fn total_len(sges: &[ResolvedSge]) -> u64 {
    sges.iter().map(|s| u64::from(s.sge.length)).sum()
}

/// Visit the pieces of `[offset, offset+len)` of the gather list: (mr, va, piece length, position in the run).
fn walk(
    sges: &[ResolvedSge],
    pd: u32,
    mut offset: u64,
    len: usize,
    need: Access,
    mut f: impl FnMut(&MrShared, u64, usize, usize) -> Result<(), WcStatus>,
) -> Result<(), WcStatus> {
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
        mr.check(pd, va, n as u64, need)
            .map_err(|_| WcStatus::LocProtErr)?;
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
pub(crate) fn gather(
    sges: &[ResolvedSge],
    pd: u32,
    offset: u64,
    out: &mut [u8],
) -> Result<(), WcStatus> {
    let len = out.len();
    walk(sges, pd, offset, len, Access::default(), |mr, va, n, at| {
        mr.read(va, &mut out[at..at + n])
            .map_err(|_| WcStatus::LocProtErr)
    })
}

/// Copy `data` into local memory at message offset `offset`.
pub(crate) fn scatter(
    sges: &[ResolvedSge],
    pd: u32,
    offset: u64,
    data: &[u8],
) -> Result<(), WcStatus> {
    walk(
        sges,
        pd,
        offset,
        data.len(),
        Access::LOCAL_WRITE,
        |mr, va, n, at| {
            mr.write(va, &data[at..at + n])
                .map_err(|_| WcStatus::LocProtErr)
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::requester::bth;
    use crate::wire::{Aeth, Ext, Opcode, Reth, Syndrome, Transport};

    fn repr(op: crate::wire::Op, ext: Ext, payload_len: usize) -> PacketRepr {
        PacketRepr {
            bth: bth(
                Opcode::new(Transport::Rc, op).unwrap(),
                0x11,
                5,
                true,
                false,
            ),
            ext,
            payload_len,
        }
    }

    /// A reused arena holds the bytes of earlier packets: a packet built
    /// over them must come out exactly as one built in fresh zeroed memory.
    #[test]
    fn a_packet_built_over_stale_bytes_has_none_of_them() {
        use crate::wire::Op;
        let (local, peer) = (
            SocketAddr::from(([10, 0, 0, 1], ROCE_PORT)),
            SocketAddr::from(([10, 0, 0, 2], ROCE_PORT)),
        );
        let reth = Reth {
            va: 0x1000,
            rkey: 7,
            len: 4096,
        };
        let ack = Ext::Aeth(Aeth {
            syndrome: Syndrome::Ack { credits: 0x1f },
            msn: 3,
        });
        let small = [
            (repr(Op::SendOnly, Ext::None, 3), 0x5a), // one pad byte
            (repr(Op::Ack, ack, 0), 0),
            (repr(Op::WriteFirst, Ext::Reth(reth), 1021), 0x33),
        ];
        let mut fresh = TxQueue::default();
        for (r, b) in &small {
            fresh
                .build(local, peer, r, |p| {
                    p.fill(*b);
                    Ok::<_, ()>(())
                })
                .unwrap();
        }
        let mut reused = TxQueue::default();
        let big = repr(Op::WriteOnly, Ext::Reth(reth), 4096);
        for _ in 0..3 {
            reused
                .build(local, peer, &big, |p| {
                    p.fill(0xff);
                    Ok::<_, ()>(())
                })
                .unwrap();
        }
        reused.clear();
        // A fill that fails leaves nothing behind either.
        assert_eq!(reused.build(local, peer, &big, |_| Err(())), Err(()));
        for (r, b) in &small {
            reused
                .build(local, peer, r, |p| {
                    p.fill(*b);
                    Ok::<_, ()>(())
                })
                .unwrap();
        }
        let (a, b): (Vec<_>, Vec<_>) = (fresh.packets().collect(), reused.packets().collect());
        assert_eq!(a.len(), 3);
        assert_eq!(a, b);
        for p in b {
            assert!(crate::wire::icrc::verify(&icrc_ctx(local, peer), p));
        }
    }
}
