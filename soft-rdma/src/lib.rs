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

/// Lock a mutex whether or not a holder panicked: every lock here guards
/// state that stays consistent at each unlock point, and a panicking thread
/// (a test's, an application's callback) must not wedge the device.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
