//! https and wss on `--listen` (`--tls-cert`, `--tls-key`): real TLS clients
//! (rustls, tungstenite over rustls) against the real binary, with a
//! certificate authority made at test time.

pub mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

/// Reads `count` messages: (n, SSE id line).
fn read_ns<S: Timed + Write>(c: &mut SseClient<S>, count: usize) -> Vec<(u64, String)> {
    (0..count)
        .map(|_| {
            let b = c.next_event();
            assert_eq!(b.kind(), "message", "expected a message, got {b:?}");
            let n = payload_n(&envelope(&b));
            (n, b.id.expect("message without an id line"))
        })
        .collect()
}

#[test]
fn sse_over_https_delivers_and_resumes_from_last_event_id() {
    let ca = TestCa::new();
    let leaf = ca.leaf(KeyKind::EcdsaP256, "sse");
    let server = Server::start_tls(&ca, &leaf, &[]);
    let client = ca.client();

    let mut c = server.sse_tls(&client, "topic=s", None);
    c.wait_cursor();
    server.publish_ns("s", 0..5);
    let seen = read_ns(&mut c, 3);
    assert_eq!(seen.iter().map(|m| m.0).collect::<Vec<_>>(), [0, 1, 2]);
    let last = seen[2].1.clone();
    drop(c);
    server.publish_ns("s", 5..7);

    let mut c = server.sse_tls(&client, "topic=s", Some(&last));
    let missed = read_ns(&mut c, 4);
    assert_eq!(
        missed.iter().map(|m| m.0).collect::<Vec<_>>(),
        [3, 4, 5, 6],
        "exactly the missed ones, in order, over TLS"
    );
    server.publish_ns("s", [7]);
    assert_eq!(read_ns(&mut c, 1)[0].0, 7, "then live");

    let metrics = server.metrics_tls(&client);
    assert!(metric_sum(&metrics, "ringcast_tls_handshakes_total") >= 3.0);
    assert_eq!(
        metric_sum(&metrics, "ringcast_tls_handshake_failures_total"),
        0.0
    );
}

#[test]
fn wss_with_tungstenite_over_rustls_receives_and_gets_acks() {
    let ca = TestCa::new();
    let leaf = ca.leaf(KeyKind::EcdsaP256, "wss");
    let server = Server::start_tls(&ca, &leaf, &[]);
    let (mut ws, resp) = server.ws_tls(&ca.client(), "topic=w");
    assert_eq!(resp.status().as_u16(), 101);

    let next_text = |ws: &mut tungstenite::WebSocket<TlsStream>| loop {
        match ws.read().expect("wss read") {
            tungstenite::Message::Text(t) => return t.as_str().to_owned(),
            _ => continue,
        }
    };
    ws.send(tungstenite::Message::text(
        r#"{"op":"subscribe","topics":["w2"],"ref":7}"#,
    ))
    .unwrap();
    let ack = next_text(&mut ws);
    assert!(ack.contains("\"ack\"") && ack.contains("7"), "{ack}");

    // Subscribed by then (the ack comes once the subscription is live).
    server.publish_ns("w", [1]);
    server.publish_ns("w2", [2]);
    let mut got: Vec<u64> = (0..2)
        .map(|_| {
            let v = json(&next_text(&mut ws));
            use simd_json::prelude::*;
            v.get("data")
                .and_then(|d| d.get("n"))
                .and_then(|n| n.as_u64())
                .unwrap()
        })
        .collect();
    got.sort_unstable();
    assert_eq!(got, [1, 2]);
    ws.close(None).unwrap();
    let _ = ws.read();
}

