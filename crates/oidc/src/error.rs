use std::fmt;

use keygate_store::StoreError;

/// RFC 6749 §5.2 (and RFC 6750, RFC 7009) error codes. `Display` is the wire code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidRequest,
    InvalidClient,
    InvalidGrant,
    UnauthorizedClient,
    UnsupportedGrantType,
    UnsupportedResponseType,
    InvalidScope,
    AccessDenied,
    InvalidToken,
    ServerError,
    TemporarilyUnavailable,
    /// RFC 8628.
    AuthorizationPending,
    SlowDown,
    ExpiredToken,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidClient => "invalid_client",
            ErrorCode::InvalidGrant => "invalid_grant",
            ErrorCode::UnauthorizedClient => "unauthorized_client",
            ErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            ErrorCode::UnsupportedResponseType => "unsupported_response_type",
            ErrorCode::InvalidScope => "invalid_scope",
            ErrorCode::AccessDenied => "access_denied",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::ServerError => "server_error",
            ErrorCode::TemporarilyUnavailable => "temporarily_unavailable",
            ErrorCode::AuthorizationPending => "authorization_pending",
            ErrorCode::SlowDown => "slow_down",
            ErrorCode::ExpiredToken => "expired_token",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error a client gets back. The description is safe to show: it never holds secrets or
/// internal details.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    pub code: ErrorCode,
    pub description: String,
    /// Set when the request was refused by a rate limit: answer 429 with `Retry-After`.
    pub retry_after: Option<i64>,
}

impl OAuthError {
    pub fn new(code: ErrorCode, description: impl Into<String>) -> Self {
        Self {
            code,
            description: description.into(),
            retry_after: None,
        }
    }
    /// Too many failed attempts from this address.
    pub fn rate_limited(retry_after: i64) -> Self {
        Self {
            code: ErrorCode::TemporarilyUnavailable,
            description: format!("Too many failed requests; retry in {retry_after} s."),
            retry_after: Some(retry_after),
        }
    }
    pub fn invalid_request(d: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, d)
    }
    pub fn invalid_grant(d: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidGrant, d)
    }
    pub fn invalid_client(d: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidClient, d)
    }
    pub fn server_error() -> Self {
        Self::new(
            ErrorCode::ServerError,
            "internal error; see the provider's logs",
        )
    }
}

impl fmt::Display for OAuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.description)
    }
}

impl std::error::Error for OAuthError {}

/// Internal failures (storage, crypto). Logged in full, shown to clients as `server_error`.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("crypto: {0}")]
    Crypto(String),
}

impl From<ProviderError> for OAuthError {
    fn from(e: ProviderError) -> Self {
        match e {
            // The database is down or unreachable: a 503 the client may retry, not a 500.
            ProviderError::Store(StoreError::Backend(reason)) => {
                tracing::error!(error = %reason, "storage unavailable");
                OAuthError::new(
                    ErrorCode::TemporarilyUnavailable,
                    "The service is temporarily unavailable; try again in a moment.",
                )
            }
            e => {
                tracing::error!(error = %e, "internal error");
                OAuthError::server_error()
            }
        }
    }
}

impl From<StoreError> for OAuthError {
    fn from(e: StoreError) -> Self {
        ProviderError::Store(e).into()
    }
}
