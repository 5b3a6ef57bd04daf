//! Upstream identity providers, as the protocol core sees them. Password connectors (LDAP,
//! Crowd) check what the user typed into our form; redirect connectors (OIDC, GitHub...) send the
//! browser to the provider and finish at `/callback`. Both refresh the user upstream.

use std::collections::HashMap;

use async_trait::async_trait;
use keygate_store::model::Identity;

#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// The provider said no (bad password, revoked grant, user gone).
    #[error("{0}")]
    Refused(String),
    /// The provider could not be asked (down, timeout, garbage).
    #[error("{0}")]
    Unavailable(String),
}

/// A successful login or refresh: the identity, and what the connector keeps for the next
/// refresh (e.g. the upstream refresh token), stored with the refresh token.
pub type Upstream = (Identity, Option<String>);

/// One sign-in at a redirect connector: where the provider comes back, the `state` it hands
/// back, and the sign-in's stored secret.
pub struct UpstreamLogin<'a> {
    pub callback: &'a str,
    pub state: &'a str,
    pub secret: &'a str,
}

impl UpstreamLogin<'_> {
    /// A value of this sign-in for `label` (`pkce`, `nonce`), unguessable from what the browser
    /// and the provider see. Requests stored by earlier versions have no secret: theirs was
    /// derived from the connector's client secret and the state.
    pub fn derive(&self, label: &str, client_secret: &str) -> String {
        if self.secret.is_empty() {
            crate::pkce_s256(&format!("keygate-{label}\n{client_secret}\n{}", self.state))
        } else {
            crate::pkce_s256(&format!("keygate-{label}\n{}", self.secret))
        }
    }
}

#[async_trait]
pub trait Connector: Send + Sync + 'static {
    fn id(&self) -> &str;
    fn display_name(&self) -> &str;
    /// For the chooser's icon: `ldap`, `oidc`, ...
    fn kind(&self) -> &'static str;
    /// `Some(label)` for password connectors: the login form's username label.
    fn password_prompt(&self) -> Option<&str> {
        None
    }
    /// Password connectors: `Ok(None)` for a wrong username or password.
    async fn login_password(
        &self,
        _username: &str,
        _password: &str,
    ) -> Result<Option<Upstream>, ConnectorError> {
        Err(ConnectorError::Unavailable(
            "this connector does not take passwords".into(),
        ))
    }
    /// Redirect connectors: where to send the browser; it comes back to `login.callback` with
    /// `login.state`.
    async fn login_url(&self, _login: &UpstreamLogin<'_>) -> Result<String, ConnectorError> {
        Err(ConnectorError::Unavailable(
            "this connector does not redirect".into(),
        ))
    }
    /// Redirect connectors: the provider's answer at `/callback`.
    async fn callback(
        &self,
        _login: &UpstreamLogin<'_>,
        _params: &HashMap<String, String>,
    ) -> Result<Upstream, ConnectorError> {
        Err(ConnectorError::Unavailable(
            "this connector does not redirect".into(),
        ))
    }
    /// Re-checks the user at the provider for a refresh.
    async fn refresh(
        &self,
        identity: &Identity,
        data: Option<&str>,
    ) -> Result<Upstream, ConnectorError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_login_values_come_from_the_stored_secret() {
        let login = |secret| UpstreamLogin {
            callback: "https://id.example.com/callback",
            state: "st4te",
            secret,
        };
        let a = login("first-sign-in-secret");
        // Not computable from what the browser and the provider see (state) plus the client
        // secret; different per label and per sign-in.
        assert_ne!(
            a.derive("pkce", "client-secret"),
            login("").derive("pkce", "client-secret")
        );
        assert_eq!(
            a.derive("pkce", "client-secret"),
            a.derive("pkce", "another-client-secret")
        );
        assert_ne!(a.derive("pkce", "c"), a.derive("nonce", "c"));
        assert_ne!(
            a.derive("pkce", "c"),
            login("second-sign-in-secret").derive("pkce", "c")
        );
        // A request stored by an earlier version (no secret): the earlier derivation, so a sign-in
        // started before an upgrade finishes after it.
        assert_eq!(
            login("").derive("pkce", "client-secret"),
            crate::pkce_s256("keygate-pkce\nclient-secret\nst4te")
        );
    }
}
