//! Logins through upstream identity providers (connectors): the chooser's list, the redirect to
//! the provider, and its answer at `/callback`.

use std::collections::HashMap;

use super::*;

/// A sign-in method, for the chooser and the login form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectorInfo {
    pub id: String,
    pub name: String,
    pub kind: &'static str,
    /// `Some(label)` for methods that use our password form.
    pub password_prompt: Option<String>,
}

impl Provider {
    pub fn connector(&self, id: &str) -> Option<Arc<dyn crate::Connector>> {
        self.connectors.iter().find(|c| c.id() == id).cloned()
    }

    /// The sign-in methods offered at `/auth`: static users (when there are any), then each
    /// `DexProvider` in manifest order.
    pub fn connector_infos(&self) -> Vec<ConnectorInfo> {
        let mut list = Vec::new();
        if self.has_local_users() {
            list.push(ConnectorInfo {
                id: crate::LOCAL_CONNECTOR.into(),
                name: "Email".into(),
                kind: "local",
                password_prompt: Some("Email address".into()),
            });
        }
        list.extend(self.connectors.iter().map(|c| ConnectorInfo {
            id: c.id().to_owned(),
            name: c.display_name().to_owned(),
            kind: c.kind(),
            password_prompt: c.password_prompt().map(str::to_owned),
        }));
        list
    }

    /// For a redirect connector: where to send the browser for a stored request. The request id
    /// is the `state` the provider hands back to `/callback`.
    pub async fn upstream_login_url(&self, request: &AuthRequest) -> Result<String, OAuthError> {
        let connector = self
            .connector(&request.connector_id)
            .ok_or_else(|| OAuthError::invalid_request("Unknown sign-in method."))?;
        let callback = self.endpoint("callback");
        let login = crate::UpstreamLogin {
            callback: &callback,
            state: &request.id,
            secret: &request.upstream_secret,
        };
        connector
            .login_url(&login)
            .await
            .map_err(|e| upstream_error(connector.display_name(), e))
    }

    /// `/callback`: the upstream provider's answer for one of our requests.
    pub async fn upstream_callback(
        &self,
        params: &HashMap<String, String>,
    ) -> Result<LoginOutcome, OAuthError> {
        let expired = || {
            OAuthError::invalid_request(
                "This sign-in has expired. Go back to the application and start again.",
            )
        };
        let id = params.get("state").ok_or_else(expired)?;
        let request = self.auth_request(id).await?.ok_or_else(expired)?;
        let connector = self
            .connector(&request.connector_id)
            .ok_or_else(|| OAuthError::invalid_request("Unknown sign-in method."))?;
        let callback = self.endpoint("callback");
        let login = crate::UpstreamLogin {
            callback: &callback,
            state: &request.id,
            secret: &request.upstream_secret,
        };
        let (identity, data) = connector
            .callback(&login, params)
            .await
            .map_err(|e| upstream_error(connector.display_name(), e))?;
        tracing::info!(target: "keygate::audit", event = "login", user = ?identity.email, connector = %request.connector_id, client = %request.client_id, result = "ok");
        self.metrics.logins_ok.inc();
        self.finish_login(request, identity, data).await
    }
}

/// Connector failures as the browser sees them: a refusal, or an unreachable provider.
pub(super) fn upstream_error(name: &str, e: crate::ConnectorError) -> OAuthError {
    match e {
        crate::ConnectorError::Refused(reason) => {
            tracing::info!(connector = name, reason, "upstream sign-in refused");
            OAuthError::new(
                ErrorCode::AccessDenied,
                format!("{name} refused the sign-in: {reason}"),
            )
        }
        crate::ConnectorError::Unavailable(reason) => {
            tracing::warn!(connector = name, reason, "upstream provider unavailable");
            OAuthError::new(
                ErrorCode::TemporarilyUnavailable,
                format!("{name} cannot be reached right now. Try again in a moment."),
            )
        }
    }
}
