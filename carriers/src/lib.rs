//! Carrier and aggregator push formats, behind one small trait.
//!
//! Every provider (Kdniao, Kuaidi100, 17TRACK, AfterShip, EasyPost and our own
//! generic JSON) is one module implementing [`ProviderAdapter`]: verify the push's
//! signature, split it into one item per waybill (ingest), and later turn a stored
//! item into canonical [`TrackingEvent`]s (normalize). Everything a provider module
//! needs but does not own lives beside it:
//!
//! - [`signature`] — constant-time comparisons and the digests providers sign with;
//! - [`time`] — zone-less, offset and UTC time parsing that records how the zone
//!   was known;
//! - [`event`] — the canonical event builder and the stable event id;
//! - [`carrier_code`] — aliases of carrier codes across aggregators;
//! - [`area`] — the province and city of Chinese location text and admin codes
//!   (Kdniao, Kuaidi100), for per-region statistics;
//! - [`cn_text`] — the pickup read from a Chinese trace's text when no code says
//!   otherwise (Kdniao, Kuaidi100);
//! - [`outbound`] — a push built as its provider sends it (`trackstream push`, fuzzing);
//! - [`settings`] — per-provider secrets and defaults, deserialized from config;
//! - [`error`] — the two error types (push rejected / record unparseable).
//!
//! Adding a provider is one module plus its tests: see `docs/ADDING_A_CARRIER.md`.
#![forbid(unsafe_code)]

pub mod area;
pub mod carrier_code;
pub mod cn_text;
pub mod error;
pub mod event;
pub mod form;
pub mod lenient;
pub mod outbound;
pub mod settings;
pub mod signature;
pub mod time;

pub mod aftership;
pub mod easypost;
pub mod generic;
pub mod kdniao;
pub mod kuaidi100;
pub mod seventeen_track;

use std::collections::BTreeMap;

pub use error::{NormalizeError, PushError};
pub use settings::{AccountSecret, ProviderSettings};
use trackstream_proto::v1::{Provider, RawScan, TrackingEvent};

/// An HTTP push as ingest received it, reduced to what adapters need. Header names
/// are lowercase.
#[derive(Debug, Clone, Copy)]
pub struct PushRequest<'a> {
    /// Request headers, names lowercased.
    pub headers: &'a BTreeMap<String, String>,
    /// Query parameters of the callback URL (Kuaidi100 echoes them back).
    pub query: &'a BTreeMap<String, String>,
    /// The raw body, exactly as received: signatures are computed over these bytes.
    pub body: &'a [u8],
}

impl PushRequest<'_> {
    /// A header value by lowercase name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// One waybill's share of a verified push, ready to become a `scans.raw` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushItem {
    /// Canonical carrier code (see [`carrier_code::canonical`]).
    pub carrier: String,
    /// The waybill (tracking number) as the carrier prints it.
    pub waybill: String,
    /// The exact provider bytes for this waybill (batch items are not re-serialized).
    pub payload: Vec<u8>,
    /// Envelope fields the item needs to be understood alone.
    pub envelope: BTreeMap<String, String>,
}

/// A push whose signature checked out, split by waybill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedPush {
    /// The account whose secret verified the signature ("" when unsigned is allowed).
    pub account: String,
    /// One item per waybill, in push order.
    pub items: Vec<PushItem>,
}

/// What ingest did with a push, for the adapter to phrase in its provider's terms.
#[derive(Debug, Clone, Copy)]
pub enum Outcome<'a> {
    /// Every item was acknowledged by Kafka.
    Accepted {
        /// The verified account.
        account: &'a str,
        /// How many waybill items were written.
        items: usize,
    },
    /// The push was refused; `status` is the HTTP status ingest will send.
    Rejected {
        /// HTTP status code.
        status: u16,
        /// Why, safe to show to the provider.
        reason: &'a str,
    },
}

/// The HTTP body a provider expects back. The status code is ingest's decision; the
/// body is the provider's dialect, because some providers decide whether to retry
/// by reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// `Content-Type` of `body`.
    pub content_type: &'static str,
    /// The body bytes.
    pub body: Vec<u8>,
}

impl Reply {
    /// Our own JSON dialect: `{"accepted": n}`, or `{"error": kind, "reason": text}`
    /// with the same kinds ingest uses for its own errors.
    pub fn json_default(outcome: Outcome<'_>) -> Self {
        let value = match outcome {
            Outcome::Accepted { items, .. } => serde_json::json!({ "accepted": items }),
            Outcome::Rejected { status, reason } => {
                serde_json::json!({ "error": error_kind(status), "reason": reason })
            }
        };
        Reply {
            content_type: "application/json",
            body: value.to_string().into_bytes(),
        }
    }
}

/// The machine-readable error kind of an HTTP status, as ingest names it.
pub fn error_kind(status: u16) -> &'static str {
    match status {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        408 => "request_timeout",
        409 => "conflict",
        413 => "payload_too_large",
        422 => "unprocessable",
        503 => "unavailable",
        _ => "error",
    }
}

/// One provider's push format. Implementations are pure (no I/O), never panic on
/// any input, and keep all provider knowledge in their own module.
pub trait ProviderAdapter: Send + Sync + 'static {
    /// The provider this adapter speaks for.
    fn provider(&self) -> Provider;

    /// The route segment: `POST /v1/webhooks/{route}`.
    fn route(&self) -> &'static str;

    /// Verifies the push's signature against the configured accounts (constant
    /// time) and splits it into one item per waybill. Nothing may be written for a
    /// push this rejects.
    fn accept(
        &self,
        request: &PushRequest<'_>,
        settings: &ProviderSettings,
    ) -> Result<VerifiedPush, PushError>;

    /// The body to answer the provider with.
    fn reply(&self, outcome: Outcome<'_>) -> Reply {
        Reply::json_default(outcome)
    }

    /// Turns one stored item into canonical events. Unknown provider codes are kept
    /// (raw code and text, a safe status, reason `UNKNOWN`), never dropped.
    fn normalize(
        &self,
        raw: &RawScan,
        settings: &ProviderSettings,
    ) -> Result<Vec<TrackingEvent>, NormalizeError>;
}

/// Every adapter trackstream ships, looked up by route or by provider.
pub struct Registry {
    adapters: Vec<Box<dyn ProviderAdapter>>,
}

impl Registry {
    /// All built-in providers.
    pub fn builtin() -> Self {
        Registry {
            adapters: vec![
                Box::new(generic::Generic),
                Box::new(kdniao::Kdniao),
                Box::new(kuaidi100::Kuaidi100),
                Box::new(seventeen_track::SeventeenTrack),
                Box::new(aftership::Aftership),
                Box::new(easypost::Easypost),
            ],
        }
    }

    /// The adapter serving `POST /v1/webhooks/{route}`.
    pub fn by_route(&self, route: &str) -> Option<&dyn ProviderAdapter> {
        self.adapters
            .iter()
            .find(|a| a.route() == route)
            .map(AsRef::as_ref)
    }

    /// The adapter that understands records of `provider`.
    pub fn by_provider(&self, provider: Provider) -> Option<&dyn ProviderAdapter> {
        self.adapters
            .iter()
            .find(|a| a.provider() == provider)
            .map(AsRef::as_ref)
    }

    /// All adapters, for listing routes and per-provider metrics.
    pub fn iter(&self) -> impl Iterator<Item = &dyn ProviderAdapter> {
        self.adapters.iter().map(AsRef::as_ref)
    }
}
