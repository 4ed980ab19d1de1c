//! The in-process loopback hub.
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use soft_rdma::transport::{Hub, Link, Outgoing, RecvBatch, MAX_PACKET};

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn delivers_in_order_with_sender() {
    let hub = Hub::new();
    let a = hub.link(addr("10.0.0.1:4791")).unwrap();
    let b = hub.link(addr("10.0.0.2:4791")).unwrap();
    let c = hub.link(addr("[fd00::3]:4791")).unwrap();
    let datas: Vec<Vec<u8>> = (1..=20).map(|i| vec![i as u8; i * 200]).collect();
    let mut out: Vec<Outgoing> = datas
        .iter()
        .map(|d| Outgoing {
            peer: b.local(),
            data: d,
        })
        .collect();
    out.push(Outgoing {
        peer: c.local(),
        data: b"to c",
    });
    out.push(Outgoing {
        peer: b.local(),
        data: &[0xee; MAX_PACKET],
    });
    assert_eq!(a.send(&out).unwrap(), 22);

    let mut batch = RecvBatch::new(8);
    let mut got = Vec::new();
    while got.len() < 21 {
        assert!(b.recv(&mut batch, Some(Duration::from_secs(1))).unwrap() > 0);
        assert!(batch.len() <= 8);
        got.extend(batch.iter().map(|(p, d)| (p, d.to_vec())));
    }
    for (i, (p, d)) in got.iter().enumerate().take(20) {
        assert_eq!(*p, a.local());
        assert_eq!(d, &datas[i]);
    }
    assert_eq!(got[20].1, vec![0xee; MAX_PACKET]);
    assert_eq!(c.recv(&mut batch, Some(Duration::ZERO)).unwrap(), 1);
    assert_eq!(batch.get(0), (a.local(), &b"to c"[..]));
    assert_eq!(b.recv(&mut batch, Some(Duration::ZERO)).unwrap(), 0);
    let (sa, sb) = (a.stats(), b.stats());
    assert_eq!((sa.sent, sa.send_dropped), (22, 0));
    assert_eq!(sb.received, 21);
    assert_eq!(
        sb.received_bytes,
        datas.iter().map(|d| d.len() as u64).sum::<u64>() + MAX_PACKET as u64
    );
}

#[test]
fn address_in_use_and_freed_on_drop() {
    let hub = Hub::new();
    let a = hub.link(addr("10.0.0.1:4791")).unwrap();
    let e = hub.link(addr("10.0.0.1:4791")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AddrInUse);
    // Same IP, other port: fine; port 0 picks one.
    let b = hub.link(addr("10.0.0.1:4792")).unwrap();
    let c = hub.link(addr("10.0.0.1:0")).unwrap();
    assert_ne!(c.local().port(), 0);
    drop(a);
    // Sending to a dropped link: dropped and counted, not an error.
    assert_eq!(
        b.send(&[Outgoing {
            peer: addr("10.0.0.1:4791"),
            data: b"x"
        }])
        .unwrap(),
        0
    );
    assert_eq!(b.stats().send_dropped, 1);
    let a2 = hub.link(addr("10.0.0.1:4791")).unwrap();
    assert_eq!(
        b.send(&[Outgoing {
            peer: a2.local(),
            data: b"y"
        }])
        .unwrap(),
        1
    );
    let mut batch = RecvBatch::new(1);
    assert_eq!(
        a2.recv(&mut batch, Some(Duration::from_secs(1))).unwrap(),
        1
    );
    assert_eq!(batch.get(0).1, b"y");
}

