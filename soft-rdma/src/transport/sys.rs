//! The transport's syscalls, each behind a safe function: rustix's where
//! it has them (sockets and their options, unix datagrams with descriptors
//! and credentials, epoll, ppoll, memfd and seals, getrandom), raw `libc`
//! where it does not — `sendmmsg` with `UDP_SEGMENT` and `recvmmsg` with
//! `UDP_GRO` (the hot path: rustix has no `recvmmsg` and no GSO/GRO control
//! messages), `UDP_GRO` itself, `getifaddrs` and `SIOCGIFMTU`. All of the
//! transport's `unsafe` is in this file, but for the same-host ring's access
//! to its shared memory (`ring.rs`).
use rustix::event::{self, epoll, PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::net::{
    self, sockopt, AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketAddrUnix, SocketFlags, SocketType,
};
use rustix::{fs, rand::GetRandomFlags};
use std::io::{self, IoSlice, IoSliceMut};
use std::mem::{size_of, zeroed, MaybeUninit};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::time::Duration;

/// Datagrams per `sendmmsg`/`recvmmsg` call (the arrays live on the stack).
pub(super) const CHUNK: usize = 64;

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Path MTU discovery on (`IP_PMTUDISC_DO`: DF set, never fragmented) for
/// an IPv4 (`v4`) or IPv6 UDP socket.
pub(super) fn path_mtu_discovery_do(fd: BorrowedFd<'_>, v4: bool) -> io::Result<()> {
    if v4 {
        sockopt::set_ip_mtu_discover(fd, sockopt::Ipv4PathMtuDiscovery::DO)?;
    } else {
        sockopt::set_ipv6_mtu_discover(fd, sockopt::Ipv6PathMtuDiscovery::DO)?;
    }
    Ok(())
}

/// The socket's path-MTU-discovery mode (`IP_PMTUDISC_*`).
pub(super) fn path_mtu_discovery(fd: BorrowedFd<'_>, v4: bool) -> io::Result<i32> {
    Ok(if v4 {
        sockopt::ip_mtu_discover(fd)?.as_raw() as i32
    } else {
        sockopt::ipv6_mtu_discover(fd)?.as_raw() as i32
    })
}

/// Receive and send buffers of `size` bytes: forced past the system's
/// maximum with CAP_NET_ADMIN, else capped at net.core.[rw]mem_max. Either
/// way the socket carries on with what it got.
pub(super) fn socket_buffers(fd: BorrowedFd<'_>, size: usize) {
    if sockopt::set_socket_recv_buffer_size_force(fd, size).is_err() {
        let _ = sockopt::set_socket_recv_buffer_size(fd, size);
    }
    if sockopt::set_socket_send_buffer_size_force(fd, size).is_err() {
        let _ = sockopt::set_socket_send_buffer_size(fd, size);
    }
}

/// The kernel's receive buffer size for the socket (after doubling).
pub(super) fn recv_buffer_size(fd: BorrowedFd<'_>) -> io::Result<usize> {
    Ok(sockopt::socket_recv_buffer_size(fd)?)
}

/// Ask for `UDP_GRO` (rustix has no wrapper for it); whether the kernel
/// accepted.
pub(super) fn enable_udp_gro(fd: BorrowedFd<'_>) -> bool {
    let on: libc::c_int = 1;
    // SAFETY: `fd` is a live descriptor (borrowed); the option value points to
    // a c_int that lives for the call, and its size is passed exactly.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_UDP,
            UDP_GRO,
            (&on as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    r == 0
}

/// An epoll instance watching `fd` for `EPOLLIN`: itself pollable, it is
/// readable while `fd` is readable *and* the interest is on (see
/// [`epoll_interest`]), so a thread sleeping in [`poll`] on it can be
/// spared the wake-ups of arrivals another thread takes.
pub(super) fn epoll_watching(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let ep = epoll::create(epoll::CreateFlags::CLOEXEC)?;
    epoll::add(&ep, fd, epoll::EventData::new_u64(0), epoll::EventFlags::IN)?;
    Ok(ep)
}

/// Turn the `EPOLLIN` interest of `fd` in `ep` on or off. Turning it on
/// while `fd` is readable wakes the instance's waiters at once.
pub(super) fn epoll_interest(ep: BorrowedFd<'_>, fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    let flags = if on {
        epoll::EventFlags::IN
    } else {
        epoll::EventFlags::empty()
    };
    Ok(epoll::modify(ep, fd, epoll::EventData::new_u64(0), flags)?)
}

/// Wait until one of `fds` (at most 3) has `events` (`POLL*` bits); returns
/// which did (by index), or an empty set on timeout. EINTR is reported as a
/// timeout (callers loop). `None` blocks; the timeout has microsecond
/// precision (`ppoll`), so a short wait — a fault layer's delay line, a
/// deadline — is not rounded up to a millisecond.
pub(super) fn poll(
    fds: &[(BorrowedFd<'_>, libc::c_short)],
    timeout: Option<Duration>,
) -> io::Result<[bool; 3]> {
    assert!(fds.len() <= 3);
    let mut p: [PollFd<'_>; 3] = std::array::from_fn(|i| {
        let (fd, ev) = fds.get(i).copied().unwrap_or((fds[0].0, 0));
        PollFd::from_borrowed_fd(fd, PollFlags::from_bits_retain(ev as u16))
    });
    let ts = timeout.map(|t| Timespec {
        tv_sec: t.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: i64::from(t.subsec_nanos()),
    });
    match event::poll(&mut p[..fds.len()], ts.as_ref()) {
        Ok(_) => {}
        Err(Errno::INTR) => return Ok([false; 3]),
        Err(e) => return Err(e.into()),
    }
    let ready = |i: usize| i < fds.len() && !p[i].revents().is_empty();
    Ok([ready(0), ready(1), ready(2)])
}

/// The abstract unix address `name` (no leading NUL).
fn abstract_addr(name: &[u8]) -> io::Result<SocketAddrUnix> {
    Ok(SocketAddrUnix::new_abstract_name(name)?)
}

/// Send `payload` with the descriptor `fd` (`SCM_RIGHTS`) on the unix
/// datagram socket `sock` to the abstract name `to`, without blocking.
pub(super) fn send_with_fd(
    sock: BorrowedFd<'_>,
    to: &[u8],
    payload: &[u8],
    fd: BorrowedFd<'_>,
) -> io::Result<()> {
    let addr = abstract_addr(to)?;
    let fds = [fd];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(io::Error::other("no room for the descriptor"));
    }
    net::sendmsg_addr(
        sock,
        &addr,
        &[IoSlice::new(payload)],
        &mut control,
        SendFlags::DONTWAIT,
    )?;
    Ok(())
}

/// Send a datagram on the unix datagram socket `sock` to the abstract name
/// `to`, without blocking.
pub(super) fn send_to_abstract(sock: BorrowedFd<'_>, to: &[u8], payload: &[u8]) -> io::Result<()> {
    net::sendto(sock, payload, SendFlags::DONTWAIT, &abstract_addr(to)?)?;
    Ok(())
}

/// One message taken off a unix datagram socket by [`recv_with_fd`].
pub(super) struct UnixMessage {
    pub(super) len: usize,
    /// The sender's abstract name (empty if it has none, or a path name).
    pub(super) from: Vec<u8>,
    /// The descriptor it carried, if it carried exactly one.
    pub(super) fd: Option<OwnedFd>,
    /// The sender's uid as the kernel saw it (`SCM_CREDENTIALS`: the
    /// socket has `SO_PASSCRED`, see [`unix_dgram_bound`]).
    pub(super) uid: Option<u32>,
    /// The sender's pid, from the same credentials (in our PID namespace).
    pub(super) pid: Option<i32>,
}

/// Take one message off the unix datagram socket `sock` without blocking
/// (EAGAIN is an error), with the sender's name and up to one descriptor.
/// Descriptors that do not fit are closed by the kernel (`MSG_CTRUNC`).
pub(super) fn recv_with_fd(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<UnixMessage> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1), ScmCredentials(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let m = net::recvmsg(
        sock,
        &mut [IoSliceMut::new(buf)],
        &mut control,
        RecvFlags::DONTWAIT | RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut fds: Vec<OwnedFd> = Vec::new();
    let (mut uid, mut pid) = (None, None);
    for msg in control.drain() {
        match msg {
            RecvAncillaryMessage::ScmRights(got) => fds.extend(got),
            RecvAncillaryMessage::ScmCredentials(c) => {
                uid = Some(c.uid.as_raw());
                pid = Some(c.pid.as_raw_nonzero().get());
            }
            _ => {}
        }
    }
    let from = m
        .address
        .and_then(|a| SocketAddrUnix::try_from(a).ok())
        .and_then(|u| u.abstract_name().map(<[u8]>::to_vec))
        .unwrap_or_default();
    Ok(UnixMessage {
        len: m.bytes,
        from,
        fd: if fds.len() == 1 { fds.pop() } else { None },
        uid,
        pid,
    })
}

/// A non-blocking, close-on-exec unix datagram socket bound to the abstract
/// name `name`, with `SO_PASSCRED` (every message it receives says who sent
/// it).
pub(super) fn unix_dgram_bound(name: &[u8]) -> io::Result<OwnedFd> {
    let fd = net::socket_with(
        AddressFamily::UNIX,
        SocketType::DGRAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )?;
    net::bind(&fd, &abstract_addr(name)?)?;
    sockopt::set_socket_passcred(&fd, true)?;
    Ok(fd)
}

/// Copy `len` bytes at `remote` in process `pid`'s address space to our
/// address `local` (`process_vm_readv`). The kernel checks both sides: a
/// range `pid` has not mapped, or `local` not writable, is `EFAULT`; a
/// process we may not trace is `EPERM`; a short copy is `EFAULT` too.
///
/// `local` must be memory the caller may have overwritten behind Rust's
/// back: application memory inside a registered MR, held present and
/// writable by its access (`odp::Memory::fill_with`), never Rust-owned.
pub(super) fn read_remote(pid: i32, remote: u64, local: u64, len: usize) -> io::Result<()> {
    let liov = libc::iovec {
        iov_base: local as *mut libc::c_void,
        iov_len: len,
    };
    let riov = libc::iovec {
        iov_base: remote as *mut libc::c_void,
        iov_len: len,
    };
    // SAFETY: the iovecs are valid for the call; the kernel reads only
    // `pid`'s memory (checked by it: ptrace access, mapped range) and writes
    // only `local..local+len` of ours, which the caller holds for us (the
    // MR's access, see above) and which no Rust reference covers. A fault
    // on either side is an error return, not a signal.
    let n = unsafe { libc::process_vm_readv(pid, &liov, 1, &riov, 1, 0) };
    match n {
        n if n < 0 => Err(io::Error::last_os_error()),
        n if n as usize != len => Err(io::Error::from_raw_os_error(libc::EFAULT)),
        _ => Ok(()),
    }
}

/// Copy `len` bytes from our address `src` to our address `local`, as
/// [`read_remote`] does from another process: a fault on either side is
/// `EFAULT`, never a signal (odp's guarded copy). `local` as there; `src`
/// is an address a peer named (another device of this process), which we
/// only read, through the guarded copy.
pub(super) fn read_own(src: u64, local: u64, len: usize) -> io::Result<()> {
    // SAFETY: the guarded copy turns a fault on either address into an
    // error; `local` is held for us and no Rust reference covers it (see
    // `read_remote`). `src` may be any of our addresses, Rust-owned ones
    // included: it is only read, by the copy's own instructions (as the
    // kernel reads for `process_vm_readv`), so whatever it finds lands in
    // the MR and nothing of ours changes. They cannot overlap harmfully:
    // an overlap only garbles the MR's own bytes.
    unsafe { odp::guarded::copy(local as *mut u8, src as *const u8, len) }
        .map_err(|_| io::Error::from_raw_os_error(libc::EFAULT))
}

/// This process's real uid.
pub(super) fn uid() -> u32 {
    rustix::process::getuid().as_raw()
}

/// Random bytes from the kernel (`getrandom`; it blocks only before the
/// pool is first seeded, at boot).
pub(super) fn random(buf: &mut [u8]) -> io::Result<()> {
    let mut at = 0;
    while at < buf.len() {
        match rustix::rand::getrandom(&mut buf[at..], GetRandomFlags::empty()) {
            Ok(n) => at += n,
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// A socket address in the kernel's form.
#[derive(Clone, Copy)]
pub(super) struct RawAddr {
    storage: libc::sockaddr_storage,
    len: libc::socklen_t,
}

impl RawAddr {
    pub(super) fn new(addr: &SocketAddr) -> RawAddr {
        // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
        let mut storage: libc::sockaddr_storage = unsafe { zeroed() };
        let len = match addr {
            SocketAddr::V4(a) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from_ne_bytes(a.ip().octets()),
                    },
                    sin_zero: [0; 8],
                };
                // SAFETY: sockaddr_storage is larger than and aligned for every
                // sockaddr type; we write one whole sockaddr_in at its start.
                unsafe {
                    (&mut storage as *mut libc::sockaddr_storage)
                        .cast::<libc::sockaddr_in>()
                        .write(sin)
                };
                size_of::<libc::sockaddr_in>()
            }
            SocketAddr::V6(a) => {
                let sin6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: a.port().to_be(),
                    sin6_flowinfo: a.flowinfo().to_be(),
                    sin6_addr: libc::in6_addr {
                        s6_addr: a.ip().octets(),
                    },
                    sin6_scope_id: a.scope_id(),
                };
                // SAFETY: as above, for one whole sockaddr_in6.
                unsafe {
                    (&mut storage as *mut libc::sockaddr_storage)
                        .cast::<libc::sockaddr_in6>()
                        .write(sin6)
                };
                size_of::<libc::sockaddr_in6>()
            }
        };
        RawAddr {
            storage,
            len: len as libc::socklen_t,
        }
    }

    pub(super) fn empty() -> RawAddr {
        RawAddr {
            // SAFETY: plain old data; all-zero is valid (family AF_UNSPEC).
            storage: unsafe { zeroed() },
            len: 0,
        }
    }

    pub(super) fn socket_addr(&self) -> Option<SocketAddr> {
        let base = (&self.storage as *const libc::sockaddr_storage).cast::<u8>();
        match self.storage.ss_family as libc::c_int {
            libc::AF_INET if self.len as usize >= size_of::<libc::sockaddr_in>() => {
                // SAFETY: the kernel wrote a whole sockaddr_in (family and
                // length checked); storage is aligned for it.
                let sin = unsafe { base.cast::<libc::sockaddr_in>().read() };
                let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
                Some(SocketAddrV4::new(ip, u16::from_be(sin.sin_port)).into())
            }
            libc::AF_INET6 if self.len as usize >= size_of::<libc::sockaddr_in6>() => {
                // SAFETY: as above, a whole sockaddr_in6.
                let sin6 = unsafe { base.cast::<libc::sockaddr_in6>().read() };
                let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                Some(
                    SocketAddrV6::new(
                        ip,
                        u16::from_be(sin6.sin6_port),
                        u32::from_be(sin6.sin6_flowinfo),
                        sin6.sin6_scope_id,
                    )
                    .into(),
                )
            }
            _ => None,
        }
    }
}

/// Involuntary context switches of the calling thread so far (0 if the
/// kernel does not say): a rise across a spin means another thread wanted
/// the core.
pub(super) fn preempted() -> u64 {
    // SAFETY: rusage is plain old data (all-zero is valid).
    let mut u: libc::rusage = unsafe { zeroed() };
    // SAFETY: getrusage writes one rusage into `u`, which we own.
    let r = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut u) };
    if r == 0 {
        u.ru_nivcsw.max(0) as u64
    } else {
        0
    }
}

