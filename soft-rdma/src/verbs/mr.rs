//! Memory regions: pinned, explicit ODP and implicit ODP, all reached through
//! `odp::Memory` — one access path, no "null umem" (kernel bug pattern 8).

use super::{Access, Errno, Pd, Result};
use crate::verbs::device::DeviceInner;
use odp::{AccessError, Memory};
use std::sync::{Arc, RwLock, RwLockReadGuard};

pub(crate) struct MrShared {
    pub(crate) dev: Arc<DeviceInner>,
    pub(crate) pd_id: u32,
    pub(crate) key: u32,
    pub(crate) access: Access,
    /// Registered `[addr, addr+len)`; implicit ODP: the whole address space.
    pub(crate) addr: u64,
    pub(crate) len: u64,
    memory: Memory,
    /// False once deregistered. Every access to `memory` holds this shared
    /// and checks it; deregistration takes it exclusively, so when
    /// `ibv_dereg_mr` returns no access is under way and none starts —
    /// including the rest of a multi-packet WRITE whose first packet found
    /// the MR (the responder keeps it for the message), and a lookup that
    /// raced the removal from the key table. Such accesses fail: a remote
    /// access error, as rxe's `mr->state != RXE_MR_STATE_VALID` checks.
    valid: RwLock<bool>,
}

/// Why a key/range check failed — mapped to a NAK or a completion status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyError {
    /// No such key, or another PD's.
    BadKey,
    /// The MR lacks the access right.
    NoAccess,
    /// Outside the MR (computed without overflow).
    OutOfBounds,
}

impl MrShared {
    /// Check `[va, va+len)` and the access right: the responder's and the
    /// requester's one gate before touching memory.
    pub(crate) fn check(
        &self,
        pd_id: u32,
        va: u64,
        len: u64,
        need: Access,
    ) -> std::result::Result<(), KeyError> {
        if self.pd_id != pd_id {
            return Err(KeyError::BadKey);
        }
        if !self.access.contains(need) {
            return Err(KeyError::NoAccess);
        }
        // Implicit ODP: addr 0, len u64::MAX — the whole address space.
        if !odp::umem::within(va, len, self.addr, self.addr.saturating_add(self.len)) {
            return Err(KeyError::OutOfBounds);
        }
        Ok(())
    }

    /// Run `f` on the memory unless the MR was deregistered (then
    /// `OutOfBounds`: no address is inside a deregistered MR).
    fn access<R>(
        &self,
        f: impl FnOnce(&Memory) -> std::result::Result<R, AccessError>,
    ) -> std::result::Result<R, AccessError> {
        let valid = self.valid.read().unwrap_or_else(|e| e.into_inner());
        if !*valid {
            return Err(AccessError::OutOfBounds);
        }
        f(&self.memory)
    }

    /// Fault an ODP range in before a message's packets touch it, best
    /// effort: a failure is reported by the access that needs the page.
    pub(crate) fn fault_in(&self, va: u64, len: u64, write: bool) {
        // Pinned memory is always present: no lock to take on every message.
        if len > 0 && !matches!(self.memory, Memory::Pinned(_)) {
            let _ = self.access(|m| m.fault_in(va, len, write));
        }
    }

    /// `[va, va+len)` opened for the packets of one message (see
    /// [`odp::Window`]: while it is open, no other MR access).
    pub(crate) fn window(
        &self,
        va: u64,
        len: u64,
        write: bool,
    ) -> std::result::Result<MrWindow<'_>, AccessError> {
        let valid = self.valid.read().unwrap_or_else(|e| e.into_inner());
        if !*valid {
            return Err(AccessError::OutOfBounds);
        }
        Ok(MrWindow {
            window: self.memory.window(va, len, write)?,
            _valid: valid,
        })
    }

    pub(crate) fn read(&self, va: u64, out: &mut [u8]) -> std::result::Result<(), AccessError> {
        self.access(|m| m.read(va, out))
    }

    pub(crate) fn write(&self, va: u64, data: &[u8]) -> std::result::Result<(), AccessError> {
        self.access(|m| m.write(va, data))
    }

    pub(crate) fn compare_and_swap(
        &self,
        va: u64,
        expect: u64,
        new: u64,
    ) -> std::result::Result<u64, AccessError> {
        self.access(|m| m.compare_and_swap(va, expect, new))
    }

    pub(crate) fn fetch_and_add(&self, va: u64, add: u64) -> std::result::Result<u64, AccessError> {
        self.access(|m| m.fetch_and_add(va, add))
    }

    /// ODP counters (zero for pinned MRs).
    pub(crate) fn odp_counters(&self) -> odp::umem::CounterSnapshot {
        match &self.memory {
            Memory::Odp(u) => u.counters(),
            Memory::Implicit(u) => u.counters(),
            Memory::Pinned(_) => Default::default(),
        }
    }
}

