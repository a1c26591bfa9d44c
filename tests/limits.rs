//! Limits under abuse: half-sent request heads (slowloris), trickled request
//! bodies (`--body-timeout`), `--max-connections`, and running out of file
//! descriptors (EMFILE).
//!
//! Figures are printed with `eprintln!` (see them with `--nocapture`).

pub mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";

/// What a connection got before it ended.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Status(String),
    Eof,
    Reset,
    StillOpen,
}

/// Reads until EOF, a reset or `deadline`; classifies what came back.
fn outcome(mut s: TcpStream, deadline: Instant) -> Outcome {
    let mut got = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Outcome::StillOpen;
        }
        s.set_read_timeout(Some(left)).unwrap();
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Outcome::StillOpen
            }
            Err(_) if got.is_empty() => return Outcome::Reset,
            Err(_) => break,
        }
    }
    if got.is_empty() {
        return Outcome::Eof;
    }
    let text = String::from_utf8_lossy(&got);
    Outcome::Status(text.lines().next().unwrap_or_default().to_owned())
}

// ---- 3. slowloris ------------------------------------------------------------------

#[test]
fn five_hundred_half_sent_request_heads_get_408_after_the_header_timeout_while_a_stream_is_served()
{
    let _serial = serial();
    raise_fd_limit();
    let server = Server::start(&["--header-timeout", "1s"]);
    let before = server.metric_sum("ringcast_header_timeouts_total");
    const N: usize = 500;
    let t0 = Instant::now();
    let mut loris = Vec::with_capacity(N);
    for _ in 0..N {
        let mut s = TcpStream::connect(server.addr).expect("connect");
        s.write_all(b"GET /sse?topic=a HTTP/1.1\r\nHost: x\r\n")
            .expect("write half a head");
        loris.push(s);
    }
    let opened = t0.elapsed();

    // Meanwhile, a normal client is served.
    let t_sse = Instant::now();
    let mut c = server.sse("topic=a");
    c.wait_cursor();
    answer_id(&server.publish_socket(&[line_n("a", 1)])[0]);
    assert_eq!(payload_n(&envelope(&c.next_event())), 1);
    let served = t_sse.elapsed();

    let deadline = Instant::now() + Duration::from_secs(5);
    let mut outcomes = Vec::with_capacity(N);
    for s in loris {
        outcomes.push(outcome(s, deadline));
    }
    let all_done = t0.elapsed();
    let count = |f: &dyn Fn(&Outcome) -> bool| outcomes.iter().filter(|o| f(o)).count();
    let got_408 = count(&|o| matches!(o, Outcome::Status(s) if s.starts_with("HTTP/1.1 408")));
    let other_status: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Status(s) if !s.starts_with("HTTP/1.1 408")))
        .take(3)
        .collect();
    let eof = count(&|o| *o == Outcome::Eof);
    let reset = count(&|o| *o == Outcome::Reset);
    let open = count(&|o| *o == Outcome::StillOpen);
    let timeouts = server.metric_sum("ringcast_header_timeouts_total") - before;
    eprintln!(
        "slowloris: {N} half heads opened in {opened:?}; a normal stream got its publish in {served:?}; \
         all {N} judged {all_done:?} after the first connect: 408={got_408} eof={eof} reset={reset} \
         still-open={open} other={other_status:?}; ringcast_header_timeouts_total +{timeouts}"
    );
    assert_eq!(
        open, 0,
        "connections with half a head outlived --header-timeout"
    );
    assert_eq!(got_408, N, "each half-sent head gets a 408");
    assert!(timeouts >= N as f64, "header timeouts counted: {timeouts}");
    assert!(
        all_done <= opened + Duration::from_millis(2500),
        "closed only {all_done:?} after the first connect"
    );
    assert_eq!(server.metric_sum("ringcast_connections"), 1.0);
    server.assert_no_panic();
}

// ---- 4. slow bodies -----------------------------------------------------------------

