//! End to end, with real processes through the shim's `libibverbs.so.1`:
//! a Rust program on the `ibverbs` crate (SEND/RECV, RDMA WRITE into ODP)
//! between two processes; perftest's `ib_write_bw --odp` between two
//! network-namespace hosts; the verbs-level ODP race (WRITEs while the
//! target unmaps and remaps) and a variant proving its check can fail.
//! Programs start through `softrdma run` (or with `LD_LIBRARY_PATH` set by
//! hand); every run has a deadline, a hang fails.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use test_support::net::{two_hosts, wait_listening};
use test_support::serial::serial;
use test_support::shim;

const VERBS_PAIR: &str = env!("CARGO_BIN_EXE_verbs_pair");
const ODP_RACE: &str = env!("CARGO_BIN_EXE_odp_race");

/// `target/<profile>/`: this crate's programs, `softrdma` and the shim. The
/// latter two are built here if missing (`cargo test -p e2e-tests` alone
/// builds neither: they belong to other packages).
fn target_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = shim::profile_dir(Path::new(VERBS_PAIR));
        shim::ensure_built(&dir, true);
        dir.canonicalize().unwrap()
    })
}

/// `softrdma run -- PROGRAM ARGS`, output piped.
fn softrdma_run(prog: &str, args: &[&str]) -> Command {
    let mut c = Command::new(target_dir().join("softrdma"));
    c.args(["run", "--", prog]).args(args);
    piped(c)
}

fn piped(mut c: Command) -> Command {
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// A running program whose stdout is read by a thread: lines arrive on a
/// channel (so a test can wait for `PORT n`) and are kept for the end. Its
/// stderr is drained by another thread (a full pipe would stall the
/// program's logging device threads).
struct Proc {
    name: String,
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

struct Done {
    status: ExitStatus,
    out: String,
}

impl Proc {
    fn spawn(name: &str, mut cmd: Command) -> Proc {
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: {e} (scripts/test.sh installs the tools)"));
        let stdout = child.stdout.take().unwrap();
        let mut err = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        Proc {
            name: name.into(),
            child,
            lines,
            seen: vec![],
            stderr: Some(stderr),
        }
    }

    /// Wait for a stdout line starting with `prefix`; the rest of it.
    fn wait_line(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if let Some(rest) = l.strip_prefix(prefix) {
                        return rest.trim().to_string();
                    }
                }
                Err(_) => {
                    let _ = self.child.kill();
                    let d = self.finish(Duration::from_secs(5));
                    panic!("{}: no {prefix:?} line:\n{}", self.name, d.out);
                }
            }
        }
    }

    /// Wait for the exit (at most `limit`; a hang is killed and fails).
    fn finish(&mut self, limit: Duration) -> Done {
        let t = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if t.elapsed() > limit {
                let _ = self.child.kill();
                let _ = self.child.wait();
                let out = self.collect();
                panic!("{}: no exit after {limit:?}:\n{out}", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Done {
            status,
            out: self.collect(),
        }
    }

    fn collect(&mut self) -> String {
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.seen.push(l);
        }
        let err = self
            .stderr
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        format!("{}\n--- stderr:\n{err}", self.seen.join("\n"))
    }
}

/// The program's `LIB` line names the shim in `target_dir()` — not the
/// system library, nor the copy ibverbs-sys builds in its OUT_DIR.
fn assert_shim_loaded(out: &str) {
    let lib = out
        .lines()
        .find_map(|l| l.strip_prefix("LIB "))
        .unwrap_or_else(|| panic!("no LIB line:\n{out}"));
    assert_eq!(
        Path::new(lib).parent(),
        Some(target_dir()),
        "loaded {lib}, not the shim:\n{out}"
    );
    assert!(out.contains("DEVICE softrdma0"), "{out}");
}

