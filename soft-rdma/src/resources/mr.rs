//! Memory regions — pinned, explicit ODP and implicit ODP, all reached
//! through `odp::Memory`: one access path, no "null umem" (kernel bug
//! pattern 8) — and the table that finds them by key.

use super::key_slots::KeySlots;
use super::mw::MwShared;
use crate::sync::{Level, OrderedRwLock, ReadGuard};
use crate::types::{Access, Errno};
use odp::{AccessError, Memory};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;

pub(crate) struct MrShared {
    pd_id: u32,
    key: u32,
    access: Access,
    /// Registered `[addr, addr+len)`; implicit ODP: the whole address space.
    addr: u64,
    len: u64,
    /// Shared with the MR that replaces this one when `ibv_rereg_mr` keeps
    /// the translation (new PD or rights on the same pages).
    memory: Arc<Memory>,
    /// False once deregistered (or replaced by a re-registration). Every access to `memory` holds this shared
    /// and checks it; deregistration takes it exclusively, so when
    /// `ibv_dereg_mr` returns no access is under way and none starts —
    /// including the rest of a multi-packet WRITE whose first packet found
    /// the MR (the responder keeps it for the message), and a lookup that
    /// raced the removal from the key table. Such accesses fail: a remote
    /// access error, as rxe's `mr->state != RXE_MR_STATE_VALID` checks.
    valid: OrderedRwLock<bool>,
    /// Memory windows bound to this MR: changed under the table lock
    /// (shared) by binds, so deregistration (exclusive) sees it settled.
    pub(super) windows: AtomicU32,
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
    pub(crate) fn key(&self) -> u32 {
        self.key
    }

    /// The registered range (implicit ODP: `0, u64::MAX`).
    pub(crate) fn range(&self) -> (u64, u64) {
        (self.addr, self.len)
    }

    pub(crate) fn memory(&self) -> &Memory {
        &self.memory
    }

    /// The memory, to share with the MR a re-registration makes.
    pub(crate) fn shared_memory(&self) -> Arc<Memory> {
        self.memory.clone()
    }

    pub(crate) fn rights(&self) -> Access {
        self.access
    }

    pub(crate) fn pd_id(&self) -> u32 {
        self.pd_id
    }

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
        let valid = self.valid.read();
        if !*valid {
            return Err(AccessError::OutOfBounds);
        }
        f(&self.memory)
    }

    /// Fault an ODP range in before a message's packets touch it, best
    /// effort: a failure is reported by the access that needs the page.
    pub(crate) fn fault_in(&self, va: u64, len: u64, write: bool) {
        // Pinned memory is always present: no lock to take on every message.
        if len > 0 && !matches!(*self.memory, Memory::Pinned(_)) {
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
        let valid = self.valid.read();
        if !*valid {
            return Err(AccessError::OutOfBounds);
        }
        Ok(MrWindow {
            window: self.memory.window(va, len, write)?,
            _valid: valid,
            _open: WindowOpen::new(),
        })
    }

    pub(crate) fn read(&self, va: u64, out: &mut [u8]) -> std::result::Result<(), AccessError> {
        self.access(|m| m.read(va, out))
    }

    pub(crate) fn write(&self, va: u64, data: &[u8]) -> std::result::Result<(), AccessError> {
        self.access(|m| m.write(va, data))
    }

    /// Write `[va, va+remote.len())` with the payload a same-host sender
    /// kept (`transport::Remote`): the kernel copies it from the sender's
    /// memory straight into ours, held present and writable as for
    /// [`MrShared::write`] (a range outside the MR is refused the same
    /// way). Err: the MR's refusal, or the kernel's (`Other`).
    pub(crate) fn fill_by_ref(
        &self,
        va: u64,
        remote: &crate::transport::Remote,
    ) -> std::result::Result<(), FillError> {
        let mut failed = None;
        let r = self.access(|m| {
            m.fill_with(va, remote.len() as u64, |at, n| {
                remote.read_into((at - va) as usize, at, n).map_err(|e| {
                    failed = Some(e);
                    AccessError::Os(0)
                })
            })
        });
        match (r, failed) {
            (Ok(()), _) => Ok(()),
            (Err(_), Some(e)) => Err(FillError::Source(e)),
            (Err(e), None) => Err(FillError::Target(e)),
        }
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

    /// ODP counters (pinned MRs: only `orphan_accesses`).
    pub(crate) fn odp_counters(&self) -> odp::umem::CounterSnapshot {
        self.memory.counters()
    }
}

/// Why [`MrShared::fill_by_ref`] failed.
#[derive(Debug)]
pub(crate) enum FillError {
    /// The MR's memory refused the write.
    Target(AccessError),
    /// The sender's memory could not be read.
    Source(std::io::Error),
}

impl std::fmt::Display for FillError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FillError::Target(e) => write!(f, "target memory: {e}"),
            FillError::Source(e) => write!(f, "sender's memory: {e}"),
        }
    }
}

