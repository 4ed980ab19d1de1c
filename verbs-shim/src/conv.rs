//! Conversions between the C structures of <infiniband/verbs.h> and the
//! soft-rdma types, in one place. Nothing here is `unsafe`: callers hand in
//! references to C structs they have already validated.

use crate::ffi::*;
use soft_rdma::verbs as sv;

pub fn qp_type_from_c(t: ibv_qp_type) -> Option<sv::QpType> {
    match t {
        IBV_QPT_RC => Some(sv::QpType::Rc),
        IBV_QPT_UC => Some(sv::QpType::Uc),
        IBV_QPT_UD => Some(sv::QpType::Ud),
        IBV_QPT_XRC_SEND => Some(sv::QpType::XrcSend),
        IBV_QPT_XRC_RECV => Some(sv::QpType::XrcRecv),
        _ => None,
    }
}

pub fn qp_state_from_c(s: ibv_qp_state) -> Option<sv::QpState> {
    Some(match s {
        IBV_QPS_RESET => sv::QpState::Reset,
        IBV_QPS_INIT => sv::QpState::Init,
        IBV_QPS_RTR => sv::QpState::Rtr,
        IBV_QPS_RTS => sv::QpState::Rts,
        IBV_QPS_SQD => sv::QpState::Sqd,
        IBV_QPS_SQE => sv::QpState::Sqe,
        IBV_QPS_ERR => sv::QpState::Err,
        _ => return None,
    })
}

pub fn qp_state_to_c(s: sv::QpState) -> ibv_qp_state {
    match s {
        sv::QpState::Reset => IBV_QPS_RESET,
        sv::QpState::Init => IBV_QPS_INIT,
        sv::QpState::Rtr => IBV_QPS_RTR,
        sv::QpState::Rts => IBV_QPS_RTS,
        sv::QpState::Sqd => IBV_QPS_SQD,
        sv::QpState::Sqe => IBV_QPS_SQE,
        sv::QpState::Err => IBV_QPS_ERR,
    }
}

pub fn mtu_to_c(m: sv::Mtu) -> ibv_mtu {
    match m {
        sv::Mtu::M256 => IBV_MTU_256,
        sv::Mtu::M512 => IBV_MTU_512,
        sv::Mtu::M1024 => IBV_MTU_1024,
        sv::Mtu::M2048 => IBV_MTU_2048,
        sv::Mtu::M4096 => IBV_MTU_4096,
    }
}

/// The `ibv_access_flags` the device implements; the optional range
/// (`IB_UVERBS_ACCESS_OPTIONAL_RANGE`, e.g. relaxed ordering) may be ignored by
/// definition, `HUGETLB` is a hint the device does not need.
/// `ZERO_BASED` is refused.
pub fn access_from_c(a: c_uint) -> Result<sv::Access, i32> {
    if a & IBV_ACCESS_ZERO_BASED != 0 {
        return Err(libc::EOPNOTSUPP);
    }
    let known = IBV_ACCESS_LOCAL_WRITE
        | IBV_ACCESS_REMOTE_WRITE
        | IBV_ACCESS_REMOTE_READ
        | IBV_ACCESS_REMOTE_ATOMIC
        | IBV_ACCESS_MW_BIND
        | IBV_ACCESS_ON_DEMAND
        | crate::placement_abi::IBV_ACCESS_FLUSH_GLOBAL
        | crate::placement_abi::IBV_ACCESS_FLUSH_PERSISTENT;
    let ignored = IBV_ACCESS_HUGETLB | IB_UVERBS_ACCESS_OPTIONAL_RANGE;
    if a & !(known | ignored) != 0 {
        return Err(libc::EINVAL);
    }
    Ok(sv::Access(a & known))
}

