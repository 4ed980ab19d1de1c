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

/// `softrdma perf`'s command line as clap sees it: perftest's spellings
/// (`-s`, `-n`, `--odp`, `-D`…), values checked as they are parsed; turned
/// into [`PerfArgs`] (defaults that depend on the test, perftest's
/// refusals) by [`PerfFlags::into_args`].
#[derive(clap::Args, Debug)]
#[command(
    args_override_self = true,
    after_help = "Without --server/--client both sides run in this process (two devices).
The device address follows SOFTRDMA_ADDR (else a per-process 127.x address).
SOFTRDMA_FAULTS=drop=P,dup=P,reorder=P,corrupt=P,delay_us=N,seed=N injects
faults on what each device receives; SOFTRDMA_PCAP=FILE records the traffic."
)]
pub struct PerfFlags {
    /// write_bw read_bw send_bw atomic_bw write_lat read_lat send_lat atomic_lat
    #[arg(value_name = "TEST", value_parser = test)]
    test: Test,
    /// The server to run against (as `--client HOST`)
    #[arg(value_name = "HOST")]
    host: Option<String>,
    /// Message size (default 65536 for bw, 2 for lat)
    #[arg(short = 's', long = "size", value_parser = num::<1, MAX_SIZE>)]
    size: Option<u64>,
    /// Iterations per size (default 5000 bw, 1000 lat)
    #[arg(short = 'n', long = "iters", value_parser = num::<5, 100_000_000>)]
    iters: Option<u64>,
    /// All sizes 2..2^23
    #[arg(short = 'a', long = "all")]
    all: bool,
    /// QPs (bw tests)
    #[arg(short = 'q', long = "qp", default_value = "1", value_parser = num::<1, 16>)]
    qps: u64,
    /// RC | UC | UD (UD: send tests; UC: not read/atomic)
    #[arg(short = 'c', long = "connection", value_name = "T", default_value = "RC", value_parser = conn)]
    conn: QpType,
    /// 256 | 512 | 1024 | 2048 | 4096 (default: the active MTU)
    #[arg(short = 'm', long = "mtu", value_parser = mtu)]
    mtu: Option<Mtu>,
    /// Operations in flight per QP (default 128; lat 1)
    #[arg(short = 't', long = "tx-depth", value_parser = num::<1, 8192>)]
    tx_depth: Option<u64>,
    /// Receives posted per QP (send tests)
    #[arg(short = 'r', long = "rx-depth", default_value = "512", value_parser = num::<1, 8192>)]
    rx_depth: u64,
    /// Signal every N-th send
    #[arg(short = 'Q', long = "cq-mod", default_value = "100", value_parser = num::<1, 1000>)]
    cq_mod: u64,
    /// CMP_AND_SWAP | FETCH_AND_ADD
    #[arg(short = 'A', long = "atomic_type", value_name = "T", default_value = "FETCH_AND_ADD", value_parser = atomic)]
    atomic: AtomicKind,
    /// Register the buffers as ODP memory regions
    #[arg(long)]
    odp: bool,
    /// Register one implicit ODP region (whole address space)
    #[arg(long = "implicit-odp", alias = "use-implicit-odp")]
    implicit_odp: bool,
    /// bw: per-QP buffers of SIZE (e.g. 1G) walked slot by slot, so each
    /// page of a fresh ODP region faults once (write/send)
    #[arg(long, value_name = "SIZE", value_parser = bytes)]
    buffer: Option<u64>,
    /// Advise transparent huge pages for the buffers (MADV_HUGEPAGE): a
    /// fresh region then faults in 2 MiB pages where it can
    #[arg(long)]
    thp: bool,
    /// Run the test again and again on the same devices, QPs and MRs until
    /// SECONDS have passed (a soak; a row a round)
    #[arg(short = 'D', long, value_name = "SECONDS", value_parser = num::<1, { 7 * 24 * 3600 }>)]
    duration: Option<u64>,
    /// Check every byte of the destination (and atomic results)
    #[arg(long)]
    verify: bool,
    /// One JSON object per result row instead of the table
    #[arg(long)]
    json: bool,
    /// Print each device's counters at the end (stderr with --json)
    #[arg(long)]
    stats: bool,
    /// Wait for a client (TCP port -p, on 0.0.0.0)
    #[arg(long)]
    server: bool,
    /// Run against a server
    #[arg(long, value_name = "HOST")]
    client: Option<String>,
    /// TCP port of the exchange
    #[arg(short = 'p', long, default_value_t = DEFAULT_PORT as u64, value_parser = num::<1, 65535>)]
    port: u64,
}

