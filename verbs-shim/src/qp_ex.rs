//! The extended send API on `ibv_qp_ex`: `wr_start`, the builders
//! (`wr_send`, `wr_rdma_write`, …, one WR each, taking `qp->wr_id` and
//! `qp->wr_flags` as they are at the call), the setters (`wr_set_sge`,
//! `wr_set_inline_data`, `wr_set_ud_addr`, … adjusting the WR built last),
//! `wr_complete` and `wr_abort`.
//!
//! rxe's rules: a batch belongs to one thread from `wr_start` to
//! `wr_complete`/`wr_abort` (another thread's `wr_start` waits, as on rxe's
//! send queue lock; the same thread starting again just restarts); a setter's error (too many SGEs, too much inline data: ENOSPC)
//! sticks to the batch and later calls do nothing; `wr_complete` then returns
//! it and posts nothing. Otherwise the whole batch goes to the device at once
//! (`Qp::post_send_batch`: all or nothing; a full send queue is ENOSPC as in
//! rxe, any other refusal the device's errno). `wr_abort` drops the batch.
//! Inline data is copied when it is set, so the caller's buffer is free again
//! as soon as the setter returns.

use crate::ah::ShimAh;
use crate::conv;
use crate::ffi::*;
use crate::placement_abi::{WrFlush, IBV_QP_EX_WITH_FLUSH};
use crate::qp::ShimQp;
use soft_rdma::verbs as sv;
use std::sync::{Condvar, Mutex, MutexGuard};

/// One WR built between `wr_start` and `wr_complete`.
struct PendingWr {
    wr_id: u64,
    flags: c_uint,
    op: sv::SendOp,
    sges: Vec<sv::Sge>,
    /// Set by `wr_set_inline_data{,_list}`: the data, copied.
    inline: Option<Vec<u8>>,
    ud: Option<sv::UdDest>,
    /// `wr_set_xrc_srqn`: the remote SRQ (XRC initiators).
    xrc_srqn: Option<u32>,
}

/// The batch of one QP.
#[derive(Default)]
pub struct Batch {
    wrs: Vec<PendingWr>,
    /// The first error (an errno), which the batch keeps until `wr_complete`.
    err: i32,
    /// The thread between `wr_start` and `wr_complete`/`wr_abort`.
    owner: Option<std::thread::ThreadId>,
}

/// A QP's batch and the wait for it to be free.
#[derive(Default)]
pub struct BatchSlot {
    batch: Mutex<Batch>,
    free: Condvar,
}

/// The send ops rxe offers per QP type, less those the device lacks (TSO;
/// SEND_WITH_INV on UC). Memory windows: `crate::mw`.
pub fn supported_send_ops(t: ibv_qp_type) -> u64 {
    let f = match t {
        IBV_QPT_RC | IBV_QPT_XRC_SEND => {
            IBV_QP_EX_WITH_RDMA_WRITE
                | IBV_QP_EX_WITH_RDMA_WRITE_WITH_IMM
                | IBV_QP_EX_WITH_SEND
                | IBV_QP_EX_WITH_SEND_WITH_IMM
                | IBV_QP_EX_WITH_RDMA_READ
                | IBV_QP_EX_WITH_ATOMIC_CMP_AND_SWP
                | IBV_QP_EX_WITH_ATOMIC_FETCH_AND_ADD
                | IBV_QP_EX_WITH_SEND_WITH_INV
                | IBV_QP_EX_WITH_BIND_MW
                | IBV_QP_EX_WITH_LOCAL_INV
                | IBV_QP_EX_WITH_ATOMIC_WRITE
                | IBV_QP_EX_WITH_FLUSH
        }
        IBV_QPT_UC => {
            IBV_QP_EX_WITH_RDMA_WRITE
                | IBV_QP_EX_WITH_RDMA_WRITE_WITH_IMM
                | IBV_QP_EX_WITH_SEND
                | IBV_QP_EX_WITH_SEND_WITH_IMM
                | IBV_QP_EX_WITH_BIND_MW
                | IBV_QP_EX_WITH_LOCAL_INV
        }
        IBV_QPT_UD => IBV_QP_EX_WITH_SEND | IBV_QP_EX_WITH_SEND_WITH_IMM,
        _ => 0,
    };
    f.into()
}

