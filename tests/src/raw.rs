//! The C verbs calls the `ibverbs` crate (0.9) does not wrap — RDMA WRITE,
//! registration with `IBV_ACCESS_ON_DEMAND`, QPs whose errors are seen — made
//! through its FFI layer `ibverbs-sys`, so through whichever
//! `libibverbs.so.1` the loader picked (the tests: the shim).
//!
//! Every object is owned by one `Verbs` (device context, PD, one CQ) and
//! destroyed by it; the raw pointers never leave this module. Each `unsafe`
//! block states why the call is sound.

use ffi::ibv_qp_attr_mask as M;
use ibverbs_sys as ffi;
use std::ffi::CStr;
use std::io;
use std::ptr;

pub use ffi::ibv_access_flags as Access;
pub use ffi::ibv_wc as Wc;
pub use ffi::ibv_wc_status as WcStatus;

/// The RoCE v2 (IPv4-mapped) GID of the soft device's port 1.
pub const GID_INDEX: i32 = 1;

/// The 16 bytes of a GID.
pub fn gid_bytes(g: ffi::ibv_gid) -> [u8; 16] {
    // SAFETY: every bit pattern of the union is a valid `[u8; 16]`.
    unsafe { g.raw }
}

/// What the peer needs to connect a QP and target memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub qpn: u32,
    pub gid: [u8; 16],
}

pub struct Verbs {
    ctx: *mut ffi::ibv_context,
    pd: *mut ffi::ibv_pd,
    cq: *mut ffi::ibv_cq,
    pub device: String,
}

// SAFETY: verbs objects may be used from any thread (rdma-core and the shim
// lock internally); `Verbs` hands out no aliasing Rust references.
unsafe impl Send for Verbs {}
// SAFETY: as above, every method takes `&self` and calls thread-safe verbs.
unsafe impl Sync for Verbs {}

