//! A notifier alone against a real Redis and a real broker, fed directly: tests
//! write what the detector would (the order log in Redis, records on
//! `tracking.updates` / `tracking.alerts`) and what ingest would (`shipments`),
//! so each notifier behaviour can be driven exactly. The clock is manual.
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use prost::Message;
use tonic::transport::Channel;
use trackstream_notifier::Config;
use trackstream_notifier::clock::ManualClock;
use trackstream_proto::v1::tracking_service_client::TrackingServiceClient;
use trackstream_proto::v1::{
    BuyerContact, BuyerNotification, Location, Shipment, ShipmentUpdate, Status, TrackingEvent,
    UpdateKind, WatchOrderRequest,
};
use trackstream_proto::{keys, time, topics};
use trackstream_runtime::CancellationToken;
use trackstream_runtime::kafka::{OutRecord, Producer};
use trackstream_runtime::order_log;
use trackstream_runtime::redis::RedisConn;
use trackstream_testkit::grpc::authed;
use trackstream_testkit::kafka::TopicReader;
use trackstream_testkit::processes::{Broker, RedisServer};
use trackstream_testkit::services::Services;

/// Deadline of every wait.
pub const WAIT: Duration = Duration::from_secs(60);

/// When the order logs these tests write expire (2100-01-01): not within a test.
const LOG_EXPIRES_AT_MS: i64 = 4_102_444_800_000;

/// Where a notifier instance listens.
pub struct Running {
    /// gRPC address.
    pub grpc_addr: std::net::SocketAddr,
    /// `/healthz` and `/metrics` address.
    pub admin_addr: std::net::SocketAddr,
}

/// A running notifier with its own Redis and broker.
pub struct Env {
    /// The notifier's task; first, so it stops (on drop too) before Redis and
    /// the broker go (see `trackstream_testkit::services`).
    task: Services,
    /// Redis.
    pub redis: RedisServer,
    /// Broker.
    pub broker: Broker,
    /// A Redis connection for the test.
    pub conn: RedisConn,
    /// A producer for the test.
    pub producer: Producer,
    /// The notifier's clock.
    pub clock: ManualClock,
    /// The notifier.
    pub running: Running,
    /// Its configuration (for starting more instances).
    pub config: Config,
}

/// Another notifier instance of the same group.
pub struct Instance {
    task: Services,
    /// The instance.
    pub running: Running,
}

impl Instance {
    /// Stops it gracefully.
    pub async fn shutdown(mut self) {
        self.task.stop().await;
    }
}

// Not every test file that includes this module uses both tokens.
#[allow(unused_imports)]
pub use trackstream_testkit::merchants::{ACME_TOKEN, OTHER_TOKEN, two_merchants as merchants};

/// Redis and the broker with topics, and a notifier configured but not yet
/// started: what a test producing a backlog for a stopped notifier needs.
pub struct Parked {
    /// Redis.
    pub redis: RedisServer,
    /// Broker.
    pub broker: Broker,
    /// A Redis connection for the test.
    pub conn: RedisConn,
    /// A producer for the test.
    pub producer: Producer,
    /// The clock the notifier will run on.
    pub clock: ManualClock,
    /// The notifier's configuration.
    pub config: Config,
}

impl Parked {
    /// Starts the notifier.
    pub async fn start(self) -> Env {
        let (running, task) = start_notifier(&self.config, &self.clock).await;
        Env {
            task,
            redis: self.redis,
            broker: self.broker,
            conn: self.conn,
            producer: self.producer,
            clock: self.clock,
            running,
            config: self.config,
        }
    }
}

impl Env {
    /// Starts Redis, the broker and a notifier whose clock stands at `now`.
    pub async fn start(now: DateTime<Utc>, customize: impl FnOnce(&mut Config)) -> Env {
        Env::parked(now, customize).await.start().await
    }

