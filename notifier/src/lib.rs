//! notifier — the outward-facing side: buyer milestone messages and the gRPC
//! tracking API.
//!
//! Two consumers run side by side:
//! - the **messenger** ([`messages`]) in the shared group `trackstream-notifier`
//!   turns `tracking.updates` / `tracking.alerts` into one `buyer.notifications`
//!   record per milestone per order (templated, contact masked) and keeps each
//!   order's open-alert index;
//! - the **live follower** ([`live`]) in a per-instance group fans updates and
//!   alerts out to this instance's gRPC watchers through bounded [`hub`]s.
//!
//! The gRPC server ([`grpc`]) reads history from the per-order log the detector
//! writes (`trackstream_runtime::order_log`), serves `grpc.health.v1` and server
//! reflection (so `grpcurl` works without the .proto files), and scopes every call
//! to the merchant of the bearer token. Contacts are masked by [`mask`];
//! messages are rendered by [`templates`].
#![forbid(unsafe_code)]

pub mod config;
pub mod grpc;
pub mod hub;
pub mod live;
pub mod mask;
pub mod messages;
pub mod templates;

use std::net::SocketAddr;
use std::sync::Arc;

use trackstream_proto::topics;
use trackstream_proto::v1::tracking_service_server::TrackingServiceServer;
use trackstream_runtime::admin::{self, Health};
use trackstream_runtime::kafka::{ConsumerLoop, Producer, StartAt};
use trackstream_runtime::merchants::MerchantDirectory;
use trackstream_runtime::redis::RedisConn;
use trackstream_runtime::{CancellationToken, Error, telemetry};

pub use config::Config;

/// A started notifier.
pub struct Running {
    /// gRPC address.
    pub grpc_addr: SocketAddr,
    /// `/healthz` and `/metrics` address.
    pub admin_addr: SocketAddr,
    /// Completes after shutdown.
    pub task: tokio::task::JoinHandle<Result<(), Error>>,
}

/// Starts the messenger, the live follower and the gRPC server.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running, Error> {
    let mut registry = telemetry::registry("notifier");
    let conn = RedisConn::connect(&config.redis).await?;
    let producer = Producer::new(&config.kafka, "trackstream-notifier", &mut registry)?;
    let merchants = MerchantDirectory::new(config.merchants.clone());
    let group = config
        .kafka
        .group_id
        .clone()
        .unwrap_or_else(|| "trackstream-notifier".into());
    let messenger_loop = ConsumerLoop::subscribe(
        &config.kafka,
        &group,
        &[topics::TRACKING_UPDATES, topics::TRACKING_ALERTS],
        &mut registry,
    )?;
    let messenger = Arc::new(messages::Messenger::new(
        conn.clone(),
        producer.clone(),
        config.messages.clone(),
        merchants.clone(),
        &mut registry,
    ));
    let live_group = format!("{group}-live-{:016x}", rand::random::<u64>());
    let live_loop = ConsumerLoop::subscribe_from(
        &config.kafka,
        &live_group,
        &[topics::TRACKING_UPDATES, topics::TRACKING_ALERTS],
        StartAt::Latest,
        registry.sub_registry_with_prefix("live"),
    )?;
    let fan_out = Arc::new(live::FanOut {
        orders: Arc::default(),
        alerts: Arc::default(),
    });

    let api = grpc::Api {
        conn,
        merchants,
        orders: fan_out.orders.clone(),
        alerts: fan_out.alerts.clone(),
        buffer: config.grpc.watch_buffer,
        shutdown: shutdown.clone(),
    };
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<TrackingServiceServer<grpc::Api>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(trackstream_proto::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| Error::Config(format!("reflection: {e}")))?;
    let listener = tokio::net::TcpListener::bind(&config.grpc.listen).await?;
    let grpc_addr = listener.local_addr()?;
    let grpc_shutdown = shutdown.clone();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(reflection)
            .add_service(TrackingServiceServer::new(api))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async move { grpc_shutdown.cancelled().await },
            ),
    );

    let health = Health::default();
    let admin_addr = admin::serve(
        &config.admin.listen,
        Arc::new(registry),
        health.clone(),
        shutdown.clone(),
    )
    .await?;
    health.set(true);
    tracing::info!(%grpc_addr, %admin_addr, group, live_group, "notifier running");

    let live_task = tokio::spawn(live_loop.run(fan_out, shutdown.clone()));
    let task = tokio::spawn(async move {
        let result = messenger_loop.run(messenger, shutdown).await;
        health.set(false);
        match live_task.await {
            Ok(Err(err)) => tracing::warn!(%err, "live follower ended with an error"),
            Err(err) => tracing::error!(%err, "live follower panicked"),
            Ok(Ok(())) => {}
        }
        match server.await {
            Ok(Err(err)) => tracing::warn!(%err, "grpc server ended with an error"),
            Err(err) => tracing::error!(%err, "grpc server panicked"),
            Ok(Ok(())) => {}
        }
        producer.flush(std::time::Duration::from_secs(10));
        tracing::info!("notifier stopped");
        result
    });
    Ok(Running {
        grpc_addr,
        admin_addr,
        task,
    })
}
