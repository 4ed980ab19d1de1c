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
use soft_rdma::wire::{Bth, Ext, Op, Opcode, PacketRepr, Reth, Transport};
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
    let port = port.to_string();
    let srv = Command::new(BIN)
        .args([
            "perf", "write_bw", "-s", "65536", "--stats", "--server", "-p", &port,
        ])
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let out = perf(env, &["-n", "2000", "--client", "127.0.0.1", "-p", &port]);
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
        let repr = PacketRepr {
            bth: Bth {
                opcode: Opcode::new(Transport::Rc, Op::WriteOnly).unwrap(),
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
            ext: Ext::Reth(reth),
            payload_len: 0,
        };
        let mut stub = vec![0u8; repr.buffer_len()];
        repr.emit(&mut stub).unwrap();
        stub.truncate(repr.header_len());
        stub.extend_from_slice(&va.to_le_bytes());
        stub.extend_from_slice(&len.to_le_bytes());
        stub.extend_from_slice(&[0; REF_LEN - 12]);
        self.link.send_by_ref(self.victim, &[&stub])
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

/// A receiver whose link is wrapped (a fault layer here, a capture alike)
/// asks its peers for whole packets, whatever the sender's own link is:
/// the wrapper edits and records real packets.
#[test]
fn a_wrapped_receiver_gets_whole_packets() {
    use soft_rdma::transport::{FaultConfig, FaultLink};
    let a = node();
    let link = UdpLink::bind_same_host("127.77.42.2:4791".parse().unwrap()).unwrap();
    let b = Node::on_link(
        std::sync::Arc::new(FaultLink::new(link, FaultConfig::default())),
        256,
    );
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