    /// Starts Redis and the broker and creates the topics; the notifier (clock
    /// at `now`) is started by [`Parked::start`].
    pub async fn parked(now: DateTime<Utc>, customize: impl FnOnce(&mut Config)) -> Parked {
        let redis = RedisServer::start().await.unwrap_or_else(|e| panic!("{e}"));
        let broker = Broker::start().await.unwrap_or_else(|e| panic!("{e}"));
        let mut config = Config::default();
        config.kafka.brokers = broker.bootstrap();
        config.kafka.batch_linger = Duration::from_millis(2);
        config.kafka.produce_timeout = Duration::from_secs(5);
        config
            .kafka
            .extra
            .insert("topic.metadata.refresh.interval.ms".into(), "2000".into());
        config.redis.url = redis.url();
        config.admin.log_format = "pretty".into();
        config.admin.log_level = "warn".into();
        config.grpc.listen = "127.0.0.1:0".into();
        config.merchants = merchants();
        config.messages.flush_interval = Duration::from_millis(50);
        // Tests pin the clock to fixed dates (often long past); expiry is set
        // from that clock, so keys would vanish at once. Tests of the lifecycle
        // set retention themselves.
        config.retention.after_terminal = Duration::from_secs(36_500 * 86_400);
        config.retention.after_silence = Duration::from_secs(36_500 * 86_400);
        customize(&mut config);
        trackstream_runtime::telemetry::init_tracing(&config.admin);
        let all: Vec<(&str, i32)> = topics::ALL.iter().map(|t| (*t, 4)).collect();
        trackstream_testkit::kafka::create_topics(&broker.bootstrap(), &all)
            .await
            .unwrap_or_else(|e| panic!("creating topics: {e}"));
        let conn = RedisConn::connect(&config.redis)
            .await
            .unwrap_or_else(|e| panic!("redis: {e}"));
        let mut registry = prometheus_client::registry::Registry::default();
        let producer = Producer::new(&config.kafka, "test", &mut registry)
            .unwrap_or_else(|e| panic!("producer: {e}"));
        Parked {
            redis,
            broker,
            conn,
            producer,
            clock: ManualClock::new(now),
            config,
        }
    }

    /// Starts another instance of the same consumer group on the same clock.
    pub async fn start_instance(&self) -> Instance {
        let (running, task) = start_notifier(&self.config, &self.clock).await;
        Instance { task, running }
    }

    /// Writes `message` to `topic` under `key` and waits for the acknowledgement.
    /// Retries like the detector's batch loop does: a timeout under load is a
    /// retry, not a lost record.
    pub async fn produce<M: Message>(&self, topic: &'static str, key: &str, message: &M) {
        produce_with(&self.producer, topic, key, message).await;
    }

    /// Registers a parcel as ingest would.
    pub async fn register(&self, shipment: &Shipment) {
        let key = keys::waybill_key(&shipment.carrier, &shipment.waybill);
        self.produce(topics::SHIPMENTS, &key, shipment).await;
    }

    /// [`Env::register`], then waits until the notifier has stored it — as the
    /// detector, which sends no update for an unregistered parcel, would have
    /// seen it first. Tests on the manual clock need this: a message whose
    /// registration is not in yet waits the settle, and that clock stands still.
    pub async fn register_stored(&self, shipment: &Shipment) {
        self.register(shipment).await;
        self.wait_parcel(shipment, "the registration stored", |_| true)
            .await;
    }

    /// Waits until the notifier's stored copy of `shipment`'s parcel satisfies
    /// `ready`, and returns it.
    pub async fn wait_parcel(
        &self,
        shipment: &Shipment,
        what: &str,
        ready: impl Fn(&Shipment) -> bool,
    ) -> Shipment {
        let order = order_log::order_ref(&shipment.merchant_id, &shipment.order_id);
        let field = keys::waybill_key(&shipment.carrier, &shipment.waybill);
        let hash = if shipment.is_return {
            "returns"
        } else {
            "parcels"
        };
        let (conn, key, ready) = (self.conn.clone(), order_log::key(&order, hash), &ready);
        trackstream_testkit::eventually(Duration::from_secs(60), what, || {
            let (mut conn, key, field) = (conn.clone(), key.clone(), field.clone());
            async move {
                let stored: Option<Vec<u8>> = redis::cmd("HGET")
                    .arg(&key)
                    .arg(&field)
                    .query_async(&mut conn)
                    .await
                    .ok()
                    .flatten();
                stored
                    .and_then(|b| Shipment::decode(b.as_slice()).ok())
                    .filter(|s| ready(s))
            }
        })
        .await
    }

