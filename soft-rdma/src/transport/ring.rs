//! A one-way queue of datagrams in shared memory: the same-host fast path's
//! ring (see [`super::same_host`]). One producer process writes, one consumer
//! process reads, and each treats the other as untrusted: a peer that breaks
//! the format loses its ring, never crashes us.
//!
//! The memory is a sealed memfd the producer creates ([`Producer::create`])
//! and hands over by descriptor; the consumer maps it only if it can no
//! longer shrink (`F_SEAL_SHRINK`: an access past its end would be SIGBUS).
//! Layout: one header page, then [`RING_BYTES`] (a power of two) of records.
//! A record is a `u32` length, a `u32` kind ([`PLAIN`], or [`BY_REF`]: the
//! datagram is a packet's headers and a reference to its payload in the
//! producer's memory, see [`super::same_host`]), the datagram, padding to 8;
//! [`WRAP`] as a length says "continue at the ring's start". Positions are
//! byte counters that only grow (`tail`: written up to, by the producer;
//! `head`: read up to, by the consumer); each side reads the other's counter
//! once per batch and checks it before use.
//!
//! Wake-ups (Dekker): a consumer about to sleep sets `sleeping`, fences, and
//! looks at `tail` again; a producer publishes `tail`, fences, and looks at
//! `sleeping` — at least one of them sees the other, so a sleeper is always
//! kicked or never sleeps. [`Producer::publish`] says when to kick.
//!
//! The ring's own `unsafe` is in this file: the header's atomics and the
//! copies in and out (the mapping is an `odp::Mapping`, the memfd calls are
//! in `sys`).
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

use super::{sys, RecvBatch, Remote, MAX_PACKET, REF_LEN};

/// Bytes of records a ring holds: eight QPs' full 128-packet windows of
/// 4 KiB packets (a consumer drains it while it fills). Both ends map it
/// populated, so its memory is resident from the start — a process's RSS
/// does not creep up as the ring is first written — and a consumer accepts
/// rings of exactly this size, so an offer cannot make it map more.
pub(super) const RING_BYTES: usize = 4 << 20;
/// The header page.
const HEADER: usize = 4096;
/// A record's length field saying "the next record is at the ring's start".
const WRAP: u32 = u32::MAX;
const MAGIC: u64 = u64::from_le_bytes(*b"SRDMAR01");

// Header offsets: the two counters on cache lines of their own.
const OFF_MAGIC: usize = 0;
const OFF_SIZE: usize = 8;
const OFF_TAIL: usize = 64;
const OFF_HEAD: usize = 128;
const OFF_SLEEPING: usize = 192;
const OFF_STATE: usize = 196;

/// `state` bits.
const ATTACHED: u32 = 1;
const CONSUMER_GONE: u32 = 2;
const PRODUCER_GONE: u32 = 4;
/// The consumer could not read a payload by reference: send them in full.
const NO_REFS: u32 = 8;

/// Record kinds.
pub(super) const PLAIN: u32 = 0;
pub(super) const BY_REF: u32 = 1;

/// The ring broke its format (a counter out of range, a record too long or
/// past the published end): the consumer drops the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Corrupt;

/// Bytes a record of `len` takes.
fn record(len: usize) -> u64 {
    8 + ((len as u64 + 7) & !7)
}

/// A ring's memfd, mapped populated (read-write, shared).
struct RingMap(odp::Mapping);

impl RingMap {
    fn map(fd: BorrowedFd<'_>, len: usize) -> io::Result<RingMap> {
        debug_assert!(len > HEADER);
        odp::MapOptions::new()
            .shared()
            .file(fd, 0)
            .populate()
            .map(len)
            .map(RingMap)
    }

    fn u64_at(&self, off: usize) -> &AtomicU64 {
        debug_assert!(off % 8 == 0 && off + 8 <= HEADER);
        // SAFETY: `off` is an 8-aligned offset inside the header page of a
        // live, page-aligned mapping; the word is only ever accessed
        // atomically (by both processes), so an `&AtomicU64` to it is sound.
        unsafe { &*self.0.as_ptr().add(off).cast::<AtomicU64>() }
    }

