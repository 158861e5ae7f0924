//! `trackstream order get|watch`: the notifier's gRPC API as a merchant, replies
//! as JSON lines ([`crate::decode`]).

use anyhow::Context;
use clap::{Args, Subcommand};
use tokio_stream::StreamExt;
use trackstream_proto::v1::tracking_service_client::TrackingServiceClient;
use trackstream_proto::v1::{GetOrderRequest, WatchOrderRequest};

/// The notifier's address and the merchant's credentials.
#[derive(Args)]
pub struct Grpc {
    /// The notifier's gRPC endpoint.
    #[arg(
        long,
        env = "TRACKSTREAM_GRPC_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    grpc_url: String,
    /// The merchant's bearer token (`merchants[].tokens` in the config); every
    /// call is scoped to that merchant.
    #[arg(long, env = "TRACKSTREAM_TOKEN", hide_env_values = true)]
    token: String,
}

/// `order ...`.
#[derive(Subcommand)]
pub enum OrderCommand {
    /// Print an order: its parcels, current status and timeline.
    Get {
        #[command(flatten)]
        grpc: Grpc,
        /// The merchant's order id.
        order_id: String,
    },
    /// Print an order's updates as they happen (history first), one per line.
    Watch {
        #[command(flatten)]
        grpc: Grpc,
        /// The merchant's order id.
        order_id: String,
        /// Replay history strictly after this sequence number (0: all of it).
        #[arg(long, default_value_t = 0)]
        after_seq: u64,
        /// Stop after this many updates.
        #[arg(long)]
        max: Option<u64>,
    },
}

/// A request carrying the bearer token.
fn authed<T>(message: T, token: &str) -> anyhow::Result<tonic::Request<T>> {
    let mut request = tonic::Request::new(message);
    let value = format!("Bearer {token}")
        .parse()
        .context("the token is not a valid header value")?;
    request.metadata_mut().insert("authorization", value);
    Ok(request)
}

async fn connect(grpc: &Grpc) -> anyhow::Result<TrackingServiceClient<tonic::transport::Channel>> {
    TrackingServiceClient::connect(grpc.grpc_url.clone())
        .await
        .with_context(|| format!("connecting to {}", grpc.grpc_url))
}

/// A gRPC error as the operator needs it: code and message.
fn status_error(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", status.code(), status.message())
}

/// Runs an `order` command.
pub async fn run(command: OrderCommand) -> anyhow::Result<()> {
    match command {
        OrderCommand::Get { grpc, order_id } => {
            let order = connect(&grpc)
                .await?
                .get_order(authed(GetOrderRequest { order_id }, &grpc.token)?)
                .await
                .map_err(status_error)?
                .into_inner();
            let json = crate::decode::message_json("trackstream.v1.Order", &order)
                .map_err(anyhow::Error::msg)?;
            crate::emit(format_args!("{json}"))?;
        }
        OrderCommand::Watch {
            grpc,
            order_id,
            after_seq,
            max,
        } => {
            let request = WatchOrderRequest {
                order_id,
                after_seq,
            };
            let mut stream = connect(&grpc)
                .await?
                .watch_order(authed(request, &grpc.token)?)
                .await
                .map_err(status_error)?
                .into_inner();
            let mut printed = 0;
            while max.is_none_or(|max| printed < max) {
                let Some(update) = stream.next().await else {
                    break;
                };
                let update = update.map_err(status_error)?;
                let json = crate::decode::message_json("trackstream.v1.ShipmentUpdate", &update)
                    .map_err(anyhow::Error::msg)?;
                crate::emit(format_args!("{json}"))?;
                printed += 1;
            }
        }
    }
    Ok(())
}
