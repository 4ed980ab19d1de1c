//! The shims `softrdma run` needs, carried inside `softrdma` for
//! `cargo install` (feature `bundle-shims`, on by default).
//!
//! The verbs shim depends on this crate, so it cannot be a dependency of it:
//! this script runs a second, nested `cargo build --release` of the three
//! cdylibs (verbs-shim's libibverbs.so, rdmacm-shim's librdmacm.so, fsface's
//! libsoftrdma_fsface.so) from the workspace this crate sits in, with its own
//! target directory under `OUT_DIR` (the outer build holds the lock on its
//! own). The nested build's soft-rdma sees `SOFTRDMA_BUNDLE_NESTED` and
//! bundles nothing, which ends the recursion. The libraries land in
//! `$OUT_DIR/bundle/`; the binary includes them (`cfg(softrdma_bundle)`) and
//! names its per-user cache after `SOFTRDMA_BUNDLE_ID`, a hash of their bytes.
//!
//! Whether to bundle is `SOFTRDMA_BUNDLE`: `0` none, `release` in release
//! builds only, `1` or unset always. Cargo gives builds no sign of being an
//! install, so the checkout's configuration says it: `.cargo/config.toml` at
//! the root sets `0` (the README's commands, scripts/test.sh: there the shims
//! are built beside `softrdma` and found there, and a second build of the
//! stack would double every edit's cost), `soft-rdma/.cargo/config.toml` sets
//! `release` — `cargo install --path soft-rdma` reads that file first — and a
//! `cargo install --git` reads neither (unset). The variable is a rerun
//! trigger, so an install never reuses a build's bundle-less output.
use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// (Cargo's file name, the name `softrdma run` gives it).
const LIBS: [(&str, &str); 3] = [
    ("libibverbs.so", "libibverbs.so.1"),
    ("librdmacm.so", "librdmacm.so.1"),
    ("libsoftrdma_fsface.so", "libsoftrdma_fsface.so"),
];

fn main() {
    println!("cargo::rustc-check-cfg=cfg(softrdma_bundle)");
    println!("cargo::rerun-if-env-changed=SOFTRDMA_BUNDLE");
    println!("cargo::rerun-if-env-changed=SOFTRDMA_BUNDLE_NESTED");
    println!("cargo::rerun-if-changed=build.rs");
    if env::var_os("CARGO_FEATURE_BUNDLE_SHIMS").is_none()
        || env::var_os("SOFTRDMA_BUNDLE_NESTED").is_some()
    {
        return;
    }
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    let ws = manifest.parent().unwrap().to_path_buf();
    let release = env::var("PROFILE").is_ok_and(|p| p == "release");
    match env::var("SOFTRDMA_BUNDLE").as_deref() {
        Ok("0") => return,
        Ok("release") if !release => return,
        _ => {}
    }
    if !ws.join("verbs-shim/Cargo.toml").is_file() {
        println!(
            "cargo::warning=soft-rdma is not in its workspace ({}): softrdma carries no shims; `softrdma run` needs SOFTRDMA_SHIM_DIR",
            ws.display()
        );
        return;
    }
    for d in [
        "odp",
        "soft-rdma/src",
        "cm",
        "verbs-shim",
        "rdmacm-shim",
        "fsface",
    ] {
        println!("cargo::rerun-if-changed={}", ws.join(d).display());
    }
    println!(
        "cargo::rerun-if-changed={}",
        ws.join("Cargo.lock").display()
    );

    let target = env::var("TARGET").unwrap();
    let dir = out.join("shims-target");
    let mut cargo = Command::new(env::var_os("CARGO").unwrap());
    cargo
        .args(["build", "--release", "--target", &target, "--manifest-path"])
        .arg(ws.join("Cargo.toml"))
        .args([
            "-p",
            "verbs-shim",
            "-p",
            "rdmacm-shim",
            "-p",
            "softrdma-fsface",
        ])
        .arg("--target-dir")
        .arg(&dir);
    if ws.join("Cargo.lock").is_file() {
        // The checkout's versions, and no rewriting of its lock file (a
        // `--git` install's checkout is Cargo's).
        cargo.arg("--locked");
    }
    // What Cargo tells this script about the outer build (features, cfgs, the
    // package, its rustflags) must not steer the nested one; the jobserver
    // (CARGO_MAKEFLAGS), RUSTC and the user's own settings pass through.
    for (k, _) in env::vars_os() {
        let k = k.to_string_lossy();
        if [
            "CARGO_FEATURE_",
            "CARGO_CFG_",
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
        ]
        .iter()
        .any(|p| k.starts_with(p))
            || [
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_CRATE_NAME",
                "CARGO_ENCODED_RUSTFLAGS",
                "CARGO_TARGET_DIR",
                "OUT_DIR",
                "TARGET",
                "HOST",
                "PROFILE",
                "OPT_LEVEL",
                "DEBUG",
                "NUM_JOBS",
            ]
            .contains(&k.as_ref())
        {
            cargo.env_remove(k.as_ref());
        }
    }
    cargo
        .env("SOFTRDMA_BUNDLE_NESTED", "1")
        // Carried in every installed softrdma: no debug info.
        .env("CARGO_PROFILE_RELEASE_DEBUG", "0")
        .env("CARGO_PROFILE_RELEASE_STRIP", "debuginfo");
    let st = cargo
        .status()
        .expect("run the nested cargo build of the shims");
    assert!(
        st.success(),
        "building the shims softrdma carries failed ({st}): `cargo build --release -p verbs-shim -p rdmacm-shim -p softrdma-fsface` in {}",
        ws.display()
    );

    let built = dir.join(&target).join("release");
    let bundle = out.join("bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    let mut hash = Fnv::new();
    for (cargo_name, name) in LIBS {
        let bytes = std::fs::read(built.join(cargo_name))
            .unwrap_or_else(|e| panic!("{}: {e}", built.join(cargo_name).display()));
        hash.add(name.as_bytes());
        hash.add(&(bytes.len() as u64).to_le_bytes());
        hash.add(&bytes);
        write_if_changed(&bundle.join(name), &bytes);
    }
    println!("cargo::rustc-env=SOFTRDMA_BUNDLE_ID={:016x}", hash.0);
    println!("cargo::rustc-cfg=softrdma_bundle");
}

/// Leaves an identical file alone (its timestamp, and what depends on it).
fn write_if_changed(path: &Path, bytes: &[u8]) {
    if std::fs::read(path).is_ok_and(|b| b == bytes) {
        return;
    }
    std::fs::write(path, bytes).unwrap();
}

/// FNV-1a, 64 bits: names the cache directory, so that two versions coexist.
/// Not a defence: `softrdma run` compares the cached files' bytes with its own.
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn add(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}