#[test]
fn full_queue_drops_and_counts() {
    let hub = Hub::with_queue(8);
    let a = hub.link(addr("10.0.0.1:4791")).unwrap();
    let b = hub.link(addr("10.0.0.2:4791")).unwrap();
    let datas: Vec<[u8; 1]> = (0..20u8).map(|i| [i]).collect();
    let out: Vec<Outgoing> = datas
        .iter()
        .map(|d| Outgoing {
            peer: b.local(),
            data: d,
        })
        .collect();
    a.send(&out).unwrap();
    assert_eq!(b.queued(), 8);
    assert_eq!(b.stats().recv_dropped, 12);
    let mut batch = RecvBatch::new(64);
    assert_eq!(b.recv(&mut batch, Some(Duration::ZERO)).unwrap(), 8);
    let firsts: Vec<u8> = batch.iter().map(|(_, d)| d[0]).collect();
    assert_eq!(firsts, (0..8).collect::<Vec<u8>>());
    // Room again.
    a.send(&out[..3]).unwrap();
    assert_eq!(b.recv(&mut batch, Some(Duration::ZERO)).unwrap(), 3);
    assert_eq!(b.stats().recv_dropped, 12);
}

#[test]
fn recv_blocks_until_data_or_timeout() {
    let hub = Hub::new();
    let a = hub.link(addr("10.0.0.1:4791")).unwrap();
    let b = Arc::new(hub.link(addr("10.0.0.2:4791")).unwrap());
    let mut batch = RecvBatch::new(4);
    let t = Instant::now();
    assert_eq!(
        b.recv(&mut batch, Some(Duration::from_millis(100)))
            .unwrap(),
        0
    );
    assert!(t.elapsed() >= Duration::from_millis(100));
    // A blocked receiver is woken by a send.
    let b2 = b.clone();
    let h = std::thread::spawn(move || {
        let mut batch = RecvBatch::new(4);
        let n = b2.recv(&mut batch, Some(Duration::from_secs(10))).unwrap();
        (n, batch.get(0).1.to_vec())
    });
    std::thread::sleep(Duration::from_millis(100));
    let sent_at = Instant::now();
    a.send(&[Outgoing {
        peer: b.local(),
        data: b"wake",
    }])
    .unwrap();
    assert_eq!(h.join().unwrap(), (1, b"wake".to_vec()));
    assert!(sent_at.elapsed() < Duration::from_secs(2));
}

#[test]
fn close_wakes_blocked_recv() {
    let hub = Hub::new();
    let b = Arc::new(hub.link(addr("10.0.0.2:4791")).unwrap());
    let b2 = b.clone();
    let h = std::thread::spawn(move || {
        let mut batch = RecvBatch::new(4);
        b2.recv(&mut batch, None).unwrap()
    });
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    b.close();
    assert_eq!(h.join().unwrap(), 0);
    assert!(t.elapsed() < Duration::from_millis(500));
    let mut batch = RecvBatch::new(4);
    assert_eq!(b.recv(&mut batch, None).unwrap(), 0);
}

#[test]
fn boxed_and_arced_links_are_links() {
    let hub = Hub::new();
    let a: Box<dyn Link> = Box::new(hub.link(addr("10.0.0.1:4791")).unwrap());
    let b: Arc<dyn Link> = Arc::new(hub.link(addr("10.0.0.2:4791")).unwrap());
    fn send_via<L: Link>(l: &L, to: SocketAddr) -> usize {
        l.send(&[Outgoing {
            peer: to,
            data: b"z",
        }])
        .unwrap()
    }
    assert_eq!(send_via(&a, b.local()), 1);
    let mut batch = RecvBatch::new(2);
    assert_eq!(b.recv(&mut batch, Some(Duration::from_secs(1))).unwrap(), 1);
    assert_eq!(b.stats().received, 1);
    assert_eq!(a.stats().sent, 1);
}

#[test]
fn recv_batch_editing() {
    let mut b = RecvBatch::new(4);
    let p = addr("10.0.0.9:1");
    assert!(b.push(p, b"aa") && b.push(p, b"b") && b.push(p, b"cccc") && b.push(p, b""));
    assert!(!b.push(p, b"full"));
    b.swap(0, 2);
    assert_eq!(b.get(0).1, b"cccc");
    assert_eq!(b.get(2).1, b"aa");
    b.get_mut(1).1[0] = b'B';
    b.retain(|_, d| d.len() != 4);
    let v: Vec<&[u8]> = b.iter().map(|(_, d)| d).collect();
    assert_eq!(v, vec![&b"B"[..], b"aa", b""]);
    assert!(!b.push(p, &vec![0; MAX_PACKET + 1]));
}
