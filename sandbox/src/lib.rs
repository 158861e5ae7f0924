//! The whole-cluster sandbox: a trackstream cluster in one process — real
//! Redis and broker as child processes (from `trackstream-testkit`), topics
//! created, the four services running as tasks — with configs tests can tweak
//! before the services start.
//!
//! Test-only, as quickwit keeps its integration tests: this crate depends on
//! every service, and nothing but tests, benchmarks and the demo depends on
//! it. Its `tests/` hold what needs the whole pipeline (end to end, every
//! provider through every stage, the security suite, the public routes'
//! property test, WatchOrder across the pipeline); each service's own tests
//! use only the test kit.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::time::Duration;

use trackstream_carriers::{AccountSecret, ProviderSettings};
use trackstream_proto::topics;
use trackstream_proto::v1::tracking_service_client::TrackingServiceClient;
use trackstream_runtime::CancellationToken;

use trackstream_testkit::kafka::TopicReader;
use trackstream_testkit::processes::{Broker, RedisServer};
use trackstream_testkit::services::Services;

/// The buyer-link secret of sandbox configs (tests sign links with it, e.g.
/// an expired one).
pub const WEB_LINK_SECRET: &str = "sandbox-link-secret-0123456789abcdef";
/// The phone pepper of sandbox configs.
pub const WEB_PHONE_PEPPER: &str = "sandbox-phone-pepper-0123456789abcdef";

/// The notifier's `[web]` in sandbox configs (a second notifier a test starts
/// uses it too, so both sign the same links).
pub fn web_config() -> trackstream_web::WebConfig {
    trackstream_web::WebConfig {
        listen: "127.0.0.1:0".into(),
        // The port is known only once bound: tests take a message link's
        // path and open it on `Sandbox::web_addr`.
        public_url: "http://sandbox.invalid".into(),
        link_secret: WEB_LINK_SECRET.into(),
        phone_pepper: WEB_PHONE_PEPPER.into(),
        ..trackstream_web::WebConfig::default()
    }
}

/// Secret of the generic webhook in sandbox configs.
pub const GENERIC_SECRET: &str = "generic-secret";
pub use trackstream_testkit::merchants::{ACME_TOKEN, OTHER_TOKEN};

/// The four services' configs, pointed at the sandbox's Redis and broker; tests
/// adjust them before the services start.
pub struct Configs {
    /// Partitions of every topic.
    pub partitions: i32,
    /// ingest.
    pub ingest: trackstream_ingest::Config,
    /// normalize.
    pub normalize: trackstream_normalize::Config,
    /// detector.
    pub detector: trackstream_detector::Config,
    /// notifier.
    pub notifier: trackstream_notifier::Config,
}

impl Configs {
    fn new(bootstrap: &str, redis_url: &str) -> Self {
        let merchants = trackstream_testkit::merchants::two_merchants();
        let mut kafka = trackstream_runtime::config::KafkaConfig {
            brokers: bootstrap.to_owned(),
            batch_linger: Duration::from_millis(2),
            produce_timeout: Duration::from_secs(5),
            ..Default::default()
        };
        kafka
            .extra
            .insert("topic.metadata.refresh.interval.ms".into(), "2000".into());
        let redis = trackstream_runtime::config::RedisConfig {
            url: redis_url.to_owned(),
            cluster_nodes: Vec::new(),
        };
        let admin = trackstream_runtime::config::AdminConfig {
            log_format: "pretty".into(),
            log_level: "warn".into(),
            ..Default::default()
        };
        let mut ingest = trackstream_ingest::Config::default();
        ingest.http.listen = "127.0.0.1:0".into();
        ingest.kafka = kafka.clone();
        ingest.redis = redis.clone();
        ingest.admin = admin.clone();
        ingest.merchants = merchants.clone();
        ingest.providers.insert(
            "generic".into(),
            ProviderSettings {
                secrets: vec![AccountSecret {
                    account: "sandbox".into(),
                    secret: GENERIC_SECRET.into(),
                }],
                ..Default::default()
            },
        );
        let normalize = trackstream_normalize::Config {
            kafka: kafka.clone(),
            admin: admin.clone(),
            ..Default::default()
        };
        let mut detector = trackstream_detector::Config {
            kafka: kafka.clone(),
            redis: redis.clone(),
            admin: admin.clone(),
            ..Default::default()
        };
        detector.timers.tick = Duration::from_millis(100);
        // Tests push whole scenarios at once; a short grace keeps stall tests quick.
        detector.timers.grace = Duration::from_secs(1);
        let mut notifier = trackstream_notifier::Config {
            kafka,
            redis,
            admin,
            merchants,
            ..Default::default()
        };
        notifier.grpc.listen = "127.0.0.1:0".into();
        notifier.web = Some(web_config());
        Configs {
            partitions: 4,
            ingest,
            normalize,
            detector,
            notifier,
        }
    }
}

