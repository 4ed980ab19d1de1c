//! `ibv_mr`: registration (argument checks, the `odp::Memory` to register)
//! and deregistration; the region itself is `resources::mr`.

use super::{Access, Errno, Pd, Result};
use crate::device::DeviceInner;
use crate::resources::mr::MrShared;
use odp::{AccessError, Memory};
use std::sync::Arc;

/// A registered memory region (`ibv_mr`).
pub struct Mr {
    dev: Arc<DeviceInner>,
    mr: Arc<MrShared>,
    _pd: super::Use,
}

/// What `ibv_rereg_mr` changes; `None` keeps the MR's.
#[derive(Clone, Copy, Default)]
pub struct Rereg<'a> {
    /// `IBV_REREG_MR_CHANGE_TRANSLATION`: the new `(addr, len)`.
    pub translation: Option<(u64, u64)>,
    /// `IBV_REREG_MR_CHANGE_PD`.
    pub pd: Option<&'a Pd>,
    /// `IBV_REREG_MR_CHANGE_ACCESS`.
    pub access: Option<Access>,
}

/// Remote write/atomic imply local write (verbs rule, EINVAL otherwise).
fn check_access(access: Access) -> Result<()> {
    if (access.contains(Access::REMOTE_WRITE) || access.contains(Access::REMOTE_ATOMIC))
        && !access.contains(Access::LOCAL_WRITE)
    {
        return Err(Errno::EINVAL);
    }
    // Persistence needs persistent memory, which this device never has: it
    // does not announce FLUSH_PERSISTENT, and the kernel refuses an access
    // flag the device does not announce with EOPNOTSUPP (rxe, which
    // announces it, refuses pages that are not pmem with EINVAL).
    if access.contains(Access::FLUSH_PERSISTENT) {
        return Err(Errno::EOPNOTSUPP);
    }
    Ok(())
}

/// The memory `[addr, addr+len)` is registered as: ODP (implicit for `addr`
/// 0, `len` `u64::MAX`) with `ON_DEMAND`, pinned otherwise.
fn memory_for(dev: &DeviceInner, addr: u64, len: u64, access: Access) -> Result<Memory> {
    let writable = access.contains(Access::LOCAL_WRITE);
    let implicit = addr == 0 && len == u64::MAX;
    Ok(if access.contains(Access::ON_DEMAND) {
        if implicit {
            Memory::Implicit(odp::ImplicitUmem::new(&dev.mm, writable))
        } else {
            Memory::Odp(odp::Umem::new(&dev.mm, addr, len, writable).map_err(|_| Errno::EINVAL)?)
        }
    } else {
        if implicit || len == 0 {
            return Err(Errno::EINVAL);
        }
        Memory::Pinned(
            odp::Pinned::new(&dev.mm, addr, len, writable).map_err(|e| match e {
                AccessError::OutOfBounds => Errno::EINVAL,
                // Over RLIMIT_MEMLOCK without CAP_IPC_LOCK, as ib_umem_get.
                AccessError::MemlockLimit => Errno::ENOMEM,
                _ => Errno::EFAULT,
            })?,
        )
    })
}

impl Mr {
    pub(crate) fn register(pd: &Pd, addr: u64, len: u64, access: Access) -> Result<Mr> {
        let dev = pd.dev().clone();
        check_access(access)?;
        let memory = memory_for(&dev, addr, len, access)?;
        // A full table: EINVAL, as rxe, whose object pools refuse an element
        // over their maximum with EINVAL.
        let mr = dev
            .mrs
            .insert(pd.id(), access, addr, len, Arc::new(memory))
            .ok_or(Errno::EINVAL)?;
        Ok(Mr {
            dev,
            mr,
            _pd: pd.use_(),
        })
    }

