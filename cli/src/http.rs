//! `trackstream push` and `trackstream register`: requests to ingest's HTTP API,
//! printing the status and the JSON body; a non-2xx answer exits non-zero.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};
use trackstream_carriers::outbound;

/// Where ingest is.
#[derive(Args)]
pub struct Ingest {
    /// ingest's public HTTP endpoint.
    #[arg(
        long,
        env = "TRACKSTREAM_INGEST_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    ingest_url: String,
}

/// `push` options.
#[derive(Args)]
pub struct PushArgs {
    /// The provider route.
    #[arg(value_parser = outbound::ROUTES)]
    provider: String,
    /// The payload: the body for JSON providers, Kdniao's `RequestData` or
    /// Kuaidi100's `param` for the form ones (samples: cli/samples/). `-` reads
    /// stdin.
    file: PathBuf,
    #[command(flatten)]
    ingest: Ingest,
    /// The provider's secret as configured in ingest (`providers.<route>.secrets`).
    #[arg(long, env = "TRACKSTREAM_PUSH_SECRET", hide_env_values = true)]
    secret: String,
    /// The account name (sent by the generic route; others find the account by
    /// the secret that verifies).
    #[arg(long)]
    account: Option<String>,
    /// Send the payload's send time (`ts`, `PushTime`) as it is instead of now;
    /// ingest refuses pushes signed more than its replay tolerance ago.
    #[arg(long)]
    keep_send_time: bool,
}

/// `register` options.
#[derive(Args)]
pub struct RegisterArgs {
    #[command(flatten)]
    ingest: Ingest,
    /// The merchant's bearer token (`merchants[].tokens`).
    #[arg(long, env = "TRACKSTREAM_TOKEN", hide_env_values = true)]
    token: String,
    /// A JSON file with one shipment, an array, or `{"shipments": [...]}` (see
    /// ingest's openapi.json); `-` reads stdin. Instead of the flags below.
    #[arg(long, conflicts_with_all = ["order_id", "carrier", "waybill"])]
    file: Option<PathBuf>,
    /// The merchant's order id.
    #[arg(long, required_unless_present = "file")]
    order_id: Option<String>,
    /// Carrier code (e.g. sf, ups).
    #[arg(long, required_unless_present = "file")]
    carrier: Option<String>,
    /// Waybill (tracking number).
    #[arg(long, required_unless_present = "file")]
    waybill: Option<String>,
    /// Promised delivery time (RFC 3339).
    #[arg(long)]
    promised_delivery_at: Option<String>,
}

fn read(path: &PathBuf) -> anyhow::Result<Vec<u8>> {
    if path.as_os_str() == "-" {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes).context("reading stdin")?;
        Ok(bytes)
    } else {
        std::fs::read(path).with_context(|| format!("reading {}", path.display()))
    }
}

/// POSTs and prints `{"status": n, "body": ...}`; fails on non-2xx.
async fn post(
    ingest: &Ingest,
    path: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> anyhow::Result<()> {
    let url = format!("{}{path}", ingest.ingest_url.trim_end_matches('/'));
    let mut request = reqwest::Client::new().post(&url).body(body);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    crate::emit(format_args!(
        "{}",
        json!({ "status": status.as_u16(), "body": body })
    ))?;
    if !status.is_success() {
        bail!("ingest answered {status}");
    }
    Ok(())
}

/// Runs `push`.
pub async fn push(args: PushArgs) -> anyhow::Result<()> {
    let content = read(&args.file)?;
    let content = content.trim_ascii_end();
    let content = if args.keep_send_time {
        content.to_vec()
    } else {
        outbound::stamped_now(content, chrono::Utc::now())
    };
    let push = outbound::signed_push(
        &args.provider,
        &content,
        &args.secret,
        args.account.as_deref(),
    )
    .with_context(|| format!("unknown provider {}", args.provider))?;
    post(&args.ingest, &push.path, &push.headers, push.body).await
}

/// Runs `register`.
pub async fn register(args: RegisterArgs) -> anyhow::Result<()> {
    let body = match &args.file {
        Some(path) => read(path)?,
        None => {
            let mut shipment = json!({
                "order_id": args.order_id,
                "carrier": args.carrier,
                "waybill": args.waybill,
            });
            if let Some(at) = &args.promised_delivery_at {
                shipment["promised_delivery_at"] = json!(at);
            }
            shipment.to_string().into_bytes()
        }
    };
    let headers = [
        ("authorization", format!("Bearer {}", args.token)),
        ("content-type", "application/json".to_owned()),
    ];
    post(&args.ingest, "/v1/shipments", &headers, body).await
}
