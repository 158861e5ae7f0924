//! Delivery, the last step of the one pipeline, for committed folds and for
//! outbox re-delivery alike: updates get their sequence numbers (the
//! order-log append), dead letters go first, then the records, then the outbox entries
//! are cleared (with the watermark raise and the ownership claims' expiry). An
//! output the sink refuses for good becomes a letter instead of gating the
//! partition.

use trackstream_proto::v1::{Alert, AlertState};
use trackstream_runtime::kafka::{HandlerError, OutRecord};

use super::Detector;
use super::pipeline::{Folded, Job};
use crate::engine::Output;
use crate::letters::{self, Failure, cause};
use crate::sink::{Sink, SinkError};
use crate::store::Encoded;

/// Appends in flight at once (one script per update in its order's slot):
/// bounded, because a re-delivered outbox can hold thousands of updates (a
/// registration that joined a long history), and thousands of scripts queued
/// at once on one connection outlive its response timeout.
const SEQUENCE_CONCURRENCY: usize = 64;

/// Records ready to produce for one partition, and what clearing them takes.
#[derive(Default)]
struct Outgoing {
    records: Vec<OutRecord>,
    /// Per record: the group it came from (`None` for outbox re-delivery)
    /// and the output it carries, for a letter if the sink refuses it.
    origins: Vec<(Option<usize>, Output)>,
    /// Outbox entries to clear once the records are acknowledged (including
    /// entries set aside as letters).
    outbox_ids: Vec<String>,
    /// Alerts to count and log once produced.
    alerts: Vec<Alert>,
    /// Updates' delivery predictions (order id, waybill, prediction) to count
    /// and log once produced.
    predictions: Vec<(String, String, trackstream_proto::v1::DeliveryPrediction)>,
}

impl Outgoing {
    fn push(&mut self, origin: (Option<usize>, Output), encoded: Encoded, seq: Option<u64>) {
        self.outbox_ids.push(encoded.outbox_id.clone());
        let (topic, key) = (encoded.topic, encoded.key.clone());
        self.records
            .push(OutRecord::new(topic, key, encoded.payload(seq)));
        self.origins.push(origin);
    }
}

impl<S: Sink> Detector<S> {
    /// Delivers a partition's committed folds. `letters` are the job's dead
    /// letters so far; `mark` the watermark to raise once produced.
    pub(super) async fn deliver_committed(
        &self,
        job: &Job<'_>,
        mut committed: Vec<Folded>,
        letters: Vec<OutRecord>,
        wall: i64,
        mark: Option<i64>,
    ) -> Result<(), Failure> {
        // Entries the commit did not append inline (Redis Cluster).
        if !self.store.inline_sequence() {
            let mut pending = Vec::new();
            for f in committed.iter_mut() {
                for (encoded, seq) in f.encoded.iter().zip(f.seqs.iter_mut()) {
                    if encoded.order.is_some() {
                        pending.push((encoded, seq));
                    }
                }
            }
            self.sequence_all(pending, wall).await?;
        }
        let mut out = Outgoing::default();
        let mut claims = Vec::with_capacity(committed.len());
        for folded in committed {
            claims.push((folded.waybill.key.clone(), folded.expire_at));
            for ((encoded, seq), output) in folded
                .encoded
                .into_iter()
                .zip(folded.seqs)
                .zip(&folded.outputs)
            {
                out.push((Some(folded.group), output.clone()), encoded, seq);
            }
            out.alerts
                .extend(folded.outputs.into_iter().filter_map(|o| match o {
                    Output::Alert(alert) => Some(*alert),
                    Output::Update { .. } => None,
                }));
        }
        self.deliver(job, out, letters, mark, &claims).await
    }

    /// Assigns each update its sequence number (appending it to its order log), a
    /// bounded number in flight at once.
    async fn sequence_all(
        &self,
        pending: Vec<(&Encoded, &mut Option<u64>)>,
        wall: i64,
    ) -> Result<(), Failure> {
        let order_expire_at = self.retention.order_expires_at(wall);
        let mut pending = pending.into_iter();
        loop {
            let chunk: Vec<_> = pending.by_ref().take(SEQUENCE_CONCURRENCY).collect();
            if chunk.is_empty() {
                return Ok(());
            }
            futures::future::try_join_all(chunk.into_iter().map(|(encoded, seq)| async move {
                *seq = Some(self.store.sequence(encoded, order_expire_at).await?);
                Ok::<_, redis::RedisError>(())
            }))
            .await?;
        }
    }

