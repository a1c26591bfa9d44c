//! Command-line and environment configuration: the `ringcast` commands and the
//! flags of `ringcast serve`, each with its `RINGCAST_*` environment variable.
//!
//! The only user of clap. `ringcast serve` hands the runtime a plain
//! [`Settings`], built here by [`ServeConfig::settings`] with every derived
//! value computed once.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::PossibleValue;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::core::homes::HistoryLimits;
use crate::core::state::Limits;
use crate::runtime::settings::{AuthSettings, BrokerSettings, Driver, Secret, Settings};
use crate::time::Tick;

/// ringcast: a real-time push server (SSE and WebSocket topics).
#[derive(Debug, Parser)]
#[command(name = "ringcast", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Reads the command line and the `RINGCAST_*` environment; prints the help,
    /// the version or the error and exits when that is what they ask for.
    pub fn from_env() -> Self {
        <Self as Parser>::parse()
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve(Box<ServeConfig>),
    /// Publish one message over the Unix socket and print the id it got.
    Publish(PublishArgs),
    /// Load generator: fan-out latency and throughput, or idle connections.
    Bench(Box<BenchArgs>),
}

/// `--driver`: the names and help of the runtime's [`Driver`], which knows
/// nothing of clap.
impl ValueEnum for Driver {
    fn value_variants<'a>() -> &'a [Self] {
        &[Driver::Auto, Driver::Uring, Driver::Epoll]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(match self {
            Driver::Auto => PossibleValue::new("auto")
                .help("io_uring where the kernel allows it, else epoll with a warning"),
            Driver::Uring => PossibleValue::new("uring")
                .help("io_uring only; fails at start if io_uring is unavailable"),
            Driver::Epoll => PossibleValue::new("epoll").help("epoll (monoio's legacy driver)"),
        })
    }
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

    /// Bytes held by the histories of all topics of the process (messages and
    /// their bookkeeping), split evenly over the cores; past it the oldest
    /// messages of the core leave first.
    #[arg(long, env = "RINGCAST_HISTORY_MEMORY", default_value = "256MiB", value_parser = parse_size)]
    pub history_memory: usize,

    /// Messages older than this leave history (`0` = kept until a bound needs
    /// the room). With a broker, also the expiry of an idle topic's stream.
    #[arg(long, env = "RINGCAST_HISTORY_TTL", default_value = "1h", value_parser = parse_duration)]
    pub history_ttl: Duration,

    /// Publish-socket connections idle for this long are closed (`0` = never).
    #[arg(long, env = "RINGCAST_PUBLISH_IDLE_TIMEOUT", default_value = "5m", value_parser = parse_duration)]
    pub publish_idle_timeout: Duration,

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

    /// The longest a busy core holds its writes back so that one write carries
    /// several messages (0: never). An idle core writes at once; see the README.
    #[arg(long, env = "RINGCAST_WRITE_DELAY", default_value = "2ms", value_parser = parse_duration)]
    pub write_delay: Duration,

    /// Open connections allowed over all cores [default: no limit].
    #[arg(long, env = "RINGCAST_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,

    /// Open TCP connections allowed from one address (an IPv6 host by its /64),
    /// over all cores [default: no limit]. Behind a proxy every client has the
    /// proxy's address: leave it off there.
    #[arg(long, env = "RINGCAST_MAX_CONNECTIONS_PER_IP")]
    pub max_connections_per_ip: Option<u32>,

    /// Memory for partial input over all cores: request bodies and WebSocket
    /// messages that have started to arrive. A connection that would go past it
    /// is refused (HTTP 503, WebSocket close 1013).
    #[arg(long, env = "RINGCAST_MAX_INBOUND_MEMORY", default_value = "256MiB", value_parser = parse_size)]
    pub max_inbound_memory: usize,

    /// Heartbeat interval (SSE comment, WS ping) when a stream is otherwise idle.
    #[arg(long, env = "RINGCAST_HEARTBEAT", default_value = "15s", value_parser = parse_duration)]
    pub heartbeat: Duration,

