//! `softrdma run [--] PROGRAM ARGS...`: runs an unmodified verbs program on the
//! soft device by putting the verbs shim's `libibverbs.so.1` first on
//! `LD_LIBRARY_PATH`, then replacing this process with the program (`exec`),
//! so its exit status and any signal that ends it are the command's own. The
//! rest of the environment (`SOFTRDMA_ADDR`, `SOFTRDMA_PCAP`, ...) passes
//! through unchanged.
//!
//! soft-rdma does not depend on the shim (the crates go verbs-shim →
//! soft-rdma → odp): the library is found at run time, in this order:
//! 1. `SOFTRDMA_SHIM_DIR`, a directory holding `libibverbs.so.1` (or Cargo's
//!    `libibverbs.so`);
//! 2. the directory of this executable: `cargo build -p verbs-shim` puts the
//!    shim (`libibverbs.so`) in the same `target/<profile>/` as `softrdma`;
//! 3. `../lib/softrdma/` from it (the Debian package: `/usr/bin/softrdma`,
//!    `/usr/lib/softrdma/`, never over the system's libibverbs.so.1);
//! 4. the shims this executable carries (`cargo install`; [`crate::bundle`]),
//!    written out to a private per-user cache.
//!
//! The program loader looks for `libibverbs.so.1`; where only Cargo's
//! `libibverbs.so` exists, the `libibverbs.so.1` symlink is made beside it
//! (what `verbs-shim/tools/link.sh` does).
//!
//! Beside the shim, `libsoftrdma_fsface.so` (crate `softrdma-fsface`) goes
//! first in `LD_PRELOAD`: the device's `/dev/infiniband` and
//! `/sys/class/infiniband` entries, for the program and its children only.

use crate::bundle;
use crate::{usage, CliError, CliResult};
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const USAGE: &str = "usage: softrdma run [--] PROGRAM [ARGS...]";

/// The library the program loader looks for, and Cargo's name for the shim.
const SONAME: &str = "libibverbs.so.1";
const CARGO_NAME: &str = "libibverbs.so";
/// The file-system face's library (preloaded).
const FACE: &str = "libsoftrdma_fsface.so";

/// Run `argv` (PROGRAM ARGS...) on the soft device. Returns only on failure.
pub fn run(argv: &[OsString]) -> CliResult<()> {
    let argv = match argv.first() {
        Some(a) if a == "--" => &argv[1..],
        Some(a) if a == "-h" || a == "--help" => {
            println!("{USAGE}\n\nRuns PROGRAM with the soft device's libibverbs.so.1 first on LD_LIBRARY_PATH\n(from SOFTRDMA_SHIM_DIR, else beside this executable, else ../lib/softrdma/,\nelse the copies an installed softrdma carries, written to a private cache in\n$XDG_CACHE_HOME or ~/.cache); the rest of the environment (SOFTRDMA_ADDR,\nSOFTRDMA_PCAP, ...) passes through.");
            return Ok(());
        }
        _ => argv,
    };
    let Some((prog, args)) = argv.split_first() else {
        return usage(format!(
            "run: missing PROGRAM ({USAGE}, e.g. softrdma run -- ibv_devices)"
        ));
    };
    let dir = shim_dir()?;
    let mut path = OsString::from(dir.as_os_str());
    if let Some(old) = std::env::var_os("LD_LIBRARY_PATH").filter(|p| !p.is_empty()) {
        path.push(":");
        path.push(old);
    }
    let mut cmd = Command::new(prog);
    cmd.args(args).env("LD_LIBRARY_PATH", path);
    if let Some(preload) = face_preload(&dir) {
        cmd.env("LD_PRELOAD", preload);
    }
    let err = cmd.exec();
    // `exec` returned: the program could not be started. 127/126 as a shell.
    let code = if err.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    };
    Err(CliError::Exit(
        code,
        format!("run: cannot execute {}: {err}", prog.to_string_lossy()),
    ))
}

