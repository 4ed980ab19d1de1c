//! One connection's CM state machine (IBTA 12.9, as the kernel's `ib_cm`
//! runs it for `rdma_cm`), with no I/O and no locks: each input (a message
//! from the peer, a call of the user, a timer) changes the state and
//! appends what to send and what to tell the user to an [`Out`]. The agent
//! (`agent.rs`) does the sending, the delivering and the locking.

use crate::event::{EventKind, Remote};
use crate::wire::msg::{Answered, Transport};
use crate::wire::{
    CmMessage, Drep, Dreq, Mra, Rej, RejReason, Rep, Req, Rtu, SidrRep, SidrReq, MAD_LEN,
};

/// SIDR_REP statuses (IBTA table 121) the CM sends.
pub const SIDR_OK: u8 = 0;
pub const SIDR_UNSUPPORTED: u8 = 1;
pub const SIDR_REJECTED: u8 = 2;
use soft_rdma::verbs::{Errno, Gid};
use std::time::{Duration, Instant};

/// Where a connection is (the states of IBTA figure 148 the CM needs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Created, not connecting.
    Idle,
    /// Active: REQ sent, waiting for REP, REJ or MRA.
    ReqSent,
    /// Active: REP received, waiting for the user to establish (RTU).
    RepRcvd,
    /// Passive: REQ delivered, waiting for the user to accept or reject.
    ReqRcvd,
    /// Passive: REP sent, waiting for the RTU.
    RepSent,
    Established,
    /// DREQ sent, waiting for the DREP.
    DreqSent,
    /// Disconnected; answers late DREQs until the timer ends it.
    TimeWait,
    /// UD, active: SIDR_REQ sent, waiting for the SIDR_REP.
    SidrReqSent,
    /// UD, passive: SIDR_REQ delivered, waiting for the user's answer.
    SidrReqRcvd,
    /// UD, passive: answered; repeats the answer to a repeated SIDR_REQ.
    SidrRepSent,
    /// Over: the agent forgets it.
    Closed,
}

/// What one input produced.
#[derive(Default)]
pub struct Out {
    pub sends: Vec<(Gid, [u8; MAD_LEN])>,
    /// What to tell the user: the event, the private data it carries, and
    /// its status (rdma_cm's `event->status`: 0, a REJ reason, a SIDR
    /// status, or a negative errno).
    pub events: Vec<(EventKind, Vec<u8>, i32)>,
}

/// The timing rules: how long to wait for an answer and how often to ask.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// CM response timeout (the exponent of 4.096 µs) we send and wait.
    pub response_timeout: u8,
    pub max_retries: u8,
    /// The service timeout our MRAs ask for (an exponent, as above).
    pub mra_timeout: u8,
    pub timewait: Duration,
}

/// 4.096 µs × 2^exp, as the CM's timeouts are encoded.
pub fn timeout_of(exp: u8) -> Duration {
    Duration::from_nanos(4096u64 << exp.min(31))
}

/// The answer a message is waiting for, and how to ask again.
struct Pending {
    mad: [u8; MAD_LEN],
    deadline: Instant,
    period: Duration,
    retries_left: u8,
}

/// One connection (an rdma_cm id that connects, or was connected to).
pub struct Conn {
    pub state: State,
    pub local_id: u32,
    pub remote_id: u32,
    pub peer: Gid,
    pub service_id: u64,
    /// The transaction of the current exchange (REQ/REP/RTU share one,
    /// DREQ/DREP another).
    tid: u64,
    /// Our QP and first PSN, sent in the REQ or REP.
    pub local_qpn: u32,
    /// What the peer's REQ or REP said.
    pub remote: Option<Remote>,
    pending: Option<Pending>,
    /// The last answer sent, repeated when the peer repeats its message (a
    /// REP for a duplicate REQ, an RTU for a duplicate REP, a DREP).
    last_answer: Option<[u8; MAD_LEN]>,
    /// The user is gone (the id was destroyed): finish the protocol quietly.
    pub detached: bool,
    /// A UD id (SIDR): no connection, no disconnection.
    ud: bool,
    timing: Timing,
}

/// Where a REQ goes: the peer's device, the service, the transport and
/// the path.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub peer: Gid,
    pub service_id: u64,
    pub transport: Transport,
    pub primary: crate::wire::Path,
}

