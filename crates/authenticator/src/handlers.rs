//! The authenticator's HTTP surface (oauth2-proxy compatible, under `/dex-authenticator`), and
//! the in-line check of reverse-proxy mode.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use keygate_config::Application;
use keygate_oidc::{pkce_s256, random_id};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::AuthState;
use crate::provider_client::CallError;
use keygate_oidc::{MAX_COOKIE, Sealer};

const SESSION_COOKIE: &str = "_keygate_auth";
const STATE_COOKIE: &str = "_keygate_auth_state";
const PREFIX: &str = "/dex-authenticator";

/// What the session cookie holds (sealed with the cookie secret).
#[derive(Serialize, Deserialize)]
struct SessionCookie {
    /// Ticket: the session's key in the store.
    t: String,
    /// The per-session key sealing the stored record (base64url, 32 bytes).
    k: String,
    /// The refresh token.
    r: String,
    /// When the user logged in, and when the login ends (keepUsersLoggedInFor).
    i: i64,
    e: i64,
}

/// What the store holds (sealed with the per-session key).
#[derive(Serialize, Deserialize, Clone)]
pub(crate) struct SessionRecord {
    id_token: String,
    email: String,
    user: String,
    groups: Vec<String>,
    exp: i64,
}

/// The sign-in in progress (sealed, short-lived).
#[derive(Serialize, Deserialize)]
struct SignInState {
    state: String,
    nonce: String,
    verifier: String,
    rd: String,
    redirect_uri: String,
    exp: i64,
}

/// Extractor: the TCP peer, when the server recorded it.
struct Peer(Option<SocketAddr>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Peer(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0),
        ))
    }
}

pub fn router(state: AuthState) -> Router {
    let mut router = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/dex-authenticator/auth", get(auth))
        .route("/dex-authenticator/sign_in", get(sign_in))
        .route("/dex-authenticator/callback", get(callback))
        .route("/dex-authenticator/sign_out", get(sign_out).post(sign_out))
        .route(
            "/dex-authenticator/static/{file}",
            get(|Path(file): Path<String>| async move { keygate_pages::static_response(&file) }),
        );
    // In reverse-proxy mode every other path, `/metrics` included, is the application's.
    router = if state.inner.upstream.is_some() {
        router.fallback(proxied)
    } else {
        router
            .route("/metrics", get(metrics))
            .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
    };
    router
        .with_state(state)
        .layer(axum::middleware::from_fn(access_log))
}

/// One line per request: method, path (never the query: it can hold codes), status, duration.
/// The `auth_request` checks and health probes, many and alike, at debug level.
async fn access_log(req: Request, next: axum::middleware::Next) -> Response {
    let start = std::time::Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let resp = next.run(req).await;
    let status = resp.status().as_u16();
    let ms = (start.elapsed().as_secs_f64() * 100_000.0).round() / 100.0;
    let routine = matches!(
        path.as_str(),
        "/dex-authenticator/auth" | "/healthz" | "/readyz" | "/metrics"
    ) || path.starts_with("/dex-authenticator/static/");
    if status >= 500 {
        tracing::warn!(%method, %path, status, ms, "request");
    } else if routine {
        tracing::debug!(%method, %path, status, ms, "request");
    } else {
        tracing::info!(%method, %path, status, ms, "request");
    }
    resp
}

/// `/metrics` alone, for `spec.metricsListen`.
pub fn metrics_router(state: AuthState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .with_state(state)
}

/// Prometheus text format (on the authenticator's own address, like `/healthz`).
async fn metrics(State(s): State<AuthState>) -> Response {
    static NONE: keygate_oidc::Counter = keygate_oidc::Counter::new();
    let failures = s.inner.store.failures().unwrap_or(&NONE);
    (
        [(header::CONTENT_TYPE, keygate_oidc::METRICS_CONTENT_TYPE)],
        s.inner.metrics.render(failures),
    )
        .into_response()
}

async fn readyz(State(s): State<AuthState>) -> Response {
    // Redis down is not fatal (users get in through the refresh path): report, stay ready.
    let store = if s.inner.store.healthy().await {
        "ok"
    } else {
        "unavailable (sessions refresh through the provider)"
    };
    (StatusCode::OK, format!("ok\nsession store: {store}\n")).into_response()
}

