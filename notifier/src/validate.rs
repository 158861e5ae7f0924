//! Request field checks of the gRPC API, before anything is read: a bad field
//! is INVALID_ARGUMENT with a message naming it, never a Redis key built from
//! arbitrary bytes.
//!
//! Order ids follow what ingest accepts on registration (`POST /v1/shipments`):
//! 1 to [`MAX_ORDER_ID_BYTES`] bytes, no control characters, no surrounding
//! whitespace (ingest trims).

use trackstream_runtime::ApiError;

/// Longest order id, in bytes (as ingest's registration limit).
pub const MAX_ORDER_ID_BYTES: usize = 128;

/// Longest merchant id accepted in a request, in bytes.
pub const MAX_MERCHANT_ID_BYTES: usize = 128;

/// Checks an order id from a request.
pub fn order_id(order_id: &str) -> Result<(), ApiError> {
    if order_id.is_empty() {
        return Err(ApiError::BadRequest("order_id is required".into()));
    }
    if order_id.len() > MAX_ORDER_ID_BYTES {
        return Err(ApiError::BadRequest(format!(
            "order_id is {} bytes, over the {MAX_ORDER_ID_BYTES}-byte limit",
            order_id.len()
        )));
    }
    if order_id.chars().any(char::is_control) || order_id.trim() != order_id {
        return Err(ApiError::BadRequest(
            "order_id has control characters or surrounding whitespace".into(),
        ));
    }
    Ok(())
}

/// Checks the optional merchant id of a WatchAlerts request.
pub fn merchant_id(merchant_id: &str) -> Result<(), ApiError> {
    if merchant_id.len() > MAX_MERCHANT_ID_BYTES || merchant_id.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(format!(
            "merchant_id must be at most {MAX_MERCHANT_ID_BYTES} bytes without control characters"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_ids_are_bounded_and_printable() {
        assert!(order_id("10001").is_ok());
        assert!(order_id("订单-7/α").is_ok());
        assert!(order_id("").is_err());
        assert!(order_id(&"9".repeat(129)).is_err());
        assert!(order_id(&"9".repeat(128)).is_ok());
        assert!(order_id("a\nb").is_err());
        assert!(order_id(" 10001").is_err());
        assert!(merchant_id("").is_ok());
        assert!(merchant_id(&"m".repeat(200)).is_err());
    }
}