/// Parameters of a REQ or REP the user gives.
#[derive(Debug, Clone, Default)]
pub struct ConnParam {
    pub qpn: u32,
    pub psn: u32,
    pub responder_resources: u8,
    pub initiator_depth: u8,
    pub retry_count: u8,
    pub rnr_retry_count: u8,
    pub srq: bool,
    /// The IBA MTU encoding (1 = 256 … 5 = 4096).
    pub path_mtu: u8,
    /// The REQ's primary path traffic class (rdma_cm's TOS).
    pub traffic_class: u8,
    /// The REQ offers an XRC initiator QP (transport type XRC), not RC.
    pub xrc: bool,
    pub local_ca_guid: u64,
    pub private_data: Vec<u8>,
}

impl Conn {
    pub fn new(local_id: u32, timing: Timing) -> Conn {
        Conn {
            state: State::Idle,
            local_id,
            remote_id: 0,
            peer: Gid([0; 16]),
            service_id: 0,
            tid: 0,
            local_qpn: 0,
            remote: None,
            pending: None,
            last_answer: None,
            detached: false,
            ud: false,
            timing,
        }
    }

    /// When [`Conn::on_timer`] wants to run next.
    pub fn deadline(&self) -> Option<Instant> {
        self.pending.as_ref().map(|p| p.deadline)
    }

    fn event(&self, out: &mut Out, kind: EventKind, private_data: Vec<u8>) {
        let status = match kind {
            EventKind::Rejected(r) => i32::from(r.0),
            EventKind::Unreachable => -110, // ETIMEDOUT
            _ => 0,
        };
        self.event_status(out, kind, private_data, status);
    }

    fn event_status(&self, out: &mut Out, kind: EventKind, private_data: Vec<u8>, status: i32) {
        if !self.detached {
            out.events.push((kind, private_data, status));
        }
    }

    fn send(&mut self, out: &mut Out, m: &CmMessage) -> [u8; MAD_LEN] {
        // Our own messages are built from checked parts: emit cannot fail
        // (private data lengths are checked where the user gives them).
        let mad = m.emit(self.tid).unwrap_or([0; MAD_LEN]);
        out.sends.push((self.peer, mad));
        mad
    }

    /// Send and wait for an answer, asking again after `period`.
    fn send_expecting(&mut self, out: &mut Out, m: &CmMessage, period: Duration, now: Instant) {
        let mad = self.send(out, m);
        self.pending = Some(Pending {
            mad,
            deadline: now + period,
            period,
            retries_left: self.timing.max_retries,
        });
    }

    fn response_period(&self) -> Duration {
        // Our response timeout and the peer's packet life both ways; on
        // one host the first is all of it.
        timeout_of(self.timing.response_timeout)
    }

    /// Active: send the REQ.
    pub fn connect(&mut self, to: &Target, tid: u64, p: &ConnParam, now: Instant, out: &mut Out) {
        let Target {
            peer,
            service_id,
            transport,
            primary,
        } = *to;
        self.peer = peer;
        self.service_id = service_id;
        self.tid = tid;
        self.local_qpn = p.qpn;
        let req = Req {
            local_comm_id: self.local_id,
            vendor_id: 0,
            service_id,
            local_ca_guid: p.local_ca_guid,
            local_qkey: 0,
            local_qpn: p.qpn,
            responder_resources: p.responder_resources,
            local_eecn: 0,
            initiator_depth: p.initiator_depth,
            remote_eecn: 0,
            remote_cm_response_timeout: self.timing.response_timeout,
            transport,
            end_to_end_flow_control: false,
            starting_psn: p.psn,
            local_cm_response_timeout: self.timing.response_timeout,
            retry_count: p.retry_count,
            pkey: 0xffff,
            path_mtu: p.path_mtu,
            rdc_exists: false,
            rnr_retry_count: p.rnr_retry_count,
            max_cm_retries: self.timing.max_retries.min(15),
            srq: p.srq,
            primary,
            alternate: None,
            sap_supported: false,
            private_data: p.private_data.clone(),
        };
        let period = self.response_period();
        self.send_expecting(out, &CmMessage::Req(req), period, now);
        self.state = State::ReqSent;
    }

    /// Passive: a new REQ for a listener. Tells the user and, as `rdma_cm`
    /// does, says with an MRA that the answer may take a while.
    pub fn on_req(&mut self, peer: Gid, tid: u64, req: &Req, out: &mut Out) {
        self.peer = peer;
        self.tid = tid;
        self.remote_id = req.local_comm_id;
        self.service_id = req.service_id;
        self.remote = Some(Remote::from_req(req));
        self.state = State::ReqRcvd;
        self.event(out, EventKind::ConnectRequest, req.private_data.clone());
        let mra = CmMessage::Mra(Mra {
            local_comm_id: self.local_id,
            remote_comm_id: self.remote_id,
            message_mraed: Answered::Req,
            service_timeout: self.timing.mra_timeout,
            private_data: vec![],
        });
        self.last_answer = Some(self.send(out, &mra));
    }

