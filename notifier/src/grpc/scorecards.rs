//! `GetScorecards`: delivery performance per carrier and lane, read from the
//! lane statistics' day buckets (`trackstream_lanes::store`).
//!
//! Scoped like every call: the caller's merchant's own buckets (counted
//! under `m:<merchant>|<key>`), listed from its index, so no other
//! merchant's parcel is ever in `merchant`; beside each, the same key over
//! every merchant, returned apart as `global_baseline` — the platform's
//! average, never one other merchant's numbers (a lane one other merchant
//! alone ships is its numbers, which is why the baseline is only offered for
//! keys the caller ships itself).

use trackstream_lanes::scorecard;
use trackstream_lanes::store::{LaneStore, merchant_key};
use trackstream_proto::v1::{GetScorecardsRequest, Scorecards};
use trackstream_runtime::ApiError;
use trackstream_runtime::ident::Ident;
use trackstream_runtime::redis::RedisConn;

/// Largest window (the statistics keep 15 days).
pub const MAX_DAYS: u32 = 14;
/// Scorecards returned at most (keys in order).
pub const MAX_KEYS: usize = 200;

/// The scorecards of `merchant` over the `days` days up to and including
/// `today` (a UTC day number).
pub async fn scorecards(
    conn: &RedisConn,
    merchant: &str,
    request: &GetScorecardsRequest,
    today: i64,
) -> Result<Scorecards, ApiError> {
    let days = match request.days {
        0 => MAX_DAYS,
        d if d > MAX_DAYS => {
            return Err(ApiError::BadRequest(format!(
                "days must be at most {MAX_DAYS}, got {d}"
            )));
        }
        d => d,
    };
    let carrier = request.carrier.trim().to_lowercase();
    if !carrier.is_empty() {
        Ident::Carrier
            .check(&carrier)
            .map_err(|e| ApiError::BadRequest(format!("carrier {e}")))?;
    }
    let store = LaneStore::new(conn.clone(), "reader", i64::from(MAX_DAYS) + 1);
    let keys: Vec<String> = store
        .indexed(merchant)
        .await
        .map_err(ApiError::from)?
        .into_iter()
        .filter(|k| carrier.is_empty() || k.split('|').nth(1) == Some(carrier.as_str()))
        .take(MAX_KEYS)
        .collect();
    let end = today + 1;
    let span = i64::from(days);
    let mut out = Scorecards::default();
    for key in keys {
        let own = store
            .window(&merchant_key(merchant, &key), end, span)
            .await
            .map_err(ApiError::from)?;
        if own.deliveries == 0 {
            continue;
        }
        let all = store
            .window(&key, end, span)
            .await
            .map_err(ApiError::from)?;
        out.merchant
            .push(scorecard::to_proto(&key, &own, span, end));
        out.global_baseline
            .push(scorecard::to_proto(&key, &all, span, end));
    }
    Ok(out)
}
