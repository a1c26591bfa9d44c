//! Leveled, structured log lines on stderr: `ts=<unix.ms> level=<l> core=<n> msg="..." key=value`.
//!
//! The level comes from `RINGCAST_LOG` (`error`, `warn`, `info` [default], `debug`).
//! Lifecycle events log at debug; nothing logs per message at info. Callers never
//! pass secrets: query strings go through [`redact_query`] first.

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Level {
    Error = 0,
    Warn = 1,
    Info = 2,
    Debug = 3,
}

static LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);

/// Reads `RINGCAST_LOG`; unknown values keep `info`.
pub fn init_from_env() {
    let level = match std::env::var("RINGCAST_LOG").as_deref() {
        Ok("error") => Level::Error,
        Ok("warn") => Level::Warn,
        Ok("debug") | Ok("trace") => Level::Debug,
        _ => Level::Info,
    };
    LEVEL.store(level as u8, Ordering::Relaxed);
}

pub fn enabled(level: Level) -> bool {
    level as u8 <= LEVEL.load(Ordering::Relaxed)
}

/// Writes one line. Use the macros.
pub fn write(level: Level, args: std::fmt::Arguments<'_>) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let name = match level {
        Level::Error => "error",
        Level::Warn => "warn",
        Level::Info => "info",
        Level::Debug => "debug",
    };
    eprintln!(
        "ts={}.{:03} level={name} {args}",
        now.as_secs(),
        now.subsec_millis()
    );
}

/// A query string safe to log: every value replaced by `***` except topic names.
pub fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if k == "topic" || k == "topics" => format!("{k}={v}"),
            Some((k, _)) => format!("{k}=***"),
            None => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[macro_export]
macro_rules! log_at {
    ($level:expr, $($arg:tt)*) => {
        if $crate::log::enabled($level) {
            $crate::log::write($level, format_args!($($arg)*));
        }
    };
}

#[macro_export]
macro_rules! error { ($($arg:tt)*) => { $crate::log_at!($crate::log::Level::Error, $($arg)*) }; }
#[macro_export]
macro_rules! warn { ($($arg:tt)*) => { $crate::log_at!($crate::log::Level::Warn, $($arg)*) }; }
#[macro_export]
macro_rules! info { ($($arg:tt)*) => { $crate::log_at!($crate::log::Level::Info, $($arg)*) }; }
#[macro_export]
macro_rules! debug { ($($arg:tt)*) => { $crate::log_at!($crate::log::Level::Debug, $($arg)*) }; }

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_never_reach_the_log() {
        assert_eq!(
            redact_query("topic=a&token=secret&lastEventId=x"),
            "topic=a&token=***&lastEventId=***"
        );
    }
}
