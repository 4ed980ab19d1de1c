//! One copy on one host: RC WRITE payloads to a same-host device go by
//! reference (the receiver reads them from the sender's memory) — every
//! byte placed and nothing else, in one process and across two; a read the
//! kernel refuses falls back to payloads in the packets; a hostile
//! reference writes nothing outside the MR and is counted.
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use soft_rdma::transport::{Link, Outgoing, RecvBatch, UdpLink, REF_LEN};
use soft_rdma::verbs::*;
use soft_rdma::wire::icrc::IcrcContext;
use soft_rdma::wire::{
    Bth, Ext, NakCode, Op, Opcode, Packet, PacketRepr, Reth, Syndrome, Transport,
};
use test_support::verbs::*;

const BIN: &str = env!("CARGO_BIN_EXE_softrdma");

/// Embedded: the sender's buffer is read with a plain (guarded) copy, for
/// pinned and ODP memory on both sides, at odd offsets and lengths (below
/// 16 KiB the payload is carried); the bytes around each target range stay
/// as they were.
#[test]
fn writes_by_reference_place_every_byte_and_nothing_else() {
    const LEN: usize = 2 << 20;
    for extra in [Access::default(), Access::ON_DEMAND] {
        let (a, b) = (node(), node());
        let (qa, _qb) = connect(&a, &b, QpType::Rc);
        let src = Buf::new(LEN, |i| (i % 251) as u8);
        let dst = Buf::new(LEN + 8192, |_| 0xee);
        let mra =
            a.pd.reg_mr(src.addr(), LEN as u64, all_access() | extra)
                .unwrap();
        let mrb =
            b.pd.reg_mr(dst.addr() + 4096, LEN as u64, all_access() | extra)
                .unwrap();
        // Until the ring is up the packets go by UDP, in full.
        let t = Instant::now();
        while b.dev.stats().link_by_ref_received == 0 {
            assert!(t.elapsed() < Duration::from_secs(10), "no ring came up");
            write(
                &qa,
                0,
                src.sge(&mra, 0, 16 << 10),
                dst.addr() + 4096,
                mrb.rkey(),
            );
            wait(&a.cq, 1);
        }
        let before = b.dev.stats().link_by_ref_received;
        let mut expect = dst.0.clone();
        let cases = [
            (1, 3),
            (4093, 1),
            (4095, 4096),
            (4097, 8191),
            (16384, 5),
            (16387, 4091),
            (65536, 0),
            (65541, 77),
        ];
        for (k, &(len, off)) in cases.iter().chain(&[(LEN - 4096, 4096)]).enumerate() {
            let from = (k * 977) % 4096;
            let at = 4096 + off;
            write(
                &qa,
                k as u64 + 1,
                src.sge(&mra, from, len),
                dst.addr() + at as u64,
                mrb.rkey(),
            );
            let c = wait(&a.cq, 1);
            assert_eq!(c[0].status, WcStatus::Success, "{extra:?} case {k}");
            expect[at..at + len].copy_from_slice(&src.0[from..from + len]);
            assert!(dst.0 == expect, "{extra:?} case {k}: {len} bytes at {at}");
        }
        let s = b.dev.stats();
        assert!(
            s.link_by_ref_received - before >= (LEN as u64 - 4096) / 4096,
            "the payloads came by reference: {s:?}"
        );
        assert_eq!(s.link_by_ref_failed, 0);
        drop((qa, mra, mrb));
    }
}

fn stat(out: &str, name: &str) -> Vec<u64> {
    out.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some(name))
                .then(|| w.next()?.parse().ok())
                .flatten()
        })
        .collect()
}

/// `softrdma perf write_bw --verify --stats` with `env`; its output.
fn perf(env: &[(&str, &str)], args: &[&str]) -> String {
    let o = Command::new(BIN)
        .args(["perf", "write_bw", "-s", "65536", "--verify", "--stats"])
        .args(args)
        .envs(env.iter().copied())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{args:?} failed:\n{out}");
    assert!(out.contains("Verify: OK"), "{out}");
    out
}