/// Fill in the builders `flags` asks for (the others stay NULL, as in rxe)
/// and the setters and batch functions every extended QP has.
pub fn set_ops(q: &mut ibv_qp_ex, flags: u64) {
    let has = |f: ibv_qp_create_send_ops_flags| flags & u64::from(f) != 0;
    if has(IBV_QP_EX_WITH_RDMA_WRITE) {
        q.wr_rdma_write = Some(wr_rdma_write);
    }
    if has(IBV_QP_EX_WITH_RDMA_WRITE_WITH_IMM) {
        q.wr_rdma_write_imm = Some(wr_rdma_write_imm);
    }
    if has(IBV_QP_EX_WITH_SEND) {
        q.wr_send = Some(wr_send);
    }
    if has(IBV_QP_EX_WITH_SEND_WITH_IMM) {
        q.wr_send_imm = Some(wr_send_imm);
    }
    if has(IBV_QP_EX_WITH_SEND_WITH_INV) {
        q.wr_send_inv = Some(wr_send_inv);
    }
    if has(IBV_QP_EX_WITH_RDMA_READ) {
        q.wr_rdma_read = Some(wr_rdma_read);
    }
    if has(IBV_QP_EX_WITH_ATOMIC_CMP_AND_SWP) {
        q.wr_atomic_cmp_swp = Some(wr_atomic_cmp_swp);
    }
    if has(IBV_QP_EX_WITH_ATOMIC_FETCH_AND_ADD) {
        q.wr_atomic_fetch_add = Some(wr_atomic_fetch_add);
    }
    if has(IBV_QP_EX_WITH_BIND_MW) {
        q.wr_bind_mw = Some(crate::mw::wr_bind_mw);
    }
    if has(IBV_QP_EX_WITH_LOCAL_INV) {
        q.wr_local_inv = Some(crate::mw::wr_local_inv);
    }
    if has(IBV_QP_EX_WITH_ATOMIC_WRITE) {
        q.wr_atomic_write = Some(wr_atomic_write);
    }
    q.wr_set_sge = Some(wr_set_sge);
    q.wr_set_sge_list = Some(wr_set_sge_list);
    q.wr_set_inline_data = Some(wr_set_inline_data);
    q.wr_set_inline_data_list = Some(wr_set_inline_data_list);
    q.wr_set_ud_addr = Some(wr_set_ud_addr);
    if q.qp_base.qp_type == IBV_QPT_XRC_SEND {
        q.wr_set_xrc_srqn = Some(wr_set_xrc_srqn); // as mlx5: XRC initiators only
    }
    q.wr_start = Some(wr_start);
    q.wr_complete = Some(wr_complete);
    q.wr_abort = Some(wr_abort);
}

/// The `wr_flush` builder (kept after the C struct, see `placement_abi`)
/// if `flags` asks for it.
pub fn wr_flush_op(flags: u64) -> Option<WrFlush> {
    (flags & u64::from(IBV_QP_EX_WITH_FLUSH) != 0).then_some(wr_flush as WrFlush)
}

/// The wrapper of an extended QP.
///
/// # Safety
/// `qp` must be a live QP from `ibv_create_qp_ex`.
unsafe fn shim<'a>(qp: *mut ibv_qp_ex) -> &'a ShimQp {
    // SAFETY: (caller) `qp` (and its `qp_base`) is the first field of a live ShimQp.
    unsafe { ShimQp::from_c(qp as *mut ibv_qp) }
}

fn lock(w: &ShimQp) -> MutexGuard<'_, Batch> {
    crate::sync::lock(&w.batch.batch)
}

/// End the batch: hand it back to the caller and let a waiting `wr_start` in.
fn finish(w: &ShimQp) -> Batch {
    let b = std::mem::take(&mut *lock(w));
    w.batch.free.notify_one();
    b
}

/// A builder: one more WR with the QP's current `wr_id` and `wr_flags`.
///
/// # Safety
/// `qp` must be a live extended QP.
pub(crate) unsafe fn build(qp: *mut ibv_qp_ex, op: sv::SendOp) {
    // SAFETY: (caller) live QP; the application sets these fields before
    // each builder call.
    let (wr_id, flags) = unsafe { ((*qp).wr_id, (*qp).wr_flags) };
    // SAFETY: (caller) live QP.
    let mut b = lock(unsafe { shim(qp) });
    if b.err != 0 {
        return;
    }
    b.wrs.push(PendingWr {
        wr_id,
        flags,
        op,
        sges: Vec::new(),
        inline: None,
        ud: None,
        xrc_srqn: None,
    });
}

