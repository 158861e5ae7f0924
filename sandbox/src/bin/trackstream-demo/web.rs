//! The web face of the demo: a buyer's tracking page opened from a real buyer
//! message, the order lookup and the merchant console, printed with what
//! their API answers so the demo shows they work (and where to click).

use anyhow::Context;
use serde_json::Value;
use trackstream_loadgen::Parcel;
use trackstream_proto::v1::BuyerNotification;

use crate::Args;

/// Prints the page links of the stack and checks the buyer's one answers.
pub async fn show(
    http: &reqwest::Client,
    args: &Args,
    messages: &[BuyerNotification],
    parcels: &[Parcel],
) -> anyhow::Result<()> {
    let with_link = messages.iter().filter(|m| !m.tracking_url.is_empty());
    let linked = with_link.clone().count();
    println!(
        "\nweb face ({}): {linked} of {} buyer messages carry a tracking-page link",
        args.web,
        messages.len()
    );
    // The message of the parcel with the most scans, for a full timeline.
    let Some(message) = with_link.max_by_key(|m| {
        parcels
            .iter()
            .find(|p| p.order_id == m.order_id)
            .map_or(0, |p| p.scans.len())
    }) else {
        println!("  no message carried a link (is [web] configured in notifier.toml?)");
        return Ok(());
    };
    let token = message.tracking_url.rsplit('/').next().unwrap_or_default();
    let view: Value = http
        .get(format!("{}/api/v1/track/{token}", args.web))
        .send()
        .await
        .context("opening the buyer's link")?
        .json()
        .await
        .context("the buyer view")?;
    println!("  buyer tracking page:  {}", message.tracking_url);
    for order in view["orders"].as_array().into_iter().flatten() {
        for parcel in order["parcels"].as_array().into_iter().flatten() {
            let statuses: Vec<&str> = parcel["events"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e["status"].as_str())
                .collect();
            println!(
                "    order {} parcel {}: {} — timeline newest first {:?}",
                order["order_id"].as_str().unwrap_or("?"),
                parcel["waybill"].as_str().unwrap_or("?"),
                parcel["status"].as_str().unwrap_or("?"),
                statuses
            );
        }
    }
    let merchant = view["shop"]["id"].as_str().unwrap_or("m-demo");
    if let Some(parcel) = parcels.iter().find(|p| p.order_id == message.order_id) {
        let phone = parcel.registration()["buyer"]["phone"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let last4 = phone
            .get(phone.len().saturating_sub(4)..)
            .unwrap_or_default();
        println!(
            "  order lookup:         {}/s/{merchant}  (order {}, last 4 phone digits {last4})",
            args.web, message.order_id
        );
    }
    println!(
        "  merchant console:     {}/console  (sign in with the token {})",
        args.web, args.token
    );
    println!("  API (OpenAPI 3.1):    {}/api/openapi.json", args.web);
    Ok(())
}
