//! Instructions per delivered message on the fan-out path, for cachegrind:
//! a figure that, unlike wall time, does not move with the load on a shared
//! 2-core machine. `scripts/fan-out-instructions.sh` runs this under
//! `valgrind --tool=cachegrind` with 0 and N messages and prints the
//! difference per subscriber.
//!
//!     fan_out_instructions ws|sse MESSAGES
//!
//! One core, 10,000 subscribers of `news`, the serve defaults for history;
//! each message is published, queued to every outbox and flushed to a socket
//! that takes everything (as `benches/hot_paths.rs`'s `fan_out`).

#[path = "common/fan_out.rs"]
mod fan_out_core;

use fan_out_core::{sink, subscribed_core};
use ringcast::core::client::Transport;

fn main() {
    let mut args = std::env::args().skip(1);
    let transport = match args.next().as_deref() {
        Some("ws") => Transport::Ws,
        Some("sse") => Transport::Sse,
        _ => {
            eprintln!("usage: fan_out_instructions ws|sse MESSAGES");
            std::process::exit(2);
        }
    };
    let messages: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(200);
    let mut core = subscribed_core(transport);
    for _ in 0..messages {
        core.publish("news", None, br#"{"headline":"hi"}"#.to_vec());
        core.flush_dirty(sink);
    }
}
