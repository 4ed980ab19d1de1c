//! A hostile local user in the counters' directory (issue 19, findings 2, 3
//! and 5): FIFOs and symlinks named like counter files, a file under a
//! lease, a huge sparse file, a file truncated under a reader, symlinks
//! planted at a device's file names, files of another user and of another
//! PID namespace, forged headers. Each case runs in a private directory
//! (`SOFTRDMA_STATS_DIR`); `softrdma devinfo`, `softrdma stats` and
//! `Device::open` must complete (under a timeout), the attack must fail, be
//! logged once (`SOFTRDMA_LOG=warn`) and, when a device met it, be counted
//! in the device's published counters.
//!
//! The victims are this test binary again (`device_child`, `scan_child`,
//! selected by an environment variable): a device opened when told to (so
//! that files can be planted at names that follow from its pid), or a loop
//! of `publish::published` that reports its peak memory; so is one attacker
//! (`lease_child`, holding a file lease).
//!
//! Forged files are real published files with fields changed at the
//! layout's offsets (`device/publish.rs`): pid 16, uid 20, start time 24,
//! PID namespace 32..48, boot id 48..64, device name 64..96.

use soft_rdma::verbs::{publish, Device};
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{symlink, FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CHILD: &str = "SOFTRDMA_TEST_ATTACKER_CHILD";
const SCANS: &str = "SOFTRDMA_TEST_ATTACKER_SCANS";
const LEASE: &str = "SOFTRDMA_TEST_ATTACKER_LEASE";
/// Far beyond what any of these commands takes on a loaded machine: they
/// either finish in well under a second or hang.
const TIMEOUT: Duration = Duration::from_secs(20);
const NOBODY: u32 = 65534;

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

/// Victim: read the directory `SOFTRDMA_TEST_ATTACKER_SCANS` times, then
/// report how many live devices the last scan found and the peak RSS (kB).
#[test]
fn scan_child() {
    if std::env::var(CHILD).as_deref() != Ok("scan") {
        return;
    }
    let n: usize = std::env::var(SCANS).map_or(1, |s| s.parse().unwrap());
    let mut found = 0;
    for _ in 0..n {
        found = publish::published(None).map_or(0, |d| d.len());
    }
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap();
    println!("\nSCANNED {found} {hwm}");
}

/// Attacker: hold a write lease on the file `SOFTRDMA_TEST_ATTACKER_LEASE`
/// names (any open of it by another process then waits for the lease-break
/// time, 45 s by default, unless non-blocking) until stdin closes.
#[test]
fn lease_child() {
    if std::env::var(CHILD).as_deref() != Ok("lease") {
        return;
    }
    use std::os::fd::AsRawFd;
    // SAFETY: setting a signal's disposition to SIG_IGN installs no handler;
    // the lease-break notice (SIGIO) would otherwise kill this process.
    unsafe { libc::signal(libc::SIGIO, libc::SIG_IGN) };
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(std::env::var(LEASE).unwrap())
        .unwrap();
    // SAFETY: fcntl on a descriptor this function owns and keeps open.
    let r = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETLEASE, libc::F_WRLCK) };
    println!("\n{}", if r == 0 { "LEASED" } else { "NOLEASE" });
    std::io::stdout().flush().unwrap();
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    drop(f);
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

/// Run the `scan_child` `n` times over `dir`: (devices found, peak RSS kB).
fn scan(dir: &Path, n: usize) -> (usize, u64, Output) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "scan_child",
        "--nocapture",
        "--test-threads",
        "1",
    ])
    .env(CHILD, "scan")
    .env(SCANS, n.to_string());
    let o = run(cmd, dir, "a scan of the directory");
    assert!(o.status.success(), "scan: {:?}\n{}", o.status, o.stderr);
    let line = o
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("SCANNED "))
        .unwrap_or_else(|| panic!("no report:\n{}", o.stdout))
        .to_owned();
    let mut w = line.split_whitespace().map(|v| v.parse::<u64>().unwrap());
    let (found, hwm) = (w.next().unwrap() as usize, w.next().unwrap());
    (found, hwm, o)
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

    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
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

fn mkfifo(p: &Path) {
    let s = Command::new("mkfifo").arg(p).status().unwrap();
    assert!(s.success());
}

fn is_root() -> bool {
    fs::metadata("/proc/self").unwrap().uid() == 0
}

/// Field 22 of `/proc/<pid>/stat`: the process's start time.
fn start_time(pid: u32) -> u64 {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &s[s.rfind(')').unwrap() + 1..];
    rest.split_whitespace().nth(19).unwrap().parse().unwrap()
}