// ---- request context -----------------------------------------------------------------------

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The client address, believing forwarded headers from trusted proxies only.
fn client_ip(s: &AuthState, peer: Option<SocketAddr>, headers: &HeaderMap) -> Option<IpAddr> {
    let forwarded: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    Some(keygate_config::resolve_client_ip(
        peer?.ip(),
        &forwarded,
        header_str(headers, "x-real-ip"),
        &s.inner.settings.trusted_proxies,
    ))
}

/// The host the browser used: from a trusted proxy's `X-Forwarded-Host`/`X-Original-URL`, else `Host`.
fn original_host(s: &AuthState, peer: Option<SocketAddr>, headers: &HeaderMap) -> Option<String> {
    let trusted = peer.is_some_and(|p| {
        s.inner
            .settings
            .trusted_proxies
            .iter()
            .any(|n| n.contains(p.ip()))
    });
    if trusted {
        if let Some(h) = header_str(headers, "x-forwarded-host") {
            return Some(h.split(',').next().unwrap_or(h).trim().to_owned());
        }
        if let Some(u) = header_str(headers, "x-original-url").and_then(|u| url::Url::parse(u).ok())
        {
            return u.host_str().map(|h| match u.port() {
                Some(p) => format!("{h}:{p}"),
                None => h.to_owned(),
            });
        }
    }
    header_str(headers, "host").map(str::to_owned)
}

fn application<'a>(s: &'a AuthState, host: Option<&str>) -> Option<&'a Application> {
    let auth = &s.inner.settings.authenticator;
    host.and_then(|h| auth.application(h))
}

fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            c.trim()
                .strip_prefix(name)
                .and_then(|rest| rest.strip_prefix('='))
        })
}

fn set_cookie(name: &str, value: &str, path: &str, max_age: i64) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!(
        "{name}={value}; Path={path}; Max-Age={}; Secure; HttpOnly; SameSite=Lax",
        max_age.max(0)
    ))
    .ok()
}

/// A themed error page (the provider's `error.html`, with `spec.frontend`).
fn page(s: &AuthState, status: StatusCode, title: &str, message: &str) -> Response {
    s.inner.pages.error(status, title, message, None)
}

// ---- the check -----------------------------------------------------------------------------

