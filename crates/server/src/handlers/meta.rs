//! Discovery, keys, health, static assets and the welcome page.

use std::any::Any;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use minijinja::context;

use crate::AppState;

fn json_bytes(bytes: std::sync::Arc<[u8]>, cache: &'static str) -> Response {
    // Shares the pre-rendered document: no copy per request.
    let mut resp = Response::new(Body::from(axum::body::Bytes::from_owner(bytes)));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    resp
}

pub async fn discovery(State(s): State<AppState>) -> Response {
    json_bytes(s.provider.discovery_bytes(), "public, max-age=3600")
}

/// Short cache: clients must see a rotated key quickly (Dex sends max-age up to the next rotation).
pub async fn keys(State(s): State<AppState>) -> Response {
    json_bytes(
        s.provider.jwks_bytes(),
        "public, max-age=60, must-revalidate",
    )
}

/// Liveness: answers without touching storage.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: storage answers.
pub async fn readyz(State(s): State<AppState>) -> Response {
    if s.provider.ready().await {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "storage unavailable\n").into_response()
    }
}

/// Prometheus text exposition.
pub async fn metrics(State(s): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, keygate_oidc::METRICS_CONTENT_TYPE)],
        s.provider.metrics().render() + &s.requests.render(),
    )
        .into_response()
}

pub async fn static_file(Path(file): Path<String>) -> Response {
    keygate_pages::static_response(&file)
}

pub async fn welcome(State(s): State<AppState>) -> Response {
    let p = &s.provider;
    let demo_url = p.settings().demo.then(|| p.endpoint("demo"));
    s.pages.render(
        StatusCode::OK,
        "welcome.html",
        context! {
            discovery_url => p.endpoint(".well-known/openid-configuration"),
            jwks_url => p.endpoint("keys"),
            demo_url,
            version => env!("CARGO_PKG_VERSION"),
        },
    )
}

pub async fn not_found(State(s): State<AppState>) -> Response {
    s.pages.error(
        StatusCode::NOT_FOUND,
        "Page not found",
        "There is nothing at this address.",
        None,
    )
}

pub async fn not_found_bare() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

/// A bug must not show users a stack trace: log it, answer 500.
pub fn panic_response(err: Box<dyn Any + Send + 'static>) -> Response {
    let detail = err
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| err.downcast_ref::<&str>().copied())
        .unwrap_or("unknown");
    tracing::error!(panic = detail, "a request handler panicked");
    (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n").into_response()
}
