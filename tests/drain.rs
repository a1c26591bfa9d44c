//! Graceful shutdown: SIGTERM drains every client with its goodbye (SSE
//! `retry:` + `ringcast.shutdown`, WS close 1001), `/healthz` says draining, the
//! process exits 0 within `--drain-timeout` and removes its publish socket; a
//! second signal exits at once.
//!
//! Figures are printed with `eprintln!` (see them with `--nocapture`).

pub mod common;

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use common::*;

/// How one SSE client's stream ended.
#[derive(Debug, Default, Clone)]
struct SseEnd {
    retry_before_shutdown: bool,
    shutdown_event: bool,
    eof: bool,
    other: Option<String>,
    at: Duration,
}

fn sse_until_end(c: &mut SseClient) -> SseEnd {
    let mut end = SseEnd::default();
    let mut saw_retry = false;
    loop {
        match c.try_next_block(Duration::from_secs(8)) {
            Ok(b) => {
                if b.retry.is_some() {
                    saw_retry = true;
                }
                if b.event.as_deref() == Some("ringcast.shutdown") {
                    end.shutdown_event = true;
                    end.retry_before_shutdown = saw_retry;
                }
            }
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => {
                end.eof = true;
                return end;
            }
            Err(e) => {
                end.other = Some(e.to_string());
                return end;
            }
        }
    }
}

