//! What the CM tells its user: events on event channels (`rdma_cm`'s
//! `rdma_event_channel`: a queue with a pollable descriptor).

use crate::wire::{RejReason, Rep, Req};
use odp::EventFd;
use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// What happened (`enum rdma_cm_event_type`, the CM's part of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A listener got a REQ; the event carries the new id.
    ConnectRequest,
    /// The REP arrived: move the QP to RTR/RTS, then establish.
    ConnectResponse,
    Established,
    /// The peer refused (its reason; `INVALID_SERVICE_ID`: nobody listens).
    Rejected(RejReason),
    /// No answer after every retry.
    Unreachable,
    Disconnected,
    /// The connection's time-wait ended: its QP may be reused.
    TimewaitExit,
    /// An event the library above queues itself ([`EventChannel::post`]),
    /// e.g. rdma_cm's address and route resolution: its own code.
    Local(u32),
}

/// What the peer's REQ, REP or SIDR_REP said about its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Remote {
    pub qpn: u32,
    pub psn: u32,
    pub responder_resources: u8,
    pub initiator_depth: u8,
    pub retry_count: u8,
    pub rnr_retry_count: u8,
    pub srq: bool,
    /// The IBA MTU encoding; a REP carries none (the REQ's holds).
    pub path_mtu: Option<u8>,
    /// A UD peer's Q_Key (SIDR_REP); 0 for a connection.
    pub qkey: u32,
}

impl Remote {
    pub(crate) fn from_req(r: &Req) -> Remote {
        Remote {
            qpn: r.local_qpn,
            psn: r.starting_psn,
            responder_resources: r.responder_resources,
            initiator_depth: r.initiator_depth,
            retry_count: r.retry_count,
            rnr_retry_count: r.rnr_retry_count,
            srq: r.srq,
            path_mtu: Some(r.path_mtu),
            qkey: 0,
        }
    }

    pub(crate) fn from_rep(r: &Rep) -> Remote {
        Remote {
            qpn: r.local_qpn,
            psn: r.starting_psn,
            responder_resources: r.responder_resources,
            initiator_depth: r.initiator_depth,
            retry_count: 0,
            rnr_retry_count: r.rnr_retry_count,
            srq: r.srq,
            path_mtu: None,
            qkey: 0,
        }
    }
}

/// An event as queued: the id it is for (its local communication ID) and
/// what the message carried.
#[derive(Debug, Clone)]
pub(crate) struct Queued {
    pub id: u32,
    pub listen_id: Option<u32>,
    pub kind: EventKind,
    pub private_data: Vec<u8>,
    pub status: i32,
    pub remote: Option<Remote>,
}

pub(crate) struct ChannelShared {
    queue: Mutex<VecDeque<Queued>>,
    ready: Condvar,
    /// Readable while the queue is not empty.
    fd: EventFd,
}

/// `rdma_event_channel`: ids report here; wait with [`EventChannel::get`]
/// or poll its descriptor.
#[derive(Clone)]
pub struct EventChannel(pub(crate) Arc<ChannelShared>);

impl EventChannel {
    pub fn new() -> std::io::Result<EventChannel> {
        Ok(EventChannel(Arc::new(ChannelShared {
            queue: Mutex::new(VecDeque::new()),
            ready: Condvar::new(),
            fd: EventFd::new()?,
        })))
    }

    /// Queues an event. Lock: the channel's (a leaf: taken under the
    /// agent's table lock, never the other way).
    pub(crate) fn push(&self, e: Queued) {
        let mut q = self.0.queue.lock().unwrap_or_else(|e| e.into_inner());
        q.push_back(e);
        self.0.fd.signal();
        self.0.ready.notify_one();
    }

    /// Queues an event of the caller's own (`EventKind::Local`) for id
    /// `id`, behind those waiting: it wakes readers and the descriptor as
    /// the CM's do.
    pub fn post(&self, id: u32, code: u32, status: i32) {
        self.push(Queued {
            id,
            listen_id: None,
            kind: EventKind::Local(code),
            private_data: vec![],
            status,
            remote: None,
        });
    }

    /// Takes the events waiting for id `id` out of the queue.
    pub(crate) fn take_for(&self, id: u32) -> Vec<Queued> {
        let mut q = self.0.queue.lock().unwrap_or_else(|e| e.into_inner());
        let (mine, rest): (VecDeque<Queued>, VecDeque<Queued>) =
            q.drain(..).partition(|e| e.id == id);
        *q = rest;
        // Drained only when it held something (a counter known non-zero):
        // the user may have made the descriptor blocking.
        if q.is_empty() && !mine.is_empty() {
            self.0.fd.drain();
        }
        mine.into()
    }

    /// The next event, waiting at most `timeout` (None: forever).
    pub(crate) fn pop(&self, timeout: Option<Duration>) -> Option<Queued> {
        let end = timeout.map(|t| Instant::now() + t);
        let mut q = self.0.queue.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(e) = q.pop_front() {
                if q.is_empty() {
                    self.0.fd.drain();
                }
                return Some(e);
            }
            q = match end {
                None => self.0.ready.wait(q).unwrap_or_else(|e| e.into_inner()),
                Some(end) => {
                    let now = Instant::now();
                    if now >= end {
                        return None;
                    }
                    self.0
                        .ready
                        .wait_timeout(q, end - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }
}

impl AsFd for EventChannel {
    /// Readable while an event waits.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.fd.as_fd()
    }
}
