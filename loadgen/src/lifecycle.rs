//! Parcels and their lifecycles: which life each parcel lives (by the shares
//! in [`Mix`]), its scans with event times over the last three days, and the
//! ground truth of what it must make the detector do.

use chrono::{DateTime, Duration as Span, SubsecRound, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use trackstream_proto::v1::Status;

use crate::Format;

/// A lifecycle stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Label created, carrier has the data.
    Info,
    /// Carrier has the parcel.
    PickedUp,
    /// Moving between hubs.
    InTransit,
    /// With the courier.
    OutForDelivery,
    /// At a locker or pickup point.
    Locker,
    /// Delivered.
    Delivered,
    /// Courier could not deliver (recipient unreachable).
    AttemptFailed,
}

/// How a parcel's life goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// Picked up, moved, delivered.
    Delivered,
    /// Still moving, recently scanned.
    Moving,
    /// Last scan 52 h ago while in transit.
    Stalled,
    /// Waiting at a locker for 22 h.
    Locker,
    /// Delivery attempt failed 5 h ago.
    FailedDelivery,
    /// Only label information, 30 h ago.
    NoPickup,
    /// Picked up just under 24 h before generation: its stall deadline falls a few
    /// seconds into the run (measures deadline → alert latency).
    StallSoon,
}

impl Kind {
    /// A short human name, for reports ("failed delivery").
    pub fn name(self) -> &'static str {
        match self {
            Kind::Delivered => "delivered",
            Kind::Moving => "moving",
            Kind::Stalled => "stalled",
            Kind::Locker => "locker",
            Kind::FailedDelivery => "failed delivery",
            Kind::NoPickup => "no pickup",
            Kind::StallSoon => "stall soon",
        }
    }
}

/// One scan of a parcel.
#[derive(Debug, Clone)]
pub struct Scan {
    /// Stage reached.
    pub stage: Stage,
    /// When (whole seconds, UTC).
    pub at: DateTime<Utc>,
    /// Unique number carried in the scan text as `#<tag>`.
    pub tag: u64,
}

/// A simulated parcel.
#[derive(Debug, Clone)]
pub struct Parcel {
    /// Index in the run.
    pub index: usize,
    /// How it is pushed.
    pub format: Format,
    /// Canonical carrier code.
    pub carrier: &'static str,
    /// Waybill.
    pub waybill: String,
    /// Order it belongs to (every fifth order has two parcels).
    pub order_id: String,
    /// Its lifecycle.
    pub kind: Kind,
    /// Its scans, oldest first.
    pub scans: Vec<Scan>,
}

/// Shares of each lifecycle and push imperfections.
#[derive(Debug, Clone, Copy)]
pub struct Mix {
    /// Share of parcels that stall (the rest split by the fixed shares below).
    pub stalled: f64,
    /// Share waiting at a locker.
    pub locker: f64,
    /// Share whose delivery fails.
    pub failed: f64,
    /// Share never picked up.
    pub no_pickup: f64,
    /// Share whose stall deadline falls during the run.
    pub stall_soon: f64,
    /// Probability that a push is sent twice.
    pub duplicate_rate: f64,
    /// Probability that a push is delivered late (out of order).
    pub reorder_rate: f64,
    /// How far (event time) a late push may fall behind: up to this much after
    /// its newest scan, so it can overtake the parcel's next push when that comes
    /// sooner. Keep it below the detector's `allowed_lateness`: a push later
    /// than that is a genuinely late scan, and the alerts the detector raises
    /// meanwhile are right, while [`Parcel::expected_alerts`] assumes every scan
    /// was known in time. (Swapping a push with the parcel's next one, as an
    /// earlier version did, delayed scans by the whole gap to the next scan,
    /// 10–20 h, and made those alerts count as false positives.)
    pub reorder_within: Span,
}

impl Default for Mix {
    fn default() -> Self {
        Mix {
            stalled: 0.08,
            locker: 0.05,
            failed: 0.05,
            no_pickup: 0.04,
            stall_soon: 0.0,
            duplicate_rate: 0.05,
            reorder_rate: 0.05,
            reorder_within: Span::hours(5),
        }
    }
}