/// A receiver that may not read the sender's memory (here the test hook
/// standing for Yama's `ptrace_scope` or another kernel refusal) asks the
/// sender to carry its payloads: every byte still arrives.
#[test]
fn a_refused_read_falls_back_to_payloads_in_the_packets() {
    let out = perf(&[("SOFTRDMA_ONECOPY", "eperm")], &["-n", "400"]);
    let failed: u64 = stat(&out, "link_by_ref_failed").iter().sum();
    let received: u64 = stat(&out, "link_by_ref_received").iter().sum();
    assert!(failed >= 1, "no read was refused:\n{out}");
    // Refused at the first, then asked for full packets: only what was in
    // flight by then came by reference.
    assert!(received < 400 * 16 / 2, "kept sending by reference:\n{out}");
    // And with it off, nothing goes by reference.
    let out = perf(&[("SOFTRDMA_ONECOPY", "off")], &["-n", "50"]);
    assert!(
        stat(&out, "link_by_ref_sent").iter().all(|&n| n == 0),
        "{out}"
    );
}

/// A `softrdma perf write_bw` pair in two processes with `env`: the
/// client's output and the server's.
fn two_processes(env: &[(&str, &str)], port: u16) -> (String, String) {
    two_processes_with(env, port, &[])
}

/// [`two_processes`], both sides also given `extra`.
fn two_processes_with(env: &[(&str, &str)], port: u16, extra: &[&str]) -> (String, String) {
    let port = port.to_string();
    let srv = Command::new(BIN)
        .args([
            "perf", "write_bw", "-s", "65536", "--stats", "--server", "-p", &port,
        ])
        .args(extra)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let mut args = vec!["-n", "2000", "--client", "127.0.0.1", "-p", &port];
    args.extend_from_slice(extra);
    let out = perf(env, &args);
    let s = srv.wait_with_output().unwrap();
    let sout = String::from_utf8_lossy(&s.stdout).to_string() + &String::from_utf8_lossy(&s.stderr);
    assert!(s.status.success(), "server:\n{sout}");
    (out, sout)
}

/// Two processes with `SOFTRDMA_ONECOPY=all`: the receiver reads the
/// sender's memory with `process_vm_readv` (the same uid; no Yama here, or
/// a permissive one); by default (`local`) it asks for whole packets.
#[test]
fn two_processes_write_by_reference() {
    let port = 21000 + (std::process::id() % 9000) as u16;
    let (out, sout) = two_processes(&[("SOFTRDMA_ONECOPY", "all")], port);
    let sent: u64 = stat(&out, "link_by_ref_sent").iter().sum();
    let received: u64 = stat(&sout, "link_by_ref_received").iter().sum();
    if stat(&sout, "link_by_ref_failed").iter().sum::<u64>() > 0 {
        // A kernel that forbids it (Yama): the fallback carried the bytes.
        eprintln!("process_vm_readv refused here: fell back to full packets");
    } else {
        assert!(
            sent > 1000 && received > 1000,
            "client:\n{out}\nserver:\n{sout}"
        );
    }
    let (out, sout) = two_processes(&[], port + 1);
    let refs: u64 = stat(&(out.clone() + &sout), "link_by_ref_sent")
        .iter()
        .sum();
    assert_eq!(refs, 0, "client:\n{out}\nserver:\n{sout}");
}

/// Across processes each run of a message's packets is placed with one
/// `process_vm_readv` straight into the MR, pinned or ODP; every byte
/// checked on both sides (`--verify`).
#[test]
fn two_processes_place_runs_straight_into_pinned_and_odp_mrs() {
    let port = 21000 + ((std::process::id() + 4000) % 9000) as u16;
    for (k, extra) in [&["--verify"][..], &["--verify", "--odp"]]
        .iter()
        .enumerate()
    {
        let (out, sout) =
            two_processes_with(&[("SOFTRDMA_ONECOPY", "all")], port + k as u16, extra);
        assert!(sout.contains("Verify: OK"), "server {extra:?}:\n{sout}");
        if stat(&sout, "link_by_ref_failed").iter().sum::<u64>() > 0 {
            eprintln!("process_vm_readv refused here: fell back to full packets");
            continue;
        }
        let received: u64 = stat(&sout, "link_by_ref_received").iter().sum();
        assert!(
            received > 1000,
            "{extra:?}: client:\n{out}\nserver:\n{sout}"
        );
    }
}

