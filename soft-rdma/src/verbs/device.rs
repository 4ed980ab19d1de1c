//! `ibv_context`: opening a device, its attributes, GIDs, counters and
//! asynchronous events. The device itself is `crate::device`.

use super::{Errno, Gid, Mtu, Result};
use crate::device::{stats, DeviceInner, Running};
use crate::limits::{
    GID_TBL_LEN, MAX_CQE, MAX_INLINE, MAX_MCAST_GRP, MAX_MCAST_QP_ATTACH, MAX_MR, MAX_MSG, MAX_MW,
    MAX_QP, MAX_QP_WR, MAX_RD_ATOMIC, MAX_SGE, MAX_TOT_MCAST_QP_ATTACH,
};
use crate::transport::{self, Link};
use std::net::SocketAddr;
use std::sync::Arc;

/// `ibv_device_attr` (the part programs look at).
#[derive(Debug, Clone)]
pub struct DeviceAttr {
    pub fw_ver: &'static str,
    pub node_guid: u64,
    pub vendor_id: u32,
    pub max_qp: usize,
    pub max_qp_wr: u32,
    pub max_sge: u32,
    pub max_cq: usize,
    pub max_cqe: usize,
    pub max_mr: usize,
    /// Memory windows, type 1 and type 2B.
    pub max_mw: usize,
    pub max_mr_size: u64,
    pub max_qp_rd_atom: u8,
    pub max_qp_init_rd_atom: u8,
    pub max_inline: u32,
    pub max_msg: u64,
    pub phys_port_cnt: u8,
    pub odp: OdpCaps,
    /// XRC domains, SRQs and QPs (`IBV_DEVICE_XRC`).
    pub xrc: bool,
    pub placement: PlacementCaps,
    /// Multicast groups, QPs a group, attachments in all (rxe's).
    pub max_mcast_grp: usize,
    pub max_mcast_qp_attach: usize,
    pub max_total_mcast_qp_attach: usize,
}

/// The memory placement extensions the device offers (the
/// `IB_UVERBS_DEVICE_ATOMIC_WRITE` / `FLUSH_GLOBAL` / `FLUSH_PERSISTENT`
/// capability bits).
#[derive(Debug, Clone, Copy)]
pub struct PlacementCaps {
    pub atomic_write: bool,
    pub flush_global: bool,
    /// Never: no memory of this device is persistent (rxe announces it and
    /// then refuses every MR whose pages are not pmem).
    pub flush_persistent: bool,
}

/// `ibv_odp_caps`: explicit and implicit ODP for RC (all ops) and UD
/// (SEND/RECV); `xrc` is `ibv_device_attr_ex`'s `xrc_odp_caps` (RC's).
#[derive(Debug, Clone, Copy)]
pub struct OdpCaps {
    pub general: u64,
    pub rc: u32,
    pub uc: u32,
    pub ud: u32,
    pub xrc: u32,
}

/// `ibv_port_attr` (the part programs look at).
#[derive(Debug, Clone)]
pub struct PortAttr {
    pub state_active: bool,
    pub max_mtu: Mtu,
    pub active_mtu: Mtu,
    pub gid_tbl_len: u32,
    pub lid: u16,
}

/// An open device (`ibv_context`). Dropping it stops its threads.
pub struct Device(Running);

/// Asks the device's link whether the device a GID names is gone: known
/// only for a device of this host the link had a shared-memory ring to,
/// whose endpoint closed (its process ended). What a CM may use to notice
/// a killed peer before its probes time out; false means "not known".
#[derive(Clone)]
pub struct PeerWatch(Arc<DeviceInner>);

impl PeerWatch {
    pub fn gone(&self, peer: Gid) -> bool {
        self.0.link.peer_gone(SocketAddr::new(
            peer.device_ip(),
            crate::transport::ROCE_PORT,
        ))
    }
}

impl Device {
    /// Open a device on the address the documented rule picks
    /// (`SOFTRDMA_ADDR`, else a per-process loopback address), injecting the
    /// faults `SOFTRDMA_FAULTS` names on receive, recording to `SOFTRDMA_PCAP`
    /// if set.
    pub fn open() -> std::io::Result<Device> {
        // Parse the fault spec before binding: a bad one is the error to report.
        if let Ok(spec) = std::env::var(transport::faults::ENV) {
            spec.parse::<transport::FaultConfig>()?;
        }
        let link = transport::addr::bind_default()?;
        // The capture (outermost) records what the device receives, after the faults.
        let link = transport::faults::from_env(Box::new(link))?;
        let link = transport::pcap::from_env(link)?;
        Ok(Device(Running::start(Arc::from(link))?))
    }

    /// Open a device on a given link (tests: loopback hubs, fault injection).
    /// Panics if its threads or descriptors cannot be had ([`Device::open`]
    /// returns that error).
    pub fn with_link(link: Arc<dyn Link>) -> Device {
        Device(Running::start(link).expect("start a device"))
    }

    pub(crate) fn inner(&self) -> &Arc<DeviceInner> {
        &self.0.inner
    }

