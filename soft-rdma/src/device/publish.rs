//! Counters another process can read: every live device publishes its
//! [`DeviceStats`] in a small file, `/dev/shm/softrdma.<pid>.<n>` (the
//! directory is `SOFTRDMA_STATS_DIR` if set; set it empty to publish
//! nothing), which `softrdma stats` lists and reads — so the counters of an
//! unmodified program running through the shim are visible too, like
//! `/sys/class/infiniband/rxe0/ports/1/hw_counters`.
//!
//! Layout (native endian; one machine), version 3: a 192-byte header —
//! magic `SOFTRDMA`, version, counter count `n`, pid, owner uid, the
//! process's start time (`/proc/<pid>/stat` field 22, to tell a reused
//! pid), its PID namespace (device and inode of `/proc/self/ns/pid`), the
//! boot id, device name, local address, MR slot count `m` — then `n`
//! 32-byte names, a sequence word, `n` 64-bit counters, and the ODP MRs'
//! counters ([`MrStats`], mlx5's per-MR figures): how many ODP MRs the
//! device has, then `m` slots of six words (MR number — the key's 24-bit
//! index, never its unpredictable byte nor an address: the file is
//! world-readable, and a key is a capability — and the five counters; a
//! slot of number 0 is empty). The header and names are written once,
//! under a temporary name; the counters are atomics in the publisher's
//! shared mapping ([`crate::shm`]), refreshed every [`PUBLISH_INTERVAL`] by
//! the device's `softrdma-stats` thread (which sleeps in between) as a
//! seqlock: the word is odd while they change. The file goes when the device
//! is dropped; a file whose process is gone (or whose pid now belongs to
//! another process) is stale: readers skip it, and remove it if it is their
//! user's.
//!
//! The directory is shared by every user of the host, and by containers
//! (`--ipc=host`), so everything in it may be hostile:
//! - the writer creates its file exclusively (`O_EXCL|O_NOFOLLOW`) under an
//!   unpredictable temporary name and links it to its public name, which
//!   fails rather than replace anything: no planted name is ever followed,
//!   truncated or replaced (a taken name is counted, logged, and another
//!   used);
//! - a reader opens with `O_NONBLOCK|O_NOFOLLOW` (a FIFO, or a file under
//!   its owner's lease, cannot block the open; a symlink is not followed),
//!   refuses on the descriptor anything but a regular file of exactly the
//!   size its header implies (90 KiB at most), owned by the uid the header
//!   names, and copies with `pread` rather than mapping: a file truncated
//!   under it cannot raise SIGBUS (as a mapped page past the end would;
//!   /dev/shm files cannot be sealed against it);
//! - a pid means something only in its PID namespace and boot: a reader
//!   judges liveness (the pid alive with the recorded start time, and one of
//!   its uids the header's) only for files of its own namespace, lists only
//!   files that check out, and removes only files of its own uid whose
//!   process it saw dead. Files of another namespace are neither listed nor
//!   removed.
//!
//! Refused files are logged (`warn`) and counted once per process; the
//! device-side counts are published after the device's own counters
//! (`stats_dir_refused`, `stats_name_taken`).
//!
//! Why a file per device and not a socket or a thread answering requests: a
//! reader needs nothing from the process (it may be stopped in a debugger),
//! the cost is a few stores every 200 ms, and a crash leaves a file that is
//! recognisably stale.

use super::stats::{write_row, DeviceStats, MrStats};
use crate::log::log;
use crate::shm::SharedCounters;
use crate::sync::lock;
use std::fs::{self, File, FileType, OpenOptions};
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// The environment variable naming the directory (default `/dev/shm`).
pub const DIR_ENV: &str = "SOFTRDMA_STATS_DIR";
pub const DEFAULT_DIR: &str = "/dev/shm";
/// How often a device refreshes its published counters.
pub const PUBLISH_INTERVAL: Duration = Duration::from_millis(200);
/// Files one scan opens at most (a directory stuffed with junk bounds a
/// scan's work, not just its memory).
pub const MAX_FILES: usize = 4096;

/// ODP MRs a device publishes at most (the lowest numbers; `softrdma stats
/// --mr` says how many more there are).
pub const MR_SLOTS: usize = 256;

