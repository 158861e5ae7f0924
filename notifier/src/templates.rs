//! Milestones and their messages, in zh-CN and en, with per-merchant overrides.

use trackstream_proto::v1::{Milestone, Reason, Status};

use crate::config::{MessagesConfig, Template};

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

/// Values substituted into templates. `contact` is already masked.
#[derive(Debug, Default)]
pub struct Vars<'a> {
    /// Merchant display name.
    pub merchant: &'a str,
    /// Order id.
    pub order_id: &'a str,
    /// Waybill(s).
    pub waybill: &'a str,
    /// Carrier code.
    pub carrier: &'a str,
    /// Location text (pickup point for AVAILABLE_FOR_PICKUP).
    pub location: &'a str,
    /// Reason text (delays and exceptions).
    pub reason: &'a str,
    /// Masked contact.
    pub contact: &'a str,
}

fn builtin(locale: &str, milestone: Milestone) -> (&'static str, &'static str) {
    let zh = locale.starts_with("zh");
    match (milestone, zh) {
        (Milestone::Shipped, true) => (
            "您的包裹已发出",
            "{merchant}：订单 {order_id} 已由 {carrier} 揽收，运单号 {waybill}。",
        ),
        (Milestone::Shipped, false) => (
            "Your parcel is on its way",
            "{merchant}: order {order_id} was picked up by {carrier}, waybill {waybill}.",
        ),
        (Milestone::OutForDelivery, true) => (
            "包裹正在派送",
            "{merchant}：订单 {order_id} 今天派送中，请保持电话 {contact} 畅通。",
        ),
        (Milestone::OutForDelivery, false) => (
            "Out for delivery",
            "{merchant}: order {order_id} is out for delivery today; we'll reach you at {contact}.",
        ),
        (Milestone::AvailableForPickup, true) => (
            "包裹待取件",
            "{merchant}：订单 {order_id} 已到 {location}，请尽快取件。",
        ),
        (Milestone::AvailableForPickup, false) => (
            "Ready for pickup",
            "{merchant}: order {order_id} is waiting at {location}. Please collect it soon.",
        ),
        (Milestone::Delivered, true) => (
            "包裹已签收",
            "{merchant}：订单 {order_id} 已签收，感谢您的购买。",
        ),
        (Milestone::Delivered, false) => (
            "Delivered",
            "{merchant}: order {order_id} was delivered. Thank you for your purchase.",
        ),
        (Milestone::Delayed, true) => (
            "包裹可能延误",
            "{merchant}：订单 {order_id} 的物流更新有延迟（{reason}），我们正在联系 {carrier} 跟进，无需您操作。",
        ),
        (Milestone::Delayed, false) => (
            "Your parcel may be delayed",
            "{merchant}: order {order_id} is delayed ({reason}). We are following up with {carrier}; no action is needed from you.",
        ),
        (Milestone::Exception, true) => (
            "包裹派送异常",
            "{merchant}：订单 {order_id} 派送遇到问题（{reason}），客服会尽快联系您 {contact}。",
        ),
        (Milestone::Exception, false) => (
            "Delivery problem",
            "{merchant}: order {order_id} ran into a problem ({reason}). Our support team will contact you at {contact}.",
        ),
        (_, true) => ("物流更新", "{merchant}：订单 {order_id} 有新的物流信息。"),
        (_, false) => (
            "Tracking update",
            "{merchant}: order {order_id} has a tracking update.",
        ),
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
    let name = milestone
        .as_str_name()
        .trim_start_matches("MILESTONE_")
        .to_ascii_lowercase();
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
    Template {
        title: substitute(&template.title, vars),
        body: substitute(&template.body, vars),
    }
}

fn substitute(text: &str, vars: &Vars<'_>) -> String {
    text.replace("{merchant}", vars.merchant)
        .replace("{order_id}", vars.order_id)
        .replace("{waybill}", vars.waybill)
        .replace("{carrier}", vars.carrier)
        .replace("{location}", vars.location)
        .replace("{reason}", vars.reason)
        .replace("{contact}", vars.contact)
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
}
