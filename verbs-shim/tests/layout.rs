//! The Rust bindings (src/ffi/bindings.rs) have the layout of the installed
//! <infiniband/verbs.h>: a C program compiled with `cc` prints sizeof and
//! offsetof of the structures the shim uses; the same figures come from the
//! bindings here.

// bindgen's output, as in src/ffi/mod.rs (its unsafe blocks carry no notes).
#[allow(
    clippy::all,
    clippy::undocumented_unsafe_blocks,
    unsafe_op_in_unsafe_fn,
    unnecessary_transmutes
)]
#[rustfmt::skip]
#[path = "../src/ffi/bindings.rs"]
mod bindings;
#[macro_use]
mod layout_check;
use bindings::*;

#[test]
fn bindings_match_the_c_headers() {
    let (rust, body) = layouts! {
        ibv_context { device, ops, ops.poll_cq, ops.req_notify_cq, ops.post_srq_recv, ops.post_send, ops.post_recv, cmd_fd, async_fd, num_comp_vectors, mutex, abi_compat }
        verbs_context { query_port, advise_mr, create_cq_ex, query_device_ex, create_qp_ex, close_xrcd, sz, context }
        ibv_device { node_type, transport_type, name, dev_name, dev_path, ibdev_path }
        ibv_qp { context, qp_context, pd, send_cq, recv_cq, srq, handle, qp_num, state, qp_type, mutex, cond, events_completed }
        ibv_qp_ex { qp_base, comp_mask, wr_id, wr_flags, wr_atomic_cmp_swp, wr_atomic_fetch_add, wr_bind_mw, wr_local_inv, wr_rdma_read, wr_rdma_write, wr_rdma_write_imm, wr_send, wr_send_imm, wr_send_inv, wr_send_tso, wr_set_ud_addr, wr_set_xrc_srqn, wr_set_inline_data, wr_set_inline_data_list, wr_set_sge, wr_set_sge_list, wr_start, wr_complete, wr_abort, wr_atomic_write }
        ibv_cq { context, channel, cq_context, handle, cqe, mutex, cond, comp_events_completed, async_events_completed }
        ibv_cq_ex { context, channel, cq_context, handle, cqe, mutex, cond, comp_events_completed, async_events_completed, comp_mask, status, wr_id, start_poll, next_poll, end_poll, read_opcode, read_vendor_err, read_byte_len, read_imm_data, read_qp_num, read_src_qp, read_wc_flags, read_slid, read_sl, read_dlid_path_bits, read_completion_ts }
        ibv_cq_init_attr_ex { cqe, cq_context, channel, comp_vector, wc_flags, comp_mask, flags, parent_domain }
        ibv_poll_cq_attr { comp_mask }
        ibv_data_buf { addr, length }
        ibv_pd { context, handle }
        ibv_mr { context, pd, addr, length, handle, lkey, rkey }
        ibv_srq { context, srq_context, pd, handle, mutex, cond, events_completed }
        ibv_ah { context, pd, handle }
        ibv_comp_channel { context, fd, refcnt }
        ibv_wc { wr_id, status, opcode, vendor_err, byte_len, qp_num, src_qp, wc_flags, pkey_index, slid, sl, dlid_path_bits }
        ibv_send_wr { wr_id, next, sg_list, num_sge, opcode, send_flags, wr, wr.rdma.remote_addr, wr.rdma.rkey, wr.atomic.compare_add, wr.atomic.swap, wr.ud.ah, wr.ud.remote_qpn, wr.ud.remote_qkey, qp_type }
        ibv_recv_wr { wr_id, next, sg_list, num_sge }
        ibv_sge { addr, length, lkey }
        ibv_qp_attr { qp_state, cur_qp_state, path_mtu, qkey, rq_psn, sq_psn, dest_qp_num, qp_access_flags, cap, ah_attr, ah_attr.grh.dgid, ah_attr.is_global, pkey_index, max_rd_atomic, max_dest_rd_atomic, min_rnr_timer, port_num, timeout, retry_cnt, rnr_retry, rate_limit }
        ibv_qp_init_attr { qp_context, send_cq, recv_cq, srq, cap, qp_type, sq_sig_all }
        ibv_qp_init_attr_ex { cap, qp_type, comp_mask, pd, create_flags, send_ops_flags }
        ibv_port_attr { state, max_mtu, active_mtu, gid_tbl_len, port_cap_flags, max_msg_sz, pkey_tbl_len, lid, link_layer, flags, port_cap_flags2 }
        ibv_device_attr { fw_ver, node_guid, sys_image_guid, max_mr_size, vendor_id, max_qp, device_cap_flags, max_sge, atomic_cap, max_pkeys, local_ca_ack_delay, phys_port_cnt }
        ibv_device_attr_ex { orig_attr, comp_mask, odp_caps, odp_caps.general_caps, odp_caps.per_transport_caps.rc_odp_caps, odp_caps.per_transport_caps.ud_odp_caps, completion_timestamp_mask, xrc_odp_caps, phys_port_cnt_ex }
        ibv_gid_entry { gid, gid_index, port_num, gid_type, ndev_ifindex }
        ibv_async_event { element, event_type }
        ibv_srq_init_attr { srq_context, attr }
        ibv_ah_attr { grh, dlid, is_global, port_num }
    };
    let Some(r) = layout_check::compare_with_c(
        "layout",
        "infiniband/verbs.h",
        "libibverbs-dev",
        &body,
        &rust,
    ) else {
        return;
    };
    // The sizes measured on this machine's rdma-core, as a guard on the
    // comparison itself.
    for (k, v) in [
        ("sizeof ibv_context", 328),
        ("sizeof verbs_context", 648),
        ("offsetof verbs_context.context", 320),
        ("offsetof verbs_context.sz", 312),
        ("sizeof ibv_qp_ex", 352),
        ("sizeof ibv_cq_ex", 288),
        ("sizeof ibv_port_attr", 52),
    ] {
        assert!(r.contains(&format!("{k} {v}")), "{k} is not {v}");
    }
}
