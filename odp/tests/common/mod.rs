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

pub fn map_anon(len: usize) -> Mapping {
    // SAFETY: a fresh anonymous mapping chosen by the kernel aliases nothing.
    let p = unsafe { libc::mmap(ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0) };
    assert_ne!(p, libc::MAP_FAILED, "mmap: {}", std::io::Error::last_os_error());
    Mapping { addr: p as u64, len }
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
        let r = unsafe { libc::mprotect((self.addr as usize + off) as *mut libc::c_void, len, prot) };
        assert_eq!(r, 0, "mprotect: {}", std::io::Error::last_os_error());
    }
    pub fn dontneed(&self, off: usize, len: usize) {
        // SAFETY: discards pages of memory this test owns.
        let r = unsafe { libc::madvise((self.addr as usize + off) as *mut libc::c_void, len, libc::MADV_DONTNEED) };
        assert_eq!(r, 0, "madvise: {}", std::io::Error::last_os_error());
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
        libc::mmap(addr as *mut libc::c_void, len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED, -1, 0)
    };
    assert_eq!(p as u64, addr, "mmap(MAP_FIXED): {}", std::io::Error::last_os_error());
}

/// Run `f` on a thread and fail (instead of hanging) if it takes more than `secs`.
pub fn within_secs<T: Send + 'static>(secs: u64, what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(std::time::Duration::from_secs(secs)).unwrap_or_else(|_| panic!("{what}: did not finish in {secs} s (deadlock?)"))
}
