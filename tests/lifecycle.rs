//! Client lifecycle: clients that close during registration, mid-head, or
//! abruptly after receiving leave nothing behind (registry, subscriptions,
//! descriptors), as the registry's own gauges and /proc show.

pub mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use common::*;

const SSE: &str = "ringcast_connections{transport=\"sse\"}";

/// Waits until every gauge that counts clients is back to zero.
fn assert_no_client_left(server: &Server, why: &str) {
    let ok = wait_until(Duration::from_secs(10), || {
        let m = server.metrics();
        sum_series(&m, "ringcast_connections") == 0.0
            && sum_series(&m, "ringcast_subscriptions") == 0.0
    });
    assert!(ok, "{why}: clients left behind:\n{}", server.metrics());
}

/// Opens streams on `topic` until both cores hold one; returns them live.
fn watchers_on_both_cores(server: &Server, topic: &str) -> Vec<SseClient> {
    let mut clients = Vec::new();
    loop {
        clients.push(server.sse(&format!("topic={topic}")));
        let n = clients.len() as f64;
        assert!(
            wait_until(Duration::from_secs(10), || server.metric_sum(SSE) == n),
            "gauge never reached {n}"
        );
        let m = server.metrics();
        let on = |core: usize| {
            find_series(
                &m,
                &format!("ringcast_connections{{transport=\"sse\",core=\"{core}\"}}"),
            )
            .unwrap_or(0.0)
        };
        if on(0) > 0.0 && on(1) > 0.0 {
            break;
        }
        assert!(
            clients.len() < 200,
            "SO_REUSEPORT put every connection on one core"
        );
    }
    for c in &mut clients {
        c.wait_cursor();
    }
    clients
}

#[test]
fn clients_that_close_right_after_their_request_or_mid_head_leave_nothing_behind() {
    let server = Server::start(&[]);
    let accepted_before = server.metric_sum("ringcast_connections_accepted_total");
    const CLOSE_AT_ONCE: usize = 500;
    const MID_HEAD: usize = 50;
    // Four threads so that closes race registrations on both cores.
    let addr = server.addr;
    let threads: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                for i in (t..CLOSE_AT_ONCE).step_by(4) {
                    let mut s = TcpStream::connect(addr).expect("connect");
                    s.write_all(b"GET /sse?topic=seed HTTP/1.1\r\nHost: t\r\n\r\n")
                        .expect("write");
                    if i % 2 == 0 {
                        drop(s);
                    } else {
                        reset_close(s);
                    }
                }
                for _ in (t..MID_HEAD).step_by(4) {
                    let mut s = TcpStream::connect(addr).expect("connect");
                    s.write_all(b"GET /sse?topic=seed HTTP/1.1\r\nHo")
                        .expect("write");
                    drop(s);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }
    let want = accepted_before + (CLOSE_AT_ONCE + MID_HEAD) as f64;
    assert!(
        wait_until(Duration::from_secs(10), || server
            .metric_sum("ringcast_connections_accepted_total")
            >= want),
        "the server never accepted them all:\n{}",
        server.metrics()
    );
    assert_no_client_left(&server, "after 500 close-at-once and 50 mid-head clients");

    // A publish to the topic reaches no one. To know when every core has seen
    // it, publish a second message that live watchers on both cores receive:
    // each core gets the home's messages in order.
    let delivered_before = server.metric_sum("ringcast_messages_delivered_total");
    let id = answer_id(&server.publish_socket(&[line_n("seed", 1)])[0]);
    let mut watchers = watchers_on_both_cores(&server, "seed");
    let id2 = answer_id(&server.publish_socket(&[line_n("seed", 2)])[0]);
    assert!(split_id(&id).1 < split_id(&id2).1);
    for w in &mut watchers {
        let e = envelope(&w.next_event());
        assert_eq!(
            payload_n(&e),
            2,
            "a watcher got a message published before it came"
        );
    }
    let delivered = server.metric_sum("ringcast_messages_delivered_total") - delivered_before;
    assert_eq!(
        delivered,
        watchers.len() as f64,
        "messages were queued to clients that had gone"
    );
    drop(watchers);
    assert_no_client_left(&server, "after the watchers left");
    server.assert_no_panic();
}

#[test]
fn two_hundred_clients_that_vanish_after_a_message_free_their_slots_and_descriptors() {
    let server = Server::start(&[]);
    // The baseline: listeners, the publish socket, rings, and no client.
    assert!(wait_until(Duration::from_secs(5), || server
        .metric_sum(SSE)
        == 0.0));
    let baseline = server.settled_fd_count();
    let baseline_listing = server.fd_listing();

    const CLIENTS: usize = 200;
    let mut clients: Vec<SseClient> = (0..CLIENTS).map(|_| server.sse("topic=churn")).collect();
    assert!(
        wait_until(Duration::from_secs(10), || server.metric_sum(SSE)
            == CLIENTS as f64),
        "the gauge never counted {CLIENTS} clients:\n{}",
        server.metrics()
    );
    for c in &mut clients {
        c.wait_cursor();
    }
    assert!(
        server.fd_count() >= baseline + CLIENTS,
        "each client holds a descriptor"
    );
    answer_id(&server.publish_socket(&[line_n("churn", 7)])[0]);
    for c in &mut clients {
        assert_eq!(payload_n(&envelope(&c.next_event())), 7);
    }
    for (i, c) in clients.into_iter().enumerate() {
        if i % 2 == 0 {
            c.reset();
        } else {
            drop(c);
        }
    }
    assert_no_client_left(&server, "after 100 RST and 100 FIN disconnects");
    assert!(
        wait_until(Duration::from_secs(10), || server.fd_count() <= baseline),
        "descriptors not released: {} open, baseline {baseline}\nnow:\n{}\nbaseline:\n{baseline_listing}\n{}\n{}",
        server.fd_count(),
        server.fd_listing(),
        server.stderr_tail(),
        server.metrics()
    );
    let closed = server.metric_sum("ringcast_connections_closed_total{transport=\"sse\"}");
    assert_eq!(closed, CLIENTS as f64, "every close is counted once");
    server.assert_no_panic();
}

#[test]
fn the_last_subscriber_leaving_its_topics_home_core_leaves_every_core_serving() {
    let server = Server::start(&[]);
    // One stream on each core, so one of them is on the topic's home core.
    let watchers = watchers_on_both_cores(&server, "home");
    drop(watchers);
    assert_no_client_left(&server, "after the watchers left");
    server.assert_no_panic();
    let m = server.metrics();
    assert_eq!(sum_series(&m, "ringcast_topics"), 0.0, "{m}");
    // Releasing a topic is core-local on its home: nothing may be sent (or lost)
    // on the bus for it.
    assert_eq!(sum_series(&m, "ringcast_bus_overflow_total"), 0.0, "{m}");
    // Both cores still answer: fresh connections spread over both listeners.
    for i in 0..20 {
        let r = try_request(
            server.addr,
            b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )
        .unwrap_or_else(|e| panic!("request {i} got no answer: {e}\n{}", server.stderr_tail()));
        assert_eq!(r.status, 200);
    }
    // And the topic works again for a new subscriber.
    let mut c = server.sse("topic=home");
    c.wait_cursor();
    answer_id(&server.publish_socket(&[line_n("home", 3)])[0]);
    assert_eq!(payload_n(&envelope(&c.next_event())), 3);
}
