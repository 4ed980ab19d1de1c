//! A context's command descriptor (`cmd_fd`) and importing through it:
//! `ibv_import_device`, `ibv_import_pd`/`ibv_import_mr` and their
//! `unimport`s.
//!
//! The kernel's uverbs file ("ufile") owns a context's objects and names
//! them by handle; a `dup` of its descriptor is the same file. Here the file
//! is a [`CmdFile`]: each `ibv_open_device` makes one, whose descriptor is a
//! memfd the context owns, so the memfd's inode names the file and any
//! `dup` of the descriptor finds it again. `ibv_import_device(fd)` is a new
//! context on the same file (it owns `fd`, which `ibv_close_device` closes),
//! and `pd->handle`/`mr->handle` name objects in their file.
//!
//! Within one process only: the objects live in this process's soft device.
//! A descriptor from another process (passed over a unix socket) names no
//! file here, and importing it fails with EOPNOTSUPP; a descriptor that is
//! not a command descriptor at all fails with EINVAL (EBADF if not open).
//! An imported PD or MR is this context's view of the object: releasing it
//! (`ibv_unimport_*`, or `ibv_dealloc_pd`/`ibv_dereg_mr` on it) frees the
//! view; the object goes when its creator releases it (then the imported
//! MR's keys name nothing: posts with them fail as with any stale key).

use crate::ffi::*;
use crate::mr::ShimMr;
use crate::pd::ShimPd;
use std::collections::{HashMap, HashSet};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// What a handle names (the creator's wrapper, live until it is released).
#[derive(Clone, Copy)]
enum Object {
    Pd(usize),
    Mr(usize),
}

/// One command file: the objects of the contexts opened on it.
pub struct CmdFile {
    /// (st_dev, st_ino) of the memfd.
    inode: (u64, u64),
    next_handle: AtomicU32,
    objects: Mutex<HashMap<u32, Object>>,
}

/// The live files by inode (weak: a file lives while a context uses it).
static FILES: Mutex<Vec<Weak<CmdFile>>> = Mutex::new(Vec::new());
/// MRs made by `ibv_import_mr` (plain `ibv_mr`s, no soft object).
static IMPORTED_MRS: Mutex<Option<HashSet<usize>>> = Mutex::new(None);

fn inode(fd: RawFd) -> Result<(u64, u64), i32> {
    // SAFETY: fstat into a zeroed struct; a bad descriptor just fails.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EBADF));
    }
    Ok((st.st_dev, st.st_ino))
}

const MEMFD_NAME: &str = "softrdma-cmd";

/// A new file and its descriptor (the new context's `cmd_fd`).
pub fn new_file() -> Result<(Arc<CmdFile>, OwnedFd), i32> {
    let name = std::ffi::CString::new(MEMFD_NAME).expect("no NUL");
    // SAFETY: a NUL-terminated name; the result is checked.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EMFILE));
    }
    // SAFETY: a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let file = Arc::new(CmdFile {
        inode: inode(fd.as_raw_fd())?,
        next_handle: AtomicU32::new(0),
        objects: Mutex::new(HashMap::new()),
    });
    let mut files = crate::sync::lock(&FILES);
    files.retain(|f| f.strong_count() > 0);
    files.push(Arc::downgrade(&file));
    Ok((file, fd))
}

/// The file a descriptor (the original or a `dup`) names.
pub fn file_of_fd(fd: RawFd) -> Result<Arc<CmdFile>, i32> {
    let ino = inode(fd)?;
    let found = crate::sync::lock(&FILES)
        .iter()
        .filter_map(Weak::upgrade)
        .find(|f| f.inode == ino);
    if let Some(f) = found {
        return Ok(f);
    }
    // Another process's command descriptor: its objects are not here.
    let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap_or_default();
    if link.to_string_lossy().contains(MEMFD_NAME) {
        Err(libc::EOPNOTSUPP)
    } else {
        Err(libc::EINVAL)
    }
}

/// The command file of a context.
///
/// # Safety
/// `ctx` must be a live context.
pub unsafe fn file(ctx: *mut ibv_context) -> Arc<CmdFile> {
    // SAFETY: (caller) live context.
    unsafe { crate::context::ShimContext::from_c(ctx) }
        .file
        .clone()
}

/// Whether two contexts are on one command file (the kernel looks objects
/// up per file: another file's object is EINVAL).
pub fn same_file(a: *mut ibv_context, b: *mut ibv_context) -> bool {
    if a == b {
        return true;
    }
    if a.is_null() || b.is_null() {
        return false;
    }
    // SAFETY: both are live contexts (their objects' `context` fields).
    unsafe { Arc::ptr_eq(&file(a), &file(b)) }
}

