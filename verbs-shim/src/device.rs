//! Device discovery without sysfs: one device, `softrdma0`, backed by the
//! process's soft-rdma `Device` (opened on first need and kept for the life
//! of the process, so its GUID and GID stay the same across open/close).
//!
//! **Fork.** A child inherits the device's socket, rings and tables but none
//! of its threads, so it must not use that device: an `atfork` child handler
//! bumps [`generation`], and the child's first [`soft`] opens a device of its
//! own (a new pid-derived address, new threads). The inherited one is leaked
//! on purpose: dropping it would join threads that do not exist in the
//! child. Objects of the older generation fail with ENODEV
//! ([`crate::context::forked_away`]).

use crate::ffi::*;
use soft_rdma::verbs::Device;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Once, OnceLock};

pub const NAME: &str = "softrdma0";

/// The `ibv_device` handed out by `ibv_get_device_list` (never freed).
#[repr(C)]
pub struct ShimDevice {
    pub dev: ibv_device,
}

// The C pointer converts back to the wrapper with a cast: the C struct comes first.
const _: () = assert!(std::mem::offset_of!(ShimDevice, dev) == 0);

// SAFETY: after construction the struct is only read (by C callers and here).
unsafe impl Send for ShimDevice {}
// SAFETY: as above, immutable once built.
unsafe impl Sync for ShimDevice {}

static C_DEVICE: OnceLock<Box<ShimDevice>> = OnceLock::new();
/// The device and the [`generation`] it was opened in.
static SOFT: Mutex<Option<(u32, Arc<Device>)>> = Mutex::new(None);

/// How many forks lie between the first process and this one: bumped in the
/// child by an `atfork` handler, so checking it costs a load, not a
/// `getpid` system call.
static GENERATION: AtomicU32 = AtomicU32::new(0);

extern "C" fn forked_child() {
    GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// This process's fork generation (see the module docs).
pub fn generation() -> u32 {
    GENERATION.load(Ordering::Relaxed)
}

/// Install the fork handler once, before the first device opens (a fork
/// before that leaves nothing to replace).
fn watch_forks() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: registers a child handler that only bumps an atomic
        // (async-signal-safe, as a handler run after fork must be).
        unsafe { libc::pthread_atfork(None, None, Some(forked_child)) };
    });
}

pub fn c_device() -> *mut ibv_device {
    let d = C_DEVICE.get_or_init(|| {
        let mut dev = ibv_device {
            node_type: IBV_NODE_CA,
            transport_type: IBV_TRANSPORT_IB,
            ..Default::default()
        };
        put_cstr(&mut dev.name, NAME);
        put_cstr(&mut dev.dev_name, "uverbs0");
        put_cstr(&mut dev.dev_path, "/dev/infiniband/uverbs0");
        put_cstr(&mut dev.ibdev_path, "/sys/class/infiniband/softrdma0");
        Box::new(ShimDevice { dev })
    });
    &d.dev as *const ibv_device as *mut ibv_device
}

pub fn is_ours(dev: *const ibv_device) -> bool {
    !dev.is_null() && std::ptr::eq(dev, c_device())
}

/// The process's soft device, opened on first use — and again on first use
/// after a fork, leaking the inherited one (see the module docs) and
/// forgetting the parent's numbers ([`crate::registry::forget_all`]).
pub fn soft() -> std::io::Result<Arc<Device>> {
    watch_forks();
    let mut g = crate::sync::lock(&SOFT);
    let now = generation();
    match g.take() {
        Some((gen, d)) if gen == now => {
            *g = Some((gen, d.clone()));
            return Ok(d);
        }
        Some((_, inherited)) => {
            std::mem::forget(inherited);
            crate::registry::forget_all();
        }
        None => {}
    }
    let d = Arc::new(Device::open()?);
    *g = Some((now, d.clone()));
    Ok(d)
}

/// The errno of a failed open: the system call's, or for an error the
/// library rewrote with advice (e.g. a failed bind), its kind's.
fn io_errno(e: &std::io::Error) -> i32 {
    use std::io::ErrorKind as K;
    e.raw_os_error().unwrap_or(match e.kind() {
        K::AddrInUse => libc::EADDRINUSE,
        K::AddrNotAvailable => libc::EADDRNOTAVAIL,
        K::PermissionDenied => libc::EACCES,
        K::OutOfMemory => libc::ENOMEM,
        K::InvalidInput => libc::EINVAL,
        K::Unsupported => libc::EOPNOTSUPP,
        _ => libc::ENODEV,
    })
}

pub unsafe extern "C" fn shim_ibv_get_device_list(num: *mut c_int) -> *mut *mut ibv_device {
    // SAFETY: malloc of two pointers; checked for NULL before use.
    let list =
        unsafe { libc::calloc(2, std::mem::size_of::<*mut ibv_device>()) } as *mut *mut ibv_device;
    if list.is_null() {
        return fail_null(libc::ENOMEM);
    }
    // SAFETY: `list` has room for two pointers (the second stays NULL).
    unsafe { *list = c_device() };
    if !num.is_null() {
        // SAFETY: the caller passes a valid int pointer or NULL.
        unsafe { *num = 1 };
    }
    list
}

pub unsafe extern "C" fn shim_ibv_free_device_list(list: *mut *mut ibv_device) {
    // SAFETY: `list` came from ibv_get_device_list's calloc (or is NULL).
    unsafe { libc::free(list as *mut c_void) };
}

pub unsafe extern "C" fn shim_ibv_get_device_name(dev: *mut ibv_device) -> *const c_char {
    if dev.is_null() {
        return fail_null(libc::EINVAL);
    }
    // SAFETY: a device pointer from our list; `name` is NUL-terminated.
    unsafe { (*dev).name.as_ptr() }
}

pub unsafe extern "C" fn shim_ibv_get_device_guid(dev: *mut ibv_device) -> u64 {
    if !is_ours(dev) {
        set_errno(libc::EINVAL);
        return 0;
    }
    match soft() {
        Ok(d) => d.attr().node_guid.to_be(),
        Err(e) => {
            set_errno(io_errno(&e));
            0
        }
    }
}

pub unsafe extern "C" fn shim_ibv_get_device_index(dev: *mut ibv_device) -> c_int {
    if is_ours(dev) {
        0
    } else {
        -1
    }
}

pub fn open_errno(e: &std::io::Error) -> i32 {
    io_errno(e)
}
