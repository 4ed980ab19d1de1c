//! `soft-rdma`: a RoCEv2 software RDMA device in userspace.
//!
//! Layers, bottom up (smoltcp's split, rxe's roles):
//! * [`wire`] — headers, a zero-copy packet view, a parsed repr, the ICRC;
//! * [`transport`] — moving datagrams: UDP (batched), in-process loopback,
//!   pcap middleware;
//! * [`verbs`] — device, PD, MR (pinned / ODP / implicit ODP via `odp`), CQ,
//!   QP, SRQ, AH: the objects and their errors;
//! * [`engine`] — requester, responder, completer: the RC/UC/UD protocol.

pub(crate) mod engine;
pub mod log;
mod shm;
mod sys;
pub mod transport;
pub mod verbs;
pub mod wire;
