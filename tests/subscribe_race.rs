//! A message published after a subscriber was told it is subscribed must reach it.
//!
//! The server holds a WebSocket's 101 (for `?topic=`) and a `subscribe` op's
//! ack until every topic's home core has recorded the subscription, so a
//! publish that follows them cannot be stamped before the subscription.

pub mod common;

use std::net::TcpStream;
use std::time::Duration;

use common::*;
use tungstenite::client::IntoClientRequest;
use tungstenite::Message;

const TRIES: usize = 40;

/// Connects, subscribes (by URL or by op), publishes one message at once and
/// counts the clients that never got it.
fn missed(by_op: bool) -> Vec<String> {
    let server = Server::start(&[]);
    let mut missed = Vec::new();
    for i in 0..TRIES {
        let topic = format!("race{i}");
        let path = if by_op {
            "/ws".to_owned()
        } else {
            format!("/ws?topic={topic}")
        };
        let stream = TcpStream::connect(server.addr).expect("connect");
        let req = format!("ws://{}{path}", server.addr)
            .into_client_request()
            .expect("request");
        let (mut ws, _) = tungstenite::client::client(req, stream).expect("handshake");
        ws.get_mut()
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        if by_op {
            ws.send(Message::text(format!(
                r#"{{"op":"subscribe","topics":["{topic}"],"ref":1}}"#
            )))
            .expect("send");
            let ack = ws.read().expect("ack");
            assert!(ack.to_text().unwrap_or_default().contains("ack"), "{ack:?}");
        }
        let id = answer_id(&server.publish_socket(&[line_n(&topic, 1)])[0]);
        match ws.read() {
            Ok(Message::Text(t)) if t.as_str().contains(&id) => {}
            other => missed.push(format!("{topic} ({id}): {other:?}")),
        }
    }
    missed
}

#[test]
fn a_message_published_right_after_the_101_reaches_a_websocket_subscribed_by_url() {
    let missed = missed(false);
    assert!(
        missed.is_empty(),
        "{} of {TRIES} clients never got the message published after their 101:\n{}",
        missed.len(),
        missed.join("\n")
    );
}

#[test]
fn a_message_published_right_after_the_ack_reaches_a_websocket_subscribed_by_op() {
    let missed = missed(true);
    assert!(
        missed.is_empty(),
        "{} of {TRIES} clients never got the message published after their ack:\n{}",
        missed.len(),
        missed.join("\n")
    );
}
