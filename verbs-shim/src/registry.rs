//! Process-wide maps from device numbers (QPN, SRQ id, CQ id, lkey) to the C objects
//! that carry them: for async events and `ibv_advise_mr`'s SGEs.

use std::collections::HashMap;
use std::sync::Mutex;

pub struct Registry(Mutex<Option<HashMap<u32, usize>>>);

impl Registry {
    pub const fn new() -> Registry {
        Registry(Mutex::new(None))
    }
    pub fn insert<T>(&self, k: u32, p: *mut T) {
        crate::sync::lock(&self.0)
            .get_or_insert_with(HashMap::new)
            .insert(k, p as usize);
    }
    pub fn remove(&self, k: u32) {
        if let Some(m) = crate::sync::lock(&self.0).as_mut() {
            m.remove(&k);
        }
    }
    /// Drop every entry (after a fork: the numbers are the parent's device's).
    fn forget(&self) {
        *crate::sync::lock(&self.0) = None;
    }
    /// Run `f` if `k` still names `p`, holding the map meanwhile: for a
    /// pointer kept where the application may destroy the object behind our
    /// back. A destroy removes the entry before it releases the object, so
    /// the object outlives `f`. `f` must not use this registry.
    pub fn with_live<T, R>(&self, k: u32, p: *mut T, f: impl FnOnce() -> R) -> Option<R> {
        let m = crate::sync::lock(&self.0);
        (m.as_ref()?.get(&k) == Some(&(p as usize))).then(f)
    }

    pub fn get<T>(&self, k: u32) -> Option<*mut T> {
        crate::sync::lock(&self.0)
            .as_ref()?
            .get(&k)
            .map(|&p| p as *mut T)
    }
}

pub static QPS: Registry = Registry::new();
pub static SRQS: Registry = Registry::new();
pub static CQS: Registry = Registry::new();
pub static MRS: Registry = Registry::new();

/// After a fork, before the child's own device opens: its numbers would
/// otherwise find the parent's objects.
pub fn forget_all() {
    for r in [&QPS, &SRQS, &CQS, &MRS] {
        r.forget();
    }
}
