//! Errors. [`Error`] is what a service's startup and loops fail with; [`ApiError`] is
//! what a caller is told, mapped to HTTP and gRPC status codes in exactly one place.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// Why a service could not start or a loop had to stop.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Configuration could not be read or is invalid.
    #[error("config: {0}")]
    Config(String),
    /// Kafka client error.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// Redis error.
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    /// I/O error (binding a port, reading a file).
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// gRPC transport error.
    #[error("grpc transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// A record that cannot be processed and was not dead-lettered.
    #[error("record: {0}")]
    Record(String),
}

/// A failure to report to an API caller. Messages are safe to show: they never
/// contain secrets or buyer contact data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// Malformed input: 400 / INVALID_ARGUMENT.
    #[error("{0}")]
    BadRequest(String),
    /// Missing or wrong credentials: 401 / UNAUTHENTICATED.
    #[error("{0}")]
    Unauthorized(String),
    /// Authenticated, but not allowed to act for that merchant: 403 / PERMISSION_DENIED.
    #[error("{0}")]
    Forbidden(String),
    /// Not found, or not visible to this caller: 404 / NOT_FOUND.
    #[error("{0}")]
    NotFound(String),
    /// The resource belongs to someone else (a waybill another merchant
    /// registered): 409 / ALREADY_EXISTS. Retrying does not help.
    #[error("{0}")]
    Conflict(String),
    /// Well-formed, but the event log refused to store it for a reason that
    /// retrying does not change: 422 / FAILED_PRECONDITION.
    #[error("{0}")]
    Unprocessable(String),
    /// The client did not send its request in time: 408 / DEADLINE_EXCEEDED.
    #[error("{0}")]
    RequestTimeout(String),
    /// Body over the configured limit: 413 / RESOURCE_EXHAUSTED.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// A dependency (Kafka, Redis) is down; the caller should retry: 503 / UNAVAILABLE.
    #[error("{0}")]
    Unavailable(String),
    /// The caller fell behind and must resume: 429 / RESOURCE_EXHAUSTED.
    #[error("{0}")]
    TooSlow(String),
    /// A bug or an unexpected state: 500 / INTERNAL.
    #[error("{0}")]
    Internal(String),
    /// A buyer link that was not signed by us (or was altered): 401 /
    /// UNAUTHENTICATED, kind `link_invalid`, so a page can say so in plain words.
    #[error("{0}")]
    LinkInvalid(String),
    /// A genuine buyer link past its expiry: 401 / UNAUTHENTICATED, kind
    /// `link_expired` (the page offers the lookup by order number instead).
    #[error("{0}")]
    LinkExpired(String),
    /// Too many attempts from this caller (or at this target) in the window:
    /// 429 with `Retry-After`, RESOURCE_EXHAUSTED. Retry after the wait.
    #[error("{reason}")]
    RateLimited {
        /// What was limited, in plain words.
        reason: String,
        /// Seconds until the window admits another attempt.
        retry_after_secs: u64,
    },
}

impl ApiError {
    /// The HTTP status for this error.
    pub fn http_status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::TooSlow(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::LinkInvalid(_) | ApiError::LinkExpired(_) => StatusCode::UNAUTHORIZED,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// The gRPC code for this error.
    pub fn grpc_code(&self) -> tonic::Code {
        match self {
            ApiError::BadRequest(_) => tonic::Code::InvalidArgument,
            ApiError::Unauthorized(_) => tonic::Code::Unauthenticated,
            ApiError::Forbidden(_) => tonic::Code::PermissionDenied,
            ApiError::NotFound(_) => tonic::Code::NotFound,
            ApiError::Conflict(_) => tonic::Code::AlreadyExists,
            ApiError::Unprocessable(_) => tonic::Code::FailedPrecondition,
            ApiError::RequestTimeout(_) => tonic::Code::DeadlineExceeded,
            ApiError::PayloadTooLarge(_) | ApiError::TooSlow(_) | ApiError::RateLimited { .. } => {
                tonic::Code::ResourceExhausted
            }
            ApiError::Unavailable(_) => tonic::Code::Unavailable,
            ApiError::Internal(_) => tonic::Code::Internal,
            ApiError::LinkInvalid(_) | ApiError::LinkExpired(_) => tonic::Code::Unauthenticated,
        }
    }

    /// A short machine-readable kind, used as the JSON `error` field and a metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::Unprocessable(_) => "unprocessable",
            ApiError::RequestTimeout(_) => "request_timeout",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::TooSlow(_) => "too_slow",
            ApiError::Internal(_) => "internal",
            ApiError::LinkInvalid(_) => "link_invalid",
            ApiError::LinkExpired(_) => "link_expired",
            ApiError::RateLimited { .. } => "too_many_requests",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.kind(), "reason": self.to_string() });
        let mut response = (self.http_status(), axum::Json(body)).into_response();
        if let ApiError::RateLimited {
            retry_after_secs, ..
        } = self
        {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(retry_after_secs.max(1)),
            );
        }
        response
    }
}

