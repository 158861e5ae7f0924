//! notifier — the outward-facing side: buyer milestone messages and the gRPC
//! tracking API.
//!
//! Three loops run side by side:
//! - the **messenger** ([`messages`]) in the shared group `trackstream-notifier`
//!   turns `tracking.updates` / `tracking.alerts` / `tracking.incidents` into at
//!   most one `buyer.notifications` record per milestone per order (templated,
//!   contact masked, parcels of a burst merged, quiet hours respected, one
//!   INCIDENT message instead of a DELAYED per parcel), and keeps each order's
//!   registered parcels (`shipments`), open alerts and incident links for
//!   `GetOrder` and each merchant's incidents for `ListIncidents`
//!   ([`incidents`]);
//! - the **flusher** (same [`messages::Messenger`]) sends held messages when they
//!   become due, on any instance ([`outbox`] holds them in Redis);
//! - the **live follower** ([`live`]) in a per-instance group fans updates,
//!   alerts and incidents out to this instance's gRPC watchers through bounded [`hub`]s, so
//!   every instance can serve any order's watch.
//!
//! The gRPC server ([`grpc`]) reads history from the per-order log the detector
//! writes (`trackstream_runtime::order_log`), serves `grpc.health.v1` and server
//! reflection (so `grpcurl` works without the .proto files), optionally over TLS,
//! and scopes every call to the merchant of the bearer token, within a
//! per-merchant watcher quota ([`quota`]) and after checking request fields
//! ([`validate`]). Contacts come only from registrations ([`contact`]) and are
//! masked by [`mask`]; messages are rendered by [`templates`] and produced one
//! by one, a message that can never be produced dead-lettered ([`deliver`]);
//! an order's keys expire with it ([`lifecycle`]); time comes from a
//! [`clock::Clock`] so quiet hours and expiry can be tested without waiting.
#![forbid(unsafe_code)]

pub mod clock;
pub mod config;
pub mod contact;
pub mod deliver;
pub mod grpc;
pub mod hub;
pub mod incidents;
pub mod lifecycle;
pub mod live;
pub mod mask;
pub mod messages;
pub mod outbox;
pub mod quiet;
pub mod quota;
pub mod templates;
pub mod validate;
pub mod web;

use std::net::SocketAddr;
use std::sync::Arc;

use tonic_health::ServingStatus;
use trackstream_proto::topics;
use trackstream_proto::v1::tracking_service_server::TrackingServiceServer;
use trackstream_runtime::admin;
use trackstream_runtime::kafka::{ConsumerLoop, Producer, StartAt};
use trackstream_runtime::merchants::MerchantDirectory;
use trackstream_runtime::redis::RedisConn;
use trackstream_runtime::{CancellationToken, Error, telemetry};

pub use config::Config;

/// The gRPC name of the tracking service (health checks and reflection use it).
pub const TRACKING_SERVICE: &str =
    <TrackingServiceServer<grpc::Api> as tonic::server::NamedService>::NAME;

/// A started notifier.
pub struct Running {
    /// gRPC address.
    pub grpc_addr: SocketAddr,
    /// `/healthz` and `/metrics` address.
    pub admin_addr: SocketAddr,
    /// The web face's address (tracking page, console, HTTP API), when `[web]`
    /// is configured.
    pub web_addr: Option<SocketAddr>,
    /// Completes after shutdown.
    pub task: tokio::task::JoinHandle<Result<(), Error>>,
}

/// Starts the messenger, the flusher, the live follower and the gRPC server on
/// the wall clock.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running, Error> {
    start_with_clock(config, Arc::new(clock::SystemClock), shutdown).await
}

