//! Benchmarks of the device's hot paths (soft-rdma): the ICRC per packet
//! size, building and parsing a packet (`PacketRepr`), one RDMA WRITE from
//! `post_send` to its completion on the in-process loopback hub (pinned and
//! ODP), and the ODP fast path on pages that are already faulted
//! (`read_begin` .. `read_retry` .. commit, i.e. `Umem::map` + drop, which
//! `odp.rs` does not cover: it times first faults of fresh memory).
//! Figures: docs/BENCHMARKS.md, "Device (soft-rdma)".
//!
//! Kept short (small samples, 1 s measurements): `cargo bench -p benches
//! --bench device` takes about half a minute.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use odp::{Access as OdpAccess, ImplicitUmem, Mm, MmConfig, Mode, Umem};
use soft_rdma::transport::Hub;
use soft_rdma::verbs::*;
use soft_rdma::wire::icrc::{self, IcrcContext};
use soft_rdma::wire::*;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use test_support::verbs::{all_access, signaled, Node, QpConfig};

const PAGE: u64 = 4096;

fn quick(g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
}

fn ctx() -> IcrcContext {
    IcrcContext {
        src: IpAddr::V4(Ipv4Addr::new(127, 1, 2, 3)),
        dst: IpAddr::V4(Ipv4Addr::new(127, 1, 2, 4)),
        src_port: 49152,
        dst_port: 4791,
    }
}

/// An RDMA WRITE FIRST (BTH + RETH) with `payload` bytes.
fn write_first(payload: usize) -> PacketRepr {
    PacketRepr {
        bth: Bth {
            opcode: Opcode::new(Transport::Rc, Op::WriteFirst).unwrap(),
            solicited: false,
            mig_req: true,
            pad: 0,
            pkey: DEFAULT_PKEY,
            fecn: false,
            becn: false,
            dest_qp: 0x11,
            ack_req: false,
            psn: 0x123456,
        },
        ext: Ext::Reth(Reth {
            va: 0x7f00_0000_1000,
            rkey: 0x1234,
            len: 65536,
        }),
        payload_len: payload,
    }
}

fn packet(payload: usize) -> Vec<u8> {
    let r = write_first(payload);
    let mut buf = vec![0u8; r.buffer_len()];
    r.emit(&mut buf).unwrap();
    let h = r.header_len();
    for (i, b) in buf[h..h + payload].iter_mut().enumerate() {
        *b = i as u8;
    }
    icrc::seal(&ctx(), &mut buf);
    buf
}

