//! Reliability under churn, dead peers and slow consumers: what the registry,
//! the timer wheel, the descriptors and the process memory look like after
//! clients come and go abruptly, stop answering, or stop reading.
//!
//! Figures are printed with `eprintln!` (see them with `--nocapture`).

pub mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

const MIB: u64 = 1 << 20;

/// The timer entries a core keeps without any client: one for the age limit
/// of its history, while it holds messages.
fn history_timers(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("ringcast_history_messages{"))
        .filter(|l| {
            l.rsplit_once(' ')
                .and_then(|(_, v)| v.parse::<f64>().ok())
                .is_some_and(|m| m > 0.0)
        })
        .count() as f64
}

/// Every gauge that counts clients, and the timer wheel, back to zero (but for
/// the history's age entries); returns how long it took, or panics with the
/// metrics after `timeout`.
fn wait_all_gone(server: &Server, timeout: Duration, why: &str) -> Duration {
    let t0 = Instant::now();
    let mut last = String::new();
    let ok = wait_until(timeout, || {
        last = server.metrics();
        sum_series(&last, "ringcast_connections") == 0.0
            && sum_series(&last, "ringcast_subscriptions") == 0.0
            && sum_series(&last, "ringcast_timer_entries") == history_timers(&last)
    });
    assert!(
        ok,
        "{why}: not back to zero within {timeout:?}: connections={} subscriptions={} timer_entries={}\n{}",
        sum_series(&last, "ringcast_connections"),
        sum_series(&last, "ringcast_subscriptions"),
        sum_series(&last, "ringcast_timer_entries"),
        server.stderr_tail()
    );
    t0.elapsed()
}

// ---- 1. churn --------------------------------------------------------------------

enum Sub {
    Sse(SseClient),
    Ws(WsClient),
}

impl Sub {
    fn next_n(&mut self) -> u64 {
        match self {
            Sub::Sse(c) => payload_n(&envelope(&c.next_event())),
            Sub::Ws(c) => payload_n(&c.next_envelope()),
        }
    }

    fn close(self, rst: bool) {
        match (self, rst) {
            (Sub::Sse(c), true) => c.reset(),
            (Sub::Sse(c), false) => drop(c),
            (Sub::Ws(c), true) => c.reset(),
            (Sub::Ws(c), false) => c.drop_fin(),
        }
    }
}

