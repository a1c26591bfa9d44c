//! Hierarchical timer wheel (one per core).
