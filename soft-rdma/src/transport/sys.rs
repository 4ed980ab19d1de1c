//! The transport's syscalls (`libc`), each behind a safe function. All of the
//! transport's `unsafe` is in this file, but for the same-host ring's access
//! to its shared memory (`ring.rs`).
use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
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

pub(super) fn setsockopt_int(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `fd` is a live descriptor (borrowed); the option value points to
    // a c_int that lives for the call, and its size is passed exactly.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    cvt(r).map(drop)
}

pub(super) fn getsockopt_int(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `fd` is live; `value` and `len` are valid for writes and `len`
    // holds the size of `value`, so the kernel writes at most that much.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    cvt(r).map(|_| value)
}

/// An epoll instance watching `fd` for `EPOLLIN`: itself pollable, it is
/// readable while `fd` is readable *and* the interest is on (see
/// [`epoll_interest`]), so a thread sleeping in [`poll`] on it can be
/// spared the wake-ups of arrivals another thread takes.
pub(super) fn epoll_watching(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    // SAFETY: epoll_create1 takes no pointers.
    let ep = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
    // SAFETY: `ep` was just returned by epoll_create1, so it is open and ours.
    let ep = unsafe { OwnedFd::from_raw_fd(ep) };
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: 0,
    };
    // SAFETY: both descriptors are live; `ev` is a live epoll_event for the call.
    cvt(unsafe { libc::epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, fd.as_raw_fd(), &mut ev) })?;
    Ok(ep)
}

/// Turn the `EPOLLIN` interest of `fd` in `ep` on or off. Turning it on
/// while `fd` is readable wakes the instance's waiters at once.
pub(super) fn epoll_interest(ep: BorrowedFd<'_>, fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    let mut ev = libc::epoll_event {
        events: if on { libc::EPOLLIN as u32 } else { 0 },
        u64: 0,
    };
    // SAFETY: both descriptors are live; `ev` is a live epoll_event for the call.
    cvt(unsafe { libc::epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_MOD, fd.as_raw_fd(), &mut ev) })
        .map(drop)
}

/// Wait until one of `fds` (at most 3) has `events`; returns which did (by
/// index), or an empty set on timeout. EINTR is reported as a timeout
/// (callers loop). `None` blocks; the timeout has microsecond precision
/// (`ppoll`), so a short wait — a fault layer's delay line, a deadline — is
/// not rounded up to a millisecond.
pub(super) fn poll(
    fds: &[(BorrowedFd<'_>, libc::c_short)],
    timeout: Option<Duration>,
) -> io::Result<[bool; 3]> {
    assert!(fds.len() <= 3);
    let mut p = [libc::pollfd {
        fd: -1,
        events: 0,
        revents: 0,
    }; 3];
    for (slot, (fd, ev)) in p.iter_mut().zip(fds) {
        slot.fd = fd.as_raw_fd();
        slot.events = *ev;
    }
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    });
    let tsp = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `p` is a live array of `fds.len()` initialised pollfds; `tsp`
    // is null or points to a live timespec; no signal mask is passed.
    let r = unsafe {
        libc::ppoll(
            p.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            tsp,
            std::ptr::null(),
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EINTR) {
            return Ok([false; 3]);
        }
        return Err(e);
    }
    Ok([p[0].revents != 0, p[1].revents != 0, p[2].revents != 0])
}

/// A `sockaddr_un` for the abstract name `name` (no leading NUL), and its length.
fn abstract_addr(name: &[u8]) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    // SAFETY: plain old data; all-zero is valid.
    let mut a: libc::sockaddr_un = unsafe { zeroed() };
    if name.len() + 1 > a.sun_path.len() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "name too long"));
    }
    a.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, &b) in a.sun_path[1..].iter_mut().zip(name) {
        *d = b as libc::c_char;
    }
    let len = std::mem::offset_of!(libc::sockaddr_un, sun_path) + 1 + name.len();
    Ok((a, len as libc::socklen_t))
}

/// Control-message room for one descriptor (CMSG_SPACE(4), 8-aligned).
#[repr(C, align(8))]
struct FdCmsg([u8; 24]);

/// Receive-side room: one descriptor and the sender's credentials
/// (CMSG_SPACE(4) + CMSG_SPACE(12) = 24 + 32), 8-aligned. A second
/// descriptor would not fit: the kernel closes it (`MSG_CTRUNC`).
#[repr(C, align(8))]
struct RecvCmsg([u8; 56]);