/// The file-system face (`fsface/`: `/dev/infiniband`, `/sys/class/infiniband`
/// for the program and its children only) first in `LD_PRELOAD`, when
/// `cargo build -p softrdma-fsface` put it beside the shim.
fn face_preload(dir: &Path) -> Option<OsString> {
    let lib = dir.join(FACE);
    if !lib.is_file() {
        return None;
    }
    let mut v = OsString::from(lib.as_os_str());
    if let Some(old) = std::env::var_os("LD_PRELOAD").filter(|p| !p.is_empty()) {
        v.push(":");
        v.push(old);
    }
    Some(v)
}

/// The directory to put first on `LD_LIBRARY_PATH` (it holds `libibverbs.so.1`).
fn shim_dir() -> CliResult<PathBuf> {
    if let Some(d) = std::env::var_os("SOFTRDMA_SHIM_DIR").filter(|d| !d.is_empty()) {
        let d = PathBuf::from(d);
        return with_soname(&d).map_err(|why| {
            CliError::Runtime(format!(
                "run: SOFTRDMA_SHIM_DIR={} {why}; point it at the directory where `cargo build -p verbs-shim` put libibverbs.so (target/<profile>/)",
                d.display()
            ))
        });
    }
    let exe = std::env::current_exe()
        .and_then(|e| e.canonicalize())
        .map_err(|e| CliError::Runtime(format!("run: cannot find this executable: {e}")))?;
    let dir = exe.parent().unwrap_or(Path::new("/")).to_path_buf();
    let beside = match with_soname(&dir) {
        Ok(d) => return Ok(d),
        Err(why) => why,
    };
    if let Some(packaged) = dir.parent().map(|p| p.join("lib/softrdma")) {
        if packaged.join(SONAME).is_file() {
            return Ok(packaged);
        }
    }
    if bundle::carried() {
        return bundle::dir().map_err(|why| {
            CliError::Runtime(format!(
                "run: no private directory to write the shims this softrdma carries to ({why}); set XDG_CACHE_HOME to a directory of yours"
            ))
        });
    }
    let profile = if dir.ends_with("release") {
        " --release"
    } else {
        ""
    };
    Err(CliError::Runtime(format!(
        "run: the verbs shim is not beside softrdma: {} {beside}; build it with `cargo build -p verbs-shim{profile}` (or set SOFTRDMA_SHIM_DIR)",
        dir.display()
    )))
}

/// The thin `librdmacm.so.1` (crate rdmacm-shim), put beside the shim when
/// built, so that rdma_cm programs run on the soft device too.
const RDMACM_SONAME: &str = "librdmacm.so.1";
const RDMACM_CARGO_NAME: &str = "librdmacm.so";

/// `dir` if it holds `libibverbs.so.1`, making that symlink to Cargo's
/// `libibverbs.so` when only the latter exists; else why not. Makes the
/// `librdmacm.so.1` link likewise when Cargo's `librdmacm.so` is there.
fn with_soname(dir: &Path) -> Result<PathBuf, String> {
    if dir.join(RDMACM_CARGO_NAME).is_file() && !dir.join(RDMACM_SONAME).is_file() {
        let link = dir.join(RDMACM_SONAME);
        let _ = std::fs::remove_file(&link);
        // A failure leaves the installed librdmacm in use: verbs still work.
        let _ = std::os::unix::fs::symlink(RDMACM_CARGO_NAME, &link);
    }
    let soname = dir.join(SONAME);
    if soname.is_file() {
        return Ok(dir.to_path_buf());
    }
    if !dir.join(CARGO_NAME).is_file() {
        return Err(format!("has no {SONAME} (nor Cargo's {CARGO_NAME})"));
    }
    // A dangling link left behind would make `symlink` fail: replace it.
    let _ = std::fs::remove_file(&soname);
    match std::os::unix::fs::symlink(CARGO_NAME, &soname) {
        Ok(()) => Ok(dir.to_path_buf()),
        // Another `softrdma run` made it meanwhile.
        Err(_) if soname.is_file() => Ok(dir.to_path_buf()),
        Err(e) => Err(format!(
            "has {CARGO_NAME} but {SONAME} cannot be made there ({e}); run verbs-shim/tools/link.sh"
        )),
    }
}
