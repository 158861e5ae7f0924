//! Records and gRPC replies as JSON, through the contract's own descriptor
//! (`trackstream_proto::v1::FILE_DESCRIPTOR_SET`) and prost-reflect, so the JSON
//! is protobuf's canonical mapping (camelCase names, RFC 3339 timestamps, enum
//! names) and follows the .proto without hand-written serializers.
//!
//! Which message a record holds is decided by its topic (DESIGN.md); a dead
//! letter holds its source topic's message, named by its `dlq.source.topic`
//! header. Values that are not protobuf of the expected type are shown as text
//! when UTF-8, else base64, never dropped.

use std::sync::OnceLock;

use base64::Engine as _;
use prost_reflect::{DescriptorPool, DynamicMessage};
use serde_json::{Map, Value, json};
use trackstream_proto::topics;
use trackstream_runtime::dlq::headers;

use crate::records::Record;

/// The descriptor pool of the contract, decoded once.
fn pool() -> Result<&'static DescriptorPool, String> {
    static POOL: OnceLock<Result<DescriptorPool, String>> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(trackstream_proto::v1::FILE_DESCRIPTOR_SET)
            .map_err(|e| format!("the embedded descriptor set is invalid: {e}"))
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// The message type of records on `topic`, `None` for topics outside the
/// contract.
pub fn message_type(topic: &str) -> Option<&'static str> {
    Some(match topic {
        topics::SCANS_RAW | topics::SCANS_DLQ => "trackstream.v1.RawScan",
        topics::SHIPMENTS => "trackstream.v1.Shipment",
        topics::TRACKING_EVENTS => "trackstream.v1.TrackingEvent",
        topics::TRACKING_UPDATES => "trackstream.v1.ShipmentUpdate",
        topics::TRACKING_ALERTS => "trackstream.v1.Alert",
        topics::BUYER_NOTIFICATIONS => "trackstream.v1.BuyerNotification",
        topics::TRACKING_LANES => "trackstream.v1.Scorecard",
        topics::TRACKING_INCIDENTS => "trackstream.v1.Incident",
        topics::INCIDENTS_DECLARED => "trackstream.v1.IncidentDeclaration",
        _ => return None,
    })
}

/// `bytes` decoded as message `full_name`, in protobuf JSON.
pub fn to_json(full_name: &str, bytes: &[u8]) -> Result<Value, String> {
    let descriptor = pool()?
        .get_message_by_name(full_name)
        .ok_or_else(|| format!("{full_name} is not in the contract"))?;
    let message =
        DynamicMessage::decode(descriptor, bytes).map_err(|e| format!("not a {full_name}: {e}"))?;
    let mut value = serde_json::to_value(&message).map_err(|e| e.to_string())?;
    // A raw scan's payload is the provider's own bytes (JSON, XML or a form):
    // shown as text as well, since base64 hides what an operator looks for.
    let payload_text = message.get_field_by_name("payload").and_then(|v| {
        v.as_bytes()
            .and_then(|b| String::from_utf8(b.to_vec()).ok())
    });
    if full_name == "trackstream.v1.RawScan"
        && let (Value::Object(fields), Some(text)) = (&mut value, payload_text)
    {
        fields.insert("payloadText".into(), Value::String(text));
    }
    Ok(value)
}

/// A typed message (a gRPC reply) in protobuf JSON.
pub fn message_json<M: prost::Message>(full_name: &str, message: &M) -> Result<Value, String> {
    to_json(full_name, &message.encode_to_vec())
}

/// Bytes that are not (known) protobuf: text when UTF-8, else base64.
fn opaque(bytes: &[u8]) -> (&'static str, Value) {
    match std::str::from_utf8(bytes) {
        Ok(text) => ("valueText", Value::String(text.to_owned())),
        Err(_) => (
            "valueBase64",
            Value::String(base64::engine::general_purpose::STANDARD.encode(bytes)),
        ),
    }
}

