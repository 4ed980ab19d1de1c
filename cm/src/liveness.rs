//! Is the peer still there? A kernel CM outlives the process that used it
//! and sends the DREQ for a killed one; our CM dies with its process, so a
//! survivor must notice itself. One tracker per remote device (not per
//! connection): while connections to a peer are established and nothing
//! was heard from it for `idle`, probe its GSI agent (a Get its MAD layer
//! answers, [`crate::wire::probe`]) every `interval`; any MAD from it is
//! life. After `probes` unanswered probes the peer is gone and the agent
//! disconnects every connection to it. No I/O and no locks here, as
//! `conn.rs`: the agent sends and locks.

use soft_rdma::verbs::Gid;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// The probe's timing (see [`crate::CmConfig`]).
#[derive(Debug, Clone, Copy)]
pub struct Keepalive {
    pub idle: Duration,
    pub interval: Duration,
    pub probes: u8,
}

impl Keepalive {
    /// The longest a dead peer goes unnoticed after the last MAD from it.
    #[cfg(test)]
    pub fn bound(&self) -> Duration {
        self.idle + self.interval * u32::from(self.probes)
    }
}

struct Peer {
    /// Probes sent since the peer was last heard.
    sent: u8,
    /// When to probe next (or give up).
    next: Instant,
}

pub struct Liveness {
    cfg: Keepalive,
    peers: HashMap<Gid, Peer>,
    /// A connection became or stopped being established since the last
    /// [`Liveness::tick`]: the set of peers to watch must be looked at.
    dirty: bool,
}

/// What a tick asks of the agent.
#[derive(Default)]
pub struct Tick {
    pub probe: Vec<Gid>,
    pub dead: Vec<Gid>,
}

impl Liveness {
    pub fn new(cfg: Keepalive) -> Liveness {
        Liveness {
            cfg,
            peers: HashMap::new(),
            dirty: false,
        }
    }

    /// A MAD arrived from `from`.
    pub fn heard(&mut self, from: Gid, now: Instant) {
        if let Some(p) = self.peers.get_mut(&from) {
            p.sent = 0;
            p.next = now + self.cfg.idle;
        }
    }

    /// Stop watching `peer` (found gone by other means).
    pub fn forget(&mut self, peer: Gid) {
        self.peers.remove(&peer);
    }

    /// The set of established connections' peers may have changed.
    pub fn changed(&mut self) {
        self.dirty = true;
    }

    /// When [`Liveness::tick`] wants to run next.
    pub fn deadline(&self) -> Option<Instant> {
        self.peers.values().map(|p| p.next).min()
    }

    /// Whether the agent should call [`Liveness::tick`] now.
    pub fn due(&self, now: Instant) -> bool {
        self.dirty || self.deadline().is_some_and(|d| d <= now)
    }

    /// `connected`: the peers with an established connection. Starts
    /// watching new ones, forgets those without connections, and says
    /// whom to probe and who is gone (forgotten at once).
    pub fn tick(&mut self, connected: &HashSet<Gid>, now: Instant) -> Tick {
        self.dirty = false;
        self.peers.retain(|g, _| connected.contains(g));
        for g in connected {
            self.peers.entry(*g).or_insert(Peer {
                sent: 0,
                next: now + self.cfg.idle,
            });
        }
        let mut t = Tick::default();
        for (g, p) in &mut self.peers {
            if p.next > now {
                continue;
            }
            if p.sent < self.cfg.probes {
                p.sent += 1;
                p.next = now + self.cfg.interval;
                t.probe.push(*g);
            } else {
                t.dead.push(*g);
            }
        }
        for g in &t.dead {
            self.peers.remove(g);
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: Keepalive = Keepalive {
        idle: Duration::from_millis(1000),
        interval: Duration::from_millis(500),
        probes: 4,
    };

    fn gid(n: u8) -> Gid {
        Gid([n; 16])
    }

    #[test]
    fn a_silent_peer_is_probed_then_declared_gone_within_the_bound() {
        let mut l = Liveness::new(CFG);
        let t0 = Instant::now();
        let set: HashSet<Gid> = [gid(1)].into();
        assert!(l.tick(&set, t0).probe.is_empty());
        let mut probes = 0;
        let dead_at = loop {
            let t = l.deadline().expect("a watched peer has a deadline");
            let r = l.tick(&set, t);
            probes += r.probe.len();
            if !r.dead.is_empty() {
                assert_eq!(r.dead, vec![gid(1)]);
                break t;
            }
            assert!(t - t0 <= CFG.bound(), "no verdict past the bound");
        };
        assert_eq!(probes, 4);
        assert_eq!(dead_at - t0, CFG.bound());
        assert_eq!(l.deadline(), None, "a gone peer is forgotten");
    }

    #[test]
    fn hearing_from_a_peer_resets_it_and_an_unconnected_peer_is_not_watched() {
        let mut l = Liveness::new(CFG);
        let t0 = Instant::now();
        let set: HashSet<Gid> = [gid(1)].into();
        l.tick(&set, t0);
        let t1 = t0 + CFG.idle;
        assert_eq!(l.tick(&set, t1).probe, vec![gid(1)]);
        l.heard(gid(1), t1 + Duration::from_millis(10));
        assert_eq!(
            l.deadline(),
            Some(t1 + Duration::from_millis(10) + CFG.idle)
        );
        // Many probe rounds, each answered: never gone.
        let mut t = t1;
        for _ in 0..20 {
            t = l.deadline().unwrap();
            let r = l.tick(&set, t);
            assert!(r.dead.is_empty());
            l.heard(gid(1), t);
        }
        // No connection left: nothing to watch, no wake-ups.
        l.changed();
        assert!(l.due(t));
        let r = l.tick(&HashSet::new(), t);
        assert!(r.probe.is_empty() && r.dead.is_empty());
        assert_eq!(l.deadline(), None);
        l.heard(gid(2), t);
        assert_eq!(l.deadline(), None);
    }
}