/// `ibv_modify_qp`'s attributes selected by `mask`. Bits the device has no
/// use for (`CUR_STATE`, `EN_SQD_ASYNC_NOTIFY`, `ALT_PATH`, `PATH_MIG_STATE`,
/// `CAP`, `RATE_LIMIT`) are accepted and ignored, as rxe does for most.
pub fn qp_attr_from_c(a: &ibv_qp_attr, mask: c_int) -> Result<sv::QpAttr, i32> {
    let m = mask as c_uint;
    let has = |bit: c_uint| m & bit != 0;
    let mut out = sv::QpAttr::default();
    if has(IBV_QP_STATE) {
        out.state = Some(qp_state_from_c(a.qp_state).ok_or(libc::EINVAL)?);
    }
    if has(IBV_QP_PKEY_INDEX) {
        if a.pkey_index != 0 {
            return Err(libc::EINVAL);
        }
        out.pkey_index = Some(a.pkey_index);
    }
    if has(IBV_QP_PORT) {
        out.port_num = Some(a.port_num);
    }
    if has(IBV_QP_QKEY) {
        out.qkey = Some(a.qkey);
    }
    if has(IBV_QP_ACCESS_FLAGS) {
        out.access = Some(access_from_c(a.qp_access_flags)?);
    }
    if has(IBV_QP_PATH_MTU) {
        out.path_mtu = Some(sv::Mtu::from_ibv(a.path_mtu).ok_or(libc::EINVAL)?);
    }
    if has(IBV_QP_DEST_QPN) {
        out.dest_qp_num = Some(a.dest_qp_num);
    }
    if has(IBV_QP_RQ_PSN) {
        out.rq_psn = Some(a.rq_psn);
    }
    if has(IBV_QP_SQ_PSN) {
        out.sq_psn = Some(a.sq_psn);
    }
    if has(IBV_QP_AV) {
        // RoCE addresses by GID only: an AV without a GRH cannot be routed.
        if a.ah_attr.is_global == 0 {
            return Err(libc::EINVAL);
        }
        // SAFETY-free: `raw` is the plain-bytes view of the union.
        out.dgid = Some(sv::Gid(gid_bytes(&a.ah_attr.grh.dgid)));
    }
    if has(IBV_QP_MAX_QP_RD_ATOMIC) {
        out.max_rd_atomic = Some(a.max_rd_atomic);
    }
    if has(IBV_QP_MAX_DEST_RD_ATOMIC) {
        out.max_dest_rd_atomic = Some(a.max_dest_rd_atomic);
    }
    if has(IBV_QP_MIN_RNR_TIMER) {
        out.min_rnr_timer = Some(a.min_rnr_timer);
    }
    if has(IBV_QP_TIMEOUT) {
        out.timeout = Some(a.timeout);
    }
    if has(IBV_QP_RETRY_CNT) {
        out.retry_cnt = Some(a.retry_cnt);
    }
    if has(IBV_QP_RNR_RETRY) {
        out.rnr_retry = Some(a.rnr_retry);
    }
    Ok(out)
}

/// Merge the masked fields of `a` into the shadow copy `ibv_query_qp` reports.
pub fn merge_qp_attr(shadow: &mut ibv_qp_attr, a: &ibv_qp_attr, mask: c_int) {
    let m = mask as c_uint;
    let has = |bit: c_uint| m & bit != 0;
    if has(IBV_QP_STATE) {
        shadow.qp_state = a.qp_state;
    }
    if has(IBV_QP_PKEY_INDEX) {
        shadow.pkey_index = a.pkey_index;
    }
    if has(IBV_QP_PORT) {
        shadow.port_num = a.port_num;
    }
    if has(IBV_QP_QKEY) {
        shadow.qkey = a.qkey;
    }
    if has(IBV_QP_ACCESS_FLAGS) {
        shadow.qp_access_flags = a.qp_access_flags;
    }
    if has(IBV_QP_PATH_MTU) {
        shadow.path_mtu = a.path_mtu;
    }
    if has(IBV_QP_DEST_QPN) {
        shadow.dest_qp_num = a.dest_qp_num;
    }
    if has(IBV_QP_RQ_PSN) {
        shadow.rq_psn = a.rq_psn;
    }
    if has(IBV_QP_SQ_PSN) {
        shadow.sq_psn = a.sq_psn;
    }
    if has(IBV_QP_AV) {
        shadow.ah_attr = a.ah_attr;
    }
    if has(IBV_QP_MAX_QP_RD_ATOMIC) {
        shadow.max_rd_atomic = a.max_rd_atomic;
    }
    if has(IBV_QP_MAX_DEST_RD_ATOMIC) {
        shadow.max_dest_rd_atomic = a.max_dest_rd_atomic;
    }
    if has(IBV_QP_MIN_RNR_TIMER) {
        shadow.min_rnr_timer = a.min_rnr_timer;
    }
    if has(IBV_QP_TIMEOUT) {
        shadow.timeout = a.timeout;
    }
    if has(IBV_QP_RETRY_CNT) {
        shadow.retry_cnt = a.retry_cnt;
    }
    if has(IBV_QP_RNR_RETRY) {
        shadow.rnr_retry = a.rnr_retry;
    }
}

