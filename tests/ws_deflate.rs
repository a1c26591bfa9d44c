//! permessage-deflate (RFC 7692) on `/ws` against the real binary over real
//! sockets: the handshake answer, compressed and plain messages to the same
//! topic, client messages compressed by the client, the RSV1 rules and the
//! inflate limit with their close codes, `--ws-deflate off`; then two real
//! client libraries (Node `ws` with `perMessageDeflate`, Python `websockets`
//! with compression) subscribing and publishing. Every wait is bounded.

pub mod common;

use std::path::Path;
use std::process::Command;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};

use common::*;

const OFFER: &str = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n";
const MASK: [u8; 4] = [0x0b, 0xad, 0xf0, 0x0d];

/// A masked client frame with first byte `b0`.
fn client_frame(b0: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![b0];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xFFFF => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&MASK);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    out
}

/// Raw DEFLATE with a sync flush, trailer removed (RFC 7692 §7.2.1).
fn deflate(payload: &[u8]) -> Vec<u8> {
    let mut c = Compress::new(Compression::new(6), false);
    let mut out = Vec::with_capacity(payload.len() + 1024);
    for _ in 0..10_000 {
        let done = c.total_in() as usize;
        out.reserve(64 * 1024);
        c.compress_vec(&payload[done..], &mut out, FlushCompress::Sync)
            .unwrap();
        if c.total_in() as usize == payload.len() && out.len() < out.capacity() {
            break;
        }
    }
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    out
}

/// What a client does with a compressed server message (§7.2.2).
fn inflate(payload: &[u8]) -> Vec<u8> {
    let mut d = Decompress::new(false);
    let mut input = payload.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut out = Vec::with_capacity(64 * 1024);
    d.decompress_vec(&input, &mut out, FlushDecompress::Sync)
        .expect("valid DEFLATE from the server");
    assert_eq!(d.total_in() as usize, input.len(), "output room ran out");
    out
}