/// Write `bytes` as `dir/name` with the header fields `edits` changed
/// (offset, new bytes), owned by `uid` if given.
fn forge(
    dir: &Path,
    name: &str,
    bytes: &[u8],
    edits: &[(usize, &[u8])],
    uid: Option<u32>,
) -> PathBuf {
    let mut b = bytes.to_vec();
    for (at, v) in edits {
        b[*at..*at + v.len()].copy_from_slice(v);
    }
    let p = dir.join(name);
    fs::write(&p, &b).unwrap();
    if let Some(u) = uid {
        std::os::unix::fs::chown(&p, Some(u), Some(u)).unwrap();
    }
    p
}

// Finding 2: a FIFO (and a symlink to one) named like a counters file hung
// every device open and `softrdma stats` (the scan opened and read it).
#[test]
fn fifo_and_symlink_in_the_directory_hang_nothing() {
    let dir = private_dir("fifo");
    let elsewhere = private_dir("fifo-target");
    mkfifo(&dir.join("softrdma.1.0"));
    mkfifo(&elsewhere.join("fifo"));
    symlink(elsewhere.join("fifo"), dir.join("softrdma.1.1")).unwrap();

    let o = softrdma(&dir, &["devinfo"]);
    assert!(o.status.success(), "{}", o.stderr);
    assert!(o.stdout.contains("hca_id:\tsoftrdma0"), "{}", o.stdout);

    let o = softrdma(&dir, &["stats"]);
    assert!(o.status.success(), "{}", o.stderr);
    assert!(
        o.stdout.contains("no live softrdma devices"),
        "{}",
        o.stdout
    );
    for f in ["softrdma.1.0", "softrdma.1.1"] {
        assert_eq!(mentions(&o.stderr, f), 1, "logged once:\n{}", o.stderr);
    }
    assert!(o.stderr.contains("2 refused"), "{}", o.stderr);

    // A device meets them in its sweep (off the open path): logged, counted.
    let mut v = Victim::spawn(&dir);
    v.open();
    await_counter(&dir, v.pid, "stats_dir_refused", 2);
    let pid = v.pid;
    let log = v.close();
    for f in ["softrdma.1.0", "softrdma.1.1"] {
        assert_eq!(mentions(&log, f), 1, "device {pid} logged once:\n{log}");
    }
    // Nothing hostile was removed or followed.
    assert!(dir.join("softrdma.1.0").exists());
    assert!(fs::symlink_metadata(dir.join("softrdma.1.1"))
        .unwrap()
        .is_symlink());
    fs::remove_dir_all(&dir).unwrap();
    fs::remove_dir_all(&elsewhere).unwrap();
}

// Finding 2: a file under its owner's write lease made every blocking open
// of it wait 45 s (the lease-break time).
#[test]
fn a_leased_file_blocks_no_open() {
    let dir = private_dir("lease");
    let leased = dir.join("softrdma.1.0");
    fs::write(&leased, [0u8; 512]).unwrap();
    let mut holder = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "lease_child",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD, "lease")
        .env(LEASE, &leased)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(holder.stdout.take().unwrap());
    let mut line = String::new();
    while !line.starts_with("LEASED") && !line.starts_with("NOLEASE") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "lease holder ended");
    }
    if line.starts_with("NOLEASE") {
        eprintln!("skipped: no file leases here");
        drop(holder.stdin.take());
        holder.wait().unwrap();
        return;
    }
    let o = softrdma(&dir, &["devinfo"]);
    assert!(o.status.success(), "{}", o.stderr);
    let o = softrdma(&dir, &["stats"]);
    assert!(o.status.success(), "{}", o.stderr);
    assert_eq!(mentions(&o.stderr, "softrdma.1.0"), 1, "{}", o.stderr);
    let mut v = Victim::spawn(&dir);
    v.open();
    await_counter(&dir, v.pid, "stats_dir_refused", 1);
    let log = v.close();
    assert_eq!(mentions(&log, "softrdma.1.0"), 1, "{log}");
    drop(holder.stdin.take());
    assert!(holder.wait().unwrap().success());
    fs::remove_dir_all(&dir).unwrap();
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
    assert_eq!(
        mentions(&o.stderr, &planted[2]),
        1,
        "the squatter's symlink is refused, logged once:\n{}",
        o.stderr
    );
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

