//! WebSocket (`/ws`, `/echo`) against the real binary over real sockets: the
//! envelope and fan-out over both cores, control messages and their answers,
//! resume, the handshake's refusals, the close-code rules as a real peer sees
//! them, heartbeats and the idle timeout, the echo endpoint, and the drain.
//!
//! Two kinds of client: tungstenite (an independent implementation) for the
//! well-behaved cases, and raw frames over a `TcpStream` for everything a
//! library would refuse to send. Every wait is bounded.

pub mod common;

use std::io::ErrorKind;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use simd_json::prelude::*;
use simd_json::OwnedValue;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

use common::*;

const WS: &str = "ringcast_connections{transport=\"ws\"}";

// ---- helpers ----------------------------------------------------------------

fn str_field<'a>(v: &'a OwnedValue, key: &str) -> Option<&'a str> {
    v.get(key).and_then(|x| x.as_str())
}

/// Waits until the server counts exactly `n` WebSocket connections.
fn wait_ws_gauge(server: &Server, n: usize, why: &str) {
    assert!(
        wait_until(Duration::from_secs(10), || server.metric_sum(WS)
            == n as f64),
        "{why}: ringcast_connections{{transport=\"ws\"}} never reached {n}:\n{}",
        server.metrics()
    );
}

/// A message envelope as delivered on `/ws`.
#[derive(Debug)]
struct Env {
    topic: String,
    id: Option<String>,
    event: Option<String>,
    data: OwnedValue,
    keys: Vec<String>,
}

fn env(text: &str) -> Env {
    let v = json(text);
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("envelope is not an object: {text}"));
    let mut keys: Vec<String> = obj.keys().map(|k| k.to_string()).collect();
    keys.sort();
    Env {
        topic: str_field(&v, "topic")
            .unwrap_or_else(|| panic!("envelope without topic: {text}"))
            .to_owned(),
        id: str_field(&v, "id").map(str::to_owned),
        event: str_field(&v, "event").map(str::to_owned),
        data: v
            .get("data")
            .cloned()
            .unwrap_or_else(|| panic!("envelope without data: {text}")),
        keys,
    }
}

fn env_n(e: &Env) -> u64 {
    e.data
        .get("n")
        .and_then(|n| n.as_u64())
        .unwrap_or_else(|| panic!("payload without n: {e:?}"))
}

/// A control answer: `Some(ref)` checks the echoed `ref` (raw JSON compared as
/// values), `None` checks there is none.
fn assert_answer(text: &str, op: &str, reference: Option<&str>) -> OwnedValue {
    let v = json(text);
    assert_eq!(str_field(&v, "op"), Some(op), "expected an {op}: {text}");
    match reference {
        Some(r) => assert_eq!(v.get("ref"), Some(&json(r)), "ref not echoed: {text}"),
        None => assert!(v.get("ref").is_none(), "a ref out of nowhere: {text}"),
    }
    if op == "error" {
        assert!(
            str_field(&v, "error").is_some_and(|e| !e.is_empty()),
            "an error answer names its reason: {text}"
        );
    }
    v
}

fn is_answer(text: &str) -> bool {
    let v = json(text);
    matches!(str_field(&v, "op"), Some("ack" | "error"))
}

/// A tungstenite client over a blocking `TcpStream` with read timeouts.
struct Client {
    ws: WebSocket<TcpStream>,
}

fn timed_out() -> tungstenite::Error {
    tungstenite::Error::Io(std::io::Error::new(ErrorKind::TimedOut, "WS read deadline"))
}

fn is_timeout(e: &tungstenite::Error) -> bool {
    matches!(e, tungstenite::Error::Io(io) if matches!(io.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock))
}

impl Client {
    /// The handshake of the shared [`TungsteniteClient`]; this client reads its
    /// own way (data and close messages, with the `tungstenite::Error`).
    fn connect(addr: SocketAddr, path: &str) -> Client {
        Client {
            ws: TungsteniteClient::connect(addr, path).ws,
        }
    }

    fn send(&mut self, text: &str) {
        self.ws.send(Message::text(text)).expect("WS send");
    }

