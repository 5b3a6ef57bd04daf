//! `/demo`: a built-in relying party so a fresh install can be tried in a browser. It runs the
//! real code flow (PKCE, state, nonce) against this provider and shows the resulting claims.

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use keygate_oidc::{ClientAuth, TokenRequest, pkce_s256, random_id};
use minijinja::context;

use crate::AppState;
use crate::build::DEMO_CLIENT_ID;
use crate::form::parse_params;
use crate::respond::{cookie_value, found};

const COOKIE: &str = "keygate_demo";

fn disabled(s: &AppState) -> Option<Response> {
    (!s.provider.settings().demo).then(|| {
        s.pages.error(
            StatusCode::NOT_FOUND,
            "Page not found",
            "The demo page is not enabled on this provider.",
            None,
        )
    })
}

fn cookie(s: &AppState, value: &str, max_age: i64) -> HeaderValue {
    let secure = if s.https { "; Secure" } else { "" };
    let path = format!("{}/demo", s.base_path);
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

pub async fn start(State(s): State<AppState>) -> Response {
    if let Some(r) = disabled(&s) {
        return r;
    }
    let (state, verifier, nonce) = (random_id(16), random_id(32), random_id(16));
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("client_id", DEMO_CLIENT_ID)
        .append_pair("redirect_uri", &s.provider.endpoint("demo/callback"))
        .append_pair("response_type", "code")
        .append_pair("scope", "openid email profile groups offline_access")
        .append_pair("state", &state)
        .append_pair("nonce", &nonce)
        .append_pair("code_challenge", &pkce_s256(&verifier))
        .append_pair("code_challenge_method", "S256")
        .finish();
    let mut resp = found(&format!("{}?{query}", s.provider.endpoint("auth")));
    resp.headers_mut().insert(
        header::SET_COOKIE,
        cookie(&s, &format!("{state}.{verifier}.{nonce}"), 600),
    );
    resp
}

pub async fn callback(
    State(s): State<AppState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    if let Some(r) = disabled(&s) {
        return r;
    }
    let restart = s.provider.endpoint("demo");
    let params = parse_params(q.unwrap_or_default().as_bytes()).unwrap_or_default();
    if let Some(error) = params.get("error") {
        let description = params.get("error_description").cloned().unwrap_or_default();
        return s.pages.error_with_action(
            StatusCode::FORBIDDEN,
            "Sign-in was refused",
            &format!("{error}: {description}"),
            &restart,
            "Start the demo again",
        );
    }
    let cookie_value = cookie_value(&headers, COOKIE).map(str::to_owned);
    let parts: Vec<String> = cookie_value
        .unwrap_or_default()
        .split('.')
        .map(str::to_owned)
        .collect();
    let [state, verifier, nonce] = parts.as_slice() else {
        return s.pages.error_with_action(
            StatusCode::BAD_REQUEST,
            "The demo sign-in expired",
            "This demo sign-in was already completed, or it has expired.",
            &restart,
            "Start the demo again",
        );
    };
    if params.get("state") != Some(state) {
        return s.pages.error_with_action(
            StatusCode::BAD_REQUEST,
            "The demo sign-in failed",
            "The state does not match (CSRF protection).",
            &restart,
            "Start the demo again",
        );
    }
    let auth = ClientAuth {
        client_id: DEMO_CLIENT_ID.into(),
        secret: None,
        basic: false,
    };
    let req = TokenRequest {
        grant_type: Some("authorization_code".into()),
        code: params.get("code").cloned(),
        redirect_uri: Some(s.provider.endpoint("demo/callback")),
        code_verifier: Some(verifier.clone()),
        ..TokenRequest::default()
    };
    let tokens = match s.provider.token(&auth, &req, None).await {
        Ok(t) => t,
        Err(e) => {
            return s.pages.error_with_action(
                StatusCode::BAD_REQUEST,
                "The demo sign-in failed",
                &e.to_string(),
                &restart,
                "Start the demo again",
            );
        }
    };
    let Some(claims) = s
        .provider
        .verify_token(&tokens.id_token)
        .filter(|c| c.nonce.as_ref() == Some(nonce))
    else {
        return s.pages.error_with_action(
            StatusCode::BAD_GATEWAY,
            "The demo sign-in failed",
            "The ID token did not verify.",
            &restart,
            "Start the demo again",
        );
    };
    let claims_json = serde_json::to_string_pretty(&claims).unwrap_or_default();
    let mut resp = s.pages.render(
        StatusCode::OK,
        "demo.html",
        context! {
            subject => claims.sub,
            email => claims.email,
            name => claims.name,
            groups => claims.groups.unwrap_or_default(),
            claims_json,
            id_token => tokens.id_token,
            refresh_token => tokens.refresh_token,
            restart_url => s.provider.endpoint("demo"),
        },
    );
    resp.headers_mut()
        .insert(header::SET_COOKIE, cookie(&s, "", 0));
    resp
}
