//! Milestones and their messages, in zh-CN and en, with per-merchant overrides.

use trackstream_proto::v1::{Milestone, Reason, Status};

use crate::config::{MessagesConfig, Template};

pub mod incident;

/// The milestone a scan status reaches, if any.
pub fn milestone_for_status(status: Status) -> Option<Milestone> {
    match status {
        Status::PickedUp | Status::InTransit => Some(Milestone::Shipped),
        Status::OutForDelivery => Some(Milestone::OutForDelivery),
        Status::AvailableForPickup => Some(Milestone::AvailableForPickup),
        Status::Delivered => Some(Milestone::Delivered),
        _ => None,
    }
}

/// Every milestone a buyer message can be for.
pub const MILESTONES: [Milestone; 8] = [
    Milestone::Shipped,
    Milestone::OutForDelivery,
    Milestone::AvailableForPickup,
    Milestone::Delivered,
    Milestone::Delayed,
    Milestone::Exception,
    Milestone::ReturnReceived,
    Milestone::Incident,
];

/// The short name of a milestone used in config and notification ids
/// (`out_for_delivery`).
pub fn milestone_name(milestone: Milestone) -> String {
    milestone
        .as_str_name()
        .trim_start_matches("MILESTONE_")
        .to_ascii_lowercase()
}

/// The milestone of a short name, if it is one.
pub fn milestone_from_name(name: &str) -> Option<Milestone> {
    let name = name.trim().to_ascii_lowercase();
    MILESTONES.into_iter().find(|m| milestone_name(*m) == name)
}

/// Values substituted into templates. `contact` is already masked.
#[derive(Debug, Default)]
pub struct Vars<'a> {
    /// Merchant display name.
    pub merchant: &'a str,
    /// Order id.
    pub order_id: &'a str,
    /// Waybill(s), comma-separated when a burst was merged.
    pub waybill: &'a str,
    /// Number of parcels the message covers.
    pub count: usize,
    /// Carrier code(s).
    pub carrier: &'a str,
    /// Location text (pickup point for AVAILABLE_FOR_PICKUP).
    pub location: &'a str,
    /// Reason text (delays and exceptions).
    pub reason: &'a str,
    /// What happens next (delays and exceptions); may itself use placeholders.
    pub next: &'a str,
    /// Masked contact.
    pub contact: &'a str,
    /// "Arriving around" sentence (SHIPPED, high-confidence prediction
    /// only; see [`eta_sentence`]), else empty.
    pub eta: &'a str,
    /// The expected delay of an incident, as the tail of its sentence
    /// (INCIDENT only, when known; see [`incident::delay_text`]), else empty.
    pub delay: &'a str,
}