    /// Does what the detector does with an update: assigns the order's next
    /// sequence number, appends it to the order log, then produces it (keyed by
    /// waybill). Returns it with its `seq`.
    pub async fn record_update(&self, update: ShipmentUpdate) -> ShipmentUpdate {
        let key = update
            .event
            .as_ref()
            .map(|e| keys::waybill_key(&e.carrier, &e.waybill))
            .unwrap_or_default();
        self.record_update_keyed(update, &key).await
    }

    /// [`Env::record_update`] with an explicit record key.
    pub async fn record_update_keyed(
        &self,
        mut update: ShipmentUpdate,
        key: &str,
    ) -> ShipmentUpdate {
        let mut conn = self.conn.clone();
        let order = order_log::order_ref(&update.merchant_id, &update.order_id);
        // The detector's own append (one encoder of log entries); every call
        // is a new update, as each of these tests means it.
        update.seq = 0;
        let update_id = format!("test-{:016x}", rand::random::<u64>());
        update.seq = order_log::append_one(
            &mut conn,
            &order,
            &update_id,
            &update.encode_to_vec(),
            &update.merchant_id,
            LOG_EXPIRES_AT_MS,
        )
        .await
        .unwrap();
        self.produce(topics::TRACKING_UPDATES, key, &update).await;
        update
    }

    /// Produces an update without touching the order log (what a re-delivery
    /// or a replay of the topic looks like to the notifier).
    pub async fn replay(&self, update: &ShipmentUpdate, key: &str) {
        self.produce(topics::TRACKING_UPDATES, key, update).await;
    }

    /// A gRPC client on a connection of its own.
    pub async fn client(&self) -> TrackingServiceClient<Channel> {
        client_of(self.running.grpc_addr).await
    }

    /// A reader of `buyer.notifications` from the beginning.
    pub fn messages(&self) -> TopicReader {
        TopicReader::new(&self.broker.bootstrap(), topics::BUYER_NOTIFICATIONS)
    }

    /// Waits until the live path works end to end: health says SERVING (the live
    /// follower owns its partitions) and an update recorded now reaches a watcher.
    pub async fn wait_live(&self) {
        self.wait_live_at(self.running.grpc_addr).await;
    }

    /// [`Env::wait_live`] for the instance serving gRPC at `addr`.
    pub async fn wait_live_at(&self, addr: std::net::SocketAddr) {
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        wait_serving(channel).await;
        let probe = |n: u64| {
            let shipment = shipment("probe", "PROBE", "m-acme");
            update(&shipment, Status::InfoReceived, n, &format!("probe-{n}"))
        };
        let first = self.record_update(probe(0)).await;
        let mut client = client_of(addr).await;
        let mut stream = client
            .watch_order(authed(
                WatchOrderRequest {
                    order_id: "probe".into(),
                    after_seq: first.seq,
                },
                ACME_TOKEN,
            ))
            .await
            .unwrap()
            .into_inner();
        let deadline = std::time::Instant::now() + WAIT;
        for n in 1.. {
            assert!(
                std::time::Instant::now() < deadline,
                "live updates never reached a watcher"
            );
            self.record_update(probe(n)).await;
            if let Ok(Ok(Some(_))) =
                tokio::time::timeout(Duration::from_secs(1), stream.message()).await
            {
                return;
            }
        }
    }

    /// The value of a metric on `/metrics` (0 when absent).
    pub async fn metric(&self, name: &str) -> f64 {
        metric_at(self.running.admin_addr, name).await
    }
    /// Stops the notifier gracefully (its consumer group commits where it
    /// is), keeping Redis and the broker: what a restart's downtime looks like.
    pub async fn park(mut self) -> Parked {
        self.task.stop().await;
        Parked {
            redis: self.redis,
            broker: self.broker,
            conn: self.conn,
            producer: self.producer,
            clock: self.clock,
            config: self.config,
        }
    }

    /// Stops the notifier gracefully.
    pub async fn shutdown(mut self) {
        self.task.stop().await;
    }
}

/// [`Env::produce`] through `producer` (also before a notifier runs).
pub async fn produce_with<M: Message>(
    producer: &Producer,
    topic: &'static str,
    key: &str,
    message: &M,
) {
    let record = OutRecord::new(topic, key, message.encode_to_vec());
    let mut attempts = 0;
    loop {
        match producer.send(record.clone()).await {
            Ok(()) => return,
            Err(e) if attempts < 3 => {
                attempts += 1;
                eprintln!("producing to {topic} failed ({e}); retrying");
            }
            Err(e) => panic!("producing to {topic}: {e}"),
        }
    }
}

