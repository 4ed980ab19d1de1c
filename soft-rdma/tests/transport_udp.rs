//! UdpLink over real sockets on loopback: batches, timeouts, close, bind
//! errors, DF + IP ID 0 on the wire, IPv6.
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use soft_rdma::transport::{Link, Outgoing, Packed, RecvBatch, UdpLink, MAX_PACKET};

/// A fresh pair on two different 127.x addresses, kernel-chosen ports (so
/// parallel tests and other programs on this host do not collide).
fn pair(net: u8) -> (UdpLink, UdpLink) {
    let a = UdpLink::bind(format!("127.77.{net}.1:0").parse().unwrap()).unwrap();
    let b = UdpLink::bind(format!("127.77.{net}.2:0").parse().unwrap()).unwrap();
    (a, b)
}

/// Deterministic pseudo-random bytes.
fn fill(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Receive exactly `n` datagrams (or fail after 5 s).
fn recv_n(link: &UdpLink, batch: &mut RecvBatch, n: usize) -> Vec<(SocketAddr, Vec<u8>)> {
    let mut got = Vec::new();
    let end = Instant::now() + Duration::from_secs(5);
    while got.len() < n {
        assert!(
            Instant::now() < end,
            "only {} of {n} datagrams arrived",
            got.len()
        );
        let k = link.recv(batch, Some(Duration::from_millis(500))).unwrap();
        assert_eq!(k, batch.len());
        got.extend(batch.iter().map(|(p, d)| (p, d.to_vec())));
    }
    assert_eq!(got.len(), n, "more datagrams than sent");
    got
}

fn exchange(a: &UdpLink, b: &UdpLink, batches: impl Iterator<Item = usize>, recv_cap: usize) {
    let mut batch = RecvBatch::new(recv_cap);
    let mut seed = 0;
    let (mut total, mut bytes) = (0u64, 0u64);
    for n in batches {
        let datas: Vec<Vec<u8>> = (0..n)
            .map(|i| {
                seed += 1;
                // Sizes across 1..=MAX_PACKET, including both ends.
                let len = match i % 5 {
                    0 => 1,
                    1 => MAX_PACKET,
                    _ => 1 + (seed as usize * 7919) % MAX_PACKET,
                };
                fill(seed, len)
            })
            .collect();
        let out: Vec<Outgoing> = datas
            .iter()
            .map(|d| Outgoing {
                peer: b.local(),
                data: d,
            })
            .collect();
        assert_eq!(a.send(&out).unwrap(), n);
        let got = recv_n(b, &mut batch, n);
        for (i, (peer, data)) in got.iter().enumerate() {
            assert_eq!(*peer, a.local(), "datagram {i}: wrong sender");
            assert_eq!(
                data, &datas[i],
                "datagram {i} of batch of {n}: contents differ"
            );
        }
        total += n as u64;
        bytes += datas.iter().map(|d| d.len() as u64).sum::<u64>();
    }
    let (sa, sb) = (a.stats(), b.stats());
    assert_eq!((sa.sent, sa.sent_bytes, sa.send_dropped), (total, bytes, 0));
    assert_eq!(
        (sb.received, sb.received_bytes, sb.recv_truncated),
        (total, bytes, 0)
    );
}

#[test]
fn batches_of_1_to_64_all_sizes() {
    let (a, b) = pair(1);
    assert_ne!(a.local().ip(), b.local().ip());
    exchange(&a, &b, 1..=64, 64);
    // And back, with a receive batch smaller than the send batches.
    exchange(&b, &a, [1, 7, 64, 33].into_iter(), 5);
}

#[test]
fn batch_larger_than_one_syscall() {
    let (a, b) = pair(2);
    exchange(&a, &b, [150, 64, 65, 129].into_iter(), 200);
}

#[test]
fn recv_times_out_with_zero() {
    let (_a, b) = pair(3);
    let mut batch = RecvBatch::new(8);
    let t = Instant::now();
    assert_eq!(
        b.recv(&mut batch, Some(Duration::from_millis(150)))
            .unwrap(),
        0
    );
    let e = t.elapsed();
    assert!(
        e >= Duration::from_millis(150) && e < Duration::from_secs(2),
        "{e:?}"
    );
    assert_eq!(b.recv(&mut batch, Some(Duration::ZERO)).unwrap(), 0);
    assert!(batch.is_empty());
}

#[test]
fn close_wakes_blocked_recv() {
    let (_a, b) = pair(4);
    let b = Arc::new(b);
    let b2 = b.clone();
    let t = std::thread::spawn(move || {
        let mut batch = RecvBatch::new(4);
        let start = Instant::now();
        let n = b2.recv(&mut batch, None).unwrap();
        (n, start.elapsed())
    });
    std::thread::sleep(Duration::from_millis(200));
    let closed_at = Instant::now();
    b.close();
    let (n, waited) = t.join().unwrap();
    assert_eq!(n, 0);
    assert!(
        waited >= Duration::from_millis(150),
        "recv returned before close: {waited:?}"
    );
    assert!(
        closed_at.elapsed() < Duration::from_millis(500),
        "close did not wake recv promptly"
    );
    // Later calls return at once.
    let mut batch = RecvBatch::new(4);
    let t = Instant::now();
    assert_eq!(b.recv(&mut batch, None).unwrap(), 0);
    assert!(t.elapsed() < Duration::from_millis(100));
}

#[test]
fn oversized_datagram_is_dropped_and_counted() {
    let (_a, b) = pair(5);
    let raw = UdpSocket::bind("127.77.5.3:0").unwrap();
    raw.send_to(&vec![1u8; MAX_PACKET + 1], b.local()).unwrap();
    raw.send_to(&[2u8; 10], b.local()).unwrap();
    let mut batch = RecvBatch::new(8);
    let got = recv_n(&b, &mut batch, 1);
    assert_eq!(got[0], (raw.local_addr().unwrap(), vec![2u8; 10]));
    assert_eq!(b.stats().recv_truncated, 1);
    assert_eq!(b.stats().received, 1);
}

#[test]
fn undeliverable_datagrams_are_dropped_not_errors() {
    let (a, b) = pair(6);
    let v6: SocketAddr = "[2001:db8::1]:4791".parse().unwrap(); // wrong family: never sent
    let out = [
        Outgoing {
            peer: v6,
            data: b"x",
        },
        Outgoing {
            peer: b.local(),
            data: b"ok",
        },
        Outgoing {
            peer: b.local(),
            data: &vec![0u8; 70_000],
        }, // too large for UDP
        Outgoing {
            peer: b.local(),
            data: b"ok2",
        },
    ];
    assert_eq!(a.send(&out).unwrap(), 2);
    assert_eq!(a.stats().send_dropped, 2);
    let mut batch = RecvBatch::new(8);
    let got = recv_n(&b, &mut batch, 2);
    assert_eq!(got[0].1, b"ok");
    assert_eq!(got[1].1, b"ok2");
}

#[test]
fn bind_address_not_on_host() {
    let e = UdpLink::bind("192.0.2.1:4791".parse().unwrap()).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::AddrNotAvailable);
    assert_eq!(
        e.to_string(),
        "softrdma: cannot bind 192.0.2.1:4791: address not available on this host \
         (set SOFTRDMA_ADDR to one of this host's addresses)"
    );
    assert!(!e.to_string().contains('\n'));
}