// Finding 2: a huge sparse file named like a counters file was read whole
// into memory by every scan.
#[test]
fn a_huge_sparse_file_is_not_read() {
    let dir = private_dir("sparse");
    let name = format!("softrdma.{}.0", std::process::id());
    let f = fs::File::create(dir.join(&name)).unwrap();
    f.set_len(512 << 20).unwrap();
    drop(f);
    let (found, hwm_kb, o) = scan(&dir, 1);
    assert_eq!(found, 0);
    assert!(hwm_kb < 64 << 10, "peak RSS {hwm_kb} kB: the file was read");
    assert_eq!(mentions(&o.stderr, &name), 1, "{}", o.stderr);
    let o = softrdma(&dir, &["stats"]);
    assert!(o.status.success(), "{}", o.stderr);
    assert_eq!(mentions(&o.stderr, &name), 1, "{}", o.stderr);
    assert!(dir.join(&name).exists(), "a refused file is never removed");
    fs::remove_dir_all(&dir).unwrap();
}

// Finding 2: a file truncated under a reader that had mapped it killed the
// reader with SIGBUS. Here a copy of a live device's file (so it checks out)
// is truncated and rewritten in a loop while readers scan.
#[test]
fn a_file_truncated_under_readers_is_no_sigbus() {
    let dir = private_dir("truncate");
    let mut v = Victim::spawn(&dir);
    let real = v.open();
    let bytes = fs::read(&real).unwrap();
    let copy = dir.join(format!("softrdma.{}.77", v.pid));
    fs::write(&copy, &bytes).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let toggler = {
        let (stop, copy) = (stop.clone(), copy.clone());
        std::thread::spawn(move || {
            let f = fs::OpenOptions::new().write(true).open(copy).unwrap();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                f.set_len(0).unwrap();
                f.write_all_at(&bytes, 0).unwrap();
                n += 1;
            }
            n
        })
    };
    let (found, _, o) = scan(&dir, 3000);
    assert!(found >= 1, "the real device is still listed");
    assert!(mentions(&o.stderr, "softrdma.") <= 1, "{}", o.stderr);
    for _ in 0..10 {
        let o = softrdma(&dir, &["stats"]);
        assert!(
            o.status.success(),
            "softrdma stats: {:?}\n{}",
            o.status,
            o.stderr
        );
    }
    stop.store(true, Ordering::Relaxed);
    assert!(toggler.join().unwrap() > 0);
    v.kill();
    fs::remove_dir_all(&dir).unwrap();
}

// Finding 5: a scan removed every file whose pid it saw dead, whoever owned
// it and whatever PID namespace it came from. Only the scanner's own files
// of its own namespace may go.
#[test]
fn files_of_other_users_and_namespaces_are_not_removed() {
    if !is_root() {
        eprintln!("skipped: chown to nobody needs root");
        return;
    }
    let dir = private_dir("foreign");
    let mut v = Victim::spawn(&dir);
    let real = v.open();
    let bytes = fs::read(&real).unwrap();
    let pid = v.pid;
    v.kill(); // its own file is now stale: the positive control
    let ns_ino = u64::from_ne_bytes(bytes[40..48].try_into().unwrap());
    let other_user = forge(
        &dir,
        &format!("softrdma.{pid}.100"),
        &bytes,
        &[(20, &NOBODY.to_ne_bytes())],
        Some(NOBODY),
    );
    let other_ns = forge(
        &dir,
        &format!("softrdma.{pid}.101"),
        &bytes,
        &[(40, &(ns_ino ^ 0x5a5a).to_ne_bytes())],
        None,
    );
    let o = softrdma(&dir, &["stats"]);
    assert!(o.status.success(), "{}", o.stderr);
    assert!(
        o.stdout.contains("no live softrdma devices"),
        "{}",
        o.stdout
    );
    assert!(!real.exists(), "the scanner's own stale file is removed");
    assert!(other_user.exists(), "another user's file removed");
    assert!(other_ns.exists(), "another namespace's file removed");
    assert!(
        o.stderr.contains("1 of another PID namespace"),
        "{}",
        o.stderr
    );
    // A device's sweep leaves them too.
    let (found, _, _) = scan(&dir, 1);
    assert_eq!(found, 0);
    assert!(other_user.exists() && other_ns.exists());
    fs::remove_dir_all(&dir).unwrap();
}