#[test]
fn sigterm_drains_a_thousand_clients_with_their_goodbyes_and_exits_zero_within_the_drain_timeout() {
    raise_fd_limit();
    let mut server = Server::start(&["--drain-timeout", "5s"]);
    const PER_KIND: usize = 500;
    let t_connect = Instant::now();
    let mut sse = Vec::with_capacity(PER_KIND);
    let mut ws = Vec::with_capacity(PER_KIND);
    for _ in 0..PER_KIND {
        let mut c = server.sse("topic=drain");
        c.wait_cursor();
        sse.push(c);
        ws.push(server.ws("topic=drain"));
    }
    assert!(
        wait_until(Duration::from_secs(10), || server
            .metric_sum("ringcast_subscriptions")
            == (2 * PER_KIND) as f64),
        "not every client subscribed:\n{}",
        server.metrics()
    );
    let connect_time = t_connect.elapsed();
    // A keep-alive connection that asked /healthz before the signal.
    let mut keep = HttpConn::connect(server.addr);
    keep.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = keep.read_response();
    assert_eq!(r.status, 200);

    let socket = server.socket.clone();
    let t0 = Instant::now();
    server.signal(libc::SIGTERM);
    // The drain has begun once the main thread logged it and the cores closed
    // their listeners (a fresh connection is refused).
    let begun = wait_until(Duration::from_secs(5), || {
        server.stderr().contains("msg=\"draining\"")
            && std::net::TcpStream::connect(server.addr).is_err()
    });
    let begun_at = t0.elapsed();

    // The keep-alive connection, asked again right after the signal.
    keep.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    let healthz = match keep.try_read_response() {
        Ok(r) => format!("{} {:?}", r.status, r.text().trim()),
        Err(e) => format!("no answer: {e}"),
    };
    let healthz_at = t0.elapsed();

    // Every client, read to its end by 20 threads.
    let mut groups: Vec<(Vec<SseClient>, Vec<WsClient>)> =
        (0..20).map(|_| (Vec::new(), Vec::new())).collect();
    for (i, c) in sse.into_iter().enumerate() {
        groups[i % 20].0.push(c);
    }
    for (i, c) in ws.into_iter().enumerate() {
        groups[i % 20].1.push(c);
    }
    let threads: Vec<_> = groups
        .into_iter()
        .map(|(mut sse, mut ws)| {
            std::thread::spawn(move || {
                let sse_ends: Vec<SseEnd> = sse
                    .iter_mut()
                    .map(|c| {
                        let mut e = sse_until_end(c);
                        e.at = t0.elapsed();
                        e
                    })
                    .collect();
                let ws_ends: Vec<(Result<Option<u16>, String>, String, Duration)> = ws
                    .iter_mut()
                    .map(|c| {
                        let close = c.until_close(Duration::from_secs(8));
                        // After the close: the server ends the TCP connection.
                        let after = match c.try_next(Duration::from_secs(8)) {
                            Ok(m) => format!("message {m:?}"),
                            Err(e) => e.to_string(),
                        };
                        (close, after, t0.elapsed())
                    })
                    .collect();
                (sse_ends, ws_ends)
            })
        })
        .collect();
    let mut sse_ends = Vec::new();
    let mut ws_ends = Vec::new();
    for t in threads {
        let (s, w) = t.join().expect("reader thread");
        sse_ends.extend(s);
        ws_ends.extend(w);
    }
    let clients_done = t0.elapsed();
    let status = server.wait_exit(Duration::from_secs(9));
    let exit_at = t0.elapsed();

    let sse_ok = sse_ends
        .iter()
        .filter(|e| e.shutdown_event && e.retry_before_shutdown && e.eof)
        .count();
    let ws_1001 = ws_ends
        .iter()
        .filter(|(c, _, _)| matches!(c, Ok(Some(1001))))
        .count();
    let ws_closed_after = ws_ends
        .iter()
        .filter(|(_, after, _)| after.contains("closed") || after.contains("Connection"))
        .count();
    let bad_sse: Vec<&SseEnd> = sse_ends
        .iter()
        .filter(|e| !(e.shutdown_event && e.retry_before_shutdown && e.eof))
        .take(3)
        .collect();
    let bad_ws: Vec<_> = ws_ends
        .iter()
        .filter(|(c, _, _)| !matches!(c, Ok(Some(1001))))
        .take(3)
        .collect();
    let after_kinds: std::collections::BTreeSet<&str> =
        ws_ends.iter().map(|(_, a, _)| a.as_str()).collect();
    let sse_max = sse_ends.iter().map(|e| e.at).max().unwrap_or_default();
    let ws_max = ws_ends
        .iter()
        .map(|(_, _, at)| *at)
        .max()
        .unwrap_or_default();
    eprintln!(
        "drain: {} clients connected in {connect_time:?}; SIGTERM; keep-alive /healthz after the signal: {healthz} \
         (at {healthz_at:?}, drain seen begun: {begun} at {begun_at:?}); max SSE end {sse_max:?}, max WS end {ws_max:?}; SSE retry+shutdown+EOF {sse_ok}/{PER_KIND}; WS close 1001 {ws_1001}/{PER_KIND} \
         (then {after_kinds:?}, {ws_closed_after} ended); all clients done {clients_done:?}; \
         exit {status:?} at {exit_at:?}; publish socket left: {}",
        2 * PER_KIND,
        socket.exists()
    );
    assert!(
        bad_sse.is_empty(),
        "SSE clients without the goodbye: {bad_sse:?}"
    );
    // The goodbye is written at once (bounded by 1 s); the stream must end then,
    // not when the core stops at the drain deadline.
    assert!(
        sse_max <= Duration::from_secs(2),
        "an SSE stream got its EOF only {sse_max:?} after SIGTERM (drain timeout 5 s)"
    );
    assert!(
        bad_ws.is_empty(),
        "WS clients without close 1001: {bad_ws:?}"
    );
    let status = status
        .unwrap_or_else(|| panic!("still running 9 s after SIGTERM:\n{}", server.stderr_tail()));
    assert!(
        status.success(),
        "exit status {status}:\n{}",
        server.stderr_tail()
    );
    assert!(
        exit_at <= Duration::from_millis(5500),
        "exited {exit_at:?} after SIGTERM, --drain-timeout 5s"
    );
    assert!(!socket.exists(), "the publish socket file is left behind");
    assert!(
        healthz.starts_with("503") || healthz.starts_with("no answer"),
        "/healthz while draining: {healthz}"
    );
    server.assert_no_panic();
}