/// Like [`start`], with the clock that quiet hours, burst windows and leases use
/// (tests pass a [`clock::ManualClock`]).
pub async fn start_with_clock(
    config: Config,
    clock: Arc<dyn clock::Clock>,
    shutdown: CancellationToken,
) -> Result<Running, Error> {
    let mut registry = telemetry::registry("notifier");
    let conn = RedisConn::connect(&config.redis).await?;
    let producer = Producer::new(&config.kafka, "trackstream-notifier", &mut registry)?;
    let merchants = MerchantDirectory::try_new(config.merchants.clone())?;
    let group = config.kafka.group_for("notifier");
    let lease_ms = trackstream_runtime::config::duration::millis(config.kafka.produce_timeout)
        .saturating_mul(2)
        .saturating_add(5_000);
    let message_links = match &config.web {
        Some(web) => {
            web.validate().map_err(Error::Config)?;
            let index = web::WebIndex::new(
                conn.clone(),
                trackstream_web::Links::new(web),
                config.retention.after_silence_ms(),
            );
            Some(web::MessageLinks::new(web, index))
        }
        None => None,
    };
    let messenger = Arc::new(
        messages::Messenger::new(
            conn.clone(),
            producer.clone(),
            config.messages.clone(),
            &config.retention,
            merchants.clone(),
            clock.clone(),
            lease_ms,
            &mut registry,
        )?
        .with_web(message_links.clone()),
    );
    let messenger_loop = ConsumerLoop::subscribe(
        &config.kafka,
        &group,
        &[
            topics::TRACKING_UPDATES,
            topics::TRACKING_ALERTS,
            topics::SHIPMENTS,
            topics::TRACKING_INCIDENTS,
        ],
        &mut registry,
    )?;
    let live_group = format!("{group}-live-{:016x}", rand::random::<u64>());
    let live_loop = ConsumerLoop::subscribe_from(
        &config.kafka,
        &live_group,
        &[
            topics::TRACKING_UPDATES,
            topics::TRACKING_ALERTS,
            topics::TRACKING_INCIDENTS,
        ],
        StartAt::Latest,
        registry.sub_registry_with_prefix("live"),
    )?;
    let metrics = grpc::WatchMetrics::default();
    metrics.register(&mut registry);
    let fan_out = Arc::new(live::FanOut {
        orders: Arc::new(hub::Hub::new(metrics.cutoffs.clone())),
        alerts: Arc::new(hub::Hub::new(metrics.cutoffs.clone())),
        incidents: Arc::new(hub::Hub::new(metrics.cutoffs.clone())),
    });
    let api = Arc::new(grpc::Api {
        conn: conn.clone(),
        outbox: outbox::Outbox::new(conn.clone()),
        merchants,
        orders: fan_out.orders.clone(),
        alerts: fan_out.alerts.clone(),
        incidents: fan_out.incidents.clone(),
        incident_store: incidents::IncidentStore::new(conn.clone(), &config.retention),
        clock: clock.clone(),
        buffer: config.grpc.watch_buffer,
        watchers: quota::Watchers::new(
            config.grpc.max_watchers,
            config.grpc.watcher_quota(),
            metrics.watchers.clone(),
            metrics.refused.clone(),
            metrics.refused_quota.clone(),
        ),
        reads: Arc::new(tokio::sync::Semaphore::new(
            config.grpc.max_concurrent_reads.max(1),
        )),
        metrics,
        shutdown: shutdown.clone(),
    });
    // NOT_SERVING until the live follower owns its partitions: an instance that
    // cannot deliver live updates yet should not be given watchers.
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    let mut assignment = live_loop.assignment();
    let live_health = tokio::spawn(async move {
        loop {
            let status = if assignment
                .borrow_and_update()
                .values()
                .any(|p| !p.is_empty())
            {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            health_reporter.set_service_status("", status).await;
            health_reporter
                .set_service_status(TRACKING_SERVICE, status)
                .await;
            if assignment.changed().await.is_err() {
                return;
            }
        }
    });
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(trackstream_proto::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| Error::Config(format!("reflection: {e}")))?;
    // Older grpcurl releases only speak v1alpha reflection.
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(trackstream_proto::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| Error::Config(format!("reflection: {e}")))?;
    let listener = tokio::net::TcpListener::bind(&config.grpc.listen).await?;
    let grpc_addr = listener.local_addr()?;
    let grpc_shutdown = shutdown.clone();
    let mut builder = server_builder(&config.grpc);
    if let Some(tls) = &config.grpc.tls {
        builder = builder.tls_config(tls_config(tls).await?)?;
    }
    let server = tokio::spawn(
        builder
            .add_service(health_service)
            .add_service(reflection)
            .add_service(reflection_alpha)
            .add_service(
                TrackingServiceServer::from_arc(api.clone())
                    .max_decoding_message_size(config.grpc.max_request_bytes.max(64)),
            )
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async move { grpc_shutdown.cancelled().await },
            ),
    );

    // The web face, over the same API, and the console's dead-letter counts.
    let mut web_tasks = Vec::new();
    let web_addr = match (config.web.clone(), message_links) {
        (Some(web_config), Some(links)) => {
            let backend = web::backend::NotifierBackend {
                api: api.clone(),
                index: links.index.clone(),
            };
            let web = trackstream_web::Web::new(backend, web_config, &mut registry)
                .map_err(Error::Config)?;
            let addr = trackstream_web::serve(Arc::new(web), shutdown.clone()).await?;
            let counter = web::deadletters::DeadLetterCounter {
                conn: conn.clone(),
                merchants: api.merchants.ids().map(str::to_owned).collect(),
            };
            let letters_loop = ConsumerLoop::subscribe(
                &config.kafka,
                &format!("{group}-deadletters"),
                &[topics::SCANS_DLQ, topics::TRACKING_DLQ],
                registry.sub_registry_with_prefix("deadletters"),
            )?;
            let letters_shutdown = shutdown.clone();
            web_tasks.push(tokio::spawn(async move {
                if let Err(err) = letters_loop.run(Arc::new(counter), letters_shutdown).await {
                    tracing::warn!(%err, "dead-letter counter ended with an error");
                }
            }));
            Some(addr)
        }
        _ => None,
    };

    // Ready only when both groups hold their partitions and caught up: the
    // messenger (buyer messages) and this instance's live follower (watchers).
    let (admin_addr, health) = admin::serve_gated_with(
        &config.admin.listen,
        &config.admin.limits,
        registry,
        shutdown.clone(),
        vec![messenger_loop.ready_gate(), live_loop.ready_gate()],
    )
    .await?;
    tracing::info!(%grpc_addr, %admin_addr, ?web_addr, group, live_group,
        tls = config.grpc.tls.is_some(), "notifier running");

    let live_task = tokio::spawn(live_loop.run(fan_out, shutdown.clone()));
    let flusher = tokio::spawn(messenger.clone().run_flusher(shutdown.clone()));
    let task = tokio::spawn(async move {
        let result = messenger_loop.run(messenger, shutdown).await;
        health.set(false);
        match live_task.await {
            Ok(Err(err)) => tracing::warn!(%err, "live follower ended with an error"),
            Err(err) => tracing::error!(%err, "live follower panicked"),
            Ok(Ok(())) => {}
        }
        live_health.abort();
        if let Err(err) = flusher.await {
            tracing::error!(%err, "flusher panicked");
        }
        match server.await {
            Ok(Err(err)) => tracing::warn!(%err, "grpc server ended with an error"),
            Err(err) => tracing::error!(%err, "grpc server panicked"),
            Ok(Ok(())) => {}
        }
        for task in web_tasks {
            let _ = task.await;
        }
        producer.flush(std::time::Duration::from_secs(10));
        tracing::info!("notifier stopped");
        result
    });
    Ok(Running {
        grpc_addr,
        admin_addr,
        web_addr,
        task,
    })
}