/// A builder's error (errno `e`): it sticks to the batch, as a setter's.
///
/// # Safety
/// `qp` must be a live extended QP.
pub(crate) unsafe fn fail(qp: *mut ibv_qp_ex, e: i32) {
    // SAFETY: (caller) live QP.
    let mut b = lock(unsafe { shim(qp) });
    if b.err == 0 {
        b.err = e;
    }
}

/// A setter: adjust the WR built last (EINVAL if there is none).
///
/// # Safety
/// `qp` must be a live extended QP.
unsafe fn set(qp: *mut ibv_qp_ex, f: impl FnOnce(&ShimQp, &mut PendingWr) -> Result<(), i32>) {
    // SAFETY: (caller) live QP.
    let w = unsafe { shim(qp) };
    let mut b = lock(w);
    if b.err != 0 {
        return;
    }
    let r = match b.wrs.last_mut() {
        Some(wr) => f(w, wr),
        None => Err(libc::EINVAL),
    };
    if let Err(e) = r {
        b.err = e;
    }
}

unsafe extern "C" fn wr_start(qp: *mut ibv_qp_ex) {
    // SAFETY: reached only through a live extended QP.
    let w = unsafe { shim(qp) };
    let me = std::thread::current().id();
    let mut b = lock(w);
    while b.owner.is_some_and(|t| t != me) {
        b = crate::sync::wait(&w.batch.free, b);
    }
    *b = Batch {
        owner: Some(me),
        ..Batch::default()
    };
}

unsafe extern "C" fn wr_abort(qp: *mut ibv_qp_ex) {
    // SAFETY: reached only through a live extended QP.
    finish(unsafe { shim(qp) });
}

unsafe extern "C" fn wr_complete(qp: *mut ibv_qp_ex) -> c_int {
    // SAFETY: reached only through a live extended QP.
    let w = unsafe { shim(qp) };
    let batch = finish(w);
    // SAFETY: a live extended QP's context pointer.
    if unsafe { crate::context::forked_away((*qp).qp_base.context) } {
        return crate::context::FORKED;
    }
    if batch.err != 0 {
        return batch.err;
    }
    // Inline data is what the WR sends: a READ or an atomic has none (the
    // device would take the copy for the place to write the response into).
    let reads = |op: &sv::SendOp| {
        matches!(
            op,
            sv::SendOp::Read { .. }
                | sv::SendOp::CompareSwap { .. }
                | sv::SendOp::FetchAdd { .. }
                | sv::SendOp::AtomicWrite { .. }
                | sv::SendOp::Flush { .. }
        )
    };
    if batch.wrs.iter().any(|p| p.inline.is_some() && reads(&p.op)) {
        return libc::EINVAL;
    }
    let lists: Vec<Vec<sv::Sge>> = batch
        .wrs
        .iter()
        .map(|p| match &p.inline {
            Some(d) if !d.is_empty() => vec![sv::Sge {
                addr: d.as_ptr() as u64,
                length: d.len() as u32,
                lkey: 0,
            }],
            Some(_) => Vec::new(),
            None => p.sges.clone(),
        })
        .collect();
    let wrs: Vec<sv::SendWr<'_>> = batch
        .wrs
        .iter()
        .zip(&lists)
        .map(|(p, l)| {
            let mut flags = conv::send_flags_from_c(p.flags);
            flags.inline |= p.inline.is_some();
            sv::SendWr {
                wr_id: p.wr_id,
                sg_list: l,
                op: p.op,
                flags,
                ud: p.ud.clone(),
            }
        })
        .collect();
    // The inline buffers live until post_send_batch has copied them.
    let posted = if w.qp.qp_base.qp_type == IBV_QPT_XRC_SEND {
        // Every WR of an XRC initiator names its remote SRQ.
        let Some(srqns) = batch
            .wrs
            .iter()
            .map(|p| p.xrc_srqn)
            .collect::<Option<Vec<u32>>>()
        else {
            return libc::EINVAL;
        };
        w.soft.post_send_batch_xrc(&wrs, &srqns)
    } else {
        w.soft.post_send_batch(&wrs)
    };
    match posted {
        Ok(()) => 0,
        Err((_, e)) if e == sv::Errno::ENOMEM => libc::ENOSPC,
        Err((_, e)) => e.0,
    }
}

unsafe extern "C" fn wr_send(qp: *mut ibv_qp_ex) {
    // SAFETY: reached only through a live extended QP.
    unsafe { build(qp, sv::SendOp::Send) }
}