const MAGIC: &[u8; 8] = b"SOFTRDMA";
const VERSION: u32 = 3;
const HEADER: usize = 192;
const NAME: usize = 32;
const PREFIX: &str = "softrdma.";
/// Far more counters than any version has: bounds what a reader reads.
const MAX_COUNTERS: usize = 1024;
/// Far more MR slots than any version publishes: bounds what a reader reads.
const MAX_MR_SLOTS: usize = 1024;
/// Words of one MR slot: the number and the five counters.
const MR_WORDS: usize = 6;
/// Header fields (byte offsets).
const AT_VERSION: usize = 8;
const AT_N: usize = 12;
const AT_PID: usize = 16;
const AT_UID: usize = 20;
const AT_START: usize = 24;
/// The PID namespace: device, inode (two u64).
const AT_NS: usize = 32;
/// The boot id: 16 bytes.
const AT_BOOT: usize = 48;
const AT_DEVICE: usize = 64;
const AT_LOCAL: usize = 96;
/// The MR slot count (u32), after the local address's 92 bytes.
const AT_MRS: usize = 188;

/// Where the sequence word is (the counters follow it).
fn seq_at(n: usize) -> usize {
    HEADER + NAME * n
}

/// The size of a file of `n` counters and `m` MR slots.
fn file_len(n: usize, m: usize) -> usize {
    seq_at(n) + 8 * (n + 1) + 8 * (1 + MR_WORDS * m)
}

/// The 64-bit words after the sequence word: the counters, the ODP MR
/// count, the MR slots.
fn words(n: usize, m: usize) -> usize {
    n + 1 + MR_WORDS * m
}

/// Counters of the publishing process (not of one device), published after
/// each of its devices' own.
const EXTRA: [(&str, &str); 2] = [
    (
        "stats_dir_refused",
        "counters' directory: hostile or malformed files refused (process)",
    ),
    (
        "stats_name_taken",
        "counters' directory: file names found taken when publishing (process)",
    ),
];
static REFUSED: AtomicU64 = AtomicU64::new(0);
static NAME_TAKEN: AtomicU64 = AtomicU64::new(0);

/// The directory counters are published in; `None` if publishing is off.
pub fn stats_dir() -> Option<PathBuf> {
    match std::env::var_os(DIR_ENV) {
        Some(d) if d.is_empty() => None,
        Some(d) => Some(PathBuf::from(d)),
        None => Some(PathBuf::from(DEFAULT_DIR)),
    }
}

/// Process `pid`'s pid as this `/proc` numbers it (field 1) and its start
/// time in clock ticks after boot (field 22), from `/proc/<pid>/stat`.
fn proc_stat(pid: &str) -> Option<(u32, u64)> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let own = s.split(' ').next()?.parse().ok()?;
    // Fields after the command (which may hold spaces and parentheses):
    // field 3 (state) onwards.
    let rest = &s[s.rfind(')')? + 1..];
    Some((own, rest.split_whitespace().nth(19)?.parse().ok()?))
}

/// Process `pid`'s real, effective, saved and filesystem uids.
fn proc_uids(pid: &str) -> Option<[u32; 4]> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let mut w = s
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace();
    let mut u = [0; 4];
    for x in &mut u {
        *x = w.next()?.parse().ok()?;
    }
    Some(u)
}

/// What a pid is relative to: the PID namespace that numbers it and the
/// boot. A reader judges a pid only within both.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Epoch {
    ns: [u8; 16],
    boot: [u8; 16],
}

impl Epoch {
    /// This process's, if `/proc` is its namespace's (a `/proc` of another
    /// namespace numbers other processes: then nothing can be judged).
    fn here() -> Option<Epoch> {
        if proc_stat("self")?.0 != std::process::id() {
            return None;
        }
        let m = fs::metadata("/proc/self/ns/pid").ok()?;
        let mut ns = [0u8; 16];
        ns[..8].copy_from_slice(&m.dev().to_ne_bytes());
        ns[8..].copy_from_slice(&m.ino().to_ne_bytes());
        let id = fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        let hex: Vec<u8> = id.trim().bytes().filter(|&b| b != b'-').collect();
        if hex.len() != 32 {
            return None;
        }
        let mut boot = [0u8; 16];
        for (b, h) in boot.iter_mut().zip(hex.chunks(2)) {
            *b = u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()?;
        }
        Some(Epoch { ns, boot })
    }
}