fn builtin(locale: &str, milestone: Milestone) -> (&'static str, &'static str) {
    let zh = locale.starts_with("zh");
    match (milestone, zh) {
        (Milestone::Shipped, true) => (
            "您的包裹已发出",
            "{merchant}：订单 {order_id} 已由 {carrier} 揽收，运单号 {waybill}。{eta}",
        ),
        (Milestone::Shipped, false) => (
            "Your parcel is on its way",
            "{merchant}: order {order_id} was picked up by {carrier}, waybill {waybill}.{eta}",
        ),
        (Milestone::OutForDelivery, true) => (
            "包裹正在派送",
            "{merchant}：订单 {order_id}（运单 {waybill}）今天派送中，请保持电话 {contact} 畅通。",
        ),
        (Milestone::OutForDelivery, false) => (
            "Out for delivery",
            "{merchant}: order {order_id} (waybill {waybill}) is out for delivery today; we'll reach you at {contact}.",
        ),
        (Milestone::AvailableForPickup, true) => (
            "包裹待取件",
            "{merchant}：订单 {order_id}（运单 {waybill}）已到 {location}，请尽快取件。",
        ),
        (Milestone::AvailableForPickup, false) => (
            "Ready for pickup",
            "{merchant}: order {order_id} (waybill {waybill}) is waiting at {location}. Please collect it soon.",
        ),
        (Milestone::Delivered, true) => (
            "包裹已签收",
            "{merchant}：订单 {order_id}（运单 {waybill}）已签收，感谢您的购买。",
        ),
        (Milestone::Delivered, false) => (
            "Delivered",
            "{merchant}: order {order_id} (waybill {waybill}) was delivered. Thank you for your purchase.",
        ),
        (Milestone::Delayed, true) => (
            "包裹可能延误",
            "{merchant}：订单 {order_id} 的物流更新有延迟（{reason}）。{next}",
        ),
        (Milestone::Delayed, false) => (
            "Your parcel may be delayed",
            "{merchant}: order {order_id} is delayed ({reason}). {next}",
        ),
        (Milestone::Exception, true) => (
            "包裹派送异常",
            "{merchant}：订单 {order_id} 派送遇到问题（{reason}）。{next}",
        ),
        (Milestone::Exception, false) => (
            "Delivery problem",
            "{merchant}: order {order_id} ran into a problem ({reason}). {next}",
        ),
        (Milestone::ReturnReceived, true) => (
            "退货已签收",
            "{merchant}：已收到您订单 {order_id} 的退货（运单 {waybill}），我们会尽快处理。",
        ),
        (Milestone::ReturnReceived, false) => (
            "Return received",
            "{merchant}: we received your return for order {order_id} (waybill {waybill}) and will process it shortly.",
        ),
        (Milestone::Incident, true) => (
            "包裹延误通知",
            "{merchant}：您的包裹（订单 {order_id}，运单 {waybill}）因{reason}在{location}滞留{delay}，{next}",
        ),
        (Milestone::Incident, false) => (
            "Your parcel is held up",
            "{merchant}: your parcel (order {order_id}, waybill {waybill}) is held up in {location} by {reason}{delay}. {next}",
        ),
        (_, true) => ("物流更新", "{merchant}：订单 {order_id} 有新的物流信息。"),
        (_, false) => (
            "Tracking update",
            "{merchant}: order {order_id} has a tracking update.",
        ),
    }
}

/// What happens next after a delay or exception, by reason: the part of the
/// message that tells the buyer whether they have to do anything.
pub fn next_step(locale: &str, milestone: Milestone, reason: Reason) -> &'static str {
    let zh = locale.starts_with("zh");
    if milestone == Milestone::Incident {
        // Nothing for the buyer to do, and no contact: the reason is the
        // carrier network's, not this parcel's.
        return if zh {
            "我们会持续跟进。"
        } else {
            "We are following it closely."
        };
    }
    if milestone == Milestone::Delayed {
        return match (reason, zh) {
            (Reason::CustomsHold | Reason::CustomsDocuments | Reason::CustomsDuties, true) => {
                "包裹正在清关，有进展我们会第一时间通知您。"
            }
            (Reason::CustomsHold | Reason::CustomsDocuments | Reason::CustomsDuties, false) => {
                "The parcel is clearing customs; we will tell you as soon as it moves."
            }
            (_, true) => "我们正在联系 {carrier} 跟进，无需您操作。",
            (_, false) => "We are following up with {carrier}; no action is needed from you.",
        };
    }
    match (reason, zh) {
        (Reason::Address, true) => "请联系{merchant}确认收货地址，以便快递员再次派送。",
        (Reason::Address, false) => {
            "Please confirm your delivery address with {merchant} so the courier can try again."
        }
        (Reason::RecipientUnreachable | Reason::DeliveryAttemptFailed, true) => {
            "快递员会再次派送，请保持 {contact} 畅通。"
        }
        (Reason::RecipientUnreachable | Reason::DeliveryAttemptFailed, false) => {
            "The courier will try again; please keep {contact} reachable."
        }
        (Reason::Refused | Reason::ReturnToSender | Reason::Intercepted, true) => {
            "包裹将退回{merchant}，客服会就退款或补发联系您。"
        }
        (Reason::Refused | Reason::ReturnToSender | Reason::Intercepted, false) => {
            "The parcel is going back to {merchant}; customer service will contact you about a refund or resend."
        }
        (Reason::Damaged | Reason::Lost, true) => {
            "{merchant}将为您安排补发或退款，客服会通过 {contact} 联系您。"
        }
        (Reason::Damaged | Reason::Lost, false) => {
            "{merchant} will arrange a replacement or refund; customer service will contact you at {contact}."
        }
        (Reason::CustomsHold | Reason::CustomsDocuments | Reason::CustomsDuties, true) => {
            "海关需要补充资料或缴纳税费，客服会通过 {contact} 告知您具体事项。"
        }
        (Reason::CustomsHold | Reason::CustomsDocuments | Reason::CustomsDuties, false) => {
            "Customs needs documents or duties; customer service will contact you at {contact} with what is needed."
        }
        (_, true) => "客服会尽快通过 {contact} 联系您。",
        (_, false) => "Our support team will contact you at {contact}.",
    }
}