fn kind_for(roll: f64, mix: &Mix) -> Kind {
    let mut edge = mix.stalled;
    for (share, kind) in [
        (0.0, Kind::Stalled),
        (mix.locker, Kind::Locker),
        (mix.failed, Kind::FailedDelivery),
        (mix.no_pickup, Kind::NoPickup),
        (mix.stall_soon, Kind::StallSoon),
    ] {
        edge += share;
        if roll < edge {
            return kind;
        }
    }
    if roll < edge + (1.0 - edge) * 0.7 {
        Kind::Delivered
    } else {
        Kind::Moving
    }
}

fn stages(kind: Kind, rng: &mut StdRng) -> Vec<(Stage, f64)> {
    // (stage, hours before now)
    match kind {
        Kind::Delivered => vec![
            (Stage::Info, 60.0),
            (Stage::PickedUp, 50.0),
            (Stage::InTransit, 40.0),
            (Stage::InTransit, 26.0),
            (Stage::OutForDelivery, 6.0),
            (Stage::Delivered, 2.0),
        ],
        Kind::Moving => vec![
            (Stage::PickedUp, 20.0),
            (Stage::InTransit, 9.0),
            (Stage::InTransit, 3.0),
        ],
        Kind::Stalled => vec![(Stage::PickedUp, 70.0), (Stage::InTransit, 52.0)],
        Kind::Locker => vec![
            (Stage::PickedUp, 48.0),
            (Stage::OutForDelivery, 26.0),
            (Stage::Locker, 22.0),
        ],
        Kind::FailedDelivery => vec![
            (Stage::PickedUp, 30.0),
            (Stage::OutForDelivery, 8.0),
            (Stage::AttemptFailed, 5.0),
        ],
        Kind::NoPickup => vec![(Stage::Info, 30.0)],
        Kind::StallSoon => {
            let seconds_left: f64 = rng.random_range(3.0..10.0);
            vec![(Stage::PickedUp, 24.0 - seconds_left / 3600.0)]
        }
    }
}

/// Generates `count` parcels, deterministic for a `seed`. Waybills and orders carry
/// `run` so runs do not collide; tags start at `first_tag`.
pub fn generate(
    count: usize,
    mix: &Mix,
    seed: u64,
    now: DateTime<Utc>,
    run: &str,
    first_tag: u64,
) -> Vec<Parcel> {
    generate_in(&Format::ALL, count, mix, seed, now, run, first_tag)
}

/// Like [`generate`], rotating over `formats` only: a stack that configures
/// secrets for some providers (the local demo: generic and Kdniao) is pushed
/// only what it can verify. An empty `formats` means every format. A Kdniao
/// parcel with label-only scans still goes generic (Kdniao has no such code).
pub fn generate_in(
    formats: &[Format],
    count: usize,
    mix: &Mix,
    seed: u64,
    now: DateTime<Utc>,
    run: &str,
    first_tag: u64,
) -> Vec<Parcel> {
    let formats = if formats.is_empty() {
        &Format::ALL[..]
    } else {
        formats
    };
    let mut rng = StdRng::seed_from_u64(seed);
    let now = now.trunc_subsecs(0);
    let mut tag = first_tag;
    (0..count)
        .map(|index| {
            let kind = kind_for(rng.random::<f64>(), mix);
            let mut format = formats[index % formats.len()];
            let plan = stages(kind, &mut rng);
            // Kdniao has no "info received" code; such parcels go generic.
            if format == Format::Kdniao && plan.iter().any(|(s, _)| *s == Stage::Info) {
                format = Format::Generic;
            }
            let scans = plan
                .into_iter()
                .map(|(stage, hours)| {
                    tag += 1;
                    Scan {
                        stage,
                        at: now - Span::milliseconds((hours * 3_600_000.0) as i64),
                        tag,
                    }
                    .truncated()
                })
                .collect();
            let carrier = format.carrier(index);
            let order = if index % 5 == 1 { index - 1 } else { index };
            Parcel {
                index,
                format,
                carrier,
                waybill: format!("{}{run}{index:06}", carrier.to_ascii_uppercase()),
                order_id: format!("BENCH-{run}-{order:06}"),
                kind,
                scans,
            }
        })
        .collect()
}