    /// The peer sent its REQ again: repeat our last answer (MRA or REP).
    pub fn on_dup_req(&mut self, out: &mut Out) {
        if let (State::ReqRcvd | State::RepSent, Some(mad)) = (self.state, self.last_answer) {
            out.sends.push((self.peer, mad));
        }
    }

    /// Passive: the user accepts.
    pub fn accept(&mut self, p: &ConnParam, now: Instant, out: &mut Out) -> Result<(), Errno> {
        if self.state != State::ReqRcvd {
            return Err(Errno::EINVAL);
        }
        self.local_qpn = p.qpn;
        let rep = Rep {
            local_comm_id: self.local_id,
            remote_comm_id: self.remote_id,
            local_qkey: 0,
            local_qpn: p.qpn,
            local_eecn: 0,
            starting_psn: p.psn,
            vendor_id: 0,
            responder_resources: p.responder_resources,
            initiator_depth: p.initiator_depth,
            target_ack_delay: 0,
            failover_accepted: 0,
            end_to_end_flow_control: false,
            rnr_retry_count: p.rnr_retry_count,
            srq: p.srq,
            local_ca_guid: p.local_ca_guid,
            private_data: p.private_data.clone(),
        };
        let period = self.response_period();
        self.send_expecting(out, &CmMessage::Rep(rep), period, now);
        self.last_answer = self.pending.as_ref().map(|p| p.mad);
        self.state = State::RepSent;
        Ok(())
    }

    /// Passive (before accepting) or active (after the REP): refuse.
    pub fn reject(
        &mut self,
        reason: RejReason,
        private_data: &[u8],
        out: &mut Out,
    ) -> Result<(), Errno> {
        let answered = match self.state {
            State::ReqRcvd => Answered::Req,
            State::RepRcvd => Answered::Rep,
            _ => return Err(Errno::EINVAL),
        };
        self.send_rej(answered, reason, private_data, out);
        self.state = State::Closed;
        Ok(())
    }

    fn send_rej(&mut self, answered: Answered, reason: RejReason, pd: &[u8], out: &mut Out) {
        let rej = CmMessage::Rej(Rej {
            local_comm_id: self.local_id,
            remote_comm_id: self.remote_id,
            message_rejected: answered,
            reason,
            ari: vec![],
            private_data: pd.to_vec(),
        });
        self.send(out, &rej);
        self.pending = None;
    }

    pub fn on_mra(&mut self, mra: &Mra, now: Instant) {
        let waiting = matches!(
            (self.state, mra.message_mraed),
            (State::ReqSent, Answered::Req) | (State::RepSent, Answered::Rep)
        );
        if let (true, Some(p)) = (waiting, self.pending.as_mut()) {
            // The peer is slow, not gone: wait its service time plus ours.
            p.period = timeout_of(mra.service_timeout) + timeout_of(self.timing.response_timeout);
            p.deadline = now + p.period;
        }
    }

    /// Active: the REP. The user is told (CONNECT_RESPONSE) and moves its QP
    /// before [`Conn::establish`]; a repeated REP gets the RTU again.
    pub fn on_rep(&mut self, rep: &Rep, out: &mut Out) {
        match self.state {
            State::ReqSent => {
                self.remote_id = rep.local_comm_id;
                self.remote = Some(Remote::from_rep(rep));
                self.pending = None;
                self.state = State::RepRcvd;
                self.event(out, EventKind::ConnectResponse, rep.private_data.clone());
            }
            State::Established => {
                if let Some(mad) = self.last_answer {
                    out.sends.push((self.peer, mad));
                }
            }
            _ => {}
        }
    }

    /// Active: the user's QP is ready: send the RTU.
    pub fn establish(&mut self, private_data: &[u8], out: &mut Out) -> Result<(), Errno> {
        if self.state != State::RepRcvd {
            return Err(Errno::EINVAL);
        }
        let rtu = CmMessage::Rtu(Rtu {
            local_comm_id: self.local_id,
            remote_comm_id: self.remote_id,
            private_data: private_data.to_vec(),
        });
        self.last_answer = Some(self.send(out, &rtu));
        self.state = State::Established;
        self.event(out, EventKind::Established, vec![]);
        Ok(())
    }

