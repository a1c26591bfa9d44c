//! `ringcast bench`: the fan-out load generator (latency, throughput, loss), the
//! idle-connection mode (connect rate, server memory per connection) and the
//! reconnect-storm mode (resume of every client at once).
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
//! A storm run (`ringcast bench storm`) goes through its own phases:
//!
//! | phase | what happens | what is measured |
//! |---|---|---|
//! | connect | as above | connect time; server RSS |
//! | warm-up | `--warmup-per-topic` messages per topic; wait until every subscriber has them | (every client now has a last id) |
//! | drop | every subscriber shuts its socket down at once; wait until all ended | server RSS before the drop |
//! | publish | `--messages` more, while nobody listens | publish rate, answers |
//! | reconnect | all reconnect with their last id (paced by `--connect-concurrency`) until every one has every message | time to reconnect, time to catch up, lost, dup, reordered, gaps, peak server RSS |
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
pub mod tls;
pub mod wire;

use std::io::{IsTerminal, Write as _};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{
    BenchArgs, BenchMode, BenchPublishArgs, FanoutArgs, IdleArgs, PayloadMode, StormArgs,
    SubscriberArgs,
};
use pubs::{PubPlan, PubProgress, Published, Publisher, Running};
use report::{Latency, Report, StormFigures};
use stats::Counts;
use sub::{Shared, SubPlan};
use sys::ServerProc;
use target::{HttpTarget, PublishTarget};

