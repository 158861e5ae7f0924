//! The message a buyer receives: record key, notification id, and the
//! rendered, masked message for a held milestone.

use chrono::{DateTime, Utc};
use trackstream_proto::v1::{
    BuyerContact, BuyerNotification, Channel, Milestone, Reason, Shipment,
};
use trackstream_proto::{keys, time};
use trackstream_runtime::merchants::MerchantDirectory;
use trackstream_runtime::order_log;

use crate::config::MessagesConfig;
use crate::outbox::Held;
use crate::{mask, templates};

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
    let incident = held
        .incident
        .as_ref()
        .filter(|_| milestone == Milestone::Incident);
    let (reason_text, location) = match incident {
        // One place for the whole message: the incident's.
        Some(incident) => (
            templates::incident::reason_text(&locale, incident.reason).to_owned(),
            templates::incident::place_text(&locale, &incident.place),
        ),
        None => (templates::reason_text(&locale, reason, ""), location),
    };
    let waybill_text = waybills.join(", ");
    let carrier_text = carriers.join(", ");
    let zone = crate::quiet::zone(
        buyer.time_zone.as_str(),
        config
            .default_time_zone
            .parse()
            .unwrap_or(chrono_tz::Asia::Shanghai),
    );
    let eta = if milestone == Milestone::Shipped {
        templates::eta_sentence(&locale, held.prediction.as_ref(), zone)
    } else {
        String::new()
    };
    let delay = incident.map_or_else(String::new, |i| {
        templates::incident::delay_text(&locale, i.expected_delay_hours, i.until.as_ref(), zone)
    });
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
        eta: &eta,
        delay: &delay,
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
        tracking_url: String::new(),
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
            prediction: None,
            incident: None,
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

    #[test]
    fn the_shipped_message_says_the_day_only_for_a_high_confidence_prediction() {
        use trackstream_proto::v1::{DeliveryPrediction, PredictionConfidence};
        // 2026-12-02 20:30 UTC is Dec 3, 04:30 in Shanghai (the default zone).
        let at = DateTime::parse_from_rfc3339("2026-12-02T20:30:00Z")
            .map(|t| t.timestamp_millis())
            .unwrap_or_default();
        let shipped = |locale: &str, confidence: PredictionConfidence| {
            let mut held = held(locale);
            held.prediction = Some(DeliveryPrediction {
                most_likely_at: Some(time::from_millis(at)),
                confidence: confidence as i32,
                ..DeliveryPrediction::default()
            });
            render_message(
                &MessagesConfig::default(),
                &MerchantDirectory::default(),
                &held,
                Some(&registered()),
                Milestone::Shipped,
                &[("sf:SF2".to_owned(), String::new())],
                DateTime::from_timestamp(2_000, 0).unwrap_or_default(),
            )
            .body
        };
        let zh = shipped("zh-CN", PredictionConfidence::High);
        assert!(zh.ends_with("运单号 SF2。预计 12月3日送达。"), "{zh}");
        let en = shipped("en", PredictionConfidence::High);
        assert!(en.ends_with("waybill SF2. Arriving around Dec 3."), "{en}");
        for confidence in [PredictionConfidence::Medium, PredictionConfidence::Low] {
            let body = shipped("zh-CN", confidence);
            assert!(!body.contains("预计"), "{body}");
        }
    }
}
