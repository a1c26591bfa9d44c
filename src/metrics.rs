//! Metrics: one block of counters per core, written only by that core and read by
//! whichever core answers `GET /metrics`, rendered as Prometheus text.
//!
//! Single writer per block, so a counter bump is a relaxed load and store (no
//! locked instruction on the message path); readers may see a value a few
//! nanoseconds old, never a torn one. Gauges that mirror core state (connections,
//! subscriptions, topics) are stored by the code that changes that state, in the
//! same call, so the metric cannot disagree with the registry.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A counter or gauge with one writer (its core).
#[derive(Default, Debug)]
pub struct Cell(AtomicU64);

impl Cell {
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    #[inline]
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }

    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// HTTP statuses counted by `ringcast_http_responses_total`; others count as 0.
pub const STATUSES: [u16; 19] = [
    0, 101, 200, 202, 204, 400, 401, 403, 404, 405, 408, 411, 413, 426, 429, 431, 500, 501, 503,
];

/// Close reasons counted by `ringcast_connections_closed_total`.
pub const CLOSE_REASONS: [&str; 5] = ["peer", "slow", "shutdown", "idle", "expired"];

/// Why a message left a history; the `reason` of `ringcast_history_evictions_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvictionReason {
    /// The core's share of `--history-memory` needed the room.
    Budget = 0,
    /// Older than `--history-ttl`.
    Ttl = 1,
    /// Past `--history` messages of its topic.
    Count = 2,
    /// Past `--history-bytes` of its topic.
    Bytes = 3,
}

/// The labels of [`EvictionReason`], by its value.
pub const EVICTION_REASONS: [&str; 4] = ["budget", "ttl", "count", "bytes"];

/// Why partial input was refused; the `transport` and `reason` labels of
/// `ringcast_inbound_refused_total`, indexed by [`InboundRefusal`].
pub const INBOUND_REFUSALS: [(&str, &str); 5] = [
    ("http", "budget"),
    ("http", "timeout"),
    ("ws", "budget"),
    ("ws", "timeout"),
    ("http", "per_ip"),
];

/// A refusal counted by `ringcast_inbound_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboundRefusal {
    /// A request body would have overdrawn `--max-inbound-memory` (503).
    HttpBudget = 0,
    /// A request body did not arrive within `--body-timeout` (408).
    HttpTimeout = 1,
    /// A WebSocket message would have overdrawn `--max-inbound-memory` (1013).
    WsBudget = 2,
    /// A WebSocket message did not arrive within `--body-timeout` (1008).
    WsTimeout = 3,
    /// A connection past `--max-connections-per-ip` (429).
    PerIp = 4,
}

/// The counters of one core.
#[derive(Default, Debug)]
pub struct CoreMetrics {
    pub connections_sse: Cell,
    pub connections_ws: Cell,
    pub accepted: Cell,
    pub closed_sse: [Cell; CLOSE_REASONS.len()],
    pub closed_ws: [Cell; CLOSE_REASONS.len()],
    pub subscriptions: Cell,
    pub topics_local: Cell,
    pub topics_home: Cell,
    pub history_bytes: Cell,
    pub history_messages: Cell,
    pub history_evictions: [Cell; EVICTION_REASONS.len()],
    pub topics_forgotten: Cell,
    pub published: Cell,
    pub publish_errors: Cell,
    pub delivered: Cell,
    /// Writes to subscriber sockets (one system call each): `delivered / stream_writes`
    /// is how many messages a write carries.
    pub stream_writes: Cell,
    pub dropped: Cell,
    pub slow_consumers_sse: Cell,
    pub slow_consumers_ws: Cell,
    pub http_responses: [Cell; STATUSES.len()],
    pub bus_overflow: Cell,
    pub heartbeats: Cell,
    pub idle_timeouts: Cell,
    pub header_timeouts: Cell,
    /// TLS handshakes completed (https listener only).
    pub tls_handshakes: Cell,
    /// TLS handshakes that failed: an alert, bytes that are not TLS (plain
    /// HTTP on the https port), a peer gone, or --header-timeout.
    pub tls_handshake_failures: Cell,
    pub timer_entries: Cell,
    pub outbox_bytes: Cell,
    pub outbox_max: Cell,
    pub bus_depth: Cell,
    /// Bytes of partial input held by the core's connections (its part of
    /// `--max-inbound-memory` in use).
    pub inbound_bytes: Cell,
    pub inbound_refused: [Cell; INBOUND_REFUSALS.len()],
}

