//! The shim (`libibverbs.so`) and the `softrdma` program, found in the
//! `target/<profile>/` directory of the running tests and built there if
//! missing: `cargo test -p X` builds only X's targets, and neither belongs
//! to the packages whose tests run programs on them.

use std::path::{Path, PathBuf};
use std::process::Command;

/// `target/<profile>/` for a test executable (`target/<profile>/deps/NAME-HASH`)
/// or a program beside the shim (`target/<profile>/NAME`): follows
/// `CARGO_TARGET_DIR` and the profile.
pub fn profile_dir(exe: &Path) -> PathBuf {
    let dir = exe.parent().expect("an executable's directory");
    if dir.ends_with("deps") {
        dir.parent().expect("target/<profile>").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// `target/<profile>/` of the running test executable.
pub fn own_profile_dir() -> PathBuf {
    profile_dir(&std::env::current_exe().expect("test executable path"))
}

/// Build into `dir` (a `target/<profile>/`) whatever is missing of the shim
/// and, if `softrdma`, the `softrdma` program and the file-system face it
/// preloads (`cargo build -q -p verbs-shim [-p soft-rdma --bin softrdma --lib
/// -p softrdma-fsface]`, release if `dir` is `release/`).
pub fn ensure_built(dir: &Path, softrdma: bool) {
    let missing = !dir.join("libibverbs.so").exists()
        || (softrdma
            && (!dir.join("softrdma").exists() || !dir.join("libsoftrdma_fsface.so").exists()));
    if !missing {
        return;
    }
    let target = dir.parent().expect("target dir");
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["build", "-q", "-p", "verbs-shim"]);
    if softrdma {
        cmd.args(["-p", "soft-rdma", "--bin", "softrdma", "--lib"]);
        cmd.args(["-p", "softrdma-fsface"]);
    }
    cmd.arg("--target-dir").arg(target);
    if dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let st = cmd.status().expect("run cargo build");
    assert!(st.success(), "{cmd:?} failed");
    assert!(
        dir.join("libibverbs.so").exists(),
        "{} missing after the build",
        dir.join("libibverbs.so").display()
    );
}

/// Make `dir/libibverbs.so.1` a symlink to `libibverbs.so` (the name programs
/// load, so `dir` can go first on `LD_LIBRARY_PATH`).
pub fn link_soname(dir: &Path) {
    let link = dir.join("libibverbs.so.1");
    let _ = std::fs::remove_file(&link);
    if let Err(e) = std::os::unix::fs::symlink("libibverbs.so", &link) {
        // A concurrent test binary may have made it meanwhile.
        assert!(link.exists(), "symlink {}: {e}", link.display());
    }
}

/// Build the verbs shim and the thin `librdmacm.so` (crate rdmacm-shim)
/// into `dir` (a `target/<profile>/`), always: the two libraries must be
/// of the same source, and a no-op build is quick. Then make the
/// `libibverbs.so.1` and `librdmacm.so.1` links programs load.
pub fn ensure_rdmacm_built(dir: &Path) {
    let target = dir.parent().expect("target dir");
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["build", "-q", "-p", "verbs-shim", "-p", "rdmacm-shim"]);
    cmd.arg("--target-dir").arg(target);
    if dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let st = cmd.status().expect("run cargo build");
    assert!(st.success(), "{cmd:?} failed");
    link_soname(dir);
    let link = dir.join("librdmacm.so.1");
    let _ = std::fs::remove_file(&link);
    if let Err(e) = std::os::unix::fs::symlink("librdmacm.so", &link) {
        assert!(link.exists(), "symlink {}: {e}", link.display());
    }
}
