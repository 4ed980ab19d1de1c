//! librdmacm's API (`<rdma/rdma_cma.h>`, `<rdma/rdma_verbs.h>`'s callees)
//! over the CM crate, inside this library so that it runs on the process's
//! one soft device and hands out the same ibv objects as our verbs. The
//! thin `librdmacm.so.1` (`rdmacm-shim/`) jumps to these functions,
//! exported as `__softrdma_rdma_*` in the private node
//! `SOFTRDMA_RDMACM_PRIVATE` (`exports.txt`).
//!
//! - `global`: the CM of the device, its one `ibv_context`, the id table;
//! - `channel`: event channels and events (`rdma_get_cm_event`, ack);
//! - `id`: ids, addresses, binding, resolution, listening, options;
//! - `qp`: QPs on ids and their moves (`rdma_init_qp_attr`);
//! - `conn`: connect, accept, reject, establish, disconnect;
//! - `sync_api`: `rdma_getaddrinfo`, `rdma_create_ep`, `rdma_get_request`;
//! - `multicast`: joining and leaving multicast groups (UD ids);
//! - `unsupported`: ECE and rsockets (ENOSYS / EOPNOTSUPP).
//!
//! What librdmacm does in user space (QP moves, the RTU sent for an id
//! with a QP, synchronous ids without a channel) is done here the same way.

mod addr;
mod channel;
mod conn;
mod global;
mod id;
mod multicast;
mod qp;
mod sync_api;
mod unsupported;
mod xrc;

/// Every `shim_rdma_*`/`shim_r*` the trampolines name.
pub mod exports {
    pub use super::channel::*;
    pub use super::conn::*;
    pub use super::id::*;
    pub use super::multicast::*;
    pub use super::qp::*;
    pub use super::sync_api::*;
    pub use super::unsupported::*;
}

/// `-1` with `errno` set: how librdmacm's calls fail.
fn fail(e: i32) -> std::os::raw::c_int {
    crate::ffi::set_errno(e);
    -1
}

/// 0, or `-1` with `errno`.
fn ret(r: Result<(), i32>) -> std::os::raw::c_int {
    match r {
        Ok(()) => 0,
        Err(e) => fail(e),
    }
}
