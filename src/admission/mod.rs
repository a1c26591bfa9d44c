//! Process-wide admission bounds, shared by the cores through atomics (never
//! a lock), for what a peer may hold before it has finished asking: the bytes
//! of partial request bodies and WebSocket messages ([`inbound`]), and the
//! connections of one address ([`peers`]). Pure: no I/O, no runtime.

pub mod inbound;
pub mod peers;