#[test]
fn a_second_sigterm_during_the_drain_exits_at_once_with_a_failure_status() {
    let mut server = Server::start(&["--drain-timeout", "20s"]);
    // A WebSocket client that never answers the server's close: it never reads.
    let stubborn = server.ws("topic=stubborn");
    assert!(wait_until(Duration::from_secs(5), || server
        .metric_sum("ringcast_connections{transport=\"ws\"}")
        == 1.0));
    server.signal(libc::SIGTERM);
    assert!(
        wait_until(Duration::from_secs(5), || server
            .stderr()
            .contains("msg=\"draining\"")),
        "the drain did not start:\n{}",
        server.stderr_tail()
    );
    // Still draining a moment later (the client holds it).
    std::thread::sleep(Duration::from_millis(300));
    server.assert_running();
    let t = Instant::now();
    server.signal(libc::SIGTERM);
    let status = server.wait_exit(Duration::from_secs(3));
    let took = t.elapsed();
    eprintln!(
        "second signal: exit {status:?} {took:?} after it; stderr mentions it: {}",
        server.stderr().contains("second signal")
    );
    let status = status.expect("still running 3 s after the second SIGTERM");
    assert!(
        !status.success(),
        "a forced exit must not report success: {status}"
    );
    assert!(took < Duration::from_millis(1000), "took {took:?}");
    drop(stubborn);
}

/// `--cores N --driver D`, for the drain matrix below.
fn layout(cores: &'static str, driver: &'static str) -> [&'static str; 4] {
    ["--cores", cores, "--driver", driver]
}

/// Sends SIGTERM and waits for the exit: (exit status, time from the signal).
fn stop(server: &mut Server) -> (std::process::ExitStatus, Duration) {
    let t0 = Instant::now();
    server.signal(libc::SIGTERM);
    let status = server.wait_exit(Duration::from_secs(15));
    let took = t0.elapsed();
    let status = status.unwrap_or_else(|| {
        panic!(
            "still running 15 s after SIGTERM:\n{}",
            server.stderr_tail()
        )
    });
    (status, took)
}

/// A server with nothing left to drain stops at once, not at `--drain-timeout`
/// (10 s by default): fresh; after a publish over the socket whose connection
/// closed; holding an idle publish-socket connection; holding an idle
/// keep-alive HTTP connection.
fn quiet_servers_stop_within_a_second(cores: &'static str, driver: &'static str) {
    let args = layout(cores, driver);
    let mut cases: Vec<(&str, Duration)> = Vec::new();
    let mut check = |what: &'static str, server: &mut Server| {
        let (status, took) = stop(server);
        assert!(
            status.success(),
            "{what} (--cores {cores} --driver {driver}): exit {status}\n{}",
            server.stderr_tail()
        );
        assert!(
            took <= Duration::from_secs(1),
            "{what} (--cores {cores} --driver {driver}): stopped {took:?} after SIGTERM\n{}",
            server.stderr_tail()
        );
        server.assert_no_panic();
        cases.push((what, took));
    };

    let mut fresh = Server::start(&args);
    check("fresh", &mut fresh);

    let mut published = Server::start(&args);
    let answers = published.publish_socket(&[line_n("drain.quiet", 1)]);
    assert!(answers[0].contains("\"ok\":true"), "{answers:?}");
    check("after a socket publish", &mut published);

    let mut idle_socket = Server::start(&args);
    let mut publisher = Publisher::connect(&idle_socket.socket);
    assert!(publisher
        .call(&line_n("drain.quiet", 1))
        .contains("\"ok\":true"));
    check("idle publish-socket connection", &mut idle_socket);
    // The server closed it: the publisher reads the end of the stream.
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut publisher.stream, &mut rest);
    assert_eq!(
        rest, "",
        "the idle publisher got more than an end of stream"
    );

    let mut idle_http = Server::start(&args);
    let mut keep = HttpConn::connect(idle_http.addr);
    keep.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(keep.read_response().status, 200);
    check("idle keep-alive HTTP connection", &mut idle_http);
    assert!(
        keep.closed_by_server(),
        "the keep-alive connection stayed open"
    );

    eprintln!("--cores {cores} --driver {driver}: stop after SIGTERM {cases:?}");
}

