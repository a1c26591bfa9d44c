//! Byte-level tests of the decoder and the close handshake: one per rule with its
//! close code, split sweeps, and property tests against a client-side encoder.

use proptest::prelude::*;

use super::close::code;
use super::frame::{apply_mask, FrameHeader, OpCode};
use super::*;

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
const LIMIT: usize = 1 << 16;

/// A client frame (masked), with the opcode given as a raw nibble so that reserved
/// opcodes can be written too.
pub(super) fn client_frame_raw(b0: u8, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
    let mut out = vec![0u8; 14];
    let h = FrameHeader {
        fin: true,
        opcode: OpCode::Binary,
        mask: Some(key),
        payload_len: payload.len() as u64,
    };
    let n = h.encode(&mut out).unwrap();
    out.truncate(n);
    out[0] = b0;
    let mut body = payload.to_vec();
    apply_mask(&mut body, key, 0);
    out.extend_from_slice(&body);
    out
}

fn client_frame(opcode: OpCode, fin: bool, payload: &[u8]) -> Vec<u8> {
    client_frame_raw((u8::from(fin) << 7) | opcode as u8, payload, KEY)
}

/// Feeds `input` in pieces cut at `cuts`, as a server loop would: each piece is fed
/// until consumed. Returns the events and the error that ended decoding, if any.
pub(super) fn feed(
    dec: &mut Decoder,
    input: &[u8],
    cuts: &[usize],
) -> (Vec<Event>, Option<ProtocolError>) {
    let mut events = Vec::new();
    let mut at = 0;
    for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
        let mut piece = &input[at..cut.max(at)];
        at = cut.max(at);
        loop {
            let (n, result) = dec.handle_bytes(piece);
            assert!(n <= piece.len(), "consumed {n} of {}", piece.len());
            piece = &piece[n..];
            match result {
                Ok(Some(event)) => events.push(event),
                Ok(None) => {
                    assert!(piece.is_empty(), "Ok(None) with {} bytes left", piece.len());
                    break;
                }
                Err(e) => return (events, Some(e)),
            }
        }
    }
    (events, None)
}

fn decode(input: &[u8]) -> (Vec<Event>, Option<ProtocolError>) {
    feed(&mut Decoder::new(LIMIT), input, &[])
}

fn fails_with(input: &[u8], err: ProtocolError, close_code: u16) {
    let (_, got) = decode(input);
    assert_eq!(got, Some(err), "input {input:02x?}");
    assert_eq!(err.close_code(), close_code);
}

fn text(s: &str) -> Event {
    Event::Text(s.as_bytes().to_vec())
}

