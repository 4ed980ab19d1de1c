//! The device's asynchronous events (`ibv_get_async_event`): a queue, and an
//! eventfd that is readable while it holds any.

use crate::sync::{Level, OrderedMutex};
use crate::types::AsyncEvent;
use odp::EventFd;
use std::collections::VecDeque;
use std::os::fd::{AsRawFd, RawFd};

pub(crate) struct EventQueue {
    queue: OrderedMutex<VecDeque<AsyncEvent>>,
    fd: EventFd,
}

impl EventQueue {
    pub(crate) fn new() -> std::io::Result<EventQueue> {
        Ok(EventQueue {
            queue: OrderedMutex::new(Level::Events, VecDeque::new()),
            fd: EventFd::new()?,
        })
    }

    /// Queue `ev` for the application. Any lock may be held (this is the
    /// last level).
    pub(crate) fn raise(&self, ev: AsyncEvent) {
        crate::log::log!(Info, "async event: {ev:?}");
        self.queue.lock().push_back(ev);
        self.fd.signal();
    }

    /// The oldest event, if any (non-blocking).
    pub(crate) fn pop(&self) -> Option<AsyncEvent> {
        let mut q = self.queue.lock();
        let ev = q.pop_front();
        if q.is_empty() {
            self.fd.drain();
        }
        ev
    }

    /// The descriptor that is readable while events are queued.
    pub(crate) fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