/// `UDP_SEGMENT` and `UDP_GRO` (linux/udp.h; not in the libc crate).
pub(super) const UDP_SEGMENT: libc::c_int = 103;
pub(super) const UDP_GRO: libc::c_int = 104;

/// Most iovecs one `send_batch` call passes (a GSO datagram has one per
/// packet).
pub(super) const MAX_IOV: usize = 256;

/// One datagram to send: `parts` concatenated; with `segment` > 0 the kernel
/// cuts it into datagrams of `segment` bytes (UDP GSO; the last may be
/// shorter), each on the wire exactly as if sent alone.
pub(super) struct Datagram<'a> {
    pub(super) addr: RawAddr,
    pub(super) parts: &'a [&'a [u8]],
    pub(super) segment: u16,
}

/// Control-message room for one `UDP_SEGMENT`/`UDP_GRO` value (a u16 sent,
/// an int received): CMSG_SPACE(4) on every Linux ABI, 8-aligned.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct Cmsg([u8; 24]);

/// `sendmmsg` of up to [`CHUNK`] datagrams (and [`MAX_IOV`] parts in all),
/// non-blocking. Ok(n): the first n were sent; Err: the first one failed.
pub(super) fn send_batch(fd: BorrowedFd<'_>, dgrams: &[Datagram<'_>]) -> io::Result<usize> {
    // SAFETY: iovec, mmsghdr and Cmsg are plain old data; all-zero is valid
    // (null pointers, zero lengths). Only the filled entries are passed.
    let mut iov: [libc::iovec; MAX_IOV] = unsafe { zeroed() };
    // SAFETY: as above.
    let mut msgs: [libc::mmsghdr; CHUNK] = unsafe { zeroed() };
    let mut cmsgs = [Cmsg([0; 24]); CHUNK];
    let (mut n, mut v) = (0, 0);
    for d in dgrams.iter().take(CHUNK) {
        if v + d.parts.len() > MAX_IOV || d.parts.is_empty() {
            break;
        }
        for (k, p) in d.parts.iter().enumerate() {
            iov[v + k].iov_base = p.as_ptr() as *mut libc::c_void;
            iov[v + k].iov_len = p.len();
        }
        let h = &mut msgs[n].msg_hdr;
        h.msg_name = (&d.addr.storage as *const libc::sockaddr_storage) as *mut libc::c_void;
        h.msg_namelen = d.addr.len;
        h.msg_iov = &mut iov[v];
        h.msg_iovlen = d.parts.len();
        if d.segment > 0 {
            h.msg_control = cmsgs[n].0.as_mut_ptr().cast();
            // SAFETY: CMSG_SPACE is arithmetic on its argument.
            h.msg_controllen = unsafe { libc::CMSG_SPACE(2) } as usize;
            // SAFETY: msg_control points to 24 writable, 8-aligned bytes and
            // msg_controllen (CMSG_SPACE(2) = 16 or 24) fits them, so the first
            // header and its 2 data bytes are inside the buffer.
            unsafe {
                let c = libc::CMSG_FIRSTHDR(h);
                (*c).cmsg_level = libc::SOL_UDP;
                (*c).cmsg_type = UDP_SEGMENT;
                (*c).cmsg_len = libc::CMSG_LEN(2) as usize;
                libc::CMSG_DATA(c).cast::<u16>().write_unaligned(d.segment);
            }
        }
        v += d.parts.len();
        n += 1;
    }
    if n == 0 {
        return Ok(0);
    }
    // SAFETY: every msg_name points into `dgrams`, every iov into the parts
    // it borrows and every msg_control into `cmsgs`, all alive for the call;
    // sendmmsg only reads through them (it writes msgs[i].msg_len, which lives
    // in our array). `n` <= CHUNK.
    let r = unsafe {
        libc::sendmmsg(
            fd.as_raw_fd(),
            msgs.as_mut_ptr(),
            n as libc::c_uint,
            libc::MSG_DONTWAIT,
        )
    };
    cvt(r).map(|r| r as usize)
}

