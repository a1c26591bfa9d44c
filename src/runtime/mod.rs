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
//! Imports point down only: a module imports modules on rows below its own, never
//! one on its row or above, so no module imports one that imports it.
//!
//! ```text
//! server                               process boot, threads
//! tasks                                a core's accept loop, bus task, drain
//! http_conn          ingress           the HTTP driver; the publish socket
//! routes                               what each HTTP request gets
//! sse_session        ws_session        the two stream transports
//! session                              what both streams share
//! respond   publish_wait   request     answers; waiting for a publish; the borrowed request
//! conn_io                              reads and writes of a client connection, plain or TLS
//! timer                                wheel deadlines, the tick task, wall-clock seconds
//! worker                               the per-core context: state, bus end, clocks, flush, OpenConn
//! broker                               the Redis bridge
//! tls                                  the certificate pair, its reload; each core's TLS connections
//! bus   settings   shutdown   os       rings between cores; plain settings; signals; OS chores
//! ```
//!
//! The sans-IO machines the drivers feed are in `proto` (`proto::http::Connection`,
//! `proto::ws::Connection`), the per-core state they change in `core`.

pub mod broker;
pub mod bus;
pub mod conn_io;
pub mod http_conn;
pub mod ingress;
pub mod os;
pub mod publish_wait;
pub mod request;
pub mod respond;
pub mod routes;
pub mod send_batch;
pub mod server;
pub mod session;
pub mod settings;
pub mod shutdown;
pub mod sse_session;
pub mod tasks;
pub mod timer;
pub mod tls;
pub mod worker;
pub mod ws_session;