#[test]
fn a_burst_larger_than_the_socket_arrives_whole_and_in_order_over_tls() {
    // Sealed records that the socket could not take wait in the connection,
    // and the client waits for writability: nothing lost, nothing reordered.
    let ca = TestCa::new();
    let leaf = ca.leaf(KeyKind::EcdsaP256, "burst");
    let server = Server::start_tls(&ca, &leaf, &["--max-outbox-bytes", "64MiB"]);
    let client = ca.client();
    let mut sse = server.sse_tls(&client, "topic=b", None);
    sse.wait_cursor();
    let (mut ws, _) = server.ws_tls(&client, "topic=b");
    // The WS subscription is live once a probe published after it arrives.
    let probe = format!("{{\"topic\":\"b\",\"data\":\"{}\"}}", "p");
    server.publish_ids(&[probe]);
    loop {
        if let tungstenite::Message::Text(_) = ws.read().unwrap() {
            break;
        }
    }
    assert_eq!(sse.next_event().kind(), "message");

    let pad = "x".repeat(2000);
    let lines: Vec<String> = (0..3000)
        .map(|n| format!("{{\"topic\":\"b\",\"data\":{{\"n\":{n},\"pad\":\"{pad}\"}}}}"))
        .collect();
    // In small batches: each flush seals a few frames, all taken by rustls,
    // and the one that meets the full socket leaves records unwritten.
    for batch in lines.chunks(10) {
        server.publish_ids(batch);
    }
    // Nobody read during the burst (6 MB each): the sockets filled.
    for (i, (n, _)) in read_ns(&mut sse, 3000).into_iter().enumerate() {
        assert_eq!(n, i as u64, "SSE over TLS, in order");
    }
    for i in 0..3000u64 {
        let text = loop {
            match ws.read().expect("wss read") {
                tungstenite::Message::Text(t) => break t.as_str().to_owned(),
                _ => continue,
            }
        };
        use simd_json::prelude::*;
        let n = json(&text)
            .get("data")
            .and_then(|d| d.get("n"))
            .and_then(|n| n.as_u64());
        assert_eq!(n, Some(i), "WS over TLS, in order");
    }
}

#[test]
fn ecdsa_and_rsa_keys_serve_tls_1_2_and_1_3_with_alpn_http_1_1() {
    let ca = TestCa::new();
    for kind in [KeyKind::EcdsaP256, KeyKind::Rsa2048] {
        let leaf = ca.leaf(kind, "kinds");
        let server = Server::start_tls(&ca, &leaf, &[]);
        for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca.ca_file()).unwrap() {
                roots.add(cert.unwrap()).unwrap();
            }
            let mut cfg = rustls::ClientConfig::builder_with_protocol_versions(&[version])
                .with_root_certificates(roots)
                .with_no_client_auth();
            cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            let cfg = Arc::new(cfg);
            let s = tls_connect(server.addr, &cfg).expect("handshake");
            assert_eq!(s.conn.protocol_version(), Some(version.version));
            assert_eq!(s.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
            assert_eq!(peer_leaf(&s), leaf.der, "the chain's leaf first");
            let r = https_get(server.addr, &cfg, "/healthz");
            assert_eq!(r.status, 200, "{kind:?} {version:?}");
        }
    }
}

use rustls::pki_types::pem::PemObject;

#[test]
fn sighup_reloads_the_pair_for_new_connections_while_open_streams_go_on() {
    let ca = TestCa::new();
    let first = ca.leaf(KeyKind::EcdsaP256, "first");
    let second = ca.leaf(KeyKind::Rsa2048, "second");
    // The server reads the pair from these two paths, rewritten below.
    let live = ca.leaf(KeyKind::EcdsaP256, "live");
    std::fs::copy(&first.cert, &live.cert).unwrap();
    std::fs::copy(&first.key, &live.key).unwrap();
    let server = Server::start_tls(&ca, &live, &[]);
    let client = ca.client();
    let leaf_now = || peer_leaf(&tls_connect(server.addr, &client).unwrap());
    assert_eq!(leaf_now(), first.der);

    let mut open = server.sse_tls(&client, "topic=r", None);
    open.wait_cursor();

    std::fs::copy(&second.cert, &live.cert).unwrap();
    std::fs::copy(&second.key, &live.key).unwrap();
    server.signal(libc::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(10), || leaf_now() == second.der),
        "a new connection gets the new certificate; {}",
        server.stderr_tail()
    );
    server.publish_ns("r", [1]);
    assert_eq!(read_ns(&mut open, 1)[0].0, 1, "the open stream goes on");

    // A broken pair: garbage certificate, then a key of another pair.
    for (cert, key) in [
        (
            b"not a certificate".to_vec(),
            std::fs::read(&second.key).unwrap(),
        ),
        (
            std::fs::read(&second.cert).unwrap(),
            std::fs::read(&first.key).unwrap(),
        ),
    ] {
        let failed = metric_sum(
            &server.metrics_tls(&client),
            "ringcast_tls_reloads_total{result=\"error\"}",
        );
        std::fs::write(&live.cert, cert).unwrap();
        std::fs::write(&live.key, key).unwrap();
        server.signal(libc::SIGHUP);
        assert!(
            wait_until(Duration::from_secs(10), || {
                metric_sum(
                    &server.metrics_tls(&client),
                    "ringcast_tls_reloads_total{result=\"error\"}",
                ) > failed
            }),
            "the broken reload is counted; {}",
            server.stderr_tail()
        );
        assert_eq!(leaf_now(), second.der, "the previous pair keeps serving");
    }
    assert!(server.stderr().contains("TLS reload refused"));
    server.publish_ns("r", [2]);
    assert_eq!(
        read_ns(&mut open, 1)[0].0,
        2,
        "the open stream still goes on"
    );
    let metrics = server.metrics_tls(&client);
    assert_eq!(
        metric_sum(&metrics, "ringcast_tls_reloads_total{result=\"ok\"}"),
        1.0
    );
}