#[test]
fn rfc_examples_decode_to_their_messages() {
    // §5.7: a single-frame masked text message "Hello".
    assert_eq!(
        decode(b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"),
        (vec![text("Hello")], None)
    );
    let mut wire = client_frame(OpCode::Text, false, b"Hel");
    wire.extend(client_frame(OpCode::Continuation, true, b"lo"));
    wire.extend(client_frame(OpCode::Ping, true, b"Hello"));
    wire.extend(client_frame(OpCode::Binary, true, &[7; 256]));
    wire.extend(client_frame(OpCode::Binary, true, &[9; 65536]));
    let (events, err) = decode(&wire);
    assert_eq!(err, None);
    assert_eq!(
        events,
        vec![
            text("Hello"),
            Event::Ping(ControlPayload::new(b"Hello")),
            Event::Binary(vec![7; 256]),
            Event::Binary(vec![9; 65536])
        ]
    );
}

#[test]
fn unmasked_client_frame_is_failed_with_1002() {
    fails_with(
        b"\x81\x05Hello",
        ProtocolError::UnmaskedFrameFromClient,
        1002,
    );
}

#[test]
fn reserved_bits_without_extension_are_failed_with_1002() {
    for rsv in [0x40, 0x20, 0x10] {
        fails_with(
            &client_frame_raw(0x81 | rsv, b"x", KEY),
            ProtocolError::ReservedBitsSet,
            1002,
        );
    }
}

#[test]
fn reserved_opcodes_are_failed_with_1002() {
    for op in (0x3..=0x7).chain(0xB..=0xF) {
        fails_with(
            &client_frame_raw(0x80 | op, b"", KEY),
            ProtocolError::ReservedOpcode,
            1002,
        );
    }
}

#[test]
fn control_frame_over_125_bytes_is_failed_with_1002() {
    fails_with(
        &client_frame(OpCode::Ping, true, &[0; 126]),
        ProtocolError::ControlFrameTooBig,
        1002,
    );
    let (events, err) = decode(&client_frame(OpCode::Ping, true, &[0; 125]));
    assert_eq!((events.len(), err), (1, None));
}

#[test]
fn fragmented_control_frame_is_failed_with_1002() {
    for op in [OpCode::Ping, OpCode::Pong, OpCode::Close] {
        fails_with(
            &client_frame(op, false, b""),
            ProtocolError::FragmentedControlFrame,
            1002,
        );
    }
}

#[test]
fn continuation_without_a_started_message_is_failed_with_1002() {
    fails_with(
        &client_frame(OpCode::Continuation, true, b"x"),
        ProtocolError::ContinuationWithoutMessage,
        1002,
    );
    // Also after a message finished.
    let mut wire = client_frame(OpCode::Text, true, b"a");
    wire.extend(client_frame(OpCode::Continuation, true, b"b"));
    fails_with(&wire, ProtocolError::ContinuationWithoutMessage, 1002);
}

#[test]
fn new_data_frame_while_a_fragmented_message_is_open_is_failed_with_1002() {
    for op in [OpCode::Text, OpCode::Binary] {
        let mut wire = client_frame(OpCode::Binary, false, b"a");
        wire.extend(client_frame(op, true, b"b"));
        fails_with(&wire, ProtocolError::NewMessageWhileFragmented, 1002);
    }
}

#[test]
fn length_with_top_bit_set_is_failed_with_1002() {
    let mut wire = vec![0x82, 0x80 | 127];
    wire.extend_from_slice(&(1u64 << 63).to_be_bytes());
    wire.extend_from_slice(&KEY);
    fails_with(&wire, ProtocolError::LengthTopBitSet, 1002);
}

#[test]
fn message_over_the_limit_is_failed_with_1009_at_the_header_before_any_payload() {
    let mut dec = Decoder::new(100);
    let wire = client_frame(OpCode::Binary, true, &[0; 101]);
    // Header only: the 4 header bytes reveal the size.
    let (n, result) = dec.handle_bytes(&wire[..6]);
    assert_eq!((n, result), (6, Err(ProtocolError::MessageTooBig)));
    assert_eq!(ProtocolError::MessageTooBig.close_code(), 1009);
    // The limit is on the sum of fragments.
    let mut dec = Decoder::new(100);
    let mut wire = client_frame(OpCode::Text, false, &[b'a'; 60]);
    wire.extend(client_frame(OpCode::Continuation, true, &[b'a'; 41]));
    assert_eq!(
        feed(&mut dec, &wire, &[]).1,
        Some(ProtocolError::MessageTooBig)
    );
    let mut dec = Decoder::new(100);
    let mut wire = client_frame(OpCode::Text, false, &[b'a'; 60]);
    wire.extend(client_frame(OpCode::Continuation, true, &[b'a'; 40]));
    assert_eq!(feed(&mut dec, &wire, &[]).1, None);
}

#[test]
fn invalid_utf8_fails_with_1007_as_soon_as_the_byte_arrives_mid_frame() {
    // Autobahn 6.4.3: one frame, sent in chunks; the close must come before the rest.
    let payload =
        b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80\x65\x64\x69\x74\x65\x64";
    let wire = client_frame(OpCode::Text, true, payload);
    let header = 6;
    let mut dec = Decoder::new(LIMIT);
    let (n, r) = dec.handle_bytes(&wire[..header + 11]);
    assert_eq!((n, r), (header + 11, Ok(None)), "valid prefix");
    let (_, r) = dec.handle_bytes(&wire[header + 11..header + 13]);
    assert_eq!(r, Err(ProtocolError::InvalidUtf8InText));
    assert_eq!(ProtocolError::InvalidUtf8InText.close_code(), 1007);
}

#[test]
fn invalid_utf8_fails_with_1007_in_the_fragment_that_carries_it() {
    // Autobahn 6.4.1: the third fragment is never needed to see the failure.
    let mut wire = client_frame(OpCode::Text, false, "κόσμε".as_bytes());
    wire.extend(client_frame(OpCode::Continuation, false, b"\xed\xa0\x80"));
    let (events, err) = decode(&wire);
    assert_eq!(
        (events, err),
        (vec![], Some(ProtocolError::InvalidUtf8InText))
    );
}

#[test]
fn sequence_split_across_fragments_is_valid_and_one_left_open_at_the_end_is_1007() {
    let mut wire = client_frame(OpCode::Text, false, b"\xce");
    wire.extend(client_frame(OpCode::Ping, true, b""));
    wire.extend(client_frame(OpCode::Continuation, true, b"\xba"));
    let (events, err) = decode(&wire);
    assert_eq!(err, None);
    assert_eq!(events, vec![Event::Ping(ControlPayload::EMPTY), text("κ")]);
    fails_with(
        &client_frame(OpCode::Text, true, b"ok\xce"),
        ProtocolError::InvalidUtf8InText,
        1007,
    );
    // Binary messages are not checked.
    assert_eq!(decode(&client_frame(OpCode::Binary, true, b"\xff")).1, None);
}

#[test]
fn control_frames_between_fragments_are_delivered_in_order() {
    let mut wire = client_frame(OpCode::Text, false, b"frag1");
    wire.extend(client_frame(OpCode::Ping, true, b"p"));
    wire.extend(client_frame(OpCode::Continuation, false, b"frag2"));
    wire.extend(client_frame(OpCode::Pong, true, b"q"));
    wire.extend(client_frame(OpCode::Continuation, true, b"frag3"));
    let (events, err) = decode(&wire);
    assert_eq!(err, None);
    assert_eq!(
        events,
        vec![
            Event::Ping(ControlPayload::new(b"p")),
            Event::Pong(ControlPayload::new(b"q")),
            text("frag1frag2frag3")
        ]
    );
}

#[test]
fn close_frame_bodies_follow_their_rules() {
    assert_eq!(
        decode(&client_frame(OpCode::Close, true, b"")).0,
        vec![Event::Close {
            code: None,
            reason: ControlPayload::EMPTY
        }]
    );
    assert_eq!(
        decode(&client_frame(OpCode::Close, true, b"\x03\xe8bye")).0,
        vec![Event::Close {
            code: Some(1000),
            reason: ControlPayload::new(b"bye")
        }]
    );
    fails_with(
        &client_frame(OpCode::Close, true, b"\x03"),
        ProtocolError::CloseFrameOneByte,
        1002,
    );
    for bad in [
        0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000,
    ] {
        let body = bad.to_be_bytes();
        fails_with(
            &client_frame(OpCode::Close, true, &body),
            ProtocolError::InvalidCloseCode,
            1002,
        );
    }
    // Autobahn 7.5.1: invalid UTF-8 in the reason.
    let body =
        b"\x03\xe8\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80\x65\x64\x69\x74\x65\x64";
    fails_with(
        &client_frame(OpCode::Close, true, body),
        ProtocolError::InvalidUtf8InCloseReason,
        1007,
    );
}

#[test]
fn decoder_is_fused_after_an_error() {
    let mut dec = Decoder::new(LIMIT);
    assert_eq!(
        dec.handle_bytes(b"\x81\x05").1,
        Err(ProtocolError::UnmaskedFrameFromClient)
    );
    assert_eq!(
        dec.handle_bytes(b"Hello"),
        (0, Err(ProtocolError::UnmaskedFrameFromClient))
    );
    assert_eq!(dec.failed(), Some(ProtocolError::UnmaskedFrameFromClient));
}

fn sample_stream() -> (Vec<u8>, Vec<Event>) {
    let mut wire = client_frame(OpCode::Text, false, "κό".as_bytes());
    wire.extend(client_frame(OpCode::Ping, true, b"ping"));
    wire.extend(client_frame(OpCode::Continuation, true, "σμε".as_bytes()));
    wire.extend(client_frame(OpCode::Binary, true, &[1; 300]));
    wire.extend(client_frame(OpCode::Text, true, b""));
    wire.extend(client_frame(OpCode::Close, true, b"\x03\xe9away"));
    let events = vec![
        Event::Ping(ControlPayload::new(b"ping")),
        text("κόσμε"),
        Event::Binary(vec![1; 300]),
        text(""),
        Event::Close {
            code: Some(1001),
            reason: ControlPayload::new(b"away"),
        },
    ];
    (wire, events)
}

#[test]
fn split_at_every_byte_gives_the_same_events() {
    let (wire, want) = sample_stream();
    for cut in 0..=wire.len() {
        assert_eq!(
            feed(&mut Decoder::new(LIMIT), &wire, &[cut]),
            (want.clone(), None),
            "cut at {cut}"
        );
    }
    let every: Vec<usize> = (1..wire.len()).collect();
    assert_eq!(
        feed(&mut Decoder::new(LIMIT), &wire, &every),
        (want, None),
        "one byte at a time"
    );
}

#[test]
fn an_error_is_found_at_the_same_byte_whatever_the_split() {
    let mut wire = client_frame(OpCode::Text, false, b"abc");
    wire.extend(client_frame(OpCode::Continuation, true, b"d\xffe"));
    for cut in 0..=wire.len() {
        assert_eq!(
            feed(&mut Decoder::new(LIMIT), &wire, &[cut]),
            (vec![], Some(ProtocolError::InvalidUtf8InText)),
            "cut at {cut}"
        );
    }
}

// ---- close handshake -------------------------------------------------------

fn transmit(conn: &mut Connection) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = conn.poll_transmit(&mut out);
    out
}

