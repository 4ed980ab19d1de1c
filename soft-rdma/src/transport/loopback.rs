//! An in-process network for tests: a [`Hub`] delivers datagrams between
//! the [`LoopbackLink`]s created from it, through bounded per-link queues.
//!
//! Semantics follow UDP: a datagram to an address with no link, to a closed
//! link, or to a link whose queue is full is dropped and counted (the
//! sender's `send_dropped` for the first two, the receiver's `recv_dropped`
//! for a full queue, like a socket's receive-buffer overflow). Buffers are
//! recycled, so steady-state traffic allocates nothing.
#![forbid(unsafe_code)]
use crate::lock;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{Counters, Link, LinkStats, Outgoing, RecvBatch, MAX_PACKET};

/// Datagrams a link's queue holds by default.
pub const DEFAULT_QUEUE: usize = 4096;

/// Spare buffers a link keeps for senders to reuse.
const FREE_BUFFERS: usize = 256;

/// An in-process network.
#[derive(Debug)]
pub struct Hub {
    links: Mutex<HashMap<SocketAddr, Arc<Port>>>,
    /// IP multicast groups: the links that joined each (`Link::join`).
    groups: Mutex<HashMap<IpAddr, Vec<SocketAddr>>>,
    queue: usize,
}

/// One link's receive side and counters.
#[derive(Debug)]
struct Port {
    state: Mutex<PortState>,
    cond: Condvar,
    counters: Counters,
}

#[derive(Debug, Default)]
struct PortState {
    queue: VecDeque<(SocketAddr, Vec<u8>)>,
    free: Vec<Vec<u8>>,
    closed: bool,
    /// `kick` was called and no `wait` has returned since.
    kicked: bool,
    waiters: usize,
}

impl Hub {
    /// A hub whose links queue up to [`DEFAULT_QUEUE`] datagrams each.
    pub fn new() -> Arc<Hub> {
        Hub::with_queue(DEFAULT_QUEUE)
    }

    /// A hub whose links queue up to `queue` datagrams each.
    pub fn with_queue(queue: usize) -> Arc<Hub> {
        Arc::new(Hub {
            links: Mutex::new(HashMap::new()),
            groups: Mutex::new(HashMap::new()),
            queue: queue.max(1),
        })
    }

    /// A link at `addr`; port 0 picks a free port. `AddrInUse` if taken.
    pub fn link(self: &Arc<Self>, addr: SocketAddr) -> io::Result<LoopbackLink> {
        let mut links = lock(&self.links);
        let mut addr = addr;
        if addr.port() == 0 {
            let port = (49152..=u16::MAX)
                .find(|&p| !links.contains_key(&SocketAddr::new(addr.ip(), p)))
                .ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::AddrInUse,
                        "softrdma: loopback hub: no free port",
                    )
                })?;
            addr.set_port(port);
        }
        if links.contains_key(&addr) {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("softrdma: cannot bind {addr}: already in use by another link of this loopback hub"),
            ));
        }
        let port = Arc::new(Port {
            state: Mutex::new(PortState::default()),
            cond: Condvar::new(),
            counters: Counters::default(),
        });
        links.insert(addr, port.clone());
        Ok(LoopbackLink {
            hub: self.clone(),
            addr,
            port,
        })
    }

    fn lookup(&self, addr: &SocketAddr) -> Option<Arc<Port>> {
        lock(&self.links).get(addr).cloned()
    }

    /// Where a datagram to `peer` goes: the link bound there, or for a
    /// multicast address every link that joined the group (none: dropped,
    /// as IP multicast nobody listens to).
    fn destinations(&self, peer: &SocketAddr) -> Vec<Arc<Port>> {
        if !peer.ip().is_multicast() {
            return self.lookup(peer).into_iter().collect();
        }
        let members = lock(&self.groups).get(&peer.ip()).cloned();
        members
            .unwrap_or_default()
            .iter()
            .filter_map(|a| self.lookup(a))
            .collect()
    }
}

/// A link of a [`Hub`]. Dropping it frees its address.
#[derive(Debug)]
pub struct LoopbackLink {
    hub: Arc<Hub>,
    addr: SocketAddr,
    port: Arc<Port>,
}

impl LoopbackLink {
    /// The counters.
    pub fn stats(&self) -> LinkStats {
        self.port.counters.snapshot()
    }

    /// Datagrams waiting in this link's queue.
    pub fn queued(&self) -> usize {
        lock(&self.port.state).queue.len()
    }
}

impl Drop for LoopbackLink {
    fn drop(&mut self) {
        let mut links = lock(&self.hub.links);
        if links
            .get(&self.addr)
            .is_some_and(|p| Arc::ptr_eq(p, &self.port))
        {
            links.remove(&self.addr);
        }
        drop(links);
        // Anyone still blocked on us (through an Arc<LoopbackLink> they
        // cannot have, but be safe) wakes up.
        lock(&self.port.state).closed = true;
        self.port.cond.notify_all();
    }
}