/// Live clients get their goodbye at once even when the publish socket was the
/// last thing the core accepted (core 0 serves both): WS close 1001 and SSE
/// `ringcast.shutdown` within 1 s of SIGTERM, then exit 0 as soon as they are gone.
fn live_clients_get_their_goodbye_after_a_socket_publish(
    cores: &'static str,
    driver: &'static str,
) {
    let mut server = Server::start(&layout(cores, driver));
    let mut sse = server.sse("topic=drain.live");
    sse.wait_cursor();
    let mut ws = server.ws("topic=drain.live");
    assert!(
        wait_until(Duration::from_secs(5), || server
            .metric_sum("ringcast_subscriptions")
            == 2.0),
        "not subscribed:\n{}",
        server.metrics()
    );
    // The socket is accepted after the last HTTP connection.
    let answers = server.publish_socket(&[line_n("drain.live", 1)]);
    assert!(answers[0].contains("\"ok\":true"), "{answers:?}");
    assert_eq!(payload_n(&envelope(&sse.next_event())), 1);
    assert_eq!(payload_n(&ws.next_envelope()), 1);

    let t0 = Instant::now();
    server.signal(libc::SIGTERM);
    let end = sse_until_end(&mut sse);
    let sse_at = t0.elapsed();
    let close = ws.until_close(Duration::from_secs(5));
    let ws_at = t0.elapsed();
    drop(ws);
    let status = server.wait_exit(Duration::from_secs(15));
    let exit_at = t0.elapsed();
    eprintln!(
        "--cores {cores} --driver {driver}: SSE end {end:?} at {sse_at:?}, WS close {close:?} \
         at {ws_at:?}, exit {status:?} at {exit_at:?}"
    );
    assert!(
        end.shutdown_event && end.retry_before_shutdown && end.eof,
        "SSE end: {end:?}\n{}",
        server.stderr_tail()
    );
    assert!(
        sse_at <= Duration::from_secs(1),
        "SSE goodbye at {sse_at:?}"
    );
    assert_eq!(close, Ok(Some(1001)), "{}", server.stderr_tail());
    assert!(ws_at <= Duration::from_secs(1), "WS close at {ws_at:?}");
    let status = status.unwrap_or_else(|| panic!("no exit:\n{}", server.stderr_tail()));
    assert!(status.success(), "exit {status}:\n{}", server.stderr_tail());
    assert!(
        exit_at <= Duration::from_secs(2),
        "exited {exit_at:?} after SIGTERM with every client gone by {ws_at:?}"
    );
    server.assert_no_panic();
}

#[test]
fn drain_reaches_every_task_with_one_core_on_io_uring() {
    quiet_servers_stop_within_a_second("1", "uring");
    live_clients_get_their_goodbye_after_a_socket_publish("1", "uring");
}

#[test]
fn drain_reaches_every_task_with_two_cores_on_io_uring() {
    quiet_servers_stop_within_a_second("2", "uring");
    live_clients_get_their_goodbye_after_a_socket_publish("2", "uring");
}

#[test]
fn drain_reaches_every_task_with_one_core_on_epoll() {
    quiet_servers_stop_within_a_second("1", "epoll");
    live_clients_get_their_goodbye_after_a_socket_publish("1", "epoll");
}

#[test]
fn drain_reaches_every_task_with_two_cores_on_epoll() {
    quiet_servers_stop_within_a_second("2", "epoll");
    live_clients_get_their_goodbye_after_a_socket_publish("2", "epoll");
}