fn server_close(code: u16, reason: &str) -> Vec<u8> {
    let mut out = Vec::new();
    encode_close(&mut out, code, reason);
    out
}

#[test]
fn peer_close_is_echoed_with_its_code_then_tcp_closes() {
    let mut conn = Connection::new(LIMIT, Tick::new(10));
    let (_, r) = conn.handle_bytes(
        Tick::new(0),
        &client_frame(OpCode::Close, true, b"\x0f\xa0x"),
    );
    assert!(matches!(
        r,
        Ok(Some(Event::Close {
            code: Some(4000),
            ..
        }))
    ));
    assert!(!conn.can_send_data());
    assert!(!conn.wants_close_tcp(), "echo not written yet");
    assert_eq!(transmit(&mut conn), server_close(4000, ""));
    assert!(conn.wants_close_tcp());
}

#[test]
fn peer_close_without_code_is_answered_with_1000() {
    let mut conn = Connection::new(LIMIT, Tick::new(10));
    let _ = conn.handle_bytes(Tick::new(0), &client_frame(OpCode::Close, true, b""));
    assert_eq!(transmit(&mut conn), server_close(code::NORMAL, ""));
    assert!(conn.wants_close_tcp());
}

#[test]
fn data_after_the_peer_close_is_ignored() {
    let mut conn = Connection::new(LIMIT, Tick::new(10));
    let mut wire = client_frame(OpCode::Close, true, b"");
    let close_len = wire.len();
    wire.extend(client_frame(OpCode::Text, true, b"late"));
    let (n, _) = conn.handle_bytes(Tick::new(0), &wire);
    assert_eq!(n, close_len);
    assert_eq!(
        conn.handle_bytes(Tick::new(0), &wire[n..]),
        (wire.len() - n, Ok(None))
    );
}

