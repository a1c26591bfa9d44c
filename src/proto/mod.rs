//! Sans-IO protocol code: pure functions and state machines over byte slices.
//! Nothing in here knows about sockets, clocks or monoio.

pub mod http;
pub mod ws;
