//! LDAP: the user types a username and password into our form; we search the user, bind as them
//! to check the password, and read their groups (nested groups included).

use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use async_trait::async_trait;
use keygate_config::LdapConnector;
use keygate_oidc::{Connector, ConnectorError, Upstream};
use keygate_store::model::Identity;
use ldap3::{LdapConnAsync, LdapConnSettings, Scope, SearchEntry, ldap_escape};

const TIMEOUT: Duration = Duration::from_secs(10);
/// Nested groups are followed this deep at most.
const MAX_NESTING: usize = 10;

pub struct Ldap {
    id: String,
    name: String,
    spec: LdapConnector,
    tls: std::sync::Arc<rustls::ClientConfig>,
}

fn unavailable(e: impl std::fmt::Display) -> ConnectorError {
    ConnectorError::Unavailable(format!("LDAP: {e}"))
}

impl Ldap {
    pub fn new(id: String, name: String, spec: LdapConnector) -> Result<Self, String> {
        let tls =
            crate::tls::client_config(spec.root_ca_pem.as_deref(), spec.insecure_skip_verify)?;
        Ok(Self {
            id,
            name,
            spec,
            tls,
        })
    }

    fn url(&self) -> String {
        let scheme = if self.spec.insecure_no_ssl || self.spec.start_tls {
            "ldap"
        } else {
            "ldaps"
        };
        format!("{scheme}://{}", self.spec.host)
    }

    async fn connect(&self) -> Result<ldap3::Ldap, ConnectorError> {
        let settings = LdapConnSettings::new()
            .set_conn_timeout(TIMEOUT)
            .set_starttls(self.spec.start_tls && !self.spec.insecure_no_ssl)
            .set_config(self.tls.clone());
        let (conn, ldap) = LdapConnAsync::with_settings(settings, &self.url())
            .await
            .map_err(unavailable)?;
        ldap3::drive!(conn);
        Ok(ldap)
    }

    /// A connection bound as the service account (or anonymously without one).
    async fn service_bind(&self) -> Result<ldap3::Ldap, ConnectorError> {
        let mut ldap = self.connect().await?;
        if let Some(dn) = &self.spec.bind_dn {
            let pw = self.spec.bind_pw.as_ref().map_or("", |p| p.expose());
            ldap.with_timeout(TIMEOUT)
                .simple_bind(dn, pw)
                .await
                .map_err(unavailable)?
                .success()
                .map_err(|e| unavailable(format!("service bind: {e}")))?;
        }
        Ok(ldap)
    }

