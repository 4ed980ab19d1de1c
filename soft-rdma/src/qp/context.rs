//! What a QP may use of its device — and nothing more: the link to send on,
//! the local endpoint, the counters, the MR table, the timer heap and the
//! asynchronous event queue. The device builds one per call
//! (`DeviceInner::ctx`); a QP never holds its device.

use crate::resources::counters::Stats;
use crate::resources::events::EventQueue;
use crate::resources::mr::MrTable;
use crate::resources::timers::Timers;
use crate::resources::xrcd::XrcSrqTable;
use crate::transport::Link;
use crate::types::{Gid, Mtu};
use std::net::SocketAddr;

#[derive(Clone, Copy)]
pub(crate) struct Context<'d> {
    pub(crate) link: &'d dyn Link,
    /// The device's endpoint (source of every packet, ICRC input).
    pub(crate) local: SocketAddr,
    /// The device's GID (a UD receive's GRH destination).
    pub(crate) gid: Gid,
    /// The port's active MTU (the largest UD datagram).
    pub(crate) port_mtu: Mtu,
    pub(crate) stats: &'d Stats,
    pub(crate) mrs: &'d MrTable,
    pub(crate) timers: &'d Timers,
    pub(crate) events: &'d EventQueue,
    /// The device's XRC SRQs (an XRC target resolves its requests' XRCETH).
    pub(crate) xrc_srqs: &'d XrcSrqTable,
    /// The receive batch being handled (a new number for each): a duplicate
    /// READ is answered at most once a batch.
    pub(crate) rx_batch: u64,
}
