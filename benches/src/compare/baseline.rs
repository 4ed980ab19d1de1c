//! The baselines, built here: what the kernel's own loopback gives two
//! processes (TCP stream, UDP ping-pong, UDP datagram streams) and what one
//! thread's memcpy gives. The peer of each is this executable re-run with a
//! hidden `--peer ROLE` argument; it prints `PORT n` when it is ready.
//!
//! Each baseline is a fair best effort: large reads on the TCP sink; busy
//! polling on both ends of the UDP ping-pong (as `ib_write_lat` spins);
//! `sendmmsg`/`recvmmsg` batches of 64 and a large receive buffer for the
//! UDP streams (rates are what the receiver got: loopback drops what it
//! cannot take, and the loss is reported).

use nix::sys::socket::{
    recvmmsg, sendmmsg, setsockopt, sockopt, MsgFlags, MultiHeaders, SockaddrIn,
};
use nix::sys::time::TimeVal;
use std::io::{BufRead, BufReader, IoSlice, IoSliceMut, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

const BATCH: usize = 64;
/// A peer that hears nothing for this long exits (its parent died).
const IDLE: Duration = Duration::from_secs(20);

/// A running peer process and its stdout.
pub struct Peer {
    child: Child,
    out: BufReader<ChildStdout>,
    pub port: u16,
}

impl Peer {
    pub fn spawn(role: &[&str]) -> Result<Peer, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut child = Command::new(exe)
            .arg("--peer")
            .args(role)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("spawn peer {role:?}: {e}"))?;
        let mut out = BufReader::new(child.stdout.take().expect("piped"));
        let line = read_line(&mut out)?;
        let port = line
            .strip_prefix("PORT ")
            .and_then(|p| p.trim().parse().ok())
            .ok_or_else(|| format!("peer {role:?} said {line:?}, not PORT n"))?;
        Ok(Peer { child, out, port })
    }

    pub fn line(&mut self) -> Result<String, String> {
        read_line(&mut self.out)
    }

    pub fn finish(mut self) -> Result<(), String> {
        let st = self.child.wait().map_err(|e| e.to_string())?;
        if st.success() {
            Ok(())
        } else {
            Err(format!("peer exited {st}"))
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn read_line(r: &mut impl BufRead) -> Result<String, String> {
    let mut s = String::new();
    match r.read_line(&mut s) {
        Ok(0) => Err("peer closed its output".into()),
        Ok(_) => Ok(s.trim_end().to_string()),
        Err(e) => Err(e.to_string()),
    }
}

fn announce(port: u16) {
    println!("PORT {port}");
    let _ = std::io::stdout().flush();
}

fn io(e: std::io::Error) -> String {
    e.to_string()
}

/// The peer side: `tcp-sink`, `udp-echo`, `udp-sink SIZE`.
pub fn peer_main(args: &[String]) -> Result<(), String> {
    match args.first().map(String::as_str) {
        Some("tcp-sink") => tcp_sink(),
        Some("udp-echo") => udp_echo(),
        Some("udp-echo-handoff") => udp_echo_handoff(),
        Some("udp-sink") => {
            let size = args
                .get(1)
                .and_then(|s| s.parse().ok())
                .ok_or("udp-sink SIZE")?;
            udp_sink(size)
        }
        other => Err(format!("unknown peer role {other:?}")),
    }
}

// ---- TCP stream --------------------------------------------------------

/// Rounds of: an 8-byte total, that many bytes, a 1-byte acknowledgement.
fn tcp_sink() -> Result<(), String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(io)?;
    announce(l.local_addr().map_err(io)?.port());
    let (mut s, _) = l.accept().map_err(io)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let mut h = [0u8; 8];
        if s.read_exact(&mut h).is_err() {
            return Ok(());
        }
        let mut left = u64::from_le_bytes(h);
        if left == 0 {
            return Ok(());
        }
        while left > 0 {
            let want = buf.len().min(left as usize);
            let n = s.read(&mut buf[..want]).map_err(io)?;
            if n == 0 {
                return Err("tcp-sink: early EOF".into());
            }
            left -= n as u64;
        }
        s.write_all(&[1]).map_err(io)?;
    }
}