/// Across processes, a receiver whose reads are refused (the `eperm` hook:
/// Yama's answer) undoes each run it could not place and asks for the
/// packets again, carried: the transfer completes, every byte in place.
#[test]
fn two_processes_a_refused_run_falls_back_to_carried_payloads() {
    let port = 21000 + ((std::process::id() + 6000) % 9000) as u16;
    let (out, sout) = two_processes_with(
        &[("SOFTRDMA_ONECOPY", "eperm")],
        port,
        &["--verify", "--odp"],
    );
    assert!(sout.contains("Verify: OK"), "server:\n{sout}");
    let failed: u64 = stat(&sout, "link_by_ref_failed").iter().sum();
    assert!(
        failed >= 1,
        "no read was refused:\nclient:\n{out}\nserver:\n{sout}"
    );
    let received: u64 = stat(&sout, "link_by_ref_received").iter().sum();
    assert!(
        received < 2000 * 16 / 2,
        "kept sending by reference:\n{sout}"
    );
}

/// An attacker in the same process (a link of its own, connected to the
/// victim's QPs) sends references by hand.
struct Attacker {
    link: UdpLink,
    victim: SocketAddr,
}

impl Attacker {
    fn new(at: &str, victim: &Node) -> Attacker {
        let link = UdpLink::bind_same_host(at.parse().unwrap()).unwrap();
        let victim = SocketAddr::new(victim.dev.gid(1).unwrap().device_ip(), 4791);
        let mut scratch = RecvBatch::new(64);
        let t = Instant::now();
        // Junk until the ring is up (the victim counts it as malformed).
        while !link.by_ref(victim) {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "no ring to the victim"
            );
            link.send(&[Outgoing {
                peer: victim,
                data: &[0; 20],
            }])
            .unwrap();
            link.recv(&mut scratch, Some(Duration::from_millis(5)))
                .unwrap();
        }
        Attacker { link, victim }
    }

    /// A WRITE_ONLY to `qpn` at `psn` naming `reth`, its payload `len`
    /// bytes at our `va`.
    fn write(&self, qpn: u32, psn: u32, reth: Reth, va: u64, len: u32) -> usize {
        let repr = request(qpn, psn, Op::WriteOnly, Ext::Reth(reth));
        self.link.send_by_ref(self.victim, &[&stub(&repr, va, len)])
    }

    /// The packets of a `len`-byte WRITE to `qpn` from `psn` in `mtu`
    /// packets naming `reth` (its length may differ from `len`), each
    /// with the offset and length of its payload.
    fn message(qpn: u32, psn: u32, reth: Reth, len: u32, mtu: u32) -> Vec<(PacketRepr, u32, u32)> {
        let n = len.div_ceil(mtu);
        (0..n)
            .map(|k| {
                let (op, ext) = match (k, n) {
                    (0, 1) => (Op::WriteOnly, Ext::Reth(reth)),
                    (0, _) => (Op::WriteFirst, Ext::Reth(reth)),
                    (k, n) if k == n - 1 => (Op::WriteLast, Ext::None),
                    _ => (Op::WriteMiddle, Ext::None),
                };
                let mut r = request(qpn, psn + k, op, ext);
                r.bth.ack_req = k == n - 1;
                (r, k * mtu, mtu.min(len - k * mtu))
            })
            .collect()
    }

    /// `pkts` by reference, their payloads at `va` + each one's offset,
    /// in one go (one ring write: one receive run).
    fn send_refs(&self, pkts: &[(PacketRepr, u32, u32)], va: u64) {
        let stubs: Vec<Vec<u8>> = pkts
            .iter()
            .map(|(r, off, len)| stub(r, va + u64::from(*off), *len))
            .collect();
        let refs: Vec<&[u8]> = stubs.iter().map(|s| &s[..]).collect();
        assert_eq!(self.link.send_by_ref(self.victim, &refs), refs.len());
    }

    /// `pkts` carrying their payloads (from `data`), ICRC sealed.
    fn send_carried(&self, pkts: &[(PacketRepr, u32, u32)], data: &[u8]) {
        let ctx = IcrcContext::between(self.link.local(), self.victim);
        let bufs: Vec<Vec<u8>> = pkts
            .iter()
            .map(|(r, off, len)| {
                let r = PacketRepr {
                    payload_len: *len as usize,
                    ..*r
                };
                let mut b = vec![0u8; r.buffer_len()];
                r.emit(&mut b).unwrap();
                let h = r.header_len();
                b[h..h + *len as usize].copy_from_slice(&data[*off as usize..(off + len) as usize]);
                Packet::new_unchecked(&mut b[..]).seal_icrc(&ctx);
                b
            })
            .collect();
        let out: Vec<Outgoing> = bufs
            .iter()
            .map(|b| Outgoing {
                peer: self.victim,
                data: b,
            })
            .collect();
        self.link.send(&out).unwrap();
    }

    /// The ACKs and NAKs the victim sends until `done` says so (5 s at
    /// most): each one's PSN and syndrome.
    fn answers(&self, done: impl Fn(&[(u32, Syndrome)]) -> bool) -> Vec<(u32, Syndrome)> {
        let mut batch = RecvBatch::new(64);
        let mut got = Vec::new();
        let t = Instant::now();
        while !done(&got) {
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "answers so far: {got:?}"
            );
            self.link
                .recv(&mut batch, Some(Duration::from_millis(5)))
                .unwrap();
            for i in 0..batch.len() {
                if let Ok((r, _)) = PacketRepr::parse(batch.get(i).1) {
                    if let Ext::Aeth(a) = r.ext {
                        got.push((r.bth.psn, a.syndrome));
                    }
                }
            }
        }
        got
    }
}

