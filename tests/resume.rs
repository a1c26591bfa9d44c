//! Resume: a client that reconnects with the last id it saw gets exactly what it
//! missed, in order, then live messages; when history no longer reaches back, or
//! the id is not of this run, it is told so with `ringcast.gap`.

pub mod common;

use common::*;

/// Reads `count` messages: (topic, envelope id, n, SSE id line).
fn read(c: &mut SseClient, count: usize) -> Vec<(String, String, u64, String)> {
    (0..count)
        .map(|_| {
            let b = c.next_event();
            assert_eq!(b.kind(), "message", "expected a message, got {b:?}");
            let e = envelope(&b);
            let n = payload_n(&e);
            (e.topic, e.id, n, b.id.expect("message without an id line"))
        })
        .collect()
}

fn ns(msgs: &[(String, String, u64, String)]) -> Vec<u64> {
    msgs.iter().map(|m| m.2).collect()
}

/// After a resume, a message published now arrives next, and nothing else does.
fn then_live(server: &Server, c: &mut SseClient, topic: &str, n: u64) {
    let id = server.publish_ns(topic, [n]).remove(0);
    let got = read(c, 1);
    assert_eq!(got[0].2, n, "the live message after the resume");
    assert_eq!(got[0].1, id);
}

fn resumes_exactly_the_missed_ones(use_query: bool) {
    let server = Server::start(&[]);
    let mut c = server.sse("topic=r");
    c.wait_cursor();
    server.publish_ns("r", 0..5);
    let seen = read(&mut c, 3);
    assert_eq!(ns(&seen), [0, 1, 2]);
    let last = seen[2].3.clone();
    drop(c);
    server.publish_ns("r", 5..8);

    let mut c = if use_query {
        server.sse(&format!("topic=r&lastEventId={last}"))
    } else {
        SseClient::connect(server.addr, "topic=r", Some(&last))
    };
    let missed = read(&mut c, 5);
    assert_eq!(
        ns(&missed),
        [3, 4, 5, 6, 7],
        "exactly the missed ones, in order"
    );
    for pair in missed.windows(2) {
        assert!(split_id(&pair[0].1).1 < split_id(&pair[1].1).1);
    }
    then_live(&server, &mut c, "r", 8);
}

#[test]
fn reconnecting_with_last_event_id_gets_exactly_the_missed_messages_then_live_ones() {
    resumes_exactly_the_missed_ones(false);
}

#[test]
fn the_last_event_id_query_parameter_resumes_like_the_header() {
    resumes_exactly_the_missed_ones(true);
}

#[test]
fn an_id_older_than_history_gets_a_gap_event_then_the_retained_messages() {
    let server = Server::start(&["--history", "5"]);
    let mut c = server.sse("topic=h");
    c.wait_cursor();
    let ids = server.publish_ns("h", [0]);
    let first = read(&mut c, 1);
    assert_eq!(first[0].1, ids[0]);
    drop(c);
    let later = server.publish_ns("h", 1..11); // seq 2..=11; history keeps 7..=11

    let mut c = SseClient::connect(server.addr, "topic=h", Some(&ids[0]));
    let gap = c.next_event();
    assert_eq!(gap.kind(), "ringcast.gap", "first event: {gap:?}");
    {
        use simd_json::prelude::*;
        let v = gap.json();
        assert_eq!(v.get("topic").and_then(|t| t.as_str()), Some("h"), "{v:?}");
        assert_eq!(
            v.get("after").and_then(|t| t.as_str()),
            Some(ids[0].as_str()),
            "{v:?}"
        );
        assert_eq!(
            v.get("oldest").and_then(|t| t.as_str()),
            Some(later[5].as_str()),
            "the oldest message kept: {v:?}"
        );
    }
    let kept = read(&mut c, 5);
    assert_eq!(
        ns(&kept),
        [6, 7, 8, 9, 10],
        "the five messages history keeps"
    );
    then_live(&server, &mut c, "h", 11);
}

