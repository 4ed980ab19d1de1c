//! The transport's syscalls (`libc`), each behind a safe function. All of the
//! transport's `unsafe` is in this file.
use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
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

/// A non-blocking, close-on-exec eventfd (the `close` doorbell).
pub(super) fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes no pointers.
    let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
    // SAFETY: `fd` was just returned by eventfd, so it is open and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Make an eventfd readable (and keep it so: nobody reads it).
pub(super) fn eventfd_signal(fd: BorrowedFd<'_>) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live u64 to a live eventfd. A failure
    // (EAGAIN: counter saturated) still leaves the fd readable, so it is ignored.
    let _ = unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
}

/// Wait until one of `fds` has `events`; returns which did (by index), or
/// an empty set on timeout. EINTR is reported as a timeout (callers loop).
/// `None` blocks; the timeout has microsecond precision (`ppoll`), so a
/// short wait — a fault layer's delay line, a deadline — is not rounded up
/// to a millisecond.
pub(super) fn poll(
    fds: &[(BorrowedFd<'_>, libc::c_short)],
    timeout: Option<Duration>,
) -> io::Result<[bool; 2]> {
    assert!(fds.len() <= 2);
    let mut p = [libc::pollfd {
        fd: -1,
        events: 0,
        revents: 0,
    }; 2];
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
            return Ok([false; 2]);
        }
        return Err(e);
    }
    Ok([p[0].revents != 0, p[1].revents != 0])
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

    fn empty() -> RawAddr {
        // SAFETY: plain old data; all-zero is valid (family AF_UNSPEC).
        RawAddr {
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

/// `sendmmsg` of `datas[i]` to `addrs[i]` (at most [`CHUNK`]), non-blocking.
/// Ok(n): the first n were sent; Err: the first one failed with that error.
pub(super) fn send_batch(
    fd: BorrowedFd<'_>,
    addrs: &[RawAddr],
    datas: &[&[u8]],
) -> io::Result<usize> {
    let n = addrs.len().min(datas.len()).min(CHUNK);
    if n == 0 {
        return Ok(0);
    }
    // SAFETY: iovec and mmsghdr are plain old data; all-zero is valid (null
    // pointers, zero lengths), and only the first `n` entries are passed.
    let mut iov: [libc::iovec; CHUNK] = unsafe { zeroed() };
    // SAFETY: as above.
    let mut msgs: [libc::mmsghdr; CHUNK] = unsafe { zeroed() };
    for i in 0..n {
        iov[i].iov_base = datas[i].as_ptr() as *mut libc::c_void;
        iov[i].iov_len = datas[i].len();
        let h = &mut msgs[i].msg_hdr;
        h.msg_name = (&addrs[i].storage as *const libc::sockaddr_storage) as *mut libc::c_void;
        h.msg_namelen = addrs[i].len;
        h.msg_iov = &mut iov[i];
        h.msg_iovlen = 1;
    }
    // SAFETY: every msg_name points into `addrs` and every iov into `datas`,
    // both borrowed for the whole call; sendmmsg only reads through them
    // (it writes msgs[i].msg_len, which lives in our array). `n` <= CHUNK.
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
}

impl RecvMeta {
    pub(super) fn empty() -> RecvMeta {
        RecvMeta {
            addr: RawAddr::empty(),
            len: 0,
            truncated: false,
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
    for (i, chunk) in bufs.chunks_exact_mut(slot).take(n).enumerate() {
        iov[i].iov_base = chunk.as_mut_ptr().cast();
        iov[i].iov_len = slot;
        let h = &mut msgs[i].msg_hdr;
        h.msg_name = (&mut meta[i].addr.storage as *mut libc::sockaddr_storage).cast();
        h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        h.msg_iov = &mut iov[i];
        h.msg_iovlen = 1;
    }
    // SAFETY: each iov points to a distinct `slot`-byte chunk of `bufs` and
    // each msg_name to a whole sockaddr_storage in `meta`, all mutably
    // borrowed for the call; the kernel writes within those bounds only.
    // A null timeout with MSG_DONTWAIT never blocks.
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
        meta[i].addr.len = msgs[i].msg_hdr.msg_namelen;
        meta[i].len = msgs[i].msg_len as usize;
        meta[i].truncated = msgs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
    }
    Ok(got)
}