fn test(s: &str) -> Result<Test, String> {
    Test::parse(s).ok_or_else(|| {
        "use one of write_bw read_bw send_bw atomic_bw write_lat read_lat send_lat atomic_lat"
            .into()
    })
}

fn conn(s: &str) -> Result<QpType, String> {
    parse_conn(s).ok_or_else(|| "connection type must be RC, UC or UD".into())
}

fn mtu(s: &str) -> Result<Mtu, String> {
    num::<256, 4096>(s)
        .and_then(|n| parse_mtu(n).ok_or_else(|| "MTU must be 256, 512, 1024, 2048 or 4096".into()))
}

fn atomic(s: &str) -> Result<AtomicKind, String> {
    AtomicKind::parse(s).ok_or_else(|| "atomic type must be CMP_AND_SWAP or FETCH_AND_ADD".into())
}

/// A number in `MIN..=MAX`, decimal or `0x` hexadecimal (as perftest's).
fn num<const MIN: u64, const MAX: u64>(v: &str) -> Result<u64, String> {
    let parsed = match v.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => v.parse::<u64>().ok(),
    };
    parsed
        .filter(|n| (MIN..=MAX).contains(n))
        .ok_or_else(|| format!("expected a number between {MIN} and {MAX}"))
}

/// A byte count with an optional K/M/G suffix (powers of 1024), at least 4096.
fn bytes(v: &str) -> Result<u64, String> {
    let (digits, shift) = match v.char_indices().last() {
        Some((i, 'K' | 'k')) => (&v[..i], 10),
        Some((i, 'M' | 'm')) => (&v[..i], 20),
        Some((i, 'G' | 'g')) => (&v[..i], 30),
        _ => (v, 0),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .filter(|n| (4096..=MAX_BUFFER).contains(n))
        .ok_or_else(|| {
            format!(
                "expected a size such as 1G, 256M or 65536, between 4096 and {}G",
                MAX_BUFFER >> 30
            )
        })
}

impl PerfFlags {
    /// The run these flags ask for, with perftest's refusals.
    pub fn into_args(self) -> CliResult<PerfArgs> {
        let test = self.test;
        let mode = match (self.server, self.client, self.host) {
            (_, Some(_), Some(h)) => {
                return usage(format!(
                    "perf: unknown flag {h:?} (see softrdma perf --help)"
                ))
            }
            (true, Some(_), None) | (true, None, Some(_)) => {
                return usage("--server and --client exclude each other")
            }
            (true, None, None) => Mode::Server,
            (false, Some(h), None) | (false, None, Some(h)) => Mode::Client(h),
            (false, None, None) => Mode::Embedded,
        };
        let mut a = PerfArgs {
            test,
            size: self.size,
            iters: self.iters.unwrap_or(if test.lat { 1000 } else { 5000 }),
            all: self.all,
            qps: self.qps as u32,
            conn: self.conn,
            mtu: self.mtu,
            odp: if self.implicit_odp {
                OdpMode::Implicit
            } else if self.odp {
                OdpMode::Explicit
            } else {
                OdpMode::Pinned
            },
            atomic: self.atomic,
            json: self.json,
            verify: self.verify,
            stats: self.stats,
            mode,
            port: self.port as u16,
            tx_depth: self.tx_depth.unwrap_or(if test.lat { 1 } else { 128 }) as u32,
            rx_depth: self.rx_depth as u32,
            cq_mod: self.cq_mod as u32,
            buffer: self.buffer,
            thp: self.thp,
            duration: self.duration,
        };
        check(&mut a, self.tx_depth.is_some())?;
        Ok(a)
    }
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
