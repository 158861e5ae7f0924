//! Server-Sent Events from a [`Watch`]: one event per item, then — when the
//! watch ends with a resume point (the client fell behind, or the instance is
//! shutting down) — a `cutoff` event carrying it, and the stream ends.
//! `EventSource` reconnects by itself with `Last-Event-ID`, which the order
//! stream reads as its resume point.

use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde::Serialize;

use crate::backend::Watch;

/// The SSE response for `watch`, each item turned into `(name, id, data)` by `event`.
pub fn stream<T, D, F>(
    watch: Watch<T>,
    keep_alive: Duration,
    event: F,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>>
where
    T: Send + 'static,
    D: Serialize,
    F: Fn(&T) -> (&'static str, Option<String>, D) + Send + 'static,
{
    let events = futures::stream::unfold(
        (watch, event, false),
        |(mut watch, event, ended)| async move {
            if ended {
                return None;
            }
            match watch.recv().await? {
                Ok(item) => {
                    let (name, id, data) = event(&item);
                    let mut out = Event::default().event(name);
                    if let Some(id) = id {
                        out = out.id(id);
                    }
                    let out = out.json_data(data).unwrap_or_else(|_| {
                        Event::default().comment("unserializable item skipped")
                    });
                    Some((Ok(out), (watch, event, false)))
                }
                Err(status) => {
                    let resume: Option<u64> = status
                        .metadata()
                        .get("resume-after-seq")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse().ok());
                    let data = serde_json::json!({
                        "resume_after_seq": resume,
                        "reason": status.message(),
                    });
                    let out = Event::default()
                        .event("cutoff")
                        .json_data(data)
                        .unwrap_or_else(|_| Event::default().comment("cutoff"));
                    Some((Ok(out), (watch, event, true)))
                }
            }
        },
    );
    Sse::new(events).keep_alive(
        KeepAlive::new()
            .interval(keep_alive.max(Duration::from_secs(1)))
            .text("keep-alive"),
    )
}