fn os_err(what: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

fn check(what: &str, rc: i32) -> io::Result<()> {
    match rc {
        0 => Ok(()),
        e => Err(io::Error::other(format!(
            "{what}: {}",
            io::Error::from_raw_os_error(e)
        ))),
    }
}

impl Verbs {
    /// Open the first device, a PD and a CQ of `cqe` entries.
    pub fn open(cqe: i32) -> io::Result<Verbs> {
        let mut n = 0;
        // SAFETY: `n` is a valid out-pointer; the list is freed below after
        // its first entry was opened (the context does not borrow the list).
        let list = unsafe { ffi::ibv_get_device_list(&mut n) };
        if list.is_null() || n < 1 {
            return Err(io::Error::other("no verbs device"));
        }
        // SAFETY: `list` holds `n >= 1` device pointers; the name is a
        // NUL-terminated string owned by the device, copied before the free.
        let (ctx, device) = unsafe {
            let dev = *list;
            let name = CStr::from_ptr(ffi::ibv_get_device_name(dev))
                .to_string_lossy()
                .into_owned();
            let ctx = ffi::ibv_open_device(dev);
            ffi::ibv_free_device_list(list);
            (ctx, name)
        };
        if ctx.is_null() {
            return Err(os_err("ibv_open_device"));
        }
        let mut v = Verbs {
            ctx,
            pd: ptr::null_mut(),
            cq: ptr::null_mut(),
            device,
        };
        // SAFETY: `ctx` is an open context; the PD and CQ are destroyed by
        // `Drop` before the context is closed.
        unsafe {
            v.pd = ffi::ibv_alloc_pd(ctx);
            if v.pd.is_null() {
                return Err(os_err("ibv_alloc_pd"));
            }
            v.cq = ffi::ibv_create_cq(ctx, cqe, ptr::null_mut(), ptr::null_mut(), 0);
            if v.cq.is_null() {
                return Err(os_err("ibv_create_cq"));
            }
        }
        Ok(v)
    }

    /// Port 1's GID at `GID_INDEX`.
    pub fn gid(&self) -> io::Result<[u8; 16]> {
        let mut g = ffi::ibv_gid::default();
        // SAFETY: `g` is a valid out-parameter for the open context.
        check("ibv_query_gid", unsafe {
            ffi::ibv_query_gid(self.ctx, 1, GID_INDEX, &mut g)
        })?;
        Ok(gid_bytes(g))
    }

    /// Register `len` bytes at `addr` (memory the caller keeps alive — or,
    /// with `ON_DEMAND`, may unmap: that is what ODP allows).
    pub fn reg_mr(&self, addr: *mut u8, len: usize, access: Access) -> io::Result<Mr<'_>> {
        // SAFETY: the shim only records `addr`/`len`; pinned registrations
        // need the memory mapped now (the callers' buffers are), ODP ones
        // not even that. The MR is deregistered by `Mr::drop`.
        let mr = unsafe { ffi::ibv_reg_mr(self.pd, addr.cast(), len, access.0 as i32) };
        if mr.is_null() {
            return Err(os_err("ibv_reg_mr"));
        }
        Ok(Mr { mr, _v: self })
    }

    /// A new RC QP on the one CQ, in RESET.
    pub fn rc_qp(&self, depth: u32) -> io::Result<Qp<'_>> {
        let mut attr = ffi::ibv_qp_init_attr {
            send_cq: self.cq,
            recv_cq: self.cq,
            cap: ffi::ibv_qp_cap {
                max_send_wr: depth,
                max_recv_wr: depth,
                max_send_sge: 1,
                max_recv_sge: 1,
                max_inline_data: 0,
            },
            qp_type: ffi::ibv_qp_type::IBV_QPT_RC,
            ..Default::default()
        };
        // SAFETY: `attr` is fully initialised; the QP is destroyed by
        // `Qp::drop`, before the CQ and PD (it borrows `self`).
        let qp = unsafe { ffi::ibv_create_qp(self.pd, &mut attr) };
        if qp.is_null() {
            return Err(os_err("ibv_create_qp"));
        }
        Ok(Qp { qp, v: self })
    }

    /// Poll up to `wc.len()` completions; the number polled.
    pub fn poll(&self, wc: &mut [Wc]) -> io::Result<usize> {
        // SAFETY: `cq` is live; `poll_cq` is the provider's op (set by the
        // shim) and writes at most `wc.len()` entries.
        let n = unsafe {
            let ctx = (*self.cq).context;
            let poll = (*ctx).ops.poll_cq.expect("poll_cq op");
            poll(self.cq, wc.len() as i32, wc.as_mut_ptr())
        };
        if n < 0 {
            return Err(io::Error::other("ibv_poll_cq failed"));
        }
        Ok(n as usize)
    }

    /// Poll until one completion arrives (at most `limit`).
    pub fn wait_one(&self, limit: std::time::Duration) -> io::Result<Wc> {
        let t = std::time::Instant::now();
        let mut wc = [Wc::default()];
        loop {
            if self.poll(&mut wc)? == 1 {
                return Ok(wc[0]);
            }
            if t.elapsed() > limit {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no completion in time",
                ));
            }
            std::hint::spin_loop();
        }
    }
}

impl Drop for Verbs {
    fn drop(&mut self) {
        // SAFETY: every QP and MR borrowed `self`, so they are gone; each
        // pointer is destroyed once, children before parents.
        unsafe {
            if !self.cq.is_null() {
                ffi::ibv_destroy_cq(self.cq);
            }
            if !self.pd.is_null() {
                ffi::ibv_dealloc_pd(self.pd);
            }
            ffi::ibv_close_device(self.ctx);
        }
    }
}

pub struct Mr<'v> {
    mr: *mut ffi::ibv_mr,
    _v: &'v Verbs,
}

// SAFETY: the MR is only read (keys) after registration; see `Verbs`.
unsafe impl Send for Mr<'_> {}

impl Mr<'_> {
    pub fn lkey(&self) -> u32 {
        // SAFETY: `mr` is live until drop.
        unsafe { (*self.mr).lkey }
    }
    pub fn rkey(&self) -> u32 {
        // SAFETY: `mr` is live until drop.
        unsafe { (*self.mr).rkey }
    }
}

impl Drop for Mr<'_> {
    fn drop(&mut self) {
        // SAFETY: registered by `reg_mr`, deregistered once.
        unsafe { ffi::ibv_dereg_mr(self.mr) };
    }
}

pub struct Qp<'v> {
    qp: *mut ffi::ibv_qp,
    v: &'v Verbs,
}

