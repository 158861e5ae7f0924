//! The scaling benchmark behind `trackstream-scale` (`benches/scale.sh`):
//! how far each consuming stage scales out in one consumer group.
//!
//! For each Redis setup (one server; a three-master Cluster) and each instance
//! count, a fresh broker, Redis and backlog: one ingest accepts a generated
//! backlog of webhooks and registrations (`trackstream-loadgen`, as the
//! end-to-end benchmark) as fast as it can and stops; then normalize, the
//! detector and the notifier, in pipeline order, each with `k` instances in
//! one consumer group over the same partitions, drain what the stage before
//! produced while nothing else runs. Per stage it reports records/s over the
//! steady part of the drain (10 % → 90 % of the backlog, so start-up and the
//! group's first assignment are left out and reported apart), the scaling
//! factor against one instance, and CPU per record of the stage, Redis and
//! the broker — what carries over to bigger machines, since on these two
//! cores a second instance shares the cores with the first, the broker and
//! Redis. It also reports what a deployment is sized from: Redis commands per
//! record, broker records per webhook and Redis bytes per parcel.
//!
//! Layout: `options` (command line), `stage` (one stage's drain), `memory`
//! (Redis bytes by key class), `run` (the configurations in order), `report`
//! (the markdown tables).

mod memory;
mod options;
mod report;
mod run;
mod stage;

pub use options::{Options, options};
pub use run::run_until_stopped;