/// An open [`odp::Window`] onto an MR, which stays registered meanwhile.
pub(crate) struct MrWindow<'a> {
    // Closed before the MR may be deregistered (drop order).
    pub(crate) window: odp::Window<'a>,
    _valid: RwLockReadGuard<'a, bool>,
}

/// A registered memory region (`ibv_mr`).
pub struct Mr(pub(crate) Arc<MrShared>);

impl Mr {
    pub(crate) fn register(pd: &Pd, addr: u64, len: u64, access: Access) -> Result<Mr> {
        let dev = pd.dev().clone();
        // Remote write/atomic imply local write (verbs rule, EINVAL otherwise).
        if (access.contains(Access::REMOTE_WRITE) || access.contains(Access::REMOTE_ATOMIC))
            && !access.contains(Access::LOCAL_WRITE)
        {
            return Err(Errno::EINVAL);
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
            Memory::Pinned(odp::Pinned::new(addr, len, writable).map_err(|e| match e {
                AccessError::OutOfBounds => Errno::EINVAL,
                _ => Errno::EFAULT,
            })?)
        };
        let mut mrs = dev.mrs.write().unwrap_or_else(|e| e.into_inner());
        if mrs.len() >= super::device::MAX_MR {
            drop(mrs);
            drop(memory); // not under the table lock (an ODP umem unregisters)
                          // As rxe, whose object pools refuse an element over their
                          // maximum with EINVAL.
            return Err(Errno::EINVAL);
        }
        let key = dev.new_mr_key();
        let mr = Arc::new(MrShared {
            dev: dev.clone(),
            pd_id: pd.id(),
            key,
            access,
            addr,
            len,
            memory,
            valid: RwLock::new(true),
        });
        mrs.insert(key >> 8, mr.clone());
        drop(mrs);
        Ok(Mr(mr))
    }

    pub fn lkey(&self) -> u32 {
        self.0.key
    }
    pub fn rkey(&self) -> u32 {
        self.0.key
    }
    pub fn addr(&self) -> u64 {
        self.0.addr
    }
    pub fn len(&self) -> u64 {
        self.0.len
    }
    pub fn is_empty(&self) -> bool {
        self.0.len == 0
    }
    /// ODP counters (zero for pinned MRs).
    pub fn odp_counters(&self) -> odp::umem::CounterSnapshot {
        self.0.odp_counters()
    }
    /// `ibv_advise_mr` for `[addr, addr+len)` of this MR.
    pub fn advise(&self, advice: odp::Advice, addr: u64, len: u64, flush: bool) -> Result<()> {
        let r = match &self.0.memory {
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

impl Drop for Mr {
    fn drop(&mut self) {
        let mut mrs = self.0.dev.mrs.write().unwrap_or_else(|e| e.into_inner());
        mrs.remove(&(self.0.key >> 8));
        // Under the table lock: a snapshot sees these counters either live
        // or retired, never both nor neither.
        self.0.dev.stats.retire_odp(self.0.odp_counters());
        drop(mrs);
        // The fence: wait for accesses under way, refuse later ones (rxe's
        // dereg likewise waits for the MR's references to go).
        *self.0.valid.write().unwrap_or_else(|e| e.into_inner()) = false;
    }
}
