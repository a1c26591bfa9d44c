//! Command-line and environment configuration: the `ringcast` commands and the
//! flags of `ringcast serve`, each with its `RINGCAST_*` environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// ringcast: a real-time push server (SSE and WebSocket topics).
#[derive(Debug, Parser)]
#[command(name = "ringcast", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve(Box<ServeConfig>),
    /// Publish one message over the Unix socket and print the id it got.
    Publish(PublishArgs),
}

/// I/O driver of the worker runtimes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Driver {
    /// io_uring where the kernel allows it, else epoll with a warning.
    Auto,
    /// io_uring only; fails at start if io_uring is unavailable.
    Uring,
    /// epoll (monoio's legacy driver).
    Epoll,
}

/// Flags of `ringcast serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Address of the HTTP listener (SSE, WebSocket, publish, metrics).
    #[arg(long, env = "RINGCAST_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Path of the Unix socket that takes NDJSON publish commands.
    #[arg(
        long,
        env = "RINGCAST_PUBLISH_SOCKET",
        default_value = "./ringcast.sock"
    )]
    pub publish_socket: PathBuf,

    /// Worker threads, one per core [default: available cores].
    #[arg(long, env = "RINGCAST_CORES")]
    pub cores: Option<usize>,

    /// I/O driver.
    #[arg(long, env = "RINGCAST_DRIVER", value_enum, default_value = "auto")]
    pub driver: Driver,

    /// Messages kept per topic for resume.
    #[arg(long, env = "RINGCAST_HISTORY", default_value_t = 1000)]
    pub history: usize,

    /// Bytes of history kept per topic (counted as encoded SSE bytes).
    #[arg(long, env = "RINGCAST_HISTORY_BYTES", default_value = "8MiB", value_parser = parse_size)]
    pub history_bytes: usize,

    /// Largest accepted HTTP request head.
    #[arg(long, env = "RINGCAST_MAX_HEADER_BYTES", default_value = "8KiB", value_parser = parse_size)]
    pub max_header_bytes: usize,

    /// Largest accepted HTTP request body (POST /publish).
    #[arg(long, env = "RINGCAST_MAX_BODY_BYTES", default_value = "1MiB", value_parser = parse_size)]
    pub max_body_bytes: usize,

    /// Largest message: published payload, publish-socket line, WebSocket message.
    #[arg(long, env = "RINGCAST_MAX_MESSAGE_BYTES", default_value = "1MiB", value_parser = parse_size)]
    pub max_message_bytes: usize,

    /// Topics one client may subscribe to.
    #[arg(long, env = "RINGCAST_MAX_TOPICS_PER_CLIENT", default_value_t = 64)]
    pub max_topics_per_client: usize,

    /// Bytes queued to one client before it is cut as a slow consumer.
    #[arg(long, env = "RINGCAST_MAX_OUTBOX_BYTES", default_value = "1MiB", value_parser = parse_size)]
    pub max_outbox_bytes: usize,

    /// Open connections allowed in all (split evenly over cores) [default: no limit].
    #[arg(long, env = "RINGCAST_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,

    /// Heartbeat interval (SSE comment, WS ping) when a stream is otherwise idle.
    #[arg(long, env = "RINGCAST_HEARTBEAT", default_value = "15s", value_parser = parse_duration)]
    pub heartbeat: Duration,

    /// WebSocket clients silent for this long are closed [default: 2 × heartbeat + 5s].
    #[arg(long, env = "RINGCAST_IDLE_TIMEOUT", value_parser = parse_duration)]
    pub idle_timeout: Option<Duration>,

    /// Time allowed for a request head to arrive.
    #[arg(long, env = "RINGCAST_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_timeout: Duration,

    /// Time allowed for a graceful drain after SIGTERM/SIGINT.
    #[arg(long, env = "RINGCAST_DRAIN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// The `retry:` hint (milliseconds) sent to SSE clients.
    #[arg(long, env = "RINGCAST_SSE_RETRY_MS", default_value_t = 2000)]
    pub sse_retry_ms: u32,

    /// Enable GET /echo (WebSocket echo, for conformance testing only).
    #[arg(long, env = "RINGCAST_ECHO")]
    pub echo: bool,

    /// HS256 secret: turns access control on (JWT in `Authorization: Bearer`,
    /// `?token=` or the auth cookie).
    #[arg(long, env = "RINGCAST_AUTH_SECRET", hide_env_values = true)]
    pub auth_secret: Option<String>,

    /// File holding the HS256 secret (trailing newline ignored).
    #[arg(
        long,
        env = "RINGCAST_AUTH_SECRET_FILE",
        conflicts_with = "auth_secret"
    )]
    pub auth_secret_file: Option<PathBuf>,

    /// Static publisher key accepted as `Authorization: Bearer <key>` on POST /publish.
    #[arg(long, env = "RINGCAST_PUBLISH_KEY", hide_env_values = true)]
    pub publish_key: Option<String>,

    /// Origins allowed for browsers (comma-separated, `*` = any) [default: any when
    /// auth is off; same-origin only when auth is on].
    #[arg(long, env = "RINGCAST_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Option<Vec<String>>,

    /// Cookie that may carry the token.
    #[arg(long, env = "RINGCAST_AUTH_COOKIE")]
    pub auth_cookie: Option<String>,

    /// Share topics with other nodes through Redis Streams (`redis://HOST:PORT[/DB]`).
    #[arg(long, env = "RINGCAST_BROKER")]
    pub broker: Option<String>,

    /// Mode of the publish socket file (octal).
    #[arg(long, env = "RINGCAST_PUBLISH_SOCKET_MODE", default_value = "660", value_parser = parse_mode)]
    pub publish_socket_mode: u32,
}

