//! The device confined the way CI containers confine it.
//!
//! (a) Docker's default seccomp profile refuses `userfaultfd(2)` (EPERM) to a
//! process without CAP_SYS_PTRACE, and its containers have no
//! `/dev/userfaultfd`. The same refusal here: a filter making `userfaultfd`
//! and `ioctl(USERFAULTFD_IOC_NEW)` (how `/dev/userfaultfd` hands one out)
//! fail with EPERM, installed in the child between fork and exec (exec keeps
//! it). The filter is compiled with the `seccompiler` crate: pure Rust, so no
//! libseccomp-dev and no C helper to build. The device must say it fell back
//! (`softrdma devinfo -v`, its log line) and stay correct: the verified ODP
//! benchmarks, an ODP perftest pair, ODP pingpong with its data check, and
//! rdma-core's pyverbs ODP module.
//!
//! (b) CI jobs run as an unprivileged user with the default 8 MiB
//! `RLIMIT_MEMLOCK`: `setpriv` to nobody, `prlimit --memlock=8388608`, the
//! programs and libraries copied to a fresh world-readable directory.
//! Pinned registration past the limit fails with ENOMEM as on a real device
//! (`tests/c/memlock.c`), ODP registration of more does not, and perftest
//! pairs run (pinned within the limit, ODP past it); pinned past it fails.

mod common;
use common::*;
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;
use test_support::net::wait_listening;
use test_support::procs::{all_text, finish};
use test_support::serial::serial;
use test_support::{shim, tools};

/// `_IO(0xAA, 0x00)`: the ioctl of `/dev/userfaultfd` that returns a new one.
const USERFAULTFD_IOC_NEW: u64 = 0xAA00;
/// What odp logs once when it runs without userfaultfd.
const FALLBACK_LOG: &str = "odp: invalidation source: fallback";
const PYVERBS_SUITE: &str = "/usr/share/doc/rdma-core/tests";

/// `target/<profile>/` with the shim, `softrdma` and the file-system face.
fn built() -> PathBuf {
    let dir = shim::own_profile_dir();
    shim::ensure_built(&dir, true);
    shim::link_soname(&dir);
    dir
}

fn softrdma() -> PathBuf {
    built().join("softrdma")
}

/// The filter: `userfaultfd` and `ioctl(_, USERFAULTFD_IOC_NEW)` fail with
/// EPERM; everything else is allowed.
fn no_userfaultfd() -> BpfProgram {
    let ioc_new = SeccompCondition::new(
        1,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::Eq,
        USERFAULTFD_IOC_NEW,
    )
    .unwrap();
    let filter = SeccompFilter::new(
        [
            (libc::SYS_userfaultfd, vec![]),
            (
                libc::SYS_ioctl,
                vec![SeccompRule::new(vec![ioc_new]).unwrap()],
            ),
        ]
        .into_iter()
        .collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        std::env::consts::ARCH.try_into().unwrap(),
    )
    .unwrap();
    filter.try_into().unwrap()
}

/// `cmd`, to run under [`no_userfaultfd`].
fn confined(mut cmd: Command) -> Command {
    let prog = no_userfaultfd();
    // SAFETY: between fork and exec the closure only makes apply_filter's
    // prctl and seccomp calls on a program built before the fork, and maps
    // their error without allocating.
    unsafe {
        cmd.pre_exec(move || {
            seccompiler::apply_filter(&prog).map_err(|e| match e {
                seccompiler::Error::Prctl(e) | seccompiler::Error::Seccomp(e) => e,
                _ => std::io::ErrorKind::InvalidInput.into(),
            })
        });
    }
    cmd
}