enum Outcome {
    Allowed {
        record: Arc<SessionRecord>,
        set_cookie: Option<HeaderValue>,
    },
    /// Not logged in (or the login is no longer valid); clear the cookie if there was one.
    Unauthenticated {
        clear: bool,
    },
    Forbidden(&'static str),
}

fn sealer_for(cookie: &SessionCookie) -> Option<Sealer> {
    let key = URL_SAFE_NO_PAD
        .decode(&cookie.k)
        .ok()
        .filter(|k| k.len() == 32)?;
    Some(Sealer::from_key(&key))
}

/// The check, counted for `/metrics`.
async fn authenticate(s: &AuthState, headers: &HeaderMap, peer: Option<SocketAddr>) -> Outcome {
    let outcome = check(s, headers, peer).await;
    let m = &s.inner.metrics;
    match &outcome {
        Outcome::Allowed { .. } => m.checks_allowed.inc(),
        Outcome::Unauthenticated { .. } => m.checks_unauthenticated.inc(),
        Outcome::Forbidden(_) => m.checks_forbidden.inc(),
    }
    outcome
}

async fn check(s: &AuthState, headers: &HeaderMap, peer: Option<SocketAddr>) -> Outcome {
    let inner = &s.inner;
    let auth = &inner.settings.authenticator;
    // The host and the client address are worked out only when some application restricts
    // addresses: most do not, and this is every request's path.
    let restricted = auth.applications.iter().any(|a| !a.whitelist.is_empty());
    let host = restricted
        .then(|| original_host(s, peer, headers))
        .flatten();
    let app = restricted
        .then(|| application(s, host.as_deref()).or(auth.applications.first()))
        .flatten();
    if let Some(app) = app
        && !app.whitelist.is_empty()
    {
        let ip = client_ip(s, peer, headers);
        if !ip.is_some_and(|ip| app.whitelist.iter().any(|n| n.contains(ip))) {
            return Outcome::Forbidden(
                "Your network address is not allowed to use this application.",
            );
        }
    }
    let Some(raw) = cookie_value(headers, SESSION_COOKIE) else {
        return Outcome::Unauthenticated { clear: false };
    };
    let now = inner.clock.now();
    if let Some(record) = inner.recent.get(raw, now) {
        let outcome = admit(s, record, None);
        if matches!(outcome, Outcome::Allowed { .. }) {
            inner.metrics.checks_from_memory.inc();
        }
        return outcome;
    }
    let cookie: Option<SessionCookie> = (raw.len() <= MAX_COOKIE)
        .then(|| inner.cookies.open(raw))
        .flatten()
        .and_then(|plain| serde_json::from_slice(&plain).ok());
    let Some(cookie) = cookie else {
        return Outcome::Unauthenticated { clear: true };
    };
    let Some(session_key) = sealer_for(&cookie) else {
        return Outcome::Unauthenticated { clear: true };
    };
    if now >= cookie.e {
        return Outcome::Unauthenticated { clear: true };
    }
    let fresh = |r: &SessionRecord| r.exp - inner.settings.refresh_before > now;
    let stored = load_record(s, &cookie, &session_key).await;
    let (record, set_cookie) = match stored {
        Some(r) if fresh(&r) => (r, None),
        stale => {
            // One refresh per session at a time here; replicas race through the provider's reuse window.
            let lock = {
                let mut map = inner.refreshing.lock().await;
                map.entry(cookie.t.clone())
                    .or_insert_with(|| Arc::new(Mutex::new(())))
                    .clone()
            };
            let _guard = lock.lock().await;
            let result = match load_record(s, &cookie, &session_key).await {
                Some(r) if fresh(&r) => Ok((r, None)),
                _ => refresh(s, &cookie, &session_key, now).await,
            };
            {
                let mut map = inner.refreshing.lock().await;
                if Arc::strong_count(&lock) <= 2 {
                    map.remove(&cookie.t);
                }
            }
            match result {
                Ok(v) => v,
                Err(CallError::Refused(reason)) => {
                    tracing::info!(reason, "refresh refused: the user must log in again");
                    return Outcome::Unauthenticated { clear: true };
                }
                Err(CallError::Unavailable(reason)) => match stale {
                    // The provider is down but the ID token we have is still valid: keep going.
                    Some(r) if r.exp > now => {
                        tracing::warn!(
                            reason,
                            "provider unavailable; serving the session until its ID token expires"
                        );
                        (r, None)
                    }
                    _ => {
                        tracing::warn!(reason, "provider unavailable and no valid ID token");
                        return Outcome::Unauthenticated { clear: false };
                    }
                },
            }
        }
    };
    let record = Arc::new(record);
    if set_cookie.is_none() {
        // The browser keeps this cookie: later checks in this second reuse what we opened.
        let until = cookie.e.min(record.exp - inner.settings.refresh_before);
        inner.recent.put(raw, &cookie.t, record.clone(), now, until);
    }
    admit(s, record, set_cookie)
}

/// The configuration's email and group filters, for a valid session.
fn admit(s: &AuthState, record: Arc<SessionRecord>, set_cookie: Option<HeaderValue>) -> Outcome {
    let auth = &s.inner.settings.authenticator;
    if !auth.allowed_emails.is_empty()
        && !auth
            .allowed_emails
            .iter()
            .any(|e| e.eq_ignore_ascii_case(&record.email))
    {
        return Outcome::Forbidden("Your account is not allowed to use this application.");
    }
    if !auth.allowed_groups.is_empty()
        && !record
            .groups
            .iter()
            .any(|g| auth.allowed_groups.contains(g))
    {
        return Outcome::Forbidden("Your groups are not allowed to use this application.");
    }
    Outcome::Allowed { record, set_cookie }
}

async fn load_record(s: &AuthState, cookie: &SessionCookie, key: &Sealer) -> Option<SessionRecord> {
    let sealed = s.inner.store.get(&cookie.t).await?;
    serde_json::from_slice(&key.open_bytes(&sealed)?).ok()
}

async fn store_record(s: &AuthState, ticket: &str, key: &Sealer, record: &SessionRecord, now: i64) {
    if let Ok(plain) = serde_json::to_vec(record) {
        let ttl = (record.exp - now).max(1) as u64;
        s.inner.store.put(ticket, key.seal_bytes(&plain), ttl).await;
    }
}

fn record_from(id_token: String, claims: &keygate_oidc::IdTokenClaims) -> SessionRecord {
    let email = claims.email.clone().unwrap_or_default();
    SessionRecord {
        user: claims
            .preferred_username
            .clone()
            .or_else(|| claims.name.clone())
            .unwrap_or_else(|| email.clone()),
        email,
        groups: claims.groups.clone().unwrap_or_default(),
        exp: claims.exp,
        id_token,
    }
}

/// Gets a new ID token with the cookie's refresh token, stores it and re-seals the cookie.
async fn refresh(
    s: &AuthState,
    cookie: &SessionCookie,
    key: &Sealer,
    now: i64,
) -> Result<(SessionRecord, Option<HeaderValue>), CallError> {
    let result = refresh_once(s, cookie, key, now).await;
    let m = &s.inner.metrics;
    match &result {
        Ok(_) => m.refreshes_ok.inc(),
        Err(CallError::Refused(_)) => m.refreshes_refused.inc(),
        Err(CallError::Unavailable(_)) => m.refreshes_unavailable.inc(),
    }
    result
}

async fn refresh_once(
    s: &AuthState,
    cookie: &SessionCookie,
    key: &Sealer,
    now: i64,
) -> Result<(SessionRecord, Option<HeaderValue>), CallError> {
    let tokens = s.inner.provider.refresh(&cookie.r).await?;
    let claims = s.inner.provider.verify(&tokens.id_token, None, now).await?;
    let record = record_from(tokens.id_token, &claims);
    store_record(s, &cookie.t, key, &record, now).await;
    let set_cookie = match tokens.refresh_token {
        Some(r) if r != cookie.r => session_cookie(
            s,
            &SessionCookie {
                t: cookie.t.clone(),
                k: cookie.k.clone(),
                r,
                i: cookie.i,
                e: cookie.e,
            },
            now,
        ),
        _ => None,
    };
    Ok((record, set_cookie))
}

fn session_cookie(s: &AuthState, cookie: &SessionCookie, now: i64) -> Option<HeaderValue> {
    let sealed = s.inner.cookies.seal(&serde_json::to_vec(cookie).ok()?);
    if sealed.len() > MAX_COOKIE {
        tracing::error!(
            size = sealed.len(),
            "the session cookie would exceed 4 KB; refusing to set it"
        );
        return None;
    }
    set_cookie(SESSION_COOKIE, &sealed, "/", cookie.e - now)
}

fn identity_headers(s: &AuthState, record: &SessionRecord, headers: &mut HeaderMap) {
    let mut put = |name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(HeaderName::from_static(name), v);
        }
    };
    put("x-auth-request-user", &record.user);
    put("x-auth-request-email", &record.email);
    put("x-auth-request-preferred-username", &record.user);
    put("x-auth-request-groups", &record.groups.join(","));
    if s.inner.settings.authenticator.send_authorization_header {
        put("authorization", &format!("Bearer {}", record.id_token));
    }
}

