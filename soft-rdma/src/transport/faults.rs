//! Fault-injection middleware (smoltcp's `FaultInjector` is the model): a
//! [`Link`] wrapper that drops, duplicates, reorders, corrupts and delays
//! datagrams, configured by `SOFTRDMA_FAULTS`:
//!
//! ```text
//! SOFTRDMA_FAULTS=drop=0.05,dup=0.01,reorder=0.02,corrupt=0.001,delay_us=200,seed=7
//! ```
//!
//! Every key is optional: `drop`, `dup`, `reorder`, `corrupt` are per-datagram
//! probabilities in `[0, 1]`, `delay_us` holds every datagram that long (a
//! delay line), `seed` makes the run reproducible (without it the generator is
//! seeded from the clock and the pid). A malformed spec is a one-line error
//! naming the bad key or value, and the device does not open.
//!
//! **Faults apply on the receive side only.** Why there:
//! * `recv` has one caller (the device's receive thread), so the injector's
//!   state (generator, delay line, held packet) needs no lock that senders —
//!   application threads, the timer, the receive thread — would contend on;
//! * the received bytes are ours to edit: a corruption flips a bit in place,
//!   where on the send side the caller's `&[u8]` would need copying;
//! * the faults hit whatever arrives, whoever sent it (another process, an
//!   unmodified program through the shim), and one device's counters say
//!   exactly what it lost: *received = sent − dropped*. Faults on both
//!   directions of a connection come from setting the variable on both ends
//!   (in one process, every device has its own injector).
//!
//! What each fault does, per datagram, decided in this order with one
//! generator draw each (so a seed gives the same decisions for the same
//! arrival order, whatever the batch boundaries):
//! * `drop` — gone, counted;
//! * `corrupt` — one bit flipped at a random position (never in BTH byte 4,
//!   the one byte the ICRC masks), so the receiver's ICRC (or parse) check
//!   must catch it;
//! * `dup` — delivered twice;
//! * `reorder` — held back and delivered right after the next datagram (or
//!   alone once [`REORDER_HOLD`] passes without one);
//! * `delay_us` — every datagram waits in a FIFO delay line.
//!
//! A spec of only `drop` and `corrupt` (the loss measurements) edits the
//! caller's batch in place: the inner link receives into it, dropped
//! datagrams leave it and a corruption flips its bit there, so what passes
//! travels exactly as without the wrapper — the same batch size, coalesced
//! (GRO) segments, "intact" marks, no copy. With `dup`, `reorder` or
//! `delay_us` the arrivals go through a scratch batch instead.
//!
//! No allocation per datagram: the delay line is a ring of preallocated
//! slots, the held datagram has its own slot, arrivals land in a
//! preallocated batch. Datagrams that find the ring full (more than
//! [`LINE_SLOTS`] in flight in the delay line) are dropped and counted as
//! `overflow`. Without `SOFTRDMA_FAULTS` there is no wrapper at all.
#![forbid(unsafe_code)]
use crate::lock;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Link, LinkStats, Outgoing, RecvBatch, MAX_PACKET};

/// The environment variable holding the fault spec.
pub const ENV: &str = "SOFTRDMA_FAULTS";

/// Slots of the delay line (and of the overflow of a full caller batch).
pub const LINE_SLOTS: usize = 512;

/// How long a datagram picked for reordering waits for a successor.
pub const REORDER_HOLD: Duration = Duration::from_millis(1);

/// A parsed fault spec.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct FaultConfig {
    pub drop: f64,
    pub dup: f64,
    pub reorder: f64,
    pub corrupt: f64,
    pub delay: Duration,
    /// `None`: seeded from the clock and the pid.
    pub seed: Option<u64>,
}

/// A malformed spec; the message names the key or value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError(pub String);

impl std::fmt::Display for SpecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{ENV}: {}", self.0)
    }
}

impl std::error::Error for SpecError {}

impl From<SpecError> for io::Error {
    fn from(e: SpecError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidInput, e.to_string())
    }
}

const KEYS: &str = "drop, dup, reorder, corrupt, delay_us, seed";

impl std::str::FromStr for FaultConfig {
    type Err = SpecError;

