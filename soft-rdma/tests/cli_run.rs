//! `softrdma run [--] PROGRAM ARGS...`: unmodified Debian verbs programs
//! (ibverbs-utils, perftest) on the soft device through the shim found beside
//! the `softrdma` executable; exit status, signals and the environment pass
//! through; a missing shim is a one-line error saying what to build.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use test_support::net::wait_listening;
use test_support::procs::{all_text, finish};
use test_support::shim;
use test_support::tools::have;

const BIN: &str = env!("CARGO_BIN_EXE_softrdma");

/// `target/<profile>/`, where `softrdma` is and `cargo build -p verbs-shim`
/// puts `libibverbs.so`; built here if missing (`cargo test -p soft-rdma`
/// alone does not build the shim).
fn ensure_shim() -> PathBuf {
    let dir = shim::profile_dir(Path::new(BIN));
    shim::ensure_built(&dir, false);
    dir
}

fn softrdma_run(args: &[&str]) -> Command {
    ensure_shim();
    let mut c = Command::new(BIN);
    c.arg("run")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

#[test]
fn run_ibv_devices_lists_the_soft_device() {
    if !have("ibv_devices") {
        return;
    }
    let o = softrdma_run(&["--", "ibv_devices"]).output().unwrap();
    assert!(o.status.success(), "{}", all_text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().next() == Some("softrdma0")),
        "{out}"
    );
    // `--` is optional when the program is not a flag.
    let o = softrdma_run(&["ibv_devinfo", "-l"]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("softrdma0"),
        "without `--` too: {}",
        all_text(&o)
    );
}

#[test]
fn run_passes_exit_status_signal_and_environment() {
    let o = softrdma_run(&["--", "sh", "-c", "exit 7"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(7), "{}", all_text(&o));
    let o = softrdma_run(&["sh", "-c", "kill -KILL $$"])
        .output()
        .unwrap();
    assert_eq!(o.status.signal(), Some(9), "{:?}", o.status);
    let o = softrdma_run(&["--", "sh", "-c", "echo \"$SOFTRDMA_ADDR|$LD_LIBRARY_PATH\""])
        .env("SOFTRDMA_ADDR", "127.0.0.77")
        .env("LD_LIBRARY_PATH", "/before")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", all_text(&o));
    let shim = ensure_shim().canonicalize().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        format!("127.0.0.77|{}:/before", shim.display())
    );
    assert!(shim.join("libibverbs.so.1").is_file());
    // Arguments after `--` are the program's, even ones that look like flags.
    let o = softrdma_run(&["--", "echo", "--help", "-v"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout), "--help -v\n");
}

#[test]
fn run_preloads_the_file_system_face_before_the_callers_preloads() {
    let dir = shim::profile_dir(Path::new(BIN));
    shim::ensure_built(&dir, true);
    let o = softrdma_run(&["--", "sh", "-c", "echo \"$LD_PRELOAD\""])
        .env("LD_PRELOAD", "libm.so.6")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", all_text(&o));
    let face = dir.canonicalize().unwrap().join("libsoftrdma_fsface.so");
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        format!("{}:libm.so.6", face.display())
    );
}

#[test]
fn run_errors_are_one_line() {
    let empty = std::env::temp_dir().join(format!("softrdma-noshim-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let o = softrdma_run(&["--", "true"])
        .env("SOFTRDMA_SHIM_DIR", &empty)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir(&empty);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("SOFTRDMA_SHIM_DIR=") && err.contains("cargo build -p verbs-shim"),
        "{err}"
    );
    let o = softrdma_run(&["--", "no-such-program-here"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(127), "{}", all_text(&o));
    let o = softrdma_run(&[]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", all_text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("missing PROGRAM"));
}

#[test]
fn run_ib_write_bw_odp_pair() {
    if !have("ib_write_bw") {
        return;
    }
    // Below the ephemeral range, apart from the other tests' ports.
    let port = (18900 + std::process::id() % 100) as u16;
    let p = port.to_string();
    let args = [
        "--",
        "ib_write_bw",
        "-d",
        "softrdma0",
        "-x",
        "1",
        "--odp",
        "-n",
        "500",
        "-p",
        &p,
    ];
    let server = softrdma_run(&args).spawn().unwrap();
    assert!(
        wait_listening(None, port, Duration::from_secs(20)),
        "server never listened"
    );
    let mut cargs = args.to_vec();
    cargs.push("127.0.0.1");
    let client = softrdma_run(&cargs).spawn().unwrap();
    let c = finish("client", client, Duration::from_secs(60));
    let s = finish("server", server, Duration::from_secs(30));
    let (so, co) = (all_text(&s), all_text(&c));
    assert!(
        s.status.success() && c.status.success(),
        "server {}, client {}\n--- server:\n{so}\n--- client:\n{co}",
        s.status,
        c.status
    );
    for out in [&so, &co] {
        assert!(out.contains("Device         : softrdma0"), "{out}");
        assert!(out.contains("RDMA_Write BW Test"), "{out}");
        assert!(
            out.contains("GID: 00:00:00:00:00:00:00:00:00:00:255:255:127:"),
            "{out}"
        );
    }
    let row = co
        .lines()
        .find(|l| l.split_whitespace().take(2).eq(["65536", "500"]))
        .unwrap_or_else(|| panic!("no result row:\n{co}"));
    let avg: f64 = row.split_whitespace().nth(3).unwrap().parse().unwrap();
    assert!(avg > 0.0, "{row}");
}