// SAFETY: see `Verbs`; a `Qp` is used by one thread at a time (`&mut`).
unsafe impl Send for Qp<'_> {}

/// A local buffer for a work request: address, length, lkey.
#[derive(Clone, Copy)]
pub struct Sge {
    pub addr: u64,
    pub len: u32,
    pub lkey: u32,
}

impl Qp<'_> {
    pub fn endpoint(&self) -> io::Result<Endpoint> {
        Ok(Endpoint {
            // SAFETY: `qp` is live.
            qpn: unsafe { (*self.qp).qp_num },
            gid: self.v.gid()?,
        })
    }

    fn modify(&mut self, what: &str, mut attr: ffi::ibv_qp_attr, mask: M) -> io::Result<()> {
        // SAFETY: `attr` is initialised and outlives the call.
        check(what, unsafe {
            ffi::ibv_modify_qp(self.qp, &mut attr, mask.0 as i32)
        })
    }

    /// RESET → INIT → RTR → RTS towards `remote` (RoCE v2 GID), remote
    /// write allowed; perftest's ACK timeout (14: 67 ms) and retries (7), so
    /// a peer descheduled for a while on a busy 2-core machine is waited for
    /// (timeout 10 with 3 retries, 17 ms in all, was once exhausted there).
    pub fn connect(&mut self, remote: Endpoint) -> io::Result<()> {
        let access = Access::IBV_ACCESS_LOCAL_WRITE | Access::IBV_ACCESS_REMOTE_WRITE;
        self.modify(
            "modify_qp INIT",
            ffi::ibv_qp_attr {
                qp_state: ffi::ibv_qp_state::IBV_QPS_INIT,
                port_num: 1,
                qp_access_flags: access.0,
                ..Default::default()
            },
            M::IBV_QP_STATE | M::IBV_QP_PKEY_INDEX | M::IBV_QP_PORT | M::IBV_QP_ACCESS_FLAGS,
        )?;
        let mut rtr = ffi::ibv_qp_attr {
            qp_state: ffi::ibv_qp_state::IBV_QPS_RTR,
            path_mtu: ffi::IBV_MTU_1024,
            dest_qp_num: remote.qpn,
            rq_psn: 0,
            max_dest_rd_atomic: 1,
            min_rnr_timer: 1,
            ..Default::default()
        };
        rtr.ah_attr.is_global = 1;
        rtr.ah_attr.port_num = 1;
        rtr.ah_attr.grh.dgid = ffi::ibv_gid { raw: remote.gid };
        rtr.ah_attr.grh.hop_limit = 64;
        rtr.ah_attr.grh.sgid_index = GID_INDEX as u8;
        self.modify(
            "modify_qp RTR",
            rtr,
            M::IBV_QP_STATE
                | M::IBV_QP_AV
                | M::IBV_QP_PATH_MTU
                | M::IBV_QP_DEST_QPN
                | M::IBV_QP_RQ_PSN
                | M::IBV_QP_MAX_DEST_RD_ATOMIC
                | M::IBV_QP_MIN_RNR_TIMER,
        )?;
        self.modify(
            "modify_qp RTS",
            ffi::ibv_qp_attr {
                qp_state: ffi::ibv_qp_state::IBV_QPS_RTS,
                sq_psn: 0,
                timeout: 14,
                retry_cnt: 7,
                rnr_retry: 7,
                max_rd_atomic: 1,
                ..Default::default()
            },
            M::IBV_QP_STATE
                | M::IBV_QP_SQ_PSN
                | M::IBV_QP_TIMEOUT
                | M::IBV_QP_RETRY_CNT
                | M::IBV_QP_RNR_RETRY
                | M::IBV_QP_MAX_QP_RD_ATOMIC,
        )
    }

    fn post(&mut self, mut wr: ffi::ibv_send_wr, sge: Sge) -> io::Result<()> {
        let mut sg = ffi::ibv_sge {
            addr: sge.addr,
            length: sge.len,
            lkey: sge.lkey,
        };
        wr.sg_list = &mut sg;
        wr.num_sge = 1;
        let mut bad = ptr::null_mut();
        // SAFETY: `wr` and `sg` live across the call (the provider copies
        // them); the buffer they name belongs to a registered MR the caller
        // keeps until the completion.
        check("post_send", unsafe {
            let ctx = (*self.qp).context;
            let post = (*ctx).ops.post_send.expect("post_send op");
            post(self.qp, &mut wr, &mut bad)
        })
    }

    /// A signalled RDMA WRITE of `sge` to `raddr` under `rkey`.
    pub fn post_write(&mut self, wr_id: u64, sge: Sge, raddr: u64, rkey: u32) -> io::Result<()> {
        let mut wr = ffi::ibv_send_wr {
            wr_id,
            opcode: ffi::ibv_wr_opcode::IBV_WR_RDMA_WRITE,
            send_flags: ffi::ibv_send_flags::IBV_SEND_SIGNALED.0,
            ..Default::default()
        };
        wr.wr.rdma = ffi::ibv_send_wr__bindgen_ty_2__bindgen_ty_1 {
            remote_addr: raddr,
            rkey,
        };
        self.post(wr, sge)
    }

    /// A signalled SEND of `sge`.
    pub fn post_send(&mut self, wr_id: u64, sge: Sge) -> io::Result<()> {
        let wr = ffi::ibv_send_wr {
            wr_id,
            opcode: ffi::ibv_wr_opcode::IBV_WR_SEND,
            send_flags: ffi::ibv_send_flags::IBV_SEND_SIGNALED.0,
            ..Default::default()
        };
        self.post(wr, sge)
    }

    pub fn post_recv(&mut self, wr_id: u64, sge: Sge) -> io::Result<()> {
        let mut sg = ffi::ibv_sge {
            addr: sge.addr,
            length: sge.len,
            lkey: sge.lkey,
        };
        let mut wr = ffi::ibv_recv_wr {
            wr_id,
            next: ptr::null_mut(),
            sg_list: &mut sg,
            num_sge: 1,
        };
        let mut bad = ptr::null_mut();
        // SAFETY: as `post`: the request is copied, the buffer registered.
        check("post_recv", unsafe {
            let ctx = (*self.qp).context;
            let post = (*ctx).ops.post_recv.expect("post_recv op");
            post(self.qp, &mut wr, &mut bad)
        })
    }
}