// ---- endpoints -------------------------------------------------------------------------------

/// For nginx `auth_request`: 200 with the identity headers, 401, or 403.
async fn auth(State(s): State<AuthState>, Peer(peer): Peer, headers: HeaderMap) -> Response {
    match authenticate(&s, &headers, peer).await {
        Outcome::Allowed { record, set_cookie } => {
            let mut resp = StatusCode::OK.into_response();
            identity_headers(&s, &record, resp.headers_mut());
            if let Some(c) = set_cookie {
                resp.headers_mut().insert(header::SET_COOKIE, c);
            }
            resp
        }
        Outcome::Unauthenticated { clear } => {
            let mut resp = StatusCode::UNAUTHORIZED.into_response();
            if clear && let Some(c) = set_cookie(SESSION_COOKIE, "", "/", 0) {
                resp.headers_mut().insert(header::SET_COOKIE, c);
            }
            resp
        }
        Outcome::Forbidden(why) => page(&s, StatusCode::FORBIDDEN, "Access denied", why),
    }
}

fn query(raw: Option<String>) -> std::collections::HashMap<String, String> {
    url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

/// `rd` must stay on the application: a path, or an https URL on the application's domain.
fn safe_redirect(rd: Option<&str>, app: &Application) -> Result<String, ()> {
    let rd = rd.filter(|r| !r.is_empty()).unwrap_or("/");
    if rd.len() > 4096 {
        return Err(());
    }
    if rd.starts_with('/') && !rd.starts_with("//") && !rd.starts_with("/\\") {
        return Ok(format!("https://{}{rd}", app.domain));
    }
    let url = url::Url::parse(rd).map_err(|_| ())?;
    let host = match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_owned(),
        _ => return Err(()),
    };
    if url.scheme() == "https"
        && host.eq_ignore_ascii_case(&app.domain)
        && url.username().is_empty()
    {
        Ok(url.to_string())
    } else {
        Err(())
    }
}

