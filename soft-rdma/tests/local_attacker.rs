//! A local attacker against the same-host transport (issue 19, findings 1,
//! 4 and 6): another process of this host — of our uid, or `nobody` — that
//! squats devices' abstract socket names, forges and floods ring offers,
//! names a peer twice, or holds UDP 4791 on the wildcard address. Each
//! attack fails and is counted, and the victims' traffic arrives whole, in
//! order and from the right peer.
//!
//! The attacker is this test binary again, running `attacker` (selected by
//! an environment variable), as `nobody` through `setpriv` where a test says
//! so (as root only; otherwise that part is skipped and says so). The
//! victims are `UdpLink`s in this process.
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use soft_rdma::transport::{Link, Outgoing, RecvBatch, UdpLink, SAME_HOST_MAX_RINGS};

const ROLE: &str = "SOFTRDMA_TEST_LOCAL_ATTACKER";

// ---- the victims ------------------------------------------------------------

fn addr(net: u8, host: u8) -> SocketAddr {
    SocketAddr::from(([127, 81, net, host], 4791))
}

fn name_of(a: SocketAddr) -> String {
    format!("softrdma-roce/{a}")
}

fn link(a: SocketAddr) -> UdpLink {
    UdpLink::bind_same_host(a).unwrap()
}

/// A datagram that says which one it is (4-byte number, then filler).
fn datagram(i: u32) -> Vec<u8> {
    let mut d = i.to_le_bytes().to_vec();
    d.resize(16 + (i as usize * 131) % 4000, i as u8);
    d
}

/// `n` datagrams from `a` to `b`, 50 at a time, each lot received by `b`
/// before the next goes (the sender receives too, as a device's receive
/// thread does: the handshake answers it). Every one must arrive exactly,
/// in order, from `a`.
fn exchange(a: &UdpLink, b: &UdpLink, n: u32) {
    let mut batch = RecvBatch::new(64);
    let mut next = 0;
    while next < n {
        let ds: Vec<Vec<u8>> = (next..(next + 50).min(n)).map(datagram).collect();
        let out: Vec<Outgoing<'_>> = ds
            .iter()
            .map(|d| Outgoing {
                peer: b.local(),
                data: d,
            })
            .collect();
        assert_eq!(a.send(&out).unwrap(), out.len());
        a.recv(&mut batch, Some(Duration::ZERO)).unwrap();
        assert!(batch.is_empty(), "the sender received a datagram");
        let end = Instant::now() + Duration::from_secs(5);
        let mut got = 0;
        while got < ds.len() {
            assert!(Instant::now() < end, "lost datagrams");
            b.recv(&mut batch, Some(Duration::from_millis(50))).unwrap();
            for i in 0..batch.len() {
                let (from, d) = batch.get(i);
                assert_eq!(from, a.local(), "a datagram from someone else");
                assert_eq!(d, ds[got], "datagram {}", next as usize + got);
                got += 1;
            }
        }
        next += ds.len() as u32;
    }
}

/// Receive on `l` for `d` (it takes up offers meanwhile); nothing may come.
fn idle(l: &UdpLink, d: Duration) {
    let mut batch = RecvBatch::new(16);
    let end = Instant::now() + d;
    while Instant::now() < end {
        l.recv(&mut batch, Some(Duration::from_millis(5))).unwrap();
        assert!(batch.is_empty(), "received {} datagrams", batch.len());
    }
}

/// The tests of this file run one at a time: the flood test measures this
/// process's memory, which another test's rings would grow.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    test_support::serial::serial()
}

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let l = s.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    l.split_whitespace().nth(1).unwrap().parse().unwrap()
}

// ---- the attacker process ---------------------------------------------------

fn is_root() -> bool {
    // SAFETY: getuid has no arguments and cannot fail.
    unsafe { libc::getuid() == 0 }
}

/// A running attacker: what it printed before `READY`.
struct Attacker {
    child: Child,
    out: BufReader<std::process::ChildStdout>,
    pub ready: String,
}