#[test]
fn an_id_from_another_run_gets_a_gap_event_with_a_reason() {
    let server = Server::start(&[]);
    let ids = server.publish_ns("o", 0..3);
    let (epoch, seq) = split_id(&ids[2]);
    // Same shape, other epoch: flip the last hex digit.
    let last = epoch.chars().last().unwrap();
    let other = format!(
        "{}{}-{seq}",
        &epoch[..epoch.len() - 1],
        if last == '0' { '1' } else { '0' }
    );
    assert_ne!(other, ids[2]);
    let mut c = SseClient::connect(server.addr, "topic=o", Some(&other));
    let gap = c.next_event();
    assert_eq!(gap.kind(), "ringcast.gap", "first event: {gap:?}");
    {
        use simd_json::prelude::*;
        let v = gap.json();
        assert_eq!(v.get("topic").and_then(|t| t.as_str()), Some("o"), "{v:?}");
        let reason = v.get("reason").and_then(|t| t.as_str()).unwrap_or("");
        assert!(
            !reason.is_empty(),
            "a gap for a foreign id names a reason: {v:?}"
        );
    }
    // Whatever history it replays, it is this run's, in order, and live follows.
    let live = server.publish_ns("o", [100]).remove(0);
    let mut last_seq = 0;
    loop {
        let b = c.next_event();
        let e = envelope(&b);
        assert_eq!(split_id(&e.id).0, epoch, "ids of this run only");
        let s = split_id(&e.id).1;
        assert!(
            s > last_seq,
            "replay out of order: {} after {last_seq}",
            e.id
        );
        last_seq = s;
        if e.id == live {
            break;
        }
    }
}

#[test]
fn a_fresh_stream_starts_with_an_id_only_block_that_resumes_exactly() {
    let server = Server::start(&[]);
    server.publish_ns("f", 0..2); // history before the stream: not for it
    let mut c = server.sse("topic=f");
    // The first blocks: an optional retry hint, then an id-only block.
    let cursor = loop {
        let b = c.next_block();
        assert!(
            b.data.is_none(),
            "a data block before the starting cursor: {b:?}"
        );
        if b.retry.is_some() && b.id.is_none() {
            continue;
        }
        break b
            .id
            .expect("the first block after the retry hint is an id-only block");
    };
    assert_eq!(c.last_event_id, cursor);
    let (_, seq) = split_id(&cursor);
    assert_eq!(seq, 2, "the cursor stands at the topic's head");
    drop(c);
    server.publish_ns("f", 2..5);
    let mut c = SseClient::connect(server.addr, "topic=f", Some(&cursor));
    assert_eq!(
        ns(&read(&mut c, 3)),
        [2, 3, 4],
        "exactly those published meanwhile"
    );
    then_live(&server, &mut c, "f", 5);
}

#[test]
fn a_multi_topic_cursor_resumes_the_missed_messages_of_both_topics() {
    let server = Server::start(&[]);
    let mut c = server.sse("topics=a,b");
    c.wait_cursor();
    server.publish_ns("a", [0, 1]);
    server.publish_ns("b", [10]);
    let seen = read(&mut c, 3);
    let last = seen[2].3.clone();
    assert_eq!(c.last_event_id, last);
    drop(c);
    server.publish_ns("a", [2, 3]);
    server.publish_ns("b", [11, 12]);

    let mut c = SseClient::connect(server.addr, "topics=a,b", Some(&last));
    let missed = read(&mut c, 4);
    let of = |t: &str| -> Vec<u64> { missed.iter().filter(|m| m.0 == t).map(|m| m.2).collect() };
    assert_eq!(of("a"), [2, 3]);
    assert_eq!(of("b"), [11, 12]);
    // Nothing more than the missed ones before a live message.
    let live = server.publish_ns("b", [13]).remove(0);
    let next = read(&mut c, 1);
    assert_eq!(
        next[0].1, live,
        "after the missed ones, the live one; got {next:?}"
    );
}
