//! One waybill's fold, with the checks that keep poison out of the outbox:
//! duplicates skipped, refused registrations and inputs whose outputs exceed
//! the record size limit set aside (dead-lettered) and the fold run again
//! without them.

use std::collections::BTreeSet;

use trackstream_proto::v1::TrackingEvent;
use trackstream_runtime::kafka::OutRecord;

use super::Detector;
use super::pipeline::{Group, Job};
use crate::engine::{Effects, Input, Waybill};
use crate::letters::{self, cause};
use crate::sink::Sink;
use crate::store::{Encoded, Loaded};

impl<S: Sink> Detector<S> {
    /// Folds one waybill's inputs (minus those `excluded`, and duplicates)
    /// and checks every output's size. An output over the limit is blamed on
    /// the input that made it ([`letters::culprits`]): that input is
    /// dead-lettered, excluded, and the waybill folded again without it, so
    /// its other inputs still apply. An oversized output no input of the batch
    /// made is dropped with a synthetic letter. Returns `None` when nothing
    /// changed.
    pub(super) fn fold_group(
        &self,
        job: &Job<'_>,
        group: &Group,
        loaded: &Loaded,
        (history, clock, hold_until): (&[TrackingEvent], i64, i64),
        excluded: &mut BTreeSet<usize>,
        letters: &mut Vec<OutRecord>,
    ) -> Option<(Waybill, Effects, Vec<Encoded>)> {
        let batch = job.batch;
        let (stage, source) = job.source.letter_origin();
        let limit = self.sink.max_record_bytes();
        let mut first = true;
        loop {
            let mut known = loaded.known.clone();
            let mut waybill = loaded.waybill.clone();
            waybill.hold_until = hold_until;
            // Usually nothing is a duplicate or set aside: then the group's
            // inputs are the fold's inputs as they are, without copying.
            let distinct = {
                let mut ids: Vec<&str> = group.event_ids.iter().map(String::as_str).collect();
                ids.sort_unstable();
                ids.windows(2).all(|w| w[0] != w[1])
            };
            let mut filtered: Vec<Input> = Vec::new();
            let fresh: &[Input] = if known.is_empty() && distinct && excluded.is_empty() {
                &group.inputs
            } else {
                for (i, input) in group.inputs.iter().enumerate() {
                    if excluded.contains(&i) {
                        continue;
                    }
                    match input {
                        Input::Event(event) if !known.insert(event.event_id.clone()) => {
                            if first {
                                self.count("duplicate");
                            }
                        }
                        _ => filtered.push(input.clone()),
                    }
                }
                &filtered
            };
            first = false;
            let mut fx = Effects::default();
            self.engine
                .apply(&mut waybill, fresh, history, clock, &mut fx);
            // Registrations the engine refused (another merchant's registration
            // of an owned waybill; ingest refuses these with 409, so one here
            // came around it) are dead-lettered and left out of any refold.
            // The engine counts them among the registrations it was given, so
            // the ordinal maps back to the group's inputs minus those excluded.
            for refused in std::mem::take(&mut fx.refused_registrations) {
                let input = group
                    .inputs
                    .iter()
                    .enumerate()
                    .filter(|(i, input)| {
                        !excluded.contains(i) && matches!(input, Input::Registration(_))
                    })
                    .nth(refused.registration)
                    .map(|(i, _)| i);
                let Some(i) = input else { continue };
                excluded.insert(i);
                if let Some(record) = group.records.get(i).and_then(|r| batch.get(*r)) {
                    letters.push(self.letters.letter(
                        record,
                        cause::NOT_OWNER,
                        &format!(
                            "merchant {} registered order {} for a waybill owned by merchant {}",
                            refused.merchant_id, refused.order_id, refused.owner
                        ),
                    ));
                }
            }
            if fx.history.is_empty()
                && fx.outputs.is_empty()
                && !waybill.registration_changed
                && waybill.state == loaded.waybill.state
            {
                return None;
            }
            let mut encoded: Vec<Encoded> = fx.outputs.iter().map(Encoded::new).collect();
            let over: Vec<usize> = encoded
                .iter()
                .enumerate()
                .filter(|(_, e)| letters::record_len(e) > limit)
                .map(|(i, _)| i)
                .collect();
            if over.is_empty() {
                return Some((waybill, fx, encoded));
            }
            let live = |i: usize| !excluded.contains(&i);
            let blamed: BTreeSet<usize> = over
                .iter()
                .filter_map(|o| fx.outputs.get(*o))
                .flat_map(|output| letters::culprits(&group.inputs, &live, output))
                .collect();
            let detail = over
                .first()
                .and_then(|o| encoded.get(*o))
                .map(|e| letters::too_large_detail(e, limit))
                .unwrap_or_default();
            if blamed.is_empty() {
                for o in over.into_iter().rev() {
                    if o < encoded.len() && o < fx.outputs.len() {
                        let output = encoded.remove(o);
                        fx.outputs.remove(o);
                        letters.push(self.output_letter(
                            stage,
                            source,
                            job.partition,
                            &output,
                            cause::OUTPUT_TOO_LARGE,
                            &letters::too_large_detail(&output, limit),
                        ));
                    }
                }
                return Some((waybill, fx, encoded));
            }
            for i in blamed {
                excluded.insert(i);
                if let Some(record) = group.records.get(i).and_then(|r| batch.get(*r)) {
                    letters.push(
                        self.letters
                            .letter(record, cause::OUTPUT_TOO_LARGE, &detail),
                    );
                }
            }
        }
    }
}