    /// The next data or close message; pings are answered (by tungstenite) and
    /// skipped on the way.
    fn try_next(&mut self, timeout: Duration) -> Result<Message, tungstenite::Error> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(timed_out());
            }
            self.ws.get_mut().set_read_timeout(Some(left)).unwrap();
            match self.ws.read() {
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => continue,
                Ok(m) => return Ok(m),
                Err(e) if is_timeout(&e) => return Err(timed_out()),
                Err(e) => return Err(e),
            }
        }
    }

    fn next_text(&mut self) -> String {
        match self.try_next(READ_TIMEOUT) {
            Ok(Message::Text(t)) => t.as_str().to_owned(),
            other => panic!("expected a text message, got {other:?}"),
        }
    }

    /// The next message envelope, skipping control answers.
    fn next_env(&mut self) -> Env {
        loop {
            let t = self.next_text();
            if !is_answer(&t) {
                return env(&t);
            }
        }
    }

    /// True when no text or binary message arrives within `d`.
    fn quiet_for(&mut self, d: Duration) -> bool {
        match self.try_next(d) {
            Ok(m) => panic!("unexpected message {m:?}"),
            Err(e) => is_timeout(&e),
        }
    }
}

// ---- raw frames -------------------------------------------------------------

const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

const TEXT: u8 = 0x1;
const PONG: u8 = 0xA;

