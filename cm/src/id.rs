//! The user's handle on an id of the CM ([`CmId`]): bind, listen, connect,
//! accept, reject, disconnect, options; dropping it ends the connection as
//! `rdma_destroy_id` does. The agent (`agent.rs`) holds the tables and the
//! thread these calls act through.

use crate::agent::{Kind, Shared, RELISTEN_GRACE};
use crate::conn::{Conn, ConnParam, Out, State, Target};
use crate::event::EventChannel;
use crate::event::Remote;
use crate::ports::Binding;
use crate::rendezvous::Claim;
use crate::wire::msg::Transport;
use crate::wire::{Path, PortSpace, Rej, RejReason, SidrRep, SidrReq};
use soft_rdma::verbs::{Errno, Gid, Result};
use std::sync::Arc;
use std::time::Instant;

/// An `rdma_cm_id` of the CM: listens, or is one end of a connection.
/// Dropping it ends the connection as `rdma_destroy_id` does.
pub struct CmId {
    pub(crate) shared: Arc<Shared>,
    pub(crate) id: u32,
}

impl CmId {
    /// The id's local communication ID: what its events name.
    pub fn local_id(&self) -> u32 {
        self.id
    }

    /// `rdma_bind_addr` to the IPv4 wildcard and `port` of `ps`
    /// ([`CmId::bind_addr`]).
    pub fn bind(&self, ps: PortSpace, port: u16) -> Result<u16> {
        self.bind_addr(ps, std::net::SocketAddr::from(([0, 0, 0, 0], port)))
    }

    /// `rdma_bind_addr`: hold `a`'s port of `ps` on this host (0: a free
    /// one), so that clients of the host find this device there
    /// ([`crate::rendezvous`]). Returns the port. Ids of this CM share a
    /// port as the kernel lets them ([`crate::ports::check`]:
    /// EADDRNOTAVAIL, EADDRINUSE); a port another process holds is
    /// EADDRINUSE; EINVAL when this id holds one already. Locks: the tables
    /// (the port's name is bound under them).
    pub fn bind_addr(&self, ps: PortSpace, a: std::net::SocketAddr) -> Result<u16> {
        let gid = self.shared.gid;
        let mut t = self.shared.lock();
        let e = t.ids.get(&self.id).ok_or(Errno::EINVAL)?;
        if e.claim.is_some() {
            return Err(Errno::EINVAL);
        }
        let me = Binding {
            ip: Some(a.ip()),
            ..e.binding
        };
        let shared = if a.port() == 0 {
            None
        } else {
            let (others, claim) = t.holders(self.id, ps, a.port());
            crate::ports::check(&me, me.reuse, &others)?;
            claim
        };
        let claim = match shared {
            Some(c) => c,
            None => Arc::new(
                if a.port() == 0 {
                    Claim::take_any(ps, gid)
                } else {
                    Claim::take(ps, a.port(), gid)
                }
                .map_err(|e| Errno(e.raw_os_error().unwrap_or(libc::EADDRINUSE)))?,
            ),
        };
        let port = claim.port;
        let e = t.ids.get_mut(&self.id).ok_or(Errno::EINVAL)?;
        e.claim = Some(claim);
        e.binding = me;
        drop(t);
        self.shared.kick.signal();
        Ok(port)
    }

    /// RDMA_OPTION_ID_REUSEADDR, as `rdma_set_reuseaddr`: turning it on is
    /// refused (EINVAL) only to a listener, turning it off to any id but a
    /// fresh unbound one.
    pub fn set_reuseaddr(&self, on: bool) -> Result<()> {
        let mut t = self.shared.lock();
        let e = t.ids.get_mut(&self.id).ok_or(Errno::EINVAL)?;
        let idle = matches!(e.kind, Kind::Fresh) && e.claim.is_none();
        let listening = matches!(e.kind, Kind::Listener { .. });
        if !((on && !listening) || idle) {
            return Err(Errno::EINVAL);
        }
        e.binding.reuse = on;
        Ok(())
    }

    /// RDMA_OPTION_ID_AFONLY, as `rdma_set_afonly`: for an id neither
    /// listening nor connecting (EINVAL).
    pub fn set_afonly(&self, on: bool) -> Result<()> {
        let mut t = self.shared.lock();
        let e = t.ids.get_mut(&self.id).ok_or(Errno::EINVAL)?;
        if !matches!(e.kind, Kind::Fresh) {
            return Err(Errno::EINVAL);
        }
        e.binding.afonly_set = Some(on);
        Ok(())
    }

    /// `rdma_listen` with the largest backlog ([`CmId::listen_backlog`]).
    pub fn listen(&self, service_id: u64) -> Result<()> {
        self.listen_backlog(service_id, 0)
    }

