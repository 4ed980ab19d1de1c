//! Pinned (non-ODP) regions, and [`Memory`]: what an MR's memory is, so the
//! device has one access path for every kind and no "null umem" to mistake
//! (kernel bug pattern 8 cannot be written).
//!
//! Pinned means what `ibv_reg_mr` without ON_DEMAND means: faulted in and
//! locked at registration. In userspace the application can still `munmap`
//! it, so accesses go through the same guarded copies and fail cleanly.

use crate::guarded;
use crate::sys::{mlock, populate};
use crate::umem::{within, AccessError, ImplicitUmem, Umem, PAGE_SIZE};

/// A registered, populated and (if the limit allows) locked range.
pub struct Pinned {
    addr: u64,
    len: u64,
    writable: bool,
    /// Page-aligned locked span, if `mlock` succeeded.
    locked: Option<(usize, usize)>,
}

impl Pinned {
    /// Populate (for write if `writable`) and lock `[addr, addr+len)`.
    /// `mlock` beyond `RLIMIT_MEMLOCK` is not an error: the pages are
    /// populated, which is what the device needs; `is_locked` tells.
    pub fn new(addr: u64, len: u64, writable: bool) -> Result<Pinned, AccessError> {
        let end = addr
            .checked_add(len)
            .filter(|_| len > 0)
            .ok_or(AccessError::OutOfBounds)?;
        let start = addr & !(PAGE_SIZE - 1);
        let end = end
            .checked_next_multiple_of(PAGE_SIZE)
            .ok_or(AccessError::OutOfBounds)?;
        let (s, l) = (start as usize, (end - start) as usize);
        populate::populate(s, l, writable)?;
        let locked = mlock::mlock(s, l).ok().map(|_| (s, l));
        Ok(Pinned {
            addr,
            len,
            writable,
            locked,
        })
    }

    pub fn is_locked(&self) -> bool {
        self.locked.is_some()
    }

    fn check(&self, va: u64, len: u64, write: bool) -> Result<(), AccessError> {
        if !within(va, len, self.addr, self.addr + self.len) {
            return Err(AccessError::OutOfBounds);
        }
        if write && !self.writable {
            return Err(AccessError::NotWritable);
        }
        Ok(())
    }

    pub fn write(&self, va: u64, data: &[u8]) -> Result<(), AccessError> {
        self.check(va, data.len() as u64, true)?;
        // SAFETY: registered application memory (checked), not Rust-owned; faults caught.
        unsafe { guarded::copy_out(va as *mut u8, data) }.map_err(AccessError::from)
    }

    pub fn read(&self, va: u64, out: &mut [u8]) -> Result<(), AccessError> {
        self.check(va, out.len() as u64, false)?;
        // SAFETY: as in `write`; `out` is a distinct Rust buffer.
        unsafe { guarded::copy_in(out, va as *const u8) }.map_err(AccessError::from)
    }

    pub fn compare_and_swap(&self, va: u64, expect: u64, new: u64) -> Result<u64, AccessError> {
        self.check(va, 8, true)?;
        // SAFETY: as in `write`.
        unsafe { guarded::compare_and_swap(va as *mut u64, expect, new) }.map_err(AccessError::from)
    }

    pub fn fetch_and_add(&self, va: u64, add: u64) -> Result<u64, AccessError> {
        self.check(va, 8, true)?;
        // SAFETY: as in `write`.
        unsafe { guarded::fetch_and_add(va as *mut u64, add) }.map_err(AccessError::from)
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        if let Some((s, l)) = self.locked {
            mlock::munlock(s, l);
        }
    }
}

/// The memory behind an MR: one enum, one set of access methods.
pub enum Memory {
    Pinned(Pinned),
    Odp(Umem),
    Implicit(ImplicitUmem),
}

macro_rules! each {
    ($self:ident, $m:ident => $e:expr) => {
        match $self {
            Memory::Pinned($m) => $e,
            Memory::Odp($m) => $e,
            Memory::Implicit($m) => $e,
        }
    };
}

