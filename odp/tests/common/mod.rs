//! Real mappings for the tests: the application side of ODP.
#![allow(dead_code)]

use std::ptr;

pub const PAGE: usize = 4096;

/// An anonymous private mapping, unmapped on drop (errors ignored: tests
/// unmap or remap it themselves).
pub struct Mapping {
    pub addr: u64,
    pub len: usize,
}

/// Test mappings live far below everything else (16 TiB up, 1 GiB apart).
/// The kernel places new mappings top-down, so it never reuses a hole a test
/// punches down here — otherwise another thread's stack could land in the
/// hole, be clobbered by `MAP_FIXED`, or receive an ODP write (ODP follows
/// the virtual address).
const LOW_BASE: u64 = 0x1000_0000_0000;
const STRIDE: u64 = 1 << 30;

pub fn map_anon(len: usize) -> Mapping {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    assert!(len as u64 <= STRIDE);
    loop {
        let want = LOW_BASE + NEXT.fetch_add(1, Ordering::Relaxed) * STRIDE;
        // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping; the
        // new one aliases nothing.
        let p = unsafe {
            libc::mmap(
                want as *mut libc::c_void,
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                -1,
                0,
            )
        };
        if p != libc::MAP_FAILED {
            return Mapping {
                addr: p as u64,
                len,
            };
        }
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::EEXIST),
            "mmap"
        );
    }
}

impl Mapping {
    pub fn ptr(&self) -> *mut u8 {
        self.addr as *mut u8
    }
    pub fn munmap(&self) {
        munmap(self.addr, self.len);
    }
    /// `mmap(MAP_FIXED)` a fresh anonymous mapping over `[addr+off, +len)`.
    pub fn remap_fixed(&self, off: usize, len: usize) {
        map_fixed(self.addr + off as u64, len);
    }
    pub fn protect(&self, off: usize, len: usize, prot: i32) {
        // SAFETY: changes protection of memory this test owns; nothing Rust-owned.
        let r =
            unsafe { libc::mprotect((self.addr as usize + off) as *mut libc::c_void, len, prot) };
        assert_eq!(r, 0, "mprotect: {}", std::io::Error::last_os_error());
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
        // SAFETY: advice on memory this test owns; contents unchanged.
        let r = unsafe { libc::madvise(self.ptr().cast(), self.len, libc::MADV_HUGEPAGE) };
        assert_eq!(r, 0, "madvise: {}", std::io::Error::last_os_error());
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

impl Drop for Mapping {
    fn drop(&mut self) {
        munmap(self.addr, self.len);
    }
}

pub fn munmap(addr: u64, len: usize) {
    // SAFETY: unmaps memory the test owns; no Rust reference points into it.
    unsafe { libc::munmap(addr as *mut libc::c_void, len) };
}

pub fn map_fixed(addr: u64, len: usize) {
    // SAFETY: replaces memory the test owns with a fresh mapping at the same address.
    let p = unsafe {
        libc::mmap(
            addr as *mut libc::c_void,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
            -1,
            0,
        )
    };
    assert_eq!(
        p as u64,
        addr,
        "mmap(MAP_FIXED): {}",
        std::io::Error::last_os_error()
    );
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