impl Scan {
    fn truncated(mut self) -> Self {
        self.at = self.at.trunc_subsecs(0);
        self
    }

    pub(crate) fn text(&self) -> String {
        let words = match self.stage {
            Stage::Info => "已下单 Shipping label created",
            Stage::PickedUp => "已揽收 Picked up",
            Stage::InTransit => "运输中 In transit",
            Stage::OutForDelivery => "派送中 Out for delivery",
            Stage::Locker => "已放入快递柜 In parcel locker",
            Stage::Delivered => "已签收 Delivered",
            Stage::AttemptFailed => "联系不上收件人 Recipient unreachable",
        };
        format!("{words} #{}", self.tag)
    }
}

impl Parcel {
    /// The registration body for `POST /v1/shipments`, registered an hour before
    /// the parcel's first scan (event time, so replays stay consistent).
    pub fn registration(&self) -> serde_json::Value {
        let registered_at = self.scans.first().map(|s| s.at - Span::hours(1));
        // A shop ships from a few warehouses to the whole country: lanes
        // for the delivery statistics.
        const ORIGINS: [&str; 3] = ["浙江省", "广东省", "江苏省"];
        const DESTINATIONS: [(&str, &str); 6] = [
            ("四川省", "成都市"),
            ("北京市", "北京市"),
            ("广东省", "深圳市"),
            ("湖北省", "武汉市"),
            ("上海市", "上海市"),
            ("陕西省", "西安市"),
        ];
        let origin = ORIGINS[self.index % ORIGINS.len()];
        let (province, city) = DESTINATIONS[self.index * 7 % DESTINATIONS.len()];
        json!({
            "order_id": self.order_id, "carrier": self.carrier, "waybill": self.waybill,
            "registered_at": registered_at.map(|t| t.to_rfc3339()),
            "ordered_at": registered_at.map(|t| (t - Span::hours(2)).to_rfc3339()),
            "origin": {"province": origin},
            "destination": {"province": province, "city": city},
            "service_level": if self.index.is_multiple_of(3) { "express" } else { "standard" },
            "buyer": {"name": "买家", "phone": format!("139{:08}", self.index * 7919 % 100_000_000),
                      "locale": if self.index.is_multiple_of(4) { "en" } else { "zh-CN" },
                      "time_zone": "Asia/Shanghai"}
        })
    }

    /// The canonical status each stage becomes in this parcel's format (providers
    /// differ: Kuaidi100 and EasyPost report a failed attempt as an exception,
    /// EasyPost has no separate pickup status).
    pub fn expected_status(&self, stage: Stage) -> Status {
        match (self.format, stage) {
            (Format::Kuaidi100 | Format::Easypost, Stage::AttemptFailed) => Status::Exception,
            (Format::Easypost, Stage::PickedUp) => Status::InTransit,
            (_, Stage::Info) => Status::InfoReceived,
            (_, Stage::PickedUp) => Status::PickedUp,
            (_, Stage::InTransit) => Status::InTransit,
            (_, Stage::OutForDelivery) => Status::OutForDelivery,
            (_, Stage::Locker) => Status::AvailableForPickup,
            (_, Stage::Delivered) => Status::Delivered,
            (_, Stage::AttemptFailed) => Status::DeliveryAttemptFailed,
        }
    }