    fn attr(entry: &SearchEntry, name: &str) -> Option<String> {
        if name.eq_ignore_ascii_case("DN") {
            return Some(entry.dn.clone());
        }
        entry
            .attrs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| v.first().cloned())
    }

    async fn find_user(
        &self,
        ldap: &mut ldap3::Ldap,
        username: &str,
    ) -> Result<Option<SearchEntry>, ConnectorError> {
        let by_name = format!("({}={})", self.spec.username_attr, ldap_escape(username));
        let filter = match &self.spec.user_filter {
            Some(f) => format!("(&{f}{by_name})"),
            None => by_name,
        };
        let mut attrs = vec![
            self.spec.id_attr.as_str(),
            self.spec.email_attr.as_str(),
            self.spec.username_attr.as_str(),
        ];
        if let Some(n) = &self.spec.name_attr {
            attrs.push(n);
        }
        if let Some(g) = &self.spec.group_search {
            attrs.extend(g.user_matchers.iter().map(|(u, _)| u.as_str()));
        }
        let (entries, _) = ldap
            .with_timeout(TIMEOUT)
            .search(&self.spec.user_base_dn, Scope::Subtree, &filter, attrs)
            .await
            .map_err(unavailable)?
            .success()
            .map_err(unavailable)?;
        match entries.len() {
            0 => Ok(None),
            1 => Ok(entries.into_iter().next().map(SearchEntry::construct)),
            n => {
                tracing::warn!(connector = %self.id, count = n, "LDAP user search matched several entries; refusing");
                Ok(None)
            }
        }
    }

    /// Groups of the user, following groups that are members of groups (by DN).
    async fn groups(
        &self,
        ldap: &mut ldap3::Ldap,
        user: &SearchEntry,
    ) -> Result<Vec<String>, ConnectorError> {
        let Some(gs) = &self.spec.group_search else {
            return Ok(Vec::new());
        };
        let mut names = BTreeSet::new();
        let mut seen_dns = BTreeSet::new();
        let mut queue: VecDeque<(String, String, usize)> = VecDeque::new();
        for (user_attr, group_attr) in &gs.user_matchers {
            if let Some(value) = Self::attr(user, user_attr) {
                queue.push_back((group_attr.clone(), value, 0));
            }
        }
        while let Some((group_attr, value, depth)) = queue.pop_front() {
            let by_member = format!("({group_attr}={})", ldap_escape(value.as_str()));
            let filter = match &gs.filter {
                Some(f) => format!("(&{f}{by_member})"),
                None => by_member,
            };
            let (entries, _) = ldap
                .with_timeout(TIMEOUT)
                .search(
                    &gs.base_dn,
                    Scope::Subtree,
                    &filter,
                    vec![gs.name_attr.as_str()],
                )
                .await
                .map_err(unavailable)?
                .success()
                .map_err(unavailable)?;
            for entry in entries.into_iter().map(SearchEntry::construct) {
                if let Some(name) = Self::attr(&entry, &gs.name_attr) {
                    names.insert(name);
                }
                // A group can itself be a member (by DN) of other groups.
                if depth < MAX_NESTING && seen_dns.insert(entry.dn.clone()) {
                    for (user_attr, group_attr) in &gs.user_matchers {
                        if user_attr.eq_ignore_ascii_case("DN") {
                            queue.push_back((group_attr.clone(), entry.dn.clone(), depth + 1));
                        }
                    }
                }
            }
        }
        Ok(names.into_iter().collect())
    }

    fn identity(
        &self,
        user: &SearchEntry,
        groups: Vec<String>,
    ) -> Result<Identity, ConnectorError> {
        let id = Self::attr(user, &self.spec.id_attr).ok_or_else(|| {
            ConnectorError::Refused(format!("the user has no {}", self.spec.id_attr))
        })?;
        let email = Self::attr(user, &self.spec.email_attr).unwrap_or_default();
        let username = Self::attr(user, &self.spec.username_attr).unwrap_or_default();
        let name = self
            .spec
            .name_attr
            .as_deref()
            .and_then(|n| Self::attr(user, n))
            .unwrap_or_else(|| username.clone());
        Ok(Identity {
            user_id: id,
            username: name,
            preferred_username: username,
            email,
            email_verified: true,
            groups,
        })
    }
}

#[async_trait]
impl Connector for Ldap {
    fn id(&self) -> &str {
        &self.id
    }
    fn display_name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> &'static str {
        "ldap"
    }
    fn password_prompt(&self) -> Option<&str> {
        Some(&self.spec.username_prompt)
    }

    async fn login_password(
        &self,
        username: &str,
        password: &str,
    ) -> Result<Option<Upstream>, ConnectorError> {
        // An empty password would be an anonymous bind, which many servers accept.
        if username.is_empty() || password.is_empty() {
            return Ok(None);
        }
        let mut ldap = self.service_bind().await?;
        let Some(user) = self.find_user(&mut ldap, username).await? else {
            let _ = ldap.unbind().await;
            return Ok(None);
        };
        // Check the password on a separate connection, bound as the user.
        let mut as_user = self.connect().await?;
        let bound = as_user
            .with_timeout(TIMEOUT)
            .simple_bind(&user.dn, password)
            .await
            .map_err(unavailable)?;
        let _ = as_user.unbind().await;
        if bound.rc != 0 {
            let _ = ldap.unbind().await;
            return Ok(None);
        }
        let groups = self.groups(&mut ldap, &user).await?;
        let _ = ldap.unbind().await;
        // Keep the user's DN (escaped form is what the server gave us) for refreshes.
        Ok(Some((self.identity(&user, groups)?, Some(user.dn.clone()))))
    }

    /// Looks the user up again (no password): gone users are refused, groups are current.
    async fn refresh(
        &self,
        identity: &Identity,
        _data: Option<&str>,
    ) -> Result<Upstream, ConnectorError> {
        let mut ldap = self.service_bind().await?;
        let username = if identity.preferred_username.is_empty() {
            &identity.username
        } else {
            &identity.preferred_username
        };
        let user = self
            .find_user(&mut ldap, username)
            .await?
            .ok_or_else(|| ConnectorError::Refused("the user no longer exists in LDAP".into()))?;
        let groups = self.groups(&mut ldap, &user).await?;
        let _ = ldap.unbind().await;
        let fresh = self.identity(&user, groups)?;
        if fresh.user_id != identity.user_id {
            return Err(ConnectorError::Refused(
                "the LDAP entry changed identity".into(),
            ));
        }
        Ok((fresh, Some(user.dn)))
    }
}
