//! The authenticator as a relying party of the provider: discovery, code exchange, refresh,
//! revocation, and ID-token verification against the provider's JWKS.

use std::time::Duration;

use keygate_config::{AuthenticatorSettings, Secret};
use keygate_oidc::IdTokenClaims;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::OnceCell;

/// Why a provider call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The provider answered and said no (expired or revoked refresh token, bad code...).
    #[error("refused by the provider: {0}")]
    Refused(String),
    /// No usable answer (down, timeout, garbage).
    #[error("provider unavailable: {0}")]
    Unavailable(String),
}

#[derive(Debug, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
    #[serde(default)]
    revocation_endpoint: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Tokens {
    pub id_token: String,
    #[serde(default)]
    pub refresh_token: Option<String>,
}

pub struct ProviderClient {
    http: reqwest::Client,
    issuer: String,
    client_id: String,
    client_secret: Secret,
    discovery: OnceCell<Discovery>,
    keys: keygate_connectors::remote_keys::RemoteKeys,
}

fn unavailable(e: impl std::fmt::Display) -> CallError {
    CallError::Unavailable(e.to_string())
}

fn form_escape(v: &str) -> String {
    url::form_urlencoded::byte_serialize(v.as_bytes()).collect()
}

impl ProviderClient {
    pub fn new(settings: &AuthenticatorSettings) -> Result<Self, String> {
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(3))
            .redirect(reqwest::redirect::Policy::none());
        if let Some(ca) = &settings.issuer_ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| format!("spec.issuerCAFile {}: {e}", ca.display()))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| format!("spec.issuerCAFile {}: {e}", ca.display()))?;
            builder = builder.add_root_certificate(cert);
        }
        Ok(Self {
            http: builder.build().map_err(|e| e.to_string())?,
            issuer: settings.issuer.clone(),
            client_id: settings.authenticator.client_id.clone(),
            client_secret: settings.client_secret.clone(),
            discovery: OnceCell::new(),
            keys: keygate_connectors::remote_keys::RemoteKeys::default(),
        })
    }

    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The provider's endpoints, discovered once (lazily: the provider may start after us).
    async fn discovery(&self) -> Result<&Discovery, CallError> {
        self.discovery
            .get_or_try_init(|| async {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    self.issuer.trim_end_matches('/')
                );
                let d: Discovery = self
                    .http
                    .get(&url)
                    .send()
                    .await
                    .map_err(unavailable)?
                    .error_for_status()
                    .map_err(unavailable)?
                    .json()
                    .await
                    .map_err(unavailable)?;
                if d.issuer != self.issuer {
                    return Err(CallError::Unavailable(format!(
                        "discovery names issuer {:?}, configured {:?}",
                        d.issuer, self.issuer
                    )));
                }
                Ok(d)
            })
            .await
    }

    pub async fn authorization_endpoint(&self) -> Result<String, CallError> {
        Ok(self.discovery().await?.authorization_endpoint.clone())
    }

    async fn token_call(&self, form: &[(&str, &str)]) -> Result<Tokens, CallError> {
        let d = self.discovery().await?;
        let resp = self
            .http
            .post(&d.token_endpoint)
            .basic_auth(
                form_escape(&self.client_id),
                Some(form_escape(self.client_secret.expose())),
            )
            .form(form)
            .send()
            .await
            .map_err(unavailable)?;
        let status = resp.status();
        if status.is_success() {
            return resp.json().await.map_err(unavailable);
        }
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        let error = body
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        if status.is_client_error()
            && matches!(
                error.as_str(),
                "invalid_grant"
                    | "invalid_request"
                    | "invalid_client"
                    | "invalid_scope"
                    | "unauthorized_client"
            )
        {
            Err(CallError::Refused(error))
        } else {
            Err(CallError::Unavailable(format!(
                "token endpoint answered {status} {error}"
            )))
        }
    }

    pub async fn exchange(
        &self,
        code: &str,
        redirect_uri: &str,
        verifier: &str,
    ) -> Result<Tokens, CallError> {
        self.token_call(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier),
        ])
        .await
    }

    pub async fn refresh(&self, refresh_token: &str) -> Result<Tokens, CallError> {
        self.token_call(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ])
        .await
    }

    /// RFC 7009, best effort (sign-out must not fail because the provider is down).
    pub async fn revoke(&self, refresh_token: &str) {
        let Ok(d) = self.discovery().await else {
            return;
        };
        let Some(endpoint) = &d.revocation_endpoint else {
            return;
        };
        let result = self
            .http
            .post(endpoint)
            .basic_auth(
                form_escape(&self.client_id),
                Some(form_escape(self.client_secret.expose())),
            )
            .form(&[
                ("token", refresh_token),
                ("token_type_hint", "refresh_token"),
            ])
            .send()
            .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "could not revoke the refresh token at sign-out");
        }
    }

    /// Verifies an ID token from the provider: signature (JWKS, refetched once for an unknown
    /// key), issuer, audience, expiry and, at login, the nonce.
    pub async fn verify(
        &self,
        id_token: &str,
        nonce: Option<&str>,
        now: i64,
    ) -> Result<IdTokenClaims, CallError> {
        let jwks_uri = self.discovery().await?.jwks_uri.clone();
        let payload = self
            .keys
            .verify(&self.http, &jwks_uri, id_token)
            .await
            .map_err(CallError::Unavailable)?
            .ok_or_else(|| CallError::Refused("ID token signature".into()))?;
        let claims: IdTokenClaims = serde_json::from_slice(&payload)
            .map_err(|e| CallError::Refused(format!("ID token claims: {e}")))?;
        if claims.iss != self.issuer {
            return Err(CallError::Refused("ID token issuer".into()));
        }
        if !claims.aud.contains(&self.client_id) {
            return Err(CallError::Refused("ID token audience".into()));
        }
        if claims.exp <= now {
            return Err(CallError::Refused("ID token expired".into()));
        }
        if let Some(n) = nonce
            && claims.nonce.as_deref() != Some(n)
        {
            return Err(CallError::Refused("ID token nonce".into()));
        }
        Ok(claims)
    }
}
