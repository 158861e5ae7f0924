//! Buyer messages: at most one per milestone per order, written to
//! `buyer.notifications`.
//!
//! Runs in the notifier's shared consumer group, so each update is handled by one
//! instance; the per-order state in Redis ([`crate::outbox`]) makes concurrent
//! instances (parcels of one order arrive on different partitions) agree.
//!
//! A milestone reached by a parcel is **held** before it is sent:
//! - **burst merging** — other parcels of the order reaching the same milestone
//!   within `burst_window` join the same message (one message listing every
//!   waybill). The message goes out as soon as every parcel known for the order is
//!   in it, so a single-parcel order never waits, or when the window ends;
//! - **quiet hours** — a non-urgent milestone reached during the buyer's night
//!   (buyer time zone from the shipment) is sent when the night ends. The notifier
//!   holds it rather than emitting it at once with a future `deliver_at`: a gateway
//!   cannot be trusted to honour a future time, and holding lets a later milestone
//!   **supersede** an earlier one (a buyer whose parcel was shipped at 23:00 and went
//!   out for delivery at 07:00 hears "out for delivery", not both at 08:00);
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
//! Size: over the 700-line guide. Delivery (`deliver.rs`), contacts
//! (`contact.rs`), lifecycle (`lifecycle.rs`) and the quota moved out in the
//! trust change; splitting milestone derivation from holding and superseding
//! is listed in issue 11 ("modules that outgrew one concern").

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use futures::StreamExt;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use prost::Message;
use redis::AsyncCommands;
use tracing::Instrument;
use trackstream_proto::v1::{
    Alert, AlertState, BuyerContact, BuyerNotification, Channel, Milestone, Reason, Shipment,
    ShipmentUpdate, Status, UpdateKind,
};
use trackstream_proto::{keys, time, topics};
use trackstream_runtime::dlq::DeadLetters;
use trackstream_runtime::kafka::{BatchHandler, HandlerError, Inbound, OutRecord, Producer};
use trackstream_runtime::merchants::MerchantDirectory;
use trackstream_runtime::order_log;
use trackstream_runtime::redis::RedisConn;
use trackstream_runtime::{CancellationToken, Error};

use crate::clock::Clock;
use crate::config::{MessagesConfig, RetentionConfig};
use crate::deliver::{self, Delivered};
use crate::lifecycle::{self, Lifecycle};
use crate::outbox::{self, Added, Held, Outbox, Taken};
use crate::quiet::{self, QuietHours};
use crate::{contact, mask, templates};

type Labels = Vec<(&'static str, String)>;

/// Keeps the newest emission of each alert per order (`{o:O}:alerts`), ordered by
/// (state, tier), so a replayed OPENED cannot overwrite a RESOLVED.
const INDEX_ALERT_LUA: &str = r"
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current and tonumber(string.sub(current, 1, 8)) >= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], string.format('%08d', tonumber(ARGV[2])) .. ARGV[3])
return 1
";

/// Held messages looked at per shard per flush.
const FLUSH_PAGE: usize = 256;

#[derive(Clone)]
struct Metrics {
    sent: Family<Labels, Counter>,
    suppressed: Family<Labels, Counter>,
    held: Family<Labels, Counter>,
    superseded: Family<Labels, Counter>,
}

/// A parcel reaching a milestone.
struct Trigger {
    shipment: Shipment,
    milestone: Milestone,
    location: String,
    reason: Reason,
    at: Option<prost_types::Timestamp>,
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
    burst_window: chrono::Duration,
    lease_ms: i64,
    instance: String,
    metrics: Metrics,
    index_alert: redis::Script,
    lifecycle: Lifecycle,
    letters: DeadLetters,
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
}

