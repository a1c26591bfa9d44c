//! monoio glue: process boot, worker threads, connections, the cross-core bus,
//! publish ingress. This layer only moves bytes and wakes tasks; decisions live
//! in `core`, encodings and protocol state machines in `proto`.
//!
//! Where things start: [`server`] boots the process from plain [`settings`]
//! (built by `config`), with the OS chores in [`os`]; each core runs its
//! [`tasks`] (accept loop, bus, drain) around its [`worker`] context;
//! [`http_conn`] drives one HTTP connection's sans-IO machine and hands streams
//! to [`sse_session`] and [`ws_session`]; [`ingress`] serves the publish socket.
//!
//! Imports point down only; no module imports one that imports it:
//!
//! ```text
//! server ─────────────┬──────────────────────────────────────────────┐
//!   │                 │                                              │
//! tasks (accept loop, bus, drain)                                    os
//!   ├──► http_conn (the HTTP driver) ──► routes                      │
//!   │        │                             │                         │
//!   │        ├─────────────────────────────┼──► sse_session ─┐       │
//!   │        │                             └──► ws_session ──┤       │
//!   ├──► ingress (publish socket)                            │       │
//!   │        │                                   session ◄───┘       │
//!   │        ▼                                      │                │
//!   │   publish_wait   request   respond ◄──────────┘                │
//!   │        │            │         │                                │
//!   └──► timer ◄──────────┼─────────┘                                │
//!          │              │                                          │
//!          ▼              ▼                                          ▼
//!        worker (per-core context: state, bus, clocks, flush, OpenConn)
//!          │
//!          ▼
//!        bus, broker, settings, shutdown
//! ```
//!
//! Each arrow is "imports"; a module may also import any module below it (the
//! sessions, routes and the driver all read `request`, `respond`, `timer` and
//! `worker`). `worker` is the leaf that everything reads the core through.

pub mod broker;
pub mod bus;
pub mod http_conn;
pub mod ingress;
pub mod os;
pub mod publish_wait;
pub mod request;
pub mod respond;
pub mod routes;
pub mod server;
pub mod session;
pub mod settings;
pub mod shutdown;
pub mod sse_session;
pub mod tasks;
pub mod timer;
pub mod worker;
pub mod ws_session;