impl CoreMetrics {
    pub fn eviction(&self, reason: EvictionReason) -> &Cell {
        &self.history_evictions[reason as usize]
    }

    pub fn inbound_refused(&self, why: InboundRefusal) {
        self.inbound_refused[why as usize].inc();
    }

    pub fn http_response(&self, status: u16) {
        let i = STATUSES.iter().position(|&s| s == status).unwrap_or(0);
        self.http_responses[i].inc();
    }
}

/// Process-wide facts shown next to the per-core counters.
pub struct ProcessInfo<'a> {
    pub driver: &'a str,
    pub epoch: &'a str,
    /// The certificate in force, when `--listen` serves https.
    pub tls: Option<TlsInfo>,
}

/// What `/metrics` shows of the certificate in force.
pub struct TlsInfo {
    /// The leaf's `notAfter`, Unix seconds.
    pub not_after: u64,
    /// Reloads that put a pair in force, and reloads refused.
    pub reloads_ok: u64,
    pub reloads_failed: u64,
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Renders every core's counters as Prometheus text exposition (format 0.0.4).
pub fn render(cores: &[Arc<CoreMetrics>], info: &ProcessInfo<'_>) -> String {
    let mut out = String::with_capacity(4096);
    let per_core = |out: &mut String,
                    name: &str,
                    kind: &str,
                    help: &str,
                    get: &dyn Fn(&CoreMetrics) -> u64| {
        family(out, name, kind, help);
        for (core, m) in cores.iter().enumerate() {
            let _ = writeln!(out, "{name}{{core=\"{core}\"}} {}", get(m));
        }
    };

    family(
        &mut out,
        "ringcast_connections",
        "gauge",
        "Open subscriber connections, from the client registry.",
    );
    for (core, m) in cores.iter().enumerate() {
        let _ = writeln!(
            out,
            "ringcast_connections{{transport=\"sse\",core=\"{core}\"}} {}",
            m.connections_sse.get()
        );
        let _ = writeln!(
            out,
            "ringcast_connections{{transport=\"ws\",core=\"{core}\"}} {}",
            m.connections_ws.get()
        );
    }
    family(
        &mut out,
        "ringcast_connections_closed_total",
        "counter",
        "Subscriber connections closed, by transport and reason.",
    );
    for (core, m) in cores.iter().enumerate() {
        for (i, reason) in CLOSE_REASONS.iter().enumerate() {
            let _ = writeln!(out, "ringcast_connections_closed_total{{transport=\"sse\",reason=\"{reason}\",core=\"{core}\"}} {}", m.closed_sse[i].get());
            let _ = writeln!(out, "ringcast_connections_closed_total{{transport=\"ws\",reason=\"{reason}\",core=\"{core}\"}} {}", m.closed_ws[i].get());
        }
    }
    per_core(
        &mut out,
        "ringcast_connections_accepted_total",
        "counter",
        "TCP connections accepted.",
        &|m| m.accepted.get(),
    );
    per_core(
        &mut out,
        "ringcast_subscriptions",
        "gauge",
        "Topic subscriptions of connected clients.",
        &|m| m.subscriptions.get(),
    );
    per_core(
        &mut out,
        "ringcast_topics",
        "gauge",
        "Topics with subscribers on the core.",
        &|m| m.topics_local.get(),
    );
    per_core(
        &mut out,
        "ringcast_home_topics",
        "gauge",
        "Topics whose ids and history the core keeps.",
        &|m| m.topics_home.get(),
    );
    per_core(
        &mut out,
        "ringcast_history_bytes",
        "gauge",
        "Bytes held by topic histories: messages and their bookkeeping, per topic and per message.",
        &|m| m.history_bytes.get(),
    );
    per_core(
        &mut out,
        "ringcast_history_messages",
        "gauge",
        "Messages held by topic histories.",
        &|m| m.history_messages.get(),
    );
    family(
        &mut out,
        "ringcast_history_evictions_total",
        "counter",
        "Messages that left a history before a resume could ask for them, by reason.",
    );
    for (core, m) in cores.iter().enumerate() {
        for (i, reason) in EVICTION_REASONS.iter().enumerate() {
            let _ = writeln!(
                out,
                "ringcast_history_evictions_total{{reason=\"{reason}\",core=\"{core}\"}} {}",
                m.history_evictions[i].get()
            );
        }
    }
    per_core(
        &mut out,
        "ringcast_topics_forgotten_total",
        "counter",
        "Topics forgotten: no subscriber on any core and an empty history.",
        &|m| m.topics_forgotten.get(),
    );
    per_core(
        &mut out,
        "ringcast_messages_published_total",
        "counter",
        "Messages accepted and given an id (counted at the topic's home core).",
        &|m| m.published.get(),
    );
    per_core(
        &mut out,
        "ringcast_publish_errors_total",
        "counter",
        "Publish commands refused.",
        &|m| m.publish_errors.get(),
    );
    per_core(
        &mut out,
        "ringcast_messages_delivered_total",
        "counter",
        "Messages queued to subscribers.",
        &|m| m.delivered.get(),
    );
    per_core(
        &mut out,
        "ringcast_stream_writes_total",
        "counter",
        "Writes to subscriber sockets (messages delivered per write = delivered / writes).",
        &|m| m.stream_writes.get(),
    );
    per_core(
        &mut out,
        "ringcast_messages_dropped_total",
        "counter",
        "Messages queued to subscribers that left before they were written.",
        &|m| m.dropped.get(),
    );
    family(
        &mut out,
        "ringcast_slow_consumers_total",
        "counter",
        "Clients cut because their outbox passed --max-outbox-bytes.",
    );
    for (core, m) in cores.iter().enumerate() {
        let _ = writeln!(
            out,
            "ringcast_slow_consumers_total{{transport=\"sse\",core=\"{core}\"}} {}",
            m.slow_consumers_sse.get()
        );
        let _ = writeln!(
            out,
            "ringcast_slow_consumers_total{{transport=\"ws\",core=\"{core}\"}} {}",
            m.slow_consumers_ws.get()
        );
    }
    per_core(
        &mut out,
        "ringcast_heartbeats_total",
        "counter",
        "Heartbeats sent (SSE comments, WebSocket pings).",
        &|m| m.heartbeats.get(),
    );
    per_core(
        &mut out,
        "ringcast_idle_timeouts_total",
        "counter",
        "WebSocket clients closed after --idle-timeout of silence.",
        &|m| m.idle_timeouts.get(),
    );
    per_core(
        &mut out,
        "ringcast_header_timeouts_total",
        "counter",
        "Connections closed because no request head arrived within --header-timeout.",
        &|m| m.header_timeouts.get(),
    );
    per_core(
        &mut out,
        "ringcast_tls_handshakes_total",
        "counter",
        "TLS handshakes completed on the https listener.",
        &|m| m.tls_handshakes.get(),
    );
    per_core(
        &mut out,
        "ringcast_tls_handshake_failures_total",
        "counter",
        "TLS handshakes that failed (alert, not TLS such as plain HTTP, peer gone, or --header-timeout); the connection was closed.",
        &|m| m.tls_handshake_failures.get(),
    );
    if let Some(tls) = &info.tls {
        family(
            &mut out,
            "ringcast_tls_cert_not_after_seconds",
            "gauge",
            "notAfter of the certificate in force (leaf), Unix seconds.",
        );
        let _ = writeln!(out, "ringcast_tls_cert_not_after_seconds {}", tls.not_after);
        family(
            &mut out,
            "ringcast_tls_reloads_total",
            "counter",
            "SIGHUP reloads of the TLS pair: put in force (ok) or refused, the previous pair serving on (error).",
        );
        let _ = writeln!(
            out,
            "ringcast_tls_reloads_total{{result=\"ok\"}} {}",
            tls.reloads_ok
        );
        let _ = writeln!(
            out,
            "ringcast_tls_reloads_total{{result=\"error\"}} {}",
            tls.reloads_failed
        );
    }
    per_core(
        &mut out,
        "ringcast_timer_entries",
        "gauge",
        "Entries in the core's timer wheel.",
        &|m| m.timer_entries.get(),
    );
    per_core(
        &mut out,
        "ringcast_outbox_bytes",
        "gauge",
        "Bytes queued to clients, not yet written.",
        &|m| m.outbox_bytes.get(),
    );
    per_core(
        &mut out,
        "ringcast_outbox_bytes_max",
        "gauge",
        "The largest single outbox seen during the last second.",
        &|m| m.outbox_max.get(),
    );
    per_core(
        &mut out,
        "ringcast_inbound_bytes",
        "gauge",
        "Bytes held for request bodies and WebSocket messages not complete yet (--max-inbound-memory).",
        &|m| m.inbound_bytes.get(),
    );
    family(
        &mut out,
        "ringcast_inbound_refused_total",
        "counter",
        "Requests and WebSocket messages refused while arriving: over --max-inbound-memory, past --body-timeout, past --max-connections-per-ip.",
    );
    for (core, m) in cores.iter().enumerate() {
        for (i, (transport, reason)) in INBOUND_REFUSALS.iter().enumerate() {
            let _ = writeln!(
                out,
                "ringcast_inbound_refused_total{{transport=\"{transport}\",reason=\"{reason}\",core=\"{core}\"}} {}",
                m.inbound_refused[i].get()
            );
        }
    }
    per_core(
        &mut out,
        "ringcast_bus_queue_depth",
        "gauge",
        "Cross-core messages waiting for the core (rings and overflow).",
        &|m| m.bus_depth.get(),
    );
    per_core(
        &mut out,
        "ringcast_bus_overflow_total",
        "counter",
        "Cross-core messages that waited for room in a full queue.",
        &|m| m.bus_overflow.get(),
    );
    family(
        &mut out,
        "ringcast_http_responses_total",
        "counter",
        "HTTP responses by status (0 = other).",
    );
    for (core, m) in cores.iter().enumerate() {
        for (i, status) in STATUSES.iter().enumerate() {
            let v = m.http_responses[i].get();
            if v > 0 {
                let _ = writeln!(
                    out,
                    "ringcast_http_responses_total{{status=\"{status}\",core=\"{core}\"}} {v}"
                );
            }
        }
    }
    family(
        &mut out,
        "ringcast_open_fds",
        "gauge",
        "Open file descriptors of the process.",
    );
    let _ = writeln!(out, "ringcast_open_fds {}", open_fds());
    family(
        &mut out,
        "ringcast_resident_memory_bytes",
        "gauge",
        "Resident set size of the process.",
    );
    let _ = writeln!(out, "ringcast_resident_memory_bytes {}", resident_bytes());
    family(&mut out, "ringcast_info", "gauge", "Build and run facts.");
    let _ = writeln!(
        out,
        "ringcast_info{{version=\"{}\",driver=\"{}\",epoch=\"{}\",cores=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION"),
        info.driver,
        info.epoch,
        cores.len()
    );
    out
}

/// Open descriptors of this process (entries of `/proc/self/fd`).
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// Resident memory of this process, from `/proc/self/statm`.
pub fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no memory-safety preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * u64::try_from(page).unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendering_labels_every_series_by_core() {
        let cores = vec![
            Arc::new(CoreMetrics::default()),
            Arc::new(CoreMetrics::default()),
        ];
        cores[1].connections_sse.set(3);
        cores[0].http_response(404);
        cores[0].http_response(404);
        let text = render(
            &cores,
            &ProcessInfo {
                driver: "uring",
                epoch: "e",
                tls: None,
            },
        );
        assert!(text.contains("ringcast_connections{transport=\"sse\",core=\"1\"} 3\n"));
        assert!(text.contains("ringcast_http_responses_total{status=\"404\",core=\"0\"} 2\n"));
        assert!(text.contains("# TYPE ringcast_messages_published_total counter\n"));
    }
}