    /// `rdma_listen`: REQs for `service_id` come to this id, at most
    /// `backlog` of them waiting to be taken ([`crate::ports::backlog`]).
    /// A REUSEADDR id must be alone on its port now, as the kernel's
    /// listen checks (EADDRNOTAVAIL, EADDRINUSE), and stops sharing it;
    /// EADDRINUSE when another id of the same address family listens
    /// there; EINVAL for an id in use.
    pub fn listen_backlog(&self, service_id: u64, backlog: i32) -> Result<()> {
        let mut t = self.shared.lock();
        let e = t.ids.get(&self.id).ok_or(Errno::EINVAL)?;
        if !matches!(e.kind, Kind::Fresh) {
            return Err(Errno::EINVAL);
        }
        let me = e.binding;
        if let (true, Some(c)) = (me.reuse, e.claim.as_ref()) {
            let (ps, port) = (c.ps, c.port);
            let (others, _) = t.holders(self.id, ps, port);
            crate::ports::check(&me, false, &others)?;
        }
        let taken = t.listeners.get(&service_id).is_some_and(|ls| {
            ls.iter().any(|l| {
                t.ids.get(l).is_some_and(|o| {
                    let b = o.binding;
                    // AF-only listeners of two families share a service.
                    !(me.afonly()
                        && b.afonly()
                        && me.ip.map(|i| i.is_ipv4()) != b.ip.map(|i| i.is_ipv4()))
                })
            })
        });
        if taken {
            return Err(Errno(libc::EADDRINUSE));
        }
        let e = t.ids.get_mut(&self.id).ok_or(Errno::EINVAL)?;
        e.binding.reuse = false;
        e.kind = Kind::Listener {
            service_id,
            backlog: crate::ports::backlog(backlog),
        };
        t.listeners.entry(service_id).or_default().push(self.id);
        drop(t);
        // Its port answers clients from the thread's next round.
        self.shared.kick.signal();
        Ok(())
    }

    /// `rdma_connect`: send a REQ for `service_id` to the device `dgid`
    /// names, offering QP `p.qpn` (moved to INIT by the caller).
    pub fn connect(&self, dgid: Gid, service_id: u64, p: &ConnParam) -> Result<()> {
        check_private(p, crate::wire::Req::PRIVATE_DATA_LEN)?;
        let s = &self.shared;
        let to = Target {
            peer: dgid,
            service_id,
            transport: if p.xrc { Transport::Xrc } else { Transport::Rc },
            primary: Path {
                local_lid: 0xffff,
                remote_lid: 0xffff,
                local_gid: s.gid.0,
                remote_gid: dgid.0,
                flow_label: 0,
                packet_rate: 0,
                traffic_class: p.traffic_class,
                hop_limit: 64,
                sl: 0,
                subnet_local: false,
                local_ack_timeout: 14,
            },
        };
        let p = ConnParam {
            local_ca_guid: s.guid,
            ..p.clone()
        };
        self.start(|conn, tid, out| conn.connect(&to, tid, &p, Instant::now(), out))
    }

    /// Makes this fresh id a connection and runs `first` on it (with a new
    /// transaction ID); EINVAL for an id in use. Locks: the tables, released
    /// before anything is sent.
    fn start(&self, first: impl FnOnce(&mut Conn, u64, &mut Out)) -> Result<()> {
        let s = &self.shared;
        let mut out = Out::default();
        let chan = {
            let mut t = s.lock();
            let tid = t.new_tid();
            let e = t.ids.get_mut(&self.id).ok_or(Errno::EINVAL)?;
            if !matches!(e.kind, Kind::Fresh) {
                return Err(Errno::EINVAL);
            }
            let mut conn = Conn::new(self.id, s.timing);
            first(&mut conn, tid, &mut out);
            e.kind = Kind::Conn(Box::new(conn));
            e.chan.clone()
        };
        s.flush(self.id, Some(chan), None, None, out);
        s.kick.signal();
        Ok(())
    }

    /// `rdma_accept`: answer the REQ with a REP offering QP `p.qpn` (moved
    /// to RTR/RTS by the caller).
    pub fn accept(&self, p: &ConnParam) -> Result<()> {
        check_private(p, crate::wire::Rep::PRIVATE_DATA_LEN)?;
        let guid = self.shared.guid;
        self.shared.with_conn(self.id, |c, _, out| {
            let p = ConnParam {
                local_ca_guid: guid,
                ..p.clone()
            };
            c.accept(&p, Instant::now(), out)
        })
    }

