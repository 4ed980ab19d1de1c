//! `libibverbs.so.1` over the soft RoCEv2 device: unmodified verbs programs
//! (ibv_devinfo, ibv_rc_pingpong, perftest, …) run on `soft-rdma` when this
//! library comes first on `LD_LIBRARY_PATH`.
//!
//! Every exported function `NAME@@IBVERBS_x` is an `extern "C" fn shim_NAME`
//! here, reached through the trampolines `build.rs` generates from
//! `src/exports.txt` (the installed library's 146 default symbols).
//!
//! Each C object the library hands out is a `#[repr(C)]` wrapper that begins
//! with the C struct and owns the soft-rdma object after it, so the C pointer
//! converts back with a cast (`ShimQp::from_c`). `unsafe` lives in these
//! object modules (the C entry points) and `ffi`; `conv` is safe.

#![allow(clippy::missing_safety_doc)]
// `shim_` + the C name, which may begin with underscores.
#![allow(non_snake_case)]

pub mod ffi;

mod ah;
mod alloc;
mod context;
mod conv;
mod cq;
mod device;
mod import;
mod mcast;
mod mr;
mod mw;
mod pd;
mod placement_abi;
mod qp;
mod qp_ex;
mod rdmacm;
mod registry;
mod srq;
mod strings;
mod stubs;
mod sync;
mod xrc;

/// The exported ABI: `build.rs`'s `global_asm!` names every `shim_*` function.
mod exports {
    #[allow(unused_imports)]
    use crate::rdmacm::exports::*;
    #[allow(unused_imports)]
    use crate::{
        ah::*, context::*, cq::*, device::*, import::*, mcast::*, mr::*, pd::*, qp::*, srq::*,
        strings::*, stubs::*,
    };
    include!(concat!(env!("OUT_DIR"), "/exports.rs"));
}