fn put_str(buf: &mut [u8], s: &str) {
    let n = s.len().min(buf.len() - 1);
    buf[..n].copy_from_slice(&s.as_bytes()[..n]);
}

/// A string field, control characters (terminal escapes a forger could
/// plant for whoever runs `softrdma stats`) shown as `?`.
fn get_str(buf: &[u8]) -> String {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end])
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

fn random_u64() -> u64 {
    (0..8).fold(0, |a, _| a << 8 | u64::from(crate::sys::random_byte()))
}

/// Whether this process meets file `key` (device, inode) for the first time
/// (remembering up to 1024 files; past that, every sight is a first).
fn first_sight(key: (u64, u64)) -> bool {
    static SEEN: Mutex<Vec<(u64, u64)>> = Mutex::new(Vec::new());
    let mut seen = lock(&SEEN);
    if seen.contains(&key) {
        return false;
    }
    if seen.len() < 1024 {
        seen.push(key);
    }
    true
}

/// A name this process was about to create exists: counted and logged
/// (once: a later scan meeting that file does not log it again).
fn name_taken(path: &Path) {
    if let Ok(m) = fs::symlink_metadata(path) {
        first_sight((m.dev(), m.ino()));
    }
    NAME_TAKEN.fetch_add(1, Ordering::Relaxed);
    log!(
        Warn,
        "{}: taken by a file this process did not create; publishing the counters under another name",
        path.display()
    );
}

/// A file refused by a scan: counted and logged once per process.
fn refuse(key: (u64, u64), path: &Path, why: &str) {
    if first_sight(key) {
        REFUSED.fetch_add(1, Ordering::Relaxed);
        log!(
            Warn,
            "{}: {why}: ignored (not a live device's counters)",
            path.display()
        );
    }
}

/// This device's published counters; the file goes when it is dropped.
pub(crate) struct Publication {
    dir: PathBuf,
    path: PathBuf,
    /// The file's device and inode: `Drop` removes the name only while it is
    /// this file's.
    id: (u64, u64),
    counters: SharedCounters,
}

