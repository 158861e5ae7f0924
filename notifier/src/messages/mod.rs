//! Buyer messages: at most one per milestone per order, written to
//! `buyer.notifications`.
//!
//! Runs in the notifier's shared consumer group, so each update is handled by one
//! instance; the per-order state in Redis ([`crate::outbox`]) makes concurrent
//! instances (parcels of one order arrive on different partitions) agree.
//!
//! A milestone reached by a parcel is **held** before it is sent. *What* a
//! message says (its parcels, whether it is superseded, whose contact and
//! locale) is decided on the events' own times and stable keys (`decide`), so
//! a catch-up after a restart sends what a live run sends; wall-clock time only
//! decides *when* it goes out:
//! - **burst merging** — other parcels of the order reaching the same milestone
//!   within `burst_window` (event time) join the same message (one message
//!   listing every waybill). The message goes out as soon as every parcel known
//!   for the order is in it, so a single-parcel order never waits, or when the
//!   window ends;
//! - **quiet hours** — a non-urgent milestone reached during the buyer's night
//!   (buyer time zone from the shipment) is sent when the night ends. The notifier
//!   holds it rather than emitting it at once with a future `deliver_at`: a gateway
//!   cannot be trusted to honour a future time. The night itself is wall clock
//!   (nobody is woken, even by a catch-up);
//! - **superseding** (event time) — a milestone reached in the buyer's night is
//!   dropped if a later one was reached before the morning (a buyer whose parcel
//!   was shipped at 23:00 and went out for delivery at 07:00 hears "out for
//!   delivery", not both at 08:00), and, with `supersede_window`, one followed
//!   that soon by a later one;
//! - **catch-up settle** — a message whose event-time decision point has
//!   passed when it is held (a backlog) and that could still change waits
//!   `catch_up_settle`, so the rest of the backlog is applied before it is
//!   decided;
//! - **incidents** — a stuck parcel linked to an incident (`tracking.incidents`,
//!   `incident`) reaches the INCIDENT milestone: one message naming the reason,
//!   the place and the expected delay. A DELAYED message is held
//!   `incident_grace` (event time) so that, when every parcel of it is linked
//!   before then, the INCIDENT message takes its place (superseding, `decide`);
//! - **dedup** — a resend, a replay or another parcel of an already-sent
//!   milestone is a no-op (`{o:O}:ms`).
//!
//! Messages are sent by whoever finds them due: the instance that completed them
//! (inline, right after its batch) or any instance's flusher (every
//! `flush_interval`). A lease makes that once per group; a crash between
//! producing and marking sent re-sends with the same `notification_id`, which
//! gateways dedup on. Ids and record keys are merchant-scoped
//! (`<merchant_id>/<order_id>:<milestone>`, key `<merchant_id>/<order_id>`, the
//! `order_log::order_ref`): order ids are unique only within a shop.
//!
//! Due messages are produced and marked **one by one**: a message that can never
//! be produced (over `kafka.max_record_bytes`, refused by the broker) is
//! dead-lettered to `tracking.dlq` (stage `notifier`) and marked `dead`, and the
//! others go out; one that failed for a retriable reason is released and tried
//! again. An input record that cannot be decoded is dead-lettered too.
//!
//! Layout, one concern a file: this file holds the messenger and its
//! settings; `triggers` derives milestones from updates and alerts;
//! `incident` stores incident records and derives INCIDENT milestones; `hold`
//! merges and schedules held messages; `decide` holds the event-time rules;
//! `send` decides due messages (sent or superseded), produces them and
//! produces them (and runs the flusher); `render` builds the message a buyer
//! receives; `batch` is the consumer's batch handler.

use std::sync::Arc;

use chrono_tz::Tz;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use trackstream_proto::topics;
use trackstream_proto::v1::{Milestone, Reason, Shipment};
use trackstream_runtime::Error;
use trackstream_runtime::dlq::DeadLetters;
use trackstream_runtime::kafka::Producer;
use trackstream_runtime::merchants::MerchantDirectory;
use trackstream_runtime::redis::RedisConn;

use crate::clock::Clock;
use crate::config::{MessagesConfig, RetentionConfig};
use crate::incidents::IncidentStore;
use crate::lifecycle::Lifecycle;
use crate::outbox::Outbox;
use crate::quiet::{self, QuietHours};
use crate::templates;

mod batch;
pub mod decide;
mod hold;
mod incident;
mod render;
mod send;
mod triggers;