    fn u32_at(&self, off: usize) -> &AtomicU32 {
        debug_assert!(off % 4 == 0 && off + 4 <= HEADER);
        // SAFETY: as for `u64_at`, 4-aligned.
        unsafe { &*self.0.as_ptr().add(off).cast::<AtomicU32>() }
    }

    /// The record area.
    fn data(&self) -> *mut u8 {
        debug_assert!(self.0.len() > HEADER);
        // SAFETY: HEADER < len (every ring is HEADER + RING_BYTES long:
        // made so, or checked at attach).
        unsafe { self.0.as_ptr().add(HEADER) }
    }
}

/// The writing end, in the process that created the ring.
pub(super) struct Producer {
    map: RingMap,
    size: u64,
    /// Written up to (not yet published if ahead of the header's tail).
    tail: u64,
    /// The consumer's head as last read.
    head: u64,
}

/// Why a push failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PushError {
    /// No room now: the consumer has not caught up.
    Full,
    /// The consumer's counter is impossible: the ring is unusable.
    Corrupt,
}

impl Producer {
    /// A new ring of [`RING_BYTES`] in a sealed memfd; the descriptor is for
    /// the consumer.
    pub(super) fn create() -> io::Result<(Producer, OwnedFd)> {
        let size = RING_BYTES;
        let total = HEADER + size;
        let fd = sys::sealed_memfd(c"softrdma-ring", total)?;
        let map = RingMap::map(fd.as_fd(), total)?;
        map.u64_at(OFF_SIZE).store(size as u64, Ordering::Relaxed);
        map.u64_at(OFF_MAGIC).store(MAGIC, Ordering::Release);
        Ok((
            Producer {
                map,
                size: size as u64,
                tail: 0,
                head: 0,
            },
            fd,
        ))
    }

    /// The consumer has mapped the ring (until then, send another way).
    pub(super) fn attached(&self) -> bool {
        self.map.u32_at(OFF_STATE).load(Ordering::Acquire) & ATTACHED != 0
    }

    /// The consumer dropped the ring (its device closed, or it refused us).
    pub(super) fn consumer_gone(&self) -> bool {
        self.map.u32_at(OFF_STATE).load(Ordering::Acquire) & CONSUMER_GONE != 0
    }

    /// The consumer asked for payloads in full ([`Consumer::refuse_refs`]).
    pub(super) fn refs_refused(&self) -> bool {
        self.map.u32_at(OFF_STATE).load(Ordering::Relaxed) & NO_REFS != 0
    }

    /// Room for `need` more bytes, re-reading the consumer's head if the
    /// last one read does not leave it.
    fn room(&mut self, need: u64) -> Result<bool, PushError> {
        if self.size - (self.tail - self.head) >= need {
            return Ok(true);
        }
        let head = self.map.u64_at(OFF_HEAD).load(Ordering::Acquire);
        if head < self.head || head > self.tail {
            return Err(PushError::Corrupt);
        }
        self.head = head;
        Ok(self.size - (self.tail - self.head) >= need)
    }

    /// Append one datagram (not yet visible: see [`Producer::publish`]).
    #[cfg(test)]
    pub(super) fn push(&mut self, data: &[u8]) -> Result<(), PushError> {
        self.push_kind(data, PLAIN)
    }

    /// Append one record of `kind` ([`PLAIN`] or [`BY_REF`]).
    pub(super) fn push_kind(&mut self, data: &[u8], kind: u32) -> Result<(), PushError> {
        debug_assert!(data.len() <= MAX_PACKET);
        let need = record(data.len());
        let off = self.tail & (self.size - 1);
        let to_end = self.size - off;
        let wraps = need > to_end;
        if !self.room(if wraps { to_end + need } else { need })? {
            return Err(PushError::Full);
        }
        let data_area = self.map.data();
        if wraps {
            // SAFETY: `off` is 8-aligned and < size, so the 4-byte length is
            // inside the record area; the consumer reads it only after the
            // tail that covers it is published.
            unsafe {
                data_area
                    .add(off as usize)
                    .cast::<u32>()
                    .write_volatile(WRAP)
            };
            self.tail += to_end;
        }
        let off = (self.tail & (self.size - 1)) as usize;
        // SAFETY: the record (8-byte header + data) fits between `off` and
        // the ring's end (checked above: it wrapped otherwise) in bytes the
        // consumer has released (`room`); `data` is a live slice that does
        // not overlap shared memory.
        unsafe {
            let at = data_area.add(off);
            at.cast::<u32>().write_volatile(data.len() as u32);
            at.add(4).cast::<u32>().write_volatile(kind);
            std::ptr::copy_nonoverlapping(data.as_ptr(), at.add(8), data.len());
        }
        self.tail += need;
        Ok(())
    }

