//! Attacks on edge (see `main.rs`).