/// The "arriving around" sentence for `{eta}`: the most likely delivery day
/// in the buyer's zone, only for a high-confidence prediction — a buyer told
/// a day should get it that day, so a fallback or a changed lane says
/// nothing rather than something likely wrong.
pub fn eta_sentence(
    locale: &str,
    prediction: Option<&trackstream_proto::v1::DeliveryPrediction>,
    zone: chrono_tz::Tz,
) -> String {
    use chrono::Datelike as _;
    let Some(prediction) = prediction
        .filter(|p| p.confidence == trackstream_proto::v1::PredictionConfidence::High as i32)
    else {
        return String::new();
    };
    let Some(at) = prediction
        .most_likely_at
        .as_ref()
        .and_then(trackstream_proto::time::from_proto)
    else {
        return String::new();
    };
    let local = at.with_timezone(&zone);
    if locale.starts_with("zh") {
        format!("预计 {}月{}日送达。", local.month(), local.day())
    } else {
        format!(" Arriving around {}.", local.format("%b %-d"))
    }
}

/// Human text of a reason, for `{reason}`.
pub fn reason_text(locale: &str, reason: Reason, fallback: &str) -> String {
    let zh = locale.starts_with("zh");
    let text = match (reason, zh) {
        (Reason::Address, true) => "地址问题",
        (Reason::Address, false) => "address problem",
        (Reason::Refused, true) => "拒收",
        (Reason::Refused, false) => "refused",
        (Reason::RecipientUnreachable, true) => "联系不上收件人",
        (Reason::RecipientUnreachable, false) => "recipient unreachable",
        (Reason::Damaged, true) => "包裹破损",
        (Reason::Damaged, false) => "damaged",
        (Reason::Lost, true) => "包裹丢失",
        (Reason::Lost, false) => "lost",
        (Reason::Weather, true) => "天气原因",
        (Reason::Weather, false) => "weather",
        (Reason::CustomsHold | Reason::CustomsDocuments | Reason::CustomsDuties, true) => {
            "海关清关"
        }
        (Reason::CustomsHold | Reason::CustomsDocuments | Reason::CustomsDuties, false) => {
            "customs"
        }
        (Reason::DeliveryAttemptFailed, true) => "派送未成功",
        (Reason::DeliveryAttemptFailed, false) => "delivery attempt failed",
        (_, true) if fallback.is_empty() => "物流停滞",
        (_, false) if fallback.is_empty() => "no recent tracking update",
        _ => fallback,
    };
    text.to_owned()
}

/// Renders `milestone` for `merchant_id` in `locale`: a merchant override if
/// configured, else the built-in template of the locale (zh-CN or en).
pub fn render(
    config: &MessagesConfig,
    merchant_id: &str,
    locale: &str,
    milestone: Milestone,
    vars: &Vars<'_>,
) -> Template {
    let name = milestone_name(milestone);
    let template = config
        .overrides
        .get(merchant_id)
        .and_then(|locales| locales.get(locale))
        .and_then(|milestones| milestones.get(&name))
        .cloned()
        .unwrap_or_else(|| {
            let (title, body) = builtin(locale, milestone);
            Template {
                title: title.to_owned(),
                body: body.to_owned(),
            }
        });
    let next = substitute(vars.next, vars, "");
    Template {
        title: substitute(&template.title, vars, &next),
        body: substitute(&template.body, vars, &next),
    }
}

