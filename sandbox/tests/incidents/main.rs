//! Incidents on the whole stack (ingest, the broker, normalize, the detector
//! with its incident detector, the notifier, Redis), with generated traffic
//! pushed as provider webhooks ([`world`]):
//!
//! - [`closure`] — a hub closure stranding 200 of 2 000 active parcels is one
//!   incident, opened within a bounded time of the stall threshold, linking
//!   exactly those parcels (each merchant sees only its own), resolved when
//!   they move; two closures in two cities are two incidents;
//! - [`normal`] — a week of ordinary traffic with random stalls opens none;
//! - [`declared`] — an operator's declared closure links the parcels in its
//!   area and is lifted.
//!
//! Run: `cargo test -p trackstream-sandbox --test incidents`.

mod closure;
mod declared;
mod normal;
mod world;
