//! The soft device's file-system face: `libsoftrdma_fsface.so`, which
//! `softrdma run` preloads into the program it starts, answers the few
//! lookups under `/dev/infiniband`, `/sys/class/infiniband` and
//! `/sys/class/infiniband_verbs` that programs make to find and describe an
//! RDMA device (UCX stats `/dev/infiniband/uverbs0` and reads the GID types
//! and netdevs; pyverbs lists `device/net/`), for `softrdma0` — and changes
//! nothing else: every other path goes straight to libc.
//!
//! How: the first lookup under those prefixes writes the face as a small
//! real tree in a private directory of the temporary directory
//! (`tree.rs`); each interposed libc call (`interpose.rs`) then runs on the
//! same path inside that tree, so directory listings, relative lookups from
//! a directory descriptor and every `stat` variant behave as real files do.
//! `unsafe` lives in `interpose.rs` only (the C entry points, each block
//! with a `// SAFETY:` note); the other modules forbid it.
//! Why preloading rather than the verbs shim or a mount namespace:
//! docs/ARCHITECTURE.md, "The file-system face".

mod interpose;
mod netdev;
mod paths;
mod tree;
