//! `softrdma perf` flags, perftest's names and defaults, with perftest's
//! refusals (UD only for SEND, UC not for READ/atomics).

use crate::{usage, CliResult};
use soft_rdma::verbs::{Mtu, QpType};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Send,
    Write,
    Read,
    Atomic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Test {
    pub verb: Verb,
    pub lat: bool,
}

impl Test {
    pub fn parse(s: &str) -> Option<Test> {
        let (v, kind) = s.split_once('_')?;
        let verb = match v {
            "write" => Verb::Write,
            "read" => Verb::Read,
            "send" => Verb::Send,
            "atomic" => Verb::Atomic,
            _ => return None,
        };
        let lat = match kind {
            "bw" => false,
            "lat" => true,
            _ => return None,
        };
        Some(Test { verb, lat })
    }
    pub fn name(self) -> String {
        let v = match self.verb {
            Verb::Write => "write",
            Verb::Read => "read",
            Verb::Send => "send",
            Verb::Atomic => "atomic",
        };
        format!("{v}_{}", if self.lat { "lat" } else { "bw" })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OdpMode {
    Pinned,
    Explicit,
    Implicit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtomicKind {
    CmpAndSwap,
    FetchAndAdd,
}

impl AtomicKind {
    pub fn name(self) -> &'static str {
        match self {
            AtomicKind::CmpAndSwap => "CMP_AND_SWAP",
            AtomicKind::FetchAndAdd => "FETCH_AND_ADD",
        }
    }
    pub fn parse(s: &str) -> Option<AtomicKind> {
        match s {
            "CMP_AND_SWAP" => Some(AtomicKind::CmpAndSwap),
            "FETCH_AND_ADD" => Some(AtomicKind::FetchAndAdd),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Embedded,
    Server,
    Client(String),
}

pub fn conn_name(t: QpType) -> &'static str {
    match t {
        QpType::Rc => "RC",
        QpType::Uc => "UC",
        QpType::Ud => "UD",
        QpType::XrcSend | QpType::XrcRecv => "XRC",
    }
}

pub fn parse_conn(s: &str) -> Option<QpType> {
    match s {
        "RC" => Some(QpType::Rc),
        "UC" => Some(QpType::Uc),
        "UD" => Some(QpType::Ud),
        _ => None,
    }
}

pub fn parse_mtu(v: u64) -> Option<Mtu> {
    Some(match v {
        256 => Mtu::M256,
        512 => Mtu::M512,
        1024 => Mtu::M1024,
        2048 => Mtu::M2048,
        4096 => Mtu::M4096,
        _ => return None,
    })
}

/// The parsed `perf` command line.
#[derive(Debug, Clone)]
pub struct PerfArgs {
    pub test: Test,
    /// `-s`; None = the test's default.
    pub size: Option<u64>,
    pub iters: u64,
    pub all: bool,
    pub qps: u32,
    pub conn: QpType,
    pub mtu: Option<Mtu>,
    pub odp: OdpMode,
    pub atomic: AtomicKind,
    pub json: bool,
    pub verify: bool,
    /// `--stats`: print the device's counters at the end.
    pub stats: bool,
    pub mode: Mode,
    pub port: u16,
    pub tx_depth: u32,
    pub rx_depth: u32,
    pub cq_mod: u32,
    /// `--buffer SIZE`: each QP's buffers are this big and the iterations
    /// walk through them slot after slot (instead of perftest's cycle of
    /// `-t` slots), so a fresh ODP region has each page faulted once.
    pub buffer: Option<u64>,
    /// `--thp`: the buffers are advised for transparent huge pages.
    pub thp: bool,
    /// `--duration SECONDS`: run the sizes again and again, on the same
    /// devices, QPs and MRs, until this many seconds have passed (a soak).
    pub duration: Option<u64>,
}

pub const MAX_SIZE: u64 = 1 << 23;
pub const DEFAULT_PORT: u16 = 18516;

impl PerfArgs {
    /// The sizes to run, in order.
    pub fn sizes(&self, ud_max: u64) -> Vec<u64> {
        if self.test.verb == Verb::Atomic {
            return vec![8];
        }
        if self.all {
            let top = if self.conn == QpType::Ud {
                ud_max
            } else {
                MAX_SIZE
            };
            return (1..=23).map(|k| 1u64 << k).filter(|&s| s <= top).collect();
        }
        vec![self.size.unwrap_or(if self.test.lat { 2 } else { 65536 })]
    }
}

/// Largest `--buffer` (per QP, per side).
pub const MAX_BUFFER: u64 = 64 << 30;

/// A byte count with an optional K/M/G suffix (powers of 1024), at least 4096.
fn bytes(flag: &str, v: Option<&String>, max: u64) -> CliResult<u64> {
    let Some(v) = v else {
        return usage(format!("{flag} needs a value"));
    };
    let (digits, shift) = match v.char_indices().last() {
        Some((i, 'K' | 'k')) => (&v[..i], 10),
        Some((i, 'M' | 'm')) => (&v[..i], 20),
        Some((i, 'G' | 'g')) => (&v[..i], 30),
        _ => (v.as_str(), 0),
    };
    match digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
    {
        Some(n) if (4096..=max).contains(&n) => Ok(n),
        _ => usage(format!(
            "{flag} {v}: expected a size such as 1G, 256M or 65536, between 4096 and {}G",
            max >> 30
        )),
    }
}

fn num(flag: &str, v: Option<&String>, min: u64, max: u64) -> CliResult<u64> {
    let Some(v) = v else {
        return usage(format!("{flag} needs a value"));
    };
    let parsed = if let Some(h) = v.strip_prefix("0x") {
        u64::from_str_radix(h, 16).ok()
    } else {
        v.parse::<u64>().ok()
    };
    match parsed {
        Some(n) if (min..=max).contains(&n) => Ok(n),
        _ => usage(format!(
            "{flag} {v}: expected a number between {min} and {max}"
        )),
    }
}

pub fn parse(argv: &[String]) -> CliResult<PerfArgs> {
    let Some(first) = argv.first() else {
        return usage("perf: missing TEST (one of write_bw read_bw send_bw atomic_bw write_lat read_lat send_lat atomic_lat)");
    };
    let Some(test) = Test::parse(first) else {
        return usage(format!("perf: unknown test {first:?}; use one of write_bw read_bw send_bw atomic_bw write_lat read_lat send_lat atomic_lat"));
    };
    let mut a = PerfArgs {
        test,
        size: None,
        iters: if test.lat { 1000 } else { 5000 },
        all: false,
        qps: 1,
        conn: QpType::Rc,
        mtu: None,
        odp: OdpMode::Pinned,
        atomic: AtomicKind::FetchAndAdd,
        json: false,
        verify: false,
        stats: false,
        mode: Mode::Embedded,
        port: DEFAULT_PORT,
        tx_depth: if test.lat { 1 } else { 128 },
        rx_depth: 512,
        cq_mod: 100,
        buffer: None,
        thp: false,
        duration: None,
    };
    let (mut server, mut client): (bool, Option<String>) = (false, None);
    let mut tx_given = false;
    let mut i = 1;
    while i < argv.len() {
        let f = argv[i].as_str();
        // `--flag=value` as well as `--flag value`.
        let (f, inline_val) = match f.split_once('=') {
            Some((k, v)) if k.starts_with("--") => (k, Some(v.to_string())),
            _ => (f, None),
        };
        let takes_value = matches!(
            f,
            "-s" | "--size"
                | "-n"
                | "--iters"
                | "-q"
                | "--qp"
                | "-c"
                | "--connection"
                | "-m"
                | "--mtu"
                | "-A"
                | "--atomic_type"
                | "-p"
                | "--port"
                | "-t"
                | "--tx-depth"
                | "-r"
                | "--rx-depth"
                | "-Q"
                | "--cq-mod"
                | "--client"
                | "--buffer"
                | "--duration"
        );
        let val = if takes_value {
            match inline_val {
                Some(v) => Some(v),
                None => {
                    i += 1;
                    argv.get(i).cloned()
                }
            }
        } else {
            None
        };
        let v = val.as_ref();
        match f {
            "-s" | "--size" => a.size = Some(num(f, v, 1, MAX_SIZE)?),
            "-n" | "--iters" => a.iters = num(f, v, 5, 100_000_000)?,
            "-a" | "--all" => a.all = true,
            "-q" | "--qp" => a.qps = num(f, v, 1, 16)? as u32,
            "-c" | "--connection" => match v.and_then(|s| parse_conn(s)) {
                Some(t) => a.conn = t,
                None => {
                    return usage(format!(
                        "{f}: connection type must be RC, UC or UD (got {})",
                        v.map_or("nothing", |s| s.as_str())
                    ))
                }
            },
            "-m" | "--mtu" => {
                let n = num(f, v, 256, 4096)?;
                match parse_mtu(n) {
                    Some(m) => a.mtu = Some(m),
                    None => {
                        return usage(format!("{f} {n}: MTU must be 256, 512, 1024, 2048 or 4096"))
                    }
                }
            }
            "-A" | "--atomic_type" => match v.and_then(|s| AtomicKind::parse(s)) {
                Some(k) => a.atomic = k,
                None => {
                    return usage(format!(
                        "{f}: atomic type must be CMP_AND_SWAP or FETCH_AND_ADD"
                    ))
                }
            },
            "-p" | "--port" => a.port = num(f, v, 1, 65535)? as u16,
            "-t" | "--tx-depth" => {
                a.tx_depth = num(f, v, 1, 8192)? as u32;
                tx_given = true;
            }
            "-r" | "--rx-depth" => a.rx_depth = num(f, v, 1, 8192)? as u32,
            "-Q" | "--cq-mod" => a.cq_mod = num(f, v, 1, 1000)? as u32,
            "--buffer" => a.buffer = Some(bytes(f, v, MAX_BUFFER)?),
            "--duration" => a.duration = Some(num(f, v, 1, 7 * 24 * 3600)?),
            "--odp" => {
                if a.odp == OdpMode::Pinned {
                    a.odp = OdpMode::Explicit
                }
            }
            "--implicit-odp" | "--use-implicit-odp" => a.odp = OdpMode::Implicit,
            "--json" => a.json = true,
            "--verify" => a.verify = true,
            "--thp" => a.thp = true,
            "--stats" => a.stats = true,
            "--server" => server = true,
            "--client" => match v {
                Some(h) => client = Some(h.clone()),
                None => return usage("--client needs the server's host name or address"),
            },
            _ if !f.starts_with('-') && client.is_none() => client = Some(f.to_string()),
            _ => {
                return usage(format!(
                    "perf: unknown flag {:?} (see softrdma perf --help)",
                    argv[i]
                ))
            }
        }
        i += 1;
    }
    a.mode = match (server, client) {
        (true, Some(_)) => return usage("--server and --client exclude each other"),
        (true, None) => Mode::Server,
        (false, Some(h)) => Mode::Client(h),
        (false, None) => Mode::Embedded,
    };
    check(&mut a, tx_given)?;
    Ok(a)
}

/// perftest's refusals.
fn check(a: &mut PerfArgs, tx_given: bool) -> CliResult<()> {
    let t = a.test;
    if a.conn == QpType::Ud && t.verb != Verb::Send {
        return usage(format!(
            "{}: UD connection is possible only in send tests (send_bw, send_lat)",
            t.name()
        ));
    }
    if a.conn == QpType::Uc && matches!(t.verb, Verb::Read | Verb::Atomic) {
        return usage(format!(
            "{}: UC connection is not possible in READ/ATOMIC verbs; use -c RC",
            t.name()
        ));
    }
    if t.lat && a.qps > 1 {
        return usage(format!("{}: -q is supported only in bw tests", t.name()));
    }
    if t.verb == Verb::Atomic && a.size.is_some_and(|s| s != 8) {
        return usage("atomic tests: the message size is 8 (drop -s)");
    }
    if t.lat && tx_given && a.tx_depth != 1 {
        return usage(format!(
            "{}: latency tests have one operation in flight (drop -t)",
            t.name()
        ));
    }
    if let Some(b) = a.buffer {
        if t.lat || !matches!(t.verb, Verb::Write | Verb::Send) {
            return usage("--buffer: only for write_bw and send_bw");
        }
        if a.all {
            return usage("--buffer and -a exclude each other");
        }
        let size = a.size.unwrap_or(65536);
        if b < size {
            return usage(format!(
                "--buffer {b} is smaller than the message size {size}"
            ));
        }
    }
    if a.all && a.size.is_some() {
        return usage("-a and -s exclude each other");
    }
    Ok(())
}
