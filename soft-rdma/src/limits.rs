//! The device's limits, modelled on rxe (`rxe_param.h`): what `Device::attr`
//! advertises and what the verbs refuse beyond, with rxe's errnos.
#![forbid(unsafe_code)]

pub(crate) const MAX_QP: usize = 1 << 16;
pub(crate) const MAX_MR: usize = 1 << 16;
/// Memory windows (their keys share the MRs' 24-bit index space).
pub(crate) const MAX_MW: usize = 1 << 16;
pub(crate) const MAX_CQE: usize = 1 << 16;
pub(crate) const MAX_QP_WR: u32 = 1 << 14;
pub(crate) const MAX_SGE: u32 = 32;
pub(crate) const MAX_INLINE: u32 = 256;
pub(crate) const MAX_MSG: u64 = 8 << 20;
pub(crate) const MAX_RD_ATOMIC: u8 = 128;
/// GID table entries per port (rxe's `RXE_PORT_GID_TBL_LEN`); the device
/// fills the first two, the rest read as empty.
pub(crate) const GID_TBL_LEN: u32 = 1024;
/// Multicast groups, QPs attached to one group, attachments in all
/// (rxe's `RXE_MAX_MCAST_GRP`, `RXE_MAX_MCAST_QP_ATTACH`,
/// `RXE_MAX_TOT_MCAST_QP_ATTACH`); beyond them an attach is `ENOMEM`.
pub(crate) const MAX_MCAST_GRP: usize = 8192;
pub(crate) const MAX_MCAST_QP_ATTACH: usize = 56;
pub(crate) const MAX_TOT_MCAST_QP_ATTACH: usize = 0x70000;
