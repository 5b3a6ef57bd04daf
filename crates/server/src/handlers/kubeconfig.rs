//! The kubeconfig generator (Deckhouse's kubeconfig page): sign in as the `kubeconfig-generator`
//! client with the kubernetes audience, then get kubectl commands and kubeconfig files per cluster.
//! The tokens stay in a sealed, HttpOnly cookie scoped to this page until the ID token expires.

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use keygate_oidc::{ClientAuth, Sealer, TokenRequest, pkce_s256, random_id};
use keygate_store::model::GeneratedClientSecret;
use minijinja::context;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::build::KUBECONFIG_CLIENT_ID;
use crate::form::parse_params;
use crate::kubeconfig::{self, Credentials};
use crate::respond::{cookie_value, found};

const SESSION: &str = "keygate_kubeconfig";
const STATE: &str = "keygate_kubeconfig_state";
/// The key sealing this page's cookies, shared by all replicas through storage.
const KEY_ID: &str = "keygate:kubeconfig-page-key";

#[derive(Serialize, Deserialize)]
struct PageSession {
    id_token: String,
    refresh_token: String,
}

#[derive(Serialize, Deserialize)]
struct PageState {
    state: String,
    verifier: String,
    nonce: String,
    /// The cluster page to land on.
    next: String,
    exp: i64,
}

async fn sealer(s: &AppState) -> Option<&Sealer> {
    s.page_sealer
        .get_or_try_init(|| async {
            let store = s.provider.store();
            let key = match store.get::<GeneratedClientSecret>(KEY_ID).await {
                Ok(Some(k)) => k.secret,
                Ok(None) => {
                    let fresh = GeneratedClientSecret {
                        id: KEY_ID.into(),
                        secret: random_id(32),
                        created_at: s.provider.now(),
                    };
                    match store.create(&fresh).await {
                        Ok(()) => fresh.secret,
                        Err(_) => store
                            .get::<GeneratedClientSecret>(KEY_ID)
                            .await
                            .ok()
                            .flatten()
                            .map(|k| k.secret)
                            .ok_or(())?,
                    }
                }
                Err(_) => return Err(()),
            };
            Ok::<_, ()>(Sealer::derive(key.as_bytes(), "kubeconfig-page"))
        })
        .await
        .ok()
}

fn cookie(s: &AppState, name: &str, value: &str, max_age: i64) -> Option<HeaderValue> {
    let secure = if s.https { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path={}/kubeconfig; Max-Age={}; HttpOnly; SameSite=Lax{secure}",
        s.base_path,
        max_age.max(0)
    ))
    .ok()
}

fn disabled(s: &AppState) -> Option<Response> {
    s.provider.settings().kubeconfig_generator.is_empty().then(|| {
        s.pages.error(StatusCode::NOT_FOUND, "Page not found", "No clusters are configured for the kubeconfig generator (spec.kubeconfigGenerator).", None)
    })
}

/// The page's session, if its cookie is ours and its ID token still valid.
async fn session(
    s: &AppState,
    headers: &HeaderMap,
) -> Option<(PageSession, keygate_oidc::IdTokenClaims)> {
    let sealer = sealer(s).await?;
    let session: PageSession =
        serde_json::from_slice(&sealer.open(cookie_value(headers, SESSION)?)?).ok()?;
    let claims = s.provider.verify_token(&session.id_token)?;
    Some((session, claims))
}

