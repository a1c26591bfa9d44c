//! Micro-benchmarks of the hot paths (criterion): `cargo bench`.
//!
//! HTTP head parse, WebSocket frame encode/decode (small and 64 KiB), SSE
//! encoding, envelope building from a publish command (simd-json), timer-wheel
//! insert/cancel/advance, the fan-out of one message to 10,000 outboxes on
//! one core (queue and flush, with a socket that takes everything), and the
//! permessage-deflate compression of one 1 KiB JSON envelope (paid once per
//! message and core, whatever the number of subscribers).

use std::sync::Arc;

#[path = "common/fan_out.rs"]
mod fan_out_core;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use fan_out_core::{sink, subscribed_core, FAN_OUT_SUBS};
use ringcast::bench::payload::encode_with;
use ringcast::core::client::Transport;
use ringcast::core::message::Message;
use ringcast::core::wheel::TimerWheel;
use ringcast::proto::cursor::{Epoch, IdScheme};
use ringcast::proto::envelope::write_envelope;
use ringcast::proto::http::{parse_request, HeadLimits};
use ringcast::proto::json::JsonScratch;
use ringcast::proto::publish::parse_command;
use ringcast::proto::ws::deflate::compressed_frame;
use ringcast::proto::ws::{encode_frame, text_frame, Decoder, OpCode};

const HEAD: &[u8] = b"GET /sse?topic=news&topic=chat.room-1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\nAccept: text/event-stream\r\n\
Cache-Control: no-cache\r\nLast-Event-ID: 0abcdef01234-42\r\nConnection: keep-alive\r\n\r\n";

fn http(c: &mut Criterion) {
    let limits = HeadLimits {
        max_header_bytes: 8192,
    };
    c.bench_function("http/parse_request", |b| {
        b.iter(|| parse_request(std::hint::black_box(HEAD), &limits).map(|h| h.map(|h| h.head_len)))
    });
}

/// A masked client frame carrying `payload`.
fn client_frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(0x81);
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= 0xffff {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    let key = [1u8, 2, 3, 4];
    out.extend_from_slice(&key);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    out
}

fn ws(c: &mut Criterion) {
    for (name, size) in [("small", 64usize), ("64KiB", 64 * 1024)] {
        let payload = vec![b'x'; size];
        let mut g = c.benchmark_group(format!("ws/{name}"));
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function("encode", |b| {
            let mut out = Vec::with_capacity(size + 14);
            b.iter(|| {
                out.clear();
                encode_frame(&mut out, OpCode::Text, true, std::hint::black_box(&payload));
            })
        });
        g.bench_function("shared_text_frame", |b| {
            b.iter(|| text_frame(std::hint::black_box(&payload)))
        });
        let frame = client_frame(&payload);
        g.bench_function("decode", |b| {
            b.iter_batched(
                || Decoder::new(1 << 20),
                |mut d| d.handle_bytes(std::hint::black_box(&frame)).0,
                BatchSize::SmallInput,
            )
        });
        g.finish();
    }
}

fn sse_and_envelope(c: &mut Criterion) {
    let ids = IdScheme::Local(Epoch::new(0xabc));
    let topic: Arc<str> = Arc::from("news");
    c.bench_function("sse/encode_message", |b| {
        b.iter(|| {
            Message::encode(
                ids,
                topic.clone(),
                42,
                Some("update"),
                std::hint::black_box(br#"{"headline":"hi","n":1}"#),
            )
        })
    });
    let line =
        br#"{"topic":"news","data":{"headline":"hi","n":1,"tags":["a","b"]},"event":"update"}"#;
    let mut scratch = JsonScratch::new();
    c.bench_function("publish/parse_command", |b| {
        b.iter(|| {
            parse_command(&mut scratch, std::hint::black_box(line), 1 << 20).map(|c| c.data.len())
        })
    });
}

fn wheel(c: &mut Criterion) {
    c.bench_function("wheel/insert_cancel", |b| {
        let mut w: TimerWheel<u32> = TimerWheel::new();
        let mut t = 0u64;
        b.iter(|| {
            t += 1;
            let h = w.insert(t + 1500, 7);
            w.cancel(h)
        })
    });
    c.bench_function("wheel/advance_10k_due", |b| {
        b.iter_batched(
            || {
                let mut w: TimerWheel<u32> = TimerWheel::with_capacity(10_000);
                for i in 0..10_000u64 {
                    w.insert(1 + i % 100, 0);
                }
                w
            },
            |mut w| {
                let mut n = 0;
                w.advance(100, |_, _| n += 1);
                n
            },
            BatchSize::LargeInput,
        )
    });
}

fn fan_out(c: &mut Criterion) {
    let mut g = c.benchmark_group("fan_out");
    g.throughput(Throughput::Elements(FAN_OUT_SUBS as u64));
    for (name, transport) in [("sse", Transport::Sse), ("ws", Transport::Ws)] {
        let mut core = subscribed_core(transport, 0);
        g.bench_function(format!("one_message_to_10k_{name}_outboxes"), |b| {
            b.iter(|| {
                core.publish("news", None, br#"{"headline":"hi"}"#.to_vec());
                core.flush_dirty(sink);
            })
        });
    }
    // At full speed a write carries many messages.
    let mut core = subscribed_core(Transport::Ws, 0);
    g.throughput(Throughput::Elements(10 * FAN_OUT_SUBS as u64));
    g.bench_function("ten_messages_to_10k_ws_outboxes_one_write_each", |b| {
        b.iter(|| {
            for _ in 0..10 {
                core.publish("news", None, br#"{"headline":"hi"}"#.to_vec());
            }
            core.flush_dirty(sink);
        })
    });
    g.finish();
}

/// Compressing one envelope of `ringcast bench --payload-size 1KiB --payload-json`
/// (about 1.1 KB of quotes), cycling over 64 of them: the work a core does once
/// per message for all of its subscribers with permessage-deflate.
fn deflate(c: &mut Criterion) {
    let envelopes: Vec<Vec<u8>> = (0..64u64)
        .map(|seq| {
            let mut data = Vec::new();
            encode_with(
                &mut data,
                seq,
                1_700_000_000_000 + seq * 100_000_000,
                1024,
                true,
            );
            let mut e = Vec::new();
            let id = format!("0000019a2b3c-{}", seq + 1);
            write_envelope(&mut e, "topic-0", id.as_bytes(), None, &data);
            e
        })
        .collect();
    let mut g = c.benchmark_group("deflate");
    g.throughput(Throughput::Elements(1));
    let mut i = 0;
    g.bench_function("one_1KiB_json_envelope", |b| {
        b.iter(|| {
            i = (i + 1) % envelopes.len();
            compressed_frame(OpCode::Text, std::hint::black_box(&envelopes[i])).map(|f| f.len())
        })
    });
    g.finish();
}

criterion_group!(benches, http, ws, sse_and_envelope, wheel, fan_out, deflate);
criterion_main!(benches);