impl Drop for Qp<'_> {
    fn drop(&mut self) {
        // SAFETY: created by `rc_qp`, destroyed once.
        unsafe { ffi::ibv_destroy_qp(self.qp) };
    }
}

/// Anonymous memory for the device to target, mapped by this process with
/// `mmap` so parts of it can be unmapped and mapped again (ODP's subject).
/// It stays fully mapped between calls: `remap` puts a fresh mapping back
/// before it returns, so the bounds-checked word accesses below never touch
/// a hole.
pub struct Mapping {
    map: odp::Mapping,
}

impl Mapping {
    pub fn new(len: usize) -> io::Result<Mapping> {
        Ok(Mapping {
            map: odp::Mapping::anon(len)?,
        })
    }
    pub fn addr(&self) -> u64 {
        self.map.addr() as u64
    }
    pub fn ptr(&self) -> *mut u8 {
        self.map.as_ptr()
    }
    pub fn len(&self) -> usize {
        self.map.len()
    }
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn word(&self, off: usize) -> *mut u64 {
        assert!(
            off % 8 == 0 && off + 8 <= self.len(),
            "word {off} out of range"
        );
        // SAFETY: in bounds and aligned (the mapping is page-aligned).
        unsafe { self.ptr().add(off).cast() }
    }
    pub fn read_u64(&self, off: usize) -> u64 {
        // SAFETY: in-bounds, aligned, mapped (see the type's comment).
        unsafe { self.word(off).read_volatile() }
    }
    pub fn write_u64(&self, off: usize, v: u64) {
        // SAFETY: as `read_u64`.
        unsafe { self.word(off).write_volatile(v) }
    }
    pub fn fill_u64(&self, off: usize, len: usize, v: u64) {
        for o in (off..off + len).step_by(8) {
            self.write_u64(o, v);
        }
    }

