//! The same-host fast path between real links: two `UdpLink`s bound with it
//! move to a shared-memory ring and lose nothing on the way; a peer without
//! it keeps UDP; a closed peer sends its link back to UDP, and a new device
//! at that address gets a ring again. (The ring's handshake goes by UDP both
//! ways, so a sender must receive too: see `send`.)
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use soft_rdma::transport::{Link, Outgoing, RecvBatch, UdpLink};

fn bind(net: u8, host: u8) -> UdpLink {
    let l = UdpLink::bind_same_host(format!("127.78.{net}.{host}:0").parse().unwrap()).unwrap();
    assert!(l.has_same_host(), "a loopback link gets the fast path");
    l
}

/// A datagram that says which one it is (4-byte number, then filler).
fn datagram(i: u32) -> Vec<u8> {
    let mut d = i.to_le_bytes().to_vec();
    d.resize(4 + (i as usize * 131) % 4000, i as u8);
    d
}

/// The number a datagram claims (its first 4 bytes), unchecked.
fn claimed(d: &[u8]) -> u32 {
    u32::from_le_bytes(d[..4].try_into().unwrap())
}

/// The number of a datagram, which must be exactly `datagram(number)`.
fn number(d: &[u8]) -> u32 {
    assert_eq!(d, datagram(claimed(d)));
    claimed(d)
}

/// Send datagrams `range` from `a` to `to`, 16 per call. After each call
/// the sender receives (without waiting), as a device's receive thread
/// does: the ring's handshake answers it by UDP. Nothing else is sent to it
/// meanwhile, so nothing is taken from the test.
fn send(a: &UdpLink, to: SocketAddr, range: std::ops::Range<u32>) {
    let ds: Vec<Vec<u8>> = range.map(datagram).collect();
    let mut scratch = RecvBatch::new(4);
    for chunk in ds.chunks(16) {
        let out: Vec<Outgoing<'_>> = chunk
            .iter()
            .map(|d| Outgoing { peer: to, data: d })
            .collect();
        assert_eq!(a.send(&out).unwrap(), out.len());
        a.recv(&mut scratch, Some(Duration::ZERO)).unwrap();
        assert!(scratch.is_empty(), "the sender received a datagram");
    }
}

/// Receive until `n` datagrams came (or 5 s passed); `each` sees every one
/// (the batch and its index) and returns what to collect.
fn recv_each<T>(b: &dyn Link, n: usize, mut each: impl FnMut(&RecvBatch, usize) -> T) -> Vec<T> {
    let mut batch = RecvBatch::new(64);
    let mut got = Vec::new();
    let end = Instant::now() + Duration::from_secs(5);
    while got.len() < n && Instant::now() < end {
        b.recv(&mut batch, Some(Duration::from_millis(100)))
            .unwrap();
        got.extend((0..batch.len()).map(|i| each(&batch, i)));
    }
    got
}

/// Receive until `n` datagrams from `from` came (or 5 s passed); their
/// numbers in order.
fn recv(b: &UdpLink, from: SocketAddr, n: usize) -> Vec<u32> {
    recv_each(b, n, |batch, i| {
        let (p, d) = batch.get(i);
        assert_eq!(p, from);
        number(d)
    })
}

/// Send one datagram at a time, numbered from `first`, until one goes by
/// ring (each must arrive); returns the next number.
fn until_on_ring(a: &UdpLink, b: &UdpLink, first: u32) -> u32 {
    let before = a.stats().same_host_sent;
    let end = Instant::now() + Duration::from_secs(5);
    let mut i = first;
    while a.stats().same_host_sent == before {
        assert!(Instant::now() < end, "no ring after 5 s");
        send(a, b.local(), i..i + 1);
        assert_eq!(recv(b, a.local(), 1), [i]);
        i += 1;
    }
    i
}

