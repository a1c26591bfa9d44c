//! The results of a run: the human table and the one-line JSON object.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

use super::stats::Counts;

/// Latency percentiles in nanoseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Latency {
    pub samples: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
}

impl Latency {
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            samples: h.len(),
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean(),
        }
    }
}

/// What the storm mode measured besides the counts (see `ringcast bench storm`).
#[derive(Debug, Clone, Default)]
pub struct StormFigures {
    /// Messages published before the drop (each client's last id comes from them).
    pub warmup_messages: u64,
    /// Subscribers whose stream ended when all dropped at once.
    pub dropped: usize,
    /// Subscribers that got their `200`/`101` again, resuming with their last id.
    pub resumed: usize,
    pub resume_failed: usize,
    /// From the start of the reconnects until the last `200`/`101`.
    pub reconnect_seconds: Option<f64>,
    /// From the start of the reconnects until the last subscriber had every message;
    /// `None` when not every subscriber caught up.
    pub catch_up_seconds: Option<f64>,
    /// Subscribers that had every message at the end.
    pub caught_up: usize,
    /// `ringcast.gap` events received (0 when the history reaches back).
    pub gaps: u64,
    /// The server's RSS just before the drop.
    pub rss_before_bytes: Option<u64>,
    /// The largest RSS polled from the drop until all caught up.
    pub rss_peak_bytes: Option<u64>,
    /// The server's `VmHWM` at the end (its peak over its whole life).
    pub rss_hwm_bytes: Option<u64>,
}

/// Everything a run measured. Fan-out fields are `None` in idle mode; server
/// fields are `None` without `--server-pid`.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub mode: &'static str,
    /// `sse`, `ws`, or `mixed`.
    pub transport: String,
    pub publish: Option<&'static str>,
    pub connections: usize,
    pub connected: usize,
    pub connect_failed: usize,
    pub disconnected: usize,
    pub first_error: Option<String>,
    pub threads: usize,
    pub topics: usize,
    pub connect_seconds: f64,
    pub messages: Option<u64>,
    pub payload_bytes: Option<usize>,
    pub publish_accepted: Option<u64>,
    pub publish_refused: Option<u64>,
    pub publish_error: Option<String>,
    pub publish_seconds: Option<f64>,
    pub counts: Counts,
    pub delivered_per_sec: Option<f64>,
    pub latency: Latency,
    /// Wall seconds of the measured phase (publish to end of drain; idle: connect).
    pub phase_seconds: f64,
    pub bench_cpu_seconds: f64,
    pub server_cpu_seconds: Option<f64>,
    /// Bytes the subscribers read during the publish phase (all frames).
    pub rx_bytes: Option<u64>,
    pub server_rss_bytes: Option<u64>,
    pub rss_per_conn_bytes: Option<f64>,
    /// What the second half of the connections added per connection: the cost of
    /// one more connection, without the server's fixed costs of the first ones.
    pub rss_marginal_per_conn_bytes: Option<f64>,
    /// The machine's 1-minute load average at the end, and its core count.
    pub host_load: Option<f64>,
    pub host_cores: usize,
    /// The storm mode's figures.
    pub storm: Option<StormFigures>,
}

fn ms(ns: u64) -> String {
    let us = ns as f64 / 1000.0;
    if us < 1000.0 {
        format!("{us:.0} µs")
    } else if us < 1_000_000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

/// `12.3k`, `4.56M`.
pub fn si(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1}k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

fn bytes(b: f64) -> String {
    if b >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", b / (1024.0 * 1024.0))
    } else if b >= 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{b:.0} B")
    }
}

impl Report {
    /// Bench CPU as cores busy over the phase: near the thread count means the load
    /// generator, not the server, set the pace.
    pub fn bench_cores(&self) -> f64 {
        if self.phase_seconds > 0.0 {
            self.bench_cpu_seconds / self.phase_seconds
        } else {
            0.0
        }
    }

    pub fn connect_rate(&self) -> f64 {
        if self.connect_seconds > 0.0 {
            self.connected as f64 / self.connect_seconds
        } else {
            0.0
        }
    }

