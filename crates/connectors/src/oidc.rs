//! An upstream OpenID Connect provider (Keycloak, Okta, Google, another Keygate or Dex): the
//! browser goes there, comes back to our `/callback`; groups come from a claim.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use keygate_config::OidcConnector;
use keygate_oidc::{Connector, ConnectorError, Upstream, UpstreamLogin};
use keygate_store::model::Identity;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::OnceCell;

#[derive(Debug, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
    #[serde(default)]
    userinfo_endpoint: Option<String>,
    #[serde(default)]
    code_challenge_methods_supported: Vec<String>,
    /// RFC 9207: the provider names itself (`iss`) in every authorization response.
    #[serde(default)]
    authorization_response_iss_parameter_supported: bool,
}

impl Discovery {
    fn pkce(&self) -> bool {
        self.code_challenge_methods_supported
            .iter()
            .any(|m| m == "S256")
    }
}

pub struct Oidc {
    id: String,
    name: String,
    spec: OidcConnector,
    http: reqwest::Client,
    discovery: OnceCell<Discovery>,
    keys: crate::remote_keys::RemoteKeys,
}

fn unavailable(e: impl std::fmt::Display) -> ConnectorError {
    ConnectorError::Unavailable(e.to_string())
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A claim as a string (numbers too: some providers use numeric user ids).
fn claim_str(claims: &Value, key: &str) -> Option<String> {
    match claims.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl Oidc {
    pub fn new(id: String, name: String, spec: OidcConnector) -> Result<Self, String> {
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(3))
            .redirect(reqwest::redirect::Policy::none());
        if let Some(pem) = &spec.root_ca_pem {
            for cert in reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| format!("rootCAData: {e}"))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        Ok(Self {
            id,
            name,
            spec,
            http: builder.build().map_err(|e| e.to_string())?,
            discovery: OnceCell::new(),
            keys: crate::remote_keys::RemoteKeys::default(),
        })
    }

    async fn discovery(&self) -> Result<&Discovery, ConnectorError> {
        self.discovery
            .get_or_try_init(|| async {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    self.spec.issuer.trim_end_matches('/')
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
                if d.issuer.trim_end_matches('/') != self.spec.issuer.trim_end_matches('/') {
                    return Err(ConnectorError::Unavailable(format!(
                        "discovery names issuer {:?}, configured {:?}",
                        d.issuer, self.spec.issuer
                    )));
                }
                Ok(d)
            })
            .await
    }

    fn pkce_verifier(&self, login: &UpstreamLogin<'_>) -> String {
        login.derive("pkce", self.spec.client_secret.expose())
    }

    /// The `nonce` of one sign-in, derived from its stored secret like the PKCE verifier; none
    /// with `sendNonce: false`.
    fn nonce(&self, login: &UpstreamLogin<'_>) -> Option<String> {
        self.spec
            .send_nonce
            .then(|| login.derive("nonce", self.spec.client_secret.expose()))
    }

    async fn token(&self, form: &[(&str, &str)]) -> Result<Value, ConnectorError> {
        let d = self.discovery().await?;
        let mut fields = form.to_vec();
        let mut req = self.http.post(&d.token_endpoint);
        if self.spec.basic_auth_unsupported {
            fields.push(("client_id", &self.spec.client_id));
            fields.push(("client_secret", self.spec.client_secret.expose()));
        } else {
            let esc =
                |v: &str| url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
            req = req.basic_auth(
                esc(&self.spec.client_id),
                Some(esc(self.spec.client_secret.expose())),
            );
        }
        let resp = req.form(&fields).send().await.map_err(unavailable)?;
        let status = resp.status();
        let body: Value = resp.json().await.map_err(unavailable)?;
        if status.is_success() {
            Ok(body)
        } else if status.is_client_error() {
            Err(ConnectorError::Refused(
                body.get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("refused")
                    .to_owned(),
            ))
        } else {
            Err(ConnectorError::Unavailable(format!(
                "token endpoint answered {status}"
            )))
        }
    }

    /// Verifies the upstream ID token (signature from its JWKS, issuer, audience, expiry).
    async fn verify(&self, id_token: &str) -> Result<Value, ConnectorError> {
        let jwks_uri = self.discovery().await?.jwks_uri.clone();
        let payload = self
            .keys
            .verify(&self.http, &jwks_uri, id_token)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| {
                ConnectorError::Refused("the ID token's signature does not verify".into())
            })?;
        let claims: Value = serde_json::from_slice(&payload)
            .map_err(|e| ConnectorError::Refused(format!("ID token: {e}")))?;
        let iss = claims.get("iss").and_then(Value::as_str).unwrap_or("");
        if iss.trim_end_matches('/') != self.spec.issuer.trim_end_matches('/') {
            return Err(ConnectorError::Refused("ID token issuer".into()));
        }
        let aud_ok = match claims.get("aud") {
            Some(Value::String(a)) => *a == self.spec.client_id,
            Some(Value::Array(list)) => list
                .iter()
                .any(|a| a.as_str() == Some(&self.spec.client_id)),
            _ => false,
        };
        if !aud_ok {
            return Err(ConnectorError::Refused("ID token audience".into()));
        }
        if claims
            .get("exp")
            .and_then(Value::as_i64)
            .is_none_or(|e| e <= now())
        {
            return Err(ConnectorError::Refused("ID token expired".into()));
        }
        Ok(claims)
    }

    /// Claims (and, with getUserInfo, userinfo) to an identity, applying allowedGroups.
    /// `nonce`: the one the ID token must carry (at sign-in; refreshed ID tokens are not checked).
    async fn identity(
        &self,
        tokens: &Value,
        nonce: Option<&str>,
    ) -> Result<Identity, ConnectorError> {
        let id_token = tokens
            .get("id_token")
            .and_then(Value::as_str)
            .ok_or_else(|| ConnectorError::Refused("no ID token in the answer".into()))?;
        let mut claims = self.verify(id_token).await?;
        if let Some(expected) = nonce
            && claims.get("nonce").and_then(Value::as_str) != Some(expected)
        {
            // OpenID Connect Core 3.1.3.7: an ID token for another sign-in (or a replayed one).
            return Err(ConnectorError::Refused(
                "the ID token was not issued for this sign-in (nonce)".into(),
            ));
        }
        if self.spec.get_user_info
            && let (Some(endpoint), Some(access)) = (
                self.discovery().await?.userinfo_endpoint.clone(),
                tokens.get("access_token").and_then(Value::as_str),
            )
        {
            let info: Value = self
                .http
                .get(endpoint)
                .bearer_auth(access)
                .send()
                .await
                .map_err(unavailable)?
                .json()
                .await
                .map_err(unavailable)?;
            if let (Some(c), Some(i)) = (claims.as_object_mut(), info.as_object()) {
                for (k, v) in i {
                    c.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
        }
        let s = &self.spec;
        let user_id = claim_str(&claims, &s.user_id_key)
            .ok_or_else(|| ConnectorError::Refused(format!("no {:?} claim", s.user_id_key)))?;
        let email = claim_str(&claims, &s.email_claim).unwrap_or_default();
        let email_verified = s.insecure_skip_email_verified
            || claims
                .get("email_verified")
                .and_then(Value::as_bool)
                .unwrap_or(false);
        if !email.is_empty() && !email_verified {
            return Err(ConnectorError::Refused(
                "the email address is not verified upstream".into(),
            ));
        }
        let groups: Vec<String> = match claims.get(&s.groups_claim) {
            Some(Value::Array(list)) => list
                .iter()
                .filter_map(|g| g.as_str().map(str::to_owned))
                .collect(),
            Some(Value::String(g)) => vec![g.clone()],
            _ => Vec::new(),
        };
        if !s.allowed_groups.is_empty() && !groups.iter().any(|g| s.allowed_groups.contains(g)) {
            return Err(ConnectorError::Refused(
                "none of the user's groups is allowed (allowedGroups)".into(),
            ));
        }
        Ok(Identity {
            username: claim_str(&claims, &s.user_name_key).unwrap_or_else(|| email.clone()),
            preferred_username: claim_str(&claims, &s.preferred_username_claim).unwrap_or_default(),
            user_id,
            email,
            email_verified: true,
            groups,
        })
    }
}

#[async_trait]
impl Connector for Oidc {
    fn id(&self) -> &str {
        &self.id
    }
    fn display_name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> &'static str {
        "oidc"
    }

    async fn login_url(&self, login: &UpstreamLogin<'_>) -> Result<String, ConnectorError> {
        let d = self.discovery().await?;
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        q.append_pair("client_id", &self.spec.client_id)
            .append_pair("redirect_uri", login.callback)
            .append_pair("response_type", "code")
            .append_pair("scope", &self.spec.scopes.join(" "))
            .append_pair("state", login.state);
        if let Some(nonce) = self.nonce(login) {
            q.append_pair("nonce", &nonce);
        }
        if d.pkce() {
            q.append_pair(
                "code_challenge",
                &keygate_oidc::pkce_s256(&self.pkce_verifier(login)),
            )
            .append_pair("code_challenge_method", "S256");
        }
        if let Some(p) = &self.spec.prompt {
            q.append_pair("prompt", p);
        }
        Ok(format!(
            "{}{}{}",
            d.authorization_endpoint,
            if d.authorization_endpoint.contains('?') {
                '&'
            } else {
                '?'
            },
            q.finish()
        ))
    }

    async fn callback(
        &self,
        login: &UpstreamLogin<'_>,
        params: &HashMap<String, String>,
    ) -> Result<Upstream, ConnectorError> {
        let d = self.discovery().await?;
        // RFC 9207, error answers included: an answer naming another issuer was meant for
        // another connector (mix-up).
        match params.get("iss") {
            Some(iss) if *iss != d.issuer => {
                return Err(ConnectorError::Refused(format!(
                    "the answer comes from issuer {iss:?}, not {:?}",
                    d.issuer
                )));
            }
            None if d.authorization_response_iss_parameter_supported => {
                return Err(ConnectorError::Refused(
                    "the answer does not name its issuer (iss), which this provider always does"
                        .into(),
                ));
            }
            _ => {}
        }
        let verifier = d.pkce().then(|| self.pkce_verifier(login));
        let form = crate::oauth2::code_grant(params, login.callback, verifier.as_deref())?;
        let tokens = self.token(&form).await?;
        let identity = self.identity(&tokens, self.nonce(login).as_deref()).await?;
        Ok((
            identity,
            tokens
                .get("refresh_token")
                .and_then(Value::as_str)
                .map(str::to_owned),
        ))
    }

    /// Goes back to the provider with the upstream refresh token: identity and groups update,
    /// the upstream token rotates with ours.
    async fn refresh(
        &self,
        identity: &Identity,
        data: Option<&str>,
    ) -> Result<Upstream, ConnectorError> {
        let Some(refresh_token) = data else {
            // The provider gave no refresh token (no offline_access upstream): keep the identity.
            return Ok((identity.clone(), None));
        };
        let tokens = self
            .token(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ])
            .await?;
        let fresh = self.identity(&tokens, None).await?;
        if fresh.user_id != identity.user_id {
            return Err(ConnectorError::Refused("the upstream user changed".into()));
        }
        let next = tokens
            .get("refresh_token")
            .and_then(Value::as_str)
            .map_or_else(|| refresh_token.to_owned(), str::to_owned);
        Ok((fresh, Some(next)))
    }
}
