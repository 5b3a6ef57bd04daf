//! The browser side of the code flow: `/auth`, the connector chooser and the password form.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use keygate_oidc::{AuthorizeError, AuthorizeParams, ErrorCode, LoginOutcome, OAuthError};
use minijinja::context;

use crate::AppState;
use crate::client_ip::ClientIp;
use crate::form::parse_params;
use crate::respond::{found, see_other};

fn params(map: &HashMap<String, String>) -> AuthorizeParams {
    let get = |k: &str| map.get(k).cloned();
    AuthorizeParams {
        client_id: get("client_id"),
        redirect_uri: get("redirect_uri"),
        response_type: get("response_type"),
        scope: get("scope"),
        state: get("state"),
        nonce: get("nonce"),
        code_challenge: get("code_challenge"),
        code_challenge_method: get("code_challenge_method"),
    }
}

/// An OAuth error shown as a page (never a redirect to an untrusted URI).
fn error_page(s: &AppState, err: &OAuthError) -> Response {
    if err.code == ErrorCode::TemporarilyUnavailable {
        return s.pages.error(
            StatusCode::SERVICE_UNAVAILABLE,
            "Temporarily unavailable",
            &err.description,
            Some("Try again in a moment."),
        );
    }
    if err.code == ErrorCode::ServerError {
        return s.pages.error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something went wrong",
            "The sign-in service hit an internal error. Try again in a moment.",
            None,
        );
    }
    s.pages.error(
        StatusCode::BAD_REQUEST,
        "This sign-in request cannot continue",
        &err.description,
        Some("Go back to the application and start the sign-in again."),
    )
}

fn authorize_error(s: &AppState, err: AuthorizeError) -> Response {
    match err {
        AuthorizeError::Page(e) => error_page(s, &e),
        AuthorizeError::Redirect { url, .. } => see_other(&url),
    }
}

fn parse_strict(raw: &[u8]) -> Result<HashMap<String, String>, OAuthError> {
    parse_params(raw).map_err(|name| {
        OAuthError::invalid_request(format!("The parameter {name:?} appears more than once."))
    })
}

pub async fn start(State(s): State<AppState>, RawQuery(q): RawQuery) -> Response {
    let raw = q.unwrap_or_default();
    begin(&s, raw.as_bytes(), &raw)
}

/// OpenID Connect also allows the authorization request as a form POST.
pub async fn start_post(State(s): State<AppState>, body: Bytes) -> Response {
    let query: String = String::from_utf8_lossy(&body).into_owned();
    begin(&s, &body, &query)
}

fn begin(s: &AppState, raw: &[u8], query: &str) -> Response {
    let map = match parse_strict(raw) {
        Ok(m) => m,
        Err(e) => return error_page(s, &e),
    };
    let p = params(&map);
    let (client, _) = match s.provider.validate_authorize(&p) {
        Ok(v) => v,
        Err(e) => return authorize_error(s, e),
    };
    let list = s.provider.connector_infos();
    let auth_url = |id: &str| format!("{}?{query}", s.provider.endpoint(&format!("auth/{id}")));
    match list.as_slice() {
        [] => s.pages.error(
            StatusCode::SERVICE_UNAVAILABLE,
            "No sign-in method is configured",
            "This provider has no users or identity providers yet.",
            Some("Add a User manifest or a DexProvider to the configuration."),
        ),
        [only] => found(&auth_url(&only.id)),
        many => {
            let items: Vec<_> = many
                .iter()
                .map(
                    |c| context! { name => c.name.clone(), type => c.kind, url => auth_url(&c.id) },
                )
                .collect();
            s.pages.render(
                StatusCode::OK,
                "chooser.html",
                context! { connectors => items, client_name => client.name.clone() },
            )
        }
    }
}

pub async fn connector(
    State(s): State<AppState>,
    Path(connector): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let Some(info) = s
        .provider
        .connector_infos()
        .into_iter()
        .find(|c| c.id == connector)
    else {
        return s.pages.error(
            StatusCode::NOT_FOUND,
            "Unknown sign-in method",
            "This sign-in method does not exist.",
            None,
        );
    };
    let map = match parse_strict(q.unwrap_or_default().as_bytes()) {
        Ok(m) => m,
        Err(e) => return error_page(&s, &e),
    };
    let request = match s.provider.authorize(&params(&map), &connector).await {
        Ok(r) => r,
        Err(e) => return authorize_error(&s, e),
    };
    if info.password_prompt.is_some() {
        return found(&login_url(&s, &connector, &request.id));
    }
    // A redirect connector: off to the upstream provider; it comes back to /callback.
    match s.provider.upstream_login_url(&request).await {
        Ok(url) => found(&url),
        Err(e) => upstream_page(&s, &e),
    }
}

/// `/callback`: an upstream provider's answer.
pub async fn callback(State(s): State<AppState>, RawQuery(q): RawQuery) -> Response {
    let params = match parse_strict(q.unwrap_or_default().as_bytes()) {
        Ok(m) => m,
        Err(e) => return error_page(&s, &e),
    };
    match s.provider.upstream_callback(&params).await {
        Ok(LoginOutcome::Redirect(url)) => see_other(&url),
        Ok(_) => s.pages.error(
            StatusCode::BAD_REQUEST,
            "Sign-in failed",
            "The identity provider's answer was not usable.",
            None,
        ),
        Err(e) => upstream_page(&s, &e),
    }
}

