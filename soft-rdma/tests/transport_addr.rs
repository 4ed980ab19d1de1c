//! The local-address rule (this file's tests change SOFTRDMA_ADDR, so they
//! run one after another in one test).
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use soft_rdma::transport::{addr, bind_default, Link, Outgoing, RecvBatch, ROCE_PORT};

#[test]
fn address_rule() {
    // Rule 2: pid-derived loopback address, port 4791; the next one if taken.
    std::env::remove_var(addr::ENV);
    let want = addr::pid_loopback(std::process::id());
    assert_eq!(want.octets()[0], 127);
    assert_ne!(want.octets()[1], 0);
    assert_eq!(
        addr::default_addr().unwrap(),
        SocketAddr::new(IpAddr::V4(want), ROCE_PORT)
    );
    match bind_default() {
        Ok(a) => {
            let IpAddr::V4(ip) = a.local().ip() else {
                panic!()
            };
            assert_eq!(a.local().port(), ROCE_PORT);
            if ip != want {
                println!("note: {want}:4791 was in use, got {ip}");
            }
            // A second device in this process gets another address, and the
            // two talk with no configuration.
            let b = bind_default().unwrap();
            assert_ne!(a.local(), b.local());
            assert_eq!(b.local().port(), ROCE_PORT);
            a.send(&[Outgoing {
                peer: b.local(),
                data: b"hello",
            }])
            .unwrap();
            let mut batch = RecvBatch::new(4);
            assert_eq!(b.recv(&mut batch, Some(Duration::from_secs(2))).unwrap(), 1);
            assert_eq!(batch.get(0), (a.local(), &b"hello"[..]));
        }
        Err(e) => panic!("bind_default: {e}"),
    }

    // Rule 1: SOFTRDMA_ADDR, with or without a port, no fallback.
    std::env::set_var(addr::ENV, "127.77.200.1:0");
    let l = bind_default().unwrap();
    assert_eq!(l.local().ip(), "127.77.200.1".parse::<IpAddr>().unwrap());
    std::env::set_var(addr::ENV, l.local().to_string());
    let e = bind_default().unwrap_err().to_string();
    assert!(e.contains("already in use"), "{e}");
    std::env::set_var(addr::ENV, "[::1]:0");
    assert!(bind_default().unwrap().local().is_ipv6());
    std::env::set_var(addr::ENV, "192.0.2.1");
    let e = bind_default().unwrap_err().to_string();
    assert_eq!(
        e,
        "softrdma: cannot bind 192.0.2.1:4791: address not available on this host \
         (set SOFTRDMA_ADDR to one of this host's addresses)"
    );
    std::env::set_var(addr::ENV, "host.example");
    let e = bind_default().unwrap_err().to_string();
    assert!(
        e.starts_with("softrdma: SOFTRDMA_ADDR=\"host.example\" is not an IP address"),
        "{e}"
    );
    std::env::remove_var(addr::ENV);
}
