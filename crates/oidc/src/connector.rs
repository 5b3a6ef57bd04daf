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
    /// Redirect connectors: where to send the browser; it comes back to `callback` with `state`.
    async fn login_url(&self, _callback: &str, _state: &str) -> Result<String, ConnectorError> {
        Err(ConnectorError::Unavailable(
            "this connector does not redirect".into(),
        ))
    }
    /// Redirect connectors: the provider's answer at `/callback`.
    async fn callback(
        &self,
        _callback: &str,
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
