//! The receive thread: blocks in `recv` (never spins), checks each datagram
//! (parse, ICRC, QP), hands it to the QP's responder or completer, and sends
//! one coalesced ACK per QP at the end of the batch.

use super::packet::{icrc_ctx, TxQueue};
use super::{completer, responder};
use crate::log::log;
use crate::transport::RecvBatch;
use crate::verbs::device::DeviceInner;
use crate::verbs::qp::QpShared;
use crate::verbs::QpType;
use crate::wire::{icrc, Op, PacketRepr, Transport};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

pub(crate) fn run(dev: &DeviceInner) {
    let mut batch = RecvBatch::new(256);
    let mut tx = TxQueue::default();
    let mut acks: Vec<Arc<QpShared>> = Vec::new();
    while !dev.is_closing() {
        let n = match dev.link.recv(&mut batch, None) {
            Ok(n) => n,
            Err(e) => {
                log!(Error, "receive failed: {e}");
                std::thread::sleep(std::time::Duration::from_millis(10));
                continue;
            }
        };
        for i in 0..n {
            let (from, bytes) = batch.get(i);
            handle(dev, from, bytes, &mut tx, &mut acks);
        }
        for qp in acks.drain(..) {
            let mut q = qp.lock();
            responder::flush_ack(&qp, &mut q, &mut tx);
            tx.flush(dev);
        }
        tx.flush(dev);
    }
}

/// One datagram. Anything malformed is dropped and counted, never a panic.
pub(crate) fn handle(
    dev: &DeviceInner,
    from: SocketAddr,
    bytes: &[u8],
    tx: &mut TxQueue,
    acks: &mut Vec<Arc<QpShared>>,
) {
    dev.stats.rcvd_pkts.fetch_add(1, Ordering::Relaxed);
    let (repr, payload) = match PacketRepr::parse(bytes) {
        Ok(r) => r,
        Err(e) => {
            dev.stats.parse_errors.fetch_add(1, Ordering::Relaxed);
            log!(Debug, "dropped {} bytes from {from}: {e:?}", bytes.len());
            return;
        }
    };
    if !icrc::verify(&icrc_ctx(from, dev.local), bytes) {
        dev.stats.icrc_errors.fetch_add(1, Ordering::Relaxed);
        log!(Debug, "dropped {repr} from {from}: bad ICRC");
        return;
    }
    let Some(qp) = dev.qp(repr.bth.dest_qp) else {
        dev.stats.unknown_qp.fetch_add(1, Ordering::Relaxed);
        log!(Debug, "dropped {repr} from {from}: no such QP");
        return;
    };
    if repr.bth.opcode.transport() != transport_of(qp.qp_type) {
        // rxe's check_type_state: a UC opcode is no request of an RC QP.
        dev.stats.wrong_transport.fetch_add(1, Ordering::Relaxed);
        log!(Debug, "dropped {repr} from {from}: QP is {:?}", qp.qp_type);
        return;
    }
    let payload = &bytes[payload];
    let mut q = qp.lock();
    if is_response(repr.bth.opcode.op()) {
        completer::on_response(&qp, &mut q, &repr, payload, tx);
    } else {
        responder::on_request(&qp, &mut q, from, &repr, payload, tx);
    }
    // Packets this QP produced leave before its lock is released (PSN order),
    // and before the receive completions they acknowledge become visible.
    tx.flush(dev);
    for (wc, solicited) in q.resp.completed.drain(..) {
        qp.complete_recv(wc, solicited);
    }
    if std::mem::take(&mut q.resp.goto_error) {
        qp.fail(&mut q);
    }
    if q.resp.ack_pending.is_some() && !acks.iter().any(|a| Arc::ptr_eq(a, &qp)) {
        drop(q);
        acks.push(qp);
    }
}

fn transport_of(t: QpType) -> Transport {
    match t {
        QpType::Rc => Transport::Rc,
        QpType::Uc => Transport::Uc,
        QpType::Ud => Transport::Ud,
    }
}

fn is_response(op: Op) -> bool {
    matches!(
        op,
        Op::ReadRespFirst
            | Op::ReadRespMiddle
            | Op::ReadRespLast
            | Op::ReadRespOnly
            | Op::Ack
            | Op::AtomicAck
    )
}