/// The longest burst window accepted (one day): beyond it a "burst" is not one.
pub const MAX_BURST_WINDOW: std::time::Duration = std::time::Duration::from_secs(86_400);

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
        let burst_window = chrono::Duration::from_std(config.burst_window).unwrap_or_default();
        let metrics = Metrics {
            sent: Family::default(),
            suppressed: Family::default(),
            held: Family::default(),
            superseded: Family::default(),
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
            "Buyer messages held before sending, by why (burst window, quiet hours)",
            metrics.held.clone(),
        );
        registry.register(
            "buyer_messages_superseded",
            "Held buyer messages dropped because a later milestone covered their parcels",
            metrics.superseded.clone(),
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
            lifecycle,
            letters,
            conn,
            producer,
            config,
            merchants,
            clock,
            quiet,
            default_zone,
            burst_window,
            lease_ms: lease_ms.max(1_000),
            instance: format!("{:016x}", rand::random::<u64>()),
            metrics,
            index_alert: redis::Script::new(INDEX_ALERT_LUA),
        })
    }

    fn label(milestone: Milestone) -> Labels {
        vec![("milestone", templates::milestone_name(milestone))]
    }

    async fn on_update(&self, update: ShipmentUpdate) -> redis::RedisResult<Option<Trigger>> {
        let (Some(event), Some(shipment)) = (update.event, update.shipment) else {
            return Ok(None);
        };
        self.outbox.record_parcel(&shipment, false).await?;
        if update.late {
            return Ok(None);
        }
        let milestone = if update.kind == UpdateKind::ReturnReceived as i32 {
            Milestone::ReturnReceived
        } else if update.kind == UpdateKind::Scan as i32 && !shipment.is_return {
            let status = Status::try_from(event.status).unwrap_or(Status::Unspecified);
            match templates::milestone_for_status(status) {
                Some(milestone) => milestone,
                None => return Ok(None),
            }
        } else {
            return Ok(None);
        };
        let location = event.location.map(|l| l.text).unwrap_or_default();
        Ok(Some(Trigger {
            shipment,
            milestone,
            location,
            reason: Reason::Unspecified,
            at: event.occurred_at,
        }))
    }

    async fn on_alert(&self, alert: Alert) -> redis::RedisResult<Option<Trigger>> {
        if alert.order_id.is_empty() {
            return Ok(None);
        }
        let order = order_log::order_ref(&alert.merchant_id, &alert.order_id);
        let mut conn = self.conn.clone();
        let rank = alert.state * 1000 + i32::try_from(alert.tier).unwrap_or(999).min(999);
        let _: i64 = self
            .index_alert
            .key(order_log::key(&order, "alerts"))
            .arg(&alert.alert_id)
            .arg(rank)
            .arg(alert.encode_to_vec())
            .invoke_async(&mut conn)
            .await?;
        if alert.state != AlertState::Opened as i32 {
            return Ok(None);
        }
        let milestone = match alert.rule.as_str() {
            "stalled_in_transit" | "promised_date_missed" | "out_for_delivery_not_delivered" => {
                Milestone::Delayed
            }
            "carrier_exception" => Milestone::Exception,
            _ => return Ok(None),
        };
        let waybill_key = keys::waybill_key(&alert.carrier, &alert.waybill);
        let shipment = match self.outbox.parcel(&order, &waybill_key).await? {
            Some(shipment) => Some(shipment),
            None => self
                .outbox
                .parcels(&order)
                .await?
                .into_iter()
                .find(|s| !s.is_return && s.merchant_id == alert.merchant_id)
                .map(|mut s| {
                    s.carrier.clone_from(&alert.carrier);
                    s.waybill.clone_from(&alert.waybill);
                    s
                }),
        };
        let Some(shipment) = shipment.filter(|s| !s.is_return) else {
            tracing::info!(order_id = %alert.order_id, waybill = %alert.waybill,
                "alert for a parcel the notifier has not seen registered: no buyer message");
            return Ok(None);
        };
        Ok(Some(Trigger {
            shipment,
            milestone,
            location: String::new(),
            reason: Reason::try_from(alert.reason).unwrap_or(Reason::Unspecified),
            at: alert.effective_at,
        }))
    }

    /// Holds the trigger's parcel in its order's message; returns the message if
    /// it is due now.
    async fn hold(
        &self,
        trigger: Trigger,
        now: DateTime<Utc>,
    ) -> redis::RedisResult<Option<(String, Milestone)>> {
        let Trigger {
            shipment,
            milestone,
            location,
            reason,
            at,
        } = trigger;
        if shipment.order_id.is_empty() {
            return Ok(None);
        }
        // Everything below is keyed by the merchant-scoped order.
        let order_id = order_log::order_ref(&shipment.merchant_id, &shipment.order_id);
        // Fast path: most scans re-reach an already sent milestone.
        if self
            .outbox
            .state(&order_id, milestone)
            .await?
            .is_some_and(|s| s != "held")
        {
            self.metrics
                .suppressed
                .get_or_create(&Self::label(milestone))
                .inc();
            return Ok(None);
        }
        let zone = quiet::zone(
            shipment.buyer.as_ref().map_or("", |b| b.time_zone.as_str()),
            self.default_zone,
        );
        let release = self
            .quiet
            .as_ref()
            .and_then(|q| q.release_at(now, zone, milestone, &order_id));
        let earliest = release.unwrap_or(now);
        let window_end = now + self.burst_window;
        // Scheduled before it exists: a crash in between leaves a stray member,
        // never an unscheduled message.
        self.outbox
            .schedule(
                &order_id,
                milestone,
                earliest.max(window_end).timestamp_millis(),
            )
            .await?;
        let waybill_key = keys::waybill_key(&shipment.carrier, &shipment.waybill);
        let return_direction = milestone == Milestone::ReturnReceived;
        // The held copy never carries the contact: it is looked up from the
        // registration when the message is rendered (`crate::contact`).
        let held = Held {
            shipment: Some(contact::stripped(shipment)),
            reason: reason as i32,
            created_at: Some(at.unwrap_or_else(|| time::to_proto(now))),
        };
        let added = self
            .outbox
            .add(
                &order_id,
                milestone,
                return_direction,
                &waybill_key,
                &location,
                &held,
            )
            .await?;
        let Added::Held {
            created,
            covered,
            known,
        } = added
        else {
            self.metrics
                .suppressed
                .get_or_create(&Self::label(milestone))
                .inc();
            return Ok(None);
        };
        let complete = covered >= known.max(1);
        if created {
            let why = if release.is_some() {
                "quiet_hours"
            } else if !complete {
                "burst_window"
            } else {
                ""
            };
            if !why.is_empty() {
                tracing::info!(order_id = %order_id, milestone = milestone.as_str_name(),
                    why, due = %earliest, "buyer message held");
                self.metrics
                    .held
                    .get_or_create(&vec![("why", why.to_owned())])
                    .inc();
            }
        }
        if !complete {
            return Ok(None);
        }
        self.outbox
            .schedule(&order_id, milestone, earliest.timestamp_millis())
            .await?;
        Ok((earliest <= now).then_some((order_id, milestone)))
    }

    /// Sends the given held messages that are (still) ours to send, each on its
    /// own: one that cannot be produced never holds back the others. Retriable
    /// failures are logged and the message is released, to be retried by the
    /// flusher; a permanent one is dead-lettered and marked `dead`.
    pub async fn flush(&self, due: Vec<(String, Milestone)>, now: DateTime<Utc>) {
        if due.is_empty() {
            return;
        }
        let now_ms = now.timestamp_millis();
        let token = format!("sending:{}:{}", now_ms + self.lease_ms, self.instance);
        let token = token.as_str();
        futures::stream::iter(due)
            .for_each_concurrent(ORDERS_IN_FLIGHT, |(order_id, milestone)| async move {
                let record = match self.take_one(&order_id, milestone, now, token).await {
                    Ok(Some(record)) => record,
                    Ok(None) => return,
                    Err(err) => {
                        tracing::warn!(%err, order_id = %order_id, "cannot take held message; retried later");
                        return;
                    }
                };
                self.deliver(&order_id, milestone, record, token).await;
            })
            .await;
    }

    /// Produces one taken message and records the outcome.
    async fn deliver(&self, order_id: &str, milestone: Milestone, record: OutRecord, token: &str) {
        let span = tracing::info_span!("deliver", order_id = %order_id,
            milestone = milestone.as_str_name());
        self.deliver_in_span(order_id, milestone, record, token)
            .instrument(span)
            .await;
    }

    async fn deliver_in_span(
        &self,
        order_id: &str,
        milestone: Milestone,
        record: OutRecord,
        token: &str,
    ) {
        let marked = match deliver::produce(&self.producer, &self.letters, record).await {
            Delivered::Sent => {
                self.metrics
                    .sent
                    .get_or_create(&Self::label(milestone))
                    .inc();
                self.outbox.done(order_id, milestone).await
            }
            Delivered::DeadLettered => self.outbox.dead(order_id, milestone).await,
            Delivered::Retry => {
                if let Err(err) = self.outbox.release(order_id, milestone, token).await {
                    tracing::warn!(%err, "cannot release lease; message retried when it expires");
                }
                return;
            }
        };
        let unscheduled = match marked {
            Ok(()) => self.outbox.unschedule(order_id, milestone).await,
            Err(err) => Err(err),
        };
        if let Err(err) = unscheduled {
            // Re-sent after the lease with the same notification id.
            tracing::warn!(%err, "sent message not marked sent");
        }
    }

    async fn take_one(
        &self,
        order_id: &str,
        milestone: Milestone,
        now: DateTime<Utc>,
        token: &str,
    ) -> redis::RedisResult<Option<OutRecord>> {
        match self
            .outbox
            .take(order_id, milestone, now.timestamp_millis(), token)
            .await?
        {
            Taken::Busy => Ok(None),
            Taken::Gone => {
                self.outbox.unschedule(order_id, milestone).await?;
                Ok(None)
            }
            Taken::Superseded(by) => {
                tracing::info!(order_id = %order_id, milestone = milestone.as_str_name(),
                    by = %by, "held buyer message superseded by a later milestone");
                self.metrics
                    .superseded
                    .get_or_create(&Self::label(milestone))
                    .inc();
                self.outbox.unschedule(order_id, milestone).await?;
                Ok(None)
            }
            Taken::Take {
                held,
                parcels,
                superseded,
            } => {
                for lower in superseded {
                    tracing::info!(order_id = %order_id, milestone = lower.as_str_name(),
                        by = milestone.as_str_name(), "held buyer message superseded by a later milestone");
                    self.metrics
                        .superseded
                        .get_or_create(&Self::label(lower))
                        .inc();
                }
                let shipment = held.shipment.clone().unwrap_or_default();
                // Due, but the buyer's night started again meanwhile (a flusher
                // that was down): wait for the next morning.
                let zone = quiet::zone(
                    shipment.buyer.as_ref().map_or("", |b| b.time_zone.as_str()),
                    self.default_zone,
                );
                if let Some(later) = self
                    .quiet
                    .as_ref()
                    .and_then(|q| q.release_at(now, zone, milestone, order_id))
                {
                    self.outbox.release(order_id, milestone, token).await?;
                    self.outbox
                        .reschedule(order_id, milestone, later.timestamp_millis())
                        .await?;
                    return Ok(None);
                }
                let registrations = self.outbox.parcels(order_id).await?;
                let mut waybills: Vec<&str> = parcels.iter().map(|(k, _)| k.as_str()).collect();
                waybills.sort_unstable();
                let buyer = contact::for_message(&registrations, &waybills);
                Ok(Some(self.render(
                    &held,
                    buyer.as_ref(),
                    milestone,
                    &parcels,
                    now,
                )))
            }
        }
    }

    fn render(
        &self,
        held: &Held,
        buyer: Option<&BuyerContact>,
        milestone: Milestone,
        parcels: &[(String, String)],
        now: DateTime<Utc>,
    ) -> OutRecord {
        let notification = render_message(
            &self.config,
            &self.merchants,
            held,
            buyer,
            milestone,
            parcels,
            now,
        );
        tracing::info!(order_id = %notification.order_id, merchant_id = %notification.merchant_id,
            parcels = parcels.len(), milestone = milestone.as_str_name(), "buyer message rendered");
        OutRecord::new(
            topics::BUYER_NOTIFICATIONS,
            message_key(&notification.merchant_id, &notification.order_id),
            notification.encode_to_vec(),
        )
    }

    /// Runs the flusher until `shutdown`: every `flush_interval`, sends the
    /// held messages of every shard that have become due.
    pub async fn run_flusher(self: Arc<Self>, shutdown: CancellationToken) {
        let interval = (self.config.flush_interval).max(std::time::Duration::from_millis(10));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            let now = self.clock.now();
            for shard in 0..outbox::SHARDS {
                match self
                    .outbox
                    .due(shard, now.timestamp_millis(), FLUSH_PAGE)
                    .await
                {
                    Ok(due) => self.flush(due, now).await,
                    Err(err) => tracing::warn!(%err, shard, "cannot read the message schedule"),
                }
            }
        }
    }
}

