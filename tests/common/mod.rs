//! Test harness: the real `ringcast` binary on a free port, and small raw
//! clients (HTTP/1.1, SSE, WebSocket, the NDJSON publish socket, RESP) over
//! real sockets, each concern in a module of its own.
//!
//! Every wait is bounded: conditions are polled until a deadline, reads carry a
//! timeout. Nothing here sleeps for a fixed time to "let things settle".
//!
//! Each test file declares this module `pub mod common;` and takes `use
//! common::*;`. Every integration test is its own crate that compiles the whole
//! harness and calls a part of it, so in a private `mod common` the helpers one
//! file does not call would be dead code there. Declared `pub`, the items
//! re-exported below are that crate's public surface, which the lint leaves
//! alone, while a private helper that nothing calls still warns. This is
//! narrower than an `allow(dead_code)`, and says what is true: these items are
//! the harness's interface, each used by some test file.

mod envelope;
mod http;
mod metrics;
mod proc;
mod publish;
mod redis;
mod server;
mod sse;
mod tls;
mod ws;

pub use envelope::*;
pub use http::*;
pub use metrics::*;
pub use proc::*;
pub use publish::*;
pub use redis::*;
pub use server::*;
pub use sse::*;
pub use tls::*;
pub use ws::*;

use std::time::{Duration, Instant};

/// Default read timeout of the raw clients.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Polls `cond` every 10 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs heavy tests of one test binary one at a time (they measure timings and
/// memory on a shared machine); a test that panicked does not block the others.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}
