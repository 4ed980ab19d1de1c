//! Counter publication through a shared file mapping: [`SharedCounters`]
//! sees one (an `odp::Mapping`) as an array of `AtomicU64` (the only thing
//! touched through that mapping; headers are written with ordinary file
//! I/O). Only the publisher maps its file: a reader copies with `pread`,
//! since a mapping of a file someone else may truncate raises SIGBUS at the
//! first touch past its end. The same-host ring (`transport/ring.rs`) maps
//! its memfd with `odp::Mapping` too.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::sync::atomic::AtomicU64;

use odp::{MapOptions, Mapping, Prot};

/// `n` 64-bit counters at byte `offset` of a shared mapping of a file.
pub(crate) struct SharedCounters {
    map: Mapping,
    offset: usize,
    n: usize,
}

impl SharedCounters {
    /// Map `file` (the publisher's own, at least `offset + 8 * n` bytes long,
    /// `offset` a multiple of 8) read-write.
    pub(crate) fn map(file: &File, offset: usize, n: usize) -> io::Result<Self> {
        let need = n
            .checked_mul(8)
            .and_then(|b| b.checked_add(offset))
            .filter(|_| offset % 8 == 0)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad counter layout"))?;
        let file_len = file.metadata()?.len();
        if file_len < need as u64 || need == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "counter file shorter than its header says",
            ));
        }
        Ok(SharedCounters {
            map: MapOptions::new()
                .prot(Prot::ReadWrite)
                .shared()
                .file(file.as_fd(), 0)
                .map(need)?,
            offset,
            n,
        })
    }

    /// The counters.
    pub(crate) fn values(&self) -> &[AtomicU64] {
        // SAFETY: `[offset, offset + 8n)` lies inside the live mapping
        // (checked in `map`), is 8-aligned (page-aligned base, offset % 8 ==
        // 0), and is only ever accessed atomically through a mapping (only
        // the publisher maps it; other processes copy it with `pread`, which
        // creates no Rust reference). The slice borrows `self`, so it cannot
        // outlive the mapping.
        unsafe {
            std::slice::from_raw_parts(
                self.map.as_ptr().add(self.offset).cast::<AtomicU64>(),
                self.n,
            )
        }
    }
}
