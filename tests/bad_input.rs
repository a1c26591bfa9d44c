//! Malformed and oversized input: each gets a clear status with a one-line reason,
//! and the server keeps serving (a stream opened before still gets a publish
//! afterwards, and nothing panicked).

pub mod common;

use common::*;

/// A server with small limits and a stream opened before the bad input.
struct Fixture {
    server: Server,
    watcher: SseClient,
}

impl Fixture {
    fn new() -> Fixture {
        let server = Server::start(&[
            "--max-header-bytes",
            "1KiB",
            "--max-body-bytes",
            "1KiB",
            "--max-message-bytes",
            "1KiB",
        ]);
        let mut watcher = server.sse("topic=watch");
        watcher.wait_cursor();
        Fixture { server, watcher }
    }

    /// The stream opened before still receives a publish; nothing panicked.
    fn still_serving(mut self) {
        let (status, body) = self.server.http_publish("watch", "{\"n\":42}");
        assert_eq!(status, 202, "{body}");
        let e = envelope(&self.watcher.next_event());
        assert_eq!(payload_n(&e), 42);
        self.server.assert_running();
        self.server.assert_no_panic();
    }

    fn send(&self, raw: &[u8]) -> Response {
        request(self.server.addr, raw)
    }
}

/// The response is `status` with a one-line plain-text reason containing `says`.
fn assert_refused(r: &Response, status: u16, says: &str) {
    let text = r.text();
    assert_eq!(r.status, status, "body: {text:?}");
    assert!(
        text.trim_end().lines().count() == 1 && !text.trim().is_empty(),
        "the reason is one line: {text:?}"
    );
    assert!(
        text.to_lowercase().contains(&says.to_lowercase()),
        "{status}: the reason {text:?} should mention {says:?}"
    );
}

#[test]
fn a_head_over_max_header_bytes_is_431() {
    let f = Fixture::new();
    let big = "x".repeat(2048);
    let r = f.send(format!("GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: {big}\r\n\r\n").as_bytes());
    assert_refused(&r, 431, "header");
    f.still_serving();
}

#[test]
fn a_garbage_request_line_is_400() {
    let f = Fixture::new();
    let r = f.send(b"\x01\x02 what is this\r\n\r\n");
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.text().trim_end().lines().count(), 1, "{:?}", r.text());
    f.still_serving();
}