    /// Make what was pushed visible; true if the consumer was asleep and
    /// must be kicked (the caller sends the kick: [`super::same_host`]).
    pub(super) fn publish(&mut self) -> bool {
        self.map
            .u64_at(OFF_TAIL)
            .store(self.tail, Ordering::Release);
        fence(Ordering::SeqCst);
        let sleeping = self.map.u32_at(OFF_SLEEPING);
        sleeping.load(Ordering::Relaxed) != 0 && sleeping.swap(0, Ordering::AcqRel) != 0
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.map
            .u32_at(OFF_STATE)
            .fetch_or(PRODUCER_GONE, Ordering::Release);
    }
}

/// The reading end, in the process a ring was handed to.
pub(super) struct Consumer {
    map: RingMap,
    /// Read once at attach: the producer cannot change our bounds.
    size: u64,
    head: u64,
}

impl Consumer {
    /// Map a ring handed over as `fd`, if it is one: sealed against
    /// shrinking, a header with our magic, a power-of-two size within limits
    /// that matches the file, a head of 0. Marks it attached — and, with
    /// `no_refs`, refusing references from the start
    /// ([`Consumer::refuse_refs`]).
    pub(super) fn attach(fd: OwnedFd, no_refs: bool) -> io::Result<Consumer> {
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
        if !sys::sealed_against_shrinking(fd.as_fd()) {
            return Err(bad("not a memfd sealed against shrinking"));
        }
        let file = std::fs::File::from(fd);
        let total = file.metadata()?.len();
        if total != (HEADER + RING_BYTES) as u64 {
            return Err(bad("not the ring size"));
        }
        let map = RingMap::map(file.as_fd(), total as usize)?;
        let size = map.u64_at(OFF_SIZE).load(Ordering::Relaxed);
        if map.u64_at(OFF_MAGIC).load(Ordering::Acquire) != MAGIC || size != RING_BYTES as u64 {
            return Err(bad("not a softrdma ring"));
        }
        // Our counter, but written by the producer until now: a fresh ring
        // starts at 0, and a head that is not a record boundary would make
        // the first read misaligned.
        if map.u64_at(OFF_HEAD).load(Ordering::Acquire) != 0 {
            return Err(bad("not a fresh ring"));
        }
        let refs = if no_refs { NO_REFS } else { 0 };
        map.u32_at(OFF_STATE)
            .fetch_or(ATTACHED | refs, Ordering::Release);
        Ok(Consumer { map, size, head: 0 })
    }

    /// Ask the producer to send payloads in full from now on.
    pub(super) fn refuse_refs(&self) {
        self.map
            .u32_at(OFF_STATE)
            .fetch_or(NO_REFS, Ordering::Relaxed);
    }