unsafe extern "C" fn wr_send_imm(qp: *mut ibv_qp_ex, imm: __be32) {
    // SAFETY: reached only through a live extended QP.
    unsafe { build(qp, sv::SendOp::SendImm(u32::from_be(imm))) }
}

unsafe extern "C" fn wr_send_inv(qp: *mut ibv_qp_ex, rkey: u32) {
    // SAFETY: reached only through a live extended QP.
    unsafe { build(qp, sv::SendOp::SendInv(rkey)) }
}

unsafe extern "C" fn wr_rdma_write(qp: *mut ibv_qp_ex, rkey: u32, remote_addr: u64) {
    // SAFETY: reached only through a live extended QP.
    unsafe { build(qp, sv::SendOp::Write { remote_addr, rkey }) }
}

unsafe extern "C" fn wr_rdma_write_imm(
    qp: *mut ibv_qp_ex,
    rkey: u32,
    remote_addr: u64,
    imm: __be32,
) {
    let op = sv::SendOp::WriteImm {
        remote_addr,
        rkey,
        imm: u32::from_be(imm),
    };
    // SAFETY: reached only through a live extended QP.
    unsafe { build(qp, op) }
}

unsafe extern "C" fn wr_rdma_read(qp: *mut ibv_qp_ex, rkey: u32, remote_addr: u64) {
    // SAFETY: reached only through a live extended QP.
    unsafe { build(qp, sv::SendOp::Read { remote_addr, rkey }) }
}

unsafe extern "C" fn wr_atomic_cmp_swp(
    qp: *mut ibv_qp_ex,
    rkey: u32,
    remote_addr: u64,
    compare: u64,
    swap: u64,
) {
    let op = sv::SendOp::CompareSwap {
        remote_addr,
        rkey,
        compare,
        swap,
    };
    // SAFETY: reached only through a live extended QP.
    unsafe { build(qp, op) }
}

unsafe extern "C" fn wr_atomic_fetch_add(
    qp: *mut ibv_qp_ex,
    rkey: u32,
    remote_addr: u64,
    add: u64,
) {
    let op = sv::SendOp::FetchAdd {
        remote_addr,
        rkey,
        add,
    };
    // SAFETY: reached only through a live extended QP.
    unsafe { build(qp, op) }
}

/// `ibv_wr_atomic_write`: the 8 bytes at `data` are copied now (the
/// caller's buffer is free again when this returns, as with rxe).
unsafe extern "C" fn wr_atomic_write(
    qp: *mut ibv_qp_ex,
    rkey: u32,
    remote_addr: u64,
    data: *const c_void,
) {
    if data.is_null() {
        // SAFETY: reached only through a live extended QP.
        unsafe { set_err(qp, libc::EINVAL) };
        return;
    }
    // SAFETY: the caller's 8 bytes (`atomic_wr`); no alignment is promised.
    let data = unsafe { std::ptr::read_unaligned(data as *const [u8; 8]) };
    let op = sv::SendOp::AtomicWrite {
        remote_addr,
        rkey,
        data,
    };
    // SAFETY: reached only through a live extended QP.
    unsafe { build(qp, op) }
}

/// `ibv_wr_flush`: `ptype` `IBV_FLUSH_GLOBAL`/`PERSISTENT`, `level`
/// `IBV_FLUSH_RANGE`/`MR`. A length past 32 bits or an unknown level is
/// the batch's EINVAL (the device checks the type when it is posted).
unsafe extern "C" fn wr_flush(
    qp: *mut ibv_qp_ex,
    rkey: u32,
    remote_addr: u64,
    len: usize,
    ptype: u8,
    level: u8,
) {
    let (Ok(len), Some(level)) = (u32::try_from(len), sv::FlushLevel::from_u8(level)) else {
        // SAFETY: reached only through a live extended QP.
        unsafe { set_err(qp, libc::EINVAL) };
        return;
    };
    let op = sv::SendOp::Flush {
        remote_addr,
        rkey,
        len,
        placement: sv::FlushType(ptype),
        level,
    };
    // SAFETY: reached only through a live extended QP.
    unsafe { build(qp, op) }
}

/// A builder's own error: it sticks to the batch, as a setter's does.
///
/// # Safety
/// `qp` must be a live extended QP.
unsafe fn set_err(qp: *mut ibv_qp_ex, e: i32) {
    // SAFETY: (caller) live QP.
    let mut b = lock(unsafe { shim(qp) });
    if b.err == 0 {
        b.err = e;
    }
}

