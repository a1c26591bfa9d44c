//! Sans-IO protocol code: pure functions and state machines over byte slices.
//! Nothing in here knows about sockets, clocks or monoio.

pub mod access;
pub mod control;
pub mod cursor;
pub mod envelope;
pub mod http;
pub mod json;
pub mod publish;
pub mod sse;
pub mod token;
pub mod topic;
pub mod ws;
pub mod x509;