#[test]
fn four_hundred_clients_churning_five_times_leave_no_connection_timer_descriptor_or_memory_behind()
{
    let _serial = serial();
    raise_fd_limit();
    let server = Server::start(&[]);
    assert!(wait_until(Duration::from_secs(5), || server
        .metric_sum("ringcast_connections")
        == 0.0));
    let baseline_fds = server.settled_fd_count();
    eprintln!(
        "churn: baseline fds={baseline_fds} rss={:.1} MiB",
        server.rss() as f64 / MIB as f64
    );
    const PER_KIND: usize = 200;
    const MESSAGES: u64 = 20;
    let mut rss_per_cycle = Vec::new();
    for cycle in 0..5u64 {
        let t_connect = Instant::now();
        let mut subs = Vec::with_capacity(2 * PER_KIND);
        for i in 0..PER_KIND {
            let mut c = server.sse("topic=churn");
            c.wait_cursor();
            subs.push(Sub::Sse(c));
            subs.push(Sub::Ws(server.ws("topic=churn")));
            if i % 50 == 49 {
                server.assert_no_panic();
            }
        }
        assert!(
            wait_until(Duration::from_secs(10), || {
                let m = server.metrics();
                sum_series(&m, "ringcast_subscriptions") == (2 * PER_KIND) as f64
                    && sum_series(&m, "ringcast_connections") == (2 * PER_KIND) as f64
            }),
            "cycle {cycle}: not every client subscribed:\n{}",
            server.metrics()
        );
        let connect_time = t_connect.elapsed();
        let peak_fds = server.fd_count();

        // Four readers, each taking message k from each of its clients in turn,
        // while a publisher sends one message every 100 ms.
        let base = cycle * 1000;
        let mut groups: Vec<Vec<Sub>> = (0..4).map(|_| Vec::new()).collect();
        for (i, s) in subs.into_iter().enumerate() {
            groups[i % 4].push(s);
        }
        let readers: Vec<_> = groups
            .into_iter()
            .map(|mut group| {
                std::thread::spawn(move || {
                    for k in 0..MESSAGES {
                        for s in group.iter_mut() {
                            assert_eq!(s.next_n(), base + k, "a message out of order or lost");
                        }
                    }
                    group
                })
            })
            .collect();
        let mut publisher = Publisher::connect(&server.socket);
        let t_pub = Instant::now();
        for k in 0..MESSAGES {
            let due = t_pub + Duration::from_millis(100 * k);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            answer_id(&publisher.call(&line_n("churn", base + k)));
        }
        drop(publisher);
        let mut subs = Vec::new();
        for r in readers {
            subs.extend(r.join().expect("reader thread"));
        }
        let receive_time = t_pub.elapsed();

        // Abrupt disconnects: every other client with an RST, the rest with a FIN
        // (no WebSocket close handshake).
        let t_close = Instant::now();
        for (i, s) in subs.into_iter().enumerate() {
            s.close((i / 2) % 2 == 0);
        }
        let gone = wait_all_gone(&server, Duration::from_secs(10), "after the disconnects");
        let fds_ok = wait_until(Duration::from_secs(10), || {
            server.settled_fd_count() <= baseline_fds
        });
        let fds_after = server.settled_fd_count();
        assert!(
            fds_ok,
            "cycle {cycle}: descriptors not released: {fds_after} open, baseline {baseline_fds}\n{}",
            server.fd_listing()
        );
        let fds_time = t_close.elapsed();
        let rss_metric = server.metric("ringcast_resident_memory_bytes") as u64;
        let rss = server.rss();
        eprintln!(
            "churn cycle {cycle}: connect {connect_time:?}, receive {receive_time:?}, peak fds {peak_fds}, \
             gauges+timers at 0 after {gone:?}, fds back to {fds_after} (baseline {baseline_fds}) after {fds_time:?}, \
             rss {:.1} MiB (metric {:.1} MiB)",
            rss as f64 / MIB as f64,
            rss_metric as f64 / MIB as f64
        );
        rss_per_cycle.push(rss);
    }
    let m = server.metrics();
    eprintln!(
        "churn: closed sse={} ws={}, heartbeats={}",
        sum_series(&m, "ringcast_connections_closed_total{transport=\"sse\"}"),
        sum_series(&m, "ringcast_connections_closed_total{transport=\"ws\"}"),
        sum_series(&m, "ringcast_heartbeats_total"),
    );
    assert_eq!(
        sum_series(&m, "ringcast_connections_closed_total"),
        (5 * 2 * PER_KIND) as f64,
        "every close is counted once"
    );
    let (first, last) = (rss_per_cycle[0], *rss_per_cycle.last().unwrap());
    assert!(
        last <= first + 8 * MIB,
        "memory grew over the cycles: {:?} MiB",
        rss_per_cycle.iter().map(|r| r / MIB).collect::<Vec<_>>()
    );
    server.assert_no_panic();
}

// ---- 2. dead peers and heartbeats ---------------------------------------------------