impl Publication {
    /// Publish a device's counters in `dir`. No scan: stale files are the
    /// publisher thread's business ([`Publication::sweep_once`]), so that
    /// nothing in the directory can slow a device's open.
    pub(crate) fn create(dir: &Path, dev: &str, local: SocketAddr) -> io::Result<Publication> {
        let pid = std::process::id();
        let (Some(epoch), Some((_, started))) = (Epoch::here(), proc_stat("self")) else {
            return Err(io::Error::other(
                "no /proc of this PID namespace: readers could not tell this process alive",
            ));
        };
        let (tmp, file) = create_temp(dir, pid)?;
        let made = (|| {
            let meta = file.metadata()?;
            let n = DeviceStats::LEN + EXTRA.len();
            let mut head = vec![0u8; seq_at(n)];
            head[..8].copy_from_slice(MAGIC);
            head[AT_VERSION..][..4].copy_from_slice(&VERSION.to_ne_bytes());
            head[AT_N..][..4].copy_from_slice(&(n as u32).to_ne_bytes());
            head[AT_PID..][..4].copy_from_slice(&pid.to_ne_bytes());
            head[AT_UID..][..4].copy_from_slice(&meta.uid().to_ne_bytes());
            head[AT_START..][..8].copy_from_slice(&started.to_ne_bytes());
            head[AT_NS..][..16].copy_from_slice(&epoch.ns);
            head[AT_BOOT..][..16].copy_from_slice(&epoch.boot);
            put_str(&mut head[AT_DEVICE..AT_LOCAL], dev);
            put_str(&mut head[AT_LOCAL..AT_MRS], &local.to_string());
            head[AT_MRS..][..4].copy_from_slice(&(MR_SLOTS as u32).to_ne_bytes());
            let names = DeviceStats::NAMES.iter().chain(EXTRA.iter().map(|e| &e.0));
            for (i, nm) in names.enumerate() {
                put_str(&mut head[HEADER + NAME * i..][..NAME], nm);
            }
            file.write_all_at(&head, 0)?;
            file.set_len(file_len(n, MR_SLOTS) as u64)?;
            let counters = SharedCounters::map(&file, seq_at(n), 1 + words(n, MR_SLOTS))?;
            let path = link_public(dir, pid, &tmp)?;
            Ok(Publication {
                dir: dir.to_owned(),
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

    /// Publish `s` and the ODP MRs' counters `mrs` (at most [`MR_SLOTS`],
    /// and how many ODP MRs there are).
    pub(crate) fn store(&self, s: &DeviceStats, (mrs, total): &(Vec<(u32, MrStats)>, usize)) {
        let (seq, values) = self
            .counters
            .values()
            .split_first()
            .expect("a sequence word");
        let extra = [&REFUSED, &NAME_TAKEN].map(|a| a.load(Ordering::Relaxed));
        let slots = mrs
            .iter()
            .take(MR_SLOTS)
            .flat_map(|(k, m)| std::iter::once(u64::from(*k)).chain(m.values()))
            .chain(std::iter::repeat(0));
        let all = s
            .values()
            .into_iter()
            .chain(extra)
            .chain(std::iter::once(*total as u64))
            .chain(slots);
        // A seqlock (one writer: this thread): odd while the counters change.
        let s0 = seq.load(Ordering::Relaxed);
        seq.store(s0.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        for (a, v) in values.iter().zip(all) {
            a.store(v, Ordering::Relaxed);
        }
        seq.store(s0.wrapping_add(2), Ordering::Release);
    }

    /// Remove the stale files of this user's dead processes (programs that
    /// exit without closing their devices, as most verbs programs through the
    /// shim do, leave theirs): once per process, from the publisher's thread,
    /// opening at most [`MAX_FILES`]; `stop` cuts it short.
    pub(crate) fn sweep_once(&self, stop: impl Fn() -> bool) {
        static DONE: AtomicBool = AtomicBool::new(false);
        if DONE.swap(true, Ordering::Relaxed) {
            return;
        }
        match walk(&self.dir, None, &stop) {
            Ok(l) => log!(
                Debug,
                "{}: {} stale counters files removed",
                self.dir.display(),
                l.removed
            ),
            Err(e) => log!(Debug, "{} not swept: {e}", self.dir.display()),
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
    /// The uid the process published as (the file's owner).
    pub uid: u32,
    pub device: String,
    pub local: String,
    /// (name, value) in the publisher's order.
    pub counters: Vec<(String, u64)>,
    /// The ODP MRs' counters by MR number, in number order (the first
    /// [`MR_SLOTS`]).
    pub mrs: Vec<(u32, MrStats)>,
    /// How many ODP MRs the device has (more than `mrs` holds when past
    /// [`MR_SLOTS`]).
    pub mr_total: u64,
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

/// What a scan of the directory found.
#[derive(Debug, Default)]
pub struct Listing {
    /// The live devices, in pid order.
    pub devices: Vec<PublishedDevice>,
    /// Files of another PID namespace: whether their process lives cannot be
    /// told from here, so they are neither listed nor removed.
    pub other_namespace: usize,
    /// Files of another layout version (another build): not read.
    pub other_version: usize,
    /// Stale files of other users: left to them.
    pub stale_kept: usize,
    /// Stale files of this user's dead processes: removed.
    pub removed: usize,
    /// Files refused (not a regular file, a size or header that does not
    /// check out, forged): each logged at `warn` once per process.
    pub refused: usize,
    /// The scan stopped after [`MAX_FILES`] files.
    pub truncated: bool,
}

/// The devices published in the stats directory (of process `pid`, or all),
/// in pid order; stale files of this user's dead processes are removed on
/// the way.
pub fn published(pid: Option<u32>) -> io::Result<Vec<PublishedDevice>> {
    match stats_dir() {
        Some(dir) => Ok(list(&dir, pid)?.devices),
        None => Ok(Vec::new()),
    }
}

/// Scan `dir` (the files of process `pid`, or all): [`published`], with what
/// was not listed and why.
pub fn list(dir: &Path, pid: Option<u32>) -> io::Result<Listing> {
    walk(dir, pid, &|| false)
}

/// Who scans: what its files and pids are relative to.
struct Reader {
    epoch: Option<Epoch>,
    /// The filesystem uid: the owner of the files this process creates.
    uid: Option<u32>,
}

enum Verdict {
    Live(PublishedDevice),
    /// Its process is gone (or its pid is another process's now).
    Dead {
        owner: u32,
    },
    OtherNamespace,
    OtherVersion,
    Refused((u64, u64), String),
    /// Vanished, or not readable by this user (a private file of another).
    Skip,
}

fn walk(dir: &Path, pid: Option<u32>, stop: &dyn Fn() -> bool) -> io::Result<Listing> {
    let me = Reader {
        epoch: Epoch::here(),
        uid: proc_uids("self").map(|u| u[3]),
    };
    let mut l = Listing::default();
    let mut opened = 0;
    for e in fs::read_dir(dir)? {
        if stop() {
            break;
        }
        let Ok(e) = e else { continue };
        let name = e.file_name();
        let Some(file_pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|r| r.split('.').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid.is_some_and(|p| p != file_pid) {
            continue;
        }
        if opened == MAX_FILES {
            l.truncated = true;
            break;
        }
        opened += 1;
        let path = e.path();
        match inspect(&path, &me) {
            Verdict::Live(d) => l.devices.push(d),
            // Only this user's: in a sticky directory (/dev/shm) nobody else
            // can put another file under this name meanwhile.
            Verdict::Dead { owner } if Some(owner) == me.uid => {
                if fs::remove_file(&path).is_ok() {
                    l.removed += 1;
                }
            }
            Verdict::Dead { .. } => l.stale_kept += 1,
            Verdict::OtherNamespace => l.other_namespace += 1,
            Verdict::OtherVersion => l.other_version += 1,
            Verdict::Refused(key, why) => {
                l.refused += 1;
                refuse(key, &path, &why);
            }
            Verdict::Skip => {}
        }
    }
    l.devices
        .sort_by(|a, b| (a.pid, &a.path).cmp(&(b.pid, &b.path)));
    Ok(l)
}

fn kind(t: FileType) -> &'static str {
    if t.is_symlink() {
        "a symbolic link"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device node"
    } else {
        "not a regular file"
    }
}

/// Read and judge one file, never blocking, never reading more than a
/// counters file's maximum size, never mapping it.
fn inspect(path: &Path, me: &Reader) -> Verdict {
    use Verdict::*;
    let Ok(lm) = fs::symlink_metadata(path) else {
        return Skip;
    };
    let key = (lm.dev(), lm.ino());
    if !lm.file_type().is_file() {
        return Refused(key, kind(lm.file_type()).into());
    }
    // The name may have been swapped since: what counts is the descriptor,
    // and opening it neither blocks (a FIFO) nor follows (a symlink).
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_NOCTTY)
        .open(path);
    let f = match opened {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Refused(key, "a symbolic link".into())
        }
        // A write lease its owner holds would make a blocking open wait for
        // the lease-break time (45 s by default).
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            return Refused(key, "under a lease (opening it would wait)".into())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Skip,
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            log!(Debug, "{}: not readable: {e}", path.display());
            return Skip;
        }
        Err(e) => return Refused(key, format!("cannot be opened: {e}")),
    };
    let Ok(m) = f.metadata() else { return Skip };
    let key = (m.dev(), m.ino());
    if !m.file_type().is_file() {
        return Refused(key, kind(m.file_type()).into());
    }
    let len = m.len();
    if len < file_len(1, 0) as u64 || len > file_len(MAX_COUNTERS, MAX_MR_SLOTS) as u64 {
        return Refused(key, format!("{len} bytes, not a counters file's size"));
    }
    let mut head = [0u8; HEADER];
    if f.read_exact_at(&mut head, 0).is_err() {
        return Refused(key, "shrank while read".into());
    }
    if &head[..8] != MAGIC {
        return Refused(key, "no counters file's magic".into());
    }
    let u32_at = |o: usize| u32::from_ne_bytes(head[o..o + 4].try_into().expect("4 bytes"));
    if u32_at(AT_VERSION) != VERSION {
        return OtherVersion;
    }
    let n = u32_at(AT_N) as usize;
    let slots = u32_at(AT_MRS) as usize;
    if n == 0 || n > MAX_COUNTERS || slots > MAX_MR_SLOTS || len != file_len(n, slots) as u64 {
        return Refused(key, format!("{len} bytes, not the size its header says"));
    }
    let (pid, uid) = (u32_at(AT_PID), u32_at(AT_UID));
    let started = u64::from_ne_bytes(head[AT_START..][..8].try_into().expect("8 bytes"));
    if uid != m.uid() {
        return Refused(
            key,
            format!("forged: says uid {uid}, owned by uid {}", m.uid()),
        );
    }
    if pid == 0 || started == 0 {
        return Refused(key, "no pid or start time".into());
    }
    let Some(epoch) = me.epoch else {
        return OtherNamespace;
    };
    if head[AT_NS..][..16] != epoch.ns {
        return OtherNamespace;
    }
    // Same namespace (the initial one recurs at every boot), earlier boot.
    if head[AT_BOOT..][..16] != epoch.boot {
        return Dead { owner: uid };
    }
    let p = pid.to_string();
    if proc_stat(&p).is_none_or(|(_, t)| t != started) {
        return Dead { owner: uid };
    }
    match proc_uids(&p) {
        None => return Dead { owner: uid },
        Some(u) if !u.contains(&uid) => {
            return Refused(
                key,
                format!("forged: pid {pid} is not a process of uid {uid}"),
            )
        }
        Some(_) => {}
    }
    let mut names = vec![0u8; NAME * n];
    if f.read_exact_at(&mut names, HEADER as u64).is_err() {
        return Refused(key, "shrank while read".into());
    }
    let Some(mut values) = read_counters(&f, n, slots) else {
        return Refused(key, "shrank while read".into());
    };
    let mr_words = values.split_off(n + 1);
    let mr_total = values.pop().expect("the MR count");
    // Empty slots are number 0; a forged number past 24 bits is no MR's.
    let mrs = mr_words
        .chunks_exact(MR_WORDS)
        .filter(|w| (1..=0xff_ffff).contains(&w[0]))
        .map(|w| {
            let c = w[1..].try_into().expect("five counters");
            (w[0] as u32, MrStats::from_values(c))
        })
        .collect();
    Live(PublishedDevice {
        path: path.to_owned(),
        pid,
        uid,
        device: get_str(&head[AT_DEVICE..AT_LOCAL]),
        local: get_str(&head[AT_LOCAL..AT_MRS]),
        counters: names.chunks_exact(NAME).map(get_str).zip(values).collect(),
        mrs,
        mr_total,
    })
}

/// The `n` counters, the MR count and `m` MR slots as one snapshot: copied
/// with `pread` (a short copy, as
/// from a file truncated meanwhile, is `None`) between two copies of the
/// sequence word, even and unchanged (no update in between). A publisher
/// stopped mid-update leaves the word odd: after a few tries the last copy
/// is taken as it is.
fn read_counters(f: &File, n: usize, m: usize) -> Option<Vec<u64>> {
    let at = seq_at(n) as u64;
    let (mut seq, mut again, mut buf) = ([0u8; 8], [0u8; 8], vec![0u8; 8 * words(n, m)]);
    for _ in 0..64 {
        f.read_exact_at(&mut seq, at).ok()?;
        // Each copy is done before the next begins (the load-load order of
        // a seqlock's reader, for loads the kernel makes on our behalf).
        fence(Ordering::Acquire);
        f.read_exact_at(&mut buf, at + 8).ok()?;
        fence(Ordering::Acquire);
        f.read_exact_at(&mut again, at).ok()?;
        if seq == again && u64::from_ne_bytes(seq) % 2 == 0 {
            break;
        }
        std::thread::yield_now();
    }
    Some(
        buf.chunks_exact(8)
            .map(|c| u64::from_ne_bytes(c.try_into().expect("8 bytes")))
            .collect(),
    )
}
