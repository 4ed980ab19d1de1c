//! Finding a listener of the same host by port: a client dialing any local
//! address reaches the device that holds the port; one holder per port; a
//! squatter makes the listener's bind fail (never shares it) and a silent
//! one does not hang the client.

use soft_rdma::transport::Hub;
use soft_rdma::verbs::*;
use soft_rdma_cm::rendezvous::{find, resolve, Claim};
use soft_rdma_cm::wire::PortSpace;
use soft_rdma_cm::*;
use std::net::SocketAddr;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};
use test_support::verbs::Node;

fn cm_on(hub: &std::sync::Arc<Hub>, last: u8) -> (Node, Cm) {
    let n = Node::on_hub(hub, SocketAddr::from(([127, 21, 0, last], 4791)), 64);
    let cm = Cm::new(&n.dev, CmConfig::default()).unwrap();
    (n, cm)
}

#[test]
fn a_client_dialing_a_local_address_finds_the_device_holding_the_port() {
    let hub = Hub::new();
    let (_n, cm) = cm_on(&hub, 1);
    let chan = EventChannel::new().unwrap();
    let id = cm.create_id(&chan);
    let port = id.bind(PortSpace::Tcp, 0).unwrap();
    assert!(port >= 32768, "an ephemeral port: {port}");
    // Answered once the id listens: a client dialling in between waits.
    let early = std::thread::spawn(move || find(PortSpace::Tcp, port).unwrap());
    std::thread::sleep(Duration::from_millis(100));
    id.listen(PortSpace::Tcp.service_id(port)).unwrap();
    assert_eq!(early.join().unwrap(), Some(cm.gid()));
    for dst in ["127.0.0.1", "0.0.0.0", "::1", "127.99.1.2"] {
        let dst = SocketAddr::new(dst.parse().unwrap(), port);
        assert_eq!(
            resolve(PortSpace::Tcp, dst).unwrap(),
            Some(cm.gid()),
            "{dst}"
        );
    }
    // Another port space is another port.
    assert_eq!(find(PortSpace::Udp, port).unwrap(), None);
    // Another host's address is its device.
    let far: SocketAddr = "192.0.2.7:7471".parse().unwrap();
    assert_eq!(
        resolve(PortSpace::Tcp, far).unwrap(),
        Some(Gid::from_ip(far.ip()))
    );
    // One holder per port (two wildcards: EADDRNOTAVAIL, as the kernel's
    // cma_check_port says); released with its id.
    let other = cm.create_id(&chan);
    assert_eq!(
        other.bind(PortSpace::Tcp, port),
        Err(Errno(libc::EADDRNOTAVAIL))
    );
    drop(id);
    assert_eq!(other.bind(PortSpace::Tcp, port), Ok(port));
    drop(other);
    assert_eq!(find(PortSpace::Tcp, port).unwrap(), None);
}

#[test]
fn a_squatted_port_fails_the_listener_and_a_silent_squatter_does_not_hang_clients() {
    let hub = Hub::new();
    let (_n, cm) = cm_on(&hub, 2);
    let probe = Claim::take_any(PortSpace::Tcp, cm.gid()).unwrap();
    let port = probe.port;
    drop(probe);
    // Someone else binds the name first and never answers.
    let name = std::os::unix::net::SocketAddr::from_abstract_name(format!(
        "softrdma-cm/{:#06x}/{port}",
        PortSpace::Tcp.value()
    ))
    .unwrap();
    let squatter = UnixListener::bind_addr(&name).unwrap();
    let chan = EventChannel::new().unwrap();
    let id = cm.create_id(&chan);
    assert_eq!(id.bind(PortSpace::Tcp, port), Err(Errno(libc::EADDRINUSE)));
    let t = Instant::now();
    assert_eq!(find(PortSpace::Tcp, port).unwrap(), None);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    drop(squatter);
}