/// Replaces `{name}` placeholders in one pass, so a value that happens to contain
/// `{contact}` (a carrier's location text, say) is never expanded itself.
/// Unknown placeholders are kept as written.
fn substitute(text: &str, vars: &Vars<'_>, next: &str) -> String {
    let count = vars.count.max(1).to_string();
    let mut out = String::with_capacity(text.len() + 64);
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let value = after.find('}').and_then(|close| {
            let value = match &after[..close] {
                "merchant" => vars.merchant,
                "order_id" => vars.order_id,
                "waybill" => vars.waybill,
                "count" => count.as_str(),
                "carrier" => vars.carrier,
                "location" => vars.location,
                "reason" => vars.reason,
                "next" => next,
                "contact" => vars.contact,
                "eta" => vars.eta,
                "delay" => vars.delay,
                _ => return None,
            };
            Some((value, close))
        });
        match value {
            Some((value, close)) => {
                out.push_str(value);
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn renders_builtin_locales_and_merchant_overrides() {
        let mut config = MessagesConfig::default();
        let vars = Vars {
            merchant: "Acme",
            order_id: "O1",
            contact: "138****5678",
            ..Vars::default()
        };
        let zh = render(&config, "m1", "zh-CN", Milestone::OutForDelivery, &vars);
        assert!(
            zh.body.contains("138****5678") && zh.body.contains("O1"),
            "{}",
            zh.body
        );
        let en = render(&config, "m1", "en", Milestone::Delivered, &vars);
        assert_eq!(en.title, "Delivered");
        config.overrides.insert(
            "m1".into(),
            BTreeMap::from([(
                "en".into(),
                BTreeMap::from([(
                    "delivered".into(),
                    Template {
                        title: "Arrived!".into(),
                        body: "{merchant} says hi".into(),
                    },
                )]),
            )]),
        );
        let custom = render(&config, "m1", "en", Milestone::Delivered, &vars);
        assert_eq!(
            (custom.title.as_str(), custom.body.as_str()),
            ("Arrived!", "Acme says hi")
        );
        let other = render(&config, "m2", "en", Milestone::Delivered, &vars);
        assert_eq!(other.title, "Delivered");
    }

    #[test]
    fn substitution_is_one_pass_and_keeps_unknown_placeholders() {
        let vars = Vars {
            merchant: "Acme",
            location: "Locker {contact}",
            contact: "138****5678",
            ..Vars::default()
        };
        assert_eq!(
            substitute("{merchant} at {location} {unknown} {", &vars, ""),
            "Acme at Locker {contact} {unknown} {"
        );
    }

    #[test]
    fn exceptions_say_what_happens_next_for_their_reason() {
        let config = MessagesConfig::default();
        let vars = |reason: Reason| Vars {
            merchant: "Acme",
            order_id: "O1",
            carrier: "sf",
            contact: "j***@example.com",
            reason: "",
            next: next_step("en", Milestone::Exception, reason),
            ..Vars::default()
        };
        let address = render(
            &config,
            "m",
            "en",
            Milestone::Exception,
            &vars(Reason::Address),
        );
        assert!(
            address
                .body
                .contains("confirm your delivery address with Acme"),
            "{}",
            address.body
        );
        let unreachable = render(
            &config,
            "m",
            "en",
            Milestone::Exception,
            &vars(Reason::RecipientUnreachable),
        );
        assert!(
            unreachable.body.contains("keep j***@example.com reachable"),
            "{}",
            unreachable.body
        );
        let delayed = render(
            &config,
            "m",
            "zh-CN",
            Milestone::Delayed,
            &Vars {
                carrier: "sf",
                next: next_step("zh-CN", Milestone::Delayed, Reason::Weather),
                reason: "天气原因",
                ..Vars::default()
            },
        );
        assert!(
            delayed.body.contains("天气原因") && delayed.body.contains("联系 sf 跟进"),
            "{}",
            delayed.body
        );
    }

    #[test]
    fn milestone_names_round_trip() {
        for milestone in MILESTONES {
            assert_eq!(
                milestone_from_name(&milestone_name(milestone)),
                Some(milestone)
            );
        }
        assert_eq!(
            milestone_from_name(" Out_For_Delivery "),
            Some(Milestone::OutForDelivery)
        );
        assert_eq!(milestone_from_name("nope"), None);
    }
}
