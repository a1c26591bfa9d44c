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

use std::io::IoSlice;
use std::sync::Arc;

use ringcast::core::client::Transport;
use ringcast::core::homes::HistoryLimits;
use ringcast::core::msg::Since;
use ringcast::core::state::{CoreState, Limits};
use ringcast::metrics::CoreMetrics;
use ringcast::proto::cursor::{Epoch, IdScheme};

const SUBSCRIBERS: usize = 10_000;

fn sink(_fd: i32, iov: &[IoSlice<'_>]) -> std::io::Result<usize> {
    Ok(iov.iter().map(|s| s.len()).sum())
}

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
    let limits = Limits {
        max_outbox_bytes: 1 << 30,
        max_topics_per_client: 64,
        heartbeat_ticks: 1500,
        idle_ticks: 3500,
    };
    let history = HistoryLimits {
        len: 1000,
        bytes: 8 << 20,
        memory: 256 << 20,
        ttl: 360_000,
    };
    let metrics = Arc::new(CoreMetrics::default());
    let mut core = CoreState::new(
        0,
        1,
        IdScheme::Local(Epoch::new(1)),
        limits,
        history,
        metrics,
    );
    for i in 0..SUBSCRIBERS {
        let id = core.register(transport, 1000 + i as i32);
        if transport == Transport::Sse {
            core.set_stream_cursor(id, 1);
        }
        let _ = core.subscribe(id, "news", Since::Live);
    }
    core.flush_dirty(sink);
    for _ in 0..messages {
        core.publish("news", None, br#"{"headline":"hi"}"#.to_vec());
        core.flush_dirty(sink);
    }
}
