//! The GSI endpoint: the device's QP1 with its receive buffers, sending and
//! receiving whole MADs. It knows nothing of the CM.
//!
//! Receive buffers live in a mapping only the device writes; they are read
//! back with [`Mr::read`] (no Rust reference ever aliases the device's
//! writes). A MAD is exactly the device's inline limit, so sends are
//! inline: copied at post time, no send buffer to manage.

use crate::wire::MAD_LEN;
use odp::Mapping;
use soft_rdma::verbs::*;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicU32, Ordering};

/// Receive buffers kept posted: MADs arriving faster than the agent takes
/// them beyond this are dropped by the device, and the CM's retransmissions
/// recover them.
const RECV_SLOTS: usize = 1024;
/// Sends in flight before their completions are taken.
const SEND_DEPTH: u32 = 256;
/// UD receives start with a 40-byte GRH; the source GID is at 8..24.
const GRH_LEN: usize = 40;
const RECV_SLOT: usize = GRH_LEN + MAD_LEN;
/// Send completions carry this wr_id (receives carry their slot).
const SEND_ID: u64 = u64::MAX;
/// One send in this many asks for a completion. The device frees a send
/// slot when the send completes, not when its completion is polled, so
/// signalling every send let completions pile up past the CQ while the
/// agent was busy (cmtime's 1000 connections overflowed it).
const SIGNAL_EVERY: u32 = 64;

/// One MAD received: from whom (the GID in its GRH, and its source QP)
/// and its bytes.
pub struct Received {
    pub from: Gid,
    pub src_qp: u32,
    pub mad: [u8; MAD_LEN],
}

/// QP1 of a device and its registered receive buffers.
pub struct Gsi {
    // Dropped in this order: the QP before the MR, the MR before its memory.
    qp: Qp,
    cq: Cq,
    channel: CompChannel,
    mr: Mr,
    recv: Mapping,
    _pd: Pd,
    sends: AtomicU32,
}

impl Gsi {
    /// Creates the device's GSI QP (EBUSY when it has one), ready to send
    /// and receive.
    pub fn open(dev: &Device) -> Result<Gsi> {
        let pd = dev.alloc_pd();
        let channel = CompChannel::new()?;
        let cq = Cq::new(RECV_SLOTS + SEND_DEPTH as usize, Some(&channel))?;
        let qp = pd.create_gsi_qp(QpInitAttr {
            qp_type: QpType::Ud,
            send_cq: cq.clone(),
            recv_cq: cq.clone(),
            cap: QpCap {
                max_send_wr: SEND_DEPTH,
                max_recv_wr: RECV_SLOTS as u32,
                max_send_sge: 1,
                max_recv_sge: 1,
                max_inline_data: MAD_LEN as u32,
            },
            sq_sig_all: false,
            srq: None,
        })?;
        for state in [QpState::Init, QpState::Rtr, QpState::Rts] {
            qp.modify(&QpAttr {
                state: Some(state),
                qkey: (state == QpState::Init).then_some(GSI_QKEY),
                pkey_index: (state == QpState::Init).then_some(0),
                port_num: (state == QpState::Init).then_some(1),
                sq_psn: (state == QpState::Rts).then_some(0),
                ..QpAttr::default()
            })?;
        }
        let recv = Mapping::anon(RECV_SLOTS * RECV_SLOT).map_err(|_| Errno::ENOMEM)?;
        let mr = pd.reg_mr(recv.addr() as u64, recv.len() as u64, Access::LOCAL_WRITE)?;
        let gsi = Gsi {
            qp,
            cq,
            channel,
            mr,
            recv,
            _pd: pd,
            sends: AtomicU32::new(0),
        };
        for slot in 0..RECV_SLOTS {
            gsi.post_recv(slot)?;
        }
        gsi.cq.req_notify(false)?;
        Ok(gsi)
    }

    fn slot_addr(&self, slot: usize) -> u64 {
        (self.recv.addr() + slot * RECV_SLOT) as u64
    }

    fn post_recv(&self, slot: usize) -> Result<()> {
        self.qp
            .post_recv(&[RecvWr {
                wr_id: slot as u64,
                sg_list: &[Sge {
                    addr: self.slot_addr(slot),
                    length: RECV_SLOT as u32,
                    lkey: self.mr.lkey(),
                }],
            }])
            .map_err(|(_, e)| e)
    }

    /// Sends `mad` to the GSI QP of the device `to` names. A full send
    /// queue (ENOMEM) is the caller's to retry: CM messages are
    /// retransmitted anyway.
    pub fn send(&self, to: Gid, mad: &[u8; MAD_LEN]) -> Result<()> {
        let signaled = self.sends.fetch_add(1, Ordering::Relaxed) % SIGNAL_EVERY == 0;
        self.qp
            .post_send(&[SendWr {
                wr_id: SEND_ID,
                sg_list: &[Sge {
                    addr: mad.as_ptr() as u64,
                    length: MAD_LEN as u32,
                    lkey: 0,
                }],
                op: SendOp::Send,
                flags: SendFlags {
                    inline: true,
                    signaled,
                    ..SendFlags::default()
                },
                ud: Some(UdDest {
                    ah: Ah { dgid: to },
                    remote_qpn: GSI_QPN,
                    remote_qkey: GSI_QKEY,
                }),
            }])
            .map_err(|(_, e)| e)
    }

    /// Whether QP1's completion queue ever overflowed: completions, so
    /// MADs, were lost (a sizing bug, never the network's doing).
    pub fn overflowed(&self) -> bool {
        self.cq.overflowed()
    }

    /// Takes every completion: returns the MADs received (reposting their
    /// buffers) and re-arms the completion event. Call when [`AsFd`] is
    /// readable, or at any time.
    pub fn receive(&self) -> Vec<Received> {
        while self.channel.get_event().is_some() {}
        let _ = self.cq.req_notify(false);
        let mut out = Vec::new();
        let mut wcs = [Wc::EMPTY; 32];
        loop {
            let n = self.cq.poll(&mut wcs);
            for wc in &wcs[..n] {
                if wc.wr_id == SEND_ID {
                    continue;
                }
                let slot = wc.wr_id as usize;
                let mut b = [0u8; RECV_SLOT];
                if wc.status == WcStatus::Success
                    && wc.byte_len as usize >= RECV_SLOT
                    && self.mr.read(self.slot_addr(slot), &mut b).is_ok()
                {
                    let mut from = [0u8; 16];
                    from.copy_from_slice(&b[8..24]);
                    let mut mad = [0u8; MAD_LEN];
                    mad.copy_from_slice(&b[GRH_LEN..]);
                    out.push(Received {
                        from: Gid(from),
                        src_qp: wc.src_qp,
                        mad,
                    });
                }
                // A flushed receive (the QP is going away) is not reposted.
                if wc.status != WcStatus::WrFlushErr {
                    let _ = self.post_recv(slot);
                }
            }
            if n < wcs.len() {
                return out;
            }
        }
    }
}

impl AsFd for Gsi {
    /// Readable when a completion arrived since the last [`Gsi::receive`].
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.channel.as_fd()
    }
}