#[test]
fn bind_port_in_use() {
    let other = UdpSocket::bind("127.77.7.1:0").unwrap();
    let addr = other.local_addr().unwrap();
    let e = UdpLink::bind(addr).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!(
            "softrdma: cannot bind {addr}: already in use by another soft RDMA device or program; "
        )),
        "{msg}"
    );
    assert!(
        msg.contains("SOFTRDMA_ADDR") && !msg.contains('\n'),
        "{msg}"
    );
    // Two links on one address are refused the same way.
    let l = UdpLink::bind("127.77.7.2:0".parse().unwrap()).unwrap();
    assert_eq!(
        UdpLink::bind(l.local()).unwrap_err().kind(),
        std::io::ErrorKind::AddrInUse
    );
}

#[test]
fn ipv6_pair_on_loopback() {
    let a = UdpLink::bind("[::1]:0".parse().unwrap()).unwrap();
    let b = UdpLink::bind("[::1]:0".parse().unwrap()).unwrap();
    assert!(a.local().is_ipv6() && a.local().port() != b.local().port());
    assert_eq!(a.mtu_discover().unwrap(), libc::IPV6_PMTUDISC_DO);
    exchange(&a, &b, [1, 2, 64, 17].into_iter(), 64);
}

/// `lo`'s MTU as `ip link` reports it.
fn lo_mtu() -> u32 {
    let o = std::process::Command::new("ip")
        .args(["-o", "link", "show", "lo"])
        .output()
        .expect("ip (iproute2)");
    let out = String::from_utf8_lossy(&o.stdout);
    let mut words = out.split_whitespace();
    words.find(|w| *w == "mtu");
    words
        .next()
        .and_then(|m| m.parse().ok())
        .expect("mtu in `ip link`")
}