// Finding 5, for real: a device in another PID namespace (`unshare`, as
// `--ipc=host` containers share /dev/shm) is neither removed nor listed by a
// reader of the parent namespace, where its pid means another process.
#[test]
fn a_device_in_another_pid_namespace_survives_a_scan() {
    let probe = Command::new("unshare")
        .args(["-p", "-f", "--mount-proc", "true"])
        .stderr(Stdio::null())
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        eprintln!("skipped: cannot create a PID namespace here");
        return;
    }
    let dir = private_dir("pidns");
    let mut v = Victim::spawn_with(&dir, &["unshare", "-p", "-f", "--mount-proc"]);
    let path = v.open();
    let o = softrdma(&dir, &["stats"]);
    assert!(o.status.success(), "{}", o.stderr);
    assert!(path.exists(), "a live device of another namespace removed");
    assert!(
        o.stdout.contains("no live softrdma devices"),
        "{}",
        o.stdout
    );
    assert!(
        o.stderr.contains("1 of another PID namespace"),
        "{}",
        o.stderr
    );
    let (found, _, _) = scan(&dir, 1);
    assert_eq!(found, 0);
    assert!(path.exists());
    v.close();
    assert!(!path.exists(), "removed by its device");
    fs::remove_dir_all(&dir).unwrap();
}

// Finding 5: a forged file was listed as a live device when its pid and
// start time matched a live process, whoever wrote it; and its strings went
// to the terminal as they were.
#[test]
fn forged_headers_are_not_listed() {
    if !is_root() {
        eprintln!("skipped: chown to nobody needs root");
        return;
    }
    let dir = private_dir("forged");
    let mut v = Victim::spawn(&dir);
    let real = v.open();
    let bytes = fs::read(&real).unwrap();
    let me = std::process::id();
    let mine = start_time(me);
    // A live process of nobody's, to forge an honest-looking file for.
    let mut sleeper = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sleep",
            "60",
        ])
        .spawn()
        .unwrap();
    let (q, qs) = (sleeper.id(), {
        std::thread::sleep(Duration::from_millis(100));
        start_time(sleeper.id())
    });
    let n = u32::from_ne_bytes(bytes[12..16].try_into().unwrap());
    let mut evil = [0u8; 32];
    evil[..10].copy_from_slice(b"\x1b[31mEVIL\x07");
    let cases = [
        // nobody claims this (root's) process.
        forge(
            &dir,
            &format!("softrdma.{me}.200"),
            &bytes,
            &[
                (16, &me.to_ne_bytes()),
                (20, &NOBODY.to_ne_bytes()),
                (24, &mine.to_ne_bytes()),
            ],
            Some(NOBODY),
        ),
        // nobody's file claiming root wrote it.
        forge(
            &dir,
            &format!("softrdma.{me}.201"),
            &bytes,
            &[
                (16, &me.to_ne_bytes()),
                (20, &0u32.to_ne_bytes()),
                (24, &mine.to_ne_bytes()),
            ],
            Some(NOBODY),
        ),
        // More counters than the file holds.
        forge(
            &dir,
            &format!("softrdma.{me}.202"),
            &bytes,
            &[
                (12, &(n + 1).to_ne_bytes()),
                (16, &me.to_ne_bytes()),
                (24, &mine.to_ne_bytes()),
            ],
            None,
        ),
    ];
    // nobody's own live process, with a terminal escape for a device name:
    // listed (it checks out), the escape made harmless.
    let honest = forge(
        &dir,
        &format!("softrdma.{q}.0"),
        &bytes,
        &[
            (16, &q.to_ne_bytes()),
            (20, &NOBODY.to_ne_bytes()),
            (24, &qs.to_ne_bytes()),
            (64, &evil),
        ],
        Some(NOBODY),
    );
    let o = softrdma(&dir, &["stats"]);
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert!(o.status.success(), "{}", o.stderr);
    assert!(
        !o.stdout.contains(&format!("(pid {me},")),
        "forged file listed:\n{}",
        o.stdout
    );
    assert_eq!(
        o.stdout.matches(&format!("(pid {},", v.pid)).count(),
        1,
        "{}",
        o.stdout
    );
    assert_eq!(
        o.stdout.matches(&format!("(pid {q},")).count(),
        1,
        "{}",
        o.stdout
    );
    assert!(
        !o.stdout.contains('\x1b') && !o.stdout.contains('\x07'),
        "{:?}",
        o.stdout
    );
    for c in &cases {
        let name = c.file_name().unwrap().to_str().unwrap();
        assert_eq!(mentions(&o.stderr, name), 1, "{name}:\n{}", o.stderr);
        assert!(c.exists(), "a refused file is never removed");
    }
    assert!(o.stderr.contains("3 refused"), "{}", o.stderr);
    assert!(honest.exists());
    v.close();
    fs::remove_dir_all(&dir).unwrap();
}
