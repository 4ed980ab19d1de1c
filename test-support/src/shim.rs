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

/// `cargo build -q ARGS` into the target directory of `dir` (a
/// `target/<profile>/`), release if `dir` is `release/`.
fn cargo_build(dir: &Path, args: &[&str]) {
    let target = dir.parent().expect("target dir");
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["build", "-q"]).args(args);
    cmd.arg("--target-dir").arg(target);
    if dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let st = cmd.status().expect("run cargo build");
    assert!(st.success(), "{cmd:?} failed");
}

/// Build into `dir` (a `target/<profile>/`) the shim and, if `softrdma`, the
/// `softrdma` program and the file-system face it preloads (`cargo build -q
/// -p verbs-shim [-p soft-rdma --bin softrdma --lib -p softrdma-fsface]`).
/// Always, not only when missing: `cargo test -p X` builds only X's targets,
/// and a library older than its sources would test yesterday's code; a
/// build with nothing to do is quick.
pub fn ensure_built(dir: &Path, softrdma: bool) {
    let mut args = vec!["-p", "verbs-shim"];
    if softrdma {
        args.extend([
            "-p",
            "soft-rdma",
            "--bin",
            "softrdma",
            "--lib",
            "-p",
            "softrdma-fsface",
        ]);
    }
    cargo_build(dir, &args);
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
    cargo_build(dir, &["-p", "verbs-shim", "-p", "rdmacm-shim"]);
    link_soname(dir);
    let link = dir.join("librdmacm.so.1");
    let _ = std::fs::remove_file(&link);
    if let Err(e) = std::os::unix::fs::symlink("librdmacm.so", &link) {
        assert!(link.exists(), "symlink {}: {e}", link.display());
    }
}

/// `name args` with `dir` (where our libraries are) first on
/// `LD_LIBRARY_PATH`, no stdin, stdout and stderr piped.
pub fn program_in(dir: &Path, name: &str, args: &[&str]) -> std::process::Command {
    use std::process::Stdio;
    let mut c = Command::new(name);
    c.args(args)
        .env("LD_LIBRARY_PATH", dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// `softrdma run -- name args` with `dir`'s `softrdma` (see
/// [`ensure_built`]), no stdin, stdout and stderr piped. With `host` =
/// (network namespace, address) it runs on that host: `ip netns exec NS`
/// with the device on `SOFTRDMA_ADDR` = address (`ip netns exec` keeps the
/// environment).
pub fn run_on(dir: &Path, host: Option<(&str, &str)>, name: &str, args: &[&str]) -> Command {
    use std::process::Stdio;
    let mut c = match host {
        None => Command::new(dir.join("softrdma")),
        Some((ns, addr)) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(dir.join("softrdma"));
            c.env("SOFTRDMA_ADDR", addr);
            c
        }
    };
    c.arg("run").arg("--").arg(name).args(args);
    c.env_remove("LD_PRELOAD")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// `objdump FLAG lib`'s output (`-T` the dynamic symbols, `-p` the headers;
/// binutils).
pub fn objdump(flag: &str, lib: &Path) -> String {
    let out = Command::new("objdump")
        .arg(flag)
        .arg(lib)
        .output()
        .expect("run objdump (binutils)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The "VERSION NAME KIND" list of `lib`'s default exports in the version
/// nodes named `prefix`* (`scripts/gen-exports.sh`) — what a shim's
/// `src/exports.txt` holds.
pub fn exports_of(prefix: &str, lib: &Path) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/gen-exports.sh");
    let out = Command::new("sh")
        .arg(script)
        .arg(prefix)
        .arg(lib)
        .output()
        .expect("run scripts/gen-exports.sh (needs objdump)");
    assert!(
        out.status.success(),
        "gen-exports.sh {}: {}",
        lib.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
