//! The connection machine driven by a script of bytes and virtual time, in the manner
//! of quinn-proto's `tests/util.rs`: [`Peer`] feeds input, advances the clock, reacts to
//! heads the way the server's routing would, and collects what comes out.

use super::*;
use crate::proto::http::Method;

const CFG: Config = Config {
    max_header_bytes: 256,
    max_body_bytes: 64,
    header_timeout: Tick::new(10_000),
    body_timeout: Tick::new(2_000),
};

/// What the machine told the peer, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Head {
        id: RequestId,
        target: String,
    },
    Body {
        id: RequestId,
        data: Vec<u8>,
        last: bool,
    },
    Refused(u16),
    Closed,
}

/// The test driver: one connection, a clock, and the server's side of routing.
struct Peer {
    conn: Connection,
    now: u64,
    seen: Vec<Seen>,
    wire: Vec<u8>,
    /// Ask for the body of every `POST` (as `/publish` does).
    read_posts: bool,
}

impl Peer {
    fn new() -> Self {
        Self::with(CFG)
    }

    fn with(cfg: Config) -> Self {
        Self {
            conn: Connection::new(cfg, Tick::ZERO),
            now: 0,
            seen: Vec::new(),
            wire: Vec::new(),
            read_posts: true,
        }
    }

    /// The peer sends `bytes`; the server takes every event they give.
    fn send(&mut self, bytes: &[u8]) -> &mut Self {
        self.conn.feed(bytes);
        self.pump();
        self
    }

    /// Time passes; a deadline that came is handled.
    fn wait(&mut self, ticks: u64) -> &mut Self {
        self.now += ticks;
        let now = Tick::new(self.now);
        if self.conn.poll_timeout().is_some_and(|t| t <= now) {
            self.conn.handle_timeout(now);
        }
        self.pump();
        self
    }

    fn eof(&mut self) -> &mut Self {
        self.conn.handle_eof();
        self.pump();
        self
    }

    fn pump(&mut self) {
        while let Some(event) = self.conn.poll_event(Tick::new(self.now)) {
            let seen = match event {
                Event::Head { id, head } => {
                    let post = head.method == Method::Post;
                    let target = format!("{} {}", head.method.as_str(), head.path);
                    if post && self.read_posts {
                        let _ = self.conn.read_body(id);
                    }
                    Seen::Head { id, target }
                }
                Event::Body { id, data, last } => Seen::Body {
                    id,
                    data: data.to_vec(),
                    last,
                },
                Event::Refused(e) => Seen::Refused(e.status()),
                Event::Closed => Seen::Closed,
            };
            self.seen.push(seen);
        }
        while let Some(out) = self.conn.poll_transmit() {
            self.wire.extend_from_slice(&out);
        }
    }

    fn ok(&mut self, id: RequestId, body: &str) -> &mut Self {
        self.answer(id, 200, body, false)
    }

    fn answer(&mut self, id: RequestId, status: u16, body: &str, close: bool) -> &mut Self {
        let response = Response {
            status,
            headers: &[],
            content_type: "text/plain",
            body: body.as_bytes(),
        };
        self.conn.respond(id, &response, close);
        self.pump();
        self
    }

    /// The ids of the heads seen, in order.
    fn heads(&self) -> Vec<RequestId> {
        self.seen
            .iter()
            .filter_map(|s| match s {
                Seen::Head { id, .. } => Some(*id),
                _ => None,
            })
            .collect()
    }

    /// The body bytes seen for `id`, joined, and whether the last run came.
    fn body(&self, id: RequestId) -> (Vec<u8>, bool) {
        let mut all = Vec::new();
        let mut done = false;
        for s in &self.seen {
            if let Seen::Body { id: i, data, last } = s {
                if *i == id {
                    all.extend_from_slice(data);
                    done |= *last;
                }
            }
        }
        (all, done)
    }

    /// What was written to the wire since the last call.
    fn take_wire(&mut self) -> String {
        String::from_utf8(std::mem::take(&mut self.wire)).expect("answers are text")
    }

