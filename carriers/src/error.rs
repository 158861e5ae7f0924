//! The two ways a provider record can be bad, each with a message safe to show.

/// Why ingest refuses a push. Each variant maps to one HTTP status in ingest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// Missing or wrong signature, or an unknown account: 401, nothing written.
    #[error("signature rejected: {0}")]
    Unauthorized(String),
    /// Unparseable body or missing required fields: 400, nothing written.
    #[error("bad request: {0}")]
    BadRequest(String),
}

impl PushError {
    /// A bad-request error with a formatted reason.
    pub fn bad(reason: impl Into<String>) -> Self {
        PushError::BadRequest(reason.into())
    }

    /// An unauthorized error with a formatted reason.
    pub fn unauthorized(reason: impl Into<String>) -> Self {
        PushError::Unauthorized(reason.into())
    }
}

/// Why normalize cannot turn a stored record into events; the record goes to
/// `scans.dlq` with this cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NormalizeError {
    /// The payload is not the provider's format.
    #[error("unparseable {provider} payload: {reason}")]
    Unparseable {
        /// Provider route name.
        provider: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// No adapter is registered for the record's provider.
    #[error("no adapter for provider {0}")]
    UnknownProvider(i32),
}

impl NormalizeError {
    /// An unparseable-payload error for `provider`.
    pub fn unparseable(provider: &'static str, reason: impl std::fmt::Display) -> Self {
        NormalizeError::Unparseable {
            provider,
            reason: reason.to_string(),
        }
    }
}