#[test]
fn ibverbs_crate_send_and_odp_write_between_two_processes() {
    let _g = serial();
    // Server through `softrdma run`, client with LD_LIBRARY_PATH by hand.
    let mut server = Proc::spawn("verbs_pair server", softrdma_run(VERBS_PAIR, &["server"]));
    let port = server.wait_line("PORT ");
    let mut c = Command::new(VERBS_PAIR);
    c.args(["client", &format!("127.0.0.1:{port}")])
        .env("LD_LIBRARY_PATH", target_dir());
    let mut client = Proc::spawn("verbs_pair client", piped(c));
    let c = client.finish(Duration::from_secs(60));
    let s = server.finish(Duration::from_secs(30));
    assert!(
        s.status.success() && c.status.success(),
        "server {}, client {}\n--- server:\n{}\n--- client:\n{}",
        s.status,
        c.status,
        s.out,
        c.out
    );
    for out in [&s.out, &c.out] {
        assert_shim_loaded(out);
        assert!(
            out.contains("CRATE SEND/RECV ok: 32 messages of 4096 bytes"),
            "{out}"
        );
        assert!(
            out.contains("FFI WRITE+SEND ok: 1048576 bytes written"),
            "{out}"
        );
    }
    assert!(s.out.contains("into the ODP region"), "{}", s.out);
}

#[test]
fn the_shim_serves_the_program_and_the_system_library_would_not() {
    // Through the shim: the crate's device list is the soft device.
    let mut p = Proc::spawn("verbs_pair devices", softrdma_run(VERBS_PAIR, &["devices"]));
    let d = p.finish(Duration::from_secs(30));
    assert!(d.status.success(), "{}", d.out);
    assert_shim_loaded(&d.out);
    // The same program on the system's libibverbs.so.1 (no RDMA in this
    // kernel) finds no device: the runs here really go through the shim.
    let mut c = Command::new(VERBS_PAIR);
    c.arg("devices").env_remove("LD_LIBRARY_PATH");
    let mut p = Proc::spawn("verbs_pair devices (system library)", piped(c));
    let d = p.finish(Duration::from_secs(30));
    assert!(!d.status.success(), "{}", d.out);
    assert!(!d.out.contains("softrdma0"), "{}", d.out);
    let lib = d
        .out
        .lines()
        .find_map(|l| l.strip_prefix("LIB "))
        .unwrap_or("");
    assert!(
        !lib.starts_with(target_dir().to_str().unwrap()),
        "system run loaded {lib}"
    );
}

/// Run the ODP race for `seconds`; (owner, writer) outputs.
fn odp_race(seconds: &str, teeth: bool) -> (Done, Done) {
    let _g = serial();
    let shm = std::env::temp_dir().join(format!(
        "odp-race-{}-{}.shm",
        std::process::id(),
        teeth as u8
    ));
    let shm_s = shm.to_str().unwrap();
    let mut args = vec!["owner", shm_s, "--seconds", seconds];
    if teeth {
        args.push("--teeth");
    }
    let mut owner = Proc::spawn("odp_race owner", softrdma_run(ODP_RACE, &args));
    let port = owner.wait_line("PORT ");
    let addr = format!("127.0.0.1:{port}");
    let mut writer = Proc::spawn(
        "odp_race writer",
        softrdma_run(ODP_RACE, &["writer", shm_s, &addr]),
    );
    let w = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        writer.finish(Duration::from_secs(90))
    }));
    let w = w.unwrap_or_else(|e| {
        let _ = owner.child.kill();
        let o = owner.finish(Duration::from_secs(10));
        panic!(
            "{}\n--- owner:\n{}",
            e.downcast_ref::<String>().cloned().unwrap_or_default(),
            o.out
        )
    });
    let o = owner.finish(Duration::from_secs(30));
    let _ = std::fs::remove_file(&shm);
    (o, w)
}

/// The owner's summary: `name=value` pairs.
fn summary(out: &str) -> impl Fn(&str) -> u64 + '_ {
    let line = out
        .lines()
        .find(|l| l.starts_with("odp_race: "))
        .unwrap_or_else(|| panic!("no summary:\n{out}"));
    move |k: &str| {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(&format!("{k}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {k} in {line}"))
    }
}

/// Print the owner's summary line (visible with `--nocapture`).
fn print_race_summary(o: &Done) {
    eprintln!(
        "{}",
        o.out
            .lines()
            .find(|l| l.starts_with("odp_race"))
            .unwrap_or("")
    );
}

/// An honest-device race: printed, both programs succeeded, both on the shim.
fn assert_clean_race(o: &Done, w: &Done) {
    print_race_summary(o);
    assert!(
        o.status.success() && w.status.success(),
        "owner {}, writer {}\n--- owner:\n{}\n--- writer:\n{}",
        o.status,
        w.status,
        o.out,
        w.out
    );
    assert_shim_loaded(&o.out);
    assert_shim_loaded(&w.out);
}

