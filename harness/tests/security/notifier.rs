//! Attacks on notifier (see `main.rs`).