/// Start the attacker `role` with `env`; as `nobody` if asked (and root).
fn spawn_attacker(role: &str, env: &[(&str, String)], nobody: bool) -> Attacker {
    let exe = std::env::current_exe().unwrap();
    let test_args = ["--exact", "attacker", "--nocapture", "--test-threads", "1"];
    let mut cmd = if nobody {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
            .arg(&exe);
        c
    } else {
        Command::new(&exe)
    };
    cmd.args(test_args)
        .env(ROLE, role)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = cmd.spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut ready = String::new();
    loop {
        let mut line = String::new();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "attacker {role} died: {ready}"
        );
        // The harness's "test attacker ... " may lead the first line.
        if let Some(i) = line.find("ATTACK ") {
            ready.push_str(&line[i + 7..]);
        }
        if line.contains("READY") {
            break;
        }
    }
    Attacker { child, out, ready }
}

impl Attacker {
    /// Tell it to stop; what it reported.
    fn finish(mut self) -> String {
        drop(self.child.stdin.take());
        let mut rest = String::new();
        self.out.read_to_string(&mut rest).unwrap();
        assert!(self.child.wait().unwrap().success());
        rest.lines()
            .filter_map(|l| l.split_once("ATTACK ").map(|(_, r)| r))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// `key=value` from a report.
fn field(report: &str, key: &str) -> u64 {
    report
        .split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} in {report:?}"))
        .parse()
        .unwrap()
}

fn say(s: &str) {
    println!("ATTACK {s}");
    std::io::stdout().flush().unwrap();
}

fn abstract_bound(name: &str) -> std::io::Result<UnixDatagram> {
    UnixDatagram::bind_addr(&UnixAddr::from_abstract_name(name.as_bytes())?)
}

/// A sealed memfd shaped as a ring (right size, magic, header) that holds
/// one published datagram, `INJECTED!`: a consumer that ever reads it has
/// taken a forged ring.
fn forged_ring() -> OwnedFd {
    const HEADER: usize = 4096;
    const RING: usize = 4 << 20;
    // SAFETY: a NUL-terminated name; a non-negative result is a new
    // descriptor that nobody else owns.
    let fd = unsafe {
        let fd = libc::memfd_create(c"forged".as_ptr(), libc::MFD_ALLOW_SEALING);
        assert!(fd >= 0);
        OwnedFd::from_raw_fd(fd)
    };
    let f = std::fs::File::from(fd);
    f.set_len((HEADER + RING) as u64).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(b"SRDMAR01", 0).unwrap();
    f.write_all_at(&(RING as u64).to_le_bytes(), 8).unwrap();
    f.write_all_at(&24u64.to_le_bytes(), 64).unwrap();
    let mut rec = 16u32.to_le_bytes().to_vec();
    rec.extend_from_slice(&[0; 4]);
    rec.extend_from_slice(b"INJECTED!INJECT!");
    f.write_all_at(&rec, HEADER as u64).unwrap();
    // SAFETY: a plain fcntl on a descriptor we own.
    let r = unsafe {
        libc::fcntl(
            f.as_raw_fd(),
            libc::F_ADD_SEALS,
            libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL,
        )
    };
    assert_eq!(r, 0);
    OwnedFd::from(f)
}

/// Send `payload` with `fd` from `sock` to the abstract name `to`
/// (retrying while the receiver's queue is full, up to 2 s).
fn send_fd(sock: &UnixDatagram, to: &str, payload: &[u8], fd: RawFd) -> bool {
    let dest = UnixAddr::from_abstract_name(to.as_bytes()).unwrap();
    // The address as the kernel takes it: family, NUL, name.
    let mut sun: libc::sockaddr_un = unsafe_zeroed();
    sun.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let name = dest.as_abstract_name().unwrap();
    for (d, &b) in sun.sun_path[1..].iter_mut().zip(name) {
        *d = b as libc::c_char;
    }
    let sun_len = std::mem::offset_of!(libc::sockaddr_un, sun_path) + 1 + name.len();
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr() as *mut libc::c_void,
        iov_len: payload.len(),
    };
    #[repr(C, align(8))]
    struct Cmsg([u8; 24]);
    let mut cmsg = Cmsg([0; 24]);
    let mut h: libc::msghdr = unsafe_zeroed();
    h.msg_name = (&mut sun as *mut libc::sockaddr_un).cast();
    h.msg_namelen = sun_len as libc::socklen_t;
    h.msg_iov = &mut iov;
    h.msg_iovlen = 1;
    h.msg_control = cmsg.0.as_mut_ptr().cast();
    // SAFETY: arithmetic on its argument.
    h.msg_controllen = unsafe { libc::CMSG_SPACE(4) } as usize;
    // SAFETY: msg_control is 24 writable, 8-aligned bytes: CMSG_SPACE(4)
    // holds the header and its int.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&h);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(4) as usize;
        libc::CMSG_DATA(c).cast::<libc::c_int>().write_unaligned(fd);
    }
    let end = Instant::now() + Duration::from_secs(2);
    loop {
        // SAFETY: every pointer in `h` is to a live local; sendmsg reads only.
        let r = unsafe { libc::sendmsg(sock.as_raw_fd(), &h, libc::MSG_DONTWAIT) };
        if r >= 0 {
            return true;
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EAGAIN) || Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn unsafe_zeroed<T>() -> T {
    // SAFETY: used only for the C structs above, for which all-zero is valid.
    unsafe { std::mem::zeroed() }
}

/// A ring offer's words with a guessed proof.
fn offer_words(guess: u8) -> Vec<u8> {
    let mut w = b"softrdma ring offer v2".to_vec();
    w.extend_from_slice(&[guess; 6]);
    w
}

/// A handshake datagram.
fn control(kind: u8, x: [u8; 6], y: [u8; 6]) -> Vec<u8> {
    [&b"SR"[..], &[kind], &x, &y].concat()
}

/// Send `data` to `to` from `sock` with the source address `src` (any local
/// address: `IP_PKTINFO`) — a forged UDP source.
fn send_spoofed(sock: &UdpSocket, src: SocketAddr, to: SocketAddr, data: &[u8]) {
    let (SocketAddr::V4(src), SocketAddr::V4(to)) = (src, to) else {
        unreachable!()
    };
    let mut dst: libc::sockaddr_in = unsafe_zeroed();
    dst.sin_family = libc::AF_INET as libc::sa_family_t;
    dst.sin_port = to.port().to_be();
    dst.sin_addr.s_addr = u32::from(*to.ip()).to_be();
    let mut info: libc::in_pktinfo = unsafe_zeroed();
    info.ipi_spec_dst.s_addr = u32::from(*src.ip()).to_be();
    #[repr(C, align(8))]
    struct Cmsg([u8; 32]);
    let mut cmsg = Cmsg([0; 32]);
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let mut h: libc::msghdr = unsafe_zeroed();
    h.msg_name = (&mut dst as *mut libc::sockaddr_in).cast();
    h.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    h.msg_iov = &mut iov;
    h.msg_iovlen = 1;
    h.msg_control = cmsg.0.as_mut_ptr().cast();
    let n = std::mem::size_of::<libc::in_pktinfo>() as u32;
    // SAFETY: arithmetic on its argument.
    h.msg_controllen = unsafe { libc::CMSG_SPACE(n) } as usize;
    // SAFETY: CMSG_SPACE(12) = 32 fits the 32-byte, 8-aligned buffer.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&h);
        (*c).cmsg_level = libc::IPPROTO_IP;
        (*c).cmsg_type = libc::IP_PKTINFO;
        (*c).cmsg_len = libc::CMSG_LEN(n) as usize;
        libc::CMSG_DATA(c)
            .cast::<libc::in_pktinfo>()
            .write_unaligned(info);
    }
    // SAFETY: every pointer in `h` is to a live local; sendmsg reads only.
    let r = unsafe { libc::sendmsg(sock.as_raw_fd(), &h, 0) };
    assert_eq!(
        r,
        data.len() as isize,
        "{}",
        std::io::Error::last_os_error()
    );
}