#[test]
fn odp_race_writes_while_the_owner_unmaps_and_remaps() {
    let (o, w) = odp_race("3", false);
    assert_clean_race(&o, &w);
    let n = summary(&o.out);
    assert_eq!(n("violations"), 0, "{}", o.out);
    assert_eq!(
        n("stale") + n("stale_pages_early") + n("silent_in_hole"),
        0,
        "{}",
        o.out
    );
    assert!(n("holes") >= 10, "{}", o.out);
    assert_eq!(n("other_errors"), 0, "{}", o.out);
    assert!(n("remaps") >= 100, "{}", o.out);
    assert!(n("writes_ok") >= 1000, "{}", o.out);
    // Holes were hit: remote access errors, each followed by a fresh QP pair.
    assert!(n("access_errors") >= 1, "{}", o.out);
    assert_eq!(n("reconnects"), n("access_errors"), "{}", o.out);
    // Discards: the device saw zero pages, and WRITEs after a discard
    // landed in the fresh ones.
    assert!(n("discards") >= 50, "{}", o.out);
    assert_eq!(n("discard_not_zero"), 0, "{}", o.out);
    assert!(n("landed_after_discard") >= 1, "{}", o.out);
    // Read-only windows: nothing written through them, no success inside
    // one, and WRITEs hitting them failed with REM_ACCESS_ERR.
    assert!(n("protects") >= 50, "{}", o.out);
    assert_eq!(n("written_while_read_only"), 0, "{}", o.out);
    assert_eq!(n("silent_while_read_only"), 0, "{}", o.out);
    assert!(n("access_errors_read_only") >= 1, "{}", o.out);
}

#[test]
fn odp_race_check_reports_old_data_in_a_new_mapping() {
    // The owner copies each part's old contents into its new mapping, as a
    // device letting pre-unmap WRITEs through would, and leaves its "holes"
    // mapped, as if a device completed WRITEs into nothing: both checks
    // must see it.
    let (o, w) = odp_race("2", true);
    assert!(w.status.success(), "writer:\n{}", w.out);
    assert!(
        o.status.success(),
        "owner (exit 0 iff violations found):\n{}",
        o.out
    );
    print_race_summary(&o);
    let n = summary(&o.out);
    assert!(n("violations") > 0, "{}", o.out);
    assert!(n("stale") + n("stale_pages_early") > 0, "{}", o.out);
    assert!(n("silent_in_hole") > 0, "{}", o.out);
    // Old contents back over a discarded part; read-only windows left
    // writable, so WRITEs change the part and succeed inside them.
    assert!(n("discard_not_zero") > 0, "{}", o.out);
    assert!(n("written_while_read_only") > 0, "{}", o.out);
    assert!(n("silent_while_read_only") > 0, "{}", o.out);
    assert!(
        (o.out.contains("a WRITE completed before the remap began")
            || o.out.contains("was replaced)"))
            && o.out.contains("succeeded inside a hole"),
        "{}",
        o.out
    );
}