#[test]
fn two_loopback_links_move_to_a_ring_and_lose_nothing_on_the_way() {
    let (a, b) = (bind(1, 1), bind(1, 2));
    // The first datagrams go by UDP until b's receive takes up the offer;
    // keep sending through the switch, 100 before each receive.
    let mut got = Vec::new();
    for k in 0..30 {
        send(&a, b.local(), k * 100..k * 100 + 100);
        got.extend(recv(&b, a.local(), 100));
    }
    // In the order sent, across the switch too (the marker holds the ring
    // back until the UDP packets before it are in).
    assert_eq!(got, (0..3000).collect::<Vec<_>>());
    let (sa, sb) = (a.stats(), b.stats());
    assert!(sa.same_host_sent > 0, "{sa:?}");
    assert_eq!(sa.sent, 3000);
    assert_eq!(sb.received, 3000);
    assert_eq!(sb.same_host_received, sa.same_host_sent);
    // Both ways: b answers on its own ring.
    send(&b, a.local(), 0..500);
    assert_eq!(recv(&a, b.local(), 500).len(), 500);
    assert_eq!(b.stats().sent, 500);
    assert_eq!(sb.same_host_refused + a.stats().same_host_refused, 0);
    // Too long for any receiver: dropped and counted, the ring unharmed.
    let big = vec![0u8; soft_rdma::transport::MAX_PACKET + 1];
    let before = a.stats().send_dropped;
    assert_eq!(
        a.send(&[Outgoing {
            peer: b.local(),
            data: &big
        }])
        .unwrap(),
        0
    );
    assert_eq!(a.stats().send_dropped, before + 1);
    send(&a, b.local(), 3000..3010);
    assert_eq!(recv(&b, a.local(), 10), (3000..3010).collect::<Vec<_>>());
    assert_eq!(b.stats().same_host_refused, 0);
}

#[test]
fn a_receiver_blocked_without_timeout_wakes_for_a_ring_datagram() {
    let (a, b) = (bind(2, 1), bind(2, 2));
    let n = until_on_ring(&a, &b, 0);
    std::thread::scope(|s| {
        let t = s.spawn(|| {
            let mut batch = RecvBatch::new(4);
            b.recv(&mut batch, None).unwrap();
            batch.iter().map(|(_, d)| number(d)).collect::<Vec<_>>()
        });
        // Let it block (if it has not, the datagram is simply there already).
        std::thread::sleep(Duration::from_millis(50));
        send(&a, b.local(), n..n + 1);
        assert_eq!(t.join().unwrap(), [n]);
    });
    assert!(a.stats().same_host_sent >= 2);
}

#[test]
fn a_peer_without_the_fast_path_gets_udp() {
    let a = bind(3, 1);
    let c = UdpLink::bind("127.78.3.2:0".parse().unwrap()).unwrap();
    assert!(!c.has_same_host());
    for round in 0..3 {
        send(&a, c.local(), round * 100..round * 100 + 100);
        assert_eq!(recv(&c, a.local(), 100).len(), 100);
    }
    assert_eq!(a.stats().same_host_sent, 0);
    assert_eq!(a.stats().sent, 300);
}

#[test]
fn a_closed_peer_sends_the_link_back_to_udp_and_its_successor_gets_a_ring() {
    let a = bind(4, 1);
    let b = bind(4, 2);
    let at = b.local();
    let n = until_on_ring(&a, &b, 0);
    drop(b);
    let before = a.stats().same_host_sent;
    send(&a, at, n..n + 10);
    assert_eq!(a.stats().same_host_sent, before, "a dead ring was written");
    // A new device at the same address: offered a ring once the retry is due.
    let b2 = UdpLink::bind_same_host(at).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    until_on_ring(&a, &b2, n + 10);
}

/// Receive until `n` datagrams came: each one's number and whether the
/// link marked it intact (no ICRC check needed).
fn recv_marked(b: &dyn Link, n: usize) -> Vec<(u32, bool)> {
    // Unchecked: behind the fault layer the bytes are corrupted on purpose.
    recv_each(b, n, |batch, i| (claimed(batch.get(i).1), batch.intact(i)))
}