/// The tonic server with the connection hygiene of `grpc` (see its fields):
/// keepalive pings that end connections of vanished clients, a bound on
/// streams and on in-flight requests per connection, and a response timeout.
fn server_builder(grpc: &config::GrpcConfig) -> tonic::transport::Server {
    use std::time::Duration;
    let keepalive = (!grpc.keepalive.is_zero()).then_some(grpc.keepalive);
    tonic::transport::Server::builder()
        .max_concurrent_streams(grpc.max_streams_per_connection)
        .concurrency_limit_per_connection(grpc.max_requests_per_connection.max(1))
        .timeout(grpc.request_timeout.max(Duration::from_secs(1)))
        .http2_keepalive_interval(keepalive)
        .http2_keepalive_timeout(
            keepalive.map(|_| grpc.keepalive_timeout.max(Duration::from_secs(1))),
        )
}

/// Reads the server certificate, key and optional client CA (PEM) for rustls.
async fn tls_config(tls: &config::TlsConfig) -> Result<tonic::transport::ServerTlsConfig, Error> {
    let read = |path: std::path::PathBuf| async move {
        tokio::fs::read(&path)
            .await
            .map_err(|e| Error::Config(format!("grpc.tls: reading {}: {e}", path.display())))
    };
    let cert = read(tls.cert_path.clone()).await?;
    let key = read(tls.key_path.clone()).await?;
    let mut server = tonic::transport::ServerTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(cert, key));
    if let Some(ca) = &tls.client_ca_path {
        server = server.client_ca_root(tonic::transport::Certificate::from_pem(
            read(ca.clone()).await?,
        ));
    }
    Ok(server)
}
