//! `ibv_context` (inside a full `verbs_context`): open/close, the queries
//! (device, port, GID, P_Key) and asynchronous events.

use crate::conv;
use crate::device;
use crate::ffi::*;
use crate::registry;
use soft_rdma::verbs::{AsyncEvent, Device};
use std::mem::{offset_of, size_of};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

/// An open device. `vctx` must come first; programs get `&vctx.context`.
#[repr(C)]
pub struct ShimContext {
    pub vctx: verbs_context,
    pub dev: Arc<Device>,
    /// The command file this context's objects belong to (`import.rs`).
    pub file: Arc<crate::import::CmdFile>,
    /// `cmd_fd`, closed with the context.
    _cmd: OwnedFd,
    /// The fork generation `dev` belongs to (`device.rs`).
    gen: u32,
}

// The C pointer converts back to the wrapper with a cast: the C struct comes first.
const _: () = assert!(std::mem::offset_of!(ShimContext, vctx) == 0);

impl ShimContext {
    /// Recover the wrapper from the `ibv_context` pointer we handed out.
    ///
    /// # Safety
    /// `ctx` must be a live context returned by `ibv_open_device`.
    pub unsafe fn from_c<'a>(ctx: *mut ibv_context) -> &'a ShimContext {
        // SAFETY: (caller) `ctx` points at `vctx.context` of a live ShimContext,
        // which sits at this fixed offset from the wrapper's start.
        unsafe {
            &*((ctx as *mut u8).sub(offset_of!(verbs_context, context)) as *const ShimContext)
        }
    }

    pub fn c_ptr(&self) -> *mut ibv_context {
        &self.vctx.context as *const ibv_context as *mut ibv_context
    }
}

/// What an object made before this process forked fails with: its device
/// is the parent's, which this process has no threads of and must not send
/// on. ENODEV rather than EINVAL: the arguments are well-formed, it is the
/// device behind them that is not there (as for an open that finds none).
pub const FORKED: c_int = libc::ENODEV;

/// Whether `ctx` (an object's `context`) belongs to an older fork
/// generation than this process's, i.e. to the parent's device. A load and
/// a compare: cheap enough for the data path.
///
/// # Safety
/// `ctx` is NULL or a context from `ibv_open_device` that was never closed
/// (in this process or before a fork).
pub unsafe fn forked_away(ctx: *const ibv_context) -> bool {
    // SAFETY: (caller) a live context, or NULL (not ours to judge).
    !ctx.is_null() && unsafe { ShimContext::from_c(ctx as *mut _) }.gen != device::generation()
}

/// Largest `ibv_query_device` values that fit a C `int`.
fn int(v: usize) -> c_int {
    v.min(c_int::MAX as usize) as c_int
}

pub fn device_attr(dev: &Device) -> ibv_device_attr {
    let a = dev.attr();
    let mut d = ibv_device_attr {
        node_guid: a.node_guid.to_be(),
        sys_image_guid: a.node_guid.to_be(),
        max_mr_size: a.max_mr_size,
        page_size_cap: 0xffff_f000,
        vendor_id: a.vendor_id,
        vendor_part_id: 0,
        hw_ver: 0,
        max_qp: int(a.max_qp),
        max_qp_wr: a.max_qp_wr as c_int,
        device_cap_flags: IBV_DEVICE_PORT_ACTIVE_EVENT
            | IBV_DEVICE_SYS_IMAGE_GUID
            | IBV_DEVICE_RC_RNR_NAK_GEN
            | IBV_DEVICE_MEM_WINDOW
            | IBV_DEVICE_MEM_WINDOW_TYPE_2B
            | if a.xrc { IBV_DEVICE_XRC } else { 0 },
        max_sge: a.max_sge as c_int,
        max_sge_rd: a.max_sge as c_int,
        max_cq: int(a.max_cq),
        max_cqe: int(a.max_cqe),
        max_mr: int(a.max_mr),
        max_mw: int(a.max_mw),
        max_pd: int(a.max_qp),
        max_qp_rd_atom: a.max_qp_rd_atom.into(),
        max_res_rd_atom: int(a.max_qp),
        max_qp_init_rd_atom: a.max_qp_init_rd_atom.into(),
        atomic_cap: IBV_ATOMIC_HCA,
        max_ah: int(a.max_qp),
        max_srq: int(a.max_qp),
        max_srq_wr: a.max_qp_wr as c_int,
        max_srq_sge: a.max_sge as c_int,
        max_pkeys: 1,
        max_mcast_grp: int(a.max_mcast_grp),
        max_mcast_qp_attach: int(a.max_mcast_qp_attach),
        max_total_mcast_qp_attach: int(a.max_total_mcast_qp_attach),
        local_ca_ack_delay: 15,
        phys_port_cnt: a.phys_port_cnt,
        ..Default::default()
    };
    put_cstr(&mut d.fw_ver, a.fw_ver);
    d
}

