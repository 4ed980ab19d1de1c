//! Which pages of a range are resident: `mincore(2)`, for snapshot faults
//! (`PREFETCH_NO_FAULT`) that map only what the CPU already has.

/// Calls `resident(page_index)` for every resident page of `[addr, addr+len)`
/// (page-aligned). Err(ENOMEM) if part of the range is unmapped.
pub fn for_each_resident(
    addr: usize,
    len: usize,
    mut resident: impl FnMut(usize),
) -> Result<(), i32> {
    let page = super::populate::page_size();
    let mut vec = [0u8; 256];
    let mut off = 0;
    while off < len {
        let chunk_pages = ((len - off) / page).min(vec.len());
        // SAFETY: vec holds at least chunk_pages bytes; mincore only writes
        // there, and reports (not faults on) unmapped addresses.
        let r = unsafe {
            libc::mincore(
                (addr + off) as *mut libc::c_void,
                chunk_pages * page,
                vec.as_mut_ptr(),
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO));
        }
        for (i, v) in vec[..chunk_pages].iter().enumerate() {
            if v & 1 == 1 {
                resident(off / page + i);
            }
        }
        off += chunk_pages * page;
    }
    Ok(())
}
