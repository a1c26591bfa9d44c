//! Fan-out over real sockets: many SSE subscribers spread over both cores get
//! every message published (Unix socket and HTTP), in order, exactly once.

pub mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;

const SUBSCRIBERS: usize = 40;
const PER_PATH: u64 = 1000;

fn sse_gauge(server: &Server, core: usize) -> f64 {
    server.metric(&format!(
        "ringcast_connections{{transport=\"sse\",core=\"{core}\"}}"
    ))
}

/// Opens `SUBSCRIBERS` streams on `query`, more if one core got none, and waits
/// until each has its starting cursor (so every subscription is live).
fn subscribers_on_both_cores(server: &Server, query: &str) -> Vec<SseClient> {
    let mut clients: Vec<SseClient> = (0..SUBSCRIBERS).map(|_| server.sse(query)).collect();
    loop {
        let n = clients.len() as f64;
        assert!(
            wait_until(Duration::from_secs(10), || server
                .metric_sum("ringcast_connections{transport=\"sse\"}")
                == n),
            "the connection gauge never reached {n}:\n{}",
            server.metrics()
        );
        if sse_gauge(server, 0) > 0.0 && sse_gauge(server, 1) > 0.0 {
            break;
        }
        assert!(
            clients.len() < 400,
            "SO_REUSEPORT put {} connections on one core",
            clients.len()
        );
        clients.push(server.sse(query));
    }
    for c in &mut clients {
        c.wait_cursor();
    }
    clients
}

/// What one subscriber saw: (SSE id line, envelope id, payload n) per message.
type Seen = Vec<(String, String, u64)>;

fn read_n(mut c: SseClient, n: usize, deadline: Instant) -> Seen {
    let mut seen = Vec::with_capacity(n);
    while seen.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        let b = c
            .try_next_event(left)
            .unwrap_or_else(|e| panic!("after {} of {n} messages: {e}", seen.len()));
        assert_eq!(b.kind(), "message", "unexpected event {b:?}");
        let e = envelope(&b);
        assert_eq!(e.topic, "fan");
        seen.push((
            b.id.clone().expect("message without id:"),
            e.id.clone(),
            payload_n(&e),
        ));
    }
    seen
}

fn fan_out(args: &[&str], driver: Option<&str>) {
    let server = Server::start(args);
    if let Some(driver) = driver {
        let metrics = server.metrics();
        let info = metrics
            .lines()
            .find(|l| l.starts_with("ringcast_info{"))
            .expect("ringcast_info");
        assert!(
            info.contains(&format!("driver=\"{driver}\"")),
            "asked for --driver {driver}, runs {info}"
        );
    }
    let clients = subscribers_on_both_cores(&server, "topic=fan");
    let subscribers = clients.len();
    let total = (2 * PER_PATH) as usize;
    let deadline = Instant::now() + Duration::from_secs(40);
    let readers: Vec<_> = clients
        .into_iter()
        .map(|c| std::thread::spawn(move || read_n(c, total, deadline)))
        .collect();

    // 1,000 through the Unix socket, pipelined.
    let lines: Vec<String> = (0..PER_PATH).map(|n| line_n("fan", n)).collect();
    let mut published: Vec<String> = server.publish_ids(&lines);
    // 1,000 through POST /publish on one keep-alive connection.
    let mut http = HttpConn::connect(server.addr);
    for n in PER_PATH..2 * PER_PATH {
        let r = http.publish("fan", &format!("{{\"n\":{n}}}"));
        assert_eq!(r.status, 202, "POST /publish n={n}: {}", r.text());
        let body = r.text();
        let id = body
            .split('"')
            .nth(3)
            .unwrap_or_else(|| panic!("202 body without id: {body}"));
        published.push(id.to_owned());
    }
    for pair in published.windows(2) {
        assert!(
            split_id(&pair[0]).1 < split_id(&pair[1]).1,
            "publish ids not increasing: {pair:?}"
        );
    }

    for (i, r) in readers.into_iter().enumerate() {
        let seen = r.join().unwrap_or_else(|_| panic!("subscriber {i} failed"));
        let ns: Vec<u64> = seen.iter().map(|s| s.2).collect();
        let want: Vec<u64> = (0..2 * PER_PATH).collect();
        if ns != want {
            let first_bad = ns.iter().zip(&want).position(|(a, b)| a != b);
            panic!(
                "subscriber {i}: payloads out of order, lost or duplicated; first difference at {first_bad:?}, got {} messages",
                ns.len()
            );
        }
        for (line_id, env_id, _) in &seen {
            assert_eq!(
                line_id, env_id,
                "subscriber {i}: SSE id and envelope id differ"
            );
        }
        let ids: Vec<String> = seen.iter().map(|s| s.1.clone()).collect();
        assert_eq!(
            ids, published,
            "subscriber {i}: ids differ from the publish answers"
        );
    }
    let want = (subscribers * total) as f64;
    assert!(
        wait_until(Duration::from_secs(5), || server
            .metric_sum("ringcast_messages_delivered_total")
            == want),
        "ringcast_messages_delivered_total is not {want}:\n{}",
        server.metrics()
    );
    server.assert_no_panic();
}

