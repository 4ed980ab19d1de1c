//! Owned memory mappings: [`Mapping`] is one `mmap` (anonymous private, or
//! of a file), unmapped on drop; [`MapOptions`] says how to make it.
//!
//! It is meant for every `mmap` of the workspace: application memory for
//! ODP tests and benches as well as shared rings and counter pages (odp is
//! the bottom crate, so all can use it). Tests of ODP also take memory
//! *away* under the device's feet —
//! unmap part of a region, map fresh memory over it, move it with `mremap` —
//! so besides plain ownership the type has explicit ways to punch a hole
//! ([`Mapping::unmap`]), replace a sub-range ([`Mapping::replace`]), map
//! into a hole again ([`Mapping::fill_hole`]) and give ownership up
//! altogether ([`Mapping::into_raw`]).
//!
//! Nothing here hands out a safe reference into the memory: application
//! memory is written behind Rust's back by design (the device writes it
//! through its virtual address, another process through a shared mapping),
//! and any part of it may be made a hole. Byte access is raw ([`as_ptr`]) or
//! through the `unsafe` [`Mapping::as_slice`] / [`Mapping::as_mut_slice`],
//! whose callers vouch for the memory.
//!
//! [`as_ptr`]: Mapping::as_ptr
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;

/// Access to a mapping's pages (`PROT_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prot {
    /// `PROT_NONE`: any touch is a `SIGSEGV`.
    None,
    /// `PROT_READ`.
    Read,
    /// `PROT_READ | PROT_WRITE`.
    ReadWrite,
}

impl Prot {
    /// The `PROT_*` bits.
    pub fn bits(self) -> libc::c_int {
        match self {
            Prot::None => libc::PROT_NONE,
            Prot::Read => libc::PROT_READ,
            Prot::ReadWrite => libc::PROT_READ | libc::PROT_WRITE,
        }
    }
}

/// How to make a [`Mapping`]. The default is private anonymous read-write
/// memory at an address the kernel picks. No option ever replaces an
/// existing mapping: there is no `MAP_FIXED` (see [`MapOptions::at`]).
#[derive(Debug, Clone, Copy)]
pub struct MapOptions<'fd> {
    prot: Prot,
    shared: bool,
    file: Option<(BorrowedFd<'fd>, u64)>,
    populate: bool,
    noreserve: bool,
    hugetlb: bool,
    at: Option<usize>,
}

impl Default for MapOptions<'_> {
    fn default() -> Self {
        MapOptions {
            prot: Prot::ReadWrite,
            shared: false,
            file: None,
            populate: false,
            noreserve: false,
            hugetlb: false,
            at: None,
        }
    }
}