    /// The status lines written since the last call.
    fn statuses(&mut self) -> Vec<u16> {
        // Status lines, not the reasons in bodies that name the version.
        let wire = self.take_wire();
        wire.match_indices("HTTP/1.1 ")
            .filter_map(|(at, _)| wire.get(at + 9..at + 12)?.parse().ok())
            .collect()
    }
}

const GET: &[u8] = b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n";

fn post(body: &str) -> Vec<u8> {
    format!(
        "POST /publish HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[test]
fn a_keep_alive_connection_serves_one_request_after_another() {
    let mut p = Peer::new();
    p.send(GET);
    let first = p.heads()[0];
    assert!(
        p.take_wire().is_empty(),
        "nothing is written before the answer"
    );
    p.ok(first, "one");
    let wire = p.take_wire();
    assert!(wire.starts_with("HTTP/1.1 200 OK\r\n"), "{wire}");
    assert!(!wire.contains("Connection: close"), "{wire}");
    assert!(wire.ends_with("one"), "{wire}");
    assert_eq!(p.conn.closing(), None);
    p.send(GET);
    let second = p.heads()[1];
    assert_ne!(first, second);
    p.ok(second, "two");
    assert!(p.take_wire().ends_with("two"));
    assert_eq!(p.conn.closing(), None);
}

#[test]
fn connection_close_and_http10_end_the_connection_after_their_answer() {
    for request in [
        &b"GET /a HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"[..],
        b"GET /a HTTP/1.0\r\n\r\n",
    ] {
        let mut p = Peer::new();
        p.send(request);
        let id = p.heads()[0];
        p.ok(id, "bye");
        assert!(p.take_wire().contains("Connection: close\r\n"));
        assert_eq!(p.conn.closing(), Some(Close::Linger));
        assert_eq!(p.conn.read_room(), 0, "nothing more is read");
    }
    // And an answer may close a connection that would have stayed open.
    let mut p = Peer::new();
    p.send(GET);
    let id = p.heads()[0];
    p.answer(id, 405, "no", true);
    assert!(p.take_wire().contains("Connection: close\r\n"));
    assert_eq!(p.conn.closing(), Some(Close::Linger));
}

#[test]
fn pipelined_requests_are_answered_in_the_order_they_came_whatever_the_order_of_answers() {
    let mut p = Peer::new();
    let mut three = GET.to_vec();
    three.extend_from_slice(&post("x"));
    three.extend_from_slice(GET);
    p.send(&three);
    let ids = p.heads();
    assert_eq!(ids.len(), 3, "{:?}", p.seen);
    assert_eq!(p.body(ids[1]), (b"x".to_vec(), true));
    p.ok(ids[2], "third").ok(ids[1], "second");
    assert!(p.take_wire().is_empty(), "held until the first is answered");
    assert_eq!(p.conn.unanswered(), 3);
    p.ok(ids[0], "first");
    let wire = p.take_wire();
    let order: Vec<usize> = ["first", "second", "third"]
        .iter()
        .map(|b| wire.find(b).expect("every answer is written"))
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{wire}");
    assert_eq!(p.conn.unanswered(), 0);
}

#[test]
fn no_head_is_read_past_the_unanswered_limit_until_answers_are_given() {
    let mut p = Peer::new();
    let many = GET.repeat(MAX_UNANSWERED + 2);
    p.send(&many);
    assert_eq!(p.heads().len(), MAX_UNANSWERED);
    assert_eq!(p.conn.read_room(), 0, "no read while the limit is reached");
    let first = p.heads()[0];
    p.ok(first, "");
    assert_eq!(p.heads().len(), MAX_UNANSWERED + 1);
}

#[test]
fn a_client_expecting_100_continue_gets_it_after_the_answers_before_it() {
    let mut p = Peer::new();
    p.send(GET);
    let first = p.heads()[0];
    p.send(
        b"POST /publish HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n",
    );
    assert!(
        p.take_wire().is_empty(),
        "the 100 waits for the answer before it"
    );
    p.ok(first, "first");
    let wire = p.take_wire();
    assert!(
        wire.ends_with("firstHTTP/1.1 100 Continue\r\n\r\n"),
        "{wire}"
    );
    p.send(b"abc");
    let second = p.heads()[1];
    assert_eq!(p.body(second), (b"abc".to_vec(), true));
    p.answer(second, 202, "ok", false);
    assert_eq!(p.statuses(), [202], "the 100 is sent once");
}

#[test]
fn no_100_continue_is_sent_when_the_body_is_already_there() {
    let mut p = Peer::new();
    p.send(b"POST /publish HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\nabc");
    let id = p.heads()[0];
    assert_eq!(p.body(id), (b"abc".to_vec(), true));
    assert!(p.take_wire().is_empty());
}

#[test]
fn a_length_body_arrives_in_runs_and_the_next_request_starts_after_it() {
    let mut p = Peer::new();
    p.send(b"POST /publish HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n0123");
    let id = p.heads()[0];
    assert_eq!(p.body(id), (b"0123".to_vec(), false));
    p.send(b"456");
    let mut rest = b"789".to_vec();
    rest.extend_from_slice(GET);
    p.send(&rest);
    assert_eq!(p.body(id), (b"0123456789".to_vec(), true));
    assert_eq!(p.heads().len(), 2, "the pipelined GET after the body");
}

#[test]
fn an_empty_body_asked_for_is_one_empty_last_run() {
    let mut p = Peer::new();
    p.send(&post(""));
    let id = p.heads()[0];
    assert_eq!(
        p.seen[1],
        Seen::Body {
            id,
            data: vec![],
            last: true
        }
    );
}

#[test]
fn a_chunked_body_is_decoded_in_any_split() {
    let wire = b"POST /publish HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
    for split in 1..wire.len() {
        let mut p = Peer::new();
        p.send(&wire[..split]).send(&wire[split..]).send(GET);
        let ids = p.heads();
        assert_eq!(ids.len(), 2, "split at {split}: {:?}", p.seen);
        assert_eq!(
            p.body(ids[0]),
            (b"abcde".to_vec(), true),
            "split at {split}"
        );
    }
}

#[test]
fn every_byte_split_of_a_pipelined_pair_gives_the_same_events() {
    let mut wire = post("hello");
    wire.extend_from_slice(GET);
    let mut whole = Peer::new();
    whole.send(&wire);
    let mut bytewise = Peer::new();
    for b in &wire {
        bytewise.send(std::slice::from_ref(b));
    }
    let heads = |p: &Peer| {
        p.seen
            .iter()
            .filter(|s| matches!(s, Seen::Head { .. }))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(heads(&whole), heads(&bytewise));
    let id = whole.heads()[0];
    assert_eq!(bytewise.body(id), (b"hello".to_vec(), true));
}

#[test]
fn a_body_not_asked_for_is_skipped() {
    let mut p = Peer::new();
    p.read_posts = false;
    let mut wire = post("ignored");
    wire.extend_from_slice(GET);
    p.send(&wire);
    assert_eq!(p.heads().len(), 2, "{:?}", p.seen);
    assert!(p.seen.iter().all(|s| !matches!(s, Seen::Body { .. })));
}

#[test]
fn an_answer_before_a_body_the_client_withholds_for_100_continue_closes() {
    let mut p = Peer::new();
    p.read_posts = false;
    p.send(
        b"POST /nowhere HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n",
    );
    let id = p.heads()[0];
    p.answer(id, 404, "no", false);
    assert!(p.take_wire().contains("Connection: close"));
    assert_eq!(p.conn.closing(), Some(Close::Linger));
}

/// Each limit is refused with its status, after the answers before it, and closes.
#[test]
fn each_limit_and_framing_error_gets_its_answer_and_closes() {
    let long_head = format!(
        "GET /a HTTP/1.1\r\nHost: t\r\nX: {}\r\n\r\n",
        "a".repeat(300)
    );
    let long_line = format!("GET /{} HTTP/1.1\r\n", "a".repeat(300));
    // (request, status, whether its head was handed out before the refusal)
    let cases: &[(&[u8], u16, bool)] = &[
        (long_head.as_bytes(), 431, false),
        (long_line.as_bytes(), 414, false),
        (b"GET /a HTTP/1.1\r\n\r\n", 400, false),
        (b"G\x01T /a HTTP/1.1\r\nHost: t\r\n\r\n", 400, false),
        (b"GET /a HTTP/2.0\r\nHost: t\r\n\r\n", 505, false),
        (
            b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 65\r\n\r\n",
            413,
            false,
        ),
        (
            b"POST /p HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n41\r\n",
            413,
            true,
        ),
        (
            b"POST /p HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            400,
            true,
        ),
        (b"POST /p HTTP/1.1\r\nHost: t\r\n\r\n", 411, true),
        (
            b"POST /p HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n",
            400,
            false,
        ),
    ];
    for &(request, status, head_out) in cases {
        let mut p = Peer::new();
        p.send(GET);
        let first = p.heads()[0];
        p.send(request);
        let name = String::from_utf8_lossy(&request[..request.len().min(40)]).into_owned();
        assert!(
            p.take_wire().is_empty(),
            "{name}: held behind the first answer"
        );
        p.ok(first, "first");
        assert_eq!(p.statuses(), [200, status], "{name}");
        assert_eq!(p.conn.closing(), Some(Close::Linger), "{name}");
        if status != 411 {
            assert!(
                p.seen.contains(&Seen::Refused(status)),
                "{name}: {:?}",
                p.seen
            );
        }
        // Nothing is read after it: heads are those of the first request and, when the
        // refusal is about the body, of the refused one.
        p.send(GET);
        assert_eq!(p.heads().len(), 1 + usize::from(head_out), "{name}");
    }
}

#[test]
fn a_partial_head_gets_408_at_the_header_deadline_and_not_before() {
    let mut p = Peer::new();
    p.send(b"GET /sse?topic=a HTTP/1.1\r\nHost: x\r\n");
    p.wait(9_999);
    assert!(p.take_wire().is_empty());
    assert_eq!(p.conn.poll_timeout(), Some(Tick::new(10_000)));
    p.wait(1);
    assert_eq!(p.seen, [Seen::Refused(408)]);
    let wire = p.take_wire();
    assert!(wire.starts_with("HTTP/1.1 408"), "{wire}");
    assert!(wire.contains("--header-timeout"), "{wire}");
    assert_eq!(p.conn.closing(), Some(Close::Linger));
}

#[test]
fn an_idle_keep_alive_connection_closes_quietly_at_the_header_deadline() {
    let mut p = Peer::new();
    p.send(GET);
    let id = p.heads()[0];
    p.wait(5_000).ok(id, "");
    p.take_wire();
    // The deadline of the next head starts when the machine starts waiting for it.
    assert_eq!(p.conn.poll_timeout(), Some(Tick::new(15_000)));
    p.wait(10_000);
    assert_eq!(p.seen.last(), Some(&Seen::Closed));
    assert!(p.take_wire().is_empty());
    assert_eq!(p.conn.closing(), Some(Close::Now));
}

#[test]
fn a_trickling_body_gets_408_at_the_body_deadline_however_often_bytes_come() {
    let mut p = Peer::new();
    p.send(b"POST /publish HTTP/1.1\r\nHost: t\r\nContent-Length: 60\r\n\r\n0123456789");
    let id = p.heads()[0];
    for _ in 0..3 {
        p.wait(500).send(b"x");
    }
    assert!(p.take_wire().is_empty());
    p.wait(499);
    assert!(p.take_wire().is_empty(), "not before the deadline");
    p.wait(1);
    assert_eq!(p.seen.last(), Some(&Seen::Refused(408)));
    assert!(p.body(id).1.not(), "the body never completed");
    let wire = p.take_wire();
    assert!(wire.starts_with("HTTP/1.1 408"), "{wire}");
    assert!(wire.contains("--body-timeout"), "{wire}");
    assert_eq!(p.conn.closing(), Some(Close::Linger));
}

#[test]
fn a_skipped_body_has_a_deadline_too_and_closes_quietly_when_already_answered() {
    let mut p = Peer::new();
    p.read_posts = false;
    p.send(b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 60\r\n\r\n01");
    let id = p.heads()[0];
    p.ok(id, "");
    p.take_wire();
    p.wait(1_999);
    assert_eq!(p.conn.closing(), None);
    p.wait(1);
    assert_eq!(p.seen.last(), Some(&Seen::Closed));
    assert!(p.take_wire().is_empty(), "its answer was sent already");
    assert_eq!(p.conn.closing(), Some(Close::Linger));
}

#[test]
fn a_body_that_completes_in_time_stops_the_body_deadline() {
    let mut p = Peer::new();
    p.send(b"POST /publish HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n0");
    p.wait(1_999).send(b"1");
    let id = p.heads()[0];
    assert_eq!(p.body(id), (b"01".to_vec(), true));
    assert_eq!(
        p.conn.poll_timeout(),
        Some(Tick::new(1_999 + 10_000)),
        "a header deadline again"
    );
    p.wait(1);
    assert!(!p.seen.contains(&Seen::Refused(408)));
}

#[test]
fn an_upgrade_hands_over_the_bytes_after_its_head() {
    let mut p = Peer::new();
    let mut wire =
        b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
            .to_vec();
    let frame = [0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2];
    wire.extend_from_slice(&frame);
    p.conn.feed(&wire);
    let Some(Event::Head { head, .. }) = p.conn.poll_event(Tick::ZERO) else {
        panic!("a head");
    };
    assert!(head.is_websocket_upgrade());
    assert_eq!(p.conn.into_upgrade(), frame);
}

#[test]
fn the_peer_closing_between_requests_is_a_quiet_close_that_still_sends_what_is_queued() {
    let mut p = Peer::new();
    p.send(GET);
    let id = p.heads()[0];
    p.eof();
    assert_eq!(p.seen.last(), Some(&Seen::Closed));
    p.ok(id, "late");
    assert!(p.take_wire().ends_with("late"));
    assert_eq!(p.conn.closing(), Some(Close::Now));
}

#[test]
fn an_idle_connection_holds_no_buffer() {
    let mut p = Peer::new();
    p.send(GET);
    let id = p.heads()[0];
    p.ok(id, "");
    p.pump();
    assert_eq!(p.conn.buf.capacity(), 0);
}

trait Not {
    fn not(self) -> bool;
}
impl Not for bool {
    fn not(self) -> bool {
        !self
    }
}

#[test]
fn nothing_is_read_after_a_request_that_does_not_allow_another() {
    let mut p = Peer::new();
    let mut wire = b"GET /a HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".to_vec();
    wire.extend_from_slice(GET);
    p.send(&wire);
    assert_eq!(p.heads().len(), 1);
    assert_eq!(p.conn.read_room(), 0);
}

#[test]
fn the_head_handed_out_can_be_had_again_until_the_next_poll() {
    let mut p = Peer::new();
    p.conn.feed(GET);
    let Some(Event::Head { id, .. }) = p.conn.poll_event(Tick::ZERO) else {
        panic!("a head");
    };
    let (again, head) = p.conn.delivered_head().expect("still there");
    assert_eq!((again, head.path), (id, "/a"));
    assert!(p.conn.poll_event(Tick::ZERO).is_none());
    assert!(p.conn.delivered_head().is_none());
}

#[test]
fn no_request_after_a_closing_answer_is_read_and_later_answers_are_dropped() {
    // A closing answer to the latest request: nothing after it is read.
    let mut p = Peer::new();
    p.read_posts = false;
    p.send(&post("x"));
    let id = p.heads()[0];
    p.answer(id, 400, "bad topic", true);
    p.send(GET);
    assert_eq!(p.heads().len(), 1, "{:?}", p.seen);
    assert_eq!(p.statuses(), [400]);
    assert_eq!(p.conn.closing(), Some(Close::Linger));

    // A closing answer to a request with later ones already read: theirs are dropped.
    let mut p = Peer::new();
    p.send(&GET.repeat(3));
    let ids = p.heads();
    p.answer(ids[1], 400, "no", true);
    let response = Response {
        status: 200,
        headers: &[],
        content_type: "",
        body: b"",
    };
    assert!(p.conn.respond(ids[0], &response, false));
    assert!(
        !p.conn.respond(ids[2], &response, false),
        "dropped after the close"
    );
    p.pump();
    assert_eq!(p.statuses(), [200, 400]);
}

/// Random scripts of plausible and broken pieces, in random splits, with time passing
/// and answers given in random order: the machine never panics, stops asking for
/// input once closing, writes each refusal it reports, and sends answers in order.
#[test]
fn random_scripts_keep_the_invariants() {
    const PIECES: &[&[u8]] = &[
        b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n",
        b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc",
        b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 9\r\nExpect: 100-continue\r\n\r\n",
        b"POST /p HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
        b"GET /a HTTP/1.0\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        b"xyz",
        b"\r\n",
        b"GET /a HTTP/1.1\r\nHost: t\r\nContent-Length: 99999\r\n\r\n",
        b"POST /p HTTP/1.1\r\nHost: t\r\n\r\n",
    ];
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _script in 0..2_000 {
        let mut wire = Vec::new();
        for _ in 0..(next() % 6 + 1) {
            wire.extend_from_slice(PIECES[(next() % PIECES.len() as u64) as usize]);
        }
        let mut p = Peer::new();
        p.read_posts = next() % 2 == 0;
        let mut at = 0;
        let mut answered = 0u32;
        while at < wire.len() {
            let n = ((next() % 40) as usize + 1).min(wire.len() - at);
            if p.conn.read_room() > 0 {
                p.send(&wire[at..at + n]);
            }
            at += n;
            match next() % 4 {
                0 => {
                    p.wait(next() % 3_000);
                }
                1 => {
                    let open: Vec<RequestId> = p.heads();
                    if let Some(&id) = open.get((next() % open.len().max(1) as u64) as usize) {
                        let body = format!("#{answered}#");
                        let response = Response {
                            status: 200,
                            headers: &[],
                            content_type: "",
                            body: body.as_bytes(),
                        };
                        if p.conn.slot_open(id) {
                            p.conn.respond(id, &response, false);
                            answered += 1;
                        }
                        p.pump();
                    }
                }
                _ => {}
            }
            if p.conn.closing().is_some() {
                assert_eq!(
                    p.conn.read_room(),
                    0,
                    "{:?}",
                    String::from_utf8_lossy(&wire)
                );
            }
        }
        let wire_out = p.take_wire();
        for seen in &p.seen {
            if let Seen::Refused(status) = seen {
                assert!(
                    wire_out.contains(&format!("HTTP/1.1 {status} ")) || p.conn.unanswered() > 0,
                    "refusal {status} not written: {wire_out:?} for {:?}; seen {:?}",
                    String::from_utf8_lossy(&wire),
                    p.seen
                );
            }
        }
        // Answers numbered in the order they were given come out in request order,
        // which is not necessarily the order given: only check each appears once.
        for k in 0..answered {
            assert!(wire_out.matches(&format!("#{k}#")).count() <= 1);
        }
    }
}

#[test]
fn a_body_refused_for_the_inbound_budget_gets_503_and_nothing_more_is_read() {
    let mut p = Peer::new();
    p.send(b"POST /publish HTTP/1.1\r\nHost: t\r\nContent-Length: 50\r\n\r\n0123");
    let id = p.heads()[0];
    assert!(p.conn.held_bytes() > 0);
    p.conn.refuse_body(id, HttpError::InboundBudget);
    assert_eq!(p.conn.held_bytes(), 0, "the buffered input is dropped");
    assert_eq!(p.conn.read_room(), 0, "nothing more is read");
    p.pump();
    let wire = p.take_wire();
    assert!(wire.starts_with("HTTP/1.1 503"), "{wire}");
    assert!(wire.contains("Retry-After: 1\r\n"), "{wire}");
    assert!(wire.contains("retry later"));
    assert!(p.conn.closing().is_some());
    p.send(b"456789");
    assert_eq!(
        p.body(id),
        (b"0123".to_vec(), false),
        "no more of the body is taken"
    );
}