    /// WebSocket clients silent for this long are closed [default: 2 × heartbeat + 5s].
    #[arg(long, env = "RINGCAST_IDLE_TIMEOUT", value_parser = parse_duration)]
    pub idle_timeout: Option<Duration>,

    /// Time allowed for a request head to arrive.
    #[arg(long, env = "RINGCAST_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_timeout: Duration,

    /// Time allowed for a request body to arrive once it has started; bytes that
    /// trickle in do not extend it (408 past it).
    #[arg(long, env = "RINGCAST_BODY_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub body_timeout: Duration,

    /// Time allowed for a graceful drain after SIGTERM/SIGINT.
    #[arg(long, env = "RINGCAST_DRAIN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// The `retry:` hint (milliseconds) sent to SSE clients.
    #[arg(long, env = "RINGCAST_SSE_RETRY_MS", default_value_t = 2000)]
    pub sse_retry_ms: u32,

    /// permessage-deflate (RFC 7692) on /ws when the client offers it: each
    /// message is compressed once per core for every client that agreed.
    #[arg(long, env = "RINGCAST_WS_DEFLATE", default_value = "on", value_parser = parse_on_off, action = clap::ArgAction::Set)]
    pub ws_deflate: bool,

    /// With --ws-deflate on, messages (JSON envelopes) shorter than this go
    /// uncompressed.
    #[arg(long, env = "RINGCAST_WS_DEFLATE_MIN_BYTES", default_value = "128", value_parser = parse_size)]
    pub ws_deflate_min_bytes: usize,

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

    /// PEM certificate chain (leaf first): with --tls-key, `--listen` serves
    /// https and wss only. SIGHUP reloads the pair (open connections go on; a
    /// broken pair is logged and the previous one keeps serving).
    #[arg(long, env = "RINGCAST_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert (PKCS#8, PKCS#1 RSA or SEC1 EC).
    #[arg(long, env = "RINGCAST_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

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

