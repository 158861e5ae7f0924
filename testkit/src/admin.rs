//! A service's admin listener as tests see it: `/healthz` status codes and
//! gauges from `/metrics`, over plain HTTP/1.1 (no client dependency, so every
//! service's tests can use it).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Status code and body of `GET path` on `addr`; `None` when nothing answers
/// within five seconds (not started yet, or gone).
pub async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let request = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await.ok()?;
        let status = response.split_whitespace().nth(1)?.parse().ok()?;
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or_default();
        Some((status, body))
    };
    tokio::time::timeout(Duration::from_secs(5), request)
        .await
        .ok()
        .flatten()
}

/// `/healthz`'s status code, `None` when nothing answers.
pub async fn healthz(addr: SocketAddr) -> Option<u16> {
    get(addr, "/healthz").await.map(|(status, _)| status)
}

/// The value of the sample of a metric whose name ends with `name` (services
/// prefix their metrics) and whose labels include `group="<group>"`, in the
/// OpenMetrics text `metrics`.
pub fn gauge(metrics: &str, name: &str, group: &str) -> Option<f64> {
    let label = format!("group=\"{group}\"");
    metrics.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, labels) = series.split_once('{')?;
        (metric.ends_with(name) && labels.contains(&label))
            .then(|| value.parse().ok())
            .flatten()
    })
}

/// Every `(group, value)` of metric `name` (suffix match) in `metrics`.
pub fn gauges(metrics: &str, name: &str) -> Vec<(String, f64)> {
    metrics
        .lines()
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, labels) = series.split_once('{')?;
            if !metric.ends_with(name) {
                return None;
            }
            let group = labels.split("group=\"").nth(1)?.split('"').next()?;
            Some((group.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// The sum of the samples of metric `name` (suffix match) whose labels
/// contain `label` (e.g. `topic="scans.raw"`), 0 when there are none.
pub fn sum(metrics: &str, name: &str, label: &str) -> f64 {
    metrics
        .lines()
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, labels) = series.split_once('{')?;
            (metric.ends_with(name) && labels.contains(label))
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

/// `/healthz` status and the `/metrics` text read right after it (`None`
/// while nothing answers).
pub async fn probe(admin: SocketAddr) -> Option<(u16, String)> {
    let status = healthz(admin).await?;
    let (_, metrics) = get(admin, "/metrics").await?;
    Some((status, metrics))
}

/// The readiness probe every consuming service's tests run, in two halves
/// around restoring a cut link to the broker: while the service holds no
/// partitions it never answers other than 503; once it gets them, 200 comes,
/// and never before the backlog waiting on them was processed.
pub struct Readiness<'a> {
    /// The service's admin listener.
    pub admin: SocketAddr,
    /// The group whose `…_consumer_ready` gauge says it caught up.
    pub group: &'a str,
    /// How many consumer groups the service runs (one gauge each).
    pub groups: usize,
    /// Records processed so far, read from the metrics (each service counts
    /// its own groups' records).
    pub consumed: fn(&str) -> f64,
    /// The backlog it must have processed before it may say ready.
    pub backlog: f64,
}

impl Readiness<'_> {
    /// While the link is cut: for `window`, every probe shows each group
    /// holding no partition and a status of 503.
    pub async fn not_ready_while_cut(&self, window: Duration) {
        let claimed = crate::within(window, || async {
            let (status, metrics) = probe(self.admin).await?;
            let assigned = gauges(&metrics, "_consumer_assigned_partitions");
            assert_eq!(
                assigned.len(),
                self.groups,
                "one gauge per group: {assigned:?}"
            );
            assert!(assigned.iter().all(|(_, n)| *n == 0.0), "{assigned:?}");
            (status != 503).then_some(status)
        })
        .await;
        assert_eq!(
            claimed, None,
            "answered other than 503 while holding nothing"
        );
    }

    /// Once the link is back: waits (up to `wait`) for 200, checking on every
    /// probe that the group is not ready before its backlog was processed;
    /// returns the metrics read with the first 200, which must count the
    /// whole backlog.
    pub async fn ready_after_the_backlog(&self, wait: Duration, what: &str) -> String {
        let metrics = crate::eventually(wait, what, || async {
            let (status, metrics) = probe(self.admin).await?;
            if gauge(&metrics, "_consumer_ready", self.group) == Some(1.0) {
                // The gauge is encoded before the counter and set after the batches.
                assert_eq!(
                    (self.consumed)(&metrics),
                    self.backlog,
                    "ready before the backlog was processed"
                );
            }
            (status == 200).then_some(metrics)
        })
        .await;
        assert_eq!(
            (self.consumed)(&metrics),
            self.backlog,
            "200 before the backlog was processed"
        );
        metrics
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauges_are_found_by_name_suffix_and_group() {
        let text = "# HELP x\ntrackstream_notifier_consumer_ready{group=\"n\"} 1\n\
                    trackstream_notifier_live_consumer_ready{group=\"n-live-1\"} 0\n\
                    trackstream_notifier_consumer_assigned_partitions{group=\"n\"} 12\n# EOF\n";
        assert_eq!(gauge(text, "_consumer_ready", "n"), Some(1.0));
        assert_eq!(gauge(text, "_consumer_ready", "n-live-1"), Some(0.0));
        assert_eq!(
            gauge(text, "_consumer_assigned_partitions", "n"),
            Some(12.0)
        );
        assert_eq!(gauge(text, "_consumer_ready", "other"), None);
        assert_eq!(sum(text, "_consumer_ready", "group="), 1.0);
        assert_eq!(
            gauges(text, "_consumer_ready"),
            vec![("n".to_owned(), 1.0), ("n-live-1".to_owned(), 0.0)]
        );
    }
}
