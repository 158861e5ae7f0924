//! Caps on the free text of canonical events, so an event's size is bounded
//! whatever a provider sends.
//!
//! Records grow along the pipeline: the detector embeds the event in every
//! `ShipmentUpdate` (with the registration) and history entry, and Kdniao's
//! location is copied into two fields (`text` and `city`). A provider that sends
//! a 300 KB description would otherwise produce an event that a later stage can
//! no longer write. Every free-text field — `raw_code`, `raw_text`, each
//! location field, the proof-of-delivery `signer` and `photo_url` — is cut to
//! [`MAX_TEXT_BYTES`] on a UTF-8 character boundary, so the text of an event is
//! at most 10 × 512 B ≈ 5 KB.
//!
//! The cut happens after the adapter computed the event id (which hashes the
//! full location text and raw code), so ids stay the ids the uncut scan always
//! had: a replay of an old push, and a resend, still deduplicate downstream.
//!
//! Every cut is logged (info, with the field and original length, inside the
//! waybill's span) and counted in `free_text_truncated{field}`.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use trackstream_proto::v1::TrackingEvent;
use trackstream_runtime::dlq::truncate;

/// Longest free-text field kept in a canonical event, in bytes.
pub const MAX_TEXT_BYTES: usize = 512;

type Labels = Vec<(&'static str, &'static str)>;

/// Cuts free text and counts the cuts.
#[derive(Clone, Default)]
pub struct TextCaps {
    truncated: Family<Labels, Counter>,
}

impl TextCaps {
    /// Registers `free_text_truncated` in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let caps = TextCaps::default();
        registry.register(
            "free_text_truncated",
            "Free-text fields of canonical events cut to 512 bytes, by field",
            caps.truncated.clone(),
        );
        caps
    }

    /// Cuts every free-text field of `event` to [`MAX_TEXT_BYTES`]; returns how
    /// many fields were cut.
    pub fn apply(&self, event: &mut TrackingEvent) -> usize {
        let mut cut = 0;
        let mut cap = |field: &'static str, text: &mut String| {
            if text.len() > MAX_TEXT_BYTES {
                let original = text.len();
                let kept = truncate(text, MAX_TEXT_BYTES).len();
                text.truncate(kept);
                tracing::info!(
                    field,
                    original_bytes = original,
                    kept_bytes = kept,
                    "free text of an event cut"
                );
                self.truncated.get_or_create(&vec![("field", field)]).inc();
                cut += 1;
            }
        };
        cap("raw_code", &mut event.raw_code);
        cap("raw_text", &mut event.raw_text);
        if let Some(location) = event.location.as_mut() {
            cap("location.text", &mut location.text);
            cap("location.city", &mut location.city);
            cap("location.region", &mut location.region);
            cap("location.country", &mut location.country);
            cap("location.postal_code", &mut location.postal_code);
            cap("location.admin_area_code", &mut location.admin_area_code);
        }
        if let Some(proof) = event.proof_of_delivery.as_mut() {
            cap("proof_of_delivery.signer", &mut proof.signer);
            cap("proof_of_delivery.photo_url", &mut proof.photo_url);
        }
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trackstream_proto::v1::{Location, ProofOfDelivery};

    #[test]
    fn long_fields_are_cut_on_a_char_boundary_and_short_ones_kept() {
        let mut registry = Registry::default();
        let caps = TextCaps::register(&mut registry);
        // 3-byte characters: 512 is not a boundary (510 is).
        let long = "深".repeat(400);
        let mut event = TrackingEvent {
            event_id: "id".into(),
            raw_code: "x".repeat(600),
            raw_text: long.clone(),
            location: Some(Location {
                text: long.clone(),
                city: long.clone(),
                country: "CN".into(),
                ..Location::default()
            }),
            proof_of_delivery: Some(ProofOfDelivery {
                signer: "front desk".into(),
                photo_url: format!("https://example.com/{}", "p".repeat(1_000)),
            }),
            ..TrackingEvent::default()
        };
        assert_eq!(caps.apply(&mut event), 5);
        assert_eq!(event.raw_code.len(), 512);
        assert_eq!(event.raw_text.len(), 510);
        assert!(event.raw_text.chars().all(|c| c == '深'));
        let location = event.location.clone().unwrap_or_default();
        assert_eq!((location.text.len(), location.city.len()), (510, 510));
        assert_eq!(location.country, "CN");
        let proof = event.proof_of_delivery.clone().unwrap_or_default();
        assert_eq!(
            (proof.signer.as_str(), proof.photo_url.len()),
            ("front desk", 512)
        );
        assert_eq!(
            event.event_id, "id",
            "the id is the adapter's, never recomputed"
        );
        // Applying twice changes nothing.
        assert_eq!(caps.apply(&mut event), 0);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap_or_default();
        assert!(
            text.contains(r#"free_text_truncated_total{field="location.city"} 1"#),
            "{text}"
        );
    }
}
