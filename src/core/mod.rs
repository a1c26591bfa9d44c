//! Per-core state, owned by one worker thread and never shared.

pub mod wheel;
