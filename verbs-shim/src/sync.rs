//! Locks in the shim ignore poisoning, as the device's do: each guards
//! state consistent at every unlock, and a panic caught at the C boundary
//! must not wedge the library for the rest of the process.

use std::sync::{Condvar, Mutex, MutexGuard};

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn wait<'a, T>(cv: &Condvar, g: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    cv.wait(g).unwrap_or_else(|p| p.into_inner())
}
