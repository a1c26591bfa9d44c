//! The decoder with permessage-deflate: compressed messages whole, fragmented,
//! split at every byte and at random, interleaved with control frames; the
//! RSV1 rules with their close codes; the inflated size limit (bombs).

use flate2::{Compress, Compression, FlushCompress};
use proptest::prelude::*;

use super::deflate::Agreed;
use super::frame::OpCode;
use super::tests::feed;
use super::*;

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
const LIMIT: usize = 1 << 16;

/// What a client sends: raw DEFLATE of `payload` with its own compressor.
/// `finish`: a final block (BFINAL=1, §7.2.3.4) instead of a sync flush with
/// its trailer removed (§7.2.1).
fn client_deflate(payload: &[u8], bits: u8, finish: bool) -> Vec<u8> {
    let mut c = Compress::new_with_window_bits(Compression::new(9), false, bits.max(9));
    let mut out = Vec::with_capacity(payload.len() + 64);
    let flush = if finish {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    for _ in 0..1000 {
        let done = c.total_in() as usize;
        out.reserve(1024);
        c.compress_vec(&payload[done..], &mut out, flush).unwrap();
        if c.total_in() as usize == payload.len() && out.len() < out.capacity() {
            break;
        }
    }
    if !finish {
        assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
        out.truncate(out.len() - 4);
    }
    out
}

/// A masked client frame with the raw first byte `b0` (FIN, RSV1, opcode).
fn frame(b0: u8, payload: &[u8]) -> Vec<u8> {
    super::tests::client_frame_raw(b0, payload, KEY)
}

fn deflating(limit: usize) -> Decoder {
    let mut d = Decoder::new(limit);
    d.set_deflate(Agreed::new(15, 15));
    d
}

const JSON: &[u8] = br#"{"op":"publish","topic":"prices","data":{"rows":[{"s":"A","p":1.5},{"s":"B","p":2.5},{"s":"A","p":1.5},{"s":"B","p":2.5}]},"ref":7}"#;

#[test]
fn a_compressed_text_message_inflates_split_at_every_byte_and_leaves_no_inflate_state() {
    for finish in [false, true] {
        let wire = frame(0xC1, &client_deflate(JSON, 15, finish));
        for cut in 0..=wire.len() {
            let mut dec = deflating(LIMIT);
            let (events, err) = feed(&mut dec, &wire, &[cut]);
            assert_eq!(err, None, "cut {cut} finish {finish}");
            assert_eq!(events, vec![Event::Text(JSON.to_vec())], "cut {cut}");
            assert_eq!(
                dec.held_bytes(),
                0,
                "inflate state dropped with the message"
            );
        }
    }
}

#[test]
fn a_fragmented_compressed_message_with_a_ping_between_fragments_inflates() {
    let z = client_deflate(&JSON.repeat(30), 15, false);
    let (a, rest) = z.split_at(z.len() / 3);
    let (b, c) = rest.split_at(rest.len() / 2);
    let mut wire = frame(0x41, a); // RSV1 on the first fragment only
    wire.extend(frame(0x89, b"hi"));
    wire.extend(frame(0x00, b));
    let mid = wire.len();
    wire.extend(frame(0x80, c));
    let mut dec = deflating(LIMIT);
    let (events, err) = feed(&mut dec, &wire[..mid], &[]);
    assert_eq!((events.len(), err), (1, None));
    assert!(
        dec.held_bytes() > 0,
        "the inflate state lives while the message is read"
    );
    let (events, err) = feed(&mut dec, &wire[mid..], &[]);
    assert_eq!(err, None);
    assert_eq!(events, vec![Event::Text(JSON.repeat(30))]);
    assert_eq!(dec.held_bytes(), 0);
}

#[test]
fn plain_and_compressed_messages_mix_on_one_connection_with_a_small_client_window() {
    let mut wire = frame(0x81, b"plain");
    wire.extend(frame(0xC2, &client_deflate(&[7u8; 3000], 9, false)));
    wire.extend(frame(0x81, b"again"));
    let mut dec = Decoder::new(LIMIT);
    dec.set_deflate(Agreed::new(15, 9));
    let (events, err) = feed(&mut dec, &wire, &[]);
    assert_eq!(err, None);
    assert_eq!(
        events,
        vec![
            Event::Text(b"plain".to_vec()),
            Event::Binary(vec![7u8; 3000]),
            Event::Text(b"again".to_vec())
        ]
    );
}

#[test]
fn rsv1_rules_close_with_1002() {
    let z = client_deflate(b"hello hello hello", 15, false);
    let cases: Vec<(&str, Decoder, Vec<u8>, ProtocolError)> = vec![
        (
            "RSV1 without the extension",
            Decoder::new(LIMIT),
            frame(0xC1, &z),
            ProtocolError::ReservedBitsSet,
        ),
        (
            "RSV1 on a ping",
            deflating(LIMIT),
            frame(0xC9, b""),
            ProtocolError::CompressedBitMisplaced,
        ),
        (
            "RSV1 on a close",
            deflating(LIMIT),
            frame(0xC8, b"\x03\xe8"),
            ProtocolError::CompressedBitMisplaced,
        ),
        (
            "RSV1 on a continuation",
            deflating(LIMIT),
            {
                let mut w = frame(0x41, &z[..4]);
                w.extend(frame(0xC0, &z[4..]));
                w
            },
            ProtocolError::CompressedBitMisplaced,
        ),
        (
            "RSV2 with the extension",
            deflating(LIMIT),
            frame(0xA1, b"x"),
            ProtocolError::ReservedBitsSet,
        ),
    ];
    for (what, mut dec, wire, want) in cases {
        let (_, err) = feed(&mut dec, &wire, &[]);
        assert_eq!(err, Some(want), "{what}");
        assert_eq!(want.close_code(), 1002, "{what}");
    }
}

#[test]
fn corrupt_data_and_invalid_utf8_inside_a_compressed_text_close_with_1007() {
    let mut dec = deflating(LIMIT);
    let (_, err) = feed(&mut dec, &frame(0xC1, b"\xff\xff\xff\xff\xff"), &[]);
    assert_eq!(err, Some(ProtocolError::InvalidCompressedData));
    assert_eq!(err.unwrap().close_code(), 1007);
    let mut dec = deflating(LIMIT);
    let bad = client_deflate(b"ok so far \xc3\x28 then bad", 15, false);
    let (_, err) = feed(&mut dec, &frame(0xC1, &bad), &[]);
    assert_eq!(err, Some(ProtocolError::InvalidUtf8InText));
    assert_eq!(dec.held_bytes(), 0);
}

#[test]
fn a_deflate_bomb_stops_at_the_message_limit_with_1009() {
    // 64 MiB of zeros is about 64 KiB compressed: a 1,000 × bomb.
    let bomb = client_deflate(&vec![0u8; 64 << 20], 15, false);
    assert!(bomb.len() < 100_000, "{}", bomb.len());
    let wire = frame(0xC2, &bomb);
    let mut dec = deflating(256 * 1024);
    let (events, err) = feed(&mut dec, &wire, &[wire.len() / 2]);
    assert_eq!((events, err), (vec![], Some(ProtocolError::MessageTooBig)));
    assert_eq!(err.unwrap().close_code(), 1009);
    assert_eq!(
        dec.held_bytes(),
        0,
        "the partial message and the inflate state are dropped"
    );
    // Exactly at the limit is fine.
    let at = client_deflate(&vec![1u8; 4096], 15, false);
    let (events, err) = feed(&mut deflating(4096), &frame(0xC2, &at), &[]);
    assert_eq!((events, err), (vec![Event::Binary(vec![1u8; 4096])], None));
    let (_, err) = feed(&mut deflating(4095), &frame(0xC2, &at), &[]);
    assert_eq!(err, Some(ProtocolError::MessageTooBig));
}

/// Text or binary, its payload, how many fragments.
fn msg() -> impl Strategy<Value = (bool, Vec<u8>, usize, bool)> {
    (
        any::<bool>(),
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..600),
            prop::collection::vec(prop::sample::select(b"{}\"abc:,0123".to_vec()), 0..4000),
        ],
        1usize..4,
        any::<bool>(),
    )
}