    /// Move datagrams into `batch` (as from `peer`, the device of process
    /// `pid`, None: ours) while it has room; returns (datagrams, bytes, of them by
    /// reference).
    pub(super) fn pop_into(
        &mut self,
        batch: &mut RecvBatch,
        peer: std::net::SocketAddr,
        pid: Option<i32>,
    ) -> Result<(usize, usize, usize), Corrupt> {
        let tail = self.map.u64_at(OFF_TAIL).load(Ordering::Acquire);
        if tail < self.head || tail - self.head > self.size {
            return Err(Corrupt);
        }
        let (mut n, mut bytes, mut refs) = (0, 0, 0);
        let data_area = self.map.data();
        while self.head != tail {
            let off = self.head & (self.size - 1);
            let left = tail - self.head;
            // SAFETY: `off` is 8-aligned (every record is a multiple of 8)
            // and < size: the length word is inside the record area.
            let len = unsafe { data_area.add(off as usize).cast::<u32>().read_volatile() };
            if len == WRAP {
                let to_end = self.size - off;
                if to_end > left {
                    return Err(Corrupt);
                }
                self.head += to_end;
                continue;
            }
            let need = record(len as usize);
            if len as usize > MAX_PACKET || need > self.size - off || need > left {
                return Err(Corrupt);
            }
            let src = data_area.wrapping_add(off as usize + 8);
            // SAFETY: the kind word is inside the record area, 4-aligned
            // (`off` is 8-aligned), published with the record.
            let kind = unsafe {
                data_area
                    .add(off as usize + 4)
                    .cast::<u32>()
                    .read_volatile()
            };
            let copy = |from: usize, dst: &mut [u8]| {
                debug_assert!(from + dst.len() <= len as usize);
                // SAFETY: `src + from .. + dst.len()` is inside the record
                // (both callers stay within `len`), which is inside the
                // record area (checked above) and published by the producer
                // (below `tail`); `dst` is private memory. A producer that
                // writes these bytes meanwhile garbles only our copy, which
                // is parsed and checked like any datagram.
                unsafe { std::ptr::copy_nonoverlapping(src.add(from), dst.as_mut_ptr(), dst.len()) }
            };
            // Intact: memory does not flip bits on the way, so the ICRC is
            // not checked; a producer that writes garbage on purpose could
            // have computed a valid ICRC over it anyway.
            let pushed = match kind {
                PLAIN => batch.push_with(peer, len as usize, true, |dst| copy(0, dst)),
                BY_REF if len as usize >= REF_LEN => {
                    let head = len as usize - REF_LEN;
                    let mut r = [0u8; REF_LEN];
                    copy(head, &mut r);
                    let va = u64::from_le_bytes(r[..8].try_into().unwrap());
                    let plen = u32::from_le_bytes(r[8..12].try_into().unwrap());
                    if plen as usize > MAX_PACKET {
                        return Err(Corrupt);
                    }
                    let remote = Remote::new(pid, va, plen);
                    let pushed = batch.push_remote(peer, head, remote, |dst| copy(0, dst));
                    refs += usize::from(pushed);
                    pushed
                }
                _ => return Err(Corrupt),
            };
            if !pushed {
                break;
            }
            self.head += need;
            n += 1;
            bytes += len as usize;
        }
        self.map
            .u64_at(OFF_HEAD)
            .store(self.head, Ordering::Release);
        Ok((n, bytes, refs))
    }

