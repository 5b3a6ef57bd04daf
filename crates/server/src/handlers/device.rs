//! The device flow's HTTP side: `/device/code` for the device, `/device` and `/device/callback`
//! for the user's browser.

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use keygate_oidc::LOCAL_CONNECTOR;
use minijinja::context;

use super::authorize::cross_site;
use super::token::{client_auth, form, is_basic};
use crate::AppState;
use crate::form::parse_params;
use crate::respond::{found, no_store_json, oauth_error};

pub async fn code(State(s): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let basic = is_basic(&headers);
    let result = async {
        let form = form(&headers, &body)?;
        let auth = client_auth(&headers, &form)?;
        s.provider
            .device_authorization(&auth, form.get("scope").map(String::as_str))
            .await
    }
    .await;
    match result {
        Ok(a) => no_store_json(StatusCode::OK, &a),
        Err(e) => oauth_error(&e, basic),
    }
}

fn device_page(
    s: &AppState,
    status: StatusCode,
    user_code: &str,
    error: Option<&str>,
    done: bool,
) -> Response {
    s.pages.render(
        status,
        "device.html",
        context! { post_url => s.provider.endpoint("device"), user_code, error, done },
    )
}

pub async fn page(State(s): State<AppState>, RawQuery(q): RawQuery) -> Response {
    let params = parse_params(q.unwrap_or_default().as_bytes()).unwrap_or_default();
    let code = params.get("user_code").map(String::as_str).unwrap_or("");
    device_page(
        &s,
        StatusCode::OK,
        &keygate_oidc::normalize_user_code(code),
        None,
        false,
    )
}

pub async fn submit(State(s): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    if cross_site(&s, &headers) {
        return s.pages.error(
            StatusCode::FORBIDDEN,
            "Sign-in refused",
            "The form was submitted from another site.",
            None,
        );
    }
    let params = parse_params(&body).unwrap_or_default();
    let typed = params.get("user_code").map(String::as_str).unwrap_or("");
    let request = match s.provider.device_request_by_user_code(typed).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            let shown: String = typed.chars().take(16).collect();
            return device_page(
                &s,
                StatusCode::BAD_REQUEST,
                &shown,
                Some(
                    "This code is unknown or has expired. Check it, or start again on your device.",
                ),
                false,
            );
        }
        Err(e) => {
            return s.pages.error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                &e.description,
                None,
            );
        }
    };
    let params = s.provider.device_authorize_params(&request).await;
    match s.provider.authorize(&params, LOCAL_CONNECTOR).await {
        Ok(auth_request) => {
            let query = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("state", &auth_request.id)
                .finish();
            found(&format!(
                "{}?{query}",
                s.provider
                    .endpoint(&format!("auth/{LOCAL_CONNECTOR}/login"))
            ))
        }
        Err(
            keygate_oidc::AuthorizeError::Page(e)
            | keygate_oidc::AuthorizeError::Redirect { error: e, .. },
        ) => s.pages.error(
            StatusCode::BAD_REQUEST,
            "This device cannot sign in",
            &e.description,
            None,
        ),
    }
}

pub async fn callback(State(s): State<AppState>, RawQuery(q): RawQuery) -> Response {
    let params = parse_params(q.unwrap_or_default().as_bytes()).unwrap_or_default();
    if let Some(error) = params.get("error") {
        if let Some(user_code) = params.get("state") {
            let _ = s.provider.device_deny(user_code).await;
        }
        let description = params.get("error_description").cloned().unwrap_or_default();
        return s.pages.error(
            StatusCode::FORBIDDEN,
            "The device was not signed in",
            &format!("{error}: {description}"),
            None,
        );
    }
    let (Some(code), Some(user_code)) = (params.get("code"), params.get("state")) else {
        return s.pages.error(
            StatusCode::BAD_REQUEST,
            "The device was not signed in",
            "The answer is incomplete.",
            None,
        );
    };
    match s.provider.device_complete(code, user_code).await {
        Ok(()) => device_page(&s, StatusCode::OK, "", None, true),
        Err(e) => s.pages.error(
            StatusCode::BAD_REQUEST,
            "The device was not signed in",
            &e.description,
            Some("Start the login again on your device."),
        ),
    }
}