pub fn gid_bytes(g: &ibv_gid) -> [u8; 16] {
    // SAFETY: every bit pattern of the union is a valid [u8; 16].
    unsafe { g.raw }
}

pub fn gid_to_c(g: sv::Gid) -> ibv_gid {
    ibv_gid { raw: g.0 }
}

pub fn sge_from_c(s: &ibv_sge) -> sv::Sge {
    sv::Sge {
        addr: s.addr,
        length: s.length,
        lkey: s.lkey,
    }
}

/// The operation of one `ibv_send_wr`. `imm_data` is big-endian in C and a
/// host-order value in the device (it travels big-endian on the wire).
pub fn send_op_from_c(wr: &ibv_send_wr) -> Result<sv::SendOp, i32> {
    // SAFETY: the unions are plain integers; the opcode says which member the
    // caller filled, and reading another is still a valid integer.
    let (imm, inv, rdma, atomic) = unsafe {
        (
            wr.__bindgen_anon_1.imm_data,
            wr.__bindgen_anon_1.invalidate_rkey,
            wr.wr.rdma,
            wr.wr.atomic,
        )
    };
    Ok(match wr.opcode {
        IBV_WR_SEND => sv::SendOp::Send,
        IBV_WR_SEND_WITH_IMM => sv::SendOp::SendImm(u32::from_be(imm)),
        IBV_WR_SEND_WITH_INV => sv::SendOp::SendInv(inv),
        IBV_WR_RDMA_WRITE => sv::SendOp::Write {
            remote_addr: rdma.remote_addr,
            rkey: rdma.rkey,
        },
        IBV_WR_RDMA_WRITE_WITH_IMM => sv::SendOp::WriteImm {
            remote_addr: rdma.remote_addr,
            rkey: rdma.rkey,
            imm: u32::from_be(imm),
        },
        IBV_WR_RDMA_READ => sv::SendOp::Read {
            remote_addr: rdma.remote_addr,
            rkey: rdma.rkey,
        },
        IBV_WR_ATOMIC_CMP_AND_SWP => sv::SendOp::CompareSwap {
            remote_addr: atomic.remote_addr,
            rkey: atomic.rkey,
            compare: atomic.compare_add,
            swap: atomic.swap,
        },
        IBV_WR_ATOMIC_FETCH_AND_ADD => sv::SendOp::FetchAdd {
            remote_addr: atomic.remote_addr,
            rkey: atomic.rkey,
            add: atomic.compare_add,
        },
        IBV_WR_LOCAL_INV => sv::SendOp::LocalInv(inv),
        // SAFETY: ibv_post_send's caller passes a live MW (and MR) to bind.
        IBV_WR_BIND_MW => return unsafe { crate::mw::bind_wr_from_c(wr) },
        _ => return Err(libc::EINVAL),
    })
}

pub fn send_flags_from_c(f: c_uint) -> sv::SendFlags {
    sv::SendFlags {
        signaled: f & IBV_SEND_SIGNALED != 0,
        solicited: f & IBV_SEND_SOLICITED != 0,
        inline: f & IBV_SEND_INLINE != 0,
        fence: f & IBV_SEND_FENCE != 0,
    }
}