#[test]
fn two_hundred_trickling_bodies_get_408_within_the_body_timeout_while_a_publish_is_served() {
    let _serial = serial();
    let server = Server::start(&["--body-timeout", "2s"]);
    const N: usize = 200;
    const HEAD: &[u8] =
        b"POST /publish?topic=slow HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\n0123456789";
    struct Slow {
        s: TcpStream,
        sent: Instant,
        got: Vec<u8>,
        ended: Option<Instant>,
    }
    let mut slow: Vec<Slow> = (0..N)
        .map(|_| {
            let mut s = TcpStream::connect(server.addr).expect("connect");
            s.write_all(HEAD).expect("write the head and 10 body bytes");
            s.set_nonblocking(true).unwrap();
            Slow {
                s,
                sent: Instant::now(),
                got: Vec::new(),
                ended: None,
            }
        })
        .collect();

    let mut served = None;
    let give_up = Instant::now() + Duration::from_secs(6);
    let mut next_byte = Instant::now() + Duration::from_millis(500);
    while Instant::now() < give_up && slow.iter().any(|c| c.ended.is_none()) {
        for c in slow.iter_mut().filter(|c| c.ended.is_none()) {
            let mut chunk = [0u8; 1024];
            loop {
                match c.s.read(&mut chunk) {
                    Ok(0) => {
                        c.ended = Some(Instant::now());
                        break;
                    }
                    Ok(n) => c.got.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => {
                        c.ended = Some(Instant::now());
                        break;
                    }
                }
            }
        }
        if Instant::now() >= next_byte {
            // One more body byte every half second, to those not answered yet:
            // it must not move the deadline.
            for c in slow
                .iter_mut()
                .filter(|c| c.got.is_empty() && c.ended.is_none())
            {
                let _ = c.s.write(b"x");
            }
            next_byte += Duration::from_millis(500);
        }
        if served.is_none() && slow[0].sent.elapsed() >= Duration::from_secs(1) {
            // Meanwhile, a subscriber gets a normal publish.
            let t = Instant::now();
            let mut c = server.sse("topic=a");
            c.wait_cursor();
            let (status, body) = server.http_publish("a", "{\"n\":7}");
            assert_eq!(status, 202, "{body}");
            assert_eq!(payload_n(&envelope(&c.next_event())), 7);
            served = Some(t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    let got_408 = slow
        .iter()
        .filter(|c| String::from_utf8_lossy(&c.got).starts_with("HTTP/1.1 408"))
        .count();
    let late: Vec<Duration> = slow
        .iter()
        .map(|c| c.ended.map_or(Duration::MAX, |e| e - c.sent))
        .filter(|held| *held > Duration::from_secs(3))
        .collect();
    let longest = slow
        .iter()
        .filter_map(|c| c.ended.map(|e| e - c.sent))
        .max();
    eprintln!(
        "slow bodies: {N} trickling 1 MB bodies with --body-timeout 2s: 408={got_408}, \
         longest held {longest:?}, held past 3 s: {}; a publish reached a subscriber in {served:?}",
        late.len()
    );
    assert!(served.is_some(), "the normal publish was not tried");
    assert_eq!(got_408, N, "each trickling body gets a 408");
    assert!(
        slow.iter()
            .all(|c| String::from_utf8_lossy(&c.got).contains("--body-timeout")),
        "the 408 names the flag"
    );
    assert!(late.is_empty(), "held past --body-timeout + 1 s: {late:?}");
    server.assert_no_panic();
}

// ---- 5. --max-connections ------------------------------------------------------------

/// An SSE request on a fresh connection: `true` when served as a stream (the
/// cursor block came), `false` when refused with `ringcast.busy`.
fn sse_served(addr: std::net::SocketAddr) -> (bool, Option<TcpStream>, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.write_all(b"GET /sse?topic=cap HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if text.contains("event: ringcast.busy") {
            // Read to the end: a refusal closes.
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest);
            got.extend_from_slice(&rest);
            return (false, None, String::from_utf8_lossy(&got).into_owned());
        }
        if text.contains("\nid:") || text.contains("\nid: ") {
            return (true, Some(s), text);
        }
        assert!(
            Instant::now() < deadline,
            "SSE: neither served nor refused: {text:?}"
        );
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk) {
            Ok(0) => panic!("SSE: closed without a busy event: {text:?}"),
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) => panic!("SSE: {e}; got {text:?}"),
        }
    }
}