    /// The runtime's settings for this run. Derived values are computed here,
    /// once: the core count, the idle timeout in force, the per-client timers in
    /// wheel ticks, and each core's share of `--history-memory`.
    pub fn settings(&self) -> Settings {
        let cores = self.core_count();
        let idle_timeout = self.effective_idle_timeout();
        Settings {
            listen: self.listen,
            publish_socket: self.publish_socket.clone(),
            publish_socket_mode: self.publish_socket_mode,
            cores,
            driver: self.driver,
            limits: Limits {
                max_outbox_bytes: self.max_outbox_bytes,
                max_topics_per_client: self.max_topics_per_client,
                heartbeat: Tick::span(self.heartbeat).max(Tick::new(1)),
                idle: Tick::span(idle_timeout),
                write_delay: self.write_delay,
            },
            history: HistoryLimits {
                len: self.history,
                bytes: self.history_bytes,
                memory: self.history_memory / cores,
                ttl: Tick::span(self.history_ttl),
            },
            idle_timeout,
            publish_idle_timeout: self.publish_idle_timeout,
            max_header_bytes: self.max_header_bytes,
            max_body_bytes: self.max_body_bytes,
            max_message_bytes: self.max_message_bytes,
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            max_inbound_memory: self.max_inbound_memory,
            header_timeout: self.header_timeout,
            body_timeout: self.body_timeout,
            drain_timeout: self.drain_timeout,
            sse_retry_ms: self.sse_retry_ms,
            echo: self.echo,
            ws_deflate: self.ws_deflate,
            ws_deflate_min_bytes: self.ws_deflate_min_bytes,
            auth: AuthSettings {
                // Both flags cannot be given together; an inline secret wins
                // should both ever arrive.
                secret: match (&self.auth_secret, &self.auth_secret_file) {
                    (Some(s), _) => Some(Secret::Given(s.clone())),
                    (None, Some(path)) => Some(Secret::File(path.clone())),
                    (None, None) => None,
                },
                publish_key: self.publish_key.clone(),
                allowed_origins: self.allowed_origins.clone(),
                cookie: self.auth_cookie.clone(),
            },
            broker: self.broker.as_ref().map(|url| BrokerSettings {
                url: url.clone(),
                history: self.history,
                ttl: self.history_ttl,
            }),
            tls: match (&self.tls_cert, &self.tls_key) {
                (Some(cert), Some(key)) => Some(crate::runtime::tls::TlsSettings {
                    cert: cert.clone(),
                    key: key.clone(),
                }),
                _ => None,
            },
        }
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

/// How much of the run one `ringcast bench` process can hold, shown after its `--help`.
const BENCH_AFTER_HELP: &str = "\
Limits: the process raises its open-file limit to the hard limit (often 20,000 here), so one
bench process holds up to about that many connections. For more, run several bench
processes side by side (`idle` runs, or fan-out runs each with its own --topic-prefix and
publisher), and spread source addresses with --source-ips so that each 127.0.0.x gets its
own ephemeral port range (about 28,000 ports each).

Cost: the bench reports its own CPU time; when it nears --threads cores, the load
generator, not the server, is the limit (give it more threads or another machine's cores).

Templates: {topic} in --url, --publish and --publish-ws-body becomes <topic-prefix><k>
(topic-0 .. topic-{K-1}); {payload} in --publish-ws-body becomes the payload JSON
{\"seq\":N,\"t\":<CLOCK_MONOTONIC ns>[,\"pad\":\"...\"]}.

Examples:
  ringcast bench --url ws://127.0.0.1:8080/ws?topic={topic} -c 1000 -m 10000
  ringcast bench --url http://127.0.0.1:8080/sse?topic={topic} --publish http://127.0.0.1:8080/publish?topic={topic}
  ringcast bench --url ws://127.0.0.1:3000/ws?topic={topic} --publish ws://127.0.0.1:3000/ws \\
                 --publish-ws-body '{payload}' --payload raw
  ringcast bench idle -c 10000 --url http://127.0.0.1:8080/sse?topic=idle --server-pid $(pidof ringcast)
  ringcast bench storm -c 15000 -m 1000 --url http://127.0.0.1:8080/sse?topic={topic} \\
                 --url ws://127.0.0.1:8080/ws?topic={topic} --source-ips 4 --server-pid $(pidof ringcast)";

/// Arguments of `ringcast bench`: the fan-out run, or the `idle` or `storm` mode.
#[derive(Debug, Clone, Args)]
#[command(args_conflicts_with_subcommands = true, after_help = BENCH_AFTER_HELP)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub mode: Option<BenchMode>,

    #[command(flatten)]
    pub fanout: FanoutArgs,
}

/// Modes of `ringcast bench` other than the default fan-out run.
#[derive(Debug, Clone, Subcommand)]
pub enum BenchMode {
    /// Hold N idle subscribers: report the connect rate and the server's RSS per connection.
    #[command(after_help = BENCH_AFTER_HELP)]
    Idle(IdleArgs),
    /// Reconnect storm: N subscribers drop at once, M messages are published, all
    /// resume with their last id; report the time until all caught up, loss, gaps and
    /// the server's peak RSS.
    #[command(after_help = BENCH_AFTER_HELP)]
    Storm(StormArgs),
}

/// How subscribers find the sequence number and send time in a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PayloadMode {
    /// ringcast's envelope: the payload is the envelope's `data` field.
    Envelope,
    /// The message text is the published body itself (nchan, most plain hubs).
    Raw,
}

/// Flags shared by every bench mode: who subscribes, where, and what to report.
#[derive(Debug, Clone, Args)]
pub struct SubscriberArgs {
    /// Subscribe URL template: ws://... for WebSocket, http://... for SSE. Repeat the flag
    /// to mix: connections take the URLs in turn.
    #[arg(
        long = "url",
        env = "RINGCAST_BENCH_URL",
        default_value = "ws://127.0.0.1:8080/ws?topic={topic}"
    )]
    pub urls: Vec<String>,

