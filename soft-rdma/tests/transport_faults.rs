//! The fault-injection middleware: its spec parser, and its effect measured
//! on the loopback hub (seeded, so every run sees the same faults).
use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use soft_rdma::transport::faults::{FaultConfig, FaultLink};
use soft_rdma::transport::{Hub, Link, LoopbackLink, Outgoing, RecvBatch};

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn spec_good() {
    let c: FaultConfig = "drop=0.05,dup=0.01,reorder=0.02,corrupt=0.001,delay_us=200,seed=7"
        .parse()
        .unwrap();
    assert_eq!(
        c,
        FaultConfig {
            drop: 0.05,
            dup: 0.01,
            reorder: 0.02,
            corrupt: 0.001,
            delay: Duration::from_micros(200),
            seed: Some(7),
        }
    );
    // Any subset, spaces, a trailing comma; 0 and 1 are probabilities.
    let c: FaultConfig = " drop = 1 , seed=0,".parse().unwrap();
    assert_eq!((c.drop, c.dup, c.seed), (1.0, 0.0, Some(0)));
    assert_eq!("".parse::<FaultConfig>().unwrap(), FaultConfig::default());
    assert_eq!("dup=0".parse::<FaultConfig>().unwrap().dup, 0.0);
}

#[test]
fn spec_bad_names_the_key_or_value_in_one_line() {
    for (spec, needle) in [
        ("dorp=0.1", "unknown key \"dorp\""),
        ("drop=1.5", "drop=1.5"),
        ("drop=-0.1", "drop=-0.1"),
        ("drop=abc", "drop=abc"),
        ("drop=NaN", "drop=NaN"),
        ("drop", "\"drop\" is not key=value"),
        ("delay_us=-3", "delay_us=-3"),
        ("delay_us=1.5", "delay_us=1.5"),
        ("delay_us=99999999999", "delay_us=99999999999"),
        ("seed=x", "seed=x"),
        ("drop=0.1,drop=0.2", "drop given twice"),
    ] {
        let e = spec.parse::<FaultConfig>().unwrap_err().to_string();
        assert!(e.starts_with("SOFTRDMA_FAULTS: "), "{spec}: {e}");
        assert!(e.contains(needle), "{spec}: {e:?} lacks {needle:?}");
        assert!(!e.contains('\n'), "{spec}: {e:?}");
    }
}

/// A sender on the hub and a receiver behind the injector.
fn pair(spec: &str) -> (LoopbackLink, FaultLink<LoopbackLink>) {
    let hub = Hub::with_queue(1 << 16);
    let a = hub.link(addr("10.0.0.1:4791")).unwrap();
    let b = hub.link(addr("10.0.0.2:4791")).unwrap();
    (a, FaultLink::new(b, spec.parse().unwrap()))
}

/// Send `n` numbered datagrams of 64 bytes (the number in the first 4).
fn send_numbered(a: &LoopbackLink, to: SocketAddr, n: u32) {
    let datas: Vec<[u8; 64]> = (0..n)
        .map(|i| {
            let mut d = [0u8; 64];
            d[..4].copy_from_slice(&i.to_be_bytes());
            d[4..].fill(i as u8);
            d
        })
        .collect();
    for chunk in datas.chunks(64) {
        let out: Vec<Outgoing> = chunk
            .iter()
            .map(|d| Outgoing { peer: to, data: d })
            .collect();
        assert_eq!(a.send(&out).unwrap(), out.len());
    }
}

/// Receive until `quiet` passes with nothing; the datagrams, in order.
fn drain(b: &impl Link, quiet: Duration) -> Vec<Vec<u8>> {
    let mut batch = RecvBatch::new(32);
    let mut got = Vec::new();
    while b.recv(&mut batch, Some(quiet)).unwrap() > 0 {
        got.extend(batch.iter().map(|(_, d)| d.to_vec()));
    }
    got
}

fn number(d: &[u8]) -> u32 {
    u32::from_be_bytes(d[..4].try_into().unwrap())
}

#[test]
fn drop_rate_is_the_configured_one_and_the_seed_reproduces_it() {
    const N: u32 = 20_000;
    let mut runs = Vec::new();
    for _ in 0..2 {
        let (a, b) = pair("drop=0.1,seed=7");
        send_numbered(&a, b.local(), N);
        let got = drain(&b, Duration::from_millis(50));
        let dropped = b.fault_stats().dropped;
        assert_eq!(
            got.len() as u64 + dropped,
            N as u64,
            "every datagram delivered or counted"
        );
        let rate = dropped as f64 / N as f64;
        // σ = sqrt(0.1 · 0.9 / 20000) ≈ 0.0021: 5σ.
        assert!((rate - 0.1).abs() < 0.0106, "drop rate {rate}");
        // What is delivered is intact and in order.
        let nums: Vec<u32> = got.iter().map(|d| number(d)).collect();
        assert!(nums.windows(2).all(|w| w[0] < w[1]));
        for d in &got {
            assert!(d[4..].iter().all(|&x| x == number(d) as u8));
        }
        runs.push(nums);
    }
    assert_eq!(runs[0], runs[1], "the same seed drops the same datagrams");
    let (a, b) = pair("drop=0.1,seed=8");
    send_numbered(&a, b.local(), N);
    let other: Vec<u32> = drain(&b, Duration::from_millis(50))
        .iter()
        .map(|d| number(d))
        .collect();
    assert_ne!(other, runs[0], "another seed drops others");
}

