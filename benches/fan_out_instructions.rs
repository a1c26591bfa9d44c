//! Instructions per delivered message on the fan-out path, for cachegrind:
//! a figure that, unlike wall time, does not move with the load on a shared
//! 2-core machine. `scripts/fan-out-instructions.sh` runs this under
//! `valgrind --tool=cachegrind` with 0 and N messages and prints the
//! difference per subscriber.
//!
//!     fan_out_instructions ws|sse|ws-deflate MESSAGES [json1k]
//!
//! `ws-deflate`: every subscriber agreed to permessage-deflate. `json1k`: each
//! message is 1 KiB of typical JSON (the bench's `--payload-json`) instead of
//! `{"headline":"hi"}` (which is under the compression threshold).
//!
//! One core, 10,000 subscribers of `news`, the serve defaults for history;
//! each message is published, queued to every outbox and flushed to a socket
//! that takes everything (as `benches/hot_paths.rs`'s `fan_out`).

#[path = "common/fan_out.rs"]
mod fan_out_core;

use fan_out_core::{sink, subscribed_core};
use ringcast::core::client::Transport;
use ringcast::proto::ws::deflate::Agreed;

fn main() {
    let mut args = std::env::args().skip(1);
    let (transport, deflate) = match args.next().as_deref() {
        Some("ws") => (Transport::Ws, Agreed::NONE),
        Some("ws-deflate") => (Transport::Ws, Agreed::new(15, 15)),
        Some("sse") => (Transport::Sse, Agreed::NONE),
        _ => {
            eprintln!("usage: fan_out_instructions ws|sse|ws-deflate MESSAGES [json1k]");
            std::process::exit(2);
        }
    };
    let messages: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(200);
    let json1k = args.next().as_deref() == Some("json1k");
    let mut core = subscribed_core(transport, deflate.to_byte());
    for seq in 0..messages {
        let payload = if json1k {
            let mut p = Vec::with_capacity(1200);
            ringcast::bench::payload::encode_with(&mut p, seq as u64, 1_700_000_000, 1024, true);
            p
        } else {
            br#"{"headline":"hi"}"#.to_vec()
        };
        core.publish("news", None, payload);
        core.flush_dirty(sink);
    }
}