/// What `recvmmsg` said about one datagram.
#[derive(Clone, Copy)]
pub(super) struct RecvMeta {
    pub(super) addr: RawAddr,
    pub(super) len: usize,
    pub(super) truncated: bool,
    /// UDP GRO: the datagram is several the sender sent, each `segment`
    /// bytes (the last may be shorter); 0 if it is one.
    pub(super) segment: usize,
}

impl RecvMeta {
    pub(super) fn empty() -> RecvMeta {
        RecvMeta {
            addr: RawAddr::empty(),
            len: 0,
            truncated: false,
            segment: 0,
        }
    }
}

/// Non-blocking `recvmmsg` into consecutive `slot`-byte slots of `bufs`
/// (at most `meta.len()` and [`CHUNK`] datagrams). Ok(0) never means EOF
/// for UDP; EAGAIN is returned as an error.
pub(super) fn recv_batch(
    fd: BorrowedFd<'_>,
    bufs: &mut [u8],
    slot: usize,
    meta: &mut [RecvMeta],
) -> io::Result<usize> {
    let n = (bufs.len() / slot).min(meta.len()).min(CHUNK);
    if n == 0 {
        return Ok(0);
    }
    // SAFETY: plain old data, all-zero is valid; see send_batch.
    let mut iov: [libc::iovec; CHUNK] = unsafe { zeroed() };
    // SAFETY: as above.
    let mut msgs: [libc::mmsghdr; CHUNK] = unsafe { zeroed() };
    let mut cmsgs = [Cmsg([0; 24]); CHUNK];
    for (i, chunk) in bufs.chunks_exact_mut(slot).take(n).enumerate() {
        iov[i].iov_base = chunk.as_mut_ptr().cast();
        iov[i].iov_len = slot;
        let h = &mut msgs[i].msg_hdr;
        h.msg_name = (&mut meta[i].addr.storage as *mut libc::sockaddr_storage).cast();
        h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        h.msg_iov = &mut iov[i];
        h.msg_iovlen = 1;
        h.msg_control = cmsgs[i].0.as_mut_ptr().cast();
        h.msg_controllen = size_of::<Cmsg>();
    }
    // SAFETY: each iov points to a distinct `slot`-byte chunk of `bufs`, each
    // msg_name to a whole sockaddr_storage in `meta` and each msg_control to
    // its own Cmsg, all mutably borrowed for the call; the kernel writes
    // within those bounds only. A null timeout with MSG_DONTWAIT never blocks.
    let r = unsafe {
        libc::recvmmsg(
            fd.as_raw_fd(),
            msgs.as_mut_ptr(),
            n as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    let got = cvt(r)? as usize;
    for i in 0..got {
        let h = &msgs[i].msg_hdr;
        meta[i].addr.len = h.msg_namelen;
        meta[i].len = msgs[i].msg_len as usize;
        meta[i].truncated = h.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0;
        meta[i].segment = 0;
        // SAFETY: the kernel filled msg_control up to msg_controllen (within
        // our Cmsg); CMSG_FIRSTHDR/NXTHDR stay within it and the UDP_GRO
        // payload is one int.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(h);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_UDP && (*c).cmsg_type == UDP_GRO {
                    let seg = libc::CMSG_DATA(c).cast::<libc::c_int>().read_unaligned();
                    meta[i].segment = seg.max(0) as usize;
                }
                c = libc::CMSG_NXTHDR(h, c);
            }
        }
    }
    Ok(got)
}

