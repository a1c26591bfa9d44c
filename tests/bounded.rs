//! Bounded by design: the history budget and age limit hold memory whatever is
//! published, forgotten topics leave, evictions are announced, positions never
//! repeat, and long resumes are paced by the socket instead of cut.
//!
//! Figures are printed with `eprintln!` (see them with `--nocapture`).

pub mod common;

use std::io::Read;
use std::time::{Duration, Instant};

use common::*;

const MIB: u64 = 1 << 20;

/// Publishes `lines` over the socket in batches; every answer must be ok.
fn flood(server: &Server, lines: impl Iterator<Item = String>) -> usize {
    let mut batch = Vec::with_capacity(2000);
    let mut sent = 0;
    let mut send = |batch: &mut Vec<String>| {
        for a in server.publish_socket(batch) {
            assert!(a.contains("\"ok\":true"), "publish refused: {a}");
        }
        sent += batch.len();
        batch.clear();
    };
    for l in lines {
        batch.push(l);
        if batch.len() == 2000 {
            send(&mut batch);
        }
    }
    send(&mut batch);
    sent
}

fn data_line(topic: &str, size: usize) -> String {
    format!(
        "{{\"topic\":\"{topic}\",\"data\":\"{}\"}}",
        "x".repeat(size)
    )
}

/// RSS growth against what the histories count, and the bound of the issue:
/// start + 1.5 × budget + slack.
fn check_rss(server: &Server, what: &str, start: u64, budget: u64) {
    let rss = server.rss();
    let counted = server.metric_sum("ringcast_history_bytes") as u64;
    let messages = server.metric_sum("ringcast_history_messages") as u64;
    eprintln!(
        "{what}: RSS {} → {} MiB (+{} MiB); histories count {:.1} MiB in {messages} messages \
         (RSS growth / counted = {:.2}); budget {} MiB",
        start / MIB,
        rss / MIB,
        rss.saturating_sub(start) / MIB,
        counted as f64 / MIB as f64,
        rss.saturating_sub(start) as f64 / counted.max(1) as f64,
        budget / MIB
    );
    assert!(
        counted <= budget,
        "{what}: histories count {counted} over {budget}"
    );
    let slack = 24 * MIB;
    assert!(
        rss <= start + budget * 3 / 2 + slack,
        "{what}: RSS {} MiB past start {} MiB + 1.5 × {} MiB + {} MiB",
        rss / MIB,
        start / MIB,
        budget / MIB,
        slack / MIB
    );
}

#[test]
fn two_hundred_thousand_per_user_topics_stay_within_the_budget_and_are_forgotten_after_the_ttl() {
    let _serial = serial();
    let server = Server::start(&["--history-memory", "64MiB", "--history-ttl", "3s"]);
    let start = server.rss();
    let t0 = Instant::now();
    let n = flood(
        &server,
        (0..200_000).map(|u| data_line(&format!("user:{u}"), 400)),
    );
    eprintln!("published {n} per-user messages in {:?}", t0.elapsed());
    check_rss(&server, "200k per-user topics", start, 64 * MIB);
    let evicted = server.metric_sum("ringcast_history_evictions_total{reason=\"budget\"");
    assert!(
        evicted > 0.0,
        "the budget never evicted:\n{}",
        server.metrics()
    );
    // After the age limit nothing is held and every topic is forgotten.
    let t_ttl = Instant::now();
    assert!(
        wait_until(Duration::from_secs(10), || server
            .metric_sum("ringcast_home_topics")
            == 0.0),
        "topics still kept:\n{}",
        server.metrics()
    );
    eprintln!("all topics forgotten {:?} after the flood", t_ttl.elapsed());
    assert_eq!(server.metric_sum("ringcast_history_bytes"), 0.0);
    assert_eq!(
        server.metric_sum("ringcast_topics_forgotten_total"),
        200_000.0
    );
    server.assert_no_panic();
}

