//! Poison never stalls a partition: typed failures, output size checks and the
//! detector's dead letters.
//!
//! A failure is either **retriable** (Redis or the broker unavailable: the
//! batch, or the timer tick, is retried with backoff, nothing is set aside) or
//! **permanent** (sending or writing the same thing again cannot succeed: an
//! undecodable record, an output over `kafka.max_record_bytes`, a record the
//! broker refuses, a Lua script error caused by the data). A permanent failure
//! dead-letters what caused it on `tracking.dlq` (`runtime::dlq`), counts it in
//! `dead_letters{stage, cause}`, and the partition moves on.
//!
//! What a letter carries:
//! - stage `detector` (consumer batches): the **input record** unchanged —
//!   the scan or registration whose output could not be produced, so it can be
//!   replayed into its topic once the cause is fixed. An output is blamed on the
//!   input that made it large: an update on the registration of the same batch
//!   if there is one (every update embeds the registration), else on its scan;
//!   an alert on the registration, else on the batch's last scan of that
//!   waybill. The blamed input is left out of the fold, so the waybill's other
//!   inputs still apply.
//! - stage `detector.timers` (deadlines fired by the timer loop) and outputs
//!   found in the outbox: there is no input record, so the letter is
//!   synthetic: key = the waybill key, `dlq.source.topic` = `detector.timers`
//!   or `detector.outbox`, offset -1, and the value is the encoded output
//!   (alert, or update without `seq`) — dropped (`dlq.payload_dropped`) when it
//!   is itself over the limit, which is the usual cause. A commit script error
//!   on a timer carries the encoded waybill state instead.
//!
//! Outputs are checked **before** they enter the outbox, so an output that can
//! never be produced never gates a partition or the timer loop, and never
//! survives a restart in Redis. Entries already there (written before this
//! check, or when the limit was lowered) are checked again on re-delivery,
//! as are entries that do not decode.

use std::collections::BTreeSet;

use trackstream_runtime::kafka::{Inbound, OutRecord};

use crate::engine::{Input, Output};
use crate::sink::SinkError;
use crate::store::Encoded;

/// Stage of letters from consumer batches.
pub const STAGE: &str = "detector";
/// Stage of letters from the timer loop.
pub const STAGE_TIMERS: &str = "detector.timers";
/// `dlq.source.topic` of a synthetic letter for a timer-fired output.
pub const SOURCE_TIMERS: &str = "detector.timers";
/// `dlq.source.topic` of a synthetic letter for an outbox entry.
pub const SOURCE_OUTBOX: &str = "detector.outbox";

/// Causes (`dlq.cause`).
pub mod cause {
    /// The record does not decode as `trackstream.v1`.
    pub const UNDECODABLE: &str = "undecodable";
    /// An output would exceed `kafka.max_record_bytes`.
    pub const OUTPUT_TOO_LARGE: &str = "output_too_large";
    /// The broker refused an output for good.
    pub const OUTPUT_REFUSED: &str = "output_refused";
    /// A commit script failed on the waybill's data.
    pub const SCRIPT_ERROR: &str = "script_error";
    /// A registration from a merchant other than the parcel's owner.
    pub const NOT_OWNER: &str = "not_owner";
}

/// Why a batch or a timer tick failed, typed by what happens next.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// Redis did not answer or refused for now: retry with backoff.
    #[error("redis unavailable: {0}")]
    Redis(redis::RedisError),
    /// A script failed on the data it was given: retrying cannot help.
    #[error("redis script error: {0}")]
    Script(redis::RedisError),
    /// The sink failed (see [`SinkError`] for which kind).
    #[error("produce: {0}")]
    Sink(#[from] SinkError),
}

impl From<redis::RedisError> for Failure {
    fn from(err: redis::RedisError) -> Self {
        if is_data_error(&err) {
            Failure::Script(err)
        } else {
            Failure::Redis(err)
        }
    }
}

impl Failure {
    /// True when retrying cannot succeed.
    pub fn is_permanent(&self) -> bool {
        match self {
            Failure::Redis(_) => false,
            Failure::Script(_) => true,
            Failure::Sink(err) => err.is_permanent(),
        }
    }
}

