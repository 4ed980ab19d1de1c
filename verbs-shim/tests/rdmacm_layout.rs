//! The rdma_cm bindings (src/ffi/rdmacm_bindings.rs) have the layout of the
//! installed <rdma/rdma_cma.h>: sizeof and offsetof of the structures
//! librdmacm programs share with us, from the C compiler and from Rust.

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
#[allow(
    clippy::all,
    clippy::undocumented_unsafe_blocks,
    unsafe_op_in_unsafe_fn,
    unnecessary_transmutes
)]
#[rustfmt::skip]
#[path = "../src/ffi/rdmacm_bindings.rs"]
mod rdmacm_bindings;
use rdmacm_bindings::*;
use std::mem::offset_of;

#[test]
fn rdmacm_bindings_match_the_c_headers() {
    // Anonymous unions are named as C names their members.
    let (rust, body) = layouts! {
        rdma_event_channel { fd }
        rdma_cm_id { verbs, channel, context, qp, route, ps, port_num, event, send_cq_channel, send_cq, recv_cq_channel, recv_cq, srq, pd, qp_type }
        rdma_route { addr, path_rec, num_paths }
        rdma_addr { addr }
        rdma_ib_addr { sgid, dgid, pkey }
        rdma_conn_param { private_data, private_data_len, responder_resources, initiator_depth, flow_control, retry_count, rnr_retry_count, srq, qp_num }
        rdma_ud_param { private_data, private_data_len, ah_attr, qp_num, qkey }
        rdma_cm_event { id, listen_id, event, status, param }
        rdma_addrinfo { ai_flags, ai_family, ai_qp_type, ai_port_space, ai_src_len, ai_dst_len, ai_src_addr, ai_dst_addr, ai_src_canonname, ai_dst_canonname, ai_route_len, ai_route, ai_connect_len, ai_connect, ai_next }
        rdma_cm_join_mc_attr_ex { comp_mask, join_flags, addr }
        ibv_sa_path_rec { dgid, sgid, dlid, slid, raw_traffic, flow_label, hop_limit, traffic_class, reversible, numb_path, pkey, sl, mtu_selector, mtu, rate_selector, rate, packet_life_time_selector, packet_life_time, preference }
    };
    // The anonymous unions' members, by the C names.
    let extra = [
        (
            "offsetof rdma_cm_id.route.addr.src_addr",
            offset_of!(rdma_cm_id, route.addr.__bindgen_anon_1),
        ),
        (
            "offsetof rdma_cm_id.route.addr.dst_addr",
            offset_of!(rdma_cm_id, route.addr.__bindgen_anon_2),
        ),
        (
            "offsetof rdma_cm_id.route.addr.addr.ibaddr",
            offset_of!(rdma_cm_id, route.addr.addr),
        ),
        (
            "offsetof rdma_cm_event.param.conn",
            offset_of!(rdma_cm_event, param),
        ),
        (
            "offsetof rdma_cm_event.param.ud",
            offset_of!(rdma_cm_event, param),
        ),
    ];
    let mut rust = rust;
    let mut body = body;
    for (k, v) in extra {
        rust.push((k.to_string(), v));
        let (ty, field) = k.trim_start_matches("offsetof ").split_once('.').unwrap();
        body += &format!("  printf(\"{k} %zu\\n\", offsetof(struct {ty}, {field}));\n");
    }
    let Some(r) = layout_check::compare_with_c(
        "rdmacm-layout",
        "rdma/rdma_cma.h",
        "librdmacm-dev",
        &body,
        &rust,
    ) else {
        return;
    };
    // Guards on the comparison itself: sizes measured on rdma-core 44.
    for (k, v) in [
        ("sizeof rdma_cm_id", 416),
        ("sizeof rdma_cm_event", 80),
        ("sizeof rdma_conn_param", 24),
        ("sizeof rdma_addrinfo", 96),
    ] {
        assert!(r.contains(&format!("{k} {v}")), "{k} is not {v}: {r:#?}");
    }
}