/// A request header to `qpn` at `psn` (no payload yet).
fn request(qpn: u32, psn: u32, op: Op, ext: Ext) -> PacketRepr {
    PacketRepr {
        bth: Bth {
            opcode: Opcode::new(Transport::Rc, op).unwrap(),
            solicited: false,
            mig_req: false,
            pad: 0,
            pkey: 0xffff,
            fecn: false,
            becn: false,
            dest_qp: qpn,
            ack_req: true,
            psn,
        },
        ext,
        payload_len: 0,
    }
}

/// `repr`'s headers and a reference to `len` bytes at our `va`.
fn stub(repr: &PacketRepr, va: u64, len: u32) -> Vec<u8> {
    let mut stub = vec![0u8; repr.buffer_len()];
    repr.emit(&mut stub).unwrap();
    stub.truncate(repr.header_len());
    stub.extend_from_slice(&va.to_le_bytes());
    stub.extend_from_slice(&len.to_le_bytes());
    stub.extend_from_slice(&[0; REF_LEN - 12]);
    stub
}

/// A QP of `victim` connected to the attacker.
fn victim_qp(victim: &Node, attacker: &Attacker, cfg: &QpConfig) -> Qp {
    let q = cfg.create(&victim.pd, &victim.cq);
    cfg.bring_up(&q, 0x91, Gid::from_ip(attacker.link.local().ip()));
    q
}

const PAGE: usize = 4096;

