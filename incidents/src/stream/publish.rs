//! Publishing: a place's current incident to `tracking.incidents`, and again
//! after a crash interrupted it.

use trackstream_runtime::CancellationToken;
use trackstream_runtime::kafka::HandlerError;

use super::{IncidentDetector, failed};
use crate::record;
use crate::store::PlaceId;

impl IncidentDetector {
    /// Produces the place's current incident (if unpublished changes exist)
    /// and clears the mark.
    pub async fn publish(&self, at: &PlaceId) -> Result<(), HandlerError> {
        let snapshot = self
            .store
            .snapshot(at, 0, 0, 0)
            .await
            .map_err(failed("reading for publish"))?;
        let Some(incident) = snapshot
            .current
            .as_ref()
            .filter(|_| snapshot.unpublished > 0)
        else {
            return self
                .store
                .published(at, 0)
                .await
                .map_err(failed("publish mark"));
        };
        let records = record::records(
            at,
            incident,
            &snapshot.members,
            self.config.max_parcels_per_record,
        );
        let n = records.len() as u64;
        self.producer
            .send_all(records)
            .await
            .map_err(|e| HandlerError(format!("incidents: producing: {e}")))?;
        self.metrics.published.inc_by(n);
        self.store
            .published(at, incident.version)
            .await
            .map_err(failed("publish mark"))
    }

    /// Publishes changes whose publishing a crash interrupted, every
    /// `republish_interval`, until `shutdown`.
    pub async fn republish(&self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.config.republish_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let dirty = match self.store.dirty().await {
                Ok(dirty) => dirty,
                Err(err) => {
                    tracing::warn!(%err, "incidents: reading unpublished changes failed; retried");
                    continue;
                }
            };
            for at in dirty {
                if let Err(err) = self.publish(&at).await {
                    tracing::warn!(%err, place = %at.place, "incidents: republishing failed; retried");
                }
            }
        }
    }
}
