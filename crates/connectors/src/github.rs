//! GitHub (and GitHub Enterprise): organizations and teams as groups (`org`, `org:team`).

use std::collections::HashMap;

use async_trait::async_trait;
use keygate_config::GithubConnector;
use keygate_oidc::{Connector, ConnectorError, Upstream, UpstreamLogin};
use keygate_store::model::Identity;
use serde_json::Value;

use crate::oauth2::{OAuth2, get_all, get_json, str_of};

pub struct Github {
    id: String,
    name: String,
    spec: GithubConnector,
    oauth: OAuth2,
}

impl Github {
    pub fn new(id: String, name: String, spec: GithubConnector) -> Result<Self, String> {
        let oauth = OAuth2 {
            http: crate::oauth2::http()?,
            client_id: spec.client_id.clone(),
            client_secret: spec.client_secret.clone(),
            authorize_url: format!("{}/login/oauth/authorize", spec.web_url),
            token_url: format!("{}/login/oauth/access_token", spec.web_url),
            scopes: if spec.orgs.is_empty() {
                "user:email".into()
            } else {
                "user:email read:org".into()
            },
            credentials_in_body: true,
            pkce: false,
        };
        Ok(Self {
            id,
            name,
            spec,
            oauth,
        })
    }

    /// The user, their primary verified email and their groups, with the access token (GitHub's
    /// OAuth app tokens do not expire; it is what refreshes use).
    async fn identity(&self, token: &str) -> Result<Identity, ConnectorError> {
        let http = &self.oauth.http;
        let api = &self.spec.api_url;
        let (user, _) = get_json(http, &format!("{api}/user"), token).await?;
        let login =
            str_of(&user, "login").ok_or_else(|| ConnectorError::Refused("no login".into()))?;
        let emails = get_all(http, &format!("{api}/user/emails?per_page=100"), token).await?;
        let email = emails
            .iter()
            .find(|e| {
                e.get("primary").and_then(Value::as_bool) == Some(true)
                    && e.get("verified").and_then(Value::as_bool) == Some(true)
            })
            .and_then(|e| str_of(e, "email"))
            .ok_or_else(|| {
                ConnectorError::Refused("the GitHub account has no verified primary email".into())
            })?;
        let groups = self.groups(token).await?;
        Ok(Identity {
            user_id: if self.spec.use_login_as_id {
                login.clone()
            } else {
                str_of(&user, "id").unwrap_or_else(|| login.clone())
            },
            username: str_of(&user, "name")
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| login.clone()),
            preferred_username: login,
            email,
            email_verified: true,
            groups,
        })
    }

    async fn groups(&self, token: &str) -> Result<Vec<String>, ConnectorError> {
        let http = &self.oauth.http;
        let api = &self.spec.api_url;
        let teams = get_all(http, &format!("{api}/user/teams?per_page=100"), token).await?;
        let team_names = |t: &Value| -> Vec<String> {
            let org = t
                .pointer("/organization/login")
                .and_then(Value::as_str)
                .unwrap_or("");
            let name = str_of(t, "name").unwrap_or_default();
            let slug = str_of(t, "slug").unwrap_or_default();
            match self.spec.team_name_field.as_str() {
                "slug" => vec![format!("{org}:{slug}")],
                "both" => vec![format!("{org}:{name}"), format!("{org}:{slug}")],
                _ => vec![format!("{org}:{name}")],
            }
        };
        if self.spec.orgs.is_empty() {
            let mut groups: Vec<String> = teams.iter().flat_map(team_names).collect();
            groups.sort();
            groups.dedup();
            return Ok(groups);
        }
        let orgs: Vec<String> = get_all(http, &format!("{api}/user/orgs?per_page=100"), token)
            .await?
            .iter()
            .filter_map(|o| str_of(o, "login"))
            .collect();
        let mut groups = Vec::new();
        let mut allowed = false;
        for (org, wanted) in &self.spec.orgs {
            if !orgs.iter().any(|o| o.eq_ignore_ascii_case(org)) {
                continue;
            }
            let in_org: Vec<&Value> = teams
                .iter()
                .filter(|t| {
                    t.pointer("/organization/login")
                        .and_then(Value::as_str)
                        .is_some_and(|o| o.eq_ignore_ascii_case(org))
                })
                .collect();
            if wanted.is_empty() {
                allowed = true;
                groups.push(org.clone());
                groups.extend(in_org.iter().flat_map(|t| team_names(t)));
            } else {
                let matching: Vec<&&Value> = in_org
                    .iter()
                    .filter(|t| {
                        wanted.iter().any(|w| {
                            str_of(t, "name").as_deref() == Some(w)
                                || str_of(t, "slug").as_deref() == Some(w)
                        })
                    })
                    .collect();
                if !matching.is_empty() {
                    allowed = true;
                    groups.extend(matching.iter().flat_map(|t| team_names(t)));
                }
            }
        }
        if !allowed {
            return Err(ConnectorError::Refused(
                "the user is in none of the allowed organizations and teams".into(),
            ));
        }
        groups.sort();
        groups.dedup();
        Ok(groups)
    }
}

#[async_trait]
impl Connector for Github {
    fn id(&self) -> &str {
        &self.id
    }
    fn display_name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> &'static str {
        "github"
    }
    async fn login_url(&self, login: &UpstreamLogin<'_>) -> Result<String, ConnectorError> {
        Ok(self.oauth.login_url(login))
    }
    async fn callback(
        &self,
        login: &UpstreamLogin<'_>,
        params: &HashMap<String, String>,
    ) -> Result<Upstream, ConnectorError> {
        let token = self.oauth.exchange(login, params).await?.access;
        Ok((self.identity(&token).await?, Some(token)))
    }
    async fn refresh(
        &self,
        identity: &Identity,
        data: Option<&str>,
    ) -> Result<Upstream, ConnectorError> {
        let token = data.ok_or_else(|| {
            ConnectorError::Refused("no GitHub token kept for this session".into())
        })?;
        let fresh = self.identity(token).await?;
        if fresh.user_id != identity.user_id {
            return Err(ConnectorError::Refused("the GitHub user changed".into()));
        }
        Ok((fresh, Some(token.to_owned())))
    }
}