impl ServeConfig {
    /// Worker count: `--cores` or the cores available to this process.
    pub fn core_count(&self) -> usize {
        self.cores
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1)
    }

    /// The idle timeout in force: the flag, or 2 × heartbeat + 5 s.
    pub fn effective_idle_timeout(&self) -> Duration {
        self.idle_timeout
            .unwrap_or(self.heartbeat * 2 + Duration::from_secs(5))
    }

    /// Connections allowed per core, if limited.
    pub fn max_connections_per_core(&self) -> Option<usize> {
        let cores = self.core_count();
        self.max_connections.map(|n| n.div_ceil(cores).max(1))
    }
}

/// Arguments of `ringcast publish`.
#[derive(Debug, Clone, Args)]
pub struct PublishArgs {
    /// Path of the server's publish socket.
    #[arg(
        long,
        env = "RINGCAST_PUBLISH_SOCKET",
        default_value = "./ringcast.sock"
    )]
    pub socket: PathBuf,

    /// Event name carried in the envelope and the SSE `event:` line.
    #[arg(long)]
    pub event: Option<String>,

    /// Topic to publish to.
    pub topic: String,

    /// Payload; read from standard input when absent. Sent as JSON when it parses
    /// as JSON, else as a JSON string.
    pub data: Option<String>,
}

/// Parses an octal file mode such as `660` or `0600`.
pub fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("`{s}` is not an octal file mode (examples: 660, 600)"))
}

/// Parses a duration such as `15s`, `500ms`, `2m`, `1h` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (examples: 15s, 500ms, 2m)"))?;
    let ms = match unit {
        "ms" => Some(n),
        "" | "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => return Err(format!("`{s}`: unknown unit `{unit}` (use ms, s, m or h)")),
    };
    ms.map(Duration::from_millis)
        .ok_or_else(|| format!("`{s}` is too long"))
}

/// Parses a byte size such as `8KiB`, `1MiB`, `4096`, `2MB` (decimal) or `2M` (binary).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: usize = digits
        .parse()
        .map_err(|_| format!("`{s}` is not a size (examples: 4096, 8KiB, 1MiB)"))?;
    let mult: usize = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        "KB" => 1000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => return Err(format!("`{s}`: unknown unit `{other}` (use KiB, MiB, GiB)")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("`{s}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_the_documented_units() {
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("10parsecs").is_err());
    }

    #[test]
    fn sizes_take_binary_and_decimal_units() {
        assert_eq!(parse_size("8KiB"), Ok(8192));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("2MB"), Ok(2_000_000));
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn every_default_parses_and_the_idle_timeout_follows_the_heartbeat() {
        let cli = Cli::try_parse_from(["ringcast", "serve"]).expect("defaults parse");
        let Command::Serve(cfg) = cli.command else {
            panic!("serve expected")
        };
        assert_eq!(cfg.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(cfg.max_header_bytes, 8192);
        assert_eq!(cfg.history, 1000);
        assert_eq!(cfg.effective_idle_timeout(), Duration::from_secs(35));
    }
}
