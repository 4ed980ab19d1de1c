//! The transmit queue: outgoing packets built (headers, payload, pad, ICRC
//! in one buffer) while a QP lock is held, then sent in one batch.

use super::Context;
use crate::resources::mr;
use crate::transport::{Packed, REF_LEN, ROCE_PORT};
use crate::types::Gid;
use crate::wire::icrc::{self, IcrcContext};
use crate::wire::{Bth, Opcode, PacketRepr};
use std::net::SocketAddr;

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
    /// Where each packet is in `bytes`, in order (each right after the one
    /// before: a link sends a run of them as one piece of memory).
    pkts: Vec<Packed>,
    /// Per packet of `pkts`: whether it goes by reference (its headers and
    /// a reference, [`Link::send_by_ref`](crate::transport::Link::send_by_ref)).
    by_ref: Vec<bool>,
}

thread_local! {
    static SPARE: std::cell::Cell<Option<TxQueue>> = const { std::cell::Cell::new(None) };
}

impl TxQueue {
    /// Run `f` with this thread's queue (kept between calls, so its arena is
    /// reused), then send what it built.
    pub(crate) fn with<R>(ctx: &Context<'_>, f: impl FnOnce(&mut TxQueue) -> R) -> R {
        let mut tx = SPARE.with(|s| s.take()).unwrap_or_default();
        let r = f(&mut tx);
        tx.flush(ctx);
        SPARE.with(|s| s.set(Some(tx)));
        r
    }

