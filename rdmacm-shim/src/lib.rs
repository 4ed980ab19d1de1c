//! `librdmacm.so.1` for programs on the soft device: every rdma_cm export
//! of rdma-core 44 (68 functions, RDMACM_1.0 … 1.3) is a trampoline to
//! `__softrdma_NAME` in our `libibverbs.so.1`, where the API is
//! implemented (`verbs-shim/src/rdmacm/`), on the process's one soft-rdma
//! device and the same ibv objects the program's verbs calls use. Two
//! Rust libraries would each carry their own soft-rdma; this one carries
//! none. `build.rs` generates the trampolines and the version script.

include!(concat!(env!("OUT_DIR"), "/exports.rs"));