async fn sign_in(
    State(s): State<AuthState>,
    Peer(peer): Peer,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let host = original_host(&s, peer, &headers);
    let Some(app) = application(&s, host.as_deref()).cloned() else {
        return page(
            &s,
            StatusCode::BAD_REQUEST,
            "Unknown application",
            "This address is not an application this authenticator protects.",
        );
    };
    let params = query(q);
    let Ok(rd) = safe_redirect(params.get("rd").map(String::as_str), &app) else {
        return page(
            &s,
            StatusCode::BAD_REQUEST,
            "Invalid redirect",
            "The page to return to is not on this application.",
        );
    };
    let endpoint = match s.inner.provider.authorization_endpoint().await {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, "cannot start a sign-in");
            return page(
                &s,
                StatusCode::BAD_GATEWAY,
                "Sign-in is unavailable",
                "The identity provider cannot be reached. Try again in a moment.",
            );
        }
    };
    let now = s.inner.clock.now();
    let redirect_uri = format!("https://{}{PREFIX}/callback", app.domain);
    let st = SignInState {
        state: random_id(16),
        nonce: random_id(16),
        verifier: random_id(32),
        rd,
        redirect_uri: redirect_uri.clone(),
        exp: now + 600,
    };
    let mut scope = "openid profile email groups offline_access".to_owned();
    if s.inner.settings.authenticator.allow_access_to_kubernetes {
        scope.push_str(" audience:server:client_id:kubernetes");
    }
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("client_id", s.inner.provider.client_id())
        .append_pair("redirect_uri", &redirect_uri)
        .append_pair("response_type", "code")
        .append_pair("scope", &scope)
        .append_pair("state", &st.state)
        .append_pair("nonce", &st.nonce)
        .append_pair("code_challenge", &pkce_s256(&st.verifier))
        .append_pair("code_challenge_method", "S256")
        .finish();
    let mut resp = redirect(&format!("{endpoint}?{query}"));
    if let Some(c) = serde_json::to_vec(&st)
        .ok()
        .and_then(|v| set_cookie(STATE_COOKIE, &s.inner.states.seal(&v), PREFIX, 600))
    {
        resp.headers_mut().insert(header::SET_COOKIE, c);
    }
    resp
}

fn redirect(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(v) => (StatusCode::FOUND, [(header::LOCATION, v)]).into_response(),
        Err(_) => StatusCode::BAD_REQUEST.into_response(),
    }
}

