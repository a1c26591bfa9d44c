//! Scale-out through Redis Streams (`--broker`), against the real binary and a
//! real `redis-server` (no persistence, private port): one order across nodes,
//! resumes from one node to another and from the stream itself, a broker outage
//! and its recovery, and a node restart.
//!
//! Every wait is bounded. Subscriptions are known to be live when they receive a
//! warm-up message (`{"warm":i}`), which every reader then skips.

pub mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use simd_json::prelude::*;
use simd_json::OwnedValue;

use common::*;

// ---- helpers ----------------------------------------------------------------

/// A `ringcast serve --broker <redis>` node (two cores, as the harness starts).
fn node(redis: &Redis, extra: &[&str]) -> Server {
    let url = redis.url();
    let mut args = vec!["--broker", url.as_str()];
    args.extend_from_slice(extra);
    Server::start(&args)
}

fn str_field(v: &OwnedValue, key: &str) -> Option<String> {
    v.get(key).and_then(|x| x.as_str()).map(str::to_owned)
}

/// A Redis stream id `ms-n`, as an ordered pair; panics on anything else.
fn stream_id(id: &str) -> (u64, u64) {
    let parse = || {
        let (ms, n) = id.split_once('-')?;
        Some((ms.parse().ok()?, n.parse().ok()?))
    };
    parse().unwrap_or_else(|| panic!("{id:?} is not a stream id ms-n"))
}

/// One delivered message.
#[derive(Debug, Clone, PartialEq)]
struct Msg {
    topic: String,
    id: String,
    event: Option<String>,
    data: OwnedValue,
}

impl Msg {
    fn from_envelope(text: &str) -> Msg {
        let v = json(text);
        Msg {
            topic: str_field(&v, "topic").unwrap_or_else(|| panic!("no topic: {text}")),
            // ringcast's own events (`ringcast.gap`) carry no id; a message
            // without one fails the id comparisons of every test.
            id: str_field(&v, "id").unwrap_or_default(),
            event: str_field(&v, "event"),
            data: v
                .get("data")
                .cloned()
                .unwrap_or_else(|| panic!("no data: {text}")),
        }
    }

    fn is_warm(&self) -> bool {
        self.data.get("warm").is_some()
    }

    /// The `n` of a `{"n":N}` (or `{"src":S,"n":N}`) payload.
    fn n(&self) -> u64 {
        self.data
            .get("n")
            .and_then(|n| n.as_u64())
            .unwrap_or_else(|| panic!("payload without n: {self:?}"))
    }

    fn src(&self) -> String {
        str_field(&self.data, "src").unwrap_or_else(|| panic!("payload without src: {self:?}"))
    }
}

/// A subscriber over SSE or WebSocket.
enum Sub {
    Sse(SseClient),
    Ws(TungsteniteClient),
}

/// Why a read gave no message.
#[derive(Debug)]
enum NoMsg {
    TimedOut,
    Closed(String),
}

impl Sub {
    fn sse(server: &Server, topic: &str) -> Sub {
        let mut c = server.sse(&format!("topic={topic}"));
        c.wait_cursor();
        Sub::Sse(c)
    }

    fn ws(server: &Server, topic: &str) -> Sub {
        Sub::Ws(TungsteniteClient::connect(
            server.addr,
            &format!("/ws?topic={topic}"),
        ))
    }