#[test]
fn four_kilobyte_messages_to_topics_nobody_reads_stay_within_the_budget() {
    let _serial = serial();
    let server = Server::start(&["--history-memory", "64MiB", "--history-ttl", "3s"]);
    let start = server.rss();
    // 400 topics × 250 messages × 4 KB: 400 MB published, 6 × the budget.
    let n = flood(
        &server,
        (0..250).flat_map(|_| (0..400).map(|t| data_line(&format!("bulk.{t}"), 4000))),
    );
    assert_eq!(n, 100_000);
    check_rss(&server, "400 topics × 4 KB", start, 64 * MIB);
    server.assert_no_panic();
}

#[test]
fn a_resume_from_an_evicted_position_gets_the_gap_first_and_positions_never_repeat() {
    let server = Server::start(&[
        "--cores",
        "1",
        "--history-memory",
        "1MiB",
        "--history-ttl",
        "0",
    ]);
    // "kept" has a listener, so it stays while its history is evicted;
    // "lone" has none, so it is forgotten with its last message.
    let mut listener = server.sse("topic=kept");
    listener.wait_cursor();
    let ids: Vec<(String, String)> = ["kept", "lone"]
        .iter()
        .map(|t| {
            let a = server.publish_socket(&[line_n(t, 1), line_n(t, 2)]);
            (t.to_string(), answer_id(&a[0]))
        })
        .collect();
    flood(
        &server,
        (0..1000).map(|i| data_line(&format!("filler.{i}"), 2000)),
    );
    assert!(server.metric_sum("ringcast_history_evictions_total{reason=\"budget\"") > 0.0);
    for (topic, first) in &ids {
        let mut c = SseClient::connect(server.addr, &format!("topic={topic}"), Some(first));
        let gap = c.next_event();
        assert_eq!(
            gap.event.as_deref(),
            Some("ringcast.gap"),
            "{topic}: {gap:?}"
        );
        let text = gap.data.clone().unwrap_or_default();
        assert!(
            text.contains(&format!("\"after\":\"{first}\"")) && text.contains("\"oldest\""),
            "{topic}: {text}"
        );
        // Then live messages, with positions past everything issued before.
        let a = server.publish_socket(&[line_n(topic, 3)]);
        let id = answer_id(&a[0]);
        let m = envelope(&c.next_event());
        assert_eq!((m.id.as_str(), payload_n(&m)), (id.as_str(), 3));
        let (_, seq) = split_id(&id);
        assert!(seq > 2, "{topic}: position {seq} issued again");
    }
    assert!(server.metric_sum("ringcast_topics_forgotten_total") >= 1.0);
    drop(listener);
    server.assert_no_panic();
}

#[test]
fn a_forgotten_topic_published_again_gets_new_positions_and_old_ids_get_a_gap() {
    let server = Server::start(&["--history-ttl", "1s"]);
    let a = server.publish_socket(&[line_n("again", 1), line_n("again", 2)]);
    let old = answer_id(&a[1]);
    assert!(
        wait_until(Duration::from_secs(5), || server
            .metric_sum("ringcast_home_topics")
            == 0.0),
        "not forgotten:\n{}",
        server.metrics()
    );
    let b = server.publish_socket(&[line_n("again", 3)]);
    let new = answer_id(&b[0]);
    let (old_epoch, old_seq) = split_id(&old);
    let (new_epoch, new_seq) = split_id(&new);
    assert_eq!(old_epoch, new_epoch);
    assert!(new_seq > old_seq, "{new} issued after {old}");
    // From the last id before the forgetting nothing is missed: no gap.
    let mut c = SseClient::connect(server.addr, "topic=again", Some(&old));
    let m = envelope(&c.next_event());
    assert_eq!((m.id.as_str(), payload_n(&m)), (new.as_str(), 3));
    // From an older one, message 2 is gone: the gap comes first.
    let first = answer_id(&a[0]);
    let mut c = SseClient::connect(server.addr, "topic=again", Some(&first));
    let gap = c.next_event();
    assert_eq!(gap.event.as_deref(), Some("ringcast.gap"), "{gap:?}");
    let m = envelope(&c.next_event());
    assert_eq!((m.id.as_str(), payload_n(&m)), (new.as_str(), 3));
}

