//! An eventfd ([`EventFd`]: the monitor's "stop" doorbell, the transport's
//! wake-ups, completion channels), and `poll` on two descriptors.
use rustix::event::{EventfdFlags, PollFd, PollFlags};
use rustix::io::Errno;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

/// A non-blocking, close-on-exec eventfd (`EFD_CLOEXEC | EFD_NONBLOCK`,
/// counter mode): readable while its counter is non-zero. [`EventFd::signal`]
/// makes it readable, [`EventFd::drain`] unreadable again; poll it (through
/// [`AsFd`]/[`AsRawFd`]) to wait.
#[derive(Debug)]
pub struct EventFd(OwnedFd);

impl EventFd {
    /// A new eventfd, counter 0 (not readable).
    pub fn new() -> io::Result<Self> {
        Ok(EventFd(rustix::event::eventfd(
            0,
            EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK,
        )?))
    }

    /// Add one to the counter: the descriptor is readable until drained. A
    /// failure (EAGAIN: the counter is saturated) still leaves it readable,
    /// so it is ignored.
    pub fn signal(&self) {
        let _ = rustix::io::write(&self.0, &1u64.to_ne_bytes());
    }

    /// Reset the counter to 0: not readable until the next signal. Nothing to
    /// read (EAGAIN: already 0) is fine.
    pub fn drain(&self) {
        let mut v = [0u8; 8];
        let _ = rustix::io::read(&self.0, &mut v);
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

/// Block until `a` or `b` is readable (or in error, or hung up); returns
/// (a readable, b readable).
pub fn poll_readable(a: BorrowedFd<'_>, b: BorrowedFd<'_>) -> io::Result<(bool, bool)> {
    let mut fds = [
        PollFd::from_borrowed_fd(a, PollFlags::IN),
        PollFd::from_borrowed_fd(b, PollFlags::IN),
    ];
    loop {
        match rustix::event::poll(&mut fds, None) {
            Ok(_) => {
                let ready = |p: &PollFd<'_>| {
                    p.revents()
                        .intersects(PollFlags::IN | PollFlags::ERR | PollFlags::HUP)
                };
                return Ok((ready(&fds[0]), ready(&fds[1])));
            }
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readable(e: &EventFd) -> bool {
        let mut p = [PollFd::new(e, PollFlags::IN)];
        let now = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        rustix::event::poll(&mut p, Some(&now)).unwrap();
        p[0].revents().contains(PollFlags::IN)
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
            poll_readable(other.as_fd(), e.as_fd()).unwrap(),
            (false, true)
        );
        let fd: OwnedFd = e.into();
        assert!(fd.as_raw_fd() >= 0);
    }
}
