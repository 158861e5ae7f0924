//! Attacks on normalize (see `main.rs`).
