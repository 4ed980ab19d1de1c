//! XRC in the QP: an initiator's requests carry the remote SRQ number
//! (the XRCETH); a target resolves each request's XRCETH to an XRC SRQ of
//! its own domain, receives from it, takes its PD for the memory the
//! request names, and completes on its CQ. Everything else is RC's.

use super::{Context, Inner, QpShared};
use crate::log::log;
use crate::resources::counters::bump;
use crate::types::QpType;
use crate::wire::{Bth, Ext, Op, Opcode, PacketRepr, Transport, XrcExt};

/// An initiator's request: RC's headers behind an XRCETH naming `srqn`
/// (`None`: not an XRC request, the packet as built).
pub(super) fn with_srqn(repr: PacketRepr, srqn: Option<u32>) -> PacketRepr {
    let Some(srqn) = srqn else { return repr };
    let rest = XrcExt::from_ext(repr.ext).expect("requests carry a request's headers");
    PacketRepr {
        ext: Ext::Xrc(srqn, rest),
        ..repr
    }
}

/// What an XRC QP makes of a packet before its roles see it (other QPs do
/// not call this): `None` drops it (a request to an initiator, a response
/// to a target: counted as a wrong transport). A target's request comes back in RC form, its
/// XRCETH resolved into `q.resp.xrc_srq` — or `q.resp.xrc_refused` set
/// (another domain's SRQ, a basic one or none: the responder NAKs it as an
/// invalid request, and counts it, once its PSN is the expected one).
pub(super) fn accept(
    ctx: &Context<'_>,
    sh: &QpShared,
    q: &mut Inner,
    repr: &PacketRepr,
    response: bool,
) -> Option<PacketRepr> {
    match (sh.qp_type, response) {
        (QpType::XrcSend, true) => return Some(*repr),
        (QpType::XrcRecv, false) => {}
        (QpType::XrcSend | QpType::XrcRecv, _) => {
            bump(&ctx.stats.wrong_transport);
            log!(
                Debug,
                "qp {:#x}: dropped {repr}: not for this XRC half",
                sh.qpn
            );
            return None;
        }
        _ => return Some(*repr), // not an XRC QP
    }
    let Ext::Xrc(srqn, rest) = repr.ext else {
        return None; // the wire layer gives every XRC request an XRCETH
    };
    let srq = sh.xrcd.and_then(|d| ctx.xrc_srqs.get(srqn, d));
    if srq.is_none() {
        log!(
            Debug,
            "qp {:#x}: {repr}: SRQ {srqn:#x} is no XRC SRQ of this domain",
            sh.qpn
        );
    }
    q.resp.xrc_refused = srq.is_none();
    q.resp.xrc_srq = srq;
    q.resp.xrc_srqn = Some(srqn);
    let opcode = Opcode::new(Transport::Rc, repr.bth.opcode.op()).expect("RC has every op");
    Some(PacketRepr {
        bth: Bth { opcode, ..repr.bth },
        ext: rest.to_ext(),
        payload_len: repr.payload_len,
    })
}

/// Whether a target refuses its in-sequence request `op`: the XRCETH names
/// no SRQ it may use, or a packet after a message's first names another
/// SRQ than the first did (the message's receive WQE came from that one).
pub(super) fn refused(sh: &QpShared, q: &mut Inner, op: Op) -> bool {
    if sh.qp_type != QpType::XrcRecv {
        return false;
    }
    if q.resp.xrc_refused {
        return true;
    }
    if op.is_first() {
        q.resp.xrc_msg_srqn = q.resp.xrc_srqn;
        false
    } else {
        q.resp.xrc_msg_srqn != q.resp.xrc_srqn
    }
}

/// The receive completions a target's request added complete on the CQ of
/// the SRQ that request named: `q.resp.xrc_cqs` runs parallel to
/// `q.resp.completed` (every completion of a target comes from a request).
pub(super) fn tag_completions(q: &mut Inner) {
    let Some(x) = q.resp.xrc_srq.as_ref().and_then(|s| s.xrc()) else {
        return;
    };
    while q.resp.xrc_cqs.len() < q.resp.completed.len() {
        q.resp.xrc_cqs.push(x.cq.clone());
    }
}

/// The PD a request's memory is checked against: a target's is the PD of
/// the SRQ its XRCETH names (it has none of its own).
pub(super) fn pd(sh: &QpShared, q: &Inner) -> u32 {
    match &q.resp.xrc_srq {
        Some(s) if sh.qp_type == QpType::XrcRecv => s.pd(),
        _ => sh.pd,
    }
}