    fn name(&self) -> &'static str {
        match self {
            Sub::Sse(_) => "SSE",
            Sub::Ws(_) => "WS",
        }
    }

    /// The next message, warm-ups included; WS control answers are skipped.
    fn try_raw(&mut self, timeout: Duration) -> Result<Msg, NoMsg> {
        let deadline = Instant::now() + timeout;
        match self {
            Sub::Sse(c) => match c.try_next_event(timeout) {
                // ringcast's own events carry their data bare on SSE (the
                // topic is inside it); messages carry the envelope.
                Ok(b) if b.kind().starts_with("ringcast.") => {
                    let data = b.json();
                    Ok(Msg {
                        topic: str_field(&data, "topic").unwrap_or_default(),
                        id: b.id.clone().unwrap_or_default(),
                        event: b.event.clone(),
                        data,
                    })
                }
                Ok(b) => Ok(Msg::from_envelope(b.data.as_deref().unwrap_or_default())),
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Err(NoMsg::TimedOut),
                Err(e) => Err(NoMsg::Closed(e.to_string())),
            },
            Sub::Ws(c) => loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match c.read(left) {
                    WsRead::Text(t) => {
                        let v = json(&t);
                        if matches!(str_field(&v, "op").as_deref(), Some("ack" | "error")) {
                            continue;
                        }
                        return Ok(Msg::from_envelope(&t));
                    }
                    WsRead::TimedOut => return Err(NoMsg::TimedOut),
                    WsRead::Closed(why) => return Err(NoMsg::Closed(why)),
                }
            },
        }
    }

    /// The next message that is not a warm-up.
    fn try_next(&mut self, timeout: Duration) -> Result<Msg, NoMsg> {
        let deadline = Instant::now() + timeout;
        loop {
            let m = self.try_raw(deadline.saturating_duration_since(Instant::now()))?;
            if !m.is_warm() {
                return Ok(m);
            }
        }
    }

    fn next(&mut self) -> Msg {
        let name = self.name();
        self.try_next(READ_TIMEOUT)
            .unwrap_or_else(|e| panic!("{name}: no next message: {e:?}"))
    }

    /// `n` messages' `(n, id)`.
    fn take(&mut self, n: usize) -> Vec<(u64, String)> {
        (0..n)
            .map(|_| {
                let m = self.next();
                (m.n(), m.id)
            })
            .collect()
    }

    /// True when nothing but warm-ups arrives within `d`.
    fn quiet_for(&mut self, d: Duration) -> bool {
        match self.try_next(d) {
            Ok(m) => panic!("{}: unexpected message {m:?}", self.name()),
            Err(NoMsg::TimedOut) => true,
            Err(NoMsg::Closed(why)) => panic!("{}: closed: {why}", self.name()),
        }
    }

    /// Heartbeats seen so far (SSE comments, WS pings).
    fn heartbeats(&self) -> usize {
        match self {
            Sub::Sse(c) => c.comments,
            Sub::Ws(c) => c.pings,
        }
    }
}

