//! What a Chinese trace's free text says when no code does: the pickup.
//!
//! Kdniao traces carry a code only in `Action`, and Kuaidi100 subscriptions
//! without `resultv2` send traces with neither `statusCode` nor `status`: the
//! trace "【广州市】顺丰速运 已收取快件" would otherwise be `IN_TRANSIT`, and the
//! parcel's timeline, the no-pickup rule and the buyer's "shipped" message would
//! miss the pickup. Both adapters ask [`is_pickup`] for a trace no code
//! classifies; a code always wins. Only the pickup is read from text: it is the
//! one milestone both aggregators leave uncoded in practice, and its wording is
//! narrow, so the classifier can be strict.
//!
//! The text is a pickup when it says the carrier took the parcel in — 揽收,
//! 揽件, 收件 (已收件, 收件员), 已收取 (快件), 收寄 (China Post) — and does not say
//! something else that shares those characters:
//!
//! - delivery: 签收 / 已签收, 代收 (collected on the recipient's behalf, at a
//!   station or locker), 妥投, 投递, 派件, 派送;
//! - not picked up (yet): 待揽, 未揽, 等待揽, 揽收失败, 取消 (cancelled);
//! - returns and refusals: 退回, 退件, 拒收;
//! - the recipient and their address: 收件人, 收件地址, 收件方, 收件信息 (removed
//!   before the match, so "收件人已签收" is still a delivery and "收件人: 张三"
//!   alone says nothing).
//!
//! Matching is on the text with ASCII and full-width spaces removed, so
//! "已 揽 收" reads like "已揽收". The classifier never changes an event's raw
//! code, so the event id (which hashes the raw code, not the status) is the
//! same whatever it decides, and a resent trace is still a duplicate.

/// Phrases that name the recipient or their address; removed before matching,
/// since they contain 收件 without meaning a pickup.
const RECIPIENT: &[&str] = &["收件人", "收件地址", "收件方", "收件信息"];

/// Phrases that make the trace something other than a pickup.
const NOT_PICKUP: &[&str] = &[
    "签收",
    "代收",
    "妥投",
    "投递",
    "派件",
    "派送",
    "待揽",
    "未揽",
    "等待揽",
    "失败",
    "取消",
    "退回",
    "退件",
    "拒收",
];

/// Phrases that say the carrier took the parcel in.
const PICKUP: &[&str] = &["揽收", "揽件", "已收取", "收件", "收寄"];

/// Whether a trace's text says the parcel was picked up (see the module doc).
pub fn is_pickup(text: &str) -> bool {
    let mut compact: String = text
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '\u{3000}')
        .collect();
    if NOT_PICKUP.iter().any(|p| compact.contains(p)) {
        return false;
    }
    for phrase in RECIPIENT {
        compact = compact.replace(phrase, "|");
    }
    PICKUP.iter().any(|p| compact.contains(p))
}

#[cfg(test)]
mod tests {
    use super::is_pickup;

    #[test]
    fn pickup_wordings_of_the_common_carriers_are_pickups() {
        for text in [
            "【广州市】顺丰速运 已收取快件",
            "【广东省深圳市宝安区公司】 已揽收",
            "【杭州市】快递员 张三 已揽件",
            "您的快件已被【上海浦东营业部】揽收",
            "【北京朝阳营业点】的收件员 李四 已收件",
            "【北京市邮政速递揽投部】已收寄，揽投员：王五",
            "已 揽 收",
            "顺丰速运\u{3000}已收取快件",
        ] {
            assert!(is_pickup(text), "{text}");
        }
    }

    #[test]
    fn delivery_waiting_refusal_and_the_recipient_are_not_pickups() {
        for text in [
            "您的快件已签收，签收人凭取货码签收。",
            "已签收,签收人是:收件人本人",
            "快件已由【菜鸟驿站】代收，请及时取件",
            "您的快件已被【丰巢智能柜】代收件",
            "【北京市邮政速递揽投部】已妥投",
            "【深圳宝安】快递员正在派件",
            "快件正在派送途中，收件人：张三",
            "待揽收",
            "等待揽件",
            "揽收失败，已联系寄件人",
            "订单已取消，未揽收",
            "快件已退回，退件原因：收件人拒收",
            "收件人：张三 13800000000",
            "收件地址：广东省深圳市",
            "快件已从【广州转运中心】发出，下一站【深圳】",
            "快件已到达【深圳转运中心】",
            "",
        ] {
            assert!(!is_pickup(text), "{text}");
        }
    }
}
