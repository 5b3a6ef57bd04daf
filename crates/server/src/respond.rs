//! Mapping results to HTTP, once: OAuth errors as RFC 6749 JSON, page errors as HTML.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use keygate_oidc::{ErrorCode, OAuthError};
use serde_json::json;

/// JSON with the headers token responses need (RFC 6749 §5.1).
pub fn no_store_json(status: StatusCode, body: &impl serde::Serialize) -> Response {
    let mut resp = (status, axum::Json(body)).into_response();
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}

/// An RFC 6749 §5.2 error response. `basic` adds the `WWW-Authenticate` challenge the RFC asks
/// for when the client tried HTTP Basic.
pub fn oauth_error(err: &OAuthError, basic: bool) -> Response {
    let status = match err.code {
        ErrorCode::InvalidClient => StatusCode::UNAUTHORIZED,
        ErrorCode::InvalidToken => StatusCode::UNAUTHORIZED,
        ErrorCode::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    };
    let mut resp = no_store_json(
        status,
        &json!({"error": err.code.as_str(), "error_description": err.description}),
    );
    if let Some(retry_after) = err.retry_after {
        *resp.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        if let Ok(v) = HeaderValue::from_str(&retry_after.to_string()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    if err.code == ErrorCode::InvalidClient && basic {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"keygate\""),
        );
    }
    resp
}

/// A redirect the browser follows with GET (after a form POST too).
pub fn see_other(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(v) => (StatusCode::SEE_OTHER, [(header::LOCATION, v)]).into_response(),
        Err(_) => StatusCode::BAD_REQUEST.into_response(),
    }
}

pub fn found(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(v) => (StatusCode::FOUND, [(header::LOCATION, v)]).into_response(),
        Err(_) => StatusCode::BAD_REQUEST.into_response(),
    }
}

/// The value of cookie `name` in the request, exactly that name.
pub fn cookie_value<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            c.trim()
                .strip_prefix(name)
                .and_then(|r| r.strip_prefix('='))
        })
}
