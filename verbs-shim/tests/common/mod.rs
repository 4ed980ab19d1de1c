//! What the shim's tests share beyond `test_support`: where our
//! `libibverbs.so.1` is, and running real programs against it with a
//! deadline (a hang fails the test).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;
use test_support::net::wait_listening;
use test_support::procs::{all_text, finish};
use test_support::serial::serial;
use test_support::shim;

/// The installed rdma-core library the shim replaces.
pub const SYSTEM_LIB: &str = "/usr/lib/x86_64-linux-gnu/libibverbs.so.1";

/// The directory holding our `libibverbs.so` — `target/<profile>/`, found
/// from this test executable's path, so it follows `CARGO_TARGET_DIR` and
/// the profile. The library is built if missing (`cargo build -p
/// verbs-shim`), and `libibverbs.so.1` is made there as a symlink to it:
/// that directory goes first on `LD_LIBRARY_PATH`.
pub fn lib_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = shim::own_profile_dir();
        shim::ensure_built(&dir, false);
        shim::link_soname(&dir);
        dir
    })
}

pub fn shim_lib() -> PathBuf {
    lib_dir().join("libibverbs.so")
}

/// A real program with our library first on `LD_LIBRARY_PATH`.
pub fn program(name: &str, args: &[&str]) -> Command {
    shim::program_in(lib_dir(), name, args)
}

/// Run a program to completion (deadline 60 s); it must exit 0. Its stdout
/// and stderr together.
pub fn run_ok(name: &str, args: &[&str]) -> String {
    let child = program(name, args).spawn().unwrap_or_else(|e| {
        panic!("{name}: {e} (is the Debian package installed? scripts/test.sh installs it)")
    });
    let out = finish(name, child, Duration::from_secs(60));
    let all = all_text(&out);
    assert!(
        out.status.success(),
        "{name} {args:?}: {}\n{all}",
        out.status
    );
    all
}

/// Run `name server_args` then, once it listens on TCP `port`, `name
/// client_args 127.0.0.1`; both must exit 0. Returns (server, client) output.
/// Pairs run one at a time ([`serial`]: they share 2 cores).
pub fn pair(name: &str, port: u16, server_args: &[&str], client_args: &[&str]) -> (String, String) {
    let _g = serial();
    let p = port.to_string();
    let mut sargs: Vec<&str> = server_args.to_vec();
    sargs.extend(["-p", &p]);
    let server = program(name, &sargs)
        .spawn()
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    // Ready once its out-of-band TCP port listens (a probe connection would
    // use up the one connection these servers accept).
    assert!(
        wait_listening(None, port, Duration::from_secs(20)),
        "{name} server never listened on {port}"
    );
    let mut cargs: Vec<&str> = client_args.to_vec();
    cargs.extend(["-p", &p, "127.0.0.1"]);
    let client = program(name, &cargs)
        .spawn()
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let c = finish(&format!("{name} client"), client, Duration::from_secs(60));
    let s = finish(&format!("{name} server"), server, Duration::from_secs(30));
    let (so, co) = (all_text(&s), all_text(&c));
    assert!(
        s.status.success() && c.status.success(),
        "{name}: server {}, client {}\n--- server:\n{so}\n--- client:\n{co}",
        s.status,
        c.status
    );
    (so, co)
}

/// Compile `tests/c/NAME.c` (linked with -libverbs: the installed library's
/// symbol versions, which ours exports too) into a temporary directory;
/// `None` (the test skips) where libibverbs-dev is not installed.
pub fn compile(name: &str) -> Option<PathBuf> {
    compile_with(name, &[])
}

/// [`compile`] with extra compiler arguments (e.g. `-D` feature macros).
pub fn compile_with(name: &str, extra: &[&str]) -> Option<PathBuf> {
    if !test_support::tools::have_header("infiniband/verbs.h", "libibverbs-dev") {
        return None;
    }
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/c/{name}.c"));
    let dir = std::env::temp_dir().join(format!("verbs-shim-c-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join(name);
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(&cc)
        .args(["-std=gnu11", "-O1", "-Wall", "-Werror"])
        .args(extra)
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .args(["-libverbs", "-pthread"])
        .output()
        .expect("run cc");
    assert!(
        out.status.success(),
        "{cc} failed on {} (needs libibverbs-dev):\n{}",
        src.display(),
        test_support::procs::text(&out.stderr)
    );
    Some(exe)
}