pub fn device_attr_ex(dev: &Device) -> ibv_device_attr_ex {
    let a = dev.attr();
    let mut x = ibv_device_attr_ex {
        orig_attr: device_attr(dev),
        phys_port_cnt_ex: a.phys_port_cnt.into(),
        ..Default::default()
    };
    x.odp_caps.general_caps = a.odp.general;
    x.odp_caps.per_transport_caps.rc_odp_caps = a.odp.rc;
    x.odp_caps.per_transport_caps.uc_odp_caps = a.odp.uc;
    x.odp_caps.per_transport_caps.ud_odp_caps = a.odp.ud;
    x.device_cap_flags_ex = u64::from(x.orig_attr.device_cap_flags) | placement_caps(&a.placement);
    x.xrc_odp_caps = a.odp.xrc;
    x
}

/// `device_cap_flags_ex`'s memory placement bits.
fn placement_caps(p: &soft_rdma::verbs::PlacementCaps) -> u64 {
    use crate::placement_abi::*;
    [
        (p.atomic_write, IB_UVERBS_DEVICE_ATOMIC_WRITE),
        (p.flush_global, IB_UVERBS_DEVICE_FLUSH_GLOBAL),
        (p.flush_persistent, IB_UVERBS_DEVICE_FLUSH_PERSISTENT),
    ]
    .into_iter()
    .filter_map(|(on, bit)| on.then_some(bit))
    .fold(0, |a, b| a | b)
}

pub fn port_attr(dev: &Device) -> ibv_port_attr {
    let p = dev.port_attr();
    ibv_port_attr {
        state: if p.state_active {
            IBV_PORT_ACTIVE
        } else {
            IBV_PORT_DOWN
        },
        max_mtu: conv::mtu_to_c(p.max_mtu),
        active_mtu: conv::mtu_to_c(p.active_mtu),
        gid_tbl_len: p.gid_tbl_len as c_int,
        port_cap_flags: IBV_PORT_CM_SUP,
        max_msg_sz: dev.attr().max_msg.min(u32::MAX.into()) as u32,
        pkey_tbl_len: 1,
        lid: p.lid,
        max_vl_num: 1,
        active_width: 2,  // 4X
        active_speed: 32, // EDR
        phys_state: 5,    // LinkUp
        link_layer: IBV_LINK_LAYER_ETHERNET as u8,
        ..Default::default()
    }
}

/// Copy `v` into a caller's struct of `size` bytes (callers built with older
/// headers pass smaller ones).
///
/// # Safety
/// `dst` must be valid for `size` bytes.
unsafe fn copy_sized<T>(v: &T, dst: *mut T, size: usize) {
    // SAFETY: (caller) dst is valid for `size` bytes; we copy at most the
    // smaller of the two sizes.
    unsafe {
        std::ptr::copy_nonoverlapping(
            v as *const T as *const u8,
            dst as *mut u8,
            size.min(size_of::<T>()),
        )
    };
}

pub unsafe extern "C" fn shim_ibv_open_device(dev: *mut ibv_device) -> *mut ibv_context {
    if !device::is_ours(dev) {
        return fail_null(libc::ENODEV);
    }
    let (file, fd) = match crate::import::new_file() {
        Ok(f) => f,
        Err(e) => return fail_null(e),
    };
    match new_context(file, fd) {
        Ok(c) => c,
        Err(e) => fail_null(e),
    }
}

