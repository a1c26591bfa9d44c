//! What the runtime is told at start: plain values, fixed for the run.
//!
//! `config` (the only user of clap) reads the flags and environment of
//! `ringcast serve` and builds one [`Settings`], computing every derived value
//! there, once: the core count, the idle timeout in force, and the per-core
//! limits in wheel ticks. The runtime reads them and derives nothing.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::core::homes::HistoryLimits;
use crate::core::state::Limits;

/// I/O driver of the worker runtimes (`--driver`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// io_uring where the kernel allows it, else epoll with a warning.
    Auto,
    /// io_uring only; fails at start if io_uring is unavailable.
    Uring,
    /// epoll (monoio's legacy driver).
    Epoll,
}

/// The settings of one server run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Address of the HTTP listener, bound by every core (`SO_REUSEPORT`).
    pub listen: SocketAddr,
    /// Path of the Unix socket that takes NDJSON publish commands.
    pub publish_socket: PathBuf,
    /// Mode of the publish socket file.
    pub publish_socket_mode: u32,
    /// Worker threads, one per core; at least 1.
    pub cores: usize,
    pub driver: Driver,
    /// Per-client limits and timers, the same on every core.
    pub limits: Limits,
    /// History bounds of each core: per topic, and the core's share of the
    /// process-wide budget.
    pub history: HistoryLimits,
    /// WebSocket clients silent this long are closed; also the bound on
    /// unacknowledged writes (`TCP_USER_TIMEOUT`). `limits.idle` in ticks.
    pub idle_timeout: Duration,
    /// Publish-socket connections idle for this long are closed (zero: never).
    pub publish_idle_timeout: Duration,
    /// Largest accepted HTTP request head.
    pub max_header_bytes: usize,
    /// Largest accepted HTTP request body.
    pub max_body_bytes: usize,
    /// Largest message: published payload, publish-socket line, WebSocket message.
    pub max_message_bytes: usize,
    /// Open connections allowed over all cores; `None`: no limit.
    pub max_connections: Option<usize>,
    /// Open TCP connections allowed from one address; `None`: no limit.
    pub max_connections_per_ip: Option<u32>,
    /// Bytes of partial request bodies and WebSocket messages over all cores.
    pub max_inbound_memory: usize,
    /// Time allowed for a request head to arrive.
    pub header_timeout: Duration,
    /// Time allowed for a started request body to arrive whole.
    pub body_timeout: Duration,
    /// Time allowed for the graceful drain.
    pub drain_timeout: Duration,
    /// The `retry:` hint (milliseconds) sent to SSE clients, before jitter.
    pub sse_retry_ms: u32,
    /// `GET /echo` is served (conformance testing only).
    pub echo: bool,
    /// permessage-deflate is negotiated on `/ws` (and `/echo`).
    pub ws_deflate: bool,
    /// Envelopes shorter than this go uncompressed to deflate clients.
    pub ws_deflate_min_bytes: usize,
    pub auth: AuthSettings,
    /// Topics are shared with other nodes through this broker.
    pub broker: Option<BrokerSettings>,
    /// `--listen` serves https and wss with this pair.
    pub tls: Option<super::tls::TlsSettings>,
}

/// The inputs of access control; the policy is built from them at start. Its
/// `Debug` never shows the secret or the publish key.
#[derive(Clone, Default)]
pub struct AuthSettings {
    /// The HS256 secret; `None`: access control is off.
    pub secret: Option<Secret>,
    /// Static publisher key for `POST /publish`.
    pub publish_key: Option<String>,
    /// Origins allowed for browsers; `None`: the default for the auth mode.
    pub allowed_origins: Option<Vec<String>>,
    /// Cookie that may carry the token.
    pub cookie: Option<String>,
}

impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |set: bool| if set { "<redacted>" } else { "none" };
        f.debug_struct("AuthSettings")
            .field("secret", &self.secret.as_ref().map(Secret::source))
            .field("publish_key", &redacted(self.publish_key.is_some()))
            .field("allowed_origins", &self.allowed_origins)
            .field("cookie", &self.cookie)
            .finish()
    }
}

/// Where the HS256 secret comes from.
#[derive(Clone)]
pub enum Secret {
    /// Given on the command line or in the environment.
    Given(String),
    /// Read from this file at start (trailing whitespace ignored).
    File(PathBuf),
}

impl Secret {
    /// Where it comes from, without its value (for logs and `Debug`).
    pub fn source(&self) -> String {
        match self {
            Secret::Given(_) => "<given, redacted>".into(),
            Secret::File(path) => format!("file {}", path.display()),
        }
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.source())
    }
}

/// The broker bridge's settings.
#[derive(Debug, Clone)]
pub struct BrokerSettings {
    /// `redis://HOST:PORT[/DB]`.
    pub url: String,
    /// Entries kept per stream, about (`--history`).
    pub history: usize,
    /// Expiry of an idle topic's stream (`--history-ttl`; zero: none).
    pub ttl: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_the_secret_or_the_publish_key() {
        let auth = AuthSettings {
            secret: Some(Secret::Given("a-very-secret-value-of-32-bytes!".into())),
            publish_key: Some("pk-shh".into()),
            allowed_origins: None,
            cookie: Some("rc".into()),
        };
        let text = format!("{auth:?}");
        assert!(
            !text.contains("a-very-secret") && !text.contains("pk-shh"),
            "{text}"
        );
        assert!(text.contains("redacted"), "{text}");
    }
}