impl LoopbackLink {
    /// Sleep until `ready` holds or the link is closed (then the state) or
    /// the timeout passes (then None).
    fn block(
        &self,
        timeout: Option<Duration>,
        ready: impl Fn(&PortState) -> bool,
    ) -> Option<MutexGuard<'_, PortState>> {
        let deadline = super::deadline(timeout);
        let port = &self.port;
        let mut st = lock(&port.state);
        while !ready(&st) && !st.closed {
            let rest = match deadline {
                None => None, // no timeout, or one too long to represent
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(r) if !r.is_zero() => Some(r),
                    _ => return None,
                },
            };
            st.waiters += 1;
            st = match rest {
                None => crate::sync::wait(&port.cond, st),
                Some(r) => crate::sync::wait_timeout(&port.cond, st, r),
            };
            st.waiters -= 1;
        }
        Some(st)
    }
}

impl LoopbackLink {
    /// Queue `group` on `dst`'s port; false if it is closed.
    fn deliver(&self, dst: &Port, group: &[Outgoing<'_>]) -> bool {
        let mut st = lock(&dst.state);
        if st.closed {
            return false;
        }
        let mut delivered = 0;
        for o in group.iter().filter(|o| o.data.len() <= u16::MAX as usize) {
            if st.queue.len() >= self.hub.queue {
                Counters::add(&dst.counters.recv_dropped, 1);
                continue;
            }
            let mut buf = st
                .free
                .pop()
                .unwrap_or_else(|| Vec::with_capacity(MAX_PACKET));
            buf.clear();
            buf.extend_from_slice(o.data);
            st.queue.push_back((self.addr, buf));
            delivered += 1;
        }
        let wake = delivered > 0 && st.waiters > 0;
        drop(st);
        if wake {
            dst.cond.notify_all();
        }
        true
    }
}

impl Link for LoopbackLink {
    fn local(&self) -> SocketAddr {
        self.addr
    }

    /// In memory, like `lo`: every IB MTU fits.
    fn mtu(&self) -> Option<u32> {
        Some(65536)
    }

    fn send(&self, batch: &[Outgoing<'_>]) -> io::Result<usize> {
        let me = &self.port.counters;
        let mut sent = 0;
        // Consecutive datagrams to one peer share a lookup and a lock.
        let mut i = 0;
        while i < batch.len() {
            let peer = batch[i].peer;
            let mut j = i + 1;
            while j < batch.len() && batch[j].peer == peer {
                j += 1;
            }
            let group = &batch[i..j];
            i = j;
            // Sent if some destination took it (a closed one does not).
            let mut open = false;
            for dst in self.hub.destinations(&peer) {
                open |= self.deliver(&dst, group);
            }
            for o in group {
                if !open || o.data.len() > u16::MAX as usize {
                    Counters::add(&me.send_dropped, 1);
                    continue;
                }
                Counters::add(&me.sent, 1);
                Counters::add(&me.sent_bytes, o.data.len() as u64);
                sent += 1;
            }
        }
        Ok(sent)
    }

    fn recv(&self, batch: &mut RecvBatch, timeout: Option<Duration>) -> io::Result<usize> {
        batch.clear();
        let port = &self.port;
        let st = self.block(timeout, |st| !st.queue.is_empty());
        let Some(mut st) = st.filter(|st| !st.closed && !st.queue.is_empty()) else {
            return Ok(0);
        };
        let mut bytes = 0;
        while batch.len() < batch.capacity() {
            let Some((from, buf)) = st.queue.pop_front() else {
                break;
            };
            if buf.len() > MAX_PACKET {
                Counters::add(&port.counters.recv_truncated, 1);
            } else {
                bytes += buf.len();
                batch.push(from, &buf);
            }
            if st.free.len() < self.hub.queue.min(FREE_BUFFERS) {
                st.free.push(buf);
            }
        }
        drop(st);
        Counters::add(&port.counters.received, batch.len() as u64);
        Counters::add(&port.counters.received_bytes, bytes as u64);
        Ok(batch.len())
    }

    fn wait(&self, timeout: Option<Duration>) -> io::Result<()> {
        if let Some(mut st) = self.block(timeout, |st| !st.queue.is_empty() || st.kicked) {
            st.kicked = false;
        }
        Ok(())
    }

    fn kick(&self) {
        lock(&self.port.state).kicked = true;
        self.port.cond.notify_all();
    }

    fn close(&self) {
        lock(&self.port.state).closed = true;
        self.port.cond.notify_all();
    }

    fn stats(&self) -> LinkStats {
        self.stats()
    }

    fn join(&self, group: IpAddr) -> io::Result<()> {
        if !group.is_multicast() {
            return Err(io::ErrorKind::InvalidInput.into());
        }
        let mut groups = lock(&self.hub.groups);
        let members = groups.entry(group).or_default();
        if !members.contains(&self.addr) {
            members.push(self.addr);
        }
        Ok(())
    }

    fn leave(&self, group: IpAddr) {
        let mut groups = lock(&self.hub.groups);
        if let Some(m) = groups.get_mut(&group) {
            m.retain(|a| *a != self.addr);
            if m.is_empty() {
                groups.remove(&group);
            }
        }
    }
}