/// A context of the process's device on command file `file`, whose
/// descriptor `cmd` it owns (`ibv_open_device`, `ibv_import_device`).
pub fn new_context(
    file: Arc<crate::import::CmdFile>,
    cmd: OwnedFd,
) -> Result<*mut ibv_context, i32> {
    let soft = match device::soft() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("softrdma: cannot open the device: {e}");
            return Err(device::open_errno(&e));
        }
    };
    let mut vctx = verbs_context {
        sz: size_of::<verbs_context>(),
        ..Default::default()
    };
    vctx.query_port = Some(query_port_op);
    vctx.query_device_ex = Some(query_device_ex_op);
    vctx.advise_mr = Some(crate::mr::advise_mr_op);
    vctx.create_qp_ex = Some(crate::qp::create_qp_ex_op);
    vctx.create_cq_ex = Some(crate::cq::create_cq_ex_op);
    crate::xrc::set_ops(&mut vctx);
    vctx.alloc_parent_domain = Some(crate::pd::alloc_parent_domain_op);
    let c = &mut vctx.context;
    c.device = device::c_device();
    c.cmd_fd = cmd.as_raw_fd();
    c.async_fd = soft.async_fd();
    c.num_comp_vectors = 1;
    c.abi_compat = usize::MAX as *mut c_void;
    c.ops.poll_cq = Some(crate::cq::poll_cq_op);
    c.ops.req_notify_cq = Some(crate::cq::req_notify_cq_op);
    c.ops.post_send = Some(crate::qp::post_send_op);
    c.ops.post_recv = Some(crate::qp::post_recv_op);
    c.ops.post_srq_recv = Some(crate::srq::post_srq_recv_op);
    c.ops.alloc_mw = Some(crate::mw::alloc_mw_op);
    c.ops.dealloc_mw = Some(crate::mw::dealloc_mw_op);
    c.ops.bind_mw = Some(crate::mw::bind_mw_op);
    let ctx = Box::into_raw(Box::new(ShimContext {
        vctx,
        dev: soft,
        file,
        _cmd: cmd,
        gen: device::generation(),
    }));
    // SAFETY: just allocated; the context lives until ibv_close_device.
    Ok(unsafe { (*ctx).c_ptr() })
}

pub unsafe extern "C" fn shim_ibv_close_device(ctx: *mut ibv_context) -> c_int {
    if ctx.is_null() {
        return libc::EINVAL;
    }
    // SAFETY: a live context from ibv_open_device; closing ends its life.
    let w = unsafe { ShimContext::from_c(ctx) } as *const ShimContext as *mut ShimContext;
    // SAFETY: `w` is the Box allocated in ibv_open_device.
    drop(unsafe { Box::from_raw(w) });
    0
}

pub unsafe extern "C" fn shim_ibv_query_device(
    ctx: *mut ibv_context,
    attr: *mut ibv_device_attr,
) -> c_int {
    if ctx.is_null() || attr.is_null() {
        return libc::EINVAL;
    }
    // SAFETY: live context; `attr` points to a caller's ibv_device_attr.
    unsafe { *attr = device_attr(&ShimContext::from_c(ctx).dev) };
    0
}

unsafe extern "C" fn query_device_ex_op(
    ctx: *mut ibv_context,
    input: *const ibv_query_device_ex_input,
    attr: *mut ibv_device_attr_ex,
    attr_size: usize,
) -> c_int {
    // SAFETY: `input` is NULL or a valid input struct from the caller.
    if !input.is_null() && unsafe { (*input).comp_mask } != 0 {
        return libc::EINVAL;
    }
    if attr.is_null() || attr_size < size_of::<ibv_device_attr>() {
        return libc::EINVAL;
    }
    // SAFETY: live context; `attr` is valid for `attr_size` bytes.
    unsafe {
        copy_sized(
            &device_attr_ex(&ShimContext::from_c(ctx).dev),
            attr,
            attr_size,
        )
    };
    0
}

