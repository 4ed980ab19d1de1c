//! One lock for the tests of a test binary that must not run at the same
//! time (client/server program pairs sharing the machine's 2 cores).

use std::sync::{Mutex, MutexGuard};

/// Hold the returned guard for the test's length: tests that take it run one
/// at a time. A test that panicked while holding it does not poison it for
/// the others.
pub fn serial() -> MutexGuard<'static, ()> {
    static M: Mutex<()> = Mutex::new(());
    M.lock().unwrap_or_else(|e| e.into_inner())
}