#[test]
fn protocol_error_sends_its_close_code_and_discards_until_deadline() {
    let mut conn = Connection::new(LIMIT, Tick::new(10));
    let (_, r) = conn.handle_bytes(Tick::new(5), b"\x81\x05Hello");
    assert_eq!(r, Err(ProtocolError::UnmaskedFrameFromClient));
    assert_eq!(
        transmit(&mut conn),
        server_close(1002, "unmasked frame from client")
    );
    assert_eq!(conn.poll_timeout(), Some(Tick::new(15)));
    assert_eq!(
        conn.handle_bytes(Tick::new(6), b"more garbage"),
        (12, Ok(None))
    );
    conn.handle_timeout(Tick::new(14));
    assert!(!conn.wants_close_tcp());
    conn.handle_timeout(Tick::new(15));
    assert!(conn.wants_close_tcp());
}

#[test]
fn protocol_error_half_closes_tcp_once_the_close_frame_is_out() {
    let mut conn = Connection::new(LIMIT, Tick::new(10));
    assert!(!conn.wants_shutdown_write());
    let _ = conn.handle_bytes(Tick::new(0), &client_frame(OpCode::Text, false, b"ok"));
    assert!(
        !conn.wants_shutdown_write(),
        "an open connection keeps writing"
    );
    let _ = conn.handle_bytes(
        Tick::new(0),
        &client_frame(OpCode::Continuation, false, b"\xf4\x90"),
    );
    assert!(
        !conn.wants_shutdown_write(),
        "our Close must be written before the FIN"
    );
    assert_eq!(
        transmit(&mut conn),
        server_close(1007, "invalid utf-8 in text")
    );
    assert!(conn.wants_shutdown_write());
    assert!(
        !conn.wants_close_tcp(),
        "keep reading so that close does not RST"
    );
}

