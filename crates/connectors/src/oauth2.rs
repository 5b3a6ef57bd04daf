//! What the OAuth2 connectors (GitHub, GitLab, Bitbucket Cloud) share: the authorization URL,
//! the code exchange and refresh, and authenticated JSON calls to the provider's API.

use std::time::Duration;

use keygate_config::Secret;
use keygate_oidc::{ConnectorError, UpstreamLogin};
use serde_json::Value;

pub struct OAuth2 {
    pub http: reqwest::Client,
    pub client_id: String,
    pub client_secret: Secret,
    pub authorize_url: String,
    pub token_url: String,
    pub scopes: String,
    /// Send `client_id`/`client_secret` as form parameters (GitHub documents only those)
    /// rather than in HTTP Basic.
    pub credentials_in_body: bool,
    /// Send PKCE (`S256`): for providers that document it (GitLab).
    pub pkce: bool,
}

/// What a code exchange or a refresh yields.
pub struct Tokens {
    pub access: String,
    pub refresh: Option<String>,
}

fn tokens_of(body: &Value) -> Result<Tokens, ConnectorError> {
    Ok(Tokens {
        access: str_of(body, "access_token")
            .ok_or_else(|| ConnectorError::Refused("no access token".into()))?,
        refresh: str_of(body, "refresh_token"),
    })
}

pub fn unavailable(e: impl std::fmt::Display) -> ConnectorError {
    ConnectorError::Unavailable(e.to_string())
}

pub fn http() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(3))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("keygate/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| e.to_string())
}

impl OAuth2 {
    /// The PKCE verifier of one sign-in.
    pub fn pkce_verifier(&self, login: &UpstreamLogin<'_>) -> String {
        login.derive("pkce", self.client_secret.expose())
    }

    pub fn login_url(&self, login: &UpstreamLogin<'_>) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        q.append_pair("client_id", &self.client_id)
            .append_pair("redirect_uri", login.callback)
            .append_pair("response_type", "code")
            .append_pair("scope", &self.scopes)
            .append_pair("state", login.state);
        if self.pkce {
            let challenge = keygate_oidc::pkce_s256(&self.pkce_verifier(login));
            q.append_pair("code_challenge", &challenge)
                .append_pair("code_challenge_method", "S256");
        }
        format!("{}?{}", self.authorize_url, q.finish())
    }

    /// A token call (client credentials in HTTP Basic, as RFC 6749 prefers, or in the form).
    pub async fn token(&self, form: &[(&str, &str)]) -> Result<Value, ConnectorError> {
        let mut req = self
            .http
            .post(&self.token_url)
            .header("Accept", "application/json");
        let mut form = form.to_vec();
        if self.credentials_in_body {
            form.push(("client_id", &self.client_id));
            form.push(("client_secret", self.client_secret.expose()));
        } else {
            req = req.basic_auth(&self.client_id, Some(self.client_secret.expose()));
        }
        let resp = req.form(&form).send().await.map_err(unavailable)?;
        let status = resp.status();
        // A provider in trouble may still answer JSON (`{"error": "server_error"}`): not a refusal.
        if status.is_server_error() {
            return Err(ConnectorError::Unavailable(format!(
                "token endpoint answered {status}"
            )));
        }
        let body: Value = resp.json().await.map_err(unavailable)?;
        // GitHub answers errors with 200 and an `error` field.
        if let Some(error) = body.get("error").and_then(Value::as_str) {
            let reason = match body.get("error_description").and_then(Value::as_str) {
                Some(d) if !d.is_empty() => format!("{error}: {d}"),
                _ => error.to_owned(),
            };
            if matches!(error, "temporarily_unavailable" | "server_error") {
                return Err(ConnectorError::Unavailable(reason));
            }
            return Err(ConnectorError::Refused(reason));
        }
        if status.is_client_error() {
            return Err(ConnectorError::Refused(format!(
                "token endpoint answered {status}"
            )));
        }
        if !status.is_success() {
            return Err(ConnectorError::Unavailable(format!(
                "token endpoint answered {status}"
            )));
        }
        Ok(body)
    }

