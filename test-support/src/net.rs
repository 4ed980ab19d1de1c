//! TCP ports that listen (a server is ready once its out-of-band port
//! listens: a probe connection would use up the one connection perftest and
//! the pingpongs accept), and two network-namespace hosts.

use std::process::Command;
use std::time::{Duration, Instant};

/// Whether `/proc/net/tcp`-format tables (one or more, headers included)
/// list a socket listening (state `0A`) on local port `port`.
fn table_listens(table: &str, port: u16) -> bool {
    let want = format!(":{port:04X}");
    table.lines().any(|l| {
        let cols: Vec<&str> = l.split_whitespace().collect();
        cols.len() > 3 && cols[1].ends_with(&want) && cols[3] == "0A"
    })
}

/// Whether some socket listens on TCP `port` (IPv4 or IPv6), from /proc.
pub fn listening(port: u16) -> bool {
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|f| {
        let t = std::fs::read_to_string(f).unwrap_or_default();
        table_listens(&t, port)
    })
}

/// Whether a process of this host holds `port` of the rdma_cm port space
/// `ps` (0x0106 TCP, 0x0111 UDP) on the soft device: the CM's rendezvous
/// name (`soft_rdma_cm::rendezvous`) is in /proc/net/unix.
pub fn cm_listening(ps: u16, port: u16) -> bool {
    cm_listening_on(None, ps, port)
}

/// [`cm_listening`] in network namespace `ns` (abstract names are per
/// namespace), or here for `None`.
pub fn cm_listening_on(ns: Option<&str>, ps: u16, port: u16) -> bool {
    let name = format!("@softrdma-cm/{ps:#06x}/{port}");
    let table = match ns {
        None => std::fs::read_to_string("/proc/net/unix").ok(),
        Some(ns) => Command::new("ip")
            .args(["netns", "exec", ns, "cat", "/proc/net/unix"])
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned()),
    };
    table.is_some_and(|t| {
        t.lines()
            .any(|l| l.split_whitespace().last() == Some(name.as_str()))
    })
}

/// Whether a socket in network namespace `ns` listens on TCP `port`.
pub fn listening_in(ns: &str, port: u16) -> bool {
    Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "cat",
            "/proc/net/tcp",
            "/proc/net/tcp6",
        ])
        .output()
        .is_ok_and(|o| table_listens(&String::from_utf8_lossy(&o.stdout), port))
}

/// Poll (every 20 ms) until `port` listens — in namespace `ns`, or here if
/// `None` — or `limit` passes; whether it listens.
pub fn wait_listening(ns: Option<&str>, port: u16, limit: Duration) -> bool {
    let t = Instant::now();
    loop {
        let up = match ns {
            Some(ns) => listening_in(ns, port),
            None => listening(port),
        };
        if up {
            return true;
        }
        if t.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Run `ip ARGS`; its stderr on failure.
pub fn ip(args: &[&str]) -> Result<(), String> {
    let o = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if o.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        ))
    }
}

/// Two hosts: network namespaces joined by a veth pair, each end up with an
/// address of one /24; both namespaces are removed on drop.
pub struct TwoHosts {
    /// The namespaces: `ip netns exec NS …` runs a program on a host.
    pub ns: [String; 2],
    /// The veth end in each namespace.
    pub veth: [String; 2],
    /// Each host's address (`NET.1`, `NET.2`).
    pub addr: [String; 2],
    /// The namespaces made so far (all of them once built).
    made: Vec<String>,
}

impl Drop for TwoHosts {
    fn drop(&mut self) {
        for n in &self.made {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
        }
    }
}

/// Two hosts named `{prefix}{pid}a` and `…b` (the veth ends likewise, cut to
/// 15 bytes), addresses `net.1` and `net.2` (e.g. `net` = `[10, 77, 0]`).
/// `None` where namespaces cannot be made (not root, no `ip`): the caller
/// skips — unless tools are required (see [`crate::tools`]), then this fails.
pub fn two_hosts(prefix: &str, net: [u8; 3]) -> Option<TwoHosts> {
    let pid = std::process::id();
    let ns = [format!("{prefix}{pid}a"), format!("{prefix}{pid}b")];
    let veth = ns.clone().map(|n| n[..n.len().min(15)].to_string());
    let [a, b, c] = net;
    let addr = [format!("{a}.{b}.{c}.1"), format!("{a}.{b}.{c}.2")];
    let mut hosts = TwoHosts {
        ns,
        veth,
        addr,
        made: vec![],
    };
    if let Err(e) = ip(&["netns", "add", &hosts.ns[0]]) {
        crate::tools::unavailable("`ip netns add` (network namespaces)", &e);
        return None;
    }
    hosts.made.push(hosts.ns[0].clone());
    ip(&["netns", "add", &hosts.ns[1]]).unwrap();
    hosts.made.push(hosts.ns[1].clone());
    let (n, v) = (&hosts.ns, &hosts.veth);
    ip(&[
        "link", "add", &v[0], "netns", &n[0], "type", "veth", "peer", "name", &v[1], "netns", &n[1],
    ])
    .unwrap();
    for k in 0..2 {
        let cidr = format!("{}/24", hosts.addr[k]);
        ip(&["-n", &n[k], "addr", "add", &cidr, "dev", &v[k]]).unwrap();
        ip(&["-n", &n[k], "link", "set", &v[k], "up"]).unwrap();
        ip(&["-n", &n[k], "link", "set", "lo", "up"]).unwrap();
    }
    // A veth's operational state turns UP a moment (0.3-1 s here) after
    // both ends are set up; programs that list usable interfaces (UCX's
    // tcp) skip it until then.
    let end = std::time::Instant::now() + Duration::from_secs(10);
    for k in 0..2 {
        let operstate = format!("/sys/class/net/{}/operstate", v[k]);
        while !Command::new("ip")
            .args(["netns", "exec", &n[k], "cat", &operstate])
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"up"))
        {
            assert!(
                std::time::Instant::now() < end,
                "{} is not UP after 10 s",
                v[k]
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Some(hosts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listening_socket_is_found_and_a_connected_one_is_not() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(listening(port));
        let c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let client_port = c.local_addr().unwrap().port();
        assert!(
            !listening(client_port),
            "an established socket is not listening"
        );
        drop(l);
        assert!(!wait_listening(None, port, Duration::from_millis(50)));
    }

    #[test]
    fn the_table_is_read_by_column() {
        let t = "  sl  local_address rem_address   st\n   0: 0100007F:4A39 00000000:0000 0A\n   1: 0100007F:1F90 0100007F:4A39 01\n";
        assert!(table_listens(t, 0x4A39));
        assert!(!table_listens(t, 0x1F90), "established, not listening");
        assert!(!table_listens(t, 0x0A39));
    }
}