/// An open [`odp::Window`] onto an MR, which stays registered meanwhile.
pub(crate) struct MrWindow<'a> {
    // Closed before the MR may be deregistered (drop order).
    pub(crate) window: odp::Window<'a>,
    _valid: ReadGuard<'a, bool>,
    _open: WindowOpen,
}

thread_local! {
    static WINDOWS_OPEN: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Counts this thread's open windows, for [`window_open`].
struct WindowOpen(());

impl WindowOpen {
    fn new() -> WindowOpen {
        WINDOWS_OPEN.with(|c| c.set(c.get() + 1));
        WindowOpen(())
    }
}

impl Drop for WindowOpen {
    fn drop(&mut self) {
        WINDOWS_OPEN.with(|c| c.set(c.get() - 1));
    }
}

/// Whether this thread holds a window onto an MR. Nothing may allocate or
/// free then: glibc may `munmap`, trim or `madvise` memory an ODP MR covers,
/// which waits for the odp monitor, which waits for the window's guard.
pub(crate) fn window_open() -> bool {
    WINDOWS_OPEN.with(|c| c.get() > 0)
}

/// What a key index names: an MR, or a memory window (one key space).
pub(crate) enum Keyed {
    Mr(Arc<MrShared>),
    Mw(Arc<MwShared>),
}

/// The device's MRs (and memory windows, `resources::mw`) by key. A key is
/// a 24-bit index (unique while the object lives) and 8 unpredictable bits,
/// so a peer cannot guess a key from another: a stale or forged R_Key
/// mostly misses.
pub(crate) struct MrTable {
    pub(super) by_index: OrderedRwLock<KeySlots>,
    next_index: AtomicU32,
    max: usize,
    /// How many entries are windows (each kind has its own maximum).
    pub(super) windows: AtomicUsize,
}

impl MrTable {
    pub(crate) fn new(max: usize) -> MrTable {
        MrTable {
            by_index: OrderedRwLock::new(Level::MrTable, KeySlots::default()),
            next_index: AtomicU32::new(1),
            max,
            windows: AtomicUsize::new(0),
        }
    }

    /// A free key index (under the table lock, held for writing).
    pub(super) fn free_index(&self, map: &KeySlots) -> u32 {
        // Indexes wrap at 2^24: skip 0 and those whose slot is in use, or a
        // new object would replace a live one (whose removal then removes
        // the new one). Ends: at most half the slots are taken.
        loop {
            let i = self.next_index.fetch_add(1, Ordering::Relaxed) & 0x00ff_ffff;
            if i != 0 && map.is_free(i) {
                return i;
            }
        }
    }

    /// Register `memory` for `[addr, addr+len)` under a new key; `None` if
    /// the table is full (the memory is then dropped outside the lock: an
    /// ODP umem unregisters its notifier).
    pub(crate) fn insert(
        &self,
        pd_id: u32,
        access: Access,
        addr: u64,
        len: u64,
        memory: Arc<Memory>,
    ) -> Option<Arc<MrShared>> {
        let mut mrs = self.by_index.write();
        if mrs.len() - self.windows.load(Ordering::Relaxed) >= self.max {
            drop(mrs);
            drop(memory);
            return None;
        }
        let index = self.free_index(&mrs);
        let key = (index << 8) | u32::from(crate::sys::random_byte());
        let mr = Arc::new(MrShared {
            pd_id,
            key,
            access,
            addr,
            len,
            memory,
            valid: OrderedRwLock::new(Level::MrValid, true),
            windows: AtomicU32::new(0),
        });
        mrs.insert(index, Keyed::Mr(mr.clone()));
        Some(mr)
    }

    /// `ibv_rereg_mr`: `old`'s key now names a new MR of `pd_id`, `access`,
    /// `[addr, addr+len)` and `memory`; then `old` is fenced as
    /// [`MrTable::remove`] fences (`retire` runs under the table lock when
    /// the old memory goes), so once this returns no access reaches the old
    /// translation, and every later one — a peer's R_Key, a posted
    /// receive's L_Key — finds the new MR. None if `old` is no longer in
    /// the table.
    pub(crate) fn replace(
        &self,
        old: &MrShared,
        pd_id: u32,
        access: Access,
        (addr, len): (u64, u64),
        memory: Arc<Memory>,
        retire: impl FnOnce(&MrShared),
    ) -> Result<Arc<MrShared>, Errno> {
        let mut mrs = self.by_index.write();
        let index = old.key >> 8;
        match mrs.get(index) {
            Some(Keyed::Mr(m)) if m.key == old.key => {}
            _ => return Err(Errno::EINVAL),
        }
        // Windows bound to it keep it as it is (rxe: EBUSY, as for
        // deregistration); binds count under the table lock, held here.
        if old.windows.load(Ordering::Relaxed) > 0 {
            return Err(Errno::EBUSY);
        }
        let mr = Arc::new(MrShared {
            pd_id,
            key: old.key,
            access,
            addr,
            len,
            memory,
            valid: OrderedRwLock::new(Level::MrValid, true),
            windows: AtomicU32::new(0),
        });
        mrs.insert(index, Keyed::Mr(mr.clone()));
        if !Arc::ptr_eq(&old.memory, &mr.memory) {
            retire(old);
        }
        drop(mrs);
        *old.valid.write() = false;
        Ok(mr)
    }

    /// Tests: the next key index tried (to reach the wrap quickly).
    pub(crate) fn set_next_index(&self, index: u32) {
        self.next_index.store(index, Ordering::Relaxed);
    }

    /// The MR with exactly this key.
    pub(crate) fn get(&self, key: u32) -> Option<Arc<MrShared>> {
        match self.by_index.read().get(key >> 8)? {
            Keyed::Mr(mr) if mr.key == key => Some(mr.clone()),
            _ => None,
        }
    }

    /// Deregister `mr`: out of the table (`retire` runs under the table
    /// lock, so a counters snapshot sees the MR either live or retired),
    /// then the fence — wait for accesses under way and refuse later ones
    /// (rxe's dereg likewise waits for the MR's references to go). Once
    /// this returns nothing touches the MR's memory. With `unless_bound`,
    /// an MR that memory windows are bound to stays (false returned).
    /// Removing an MR already removed does nothing more.
    pub(crate) fn remove(
        &self,
        mr: &MrShared,
        unless_bound: bool,
        retire: impl FnOnce(&MrShared),
    ) -> bool {
        let mut mrs = self.by_index.write();
        if unless_bound && mr.windows.load(Ordering::Relaxed) > 0 {
            return false;
        }
        // Only this MR's entry (the same key): never another's.
        if matches!(mrs.get(mr.key >> 8), Some(Keyed::Mr(m)) if m.key == mr.key) {
            mrs.remove(mr.key >> 8);
            retire(mr);
        }
        drop(mrs);
        *mr.valid.write() = false;
        true
    }

    /// Visit every registered MR (under the table lock: `f` takes no lock
    /// of a level below `MrValid`).
    pub(crate) fn for_each(&self, mut f: impl FnMut(&MrShared)) {
        for k in self.by_index.read().values() {
            if let Keyed::Mr(mr) = k {
                f(mr);
            }
        }
    }
}