    /// Replace `[off, off + len)` with fresh zeroed memory: with `hole`
    /// zero, one `mmap(MAP_FIXED)` over it; else `munmap`, a pause of
    /// `hole` (accesses then find nothing mapped), and `mmap` back at the
    /// same address. Page-aligned parts only. Returns the hole as
    /// `monotonic_ns` (from after `munmap` returned to before `mmap`).
    /// `fake_hole` skips the `munmap` (the memory stays), for a test proving
    /// that a check would notice WRITEs succeeding where nothing is mapped.
    pub fn remap(
        &self,
        off: usize,
        len: usize,
        hole: std::time::Duration,
        fake_hole: bool,
    ) -> io::Result<Option<(u64, u64)>> {
        assert!(off % 4096 == 0 && len % 4096 == 0 && off + len <= self.len());
        let rw = odp::Prot::ReadWrite;
        if hole.is_zero() {
            // SAFETY: the part belongs to this mapping and no Rust reference
            // into it exists (word accesses only).
            unsafe { self.map.replace(off, len, rw) }?;
            return Ok(None);
        }
        if !fake_hole {
            // SAFETY: as above; the hole is filled again below before this
            // returns, and nothing else maps into it meanwhile except what
            // `fill_hole` then refuses to replace (an error, not a clobber).
            unsafe { self.map.unmap(off, len) }?;
        }
        let start = monotonic_ns();
        std::thread::sleep(hole);
        let end = monotonic_ns();
        if fake_hole {
            // SAFETY: as for the zero-hole case.
            unsafe { self.map.replace(off, len, rw) }?;
        } else {
            self.map.fill_hole(off, len, rw)?;
        }
        Ok(Some((start, end)))
    }
}

impl Mapping {
    /// `madvise(MADV_DONTNEED)` over `[off, off + len)`: the pages are
    /// dropped, and read as zeros from then on (private anonymous memory).
    /// Page-aligned parts only.
    pub fn discard(&self, off: usize, len: usize) -> io::Result<()> {
        assert!(off % 4096 == 0 && len % 4096 == 0 && off + len <= self.len());
        // SAFETY: in bounds of this mapping; no Rust reference into it
        // exists (word accesses only), so zeroing it breaks nothing.
        let r = unsafe { libc::madvise(self.ptr().add(off).cast(), len, libc::MADV_DONTNEED) };
        if r != 0 {
            return Err(os_err("madvise(MADV_DONTNEED)"));
        }
        Ok(())
    }

    /// `mprotect` `[off, off + len)` read-only (`writable` false) or back to
    /// read-write. While a part is read-only the caller must not write it
    /// (`write_u64` / `fill_u64` would fault); reads are fine.
    pub fn protect(&self, off: usize, len: usize, writable: bool) -> io::Result<()> {
        assert!(off % 4096 == 0 && len % 4096 == 0 && off + len <= self.len());
        let prot = if writable {
            odp::Prot::ReadWrite
        } else {
            odp::Prot::Read
        };
        // SAFETY: in bounds of this mapping; changes only its protection, and
        // the caller writes no read-only part (see above).
        unsafe { self.map.protect(off, len, prot) }
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds: one clock for every process on the
/// host (network namespaces too), so two programs' events can be ordered.
pub fn monotonic_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid out-parameter; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// Words shared by two processes on one host through a file both map
/// (`MAP_SHARED`): progress counters and flags between a test's programs.
pub struct SharedWords {
    words: &'static [std::sync::atomic::AtomicU64],
}

impl SharedWords {
    pub const N: usize = 8;

    /// Map `path` (created and sized if `create`) for the process lifetime.
    pub fn open(path: &std::path::Path, create: bool) -> io::Result<SharedWords> {
        use std::os::fd::AsFd;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(create)
            .open(path)?;
        f.set_len(4096)?;
        let map = odp::MapOptions::new()
            .shared()
            .file(f.as_fd(), 0)
            .map(4096)?;
        // Never unmapped: the words live as long as the process.
        let (p, _) = map.into_raw();
        // SAFETY: a live shared mapping of 4096 bytes, never unmapped;
        // zero-filled file bytes are valid `AtomicU64`s and the mapping is
        // page-aligned.
        let words = unsafe {
            std::slice::from_raw_parts(p as *const std::sync::atomic::AtomicU64, Self::N)
        };
        Ok(SharedWords { words })
    }

    pub fn word(&self, i: usize) -> &std::sync::atomic::AtomicU64 {
        &self.words[i]
    }
}
