//! `ringcast bench`: the fan-out load generator (latency, throughput, loss) and the
//! idle-connection mode (connect rate, server memory per connection).
//!
//! A fan-out run goes through fixed phases, driven from the calling thread:
//!
//! | phase | what happens | what is measured |
//! |---|---|---|
//! | connect | the publisher connects; `threads` runtimes open every subscriber | connect time and rate; server RSS before and after |
//! | publish | one publisher writes `messages` stamped payloads, round-robin over topics | publish rate, answers |
//! | drain | wait until every subscriber has all its messages, at most `--drain` after the last publish | latency, lost, dup, reordered |
//! | report | threads stop and hand back their counts | bench and server CPU over publish + drain |
//!
//! Modules: [`sub`] (subscriber threads), [`pubs`] (the publisher), [`wire`]
//! (client-side codecs), [`payload`] (the stamp), [`stats`] (sequence tracking),
//! [`report`] (table and JSON), [`target`] (URL templates), [`sys`] (clocks, /proc).

pub mod payload;
pub mod pubs;
pub mod report;
pub mod stats;
pub mod sub;
pub mod sys;
pub mod target;
pub mod wire;

use std::io::{IsTerminal, Write as _};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{BenchArgs, BenchMode, FanoutArgs, IdleArgs, PayloadMode, SubscriberArgs};
use pubs::{PubPlan, PubProgress, Publisher};
use report::{Latency, Report};
use stats::Counts;
use sub::{Shared, SubPlan};
use sys::ServerProc;
use target::{HttpTarget, PublishTarget};

/// Runs `ringcast bench` and prints its report (table, or JSON with `--json`).
pub fn main(args: BenchArgs) -> Result<(), String> {
    let (report, json) = match args.mode {
        Some(BenchMode::Idle(a)) => (run_idle(&a)?, a.subs.json),
        None => (run_fanout(&args.fanout)?, args.fanout.subs.json),
    };
    if json {
        println!("{}", report.json());
    } else {
        println!("{}", report.table());
    }
    Ok(())
}

/// How many of the messages `0..total`, dealt round-robin over `topics`, go to topic `k`.
pub fn per_topic(total: u64, topics: usize, k: usize) -> u64 {
    let topics = topics as u64;
    total / topics + u64::from((k as u64) < total % topics)
}

/// Subscriber setup shared by both modes.
struct Setup {
    plan: Arc<SubPlan>,
    server: Option<ServerProc>,
    transport: String,
}

fn setup(
    s: &SubscriberArgs,
    payload: PayloadMode,
    expected: Vec<u64>,
    warmup: Vec<u64>,
) -> Result<Setup, String> {
    if s.connections == 0 || s.topics == 0 || s.source_ips == 0 {
        return Err("--connections, --topics and --source-ips must be at least 1".into());
    }
    let targets = s
        .urls
        .iter()
        .map(|u| HttpTarget::parse(u))
        .collect::<Result<Vec<_>, _>>()?;
    let limit = sys::raise_nofile_limit();
    if limit > 0 && s.connections as u64 + 64 > limit {
        return Err(format!(
            "{} connections need more than this process's {limit} open files; \
             run several bench processes (see --help)",
            s.connections
        ));
    }
    let mut kinds: Vec<&str> = targets.iter().map(|t| t.transport.label()).collect();
    kinds.dedup();
    let transport = if kinds.len() == 1 {
        kinds[0].to_string()
    } else {
        "mixed".into()
    };
    let threads = s
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, s.connections);
    let plan = SubPlan {
        targets,
        topics: (0..s.topics)
            .map(|k| format!("{}{k}", s.topic_prefix))
            .collect(),
        connections: s.connections,
        threads,
        source_ips: s.source_ips,
        connect_concurrency: s.connect_concurrency.max(1),
        ws_subscribe_body: s.ws_subscribe_body.clone(),
        payload,
        expected,
        warmup,
        uring: monoio::utils::detect_uring(),
    };
    Ok(Setup {
        plan: Arc::new(plan),
        server: s.server_pid.map(|pid| ServerProc { pid }),
        transport,
    })
}

/// Writes a progress line to stderr: rewritten in place on a terminal.
struct Progress {
    quiet: bool,
    tty: bool,
    started: Instant,
}

impl Progress {
    fn new(quiet: bool) -> Self {
        Self {
            quiet,
            tty: std::io::stderr().is_terminal(),
            started: Instant::now(),
        }
    }

