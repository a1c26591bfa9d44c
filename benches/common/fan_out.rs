//! The fan-out setup both benches use: one core, 10,000 subscribers of one
//! topic, the serve defaults for history, and sockets that take everything.

use std::io::IoSlice;
use std::sync::Arc;

use ringcast::core::bus_msg::Since;
use ringcast::core::client::Transport;
use ringcast::core::homes::HistoryLimits;
use ringcast::core::state::{CoreState, Limits};
use ringcast::metrics::CoreMetrics;
use ringcast::proto::cursor::{Epoch, IdScheme};
use ringcast::time::Tick;

/// A core with 10,000 subscribers of one topic over `transport`, each
/// WebSocket client with the permessage-deflate agreement byte `ws_deflate`
/// (0: none).
pub fn subscribed_core(transport: Transport, ws_deflate: u8) -> CoreState {
    let limits = Limits {
        max_outbox_bytes: 1 << 30,
        max_topics_per_client: 64,
        heartbeat: Tick::new(1500),
        idle: Tick::new(3500),
        write_delay: std::time::Duration::ZERO,
    };
    let mut core = CoreState::new(
        0,
        1,
        IdScheme::Local(Epoch::new(1)),
        limits,
        // The serve defaults: --history 1000, --history-bytes 8MiB,
        // --history-memory 256MiB, --history-ttl 1h (10 ms ticks).
        HistoryLimits {
            len: 1000,
            bytes: 8 << 20,
            memory: 256 << 20,
            ttl: Tick::new(360_000),
        },
        Arc::new(CoreMetrics::default()),
    );
    for i in 0..FAN_OUT_SUBS {
        let id = core.register(transport, 1000 + i as i32);
        if transport == Transport::Sse {
            core.set_stream_cursor(id, 1);
        }
        core.set_ws_deflate(id, ws_deflate);
        let _ = core.subscribe(id, "news", Since::Live);
    }
    core.flush_dirty(sink);
    core
}

pub const FAN_OUT_SUBS: usize = 10_000;

/// Every socket takes everything: the cost measured is the core's.
pub fn sink(_fd: i32, iov: &[IoSlice<'_>]) -> std::io::Result<usize> {
    Ok(iov.iter().map(|s| s.len()).sum())
}