    /// Letters, records, then the outbox clear: once letters are acknowledged
    /// the outputs they replace may be forgotten; on failure the outputs stay
    /// in the outbox, and the caller marks the partition for re-delivery
    /// before the next attempt.
    async fn deliver(
        &self,
        job: &Job<'_>,
        out: Outgoing,
        letters: Vec<OutRecord>,
        mark: Option<i64>,
        claims: &[(String, i64)],
    ) -> Result<(), Failure> {
        self.send_letters(letters).await?;
        let (stage, source) = job.source.letter_origin();
        self.produce_all(out.records, |index, reason| {
            let (group, output) = out.origins.get(index)?;
            // Blame the input record that made the output, when there is one.
            let record = group.and_then(|g| job.groups.get(g)).and_then(|group| {
                let blamed = letters::culprits(&group.inputs, &|_| true, output);
                blamed
                    .first()
                    .and_then(|i| group.records.get(*i))
                    .and_then(|r| job.batch.get(*r))
            });
            Some(match record {
                Some(record) => self.letters.letter(record, cause::OUTPUT_REFUSED, reason),
                None => self.output_letter(
                    stage,
                    source,
                    job.partition,
                    &Encoded::new(output),
                    cause::OUTPUT_REFUSED,
                    reason,
                ),
            })
        })
        .await?;
        let ids: Vec<&str> = out.outbox_ids.iter().map(String::as_str).collect();
        futures::future::try_join(
            self.store.finish_partition(job.partition, &ids, mark),
            self.store.expire_owners(claims),
        )
        .await?;
        for alert in &out.alerts {
            self.log_alert(alert);
        }
        for (order_id, waybill, prediction) in &out.predictions {
            self.log_prediction(order_id, waybill, prediction);
        }
        Ok(())
    }

    /// Re-delivers whatever a partition's outbox still holds, through the same
    /// delivery as a commit. Entries that can never be produced (over the size
    /// limit, refused, undecodable) are dead-lettered and removed, so they
    /// neither gate the partition nor survive a restart.
    pub async fn flush_outbox(&self, partition: i32) -> Result<usize, HandlerError> {
        let (pending, undecodable) = self
            .store
            .pending_outbox(partition)
            .await
            .map_err(Failure::from)?;
        let count = pending.len();
        let job = Job {
            partition,
            groups: &[],
            batch: &[],
            source: super::pipeline::Source::Outbox,
        };
        let (stage, source) = job.source.letter_origin();
        let mut out = Outgoing::default();
        let mut letters = Vec::new();
        for (id, bytes) in undecodable {
            letters.push(self.letters.letter(
                &letters::synthetic(source, partition, &id, bytes),
                cause::UNDECODABLE,
                "outbox entry does not decode as an update or an alert",
            ));
            out.outbox_ids.push(id);
        }
        let limit = self.sink.max_record_bytes();
        let mut sendable = Vec::with_capacity(pending.len());
        for output in pending {
            let encoded = Encoded::new(&output);
            if letters::record_len(&encoded) > limit {
                letters.push(self.output_letter(
                    stage,
                    source,
                    partition,
                    &encoded,
                    cause::OUTPUT_TOO_LARGE,
                    &letters::too_large_detail(&encoded, limit),
                ));
                out.outbox_ids.push(encoded.outbox_id);
                continue;
            }
            match &output {
                Output::Alert(alert) => out.alerts.push(alert.as_ref().clone()),
                Output::Update { update, .. } => {
                    if let Some(prediction) = &update.prediction {
                        let waybill = update.event.as_ref().map(|e| e.waybill.clone());
                        out.predictions.push((
                            update.order_id.clone(),
                            waybill.unwrap_or_default(),
                            prediction.clone(),
                        ));
                    }
                }
            }
            sendable.push((encoded, output));
        }
        let mut seqs = vec![None; sendable.len()];
        let mut updates = Vec::new();
        for ((encoded, _), seq) in sendable.iter().zip(seqs.iter_mut()) {
            if encoded.order.is_some() {
                updates.push((encoded, seq));
            }
        }
        self.sequence_all(updates, (self.wall)()).await?;
        for ((encoded, output), seq) in sendable.into_iter().zip(seqs) {
            out.push((None, output), encoded, seq);
        }
        self.deliver(&job, out, letters, None, &[]).await?;
        if count > 0 {
            tracing::info!(partition, count, "outbox re-delivered");
        }
        Ok(count)
    }

    /// A synthetic letter for an output no input record carried.
    pub(super) fn output_letter(
        &self,
        stage: &'static str,
        source: &str,
        partition: i32,
        output: &Encoded,
        cause: &'static str,
        detail: &str,
    ) -> OutRecord {
        let inbound = letters::synthetic(source, partition, &output.key, output.body.clone());
        self.letters.letter_as(stage, &inbound, cause, detail)
    }

