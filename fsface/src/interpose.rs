//! The libc entry points the face interposes (this library is preloaded, so
//! its definitions come before libc's in every lookup of the process, also
//! for libraries loaded later with `dlopen`, as UCX's transports are). Each
//! one hands a path in the face to the real function as the same path in
//! the process's tree, and any other path unchanged; the real functions are
//! found with `dlsym(RTLD_NEXT)`.
//!
//! `open`-style functions are variadic in C; here they take the mode as a
//! third fixed argument. On x86-64 and aarch64 (SysV/AAPCS64) a variadic
//! integer argument travels where a fixed one does, and a caller that passed
//! none leaves an unspecified value the callee ignores (it reads the mode
//! only with `O_CREAT`/`O_TMPFILE`, as libc does).

use crate::{netdev, paths, tree};
use libc::{c_char, c_int, c_void, mode_t, size_t, ssize_t, DIR, FILE};
use std::ffi::CStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::OnceLock;

/// The tree and the process that made it (only that one removes it).
struct Tree {
    root: PathBuf,
    owner: u32,
}

static TREE: OnceLock<Option<Tree>> = OnceLock::new();

/// The process's tree, made on first need; None if it cannot be made (the
/// face is then absent, as without this library).
fn tree_root() -> Option<&'static [u8]> {
    let t = TREE.get_or_init(|| {
        let ndev = netdev::name(interface_of);
        let root = tree::build(ndev.as_deref()).ok()?;
        // SAFETY: registers a plain function with no arguments to run at exit.
        unsafe { libc::atexit(remove_tree) };
        Some(Tree {
            root,
            owner: std::process::id(),
        })
    });
    t.as_ref().map(|t| t.root.as_os_str().as_bytes())
}

extern "C" fn remove_tree() {
    if let Some(Some(t)) = TREE.get() {
        if t.owner == std::process::id() {
            tree::remove(&t.root);
        }
    }
}

/// The interface holding `ip` (getifaddrs).
fn interface_of(ip: std::net::IpAddr) -> Option<String> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a list freed below.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return None;
    }
    let mut found = None;
    let mut p = list;
    while !p.is_null() && found.is_none() {
        // SAFETY: `p` is a node of the list getifaddrs returned, alive until freeifaddrs.
        let ifa = unsafe { &*p };
        p = ifa.ifa_next;
        if ifa.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: ifa_addr points to a sockaddr of the family it names.
        let fam = c_int::from(unsafe { (*ifa.ifa_addr).sa_family });
        let addr = match fam {
            libc::AF_INET => {
                // SAFETY: an AF_INET address is a sockaddr_in.
                let a = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                std::net::IpAddr::from(u32::from_be(a.sin_addr.s_addr).to_be_bytes())
            }
            libc::AF_INET6 => {
                // SAFETY: an AF_INET6 address is a sockaddr_in6.
                let a = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                std::net::IpAddr::from(a.sin6_addr.s6_addr)
            }
            _ => continue,
        };
        if addr == ip {
            // SAFETY: ifa_name is a NUL-terminated name in the list.
            let n = unsafe { CStr::from_ptr(ifa.ifa_name) };
            found = Some(n.to_string_lossy().into_owned());
        }
    }
    // SAFETY: the list from getifaddrs, freed once.
    unsafe { libc::freeifaddrs(list) };
    found
}

/// `path` as the real function should see it: in the tree when it is in
/// the face (and the tree exists), else None (use `path` itself).
///
/// # Safety
/// `path` is NULL or a NUL-terminated string.
unsafe fn redirect(path: *const c_char) -> Option<Vec<u8>> {
    if path.is_null() {
        return None;
    }
    // SAFETY: the caller's string, NUL-terminated per the C function's contract.
    let p = unsafe { CStr::from_ptr(path) }.to_bytes();
    if !paths::in_face(p) {
        return None;
    }
    Some(paths::in_tree(tree_root()?, p))
}