    /// Passive: the RTU.
    pub fn on_rtu(&mut self, rtu: &Rtu, out: &mut Out) {
        if self.state == State::RepSent {
            self.pending = None;
            self.state = State::Established;
            self.event(out, EventKind::Established, rtu.private_data.clone());
        }
    }

    pub fn on_rej(&mut self, rej: &Rej, out: &mut Out) {
        match self.state {
            State::ReqSent | State::RepSent | State::RepRcvd => {
                self.pending = None;
                self.state = State::Closed;
                self.event(
                    out,
                    EventKind::Rejected(rej.reason),
                    rej.private_data.clone(),
                );
            }
            _ => {}
        }
    }

    /// The user disconnects (or destroys a connected id).
    pub fn disconnect(&mut self, tid: u64, now: Instant, out: &mut Out) -> Result<(), Errno> {
        match self.state {
            State::Established | State::RepSent | State::RepRcvd => {}
            _ => return Err(Errno::EINVAL),
        }
        self.tid = tid;
        let dreq = CmMessage::Dreq(Dreq {
            local_comm_id: self.local_id,
            remote_comm_id: self.remote_id,
            remote_qpn: self.remote.as_ref().map_or(0, |r| r.qpn),
            private_data: vec![],
        });
        let period = self.response_period();
        self.send_expecting(out, &dreq, period, now);
        self.state = State::DreqSent;
        Ok(())
    }

    pub fn on_dreq(&mut self, tid: u64, out: &mut Out, now: Instant) {
        match self.state {
            State::Established | State::RepSent | State::DreqSent | State::RepRcvd => {
                self.tid = tid;
                let drep = CmMessage::Drep(Drep {
                    local_comm_id: self.local_id,
                    remote_comm_id: self.remote_id,
                    private_data: vec![],
                });
                self.last_answer = Some(self.send(out, &drep));
                self.event(out, EventKind::Disconnected, vec![]);
                self.enter_timewait(now);
            }
            State::TimeWait => {
                // Our DREP was lost: again.
                if let Some(mad) = self.last_answer {
                    out.sends.push((self.peer, mad));
                }
            }
            _ => {}
        }
    }

    pub fn on_drep(&mut self, out: &mut Out, now: Instant) {
        if self.state == State::DreqSent {
            self.event(out, EventKind::Disconnected, vec![]);
            self.enter_timewait(now);
        }
    }

    fn enter_timewait(&mut self, now: Instant) {
        self.state = State::TimeWait;
        self.pending = Some(Pending {
            mad: [0; MAD_LEN],
            deadline: now + self.timing.timewait,
            period: self.timing.timewait,
            retries_left: 0,
        });
    }

    /// UD, active: ask the peer's service for its QP (SIDR_REQ).
    pub fn sidr_request(
        &mut self,
        peer: Gid,
        service_id: u64,
        tid: u64,
        private_data: &[u8],
        now: Instant,
        out: &mut Out,
    ) {
        self.peer = peer;
        self.service_id = service_id;
        self.tid = tid;
        self.ud = true;
        let req = CmMessage::SidrReq(SidrReq {
            request_id: self.local_id,
            pkey: 0xffff,
            service_id,
            private_data: private_data.to_vec(),
        });
        let period = self.response_period();
        self.send_expecting(out, &req, period, now);
        self.state = State::SidrReqSent;
    }

    /// UD, passive: a SIDR_REQ for a listener.
    pub fn on_sidr_req(&mut self, peer: Gid, tid: u64, req: &SidrReq, out: &mut Out) {
        self.peer = peer;
        self.tid = tid;
        self.remote_id = req.request_id;
        self.service_id = req.service_id;
        self.ud = true;
        self.state = State::SidrReqRcvd;
        self.event(out, EventKind::ConnectRequest, req.private_data.clone());
    }

    /// UD, passive: answer with our QP and Q_Key (status 0), or refuse
    /// (status 2, rejected), with private data.
    pub fn sidr_answer(
        &mut self,
        qp: Option<(u32, u32)>,
        private_data: &[u8],
        out: &mut Out,
    ) -> Result<(), Errno> {
        if self.state != State::SidrReqRcvd {
            return Err(Errno::EINVAL);
        }
        let (qpn, qkey) = qp.unwrap_or((0, 0));
        let rep = CmMessage::SidrRep(SidrRep {
            request_id: self.remote_id,
            status: if qp.is_some() { SIDR_OK } else { SIDR_REJECTED },
            vendor_id: 0,
            qpn,
            service_id: self.service_id,
            qkey,
            info: vec![],
            private_data: private_data.to_vec(),
        });
        self.last_answer = Some(self.send(out, &rep));
        self.state = State::SidrRepSent;
        Ok(())
    }