/// The `buyer.notifications` record key of an order: its merchant-scoped
/// `order_log::order_ref`, `<merchant_id>/<order_id>`, so two shops' order
/// `10001` are two keys.
pub fn message_key(merchant_id: &str, order_id: &str) -> String {
    order_log::order_ref(merchant_id, order_id)
}

/// The `notification_id` of an order's message for `milestone`:
/// `<merchant_id>/<order_id>:<milestone>`, stable across replays and resends, so
/// a gateway can dedup on it across every shop.
pub fn notification_id(merchant_id: &str, order_id: &str, milestone: Milestone) -> String {
    format!(
        "{}:{}",
        message_key(merchant_id, order_id),
        templates::milestone_name(milestone)
    )
}

/// Renders the buyer message for `milestone` covering `parcels` (waybill key →
/// location): template of the merchant and locale, `buyer`'s contact masked
/// (from the registration, [`contact::for_message`]), waybills sorted, one
/// location or each parcel's own, channel hints from the contact.
pub fn render_message(
    config: &MessagesConfig,
    merchants: &MerchantDirectory,
    held: &Held,
    buyer: Option<&BuyerContact>,
    milestone: Milestone,
    parcels: &[(String, String)],
    now: DateTime<Utc>,
) -> BuyerNotification {
    let shipment = held.shipment.clone().unwrap_or_default();
    let locale = locale_of(&shipment, config);
    let buyer = buyer.cloned().unwrap_or_default();
    let contact = if buyer.phone.is_empty() {
        mask::email(&buyer.email)
    } else {
        mask::phone(&buyer.phone)
    };
    let merchant_name = if shipment.merchant_name.is_empty() {
        merchants
            .get(&shipment.merchant_id)
            .map(|m| m.name.clone())
            .unwrap_or_default()
    } else {
        shipment.merchant_name.clone()
    };
    let mut parcels = parcels.to_vec();
    parcels.sort();
    let split: Vec<(&str, &str, &str)> = parcels
        .iter()
        .map(|(key, location)| {
            let (carrier, waybill) = keys::split_waybill_key(key).unwrap_or(("", key.as_str()));
            (carrier, waybill, location.as_str())
        })
        .collect();
    let waybills: Vec<String> = split.iter().map(|(_, w, _)| (*w).to_owned()).collect();
    let mut carriers: Vec<&str> = split.iter().map(|(c, _, _)| *c).collect();
    carriers.dedup();
    let mut locations: Vec<&str> = split
        .iter()
        .map(|(_, _, l)| *l)
        .filter(|l| !l.is_empty())
        .collect();
    locations.sort_unstable();
    locations.dedup();
    let location = if locations.len() <= 1 {
        locations.first().copied().unwrap_or_default().to_owned()
    } else {
        split
            .iter()
            .filter(|(_, _, l)| !l.is_empty())
            .map(|(_, w, l)| format!("{w}: {l}"))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let reason = Reason::try_from(held.reason).unwrap_or(Reason::Unspecified);
    let reason_text = templates::reason_text(&locale, reason, "");
    let waybill_text = waybills.join(", ");
    let carrier_text = carriers.join(", ");
    let vars = templates::Vars {
        merchant: &merchant_name,
        order_id: &shipment.order_id,
        waybill: &waybill_text,
        count: waybills.len(),
        carrier: &carrier_text,
        location: &location,
        reason: &reason_text,
        next: templates::next_step(&locale, milestone, reason),
        contact: &contact,
    };
    let text = templates::render(config, &shipment.merchant_id, &locale, milestone, &vars);
    let mut channels = vec![Channel::App as i32];
    if !buyer.phone.is_empty() {
        channels.push(Channel::Sms as i32);
        if locale.starts_with("zh") {
            channels.push(Channel::Wechat as i32);
        }
    }
    if !buyer.email.is_empty() {
        channels.push(Channel::Email as i32);
    }
    BuyerNotification {
        notification_id: notification_id(&shipment.merchant_id, &shipment.order_id, milestone),
        order_id: shipment.order_id.clone(),
        merchant_id: shipment.merchant_id.clone(),
        merchant_name,
        milestone: milestone as i32,
        locale,
        channels,
        contact_masked: contact,
        title: text.title,
        body: text.body,
        waybills,
        created_at: held.created_at.or_else(|| Some(time::to_proto(now))),
        deliver_at: Some(time::to_proto(now)),
    }
}

fn locale_of(shipment: &Shipment, config: &MessagesConfig) -> String {
    shipment
        .buyer
        .as_ref()
        .map(|b| b.locale.clone())
        .filter(|l| !l.is_empty())
        .unwrap_or_else(|| config.default_locale.clone())
}

/// How many orders of one batch are processed at once. Each order's records stay
/// in offset order; different orders share nothing but the Redis connection,
/// which pipelines their commands, so a batch costs a few round trips instead of
/// several per record.
const ORDERS_IN_FLIGHT: usize = 64;

/// One decoded input record.
enum Input {
    Shipment(Shipment),
    Alert(Alert),
    Update(Box<ShipmentUpdate>),
}

impl Input {
    /// Decodes `record` by topic. An undecodable record can never be handled:
    /// the caller dead-letters it rather than retrying it forever or dropping it
    /// silently.
    fn decode(record: &Inbound) -> Result<Input, prost::DecodeError> {
        let payload = record.payload.as_slice();
        if record.topic == topics::SHIPMENTS {
            Shipment::decode(payload).map(Input::Shipment)
        } else if record.topic == topics::TRACKING_ALERTS {
            Alert::decode(payload).map(Input::Alert)
        } else {
            ShipmentUpdate::decode(payload).map(|update| Input::Update(Box::new(update)))
        }
    }

    /// The merchant-scoped order the input belongs to (empty order id: none).
    fn order_ref(&self) -> Option<String> {
        let (merchant, order) = match self {
            Input::Shipment(shipment) => (&shipment.merchant_id, &shipment.order_id),
            Input::Alert(alert) => (&alert.merchant_id, &alert.order_id),
            Input::Update(update) => (&update.merchant_id, &update.order_id),
        };
        (!order.is_empty()).then(|| order_log::order_ref(merchant, order))
    }

    /// The waybill key of the parcel this input says is final, if it does.
    fn final_parcel(&self) -> Option<String> {
        let Input::Update(update) = self else {
            return None;
        };
        if !lifecycle::is_final(update) {
            return None;
        }
        match (&update.shipment, &update.event) {
            (Some(shipment), _) => Some(keys::waybill_key(&shipment.carrier, &shipment.waybill)),
            (None, Some(event)) => Some(keys::waybill_key(&event.carrier, &event.waybill)),
            (None, None) => None,
        }
    }
}

/// One order's inputs of a batch, in offset order.
struct OrderInputs {
    order_ref: String,
    inputs: Vec<Input>,
    final_parcels: Vec<String>,
}

impl Messenger {
    /// Applies one order's inputs in order; returns the milestones that became
    /// due to send.
    async fn apply_order(
        &self,
        inputs: Vec<Input>,
        now: DateTime<Utc>,
    ) -> redis::RedisResult<Vec<(String, Milestone)>> {
        let mut due = Vec::new();
        for input in inputs {
            let trigger = match input {
                Input::Shipment(shipment) => {
                    self.outbox.record_parcel(&shipment, true).await?;
                    None
                }
                Input::Alert(alert) => self.on_alert(alert).await?,
                Input::Update(update) => self.on_update(*update).await?,
            };
            if let Some(trigger) = trigger
                && let Some(ready) = self.hold(trigger, now).await?
                && !due.contains(&ready)
            {
                due.push(ready);
            }
        }
        Ok(due)
    }

    /// Dead-letters the batch's undecodable records. A letter that cannot be
    /// produced for a retriable reason fails the batch (retried); one refused for
    /// good is logged and counted by the producer, and the batch moves on.
    async fn dead_letter(&self, letters: Vec<OutRecord>) -> Result<(), HandlerError> {
        if letters.is_empty() {
            return Ok(());
        }
        match self.producer.send_all(letters).await {
            Ok(()) => Ok(()),
            Err(err) if err.is_permanent() => {
                tracing::error!(%err, "dead letter refused by the broker; input record skipped");
                Ok(())
            }
            Err(err) => Err(HandlerError(format!("dead letters: {err}"))),
        }
    }
}

impl BatchHandler for Messenger {
    async fn handle(&self, batch: &[Inbound]) -> Result<(), HandlerError> {
        let now = self.clock.now();
        let mut orders: Vec<OrderInputs> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut letters = Vec::new();
        let mut orphans = Vec::new();
        for record in batch {
            let input = match Input::decode(record) {
                Ok(input) => input,
                Err(err) => {
                    letters.push(self.letters.letter(record, "undecodable", &err.to_string()));
                    continue;
                }
            };
            // Inputs without an order (nothing to message) are still applied.
            let Some(order_ref) = input.order_ref() else {
                orphans.push(input);
                continue;
            };
            let slot = *index.entry(order_ref.clone()).or_insert_with(|| {
                orders.push(OrderInputs {
                    order_ref,
                    inputs: Vec::new(),
                    final_parcels: Vec::new(),
                });
                orders.len() - 1
            });
            if let Some(parcel) = input.final_parcel()
                && !orders[slot].final_parcels.contains(&parcel)
            {
                orders[slot].final_parcels.push(parcel);
            }
            orders[slot].inputs.push(input);
        }
        self.dead_letter(letters).await?;
        let mut touches = Vec::with_capacity(orders.len());
        let mut work = Vec::with_capacity(orders.len() + 1);
        for order in orders {
            touches.push((order.order_ref, order.final_parcels));
            work.push(order.inputs);
        }
        if !orphans.is_empty() {
            work.push(orphans);
        }
        let applied: Vec<redis::RedisResult<Vec<(String, Milestone)>>> =
            futures::stream::iter(work.into_iter().map(|inputs| self.apply_order(inputs, now)))
                .buffer_unordered(ORDERS_IN_FLIGHT)
                .collect()
                .await;
        let mut due: Vec<(String, Milestone)> = Vec::new();
        for result in applied {
            // Any failure retries the whole batch; what was applied is idempotent.
            due.extend(result.map_err(|e| HandlerError(format!("redis: {e}")))?);
        }
        // Held state is durable: sending is retried by the flusher if this fails.
        self.flush(due, now).await;
        // Expiry last, so a message is produced before its order can expire.
        let now_ms = now.timestamp_millis();
        let touched: Vec<redis::RedisResult<i64>> = futures::stream::iter(touches)
            .map(|(order_ref, finals)| async move {
                self.lifecycle.touch(&order_ref, &finals, now_ms).await
            })
            .buffer_unordered(ORDERS_IN_FLIGHT)
            .collect()
            .await;
        for result in touched {
            result.map_err(|e| HandlerError(format!("redis: {e}")))?;
        }
        Ok(())
    }
}

/// Reads the held state of an order's milestone, for tests and tooling.
pub async fn milestone_state(
    conn: &mut RedisConn,
    order_id: &str,
    milestone: Milestone,
) -> redis::RedisResult<Option<String>> {
    conn.hget(order_log::key(order_id, "ms"), milestone.as_str_name())
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use trackstream_proto::v1::BuyerContact;

    fn held(locale: &str) -> Held {
        Held {
            shipment: Some(Shipment {
                order_id: "O-1".into(),
                merchant_id: "m".into(),
                carrier: "sf".into(),
                waybill: "SF2".into(),
                buyer: Some(BuyerContact {
                    locale: locale.into(),
                    ..BuyerContact::default()
                }),
                ..Shipment::default()
            }),
            reason: Reason::Unspecified as i32,
            created_at: Some(time::from_millis(1_000)),
        }
    }

    /// The contact as the merchant registered it.
    fn registered() -> BuyerContact {
        BuyerContact {
            phone: "13812345678".into(),
            ..BuyerContact::default()
        }
    }

    #[test]
    fn ids_and_keys_are_scoped_by_merchant() {
        let a = notification_id("shop-a", "10001", Milestone::Delivered);
        let b = notification_id("shop-b", "10001", Milestone::Delivered);
        assert_eq!(a, "shop-a/10001:delivered");
        assert_ne!(a, b);
        assert_eq!(message_key("shop-a", "10001"), "shop-a/10001");
        assert_ne!(
            message_key("shop-a", "10001"),
            message_key("shop-b", "10001")
        );
    }

    #[test]
    fn without_a_registered_contact_only_the_app_channel_is_offered() {
        let message = render_message(
            &MessagesConfig::default(),
            &MerchantDirectory::default(),
            &held("en"),
            None,
            Milestone::Delivered,
            &[("sf:SF2".to_owned(), String::new())],
            DateTime::from_timestamp(2_000, 0).unwrap_or_default(),
        );
        assert_eq!(message.contact_masked, "");
        assert_eq!(message.channels, [Channel::App as i32]);
    }

    #[test]
    fn a_merged_message_lists_sorted_waybills_and_each_pickup_point_when_they_differ() {
        let merchants =
            MerchantDirectory::new(vec![trackstream_runtime::merchants::MerchantConfig {
                id: "m".into(),
                name: "Acme".into(),
                tokens: Vec::new(),
            }]);
        let parcels = vec![
            ("yto:YT9".to_owned(), "Locker B".to_owned()),
            ("sf:SF2".to_owned(), "Locker A".to_owned()),
        ];
        let now = DateTime::from_timestamp(2_000, 0).unwrap_or_default();
        let message = render_message(
            &MessagesConfig::default(),
            &merchants,
            &held("en"),
            Some(&registered()),
            Milestone::AvailableForPickup,
            &parcels,
            now,
        );
        assert_eq!(message.waybills, ["SF2", "YT9"]);
        assert_eq!(message.merchant_name, "Acme", "from the directory");
        assert!(
            message.body.contains("waybill SF2, YT9")
                && message.body.contains("SF2: Locker A; YT9: Locker B"),
            "{}",
            message.body
        );
        assert_eq!(message.notification_id, "m/O-1:available_for_pickup");
        assert_eq!(message.created_at, Some(time::from_millis(1_000)));
        assert_eq!(message.deliver_at, Some(time::to_proto(now)));
        assert_eq!(message.channels, [Channel::App as i32, Channel::Sms as i32]);

        let same_place = vec![
            ("sf:SF2".to_owned(), "Locker A".to_owned()),
            ("sf:SF3".to_owned(), "Locker A".to_owned()),
        ];
        let zh = render_message(
            &MessagesConfig::default(),
            &merchants,
            &held("zh-CN"),
            Some(&registered()),
            Milestone::AvailableForPickup,
            &same_place,
            now,
        );
        assert!(zh.body.contains("已到 Locker A，"), "{}", zh.body);
        assert_eq!(zh.contact_masked, "138****5678");
        assert!(!zh.body.contains("13812345678"));
    }
}