/// Starts a sign-in that lands on `next` (a cluster id, or "" for the index).
async fn sign_in(s: &AppState, next: &str) -> Response {
    let Some(sealer) = sealer(s).await else {
        return s.pages.error(
            StatusCode::SERVICE_UNAVAILABLE,
            "Storage unavailable",
            "The generator cannot start a sign-in right now.",
            None,
        );
    };
    let st = PageState {
        state: random_id(16),
        verifier: random_id(32),
        nonce: random_id(16),
        next: next.to_owned(),
        exp: s.provider.now() + 600,
    };
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("client_id", KUBECONFIG_CLIENT_ID)
        .append_pair("redirect_uri", &s.provider.endpoint("kubeconfig/callback"))
        .append_pair("response_type", "code")
        .append_pair(
            "scope",
            "openid profile email groups offline_access audience:server:client_id:kubernetes",
        )
        .append_pair("state", &st.state)
        .append_pair("nonce", &st.nonce)
        .append_pair("code_challenge", &pkce_s256(&st.verifier))
        .append_pair("code_challenge_method", "S256")
        .finish();
    let mut resp = found(&format!("{}?{query}", s.provider.endpoint("auth")));
    if let Some(c) = serde_json::to_vec(&st)
        .ok()
        .and_then(|v| cookie(s, STATE, &sealer.seal(&v), 600))
    {
        resp.headers_mut().insert(header::SET_COOKIE, c);
    }
    resp
}

pub async fn index(State(s): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(r) = disabled(&s) {
        return r;
    }
    let clusters = &s.provider.settings().kubeconfig_generator;
    if session(&s, &headers).await.is_none() {
        return sign_in(&s, "").await;
    }
    match clusters.as_slice() {
        [only] => found(&s.provider.endpoint(&format!("kubeconfig/{}", only.id))),
        _ => render(&s, &headers, None).await,
    }
}

