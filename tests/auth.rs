//! Access control against the real binary over real sockets: every 401 and 403 of
//! `/sse`, `/ws` and `POST /publish`, the three places a token may travel, topic
//! grants at the door and on WebSocket control ops, that a client never sees a
//! topic it was not granted, browser origins and CORS preflights, token expiry on
//! live streams (WS close 1008, SSE `ringcast.expired`), the public endpoints, and
//! the refusal of a short secret at start.
//!
//! Tokens are made with the crate's own signer (`ringcast::proto::token::sign`);
//! tokens it would never make (wrong algorithm, `alg: none`) are built by hand.
//! Every wait is bounded.

pub mod common;

use std::io::{ErrorKind, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use ringcast::proto::token::{sign, TokenKey};
use sha2::Sha256;
use simd_json::prelude::*;
use simd_json::OwnedValue;
use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

use common::*;

const SECRET: &str = "auth-tests-secret-0123456789abcdef-xyz";
const PUBLISH_KEY: &str = "pk-auth-tests";
const WWW_AUTHENTICATE: &str = "Bearer error=\"invalid_token\"";

// ---- tokens -------------------------------------------------------------------

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// A token signed with [`SECRET`] over `claims` (JSON).
fn token(claims: &str) -> String {
    sign(&TokenKey::new(SECRET.as_bytes()), claims.as_bytes())
}

/// A token for `topics` (subscribe) and `publish` (pub), valid for ten minutes.
fn grant(topics: &[&str], publish: &[&str]) -> String {
    let list = |l: &[&str]| {
        l.iter()
            .map(|t| format!("\"{t}\""))
            .collect::<Vec<_>>()
            .join(",")
    };
    token(&format!(
        r#"{{"exp":{},"topics":[{}],"pub":[{}]}}"#,
        unix_now() + 600,
        list(topics),
        list(publish)
    ))
}

/// A compact JWS with the given header, claims and HMAC-SHA256 key: lets a test
/// build tokens the crate's signer never makes.
fn raw_token(header: &str, claims: &str, key: &[u8]) -> String {
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("any key length");
    mac.update(signing_input.as_bytes());
    let tag = mac.finalize().into_bytes();
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(tag))
}