fn wc_status_to_c(s: sv::WcStatus) -> ibv_wc_status {
    use sv::WcStatus as S;
    match s {
        S::Success => IBV_WC_SUCCESS,
        S::LocLenErr => IBV_WC_LOC_LEN_ERR,
        S::LocQpOpErr => IBV_WC_LOC_QP_OP_ERR,
        S::LocProtErr => IBV_WC_LOC_PROT_ERR,
        S::WrFlushErr => IBV_WC_WR_FLUSH_ERR,
        S::BadRespErr => IBV_WC_BAD_RESP_ERR,
        S::LocAccessErr => IBV_WC_LOC_ACCESS_ERR,
        S::RemInvReqErr => IBV_WC_REM_INV_REQ_ERR,
        S::RemAccessErr => IBV_WC_REM_ACCESS_ERR,
        S::RemOpErr => IBV_WC_REM_OP_ERR,
        S::RetryExcErr => IBV_WC_RETRY_EXC_ERR,
        S::RnrRetryExcErr => IBV_WC_RNR_RETRY_EXC_ERR,
        S::GeneralErr => IBV_WC_GENERAL_ERR,
        S::MwBindErr => IBV_WC_MW_BIND_ERR,
    }
}

fn wc_opcode_to_c(o: sv::WcOpcode) -> ibv_wc_opcode {
    use sv::WcOpcode as O;
    match o {
        O::Send => IBV_WC_SEND,
        O::RdmaWrite => IBV_WC_RDMA_WRITE,
        O::RdmaRead => IBV_WC_RDMA_READ,
        O::CompSwap => IBV_WC_COMP_SWAP,
        O::FetchAdd => IBV_WC_FETCH_ADD,
        O::AtomicWrite => IBV_WC_ATOMIC_WRITE,
        O::Flush => crate::placement_abi::IBV_WC_FLUSH,
        O::Recv => IBV_WC_RECV,
        O::RecvRdmaWithImm => IBV_WC_RECV_RDMA_WITH_IMM,
        O::BindMw => IBV_WC_BIND_MW,
        O::LocalInv => IBV_WC_LOCAL_INV,
    }
}

pub fn wc_to_c(w: &sv::Wc) -> ibv_wc {
    let mut flags = 0;
    let mut anon = ibv_wc__bindgen_ty_1 { imm_data: 0 };
    if let Some(imm) = w.imm {
        flags |= IBV_WC_WITH_IMM;
        anon = ibv_wc__bindgen_ty_1 {
            imm_data: imm.to_be(),
        };
    } else if let Some(rkey) = w.invalidated_rkey {
        flags |= IBV_WC_WITH_INV;
        anon = ibv_wc__bindgen_ty_1 {
            invalidated_rkey: rkey,
        };
    }
    if w.grh {
        flags |= IBV_WC_GRH;
    }
    ibv_wc {
        wr_id: w.wr_id,
        status: wc_status_to_c(w.status),
        opcode: wc_opcode_to_c(w.opcode),
        vendor_err: 0,
        byte_len: w.byte_len,
        __bindgen_anon_1: anon,
        qp_num: w.qp_num,
        src_qp: w.src_qp,
        wc_flags: flags,
        pkey_index: 0,
        slid: 0,
        sl: 0,
        dlid_path_bits: 0,
    }
}

pub fn advice_from_c(a: ib_uverbs_advise_mr_advice) -> Option<odp::Advice> {
    match a {
        IB_UVERBS_ADVISE_MR_ADVICE_PREFETCH => Some(odp::Advice::Prefetch),
        IB_UVERBS_ADVISE_MR_ADVICE_PREFETCH_WRITE => Some(odp::Advice::PrefetchWrite),
        IB_UVERBS_ADVISE_MR_ADVICE_PREFETCH_NO_FAULT => Some(odp::Advice::PrefetchNoFault),
        _ => None,
    }
}