#[test]
fn forty_subscribers_on_both_cores_get_every_message_in_order_exactly_once() {
    fan_out(&[], None);
}

#[test]
fn fan_out_is_complete_and_ordered_with_the_epoll_driver() {
    fan_out(&["--driver", "epoll"], Some("epoll"));
}

#[test]
fn fan_out_is_complete_and_ordered_with_the_uring_driver() {
    // No skipping: if io_uring is unavailable the server refuses to start and
    // this test fails loudly with its error.
    fan_out(&["--driver", "uring"], Some("uring"));
}

#[test]
fn publish_socket_answers_come_back_in_order_with_ids() {
    let server = Server::start(&[]);
    let mut lines = Vec::new();
    for n in 0..600u64 {
        let topic = ["x", "y", "z"][(n % 3) as usize];
        lines.push(line_n(topic, n));
        if n == 300 {
            lines.push("{not json".to_owned());
        }
    }
    let answers = server.publish_socket(&lines);
    assert_eq!(answers.len(), lines.len());
    let mut last: BTreeMap<String, u64> = BTreeMap::new();
    let mut epochs = Vec::new();
    for (line, answer) in lines.iter().zip(&answers) {
        if line.starts_with("{not") {
            answer_error(answer);
            continue;
        }
        let id = answer_id(answer);
        let (epoch, seq) = split_id(&id);
        epochs.push(epoch);
        let topic = line.split('"').nth(3).unwrap().to_owned();
        let prev = last.insert(topic.clone(), seq).unwrap_or(0);
        assert_eq!(
            seq,
            prev + 1,
            "topic {topic}: answer {answer} after seq {prev}"
        );
    }
    epochs.dedup();
    assert_eq!(epochs.len(), 1, "one run, one epoch: {epochs:?}");
    assert_eq!(epochs[0], server.epoch());
}

#[test]
fn a_multi_topic_stream_gets_both_topics_in_order() {
    let server = Server::start(&[]);
    let mut c = server.sse("topics=a,b");
    let start = c.wait_cursor();
    let epoch = server.epoch();
    assert_eq!(start, format!("{epoch}-0.0"), "a fresh two-topic cursor");
    let lines: Vec<String> = (0..100u64)
        .map(|n| line_n(if n % 2 == 0 { "a" } else { "b" }, n))
        .collect();
    for a in server.publish_socket(&lines) {
        answer_id(&a);
    }
    let mut per_topic: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut last_cursor = (0u64, 0u64);
    for _ in 0..100 {
        let b = c.next_event();
        let e = envelope(&b);
        per_topic
            .entry(e.topic.clone())
            .or_default()
            .push(payload_n(&e));
        // The id line is a cursor over both topics; it only moves forward.
        let line = b.id.clone().expect("id line");
        let (ep, rest) = line.split_once('-').expect("cursor shape");
        assert_eq!(ep, epoch);
        let (sa, sb) = rest.split_once('.').expect("two positions");
        let cur = (sa.parse::<u64>().unwrap(), sb.parse::<u64>().unwrap());
        assert!(cur.0 >= last_cursor.0 && cur.1 >= last_cursor.1 && cur != last_cursor);
        last_cursor = cur;
        // The envelope id is the message's own per-topic id.
        let own = split_id(&e.id).1;
        assert_eq!(
            own,
            if e.topic == "a" { cur.0 } else { cur.1 },
            "{line} vs {}",
            e.id
        );
    }
    assert_eq!(per_topic["a"], (0..100).step_by(2).collect::<Vec<u64>>());
    assert_eq!(per_topic["b"], (1..100).step_by(2).collect::<Vec<u64>>());
    assert_eq!(last_cursor, (50, 50));
}

#[test]
fn pipelined_http_publishes_are_answered_in_order_with_increasing_ids() {
    let server = Server::start(&[]);
    let mut sub = server.sse("topic=piped");
    sub.wait_cursor();
    let mut conn = HttpConn::connect(server.addr);
    let mut burst = Vec::new();
    for n in 0..50 {
        let body = format!("{{\"n\":{n}}}");
        burst.extend_from_slice(
            format!(
                "POST /publish?topic=piped HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
    }
    conn.send(&burst);
    let mut ids = Vec::new();
    for _ in 0..50 {
        let r = conn.read_response();
        assert_eq!(r.status, 202, "{}", r.text());
        use simd_json::prelude::*;
        let mut text = r.text().trim().as_bytes().to_vec();
        let v = simd_json::to_owned_value(&mut text).expect("a JSON answer");
        ids.push(split_id(v.get("id").and_then(|i| i.as_str()).expect("id")).1);
    }
    assert!(
        ids.windows(2).all(|p| p[0] + 1 == p[1]),
        "ids in order: {ids:?}"
    );
    for n in 0..50u64 {
        assert_eq!(payload_n(&envelope(&sub.next_event())), n);
    }
    server.assert_no_panic();
}