fn big_json(tag: &str) -> String {
    let rows: Vec<String> = (0..30)
        .map(|i| {
            format!(
                r#"{{"sym":"S{}","bid":{}.25,"ask":{}.75,"venue":"XETR"}}"#,
                i % 7,
                100 + i,
                101 + i
            )
        })
        .collect();
    format!(r#"{{"tag":"{tag}","rows":[{}]}}"#, rows.join(","))
}

/// A raw client on `/ws?topic=T` with the given extension offer line ("" for none).
fn open(server: &Server, query: &str, offer: &str) -> Raw {
    Raw::open_with(
        server.addr,
        &upgrade_request(&format!("/ws?{query}"), offer),
        b"",
    )
}

/// The next data frame (pings skipped): (first byte, payload as the app sees it).
fn next_message(raw: &mut Raw) -> (u8, Vec<u8>) {
    loop {
        let (first, payload) = raw.frame();
        match first & 0x0F {
            PING => continue,
            0x1 | 0x2 if first & 0x40 != 0 => return (first, inflate(&payload)),
            0x1 | 0x2 => return (first, payload),
            op => panic!("unexpected opcode {op:#x}"),
        }
    }
}

fn publish_line(topic: &str, data: &str) -> String {
    format!(r#"{{"topic":"{topic}","data":{data}}}"#)
}

#[test]
fn deflate_clients_get_large_messages_compressed_once_and_small_ones_plain_while_others_get_plain_frames(
) {
    let server = Server::start(&[]);
    let mut zipped = open(&server, "topic=z", OFFER);
    assert!(
        zipped.head.to_ascii_lowercase().contains(
            "sec-websocket-extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        ),
        "{}",
        zipped.head
    );
    let mut plain = open(&server, "topic=z", "");
    assert!(
        !plain
            .head
            .to_ascii_lowercase()
            .contains("sec-websocket-extensions"),
        "{}",
        plain.head
    );
    // A client that limits our window to 2^9 bytes: messages longer than that go plain.
    let mut small_window = open(
        &server,
        "topic=z",
        "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=9\r\n",
    );
    assert!(
        small_window.head.contains("server_max_window_bits=9"),
        "{}",
        small_window.head
    );

    let big = big_json("big");
    let medium = r#"{"tag":"medium","text":"abcabcabcabcabcabcabcabcabcabcabcabcabcabcabcabcabcabcabcabcabcabcabcabcabcabcabcabcabcabcabcabcabcabcabcabcabc"}"#;
    server.publish_ids(&[
        publish_line("z", &big),
        publish_line("z", "1"),
        publish_line("z", medium),
    ]);

    let (first, env) = next_message(&mut zipped);
    assert_eq!(first, 0xC1, "FIN + RSV1 + text");
    let big_env = String::from_utf8(env).unwrap();
    assert!(big_env.contains(&big), "{big_env}");
    let (first, env) = next_message(&mut zipped);
    assert_eq!(
        first, 0x81,
        "a message under --ws-deflate-min-bytes goes plain"
    );
    assert!(String::from_utf8(env).unwrap().contains(r#""data":1"#));
    let (first, _) = next_message(&mut zipped);
    assert_eq!(first, 0xC1);

    let (first, env) = next_message(&mut plain);
    assert_eq!(first, 0x81);
    assert_eq!(
        String::from_utf8(env).unwrap(),
        big_env,
        "the same envelope, plain"
    );

    let (first, env) = next_message(&mut small_window);
    assert_eq!(
        first,
        0x81,
        "{} bytes do not fit a 512-byte window",
        big_env.len()
    );
    assert_eq!(String::from_utf8(env).unwrap(), big_env);
    next_message(&mut small_window);
    let (first, env) = next_message(&mut small_window);
    assert_eq!(
        first, 0xC1,
        "a message that fits the client's window is compressed"
    );
    assert!(String::from_utf8(env).unwrap().contains("medium"));
    server.assert_no_panic();
}

#[test]
fn a_client_compressed_publish_and_subscribe_are_inflated_and_answered() {
    let server = Server::start(&[]);
    let mut c = open(&server, "", OFFER);
    let sub = br#"{"op":"subscribe","topics":["q"],"ref":1}"#;
    c.send(&client_frame(0xC1, &deflate(sub)));
    let (_, ack) = next_message(&mut c);
    assert_eq!(String::from_utf8(ack).unwrap(), r#"{"op":"ack","ref":1}"#);
    // Fragmented: RSV1 on the first frame only, a ping in between.
    let data = big_json("from-client");
    let op = format!(r#"{{"op":"publish","topic":"q","data":{data},"ref":2}}"#);
    let z = deflate(op.as_bytes());
    let (a, b) = z.split_at(z.len() / 2);
    let mut wire = client_frame(0x41, a);
    wire.extend(client_frame(0x89, b"p"));
    wire.extend(client_frame(0x80, b));
    c.send(&wire);
    let mut got_ack = false;
    let mut got_msg = false;
    for _ in 0..4 {
        let (first, payload) = c.frame();
        match first & 0x0F {
            0xA => assert_eq!(payload, b"p"),
            0x1 => {
                let text = String::from_utf8(if first & 0x40 != 0 {
                    inflate(&payload)
                } else {
                    payload
                })
                .unwrap();
                if text.contains(r#""op":"ack","ref":2"#) {
                    got_ack = true;
                } else {
                    assert!(text.contains(&data), "{text}");
                    assert_eq!(first, 0xC1);
                    got_msg = true;
                }
            }
            op => panic!("opcode {op:#x}"),
        }
        if got_ack && got_msg {
            break;
        }
    }
    assert!(got_ack && got_msg);
}

#[test]
fn rsv1_without_the_extension_or_on_a_control_frame_closes_1002_and_a_bomb_closes_1009() {
    let server = Server::start(&["--max-message-bytes", "64KiB"]);
    let mut c = open(&server, "topic=a", "");
    c.send(&client_frame(0xC1, &deflate(b"{}")));
    assert_eq!(c.expect_close(), 1002);

    let mut c = open(&server, "topic=a", OFFER);
    c.send(&client_frame(0xC9, b""));
    assert_eq!(c.expect_close(), 1002);

    let mut c = open(&server, "topic=a", OFFER);
    let mut wire = client_frame(0x41, &deflate(b"{\"op\":")[..2]);
    wire.extend(client_frame(0xC0, b"x"));
    c.send(&wire);
    assert_eq!(c.expect_close(), 1002, "RSV1 on a continuation");

    // 16 MiB of spaces: about 16 KiB compressed, under the limit as sent.
    let mut c = open(&server, "topic=a", OFFER);
    let bomb = deflate(&vec![b' '; 16 << 20]);
    assert!(bomb.len() < 64 * 1024, "{}", bomb.len());
    c.send(&client_frame(0xC1, &bomb));
    assert_eq!(c.expect_close(), 1009);

    let mut c = open(&server, "topic=a", OFFER);
    c.send(&client_frame(0xC1, b"\xff\xff\xff\xff"));
    assert_eq!(c.expect_close(), 1007, "not DEFLATE");
    server.assert_no_panic();
}

#[test]
fn with_ws_deflate_off_no_offer_is_accepted_and_rsv1_closes_1002() {
    let server = Server::start(&["--ws-deflate", "off"]);
    let mut c = open(&server, "topic=a", OFFER);
    assert!(
        !c.head
            .to_ascii_lowercase()
            .contains("sec-websocket-extensions"),
        "{}",
        c.head
    );
    server.publish_ids(&[publish_line("a", &big_json("off"))]);
    let (first, _) = next_message(&mut c);
    assert_eq!(first, 0x81);
    c.send(&client_frame(0xC1, &deflate(b"{}")));
    assert_eq!(c.expect_close(), 1002);
}

/// Runs a real client library's script against a server; its missing
/// runtime is a failure naming the install step, never a silent pass.
fn run_client(cmd: &mut Command, what: &str, install: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what} could not run ({e}); install: {install}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{what} failed ({}); install: {install}\n{stdout}\n{stderr}",
        out.status
    );
    println!("{what}: {stdout}");
}

#[test]
fn node_ws_with_per_message_deflate_receives_and_publishes_compressed_messages() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    assert!(
        root.join("tests/clients/node_modules/ws").exists(),
        "the Node `ws` package is missing: npm ci --prefix tests/clients"
    );
    let server = Server::start(&[]);
    run_client(
        Command::new("node")
            .arg(root.join("tests/clients/ws_deflate.mjs"))
            .arg(format!("ws://{}", server.addr)),
        "node ws",
        "apt-get install -y nodejs npm && npm ci --prefix tests/clients",
    );
    server.assert_no_panic();
}

#[test]
fn python_websockets_with_compression_receives_and_publishes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let server = Server::start(&[]);
    run_client(
        Command::new("python3")
            .arg(root.join("tests/clients/ws_deflate.py"))
            .arg(format!("ws://{}", server.addr)),
        "python websockets",
        "python3 -m pip install websockets",
    );
    server.assert_no_panic();
}
