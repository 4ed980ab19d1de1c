//! Memory windows (IBA 10.6.7): a window narrows one MR's range and grants
//! remote rights of its own under its own R_Key, in the MR table's key
//! space. Type 1 windows are bound by `ibv_bind_mw` and keep their binding
//! until rebound (length 0 unbinds); type 2 (2B) windows are bound through
//! a QP, are reached only through that QP, and are invalidated by LOCAL_INV
//! or a peer's SEND with invalidate. The checks are rxe's (`rxe_mw.c`) plus
//! the window's own bounds, which the responder checks before the MR's.

use super::mr::{KeyError, Keyed, MrShared, MrTable};
use crate::limits::MAX_MW;
use crate::sync::{Guard, Level, OrderedMutex};
use crate::types::{Access, MwBind, MwType};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Rights a window may grant: the remote ones (local write is accepted and
/// means nothing through a window, as on rxe).
const WINDOW_RIGHTS: u32 = Access::LOCAL_WRITE.0
    | Access::REMOTE_WRITE.0
    | Access::REMOTE_READ.0
    | Access::REMOTE_ATOMIC.0;

pub(crate) struct MwShared {
    pd_id: u32,
    kind: MwType,
    state: OrderedMutex<MwState>,
}

struct MwState {
    /// The current R_Key: the window's index and the key byte of the last bind.
    rkey: u32,
    /// None: never bound, unbound (type 1, length 0) or invalidated (type
    /// 2: free again).
    bound: Option<Binding>,
    /// Deallocated: nothing binds, invalidates or reaches it any more.
    dead: bool,
    /// Counts binds: a request resolved through one binding goes on only
    /// while that binding stands (not after a rebind under the same key).
    generation: u64,
}

struct Binding {
    mr: Arc<MrShared>,
    addr: u64,
    len: u64,
    access: Access,
    /// Type 2: the QP it was bound through, the only one that reaches it.
    qpn: u32,
}

impl MwShared {
    pub(crate) fn rkey(&self) -> u32 {
        self.state.lock().rkey
    }

    pub(crate) fn kind(&self) -> MwType {
        self.kind
    }

    pub(crate) fn pd_id(&self) -> u32 {
        self.pd_id
    }
}

impl MwState {
    /// The binding taken off, for the caller to drop once its locks are
    /// released: it may hold the last reference to a deregistered MR,
    /// whose ODP memory unregisters its notifier when dropped.
    #[must_use]
    fn unbind(&mut self) -> Option<Binding> {
        let b = self.bound.take()?;
        b.mr.windows.fetch_sub(1, Ordering::Relaxed);
        Some(b)
    }
}

/// Why a bind or an invalidation failed (the WR completes in error:
/// `MwBindErr` or `LocQpOpErr`, the receive of a SEND with invalidate
/// `RemInvReqErr`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refused;

impl MrTable {
    /// `ibv_alloc_mw`: a new window of PD `pd_id` (type 1 bound to nothing,
    /// type 2 free); None past `MAX_MW` windows.
    pub(crate) fn insert_mw(&self, pd_id: u32, kind: MwType) -> Option<Arc<MwShared>> {
        let mut map = self.by_index.write();
        if self.windows.load(Ordering::Relaxed) >= MAX_MW {
            return None;
        }
        let index = self.free_index(&map);
        let mw = Arc::new(MwShared {
            pd_id,
            kind,
            state: OrderedMutex::new(
                Level::Mw,
                MwState {
                    rkey: (index << 8) | u32::from(crate::sys::random_byte()),
                    bound: None,
                    dead: false,
                    generation: 0,
                },
            ),
        });
        map.insert(index, Keyed::Mw(mw.clone()));
        self.windows.fetch_add(1, Ordering::Relaxed);
        Some(mw)
    }

    /// `ibv_dealloc_mw`: out of the table and unbound (a bound window may
    /// be deallocated, as on rxe); later accesses through its key fail.
    /// Locks: the table (exclusive), then the window.
    pub(crate) fn remove_mw(&self, mw: &Arc<MwShared>) {
        let _old; // declared before the guards: dropped after them
        let mut map = self.by_index.write();
        let mut st = mw.state.lock();
        let index = st.rkey >> 8;
        if matches!(map.get(index), Some(Keyed::Mw(m)) if Arc::ptr_eq(m, mw)) {
            map.remove(index);
            self.windows.fetch_sub(1, Ordering::Relaxed);
        }
        st.dead = true;
        _old = st.unbind();
    }

    /// Execute a bind posted on QP `qpn` of PD `pd_id` (`IBV_WR_BIND_MW`,
    /// or `ibv_bind_mw` for type 1). Checks, each a refusal: the window
    /// exists and is of the QP's PD (C10-72); the MR exists, is of that PD,
    /// was registered with `MW_BIND` (C10-73) and with local write if the
    /// window grants remote write or atomics (C10-74); the window lies within
    /// the MR (C10-75); a type 2 window is free (o10-37.2.30) and given
    /// memory (o10-37.2.40). Locks: the table (shared, so a deregistration
    /// sees the MR's window count settled), then the window.
    pub(crate) fn bind_mw(&self, pd_id: u32, qpn: u32, b: &MwBind) -> Result<u32, Refused> {
        let _old; // declared before the guards: dropped after them
        let map = self.by_index.read();
        let Some(Keyed::Mw(mw)) = map.get(b.mw_rkey >> 8) else {
            return Err(Refused);
        };
        if mw.pd_id != pd_id || b.access.0 & !WINDOW_RIGHTS != 0 {
            return Err(Refused);
        }
        let mr = if b.length == 0 {
            None
        } else {
            let Some(Keyed::Mr(mr)) = map.get(b.mr_lkey >> 8) else {
                return Err(Refused);
            };
            let (addr, len) = mr.range();
            let remote_writes = Access(Access::REMOTE_WRITE.0 | Access::REMOTE_ATOMIC.0);
            if mr.key() != b.mr_lkey
                || mr.pd_id() != pd_id
                || !mr.rights().contains(Access::MW_BIND)
                || (b.access.0 & remote_writes.0 != 0 && !mr.rights().contains(Access::LOCAL_WRITE))
                || !odp::umem::within(b.addr, b.length, addr, addr.saturating_add(len))
            {
                return Err(Refused);
            }
            Some(mr.clone())
        };
        let mut st = mw.state.lock();
        if st.dead || (mw.kind == MwType::Two && (st.bound.is_some() || mr.is_none())) {
            return Err(Refused);
        }
        _old = st.unbind();
        st.rkey = (st.rkey & !0xff) | (b.new_rkey & 0xff);
        st.generation += 1;
        st.bound = mr.map(|mr| {
            mr.windows.fetch_add(1, Ordering::Relaxed);
            Binding {
                mr,
                addr: b.addr,
                len: b.length,
                access: b.access,
                qpn,
            }
        });
        Ok(st.rkey)
    }

    /// Invalidate the type 2 window whose R_Key is `rkey`, for a QP of PD
    /// `pd_id` (LOCAL_INV, or a SEND with invalidate received): it is free
    /// again and its key reaches nothing. Refused: a key naming an MR
    /// (a registered MR is never invalidated) or nothing, a stale key, a
    /// type 1 window (o10-37.2.26), another PD's window. Locks: the table
    /// (shared), then the window.
    pub(crate) fn invalidate_mw(&self, pd_id: u32, rkey: u32) -> Result<(), Refused> {
        let _old; // declared before the guards: dropped after them
        let map = self.by_index.read();
        let Some(Keyed::Mw(mw)) = map.get(rkey >> 8) else {
            return Err(Refused);
        };
        let mut st = mw.state.lock();
        if st.dead || st.rkey != rkey || mw.kind == MwType::One || mw.pd_id != pd_id {
            return Err(Refused);
        }
        _old = st.unbind();
        Ok(())
    }

    /// The MR a remote access with `rkey` to `[va, va+len)` needing `need`
    /// reaches, checked — through a window: its key, PD, QP (type 2), rights
    /// and bounds, then the MR's bounds beneath (the MR's own remote rights
    /// do not matter: the window grants them); an MR: its PD, rights and
    /// bounds. Locks: the table (shared), then the window.
    pub(crate) fn resolve(
        &self,
        rkey: u32,
        pd_id: u32,
        qpn: u32,
        va: u64,
        len: u64,
        need: Access,
    ) -> Result<Resolved, KeyError> {
        let map = self.by_index.read();
        match map.get(rkey >> 8) {
            Some(Keyed::Mr(mr)) if mr.key() == rkey => {
                mr.check(pd_id, va, len, need)?;
                Ok(Resolved {
                    mr: mr.clone(),
                    via: None,
                })
            }
            Some(Keyed::Mw(mw)) => {
                let st = mw.state.lock();
                let b = match &st.bound {
                    Some(b) if !st.dead && st.rkey == rkey && mw.pd_id == pd_id => b,
                    _ => return Err(KeyError::BadKey),
                };
                if mw.kind == MwType::Two && b.qpn != qpn {
                    return Err(KeyError::BadKey);
                }
                if !b.access.contains(need) {
                    return Err(KeyError::NoAccess);
                }
                if !odp::umem::within(va, len, b.addr, b.addr.saturating_add(b.len)) {
                    return Err(KeyError::OutOfBounds);
                }
                b.mr.check(pd_id, va, len, Access::default())?;
                Ok(Resolved {
                    mr: b.mr.clone(),
                    via: Some((mw.clone(), st.generation)),
                })
            }
            _ => Err(KeyError::BadKey),
        }
    }
}

/// What a request's R_Key resolved to: an MR, reached directly or through
/// a window. Through a window, every access holds the window's lock and
/// checks that the binding it was resolved through still stands
/// ([`Resolved::hold`]): an invalidation, rebind or deallocation waits for
/// an access under way, and once it is done nothing more of a message in
/// progress goes through the window (a deregistration's fence, for windows).
pub(crate) struct Resolved {
    mr: Arc<MrShared>,
    via: Option<(Arc<MwShared>, u64)>,
}

/// The window's lock, held over one access (nothing for a plain MR).
pub(crate) struct Held<'a> {
    _window: Option<Guard<'a, MwState>>,
}

impl Resolved {
    /// Hold the window (if any) for an access; `Err` once its binding is
    /// gone. Locks: the window; the access then takes `MrValid`.
    pub(crate) fn hold(&self) -> Result<Held<'_>, Refused> {
        let Some((mw, generation)) = &self.via else {
            return Ok(Held { _window: None });
        };
        let st = mw.state.lock();
        if st.dead || st.generation != *generation || st.bound.is_none() {
            return Err(Refused);
        }
        Ok(Held { _window: Some(st) })
    }
}

impl std::ops::Deref for Resolved {
    type Target = MrShared;
    fn deref(&self) -> &MrShared {
        &self.mr
    }
}
