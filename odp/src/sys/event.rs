//! An eventfd ([`EventFd`]: the monitor's "stop" doorbell, the transport's
//! wake-ups, completion channels), and `poll` on two descriptors.
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// A non-blocking, close-on-exec eventfd (`EFD_CLOEXEC | EFD_NONBLOCK`,
/// counter mode): readable while its counter is non-zero. [`EventFd::signal`]
/// makes it readable, [`EventFd::drain`] unreadable again; poll it (through
/// [`AsFd`]/[`AsRawFd`]) to wait.
#[derive(Debug)]
pub struct EventFd(OwnedFd);

impl EventFd {
    /// A new eventfd, counter 0 (not readable).
    pub fn new() -> io::Result<Self> {
        // SAFETY: eventfd has no memory arguments; a non-negative return is a
        // fresh descriptor that we exclusively own.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is valid and owned by nobody else (just created).
        Ok(EventFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Add one to the counter: the descriptor is readable until drained. A
    /// failure (EAGAIN: the counter is saturated) still leaves it readable,
    /// so it is ignored.
    pub fn signal(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our own descriptor.
        let _ = unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Reset the counter to 0: not readable until the next signal. Nothing to
    /// read (EAGAIN: already 0) is fine.
    pub fn drain(&self) {
        let mut v = 0u64;
        // SAFETY: reads at most 8 bytes into a live u64 from our own
        // (non-blocking) descriptor.
        let _ = unsafe { libc::read(self.0.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
    }
}

impl AsFd for EventFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl From<EventFd> for OwnedFd {
    fn from(e: EventFd) -> OwnedFd {
        e.0
    }
}

/// Block until `a` or `b` is readable; returns (a readable, b readable).
pub fn poll_readable(a: RawFd, b: RawFd) -> io::Result<(bool, bool)> {
    let mut fds = [
        libc::pollfd {
            fd: a,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: b,
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    loop {
        // SAFETY: fds is a live array of 2 pollfd structs for the duration of the call.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if r >= 0 {
            let ready =
                |p: &libc::pollfd| p.revents & (libc::POLLIN | libc::POLLERR | libc::POLLHUP) != 0;
            return Ok((ready(&fds[0]), ready(&fds[1])));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readable(e: &EventFd) -> bool {
        let mut p = libc::pollfd {
            fd: e.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one live pollfd for the call; timeout 0 never blocks.
        let r = unsafe { libc::poll(&mut p, 1, 0) };
        assert!(r >= 0);
        p.revents & libc::POLLIN != 0
    }

    #[test]
    fn signal_makes_readable_and_drain_resets() {
        let e = EventFd::new().unwrap();
        assert!(!readable(&e));
        e.drain(); // nothing to read: fine, does not block
        e.signal();
        e.signal();
        assert!(readable(&e));
        e.drain();
        assert!(!readable(&e), "one drain resets the whole counter");
        let other = EventFd::new().unwrap();
        e.signal();
        assert_eq!(
            poll_readable(other.as_raw_fd(), e.as_raw_fd()).unwrap(),
            (false, true)
        );
        let fd: OwnedFd = e.into();
        assert!(fd.as_raw_fd() >= 0);
    }
}