fn wire(c: &mut Criterion) {
    let cx = ctx();
    let mut g = c.benchmark_group("icrc");
    quick(&mut g);
    for payload in [0usize, 256, 1024, 4096] {
        let p = packet(payload);
        g.throughput(Throughput::Bytes(p.len() as u64));
        g.bench_with_input(BenchmarkId::new("compute", payload), &p, |b, p| {
            b.iter(|| icrc::compute(&cx, black_box(p)))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("packet");
    quick(&mut g);
    let r = write_first(4096);
    let mut buf = vec![0u8; r.buffer_len()];
    g.bench_function("emit_write_first", |b| {
        b.iter(|| black_box(&r).emit(black_box(&mut buf)).unwrap())
    });
    let p = packet(4096);
    g.bench_function("parse_write_first", |b| {
        b.iter(|| PacketRepr::parse(black_box(&p)).unwrap())
    });
    // What the receive path does per packet: parse and check the ICRC.
    g.throughput(Throughput::Bytes(p.len() as u64));
    g.bench_function("parse+verify_icrc_4096", |b| {
        b.iter(|| {
            let r = PacketRepr::parse(black_box(&p)).unwrap();
            assert!(icrc::verify(&cx, &p));
            r
        })
    });
    g.finish();
}

/// Two devices on one loopback hub with a connected RC QP pair: 256 WRs to
/// send, MTU 4096, PSN 0, a 67 ms timeout.
struct Pair {
    qa: Qp,
    qb: Qp,
    /// Kept open for the benchmark's length (dropping a device stops it).
    a: Node,
    b: Node,
}

fn pair() -> Pair {
    let hub = Hub::new();
    let node = |ip: [u8; 4]| {
        let link = hub.link(SocketAddr::from((ip, 4791))).unwrap();
        Node::on_link(Arc::new(link), 4096)
    };
    let (a, b) = (node([127, 8, 0, 1]), node([127, 8, 0, 2]));
    let (qa, qb) = QpConfig {
        cap: QpCap {
            max_send_wr: 256,
            max_recv_wr: 16,
            max_send_sge: 1,
            max_recv_sge: 1,
            max_inline_data: 0,
        },
        mtu: Mtu::M4096,
        psn: 0,
        timeout: Some(14),
        ..QpConfig::new(QpType::Rc)
    }
    .connect(&a, &b);
    Pair { qa, qb, a, b }
}

/// One signaled WRITE of `len` bytes, posted and polled to its completion.
fn post_complete(c: &mut Criterion) {
    let p = pair();
    let mut g = c.benchmark_group("write_post_to_completion");
    quick(&mut g);
    const LEN: usize = 64 << 10;
    let src = vec![0x5au8; LEN];
    let mut dst = vec![0u8; LEN];
    for odp in [false, true] {
        let acc = if odp {
            all_access() | Access::ON_DEMAND
        } else {
            all_access()
        };
        let smr = p.a.pd.reg_mr(src.as_ptr() as u64, LEN as u64, acc).unwrap();
        let dmr =
            p.b.pd
                .reg_mr(dst.as_mut_ptr() as u64, LEN as u64, acc)
                .unwrap();
        for len in [64usize, 4096, LEN] {
            g.throughput(Throughput::Bytes(len as u64));
            let name = format!("{}/{len}", if odp { "odp" } else { "pinned" });
            let mut wcs = vec![Wc::EMPTY; 4];
            g.bench_function(name, |b| {
                b.iter(|| {
                    let sge = [Sge {
                        addr: src.as_ptr() as u64,
                        length: len as u32,
                        lkey: smr.lkey(),
                    }];
                    let wr = SendWr {
                        wr_id: 1,
                        sg_list: &sge,
                        op: SendOp::Write {
                            remote_addr: dst.as_ptr() as u64,
                            rkey: dmr.rkey(),
                        },
                        flags: signaled(),
                        ud: None,
                    };
                    p.qa.post_send(&[wr]).unwrap();
                    loop {
                        let n = p.a.cq.poll(&mut wcs);
                        if n > 0 {
                            assert_eq!(wcs[0].status, WcStatus::Success);
                            break;
                        }
                        std::hint::spin_loop();
                    }
                })
            });
        }
        drop((smr, dmr));
    }
    g.finish();
    assert_eq!(dst[LEN - 1], 0x5a);
    drop(p.qb);
}

/// The ODP fast path on resident, already-mapped pages: `map` (read_begin,
/// the present-bit check, the lock, read_retry) and the guard's drop.
fn odp_fast_path(c: &mut Criterion) {
    let mm = Mm::new(MmConfig::default());
    const LEN: usize = 2 << 20;
    let mem = vec![1u8; LEN + PAGE as usize];
    let base = (mem.as_ptr() as u64).next_multiple_of(PAGE);
    let u = Umem::new(&mm, base, LEN as u64, true).unwrap();
    drop(
        u.map(base, LEN as u64, OdpAccess::Write, Mode::Fault)
            .unwrap(),
    );
    let imp = ImplicitUmem::new(&mm, true);
    let ibase = base;
    imp.with_map(ibase, PAGE, OdpAccess::Write, Mode::Fault, |_| Ok(()))
        .unwrap();
    let mut g = c.benchmark_group("odp_faulted");
    quick(&mut g);
    for pages in [1u64, 16] {
        g.bench_with_input(
            BenchmarkId::new("umem_map+commit", pages),
            &pages,
            |b, &n| {
                b.iter(|| {
                    drop(
                        u.map(
                            black_box(base + PAGE),
                            n * PAGE,
                            OdpAccess::Write,
                            Mode::Fault,
                        )
                        .unwrap(),
                    )
                })
            },
        );
    }
    let mut word = [0u8; 8];
    g.bench_function("umem_map+read8+commit", |b| {
        b.iter(|| {
            let mut guard = u.map(base + PAGE, 8, OdpAccess::Read, Mode::Fault).unwrap();
            guard.read(base + PAGE, &mut word).unwrap();
        })
    });
    g.bench_function("implicit_with_map/1", |b| {
        b.iter(|| {
            imp.with_map(
                black_box(ibase),
                PAGE,
                OdpAccess::Write,
                Mode::Fault,
                |_| Ok(()),
            )
            .unwrap()
        })
    });
    g.finish();
    drop(imp);
    drop(u);
    drop(mem);
}

criterion_group!(benches, wire, post_complete, odp_fast_path);
criterion_main!(benches);