    /// `ibv_rereg_mr`: change the MR's translation, PD and/or rights in
    /// place. The keys stay (as mlx5 and rxe keep them), so a peer's R_Key
    /// and posted receives' L_Keys now reach the new range, rights and PD;
    /// once this returns nothing reaches the old translation (the old MR is
    /// fenced as deregistration fences). The pages are registered again only
    /// when the translation, `ON_DEMAND` or `LOCAL_WRITE` changes.
    /// EINVAL for nothing to change, another device's PD or rights that
    /// break the verbs rule; EBUSY while memory windows are bound to it; a
    /// failed registration of the new range keeps the MR as it was. Locks: the MR table, then the old MR's `valid`.
    pub fn rereg(&mut self, change: Rereg<'_>) -> Result<()> {
        if change.translation.is_none() && change.pd.is_none() && change.access.is_none() {
            return Err(Errno::EINVAL);
        }
        if change.pd.is_some_and(|p| !Arc::ptr_eq(p.dev(), &self.dev)) {
            return Err(Errno::EINVAL);
        }
        let old = self.mr.clone();
        let access = change.access.unwrap_or(old.rights());
        check_access(access)?;
        let (addr, len) = change.translation.unwrap_or(old.range());
        let kind = Access::ON_DEMAND | Access::LOCAL_WRITE;
        let same_pages = change.translation.is_none()
            && Access(access.0 & kind.0) == Access(old.rights().0 & kind.0);
        let memory = if same_pages {
            old.shared_memory()
        } else {
            Arc::new(memory_for(&self.dev, addr, len, access)?)
        };
        let pd_id = change.pd.map_or(old.pd_id(), |p| p.id());
        let stats = &self.dev.stats;
        let mr = self
            .dev
            .mrs
            .replace(&old, pd_id, access, (addr, len), memory, |m| {
                stats.retire_odp(m.odp_counters())
            })?;
        self.mr = mr;
        if let Some(p) = change.pd {
            self._pd = p.use_();
        }
        Ok(())
    }

    /// The rights the MR grants now.
    pub fn access(&self) -> Access {
        self.mr.rights()
    }

    pub fn lkey(&self) -> u32 {
        self.mr.key()
    }
    pub fn rkey(&self) -> u32 {
        self.mr.key()
    }
    pub fn addr(&self) -> u64 {
        self.mr.range().0
    }
    pub fn len(&self) -> u64 {
        self.mr.range().1
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Copies `out.len()` bytes of this MR at `va` into `out`, as the device
    /// reads it: the safe way for Rust code to read memory the device writes
    /// (a receive buffer) without a reference aliasing its writes. EFAULT
    /// outside the MR or on memory that is gone.
    pub fn read(&self, va: u64, out: &mut [u8]) -> Result<()> {
        let (start, len) = self.mr.range();
        let end = va.checked_add(out.len() as u64).ok_or(Errno::EFAULT)?;
        if va < start || end > start.saturating_add(len) {
            return Err(Errno::EFAULT);
        }
        self.mr.read(va, out).map_err(|_| Errno::EFAULT)
    }
    /// ODP counters (pinned MRs: only `orphan_accesses`).
    pub fn odp_counters(&self) -> odp::umem::CounterSnapshot {
        self.mr.odp_counters()
    }
    /// The MR's ODP counters under mlx5's names (`rdma statistic mr show`);
    /// `None` for a pinned MR, which has none. A relaxed read of atomics.
    pub fn stats(&self) -> Option<super::MrStats> {
        super::MrStats::of(&self.mr)
    }
    /// The MR number `softrdma stats --mr` shows (mlx5's `mrn`): the key's
    /// 24-bit index, without its 8 unpredictable bits.
    pub fn number(&self) -> u32 {
        self.mr.key() >> 8
    }
    /// `ibv_advise_mr` for `[addr, addr+len)` of this MR.
    pub fn advise(&self, advice: odp::Advice, addr: u64, len: u64, flush: bool) -> Result<()> {
        let r = match self.mr.memory() {
            Memory::Odp(u) => u.prefetch(addr, len, advice, flush),
            Memory::Implicit(u) => u.prefetch(addr, len, advice, flush),
            Memory::Pinned(_) => return Err(Errno::EOPNOTSUPP),
        };
        r.map_err(|e| match e {
            AccessError::NotWritable => Errno::EPERM,
            AccessError::OutOfBounds => Errno::EFAULT,
            _ => Errno::EFAULT,
        })
    }
}

impl Mr {
    /// `ibv_dereg_mr`: EBUSY (and the MR back) while memory windows are
    /// bound to it (IBA 10.6.7.2.6), otherwise deregistered. Dropping an
    /// `Mr` deregisters it regardless; its windows then reach nothing.
    pub fn dereg(self) -> std::result::Result<(), (Mr, Errno)> {
        match self.dereg_in_place() {
            Ok(()) => Ok(()),
            Err(e) => Err((self, e)),
        }
    }

    /// [`Mr::dereg`] for a caller that cannot give the handle up before
    /// knowing the answer (the C API): on success the MR is deregistered
    /// and the handle only waits to be dropped.
    #[doc(hidden)]
    pub fn dereg_in_place(&self) -> Result<()> {
        if self.remove(true) {
            Ok(())
        } else {
            Err(Errno::EBUSY)
        }
    }

    fn remove(&self, unless_bound: bool) -> bool {
        let stats = &self.dev.stats;
        self.dev.mrs.remove(&self.mr, unless_bound, |mr| {
            stats.retire_odp(mr.odp_counters())
        })
    }
}

impl Drop for Mr {
    fn drop(&mut self) {
        self.remove(false);
    }
}