    /// The human table.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let mut row = |k: &str, v: String| {
            let _ = writeln!(t, "  {k:<22} {v}");
        };
        row(
            "run",
            format!(
                "{} · {} subscribers ({}) · {} topic(s) · {} thread(s){}",
                self.mode,
                self.connections,
                self.transport,
                self.topics,
                self.threads,
                self.publish
                    .map_or(String::new(), |p| format!(" · publish {p}"))
            ),
        );
        row(
            "connected",
            format!(
                "{} in {:.2} s ({}/s){}{}",
                self.connected,
                self.connect_seconds,
                si(self.connect_rate()),
                if self.connect_failed > 0 {
                    format!(", {} FAILED", self.connect_failed)
                } else {
                    String::new()
                },
                if self.disconnected > 0 {
                    format!(", {} dropped later", self.disconnected)
                } else {
                    String::new()
                },
            ),
        );
        if let Some(m) = self.messages {
            row(
                "published",
                format!(
                    "{m} × {} B in {:.2} s ({}/s), accepted {}, refused {}",
                    self.payload_bytes.unwrap_or(0),
                    self.publish_seconds.unwrap_or(0.0),
                    si(m as f64 / self.publish_seconds.unwrap_or(f64::INFINITY)),
                    self.publish_accepted.map_or("-".into(), |n| n.to_string()),
                    self.publish_refused.map_or("-".into(), |n| n.to_string()),
                ),
            );
            let c = &self.counts;
            row(
                "delivered",
                format!(
                    "{} of {}{}",
                    c.distinct,
                    c.expected,
                    self.delivered_per_sec
                        .map_or(String::new(), |r| format!(" ({}/s)", si(r)))
                ),
            );
            row(
                "lost / dup / reordered",
                format!("{} / {} / {}", c.lost, c.duplicate, c.out_of_order),
            );
            if c.unexpected + c.unstamped > 0 {
                row(
                    "other messages",
                    format!(
                        "{} foreign sequence, {} without stamp",
                        c.unexpected, c.unstamped
                    ),
                );
            }
            let l = &self.latency;
            if l.samples > 0 {
                row(
                    "latency",
                    format!(
                        "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  ({} samples)",
                        ms(l.p50),
                        ms(l.p90),
                        ms(l.p99),
                        ms(l.p999),
                        ms(l.max),
                        l.samples
                    ),
                );
            }
        }
        if let Some(st) = &self.storm {
            row(
                "storm",
                format!(
                    "{} warm-up messages, {} dropped at once, {} resumed{} in {}",
                    st.warmup_messages,
                    st.dropped,
                    st.resumed,
                    if st.resume_failed > 0 {
                        format!(", {} FAILED", st.resume_failed)
                    } else {
                        String::new()
                    },
                    st.reconnect_seconds
                        .map_or("-".into(), |s| format!("{s:.2} s")),
                ),
            );
            row(
                "caught up",
                match st.catch_up_seconds {
                    Some(s) => format!("all {} in {s:.2} s from the first reconnect", st.caught_up),
                    None => format!("only {} of {} (NOT all)", st.caught_up, self.connected),
                },
            );
            row("gap events", st.gaps.to_string());
            if let Some(peak) = st.rss_peak_bytes {
                row(
                    "server rss in storm",
                    format!(
                        "{} before the drop, peak {}{}",
                        st.rss_before_bytes.map_or("-".into(), |b| bytes(b as f64)),
                        bytes(peak as f64),
                        st.rss_hwm_bytes
                            .map_or(String::new(), |b| format!(" (VmHWM {})", bytes(b as f64))),
                    ),
                );
            }
        }
        row(
            "bench cpu",
            format!(
                "{:.2} s over {:.2} s = {:.2} cores of {} threads{}",
                self.bench_cpu_seconds,
                self.phase_seconds,
                self.bench_cores(),
                self.threads,
                if self.bench_cores() > 0.85 * self.threads as f64 {
                    "  (the load generator may be the limit)"
                } else {
                    ""
                }
            ),
        );
        if let (Some(rx), Some(c)) = (self.rx_bytes, Some(&self.counts).filter(|c| c.distinct > 0))
        {
            row(
                "bytes read",
                format!("{rx} = {:.1} per delivery", rx as f64 / c.distinct as f64),
            );
        }
        if let Some(cpu) = self.server_cpu_seconds {
            row(
                "server cpu",
                format!(
                    "{cpu:.2} s = {:.2} cores",
                    cpu / self.phase_seconds.max(1e-9)
                ),
            );
        }
        if let Some(rss) = self.server_rss_bytes {
            row(
                "server rss",
                format!(
                    "{}{}{}",
                    bytes(rss as f64),
                    self.rss_per_conn_bytes
                        .map_or(String::new(), |b| format!(", {} per connection", bytes(b))),
                    self.rss_marginal_per_conn_bytes
                        .map_or(String::new(), |b| format!(
                            " ({} per connection of the second half)",
                            bytes(b)
                        ))
                ),
            );
        }
        if let Some(load) = self.host_load {
            row(
                "host load",
                format!(
                    "{load:.2} on {} cores{}",
                    self.host_cores,
                    if load > self.host_cores as f64 {
                        "  (other processes competed for the cores: numbers are pessimistic)"
                    } else {
                        ""
                    }
                ),
            );
        }
        if let Some(e) = &self.first_error {
            row("first error", e.clone());
        }
        if let Some(e) = &self.publish_error {
            row("first publish error", e.clone());
        }
        t
    }

    /// One JSON object (a single line). Latencies in microseconds.
    pub fn json(&self) -> String {
        let mut j = Json::default();
        j.str("mode", self.mode);
        j.str("transport", &self.transport);
        j.opt_str("publish", self.publish);
        j.num("connections", self.connections as f64);
        j.num("connected", self.connected as f64);
        j.num("connect_failed", self.connect_failed as f64);
        j.num("disconnected", self.disconnected as f64);
        j.num("threads", self.threads as f64);
        j.num("topics", self.topics as f64);
        j.num("connect_seconds", self.connect_seconds);
        j.num("connect_rate", self.connect_rate());
        if let Some(m) = self.messages {
            let c = &self.counts;
            j.num("messages", m as f64);
            j.opt_num("payload_bytes", self.payload_bytes.map(|b| b as f64));
            j.opt_num("publish_accepted", self.publish_accepted.map(|n| n as f64));
            j.opt_num("publish_refused", self.publish_refused.map(|n| n as f64));
            j.opt_num("publish_seconds", self.publish_seconds);
            j.num("expected", c.expected as f64);
            j.num("delivered", c.distinct as f64);
            j.num("received", c.received as f64);
            j.num("lost", c.lost as f64);
            j.num("dup", c.duplicate as f64);
            j.num("out_of_order", c.out_of_order as f64);
            j.num("unexpected", c.unexpected as f64);
            j.num("unstamped", c.unstamped as f64);
            j.opt_num("delivered_per_sec", self.delivered_per_sec);
            let l = &self.latency;
            j.num("latency_samples", l.samples as f64);
            for (k, v) in [
                ("latency_p50_us", l.p50),
                ("latency_p90_us", l.p90),
                ("latency_p99_us", l.p99),
                ("latency_p999_us", l.p999),
                ("latency_max_us", l.max),
            ] {
                j.num(k, v as f64 / 1000.0);
            }
            j.num("latency_mean_us", l.mean / 1000.0);
        }
        j.num("phase_seconds", self.phase_seconds);
        j.num("bench_cpu_seconds", self.bench_cpu_seconds);
        j.num("bench_cpu_cores", self.bench_cores());
        j.opt_num("server_cpu_seconds", self.server_cpu_seconds);
        j.opt_num("rx_bytes", self.rx_bytes.map(|b| b as f64));
        j.opt_num("server_rss_bytes", self.server_rss_bytes.map(|b| b as f64));
        j.opt_num("rss_per_conn_bytes", self.rss_per_conn_bytes);
        j.opt_num(
            "rss_marginal_per_conn_bytes",
            self.rss_marginal_per_conn_bytes,
        );
        j.opt_num("host_load_1m", self.host_load);
        j.num("host_cores", self.host_cores as f64);
        if let Some(st) = &self.storm {
            j.num("warmup_messages", st.warmup_messages as f64);
            j.num("dropped", st.dropped as f64);
            j.num("resumed", st.resumed as f64);
            j.num("resume_failed", st.resume_failed as f64);
            j.opt_num("reconnect_seconds", st.reconnect_seconds);
            j.opt_num("catch_up_seconds", st.catch_up_seconds);
            j.num("caught_up", st.caught_up as f64);
            j.num("gaps", st.gaps as f64);
            j.opt_num(
                "server_rss_before_storm_bytes",
                st.rss_before_bytes.map(|b| b as f64),
            );
            j.opt_num("server_peak_rss_bytes", st.rss_peak_bytes.map(|b| b as f64));
            j.opt_num("server_vmhwm_bytes", st.rss_hwm_bytes.map(|b| b as f64));
        }
        j.opt_str("error", self.first_error.as_deref());
        j.opt_str("publish_error", self.publish_error.as_deref());
        j.finish()
    }
}