proptest! {
    #[test]
    fn compressed_and_plain_messages_round_trip_through_any_split(
        msgs in prop::collection::vec(msg(), 1..6),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
        bits in 9u8..=15,
    ) {
        let mut wire = Vec::new();
        let mut want = Vec::new();
        for (text, payload, parts, compress) in &msgs {
            // Text payloads must be UTF-8: keep the ASCII ones, hex the others.
            let payload: Vec<u8> = if *text && std::str::from_utf8(payload).is_err() {
                payload.iter().flat_map(|b| format!("{b:02x}").into_bytes()).collect()
            } else {
                payload.clone()
            };
            let body = if *compress { client_deflate(&payload, bits, false) } else { payload.clone() };
            let op = if *text { 0x1 } else { 0x2 };
            let step = body.len().div_ceil(*parts).max(1);
            let chunks: Vec<&[u8]> = if body.is_empty() { vec![&[][..]] } else { body.chunks(step).collect() };
            for (i, chunk) in chunks.iter().enumerate() {
                let fin = if i + 1 == chunks.len() { 0x80 } else { 0 };
                let first = if i == 0 { op | if *compress { 0x40 } else { 0 } } else { 0 };
                wire.extend(frame(fin | first, chunk));
            }
            want.push(if *text { Event::Text(payload) } else { Event::Binary(payload) });
        }
        let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
        cuts.sort_unstable();
        let mut dec = Decoder::new(LIMIT);
        dec.set_deflate(Agreed::new(15, bits));
        prop_assert_eq!(feed(&mut dec, &wire, &cuts), (want, None));
        prop_assert_eq!(dec.held_bytes(), 0);
    }

    #[test]
    fn what_the_server_compresses_a_client_inflates(
        payload in prop::collection::vec(prop::sample::select(b"{}\"abc:,0123 ".to_vec()), 0..5000),
    ) {
        if let Some(server_frame) = deflate::compressed_frame(OpCode::Text, &payload) {
            prop_assert_eq!(server_frame[0], 0xC1);
            let at = match server_frame[1] { 126 => 4, 127 => 10, _ => 2 };
            let mut inf = deflate::Inflater::new(15);
            let mut out = Vec::new();
            inf.inflate(&server_frame[at..], &mut out, 1 << 20).unwrap();
            inf.finish(&mut out, 1 << 20).unwrap();
            prop_assert_eq!(out, payload);
        } else {
            prop_assert!(payload.len() < 64, "{} bytes not compressed", payload.len());
        }
    }
}
