//! rdma-core's own verbs tests (pyverbs: Debian `python3-pyverbs`, sources
//! under `/usr/share/doc/rdma-core/tests`) through our `libibverbs.so.1`, one
//! test here per module, each under a deadline. A module passes when it has
//! no failure and no error, and skips only what [`HARDWARE_SKIPS`] names:
//! hardware the device does not emulate. docs/CONFORMANCE.md has the table.

mod common;
use common::*;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;
use test_support::procs::finish;
use test_support::tools;

/// Where Debian's `rdma-core` documentation keeps the suite.
const SUITE: &str = "/usr/share/doc/rdma-core/tests";

/// The system interpreter: pyverbs is installed for it, not for any other
/// `python3` a PATH may put first.
const PYTHON: &str = "/usr/bin/python3";

/// Skip reasons (a prefix of each) that are allowed: the device emulates no
/// device memory, no GPU, no dma-buf exporter and no raw Ethernet QPs.
const HARDWARE_SKIPS: &[&str] = &[
    "Device memory is not supported",
    "Allocating dmabuf is not supported",
    "Create Raw Packet QP",
];

/// The skip of the huge-page tests, allowed only where no 2 MiB huge page is
/// reserved (scripts/test.sh reserves them where it may).
const NO_HUGE_PAGES: &str = "There are no huge pages of size 2M allocated";

/// Whether 2 MiB huge pages are reserved (what the suite's check reads).
fn huge_pages_reserved() -> bool {
    fs::read_to_string("/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .is_some_and(|n| n > 0)
}

/// A deadline for one module: a hang fails it instead of stalling the suite.
const DEADLINE: Duration = Duration::from_secs(300);

/// What one module run printed, counted.
#[derive(Debug, Default)]
struct Outcome {
    ran: usize,
    failed: Vec<String>,
    skipped: Vec<String>,
    ok: bool,
}

/// Reads unittest's verbose report: the `FAIL:`/`ERROR:` headers, every
/// `skipped '…'` reason, the `Ran N tests` line and the final `OK`.
fn parse(out: &str) -> Outcome {
    let mut o = Outcome::default();
    for line in out.lines() {
        if let Some(t) = line.strip_prefix("FAIL: ").or(line.strip_prefix("ERROR: ")) {
            o.failed.push(t.to_string());
        }
        if let Some(i) = line.find("skipped '") {
            let reason = &line[i + "skipped '".len()..];
            o.skipped
                .push(reason.strip_suffix('\'').unwrap_or(reason).to_string());
        }
        if let Some(n) = line.strip_prefix("Ran ") {
            o.ran = n
                .split(' ')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
        }
        if line == "OK" || line.starts_with("OK (") {
            o.ok = true;
        }
    }
    o
}

/// A private copy of the suite with its compressed files unpacked (Debian
/// gzips the larger ones), made once per test binary.
fn suite() -> Option<&'static Path> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| {
        if !Path::new(SUITE).join("run_tests.py").exists()
            && !Path::new(SUITE).join("run_tests.py.gz").exists()
        {
            tools::unavailable(
                "rdma-core's pyverbs tests",
                "python3-pyverbs is not installed",
            );
            return None;
        }
        if !tools::works(PYTHON, &["-c", "import pyverbs.device"]) {
            return None;
        }
        let root = lib_dir().join("pyverbs-suite");
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).expect("suite directory");
        let st = Command::new("cp")
            .args(["-r", SUITE])
            .arg(&root)
            .status()
            .expect("cp");
        assert!(st.success(), "copying {SUITE}");
        let tests = root.join("tests");
        let st = Command::new("sh")
            .arg("-c")
            .arg("ls *.gz >/dev/null 2>&1 && gunzip -f *.gz || true")
            .current_dir(&tests)
            .status()
            .expect("gunzip");
        assert!(st.success(), "unpacking the suite");
        Some(tests)
    })
    .as_deref()
}

/// Runs `tests.<module>` through the shim and checks its outcome; the
/// counts go to stderr (`--nocapture` shows them).
fn module(name: &str) {
    let Some(dir) = suite() else { return };
    let log = dir.join(format!("{name}.log"));
    let out = File::create(&log).expect("log file");
    // A file, not a pipe: a module's report can outgrow a pipe's buffer.
    let mut cmd = Command::new(PYTHON);
    cmd.args(["run_tests.py", "-v", &format!("tests.{name}")])
        .current_dir(dir)
        .env("LD_LIBRARY_PATH", lib_dir())
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup"))
        .stderr(out);
    let rdmacm = name == "test_rdmacm";
    if rdmacm {
        // librdmacm.so.1 beside the shim, and the file-system face
        // preloaded as `softrdma run` does: without the device's net
        // interface in /sys the module skips every test.
        test_support::shim::ensure_rdmacm_built(lib_dir());
        test_support::shim::ensure_built(lib_dir(), true);
        cmd.env("LD_PRELOAD", lib_dir().join("libsoftrdma_fsface.so"));
    }
    let child = cmd.spawn().expect("python3");
    let status = finish(name, child, DEADLINE).status;
    let text = fs::read_to_string(&log).unwrap_or_default();
    let o = parse(&text);
    let no_huge_pages = !huge_pages_reserved();
    let bad_skips: Vec<&String> = o
        .skipped
        .iter()
        .filter(|r| !HARDWARE_SKIPS.iter().any(|h| r.starts_with(h)))
        .filter(|r| !(no_huge_pages && r.starts_with(NO_HUGE_PAGES)))
        .collect();
    eprintln!(
        "pyverbs {name}: ran {}, failed/errors {}, skipped {} ({} allowed)",
        o.ran,
        o.failed.len(),
        o.skipped.len(),
        o.skipped.len() - bad_skips.len()
    );
    assert!(
        status.success() && o.ok && o.failed.is_empty() && o.ran > 0,
        "{name}: {status}, failures/errors {:?}\n{text}",
        o.failed
    );
    assert!(
        bad_skips.is_empty(),
        "{name}: skipped for something the device should do: {bad_skips:?}\n{text}"
    );
}

macro_rules! modules {
    ($($m:ident),* $(,)?) => {$(
        #[test]
        fn $m() {
            module(stringify!($m));
        }
    )*};
}

modules!(
    test_device,
    test_pd,
    test_mr,
    test_cq,
    test_qp,
    test_odp,
    test_atomic,
    test_cqex,
    test_qpex,
    test_cq_events,
    test_addr,
    test_shared_pd,
    test_parent_domain,
    test_fork,
    test_relaxed_ordering,
    test_rdmacm,
);

#[test]
fn the_report_parser_sees_failures_and_skips() {
    let o = parse(
        "test_a (tests.m.C.test_a) ... ok\n\
         test_b (tests.m.C.test_b) ... skipped 'Device memory is not supported'\n\
         test_c (tests.m.C.test_c) ... FAIL\n\
         ======\nFAIL: test_c (tests.m.C.test_c)\n------\nRan 3 tests in 0.1s\n\n\
         FAILED (failures=1, skipped=1)\n",
    );
    assert_eq!(o.ran, 3);
    assert_eq!(o.failed, ["test_c (tests.m.C.test_c)"]);
    assert_eq!(o.skipped, ["Device memory is not supported"]);
    assert!(!o.ok);
    assert!(parse("Ran 2 tests in 0s\n\nOK (skipped=1)\n").ok);
}