/// Send `payload` with the descriptor `fd` (`SCM_RIGHTS`) on the unix
/// datagram socket `sock` to the abstract name `to`, without blocking.
pub(super) fn send_with_fd(
    sock: BorrowedFd<'_>,
    to: &[u8],
    payload: &[u8],
    fd: BorrowedFd<'_>,
) -> io::Result<()> {
    let (addr, addr_len) = abstract_addr(to)?;
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr() as *mut libc::c_void,
        iov_len: payload.len(),
    };
    let mut cmsg = FdCmsg([0; 24]);
    // SAFETY: plain old data; all-zero is valid.
    let mut h: libc::msghdr = unsafe { zeroed() };
    h.msg_name = (&addr as *const libc::sockaddr_un) as *mut libc::c_void;
    h.msg_namelen = addr_len;
    h.msg_iov = &mut iov;
    h.msg_iovlen = 1;
    h.msg_control = cmsg.0.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE is arithmetic on its argument.
    h.msg_controllen = unsafe { libc::CMSG_SPACE(4) } as usize;
    // SAFETY: msg_control points to 24 writable, 8-aligned bytes, which
    // CMSG_SPACE(4) (16 or 24) fits: the header and its int are inside.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&h);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(4) as usize;
        libc::CMSG_DATA(c)
            .cast::<libc::c_int>()
            .write_unaligned(fd.as_raw_fd());
    }
    // SAFETY: every pointer in `h` refers to a local that lives for the
    // call; sendmsg only reads through them.
    let r = unsafe { libc::sendmsg(sock.as_raw_fd(), &h, libc::MSG_DONTWAIT) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Send a datagram on the unix datagram socket `sock` to the abstract name
/// `to`, without blocking.
pub(super) fn send_to_abstract(sock: BorrowedFd<'_>, to: &[u8], payload: &[u8]) -> io::Result<()> {
    let (addr, addr_len) = abstract_addr(to)?;
    // SAFETY: `payload` and `addr` are live for the call; sendto only reads them.
    let r = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            payload.as_ptr().cast(),
            payload.len(),
            libc::MSG_DONTWAIT,
            (&addr as *const libc::sockaddr_un).cast(),
            addr_len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
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
}

/// Take one message off the unix datagram socket `sock` without blocking
/// (EAGAIN is an error), with the sender's name and up to one descriptor.
/// Descriptors that do not fit are closed by the kernel (`MSG_CTRUNC`).
pub(super) fn recv_with_fd(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<UnixMessage> {
    // SAFETY: plain old data; all-zero is valid.
    let mut addr: libc::sockaddr_un = unsafe { zeroed() };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut cmsg = RecvCmsg([0; 56]);
    // SAFETY: plain old data; all-zero is valid.
    let mut h: libc::msghdr = unsafe { zeroed() };
    h.msg_name = (&mut addr as *mut libc::sockaddr_un).cast();
    h.msg_namelen = size_of::<libc::sockaddr_un>() as libc::socklen_t;
    h.msg_iov = &mut iov;
    h.msg_iovlen = 1;
    h.msg_control = cmsg.0.as_mut_ptr().cast();
    h.msg_controllen = size_of::<RecvCmsg>();
    // SAFETY: every pointer in `h` refers to a live local or to `buf`, with
    // its true size; the kernel writes within those bounds only.
    let r = unsafe {
        libc::recvmsg(
            sock.as_raw_fd(),
            &mut h,
            libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut fds = Vec::new();
    let mut uid = None;
    // SAFETY: the kernel filled msg_control up to msg_controllen (within our
    // RecvCmsg); CMSG_FIRSTHDR/NXTHDR stay within it. Each SCM_RIGHTS int is
    // a descriptor the kernel installed for us, owned by nobody else; an
    // SCM_CREDENTIALS payload is one `ucred`, read unaligned.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&h);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let n = ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / 4;
                for k in 0..n {
                    let fd = libc::CMSG_DATA(c)
                        .cast::<libc::c_int>()
                        .add(k)
                        .read_unaligned();
                    fds.push(OwnedFd::from_raw_fd(fd));
                }
            }
            if (*c).cmsg_level == libc::SOL_SOCKET
                && (*c).cmsg_type == libc::SCM_CREDENTIALS
                && (*c).cmsg_len as usize
                    >= libc::CMSG_LEN(size_of::<libc::ucred>() as u32) as usize
            {
                uid = Some(
                    libc::CMSG_DATA(c)
                        .cast::<libc::ucred>()
                        .read_unaligned()
                        .uid,
                );
            }
            c = libc::CMSG_NXTHDR(&h, c);
        }
    }
    let path = std::mem::offset_of!(libc::sockaddr_un, sun_path);
    let name_len = (h.msg_namelen as usize).saturating_sub(path);
    let from = if name_len > 1 && addr.sun_path[0] == 0 {
        addr.sun_path[1..name_len]
            .iter()
            .map(|&c| c as u8)
            .collect()
    } else {
        Vec::new()
    };
    Ok(UnixMessage {
        len: r as usize,
        from,
        fd: if fds.len() == 1 { fds.pop() } else { None },
        uid,
    })
}

/// A non-blocking, close-on-exec unix datagram socket bound to the abstract
/// name `name`, with `SO_PASSCRED` (every message it receives says who sent
/// it).
pub(super) fn unix_dgram_bound(name: &[u8]) -> io::Result<OwnedFd> {
    // SAFETY: no pointers; a non-negative result is a new descriptor.
    let fd = cvt(unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    })?;
    // SAFETY: just created, owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let (addr, len) = abstract_addr(name)?;
    // SAFETY: `addr` is a live sockaddr_un of at least `len` bytes.
    cvt(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            len,
        )
    })?;
    setsockopt_int(fd.as_fd(), libc::SOL_SOCKET, libc::SO_PASSCRED, 1)?;
    Ok(fd)
}

