//! The liveness probe's MADs. A probe is a Get(ClassPortInfo) of the CM
//! class: the kernel's `ib_cm` registers only the Send method, so the
//! kernel's MAD layer answers such a Get itself, with the request copied
//! back as a GetResp whose status is "unsupported method/attribute"
//! (0x000C) — a kernel peer answers it as ours does, and answering needs no
//! CM state. Our GSI answers every Get or Set the same way, as the kernel
//! answers one for a class nobody registered.

use super::mad::{CM_CLASS, CM_CLASS_VERSION, MAD_LEN};

pub const METHOD_GET: u8 = 0x01;
pub const METHOD_SET: u8 = 0x02;
pub const METHOD_GET_RESP: u8 = 0x81;
/// ClassPortInfo, the one attribute every management class defines.
pub const ATTR_CLASS_PORT_INFO: u16 = 0x0001;
/// IBTA table 112: "the method/attribute combination is not supported".
pub const STATUS_UNSUPPORTED_METHOD_ATTR: u16 = 0x000c;

/// What a MAD is to the probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeMad {
    /// A Get or Set: to be answered with [`unmatched_response`].
    Request,
    /// A GetResp: the answer to a probe (its transaction ID).
    Response(u64),
}

/// The probe with transaction ID `tid`.
pub fn probe(tid: u64) -> [u8; MAD_LEN] {
    let mut b = [0u8; MAD_LEN];
    b[0] = 1; // base version
    b[1] = CM_CLASS;
    b[2] = CM_CLASS_VERSION;
    b[3] = METHOD_GET;
    b[8..16].copy_from_slice(&tid.to_be_bytes());
    b[16..18].copy_from_slice(&ATTR_CLASS_PORT_INFO.to_be_bytes());
    b
}

/// Whether `mad` is a request to answer or a probe's answer; None for
/// anything else (the CM's own messages use Send).
pub fn classify(mad: &[u8; MAD_LEN]) -> Option<ProbeMad> {
    // Subnet management classes (0x01, 0x81) live on QP0, never here.
    if mad[0] != 1 || mad[1] == 0x01 || mad[1] == 0x81 {
        return None;
    }
    match mad[3] {
        METHOD_GET | METHOD_SET => Some(ProbeMad::Request),
        METHOD_GET_RESP if mad[1] == CM_CLASS => {
            let mut tid = [0u8; 8];
            tid.copy_from_slice(&mad[8..16]);
            Some(ProbeMad::Response(u64::from_be_bytes(tid)))
        }
        _ => None,
    }
}

/// The answer to a Get or Set nobody handles: the request, as a GetResp
/// with status 0x000C.
pub fn unmatched_response(req: &[u8; MAD_LEN]) -> [u8; MAD_LEN] {
    let mut b = *req;
    b[3] = METHOD_GET_RESP;
    b[4..6].copy_from_slice(&STATUS_UNSUPPORTED_METHOD_ATTR.to_be_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_is_answered_with_its_tid_and_status_0x000c() {
        let p = probe(0x1122_3344_5566_7788);
        assert_eq!(&p[..4], &[1, 0x07, 2, 0x01]);
        assert_eq!(&p[16..18], &[0, 1]);
        assert_eq!(classify(&p), Some(ProbeMad::Request));
        let r = unmatched_response(&p);
        assert_eq!(&r[..6], &[1, 0x07, 2, 0x81, 0x00, 0x0c]);
        assert_eq!(
            classify(&r),
            Some(ProbeMad::Response(0x1122_3344_5566_7788))
        );
    }

    #[test]
    fn cm_sends_and_smps_are_not_probes() {
        let mut m = probe(1);
        m[3] = 0x03;
        assert_eq!(classify(&m), None);
        m[3] = METHOD_GET;
        m[1] = 0x81;
        assert_eq!(classify(&m), None);
    }
}
