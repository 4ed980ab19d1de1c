//! Counters another process can read: every live device publishes its
//! [`DeviceStats`] in a small file, `/dev/shm/softrdma.<pid>.<n>` (the
//! directory is `SOFTRDMA_STATS_DIR` if set; set it empty to publish
//! nothing), which `softrdma stats` lists and reads — so the counters of an
//! unmodified program running through the shim are visible too, like
//! `/sys/class/infiniband/rxe0/ports/1/hw_counters`.
//!
//! Layout (native endian; one machine): a 128-byte header — magic
//! `SOFTRDMA`, version, counter count `n`, pid, the process's start time
//! (`/proc/<pid>/stat` field 22, to tell a reused pid), device name, local
//! address — then `n` 32-byte names, then `n` 64-bit counters. The header and
//! names are written once, before the file gets its name: written under an
//! unpredictable temporary name created exclusively (`O_EXCL|O_NOFOLLOW`: no
//! planted name is followed or truncated), then hard-linked to its public
//! name, which fails rather than replace what is there (a taken name is
//! counted in `stats_name_taken`, logged, and another used); the counters
//! are atomics in a shared
//! mapping ([`crate::shm`]), refreshed every [`PUBLISH_INTERVAL`] by the
//! device's `softrdma-stats` thread, which sleeps in between. The file is
//! removed when the device is dropped; a file whose process is gone (or whose
//! pid now belongs to another process) is stale: readers skip and remove it.
//!
//! Why a file per device and not a socket or a thread answering requests: a
//! reader needs nothing from the process (it may be stopped in a debugger),
//! the cost is a few stores every 200 ms, and a crash leaves a file that is
//! recognisably stale.

use super::stats::{write_row, DeviceStats};
use crate::log::log;
use crate::shm::SharedCounters;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// The environment variable naming the directory (default `/dev/shm`).
pub const DIR_ENV: &str = "SOFTRDMA_STATS_DIR";
pub const DEFAULT_DIR: &str = "/dev/shm";
/// How often a device refreshes its published counters.
pub const PUBLISH_INTERVAL: Duration = Duration::from_millis(200);

const MAGIC: &[u8; 8] = b"SOFTRDMA";
const VERSION: u32 = 1;
const HEADER: usize = 128;
const NAME: usize = 32;
const PREFIX: &str = "softrdma.";

/// Counters of the publishing process (not of one device), published after
/// each of its devices' own.
const EXTRA: [(&str, &str); 1] = [(
    "stats_name_taken",
    "counters' directory: file names found taken when publishing (process)",
)];
static NAME_TAKEN: AtomicU64 = AtomicU64::new(0);

/// The directory counters are published in; `None` if publishing is off.
pub fn stats_dir() -> Option<PathBuf> {
    match std::env::var_os(DIR_ENV) {
        Some(d) if d.is_empty() => None,
        Some(d) => Some(PathBuf::from(d)),
        None => Some(PathBuf::from(DEFAULT_DIR)),
    }
}

