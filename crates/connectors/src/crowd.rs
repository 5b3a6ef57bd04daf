//! Atlassian Crowd: a password connector over Crowd's REST API (the application authenticates
//! with its name and password; nested group memberships are the groups).

use async_trait::async_trait;
use keygate_config::CrowdConnector;
use keygate_oidc::{Connector, ConnectorError, Upstream};
use keygate_store::model::Identity;
use serde_json::{Value, json};

use crate::oauth2::{str_of, unavailable};

pub struct Crowd {
    id: String,
    name: String,
    spec: CrowdConnector,
    http: reqwest::Client,
}

impl Crowd {
    pub fn new(id: String, name: String, spec: CrowdConnector) -> Result<Self, String> {
        Ok(Self {
            id,
            name,
            spec,
            http: crate::oauth2::http()?,
        })
    }

    fn url(&self, path: &str, username: &str) -> String {
        let q: String = url::form_urlencoded::byte_serialize(username.as_bytes()).collect();
        format!(
            "{}/rest/usermanagement/1/{path}?username={q}",
            self.spec.base_url
        )
    }

    async fn call(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<(reqwest::StatusCode, Value), ConnectorError> {
        let resp = req
            .basic_auth(&self.spec.app_name, Some(self.spec.app_password.expose()))
            .header("Accept", "application/json")
            .send()
            .await
            .map_err(unavailable)?;
        let status = resp.status();
        if status == reqwest::StatusCode::UNAUTHORIZED
            || status == reqwest::StatusCode::FORBIDDEN
            || status.is_server_error()
        {
            // 401 means Crowd refused *us* (application name or password), 403 our address (the
            // application's remote addresses): an outage for users, not a wrong password.
            return Err(ConnectorError::Unavailable(format!(
                "Crowd answered {status}"
            )));
        }
        let body = resp.json().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    async fn groups(&self, username: &str) -> Result<Vec<String>, ConnectorError> {
        let (status, body) = self
            .call(self.http.get(self.url("user/group/nested", username)))
            .await?;
        if !status.is_success() {
            return Err(ConnectorError::Refused(format!(
                "groups: Crowd answered {status}"
            )));
        }
        let groups: Vec<String> = body
            .get("groups")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|g| str_of(g, "name"))
            .collect();
        // Deckhouse (and Dex): with `groups`, the token holds the user's groups in that list.
        let groups: Vec<String> = if self.spec.groups.is_empty() {
            groups
        } else {
            groups
                .into_iter()
                .filter(|g| self.spec.groups.contains(g))
                .collect()
        };
        if !self.spec.groups.is_empty() && groups.is_empty() {
            return Err(ConnectorError::Refused(
                "the user is in none of the allowed Crowd groups".into(),
            ));
        }
        Ok(groups)
    }

    fn identity(user: &Value, groups: Vec<String>) -> Result<Identity, ConnectorError> {
        let name =
            str_of(user, "name").ok_or_else(|| ConnectorError::Refused("no user name".into()))?;
        Ok(Identity {
            user_id: str_of(user, "key").unwrap_or_else(|| name.clone()),
            username: str_of(user, "display-name").unwrap_or_else(|| name.clone()),
            preferred_username: name,
            email: str_of(user, "email").unwrap_or_default(),
            email_verified: true,
            groups,
        })
    }
}

#[async_trait]
impl Connector for Crowd {
    fn id(&self) -> &str {
        &self.id
    }
    fn display_name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> &'static str {
        "crowd"
    }
    fn password_prompt(&self) -> Option<&str> {
        Some(&self.spec.username_prompt)
    }

    async fn login_password(
        &self,
        username: &str,
        password: &str,
    ) -> Result<Option<Upstream>, ConnectorError> {
        if username.is_empty() || password.is_empty() {
            return Ok(None);
        }
        let (status, user) = self
            .call(
                self.http
                    .post(self.url("authentication", username))
                    .json(&json!({ "value": password })),
            )
            .await?;
        if !status.is_success() {
            // 400 INVALID_USER_AUTHENTICATION / USER_NOT_FOUND: a wrong login.
            return Ok(None);
        }
        let groups = self.groups(username).await?;
        Ok(Some((Self::identity(&user, groups)?, None)))
    }

    async fn refresh(
        &self,
        identity: &Identity,
        _data: Option<&str>,
    ) -> Result<Upstream, ConnectorError> {
        let (status, user) = self
            .call(
                self.http
                    .get(self.url("user", &identity.preferred_username)),
            )
            .await?;
        if !status.is_success() || user.get("active").and_then(Value::as_bool) == Some(false) {
            return Err(ConnectorError::Refused(
                "the Crowd user is gone or inactive".into(),
            ));
        }
        let groups = self.groups(&identity.preferred_username).await?;
        Ok((Self::identity(&user, groups)?, None))
    }
}
