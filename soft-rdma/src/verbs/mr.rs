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

impl Mr {
    pub(crate) fn register(pd: &Pd, addr: u64, len: u64, access: Access) -> Result<Mr> {
        let dev = pd.dev().clone();
        // Remote write/atomic imply local write (verbs rule, EINVAL otherwise).
        if (access.contains(Access::REMOTE_WRITE) || access.contains(Access::REMOTE_ATOMIC))
            && !access.contains(Access::LOCAL_WRITE)
        {
            return Err(Errno::EINVAL);
        }
        // Persistence needs persistent memory, which this device never has:
        // it does not announce FLUSH_PERSISTENT, and the kernel refuses an
        // access flag the device does not announce with EOPNOTSUPP (rxe,
        // which announces it, refuses pages that are not pmem with EINVAL).
        if access.contains(Access::FLUSH_PERSISTENT) {
            return Err(Errno::EOPNOTSUPP);
        }
        let writable = access.contains(Access::LOCAL_WRITE);
        let implicit = addr == 0 && len == u64::MAX;
        let memory = if access.contains(Access::ON_DEMAND) {
            if implicit {
                Memory::Implicit(odp::ImplicitUmem::new(&dev.mm, writable))
            } else {
                Memory::Odp(
                    odp::Umem::new(&dev.mm, addr, len, writable).map_err(|_| Errno::EINVAL)?,
                )
            }
        } else {
            if implicit || len == 0 {
                return Err(Errno::EINVAL);
            }
            Memory::Pinned(
                odp::Pinned::new(&dev.mm, addr, len, writable).map_err(|e| match e {
                    AccessError::OutOfBounds => Errno::EINVAL,
                    _ => Errno::EFAULT,
                })?,
            )
        };
        // A full table: EINVAL, as rxe, whose object pools refuse an element
        // over their maximum with EINVAL.
        let mr = dev
            .mrs
            .insert(pd.id(), access, addr, len, memory)
            .ok_or(Errno::EINVAL)?;
        Ok(Mr {
            dev,
            mr,
            _pd: pd.use_(),
        })
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
