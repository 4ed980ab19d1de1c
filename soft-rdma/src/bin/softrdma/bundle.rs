//! The shims an installed `softrdma` carries (feature `bundle-shims`, built by
//! build.rs) and the private per-user cache `softrdma run` writes them to,
//! since the program loader can only load a library from a file.
//!
//! The cache is `$XDG_CACHE_HOME/softrdma/<id>/` (else `~/.cache/…`, else
//! `$XDG_RUNTIME_DIR/softrdma/<id>/`, else `/tmp/softrdma-<uid>/<id>/`),
//! `<id>` a hash of the libraries, so that two versions coexist. What goes
//! into a process through `LD_LIBRARY_PATH` runs as that process, so nobody
//! else may be able to plant a library there:
//! - every existing component above the cache must belong to root or to us
//!   and be writable by nobody else unless sticky (`/tmp`): otherwise another
//!   user could rename our directory away and put theirs in its place;
//! - the directories we use are ours, real directories (not symlinks), mode
//!   0700; one that is not is refused, never repaired, and the next
//!   candidate tried;
//! - each library is opened without following a symlink and must be our
//!   regular file, writable by us alone, with exactly the bytes this
//!   executable carries; else it is rewritten (a temporary name, then
//!   `rename`: a concurrent `softrdma run` sees the old file or the new one,
//!   never half of one) and the replacement said on stderr.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The libraries, under the names `softrdma run` uses (the loader's sonames).
#[cfg(softrdma_bundle)]
const FILES: &[(&str, &[u8])] = &[
    (
        "libibverbs.so.1",
        include_bytes!(concat!(env!("OUT_DIR"), "/bundle/libibverbs.so.1")),
    ),
    (
        "librdmacm.so.1",
        include_bytes!(concat!(env!("OUT_DIR"), "/bundle/librdmacm.so.1")),
    ),
    (
        "libsoftrdma_fsface.so",
        include_bytes!(concat!(env!("OUT_DIR"), "/bundle/libsoftrdma_fsface.so")),
    ),
];
#[cfg(softrdma_bundle)]
const ID: &str = env!("SOFTRDMA_BUNDLE_ID");

#[cfg(not(softrdma_bundle))]
const FILES: &[(&str, &[u8])] = &[];
#[cfg(not(softrdma_bundle))]
const ID: &str = "";

/// Whether this executable carries the shims.
pub fn carried() -> bool {
    !FILES.is_empty()
}

/// The directory holding this executable's shims, written out if need be;
/// `Err` says, for each place tried, why it was refused.
pub fn dir() -> Result<PathBuf, String> {
    let uid = euid();
    let env_abs = |k: &str| {
        std::env::var_os(k)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    let mut candidates = Vec::new();
    if let Some(c) = env_abs("XDG_CACHE_HOME").or_else(|| env_abs("HOME").map(|h| h.join(".cache")))
    {
        candidates.push((c, PathBuf::from("softrdma")));
    }
    if let Some(r) = env_abs("XDG_RUNTIME_DIR") {
        candidates.push((r, PathBuf::from("softrdma")));
    }
    candidates.push((
        PathBuf::from("/tmp"),
        PathBuf::from(format!("softrdma-{uid}")),
    ));
    let mut why = Vec::new();
    for (base, ours) in candidates {
        match private(&base, &ours.join(ID), uid).and_then(|d| fill(&d, uid).map(|()| d)) {
            Ok(d) => return Ok(d),
            Err(e) => why.push(format!("{}: {e}", base.join(&ours).display())),
        }
    }
    Err(why.join("; "))
}

/// `base/ours`, each component of `ours` made ours and 0700 if missing,
/// after checking that nobody but root and `uid` can change `base`'s path.
fn private(base: &Path, ours: &Path, uid: u32) -> io::Result<PathBuf> {
    let mut base = base.to_path_buf();
    // The base itself may be missing (~/.cache on a fresh account): its
    // nearest existing ancestor is checked, the rest made as ours.
    let mut missing = Vec::new();
    while !base.exists() {
        let name = base
            .file_name()
            .map(PathBuf::from)
            .ok_or_else(|| bad("no such directory"))?;
        missing.push(name);
        base.pop();
    }
    let real = base.canonicalize()?;
    for a in real.ancestors() {
        let m = fs::symlink_metadata(a)?;
        let others_write = m.mode() & 0o022 != 0;
        let sticky = m.mode() & 0o1000 != 0;
        if (m.uid() != 0 && m.uid() != uid) || (others_write && !sticky) {
            return Err(bad(&format!(
                "{} belongs to uid {} with mode {:o}: another user could replace what is below it",
                a.display(),
                m.uid(),
                m.mode() & 0o7777
            )));
        }
    }
    let mut dir = real;
    for c in missing
        .iter()
        .rev()
        .chain(ours.iter().map(PathBuf::from).collect::<Vec<_>>().iter())
    {
        dir.push(c);
        match DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        let m = fs::symlink_metadata(&dir)?;
        if !m.file_type().is_dir() || m.uid() != uid || m.mode() & 0o077 != 0 {
            return Err(bad(&format!(
                "{} is not our mode-0700 directory (uid {}, mode {:o}): refused",
                dir.display(),
                m.uid(),
                m.mode() & 0o7777
            )));
        }
    }
    Ok(dir)
}

/// Every library in `dir`, ours and byte for byte this executable's.
fn fill(dir: &Path, uid: u32) -> io::Result<()> {
    for (name, bytes) in FILES {
        let path = dir.join(name);
        match check(&path, bytes, uid) {
            Ok(true) => continue,
            Ok(false) => {}
            Err(why) => eprintln!(
                "softrdma run: {} {why}: replaced by this softrdma's copy",
                path.display()
            ),
        }
        write(dir, name, bytes)?;
        if check(&path, bytes, uid) != Ok(true) {
            return Err(bad(&format!(
                "{} changed as it was written",
                path.display()
            )));
        }
    }
    Ok(())
}

/// `Ok(true)`: `path` is our regular file holding `bytes`; `Ok(false)`: it
/// does not exist; `Err`: what is wrong with the file there.
fn check(path: &Path, bytes: &[u8], uid: u32) -> Result<bool, String> {
    let f = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(format!("cannot be opened ({e})")),
    };
    let m = f.metadata().map_err(|e| e.to_string())?;
    if !m.file_type().is_file() || m.uid() != uid || m.mode() & 0o022 != 0 {
        return Err(format!(
            "is not our own file (uid {}, mode {:o})",
            m.uid(),
            m.mode() & 0o7777
        ));
    }
    if m.len() != bytes.len() as u64 || !same(f, bytes) {
        return Err(
            "differs from the library this softrdma carries (tampered or cut short)".into(),
        );
    }
    Ok(true)
}

fn same(mut f: File, bytes: &[u8]) -> bool {
    let mut have = Vec::with_capacity(bytes.len());
    f.read_to_end(&mut have).is_ok() && have == bytes
}

/// `dir/name` := `bytes`, atomically (temporary name, fsync, rename).
fn write(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o500)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)?;
    let done = f
        .write_all(bytes)
        .and_then(|()| f.sync_all())
        .and_then(|()| fs::rename(&tmp, dir.join(name)));
    if done.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    done
}

fn bad(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, why.to_string())
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}
