//! monoio glue: process boot, worker threads, connections, the cross-core bus,
//! publish ingress. This layer only moves bytes and wakes tasks; decisions live
//! in `core` and encodings in `proto`.
//!
//! Where things start: [`server`] boots the process from plain [`settings`]
//! (built by `config`), with the OS chores in [`os`]; each core's [`worker`]
//! runs its accept loop, bus, flush and drain; [`conn`] serves one HTTP
//! connection and hands streams to [`sse_session`] and [`ws_session`];
//! [`ingress`] serves the publish socket.

pub mod broker;
pub mod bus;
pub mod conn;
pub mod ingress;
pub mod os;
pub mod server;
pub mod session;
pub mod settings;
pub mod shutdown;
pub mod sse_session;
pub mod timer;
pub mod worker;
pub mod ws_session;
