//! Diagnostics: quiet by default (errors only); `SOFTRDMA_LOG=warn|info|debug`
//! explains more — connection set-up and state changes at `info`, every
//! dropped packet and NAK at `debug`. One line per event on stderr.
#![forbid(unsafe_code)]

use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
}

fn level() -> Level {
    static LEVEL: OnceLock<Level> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        match std::env::var("SOFTRDMA_LOG")
            .unwrap_or_default()
            .to_ascii_lowercase()
            .as_str()
        {
            "warn" | "warning" => Level::Warn,
            "info" => Level::Info,
            "debug" | "trace" | "all" => Level::Debug,
            _ => Level::Error,
        }
    })
}

/// Whether messages at `l` are shown (cheap: one load after the first call).
pub fn enabled(l: Level) -> bool {
    l <= level()
}

macro_rules! log {
    ($lvl:ident, $($arg:tt)*) => {
        if $crate::log::enabled($crate::log::Level::$lvl) {
            eprintln!("softrdma: {}: {}", stringify!($lvl).to_ascii_lowercase(), format_args!($($arg)*));
        }
    };
}
pub(crate) use log;