/// The real function `name` (NUL-terminated), looked up once.
fn real(cell: &OnceLock<usize>, name: &[u8]) -> usize {
    *cell.get_or_init(|| {
        // SAFETY: dlsym with a NUL-terminated name; RTLD_NEXT finds libc's.
        unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr() as *const c_char) as usize }
    })
}

/// Define `$name` with path argument `$path`: call the next definition with
/// the path moved into the tree when it is in the face.
macro_rules! interpose {
    ($(fn $name:ident($($a:ident: $t:ty),*) -> $r:ty, path = $path:ident, fail = $fail:expr;)*) => {$(
        #[no_mangle]
        pub unsafe extern "C" fn $name($($a: $t),*) -> $r {
            static REAL: OnceLock<usize> = OnceLock::new();
            let f = real(&REAL, concat!(stringify!($name), "\0").as_bytes());
            if f == 0 {
                // SAFETY: errno is this thread's.
                unsafe { *libc::__errno_location() = libc::ENOSYS };
                return $fail;
            }
            // SAFETY: `f` is the next definition of this very function, of this signature.
            let f: unsafe extern "C" fn($($t),*) -> $r = unsafe { std::mem::transmute(f) };
            // SAFETY: the caller passes a valid path pointer or NULL.
            let moved = unsafe { redirect($path) };
            let $path = moved.as_ref().map_or($path, |m| m.as_ptr() as *const c_char);
            // SAFETY: the caller's arguments, with the path replaced by a live string.
            unsafe { f($($a),*) }
        }
    )*};
}

