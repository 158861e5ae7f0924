//! Driving traffic: registrations, the open-loop webhook schedule of a step,
//! the drain that waits for its updates, and sentinel scans that move every
//! partition's event clock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use trackstream_loadgen::{Parcel, Secrets};

use super::follower::Observed;
use super::latency::Sent;
use super::now_ms;

/// Sentinel scans per clock advance: enough keys to reach every partition.
pub(crate) const SENTINELS: u64 = 64;

/// Waybill prefix of the sentinel scans (left out of the alert score).
pub(crate) const SENTINEL_PREFIX: &str = "SENTINEL";

/// Where webhooks go.
pub(crate) struct Ingest {
    pub(crate) http: reqwest::Client,
    /// `http://127.0.0.1:<port>` of ingest's HTTP listener.
    pub(crate) url: String,
    pub(crate) secrets: Secrets,
}

/// Moves every partition's event clock to `at`: sentinel scans for
/// unregistered waybills (so they raise nothing themselves) on enough keys to
/// reach all partitions, tagged `first_tag..first_tag + SENTINELS`. Waits until
/// they are normalized and then until the alerts and buyer messages the moved
/// watermark releases stop coming (nothing new for 3 s; at most 60 s in all).
pub(crate) async fn advance_clock(
    ingest: &Ingest,
    observed: &Mutex<Observed>,
    label: &str,
    first_tag: u64,
    at: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<()> {
    let sentinels: Vec<u64> = (first_tag..first_tag + SENTINELS).collect();
    for (i, tag) in sentinels.iter().enumerate() {
        let body =
            serde_json::json!({"carrier": "zto", "waybill": format!("{SENTINEL_PREFIX}{label}{i:03}"),
            "status": "in_transit", "occurred_at": at.to_rfc3339(),
            "description": format!("sentinel #{tag}")})
            .to_string()
            .into_bytes();
        let signature = trackstream_carriers::generic::sign(&body, &ingest.secrets.generic);
        ingest
            .http
            .post(format!("{}/v1/webhooks/generic", ingest.url))
            .header("x-trackstream-signature", signature)
            .body(body)
            .send()
            .await?;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last_count = ((0usize, 0usize), Instant::now());
    while Instant::now() < deadline {
        let (normalized, count) = observed
            .lock()
            .map(|o| {
                (
                    sentinels.iter().all(|t| o.event_at.contains_key(t)),
                    (o.alerts.len(), o.messages.len()),
                )
            })
            .unwrap_or((false, (0, 0)));
        if count != last_count.0 {
            last_count = (count, Instant::now());
        }
        if normalized && last_count.1.elapsed() >= Duration::from_secs(3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Registers `parcels` with ingest, 200 to a request.
pub(crate) async fn register(ingest: &Ingest, parcels: &[Parcel]) -> anyhow::Result<()> {
    for chunk in parcels.chunks(200) {
        let body: Vec<_> = chunk.iter().map(Parcel::registration).collect();
        let response = ingest
            .http
            .post(format!("{}/v1/shipments", ingest.url))
            .bearer_auth("bench-merchant-token")
            .json(&serde_json::json!({ "shipments": body }))
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("registration failed: {}", response.status());
        }
    }
    Ok(())
}

/// Acknowledged pushes of a step: newest scan tag → when it was sent and
/// answered, and the order it belongs to.
pub(crate) type Acked = HashMap<u64, (Sent, String)>;

/// What sending a step's schedule did.
pub(crate) struct Sending {
    pub(crate) acked: Acked,
    /// Webhooks accepted, and the scans they carried.
    pub(crate) accepted: (usize, usize),
    pub(crate) failed: usize,
    /// Until the last push was issued (the achieved offer rate).
    pub(crate) issued_in: Duration,
    /// Until the last push was answered.
    pub(crate) sent_in: Duration,
}

/// Sends `order` (parcel index, pushes upto) open-loop at `offered` pushes/s,
/// at most `concurrency` in flight: above the rate the pipeline accepts, the
/// cap turns the schedule into "as fast as accepted".
pub(crate) async fn send_schedule(
    ingest: &Ingest,
    parcels: &[Parcel],
    order: &[(usize, usize)],
    offered: f64,
    concurrency: usize,
) -> anyhow::Result<Sending> {
    let acks: Arc<Mutex<Acked>> = Arc::default();
    let accepted = Arc::new(Mutex::new((0usize, 0usize)));
    let failed = Arc::new(Mutex::new(0usize));
    let started = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / offered);
    let permits = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut tasks = Vec::with_capacity(order.len());
    for (i, (parcel, upto)) in order.iter().copied().enumerate() {
        let due = started + interval.mul_f64(i as f64);
        tokio::time::sleep_until(due.into()).await;
        let permit = permits.clone().acquire_owned().await?;
        let Some(parcel) = parcels.get(parcel) else {
            continue;
        };
        let push = parcel.push(upto, &ingest.secrets);
        let order_id = parcel.order_id.clone();
        let (http, acks, accepted, failed) = (
            ingest.http.clone(),
            acks.clone(),
            accepted.clone(),
            failed.clone(),
        );
        let url = format!("{}{}", ingest.url, push.path);
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let mut request = http.post(url).body(push.body);
            for (name, value) in push.headers {
                request = request.header(name, value);
            }
            let sent = now_ms();
            match request.send().await {
                Ok(r) if r.status().is_success() => {
                    let answered = now_ms();
                    if let Ok(mut acks) = acks.lock() {
                        acks.entry(push.newest_tag)
                            .or_insert((Sent { sent, answered }, order_id));
                    }
                    if let Ok(mut accepted) = accepted.lock() {
                        accepted.0 += 1;
                        accepted.1 += upto;
                    }
                }
                _ => {
                    if let Ok(mut failed) = failed.lock() {
                        *failed += 1;
                    }
                }
            }
        }));
    }
    let issued_in = started.elapsed();
    for task in tasks {
        let _ = task.await;
    }
    let sent_in = started.elapsed();
    Ok(Sending {
        acked: acks.lock().map(|a| a.clone()).unwrap_or_default(),
        accepted: accepted.lock().map(|a| *a).unwrap_or_default(),
        failed: failed.lock().map(|f| *f).unwrap_or(0),
        issued_in,
        sent_in,
    })
}

/// Waits until every acknowledged scan's update is out (or 60 s), and the
/// follower has read each hop's record of it (the slow-polled topics lag
/// behind by up to a fetch cycle). Returns how many scans have no update.
pub(crate) async fn drain(observed: &Mutex<Observed>, acked: &Acked) -> usize {
    let drain_deadline = Instant::now() + Duration::from_secs(60);
    let mut unmatched = acked.len();
    while Instant::now() < drain_deadline {
        let (without_update, unread) = observed
            .lock()
            .map(|o| {
                let without_update = acked
                    .keys()
                    .filter(|t| !o.update_at.contains_key(*t))
                    .count();
                let unread = acked
                    .keys()
                    .filter(|t| !o.raw_at.contains_key(*t) || !o.event_at.contains_key(*t))
                    .count();
                (without_update, unread)
            })
            .unwrap_or((unmatched, 1));
        unmatched = without_update;
        if unmatched == 0 && unread == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    unmatched
}