    fn line(&self, text: &str) {
        if self.quiet {
            return;
        }
        let t = self.started.elapsed().as_secs_f64();
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[2K[{t:6.1}s] {text}");
        } else {
            let _ = writeln!(err, "[{t:6.1}s] {text}");
        }
    }

    fn done(&self) {
        if !self.quiet && self.tty {
            let _ = writeln!(std::io::stderr());
        }
    }
}

/// The connect phase: starts the subscriber threads and waits until every
/// connection has subscribed or failed (or the timeout).
struct Connected {
    shared: Arc<Shared>,
    threads: Vec<std::thread::JoinHandle<Counts>>,
    seconds: f64,
    rss_before: Option<u64>,
    /// Connections established and the server's RSS when half were.
    rss_half: Option<(usize, u64)>,
    rss_after: Option<u64>,
}

fn connect_all(
    s: &SubscriberArgs,
    setup: &Setup,
    progress: &Progress,
) -> Result<Connected, String> {
    let rss_before = setup.server.and_then(|p| p.rss_bytes().ok());
    let shared = Arc::new(Shared::new());
    let n = setup.plan.connections;
    // With a server to measure, the second half waits until the server's RSS is
    // read after the first: what the second half adds is the cost of one more
    // connection, without the fixed costs of the first ones.
    let half = n / 2;
    let measure_half = setup.server.is_some() && half > 0;
    if measure_half {
        shared.admit.store(half, Ordering::Relaxed);
    }
    let started = Instant::now();
    let threads = sub::spawn(setup.plan.clone(), shared.clone())
        .map_err(|e| format!("cannot start subscriber threads: {e}"))?;
    let deadline = started + s.connect_timeout;
    let mut last_print = Instant::now();
    let mut rss_half = None;
    let mut paused = Duration::ZERO;
    loop {
        let ok = shared.connected.load(Ordering::Relaxed);
        let failed = shared.failed.load(Ordering::Relaxed);
        if ok + failed >= n || Instant::now() >= deadline {
            break;
        }
        if measure_half && shared.admit.load(Ordering::Relaxed) == half && ok + failed >= half {
            let pause = Instant::now();
            std::thread::sleep(Duration::from_millis(200));
            rss_half = setup.server.and_then(|p| Some((ok, p.rss_bytes().ok()?)));
            shared.admit.store(usize::MAX, Ordering::Relaxed);
            paused += pause.elapsed();
        }
        if last_print.elapsed() >= Duration::from_secs(1) {
            last_print = Instant::now();
            progress.line(&format!("connecting {ok}/{n}, {failed} failed"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // Released in any case (a deadline above, or a failed half).
    shared.admit.store(usize::MAX, Ordering::Relaxed);
    let seconds = (started.elapsed() - paused).as_secs_f64();
    // Give the server a moment to settle its accounting before reading its RSS.
    let rss_after = setup.server.and_then(|p| {
        std::thread::sleep(Duration::from_millis(200));
        p.rss_bytes().ok()
    });
    let ok = shared.connected.load(Ordering::Relaxed);
    progress.line(&format!(
        "connected {ok}/{n} in {seconds:.2}s, {} failed",
        shared.failed.load(Ordering::Relaxed)
    ));
    Ok(Connected {
        shared,
        threads,
        seconds,
        rss_before,
        rss_half,
        rss_after,
    })
}

impl Connected {
    /// Stops the subscriber threads and sums their counts.
    fn stop(self) -> (Arc<Shared>, Counts) {
        self.shared.stop.store(true, Ordering::Relaxed);
        let mut counts = Counts::default();
        for t in self.threads {
            if let Ok(c) = t.join() {
                counts.merge(&c);
            }
        }
        (self.shared, counts)
    }

    fn rss_per_conn(&self) -> Option<f64> {
        let ok = self.shared.connected.load(Ordering::Relaxed);
        match (self.rss_before, self.rss_after) {
            (Some(a), Some(b)) if ok > 0 => Some((b as f64 - a as f64) / ok as f64),
            _ => None,
        }
    }

    fn rss_marginal_per_conn(&self) -> Option<f64> {
        let ok = self.shared.connected.load(Ordering::Relaxed);
        match (self.rss_half, self.rss_after) {
            (Some((half, a)), Some(b)) if ok > half => {
                Some((b as f64 - a as f64) / (ok - half) as f64)
            }
            _ => None,
        }
    }
}

fn base_report(mode: &'static str, s: &SubscriberArgs, setup: &Setup, c: &Connected) -> Report {
    Report {
        mode,
        transport: setup.transport.clone(),
        connections: setup.plan.connections,
        threads: setup.plan.threads,
        topics: s.topics,
        connect_seconds: c.seconds,
        server_rss_bytes: c.rss_after,
        rss_per_conn_bytes: c.rss_per_conn(),
        rss_marginal_per_conn_bytes: c.rss_marginal_per_conn(),
        ..Report::default()
    }
}

fn finish_report(r: &mut Report, shared: &Shared) {
    r.connected = shared.connected.load(Ordering::Relaxed);
    r.connect_failed = shared.failed.load(Ordering::Relaxed);
    r.disconnected = shared.disconnected.load(Ordering::Relaxed);
    r.first_error = shared.first_error.lock().ok().and_then(|e| e.clone());
    r.host_load = sys::load_average();
    r.host_cores = std::thread::available_parallelism().map_or(1, |n| n.get());
}

fn run_idle(a: &IdleArgs) -> Result<Report, String> {
    let s = &a.subs;
    let setup = setup(
        s,
        PayloadMode::Envelope,
        vec![0; s.topics],
        vec![0; s.topics],
    )?;
    let progress = Progress::new(s.quiet);
    let cpu0 = sys::self_cpu_seconds();
    let server_cpu0 = setup.server.and_then(|p| p.cpu_seconds().ok());
    let c = connect_all(s, &setup, &progress)?;
    let bench_cpu = sys::self_cpu_seconds() - cpu0;
    let server_cpu = setup
        .server
        .and_then(|p| Some(p.cpu_seconds().ok()? - server_cpu0?));
    let mut r = base_report("idle", s, &setup, &c);
    r.phase_seconds = c.seconds;
    r.bench_cpu_seconds = bench_cpu;
    r.server_cpu_seconds = server_cpu;
    let hold_until = Instant::now() + a.hold;
    while Instant::now() < hold_until {
        std::thread::sleep(
            Duration::from_millis(200).min(hold_until.saturating_duration_since(Instant::now())),
        );
        let dropped = c.shared.disconnected.load(Ordering::Relaxed);
        progress.line(&format!(
            "holding {} connections, {dropped} dropped, {:.0}s left",
            c.shared.connected.load(Ordering::Relaxed) - dropped,
            hold_until
                .saturating_duration_since(Instant::now())
                .as_secs_f64()
        ));
    }
    // RSS again at the end of the hold: idle connections that cost memory later
    // (heartbeats, timers) show here.
    if let Some(rss) = setup.server.and_then(|p| p.rss_bytes().ok()) {
        r.server_rss_bytes = Some(rss);
    }
    let (shared, _) = c.stop();
    progress.done();
    finish_report(&mut r, &shared);
    Ok(r)
}

fn run_fanout(a: &FanoutArgs) -> Result<Report, String> {
    let s = &a.subs;
    if a.warmup > a.messages {
        return Err("--warmup cannot exceed --messages".into());
    }
    let expected = (0..s.topics)
        .map(|k| per_topic(a.messages, s.topics, k))
        .collect();
    let warmup = (0..s.topics)
        .map(|k| per_topic(a.warmup, s.topics, k))
        .collect();
    let setup = setup(s, a.payload, expected, warmup)?;
    let pub_plan = PubPlan {
        target: PublishTarget::parse(&a.publish)?,
        topics: setup.plan.topics.clone(),
        messages: a.messages,
        rate: a.rate.max(0.0),
        window: a.window,
        payload_size: a.payload_size,
        ws_body: a.publish_ws_body.clone(),
    };
    let payload_bytes = {
        let mut p = Vec::new();
        payload::encode(&mut p, a.messages, sys::now_ns(), a.payload_size);
        p.len()
    };
    let publisher = Publisher::connect(pub_plan)?;
    let progress = Progress::new(s.quiet);
    let c = connect_all(s, &setup, &progress)?;
    let subscribed = c.shared.connected.load(Ordering::Relaxed);
    if subscribed == 0 {
        let (shared, _) = c.stop();
        let why = shared.first_error.lock().ok().and_then(|e| e.clone());
        return Err(format!(
            "no subscriber connected: {}",
            why.unwrap_or_default()
        ));
    }

    // Publish.
    let cpu0 = sys::self_cpu_seconds();
    let server_cpu0 = setup.server.and_then(|p| p.cpu_seconds().ok());
    let phase_start = Instant::now();
    let pub_progress = Arc::new(PubProgress::default());
    let pp = pub_progress.clone();
    let drain = a.drain;
    let pub_thread = std::thread::Builder::new()
        .name("bench-pub".into())
        .spawn(move || publisher.run(pp, drain))
        .map_err(|e| format!("cannot start the publisher: {e}"))?;
    let shared = c.shared.clone();
    let mut last = (Instant::now(), 0u64);
    let status = |last: &mut (Instant, u64)| {
        let delivered = shared.delivered.load(Ordering::Relaxed);
        let dt = last.0.elapsed().as_secs_f64().max(1e-9);
        let rate = (delivered - last.1) as f64 / dt;
        *last = (Instant::now(), delivered);
        let p99 = shared
            .hist
            .lock()
            .map(|h| h.value_at_quantile(0.99))
            .unwrap_or(0);
        format!(
            "sent {}/{}  delivered {} ({}/s)  p99 {:.2} ms  subscribers {}/{}",
            pub_progress.sent.load(Ordering::Relaxed),
            a.messages,
            delivered,
            report::si(rate),
            p99 as f64 / 1e6,
            shared.complete.load(Ordering::Relaxed),
            subscribed
        )
    };
    while !pub_thread.is_finished() {
        std::thread::sleep(Duration::from_millis(50));
        if last.0.elapsed() >= Duration::from_secs(1) {
            progress.line(&status(&mut last));
        }
    }
    let (published, running) = match pub_thread.join() {
        Ok(Ok(done)) => done,
        Ok(Err(e)) => {
            c.stop();
            return Err(e);
        }
        Err(_) => {
            c.stop();
            return Err("the publisher thread panicked".into());
        }
    };

    // Drain: until every live subscriber is complete, bounded by --drain.
    let drain_until = Instant::now() + a.drain;
    loop {
        let live =
            shared.connected.load(Ordering::Relaxed) - shared.disconnected.load(Ordering::Relaxed);
        if shared.complete.load(Ordering::Relaxed) >= live || Instant::now() >= drain_until {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
        if last.0.elapsed() >= Duration::from_secs(1) {
            progress.line(&format!("draining: {}", status(&mut last)));
        }
    }
    let phase_seconds = phase_start.elapsed().as_secs_f64();
    let bench_cpu = sys::self_cpu_seconds() - cpu0;
    let server_cpu = setup
        .server
        .and_then(|p| Some(p.cpu_seconds().ok()? - server_cpu0?));
    progress.line(&status(&mut last));
    progress.done();

    let mut r = base_report("fanout", s, &setup, &c);
    let (shared, counts) = c.stop();
    running.close();
    finish_report(&mut r, &shared);
    let hist = shared
        .hist
        .lock()
        .map(|h| h.clone())
        .unwrap_or_else(|_| stats::latency_histogram());
    let last_rx = shared.last_rx_ns.load(Ordering::Relaxed);
    r.publish = Some(
        PublishTarget::parse(&a.publish)
            .map(|t| t.label())
            .unwrap_or("?"),
    );
    r.messages = Some(a.messages);
    r.payload_bytes = Some(payload_bytes);
    r.publish_accepted = Some(pub_progress.accepted.load(Ordering::Relaxed));
    r.publish_refused = Some(pub_progress.refused.load(Ordering::Relaxed));
    r.publish_error = pub_progress.first_error.lock().ok().and_then(|e| e.clone());
    r.publish_seconds = Some((published.written_ns - published.start_ns) as f64 / 1e9);
    r.counts = counts;
    r.delivered_per_sec = (last_rx > published.start_ns)
        .then(|| counts.distinct as f64 / ((last_rx - published.start_ns) as f64 / 1e9));
    r.latency = Latency::from_histogram(&hist);
    r.phase_seconds = phase_seconds;
    r.bench_cpu_seconds = bench_cpu;
    r.server_cpu_seconds = server_cpu;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_dealt_round_robin_over_topics() {
        assert_eq!(
            (0..3).map(|k| per_topic(10, 3, k)).collect::<Vec<_>>(),
            [4, 3, 3]
        );
        assert_eq!(per_topic(200, 1, 0), 200);
        assert_eq!((0..4).map(|k| per_topic(2, 4, k)).sum::<u64>(), 2);
    }
}