#[test]
fn ib_write_bw_odp_between_two_network_namespace_hosts() {
    let _g = serial();
    let pid = std::process::id();
    let Some(hosts) = two_hosts("e2ew", [10, 78, 0]) else {
        return;
    };
    let (n1, n2) = (&hosts.ns[0], &hosts.ns[1]);
    let port = 18600 + (pid % 100) as u16;
    let p = port.to_string();
    let softrdma = target_dir().join("softrdma");
    let host = |ns: &str, addr: &str, extra: &[&str]| {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, "env", &format!("SOFTRDMA_ADDR={addr}")])
            .arg(&softrdma)
            .args([
                "run",
                "--",
                "ib_write_bw",
                "--odp",
                "-d",
                "softrdma0",
                "-x",
                "1",
            ])
            .args(["-s", "65536", "-n", "1000", "-p", &p])
            .args(extra);
        piped(c)
    };
    let mut server = Proc::spawn("ib_write_bw server", host(n1, "10.78.0.1", &[]));
    if !wait_listening(Some(n1), port, Duration::from_secs(20)) {
        let _ = server.child.kill();
        panic!(
            "server never listened:\n{}",
            server.finish(Duration::from_secs(5)).out
        );
    }
    let mut client = Proc::spawn("ib_write_bw client", host(n2, "10.78.0.2", &["10.78.0.1"]));
    let c = client.finish(Duration::from_secs(90));
    let s = server.finish(Duration::from_secs(30));
    assert!(
        s.status.success() && c.status.success(),
        "server {}, client {}\n--- server:\n{}\n--- client:\n{}",
        s.status,
        c.status,
        s.out,
        c.out
    );
    for (out, me, peer) in [
        (&s.out, "10:78:00:01", "10:78:00:02"),
        (&c.out, "10:78:00:02", "10:78:00:01"),
    ] {
        assert!(out.contains("RDMA_Write BW Test"), "{out}");
        assert!(out.contains("Device         : softrdma0"), "{out}");
        assert!(out.contains("Link type       : Ethernet"), "{out}");
        // veth's 1500-byte MTU: the largest IB MTU that fits is 1024.
        assert!(out.contains("Mtu             : 1024[B]"), "{out}");
        let gids: Vec<&str> = out
            .lines()
            .filter(|l| l.trim_start().starts_with("GID:"))
            .collect();
        assert!(
            gids.len() == 2 && gids[0].ends_with(me) && gids[1].ends_with(peer),
            "local then remote GID of the veth addresses: {gids:?}\n{out}"
        );
        assert!(
            out.contains(
                " #bytes     #iterations    BW peak[MB/sec]    BW average[MB/sec]   MsgRate[Mpps]"
            ),
            "{out}"
        );
        let row: Vec<f64> = out
            .lines()
            .find(|l| l.split_whitespace().take(2).eq(["65536", "1000"]))
            .unwrap_or_else(|| panic!("no result row:\n{out}"))
            .split_whitespace()
            .map(|x| x.parse().unwrap())
            .collect();
        assert_eq!(row.len(), 5, "{row:?}");
        assert!(row[2] > 0.0 && row[3] > 0.0 && row[4] > 0.0, "{row:?}");
        assert!(row[3] <= row[2] * 1.0001, "average above peak: {row:?}");
        let rate = row[3] / 65536.0 * 1_048_576.0 / 1e6;
        assert!(
            (rate - row[4]).abs() <= 0.01 * row[4] + 1e-5,
            "MsgRate {} vs BW/size {rate}",
            row[4]
        );
    }
    drop(hosts);
}

#[test]
fn odp_race_between_two_network_namespace_hosts() {
    // The owner on one host, the writer on the other (veth, MTU 1024): the
    // same checks as on loopback. The shared words and the clock are the
    // machine's, so they work across namespaces.
    let _g = serial();
    let Some(hosts) = two_hosts("e2er", [10, 78, 0]) else {
        return;
    };
    let (n1, n2) = (&hosts.ns[0], &hosts.ns[1]);
    let shm = std::env::temp_dir().join(format!("odp-race-ns-{}.shm", std::process::id()));
    let shm_s = shm.to_str().unwrap();
    let softrdma = target_dir().join("softrdma");
    let host = |ns: &str, addr: &str, args: &[&str]| {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, "env", &format!("SOFTRDMA_ADDR={addr}")])
            .arg(&softrdma)
            .args(["run", "--", ODP_RACE])
            .args(args);
        piped(c)
    };
    let mut owner = Proc::spawn(
        "odp_race owner",
        host(
            n1,
            "10.78.0.1",
            &["owner", shm_s, "--seconds", "3", "--listen", "10.78.0.1"],
        ),
    );
    let port = owner.wait_line("PORT ");
    let mut writer = Proc::spawn(
        "odp_race writer",
        host(
            n2,
            "10.78.0.2",
            &["writer", shm_s, &format!("10.78.0.1:{port}")],
        ),
    );
    let w = writer.finish(Duration::from_secs(90));
    let o = owner.finish(Duration::from_secs(30));
    let _ = std::fs::remove_file(&shm);
    assert_clean_race(&o, &w);
    let n = summary(&o.out);
    assert_eq!(n("violations"), 0, "{}", o.out);
    assert_eq!(n("other_errors"), 0, "{}", o.out);
    assert!(n("writes_ok") >= 100, "{}", o.out);
    assert!(n("discards") >= 10 && n("protects") >= 10, "{}", o.out);
    assert_eq!(n("reconnects"), n("access_errors"), "{}", o.out);
}
