//! `softrdma`: device information (`devinfo`, like `ibv_devinfo`),
//! perftest-style benchmarks (`perf`, like `ib_write_bw` & co.) on the soft
//! RoCEv2 device, and `run`, which runs an unmodified verbs program on it.
//!
//! Exit codes: 0 success, 1 runtime failure (peer unreachable, port in use,
//! completion error, verification mismatch), 2 usage error; `run` exits as
//! the program does (126/127: it could not be executed / was not found).

mod args;
mod bundle;
mod ctrl;
mod devinfo;
mod pattern;
mod perf;
mod report;
mod run;
mod stats;

use std::fmt;

/// What went wrong, and so which exit code.
#[derive(Debug)]
pub enum CliError {
    /// The user's command line is wrong: exit 2.
    Usage(String),
    /// The run failed: exit 1.
    Runtime(String),
    /// A failure with its own exit code (`run`: 126, 127).
    Exit(i32, String),
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Usage(m) | CliError::Runtime(m) | CliError::Exit(_, m) => f.write_str(m),
        }
    }
}

pub type CliResult<T> = Result<T, CliError>;

pub fn usage<T>(msg: impl Into<String>) -> CliResult<T> {
    Err(CliError::Usage(msg.into()))
}

pub fn runtime<T>(msg: impl Into<String>) -> CliResult<T> {
    Err(CliError::Runtime(msg.into()))
}

const HELP: &str = "\
usage: softrdma devinfo [-v]
       softrdma perf TEST [flags] [--server | --client HOST | HOST]
       softrdma run [--] PROGRAM [ARGS...]   (a verbs program on the soft device)
       softrdma stats [PID]    counters of the live devices (of process PID)

TEST: write_bw read_bw send_bw atomic_bw write_lat read_lat send_lat atomic_lat

flags (perftest's):
  -s, --size SIZE        message size (default 65536 for bw, 2 for lat)
  -n, --iters N          iterations per size (default 5000 bw, 1000 lat)
  -a, --all              all sizes 2..2^23
  -q, --qp N             QPs (bw tests; default 1)
  -c, --connection T     RC | UC | UD (UD: send tests; UC: not read/atomic)
  -m, --mtu MTU          256 | 512 | 1024 | 2048 | 4096 (default: the active MTU)
  -t, --tx-depth N       operations in flight per QP (default 128; lat 1)
  -r, --rx-depth N       receives posted per QP (send tests; default 512)
  -Q, --cq-mod N         signal every N-th send (default 100)
  -A, --atomic_type T    CMP_AND_SWAP | FETCH_AND_ADD (default FETCH_AND_ADD)
      --odp              register the buffers as ODP memory regions
      --implicit-odp     register one implicit ODP region (whole address space)
      --buffer SIZE      bw: per-QP buffers of SIZE (e.g. 1G) walked slot by slot,
                         so each page of a fresh ODP region faults once (write/send)
      --thp              advise transparent huge pages for the buffers (MADV_HUGEPAGE):
                         a fresh region then faults in 2 MiB pages where it can
      --duration SECONDS run the test again and again on the same devices, QPs
                         and MRs until SECONDS have passed (a soak; a row a round)
      --verify           check every byte of the destination (and atomic results)
      --json             one JSON object per result row instead of the table
      --stats            print each device's counters at the end (stderr with --json)
      --server           wait for a client (TCP port -p, on 0.0.0.0)
      --client HOST      run against a server
  -p, --port PORT        TCP port of the exchange (default 18516)

Without --server/--client both sides run in this process (two devices).
The device address follows SOFTRDMA_ADDR (else a per-process 127.x address).
SOFTRDMA_FAULTS=drop=P,dup=P,reorder=P,corrupt=P,delay_us=N,seed=N injects
faults on what each device receives; SOFTRDMA_PCAP=FILE records the traffic.";

fn run(argv: Vec<String>) -> CliResult<()> {
    let mut it = argv.into_iter();
    match it.next().as_deref() {
        Some("devinfo") => {
            let mut verbose = false;
            for a in it {
                match a.as_str() {
                    "-v" | "--verbose" => verbose = true,
                    "-h" | "--help" => {
                        println!("usage: softrdma devinfo [-v]");
                        return Ok(());
                    }
                    _ => return usage(format!("devinfo: unknown flag {a:?} (usage: softrdma devinfo [-v])")),
                }
            }
            devinfo::run(verbose)
        }
        Some("perf") => {
            let rest: Vec<String> = it.collect();
            if rest.iter().any(|a| a == "-h" || a == "--help") {
                println!("{HELP}");
                return Ok(());
            }
            let a = args::parse(&rest)?;
            perf::run(&a)
        }
        Some("stats") => stats::run(it.collect()),
        Some("-h") | Some("--help") | Some("help") => {
            println!("{HELP}");
            Ok(())
        }
        Some(other) => usage(format!("unknown command {other:?}; commands: devinfo, perf, run, stats (see softrdma --help)")),
        None => usage("missing command; try `softrdma devinfo` or `softrdma perf write_bw` (see softrdma --help)"),
    }
}

fn main() {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    // `run` passes its arguments on as they are (they need not be UTF-8).
    let result = if argv.first().is_some_and(|c| c == "run") {
        run::run(&argv[1..])
    } else {
        match argv
            .into_iter()
            .map(|a| a.into_string())
            .collect::<Result<Vec<String>, _>>()
        {
            Ok(argv) => run(argv),
            Err(a) => usage(format!("argument {a:?} is not UTF-8")),
        }
    };
    let code = match result {
        Ok(()) => 0,
        Err(CliError::Usage(m)) => {
            eprintln!("softrdma: {m}");
            2
        }
        Err(CliError::Runtime(m)) => {
            eprintln!("softrdma: {m}");
            1
        }
        Err(CliError::Exit(code, m)) => {
            eprintln!("softrdma: {m}");
            code
        }
    };
    std::process::exit(code);
}