impl CmdFile {
    fn add(&self, o: Object) -> u32 {
        let h = self.next_handle.fetch_add(1, Ordering::Relaxed);
        crate::sync::lock(&self.objects).insert(h, o);
        h
    }
    fn get(&self, h: u32) -> Option<Object> {
        crate::sync::lock(&self.objects).get(&h).copied()
    }
}

impl CmdFile {
    /// A handle for a new PD of this file; `pd` lives until [`CmdFile::forget`].
    pub fn add_pd(&self, pd: *mut ShimPd) -> u32 {
        self.add(Object::Pd(pd as usize))
    }

    /// A handle for a new MR of this file; as [`CmdFile::add_pd`].
    pub fn add_mr(&self, mr: *mut ShimMr) -> u32 {
        self.add(Object::Mr(mr as usize))
    }

    /// The object of `handle` is gone.
    pub fn forget(&self, handle: u32) {
        crate::sync::lock(&self.objects).remove(&handle);
    }
}

pub fn is_imported_mr(mr: *mut ibv_mr) -> bool {
    crate::sync::lock(&IMPORTED_MRS)
        .as_ref()
        .is_some_and(|s| s.contains(&(mr as usize)))
}

pub unsafe extern "C" fn shim_ibv_import_device(fd: c_int) -> *mut ibv_context {
    let file = match file_of_fd(fd) {
        Ok(f) => f,
        Err(e) => return fail_null(e),
    };
    // SAFETY: the caller hands the descriptor over (ibv_close_device closes
    // it, as rdma-core's imported contexts do).
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    match crate::context::new_context(file, fd) {
        Ok(c) => c,
        Err(e) => fail_null(e),
    }
}

pub unsafe extern "C" fn shim_ibv_import_pd(ctx: *mut ibv_context, handle: u32) -> *mut ibv_pd {
    if ctx.is_null() {
        return fail_null(libc::EINVAL);
    }
    // SAFETY: live context.
    let Some(Object::Pd(p)) = unsafe { file(ctx) }.get(handle) else {
        return fail_null(libc::EINVAL);
    };
    // SAFETY: a PD stays in its file's map while it lives.
    let orig = unsafe { &*(p as *const ShimPd) };
    // SAFETY: live context.
    unsafe { crate::pd::imported(ctx, handle, orig) as *mut ibv_pd }
}

pub unsafe extern "C" fn shim_ibv_unimport_pd(pd: *mut ibv_pd) {
    // SAFETY: an imported PD (others are left alone).
    unsafe { crate::pd::unimport(pd) };
}

pub unsafe extern "C" fn shim_ibv_import_mr(pd: *mut ibv_pd, handle: u32) -> *mut ibv_mr {
    if pd.is_null() {
        return fail_null(libc::EINVAL);
    }
    // SAFETY: a live PD.
    let ctx = unsafe { (*pd).context };
    // SAFETY: live context.
    let Some(Object::Mr(m)) = unsafe { file(ctx) }.get(handle) else {
        return fail_null(libc::EINVAL);
    };
    // SAFETY: an MR stays in its file's map while it lives; its PD is live.
    let (orig, pd_handle) = unsafe {
        let orig = &*(m as *const ShimMr);
        (orig, (*orig.mr.pd).handle)
    };
    // SAFETY: a live PD.
    if unsafe { (*pd).handle } != pd_handle {
        return fail_null(libc::EINVAL);
    }
    // The address is not known to the importer (NULL, as rdma-core's).
    let mr = Box::into_raw(Box::new(ibv_mr {
        context: ctx,
        pd,
        addr: std::ptr::null_mut(),
        length: orig.mr.length,
        handle,
        lkey: orig.mr.lkey,
        rkey: orig.mr.rkey,
    }));
    crate::sync::lock(&IMPORTED_MRS)
        .get_or_insert_with(HashSet::new)
        .insert(mr as usize);
    mr
}

/// Release an imported MR's view; false if `mr` was not imported.
///
/// # Safety
/// `mr` must be NULL or a live MR.
pub unsafe fn release_imported_mr(mr: *mut ibv_mr) -> bool {
    let removed = crate::sync::lock(&IMPORTED_MRS)
        .as_mut()
        .is_some_and(|s| s.remove(&(mr as usize)));
    if removed {
        // SAFETY: the Box from ibv_import_mr.
        drop(unsafe { Box::from_raw(mr) });
    }
    removed
}

pub unsafe extern "C" fn shim_ibv_unimport_mr(mr: *mut ibv_mr) {
    // SAFETY: the caller's MR.
    unsafe { release_imported_mr(mr) };
}