impl<'fd> MapOptions<'fd> {
    /// Private anonymous read-write memory, anywhere.
    pub fn new() -> MapOptions<'static> {
        MapOptions::default()
    }

    /// The pages' access (default [`Prot::ReadWrite`]).
    pub fn prot(mut self, prot: Prot) -> Self {
        self.prot = prot;
        self
    }

    /// `MAP_SHARED` instead of `MAP_PRIVATE`: writes reach the file (or, for
    /// anonymous memory, shmem that a `fork`ed child shares).
    pub fn shared(mut self) -> Self {
        self.shared = true;
        self
    }

    /// Map `fd` from byte `offset` (page-aligned) instead of anonymous
    /// memory. The mapping keeps the file open: `fd` may be closed after
    /// [`MapOptions::map`].
    pub fn file<'a>(self, fd: BorrowedFd<'a>, offset: u64) -> MapOptions<'a> {
        MapOptions {
            prot: self.prot,
            shared: self.shared,
            file: Some((fd, offset)),
            populate: self.populate,
            noreserve: self.noreserve,
            hugetlb: self.hugetlb,
            at: self.at,
        }
    }

    /// `MAP_POPULATE`: fault every page in now (best effort: the call does
    /// not fail if some cannot be).
    pub fn populate(mut self) -> Self {
        self.populate = true;
        self
    }

    /// `MAP_NORESERVE`: no swap/commit accounting, so a huge reservation of
    /// which little is touched costs nothing.
    pub fn noreserve(mut self) -> Self {
        self.noreserve = true;
        self
    }

    /// `MAP_HUGETLB`: back the mapping with the default huge page size from
    /// the hugetlb pool (the length must be a multiple of it).
    pub fn hugetlb(mut self) -> Self {
        self.hugetlb = true;
        self
    }

    /// Exactly at `addr` (page-aligned), which must be free:
    /// `MAP_FIXED_NOREPLACE`, so an existing mapping there is an error
    /// (`EEXIST`), never replaced.
    pub fn at(mut self, addr: usize) -> Self {
        self.at = Some(addr);
        self
    }

    /// Map `len` bytes (`len` > 0; rounded up to whole pages by the kernel,
    /// but [`Mapping::len`] stays `len`).
    pub fn map(&self, len: usize) -> io::Result<Mapping> {
        if len == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a mapping cannot be empty",
            ));
        }
        let mut flags = if self.shared {
            libc::MAP_SHARED
        } else {
            libc::MAP_PRIVATE
        };
        let (fd, offset) = match self.file {
            Some((fd, offset)) => (fd.as_raw_fd(), offset),
            None => {
                flags |= libc::MAP_ANONYMOUS;
                (-1, 0)
            }
        };
        let offset = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))?;
        if self.populate {
            flags |= libc::MAP_POPULATE;
        }
        if self.noreserve {
            flags |= libc::MAP_NORESERVE;
        }
        if self.hugetlb {
            flags |= libc::MAP_HUGETLB;
        }
        if self.at.is_some() {
            flags |= libc::MAP_FIXED_NOREPLACE;
        }
        let want = self.at.unwrap_or(0);
        // SAFETY: without MAP_FIXED the kernel never replaces an existing
        // mapping (MAP_FIXED_NOREPLACE fails with EEXIST instead), so the new
        // mapping aliases no memory anyone owns. `fd`, if any, is a live
        // borrowed descriptor. The result is checked before use.
        let p = unsafe {
            libc::mmap(
                want as *mut libc::c_void,
                len,
                self.prot.bits(),
                flags,
                fd,
                offset,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let map = Mapping {
            // mmap never returns address 0 for a request without MAP_FIXED
            // (mmap_min_addr); if it ever did, this is an error, not UB.
            ptr: NonNull::new(p.cast())
                .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))?,
            len,
        };
        // Kernels before 4.17 do not know MAP_FIXED_NOREPLACE and take the
        // address as a hint: a mapping elsewhere is not what was asked for.
        if self.at.is_some_and(|a| a != map.addr()) {
            drop(map);
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        Ok(map)
    }
}

