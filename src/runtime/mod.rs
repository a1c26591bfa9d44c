//! monoio glue: worker threads, connections, the cross-core bus, publish ingress.
//! This layer only moves bytes and wakes tasks; decisions live in `core` and
//! encodings in `proto`.

pub mod broker;
pub mod bus;
pub mod conn;
pub mod ingress;
pub mod session;
pub mod settings;
pub mod shutdown;
pub mod sse_session;
pub mod timer;
pub mod worker;
pub mod ws_session;
