//! Hostile clients against the real server (issue 17): partial input cannot hold
//! memory or connections — WebSocket messages left unfinished, request bodies past
//! the inbound budget, one address opening connection after connection — while
//! normal clients keep being served.

pub mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::time::{Duration, Instant};

use common::*;

/// A text message of `len` bytes announced whole in its first frame, with all
/// of it but the last byte: a message that never ends.
fn unfinished_message(len: usize) -> Vec<u8> {
    let mut frame = vec![0x01, 0x80 | 127];
    frame.extend_from_slice(&(len as u64).to_be_bytes());
    frame.extend_from_slice(&[0, 0, 0, 0]); // mask key 0: payload as is
    frame.resize(frame.len() + len - 1, b'x');
    frame
}

/// The code of the server's Close frame once it comes (pings skipped); `None`
/// when the connection ends without one, or nothing comes by `deadline`.
fn close_code(raw: &mut Raw, deadline: Instant) -> Option<u16> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match raw.try_frame(left) {
            Ok((first, payload)) if first & 0x0f == CLOSE => {
                return (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
            }
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
}

#[test]
fn unfinished_ws_messages_past_the_budget_get_1013_the_rest_1008_at_the_body_timeout() {
    let _serial = serial();
    raise_fd_limit();
    const BUDGET_MIB: u64 = 64;
    const CLIENTS: usize = 400;
    const MESSAGE: usize = 1_000_000;
    let server = Server::start(&["--max-inbound-memory", "64MiB", "--body-timeout", "4s"]);
    let mut listener = server.sse("topic=calm");
    let _ = listener.wait_cursor();
    let start_rss = server.rss();
    let started = Instant::now();

    let mut clients: Vec<Raw> = Vec::with_capacity(CLIENTS);
    let mut peak_rss = start_rss;
    for i in 0..CLIENTS {
        let mut c = Raw::open(server.addr, &format!("/ws?topic=t{i}"));
        // A refused client's stream is still read (and dropped) until the close
        // handshake ends, so the write completes either way.
        c.stream
            .set_write_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let _ = c.stream.write_all(&unfinished_message(MESSAGE));
        clients.push(c);
        if i % 50 == 49 {
            peak_rss = peak_rss.max(server.rss());
        }
    }
    let sent_in = started.elapsed();
    peak_rss = peak_rss.max(server.rss());
    let held = server.metric_sum("ringcast_inbound_bytes");

    // A new client is served while all of that is held.
    let (status, _) = server.http_publish("calm", r#"{"still":"served"}"#);
    assert_eq!(status, 202);
    assert_eq!(listener.next_event().json()["data"]["still"], "served");

    let slack = 48u64 << 20;
    let bound = start_rss + BUDGET_MIB * 3 / 2 * (1 << 20) + slack;
    assert!(
        peak_rss <= bound,
        "RSS {} MiB over start {} MiB + 1.5 × {BUDGET_MIB} MiB + slack",
        peak_rss >> 20,
        start_rss >> 20
    );
    assert!(
        held <= (BUDGET_MIB << 20) as f64,
        "{held} bytes held over the budget"
    );

    let deadline = Instant::now() + Duration::from_secs(10);
    let codes: Vec<Option<u16>> = clients
        .iter_mut()
        .map(|c| close_code(c, deadline))
        .collect();
    let budget = codes.iter().filter(|c| **c == Some(1013)).count();
    let timeout = codes.iter().filter(|c| **c == Some(1008)).count();
    assert_eq!(
        budget + timeout,
        CLIENTS,
        "every client closed with 1013 or 1008: {:?}",
        codes
            .iter()
            .filter(|c| !matches!(c, Some(1013 | 1008)))
            .collect::<Vec<_>>()
    );
    // 64 MiB hold about 64 messages of 1 MB (less the spare the cores keep).
    assert!(
        (40..=70).contains(&timeout),
        "{timeout} held until the body timeout"
    );
    assert_eq!(
        server.metric_sum(r#"ringcast_inbound_refused_total{transport="ws",reason="budget"}"#),
        budget as f64
    );
    assert_eq!(
        server.metric_sum(r#"ringcast_inbound_refused_total{transport="ws",reason="timeout"}"#),
        timeout as f64
    );
    assert!(
        wait_until(Duration::from_secs(3), || server
            .metric_sum("ringcast_inbound_bytes")
            == 0.0),
        "every byte given back"
    );
    eprintln!(
        "400 × 1 MB unfinished: sent in {sent_in:?}, RSS {} → peak {} MiB, {} MiB held at most; \
         {budget} closed 1013, {timeout} closed 1008",
        start_rss >> 20,
        peak_rss >> 20,
        held as u64 >> 20
    );
}

#[test]
fn a_ws_client_that_may_not_publish_gets_the_control_message_limit() {
    let _serial = serial();
    let secret = "0123456789abcdef0123456789abcdef";
    let server = Server::start(&["--auth-secret", secret]);
    let key = ringcast::proto::token::TokenKey::new(secret.as_bytes());
    let listen_only = ringcast::proto::token::sign(&key, br#"{"exp":9999999999,"topics":["*"]}"#);
    let publisher =
        ringcast::proto::token::sign(&key, br#"{"exp":9999999999,"topics":["*"],"pub":["*"]}"#);
    let big = 64 * 1024;
    let deadline = || Instant::now() + Duration::from_secs(5);

    let mut c = Raw::open(server.addr, &format!("/ws?topic=a&token={listen_only}"));
    let _ = c.stream.write_all(&unfinished_message(big));
    assert_eq!(
        close_code(&mut c, deadline()),
        Some(1009),
        "64 KiB from a listen-only client"
    );

    let mut p = Raw::open(server.addr, &format!("/ws?topic=a&token={publisher}"));
    let _ = p.stream.write_all(&unfinished_message(big));
    assert_eq!(
        close_code(&mut p, Instant::now() + Duration::from_millis(500)),
        None,
        "a publisher may"
    );
}

#[test]
fn request_bodies_past_the_budget_get_503_with_retry_after_and_publishes_go_on() {
    let _serial = serial();
    let server = Server::start(&["--max-inbound-memory", "8MiB", "--max-body-bytes", "4MiB"]);
    let mut listener = server.sse("topic=calm");
    let _ = listener.wait_cursor();
    let body = vec![b'x'; 3 << 20];
    let mut open = Vec::new();
    let mut refused = 0;
    for _ in 0..6 {
        let mut s = TcpStream::connect(server.addr).expect("connect");
        s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let head = format!(
            "POST /publish?topic=big HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
            body.len() + 1
        );
        s.write_all(head.as_bytes()).unwrap();
        let _ = s.write_all(&body);
        let mut got = Vec::new();
        let mut chunk = [0u8; 1024];
        while let Ok(n) = s.read(&mut chunk) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&chunk[..n]);
        }
        let text = String::from_utf8_lossy(&got).to_string();
        if text.starts_with("HTTP/1.1 503") {
            assert!(text.contains("Retry-After: 1\r\n"), "{text}");
            assert!(text.contains("retry later"), "{text}");
            refused += 1;
        } else {
            assert!(
                text.is_empty(),
                "a body under the budget waits for its last byte: {text}"
            );
        }
        open.push(s);
    }
    // 8 MiB hold two bodies of 3 MiB (read buffer and collected runs): the rest
    // are refused.
    assert!((3..=5).contains(&refused), "{refused} of 6 refused");
    assert_eq!(
        server.metric_sum(r#"ringcast_inbound_refused_total{transport="http",reason="budget"}"#),
        refused as f64
    );
    let (status, _) = server.http_publish("calm", r#"{"n":1}"#);
    assert_eq!(status, 202, "a small publish is still served");
    assert_eq!(listener.next_event().json()["data"]["n"], 1);
    drop(open);
    assert!(
        wait_until(Duration::from_secs(3), || server
            .metric_sum("ringcast_inbound_bytes")
            == 0.0),
        "the bodies' bytes are given back when their connections go"
    );
}

#[test]
fn the_per_address_cap_counts_each_address_over_all_cores() {
    let _serial = serial();
    let server = Server::start(&["--cores", "2", "--max-connections-per-ip", "3"]);
    let from = |last: u8| Ipv4Addr::new(127, 0, 0, last);
    let healthz = |s: &mut TcpStream| -> String {
        s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let mut got = vec![0u8; 4096];
        let n = s.read(&mut got).unwrap_or(0);
        String::from_utf8_lossy(&got[..n]).to_string()
    };
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = connect_from(server.addr, from(2)).expect("connect");
        assert!(healthz(&mut s).starts_with("HTTP/1.1 200"));
        held.push(s);
    }
    // The SO_REUSEPORT listeners spread connections over both cores: the count
    // is the address's over all of them.
    for _ in 0..3 {
        let mut s = connect_from(server.addr, from(2)).expect("connect");
        let answer = healthz(&mut s);
        assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
        assert!(answer.contains("--max-connections-per-ip"), "{answer}");
    }
    // Other addresses have caps of their own.
    for last in [3, 4] {
        for _ in 0..3 {
            let mut s = connect_from(server.addr, from(last)).expect("connect");
            assert!(
                healthz(&mut s).starts_with("HTTP/1.1 200"),
                "127.0.0.{last}"
            );
            held.push(s);
        }
    }
    // A connection that goes gives its place back.
    drop(held.remove(0));
    assert!(wait_until(Duration::from_secs(2), || {
        let mut s = connect_from(server.addr, from(2)).expect("connect");
        healthz(&mut s).starts_with("HTTP/1.1 200")
    }));
    assert!(
        server.metric_sum(r#"ringcast_inbound_refused_total{transport="http",reason="per_ip"}"#)
            >= 3.0
    );
}