/// TCP loopback bandwidth (MiB/s) per write size: `(size, count)` rounds,
/// each `count` writes of `size` bytes, timed to the sink's acknowledgement.
pub fn tcp_stream(rounds: &[(usize, usize)]) -> Result<Vec<(usize, f64)>, String> {
    let peer = Peer::spawn(&["tcp-sink"])?;
    let mut s = TcpStream::connect(("127.0.0.1", peer.port)).map_err(io)?;
    // Without it, the last small segment of a round can wait for a delayed
    // ACK (tens of ms) and the round's time measures that.
    s.set_nodelay(true).map_err(io)?;
    let mut res = Vec::new();
    for &(size, count) in rounds {
        let buf = vec![0x5au8; size];
        let total = (size * count) as u64;
        let t = Instant::now();
        s.write_all(&total.to_le_bytes()).map_err(io)?;
        for _ in 0..count {
            s.write_all(&buf).map_err(io)?;
        }
        let mut ack = [0u8; 1];
        s.read_exact(&mut ack).map_err(io)?;
        let secs = t.elapsed().as_secs_f64();
        res.push((size, total as f64 / (1u64 << 20) as f64 / secs));
    }
    s.write_all(&0u64.to_le_bytes()).map_err(io)?;
    drop(s);
    peer.finish()?;
    Ok(res)
}

// ---- UDP ping-pong -----------------------------------------------------

