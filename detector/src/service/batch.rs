//! The consumer's side: a batch of records decoded, grouped by waybill and
//! handed to the pipeline one partition at a time.

use std::collections::{BTreeMap, HashMap};

use prost::Message;
use trackstream_proto::v1::{Shipment, TrackingEvent};
use trackstream_proto::{time, topics};
use trackstream_runtime::kafka::{HandlerError, Inbound, OutRecord};

use super::Detector;
use super::pipeline::{Group, Job, Source};
use crate::engine::Input;
use crate::letters::{Failure, cause};
use crate::sink::Sink;

impl<S: Sink> Detector<S> {
    /// Applies a batch of consumed records (what the Kafka loop calls; public so
    /// tests and benches drive the exact same path without a broker).
    ///
    /// The number of Redis round trips is constant per partition of the batch,
    /// not per record: one pipelined load (states, registrations, duplicate
    /// check, watermark), the fold in memory, one commit script (each waybill
    /// on its own compare-and-set; on a standalone server it also assigns the
    /// updates' sequence numbers), then — after the sink acknowledged — one
    /// pipelined outbox clear and watermark raise ([`super::pipeline`]). Partitions are independent
    /// (their keys share one slot, their records one Kafka partition), so each
    /// goes through those steps on its own and they overlap: Redis works on one
    /// partition's commit while the detector folds another's. A waybill whose
    /// compare-and-set failed (another instance wrote it) is reloaded and
    /// re-applied in another round with the other conflicting ones.
    pub async fn apply_batch(&self, batch: &[Inbound]) -> Result<(), HandlerError> {
        self.flush_dirty().await?;
        let (groups, seen, mut undecodable) = self.group(batch);
        let mut by_partition: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
        for (index, group) in groups.iter().enumerate() {
            by_partition.entry(group.partition).or_default().push(index);
        }
        for partition in undecodable.keys() {
            by_partition.entry(*partition).or_default();
        }
        // Every partition runs to its end even if another fails: one that
        // committed must either clear its outbox or be marked for re-delivery.
        let groups = &groups;
        let results =
            futures::future::join_all(by_partition.into_iter().map(|(partition, members)| {
                let job = Job {
                    partition,
                    groups,
                    batch,
                    source: Source::Batch {
                        newest: seen.get(&partition).copied().unwrap_or(i64::MIN),
                    },
                };
                let letters = undecodable.remove(&partition).unwrap_or_default();
                async move {
                    let mut committing = false;
                    let result = self
                        .apply_partition(&job, members, letters, &mut committing)
                        .await;
                    if result.is_err()
                        && committing
                        && let Ok(mut dirty) = self.dirty.lock()
                    {
                        // Its outbox may hold committed outputs nobody produced.
                        dirty.insert(partition);
                    }
                    result
                }
            }))
            .await;
        results.into_iter().collect::<Result<Vec<()>, Failure>>()?;
        Ok(())
    }

    /// Decodes and groups a batch by waybill (partition order kept within
    /// each), and notes each partition's newest event time. Records that do
    /// not decode become letters, per partition.
    #[allow(clippy::type_complexity)]
    fn group(
        &self,
        batch: &[Inbound],
    ) -> (
        Vec<Group>,
        BTreeMap<i32, i64>,
        BTreeMap<i32, Vec<OutRecord>>,
    ) {
        let mut groups: Vec<Group> = Vec::new();
        let mut index: HashMap<(i32, String), usize> = HashMap::new();
        let mut seen: BTreeMap<i32, i64> = BTreeMap::new();
        let mut undecodable: BTreeMap<i32, Vec<OutRecord>> = BTreeMap::new();
        for (at_batch, record) in batch.iter().enumerate() {
            let input = if record.topic == topics::SHIPMENTS {
                Shipment::decode(record.payload.as_slice())
                    .map(Input::Registration)
                    .map_err(|e| e.to_string())
            } else {
                TrackingEvent::decode(record.payload.as_slice())
                    .map(Input::Event)
                    .map_err(|e| e.to_string())
            };
            let input = match input {
                Ok(input) => input,
                Err(err) => {
                    self.count("undecodable");
                    undecodable
                        .entry(record.partition)
                        .or_default()
                        .push(self.letters.letter(
                            record,
                            cause::UNDECODABLE,
                            &format!("not a trackstream.v1 record: {err}"),
                        ));
                    continue;
                }
            };
            let newest = seen.entry(record.partition).or_insert(i64::MIN);
            match &input {
                Input::Event(event) => {
                    self.count("event");
                    *newest = (*newest).max(time::millis(event.occurred_at.as_ref()));
                }
                Input::Registration(_) => self.count("registration"),
            }
            let key = (record.partition, record.key_str());
            let at = *index.entry(key).or_insert_with_key(|(partition, key)| {
                groups.push(Group {
                    partition: *partition,
                    key: key.clone(),
                    inputs: Vec::new(),
                    records: Vec::new(),
                    event_ids: Vec::new(),
                    due: Vec::new(),
                });
                groups.len() - 1
            });
            if let (Some(group), Input::Event(event)) = (groups.get_mut(at), &input) {
                group.event_ids.push(event.event_id.clone());
            }
            if let Some(group) = groups.get_mut(at) {
                group.inputs.push(input);
                group.records.push(at_batch);
            }
        }
        (groups, seen, undecodable)
    }
}