#[test]
fn a_clean_close_never_asks_for_a_half_close() {
    let mut conn = Connection::new(LIMIT, Tick::new(10));
    let _ = conn.handle_bytes(Tick::new(0), &client_frame(OpCode::Close, true, b""));
    let _ = transmit(&mut conn);
    assert!(!conn.wants_shutdown_write());
    let mut conn = Connection::new(LIMIT, Tick::new(10));
    conn.close(Tick::new(0), code::GOING_AWAY, "bye");
    let _ = transmit(&mut conn);
    assert!(!conn.wants_shutdown_write(), "we wait for the peer's Close");
}

#[test]
fn protocol_error_then_peer_eof_closes_tcp_at_once() {
    let mut conn = Connection::new(LIMIT, Tick::new(10));
    let _ = conn.handle_bytes(Tick::new(0), &client_frame(OpCode::Text, true, b"\xff"));
    assert_eq!(
        transmit(&mut conn),
        server_close(1007, "invalid utf-8 in text")
    );
    conn.handle_eof();
    assert!(conn.wants_close_tcp());
}

#[test]
fn our_close_waits_for_the_peer_close_and_drops_data_meanwhile() {
    let mut conn = Connection::new(LIMIT, Tick::new(10));
    conn.close(Tick::new(0), code::GOING_AWAY, "draining");
    assert!(!conn.can_send_data());
    assert_eq!(transmit(&mut conn), server_close(1001, "draining"));
    let mut wire = client_frame(OpCode::Text, true, b"in flight");
    wire.extend(client_frame(OpCode::Ping, true, b""));
    assert_eq!(
        conn.handle_bytes(Tick::new(1), &wire),
        (wire.len(), Ok(None))
    );
    assert!(!conn.wants_close_tcp());
    assert!(transmit(&mut conn).is_empty(), "no pong after our close");
    let _ = conn.handle_bytes(
        Tick::new(2),
        &client_frame(OpCode::Close, true, b"\x03\xe9"),
    );
    assert!(
        transmit(&mut conn).is_empty(),
        "the peer's answer is not echoed"
    );
    assert!(conn.wants_close_tcp());
}

#[test]
fn our_close_gives_up_on_the_peer_at_the_deadline() {
    let mut conn = Connection::new(LIMIT, Tick::new(10));
    conn.close(Tick::new(100), code::POLICY_VIOLATION, "slow consumer");
    let _ = transmit(&mut conn);
    assert_eq!(conn.poll_timeout(), Some(Tick::new(110)));
    conn.handle_timeout(Tick::new(110));
    assert!(conn.wants_close_tcp());
}

