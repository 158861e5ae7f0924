//! What the detector stores as bytes, and how: outputs (for the commit script,
//! the outbox and the Kafka record), the outbox entry's kind tag, a waybill's
//! state hash fields. The order-log entry is not encoded here: the append
//! script encodes it once (`lua/order_log.lua`); an update's record is the
//! protobuf merge of `{seq}` and its body, the same bytes by the protobuf
//! encoding rules (fields in tag order, `seq` is field 1), which
//! `redis_equivalence` checks byte for byte.

use prost::Message;
use trackstream_proto::v1::{Alert, Shipment, ShipmentUpdate};
use trackstream_proto::{keys, topics};

use crate::engine::{Output, Waybill, WaybillState};

/// An output encoded once, for the outbox, the commit script and the record.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// Destination topic.
    pub topic: &'static str,
    /// Record key.
    pub key: String,
    /// Outbox id (for updates also the sequence id).
    pub outbox_id: String,
    /// The update (without `seq`) or the alert, protobuf-encoded.
    pub body: Vec<u8>,
    /// Updates: `(order id, merchant id)`; alerts: `None`.
    pub order: Option<(String, String)>,
}

impl Encoded {
    /// Encodes an output.
    pub fn new(output: &Output) -> Self {
        match output {
            Output::Update { id, update } => Encoded {
                topic: topics::TRACKING_UPDATES,
                key: update
                    .event
                    .as_ref()
                    .map(|e| keys::waybill_key(&e.carrier, &e.waybill))
                    .unwrap_or_default(),
                outbox_id: id.clone(),
                body: update.encode_to_vec(),
                order: Some((update.order_id.clone(), update.merchant_id.clone())),
            },
            Output::Alert(alert) => Encoded {
                topic: topics::TRACKING_ALERTS,
                key: keys::waybill_key(&alert.carrier, &alert.waybill),
                outbox_id: output.outbox_id(),
                body: alert.encode_to_vec(),
                order: None,
            },
        }
    }

    /// The outbox entry's kind tag: `u` update, `a` alert (the commit script
    /// stores `kind .. body`).
    pub fn kind(&self) -> &'static str {
        if self.order.is_some() { "u" } else { "a" }
    }

    /// The record's value: an update with its sequence number `seq` (the
    /// bytes its order-log entry holds), or the alert as encoded. Protobuf
    /// messages concatenate as a merge, so the update is `{seq}` encoded by
    /// prost followed by the body: no copy of the update is decoded or
    /// re-encoded, and no varint is written by hand.
    pub fn payload(self, seq: Option<u64>) -> Vec<u8> {
        match seq {
            Some(seq) => {
                let head = ShipmentUpdate {
                    seq,
                    ..Default::default()
                };
                let mut out = Vec::with_capacity(head.encoded_len() + self.body.len());
                head.encode_raw(&mut out);
                out.extend_from_slice(&self.body);
                out
            }
            None => self.body,
        }
    }
}

/// An outbox entry back as an output (`None`: written by another version, or
/// damaged).
pub fn decode_outbox(id: &str, bytes: &[u8]) -> Option<Output> {
    let (tag, body) = bytes.split_first()?;
    match tag {
        b'u' => Some(Output::Update {
            id: id.to_owned(),
            update: Box::new(ShipmentUpdate::decode(body).ok()?),
        }),
        b'a' => Some(Output::Alert(Box::new(Alert::decode(body).ok()?))),
        _ => None,
    }
}

/// The commit script's registration argument: the encoded registration when it
/// changed, empty for "leave the stored one as it is".
pub fn registration_arg(waybill: &Waybill) -> Vec<u8> {
    match (&waybill.registration, waybill.registration_changed) {
        (Some(registration), true) => registration.encode_to_vec(),
        _ => Vec::new(),
    }
}

/// A waybill from its state hash fields `v`, `s`, `r` (each absent for a new
/// or expired waybill: version 0, empty state).
pub fn decode_waybill(
    partition: i32,
    key: &str,
    version: Option<&[u8]>,
    state: Option<&[u8]>,
    registration: Option<&[u8]>,
) -> Waybill {
    Waybill {
        key: key.to_owned(),
        partition,
        version: version
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        state: state
            .and_then(|s| WaybillState::decode(s).ok())
            .unwrap_or_default(),
        registration: registration.and_then(|r| Shipment::decode(r).ok()),
        registration_changed: false,
        hold_until: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outbox_entry_decodes_back_to_its_output() {
        let update = Output::Update {
            id: "u:e1".into(),
            update: Box::new(ShipmentUpdate {
                order_id: "O1".into(),
                merchant_id: "m".into(),
                ..Default::default()
            }),
        };
        let encoded = Encoded::new(&update);
        let mut entry = encoded.kind().as_bytes().to_vec();
        entry.extend(&encoded.body);
        assert_eq!(decode_outbox("u:e1", &entry), Some(update));
        assert_eq!(decode_outbox("x", b"zjunk"), None);
    }

    #[test]
    fn an_update_record_is_the_update_with_its_seq() {
        let update = ShipmentUpdate {
            order_id: "O1".into(),
            merchant_id: "m".into(),
            ..Default::default()
        };
        let output = Output::Update {
            id: "u:e1".into(),
            update: Box::new(update.clone()),
        };
        for seq in [1, 127, 128, 16_383, 16_384, u64::MAX] {
            let payload = Encoded::new(&output).payload(Some(seq));
            let with_seq = ShipmentUpdate {
                seq,
                ..update.clone()
            };
            assert_eq!(payload, with_seq.encode_to_vec(), "seq {seq}");
        }
    }

    #[test]
    fn a_missing_state_is_a_new_waybill() {
        let waybill = decode_waybill(2, "sf:1", None, None, None);
        assert_eq!((waybill.version, waybill.partition), (0, 2));
        assert_eq!(waybill.state, WaybillState::default());
        let waybill = decode_waybill(2, "sf:1", Some(b"7"), None, None);
        assert_eq!(waybill.version, 7);
    }
}
