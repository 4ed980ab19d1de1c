//! End-to-end test programs (`src/bin/`) and what they share: verbs programs
//! run as separate processes with the shim's `libibverbs.so.1` first on
//! `LD_LIBRARY_PATH` (the tests in `tests/` start them).
//!
//! - `verbs_pair`: SEND/RECV on the `ibverbs` crate, then RDMA WRITE (into an
//!   ODP region) and SEND through its FFI layer, between two processes, every
//!   byte checked;
//! - `odp_race`: RDMA WRITEs into an ODP region while its owner unmaps and
//!   remaps parts of it.
//!
//! `raw` holds the `unsafe` C calls (the verbs the `ibverbs` crate does not
//! wrap, mmap/munmap, the clock); elsewhere, the only `unsafe` are the
//! crate's own posting functions, each call with its `SAFETY` note.

pub mod oob;
pub mod raw;

/// The path of the `libibverbs.so*` mapped into this process (from
/// `/proc/self/maps`), to prove which library the loader chose.
pub fn loaded_libibverbs() -> Option<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| {
            std::path::Path::new(p)
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libibverbs.so"))
        })
        .map(str::to_string)
}

/// Print which `libibverbs.so*` this process loaded (`LIB path`): the
/// tests check that it is the shim. Called first thing, before any verb.
pub fn report_library() {
    println!(
        "LIB {}",
        loaded_libibverbs().unwrap_or_else(|| "none".into())
    );
}

/// Print the device this process uses (`DEVICE name`).
pub fn report_device(device: &str) {
    println!("DEVICE {device}");
}
