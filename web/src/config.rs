//! `[web]`: the HTTP listener that serves the tracking page, the console and
//! the JSON API, and the secrets behind buyer links.
//!
//! Absent from a notifier's config, no HTTP listener runs and buyer messages
//! carry no link (a deployment that has not chosen its public address yet).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use trackstream_runtime::config::{ListenerLimits, duration};

/// Shortest accepted `link_secret` / `phone_pepper`: 32 bytes, the HMAC-SHA256
/// block strength, so neither can be found by guessing.
pub const MIN_SECRET_BYTES: usize = 32;

/// The web listener and buyer links.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebConfig {
    /// Listen address. Default `127.0.0.1:8090`.
    pub listen: String,
    /// The address buyers reach the pages at, without a trailing slash; buyer
    /// messages link to `{public_url}/t/{token}`. Default `http://127.0.0.1:8090`.
    pub public_url: String,
    /// Signs buyer links (HMAC-SHA256). At least 32 bytes; required.
    pub link_secret: String,
    /// Earlier link secrets still accepted (not used to sign), so a rotation
    /// does not break the links already sent. Default none.
    pub previous_link_secrets: Vec<String>,
    /// Keys the buyer index: a buyer is found by HMAC-SHA256(pepper, normalized
    /// phone), never by the phone itself, and without the pepper the 10^11
    /// phone numbers cannot be tried offline against a leaked index. At least 32
    /// bytes; required; changing it orphans the index until orders are
    /// registered again (see docs/PRIVACY.md).
    pub phone_pepper: String,
    /// How long a link in a buyer message opens the page. Default `30d`.
    #[serde(with = "duration")]
    pub link_ttl: Duration,
    /// How long the link a lookup by order number hands out lasts. Default `1h`.
    #[serde(with = "duration")]
    pub lookup_ttl: Duration,
    /// Lookups one client address may try per `lookup_window`. Default 20.
    pub lookups_per_client: u32,
    /// Lookups of one order (any client) per `lookup_window`, so the 10 000
    /// possible last-4 digits cannot be walked from many addresses. Default 5.
    pub lookups_per_order: u32,
    /// The rate-limit window. Default `15m`.
    #[serde(with = "duration")]
    pub lookup_window: Duration,
    /// The header carrying the client address when a trusted proxy sits in
    /// front (its first comma-separated entry), e.g. `x-forwarded-for`. Unset
    /// (the default), the connection's peer address is the client: a header a
    /// client could set itself must not decide its rate limit.
    pub client_ip_header: Option<String>,
    /// Orders one buyer link shows (newest registration first). Default 20.
    pub max_orders_per_link: usize,
    /// Shop logos, merchant id → image file (PNG, JPEG, WebP or SVG, at most
    /// 256 KiB), read at startup. A shop without one gets its initial.
    pub logos: BTreeMap<String, PathBuf>,
    /// Comment lines on idle event streams, so proxies keep them open. Default `15s`.
    #[serde(with = "duration")]
    pub keep_alive: Duration,
    /// Connection hygiene of the listener (`[web.limits]`: header-read, idle and
    /// request timeouts, connection cap; an open event stream is a request in
    /// progress, not idle). Default: the listener defaults with
    /// `max_connections` 10 000, since every open page holds one connection.
    pub limits: ListenerLimits,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            listen: "127.0.0.1:8090".into(),
            public_url: "http://127.0.0.1:8090".into(),
            link_secret: String::new(),
            previous_link_secrets: Vec::new(),
            phone_pepper: String::new(),
            link_ttl: Duration::from_secs(30 * 86_400),
            lookup_ttl: Duration::from_secs(3_600),
            lookups_per_client: 20,
            lookups_per_order: 5,
            lookup_window: Duration::from_secs(15 * 60),
            client_ip_header: None,
            max_orders_per_link: 20,
            logos: BTreeMap::new(),
            keep_alive: Duration::from_secs(15),
            limits: ListenerLimits {
                max_connections: 10_000,
                ..ListenerLimits::default()
            },
        }
    }
}

impl std::fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebConfig")
            .field("listen", &self.listen)
            .field("public_url", &self.public_url)
            .field("link_secret", &"<redacted>")
            .field("previous_link_secrets", &self.previous_link_secrets.len())
            .field("phone_pepper", &"<redacted>")
            .field("link_ttl", &self.link_ttl)
            .field("lookup_ttl", &self.lookup_ttl)
            .field("lookups_per_client", &self.lookups_per_client)
            .field("lookups_per_order", &self.lookups_per_order)
            .field("lookup_window", &self.lookup_window)
            .field("client_ip_header", &self.client_ip_header)
            .field("max_orders_per_link", &self.max_orders_per_link)
            .field("logos", &self.logos)
            .field("keep_alive", &self.keep_alive)
            .field("limits", &self.limits)
            .finish()
    }
}

impl WebConfig {
    /// Checks the secrets, naming the key (never the value).
    pub fn validate(&self) -> Result<(), String> {
        let secrets = [
            ("web.link_secret", &self.link_secret),
            ("web.phone_pepper", &self.phone_pepper),
        ]
        .into_iter()
        .chain(
            self.previous_link_secrets
                .iter()
                .map(|s| ("web.previous_link_secrets[]", s)),
        );
        for (key, secret) in secrets {
            if secret.len() < MIN_SECRET_BYTES {
                return Err(format!(
                    "{key} is {} bytes; it needs at least {MIN_SECRET_BYTES}",
                    secret.len()
                ));
            }
        }
        if self.link_secret == self.phone_pepper {
            return Err("web.phone_pepper must differ from web.link_secret".into());
        }
        if !(self.public_url.starts_with("http://") || self.public_url.starts_with("https://")) {
            return Err("web.public_url must start with http:// or https://".into());
        }
        Ok(())
    }

    /// `public_url` without a trailing slash.
    pub fn base_url(&self) -> &str {
        self.public_url.trim_end_matches('/')
    }
}
