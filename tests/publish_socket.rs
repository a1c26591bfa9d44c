//! The publish socket's own bounds, against the real binary: a connection that
//! sends nothing for `--publish-idle-timeout` is closed (one that keeps
//! publishing is not), and past `--max-connections` a publisher gets one error
//! line and the end of the stream, while the clients already served go on.

pub mod common;

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use common::*;

const IDLE_ERROR: &str = "idle timeout (--publish-idle-timeout)";
const BUSY_ERROR: &str = "over capacity (--max-connections): retry later";

/// Reads the last error line and the end of the stream the server ends a
/// publisher with; the error's text, and when the end came.
fn goodbye(p: &mut Publisher) -> (String, Instant) {
    let error = answer_error(&p.read_answer());
    match p.try_read_answer() {
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => {}
        other => panic!("after {error:?}: {other:?} instead of the end of the stream"),
    }
    (error, Instant::now())
}

#[test]
fn a_silent_publisher_is_closed_after_the_publish_idle_timeout_and_a_busy_one_is_not() {
    let server = Server::start(&["--publish-idle-timeout", "1s"]);
    // Silent after one command.
    let mut idle = Publisher::connect(&server.socket);
    answer_id(&idle.call(&line_n("idle", 1)));
    let idle_since = Instant::now();
    let idle = std::thread::spawn(move || {
        let (error, at) = goodbye(&mut idle);
        (error, at - idle_since)
    });
    // Silent in the middle of a command: the half line is dropped, not published.
    let mut half = Publisher::connect(&server.socket);
    half.send(br#"{"topic":"idle","data":{"n":2}}"#);
    let half_since = Instant::now();
    let half = std::thread::spawn(move || {
        let (error, at) = goodbye(&mut half);
        (error, at - half_since)
    });
    // Busy: a command every 300 ms for 2.4 s, each answered.
    let mut busy = Publisher::connect(&server.socket);
    for n in 0..8 {
        std::thread::sleep(Duration::from_millis(300));
        answer_id(&busy.call(&line_n("busy", n)));
    }

    for (what, t) in [("idle", idle), ("half line", half)] {
        let (error, after) = t.join().expect("reader thread");
        eprintln!("{what} publisher closed after {after:?}");
        assert_eq!(error, IDLE_ERROR, "{what}");
        assert!(
            after >= Duration::from_millis(950) && after < Duration::from_secs(3),
            "{what}: closed after {after:?} with --publish-idle-timeout 1s"
        );
    }
    // Still served, and the dropped half line was never published.
    let mut sub = server.sse("topic=idle");
    let cursor = sub.wait_cursor();
    let (_, head) = split_id(&cursor);
    assert_eq!(head, 1, "only the idle publisher's one command: {cursor}");
    answer_id(&busy.call(&line_n("busy", 8)));
    server.assert_no_panic();
}

#[test]
fn with_publish_idle_timeout_zero_a_silent_publisher_stays() {
    let server = Server::start(&["--publish-idle-timeout", "0"]);
    let mut p = Publisher::connect(&server.socket);
    answer_id(&p.call(&line_n("never", 1)));
    std::thread::sleep(Duration::from_millis(1500));
    answer_id(&p.call(&line_n("never", 2)));
    server.assert_no_panic();
}

/// Opens an SSE stream, retrying while the server still counts a connection of
/// the harness (its readiness check) and answers `ringcast.busy`.
fn served_sse(server: &Server, topic: &str) -> SseClient {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut c = server.sse(&format!("topic={topic}"));
        // Served: the cursor block; refused: `retry:`, then the busy event.
        let served = loop {
            let b = c.next_block();
            if b.event.as_deref() == Some("ringcast.busy") {
                break false;
            }
            if b.id.is_some() {
                break true;
            }
        };
        if served {
            return c;
        }
        assert!(Instant::now() < deadline, "no stream served under the cap");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn past_max_connections_a_publisher_gets_one_error_line_and_eof_and_the_clients_go_on() {
    let server = Server::start(&["--max-connections", "2"]);
    let mut first = served_sse(&server, "cap");
    let second = served_sse(&server, "cap");

    // One publisher reads only; one sends a command first (never published).
    let mut quiet = Publisher::connect(&server.socket);
    assert_eq!(goodbye(&mut quiet).0, BUSY_ERROR);
    let mut eager = Publisher::connect(&server.socket);
    eager.send(format!("{}\n", line_n("cap", 1)).as_bytes());
    assert_eq!(goodbye(&mut eager).0, BUSY_ERROR);

    // One client leaves: a publisher is served again (once the server has
    // counted the close), and the other client gets its message, not the
    // refused one.
    drop(second);
    let mut id = None;
    assert!(
        wait_until(Duration::from_secs(5), || {
            let mut p = Publisher::connect(&server.socket);
            let answer = p.call(&line_n("cap", 2));
            if answer.contains(r#""ok":true"#) {
                id = Some(answer_id(&answer));
                return true;
            }
            assert_eq!(answer_error(&answer), BUSY_ERROR);
            false
        }),
        "no publisher served after a client left\n{}",
        server.stderr_tail()
    );
    let got = envelope(&first.next_event());
    assert_eq!((payload_n(&got), got.id), (2, id.unwrap()));
    let mut again = served_sse(&server, "cap");
    assert!(again.quiet_for(Duration::from_millis(100)));
    server.assert_no_panic();
}