/// A client frame: `first` is FIN|RSV|opcode; masked with [`MASK`] when `masked`.
fn frame(first: u8, masked: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let m = if masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(m | n as u8),
        n if n <= 0xffff => {
            out.push(m | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(m | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        out.extend_from_slice(&MASK);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason.as_bytes());
    p
}

// ---- 1. envelope and fan-out --------------------------------------------------

#[test]
fn a_client_subscribed_by_url_or_by_the_subscribe_op_gets_one_text_frame_per_message_in_the_envelope(
) {
    let server = Server::start(&[]);
    let mut by_url = Client::connect(server.addr, "/ws?topic=env");
    let mut by_op = Client::connect(server.addr, "/ws");
    by_op.send(r#"{"op":"subscribe","topics":["env"],"ref":1}"#);
    assert_answer(&by_op.next_text(), "ack", Some("1"));
    wait_ws_gauge(&server, 2, "two subscribers");

    let id1 = answer_id(&server.publish_socket(&[r#"{"topic":"env","data":{"n":1}}"#.into()])[0]);
    let id2 = answer_id(
        &server.publish_socket(&[r#"{"topic":"env","data":[1,"x"],"event":"tick"}"#.into()])[0],
    );
    let (status, body) = server.http_publish("env", "not json");
    assert_eq!(status, 202, "POST /publish: {body}");

    for (name, c) in [("by url", &mut by_url), ("by op", &mut by_op)] {
        let m1 = env(&c.next_text());
        assert_eq!(m1.keys, ["data", "id", "topic"], "{name}: {m1:?}");
        assert_eq!(m1.topic, "env");
        assert_eq!(m1.id.as_deref(), Some(id1.as_str()), "{name}");
        assert_eq!(m1.data, json(r#"{"n":1}"#), "{name}");
        assert_eq!(m1.event, None);

        let m2 = env(&c.next_text());
        assert_eq!(m2.keys, ["data", "event", "id", "topic"], "{name}: {m2:?}");
        assert_eq!(m2.id.as_deref(), Some(id2.as_str()), "{name}");
        assert_eq!(m2.event.as_deref(), Some("tick"), "{name}");
        assert_eq!(m2.data, json(r#"[1,"x"]"#), "{name}");

        let m3 = env(&c.next_text());
        assert_eq!(
            m3.data,
            OwnedValue::from("not json"),
            "{name}: a payload that is not JSON arrives as a JSON string"
        );
        let id3 = m3.id.expect("an id");
        assert!(
            split_id(&id2).1 < split_id(&id3).1,
            "ids grow per topic: {id2} then {id3}"
        );
        assert!(
            c.quiet_for(Duration::from_millis(200)),
            "{name}: extra frames"
        );
    }
}

#[test]
fn twenty_four_clients_on_both_cores_get_five_hundred_messages_in_per_topic_order_none_lost_or_duplicated(
) {
    let server = Server::start(&[]);
    let mut clients = Vec::new();
    loop {
        let mut c = if clients.len() % 2 == 0 {
            Client::connect(server.addr, "/ws?topic=fa&topic=fb")
        } else {
            let mut c = Client::connect(server.addr, "/ws");
            c.send(r#"{"op":"subscribe","topics":["fa","fb"],"ref":"s"}"#);
            c
        };
        if clients.len() % 2 == 1 {
            assert_answer(&c.next_text(), "ack", Some(r#""s""#));
        }
        clients.push(c);
        wait_ws_gauge(&server, clients.len(), "while connecting");
        let m = server.metrics();
        let on = |core: usize| {
            find_series(
                &m,
                &format!("ringcast_connections{{transport=\"ws\",core=\"{core}\"}}"),
            )
            .unwrap_or(0.0)
        };
        if clients.len() >= 24 && on(0) > 0.0 && on(1) > 0.0 {
            break;
        }
        assert!(
            clients.len() < 200,
            "SO_REUSEPORT put every WS connection on one core:\n{m}"
        );
    }

    const N: u64 = 500;
    let topic = |n: u64| if n.is_multiple_of(2) { "fa" } else { "fb" };
    let lines: Vec<String> = (0..N).map(|n| line_n(topic(n), n)).collect();
    let ids: Vec<String> = server.publish_ids(&lines);

    for (i, c) in clients.iter_mut().enumerate() {
        let mut per_topic: [Vec<u64>; 2] = [Vec::new(), Vec::new()];
        for _ in 0..N {
            let e = c.next_env();
            let n = env_n(&e);
            assert_eq!(e.topic, topic(n), "client {i}: {e:?}");
            assert_eq!(
                e.id.as_deref(),
                Some(ids[n as usize].as_str()),
                "client {i}"
            );
            per_topic[(n % 2) as usize].push(n);
        }
        let want_a: Vec<u64> = (0..N).step_by(2).collect();
        let want_b: Vec<u64> = (1..N).step_by(2).collect();
        assert_eq!(
            per_topic[0], want_a,
            "client {i}: topic fa in order, all once"
        );
        assert_eq!(
            per_topic[1], want_b,
            "client {i}: topic fb in order, all once"
        );
        assert!(
            c.quiet_for(Duration::from_millis(50)),
            "client {i}: duplicates"
        );
    }
    server.assert_no_panic();
}

// ---- 2. control messages ------------------------------------------------------

#[test]
fn subscribe_unsubscribe_and_publish_are_acked_with_their_ref_and_unsubscribe_stops_the_topic() {
    let server = Server::start(&[]);
    let mut c = Client::connect(server.addr, "/ws");
    c.send(r#"{"op":"subscribe","topics":["c1","c2"],"ref":1}"#);
    assert_answer(&c.next_text(), "ack", Some("1"));
    wait_ws_gauge(&server, 1, "one client");

    // A publish op: its ack carries the id; the message reaches its own subscriber.
    c.send(r#"{"op":"publish","topic":"c1","data":{"n":7},"ref":{"k":["v"]}}"#);
    let (a, b) = (c.next_text(), c.next_text());
    let (ack, msg) = if is_answer(&a) { (a, b) } else { (b, a) };
    let ack = assert_answer(&ack, "ack", Some(r#"{"k":["v"]}"#));
    let id = str_field(&ack, "id").expect("a publish ack carries the id");
    let msg = env(&msg);
    assert_eq!((msg.topic.as_str(), env_n(&msg)), ("c1", 7));
    assert_eq!(msg.id.as_deref(), Some(id));

    c.send(r#"{"op":"unsubscribe","topics":["c1"],"ref":"u"}"#);
    assert_answer(&c.next_text(), "ack", Some(r#""u""#));
    server.publish_ns("c1", [1]);
    server.publish_ns("c2", [2]);
    let next = c.next_env();
    assert_eq!(
        (next.topic.as_str(), env_n(&next)),
        ("c2", 2),
        "after unsubscribe, c1 must not arrive"
    );
    assert!(c.quiet_for(Duration::from_millis(200)));
}

#[test]
fn a_bad_control_message_gets_an_error_frame_with_its_ref_and_the_connection_lives_on() {
    let server = Server::start(&[]);
    let mut c = Client::connect(server.addr, "/ws");
    let cases: &[(&str, Option<&str>)] = &[
        ("nope", None),
        ("[1,2]", None),
        (r#"{"op":"dance","ref":2}"#, Some("2")),
        (r#"{"topics":["x"],"ref":3}"#, Some("3")),
        (r#"{"op":"subscribe","topics":["a b"],"ref":4}"#, Some("4")),
        (r#"{"op":"subscribe","topics":[],"ref":5}"#, Some("5")),
        (
            r#"{"op":"subscribe","topics":["x"],"since":5,"ref":6}"#,
            Some("6"),
        ),
        (
            r#"{"op":"subscribe","topics":["x"],"bogus":1,"ref":7}"#,
            Some("7"),
        ),
        (r#"{"op":"publish","topic":"x","ref":8}"#, Some("8")),
        (
            r#"{"op":"publish","topic":"no way","data":1,"ref":9}"#,
            Some("9"),
        ),
    ];
    for (text, reference) in cases {
        c.send(text);
        let answer = c.next_text();
        let v = json(&answer);
        assert_eq!(str_field(&v, "op"), Some("error"), "{text} -> {answer}");
        assert_answer(&answer, "error", *reference);
    }
    c.ws.send(Message::binary(vec![1u8, 2, 3]))
        .expect("send binary");
    assert_answer(&c.next_text(), "error", None);

    // Still alive: a subscribe works and messages flow.
    assert_eq!(server.metric_sum(WS), 1.0, "the connection was dropped");
    c.send(r#"{"op":"subscribe","topics":["alive"],"ref":10}"#);
    assert_answer(&c.next_text(), "ack", Some("10"));
    server.publish_ns("alive", [1]);
    assert_eq!(env_n(&c.next_env()), 1);
}

#[test]
fn subscribing_past_max_topics_per_client_gets_an_error_frame() {
    let server = Server::start(&["--max-topics-per-client", "2"]);
    let mut c = Client::connect(server.addr, "/ws");
    c.send(r#"{"op":"subscribe","topics":["t1","t2"],"ref":1}"#);
    assert_answer(&c.next_text(), "ack", Some("1"));
    c.send(r#"{"op":"subscribe","topics":["t3"],"ref":2}"#);
    assert_answer(&c.next_text(), "error", Some("2"));
    // Subscribing again to a topic it has adds nothing, so it is within the limit.
    c.send(r#"{"op":"subscribe","topics":["t1"],"ref":3}"#);
    assert_answer(&c.next_text(), "ack", Some("3"));
    // The refused topic was not subscribed; the others still are.
    server.publish_ns("t3", [3]);
    server.publish_ns("t2", [2]);
    let e = c.next_env();
    assert_eq!((e.topic.as_str(), env_n(&e)), ("t2", 2));

    // Too many topics on the URL is refused before the upgrade.
    let r = request(
        server.addr,
        upgrade_request("/ws?topic=a&topic=b&topic=c", "").as_bytes(),
    );
    assert_eq!(r.status, 400, "{}", r.text());
}

// ---- 3. resume ------------------------------------------------------------------

fn resume_gets_exactly_the_missed_messages(by_op: bool) {
    let server = Server::start(&[]);
    let mut c = Client::connect(server.addr, "/ws?topic=r");
    wait_ws_gauge(&server, 1, "first connection");
    let ids = server.publish_ns("r", 0..5);
    let seen: Vec<u64> = (0..3).map(|_| env_n(&c.next_env())).collect();
    assert_eq!(seen, [0, 1, 2]);
    drop(c);
    wait_ws_gauge(&server, 0, "after the first connection left");
    let later = server.publish_ns("r", 5..8);

    let mut c = if by_op {
        let mut c = Client::connect(server.addr, "/ws");
        c.send(&format!(
            r#"{{"op":"subscribe","topics":["r"],"since":"{}","ref":1}}"#,
            ids[2]
        ));
        c
    } else {
        Client::connect(server.addr, &format!("/ws?topic=r&lastEventId={}", ids[2]))
    };
    let mut acks = 0;
    let mut got = Vec::new();
    while got.len() < 5 {
        let t = c.next_text();
        if is_answer(&t) {
            assert_answer(&t, "ack", Some("1"));
            acks += 1;
            continue;
        }
        let e = env(&t);
        got.push((env_n(&e), e.id.expect("an id")));
    }
    let want_ids: Vec<String> = ids[3..].iter().chain(&later).cloned().collect();
    assert_eq!(
        got.iter().map(|g| g.0).collect::<Vec<_>>(),
        [3, 4, 5, 6, 7],
        "exactly the missed ones, in order"
    );
    assert_eq!(
        got.iter().map(|g| g.1.clone()).collect::<Vec<_>>(),
        want_ids
    );
    let live = server.publish_ns("r", [8]).remove(0);
    loop {
        let t = c.next_text();
        if is_answer(&t) {
            acks += 1;
            continue;
        }
        let e = env(&t);
        assert_eq!(env_n(&e), 8, "the live message follows the missed ones");
        assert_eq!(e.id.as_deref(), Some(live.as_str()));
        break;
    }
    assert_eq!(acks, usize::from(by_op), "one ack for the subscribe op");
    assert!(c.quiet_for(Duration::from_millis(200)));
}

#[test]
fn last_event_id_on_the_url_resumes_exactly_the_missed_messages() {
    resume_gets_exactly_the_missed_messages(false);
}

#[test]
fn since_in_a_subscribe_op_resumes_exactly_the_missed_messages() {
    resume_gets_exactly_the_missed_messages(true);
}

fn an_id_older_than_history_gets_a_gap_then_the_retained(by_op: bool) {
    let server = Server::start(&["--history", "3"]);
    let first = server.publish_ns("h", [0]).remove(0);
    let later = server.publish_ns("h", 1..11); // history keeps n = 8, 9, 10

    let mut c = if by_op {
        let mut c = Client::connect(server.addr, "/ws");
        c.send(&format!(
            r#"{{"op":"subscribe","topics":["h"],"since":"{first}","ref":1}}"#
        ));
        assert_answer(&c.next_text(), "ack", Some("1"));
        c
    } else {
        Client::connect(server.addr, &format!("/ws?topic=h&lastEventId={first}"))
    };
    let gap = env(&c.next_text());
    assert_eq!(gap.event.as_deref(), Some("ringcast.gap"), "first: {gap:?}");
    assert_eq!(gap.topic, "h");
    assert_eq!(str_field(&gap.data, "topic"), Some("h"), "{gap:?}");
    assert_eq!(
        str_field(&gap.data, "after"),
        Some(first.as_str()),
        "{gap:?}"
    );
    assert_eq!(
        str_field(&gap.data, "oldest"),
        Some(later[7].as_str()),
        "the oldest message kept: {gap:?}"
    );
    let kept: Vec<(u64, String)> = (0..3)
        .map(|_| {
            let e = c.next_env();
            assert_eq!(e.event, None);
            (env_n(&e), e.id.expect("an id"))
        })
        .collect();
    assert_eq!(
        kept,
        vec![
            (8, later[7].clone()),
            (9, later[8].clone()),
            (10, later[9].clone())
        ]
    );
    server.publish_ns("h", [11]);
    assert_eq!(env_n(&c.next_env()), 11);
}

#[test]
fn last_event_id_older_than_history_gets_a_gap_event_then_the_retained_messages() {
    an_id_older_than_history_gets_a_gap_then_the_retained(false);
}

#[test]
fn since_older_than_history_gets_a_gap_event_then_the_retained_messages() {
    an_id_older_than_history_gets_a_gap_then_the_retained(true);
}

// ---- 4. handshake ----------------------------------------------------------------

#[test]
fn a_missing_or_malformed_key_is_a_400_and_version_8_is_a_426_naming_version_13() {
    let server = Server::start(&[]);
    let without_key = "GET /ws?topic=a HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n\
                       Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n";
    let r = request(server.addr, without_key.as_bytes());
    assert_eq!(r.status, 400, "no key: {}", r.text());
    assert!(!r.text().is_empty(), "a 400 says why");

    for key in [
        "c2hvcnQ=",                     // "short"
        "AAAAAAAAAAAAAAAAAAAA",         // 15 bytes
        "AAAAAAAAAAAAAAAAAAAAAAA=",     // 17 bytes
        "not base64 at all!!!!!!!",     // not base64
        "dGhlIHNhbXBsZSBub25jZQ==AAAA", // 16 bytes and more
    ] {
        let req = format!(
            "GET /ws?topic=a HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        let r = request(server.addr, req.as_bytes());
        assert_eq!(r.status, 400, "key {key:?}: {}", r.text());
    }

    let v8 = format!(
        "GET /ws?topic=a HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 8\r\n\r\n"
    );
    let r = request(server.addr, v8.as_bytes());
    assert_eq!(r.status, 426, "version 8: {}", r.text());
    assert_eq!(
        r.header("Sec-WebSocket-Version"),
        Some("13"),
        "{:?}",
        r.headers
    );
    assert_eq!(server.metric_sum(WS), 0.0, "a refused upgrade is no client");
}

#[test]
fn firefox_style_connection_keep_alive_upgrade_gets_a_101_with_the_accept_key() {
    let server = Server::start(&[]);
    let req = format!(
        "GET /ws?topic=ff HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n\
         Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: {KEY}\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    );
    let mut raw = Raw::open_with(server.addr, &req, b"");
    let accept = raw
        .head
        .lines()
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case("sec-websocket-accept")
                .then(|| v.trim().to_owned())
        })
        .expect("Sec-WebSocket-Accept");
    assert_eq!(accept, ACCEPT);
    wait_ws_gauge(&server, 1, "the Firefox-style client");
    server.publish_ns("ff", [1]);
    let (first, payload) = raw.frame();
    assert_eq!(first, FIN | TEXT);
    assert_eq!(env_n(&env(std::str::from_utf8(&payload).unwrap())), 1);
}

#[test]
fn with_ws_deflate_off_an_offered_permessage_deflate_is_not_echoed_and_frames_stay_uncompressed() {
    // With it on (the default), tests/ws_deflate.rs.
    let server = Server::start(&["--ws-deflate", "off"]);
    let req = upgrade_request(
        "/ws?topic=px",
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n",
    );
    let mut raw = Raw::open_with(server.addr, &req, b"");
    assert!(
        !raw.head
            .to_ascii_lowercase()
            .contains("sec-websocket-extensions"),
        "an extension was negotiated: {:?}",
        raw.head
    );
    wait_ws_gauge(&server, 1, "the client");
    server.publish_ns("px", [1]);
    let (first, payload) = raw.frame();
    assert_eq!(first, FIN | TEXT, "RSV1 must stay clear");
    assert_eq!(env_n(&env(std::str::from_utf8(&payload).unwrap())), 1);
}

#[test]
fn frames_sent_in_the_same_write_as_the_handshake_are_not_lost() {
    let server = Server::start(&[]);
    let mut after = frame(
        FIN | TEXT,
        true,
        br#"{"op":"subscribe","topics":["early"],"ref":"e"}"#,
    );
    after.extend(frame(FIN | PING, true, b"early-ping"));
    let mut raw = Raw::open_with(server.addr, &upgrade_request("/ws", ""), &after);
    let mut got_ack = false;
    let mut got_pong = false;
    while !(got_ack && got_pong) {
        let (first, payload) = raw.frame();
        match first {
            f if f == FIN | TEXT => {
                assert_answer(
                    std::str::from_utf8(&payload).unwrap(),
                    "ack",
                    Some(r#""e""#),
                );
                got_ack = true;
            }
            f if f == FIN | PONG => {
                assert_eq!(payload, b"early-ping");
                got_pong = true;
            }
            f => panic!("unexpected frame {f:#x} {payload:?}"),
        }
    }
    server.publish_ns("early", [1]);
    let (first, payload) = raw.frame();
    assert_eq!(first, FIN | TEXT);
    assert_eq!(env_n(&env(std::str::from_utf8(&payload).unwrap())), 1);
}

// ---- 5. close codes ---------------------------------------------------------------

/// Sends `bytes` on a fresh `/ws` connection and expects a Close with `code`,
/// then TCP closed once we close our side as a client would.
fn violation_closes_with(server: &Server, what: &str, bytes: &[u8], code: u16) {
    let mut raw = Raw::open(server.addr, "/ws?topic=z");
    raw.send(bytes);
    let got = raw.expect_close();
    assert_eq!(got, code, "{what}: close code");
    // The server failed the connection; a client then closes TCP.
    let _ = raw.stream.shutdown(Shutdown::Write);
    assert!(
        raw.closed_within(Duration::from_secs(3)),
        "{what}: the server kept TCP open after our FIN"
    );
}

#[test]
fn protocol_violations_reach_a_real_peer_with_their_close_codes() {
    let server = Server::start(&["--max-message-bytes", "1KiB"]);
    let sub = br#"{"op":"subscribe","topics":["q"]}"#;
    let big = vec![b'a'; 2000];
    let mut fragmented_big = frame(TEXT, true, &big[..600]);
    fragmented_big.extend(frame(0x0, true, &big[600..1200]));
    fragmented_big.extend(frame(FIN, true, &big[1200..]));
    let mut split_bad_utf8 = frame(TEXT, true, "h\u{e9}".as_bytes().split_last().unwrap().1);
    split_bad_utf8.extend(frame(FIN, true, b"\xff"));
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "an unmasked client frame",
            frame(FIN | TEXT, false, sub),
            1002,
        ),
        ("reserved opcode 0x3", frame(FIN | 0x3, true, b""), 1002),
        ("reserved opcode 0xB", frame(FIN | 0xB, true, b""), 1002),
        (
            "a ping of 126 bytes",
            frame(FIN | PING, true, &[b'p'; 126]),
            1002,
        ),
        (
            "RSV1 without an extension",
            frame(FIN | 0x40 | TEXT, true, sub),
            1002,
        ),
        (
            "invalid UTF-8 in a text message",
            frame(FIN | TEXT, true, b"ok\xff\xfe"),
            1007,
        ),
        ("invalid UTF-8 across fragments", split_bad_utf8, 1007),
        (
            "a text message over --max-message-bytes",
            frame(FIN | TEXT, true, &big),
            1009,
        ),
        (
            "a fragmented message over --max-message-bytes",
            fragmented_big,
            1009,
        ),
        (
            "close code 1005 in a Close",
            frame(FIN | CLOSE, true, &close_payload(1005, "")),
            1002,
        ),
        (
            "a one-byte Close body",
            frame(FIN | CLOSE, true, &[3]),
            1002,
        ),
    ];
    for (what, bytes, code) in &cases {
        violation_closes_with(&server, what, bytes, *code);
    }
    wait_ws_gauge(&server, 0, "after the violations");
    server.assert_no_panic();
}

#[test]
fn a_client_close_1000_is_echoed_then_the_server_closes_tcp() {
    let server = Server::start(&[]);
    let mut raw = Raw::open(server.addr, "/ws?topic=z");
    wait_ws_gauge(&server, 1, "the client");
    raw.send(&frame(FIN | CLOSE, true, &close_payload(1000, "bye")));
    assert_eq!(raw.expect_close(), 1000, "the echo of our code");
    assert!(
        raw.closed_within(Duration::from_secs(3)),
        "the server closes TCP first after the close handshake (RFC 6455 §7.1.1)"
    );
    wait_ws_gauge(&server, 0, "after the close handshake");
}

#[test]
fn a_ping_gets_a_pong_with_the_same_payload() {
    let server = Server::start(&[]);
    let mut raw = Raw::open(server.addr, "/ws?topic=z");
    for payload in [&b""[..], b"hello", &[0xa5; 125]] {
        raw.send(&frame(FIN | PING, true, payload));
        let (first, got) = raw.frame();
        assert_eq!(first, FIN | PONG);
        assert_eq!(got, payload);
    }
    drop(raw);
    wait_ws_gauge(&server, 0, "after the client left");
}

// ---- 6. heartbeat and idle ----------------------------------------------------------

/// Opens a raw `/ws` client that never sends a byte after its handshake and reads
/// until the server's Close: (the client, when the handshake ended, the close
/// code, when the Close arrived, pings seen before it).
fn silent_client_until_close(server: &Server) -> (Raw, Instant, u16, Duration, usize) {
    let mut raw = Raw::open(server.addr, "/ws?topic=quiet");
    let start = Instant::now();
    let mut pings = 0;
    let code = loop {
        let (first, payload) = raw
            .try_frame(Duration::from_secs(4))
            .unwrap_or_else(|e| panic!("no close after {:?}: {e}", start.elapsed()));
        match first & 0x0f {
            PING => pings += 1,
            CLOSE => break u16::from_be_bytes([payload[0], payload[1]]),
            op => panic!("unexpected opcode {op:#x}"),
        }
    };
    (raw, start, code, start.elapsed(), pings)
}

#[test]
fn a_silent_client_gets_pings_and_is_closed_within_two_seconds_of_the_idle_timeout() {
    let server = Server::start(&["--heartbeat", "500ms", "--idle-timeout", "1500ms"]);
    let idle_before = server.metric_sum("ringcast_idle_timeouts_total");
    let (mut raw, start, _code, closed_at, pings) = silent_client_until_close(&server);
    assert!(pings >= 1, "no heartbeat ping before the idle close");
    assert!(
        closed_at < Duration::from_millis(2500),
        "the idle close came after {closed_at:?}"
    );
    assert!(
        server.metric_sum("ringcast_idle_timeouts_total") >= idle_before + 1.0,
        "not counted as an idle timeout:\n{}",
        server.metrics()
    );
    // We never answer, as a dead peer would not: the server must not wait for us.
    let eof = raw.closed_within(Duration::from_millis(3000).saturating_sub(start.elapsed()));
    assert!(
        eof,
        "TCP still open {:?} after the handshake (Close frame at {closed_at:?}); \
         ws gauge now {}",
        start.elapsed(),
        server.metric_sum(WS)
    );
    wait_ws_gauge(&server, 0, "after the idle close");
}

/// The server cut the connection, so it must let go of it even though the peer
/// never says another word (no wait longer than the close handshake's bound).
#[test]
fn a_silent_client_closed_for_idleness_has_its_tcp_connection_released() {
    let server = Server::start(&["--heartbeat", "500ms", "--idle-timeout", "1500ms"]);
    let baseline = server.settled_fd_count();
    let (mut raw, start, code, closed_at, _) = silent_client_until_close(&server);
    // The gauge first: the session ends at the latest after its close timeout (5 s).
    wait_ws_gauge(&server, 0, "after the idle close");
    let gauge_zero_at = start.elapsed();
    let eof = raw.closed_within(Duration::from_secs(4));
    assert!(
        eof,
        "idle close {code} at {closed_at:?}, ws gauge 0 at {gauge_zero_at:?}, but TCP is \
         still open at {:?}: the server holds the descriptor ({} fds now, {baseline} before \
         the client):\n{}",
        start.elapsed(),
        server.settled_fd_count(),
        server.fd_listing()
    );
}

#[test]
fn a_client_that_answers_pings_stays_connected() {
    let server = Server::start(&["--heartbeat", "500ms", "--idle-timeout", "1500ms"]);
    let mut c = Client::connect(server.addr, "/ws?topic=alive");
    wait_ws_gauge(&server, 1, "the client");
    let start = Instant::now();
    // Reading answers pings (tungstenite queues the pong and flushes it).
    let mut pings = 0;
    while start.elapsed() < Duration::from_secs(3) {
        let left = Duration::from_secs(3).saturating_sub(start.elapsed());
        c.ws.get_mut()
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        match c.ws.read() {
            Ok(Message::Ping(_)) => pings += 1,
            Ok(m) => panic!("unexpected {m:?}"),
            Err(e) if is_timeout(&e) => {}
            Err(e) => panic!("disconnected after {:?}: {e}", start.elapsed()),
        }
    }
    assert!(
        pings >= 2,
        "only {pings} pings in 3 s with --heartbeat 500ms"
    );
    assert_eq!(server.metric_sum(WS), 1.0);
    assert_eq!(server.metric_sum("ringcast_idle_timeouts_total"), 0.0);
    server.publish_ns("alive", [1]);
    assert_eq!(env_n(&c.next_env()), 1);
}

// ---- 7. echo -------------------------------------------------------------------------

#[test]
fn echo_returns_text_as_text_and_binary_as_binary_up_to_a_mebibyte() {
    let server = Server::start(&["--echo", "--max-message-bytes", "2MiB"]);
    let mut c = Client::connect(server.addr, "/echo");
    c.send("h\u{e9}llo \u{1f600}");
    match c.try_next(READ_TIMEOUT) {
        Ok(Message::Text(t)) => assert_eq!(t.as_str(), "h\u{e9}llo \u{1f600}"),
        other => panic!("expected the text back, got {other:?}"),
    }
    c.ws.send(Message::binary(vec![0u8, 1, 2, 255])).unwrap();
    match c.try_next(READ_TIMEOUT) {
        Ok(Message::Binary(b)) => assert_eq!(&b[..], [0, 1, 2, 255]),
        other => panic!("expected the binary back, got {other:?}"),
    }
    let big: Vec<u8> = (0..1usize << 20).map(|i| (i * 31 % 251) as u8).collect();
    c.ws.send(Message::binary(big.clone())).unwrap();
    match c.try_next(READ_TIMEOUT) {
        Ok(Message::Binary(b)) => {
            assert_eq!(b.len(), big.len());
            assert!(b[..] == big[..], "the 1 MiB message came back altered");
        }
        other => panic!("expected the 1 MiB binary back, got {other:?}"),
    }
    c.ws.close(None).unwrap();
}

#[test]
fn without_the_echo_flag_echo_is_a_404() {
    let server = Server::start(&[]);
    let r = request(server.addr, upgrade_request("/echo", "").as_bytes());
    assert_eq!(r.status, 404, "{}", r.text());
}

// ---- 8. drain --------------------------------------------------------------------------

#[test]
fn sigterm_sends_close_1001_to_every_client_and_exits_zero_within_the_drain_timeout() {
    let mut server = Server::start(&["--drain-timeout", "3s"]);
    let mut clients: Vec<Client> = (0..6)
        .map(|_| Client::connect(server.addr, "/ws?topic=d"))
        .collect();
    wait_ws_gauge(&server, clients.len(), "the clients");
    let sent = Instant::now();
    server.signal(libc::SIGTERM);
    for (i, c) in clients.iter_mut().enumerate() {
        match c.try_next(Duration::from_secs(3)) {
            Ok(Message::Close(Some(f))) => {
                assert_eq!(f.code, CloseCode::Away, "client {i}: {f:?}");
            }
            other => panic!("client {i}: expected close 1001, got {other:?}"),
        }
        // tungstenite answers the Close; then the server closes TCP.
        match c.try_next(Duration::from_secs(3)) {
            Err(tungstenite::Error::ConnectionClosed) => {}
            other => panic!("client {i}: expected the end, got {other:?}"),
        }
    }
    let status = server
        .wait_exit(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("still running {:?} after SIGTERM", sent.elapsed()));
    assert!(
        status.success(),
        "exit status {status}: {}",
        server.stderr_tail()
    );
    assert!(
        sent.elapsed() < Duration::from_secs(3),
        "exit took {:?}, more than --drain-timeout although every client left",
        sent.elapsed()
    );
}