#[test]
fn one_pong_slot_keeps_the_newest_ping_and_never_displaces_the_close() {
    let mut conn = Connection::new(LIMIT, Tick::new(10));
    let mut wire = client_frame(OpCode::Ping, true, b"1");
    wire.extend(client_frame(OpCode::Ping, true, b"2"));
    wire.extend(client_frame(OpCode::Close, true, b"\x03\xe8"));
    let (mut pos, mut events) = (0, 0);
    while pos < wire.len() {
        let (n, r) = conn.handle_bytes(Tick::new(0), &wire[pos..]);
        pos += n;
        events += usize::from(matches!(r, Ok(Some(_))));
    }
    assert_eq!(events, 3);
    let mut want = Vec::new();
    encode_pong(&mut want, b"2");
    want.extend(server_close(1000, ""));
    assert_eq!(transmit(&mut conn), want);
    assert!(conn.wants_close_tcp());
}

// ---- properties ------------------------------------------------------------

#[derive(Debug, Clone)]
enum Msg {
    Text(String, Vec<usize>),
    Binary(Vec<u8>, Vec<usize>),
    Ping(Vec<u8>),
}

fn msg() -> impl Strategy<Value = Msg> {
    prop_oneof![
        (".{0,40}", prop::collection::vec(0usize..200, 0..4)).prop_map(|(s, c)| Msg::Text(s, c)),
        (
            prop::collection::vec(any::<u8>(), 0..300),
            prop::collection::vec(0usize..300, 0..4)
        )
            .prop_map(|(b, c)| Msg::Binary(b, c)),
        prop::collection::vec(any::<u8>(), 0..=125).prop_map(Msg::Ping),
    ]
}

/// Encodes a message as fragments cut at `cuts` (fragments may cut UTF-8 sequences),
/// with a ping between fragments, each frame with its own mask.
fn encode_msg(m: &Msg, keys: &mut impl Iterator<Item = [u8; 4]>, wire: &mut Vec<u8>) -> Vec<Event> {
    let (first, payload, cuts, event) = match m {
        Msg::Ping(p) => {
            wire.extend(client_frame_raw(0x89, p, keys.next().unwrap()));
            return vec![Event::Ping(ControlPayload::new(p))];
        }
        Msg::Text(s, c) => (OpCode::Text, s.as_bytes(), c, text(s)),
        Msg::Binary(b, c) => (OpCode::Binary, &b[..], c, Event::Binary(b.clone())),
    };
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (payload.len() + 1)).collect();
    cuts.sort_unstable();
    let mut bounds = vec![0];
    bounds.extend(cuts);
    bounds.push(payload.len());
    let mut events = Vec::new();
    let frames = bounds.len() - 1;
    for i in 0..frames {
        let op = if i == 0 { first } else { OpCode::Continuation };
        let fin = i + 1 == frames;
        let b0 = (u8::from(fin) << 7) | op as u8;
        wire.extend(client_frame_raw(
            b0,
            &payload[bounds[i]..bounds[i + 1]],
            keys.next().unwrap(),
        ));
        if !fin {
            wire.extend(client_frame_raw(0x8A, b"between", keys.next().unwrap()));
            events.push(Event::Pong(ControlPayload::new(b"between")));
        }
    }
    events.push(event);
    events
}

