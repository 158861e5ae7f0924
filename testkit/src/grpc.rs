//! gRPC client helpers for tests of the tracking API: the bearer token a
//! merchant presents, waiting until a server reports SERVING, and reading the
//! next message of a stream with a deadline.

use std::time::Duration;

use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use trackstream_proto::v1::{ShipmentUpdate, WatchOrderRequest};

/// `message` as a request carrying `authorization: Bearer <token>`, the way
/// merchants authenticate to the tracking API.
pub fn authed<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(value) = format!("Bearer {token}").parse() {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// A `WatchOrder` request for `order` after `after_seq`, as merchant `token`.
pub fn watch(order: &str, after_seq: u64, token: &str) -> tonic::Request<WatchOrderRequest> {
    authed(
        WatchOrderRequest {
            order_id: order.into(),
            after_seq,
        },
        token,
    )
}

/// The next update of a watch stream; panics (failing the test) if none comes
/// within `wait`, so a stuck stream cannot hang the suite.
pub async fn next(
    stream: &mut tonic::Streaming<ShipmentUpdate>,
    wait: Duration,
) -> Result<Option<ShipmentUpdate>, tonic::Status> {
    tokio::time::timeout(wait, stream.message())
        .await
        .unwrap_or_else(|_| panic!("no update within {wait:?}"))
}

/// Polls the standard health service on `channel` until `service` is SERVING.
pub async fn wait_serving(channel: Channel, service: &str, wait: Duration) {
    let health = HealthClient::new(channel);
    crate::eventually(wait, "health SERVING", || {
        let mut health = health.clone();
        let service = service.to_owned();
        async move {
            let response = health.check(HealthCheckRequest { service }).await.ok()?;
            (response.get_ref().status == ServingStatus::Serving as i32).then_some(())
        }
    })
    .await;
}
