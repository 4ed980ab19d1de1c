//! The out-of-band exchange (perftest's "Data ex. method : Ethernet"): one
//! TCP connection carrying newline-terminated text lines.

use crate::{runtime, CliResult};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};

pub struct Ctrl {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    peer: String,
}

impl Ctrl {
    fn new(s: TcpStream) -> CliResult<Ctrl> {
        let _ = s.set_nodelay(true);
        let peer = s
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "peer".into());
        let w = s
            .try_clone()
            .or_else(|e| runtime(format!("TCP socket: {e}")))?;
        Ok(Ctrl {
            reader: BufReader::new(s),
            writer: w,
            peer,
        })
    }

    /// Listen on 0.0.0.0:port (a clear error if the port is taken).
    pub fn listen(port: u16) -> CliResult<TcpListener> {
        TcpListener::bind(("0.0.0.0", port)).or_else(|e| {
            if e.kind() == std::io::ErrorKind::AddrInUse {
                runtime(format!("TCP port {port} is in use (another server running?); pick a free one with -p PORT on both sides"))
            } else {
                runtime(format!("cannot listen on TCP port {port}: {e}"))
            }
        })
    }

    pub fn accept(l: &TcpListener) -> CliResult<Ctrl> {
        let (s, _) = l
            .accept()
            .or_else(|e| runtime(format!("accepting the client: {e}")))?;
        Ctrl::new(s)
    }

    pub fn connect(host: &str, port: u16) -> CliResult<Ctrl> {
        let addrs: Vec<_> = match (host, port).to_socket_addrs() {
            Ok(a) => a.collect(),
            Err(e) => return runtime(format!("cannot resolve server {host:?}: {e}")),
        };
        let mut last = None;
        for a in addrs {
            match TcpStream::connect_timeout(&a, std::time::Duration::from_secs(5)) {
                Ok(s) => return Ctrl::new(s),
                Err(e) => last = Some(e),
            }
        }
        let why = last.map_or_else(|| "no address".to_string(), |e| e.to_string());
        runtime(format!("cannot reach server {host}:{port} ({why}); start `softrdma perf TEST --server -p {port}` there first, or check host and -p"))
    }

    pub fn send(&mut self, line: &str) -> CliResult<()> {
        let mut b = line.as_bytes().to_vec();
        b.push(b'\n');
        self.writer
            .write_all(&b)
            .or_else(|e| runtime(format!("lost the connection to {}: {e}", self.peer)))
    }

    pub fn recv(&mut self) -> CliResult<String> {
        let mut s = String::new();
        match self.reader.read_line(&mut s) {
            Ok(0) => runtime(format!(
                "{} closed the connection (see its error output)",
                self.peer
            )),
            Ok(_) => Ok(s.trim_end().to_string()),
            Err(e) => runtime(format!("lost the connection to {}: {e}", self.peer)),
        }
    }

    /// Receive a line starting with `word`, or fail on an `ERR` line.
    pub fn expect(&mut self, word: &str) -> CliResult<Vec<String>> {
        let l = self.recv()?;
        let mut f: Vec<String> = l.split_whitespace().map(str::to_string).collect();
        if f.first().map(String::as_str) == Some("ERR") {
            return runtime(format!("peer: {}", l.strip_prefix("ERR ").unwrap_or(&l)));
        }
        if f.first().map(String::as_str) != Some(word) {
            return runtime(format!("protocol error: expected {word}, got {l:?}"));
        }
        f.remove(0);
        Ok(f)
    }

    /// Whether the peer closed the connection (without consuming anything).
    pub fn peer_closed(&mut self) -> bool {
        self.readable() && self.reader.fill_buf().map_or(true, |b| b.is_empty())
    }

    /// Whether a line is ready to read without blocking.
    pub fn readable(&mut self) -> bool {
        if !self.reader.buffer().is_empty() {
            return true;
        }
        let mut pfd = libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(self.reader.get_ref()),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, zero timeout.
        unsafe { libc::poll(&mut pfd, 1, 0) > 0 }
    }
}

/// key=value fields of a line.
pub fn kv<'a>(f: &'a [String], key: &str) -> CliResult<&'a str> {
    for x in f {
        if let Some((k, v)) = x.split_once('=') {
            if k == key {
                return Ok(v);
            }
        }
    }
    runtime(format!("protocol error: no {key} in {f:?}"))
}

pub fn kv_u64(f: &[String], key: &str) -> CliResult<u64> {
    let v = kv(f, key)?;
    let r = if let Some(h) = v.strip_prefix("0x") {
        u64::from_str_radix(h, 16)
    } else {
        v.parse()
    };
    r.or_else(|_| runtime(format!("protocol error: {key}={v}")))
}
