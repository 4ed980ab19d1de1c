//! A hostile local user in the counters' directory (issue 19): symlinks
//! planted at a device's file names. Each case runs in a private directory
//! (`SOFTRDMA_STATS_DIR`); `softrdma stats` and `Device::open` must complete
//! (under a timeout), the attack must fail, be logged once
//! (`SOFTRDMA_LOG=warn`) and be counted in the device's published counters.
//!
//! The victim is this test binary again (`device_child`, selected by an
//! environment variable): a device opened when told to, so that files can
//! be planted at names that follow from its pid.

use soft_rdma::verbs::Device;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CHILD: &str = "SOFTRDMA_TEST_ATTACKER_CHILD";
/// Far beyond what any of these commands takes on a loaded machine: they
/// either finish in well under a second or hang.
const TIMEOUT: Duration = Duration::from_secs(20);

/// Victim: open a device when a line arrives on stdin, say where it
/// published, and keep it until stdin closes.
#[test]
fn device_child() {
    if std::env::var(CHILD).as_deref() != Ok("device") {
        return;
    }
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    let dev = Device::open().expect("open device");
    let path = dev.stats_path().map(|p| p.display().to_string());
    println!("\nREADY {}", path.as_deref().unwrap_or("-"));
    std::io::stdout().flush().unwrap();
    let _ = std::io::stdin().read_line(&mut line);
    drop(dev);
}

/// A private counters' directory (and a sibling one for canaries).
fn private_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "softrdma-stats-attacker-{}-{tag}",
        std::process::id()
    ));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

/// Wait for `child`, killing it (and failing) past the timeout.
fn wait_timeout(child: &mut Child, what: &str) -> ExitStatus {
    let t = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if t.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} hung: killed after {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// What [`collect`] read, once the pipe closed (the child is gone).
fn drained(s: &Arc<Mutex<String>>, what: &str) -> String {
    let t = Instant::now();
    while Arc::strong_count(s) > 1 {
        assert!(t.elapsed() < TIMEOUT, "{what}: pipe left open");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::mem::take(&mut *s.lock().unwrap())
}

/// Read a pipe to its end on a thread.
fn collect(mut r: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let s = Arc::new(Mutex::new(String::new()));
    let s2 = s.clone();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        *s2.lock().unwrap() = String::from_utf8_lossy(&buf).into_owned();
    });
    s
}