async fn callback(
    State(s): State<AuthState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let params = query(q);
    let now = s.inner.clock.now();
    let st: Option<SignInState> = cookie_value(&headers, STATE_COOKIE)
        .and_then(|v| s.inner.states.open(v))
        .and_then(|p| serde_json::from_slice(&p).ok())
        .filter(|st: &SignInState| st.exp > now);
    let Some(st) = st else {
        return page(
            &s,
            StatusCode::BAD_REQUEST,
            "Sign-in expired",
            "The sign-in took too long or was started elsewhere. Reload the application to start again.",
        );
    };
    if params.get("state") != Some(&st.state) {
        return page(
            &s,
            StatusCode::BAD_REQUEST,
            "Sign-in failed",
            "The sign-in response does not match this browser (state).",
        );
    }
    if let Some(error) = params.get("error") {
        let message = if error == "access_denied" {
            "Your account is not allowed to use this application."
        } else {
            "The identity provider refused the sign-in."
        };
        return page(&s, StatusCode::FORBIDDEN, "Access denied", message);
    }
    let Some(code) = params.get("code") else {
        return page(
            &s,
            StatusCode::BAD_REQUEST,
            "Sign-in failed",
            "The identity provider sent no code.",
        );
    };
    let tokens = match s
        .inner
        .provider
        .exchange(code, &st.redirect_uri, &st.verifier)
        .await
    {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "code exchange failed");
            return page(
                &s,
                StatusCode::BAD_GATEWAY,
                "Sign-in failed",
                "The identity provider did not accept the sign-in. Reload the application to try again.",
            );
        }
    };
    let claims = match s
        .inner
        .provider
        .verify(&tokens.id_token, Some(&st.nonce), now)
        .await
    {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "ID token rejected at sign-in");
            return page(
                &s,
                StatusCode::BAD_GATEWAY,
                "Sign-in failed",
                "The identity provider's answer could not be verified.",
            );
        }
    };
    let Some(refresh_token) = tokens.refresh_token.clone() else {
        return page(
            &s,
            StatusCode::BAD_GATEWAY,
            "Sign-in failed",
            "The identity provider issued no refresh token (offline_access).",
        );
    };
    let mut key = [0u8; 32];
    if aws_lc_rs::rand::fill(&mut key).is_err() {
        return page(
            &s,
            StatusCode::INTERNAL_SERVER_ERROR,
            "Sign-in failed",
            "Internal error.",
        );
    }
    let cookie = SessionCookie {
        t: random_id(16),
        k: URL_SAFE_NO_PAD.encode(key),
        r: refresh_token,
        i: now,
        e: now + s.inner.settings.authenticator.keep_users_logged_in_for,
    };
    let record = record_from(tokens.id_token, &claims);
    store_record(&s, &cookie.t, &Sealer::from_key(&key), &record, now).await;
    s.inner.metrics.sign_ins.inc();
    tracing::info!(target: "keygate::audit", event = "sign_in", user = %record.email, "signed in");
    let mut resp = redirect(&st.rd);
    let h = resp.headers_mut();
    if let Some(c) = session_cookie(&s, &cookie, now) {
        h.append(header::SET_COOKIE, c);
    }
    if let Some(c) = set_cookie(STATE_COOKIE, "", PREFIX, 0) {
        h.append(header::SET_COOKIE, c);
    }
    resp
}

async fn sign_out(
    State(s): State<AuthState>,
    Peer(peer): Peer,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let cookie: Option<SessionCookie> = cookie_value(&headers, SESSION_COOKIE)
        .and_then(|v| s.inner.cookies.open(v))
        .and_then(|p| serde_json::from_slice(&p).ok());
    if let Some(c) = &cookie {
        s.inner.metrics.sign_outs.inc();
        s.inner.store.delete(&c.t).await;
        s.inner.recent.forget_ticket(&c.t, s.inner.clock.now());
        s.inner.provider.revoke(&c.r).await;
        tracing::info!(target: "keygate::audit", event = "sign_out", "signed out");
    }
    let host = original_host(&s, peer, &headers);
    let app = application(&s, host.as_deref())
        .or(s.inner.settings.authenticator.applications.first())
        .cloned();
    let params = query(q);
    // Deckhouse's signOutURL is the application path routed *to* sign-out, not where to go after
    // it: go back to `rd` (on the application) or its root, which leads to the sign-in page.
    let target = app
        .as_ref()
        .and_then(|a| safe_redirect(params.get("rd").map(String::as_str), a).ok());
    let mut resp = redirect(&target.unwrap_or_else(|| "/".into()));
    if let Some(c) = set_cookie(SESSION_COOKIE, "", "/", 0) {
        resp.headers_mut().insert(header::SET_COOKIE, c);
    }
    resp
}