#[test]
fn link_reports_the_mtu_of_its_interface() {
    let want = lo_mtu();
    // 127.0.0.1 is listed on lo; any other 127/8 address is not, yet is lo's.
    for addr in ["127.0.0.1:0", "127.9.8.7:0", "[::1]:0"] {
        let l = UdpLink::bind(addr.parse().unwrap()).unwrap();
        assert_eq!(l.mtu(), Some(want), "{addr}");
    }
}

#[test]
fn socket_options() {
    let (a, _b) = pair(8);
    assert_eq!(a.mtu_discover().unwrap(), libc::IP_PMTUDISC_DO);
    // Asked for 4 MiB; as root (SO_RCVBUFFORCE) we get it (the kernel doubles).
    let got = a.recv_buffer_size().unwrap();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        assert!(got >= 4 << 20, "SO_RCVBUF {got}");
    } else {
        println!("note: not root, SO_RCVBUF is {got}");
    }
}

/// IPv4 headers of UDP datagrams to `port` seen on `lo` by a packet socket;
/// None if packet sockets are not allowed here.
struct Sniffer(std::os::fd::OwnedFd);

impl Sniffer {
    fn open() -> Option<Sniffer> {
        use std::os::fd::FromRawFd;
        let proto = (libc::ETH_P_IP as u16).to_be() as libc::c_int;
        // SAFETY: socket takes no pointers.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                proto,
            )
        };
        if fd < 0 {
            return None;
        }
        // SAFETY: fd is a new socket we own.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        // SAFETY: the name is a NUL-terminated string literal.
        let ifindex = unsafe { libc::if_nametoindex(c"lo".as_ptr()) };
        // SAFETY: sockaddr_ll is plain old data; all-zero is valid.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto as u16;
        sll.sll_ifindex = ifindex as i32;
        use std::os::fd::AsRawFd;
        // SAFETY: sll is a live sockaddr_ll and its size is passed.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(
            r,
            0,
            "bind packet socket: {}",
            std::io::Error::last_os_error()
        );
        Some(Sniffer(fd))
    }

    /// (IP ID, DF, UDP payload bytes) of the first `n` IPv4/UDP packets to `dst`.
    fn capture(&self, dst: SocketAddr, n: usize) -> Vec<(u16, bool, usize)> {
        use std::os::fd::AsRawFd;
        let SocketAddr::V4(dst) = dst else { panic!() };
        let mut out = Vec::new();
        let mut buf = [0u8; 65536];
        let end = Instant::now() + Duration::from_secs(5);
        while out.len() < n {
            assert!(
                Instant::now() < end,
                "sniffer saw {} of {n} packets",
                out.len()
            );
            let mut pfd = libc::pollfd {
                fd: self.0.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one live pollfd.
            unsafe { libc::poll(&mut pfd, 1, 200) };
            // SAFETY: buf is writable for its length.
            let r = unsafe {
                libc::recv(
                    self.0.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if r < 28 {
                continue;
            }
            let ip = &buf[..r as usize];
            let ihl = usize::from(ip[0] & 0xf) * 4;
            if ip[0] >> 4 != 4 || ip[9] != 17 || ip[16..20] != dst.ip().octets() {
                continue;
            }
            if u16::from_be_bytes([ip[ihl + 2], ip[ihl + 3]]) != dst.port() {
                continue;
            }
            let id = u16::from_be_bytes([ip[4], ip[5]]);
            let df = ip[6] & 0x40 != 0;
            let udp_len = usize::from(u16::from_be_bytes([ip[ihl + 4], ip[ihl + 5]]));
            out.push((id, df, udp_len.saturating_sub(8)));
        }
        out
    }
}

#[test]
fn ipv4_on_the_wire_has_df_and_id_zero() {
    let (a, b) = pair(9);
    let Some(sniffer) = Sniffer::open() else {
        println!("note: no packet socket (not root?): checking the socket option only");
        assert_eq!(a.mtu_discover().unwrap(), libc::IP_PMTUDISC_DO);
        return;
    };
    let msgs: Vec<Vec<u8>> = (0..4).map(|i| vec![i as u8; 100 + i]).collect();
    let out: Vec<Outgoing> = msgs
        .iter()
        .map(|d| Outgoing {
            peer: b.local(),
            data: d,
        })
        .collect();
    a.send(&out).unwrap();
    // On lo each packet may be seen twice (outgoing and incoming): take 4.
    for (id, df, _) in sniffer.capture(b.local(), 4) {
        assert!(df, "DF not set");
        assert_eq!(id, 0, "IP ID not 0");
    }
    // Control: a plain socket (default PMTU discovery) does not send ID 0
    // every time — this is what the check above would catch.
    let plain = UdpSocket::bind("127.77.9.3:0").unwrap();
    let target: SocketAddr = "127.77.9.4:9".parse().unwrap();
    for _ in 0..4 {
        plain.send_to(b"control", target).unwrap();
    }
    let ids: Vec<u16> = sniffer
        .capture(target, 4)
        .into_iter()
        .map(|(id, _, _)| id)
        .collect();
    assert!(
        ids.iter().any(|&id| id != 0),
        "control: plain socket IDs {ids:?}"
    );
}

#[test]
fn equal_packets_to_a_loopback_peer_travel_as_one_gso_datagram() {
    let (a, b) = pair(10);
    let c = UdpLink::bind("127.77.10.3:0".parse().unwrap()).unwrap();
    // 15 full packets and a short last one to b, then one to c, then 3 to b.
    let mut msgs: Vec<(SocketAddr, Vec<u8>)> = (0..16)
        .map(|i| (b.local(), vec![i as u8; if i == 15 { 300 } else { 1000 }]))
        .collect();
    msgs.push((c.local(), vec![0xcc; 1000]));
    msgs.extend((0..3).map(|i| (b.local(), vec![0xb0 + i as u8; 700])));
    let out: Vec<Outgoing> = msgs
        .iter()
        .map(|(p, d)| Outgoing { peer: *p, data: d })
        .collect();
    let sniffer = Sniffer::open();
    assert_eq!(a.send(&out).unwrap(), 20);
    assert_eq!(a.stats().sent, 20);
    let mut batch = RecvBatch::new(64);
    let got = recv_n(&b, &mut batch, 19);
    let want: Vec<(SocketAddr, Vec<u8>)> = msgs
        .iter()
        .filter(|(p, _)| *p == b.local())
        .map(|(_, d)| (a.local(), d.clone()))
        .collect();
    assert_eq!(got, want, "every packet, in order, exactly");
    assert_eq!(recv_n(&c, &mut batch, 1)[0].1, vec![0xcc; 1000]);
    match sniffer {
        // On lo the GSO datagram is seen whole: the 16 packets in one.
        Some(s) => assert!(
            s.capture(b.local(), 2)
                .iter()
                .any(|&(_, _, n)| n == 15 * 1000 + 300),
            "no coalesced datagram on lo"
        ),
        None => println!("note: no packet socket (not root?): coalescing not observed"),
    }
}

/// `send_packed`: packets laid out in one buffer, as a transmit queue
/// leaves them. A run to one peer leaves as one GSO datagram (one piece of
/// memory); a packet not right after the one before starts a datagram of
/// its own; on loopback no ICRC is touched, so every byte arrives as laid out.
#[test]
fn packets_laid_out_in_one_buffer_leave_as_gso_datagrams_of_consecutive_packets() {
    let (a, b) = pair(11);
    let c = UdpLink::bind("127.77.11.3:0".parse().unwrap()).unwrap();
    let mut bytes = Vec::new();
    let mut pkts = Vec::new();
    let mut put = |peer: SocketAddr, len: usize, seed: u64, gap: usize| {
        bytes.resize(bytes.len() + gap, 0xee);
        pkts.push(Packed {
            peer,
            start: bytes.len(),
            len,
        });
        bytes.extend(fill(seed, len));
    };
    // 16 full and a short last to b (one datagram), one to c, then 3 to b
    // of which the last is not right after the one before (two datagrams).
    for i in 0..17 {
        put(b.local(), if i == 16 { 300 } else { 1000 }, i, 0);
    }
    put(c.local(), 1000, 100, 0);
    put(b.local(), 700, 101, 0);
    put(b.local(), 700, 102, 0);
    put(b.local(), 700, 103, 5);
    let before = bytes.clone();
    assert_eq!(a.send_packed(&mut bytes, &pkts).unwrap(), 21);
    assert_eq!(bytes, before, "loopback: no ICRC rewritten");
    let s = a.stats();
    assert_eq!((s.sent, s.send_calls, s.gso_sent), (21, 1, 2));
    let mut batch = RecvBatch::new(64);
    let got = recv_n(&b, &mut batch, 20);
    let want: Vec<(SocketAddr, Vec<u8>)> = pkts
        .iter()
        .filter(|p| p.peer == b.local())
        .map(|p| (a.local(), before[p.start..p.start + p.len].to_vec()))
        .collect();
    assert_eq!(got, want, "every packet, in order, exactly");
    assert_eq!(recv_n(&c, &mut batch, 1)[0].1, fill(100, 1000));
}

/// Run `wait(timeout)` on another thread; how long it took (a hang fails
/// after 10 s).
fn timed_wait(link: &Arc<UdpLink>, timeout: Option<Duration>) -> Duration {
    let (l, (tx, rx)) = (link.clone(), std::sync::mpsc::channel());
    std::thread::spawn(move || {
        let t = Instant::now();
        l.wait(timeout).unwrap();
        let _ = tx.send(t.elapsed());
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("wait did not return")
}

#[test]
fn wait_sleeps_through_arrivals_while_wakeups_are_off_and_receives_nothing() {
    let (a, b) = pair(30);
    let b = Arc::new(b);
    let to_b = |data: &[u8]| {
        let sent = a.send(&[Outgoing {
            peer: b.local(),
            data,
        }]);
        assert_eq!(sent.unwrap(), 1);
    };
    // On (the default): an arrival ends the wait long before its timeout.
    to_b(b"one");
    assert!(timed_wait(&b, Some(Duration::from_secs(60))) < Duration::from_secs(10));
    // Off, with no datagram received since the last off: the socket leaves
    // the interest lazily, so the datagram waiting ends one wait at most;
    // the next runs to its timeout.
    b.wake_on_arrival(false);
    let _ = timed_wait(&b, Some(Duration::from_millis(300)));
    let slept = timed_wait(&b, Some(Duration::from_millis(300)));
    assert!(slept >= Duration::from_millis(300), "woken after {slept:?}");
    // Waiting took nothing: both datagrams are there for recv.
    to_b(b"two");
    let mut batch = RecvBatch::new(8);
    let mut got = Vec::new();
    while got.len() < 2 {
        assert!(b.recv(&mut batch, Some(Duration::from_secs(5))).unwrap() > 0);
        got.extend(batch.iter().map(|(_, d)| d.to_vec()));
    }
    assert_eq!(got, [b"one".to_vec(), b"two".to_vec()]);
    // Off after UDP traffic: the socket leaves the interest at once, so not
    // even the first wait ends for a datagram waiting.
    b.wake_on_arrival(true);
    b.wake_on_arrival(false);
    to_b(b"two and a half");
    let slept = timed_wait(&b, Some(Duration::from_millis(300)));
    assert!(slept >= Duration::from_millis(300), "woken after {slept:?}");
    assert!(b.recv(&mut batch, Some(Duration::from_secs(5))).unwrap() > 0);
    assert_eq!(batch.iter().next().unwrap().1, b"two and a half");
    // Turning wake-ups on with a datagram waiting ends a wait with no timeout.
    to_b(b"three");
    let l = b.clone();
    let waiter = std::thread::spawn(move || {
        l.wait(None).unwrap();
    });
    std::thread::sleep(Duration::from_millis(100));
    b.wake_on_arrival(true);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        waiter.join().unwrap();
        let _ = tx.send(());
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("turning wake-ups on did not end the wait");
}

#[test]
fn kick_ends_one_wait_and_close_ends_all() {
    let (_a, b) = pair(31);
    let b = Arc::new(b);
    b.wake_on_arrival(false);
    let l = b.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        l.wait(None).unwrap();
        let _ = tx.send(());
    });
    std::thread::sleep(Duration::from_millis(100));
    b.kick();
    rx.recv_timeout(Duration::from_secs(10))
        .expect("kick did not end the wait");
    // The kick was consumed: the next wait runs to its timeout.
    let slept = timed_wait(&b, Some(Duration::from_millis(200)));
    assert!(slept >= Duration::from_millis(200), "woken after {slept:?}");
    // A close is not consumed: every later wait returns at once.
    b.close();
    for _ in 0..3 {
        assert!(timed_wait(&b, None) < Duration::from_secs(10));
    }
}

/// After a receive that found datagrams, an unbounded wait first watches
/// the socket for a while (`SOFTRDMA_RX_SPIN`), then sleeps: a datagram
/// arriving during the spin, or long after it, ends the wait, and so does a
/// kick — the spin loses no wake-up and takes no datagram.
#[test]
fn a_wait_after_traffic_spins_then_sleeps_and_misses_nothing() {
    let (a, b) = pair(32);
    let b = Arc::new(b);
    let to_b = |data: &[u8]| {
        let sent = a.send(&[Outgoing {
            peer: b.local(),
            data,
        }]);
        assert_eq!(sent.unwrap(), 1);
    };
    let mut batch = RecvBatch::new(8);
    for (k, gap) in [0, 1, 300].into_iter().enumerate() {
        to_b(b"traffic");
        assert!(b.recv(&mut batch, Some(Duration::from_secs(5))).unwrap() > 0);
        let l = b.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            l.wait(None).unwrap();
            let _ = tx.send(());
        });
        std::thread::sleep(Duration::from_millis(gap));
        let next = [b'n', k as u8];
        to_b(&next);
        rx.recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("a datagram {gap} ms into the wait did not end it"));
        assert!(b.recv(&mut batch, Some(Duration::from_secs(5))).unwrap() > 0);
        assert_eq!(batch.iter().next().unwrap().1, next);
    }
    // A kick right after traffic (during the spin) ends the wait too.
    to_b(b"traffic");
    assert!(b.recv(&mut batch, Some(Duration::from_secs(5))).unwrap() > 0);
    let l = b.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        l.wait(None).unwrap();
        let _ = tx.send(());
    });
    b.kick();
    rx.recv_timeout(Duration::from_secs(10))
        .expect("a kick during the spin did not end the wait");
}