/// A read that fails in the middle of a run (the sender's buffer is gone
/// from its second page on: EFAULT) counts none of it: the run is undone
/// and its first packet NAKed (PSN sequence error); the sender, asked to
/// carry its payloads, sends the message again in full and it completes —
/// into a pinned MR and an ODP one, every byte as the carried packets say
/// and nothing around them touched.
#[test]
fn a_run_whose_read_fails_midway_counts_nothing_and_completes_carried() {
    for (k, extra) in [Access::default(), Access::ON_DEMAND]
        .into_iter()
        .enumerate()
    {
        let victim = node();
        let attacker = Attacker::new(&format!("127.77.43.{}:4791", k + 1), &victim);
        let cfg = QpConfig::new(QpType::Rc);
        let mtu = cfg.mtu.bytes() as u32;
        let qp = victim_qp(&victim, &attacker, &cfg);
        let dst = Buf::new(4 * PAGE, |_| 0xee);
        let mr = victim
            .pd
            .reg_mr(
                dst.addr() + PAGE as u64,
                2 * PAGE as u64,
                all_access() | extra,
            )
            .unwrap();
        // The sender's 8 KiB: its first page readable, its second gone.
        let src = odp::Mapping::anon(2 * PAGE).unwrap();
        // SAFETY: this test's own mapping; no reference into it is live.
        unsafe {
            std::ptr::write_bytes(src.as_ptr(), 0x5a, PAGE);
            src.protect(PAGE, PAGE, odp::Prot::None).unwrap();
        }
        let reth = Reth {
            va: dst.addr() + PAGE as u64,
            rkey: mr.rkey(),
            len: 2 * PAGE as u32,
        };
        let pkts = Attacker::message(qp.qp_num(), cfg.psn, reth, 2 * PAGE as u32, mtu);
        attacker.send_refs(&pkts, src.addr() as u64);
        let got = attacker.answers(|g| !g.is_empty());
        assert_eq!(
            got,
            [(cfg.psn, Syndrome::Nak(NakCode::PsnSequenceError))],
            "{extra:?}: the run's first packet NAKed, nothing acknowledged"
        );
        let s = victim.dev.stats();
        assert_eq!((s.link_by_ref_failed, s.nak_sent_seq_err), (1, 1), "{s:?}");
        assert!(
            !attacker.link.by_ref(attacker.victim),
            "still asked for references"
        );
        // The resend, carried (the sender's bytes as it has them now).
        let mut data = vec![0x5a; PAGE];
        data.extend((0..PAGE).map(|i| i as u8));
        attacker.send_carried(&pkts, &data);
        let last = cfg.psn + pkts.len() as u32 - 1;
        let got = attacker.answers(|g| g.iter().any(|a| a.0 == last));
        assert!(
            got.iter().all(|a| matches!(a.1, Syndrome::Ack { .. })),
            "{extra:?}: {got:?}"
        );
        let mut expect = vec![0xee; 4 * PAGE];
        expect[PAGE..3 * PAGE].copy_from_slice(&data);
        assert!(std::hint::black_box(&dst.0) == &expect, "{extra:?}");
        assert_eq!(victim.dev.stats().duplicate_requests, 0);
        drop((qp, mr));
    }
}