proptest! {
    #[test]
    fn any_fragmented_stream_in_any_split_decodes_to_the_same_messages(
        msgs in prop::collection::vec(msg(), 0..8),
        keys in prop::collection::vec(any::<[u8; 4]>(), 64),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let mut wire = Vec::new();
        let mut want = Vec::new();
        let mut keys = keys.into_iter().cycle();
        for m in &msgs {
            want.extend(encode_msg(m, &mut keys, &mut wire));
        }
        let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
        cuts.sort_unstable();
        prop_assert_eq!(feed(&mut Decoder::new(LIMIT), &wire, &cuts), (want, None));
    }

    #[test]
    fn garbage_never_panics_and_never_over_reads(
        data in prop::collection::vec(any::<u8>(), 0..512),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(data.len() + 1)).collect();
        cuts.sort_unstable();
        let mut dec = Decoder::new(256);
        let (_, err) = feed(&mut dec, &data, &cuts);
        if let Some(e) = err {
            prop_assert!(matches!(e.close_code(), 1002 | 1007 | 1009));
            prop_assert_eq!(dec.handle_bytes(&data), (0, Err(e)));
        }
        let mut conn = Connection::new(256, Tick::new(10));
        let mut rest = &data[..];
        while !rest.is_empty() {
            let (n, _) = conn.handle_bytes(Tick::new(0), rest);
            prop_assert!(n <= rest.len());
            prop_assert!(n > 0, "no progress on {} bytes", rest.len());
            rest = &rest[n..];
        }
        let _ = conn.poll_transmit(&mut Vec::new());
    }

    #[test]
    fn garbage_with_the_mask_bit_forced_reaches_deep_states(
        data in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        // Random bytes fail at the mask bit half of the time: force it so the
        // payload, UTF-8 and close paths are exercised too.
        let mut data = data;
        if data.len() > 1 {
            data[1] |= 0x80;
            data[0] &= 0x8F;
        }
        let (_, err) = decode(&data);
        if let Some(e) = err {
            prop_assert!(matches!(e.close_code(), 1002 | 1007 | 1009));
        }
    }
}

/// A time of the tests' virtual clock.
fn t(ticks: u64) -> Tick {
    Tick::new(ticks)
}

#[test]
fn a_message_that_trickles_past_its_deadline_fails_with_1008() {
    let mut conn = Connection::new(LIMIT, t(10)).with_message_timeout(t(100));
    assert_eq!(conn.poll_timeout(), None, "nothing started: no deadline");
    let first = client_frame(OpCode::Text, false, b"part one");
    let _ = conn.handle_bytes(t(5), &first);
    assert_eq!(conn.poll_timeout(), Some(t(105)));
    // A byte now and then does not move the deadline.
    let next = client_frame(OpCode::Continuation, false, b"two");
    for (i, b) in next.iter().enumerate() {
        let _ = conn.handle_bytes(t(10 + i as u64), std::slice::from_ref(b));
        assert_eq!(conn.poll_timeout(), Some(t(105)));
    }
    assert!(conn.held_bytes() > 0);
    conn.handle_timeout(t(104));
    assert!(conn.can_send_data(), "not yet");
    conn.handle_timeout(t(105));
    assert!(!conn.can_send_data());
    assert_eq!(conn.held_bytes(), 0, "the partial message is dropped");
    assert_eq!(
        transmit(&mut conn),
        server_close(code::POLICY_VIOLATION, "message not complete in time")
    );
    assert!(conn.wants_shutdown_write());
    // The rest of the stream is not read any more.
    let (n, r) = conn.handle_bytes(t(106), &client_frame(OpCode::Continuation, true, b"end"));
    assert!(n > 0 && matches!(r, Ok(None)));
}

#[test]
fn a_message_completed_in_time_clears_its_deadline() {
    let mut conn = Connection::new(LIMIT, t(10)).with_message_timeout(t(100));
    let _ = conn.handle_bytes(t(0), &client_frame(OpCode::Text, false, b"a"));
    assert_eq!(conn.poll_timeout(), Some(t(100)));
    let (_, r) = conn.handle_bytes(t(50), &client_frame(OpCode::Continuation, true, b"b"));
    assert!(matches!(r, Ok(Some(Event::Text(ref t))) if t == b"ab"));
    assert_eq!(conn.poll_timeout(), None);
    assert_eq!(conn.held_bytes(), 0);
    // The next message gets a deadline of its own.
    let _ = conn.handle_bytes(t(150), &client_frame(OpCode::Text, false, b"c"));
    assert_eq!(conn.poll_timeout(), Some(t(250)));
}

