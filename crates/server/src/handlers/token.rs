//! The token endpoint, introspection and userinfo: JSON in, RFC 6749 errors out.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use keygate_oidc::{ClientAuth, ErrorCode, OAuthError, TokenRequest};

use crate::AppState;
use crate::client_ip::ClientIp;
use crate::form::parse_params;
use crate::respond::{no_store_json, oauth_error};

pub(super) fn form(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<HashMap<String, String>, OAuthError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type
        .to_ascii_lowercase()
        .starts_with("application/x-www-form-urlencoded")
    {
        return Err(OAuthError::invalid_request(
            "The body must be application/x-www-form-urlencoded.",
        ));
    }
    parse_params(body).map_err(|name| {
        OAuthError::invalid_request(format!("The parameter {name:?} appears more than once."))
    })
}

/// Client credentials from `Authorization: Basic` (RFC 6749 §2.3.1: form-encoded id and secret)
/// or from the body; using both is refused.
pub(super) fn client_auth(
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> Result<ClientAuth, OAuthError> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Basic ")
                .or_else(|| v.strip_prefix("basic "))
        });
    if let Some(encoded) = basic {
        let malformed = || OAuthError::invalid_client("Malformed Basic authorization header.");
        if encoded.len() > 4096 {
            return Err(malformed());
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|_| malformed())?;
        let decoded = String::from_utf8(decoded).map_err(|_| malformed())?;
        let (id, secret) = decoded.split_once(':').ok_or_else(malformed)?;
        let unescape = |v: &str| {
            url::form_urlencoded::parse(format!("v={v}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        let (id, secret) = (unescape(id), unescape(secret));
        if form.contains_key("client_secret") {
            return Err(OAuthError::invalid_request(
                "Use one client authentication method, not two.",
            ));
        }
        if form.get("client_id").is_some_and(|body_id| *body_id != id) {
            return Err(OAuthError::invalid_client(
                "client_id does not match the Authorization header.",
            ));
        }
        return Ok(ClientAuth {
            client_id: id,
            secret: Some(secret),
            basic: true,
        });
    }
    let id = form
        .get("client_id")
        .filter(|v| !v.is_empty())
        .cloned()
        .ok_or_else(|| OAuthError::invalid_client("Client authentication is required."))?;
    Ok(ClientAuth {
        client_id: id,
        secret: form.get("client_secret").cloned(),
        basic: false,
    })
}

pub(super) fn is_basic(headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.len() > 6 && v[..6].eq_ignore_ascii_case("basic "))
}

pub async fn token(
    State(s): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let basic = is_basic(&headers);
    let result = async {
        let form = form(&headers, &body)?;
        let auth = client_auth(&headers, &form)?;
        let get = |k: &str| form.get(k).cloned();
        let req = TokenRequest {
            grant_type: get("grant_type"),
            code: get("code"),
            redirect_uri: get("redirect_uri"),
            code_verifier: get("code_verifier"),
            refresh_token: get("refresh_token"),
            scope: get("scope"),
            device_code: get("device_code"),
        };
        s.provider.token(&auth, &req, ip).await
    }
    .await;
    match result {
        Ok(tokens) => no_store_json(StatusCode::OK, &tokens),
        Err(e) => {
            tracing::info!(error = %e.code, description = %e.description, "token request refused");
            oauth_error(&e, basic)
        }
    }
}

/// Parses a client-authenticated form carrying `token` and runs `call` under the per-address limit.
async fn token_call<T, F, Fut>(
    s: &AppState,
    ip: Option<std::net::IpAddr>,
    headers: &HeaderMap,
    body: &[u8],
    call: F,
) -> Result<T, OAuthError>
where
    F: FnOnce(ClientAuth, String) -> Fut,
    Fut: std::future::Future<Output = Result<T, OAuthError>>,
{
    let form = form(headers, body)?;
    let auth = client_auth(headers, &form)?;
    let token = form.get("token").cloned().unwrap_or_default();
    s.provider.guarded(ip, call(auth, token)).await
}

/// RFC 7662.
pub async fn introspect(
    State(s): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match token_call(&s, ip, &headers, &body, |auth, token| {
        let p = s.provider.clone();
        async move { p.introspect(&auth, &token).await }
    })
    .await
    {
        Ok(v) => no_store_json(StatusCode::OK, &v),
        Err(e) => oauth_error(&e, is_basic(&headers)),
    }
}

/// RFC 7009: 200 with an empty body, whether or not the token existed.
pub async fn revoke(
    State(s): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match token_call(&s, ip, &headers, &body, |auth, token| {
        let p = s.provider.clone();
        async move { p.revoke(&auth, &token).await }
    })
    .await
    {
        Ok(()) => (StatusCode::OK, [(header::CACHE_CONTROL, "no-store")]).into_response(),
        Err(e) => oauth_error(&e, is_basic(&headers)),
    }
}

/// RFC 6750 bearer token from the header (or, on POST, the `access_token` form field).
pub async fn userinfo(State(s): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let from_header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .map(str::to_owned);
    let token = from_header.or_else(|| {
        parse_params(&body)
            .ok()
            .and_then(|m| m.get("access_token").cloned())
    });
    let Some(token) = token else {
        let mut resp = (StatusCode::UNAUTHORIZED, axum::Json(serde_json::json!({"error": "invalid_request", "error_description": "No bearer token."}))).into_response();
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"keygate\""),
        );
        return resp;
    };
    match s.provider.userinfo(&token) {
        Ok(info) => no_store_json(StatusCode::OK, &info),
        Err(e) => {
            let mut resp = oauth_error(&e, false);
            if e.code == ErrorCode::InvalidToken {
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"keygate\", error=\"invalid_token\""),
                );
            }
            resp
        }
    }
}