/// `softrdma ARGS` (piped, no stdin).
fn softrdma_cmd(args: &[&str]) -> Command {
    let mut c = Command::new(softrdma());
    c.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Run `cmd` to its end (deadline `secs`).
fn run(what: &str, cmd: &mut Command, secs: u64) -> Output {
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: {e} (is it installed? scripts/test.sh installs it)"));
    finish(what, child, Duration::from_secs(secs))
}

/// `server` then, once TCP `port` listens, `client` (each made by `make`
/// from its arguments); both outputs, whatever the statuses.
fn pair(
    make: &dyn Fn(&[&str]) -> Command,
    port: u16,
    server: &[&str],
    client: &[&str],
) -> (Output, Output) {
    let _g = serial();
    let p = port.to_string();
    let mut sargs = server.to_vec();
    sargs.extend(["-p", &p]);
    let s = make(&sargs).spawn().expect("spawn the server");
    assert!(
        wait_listening(None, port, Duration::from_secs(20)),
        "{server:?}: the server never listened on {port}"
    );
    let mut cargs = client.to_vec();
    cargs.extend(["-p", &p, "127.0.0.1"]);
    let c = make(&cargs).spawn().expect("spawn the client");
    let c = finish(&format!("{client:?}"), c, Duration::from_secs(90));
    let s = finish(&format!("{server:?}"), s, Duration::from_secs(30));
    (s, c)
}

/// Both sides exited 0; their outputs.
fn ok_pair(what: &str, (s, c): (Output, Output)) -> (String, String) {
    let (so, co) = (all_text(&s), all_text(&c));
    assert!(
        s.status.success() && c.status.success(),
        "{what}: server {}, client {}\n--- server:\n{so}\n--- client:\n{co}",
        s.status,
        c.status
    );
    (so, co)
}

/// `softrdma run -- PROG ARGS` under the seccomp filter.
fn run_confined(args: &[&str]) -> Command {
    let mut all = vec!["run", "--"];
    all.extend(args);
    confined(softrdma_cmd(&all))
}

/// perftest's result row for `size` bytes (`#bytes #iterations BW...`).
fn has_row(out: &str, size: &str) -> bool {
    out.lines()
        .any(|l| l.split_whitespace().next() == Some(size) && l.split_whitespace().count() >= 4)
}

#[test]
fn seccomp_devinfo_reports_the_fallback() {
    let free = run("devinfo -v", &mut softrdma_cmd(&["devinfo", "-v"]), 30);
    let free = all_text(&free);
    if !free.contains("odp_invalidation:\t\tuserfaultfd (") {
        // Nothing to take away: the control shows the filter is what matters.
        tools::unavailable(
            "userfaultfd",
            &format!("unconfined devinfo -v says:\n{free}"),
        );
        return;
    }
    let o = run(
        "devinfo -v (no userfaultfd)",
        &mut confined(softrdma_cmd(&["devinfo", "-v"])),
        30,
    );
    let out = all_text(&o);
    assert!(o.status.success(), "{out}");
    let line = out
        .lines()
        .find(|l| l.contains("odp_invalidation:"))
        .unwrap_or_else(|| panic!("no odp_invalidation line:\n{out}"));
    assert!(
        line.contains("fallback: guarded copies only (userfaultfd unavailable"),
        "{line}"
    );
    assert!(
        out.contains(FALLBACK_LOG),
        "the log does not say it:\n{out}"
    );
    // Still an ODP device: the capabilities stay announced.
    assert!(out.contains("ODP_SUPPORT"), "{out}");
}

#[test]
fn seccomp_odp_perf_verified() {
    for args in [
        &[
            "perf", "write_bw", "-s", "65536", "-n", "400", "--odp", "--verify",
        ][..],
        &[
            "perf", "read_bw", "-s", "65536", "-n", "200", "--odp", "--verify",
        ],
        &[
            "perf",
            "send_bw",
            "-s",
            "4096",
            "-n",
            "400",
            "--implicit-odp",
            "--verify",
        ],
        &["perf", "atomic_bw", "-n", "400", "--odp", "--verify"],
    ] {
        let _g = serial();
        let o = run(&args.join(" "), &mut confined(softrdma_cmd(args)), 120);
        let out = all_text(&o);
        assert!(
            o.status.success(),
            "softrdma {args:?} without userfaultfd:\n{out}"
        );
        assert!(
            out.contains(FALLBACK_LOG),
            "{args:?}: no fallback line:\n{out}"
        );
    }
}

#[test]
fn seccomp_perftest_pairs() {
    built();
    if !tools::have("ib_write_bw") {
        return;
    }
    let (s, c) = ok_pair(
        "ib_write_bw --odp",
        pair(
            &run_confined,
            20951,
            &["ib_write_bw", "--odp", "-s", "65536", "-n", "2000"],
            &["ib_write_bw", "--odp", "-s", "65536", "-n", "2000"],
        ),
    );
    assert!(has_row(&c, "65536"), "{c}");
    assert!(
        s.contains(FALLBACK_LOG) && c.contains(FALLBACK_LOG),
        "{s}\n{c}"
    );
    let (_, c) = ok_pair(
        "ib_send_bw",
        pair(
            &run_confined,
            20952,
            &["ib_send_bw", "-s", "4096", "-n", "2000"],
            &["ib_send_bw", "-s", "4096", "-n", "2000"],
        ),
    );
    assert!(has_row(&c, "4096"), "{c}");
}

#[test]
fn seccomp_odp_pingpong_checked() {
    built();
    if !tools::have("ibv_rc_pingpong") {
        return;
    }
    let args = [
        "ibv_rc_pingpong",
        "-g",
        "1",
        "-o",
        "-c",
        "-n",
        "300",
        "-s",
        "65536",
    ];
    let (s, c) = ok_pair(
        "ibv_rc_pingpong -o -c",
        pair(&run_confined, 20953, &args, &args),
    );
    for out in [&s, &c] {
        assert!(out.contains("iters in"), "{out}");
        assert!(out.contains(FALLBACK_LOG), "{out}");
    }
}

#[test]
fn seccomp_pyverbs_odp() {
    built();
    if !Path::new(PYVERBS_SUITE).join("run_tests.py").is_file() {
        tools::unavailable(
            "python3-pyverbs",
            &format!("no {PYVERBS_SUITE}/run_tests.py"),
        );
        return;
    }
    // A copy with its modules unpacked (Debian gzips some), as pyverbs.rs.
    let root = std::env::temp_dir().join(format!("pyverbs-confined-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cp -r {PYVERBS_SUITE} . && cd tests && (ls *.gz >/dev/null 2>&1 && gunzip -f *.gz || true)"
        ))
        .current_dir(&root)
        .status()
        .unwrap();
    assert!(st.success(), "copying {PYVERBS_SUITE}");
    let _g = serial();
    let mut cmd = run_confined(&["/usr/bin/python3", "run_tests.py", "-v", "tests.test_odp"]);
    cmd.current_dir(root.join("tests"));
    let o = run("pyverbs tests.test_odp", &mut cmd, 300);
    let out = all_text(&o);
    assert!(
        o.status.success(),
        "pyverbs tests.test_odp without userfaultfd:\n{out}"
    );
    let ran: usize = out
        .lines()
        .find_map(|l| {
            l.strip_prefix("Ran ")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no summary:\n{out}"));
    // Every test passes; a skip only for want of reserved huge pages (as in
    // pyverbs.rs, where scripts/test.sh reserves them).
    // (A test's "ok" may follow the log line on a line of its own.)
    let oks = out
        .lines()
        .filter(|l| l.ends_with(" ok") || l.trim() == "ok")
        .count();
    let huge = out
        .lines()
        .filter(|l| l.contains("skipped 'There are no huge pages of size 2M allocated"))
        .count();
    assert!(
        ran > 0 && oks + huge == ran,
        "{oks} of {ran} passed:\n{out}"
    );
    assert!(out.contains(FALLBACK_LOG), "{out}");
    let _ = std::fs::remove_dir_all(&root);
}

/// A fresh directory everybody can read, holding `softrdma`, the shim
/// (`libibverbs.so.1`) and the face: nobody runs them from there whatever
/// the checkout's permissions.
fn world_readable_copy(tag: &str) -> PathBuf {
    let from = built();
    let dir = std::env::temp_dir().join(format!("softrdma-confined-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (src, dst) in [
        ("softrdma", "softrdma"),
        ("libibverbs.so", "libibverbs.so.1"),
        ("libsoftrdma_fsface.so", "libsoftrdma_fsface.so"),
    ] {
        std::fs::copy(from.join(src), dir.join(dst)).unwrap();
        std::fs::set_permissions(dir.join(dst), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// Whether this process can become nobody (root), else skip.
fn can_setpriv() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        tools::unavailable("root", "setpriv to nobody needs root");
        return false;
    }
    tools::have("setpriv") && tools::have("prlimit")
}

/// `prog args` as nobody:nogroup, no supplementary groups, an 8 MiB
/// `RLIMIT_MEMLOCK`, nobody's HOME, `dir` first on `LD_LIBRARY_PATH`.
fn as_nobody(dir: &Path, prog: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("setpriv");
    c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .args(["prlimit", "--memlock=8388608", "--"])
        .arg(prog)
        .args(args)
        .env("LD_LIBRARY_PATH", dir)
        .env("HOME", "/nonexistent")
        .env_remove("XDG_CACHE_HOME")
        .env_remove("SOFTRDMA_SHIM_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

#[test]
fn nobody_memlock_accounting() {
    if !can_setpriv() {
        return;
    }
    let Some(exe) = compile("memlock") else {
        return;
    };
    let dir = world_readable_copy("memlock");
    std::fs::copy(&exe, dir.join("memlock")).unwrap();
    let exe = dir.join("memlock");
    let o = run(
        "memlock limited (nobody)",
        &mut as_nobody(&dir, &exe, &["limited"]),
        60,
    );
    let out = all_text(&o);
    assert!(
        o.status.success() && out.contains("memlock: ok"),
        "{}\n{out}",
        o.status
    );
    if odp::sys::mlock::has_ipc_lock() {
        // CAP_IPC_LOCK exempts, as in the kernel: the same limit, root's caps.
        let mut c = Command::new("prlimit");
        c.args(["--memlock=8388608", "--"])
            .arg(&exe)
            .arg("exempt")
            .env("LD_LIBRARY_PATH", &dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let o = run("memlock exempt (CAP_IPC_LOCK)", &mut c, 60);
        let out = all_text(&o);
        assert!(
            o.status.success() && out.contains("memlock: ok"),
            "{}\n{out}",
            o.status
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn nobody_perftest_pairs() {
    if !can_setpriv() || !tools::have("ib_write_bw") {
        return;
    }
    let dir = world_readable_copy("perftest");
    let sr = dir.join("softrdma");
    let make = |args: &[&str]| {
        let mut all = vec!["run", "--"];
        all.extend(args);
        as_nobody(&dir, &sr, &all)
    };
    // Pinned, within the limit (perftest registers 2 × 64 KiB per side).
    let bw = ["ib_write_bw", "-s", "65536", "-n", "2000"];
    let (_, c) = ok_pair("ib_write_bw as nobody", pair(&make, 20954, &bw, &bw));
    assert!(has_row(&c, "65536"), "{c}");
    // ODP past the limit: 8 MiB messages (the device's max_msg_sz), perftest
    // registering two per side: 16 MiB.
    let odp = ["ib_write_bw", "--odp", "-s", "8388608", "-n", "20"];
    let (_, c) = ok_pair(
        "ib_write_bw --odp 8 MiB as nobody",
        pair(&make, 20955, &odp, &odp),
    );
    assert!(has_row(&c, "8388608"), "{c}");
    // Pinned past the limit: the registration fails, as on a real device.
    let pinned = ["ib_write_bw", "-s", "8388608", "-n", "20"];
    let (s, c) = pair(&make, 20956, &pinned, &pinned);
    let (so, co) = (all_text(&s), all_text(&c));
    assert!(
        !s.status.success() && so.contains("Couldn't allocate MR"),
        "a pinned 16 MiB registration at an 8 MiB limit:\n--- server:\n{so}\n--- client:\n{co}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