interpose! {
    fn open(path: *const c_char, flags: c_int, mode: mode_t) -> c_int, path = path, fail = -1;
    fn open64(path: *const c_char, flags: c_int, mode: mode_t) -> c_int, path = path, fail = -1;
    fn __open_2(path: *const c_char, flags: c_int) -> c_int, path = path, fail = -1;
    fn __open64_2(path: *const c_char, flags: c_int) -> c_int, path = path, fail = -1;
    fn openat(dirfd: c_int, path: *const c_char, flags: c_int, mode: mode_t) -> c_int, path = path, fail = -1;
    fn openat64(dirfd: c_int, path: *const c_char, flags: c_int, mode: mode_t) -> c_int, path = path, fail = -1;
    fn __openat_2(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int, path = path, fail = -1;
    fn __openat64_2(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int, path = path, fail = -1;
    fn fopen(path: *const c_char, mode: *const c_char) -> *mut FILE, path = path, fail = std::ptr::null_mut();
    fn fopen64(path: *const c_char, mode: *const c_char) -> *mut FILE, path = path, fail = std::ptr::null_mut();
    fn stat(path: *const c_char, buf: *mut c_void) -> c_int, path = path, fail = -1;
    fn stat64(path: *const c_char, buf: *mut c_void) -> c_int, path = path, fail = -1;
    fn lstat(path: *const c_char, buf: *mut c_void) -> c_int, path = path, fail = -1;
    fn lstat64(path: *const c_char, buf: *mut c_void) -> c_int, path = path, fail = -1;
    fn fstatat(dirfd: c_int, path: *const c_char, buf: *mut c_void, flags: c_int) -> c_int, path = path, fail = -1;
    fn fstatat64(dirfd: c_int, path: *const c_char, buf: *mut c_void, flags: c_int) -> c_int, path = path, fail = -1;
    fn __xstat(ver: c_int, path: *const c_char, buf: *mut c_void) -> c_int, path = path, fail = -1;
    fn __xstat64(ver: c_int, path: *const c_char, buf: *mut c_void) -> c_int, path = path, fail = -1;
    fn __lxstat(ver: c_int, path: *const c_char, buf: *mut c_void) -> c_int, path = path, fail = -1;
    fn __lxstat64(ver: c_int, path: *const c_char, buf: *mut c_void) -> c_int, path = path, fail = -1;
    fn __fxstatat(ver: c_int, dirfd: c_int, path: *const c_char, buf: *mut c_void, flags: c_int) -> c_int, path = path, fail = -1;
    fn __fxstatat64(ver: c_int, dirfd: c_int, path: *const c_char, buf: *mut c_void, flags: c_int) -> c_int, path = path, fail = -1;
    fn statx(dirfd: c_int, path: *const c_char, flags: c_int, mask: libc::c_uint, buf: *mut c_void) -> c_int, path = path, fail = -1;
    fn access(path: *const c_char, mode: c_int) -> c_int, path = path, fail = -1;
    fn euidaccess(path: *const c_char, mode: c_int) -> c_int, path = path, fail = -1;
    fn eaccess(path: *const c_char, mode: c_int) -> c_int, path = path, fail = -1;
    fn faccessat(dirfd: c_int, path: *const c_char, mode: c_int, flags: c_int) -> c_int, path = path, fail = -1;
    fn opendir(path: *const c_char) -> *mut DIR, path = path, fail = std::ptr::null_mut();
    fn readlink(path: *const c_char, buf: *mut c_char, len: size_t) -> ssize_t, path = path, fail = -1;
    fn __readlink_chk(path: *const c_char, buf: *mut c_char, len: size_t, buflen: size_t) -> ssize_t, path = path, fail = -1;
    fn getxattr(path: *const c_char, name: *const c_char, value: *mut c_void, size: size_t) -> ssize_t, path = path, fail = -1;
    fn lgetxattr(path: *const c_char, name: *const c_char, value: *mut c_void, size: size_t) -> ssize_t, path = path, fail = -1;
    fn listxattr(path: *const c_char, list: *mut c_char, size: size_t) -> ssize_t, path = path, fail = -1;
    fn llistxattr(path: *const c_char, list: *mut c_char, size: size_t) -> ssize_t, path = path, fail = -1;
    fn readlinkat(dirfd: c_int, path: *const c_char, buf: *mut c_char, len: size_t) -> ssize_t, path = path, fail = -1;
}

/// Strip the tree's root from a resolved path, in place: a path in the face
/// resolves to a path in the face (or, through the command file's link,
/// to `/dev/null`).
///
/// # Safety
/// `res` is NULL or a NUL-terminated string realpath just wrote.
unsafe fn unroot(res: *mut c_char) -> *mut c_char {
    let Some(root) = TREE.get().and_then(|t| t.as_ref()) else {
        return res;
    };
    if res.is_null() {
        return res;
    }
    let root = root.root.as_os_str().as_bytes();
    // SAFETY: realpath's result, NUL-terminated.
    let s = unsafe { CStr::from_ptr(res) }.to_bytes();
    if s.len() > root.len() && s.starts_with(root) && s[root.len()] == b'/' {
        let tail = s.len() - root.len() + 1; // with the NUL
                                             // SAFETY: moving the tail (and its NUL) to the front of the same buffer.
        unsafe { std::ptr::copy(res.add(root.len()), res, tail) };
    }
    res
}

macro_rules! interpose_realpath {
    ($(fn $name:ident($($a:ident: $t:ty),*);)*) => {$(
        #[no_mangle]
        pub unsafe extern "C" fn $name(path: *const c_char $(, $a: $t)*) -> *mut c_char {
            static REAL: OnceLock<usize> = OnceLock::new();
            let f = real(&REAL, concat!(stringify!($name), "\0").as_bytes());
            if f == 0 {
                // SAFETY: errno is this thread's.
                unsafe { *libc::__errno_location() = libc::ENOSYS };
                return std::ptr::null_mut();
            }
            let f: unsafe extern "C" fn(*const c_char $(, $t)*) -> *mut c_char =
                // SAFETY: the next definition of this function, of this signature.
                unsafe { std::mem::transmute(f) };
            // SAFETY: the caller passes a valid path pointer or NULL.
            match unsafe { redirect(path) } {
                // SAFETY: the caller's arguments.
                None => unsafe { f(path $(, $a)*) },
                // SAFETY: the moved path is a live string; the result is realpath's.
                Some(m) => unsafe { unroot(f(m.as_ptr() as *const c_char $(, $a)*)) },
            }
        }
    )*};
}

interpose_realpath! {
    fn realpath(resolved: *mut c_char);
    fn __realpath_chk(resolved: *mut c_char, resolvedlen: size_t);
}