/// A gRPC client of the instance at `addr`, on a connection of its own.
pub async fn client_of(addr: std::net::SocketAddr) -> TrackingServiceClient<Channel> {
    TrackingServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap_or_else(|e| panic!("grpc connect: {e}"))
}

/// The value of a metric on the `/metrics` of `admin` (0 when absent).
pub async fn metric_at(admin: std::net::SocketAddr, name: &str) -> f64 {
    let text = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| {
            let (metric, value) = line.split_once(' ')?;
            (metric == name).then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0.0)
}

/// Waits until the channel's server reports the tracking service SERVING.
pub async fn wait_serving(channel: Channel) {
    trackstream_testkit::grpc::wait_serving(channel, trackstream_notifier::TRACKING_SERVICE, WAIT)
        .await;
}

/// A parcel of `order` for merchant `merchant`, buyer in Shanghai speaking English.
pub fn shipment(order: &str, waybill: &str, merchant: &str) -> Shipment {
    Shipment {
        order_id: order.into(),
        merchant_id: merchant.into(),
        carrier: "sf".into(),
        waybill: waybill.into(),
        buyer: Some(BuyerContact {
            name: "Li Lei".into(),
            phone: "13812345678".into(),
            email: "john@example.com".into(),
            locale: "en".into(),
            time_zone: "Asia/Shanghai".into(),
        }),
        merchant_name: if merchant == "m-acme" {
            "Acme Live".into()
        } else {
            String::new()
        },
        registered_at: Some(time::from_millis(1_700_000_000_000)),
        ..Shipment::default()
    }
}

/// The update the detector emits for a scan of `shipment`'s parcel with
/// `status`, `n` seconds after a fixed epoch.
pub fn update(shipment: &Shipment, status: Status, n: u64, event_id: &str) -> ShipmentUpdate {
    let at = 1_741_600_000_000 + i64::try_from(n).unwrap_or(0) * 1_000;
    ShipmentUpdate {
        seq: 0,
        order_id: shipment.order_id.clone(),
        merchant_id: shipment.merchant_id.clone(),
        event: Some(TrackingEvent {
            event_id: event_id.into(),
            carrier: shipment.carrier.clone(),
            waybill: shipment.waybill.clone(),
            status: status as i32,
            occurred_at: Some(time::from_millis(at)),
            location: Some(Location {
                text: "Shenzhen Nanshan Locker #12".into(),
                ..Location::default()
            }),
            ..TrackingEvent::default()
        }),
        current_status: status as i32,
        late: false,
        kind: UpdateKind::Scan as i32,
        shipment: Some(shipment.clone()),
        ..ShipmentUpdate::default()
    }
}

/// The buyer messages read so far for `order`.
pub fn messages_of(reader: &TopicReader, order: &str) -> Vec<BuyerNotification> {
    reader
        .decoded::<BuyerNotification>()
        .into_iter()
        .filter(|m| m.order_id == order)
        .collect()
}

/// Whether the reader has seen a message for `order` and `milestone`.
pub fn has(
    records: &[trackstream_testkit::kafka::Record],
    order: &str,
    milestone: trackstream_proto::v1::Milestone,
) -> bool {
    records.iter().any(|r| {
        BuyerNotification::decode(r.payload.as_slice())
            .is_ok_and(|m| m.order_id == order && m.milestone == milestone as i32)
    })
}

/// `at` as RFC 3339 text → UTC.
pub fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// One notifier instance on `clock`: where it listens, and its task.
async fn start_notifier(config: &Config, clock: &ManualClock) -> (Running, Services) {
    let shutdown = CancellationToken::new();
    let running = trackstream_notifier::start_with_clock(
        config.clone(),
        Arc::new(clock.clone()),
        shutdown.clone(),
    )
    .await
    .unwrap_or_else(|e| panic!("notifier: {e}"));
    let addrs = Running {
        grpc_addr: running.grpc_addr,
        admin_addr: running.admin_addr,
    };
    (addrs, Services::new(shutdown, vec![running.task]))
}