#[test]
fn dup_delivers_twice() {
    const N: u32 = 1000;
    let (a, b) = pair("dup=1,seed=1");
    send_numbered(&a, b.local(), N);
    let got = drain(&b, Duration::from_millis(50));
    assert_eq!(got.len(), 2 * N as usize);
    for (i, pair) in got.chunks(2).enumerate() {
        assert_eq!(pair[0], pair[1]);
        assert_eq!(number(&pair[0]), i as u32);
    }
    assert_eq!(b.fault_stats().duplicated, N as u64);
    // Partly: about the configured share.
    let (a, b) = pair("dup=0.2,seed=3");
    send_numbered(&a, b.local(), 5000);
    let extra = drain(&b, Duration::from_millis(50)).len() - 5000;
    assert_eq!(extra as u64, b.fault_stats().duplicated);
    assert!((800..1200).contains(&extra), "{extra}");
}

#[test]
fn reorder_changes_the_order_and_loses_nothing() {
    const N: u32 = 5000;
    let (a, b) = pair("reorder=0.1,seed=5");
    send_numbered(&a, b.local(), N);
    let got: Vec<u32> = drain(&b, Duration::from_millis(50))
        .iter()
        .map(|d| number(d))
        .collect();
    assert_eq!(got.len(), N as usize);
    let set: HashSet<u32> = got.iter().copied().collect();
    assert_eq!(set.len(), N as usize, "each datagram exactly once");
    let inversions = got.windows(2).filter(|w| w[0] > w[1]).count() as u64;
    let r = b.fault_stats().reordered;
    assert!(
        inversions > 0 && inversions == r,
        "{inversions} inversions, {r} counted"
    );
    assert!((350..650).contains(&r), "{r}");
    // A held datagram with no successor still arrives (after the hold).
    let (a, b) = pair("reorder=1,seed=5");
    send_numbered(&a, b.local(), 1);
    let got = drain(&b, Duration::from_secs(2));
    assert_eq!(got.len(), 1, "released once its hold passed");
}

#[test]
fn corrupt_flips_a_bit_and_delay_holds_every_datagram() {
    const N: u32 = 2000;
    let (a, b) = pair("corrupt=0.5,seed=9");
    send_numbered(&a, b.local(), N);
    let got = drain(&b, Duration::from_millis(50));
    assert_eq!(got.len(), N as usize);
    let damaged = got
        .iter()
        .enumerate()
        .filter(|(i, d)| {
            let mut want = [*i as u8; 64];
            want[..4].copy_from_slice(&(*i as u32).to_be_bytes());
            let flipped: u32 = d.iter().zip(want).map(|(x, y)| (x ^ y).count_ones()).sum();
            assert!(flipped <= 1, "one bit at most");
            flipped == 1
        })
        .count() as u64;
    assert_eq!(damaged, b.fault_stats().corrupted);
    assert!((850..1150).contains(&damaged), "{damaged}");

    let (a, b) = pair("delay_us=30000,seed=1");
    let t = Instant::now();
    send_numbered(&a, b.local(), 10);
    let mut batch = RecvBatch::new(32);
    // Nothing before the delay (a loaded machine may take that long to
    // get here: then the datagrams may be due already).
    let early = b.recv(&mut batch, Some(Duration::from_millis(5))).unwrap();
    assert!(
        early == 0 || t.elapsed() >= Duration::from_millis(30),
        "{early} datagrams after {:?}",
        t.elapsed()
    );
    let mut n = early;
    while n < 10 {
        n += b.recv(&mut batch, Some(Duration::from_secs(1))).unwrap();
    }
    assert!(
        t.elapsed() >= Duration::from_millis(30),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(b.fault_stats().delayed, 10);
    // close() wakes a receiver blocked on the delay line.
    let (a, b) = pair("delay_us=5000000");
    send_numbered(&a, b.local(), 1);
    std::thread::scope(|s| {
        let h = s.spawn(|| b.recv(&mut RecvBatch::new(4), None).unwrap());
        std::thread::sleep(Duration::from_millis(20));
        b.close();
        assert_eq!(h.join().unwrap(), 0);
    });
}
