//! `ringcast publish`: prints the id and exits 0; prints the server's error and
//! exits non-zero on a refusal; exits non-zero with a clear message without a server.

pub mod common;

use std::process::{Command, Output};

use common::*;

fn ringcast_publish(args: &[&str]) -> Output {
    Command::new(bin())
        .arg("publish")
        .args(args)
        .output()
        .expect("run ringcast publish")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn publish_prints_the_id_and_subscribers_get_the_message() {
    let server = Server::start(&[]);
    let mut c = server.sse("topic=cli");
    c.wait_cursor();
    let sock = server.socket.to_str().unwrap();
    let out = ringcast_publish(&["--socket", sock, "cli", "{\"n\":5}"]);
    assert!(
        out.status.success(),
        "exit {:?}; stderr {}",
        out.status,
        text(&out.stderr)
    );
    let id = text(&out.stdout).trim().to_owned();
    let (epoch, seq) = split_id(&id);
    assert_eq!(epoch, server.epoch());
    assert_eq!(seq, 1);
    let e = envelope(&c.next_event());
    assert_eq!(e.id, id);
    assert_eq!(payload_n(&e), 5);
    // Text that is not JSON arrives as a JSON string.
    let out = ringcast_publish(&["--socket", sock, "cli", "hello there"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let e = envelope(&c.next_event());
    assert_eq!(e.data, simd_json::OwnedValue::from("hello there"));
}

#[test]
fn publish_to_a_bad_topic_prints_the_servers_error_and_fails() {
    let server = Server::start(&[]);
    let sock = server.socket.to_str().unwrap();
    let out = ringcast_publish(&["--socket", sock, "a b", "1"]);
    assert!(
        !out.status.success(),
        "a bad topic must fail; stdout {}",
        text(&out.stdout)
    );
    let err = text(&out.stderr);
    assert!(err.contains("topic must be 1-128 bytes"), "stderr: {err}");
    assert!(
        text(&out.stdout).trim().is_empty(),
        "no id printed: {}",
        text(&out.stdout)
    );
}

#[test]
fn publish_without_a_server_fails_with_a_clear_message() {
    let dir = TempDir::new();
    let sock = dir.path().join("nobody.sock");
    let out = ringcast_publish(&["--socket", sock.to_str().unwrap(), "a", "1"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("cannot connect") && err.contains("nobody.sock"),
        "stderr should say it cannot reach the socket: {err}"
    );
}
