mod authorize;
mod demo;
mod device;
mod kubeconfig;
mod meta;
mod token;

use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::TimeoutLayer;

use crate::AppState;

/// Bodies larger than this are refused before parsing (token and login forms are tiny).
const MAX_BODY: usize = 64 * 1024;

/// `/metrics` alone, at the root, for `spec.metricsListen`.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(meta::metrics))
        .fallback(|| async { (axum::http::StatusCode::NOT_FOUND, "not found\n") })
        .with_state(state)
}

/// All provider routes, mounted under the issuer's path.
pub fn router(state: AppState) -> Router {
    let routes = Router::new()
        .route("/", get(meta::welcome))
        .route("/.well-known/openid-configuration", get(meta::discovery))
        .route("/keys", get(meta::keys))
        .route("/healthz", get(meta::healthz))
        .route("/readyz", get(meta::readyz))
        .route("/static/{file}", get(meta::static_file))
        .route("/auth", get(authorize::start).post(authorize::start_post))
        .route("/auth/{connector}", get(authorize::connector))
        .route(
            "/auth/{connector}/login",
            get(authorize::login_form).post(authorize::login_submit),
        )
        .route("/callback", get(authorize::callback))
        .route("/token", post(token::token))
        .route("/token/introspect", post(token::introspect))
        .route("/token/revoke", post(token::revoke))
        .route("/userinfo", get(token::userinfo).post(token::userinfo))
        .route("/device/code", post(device::code))
        .route("/device", get(device::page).post(device::submit))
        .route("/device/callback", get(device::callback))
        .route("/kubeconfig", get(kubeconfig::index))
        .route("/kubeconfig/callback", get(kubeconfig::callback))
        .route("/kubeconfig/{cluster}", get(kubeconfig::cluster))
        .route(
            "/kubeconfig/{cluster}/kubeconfig.yaml",
            get(kubeconfig::download),
        )
        .route("/demo", get(demo::start))
        .route("/demo/callback", get(demo::callback));
    // With `spec.metricsListen`, `/metrics` is served there only (`metrics_router`).
    let routes = if state.provider.settings().metrics_listen.is_none() {
        routes.route("/metrics", get(meta::metrics))
    } else {
        routes
    }
    .fallback(meta::not_found)
    .with_state(state.clone());
    let app = if state.base_path.is_empty() {
        routes
    } else {
        Router::new()
            .nest(&state.base_path, routes)
            .fallback(meta::not_found_bare)
    };
    app.layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(30),
        ))
        .layer(CatchPanicLayer::custom(meta::panic_response))
        .layer(middleware::from_fn_with_state(state, access_log))
}

/// One line per request: method, path (never the query: it can hold codes), status, duration.
/// Also times it per route for `/metrics`.
async fn access_log(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    // A shared string inside: cloning it costs no allocation.
    let route = req.extensions().get::<MatchedPath>().cloned();
    let resp = next.run(req).await;
    let took = start.elapsed();
    s.requests.observe(
        route.as_ref().map_or("unmatched", MatchedPath::as_str),
        took,
    );
    let status = resp.status().as_u16();
    let ms = (took.as_secs_f64() * 100_000.0).round() / 100.0;
    if path.ends_with("/healthz") || path.ends_with("/readyz") {
        tracing::debug!(%method, %path, status, ms, "request");
    } else if status >= 500 {
        tracing::warn!(%method, %path, status, ms, "request");
    } else {
        tracing::info!(%method, %path, status, ms, "request");
    }
    resp
}