unsafe extern "C" fn query_port_op(
    ctx: *mut ibv_context,
    port: u8,
    attr: *mut ibv_port_attr,
    len: usize,
) -> c_int {
    if port != 1 || attr.is_null() {
        return libc::EINVAL;
    }
    // SAFETY: live context; `attr` is valid for `len` bytes.
    unsafe { copy_sized(&port_attr(&ShimContext::from_c(ctx).dev), attr, len) };
    0
}

/// The exported `ibv_query_port` takes `struct _compat_ibv_port_attr`
/// (opaque in the header; in rdma-core it is `ibv_port_attr` up to `flags`,
/// i.e. everything before `port_cap_flags2`). `___ibv_query_port` only calls
/// it when the context has no `query_port` op, and ours has one.
pub unsafe extern "C" fn shim_ibv_query_port(
    ctx: *mut ibv_context,
    port: u8,
    attr: *mut _compat_ibv_port_attr,
) -> c_int {
    if ctx.is_null() {
        return libc::EINVAL;
    }
    // SAFETY: forwards the caller's pointers with the compat struct's size.
    unsafe {
        query_port_op(
            ctx,
            port,
            attr as *mut ibv_port_attr,
            offset_of!(ibv_port_attr, port_cap_flags2),
        )
    }
}

/// `ibv_query_gid`: an empty entry of the table reads as the zero GID (as
/// its sysfs file does); an index beyond the table fails (EINVAL).
pub unsafe extern "C" fn shim_ibv_query_gid(
    ctx: *mut ibv_context,
    port: u8,
    index: c_int,
    gid: *mut ibv_gid,
) -> c_int {
    if ctx.is_null() || gid.is_null() || port != 1 || index < 0 {
        set_errno(libc::EINVAL);
        return -1;
    }
    // SAFETY: live context.
    let g = match unsafe { ShimContext::from_c(ctx) }.dev.gid(index as u32) {
        Ok(g) => conv::gid_to_c(g),
        Err(e) if e.0 == libc::ENODATA => ibv_gid::default(),
        Err(e) => {
            set_errno(e.0);
            return -1;
        }
    };
    // SAFETY: `gid` points to a caller's ibv_gid.
    unsafe { *gid = g };
    0
}

/// rdma-core's `enum ibv_gid_type_sysfs` (driver.h, not installed).
type IbvGidTypeSysfs = c_uint;
const IBV_GID_TYPE_SYSFS_ROCE_V2: IbvGidTypeSysfs = 1;

/// A populated entry (all RoCE v2, as rxe's: see `Device::gid`); ENODATA
/// for an empty one, EINVAL beyond the table.
fn gid_entry(dev: &Device, index: u32) -> Result<ibv_gid_entry, i32> {
    let g = dev.gid(index).map_err(|e| e.0)?;
    Ok(ibv_gid_entry {
        gid: conv::gid_to_c(g),
        gid_index: index,
        port_num: 1,
        gid_type: IBV_GID_TYPE_ROCE_V2,
        ndev_ifindex: ifindex_of(dev.local_addr().ip()),
    })
}

/// The index of the network interface holding `ip` (the GID's netdev), 0
/// if none does.
fn ifindex_of(ip: std::net::IpAddr) -> u32 {
    // The device's socket may be IPv6 with an IPv4-mapped address.
    let ip = match ip {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
        v4 => v4,
    };
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list freed below.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return 0;
    }
    let mut found = 0;
    let mut p = list;
    while !p.is_null() {
        // SAFETY: a node of the list getifaddrs returned, live until freed;
        // its address is NULL or a sockaddr of the family it states.
        let (a, name, next) = unsafe { ((*p).ifa_addr, (*p).ifa_name, (*p).ifa_next) };
        // SAFETY: as above: `a` is checked for NULL and read per its family.
        let addr = unsafe {
            match a.as_ref().map(|a| a.sa_family as i32) {
                Some(libc::AF_INET) => {
                    let sin = &*(a as *const libc::sockaddr_in);
                    Some(std::net::IpAddr::from(
                        u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                    ))
                }
                Some(libc::AF_INET6) => {
                    let sin6 = &*(a as *const libc::sockaddr_in6);
                    Some(std::net::IpAddr::from(sin6.sin6_addr.s6_addr))
                }
                _ => None,
            }
        };
        if addr == Some(ip) {
            // SAFETY: the node's NUL-terminated interface name.
            found = unsafe { libc::if_nametoindex(name) };
            break;
        }
        p = next;
    }
    // SAFETY: the list from getifaddrs, freed once.
    unsafe { libc::freeifaddrs(list) };
    if found == 0 && ip.is_loopback() {
        // The per-process 127.A.B.C addresses are local through `lo`,
        // which lists only 127.0.0.1.
        // SAFETY: a NUL-terminated name.
        found = unsafe { libc::if_nametoindex(c"lo".as_ptr()) };
    }
    found
}