fn try_metrics(server: &Server) -> Option<String> {
    try_request(
        server.addr,
        b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .ok()
    .filter(|r| r.status == 200)
    .map(|r| r.text())
}

#[test]
fn under_max_connections_four_the_first_four_concurrent_streams_are_all_served() {
    let _serial = serial();
    let server = Server::start(&["--max-connections", "4"]);
    let mut rounds = Vec::new();
    for round in 0..8 {
        let mut held = Vec::new();
        let mut served_before_refusal = 0;
        for _ in 0..5 {
            let (served, s, _) = sse_served(server.addr);
            if !served {
                break;
            }
            served_before_refusal += 1;
            held.push(s.unwrap());
        }
        rounds.push(served_before_refusal);
        drop(held);
        assert!(
            wait_until(Duration::from_secs(5), || try_metrics(&server)
                .is_some_and(|m| sum_series(&m, "ringcast_connections") == 0.0)),
            "round {round}: streams not released"
        );
    }
    eprintln!(
        "max-connections 4 (--cores 2): concurrent streams served before the first refusal, per round: {rounds:?}"
    );
    assert!(
        rounds.iter().all(|&n| n == 4),
        "--max-connections 4 refused a stream while fewer than 4 were open: served before refusal {rounds:?}"
    );
}

#[test]
fn over_max_connections_healthz_and_ws_get_503_and_sse_a_busy_event_until_room_frees() {
    let _serial = serial();
    let server = Server::start(&["--max-connections", "4"]);
    // Fill both cores: open streams until four are served.
    let mut held = Vec::new();
    let mut refused_early = 0;
    for _ in 0..40 {
        if held.len() == 4 {
            break;
        }
        let (served, s, _) = sse_served(server.addr);
        if served {
            held.push(s.unwrap());
        } else {
            refused_early += 1;
        }
    }
    assert_eq!(held.len(), 4, "could not open four streams");
    // Every further connection is refused, whichever core takes it.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let r = request(server.addr, HEALTHZ);
        assert_eq!(r.status, 503, "/healthz over capacity: {}", r.text());
        assert!(r.header("Retry-After").is_some(), "503 without Retry-After");
        statuses.push(r.status);
        let ws = request(
            server.addr,
            b"GET /ws?topic=cap HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        );
        assert_eq!(ws.status, 503, "WS upgrade over capacity: {}", ws.text());
        assert!(
            ws.header("Retry-After").is_some(),
            "503 without Retry-After"
        );
        let (served, _, text) = sse_served(server.addr);
        assert!(!served, "a fifth stream was served");
        assert!(
            text.starts_with("HTTP/1.1 200"),
            "busy /sse is a 200: {text:?}"
        );
        assert!(
            text.lines()
                .any(|l| l.starts_with("retry:")
                    && l[6..].trim().bytes().all(|b| b.is_ascii_digit())),
            "busy /sse without a retry: line: {text:?}"
        );
    }
    eprintln!(
        "max-connections: {refused_early} refused while filling; over capacity /healthz {statuses:?}, ws 503, /sse busy"
    );
    // Room again once the first ones close.
    drop(held);
    let t = Instant::now();
    assert!(
        wait_until(Duration::from_secs(5), || try_request(server.addr, HEALTHZ)
            .is_ok_and(|r| r.status == 200)),
        "/healthz not served again"
    );
    let (served, _s, text) = sse_served(server.addr);
    assert!(served, "a stream is served again: {text:?}");
    let mut ws = server.ws("topic=cap");
    assert!(wait_until(Duration::from_secs(5), || try_metrics(&server)
        .is_some_and(|m| sum_series(
            &m,
            "ringcast_connections{transport=\"ws\"}"
        ) == 1.0)));
    answer_id(&server.publish_socket(&[line_n("cap", 9)])[0]);
    assert_eq!(payload_n(&ws.next_envelope()), 9);
    eprintln!(
        "max-connections: served again {:?} after the first four closed",
        t.elapsed()
    );
    server.assert_no_panic();
}

// ---- 6. EMFILE -------------------------------------------------------------------------

#[test]
fn out_of_descriptors_the_server_backs_off_without_spinning_and_serves_again_afterwards() {
    let _serial = serial();
    raise_fd_limit();
    let mut server = Server::start_via_shell("ulimit -Sn 64; ulimit -Hn 64", &[]);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.pid())).unwrap();
    let nofile = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or_default()
        .to_owned();
    let fds0 = server.settled_fd_count();
    let cpu0 = server.cpu_time();
    let t0 = Instant::now();
    const N: usize = 100;
    let mut conns = Vec::with_capacity(N);
    for _ in 0..N {
        let mut s = TcpStream::connect(server.addr).expect("connect (the backlog takes it)");
        s.write_all(b"GET /sse?topic=fd HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        conns.push(s);
    }
    let warned = wait_until(Duration::from_secs(5), || {
        server.stderr().contains("accept failed, backing off")
    });
    // Who got a stream head, who is waiting in the backlog.
    let mut served = 0;
    for s in &mut conns {
        s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let mut b = [0u8; 64];
        if matches!(s.read(&mut b), Ok(n) if n > 0 && b.starts_with(b"HTTP/1.1 200")) {
            served += 1;
        }
    }
    let fds_full = server.fd_count();
    // Hold them a moment at the limit: the accept loop must sleep, not spin.
    std::thread::sleep(Duration::from_millis(1500));
    server.assert_running();
    drop(conns);
    let t_closed = Instant::now();
    let back = wait_until(Duration::from_secs(5), || {
        try_request(server.addr, HEALTHZ).is_ok_and(|r| r.status == 200)
    });
    let recovered = t_closed.elapsed();
    let cpu = server.cpu_time().saturating_sub(cpu0);
    let episode = t0.elapsed();
    server.assert_running();
    let err = server.stderr();
    let warnings = err.lines().filter(|l| l.contains("backing off")).count();
    let fds_after = server.settled_fd_count();
    eprintln!(
        "emfile: {nofile:?}; fds at start {fds0}, at the limit {fds_full}, after {fds_after}; \
         {served} of {N} streams served while full; backoff warnings {warnings}; \
         /healthz 200 again {recovered:?} after the close; server cpu {cpu:?} over {episode:?}"
    );
    assert!(
        warned,
        "no backoff warning on stderr:\n{}",
        server.stderr_tail()
    );
    assert!(
        back,
        "/healthz did not answer 200 again:\n{}",
        server.stderr_tail()
    );
    assert!(
        cpu < Duration::from_secs(1),
        "the server used {cpu:?} of CPU: spinning?"
    );
    server.assert_no_panic();
}
