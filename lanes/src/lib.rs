//! Delivery intelligence: how long each stage of a parcel's journey takes on
//! its lane, and when a parcel in flight will most likely arrive.
//!
//! The model, in the order data flows through it:
//! - [`lane`] — where a parcel goes: carrier × service level × origin ×
//!   destination, with coarser fallbacks (carrier × destination province,
//!   carrier, everything) for lanes too thin to trust.
//! - [`stage`] — a delivered parcel's timeline (order, pickup, out for
//!   delivery, delivered) and the stage durations it contributes.
//! - [`sketch`] — one stage's duration distribution: a DDSketch (relative
//!   error 2 %, mergeable, so instances and days combine by merging), plus the
//!   conditional quantile "given it has already taken `e` hours".
//! - [`book`] — the statistics: per lane level and day, one sketch per stage
//!   and the counts (deliveries, on time, exceptions, failed attempts); a
//!   sliding window merges the last days, and a short window beside it
//!   detects a lane that changed.
//! - [`drift`] — a lane that slowed, noticed from its parcels in flight
//!   before the slowed ones are delivered (a censored fit of a stretch factor).
//! - [`predict`] — a prediction from the parcel's current stage and the time
//!   already spent in it: p10 / p50 / p90 arrival, a confidence level and its
//!   basis; and [`predict::Basis::risk_from`], when a promise becomes likely
//!   missed.
//! - [`scorecard`] — a carrier's or lane's transit times, promise kept,
//!   pickup lag, exception and failed-attempt rates and volume over a window.
//! - [`store`] — the day buckets in Redis (`{l:<key>}`, one field per day and
//!   instance, merged on read), the one module with I/O.
//!
//! Time is hours since an epoch the caller chooses (f64), days are integer
//! day numbers: the model does no I/O and knows no clock, so the same inputs
//! always give the same prediction (replays and tests depend on it).
#![forbid(unsafe_code)]

pub mod book;
pub mod drift;
pub mod forecast;
pub mod lane;
pub mod parcel;
pub mod predict;
pub mod scorecard;
pub mod sketch;
pub mod stage;
pub mod store;
pub mod stream;