/// The start time of process `pid` (clock ticks after boot), if it lives.
fn start_time(pid: u32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces and parentheses):
    // field 3 (state) onwards; the start time is field 22.
    let rest = &s[s.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn put_str(buf: &mut [u8], s: &str) {
    let n = s.len().min(buf.len() - 1);
    buf[..n].copy_from_slice(&s.as_bytes()[..n]);
}

fn get_str(buf: &[u8]) -> String {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

fn random_u64() -> u64 {
    (0..8).fold(0, |a, _| a << 8 | u64::from(crate::sys::random_byte()))
}

/// A name this process was about to create exists: counted and logged.
fn name_taken(path: &Path) {
    NAME_TAKEN.fetch_add(1, Ordering::Relaxed);
    log!(
        Warn,
        "{}: taken by a file this process did not create; publishing the counters under another name",
        path.display()
    );
}

/// This device's published counters; the file goes when it is dropped.
pub(crate) struct Publication {
    path: PathBuf,
    /// The file's device and inode: `Drop` removes the name only while it is
    /// this file's.
    id: (u64, u64),
    counters: SharedCounters,
}

impl Publication {
    /// Publish a device's counters in `dir` (removing stale files of dead
    /// processes on the way: programs that exit without closing their
    /// devices, as most verbs programs through the shim do, leave theirs).
    pub(crate) fn create(dir: &Path, dev: &str, local: SocketAddr) -> io::Result<Publication> {
        let _ = scan(dir, None);
        let pid = std::process::id();
        let n = DeviceStats::LEN + EXTRA.len();
        let mut head = vec![0u8; HEADER + NAME * n];
        head[0..8].copy_from_slice(MAGIC);
        head[8..12].copy_from_slice(&VERSION.to_ne_bytes());
        head[12..16].copy_from_slice(&(n as u32).to_ne_bytes());
        head[16..20].copy_from_slice(&pid.to_ne_bytes());
        head[24..32].copy_from_slice(&start_time(pid).unwrap_or(0).to_ne_bytes());
        put_str(&mut head[32..64], dev);
        put_str(&mut head[64..128], &local.to_string());
        let names = DeviceStats::NAMES.iter().chain(EXTRA.iter().map(|e| &e.0));
        for (i, nm) in names.enumerate() {
            put_str(&mut head[HEADER + NAME * i..][..NAME], nm);
        }
        let (tmp, mut f) = create_temp(dir, pid)?;
        let made = (|| {
            f.write_all(&head)?;
            f.set_len((HEADER + (NAME + 8) * n) as u64)?;
            let counters = SharedCounters::map(&f, HEADER + NAME * n, n, true)?;
            let meta = f.metadata()?;
            let path = link_public(dir, pid, &tmp)?;
            Ok(Publication {
                path,
                id: (meta.dev(), meta.ino()),
                counters,
            })
        })();
        // The file lives on under its public name, if it got one.
        let _ = fs::remove_file(&tmp);
        made
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn store(&self, s: &DeviceStats) {
        let extra = [NAME_TAKEN.load(Ordering::Relaxed)];
        let values = s.values().into_iter().chain(extra);
        for (a, v) in self.counters.values().iter().zip(values) {
            a.store(v, Ordering::Relaxed);
        }
    }
}

impl Drop for Publication {
    fn drop(&mut self) {
        if fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.id) {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// A new file under an unpredictable hidden name, created exclusively:
/// `O_CREAT|O_EXCL` fails on any existing name, a planted symlink included
/// (`O_NOFOLLOW` says so twice), so nothing is followed or truncated. Mode
/// 0644 (less under a umask): readers need only read.
fn create_temp(dir: &Path, pid: u32) -> io::Result<(PathBuf, File)> {
    let mut taken = None;
    for _ in 0..4 {
        let tmp = dir.join(format!(".{PREFIX}{pid}.{:016x}.tmp", random_u64()));
        let made = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp);
        match made {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                name_taken(&tmp);
                taken = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(taken.expect("a name was tried"))
}

/// Give the finished file its public name, `softrdma.<pid>.<k>`, without
/// replacing what may be there (a hard link fails on an existing name): the
/// process's next number, random ones once a name was found taken (a
/// squatter predicting pids cannot predict those).
fn link_public(dir: &Path, pid: u32, tmp: &Path) -> io::Result<PathBuf> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let mut k = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut taken = None;
    for _ in 0..8 {
        let path = dir.join(format!("{PREFIX}{pid}.{k}"));
        match fs::hard_link(tmp, &path) {
            Ok(()) => return Ok(path),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                name_taken(&path);
                taken = Some(e);
                k = random_u64() as u32;
            }
            Err(e) => return Err(e),
        }
    }
    Err(taken.expect("a name was tried"))
}

/// A device of a live process, read from its published file.
#[derive(Debug, Clone)]
pub struct PublishedDevice {
    pub path: PathBuf,
    pub pid: u32,
    pub device: String,
    pub local: String,
    /// (name, value) in the publisher's order.
    pub counters: Vec<(String, u64)>,
}

impl PublishedDevice {
    /// The counter called `name`.
    pub fn get(&self, name: &str) -> Option<u64> {
        self.counters.iter().find(|(n, _)| n == name).map(|c| c.1)
    }
}

impl std::fmt::Display for PublishedDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} (pid {}, {}) — {}",
            self.device,
            self.pid,
            self.local,
            self.path.display()
        )?;
        for (n, v) in &self.counters {
            match EXTRA.iter().find(|e| e.0 == n) {
                Some((_, d)) => writeln!(f, "  {n:<22} {v:>14}  {d}")?,
                None => write_row(f, n, *v)?,
            }
        }
        Ok(())
    }
}

/// Why a file is not a live device's.
enum Skip {
    NotOurs,
    Stale,
}

fn read_one(path: &Path) -> Result<PublishedDevice, Skip> {
    let head = fs::read(path).map_err(|_| Skip::NotOurs)?;
    if head.len() < HEADER || &head[0..8] != MAGIC {
        return Err(Skip::NotOurs);
    }
    let u32_at = |o: usize| u32::from_ne_bytes(head[o..o + 4].try_into().expect("4 bytes"));
    let (version, n, pid) = (u32_at(8), u32_at(12) as usize, u32_at(16));
    let started = u64::from_ne_bytes(head[24..32].try_into().expect("8 bytes"));
    if version != VERSION || n == 0 || n > 4096 || head.len() < HEADER + (NAME + 8) * n {
        return Err(Skip::NotOurs);
    }
    match start_time(pid) {
        None => return Err(Skip::Stale),
        Some(t) if started != 0 && t != started => return Err(Skip::Stale),
        Some(_) => {}
    }
    let file = File::open(path).map_err(|_| Skip::NotOurs)?;
    let live =
        SharedCounters::map(&file, HEADER + NAME * n, n, false).map_err(|_| Skip::NotOurs)?;
    let counters = (0..n)
        .map(|i| get_str(&head[HEADER + NAME * i..][..NAME]))
        .zip(live.values().iter().map(|a| a.load(Ordering::Relaxed)))
        .collect();
    Ok(PublishedDevice {
        path: path.to_owned(),
        pid,
        device: get_str(&head[32..64]),
        local: get_str(&head[64..128]),
        counters,
    })
}

/// The devices published in the stats directory (of process `pid`, or all),
/// in pid order; stale files (their process is gone) are removed on the way.
pub fn published(pid: Option<u32>) -> io::Result<Vec<PublishedDevice>> {
    match stats_dir() {
        Some(dir) => scan(&dir, pid),
        None => Ok(Vec::new()),
    }
}

fn scan(dir: &Path, pid: Option<u32>) -> io::Result<Vec<PublishedDevice>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir)? {
        let Ok(e) = e else { continue };
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(file_pid) = rest.split('.').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid.is_some_and(|p| p != file_pid) {
            continue;
        }
        match read_one(&e.path()) {
            Ok(d) => out.push(d),
            Err(Skip::Stale) => {
                let _ = fs::remove_file(e.path());
            }
            Err(Skip::NotOurs) => {}
        }
    }
    out.sort_by(|a, b| (a.pid, &a.path).cmp(&(b.pid, &b.path)));
    Ok(out)
}
