//! What a QP uses besides its own state: memory regions and their key table,
//! scatter/gather lists resolved to them, completion queues and channels,
//! shared receive queues, the counters, the timer heap and the asynchronous
//! event queue. Each is a plain object with its own lock (see `crate::sync`
//! for the order); none knows the device, a QP or the verbs handles.
#![forbid(unsafe_code)]

pub(crate) mod counters;
pub(crate) mod cq;
pub(crate) mod events;
pub(crate) mod flight;
pub(crate) mod key_slots;
pub(crate) mod mr;
pub(crate) mod mw;
pub(crate) mod placement;
pub(crate) mod sge;
pub(crate) mod srq;
pub(crate) mod timers;
pub(crate) mod xrcd;
