//! The rest of the ABI: entry points the soft device does not implement
//! (yet), answering as the real library does for a device without the
//! feature — never crashing. Arguments are ignored, so the stubs take none
//! (the C calling convention lets a callee ignore its arguments).
//!
//! - `int` verbs that return an errno: `EOPNOTSUPP`;
//! - pointer verbs: `NULL` with `errno = EOPNOTSUPP`;
//! - `void` ones: nothing.
//!
//! The `ibv_cmd_*`, `execute_ioctl`, `verbs_*` and `_verbs_*` symbols are
//! rdma-core's provider interface (IBVERBS_PRIVATE_34): providers such as
//! libmlx5 and libefa, which perftest links, import them. No provider is ever
//! asked to open a device here, so none of them is called in practice.

use crate::ffi::*;

macro_rules! errno_int {
    ($($name:ident),* $(,)?) => {$(
        pub extern "C" fn $name() -> c_int {
            libc::EOPNOTSUPP
        }
    )*};
}

macro_rules! null_ptr {
    ($($name:ident),* $(,)?) => {$(
        pub extern "C" fn $name() -> *mut c_void {
            fail_null(libc::EOPNOTSUPP)
        }
    )*};
}

macro_rules! nothing {
    ($($name:ident),* $(,)?) => {$(
        pub extern "C" fn $name() {}
    )*};
}

errno_int!(
    shim_ibv_query_ece,
    shim_ibv_set_ece,
    shim_ibv_resolve_eth_l2_from_gid,
    shim_execute_ioctl,
    shim_ibv_cmd_advise_mr,
    shim_ibv_cmd_alloc_dm,
    shim_ibv_cmd_alloc_mw,
    shim_ibv_cmd_alloc_pd,
    shim_ibv_cmd_attach_mcast,
    shim_ibv_cmd_close_xrcd,
    shim_ibv_cmd_create_ah,
    shim_ibv_cmd_create_counters,
    shim_ibv_cmd_create_cq,
    shim_ibv_cmd_create_cq_ex,
    shim_ibv_cmd_create_flow,
    shim_ibv_cmd_create_flow_action_esp,
    shim_ibv_cmd_create_qp,
    shim_ibv_cmd_create_qp_ex,
    shim_ibv_cmd_create_qp_ex2,
    shim_ibv_cmd_create_rwq_ind_table,
    shim_ibv_cmd_create_srq,
    shim_ibv_cmd_create_srq_ex,
    shim_ibv_cmd_create_wq,
    shim_ibv_cmd_dealloc_mw,
    shim_ibv_cmd_dealloc_pd,
    shim_ibv_cmd_dereg_mr,
    shim_ibv_cmd_destroy_ah,
    shim_ibv_cmd_destroy_counters,
    shim_ibv_cmd_destroy_cq,
    shim_ibv_cmd_destroy_flow,
    shim_ibv_cmd_destroy_flow_action,
    shim_ibv_cmd_destroy_qp,
    shim_ibv_cmd_destroy_rwq_ind_table,
    shim_ibv_cmd_destroy_srq,
    shim_ibv_cmd_destroy_wq,
    shim_ibv_cmd_detach_mcast,
    shim_ibv_cmd_free_dm,
    shim_ibv_cmd_get_context,
    shim_ibv_cmd_modify_cq,
    shim_ibv_cmd_modify_flow_action_esp,
    shim_ibv_cmd_modify_qp,
    shim_ibv_cmd_modify_qp_ex,
    shim_ibv_cmd_modify_srq,
    shim_ibv_cmd_modify_wq,
    shim_ibv_cmd_open_qp,
    shim_ibv_cmd_open_xrcd,
    shim_ibv_cmd_poll_cq,
    shim_ibv_cmd_post_recv,
    shim_ibv_cmd_post_send,
    shim_ibv_cmd_post_srq_recv,
    shim_ibv_cmd_query_context,
    shim_ibv_cmd_query_device_any,
    shim_ibv_cmd_query_mr,
    shim_ibv_cmd_query_port,
    shim_ibv_cmd_query_qp,
    shim_ibv_cmd_query_srq,
    shim_ibv_cmd_read_counters,
    shim_ibv_cmd_reg_dm_mr,
    shim_ibv_cmd_reg_dmabuf_mr,
    shim_ibv_cmd_reg_mr,
    shim_ibv_cmd_req_notify_cq,
    shim_ibv_cmd_rereg_mr,
    shim_ibv_cmd_resize_cq,
);

null_ptr!(
    shim_ibv_import_dm,
    shim_ibv_reg_dmabuf_mr,
    shim__verbs_init_and_alloc_context,
    shim_verbs_open_device,
);

nothing!(
    shim_ibv_copy_path_rec_from_kern,
    shim_ibv_copy_path_rec_to_kern,
    shim_ibv_copy_qp_attr_from_kern,
    shim_ibv_copy_ah_attr_from_kern,
    shim_ibv_unimport_dm,
    shim___verbs_log,
    shim_verbs_init_cq,
    shim_verbs_set_ops,
    shim_verbs_uninit_context,
    // Providers' constructors register themselves; there is nothing to
    // register with (the only device is the soft one).
    shim_verbs_register_driver_34,
);

/// `__ioctl_final_num_attrs(num_attrs, link)`: the attribute count unchanged.
pub extern "C" fn shim___ioctl_final_num_attrs(num_attrs: c_uint, _link: *mut c_void) -> c_uint {
    num_attrs
}

/// No sysfs: every file is missing.
pub extern "C" fn shim_ibv_read_sysfs_file(
    _dir: *const c_char,
    _file: *const c_char,
    _buf: *mut c_char,
    _size: usize,
) -> c_int {
    set_errno(libc::ENOENT);
    -1
}

pub extern "C" fn shim_ibv_read_ibdev_sysfs_file() -> c_int {
    set_errno(libc::ENOENT);
    -1
}

pub extern "C" fn shim_ibv_get_sysfs_path() -> *const c_char {
    std::ptr::null()
}

/// The soft device reaches memory through virtual addresses (ODP-style even
/// for pinned MRs), so fork needs no madvise(DONTFORK): 0 and "unneeded".
pub extern "C" fn shim_ibv_fork_init() -> c_int {
    0
}

pub extern "C" fn shim_ibv_is_fork_initialized() -> ibv_fork_status {
    IBV_FORK_UNNEEDED
}

pub extern "C" fn shim_ibv_dontfork_range() -> c_int {
    0
}

pub extern "C" fn shim_ibv_dofork_range() -> c_int {
    0
}

/// Whether data of `op` lands in order: 0, "not guaranteed" (the answer for
/// a device that does not say).
pub extern "C" fn shim_ibv_query_qp_data_in_order() -> c_int {
    0
}