impl From<ApiError> for tonic::Status {
    fn from(err: ApiError) -> Self {
        tonic::Status::new(err.grpc_code(), err.to_string())
    }
}

impl From<::redis::RedisError> for ApiError {
    fn from(err: ::redis::RedisError) -> Self {
        ApiError::Unavailable(format!("state store unavailable: {}", err.category()))
    }
}

/// The one place a producer failure becomes an answer: a record over the size
/// limit is 413 and one the broker refused is 422 (both permanent: the client
/// must change the request), and only an unavailable broker is 503 (retry).
impl From<crate::kafka::SendError> for ApiError {
    fn from(err: crate::kafka::SendError) -> Self {
        use crate::kafka::SendError;
        match err {
            SendError::TooLarge {
                topic,
                bytes,
                limit,
                ..
            } => ApiError::PayloadTooLarge(if bytes > 0 {
                format!("a {topic} record would be {bytes} bytes, over the {limit}-byte limit")
            } else {
                format!("the event log refused a {topic} record as over its size limit")
            }),
            SendError::Rejected { topic, .. } => {
                ApiError::Unprocessable(format!("the event log refused a {topic} record"))
            }
            SendError::Unavailable(_) => {
                ApiError::Unavailable("event log unavailable, retry later".into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_maps_to_matching_http_and_grpc_codes() {
        let cases = [
            (
                ApiError::BadRequest("x".into()),
                400,
                tonic::Code::InvalidArgument,
            ),
            (
                ApiError::Unauthorized("x".into()),
                401,
                tonic::Code::Unauthenticated,
            ),
            (ApiError::NotFound("x".into()), 404, tonic::Code::NotFound),
            (
                ApiError::Conflict("x".into()),
                409,
                tonic::Code::AlreadyExists,
            ),
            (
                ApiError::Unprocessable("x".into()),
                422,
                tonic::Code::FailedPrecondition,
            ),
            (
                ApiError::PayloadTooLarge("x".into()),
                413,
                tonic::Code::ResourceExhausted,
            ),
            (
                ApiError::Unavailable("x".into()),
                503,
                tonic::Code::Unavailable,
            ),
        ];
        for (err, http, grpc) in cases {
            assert_eq!(err.http_status().as_u16(), http);
            assert_eq!(tonic::Status::from(err).code(), grpc);
        }
    }

    #[test]
    fn only_an_unavailable_broker_is_retriable() {
        use crate::kafka::{KafkaError, SendError};
        let too_large = SendError::TooLarge {
            topic: "shipments",
            key: "sf:SF1".into(),
            bytes: 2_000_000,
            limit: 1_000_000,
        };
        assert_eq!(ApiError::from(too_large).http_status().as_u16(), 413);
        let rejected = SendError::Rejected {
            topic: "shipments",
            source: KafkaError::Canceled,
        };
        assert_eq!(ApiError::from(rejected).http_status().as_u16(), 422);
        let down = SendError::Unavailable(KafkaError::Canceled);
        assert_eq!(ApiError::from(down).http_status().as_u16(), 503);
    }
}