/// `_ibv_query_gid_ex`: returns the errno (and sets it: programs such as
/// ibv_devinfo test `errno == ENODATA` to skip empty entries).
pub unsafe extern "C" fn shim__ibv_query_gid_ex(
    ctx: *mut ibv_context,
    port: u32,
    index: u32,
    entry: *mut ibv_gid_entry,
    flags: u32,
    entry_size: usize,
) -> c_int {
    if ctx.is_null()
        || entry.is_null()
        || flags != 0
        || port != 1
        || entry_size < size_of::<ibv_gid_entry>()
    {
        set_errno(libc::EINVAL);
        return libc::EINVAL;
    }
    // SAFETY: live context.
    match gid_entry(&unsafe { ShimContext::from_c(ctx) }.dev, index) {
        Ok(e) => {
            // SAFETY: `entry` is valid for at least one ibv_gid_entry.
            unsafe { *entry = e };
            0
        }
        Err(e) => {
            set_errno(e);
            e
        }
    }
}

/// `_ibv_query_gid_table`: the populated entries only; EINVAL when `max`
/// cannot hold them all (as the kernel's `rdma_query_gid_table`).
pub unsafe extern "C" fn shim__ibv_query_gid_table(
    ctx: *mut ibv_context,
    entries: *mut ibv_gid_entry,
    max: usize,
    flags: u32,
    entry_size: usize,
) -> isize {
    if ctx.is_null() || flags != 0 || entry_size < size_of::<ibv_gid_entry>() {
        return -(libc::EINVAL as isize);
    }
    // SAFETY: live context.
    let dev = &unsafe { ShimContext::from_c(ctx) }.dev;
    let gids = dev.gids();
    if max < gids.len() || (entries.is_null() && !gids.is_empty()) {
        return -(libc::EINVAL as isize);
    }
    for (slot, (i, _)) in gids.iter().enumerate() {
        let Ok(e) = gid_entry(dev, *i) else {
            return -(libc::EINVAL as isize);
        };
        // SAFETY: the caller's array holds `max` >= gids.len() entries of `entry_size`.
        unsafe { *((entries as *mut u8).add(slot * entry_size) as *mut ibv_gid_entry) = e };
    }
    gids.len() as isize
}

/// `ibv_query_gid_type`: RoCE v2 for a populated entry; -1 otherwise (an
/// empty entry's sysfs type file fails with ENODATA; beyond the table there
/// is no file).
pub unsafe extern "C" fn shim_ibv_query_gid_type(
    ctx: *mut ibv_context,
    port: u8,
    index: c_uint,
    ty: *mut IbvGidTypeSysfs,
) -> c_int {
    if ctx.is_null() || ty.is_null() || port != 1 {
        set_errno(libc::EINVAL);
        return -1;
    }
    // SAFETY: live context.
    if let Err(e) = unsafe { ShimContext::from_c(ctx) }.dev.gid(index) {
        set_errno(if e.0 == libc::ENODATA {
            e.0
        } else {
            libc::ENOENT
        });
        return -1;
    }
    // SAFETY: `ty` points to the caller's enum.
    unsafe { *ty = IBV_GID_TYPE_SYSFS_ROCE_V2 };
    0
}