struct Output {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Run `softrdma ARGS` on `dir` (warnings on) under the timeout.
fn softrdma(dir: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_softrdma"));
    cmd.args(args);
    run(cmd, dir, &format!("softrdma {}", args.join(" ")))
}

fn run(mut cmd: Command, dir: &Path, what: &str) -> Output {
    let mut child = cmd
        .env("SOFTRDMA_STATS_DIR", dir)
        .env("SOFTRDMA_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = collect(child.stdout.take().unwrap());
    let err = collect(child.stderr.take().unwrap());
    let status = wait_timeout(&mut child, what);
    Output {
        status,
        stdout: drained(&out, what),
        stderr: drained(&err, what),
    }
}

/// A `device_child`, waiting for [`Victim::open`].
struct Victim {
    child: Child,
    pid: u32,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl Victim {
    fn spawn(dir: &Path) -> Victim {
        Victim::spawn_with(dir, &[])
    }

    /// Spawned through `wrapper` (e.g. `unshare ...`) if not empty.
    fn spawn_with(dir: &Path, wrapper: &[&str]) -> Victim {
        let exe = std::env::current_exe().unwrap();
        let mut cmd = match wrapper.split_first() {
            Some((w, rest)) => {
                let mut c = Command::new(w);
                c.args(rest).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        let mut child = cmd
            .args([
                "--exact",
                "device_child",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(CHILD, "device")
            .env("SOFTRDMA_STATS_DIR", dir)
            .env("SOFTRDMA_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = channel();
        let out = BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for l in out.lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Victim {
            pid: child.id(),
            stdin: child.stdin.take(),
            stderr: collect(child.stderr.take().unwrap()),
            child,
            lines,
        }
    }

    /// Open the device: the path it published at (under the timeout).
    fn open(&mut self) -> PathBuf {
        writeln!(self.stdin.as_mut().unwrap(), "go").unwrap();
        let t = Instant::now();
        loop {
            let left = TIMEOUT.saturating_sub(t.elapsed());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    if let Some(p) = l.strip_prefix("READY ") {
                        assert_ne!(p, "-", "the device published nothing");
                        return PathBuf::from(p);
                    }
                }
                Err(_) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    panic!(
                        "Device::open hung or failed (killed after {TIMEOUT:?}):\n{}",
                        self.stderr.lock().unwrap()
                    );
                }
            }
        }
    }

    /// Close the device and exit: the child's stderr.
    fn close(mut self) -> String {
        drop(self.stdin.take());
        let s = wait_timeout(&mut self.child, "closing the device");
        let e = drained(&self.stderr, "the victim");
        assert!(s.success(), "victim: {s:?}\n{e}");
        e
    }
}

/// The value of counter `name` in `softrdma stats` output (first table).
fn counter(out: &str, name: &str) -> Option<u64> {
    out.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        (w.next() == Some(name)).then(|| w.next().unwrap().parse().unwrap())
    })
}

/// Poll `softrdma stats PID` until counter `name` reads `want`.
fn await_counter(dir: &Path, pid: u32, name: &str, want: u64) {
    let t = Instant::now();
    let mut last = String::new();
    while t.elapsed() < TIMEOUT {
        let o = softrdma(dir, &["stats", &pid.to_string()]);
        if o.status.success() && counter(&o.stdout, name) == Some(want) {
            return;
        }
        last = o.stdout + &o.stderr;
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{name} never read {want}:\n{last}");
}

fn mentions(log: &str, what: &str) -> usize {
    log.lines().filter(|l| l.contains(what)).count()
}

// Finding 3: symlinks planted at the names a device is about to use (the
// old predictable temporary name, and the final name) make it write nothing
// through them; it publishes under another name and counts the squat.
#[test]
fn symlinks_at_a_devices_names_clobber_nothing() {
    let dir = private_dir("symlink");
    let safe = private_dir("symlink-canary");
    let canary = safe.join("canary");
    let precious = b"precious: must stay as it is\n".repeat(100);
    fs::write(&canary, &precious).unwrap();
    let mut v = Victim::spawn(&dir);
    let planted = [
        format!(".softrdma.{}.0.tmp", v.pid),
        format!(".softrdma.{}.1.tmp", v.pid),
        format!("softrdma.{}.0", v.pid),
    ];
    for p in &planted {
        symlink(&canary, dir.join(p)).unwrap();
    }
    let path = v.open();
    assert_eq!(fs::read(&canary).unwrap(), precious, "canary clobbered");
    assert_ne!(path, dir.join(&planted[2]), "published over the squatter");
    for p in &planted {
        let m = fs::symlink_metadata(dir.join(p)).unwrap();
        assert!(m.is_symlink(), "{p} replaced");
    }
    await_counter(&dir, v.pid, "stats_name_taken", 1);
    let o = softrdma(&dir, &["stats", &v.pid.to_string()]);
    assert_eq!(o.stdout.matches(&format!("(pid {},", v.pid)).count(), 1);
    let pid = v.pid;
    let log = v.close();
    assert_eq!(mentions(&log, &planted[2]), 1, "device {pid}:\n{log}");
    assert_eq!(fs::read(&canary).unwrap(), precious, "canary clobbered");
    // The device's own files are gone; the planted ones stay.
    let mut left: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    let mut want = planted.to_vec();
    want.sort();
    assert_eq!(left, want);
    fs::remove_dir_all(&dir).unwrap();
    fs::remove_dir_all(&safe).unwrap();
}