#[test]
fn the_metric_shows_the_leaf_not_after() {
    let ca = TestCa::new();
    let leaf = ca.leaf(KeyKind::EcdsaP256, "expiry");
    let server = Server::start_tls(&ca, &leaf, &[]);
    let metrics = server.metrics_tls(&ca.client());
    // rcgen's default validity ends 4096-01-01T00:00:00Z.
    assert_eq!(
        metric_sum(&metrics, "ringcast_tls_cert_not_after_seconds"),
        67_090_118_400.0,
        "{metrics}"
    );
}

/// Runs `ringcast serve` with `args` until it exits; (success, stderr).
fn serve_exits(args: &[&str]) -> (bool, String) {
    let dir = TempDir::new();
    let mut child = std::process::Command::new(bin())
        .arg("serve")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--publish-socket")
        .arg(dir.path().join("rc.sock"))
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return (status.success(), err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("ringcast serve {args:?} did not exit on a bad TLS pair");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_bad_pair_at_start_exits_non_zero_naming_the_file() {
    let ca = TestCa::new();
    let good = ca.leaf(KeyKind::EcdsaP256, "good");
    let other = ca.leaf(KeyKind::EcdsaP256, "other");
    let garbage = ca.dir.path().join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\nnot base64 !!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let empty = ca.dir.path().join("empty.pem");
    std::fs::write(&empty, "hello\n").unwrap();
    let missing = ca.dir.path().join("missing.pem");
    let p = |p: &std::path::Path| p.to_str().unwrap().to_owned();
    let cases: Vec<(String, String, String, &str)> = vec![
        (p(&missing), p(&good.key), p(&missing), "cannot read"),
        (p(&garbage), p(&good.key), p(&garbage), "certificate"),
        (p(&empty), p(&good.key), p(&empty), "no PEM certificate"),
        (p(&good.cert), p(&garbage), p(&garbage), "key"),
        (p(&good.cert), p(&missing), p(&missing), "cannot read"),
        (
            p(&good.cert),
            p(&other.key),
            p(&other.key),
            "does not match",
        ),
        // A certificate file given as the key.
        (p(&good.cert), p(&good.cert), p(&good.cert), "key"),
    ];
    for (cert, key, named, says) in cases {
        let (ok, err) = serve_exits(&["--tls-cert", &cert, "--tls-key", &key]);
        assert!(!ok, "started with cert {cert} key {key}");
        assert!(
            err.contains(&named) && err.contains(says),
            "cert {cert} key {key}: the message names {named} and says {says:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    let (ok, err) = serve_exits(&["--tls-cert", &p(&good.cert)]);
    assert!(!ok && err.contains("--tls-key"), "{err}");
}

#[test]
fn stalled_handshakes_are_closed_by_the_header_timeout_while_others_are_served() {
    let _serial = serial();
    let ca = TestCa::new();
    let leaf = ca.leaf(KeyKind::EcdsaP256, "stall");
    let server = Server::start_tls(&ca, &leaf, &["--header-timeout", "1s"]);
    let client = ca.client();
    // Half of them say nothing, half start a ClientHello and stop.
    let mut stalled: Vec<TcpStream> = (0..100)
        .map(|i| {
            let mut s = TcpStream::connect(server.addr).unwrap();
            if i % 2 == 1 {
                s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).unwrap();
            }
            s
        })
        .collect();
    let started = Instant::now();
    // Meanwhile others are served.
    for _ in 0..5 {
        assert_eq!(https_get(server.addr, &client, "/healthz").status, 200);
    }
    for s in &mut stalled {
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let (_, closed) = read_to_close(s, Duration::from_secs(5));
        assert!(closed, "a stalled handshake was left open");
    }
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "closed by the 1 s header timeout, took {:?}",
        started.elapsed()
    );
    let metrics = server.metrics_tls(&client);
    assert!(metric_sum(&metrics, "ringcast_tls_handshake_failures_total") >= 100.0);
    assert!(metric_sum(&metrics, "ringcast_header_timeouts_total") >= 100.0);
    assert_eq!(https_get(server.addr, &client, "/healthz").status, 200);
}

#[test]
fn plain_http_or_garbage_on_the_tls_port_is_closed_and_counted() {
    let ca = TestCa::new();
    let leaf = ca.leaf(KeyKind::EcdsaP256, "plain");
    let server = Server::start_tls(&ca, &leaf, &[]);
    let client = ca.client();
    let probes: [&[u8]; 3] = [
        b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n",
        &[0u8; 64],
        // A TLS alert record (fatal, handshake_failure) instead of a hello.
        &[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28],
    ];
    for raw in probes {
        let mut s = TcpStream::connect(server.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        s.write_all(raw).unwrap();
        let (got, closed) = read_to_close(&mut s, Duration::from_secs(5));
        assert!(closed, "left open after {raw:?}");
        assert!(!got.starts_with(b"HTTP"), "no plain HTTP answer: {got:?}");
    }
    let metrics = server.metrics_tls(&client);
    assert!(
        metric_sum(&metrics, "ringcast_tls_handshake_failures_total") >= 3.0,
        "{metrics}"
    );
    assert_eq!(https_get(server.addr, &client, "/healthz").status, 200);
    server.assert_no_panic();
}

#[test]
fn a_client_that_does_not_trust_the_certificate_fails_and_the_server_goes_on() {
    let ca = TestCa::new();
    let leaf = ca.leaf(KeyKind::EcdsaP256, "untrusted");
    let server = Server::start_tls(&ca, &leaf, &[]);
    let other = TestCa::new();
    assert!(tls_connect(server.addr, &other.client()).is_err());
    let client = ca.client();
    assert!(wait_until(Duration::from_secs(5), || {
        metric_sum(
            &server.metrics_tls(&client),
            "ringcast_tls_handshake_failures_total",
        ) >= 1.0
    }));
    assert_eq!(https_get(server.addr, &client, "/healthz").status, 200);
}

#[test]
fn a_key_update_from_the_client_is_answered_and_the_stream_goes_on() {
    let ca = TestCa::new();
    let leaf = ca.leaf(KeyKind::EcdsaP256, "keyupdate");
    let server = Server::start_tls(&ca, &leaf, &[]);
    let client = ca.client();
    for (n, transport) in [(1u64, "sse"), (2, "ws")] {
        let mut stream = tls_connect(server.addr, &client).unwrap();
        assert_eq!(
            stream.conn.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_3)
        );
        let topic = format!("k{n}");
        let head = match transport {
            "sse" => format!("GET /sse?topic={topic} HTTP/1.1\r\nHost: t\r\n\r\n"),
            _ => format!(
                "GET /ws?topic={topic} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ),
        };
        stream.write_all(head.as_bytes()).unwrap();
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        while !String::from_utf8_lossy(&got).contains("\r\n\r\n") {
            let k = stream.read(&mut chunk).unwrap();
            assert!(k > 0, "closed before the head");
            got.extend_from_slice(&chunk[..k]);
        }
        // A KeyUpdate asking the server to update its keys too.
        stream.conn.refresh_traffic_keys().unwrap();
        while stream.conn.wants_write() {
            stream.conn.write_tls(&mut stream.sock).unwrap();
        }
        // Published until one arrives (the subscription goes live shortly
        // after the head).
        let deadline = Instant::now() + Duration::from_secs(10);
        got.clear();
        let marker = format!("\"n\":{n}");
        while !String::from_utf8_lossy(&got).contains(&marker) {
            assert!(
                Instant::now() < deadline,
                "{transport}: nothing after the key update"
            );
            server.publish_ns(&topic, [n]);
            stream
                .sock
                .set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            match stream.read(&mut chunk) {
                Ok(0) => panic!("{transport}: closed after the key update"),
                Ok(k) => got.extend_from_slice(&chunk[..k]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("{transport}: {e}"),
            }
        }
    }
    let metrics = server.metrics_tls(&client);
    assert_eq!(
        metric_sum(&metrics, "ringcast_tls_handshake_failures_total"),
        0.0
    );
}

#[test]
fn over_capacity_refusals_are_answered_over_tls() {
    let ca = TestCa::new();
    let leaf = ca.leaf(KeyKind::EcdsaP256, "busy");
    let server = Server::start_tls(&ca, &leaf, &["--max-connections", "1"]);
    let client = ca.client();
    // The one connection allowed (the readiness probe's may still be closing).
    let deadline = Instant::now() + Duration::from_secs(10);
    let held = loop {
        let mut c = server.sse_tls(&client, "topic=busy", None);
        // The starting cursor (an id, no data) says admitted; an event, refused.
        let first = loop {
            let b = c.next_block();
            if b.id.is_some() || b.event.is_some() {
                break b;
            }
        };
        if first.event.is_none() {
            break c;
        }
        assert!(Instant::now() < deadline, "never admitted: {first:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let r = https_get(server.addr, &client, "/healthz");
    assert_eq!(r.status, 503, "{}", r.text());
    let mut refused = server.sse_tls(&client, "topic=busy", None);
    let b = refused.next_event();
    assert_eq!(b.kind(), "ringcast.busy", "{b:?}");
    drop(held);
}

#[test]
fn sigterm_drains_tls_clients_with_their_goodbyes() {
    let ca = TestCa::new();
    let leaf = ca.leaf(KeyKind::EcdsaP256, "drain");
    let mut server = Server::start_tls(&ca, &leaf, &["--drain-timeout", "5s"]);
    let client = ca.client();
    let mut sse = server.sse_tls(&client, "topic=d", None);
    sse.wait_cursor();
    let (mut ws, _) = server.ws_tls(&client, "topic=d");
    ws.send(tungstenite::Message::text(
        r#"{"op":"subscribe","topics":["d2"],"ref":1}"#,
    ))
    .unwrap();
    while !matches!(ws.read().unwrap(), tungstenite::Message::Text(_)) {}

    server.signal(libc::SIGTERM);
    let goodbye = loop {
        let b = sse.next_block();
        if b.event.is_some() {
            break b;
        }
    };
    assert_eq!(goodbye.kind(), "ringcast.shutdown", "{goodbye:?}");
    let code = loop {
        match ws.read() {
            Ok(tungstenite::Message::Close(Some(frame))) => break u16::from(frame.code),
            Ok(tungstenite::Message::Close(None)) => panic!("a close without a code"),
            Ok(_) => continue,
            Err(e) => panic!("no close frame over TLS: {e}"),
        }
    };
    assert_eq!(code, 1001, "going away");
    drop(ws);
    drop(sse);
    let status = server
        .wait_exit(Duration::from_secs(9))
        .unwrap_or_else(|| panic!("still running after SIGTERM:\n{}", server.stderr_tail()));
    assert!(status.success(), "{status}");
}

#[test]
fn heartbeats_of_idle_tls_streams_are_sealed_like_any_write() {
    // An idle stream's heartbeat skips its outbox (one batch per timer pass):
    // on TLS it must still be a record, or the client sees garbage.
    let ca = TestCa::new();
    let leaf = ca.leaf(KeyKind::EcdsaP256, "beat");
    let server = Server::start_tls(&ca, &leaf, &["--heartbeat", "1s"]);
    let client = ca.client();
    let mut sse = server.sse_tls(&client, "topic=hb", None);
    sse.wait_cursor();
    let (mut ws, _) = server.ws_tls(&client, "topic=hb");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut beats = 0;
    while beats < 2 {
        assert!(
            Instant::now() < deadline,
            "no heartbeats on the TLS SSE stream"
        );
        match sse.try_next_line(Duration::from_secs(3)) {
            Ok(line) if line.starts_with(':') => beats += 1,
            Ok(_) => {}
            Err(e) => panic!("the TLS SSE stream broke: {e}"),
        }
    }
    let mut pings = 0;
    ws.get_mut()
        .sock
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    while pings < 2 {
        assert!(Instant::now() < deadline, "no pings on the wss stream");
        match ws.read() {
            Ok(tungstenite::Message::Ping(_)) => pings += 1,
            Ok(_) => {}
            Err(e) => panic!("the wss stream broke: {e}"),
        }
    }
    server.publish_ns("hb", [1]);
    assert_eq!(read_ns(&mut sse, 1)[0].0, 1, "and messages still arrive");
}
