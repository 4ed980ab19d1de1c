//! The out-of-band exchange: one line of space-separated fields at a time
//! over a TCP connection (like perftest's). The server listens on an
//! ephemeral port and prints `PORT n` on stdout for the test to read.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};

pub struct Oob {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Oob {
    /// Listen on `addr` (port 0: any), print `PORT n`, accept one peer.
    pub fn serve(addr: &str) -> std::io::Result<Oob> {
        let l = TcpListener::bind(addr)?;
        println!("PORT {}", l.local_addr()?.port());
        let (s, _) = l.accept()?;
        Oob::new(s)
    }

    pub fn connect(addr: &str) -> std::io::Result<Oob> {
        Oob::new(TcpStream::connect(addr)?)
    }

    fn new(s: TcpStream) -> std::io::Result<Oob> {
        s.set_nodelay(true)?;
        Ok(Oob {
            r: BufReader::new(s.try_clone()?),
            w: s,
        })
    }

    pub fn send(&mut self, fields: &[String]) -> std::io::Result<()> {
        let mut line = fields.join(" ");
        line.push('\n');
        self.w.write_all(line.as_bytes())
    }

    /// The next line's fields; an error at end of stream.
    pub fn recv(&mut self) -> std::io::Result<Vec<String>> {
        let mut line = String::new();
        if self.r.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "peer closed the exchange",
            ));
        }
        Ok(line.split_whitespace().map(str::to_string).collect())
    }

    /// Receive a line that starts with `tag`; its other fields.
    pub fn expect(&mut self, tag: &str) -> std::io::Result<Vec<String>> {
        let f = self.recv()?;
        if f.first().map(String::as_str) != Some(tag) {
            return Err(std::io::Error::other(format!("expected {tag}, got {f:?}")));
        }
        Ok(f[1..].to_vec())
    }
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}
