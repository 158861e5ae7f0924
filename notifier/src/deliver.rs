//! Producing one buyer message, and what to do when it cannot be produced.
//!
//! Each due message is produced on its own. Before this, a shard's due messages
//! went out in one call, so one message that can never be produced (over
//! `kafka.max_record_bytes` — a huge merchant name or template — or refused by
//! the broker) failed the whole call every time: the shard starved, or the
//! messages that did reach the broker were sent again on every retry.
//!
//! A permanent failure ([`SendError::is_permanent`]) sets the message aside on
//! `tracking.dlq` (stage `notifier`): the letter is the rendered message (key
//! `<merchant_id>/<order_id>`, source topic `buyer.notifications`, the value
//! dropped when even the letter is too large), with the cause. The message holds
//! only the masked contact, so the letter does too.

use trackstream_proto::topics;
use trackstream_runtime::dlq::DeadLetters;
use trackstream_runtime::kafka::{Inbound, OutRecord, Producer, SendError};

/// What became of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivered {
    /// Acknowledged by the broker: mark it sent.
    Sent,
    /// It can never be produced and was dead-lettered: mark it done.
    DeadLettered,
    /// Not acknowledged for a reason that may pass (or its letter was not):
    /// release it and try again later.
    Retry,
}

/// The `dlq.cause` of a permanent send error.
pub fn cause(err: &SendError) -> &'static str {
    match err {
        SendError::TooLarge { .. } => "output_too_large",
        SendError::Rejected { .. } => "output_rejected",
        SendError::Unavailable(_) => "unavailable",
    }
}

/// The input a letter describes: the message as it would have been written
/// (there is no consumed record behind a message; partition and offset are -1).
pub fn synthetic_inbound(record: &OutRecord) -> Inbound {
    Inbound {
        topic: topics::BUYER_NOTIFICATIONS.to_owned(),
        partition: -1,
        offset: -1,
        key: Some(record.key.as_bytes().to_vec()),
        payload: record.payload.clone(),
        headers: Vec::new(),
    }
}

/// Produces `record`; on a permanent error, dead-letters it instead.
pub async fn produce(producer: &Producer, letters: &DeadLetters, record: OutRecord) -> Delivered {
    let err = match producer.send(record.clone()).await {
        Ok(()) => return Delivered::Sent,
        Err(err) => err,
    };
    if !err.is_permanent() {
        tracing::warn!(%err, key = %record.key, "buyer message not acknowledged; retried later");
        return Delivered::Retry;
    }
    let letter = letters.letter(&synthetic_inbound(&record), cause(&err), &err.to_string());
    match producer.send(letter).await {
        Ok(()) => Delivered::DeadLettered,
        Err(letter_err) if letter_err.is_permanent() => {
            // Nowhere left to put it; keeping it would block nothing but
            // would be retried forever. Logged with both causes.
            tracing::error!(%err, %letter_err, key = %record.key,
                "buyer message and its dead letter both refused; message dropped");
            Delivered::DeadLettered
        }
        Err(letter_err) => {
            tracing::warn!(%err, %letter_err, key = %record.key,
                "dead letter not acknowledged; message retried later");
            Delivered::Retry
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_letter_describes_the_message_it_replaces() {
        let record = OutRecord::new(topics::BUYER_NOTIFICATIONS, "m/O-1", vec![1, 2, 3]);
        let inbound = synthetic_inbound(&record);
        assert_eq!(inbound.topic, "buyer.notifications");
        assert_eq!(inbound.key_str(), "m/O-1");
        assert_eq!(inbound.payload, [1, 2, 3]);
        let too_large = SendError::TooLarge {
            topic: topics::BUYER_NOTIFICATIONS,
            key: "m/O-1".into(),
            bytes: 10,
            limit: 5,
        };
        assert_eq!(cause(&too_large), "output_too_large");
    }
}