/// Wait for stdin to close (the test's "stop").
fn until_told() {
    let mut s = String::new();
    let _ = std::io::stdin().read_to_string(&mut s);
}

fn env_list(k: &str) -> Vec<String> {
    std::env::var(k)
        .map(|v| {
            v.split(',')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

/// The attacker's roles:
/// * `squat`: bind the names in `NAMES` (`bound=` how many), then count the
///   offers that reach them until told to stop;
/// * `offer`: offer a forged ring to `TARGET` from each name in `NAMES`, and
///   from `FLOOD` more names (`offered=`);
/// * `prove`: own `COUNT` addresses and do the whole handshake with
///   `TARGET` from each (`proven=`, `mapped=` rings the target took);
/// * `wildcard`: hold UDP 0.0.0.0:4791 and count what reaches it.
#[test]
fn attacker() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let target = std::env::var("TARGET").unwrap_or_default();
    match role.as_str() {
        "squat" => {
            let socks: Vec<UnixDatagram> = env_list("NAMES")
                .iter()
                .filter_map(|n| abstract_bound(n).ok())
                .collect();
            say(&format!("bound={}", socks.len()));
            println!("READY");
            let stop = std::thread::spawn(until_told);
            let (mut offers, mut msgs) = (0, 0);
            let mut buf = [0u8; 256];
            while !stop.is_finished() {
                for s in &socks {
                    s.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
                    if let Ok(n) = s.recv(&mut buf) {
                        msgs += 1;
                        offers += buf[..n].starts_with(b"softrdma ring offer") as u32;
                    }
                }
                if socks.is_empty() {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            say(&format!("offers={offers} messages={msgs}"));
        }
        "offer" => {
            let mut names = env_list("NAMES");
            let flood: usize = std::env::var("FLOOD").map_or(0, |v| v.parse().unwrap());
            names
                .extend((0..flood).map(|i| {
                    name_of(SocketAddr::from(([127, 83, (i >> 8) as u8, i as u8], 4791)))
                }));
            // The names a test asks for are held until the end (a squat);
            // the flood's are let go at once.
            let mut held = std::collections::HashMap::new();
            let mut offered = 0;
            for (i, n) in names.iter().enumerate() {
                let flooding = i >= names.len() - flood;
                if !held.contains_key(n) {
                    let Ok(s) = abstract_bound(n) else { continue };
                    held.insert(n.clone(), s);
                }
                let ring = forged_ring();
                let from = &held[n];
                offered += send_fd(from, &target, &offer_words(i as u8), ring.as_raw_fd()) as u32;
                if flooding {
                    held.remove(n);
                }
            }
            say(&format!("offered={offered}"));
            println!("READY");
            until_told();
        }
        "prove" => {
            let count: usize = std::env::var("COUNT").unwrap().parse().unwrap();
            let to: SocketAddr = target.parse().unwrap();
            let mut keep = Vec::new();
            let (mut proven, mut offered) = (0, 0);
            for i in 0..count {
                let me = SocketAddr::from(([127, 84, (i >> 8) as u8, i as u8], 4791));
                let udp = UdpSocket::bind(me).unwrap();
                let unix = abstract_bound(&name_of(me)).unwrap();
                // Beyond the limit there is no answer: wait less.
                udp.set_read_timeout(Some(Duration::from_millis(200)))
                    .unwrap();
                let x = [i as u8 ^ 0x5a, 1, 2, 3, 4, 5];
                udp.send_to(&control(b'H', x, [0; 6]), to).unwrap();
                let mut m = [0u8; 64];
                if let Ok((15, _)) = udp.recv_from(&mut m) {
                    if m[2] == b'A' && m[3..9] == x {
                        proven += 1;
                        let mut w = b"softrdma ring offer v2".to_vec();
                        w.extend_from_slice(&m[9..15]);
                        let ring = forged_ring();
                        offered += send_fd(&unix, &name_of(to), &w, ring.as_raw_fd()) as u32;
                    }
                }
                keep.push((udp, unix));
            }
            say(&format!("proven={proven} offered={offered}"));
            println!("READY");
            until_told();
        }
        "wildcard" => {
            let s = UdpSocket::bind("0.0.0.0:4791");
            say(&format!("bound={}", s.is_ok() as u8));
            println!("READY");
            let stop = std::thread::spawn(until_told);
            let mut got = 0;
            if let Ok(s) = s {
                s.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
                let mut buf = [0u8; 65536];
                while !stop.is_finished() {
                    got += s.recv(&mut buf).is_ok() as u32;
                }
            }
            say(&format!("got={got}"));
        }
        r => panic!("no role {r}"),
    }
}

// ---- the attacks ------------------------------------------------------------

/// Finding 1: a process (of our uid, then `nobody`) binds the receiver's
/// name before the receiver opens. The receiver says so, counts it and stays
/// on UDP; its peer's handshake goes to the receiver's UDP endpoint and gets
/// no answer, so no ring — and no offer — ever reaches the squatter.
/// (Before: the sender offered its ring to the squatter, which then got
/// every datagram.)
#[test]
fn squatting_the_receivers_name_before_it_opens_gets_nothing() {
    let _one = one_at_a_time();
    for (net, nobody) in [(1, false), (2, true)] {
        if nobody && !is_root() {
            eprintln!("not root: the other-uid squatter is skipped");
            continue;
        }
        let (a_at, b_at) = (addr(net, 1), addr(net, 2));
        let squat = spawn_attacker("squat", &[("NAMES", name_of(b_at))], nobody);
        assert_eq!(field(&squat.ready, "bound"), 1);
        let b = link(b_at);
        assert!(!b.has_same_host());
        assert_eq!(b.stats().same_host_squatted, 1);
        let a = link(a_at);
        for _ in 0..20 {
            exchange(&a, &b, 100);
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(a.stats().same_host_sent, 0, "a ring to a squatter");
        let report = squat.finish();
        assert_eq!(field(&report, "offers"), 0, "the squatter got an offer");
        assert_eq!(field(&report, "messages"), 0);
    }
}

/// Finding 1: once a device holds its name, a squatter cannot take it, and
/// the ring to the device comes up as usual.
#[test]
fn squatting_a_name_after_the_device_opened_fails() {
    let _one = one_at_a_time();
    let (a, b) = (link(addr(3, 1)), link(addr(3, 2)));
    assert!(b.has_same_host());
    let squat = spawn_attacker("squat", &[("NAMES", name_of(b.local()))], false);
    assert_eq!(field(&squat.ready, "bound"), 0);
    exchange(&a, &b, 2000);
    assert!(a.stats().same_host_sent > 0, "{:?}", a.stats());
    assert_eq!(b.stats().same_host_refused, 0);
    let report = squat.finish();
    assert_eq!(field(&report, "offers"), 0);
}

/// Finding 1: a squatter of the *sender's* name offers rings to the
/// receiver as that sender — with no handshake, after a forged hello (UDP
/// source forged with `IP_PKTINFO`), and as `nobody`. The receiver maps
/// none (the forged ring holds a datagram that must never arrive), counts
/// each, and the real sender's UDP traffic arrives intact.
#[test]
fn squatting_the_senders_name_and_forged_offers_inject_nothing() {
    let _one = one_at_a_time();
    for (net, nobody) in [(4, false), (5, true)] {
        if nobody && !is_root() {
            eprintln!("not root: the other-uid forger is skipped");
            continue;
        }
        let (a_at, b_at) = (addr(net, 1), addr(net, 2));
        let b = link(b_at);
        // A forged hello "from a" first: b answers to a's endpoint, which
        // the squatter cannot read.
        let forger = UdpSocket::bind(SocketAddr::from(([127, 81, net, 9], 4791))).unwrap();
        send_spoofed(&forger, a_at, b_at, &control(b'H', [7; 6], [0; 6]));
        idle(&b, Duration::from_millis(20));
        let offers = spawn_attacker(
            "offer",
            &[
                ("NAMES", vec![name_of(a_at); 3].join(",")),
                ("TARGET", name_of(b_at)),
            ],
            nobody,
        );
        assert_eq!(field(&offers.ready, "offered"), 3);
        // The real sender opens after its name was taken.
        let a = link(a_at);
        assert!(!a.has_same_host());
        assert_eq!(a.stats().same_host_squatted, 1);
        idle(&b, Duration::from_millis(50));
        let s = b.stats();
        assert_eq!(s.same_host_refused, 3, "{s:?}");
        if nobody {
            assert_eq!(s.same_host_other_uid, 3, "{s:?}");
        } else {
            assert_eq!(s.same_host_unproven, 3, "{s:?}");
        }
        assert_eq!(b.same_host_rings_in(), 0);
        exchange(&a, &b, 2000);
        assert_eq!(b.stats().same_host_received, 0);
        offers.finish();
    }
}

/// Finding 4: `127.81.6.1:04791` names the same peer as `127.81.6.1:4791`.
/// An offer from that second name is refused and does not evict the peer's
/// ring, which carries on.
#[test]
fn a_second_name_of_a_peer_cannot_replace_its_ring() {
    let _one = one_at_a_time();
    let (a, b) = (link(addr(6, 1)), link(addr(6, 2)));
    exchange(&a, &b, 2000);
    assert!(a.stats().same_host_sent > 0);
    assert_eq!(b.same_host_rings_in(), 1);
    let alias = format!("softrdma-roce/{}:0{}", a.local().ip(), a.local().port());
    let offers = spawn_attacker(
        "offer",
        &[("NAMES", alias), ("TARGET", name_of(b.local()))],
        false,
    );
    assert_eq!(field(&offers.ready, "offered"), 1);
    idle(&b, Duration::from_millis(20));
    assert_eq!(b.stats().same_host_unproven, 1);
    assert_eq!(b.same_host_rings_in(), 1);
    let before = a.stats().same_host_sent;
    exchange(&a, &b, 1000);
    assert_eq!(a.stats().same_host_sent, before + 1000, "off the ring");
    offers.finish();
}

/// Finding 4: a flood of forged offers from 3000 names maps nothing (RSS
/// stays put); an attacker that owns 80 addresses of its own and completes
/// the handshake from each gets at most [`SAME_HOST_MAX_RINGS`] rings (4 MiB
/// each), the rest refused; the victim still talks to its peer (by UDP: it
/// is at its limit).
#[test]
fn a_flood_of_offers_is_bounded() {
    let _one = one_at_a_time();
    let (a, b) = (link(addr(7, 1)), link(addr(7, 2)));
    let rss0 = rss_kib();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (offered, rss1, flood, proven) = std::thread::scope(|s| {
        // The victim's receive thread. What an attacker's own proven
        // rings hold comes from its own addresses (127.84/16), as UDP from
        // them would; nothing else may come.
        let pump = s.spawn(|| {
            let mut batch = RecvBatch::new(16);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                b.recv(&mut batch, Some(Duration::from_millis(5))).unwrap();
                for i in 0..batch.len() {
                    let (from, d) = batch.get(i);
                    assert!(from.to_string().starts_with("127.84."), "{from}");
                    assert_eq!(d, b"INJECTED!INJECT!");
                }
            }
        });
        let flood = spawn_attacker(
            "offer",
            &[("FLOOD", "3000".into()), ("TARGET", name_of(b.local()))],
            false,
        );
        let offered = field(&flood.ready, "offered");
        let end = Instant::now() + Duration::from_secs(10);
        while b.stats().same_host_refused < offered && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(b.same_host_rings_in(), 0);
        let rss1 = rss_kib();
        let prove = spawn_attacker(
            "prove",
            &[("COUNT", "80".into()), ("TARGET", b.local().to_string())],
            false,
        );
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        pump.join().unwrap();
        (offered, rss1, flood, prove)
    });
    let s = b.stats();
    eprintln!(
        "forged offers {offered}: RSS {rss0} -> {rss1} KiB; proven {}: {} rings, RSS {} KiB; {s:?}",
        proven.ready.trim(),
        b.same_host_rings_in(),
        rss_kib()
    );
    assert!(offered >= 2900, "{offered}");
    assert!(s.same_host_unproven >= offered);
    assert!(
        rss1 < rss0 + 8 * 1024,
        "forged offers cost memory: {rss0} -> {rss1} KiB"
    );
    assert_eq!(b.same_host_rings_in(), SAME_HOST_MAX_RINGS);
    // Handshakes beyond the limit are refused: most at the HELLO (no ACK),
    // any proven beyond it at the offer. (The attacker waits 200 ms for each
    // ACK, so on a loaded machine how many it proved varies: count those.)
    let proven_n = field(&proven.ready, "proven");
    assert!(proven_n >= SAME_HOST_MAX_RINGS as u64, "{proven_n} proven");
    assert!(s.same_host_over_limit > 0, "{s:?}");
    assert!(
        s.same_host_over_limit >= proven_n - SAME_HOST_MAX_RINGS as u64,
        "{s:?}"
    );
    let ring_kib = (4 << 10) + 4;
    assert!(
        rss_kib() < rss1 + SAME_HOST_MAX_RINGS as u64 * ring_kib + 8 * 1024,
        "rings beyond the limit"
    );
    exchange(&a, &b, 1000);
    assert_eq!(a.stats().same_host_sent, 0);
    proven.finish();
    flood.finish();
}

/// The `unshare`d child of the wildcard test: in a network namespace of its
/// own, `nobody` holds UDP 0.0.0.0:4791, and two default devices open
/// anyway (on a fallback port), say so, and reach each other by their GIDs
/// (port 4791 above the link) — by ring too — while the holder gets nothing.
#[test]
fn wildcard_child() {
    if std::env::var_os("SOFTRDMA_TEST_WILDCARD_CHILD").is_none() {
        return;
    }
    let holder = spawn_attacker("wildcard", &[], true);
    assert_eq!(field(&holder.ready, "bound"), 1);
    // Before: this failed with EADDRINUSE.
    let a = soft_rdma::transport::bind_default().expect("a default device opens");
    let b = soft_rdma::transport::bind_default().expect("and a second one");
    for l in [&a, &b] {
        assert_eq!(l.fallback_port(), Some(4792), "{}", l.local());
        assert_eq!(l.stats().port_fallback, 1);
    }
    // Peers address each other by GID: port 4791.
    let gid = |l: &UdpLink| SocketAddr::new(l.local().ip(), 4791);
    let mut batch = RecvBatch::new(64);
    for (from, to) in [(&a, &b), (&b, &a)] {
        let mut got = 0;
        let end = Instant::now() + Duration::from_secs(5);
        let mut i = 0u32;
        while got < 500 {
            assert!(Instant::now() < end, "{got} of 500 arrived");
            let d = datagram(i);
            from.send(&[Outgoing {
                peer: gid(to),
                data: &d,
            }])
            .unwrap();
            from.recv(&mut batch, Some(Duration::ZERO)).unwrap();
            i += 1;
            to.recv(&mut batch, Some(Duration::from_millis(20)))
                .unwrap();
            for k in 0..batch.len() {
                assert_eq!(batch.get(k).0, gid(from));
                assert_eq!(batch.get(k).1, datagram(got));
                got += 1;
            }
        }
        assert!(
            from.stats().same_host_sent > 0,
            "no ring: {:?}",
            from.stats()
        );
    }
    let report = holder.finish();
    assert_eq!(field(&report, "got"), 0, "the holder received datagrams");
    println!("WILDCARD OK");
}

/// Finding 6: one socket of another uid on UDP 0.0.0.0:4791 no longer stops
/// every default device from opening (see `wildcard_child`). Run in a
/// network namespace of its own: the wildcard would otherwise take 4791
/// from every other device on this (shared) host meanwhile.
#[test]
fn a_wildcard_socket_on_4791_does_not_stop_default_devices() {
    let _one = one_at_a_time();
    if !is_root() {
        eprintln!("not root: no network namespace, the wildcard test is skipped");
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("unshare")
        .args([
            "--net",
            "sh",
            "-c",
            "ip link set lo up && exec \"$0\" \"$@\"",
        ])
        .arg(exe)
        .args([
            "--exact",
            "wildcard_child",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("SOFTRDMA_TEST_WILDCARD_CHILD", "1")
        .env_remove("SOFTRDMA_ADDR")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("WILDCARD OK"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// End to end, finding 1: a squatter (`nobody`, as root) holds the name of
/// a `softrdma perf` server before it starts. The server says so once, a
/// `send_bw --verify` from another process completes (over UDP), and the
/// squatter gets nothing.
#[test]
fn a_perf_server_whose_name_is_squatted_serves_verified_and_leaks_nothing() {
    let _one = one_at_a_time();
    let bin = env!("CARGO_BIN_EXE_softrdma");
    let (srv, cli) = (addr(10, 2), addr(10, 1));
    let squat = spawn_attacker("squat", &[("NAMES", name_of(srv))], is_root());
    assert_eq!(field(&squat.ready, "bound"), 1);
    let port = (19000 + std::process::id() % 1000).to_string();
    let mut server = Command::new(bin)
        .args(["perf", "send_bw", "--server", "-p", &port])
        .env("SOFTRDMA_ADDR", srv.ip().to_string())
        .env("SOFTRDMA_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(server.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("Waiting for client") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "the server died");
    }
    let client = Command::new(bin)
        .args(["perf", "send_bw", "--client", "127.0.0.1", "-p", &port])
        .args(["-n", "2000", "--verify"])
        .env("SOFTRDMA_ADDR", cli.ip().to_string())
        .output()
        .unwrap();
    assert!(
        client.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&client.stdout),
        String::from_utf8_lossy(&client.stderr)
    );
    assert!(server.wait().unwrap().success());
    let mut err = String::new();
    server
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(err.matches("(squatted)").count(), 1, "{err}");
    let report = squat.finish();
    assert_eq!(field(&report, "offers"), 0, "the squatter got an offer");
    assert_eq!(field(&report, "messages"), 0);
}