/// Runs `ringcast bench` and prints its report (table, or JSON with `--json`).
pub fn main(args: BenchArgs) -> Result<(), String> {
    let (report, json) = match args.mode {
        Some(BenchMode::Idle(a)) => (run_idle(&a)?, a.subs.json),
        Some(BenchMode::Storm(a)) => (run_storm(&a)?, a.subs.json),
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

/// Subscriber setup shared by every mode.
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
    resume: bool,
) -> Result<Setup, String> {
    if s.connections == 0 || s.topics == 0 || s.source_ips == 0 {
        return Err("--connections, --topics and --source-ips must be at least 1".into());
    }
    let targets = s
        .urls
        .iter()
        .map(|u| HttpTarget::parse(u))
        .collect::<Result<Vec<_>, _>>()?;
    let limit = crate::netio::raise_nofile_limit().map_or(0, |(_, now)| now);
    if limit > 0 && s.connections as u64 + 64 > limit {
        return Err(format!(
            "{} connections need more than this process's {limit} open files; \
             run several bench processes (see --help)",
            s.connections
        ));
    }
    let tls = if targets.iter().any(|t| t.tls) {
        Some(tls::client_config(s.tls_ca.as_deref(), s.tls_insecure)?)
    } else {
        None
    };
    let mut kinds: Vec<&str> = targets.iter().map(|t| t.transport.label()).collect();
    kinds.dedup();
    let mut transport = if kinds.len() == 1 {
        kinds[0].to_string()
    } else {
        "mixed".into()
    };
    if tls.is_some() {
        transport.push_str("+tls");
    }
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
        ws_deflate: s.ws_deflate,
        payload,
        expected,
        warmup,
        uring: monoio::utils::detect_uring(),
        tls,
        resume,
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
        false,
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
    let setup = setup(s, a.pubs.payload, expected, warmup, false)?;
    let publisher = Publisher::connect(pub_plan(&a.pubs, &setup, 0, a.messages)?)?;
    let progress = Progress::new(s.quiet);
    let c = connect_all(s, &setup, &progress)?;
    let subscribed = c.require_subscribers()?;

    // Publish.
    let cpu0 = sys::self_cpu_seconds();
    let server_cpu0 = setup.server.and_then(|p| p.cpu_seconds().ok());
    let rx0 = c.shared.rx_bytes.load(Ordering::Relaxed);
    let phase_start = Instant::now();
    let pub_progress = Arc::new(PubProgress::default());
    let pub_thread = start_publisher(publisher, &pub_progress, a.drain)?;
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
    let (published, running) = match join_publisher(pub_thread) {
        Ok(done) => done,
        Err(e) => {
            c.stop();
            return Err(e);
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
    // Read once the threads stopped, like the counts: bytes and deliveries cover
    // the same messages even when subscribers were still catching up.
    let rx_bytes = shared.rx_bytes.load(Ordering::Relaxed) - rx0;
    running.close();
    finish_report(&mut r, &shared);
    let hist = shared
        .hist
        .lock()
        .map(|h| h.clone())
        .unwrap_or_else(|_| stats::latency_histogram());
    let last_rx = shared.last_rx_ns.load(Ordering::Relaxed);
    r.add_publish(&a.pubs, a.messages, &pub_progress, &published);
    r.counts = counts;
    r.delivered_per_sec = (last_rx > published.start_ns)
        .then(|| counts.distinct as f64 / ((last_rx - published.start_ns) as f64 / 1e9));
    r.latency = Latency::from_histogram(&hist);
    r.phase_seconds = phase_seconds;
    r.bench_cpu_seconds = bench_cpu;
    r.server_cpu_seconds = server_cpu;
    r.rx_bytes = Some(rx_bytes);
    Ok(r)
}

/// The publisher's plan for messages `first..messages` of a run over `setup`'s topics.
fn pub_plan(
    p: &BenchPublishArgs,
    setup: &Setup,
    first: u64,
    messages: u64,
) -> Result<PubPlan, String> {
    Ok(PubPlan {
        target: PublishTarget::parse(&p.publish)?,
        topics: setup.plan.topics.clone(),
        first,
        messages,
        rate: p.rate.max(0.0),
        window: p.window,
        payload_size: p.payload_size,
        payload_json: p.payload_json,
        ws_body: p.publish_ws_body.clone(),
    })
}

type PublisherThread = std::thread::JoinHandle<Result<(Published, Running), String>>;

/// Runs `publisher` on its own thread (see [`Publisher::run`]).
fn start_publisher(
    publisher: Publisher,
    progress: &Arc<PubProgress>,
    answer_timeout: Duration,
) -> Result<PublisherThread, String> {
    let pp = progress.clone();
    std::thread::Builder::new()
        .name("bench-pub".into())
        .spawn(move || publisher.run(pp, answer_timeout))
        .map_err(|e| format!("cannot start the publisher: {e}"))
}

fn join_publisher(t: PublisherThread) -> Result<(Published, Running), String> {
    t.join()
        .map_err(|_| String::from("the publisher thread panicked"))?
}

impl Connected {
    /// How many subscribed; an error with the first reason when none did.
    fn require_subscribers(&self) -> Result<usize, String> {
        let subscribed = self.shared.connected.load(Ordering::Relaxed);
        if subscribed > 0 {
            return Ok(subscribed);
        }
        let why = self.shared.first_error.lock().ok().and_then(|e| e.clone());
        Err(format!(
            "no subscriber connected: {}",
            why.unwrap_or_default()
        ))
    }
}

impl Report {
    /// The publish rows: what was published and how it was answered.
    fn add_publish(
        &mut self,
        p: &BenchPublishArgs,
        messages: u64,
        progress: &PubProgress,
        published: &Published,
    ) {
        let mut sample = Vec::new();
        payload::encode(&mut sample, messages, sys::now_ns(), p.payload_size);
        self.publish = Some(
            PublishTarget::parse(&p.publish)
                .map(|t| t.label())
                .unwrap_or("?"),
        );
        self.messages = Some(messages);
        self.payload_bytes = Some(sample.len());
        self.publish_accepted = Some(progress.accepted.load(Ordering::Relaxed));
        self.publish_refused = Some(progress.refused.load(Ordering::Relaxed));
        self.publish_error = progress.first_error.lock().ok().and_then(|e| e.clone());
        self.publish_seconds = Some((published.written_ns - published.start_ns) as f64 / 1e9);
    }
}

/// The server's largest RSS seen while a phase runs (`VmRSS`, polled).
struct RssPeak {
    server: Option<ServerProc>,
    peak: Option<u64>,
}

impl RssPeak {
    fn sample(&mut self) {
        if let Some(rss) = self.server.and_then(|p| p.rss_bytes().ok()) {
            self.peak = Some(self.peak.map_or(rss, |p| p.max(rss)));
        }
    }
}

/// Waits (polling every 5 ms, sampling `rss`) until `done` says the phase is over or
/// `timeout` passes; `status` is the progress line, printed every second. Returns
/// whether the phase ended in time.
fn wait_phase(
    progress: &Progress,
    timeout: Duration,
    rss: &mut RssPeak,
    mut done: impl FnMut() -> bool,
    status: impl Fn() -> String,
) -> bool {
    // `None`: no deadline (a timeout too long to add).
    let deadline = Instant::now().checked_add(timeout);
    let mut last_print = Instant::now();
    loop {
        rss.sample();
        if done() {
            return true;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            progress.line(&format!("{} (timed out)", status()));
            return false;
        }
        if last_print.elapsed() >= Duration::from_secs(1) {
            last_print = Instant::now();
            progress.line(&status());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Publishes with `publisher` on its thread and waits until every message of the run
/// is answered (WebSocket publishes too, whose answers the publisher does not wait
/// for), at most `timeout` for the answers.
fn publish_phase(
    publisher: Publisher,
    count: u64,
    timeout: Duration,
    progress: &Progress,
    rss: &mut RssPeak,
) -> Result<(Published, Arc<PubProgress>), String> {
    let pp = Arc::new(PubProgress::default());
    let thread = start_publisher(publisher, &pp, timeout)?;
    wait_phase(
        progress,
        Duration::MAX,
        rss,
        || thread.is_finished(),
        || format!("publishing {}/{count}", pp.sent.load(Ordering::Relaxed)),
    );
    let (published, running) = join_publisher(thread)?;
    wait_phase(
        progress,
        timeout,
        rss,
        || pp.answered() >= count,
        || format!("publish answers {}/{count}", pp.answered()),
    );
    running.close();
    Ok((published, pp))
}

fn run_storm(a: &StormArgs) -> Result<Report, String> {
    let s = &a.subs;
    if a.warmup_per_topic == 0 {
        return Err(
            "--warmup-per-topic must be at least 1: a client resumes from the last \
                    id it received"
                .into(),
        );
    }
    let warmup_total = a.warmup_per_topic * s.topics as u64;
    let total = warmup_total + a.messages;
    let expected = (0..s.topics)
        .map(|k| per_topic(total, s.topics, k))
        .collect();
    let warmup = (0..s.topics)
        .map(|k| per_topic(warmup_total, s.topics, k))
        .collect();
    let setup = setup(s, a.pubs.payload, expected, warmup, true)?;
    // Both publish connections first, so that a wrong publish address fails at once.
    let warm_publisher = Publisher::connect(pub_plan(&a.pubs, &setup, 0, warmup_total)?)?;
    let storm_publisher = Publisher::connect(pub_plan(&a.pubs, &setup, warmup_total, total)?)?;
    let progress = Progress::new(s.quiet);
    let c = connect_all(s, &setup, &progress)?;
    let mut r = base_report("storm", s, &setup, &c);
    let result = storm_phases(
        a,
        &setup,
        &c,
        [warm_publisher, storm_publisher],
        &progress,
        &mut r,
    );
    let (shared, counts) = c.stop();
    progress.done();
    result?;
    finish_report(&mut r, &shared);
    r.counts = counts;
    Ok(r)
}

/// Warm-up, drop, publish and reconnect (see the module doc), on connected
/// subscribers; fills the storm's rows of `r` (its measured phase runs from the drop
/// until all caught up).
fn storm_phases(
    a: &StormArgs,
    setup: &Setup,
    c: &Connected,
    [warm_publisher, storm_publisher]: [Publisher; 2],
    progress: &Progress,
    r: &mut Report,
) -> Result<(), String> {
    let subscribed = c.require_subscribers()?;
    let shared = &c.shared;
    let storm = &shared.storm;
    let timeout = a.phase_timeout;
    let mut rss = RssPeak {
        server: setup.server,
        peak: None,
    };
    let load = |n: &std::sync::atomic::AtomicUsize| n.load(Ordering::Relaxed);
    let mut figures = StormFigures {
        warmup_messages: a.warmup_per_topic * setup.plan.topics.len() as u64,
        ..StormFigures::default()
    };

    publish_phase(
        warm_publisher,
        figures.warmup_messages,
        timeout,
        progress,
        &mut rss,
    )?;
    let warmed = wait_phase(
        progress,
        timeout,
        &mut rss,
        || load(&shared.warmed) + load(&shared.disconnected) >= subscribed,
        || format!("warm-up: {}/{subscribed} have it", load(&shared.warmed)),
    );
    if !warmed {
        return Err(format!(
            "only {} of {subscribed} subscribers got the warm-up messages in {timeout:?}",
            load(&shared.warmed)
        ));
    }

    let cpu0 = sys::self_cpu_seconds();
    let server_cpu0 = setup.server.and_then(|p| p.cpu_seconds().ok());
    let phase_start = Instant::now();
    figures.rss_before_bytes = setup.server.and_then(|p| p.rss_bytes().ok());
    rss.peak = None;
    storm.drop_all.store(true, Ordering::Relaxed);
    wait_phase(
        progress,
        timeout,
        &mut rss,
        || load(&storm.dropped) + load(&shared.disconnected) >= subscribed,
        || format!("dropping: {}/{subscribed}", load(&storm.dropped)),
    );
    figures.dropped = load(&storm.dropped);

    let (published, pp) = publish_phase(storm_publisher, a.messages, timeout, progress, &mut rss)?;

    let gone_before = load(&shared.disconnected);
    let start_ns = sys::now_ns();
    storm.reconnect_all.store(true, Ordering::Relaxed);
    wait_phase(
        progress,
        timeout,
        &mut rss,
        || {
            let gone = load(&storm.resume_failed) + load(&shared.disconnected) - gone_before;
            load(&shared.complete) + gone >= subscribed
        },
        || {
            format!(
                "reconnecting: {}/{subscribed} resumed, {} caught up, {} failed",
                load(&storm.resumed),
                load(&shared.complete),
                load(&storm.resume_failed)
            )
        },
    );
    r.phase_seconds = phase_start.elapsed().as_secs_f64();
    r.bench_cpu_seconds = sys::self_cpu_seconds() - cpu0;
    r.server_cpu_seconds = setup
        .server
        .and_then(|p| Some(p.cpu_seconds().ok()? - server_cpu0?));
    let since_start = |ns: u64| (ns.saturating_sub(start_ns)) as f64 / 1e9;
    figures.resumed = load(&storm.resumed);
    figures.resume_failed = load(&storm.resume_failed);
    figures.reconnect_seconds =
        (figures.resumed > 0).then(|| since_start(storm.last_resumed_ns.load(Ordering::Relaxed)));
    figures.caught_up = load(&shared.complete);
    figures.catch_up_seconds = (figures.caught_up >= subscribed)
        .then(|| since_start(shared.last_complete_ns.load(Ordering::Relaxed)));
    figures.gaps = storm.gaps.load(Ordering::Relaxed);
    figures.rss_peak_bytes = rss.peak;
    figures.rss_hwm_bytes = setup.server.and_then(|p| p.peak_rss_bytes().ok());
    r.add_publish(&a.pubs, a.messages, &pp, &published);
    r.storm = Some(figures);
    Ok(())
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