/// A running sandbox. Dropping it stops the services, then kills the
/// servers; [`Sandbox::shutdown`] does the same and fails the test if a
/// service failed or did not stop.
pub struct Sandbox {
    /// The four services; first, so they stop (on drop too) before Redis and
    /// the broker are killed.
    services: Services,
    /// The Redis server.
    pub redis: RedisServer,
    /// The broker.
    pub broker: Broker,
    /// ingest's public HTTP address.
    pub ingest_addr: SocketAddr,
    /// ingest's admin address (`/healthz`, `/metrics`; not served on the public one).
    pub ingest_admin_addr: SocketAddr,
    /// The notifier's gRPC address.
    pub grpc_addr: SocketAddr,
    /// The notifier's web face (tracking page, console, HTTP API), when
    /// `notifier.web` is configured (it is by default).
    pub web_addr: Option<SocketAddr>,
    http: reqwest::Client,
}

impl Sandbox {
    /// Starts everything with sandbox defaults.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts everything, letting `customize` adjust the configs first.
    pub async fn start_with(customize: impl FnOnce(&mut Configs)) -> Self {
        let broker = Broker::start().await.unwrap_or_else(|e| panic!("{e}"));
        Self::start_on(broker, customize).await
    }

    /// Like [`Sandbox::start_with`], on a durable (SQLite) broker that tests
    /// can SIGKILL and restart on the same data ([`Broker::kill`],
    /// [`Broker::restart`]).
    pub async fn start_durable_with(customize: impl FnOnce(&mut Configs)) -> Self {
        let broker = Broker::start_durable()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        Self::start_on(broker, customize).await
    }

    async fn start_on(broker: Broker, customize: impl FnOnce(&mut Configs)) -> Self {
        let redis = RedisServer::start().await.unwrap_or_else(|e| panic!("{e}"));
        let mut configs = Configs::new(&broker.bootstrap(), &redis.url());
        customize(&mut configs);
        trackstream_runtime::telemetry::init_tracing(&configs.ingest.admin);
        let partitions = configs.partitions;
        let topics: Vec<(&str, i32)> = topics::ALL.iter().map(|t| (*t, partitions)).collect();
        trackstream_testkit::kafka::create_topics(&broker.bootstrap(), &topics)
            .await
            .unwrap_or_else(|e| panic!("creating topics: {e}"));

        let shutdown = CancellationToken::new();
        let ingest = trackstream_ingest::start(configs.ingest, shutdown.clone())
            .await
            .unwrap_or_else(|e| panic!("ingest: {e}"));
        let normalize = trackstream_normalize::start(configs.normalize, shutdown.clone())
            .await
            .unwrap_or_else(|e| panic!("normalize: {e}"));
        let detector = trackstream_detector::start(configs.detector, shutdown.clone())
            .await
            .unwrap_or_else(|e| panic!("detector: {e}"));
        let notifier = trackstream_notifier::start(configs.notifier, shutdown.clone())
            .await
            .unwrap_or_else(|e| panic!("notifier: {e}"));
        Sandbox {
            redis,
            broker,
            ingest_addr: ingest.http_addr,
            ingest_admin_addr: ingest.admin_addr,
            grpc_addr: notifier.grpc_addr,
            web_addr: notifier.web_addr,
            services: Services::new(
                shutdown,
                vec![ingest.task, normalize.task, detector.task, notifier.task],
            ),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap_or_else(|e| panic!("http client: {e}")),
        }
    }

