//! `trackstream-loadgen`: synthetic parcel lifecycles, pushed as signed
//! provider webhooks the way the providers push them.
//!
//! Each parcel gets a lifecycle (delivered, moving, stalled, at a locker, failed
//! delivery, never picked up, or a stall whose deadline falls seconds from now) and a
//! provider format. Event times are spread over the last three days relative to
//! `now`, which compresses days of parcel life into the seconds it takes to push
//! them: deadlines already past fire at once, so the detector's verdicts can be
//! scored immediately against [`Parcel::expected_alerts`].
//!
//! Push `n` of a parcel carries its state after `n` scans, in the provider's style:
//! Kdniao, Kuaidi100 (newest first), AfterShip, 17TRACK and EasyPost resend the whole
//! history every time; the generic format carries only the new scan. Every scan's
//! text ends with `#<tag>`, a number unique in the run, so a benchmark can match the
//! update on `tracking.updates` to the webhook that carried it.
//!
//! Layout: `format` (the provider push formats and the secrets they are
//! signed with), `lifecycle` (parcels, their scans and the ground truth of
//! which alerts they must raise), `schedule` (the order pushes go out in, with
//! duplicates and late deliveries), `push` (one webhook per provider format),
//! `canonical` (registrations and scans as the pipeline makes them, for
//! benchmarks that feed the detector directly).
//! It depends on proto and carriers only, so the benchmark, the demo and tools
//! can share it without building a service.
#![forbid(unsafe_code)]

pub mod canonical;
mod format;
mod lifecycle;
mod push;
mod schedule;

pub use format::{Format, Secrets};
pub use lifecycle::{Kind, Mix, Parcel, Scan, Stage, generate, generate_in};
pub use push::Push;
pub use schedule::schedule;