unsafe extern "C" fn wr_set_sge(qp: *mut ibv_qp_ex, lkey: u32, addr: u64, length: u32) {
    // SAFETY: reached only through a live extended QP.
    unsafe {
        set(qp, |_, wr| {
            // rxe: a zero length leaves the WR without data.
            wr.sges = if length == 0 {
                Vec::new()
            } else {
                vec![sv::Sge { addr, length, lkey }]
            };
            wr.inline = None;
            Ok(())
        })
    }
}

unsafe extern "C" fn wr_set_sge_list(qp: *mut ibv_qp_ex, n: usize, list: *const ibv_sge) {
    // SAFETY: reached only through a live extended QP.
    unsafe {
        set(qp, |w, wr| {
            if n > w.soft.cap().max_send_sge as usize {
                return Err(libc::ENOSPC);
            }
            if n > 0 && list.is_null() {
                return Err(libc::EINVAL);
            }
            wr.sges = if n == 0 {
                Vec::new()
            } else {
                // SAFETY: the caller's array of `n` SGEs.
                std::slice::from_raw_parts(list, n)
                    .iter()
                    .map(conv::sge_from_c)
                    .collect()
            };
            wr.inline = None;
            Ok(())
        })
    }
}

/// Copy the caller's buffers into one inline payload (ENOSPC past the QP's
/// `max_inline_data`).
///
/// # Safety
/// Each `(addr, len)` must be readable memory (or `len` 0).
unsafe fn gather(w: &ShimQp, bufs: &[(*const u8, usize)]) -> Result<Vec<u8>, i32> {
    let total = bufs.iter().try_fold(0usize, |t, &(_, n)| t.checked_add(n));
    match total {
        Some(t) if t <= w.soft.cap().max_inline_data as usize => {}
        _ => return Err(libc::ENOSPC),
    }
    let mut out = Vec::new();
    for &(p, n) in bufs {
        if n == 0 {
            continue;
        }
        if p.is_null() {
            return Err(libc::EINVAL);
        }
        // SAFETY: (caller) `p` is readable for `n` bytes.
        out.extend_from_slice(unsafe { std::slice::from_raw_parts(p, n) });
    }
    Ok(out)
}

unsafe extern "C" fn wr_set_inline_data(qp: *mut ibv_qp_ex, addr: *mut c_void, length: usize) {
    // SAFETY: reached only through a live extended QP; `addr` is the
    // caller's buffer of `length` bytes.
    unsafe {
        set(qp, |w, wr| {
            wr.inline = Some(gather(w, &[(addr as *const u8, length)])?);
            wr.sges.clear();
            Ok(())
        })
    }
}

unsafe extern "C" fn wr_set_inline_data_list(
    qp: *mut ibv_qp_ex,
    n: usize,
    list: *const ibv_data_buf,
) {
    // SAFETY: reached only through a live extended QP; `list` holds `n`
    // buffers of the caller's.
    unsafe {
        set(qp, |w, wr| {
            if n > 0 && list.is_null() {
                return Err(libc::EINVAL);
            }
            let bufs: Vec<(*const u8, usize)> = if n == 0 {
                Vec::new()
            } else {
                std::slice::from_raw_parts(list, n)
                    .iter()
                    .map(|b| (b.addr as *const u8, b.length))
                    .collect()
            };
            wr.inline = Some(gather(w, &bufs)?);
            wr.sges.clear();
            Ok(())
        })
    }
}

unsafe extern "C" fn wr_set_ud_addr(
    qp: *mut ibv_qp_ex,
    ah: *mut ibv_ah,
    remote_qpn: u32,
    remote_qkey: u32,
) {
    // SAFETY: reached only through a live extended QP; `ah` is NULL or a
    // live AH.
    unsafe {
        set(qp, |_, wr| {
            if ah.is_null() {
                return Err(libc::EINVAL);
            }
            wr.ud = Some(sv::UdDest {
                ah: ShimAh::from_c(ah).soft,
                remote_qpn,
                remote_qkey,
            });
            Ok(())
        })
    }
}

unsafe extern "C" fn wr_set_xrc_srqn(qp: *mut ibv_qp_ex, remote_srqn: u32) {
    // SAFETY: reached only through a live extended QP.
    unsafe {
        set(qp, |_, wr| {
            wr.xrc_srqn = Some(remote_srqn);
            Ok(())
        })
    }
}
