//! `--verify`: after each size, check every destination byte the last
//! operation on each slot wrote on this side (atomics: the exact final
//! counter, and the values fetched). Each check returns its mismatches as
//! lines for the report.

use super::ops::Ctx;
use super::params::{last_in_slot, read_slot};
use super::values::{
    atomic_before, lat_marker, W_LAT_CLIENT, W_LAT_SERVER, W_READSRC, W_SEND, W_WRITE,
};
use super::Role;
use crate::args::Verb;
use crate::pattern;
use soft_rdma::verbs::QpType;
use std::time::{Duration, Instant};

impl Ctx<'_> {
    /// Check every byte the last operation on each slot wrote on this side.
    pub(super) fn verify(&self, role: Role) -> Vec<String> {
        let mut fails = Vec::new();
        let lat = self.a.test.lat;
        if self.a.conn == QpType::Uc && role == Role::Server {
            self.wait_quiet_link();
        }
        for q in 0..self.a.qps as usize {
            match (self.a.test.verb, role, lat) {
                (Verb::Write, Role::Server, false) if self.a.conn == QpType::Uc => {
                    self.check_uc_writes(&mut fails, q)
                }
                (Verb::Write, Role::Server, false) | (Verb::Send, Role::Server, false) => {
                    self.check_received(&mut fails, q)
                }
                (Verb::Read, Role::Client, false) => self.check_reads(&mut fails, q),
                (Verb::Read, Role::Client, true) => self.check_read_lat(&mut fails, q),
                (Verb::Write, _, true) => self.check_write_lat(&mut fails, q, role),
                (Verb::Send, _, true) => self.check_send_lat(&mut fails, q, role),
                (Verb::Atomic, Role::Server, _) => self.check_counter(&mut fails, q),
                (Verb::Atomic, Role::Client, _) => self.check_fetched(&mut fails, q),
                _ => {}
            }
        }
        fails
    }

    /// Whether `len` bytes at `off` of QP `q`'s destination hold the
    /// pattern of `seed`; if not, a line saying where they differ.
    fn check(
        &self,
        fails: &mut Vec<String>,
        q: usize,
        off: usize,
        len: usize,
        seed: u64,
        what: String,
    ) {
        if let Some((o, e, g, n)) = pattern::check(self.s.dst[q].bytes(off, len), seed) {
            fails.push(format!("qp {q} {what}: {n} of {len} bytes differ, first at byte {o}: expected {e:#04x}, got {g:#04x}"));
        }
    }

    /// The pattern the peer's latency messages carry.
    fn peer_lat_seed(&self, role: Role) -> u64 {
        if role == Role::Client {
            W_LAT_SERVER
        } else {
            W_LAT_CLIENT
        }
    }

    /// UC WRITEs complete at the sender when sent: the client's DONE can
    /// overtake packets still queued here. Check once the link is quiet
    /// (at most 2 s), or a chunk being written would look torn.
    fn wait_quiet_link(&self) {
        let t = Instant::now();
        let mut seen = self.s.dev.stats().rcvd_pkts;
        while t.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(20));
            let now = self.s.dev.stats().rcvd_pkts;
            if now == seen {
                break;
            }
            seen = now;
        }
    }

    /// write_bw over UC, unreliable: a dropped packet loses (the rest of)
    /// its message. Each MTU chunk must hold that chunk of some write aimed
    /// at this slot, or still be zero — never bytes no write carried.
    fn check_uc_writes(&self, fails: &mut Vec<String>, q: usize) {
        let iters = self.iters();
        let size = self.size as usize;
        let mut lost = 0usize;
        for s in 0..self.k {
            let writes: Vec<u64> = (0..iters)
                .filter(|i| (*i as usize) % self.k == s)
                .rev()
                .collect();
            let Some(&last) = writes.first() else {
                continue;
            };
            for c in (0..size).step_by(self.mtu) {
                let buf = self.s.dst[q].bytes(s * self.slot + c, self.mtu.min(size - c));
                if pattern::matches_at(buf, self.seed(W_WRITE, q, last), c) {
                    continue;
                }
                lost += 1;
                if !buf.iter().all(|&b| b == 0)
                    && !writes
                        .iter()
                        .any(|&i| pattern::matches_at(buf, self.seed(W_WRITE, q, i), c))
                {
                    fails.push(format!("qp {q} slot {s}: bytes {c}..{} match no write to this slot (UC may lose data, never corrupt it)", c + buf.len()));
                }
            }
        }
        if lost > 0 {
            eprintln!("softrdma: verify: qp {q}: UC lost {lost} packet(s) of data (allowed: UC is unreliable)");
        }
    }

    /// write_bw / send_bw's receiving side: each slot holds the last
    /// message aimed at it.
    fn check_received(&self, fails: &mut Vec<String>, q: usize) {
        let (what, off) = if self.a.test.verb == Verb::Send {
            (W_SEND, self.recv_off())
        } else {
            (W_WRITE, 0)
        };
        for s in 0..self.k {
            if let Some(i) = last_in_slot(s, self.k, self.iters()) {
                self.check(
                    fails,
                    q,
                    s * self.slot + off,
                    self.size as usize,
                    self.seed(what, q, i),
                    format!("slot {s} (iteration {i})"),
                );
            }
        }
    }

    /// read_bw's requester: each slot holds the remote slot its last read
    /// fetched; on a mismatch, say whose data it holds instead (a stale or
    /// misplaced response).
    fn check_reads(&self, fails: &mut Vec<String>, q: usize) {
        let size = self.size as usize;
        for s in 0..self.k {
            let Some(i) = last_in_slot(s, self.k, self.iters()) else {
                continue;
            };
            let r = read_slot(i, self.k);
            let before = fails.len();
            self.check(
                fails,
                q,
                s * self.slot,
                size,
                self.seed(W_READSRC, q, r as u64),
                format!("slot {s} (iteration {i}, remote slot {r})"),
            );
            if fails.len() > before {
                let page = self.s.dst[q].bytes(s * self.slot, size.min(4096));
                if let Some(o) = (0..self.k)
                    .find(|&o| pattern::check(page, self.seed(W_READSRC, q, o as u64)).is_none())
                {
                    let l = fails.len() - 1;
                    fails[l].push_str(&format!("; that data is remote slot {o}'s"));
                }
            }
        }
    }

    /// read_lat: the one buffer holds the last read's remote slot.
    fn check_read_lat(&self, fails: &mut Vec<String>, q: usize) {
        let iters = self.iters();
        let r = ((iters - 1) as usize) % self.k;
        self.check(
            fails,
            q,
            0,
            self.size as usize,
            self.seed(W_READSRC, q, r as u64),
            format!("read buffer (iteration {}, remote slot {r})", iters - 1),
        );
    }

    /// write_lat: the one buffer holds the peer's last message, marker
    /// included.
    fn check_write_lat(&self, fails: &mut Vec<String>, q: usize, role: Role) {
        let size = self.size as usize;
        let i = self.iters() - 1;
        self.check(
            fails,
            q,
            0,
            size - 1,
            self.seed(self.peer_lat_seed(role), q, i),
            format!("buffer (iteration {i})"),
        );
        let last = self.s.dst[q].bytes(size - 1, 1)[0];
        if last != lat_marker(i) {
            fails.push(format!(
                "qp {q} buffer: last byte {last:#04x}, expected {:#04x}",
                lat_marker(i)
            ));
        }
    }

    /// send_lat: each receive slot holds the last of the peer's messages
    /// received into it.
    fn check_send_lat(&self, fails: &mut Vec<String>, q: usize, role: Role) {
        for s in 0..self.k {
            if let Some(i) = last_in_slot(s, self.k, self.iters()) {
                self.check(
                    fails,
                    q,
                    s * self.slot + self.recv_off(),
                    self.size as usize,
                    self.seed(self.peer_lat_seed(role), q, i),
                    format!("receive slot {s} (message {i})"),
                );
            }
        }
    }

    /// The atomics' target: the counter after every operation, exactly.
    fn check_counter(&self, fails: &mut Vec<String>, q: usize) {
        let iters = self.iters();
        let want = atomic_before(self.a.atomic, q, iters);
        let got = self.s.dst[q].volatile_u64(0);
        if got != want {
            fails.push(format!(
                "qp {q} counter after {iters} {}: expected {want:#x}, got {got:#x}",
                self.a.atomic.name()
            ));
        }
    }

    /// The atomics' requester: each slot holds the value its last operation
    /// fetched (the counter before it).
    fn check_fetched(&self, fails: &mut Vec<String>, q: usize) {
        let iters = self.iters();
        let lat = self.a.test.lat;
        let slots = if lat { 1 } else { self.k };
        for s in 0..slots {
            let last = if lat {
                Some(iters - 1)
            } else {
                last_in_slot(s, self.k, iters)
            };
            if let Some(i) = last {
                let want = atomic_before(self.a.atomic, q, i);
                let got = self.s.dst[q].volatile_u64(s * self.slot);
                if got != want {
                    fails.push(format!(
                        "qp {q} value fetched by operation {i}: expected {want:#x}, got {got:#x}"
                    ));
                }
            }
        }
    }
}