    /// `key=value` pairs separated by commas (spaces around them allowed).
    fn from_str(spec: &str) -> Result<FaultConfig, SpecError> {
        let mut c = FaultConfig::default();
        let mut seen: Vec<&str> = Vec::new();
        for item in spec.split(',').map(str::trim) {
            if item.is_empty() {
                continue;
            }
            let Some((k, v)) = item.split_once('=') else {
                return Err(SpecError(format!(
                    "{item:?} is not key=value (keys: {KEYS})"
                )));
            };
            let (k, v) = (k.trim(), v.trim());
            if seen.contains(&k) {
                return Err(SpecError(format!("{k} given twice")));
            }
            let prob = |v: &str| match v.parse::<f64>() {
                Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
                _ => Err(SpecError(format!(
                    "{k}={v}: expected a probability between 0 and 1"
                ))),
            };
            let int = |v: &str| {
                v.parse::<u64>()
                    .map_err(|_| SpecError(format!("{k}={v}: expected a non-negative integer")))
            };
            match k {
                "drop" => c.drop = prob(v)?,
                "dup" => c.dup = prob(v)?,
                "reorder" => c.reorder = prob(v)?,
                "corrupt" => c.corrupt = prob(v)?,
                "delay_us" => {
                    let us = int(v)?;
                    if us > 10_000_000 {
                        return Err(SpecError(format!("{k}={v}: at most 10000000 (10 s)")));
                    }
                    c.delay = Duration::from_micros(us);
                }
                "seed" => c.seed = Some(int(v)?),
                _ => return Err(SpecError(format!("unknown key {k:?} (keys: {KEYS})"))),
            }
            seen.push(k);
        }
        Ok(c)
    }
}

impl FaultConfig {
    /// Whether every fault is decided per datagram where it lies (drop,
    /// corrupt): nothing is held, copied or delivered twice, so the
    /// caller's batch can be edited in place.
    pub fn in_place(&self) -> bool {
        self.dup == 0.0 && self.reorder == 0.0 && self.delay.is_zero()
    }

    /// Whether the injector only drops: it never needs a packet's bytes,
    /// so a packet by reference (headers and a reference to the sender's
    /// memory, `Link::send_by_ref`) is lost or delivered as a whole one is,
    /// and the device keeps its one-copy path. Anything that edits, holds
    /// or repeats packets sees whole ones instead.
    pub fn drop_only(&self) -> bool {
        self.in_place() && self.corrupt == 0.0
    }
}

/// What the injector did, a snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultStats {
    pub dropped: u64,
    /// Extra copies delivered.
    pub duplicated: u64,
    /// Datagrams delivered after their successor.
    pub reordered: u64,
    pub corrupted: u64,
    /// Datagrams that went through the delay line.
    pub delayed: u64,
    /// Datagrams lost because the delay line was full.
    pub overflow: u64,
}

#[derive(Default)]
struct Counters {
    dropped: AtomicU64,
    duplicated: AtomicU64,
    reordered: AtomicU64,
    corrupted: AtomicU64,
    delayed: AtomicU64,
    overflow: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// splitmix64: small, fast, and good enough to decide faults.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// True with probability `p` (`p` = 0 never, 1 always).
    fn chance(&mut self, p: f64) -> bool {
        // 53 random bits as a float in [0, 1).
        let x = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        x < p
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A FIFO of datagrams with their release times, in preallocated slots.
struct Line {
    bufs: Box<[u8]>,
    peers: Box<[SocketAddr]>,
    lens: Box<[usize]>,
    due: Box<[Instant]>,
    head: usize,
    len: usize,
}

impl Line {
    fn new(n: usize) -> Line {
        let now = Instant::now();
        Line {
            bufs: vec![0u8; n * MAX_PACKET].into_boxed_slice(),
            peers: vec![super::UNSPECIFIED; n].into_boxed_slice(),
            lens: vec![0; n].into_boxed_slice(),
            due: vec![now; n].into_boxed_slice(),
            head: 0,
            len: 0,
        }
    }
    fn cap(&self) -> usize {
        self.lens.len()
    }
    fn push(&mut self, peer: SocketAddr, data: &[u8], due: Instant) -> bool {
        if self.len == self.cap() || data.len() > MAX_PACKET {
            return false;
        }
        let i = (self.head + self.len) % self.cap();
        self.bufs[i * MAX_PACKET..][..data.len()].copy_from_slice(data);
        self.peers[i] = peer;
        self.lens[i] = data.len();
        self.due[i] = due;
        self.len += 1;
        true
    }
    fn front_due(&self) -> Option<Instant> {
        (self.len > 0).then(|| self.due[self.head])
    }
    /// Move due datagrams into `out` while it has room.
    fn release(&mut self, now: Instant, out: &mut RecvBatch) {
        while self.len > 0 && self.due[self.head] <= now && out.len() < out.capacity() {
            let i = self.head;
            out.push(self.peers[i], &self.bufs[i * MAX_PACKET..][..self.lens[i]]);
            self.head = (self.head + 1) % self.cap();
            self.len -= 1;
        }
    }
}

/// The receive side's state (one receiving thread at a time).
struct RxState {
    rng: Rng,
    /// Arrivals from the inner link.
    scratch: RecvBatch,
    pend: Pending,
}

/// Datagrams the injector holds.
struct Pending {
    /// The delay line; also holds what did not fit the caller's batch.
    line: Line,
    /// A datagram held back for reordering, and until when.
    held: Box<[u8]>,
    held_peer: SocketAddr,
    held_len: Option<usize>,
    held_until: Instant,
}

/// A link whose received datagrams suffer the configured faults.
pub struct FaultLink<L: Link> {
    inner: L,
    cfg: FaultConfig,
    rx: Mutex<RxState>,
    counters: Counters,
    closed: AtomicBool,
}

impl<L: Link> std::fmt::Debug for FaultLink<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultLink")
            .field("local", &self.inner.local())
            .field("cfg", &self.cfg)
            .finish()
    }
}