#[test]
fn an_unknown_path_is_404() {
    let f = Fixture::new();
    let r = f.send(b"GET /nope HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_refused(&r, 404, "not found");
    f.still_serving();
}

#[test]
fn the_wrong_method_is_405_with_the_allowed_one() {
    let f = Fixture::new();
    let r = f.send(b"POST /sse?topic=a HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
    assert_refused(&r, 405, "GET");
    assert_eq!(r.header("Allow"), Some("GET, OPTIONS"));
    let r = f.send(b"GET /publish?topic=a HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_refused(&r, 405, "POST");
    assert_eq!(r.header("Allow"), Some("POST, OPTIONS"));
    f.still_serving();
}

#[test]
fn a_body_over_max_body_bytes_is_413() {
    let f = Fixture::new();
    let body = "x".repeat(2048);
    let r = f.send(
        format!(
            "POST /publish?topic=a HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    assert_refused(&r, 413, "body");
    // The same limit holds for a chunked body that grows past it.
    let chunk = "y".repeat(800);
    let r = f.send(
        format!(
            "POST /publish?topic=a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
             320\r\n{chunk}\r\n320\r\n{chunk}\r\n0\r\n\r\n"
        )
        .as_bytes(),
    );
    assert_refused(&r, 413, "body");
    f.still_serving();
}

#[test]
fn a_publish_without_a_length_is_411() {
    let f = Fixture::new();
    let r = f.send(b"POST /publish?topic=a HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_refused(&r, 411, "length");
    f.still_serving();
}

#[test]
fn a_chunked_publish_is_accepted_and_a_malformed_chunked_body_is_400() {
    let mut f = Fixture::new();
    let r = f.send(
        b"POST /publish?topic=watch HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
          4\r\n{\"n\"\r\n3\r\n:41\r\n1\r\n}\r\n0\r\n\r\n",
    );
    assert_eq!(r.status, 202, "{}", r.text());
    assert!(r.text().contains("\"id\""), "{}", r.text());
    assert_eq!(payload_n(&envelope(&f.watcher.next_event())), 41);
    let r = f.send(
        b"POST /publish?topic=watch HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
          zz\r\nhello\r\n0\r\n\r\n",
    );
    assert_refused(&r, 400, "chunk");
    f.still_serving();
}

#[test]
fn bad_topics_are_400_naming_the_rule() {
    let f = Fixture::new();
    let long = "t".repeat(129);
    for topic in ["a%20b", "%FF", long.as_str(), "a,b%3F"] {
        let r = f.send(format!("GET /sse?topic={topic} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        assert_refused(&r, 400, "topic must be 1-128 bytes");
        let r = f.send(
            format!(
                "POST /publish?topic={topic} HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\n1"
            )
            .as_bytes(),
        );
        assert_refused(&r, 400, "topic must be 1-128 bytes");
    }
    // 128 bytes is still a topic.
    let ok = "t".repeat(128);
    let (status, body) = f.server.http_publish(&ok, "1");
    assert_eq!(status, 202, "{body}");
    f.still_serving();
}

#[test]
fn a_bad_socket_line_gets_an_error_and_the_connection_lives_on() {
    let f = Fixture::new();
    let mut p = Publisher::connect(&f.server.socket);
    for (bad, says) in [
        ("{not json", "json"),
        ("[1,2]", "object"),
        ("{\"data\":1}", "topic"),
        ("{\"topic\":\"a b\",\"data\":1}", "topic must be"),
        ("{\"topic\":\"a\"}", "data"),
        (
            "{\"topic\":\"a\",\"data\":1,\"colour\":\"red\"}",
            "unknown field",
        ),
    ] {
        let err = answer_error(&p.call(bad));
        assert!(
            err.to_lowercase().contains(says),
            "{bad}: error {err:?} should mention {says:?}"
        );
        answer_id(&p.call(&line_n("a", 1)));
    }
    f.still_serving();
}

#[test]
fn a_socket_line_over_max_message_bytes_gets_one_error_and_the_connection_lives_on() {
    let f = Fixture::new();
    let mut p = Publisher::connect(&f.server.socket);
    // Just over the message limit, and far over any line buffer.
    for size in [2 * 1024, 256 * 1024] {
        let big = "x".repeat(size);
        let line = format!("{{\"topic\":\"a\",\"data\":\"{big}\"}}");
        let good = line_n("a", 2);
        // Both lines in one go: exactly one error, then the good line's answer.
        p.send(format!("{line}\n{good}\n").as_bytes());
        let err = answer_error(&p.read_answer());
        assert!(err.contains("--max-message-bytes"), "{size}: {err}");
        let next = p.read_answer();
        answer_id(&next);
    }
    f.still_serving();
}

#[test]
fn pipelined_publishes_then_an_oversized_head_get_their_answers_then_431() {
    let mut f = Fixture::new();
    let publish = |n: u32| {
        let body = format!("{{\"n\":{n}}}");
        format!(
            "POST /publish?topic=watch HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let big = "x".repeat(2048);
    let mut c = HttpConn::connect(f.server.addr);
    // The publishes and the start of the oversized head in one write, its
    // rest a moment later: the server reads ahead for more pipelined requests
    // while the publishes wait for their answers.
    c.send(
        format!(
            "{}{}{}GET /healthz HTTP/1.1\r\nX-Big: {}",
            publish(1),
            publish(2),
            publish(3),
            &big[..512]
        )
        .as_bytes(),
    );
    std::thread::sleep(std::time::Duration::from_millis(50));
    c.send(format!("{}\r\n\r\n", &big[512..]).as_bytes());
    for i in 0..3 {
        let r = c.read_response();
        assert_eq!(r.status, 202, "publish {i}: {}", r.text());
    }
    assert_refused(&c.read_response(), 431, "header");
    for n in 1..=3 {
        assert_eq!(payload_n(&envelope(&f.watcher.next_event())), n);
    }
    f.still_serving();
}

#[test]
fn pipelined_keep_alive_requests_each_get_a_response() {
    let f = Fixture::new();
    let mut c = HttpConn::connect(f.server.addr);
    c.send(
        b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    for i in 0..3 {
        let r = c.read_response();
        assert_eq!(r.status, 200, "response {i}: {}", r.text());
        assert_eq!(r.text().trim(), "ok");
    }
    f.still_serving();
}