/// Publishes `{"warm":i}` through `via` until every subscriber has received one
/// (so each subscription is live), bounded.
fn warm_up(via: &Server, topic: &str, subs: &mut [&mut Sub]) {
    let mut ready = vec![false; subs.len()];
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut p = Publisher::connect(&via.socket);
    for i in 0.. {
        assert!(
            Instant::now() < deadline,
            "subscribers never went live (ready: {ready:?})\n{}",
            via.stderr_tail()
        );
        answer_id(&p.call(&format!(r#"{{"topic":"{topic}","data":{{"warm":{i}}}}}"#)));
        for (sub, ready) in subs.iter_mut().zip(ready.iter_mut()) {
            while !*ready {
                match sub.try_raw(Duration::from_millis(200)) {
                    Ok(m) if m.is_warm() => *ready = true,
                    Ok(m) => panic!("a message before the warm-up: {m:?}"),
                    Err(NoMsg::TimedOut) => break,
                    Err(NoMsg::Closed(why)) => panic!("closed during the warm-up: {why}"),
                }
            }
        }
        if ready.iter().all(|&r| r) {
            return;
        }
    }
}

/// Publishes `{"n":n}` for each `n` with `POST /publish` (one keep-alive
/// connection); the ids.
fn publish_http(server: &Server, topic: &str, ns: impl IntoIterator<Item = u64>) -> Vec<String> {
    let mut c = HttpConn::connect(server.addr);
    ns.into_iter()
        .map(|n| {
            let r = c.publish(topic, &format!(r#"{{"n":{n}}}"#));
            assert_eq!(r.status, 202, "POST /publish: {}", r.text());
            str_field(&json(&r.text()), "id").unwrap_or_else(|| panic!("no id: {}", r.text()))
        })
        .collect()
}

fn assert_strictly_increasing(ids: &[String], what: &str) {
    for w in ids.windows(2) {
        assert!(
            stream_id(&w[0]) < stream_id(&w[1]),
            "{what}: ids not strictly increasing: {} then {}",
            w[0],
            w[1]
        );
    }
}

fn health(server: &Server) -> Response {
    request(
        server.addr,
        b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
}

// ---- 1. one order across nodes -------------------------------------------------

const FAN_TOTAL: usize = 2000;

#[test]
fn subscribers_on_two_nodes_get_two_thousand_messages_published_through_both_in_one_order_none_lost_or_duplicated(
) {
    let redis = Redis::start();
    let a = node(&redis, &[]);
    let b = node(&redis, &[]);
    let topic = "fan";

    let mut subs: Vec<(String, Sub)> = Vec::new();
    for (name, server) in [("A", &a), ("B", &b)] {
        for i in 0..3 {
            subs.push((format!("{name}/sse{i}"), Sub::sse(server, topic)));
            subs.push((format!("{name}/ws{i}"), Sub::ws(server, topic)));
        }
    }
    {
        let mut refs: Vec<&mut Sub> = subs.iter_mut().map(|(_, s)| s).collect();
        warm_up(&a, topic, &mut refs);
    }

    // Readers: each collects FAN_TOTAL messages (bounded).
    let readers: Vec<_> = subs
        .into_iter()
        .map(|(name, mut sub)| {
            std::thread::spawn(move || {
                let mut got: Vec<Msg> = Vec::with_capacity(FAN_TOTAL);
                let deadline = Instant::now() + Duration::from_secs(120);
                while got.len() < FAN_TOTAL && Instant::now() < deadline {
                    match sub.try_next(Duration::from_secs(20)) {
                        Ok(m) => got.push(m),
                        Err(e) => {
                            return (name, got, Some(format!("{e:?}")));
                        }
                    }
                }
                (name, got, None)
            })
        })
        .collect();

    // Publishers, concurrently: the socket on A (pipelined in batches of 50),
    // HTTP on B, and WS publish ops on both.
    let published = Arc::new(AtomicUsize::new(0));
    let (sock_addr, http_addr, a_addr, b_addr) = (a.socket.clone(), b.addr, a.addr, b.addr);
    let mut pubs = Vec::new();
    {
        let published = published.clone();
        pubs.push(std::thread::spawn(move || {
            let mut p = Publisher::connect(&sock_addr);
            let mut ids = Vec::new();
            for batch in (0..1000u64).collect::<Vec<_>>().chunks(50) {
                let mut payload = Vec::new();
                for n in batch {
                    payload.extend_from_slice(
                        format!(r#"{{"topic":"fan","data":{{"src":"sock-a","n":{n}}}}}"#)
                            .as_bytes(),
                    );
                    payload.push(b'\n');
                }
                p.send(&payload);
                for _ in batch {
                    ids.push(answer_id(&p.read_answer()));
                    published.fetch_add(1, Ordering::Relaxed);
                }
            }
            ("sock-a", ids)
        }));
    }
    {
        let published = published.clone();
        pubs.push(std::thread::spawn(move || {
            let mut c = HttpConn::connect(http_addr);
            let mut ids = Vec::new();
            for n in 0..800u64 {
                let r = c.publish("fan", &format!(r#"{{"src":"http-b","n":{n}}}"#));
                assert_eq!(r.status, 202, "POST /publish on B: {}", r.text());
                ids.push(str_field(&json(&r.text()), "id").expect("an id"));
                published.fetch_add(1, Ordering::Relaxed);
            }
            ("http-b", ids)
        }));
    }
    for (src, addr) in [("ws-a", a_addr), ("ws-b", b_addr)] {
        let published = published.clone();
        pubs.push(std::thread::spawn(move || {
            let mut c = TungsteniteClient::connect(addr, "/ws");
            let mut ids = Vec::new();
            for n in 0..100u64 {
                c.send(&format!(
                    r#"{{"op":"publish","topic":"fan","data":{{"src":"{src}","n":{n}}},"ref":{n}}}"#
                ));
                let v = json(&c.next_text());
                assert_eq!(str_field(&v, "op").as_deref(), Some("ack"), "{v:?}");
                assert_eq!(v.get("ref").and_then(|r| r.as_u64()), Some(n), "{v:?}");
                ids.push(str_field(&v, "id").expect("a publish ack carries the id"));
                published.fetch_add(1, Ordering::Relaxed);
            }
            (src, ids)
        }));
    }
    let mut acked: HashMap<(String, u64), String> = HashMap::new();
    for p in pubs {
        let (src, ids) = p.join().expect("publisher thread");
        assert_strictly_increasing(&ids, &format!("ids answered to {src}"));
        for (n, id) in ids.into_iter().enumerate() {
            acked.insert((src.to_owned(), n as u64), id);
        }
    }
    assert_eq!(acked.len(), FAN_TOTAL);
    let distinct_ids: BTreeSet<&String> = acked.values().collect();
    assert_eq!(
        distinct_ids.len(),
        FAN_TOTAL,
        "every publish got its own id"
    );

    let mut reference: Option<(String, Vec<String>)> = None;
    for r in readers {
        let (name, got, err) = r.join().expect("reader thread");
        assert!(
            err.is_none() && got.len() == FAN_TOTAL,
            "{name}: got {} of {FAN_TOTAL} ({err:?}); last {:?}\nA: {}\nB: {}",
            got.len(),
            got.last(),
            a.stderr_tail(),
            b.stderr_tail()
        );
        let ids: Vec<String> = got.iter().map(|m| m.id.clone()).collect();
        assert_strictly_increasing(&ids, &name);
        let mut seen = BTreeSet::new();
        let mut last_n: HashMap<String, u64> = HashMap::new();
        for m in &got {
            assert_eq!(m.topic, topic);
            let key = (m.src(), m.n());
            assert!(seen.insert(key.clone()), "{name}: duplicate {key:?}");
            assert_eq!(
                acked.get(&key),
                Some(&m.id),
                "{name}: {key:?} delivered with another id than its publisher got"
            );
            if let Some(prev) = last_n.insert(key.0.clone(), key.1) {
                assert!(
                    prev < key.1,
                    "{name}: {} out of its publisher's order",
                    key.0
                );
            }
        }
        match &reference {
            None => reference = Some((name, ids)),
            Some((first, want)) => {
                assert!(
                    &ids == want,
                    "{name} and {first} saw different orders (first difference at {:?})",
                    ids.iter().zip(want).position(|(x, y)| x != y)
                );
            }
        }
    }
    a.assert_no_panic();
    b.assert_no_panic();
}

// ---- 2. resume across nodes ----------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum ResumeBy {
    SseHeader,
    WsQuery,
    WsSince,
}

const RESUME_BY: [ResumeBy; 3] = [ResumeBy::SseHeader, ResumeBy::WsQuery, ResumeBy::WsSince];

fn resume(server: &Server, topic: &str, last: &str, by: ResumeBy) -> Sub {
    match by {
        ResumeBy::SseHeader => Sub::Sse(SseClient::connect(
            server.addr,
            &format!("topic={topic}"),
            Some(last),
        )),
        ResumeBy::WsQuery => Sub::Ws(TungsteniteClient::connect(
            server.addr,
            &format!("/ws?topic={topic}&lastEventId={last}"),
        )),
        ResumeBy::WsSince => {
            let mut c = TungsteniteClient::connect(server.addr, "/ws");
            c.send(&format!(
                r#"{{"op":"subscribe","topics":["{topic}"],"since":"{last}","ref":1}}"#
            ));
            Sub::Ws(c)
        }
    }
}

/// A client sees messages 1..=4 of 10 on node A and leaves; 11..=15 are
/// published on B; it resumes on B with the id of 4 and must get exactly
/// 5..=15, then the live 16. When `b_listens`, B has a subscriber of the topic
/// from the start (its history covers the resume); else B never read the topic
/// and the resume comes from `XRANGE`.
fn resume_on_the_other_node(b_listens: bool) {
    let redis = Redis::start();
    let a = node(&redis, &[]);
    let b = node(&redis, &[]);
    for by in RESUME_BY {
        let topic = format!("resume-{}-{by:?}", if b_listens { "warm" } else { "cold" });
        let topic = topic.as_str();
        let mut on_a = Sub::sse(&a, topic);
        let mut watcher = b_listens.then(|| Sub::sse(&b, topic));
        let ids = a.publish_ns(topic, 1..=10);
        let seen = on_a.take(4);
        assert_eq!(
            seen,
            (1..=4).zip(ids[..4].iter().cloned()).collect::<Vec<_>>()
        );
        drop(on_a);
        let later = publish_http(&b, topic, 11..=15);
        let all: Vec<String> = ids.iter().chain(&later).cloned().collect();
        assert_strictly_increasing(&all, topic);

        let mut c = resume(&b, topic, &ids[3], by);
        let got = c.take(11);
        let want: Vec<(u64, String)> = (5..=15).zip(all[4..].iter().cloned()).collect();
        assert_eq!(
            got, want,
            "{by:?} on B: exactly the missed messages, in order"
        );
        let live = a.publish_ns(topic, [16]).remove(0);
        assert_eq!(
            c.take(1),
            vec![(16, live.clone())],
            "{by:?}: then the live one"
        );
        assert!(
            c.quiet_for(Duration::from_millis(200)),
            "{by:?}: nothing more"
        );
        if let Some(w) = watcher.as_mut() {
            let mut want: Vec<(u64, String)> = (1..=15).zip(all.iter().cloned()).collect();
            want.push((16, live));
            assert_eq!(w.take(16), want, "B's own subscriber");
        }
    }
    a.assert_no_panic();
    b.assert_no_panic();
}

#[test]
fn a_client_resumes_on_the_other_node_with_exactly_the_missed_messages_then_live_ones() {
    resume_on_the_other_node(true);
}

#[test]
fn a_resume_on_a_node_that_never_read_the_topic_comes_from_the_stream_exactly() {
    resume_on_the_other_node(false);
}

/// The gap event a resume starts with; checks it names `topic`, `after` and,
/// when given, the `oldest` entry kept.
fn expect_gap(c: &mut Sub, topic: &str, after: &str, oldest: Option<&str>, what: &str) -> Msg {
    let gap = c
        .try_raw(READ_TIMEOUT)
        .unwrap_or_else(|e| panic!("{what}: no gap: {e:?}"));
    assert_eq!(
        gap.event.as_deref(),
        Some("ringcast.gap"),
        "{what}: first {gap:?}"
    );
    assert_eq!(
        str_field(&gap.data, "topic").as_deref(),
        Some(topic),
        "{what}: {gap:?}"
    );
    assert_eq!(
        str_field(&gap.data, "after").as_deref(),
        Some(after),
        "{what}: {gap:?}"
    );
    if oldest.is_some() {
        assert_eq!(
            str_field(&gap.data, "oldest").as_deref(),
            oldest,
            "{what}: the oldest entry kept: {gap:?}"
        );
    }
    gap
}

#[test]
fn a_resume_from_an_id_trimmed_off_the_stream_gets_a_gap_event_first_then_what_is_left() {
    let redis = Redis::start();
    let a = node(&redis, &[]);
    let b = node(&redis, &[]);
    for by in RESUME_BY {
        let topic = format!("trim-{by:?}");
        let topic = topic.as_str();
        let ids = a.publish_ns(topic, 1..=10);
        let key = format!("ringcast:{topic}");
        assert_eq!(redis.cmd(&["XTRIM", &key, "MAXLEN", "1"]).int(), 9);

        let mut c = resume(&b, topic, &ids[2], by);
        let what = format!("{by:?}");
        let gap = expect_gap(&mut c, topic, &ids[2], Some(&ids[9]), &what);
        assert_eq!(gap.topic, topic);
        assert_eq!(
            c.take(1),
            vec![(10, ids[9].clone())],
            "{by:?}: what is left"
        );
        let live = a.publish_ns(topic, [11]).remove(0);
        assert_eq!(c.take(1), vec![(11, live)], "{by:?}: then live");
    }
    a.assert_no_panic();
    b.assert_no_panic();
}

#[test]
fn a_stream_expires_history_ttl_after_its_last_publish_and_a_resume_from_it_gets_a_gap_first() {
    let redis = Redis::start();
    let a = node(&redis, &["--history-ttl", "2s"]);
    let b = node(&redis, &["--history-ttl", "2s"]);
    // One topic per way of resuming, plus one whose stream is written again
    // after it expired.
    let topics: Vec<String> = RESUME_BY
        .iter()
        .map(|by| format!("expire-{by:?}"))
        .chain(["expire-again".to_owned()])
        .collect();
    let mut ids = Vec::new();
    for topic in &topics {
        ids.push(a.publish_ns(topic, 1..=3));
        let ttl = redis.cmd(&["PTTL", &format!("ringcast:{topic}")]).int();
        assert!(
            ttl > 0 && ttl <= 2000,
            "{topic}: PTTL {ttl} right after a publish with --history-ttl 2s"
        );
    }
    let t0 = Instant::now();
    assert!(
        wait_until(Duration::from_secs(6), || topics
            .iter()
            .all(
                |t| redis.cmd(&["EXISTS", &format!("ringcast:{t}")]).int() == 0
            )),
        "streams still there {:?} after --history-ttl 2s",
        t0.elapsed()
    );
    eprintln!("streams gone {:?} after the last publish", t0.elapsed());

    // Resumes from the deleted streams, on the node that published and on one
    // that never read them: the gap first, then live messages only.
    for ((by, topic), ids) in RESUME_BY.iter().zip(&topics).zip(&ids) {
        let mut on_a = resume(&a, topic, &ids[1], *by);
        expect_gap(&mut on_a, topic, &ids[1], None, &format!("{by:?} on A"));
        let mut on_b = resume(&b, topic, &ids[1], *by);
        expect_gap(&mut on_b, topic, &ids[1], None, &format!("{by:?} on B"));
        warm_up(&a, topic, &mut [&mut on_a, &mut on_b]);
        let live = a.publish_ns(topic, [4]).remove(0);
        assert_eq!(on_a.take(1), vec![(4, live.clone())], "{by:?} on A: live");
        assert_eq!(on_b.take(1), vec![(4, live)], "{by:?} on B: live");
    }

    // Written again after it expired: a resume from the old stream gets the gap
    // (naming the new stream's first entry as the oldest kept), then exactly
    // what the new stream holds.
    let (topic, old) = (&topics[3], &ids[3]);
    let new = a.publish_ns(topic, 5..=6);
    // Kept while the resumes below read it, however slow the machine.
    redis.cmd(&["PERSIST", &format!("ringcast:{topic}")]);
    assert_strictly_increasing(&[old.clone(), new.clone()].concat(), topic);
    for (name, server) in [("A", &a), ("B", &b)] {
        let what = format!("written again, on {name}");
        let mut c = resume(server, topic, &old[1], ResumeBy::SseHeader);
        expect_gap(&mut c, topic, &old[1], Some(&new[0]), &what);
        assert_eq!(
            c.take(2),
            vec![(5, new[0].clone()), (6, new[1].clone())],
            "{what}: what the new stream holds"
        );
    }
    a.assert_no_panic();
    b.assert_no_panic();
}

// ---- 3. broker outage ----------------------------------------------------------

#[test]
fn while_redis_is_down_publishes_fail_at_once_healthz_is_503_subscribers_stay_and_delivery_resumes_after(
) {
    let mut redis = Redis::start();
    let a = node(&redis, &["--heartbeat", "500ms"]);
    let topic = "outage";
    let mut subs = [
        Sub::sse(&a, topic),
        Sub::sse(&a, topic),
        Sub::ws(&a, topic),
        Sub::ws(&a, topic),
    ];
    {
        let mut refs: Vec<&mut Sub> = subs.iter_mut().collect();
        warm_up(&a, topic, &mut refs);
    }
    let before = a.publish_ns(topic, 1..=10);
    for s in subs.iter_mut() {
        let want: Vec<(u64, String)> = (1..=10).zip(before.iter().cloned()).collect();
        assert_eq!(s.take(10), want, "{} before the outage", s.name());
    }
    assert_eq!(a.metric("ringcast_broker_up"), 1.0);
    let connections = a.metric_sum("ringcast_connections");

    redis.kill();
    let killed = Instant::now();
    assert!(
        wait_until(Duration::from_secs(5), || health(&a).status == 503),
        "/healthz never said 503 after Redis died\n{}",
        a.stderr_tail()
    );
    eprintln!("healthz 503 after {:?}", killed.elapsed());
    let h = health(&a);
    assert_eq!(h.status, 503);
    assert!(h.text().contains("broker unavailable"), "{:?}", h.text());
    assert_eq!(a.metric("ringcast_broker_up"), 0.0);

    let mut p = Publisher::connect(&a.socket);
    let mut slowest = Duration::ZERO;
    for n in 0..5 {
        let t = Instant::now();
        let answer = p.call(&line_n(topic, 100 + n));
        slowest = slowest.max(t.elapsed());
        assert_eq!(answer_error(&answer), "broker unavailable", "{answer}");
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "socket publish took {:?}",
            t.elapsed()
        );
    }
    for n in 0..5 {
        let t = Instant::now();
        let r = a.http_publish(topic, &format!(r#"{{"n":{}}}"#, 200 + n));
        slowest = slowest.max(t.elapsed());
        assert_eq!(r.0, 503, "HTTP publish while down: {}", r.1);
        assert!(r.1.contains("broker unavailable"), "{:?}", r.1);
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "HTTP publish took {:?}",
            t.elapsed()
        );
    }
    eprintln!("slowest refused publish: {slowest:?}");

    // Subscribers stay connected and keep getting heartbeats, and nothing else.
    for s in subs.iter_mut() {
        let beats = s.heartbeats();
        // 500 ms heartbeats: one is due within any 1.2 s, with room for a loaded machine.
        assert!(
            s.quiet_for(Duration::from_millis(1200)),
            "{} during the outage",
            s.name()
        );
        assert!(
            s.heartbeats() > beats,
            "{}: no heartbeat within 1.2 s during the outage",
            s.name()
        );
    }
    assert_eq!(a.metric_sum("ringcast_connections"), connections);
    assert_eq!(health(&a).status, 503, "still down");

    redis.start_again();
    let restarted = Instant::now();
    assert!(
        wait_until(Duration::from_secs(15), || health(&a).status == 200),
        "/healthz never said 200 after Redis came back\n{}",
        a.stderr_tail()
    );
    eprintln!(
        "healthz 200 after {:?} from the restart",
        restarted.elapsed()
    );
    assert_eq!(a.metric("ringcast_broker_up"), 1.0);
    assert!(a.metric("ringcast_broker_reconnects_total") >= 1.0);

    // The restarted Redis has empty streams: new entries must still flow.
    let after = a.publish_ns(topic, 11..=20);
    let all: Vec<String> = before.iter().chain(&after).cloned().collect();
    assert_strictly_increasing(&all, "ids across the outage");
    for s in subs.iter_mut() {
        let want: Vec<(u64, String)> = (11..=20).zip(after.iter().cloned()).collect();
        assert_eq!(s.take(10), want, "{} after the outage", s.name());
        assert!(
            s.quiet_for(Duration::from_millis(200)),
            "{}: no duplicate",
            s.name()
        );
    }
    assert_eq!(a.metric_sum("ringcast_connections"), connections);
    a.assert_no_panic();
}

// ---- 4. node restart -----------------------------------------------------------

#[test]
fn a_node_killed_and_started_again_resumes_its_clients_from_the_stream_exactly() {
    let redis = Redis::start();
    let mut a = node(&redis, &[]);
    let b = node(&redis, &[]);
    let topic = "restart";
    let mut sse = Sub::sse(&a, topic);
    let mut ws = Sub::ws(&a, topic);
    warm_up(&a, topic, &mut [&mut sse, &mut ws]);
    let ids = a.publish_ns(topic, 1..=6);
    let want: Vec<(u64, String)> = (1..=4).zip(ids.iter().cloned()).collect();
    assert_eq!(sse.take(4), want);
    assert_eq!(ws.take(4), want);

    a.kill();
    drop((sse, ws));
    let during = publish_http(&b, topic, 7..=12);
    // A start right after the kill may be refused (see the test below); the
    // harness retries it, bounded, so that this test is about the resume.
    let starts = a.start_again();
    eprintln!("node A restarted after {starts} start(s)");
    let all: Vec<String> = ids.iter().chain(&during).cloned().collect();
    let mut resumed = [
        resume(&a, topic, &ids[3], ResumeBy::SseHeader),
        resume(&a, topic, &ids[3], ResumeBy::WsQuery),
        resume(&a, topic, &ids[3], ResumeBy::WsSince),
    ];
    let want: Vec<(u64, String)> = (5..=12).zip(all[4..].iter().cloned()).collect();
    for c in resumed.iter_mut() {
        assert_eq!(c.take(8), want, "{} after the restart", c.name());
    }
    let live = publish_http(&b, topic, [13]).remove(0);
    for c in resumed.iter_mut() {
        assert_eq!(
            c.take(1),
            vec![(13, live.clone())],
            "{}: then live",
            c.name()
        );
        assert!(c.quiet_for(Duration::from_millis(200)));
    }
    a.assert_no_panic();
    b.assert_no_panic();
}

// ---- 5. cursors and races ------------------------------------------------------

#[test]
fn a_two_topic_cursor_from_node_a_resumes_both_topics_exactly_on_node_b() {
    let redis = Redis::start();
    let a = node(&redis, &[]);
    let b = node(&redis, &[]);
    let mut c = a.sse("topic=cx&topic=cy");
    c.wait_cursor();
    // The client reads x1..x4, then y1..y2, then leaves. Order holds within a
    // topic, not across topics (their home cores reach the client over different
    // rings), so y is published only once x is read.
    let mut read = |n: usize| -> Vec<(String, u64, String)> {
        (0..n)
            .map(|_| {
                let e = envelope(&c.next_event());
                (e.topic.clone(), payload_n(&e), e.id)
            })
            .collect()
    };
    let x = a.publish_ns("cx", 1..=4);
    let mut seen = read(4);
    let y = a.publish_ns("cy", 1..=4);
    seen.extend(read(2));
    let want_seen: Vec<(String, u64, String)> = (1..=4)
        .map(|n| ("cx".to_owned(), n, x[n as usize - 1].clone()))
        .chain((1..=2).map(|n| ("cy".to_owned(), n, y[n as usize - 1].clone())))
        .collect();
    assert_eq!(seen, want_seen);
    // Its cursor names its position in each topic, as `<cx id>_<cy id>`.
    let cursor = c.last_event_id.clone();
    assert_eq!(
        cursor,
        format!("{}_{}", x[3], y[1]),
        "the SSE id: line's cursor"
    );
    let (cx_at, cy_at) = (x[3].clone(), y[1].clone());
    drop(c);
    let x_more = publish_http(&b, "cx", 5..=6);
    let y_more = publish_http(&b, "cy", 5..=6);
    let all_x: Vec<String> = x.iter().chain(&x_more).cloned().collect();
    let all_y: Vec<String> = y.iter().chain(&y_more).cloned().collect();
    let missed = |all: &[String], at: &str| -> Vec<(u64, String)> {
        let from = all.iter().position(|i| i == at).map_or(0, |p| p + 1);
        all.iter()
            .enumerate()
            .skip(from)
            .map(|(i, id)| (i as u64 + 1, id.clone()))
            .collect()
    };
    let (want_x, want_y) = (missed(&all_x, &cx_at), missed(&all_y, &cy_at));

    let mut r = SseClient::connect(b.addr, "topic=cx&topic=cy", Some(&cursor));
    let (mut got_x, mut got_y) = (Vec::new(), Vec::new());
    while got_x.len() + got_y.len() < want_x.len() + want_y.len() {
        let ev = r.next_event();
        assert_eq!(ev.kind(), "message", "no gap expected: {ev:?}");
        let e = envelope(&ev);
        let entry = (payload_n(&e), e.id);
        match e.topic.as_str() {
            "cx" => got_x.push(entry),
            _ => got_y.push(entry),
        }
    }
    assert_eq!(
        got_x, want_x,
        "topic cx resumed from {cx_at} (cursor {cursor})"
    );
    assert_eq!(
        got_y, want_y,
        "topic cy resumed from {cy_at} (cursor {cursor})"
    );
    assert!(r.quiet_for(Duration::from_millis(200)));
    a.assert_no_panic();
    b.assert_no_panic();
}

/// A client moves to node B the moment it saw a message on A, before B's
/// bridge may have read that entry from the stream: the id is in the stream,
/// so it is not from the future; B must answer exactly the messages after it,
/// with no `ringcast.gap` and no message the client already saw.
#[test]
fn a_resume_on_a_node_that_has_not_read_the_id_yet_gets_no_gap_and_no_duplicates() {
    let redis = Redis::start();
    let a = node(&redis, &[]);
    let b = node(&redis, &[]);
    let topic = "race";
    let mut on_a = Sub::sse(&a, topic);
    let _b_listens = Sub::sse(&b, topic);
    let mut n = 0u64;
    for round in 0..20 {
        let ids = a.publish_ns(topic, n + 1..=n + 300);
        n += 300;
        let got = on_a.take(300);
        let last = got.last().unwrap().1.clone();
        assert_eq!(last, ids[299]);
        // At once, to node B.
        let mut c = resume(&b, topic, &last, ResumeBy::SseHeader);
        let live = a.publish_ns(topic, [n + 1]).remove(0);
        n += 1;
        assert_eq!(on_a.take(1), vec![(n, live.clone())]);
        // Everything the resumed client gets up to the live message (bounded).
        let mut got = Vec::new();
        loop {
            match c.try_raw(READ_TIMEOUT) {
                Ok(m) => {
                    let done = m.id == live;
                    got.push(m);
                    if done {
                        break;
                    }
                }
                Err(e) => {
                    panic!("round {round}: no live message after the resume: {e:?}; got {got:?}")
                }
            }
        }
        if got.len() != 1 {
            let gaps: Vec<&Msg> = got.iter().filter(|m| m.event.is_some()).collect();
            let dups: Vec<&str> = got
                .iter()
                .filter(|m| m.event.is_none() && m.id != live)
                .map(|m| m.id.as_str())
                .collect();
            panic!(
                "round {round}: resuming on B from {last} (just read on A) must give exactly \
                 the next message {live}; got {} events: gap events {gaps:?}, then {} messages \
                 the client had already seen (first {:?}, last {:?}), then the live one",
                got.len(),
                dups.len(),
                dups.first(),
                dups.last()
            );
        }
    }
}

// ---- 6. restart right after a kill -------------------------------------------

/// A supervisor restarts a killed node at once, on the same publish socket.
/// The new run must take the socket over: its predecessor is dead, whatever
/// `connect` says while the kernel tears the old run down.
#[test]
fn a_node_started_right_after_its_predecessor_was_killed_takes_over_its_publish_socket() {
    let redis = Redis::start();
    let mut a = node(&redis, &[]);
    let mut refused = Vec::new();
    for round in 0..5 {
        // Clients connected at the kill, as in production.
        let _sse = Sub::sse(&a, "k");
        let _ws = Sub::ws(&a, "k");
        a.kill();
        if let Err(err) = a.try_start_again_once() {
            refused.push(format!(
                "round {round}: {}",
                err.lines().last().unwrap_or_default()
            ));
            a.start_again();
        }
    }
    assert!(
        refused.is_empty(),
        "{} of 5 immediate restarts were refused:\n{}",
        refused.len(),
        refused.join("\n")
    );
}