    /// Ground truth: the rules that must have OPENED an alert for this parcel by
    /// `now`, each with the tier it must have reached, under the default
    /// thresholds (independent of the detector's code; `docs/RULES.md`).
    /// Thresholds are strict: a tier is reached once the silence is *more*
    /// than its offset. Stall-type rules count from the last scan; "not picked
    /// up" from the registration ([`Parcel::registration`]: an hour before the
    /// first scan), as the detector anchors it at the earlier of registration
    /// and label information. A failed delivery attempt opens
    /// `carrier_exception` at once; while it is the last scan, nothing else
    /// watches the parcel and its silence escalates that alert (24 h, 72 h);
    /// a later scan resolves it (tier 0 reached).
    pub fn expected_alerts(&self, now: DateTime<Utc>) -> Vec<(&'static str, u32)> {
        let mut rules = Vec::new();
        let (Some(first), Some(last)) = (self.scans.first(), self.scans.last()) else {
            return rules;
        };
        // How many of `tiers` (hours) the silence since `anchor` has passed.
        let passed = |anchor: DateTime<Utc>, tiers: &[i64]| {
            let age = now - anchor;
            tiers.iter().filter(|h| age > Span::hours(**h)).count()
        };
        let reached = |anchor: DateTime<Utc>, tiers: &[i64]| {
            passed(anchor, tiers)
                .checked_sub(1)
                .and_then(|t| u32::try_from(t).ok())
        };
        let timer = match last.stage {
            Stage::PickedUp | Stage::InTransit => {
                reached(last.at, &[24, 48, 72]).map(|t| ("stalled_in_transit", t))
            }
            Stage::OutForDelivery => {
                reached(last.at, &[36]).map(|t| ("out_for_delivery_not_delivered", t))
            }
            Stage::Locker => reached(last.at, &[18]).map(|t| ("uncollected_at_pickup_point", t)),
            Stage::Info => {
                reached(first.at - Span::hours(1), &[24, 48, 72]).map(|t| ("no_pickup", t))
            }
            Stage::AttemptFailed => u32::try_from(passed(last.at, &[24, 72]))
                .ok()
                .map(|t| ("carrier_exception", t)),
            Stage::Delivered => None,
        };
        rules.extend(timer);
        if last.stage != Stage::AttemptFailed
            && self.scans.iter().any(|s| s.stage == Stage::AttemptFailed)
        {
            rules.push(("carrier_exception", 0));
        }
        rules
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parcel(stages: &[(Stage, i64)], now: DateTime<Utc>) -> Parcel {
        Parcel {
            index: 1,
            format: Format::Generic,
            carrier: "sf",
            waybill: "SF1".into(),
            order_id: "O-1".into(),
            kind: Kind::Moving,
            scans: stages
                .iter()
                .zip(1..)
                .map(|((stage, hours_ago), tag)| Scan {
                    stage: *stage,
                    at: now - Span::hours(*hours_ago),
                    tag,
                })
                .collect(),
        }
    }

    #[test]
    fn a_failed_attempt_escalates_its_exception_and_raises_no_stall() {
        let now = Utc::now().trunc_subsecs(0);
        let failed = |hours_ago| {
            parcel(
                &[(Stage::PickedUp, 200), (Stage::AttemptFailed, hours_ago)],
                now,
            )
            .expected_alerts(now)
        };
        assert_eq!(failed(5), [("carrier_exception", 0)]);
        assert_eq!(failed(24), [("carrier_exception", 0)], "24h00 is not more");
        assert_eq!(failed(25), [("carrier_exception", 1)]);
        assert_eq!(failed(100), [("carrier_exception", 2)]);
        let moved_on = parcel(
            &[(Stage::AttemptFailed, 100), (Stage::OutForDelivery, 2)],
            now,
        );
        assert_eq!(moved_on.expected_alerts(now), [("carrier_exception", 0)]);
    }

    #[test]
    fn thresholds_are_strict() {
        let now = Utc::now().trunc_subsecs(0);
        let stalled =
            |hours_ago| parcel(&[(Stage::InTransit, hours_ago)], now).expected_alerts(now);
        assert_eq!(stalled(24), []);
        assert_eq!(stalled(25), [("stalled_in_transit", 0)]);
        assert_eq!(stalled(48), [("stalled_in_transit", 0)]);
        assert_eq!(stalled(49), [("stalled_in_transit", 1)]);
        let locker = parcel(&[(Stage::Locker, 18)], now).expected_alerts(now);
        assert_eq!(locker, []);
    }
}