/// A python3 WebSocket client that completes the handshake, says `ready`, then
/// sleeps without reading or writing anything (no pongs).
const SILENT_WS_PEER: &str = r#"
import socket, sys, time
host, port = sys.argv[1], int(sys.argv[2])
s = socket.create_connection((host, port))
s.sendall(b"GET /ws?topic=dead HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
          b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
buf = b""
while b"\r\n\r\n" not in buf:
    chunk = s.recv(4096)
    if not chunk:
        sys.exit(2)
    buf += chunk
print(buf.split(b"\r\n")[0].decode(), flush=True)
time.sleep(120)
"#;

#[test]
fn a_stopped_websocket_peer_is_closed_by_the_idle_timeout_while_a_live_one_stays() {
    let _serial = serial();
    let server = Server::start(&["--heartbeat", "500ms", "--idle-timeout", "1500ms"]);
    let ws = "ringcast_connections{transport=\"ws\"}";

    // A live client: reads (so tungstenite answers every ping with a pong).
    let mut live = server.ws("topic=dead");
    let mut peer = Command::new("python3")
        .arg("-c")
        .arg(SILENT_WS_PEER)
        .arg(server.addr.ip().to_string())
        .arg(server.addr.port().to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn python3");
    let mut line = [0u8; 64];
    let mut out = peer.stdout.take().unwrap();
    let n = out.read(&mut line).expect("read the peer's status line");
    let t_handshake = Instant::now();
    let status = String::from_utf8_lossy(&line[..n]).into_owned();
    assert!(status.starts_with("HTTP/1.1 101"), "handshake: {status:?}");
    // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
    assert_eq!(unsafe { libc::kill(peer.id() as i32, libc::SIGSTOP) }, 0);
    let idle_before = server.metric_sum("ringcast_idle_timeouts_total");

    // Keep the live client reading (and so answering pings) until told to stop.
    let stop_live = Arc::new(AtomicBool::new(false));
    let stop = stop_live.clone();
    let live_reader = std::thread::spawn(move || loop {
        if stop.load(Ordering::Relaxed) {
            return live;
        }
        let left = Duration::from_millis(100);
        match live.try_next(left) {
            Ok(m) => panic!("the live client got {m:?}"),
            Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::TimedOut => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => panic!("the live client was closed: {e}"),
        }
    });
    assert!(
        wait_until(Duration::from_secs(2), || server.metric_sum(ws) == 2.0),
        "both WS clients registered:\n{}",
        server.metrics()
    );
    let counted = wait_until(Duration::from_secs(10), || {
        server.metric_sum("ringcast_idle_timeouts_total") > idle_before
    });
    let counted_after = t_handshake.elapsed();
    let removed = wait_until(Duration::from_secs(10), || server.metric_sum(ws) == 1.0);
    let after = t_handshake.elapsed();
    let m = server.metrics();
    stop_live.store(true, Ordering::Relaxed);
    let live = live_reader.join().expect("live reader");
    let _ = peer.kill();
    let _ = peer.wait();
    let idle = sum_series(&m, "ringcast_idle_timeouts_total") - idle_before;
    eprintln!(
        "dead peer: idle timeout counted {counted_after:?} after its handshake, connection removed (gauge) {after:?} \
         after it (removed: {removed}; --idle-timeout 1500ms); idle_timeouts_total +{idle}; closed{{ws,idle}}={}",
        sum_series(&m, "ringcast_connections_closed_total{transport=\"ws\",reason=\"idle\"}")
    );
    assert!(
        counted && idle >= 1.0,
        "ringcast_idle_timeouts_total did not move:\n{m}"
    );
    assert!(
        removed,
        "the stopped peer was not removed within 10 s:\n{m}"
    );
    assert!(
        counted_after >= Duration::from_millis(1400)
            && counted_after <= Duration::from_millis(2500),
        "idle timeout after {counted_after:?}, not about --idle-timeout 1500ms"
    );
    assert!(
        after <= Duration::from_millis(3000),
        "the stopped peer was removed {after:?} after its handshake, long after --idle-timeout 1500ms \
         (it stays registered while the server waits for a Close reply it will never send)"
    );
    assert_eq!(
        server.metric_sum(ws),
        1.0,
        "the live client (answering pings) must stay"
    );
    drop(live);
    assert!(wait_until(Duration::from_secs(5), || server.metric_sum(ws) == 0.0));
    server.assert_no_panic();
}

#[test]
fn an_idle_sse_stream_gets_a_comment_heartbeat_at_the_configured_interval() {
    let _serial = serial();
    let server = Server::start(&["--heartbeat", "500ms", "--idle-timeout", "1500ms"]);
    let mut c = server.sse("topic=beat");
    c.wait_cursor();
    let beats_before = server.metric_sum("ringcast_heartbeats_total");
    let t0 = Instant::now();
    let mut at = Vec::new();
    let deadline = t0 + Duration::from_millis(3200);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match c.try_next_line(left) {
            Ok(line) if line.starts_with(':') => at.push(t0.elapsed()),
            Ok(line) if line.is_empty() => {}
            Ok(line) => panic!("unexpected line on an idle stream: {line:?}"),
            Err(e) if e.kind() == ErrorKind::TimedOut => break,
            Err(e) => panic!("the idle stream ended: {e}"),
        }
    }
    let beats = server.metric_sum("ringcast_heartbeats_total") - beats_before;
    let gaps: Vec<u128> = at.windows(2).map(|w| (w[1] - w[0]).as_millis()).collect();
    eprintln!(
        "sse heartbeat: {} comment lines in 3.2 s at {:?} ms; gaps {gaps:?} ms; ringcast_heartbeats_total +{beats}",
        at.len(),
        at.iter().map(|d| d.as_millis()).collect::<Vec<_>>()
    );
    assert!(
        (5..=8).contains(&at.len()),
        "expected about 6 heartbeats in 3.2 s at 500 ms, got {}",
        at.len()
    );
    for g in &gaps {
        assert!(
            (400..=700).contains(g),
            "a heartbeat gap of {g} ms, configured 500 ms: {gaps:?}"
        );
    }
    assert!(
        beats >= at.len() as f64,
        "ringcast_heartbeats_total grew by {beats}, {} seen",
        at.len()
    );
    // The stream is not closed for idleness (SSE clients send nothing).
    assert_eq!(
        server.metric_sum("ringcast_connections{transport=\"sse\"}"),
        1.0
    );
    server.assert_no_panic();
}

/// Lines on `c` until it has been quiet for `quiet`: (comment lines, `data:` lines).
fn pending_lines(c: &mut SseClient, quiet: Duration) -> (usize, usize) {
    let (mut comments, mut data) = (0, 0);
    loop {
        match c.try_next_line(quiet) {
            Ok(line) if line.starts_with(':') => comments += 1,
            Ok(line) if line.starts_with("data:") => data += 1,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::TimedOut => return (comments, data),
            Err(e) => panic!("the stream ended: {e}"),
        }
    }
}

#[test]
fn heartbeats_reach_every_idle_stream_and_none_reaches_a_stream_just_written() {
    let _serial = serial();
    let server = Server::start(&["--heartbeat", "500ms"]);
    // Idle streams, each on its own topic (the per-user pattern), and one on a
    // topic that gets a message every 100 ms.
    let mut idle: Vec<(SseClient, Instant)> = (0..200)
        .map(|i| {
            let mut c = server.sse(&format!("topic=user-{i}"));
            c.wait_cursor();
            (c, Instant::now())
        })
        .collect();
    let mut busy = server.sse("topic=busy");
    busy.wait_cursor();
    let start = Instant::now();
    let mut sent = 0;
    while start.elapsed() < Duration::from_millis(2300) {
        server.publish_ns("busy", [sent]);
        sent += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let (busy_beats, busy_data) = pending_lines(&mut busy, Duration::from_millis(100));
    assert_eq!(
        busy_data, sent as usize,
        "every message reached the busy stream"
    );
    assert_eq!(
        busy_beats, 0,
        "a stream written every 100 ms never goes 500 ms silent, yet got heartbeats"
    );
    // Each idle stream has had one heartbeat per 500 ms since it opened, up to
    // the moment its reading went quiet.
    let quiet = Duration::from_millis(40);
    for (i, (c, opened)) in idle.iter_mut().enumerate() {
        let (beats, data) = pending_lines(c, quiet);
        let silent_ms = (opened.elapsed() - quiet).as_millis() as f64;
        let expected = silent_ms / 500.0;
        assert_eq!(data, 0, "idle stream {i} got a message");
        assert!(
            beats >= 3 && (beats as f64 - expected).abs() <= 1.5,
            "idle stream {i}: {beats} heartbeats in {silent_ms} ms at 500 ms (about {expected:.1} expected)"
        );
    }
    server.assert_no_panic();
}

// ---- 4. slow consumers ------------------------------------------------------------

const MSG_BYTES: usize = 4096;

/// A publish line whose payload is `{"n":N,"pad":"xxx..."}`, about 4 KiB.
fn big_line(topic: &str, n: u64) -> String {
    let head = format!("{{\"topic\":\"{topic}\",\"data\":{{\"n\":{n},\"pad\":\"");
    let pad = MSG_BYTES.saturating_sub(head.len() + 4);
    format!("{head}{}\"}}}}", "x".repeat(pad))
}

/// The `n` after the first `"data":{"n":` in `line`.
fn n_in(line: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"data\":{\"n\":";
    let at = line.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let digits = line[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&line[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

/// A fast SSE reader for bulk checks: counts `data:` lines in order.
fn read_sse_in_order(
    stream: TcpStream,
    mut buf: Vec<u8>,
    total: u64,
    progress: &AtomicU64,
    deadline: Instant,
) -> Result<(), String> {
    let mut stream = stream;
    let mut expect = 0u64;
    let mut start = 0usize;
    let mut chunk = vec![0u8; 256 * 1024];
    loop {
        while let Some(nl) = buf[start..].iter().position(|&b| b == b'\n') {
            let line = &buf[start..start + nl];
            if line.starts_with(b"data:") {
                match n_in(line) {
                    Some(n) if n == expect => expect += 1,
                    Some(n) => return Err(format!("got n={n}, expected {expect}")),
                    None => {
                        return Err(format!(
                            "a data line without n: {:?}",
                            String::from_utf8_lossy(&line[..line.len().min(200)])
                        ))
                    }
                }
                progress.store(expect, Ordering::Relaxed);
            } else if line.starts_with(b"event: ringcast.") {
                return Err(format!(
                    "server event {:?} after {expect} messages",
                    String::from_utf8_lossy(line)
                ));
            }
            start += nl + 1;
        }
        if expect == total {
            return Ok(());
        }
        buf.drain(..start);
        start = 0;
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("timed out after {expect} of {total}"));
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut chunk) {
            Ok(0) => return Err(format!("EOF after {expect} of {total}")),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("{e} after {expect} of {total}")),
        }
    }
}

/// Samples the server's RSS every 20 ms until stopped; the largest value seen.
fn rss_sampler(pid: u32, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut max = 0;
        while !stop.load(Ordering::Relaxed) {
            max = max.max(proc_rss_bytes(pid));
            std::thread::sleep(Duration::from_millis(20));
        }
        max
    })
}