    /// `rdma_reject`: refuse a connection request (or a REP), or a UD
    /// request (a SIDR_REP "rejected").
    pub fn reject(&self, private_data: &[u8]) -> Result<()> {
        if private_data.len() > SidrRep::PRIVATE_DATA_LEN.min(Rej::PRIVATE_DATA_LEN) {
            return Err(Errno::EINVAL);
        }
        self.shared.with_conn(self.id, |c, _, out| {
            if c.state == State::SidrReqRcvd {
                c.sidr_answer(None, private_data, out)
            } else {
                c.reject(RejReason::CONSUMER_DEFINED, private_data, out)
            }
        })
    }

    /// `rdma_resolve_route` + `rdma_connect` of a UD id: ask the service at
    /// `dgid` for its QP (SIDR); ESTABLISHED brings its QPN and Q_Key.
    pub fn resolve_ud(&self, dgid: Gid, service_id: u64, private_data: &[u8]) -> Result<()> {
        if private_data.len() > SidrReq::PRIVATE_DATA_LEN {
            return Err(Errno::EINVAL);
        }
        self.start(|conn, tid, out| {
            conn.sidr_request(dgid, service_id, tid, private_data, Instant::now(), out)
        })
    }

    /// `rdma_accept` of a UD request: answer with our QP and Q_Key.
    pub fn accept_ud(&self, qpn: u32, qkey: u32, private_data: &[u8]) -> Result<()> {
        if private_data.len() > SidrRep::PRIVATE_DATA_LEN {
            return Err(Errno::EINVAL);
        }
        self.shared.with_conn(self.id, |c, _, out| {
            c.sidr_answer(Some((qpn, qkey)), private_data, out)
        })
    }

    /// `rdma_establish`: after the REP and the QP's move to RTS, send the RTU.
    pub fn establish(&self) -> Result<()> {
        self.shared
            .with_conn(self.id, |c, _, out| c.establish(&[], out))
    }

    /// `rdma_disconnect`: send a DREQ.
    pub fn disconnect(&self) -> Result<()> {
        self.shared.with_conn(self.id, |c, t, out| {
            let tid = t.new_tid();
            c.disconnect(tid, Instant::now(), out)
        })
    }

    /// `rdma_migrate_id`: this id's events go to `chan` from now on, and
    /// those waiting on its old channel move there.
    pub fn set_channel(&self, chan: &EventChannel) -> Result<()> {
        let mut t = self.shared.lock();
        let e = t.ids.get_mut(&self.id).ok_or(Errno::EINVAL)?;
        let old = std::mem::replace(&mut e.chan, chan.clone());
        for q in old.take_for(self.id) {
            chan.push(q);
        }
        Ok(())
    }

    /// The peer's device, once this id connects or was connected to.
    pub fn peer(&self) -> Option<Gid> {
        match &self.shared.lock().ids.get(&self.id)?.kind {
            Kind::Conn(c) => Some(c.peer),
            _ => None,
        }
    }

    /// The peer's end, once its REQ or REP arrived.
    pub fn remote(&self) -> Option<Remote> {
        match &self.shared.lock().ids.get(&self.id)?.kind {
            Kind::Conn(c) => c.remote,
            _ => None,
        }
    }
}

fn check_private(p: &ConnParam, max: usize) -> Result<()> {
    if p.private_data.len() > max {
        return Err(Errno::EINVAL);
    }
    Ok(())
}

impl Drop for CmId {
    fn drop(&mut self) {
        let s = &self.shared;
        let entry = {
            let mut t = s.lock();
            match t.ids.get(&self.id).map(|e| &e.kind) {
                Some(Kind::Conn(_)) => None,
                Some(Kind::Listener { service_id, .. }) => {
                    let sid = *service_id;
                    let me = self.id;
                    if let Some(ls) = t.listeners.get_mut(&sid) {
                        ls.retain(|l| *l != me);
                        if ls.is_empty() {
                            t.listeners.remove(&sid);
                        }
                    }
                    t.unlistened.retain(|_, at| at.elapsed() < RELISTEN_GRACE);
                    t.unlistened.insert(sid, Instant::now());
                    t.ids.remove(&self.id)
                }
                _ => t.ids.remove(&self.id),
            }
        };
        let claimed = entry.as_ref().is_some_and(|e| e.claim.is_some())
            || s.lock()
                .ids
                .get_mut(&self.id)
                .and_then(|e| e.claim.take())
                .is_some();
        drop(entry);
        if claimed {
            // The port is free again once this returns, as a closed
            // socket's: the thread may be polling it.
            s.wait_round();
        }
        // A connection finishes its protocol detached, then is forgotten.
        let _ = s.with_conn(self.id, |c, t, out| {
            let tid = t.new_tid();
            c.detach(tid, Instant::now(), out);
            Ok(())
        });
    }
}