    /// About to sleep: ask the producer for a kick. False (and not asked)
    /// if a datagram is already waiting.
    pub(super) fn arm(&self) -> bool {
        let sleeping = self.map.u32_at(OFF_SLEEPING);
        sleeping.store(1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        if self.map.u64_at(OFF_TAIL).load(Ordering::Acquire) != self.head {
            sleeping.store(0, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Awake again: no kicks wanted.
    pub(super) fn disarm(&self) {
        self.map.u32_at(OFF_SLEEPING).store(0, Ordering::Relaxed);
    }

    /// Whether a datagram is waiting.
    pub(super) fn pending(&self) -> bool {
        self.map.u64_at(OFF_TAIL).load(Ordering::Acquire) != self.head
    }

    /// The producer dropped its end and everything it sent was read.
    pub(super) fn finished(&self) -> bool {
        self.map.u32_at(OFF_STATE).load(Ordering::Acquire) & PRODUCER_GONE != 0 && !self.pending()
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.map
            .u32_at(OFF_STATE)
            .fetch_or(CONSUMER_GONE, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn pair() -> (Producer, Consumer) {
        let (p, fd) = Producer::create().unwrap();
        (p, Consumer::attach(fd, false).unwrap())
    }

    fn peer() -> SocketAddr {
        "127.9.9.9:4791".parse().unwrap()
    }

    /// A datagram whose bytes say which one it is.
    fn datagram(i: usize) -> Vec<u8> {
        let len = 1 + (i * 977) % MAX_PACKET;
        (0..len).map(|k| (i + k) as u8).collect()
    }

    impl Producer {
        /// Overwrite 4 bytes of the record area (a broken producer).
        fn poke_data(&self, off: usize, v: u32) {
            assert!(off % 4 == 0 && off + 4 <= self.size as usize);
            // SAFETY: inside the record area (asserted), 4-aligned.
            unsafe { self.map.data().add(off).cast::<u32>().write_volatile(v) }
        }
    }

    #[test]
    fn datagrams_come_out_in_order_and_intact_across_many_wraps() {
        let (mut p, mut c) = pair();
        let mut batch = RecvBatch::new(64);
        let (mut next_in, mut next_out, mut bytes) = (0, 0, 0u64);
        // Three times the ring, in bursts that leave it part full.
        while bytes < 3 * RING_BYTES as u64 {
            for _ in 0..100 {
                match p.push(&datagram(next_in)) {
                    Ok(()) => {
                        bytes += datagram(next_in).len() as u64;
                        next_in += 1;
                    }
                    Err(PushError::Full) => break,
                    Err(e) => panic!("{e:?}"),
                }
            }
            p.publish();
            batch.clear();
            let (n, _, _) = c.pop_into(&mut batch, peer(), None).unwrap();
            assert_eq!(n, batch.len());
            for (from, d) in batch.iter() {
                assert_eq!(from, peer());
                assert_eq!(d, datagram(next_out), "datagram {next_out}");
                next_out += 1;
            }
        }
        while next_out < next_in {
            batch.clear();
            c.pop_into(&mut batch, peer(), None).unwrap();
            assert!(!batch.is_empty());
            for (_, d) in batch.iter() {
                assert_eq!(d, datagram(next_out));
                next_out += 1;
            }
        }
        assert!(!c.pending());
    }

    #[test]
    fn a_full_ring_refuses_until_the_consumer_reads() {
        let (mut p, mut c) = pair();
        let big = vec![7u8; MAX_PACKET];
        let mut n = 0;
        while p.push(&big).is_ok() {
            n += 1;
        }
        assert_eq!(n, RING_BYTES as u64 / record(MAX_PACKET));
        // The rest takes small records, exactly as many as fit.
        let mut small = 0;
        while p.push(&[1]).is_ok() {
            small += 1;
        }
        assert_eq!(small, RING_BYTES as u64 % record(MAX_PACKET) / record(1));
        assert_eq!(p.push(&[1]), Err(PushError::Full));
        // Unpublished data is not the consumer's yet.
        let mut batch = RecvBatch::new(4);
        assert_eq!(c.pop_into(&mut batch, peer(), None), Ok((0, 0, 0)));
        p.publish();
        assert_eq!(
            c.pop_into(&mut batch, peer(), None),
            Ok((4, 4 * MAX_PACKET, 0))
        );
        assert_eq!(p.push(&big), Ok(()));
    }

    #[test]
    fn a_producer_that_breaks_the_format_loses_its_ring_and_nothing_is_read_past_it() {
        let mut batch = RecvBatch::new(8);
        // A tail more than a ring ahead.
        let (p, mut c) = pair();
        p.map
            .u64_at(OFF_TAIL)
            .store(RING_BYTES as u64 + 8, Ordering::Release);
        assert_eq!(c.pop_into(&mut batch, peer(), None), Err(Corrupt));
        // A tail behind the head.
        let (mut p, mut c) = pair();
        p.push(&[1; 8]).unwrap();
        p.publish();
        c.pop_into(&mut batch, peer(), None).unwrap();
        p.map.u64_at(OFF_TAIL).store(0, Ordering::Release);
        assert_eq!(c.pop_into(&mut batch, peer(), None), Err(Corrupt));
        // A length past MAX_PACKET, then one past the published tail.
        for bad in [MAX_PACKET as u32 + 1, 64] {
            let (mut p, mut c) = pair();
            p.push(&[2; 16]).unwrap();
            p.publish();
            p.poke_data(0, bad);
            batch.clear();
            assert_eq!(
                c.pop_into(&mut batch, peer(), None),
                Err(Corrupt),
                "length {bad}"
            );
            assert!(batch.is_empty());
        }
        // A wrap marker with less published than the ring's rest.
        let (mut p, mut c) = pair();
        p.push(&[3; 16]).unwrap();
        p.publish();
        p.poke_data(0, WRAP);
        assert_eq!(c.pop_into(&mut batch, peer(), None), Err(Corrupt));
        // A consumer head the producer never allowed.
        let (mut p, c) = pair();
        c.map.u64_at(OFF_HEAD).store(1 << 40, Ordering::Release);
        let big = vec![0u8; MAX_PACKET];
        let r = (0..RING_BYTES / MAX_PACKET + 1).try_for_each(|_| p.push(&big));
        assert_eq!(r, Err(PushError::Corrupt));
    }

    #[test]
    fn attach_refuses_what_is_not_a_sealed_ring() {
        // A plain file: no seals.
        let path = std::env::temp_dir().join(format!("softrdma-ring-test-{}", std::process::id()));
        let f = std::fs::File::create(&path).unwrap();
        f.set_len((HEADER + RING_BYTES) as u64).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(Consumer::attach(OwnedFd::from(f), false).is_err());
        // Sealed, but the header lies: magic, size, then a head that is not
        // the start (misaligned: the first read would be undefined).
        for (off, v) in [
            (OFF_MAGIC, 0),
            (OFF_SIZE, RING_BYTES as u64 / 2),
            (OFF_HEAD, 3),
        ] {
            let (p, fd) = Producer::create().unwrap();
            p.map.u64_at(off).store(v, Ordering::Release);
            let e = Consumer::attach(fd, false)
                .err()
                .expect("attached a bad ring");
            assert_eq!(e.kind(), io::ErrorKind::InvalidData);
            assert!(!p.attached());
        }
    }

    #[test]
    fn a_sleeping_consumer_is_kicked_once_and_one_with_data_does_not_sleep() {
        let (mut p, mut c) = pair();
        assert!(p.attached());
        assert!(c.arm(), "nothing waiting: may sleep");
        p.push(b"x").unwrap();
        assert!(p.publish(), "consumer armed: kick it");
        assert!(!p.publish(), "one kick per sleep");
        assert!(!c.arm(), "a datagram waits: do not sleep");
        let mut batch = RecvBatch::new(1);
        assert_eq!(c.pop_into(&mut batch, peer(), None), Ok((1, 1, 0)));
        c.disarm();
        p.push(b"y").unwrap();
        assert!(!p.publish(), "awake consumer: no kick");
        drop(p);
        assert!(!c.finished(), "one datagram still to read");
        batch.clear();
        c.pop_into(&mut batch, peer(), None).unwrap();
        assert!(c.finished());
    }

    #[test]
    fn a_reference_comes_out_as_headers_and_where_its_payload_is() {
        let (mut p, mut c) = pair();
        let mut stub = b"headers.".to_vec();
        stub.extend_from_slice(&0x1234_5678u64.to_le_bytes());
        stub.extend_from_slice(&4096u32.to_le_bytes());
        stub.extend_from_slice(&[0; 4]);
        p.push_kind(&stub, BY_REF).unwrap();
        p.push(b"plain").unwrap();
        p.publish();
        let mut batch = RecvBatch::new(4);
        assert_eq!(c.pop_into(&mut batch, peer(), Some(7)).map(|r| r.2), Ok(1));
        assert_eq!(batch.get(0).1, b"headers.");
        assert_eq!(
            batch.remote(0),
            Some(Remote::new(Some(7), 0x1234_5678, 4096))
        );
        assert_eq!((batch.get(1).1, batch.remote(1)), (&b"plain"[..], None));
        // The consumer asks for payloads in full; the producer sees it.
        assert!(!p.refs_refused());
        c.refuse_refs();
        assert!(p.refs_refused());
        // Too short to hold a reference, one naming more than a packet
        // holds, an unknown kind: the ring is broken.
        let mut long = stub.clone();
        long[16..20].copy_from_slice(&(MAX_PACKET as u32 + 1).to_le_bytes());
        for (d, kind) in [(&b"short"[..], BY_REF), (&long[..], BY_REF), (&b"x"[..], 9)] {
            let (mut p, mut c) = pair();
            p.push_kind(d, kind).unwrap();
            p.publish();
            batch.clear();
            assert_eq!(c.pop_into(&mut batch, peer(), None), Err(Corrupt), "{d:?}");
            assert!(batch.is_empty());
        }
    }

    #[test]
    fn a_dropped_consumer_is_seen_by_its_producer() {
        let (p, c) = pair();
        assert!(!p.consumer_gone());
        drop(c);
        assert!(p.consumer_gone());
    }
}
