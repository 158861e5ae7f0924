//! Attacks on detector (see `main.rs`).