impl<L: Link> FaultLink<L> {
    /// Wrap `inner`. The generator is seeded from `cfg.seed` mixed with the
    /// local address, so two devices of one process given the same seed do
    /// not lose the same packets, and a rerun loses the same ones again.
    pub fn new(inner: L, cfg: FaultConfig) -> FaultLink<L> {
        // It edits, duplicates and holds what arrives: whole packets only,
        // unless it only drops them.
        if !cfg.drop_only() {
            inner.refuse_all_by_ref();
        }
        let local = inner.local();
        let seed = cfg.seed.unwrap_or_else(|| {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            t.as_nanos() as u64 ^ (u64::from(std::process::id()) << 32)
        });
        let addr_mix = match local.ip() {
            std::net::IpAddr::V4(a) => u64::from(u32::from(a)),
            std::net::IpAddr::V6(a) => {
                let o = a.octets();
                u64::from_be_bytes(o[8..].try_into().expect("8 bytes"))
            }
        } ^ (u64::from(local.port()) << 40);
        let mut mix = Rng(seed ^ addr_mix.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let rng = Rng(mix.next());
        FaultLink {
            inner,
            cfg,
            rx: Mutex::new(RxState {
                rng,
                scratch: RecvBatch::new(64),
                pend: Pending {
                    line: Line::new(LINE_SLOTS),
                    held: vec![0u8; MAX_PACKET].into_boxed_slice(),
                    held_peer: super::UNSPECIFIED,
                    held_len: None,
                    held_until: Instant::now(),
                },
            }),
            counters: Counters::default(),
            closed: AtomicBool::new(false),
        }
    }

    /// The wrapped link.
    pub fn inner(&self) -> &L {
        &self.inner
    }

    pub fn config(&self) -> FaultConfig {
        self.cfg
    }

    /// What the injector did so far.
    pub fn fault_stats(&self) -> FaultStats {
        let c = &self.counters;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        FaultStats {
            dropped: g(&c.dropped),
            duplicated: g(&c.duplicated),
            reordered: g(&c.reordered),
            corrupted: g(&c.corrupted),
            delayed: g(&c.delayed),
            overflow: g(&c.overflow),
        }
    }

    /// Hand one datagram on: to the caller's batch if nothing waits in the
    /// delay line and no delay applies, else to the line (FIFO). `intact`:
    /// it came untouched from a medium that cannot corrupt it (kept on the
    /// direct way only), so the receiver need not check its ICRC — the
    /// injector must not add costs of its own to what it measures.
    fn deliver(
        &self,
        line: &mut Line,
        out: &mut RecvBatch,
        peer: SocketAddr,
        data: &[u8],
        intact: bool,
        now: Instant,
    ) {
        let delay = self.cfg.delay;
        if delay.is_zero() && line.len == 0 && out.len() < out.capacity() {
            out.push_with(peer, data.len(), intact, |d| d.copy_from_slice(data));
            return;
        }
        if !delay.is_zero() {
            bump(&self.counters.delayed);
        }
        if !line.push(peer, data, now + delay) {
            bump(&self.counters.overflow);
        }
    }

    /// Let the held datagram go (after a successor: it was reordered).
    fn release_held(&self, p: &mut Pending, out: &mut RecvBatch, now: Instant, reordered: bool) {
        if let Some(n) = p.held_len.take() {
            if reordered {
                bump(&self.counters.reordered);
            }
            self.deliver(&mut p.line, out, p.held_peer, &p.held[..n], false, now);
        }
    }

    /// Flip one random bit of `data`: any byte but BTH byte 4 (resv8a),
    /// which the ICRC masks, so the receiver's check must catch it.
    fn flip_bit(&self, rng: &mut Rng, data: &mut [u8]) {
        if data.is_empty() {
            return;
        }
        let mut at = rng.below(data.len());
        if at == 4 {
            at = if data.len() > 5 { 5 } else { 0 };
        }
        data[at] ^= 1 << rng.below(8);
        bump(&self.counters.corrupted);
    }

    /// Drop and corrupt the datagrams of `batch` where they lie (the
    /// [`FaultConfig::in_place`] case), drawing from the generator exactly
    /// as [`FaultLink::inject`] does, so a seed decides the same either way.
    fn edit_in_place(&self, rng: &mut Rng, batch: &mut RecvBatch) {
        let cfg = self.cfg;
        let RecvBatch { buf, pkts, .. } = batch;
        pkts.retain_mut(|s| {
            if rng.chance(cfg.drop) {
                bump(&self.counters.dropped);
                return false;
            }
            let corrupt = rng.chance(cfg.corrupt);
            // Never true here (`in_place`); drawn to keep the sequence.
            let _dup = rng.chance(cfg.dup);
            let _reorder = rng.chance(cfg.reorder);
            if corrupt {
                s.intact = false;
                self.flip_bit(rng, &mut buf[s.start..][..s.len]);
            }
            true
        });
    }

    /// [`Link::recv`] when the faults edit the batch in place: the inner
    /// link receives into the caller's batch. The generator's lock is held
    /// only while editing, never while the inner link blocks.
    fn recv_in_place(&self, batch: &mut RecvBatch, timeout: Option<Duration>) -> io::Result<usize> {
        let deadline = super::deadline(timeout);
        loop {
            let wait = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if self.inner.recv(batch, wait.or(timeout))? == 0 {
                return Ok(0);
            }
            self.edit_in_place(&mut lock(&self.rx).rng, batch);
            let time_up =
                timeout == Some(Duration::ZERO) || deadline.is_some_and(|d| Instant::now() >= d);
            if !batch.is_empty() || time_up || self.closed.load(Ordering::Acquire) {
                return Ok(batch.len());
            }
        }
    }

    /// Apply the faults to the arrivals in `st.scratch`.
    fn inject(&self, st: &mut RxState, out: &mut RecvBatch, now: Instant) {
        let cfg = self.cfg;
        let RxState { rng, scratch, pend } = st;
        for i in 0..scratch.len() {
            if rng.chance(cfg.drop) {
                bump(&self.counters.dropped);
                continue;
            }
            let corrupt = rng.chance(cfg.corrupt);
            let dup = rng.chance(cfg.dup);
            let reorder = rng.chance(cfg.reorder);
            // Only a corruption edits the bytes (and clears `intact`).
            let intact = scratch.intact(i) && !corrupt;
            if corrupt {
                self.flip_bit(rng, scratch.get_mut(i).1);
            }
            let (peer, data) = scratch.get(i);
            if reorder && pend.held_len.is_none() {
                pend.held[..data.len()].copy_from_slice(data);
                pend.held_peer = peer;
                pend.held_len = Some(data.len());
                pend.held_until = now + REORDER_HOLD.max(cfg.delay);
                if dup {
                    // Its copy goes ahead of it: out of order as well.
                    bump(&self.counters.duplicated);
                    self.deliver(&mut pend.line, out, peer, data, intact, now);
                    self.release_held(pend, out, now, true);
                }
                continue;
            }
            self.deliver(&mut pend.line, out, peer, data, intact, now);
            if dup {
                bump(&self.counters.duplicated);
                self.deliver(&mut pend.line, out, peer, data, intact, now);
            }
            // A successor went out: the held datagram follows it.
            self.release_held(pend, out, now, true);
        }
        scratch.clear();
    }
}

/// Wrap `inner` in a [`FaultLink`] if `SOFTRDMA_FAULTS` is set (and not
/// empty); a malformed spec is an `InvalidInput` error naming the problem.
pub fn from_env(inner: Box<dyn Link>) -> io::Result<Box<dyn Link>> {
    match std::env::var(ENV) {
        Ok(s) if !s.trim().is_empty() => {
            let cfg: FaultConfig = s.parse()?;
            crate::log::log!(Info, "{ENV}={s}: injecting faults on receive");
            Ok(Box::new(FaultLink::new(inner, cfg)))
        }
        Ok(_) | Err(std::env::VarError::NotPresent) => Ok(inner),
        Err(std::env::VarError::NotUnicode(_)) => Err(SpecError("not valid UTF-8".into()).into()),
    }
}

impl<L: Link> Link for FaultLink<L> {
    fn local(&self) -> SocketAddr {
        self.inner.local()
    }