/// Whether a Redis error is caused by the data sent rather than by the
/// server's availability: a Lua runtime error (`ERR ... script ...`, e.g.
/// "too many results to unpack") or a wrong-type key. Out of memory, loading,
/// cluster moves, timeouts and I/O errors are retriable.
pub fn is_data_error(err: &redis::RedisError) -> bool {
    match err.kind() {
        redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError) => {
            err.to_string().to_ascii_lowercase().contains("script")
        }
        _ => err.code() == Some("WRONGTYPE"),
    }
}

/// Size of the record an encoded output becomes, as
/// [`OutRecord::encoded_len`] counts it, with room for the largest `seq`
/// prefix an update gets at delivery.
pub fn record_len(output: &Encoded) -> usize {
    const MAX_SEQ_PREFIX: usize = 11;
    let prefix = if output.order.is_some() {
        MAX_SEQ_PREFIX
    } else {
        0
    };
    OutRecord::new(output.topic, output.key.clone(), Vec::new()).encoded_len()
        + output.body.len()
        + prefix
}

/// The detail of an oversized output's letter (topic and sizes only, never
/// contact data; the letter's key names the waybill).
pub fn too_large_detail(output: &Encoded, limit: usize) -> String {
    // Short on purpose: a letter must fit the same limit the output did not.
    format!(
        "{} record of {} bytes > {limit}",
        output.topic,
        record_len(output)
    )
}

/// The inputs of a waybill's batch to blame for `output` (indexes into
/// `inputs`, only those `live`): see the module docs. Empty when no input of
/// the batch made it (e.g. an alert fired by the clock on stored state).
pub fn culprits(
    inputs: &[Input],
    live: &dyn Fn(usize) -> bool,
    output: &Output,
) -> BTreeSet<usize> {
    let registrations: BTreeSet<usize> = inputs
        .iter()
        .enumerate()
        .filter(|(i, input)| live(*i) && matches!(input, Input::Registration(_)))
        .map(|(i, _)| i)
        .collect();
    if !registrations.is_empty() {
        return registrations;
    }
    let events = || {
        inputs
            .iter()
            .enumerate()
            .filter(|(i, _)| live(*i))
            .filter_map(|(i, input)| match input {
                Input::Event(event) => Some((i, event)),
                Input::Registration(_) => None,
            })
    };
    match output {
        Output::Update { id, .. } => events()
            .filter(|(_, event)| id.strip_prefix("u:") == Some(event.event_id.as_str()))
            .map(|(i, _)| i)
            .collect(),
        Output::Alert(_) => events().last().map(|(i, _)| i).into_iter().collect(),
    }
}

/// A stand-in input record for a letter about something no record carried (a
/// timer-fired output, an outbox entry): `source` names where it came from.
pub fn synthetic(source: &str, partition: i32, key: &str, payload: Vec<u8>) -> Inbound {
    Inbound {
        topic: source.to_owned(),
        partition,
        offset: -1,
        key: Some(key.as_bytes().to_vec()),
        payload,
        headers: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use trackstream_proto::v1::{Shipment, ShipmentUpdate, TrackingEvent};

    use super::*;

    fn event(id: &str) -> Input {
        Input::Event(TrackingEvent {
            event_id: id.into(),
            ..Default::default()
        })
    }

    fn update(id: &str) -> Output {
        Output::Update {
            id: id.into(),
            update: Box::new(ShipmentUpdate::default()),
        }
    }

    #[test]
    fn an_update_is_blamed_on_the_registration_else_on_its_scan() {
        let inputs = vec![
            event("e1"),
            Input::Registration(Shipment::default()),
            event("e2"),
        ];
        let all = |_: usize| true;
        assert_eq!(
            culprits(&inputs, &all, &update("u:e2")),
            BTreeSet::from([1])
        );
        let without_registration = |i: usize| i != 1;
        assert_eq!(
            culprits(&inputs, &without_registration, &update("u:e2")),
            BTreeSet::from([2])
        );
        assert_eq!(
            culprits(&inputs, &without_registration, &update("r:sf:1")),
            BTreeSet::new()
        );
        assert_eq!(
            culprits(
                &inputs,
                &without_registration,
                &Output::Alert(Box::default())
            ),
            BTreeSet::from([2])
        );
    }

    #[test]
    fn an_update_is_measured_with_room_for_its_sequence_number() {
        let encoded = Encoded::new(&update("u:e1"));
        let bare = OutRecord::new(encoded.topic, encoded.key.clone(), encoded.body.clone());
        assert_eq!(record_len(&encoded), bare.encoded_len() + 11);
    }
}