    pub fn name(&self) -> &'static str {
        "softrdma0"
    }

    /// A handle that tells whether a peer device is known to be gone
    /// ([`PeerWatch`]); it keeps the device's state, not its threads.
    pub fn peer_watch(&self) -> PeerWatch {
        PeerWatch(self.inner().clone())
    }

    /// The local endpoint; its IP is GID index 1.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner().local
    }

    /// The GID table, as rxe's (RoCE v2 only: rxe's port is
    /// `RDMA_CORE_PORT_IBA_ROCE_UDP_ENCAP`, so ib_core adds no RoCE v1
    /// entries): 0 = the link-local GID (`fe80::` + the address's low 64
    /// bits; `Gid::device_ip` maps it back), 1 = the endpoint's address
    /// (IPv4-mapped for IPv4). Indexes 2..`gid_tbl_len` are empty
    /// (`ENODATA`, the kernel's answer for an unset entry); beyond the table
    /// `EINVAL`. Every entry is of type RoCE v2.
    pub fn gid(&self, index: u32) -> Result<Gid> {
        let gid = self.inner().gid;
        match index {
            0 => {
                let mut g = [0u8; 16];
                g[0] = 0xfe;
                g[1] = 0x80;
                g[8..].copy_from_slice(&gid.0[8..]);
                Ok(Gid(g))
            }
            1 => Ok(gid),
            i if i < GID_TBL_LEN => Err(Errno::ENODATA),
            _ => Err(Errno::EINVAL),
        }
    }

    /// The populated GID entries, by index (`ibv_query_gid_table`).
    pub fn gids(&self) -> Vec<(u32, Gid)> {
        (0..2)
            .filter_map(|i| Some((i, self.gid(i).ok()?)))
            .collect()
    }

    pub fn attr(&self) -> DeviceAttr {
        let g = self.inner().gid.0;
        DeviceAttr {
            fw_ver: "0.1.0",
            node_guid: u64::from_be_bytes([
                g[10] ^ 0x02,
                g[11],
                g[12],
                0xff,
                0xfe,
                g[13],
                g[14],
                g[15],
            ]),
            vendor_id: 0xffffff,
            max_qp: MAX_QP,
            max_qp_wr: MAX_QP_WR,
            max_sge: MAX_SGE,
            max_cq: MAX_QP,
            max_cqe: MAX_CQE,
            max_mr: MAX_MR,
            max_mw: MAX_MW,
            max_mr_size: u64::MAX,
            max_qp_rd_atom: MAX_RD_ATOMIC,
            max_qp_init_rd_atom: MAX_RD_ATOMIC,
            max_inline: MAX_INLINE,
            max_msg: MAX_MSG,
            phys_port_cnt: 1,
            xrc: true,
            odp: OdpCaps {
                general: 1 | 2,
                // SEND, RECV, WRITE, READ, ATOMIC, SRQ_RECV, FLUSH, ATOMIC_WRITE
                rc: 1 | 2 | 4 | 8 | 16 | 32 | 64 | 128,
                uc: 1 | 2 | 4 | 32,
                ud: 1 | 2 | 32,
                xrc: 1 | 2 | 4 | 8 | 16 | 32,
            },
            max_mcast_grp: MAX_MCAST_GRP,
            max_mcast_qp_attach: MAX_MCAST_QP_ATTACH,
            max_total_mcast_qp_attach: MAX_TOT_MCAST_QP_ATTACH,
            placement: PlacementCaps {
                atomic_write: true,
                flush_global: true,
                flush_persistent: false,
            },
        }
    }

    /// Active MTU: packets leave with DF set, so they must fit the interface
    /// the device's address is on — the largest IB MTU not above its MTU
    /// minus 80 header bytes, as rxe: 4096 on `lo` (65536) or a 9000-byte
    /// link, 1024 on 1500-byte Ethernet; 1024 if the interface is unknown.
    pub fn port_attr(&self) -> PortAttr {
        PortAttr {
            state_active: true,
            max_mtu: Mtu::M4096,
            active_mtu: self.inner().active_mtu,
            gid_tbl_len: GID_TBL_LEN,
            lid: 0,
        }
    }

    /// Every counter now: the device's, the link's, the ODP regions', the
    /// fault injector's. `Display` prints a counters table.
    pub fn stats(&self) -> super::DeviceStats {
        stats::snapshot(self.inner())
    }

    /// The file this device's counters are published in (`softrdma stats`),
    /// if publishing is on.
    pub fn stats_path(&self) -> Option<&std::path::Path> {
        self.0.published.as_deref()
    }

    /// How the ODP regions learn about unmaps (userfaultfd or fallback).
    pub fn odp_source(&self) -> odp::InvalidationSource {
        self.inner().mm.source().clone()
    }

    /// `ibv_get_async_event`, non-blocking; wait for [`Device::async_fd`] to
    /// become readable to block.
    pub fn get_async_event(&self) -> Option<super::AsyncEvent> {
        self.inner().events.pop()
    }

    /// The descriptor that is readable while async events are queued.
    pub fn async_fd(&self) -> std::os::fd::RawFd {
        self.inner().events.fd()
    }

    /// Tests only: the QPN and MR key index (the key's upper 24 bits) the
    /// next creations try first, to drive the counters to their wrap.
    #[doc(hidden)]
    pub fn set_next_ids(&self, qpn: u32, mr_index: u32) {
        self.inner().set_next_ids(qpn, mr_index);
    }

    pub fn alloc_pd(&self) -> super::Pd {
        super::Pd::new(self.inner().clone())
    }
}