#[test]
fn an_abort_for_a_server_limit_sends_its_code_and_reads_no_more() {
    let mut conn = Connection::new(LIMIT, t(10));
    let _ = conn.handle_bytes(t(0), &client_frame(OpCode::Text, false, &[b'x'; 300]));
    assert!(conn.held_bytes() >= 300);
    conn.abort(t(1), code::TRY_AGAIN_LATER, "inbound memory budget spent");
    assert_eq!(conn.held_bytes(), 0);
    assert_eq!(
        transmit(&mut conn),
        server_close(code::TRY_AGAIN_LATER, "inbound memory budget spent")
    );
    assert_eq!(conn.poll_timeout(), Some(t(11)));
    conn.handle_timeout(t(11));
    assert!(conn.wants_close_tcp());
}

/// Feeds `wire` cut at `cuts`, transmitting after each input; with `renew`, a
/// connection at rest after a read is dropped and made again, as an idle
/// session does. Returns the events, what was transmitted, and whether the
/// connection was at rest after each read.
fn drive_cut(wire: &[u8], cuts: &[usize], renew: bool) -> (Vec<Decoded>, Vec<u8>, Vec<bool>) {
    let fresh = || Connection::new(LIMIT, t(10)).with_message_timeout(t(100));
    let mut conn = fresh();
    let (mut events, mut out, mut rest) = (Vec::new(), Vec::new(), Vec::new());
    let mut start = 0;
    for &end in cuts.iter().chain(std::iter::once(&wire.len())) {
        let mut chunk = &wire[start..end];
        while !chunk.is_empty() {
            let (n, r) = conn.handle_bytes(t(1), chunk);
            chunk = &chunk[n..];
            if r != Ok(None) {
                events.push((n, r));
            }
            let _ = conn.poll_transmit(&mut out);
            if n == 0 {
                break;
            }
        }
        rest.push(conn.at_rest());
        if renew && conn.at_rest() {
            conn = fresh();
        }
        start = end;
    }
    (events, out, rest)
}

#[test]
fn a_connection_at_rest_can_be_dropped_and_made_again_at_any_split() {
    let (wire, _) = sample_stream();
    let every: Vec<usize> = (1..wire.len()).collect();
    let (_, _, rest) = drive_cut(&wire, &every, false);
    assert!(rest.iter().any(|&r| r), "at rest between some frames");
    assert!(rest.iter().any(|&r| !r), "not at rest mid-frame");
    assert_eq!(
        drive_cut(&wire, &every, true),
        drive_cut(&wire, &every, false)
    );
    for cut in 0..=wire.len() {
        assert_eq!(
            drive_cut(&wire, &[cut], true),
            drive_cut(&wire, &[cut], false),
            "cut at {cut}"
        );
    }
}

#[test]
fn a_connection_is_not_at_rest_while_anything_is_under_way() {
    let fresh = || Connection::new(LIMIT, t(10));
    assert!(fresh().at_rest());
    let ping = client_frame(OpCode::Ping, true, b"p");
    let mut conn = fresh();
    let _ = conn.handle_bytes(t(0), &ping[..1]);
    assert!(!conn.at_rest(), "a partial header");
    let mut conn = fresh();
    let _ = conn.handle_bytes(t(0), &ping);
    assert!(!conn.at_rest(), "a pong to send");
    let _ = transmit(&mut conn);
    assert!(conn.at_rest());
    let mut conn = fresh();
    let _ = conn.handle_bytes(t(0), &client_frame(OpCode::Text, false, b"a"));
    assert!(!conn.at_rest(), "a fragmented message");
    let mut conn = fresh();
    let _ = conn.handle_bytes(t(0), &client_frame(OpCode::Text, true, "é".as_bytes())[..7]);
    assert!(!conn.at_rest(), "half a UTF-8 sequence");
    let mut conn = fresh();
    conn.close(t(0), code::GOING_AWAY, "bye");
    let _ = transmit(&mut conn);
    assert!(!conn.at_rest(), "closing");
    let mut conn = fresh();
    let _ = conn.handle_bytes(t(0), b"\x81\x00");
    assert!(!conn.at_rest(), "failed");
}
