//! ringcast: a thread-per-core io_uring push server.
//!
//! Layers, with dependencies pointing downward only:
//! - [`runtime`]: monoio glue (workers, connections, the cross-core bus, publish ingress).
//! - [`core`]: per-core, single-threaded state (client registry, topics, history, outboxes).
//! - [`admission`]: the process-wide bounds the cores share through atomics (the inbound
//!   memory budget, the per-address connection cap).
//! - [`proto`]: sans-IO protocol code over byte slices (HTTP/1.1, SSE, WebSocket, publish).
//!
//! Beside them, [`bench`] is the load generator (`ringcast bench`), a client of the server
//! built on the same `proto` codecs and monoio, and [`netio`] the non-blocking socket
//! calls that both `runtime` and `bench` use, and [`time`] the one time base (10 ms
//! ticks) of every deadline.
#![deny(clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc)]

pub mod admission;
pub mod bench;
pub mod config;
pub mod core;
pub mod log;
pub mod metrics;
pub mod netio;
pub mod proto;
pub mod runtime;
pub mod time;
