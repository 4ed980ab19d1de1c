//! Moving datagrams (the "phy" layer): a [`Link`] sends and receives whole
//! UDP payloads (IB transport packets) to and from peers' RoCEv2 endpoints.
//!
//! * `udp` — a UDP socket on port 4791, batched (`sendmmsg`/`recvmmsg`);
//! * `loopback` — an in-process hub of links for tests;
//! * `pcap` — middleware that records every datagram of the link it wraps
//!   (`SOFTRDMA_PCAP=file.pcap`), with synthesized Ethernet/IP/UDP headers so
//!   tshark and scapy decode it and the ICRC verifies;
//! * `addr` — which local address a device uses (the documented rule).
//!
//! No per-packet allocation: receive buffers are a preallocated batch.
//!
//! INTERFACE STUB: the contract the engine codes against; the transport work
//! fills in the bodies and the submodules.
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

/// RoCEv2's UDP destination port.
pub const ROCE_PORT: u16 = 4791;

/// Largest IB packet we send or accept: 4096-byte path MTU + headers + ICRC.
pub const MAX_PACKET: usize = 4096 + 128;

/// One datagram to send.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    pub peer: SocketAddr,
    pub data: &'a [u8],
}

/// Received datagrams in preallocated buffers, reused across calls.
pub struct RecvBatch {
    _private: (),
}

impl RecvBatch {
    /// Room for `n` datagrams of up to [`MAX_PACKET`] bytes.
    pub fn new(n: usize) -> RecvBatch {
        let _ = n;
        unimplemented!()
    }
    /// Datagrams filled by the last `recv`.
    pub fn len(&self) -> usize {
        unimplemented!()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The `i`th datagram: sender and bytes.
    pub fn get(&self, i: usize) -> (SocketAddr, &[u8]) {
        let _ = i;
        unimplemented!()
    }
}

/// A datagram endpoint.
pub trait Link: Send + Sync {
    /// The local endpoint (its IP is the device's GID).
    fn local(&self) -> SocketAddr;
    /// Send a batch; returns how many were sent. A datagram the network
    /// refuses (unreachable peer, buffer full after retries) is dropped and
    /// counted, not an error of the whole batch.
    fn send(&self, batch: &[Outgoing<'_>]) -> io::Result<usize>;
    /// Block until at least one datagram arrives, the link is closed, or the
    /// timeout passes; fills `batch` and returns how many (0: closed/timeout).
    fn recv(&self, batch: &mut RecvBatch, timeout: Option<Duration>) -> io::Result<usize>;
    /// Wake every blocked `recv`; later ones return Ok(0) at once.
    fn close(&self);
}
