//! Attacks on ingest (see `main.rs`).
