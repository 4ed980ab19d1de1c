//! `ibv_mw`: allocation and deallocation of memory windows. Binding and
//! invalidation are send work requests (`SendOp::BindMw`,
//! `SendOp::LocalInv`, a peer's `SendOp::SendInv`); the window itself is
//! `resources::mw`.

use super::{MwType, Pd, Result};
use crate::device::DeviceInner;
use crate::resources::mw::MwShared;
use crate::types::Errno;
use std::sync::Arc;

/// A memory window (`ibv_mw`): an R_Key onto part of an MR, with rights of
/// its own, bound and invalidated through a QP of its PD.
///
/// - Type 1: bound by posting `SendOp::BindMw` with
///   `new_rkey = ibv_inc_rkey(rkey)` (what `ibv_bind_mw` does); a bind of
///   length 0 unbinds it; it cannot be invalidated.
/// - Type 2 (2B): bound through a QP (only that QP reaches it), the key
///   byte of `new_rkey` chosen by the consumer; bound again only once
///   invalidated (`SendOp::LocalInv`, or a peer's `SendOp::SendInv`).
///
/// A failed bind completes with `WcStatus::MwBindErr`, a failed local
/// invalidation with `LocQpOpErr`; either puts the QP in error (as rxe).
/// Dropping the window deallocates it, bound or not; an MR with windows
/// bound refuses `Mr::dereg` with EBUSY.
pub struct Mw {
    dev: Arc<DeviceInner>,
    mw: Arc<MwShared>,
    _pd: super::Use,
}

impl Mw {
    /// A full table of windows is EINVAL, as rxe's pools.
    pub(crate) fn alloc(pd: &Pd, kind: MwType) -> Result<Mw> {
        let dev = pd.dev().clone();
        let mw = dev.mrs.insert_mw(pd.id(), kind).ok_or(Errno::EINVAL)?;
        Ok(Mw {
            dev,
            mw,
            _pd: pd.use_(),
        })
    }

    /// The current R_Key (after the last successful bind).
    pub fn rkey(&self) -> u32 {
        self.mw.rkey()
    }

    pub fn kind(&self) -> MwType {
        self.mw.kind()
    }

    /// Whether this window belongs to the PD `pd`.
    pub fn is_on(&self, pd: &Pd) -> bool {
        self.mw.pd_id() == pd.id() && Arc::ptr_eq(&self.dev, pd.dev())
    }
}

impl Drop for Mw {
    fn drop(&mut self) {
        self.dev.mrs.remove_mw(&self.mw);
    }
}