/// A flat JSON object writer (keys are ours; string values are escaped).
#[derive(Default)]
struct Json(Vec<u8>);

impl Json {
    fn key(&mut self, k: &str) {
        self.0.push(if self.0.is_empty() { b'{' } else { b',' });
        crate::proto::json::write_string(&mut self.0, k);
        self.0.push(b':');
    }
    fn str(&mut self, k: &str, v: &str) {
        self.key(k);
        crate::proto::json::write_string(&mut self.0, v);
    }
    fn opt_str(&mut self, k: &str, v: Option<&str>) {
        match v {
            Some(v) => self.str(k, v),
            None => self.null(k),
        }
    }
    fn num(&mut self, k: &str, v: f64) {
        self.key(k);
        if !v.is_finite() {
            self.0.extend_from_slice(b"null");
        } else if v.fract() == 0.0 && v.abs() < 1e15 {
            let _ = std::io::Write::write_fmt(&mut self.0, format_args!("{}", v as i64));
        } else {
            let _ = std::io::Write::write_fmt(&mut self.0, format_args!("{v:.3}"));
        }
    }
    fn opt_num(&mut self, k: &str, v: Option<f64>) {
        match v {
            Some(v) => self.num(k, v),
            None => self.null(k),
        }
    }
    fn null(&mut self, k: &str) {
        self.key(k);
        self.0.extend_from_slice(b"null");
    }
    fn finish(mut self) -> String {
        if self.0.is_empty() {
            self.0.push(b'{');
        }
        self.0.push(b'}');
        String::from_utf8(self.0).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_object_is_valid_with_and_without_a_server_pid() {
        let mut r = Report {
            mode: "fanout",
            transport: "ws".into(),
            messages: Some(10),
            first_error: Some("quote \" and \\ back".into()),
            ..Report::default()
        };
        let mut scratch = crate::proto::json::JsonScratch::new();
        assert!(scratch.is_valid(r.json().as_bytes()), "{}", r.json());
        assert!(r.json().contains("\"rss_per_conn_bytes\":null"));
        r.rss_per_conn_bytes = Some(1234.5);
        r.phase_seconds = 2.0;
        assert!(scratch.is_valid(r.json().as_bytes()), "{}", r.json());
        assert!(r.json().contains("\"rss_per_conn_bytes\":1234.500"));
        assert!(!r.table().is_empty());
        r.storm = Some(StormFigures {
            catch_up_seconds: Some(0.5),
            rss_peak_bytes: Some(1 << 20),
            ..StormFigures::default()
        });
        assert!(scratch.is_valid(r.json().as_bytes()), "{}", r.json());
        assert!(r.json().contains("\"catch_up_seconds\":0.500"));
        assert!(r.table().contains("caught up"), "{}", r.table());
    }
}