    /// The broker's bootstrap address.
    pub fn bootstrap(&self) -> String {
        self.broker.bootstrap()
    }

    /// A reader of `topic` from its beginning.
    pub fn reader(&self, topic: &str) -> TopicReader {
        TopicReader::new(&self.bootstrap(), topic)
    }

    /// POSTs `body` to ingest at `path` with `headers`; returns status and JSON body.
    pub async fn post(
        &self,
        path: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> (u16, serde_json::Value) {
        let mut request = self
            .http
            .post(format!("http://{}{path}", self.ingest_addr))
            .body(body);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        )
    }

    /// POSTs generic-format scans, signed with the sandbox secret.
    pub async fn post_generic(&self, scans: &serde_json::Value) -> (u16, serde_json::Value) {
        let body = scans.to_string().into_bytes();
        let signature = trackstream_carriers::generic::sign(&body, GENERIC_SECRET);
        self.post(
            "/v1/webhooks/generic",
            &[("x-trackstream-signature", signature)],
            body,
        )
        .await
    }

    /// POSTs generic-format scans signed with `secret` as provider account
    /// `account` (one configured in `providers.generic` by the test, e.g. an
    /// account bound to merchants).
    pub async fn post_generic_as(
        &self,
        account: &str,
        secret: &str,
        scans: &serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let body = scans.to_string().into_bytes();
        let signature = trackstream_carriers::generic::sign(&body, secret);
        self.post(
            "/v1/webhooks/generic",
            &[
                ("x-trackstream-signature", signature),
                ("x-trackstream-account", account.to_owned()),
            ],
            body,
        )
        .await
    }

    /// The merchant that owns `carrier:waybill` according to ingest's claim
    /// in Redis (`runtime::ownership`), `None` when unclaimed.
    pub async fn owner_of(&self, carrier: &str, waybill: &str) -> Option<String> {
        let client = redis::Client::open(self.redis.url().as_str())
            .unwrap_or_else(|e| panic!("redis client: {e}"));
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .unwrap_or_else(|e| panic!("redis connect: {e}"));
        redis::cmd("GET")
            .arg(trackstream_runtime::ownership::owner_key(carrier, waybill))
            .query_async::<Option<String>>(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("redis GET: {e}"))
    }

    /// Registers shipments as merchant `m-acme`.
    pub async fn register(&self, shipments: &serde_json::Value) -> (u16, serde_json::Value) {
        self.register_as(ACME_TOKEN, shipments).await
    }

    /// Registers shipments as the merchant of `token` (see [`ACME_TOKEN`],
    /// [`OTHER_TOKEN`]).
    pub async fn register_as(
        &self,
        token: &str,
        shipments: &serde_json::Value,
    ) -> (u16, serde_json::Value) {
        self.post(
            "/v1/shipments",
            &[
                ("authorization", format!("Bearer {token}")),
                ("content-type", "application/json".into()),
            ],
            shipments.to_string().into_bytes(),
        )
        .await
    }

    /// A gRPC client of the notifier.
    pub async fn grpc(&self) -> TrackingServiceClient<tonic::transport::Channel> {
        TrackingServiceClient::connect(format!("http://{}", self.grpc_addr))
            .await
            .unwrap_or_else(|e| panic!("grpc connect: {e}"))
    }

    /// Stops the services gracefully (in-flight work finishes, offsets stored).
    pub async fn shutdown(mut self) {
        self.services.stop().await;
    }
}

pub use trackstream_testkit::grpc::authed;