/// Upstream refusals and outages as pages: never a 500 for a provider's failure.
fn upstream_page(s: &AppState, e: &OAuthError) -> Response {
    match e.code {
        ErrorCode::TemporarilyUnavailable => s.pages.error(
            StatusCode::SERVICE_UNAVAILABLE,
            "Temporarily unavailable",
            &e.description,
            Some("Try again in a moment, or choose another sign-in method."),
        ),
        ErrorCode::AccessDenied => s.pages.error(
            StatusCode::FORBIDDEN,
            "Sign-in refused",
            &e.description,
            None,
        ),
        _ => error_page(s, e),
    }
}

fn login_url(s: &AppState, connector: &str, request_id: &str) -> String {
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("state", request_id)
        .finish();
    format!(
        "{}?{query}",
        s.provider.endpoint(&format!("auth/{connector}/login"))
    )
}

fn request_id(q: Option<String>) -> String {
    q.and_then(|q| parse_params(q.as_bytes()).ok())
        .and_then(|m| m.get("state").cloned())
        .unwrap_or_default()
}

fn expired_page(s: &AppState) -> Response {
    s.pages.error(
        StatusCode::BAD_REQUEST,
        "This sign-in has expired",
        "The sign-in request is unknown or too old.",
        Some("Go back to the application and start the sign-in again."),
    )
}

fn render_form(
    s: &AppState,
    status: StatusCode,
    connector: &str,
    id: &str,
    client_name: Option<String>,
    login: &str,
    error: Option<&str>,
) -> Response {
    let infos = s.provider.connector_infos();
    let info = infos.iter().find(|c| c.id == connector);
    s.pages.render(
        status,
        "login.html",
        context! {
            connector_name => info.map_or("Email", |c| c.name.as_str()),
            username_prompt => info.and_then(|c| c.password_prompt.as_deref()).unwrap_or("Username"),
            post_url => login_url(s, connector, id),
            login_value => login,
            client_name,
            error,
        },
    )
}

pub async fn login_form(
    State(s): State<AppState>,
    Path(connector): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let id = request_id(q);
    let request = match s.provider.auth_request(&id).await {
        Ok(Some(r)) if r.connector_id == connector => r,
        Ok(_) => return expired_page(&s),
        Err(e) => return error_page(&s, &e),
    };
    let client_name = s
        .provider
        .client(&request.client_id)
        .map(|c| c.name.clone());
    render_form(&s, StatusCode::OK, &connector, &id, client_name, "", None)
}

/// Refuses form posts from other origins (login CSRF). Browsers say where a request comes from in
/// `Sec-Fetch-Site`; older ones only in `Origin` (which is "null" under some referrer policies).
/// Scripts send neither and are not a CSRF vector.
pub(super) fn cross_site(s: &AppState, headers: &HeaderMap) -> bool {
    let value = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = value(header::HeaderName::from_static("sec-fetch-site")) {
        return !matches!(site, "same-origin" | "none");
    }
    matches!(value(header::ORIGIN), Some(o) if o != "null" && o != s.origin)
}

pub async fn login_submit(
    State(s): State<AppState>,
    ClientIp(ip): ClientIp,
    Path(connector): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if cross_site(&s, &headers) {
        return s.pages.error(
            StatusCode::FORBIDDEN,
            "Sign-in refused",
            "The form was submitted from another site.",
            None,
        );
    }
    let id = request_id(q);
    let request = match s.provider.auth_request(&id).await {
        Ok(Some(r)) if r.connector_id == connector => r,
        Ok(_) => return expired_page(&s),
        Err(e) => return error_page(&s, &e),
    };
    let form = match parse_strict(&body) {
        Ok(f) => f,
        Err(e) => return error_page(&s, &e),
    };
    let login = form.get("login").map(String::as_str).unwrap_or("");
    let password = form.get("password").map(String::as_str).unwrap_or("");
    match s.provider.login_password(&id, login, password, ip).await {
        Ok(LoginOutcome::Redirect(url)) => see_other(&url),
        Ok(LoginOutcome::RateLimited { retry_after }) => {
            let client_name = s
                .provider
                .client(&request.client_id)
                .map(|c| c.name.clone());
            let shown_login: String = login.chars().take(256).collect();
            let message = format!(
                "Too many sign-in attempts. Try again in {retry_after} second{}.",
                if retry_after == 1 { "" } else { "s" }
            );
            let mut resp = render_form(
                &s,
                StatusCode::TOO_MANY_REQUESTS,
                &connector,
                &id,
                client_name,
                &shown_login,
                Some(&message),
            );
            if let Ok(v) = axum::http::HeaderValue::from_str(&retry_after.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
            resp
        }
        Ok(LoginOutcome::InvalidCredentials) => {
            let client_name = s
                .provider
                .client(&request.client_id)
                .map(|c| c.name.clone());
            let shown_login: String = login.chars().take(256).collect();
            render_form(
                &s,
                StatusCode::UNAUTHORIZED,
                &connector,
                &id,
                client_name,
                &shown_login,
                Some(if connector == keygate_oidc::LOCAL_CONNECTOR {
                    "Invalid email address or password."
                } else {
                    "Invalid username or password."
                }),
            )
        }
        Err(e) => upstream_page(&s, &e),
    }
}
