//! The notifier's side of the web face (`trackstream-web`): the indexes it
//! keeps for it ([`index`]), the link every buyer message carries
//! ([`MessageLinks`]), and the [`backend::NotifierBackend`] that answers the
//! pages over the same reads, hubs and quotas as the gRPC API.

pub mod backend;
pub mod deadletters;
pub mod index;

use chrono::{DateTime, Utc};
use trackstream_proto::v1::{BuyerContact, Shipment};
use trackstream_web::links::{Link, Scope};
use trackstream_web::{Links, WebConfig};

pub use index::WebIndex;

/// What the messenger needs of the web face: where the page is, how long a
/// link lasts, and the indexes to keep.
#[derive(Clone)]
pub struct MessageLinks {
    /// The indexes (and the link signer).
    pub index: WebIndex,
    base_url: String,
    ttl_secs: i64,
}

impl MessageLinks {
    /// From `[web]` and the indexes.
    pub fn new(config: &WebConfig, index: WebIndex) -> Self {
        MessageLinks {
            index,
            base_url: config.base_url().to_owned(),
            ttl_secs: i64::try_from(config.link_ttl.as_secs()).unwrap_or(i64::MAX / 2),
        }
    }

    /// The signer.
    pub fn links(&self) -> &Links {
        self.index.links()
    }

    /// The page link for a message about `shipment`'s order to `buyer`, created
    /// at `created` (it lasts `link_ttl` from then, so rendering the same
    /// message twice gives the same link): all of that buyer's orders in the
    /// shop when the buyer has a contact, else the order alone; "" when no
    /// link can be signed.
    pub fn tracking_url(
        &self,
        shipment: &Shipment,
        buyer: Option<&BuyerContact>,
        created: DateTime<Utc>,
    ) -> String {
        let scope = buyer
            .and_then(|b| self.links().buyer_key(&b.phone, &b.email))
            .map_or_else(|| Scope::Order(shipment.order_id.clone()), Scope::Buyer);
        self.links()
            .sign(&Link {
                merchant_id: shipment.merchant_id.clone(),
                scope,
                expires_at: created.timestamp().saturating_add(self.ttl_secs),
            })
            .map_or_else(String::new, |token| format!("{}/t/{token}", self.base_url))
    }
}

/// `body` with the tracking-page link as its last line, in the message's
/// language (unchanged without a link).
pub fn with_link(body: &str, locale: &str, url: &str) -> String {
    if url.is_empty() {
        return body.to_owned();
    }
    let label = if locale.starts_with("zh") {
        "查看物流："
    } else {
        "Track your order: "
    };
    format!("{body}\n{label}{url}")
}