/// Every kind of bad token, with the reason the 401 body must give.
fn bad_tokens() -> Vec<(&'static str, String, &'static str)> {
    let exp = unix_now() + 600;
    let claims = format!(r#"{{"exp":{exp},"topics":["news"],"pub":["news"]}}"#);
    let good = token(&claims);
    let mut tampered = good.clone();
    // Flip the last signature character to another base64url character.
    let last = tampered.pop().expect("non-empty");
    tampered.push(if last == 'A' { 'Q' } else { 'A' });
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(&claims)
    );
    vec![
        (
            "signed with another secret",
            sign(
                &TokenKey::new(b"another-secret-0123456789abcdef-xyz"),
                claims.as_bytes(),
            ),
            "token signature does not match",
        ),
        (
            "tampered signature",
            tampered,
            "token signature does not match",
        ),
        (
            "expired",
            token(&format!(
                r#"{{"exp":{},"topics":["news"],"pub":["news"]}}"#,
                unix_now() - 1
            )),
            "token has expired",
        ),
        (
            "alg HS512 (valid HS256 tag)",
            raw_token(r#"{"alg":"HS512","typ":"JWT"}"#, &claims, SECRET.as_bytes()),
            "token alg must be HS256",
        ),
        ("alg none", none, "token alg must be HS256"),
        (
            "no exp",
            token(r#"{"topics":["news"],"pub":["news"]}"#),
            "token has no exp claim",
        ),
        (
            "not a JWT",
            "not-a-token".to_owned(),
            "token must be header.payload.signature",
        ),
    ]
}

// ---- servers and raw requests ----------------------------------------------------

/// A server with auth on, the `rc` auth cookie and a publisher key.
fn auth_server(extra: &[&str]) -> Server {
    let mut args = vec![
        "--auth-secret",
        SECRET,
        "--auth-cookie",
        "rc",
        "--publish-key",
        PUBLISH_KEY,
    ];
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// `GET path` with extra header lines (each ending in CRLF); one response.
fn get(server: &Server, path: &str, extra: &str) -> Response {
    request(
        server.addr,
        format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{extra}\r\n").as_bytes(),
    )
}

/// `POST /publish?topic=T` with `body` and extra header lines; one response.
fn post_publish(server: &Server, topic: &str, body: &str, extra: &str) -> Response {
    request(
        server.addr,
        format!(
            "POST /publish?topic={topic} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n{extra}\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
}

fn bearer(tok: &str) -> String {
    format!("Authorization: Bearer {tok}\r\n")
}

/// Asserts a 401 with `WWW-Authenticate` and `reason` in the body.
fn assert_401(r: &Response, reason: &str, what: &str) {
    assert_eq!(r.status, 401, "{what}: {}", r.text());
    assert_eq!(
        r.header("WWW-Authenticate"),
        Some(WWW_AUTHENTICATE),
        "{what}: WWW-Authenticate"
    );
    assert!(
        r.text().contains(reason),
        "{what}: body {:?} should say {reason:?}",
        r.text()
    );
}

fn assert_403(r: &Response, reason: &str, what: &str) {
    assert_eq!(r.status, 403, "{what}: {}", r.text());
    assert!(
        r.text().contains(reason),
        "{what}: body {:?} should say {reason:?}",
        r.text()
    );
}

/// The first `{"ok":true,"id":..}` id of publishing `data` to `topic` over the socket.
fn publish(server: &Server, topic: &str, data: &str) -> String {
    answer_id(&server.publish_socket(&[format!("{{\"topic\":\"{topic}\",\"data\":{data}}}")])[0])
}

fn field<'a>(v: &'a OwnedValue, key: &str) -> Option<&'a str> {
    v.get(key).and_then(|x| x.as_str())
}

// ---- a WebSocket client with headers ----------------------------------------------

struct Ws {
    ws: WebSocket<TcpStream>,
}

/// Upgrades `path` with extra headers; `Err` carries the refusal (status, body).
fn ws_try(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Result<Ws, (u16, String)> {
    let stream = TcpStream::connect(addr).expect("connect WS");
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    stream.set_nodelay(true).unwrap();
    let mut req = format!("ws://{addr}{path}")
        .into_client_request()
        .expect("WS request");
    for (name, value) in headers {
        req.headers_mut().insert(
            tungstenite::http::HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            HeaderValue::from_str(value).expect("header value"),
        );
    }
    match tungstenite::client::client(req, stream) {
        Ok((ws, resp)) => {
            assert_eq!(resp.status().as_u16(), 101);
            Ok(Ws { ws })
        }
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
            let body = resp
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            Err((resp.status().as_u16(), body))
        }
        Err(e) => panic!("WS handshake on {path}: {e}"),
    }
}

fn ws(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Ws {
    ws_try(addr, path, headers)
        .unwrap_or_else(|(status, body)| panic!("WS {path}: refused {status}: {body}"))
}

/// Asserts an upgrade is refused with `status` and `reason` in the body.
fn assert_ws_refused(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    status: u16,
    reason: &str,
) {
    match ws_try(addr, path, headers) {
        Ok(_) => panic!("WS {path} {headers:?}: upgraded, expected {status}"),
        Err((s, body)) => {
            assert_eq!(s, status, "WS {path}: {body}");
            assert!(
                body.contains(reason),
                "WS {path}: body {body:?} should say {reason:?}"
            );
        }
    }
}

fn is_timeout(e: &tungstenite::Error) -> bool {
    matches!(e, tungstenite::Error::Io(io) if matches!(io.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock))
}

impl Ws {
    fn send(&mut self, text: &str) {
        self.ws.send(Message::text(text)).expect("WS send");
    }

    /// The next text or close message within `timeout` (pings skipped); `None` on timeout.
    fn next(&mut self, timeout: Duration) -> Option<Message> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.ws.get_mut().set_read_timeout(Some(left)).unwrap();
            match self.ws.read() {
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => continue,
                Ok(m) => return Some(m),
                Err(e) if is_timeout(&e) => return None,
                Err(e) => panic!("WS read: {e}"),
            }
        }
    }

    fn next_json(&mut self) -> OwnedValue {
        match self.next(READ_TIMEOUT) {
            Some(Message::Text(t)) => json(t.as_str()),
            other => panic!("expected a text message, got {other:?}"),
        }
    }

    /// The next message envelope, skipping acks and warm-up messages.
    fn next_envelope(&mut self) -> OwnedValue {
        loop {
            let v = self.next_json();
            if v.get("op").is_none() && !is_warmup(&v) {
                return v;
            }
        }
    }

    /// Waits until this client's subscription to `topic` is live: publishes
    /// warm-up messages until one arrives, then drains the rest of them.
    ///
    /// A WebSocket gets its 101 (and a subscribe op its ack) before the topic's
    /// home core has recorded the subscription, and nothing tells the client when
    /// it has (SSE has its id-only cursor block): a message published in between
    /// is lost. See `tests/subscribe_race.rs`.
    fn wait_live(&mut self, server: &Server, topic: &str) {
        let deadline = Instant::now() + READ_TIMEOUT;
        static WARMUP: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        loop {
            let k = WARMUP.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            assert!(Instant::now() < deadline, "{topic}: never live");
            publish(server, topic, &format!(r#"{{"warmup":{k}}}"#));
            let Some(Message::Text(t)) = self.next(Duration::from_millis(300)) else {
                continue;
            };
            let mut v = json(t.as_str());
            let warmup = |v: &OwnedValue| {
                v.get("data")
                    .and_then(|d| d.get("warmup"))
                    .and_then(|w| w.as_u64())
            };
            while warmup(&v) != Some(k) {
                v = self.next_json();
            }
            return;
        }
    }
}

/// A warm-up message of [`Ws::wait_live`].
fn is_warmup(envelope: &OwnedValue) -> bool {
    envelope
        .get("data")
        .is_some_and(|d| d.get("warmup").is_some())
}

/// The next SSE message envelope that is not a warm-up.
fn next_sse(c: &mut SseClient) -> Envelope {
    loop {
        let e = envelope(&c.next_event());
        if e.data.get("warmup").is_none() {
            return e;
        }
    }
}

// ---- 401: missing and invalid tokens -------------------------------------------------

#[test]
fn without_a_token_sse_ws_and_publish_are_401_with_www_authenticate() {
    let server = auth_server(&[]);
    assert_401(&get(&server, "/sse?topic=news", ""), "missing token", "SSE");
    assert_ws_refused(server.addr, "/ws?topic=news", &[], 401, "missing token");
    // A WebSocket with no topics still needs a token.
    assert_ws_refused(server.addr, "/ws", &[], 401, "missing token");
    assert_401(
        &post_publish(&server, "news", "1", ""),
        "missing token or publisher key",
        "POST /publish",
    );
    let r = get(&server, "/sse?topic=news", "");
    assert_eq!(r.header("Access-Control-Allow-Origin"), None);
    server.assert_no_panic();
}

#[test]
fn every_invalid_token_is_a_401_naming_why_on_sse_ws_and_publish() {
    let server = auth_server(&[]);
    for (what, tok, reason) in bad_tokens() {
        let ctx = format!("{what} ({tok})");
        assert_401(
            &get(&server, "/sse?topic=news", &bearer(&tok)),
            reason,
            &format!("SSE header, {ctx}"),
        );
        assert_401(
            &get(&server, &format!("/sse?topic=news&token={tok}"), ""),
            reason,
            &format!("SSE ?token=, {ctx}"),
        );
        assert_401(
            &get(&server, "/sse?topic=news", &format!("Cookie: rc={tok}\r\n")),
            reason,
            &format!("SSE cookie, {ctx}"),
        );
        let auth = format!("Bearer {tok}");
        assert_ws_refused(
            server.addr,
            "/ws?topic=news",
            &[("Authorization", &auth)],
            401,
            reason,
        );
        assert_ws_refused(
            server.addr,
            &format!("/ws?topic=news&token={tok}"),
            &[],
            401,
            reason,
        );
        assert_401(
            &post_publish(&server, "news", "1", &bearer(&tok)),
            reason,
            &format!("POST /publish, {ctx}"),
        );
    }
    // A wrong publisher key is no better than a bad token.
    let r = post_publish(&server, "news", "1", &bearer("pk-wrong"));
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.header("WWW-Authenticate"), Some(WWW_AUTHENTICATE));
    server.assert_no_panic();
}

// ---- a valid token, wherever it travels -------------------------------------------------

#[test]
fn a_valid_token_in_the_header_the_query_or_the_cookie_admits_sse_and_ws_and_they_receive() {
    let server = auth_server(&[]);
    let tok = grant(&["news"], &[]);
    let mut sse = vec![
        (
            "SSE header",
            SseClient::connect_with(server.addr, "topic=news", &bearer(&tok)),
        ),
        (
            "SSE query",
            SseClient::connect_with(server.addr, &format!("topic=news&token={tok}"), ""),
        ),
        (
            "SSE cookie",
            SseClient::connect_with(
                server.addr,
                "topic=news",
                &format!("Cookie: theme=dark; rc={tok}; x=1\r\n"),
            ),
        ),
    ];
    let auth = format!("Bearer {tok}");
    let cookie = format!("rc={tok}");
    let mut wss = vec![
        (
            "WS header",
            ws(server.addr, "/ws?topic=news", &[("Authorization", &auth)]),
        ),
        (
            "WS query",
            ws(server.addr, &format!("/ws?topic=news&token={tok}"), &[]),
        ),
        (
            "WS cookie",
            ws(server.addr, "/ws?topic=news", &[("Cookie", &cookie)]),
        ),
    ];
    for (_, c) in &mut sse {
        c.wait_cursor();
    }
    for (_, c) in &mut wss {
        c.wait_live(&server, "news");
    }
    let id = publish(&server, "news", r#"{"n":1}"#);
    for (what, c) in &mut sse {
        let e = next_sse(c);
        assert_eq!(
            (e.topic.as_str(), e.id.as_str()),
            ("news", id.as_str()),
            "{what}"
        );
    }
    for (what, c) in &mut wss {
        let e = c.next_envelope();
        assert_eq!(field(&e, "id"), Some(id.as_str()), "{what}");
    }
}

#[test]
fn the_header_token_wins_over_a_valid_query_token() {
    let server = auth_server(&[]);
    let tok = grant(&["news"], &[]);
    let r = get(
        &server,
        &format!("/sse?topic=news&token={tok}"),
        &bearer("garbage"),
    );
    assert_401(
        &r,
        "token must be header.payload.signature",
        "bad header, good query",
    );
}

// ---- 403: topics not granted -------------------------------------------------------------

#[test]
fn a_topic_the_token_does_not_grant_is_a_403_naming_it_on_sse_and_ws() {
    let server = auth_server(&[]);
    let tok = grant(&["news", "chat.*"], &[]);
    for query in [
        "topic=secret",
        "topic=news&topic=secret",
        "topics=chat.a,secret",
        "topic=chat",
        "topic=chatroom",
    ] {
        let named = if query.ends_with("chat") {
            "chat"
        } else if query.ends_with("chatroom") {
            "chatroom"
        } else {
            "secret"
        };
        let reason = format!("topic not granted: {named}");
        assert_403(
            &get(&server, &format!("/sse?{query}&token={tok}"), ""),
            &reason,
            &format!("SSE {query}"),
        );
        assert_ws_refused(
            server.addr,
            &format!("/ws?{query}&token={tok}"),
            &[],
            403,
            &reason,
        );
    }
    // The patterns grant what they should.
    let mut ok = SseClient::connect_with(
        server.addr,
        &format!("topic=news&topic=chat.a.b&token={tok}"),
        "",
    );
    ok.wait_cursor();
}

#[test]
fn a_ws_subscribe_op_for_a_topic_not_granted_gets_an_error_frame_and_the_connection_lives() {
    let server = auth_server(&[]);
    let tok = grant(&["news"], &[]);
    let mut c = ws(server.addr, &format!("/ws?token={tok}"), &[]);
    c.send(r#"{"op":"subscribe","topics":["news","secret"],"ref":7}"#);
    let answer = c.next_json();
    assert_eq!(field(&answer, "op"), Some("error"), "{answer:?}");
    assert_eq!(answer.get("ref").and_then(|r| r.as_u64()), Some(7));
    assert_eq!(field(&answer, "error"), Some("topic not granted: secret"));
    // Nothing of the refused op took effect, and the connection still works.
    c.send(r#"{"op":"subscribe","topics":["news"],"ref":8}"#);
    let ack = c.next_json();
    assert_eq!(field(&ack, "op"), Some("ack"), "{ack:?}");
    assert_eq!(ack.get("ref").and_then(|r| r.as_u64()), Some(8));
    c.wait_live(&server, "news");
    publish(&server, "secret", r#"{"leak":true}"#);
    let id = publish(&server, "news", r#"{"n":2}"#);
    let e = c.next_envelope();
    assert_eq!(
        (field(&e, "topic"), field(&e, "id")),
        (Some("news"), Some(id.as_str())),
        "the first message seen is the granted topic's: {e:?}"
    );
}

#[test]
fn a_ws_publish_op_needs_a_pub_grant_for_its_topic() {
    let server = auth_server(&[]);
    let reader = grant(&["news"], &[]);
    let mut c = ws(server.addr, &format!("/ws?topic=news&token={reader}"), &[]);
    c.wait_live(&server, "news");
    c.send(r#"{"op":"publish","topic":"news","data":{"x":1},"ref":"p1"}"#);
    let answer = c.next_json();
    assert_eq!(field(&answer, "op"), Some("error"), "{answer:?}");
    assert_eq!(field(&answer, "ref"), Some("p1"));
    assert_eq!(
        field(&answer, "error"),
        Some("publishing not granted: news")
    );
    // Still connected: a message published elsewhere arrives.
    let id = publish(&server, "news", r#"{"n":1}"#);
    assert_eq!(field(&c.next_envelope(), "id"), Some(id.as_str()));

    let writer = grant(&["news"], &["news.*", "news"]);
    let mut w = ws(server.addr, &format!("/ws?token={writer}"), &[]);
    w.send(r#"{"op":"publish","topic":"news","data":{"x":2},"ref":1}"#);
    let ack = w.next_json();
    assert_eq!(field(&ack, "op"), Some("ack"), "{ack:?}");
    let acked = field(&ack, "id").expect("ack carries the id").to_owned();
    assert_eq!(field(&c.next_envelope(), "id"), Some(acked.as_str()));
    w.send(r#"{"op":"publish","topic":"sport","data":1,"ref":2}"#);
    assert_eq!(
        field(&w.next_json(), "error"),
        Some("publishing not granted: sport")
    );
}

// ---- POST /publish ------------------------------------------------------------------------

#[test]
fn post_publish_takes_the_publisher_key_or_a_token_whose_pub_grants_the_topic() {
    let server = auth_server(&[]);
    let mut sub = SseClient::connect_with(
        server.addr,
        &format!("topic=news&token={}", grant(&["news"], &[])),
        "",
    );
    sub.wait_cursor();

    let r = post_publish(&server, "news", r#"{"by":"key"}"#, &bearer(PUBLISH_KEY));
    assert_eq!(r.status, 202, "publisher key: {}", r.text());
    assert!(r.text().contains("\"id\""), "{}", r.text());

    let tok = grant(&[], &["news"]);
    let r = post_publish(&server, "news", r#"{"by":"token"}"#, &bearer(&tok));
    assert_eq!(r.status, 202, "token with pub: {}", r.text());

    let r = post_publish(&server, "secret", "1", &bearer(&tok));
    assert_403(
        &r,
        "publishing not granted: secret",
        "token without pub for the topic",
    );
    // A subscribe grant is not a publish grant.
    let r = post_publish(&server, "news", "1", &bearer(&grant(&["news"], &[])));
    assert_403(&r, "publishing not granted: news", "token with topics only");

    let by_key = next_sse(&mut sub);
    let by_token = next_sse(&mut sub);
    assert_eq!(field(&by_key.data, "by"), Some("key"));
    assert_eq!(field(&by_token.data, "by"), Some("token"));
    assert!(sub.quiet_for(Duration::from_millis(200)));
}

// ---- isolation ---------------------------------------------------------------------------------

#[test]
fn a_client_never_receives_a_message_of_a_topic_it_was_not_granted() {
    let server = auth_server(&[]);
    let tok = grant(&["news"], &[]);
    let mut sse = SseClient::connect_with(server.addr, &format!("topic=news&token={tok}"), "");
    sse.wait_cursor();
    let mut w = ws(server.addr, &format!("/ws?topic=news&token={tok}"), &[]);
    // A privileged client on both topics sees everything, so the order is known.
    let all = grant(&["news", "secret"], &[]);
    let mut witness = ws(
        server.addr,
        &format!("/ws?topic=news&topic=secret&token={all}"),
        &[],
    );
    w.wait_live(&server, "news");
    witness.wait_live(&server, "news");
    witness.wait_live(&server, "secret");
    let mut news_ids = Vec::new();
    for n in 0..5 {
        publish(&server, "secret", &format!(r#"{{"secret":{n}}}"#));
        news_ids.push(publish(&server, "news", &format!(r#"{{"n":{n}}}"#)));
    }
    for _ in 0..10 {
        witness.next_envelope();
    }
    for id in &news_ids {
        let e = next_sse(&mut sse);
        assert_eq!(
            (e.topic.as_str(), e.id.as_str()),
            ("news", id.as_str()),
            "SSE"
        );
        let e = w.next_envelope();
        assert_eq!(
            (field(&e, "topic"), field(&e, "id")),
            (Some("news"), Some(id.as_str())),
            "WS"
        );
    }
    assert!(sse.quiet_for(Duration::from_millis(200)), "SSE got more");
    assert!(w.next(Duration::from_millis(200)).is_none(), "WS got more");
}

// ---- origins and CORS ------------------------------------------------------------------------------

#[test]
fn with_auth_and_no_allowed_origins_only_the_servers_own_origin_or_no_origin_is_admitted() {
    let server = auth_server(&[]);
    let tok = grant(&["news"], &[]);
    let auth = bearer(&tok);
    // Another origin: 403, even with a valid token.
    assert_403(
        &get(
            &server,
            "/sse?topic=news",
            &format!("{auth}Origin: http://evil.example\r\n"),
        ),
        "origin not allowed",
        "SSE evil origin",
    );
    let bearer_value = format!("Bearer {tok}");
    assert_ws_refused(
        server.addr,
        "/ws?topic=news",
        &[
            ("Authorization", &bearer_value),
            ("Origin", "http://evil.example"),
        ],
        403,
        "origin not allowed",
    );
    // The server's own origin (the Host it was asked by): admitted.
    let host = server.addr.to_string();
    let own = format!("http://{host}");
    let mut same = SseClient::connect_with(
        server.addr,
        &format!("topic=news&token={tok}"),
        "Origin: http://t\r\n",
    );
    same.wait_cursor();
    assert!(
        same.head.contains("Access-Control-Allow-Origin: http://t"),
        "SSE same-origin head: {}",
        same.head
    );
    ws(
        server.addr,
        "/ws?topic=news",
        &[("Authorization", &bearer_value), ("Origin", &own)],
    );
    // No Origin: not a browser, judged by the token alone.
    SseClient::connect_with(server.addr, &format!("topic=news&token={tok}"), "").wait_cursor();
    ws(
        server.addr,
        "/ws?topic=news",
        &[("Authorization", &bearer_value)],
    );
    assert_401(
        &get(&server, "/sse?topic=news", ""),
        "missing token",
        "no Origin, no token",
    );
}

#[test]
fn listed_origins_are_admitted_others_refused_and_a_preflight_from_a_listed_origin_gets_cors() {
    let server = auth_server(&[
        "--allowed-origins",
        "https://app.example,https://Other.example/",
    ]);
    let tok = grant(&["news"], &[]);
    let bearer_value = format!("Bearer {tok}");
    for origin in [
        "https://app.example",
        "https://other.example",
        "HTTPS://APP.EXAMPLE",
    ] {
        let mut c = SseClient::connect_with(
            server.addr,
            &format!("topic=news&token={tok}"),
            &format!("Origin: {origin}\r\n"),
        );
        c.wait_cursor();
        assert!(
            c.head.contains("Access-Control-Allow-Credentials: true"),
            "{}",
            c.head
        );
        ws(
            server.addr,
            "/ws?topic=news",
            &[("Authorization", &bearer_value), ("Origin", origin)],
        );
    }
    for origin in [
        "https://evil.example",
        "http://app.example",
        "https://app.example.evil",
    ] {
        assert_403(
            &get(
                &server,
                &format!("/sse?topic=news&token={tok}"),
                &format!("Origin: {origin}\r\n"),
            ),
            "origin not allowed",
            origin,
        );
        assert_ws_refused(
            server.addr,
            "/ws?topic=news",
            &[("Authorization", &bearer_value), ("Origin", origin)],
            403,
            "origin not allowed",
        );
    }
    // A preflight for a cross-origin publish.
    let preflight = |origin: &str| {
        request(
            server.addr,
            format!(
                "OPTIONS /publish?topic=news HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
                 Origin: {origin}\r\nAccess-Control-Request-Method: POST\r\n\
                 Access-Control-Request-Headers: authorization, content-type\r\n\r\n"
            )
            .as_bytes(),
        )
    };
    let r = preflight("https://app.example");
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(
        r.header("Access-Control-Allow-Origin"),
        Some("https://app.example")
    );
    assert_eq!(r.header("Access-Control-Allow-Credentials"), Some("true"));
    let methods = r.header("Access-Control-Allow-Methods").unwrap_or_default();
    assert!(methods.contains("POST"), "Allow-Methods: {methods}");
    let headers = r
        .header("Access-Control-Allow-Headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(
        headers.contains("authorization"),
        "Allow-Headers: {headers}"
    );
    let r = preflight("https://evil.example");
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.header("Access-Control-Allow-Origin"), None);
}

// ---- expiry -----------------------------------------------------------------------------------------

/// How long after `exp` (Unix seconds) it is now, in milliseconds; negative when
/// it is still before `exp`.
fn ms_after_exp(exp: u64) -> f64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64();
    (now - exp as f64) * 1000.0
}

/// `exp` has no leeway either way: the token is valid while `now < exp`, so a
/// close must come at or after `exp`, and within one tick (10 ms) plus
/// scheduling slack; this test allows 1 s of slack on a loaded machine.
///
/// `early_ms`: how early a close is tolerated. 0 is the contract; the server
/// currently closes up to one tick (10 ms) early (`expiry_tick` in
/// `src/runtime/sse_session.rs` adds a rounded-down `now_tick()` to a rounded-up
/// remainder), so the everyday test tolerates one tick and the strict one is
/// ignored until that is fixed.
fn assert_closed_on_time(what: &str, late_ms: f64, early_ms: f64) {
    assert!(
        late_ms >= -early_ms,
        "{what} was closed {:.3} ms BEFORE exp, while its token was still valid \
         (RFC 7519 §4.1.4, no leeway)",
        -late_ms
    );
    assert!(
        late_ms < 1000.0,
        "{what} was closed {late_ms:.3} ms after exp"
    );
}

#[test]
fn a_token_expiring_in_two_seconds_closes_a_live_ws_with_1008_and_a_live_sse_with_ringcast_expired()
{
    expiry_closes_both(10.0);
}

#[test]
fn a_token_never_closes_a_stream_before_its_exp() {
    for _ in 0..3 {
        expiry_closes_both(0.0);
    }
}

fn expiry_closes_both(early_ms: f64) {
    let server = auth_server(&[]);
    // The first whole second at least 2 s away: `exp` is in whole seconds.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    let exp = (now + Duration::from_secs(2)).as_secs() + 1;
    let tok = token(&format!(r#"{{"exp":{exp},"topics":["news"]}}"#));
    let mut sse = SseClient::connect_with(server.addr, &format!("topic=news&token={tok}"), "");
    sse.wait_cursor();
    let connected_at = ms_after_exp(exp);
    let mut w = ws(server.addr, &format!("/ws?topic=news&token={tok}"), &[]);
    w.wait_live(&server, "news");
    // Both streams work until then.
    let id = publish(&server, "news", r#"{"n":1}"#);
    assert_eq!(next_sse(&mut sse).id, id);
    match w.next(READ_TIMEOUT) {
        Some(Message::Text(t)) => assert_eq!(field(&json(t.as_str()), "id"), Some(id.as_str())),
        other => panic!(
            "the WebSocket got {other:?} {:.3} ms after exp (connected {:.3} ms after exp)",
            ms_after_exp(exp),
            connected_at
        ),
    }

    // Read both from threads so each delay is measured on its own.
    let sse_thread = std::thread::spawn(move || {
        let block = sse
            .try_next_event(Duration::from_secs(5))
            .expect("a ringcast.expired event");
        let late = ms_after_exp(exp);
        assert_eq!(block.kind(), "ringcast.expired", "{block:?}");
        let data = block.json();
        assert!(
            field(&data, "reason").is_some_and(|r| r.contains("expired")),
            "{data:?}"
        );
        // Then the stream ends.
        let end = sse.try_next_block(Duration::from_secs(2));
        assert!(
            matches!(&end, Err(e) if e.kind() == ErrorKind::UnexpectedEof),
            "after ringcast.expired the stream must end, got {end:?}"
        );
        late
    });
    let ws_late = match w.next(Duration::from_secs(5)) {
        Some(Message::Close(Some(frame))) => {
            let late = ms_after_exp(exp);
            assert_eq!(frame.code, CloseCode::Policy, "{frame:?}");
            assert_eq!(frame.reason.as_str(), "token expired");
            late
        }
        other => panic!("expected close 1008, got {other:?}"),
    };
    // Answer the close (tungstenite queues the reply until the next flush).
    let _ = w.ws.flush();
    let sse_late = sse_thread.join().expect("SSE reader");
    println!(
        "token expiry: WS closed {ws_late:+.3} ms after exp, SSE ended {sse_late:+.3} ms after exp"
    );
    assert_closed_on_time("the WebSocket", ws_late, early_ms);
    assert_closed_on_time("the SSE stream", sse_late, early_ms);
    assert!(
        wait_until(Duration::from_secs(5), || server
            .metric_sum("ringcast_connections")
            == 0.0),
        "expired clients still counted:\n{}",
        server.metrics()
    );
    let closed = server.metric_sum("ringcast_connections_closed_total{reason=\"expired\"}");
    assert_eq!(
        closed,
        2.0,
        "both closes counted as expired:\n{}",
        server.metrics()
    );
}

// ---- public endpoints and start-up --------------------------------------------------------------------

#[test]
fn the_demo_page_healthz_and_metrics_stay_public_with_auth_on() {
    let server = auth_server(&[]);
    for path in ["/", "/index.html", "/healthz", "/metrics"] {
        let r = get(&server, path, "");
        assert_eq!(r.status, 200, "{path}: {}", r.text());
    }
    // Even from another origin: they carry nothing a token protects.
    let r = get(&server, "/metrics", "Origin: http://evil.example\r\n");
    assert_eq!(r.status, 200);
}

/// Runs `ringcast serve` with `args` and expects it to exit non-zero at once;
/// returns its stderr.
fn refused_start(args: &[&str]) -> String {
    let dir = TempDir::new();
    let socket = dir.path().join("rc.sock");
    let mut child = Command::new(bin())
        .arg("serve")
        .args([
            "--listen",
            "127.0.0.1:0",
            "--cores",
            "1",
            "--publish-socket",
        ])
        .arg(&socket)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ringcast");
    let mut status = None;
    wait_until(Duration::from_secs(10), || {
        status = child.try_wait().expect("try_wait");
        status.is_some()
    });
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("ringcast serve {args:?} did not refuse to start within 10 s");
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err)
        .expect("read stderr");
    assert!(!status.success(), "serve {args:?} exited 0; stderr: {err}");
    err
}

#[test]
fn a_secret_shorter_than_32_bytes_stops_the_server_at_start_with_a_clear_error() {
    let short = "0123456789abcdef0123456789abcde"; // 31 bytes
    let err = refused_start(&["--auth-secret", short]);
    assert!(err.contains("at least 32 bytes"), "stderr: {err}");
    let dir = TempDir::new();
    let file = dir.path().join("secret");
    // The trailing newline is not part of the secret: 31 bytes + LF is still short.
    std::fs::File::create(&file)
        .and_then(|mut f| f.write_all(format!("{short}\n").as_bytes()))
        .expect("write secret file");
    let err = refused_start(&["--auth-secret-file", file.to_str().expect("utf-8 path")]);
    assert!(err.contains("at least 32 bytes"), "stderr: {err}");
    let err = refused_start(&["--auth-secret-file", "/nonexistent/ringcast-secret"]);
    assert!(
        err.contains("/nonexistent/ringcast-secret"),
        "stderr: {err}"
    );
}