    /// Subscriber connections.
    #[arg(
        short = 'c',
        long,
        env = "RINGCAST_BENCH_CONNECTIONS",
        default_value_t = 1000
    )]
    pub connections: usize,

    /// Topics the subscribers are spread over (connection i takes topic i % K).
    #[arg(long, env = "RINGCAST_BENCH_TOPICS", default_value_t = 1)]
    pub topics: usize,

    /// Prefix of topic names: topic k is `<prefix><k>`.
    #[arg(long, env = "RINGCAST_BENCH_TOPIC_PREFIX", default_value = "topic-")]
    pub topic_prefix: String,

    /// Source addresses 127.0.0.1 ..= 127.0.0.k (connection i binds 127.0.0.(1 + i % k)),
    /// so that more connections fit the ephemeral port range.
    #[arg(long, env = "RINGCAST_BENCH_SOURCE_IPS", default_value_t = 1)]
    pub source_ips: u8,

    /// Subscriber threads, each with its own monoio runtime [default: available cores].
    #[arg(long, env = "RINGCAST_BENCH_THREADS")]
    pub threads: Option<usize>,

    /// Connection attempts in flight at once (over all threads).
    #[arg(
        long,
        env = "RINGCAST_BENCH_CONNECT_CONCURRENCY",
        default_value_t = 512
    )]
    pub connect_concurrency: usize,

    /// Time allowed for all subscribers to connect.
    #[arg(long, env = "RINGCAST_BENCH_CONNECT_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub connect_timeout: Duration,

    /// Text frame a WebSocket subscriber sends once open (for servers that subscribe by
    /// message); {topic} is replaced.
    #[arg(long, env = "RINGCAST_BENCH_WS_SUBSCRIBE_BODY")]
    pub ws_subscribe_body: Option<String>,

    /// WebSocket subscribers offer permessage-deflate (compressed messages are
    /// inflated); the report gives the bytes read per delivery either way.
    #[arg(long, env = "RINGCAST_BENCH_WS_DEFLATE")]
    pub ws_deflate: bool,

    /// For https/wss URLs: trust the server certificate's CA from this PEM file.
    #[arg(long, env = "RINGCAST_BENCH_TLS_CA")]
    pub tls_ca: Option<PathBuf>,

    /// For https/wss URLs: accept any server certificate (127.0.0.1 runs with
    /// a throwaway pair only).
    #[arg(long, env = "RINGCAST_BENCH_TLS_INSECURE")]
    pub tls_insecure: bool,

    /// PID of the server: its RSS (per connection) and CPU time are reported.
    #[arg(long, env = "RINGCAST_BENCH_SERVER_PID")]
    pub server_pid: Option<u32>,

    /// Print one JSON object on stdout instead of the table.
    #[arg(long, env = "RINGCAST_BENCH_JSON")]
    pub json: bool,

    /// No progress line on stderr.
    #[arg(short = 'q', long, env = "RINGCAST_BENCH_QUIET")]
    pub quiet: bool,
}