/// The MTU of the network interface that holds `ip` (`getifaddrs`, then
/// `SIOCGIFMTU`, both answered for the caller's network namespace).
pub(super) fn interface_mtu(ip: std::net::IpAddr) -> io::Result<u32> {
    let name = interface_of(ip)?;
    let fd = net::socket_with(
        AddressFamily::INET,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    // SAFETY: an all-zero ifreq is a valid value of this plain C struct.
    let mut req: libc::ifreq = unsafe { zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(name.as_bytes()) {
        *d = *s as libc::c_char; // `name` is shorter than IFNAMSIZ: NUL-ended
    }
    // SAFETY: `req` is a valid ifreq naming an interface; SIOCGIFMTU writes
    // only its `ifru_mtu` member, which we then read.
    unsafe {
        cvt(libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFMTU, &mut req))?;
        Ok(req.ifr_ifru.ifru_mtu as u32)
    }
}

/// The name of the interface that holds `ip`.
fn interface_of(ip: std::net::IpAddr) -> io::Result<std::ffi::CString> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list we free below.
    cvt(unsafe { libc::getifaddrs(&mut list) })?;
    let mut found = None;
    let mut cur = list;
    while !cur.is_null() && found.is_none() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, alive until
        // freeifaddrs; its `ifa_addr` is null or a sockaddr of the family its
        // `sa_family` names, and `ifa_name` a NUL-terminated string.
        unsafe {
            let a = (*cur).ifa_addr;
            if !a.is_null() {
                let addr = match i32::from((*a).sa_family) {
                    libc::AF_INET => Some(std::net::IpAddr::V4(Ipv4Addr::from(u32::from_be(
                        (*a.cast::<libc::sockaddr_in>()).sin_addr.s_addr,
                    )))),
                    libc::AF_INET6 => Some(std::net::IpAddr::V6(Ipv6Addr::from(
                        (*a.cast::<libc::sockaddr_in6>()).sin6_addr.s6_addr,
                    ))),
                    _ => None,
                };
                if addr == Some(ip) {
                    found = Some(std::ffi::CStr::from_ptr((*cur).ifa_name).to_owned());
                }
            }
            cur = (*cur).ifa_next;
        }
    }
    // SAFETY: `list` came from getifaddrs and is freed once; no node is used
    // after this (the name was copied).
    unsafe { libc::freeifaddrs(list) };
    found.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no interface has {ip}")))
}

