//! The memory placement extensions' ABI that rdma-core 45 added and the
//! installed headers (rdma-core 44, `ffi::bindings`) lack: FLUSH's opcode,
//! completion, send-ops and access flags, its `ibv_qp_ex` builder slot, and
//! the device capability bits of FLUSH and ATOMIC WRITE. Values from
//! <infiniband/verbs.h> and <rdma/ib_user_verbs.h> of rdma-core 45 on.

use crate::ffi::{ibv_qp_ex, ibv_wc_opcode};

/// `IBV_WC_FLUSH`.
pub const IBV_WC_FLUSH: ibv_wc_opcode = 8;
/// `IBV_QP_EX_WITH_FLUSH`.
pub const IBV_QP_EX_WITH_FLUSH: u32 = 1 << 11;
/// `IBV_ACCESS_FLUSH_GLOBAL`.
pub const IBV_ACCESS_FLUSH_GLOBAL: u32 = 1 << 8;
/// `IBV_ACCESS_FLUSH_PERSISTENT`.
pub const IBV_ACCESS_FLUSH_PERSISTENT: u32 = 1 << 9;
/// `IB_UVERBS_DEVICE_FLUSH_GLOBAL` (`device_cap_flags_ex`).
pub const IB_UVERBS_DEVICE_FLUSH_GLOBAL: u64 = 1 << 38;
/// `IB_UVERBS_DEVICE_FLUSH_PERSISTENT`.
pub const IB_UVERBS_DEVICE_FLUSH_PERSISTENT: u64 = 1 << 39;
/// `IB_UVERBS_DEVICE_ATOMIC_WRITE`.
pub const IB_UVERBS_DEVICE_ATOMIC_WRITE: u64 = 1 << 40;

/// `ibv_qp_ex::wr_flush`: `(qp, rkey, remote_addr, len, type, level)`. It
/// follows `wr_atomic_write`, the last member of the installed struct, so
/// it lives right after the `ibv_qp_ex` in the QP's wrapper (`ShimQp`).
pub type WrFlush = unsafe extern "C" fn(*mut ibv_qp_ex, u32, u64, usize, u8, u8);

/// Where rdma-core 45's `ibv_qp_ex` has `wr_flush`: the end of the 44 one.
pub const WR_FLUSH_OFFSET: usize = std::mem::size_of::<ibv_qp_ex>();
const _: () = assert!(WR_FLUSH_OFFSET == 352);