/// One `mmap`, unmapped (whole, as first mapped) on drop.
///
/// The address range `[addr, addr + len)` is this value's: nothing else in
/// the process maps into it unless an `unsafe` call below lets it (a hole
/// punched by [`Mapping::unmap`] is free address space until refilled).
#[derive(Debug)]
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: a Mapping is an address range, not a Rust value living in it: it
// can be unmapped from any thread, and its `&self` methods are system calls
// on the range (atomic with respect to the address space) or raw pointers.
// Reading or writing the bytes needs `unsafe` (`as_ptr`, `as_slice`), whose
// callers answer for concurrent access.
unsafe impl Send for Mapping {}
// SAFETY: as above: no `&self` method hands out a safe reference into the
// memory, so sharing `&Mapping` across threads shares nothing unsynchronised.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// `len` bytes of fresh private anonymous read-write memory, anywhere
    /// (`MapOptions::new().map(len)`).
    pub fn anon(len: usize) -> io::Result<Mapping> {
        MapOptions::new().map(len)
    }

    /// The first byte (page-aligned); `len()` bytes follow.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The first byte's address.
    pub fn addr(&self) -> usize {
        self.ptr.as_ptr() as usize
    }

    /// The length asked for at [`MapOptions::map`].
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a mapping has at least one byte.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The whole mapping as bytes.
    ///
    /// # Safety
    /// For as long as the slice lives, the whole range must stay mapped and
    /// readable (no hole, no `PROT_NONE`, not truncated under a file mapping)
    /// and nothing may write it: no device (ODP follows the address), no
    /// other process sharing it, no other thread through a raw pointer.
    pub unsafe fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` is non-null and page-aligned and `len` bytes are one
        // mapping; the caller vouches that they are readable and not written
        // for the slice's lifetime.
        unsafe { std::slice::from_raw_parts(self.as_ptr(), self.len) }
    }

    /// The whole mapping as mutable bytes.
    ///
    /// # Safety
    /// As [`Mapping::as_slice`], and the range must also be writable and
    /// nothing else may read it while the slice lives.
    pub unsafe fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`; `&mut self` rules out other borrows
        // through this value, and the caller rules out every other access.
        unsafe { std::slice::from_raw_parts_mut(self.as_ptr(), self.len) }
    }

    /// Give up ownership: the memory stays mapped for good (this value no
    /// longer unmaps it) and the caller manages the range from here on, e.g.
    /// after moving it away with `mremap`, or to keep it for the process's
    /// lifetime. Returns the first byte and the length.
    pub fn into_raw(self) -> (*mut u8, usize) {
        let raw = (self.as_ptr(), self.len);
        std::mem::forget(self);
        raw
    }

    /// The address of byte `off`, if `[off, off + len)` lies inside.
    fn sub(&self, off: usize, len: usize) -> io::Result<*mut libc::c_void> {
        match off.checked_add(len) {
            Some(end) if end <= self.len => Ok(self.as_ptr().wrapping_add(off).cast()),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "range outside the mapping",
            )),
        }
    }

    /// Punch a hole: `munmap` of `[off, off + len)` (page-aligned), which
    /// must lie inside the mapping. The rest stays mapped, and drop still
    /// unmaps the whole original range (unmapping a hole is harmless).
    ///
    /// # Safety
    /// No reference into the range may be live or used again. The hole is
    /// free address space: the kernel may put another mapping there (a new
    /// thread's stack, say), which drop — or a later [`Mapping::replace`] or
    /// `unmap` over it — would then unmap or clobber. The caller makes sure
    /// that cannot happen before the hole is refilled ([`Mapping::fill_hole`],
    /// or [`Mapping::replace`] right away) or the mapping is dropped: e.g.
    /// the range is where the kernel does not place mappings of its own
    /// choosing, or no other thread can map memory meanwhile, or the caller
    /// gives the range up with [`Mapping::into_raw`] instead of dropping it.
    pub unsafe fn unmap(&self, off: usize, len: usize) -> io::Result<()> {
        let at = self.sub(off, len)?;
        // SAFETY: the range is inside this mapping (checked), so only memory
        // this value owns is unmapped; the caller vouches for references into
        // it and for the hole's future.
        if unsafe { libc::munmap(at, len) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Replace `[off, off + len)` (page-aligned, inside the mapping) with
    /// fresh private anonymous memory in one step (`mmap(MAP_FIXED)`): to the
    /// kernel, an unmap of what was there followed by a new mapping, with no
    /// moment at which the range is free for anybody else.
    ///
    /// # Safety
    /// No reference into the range may be live (its contents change, and may
    /// become inaccessible with `prot`), and any part of it that was a hole
    /// must not have been mapped by anybody else meanwhile (see
    /// [`Mapping::unmap`]): MAP_FIXED replaces whatever is there.
    pub unsafe fn replace(&self, off: usize, len: usize, prot: Prot) -> io::Result<()> {
        let at = self.sub(off, len)?;
        // SAFETY: the range lies inside this mapping (checked), and the caller
        // vouches that everything mapped there is this mapping's and that no
        // reference into it is live, so replacing it affects only memory
        // nobody else relies on.
        let p = unsafe {
            libc::mmap(
                at,
                len,
                prot.bits(),
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        debug_assert_eq!(p, at, "MAP_FIXED maps exactly at the address");
        Ok(())
    }

    /// Map fresh private anonymous memory into a hole `[off, off + len)`
    /// (page-aligned, inside the mapping) that [`Mapping::unmap`] punched:
    /// `MAP_FIXED_NOREPLACE`, so if anything is mapped there now — part of
    /// this mapping, or another that moved into the hole — nothing changes
    /// and the answer is `EEXIST`.
    pub fn fill_hole(&self, off: usize, len: usize, prot: Prot) -> io::Result<()> {
        let at = self.sub(off, len)?;
        // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping, so
        // the call affects only free address space inside our own range.
        let p = unsafe {
            libc::mmap(
                at,
                len,
                prot.bits(),
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        if p != at {
            // A kernel before 4.17 took the address as a hint and mapped
            // elsewhere: undo that, the hole was not free.
            // SAFETY: `p` is the mapping just made, which nothing refers to.
            unsafe { libc::munmap(p, len) };
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        Ok(())
    }

    /// Change the access of `[off, off + len)` (page-aligned, inside the
    /// mapping): `mprotect`.
    ///
    /// # Safety
    /// No reference into the range may be live that the new protection
    /// would break (a `&[u8]` over pages made `PROT_NONE`, a `&mut [u8]`
    /// over pages made read-only).
    pub unsafe fn protect(&self, off: usize, len: usize, prot: Prot) -> io::Result<()> {
        let at = self.sub(off, len)?;
        // SAFETY: the range is inside this mapping (checked); only its access
        // changes, and the caller vouches that no live reference relies on
        // the old access.
        if unsafe { libc::mprotect(at, len, prot.bits()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// `madvise(MADV_HUGEPAGE)` over the whole mapping: let the kernel back
    /// it with transparent huge pages where it can. Contents are unchanged.
    pub fn advise_huge(&self) -> io::Result<()> {
        // SAFETY: MADV_HUGEPAGE is advice on this mapping's own range; it
        // changes neither the mapping nor its contents.
        if unsafe { libc::madvise(self.as_ptr().cast(), self.len, libc::MADV_HUGEPAGE) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the range is this value's (see the type's docs; holes were
        // left free or refilled, as `unmap` requires), and no reference into
        // it outlives `self`: the slice accessors borrow `self`. An error
        // (nothing left to unmap) changes nothing and is ignored.
        unsafe { libc::munmap(self.as_ptr().cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::mincore::for_each_resident;
    use crate::sys::populate::page_size;

    /// A mapping far below where the kernel places mappings of its own choosing
    /// (it allocates top-down), so a hole punched in it stays free: other
    /// tests' threads map memory meanwhile.
    fn low(len: usize) -> Mapping {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0x2000_0000_0000);
        loop {
            let at = NEXT.fetch_add(1 << 30, Ordering::Relaxed);
            match MapOptions::new().at(at).map(len) {
                Ok(m) => return m,
                Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EEXIST)),
            }
        }
    }

    fn mapped(m: &Mapping, off: usize, len: usize) -> bool {
        for_each_resident(m.addr() + off, len, |_| {}).is_ok()
    }

    #[test]
    fn anon_is_zeroed_and_writable() {
        let p = page_size();
        let mut m = Mapping::anon(2 * p).unwrap();
        assert_eq!(m.len(), 2 * p);
        assert!(!m.is_empty());
        assert_eq!(m.addr() % p, 0);
        assert_eq!(m.as_ptr() as usize, m.addr());
        // SAFETY: a fresh private read-write mapping nobody else knows of.
        let bytes = unsafe { m.as_mut_slice() };
        assert!(bytes.iter().all(|&b| b == 0));
        bytes[p] = 7;
        // SAFETY: as above.
        assert_eq!(unsafe { m.as_slice() }[p], 7);
    }

    #[test]
    fn empty_and_out_of_range_are_refused() {
        let p = page_size();
        assert!(Mapping::anon(0).is_err());
        let m = Mapping::anon(2 * p).unwrap();
        assert!(m.fill_hole(p, 2 * p, Prot::ReadWrite).is_err());
        assert!(m.fill_hole(usize::MAX, 2, Prot::ReadWrite).is_err());
        // SAFETY: out of range, so nothing is unmapped.
        assert!(unsafe { m.unmap(2 * p, p) }.is_err());
        assert!(mapped(&m, 0, 2 * p));
    }

    #[test]
    fn hole_fill_replace_protect() {
        let p = page_size();
        let m = low(3 * p);
        // Mapped: filling it is refused and changes nothing.
        let e = m.fill_hole(p, p, Prot::ReadWrite).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
        // SAFETY: nothing refers to the page, and the hole is where the
        // kernel places nothing of its own choosing (`low`).
        unsafe { m.unmap(p, p) }.unwrap();
        assert!(mapped(&m, 0, p) && !mapped(&m, p, p) && mapped(&m, 2 * p, p));
        m.fill_hole(p, p, Prot::ReadWrite).unwrap();
        assert!(mapped(&m, 0, 3 * p));
        // SAFETY: the mapping is this test's; no reference into it exists.
        unsafe { m.as_ptr().write(1) };
        // SAFETY: as above.
        unsafe { m.replace(0, p, Prot::Read) }.unwrap();
        // SAFETY: readable now, and fresh memory: zero.
        assert_eq!(unsafe { m.as_ptr().read() }, 0);
        // SAFETY: no reference into the mapping exists.
        unsafe { m.protect(0, 3 * p, Prot::None) }.unwrap();
        m.advise_huge().unwrap();
        // Dropping unmaps the whole range; the hole punched and refilled
        // in between is part of it.
        let addr = m.addr();
        drop(m);
        assert!(for_each_resident(addr, 3 * p, |_| {}).is_err());
    }

    #[test]
    fn at_never_replaces_and_into_raw_keeps_the_memory() {
        let p = page_size();
        let m = low(p);
        let e = MapOptions::new().at(m.addr()).map(p).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
        let (ptr, len) = m.into_raw();
        assert!(
            for_each_resident(ptr as usize, len, |_| {}).is_ok(),
            "still mapped"
        );
        // SAFETY: the test took the range over from `m` and unmaps it once.
        assert_eq!(unsafe { libc::munmap(ptr.cast(), len) }, 0);
        let again = MapOptions::new()
            .at(ptr as usize)
            .prot(Prot::Read)
            .map(p)
            .unwrap();
        assert_eq!(again.as_ptr(), ptr);
    }

    #[test]
    fn shared_file_mapping_sees_the_file() {
        use std::os::fd::AsFd;
        use std::os::unix::fs::FileExt;
        let p = page_size();
        let path = std::env::temp_dir().join(format!("odp-mapping-{}", std::process::id()));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        f.set_len(p as u64).unwrap();
        let opts = MapOptions::new().shared().file(f.as_fd(), 0);
        let m = opts.populate().map(p).unwrap();
        let r = opts.prot(Prot::Read).map(p).unwrap();
        f.write_all_at(&[9], 5).unwrap();
        // SAFETY: a shared mapping of a file only this test writes, and the
        // write is done.
        assert_eq!(unsafe { m.as_slice() }[5], 9);
        // SAFETY: as above.
        unsafe { m.as_ptr().add(6).write(4) };
        // SAFETY: as above.
        assert_eq!(unsafe { r.as_slice() }[6], 4);
        let mut b = [0];
        f.read_exact_at(&mut b, 6).unwrap();
        assert_eq!(b, [4]);
    }
}
