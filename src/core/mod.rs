//! Per-core state, owned by one worker thread and never shared.

pub mod bus_msg;
pub mod client;
pub mod effects;
pub mod encodings;
pub mod frame;
pub mod history;
pub mod homes;
pub mod message;
pub mod outbox;
pub mod pacing;
pub mod registry;
pub mod replay;
pub mod state;
pub mod topics;
pub mod wheel;