/// How the bench publishes: shared by the fan-out run and the storm mode.
#[derive(Debug, Clone, Args)]
pub struct BenchPublishArgs {
    /// Where to publish: unix:PATH (NDJSON lines), http://.../publish?topic={topic}
    /// (POST, keep-alive, pipelined) or ws://... (one text frame per message).
    #[arg(
        long,
        env = "RINGCAST_BENCH_PUBLISH",
        default_value = "unix:./ringcast.sock"
    )]
    pub publish: String,

    /// Body of a WebSocket publish; {topic} and {payload} are replaced. Use '{payload}'
    /// for servers that broadcast what a client sends.
    #[arg(
        long,
        env = "RINGCAST_BENCH_PUBLISH_WS_BODY",
        default_value = r#"{"op":"publish","topic":"{topic}","data":{payload}}"#
    )]
    pub publish_ws_body: String,

    /// Where subscribers find the payload in a message.
    #[arg(
        long,
        env = "RINGCAST_BENCH_PAYLOAD",
        value_enum,
        default_value = "envelope"
    )]
    pub payload: PayloadMode,

    /// Pad each payload to at least this many bytes.
    #[arg(long, env = "RINGCAST_BENCH_PAYLOAD_SIZE", default_value = "0", value_parser = parse_size)]
    pub payload_size: usize,

    /// Pad with rows of typical JSON (symbols, prices, volumes, timestamps that vary
    /// per message) instead of `x`s: for compression figures (permessage-deflate).
    #[arg(long, env = "RINGCAST_BENCH_PAYLOAD_JSON")]
    pub payload_json: bool,

    /// Target publish rate in messages per second; 0 = as fast as the window allows.
    #[arg(long, env = "RINGCAST_BENCH_RATE", default_value_t = 0.0)]
    pub rate: f64,

    /// Publishes sent but not yet answered, at most (unix and http publish).
    #[arg(long, env = "RINGCAST_BENCH_WINDOW", default_value_t = 256)]
    pub window: u64,
}

/// Flags of the fan-out run (`ringcast bench` without a mode).
#[derive(Debug, Clone, Args)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub subs: SubscriberArgs,

    #[command(flatten)]
    pub pubs: BenchPublishArgs,

    /// Messages to publish (round-robin over the topics), warm-up included.
    #[arg(
        short = 'm',
        long,
        env = "RINGCAST_BENCH_MESSAGES",
        default_value_t = 10_000
    )]
    pub messages: u64,

    /// The first N messages are checked for loss but not recorded in the histogram.
    #[arg(long, env = "RINGCAST_BENCH_WARMUP", default_value_t = 0)]
    pub warmup: u64,

    /// After the last publish, how long to wait for stragglers before counting loss.
    #[arg(long, env = "RINGCAST_BENCH_DRAIN", default_value = "5s", value_parser = parse_duration)]
    pub drain: Duration,
}

/// Flags of `ringcast bench storm`.
#[derive(Debug, Clone, Args)]
pub struct StormArgs {
    #[command(flatten)]
    pub subs: SubscriberArgs,

    #[command(flatten)]
    pub pubs: BenchPublishArgs,

    /// Messages published while every client is away (round-robin over the topics):
    /// each client misses its topic's share and gets it back on resume. Keep a
    /// client's backlog (plus the warm-up) under the server's --history.
    #[arg(
        short = 'm',
        long,
        env = "RINGCAST_BENCH_MESSAGES",
        default_value_t = 1_000
    )]
    pub messages: u64,

    /// Messages per topic published before the drop, so that every client has a last id.
    #[arg(long, env = "RINGCAST_BENCH_WARMUP_PER_TOPIC", default_value_t = 2)]
    pub warmup_per_topic: u64,

    /// How long each phase (warm-up delivery, drop, catch-up) may take before the run
    /// reports what it has.
    #[arg(long, env = "RINGCAST_BENCH_PHASE_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub phase_timeout: Duration,
}

/// Flags of `ringcast bench idle`.
#[derive(Debug, Clone, Args)]
pub struct IdleArgs {
    #[command(flatten)]
    pub subs: SubscriberArgs,

