//! Real mappings for the tests: the application side of ODP.
#![allow(dead_code)]

use std::ptr;

pub const PAGE: usize = 4096;

/// An anonymous private mapping (`odp::Mapping`), unmapped on drop; `addr`
/// and `len` copied out for the tests' address arithmetic.
pub struct Mapping {
    pub addr: u64,
    pub len: usize,
    map: odp::Mapping,
}

/// Test mappings live far below everything else (16 TiB up, 1 GiB apart).
/// The kernel places new mappings top-down, so it never reuses a hole a test
/// punches down here — otherwise another thread's stack could land in the
/// hole, be clobbered by `MAP_FIXED`, or receive an ODP write (ODP follows
/// the virtual address). That is also what makes the holes sound for
/// `odp::Mapping::unmap`: nothing else ever fills them.
const LOW_BASE: u64 = 0x1000_0000_0000;
const STRIDE: u64 = 1 << 30;

pub fn map_anon(len: usize) -> Mapping {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    assert!(len as u64 <= STRIDE);
    loop {
        let want = LOW_BASE + NEXT.fetch_add(1, Ordering::Relaxed) * STRIDE;
        // MAP_FIXED_NOREPLACE: an address in use is EEXIST, never replaced.
        match odp::MapOptions::new().at(want as usize).map(len) {
            Ok(map) => {
                return Mapping {
                    addr: map.addr() as u64,
                    len,
                    map,
                }
            }
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EEXIST), "mmap: {e}"),
        }
    }
}

impl Mapping {
    pub fn ptr(&self) -> *mut u8 {
        self.map.as_ptr()
    }
    /// Unmap all of it (drop unmaps the range again: harmless).
    pub fn munmap(&self) {
        // SAFETY: test memory nobody holds a reference into; the hole is
        // where the kernel places nothing (see LOW_BASE).
        unsafe { self.map.unmap(0, self.len) }.expect("munmap");
    }
    /// `mmap(MAP_FIXED)` a fresh anonymous mapping over `[addr+off, +len)`
    /// (mapped or a hole this test punched).
    pub fn remap_fixed(&self, off: usize, len: usize) {
        // SAFETY: test memory nobody holds a reference into; a hole in it
        // stayed free (see LOW_BASE).
        unsafe { self.map.replace(off, len, odp::Prot::ReadWrite) }.expect("mmap(MAP_FIXED)");
    }
    pub fn protect(&self, off: usize, len: usize, prot: odp::Prot) {
        // SAFETY: test memory; no reference into it exists (accesses are
        // volatile reads and writes, or the device's guarded copies).
        unsafe { self.map.protect(off, len, prot) }.expect("mprotect");
    }
    pub fn dontneed(&self, off: usize, len: usize) {
        // SAFETY: discards pages of memory this test owns.
        let r = unsafe {
            libc::madvise(
                (self.addr as usize + off) as *mut libc::c_void,
                len,
                libc::MADV_DONTNEED,
            )
        };
        assert_eq!(r, 0, "madvise: {}", std::io::Error::last_os_error());
    }
    /// `madvise(MADV_HUGEPAGE)` over the whole mapping.
    pub fn advise_huge(&self) {
        self.map.advise_huge().expect("madvise(MADV_HUGEPAGE)");
    }
    /// Bytes of this mapping the kernel backs with transparent huge pages
    /// (`AnonHugePages` of its VMA in /proc/self/smaps).
    pub fn huge_bytes(&self) -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let head = format!("{:x}-", self.addr);
        let mut inside = false;
        for line in smaps.lines() {
            // A VMA's header starts "start-end perms ..."; its fields "Name: value".
            let first = line.split_whitespace().next().unwrap_or("");
            if !first.ends_with(':') {
                inside = line.starts_with(&head);
            } else if let (true, Some(v)) = (inside, line.strip_prefix("AnonHugePages:")) {
                let kb: u64 = v.trim().trim_end_matches("kB").trim().parse().unwrap();
                return kb * 1024;
            }
        }
        panic!("no VMA at {:#x} in /proc/self/smaps", self.addr)
    }
    /// Read a byte directly (the application's view).
    pub fn byte(&self, off: usize) -> u8 {
        // SAFETY: the caller keeps the page mapped and readable.
        unsafe { ptr::read_volatile(self.ptr().add(off)) }
    }
    pub fn set_byte(&self, off: usize, v: u8) {
        // SAFETY: the caller keeps the page mapped and writable.
        unsafe { ptr::write_volatile(self.ptr().add(off), v) }
    }
}

/// Punch a hole in a test mapping by address (for threads that hold only
/// the address). The hole stays free: see LOW_BASE.
pub fn munmap(addr: u64, len: usize) {
    // SAFETY: unmaps memory the test owns; no Rust reference points into it.
    unsafe { libc::munmap(addr as *mut libc::c_void, len) };
}

/// `MADV_DONTNEED` by address (for threads that hold only the address).
pub fn dontneed(addr: u64, len: usize) {
    // SAFETY: discards pages of memory the test owns; it reads them only
    // through volatile reads or the device's guarded copies.
    let r = unsafe { libc::madvise(addr as *mut libc::c_void, len, libc::MADV_DONTNEED) };
    assert_eq!(r, 0, "madvise: {}", std::io::Error::last_os_error());
}

/// Run `f` on a thread and fail (instead of hanging) if it takes more than `secs`.
pub fn within_secs<T: Send + 'static>(
    secs: u64,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(std::time::Duration::from_secs(secs))
        .unwrap_or_else(|_| panic!("{what}: did not finish in {secs} s (deadlock?)"))
}