/// Echoes each datagram, busy-polling; an empty datagram ends it.
fn udp_echo() -> Result<(), String> {
    let s = UdpSocket::bind("127.0.0.1:0").map_err(io)?;
    s.set_nonblocking(true).map_err(io)?;
    announce(s.local_addr().map_err(io)?.port());
    let mut buf = [0u8; 2048];
    let mut last = Instant::now();
    loop {
        match s.recv_from(&mut buf) {
            Ok((0, _)) => return Ok(()),
            Ok((n, from)) => {
                s.send_to(&buf[..n], from).map_err(io)?;
                last = Instant::now();
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if last.elapsed() > IDLE {
                    return Err("udp-echo: idle".into());
                }
                std::hint::spin_loop();
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Median one-way time (usec) = median round trip / 2, `payload`-byte
/// datagrams, after `warmup` untimed round trips.
pub fn udp_pingpong(payload: usize, warmup: usize, iters: usize) -> Result<f64, String> {
    let peer = Peer::spawn(&["udp-echo"])?;
    let s = UdpSocket::bind("127.0.0.1:0").map_err(io)?;
    s.connect(("127.0.0.1", peer.port)).map_err(io)?;
    s.set_nonblocking(true).map_err(io)?;
    let msg = vec![7u8; payload];
    let mut buf = [0u8; 2048];
    let mut rtts = Vec::with_capacity(iters);
    for i in 0..warmup + iters {
        let t = Instant::now();
        s.send(&msg).map_err(io)?;
        loop {
            match s.recv(&mut buf) {
                Ok(_) => break,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if t.elapsed() > Duration::from_secs(1) {
                        // Lost (loopback rarely drops): send again.
                        s.send(&msg).map_err(io)?;
                    }
                    std::hint::spin_loop()
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        if i >= warmup {
            rtts.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    let _ = s.send(&[]);
    peer.finish()?;
    rtts.sort_by(f64::total_cmp);
    Ok(rtts[rtts.len() / 2] / 2.0)
}

/// What a thread blocked in `recv` tells a spinning main thread: the
/// receive half of one end of the hand-off ping-pong.
#[derive(Default)]
struct Arrivals {
    seen: AtomicU64,
    /// The peer went quiet (an empty datagram, an error or the idle timeout).
    end: AtomicBool,
    from: OnceLock<std::net::SocketAddr>,
}

impl Arrivals {
    /// A thread blocked in `recv` on (a clone of) `s`, counting arrivals.
    fn start(s: &UdpSocket) -> Result<Arc<Arrivals>, String> {
        let a = Arc::new(Arrivals::default());
        let s = s.try_clone().map_err(io)?;
        s.set_nonblocking(false).map_err(io)?;
        s.set_read_timeout(Some(IDLE)).map_err(io)?;
        let me = a.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            loop {
                match s.recv_from(&mut buf) {
                    Ok((n, from)) if n > 0 => {
                        let _ = me.from.set(from);
                        me.seen.fetch_add(1, Ordering::Release);
                    }
                    _ => return me.end.store(true, Ordering::Release),
                }
            }
        });
        Ok(a)
    }

    /// Spin until more than `n` datagrams came; false if the peer went
    /// quiet or a second passed.
    fn spin_past(&self, n: u64) -> bool {
        let t = Instant::now();
        while self.seen.load(Ordering::Acquire) <= n {
            if self.end.load(Ordering::Acquire) || t.elapsed() > Duration::from_secs(1) {
                return false;
            }
            std::hint::spin_loop();
        }
        true
    }
}

/// The hand-off echo: a thread blocked in `recv` tells the main thread,
/// spinning on memory, that a datagram came; the main thread answers.
fn udp_echo_handoff() -> Result<(), String> {
    let s = UdpSocket::bind("127.0.0.1:0").map_err(io)?;
    let arrivals = Arrivals::start(&s)?;
    announce(s.local_addr().map_err(io)?.port());
    let mut n = 0;
    loop {
        while arrivals.seen.load(Ordering::Acquire) <= n {
            if arrivals.end.load(Ordering::Acquire) {
                return Ok(());
            }
            std::hint::spin_loop();
        }
        n += 1;
        let to = *arrivals.from.get().expect("set before counting");
        s.send_to(&[7, 7], to).map_err(io)?;
    }
}

/// The ping-pong `ib_write_lat` imposes on a device in user space, built
/// from plain UDP: at each end a thread blocked in `recv` hands each
/// datagram to the main thread, which spins on memory (as `ib_write_lat`
/// spins on the buffer the peer writes) and sends the next. Median one-way
/// time (usec) = median round trip / 2.
pub fn udp_pingpong_handoff(warmup: usize, iters: usize) -> Result<f64, String> {
    let peer = Peer::spawn(&["udp-echo-handoff"])?;
    let s = UdpSocket::bind("127.0.0.1:0").map_err(io)?;
    s.connect(("127.0.0.1", peer.port)).map_err(io)?;
    let arrivals = Arrivals::start(&s)?;
    let mut rtts = Vec::with_capacity(iters);
    for i in 0..warmup + iters {
        let t = Instant::now();
        s.send(&[7, 7]).map_err(io)?;
        if !arrivals.spin_past(i as u64) {
            let _ = s.send(&[]);
            return Err(format!("hand-off ping-pong: no answer to datagram {i}"));
        }
        if i >= warmup {
            rtts.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    let _ = s.send(&[]);
    peer.finish()?;
    rtts.sort_by(f64::total_cmp);
    Ok(rtts[rtts.len() / 2] / 2.0)
}

// ---- UDP datagram streams ----------------------------------------------

/// Counts datagrams of `size` bytes with `recvmmsg` batches; once they stop
/// for 300 ms, prints `RECV count secs` (from the end of the first batch to
/// the end of the last, counting the datagrams after the first batch).
fn udp_sink(size: usize) -> Result<(), String> {
    let s = UdpSocket::bind("127.0.0.1:0").map_err(io)?;
    // As large a receive buffer as root may force, else what rmem_max allows.
    if setsockopt(&s, sockopt::RcvBufForce, &(32 << 20)).is_err() {
        let _ = setsockopt(&s, sockopt::RcvBuf, &(32 << 20));
    }
    setsockopt(&s, sockopt::ReceiveTimeout, &TimeVal::new(0, 300_000))
        .map_err(|e| e.to_string())?;
    announce(s.local_addr().map_err(io)?.port());
    let mut bufs = vec![vec![0u8; size.max(1)]; BATCH];
    let mut hdrs = MultiHeaders::<SockaddrIn>::preallocate(BATCH, None);
    let (mut count, mut first, mut last): (u64, Option<Instant>, Instant) =
        (0, None, Instant::now());
    let start = Instant::now();
    loop {
        let mut iovs: Vec<[IoSliceMut<'_>; 1]> =
            bufs.iter_mut().map(|b| [IoSliceMut::new(b)]).collect();
        match recvmmsg(
            s.as_raw_fd(),
            &mut hdrs,
            iovs.iter_mut(),
            MsgFlags::empty(),
            None,
        ) {
            Ok(r) => {
                let n = r.count() as u64;
                let now = Instant::now();
                if first.is_none() {
                    first = Some(now);
                } else {
                    count += n;
                }
                last = now;
            }
            Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => {
                if first.is_some() || start.elapsed() > IDLE {
                    break;
                }
            }
            Err(e) => return Err(format!("recvmmsg: {e}")),
        }
    }
    let secs = first.map_or(0.0, |f| last.duration_since(f).as_secs_f64());
    println!("RECV {count} {secs}");
    let _ = std::io::stdout().flush();
    Ok(())
}

/// A stream of `count` datagrams of `size` bytes sent with `sendmmsg`
/// batches of 64; returns (datagrams per second the receiver got, fraction
/// lost).
pub fn udp_stream(size: usize, count: usize) -> Result<(f64, f64), String> {
    let mut peer = Peer::spawn(&["udp-sink", &size.to_string()])?;
    let s = UdpSocket::bind("127.0.0.1:0").map_err(io)?;
    s.connect(("127.0.0.1", peer.port)).map_err(io)?;
    let _ = setsockopt(&s, sockopt::SndBuf, &(4 << 20));
    let payload = vec![0x42u8; size];
    let iovs: Vec<[IoSlice<'_>; 1]> = (0..BATCH).map(|_| [IoSlice::new(&payload)]).collect();
    let addrs: Vec<Option<SockaddrIn>> = vec![None; BATCH];
    let mut hdrs = MultiHeaders::<SockaddrIn>::preallocate(BATCH, None);
    let mut sent = 0usize;
    while sent < count {
        let n = (count - sent).min(BATCH);
        match sendmmsg(
            s.as_raw_fd(),
            &mut hdrs,
            &iovs[..n],
            &addrs[..n],
            [],
            MsgFlags::empty(),
        ) {
            Ok(r) => sent += r.count(),
            Err(nix::errno::Errno::ENOBUFS) | Err(nix::errno::Errno::EAGAIN) => {
                std::thread::yield_now()
            }
            Err(e) => return Err(format!("sendmmsg: {e}")),
        }
    }
    let line = peer.line()?;
    peer.finish()?;
    let mut it = line.split_whitespace();
    let (tag, got, secs) = (it.next(), it.next(), it.next());
    let (Some("RECV"), Some(got), Some(secs)) = (
        tag,
        got.and_then(|g| g.parse::<u64>().ok()),
        secs.and_then(|s| s.parse::<f64>().ok()),
    ) else {
        return Err(format!("udp-sink said {line:?}"));
    };
    if got == 0 || secs <= 0.0 {
        return Err(format!(
            "udp-sink received too little to time ({got} datagrams after the first batch)"
        ));
    }
    // `got` excludes the first batch, which the receiver could not time.
    let lost = 1.0 - (got as f64 + BATCH as f64).min(count as f64) / count as f64;
    Ok((got as f64 / secs, lost.max(0.0)))
}

// ---- memcpy -------------------------------------------------------------

/// How fast this machine hands out fresh memory: `MADV_POPULATE_WRITE` of
/// a new `len`-byte anonymous mapping, one thread, MiB/s. The floor under
/// any device that writes into memory never touched before (each page
/// allocated and zeroed; in a VM, often also faulted in by the host).
/// `huge`: the mapping is advised for transparent huge pages first.
pub fn populate_write(len: usize, huge: bool) -> Result<f64, String> {
    let m = super::footprint::reserve::Reservation::new(len)?;
    if huge {
        m.advise_huge()?;
    }
    let t = Instant::now();
    odp::sys::populate::populate(m.addr as usize, len, true)
        .map_err(|e| format!("MADV_POPULATE_WRITE: {e:?}"))?;
    Ok(len as f64 / (1u64 << 20) as f64 / t.elapsed().as_secs_f64())
}

/// Touch `len` bytes of new memory and give them back: afterwards the guest
/// kernel's free memory is memory the VM's host has backed. This host takes
/// freed guest memory back (free page reporting, a few seconds after it is
/// freed) and faults it in again at its next first touch, many times slower
/// than the guest kernel's own work — a property of the VM, not of what the
/// fresh runs measure, so each of them starts right after this.
pub fn warm_host(len: usize, huge: bool) -> Result<(), String> {
    populate_write(len, huge).map(drop)
}

/// Single-thread memcpy bandwidth (MiB/s) of `len`-byte buffers, both warm
/// (written before timing); the median of `reps` copies.
pub fn memcpy(len: usize, reps: usize) -> f64 {
    let src = vec![0xa5u8; len];
    let mut dst = vec![0u8; len];
    dst.copy_from_slice(&src); // warm: every page of both present
    let mut rates: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let t = Instant::now();
            dst.copy_from_slice(std::hint::black_box(&src));
            std::hint::black_box(&mut dst);
            len as f64 / (1u64 << 20) as f64 / t.elapsed().as_secs_f64()
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}