/// One record as a JSON object: coordinates, key, headers and the decoded value
/// (`value`), or `valueText` / `valueBase64` with `decodeError` when it is not
/// the expected message.
pub fn record_json(record: &Record) -> Value {
    let mut out = Map::new();
    out.insert("topic".into(), json!(record.topic));
    out.insert("partition".into(), json!(record.partition));
    out.insert("offset".into(), json!(record.offset));
    if let Some(ms) = record.timestamp
        && let Some(at) = chrono::DateTime::from_timestamp_millis(ms)
    {
        out.insert("timestamp".into(), json!(at.to_rfc3339()));
    }
    out.insert("key".into(), json!(record.key_text()));
    let header_map: Map<String, Value> = record
        .headers
        .iter()
        .map(|(name, value)| {
            let value = value
                .as_deref()
                .map(|v| Value::String(String::from_utf8_lossy(v).into_owned()))
                .unwrap_or(Value::Null);
            (name.clone(), value)
        })
        .collect();
    if !header_map.is_empty() {
        out.insert("headers".into(), Value::Object(header_map));
    }
    // A dead letter holds its source topic's record.
    let source = record.header(headers::SOURCE_TOPIC);
    let topic = source.as_deref().unwrap_or(&record.topic);
    let decoded = match message_type(topic) {
        Some(full_name) if !record.payload.is_empty() => to_json(full_name, &record.payload),
        Some(_) => Ok(Value::Null),
        None => Err(String::new()),
    };
    match decoded {
        Ok(value) => {
            out.insert("value".into(), value);
        }
        Err(error) => {
            let (name, value) = opaque(&record.payload);
            out.insert(name.into(), value);
            if !error.is_empty() {
                out.insert("decodeError".into(), json!(error));
            }
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use prost::Message as _;
    use trackstream_proto::v1::{RawScan, TrackingEvent};

    use super::*;

    fn record(topic: &str, payload: Vec<u8>, headers: Vec<(&str, &str)>) -> Record {
        Record {
            topic: topic.into(),
            partition: 1,
            offset: 7,
            timestamp: Some(1_795_705_200_000),
            key: Some(b"sf:SF1".to_vec()),
            headers: headers
                .into_iter()
                .map(|(n, v)| (n.to_owned(), Some(v.as_bytes().to_vec())))
                .collect(),
            payload,
        }
    }

    #[test]
    fn every_pipeline_topic_has_a_message_in_the_contract() {
        for topic in topics::ALL {
            if topic == topics::TRACKING_DLQ {
                assert_eq!(message_type(topic), None);
                continue;
            }
            let name = message_type(topic).unwrap_or_default();
            assert!(to_json(name, &[]).is_ok(), "{topic}: {name}");
        }
    }

    #[test]
    fn events_decode_to_protobuf_json_and_raw_scans_show_their_text() {
        let event = TrackingEvent {
            event_id: "e-1".into(),
            waybill: "SF1".into(),
            occurred_at: Some(trackstream_proto::time::from_millis(1_795_705_200_000)),
            ..TrackingEvent::default()
        };
        let json = record_json(&record(
            topics::TRACKING_EVENTS,
            event.encode_to_vec(),
            vec![],
        ));
        assert_eq!(json["value"]["eventId"], "e-1");
        assert_eq!(json["value"]["occurredAt"], "2026-11-26T15:00:00Z");
        assert_eq!(json["key"], "sf:SF1");

        let raw = RawScan {
            payload: br#"{"a":1}"#.to_vec(),
            ..RawScan::default()
        };
        let json = record_json(&record(topics::SCANS_RAW, raw.encode_to_vec(), vec![]));
        assert_eq!(json["value"]["payloadText"], r#"{"a":1}"#);
    }

    #[test]
    fn dead_letters_decode_as_their_source_and_garbage_is_kept() {
        let event = TrackingEvent {
            event_id: "e-2".into(),
            ..TrackingEvent::default()
        };
        let letter = record(
            topics::TRACKING_DLQ,
            event.encode_to_vec(),
            vec![
                (headers::SOURCE_TOPIC, topics::TRACKING_EVENTS),
                (headers::CAUSE, "x"),
            ],
        );
        let json = record_json(&letter);
        assert_eq!(json["value"]["eventId"], "e-2");
        assert_eq!(json["headers"][headers::CAUSE], "x");

        let garbage = record_json(&record(topics::TRACKING_EVENTS, vec![0xff, 0xff], vec![]));
        assert_eq!(garbage["valueBase64"], "//8=");
        assert!(
            garbage["decodeError"]
                .as_str()
                .is_some_and(|e| e.contains("TrackingEvent"))
        );
        let text = record_json(&record("other", b"hello".to_vec(), vec![]));
        assert_eq!(text["valueText"], "hello");
    }
}
