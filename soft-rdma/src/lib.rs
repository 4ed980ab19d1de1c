//! `soft-rdma`: a RoCEv2 software RDMA device in userspace.
//!
//! Layers, top down; each uses only those below it (smoltcp's split, rxe's
//! roles; the map is docs/ARCHITECTURE.md):
//! * [`verbs`] — the public handles (Device, Pd, Mr, Cq, CompChannel, Qp,
//!   Srq, Ah): argument checks and errnos, then a call down;
//! * `device` — the QP and MR tables, receive dispatch, doorbells, the
//!   receive/timer/publisher threads, counter publication;
//! * `qp` — one QP's protocol (requester, responder, completer, state
//!   machine, transmit queue), seeing its device only through a `Context`;
//! * `resources` — MRs and their key table, CQs, SRQs, counters, timers,
//!   asynchronous events;
//! * the vocabulary (`types`, `limits`) and locks with their order (`sync`);
//! * [`wire`] — headers, a zero-copy packet view, a parsed repr, the ICRC;
//! * [`transport`] — moving datagrams: UDP (batched) with its same-host
//!   rings, in-process loopback, fault and pcap middleware.
//!
//! `unsafe` lives only in `sys` (random bytes, inline-data copy, eventfds),
//! `shm` (the counters' shared mapping) and the transport's syscall and ring
//! modules; every other module forbids it.

mod device;
mod limits;
pub mod log;
mod qp;
mod resources;
mod shm;
mod sync;
mod sys;
pub mod transport;
mod types;
pub mod verbs;
pub mod wire;

pub(crate) use sync::lock;