/// Publishes `total` big messages over one publish connection, never more than
/// `window` ahead of the slowest reader (pipelined: answers are read by another
/// thread); returns once every answer is in.
fn publish_paced(
    server: &Server,
    topic: &str,
    total: u64,
    window: u64,
    progress: &[Arc<AtomicU64>],
) {
    let p = Publisher::connect(&server.socket);
    let mut writer = p.stream.try_clone().unwrap();
    let mut reader = p;
    let answers = std::thread::spawn(move || {
        for i in 0..total {
            let a = reader
                .try_read_answer()
                .unwrap_or_else(|e| panic!("publish answer {i}: {e}"));
            answer_id(&a);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut batch = Vec::with_capacity(64 * (MSG_BYTES + 64));
    let mut n = 0;
    while n < total {
        let slowest = progress
            .iter()
            .map(|p| p.load(Ordering::Relaxed))
            .min()
            .unwrap_or(total);
        if n >= slowest + window {
            assert!(
                Instant::now() < deadline,
                "readers stalled at {slowest} of {total}"
            );
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        batch.clear();
        let upto = (slowest + window).min(total).min(n + 64);
        while n < upto {
            batch.extend_from_slice(big_line(topic, n).as_bytes());
            batch.push(b'\n');
            n += 1;
        }
        writer.write_all(&batch).expect("write publish lines");
    }
    answers.join().expect("publish answers");
}

#[test]
fn an_sse_client_that_never_reads_is_cut_while_a_hundred_readers_get_fifty_mib_in_order() {
    let _serial = serial();
    raise_fd_limit();
    let server = Server::start(&["--max-outbox-bytes", "256KiB"]);
    const READERS: usize = 100;
    const TOTAL: u64 = 12_800; // x 4 KiB = 50 MiB
    const WINDOW: u64 = 256; // 1 MiB ahead of the slowest reader at most

    let fds_base = server.settled_fd_count();
    // The slow one: a tiny receive window, and it never reads, not even the head.
    let mut slow = connect_with_rcvbuf(server.addr, 4096);
    slow.write_all(b"GET /sse?topic=bulk HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut readers = Vec::new();
    for _ in 0..READERS {
        let mut c = server.sse("topic=bulk");
        c.wait_cursor();
        readers.push(c);
    }
    assert!(wait_until(Duration::from_secs(10), || server
        .metric_sum("ringcast_subscriptions")
        == (READERS + 1) as f64));
    let rss_before = server.rss();

    let stop = Arc::new(AtomicBool::new(false));
    let sampler = rss_sampler(server.pid(), stop.clone());
    let progress: Vec<Arc<AtomicU64>> = (0..READERS).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(45);
    let threads: Vec<_> = readers
        .into_iter()
        .zip(progress.iter().cloned())
        .map(|(c, p)| {
            let (stream, buf) = c.into_parts();
            std::thread::spawn(move || read_sse_in_order(stream, buf, TOTAL, &p, deadline))
        })
        .collect();
    publish_paced(&server, "bulk", TOTAL, WINDOW, &progress);
    let publish_time = t0.elapsed();
    let results: Vec<Result<(), String>> = threads
        .into_iter()
        .map(|t| t.join().expect("reader thread"))
        .collect();
    let all_time = t0.elapsed();
    stop.store(true, Ordering::Relaxed);
    let rss_during = sampler.join().unwrap();
    let failed: Vec<(usize, &String)> = results
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.as_ref().err().map(|e| (i, e)))
        .collect();

    let m = server.metrics();
    let slow_cut = sum_series(&m, "ringcast_slow_consumers_total{transport=\"sse\"}");
    // A cut client is disconnected without any help from it: it never reads.
    let t_wait = Instant::now();
    // The readers' streams were dropped with their threads: only the slow one
    // could still be registered.
    let removed_unread = wait_until(Duration::from_secs(4), || {
        server.metric_sum("ringcast_connections") == 0.0
    });
    eprintln!(
        "slow sse: cut client removed without reading: {removed_unread} (waited {:?})",
        t_wait.elapsed()
    );
    // Now read what the slow one got.
    let mut got = Vec::new();
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let end = loop {
        let mut chunk = [0u8; 65536];
        match slow.read(&mut chunk) {
            Ok(0) => break "EOF".to_owned(),
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) => break format!("{:?}", e.kind()),
        }
    };
    let text = String::from_utf8_lossy(&got);
    let data_lines: Vec<&str> = text.lines().filter(|l| l.starts_with("data:")).collect();
    let complete = data_lines.iter().filter(|l| l.ends_with("}}")).count();
    let slow_event = text.contains("event: ringcast.slow");
    let tail: String = text
        .chars()
        .rev()
        .take(160)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let removed = wait_until(Duration::from_secs(5), || {
        server.metric_sum("ringcast_connections") == 0.0
    });
    let rss_after = server.rss();
    // Descriptors: the readers' plus the listeners'; the cut one's must be gone.
    let fds_now = server.settled_fd_count();
    eprintln!(
        "slow sse: server fds with {READERS} readers left: {fds_now} (before any client: {fds_base}); \
         the slow socket ended with {end} after the test read it",
    );
    eprintln!(
        "slow sse: {READERS} readers x {TOTAL} msgs of 4 KiB: published in {publish_time:?}, all read in {all_time:?}; \
         failed readers {}; slow_consumers_total{{sse}}={slow_cut}; slow socket held {} bytes, {} data lines ({complete} complete), \
         ringcast.slow event: {slow_event}, ended with {end}; tail {tail:?}",
        failed.len(),
        got.len(),
        data_lines.len()
    );
    eprintln!(
        "slow sse: server rss before {:.1} MiB, max during {:.1} MiB, after {:.1} MiB",
        rss_before as f64 / MIB as f64,
        rss_during as f64 / MIB as f64,
        rss_after as f64 / MIB as f64
    );
    assert!(
        failed.is_empty(),
        "readers failed: {:?}",
        &failed[..failed.len().min(5)]
    );
    assert!(slow_cut >= 1.0, "the slow client was not cut:\n{m}");
    assert!(
        removed_unread,
        "the cut slow client stays registered (and its socket open) for as long as it does not read"
    );
    assert!(
        removed,
        "the cut slow client is still registered: connections {} (readers {READERS})",
        server.metric_sum("ringcast_connections")
    );
    assert!(
        slow_event || end == "EOF",
        "the slow client's stream did not end (neither ringcast.slow nor EOF): {end}"
    );
    assert!(
        !text.contains("}retry:") && !text.contains("xretry:"),
        "a truncated data line ran into the final retry: line: {tail:?}"
    );
    assert!(rss_during < 200 * MIB, "rss {rss_during} during the flood");
    assert_eq!(
        end, "EOF",
        "the server never closed the cut client's socket (it ended the session; fds {fds_now}, base {fds_base})"
    );
    server.assert_no_panic();
}

#[test]
fn a_websocket_client_that_never_reads_is_cut_with_close_1008_on_frame_boundaries() {
    let _serial = serial();
    let server = Server::start(&["--max-outbox-bytes", "256KiB"]);
    const READERS: usize = 10;
    const TOTAL: u64 = 2_560; // x 4 KiB = 10 MiB

    let slow_stream = connect_with_rcvbuf(server.addr, 4096);
    let slow =
        WsClient::handshake(slow_stream, server.addr, "topic=wbulk").expect("slow handshake");
    let mut readers: Vec<WsClient> = (0..READERS).map(|_| server.ws("topic=wbulk")).collect();
    assert!(wait_until(Duration::from_secs(10), || server
        .metric_sum("ringcast_subscriptions")
        == (READERS + 1) as f64));
    let rss_before = server.rss();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = rss_sampler(server.pid(), stop.clone());

    // Read the slow socket (raw) as soon as the server has cut it, while the
    // server may still be writing its close frame.
    let addr = server.addr;
    let cut_watch = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let t0 = Instant::now();
            let mut cut = false;
            while t0.elapsed() < Duration::from_secs(40) && !stop.load(Ordering::Relaxed) {
                if let Ok(r) = try_request(
                    addr,
                    b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                ) {
                    if sum_series(&r.text(), "ringcast_slow_consumers_total{transport=\"ws\"}")
                        >= 1.0
                    {
                        cut = true;
                        break;
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            // Removed without reading? (The close handshake times out in 5 s.)
            let t_cut = Instant::now();
            let removed_unread = cut
                && wait_until(Duration::from_secs(7), || {
                    try_request(
                        addr,
                        b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                    )
                    .is_ok_and(|r| {
                        sum_series(&r.text(), "ringcast_connections{transport=\"ws\"}")
                            <= READERS as f64
                    })
                });
            eprintln!(
                "slow ws: cut client removed without reading: {removed_unread} (waited {:?})",
                t_cut.elapsed()
            );
            let mut stream = slow.ws.into_inner();
            stream
                .set_read_timeout(Some(Duration::from_secs(8)))
                .unwrap();
            let mut got = Vec::new();
            let end = loop {
                let mut chunk = [0u8; 65536];
                match stream.read(&mut chunk) {
                    Ok(0) => break "EOF".to_owned(),
                    Ok(n) => got.extend_from_slice(&chunk[..n]),
                    Err(e) => break format!("{:?}", e.kind()),
                }
            };
            (cut, removed_unread, got, end)
        })
    };

    let progress: Vec<Arc<AtomicU64>> = (0..READERS).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let t0 = Instant::now();
    let threads: Vec<_> = readers
        .drain(..)
        .zip(progress.iter().cloned())
        .map(|(mut c, p)| {
            std::thread::spawn(move || {
                for k in 0..TOTAL {
                    let n = payload_n(&c.next_envelope());
                    assert_eq!(n, k, "WS reader: out of order");
                    p.store(k + 1, Ordering::Relaxed);
                }
                c
            })
        })
        .collect();
    // A WS reader (tungstenite, one thread each) is slower than the SSE ones:
    // keep the publisher at most 128 KiB ahead of it, under the outbox bound.
    publish_paced(&server, "wbulk", TOTAL, 32, &progress);
    let readers: Vec<WsClient> = threads
        .into_iter()
        .map(|t| t.join().expect("WS reader"))
        .collect();
    let all_time = t0.elapsed();
    let (cut, removed_unread, got, end) = cut_watch.join().expect("slow watcher");
    stop.store(true, Ordering::Relaxed);
    let rss_during = sampler.join().unwrap();
    let rss_after = server.rss();

    let (frames, leftover) = parse_ws_frames(&got);
    let texts: Vec<&RawFrame> = frames.iter().filter(|f| f.opcode == 1).collect();
    let bad_text: Vec<usize> = texts
        .iter()
        .enumerate()
        .filter(|(_, f)| {
            let mut b = f.payload.clone();
            simd_json::to_owned_value(&mut b).is_err()
        })
        .map(|(i, _)| i)
        .collect();
    let close = frames.iter().find(|f| f.opcode == 8).map(|f| {
        let code = f.payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]));
        (
            code,
            String::from_utf8_lossy(f.payload.get(2..).unwrap_or(&[])).into_owned(),
        )
    });
    let odd_opcodes: Vec<u8> = frames
        .iter()
        .map(|f| f.opcode)
        .filter(|o| ![1u8, 8, 9].contains(o))
        .collect();
    eprintln!(
        "slow ws: {READERS} readers x {TOTAL} msgs of 4 KiB read in {all_time:?}; cut seen in metrics: {cut}; \
         slow socket held {} bytes: {} frames ({} text, {} not JSON), close {close:?}, {} bytes of an incomplete frame, \
         other opcodes {odd_opcodes:?}, ended with {end}",
        got.len(),
        frames.len(),
        texts.len(),
        bad_text.len(),
        leftover.len()
    );
    if let Some(&i) = bad_text.first() {
        let p = &texts[i].payload;
        eprintln!(
            "slow ws: first non-JSON text frame #{i} ({} bytes) ends with {:?}",
            p.len(),
            String::from_utf8_lossy(&p[p.len().saturating_sub(80)..])
        );
    }
    eprintln!(
        "slow ws: server rss before {:.1} MiB, max during {:.1} MiB, after {:.1} MiB",
        rss_before as f64 / MIB as f64,
        rss_during as f64 / MIB as f64,
        rss_after as f64 / MIB as f64
    );
    let m = server.metrics();
    assert!(
        sum_series(&m, "ringcast_slow_consumers_total{transport=\"ws\"}") >= 1.0,
        "the slow WS client was not cut:\n{m}"
    );
    assert_eq!(
        sum_series(&m, "ringcast_slow_consumers_total{transport=\"ws\"}"),
        1.0,
        "only the client that never reads is cut"
    );
    assert!(rss_during < 200 * MIB, "rss {rss_during} during the flood");
    assert!(
        removed_unread,
        "the cut WS client stays registered (and its socket open) for as long as it does not read"
    );
    assert!(
        bad_text.is_empty() && odd_opcodes.is_empty(),
        "the slow client's byte stream is corrupt: a frame cut short and followed by other bytes"
    );
    assert!(
        close.as_ref().is_some_and(|(c, _)| *c == Some(1008)) || (end == "EOF" && leftover.is_empty()),
        "expected close 1008 (or an EOF on a frame boundary); close {close:?}, end {end}, {} leftover bytes",
        leftover.len()
    );
    drop(readers);
    server.assert_no_panic();
}
