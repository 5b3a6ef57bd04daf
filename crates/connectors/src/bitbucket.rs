//! Bitbucket Cloud: workspaces as groups and, with `includeTeamGroups`, the workspaces'
//! permission groups as `workspace/group` (Flant's groups extension to Dex).

use std::collections::HashMap;

use async_trait::async_trait;
use keygate_config::BitbucketConnector;
use keygate_oidc::{Connector, ConnectorError, Upstream, UpstreamLogin};
use keygate_store::model::Identity;
use serde_json::Value;

use crate::oauth2::{OAuth2, get_all, get_json, str_of};

pub struct Bitbucket {
    id: String,
    name: String,
    spec: BitbucketConnector,
    oauth: OAuth2,
}

impl Bitbucket {
    pub fn new(id: String, name: String, spec: BitbucketConnector) -> Result<Self, String> {
        let oauth = OAuth2 {
            http: crate::oauth2::http()?,
            client_id: spec.client_id.clone(),
            client_secret: spec.client_secret.clone(),
            authorize_url: format!("{}/site/oauth2/authorize", spec.web_url),
            token_url: format!("{}/site/oauth2/access_token", spec.web_url),
            scopes: "account email".into(),
            credentials_in_body: false,
            pkce: false,
        };
        Ok(Self {
            id,
            name,
            spec,
            oauth,
        })
    }

    /// The 1.0 API (`/1.0/groups/<workspace>`) lists workspace groups with their members.
    fn api_v1(&self) -> String {
        self.spec.api_url.trim_end_matches("/2.0").to_owned() + "/1.0"
    }

    async fn identity(&self, token: &str) -> Result<Identity, ConnectorError> {
        let http = &self.oauth.http;
        let api = &self.spec.api_url;
        let (user, _) = get_json(http, &format!("{api}/user"), token).await?;
        let username = str_of(&user, "username")
            .ok_or_else(|| ConnectorError::Refused("no username".into()))?;
        let emails = get_all(http, &format!("{api}/user/emails"), token).await?;
        let email = emails
            .iter()
            .find(|e| {
                e.get("is_primary").and_then(Value::as_bool) == Some(true)
                    && e.get("is_confirmed").and_then(Value::as_bool) == Some(true)
            })
            .and_then(|e| str_of(e, "email"))
            .ok_or_else(|| {
                ConnectorError::Refused(
                    "the Bitbucket account has no confirmed primary email".into(),
                )
            })?;
        let workspaces: Vec<String> = get_all(
            http,
            &format!("{api}/user/permissions/workspaces?pagelen=100"),
            token,
        )
        .await?
        .iter()
        .filter_map(|p| {
            p.pointer("/workspace/slug")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .collect();
        let teams: Vec<String> = if self.spec.teams.is_empty() {
            workspaces
        } else {
            workspaces
                .into_iter()
                .filter(|w| self.spec.teams.contains(w))
                .collect()
        };
        if !self.spec.teams.is_empty() && teams.is_empty() {
            return Err(ConnectorError::Refused(
                "the user is in none of the allowed Bitbucket workspaces".into(),
            ));
        }
        let mut groups = teams.clone();
        if self.spec.include_team_groups {
            for team in &teams {
                let (list, _) =
                    get_json(http, &format!("{}/groups/{team}", self.api_v1()), token).await?;
                for g in list.as_array().into_iter().flatten() {
                    // Members carry `uuid`, `account_id` and `nickname`: no `username` since
                    // Atlassian's 2019 privacy changes.
                    let member = g.get("members").and_then(Value::as_array).is_some_and(|m| {
                        m.iter().any(|u| {
                            ["uuid", "account_id"]
                                .iter()
                                .any(|k| str_of(u, k).is_some_and(|v| str_of(&user, k) == Some(v)))
                        })
                    });
                    if member && let Some(slug) = str_of(g, "slug") {
                        groups.push(format!("{team}/{slug}"));
                    }
                }
            }
        }
        Ok(Identity {
            user_id: str_of(&user, "uuid").unwrap_or_else(|| username.clone()),
            username: str_of(&user, "display_name").unwrap_or_else(|| username.clone()),
            preferred_username: username,
            email,
            email_verified: true,
            groups,
        })
    }
}

#[async_trait]
impl Connector for Bitbucket {
    fn id(&self) -> &str {
        &self.id
    }
    fn display_name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> &'static str {
        "bitbucket-cloud"
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
            ConnectorError::Refused("no Bitbucket refresh token kept for this session".into())
        })?;
        let tokens = self.oauth.refresh(refresh_token).await?;
        let fresh = self.identity(&tokens.access).await?;
        if fresh.user_id != identity.user_id {
            return Err(ConnectorError::Refused("the Bitbucket user changed".into()));
        }
        Ok((fresh, tokens.refresh))
    }
}