    /// UD, passive: the peer asked again (our answer was lost).
    pub fn on_dup_sidr_req(&mut self, out: &mut Out) {
        if let (State::SidrRepSent, Some(mad)) = (self.state, self.last_answer) {
            out.sends.push((self.peer, mad));
        }
    }

    /// UD, active: the answer. Success is ESTABLISHED with the peer's QP
    /// and Q_Key; any other status UNREACHABLE with it, as rdma_cm.
    pub fn on_sidr_rep(&mut self, rep: &SidrRep, out: &mut Out) {
        if self.state != State::SidrReqSent {
            return;
        }
        self.pending = None;
        if rep.status == SIDR_OK {
            self.remote = Some(Remote {
                qpn: rep.qpn,
                qkey: rep.qkey,
                ..Remote::default()
            });
            self.state = State::Established;
            self.event(out, EventKind::Established, rep.private_data.clone());
        } else {
            self.state = State::Closed;
            self.event_status(
                out,
                EventKind::Unreachable,
                rep.private_data.clone(),
                i32::from(rep.status),
            );
        }
    }

    /// The deadline passed: ask again, or give up.
    pub fn on_timer(&mut self, now: Instant, out: &mut Out) {
        let Some(p) = self.pending.as_mut() else {
            return;
        };
        if now < p.deadline {
            return;
        }
        if self.state == State::TimeWait {
            self.pending = None;
            self.state = State::Closed;
            self.event(out, EventKind::TimewaitExit, vec![]);
            return;
        }
        if p.retries_left > 0 {
            p.retries_left -= 1;
            p.deadline = now + p.period;
            out.sends.push((self.peer, p.mad));
            return;
        }
        self.pending = None;
        match self.state {
            State::ReqSent | State::RepSent => {
                // rdma_cm reports an unanswered REQ or REP as unreachable; the
                // peer learns with a REJ (timeout) should it still be there.
                let answered = if self.state == State::ReqSent {
                    Answered::Req
                } else {
                    Answered::Rep
                };
                self.send_rej(answered, RejReason::TIMEOUT, &[], out);
                self.state = State::Closed;
                self.event(out, EventKind::Unreachable, vec![]);
            }
            State::DreqSent => {
                // No DREP: disconnected all the same.
                self.event(out, EventKind::Disconnected, vec![]);
                self.enter_timewait(now);
            }
            State::SidrReqSent => {
                self.state = State::Closed;
                self.event(out, EventKind::Unreachable, vec![]);
            }
            _ => {}
        }
    }

    /// Whether the agent watches the peer's liveness for this connection
    /// (an established RC connection; UD ids have no peer to lose).
    pub fn watched(&self) -> bool {
        self.state == State::Established && !self.ud
    }

    /// The peer stopped answering probes: DISCONNECTED, as after a DREQ
    /// whose DREP never came. One DREQ goes out unrepeated, for a peer
    /// that is alive but was cut off: it ends its side too.
    pub fn peer_lost(&mut self, tid: u64, now: Instant, out: &mut Out) {
        if !self.watched() {
            return;
        }
        if self.disconnect(tid, now, out).is_ok() {
            self.event(out, EventKind::Disconnected, vec![]);
            self.enter_timewait(now);
        }
    }

    /// The user destroyed the id: end the connection as the kernel does
    /// (REJ before it was established, DREQ after) and say nothing more.
    pub fn detach(&mut self, tid: u64, now: Instant, out: &mut Out) {
        self.detached = true;
        match self.state {
            State::ReqSent => {
                self.send_rej(Answered::Req, RejReason::TIMEOUT, &[], out);
                self.state = State::Closed;
            }
            State::ReqRcvd => {
                self.send_rej(Answered::Req, RejReason::CONSUMER_DEFINED, &[], out);
                self.state = State::Closed;
            }
            // A UD id has nothing to tear down on the wire.
            State::Established if self.ud => self.state = State::Closed,
            State::RepSent | State::RepRcvd | State::Established => {
                let _ = self.disconnect(tid, now, out);
            }
            State::SidrReqRcvd => {
                let _ = self.sidr_answer(None, &[], out);
                self.state = State::Closed;
            }
            State::Idle | State::SidrReqSent | State::SidrRepSent => self.state = State::Closed,
            State::DreqSent | State::TimeWait | State::Closed => {}
        }
    }
}