/// A close-on-exec memfd of `len` bytes, sealed so that it can no longer
/// shrink or grow (a process mapping it cannot be made to fault past its end).
pub(super) fn sealed_memfd(name: &std::ffi::CStr, len: usize) -> io::Result<OwnedFd> {
    let fd = fs::memfd_create(
        name,
        fs::MemfdFlags::CLOEXEC | fs::MemfdFlags::ALLOW_SEALING,
    )?;
    fs::ftruncate(&fd, len as u64)?;
    fs::fcntl_add_seals(
        &fd,
        fs::SealFlags::SHRINK | fs::SealFlags::GROW | fs::SealFlags::SEAL,
    )?;
    Ok(fd)
}

/// Whether a file is sealed against shrinking (`F_GET_SEALS`; false for a
/// file that has no seals to give, e.g. not a memfd).
pub(super) fn sealed_against_shrinking(fd: BorrowedFd<'_>) -> bool {
    fs::fcntl_get_seals(fd).is_ok_and(|s| s.contains(fs::SealFlags::SHRINK))
}

/// A non-blocking UDP socket bound to `addr` with `SO_REUSEADDR`, so that
/// every device of the host can bind the same multicast group and port.
pub(super) fn udp_bound_shared(addr: &SocketAddr) -> io::Result<OwnedFd> {
    let family = if addr.is_ipv4() {
        AddressFamily::INET
    } else {
        AddressFamily::INET6
    };
    let fd = net::socket_with(
        family,
        SocketType::DGRAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )?;
    sockopt::set_socket_reuseaddr(&fd, true)?;
    net::bind(&fd, addr)?;
    Ok(fd)
}

/// Add `fd` to the epoll instance `ep` (`EPOLLIN`); closing `fd` removes it.
pub(super) fn epoll_add(ep: BorrowedFd<'_>, fd: BorrowedFd<'_>) -> io::Result<()> {
    Ok(epoll::add(
        ep,
        fd,
        epoll::EventData::new_u64(0),
        epoll::EventFlags::IN,
    )?)
}

/// Multicast from `fd` leaves through the interface holding `local`.
pub(super) fn multicast_from(fd: BorrowedFd<'_>, local: &Ipv4Addr) -> io::Result<()> {
    Ok(sockopt::set_ip_multicast_if(fd, local)?)
}