pub async fn callback(
    State(s): State<AppState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    if let Some(r) = disabled(&s) {
        return r;
    }
    let restart = s.provider.endpoint("kubeconfig");
    let again = |title: &str, message: &str| {
        s.pages.error_with_action(
            StatusCode::BAD_REQUEST,
            title,
            message,
            &restart,
            "Sign in again",
        )
    };
    let params = parse_params(q.unwrap_or_default().as_bytes()).unwrap_or_default();
    let Some(sealer) = sealer(&s).await else {
        return again(
            "Storage unavailable",
            "The generator cannot finish the sign-in right now.",
        );
    };
    let now = s.provider.now();
    let st: Option<PageState> = cookie_value(&headers, STATE)
        .and_then(|v| sealer.open(v))
        .and_then(|p| serde_json::from_slice(&p).ok())
        .filter(|st: &PageState| st.exp > now);
    let Some(st) = st else {
        return again(
            "The sign-in expired",
            "It took too long, or it was started in another browser.",
        );
    };
    if params.get("state") != Some(&st.state) {
        return again(
            "The sign-in failed",
            "The answer does not belong to this browser (state).",
        );
    }
    if let Some(error) = params.get("error") {
        let description = params.get("error_description").cloned().unwrap_or_default();
        return s.pages.error_with_action(
            StatusCode::FORBIDDEN,
            "Access denied",
            &format!("{error}: {description}"),
            &restart,
            "Try again",
        );
    }
    let auth = ClientAuth {
        client_id: KUBECONFIG_CLIENT_ID.into(),
        secret: None,
        basic: false,
    };
    let req = TokenRequest {
        grant_type: Some("authorization_code".into()),
        code: params.get("code").cloned(),
        redirect_uri: Some(s.provider.endpoint("kubeconfig/callback")),
        code_verifier: Some(st.verifier.clone()),
        ..TokenRequest::default()
    };
    let tokens = match s.provider.token(&auth, &req, None).await {
        Ok(t) => t,
        Err(e) => return again("The sign-in failed", &e.description),
    };
    let Some(claims) = s
        .provider
        .verify_token(&tokens.id_token)
        .filter(|c| c.nonce.as_deref() == Some(st.nonce.as_str()))
    else {
        return again("The sign-in failed", "The ID token did not verify.");
    };
    let Some(refresh_token) = tokens.refresh_token else {
        return again("The sign-in failed", "No refresh token was issued.");
    };
    let session = PageSession {
        id_token: tokens.id_token,
        refresh_token,
    };
    let next = if st.next.is_empty() {
        s.provider.endpoint("kubeconfig")
    } else {
        s.provider.endpoint(&format!("kubeconfig/{}", st.next))
    };
    let mut resp = found(&next);
    if let Some(c) = serde_json::to_vec(&session)
        .ok()
        .and_then(|v| cookie(&s, SESSION, &sealer.seal(&v), claims.exp - now))
    {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    if let Some(c) = cookie(&s, STATE, "", 0) {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    resp
}

/// `2026-11-30 12:00` for people.
fn utc(ts: i64) -> String {
    keygate_config::format_rfc3339(ts)
        .replace('T', " ")
        .chars()
        .take(16)
        .collect()
}

async fn render(s: &AppState, headers: &HeaderMap, cluster_id: Option<&str>) -> Response {
    let Some((session, claims)) = self::session(s, headers).await else {
        return sign_in(s, cluster_id.unwrap_or("")).await;
    };
    let settings = s.provider.settings();
    let clusters: Vec<_> = settings
        .kubeconfig_generator
        .iter()
        .map(|c| context! { id => c.id.clone(), url => s.provider.endpoint(&format!("kubeconfig/{}", c.id)) })
        .collect();
    let email = claims.email.clone().unwrap_or_default();
    let Some(id) = cluster_id else {
        return s.pages.render(
            StatusCode::OK,
            "kubeconfig.html",
            context! { clusters, email, expires => utc(claims.exp) },
        );
    };
    let Some(cluster) = settings.kubeconfig_generator.iter().find(|c| c.id == id) else {
        return s.pages.error(
            StatusCode::NOT_FOUND,
            "Unknown cluster",
            "No cluster with this id is configured.",
            None,
        );
    };
    let creds = Credentials {
        issuer: &settings.issuer,
        email: &email,
        id_token: &session.id_token,
        refresh_token: &session.refresh_token,
    };
    let mut resp = s.pages.render(
        StatusCode::OK,
        "kubeconfig.html",
        context! {
            clusters,
            email,
            expires => utc(claims.exp),
            groups => claims.groups.clone().unwrap_or_default(),
            cluster => context! { id => cluster.id.clone(), description => cluster.description.clone(), master_uri => cluster.master_uri.clone() },
            commands => kubeconfig::commands(cluster, &creds),
            kubeconfig => kubeconfig::auth_provider(cluster, &creds),
            exec_kubeconfig => kubeconfig::exec(cluster, &settings.issuer, &email),
            download_url => s.provider.endpoint(&format!("kubeconfig/{}/kubeconfig.yaml", cluster.id)),
            id_token => session.id_token.clone(),
            claims_json => serde_json::to_string_pretty(&claims).unwrap_or_default(),
        },
    );
    // The page shows tokens: never cache it anywhere.
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

pub async fn cluster(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Some(r) = disabled(&s) {
        return r;
    }
    render(&s, &headers, Some(&id)).await
}

/// `GET /kubeconfig/<cluster>/kubeconfig.yaml` with the page's session cookie (for scripts too).
pub async fn download(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Some(r) = disabled(&s) {
        return r;
    }
    let settings = s.provider.settings();
    let Some(cluster) = settings.kubeconfig_generator.iter().find(|c| c.id == id) else {
        return (StatusCode::NOT_FOUND, "no such cluster\n").into_response();
    };
    let Some((session, claims)) = self::session(&s, &headers).await else {
        return (
            StatusCode::UNAUTHORIZED,
            "sign in at the kubeconfig page first\n",
        )
            .into_response();
    };
    let email = claims.email.unwrap_or_default();
    let creds = Credentials {
        issuer: &settings.issuer,
        email: &email,
        id_token: &session.id_token,
        refresh_token: &session.refresh_token,
    };
    let disposition = format!(
        "attachment; filename=\"kubeconfig-{}.yaml\"",
        cluster.id.replace('"', "")
    );
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/yaml"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_str(&disposition)
                    .unwrap_or(HeaderValue::from_static("attachment")),
            ),
        ],
        kubeconfig::auth_provider(cluster, &creds),
    )
        .into_response()
}
