//! Shared by the tests: where our `libibverbs.so.1` is, and running real
//! programs against it with a deadline (a hang fails the test).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// The installed rdma-core library the shim replaces.
pub const SYSTEM_LIB: &str = "/usr/lib/x86_64-linux-gnu/libibverbs.so.1";

/// The directory holding our `libibverbs.so` — `target/<profile>/`, found
/// from this test executable's path (`target/<profile>/deps/NAME-HASH`), so
/// it follows `CARGO_TARGET_DIR` and the profile. The library is built if
/// missing (`cargo build -p verbs-shim`), and `libibverbs.so.1` is made there
/// as a symlink to it: that directory goes first on `LD_LIBRARY_PATH`.
pub fn lib_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().expect("test executable path");
        let dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>/deps/<test>")
            .to_path_buf();
        let so = dir.join("libibverbs.so");
        if !so.exists() {
            let target = dir.parent().expect("target dir");
            let mut cmd = Command::new(env!("CARGO"));
            cmd.args(["build", "-p", "verbs-shim", "--target-dir"])
                .arg(target);
            if dir.file_name().is_some_and(|n| n == "release") {
                cmd.arg("--release");
            }
            let st = cmd.status().expect("run cargo build -p verbs-shim");
            assert!(st.success(), "cargo build -p verbs-shim failed");
        }
        assert!(so.exists(), "{} missing", so.display());
        let link = dir.join("libibverbs.so.1");
        let _ = std::fs::remove_file(&link);
        if let Err(e) = std::os::unix::fs::symlink("libibverbs.so", &link) {
            assert!(link.exists(), "symlink {}: {e}", link.display());
        }
        dir
    })
}

pub fn shim_lib() -> PathBuf {
    lib_dir().join("libibverbs.so")
}

/// A real program with our library first on `LD_LIBRARY_PATH`.
pub fn program(name: &str, args: &[&str]) -> Command {
    let mut c = Command::new(name);
    c.args(args)
        .env("LD_LIBRARY_PATH", lib_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Wait for `child` at most `limit`; kill it and fail on a hang.
pub fn finish(what: &str, mut child: Child, limit: Duration) -> Output {
    let t = Instant::now();
    loop {
        match child.try_wait().expect("wait") {
            Some(_) => return child.wait_with_output().expect("output"),
            None if t.elapsed() > limit => {
                let _ = child.kill();
                let out = child.wait_with_output().expect("output");
                panic!(
                    "{what}: no exit after {limit:?}\nstdout:\n{}\nstderr:\n{}",
                    text(&out.stdout),
                    text(&out.stderr)
                );
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Run a program to completion (deadline 60 s); it must exit 0. Its stdout
/// and stderr together.
pub fn run_ok(name: &str, args: &[&str]) -> String {
    let child = program(name, args).spawn().unwrap_or_else(|e| {
        panic!("{name}: {e} (is the Debian package installed? scripts/test.sh installs it)")
    });
    let out = finish(name, child, Duration::from_secs(60));
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success(),
        "{name} {args:?}: {}\n{all}",
        out.status
    );
    all
}

/// Client/server programs share the CPU (2 cores): one pair at a time.
pub fn serial() -> MutexGuard<'static, ()> {
    static M: Mutex<()> = Mutex::new(());
    M.lock().unwrap_or_else(|e| e.into_inner())
}

/// Run `name server_args` then, once it listens on TCP `port`, `name
/// client_args 127.0.0.1`; both must exit 0. Returns (server, client) output.
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
    let t = Instant::now();
    while !listening(port) {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{name} server never listened on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut cargs: Vec<&str> = client_args.to_vec();
    cargs.extend(["-p", &p, "127.0.0.1"]);
    let client = program(name, &cargs)
        .spawn()
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let c = finish(&format!("{name} client"), client, Duration::from_secs(60));
    let s = finish(&format!("{name} server"), server, Duration::from_secs(30));
    let (so, co) = (
        format!("{}{}", text(&s.stdout), text(&s.stderr)),
        format!("{}{}", text(&c.stdout), text(&c.stderr)),
    );
    assert!(
        s.status.success() && c.status.success(),
        "{name}: server {}, client {}\n--- server:\n{so}\n--- client:\n{co}",
        s.status,
        c.status
    );
    (so, co)
}

/// Whether some socket listens on TCP `port` (IPv4 or IPv6), from /proc.
pub fn listening(port: u16) -> bool {
    let want = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|f| {
        std::fs::read_to_string(f)
            .unwrap_or_default()
            .lines()
            .skip(1)
            .any(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                cols.len() > 3 && cols[1].ends_with(&want) && cols[3] == "0A"
            })
    })
}