impl Memory {
    /// Fault `[va, va+len)` in ahead of a message's accesses (ODP; pinned
    /// memory is always present). See [`Umem::fault_in`].
    pub fn fault_in(&self, va: u64, len: u64, write: bool) -> Result<(), AccessError> {
        let access = access_of(write);
        match self {
            Memory::Pinned(_) => Ok(()),
            Memory::Odp(u) => u.fault_in(va, len, access),
            Memory::Implicit(u) => u.fault_in(va, len, access),
        }
    }

    pub fn write(&self, va: u64, data: &[u8]) -> Result<(), AccessError> {
        each!(self, m => m.write(va, data))
    }
    pub fn read(&self, va: u64, out: &mut [u8]) -> Result<(), AccessError> {
        each!(self, m => m.read(va, out))
    }

    /// Open `[va, va+len)` for several accesses (see [`Window`]); faults it
    /// in for ODP.
    pub fn window(&self, va: u64, len: u64, write: bool) -> Result<Window<'_>, AccessError> {
        let access = access_of(write);
        let kind = match self {
            Memory::Pinned(p) => {
                p.check(va, len, write)?;
                WindowKind::Pinned(p)
            }
            Memory::Odp(u) => WindowKind::Odp(u.map(va, len, access, crate::umem::Mode::Fault)?),
            Memory::Implicit(u) => {
                // Fault the range in now, child by child, so that the
                // accesses find it present (one fault, not one per access).
                u.fault_in(va, len, access)?;
                WindowKind::Implicit(u)
            }
        };
        Ok(Window {
            kind,
            start: va,
            end: va + len,
            write,
        })
    }

    pub fn compare_and_swap(&self, va: u64, expect: u64, new: u64) -> Result<u64, AccessError> {
        each!(self, m => m.compare_and_swap(va, expect, new))
    }
    pub fn fetch_and_add(&self, va: u64, add: u64) -> Result<u64, AccessError> {
        each!(self, m => m.fetch_and_add(va, add))
    }
}

fn access_of(write: bool) -> crate::umem::Access {
    if write {
        crate::umem::Access::Write
    } else {
        crate::umem::Access::Read
    }
}

/// Several accesses to one range of a [`Memory`] under one mapping: for an
/// explicit ODP umem, one [`UmemGuard`] — one fault check, one lock — for
/// all the packets of a message instead of one per packet. The guard's rules
/// hold for the window's life: keep it short, open no other mapping (no
/// second window, no `read`/`write` of any `Memory`), and call nothing that
/// may unmap covered memory (allocation included: size buffers first).
pub struct Window<'a> {
    kind: WindowKind<'a>,
    start: u64,
    end: u64,
    /// Opened for writing (what was faulted and checked).
    write: bool,
}

enum WindowKind<'a> {
    Pinned(&'a Pinned),
    Odp(crate::umem::UmemGuard<'a>),
    /// Each access maps on its own: a window may span children, and holding
    /// one child's guard while mapping the next would nest two.
    Implicit(&'a ImplicitUmem),
}

impl Window<'_> {
    fn check(&self, va: u64, len: usize) -> Result<(), AccessError> {
        if within(va, len as u64, self.start, self.end) {
            Ok(())
        } else {
            Err(AccessError::OutOfBounds)
        }
    }

    /// Copy from `va` (inside the window) into `out`.
    pub fn read(&mut self, va: u64, out: &mut [u8]) -> Result<(), AccessError> {
        self.check(va, out.len())?;
        match &mut self.kind {
            WindowKind::Pinned(p) => p.read(va, out),
            WindowKind::Odp(g) => g.read(va, out),
            WindowKind::Implicit(u) => u.read(va, out),
        }
    }

    /// Copy `data` to `va` (inside the window; opened for writing).
    pub fn write(&mut self, va: u64, data: &[u8]) -> Result<(), AccessError> {
        self.check(va, data.len())?;
        if !self.write {
            return Err(AccessError::NotWritable);
        }
        match &mut self.kind {
            WindowKind::Pinned(p) => p.write(va, data),
            WindowKind::Odp(g) => g.write(va, data),
            WindowKind::Implicit(u) => u.write(va, data),
        }
    }
}
