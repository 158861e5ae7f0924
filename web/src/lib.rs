//! web — the face of trackstream a browser sees: the buyer tracking page, the
//! order lookup, the merchant console, and the HTTP JSON API with
//! Server-Sent Events they run on (docs/WEB.md).
//!
//! The crate holds what is particular to browsers and nothing of the pipeline:
//! - [`links`] signs and checks buyer links and keys buyers by their phone;
//! - [`view`] turns the gRPC messages into the JSON shapes pages read;
//! - [`api`] the routes (buyer, lookup, merchant), [`sse`] the event streams,
//!   [`assets`] the pages and files compiled in and the security headers;
//! - [`backend::Backend`] is what it needs from its host. The notifier hosts it
//!   (`[web]` in its config) over the same Redis reads, live hubs and quotas as
//!   its gRPC API, so a page and a gRPC client see an order the same way.
//!
//! Errors are `trackstream_runtime::ApiError`, mapped to HTTP once, there.
#![forbid(unsafe_code)]

pub mod api;
pub mod assets;
pub mod backend;
pub mod config;
pub mod links;
pub mod sse;
pub mod view;

use std::net::SocketAddr;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use trackstream_runtime::{ApiError, CancellationToken};

pub use backend::Backend;
pub use config::WebConfig;
pub use links::Links;

/// The web face's state: its host, its links and its settings.
pub struct Web<B> {
    /// The host service.
    pub backend: B,
    /// Link signing and buyer keys.
    pub links: Links,
    /// Settings.
    pub config: WebConfig,
    /// Shop logos.
    pub logos: assets::Logos,
    /// Metrics.
    pub metrics: Metrics,
}

impl<B: Backend> Web<B> {
    /// The web face over `backend`; fails on bad secrets or logo files.
    pub fn new(backend: B, config: WebConfig, registry: &mut Registry) -> Result<Self, String> {
        config.validate()?;
        let logos = assets::Logos::load(&config.logos)?;
        let metrics = Metrics::default();
        metrics.register(registry);
        Ok(Web {
            backend,
            links: Links::new(&config),
            config,
            logos,
            metrics,
        })
    }

    /// The link `token` stands for now; a refusal is logged and counted.
    pub fn verify(&self, token: &str) -> Result<links::Link, ApiError> {
        self.links
            .verify(token, chrono::Utc::now().timestamp())
            .inspect_err(|err| {
                tracing::info!(kind = err.kind(), "buyer link refused");
                self.metrics
                    .links_refused
                    .get_or_create(&KindLabel {
                        kind: err.kind().to_owned(),
                    })
                    .inc();
            })
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

/// The web face's metrics (each also logged where it happens).
#[derive(Clone, Default)]
pub struct Metrics {
    links_refused: Family<KindLabel, Counter>,
    lookups: Family<KindLabel, Counter>,
    searches: Family<KindLabel, Counter>,
    /// Event streams opened (buyer orders and console alerts).
    pub streams: Counter,
}

impl Metrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "web_links_refused",
            "Buyer links refused, by kind (link_invalid, link_expired)",
            self.links_refused.clone(),
        );
        registry.register(
            "web_lookups",
            "Order lookups by number and last 4 digits, by outcome",
            self.lookups.clone(),
        );
        registry.register(
            "web_searches",
            "Console searches, by what the query matched (order, waybill, phone, none)",
            self.searches.clone(),
        );
        registry.register(
            "web_streams",
            "Server-Sent Event streams opened",
            self.streams.clone(),
        );
    }

    fn lookup(&self, outcome: &str) {
        self.lookups
            .get_or_create(&KindLabel {
                kind: outcome.to_owned(),
            })
            .inc();
    }

    fn search(&self, kind: &str) {
        self.searches
            .get_or_create(&KindLabel {
                kind: kind.to_owned(),
            })
            .inc();
    }
}

/// Binds `web.config.listen` and serves until `shutdown` on the runtime's
/// listener (header-read, idle and request timeouts, a connection cap; the
/// client address as `ConnectInfo`); returns the bound address.
pub async fn serve<B: Backend>(
    web: Arc<Web<B>>,
    shutdown: CancellationToken,
) -> Result<SocketAddr, trackstream_runtime::Error> {
    let listen = web.config.listen.clone();
    let limits = web.config.limits.clone();
    limits.validate()?;
    trackstream_runtime::admin::serve_router_with(&listen, api::router(web), &limits, shutdown)
        .await
}
