//! What is exported but not offered: rsockets (`rsocket`, `rbind`, … — every call fails with ENOSYS and
//! returns -1, which the `int`, `ssize_t` and `off_t` callers all read as
//! -1; `riowrite`'s `size_t` reads as its error value too).

use crate::ffi::*;

/// An rsocket call: ENOSYS. Arguments are ignored (the caller's registers
/// go unread), so one signature serves every function.
macro_rules! rsocket_stubs {
    ($($name:ident)*) => {$(
        pub unsafe extern "C" fn $name() -> i64 {
            set_errno(libc::ENOSYS);
            -1
        }
    )*};
}

rsocket_stubs! {
    shim_rsocket shim_rbind shim_rlisten shim_raccept shim_rconnect shim_rshutdown
    shim_rclose shim_rrecv shim_rrecvfrom shim_rrecvmsg shim_rsend shim_rsendto
    shim_rsendmsg shim_rread shim_rreadv shim_rwrite shim_rwritev shim_rpoll
    shim_rselect shim_rgetpeername shim_rgetsockname shim_rsetsockopt shim_rgetsockopt
    shim_rfcntl shim_riomap shim_riounmap shim_riowrite
}