    /// Sending is untouched (faults are injected on receive: see the module
    /// documentation).
    fn send(&self, batch: &[Outgoing<'_>]) -> io::Result<usize> {
        self.inner.send(batch)
    }

    fn recv(&self, batch: &mut RecvBatch, timeout: Option<Duration>) -> io::Result<usize> {
        if self.cfg.in_place() {
            return self.recv_in_place(batch, timeout);
        }
        batch.clear();
        // A non-blocking attempt must not wait for a blocked receiver.
        let mut st = if timeout == Some(Duration::ZERO) {
            match self.rx.try_lock() {
                Ok(g) => g,
                Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => return Ok(0),
            }
        } else {
            lock(&self.rx)
        };
        let st = &mut *st;
        let deadline = super::deadline(timeout);
        loop {
            if self.closed.load(Ordering::Acquire) {
                return Ok(0);
            }
            let now = Instant::now();
            if st.pend.held_len.is_some() && st.pend.held_until <= now {
                self.release_held(&mut st.pend, batch, now, false);
            }
            st.pend.line.release(now, batch);
            if !batch.is_empty() {
                return Ok(batch.len());
            }
            // Wait for arrivals, but no longer than the caller allows nor
            // past the next datagram we hold.
            let mut until = deadline;
            let held = st.pend.held_len.map(|_| st.pend.held_until);
            for t in [st.pend.line.front_due(), held].into_iter().flatten() {
                until = Some(until.map_or(t, |u| u.min(t)));
            }
            let wait = until.map(|u| u.saturating_duration_since(now));
            let n = self.inner.recv(&mut st.scratch, wait)?;
            let now = Instant::now();
            if n > 0 {
                self.inject(st, batch, now);
            } else if deadline.is_some_and(|d| now >= d) || timeout == Some(Duration::ZERO) {
                // The caller's time is up; hand over whatever is due.
                st.pend.line.release(now, batch);
                return Ok(batch.len());
            } else if until.is_none_or(|u| now < u) && !self.closed.load(Ordering::Acquire) {
                // Woken early with nothing: the inner link was closed.
                return Ok(0);
            }
        }
    }

    /// Waits on the inner link, but no longer than until the next datagram
    /// held back (reordered or delayed) falls due.
    fn wait(&self, timeout: Option<Duration>) -> io::Result<()> {
        if self.cfg.in_place() {
            // Nothing is ever held back.
            return self.inner.wait(timeout);
        }
        let now = Instant::now();
        let due = {
            let st = lock(&self.rx);
            let held = st.pend.held_len.map(|_| st.pend.held_until);
            [st.pend.line.front_due(), held].into_iter().flatten().min()
        };
        let wait = match (timeout, due) {
            (t, None) => t,
            (None, Some(d)) => Some(d.saturating_duration_since(now)),
            (Some(t), Some(d)) => Some(t.min(d.saturating_duration_since(now))),
        };
        if wait == Some(Duration::ZERO) {
            return Ok(());
        }
        self.inner.wait(wait)
    }

    fn kick(&self) {
        self.inner.kick()
    }

    fn wake_on_arrival(&self, on: bool) {
        self.inner.wake_on_arrival(on)
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.inner.close()
    }

    fn stats(&self) -> LinkStats {
        self.inner.stats()
    }

    /// Forwarded: the device's active MTU must not change with the wrapper.
    fn mtu(&self) -> Option<u32> {
        self.inner.mtu()
    }

    fn join(&self, group: std::net::IpAddr) -> io::Result<()> {
        self.inner.join(group)
    }

    fn leave(&self, group: std::net::IpAddr) {
        self.inner.leave(group)
    }

    fn fault_stats(&self) -> Option<FaultStats> {
        Some(FaultLink::fault_stats(self))
    }

    fn peer_gone(&self, peer: SocketAddr) -> bool {
        self.inner.peer_gone(peer)
    }

    /// References pass a drop-only injector ([`FaultConfig::drop_only`]):
    /// a loss-free run and a lossy one then take the same path.
    fn by_ref(&self, peer: SocketAddr) -> bool {
        self.cfg.drop_only() && self.inner.by_ref(peer)
    }

    fn send_by_ref(&self, peer: SocketAddr, stubs: &[&[u8]]) -> usize {
        if self.cfg.drop_only() {
            self.inner.send_by_ref(peer, stubs)
        } else {
            0
        }
    }

    fn refuse_by_ref(&self, peer: SocketAddr) {
        self.inner.refuse_by_ref(peer)
    }

    fn refuse_all_by_ref(&self) {
        self.inner.refuse_all_by_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A medium that cannot corrupt: every datagram it gives is intact.
    struct Ring;

    impl Link for Ring {
        fn local(&self) -> SocketAddr {
            SocketAddr::from(([127, 0, 0, 1], 4791))
        }
        fn send(&self, batch: &[Outgoing<'_>]) -> io::Result<usize> {
            Ok(batch.len())
        }
        fn recv(&self, batch: &mut RecvBatch, _: Option<Duration>) -> io::Result<usize> {
            batch.clear();
            for k in 0..64u8 {
                batch.push_with(self.local(), 16, true, |d| d.fill(k));
            }
            Ok(batch.len())
        }
        fn wait(&self, _: Option<Duration>) -> io::Result<()> {
            Ok(())
        }
        fn kick(&self) {}
        fn close(&self) {}
    }

    /// What passes untouched stays intact (no ICRC check needed); what the
    /// injector corrupts does not.
    #[test]
    fn only_untouched_datagrams_stay_intact() {
        let cfg = FaultConfig {
            corrupt: 0.5,
            seed: Some(3),
            ..FaultConfig::default()
        };
        let link = FaultLink::new(Ring, cfg);
        let mut b = RecvBatch::new(64);
        let n = link.recv(&mut b, Some(Duration::ZERO)).unwrap();
        assert_eq!(n, 64);
        let edited =
            |i: usize| b.get(i).1.iter().any(|&x| x != b.get(i).1[0]) || b.get(i).1[1] != i as u8;
        let corrupted = (0..n).filter(|&i| !b.intact(i)).count() as u64;
        assert_eq!(corrupted, link.fault_stats().corrupted);
        assert!(corrupted > 0 && corrupted < 64, "{corrupted}");
        for i in 0..n {
            assert_eq!(b.intact(i), !edited(i), "datagram {i}");
        }
    }

    /// A UDP link with GRO: two coalesced datagrams of 40 segments each,
    /// 80 packets from one receive into a batch of capacity 32; the second
    /// datagram's packets marked intact (as a ring's would be). It has them
    /// once; later receives find nothing.
    #[derive(Default)]
    struct Gro(AtomicBool);

    const SEGS: usize = 40;
    const SLOT: usize = super::super::udp::GRO_SLOT;

    impl Link for Gro {
        fn local(&self) -> SocketAddr {
            SocketAddr::from(([127, 0, 0, 2], 4791))
        }
        fn send(&self, batch: &[Outgoing<'_>]) -> io::Result<usize> {
            Ok(batch.len())
        }
        fn recv(&self, batch: &mut RecvBatch, _: Option<Duration>) -> io::Result<usize> {
            batch.clear();
            if self.0.swap(true, Ordering::Relaxed) {
                return Ok(0);
            }
            for d in 0..2 {
                for k in 0..SEGS {
                    let start = d * SLOT + k * 100;
                    batch.buf[start..start + 100].fill((d * SEGS + k) as u8);
                    batch.pkts.push(super::super::Slot {
                        peer: self.local(),
                        start,
                        len: 100,
                        intact: d == 1,
                        group: None,
                        remote: None,
                    });
                }
            }
            batch.used = SLOT + SEGS * 100;
            Ok(batch.len())
        }
        fn wait(&self, _: Option<Duration>) -> io::Result<()> {
            Ok(())
        }
        fn kick(&self) {}
        fn close(&self) {}
        fn mtu(&self) -> Option<u32> {
            Some(9000)
        }
    }

    /// Where each datagram lies, its length, mark and first byte.
    fn slots(b: &RecvBatch) -> Vec<(usize, usize, bool, u8)> {
        b.pkts
            .iter()
            .map(|s| (s.start, s.len, s.intact, b.buf[s.start]))
            .collect()
    }

    /// With nothing to drop the wrapper changes nothing about how datagrams
    /// travel: one receive still hands over every coalesced segment (more
    /// than the batch's capacity), each where the inner link put it (no
    /// copy), intact marks kept; and the MTU the device sizes its packets
    /// by is the inner link's.
    #[test]
    fn drop_zero_passes_the_batch_through_untouched() {
        let link = FaultLink::new(Gro::default(), "drop=0".parse().unwrap());
        assert_eq!(Link::mtu(&link), Some(9000));
        let (mut direct, mut wrapped) = (RecvBatch::new(32), RecvBatch::new(32));
        Gro::default().recv(&mut direct, None).unwrap();
        let n = link.recv(&mut wrapped, Some(Duration::ZERO)).unwrap();
        assert_eq!(n, 2 * SEGS);
        assert!(n > wrapped.capacity());
        assert_eq!(slots(&wrapped), slots(&direct));
        assert_eq!(link.fault_stats(), FaultStats::default());
    }

    /// Dropping in place removes datagrams without moving the others (and
    /// clears the mark only of what it corrupts), and a seed drops and
    /// corrupts the same ones as the copying path (here forced by a delay
    /// line) does.
    #[test]
    fn in_place_faults_match_the_copying_path_for_a_seed() {
        let in_place: FaultConfig = "drop=0.3,corrupt=0.1,seed=11".parse().unwrap();
        let copying: FaultConfig = "drop=0.3,corrupt=0.1,seed=11,delay_us=1".parse().unwrap();
        assert!(in_place.in_place() && !copying.in_place());
        let mut direct = RecvBatch::new(32);
        Gro::default().recv(&mut direct, None).unwrap();
        let direct = slots(&direct);

        let a = FaultLink::new(Gro::default(), in_place);
        let mut got = RecvBatch::new(32);
        let n = a.recv(&mut got, Some(Duration::ZERO)).unwrap();
        let st = a.fault_stats();
        assert!(st.dropped > 0 && st.corrupted > 0, "{st:?}");
        assert_eq!(n as u64 + st.dropped, 2 * SEGS as u64);
        let mut edited = 0;
        let mut from = 0;
        for (i, (start, len, intact, _)) in slots(&got).into_iter().enumerate() {
            let at = from + direct[from..].iter().position(|d| d.0 == start).unwrap();
            from = at + 1;
            let whole = got.get(i).1.iter().all(|&x| x == direct[at].3);
            assert_eq!(len, direct[at].1);
            assert_eq!(intact, direct[at].2 && whole, "datagram {i}");
            edited += u64::from(!whole);
        }
        assert_eq!(edited, st.corrupted);

        let b = FaultLink::new(Gro::default(), copying);
        let mut other = RecvBatch::new(128);
        let mut seen = Vec::new();
        for _ in 0..1000 {
            b.recv(&mut other, Some(Duration::ZERO)).unwrap();
            seen.extend(other.iter().map(|(_, d)| d.to_vec()));
            if seen.len() >= n {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let want: Vec<Vec<u8>> = got.iter().map(|(_, d)| d.to_vec()).collect();
        assert_eq!(seen, want);
        assert_eq!(b.fault_stats().dropped, st.dropped);
        assert_eq!(b.fault_stats().corrupted, st.corrupted);
    }
}