pub use batch::milestone_state;
pub use decide::Higher;
pub use render::{message_key, notification_id, render_message};

type Labels = Vec<(&'static str, String)>;

/// How many orders of one batch are processed at once. Each order's records stay
/// in offset order; different orders share nothing but the Redis connection,
/// which pipelines their commands, so a batch costs a few round trips instead of
/// several per record.
const ORDERS_IN_FLIGHT: usize = 64;

#[derive(Clone)]
struct Metrics {
    sent: Family<Labels, Counter>,
    suppressed: Family<Labels, Counter>,
    held: Family<Labels, Counter>,
    superseded: Family<Labels, Counter>,
    /// Incident records consumed, by outcome (`stored`, `duplicate`, `stale`,
    /// `expired`, `platform`).
    incident_records: Family<Labels, Counter>,
    /// Held DELAYED messages dropped because an incident took them over.
    delayed_superseded_by_incident: Counter,
}

/// A parcel reaching a milestone.
struct Trigger {
    shipment: Shipment,
    milestone: Milestone,
    /// Whether the parcel's registration had been read (see
    /// [`decide::Pending::registered`]).
    registered: bool,
    location: String,
    reason: Reason,
    at: Option<prost_types::Timestamp>,
    /// The update's delivery prediction (the SHIPPED message's "arriving
    /// around" at high confidence).
    prediction: Option<trackstream_proto::v1::DeliveryPrediction>,
    /// The incident an INCIDENT milestone is for (what its message says).
    incident: Option<crate::outbox::IncidentNote>,
}

/// The buyer-message handler (also maintains the order's parcel and open-alert
/// indexes that `GetOrder` reads).
pub struct Messenger {
    conn: RedisConn,
    producer: Producer,
    config: MessagesConfig,
    merchants: MerchantDirectory,
    outbox: Outbox,
    clock: Arc<dyn Clock>,
    quiet: Option<QuietHours>,
    default_zone: Tz,
    rules: decide::Rules,
    lease_ms: i64,
    instance: String,
    metrics: Metrics,
    index_alert: redis::Script,
    incidents: IncidentStore,
    lifecycle: Lifecycle,
    letters: DeadLetters,
    web: Option<crate::web::MessageLinks>,
}

/// Why the messenger could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Bad quiet hours.
    #[error(transparent)]
    QuietHours(#[from] quiet::QuietHoursError),
    /// `default_time_zone` is not an IANA zone.
    #[error("messages.default_time_zone {0:?} is not an IANA time zone")]
    Zone(String),
    /// `burst_window` is longer than a buyer would wait for a message.
    #[error(
        "messages.burst_window {} is over the maximum of 1d",
        trackstream_runtime::config::duration::format(*.0)
    )]
    BurstWindow(std::time::Duration),
    /// `supersede_window` is longer than a message may be delayed.
    #[error(
        "messages.supersede_window {} is over the maximum of 1d",
        trackstream_runtime::config::duration::format(*.0)
    )]
    SupersedeWindow(std::time::Duration),
    /// `catch_up_settle` is longer than a catch-up message may wait.
    #[error(
        "messages.catch_up_settle {} is over the maximum of 1h",
        trackstream_runtime::config::duration::format(*.0)
    )]
    Settle(std::time::Duration),
    /// `incident_grace` is longer than a DELAYED message may be held.
    #[error(
        "messages.incident_grace {} is over the maximum of 1d",
        trackstream_runtime::config::duration::format(*.0)
    )]
    IncidentGrace(std::time::Duration),
}

/// The longest burst window accepted (one day): beyond it a "burst" is not one.
pub const MAX_BURST_WINDOW: std::time::Duration = std::time::Duration::from_secs(86_400);

/// The longest staleness window accepted (one day): every supersedable message
/// of a live run waits this long.
pub const MAX_SUPERSEDE_WINDOW: std::time::Duration = std::time::Duration::from_secs(86_400);

/// The longest catch-up settle accepted (one hour).
pub const MAX_CATCH_UP_SETTLE: std::time::Duration = std::time::Duration::from_secs(3_600);

/// The longest incident grace accepted (one day): every DELAYED message of a
/// live run waits this long.
pub const MAX_INCIDENT_GRACE: std::time::Duration = std::time::Duration::from_secs(86_400);

impl From<ConfigError> for Error {
    fn from(err: ConfigError) -> Self {
        Error::Config(err.to_string())
    }
}