    pub async fn exchange(
        &self,
        login: &UpstreamLogin<'_>,
        params: &std::collections::HashMap<String, String>,
    ) -> Result<Tokens, ConnectorError> {
        let verifier = self.pkce.then(|| self.pkce_verifier(login));
        let form = code_grant(params, login.callback, verifier.as_deref())?;
        let body = self.token(&form).await?;
        tokens_of(&body)
    }

    /// A refresh grant; a provider that does not rotate keeps the refresh token it was given.
    pub async fn refresh(&self, refresh_token: &str) -> Result<Tokens, ConnectorError> {
        let body = self
            .token(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ])
            .await?;
        let tokens = tokens_of(&body)?;
        Ok(Tokens {
            refresh: tokens.refresh.or_else(|| Some(refresh_token.to_owned())),
            ..tokens
        })
    }
}

/// GET a JSON document with a bearer token. 401/403 mean the grant is gone (refused); other
/// failures mean the provider is unavailable.
pub async fn get_json(
    http: &reqwest::Client,
    url: &str,
    token: &str,
) -> Result<(Value, Option<String>), ConnectorError> {
    let resp = http
        .get(url)
        .bearer_auth(token)
        .header("Accept", "application/json")
        .send()
        .await
        .map_err(unavailable)?;
    let status = resp.status();
    if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
        return Err(ConnectorError::Refused(format!("{url} answered {status}")));
    }
    if !status.is_success() {
        return Err(ConnectorError::Unavailable(format!(
            "{url} answered {status}"
        )));
    }
    // RFC 8288 `Link: <...>; rel="next"` (GitHub pagination).
    let next = resp
        .headers()
        .get_all("link")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find(|part| part.contains("rel=\"next\""))
        .and_then(|part| part.split(';').next())
        .map(|u| {
            u.trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_owned()
        });
    Ok((resp.json().await.map_err(unavailable)?, next))
}

/// All pages of a list: GitHub style (`Link` header, arrays) or Bitbucket style (`{values, next}`).
pub async fn get_all(
    http: &reqwest::Client,
    first: &str,
    token: &str,
) -> Result<Vec<Value>, ConnectorError> {
    let mut out = Vec::new();
    let mut url = Some(first.to_owned());
    let mut pages = 0;
    while let Some(u) = url.take() {
        pages += 1;
        if pages > 50 {
            break;
        }
        let (body, link_next) = get_json(http, &u, token).await?;
        match body {
            Value::Array(items) => out.extend(items),
            Value::Object(ref o) => {
                out.extend(
                    o.get("values")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default(),
                );
                url = o.get("next").and_then(Value::as_str).map(str::to_owned);
            }
            _ => {}
        }
        if url.is_none() {
            url = link_next;
        }
    }
    Ok(out)
}

pub fn str_of(v: &Value, key: &str) -> Option<String> {
    match v.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The token request for the provider's answer at the callback: its error, if it sent one, or
/// its code, with the PKCE verifier when one was sent.
pub(crate) fn code_grant<'a>(
    params: &'a std::collections::HashMap<String, String>,
    callback: &'a str,
    verifier: Option<&'a str>,
) -> Result<Vec<(&'a str, &'a str)>, ConnectorError> {
    if let Some(error) = params.get("error") {
        return Err(ConnectorError::Refused(format!(
            "{error}: {}",
            params.get("error_description").map_or("", String::as_str)
        )));
    }
    let code = params
        .get("code")
        .ok_or_else(|| ConnectorError::Refused("no code in the answer".into()))?;
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", callback),
    ];
    if let Some(v) = verifier {
        form.push(("code_verifier", v));
    }
    Ok(form)
}