/// A violation in the middle of a run: the packets before it are placed
/// (its NAK acknowledges them), nothing of it or after it is. The rules
/// are responder.rs's: a bad R_Key or a range past the MR is a remote
/// access error, a payload longer than the path MTU an invalid request;
/// both end the connection (the QP goes to the error state, so nothing
/// after it runs).
#[test]
fn a_violation_in_the_middle_of_a_run_places_nothing_past_it() {
    let victim = node();
    let attacker = Attacker::new("127.77.44.1:4791", &victim);
    let cfg = QpConfig::new(QpType::Rc);
    let mtu = cfg.mtu.bytes() as u32;
    let src = Buf::new(8 * PAGE, |i| (i % 253) as u8);
    // Three cases, each on a QP of its own: the second message's R_Key is
    // wrong; its range runs past the MR's end; its third packet is longer
    // than the path MTU.
    for case in 0..3u32 {
        let qp = victim_qp(&victim, &attacker, &cfg);
        let dst = Buf::new(4 * PAGE, |_| 0xee);
        let mr = victim
            .pd
            .reg_mr(dst.addr(), 4 * PAGE as u64, all_access())
            .unwrap();
        let at = |off: usize| dst.addr() + off as u64;
        let one = Reth {
            va: at(0),
            rkey: mr.rkey(),
            len: PAGE as u32,
        };
        let two = match case {
            0 => Reth {
                va: at(PAGE),
                rkey: mr.rkey() ^ 0x80,
                len: 2 * PAGE as u32,
            },
            1 => Reth {
                va: at(3 * PAGE),
                rkey: mr.rkey(),
                len: 2 * PAGE as u32,
            },
            _ => Reth {
                va: at(PAGE),
                rkey: mr.rkey(),
                len: 2 * PAGE as u32,
            },
        };
        let mut pkts = Attacker::message(qp.qp_num(), cfg.psn, one, PAGE as u32, mtu);
        let second = cfg.psn + pkts.len() as u32;
        let mut rest = Attacker::message(qp.qp_num(), second, two, 2 * PAGE as u32, mtu);
        // Its payload follows the first's in the sender's memory.
        for p in &mut rest {
            p.1 += PAGE as u32;
        }
        if case == 2 {
            // Its third packet claims twice the MTU; the offsets after it
            // move on by as much, so the run stays contiguous.
            rest[2].2 = 2 * mtu;
            for p in &mut rest[3..] {
                p.1 += mtu;
            }
            rest.truncate(rest.len() - 1);
        }
        pkts.extend(rest);
        attacker.send_refs(&pkts, src.addr());
        let (bad, code) = match case {
            2 => (second + 2, NakCode::InvalidRequest),
            _ => (second, NakCode::RemoteAccessError),
        };
        let got = attacker.answers(|g| g.iter().any(|a| matches!(a.1, Syndrome::Nak(_))));
        assert_eq!(
            got.last(),
            Some(&(bad, Syndrome::Nak(code))),
            "case {case}: {got:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
        let mut expect = vec![0xee; 4 * PAGE];
        expect[..PAGE].copy_from_slice(&src.0[..PAGE]);
        if case == 2 {
            // The second message's first two packets, before the bad one.
            expect[PAGE..PAGE + 2 * mtu as usize]
                .copy_from_slice(&src.0[PAGE..PAGE + 2 * mtu as usize]);
        }
        assert!(std::hint::black_box(&dst.0) == &expect, "case {case}");
        assert_eq!(qp.state(), QpState::Err, "case {case}");
        drop((qp, mr));
    }
}

#[test]
fn a_hostile_reference_writes_nothing_outside_the_mr_and_is_counted() {
    let victim = node();
    let attacker = Attacker::new("127.77.41.9:4791", &victim);
    let cfg = QpConfig::new(QpType::Rc);
    let qp = |peer_qpn| {
        let q = cfg.create(&victim.pd, &victim.cq);
        cfg.bring_up(&q, peer_qpn, Gid::from_ip(attacker.link.local().ip()));
        q
    };
    let (q1, q2, q3, q4) = (qp(0x91), qp(0x92), qp(0x93), qp(0x94));
    // The MR is the middle page of three.
    let buf = Buf::new(3 * 4096, |_| 0xee);
    let mr = victim
        .pd
        .reg_mr(buf.addr() + 4096, 4096, all_access())
        .unwrap();
    let reth = |off: u64, len: u32| Reth {
        va: buf.addr() + 4096 + off,
        rkey: mr.rkey(),
        len,
    };
    let src = Buf::new(8192, |i| i as u8);
    let settle = |what: &dyn Fn(&DeviceStats) -> bool| {
        let t = Instant::now();
        while !what(&victim.dev.stats()) {
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "{:?}",
                victim.dev.stats()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    };
    let mut expect = buf.0.clone();
    // A fair one, for a start: placed.
    assert_eq!(
        attacker.write(q1.qp_num(), cfg.psn, reth(100, 64), src.addr(), 64),
        1
    );
    // Placed before its ACK leaves.
    settle(&|s| s.link_by_ref_received >= 1 && s.sent_pkts >= 1);
    expect[4196..4260].copy_from_slice(&src.0[..64]);
    assert!(
        std::hint::black_box(&buf.0) == &expect,
        "the fair write was not placed"
    );
    // A range past the MR's end: the R_Key check refuses it.
    attacker.write(q2.qp_num(), cfg.psn, reth(4096 - 32, 64), src.addr(), 64);
    settle(&|s| s.nak_sent_rem_access >= 1);
    // A reference longer than the RETH says (past the MR's end): invalid.
    attacker.write(q3.qp_num(), cfg.psn, reth(4096 - 32, 32), src.addr(), 64);
    settle(&|s| s.nak_sent_inv_req >= 1);
    // A reference to memory the sender does not have: the read fails,
    // nothing lands, the sender is asked for full packets.
    attacker.write(q4.qp_num(), cfg.psn, reth(0, 64), 0x1000, 64);
    settle(&|s| s.link_by_ref_failed >= 1);
    std::thread::sleep(Duration::from_millis(20));
    assert!(
        std::hint::black_box(&buf.0) == &expect,
        "bytes changed outside the fair write"
    );
    assert!(
        !attacker.link.by_ref(attacker.victim),
        "still asked for references"
    );
    drop((q1, q2, q3, q4, mr));
}

/// A capture sits above the link: with `SOFTRDMA_PCAP` set nothing goes by
/// reference, and the file holds every WRITE's payload.
#[test]
fn a_capture_sees_whole_packets() {
    let pcap = std::env::temp_dir().join(format!("onecopy-{}.pcap", std::process::id()));
    let out = perf(&[("SOFTRDMA_PCAP", pcap.to_str().unwrap())], &["-n", "40"]);
    let size = std::fs::metadata(&pcap).map(|m| m.len()).unwrap_or(0);
    let _ = std::fs::remove_file(&pcap);
    assert!(
        stat(&out, "link_by_ref_sent").iter().all(|&n| n == 0),
        "{out}"
    );
    // Both devices record what they receive: the 40 WRITEs' payload at least.
    assert!(size > 40 * 65536, "capture of {size} bytes:\n{out}");
}

/// A receiver whose link is wrapped (a fault layer that holds packets
/// here, a capture alike) asks its peers for whole packets, whatever the
/// sender's own link is: the wrapper edits and records real packets.
#[test]
fn a_wrapped_receiver_gets_whole_packets() {
    use soft_rdma::transport::{FaultConfig, FaultLink};
    let a = node();
    let link = UdpLink::bind_same_host("127.77.42.2:4791".parse().unwrap()).unwrap();
    let cfg: FaultConfig = "delay_us=1".parse().unwrap();
    let b = Node::on_link(std::sync::Arc::new(FaultLink::new(link, cfg)), 256);
    let (qa, _qb) = connect(&a, &b, QpType::Rc);
    let src = Buf::new(1 << 20, |i| (i % 241) as u8);
    let dst = Buf::new(1 << 20, |_| 0);
    let mra = a.pd.reg_mr(src.addr(), 1 << 20, all_access()).unwrap();
    let mrb = b.pd.reg_mr(dst.addr(), 1 << 20, all_access()).unwrap();
    for k in 0..20 {
        write(&qa, k, src.sge(&mra, 0, 1 << 20), dst.addr(), mrb.rkey());
        assert_eq!(wait(&a.cq, 1)[0].status, WcStatus::Success);
    }
    assert!(std::hint::black_box(&dst.0) == &src.0);
    let (sa, sb) = (a.dev.stats(), b.dev.stats());
    assert!(sb.link_same_host_received > 0, "no ring: {sb:?}");
    assert_eq!((sa.link_by_ref_sent, sb.link_by_ref_received), (0, 0));
}

/// An injector that only drops needs no packet's bytes: references go on,
/// lost ones are resent (as references again), and every byte arrives —
/// so a lossy run and a loss-free one take the same path. One that may
/// corrupt gets whole packets.
#[test]
fn a_drop_only_injector_keeps_references() {
    let out = perf(&[("SOFTRDMA_FAULTS", "drop=0.01,seed=7")], &["-n", "400"]);
    let sent: u64 = stat(&out, "link_by_ref_sent").iter().sum();
    let dropped: u64 = stat(&out, "fault_dropped").iter().sum();
    let resent: u64 = stat(&out, "retransmits").iter().sum();
    assert!(sent >= 400 * 16, "references stopped:\n{out}");
    assert!(dropped > 0 && resent > 0, "nothing lost or resent:\n{out}");
    let out = perf(
        &[("SOFTRDMA_FAULTS", "corrupt=0.001,seed=7")],
        &["-n", "40"],
    );
    assert!(
        stat(&out, "link_by_ref_sent").iter().all(|&n| n == 0),
        "{out}"
    );
}
