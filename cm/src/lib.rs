//! The InfiniBand Communication Manager for the soft RoCEv2 device: what
//! `librdmacm` programs connect through.
//!
//! A connection is set up by CM MADs (management class 0x07, class version
//! 2) exchanged between the two devices' QP1 (the GSI QP, Q_Key
//! 0x8001_0000) in ordinary RoCEv2 UD packets, as the kernel's `ib_cm` and
//! `rdma_cm` do over rxe or mlx5 — so a kernel peer could be on the other
//! end. [`wire`] holds the formats, `conn` one connection's state machine
//! (no I/O), `agent` the tables, the thread and the user's handles
//! ([`Cm`], [`EventChannel`]), `id` the id handle ([`CmId`]), `gsi` QP1 and
//! its buffers, `ports` the port sharing rules,
//! [`rendezvous`] how a client finds a listener of the same host, `liveness`
//! how a peer killed without a DREQ is noticed.

#![forbid(unsafe_code)]

mod agent;
mod conn;
mod event;
mod gsi;
mod id;
mod liveness;
pub mod ports;
pub mod rendezvous;
pub mod wire;

pub use agent::{Cm, CmConfig, CmId, Event};
pub use conn::ConnParam;
pub use event::{EventChannel, EventKind, Remote};