/// 1,000 messages of about 2.2 KB: a resume of 2.2 MB, twice `--max-outbox-bytes`.
fn publish_big_history(server: &Server, topic: &str) -> Vec<String> {
    let lines: Vec<String> = (1..=1000)
        .map(|n| {
            format!(
                "{{\"topic\":\"{topic}\",\"data\":{{\"n\":{n},\"pad\":\"{}\"}}}}",
                "p".repeat(2200)
            )
        })
        .collect();
    server.publish_ids(&lines)
}

#[test]
fn sse_and_ws_resumes_of_two_megabytes_with_the_default_flags_get_their_head_then_everything() {
    let _serial = serial();
    let server = Server::start(&[]);
    let ids = publish_big_history(&server, "big");
    let t0 = Instant::now();
    // SseClient::connect checks the 200 head before anything else.
    let mut sse = SseClient::connect(server.addr, "topic=big", Some(&ids[0]));
    for n in 2..=1000 {
        let b = sse.next_event();
        assert_eq!(b.event, None, "at {n}: {b:?}");
        let e = envelope(&b);
        assert_eq!(
            (payload_n(&e), e.id.as_str()),
            (n, ids[n as usize - 1].as_str())
        );
    }
    let sse_took = t0.elapsed();
    let t1 = Instant::now();
    let mut ws = server.ws(&format!("topic=big&lastEventId={}", ids[0]));
    for n in 2..=1000 {
        assert_eq!(payload_n(&ws.next_envelope()), n);
    }
    let ws_took = t1.elapsed();
    // Live messages follow the resume.
    server.publish_socket(&[line_n("big", 1001)]);
    assert_eq!(payload_n(&envelope(&sse.next_event())), 1001);
    assert_eq!(payload_n(&ws.next_envelope()), 1001);
    eprintln!("2.2 MB resumes: SSE {sse_took:?}, WS {ws_took:?}");
    assert_eq!(server.metric_sum("ringcast_slow_consumers_total"), 0.0);
    server.assert_no_panic();
}

#[test]
fn a_reader_that_stalls_during_a_resume_is_still_cut_when_live_traffic_piles_up() {
    let _serial = serial();
    let server = Server::start(&["--max-outbox-bytes", "256KiB"]);
    let ids = publish_big_history(&server, "stall");
    // Resumes 2.2 MB and never reads: a small receive window holds it back.
    let mut stalled = connect_with_rcvbuf(server.addr, 4096);
    std::io::Write::write_all(
        &mut stalled,
        format!(
            "GET /sse?topic=stall HTTP/1.1\r\nHost: t\r\nLast-Event-ID: {}\r\n\r\n",
            ids[0]
        )
        .as_bytes(),
    )
    .unwrap();
    let mut reader = server.sse("topic=stall");
    reader.wait_cursor();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        server.metric_sum("ringcast_slow_consumers_total"),
        0.0,
        "the backlog alone must not cut it"
    );
    // Live traffic it does not read: once the kernel's buffers are full, the
    // live messages pile up in the server, and past the bound it is cut. The
    // other reader keeps up, and gets everything.
    let mut batches = 0;
    while server.metric_sum("ringcast_slow_consumers_total") == 0.0 {
        assert!(
            batches < 50,
            "not cut after 50 × 800 KB:\n{}",
            server.metrics()
        );
        let lines: Vec<String> = (0..200).map(|_| data_line("stall", 4000)).collect();
        server.publish_socket(&lines);
        for _ in 0..200 {
            assert!(reader.next_event().event.is_none());
        }
        batches += 1;
    }
    eprintln!(
        "stalled reader cut after {} KB of live traffic",
        batches * 800
    );
    // The stalled client's stream starts with its head.
    let mut first = [0u8; 12];
    stalled.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    stalled.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    server.assert_no_panic();
}
