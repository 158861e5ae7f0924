//! Incidents: many parcels of one carrier stuck at one place at one time
//! become one object — opened, escalated and resolved like an alert — so a
//! merchant hears once about a hub closure and its buyers get one specific
//! message instead of one generic delay notice per parcel.
//!
//! Layout:
//! - [`config`] — `[incidents]` settings and their defaults;
//! - [`place`] — the grouping key (carrier × province/city) and which alerts
//!   hold a parcel up;
//! - [`detect`] — the pure decision (open, grow, escalate, resolve, declare);
//! - [`store`] — the Redis layout (one hash tag per carrier × place);
//! - [`record`] — the `Incident` records, per merchant and platform-wide;
//! - [`stream`] — the consumer (`tracking.alerts`, `tracking.updates`,
//!   `incidents.declared` → `tracking.incidents`), run in the detector's
//!   process in its own group.
#![forbid(unsafe_code)]

pub mod config;
pub mod detect;
pub mod place;
pub mod record;
pub mod store;
pub mod stream;

pub use config::IncidentsConfig;
