//! GitLab (gitlab.com or self-hosted): groups from GitLab's OpenID Connect userinfo.

use std::collections::HashMap;

use async_trait::async_trait;
use keygate_config::GitlabConnector;
use keygate_oidc::{Connector, ConnectorError, Upstream, UpstreamLogin};
use keygate_store::model::Identity;
use serde_json::Value;

use crate::oauth2::{OAuth2, get_json, str_of};

pub struct Gitlab {
    id: String,
    name: String,
    spec: GitlabConnector,
    oauth: OAuth2,
}

impl Gitlab {
    pub fn new(id: String, name: String, spec: GitlabConnector) -> Result<Self, String> {
        let oauth = OAuth2 {
            http: crate::oauth2::http()?,
            client_id: spec.client_id.clone(),
            client_secret: spec.client_secret.clone(),
            authorize_url: format!("{}/oauth/authorize", spec.base_url),
            token_url: format!("{}/oauth/token", spec.base_url),
            scopes: "read_user openid".into(),
            credentials_in_body: false,
            pkce: true,
        };
        Ok(Self {
            id,
            name,
            spec,
            oauth,
        })
    }

    async fn identity(&self, token: &str) -> Result<Identity, ConnectorError> {
        let http = &self.oauth.http;
        let (user, _) =
            get_json(http, &format!("{}/api/v4/user", self.spec.base_url), token).await?;
        let (info, _) = get_json(
            http,
            &format!("{}/oauth/userinfo", self.spec.base_url),
            token,
        )
        .await?;
        let groups: Vec<String> = info
            .get("groups")
            .and_then(Value::as_array)
            .map(|g| {
                g.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
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
                "the user is in none of the allowed GitLab groups".into(),
            ));
        }
        let login = str_of(&user, "username")
            .ok_or_else(|| ConnectorError::Refused("no username".into()))?;
        Ok(Identity {
            user_id: if self.spec.use_login_as_id {
                login.clone()
            } else {
                str_of(&user, "id").unwrap_or_else(|| login.clone())
            },
            username: str_of(&user, "name").unwrap_or_else(|| login.clone()),
            preferred_username: login,
            email: str_of(&user, "email").unwrap_or_default(),
            email_verified: true,
            groups,
        })
    }
}

#[async_trait]
impl Connector for Gitlab {
    fn id(&self) -> &str {
        &self.id
    }
    fn display_name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> &'static str {
        "gitlab"
    }
    async fn login_url(&self, login: &UpstreamLogin<'_>) -> Result<String, ConnectorError> {
        Ok(self.oauth.login_url(login))
    }
    async fn callback(
        &self,
        login: &UpstreamLogin<'_>,
        params: &HashMap<String, String>,
    ) -> Result<Upstream, ConnectorError> {
        let tokens = self.oauth.exchange(login, params).await?;
        Ok((self.identity(&tokens.access).await?, tokens.refresh))
    }
    async fn refresh(
        &self,
        identity: &Identity,
        data: Option<&str>,
    ) -> Result<Upstream, ConnectorError> {
        let refresh_token = data.ok_or_else(|| {
            ConnectorError::Refused("no GitLab refresh token kept for this session".into())
        })?;
        let tokens = self.oauth.refresh(refresh_token).await?;
        let fresh = self.identity(&tokens.access).await?;
        if fresh.user_id != identity.user_id {
            return Err(ConnectorError::Refused("the GitLab user changed".into()));
        }
        Ok((fresh, tokens.refresh))
    }
}