    /// How long to hold the connections open once all are connected.
    #[arg(long, env = "RINGCAST_BENCH_HOLD", default_value = "10s", value_parser = parse_duration)]
    pub hold: Duration,
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
/// `on` or `off` (also `true`/`false`, `1`/`0`).
pub fn parse_on_off(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "1" | "yes" => Ok(true),
        "off" | "false" | "0" | "no" => Ok(false),
        _ => Err(format!("`{s}` is neither on nor off")),
    }
}

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

    #[test]
    fn ws_deflate_is_on_by_default_and_takes_on_or_off() {
        let on = settings_of(&[]);
        assert!(on.ws_deflate);
        assert_eq!(on.ws_deflate_min_bytes, 128);
        let off = settings_of(&["--ws-deflate", "off", "--ws-deflate-min-bytes", "1KiB"]);
        assert!(!off.ws_deflate);
        assert_eq!(off.ws_deflate_min_bytes, 1024);
        assert!(settings_of(&["--ws-deflate", "on"]).ws_deflate);
        assert!(Cli::try_parse_from(["ringcast", "serve", "--ws-deflate", "maybe"]).is_err());
    }

    fn settings_of(args: &[&str]) -> Settings {
        let cli =
            Cli::try_parse_from(["ringcast", "serve"].iter().chain(args)).expect("flags parse");
        let Command::Serve(cfg) = cli.command else {
            panic!("serve expected")
        };
        cfg.settings()
    }

    #[test]
    fn the_tls_pair_is_both_flags_or_neither() {
        let s = settings_of(&["--tls-cert", "c.pem", "--tls-key", "k.pem"]);
        let tls = s.tls.expect("a TLS pair");
        assert_eq!(
            (tls.cert.to_str(), tls.key.to_str()),
            (Some("c.pem"), Some("k.pem"))
        );
        assert!(settings_of(&[]).tls.is_none());
        for alone in [["--tls-cert", "c.pem"], ["--tls-key", "k.pem"]] {
            let Err(err) = Cli::try_parse_from(["ringcast", "serve"].iter().chain(&alone)) else {
                panic!("{alone:?} alone was accepted");
            };
            assert!(err.to_string().contains("--tls-"), "{err}");
        }
    }

    #[test]
    fn settings_carry_the_derived_values_in_ticks_and_per_core_shares() {
        let s = settings_of(&[
            "--cores",
            "4",
            "--history-memory",
            "256MiB",
            "--driver",
            "epoll",
        ]);
        assert_eq!(s.cores, 4);
        assert_eq!(s.driver, Driver::Epoll);
        assert_eq!(s.history.memory, 64 << 20);
        assert_eq!(s.history.len, 1000);
        assert_eq!(s.history.ttl, Tick::new(360_000), "1h in 10 ms ticks");
        assert_eq!(s.limits.heartbeat, Tick::new(1500), "15s in 10 ms ticks");
        assert_eq!(s.idle_timeout, Duration::from_secs(35));
        assert_eq!(s.limits.idle, Tick::new(3500));
        assert!(s.broker.is_none());
        assert!(s.auth.secret.is_none());
    }

    #[test]
    fn settings_take_the_idle_timeout_flag_and_the_broker_with_its_history() {
        let s = settings_of(&[
            "--idle-timeout",
            "0",
            "--broker",
            "redis://127.0.0.1:6379",
            "--history",
            "50",
            "--history-ttl",
            "0",
        ]);
        assert_eq!(s.idle_timeout, Duration::ZERO);
        assert_eq!(s.limits.idle, Tick::ZERO);
        let broker = s.broker.expect("broker settings");
        assert_eq!(broker.url, "redis://127.0.0.1:6379");
        assert_eq!(broker.history, 50);
        assert_eq!(broker.ttl, Duration::ZERO);
    }

    #[test]
    fn settings_read_the_secret_from_the_flag_or_name_its_file() {
        let s = settings_of(&["--auth-secret", "0123456789abcdef0123456789abcdef"]);
        assert!(matches!(s.auth.secret, Some(Secret::Given(ref k)) if k.len() == 32));
        let s = settings_of(&["--auth-secret-file", "/run/secret"]);
        assert!(
            matches!(s.auth.secret, Some(Secret::File(ref p)) if p.to_str() == Some("/run/secret"))
        );
    }
}