/// Reverse-proxy mode: check in-line, then forward.
async fn proxied(State(s): State<AuthState>, Peer(peer): Peer, mut req: Request) -> Response {
    let headers = req.headers().clone();
    let Some(upstream) = &s.inner.upstream else {
        return StatusCode::NOT_FOUND.into_response();
    };
    // The application's signOutURL leads to sign-out, as Deckhouse's extra Ingress does.
    let host = original_host(&s, peer, &headers);
    let signs_out = application(&s, host.as_deref())
        .and_then(|a| a.sign_out_url.as_deref())
        .map(|u| {
            url::Url::parse(u).map_or_else(
                |_| u.split('?').next().unwrap_or(u).to_owned(),
                |p| p.path().to_owned(),
            )
        })
        .is_some_and(|path| path == req.uri().path());
    if signs_out {
        return sign_out(
            State(s.clone()),
            Peer(peer),
            headers,
            RawQuery(req.uri().query().map(str::to_owned)),
        )
        .await;
    }
    match authenticate(&s, &headers, peer).await {
        Outcome::Allowed { record, set_cookie } => {
            // Identity headers come from us only.
            let h = req.headers_mut();
            let client_sent: Vec<HeaderName> = h
                .keys()
                .filter(|k| k.as_str().starts_with("x-auth-request-"))
                .cloned()
                .collect();
            for k in client_sent {
                h.remove(k);
            }
            h.remove(header::AUTHORIZATION);
            identity_headers(&s, &record, h);
            let mut resp = upstream.forward(req, client_ip(&s, peer, &headers)).await;
            if let Some(c) = set_cookie {
                resp.headers_mut().append(header::SET_COOKIE, c);
            }
            resp
        }
        Outcome::Forbidden(why) => page(&s, StatusCode::FORBIDDEN, "Access denied", why),
        Outcome::Unauthenticated { clear } => {
            let wants_html =
                header_str(&headers, "accept").is_some_and(|a| a.contains("text/html"));
            let mut resp = if req.method() == axum::http::Method::GET && wants_html {
                let rd = req
                    .uri()
                    .path_and_query()
                    .map_or("/", |p| p.as_str())
                    .to_owned();
                let q = url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("rd", &rd)
                    .finish();
                redirect(&format!("{PREFIX}/sign_in?{q}"))
            } else {
                (
                    StatusCode::UNAUTHORIZED,
                    Body::from("authentication required\n"),
                )
                    .into_response()
            };
            if clear && let Some(c) = set_cookie(SESSION_COOKIE, "", "/", 0) {
                resp.headers_mut().insert(header::SET_COOKIE, c);
            }
            resp
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_stay_on_the_application() {
        let app = Application {
            domain: "app.example.com".into(),
            sign_out_url: None,
            whitelist: vec![],
        };
        assert_eq!(
            safe_redirect(Some("/a?b=c"), &app),
            Ok("https://app.example.com/a?b=c".into())
        );
        assert_eq!(
            safe_redirect(None, &app),
            Ok("https://app.example.com/".into())
        );
        assert_eq!(
            safe_redirect(Some("https://app.example.com/x"), &app),
            Ok("https://app.example.com/x".into())
        );
        for bad in [
            "https://evil.example.com/",
            "//evil.example.com/",
            "/\\evil.example.com",
            "https://app.example.com.evil.com/",
            "http://app.example.com/",
            "https://user@app.example.com/",
            "javascript:alert(1)",
        ] {
            assert_eq!(safe_redirect(Some(bad), &app), Err(()), "{bad}");
        }
        let with_port = Application {
            domain: "127.0.0.1:8443".into(),
            sign_out_url: None,
            whitelist: vec![],
        };
        assert!(safe_redirect(Some("https://127.0.0.1:8443/x"), &with_port).is_ok());
        assert!(safe_redirect(Some("https://127.0.0.1/x"), &with_port).is_err());
    }

    #[test]
    fn cookie_parsing_finds_exact_names() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("_keygate_auth_state=s; _keygate_auth=v; other=1"),
        );
        assert_eq!(cookie_value(&h, SESSION_COOKIE), Some("v"));
        assert_eq!(cookie_value(&h, STATE_COOKIE), Some("s"));
    }
}