    /// Build one packet to `peer`: `fill` writes the payload.
    pub(crate) fn push<E>(
        &mut self,
        ctx: &Context<'_>,
        peer: SocketAddr,
        repr: &PacketRepr,
        fill: impl FnOnce(&mut [u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        self.build(ctx.local, peer, repr, fill)
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
        self.check_room();
        let buf = &mut self.bytes[start..start + len];
        // Headers and pad here, the payload by `fill` (all of it, or an
        // error), the ICRC by `seal`: no stale byte survives.
        repr.emit(buf).expect("QPs build only legal packets");
        let h = repr.header_len();
        fill(&mut buf[h..h + repr.payload_len])?;
        icrc::seal(&IcrcContext::between(local, peer), buf);
        self.used = start + len;
        self.queue(peer, start, len, false);
        Ok(())
    }

    /// Build one packet to `peer` whose payload stays at our address `va`:
    /// its headers and the reference, no payload copied and no ICRC
    /// computed (the link hands it to the peer itself: only when
    /// `ctx.link.by_ref(peer)` said so).
    pub(crate) fn push_by_ref(&mut self, peer: SocketAddr, repr: &PacketRepr, va: u64) {
        let (start, h) = (self.used, repr.header_len());
        let len = h + REF_LEN;
        self.grow_to(start + len);
        self.check_room();
        let buf = &mut self.bytes[start..start + len];
        let mut full = [0u8; 64 + crate::wire::ICRC_LEN];
        // The headers as `emit` writes them (into a payload-less copy).
        let stub = PacketRepr {
            payload_len: 0,
            ..*repr
        };
        stub.emit(&mut full[..stub.buffer_len()])
            .expect("QPs build only legal packets");
        // Pad 0: the receiver takes the pad from the reference's length.
        buf[..h].copy_from_slice(&full[..h]);
        buf[h..h + 8].copy_from_slice(&va.to_le_bytes());
        buf[h + 8..h + 12].copy_from_slice(&(repr.payload_len as u32).to_le_bytes());
        buf[h + 12..h + 16].fill(0);
        self.used = start + len;
        self.queue(peer, start, len, true);
    }

    /// The packet lists grow only outside a window.
    fn check_room(&self) {
        if self.pkts.len() == self.pkts.capacity() || self.by_ref.len() == self.by_ref.capacity() {
            no_window("the packet list grows");
        }
    }

    fn queue(&mut self, peer: SocketAddr, start: usize, len: usize, by_ref: bool) {
        self.pkts.push(Packed { peer, start, len });
        self.by_ref.push(by_ref);
    }

    /// Room for `n` more packets of up to `payload` bytes each, so that
    /// building them allocates nothing: call it before opening a window
    /// (while one is open nothing may unmap memory, and growing the arena
    /// may). What is queued leaves first if the arena would pass
    /// [`FLUSH_ABOVE`]: the arena holds at most that plus one reservation.
    pub(crate) fn reserve(&mut self, ctx: &Context<'_>, n: usize, payload: usize) {
        let need = n * (payload + MAX_OVERHEAD);
        if self.pkts.capacity() - self.pkts.len() < n
            || self.by_ref.capacity() - self.by_ref.len() < n
        {
            no_window("the packet list grows");
        }
        if self.used > 0 && self.used + need > FLUSH_ABOVE {
            self.flush(ctx);
        }
        self.grow_to(self.used + need);
        self.pkts.reserve(n);
        self.by_ref.reserve(n);
    }

    /// Make the arena at least `need` bytes long. Only growth past its
    /// high-water mark is zeroed, so this is rare once it reached the
    /// working size.
    fn grow_to(&mut self, need: usize) {
        if self.bytes.len() < need {
            no_window("the arena grows");
            self.bytes.resize(need, 0);
        }
    }

    /// Send everything queued: runs of packets in full in one
    /// [`Link::send_packed`](crate::transport::Link::send_packed) each (the
    /// link fills its system calls), runs by reference to one peer 64 a call.
    pub(crate) fn flush(&mut self, ctx: &Context<'_>) {
        if self.pkts.is_empty() {
            return;
        }
        // A link may allocate (the hub copies, the capture writes).
        no_window("the queue is sent");
        const BATCH: usize = 64;
        let mut at = 0;
        while at < self.pkts.len() {
            let by_ref = self.by_ref[at];
            let peer = self.pkts[at].peer;
            let n = self.pkts[at..]
                .iter()
                .zip(&self.by_ref[at..])
                .take_while(|&(p, &r)| r == by_ref && (!by_ref || p.peer == peer))
                .count();
            let n = if by_ref { n.min(BATCH) } else { n };
            let run = &self.pkts[at..at + n];
            at += n;
            if by_ref {
                let mut stubs: [&[u8]; BATCH] = [&[]; BATCH];
                for (slot, p) in stubs.iter_mut().zip(run) {
                    *slot = &self.bytes[p.start..p.start + p.len];
                }
                ctx.link.send_by_ref(peer, &stubs[..n]);
                continue;
            }
            let _ = ctx.link.send_packed(&mut self.bytes, run);
        }
        ctx.stats
            .sent_pkts
            .fetch_add(self.pkts.len() as u64, std::sync::atomic::Ordering::Relaxed);
        self.clear();
        if self.bytes.len() > KEEP_ABOVE {
            // After a spike (a large UC message): back to the working size.
            self.bytes.truncate(FLUSH_ABOVE);
            self.bytes.shrink_to_fit();
            self.pkts.shrink_to(FLUSH_ABOVE / 1024);
            self.by_ref.shrink_to(FLUSH_ABOVE / 1024);
        }
    }

    fn clear(&mut self) {
        self.pkts.clear();
        self.by_ref.clear();
        self.used = 0;
    }

    #[cfg(test)]
    fn packets(&self) -> impl Iterator<Item = &[u8]> {
        self.pkts
            .iter()
            .map(|p| &self.bytes[p.start..p.start + p.len])
    }
}

/// Growing, moving or freeing memory under an open window onto an MR may
/// make glibc `munmap`, trim or `madvise` memory an ODP MR covers: that
/// waits for the odp monitor, which waits for the window's guard — a
/// deadlock. So the queue is sized before a window opens (`reserve`), and
/// anything that allocates checks it (debug builds, every test run).
#[track_caller]
fn no_window(what: &str) {
    debug_assert!(
        !mr::window_open(),
        "{what} under an open MR window: reserve before opening it"
    );
}

/// Queued bytes beyond which `reserve` sends what is queued first. A
/// window of 128 packets of 4 KiB (an RC window, a READ response window:
/// 532 KiB) fits with room to spare, so a small packet already queued (an
/// ACK riding with a post) still leaves with the window that follows it.
const FLUSH_ABOVE: usize = 1 << 20;

/// An arena longer than this after a flush is cut back to `FLUSH_ABOVE`.
const KEEP_ABOVE: usize = 2 << 20;

/// Most bytes a packet has besides its payload: BTH, the largest extension
/// header (atomic ETH), pad, ICRC.
const MAX_OVERHEAD: usize = crate::wire::BTH_LEN + 28 + 3 + crate::wire::ICRC_LEN;

/// A BTH with the defaults the device always sends (P_Key 0xffff, no
/// congestion bits).
pub(crate) fn bth(opcode: Opcode, dest_qp: u32, psn: u32, ack_req: bool, solicited: bool) -> Bth {
    Bth {
        opcode,
        solicited,
        mig_req: false,
        pad: 0,
        pkey: 0xffff,
        fecn: false,
        becn: false,
        dest_qp,
        ack_req,
        psn,
    }
}

/// The peer endpoint of a GID.
pub(crate) fn peer_of(gid: Gid) -> SocketAddr {
    SocketAddr::new(gid.device_ip(), ROCE_PORT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Aeth, Ext, Reth, Syndrome, Transport};

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
            assert!(icrc::verify(&IcrcContext::between(local, peer), p));
        }
    }
}
