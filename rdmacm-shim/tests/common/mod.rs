//! What the librdmacm tests share: the directory holding our
//! `libibverbs.so.1` and `librdmacm.so.1` (built there first), and running
//! programs against them with a deadline (a hang fails the test).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::OnceLock;
use std::time::Duration;
use test_support::procs::{all_text, finish, text};
use test_support::shim;

/// The installed rdma-core library ours replaces.
pub const SYSTEM_LIB: &str = "/usr/lib/x86_64-linux-gnu/librdmacm.so.1";

/// `target/<profile>/` with both libraries and their SONAME links.
pub fn lib_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = shim::own_profile_dir();
        shim::ensure_rdmacm_built(&dir);
        dir
    })
}

pub fn our_lib() -> PathBuf {
    lib_dir().join("librdmacm.so")
}

/// A program with our libraries first on `LD_LIBRARY_PATH`.
pub fn program(name: &str, args: &[&str]) -> Command {
    shim::program_in(lib_dir(), name, args)
}

pub fn spawn(name: &str, args: &[&str]) -> Child {
    program(name, args).spawn().unwrap_or_else(|e| {
        panic!("{name}: {e} (is the Debian package installed? scripts/test.sh installs it)")
    })
}

/// Waits for `child` (deadline `secs`); its output, status checked by the caller.
pub fn wait(what: &str, child: Child, secs: u64) -> Output {
    finish(what, child, Duration::from_secs(secs))
}

#[allow(unused_imports)] // not every test file uses both
pub use test_support::net::{cm_listening, cm_listening_on};

/// A host to run a program on: a network namespace and the address its
/// device takes (`SOFTRDMA_ADDR`).
#[derive(Clone, Copy)]
pub struct Host<'a> {
    pub ns: &'a str,
    pub addr: &'a str,
}

/// [`program`] on `host` (`ip netns exec` keeps the environment), or here.
pub fn program_on(host: Option<Host<'_>>, name: &str, args: &[&str]) -> Command {
    let Some(h) = host else {
        return program(name, args);
    };
    let mut all = vec!["netns", "exec", h.ns, name];
    all.extend_from_slice(args);
    let mut c = program("ip", &all);
    c.env("SOFTRDMA_ADDR", h.addr);
    c
}

/// One run of a pair: `server` started, then, once it holds `port` of `ps`
/// and `settle` more has passed, `client`. Returns (server, client) output
/// and whether both exited 0; a client that fails has its server killed.
pub fn run_pair(
    server: (&str, &[&str]),
    client: (&str, &[&str]),
    ps: u16,
    port: u16,
    settle: Duration,
) -> (String, String, bool) {
    run_pair_on([None, None], server, client, ps, port, settle)
}

/// [`run_pair`] with the server on `hosts[0]` and the client on `hosts[1]`.
pub fn run_pair_on(
    hosts: [Option<Host<'_>>; 2],
    server: (&str, &[&str]),
    client: (&str, &[&str]),
    ps: u16,
    port: u16,
    settle: Duration,
) -> (String, String, bool) {
    let start = |h: Option<Host<'_>>, (name, args): (&str, &[&str])| {
        program_on(h, name, args).spawn().unwrap_or_else(|e| {
            panic!("{name}: {e} (is the Debian package installed? scripts/test.sh installs it)")
        })
    };
    let mut s = start(hosts[0], server);
    let end = std::time::Instant::now() + Duration::from_secs(30);
    while !cm_listening_on(hosts[0].map(|h| h.ns), ps, port) {
        if std::time::Instant::now() > end || s.try_wait().is_ok_and(|x| x.is_some()) {
            let _ = s.kill();
            let o = wait(server.0, s, 5);
            panic!("{} never listened on {port}:\n{}", server.0, all_text(&o));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(settle);
    let c = start(hosts[1], client);
    let co = wait(&format!("{} client", client.0), c, 90);
    if !co.status.success() {
        let _ = s.kill();
    }
    let so = wait(&format!("{} server", server.0), s, 30);
    let ok = so.status.success() && co.status.success();
    (all_text(&so), all_text(&co), ok)
}

/// [`run_pair`], one pair at a time; both must exit 0 within their
/// deadlines. Returns (server, client) output.
pub fn pair(
    server: (&str, &[&str]),
    client: (&str, &[&str]),
    ps: u16,
    port: u16,
    settle: Duration,
) -> (String, String) {
    let _g = test_support::serial::serial();
    let (st, ct, ok) = run_pair(server, client, ps, port, settle);
    assert!(
        ok,
        "{}: failed\n--- server:\n{st}\n--- client:\n{ct}",
        server.0
    );
    (st, ct)
}

/// tests/c/NAME.c compiled against the installed headers, linked with
/// -lrdmacm -libverbs (the installed symbol versions, which ours export);
/// `None` (the test skips) where librdmacm-dev is not installed.
pub fn compile(name: &str) -> Option<PathBuf> {
    if !test_support::tools::have_header("rdma/rdma_cma.h", "librdmacm-dev") {
        return None;
    }
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/c/{name}.c"));
    let dir = std::env::temp_dir().join(format!("rdmacm-shim-c-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join(name);
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(&cc)
        .args(["-std=gnu11", "-O1", "-Wall", "-Werror", "-o"])
        .arg(&exe)
        .arg(&src)
        .args(["-lrdmacm", "-libverbs", "-pthread"])
        .output()
        .expect("run cc");
    assert!(
        out.status.success(),
        "{cc} failed on {} (needs librdmacm-dev):\n{}",
        src.display(),
        text(&out.stderr)
    );
    Some(exe)
}