    /// Produces dead letters. They are sized to fit (`runtime::dlq` drops a
    /// value that does not), so any failure here is treated as retriable.
    ///
    /// A letter that still cannot fit (its key alone over the limit) is
    /// logged with its source coordinates and counted
    /// (`unsendable_letters`), never retried: retrying it would stall the
    /// partition it was meant to free.
    async fn send_letters(&self, mut letters: Vec<OutRecord>) -> Result<(), Failure> {
        let limit = self.sink.max_record_bytes();
        letters.retain(|letter| {
            let fits = letter.encoded_len() <= limit;
            if !fits {
                self.metrics.unsendable_letters.inc();
                let header = |name: &str| letter.header(name).unwrap_or_default();
                tracing::error!(
                    key = %trackstream_runtime::dlq::truncate(&letter.key, 128),
                    bytes = letter.encoded_len(), limit,
                    cause = header(trackstream_runtime::dlq::headers::CAUSE),
                    source_topic = header(trackstream_runtime::dlq::headers::SOURCE_TOPIC),
                    source_partition = header(trackstream_runtime::dlq::headers::SOURCE_PARTITION),
                    source_offset = header(trackstream_runtime::dlq::headers::SOURCE_OFFSET),
                    "dead letter too large to produce; dropped");
            }
            fits
        });
        if letters.is_empty() {
            return Ok(());
        }
        self.sink
            .send_all(letters)
            .await
            .map_err(|err| Failure::Sink(SinkError::Unavailable(err.to_string())))
    }

    /// Produces `records` in order. If the sink refuses them for good, it falls
    /// back to one record at a time, so only the records it refuses are set
    /// aside — as the letter `letter_for(index, reason)` builds, produced
    /// after. A retriable failure is returned as it is (the caller retries).
    async fn produce_all(
        &self,
        records: Vec<OutRecord>,
        letter_for: impl Fn(usize, &str) -> Option<OutRecord>,
    ) -> Result<(), Failure> {
        if records.is_empty() {
            return Ok(());
        }
        let err = match self.sink.send_all(records.clone()).await {
            Ok(()) => return Ok(()),
            Err(err) if !err.is_permanent() => return Err(err.into()),
            Err(err) => err,
        };
        tracing::warn!(%err, count = records.len(), "outputs refused for good; producing one at a time");
        let mut letters = Vec::new();
        for (index, record) in records.into_iter().enumerate() {
            match self.sink.send_all(vec![record]).await {
                Ok(()) => {}
                Err(err) if err.is_permanent() => {
                    letters.extend(letter_for(index, &err.to_string()));
                }
                Err(err) => return Err(err.into()),
            }
        }
        self.send_letters(letters).await
    }

    fn log_alert(&self, alert: &Alert) {
        let state = AlertState::try_from(alert.state).unwrap_or(AlertState::Unspecified);
        self.metrics
            .alerts
            .get_or_create(&vec![
                ("rule", alert.rule.clone()),
                ("state", state.as_str_name().to_owned()),
            ])
            .inc();
        tracing::info!(alert_id = %alert.alert_id, rule = %alert.rule, state = state.as_str_name(),
            tier = alert.tier, waybill = %alert.waybill, order_id = %alert.order_id,
            lead_seconds = alert.lead_seconds, "alert emitted");
    }

    fn log_prediction(
        &self,
        order_id: &str,
        waybill: &str,
        prediction: &trackstream_proto::v1::DeliveryPrediction,
    ) {
        let confidence =
            trackstream_proto::v1::PredictionConfidence::try_from(prediction.confidence)
                .unwrap_or_default();
        self.metrics
            .predictions
            .get_or_create(&vec![
                ("confidence", confidence.as_str_name().to_owned()),
                ("level", prediction.level.clone()),
            ])
            .inc();
        tracing::debug!(%order_id, %waybill, confidence = confidence.as_str_name(),
            level = %prediction.level, stage = %prediction.stage, "delivery predicted");
    }

    /// Re-delivers the outboxes of partitions whose delivery failed after a
    /// commit, before anything new is committed there.
    pub(super) async fn flush_dirty(&self) -> Result<(), HandlerError> {
        let dirty: Vec<i32> = match self.dirty.lock() {
            Ok(mut dirty) => std::mem::take(&mut *dirty).into_iter().collect(),
            Err(_) => Vec::new(),
        };
        for partition in dirty {
            if let Err(err) = self.flush_outbox(partition).await {
                if let Ok(mut set) = self.dirty.lock() {
                    set.insert(partition);
                }
                return Err(err);
            }
        }
        Ok(())
    }
}