impl Messenger {
    /// A messenger writing through `producer`. `lease_ms` bounds how long a
    /// crashed sender can delay a message (longer than a produce can take).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        conn: RedisConn,
        producer: Producer,
        config: MessagesConfig,
        retention: &RetentionConfig,
        merchants: MerchantDirectory,
        clock: Arc<dyn Clock>,
        lease_ms: i64,
        registry: &mut Registry,
    ) -> Result<Self, ConfigError> {
        let quiet = config
            .quiet_hours
            .as_ref()
            .map(QuietHours::from_config)
            .transpose()?;
        let default_zone: Tz = config
            .default_time_zone
            .parse()
            .map_err(|_| ConfigError::Zone(config.default_time_zone.clone()))?;
        if config.burst_window > MAX_BURST_WINDOW {
            return Err(ConfigError::BurstWindow(config.burst_window));
        }
        if config.supersede_window > MAX_SUPERSEDE_WINDOW {
            return Err(ConfigError::SupersedeWindow(config.supersede_window));
        }
        if config.catch_up_settle > MAX_CATCH_UP_SETTLE {
            return Err(ConfigError::Settle(config.catch_up_settle));
        }
        if config.incident_grace > MAX_INCIDENT_GRACE {
            return Err(ConfigError::IncidentGrace(config.incident_grace));
        }
        let burst_window = chrono::Duration::from_std(config.burst_window).unwrap_or_default();
        let rules = decide::Rules {
            burst_window_ms: burst_window.num_milliseconds(),
            supersede_window_ms: i64::try_from(config.supersede_window.as_millis())
                .unwrap_or(i64::MAX),
            quiet: quiet.clone(),
            settle_ms: i64::try_from(config.catch_up_settle.as_millis()).unwrap_or(i64::MAX),
            incident_grace_ms: i64::try_from(config.incident_grace.as_millis()).unwrap_or(i64::MAX),
        };
        let metrics = Metrics {
            sent: Family::default(),
            suppressed: Family::default(),
            held: Family::default(),
            superseded: Family::default(),
            incident_records: Family::default(),
            delayed_superseded_by_incident: Counter::default(),
        };
        registry.register(
            "buyer_messages",
            "Buyer messages sent, by milestone",
            metrics.sent.clone(),
        );
        registry.register(
            "buyer_messages_suppressed",
            "Milestones not sent because the order already had one (resend, replay, later parcel)",
            metrics.suppressed.clone(),
        );
        registry.register(
            "buyer_messages_held",
            "Buyer messages held before sending, by why (burst_window, supersede_horizon, catch_up_settle, quiet_hours)",
            metrics.held.clone(),
        );
        registry.register(
            "buyer_messages_superseded",
            "Held buyer messages dropped because every parcel of theirs reached a later milestone before their horizon (event time)",
            metrics.superseded.clone(),
        );
        registry.register(
            "incident_records",
            "Per-merchant incident records consumed from tracking.incidents, by outcome (stored, duplicate, stale, expired; platform: the platform-wide record, ignored)",
            metrics.incident_records.clone(),
        );
        registry.register(
            "delayed_superseded_by_incident",
            "Held DELAYED messages dropped because every parcel of theirs was linked to an incident within messages.incident_grace (the INCIDENT message went instead)",
            metrics.delayed_superseded_by_incident.clone(),
        );
        let lifecycle = Lifecycle::new(conn.clone(), retention, registry);
        let letters = DeadLetters::register(
            registry,
            topics::TRACKING_DLQ,
            "notifier",
            producer.max_record_bytes(),
        );
        Ok(Messenger {
            outbox: Outbox::new(conn.clone()),
            incidents: IncidentStore::new(conn.clone(), retention),
            lifecycle,
            letters,
            conn,
            producer,
            config,
            merchants,
            clock,
            quiet,
            default_zone,
            rules,
            lease_ms: lease_ms.max(1_000),
            instance: format!("{:016x}", rand::random::<u64>()),
            metrics,
            index_alert: redis::Script::new(triggers::INDEX_ALERT_LUA),
            web: None,
        })
    }

    /// With the web face: messages carry the tracking-page link, and
    /// registrations and alerts are indexed for the pages.
    pub fn with_web(mut self, web: Option<crate::web::MessageLinks>) -> Self {
        self.web = web;
        self
    }

    fn label(milestone: Milestone) -> Labels {
        vec![("milestone", templates::milestone_name(milestone))]
    }
}