/// This process's real uid.
pub(super) fn uid() -> u32 {
    // SAFETY: getuid has no arguments and cannot fail.
    unsafe { libc::getuid() }
}

/// Random bytes from the kernel (`getrandom`; it blocks only before the
/// pool is first seeded, at boot).
pub(super) fn random(buf: &mut [u8]) -> io::Result<()> {
    let mut at = 0;
    while at < buf.len() {
        // SAFETY: writes at most `buf.len() - at` bytes into the live rest
        // of `buf`.
        let r = unsafe { libc::getrandom(buf[at..].as_mut_ptr().cast(), buf.len() - at, 0) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINTR) {
                return Err(e);
            }
        } else {
            at += r as usize;
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
    let fd = cvt(
        // SAFETY: plain socket(2); the result is checked before use.
        unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) },
    )?;
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
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
    // SAFETY: `name` is NUL-terminated; a non-negative result is a new
    // descriptor nobody else owns.
    let fd = cvt(unsafe {
        libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)
    })?;
    // SAFETY: just created, owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: plain calls on a descriptor we own; no pointers.
    cvt(unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) })?;
    // SAFETY: as above.
    cvt(unsafe {
        libc::fcntl(
            fd.as_raw_fd(),
            libc::F_ADD_SEALS,
            libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL,
        )
    })?;
    Ok(fd)
}

/// The seals of a file (`F_GET_SEALS`; an error for a file that has none to
/// give, e.g. not a memfd).
pub(super) fn seals(fd: BorrowedFd<'_>) -> io::Result<libc::c_int> {
    // SAFETY: a plain fcntl on a live descriptor; no pointers.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) })
}

/// A non-blocking UDP socket bound to `addr` with `SO_REUSEADDR`, so that
/// every device of the host can bind the same multicast group and port.
pub(super) fn udp_bound_shared(addr: &SocketAddr) -> io::Result<OwnedFd> {
    let family = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    let flags = libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: no pointers; a non-negative result is a new descriptor.
    let fd = cvt(unsafe { libc::socket(family, flags, 0) })?;
    // SAFETY: just created, owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    setsockopt_int(fd.as_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    let raw = RawAddr::new(addr);
    // SAFETY: `raw.storage` holds a sockaddr of `raw.len` bytes.
    cvt(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw.storage as *const libc::sockaddr_storage).cast(),
            raw.len,
        )
    })?;
    Ok(fd)
}

/// Add `fd` to the epoll instance `ep` (`EPOLLIN`); closing `fd` removes it.
pub(super) fn epoll_add(ep: BorrowedFd<'_>, fd: BorrowedFd<'_>) -> io::Result<()> {
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: 0,
    };
    // SAFETY: both descriptors are live; `ev` is a live epoll_event for the call.
    cvt(unsafe { libc::epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, fd.as_raw_fd(), &mut ev) })
        .map(drop)
}
