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

/// The command line (`run` is dispatched before clap sees it: its
/// arguments are passed on as they are, not checked for UTF-8).
#[derive(clap::Parser, Debug)]
#[command(
    name = "softrdma",
    about = "A software RoCEv2 device: its attributes, perftest-style benchmarks, its counters, and unmodified verbs programs run on it",
    after_help = "Exit codes: 0 success, 1 runtime failure, 2 usage error; `run` exits as the program does.",
    disable_version_flag = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// The device's attributes, as ibv_devinfo prints them
    Devinfo {
        /// Every attribute (ODP capabilities, the invalidation source…)
        #[arg(short, long)]
        verbose: bool,
    },
    /// perftest-style benchmarks (ib_write_bw & co.) on the soft device
    Perf(args::PerfFlags),
    /// Run an unmodified verbs program on the soft device
    Run {
        /// The program and its arguments
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "PROGRAM"
        )]
        program: Vec<std::ffi::OsString>,
    },
    /// Counters of the live soft RDMA devices (all processes, or process
    /// PID), read from the files they publish in $SOFTRDMA_STATS_DIR
    /// (default /dev/shm)
    Stats {
        /// Each ODP MR's counters, as `rdma statistic mr show` prints mlx5's
        #[arg(long)]
        mr: bool,
        /// Only this process's devices
        #[arg(value_name = "PID")]
        pid: Option<u32>,
    },
}

/// A clap error as this tool's errors are: help on stdout (exit 0), or
/// one line of usage error (exit 2), naming the subcommand `sub`.
fn clap_error(e: clap::Error, sub: Option<&str>) -> CliError {
    if !e.use_stderr() {
        let _ = e.print();
        std::process::exit(0);
    }
    // The message is the text before clap's usage and tips, on one line.
    let text = e.to_string();
    let msg: Vec<&str> = text
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    let msg = msg.join(" ");
    let msg = msg.strip_prefix("error: ").unwrap_or(&msg);
    CliError::Usage(match sub {
        Some(sub) => format!("{sub}: {msg} (see softrdma {sub} --help)"),
        None => format!("{msg} (see softrdma --help)"),
    })
}

fn run(argv: Vec<String>) -> CliResult<()> {
    use clap::Parser;
    let sub = argv
        .first()
        .filter(|c| ["devinfo", "perf", "stats"].contains(&c.as_str()))
        .cloned();
    let cli = Cli::try_parse_from(std::iter::once("softrdma".to_string()).chain(argv))
        .map_err(|e| clap_error(e, sub.as_deref()))?;
    match cli.command {
        Some(Command::Devinfo { verbose }) => devinfo::run(verbose),
        Some(Command::Perf(flags)) => perf::run(&flags.into_args()?),
        Some(Command::Stats { mr, pid }) => stats::run(pid, mr),
        // Reached only through `softrdma help run`-like spellings: `main`
        // dispatches `run` itself.
        Some(Command::Run { .. }) => usage("run: use `softrdma run [--] PROGRAM [ARGS...]`"),
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