pub unsafe extern "C" fn shim_ibv_query_pkey(
    ctx: *mut ibv_context,
    port: u8,
    index: c_int,
    pkey: *mut u16,
) -> c_int {
    if ctx.is_null() || pkey.is_null() || port != 1 || index != 0 {
        set_errno(libc::EINVAL);
        return -1;
    }
    // SAFETY: `pkey` points to the caller's __be16.
    unsafe { *pkey = 0xffffu16.to_be() };
    0
}

pub unsafe extern "C" fn shim_ibv_get_pkey_index(
    ctx: *mut ibv_context,
    port: u8,
    pkey: u16,
) -> c_int {
    if ctx.is_null() || port != 1 || u16::from_be(pkey) != 0xffff {
        set_errno(libc::ENOENT);
        return -1;
    }
    0
}

/// `ibv_get_async_event`: blocks in poll(2) on the context's `async_fd`
/// unless the caller made it non-blocking.
pub unsafe extern "C" fn shim_ibv_get_async_event(
    ctx: *mut ibv_context,
    event: *mut ibv_async_event,
) -> c_int {
    if ctx.is_null() || event.is_null() {
        set_errno(libc::EINVAL);
        return -1;
    }
    // The descriptor is shared with the parent: reading it here would take
    // the parent's events.
    // SAFETY: the caller's live context.
    if unsafe { forked_away(ctx) } {
        set_errno(FORKED);
        return -1;
    }
    // SAFETY: live context.
    let w = unsafe { ShimContext::from_c(ctx) };
    let fd = w.vctx.context.async_fd;
    loop {
        while let Some(ev) = w.dev.get_async_event() {
            let (ty, element) = match ev {
                AsyncEvent::QpFatal { qpn } => match registry::QPS.get::<ibv_qp>(qpn) {
                    Some(qp) => (IBV_EVENT_QP_FATAL, ibv_async_event__bindgen_ty_1 { qp }),
                    None => continue,
                },
                AsyncEvent::SrqLimitReached { srq } => match registry::SRQS.get::<ibv_srq>(srq) {
                    Some(srq) => (
                        IBV_EVENT_SRQ_LIMIT_REACHED,
                        ibv_async_event__bindgen_ty_1 { srq },
                    ),
                    None => continue,
                },
                AsyncEvent::SqDrained { qpn } => match registry::QPS.get::<ibv_qp>(qpn) {
                    Some(qp) => (IBV_EVENT_SQ_DRAINED, ibv_async_event__bindgen_ty_1 { qp }),
                    None => continue,
                },
                AsyncEvent::CqErr { cq } => match registry::CQS.get::<ibv_cq>(cq) {
                    Some(cq) => (IBV_EVENT_CQ_ERR, ibv_async_event__bindgen_ty_1 { cq }),
                    None => continue,
                },
            };
            // SAFETY: `event` points to the caller's struct.
            unsafe {
                *event = ibv_async_event {
                    element,
                    event_type: ty,
                }
            };
            return 0;
        }
        if !wait_readable(fd) {
            return -1;
        }
    }
}

/// Wait for `fd` to become readable: false (errno set) if the descriptor is
/// non-blocking and nothing is ready, or on EINTR — what read(2) would do.
pub fn wait_readable(fd: c_int) -> bool {
    // SAFETY: F_GETFL on a descriptor number; a bad one just fails.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    let timeout = if flags >= 0 && flags & libc::O_NONBLOCK != 0 {
        0
    } else {
        -1
    };
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let r = unsafe { libc::poll(&mut p, 1, timeout) };
    if r == 0 {
        set_errno(libc::EAGAIN);
        return false;
    }
    r > 0
}

pub unsafe extern "C" fn shim_ibv_ack_async_event(event: *mut ibv_async_event) {
    if event.is_null() {
        return;
    }
    // SAFETY: an event filled by ibv_get_async_event; its element is the QP or
    // SRQ it names, still alive (the application acks before destroying).
    unsafe {
        match (*event).event_type {
            IBV_EVENT_QP_FATAL => crate::qp::ack_event((*event).element.qp),
            IBV_EVENT_SRQ_LIMIT_REACHED => crate::srq::ack_event((*event).element.srq),
            _ => {}
        }
    }
}