/// Ring datagrams skip the ICRC check as loopback packets skip checksums:
/// memory cannot flip bits on the way. Only they do — a UDP datagram is
/// checked, and so is anything a fault layer handled (it may corrupt).
#[test]
fn ring_datagrams_are_marked_intact_and_nothing_else_is() {
    let (a, b) = (bind(5, 1), bind(5, 2));
    // The very first datagram goes by UDP (nobody has offered a ring yet).
    send(&a, b.local(), 0..1);
    assert_eq!(recv_marked(&b, 1), [(0, false)], "UDP: checked");
    let next = until_on_ring(&a, &b, 1);
    send(&a, b.local(), next..next + 20);
    let got = recv_marked(&b, 20);
    assert_eq!(got.len(), 20);
    assert!(got.iter().all(|&(_, intact)| intact), "{got:?}");
    // The same ring behind a fault layer that corrupts every datagram.
    let cfg: soft_rdma::transport::FaultConfig = "corrupt=1,seed=3".parse().unwrap();
    let faulty = soft_rdma::transport::FaultLink::new(b, cfg);
    let sent_before = a.stats().same_host_sent;
    send(&a, faulty.local(), 0..20);
    assert_eq!(a.stats().same_host_sent, sent_before + 20, "still the ring");
    let got = recv_marked(&faulty, 20);
    assert_eq!(got.len(), 20);
    assert!(got.iter().all(|&(_, intact)| !intact), "{got:?}");
    assert_eq!(faulty.fault_stats().corrupted, 20);
}

/// A consumer that does not read: the producer watches the full ring a
/// moment, waits 4 ms more, then drops the rest of its send and counts it —
/// and what did go in arrives whole and in order, and the ring works on.
#[test]
fn a_full_ring_drops_the_rest_of_a_send_and_keeps_working() {
    let (a, b) = (bind(6, 1), bind(6, 2));
    let next = until_on_ring(&a, &b, 0);
    let ds: Vec<Vec<u8>> = (next..next + 3000).map(datagram).collect();
    let out: Vec<Outgoing<'_>> = ds
        .iter()
        .map(|d| Outgoing {
            peer: b.local(),
            data: d,
        })
        .collect();
    let before = a.stats();
    let sent = a.send(&out).unwrap();
    let after = a.stats();
    assert!(
        sent > 100 && sent < 3000,
        "the 4 MiB ring holds some: {sent}"
    );
    assert_eq!(
        after.send_dropped - before.send_dropped,
        (3000 - sent) as u64
    );
    assert_eq!(after.same_host_sent - before.same_host_sent, sent as u64);
    let got = recv(&b, a.local(), sent);
    assert_eq!(got, (next..next + sent as u32).collect::<Vec<_>>());
    send(&a, b.local(), 0..10);
    assert_eq!(recv(&b, a.local(), 10), (0..10).collect::<Vec<_>>());
    assert_eq!(b.stats().same_host_refused, 0);
}

/// Zero-timeout receives (an application's poll loop) until one brings
/// something (or 5 s passed): what it brought, with the sender.
fn poll_until(b: &UdpLink) -> Vec<(SocketAddr, u32)> {
    let mut batch = RecvBatch::new(8);
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        b.recv(&mut batch, Some(Duration::ZERO)).unwrap();
        if !batch.is_empty() {
            return batch.iter().map(|(p, d)| (p, number(d))).collect();
        }
        assert!(Instant::now() < end, "nothing after 5 s of polls");
    }
}

#[test]
fn polls_of_a_link_whose_peers_are_on_rings_still_take_udp_datagrams() {
    // Polls that find the rings empty leave a socket found empty alone for
    // a while (`UdpLink::try_recv`); a UDP datagram must still come in to
    // polls alone, ring datagrams around it too.
    let (a, b) = (bind(7, 1), bind(7, 2));
    let c = UdpLink::bind("127.78.7.3:0".parse().unwrap()).unwrap();
    let first = until_on_ring(&a, &b, 0);
    let mut batch = RecvBatch::new(8);
    for round in 0..20u32 {
        let n = first + round;
        for _ in 0..1000 {
            b.recv(&mut batch, Some(Duration::ZERO)).unwrap();
            assert!(batch.is_empty());
        }
        send(&c, b.local(), round..round + 1);
        assert_eq!(poll_until(&b), [(c.local(), round)]);
        send(&a, b.local(), n..n + 1);
        assert_eq!(poll_until(&b), [(a.local(), n)]);
    }
    assert_eq!(c.stats().same_host_sent, 0);
    assert_eq!(a.stats().same_host_sent, b.stats().same_host_received);
    assert!(b.stats().same_host_received >= 20);
}
